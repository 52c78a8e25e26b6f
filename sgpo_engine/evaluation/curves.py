"""`sgpo plot RUN`: is it learning? RUN/curves.png, from RUN/metrics.jsonl.

Top row: the held-out metrics (eval/accuracy, eval/pass@K, eval/no_correct_frac)
against the step and against the cumulative rollout tokens (what the run
paid). Bottom row: the training metrics that explain them: reward, the
all-negative fraction and the share of it the judge credited, response length.
The trainer writes it at the end of a run with held-out evaluation.
"""
from __future__ import annotations

import os
from typing import Optional

from ..model.files import json_lines
from ..plotting import pyplot, save

TRAINING = (("reward_mean", "rollout reward"), ("all_negative_frac", "all-negative groups"),
            ("all_negative_credited_frac", "all-negative groups the judge credited"),
            ("response_len_mean", "response length (tokens)"))


def read_metrics(path: str) -> list[dict]:
    """The rows of a metrics.jsonl (a torn last line, from a kill mid-write, skipped)."""
    if not os.path.isfile(path):
        raise ValueError(f"plot: no such file {path} (is the folder a training run's output?)")
    return [row for _, row in json_lines(path) if "step" in row]


def plot_run(run: str, output: Optional[str] = None) -> Optional[str]:
    """Writes the run's curves (default RUN/curves.png); returns the path, None without matplotlib."""
    rows = read_metrics(os.path.join(run, "metrics.jsonl"))
    if not rows:
        raise ValueError(f"plot: {run}/metrics.jsonl has no steps yet")
    plt = pyplot()
    if plt is None:
        return None
    evals = [r for r in rows if "eval/accuracy" in r]
    tokens = _tokens_at_step(rows)
    eval_names = [k for k in (evals[0] if evals else {}) if k.count("/") == 1 and
                  (k in ("eval/accuracy", "eval/no_correct_frac") or k.startswith("eval/pass@"))]
    fig, axes = plt.subplots(2, 3, figsize=(14, 7))
    for ax, x, xlabel in ((axes[0, 0], lambda r: r["step"], "step"),
                          (axes[0, 1], lambda r: tokens.get(r["step"], 0), "rollout tokens (cumulative)")):
        for name in eval_names:
            ax.plot([x(r) for r in evals], [r[name] for r in evals], marker="o", markersize=3, label=name[5:])
        ax.set_xlabel(xlabel)
        ax.set_title("held-out" if evals else "held-out (no eval_every in this run)", fontsize=10)
        ax.grid(alpha=0.3)
        if eval_names:
            ax.legend(fontsize=8)
    steps = [r for r in rows if "loss" in r]
    for ax, (name, title) in zip([axes[0, 2], *axes[1]], TRAINING):
        ax.plot([r["step"] for r in steps], [r.get(name) if r.get(name) is not None else float("nan")
                                             for r in steps])
        ax.set_title(title, fontsize=10)
        ax.set_xlabel("step")
        ax.grid(alpha=0.3)
    fig.suptitle(f"{os.path.abspath(run)}")
    return save(plt, fig, output or os.path.join(run, "curves.png"))


def _tokens_at_step(rows: list[dict]) -> dict[int, int]:
    """Cumulative rollout tokens at each step (0 at step 0)."""
    out = {0: 0}
    for r in rows:
        if "rollout_tokens_total" in r:
            out[r["step"]] = r["rollout_tokens_total"]
    return out
