"""The trainer (sgpo_engine.train): the loop and its metrics, SGPO advantages
on hand-made batches, exact gradient accumulation, atomic checkpoints and
resume after SIGKILL, torchrun (gloo, 2 processes) against 1 process, config
and dataset errors (API and CLI), JSONL datasets and the example config.

Everything runs on a fresh, random tiny task model (`tasks.new_policy`), never
on the shipped warm start. A random model never writes a correct line of the
built-in task, so the exact judge gives RTS 0 everywhere and every advantage
is 0; tests that need a learning signal use a deterministic judge instead (a
FunctionJudge in process, `train_helpers.JudgeServer` over HTTP for the CLI).
Subprocesses run with one thread and a timeout.
"""
from __future__ import annotations

import json
import math
import os
import re
import shutil
import signal
import subprocess
import sys
import time
import tomllib
import zlib

import pytest
import torch

import sgpo_engine
from sgpo_engine import cli, tasks
from sgpo_engine.generation import Completion
from sgpo_engine.judge import FunctionJudge
from sgpo_engine.train import Example, JsonlSource, SGPOTrainer, TrainConfig, load_config
from sgpo_engine.train import checkpoint as ckpt
from sgpo_engine.train.config import FIELDS, field_tables, from_dict
from train_helpers import JudgeServer, ROOT, cli as cli_cmd, free_port, read_weights, run, save_tiny_policy, \
    subprocess_env

METRIC_KEYS = ("step", "loss", "reward_mean", "accuracy", "all_negative_frac", "credited_frac", "rts_mean",
               "judge_failures", "clip_ratio_low", "clip_ratio_high", "kl_mean", "grad_norm", "lr",
               "rollout_tokens_per_s", "train_tokens_per_s")

TINY = dict(prompts_per_step=4, num_samples=4, max_new_tokens=24, task_min_ops=1, task_max_ops=2,
            micro_batch_size=5, tensorboard=False, progress=False)


def tiny_config(output, **kw) -> TrainConfig:
    return TrainConfig(output=str(output), **{**TINY, **kw})


def hash_first_error(problem, steps, reference):
    """A deterministic stand-in judge: first error from a hash of the steps."""
    h = zlib.crc32("\n".join(steps).encode())
    return None if h % (len(steps) + 1) == len(steps) else h % len(steps)


def params(policy) -> dict:
    return {k: v.detach().clone() for k, v in policy.decoder.state_dict().items()}


def max_diff(a: dict, b: dict) -> float:
    assert a.keys() == b.keys()
    return max(float((a[k].float() - b[k].float()).abs().max()) for k in a)


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory):
    """A saved fresh task model (HF folder): `cfg.model` for subprocess runs."""
    return save_tiny_policy(str(tmp_path_factory.mktemp("tiny") / "model"))


@pytest.fixture(scope="module")
def judge_server():
    with JudgeServer() as srv:
        yield srv


# --------------------------------------------------------------------------
# 1. the loop
# --------------------------------------------------------------------------
def test_loop_metrics_checkpoints(tmp_path):
    from transformers import AutoModelForCausalLM

    out = tmp_path / "run"
    cfg = tiny_config(out, max_steps=3, save_every=1, keep_checkpoints=2, lr=1e-3, lr_schedule="cosine",
                      warmup_steps=1)
    policy = tasks.new_policy(seed=0)
    w0 = params(policy)
    trainer = SGPOTrainer(cfg, policy=policy, judge=FunctionJudge(hash_first_error, step_mode="line"))
    history = trainer.train()

    assert [m["step"] for m in history] == [1, 2, 3]
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [1, 2, 3]
    for r in rows:
        missing = [k for k in METRIC_KEYS if k not in r]
        assert not missing, missing
        assert math.isfinite(r["loss"]) and math.isfinite(r["grad_norm"])
        assert r["kl_mean"] is None  # beta = 0: no reference policy, logged as null
        assert r["all_negative_frac"] == 1.0 and r["accuracy"] == 0.0  # a random model
        assert r["credited_frac"] == 1.0 and 0 < r["rts_mean"] < 1 and r["judge_failures"] == 0
        assert r["rollout_tokens_per_s"] > 0 and r["train_tokens_per_s"] > 0
        assert r["grad_norm"] > 0  # the hash judge's RTS varies: non-zero advantages
    # the logged lr is the one each update used: warm-up 1/2, then cosine from the top
    assert rows[0]["lr"] == pytest.approx(0.5e-3)
    assert rows[1]["lr"] == pytest.approx(1e-3)
    assert rows[2]["lr"] == pytest.approx(1e-3 * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * 0.5))))
    assert max_diff(params(policy), w0) > 1e-4  # the weights moved
    assert all(r["adv_abs_credited"] > 0 and r["adv_abs_mixed"] is None for r in rows)  # all groups credited
    # the resolved config is saved and reads back as the same config
    saved = load_config(str(out / "config.toml"))
    assert saved == trainer.cfg
    # checkpoints: every step saved, only the newest 2 kept, no temporaries left
    assert sorted(os.listdir(out)) == ["checkpoint-2", "checkpoint-3", "completions.jsonl", "config.toml",
                                       "metrics.jsonl"]
    # completions.jsonl: the first log_completions (8) of each step, with what the judge said
    logged = [json.loads(line) for line in (out / "completions.jsonl").read_text().splitlines()]
    assert [r["step"] for r in logged] == [1] * 8 + [2] * 8 + [3] * 8
    for r in logged:
        assert isinstance(r["completion"], str) and r["tokens"] > 0 and not r["correct"] and r["reward"] == 0.0
        assert r["judge"]["reason"] in ("ok", "empty") and 0 <= r["judge"]["rts"] <= 1
        assert math.isfinite(r["advantage"])
    assert any(r["judge"]["reason"] == "ok" for r in logged)
    assert [s for s, _ in ckpt.list_checkpoints(str(out))] == [2, 3]
    ids = torch.tensor([[1, 5, 14, 6, 16, 7, 18, 17, 7]])
    for name in ("checkpoint-2", "checkpoint-3"):
        path = str(out / name)
        ours = sgpo_engine.load(path)
        hf = AutoModelForCausalLM.from_pretrained(path).eval()
        with torch.no_grad():
            a, b = ours.logits(ids), hf(ids).logits
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)
    final = sgpo_engine.load(str(out / "checkpoint-3"))
    assert max_diff(params(final), params(policy)) == 0.0
    state = ckpt.load_trainer_state(str(out / "checkpoint-3"))
    assert state["step"] == 3 and "optimizer" in state and "scheduler" in state




def test_credited_std_floor_bounds_the_credited_advantages(tmp_path):
    """The phantom-gradient guard through the trainer: the same rollouts, judged the same,
    give smaller credited-group advantages with a floor on their std (logged per step)."""
    scale = {}
    for floor in (0.0, 0.5):
        cfg = tiny_config(tmp_path / str(floor), max_steps=1, credited_std_floor=floor)
        trainer = SGPOTrainer(cfg, policy=tasks.new_policy(seed=0), judge=FunctionJudge(hash_first_error,
                                                                                         step_mode="line"))
        scale[floor] = trainer.train_step()["adv_abs_credited"]
    assert 0 < scale[0.5] < scale[0.0]


