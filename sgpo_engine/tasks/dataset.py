"""Prompts from a dataset file (.jsonl or .parquet) as a Task: the generic
answer verifier (judge.verify), the judge the config names, and held-out
problems from a second file of the same format (config field eval_dataset)."""
from __future__ import annotations

import json
import os
import random
from typing import Optional

from ..judge import verify as verify_answer
from .base import Example, Task

_SUBSET_SEED = 0x5EED  # mixed into the config seed: the held-out subset is not the training order


def _check_prompt(prompt, where: str):
    if isinstance(prompt, str):
        if not prompt.strip():
            raise ValueError(f"{where}: empty prompt")
        return
    if isinstance(prompt, list) and prompt and all(
            isinstance(m, dict) and isinstance(m.get("role"), str) and isinstance(m.get("content"), str)
            for m in prompt):
        return
    raise ValueError(f"{where}: prompt must be a non-empty string or a list of "
                     "{'role': str, 'content': str} messages")


def read_rows(path: str, what: str = "dataset") -> list[tuple[str, dict]]:
    """[(where, row)] from a .jsonl or .parquet file; `where` names the line or row, `what` the
    setting that named the file (for the error when there is none)."""
    if not os.path.isfile(path):
        raise ValueError(f"{what}: no such file {path}")
    if path.endswith(".parquet"):
        try:
            import pyarrow.parquet as pq
        except ImportError:
            raise ValueError(f"{path}: reading Parquet needs pyarrow (pip install pyarrow)") from None
        return [(f"{path} row {i}", r) for i, r in enumerate(pq.read_table(path).to_pylist())]
    rows = []
    with open(path, encoding="utf-8") as f:
        for n, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as e:
                raise ValueError(f"{path}:{n}: invalid JSON ({e.msg})") from None
            if not isinstance(row, dict):
                raise ValueError(f"{path}:{n}: expected a JSON object per line")
            rows.append((f"{path}:{n}", row))
    return rows


class JsonlSource:
    """Examples from a JSONL (or Parquet) file, reshuffled each epoch by seed."""

    def __init__(self, path: str, prompt_field="prompt", answer_field="answer",
                 reference_field: Optional[str] = "reference", seed: int = 0, group_field: Optional[str] = None):
        self.examples, self.where = [], []  # where: each example's file:line (or row), for errors
        for where, row in read_rows(path):
            for name in (prompt_field, answer_field, *([group_field] if group_field else [])):
                if name not in row:
                    raise ValueError(f"{where}: missing field '{name}'")
            _check_prompt(row[prompt_field], where)
            if row[answer_field] is None:
                raise ValueError(f"{where}: field '{answer_field}' is null")
            ref = row.get(reference_field) if reference_field else None
            if ref is not None and not isinstance(ref, str):
                raise ValueError(f"{where}: field '{reference_field}' must be a string")
            meta = {"group": str(row[group_field])} if group_field else {}
            self.examples.append(Example(row[prompt_field], row[answer_field], ref, meta))
            self.where.append(where)
        if not self.examples:
            raise ValueError(f"{path}: no examples")
        self.seed = seed

    def check_prompts(self, policy, chat_template: bool) -> None:
        """Every prompt encodes (the model has a tokenizer, and a chat template
        when one is used) and leaves room to generate within the model's
        context: one error naming the row before training, not at step N."""
        from ..generation.generate import encode_prompt
        context = policy.config.max_position_embeddings
        for ex, where in zip(self.examples, self.where):
            try:
                n = len(encode_prompt(policy, ex.prompt, chat_template))
            except ValueError as e:
                raise ValueError(f"{where}: {e}") from None
            if n >= context:
                raise ValueError(f"{where}: the prompt is {n} tokens, and the model's context is {context} "
                                 "(max_position_embeddings): shorten or drop it")

    def batch(self, step: int, n: int) -> list[Example]:
        """The n examples of training step `step` (0-based): consecutive slices of
        per-epoch permutations of the dataset."""
        N = len(self.examples)
        out = []
        for i in range(step * n, (step + 1) * n):
            epoch, pos = divmod(i, N)
            order = list(range(N))
            random.Random(self.seed * 1_000_003 + epoch).shuffle(order)
            out.append(self.examples[order[pos]])
        return out


class DatasetTask(Task):
    """The examples of config field `dataset` (a file), and the held-out ones of
    `eval_path` (config field eval_dataset; "": none); JsonlSource reads them
    when asked. group_field: the held-out rows' field the evaluation breaks down by."""

    verify = staticmethod(verify_answer)

    def __init__(self, path: str, prompt_field: str = "prompt", answer_field: str = "answer",
                 reference_field: Optional[str] = "reference", seed: int = 0, eval_path: str = "",
                 group_field: Optional[str] = None):
        self.path, self.prompt_field, self.answer_field = path, prompt_field, answer_field
        self.reference_field, self.seed = reference_field, seed
        self.eval_path, self.group_field = eval_path, group_field

    def source(self) -> JsonlSource:
        return JsonlSource(self.path, self.prompt_field, self.answer_field, self.reference_field, self.seed)

    @property
    def has_evaluation(self) -> bool:
        return bool(self.eval_path)

    def heldout(self, n: int, seed: int) -> list[Example]:
        """A fixed, seeded subset of n rows of eval_path (0: all), in file order."""
        if not self.eval_path:
            return []
        from ..evaluation.heldout import fixed_subset
        rows = JsonlSource(self.eval_path, self.prompt_field, self.answer_field, self.reference_field,
                           group_field=self.group_field)
        return [rows.examples[i] for i in fixed_subset(len(rows.examples), n, seed * 1_000_003 + _SUBSET_SEED)]
