"""The architectures the decoder implements: one `ArchSpec` each, saying how it
differs from Llama and what its transformers config class (5.x) defaults the
optional config.json fields to.

The spec is the one place these facts are read. `ModelConfig` asks it for the
biases and q/k norm a config gets whatever was asked for (so a hand-built
config stays loadable by transformers), for the config.json fields that decide
the biases, and for the sliding-window flags of a config.json and the fields
that write them back.
"""
from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Optional

from .json_fields import Bad, is_int


class QKVBias(enum.Enum):
    """Which attention projections have a bias."""
    CONFIG = "config"   # q/k/v/o, when config.json's attention_bias is true (Llama, Qwen3)
    ALWAYS = "always"   # q/k/v always, o_proj never; attention_bias is ignored (Qwen2)
    NEVER = "never"     # none; attention_bias is ignored (Mistral)


class Sliding(enum.Enum):
    """Which layers config.json's sliding_window applies to."""
    NONE = "none"                # the architecture has no sliding window (Llama)
    ALL = "all"                  # every layer, whenever sliding_window is set (Mistral)
    LAYER_TYPES = "layer_types"  # the layers typed "sliding_attention", and only when
    #                              use_sliding_window is true (Qwen2, Qwen3)


@dataclass(frozen=True)
class ClassDefaults:
    """The values transformers' config class gives optional config.json fields
    it does not find, so that a config.json means the same here as there."""
    max_position_embeddings: int
    rms_norm_eps: float
    tie_word_embeddings: bool
    bos_token_id: Optional[int]
    eos_token_id: Optional[int]
    pad_token_id: Optional[int] = None
    head_dim: Optional[int] = None           # None: hidden_size // num_attention_heads
    sliding_window: Optional[int] = None     # read unless Sliding.NONE
    max_window_layers: Optional[int] = None  # read by Sliding.LAYER_TYPES when layer_types is absent


@dataclass(frozen=True)
class ArchSpec:
    """How one architecture differs from Llama."""
    model_type: str          # config.json's model_type when the config does not say
    qkv_bias: QKVBias
    mlp_bias: bool           # config.json's mlp_bias decides gate/up/down biases (Llama); else none
    qk_norm: bool            # RMSNorm over head_dim on q and k before RoPE (Qwen3)
    sliding: Sliding
    defaults: ClassDefaults

    @property
    def bias_fields(self) -> tuple[str, ...]:
        """The config.json fields that decide this architecture's biases (read and written)."""
        return (("attention_bias",) if self.qkv_bias is QKVBias.CONFIG else ()) + (
            ("mlp_bias",) if self.mlp_bias else ())

    def biases(self, attention_bias: bool, mlp_bias: bool) -> tuple[bool, bool, bool]:
        """(attention_bias, attention_out_bias, mlp_bias) of a config that asks for
        these two: what the architecture fixes wins, and o_proj follows
        attention_bias where the config decides."""
        if self.qkv_bias is QKVBias.CONFIG:
            attention, out = attention_bias, attention_bias
        else:
            attention, out = self.qkv_bias is QKVBias.ALWAYS, False
        return attention, out, self.mlp_bias and mlp_bias

    def sliding_of(self, d: dict, layers: int, bad: Bad) -> tuple[Optional[int], tuple[bool, ...]]:
        """(window, per-layer flags) of config.json `d`, the way this architecture's
        transformers code decides them."""
        if self.sliding is Sliding.NONE:
            return None, (False,) * layers
        window = d.get("sliding_window", self.defaults.sliding_window)
        if window is not None and (not is_int(window) or window <= 0):
            bad("sliding_window", f"expected a positive integer or null, got {window!r}")
        if self.sliding is Sliding.ALL:
            # MistralAttention passes config.sliding_window to every layer
            return window, (window is not None,) * layers
        return _by_layer_type(d, window, layers, self.defaults.max_window_layers, bad)

    def sliding_fields(self, window: Optional[int], flags: tuple[bool, ...]) -> dict:
        """The config.json fields that `sliding_of` reads back as (window, flags)."""
        if self.sliding is Sliding.NONE:
            return {}
        if self.sliding is Sliding.ALL:
            return {"sliding_window": window}
        return {"use_sliding_window": any(flags), "sliding_window": window,
                "layer_types": ["sliding_attention" if s else "full_attention" for s in flags]}


def _by_layer_type(d: dict, window: Optional[int], layers: int, max_window_layers: Optional[int],
                   bad: Bad) -> tuple[Optional[int], tuple[bool, ...]]:
    """Sliding.LAYER_TYPES: Qwen2/3 configs null the window unless use_sliding_window;
    layer_types, or else max_window_layers, says which layers slide."""
    use = d.get("use_sliding_window", False)
    if not isinstance(use, bool):
        bad("use_sliding_window", f"expected true or false, got {use!r}")
    if not use:
        window = None
    types = d.get("layer_types")
    if types is None:
        mwl = d.get("max_window_layers", max_window_layers)
        if not is_int(mwl) or mwl < 0:
            bad("max_window_layers", f"expected a non-negative integer, got {mwl!r}")
        return window, tuple(window is not None and i >= mwl for i in range(layers))
    if not isinstance(types, list) or len(types) != layers or any(
            t not in ("full_attention", "sliding_attention") for t in types):
        bad("layer_types", f"expected {layers} entries of 'full_attention'/'sliding_attention', got {types!r}")
    flags = tuple(t == "sliding_attention" for t in types)
    if any(flags) and window is None:
        flags = (False,) * layers  # a sliding layer without a window is full attention
    return window, flags


ARCHITECTURES: dict[str, ArchSpec] = {
    "LlamaForCausalLM": ArchSpec(
        "llama", QKVBias.CONFIG, mlp_bias=True, qk_norm=False, sliding=Sliding.NONE,
        defaults=ClassDefaults(max_position_embeddings=2048, rms_norm_eps=1e-6, tie_word_embeddings=False,
                               bos_token_id=1, eos_token_id=2)),
    "MistralForCausalLM": ArchSpec(
        "mistral", QKVBias.NEVER, mlp_bias=False, qk_norm=False, sliding=Sliding.ALL,
        defaults=ClassDefaults(max_position_embeddings=4096 * 32, rms_norm_eps=1e-6, tie_word_embeddings=False,
                               bos_token_id=1, eos_token_id=2, sliding_window=4096)),
    "Qwen2ForCausalLM": ArchSpec(
        "qwen2", QKVBias.ALWAYS, mlp_bias=False, qk_norm=False, sliding=Sliding.LAYER_TYPES,
        defaults=ClassDefaults(max_position_embeddings=32768, rms_norm_eps=1e-6, tie_word_embeddings=False,
                               bos_token_id=None, eos_token_id=None, sliding_window=4096, max_window_layers=28)),
    "Qwen3ForCausalLM": ArchSpec(
        "qwen3", QKVBias.CONFIG, mlp_bias=False, qk_norm=True, sliding=Sliding.LAYER_TYPES,
        # Qwen3Config defaults head_dim to 128, not hidden_size // num_attention_heads
        defaults=ClassDefaults(max_position_embeddings=32768, rms_norm_eps=1e-6, tie_word_embeddings=False,
                               bos_token_id=None, eos_token_id=None, sliding_window=4096, max_window_layers=28,
                               head_dim=128)),
}
SUPPORTED_ARCHITECTURES = tuple(ARCHITECTURES)
