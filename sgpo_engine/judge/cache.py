"""VerdictCache: successful verdicts keyed by a hash of what was judged.

    cache = VerdictCache(path=None)      # in memory; with a path, also a JSONL file
    key = cache_key(judge_id, step_mode, problem, response, reference)
    cache.get(key) -> (first_error, num_steps) | None
    cache.put(key, first_error, num_steps)

Only successful verdicts are stored: a failure (timeout, 5xx, unparseable
text) may not repeat, so it is retried the next time instead of being frozen.
The JSONL file is append-only, one {"key", "first_error", "num_steps"} object
per line, read back at start-up; unreadable lines (e.g. a line cut short by a
crash) are skipped, so the file never stops a run.
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import threading
from typing import Optional

from .prompt import PROMPT_VERSION

log = logging.getLogger("sgpo_engine.judge")


def _mode_id(mode) -> str:
    return f"re:{mode.pattern}/{int(mode.flags)}" if isinstance(mode, re.Pattern) else str(mode)


def cache_key(judge_id: str, step_mode, problem: str, response: str, reference: Optional[str]) -> str:
    """sha256 over (prompt version, judge model, step mode, problem, response, reference):
    the step mode is part of it because a different split is a different question."""
    blob = json.dumps([PROMPT_VERSION, judge_id, _mode_id(step_mode), problem, response, reference],
                      ensure_ascii=False)
    return hashlib.sha256(blob.encode("utf-8")).hexdigest()


class VerdictCache:
    def __init__(self, path: Optional[str | os.PathLike] = None):
        self.path = os.fspath(path) if path is not None else None
        self._data: dict[str, tuple[Optional[int], int]] = {}
        self._lock = threading.Lock()
        if self.path is not None and os.path.exists(self.path):
            self._load()

    def _load(self) -> None:
        bad = 0
        with open(self.path, encoding="utf-8", errors="replace") as f:
            for line in f:
                try:
                    d = json.loads(line)
                    fe, n = d["first_error"], d["num_steps"]
                    if not (isinstance(d["key"], str) and isinstance(n, int) and (fe is None or isinstance(fe, int))):
                        raise ValueError
                    self._data[d["key"]] = (fe, n)
                except (ValueError, KeyError, TypeError):
                    bad += line.strip() != ""
        if bad:
            log.warning("judge cache %s: skipped %d unreadable lines", self.path, bad)

    def get(self, key: str) -> Optional[tuple[Optional[int], int]]:
        with self._lock:
            return self._data.get(key)

    def put(self, key: str, first_error: Optional[int], num_steps: int) -> None:
        with self._lock:
            if key in self._data:
                return
            self._data[key] = (first_error, num_steps)
            if self.path is not None:
                # One short line per write, appended: concurrent writers do not interleave lines.
                with open(self.path, "a", encoding="utf-8") as f:
                    f.write(json.dumps({"key": key, "first_error": first_error, "num_steps": num_steps}) + "\n")

    def __len__(self) -> int:
        with self._lock:
            return len(self._data)

    def __repr__(self) -> str:
        return f"VerdictCache(entries={len(self)}, path={self.path!r})"


def make_cache(cache, path=None) -> Optional[VerdictCache]:
    """A judge's `cache` argument: True (new cache, persisted to `path` when given),
    False / None (no cache) or a VerdictCache to share between judges."""
    if isinstance(cache, VerdictCache):
        return cache
    if cache is True:
        return VerdictCache(path)
    if cache is False or cache is None:
        return None
    raise ValueError(f"cache: expected True, False or a VerdictCache, got {type(cache).__name__}")
