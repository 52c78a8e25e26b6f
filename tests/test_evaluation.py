"""Held-out evaluation (sgpo_engine/evaluation): pass@k against brute force, the
metrics of a scripted sampler by hand, the dataset subset (fixed, seeded, kept
after a resume), the trainer's eval/ metrics and progress lines, `sgpo eval`
local against `sgpo serve` on loopback, `sgpo plot`, and the errors.
Sharded evaluation under torchrun is checked in test_train.py (the 2-rank
runs compare their eval/ rows with one process's)."""
from __future__ import annotations

import itertools
import json
import math
import os
import random

import pytest

from sgpo_engine import cli, tasks
from sgpo_engine.evaluation import EvalSettings, ServerSampler, evaluate, fixed_subset, pass_at_k, pass_ks
from sgpo_engine.evaluation.curves import plot_run
from sgpo_engine.generation import Completion
from sgpo_engine.serve.http import Server
from sgpo_engine.tasks import DatasetTask, Example
from sgpo_engine.train import SGPOTrainer, TrainConfig


# ---------------------------------------------------------------------- pass@k
def brute_pass_at_k(n: int, c: int, k: int) -> float:
    """The share of the k-subsets of n samples (the first c correct) with a correct one."""
    subsets = list(itertools.combinations(range(n), k))
    return sum(any(i < c for i in s) for s in subsets) / len(subsets)


def test_pass_at_k_matches_enumeration():
    rng = random.Random(0)
    cases = [(1, 0, 1), (1, 1, 1), (5, 0, 3), (5, 5, 3), (6, 1, 6), (7, 6, 1), (8, 2, 7)]
    cases += [(n, rng.randint(0, n), rng.randint(1, n)) for n in (rng.randint(2, 12) for _ in range(30))]
    for n, c, k in cases:
        assert pass_at_k(n, c, k) == pytest.approx(brute_pass_at_k(n, c, k), abs=1e-12), (n, c, k)
    assert pass_at_k(200, 3, 100) == pytest.approx(1 - math.comb(197, 100) / math.comb(200, 100), rel=1e-9)
    assert pass_ks(1) == [] and pass_ks(4) == [2, 4] and pass_ks(10) == [2, 4, 8, 10]
    with pytest.raises(ValueError, match="pass@k"):
        pass_at_k(3, 1, 4)


# ---------------------------------------------------------------------- metrics by hand
class ScriptedSampler:
    """Completion texts per prompt, in order; records the settings and seeds it was given."""

    def __init__(self, texts: dict):
        self.texts, self.calls = texts, []

    def __call__(self, examples, seeds, settings):
        self.calls.append((len(examples), list(seeds), settings.max_new_tokens))
        return [[Completion([0] * len(t), t, None, "length" if t.endswith("...") else "stop")
                 for t in self.texts[e.prompt][:settings.num_samples]] for e in examples]


def test_metrics_by_hand():
    examples = [Example("p1", "1", meta={"group": "easy"}), Example("p2", "2", meta={"group": "easy"}),
                Example("p3", "3", meta={"group": "hard", "max_new_tokens": 7})]
    sample = ScriptedSampler({"p1": ["1", "1", "0", "x..."], "p2": ["0", "0", "0", "0"],
                              "p3": ["3", "9", "9", "9..."]})
    settings = EvalSettings(num_samples=4, temperature=1.0, max_new_tokens=5, batch_size=2, seed=1)
    m = evaluate(sample, examples, settings, lambda text, answer: text == answer,
                 lambda text, ex: {"chars": len(text)}).metrics
    assert m["eval/accuracy"] == pytest.approx(3 / 12)            # mean@4
    assert m["eval/pass@2"] == pytest.approx((5 / 6 + 0 + 1 / 2) / 3)  # 1 - C(n-c,2)/C(4,2) per problem
    assert m["eval/pass@4"] == pytest.approx(2 / 3)
    assert m["eval/no_correct_frac"] == pytest.approx(1 / 3)
    assert m["eval/truncated_frac"] == pytest.approx(2 / 12)
    assert m["eval/response_len_mean"] == pytest.approx(sum(map(len, "1 1 0 x... 0 0 0 0 3 9 9 9...".split())) / 12)
    assert m["eval/chars"] == m["eval/response_len_mean"]          # the task's own metric, per sample
    assert m["eval/easy/accuracy"] == pytest.approx(2 / 8) and m["eval/hard/accuracy"] == pytest.approx(1 / 4)
    assert m["eval/easy/problems"] == 2 and m["eval/hard/problems"] == 1 and m["eval/problems"] == 3
    # batches of at most 2, one max_new_tokens each; problem i's stream does not depend on the batch
    assert [(n, t) for n, _, t in sample.calls] == [(2, 5), (1, 7)]
    again = ScriptedSampler(sample.texts)
    evaluate(again, examples, EvalSettings(num_samples=4, temperature=1.0, max_new_tokens=5, batch_size=1, seed=1),
             lambda t, a: t == a)
    assert [s for _, seeds, _ in sample.calls for s in seeds] == [s for _, seeds, _ in again.calls for s in seeds]


