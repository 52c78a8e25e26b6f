"""`sgpo demo`: GRPO vs SGPO from the same warm start on the built-in task.

Both methods train with identical settings (only `scope` differs: "off" is
plain GRPO, "all_negative" is SGPO) over several seeds, on the hardest chains
the warm start has seen (10-12 operations), where ~60% of the groups are
all-negative at the start. Runs go in parallel, one process and one torch
thread each (tiny models do not scale across threads). Writes

    OUTPUT/results.json   per method and seed: per-step accuracy, all-negative
                          fraction, credited fraction, reward, correct prefix;
                          held-out greedy accuracy at the start and the end
    OUTPUT/demo.png       accuracy and all-negative fraction against step
    OUTPUT/<method>-seed<s>/metrics.jsonl   the raw training metrics

and prints a short table. The numbers are what they are: if SGPO does not
beat GRPO in a setting, the table says so.
"""
from __future__ import annotations

import concurrent.futures
import json
import multiprocessing
import os
import statistics
import sys
import time
from typing import Optional, Sequence

import torch

from .train import SGPOTrainer, TrainConfig
from .train.config import BUILTIN, apply_overrides

METHODS = {"grpo": "off", "sgpo": "all_negative"}

# The shared training settings of both arms (DESIGN.md section 6, regime B).
BASE = dict(task_min_ops=10, task_max_ops=12, prompts_per_step=16, num_samples=8, max_new_tokens=112,
            temperature=1.0, lr=1e-4, lr_schedule="constant", max_grad_norm=1.0, loss_type="dapo",
            micro_batch_size=64, tensorboard=False, keep_checkpoints=1)
PROFILES = {
    "quick": dict(steps=6, seeds=1, eval_n=20, base=dict(prompts_per_step=4, num_samples=4)),
    "default": dict(steps=60, seeds=2, eval_n=100, base={}),
    "full": dict(steps=200, seeds=3, eval_n=300, base={}),
}
CURVES = ("accuracy", "all_negative_frac", "credited_frac", "reward_mean", "sgpo_reward_mean",
          "correct_prefix_frac", "premature_answer_frac", "response_len_mean", "rts_mean")


def _log(msg: str):
    print(msg, file=sys.stderr, flush=True)


def _run_arm(method: str, seed: int, base: dict, overrides: list, output: str, ks: list, eval_n: int) -> dict:
    """One training run from the warm start (a worker process)."""
    from .tasks import evaluate
    torch.set_num_threads(1)
    cfg = TrainConfig(**{**base, "save_every": base["max_steps"], "scope": METHODS[method], "seed": seed,
                         "output": os.path.join(output, f"{method}-seed{seed}"), "progress": False})
    cfg = apply_overrides(cfg, overrides)
    cfg.scope, cfg.seed = METHODS[method], seed  # the two arms differ in scope only
    _log(f"[{method} seed {seed}] {cfg.max_steps} steps of {cfg.prompts_per_step} prompts x "
         f"{cfg.num_samples} samples, k {cfg.task_min_ops}-{cfg.task_max_ops}")
    t = time.perf_counter()
    trainer = SGPOTrainer(cfg)  # loads cfg.model: the shipped warm start unless overridden
    history = trainer.train()
    end_eval = evaluate(trainer.policy, ks=ks, n=eval_n)
    _log(f"[{method} seed {seed}] held-out accuracy {_mean_acc(end_eval):.3f} ({time.perf_counter() - t:.0f} s)")
    return {"steps": {c: [h.get(c) for h in history] for c in CURVES}, "heldout_end": end_eval,
            "heldout_end_accuracy": _mean_acc(end_eval), "train_seconds": time.perf_counter() - t}


def run_demo(output: str = "runs/demo", quick: bool = False, full: bool = False, seeds: Optional[int] = None,
             overrides: Sequence[str] = (), jobs: Optional[int] = None) -> dict:
    from .tasks import evaluate
    prof = PROFILES["quick" if quick else "full" if full else "default"]
    n_seeds = seeds or prof["seeds"]
    base = {**BASE, **prof["base"], "max_steps": prof["steps"]}
    shared = apply_overrides(TrainConfig(**base), list(overrides))  # what both arms train on
    ks = list(range(shared.task_min_ops, shared.task_max_ops + 1))
    os.makedirs(output, exist_ok=True)
    t0 = time.perf_counter()
    start_eval = evaluate(_load(shared.model), ks=ks, n=prof["eval_n"])
    _log("warm start held-out greedy accuracy: " +
         ", ".join(f"{k} {v['accuracy']:.2f}" for k, v in start_eval.items()))
    arms = [(m, s) for s in range(n_seeds) for m in METHODS]
    jobs = jobs or min(len(arms), os.cpu_count() or 1)
    runs: dict = {m: {} for m in METHODS}
    with concurrent.futures.ProcessPoolExecutor(jobs, mp_context=multiprocessing.get_context("spawn")) as pool:
        futures = {pool.submit(_run_arm, m, s, base, list(overrides), output, ks, prof["eval_n"]): (m, s)
                   for m, s in arms}
        for fut in concurrent.futures.as_completed(futures):
            m, s = futures[fut]
            runs[m][str(s)] = fut.result()
    runs = {m: dict(sorted(r.items())) for m, r in runs.items()}
    results = {"settings": {**base, "task_min_ops": shared.task_min_ops, "task_max_ops": shared.task_max_ops,
                            "model": shared.model, "steps": prof["steps"], "seeds": n_seeds,
                            "eval_problems_per_k": prof["eval_n"], "ks": ks, "overrides": list(overrides)},
               "heldout_start": start_eval, "heldout_start_accuracy": _mean_acc(start_eval),
               "runs": runs, "summary": _summary(runs), "seconds": time.perf_counter() - t0}
    _write_json(os.path.join(output, "results.json"), results)
    plot = _plot(results, os.path.join(output, "demo.png"))
    print(_table(results))
    print(f"results: {os.path.join(output, 'results.json')}" + (f", plot: {plot}" if plot else ""))
    return results


