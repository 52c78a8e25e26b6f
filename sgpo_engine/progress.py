"""A dependency-free progress line on stderr (shown on terminals only)."""
from __future__ import annotations

import sys
import time


class Progress:
    def __init__(self, total: int, desc: str, enabled: bool | None = None):
        self.total, self.desc, self.done = total, desc, 0
        self.enabled = sys.stderr.isatty() if enabled is None else enabled
        self.t0 = self.last = time.perf_counter()

    def update(self, n: int = 1, **stats):
        self.done += n
        now = time.perf_counter()
        if not self.enabled or (now - self.last < 0.2 and self.done < self.total):
            return
        self.last = now
        rate = self.done / max(now - self.t0, 1e-9)
        extra = "".join(f" {k}={v:.3g}" if isinstance(v, float) else f" {k}={v}" for k, v in stats.items())
        sys.stderr.write(f"\r{self.desc}: {self.done}/{self.total} ({rate:.1f}/s){extra}   ")
        sys.stderr.flush()

    def close(self):
        if self.enabled:
            sys.stderr.write("\n")
            sys.stderr.flush()
