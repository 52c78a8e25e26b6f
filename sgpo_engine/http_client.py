"""The one HTTP client the engine talks to OpenAI-compatible servers with
(vLLM, SGLang, OpenAI, `sgpo serve`): the step judge (judge/http.py and
judge/prm.py), held-out sampling from a server (evaluation/samplers.py), and
external rollouts with their weight sync (train/rollout.py). Standard library
only: the engine needs no HTTP package.

    client = Client("http://127.0.0.1:8000/v1", timeout=60.0, api_key_env="OPENAI_API_KEY",
                    max_retries=3, backoff=0.5, max_backoff=8.0)
    reply = client.request(client.base + "/chat/completions", body)   # parsed JSON, with retries
    client.served_models()                                           # GET /models: the model ids

- URLs: `base` is the API root (".../v1"; a bare http://host:port gets "/v1",
  openai_base), `root` the server root, where SGLang-style admin routes live.
- Loopback servers are reached directly, whatever http_proxy says; others
  honour the proxy settings.
- timeout: seconds for one attempt: the connection, each wait for data, and
  the whole body, which may be at most max_response_bytes.
- A timeout, a connection error, HTTP 408, 429 and 5xx are retried up to
  max_retries times with exponential backoff (backoff * 2**attempt, capped at
  max_backoff, times a random factor in [0.5, 1) so that many workers do not
  retry in lock-step; a 429's Retry-After is honoured up to max_backoff).
  Other 4xx are not retried: the request itself is wrong. A parse function
  may refuse a 2xx body with a retryable ApiError (a reply that says "not yet").
- Every failure is an ApiError with a short reason ("timeout", "connection",
  "http_<status>", "bad_response") and a detail; the API key (read from the
  environment at each request, never stored) is scrubbed from the detail.
"""
from __future__ import annotations

import http.client
import json
import os
import random
import socket
import time
import urllib.error
import urllib.parse
import urllib.request
from typing import Callable, Optional

LOOPBACK_HOSTS = {"127.0.0.1", "localhost", "::1"}
_ERROR_BODY_LIMIT = 2048


def openai_base(url: str) -> str:
    """An OpenAI-compatible server's API root: the URL itself (".../v1", or any path), or for a
    bare server root (http://host:port) that root + "/v1"."""
    url = url.rstrip("/")
    return url if urllib.parse.urlsplit(url).path else url + "/v1"


def server_root(url: str) -> str:
    """The server root of an API root (".../v1" stripped): where SGLang-style admin routes live."""
    url = openai_base(url)
    return url[:-len("/v1")] if url.endswith("/v1") else url


def check_url(url, what: str) -> urllib.parse.SplitResult:
    """The parsed URL, or a ValueError naming `what` (a field or a flag) for anything but http(s)://host..."""
    parsed = urllib.parse.urlsplit(url if isinstance(url, str) else "")
    if parsed.scheme not in ("http", "https") or not parsed.hostname:
        raise ValueError(f"{what}: expected an http(s) URL such as http://127.0.0.1:8000/v1, got {url!r}")
    return parsed


class ApiError(Exception):
    """One attempt's failure: a short reason, a detail for people, whether a retry may help,
    and the delay the server asked for (a 429's Retry-After)."""

    def __init__(self, reason: str, detail: str, retry: bool = False, retry_after: Optional[float] = None):
        super().__init__(f"{reason}: {detail}")
        self.reason, self.detail, self.retry, self.retry_after = reason, detail, retry, retry_after


