"""The worker side of `sgpo serve`: the one thread that runs the model, and
everything that touches the model or its tokenizer.

Here: the two kinds of work a handler thread queues (GenerateJob: prompts to
complete with one set of sampling parameters; Barrier: a function run alone,
between two generate calls); the Batcher, whose thread drains the queue,
running one `generate` call per set of jobs with identical sampling
parameters (up to max_batch completions per call); and the Worker, which owns
the Batcher and the policy: encoding requests with the policy's tokenizer,
the text pieces of a completion's tokens, reading a model folder's weights
and swapping them in (weight_version: the weights that generate now).

Not here: checking requests and shaping replies (protocol.py), what a route
does (routes.py), HTTP (http.py). torch and the model's loaders are imported
inside the calls that need them: importing the package loads neither.
"""
from __future__ import annotations

import logging
import queue
import threading
from typing import Any, Callable, Optional, Union

from .protocol import APIError

log = logging.getLogger("sgpo_engine.serve")


# ---------------------------------------------------------------------------
# work: what a handler thread queues and waits on
# ---------------------------------------------------------------------------
class _Work:
    """Handed to the worker thread; the handler thread waits on `done`, then reads result or error."""

    def __init__(self):
        self.result: Any = None
        self.error: Optional[BaseException] = None
        self.done = threading.Event()

    def finish(self, result=None, error=None) -> None:
        self.result, self.error = result, error
        self.done.set()


class GenerateJob(_Work):
    """Prompts to complete with one set of sampling parameters; result: one list of Completions per prompt."""

    def __init__(self, prompts: list[list[int]], params: dict):
        super().__init__()
        self.prompts = prompts  # token ids, one list per prompt
        self.params = params  # generate()'s keyword arguments (protocol.sampling_params)
        self.weight_version: Optional[str] = None  # the weights that generated the result

    @property
    def size(self) -> int:
        """The completions it asks for: what counts against max_batch."""
        return len(self.prompts) * self.params["num_samples"]

    def key(self):
        """Jobs with equal keys can share one generate call; a seeded job shares with none,
        so its seed gives the same text whatever else is queued."""
        if self.params["seed"] is not None:
            return id(self)
        return tuple(sorted(self.params.items()))


class Barrier(_Work):
    """fn(), run on the worker thread after every job queued before it and before any
    queued after it (a weight swap); result: fn's value."""

    def __init__(self, fn: Callable[[], Any]):
        super().__init__()
        self.fn = fn

    def run(self) -> None:
        try:
            self.finish(result=self.fn())
        except Exception as e:
            self.finish(error=e)


Work = Union[GenerateJob, Barrier]


def _shutting_down() -> APIError:
    return APIError(503, "server is shutting down", "service_unavailable")


