"""The task interface: what the trainer knows of the task it trains on.

A `Task` gives the trainer
  - `source()`: the prompt source, an object with `.batch(step, n) -> [Example]`;
  - `verify(text, answer) -> bool`: the exact answer check;
  - `builtin_judge()`: the task's own step checker, what `judge = "builtin"` names
    (None: the task has none; the other judges come from judge.registry);
  - `metric_sums(examples, groups)`: this rank's share of the task's own metrics,
    as named sums (the trainer adds them over ranks), and `metrics(sums)`: the
    metrics those totals give;
  - `evaluate(policy, n)`: held-out evaluation metrics, where `has_evaluation`.

A prompt source returns the prompts of step s deterministically from (seed, s),
so a resumed run sees exactly the prompts an uninterrupted one would have, and
ranks can split a step's prompts without talking to each other. The two tasks
(`make_task(cfg)` picks one):

    BuiltinTask(min_ops, max_ops, seed)      the built-in +/- chain task (ArithSource)
    DatasetTask(path, prompt_field, answer_field, reference_field, seed)
                                             a .jsonl / .parquet file (JsonlSource)
"""
from __future__ import annotations

import abc
from dataclasses import dataclass, field
from typing import Any, Optional, Union


@dataclass
class Example:
    prompt: Union[str, list]   # a string, or chat messages [{"role", "content"}]
    answer: Any
    reference: Optional[str] = None
    meta: dict = field(default_factory=dict)


class Task(abc.ABC):
    """The interface, with the defaults of a task without metrics or
    evaluation of its own; subclasses must give `source` and `verify`."""

    has_evaluation = False

    @abc.abstractmethod
    def source(self):
        """A new prompt source: `.batch(step, n) -> list[Example]`."""

    @abc.abstractmethod
    def verify(self, text: str, answer) -> bool:
        """Whether a response's final answer is `answer`."""

    def builtin_judge(self):
        """The task's own step judge (config `judge = "builtin"`), or None when it has none."""
        return None

    def metric_sums(self, examples: list[Example], groups) -> dict[str, float]:
        """Named sums over this rank's examples and their completion groups;
        the same names on every rank (the trainer adds them over ranks)."""
        return {}

    def metrics(self, sums: dict[str, float]) -> dict[str, float]:
        """The task's metrics from the sums of `metric_sums` over all ranks."""
        return {}

    def evaluate(self, policy, n: int) -> dict[str, float]:
        """Held-out metrics of `policy` on n problems (per difficulty where the
        task has them); {} without an evaluation."""
        return {}