# --------------------------------------------------------------------------
# 2. hand-made batches: SGPO credit, scope off = GRPO, filtering
# --------------------------------------------------------------------------
# first errors are encoded in the texts: the judge names the first line holding a 9
BATCH = {
    "1+1=": (2, ["1+1=2\n9\n#5",          # steps 3, first error 1 -> RTS 1/3
                 "9\n#3",                 # first error 0 -> RTS 0
                 "1+1=2\n#4",             # no error named, wrong answer -> RTS 1
                 "1+1=2\n2+0=2\n9\n#7"]),  # first error 2 of 4 -> RTS 1/2
    "2+2=": (4, ["2+2=4\n#4",             # correct
                 "9\n#1", "#8", "2+2=4\n#3"]),
}
RTS0 = [1 / 3, 0.0, 1.0, 0.5]


class ListSource:
    def __init__(self, prompts):
        self.prompts = prompts

    def batch(self, step, n):
        return [Example(p, BATCH[p][0]) for p in self.prompts][:n]


class HandRollout:
    """The completions of BATCH, tokenized; logprobs None (the trainer
    recomputes the old log-probs, on-policy)."""

    def __init__(self, policy):
        self.tok = policy.tokenizer
        self.calls = 0

    def __call__(self, examples, seeds):
        self.calls += 1
        out = []
        for e in examples:
            prompt_ids = self.tok.encode(e.prompt)
            out.append([Completion(self.tok.encode(t, add_special_tokens=False) + [2], t, None, "stop", prompt_ids)
                        for t in BATCH[e.prompt][1]])
        return out


def first_nine(problem, steps, reference):
    return next((i for i, s in enumerate(steps) if "9" in s), None)


def verify_suffix(text, answer):
    return text.endswith(f"#{answer}")


def hand_trainer(tmp_path, prompts=("1+1=", "2+2="), policy=None, judge_calls=None, **kw):
    policy = policy or tasks.new_policy(seed=0)

    def fn(problem, steps, reference):
        if judge_calls is not None:
            judge_calls.append(problem)
        return first_nine(problem, steps, reference)

    cfg = tiny_config(tmp_path / "out", **{"prompts_per_step": len(prompts), "max_steps": 1,
                                           "micro_batch_size": 3, "lr": 1e-3, **kw})
    trainer = SGPOTrainer(cfg, policy=policy, source=ListSource(list(prompts)), verifier=verify_suffix,
                          judge=FunctionJudge(fn, step_mode="line"), rollout=HandRollout(policy))
    captured = {}
    make_batch = trainer._batch

    def spy(examples, groups, scored):
        captured["batch"] = make_batch(examples, groups, scored)
        captured["rew"] = scored
        captured["keep"] = trainer._kept(scored)
        return captured["batch"]

    trainer._batch = spy
    return trainer, captured


def grpo_adv(rewards, eps=1e-4):
    n = len(rewards)
    mean = sum(rewards) / n
    std = math.sqrt(sum((r - mean) ** 2 for r in rewards) / (n - 1))
    return [(r - mean) / (std + eps) for r in rewards]


def sigmoid_credit(rts, beta=5.0, gamma=0.5):
    return 1 / (1 + math.exp(-beta * (rts - gamma)))


def test_sgpo_credit_by_hand(tmp_path):
    calls = []
    trainer, cap = hand_trainer(tmp_path, judge_calls=calls)
    m = trainer.train_step()
    assert len(calls) == 4 and set(calls) == {"1+1="}  # only the all-negative group is judged
    assert m["accuracy"] == pytest.approx(1 / 8)
    assert m["reward_mean"] == pytest.approx(1 / 8)
    assert m["all_negative_frac"] == pytest.approx(1 / 2)
    assert m["credited_frac"] == pytest.approx(4 / 8)
    assert m["rts_mean"] == pytest.approx(sum(RTS0) / 4)
    assert m["judge_failures"] == 0
    credit = [sigmoid_credit(r) for r in RTS0]
    assert credit == pytest.approx([0.3029407, 0.0758582, 0.9241418, 0.5], abs=1e-6)
    assert m["sgpo_reward_mean"] == pytest.approx((sum(credit) + 1) / 8, abs=1e-6)
    want = grpo_adv(credit) + grpo_adv([1.0, 0.0, 0.0, 0.0])
    assert want[4:] == pytest.approx([1.4997, -0.4999, -0.4999, -0.4999], abs=1e-4)
    got = cap["batch"].advantages.tolist()
    assert got == pytest.approx(want, abs=1e-5)
    rts = cap["rew"].rewards.rts.tolist()
    assert rts[:4] == pytest.approx(RTS0, abs=1e-6) and all(math.isnan(r) for r in rts[4:])
    assert cap["rew"].credited.tolist() == [True] * 4 + [False] * 4


def test_scope_all_incorrect_and_linear_credit(tmp_path):
    trainer, cap = hand_trainer(tmp_path, scope="all_incorrect", credit="linear", credit_scale=0.5)
    m = trainer.train_step()
    rts1 = [0.0, 1.0, 1.0]  # "9\n#1" errs at step 0; "#8" and "2+2=4\n#3": no error named
    assert m["credited_frac"] == pytest.approx(7 / 8)
    assert m["rts_mean"] == pytest.approx((sum(RTS0) + sum(rts1)) / 7)
    want = grpo_adv([0.5 * r for r in RTS0]) + grpo_adv([1.0] + [0.5 * r for r in rts1])
    assert cap["batch"].advantages.tolist() == pytest.approx(want, abs=1e-5)


def test_scope_off_is_plain_grpo(tmp_path):
    calls = []
    trainer, cap = hand_trainer(tmp_path, scope="off", judge_calls=calls)
    m = trainer.train_step()
    assert calls == []  # no judge calls at all
    assert m["credited_frac"] == 0.0 and math.isnan(m["rts_mean"])  # nothing judged
    assert m["all_negative_frac"] == pytest.approx(1 / 2)
    want = [0.0] * 4 + grpo_adv([1.0, 0.0, 0.0, 0.0])
    assert cap["batch"].advantages.tolist() == pytest.approx(want, abs=1e-6)
    assert cap["batch"].advantages[:4].abs().max() == 0.0


@pytest.mark.parametrize("scope", ["off", "all_negative"])
def test_all_negative_batch_learns_only_with_sgpo(tmp_path, scope):
    policy = tasks.new_policy(seed=0)
    w0 = params(policy)
    trainer, cap = hand_trainer(tmp_path, prompts=("1+1=",), policy=policy, scope=scope)
    m = trainer.train_step()
    assert m["all_negative_frac"] == 1.0
    if scope == "off":  # GRPO: zero advantages, zero gradient, weights untouched
        assert cap["batch"].advantages.abs().max() == 0.0
        assert m["grad_norm"] == 0.0 and m["loss"] == 0.0
        for k, v in params(policy).items():
            assert torch.equal(v, w0[k]), k
    else:
        assert cap["batch"].advantages.abs().min() > 0.1
        assert m["grad_norm"] > 0
        assert max_diff(params(policy), w0) > 1e-4


@pytest.mark.parametrize("scope", ["off", "all_negative"])
def test_filter_zero_std_groups(tmp_path, scope):
    BATCH["3+3="] = (6, ["3+3=6\n#6"] * 4)  # all correct: std 0 in every scope
    try:
        trainer, cap = hand_trainer(tmp_path, prompts=("1+1=", "2+2=", "3+3="), scope=scope,
                                    filter_zero_std_groups=True)
        trainer.train_step()
    finally:
        del BATCH["3+3="]
    keep = cap["keep"].tolist()
    if scope == "off":  # the all-negative group has equal rewards too: dropped
        assert keep == [False] * 4 + [True] * 4 + [False] * 4
        assert cap["batch"].n == 4
        assert cap["batch"].advantages.tolist() == pytest.approx(grpo_adv([1.0, 0, 0, 0]), abs=1e-6)
    else:  # SGPO credit spreads the all-negative group's rewards: kept
        assert keep == [True] * 8 + [False] * 4
        assert cap["batch"].n == 8


