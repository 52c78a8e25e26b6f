"""The demo's training runs: what every run of a command shares (Plan), one
run from the warm start in a worker process, the process pool, and the
results file.

A run is keyed by (arm, lr), and its results are {seed: record} (the seed a
string, as in JSON). A results file names runs for people ("grpo", or a
sweep's "grpo-lr3e-05"); each record names its arm and learning rate, so a
file read back (read_runs) gives the keys without parsing the names.
"""
from __future__ import annotations

import concurrent.futures
import json
import multiprocessing
import os
import sys
import time
from dataclasses import dataclass
from typing import Callable, NamedTuple, Optional, Sequence

import torch

from ..train import SGPOTrainer, TrainConfig
from ..train.config import apply_overrides
from .arms import ARMS, BASE, PROFILES, REGIMES
from .stats import mean_accuracy

# The per-step training metrics a record keeps.
CURVES = ("accuracy", "all_negative_frac", "credited_frac", "reward_mean", "sgpo_reward_mean",
          "correct_prefix_frac", "premature_answer_frac", "response_len_mean", "rts_mean",
          "adv_abs_credited", "adv_abs_mixed", "rollout_tokens_total", "judge_read_tokens_total",
          "sample_batches", "drawn_accuracy", "drawn_all_negative_frac")


def log(msg: str):
    print(msg, file=sys.stderr, flush=True)


def arm_name(key: tuple) -> str:
    """A comparison's run name: its arm (one rate each)."""
    return key[0]


def sweep_name(key: tuple) -> str:
    """A sweep's run name, for its folder, the results file and the table: ("sgpo", 3e-05) -> "sgpo-lr3e-05"."""
    arm, lr = key
    return f"{arm}-lr{lr:g}"


@dataclass(frozen=True)
class Plan:
    """What every run of one command shares (and its results file records)."""
    output: str  # the command's folder: the results file, the plot, a folder per run
    regime: str
    base: dict  # training fields before the overrides: BASE, the regime's, the profile's, max_steps
    overrides: list  # the command line's training overrides (`--max-steps 50`), applied over base
    model: str  # the warm start every run loads
    lr: float  # the rate after the overrides: an arm that sets none trains at it
    ks: list  # the chain lengths trained on and evaluated (after the overrides)
    eval_n: int  # held-out problems per k
    eval_every: int  # steps between held-out evaluations


def make_plan(output: str, profile: str, regime: str, overrides: Sequence[str], eval_every: int) -> Plan:
    prof = PROFILES[profile]
    base = {**BASE, **REGIMES[regime], **prof["base"], "max_steps": prof["steps"]}
    shared = apply_overrides(TrainConfig(**base), list(overrides))  # what every arm trains on
    return Plan(output=output, regime=regime, base=base, overrides=list(overrides), model=shared.model, lr=shared.lr,
                ks=list(range(shared.task_min_ops, shared.task_max_ops + 1)), eval_n=prof["eval_n"],
                eval_every=eval_every)


def results_settings(plan: Plan, arms: dict, seeds: int) -> dict:
    """The settings a results file records (a sweep compares them before reusing
    its runs); arms: {run name: the training fields it sets}."""
    return {**plan.base, "task_min_ops": plan.ks[0], "task_max_ops": plan.ks[-1], "model": plan.model,
            "steps": plan.base["max_steps"], "seeds": seeds, "eval_problems_per_k": plan.eval_n,
            "eval_every": plan.eval_every, "ks": plan.ks, "arms": arms, "overrides": plan.overrides,
            "regime": plan.regime}


def evaluate_warm_start(plan: Plan) -> dict:
    """The warm start's held-out greedy accuracy per k: where every run's curve starts."""
    from ..tasks import evaluate, load_policy
    start_eval = evaluate(load_policy(plan.model), ks=plan.ks, n=plan.eval_n)
    log("warm start held-out greedy accuracy: " + ", ".join(f"{k} {v['accuracy']:.2f}" for k, v in start_eval.items()))
    return start_eval


class Job(NamedTuple):
    """One seed of one run: its key (arm, lr), its folder's name and the training fields it sets."""
    key: tuple
    name: str
    settings: dict
    seed: int


