"""The demo's plots: the comparison's training curves and the sweep's view
across learning rates. Runs and summaries are keyed by (arm, lr); each arm
keeps its color (arms.py). Without matplotlib there is no plot (None)."""
from __future__ import annotations

import statistics
from typing import Optional

import torch

from ..plotting import pyplot, save
from .arms import ARMS
from .stats import OLDER_CURVE, SWEEP_TAIL, drawn_curve, tokens_at

PANELS = (("heldout", "held-out greedy accuracy"), ("heldout_tokens", "held-out accuracy vs rollout (dashed: + judge) tokens"),
          ("drawn_accuracy", "rollout accuracy (every drawn group)"), ("sample_batches", "prompt batches drawn per step"),
          ("drawn_all_negative_frac", "all-negative group fraction (drawn)"),
          ("correct_prefix_frac", "correct prefix (mean RTS)"),
          ("premature_answer_frac", "premature answers"), ("response_len_mean", "response length (tokens)"))


def plot_comparison(runs: dict, settings: dict, path: str) -> Optional[str]:
    """Each arm's curves against the step: the mean over seeds, a min-max band."""
    plt = pyplot()
    if plt is None:
        return None
    fig, axes = plt.subplots(2, 4, figsize=(17, 7))
    for ax, (curve, title) in zip(axes.flat, PANELS):
        for (arm, _), by_seed in runs.items():
            held = curve.startswith("heldout")
            steps, series, (mean, lo, hi) = _heldout(by_seed) if held else _per_step(by_seed, curve)
            x = _mean_tokens(by_seed, steps) if curve == "heldout_tokens" else steps
            ax.plot(x, mean, color=ARMS[arm].color, label=arm, marker="o" if held else None, markersize=3)
            if series.shape[0] > 1:
                ax.fill_between(x, lo, hi, color=ARMS[arm].color, alpha=0.15)
            with_judge = _mean_tokens(by_seed, steps, judge=True) if curve == "heldout_tokens" else None
            if with_judge and with_judge != x:  # dashed: the same run against rollout + judge-read tokens
                ax.plot(with_judge, mean, color=ARMS[arm].color, ls="--", lw=1, label=f"{arm} (+ judge)")
        ax.set_title(title, fontsize=10)
        ax.set_xlabel("rollout tokens (cumulative, mean over seeds)" if curve == "heldout_tokens" else "step")
        ax.grid(alpha=0.3)
    axes.flat[0].legend(fontsize=8)
    st = settings
    fig.suptitle(f"{' vs '.join(arm for arm, _ in runs)} from one warm start, k {st['ks'][0]}-{st['ks'][-1]}, "
                 f"{st['seeds']} seed(s) (band: min-max over seeds)")
    return save(plt, fig, path)


def _heldout(by_seed: dict) -> tuple:
    """The held-out curve: evaluated every eval_every steps, the same steps for every seed."""
    steps = [p[0] for p in next(iter(by_seed.values()))["heldout"]]
    series = torch.tensor([[p[1] for p in r["heldout"]] for r in by_seed.values()], dtype=torch.float64)
    return steps, series, (series.mean(0).tolist(), series.min(0).values.tolist(), series.max(0).values.tolist())


def _mean_tokens(by_seed: dict, steps: list, judge: bool = False) -> Optional[list]:
    """The mean over seeds of the cumulative rollout tokens at each of `steps`; judge: rollout
    + judge-read tokens (None when a seed has no judge-token curve)."""
    def at(r, s):
        extra = tokens_at(r, s, "judge_read_tokens_total") if judge else 0.0
        return None if extra is None else tokens_at(r, s) + extra
    points = [[at(r, s) for r in by_seed.values()] for s in steps]
    return None if any(None in p for p in points) else [statistics.fmean(p) for p in points]


def _curve(record: dict, curve: str) -> list:
    """A record's per-step curve (a drawn-group one through stats.drawn_curve; none: no values)."""
    if curve not in OLDER_CURVE:
        return record["steps"][curve]
    return drawn_curve(record, curve) or [None] * len(record["steps"]["accuracy"])


def _per_step(by_seed: dict, curve: str) -> tuple:
    """A training curve, smoothed (a step's rollout metrics are noisy); None: no value that step."""
    series = torch.tensor([[x if x is not None else float("nan") for x in _curve(r, curve)]
                           for r in by_seed.values()], dtype=torch.float64)
    mean = _smooth(series.nanmean(0))
    return list(range(1, len(mean) + 1)), series, (mean, _smooth(series.min(0).values), _smooth(series.max(0).values))


SWEEP_PANELS = (("score", f"rollout accuracy, last {SWEEP_TAIL} steps (ranks)"),
                ("heldout_accuracy_mean", "held-out accuracy, end"),
                ("premature_answer_last10", "premature answers, last 10 steps"),
                ("response_len_last10", "response length, last 10 steps"))


def plot_sweep(summary: dict, scores: dict, start_accuracy: float, settings: dict, path: str) -> Optional[str]:
    """One line per arm across the learning rates: what ranks, where it ends,
    and the gaming gauges."""
    plt = pyplot()
    if plt is None:
        return None
    fig, axes = plt.subplots(1, 4, figsize=(16, 3.8))
    by_arm: dict = {}
    for (arm, lr), v in summary.items():
        by_arm.setdefault(arm, []).append((lr, {**v, "score": scores[(arm, lr)]}))
    for ax, (key, title) in zip(axes, SWEEP_PANELS):
        for arm, points in by_arm.items():
            points.sort(key=lambda p: p[0])
            ax.plot([p[0] for p in points], [p[1][key] for p in points], marker="o", color=ARMS[arm].color,
                    ls="--" if arm.endswith("-guard") else "-", label=arm)
        if key == "heldout_accuracy_mean":
            ax.axhline(start_accuracy, color="black", lw=0.8, ls=":", label="warm start")
        ax.set_xscale("log")
        ax.set_xlabel("learning rate")
        ax.set_title(title, fontsize=10)
        ax.grid(alpha=0.3)
    axes[1].legend(fontsize=8)
    st = settings
    fig.suptitle(f"learning-rate sweep, k {st['ks'][0]}-{st['ks'][-1]}, {st['steps']} steps, one seed per rate")
    return save(plt, fig, path)


def _smooth(x: torch.Tensor, w: int = 5) -> list:
    """Trailing moving average (the per-step rollout accuracy is noisy)."""
    out = []
    for i in range(len(x)):
        window = x[max(0, i - w + 1):i + 1]
        out.append(float(window[~torch.isnan(window)].mean()) if (~torch.isnan(window)).any() else float("nan"))
    return out
