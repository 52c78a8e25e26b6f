"""SGPO inside verl (0.9): an advantage estimator and a reward manager, both named "sgpo".

    algorithm.adv_estimator=sgpo  reward.reward_manager.name=sgpo
    +algorithm.sgpo.judge.url=http://judge:8000/v1  +algorithm.sgpo.judge.model=Qwen/Qwen2.5-7B-Instruct

sgpo-engine declares this module a verl plugin (entry point group
"verl.plugins"), so `import verl` in any of verl's processes registers both;
importing it yourself does the same.

The reward manager runs per response in verl's reward loop: it scores the
response with verl's compute_score (your custom_reward_function, or verl's
default for the data source), which stays the reward verl logs, and records
`sgpo_correct` (score > 0), `sgpo_problem` (extra_info["question"], else the
decoded prompt) and `sgpo_response` (the decoded response) in the batch.

The estimator runs once per step on the driver, where the whole groups are:
it groups the responses by uid, sends the incorrect responses in scope to the
judge (scope "all_negative": only groups with no correct response; each
response once), writes their RTS to the batch as `sgpo_rts` (NaN where not
judged), and computes the advantages with `credit.sgpo_advantages` (docs/design.md
sections 1 and 4.5). If the batch already has `sgpo_rts` (your own reward
manager judged), no judge is called. With scope "off" it equals verl's "grpo"
estimator, singleton groups included (verl gives them mean 0, std 1).

Settings, all under algorithm.sgpo (defaults: sgpo_engine.credit.CreditConfig):
scope, credit, credit_beta, credit_gamma, credit_scale, credited_std_floor, and
judge.{name, ...}: a judge of sgpo_engine.judge.JUDGES (default "http") and its
options (for http: url, model, step_mode, concurrency, timeout, ...).
The advantages' scale and eps are verl's own (norm_adv_by_std_in_grpo, epsilon).
`set_judge(judge)` installs any sgpo_engine judge object in-process instead.
"""
from __future__ import annotations

import dataclasses
import logging
import math
import sys
from typing import Optional

import numpy as np
import torch
from verl.experimental.reward_loop.reward_manager import register as register_reward_manager
from verl.experimental.reward_loop.reward_manager.base import RewardManagerBase
from verl.trainer.ppo.core_algos import register_adv_est

from ..credit import CreditConfig, sgpo_advantages
from ..judge import JudgeContext, judge_in_scope, make_judge
from ..judge import verify as verify_answer

log = logging.getLogger(__name__)

# the algorithm.sgpo fields: CreditConfig's, less what verl decides itself (scale, eps) or
# does not use here (the outcome rewards are verl's scores; credit is per response)
SETTINGS = ("scope", "credit", "credit_beta", "credit_gamma", "credit_scale", "credited_std_floor")
_judges: dict = {}  # (name, options) -> judge, kept across steps for its verdict cache


def set_judge(judge) -> None:
    """Use `judge` (anything with .judge(problems, responses, references)) for every later step."""
    _judges["installed"] = judge


def verify_score(data_source, solution_str: str, ground_truth, extra_info=None, **_) -> float:
    """A verl compute_score on sgpo_engine's answer verifier: 1.0 if the final answer equals
    ground_truth (a number, or a solution ending "#### N"), else 0.0."""
    return 1.0 if verify_answer(solution_str, ground_truth) else 0.0


# --------------------------------------------------------------------------
# Reward manager: per response, in verl's reward loop
# --------------------------------------------------------------------------
@register_reward_manager("sgpo")
class SGPORewardManager(RewardManagerBase):
    """Scores one response with compute_score and records what the estimator's judge needs."""

    def __init__(self, config, tokenizer, compute_score=None, reward_router_address=None,
                 reward_model_tokenizer=None, **_):
        super().__init__(config, tokenizer, compute_score or verify_score)

    async def run_single(self, data) -> dict:
        item = data[-1]  # multi-turn outputs: the last sequence, as verl's own managers do
        prompt_ids, response_ids = item.batch["prompts"], item.batch["responses"]
        mask = item.batch["attention_mask"]
        n_prompt = prompt_ids.shape[-1]
        prompt_valid = prompt_ids[n_prompt - int(mask[:n_prompt].sum()):]  # prompts are left-padded
        response_valid = response_ids[:int(mask[n_prompt:].sum())]
        extra_info = item.non_tensor_batch.get("extra_info") or {}
        ground_truth = item.non_tensor_batch["reward_model"]["ground_truth"]
        decode = lambda ids: self.tokenizer.decode(ids.tolist(), skip_special_tokens=True)
        response = await self.loop.run_in_executor(None, decode, response_valid)
        problem = extra_info.get("question") or await self.loop.run_in_executor(None, decode, prompt_valid)
        result = self.compute_score(data_source=item.non_tensor_batch.get("data_source"), solution_str=response,
                                    ground_truth=ground_truth, extra_info=extra_info)
        if hasattr(result, "__await__"):
            result = await result
        score = float(result["score"] if isinstance(result, dict) else result)
        return {"reward_score": score,
                "reward_extra_info": {"sgpo_correct": score > 0, "sgpo_problem": str(problem),
                                      "sgpo_response": response}}


# --------------------------------------------------------------------------
# Advantage estimator: per step, on the driver, over whole groups
# --------------------------------------------------------------------------
def _settings(config) -> tuple[CreditConfig, dict]:
    """algorithm.sgpo -> (its CreditConfig, its judge settings)."""
    got = config.get("sgpo", None) if config is not None and hasattr(config, "get") else None
    s = dict(got or {})
    judge = dict(s.pop("judge", None) or {})
    unknown = sorted(set(s) - set(SETTINGS))
    if unknown:
        raise ValueError(f"algorithm.sgpo: unknown field(s) {unknown} (known: {sorted(SETTINGS)} and judge)")
    credit = dataclasses.replace(CreditConfig(), **s).validated(lambda f: f"algorithm.sgpo.{f}")
    return credit, judge


