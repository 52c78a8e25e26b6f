"""Rollout backends: (examples, seeds) -> per example, G Completions.

LocalRollout samples with the engine's own KV-cached `generate` and returns
the sampler's log-probs (the old policy's, since the weights have not moved
since). OpenAIRollout asks an external OpenAI-compatible server (vLLM,
SGLang, `sgpo serve`) for the completions of large models; its texts are
re-tokenized here and the trainer recomputes their old log-probs.
"""
from __future__ import annotations

import json
import urllib.request

from ..generation import Completion, generate
from ..generation.generate import encode_prompt


class LocalRollout:
    def __init__(self, policy, cfg):
        self.policy, self.cfg = policy, cfg

    def __call__(self, examples, seeds):
        c = self.cfg
        was_training = self.policy.decoder.training
        self.policy.decoder.eval()
        try:
            return generate(self.policy, [e.prompt for e in examples], num_samples=c.num_samples,
                            max_new_tokens=c.max_new_tokens, temperature=c.temperature, top_k=c.top_k,
                            top_p=c.top_p, min_p=c.min_p, stop=c.stop or None, seed=seeds,
                            chat_template=c.chat_template, progress=False)
        finally:
            self.policy.decoder.train(was_training)


class OpenAIRollout:
    def __init__(self, policy, cfg, timeout: float = 600.0):
        self.policy, self.cfg, self.timeout = policy, cfg, timeout
        if policy.tokenizer is None:
            raise ValueError("rollout: an external server returns text; the policy needs a tokenizer")

    def _post(self, body: dict) -> dict:
        req = urllib.request.Request(self.cfg.rollout_url.rstrip("/") + "/v1/completions",
                                     data=json.dumps(body).encode(), headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(req, timeout=self.timeout) as r:
            return json.loads(r.read())

    def __call__(self, examples, seeds):
        c, tok = self.cfg, self.policy.tokenizer
        eos = sorted(getattr(tok, "eos_token_ids", []) or [])
        out = []
        for e, seed in zip(examples, seeds):
            ids = encode_prompt(self.policy, e.prompt, c.chat_template)
            reply = self._post({"model": c.rollout_model, "prompt": tok.decode(ids, skip_special_tokens=False),
                                "n": c.num_samples, "max_tokens": c.max_new_tokens, "temperature": c.temperature,
                                "top_p": c.top_p, "top_k": c.top_k, "min_p": c.min_p,
                                "stop": c.stop or None, "seed": int(seed) & 0x7FFFFFFF})
            group = []
            for choice in sorted(reply["choices"], key=lambda ch: ch.get("index", 0)):
                text = choice["text"]
                token_ids = tok.encode(text, add_special_tokens=False)
                if choice.get("finish_reason") == "stop" and eos:
                    token_ids = token_ids + [eos[0]]  # the model stopped: train it to emit EOS
                token_ids = token_ids[:c.max_new_tokens] or [eos[0] if eos else 0]
                group.append(Completion(token_ids, text, None, choice.get("finish_reason") or "length", ids))
            out.append(group)
        return out
