"""What a step trains on: one batch of prompts, or with dynamic sampling
(DAPO, Yu et al. 2025, section 3.2; config `dynamic_sampling = "filter"`)
batches drawn until `prompts_per_step` informative groups are collected.

A group is informative when its rewards after SGPO credit are not all equal
(ScoredGroups.informative): GRPO + dynamic sampling drops the all-wrong and
all-right groups, SGPO + dynamic sampling keeps the all-wrong groups the judge
credited. Batches are drawn from the prompt stream in order, batch c being
`source.batch(c, prompts_per_step)` with sampling seeds from (seed, c); the
trainer's cursor c (a checkpoint carries it) is the step itself without
dynamic sampling. The step keeps the first prompts_per_step informative groups
in draw order and drops the rest, as verl's DAPO trainer does: nothing is
carried into the next step, so a resumed run needs only the cursor. After
max_sample_batches it trains on what it has.

Under torchrun every rank draws its share of each batch; the informative
flags are gathered (rank order is prompt order), so every rank takes the same
decision to draw again and the same global choice of groups.
"""
from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class Draw:
    """One drawn batch on this rank: its examples, completions and scores, and its global
    informative flags (every rank's groups, in prompt order)."""
    examples: list
    groups: list
    scored: object            # ScoredGroups, or None when this rank had no prompts
    first: int                # the global index of this rank's first prompt in the batch
    flags: list = field(default_factory=list)   # [prompts_per_step] bool, all ranks


def keep_first_informative(draws: list[Draw], wanted: int) -> list[list[int]]:
    """Per draw, this rank's local group indices among the first `wanted` informative
    groups over all ranks, in draw order."""
    keep, left = [], wanted
    for d in draws:
        chosen = []
        for g, informative in enumerate(d.flags):
            if informative and left > 0:
                left -= 1
                if d.first <= g < d.first + len(d.examples):
                    chosen.append(g - d.first)
        keep.append(chosen)
    return keep


def draw_sums(draws: list[Draw]) -> dict[str, float]:
    """This rank's compute of the step, every batch it drew counted (also those dynamic
    sampling threw away): generated tokens, judge calls, and the tokens the judge read (the
    prompt and the response of each judged one: what an LLM judge would be given, before its
    own instructions; the built-in exact checker is counted the same way). Also what the
    policy did on every drawn prompt, not only the kept ones: responses, correct ones, and
    all-negative groups (dynamic sampling keeps none of those without credit)."""
    sums = dict.fromkeys(("drawn_tokens", "drawn_groups", "drawn_responses", "drawn_correct", "drawn_all_negative",
                          "judge_calls", "judge_read_tokens"), 0.0)
    for d in draws:
        flat = [c for g in d.groups for c in g]
        sums["drawn_tokens"] += sum(len(c.token_ids) for c in flat)
        sums["drawn_groups"] += len(d.groups)
        sums["drawn_responses"] += len(flat)
        if d.scored is not None:
            sums["drawn_correct"] += float(d.scored.rewards.correct.sum())
            sums["drawn_all_negative"] += float(d.scored.advantages.all_negative.sum())
            for c, v in zip(flat, d.scored.rewards.verdicts):
                if v is not None:
                    sums["judge_calls"] += 1
                    sums["judge_read_tokens"] += len(c.prompt_ids) + len(c.token_ids)
    return sums
