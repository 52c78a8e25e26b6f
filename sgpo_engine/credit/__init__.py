"""SGPO credit (docs/design.md section 1): from outcomes and verdicts to advantages.

    CreditConfig(scope=..., credit=..., credit_beta=..., ...)     the settings and their defaults
    sgpo_advantages(rewards, correct, rts, group_offsets, config)  -> ops.GroupAdvantages
    score_groups(problems, groups, golds, judge, config)           -> ScoredGroups (verify, judge, credit)
    select_groups(parts, keep, config)                             some groups of several ScoredGroups, as one
    problem_text(prompt)                                           what the judge is told the problem is
    prefix_reach(...), token_advantages(...)                       step-level credit (prefix.py)

The engine's trainer, TRL's SGPOReward and verl's estimator all go through
here, so the rule exists once.
"""
from ..options import CREDIT, CreditConfig
from .prefix import prefix_reach, response_reach, step_token_bounds, token_advantages
from .score import ScoredGroups, problem_text, score_groups, select_groups, sgpo_advantages

__all__ = ["CREDIT", "CreditConfig", "ScoredGroups", "problem_text", "score_groups", "select_groups", "sgpo_advantages",
           "prefix_reach", "response_reach", "step_token_bounds", "token_advantages"]
