"""LocalJudge: the HTTPJudge prompt answered by a model loaded in the engine.

    judge = LocalJudge(policy, step_mode="paragraph", max_new_tokens=512,
                       temperature=0.0, batch_size=16, seed=None,
                       system_prompt=SYSTEM_PROMPT, cache=False, name=None)
    verdicts = judge.judge(problems, responses, references=None)

Prompts go through `sgpo_engine.generation.generate` in batches of
batch_size, greedy by default (temperature 0), as chat messages (the policy's
chat template renders them; without a template, the messages are joined as
plain text). Replies are read by the same strict parser as HTTPJudge.
When a batch fails to generate (e.g. one prompt is longer than the model's
context), its prompts are retried one by one, so only the bad ones fail
("generation").

The cache is off by default: a local judge is often the policy being trained,
whose answers change with its weights. Pass cache=True (with a `name` naming
the frozen model) to turn it on.
"""
from __future__ import annotations

import logging
from typing import Optional, Union

from .base import Item, Judge
from .cache import VerdictCache
from .prompt import SYSTEM_PROMPT, judge_messages, parse_reply
from .steps import StepMode
from .verdict import Verdict

log = logging.getLogger("sgpo_engine.judge")


def _as_text(messages: list[dict]) -> str:
    """Messages as plain text, for a model without a chat template."""
    return "\n\n".join(m["content"] for m in messages) + "\n\n"


class LocalJudge(Judge):
    def __init__(self, policy, *, step_mode: StepMode = "paragraph", max_new_tokens: int = 512,
                 temperature: float = 0.0, top_k: int = 0, top_p: float = 1.0, min_p: float = 0.0,
                 batch_size: int = 16, seed: Optional[int] = None,
                 system_prompt: Optional[str] = SYSTEM_PROMPT,
                 cache: Union[bool, VerdictCache] = False, cache_path: Optional[str] = None,
                 name: Optional[str] = None):
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise ValueError(f"batch_size: expected an int >= 1, got {batch_size!r}")
        if isinstance(max_new_tokens, bool) or not isinstance(max_new_tokens, int) or max_new_tokens < 1:
            raise ValueError(f"max_new_tokens: expected an int >= 1, got {max_new_tokens!r}")
        self.name = name or f"local:{getattr(policy.config, 'architecture', type(policy).__name__)}"
        super().__init__(step_mode, cache, cache_id=self.name, cache_path=cache_path)
        self.policy = policy
        self.batch_size, self.seed, self.system_prompt = batch_size, seed, system_prompt
        self.sampling = dict(max_new_tokens=max_new_tokens, temperature=temperature, top_k=top_k,
                             top_p=top_p, min_p=min_p)

    def __repr__(self) -> str:
        return f"LocalJudge(name={self.name!r}, step_mode={self.step_mode!r}, batch_size={self.batch_size})"

    def _prompt(self, item: Item):
        msgs = judge_messages(item.problem, item.steps, item.reference, self.system_prompt)
        tok = self.policy.tokenizer
        return msgs if tok is not None and getattr(tok, "chat_template", None) else _as_text(msgs)

    def _generate(self, prompts: list) -> list[str]:
        from ..generation import generate  # imported late: the judge package must not need torch models
        out = generate(self.policy, prompts, num_samples=1, seed=self.seed, **self.sampling)
        return [group[0].text for group in out]

    def _judge_items(self, items: list[Item]) -> list[Verdict]:
        verdicts: list[Verdict] = []
        for start in range(0, len(items), self.batch_size):
            batch = items[start:start + self.batch_size]
            verdicts += [parse_reply(r, len(it.steps)) if isinstance(r, str) else r
                         for it, r in zip(batch, self._replies(batch))]
        return verdicts

    def _replies(self, batch: list[Item]) -> list:
        """Reply texts of one batch; a failed verdict in place of each prompt that cannot generate."""
        prompts = [self._prompt(it) for it in batch]
        try:
            return self._generate(prompts)
        except Exception as e:
            if len(batch) == 1:
                log.debug("LocalJudge: generation failed: %s: %s", type(e).__name__, e)
                return [Verdict.failure("generation", len(batch[0].steps), f"{type(e).__name__}: {e}")]
        return [r for it in batch for r in self._replies([it])]
