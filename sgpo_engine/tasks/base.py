"""The task interface: what the trainer knows of the task it trains on.

A `Task` gives the trainer
  - `source()`: the prompt source, an object with `.batch(step, n) -> [Example]`;
  - `verify(text, answer) -> bool`: the exact answer check;
  - `builtin_judge()`: the task's own step checker, what `judge = "builtin"` names
    (None: the task has none; the other judges come from judge.registry);
  - `metric_sums(examples, groups)`: this rank's share of the task's own metrics,
    as named sums (the trainer adds them over ranks), and `metrics(sums)`: the
    metrics those totals give;
  - `heldout(n, seed)`: a fixed, seeded set of held-out Examples (empty: the
    task has none), and `sample_metrics(text, example)`: the task's own
    per-sample evaluation metrics; sgpo_engine.evaluation scores them.

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

    @property
    def has_evaluation(self) -> bool:
        """Whether `heldout` has problems (config field `eval_every` needs them)."""
        return False

    @abc.abstractmethod
    def source(self):
        """A new prompt source: `.batch(step, n) -> list[Example]`."""

    @abc.abstractmethod
    def verify(self, text: str, answer) -> bool:
        """Whether a response's final answer is `answer`."""

    def extract_answer(self, text: str):
        """The final answer a response gives (what `verify` compares), for evaluation reports."""
        from ..judge import extract_answer
        return extract_answer(text)

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

    def heldout(self, n: int, seed: int) -> list[Example]:
        """n held-out problems (0: all), the same for the same (n, seed): after a
        resume and on every rank. An Example's meta may name its "group" (the
        evaluation's breakdown) and its own "max_new_tokens"."""
        return []

    def sample_metrics(self, text: str, example: Example) -> dict[str, float]:
        """The task's own metrics of one held-out sample (averaged over samples)."""
        return {}
