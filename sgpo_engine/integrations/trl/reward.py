"""SGPOReward: SGPO rewards as a reward function of TRL's GRPOTrainer.

    reward = SGPOReward(HTTPJudge(url, model))           # any sgpo_engine judge, or a registry name:
    reward = SGPOReward("http", judge_options={"url": url, "model": model}, scope="all_negative")

TRL calls `reward(prompts=..., completions=..., answer=[...], log_metric=..., **kw)`
with this process's completions, the G = num_generations completions of each
prompt next to each other. SGPOReward verifies every answer, sends the
incorrect responses in scope to the judge, and returns per completion:
correct_reward if correct, the SGPO credit of its RTS if judged (section 1 of
docs/design.md), else incorrect_reward. These are exactly the rewards
`credit.sgpo_advantages` uses, so TRL's group normalization
(`scale_rewards="group"`) then gives its advantages.

A group of G completions may span processes: under torch.distributed every
process's completions are gathered, rank 0 verifies and judges all groups
(each once, whole) and the rewards are broadcast back. Judge failures never
raise: they keep the outcome reward and are logged through TRL's log_metric
("sgpo/judge_failures", with "sgpo/judged", "sgpo/all_negative_frac" and
"sgpo/credited_frac").

`score(...)` returns the rewards with the verdicts of this process's
completions (`SGPOScores`); `__call__` is TRL's interface to it. A caller that
needs the verdicts of the calls TRL makes (SGPOGRPOTrainer's step-level
credit) opens `with reward.collect() as scores:` around them: each call inside
the block appends its SGPOScores to that list, and nothing is kept after it.
"""
from __future__ import annotations

import contextlib
import dataclasses
from dataclasses import dataclass
from typing import Callable, Optional, Sequence

import torch

from ...credit import CreditConfig, problem_text, score_groups
from ...judge import JudgeContext, make_judge
from ...judge import verify as verify_answer


def completion_text(completion) -> str:
    """TRL's completion: a string, or chat messages (the last message's content)."""
    if isinstance(completion, str):
        return completion
    if isinstance(completion, Sequence) and completion and isinstance(completion[-1], dict):
        return str(completion[-1].get("content", ""))
    raise ValueError(f"completions: expected a str or chat messages, got {type(completion).__name__}")


def group_offsets(prompts: Sequence, num_generations: Optional[int]) -> list[int]:
    """Offsets [P+1] of the groups: fixed size G, or runs of equal prompts
    (TRL repeats each prompt G times in a row)."""
    n = len(prompts)
    if num_generations:
        if n % num_generations:
            raise ValueError(f"num_generations: {n} completions are not whole groups of {num_generations}")
        return list(range(0, n + 1, num_generations))
    offsets = [0]
    for i in range(1, n):
        if prompts[i] != prompts[i - 1]:
            offsets.append(i)
    return offsets + [n]


def _world():
    dist = torch.distributed
    if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
        return dist, dist.get_rank(), dist.get_world_size()
    return None, 0, 1


@dataclass
class SGPOScores:
    """One call's result for this process's completions."""
    rewards: list[float]   # [B] the SGPO rewards TRL normalizes
    texts: list[str]       # [B] the completions' text, as judged
    verdicts: list         # [B] a Verdict where judged, else None
    stats: dict            # what goes to log_metric, over every process's completions


_CREDIT_FIELDS = {f.name for f in dataclasses.fields(CreditConfig)}


