"""From outcomes and verdicts to SGPO advantages: the one place SGPO credit is computed.

    adv = sgpo_advantages(rewards, correct, rts, group_offsets, config)   # any trainer's rewards
    scored = score_groups(problems, groups, golds, judge, config, references=..., verifier=...)

`sgpo_advantages` is `ops.group_advantages` with a CreditConfig's settings:
the engine's trainer, TRL's SGPOReward and verl's "sgpo" estimator all call
it. `score_groups` is the whole path for a rollout the caller has not scored
yet: the verifier marks each response, the judge scores the incorrect ones
in scope (judge.sgpo_rewards), and sgpo_advantages credits and normalizes.
verl scores responses in its own reward loop, so it calls
`judge.judge_in_scope` and `sgpo_advantages` itself.

`problem_text(prompt)` is the one rule for what the judge is told the
problem is: the prompt string, or the last user message of chat messages.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Optional, Sequence

import torch

from .. import ops
from ..judge import SGPORewards, sgpo_rewards
from ..judge import verify as verify_answer
from ..options import CreditConfig


def problem_text(prompt) -> str:
    """The problem a prompt poses: the string, or the last user message of chat messages."""
    if isinstance(prompt, str):
        return prompt
    users = [m.get("content", "") for m in prompt if isinstance(m, dict) and m.get("role") == "user"]
    if not users:
        raise ValueError("prompts: chat messages without a user message")
    return str(users[-1])


def sgpo_advantages(rewards: torch.Tensor, correct: Optional[torch.Tensor], rts: Optional[torch.Tensor],
                    group_offsets, config: CreditConfig) -> ops.GroupAdvantages:
    """rewards, correct, rts [N] (NaN = not judged), group_offsets [P+1] -> ops.GroupAdvantages:
    partial credit for the incorrect responses in scope, then group normalization."""
    c = config
    return ops.group_advantages(rewards, group_offsets=group_offsets, correct=correct, rts=rts, scope=c.scope,
                                credit=c.credit, credit_beta=c.credit_beta, credit_gamma=c.credit_gamma,
                                credit_scale=c.credit_scale, scale=c.scale, eps=c.eps,
                                credited_std_floor=c.credited_std_floor)


@dataclass
class ScoredGroups:
    """A rollout's groups, scored: what the verifier and the judge said, and the advantages."""
    rewards: SGPORewards               # outcome rewards, correct, rts, verdicts [N], group_offsets [P+1]
    advantages: ops.GroupAdvantages    # advantages [N], the credited rewards [N], group moments [P]

    @property
    def credited(self) -> torch.Tensor:
        """[N] bool: responses with a judged RTS. sgpo_rewards judges only the incorrect responses
        the scope credits, so "has an RTS" and "earned partial credit" are the same."""
        return ~torch.isnan(self.rewards.rts)

    @property
    def informative(self) -> torch.Tensor:
        """[P] bool: groups whose rewards after credit are not all equal (the others have zero
        advantages and teach nothing)."""
        return self.advantages.group_std > 0

    @property
    def group_sizes(self) -> torch.Tensor:
        return self.rewards.group_offsets.diff()                           # [P]


def score_groups(problems: Sequence[str], groups: Sequence[Sequence], golds: Sequence, judge,
                 config: CreditConfig, *, references: Optional[Sequence[Optional[str]]] = None,
                 verifier: Callable[[str, object], bool] = verify_answer) -> ScoredGroups:
    """problems [P] (strings: see problem_text), groups [P] of responses (str or objects with
    .text), golds [P] -> ScoredGroups. Only the incorrect responses in scope go to the judge."""
    out = sgpo_rewards(problems, groups, golds, judge, references=references, scope=config.scope,
                       correct_reward=config.correct_reward, incorrect_reward=config.incorrect_reward,
                       verifier=verifier)
    return ScoredGroups(out, sgpo_advantages(out.rewards, out.correct, out.rts, out.group_offsets, config))


def select_groups(parts: Sequence[ScoredGroups], keep: Sequence[Sequence[int]], config: CreditConfig
                  ) -> ScoredGroups:
    """The groups keep[j] of parts[j], in that order, as one ScoredGroups (dynamic sampling's
    batch): the outcomes and verdicts as they were, no second judge call; the advantages
    recomputed over the selection, as adv_scale "batch" needs (per group they are unchanged)."""
    spans = [(p.rewards, off[g], off[g + 1]) for p, groups in zip(parts, keep)
             for off in [p.rewards.group_offsets.tolist()] for g in groups]
    cat = lambda name, empty: torch.cat([getattr(r, name)[a:b] for r, a, b in spans]) if spans else empty
    rewards, correct = cat("rewards", torch.zeros(0)), cat("correct", torch.zeros(0, dtype=torch.bool))
    rts = cat("rts", torch.zeros(0))
    offsets = torch.tensor([0] + [b - a for _, a, b in spans], dtype=torch.int64).cumsum(0)
    verdicts = [v for r, a, b in spans for v in r.verdicts[a:b]]
    sizes = {b - a for _, a, b in spans}
    out = SGPORewards(rewards, correct, rts, offsets, sizes.pop() if len(sizes) == 1 else None, verdicts,
                      judged=sum(v is not None and not v.failed for v in verdicts),
                      failed=sum(v is not None and v.is_failure for v in verdicts), scope=config.scope)
    return ScoredGroups(out, sgpo_advantages(out.rewards, out.correct, out.rts, out.group_offsets, config))
