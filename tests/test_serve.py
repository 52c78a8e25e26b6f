"""`sgpo serve`: the OpenAI-compatible server over a tiny random model, on
loopback, on an ephemeral port. Also home of the helpers other tests use to
get a tiny chat model and a running server (tiny_chat_model_dir, serving)."""
from __future__ import annotations

import contextlib
import functools
import http.client
import json
import shutil
import socket
import tempfile
import threading
import time
import urllib.request

import pytest

from sgpo_engine.serve import Batcher, Server, main, sampling_params

CONTEXT = 4096  # judge prompts are long; the tiny model must take them


# ---------------------------------------------------------------------------
# helpers shared with tests/test_judge_http.py
# ---------------------------------------------------------------------------
@functools.lru_cache(maxsize=None)
def tiny_chat_model_dir() -> str:
    """A tiny random Llama with a byte-level BPE tokenizer and a chat template,
    saved once per test session in HF format (removed at exit)."""
    from tiny_models import MODEL_VOCAB, write_tokenizer  # tests/tiny_models.py

    from sgpo_engine.model import ModelConfig, Policy, Tokenizer
    path = tempfile.mkdtemp(prefix="sgpo-tiny-chat-")
    import atexit
    atexit.register(shutil.rmtree, path, True)
    write_tokenizer(path)
    cfg = ModelConfig("LlamaForCausalLM", vocab_size=MODEL_VOCAB, hidden_size=32, intermediate_size=64,
                      num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                      max_position_embeddings=CONTEXT, bos_token_id=0, eos_token_id=1, pad_token_id=2)
    Policy.from_config(cfg, Tokenizer.from_folder(path), seed=0).save(path)
    return path


@functools.lru_cache(maxsize=None)
def tiny_chat_policy():
    import sgpo_engine
    return sgpo_engine.load(tiny_chat_model_dir())


@contextlib.contextmanager
def serving(policy=None, **kwargs):
    """A Server on 127.0.0.1, any free port, stopped on exit."""
    server = Server(policy or tiny_chat_policy(), "127.0.0.1", 0, model_name="tiny", **kwargs).start()
    try:
        yield server
    finally:
        server.close()


def request(url, method="GET", body=None, raw=None, headers=None, timeout=30):
    """(status, parsed JSON) of one request; 4xx/5xx are returned, not raised."""
    data = raw if raw is not None else (None if body is None else json.dumps(body).encode())
    req = urllib.request.Request(url, data=data, method=method,
                                 headers={"Content-Type": "application/json", **(headers or {})})
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    try:
        with opener.open(req, timeout=timeout) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        with e:
            return e.code, json.loads(e.read())


@pytest.fixture(scope="module")
def server():
    with serving() as s:
        yield s


# ---------------------------------------------------------------------------
# routes
# ---------------------------------------------------------------------------
def test_models_and_health(server):
    assert server.url.startswith("http://127.0.0.1:") and server.server_address[0] == "127.0.0.1"
    status, body = request(server.url + "/models")
    assert status == 200 and body["object"] == "list"
    assert body["data"][0]["id"] == "tiny" and body["data"][0]["max_model_len"] == CONTEXT
    assert request(server.url.removesuffix("/v1") + "/health") == (200, {"status": "ok"})


def test_chat_completion(server):
    status, body = request(server.url + "/chat/completions", "POST", {
        "model": "tiny", "messages": [{"role": "system", "content": "Be brief."},
                                      {"role": "user", "content": [{"type": "text", "text": "Hi"}]}],
        "max_tokens": 5, "temperature": 0, "n": 2})
    assert status == 200, body
    assert body["object"] == "chat.completion" and body["model"] == "tiny" and body["id"].startswith("chatcmpl-")
    assert [c["index"] for c in body["choices"]] == [0, 1]
    for c in body["choices"]:
        assert c["message"]["role"] == "assistant" and isinstance(c["message"]["content"], str)
        assert c["finish_reason"] in ("stop", "length")
    assert body["choices"][0]["message"]["content"] == body["choices"][1]["message"]["content"]  # greedy
    u = body["usage"]
    assert u["prompt_tokens"] > 5 and 1 <= u["completion_tokens"] <= 10
    assert u["total_tokens"] == u["prompt_tokens"] + u["completion_tokens"]


