"""`sgpo judge-eval`: how well a step judge finds the first wrong step, on labelled data.

    sgpo judge-eval --data examples/data/judge_gsm8k.jsonl --judge calc
    sgpo judge-eval --data FILE --judge http --judge-url URL --judge-model NAME [--output DIR]

The judge is built and run exactly as in training (the same config fields, the
registry, its prompt, cache, concurrency, retries and failure accounting); any
training config field is accepted (`--config FILE.toml` too), the judge's are used.

Data (JSONL), ProcessBench's format: {"problem", "steps": [...], "label"},
label the 0-based index of the earliest wrong step or -1 when every step is
right; or {"problem", "response", "label"}, the response split with the
judge's step mode. Steps are joined for the judge with that mode's separator
and must split back into the same steps.

Scores (ProcessBench, Zheng et al. 2024): accuracy on the erroneous items (the
exact earliest step), on the correct ones (no error named), and F1, their
harmonic mean; within-one-step accuracy on the erroneous items; the mean
absolute error of the RTS the trainer would use (label / steps, 1 for correct
items; items without a verdict excluded); "too early" (a step named before the
label, or any step on a correct item) and "too late" (a later step, or none on
an erroneous item); verdicts per second; failures by reason (a failed verdict
counts as naming no step: the trainer then keeps the outcome reward).
"no_error_found" (calc found no wrong arithmetic) counts as "no error named".

Writes OUTPUT/report.json, OUTPUT/items.jsonl (each item with its verdict) and
OUTPUT/judge_eval.png (predicted against true first error; needs matplotlib),
then prints a table.
"""
from __future__ import annotations

import json
import math
import os
import time
from dataclasses import dataclass
from typing import Optional

from ..judge import JudgeContext, make_judge
from ..judge.steps import split_steps
from ..plotting import pyplot, save

SEPARATORS = {"line": "\n", "paragraph": "\n\n"}  # how rows with "steps" are joined, per step mode


@dataclass
class LabelledItem:
    problem: str
    response: str        # what the judge reads
    steps: list[str]     # its steps under the judge's step mode
    label: int           # earliest wrong step, -1: none
    where: str           # its file:line (or Parquet row)
    kind: str = ""       # the row's "kind", if any (reported per kind)


def read_items(path: str, step_mode) -> list[LabelledItem]:
    """The labelled rows of `path` (JSONL or Parquet; module docstring); a bad row is a
    ValueError naming the file, line and field."""
    from ..tasks.dataset import read_rows
    items = [_item(row, where, step_mode) for where, row in read_rows(path, "--data")]
    if not items:
        raise ValueError(f"{path}: no items")
    return items


def _item(row: dict, where: str, step_mode) -> LabelledItem:
    problem = row.get("problem")
    if not isinstance(problem, str) or not problem.strip():
        raise ValueError(f"{where}: field 'problem' must be a non-empty string")
    label = row.get("label")
    if isinstance(label, bool) or not isinstance(label, int) or label < -1:
        raise ValueError(f"{where}: field 'label' must be an integer >= -1 (-1: no wrong step), got {label!r}")
    if "steps" in row:
        steps = row["steps"]
        if not isinstance(steps, list) or not steps or not all(isinstance(s, str) and s.strip() for s in steps):
            raise ValueError(f"{where}: field 'steps' must be a non-empty list of non-empty strings")
        if not isinstance(step_mode, str) or step_mode not in SEPARATORS:
            raise ValueError(f"{where}: rows with 'steps' need step_mode line or paragraph, got {step_mode!r} "
                             "(give rows a 'response' instead)")
        response = SEPARATORS[step_mode].join(s.strip() for s in steps)
        if split_steps(response, step_mode) != [s.strip() for s in steps]:
            raise ValueError(f"{where}: field 'steps' does not split back into {len(steps)} steps under "
                             f"step_mode {step_mode!r} (a step holds its separator?); try --step-mode paragraph")
    elif isinstance(row.get("response"), str):
        response = row["response"]
        steps = split_steps(response, step_mode)
        if not steps:
            raise ValueError(f"{where}: field 'response' has no steps under step_mode {step_mode!r}")
    else:
        raise ValueError(f"{where}: needs field 'steps' (a list) or 'response' (a string)")
    if label >= len(steps):
        raise ValueError(f"{where}: field 'label' is {label}, but the item has {len(steps)} steps")
    return LabelledItem(problem, response, steps, label, where, str(row.get("kind", "")))