def _judge(settings: dict):
    if "installed" in _judges:
        return _judges["installed"]
    j = dict(settings)
    name = str(j.pop("name", "http"))
    key = (name, tuple(sorted((k, str(v)) for k, v in j.items())))
    if key not in _judges:
        try:
            _judges[key] = make_judge(name, j, JudgeContext(), where="algorithm.sgpo.judge.name",
                                      option_name=lambda o: f"algorithm.sgpo.judge.{o}")
        except ValueError as e:
            raise ValueError(f"{e} (or call sgpo_engine.integrations.verl.set_judge, or set "
                             "algorithm.sgpo.scope=off)") from None
    return _judges[key]


def _caller_batch():
    """verl 0.9's compute_advantage hands a registered estimator only the rewards, mask, config and
    uid (gdpo alone gets the batch); correctness and texts are in its `data`, one frame up."""
    data = sys._getframe(2).f_locals.get("data")
    return getattr(data, "non_tensor_batch", None)


def _groups(index) -> tuple[np.ndarray, list[int]]:
    """The permutation that makes each uid's responses contiguous (first-seen order) and the offsets."""
    first: dict = {}
    keys = np.array([first.setdefault(u, len(first)) for u in index])
    order = np.argsort(keys, kind="stable")
    offsets = np.concatenate([[0], np.cumsum(np.bincount(keys))]).tolist()
    return order, offsets


def _rts(nt: dict, order, offsets, correct: list[bool], credit: CreditConfig, judge: dict) -> tuple[np.ndarray, int]:
    """RTS [N] in batch order (NaN = not judged): the batch's own `sgpo_rts`, else the judge's."""
    if "sgpo_rts" in nt:
        return np.asarray(nt["sgpo_rts"], dtype=np.float64), 0
    for key in ("sgpo_problem", "sgpo_response"):
        if key not in nt:
            raise ValueError(f"non_tensor_batch: no {key!r}; set reward.reward_manager.name=sgpo "
                             "(or give 'sgpo_rts' yourself)")
    problems = [str(nt["sgpo_problem"][i]) for i in order]
    responses = [str(nt["sgpo_response"][i]) for i in order]
    verdicts = judge_in_scope(_judge(judge), problems, responses, correct, offsets, credit.scope)
    rts = np.full(len(order), math.nan)
    rts[order] = [math.nan if v is None else v.rts for v in verdicts]
    return rts, sum(v is not None and v.is_failure for v in verdicts)


@register_adv_est("sgpo")
def compute_sgpo_outcome_advantage(token_level_rewards: torch.Tensor, response_mask: torch.Tensor,
                                   index: Optional[np.ndarray] = None, config=None,
                                   non_tensor_batch: Optional[dict] = None, epsilon: float = 1e-6,
                                   norm_adv_by_std_in_grpo: Optional[bool] = None, **_):
    """token_level_rewards [B, T], response_mask [B, T], index [B] uids -> (advantages, returns) [B, T]."""
    credit, judge = _settings(config)
    if norm_adv_by_std_in_grpo is None:
        norm_adv_by_std_in_grpo = config.get("norm_adv_by_std_in_grpo", True) if config is not None else True
    B = token_level_rewards.shape[0]
    if index is None:
        raise ValueError("index: the sgpo estimator needs each response's uid (non_tensor_batch['uid'])")
    if len(index) != B:
        raise ValueError(f"index: {len(index)} uids for {B} responses")
    scores = token_level_rewards.sum(dim=-1).float()  # [B], as verl's grpo
    order, offsets = _groups(index)
    order_t = torch.as_tensor(order, device=scores.device)
    correct = rts = None
    failed = 0
    if credit.scope != "off":
        nt = non_tensor_batch if non_tensor_batch is not None else _caller_batch()
        if nt is None or "sgpo_correct" not in nt:
            raise ValueError("non_tensor_batch: no 'sgpo_correct'; set reward.reward_manager.name=sgpo "
                             "(or algorithm.sgpo.scope=off)")
        correct_b = [bool(c) for c in nt["sgpo_correct"]]
        correct = [correct_b[i] for i in order]
        rts_b, failed = _rts(nt, order, offsets, correct, credit, judge)
        nt["sgpo_rts"] = rts_b  # logged with the generations by verl's dump
        correct = torch.tensor(correct, device=scores.device)
        rts = torch.as_tensor(rts_b, dtype=torch.float32, device=scores.device)[order_t]
    if failed:
        log.warning("sgpo: %d judge verdicts failed this step; those responses keep their outcome reward", failed)
    credit = dataclasses.replace(credit, scale="group" if norm_adv_by_std_in_grpo else "none", eps=epsilon)
    out = sgpo_advantages(scores[order_t], correct, rts, torch.tensor(offsets), credit)
    adv = out.advantages.to(scores.dtype)
    sizes = torch.tensor(np.diff(offsets), device=scores.device)
    single = sizes.repeat_interleave(sizes) == 1  # verl: a group of one has mean 0, std 1
    adv = torch.where(single, out.rewards / (1 + epsilon) if norm_adv_by_std_in_grpo else out.rewards, adv)
    advantages = torch.empty_like(adv)
    advantages[order_t] = adv
    advantages = advantages.unsqueeze(-1) * response_mask
    return advantages, advantages
