"""sgpo_engine.integrations.verl against verl 0.9's own code: the "sgpo" estimator
through verl's compute_advantage (scope off = verl's "grpo" on the same batch;
with the judge = the SGPO reference on whole uid groups, each response judged
once), the "sgpo" reward manager's run_single on a real DataProto and HF
tokenizer, the verl.plugins entry point, and the errors."""
from __future__ import annotations

import asyncio
import copy
import math
import subprocess
import sys

import numpy as np
import pytest
import torch

pytest.importorskip("verl.trainer.ppo.ray_trainer", reason="verl is a test dependency (scripts/install.sh test)")
from omegaconf import OmegaConf  # noqa: E402
from verl import DataProto  # noqa: E402
from verl.trainer.ppo.core_algos import get_adv_estimator_fn  # noqa: E402
from verl.trainer.ppo.ray_trainer import compute_advantage  # noqa: E402

from sgpo_engine import reference, tasks  # noqa: E402
from sgpo_engine.integrations import verl as sgpo_verl  # noqa: E402

BETA, GAMMA = 5.0, 0.5


def _batch(scores, uids, T, gen, non_tensors=None):
    """A DataProto as verl's trainer has it at the advantage step: each score on the
    last valid token of a right-padded response of random length >= 1."""
    B = len(scores)
    lengths = torch.randint(1, T + 1, (B,), generator=gen)
    mask = (torch.arange(T)[None, :] < lengths[:, None]).float()
    rewards = torch.zeros(B, T)
    rewards[torch.arange(B), lengths - 1] = torch.as_tensor(scores, dtype=torch.float32)
    nt = {"uid": np.array(uids, dtype=object), **(non_tensors or {})}
    return DataProto.from_dict(tensors={"token_level_rewards": rewards, "response_mask": mask}, non_tensors=nt)


def _shuffled_uids(sizes, gen):
    uids = [f"u{g}" for g, n in enumerate(sizes) for _ in range(n)]
    return [uids[i] for i in torch.randperm(len(uids), generator=gen).tolist()]  # as balance_batch reorders