def test_completions_prompt_forms(server):
    status, body = request(server.url + "/completions", "POST", {
        "prompt": ["12+3=", "abc"], "max_tokens": 4, "n": 2, "temperature": 1.0, "top_p": 0.9, "top_k": -1,
        "min_p": 0.05, "seed": 7, "stop": ["\n"]})
    assert status == 200, body
    assert body["object"] == "text_completion" and [c["index"] for c in body["choices"]] == [0, 1, 2, 3]
    assert all(isinstance(c["text"], str) and "\n" not in c["text"] for c in body["choices"])
    # seeded: the same request gives the same texts
    again = request(server.url + "/completions", "POST", {
        "prompt": ["12+3=", "abc"], "max_tokens": 4, "n": 2, "temperature": 1.0, "top_p": 0.9, "top_k": -1,
        "min_p": 0.05, "seed": 7, "stop": ["\n"]})[1]
    assert [c["text"] for c in again["choices"]] == [c["text"] for c in body["choices"]]
    status, body = request(server.url + "/completions", "POST", {"prompt": [0, 40, 41], "max_tokens": 3,
                                                                  "temperature": 0})
    assert status == 200 and body["usage"]["prompt_tokens"] == 3 and len(body["choices"]) == 1


# ---------------------------------------------------------------------------
# malformed requests: 4xx JSON errors
# ---------------------------------------------------------------------------
def _error(status_body, status, type_=None):
    st, body = status_body
    assert st == status, body
    assert set(body) == {"error"} and isinstance(body["error"]["message"], str) and body["error"]["type"]
    if type_:
        assert body["error"]["type"] == type_
    return body["error"]["message"]


CHAT_OK = {"messages": [{"role": "user", "content": "hi"}], "max_tokens": 2}


@pytest.mark.parametrize("body,needle", [
    ({}, "messages"),
    ({"messages": []}, "messages"),
    ({"messages": "hi"}, "messages"),
    ({"messages": [{"role": "wizard", "content": "x"}]}, "role"),
    ({"messages": [{"role": "user"}]}, "content"),
    ({"messages": [{"role": "user", "content": 5}]}, "content"),
    ({**CHAT_OK, "max_tokens": 0}, "max_tokens"),
    ({**CHAT_OK, "max_tokens": "8"}, "max_tokens"),
    ({**CHAT_OK, "max_tokens": True}, "max_tokens"),
    ({**CHAT_OK, "temperature": -1}, "temperature"),
    ({**CHAT_OK, "temperature": "hot"}, "temperature"),
    ({**CHAT_OK, "top_p": 0}, "top_p"),
    ({**CHAT_OK, "top_p": 1.5}, "top_p"),
    ({**CHAT_OK, "top_k": 2.5}, "top_k"),
    ({**CHAT_OK, "min_p": 2}, "min_p"),
    ({**CHAT_OK, "n": 0}, "n"),
    ({**CHAT_OK, "n": 10_000}, "n"),
    ({**CHAT_OK, "stop": [""]}, "stop"),
    ({**CHAT_OK, "stop": 3}, "stop"),
    ({**CHAT_OK, "seed": "x"}, "seed"),
    ({**CHAT_OK, "stream": True}, "stream"),
])
def test_chat_bad_fields(server, body, needle):
    assert needle in _error(request(server.url + "/chat/completions", "POST", body), 400, "invalid_request_error")


@pytest.mark.parametrize("body,needle", [
    ({"max_tokens": 2}, "prompt"),
    ({"prompt": []}, "prompt"),
    ({"prompt": [[]]}, "prompt"),
    ({"prompt": [1, "a"]}, "prompt"),
    ({"prompt": None}, "prompt"),
    ({"prompt": [10**9], "max_tokens": 2}, "vocabulary"),        # generate's own check, as a 400
    ({"prompt": [5] * CONTEXT, "max_tokens": 2}, "context"),
])
def test_completions_bad_fields(server, body, needle):
    assert needle in _error(request(server.url + "/completions", "POST", body), 400)


