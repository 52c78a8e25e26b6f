"""`sgpo serve`: an OpenAI-compatible HTTP server over the engine's generate.

    sgpo serve --model DIR [--host 127.0.0.1] [--port 8000] [--served-model-name NAME]
    python -m sgpo_engine.serve --model DIR ...

Routes: GET /v1/models, POST /v1/chat/completions, POST /v1/completions,
GET /health, and SGLang's POST /update_weights_from_disk (below). Request fields: model (optional; must name the served model),
messages (chat: role + text content, or a list of {"type": "text"} parts) or
prompt (completions: a string, a list of strings, token ids, or lists of token
ids), max_tokens (or max_completion_tokens), temperature, top_p, top_k (-1 or
0 = off), min_p, n, stop (a string or a list), seed, logprobs (completions:
0; chat: true with top_logprobs 0: the sampled tokens' log-probs, in OpenAI's
format; top alternatives are not computed, so more is a 400), and vLLM's
return_token_ids (each choice gets token_ids and prompt_token_ids). Other
OpenAI fields are ignored; "stream": true is refused. Replies carry choices[].message.content
(chat) or choices[].text, finish_reason ("stop" | "length"), usage, and the
weight_version that generated them (also in /v1/models).

Weight updates (a trainer keeping this server on-policy), SGLang's contract:
POST /update_weights_from_disk {"model_path": DIR, "weight_version": "N"}
answers {"success": bool, "message": str}. The handler reads DIR's
safetensors (in the served dtype and device) and checks every tensor's name and
shape against the served model; a missing folder or any mismatch is a 400 and
the old weights keep serving. Then the worker thread copies the new weights in
between two generate calls: requests it is already running finish on the old
weights, later ones run on the new. weight_version is kept when not given.

Requests are tokenized in their handler thread (so a bad prompt is a 400 at
once), then queued; one worker thread owns the model and drains the queue,
running one `generate` call per set of requests with identical sampling
parameters (up to max_batch completions per call). A request with a seed runs
alone, so its seed gives the same text whatever else is queued. Malformed
requests get a 4xx JSON error {"error": {"message", "type"}}: bad JSON or
fields (400: also invalid Unicode such as a lone surrogate, JSON nested
deeper than Python can parse, more than max_completions completions (prompts
x n) in one request, a prompt too long for the context, refused by its size
before it is tokenized), no Content-Length (411), a body not received in full
within client_timeout seconds (408), a body over max_body_bytes (413), unknown
route or model (404), wrong method (405).

The server binds to loopback by default and has no authentication: bind
another address only on a trusted network.

Python API:
    server = Server(policy, host="127.0.0.1", port=0).start()   # port 0: any free port
    server.url  -> "http://127.0.0.1:<port>/v1"
    server.close()                                               # or `with Server(...) as s:`
"""
from __future__ import annotations

import argparse
import json
import logging
import math
import os
import queue
import sys
import threading
import time
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Callable, Optional

log = logging.getLogger("sgpo_engine.serve")

LOOPBACK = ("127.0.0.1", "localhost", "::1")
# path -> (method, handler method name)
ROUTES = {"/v1/models": ("GET", "_models"), "/health": ("GET", "_health"),
          "/v1/chat/completions": ("POST", "_chat_completions"), "/v1/completions": ("POST", "_completions"),
          "/update_weights_from_disk": ("POST", "_update_weights_from_disk")}
_DRAIN_LIMIT = 16 << 20  # an oversized body up to this size is read and dropped, so the client sees the 413
ROLES = ("system", "developer", "user", "assistant", "tool")


class APIError(Exception):
    """An error reply: HTTP status, message, OpenAI-style type."""

    def __init__(self, status: int, message: str, type_: str = "invalid_request_error"):
        super().__init__(message)
        self.status, self.message, self.type = status, message, type_


