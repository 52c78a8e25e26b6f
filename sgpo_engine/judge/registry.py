"""The judges a run can name, and how each is built from its options.

    JUDGES["http"].options        -> ("url", "model", ...): the settings it reads
    judge_names()                 -> ("builtin", "http", "local", "prm", "calc", "none", "calc+http", ...)
    judges_help()                 -> one line per judge, for --help
    make_judge("http", {"url": ..., "model": ...}, where=...)  -> an HTTPJudge

Every place that lets a user pick a judge by name reads this table: the
training config (`judge = "http"`, its `judge_<option>` fields), verl's
`algorithm.sgpo.judge`, TRL's `SGPOReward(judge="http", judge_options=...)`
and the command line. Adding a judge is its module plus one line here
(docs/design.md section 7.4).

A builder gets the options given (only those the judge reads; missing
required ones are an error naming them) and a `JudgeContext`: the engine's
policy, for a judge that runs on it, and the task's own judge, for "builtin".
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Optional

from .base import Judge


@dataclass(frozen=True)
class JudgeContext:
    """What some judges need besides their options."""
    policy: Any = None                                   # the engine's model ("local" judges with it)
    task_judge: Optional[Callable[[], Optional[Judge]]] = None  # the task's own checker ("builtin")


@dataclass(frozen=True)
class JudgeSpec:
    build: Callable[[dict, JudgeContext], Optional[Judge]]
    about: str                                           # one line for --help and the docs
    options: tuple[str, ...] = ()                        # the settings it reads
    required: tuple[str, ...] = ()                       # of those, the ones without a default
    needs_judge: bool = True                             # False: no judge at all (scope must be off)


def _builtin(opts: dict, ctx: JudgeContext) -> Optional[Judge]:
    judge = ctx.task_judge() if ctx.task_judge is not None else None
    if judge is None:
        raise ValueError("'builtin' is the built-in task's checker; with your own dataset use "
                         f"one of {', '.join(n for n in JUDGES if n != 'builtin')}")
    return judge


def _http(opts: dict, ctx: JudgeContext) -> Judge:
    from .http import HTTPJudge
    o = dict(opts)
    return HTTPJudge(o.pop("url"), o.pop("model"), **o)


def _local(opts: dict, ctx: JudgeContext) -> Judge:
    from .local import LocalJudge
    if ctx.policy is None:
        raise ValueError("'local' judges with the engine's own model, and none was given")
    return LocalJudge(ctx.policy, **opts)


def _prm(opts: dict, ctx: JudgeContext) -> Judge:
    from .prm import PRMJudge
    o = dict(opts)
    return PRMJudge(o.pop("url"), o.pop("model"), **o)


def _calc(opts: dict, ctx: JudgeContext) -> Judge:
    from .calc import CalcJudge
    return CalcJudge(**opts)


def _cascade(*names: str) -> JudgeSpec:
    """The judges `names` in a cascade (cascade.py): each reads its own options from one dict."""
    specs = [JUDGES[n] for n in names]

    def build(opts: dict, ctx: JudgeContext):
        from .cascade import CascadeJudge
        return CascadeJudge([s.build({o: opts[o] for o in s.options if o in opts}, ctx) for s in specs])

    options = tuple(dict.fromkeys(o for s in specs for o in s.options))
    required = tuple(dict.fromkeys(o for s in specs for o in s.required))
    return JudgeSpec(build, " first, then ".join(names) + " where " + names[0] + " finds no wrong step",
                     options, required)


JUDGES: dict[str, JudgeSpec] = {
    "builtin": JudgeSpec(_builtin, "the built-in task's exact step checker (builtin:arith only)"),
    "http": JudgeSpec(_http, "an LLM judge behind any OpenAI-compatible server (vLLM, SGLang, an API, sgpo serve)",
                      ("url", "model", "api_key_env", "concurrency", "timeout", "max_tokens", "step_mode"),
                      ("url", "model")),
    "local": JudgeSpec(_local, "the policy itself, judging its own responses", ("step_mode",)),
    "prm": JudgeSpec(_prm, "a process reward model behind vLLM's pooling API (one score per step)",
                     ("url", "model", "api_key_env", "concurrency", "timeout", "step_mode", "threshold",
                      "step_separator"), ("url", "model")),
    "calc": JudgeSpec(_calc, "checks the arithmetic each step states, exactly (free; GSM8K-style reasoning)",
                      ("step_mode",)),
    "none": JudgeSpec(lambda opts, ctx: None, "no judge: plain GRPO (scope = off)", needs_judge=False),
}
JUDGES["calc+http"] = _cascade("calc", "http")
JUDGES["calc+local"] = _cascade("calc", "local")
JUDGES["calc+prm"] = _cascade("calc", "prm")


def judge_names() -> tuple[str, ...]:
    return tuple(JUDGES)


def judges_help(option_name: Callable[[str], str] = lambda o: o) -> str:
    """One line per judge for --help: its name, what it is, and the options it reads
    (option_name(o): how the caller spells option o; required ones marked *)."""
    width = max(map(len, JUDGES))
    lines = []
    for name, spec in JUDGES.items():
        opts = ", ".join(option_name(o) + ("*" if o in spec.required else "") for o in spec.options)
        lines.append(f"  {name:{width}s}  {spec.about}" + (f" ({opts})" if opts else ""))
    return "\n".join(lines)


def judge_spec(name: str, where: str = "judge") -> JudgeSpec:
    if name not in JUDGES:
        raise ValueError(f"{where}: expected one of {judge_names()}, got {name!r}")
    return JUDGES[name]


def check_judge(name: str, options: dict, where: str = "judge",
                option_name: Callable[[str], str] = lambda o: o) -> JudgeSpec:
    """The spec of `name`, after checking that every required option is given (not None or "").
    option_name(o) names an option in the error ("config field 'judge_url'")."""
    spec = judge_spec(name, where)
    missing = [o for o in spec.required if options.get(o) in (None, "")]
    if missing:
        names = " and ".join(option_name(o) for o in missing)
        raise ValueError(f"{where}: {name!r} needs {names}")
    return spec


def make_judge(name: str, options: Optional[dict] = None, context: JudgeContext = JudgeContext(), *,
               where: str = "judge", option_name: Callable[[str], str] = lambda o: o) -> Optional[Judge]:
    """The judge `name`, built from the options it reads (others are ignored: a config carries
    every judge's fields). Unknown names and missing options are ValueErrors naming `where`."""
    options = options or {}
    spec = check_judge(name, options, where, option_name)
    picked = {o: options[o] for o in spec.options if options.get(o) is not None}
    try:
        return spec.build(picked, context)
    except ValueError as e:
        raise ValueError(f"{where}: {e}") from None
