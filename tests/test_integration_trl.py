"""sgpo_engine.integrations.trl: SGPOReward's rewards against the SGPO rule
computed by hand, across processes (two real gloo processes), with judge
failures, and inside real trl.GRPOTrainer runs; SGPOGRPOTrainer's fused loss
and gradients against GRPOTrainer's own, loss type by loss type; the example."""
from __future__ import annotations

import math
import os
import socket

import pytest
import torch
import torch.multiprocessing as mp

from sgpo_engine import tasks
from sgpo_engine.integrations.trl import SGPOReward, completion_text, group_offsets
from sgpo_engine.judge import FunctionJudge

BETA, GAMMA = 5.0, 0.5
credit = lambda rts: 1.0 / (1.0 + math.exp(-BETA * (rts - GAMMA)))


def _problems(n, seed=0):
    return tasks.ArithSource(4, 6, seed).batch(0, n)


def _wrong_at(reference: str, j: int) -> str:
    """The worked solution with line j made wrong (the exact judge's first error)."""
    lines = reference.split("\n")
    lines[j] = lines[j] + "1"
    return "\n".join(lines[:j + 1])  # stops there: never the right answer


def _case(seed=0):
    """Three groups of 4: all wrong (first errors at lines 0..3), mixed, all correct.
    Returns (prompts, completions, answers, expected rewards) with the expected
    rewards computed from the rule itself: correct 1, judged incorrect in an
    all-negative group sigmoid(beta (rts - gamma)) with rts = j / lines, else 0."""
    probs = _problems(3, seed)
    prompts, completions, answers, expected = [], [], [], []
    for g, e in enumerate(probs):
        for j in range(4):
            prompts.append(e.prompt)
            answers.append(e.answer)
            if g == 0:  # all-negative group: credit by the first wrong line
                completions.append(_wrong_at(e.reference, j))
                expected.append(credit(j / (j + 1)))  # j right lines of j + 1
            elif g == 1 and j < 2:  # mixed: incorrect ones keep 0 (out of scope)
                completions.append(_wrong_at(e.reference, j))
                expected.append(0.0)
            else:
                completions.append(e.reference)
                expected.append(1.0)
    return prompts, completions, answers, expected


def _reward(**kw):
    return SGPOReward(tasks.exact_judge(), verifier=tasks.verify, credit_beta=BETA, credit_gamma=GAMMA, **kw)


def test_rewards_follow_the_sgpo_rule():
    prompts, completions, answers, expected = _case()
    logged = {}
    got = _reward()(prompts=prompts, completions=completions, answer=answers,
                    log_metric=lambda k, v: logged.__setitem__(k, v))
    assert got == pytest.approx(expected, rel=1e-6, abs=1e-7)
    assert expected[0] < expected[3] < 1.0  # a longer correct prefix earns more, never a correct answer's reward
    assert logged["sgpo/judged"] == 4 and logged["sgpo/judge_failures"] == 0
    assert logged["sgpo/all_negative_frac"] == pytest.approx(1 / 3)


def test_chat_completions_and_fixed_group_size():
    prompts, completions, answers, expected = _case(seed=1)
    chat_prompts = [[{"role": "system", "content": "be exact"}, {"role": "user", "content": p}] for p in prompts]
    chat = [[{"role": "assistant", "content": c}] for c in completions]
    got = _reward(num_generations=4)(prompts=chat_prompts, completions=chat, answer=answers)
    assert got == pytest.approx(expected, rel=1e-6, abs=1e-7)
    assert completion_text("plain") == "plain"
    assert group_offsets(["a", "a", "b", "b", "b"], None) == [0, 2, 5]
    with pytest.raises(ValueError, match="num_generations"):
        group_offsets(["a"] * 5, 4)


def test_judge_failures_are_logged_not_raised():
    def broken(problem, steps, reference):
        raise RuntimeError("judge server down")
    prompts, completions, answers, expected = _case()
    logged = {}
    reward = SGPOReward(FunctionJudge(broken, step_mode="line"), verifier=tasks.verify)
    got = reward(prompts=prompts, completions=completions, answer=answers,
                 log_metric=lambda k, v: logged.__setitem__(k, v))
    # every judged response failed: it keeps its outcome reward (0), the rest are unchanged
    assert got == [1.0 if e == 1.0 else 0.0 for e in expected]
    assert logged["sgpo/judge_failures"] == 4 and logged["sgpo/judged"] == 0


def test_missing_answer_column_is_a_clear_error():
    with pytest.raises(ValueError, match="answer_field: the dataset has no column 'answer'"):
        _reward()(prompts=["1+1="], completions=["#2"], solution=["2"])


# ---------------------------------------------------------------- two processes
class CountingJudge(FunctionJudge):
    calls = 0

    def judge(self, problems, responses, references=None):
        CountingJudge.calls += 1
        return super().judge(problems, responses, references)


