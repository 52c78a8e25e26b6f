"""The reference model of the KL term (beta > 0), built in one place.

Today it is a frozen copy of the initial policy. With adapters (LoRA) it
becomes the base model with the adapters switched off, and only this module
changes.
"""
from __future__ import annotations

import copy
from typing import Optional


def frozen_copy(policy):
    """A copy of `policy` with its own weights, in eval mode and without gradients."""
    ref = copy.copy(policy)
    ref.decoder = copy.deepcopy(policy.decoder).eval().requires_grad_(False)
    return ref


def reference_model(policy, cfg) -> Optional[object]:
    """The frozen policy the KL term measures against, or None when beta is 0."""
    return frozen_copy(policy) if cfg.beta > 0 else None