def test_settings_errors():
    with pytest.raises(ValueError, match="greedy samples are all the same"):
        EvalSettings(num_samples=4, temperature=0.0).validated()
    with pytest.raises(ValueError, match="config field 'eval_samples'"):
        TrainConfig(eval_samples=0).validate()
    with pytest.raises(ValueError, match="config field 'eval_dataset'"):
        TrainConfig(eval_dataset="x.jsonl").validate()  # builtin:arith has its own held-out split


# ---------------------------------------------------------------------- a dataset's held-out rows
@pytest.fixture(scope="module")
def arith_rows(tmp_path_factory):
    """Built-in-task problems as dataset files (train, held-out with a "level" field)."""
    root = tmp_path_factory.mktemp("rows")
    train = [p for k in (1, 2) for p in tasks.ArithTask(k, k, seed=k).batch(6)]
    held = [(k, p) for k in (1, 2) for p in tasks.eval_set(k, 5)]
    (root / "train.jsonl").write_text("".join(json.dumps({"prompt": p.prompt, "answer": p.answer}) + "\n"
                                              for p in train))
    (root / "heldout.jsonl").write_text("".join(
        json.dumps({"prompt": p.prompt, "answer": p.answer, "level": f"k{k}"}) + "\n" for k, p in held))
    return root


def arith_verify(text, answer):
    return tasks.verify(text, answer)


def test_subset_is_fixed_and_seeded(arith_rows):
    task = DatasetTask(str(arith_rows / "train.jsonl"), eval_path=str(arith_rows / "heldout.jsonl"),
                       group_field="level")
    a, b, other = task.heldout(4, seed=0), task.heldout(4, seed=0), task.heldout(4, seed=1)
    assert [e.prompt for e in a] == [e.prompt for e in b] and len(a) == 4
    assert [e.prompt for e in a] != [e.prompt for e in other]
    assert {e.meta["group"] for e in task.heldout(0, 0)} == {"k1", "k2"} and len(task.heldout(0, 0)) == 10
    assert fixed_subset(10, 3, 5) == sorted(fixed_subset(10, 3, 5)) and fixed_subset(3, 5, 0) == [0, 1, 2]


