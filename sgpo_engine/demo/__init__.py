"""`sgpo demo`: GRPO vs SGPO vs SGPO with step-level credit, from one warm start.

The arms train with identical settings except what defines them and their
learning rate (arms.py): plain GRPO (scope "off"), SGPO as published
(sequence-level credit) and SGPO with prefix credit (`credit_assignment =
"prefix"`: in credited groups the advantage reaches only the judged steps, see
docs/design.md section 1.6); the `-guard` arms add the phantom-gradient guard
(credited_std_floor, docs/design.md section 1.5) to an SGPO arm, the `-ds`
arms DAPO's dynamic sampling (docs/design.md section 4.7), and
`sgpo-prefix-cosine` a warmup and cosine decay of its rate. The task is
the hardest chains the warm start has seen (10-12 operations), where most
groups start all-negative; `--regime hard` trains on longer chains (13-16)
than it has seen, where about 90% of the groups start all-negative and GRPO
mostly starves. Runs go in parallel, one process and one torch thread each.
The numbers are what they are: if an arm does not beat GRPO in a setting, the
table says so.

Two commands:

    compare.py  `sgpo demo`: each arm at its own rate, several seeds
                (results.json, demo.png, a table); `--reuse FILE` keeps an
                earlier comparison's runs of the same settings
    sweep.py    `sgpo demo --sweep`: each arm at each rate, one seed, ranked by
                rollout accuracy (sweep.json, sweep.png, a table); reuses an
                earlier sweep's runs

built on

    arms.py     what trains: the arms (one entry each), rates, regimes, shared settings, profiles
    runs.py     how: one run in a worker process, the process pool, the results file
    stats.py    the numbers: summaries, steps to reach, the sweep's ranking
    tables.py   the printed tables
    plots.py    the plots
"""
from __future__ import annotations

from typing import Optional, Sequence

from .compare import run_comparison
from .sweep import run_sweep

__all__ = ["run_demo", "run_comparison", "run_sweep"]


def run_demo(output: str = "runs/demo", quick: bool = False, full: bool = False, seeds: Optional[int] = None,
             overrides: Sequence[str] = (), jobs: Optional[int] = None, sweep: bool = False,
             arms: Optional[Sequence[str]] = None, regime: str = "default",
             lrs: Optional[Sequence[float]] = None, reuse: Optional[str] = None) -> dict:
    """`sgpo demo` as cli.py calls it: the comparison, or with `sweep` the
    learning-rate sweep (lrs: its grid), at the quick, default or full profile.
    reuse: an earlier comparison's results.json whose runs of the same settings are kept."""
    profile = "quick" if quick else "full" if full else "default"
    if sweep:
        return run_sweep(output=output, profile=profile, seeds=seeds, overrides=overrides, jobs=jobs, arms=arms,
                         regime=regime, lrs=lrs)
    return run_comparison(output=output, profile=profile, seeds=seeds, overrides=overrides, jobs=jobs, arms=arms,
                          regime=regime, reuse=reuse)
