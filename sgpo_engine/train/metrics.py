"""Per-step metrics: OUTPUT/metrics.jsonl (one JSON object per step) and
TensorBoard when it is installed."""
from __future__ import annotations

import json
import math
import os


class MetricsWriter:
    def __init__(self, output: str, tensorboard: bool = True, resume_step: int = 0):
        os.makedirs(output, exist_ok=True)
        self.path = os.path.join(output, "metrics.jsonl")
        _truncate_after(self.path, resume_step)  # a resumed run rewrites the steps it redoes
        self.file = open(self.path, "a", encoding="utf-8")
        self.tb = None
        if tensorboard:
            try:
                from torch.utils.tensorboard import SummaryWriter
                self.tb = SummaryWriter(os.path.join(output, "tensorboard"))
            except Exception:  # tensorboard not installed: jsonl only
                self.tb = None

    def write(self, metrics: dict):
        clean = {k: (None if isinstance(v, float) and not math.isfinite(v) else v) for k, v in metrics.items()}
        self.file.write(json.dumps(clean) + "\n")
        self.file.flush()
        if self.tb is not None:
            for k, v in metrics.items():
                if isinstance(v, (int, float)) and k != "step" and math.isfinite(v):
                    self.tb.add_scalar(k, v, metrics["step"])

    def close(self):
        self.file.close()
        if self.tb is not None:
            self.tb.close()


def _truncate_after(path: str, step: int):
    if not os.path.exists(path):
        return
    keep = []
    with open(path, encoding="utf-8") as f:
        for line in f:
            try:
                row = json.loads(line)
            except json.JSONDecodeError:
                continue  # blank, or torn by a crash in the middle of a write
            if isinstance(row, dict) and row.get("step", 0) <= step:
                keep.append(line if line.endswith("\n") else line + "\n")
    tmp = path + ".tmp"
    with open(tmp, "w", encoding="utf-8") as f:
        f.writelines(keep)
    os.replace(tmp, path)
