"""HTTPJudge: a step judge served by any OpenAI-compatible chat-completions
server (vLLM, SGLang, OpenAI, the engine's own `sgpo serve`).

    judge = HTTPJudge("http://127.0.0.1:8000/v1", "Qwen/Qwen2.5-7B-Instruct",
                      api_key_env="OPENAI_API_KEY", concurrency=8, timeout=60.0,
                      max_retries=3, backoff=0.5, max_backoff=8.0,
                      temperature=0.0, max_tokens=1024, step_mode="paragraph",
                      cache=True, cache_path=None, extra_body=None)
    # temperature / max_tokens None: not sent; extra_body: more request fields
    # (e.g. {"max_completion_tokens": 2048} for models that want it)
    verdicts = judge.judge(problems, responses, references=None)
    judge.stats   # {"responses", "judged", "failed", "cache_hits", "requests", "failures": {reason: n}}

- base_url: as for the OpenAI client, ending in the API root (".../v1"), or
  the server's root (http://host:port, "/v1" is added: openai_base);
  requests go to base_url + "/chat/completions".
- Up to `concurrency` requests are in flight per judge() call (a thread pool).
- timeout, max_retries, backoff, max_backoff: the HTTP client's
  (http_client.py): seconds for one attempt; a timeout, a connection error,
  HTTP 408, 429 and 5xx are retried with jittered exponential backoff, other 4xx
  are not.
- Every failure ends as a failed verdict whose reason is one of "timeout",
  "connection", "http_<status>", "bad_response", "unparseable",
  "out_of_range": judge() does not raise for them.
- The API key is read from the environment variable `api_key_env` at each
  request (so it is never stored on the judge) and sent as a Bearer token; it
  is never logged, and it is scrubbed from every failure detail.
- cache: True (in memory; with cache_path, also appended to that JSONL file),
  False, or a VerdictCache to share. Keys hash (problem, response, reference,
  model, step mode); only successful verdicts are cached.
"""
from __future__ import annotations

import json
import logging
from concurrent.futures import ThreadPoolExecutor
from typing import Optional, Union

from ..http_client import ApiError, Client
from .base import Item, Judge
from .cache import VerdictCache
from .prompt import SYSTEM_PROMPT, judge_messages, parse_reply
from .steps import StepMode
from .verdict import Verdict

log = logging.getLogger("sgpo_engine.judge")