def predicted(verdict) -> Optional[int]:
    """The step a verdict names (None: no error named, failed verdicts included)."""
    return None if verdict.failed else verdict.first_error


def score(items: list[LabelledItem], verdicts: list) -> dict:
    """The ProcessBench scores and our error analysis (module docstring)."""
    err = [(it, v) for it, v in zip(items, verdicts) if it.label >= 0]
    ok = [(it, v) for it, v in zip(items, verdicts) if it.label < 0]
    exact = sum(predicted(v) == it.label for it, v in err)
    within = sum(predicted(v) is not None and abs(predicted(v) - it.label) <= 1 for it, v in err)
    correct_ok = sum(predicted(v) is None for _, v in ok)
    acc_err = exact / len(err) if err else float("nan")
    acc_ok = correct_ok / len(ok) if ok else float("nan")
    f1 = 2 * acc_err * acc_ok / (acc_err + acc_ok) if acc_err + acc_ok > 0 else 0.0
    early = sum(predicted(v) is not None and (it.label < 0 or predicted(v) < it.label) for it, v in zip(items, verdicts))
    late = sum(it.label >= 0 and (predicted(v) is None or predicted(v) > it.label) for it, v in zip(items, verdicts))
    rts_err = [abs(v.rts - (it.label / len(it.steps) if it.label >= 0 else 1.0))
               for it, v in zip(items, verdicts) if not math.isnan(v.rts)]
    reasons: dict[str, int] = {}
    for v in verdicts:
        if v.failed:
            reasons[v.reason] = reasons.get(v.reason, 0) + 1
    return {"items": len(items), "erroneous": len(err), "correct": len(ok),
            "accuracy_erroneous": acc_err, "accuracy_correct": acc_ok, "f1": f1,
            "within_one_step": within / len(err) if err else float("nan"),
            "rts_mae": sum(rts_err) / len(rts_err) if rts_err else float("nan"), "rts_scored": len(rts_err),
            "too_early": early, "too_late": late, "outcomes": reasons}


def by_kind(items: list[LabelledItem], verdicts: list) -> dict:
    """score() per row kind (the shipped set's: correct, slip, copy, operation)."""
    kinds = sorted({it.kind for it in items if it.kind})
    out = {}
    for k in kinds:
        pairs = [(it, v) for it, v in zip(items, verdicts) if it.kind == k]
        hits = sum(predicted(v) == (it.label if it.label >= 0 else None) for it, v in pairs)
        out[k] = {"items": len(pairs), "exact": hits / len(pairs)}
    return out


def evaluate_judge(judge, items: list[LabelledItem]) -> tuple[list, float]:
    """The judge's verdicts on `items` (one call, as the trainer makes them) and the seconds."""
    t0 = time.perf_counter()
    verdicts = judge.judge([it.problem for it in items], [it.response for it in items])
    return verdicts, time.perf_counter() - t0


def write_outputs(output: str, report: dict, items: list[LabelledItem], verdicts: list) -> None:
    os.makedirs(output, exist_ok=True)
    _atomic_write(os.path.join(output, "report.json"), json.dumps(_finite(report), indent=2))
    rows = [json.dumps({"where": it.where, "kind": it.kind, "label": it.label, "steps": len(it.steps),
                        "predicted": predicted(v), "reason": v.reason, "rts": None if math.isnan(v.rts) else v.rts,
                        "detail": v.detail}) for it, v in zip(items, verdicts)]
    _atomic_write(os.path.join(output, "items.jsonl"), "\n".join(rows) + "\n")
    plot(os.path.join(output, "judge_eval.png"), items, verdicts, report["judge"])