def test_everything_filtered_is_a_no_op_step(tmp_path):
    policy = tasks.new_policy(seed=0)
    w0 = params(policy)
    trainer, cap = hand_trainer(tmp_path, prompts=("1+1=",), policy=policy, scope="off",
                                filter_zero_std_groups=True, lr_schedule="cosine", max_steps=4)
    m = trainer.train_step()
    assert cap["batch"].n == 0 and m["loss"] == 0.0 and m["grad_norm"] == 0.0
    assert max_diff(params(policy), w0) == 0.0
    assert trainer.scheduler.last_epoch == 1  # the schedule still follows the step


# --------------------------------------------------------------------------
# 2b. credit_assignment = "prefix": the judge's first error bounds the credit
# --------------------------------------------------------------------------
def expected_token_advantages(cap, reach_by_text: dict) -> torch.Tensor:
    """[N, T] from the sequence advantages, each response's advantage on its
    first reach tokens (all of them unless reach_by_text names it)."""
    batch, rew = cap["batch"], cap["rew"]
    adv = rew.advantages.advantages.tolist()
    N, T = batch.mask.shape
    want = torch.zeros(N, T)
    texts = [t for p in ("1+1=", "2+2=") for t in BATCH[p][1]]
    for i, text in enumerate(texts):
        start = int(batch.mask[i].nonzero()[0])  # where the completion's first token is predicted
        n = int(batch.mask[i].sum())
        want[i, start:start + reach_by_text.get((i, text), n)] = adv[i]
    return want


def test_prefix_credit_by_hand(tmp_path):
    trainer, cap = hand_trainer(tmp_path, credit_assignment="prefix")
    m = trainer.train_step()
    adv = cap["rew"].advantages.advantages.tolist()
    assert [a > 0 for a in adv[:4]] == [False, False, True, True]  # credits 0.30, 0.08, 0.92, 0.50
    got = cap["batch"].advantages
    assert got.shape == cap["batch"].mask.shape
    reach = {(0, "1+1=2\n9\n#5"): len("1+1=2\n9"),          # negative: through the wrong step "9"
             (1, "9\n#3"): 1,                              # negative, wrong at step 0
             (3, "1+1=2\n2+0=2\n9\n#7"): len("1+1=2\n2+0=2\n")}  # positive: the correct prefix only
    # response 2 ("1+1=2\n#4") has no wrong step and the "2+2=" group is mixed: sequence level
    torch.testing.assert_close(got, expected_token_advantages(cap, reach), rtol=0, atol=0)
    assert m["credit_fallbacks"] == 0 and m["grad_norm"] > 0


def test_prefix_credit_failed_verdict_keeps_sequence_level(tmp_path):
    policy = tasks.new_policy(seed=0)

    def fn(problem, steps, reference):
        if any("2+0" in s for s in steps):
            raise TimeoutError("judge down")
        return first_nine(problem, steps, reference)

    cfg = tiny_config(tmp_path / "out", prompts_per_step=2, max_steps=1, micro_batch_size=3,
                      credit_assignment="prefix")
    trainer = SGPOTrainer(cfg, policy=policy, source=ListSource(["1+1=", "2+2="]), verifier=verify_suffix,
                          judge=FunctionJudge(fn, step_mode="line"), rollout=HandRollout(policy))
    cap = {}
    make_batch = trainer._batch
    trainer._batch = lambda e, g, r: cap.update(batch=make_batch(e, g, r), rew=r) or cap["batch"]
    m = trainer.train_step()
    assert m["judge_failures"] == 1 and cap["rew"].credited.tolist() == [True] * 3 + [False] * 5
    adv = cap["rew"].advantages.advantages.tolist()
    reach = {(0, "1+1=2\n9\n#5"): len("1+1=2\n9") if adv[0] < 0 else len("1+1=2\n"),
             (1, "9\n#3"): 1 if adv[1] < 0 else 0}
    torch.testing.assert_close(cap["batch"].advantages, expected_token_advantages(cap, reach), rtol=0, atol=0)


def test_prefix_credit_after_filtered_rows(tmp_path):
    """A filtered group before the credited one: verdicts and credit flags
    follow the kept rows, not the row numbers."""
    BATCH["3+3="] = (6, ["3+3=6\n#6"] * 4)  # all correct: std 0, dropped
    try:
        trainer, cap = hand_trainer(tmp_path, prompts=("3+3=", "1+1=", "2+2="), credit_assignment="prefix",
                                    filter_zero_std_groups=True)
        m = trainer.train_step()
    finally:
        del BATCH["3+3="]
    assert cap["keep"].tolist() == [False] * 4 + [True] * 8 and cap["batch"].n == 8
    adv = cap["rew"].advantages.advantages[4:].tolist()
    got = cap["batch"].advantages
    texts = BATCH["1+1="][1] + BATCH["2+2="][1]
    reach = [len("1+1=2\n9"), 1, None, len("1+1=2\n2+0=2\n")] + [None] * 4  # as in test_prefix_credit_by_hand
    for i, (text, r) in enumerate(zip(texts, reach)):
        start = int(cap["batch"].mask[i].nonzero()[0])
        n = int(cap["batch"].mask[i].sum())
        want = torch.zeros(got.shape[1])
        want[start:start + (n if r is None else r)] = adv[i]
        assert torch.equal(got[i], want), (i, text)
    assert m["credit_fallbacks"] == 0


def test_sequence_credit_keeps_one_advantage_per_response(tmp_path):
    """The default is the published SGPO: the [N] advantages of the existing
    tests (test_sgpo_credit_by_hand pins their values), and prefix credit
    with nothing judged (scope off) is the same update exactly."""
    assert TrainConfig().credit_assignment == "sequence"
    trainer, cap = hand_trainer(tmp_path / "seq", credit_assignment="sequence")
    trainer.train_step()
    assert cap["batch"].advantages.shape == (8,)  # one advantage per response, as before
    # without verdicts (scope off) prefix credit has nothing to bound: the same update exactly
    runs = []
    for mode in ("sequence", "prefix"):
        policy = tasks.new_policy(seed=0)
        trainer, cap = hand_trainer(tmp_path / mode, policy=policy, scope="off", credit_assignment=mode)
        runs.append((trainer.train_step(), params(policy)))
    assert runs[0][0]["loss"] == runs[1][0]["loss"]
    assert max_diff(runs[0][1], runs[1][1]) == 0.0


def test_prefix_credit_needs_a_tokenizer(tmp_path):
    policy = tasks.new_policy(seed=0)
    policy.tokenizer = None
    with pytest.raises(ValueError, match="credit_assignment.*tokenizer"):
        SGPOTrainer(tiny_config(tmp_path, credit_assignment="prefix"), policy=policy,
                    source=ListSource(["1+1="]), verifier=verify_suffix,
                    judge=FunctionJudge(first_nine, step_mode="line"), rollout=lambda e, s: [])


