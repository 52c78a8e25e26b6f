"""Judge: the interface every step judge exposes, and the work they share.

    judge.judge(problems, responses, references=None) -> list[Verdict]
    judge.stats -> {"responses", "judged", "failed", "cache_hits", "requests", "failures": {reason: n}}
    judge.reset_stats()

`problems`, `responses` (raw response text) and `references` (optional, one per
response, each a str or None) are equal-length lists, else ValueError. Each
response is split with the judge's step mode; a response with zero steps gets
RTS 0 without a judge call. With a cache, responses already judged (in an
earlier call, or earlier in the same call) are answered from it, so each
distinct (problem, response, reference) reaches the backend once.

A subclass implements `_judge_items(items) -> list[Verdict]` and turns its own
failures into failed verdicts; an exception that escapes it anyway becomes a
failed verdict ("error"), never an exception that stops training.
"""
from __future__ import annotations

import abc
import logging
import threading
from collections import Counter
from dataclasses import dataclass
from typing import Optional, Sequence, Union

from .cache import VerdictCache, cache_key, make_cache
from .steps import StepMode, resolve_mode, split_steps
from .verdict import Verdict

log = logging.getLogger("sgpo_engine.judge")


@dataclass
class Item:
    """One response to judge, split into steps (at least one)."""
    problem: str
    response: str
    reference: Optional[str]
    steps: list[str]


def _check_inputs(problems, responses, references) -> list[Optional[str]]:
    for name, seq in (("problems", problems), ("responses", responses)):
        if isinstance(seq, str) or not isinstance(seq, Sequence):
            raise ValueError(f"{name}: expected a list of str, got {type(seq).__name__}")
        bad = [i for i, x in enumerate(seq) if not isinstance(x, str)]
        if bad:
            raise ValueError(f"{name}[{bad[0]}]: expected a str, got {type(seq[bad[0]]).__name__}")
    if len(problems) != len(responses):
        raise ValueError(f"problems / responses: lengths differ ({len(problems)} vs {len(responses)})")
    if references is None:
        return [None] * len(responses)
    if isinstance(references, str) or not isinstance(references, Sequence):
        raise ValueError(f"references: expected a list of str or None, got {type(references).__name__}")
    if len(references) != len(responses):
        raise ValueError(f"references: length {len(references)}, expected {len(responses)} (one per response)")
    bad = [i for i, x in enumerate(references) if x is not None and not isinstance(x, str)]
    if bad:
        raise ValueError(f"references[{bad[0]}]: expected a str or None, got {type(references[bad[0]]).__name__}")
    return list(references)


class Judge(abc.ABC):
    """Base class: input checks, step splitting, cache, statistics."""

    def __init__(self, step_mode: StepMode = "paragraph", cache: Union[bool, VerdictCache, None] = None,
                 cache_id: str = "", cache_path: Optional[str] = None):
        self.step_mode = resolve_mode(step_mode)
        self.cache = make_cache(cache, cache_path)  # True, False / None or a shared VerdictCache
        self._cache_id = cache_id  # names the judge model inside cache keys
        self._lock = threading.Lock()
        self.reset_stats()

    # ------------------------------------------------------------------ stats
    def reset_stats(self) -> None:
        with self._lock:
            self._counts = Counter()
            self._failures = Counter()

    @property
    def stats(self) -> dict:
        """Counts since creation (or reset_stats): responses seen, judged
        (ok or empty), failed, cache_hits, requests sent to the backend, and
        failures by reason."""
        with self._lock:
            d = {k: self._counts[k] for k in ("responses", "judged", "failed", "cache_hits", "requests")}
            d["failures"] = dict(self._failures)
        return d

    def _record(self, verdicts: list[Verdict], hits: int, requests: int) -> None:
        failed = Counter(v.reason for v in verdicts if v.is_failure)  # "no_error_found" is an outcome, not a fault
        if failed:
            # every verdict failing usually means a misconfigured or unreachable judge
            level = logging.WARNING if sum(failed.values()) == len(verdicts) else logging.INFO
            log.log(level, "%s: %d of %d verdicts failed %s", type(self).__name__, sum(failed.values()),
                    len(verdicts), dict(failed))
        with self._lock:
            self._counts["responses"] += len(verdicts)
            self._counts["cache_hits"] += hits
            self._counts["requests"] += requests
            for v in verdicts:
                self._counts["failed" if v.failed else "judged"] += 1
                if v.failed:
                    self._failures[v.reason] += 1

    # ------------------------------------------------------------------ judge
    def judge(self, problems: Sequence[str], responses: Sequence[str],
              references: Optional[Sequence[Optional[str]]] = None) -> list[Verdict]:
        """One Verdict per response (see the module docstring)."""
        refs = _check_inputs(problems, responses, references)
        out: list[Optional[Verdict]] = [None] * len(responses)
        todo: dict[str, list[int]] = {}   # key -> indices waiting for that key's verdict
        items: list[Item] = []
        keys: list[str] = []
        hits = 0
        for i, (p, r, ref) in enumerate(zip(problems, responses, refs)):
            steps = split_steps(r, self.step_mode)
            if not steps:
                out[i] = Verdict.judged(None, 0)
                continue
            key = cache_key(self._cache_id, self.step_mode, p, r, ref) if self.cache is not None else str(i)
            cached = self.cache.get(key) if self.cache is not None else None
            if cached is not None and cached[1] == len(steps):
                out[i] = Verdict.judged(*cached)
                hits += 1
            elif key in todo:  # the same question earlier in this call: ask once
                todo[key].append(i)
                hits += 1
            else:
                todo[key] = [i]
                keys.append(key)
                items.append(Item(p, r, ref, steps))
        for key, item, v in zip(keys, items, self._safe_judge(items)):
            if self.cache is not None and not v.failed:
                self.cache.put(key, v.first_error, v.num_steps)
            for i in todo[key]:
                out[i] = v
        self._record(out, hits, len(items))
        return out

    def _safe_judge(self, items: list[Item]) -> list[Verdict]:
        if not items:
            return []
        try:
            verdicts = list(self._judge_items(items))
            if len(verdicts) != len(items):
                raise RuntimeError(f"{type(self).__name__} returned {len(verdicts)} verdicts for {len(items)} items")
            return verdicts
        except Exception as e:  # a judge failure must never stop training
            log.warning("%s failed: %s: %s", type(self).__name__, type(e).__name__, e)
            return [Verdict.failure("error", len(it.steps), f"{type(e).__name__}: {e}") for it in items]

    @abc.abstractmethod
    def _judge_items(self, items: list[Item]) -> list[Verdict]:
        """One Verdict per item (each has at least one step)."""
