"""Evaluation on the user's data: how well a judge finds first errors (judge_eval.py)."""
from .judge_eval import LabelledItem, read_items, run_judge_eval, score

__all__ = ["LabelledItem", "read_items", "run_judge_eval", "score"]
