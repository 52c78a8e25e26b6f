"""The shipped recipes parse, validate and read their data as a user runs them."""
import os

from sgpo_engine.judge import verify
from sgpo_engine.tasks import make_task
from sgpo_engine.train import load_config

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_gsm8k_recipe_with_the_readme_overrides(tmp_path, monkeypatch):
    monkeypatch.chdir(ROOT)  # the recipe's dataset path is relative to the repository
    cfg = load_config(os.path.join(ROOT, "examples", "gsm8k.toml"),
                      ["--model", "models/smollm2", "--judge-url", "http://127.0.0.1:8000/v1", "--judge-model",
                       "judge", "--judge-max-tokens", "24", "--max-steps", "2", "--prompts-per-step", "4",
                       "--num-samples", "4", "--max-new-tokens", "48", "--output", str(tmp_path)])
    assert (cfg.judge, cfg.scope, cfg.credit_assignment, cfg.chat_template) == ("http", "all_negative", "prefix", True)
    assert (cfg.max_steps, cfg.prompts_per_step, cfg.num_samples, cfg.judge_max_tokens) == (2, 4, 4, 24)
    task = make_task(cfg)
    batch = task.source().batch(0, cfg.prompts_per_step)
    assert len(batch) == 4 and all(e.reference.endswith(e.answer.split("####")[-1]) for e in batch)
    for e in batch:  # the worked solution's final number is what the verifier accepts
        gold = e.answer.split("####")[-1].strip()
        assert verify(f"So the answer is {gold}.", e.answer) and not verify("The answer is 0.5", e.answer)
    # held-out evaluation: a fixed subset of rows disjoint from the training sample
    heldout = task.heldout(cfg.eval_problems, cfg.seed)
    assert len(heldout) == cfg.eval_problems == 50 and cfg.eval_every > 0
    train = {e.prompt for e in task.source().examples}
    assert not train & {e.prompt for e in task.heldout(0, 0)} and len(task.heldout(0, 0)) == 200
    assert [e.prompt for e in heldout] == [e.prompt for e in task.heldout(cfg.eval_problems, cfg.seed)]