# --------------------------------------------------------------------------
# 3. gradient accumulation is exact
# --------------------------------------------------------------------------
@pytest.mark.parametrize("loss_type", ["dapo", "grpo", "bnpo", "dr_grpo", "cispo", "sapo", "grpo+kl"])
def test_gradient_accumulation_is_exact(tmp_path, loss_type):
    # grpo+kl: beta > 0 against the frozen initial policy, the KL weighted by the ratio
    kl = dict(beta=0.05, use_bias_correction_kl=True) if loss_type.endswith("+kl") else {}
    loss_type = loss_type.split("+")[0]
    results = []
    for layout, micro in (("packed", 64), ("packed", 3), ("packed", 1), ("padded", 64), ("padded", 3)):
        policy = tasks.new_policy(seed=0)
        # Adam divides by sqrt(v) + eps: with the default eps 1e-8 it blows the fp32 rounding
        # of the gradient sums (~1e-9 absolute, summed in another order) up to lr-sized
        # steps on the elements whose gradient is itself ~1e-8. A larger eps keeps the
        # weight comparison about the gradients; they are also compared directly below.
        trainer, _ = hand_trainer(tmp_path / f"{layout}{micro}", policy=policy, scope="all_incorrect",
                                  loss_type=loss_type, micro_batch_size=micro, max_grad_norm=0.0, mu=2,
                                  adam_eps=1e-5, update_layout=layout, **kl)
        m = trainer.train_step()
        grads = {k: p.grad.clone() for k, p in policy.named_parameters()}
        results.append((params(policy), grads, m))
    (w1, g1, m1) = results[0]
    w0 = params(tasks.new_policy(seed=0))
    assert max_diff(w1, w0) > 1e-4
    for w, g, m in results[1:]:
        assert max_diff(w, w1) < 1e-6
        for k in g1:  # the last epoch's gradients
            torch.testing.assert_close(g[k], g1[k], rtol=1e-5, atol=1e-7)
        assert m["loss"] == pytest.approx(m1["loss"], rel=1e-5, abs=1e-7)
        assert m["grad_norm"] == pytest.approx(m1["grad_norm"], rel=1e-5)


def test_packed_layout_matches_padded_in_the_trainer(tmp_path):
    """The update's packed layout (each prompt once, no padding; train/batch.py) against the
    padded one through a whole step that uses every scoring path: prefix credit ([N, T]
    advantages), beta > 0 (the reference model scores in the layout), mu 2 with
    recompute_old_logp, gradient checkpointing, and a token budget that splits the groups."""
    results = []
    for layout in ("padded", "packed"):
        policy = tasks.new_policy(seed=0)
        trainer, cap = hand_trainer(tmp_path / layout, policy=policy, scope="all_incorrect", update_layout=layout,
                                    credit_assignment="prefix", beta=0.05, mu=2, recompute_old_logp=True,
                                    gradient_checkpointing=True, micro_batch_tokens=24, max_grad_norm=0.0,
                                    adam_eps=1e-5)
        m = trainer.train_step()
        results.append((params(policy), {k: p.grad.clone() for k, p in policy.named_parameters()}, m, cap["batch"]))
    (w0, g0, m0, padded), (w1, g1, m1, packed) = results
    assert max_diff(w0, params(tasks.new_policy(seed=0))) > 1e-4
    assert max_diff(w1, w0) < 1e-6
    for k in g0:
        torch.testing.assert_close(g1[k], g0[k], rtol=1e-5, atol=1e-7)
    for key in ("loss", "grad_norm", "kl_mean"):
        assert m1[key] == pytest.approx(m0[key], rel=1e-5, abs=1e-8), key
    # what each layout computed: the padded one N x T positions, the packed one each prompt
    # once per micro-batch and no padding (the budget of 24 splits the 4-row groups)
    assert m0["update_positions"] == padded.n * padded.mask.shape[1] and m0["update_padding_frac"] > 0.3
    assert packed.token_positions <= m1["update_positions"] < m0["update_positions"]
    assert m1["update_padding_frac"] == pytest.approx(1 - packed.token_positions / m1["update_positions"])


# --------------------------------------------------------------------------
# 4. resume after SIGKILL, 5. torchrun: both against one uninterrupted run
# --------------------------------------------------------------------------
STEPS = 5


def write_run_config(path, model, judge_url) -> str:
    text = f"""
model = "{model}"
max_steps = {STEPS}
seed = 3
[data]
task_min_ops = 1
task_max_ops = 2
[rollout]
prompts_per_step = 3               # 2 ranks: 2 prompts and 1, so 2 micro-batches and 1
num_samples = 4
max_new_tokens = 24
[sgpo]
judge = "http"
judge_url = "{judge_url}"
judge_model = "fake-judge"
[loss]
micro_batch_size = 5
[eval]                             # sampled (pass@2), sharded over the ranks, at steps 0, 2, 4 and 5
eval_every = 2
eval_problems = 3                  # per k: 6 problems, 3 on each of 2 ranks
eval_samples = 2
eval_temperature = 1.0
[optim]
lr = 1e-3
adam_eps = 1e-6
lr_schedule = "constant"
[run]
save_every = 1
keep_checkpoints = 2
tensorboard = false
progress = false
"""
    with open(path, "w") as f:
        f.write(text)
    return str(path)


@pytest.fixture(scope="module")
def reference_run(tmp_path_factory, tiny_model, judge_server):
    """The uninterrupted run, in process (1 thread): config file, output dir."""
    root = tmp_path_factory.mktemp("ref")
    config = write_run_config(root / "run.toml", tiny_model, judge_server.url)
    out = root / "out"
    cfg = load_config(config, ["--output", str(out), "--keep-checkpoints", str(STEPS)])
    history = SGPOTrainer(cfg).train()
    assert all(m["grad_norm"] > 0 for m in history)  # something to learn at every step
    assert max_diff(read_weights(str(out / f"checkpoint-{STEPS}")), read_weights(tiny_model)) > 1e-3
    return config, out


def assert_same_evaluations(rows: list[dict], ref_rows: list[dict]):
    """The held-out metrics (eval/...) of the steps both runs evaluated are equal, and there are some."""
    ref = {r["step"]: r for r in ref_rows}
    pairs = [(r, ref[r["step"]]) for r in rows if "eval/accuracy" in r and "eval/accuracy" in ref.get(r["step"], {})]
    assert len(pairs) >= 2, [r["step"] for r in rows if "eval/accuracy" in r]
    for a, b in pairs:
        keys = sorted(k for k in b if k.startswith("eval/"))
        assert "eval/pass@2" in keys and "eval/k2/accuracy" in keys
        assert sorted(k for k in a if k.startswith("eval/")) == keys
        for k in keys:
            assert a[k] == pytest.approx(b[k], abs=1e-9), (a["step"], k)


def wait_for(cond, timeout, proc=None, what=""):
    t0 = time.time()
    while not cond():
        if proc is not None and proc.poll() is not None:
            raise AssertionError(f"process ended (rc {proc.returncode}) before {what}")
        if time.time() - t0 > timeout:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.005)


def torchrun_train(config: str, out, *args) -> list:
    """`sgpo train` on 2 gloo processes under torchrun, on a free loopback port."""
    return [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_addr", "127.0.0.1",
            "--master_port", str(free_port()), "-m", "sgpo_engine.cli", "train", "--config", config, "--output",
            str(out), *args]


def kill_after_checkpoint(cmd: list, out, log_path, timeout: float) -> list[int]:
    """Runs cmd in its own process group until OUTPUT/checkpoint-3 is complete, then SIGKILLs
    the whole group (torchrun and its workers alike) during step 4. Returns the steps of the
    complete checkpoints left (3 or 4)."""
    log = open(log_path, "w")
    proc = subprocess.Popen(cmd, stdout=log, stderr=log, cwd=ROOT, env=subprocess_env(), start_new_session=True)
    try:
        wait_for(lambda: os.path.isfile(out / "checkpoint-3" / ckpt.STATE_FILE), timeout, proc, "checkpoint-3")
        time.sleep(0.05)
        assert proc.poll() is None, "the run ended before it could be killed"
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        log.close()
    assert proc.returncode == -signal.SIGKILL
    done = [s for s, _ in ckpt.list_checkpoints(str(out))]
    assert done and 3 <= done[-1] < STEPS, done
    return done


