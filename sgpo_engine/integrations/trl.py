"""SGPO inside TRL's GRPOTrainer: the rewards, and the fused loss.

    from sgpo_engine.integrations.trl import SGPOGRPOTrainer, SGPOReward
    reward = SGPOReward(HTTPJudge(url, model))                 # any sgpo_engine judge
    trainer = SGPOGRPOTrainer(model=..., reward_funcs=[reward], args=GRPOConfig(scale_rewards="group", ...),
                              train_dataset=...)              # rows with "prompt" and "answer"

SGPOGRPOTrainer is GRPOTrainer with ops.fused_policy_loss as its loss (see
trl_trainer.py); SGPOReward works with TRL's own GRPOTrainer too. This module
imports trl only when SGPOGRPOTrainer is asked for.

TRL calls `reward(prompts=..., completions=..., answer=[...], log_metric=..., **kw)`
with this process's completions, the G = num_generations completions of each
prompt next to each other. SGPOReward verifies every answer, sends the
incorrect responses in scope to the judge, and returns per completion:
correct_reward if correct, the SGPO credit of its RTS if judged (section 1 of
docs/design.md), else incorrect_reward. These are exactly the rewards
`ops.group_advantages` uses, so TRL's group normalization
(`scale_rewards="group"`) then gives its advantages.

A group of G completions may span processes: under torch.distributed every
process's completions are gathered, rank 0 verifies and judges all groups
(each once, whole) and the rewards are broadcast back. Judge failures never
raise: they keep the outcome reward and are logged through TRL's log_metric
("sgpo/judge_failures", with "sgpo/judged", "sgpo/all_negative_frac" and
"sgpo/credited_frac").
"""
from __future__ import annotations

import math
from typing import Callable, Optional, Sequence

import torch

from .. import ops
from ..judge import sgpo_rewards
from ..judge import verify as verify_answer
from ..options import CREDIT_ASSIGNMENTS, CREDITS, SCOPES, check_choice


def completion_text(completion) -> str:
    """TRL's completion: a string, or chat messages (the last message's content)."""
    if isinstance(completion, str):
        return completion
    if isinstance(completion, Sequence) and completion and isinstance(completion[-1], dict):
        return str(completion[-1].get("content", ""))
    raise ValueError(f"completions: expected a str or chat messages, got {type(completion).__name__}")


def prompt_text(prompt) -> str:
    """The problem a prompt poses: the string, or the last user message of chat messages."""
    if isinstance(prompt, str):
        return prompt
    users = [m.get("content", "") for m in prompt if isinstance(m, dict) and m.get("role") == "user"]
    if not users:
        raise ValueError("prompts: chat messages without a user message")
    return str(users[-1])


def group_offsets(prompts: Sequence, num_generations: Optional[int]) -> list[int]:
    """Offsets [P+1] of the groups: fixed size G, or runs of equal prompts
    (TRL repeats each prompt G times in a row)."""
    n = len(prompts)
    if num_generations:
        if n % num_generations:
            raise ValueError(f"num_generations: {n} completions are not whole groups of {num_generations}")
        return list(range(0, n + 1, num_generations))
    offsets = [0]
    for i in range(1, n):
        if prompts[i] != prompts[i - 1]:
            offsets.append(i)
    return offsets + [n]


def __getattr__(name):  # PEP 562: SGPOGRPOTrainer subclasses trl's trainer, so trl loads on first use
    if name == "SGPOGRPOTrainer":
        from .trl_trainer import SGPOGRPOTrainer
        return SGPOGRPOTrainer
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def _world():
    dist = torch.distributed
    if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
        return dist, dist.get_rank(), dist.get_world_size()
    return None, 0, 1


