"""The judge layer (docs/design.md sections 1 and 4.1): step splitting, RTS, step
judges, the answer verifier and SGPO rewards.

    split_steps(text, mode="paragraph") -> list[str]      step_spans(...) -> [(start, end)]
    rts(first_error, num_steps) -> float
    extract_answer(text, patterns=...) -> str | None       verify(response, gold, ...) -> bool
    Verdict(first_error, num_steps, rts, failed, reason, detail="")
    HTTPJudge(base_url, model, ...).judge(problems, responses, references=None)
    LocalJudge(policy, ...).judge(...)      FunctionJudge(fn, step_mode=...).judge(...)
    sgpo_rewards(problems, groups, golds, judge, scope="all_negative") -> SGPORewards
    make_judge(name, options, context) / JUDGES: the judges a config can name (registry.py)
"""
from .answer import DEFAULT_PATTERNS, extract_answer, normalize, verify
from .base import Judge
from .cache import VerdictCache, cache_key
from .function import FunctionJudge
from .http import HTTPJudge
from .local import LocalJudge
from .registry import JUDGES, JudgeContext, JudgeSpec, judge_names, make_judge
from .prompt import SYSTEM_PROMPT, judge_messages, neutralize, parse_reply
from .rewards import SCOPES, SGPORewards, judge_in_scope, sgpo_rewards
from .steps import MODES, rts, split_steps, step_spans
from .verdict import Verdict

__all__ = ["DEFAULT_PATTERNS", "extract_answer", "normalize", "verify", "Judge", "VerdictCache", "cache_key",
           "FunctionJudge", "HTTPJudge", "LocalJudge", "SYSTEM_PROMPT", "judge_messages", "neutralize",
           "parse_reply", "SCOPES", "SGPORewards", "judge_in_scope", "sgpo_rewards", "MODES", "rts", "split_steps", "step_spans",
           "Verdict", "JUDGES", "JudgeContext", "JudgeSpec", "judge_names", "make_judge"]
