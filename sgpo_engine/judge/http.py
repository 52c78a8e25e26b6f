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
- timeout: seconds for one attempt: the connection, each wait for data, and
  the whole body. A timeout, a connection error, HTTP 429 and 5xx are retried
  up to max_retries times with exponential backoff (backoff * 2**attempt,
  capped at max_backoff, times a random factor in [0.5, 1) so that many
  workers do not retry in lock-step; a 429's Retry-After is honoured up to
  max_backoff). Other 4xx are not retried: the request itself is wrong.
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

import http.client
import json
import logging
import os
import random
import socket
import time
import urllib.error
import urllib.parse
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from typing import Optional, Union

from .base import Item, Judge
from .cache import VerdictCache
from .prompt import SYSTEM_PROMPT, judge_messages, parse_reply
from .steps import StepMode
from .verdict import Verdict

log = logging.getLogger("sgpo_engine.judge")

LOOPBACK_HOSTS = {"127.0.0.1", "localhost", "::1"}
_ERROR_BODY_LIMIT = 2048


class _Failure(Exception):
    """One attempt's failure: a verdict reason, whether to retry, and a server-asked delay."""

    def __init__(self, reason: str, detail: str, retry: bool, retry_after: Optional[float] = None):
        super().__init__(reason)
        self.reason, self.detail, self.retry, self.retry_after = reason, detail, retry, retry_after


def _retry_after(headers) -> Optional[float]:
    try:
        return max(0.0, float(headers.get("Retry-After")))
    except (TypeError, ValueError):
        return None


def openai_base(url: str) -> str:
    """An OpenAI-compatible server's API root: the URL itself (".../v1", or any path), or for a
    bare server root (http://host:port) that root + "/v1". rollout_url and judge_url use it."""
    url = url.rstrip("/")
    return url if urllib.parse.urlsplit(url).path else url + "/v1"


def server_root(url: str) -> str:
    """The server root of an API root (".../v1" stripped): where SGLang-style admin routes live."""
    url = openai_base(url)
    return url[:-len("/v1")] if url.endswith("/v1") else url