# ---------------------------------------------------------------------------
# request validation: body dict -> (prompt token ids, sampling parameters)
# ---------------------------------------------------------------------------
def _is_int(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_num(v) -> bool:
    return (isinstance(v, (int, float)) and not isinstance(v, bool)) and math.isfinite(v)


def _number(body: dict, name: str, default, lo: float, hi: float, lo_open: bool = False):
    v = body.get(name, default)
    if v is None:
        return default
    if not _is_num(v) or v < lo or v > hi or (lo_open and v == lo):
        raise APIError(400, f"{name}: expected a number in {'(' if lo_open else '['}{lo}, {hi}], got {v!r}")
    return float(v)


def _int(body: dict, name: str, default, lo: int, hi: int):
    v = body.get(name, default)
    if v is None:
        return default
    if not _is_int(v) or not lo <= v <= hi:
        raise APIError(400, f"{name}: expected an integer in [{lo}, {hi}], got {v!r}")
    return v


def _stop(body: dict) -> tuple:
    v = body.get("stop")
    if v is None:
        return ()
    if isinstance(v, str):
        v = [v]
    if not isinstance(v, list) or len(v) > 16 or not all(isinstance(s, str) and s for s in v):
        raise APIError(400, "stop: expected a non-empty string or a list of at most 16 non-empty strings")
    return tuple(v)


def _content(m: dict, i: int) -> str:
    c = m.get("content")
    if isinstance(c, str):
        return c
    if isinstance(c, list) and all(isinstance(p, dict) and p.get("type") == "text" and isinstance(p.get("text"), str)
                                   for p in c):
        return "".join(p["text"] for p in c)
    raise APIError(400, f"messages[{i}].content: expected a string or a list of text parts")


def _messages(body: dict) -> list[dict]:
    msgs = body.get("messages")
    if not isinstance(msgs, list) or not msgs:
        raise APIError(400, "messages: expected a non-empty list of {role, content} objects")
    out = []
    for i, m in enumerate(msgs):
        if not isinstance(m, dict):
            raise APIError(400, f"messages[{i}]: expected an object")
        if m.get("role") not in ROLES:
            raise APIError(400, f"messages[{i}].role: expected one of {', '.join(ROLES)}, got {m.get('role')!r}")
        out.append({"role": m["role"], "content": _content(m, i)})
    return out


def _prompts(body: dict) -> list:
    """A completions prompt as a list of prompts (each a str or a list of token ids)."""
    p = body.get("prompt")
    if isinstance(p, str):
        return [p]
    if isinstance(p, list) and p:
        if all(_is_int(t) for t in p):
            return [p]
        if all(isinstance(x, str) for x in p) or all(isinstance(x, list) and x and all(_is_int(t) for t in x)
                                                     for x in p):
            return list(p)
    raise APIError(400, "prompt: expected a string, a list of strings, or (lists of) token ids")


def output_options(body: dict, chat: bool) -> tuple[bool, bool]:
    """(logprobs, token ids) asked for by a request (checked)."""
    if chat:
        want = body.get("logprobs")
        if want is not None and not isinstance(want, bool):
            raise APIError(400, f"logprobs: expected true or false, got {want!r}")
        if _int(body, "top_logprobs", 0, 0, 20):
            raise APIError(400, "top_logprobs: only 0 is supported (the sampled tokens' log-probs)")
        want = bool(want)
    else:
        k = body.get("logprobs")
        if k is not None and (not _is_int(k) or k != 0):
            raise APIError(400, f"logprobs: only 0 is supported (the sampled tokens' log-probs), got {k!r}")
        want = k is not None
    ids = body.get("return_token_ids", False)
    if not isinstance(ids, bool):
        raise APIError(400, f"return_token_ids: expected true or false, got {ids!r}")
    return want, ids


def sampling_params(body: dict, default_max_tokens: int, max_n: int, context: int) -> dict:
    """The generate() keyword arguments of a request (checked)."""
    if body.get("stream"):
        raise APIError(400, "stream: streaming is not supported")
    max_tokens = body.get("max_tokens", body.get("max_completion_tokens"))
    top_k = _int(body, "top_k", 0, -1, 1 << 30)
    return dict(
        max_new_tokens=_int({"max_tokens": max_tokens}, "max_tokens", default_max_tokens, 1, context),
        temperature=_number(body, "temperature", 1.0, 0.0, 100.0),
        top_p=_number(body, "top_p", 1.0, 0.0, 1.0, lo_open=True),
        top_k=max(top_k, 0),
        min_p=_number(body, "min_p", 0.0, 0.0, 1.0),
        num_samples=_int(body, "n", 1, 1, max_n),
        stop=_stop(body),
        seed=_int(body, "seed", None, -(1 << 63), (1 << 63) - 1))


# ---------------------------------------------------------------------------
# batching: a queue of jobs drained by the one thread that runs the model
# ---------------------------------------------------------------------------
class Job:
    def __init__(self, prompts: list[list[int]], params: dict, fn: Optional[Callable] = None):
        self.prompts, self.params = prompts, params
        self.fn = fn                           # a barrier: run alone, between generate calls
        self.result: Optional[list] = None   # one list of Completions per prompt (a barrier: fn's value)
        self.error: Optional[BaseException] = None
        self.weight_version: Optional[str] = None  # what generated the result
        self.done = threading.Event()

    @property
    def size(self) -> int:
        return 0 if self.fn is not None else len(self.prompts) * self.params["num_samples"]

    def key(self):
        """Jobs with equal keys can share one generate call; a seeded job shares with none."""
        if self.params["seed"] is not None:
            return id(self)
        return tuple(sorted(self.params.items()))

    def finish(self, result=None, error=None):
        self.result, self.error = result, error
        self.done.set()


class Batcher:
    """Runs jobs through `generate_fn(prompts, **params)` on one worker thread."""

    def __init__(self, generate_fn: Callable, max_batch: int = 64, weight_version: str = "0"):
        self.generate_fn, self.max_batch = generate_fn, max_batch
        self.weight_version = weight_version  # changed only on the worker thread, by a barrier job
        self._queue: "queue.Queue[Optional[Job]]" = queue.Queue()
        self._closed = False
        self._lock = threading.Lock()  # no job slips into the queue after close() drained it
        self._thread = threading.Thread(target=self._loop, name="sgpo-serve-worker", daemon=True)
        self._thread.start()

    def submit(self, prompts: list[list[int]], params: dict, fn: Optional[Callable] = None) -> Job:
        """Queues a generate job, or with `fn` a barrier that runs fn() on the worker thread
        after every job queued before it and before any queued after it."""
        job = Job(prompts, params, fn)
        with self._lock:
            if self._closed:
                job.finish(error=APIError(503, "server is shutting down", "service_unavailable"))
            else:
                self._queue.put(job)
        return job

    def close(self, timeout: float = 10.0) -> None:
        with self._lock:
            self._closed = True
            self._queue.put(None)
        self._thread.join(timeout)
        while True:  # anything still queued will not run
            try:
                job = self._queue.get_nowait()
            except queue.Empty:
                break
            if job is not None:
                job.finish(error=APIError(503, "server is shutting down", "service_unavailable"))

    def _loop(self) -> None:
        carry: Optional[Job] = None  # taken off the queue but over the batch budget: first of the next batch
        while True:
            job, carry = (carry, None) if carry is not None else (self._queue.get(), None)
            if job is None:
                return
            if job.fn is not None:
                self._barrier(job)
                continue
            jobs, total, stop = [job], job.size, False
            while total < self.max_batch:  # take what else is waiting, without blocking
                try:
                    nxt = self._queue.get_nowait()
                except queue.Empty:
                    break
                if nxt is None:
                    stop = True
                    break
                if nxt.fn is not None or total + nxt.size > self.max_batch:
                    carry = nxt
                    break
                jobs.append(nxt)
                total += nxt.size
            groups: dict[Any, list[Job]] = {}
            for j in jobs:
                groups.setdefault(j.key(), []).append(j)
            for group in groups.values():
                self._run(group)
            if stop:
                if carry is not None:
                    self._barrier(carry) if carry.fn is not None else self._run([carry])
                return

    @staticmethod
    def _barrier(job: Job) -> None:
        try:
            job.finish(result=job.fn())
        except Exception as e:
            job.finish(error=e)

    def _run(self, jobs: list[Job]) -> None:
        """One generate call for jobs with the same parameters; if it fails, each
        job alone, so one bad prompt does not fail the requests batched with it."""
        try:
            out = self.generate_fn([p for j in jobs for p in j.prompts], **jobs[0].params)
        except Exception as e:
            if len(jobs) > 1:
                for j in jobs:
                    self._run([j])
                return
            log.debug("generate failed: %s: %s", type(e).__name__, e)
            jobs[0].finish(error=e)
            return
        start = 0
        for j in jobs:
            j.weight_version = self.weight_version
            j.finish(result=out[start:start + len(j.prompts)])
            start += len(j.prompts)


# ---------------------------------------------------------------------------
# HTTP
# ---------------------------------------------------------------------------
class Handler(BaseHTTPRequestHandler):
    server: "Server"
    server_version = "sgpo-serve"

    def setup(self):
        # seconds a client may take to send its request: idle sockets do not pin threads
        self.timeout = self.server.client_timeout
        super().setup()

    def log_message(self, fmt, *args):  # request lines go to the logger, not stderr
        log.debug("%s " + fmt, self.address_string(), *args)

    def send_error(self, code, message=None, explain=None):
        """http.server's own errors (bad request line, ...) as JSON too."""
        self._reply(code, {"error": {"message": message or self.responses.get(code, ("error",))[0],
                                     "type": "invalid_request_error"}})

    def _reply(self, status: int, payload: dict, headers: Optional[dict] = None) -> None:
        body = json.dumps(payload, ensure_ascii=False).encode("utf-8")
        try:
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            for k, v in (headers or {}).items():
                self.send_header(k, v)
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(body)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the client left

    def _dispatch(self, method: str) -> None:
        path = self.path.split("?", 1)[0]
        try:
            if path not in ROUTES:
                raise APIError(404, f"no route {path}", "not_found_error")
            allowed, handler = ROUTES[path]
            if method != allowed:
                raise APIError(405, f"{path} accepts {allowed}, not {method}", "method_not_allowed")
            payload = getattr(self, handler)()
            status, payload = payload if isinstance(payload, tuple) else (200, payload)
        except APIError as e:
            status, payload = e.status, {"error": {"message": e.message, "type": e.type}}
            if e.status == 405:
                self._reply(405, payload, {"Allow": ROUTES[path][0]})
                return
        except Exception as e:  # a bug must answer 500, not drop the connection
            log.exception("internal error on %s %s", method, path)
            status, payload = 500, {"error": {"message": f"internal error: {type(e).__name__}", "type": "server_error"}}
        self._reply(status, payload)

    def do_GET(self):
        self._dispatch("GET")

    def do_POST(self):
        self._dispatch("POST")

    def do_PUT(self):
        self._dispatch("PUT")

    def do_DELETE(self):
        self._dispatch("DELETE")

    def do_PATCH(self):
        self._dispatch("PATCH")

    # ------------------------------------------------------------------ body
    def _body(self) -> dict:
        if self.headers.get("Transfer-Encoding"):
            raise APIError(411, "chunked bodies are not supported: send Content-Length")
        length = self.headers.get("Content-Length")
        if length is None:
            raise APIError(411, "Content-Length required")
        try:
            n = int(length)
        except ValueError:
            raise APIError(400, f"Content-Length: not an integer: {length[:20]!r}") from None
        if n < 0:
            raise APIError(400, "Content-Length: negative")
        if n > self.server.max_body_bytes:
            self._drain(n)
            raise APIError(413, f"body of {n} bytes exceeds the limit of {self.server.max_body_bytes}")
        try:
            raw = self.rfile.read(n)
        except TimeoutError:  # the client holds the socket open without sending the rest
            self.close_connection = True
            raise APIError(408, f"body: {n} bytes (Content-Length) not received within "
                                f"{self.server.client_timeout:g} s", "timeout") from None
        if len(raw) != n:
            raise APIError(400, f"body: expected {n} bytes, got {len(raw)}")
        try:
            body = json.loads(raw.decode("utf-8"))
            json.dumps(body, ensure_ascii=False).encode("utf-8")  # "\ud800" parses to a str no tokenizer takes
        except RecursionError:
            raise APIError(400, "body: JSON nested too deeply") from None
        except UnicodeEncodeError as e:
            raise APIError(400, f"body: invalid Unicode in a string ({e.reason}: {e.object[e.start:e.end]!r})") from None
        except (UnicodeDecodeError, ValueError) as e:
            raise APIError(400, f"body: invalid JSON ({e})") from None
        if not isinstance(body, dict):
            raise APIError(400, "body: expected a JSON object")
        model = body.get("model")
        if model is not None and model != self.server.model_name:
            raise APIError(404, f"model {model!r} not found (serving {self.server.model_name!r})", "not_found_error")
        return body

    def _drain(self, n: int) -> None:
        """Reads and drops an oversized body (up to _DRAIN_LIMIT), so that the
        client, still sending, is not cut off before it can read the 413."""
        self.close_connection = True
        left = min(n, _DRAIN_LIMIT)
        try:
            while left > 0:
                chunk = self.rfile.read(min(left, 1 << 16))
                if not chunk:
                    break
                left -= len(chunk)
        except OSError:
            pass

    # ------------------------------------------------------------------ routes
    def _health(self) -> dict:
        return {"status": "ok"}

    def _models(self) -> dict:
        s = self.server
        return {"object": "list", "data": [{"id": s.model_name, "object": "model", "created": s.created,
                                            "owned_by": "sgpo-engine", "max_model_len": s.context,
                                            "weight_version": s.batcher.weight_version}]}

    def _update_weights_from_disk(self):
        body = self._body()
        path, version = body.get("model_path"), body.get("weight_version")
        if not isinstance(path, str) or not path:
            raise APIError(400, "model_path: expected the path of a model folder the server can read")
        if version is not None and not isinstance(version, (str, int)) or isinstance(version, bool):
            raise APIError(400, f"weight_version: expected a string, got {version!r}")
        try:
            state = self.server.read_weights(path)
        except ValueError as e:  # io's checks and ours name the file or tensor
            return 400, {"success": False, "message": str(e)}
        job = self.server.batcher.submit([], {}, fn=lambda: self.server.swap_weights(
            state, None if version is None else str(version)))
        if not job.done.wait(self.server.request_timeout):
            return 504, {"success": False, "message": "the worker did not reach the update in time"}
        if job.error is not None:
            return 500, {"success": False, "message": f"{type(job.error).__name__}: {job.error}"}
        return 200, {"success": True, "message": f"loaded {path}", "weight_version": job.result}

    def _chat_completions(self) -> dict:
        body = self._body()
        msgs = _messages(body)
        params = self._params(body)
        self._check_completions(1, params)
        self._check_text_size("messages", sum(len(m["content"]) for m in msgs))
        ids = self.server.encode_chat(msgs)
        logprobs, token_ids = output_options(body, chat=True)
        job = self._generate([ids], params)
        choices = [{"index": i, "message": {"role": "assistant", "content": c.text},
                    "logprobs": self._chat_logprobs(c) if logprobs else None,
                    "finish_reason": c.finish_reason, **self._token_ids(c, token_ids)}
                   for i, c in enumerate(job.result[0])]
        return self._completion("chatcmpl", "chat.completion", choices, [ids], job)

    def _completions(self) -> dict:
        body = self._body()
        prompts = _prompts(body)
        params = self._params(body)
        self._check_completions(len(prompts), params)
        for i, p in enumerate(prompts):
            if isinstance(p, str):
                self._check_text_size(f"prompt {i}", len(p))
        ids = [self.server.encode_text(p) if isinstance(p, str) else p for p in prompts]
        logprobs, token_ids = output_options(body, chat=False)
        job = self._generate(ids, params)
        choices = [{"index": i * params["num_samples"] + j, "text": c.text,
                    "logprobs": self._text_logprobs(c) if logprobs else None,
                    "finish_reason": c.finish_reason, **self._token_ids(c, token_ids)}
                   for i, g in enumerate(job.result) for j, c in enumerate(g)]
        return self._completion("cmpl", "text_completion", choices, ids, job)

    # ------------------------------------------------------------------ per-token outputs
    def _pieces(self, c) -> tuple[list[str], list[int]]:
        """What each completion token wrote, and where it starts (tokens that write parts of
        one character share it); special tokens included, as in c.token_ids."""
        text, spans = self.server.policy.tokenizer.decode_with_offsets(c.token_ids)
        return [text[a:b] for a, b in spans], [a for a, _ in spans]

    def _text_logprobs(self, c) -> dict:
        """OpenAI's completions format; text_offset counts from the completion's start."""
        pieces, offsets = self._pieces(c)
        return {"tokens": pieces, "token_logprobs": [float(x) for x in c.logprobs], "top_logprobs": None,
                "text_offset": offsets}

    def _chat_logprobs(self, c) -> dict:
        pieces, _ = self._pieces(c)
        return {"content": [{"token": p, "logprob": float(x), "bytes": list(p.encode("utf-8")), "top_logprobs": []}
                            for p, x in zip(pieces, c.logprobs)]}

    @staticmethod
    def _token_ids(c, wanted: bool) -> dict:
        return {"token_ids": list(c.token_ids), "prompt_token_ids": list(c.prompt_ids)} if wanted else {}

    # ------------------------------------------------------------------ helpers
    def _params(self, body: dict) -> dict:
        s = self.server
        return sampling_params(body, s.default_max_tokens, s.max_n, s.context)

    def _check_completions(self, prompts: int, params: dict) -> None:
        total, cap = prompts * params["num_samples"], self.server.max_completions
        if total > cap:
            raise APIError(400, f"n: {prompts} prompt(s) x n = {params['num_samples']} asks for {total} "
                                f"completions; the limit per request is {cap}")

    def _check_text_size(self, where: str, chars: int) -> None:
        """Refuses text that cannot fit the context before tokenizing it (Tokenizer.max_token_chars)."""
        s = self.server
        if chars > s.context * s.max_token_chars:
            raise APIError(400, f"{where}: {chars} characters cannot fit the model's context of {s.context} "
                                f"tokens (this tokenizer needs a token per {s.max_token_chars} characters at least)")

    def _generate(self, ids: list[list[int]], params: dict) -> Job:
        s = self.server
        for i, p in enumerate(ids):
            if not p:
                raise APIError(400, f"prompt {i}: empty after tokenization")
            if len(p) >= s.context:
                raise APIError(400, f"prompt {i}: {len(p)} tokens leave no room to generate "
                                    f"(the model's context is {s.context} tokens)")
        job = s.batcher.submit(ids, params)
        if not job.done.wait(s.request_timeout):
            raise APIError(504, f"generation did not finish within {s.request_timeout:g} s", "timeout")
        if isinstance(job.error, APIError):
            raise job.error
        if isinstance(job.error, ValueError):  # generate's checks: the request is wrong
            raise APIError(400, str(job.error))
        if job.error is not None:
            raise job.error
        return job

    def _completion(self, prefix: str, obj: str, choices: list, ids: list, job: Job) -> dict:
        prompt_tokens = sum(len(p) for p in ids)
        completion_tokens = sum(len(c.token_ids) for g in job.result for c in g)
        return {"id": f"{prefix}-{uuid.uuid4().hex}", "object": obj, "created": int(time.time()),
                "model": self.server.model_name, "weight_version": job.weight_version, "choices": choices,
                "usage": {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
                          "total_tokens": prompt_tokens + completion_tokens}}


class Server(ThreadingHTTPServer):
    """The HTTP server, its batcher and the policy it serves."""
    daemon_threads = True
    allow_reuse_address = True
    # socketserver's default backlog of 5 drops connections when many clients
    # connect at once (each dropped SYN costs the client a 1 s retransmit)
    request_queue_size = 128

    def __init__(self, policy, host: str = "127.0.0.1", port: int = 8000, *, model_name: Optional[str] = None,
                 max_batch: int = 64, max_body_bytes: int = 4 << 20, default_max_tokens: int = 256,
                 max_n: int = 64, max_completions: int = 256, request_timeout: float = 600.0,
                 client_timeout: float = 60.0, weight_version: str = "0", generate_fn: Optional[Callable] = None):
        if policy.tokenizer is None:
            raise ValueError("policy: the served model needs a tokenizer (tokenizer.json)")
        self.policy, self.model_name = policy, model_name or "sgpo-model"
        self.context = int(policy.config.max_position_embeddings)
        self.max_body_bytes, self.default_max_tokens = max_body_bytes, default_max_tokens
        self.max_n, self.request_timeout, self.created = max_n, request_timeout, int(time.time())
        self.max_completions, self.client_timeout = max_completions, client_timeout
        self.max_token_chars = policy.tokenizer.max_token_chars()
        if generate_fn is None:
            from ..generation import generate

            def generate_fn(prompts, **params):
                return generate(policy, prompts, **params)
        self.batcher = Batcher(generate_fn, max_batch, weight_version)
        if host not in LOOPBACK:
            log.warning("binding %s: the server has no authentication; anyone who can reach it can use it", host)
        try:
            super().__init__((host, port), Handler)
        except BaseException:
            self.batcher.close()
            raise
        self._thread: Optional[threading.Thread] = None

    @property
    def url(self) -> str:
        """The API root, for OpenAI clients (e.g. HTTPJudge's base_url)."""
        host, port = self.server_address[:2]
        host = f"[{host}]" if ":" in host else host
        return f"http://{host}:{port}/v1"

    def read_weights(self, path: str) -> dict:
        """A model folder's tensors in the served dtype and device, checked against the served
        model name by name and shape (ValueError naming the first difference)."""
        from ..model.io import read_folder
        _, decoder, _, _ = read_folder(path, dtype=self.policy.dtype, device=self.policy.device, tokenizer=False)
        new, old = decoder.state_dict(), self.policy.state_dict()
        for name in sorted(set(old) | set(new)):
            if name not in new or name not in old:
                raise ValueError(f"{path}: tensor {name} is {'missing' if name not in new else 'not in the served model'}")
            if new[name].shape != old[name].shape:
                raise ValueError(f"{path}: tensor {name}: shape {tuple(new[name].shape)}, the served model's is "
                                 f"{tuple(old[name].shape)}")
        return new

    def swap_weights(self, state: dict, version: Optional[str]) -> str:
        """Copies `state` into the served model; runs on the worker thread, between generate calls."""
        import torch
        with torch.no_grad():
            for name, t in self.policy.state_dict().items():
                t.copy_(state[name])
        if version is not None:
            self.batcher.weight_version = version
        log.info("weights updated (weight_version %s)", self.batcher.weight_version)
        return self.batcher.weight_version

    # tokenization happens in the handler thread, so a bad prompt is a 400 before queueing
    def encode_chat(self, messages: list[dict]) -> list[int]:
        try:
            return list(self.policy.tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=True))
        except Exception as e:  # a template may refuse a conversation (raise_exception, no template)
            raise APIError(400, f"messages: cannot apply the chat template ({type(e).__name__}: {e})") from None

    def encode_text(self, text: str) -> list[int]:
        return list(self.policy.tokenizer.encode(text, add_special_tokens=True))

    def start(self) -> "Server":
        """Serves on a background thread; returns self."""
        # a short poll interval: close() (shutdown) waits up to one interval
        self._thread = threading.Thread(target=self.serve_forever, kwargs={"poll_interval": 0.05},
                                        name="sgpo-serve", daemon=True)
        self._thread.start()
        return self

    def close(self) -> None:
        if self._thread is not None:
            self.shutdown()
            self._thread.join(10)
            self._thread = None
        self.server_close()
        self.batcher.close()

    def __enter__(self) -> "Server":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


