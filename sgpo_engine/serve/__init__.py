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
# The package, split as vLLM splits its OpenAI server:
#   protocol.py  the wire protocol: APIError, Limits, the requests that check themselves
#                (CompletionRequest, ChatCompletionRequest, UpdateWeightsRequest), the OpenAI-shaped replies
#   worker.py    the model's one thread: GenerateJob and Barrier, the Batcher, the Worker (policy,
#                tokenizer, weights)
#   routes.py    what each route does: check, tokenize, queue and wait, reply
#   http.py      the HTTP transport: Handler (body, routing, JSON replies and errors) and Server
#   cli.py       the command: add_parser (`sgpo serve`) and main (`python -m sgpo_engine.serve`)
from .cli import add_parser, main
from .http import Server
from .protocol import APIError, output_options, sampling_params
from .worker import Barrier, Batcher, GenerateJob, Worker

__all__ = ["APIError", "Barrier", "Batcher", "GenerateJob", "Server", "Worker", "add_parser", "main",
           "output_options", "sampling_params"]
