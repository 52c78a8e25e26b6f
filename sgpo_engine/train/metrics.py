"""Per-step metrics: OUTPUT/metrics.jsonl (one JSON object per step) and
TensorBoard when it is installed; sample completions: OUTPUT/completions.jsonl
(what the policy wrote, what the verifier and the judge said of it)."""
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


class CompletionLog:
    """OUTPUT/completions.jsonl: per step, the first `per_step` completions of
    this rank, one JSON object each (TRL's log_completions, as a file)."""

    def __init__(self, output: str, per_step: int, resume_step: int = 0):
        self.path = os.path.join(output, "completions.jsonl")
        self.per_step = per_step
        _truncate_after(self.path, resume_step)
        self.file = open(self.path, "a", encoding="utf-8")

    def write(self, step: int, examples, groups, rewards, advantages, tokenizer):
        """rewards: the SGPORewards of these groups; advantages [N], one per completion."""
        flat = [(ex, c) for ex, group in zip(examples, groups) for c in group][:self.per_step]
        rows = []
        for i, (ex, c) in enumerate(flat):  # completion i of the step: the rewards' index i too
            v = rewards.verdicts[i]
            rows.append({
                "step": step, "prompt": ex.prompt,
                "prompt_text": tokenizer.decode(c.prompt_ids, skip_special_tokens=False) if tokenizer else None,
                "completion": c.text, "finish_reason": c.finish_reason, "tokens": len(c.token_ids),
                "correct": bool(rewards.correct[i]), "reward": float(rewards.rewards[i]),
                "advantage": float(advantages[i]),
                "judge": None if v is None else {"first_error": v.first_error, "num_steps": v.num_steps,
                                                 "rts": None if v.failed else v.rts, "reason": v.reason}})
        for r in rows:
            self.file.write(json.dumps(r) + "\n")
        self.file.flush()

    def close(self):
        self.file.close()


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