# ---------------------------------------------------------------------------
# command line
# ---------------------------------------------------------------------------
def _add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", required=True, help="Hugging Face-format model folder, or builtin:arith")
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default loopback: 127.0.0.1)")
    p.add_argument("--port", type=int, default=8000, help="port (0: any free port)")
    p.add_argument("--served-model-name", default=None, help="the model id clients send (default: folder name)")
    p.add_argument("--dtype", default=None, help="fp32, bf16 or fp16 (default: the checkpoint's)")
    p.add_argument("--device", default=None, help="cpu (default) or cuda")
    p.add_argument("--max-batch", type=int, default=64, help="most completions per generate call")
    p.add_argument("--max-body-bytes", type=int, default=4 << 20, help="largest request body accepted")
    p.add_argument("--default-max-tokens", type=int, default=256, help="max_tokens when a request gives none")
    p.add_argument("--max-n", type=int, default=64, help="largest n accepted")
    p.add_argument("--max-completions", type=int, default=256, help="most completions (prompts x n) per request")
    p.add_argument("--weight-version", default="0", help="the weight_version reported until an update")
    p.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: OMP_NUM_THREADS, else all CPUs)")
    p.add_argument("--log-level", default="INFO")


def _run(args: argparse.Namespace) -> int:
    import torch

    from ..tasks.factory import load_policy
    from ..threads import cpu_threads

    torch.set_num_threads(cpu_threads(args.threads, 1))
    logging.basicConfig(level=args.log_level.upper(), format="%(asctime)s %(name)s %(levelname)s %(message)s")
    policy = load_policy(args.model, dtype=args.dtype, device=args.device)
    name = args.served_model_name or os.path.basename(os.path.normpath(args.model))
    server = Server(policy, args.host, args.port, model_name=name, max_batch=args.max_batch,
                    max_body_bytes=args.max_body_bytes, default_max_tokens=args.default_max_tokens, max_n=args.max_n,
                    max_completions=args.max_completions, weight_version=args.weight_version)
    print(f"sgpo serve: {name} at {server.url}", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.close()
    return 0


def add_parser(subparsers) -> argparse.ArgumentParser:
    """Adds the `serve` command to an argparse subparsers object; args.func(args) runs it."""
    p = subparsers.add_parser("serve", help="OpenAI-compatible server over a model",
                              description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    _add_arguments(p)
    p.set_defaults(func=_run)
    return p


def main(argv: Optional[list[str]] = None) -> int:
    p = argparse.ArgumentParser(prog="sgpo serve", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    _add_arguments(p)
    return _run(p.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