def test_resume_after_sigkill(tmp_path, reference_run):
    config, ref = reference_run
    out = tmp_path / "out"
    done = kill_after_checkpoint(cli_cmd("train", "--config", config, "--output", out), out, tmp_path / "log.txt",
                                 timeout=60)
    # debris a crash could leave: a half-written checkpoint under its temporary
    # name (with a garbage state file), and a final-named folder without state
    shutil.copytree(out / f"checkpoint-{done[-1]}", out / f".checkpoint-{STEPS}.tmp")
    (out / f".checkpoint-{STEPS}.tmp" / ckpt.STATE_FILE).write_bytes(b"garbage")
    (out / f"checkpoint-{STEPS - 1}").mkdir(exist_ok=True)
    (out / f"..checkpoint-{done[-1] + 1}.tmp.tmp-1-abcdef").mkdir(exist_ok=True)  # the model save's temporary
    assert ckpt.latest_checkpoint(str(out)) == str(out / f"checkpoint-{done[-1]}")
    with open(out / "metrics.jsonl", "a") as f:  # a line torn by a kill in the middle of a write
        f.write('{"step": %d, "loss": 0.1' % (done[-1] + 1))

    r = run(cli_cmd("train", "--config", config, "--output", out, "--resume"), timeout=120)
    assert r.returncode == 0, r.stderr[-3000:]
    assert f"done: step {STEPS}" in r.stdout
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [row["step"] for row in rows] == list(range(0, STEPS + 1))  # redone steps are not duplicated
    assert [s for s, _ in ckpt.list_checkpoints(str(out))] == [STEPS - 1, STEPS]
    assert not any(n.startswith(".") for n in os.listdir(out)), os.listdir(out)
    got, want = read_weights(str(out / f"checkpoint-{STEPS}")), read_weights(str(ref / f"checkpoint-{STEPS}"))
    print("resume: max |w - w_ref| =", max_diff(got, want))
    assert max_diff(got, want) <= 1e-6
    ref_rows = [json.loads(line) for line in (ref / "metrics.jsonl").read_text().splitlines()]
    for a, b in zip(rows[1:], ref_rows[1:]):
        assert a["rts_mean"] == b["rts_mean"] and a["loss"] == pytest.approx(b["loss"], abs=1e-6)
    assert_same_evaluations(rows, ref_rows)  # after the resume: the same problems, the same samples


@pytest.mark.parametrize("parallel", ["ddp", "fsdp"])
def test_torchrun_two_processes_match_one(tmp_path, reference_run, parallel):
    config, ref = reference_run
    out = tmp_path / "out"
    r = run(torchrun_train(config, out, "--max-steps", "3", "--parallel", parallel), timeout=150)
    assert r.returncode == 0, (r.stdout[-2000:], r.stderr[-4000:])
    assert "done: step 3" in r.stdout and r.stdout.count("done:") == 1  # rank 0 reports
    got, want = read_weights(str(out / "checkpoint-3")), read_weights(str(ref / "checkpoint-3"))
    print("torchrun: max |w - w_ref| =", max_diff(got, want))
    assert max_diff(got, want) < 1e-5
    assert (out / "checkpoint-3" / "optimizer").is_dir() == (parallel == "fsdp")  # sharded optimizer state
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    ref_rows = [json.loads(line) for line in (ref / "metrics.jsonl").read_text().splitlines()][:4]
    assert [row["step"] for row in rows] == [0, 1, 2, 3]
    assert_same_evaluations(rows[:3], ref_rows[:3])  # each rank sampled its share of the held-out problems
    for a, b in zip(rows[1:], ref_rows[1:]):  # the same rollouts, the same global statistics
        for k in ("reward_mean", "rts_mean", "credited_frac", "all_negative_frac", "response_len_mean"):
            assert a[k] == pytest.approx(b[k], abs=1e-6), k
        for k in ("loss", "grad_norm"):
            assert a[k] == pytest.approx(b[k], rel=1e-4, abs=1e-6), k


def test_fsdp_with_a_sharded_reference_model_matches_one_process(tmp_path, reference_run):
    """beta > 0 under FSDP: the reference model is sharded too; 2 ranks equal 1 process."""
    config, _ = reference_run
    overrides = ["--beta", "0.05", "--max-steps", "2"]
    ref = tmp_path / "ref"
    SGPOTrainer(load_config(config, overrides + ["--output", str(ref)])).train()
    out = tmp_path / "out"
    r = run(torchrun_train(config, out, "--parallel", "fsdp", *overrides), timeout=150)
    assert r.returncode == 0, (r.stdout[-2000:], r.stderr[-4000:])
    assert max_diff(read_weights(str(out / "checkpoint-2")), read_weights(str(ref / "checkpoint-2"))) < 1e-5
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    ref_rows = [json.loads(line) for line in (ref / "metrics.jsonl").read_text().splitlines()]
    for a, b in zip(rows[1:], ref_rows[1:]):
        assert a["kl_mean"] == pytest.approx(b["kl_mean"], rel=1e-4, abs=1e-7)


def test_fsdp_resume_after_sigkill(tmp_path, reference_run):
    """FSDP under torchrun, killed (the whole process group) after checkpoint 3, resumed
    from its sharded optimizer state: the end equals the uninterrupted run."""
    config, ref = reference_run
    out = tmp_path / "out"
    kill_after_checkpoint(torchrun_train(config, out, "--parallel", "fsdp"), out, tmp_path / "log.txt", timeout=120)
    r = run(torchrun_train(config, out, "--parallel", "fsdp", "--resume"), timeout=150)
    assert r.returncode == 0, (r.stdout[-2000:], r.stderr[-4000:])
    got, want = read_weights(str(out / f"checkpoint-{STEPS}")), read_weights(str(ref / f"checkpoint-{STEPS}"))
    print("fsdp resume: max |w - w_ref| =", max_diff(got, want))
    assert max_diff(got, want) < 1e-5
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [row["step"] for row in rows] == list(range(0, STEPS + 1))
    assert_same_evaluations(rows, [json.loads(line) for line in (ref / "metrics.jsonl").read_text().splitlines()])


@pytest.mark.parametrize("parallel", ["ddp", "fsdp"])
def test_torchrun_rank_without_prompts(tmp_path, reference_run, parallel):
    """One prompt per step on 2 ranks: rank 1 has nothing to train on, yet must
    join the gradient all-reduce (a zero backward; under FSDP also every
    forward's all-gather), or rank 0 waits forever."""
    config, _ = reference_run
    overrides = ["--prompts-per-step", "1", "--max-steps", "1", "--parallel", parallel]
    ref = tmp_path / "ref"
    SGPOTrainer(load_config(config, overrides + ["--output", str(ref)])).train()
    out = tmp_path / "out"
    r = run(torchrun_train(config, out, *overrides), timeout=150)
    assert r.returncode == 0, (r.stdout[-2000:], r.stderr[-4000:])
    got, want = read_weights(str(out / "checkpoint-1")), read_weights(str(ref / "checkpoint-1"))
    assert max_diff(got, want) < 1e-5
    assert max_diff(got, read_weights(load_config(config).model)) > 1e-4  # it trained


