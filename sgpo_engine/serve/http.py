"""The HTTP transport of `sgpo serve`, and nothing else.

Here: Handler, the BaseHTTPRequestHandler that serves one connection on its
own thread: it reads a request body within its limits (a Content-Length, the
size limit, the client timeout), finds the route function of a path and
method (ROUTES), and writes the reply, or the error, as JSON. And Server, the
ThreadingHTTPServer that binds the socket and holds what the routes read: the
Worker, the Limits, the served model's name and the timeouts.

Not here: what a body may say and the replies' shapes (protocol.py), what a
route does (routes.py), the model's thread (worker.py).
"""
from __future__ import annotations

import json
import logging
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Callable, Optional

from ..http_client import LOOPBACK_HOSTS
from . import routes
from .protocol import APIError, Limits, check_model, error_response, parse_body
from .worker import Batcher, Worker

log = logging.getLogger("sgpo_engine.serve")

# path -> (method, route: (server, body; None for GET) -> reply, or (status, reply))
ROUTES = {"/v1/models": ("GET", routes.models), "/health": ("GET", routes.health),
          "/v1/chat/completions": ("POST", routes.chat_completions), "/v1/completions": ("POST", routes.completions),
          "/update_weights_from_disk": ("POST", routes.update_weights_from_disk)}
_DRAIN_LIMIT = 16 << 20  # an oversized body up to this size is read and dropped, so the client sees the 413


class Handler(BaseHTTPRequestHandler):
    """One connection's requests, on its own thread (ThreadingHTTPServer makes one per connection)."""
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
        self._reply(code, error_response(message or self.responses.get(code, ("error",))[0], "invalid_request_error"))

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
            status, payload = self._route(method, path)
        except APIError as e:
            status, payload = e.status, error_response(e.message, e.type)
            if e.status == 405:
                self._reply(405, payload, {"Allow": ROUTES[path][0]})
                return
        except Exception as e:  # a bug must answer 500, not drop the connection
            log.exception("internal error on %s %s", method, path)
            status, payload = 500, error_response(f"internal error: {type(e).__name__}", "server_error")
        self._reply(status, payload)

    def _route(self, method: str, path: str) -> tuple[int, dict]:
        """(status, reply) of the route that takes `method` on `path` (APIError 404 or 405 when
        none does); a POST route gets the request's body, read and parsed."""
        if path not in ROUTES:
            raise APIError(404, f"no route {path}", "not_found_error")
        allowed, route = ROUTES[path]
        if method != allowed:
            raise APIError(405, f"{path} accepts {allowed}, not {method}", "method_not_allowed")
        reply = route(self.server, self._body() if method == "POST" else None)
        return reply if isinstance(reply, tuple) else (200, reply)

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
        """The request's JSON object; a "model" in it must name the served model."""
        body = parse_body(self._read_body())
        check_model(body, self.server.model_name)
        return body

    def _read_body(self) -> bytes:
        """The body's bytes: Content-Length of them, at most max_body_bytes, within client_timeout."""
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
        return raw

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


class Server(ThreadingHTTPServer):
    """The HTTP server, and what its routes read: the Worker (the policy it serves),
    the Limits, the served model's name and the timeouts."""
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
        self.model_name, self.created = model_name or "sgpo-model", int(time.time())
        self.limits = Limits(context=int(policy.config.max_position_embeddings),
                             max_token_chars=policy.tokenizer.max_token_chars(),
                             default_max_tokens=default_max_tokens, max_n=max_n, max_completions=max_completions)
        self.max_body_bytes, self.client_timeout, self.request_timeout = max_body_bytes, client_timeout, request_timeout
        self.worker = Worker(policy, max_batch, weight_version, generate_fn)
        if host not in LOOPBACK_HOSTS:
            log.warning("binding %s: the server has no authentication; anyone who can reach it can use it", host)
        try:
            super().__init__((host, port), Handler)
        except BaseException:
            self.worker.close()
            raise
        self._thread: Optional[threading.Thread] = None

    @property
    def url(self) -> str:
        """The API root, for OpenAI clients (e.g. HTTPJudge's base_url)."""
        host, port = self.server_address[:2]
        host = f"[{host}]" if ":" in host else host
        return f"http://{host}:{port}/v1"

    # The routes tokenize through these, in the handler thread (a bad prompt is a 400 before
    # it is queued); on the server, so that one server's can be replaced (tests/test_serve.py
    # does, to see a prompt too long for the context refused before it is tokenized).
    def encode_chat(self, messages: list[dict]) -> list[int]:
        return self.worker.encode_chat(messages)

    def encode_text(self, text: str) -> list[int]:
        return self.worker.encode_text(text)

    @property
    def batcher(self) -> Batcher:
        """The worker's (its queue, its weight_version)."""
        return self.worker.batcher

    @property
    def max_token_chars(self) -> int:
        return self.limits.max_token_chars

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
        self.worker.close()

    def __enter__(self) -> "Server":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