def _worker(rank, world, port, split, queue):
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.distributed.init_process_group("gloo", rank=rank, world_size=world)
    try:
        prompts, completions, answers, _ = _case()
        lo, hi = (0, split) if rank == 0 else (split, len(prompts))
        reward = SGPOReward(CountingJudge(tasks.arith.step_judge, step_mode="line"), verifier=tasks.verify,
                            credit_beta=BETA, credit_gamma=GAMMA)
        got = reward(prompts=prompts[lo:hi], completions=completions[lo:hi], answer=answers[lo:hi])
        queue.put((rank, got, CountingJudge.calls))
    finally:
        torch.distributed.destroy_process_group()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_groups_spanning_two_processes_are_judged_whole_once():
    """Rank 0 holds 6 completions, rank 1 the other 6: the first group lies on
    rank 0, the second spans both. Each rank gets the single-process rewards of
    its own completions, and the judge runs once, on rank 0."""
    prompts, completions, answers, expected = _case()
    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    port = _free_port()
    procs = [ctx.Process(target=_worker, args=(r, 2, port, 6, queue)) for r in range(2)]
    for p in procs:
        p.start()
    results = dict((r, (got, calls)) for r, got, calls in (queue.get(timeout=120) for _ in procs))
    for p in procs:
        p.join(timeout=60)
        assert p.exitcode == 0
    assert results[0][0] + results[1][0] == pytest.approx(expected, rel=1e-6, abs=1e-7)
    assert results[0][1] == 1 and results[1][1] == 0


# ---------------------------------------------------------------- a real GRPOTrainer run
@pytest.mark.parametrize("trainer_class", ["GRPOTrainer", "SGPOGRPOTrainer", "SGPOGRPOTrainer-prefix"])
def test_two_grpo_steps_with_trl(tmp_path, trainer_class):
    trl = pytest.importorskip("trl")
    trainer_class, _, credit_assignment = trainer_class.partition("-")
    from sgpo_engine.integrations import trl as integration
    cls = getattr(trl, trainer_class, None) or getattr(integration, trainer_class)
    from datasets import Dataset
    from transformers import AutoModelForCausalLM, AutoTokenizer

    path = tasks.warm_start_path(train_if_missing=False, log=None)
    model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32)
    before = [p.detach().clone() for p in model.parameters()]
    rows = [{"prompt": e.prompt, "answer": e.answer} for e in tasks.ArithSource(8, 10, 0).batch(0, 8)]
    config = trl.GRPOConfig(
        output_dir=str(tmp_path), per_device_train_batch_size=8, num_generations=4, max_completion_length=48,
        learning_rate=1e-4, max_steps=2, beta=0.0, loss_type="dapo", scale_rewards="group", use_cpu=True,
        bf16=False, report_to="none", save_strategy="no", logging_steps=1, disable_tqdm=True, seed=0,
        dataloader_num_workers=0)
    trainer = cls(model=model, reward_funcs=[_reward(credit_assignment=credit_assignment or "sequence")],
                  args=config, train_dataset=Dataset.from_list(rows), processing_class=AutoTokenizer.from_pretrained(path))
    assert not getattr(trainer, "_fused_unsupported", [])  # SGPOGRPOTrainer runs the fused loss
    shapes = []
    generate = trainer._generate_and_score_completions
    trainer._generate_and_score_completions = lambda inputs: shapes.append(generate(inputs)) or shapes[-1]
    trainer.train()
    assert shapes and all(out["advantages"].dim() == (2 if credit_assignment else 1) for out in shapes)
    logs = [h for h in trainer.state.log_history if "loss" in h]
    assert len(logs) == 2 and all(math.isfinite(h["loss"]) for h in logs)
    assert any("sgpo/judged" in h for h in trainer.state.log_history)
    assert any(not torch.equal(a, b.detach()) for a, b in zip(before, model.parameters()))