def test_trainer_evaluates_a_dataset_and_resumes_on_the_same_subset(tmp_path, arith_rows, capsys):
    cfg = TrainConfig(model=tasks.BUILTIN, dataset=str(arith_rows / "train.jsonl"), judge="none", scope="off",
                      eval_dataset=str(arith_rows / "heldout.jsonl"), eval_every=2, eval_problems=6,
                      eval_group_field="level", max_steps=3, prompts_per_step=2, num_samples=2, max_new_tokens=24,
                      output=str(tmp_path / "out"), save_every=1, tensorboard=False, log_completions=0)
    trainer = SGPOTrainer(cfg, verifier=arith_verify)
    subset = [e.prompt for e in trainer.heldout]
    history = trainer.train()
    rows = [json.loads(line) for line in (tmp_path / "out" / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [0, 1, 2, 3]
    evaluated = [r["step"] for r in rows if "eval/accuracy" in r]
    assert evaluated == [0, 2, 3]                                  # the start, every 2, and the last
    for r in (rows[0], history[-1]):
        assert r["eval/problems"] == 6 and {"eval/k1/accuracy", "eval/k2/accuracy"} <= r.keys()
        assert 0 <= r["eval/accuracy"] <= 1 and r["eval/response_len_mean"] > 0
    # the warm start solves some held-out k = 1 and 2 problems greedily
    assert rows[0]["eval/accuracy"] > 0
    assert history[-1]["rollout_tokens_total"] == sum(r["rollout_tokens"] for r in rows[1:])
    # off a terminal: one plain line per step, and the start's evaluation
    lines = [line for line in capsys.readouterr().err.splitlines() if line.startswith("step ")]
    assert [line.split(" | ")[0] for line in lines] == ["step 0/3", "step 1/3", "step 2/3", "step 3/3"]
    assert "eval accuracy" in lines[0] and "all-negative" in lines[1] and "eval accuracy" in lines[2]
    assert (tmp_path / "out" / "curves.png").stat().st_size > 10_000
    # a resumed run: the same subset, the same cumulative token count
    resumed = SGPOTrainer(TrainConfig(**{**cfg.__dict__, "resume": True, "max_steps": 4}), verifier=arith_verify)
    assert [e.prompt for e in resumed.heldout] == subset and resumed.step == 3
    assert resumed.totals["rollout_tokens"] == history[-1]["rollout_tokens_total"]
    with pytest.raises(ValueError, match="config field 'eval_dataset'"):
        TrainConfig(**{**cfg.__dict__, "eval_dataset": ""}).validate()


# ---------------------------------------------------------------------- sgpo eval
@pytest.fixture(scope="module")
def arith_server():
    server = Server(tasks.load_warm_start(), "127.0.0.1", 0, model_name="arith").start()
    try:
        yield server.url
    finally:
        server.close()


def test_sgpo_eval_local_equals_served(tmp_path, arith_rows, arith_server, capsys):
    """Greedy: the engine's generate and `sgpo serve` give the same completions, so the same report."""
    out = tmp_path / "eval"
    code = cli.main(["eval", "--model", tasks.BUILTIN, "--server", arith_server, "--served-model", "arith",
                     "--dataset", str(arith_rows / "heldout.jsonl"), "--group-field", "level",
                     "--max-new-tokens", "32", "--batch-size", "3", "--output", str(out)])
    printed = capsys.readouterr()
    assert code == 0, printed.err
    report = json.loads((out / "report.json").read_text())
    local, served = report["models"]["builtin:arith"], report["models"]["server:arith"]
    assert local == served and local["eval/problems"] == 10 and 0 < local["eval/accuracy"] < 1
    rows = {label: [json.loads(line) for line in (out / name).read_text().splitlines()]
            for label, name in report["files"].items()}
    assert [r["completions"] for r in rows["builtin:arith"]] == [r["completions"] for r in rows["server:arith"]]
    assert all(r["correct"] == [a is not None and float(a) == r["answer"] for a in r["answers"]]
               for r in rows["builtin:arith"])
    assert "eval/k2/accuracy" in printed.out and "server:arith" in printed.out
    assert "eval builtin:arith: 10 problems" in printed.err  # progress


def test_sgpo_eval_sampled_through_the_server(tmp_path, arith_server, capsys):
    code = cli.main(["eval", "--server", arith_server, "--served-model", "arith", "--dataset", tasks.BUILTIN,
                     "--min-ops", "2", "--max-ops", "3", "--problems", "4", "-k", "4", "--temperature", "1",
                     "--output", str(tmp_path / "e")])
    assert code == 0, capsys.readouterr().err
    m = json.loads((tmp_path / "e" / "report.json").read_text())["models"]["server:arith"]
    assert m["eval/accuracy"] <= m["eval/pass@2"] <= m["eval/pass@4"] and m["eval/problems"] == 8
    assert m["eval/response_len_mean"] > 0  # the server's token_ids


def cli_error(capsys, argv) -> str:
    assert cli.main(argv) == 2
    return capsys.readouterr().err


def test_sgpo_eval_errors(tmp_path, capsys, arith_rows):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"prompt": "1+1=", "answer": "2"}\n{"question": "x"}\n')
    assert f"{bad}:2: missing field 'prompt'" in cli_error(capsys, ["eval", "--model", tasks.BUILTIN,
                                                                     "--dataset", str(bad)])
    held = str(arith_rows / "heldout.jsonl")
    assert f"{held}:1: missing field 'source'" in cli_error(
        capsys, ["eval", "--model", tasks.BUILTIN, "--dataset", held, "--group-field", "source"])
    err = cli_error(capsys, ["eval", "--server", "http://127.0.0.1:9/v1", "--served-model", "m", "--dataset", held])
    assert "--server: cannot reach http://127.0.0.1:9/v1/models" in err and "Traceback" not in err
    assert "--server and --served-model go together" in cli_error(
        capsys, ["eval", "--server", "http://127.0.0.1:9/v1", "--dataset", held])
    assert "greedy samples are all the same" in cli_error(capsys, ["eval", "--model", tasks.BUILTIN, "--dataset",
                                                                   held, "-k", "4"])
    assert "no such file" in cli_error(capsys, ["eval", "--model", tasks.BUILTIN, "--dataset", "nope.jsonl"])


def test_served_model_must_be_served(arith_server):
    with pytest.raises(ValueError, match="does not serve 'other'"):
        ServerSampler(arith_server, "other").check()


def test_plot_errors(tmp_path):
    with pytest.raises(ValueError, match="no such file"):
        plot_run(str(tmp_path))
    (tmp_path / "metrics.jsonl").write_text('{"step": 1, "loss": 0.1, "reward_mean": 0.5}\n{"step": 2, "lo')
    assert os.path.getsize(plot_run(str(tmp_path))) > 10_000  # a torn last line is skipped
