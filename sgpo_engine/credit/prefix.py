"""Step-level credit: which completion tokens a response's advantage reaches.

    reach = prefix_reach(completions, verdicts, credited, advantages, tokenizer, step_mode)
    adv_bt = token_advantages(advantages, reach, starts, T)      # [N, T] for fused_policy_loss

credit_assignment = "sequence" (published SGPO): every completion token gets
the response's advantage. "prefix": in credited groups (the judge scored the
response), the judge's first wrong step bounds the credit:

- a positive advantage reaches only the tokens of the steps before the first
  error (the correct prefix earned it; what follows did not);
- a negative advantage reaches the tokens up to and including the first wrong
  step (the error is what is penalized; nothing after it was judged);
- the tokens after that get zero.

Responses without a verdict (not sent, failed, no wrong step) keep the
sequence-level advantage. A token that straddles a step boundary (a BPE token
"\\n3" holding the line break and the next step's first character) belongs to
both steps: it is outside a positive prefix and inside a negative one.

Steps are the judge's (its step mode on the response text); tokens map to
characters with Tokenizer.decode_with_offsets, exact for byte-level BPE too.

Only the advantage moves: the zeroed tokens stay in the loss mask, so they
still count in the token normalizer (dapo, bnpo) or the sequence length
(grpo), in a sequence-level importance ratio and in the KL term. A response
credited on part of its tokens therefore pushes less than one credited on
all of them, as in the prototype this option comes from.
"""
from __future__ import annotations

import bisect
from typing import Optional, Sequence

import torch

from ..judge.steps import StepMode, step_spans

Span = tuple[int, int]


def step_token_bounds(token_spans: Sequence[Span], step: Span) -> tuple[int, int]:
    """(before, through): the number of leading tokens that end at or before
    `step` starts, and that start before it ends. token_spans are the
    (start, end) character spans of the tokens, in order (non-decreasing)."""
    ends = [e for _, e in token_spans]
    starts = [s for s, _ in token_spans]
    before = bisect.bisect_right(ends, step[0])
    through = bisect.bisect_left(starts, step[1])
    return before, max(through, before)


def response_reach(tokenizer, token_ids: Sequence[int], text: str, first_error: int, num_steps: int,
                   step_mode: StepMode, positive: bool) -> Optional[int]:
    """How many leading tokens of one judged response the advantage reaches:
    those before step `first_error` (positive) or through it (negative).
    None when the response's text, as decoded here, does not split into the
    judge's num_steps steps (e.g. an external rollout whose text differs from
    its re-tokenization): the caller keeps the sequence-level advantage."""
    decoded, spans = tokenizer.decode_with_offsets(token_ids, skip_special_tokens=True)
    if not decoded.startswith(text):  # text may be cut at a stop string, never otherwise changed
        return None
    steps = step_spans(text, step_mode)
    if len(steps) != num_steps or not 0 <= first_error < num_steps:
        return None
    before, through = step_token_bounds(spans, steps[first_error])
    return before if positive else through


def prefix_reach(completions: Sequence, verdicts: Sequence, credited: Sequence[bool],
                 advantages: Sequence[float], tokenizer, step_mode: StepMode) -> tuple[list[int], int]:
    """Per response, the number of leading completion tokens its advantage
    reaches (len(token_ids) = all of them), and how many judged responses fell
    back to sequence level because their text did not map onto their tokens."""
    reach, fallbacks = [], 0
    for c, v, cred, a in zip(completions, verdicts, credited, advantages):
        n = len(c.token_ids)
        if not cred or v is None or v.failed or v.first_error is None or a == 0:
            reach.append(n)
            continue
        r = response_reach(tokenizer, c.token_ids, c.text, v.first_error, v.num_steps, step_mode, a > 0)
        fallbacks += r is None
        reach.append(n if r is None else min(r, n))
    return reach, fallbacks


def token_advantages(advantages: torch.Tensor, reach: torch.Tensor, starts: torch.Tensor, T: int) -> torch.Tensor:
    """[N] advantages -> [N, T]: row i holds advantages[i] at positions
    starts[i] .. starts[i] + reach[i] - 1 (where its first reach[i] completion
    tokens are predicted) and 0 elsewhere. starts, reach: [N] int64."""
    pos = torch.arange(T, device=advantages.device)                     # [T]
    rel = pos[None, :] - starts[:, None]                                # [N, T]
    inside = (rel >= 0) & (rel < reach[:, None])
    return torch.where(inside, advantages[:, None], torch.zeros((), dtype=advantages.dtype,
                                                                device=advantages.device))
