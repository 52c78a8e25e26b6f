"""CascadeJudge: cheap judges first, the next one only where they cannot settle it.

    CascadeJudge([CalcJudge(), HTTPJudge(url, model)]).judge(problems, responses, references)

For each response the first judge's verdict stands when it judged the response
(named a first error, or found none where a checker can say so); a response it
could not settle (a failed verdict, "no_error_found" included) goes to the next
judge, and so on; the last judge's verdict stands. So with judge = "calc+http"
the LLM is asked only when the arithmetic does not settle the response.

Each judge splits the response with its own step mode; for the verdicts to be
comparable the judges of a cascade must share one (checked here).
"""
from __future__ import annotations

from typing import Optional, Sequence

from .base import Judge
from .verdict import Verdict


class CascadeJudge:
    """A judge made of judges (module docstring); `.stats` per stage."""

    def __init__(self, judges: Sequence[Judge]):
        if len(judges) < 2:
            raise ValueError(f"judges: a cascade needs at least two, got {len(judges)}")
        modes = {repr(j.step_mode) for j in judges}
        if len(modes) > 1:
            raise ValueError(f"judges: a cascade's judges must split steps alike, got step modes {sorted(modes)}")
        self.judges = list(judges)
        self.step_mode = judges[0].step_mode
        self.answered = [0] * len(judges)  # verdicts that stood, per stage

    def judge(self, problems: Sequence[str], responses: Sequence[str],
              references: Optional[Sequence[Optional[str]]] = None) -> list[Verdict]:
        refs = list(references) if references is not None else [None] * len(responses)
        out: list[Optional[Verdict]] = [None] * len(responses)
        todo = list(range(len(responses)))
        for stage, judge in enumerate(self.judges):
            last = stage == len(self.judges) - 1
            verdicts = judge.judge([problems[i] for i in todo], [responses[i] for i in todo],
                                   [refs[i] for i in todo])
            left = []
            for i, v in zip(todo, verdicts):
                if v.failed and not last:
                    left.append(i)
                else:
                    out[i] = v
                    self.answered[stage] += 1
            todo = left
            if not todo:
                break
        return out

    def check_server(self, where: str) -> None:
        for j in self.judges:
            if hasattr(j, "check_server"):
                j.check_server(where)

    @property
    def stats(self) -> dict:
        """The cascade's counts (responses reach the first stage; each is judged by at most one
        stage; what the last stage failed stays failed), and each stage's own stats."""
        stages = [j.stats for j in self.judges]
        total = {"responses": stages[0]["responses"], "judged": sum(s["judged"] for s in stages),
                 "failed": stages[-1]["failed"], "cache_hits": sum(s["cache_hits"] for s in stages),
                 "requests": sum(s["requests"] for s in stages), "failures": dict(stages[-1]["failures"])}
        total["stages"] = [{"judge": repr(j), "answered": n, **s} for j, n, s in zip(self.judges, self.answered, stages)]
        return total

    def reset_stats(self) -> None:
        for j in self.judges:
            j.reset_stats()
        self.answered = [0] * len(self.judges)

    def __repr__(self) -> str:
        return "CascadeJudge(" + ", ".join(repr(j) for j in self.judges) + ")"