def _load(model: str):
    from .model import load
    from .tasks import load_warm_start
    return load_warm_start() if model == BUILTIN else load(model)


def _mean_acc(ev: dict) -> float:
    return sum(v["accuracy"] for v in ev.values()) / len(ev)


def _mean_std(xs):
    xs = [x for x in xs if x is not None]
    if not xs:
        return float("nan"), float("nan")
    return statistics.fmean(xs), (statistics.stdev(xs) if len(xs) > 1 else 0.0)


def _summary(runs: dict) -> dict:
    out = {}
    for method, by_seed in runs.items():
        last = lambda c: [r["steps"][c][-1] for r in by_seed.values()]
        tail = lambda c: [statistics.fmean([x for x in r["steps"][c][-10:] if x is not None] or [float("nan")])
                          for r in by_seed.values()]
        acc, acc_sd = _mean_std([r["heldout_end_accuracy"] for r in by_seed.values()])
        out[method] = {"heldout_accuracy_mean": acc, "heldout_accuracy_std": acc_sd,
                       "train_accuracy_last10": _mean_std(tail("accuracy"))[0],
                       "all_negative_frac_last10": _mean_std(tail("all_negative_frac"))[0],
                       "credited_frac_last10": _mean_std(tail("credited_frac"))[0],
                       "correct_prefix_last10": _mean_std(tail("correct_prefix_frac"))[0],
                       "premature_answer_last": _mean_std(last("premature_answer_frac"))[0]}
    return out


def _table(results: dict) -> str:
    s = results["summary"]
    rows = [f"{'method':8s} {'held-out acc':>16s} {'train acc':>10s} {'all-neg':>8s} {'credited':>9s} "
            f"{'prefix':>7s} {'premature':>10s}",
            f"{'start':8s} {results['heldout_start_accuracy']:16.3f}"]
    for m, v in s.items():
        rows.append(f"{m:8s} {v['heldout_accuracy_mean']:9.3f} ± {v['heldout_accuracy_std']:.3f} "
                    f"{v['train_accuracy_last10']:10.3f} {v['all_negative_frac_last10']:8.2f} "
                    f"{v['credited_frac_last10']:9.2f} {v['correct_prefix_last10']:7.2f} "
                    f"{v['premature_answer_last']:10.2f}")
    st = results["settings"]
    rows.append(f"({st['seeds']} seed(s), {st['steps']} steps, k {st['ks'][0]}-{st['ks'][-1]}, held-out: "
                f"{st['eval_problems_per_k']} problems per k; train columns: mean of the last 10 steps)")
    return "\n".join(rows)


def _plot(results: dict, path: str) -> Optional[str]:
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        _log("matplotlib is not installed: no plot (pip install matplotlib)")
        return None
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.8))
    colors = {"grpo": "tab:gray", "sgpo": "tab:blue"}
    for ax, curve, title in ((axes[0], "accuracy", "rollout accuracy"),
                             (axes[1], "all_negative_frac", "all-negative group fraction")):
        for method, by_seed in results["runs"].items():
            series = torch.tensor([[x if x is not None else float("nan") for x in r["steps"][curve]]
                                   for r in by_seed.values()], dtype=torch.float64)
            mean = _smooth(series.nanmean(0))
            steps = range(1, len(mean) + 1)
            ax.plot(steps, mean, color=colors.get(method), label=method.upper())
            if series.shape[0] > 1:
                lo, hi = _smooth(series.min(0).values), _smooth(series.max(0).values)
                ax.fill_between(steps, lo, hi, color=colors.get(method), alpha=0.15)
        ax.set_title(title)
        ax.set_xlabel("step")
        ax.grid(alpha=0.3)
    axes[0].legend()
    st = results["settings"]
    fig.suptitle(f"GRPO vs SGPO from one warm start, k {st['ks'][0]}-{st['ks'][-1]}, "
                 f"{st['seeds']} seed(s) (band: min-max)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def _smooth(x: torch.Tensor, w: int = 5) -> list:
    """Trailing moving average (the per-step rollout accuracy is noisy)."""
    out = []
    for i in range(len(x)):
        window = x[max(0, i - w + 1):i + 1]
        out.append(float(window[~torch.isnan(window)].mean()) if (~torch.isnan(window)).any() else float("nan"))
    return out


def _write_json(path: str, obj):
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        json.dump(obj, f, indent=1, default=lambda o: None)
    os.replace(tmp, path)
