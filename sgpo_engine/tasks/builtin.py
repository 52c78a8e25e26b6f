"""The built-in +/- chain task (arith.py) as a Task: fresh problems per step,
the exact verifier and step judge, the anti-gaming metrics (premature answers,
correct prefix) and the held-out greedy evaluation per k (warmup.evaluate)."""
from __future__ import annotations

from .arith import ArithTask, correct_prefix, exact_judge, premature_answer, verify as verify_answer
from .base import Example, Task
from .warmup import evaluate as evaluate_greedy

BUILTIN = "builtin:arith"   # the config value (dataset, model) naming this task and its warm start


class ArithSource:
    """The built-in task's prompts: fresh problems per step."""

    def __init__(self, min_ops: int, max_ops: int, seed: int = 0):
        self.min_ops, self.max_ops, self.seed = min_ops, max_ops, seed

    def batch(self, step: int, n: int) -> list[Example]:
        task = ArithTask(self.min_ops, self.max_ops, seed=self.seed * 1_000_003 + step)
        return [Example(p.prompt, p.answer, p.reference, {"problem": p, "k": p.k}) for p in task.batch(n)]


class BuiltinTask(Task):
    """Problems with k in min_ops..max_ops; judge "builtin" is the exact step judge."""

    has_evaluation = True
    verify = staticmethod(verify_answer)

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

    def evaluate(self, policy, n: int) -> dict[str, float]:
        """Greedy accuracy, correct prefix and premature answers on n held-out
        problems per k (eval_k{k}_{name}), and their mean accuracy (eval_accuracy)."""
        res = evaluate_greedy(policy, ks=range(self.min_ops, self.max_ops + 1), n=n)
        flat = {f"eval_{k}_{name}": v for k, d in res.items() for name, v in d.items()}
        if flat:
            flat["eval_accuracy"] = sum(d["accuracy"] for d in res.values()) / len(res)
        return flat
