"""The reference model of the KL term (beta > 0), built in one place.

Full fine-tuning: a frozen copy of the initial policy. With LoRA: the base
model itself, the policy's own decoder run with its adapters switched off
(model/lora.py), so no second copy of the weights exists; the adapters start
at zero, so that is exactly the initial policy.
"""
from __future__ import annotations

import copy
from typing import Optional

import torch
from torch import nn

from ..model.lora import adapters_off, has_lora


def frozen_copy(policy):
    """A copy of `policy` with its own weights, in eval mode and without gradients."""
    ref = copy.copy(policy)
    ref.decoder = copy.deepcopy(policy.decoder).eval().requires_grad_(False)
    return ref


class BaseModel(nn.Module):
    """The policy's decoder as its base model: the forward with every adapter off, without
    gradients. Holds no weights of its own (the policy is not a submodule)."""

    def __init__(self, policy):
        super().__init__()
        self.__dict__["policy"] = policy  # not registered: its parameters are the policy's

    @property
    def config(self):
        return self.policy.decoder.config

    @property
    def lm_head_weight(self):
        return self.policy.decoder.lm_head_weight  # frozen under LoRA: the base model's

    def forward(self, *args, **kwargs):
        with torch.no_grad(), adapters_off(self.policy):
            return self.policy.decoder(*args, **kwargs)


def base_model_view(policy):
    """A Policy-like object whose decoder is BaseModel(policy) (and lm_head_weight the
    policy's, which LoRA leaves frozen)."""
    ref = copy.copy(policy)
    ref.decoder = BaseModel(policy)
    ref.shares_policy_weights = True  # parallel.prepare_reference leaves it as it is
    return ref


def reference_model(policy, cfg) -> Optional[object]:
    """The frozen policy the KL term measures against, or None when beta is 0."""
    if cfg.beta == 0:
        return None
    return base_model_view(policy) if has_lora(policy) else frozen_copy(policy)