# --------------------------------------------------------------------------
# 6. bad config fields and dataset rows: clear errors, API and CLI
# --------------------------------------------------------------------------
@pytest.mark.parametrize("values, needle", [
    ({"learning_rate": 1e-4}, "unknown field 'learning_rate' (did you mean 'lr'?)"),
    ({"optim": {"lrr": 1e-4}}, "unknown field 'lrr' (did you mean 'lr'?)"),
    ({"run": {"zzz": 1}}, "unknown field 'zzz' (`sgpo train --help` lists them)"),
    ({"max_steps": "many"}, "'max_steps'"),
    ({"max_steps": 1.5}, "'max_steps'"),
    ({"lr": True}, "'lr'"),
    ({"resume": "yes"}, "'resume'"),
    ({"scope": "sometimes"}, "'scope'"),
    ({"loss_type": "ppo"}, "'loss_type'"),
    ({"credit_assignment": "token"}, "'credit_assignment'"),
    ({"judge": "http"}, "'judge_url'"),
    ({"judge": "http", "judge_url": "http://127.0.0.1:1/v1"}, "'judge_model'"),
    ({"micro_batch_size": 0}, "'micro_batch_size'"),
    ({"top_p": 1.5}, "'top_p'"),
    ({"dataset": "data.jsonl"}, "'judge'"),
    ({"judge": "none"}, "'scope'"),
])
def test_bad_config_api(values, needle):
    with pytest.raises(ValueError, match=re.escape(needle)):
        from_dict(values).validate()