def plot(path: str, items: list[LabelledItem], verdicts: list, title: str) -> Optional[str]:
    """Predicted against true first error (-1: none); None when matplotlib is missing."""
    plt = pyplot()
    if plt is None:
        return None
    counts: dict = {}
    for it, v in zip(items, verdicts):
        p = predicted(v)
        key = (it.label, -1 if p is None else p)
        counts[key] = counts.get(key, 0) + 1
    fig, ax = plt.subplots(figsize=(5, 5))
    xs, ys, ss = zip(*[(t, p, n) for (t, p), n in counts.items()])
    ax.scatter(xs, ys, s=[12 * n for n in ss], alpha=0.6)
    top = max(max(xs), max(ys)) + 1
    ax.plot([-1, top], [-1, top], color="gray", lw=0.8)
    ax.set_xlabel("true first wrong step (-1: none)")
    ax.set_ylabel("judge's first wrong step (-1: none or no verdict)")
    ax.set_title(title)
    return save(plt, fig, path)


def table(report: dict) -> str:
    lines = [f"judge-eval: {report['judge']} on {report['data']} ({report['items']} items: "
             f"{report['erroneous']} erroneous, {report['correct']} correct)"]
    for key, what in (("accuracy_erroneous", "accuracy, erroneous (exact earliest step)"),
                      ("accuracy_correct", "accuracy, correct (no error named)"), ("f1", "ProcessBench F1"),
                      ("within_one_step", "within one step, erroneous"), ("rts_mae", "RTS mean absolute error")):
        lines.append(f"  {what:44s} {report[key]:.3f}")
    lines.append(f"  {'too early / too late':44s} {report['too_early']} / {report['too_late']}")
    lines.append(f"  {'verdicts per second':44s} {report['verdicts_per_s']:.1f}")
    if report["outcomes"]:
        lines.append(f"  {'no verdict, by reason':44s} {report['outcomes']}")
    for kind, k in report.get("by_kind", {}).items():
        lines.append(f"  {'exact, ' + kind:44s} {k['exact']:.3f} ({k['items']} items)")
    return "\n".join(lines)


def run_judge_eval(data: str, cfg, output: str) -> dict:
    """Builds cfg's judge as the trainer does, scores it on `data`, writes the outputs."""
    context = JudgeContext(policy=_policy(cfg) if "local" in cfg.judge.split("+") else None)
    judge = make_judge(cfg.judge, cfg.judge_options(), context, where="config field 'judge'")
    if judge is None:
        raise ValueError("config field 'judge': 'none' has nothing to evaluate")
    if hasattr(judge, "check_server"):
        judge.check_server("config field 'judge_url'")
    items = read_items(data, judge.step_mode)
    verdicts, seconds = evaluate_judge(judge, items)
    report = {"judge": repr(judge), "data": data, **score(items, verdicts), "by_kind": by_kind(items, verdicts),
              "seconds": seconds, "verdicts_per_s": len(items) / max(seconds, 1e-9), "judge_stats": judge.stats}
    write_outputs(output, report, items, verdicts)
    return report


def _policy(cfg):
    from ..tasks import load_policy
    return load_policy(cfg.model, dtype=cfg.dtype)


def _finite(x):
    """x with every non-finite float as None (JSON has no NaN)."""
    if isinstance(x, dict):
        return {k: _finite(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_finite(v) for v in x]
    return None if isinstance(x, float) and not math.isfinite(x) else x


def _atomic_write(path: str, text: str) -> None:
    with open(path + ".tmp", "w", encoding="utf-8") as f:
        f.write(text)
    os.replace(path + ".tmp", path)
