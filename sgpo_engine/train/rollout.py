"""Rollout backends: (examples, seeds) -> per example, G Completions, and the
weight sync that keeps an external rollout server on-policy.

LocalRollout samples with the engine's own KV-cached `generate` and returns
the sampler's log-probs (the old policy's, since the weights have not moved
since). OpenAIRollout asks an external OpenAI-compatible server (`sgpo serve`,
vLLM, SGLang) for the completions of large models: it sends the prompt's token
ids and takes back the token ids and log-probs the server sampled (vLLM's
return_token_ids, OpenAI's logprobs), plus the server's weight_version; the
trainer recomputes the old log-probs and corrects the gap to the server's
(rollout_is). A server without token ids gets its text re-tokenized, with a
warning: then no correction is possible.

WeightSync (rollout_sync = "disk"): after each optimizer step, rank 0 writes the
policy to OUTPUT/rollout_weights/step-N and calls SGLang's
POST {server root}/update_weights_from_disk {"model_path", "weight_version"}.
"""
from __future__ import annotations

import os
import shutil
import time
import warnings

import torch

from ..generation import Completion
from ..generation.generate import encode_prompt, generate_groups
from ..http_client import ApiError, Client, parse_json


class RolloutSyncError(RuntimeError):
    """The rollout server did not take the new weights (it keeps serving the old ones)."""


class LocalRollout:
    def __init__(self, policy, cfg):
        self.policy, self.cfg = policy, cfg

    def __call__(self, examples, seeds):
        return generate_groups(self.policy, [e.prompt for e in examples], self.cfg, seeds)


class OpenAIRollout:
    def __init__(self, policy, cfg, timeout: float = 600.0):
        self.policy, self.cfg, self.timeout = policy, cfg, timeout
        if policy.tokenizer is None:
            raise ValueError("rollout: an external server's completions are checked with the policy's tokenizer; "
                             "the model folder has no tokenizer.json")
        self.client = Client(cfg.rollout_url, timeout=timeout, what="config field 'rollout_url'")
        self.url = self.client.base + "/completions"
        self._warned = False

    def _post(self, body: dict) -> dict:
        try:
            return self.client.request(self.url, body)
        except ApiError as e:
            raise RolloutSyncError(f"config field 'rollout_url': {self.url} failed: {e.detail}") from None

    def __call__(self, examples, seeds):
        c = self.cfg
        out = []
        for e, seed in zip(examples, seeds):
            ids = encode_prompt(self.policy, e.prompt, c.chat_template)
            reply = self._post({"model": c.rollout_model, "prompt": ids, "n": c.num_samples,
                                "max_tokens": c.max_new_tokens, "temperature": c.temperature, "top_p": c.top_p,
                                "top_k": c.top_k, "min_p": c.min_p, "stop": c.stop or None,
                                "seed": int(seed) & 0x7FFFFFFF, "logprobs": 0, "return_token_ids": True})
            version = reply.get("weight_version")
            version = None if version is None else str(version)
            out.append([self._completion(ch, ids, version)
                        for ch in sorted(reply["choices"], key=lambda ch: ch.get("index", 0))])
        return out

    def _completion(self, choice: dict, prompt_ids: list, version) -> Completion:
        text, finish = choice["text"], choice.get("finish_reason") or "length"
        token_ids = choice.get("token_ids")
        logprobs = (choice.get("logprobs") or {}).get("token_logprobs")
        if token_ids is None:  # a server without return_token_ids: re-tokenize (the old way)
            if not self._warned:
                warnings.warn(f"rollout_url {self.url}: no token_ids in the reply (vLLM's return_token_ids): "
                              "re-tokenizing the text, without off-policy correction", stacklevel=3)
                self._warned = True
            tok = self.policy.tokenizer
            eos = sorted(getattr(tok, "eos_token_ids", []) or [])
            token_ids = tok.encode(text, add_special_tokens=False)
            if finish == "stop" and eos:
                token_ids = token_ids + [eos[0]]  # the model stopped: train it to emit EOS
            token_ids, logprobs = token_ids[:self.cfg.max_new_tokens] or [eos[0] if eos else 0], None
        if logprobs is not None and (len(logprobs) != len(token_ids) or any(x is None for x in logprobs)):
            logprobs = None  # not one per token: no correction rather than a wrong one
        return Completion(list(token_ids), text, None, finish, prompt_ids, server_logprobs=logprobs,
                          weight_version=version)


class WeightSync:
    """Writes the policy where the rollout server can read it and makes the server load it."""

    def __init__(self, url: str, folder: str, retries: int = 3, backoff: float = 1.0, timeout: float = 600.0):
        # the client's retries: connection errors, timeouts, 408 / 429 / 5xx and a reply that did not
        # load; any other 4xx means the server refused these weights, and retrying will not change that
        self.client = Client(url, timeout=timeout, max_retries=retries, backoff=backoff,
                             what="config field 'rollout_url'")
        self.url = self.client.root + "/update_weights_from_disk"
        self.folder = folder

    def __call__(self, policy, version: int) -> float:
        """Syncs weight_version `version`; returns the seconds it took. Raises RolloutSyncError."""
        t0 = time.perf_counter()
        path = os.path.abspath(os.path.join(self.folder, f"step-{version}"))
        policy.save(path)  # io.save: a temporary folder renamed into place, never half-written
        try:
            self.client.request(self.url, {"model_path": path, "weight_version": str(version)}, _loaded)
        except ApiError as e:
            raise RolloutSyncError(f"config field 'rollout_url': {self.url} did not take weight_version {version} "
                                   f"({path}): {e.detail}") from None
        self._prune(path)
        return time.perf_counter() - t0

    def _prune(self, keep: str) -> None:
        """Removes the older step folders (the server has loaded `keep`)."""
        for name in os.listdir(self.folder):
            p = os.path.join(self.folder, name)
            if name.startswith("step-") and os.path.abspath(p) != keep:
                shutil.rmtree(p, ignore_errors=True)


def _loaded(raw: bytes) -> dict:
    """An update_weights_from_disk reply that says the weights loaded, else a retryable ApiError."""
    reply = parse_json(raw)
    if isinstance(reply, dict) and reply.get("success"):
        return reply
    message = reply.get("message") if isinstance(reply, dict) else None
    raise ApiError("not_loaded", str(message or reply), retry=True)


def rollout_is_weights(old_logp: torch.Tensor, server_logp: torch.Tensor, mask: torch.Tensor, mode: str,
                       cap: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Truncated importance sampling of the server's samples toward the trainer's old policy
    (TRL's vllm_importance_sampling_correction modes). old_logp, server_logp, mask [N, T] ->
    (weights [N, T], ratios [N, T]): ratio exp(old - server) per token, or for the sequence
    modes exp(sum over the sequence) on each of its tokens; "truncate" caps it at `cap`,
    "mask" zeroes it above `cap`. The weights multiply the surrogate (not the KL term), as
    TRL's do; every surrogate is linear in a positive scale of the advantage, so the trainer
    multiplies the advantages."""
    d = (old_logp - server_logp) * mask
    if mode.startswith("sequence"):
        d = d.sum(dim=-1, keepdim=True).expand_as(d)
    ratio = torch.exp(d)
    w = ratio.clamp(max=cap) if mode.endswith("truncate") else torch.where(ratio <= cap, ratio, 0.0)
    return w * mask, ratio
