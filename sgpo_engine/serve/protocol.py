"""The wire protocol of `sgpo serve`: what a request may say and what a reply
looks like, as plain data.

Here: APIError (an error reply: HTTP status, message, OpenAI's type); Limits
(what the server accepts); parse_body and check_model (a body's bytes to the
JSON object it must be); the requests, each read and checked whole by its
`from_body` before anything is tokenized (CompletionRequest,
ChatCompletionRequest, UpdateWeightsRequest), with the field checks they
share (sampling_params: generate()'s keyword arguments; output_options:
log-probs and token ids); check_prompt_ids, the checks that need the tokens;
and the builders of the OpenAI-shaped replies (completions, chat completions,
their log-probs, models, health, weight updates, errors).

Not here: tokenizing and generating (worker.py), what each route does
(routes.py), sockets, bodies' bytes and routing (http.py). Nothing here
touches the model.
"""
from __future__ import annotations

import json
import math
import time
import uuid
from dataclasses import dataclass
from typing import Callable, Optional

ROLES = ("system", "developer", "user", "assistant", "tool")


class APIError(Exception):
    """An error reply: HTTP status, message, OpenAI-style type."""

    def __init__(self, status: int, message: str, type_: str = "invalid_request_error"):
        super().__init__(message)
        self.status, self.message, self.type = status, message, type_


@dataclass(frozen=True)
class Limits:
    """What the server accepts, as the request checks need it."""
    context: int  # the model's context in tokens (max_position_embeddings): prompt + completion fit in it
    max_token_chars: int  # the most characters one token writes (Tokenizer.max_token_chars)
    default_max_tokens: int  # max_tokens when a request gives none
    max_n: int  # the largest n
    max_completions: int  # the most completions (prompts x n) in one request


# ---------------------------------------------------------------------------
# the body: bytes -> a JSON object
# ---------------------------------------------------------------------------
def parse_body(raw: bytes) -> dict:
    """A request body as the JSON object it must be (APIError 400 saying what is wrong)."""
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
    return body


def check_model(body: dict, served: str) -> None:
    """A body's "model" is optional; given, it must name the served model (else 404)."""
    model = body.get("model")
    if model is not None and model != served:
        raise APIError(404, f"model {model!r} not found (serving {served!r})", "not_found_error")


# ---------------------------------------------------------------------------
# fields
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


def _params(body: dict, limits: Limits) -> dict:
    return sampling_params(body, limits.default_max_tokens, limits.max_n, limits.context)


def _check_completions(prompts: int, params: dict, cap: int) -> None:
    total = prompts * params["num_samples"]
    if total > cap:
        raise APIError(400, f"n: {prompts} prompt(s) x n = {params['num_samples']} asks for {total} "
                            f"completions; the limit per request is {cap}")


def _check_text_size(where: str, chars: int, limits: Limits) -> None:
    """Refuses text that cannot fit the context before it is tokenized (Tokenizer.max_token_chars)."""
    if chars > limits.context * limits.max_token_chars:
        raise APIError(400, f"{where}: {chars} characters cannot fit the model's context of {limits.context} "
                            f"tokens (this tokenizer needs a token per {limits.max_token_chars} characters at least)")


def check_prompt_ids(ids: list[list[int]], context: int) -> None:
    """Each tokenized prompt is non-empty and leaves room to generate."""
    for i, p in enumerate(ids):
        if not p:
            raise APIError(400, f"prompt {i}: empty after tokenization")
        if len(p) >= context:
            raise APIError(400, f"prompt {i}: {len(p)} tokens leave no room to generate "
                                f"(the model's context is {context} tokens)")


# ---------------------------------------------------------------------------
# requests: a body, checked whole
# ---------------------------------------------------------------------------
@dataclass(frozen=True)
class CompletionRequest:
    """POST /v1/completions."""
    prompts: list  # each a str (text) or a list of token ids
    params: dict  # generate()'s keyword arguments (sampling_params)
    logprobs: bool  # the sampled tokens' log-probs ("logprobs": 0)
    token_ids: bool  # vLLM's return_token_ids: each choice gets token_ids and prompt_token_ids

    @classmethod
    def from_body(cls, body: dict, limits: Limits) -> "CompletionRequest":
        prompts = _prompts(body)
        params = _params(body, limits)
        _check_completions(len(prompts), params, limits.max_completions)
        for i, p in enumerate(prompts):
            if isinstance(p, str):
                _check_text_size(f"prompt {i}", len(p), limits)
        return cls(prompts, params, *output_options(body, chat=False))


@dataclass(frozen=True)
class ChatCompletionRequest:
    """POST /v1/chat/completions."""
    messages: list[dict]  # {"role", "content": str}, the content's text parts joined
    params: dict  # generate()'s keyword arguments (sampling_params)
    logprobs: bool  # the sampled tokens' log-probs ("logprobs": true, "top_logprobs": 0)
    token_ids: bool  # vLLM's return_token_ids

    @classmethod
    def from_body(cls, body: dict, limits: Limits) -> "ChatCompletionRequest":
        messages = _messages(body)
        params = _params(body, limits)
        _check_completions(1, params, limits.max_completions)
        _check_text_size("messages", sum(len(m["content"]) for m in messages), limits)
        return cls(messages, params, *output_options(body, chat=True))


