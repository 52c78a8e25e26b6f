"""The built-in +/- chain task (arith.py) as a Task: fresh problems per step,
the exact verifier and step judge, the anti-gaming metrics (premature answers,
correct prefix) and the held-out problems per k (`heldout`), scored by
sgpo_engine.evaluation with the same two metrics."""
from __future__ import annotations

from typing import Sequence

from .arith import (ArithTask, correct_prefix, eval_set, exact_judge, extract_answer, premature_answer,
                    verify as verify_answer)
from .base import Example, Task

BUILTIN = "builtin:arith"   # the config value (dataset, model) naming this task and its warm start


def max_new_tokens_for(k: int) -> int:
    """Room for the longest correct response of k operations (9 characters per
    line, `#NN`, EOS) plus a little."""
    return 9 * k + 8


def heldout_examples(ks: Sequence[int], n: int) -> list[Example]:
    """n held-out problems per k (arith.eval_set, seed 0: the same for every run
    and seed, so runs compare on the same problems), grouped "k{k}"."""
    return [Example(p.prompt, p.answer, p.reference, {"problem": p, "k": k, "group": f"k{k}",
                                                      "max_new_tokens": max_new_tokens_for(k)})
            for k in ks for p in eval_set(k, n, seed=0)]


class ArithSource:
    """The built-in task's prompts: fresh problems per step."""

    def __init__(self, min_ops: int, max_ops: int, seed: int = 0):
        self.min_ops, self.max_ops, self.seed = min_ops, max_ops, seed

    def batch(self, step: int, n: int) -> list[Example]:
        task = ArithTask(self.min_ops, self.max_ops, seed=self.seed * 1_000_003 + step)
        return [Example(p.prompt, p.answer, p.reference, {"problem": p, "k": p.k}) for p in task.batch(n)]


class BuiltinTask(Task):
    """Problems with k in min_ops..max_ops; judge "builtin" is the exact step judge."""

    has_evaluation = True  # held-out problems by construction (arith.is_heldout)
    verify = staticmethod(verify_answer)

    def extract_answer(self, text: str):
        return extract_answer(text)

    def __init__(self, min_ops: int, max_ops: int, seed: int = 0):
        self.min_ops, self.max_ops, self.seed = min_ops, max_ops, seed

    def source(self) -> ArithSource:
        return ArithSource(self.min_ops, self.max_ops, self.seed)

    def builtin_judge(self):
        return exact_judge()

    def metric_sums(self, examples, groups) -> dict[str, float]:
        """Premature answers and correct-prefix shares (the mean RTS of all
        responses) beside accuracy: the anti-gaming view."""
        sums = {"premature_answer": 0.0, "correct_prefix": 0.0, "responses": 0.0}
        for e, g in zip(examples, groups):
            if "problem" not in e.meta:  # a custom source's example (config dataset left at builtin)
                continue
            for c in g:
                sums["premature_answer"] += premature_answer(c.text, e.meta["problem"])
                sums["correct_prefix"] += correct_prefix(c.text, e.meta["problem"])
                sums["responses"] += 1
        return sums

    def metrics(self, sums: dict[str, float]) -> dict[str, float]:
        n = max(sums["responses"], 1)
        return {"premature_answer_frac": sums["premature_answer"] / n,
                "correct_prefix_frac": sums["correct_prefix"] / n}

    def heldout(self, n: int, seed: int) -> list[Example]:
        """n problems per k of min_ops..max_ops (config field eval_problems is per k here)."""
        return heldout_examples(range(self.min_ops, self.max_ops + 1), n or 100)

    def sample_metrics(self, text: str, example: Example) -> dict[str, float]:
        p = example.meta["problem"]
        return {"correct_prefix": correct_prefix(text, p), "premature_answer": float(premature_answer(text, p))}
