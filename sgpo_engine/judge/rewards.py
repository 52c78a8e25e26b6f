"""SGPO rewards: outcome rewards plus step-judge RTS for the responses in scope
(docs/design.md section 1), ready for `sgpo_engine.credit.sgpo_advantages`.

    out = sgpo_rewards(problems, groups, golds, judge=None, *, references=None,
                       scope="all_negative", correct_reward=1.0, incorrect_reward=0.0,
                       verifier=verify)
    adv = credit.sgpo_advantages(out.rewards, out.correct, out.rts, out.group_offsets, config)

- problems [P] str, golds [P] (gold answers, or full solutions ending "#### N"),
  groups [P] lists of responses (str, or objects with a `.text` such as the
  Completions of `generate`), references [P] (worked solutions shown to the
  judge) or None.
- The verifier marks each response correct or not; correct ones get
  correct_reward, incorrect ones incorrect_reward.
- Only incorrect responses in scope go to the judge: scope "all_negative"
  (default) sends the incorrect responses of groups with no correct response,
  "all_incorrect" every incorrect response, "off" none. So judge cost scales
  with need; with scope "off" the judge may be None.

Result (SGPORewards):
  rewards [N] float32, correct [N] bool, rts [N] float32 (NaN where not judged
  or failed), group_offsets [P+1] int64, group_size (int when every group has
  the same size, else None), verdicts [N] (a Verdict, or None when not sent),
  judged (verdicts that succeeded), failed (verdicts that failed, "no_error_found"
  aside: Verdict.is_failure), scope.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, Optional, Sequence

import torch

from ..options import SCOPES, check_choice
from .answer import verify
from .verdict import Verdict


@dataclass
class SGPORewards:
    rewards: torch.Tensor          # [N] float32
    correct: torch.Tensor          # [N] bool
    rts: torch.Tensor              # [N] float32, NaN = not judged
    group_offsets: torch.Tensor    # [P+1] int64
    group_size: Optional[int]
    verdicts: list                 # [N] Verdict | None
    judged: int
    failed: int
    scope: str


def _text(x, where: str) -> str:
    text = x if isinstance(x, str) else getattr(x, "text", None)
    if not isinstance(text, str):
        raise ValueError(f"{where}: expected a str or an object with a .text str, got {type(x).__name__}")
    return text


def _in_scope(scope: str, correct: list[bool], offsets: list[int]) -> list[int]:
    """Indices of the incorrect responses the scope sends to the judge."""
    if scope == "off":
        return []
    picked = []
    for g in range(len(offsets) - 1):
        idx = range(offsets[g], offsets[g + 1])
        if scope == "all_incorrect" or not any(correct[i] for i in idx):
            picked += [i for i in idx if not correct[i]]
    return picked


def judge_in_scope(judge, problems: Sequence[str], responses: Sequence[str], correct: Sequence[bool],
                   offsets: Sequence[int], scope: str,
                   references: Optional[Sequence[Optional[str]]] = None) -> list[Optional[Verdict]]:
    """Verdicts [N] of the incorrect responses the scope sends to the judge, None for the rest.
    problems, responses, correct and references are per response; offsets [P+1] bound the groups."""
    picked = _in_scope(scope, list(correct), list(offsets))
    verdicts: list[Optional[Verdict]] = [None] * len(responses)
    if picked:
        refs = None if references is None else [references[i] for i in picked]
        got = judge.judge([problems[i] for i in picked], [responses[i] for i in picked], refs)
        for i, v in zip(picked, got):
            verdicts[i] = v
    return verdicts


def sgpo_rewards(problems: Sequence[str], groups: Sequence[Sequence], golds: Sequence, judge=None, *,
                 references: Optional[Sequence[Optional[str]]] = None, scope: str = "all_negative",
                 correct_reward: float = 1.0, incorrect_reward: float = 0.0,
                 verifier: Callable[[str, object], bool] = verify) -> SGPORewards:
    """Outcome rewards, correctness and judge RTS of a rollout (module docstring)."""
    P = len(problems)
    if P == 0:
        raise ValueError("problems: expected at least one problem")
    if len(groups) != P or len(golds) != P:
        raise ValueError(f"problems / groups / golds: lengths differ ({P}, {len(groups)}, {len(golds)})")
    if references is not None and len(references) != P:
        raise ValueError(f"references: length {len(references)}, expected {P} (one per problem)")
    check_choice("scope", scope, SCOPES)
    if scope != "off" and judge is None:
        raise ValueError(f"judge: scope {scope!r} needs a judge (or pass scope='off')")
    for name, v in (("correct_reward", correct_reward), ("incorrect_reward", incorrect_reward)):
        if not isinstance(v, (int, float)) or not math.isfinite(v):
            raise ValueError(f"{name}: expected a finite number, got {v!r}")
    offsets, texts, owner = [0], [], []
    for p, group in enumerate(groups):
        if len(group) == 0:
            raise ValueError(f"groups[{p}]: empty group (every prompt needs at least one response)")
        texts += [_text(r, f"groups[{p}][{j}]") for j, r in enumerate(group)]
        owner += [p] * len(group)
        offsets.append(len(texts))
    correct = [bool(verifier(t, golds[p])) for t, p in zip(texts, owner)]
    verdicts = judge_in_scope(judge, [problems[p] for p in owner], texts, correct, offsets, scope,
                              None if references is None else [references[p] for p in owner])
    rts = [v.rts if v is not None else math.nan for v in verdicts]
    sizes = {offsets[g + 1] - offsets[g] for g in range(P)}
    return SGPORewards(
        rewards=torch.tensor([correct_reward if c else incorrect_reward for c in correct], dtype=torch.float32),
        correct=torch.tensor(correct, dtype=torch.bool),
        rts=torch.tensor(rts, dtype=torch.float32),
        group_offsets=torch.tensor(offsets, dtype=torch.int64),
        group_size=sizes.pop() if len(sizes) == 1 else None,
        verdicts=verdicts,
        judged=sum(v is not None and not v.failed for v in verdicts),
        failed=sum(v is not None and v.is_failure for v in verdicts),
        scope=scope)