def test_prefix_advantages_follow_the_first_wrong_step():
    """SGPOReward(credit_assignment="prefix") + prefix_advantages, against the rule read off
    the text: a positive advantage covers exactly the tokens that end before the first wrong
    line starts, a negative one those that start before it ends; unjudged rows keep theirs."""
    from transformers import AutoTokenizer

    from sgpo_engine.integrations.trl import prefix_advantages
    from sgpo_engine.judge import step_spans
    from sgpo_engine.model.tokenizer import Tokenizer
    hf = AutoTokenizer.from_pretrained(tasks.warm_start_path(train_if_missing=False, log=None))
    prompts, completions, answers, _ = _case()
    reward = _reward(credit_assignment="prefix")
    scores = reward.score(prompts, completions, answer=answers)
    ids = [hf(c, add_special_tokens=False)["input_ids"] for c in completions]
    T = max(map(len, ids)) + 3
    completion_ids = torch.tensor([x + [hf.pad_token_id] * (T - len(x)) for x in ids])
    mask = torch.tensor([[1] * len(x) + [0] * (T - len(x)) for x in ids])
    advantages = torch.tensor([1.0, -1.0, 0.5, -0.5] * 3)
    out = prefix_advantages(advantages, scores, completion_ids, mask, Tokenizer(hf.backend_tokenizer),
                            reward.step_mode)
    assert out.shape == (12, T)
    for i, (text, x) in enumerate(zip(completions, ids)):
        a = float(advantages[i])
        row = out[i]
        reach = int((row != 0).sum())
        assert (row[:reach] == a).all() and (row[reach:] == 0).all()
        if i >= 4:  # mixed and all-correct groups: not judged, sequence level
            assert reach == len(x)
            continue
        start, end = step_spans(text, "line")[i]  # group 0: first wrong line = i
        written = lambda k: len(hf.decode(x[:k]))
        if a > 0:
            assert written(reach) <= start < written(reach + 1)
        else:
            assert written(reach - 1) < end <= written(reach)


# ---------------------------------------------------------------- SGPOGRPOTrainer: the fused loss inside TRL
def _grpo_trainer(cls, tmp_path, **cfg):
    """A GRPOTrainer (or subclass) on the built-in task's HF model, its own copy."""
    trl = pytest.importorskip("trl")
    from datasets import Dataset
    from transformers import AutoModelForCausalLM, AutoTokenizer

    path = tasks.warm_start_path(train_if_missing=False, log=None)
    model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32)
    rows = [{"prompt": e.prompt, "answer": e.answer} for e in tasks.ArithSource(8, 10, 0).batch(0, 4)]
    config = trl.GRPOConfig(output_dir=str(tmp_path), per_device_train_batch_size=4, num_generations=4,
                            max_completion_length=9, learning_rate=1e-4, use_cpu=True, bf16=False, report_to="none",
                            save_strategy="no", disable_tqdm=True, seed=0, dataloader_num_workers=0, **cfg)
    trainer = cls(model=model, reward_funcs=[lambda completions, **kw: [0.0] * len(completions)], args=config,
                  train_dataset=Dataset.from_list(rows), processing_class=AutoTokenizer.from_pretrained(path))
    trainer.model.train()
    trainer.current_gradient_accumulation_steps = 2  # the loss scaling of one of two micro-batches
    return trainer


def _loss_batch(trainer, seed, *, adv_2d=False, off_policy=True, with_ref=True):
    """A GRPOTrainer micro-batch: 4 left-padded prompts, right-padded
    completions of up to 7 tokens, advantages, the sampler's log-probs off by
    noise (so ratios leave the clip range) and reference log-probs."""
    g = torch.Generator().manual_seed(seed)
    V = trainer.model.config.vocab_size
    B, P, T = 4, 6, 7
    prompt_mask = torch.ones(B, P, dtype=torch.long)
    prompt_mask[1, :2] = 0
    prompt_mask[3, :1] = 0
    mask = torch.ones(B, T, dtype=torch.long)
    mask[0, 5:] = 0
    mask[2, 1:] = 0
    batch = {"prompt_ids": torch.randint(0, V, (B, P), generator=g), "prompt_mask": prompt_mask,
             "completion_ids": torch.randint(0, V, (B, T), generator=g), "completion_mask": mask,
             "advantages": torch.randn(*((B, T) if adv_2d else (B,)), generator=g),
             "num_items_in_batch": mask.sum() * 2}
    with torch.no_grad():
        ids = torch.cat([batch["prompt_ids"], batch["completion_ids"]], 1)
        logits = trainer.model(input_ids=ids, attention_mask=torch.cat([prompt_mask, mask], 1)).logits
        logp = torch.log_softmax(logits[:, -T - 1:-1] / trainer.temperature, -1)
        logp = logp.gather(-1, batch["completion_ids"][..., None])[..., 0]
    if off_policy:
        batch["old_per_token_logps"] = logp + 0.4 * torch.randn(B, T, generator=g)
    if with_ref:
        batch["ref_per_token_logps"] = logp + 0.3 * torch.randn(B, T, generator=g)
    return batch


def _loss_and_grads(trainer, batch):
    trainer.model.zero_grad(set_to_none=True)
    loss = trainer._compute_loss(trainer.model, batch)
    loss.backward()
    return loss.detach(), {k: p.grad.clone() for k, p in trainer.model.named_parameters() if p.grad is not None}