def train_one(plan: Plan, job: Job) -> dict:
    """One training run from the warm start (a worker process)."""
    torch.set_num_threads(1)  # tiny models do not scale across threads: one process per run instead
    cfg = TrainConfig(**{**plan.base, "save_every": plan.base["max_steps"], "seed": job.seed,
                         "eval_every": plan.eval_every, "eval_problems": plan.eval_n,
                         "eval_at_start": False,  # every run starts at the warm start, evaluated once
                         "output": os.path.join(plan.output, f"{job.name}-seed{job.seed}"), "progress": False})
    cfg = apply_overrides(cfg, plan.overrides)
    for k, v in {**job.settings, "seed": job.seed}.items():  # the arms differ in their settings only
        setattr(cfg, k, v)
    tag = f"[{job.name} seed {job.seed}]"
    log(f"{tag} {cfg.max_steps} steps of {cfg.prompts_per_step} prompts x "
        f"{cfg.num_samples} samples, k {cfg.task_min_ops}-{cfg.task_max_ops}, lr {cfg.lr:g}")
    t = time.perf_counter()
    trainer = SGPOTrainer(cfg)  # loads cfg.model: the shipped warm start unless overridden
    trainer.on_eval = lambda step, m: log(f"{tag} step {step}: held-out accuracy {m['eval/accuracy']:.3f} "
                                          f"({time.perf_counter() - t:.0f} s)")
    history = trainer.train()  # evaluates every eval_every steps and at the last
    evals = [(h["step"], h["eval/accuracy"]) for h in history if "eval/accuracy" in h]
    last = history[-1]
    end_eval = {f"k{k}": {n: last[f"eval/k{k}/{n}"] for n in ("accuracy", "correct_prefix", "premature_answer")}
                for k in plan.ks}
    return {"steps": {c: [h.get(c) for h in history] for c in CURVES}, "heldout": evals,
            "heldout_end": end_eval, "heldout_end_accuracy": evals[-1][1], "arm": job.key[0], "lr": cfg.lr,
            "train_seconds": time.perf_counter() - t}


def train_runs(plan: Plan, todo: Sequence[Job], start_accuracy: float, jobs: Optional[int]) -> dict:
    """Trains every job in parallel, one process and one torch thread each
    (jobs: at most that many at once; default one per core): {key: {seed: record}}."""
    jobs = jobs or max(1, min(len(todo), os.cpu_count() or 1))
    runs: dict = {}
    with concurrent.futures.ProcessPoolExecutor(jobs, mp_context=multiprocessing.get_context("spawn")) as pool:
        futures = {pool.submit(train_one, plan, job): job for job in todo}
        for fut in concurrent.futures.as_completed(futures):
            job = futures[fut]
            run = fut.result()
            # every held-out curve starts at the warm start
            run["heldout"] = [(0, start_accuracy)] + [tuple(p) for p in run["heldout"]]
            runs.setdefault(job.key, {})[str(job.seed)] = run
    return runs


def in_order(runs: dict) -> dict:
    """Runs in ARMS order, learning rates rising within each arm, seeds in order."""
    return {key: dict(sorted(by_seed.items()))
            for key, by_seed in sorted(runs.items(), key=lambda item: (list(ARMS).index(item[0][0]), item[0][1]))}


def read_runs(named: dict) -> dict:
    """A results file's runs ({name: {seed: record}}) keyed by (arm, lr) again,
    from what each record says of itself."""
    runs: dict = {}
    for by_seed in named.values():
        for seed, record in by_seed.items():
            runs.setdefault((record["arm"], record["lr"]), {})[seed] = record
    return runs


def write_results(path: str, settings: dict, start_eval: dict, runs: dict, summary: dict, started: float,
                  name: Callable[[tuple], str], **more) -> dict:
    """Writes a results file, its runs and summary under each run's name; returns what it wrote."""
    results = {"settings": settings, "heldout_start": start_eval, "heldout_start_accuracy": mean_accuracy(start_eval),
               "runs": {name(k): v for k, v in runs.items()}, "summary": {name(k): v for k, v in summary.items()},
               "seconds": time.perf_counter() - started, **more}
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        json.dump(results, f, indent=1, default=lambda o: None)
    os.replace(tmp, path)
    return results
