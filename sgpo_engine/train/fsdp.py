"""FSDP2 for the trainer (`parallel = "fsdp"` under torchrun, docs/design.md 6.7).

    shard(decoder, device)                     fully_shard each decoder layer, then the root
    full_state_dict(decoder) -> {name: tensor} every rank gets the whole model (an all-gather)
    load_full_state_dict(decoder, state)       a whole model into the shards
    save_optimizer / load_optimizer(decoder, optimizer, folder)   sharded, torch.distributed.checkpoint

Each rank holds 1/world of every parameter, gradient and AdamW moment. A layer's
forward all-gathers its parameters and frees them after; its backward
reduce-scatters the gradients. The root (embeddings, final norm, LM head) stays
gathered from its forward to its backward, which is what lets the fused loss,
called outside the module's forward, read the whole LM-head weight (tied
embeddings included); `gathered_lm_head` checks that instead of assuming it.

Every forward and backward is a collective, so every rank must run the same
number of them: the trainer pads each rank's micro-batches to the largest count
with empty ones (trainer._micro_batches).
"""
from __future__ import annotations

import torch
from torch.distributed.checkpoint import load as dcp_load, save as dcp_save
from torch.distributed.checkpoint.state_dict import (StateDictOptions, get_model_state_dict, get_optimizer_state_dict,
                                                     set_model_state_dict, set_optimizer_state_dict)
from torch.distributed.fsdp import MixedPrecisionPolicy, fully_shard
from torch.distributed.tensor import DTensor


def shard(decoder, device: torch.device) -> None:
    """In place. On a GPU the parameters compute in bf16 and gradients reduce in fp32."""
    mp = MixedPrecisionPolicy(param_dtype=torch.bfloat16, reduce_dtype=torch.float32) \
        if device.type == "cuda" else MixedPrecisionPolicy()
    for layer in decoder.model.layers:
        fully_shard(layer, mp_policy=mp)
    fully_shard(decoder, mp_policy=mp)


def gathered_lm_head(weight: torch.Tensor) -> torch.Tensor:
    """The LM-head weight [V, H] as the fused loss needs it: whole, on this rank."""
    if isinstance(weight, DTensor):
        raise RuntimeError("fsdp: the LM-head weight is still sharded; call the decoder's forward first "
                           "(the root module keeps its parameters gathered until its backward)")
    return weight


def full_state_dict(decoder) -> dict:
    return get_model_state_dict(decoder, options=StateDictOptions(full_state_dict=True))


def load_full_state_dict(decoder, state: dict) -> None:
    set_model_state_dict(decoder, state, options=StateDictOptions(full_state_dict=True))


def save_optimizer(decoder, optimizer, folder: str) -> None:
    dcp_save(get_optimizer_state_dict(decoder, optimizer), checkpoint_id=folder)


def load_optimizer(decoder, optimizer, folder: str) -> None:
    state = get_optimizer_state_dict(decoder, optimizer)  # the layout to fill (moments initialized)
    dcp_load(state, checkpoint_id=folder)
    set_optimizer_state_dict(decoder, optimizer, state)


def grad_norm_value(norm) -> float:
    """clip_grad_norm_'s total norm as a float (a DTensor over shards under FSDP)."""
    return float(norm.full_tensor() if isinstance(norm, DTensor) else norm)
