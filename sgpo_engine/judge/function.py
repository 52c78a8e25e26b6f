"""FunctionJudge: any Python callable as a step judge.

    FunctionJudge(fn, step_mode="paragraph", cache=None).judge(problems, responses, references=None)

`fn(problem, steps, reference) -> int | None` returns the 0-based index of the
first incorrect step, or None when every step is correct. An exception inside
fn gives a failed verdict "error"; a value that is not None or an int in
[0, len(steps)) gives "bad_return" (a bool is not an index) or "out_of_range".
Exact checkers (e.g. the built-in task's line-by-line comparison) use this.
"""
from __future__ import annotations

import logging
import operator
from typing import Callable, Optional, Union

from .base import Item, Judge
from .cache import VerdictCache
from .steps import StepMode
from .verdict import Verdict

log = logging.getLogger("sgpo_engine.judge")

StepFn = Callable[[str, list, Optional[str]], Optional[int]]


class FunctionJudge(Judge):
    def __init__(self, fn: StepFn, step_mode: StepMode = "paragraph", cache: Union[bool, VerdictCache, None] = None,
                 cache_path: Optional[str] = None):
        if not callable(fn):
            raise ValueError(f"fn: expected a callable, got {type(fn).__name__}")
        name = getattr(fn, "__qualname__", type(fn).__name__)
        super().__init__(step_mode, cache, cache_id=f"function:{getattr(fn, '__module__', '')}.{name}",
                         cache_path=cache_path)
        self.fn = fn

    def _judge_items(self, items: list[Item]) -> list[Verdict]:
        return [self._one(it) for it in items]

    def _one(self, it: Item) -> Verdict:
        n = len(it.steps)
        try:
            value = self.fn(it.problem, list(it.steps), it.reference)
        except Exception as e:
            log.debug("FunctionJudge: fn raised %s: %s", type(e).__name__, e)
            return Verdict.failure("error", n, f"fn raised {type(e).__name__}: {e}")
        if value is None:
            return Verdict.judged(None, n)
        if isinstance(value, bool):
            return Verdict.failure("bad_return", n, "fn returned a bool, expected an int step index or None")
        try:
            k = operator.index(value)  # ints and integer-like (numpy) values, not floats
        except TypeError:
            return Verdict.failure("bad_return", n, f"fn returned {type(value).__name__}, expected an int or None")
        if not 0 <= k < n:
            return Verdict.failure("out_of_range", n, f"fn returned step {k}, the response has {n} steps")
        return Verdict.judged(k, n)

    def __repr__(self) -> str:
        return f"FunctionJudge({self._cache_id.removeprefix('function:')}, step_mode={self.step_mode!r})"