class HTTPJudge(Judge):
    def __init__(self, base_url: str, model: str, *, api_key_env: str = "OPENAI_API_KEY",
                 step_mode: StepMode = "paragraph", concurrency: int = 8, timeout: float = 60.0,
                 max_retries: int = 3, backoff: float = 0.5, max_backoff: float = 8.0,
                 temperature: Optional[float] = 0.0, max_tokens: Optional[int] = 1024,
                 cache: Union[bool, VerdictCache] = True, cache_path: Optional[str] = None,
                 system_prompt: Optional[str] = SYSTEM_PROMPT, extra_body: Optional[dict] = None,
                 max_response_bytes: int = 8 << 20):
        parsed = urllib.parse.urlsplit(base_url if isinstance(base_url, str) else "")
        if parsed.scheme not in ("http", "https") or not parsed.hostname:
            raise ValueError(f"base_url: expected an http(s) URL such as http://127.0.0.1:8000/v1, got {base_url!r}")
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
        self.base_url, self.model, self.api_key_env = openai_base(base_url), model, api_key_env
        self.url = self.base_url + "/chat/completions"
        self.concurrency, self.timeout, self.max_retries = concurrency, float(timeout), max_retries
        self.backoff, self.max_backoff = float(backoff), float(max_backoff)
        self.temperature, self.max_tokens, self.system_prompt = temperature, max_tokens, system_prompt
        self.extra_body = dict(extra_body or {})
        self.max_response_bytes = max_response_bytes
        # Loopback servers are reached directly, whatever http_proxy says; others honour the proxy settings.
        handlers = [urllib.request.ProxyHandler({})] if parsed.hostname in LOOPBACK_HOSTS else []
        self._opener = urllib.request.build_opener(*handlers)
        self._rng = random.Random()

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
        except _Failure as f:
            log.debug("HTTPJudge: %s: %s", f.reason, self._scrub(f.detail))
            return Verdict.failure(f.reason, n, self._scrub(f.detail))
        except Exception as e:  # anything unforeseen is still a verdict, not a crash
            return Verdict.failure("error", n, self._scrub(f"{type(e).__name__}: {e}"))
        return parse_reply(reply, n)

    def _ask(self, messages: list[dict]) -> object:
        """The reply text of one chat completion, with retries; raises _Failure."""
        body = {"model": self.model, "messages": messages, "temperature": self.temperature,
                "max_tokens": self.max_tokens}
        # None leaves a field to the server (some models refuse temperature or max_tokens)
        body = {k: v for k, v in body.items() if v is not None}
        return self._request(body, self._content)

    def _request(self, body: dict, parse):
        """parse(response body) of one POST of `body` (with extra_body) to self.url, with
        retries of the retryable failures; raises _Failure."""
        data = json.dumps({**body, **self.extra_body}).encode("utf-8")
        for attempt in range(self.max_retries + 1):
            try:
                return parse(self._post(data))
            except _Failure as f:
                if not f.retry or attempt == self.max_retries:
                    raise
                time.sleep(self._delay(attempt, f.retry_after))
        raise AssertionError("unreachable")

    def _delay(self, attempt: int, retry_after: Optional[float]) -> float:
        if retry_after is not None:
            return min(retry_after, self.max_backoff)
        return min(self.max_backoff, self.backoff * 2 ** attempt) * self._rng.uniform(0.5, 1.0)

    def _headers(self) -> dict:
        h = {"Content-Type": "application/json", "Accept": "application/json", "User-Agent": "sgpo-engine"}
        key = os.environ.get(self.api_key_env) if self.api_key_env else None
        if key:
            h["Authorization"] = f"Bearer {key}"
        return h

    def check_server(self, what: str = "judge") -> None:
        """ValueError (starting with `what`) when the server cannot be reached,
        refuses the API key, has no GET {base_url}/models (vLLM, SGLang, OpenAI
        and `sgpo serve` all do: a 404 means a wrong API root), or lists its
        models without this one. Called once before training, so a judge that
        is not there is one clear error, not every verdict of a step failing."""
        req = urllib.request.Request(self.base_url + "/models", headers=self._headers(), method="GET")
        try:
            raw = self._send(req)
        except _Failure as f:
            if f.reason == "http_404":
                raise ValueError(f"{what}: {self.base_url}/models answered 404: is {self.base_url} the API root "
                                 "(http://host:port/v1 for vLLM, SGLang and sgpo serve)?") from None
            if f.reason in ("connection", "timeout", "http_401", "http_403"):
                raise ValueError(f"{what}: {self._scrub(f.detail)}; is the judge server up at "
                                 f"{self.base_url} (and the key in ${self.api_key_env})?") from None
            return  # a 5xx or 405: the chat requests will tell
        try:
            served = [m["id"] for m in json.loads(raw)["data"]]
        except (ValueError, KeyError, TypeError):
            return
        if served and self.model not in served:
            raise ValueError(f"{what}: {self.base_url} does not serve model {self.model!r} "
                             f"(it serves {', '.join(map(repr, served[:8]))})")

    def _post(self, data: bytes) -> bytes:
        """One attempt: the response body of a 2xx, else _Failure."""
        return self._send(urllib.request.Request(self.url, data=data, headers=self._headers(), method="POST"))

    def _send(self, req: urllib.request.Request) -> bytes:
        url = req.full_url
        deadline = time.monotonic() + self.timeout
        try:
            with self._opener.open(req, timeout=self.timeout) as resp:
                return self._read(resp, deadline)
        except urllib.error.HTTPError as e:
            status = e.code
            try:
                text = e.read(_ERROR_BODY_LIMIT).decode("utf-8", "replace")
            except Exception:
                text = ""
            finally:
                e.close()
            retry = status == 429 or status >= 500
            raise _Failure(f"http_{status}", f"HTTP {status}: {text[:300]}", retry,
                           _retry_after(e.headers) if status == 429 else None) from None
        except (TimeoutError, socket.timeout) as e:
            raise _Failure("timeout", f"no response within {self.timeout:g} s ({e})", True) from None
        except urllib.error.URLError as e:
            if isinstance(e.reason, (TimeoutError, socket.timeout)):
                raise _Failure("timeout", f"no response within {self.timeout:g} s", True) from None
            raise _Failure("connection", f"cannot reach {url}: {e.reason}", True) from None
        except (ConnectionError, http.client.HTTPException, OSError) as e:
            raise _Failure("connection", f"{type(e).__name__}: {e}", True) from None

    def _read(self, resp, deadline: float) -> bytes:
        """The body, within the attempt's deadline and the size limit."""
        chunks, size = [], 0
        while True:
            if time.monotonic() > deadline:
                raise _Failure("timeout", f"body not received within {self.timeout:g} s", True)
            chunk = resp.read1(65536)
            if not chunk:
                return b"".join(chunks)
            size += len(chunk)
            if size > self.max_response_bytes:
                raise _Failure("bad_response", f"response larger than {self.max_response_bytes} bytes", False)
            chunks.append(chunk)

    @staticmethod
    def _content(raw: bytes) -> object:
        """choices[0].message.content of a chat-completion body, else _Failure("bad_response")."""
        try:
            return json.loads(raw)["choices"][0]["message"]["content"]
        except (ValueError, KeyError, IndexError, TypeError) as e:
            snippet = raw[:120].decode("utf-8", "replace")
            raise _Failure("bad_response", f"not a chat completion ({type(e).__name__}): {snippet!r}",
                           False) from None

    def _scrub(self, text: str) -> str:
        """`text` with the API key (if any) blanked out."""
        key = os.environ.get(self.api_key_env) if self.api_key_env else None
        return text.replace(key, "***") if key else text