LOSS_CASES = [  # (loss_type, level, extra GRPOConfig, batch options)
    *[(lt, lvl, {}, {}) for lt in ("grpo", "bnpo", "dr_grpo", "dapo", "cispo", "sapo") for lvl in ("token", "sequence")],
    ("dapo", "token", dict(epsilon_high=0.28, delta=1.4), dict(adv_2d=True)),          # clip-higher, two-sided
    ("grpo", "token", dict(beta=0.0), dict(off_policy=False, with_ref=False)),        # on-policy, no reference
    ("cispo", "token", dict(epsilon_high=1.1), dict(adv_2d=True)),                      # a cap that binds
    ("sapo", "sequence", dict(sapo_temperature_pos=0.7, sapo_temperature_neg=1.6), {}),
    ("dapo", "token", {}, dict(is_ratio="token")),                                      # vLLM IS correction
    ("grpo", "sequence", {}, dict(is_ratio="sequence", adv_2d=True)),
    ("cispo", "token", {}, dict(is_ratio="sequence")),
]


@pytest.mark.parametrize("loss_type,level,extra,opts", LOSS_CASES,
                         ids=[f"{c[0]}-{c[1]}-{i}" for i, c in enumerate(LOSS_CASES)])
def test_fused_loss_equals_trl_loss(tmp_path, loss_type, level, extra, opts):
    """SGPOGRPOTrainer's loss and gradients equal GRPOTrainer's own on the same
    micro-batch (fp32), for every loss type the op has, at both importance
    sampling levels, with beta against reference log-probs."""
    trl = pytest.importorskip("trl")
    from sgpo_engine.integrations.trl import SGPOGRPOTrainer
    cfg = dict(dict(loss_type=loss_type, importance_sampling_level=level, beta=0.05), **extra)
    theirs = _grpo_trainer(trl.GRPOTrainer, tmp_path / "trl", **cfg)
    ours = _grpo_trainer(SGPOGRPOTrainer, tmp_path / "sgpo", **cfg)
    assert not ours._fused_unsupported
    is_ratio = opts.pop("is_ratio", None)
    batch = _loss_batch(theirs, seed=len(loss_type) + len(level), **opts)
    if is_ratio:  # as TRL's vLLM path leaves it: truncated ratios, [B, T] or [B, 1]; some masked to 0
        B, T = batch["completion_ids"].shape
        g = torch.Generator().manual_seed(5)
        r = torch.rand(B, T if is_ratio == "token" else 1, generator=g) * 2.5
        batch["importance_sampling_ratio"] = torch.where(r > 2.2, torch.zeros(()), r)
        for t in (theirs, ours):
            t.use_vllm = t.vllm_importance_sampling_correction = True
    loss_t, grads_t = _loss_and_grads(theirs, batch)
    loss_o, grads_o = _loss_and_grads(ours, batch)
    torch.testing.assert_close(loss_o, loss_t, rtol=1e-5, atol=1e-7)
    assert grads_o.keys() == grads_t.keys()
    for k in grads_t:
        torch.testing.assert_close(grads_o[k], grads_t[k], rtol=1e-4, atol=1e-6, msg=k)
    assert float(loss_t) != 0.0
    mt, mo = theirs._metrics["train"], ours._metrics["train"]
    for key in ("policy_loss", "kl", "clip_ratio/low_mean", "clip_ratio/high_mean", "cispo_clip_ratio"):
        if is_ratio and "clip" in key:  # a token whose IS weight is 0 has advantage 0 here: never counted clipped
            continue
        if key in mt and level == "token":  # at sequence level TRL averages clip flags per sequence, the op per token
            assert mo[key] == pytest.approx(mt[key], rel=1e-5, abs=1e-7), key


def test_unsupported_features_fall_back_to_trl_loss(tmp_path):
    trl = pytest.importorskip("trl")
    from sgpo_engine.integrations.trl import SGPOGRPOTrainer
    with pytest.warns(UserWarning, match="top_entropy_quantile"):
        ours = _grpo_trainer(SGPOGRPOTrainer, tmp_path / "sgpo", top_entropy_quantile=0.5, beta=0.0)
    theirs = _grpo_trainer(trl.GRPOTrainer, tmp_path / "trl", top_entropy_quantile=0.5, beta=0.0)
    batch = _loss_batch(theirs, seed=3, with_ref=False)
    torch.testing.assert_close(_loss_and_grads(ours, batch)[0], _loss_and_grads(theirs, batch)[0])


def test_example_runs_as_the_readme_shows(tmp_path):
    pytest.importorskip("trl")
    import subprocess
    import sys
    from train_helpers import ROOT, subprocess_env
    out = subprocess.run([sys.executable, "examples/trl_sgpo.py", "--max-steps", "2", "--output", str(tmp_path)],
                         cwd=ROOT, env=subprocess_env(), capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    steps = [line for line in out.stdout.splitlines() if line.startswith("step ")]
    assert [line.split(":")[0] for line in steps] == ["step 1", "step 2"], out.stdout
