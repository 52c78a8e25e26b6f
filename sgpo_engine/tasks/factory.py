"""What a TrainConfig names: its task (`dataset`) and its policy (`model`)."""
from __future__ import annotations

from ..model import load
from .base import Task
from .builtin import BUILTIN, BuiltinTask
from .dataset import DatasetTask
from .warmup import load_warm_start


def make_task(cfg) -> Task:
    """The built-in task for dataset = builtin:arith, else the dataset file's."""
    if cfg.dataset == BUILTIN:
        return BuiltinTask(cfg.task_min_ops, cfg.task_max_ops, cfg.seed)
    return DatasetTask(cfg.dataset, cfg.prompt_field, cfg.answer_field, cfg.reference_field, cfg.seed,
                       eval_path=cfg.eval_dataset, group_field=cfg.eval_group_field or None)


def load_policy(model: str, dtype=None, device=None):
    """The shipped warm start for model = builtin:arith, else the HF folder `model`
    (what `sgpo train`, `sgpo generate` and `sgpo serve` accept as --model)."""
    if model == BUILTIN:
        return load_warm_start(dtype=dtype, device=device)
    return load(model, dtype=dtype, device=device)
