"""Helpers of tests/test_train.py and bench/bench_train.py.

- `save_tiny_policy(path, seed)`: a fresh (random) task model saved as an HF folder.
- `JudgeServer`: a deterministic OpenAI-compatible chat server acting as the
  step judge (`judge = "http"`). A random tiny model never writes a correct
  line of the built-in task, so the exact judge scores every response RTS 0 and
  every advantage is 0; this judge instead names a first error that depends
  only on the request (a hash of it), so RTS varies inside all-negative groups,
  SGPO credit gives non-zero advantages, and runs in subprocesses (the CLI,
  torchrun) have something to learn, reproducibly.
- `subprocess_env()`, `free_port()`, `run(cmd, timeout)`, `read_weights(dir)`.
"""
from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import sys
import threading
import zlib
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def save_tiny_policy(path: str, seed: int = 0) -> str:
    from sgpo_engine import tasks
    tasks.new_policy(seed=seed).save(path)
    return path


def read_weights(path: str) -> dict:
    """name -> tensor of a saved model folder (single safetensors file)."""
    from safetensors.torch import load_file
    return load_file(os.path.join(path, "model.safetensors"))


def subprocess_env(**extra) -> dict:
    env = dict(os.environ)
    env["PYTHONPATH"] = ROOT + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    env.update(OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", TOKENIZERS_PARALLELISM="false")
    env.pop("WORLD_SIZE", None), env.pop("RANK", None), env.pop("LOCAL_RANK", None)
    env.update({k: str(v) for k, v in extra.items()})
    return env


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run(cmd: list, timeout: float, **kw) -> subprocess.CompletedProcess:
    """A subprocess with a hard timeout (its whole process group is killed)."""
    p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT,
                         env=kw.pop("env", None) or subprocess_env(), start_new_session=True, **kw)
    try:
        out, err = p.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(p.pid, 9)
        out, err = p.communicate()
        raise AssertionError(f"timed out after {timeout}s: {' '.join(cmd)}\n{out[-2000:]}\n{err[-4000:]}")
    return subprocess.CompletedProcess(cmd, p.returncode, out, err)


def cli(*args) -> list:
    return [sys.executable, "-m", "sgpo_engine.cli", *map(str, args)]


# ----------------------------------------------------------------------
# a deterministic step judge over HTTP
# ----------------------------------------------------------------------
_STEPS = re.compile(r'<solution steps="(\d+)">')


def fake_first_error(content: str):
    """None (all steps correct) or a 1-based step, from a hash of the request."""
    n = int(_STEPS.findall(content)[-1])
    h = zlib.crc32(content.encode())
    return None if h % (n + 1) == n else 1 + h % n


class _Handler(BaseHTTPRequestHandler):
    def log_message(self, *args):
        pass

    def do_POST(self):
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        content = body["messages"][-1]["content"]
        k = fake_first_error(content)
        self.server.requests += 1
        text = f"FIRST_ERROR: {'none' if k is None else k}"
        reply = json.dumps({"id": "x", "object": "chat.completion", "model": body.get("model", ""),
                            "choices": [{"index": 0, "finish_reason": "stop",
                                         "message": {"role": "assistant", "content": text}}]}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(reply)))
        self.end_headers()
        self.wfile.write(reply)


class JudgeServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self):
        super().__init__(("127.0.0.1", 0), _Handler)
        self.requests = 0
        self.thread = threading.Thread(target=self.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}/v1"

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.shutdown()
        self.server_close()
