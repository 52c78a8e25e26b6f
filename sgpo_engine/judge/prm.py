"""PRMJudge: a process reward model behind vLLM's pooling API as a step judge.

    vllm serve Qwen/Qwen2.5-Math-PRM-7B --port 8001          # a PRM: one score per step, one forward pass
    judge = PRMJudge("http://127.0.0.1:8001", "Qwen/Qwen2.5-Math-PRM-7B", threshold=0.5)

A PRM scores every step of a response in one forward pass instead of writing a
verdict, so it is far cheaper than an LLM judge. The wire format is vLLM's
pooling API (docs.vllm.ai, "Pooling Models", and its Qwen2.5-Math-PRM online
example): POST {server root}/pooling with {"model", "input": text}, where text
is the model's chat format with the problem as the user turn and the steps as
the assistant turn, each step followed by the step separator the model was
trained with ("<extra_0>" for Qwen2.5-Math-PRM). vLLM's STEP pooler returns,
for each separator, the softmax over the model's labels, [p_wrong, p_right]:

    {"data": [{"index": 0, "object": "pooling", "data": [[0.02, 0.98], [0.71, 0.29], ...]}], ...}

The first step whose p_right is below `threshold` is the first error; none
below: no error. A reply with another number of scores than steps is a failed
verdict ("bad_response"); transport failures, retries, the API key, the cache
and the stats are HTTPJudge's.
"""
from __future__ import annotations

import json
from typing import Optional, Union

from .base import Item
from .cache import VerdictCache
from ..http_client import ApiError
from .http import HTTPJudge
from .steps import StepMode
from .verdict import Verdict

# Qwen2.5-Math-PRM's input: its chat template around the problem and the separated steps
QWEN_PRM_TEMPLATE = ("<|im_start|>system\nPlease reason step by step, and put your final answer within "
                     "\\boxed{}.<|im_end|>\n<|im_start|>user\n{problem}<|im_end|>\n<|im_start|>assistant\n"
                     "{steps}<|im_end|><|endoftext|>")


class PRMJudge(HTTPJudge):
    def __init__(self, base_url: str, model: str, *, threshold: float = 0.5, step_separator: str = "<extra_0>",
                 template: str = QWEN_PRM_TEMPLATE, step_mode: StepMode = "paragraph",
                 cache: Union[bool, VerdictCache] = True, cache_path: Optional[str] = None, **http):
        if isinstance(threshold, bool) or not isinstance(threshold, (int, float)) or not 0 < threshold < 1:
            raise ValueError(f"threshold: expected a probability in (0, 1), got {threshold!r}")
        if not isinstance(step_separator, str) or not step_separator:
            raise ValueError(f"step_separator: expected a non-empty str, got {step_separator!r}")
        if "{problem}" not in template or "{steps}" not in template:
            raise ValueError("template: needs the fields {problem} and {steps}")
        super().__init__(base_url, model, step_mode=step_mode, cache=cache, cache_path=cache_path, **http)
        self._cache_id = f"prm:{model}:{threshold}"  # verdicts depend on the threshold too
        self.threshold, self.step_separator, self.template = float(threshold), step_separator, template
        self.url = self.client.root + "/pooling"

    def __repr__(self) -> str:
        return f"PRMJudge(base_url={self.base_url!r}, model={self.model!r}, threshold={self.threshold})"

    def prm_input(self, problem: str, steps: list[str]) -> str:
        """The text the PRM scores: each step followed by the separator."""
        joined = "".join(s.strip() + self.step_separator for s in steps)
        return self.template.replace("{problem}", problem).replace("{steps}", joined)

    def _one(self, item: Item) -> Verdict:
        n = len(item.steps)
        try:
            scores = self._request({"model": self.model, "input": self.prm_input(item.problem, item.steps)},
                                   self._step_scores)
        except ApiError as f:
            return Verdict.failure(f.reason, n, self._scrub(f.detail))
        except Exception as e:
            return Verdict.failure("error", n, self._scrub(f"{type(e).__name__}: {e}"))
        if len(scores) != n:
            return Verdict.failure("bad_response", n, f"the PRM scored {len(scores)} steps, the response has {n} "
                                                      f"(does the model use step separator {self.step_separator!r}?)")
        wrong = next((k for k, p in enumerate(scores) if p < self.threshold), None)
        return Verdict.judged(wrong, n)

    @staticmethod
    def _step_scores(raw: bytes) -> list[float]:
        """p_right per step from a pooling reply (the last label's probability of each pair)."""
        try:
            rows = json.loads(raw)["data"][0]["data"]
            return [float(r[-1] if isinstance(r, list) else r) for r in rows]
        except (ValueError, KeyError, IndexError, TypeError) as e:
            raise ApiError("bad_response", f"not a pooling reply ({type(e).__name__}): "
                                           f"{raw[:120].decode('utf-8', 'replace')!r}", False) from None
