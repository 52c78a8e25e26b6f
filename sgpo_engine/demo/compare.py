"""`sgpo demo`: the arms compared from one warm start, each at its own
learning rate (Arm.lr; `--lr X` puts every arm at X), over several seeds.

Writes OUTPUT/results.json (per arm and seed: the per-step training curves,
the held-out greedy accuracy every eval_every steps, steps to reach GRPO's
final held-out accuracy; "equal_compute": the arms at equal rollout tokens,
stats.equal_compute), OUTPUT/demo.png and OUTPUT/<arm>-seed<s>/ (the
raw training metrics), and prints the table.
"""
from __future__ import annotations

import os
import time
from typing import Optional, Sequence

from ..train.config import parse_overrides
from .arms import ARMS, DEMO_ARMS, PROFILES, check_choices
from .plots import plot_comparison
from .runs import (Job, arm_name, evaluate_warm_start, in_order, log, make_plan, results_settings, train_runs,
                   write_results)
from .stats import equal_compute, mean_accuracy, summarize, with_compute_curves
from .sweep import earlier_runs
from .tables import comparison_table, compute_table, print_results


def run_comparison(output: str = "runs/demo", profile: str = "default", seeds: Optional[int] = None,
                   overrides: Sequence[str] = (), jobs: Optional[int] = None, arms: Optional[Sequence[str]] = None,
                   regime: str = "default", reuse: Optional[str] = None) -> dict:
    """Trains each arm (default DEMO_ARMS) for `seeds` seeds (default: the
    profile's); returns what results.json holds. reuse: an earlier results.json;
    its runs of an arm at the same rate and settings are taken instead of trained."""
    check_choices(arms, regime)
    prof = PROFILES[profile]
    plan = make_plan(output, profile, regime, overrides, prof["eval_every"])
    common_lr = "lr" in parse_overrides(list(overrides))  # `--lr X`: every arm at X instead of its own
    arm_settings = {a: ARMS[a].settings if common_lr else {**ARMS[a].settings, "lr": ARMS[a].lr}
                    for a in arms or DEMO_ARMS}
    keys = {a: (a, s.get("lr", plan.lr)) for a, s in arm_settings.items()}
    n_seeds = seeds or prof["seeds"]
    os.makedirs(output, exist_ok=True)
    started = time.perf_counter()
    settings = results_settings(plan, arm_settings, n_seeds)
    start_eval = evaluate_warm_start(plan)
    kept = reused_runs(reuse, settings, keys.values(), n_seeds) if reuse else {}
    todo = [Job(keys[a], a, arm_settings[a], s) for s in range(n_seeds) for a in arm_settings
            if str(s) not in kept.get(keys[a], {})]
    trained = train_runs(plan, todo, mean_accuracy(start_eval), jobs)
    for key, by_seed in trained.items():  # the seeds an earlier comparison lacked, beside the ones it had
        kept.setdefault(key, {}).update(by_seed)
    runs = in_order(kept)
    summary = summarize(runs, baseline=keys.get("grpo"))
    path = os.path.join(output, "results.json")
    compute = equal_compute(runs, mean_accuracy(start_eval))
    results = write_results(path, settings, start_eval, runs, summary, started, name=arm_name, equal_compute=compute)
    plot = plot_comparison(runs, settings, os.path.join(output, "demo.png"))
    table = comparison_table(summary, results["heldout_start_accuracy"], settings)
    print_results(table + ("\n\n" + compute_table(compute) if compute else ""), path, plot)
    return results


def reused_runs(path: str, settings: dict, keys, seeds: int) -> dict:
    """An earlier comparison's runs ({(arm, lr): {seed: record}}) of these keys, seeds below
    `seeds`, when its settings equal these (the arms and the seed count aside;
    sweep.earlier_runs: a run is a seed's whatever else ran beside it); the seeds it lacks are
    trained. Records written before the rollout-token curve existed get it from their response
    lengths (exact without dynamic sampling: every response was generated once)."""
    old = earlier_runs(path, settings, list(keys), ignore=("seeds",))
    P, G = settings["prompts_per_step"], settings["num_samples"]
    judge_free = lambda arm: ARMS[arm].settings.get("scope") == "off"
    kept = {k: {seed: with_compute_curves(r, P * G, judge_free(k[0])) for seed, r in old[k].items()
                if int(seed) < seeds} for k in keys if k in old}
    kept = {k: by_seed for k, by_seed in kept.items() if by_seed}
    log(f"{path}: reusing " + (", ".join(f"{k[0]} ({len(v)} seed(s))" for k, v in kept.items()) or "no runs"))
    return kept
