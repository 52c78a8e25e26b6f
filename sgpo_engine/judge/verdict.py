"""Verdict: what a judge says about one response.

    Verdict(first_error, num_steps, rts, failed, reason, detail="")

- first_error: 0-based index of the first incorrect step, None when no step is
  wrong (or when the verdict failed).
- rts: first_error / num_steps (1.0 when no step is wrong, 0.0 for zero steps),
  NaN when the verdict failed: a failed verdict is "not judged", and
  group_advantages leaves a NaN-RTS response at its outcome reward.
- reason: "ok" (judged), "empty" (zero steps, RTS 0 without asking a judge), or
  the failure's category: "timeout", "connection", "http_<status>",
  "bad_response" (the server's reply is not a chat completion), "unparseable"
  (the judge's text lacks the answer line), "out_of_range" (a step number that
  does not exist), "error" / "bad_return" (FunctionJudge), "generation"
  (LocalJudge); and "no_error_found" (CalcJudge read the arithmetic and found
  nothing wrong: not judged, yet not a failure; `is_failure` is False). Judges
  count these by reason in `judge.stats`.
- detail: a human-readable explanation of a failure (never holds secrets).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Optional

from .steps import rts as _rts

NO_ERROR_FOUND = "no_error_found"


@dataclass(frozen=True)
class Verdict:
    first_error: Optional[int]
    num_steps: int
    rts: float
    failed: bool
    reason: str
    detail: str = ""

    @classmethod
    def judged(cls, first_error: Optional[int], num_steps: int) -> "Verdict":
        """A successful verdict; ValueError when first_error is not a step of num_steps."""
        return cls(first_error, num_steps, _rts(first_error, num_steps), False, "ok" if num_steps else "empty")

    @classmethod
    def failure(cls, reason: str, num_steps: int, detail: str = "") -> "Verdict":
        return cls(None, num_steps, math.nan, True, reason, detail)

    @classmethod
    def no_error_found(cls, num_steps: int, detail: str = "") -> "Verdict":
        """A checker that could not settle the response (CalcJudge: no wrong equation): not
        judged, so the response keeps its outcome reward, but not a failure of the judge."""
        return cls(None, num_steps, math.nan, True, NO_ERROR_FOUND, detail)

    @property
    def is_failure(self) -> bool:
        """Failed for a reason other than "no_error_found" (what judge_failures counts)."""
        return self.failed and self.reason != NO_ERROR_FOUND
