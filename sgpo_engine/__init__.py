"""sgpo-engine: fused kernels and a minimal engine for SGPO / GRPO training."""
from . import ops, reference
from .ops import fused_logprobs, fused_policy_loss, group_advantages, sample

__version__ = "0.1.0"
__all__ = ["ops", "reference", "fused_logprobs", "fused_policy_loss", "group_advantages", "sample"]
from .model import load, Policy