class SGPOReward:
    """A reward function for TRL's GRPOTrainer (module docstring)."""

    def __init__(self, judge, *, verifier: Optional[Callable] = None, answer_field: str = "answer",
                 scope: str = "all_negative", credit: str = "sigmoid", beta: float = 5.0, gamma: float = 0.5,
                 credit_scale: float = 0.5, correct_reward: float = 1.0, incorrect_reward: float = 0.0,
                 num_generations: Optional[int] = None, reference_field: Optional[str] = None,
                 credit_assignment: str = "sequence"):
        check_choice("scope", scope, SCOPES)
        check_choice("credit", credit, CREDITS)
        check_choice("credit_assignment", credit_assignment, CREDIT_ASSIGNMENTS)
        if scope != "off" and judge is None:
            raise ValueError(f"judge: scope {scope!r} needs a judge (or pass scope='off')")
        for name, v in (("beta", beta), ("gamma", gamma), ("credit_scale", credit_scale),
                        ("correct_reward", correct_reward), ("incorrect_reward", incorrect_reward)):
            if not isinstance(v, (int, float)) or not math.isfinite(v):
                raise ValueError(f"{name}: expected a finite number, got {v!r}")
        if num_generations is not None and (not isinstance(num_generations, int) or num_generations < 1):
            raise ValueError(f"num_generations: expected a positive int, got {num_generations!r}")
        self.judge, self.verifier = judge, verifier or verify_answer
        self.answer_field, self.reference_field = answer_field, reference_field
        self.scope, self.credit = scope, credit
        self.beta, self.gamma, self.credit_scale = float(beta), float(gamma), float(credit_scale)
        self.correct_reward, self.incorrect_reward = float(correct_reward), float(incorrect_reward)
        self.num_generations = num_generations
        self.credit_assignment = credit_assignment
        self.last_judged: list = []  # prefix credit: (completion text, Verdict | None) of the last call's completions
        self.__name__ = "sgpo"  # TRL names the reward column after it

    def __call__(self, prompts, completions, log_metric: Optional[Callable] = None, **kwargs) -> list[float]:
        if self.answer_field not in kwargs:
            raise ValueError(f"answer_field: the dataset has no column {self.answer_field!r} "
                             f"(columns passed: {sorted(k for k in kwargs if k not in ('trainer_state', 'log_extra'))})")
        if len(prompts) != len(completions):
            raise ValueError(f"prompts / completions: lengths differ ({len(prompts)}, {len(completions)})")
        refs = kwargs.get(self.reference_field) if self.reference_field else None
        local = [(prompt_text(p), completion_text(c), a, None if refs is None else refs[i])
                 for i, (p, c, a) in enumerate(zip(prompts, completions, kwargs[self.answer_field]))]
        dist, rank, world = _world()
        if dist is None:
            rewards, stats, verdicts = self.rewards(local)
            start = 0
        else:
            parts = [None] * world
            dist.all_gather_object(parts, local)
            start = sum(len(p) for p in parts[:rank])
            box = [self.rewards([x for p in parts for x in p]) if rank == 0 else None]
            dist.broadcast_object_list(box, src=0)  # judged once, on rank 0
            rewards, stats, verdicts = box[0]
        if log_metric is not None:
            for name, value in stats.items():
                log_metric(f"sgpo/{name}", value)
        self.last_judged = [(row[1], v) for row, v in zip(local, verdicts[start:start + len(local)])]
        return rewards[start:start + len(local)]

    def rewards(self, rows: list[tuple]) -> tuple[list[float], dict, list]:
        """SGPO rewards of whole groups: rows (problem, completion, answer, reference).
        Returns (rewards [N], the logged stats, verdicts [N]: a Verdict where judged, else None)."""
        offsets = group_offsets([r[0] for r in rows], self.num_generations)
        groups = [[rows[i][1] for i in range(a, b)] for a, b in zip(offsets, offsets[1:])]
        firsts = [rows[a] for a in offsets[:-1]]
        out = sgpo_rewards([r[0] for r in firsts], groups, [r[2] for r in firsts], self.judge,
                           references=[r[3] for r in firsts], scope=self.scope,
                           correct_reward=self.correct_reward, incorrect_reward=self.incorrect_reward,
                           verifier=self.verifier)
        adv = ops.group_advantages(out.rewards, group_offsets=out.group_offsets, correct=out.correct, rts=out.rts,
                                   scope=self.scope, credit=self.credit, beta=self.beta, gamma=self.gamma,
                                   credit_scale=self.credit_scale)
        n = len(rows)
        stats = {"judged": float(out.judged), "judge_failures": float(out.failed),
                 "all_negative_frac": float(adv.all_negative.float().mean()),
                 "credited_frac": float((~torch.isnan(out.rts)).sum()) / n}
        return adv.rewards.tolist(), stats, out.verdicts


def prefix_advantages(reward: SGPOReward, advantages: torch.Tensor, completion_ids: torch.Tensor,
                      completion_mask: torch.Tensor, tokenizer) -> torch.Tensor:
    """Step-level credit (docs/design.md 1.6) of the completions `reward` scored last:
    advantages [B] -> [B, T], each judged response's advantage reaching only the tokens
    before its first wrong step (positive) or through it (negative); the others keep it on
    every token. completion_ids, completion_mask [B, T]; tokenizer: sgpo_engine's Tokenizer."""
    from ..train.credit import prefix_reach, token_advantages  # train/ loads only on this path

    B, T = completion_ids.shape
    if len(reward.last_judged) != B:
        raise ValueError(f"advantages: {B} completions, but the SGPOReward's last call scored "
                         f"{len(reward.last_judged)}")
    lengths = completion_mask.sum(dim=1).tolist()
    completions = [_Completion(completion_ids[i, :int(n)].tolist(), text)
                   for i, (n, (text, _)) in enumerate(zip(lengths, reward.last_judged))]
    verdicts = [v for _, v in reward.last_judged]
    reach, _ = prefix_reach(completions, verdicts, [v is not None for v in verdicts], advantages.tolist(),
                            tokenizer, getattr(reward.judge, "step_mode", "paragraph"))
    starts = torch.zeros(B, dtype=torch.long, device=advantages.device)
    return token_advantages(advantages, torch.tensor(reach, device=advantages.device), starts, T)


class _Completion:  # what prefix_reach reads of a completion
    def __init__(self, token_ids: list, text: str):
        self.token_ids, self.text = token_ids, text