class Client:
    def __init__(self, url: str, *, timeout: float = 600.0, api_key_env: Optional[str] = None,
                 max_retries: int = 0, backoff: float = 0.5, max_backoff: float = 8.0,
                 max_response_bytes: int = 8 << 20, what: str = "url"):
        parsed = check_url(url, what)
        self.base, self.root = openai_base(url), server_root(url)
        self.timeout, self.api_key_env, self.max_retries = float(timeout), api_key_env, max_retries
        self.backoff, self.max_backoff, self.max_response_bytes = float(backoff), float(max_backoff), max_response_bytes
        handlers = [urllib.request.ProxyHandler({})] if parsed.hostname in LOOPBACK_HOSTS else []
        self._opener = urllib.request.build_opener(*handlers)
        self._rng = random.Random()

    def request(self, url: str, body: dict, parse: Optional[Callable[[bytes], object]] = None) -> object:
        """parse(response body) of POSTing `body` as JSON to `url` (default parse: JSON), with
        retries of the retryable failures; raises ApiError (also from parse, for a body it refuses)."""
        data = json.dumps(body).encode("utf-8")
        for attempt in range(self.max_retries + 1):
            try:
                return (parse or parse_json)(self.send(url, data))
            except ApiError as e:
                if not e.retry or attempt == self.max_retries:
                    raise
                time.sleep(self.delay(attempt, e.retry_after))
        raise AssertionError("unreachable")

    def served_models(self) -> Optional[list]:
        """The model ids GET {base}/models lists (None: a reply that is not a model list);
        raises ApiError when the server does not answer it."""
        raw = self.send(self.base + "/models")
        try:
            return [m["id"] for m in json.loads(raw)["data"]]
        except (ValueError, KeyError, TypeError):
            return None

    def send(self, url: str, data: Optional[bytes] = None) -> bytes:
        """One attempt, a GET (data None) or a POST: the body of a 2xx, else ApiError."""
        req = urllib.request.Request(url, data=data, headers=self.headers(), method="GET" if data is None else "POST")
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
            raise ApiError(f"http_{status}", self.scrub(f"HTTP {status}: {text[:300]}"),
                           status in (408, 429) or status >= 500,
                           _retry_after(e.headers) if status == 429 else None) from None
        except (TimeoutError, socket.timeout) as e:
            raise ApiError("timeout", f"no response within {self.timeout:g} s ({e})", True) from None
        except urllib.error.URLError as e:
            if isinstance(e.reason, (TimeoutError, socket.timeout)):
                raise ApiError("timeout", f"no response within {self.timeout:g} s", True) from None
            raise ApiError("connection", self.scrub(f"cannot reach {url}: {e.reason}"), True) from None
        except (ConnectionError, http.client.HTTPException, OSError) as e:
            raise ApiError("connection", self.scrub(f"{type(e).__name__}: {e}"), True) from None

    def delay(self, attempt: int, retry_after: Optional[float]) -> float:
        """Seconds before retry `attempt` + 1 (see the module docstring)."""
        if retry_after is not None:
            return min(retry_after, self.max_backoff)
        return min(self.max_backoff, self.backoff * 2 ** attempt) * self._rng.uniform(0.5, 1.0)

    def headers(self) -> dict:
        h = {"Content-Type": "application/json", "Accept": "application/json", "User-Agent": "sgpo-engine"}
        key = self._key()
        if key:
            h["Authorization"] = f"Bearer {key}"
        return h

    def scrub(self, text: str) -> str:
        """`text` with the API key (if any) blanked out."""
        key = self._key()
        return text.replace(key, "***") if key else text

    def _key(self) -> Optional[str]:
        return os.environ.get(self.api_key_env) if self.api_key_env else None

    def _read(self, resp, deadline: float) -> bytes:
        """The body, within the attempt's deadline and the size limit."""
        chunks, size = [], 0
        while True:
            if time.monotonic() > deadline:
                raise ApiError("timeout", f"body not received within {self.timeout:g} s", True)
            chunk = resp.read1(65536)
            if not chunk:
                return b"".join(chunks)
            size += len(chunk)
            if size > self.max_response_bytes:
                raise ApiError("bad_response", f"response larger than {self.max_response_bytes} bytes")
            chunks.append(chunk)


def parse_json(raw: bytes) -> object:
    """A JSON body, else ApiError("bad_response")."""
    try:
        return json.loads(raw)
    except ValueError as e:
        raise ApiError("bad_response", f"not JSON ({e}): {raw[:120].decode('utf-8', 'replace')!r}") from None


def _retry_after(headers) -> Optional[float]:
    try:
        return max(0.0, float(headers.get("Retry-After")))
    except (TypeError, ValueError):
        return None
