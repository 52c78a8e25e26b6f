"""Evaluation on the user's data.

    heldout.py     held-out accuracy, pass@k and the all-wrong rate: the trainer's
                   eval_every, `sgpo eval` and the warm start's per-k accuracy
    samplers.py    where the samples come from: a policy, or an OpenAI-compatible server
    report.py      `sgpo eval`: several models on the same problems, side by side
    curves.py      `sgpo plot`: the eval curves beside the training metrics that explain them
    judge_eval.py  `sgpo judge-eval`: how well a step judge finds first errors
"""
from .heldout import EvalSettings, Evaluation, evaluate, fixed_subset, pass_at_k, pass_ks
from .judge_eval import LabelledItem, read_items, run_judge_eval, score
from .samplers import ServerSampler, local_sampler

__all__ = ["EvalSettings", "Evaluation", "evaluate", "fixed_subset", "pass_at_k", "pass_ks", "LabelledItem",
           "read_items", "run_judge_eval", "score", "ServerSampler", "local_sampler"]