@dataclass(frozen=True)
class UpdateWeightsRequest:
    """POST /update_weights_from_disk (SGLang's): a model folder the server reads."""
    model_path: str
    weight_version: Optional[str]  # None: the served weight_version is kept

    @classmethod
    def from_body(cls, body: dict) -> "UpdateWeightsRequest":
        path, version = body.get("model_path"), body.get("weight_version")
        if not isinstance(path, str) or not path:
            raise APIError(400, "model_path: expected the path of a model folder the server can read")
        if isinstance(version, bool) or version is not None and not isinstance(version, (str, int)):
            raise APIError(400, f"weight_version: expected a string, got {version!r}")
        return cls(path, None if version is None else str(version))


# ---------------------------------------------------------------------------
# replies, in OpenAI's shapes. A completion `c` is a generation.Completion
# (text, token_ids, prompt_ids, logprobs, finish_reason); `results` is one list
# of them per prompt; `pieces(token_ids) -> (texts, offsets)` says what each
# token wrote and where it starts (Worker.token_pieces).
# ---------------------------------------------------------------------------
Pieces = Callable[[list[int]], tuple[list[str], list[int]]]


def completion_response(model: str, request: CompletionRequest, prompt_ids: list, results: list,
                        weight_version: Optional[str], pieces: Pieces) -> dict:
    """A text_completion: choices prompt by prompt, n each (index = prompt * n + sample)."""
    n = request.params["num_samples"]
    choices = [{"index": i * n + j, "text": c.text,
                "logprobs": text_logprobs(c, pieces) if request.logprobs else None,
                "finish_reason": c.finish_reason, **_token_ids(c, request.token_ids)}
               for i, group in enumerate(results) for j, c in enumerate(group)]
    return _completion("cmpl", "text_completion", model, weight_version, choices, prompt_ids, results)


def chat_completion_response(model: str, request: ChatCompletionRequest, prompt_ids: list, results: list,
                             weight_version: Optional[str], pieces: Pieces) -> dict:
    """A chat.completion: one prompt (the conversation), n choices."""
    choices = [{"index": i, "message": {"role": "assistant", "content": c.text},
                "logprobs": chat_logprobs(c, pieces) if request.logprobs else None,
                "finish_reason": c.finish_reason, **_token_ids(c, request.token_ids)}
               for i, c in enumerate(results[0])]
    return _completion("chatcmpl", "chat.completion", model, weight_version, choices, prompt_ids, results)


def _completion(prefix: str, obj: str, model: str, weight_version: Optional[str], choices: list, prompt_ids: list,
                results: list) -> dict:
    prompt_tokens = sum(len(p) for p in prompt_ids)
    completion_tokens = sum(len(c.token_ids) for g in results for c in g)
    return {"id": f"{prefix}-{uuid.uuid4().hex}", "object": obj, "created": int(time.time()),
            "model": model, "weight_version": weight_version, "choices": choices,
            "usage": {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
                      "total_tokens": prompt_tokens + completion_tokens}}


def text_logprobs(c, pieces: Pieces) -> dict:
    """OpenAI's completions format; text_offset counts from the completion's start."""
    texts, offsets = pieces(c.token_ids)
    return {"tokens": texts, "token_logprobs": [float(x) for x in c.logprobs], "top_logprobs": None,
            "text_offset": offsets}


def chat_logprobs(c, pieces: Pieces) -> dict:
    """OpenAI's chat format; no top alternatives (top_logprobs 0)."""
    texts, _ = pieces(c.token_ids)
    return {"content": [{"token": p, "logprob": float(x), "bytes": list(p.encode("utf-8")), "top_logprobs": []}
                        for p, x in zip(texts, c.logprobs)]}


def _token_ids(c, wanted: bool) -> dict:
    return {"token_ids": list(c.token_ids), "prompt_token_ids": list(c.prompt_ids)} if wanted else {}


def models_response(model: str, created: int, context: int, weight_version: str) -> dict:
    """GET /v1/models: the one served model."""
    return {"object": "list", "data": [{"id": model, "object": "model", "created": created,
                                        "owned_by": "sgpo-engine", "max_model_len": context,
                                        "weight_version": weight_version}]}


def health_response() -> dict:
    return {"status": "ok"}


def update_weights_response(success: bool, message: str, weight_version: Optional[str] = None) -> dict:
    """SGLang's {"success", "message"}; a success also says the weight_version now served."""
    reply = {"success": success, "message": message}
    if success:
        reply["weight_version"] = weight_version
    return reply


def error_response(message: str, type_: str) -> dict:
    return {"error": {"message": message, "type": type_}}