@pytest.mark.parametrize("sizes", [[4, 4, 4], [1], [3, 1, 5, 2], [1, 1, 7], [6] * 9])
@pytest.mark.parametrize("norm", [True, False])
@pytest.mark.parametrize("kind", ["random", "binary", "equal"])
def test_scope_off_equals_verl_grpo(sizes, norm, kind, gen):
    N = sum(sizes)
    scores = {"random": torch.randn(N, generator=gen).tolist(),
              "binary": torch.randint(0, 2, (N,), generator=gen).float().tolist(),
              "equal": [1.0] * N}[kind]
    uids = _shuffled_uids(sizes, gen)
    T = 5
    data = _batch(scores, uids, T, gen)
    theirs = compute_advantage(copy.deepcopy(data), "grpo", norm_adv_by_std_in_grpo=norm)  # (select shares tensors)
    ours = compute_advantage(data, "sgpo",
                             config=OmegaConf.create({"norm_adv_by_std_in_grpo": norm, "sgpo": {"scope": "off"}}))
    torch.testing.assert_close(ours.batch["advantages"], theirs.batch["advantages"], rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(ours.batch["returns"], theirs.batch["returns"], rtol=1e-5, atol=1e-5)


def _arith_case(gen):
    """Three groups of 4 arith responses, shuffled: all wrong with first errors at
    lines 0..3, mixed (2 wrong), all correct. Returns (non_tensor fields, scores,
    expected RTS in batch order (NaN = the judge must not see it), uids)."""
    probs = tasks.ArithSource(4, 6, 0).batch(0, 3)
    rows = []
    for g, e in enumerate(probs):
        for j in range(4):
            if g == 0 or (g == 1 and j < 2):
                lines = e.reference.split("\n")
                text = "\n".join(lines[:j] + [lines[j] + "1"])  # wrong at line j, stops there
                rows.append((f"u{g}", e.prompt, text, False, j / (j + 1) if g == 0 else math.nan))
            else:
                rows.append((f"u{g}", e.prompt, e.reference, True, math.nan))
            assert tasks.verify(rows[-1][2], e.answer) == rows[-1][3]  # the case is what it says
    rows = [rows[i] for i in torch.randperm(len(rows), generator=gen).tolist()]
    uids, problems, responses, correct, rts = map(list, zip(*rows))
    nt = {"sgpo_correct": np.array(correct), "sgpo_problem": np.array(problems, dtype=object),
          "sgpo_response": np.array(responses, dtype=object)}
    return nt, [1.0 if c else 0.0 for c in correct], np.array(rts), uids


class CountingJudge:
    def __init__(self, judge):
        self.judge_, self.seen = judge, []

    def judge(self, problems, responses, references=None):
        self.seen += list(responses)
        return self.judge_.judge(problems, responses, references)


@pytest.mark.parametrize("credit", ["sigmoid", "linear"])
@pytest.mark.parametrize("norm", [True, False])
def test_judged_groups_match_the_sgpo_reference(credit, norm, gen):
    nt, scores, rts, uids = _arith_case(gen)
    judge = CountingJudge(tasks.exact_judge())
    sgpo_verl.set_judge(judge)
    try:
        cfg = OmegaConf.create({"norm_adv_by_std_in_grpo": norm,
                                "sgpo": {"credit": credit, "credit_beta": BETA, "credit_gamma": GAMMA, "credit_scale": 0.5}})
        out = compute_advantage(_batch(scores, uids, 6, gen, nt), "sgpo", config=cfg)
    finally:
        sgpo_verl._judges.clear()
    # each incorrect response of the all-negative group judged once; nothing else
    assert sorted(judge.seen) == sorted(r for r, x in zip(nt["sgpo_response"], rts) if not math.isnan(x))
    np.testing.assert_allclose(out.non_tensor_batch["sgpo_rts"], rts, rtol=0, atol=1e-6)
    # the SGPO reference, in float64 on the groups made contiguous
    order = np.argsort([int(u[1:]) for u in uids], kind="stable")
    ref = reference.group_advantages(torch.tensor(scores, dtype=torch.float64)[order], torch.tensor([0, 4, 8, 12]),
                                     torch.tensor(nt["sgpo_correct"])[order], torch.tensor(rts)[order],
                                     scope="all_negative", credit=credit, credit_beta=BETA, credit_gamma=GAMMA,
                                     credit_scale=0.5, scale="group" if norm else "none", eps=1e-6,
                                     credited_std_floor=0.0)[0]
    expected = torch.empty(12, dtype=torch.float64)
    expected[order] = ref
    mask = out.batch["response_mask"]
    torch.testing.assert_close(out.batch["advantages"], (expected[:, None] * mask).float(), rtol=1e-5, atol=1e-5)
    assert (out.batch["advantages"][:, :1] != 0).sum() >= 4  # the all-negative group now carries signal


def test_rts_given_by_the_batch_skips_the_judge(gen):
    nt, scores, rts, uids = _arith_case(gen)
    nt["sgpo_rts"] = rts
    cfg = OmegaConf.create({"sgpo": {"judge": {"url": "http://127.0.0.1:9/v1", "model": "unreachable"}}})
    out = compute_advantage(_batch(scores, uids, 4, gen, nt), "sgpo", config=cfg)
    assert torch.isfinite(out.batch["advantages"]).all()
    neg = [i for i, u in enumerate(uids) if u == "u0"]
    assert out.batch["advantages"][neg].abs().sum() > 0
    sgpo_verl._judges.clear()


def test_errors_name_the_field(gen):
    scores, uids = [1.0, 0.0], ["a", "a"]
    cfg = lambda **s: OmegaConf.create({"sgpo": s})
    with pytest.raises(ValueError, match="sgpo_correct.*reward_manager.name=sgpo"):
        compute_advantage(_batch(scores, uids, 3, gen), "sgpo", config=cfg())
    with pytest.raises(ValueError, match="algorithm.sgpo.judge"):
        compute_advantage(_batch(scores, uids, 3, gen, {"sgpo_correct": np.array([False, False]),
                                                        "sgpo_problem": np.array(["p", "p"], dtype=object),
                                                        "sgpo_response": np.array(["x", "y"], dtype=object)}),
                          "sgpo", config=cfg())
    with pytest.raises(ValueError, match="unknown field.*'betta'"):
        compute_advantage(_batch(scores, uids, 3, gen), "sgpo", config=cfg(betta=2.0))
    with pytest.raises(ValueError, match="algorithm.sgpo.scope"):
        compute_advantage(_batch(scores, uids, 3, gen), "sgpo", config=cfg(scope="most"))


def test_reward_manager_run_single(tmp_path):
    from transformers import AutoTokenizer
    from verl.experimental.reward_loop.reward_manager import get_reward_manager_cls

    from tiny_models import write_tokenizer
    write_tokenizer(str(tmp_path))
    tok = AutoTokenizer.from_pretrained(str(tmp_path))
    e = tasks.ArithSource(4, 6, 0).batch(0, 1)[0]
    pad = tok.pad_token_id

    def item(response, question):
        p = tok(e.prompt, add_special_tokens=False)["input_ids"]
        r = tok(response, add_special_tokens=False)["input_ids"]
        Lp, Lr = len(p) + 3, len(r) + 2  # left-padded prompt, right-padded response
        prompts = torch.tensor([[pad] * 3 + p])
        responses = torch.tensor([r + [pad] * 2])
        mask = torch.tensor([[0] * 3 + [1] * len(p) + [1] * len(r) + [0] * 2])
        assert prompts.shape[1] == Lp and responses.shape[1] == Lr
        return DataProto.from_dict(
            tensors={"prompts": prompts, "responses": responses, "attention_mask": mask},
            non_tensors={"reward_model": np.array([{"ground_truth": e.answer}], dtype=object),
                         "extra_info": np.array([{"question": question} if question else {}], dtype=object),
                         "data_source": np.array(["arith"], dtype=object)})

    async def run(response, question):
        cls = get_reward_manager_cls("sgpo")
        assert cls is sgpo_verl.SGPORewardManager
        manager = cls(OmegaConf.create({}), tok, compute_score=lambda solution_str, ground_truth, **_:
                      float(tasks.verify(solution_str, ground_truth)))
        return await manager.run_single(item(response, question))

    wrong = e.reference.rsplit("\n", 1)[0] + "\n#0"
    for response, question, correct in ((e.reference, "the question", True), (wrong, None, False)):
        out = asyncio.run(run(response, question))
        assert out["reward_score"] == float(correct)
        info = out["reward_extra_info"]
        assert info["sgpo_correct"] is correct and info["sgpo_response"] == response
        assert info["sgpo_problem"] == (question or e.prompt)  # decoded prompt when no question is given


def test_verify_score_as_verls_custom_reward_function():
    """The README's reward.custom_reward_function (pkg:// path: the module is imported, not re-run)."""
    from verl.trainer.ppo.reward import get_custom_reward_fn
    score = get_custom_reward_fn(OmegaConf.create({"reward": {"custom_reward_function": {
        "path": "pkg://sgpo_engine.integrations.verl", "name": "verify_score"}}}))
    assert score(data_source="gsm8k", solution_str="So she has 3 + 4 = 7 apples.\n#### 7", ground_truth="7",
                 extra_info={}) == 1.0
    assert score(data_source="gsm8k", solution_str="She has 8 apples. The answer is 8.",
                 ground_truth="He had 3.\n#### 7", extra_info={}) == 0.0


def test_registered_by_the_plugin_entry_point():
    """`import verl` alone (no import of sgpo_engine) makes both "sgpo" names known."""
    code = ("import verl\n"
            "from verl.trainer.ppo.core_algos import get_adv_estimator_fn\n"
            "from verl.experimental.reward_loop.reward_manager import get_reward_manager_cls\n"
            "print(get_adv_estimator_fn('sgpo').__module__, get_reward_manager_cls('sgpo').__name__)\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.split() == ["sgpo_engine.integrations.verl", "SGPORewardManager"]
    assert get_adv_estimator_fn("sgpo") is sgpo_verl.compute_sgpo_outcome_advantage


def test_settings_from_verls_own_config(gen):
    """The README's overrides on verl's ppo_trainer config (hydra, as verl's main composes it)
    reach the estimator: algorithm.sgpo's fields are read, the unknown one is refused."""
    import os

    import verl
    from hydra import compose, initialize_config_dir
    config_dir = os.path.join(os.path.dirname(verl.__file__), "trainer", "config")
    with initialize_config_dir(config_dir=config_dir, version_base=None):
        cfg = compose(config_name="ppo_trainer", overrides=[
            "algorithm.adv_estimator=sgpo", "reward.reward_manager.name=sgpo",
            "+algorithm.sgpo.judge.url=http://127.0.0.1:9/v1", "+algorithm.sgpo.judge.model=m",
            "+algorithm.sgpo.credit_beta=2.0", "+algorithm.sgpo.credit_gamma=0.3"])
    nt, scores, rts, uids = _arith_case(gen)
    nt["sgpo_rts"] = rts
    out = compute_advantage(_batch(scores, uids, 3, gen, nt), cfg.algorithm.adv_estimator, config=cfg.algorithm)
    used = 1 / (1 + np.exp(-2.0 * (rts[[u == "u0" for u in uids]] - 0.3)))  # credit of the all-wrong group
    expected = (used - used.mean()) / (used.std(ddof=1) + 1e-6)
    np.testing.assert_allclose(out.batch["advantages"][[u == "u0" for u in uids], 0].numpy(), expected,
                               rtol=1e-5, atol=1e-5)


def test_example_runs():
    from train_helpers import ROOT, subprocess_env
    out = subprocess.run([sys.executable, "examples/verl_sgpo.py", "--problems", "6"], cwd=ROOT,
                         env=subprocess_env(), capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    last = out.stdout.strip().splitlines()[-1]
    words = last.replace(",", "").split()  # groups with signal: grpo X sgpo Y of 6
    assert words[:4] == ["groups", "with", "signal:", "grpo"], last
    grpo, sgpo = int(words[4]), int(words[6])
    assert sgpo >= grpo and sgpo > 0, last
