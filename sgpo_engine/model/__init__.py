"""The model layer: HF config parsing, the architectures, the decoder, RoPE,
tokenizer, and safetensors load/save (docs/design.md sections 2 and 4.1)."""
from .architectures import SUPPORTED_ARCHITECTURES
from .config import ModelConfig, parse_dtype
from .decoder import AttentionFn, Decoder
from .io import save
from .policy import Policy, load
from .rope import SUPPORTED_ROPE_TYPES, RopeScaling
from .tokenizer import Tokenizer

__all__ = ["ModelConfig", "RopeScaling", "SUPPORTED_ARCHITECTURES", "SUPPORTED_ROPE_TYPES", "parse_dtype",
           "AttentionFn", "Decoder", "Policy", "Tokenizer", "load", "save"]
