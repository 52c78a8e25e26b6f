"""What each route of `sgpo serve` does: a function (server, body) -> reply,
or (status, reply) when not 200; GET routes get no body (None). A request is
checked whole first (protocol.py), then tokenized here, in its handler
thread, so a bad prompt is a 400 at once, before it is queued; then queued
on the worker (worker.py) and waited for, and the reply shaped (protocol.py).

Not here: reading the body and routing a path to these (http.py), the checks
and the reply shapes (protocol.py), batching and the weights (worker.py).
"""
from __future__ import annotations

from typing import TYPE_CHECKING

from .protocol import (APIError, ChatCompletionRequest, CompletionRequest, UpdateWeightsRequest,
                       chat_completion_response, check_prompt_ids, completion_response, health_response,
                       models_response, update_weights_response)
from .worker import GenerateJob

if TYPE_CHECKING:
    from .http import Server


def health(server: "Server", body: None) -> dict:
    return health_response()


def models(server: "Server", body: None) -> dict:
    return models_response(server.model_name, server.created, server.limits.context, server.worker.weight_version)


def chat_completions(server: "Server", body: dict) -> dict:
    request = ChatCompletionRequest.from_body(body, server.limits)
    ids = [server.encode_chat(request.messages)]
    job = _generate(server, ids, request.params)
    return chat_completion_response(server.model_name, request, ids, job.result, job.weight_version,
                                    server.worker.token_pieces)


def completions(server: "Server", body: dict) -> dict:
    request = CompletionRequest.from_body(body, server.limits)
    ids = [server.encode_text(p) if isinstance(p, str) else p for p in request.prompts]
    job = _generate(server, ids, request.params)
    return completion_response(server.model_name, request, ids, job.result, job.weight_version,
                               server.worker.token_pieces)


def update_weights_from_disk(server: "Server", body: dict) -> tuple[int, dict]:
    """SGLang's contract. The folder is read and checked here, while the worker keeps
    generating (a mismatch is a 400 and the old weights keep serving); the swap waits its
    turn on the worker thread, between two generate calls."""
    request = UpdateWeightsRequest.from_body(body)
    try:
        state = server.worker.read_weights(request.model_path)
    except ValueError as e:  # io's checks and read_weights' name the file or tensor
        return 400, update_weights_response(False, str(e))
    update = server.worker.update_weights(state, request.weight_version)
    if not update.done.wait(server.request_timeout):
        return 504, update_weights_response(False, "the worker did not reach the update in time")
    if update.error is not None:
        return 500, update_weights_response(False, f"{type(update.error).__name__}: {update.error}")
    return 200, update_weights_response(True, f"loaded {request.model_path}", update.result)


def _generate(server: "Server", ids: list[list[int]], params: dict) -> GenerateJob:
    """Runs tokenized prompts on the worker and waits; its failures as the replies they make."""
    check_prompt_ids(ids, server.limits.context)
    job = server.worker.generate(ids, params)
    if not job.done.wait(server.request_timeout):
        raise APIError(504, f"generation did not finish within {server.request_timeout:g} s", "timeout")
    if isinstance(job.error, APIError):  # the batcher's own: shutting down
        raise job.error
    if isinstance(job.error, ValueError):  # generate's checks: the request is wrong
        raise APIError(400, str(job.error))
    if job.error is not None:
        raise job.error
    return job
