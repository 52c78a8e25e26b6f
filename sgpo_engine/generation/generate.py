"""Batched group rollouts: prompts -> G completions each, KV-cached.

One call prefills every prompt once (right-padded batch), samples the first
token of its G completions from the same logits, then decodes all live
completions together, one token per step; a finished completion leaves the
batch (it stops costing compute) and its cache slot is simply not read again.
The LM head runs only on the rows whose next token is needed.
"""
from __future__ import annotations

import sys
from dataclasses import dataclass, field
from typing import Optional, Sequence, Union

import torch

from .. import ops
from ..progress import Progress
from .kv_cache import SharedPrefixKVCache
from .rng import mix_seeds, uniforms
from .stopping import StopRule

Prompt = Union[str, Sequence[int], Sequence[dict]]


@dataclass
class Completion:
    token_ids: list[int]
    text: str
    logprobs: list[float]          # log-prob of each token under the sampling distribution
    finish_reason: str             # "stop" (EOS, stop id or stop string) or "length"
    prompt_ids: list[int] = field(default_factory=list)
    # an external rollout server's: its log-probs of the tokens (None if it gave none) and
    # the weight_version that sampled them; the trainer corrects the gap (rollout_is)
    server_logprobs: Optional[list[float]] = None
    weight_version: Optional[str] = None


def encode_prompt(policy, prompt: Prompt, chat_template: bool) -> list[int]:
    """A prompt as token ids: ids pass through; chat messages, or a string with
    chat_template=True, go through the tokenizer's chat template."""
    if isinstance(prompt, str):
        tok = _tokenizer(policy, "a string prompt")
        if chat_template:
            return list(tok.apply_chat_template([{"role": "user", "content": prompt}],
                                                add_generation_prompt=True, tokenize=True))
        return list(tok.encode(prompt, add_special_tokens=True))
    prompt = list(prompt)
    if prompt and isinstance(prompt[0], dict):
        return list(_tokenizer(policy, "chat messages").apply_chat_template(
            prompt, add_generation_prompt=True, tokenize=True))
    if not all(isinstance(t, int) and not isinstance(t, bool) for t in prompt):
        raise ValueError("prompts: each prompt must be a string, a list of token ids or a list of chat messages")
    return prompt


def _tokenizer(policy, what):
    if policy.tokenizer is None:
        raise ValueError(f"prompts: {what} needs a tokenizer, and this model has none (pass token ids)")
    return policy.tokenizer


def _check_prompts(ids: list[list[int]], vocab: int, context: int):
    for i, p in enumerate(ids):
        if not p:
            raise ValueError(f"prompts[{i}]: empty prompt")
        if len(p) >= context:
            raise ValueError(f"prompts[{i}]: {len(p)} tokens leave no room to generate within the model's "
                             f"context (max_position_embeddings = {context})")
        bad = [t for t in p if not 0 <= t < vocab]
        if bad:
            raise ValueError(f"prompts[{i}]: token id {bad[0]} outside the vocabulary [0, {vocab})")


