"""`sgpo demo --sweep`: each arm (default DEMO_ARMS) at each of SWEEP_LRS
(`--lrs` narrows the grid), one seed, and each arm's learning rates ranked by
rollout accuracy over the last steps (stats.rollout_scores), never by the
held-out set the comparison reports. Arm.lr is what it picked.

A sweep reuses the runs of an earlier sweep.json in the same folder with the
same settings, so widening the grid or adding an arm trains only what is new;
the earlier sweep's other runs stay in the file and the ranking. Writes
OUTPUT/sweep.json, OUTPUT/sweep.png and OUTPUT/<arm>-lr<lr>-seed<s>/, and
prints the table.
"""
from __future__ import annotations

import json
import os
import time
from typing import Optional, Sequence

from .arms import ARMS, DEMO_ARMS, PROFILES, SWEEP_LRS, check_choices
from .plots import plot_sweep
from .runs import (Job, evaluate_warm_start, in_order, log, make_plan, read_runs, results_settings, sweep_name,
                   train_runs, write_results)
from .stats import RANKING, SWEEP_TAIL, best_rates, mean_accuracy, rollout_scores, summarize
from .tables import print_results, sweep_table

SWEEP_EVAL_EVERY = {"full": 20}  # the sweep ranks by rollout accuracy: a coarser held-out view will do


def run_sweep(output: str = "runs/demo", profile: str = "default", seeds: Optional[int] = None,
              overrides: Sequence[str] = (), jobs: Optional[int] = None, arms: Optional[Sequence[str]] = None,
              regime: str = "default", lrs: Optional[Sequence[float]] = None) -> dict:
    """Trains what an earlier sweep in `output` has not; returns what sweep.json holds."""
    check_choices(arms, regime)
    prof = PROFILES[profile]
    plan = make_plan(output, profile, regime, overrides, SWEEP_EVAL_EVERY.get(profile, prof["eval_every"]))
    keys = [(a, lr) for a in arms or DEMO_ARMS for lr in lrs or SWEEP_LRS]
    n_seeds = seeds or 1
    os.makedirs(output, exist_ok=True)
    started = time.perf_counter()
    start_eval = evaluate_warm_start(plan)
    settings = results_settings(plan, {}, n_seeds)  # its arms: the earlier sweep's runs (if reused) and this one's
    path = os.path.join(output, "sweep.json")
    runs = earlier_runs(path, settings, keys)
    settings["arms"] = {sweep_name(k): _arm_settings(k) for k in [*runs, *keys]}
    todo = [Job(k, sweep_name(k), _arm_settings(k), s) for s in range(n_seeds) for k in keys
            if str(s) not in runs.get(k, {})]
    for key, by_seed in train_runs(plan, todo, mean_accuracy(start_eval), jobs).items():
        runs.setdefault(key, {}).update(by_seed)
    runs = in_order(runs)
    scores = rollout_scores(runs)
    best = best_rates(scores)
    _log_ranking(scores, best)
    summary = summarize(runs, baseline=None)
    ranking = {"criterion": RANKING, "scores": {sweep_name(k): v for k, v in scores.items()},
               "best": {arm: {"run": sweep_name(k), "lr": k[1]} for arm, k in best.items()}}
    results = write_results(path, settings, start_eval, runs, summary, started, name=sweep_name, sweep=ranking)
    start_accuracy = results["heldout_start_accuracy"]
    plot = plot_sweep(summary, scores, start_accuracy, settings, os.path.join(output, "sweep.png"))
    print_results(sweep_table(summary, scores, best, start_accuracy, settings), path, plot)
    return results


def _arm_settings(key: tuple) -> dict:
    """The training fields a sweep's run sets: its arm's, at its rate."""
    arm, lr = key
    return {**ARMS[arm].settings, "lr": lr}


def earlier_runs(path: str, settings: dict, keys: Sequence[tuple], ignore: Sequence[str] = ()) -> dict:
    """The runs of an earlier sweep or comparison at `path` ({(arm, lr): {seed: record}})
    if its settings equal these (the arms, learning rates and `ignore` aside), else none."""
    if not os.path.exists(path):
        return {}
    with open(path) as f:
        old = json.load(f)
    same = lambda st: {k: v for k, v in st.items() if k not in ("arms", "lr", *ignore)}  # each arm sets its lr
    if same(old["settings"]) != same(json.loads(json.dumps(settings))):
        log(f"{path}: other settings (another sweep's or comparison's), not reused")
        return {}
    if any("arm" not in r for by_seed in old["runs"].values() for r in by_seed.values()):
        log(f"{path}: runs that do not name their arm (written before records did), not reused")
        return {}
    runs = read_runs(old["runs"])
    log(f"{path}: {sum(len(runs.get(k, {})) for k in keys)} run(s) of these arms and rates there")
    return runs


def _log_ranking(scores: dict, best: dict):
    for arm, key in best.items():
        log(f"sweep: best {arm} learning rate {key[1]:g} (rollout accuracy, last {SWEEP_TAIL} steps: "
            + ", ".join(f"{sweep_name(k)} {v:.3f}" for k, v in scores.items() if k[0] == arm) + ")")