def test_bad_json_routes_methods_model(server):
    url = server.url
    assert "JSON" in _error(request(url + "/chat/completions", "POST", raw=b"{not json"), 400)
    assert "JSON" in _error(request(url + "/chat/completions", "POST", raw=b"\xff\xfe"), 400)
    assert "object" in _error(request(url + "/chat/completions", "POST", raw=b"[1, 2]"), 400)
    _error(request(url + "/nope"), 404, "not_found_error")
    _error(request(url + "/chat/completions/extra", "POST", CHAT_OK), 404)
    _error(request(url + "/chat/completions"), 405, "method_not_allowed")
    _error(request(url + "/models", "POST", {}), 405)
    _error(request(url + "/completions", "DELETE"), 405)
    assert "not found" in _error(request(url + "/chat/completions", "POST", {**CHAT_OK, "model": "gpt-9"}), 404)


def test_oversized_body_and_missing_length():
    with serving(max_body_bytes=1024) as s:
        big = {"messages": [{"role": "user", "content": "x" * 5000}]}
        _error(request(s.url + "/chat/completions", "POST", big), 413)
        host, port = s.server_address[:2]
        conn = http.client.HTTPConnection(host, port, timeout=10)
        conn.putrequest("POST", "/v1/chat/completions")
        conn.putheader("Content-Type", "application/json")
        conn.endheaders()  # no Content-Length, no body
        r = conn.getresponse()
        assert r.status == 411 and "error" in json.loads(r.read())
        conn.close()
        # http.server's own errors (a garbage request line, an unknown method) are JSON too
        for line, code in ((b"GET /v1/models extra HTTP/1.1", "400"), (b"BREW /v1/models HTTP/1.1", "501")):
            with socket.create_connection((host, port), timeout=10) as sock:
                sock.sendall(line + b"\r\n\r\n")
                reply = sock.makefile("rb").read().decode("latin-1")
            assert reply.split()[1] == code and reply.endswith("}") and '"error"' in reply, reply
        # and the server still works
        assert request(s.url + "/models")[0] == 200


def test_inputs_that_once_raised_are_named_4xx(server):
    """Each of these answered 500 (a TypeError, a RecursionError, a timeout) before."""
    url = server.url
    lone = b'{"messages": [{"role": "user", "content": "1+\\ud800="}], "max_tokens": 2}'
    assert "Unicode" in _error(request(url + "/chat/completions", "POST", raw=lone), 400)
    assert "Unicode" in _error(request(url + "/completions", "POST", raw=b'{"prompt": "\\udfff", "max_tokens": 2}'), 400)
    deep = b'{"prompt": ' + b"[" * 2000 + b"]" * 2000 + b"}"
    assert "nested" in _error(request(url + "/completions", "POST", raw=deep), 400)
    assert request(url + "/models")[0] == 200


