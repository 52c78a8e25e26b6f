"""sgpo-engine: fused kernels and a minimal engine for SGPO / GRPO training."""
from . import ops, reference
from .generation import Completion, generate
from .model import Policy, load
from .ops import decode_attention, fused_logprobs, fused_policy_loss, group_advantages, sample

__version__ = "0.1.0"
__all__ = ["ops", "reference", "Completion", "generate", "Policy", "load", "decode_attention",
           "fused_logprobs", "fused_policy_loss", "group_advantages", "sample"]
