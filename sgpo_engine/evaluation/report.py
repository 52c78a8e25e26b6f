"""`sgpo eval`: one or more models (folders, builtin:arith, or an
OpenAI-compatible server) on the same held-out problems, side by side.

    sgpo eval --model base/ --model runs/gsm8k-sgpo/checkpoint-100 \
              --dataset examples/data/gsm8k_heldout.jsonl --prompt-field question --chat-template -k 4 --temperature 1
    sgpo eval --server http://127.0.0.1:8000/v1 --served-model policy --dataset FILE

Writes OUTPUT/report.json (the settings, and per model its metrics and
seconds), OUTPUT/NAME.jsonl per model (one row per problem: prompt, the
completions, each one's extracted answer and whether it is correct) and prints
a table. The problems, their sampling streams and the metrics are the
trainer's (heldout.py), so `sgpo eval` on a checkpoint reproduces the run's
own eval/ numbers.
"""
from __future__ import annotations

import json
import os
import re
import sys
import time
from dataclasses import asdict, dataclass
from typing import Optional

from .heldout import EvalSettings, evaluate
from .samplers import ServerSampler, local_sampler


@dataclass
class Candidate:
    """One column of the report: a model folder (or builtin:arith), or a served model."""
    label: str
    model: Optional[str] = None
    server: Optional[str] = None
    served_model: Optional[str] = None

    def sampler(self, dtype, device):
        if self.server:
            sampler = ServerSampler(self.server, self.served_model)
            sampler.check()
            return sampler
        from ..tasks.factory import load_policy
        return local_sampler(load_policy(self.model, dtype=dtype, device=device))


def candidates(models: list[str], server: Optional[str], served_model: Optional[str]) -> list[Candidate]:
    """The report's columns, with distinct labels (a folder's last two path parts where needed)."""
    if bool(server) != bool(served_model):
        raise ValueError("--server and --served-model go together")
    out, seen = [], set()
    for m in models:
        label = _label(m, models)
        label = label if label not in seen else f"{label}#{len(seen) + 1}"
        seen.add(label)
        out.append(Candidate(label, model=m))
    if server:
        out.append(Candidate(f"server:{served_model}", server=server, served_model=served_model))
    if not out:
        raise ValueError("give --model DIR (repeatable) or --server URL --served-model NAME")
    return out


def _label(model: str, models: list[str]) -> str:
    parts = os.path.normpath(model).split(os.sep)
    short = parts[-1]
    if sum(os.path.normpath(m).split(os.sep)[-1] == short for m in models) > 1:
        short = "/".join(parts[-2:])
    return short


def run_eval(task, columns: list[Candidate], settings: EvalSettings, problems: int, seed: int, output: str,
             dtype=None, device=None, log=None) -> dict:
    """Evaluates every column on task.heldout(problems, seed); writes the report and
    per-problem rows; returns the report."""
    log = log or (lambda msg: print(msg, file=sys.stderr, flush=True))
    examples = task.heldout(problems, seed)
    if not examples:
        raise ValueError("--dataset: no held-out problems")
    os.makedirs(output, exist_ok=True)
    report = {"settings": {**asdict(settings), "problems": len(examples), "subset_seed": seed},
              "models": {}, "seconds": {}, "files": {}}
    for col in columns:
        t0 = time.perf_counter()
        sample = col.sampler(dtype, device)
        log(f"eval {col.label}: {len(examples)} problems x {settings.num_samples} sample(s)")
        result = evaluate(sample, examples, settings, task.verify, task.sample_metrics,
                          log=lambda msg: log(f"  {col.label} {msg}"))
        report["models"][col.label] = result.metrics
        report["seconds"][col.label] = round(time.perf_counter() - t0, 1)
        path = os.path.join(output, _file_name(col.label) + ".jsonl")
        _write_rows(path, [{**r.as_json(examples[r.index]),
                            "answers": [_jsonable(task.extract_answer(t)) for t in r.texts]}
                           for r in result.records])
        report["files"][col.label] = os.path.basename(path)
    _write_json(os.path.join(output, "report.json"), report)
    return report


def table(report: dict) -> str:
    """The models side by side: one row per overall metric, then the per-group accuracy."""
    labels = list(report["models"])
    metrics = report["models"]
    names = [k for k in next(iter(metrics.values())) if k.count("/") == 1]
    groups = [k for k in next(iter(metrics.values())) if k.count("/") == 2 and k.endswith("/accuracy")]
    w = max(len(n) for n in names + groups)
    cols = [max(10, len(label)) for label in labels]
    lines = [f"{'':{w}s}  " + "  ".join(f"{label:>{c}s}" for label, c in zip(labels, cols))]
    for name in names + groups:
        cells = [metrics[label].get(name) for label in labels]
        lines.append(f"{name:{w}s}  " + "  ".join(
            f"{'-':>{c}s}" if v is None else f"{v:>{c}d}" if isinstance(v, int) else f"{v:>{c}.3f}"
            for v, c in zip(cells, cols)))
    s = report["settings"]
    lines.append(f"({s['problems']} problems, {s['num_samples']} sample(s) each at temperature {s['temperature']:g}, "
                 f"max {s['max_new_tokens']} new tokens)")
    return "\n".join(lines)


def _file_name(label: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", label).strip("_") or "model"


def _jsonable(v):
    return v if v is None or isinstance(v, (str, int, float, bool)) else str(v)


def _write_rows(path: str, rows: list[dict]) -> None:
    tmp = path + ".tmp"
    with open(tmp, "w", encoding="utf-8") as f:
        for row in rows:
            f.write(json.dumps(row, default=str) + "\n")
    os.replace(tmp, path)


def _write_json(path: str, obj) -> None:
    tmp = path + ".tmp"
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump(obj, f, indent=1)
    os.replace(tmp, path)
