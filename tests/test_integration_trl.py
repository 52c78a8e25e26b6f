"""sgpo_engine.integrations.trl.SGPOReward: its rewards against the SGPO rule
computed by hand, across processes (two real gloo processes), with judge
failures, and inside a real trl.GRPOTrainer run."""
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
    return SGPOReward(tasks.make_judge(), verifier=tasks.verify, beta=BETA, gamma=GAMMA, **kw)


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
                            beta=BETA, gamma=GAMMA)
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
def test_two_grpo_steps_with_trl(tmp_path):
    trl = pytest.importorskip("trl")
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
    trainer = trl.GRPOTrainer(model=model, reward_funcs=[_reward()], args=config, train_dataset=Dataset.from_list(rows),
                              processing_class=AutoTokenizer.from_pretrained(path))
    trainer.train()
    logs = [h for h in trainer.state.log_history if "loss" in h]
    assert len(logs) == 2 and all(math.isfinite(h["loss"]) for h in logs)
    assert any("sgpo/judged" in h for h in trainer.state.log_history)
    assert any(not torch.equal(a, b.detach()) for a, b in zip(before, model.parameters()))
