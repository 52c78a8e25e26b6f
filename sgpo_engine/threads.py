"""How many CPU threads torch uses in the engine's processes (`sgpo train`,
`sgpo serve`); docs/design.md section 6.7 has the measurements behind it."""
from __future__ import annotations

import os


def cpu_threads(requested: int, local_world: int) -> int:
    """torch threads per process: `requested`; for 0, OMP_NUM_THREADS when set
    (torchrun sets 1), else this process's share of the CPUs it may run on
    (docs/design.md section 6.7)."""
    if requested > 0:
        return requested
    if os.environ.get("OMP_NUM_THREADS", "").isdigit() and int(os.environ["OMP_NUM_THREADS"]) > 0:
        return int(os.environ["OMP_NUM_THREADS"])
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return max(1, cpus // max(1, local_world))