class SGPOReward:
    """A reward function for TRL's GRPOTrainer (module docstring). `judge`: a judge object
    (anything with .judge(problems, responses, references)), a judge name of
    sgpo_engine.judge.JUDGES with `judge_options`, or None with scope "off". The SGPO settings
    are CreditConfig's fields (scope, credit, credit_beta, credit_gamma, credit_scale,
    correct_reward, incorrect_reward, credit_assignment, ...), as keywords or as `config`."""

    def __init__(self, judge, *, verifier: Optional[Callable] = None, answer_field: str = "answer",
                 num_generations: Optional[int] = None, reference_field: Optional[str] = None,
                 judge_options: Optional[dict] = None, config: Optional[CreditConfig] = None, **settings):
        unknown = sorted(set(settings) - _CREDIT_FIELDS)
        if unknown:
            raise ValueError(f"{unknown[0]}: not an SGPOReward setting (the settings: {', '.join(sorted(_CREDIT_FIELDS))})")
        self.config = dataclasses.replace(config or CreditConfig(), **settings).validated()
        if isinstance(judge, str):
            judge = make_judge(judge, judge_options, JudgeContext(), where="judge")
        if self.config.scope != "off" and judge is None:
            raise ValueError(f"judge: scope {self.config.scope!r} needs a judge (or pass scope='off')")
        if num_generations is not None and (not isinstance(num_generations, int) or num_generations < 1):
            raise ValueError(f"num_generations: expected a positive int, got {num_generations!r}")
        self.judge, self.verifier = judge, verifier or verify_answer
        self.answer_field, self.reference_field = answer_field, reference_field
        self.num_generations = num_generations
        self._collectors: list[list] = []
        self.__name__ = "sgpo"  # TRL names the reward column after it

    @property
    def credit_assignment(self) -> str:
        return self.config.credit_assignment

    @property
    def step_mode(self):
        """How the judge splits responses into steps (prefix credit maps those steps to tokens)."""
        return getattr(self.judge, "step_mode", "paragraph")

    def __call__(self, prompts, completions, log_metric: Optional[Callable] = None, **kwargs) -> list[float]:
        scores = self.score(prompts, completions, **kwargs)
        if log_metric is not None:
            for name, value in scores.stats.items():
                log_metric(f"sgpo/{name}", value)
        for calls in self._collectors:
            calls.append(scores)
        return scores.rewards

    @contextlib.contextmanager
    def collect(self):
        """`with reward.collect() as scores:`: the SGPOScores of every call inside the block."""
        calls: list[SGPOScores] = []
        self._collectors.append(calls)
        try:
            yield calls
        finally:
            self._collectors.remove(calls)

    def score(self, prompts, completions, **kwargs) -> SGPOScores:
        """The rewards and verdicts of this process's completions (TRL's reward arguments)."""
        if self.answer_field not in kwargs:
            raise ValueError(f"answer_field: the dataset has no column {self.answer_field!r} "
                             f"(columns passed: {sorted(k for k in kwargs if k not in ('trainer_state', 'log_extra'))})")
        if len(prompts) != len(completions):
            raise ValueError(f"prompts / completions: lengths differ ({len(prompts)}, {len(completions)})")
        refs = kwargs.get(self.reference_field) if self.reference_field else None
        local = [(problem_text(p), completion_text(c), a, None if refs is None else refs[i])
                 for i, (p, c, a) in enumerate(zip(prompts, completions, kwargs[self.answer_field]))]
        dist, rank, world = _world()
        if dist is None:
            rewards, stats, verdicts = self.rewards(local)
            start = 0
        else:
            parts = [None] * world
            dist.all_gather_object(parts, local)
            start = sum(len(p) for p in parts[:rank])
            box = [self.rewards([x for p in parts for x in p]) if rank == 0 else None]
            dist.broadcast_object_list(box, src=0)  # judged once, on rank 0
            rewards, stats, verdicts = box[0]
        mine = slice(start, start + len(local))
        return SGPOScores(rewards[mine], [row[1] for row in local], verdicts[mine], stats)

    def rewards(self, rows: list[tuple]) -> tuple[list[float], dict, list]:
        """SGPO rewards of whole groups: rows (problem, completion, answer, reference).
        Returns (rewards [N], the logged stats, verdicts [N]: a Verdict where judged, else None)."""
        offsets = group_offsets([r[0] for r in rows], self.num_generations)
        groups = [[rows[i][1] for i in range(a, b)] for a, b in zip(offsets, offsets[1:])]
        firsts = [rows[a] for a in offsets[:-1]]
        scored = score_groups([r[0] for r in firsts], groups, [r[2] for r in firsts], self.judge, self.config,
                              references=[r[3] for r in firsts], verifier=self.verifier)
        n = len(rows)
        stats = {"judged": float(scored.rewards.judged), "judge_failures": float(scored.rewards.failed),
                 "all_negative_frac": float(scored.advantages.all_negative.float().mean()),
                 "credited_frac": float(scored.credited.sum()) / n}
        return scored.advantages.rewards.tolist(), stats, scored.rewards.verdicts