class HTTPJudge(Judge):
    def __init__(self, base_url: str, model: str, *, api_key_env: str = "OPENAI_API_KEY",
                 step_mode: StepMode = "paragraph", concurrency: int = 8, timeout: float = 60.0,
                 max_retries: int = 3, backoff: float = 0.5, max_backoff: float = 8.0,
                 temperature: Optional[float] = 0.0, max_tokens: Optional[int] = 1024,
                 cache: Union[bool, VerdictCache] = True, cache_path: Optional[str] = None,
                 system_prompt: Optional[str] = SYSTEM_PROMPT, extra_body: Optional[dict] = None,
                 max_response_bytes: int = 8 << 20):
        if not isinstance(model, str) or not model:
            raise ValueError(f"model: expected a non-empty str, got {model!r}")
        for name, v, lo in (("concurrency", concurrency, 1), ("max_retries", max_retries, 0),
                            ("max_tokens", 1 if max_tokens is None else max_tokens, 1)):
            if isinstance(v, bool) or not isinstance(v, int) or v < lo:
                raise ValueError(f"{name}: expected an int >= {lo}, got {v!r}")
        for name, v in (("timeout", timeout), ("backoff", backoff), ("max_backoff", max_backoff)):
            if not isinstance(v, (int, float)) or not v >= 0 or (name == "timeout" and v == 0):
                raise ValueError(f"{name}: expected a positive number, got {v!r}")
        super().__init__(step_mode, cache, cache_id=f"http:{model}", cache_path=cache_path)
        self.client = Client(base_url, timeout=timeout, api_key_env=api_key_env, max_retries=max_retries,
                             backoff=backoff, max_backoff=max_backoff, max_response_bytes=max_response_bytes,
                             what="base_url")
        self.base_url, self.model, self.api_key_env = self.client.base, model, api_key_env
        self.url = self.base_url + "/chat/completions"
        self.concurrency, self.timeout, self.max_retries = concurrency, float(timeout), max_retries
        self.temperature, self.max_tokens, self.system_prompt = temperature, max_tokens, system_prompt
        self.extra_body = dict(extra_body or {})

    def __repr__(self) -> str:
        return (f"HTTPJudge(base_url={self.base_url!r}, model={self.model!r}, api_key_env={self.api_key_env!r}, "
                f"concurrency={self.concurrency}, timeout={self.timeout}, max_retries={self.max_retries}, "
                f"step_mode={self.step_mode!r})")

    # ------------------------------------------------------------------
    def _judge_items(self, items: list[Item]) -> list[Verdict]:
        with ThreadPoolExecutor(max_workers=min(self.concurrency, len(items)),
                                thread_name_prefix="sgpo-judge") as pool:
            return list(pool.map(self._one, items))

    def _one(self, item: Item) -> Verdict:
        n = len(item.steps)
        try:
            reply = self._ask(judge_messages(item.problem, item.steps, item.reference, self.system_prompt))
        except ApiError as f:
            log.debug("HTTPJudge: %s: %s", f.reason, self._scrub(f.detail))
            return Verdict.failure(f.reason, n, self._scrub(f.detail))
        except Exception as e:  # anything unforeseen is still a verdict, not a crash
            return Verdict.failure("error", n, self._scrub(f"{type(e).__name__}: {e}"))
        return parse_reply(reply, n)

    def _ask(self, messages: list[dict]) -> object:
        """The reply text of one chat completion, with retries; raises ApiError."""
        body = {"model": self.model, "messages": messages, "temperature": self.temperature,
                "max_tokens": self.max_tokens}
        # None leaves a field to the server (some models refuse temperature or max_tokens)
        body = {k: v for k, v in body.items() if v is not None}
        return self._request(body, self._content)

    def _request(self, body: dict, parse):
        """parse(response body) of one POST of `body` (with extra_body) to self.url, with
        retries of the retryable failures; raises ApiError."""
        return self.client.request(self.url, {**body, **self.extra_body}, parse)

    def check_server(self, what: str = "judge") -> None:
        """ValueError (starting with `what`) when the server cannot be reached,
        refuses the API key, has no GET {base_url}/models (vLLM, SGLang, OpenAI
        and `sgpo serve` all do: a 404 means a wrong API root), or lists its
        models without this one. Called once before training, so a judge that
        is not there is one clear error, not every verdict of a step failing."""
        try:
            served = self.client.served_models()
        except ApiError as f:
            if f.reason == "http_404":
                raise ValueError(f"{what}: {self.base_url}/models answered 404: is {self.base_url} the API root "
                                 "(http://host:port/v1 for vLLM, SGLang and sgpo serve)?") from None
            if f.reason in ("connection", "timeout", "http_401", "http_403"):
                raise ValueError(f"{what}: {self._scrub(f.detail)}; is the judge server up at "
                                 f"{self.base_url} (and the key in ${self.api_key_env})?") from None
            return  # a 5xx or 405: the chat requests will tell
        if served and self.model not in served:
            raise ValueError(f"{what}: {self.base_url} does not serve model {self.model!r} "
                             f"(it serves {', '.join(map(repr, served[:8]))})")

    @staticmethod
    def _content(raw: bytes) -> object:
        """choices[0].message.content of a chat-completion body, else ApiError("bad_response")."""
        try:
            return json.loads(raw)["choices"][0]["message"]["content"]
        except (ValueError, KeyError, IndexError, TypeError) as e:
            snippet = raw[:120].decode("utf-8", "replace")
            raise ApiError("bad_response", f"not a chat completion ({type(e).__name__}): {snippet!r}") from None

    def _scrub(self, text: str) -> str:
        """`text` with the API key (if any) blanked out."""
        return self.client.scrub(text)