@torch.no_grad()
def generate(policy, prompts: Sequence[Prompt], num_samples: int = 1, max_new_tokens: int = 256,
             temperature=1.0, top_k=0, top_p=1.0, min_p=0.0, stop: Optional[Sequence[str]] = None,
             stop_token_ids: Optional[Sequence[int]] = None, seed: Union[int, Sequence[int], None] = None,
             chat_template: bool = False, progress: Optional[bool] = None) -> list[list[Completion]]:
    """G = num_samples completions for each prompt; returns one list per prompt.

    seed: an int, or one int per prompt. Randomness is counter-based: sample g
    of prompt p draws from (seed, p * G + g) (or (seed[p], g)) at each step, so
    a completion does not depend on which other prompts share the call.
    """
    if isinstance(prompts, str) or not isinstance(prompts, Sequence):
        raise ValueError("prompts: expected a list of prompts")
    if not isinstance(num_samples, int) or num_samples < 1:
        raise ValueError(f"num_samples: expected a positive int, got {num_samples!r}")
    if not isinstance(max_new_tokens, int) or max_new_tokens < 1:
        raise ValueError(f"max_new_tokens: expected a positive int, got {max_new_tokens!r}")
    if not prompts:
        return []
    cfg, dev = policy.config, policy.device
    prompt_ids = [encode_prompt(policy, p, chat_template) for p in prompts]
    _check_prompts(prompt_ids, cfg.vocab_size, cfg.max_position_embeddings)
    eos = set(getattr(policy.tokenizer, "eos_token_ids", None) or []) if policy.tokenizer else set()
    rule = StopRule(eos | set(stop_token_ids or []), stop, policy.tokenizer)
    sampling = dict(temperature=temperature, top_k=top_k, top_p=top_p, min_p=min_p)

    P, G = len(prompt_ids), num_samples
    S = P * G
    row_seeds = _row_seeds(seed, P, G)  # [S] int64, on CPU
    lens = torch.tensor([len(p) for p in prompt_ids])
    # Each completion may grow until the context is full.
    caps = [min(max_new_tokens, cfg.max_position_embeddings - len(p)) for p in prompt_ids for _ in range(G)]
    cache = SharedPrefixKVCache(cfg.num_hidden_layers, P, int(lens.max()), S, max(caps),
                                cfg.num_key_value_heads, cfg.head_dim, policy.dtype, dev,
                                windows=[cfg.layer_sliding_window(i) for i in range(cfg.num_hidden_layers)])
    cache.prefix_of.copy_(torch.arange(P).repeat_interleave(G))
    weight = policy.lm_head_weight  # [V, H]

    # Prefill: every prompt once, right-padded; logits only at each last token.
    padded = torch.zeros(P, int(lens.max()), dtype=torch.int64)
    for i, p in enumerate(prompt_ids):
        padded[i, :len(p)] = torch.tensor(p)
    lens_dev = lens.to(dev)
    hidden = policy.hidden_states(padded.to(dev), attention=cache.prefill(lens_dev))  # [P, Lp, H]
    last = hidden[torch.arange(P, device=dev), lens_dev - 1]                           # [P, H]
    logits = (last @ weight.t()).repeat_interleave(G, 0)                                # [S, V]

    tokens: list[list[int]] = [[] for _ in range(S)]
    logps: list[list[float]] = [[] for _ in range(S)]
    reason = [""] * S
    live = list(range(S))               # live slots, on the host (no device sync to read them)
    rows = torch.arange(S, device=dev)  # the same, on the device
    long_run = S * max(caps) > 200_000
    bar = Progress(max(caps), "generate", progress if progress is not None else (long_run and sys.stderr.isatty()))
    step = 0
    while True:
        u = uniforms(row_seeds[live], step).to(dev)
        tok, lp = ops.sample(logits, uniform=u, **sampling)
        step += 1
        for r, t, l in zip(live, tok.tolist(), lp.tolist()):
            tokens[r].append(t)
            logps[r].append(l)
            if rule.hit(tokens[r]):
                reason[r] = "stop"
            elif len(tokens[r]) >= caps[r]:
                reason[r] = "length"
        keep = [i for i, r in enumerate(live) if not reason[r]]
        bar.update(1, live=len(keep))
        if not keep:
            break
        live = [live[i] for i in keep]
        keep = torch.tensor(keep, device=dev)
        rows, tok = rows[keep], tok[keep]
        # The new token's position: after its prompt and the tokens before it.
        positions = (lens_dev[cache.prefix_of[rows]] + cache.suffix_len[rows]).unsqueeze(1)  # [A, 1]
        hidden = policy.hidden_states(tok.unsqueeze(1), positions=positions, attention=cache.decode(rows))
        logits = hidden[:, 0] @ weight.t()  # [A, V]
    bar.close()
    return _completions(policy, prompt_ids, G, tokens, logps, reason, rule)


def generate_groups(policy, prompts: Sequence[Prompt], sampling, seeds) -> list[list[Completion]]:
    """`generate` with the sampling fields of a settings object (num_samples, max_new_tokens,
    temperature, top_k, top_p, min_p, stop, chat_template: a TrainConfig's or an
    evaluation's), the decoder in eval mode (no dropout) and no progress bar: what training
    rollouts and held-out evaluation both sample with."""
    s = sampling
    was_training = policy.decoder.training
    policy.decoder.eval()
    try:
        return generate(policy, list(prompts), num_samples=s.num_samples, max_new_tokens=s.max_new_tokens,
                        temperature=s.temperature, top_k=s.top_k, top_p=s.top_p, min_p=s.min_p,
                        stop=s.stop or None, seed=seeds, chat_template=s.chat_template, progress=False)
    finally:
        policy.decoder.train(was_training)


def _row_seeds(seed, P, G) -> torch.Tensor:
    if seed is None:
        seed = int(torch.randint(0, 2**62, ()))  # from torch's global RNG
    if isinstance(seed, int):
        return mix_seeds(seed, torch.arange(P * G))
    if len(seed) != P:
        raise ValueError(f"seed: expected an int or one seed per prompt ({P}), got {len(seed)}")
    return mix_seeds(torch.tensor(list(seed), dtype=torch.int64).repeat_interleave(G), torch.arange(G).repeat(P))


def _completions(policy, prompt_ids, G, tokens, logps, reason, rule) -> list[list[Completion]]:
    out = []
    for p, ids in enumerate(prompt_ids):
        group = []
        for g in range(G):
            r = p * G + g
            text = policy.tokenizer.decode(tokens[r], skip_special_tokens=True) if policy.tokenizer else ""
            group.append(Completion(tokens[r], rule.cut(text), logps[r], reason[r], ids))
        out.append(group)
    return out
