"""Where held-out samples come from: the engine's own generate on a policy
(`local_sampler`), or any OpenAI-compatible server (`ServerSampler`: vLLM,
SGLang, `sgpo serve`). Both are (examples, seeds, settings) -> per example,
settings.num_samples Completions."""
from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

from ..generation import Completion
from ..generation.generate import generate_groups
from ..http_client import ApiError, Client


def local_sampler(policy):
    """Samples with the engine's KV-cached generate, as training rollouts do."""
    return lambda examples, seeds, settings: generate_groups(policy, [e.prompt for e in examples], settings, seeds)


class ServerSampler:
    """Samples from an OpenAI-compatible server: a text prompt through
    /completions, chat messages (or a string with chat_template) through
    /chat/completions; the server applies its own tokenizer and template.
    Token counts come from vLLM's return_token_ids where the server gives
    them, else from usage.completion_tokens shared over the choices."""

    def __init__(self, url: str, model: str, timeout: float = 600.0, concurrency: int = 8, retries: int = 2):
        self.client = Client(url, timeout=timeout, max_retries=retries, what="--server")
        self.base, self.model, self.concurrency = self.client.base, model, concurrency

    def check(self) -> None:
        """ValueError naming the server when it is not there or does not serve the model."""
        try:
            served = self.client.served_models()
        except ApiError as e:
            raise ValueError(f"--server: cannot reach {self.base}/models ({e.detail}); "
                             "is the server up, and is the URL its API root (http://host:port/v1)?") from None
        if served and self.model not in served:
            raise ValueError(f"--served-model: {self.base} does not serve {self.model!r} "
                             f"(it serves {', '.join(map(repr, served[:8]))})")

    def __call__(self, examples, seeds, settings) -> list[list[Completion]]:
        with ThreadPoolExecutor(max_workers=min(self.concurrency, max(len(examples), 1))) as pool:
            return list(pool.map(lambda pair: self._one(*pair, settings), zip(examples, seeds)))

    def _one(self, example, seed, s) -> list[Completion]:
        chat = not isinstance(example.prompt, str) or s.chat_template
        body = {"model": self.model, "n": s.num_samples, "max_tokens": s.max_new_tokens,
                "temperature": s.temperature, "top_p": s.top_p, "seed": int(seed) & 0x7FFFFFFF,
                "return_token_ids": True, **({"stop": list(s.stop)} if s.stop else {}),
                **({"top_k": s.top_k} if s.top_k else {}), **({"min_p": s.min_p} if s.min_p else {})}
        if chat:
            messages = example.prompt if not isinstance(example.prompt, str) else \
                [{"role": "user", "content": example.prompt}]
            reply = self._post("/chat/completions", {**body, "messages": messages})
        else:
            reply = self._post("/completions", {**body, "prompt": example.prompt})
        choices = sorted(reply.get("choices") or [], key=lambda c: c.get("index", 0))
        if len(choices) != s.num_samples:
            raise ValueError(f"--server: {self.base} returned {len(choices)} choices for n = {s.num_samples}")
        share = (reply.get("usage") or {}).get("completion_tokens", 0) // max(len(choices), 1)
        out = []
        for c in choices:
            text = c["message"]["content"] if chat else c["text"]
            ids = c.get("token_ids")
            out.append(Completion(list(ids) if ids is not None else [0] * share, text or "", None,
                                  c.get("finish_reason") or "length"))
        return out

    def _post(self, path: str, body: dict) -> dict:
        try:
            return self.client.request(self.base + path, body)
        except ApiError as e:
            raise ValueError(f"--server: {self.base}{path} failed: {e.detail}") from None