def test_bad_config_toml_and_trainer(tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_text('[optim]\nlr = "fast"\n')
    with pytest.raises(ValueError, match="'lr'"):
        load_config(str(bad))
    bad.write_text("max_steps = [1\n")
    with pytest.raises(ValueError, match="invalid TOML"):
        load_config(str(bad))
    with pytest.raises(ValueError, match="no such file"):
        load_config(str(tmp_path / "missing.toml"))
    with pytest.raises(ValueError, match=re.escape("unknown field 'max_step' (did you mean 'max_steps'?)")):
        load_config(None, ["--max-step", "3"])
    with pytest.raises(ValueError, match="'scope'"):
        SGPOTrainer(tiny_config(tmp_path, scope="nope"), policy=tasks.new_policy(seed=0))


def test_train_help_lists_every_field_by_table(capsys):
    """`sgpo train --help` shows every field with its type and default, under
    the TOML table the shipped recipes put it in."""
    with pytest.raises(SystemExit):
        cli.main(["train", "--help"])
    text = capsys.readouterr().out
    tables = dict(field_tables())
    assert sorted(n for rows in tables.values() for n, *_ in rows) == sorted(FIELDS)
    for name, kind, default, _ in (row for rows in tables.values() for row in rows):
        flag = f"--{name.replace('_', '-')} {kind.upper().replace(' ', '_')}"
        assert re.search(rf"^  {re.escape(flag)} +default {re.escape(json.dumps(default))}", text, re.M), name
    for recipe in ("arith.toml", "gsm8k.toml"):
        with open(os.path.join(os.path.dirname(os.path.dirname(__file__)), "examples", recipe), "rb") as f:
            values = tomllib.load(f)
        for table, fields in ((t, v) for t, v in values.items() if isinstance(v, dict)):
            assert set(fields) <= {n for n, *_ in tables[f"[{table}]"]}, (recipe, table)
    # and every judge of the registry, with the config fields it reads
    from sgpo_engine.judge import JUDGES
    from sgpo_engine.train.config import JUDGE_OPTION_FIELDS
    judges = text[text.index("judges (config field 'judge'"):]
    for name, spec in JUDGES.items():
        line = next(ln for ln in judges.splitlines() if ln.startswith(f"  {name} "))
        assert spec.about in line and all(JUDGE_OPTION_FIELDS[o] in line for o in spec.options), line


BAD_ROWS = [
    ('{"prompt": "1+1=", "answer": 2}\n{"prompt": "2+2="}\n', ":2: missing field 'answer'"),
    ('{"answer": 2}\n', ":1: missing field 'prompt'"),
    ('{"prompt": "1+1=", "answer": 2}\n\n{"prompt": "  ", "answer": 3}\n', ":3: empty prompt"),
    ('{"prompt": "1+1=", "answer": 2}\n{"prompt": "2+2=", "answer": 4\n', ":2: invalid JSON"),
    ('[1, 2]\n', ":1: expected a JSON object"),
    ('{"prompt": [{"role": "user"}], "answer": 2}\n', ":1: prompt must be"),
    ('{"prompt": "1+1=", "answer": null}\n', ":1: field 'answer' is null"),
    ('{"prompt": "1+1=", "answer": 2, "reference": 5}\n', ":1: field 'reference' must be a string"),
    ('\n', "no examples"),
]


@pytest.mark.parametrize("text, needle", BAD_ROWS)
def test_bad_dataset_rows_api(tmp_path, text, needle):
    path = tmp_path / "data.jsonl"
    path.write_text(text)
    want = f"{path}{needle}" if needle.startswith(":") else needle  # file:line, then what is wrong
    with pytest.raises(ValueError) as e:
        JsonlSource(str(path))
    assert want in str(e.value), str(e.value)
    with pytest.raises(ValueError) as e:
        SGPOTrainer(tiny_config(tmp_path / "o", dataset=str(path), judge="none", scope="off"),
                    policy=tasks.new_policy(seed=0))
    assert want in str(e.value), str(e.value)


def test_preflight_errors_name_the_thing(tmp_path, tiny_model, capsys):
    """Bad input is one clear error before the first step (API and CLI): a
    model folder without the tokenizer or chat template its prompts need, a
    prompt longer than the context, a judge server that refuses connections."""
    data = tmp_path / "data.jsonl"
    data.write_text('{"prompt": "1+1=", "answer": 2}\n')
    base = ["train", "--dataset", str(data), "--judge", "none", "--scope", "off", "--output", str(tmp_path / "o"),
            "--tensorboard", "false"]
    no_tok = tmp_path / "no_tokenizer"
    shutil.copytree(tiny_model, no_tok)
    os.remove(no_tok / "tokenizer.json")
    assert f"{no_tok}: no tokenizer.json" in cli_error(capsys, base + ["--model", str(no_tok)])
    err = cli_error(capsys, base + ["--model", tiny_model, "--chat-template"])
    assert f"{tiny_model}: config field 'chat_template' is true, but the tokenizer has no chat template" in err
    context = tasks.new_policy(seed=0).config.max_position_embeddings
    data.write_text('{"prompt": "1+1=", "answer": 2}\n' + json.dumps({"prompt": "1+" * context, "answer": 0}) + "\n")
    err = cli_error(capsys, base + ["--model", tiny_model])
    assert re.search(rf"{re.escape(str(data))}:2: the prompt is \d+ tokens, and the model's context is {context}", err)
    data.write_text('{"prompt": "1+1=", "answer": 2}\n')
    url = f"http://127.0.0.1:{free_port()}/v1"  # nothing listens there
    err = cli_error(capsys, ["train", "--judge", "http", "--judge-url", url, "--judge-model", "judge",
                             "--model", tiny_model, "--output", str(tmp_path / "o"), "--tensorboard", "false"])
    assert f"config field 'judge_url': cannot reach {url}/models" in err and "is the judge server up" in err
    assert not (tmp_path / "o" / "metrics.jsonl").exists()


def cli_error(capsys, args) -> str:
    assert cli.main(args) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1, err
    assert err.startswith("sgpo train: error: ")
    return err


def test_bad_config_and_data_cli(tmp_path, capsys, tiny_model):
    bad = tmp_path / "bad.toml"
    bad.write_text('[rollout]\nnum_samples = "eight"\n')
    assert "'num_samples'" in cli_error(capsys, ["train", "--config", str(bad)])
    bad.write_text('colour = "blue"\n')
    assert "unknown field 'colour'" in cli_error(capsys, ["train", "--config", str(bad)])
    assert "'max_steps'" in cli_error(capsys, ["train", "--max-steps", "x"])
    assert "'scope'" in cli_error(capsys, ["train", "--scope", "maybe"])
    assert "unknown field 'bogus'" in cli_error(capsys, ["train", "--bogus", "1"])
    assert "(did you mean 'num_samples'?)" in cli_error(capsys, ["train", "--num-generations", "8"])
    assert "'judge_url'" in cli_error(capsys, ["train", "--judge", "http", "--judge-model", "m"])
    data = tmp_path / "data.jsonl"
    data.write_text('{"prompt": "1+1=", "answer": 2}\n{"prompt": "", "answer": 4}\n')
    err = cli_error(capsys, ["train", "--dataset", str(data), "--judge", "none", "--scope", "off",
                             "--model", tiny_model, "--output", str(tmp_path / "o"), "--tensorboard", "false"])
    assert f"{data}:2: empty prompt" in err
    # and through a real process: exit status 2, one line on stderr, no traceback
    bad.write_text("[loss]\nloss_type = 'ppo'\n")
    r = run(cli_cmd("train", "--config", bad), timeout=60)
    assert r.returncode == 2, r.stderr
    assert r.stderr.strip().splitlines() == [r.stderr.strip()] and "'loss_type'" in r.stderr
    assert "Traceback" not in r.stderr


# --------------------------------------------------------------------------
# 7. JSONL end to end (Python API) and the example config (CLI)
# --------------------------------------------------------------------------
def test_jsonl_dataset_with_user_verifier(tmp_path):
    data = tmp_path / "data.jsonl"
    rows = [{"question": f"{a}+{b}=", "gold": str(a + b)} for a in range(1, 4) for b in range(1, 3)]
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    seen = []

    def parity(text, answer):  # a user verifier: "correct" when the response has an even length
        seen.append(answer)
        return len(text) % 2 == 0

    out = tmp_path / "out"
    cfg = tiny_config(out, dataset=str(data), prompt_field="question", answer_field="gold", judge="none",
                      scope="off", max_steps=2, prompts_per_step=3, lr=1e-3)
    policy = tasks.new_policy(seed=0)
    w0 = params(policy)
    history = SGPOTrainer(cfg, policy=policy, verifier=parity).train()
    assert len(history) == 2 and len(seen) == 2 * 3 * 4
    assert set(seen) <= {r["gold"] for r in rows}
    for m in history:
        assert 0 < m["accuracy"] < 1 and m["credited_frac"] == 0.0 and m["judge_failures"] == 0
        assert "premature_answer_frac" not in m  # task metrics only for the built-in task
    assert max_diff(params(policy), w0) > 1e-4
    assert (out / "checkpoint-2" / ckpt.STATE_FILE).is_file()
    # the six examples, three per step: one epoch, each example once
    src = JsonlSource(str(data), "question", "gold", seed=0)
    assert sorted(e.prompt for s in (0, 1) for e in src.batch(s, 3)) == sorted(r["question"] for r in rows)


def test_example_config_with_overrides(tmp_path, capsys, tiny_model):
    out = tmp_path / "out"
    code = cli.main(["train", "--config", os.path.join(ROOT, "examples", "arith.toml"), "--max-steps", "2",
                     "--output", str(out), "--model", tiny_model, "--task-min-ops", "1", "--task-max-ops", "2",
                     "--max-new-tokens", "24", "--prompts-per-step", "4", "--num-samples", "4"])
    assert code == 0
    assert "done: step 2" in capsys.readouterr().out
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [0, 1, 2]  # the recipe evaluates at step 0 and the last
    assert "eval/k2/accuracy" in rows[0] and "eval/k2/accuracy" in rows[2] and "eval/accuracy" not in rows[1]
    saved = load_config(str(out / "config.toml"))
    assert (saved.model, saved.max_steps, saved.task_max_ops, saved.num_samples) == (tiny_model, 2, 2, 4)
    assert (saved.scope, saved.loss_type, saved.lr) == ("all_negative", "dapo", 3e-5)  # from the file
    assert (out / "checkpoint-2").is_dir()


# --------------------------------------------------------------------------
# 8. dynamic sampling (train/sampling.py): batches until prompts_per_step informative groups
# --------------------------------------------------------------------------
class StreamSource:
    """Prompt batch c of the stream is STREAM[c] (the trainer's cursor picks it)."""

    def __init__(self, stream):
        self.stream, self.asked = stream, []

    def batch(self, c, n):
        self.asked.append(c)
        return [Example(p, BATCH[p][0]) for p in self.stream[c]][:n]


STREAM = [["1+1=", "3+3="], ["2+2=", "3+3="], ["2+2=", "1+1="], ["3+3=", "3+3="]]


def ds_trainer(tmp_path, **kw):
    policy = tasks.new_policy(seed=0)
    cfg = tiny_config(tmp_path / "out", **{"prompts_per_step": 2, "max_steps": 2, "micro_batch_size": 3,
                                           "lr": 1e-3, "dynamic_sampling": "filter", "save_every": 1, **kw})
    source = StreamSource(STREAM)
    trainer = SGPOTrainer(cfg, policy=policy, source=source, verifier=verify_suffix,
                          judge=FunctionJudge(first_nine, step_mode="line"), rollout=HandRollout(policy))
    captured = []
    make_batch = trainer._batch
    trainer._batch = lambda e, g, s: captured.append((e, make_batch(e, g, s))) or captured[-1][1]
    return trainer, source, captured


def group_tokens(prompts, tok) -> int:
    """HandRollout's completion tokens of these prompts' groups (the text and EOS)."""
    return sum(len(tok.encode(t, add_special_tokens=False)) + 1 for p in prompts
               for t in (["3+3=6\n#6"] * 4 if p == "3+3=" else BATCH[p][1]))


@pytest.mark.parametrize("scope", ["off", "all_negative"])
def test_dynamic_sampling_draws_until_the_batch_is_informative(tmp_path, scope):
    BATCH["3+3="] = (6, ["3+3=6\n#6"] * 4)  # all correct: never informative
    try:
        trainer, source, captured = ds_trainer(tmp_path, scope=scope, max_steps=1)
        m = trainer.train_step()
    finally:
        del BATCH["3+3="]
    tok = trainer.policy.tokenizer
    examples, batch = captured[0]
    if scope == "off":  # GRPO: only the mixed group "2+2=" informs; batches 0, 1, 2 drawn
        assert source.asked == [0, 1, 2] and [e.prompt for e in examples] == ["2+2=", "2+2="]
        assert batch.advantages.tolist() == pytest.approx(grpo_adv([1.0, 0, 0, 0]) * 2, abs=1e-5)
        drawn = ["1+1=", "3+3=", "2+2=", "3+3=", "2+2=", "1+1="]
    else:  # SGPO: the judge's credit makes the all-negative "1+1=" informative
        assert source.asked == [0, 1] and [e.prompt for e in examples] == ["1+1=", "2+2="]
        want = grpo_adv([sigmoid_credit(r) for r in RTS0]) + grpo_adv([1.0, 0.0, 0.0, 0.0])
        assert batch.advantages.tolist() == pytest.approx(want, abs=1e-5)
        drawn = ["1+1=", "3+3=", "2+2=", "3+3="]
    assert (m["sample_batches"], m["groups_drawn"], m["groups_kept"]) == (len(drawn) // 2, len(drawn), 2)
    assert m["rollout_tokens"] == m["rollout_tokens_total"] == group_tokens(drawn, tok)  # thrown away ones too
    judged = 4 * drawn.count("1+1=") if scope != "off" else 0
    assert m["judge_calls"] == judged and (m["judge_read_tokens"] > 0) == (judged > 0)
    assert trainer.batches_drawn == len(drawn) // 2
    # the policy on every drawn group, not only the kept ones: "2+2=" 1 of 4 right, "3+3=" 4 of 4
    assert m["drawn_accuracy"] == pytest.approx((drawn.count("2+2=") + 4 * drawn.count("3+3=")) / (4 * len(drawn)))
    assert m["drawn_all_negative_frac"] == pytest.approx(drawn.count("1+1=") / len(drawn))


def test_dynamic_sampling_stops_at_max_sample_batches_and_resumes(tmp_path):
    BATCH["3+3="] = (6, ["3+3=6\n#6"] * 4)
    try:
        trainer, source, captured = ds_trainer(tmp_path, scope="off", max_sample_batches=2, max_steps=2)
        history = trainer.train()
        assert source.asked == [0, 1, 2, 3]  # 2 batches a step, the cap: 1 informative group in each pair
        assert [m["groups_kept"] for m in history] == [1, 1] and [m["sample_batches"] for m in history] == [2, 2]
        assert [[x.prompt for x in e] for e, _ in captured] == [["2+2="], ["2+2="]]
        state = ckpt.load_trainer_state(str(tmp_path / "out" / "checkpoint-1"))
        assert state["batches_drawn"] == 2 and state["totals"]["rollout_tokens"] == history[0]["rollout_tokens"]
        # a resumed run continues the prompt stream where step 1 left it
        resumed, source2, _ = ds_trainer(tmp_path, scope="off", max_sample_batches=2, max_steps=2)
        resumed.cfg.resume = True
        resumed._resume()
        assert resumed.step == 2 and resumed.batches_drawn == 4
        assert resumed.totals == {k: history[-1][f"{k}_total"] for k in resumed.totals}
    finally:
        del BATCH["3+3="]


def test_dynamic_sampling_off_keeps_one_batch_a_step(tmp_path):
    trainer, source, _ = ds_trainer(tmp_path, dynamic_sampling="off", max_steps=2)
    source.stream = [["1+1=", "2+2="]] * 3
    history = trainer.train()
    assert source.asked == [0, 1] and trainer.batches_drawn == trainer.step == 2
    assert [m["sample_batches"] for m in history] == [1, 1] and history[0]["groups_kept"] == 2


def test_torchrun_dynamic_sampling_matches_one(tmp_path, reference_run):
    """GRPO + dynamic sampling on the warm start (k 1-2: many groups all right, so batches are
    drawn again): 2 ranks agree on every decision, and equal one process."""
    config, _ = reference_run
    overrides = ["--model", "builtin:arith", "--scope", "off", "--judge", "none", "--dynamic-sampling", "filter",
                 "--max-sample-batches", "3", "--max-steps", "2", "--eval-every", "0", "--lr", "1e-4"]
    ref = tmp_path / "ref"
    SGPOTrainer(load_config(config, overrides + ["--output", str(ref)])).train()
    out = tmp_path / "out"
    r = run(torchrun_train(config, out, *overrides), timeout=150)
    assert r.returncode == 0, (r.stdout[-2000:], r.stderr[-4000:])
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    ref_rows = [json.loads(line) for line in (ref / "metrics.jsonl").read_text().splitlines()]
    assert any(row["sample_batches"] > 1 for row in ref_rows), "dynamic sampling never drew again: proves nothing"
    for a, b in zip(rows, ref_rows):
        for k in ("sample_batches", "groups_drawn", "groups_kept", "rollout_tokens", "reward_mean", "accuracy"):
            assert a[k] == pytest.approx(b[k], abs=1e-6), k
    assert max_diff(read_weights(str(out / "checkpoint-2")), read_weights(str(ref / "checkpoint-2"))) < 1e-5


# --------------------------------------------------------------------------
# 9. LoRA under torchrun and across a SIGKILL (the rest: tests/test_lora.py)
# --------------------------------------------------------------------------
LORA = ["--lora-r", "4", "--lora-alpha", "8", "--lr", "1e-3", "--eval-every", "0"]


def read_adapter(path) -> dict:
    from safetensors.torch import load_file
    return load_file(os.path.join(path, "adapter_model.safetensors"))


@pytest.mark.parametrize("parallel", ["ddp", "fsdp"])
def test_torchrun_lora_matches_one(tmp_path, reference_run, parallel):
    """Adapters on 2 ranks equal 1 process; with beta > 0 the reference is the base model
    (under FSDP the sharded policy itself, adapters off)."""
    config, _ = reference_run
    overrides = [*LORA, "--beta", "0.05", "--max-steps", "2"]
    ref = tmp_path / "ref"
    SGPOTrainer(load_config(config, overrides + ["--output", str(ref)])).train()
    out = tmp_path / "out"
    r = run(torchrun_train(config, out, *overrides, "--parallel", parallel), timeout=150)
    assert r.returncode == 0, (r.stdout[-2000:], r.stderr[-4000:])
    got, want = read_adapter(out / "checkpoint-2"), read_adapter(ref / "checkpoint-2")
    assert max_diff(got, want) < 1e-5
    assert max(float(v.abs().max()) for k, v in want.items() if "lora_B" in k) > 1e-4  # it trained
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    ref_rows = [json.loads(line) for line in (ref / "metrics.jsonl").read_text().splitlines()]
    for a, b in zip(rows, ref_rows):
        assert a["kl_mean"] == pytest.approx(b["kl_mean"], rel=1e-4, abs=1e-7)


def test_lora_resume_after_sigkill(tmp_path, reference_run):
    config, _ = reference_run
    ref = tmp_path / "ref"
    SGPOTrainer(load_config(config, [*LORA, "--output", str(ref)])).train()
    out = tmp_path / "out"
    kill_after_checkpoint(cli_cmd("train", "--config", config, "--output", out, *LORA), out, tmp_path / "log.txt",
                          timeout=60)
    r = run(cli_cmd("train", "--config", config, "--output", out, *LORA, "--resume"), timeout=120)
    assert r.returncode == 0, r.stderr[-3000:]
    got, want = read_adapter(out / f"checkpoint-{STEPS}"), read_adapter(ref / f"checkpoint-{STEPS}")
    print("lora resume: max |w - w_ref| =", max_diff(got, want))
    assert max_diff(got, want) <= 1e-6


def test_warmup_then_cosine_decay_to_the_floor():
    """The -cosine demo arm's schedule: linear warmup, then cosine from lr down to min_lr_ratio * lr
    at max_steps (and no further)."""
    from types import SimpleNamespace
    cfg = TrainConfig(lr=1e-4, warmup_steps=2, lr_schedule="cosine", max_steps=10, min_lr_ratio=0.1)
    factor = lambda step: SGPOTrainer._lr_factor(SimpleNamespace(cfg=cfg), step)
    assert [factor(s) for s in (0, 1)] == pytest.approx([1 / 3, 2 / 3])
    assert factor(2) == pytest.approx(1.0) and factor(6) == pytest.approx(0.55)  # halfway: (1 + 0.1) / 2
    assert factor(10) == pytest.approx(0.1) and factor(12) == pytest.approx(0.1)
    cfg.lr_schedule = "constant"
    assert factor(1) == pytest.approx(2 / 3) and factor(9) == 1.0