def test_body_shorter_than_its_length_is_a_408():
    with serving(client_timeout=1.0) as s:
        host, port = s.server_address[:2]
        with socket.create_connection((host, port), timeout=30) as sock:
            sock.sendall(b"POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                         b"Content-Length: 100\r\n\r\n{\"prompt\": ")  # then silence, socket held open
            reply = sock.makefile("rb").read().decode("latin-1")
        assert reply.split()[1] == "408" and "not received" in reply, reply
        assert request(s.url + "/models")[0] == 200


def test_completions_per_request_are_capped(server):
    body = {"prompt": ["1+1="] * 16, "n": 17, "max_tokens": 1}  # 272 > the default 256
    assert "limit per request is 256" in _error(request(server.url + "/completions", "POST", body), 400)
    chat = {**CHAT_OK, "n": 9}
    with serving(max_completions=8) as s:
        assert "limit per request is 8" in _error(request(s.url + "/chat/completions", "POST", chat), 400)
        assert request(s.url + "/chat/completions", "POST", {**CHAT_OK, "n": 8})[0] == 200


def test_a_prompt_too_long_for_the_context_is_refused_before_tokenizing():
    with serving() as s:
        def no_tokenizing(*a, **k):
            raise AssertionError("tokenized")
        s.encode_text = s.encode_chat = no_tokenizing
        long = "x" * (CONTEXT * s.max_token_chars + 1)
        assert "cannot fit" in _error(request(s.url + "/completions", "POST", {"prompt": long, "max_tokens": 1}), 400)
        msgs = {"messages": [{"role": "user", "content": long}]}
        assert "cannot fit" in _error(request(s.url + "/chat/completions", "POST", msgs), 400)


# ---------------------------------------------------------------------------
# batching
# ---------------------------------------------------------------------------
def _wait_for(cond, timeout=10.0):
    deadline = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < deadline, "timed out waiting"
        time.sleep(0.01)


def test_concurrent_requests_share_generate_calls():
    """Requests queued together with equal parameters run in one generate call;
    different parameters and seeded requests run apart; results go back to
    the right requests."""
    calls = []
    entered, gate = threading.Event(), threading.Event()

    class C:
        def __init__(self, text):
            self.text, self.token_ids, self.finish_reason = text, [1, 2], "length"

    def fake_generate(prompts, **params):
        entered.set()
        gate.wait(10)  # hold the first call so that the other requests queue up behind it
        calls.append((len(prompts), params["max_new_tokens"], params["seed"]))
        return [[C(f"{p[0]}-{params['max_new_tokens']}") for _ in range(params["num_samples"])] for p in prompts]

    with serving(generate_fn=fake_generate) as s:
        results = {}

        def post(i, max_tokens, seed=None):
            body = {"prompt": [[100 + i]], "max_tokens": max_tokens, "seed": seed}
            results[i] = request(s.url + "/completions", "POST", body)

        threads = [threading.Thread(target=post, args=(0, 3))]
        threads[0].start()
        _wait_for(entered.is_set)
        threads += [threading.Thread(target=post, args=(i, 3 if i % 2 else 4, 9 if i == 7 else None))
                    for i in range(1, 9)]
        for t in threads[1:]:
            t.start()
        _wait_for(lambda: s.batcher._queue.qsize() == 8)
        gate.set()
        for t in threads:
            t.join(10)
    for i in range(9):
        status, body = results[i]
        assert status == 200 and body["choices"][0]["text"] == f"{100 + i}-{3 if i % 2 or i == 0 else 4}"
    assert calls[0] == (1, 3, None)
    # then 1, 3, 5 (max_tokens 3) in one call, 2, 4, 6, 8 (max_tokens 4) in one, 7 (seeded) alone
    assert sorted(calls[1:], key=str) == sorted([(3, 3, None), (4, 4, None), (1, 3, 9)], key=str)


def test_batcher_isolates_a_failing_request():
    def gen(prompts, **params):
        if any(p == [666] for p in prompts):
            raise ValueError("bad prompt")
        return [[p[0]] for p in prompts]
    b = Batcher(gen)
    try:
        params = sampling_params({}, 8, 4, 64)
        jobs = [b.submit([[1]], params), b.submit([[666]], params), b.submit([[3]], params)]
        for j in jobs:
            assert j.done.wait(5)
        assert jobs[0].result == [[1]] and jobs[2].result == [[3]]
        assert isinstance(jobs[1].error, ValueError)
    finally:
        b.close()
    late = b.submit([[1]], params)
    assert late.done.is_set() and late.error.status == 503


def test_batcher_respects_max_batch():
    entered, gate, sizes = threading.Event(), threading.Event(), []

    def gen(prompts, **params):
        entered.set()
        gate.wait(10)
        sizes.append(len(prompts))
        return [[p[0]] for p in prompts]
    b = Batcher(gen, max_batch=4)
    try:
        params = sampling_params({}, 8, 4, 64)
        first = b.submit([[0]], params)
        _wait_for(entered.is_set)
        jobs = [b.submit([[i], [i]], params) for i in range(1, 4)]  # 2 completions each
        gate.set()
        for j in [first] + jobs:
            assert j.done.wait(5)
        assert sizes == [1, 4, 2] and jobs[2].result == [[3], [3]]
    finally:
        b.close()


# ---------------------------------------------------------------------------
# command line
# ---------------------------------------------------------------------------
def test_main_loads_binds_and_serves(monkeypatch, capsys):
    """main(argv) as `sgpo serve` / `python -m sgpo_engine.serve` run it, in process:
    serve_forever is wrapped to query the running server, then stop it."""
    seen = {}
    real = Server.serve_forever

    def serve_then_check(self, poll_interval=0.5):
        t = threading.Thread(target=real, args=(self, 0.02), daemon=True)
        t.start()
        seen["models"] = request(self.url + "/models")
        seen["address"] = self.server_address
        self.shutdown()
        t.join(10)
    monkeypatch.setattr(Server, "serve_forever", serve_then_check)
    assert main(["--model", tiny_chat_model_dir(), "--port", "0", "--served-model-name", "cli-tiny",
                 "--log-level", "WARNING"]) == 0
    assert seen["address"][0] == "127.0.0.1"
    assert seen["models"][0] == 200 and seen["models"][1]["data"][0]["id"] == "cli-tiny"
    assert f"127.0.0.1:{seen['address'][1]}/v1" in capsys.readouterr().out


def test_add_parser_and_main_arguments():
    import argparse
    from sgpo_engine.serve import add_parser
    ap = argparse.ArgumentParser(prog="sgpo")
    sub = ap.add_subparsers(dest="command")
    add_parser(sub)
    args = ap.parse_args(["serve", "--model", "/x"])
    assert args.host == "127.0.0.1" and args.port == 8000 and callable(args.func)
    with pytest.raises(SystemExit):
        main(["--port", "1"])  # --model is required


# ---------------------------------------------------------------------------
# weight updates (SGLang's /update_weights_from_disk)
# ---------------------------------------------------------------------------
def _variant(path, seed, **changes) -> str:
    """The tiny chat model's architecture (with `changes`) at another random init, saved to path."""
    import dataclasses

    from sgpo_engine.model import Policy, Tokenizer
    base = tiny_chat_policy()
    cfg = dataclasses.replace(base.config, **changes)
    Policy.from_config(cfg, Tokenizer.from_folder(tiny_chat_model_dir()), seed=seed).save(str(path))
    return str(path)


GREEDY = {"prompt": [[5, 6, 7, 8]], "max_tokens": 8, "temperature": 0}


def _greedy(s) -> tuple[str, str]:
    status, body = request(s.url + "/completions", "POST", GREEDY)
    assert status == 200, body
    return body["choices"][0]["text"], body["weight_version"]


def _update(s, body):
    return request(s.url[:-len("/v1")] + "/update_weights_from_disk", "POST", body)


def _generate_direct(path) -> str:
    import sgpo_engine
    return sgpo_engine.generate(sgpo_engine.load(path), GREEDY["prompt"], max_new_tokens=8, temperature=0)[0][0].text


def test_update_weights_from_disk_serves_the_new_weights(tmp_path):
    import sgpo_engine
    with serving(sgpo_engine.load(tiny_chat_model_dir())) as s:  # its own copy: the update writes into it
        before, version = _greedy(s)
        assert version == "0" and request(s.url + "/models")[1]["data"][0]["weight_version"] == "0"
        new = _variant(tmp_path / "v1", seed=1)
        status, body = _update(s, {"model_path": new, "weight_version": "1"})
        assert status == 200 and body["success"] is True and body["weight_version"] == "1", body
        after, version = _greedy(s)
        assert version == "1" and request(s.url + "/models")[1]["data"][0]["weight_version"] == "1"
        assert after == _generate_direct(new) and after != before  # on-policy: the trainer's own greedy text
        status, body = _update(s, {"model_path": tiny_chat_model_dir()})  # no weight_version: kept
        assert status == 200 and body["weight_version"] == "1"
        assert _greedy(s) == (before, "1")


def test_a_failed_update_keeps_the_old_weights(tmp_path):
    import sgpo_engine
    with serving(sgpo_engine.load(tiny_chat_model_dir())) as s:
        before = _greedy(s)
        wider = _variant(tmp_path / "wide", seed=1, hidden_size=48)
        for body, needle in (({"model_path": str(tmp_path / "nope"), "weight_version": "1"}, "not found"),
                             ({"model_path": wider, "weight_version": "1"}, "shape"),
                             ({"weight_version": "1"}, "model_path"),
                             ({"model_path": wider, "weight_version": True}, "weight_version")):
            status, reply = _update(s, body)
            assert status == 400, reply
            message = reply.get("message") or reply["error"]["message"]
            assert needle in message and reply.get("success") in (False, None), reply
        assert _greedy(s) == before


def test_requests_in_flight_finish_on_the_old_weights(tmp_path):
    import sgpo_engine
    from sgpo_engine.generation import generate
    policy = sgpo_engine.load(tiny_chat_model_dir())
    entered, gate = threading.Event(), threading.Event()

    def gated_generate(prompts, **params):  # the first call waits, in flight, until the update is queued
        if not entered.is_set():
            entered.set()
            gate.wait(60)
        return generate(policy, prompts, **params)

    with serving(policy, generate_fn=gated_generate) as s:
        new = _variant(tmp_path / "v1", seed=1)
        results = {}
        first = threading.Thread(target=lambda: results.setdefault("first", _greedy(s)))
        first.start()
        assert entered.wait(30)
        update = threading.Thread(target=lambda: results.setdefault("update", _update(
            s, {"model_path": new, "weight_version": "7"})))
        update.start()
        _wait_for(lambda: s.batcher._queue.qsize() == 1)  # the update waits behind the running request
        gate.set()
        first.join(60)
        update.join(60)
        assert results["first"] == (_generate_direct(tiny_chat_model_dir()), "0")
        assert results["update"][0] == 200 and results["update"][1]["weight_version"] == "7"
        assert _greedy(s) == (_generate_direct(new), "7")


def test_logprobs_and_token_ids_in_openai_and_vllm_formats(server):
    import sgpo_engine
    policy = tiny_chat_policy()
    status, body = request(server.url + "/completions", "POST", {
        "prompt": [[5, 6, 7]], "max_tokens": 6, "temperature": 0, "logprobs": 0, "return_token_ids": True})
    assert status == 200, body
    c = body["choices"][0]
    want = sgpo_engine.generate(policy, [[5, 6, 7]], max_new_tokens=6, temperature=0)[0][0]
    assert c["token_ids"] == want.token_ids and c["prompt_token_ids"] == [5, 6, 7]
    lp = c["logprobs"]
    assert lp["token_logprobs"] == pytest.approx(want.logprobs, abs=1e-5) and lp["top_logprobs"] is None
    assert len(lp["tokens"]) == len(lp["text_offset"]) == len(want.token_ids)
    assert "".join(lp["tokens"]).startswith(c["text"])  # special tokens (EOS) write their text too
    status, body = request(server.url + "/chat/completions", "POST", {**CHAT_OK, "temperature": 0, "logprobs": True})
    content = body["choices"][0]["logprobs"]["content"]
    assert status == 200 and content and all(x["logprob"] <= 0 and x["top_logprobs"] == [] for x in content)
    assert "token_ids" not in body["choices"][0]  # only when asked
    for route, extra, needle in (("/completions", {"prompt": "hi", "logprobs": 2}, "logprobs"),
                                 ("/chat/completions", {**CHAT_OK, "logprobs": True, "top_logprobs": 3}, "top_logprobs"),
                                 ("/chat/completions", {**CHAT_OK, "logprobs": 1}, "logprobs"),
                                 ("/completions", {"prompt": "hi", "return_token_ids": "yes"}, "return_token_ids")):
        assert needle in _error(request(server.url + route, "POST", extra), 400)