# ---------------------------------------------------------------------------
# the batcher: a queue of work drained by the one thread that runs the model
# ---------------------------------------------------------------------------
class Batcher:
    """Runs GenerateJobs through `generate_fn(prompts, **params)`, and Barriers, on one worker thread."""

    def __init__(self, generate_fn: Callable, max_batch: int = 64, weight_version: str = "0"):
        self.generate_fn, self.max_batch = generate_fn, max_batch
        self.weight_version = weight_version  # changed only on the worker thread, by a Barrier
        self._queue: "queue.Queue[Optional[Work]]" = queue.Queue()  # None: close() was called
        self._closed = False
        self._lock = threading.Lock()  # no work slips into the queue after close() drained it
        self._thread = threading.Thread(target=self._loop, name="sgpo-serve-worker", daemon=True)
        self._thread.start()

    def submit(self, prompts: list[list[int]], params: dict) -> GenerateJob:
        """Queues prompts (token ids) to complete with generate()'s keyword arguments `params`."""
        return self._put(GenerateJob(prompts, params))

    def barrier(self, fn: Callable[[], Any]) -> Barrier:
        """Queues fn() to run on the worker thread after every job queued before it and
        before any queued after it."""
        return self._put(Barrier(fn))

    def _put(self, work: Work) -> Work:
        with self._lock:
            if self._closed:
                work.finish(error=_shutting_down())
            else:
                self._queue.put(work)
        return work

    def close(self, timeout: float = 10.0) -> None:
        with self._lock:
            self._closed = True
            self._queue.put(None)
        self._thread.join(timeout)
        while True:  # anything still queued will not run
            try:
                work = self._queue.get_nowait()
            except queue.Empty:
                break
            if work is not None:
                work.finish(error=_shutting_down())

    def _loop(self) -> None:
        carry: Optional[Work] = None  # taken off the queue but not part of the batch before: first of the next
        while True:
            work, carry = (carry, None) if carry is not None else (self._queue.get(), None)
            if work is None:
                return
            if isinstance(work, Barrier):
                work.run()
                continue
            batch, carry, closed = self._gather(work)
            groups: dict[Any, list[GenerateJob]] = {}
            for job in batch:
                groups.setdefault(job.key(), []).append(job)
            for group in groups.values():
                self._run(group)
            if closed:
                return

    def _gather(self, first: GenerateJob) -> tuple[list[GenerateJob], Optional[Work], bool]:
        """`first` and the jobs waiting behind it, without blocking, up to max_batch completions.
        Returns (batch, carry: the work that ended the batch, a Barrier or a job over the budget,
        closed: close()'s None was taken)."""
        batch, total = [first], first.size
        while total < self.max_batch:
            try:
                nxt = self._queue.get_nowait()
            except queue.Empty:
                break
            if nxt is None:
                return batch, None, True
            if isinstance(nxt, Barrier) or total + nxt.size > self.max_batch:
                return batch, nxt, False
            batch.append(nxt)
            total += nxt.size
        return batch, None, False

    def _run(self, jobs: list[GenerateJob]) -> None:
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
# the worker: the batcher, the policy and its tokenizer
# ---------------------------------------------------------------------------
class Worker:
    """The served policy, and the Batcher whose thread is the only one to run it."""

    def __init__(self, policy, max_batch: int = 64, weight_version: str = "0", generate_fn: Optional[Callable] = None):
        self.policy = policy
        self.batcher = Batcher(generate_fn or _generate_with(policy), max_batch, weight_version)

    @property
    def weight_version(self) -> str:
        """The weights generating now."""
        return self.batcher.weight_version

    def generate(self, prompts: list[list[int]], params: dict) -> GenerateJob:
        """Queues prompts (token ids) to complete; the job finishes once the worker thread ran them."""
        return self.batcher.submit(prompts, params)

    def close(self) -> None:
        self.batcher.close()

    # ------------------------------------------------------------------ tokenizer
    # Encoding runs in the handler thread, so a bad prompt is a 400 before it is queued.
    def encode_chat(self, messages: list[dict]) -> list[int]:
        try:
            return list(self.policy.tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=True))
        except Exception as e:  # a template may refuse a conversation (raise_exception, no template)
            raise APIError(400, f"messages: cannot apply the chat template ({type(e).__name__}: {e})") from None

    def encode_text(self, text: str) -> list[int]:
        return list(self.policy.tokenizer.encode(text, add_special_tokens=True))

    def token_pieces(self, token_ids: list[int]) -> tuple[list[str], list[int]]:
        """What each completion token wrote, and where it starts (tokens that write parts of
        one character share it); special tokens included, as in a Completion's token_ids."""
        text, spans = self.policy.tokenizer.decode_with_offsets(token_ids)
        return [text[a:b] for a, b in spans], [a for a, _ in spans]

    # ------------------------------------------------------------------ weights
    def read_weights(self, path: str) -> dict:
        """A model folder's tensors in the served dtype and device, checked against the served
        model name by name and shape (ValueError naming the first difference). Runs in the
        handler thread: the worker keeps generating meanwhile."""
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

    def update_weights(self, state: dict, version: Optional[str]) -> Barrier:
        """Queues the swap of `state` (read_weights') into the served model: requests already
        queued finish on the old weights, later ones run on the new. The Barrier's result is
        the weight_version after (`version`, or the old one when None)."""
        return self.batcher.barrier(lambda: self.swap_weights(state, version))

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


def _generate_with(policy) -> Callable:
    """generate() over `policy`, as the Batcher calls it."""
    from ..generation import generate

    def generate_fn(prompts, **params):
        return generate(policy, prompts, **params)
    return generate_fn
