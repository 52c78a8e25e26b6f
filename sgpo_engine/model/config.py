"""ModelConfig: the decoder hyper-parameters, parsed from a Hugging Face config.json.

Only the fields the decoder needs are kept as typed attributes; the original
dict is kept in `raw` so that `save` writes back everything it did not
understand (transformers_version, initializer_range, ...).

Defaults for optional fields are those of the transformers config class of
each architecture (transformers 5.x), so a config.json that relies on a class
default means the same thing here as in transformers. The fields that fix
tensor shapes are required: a config.json without them is an error rather
than a silently different model. RoPE fields are read and written by rope.py.
"""
from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass, field
from typing import Any, Optional

import torch

from .rope import RopeScaling, rope_fields, rope_of

# Architectures the decoder implements, and how each one differs from Llama.
#   qkv_bias:  "config"  -> q/k/v/o projections have a bias when attention_bias is true
#              "always"  -> q/k/v have a bias, o_proj never (Qwen2)
#              "never"   -> no projection biases (Mistral ignores attention_bias)
#   qk_norm:   RMSNorm over head_dim on q and k before RoPE (Qwen3)
#   sliding:   "all" -> sliding_window applies to every layer when set (Mistral)
#              "layer_types" -> only to layers typed "sliding_attention", and only
#              when use_sliding_window is true (Qwen2, Qwen3)
#              None -> architecture has no sliding window (Llama)
#   defaults:  class defaults of the optional fields in transformers
_ARCHITECTURES: dict[str, dict[str, Any]] = {
    "LlamaForCausalLM": dict(
        model_type="llama", qkv_bias="config", mlp_bias=True, qk_norm=False, sliding=None,
        defaults=dict(max_position_embeddings=2048, rms_norm_eps=1e-6, tie_word_embeddings=False,
                      bos_token_id=1, eos_token_id=2)),
    "MistralForCausalLM": dict(
        model_type="mistral", qkv_bias="never", mlp_bias=False, qk_norm=False, sliding="all",
        defaults=dict(max_position_embeddings=4096 * 32, rms_norm_eps=1e-6, tie_word_embeddings=False,
                      bos_token_id=1, eos_token_id=2, sliding_window=4096)),
    "Qwen2ForCausalLM": dict(
        model_type="qwen2", qkv_bias="always", mlp_bias=False, qk_norm=False, sliding="layer_types",
        defaults=dict(max_position_embeddings=32768, rms_norm_eps=1e-6, tie_word_embeddings=False,
                      bos_token_id=None, eos_token_id=None, sliding_window=4096, max_window_layers=28)),
    "Qwen3ForCausalLM": dict(
        model_type="qwen3", qkv_bias="config", mlp_bias=False, qk_norm=True, sliding="layer_types",
        # Qwen3Config defaults head_dim to 128, not hidden_size // num_attention_heads
        defaults=dict(max_position_embeddings=32768, rms_norm_eps=1e-6, tie_word_embeddings=False,
                      bos_token_id=None, eos_token_id=None, sliding_window=4096, max_window_layers=28,
                      head_dim=128)),
}
SUPPORTED_ARCHITECTURES = tuple(_ARCHITECTURES)

_DTYPES = {
    "float32": torch.float32, "fp32": torch.float32, "float": torch.float32,
    "bfloat16": torch.bfloat16, "bf16": torch.bfloat16,
    "float16": torch.float16, "fp16": torch.float16, "half": torch.float16,
}


def parse_dtype(value: Any, *, what: str = "dtype") -> Optional[torch.dtype]:
    """'bf16' / 'bfloat16' / 'torch.bfloat16' / torch.bfloat16 -> torch.bfloat16 (None stays None)."""
    if value is None or isinstance(value, torch.dtype) and value in _DTYPES.values():
        return value
    if isinstance(value, str):
        key = value.removeprefix("torch.").lower()
        if key in _DTYPES:
            return _DTYPES[key]
    raise ValueError(f"{what}: expected one of float32/bfloat16/float16 (or fp32/bf16/fp16), got {value!r}")


def dtype_name(dtype: torch.dtype) -> str:
    """torch.bfloat16 -> 'bfloat16' (the spelling config.json uses)."""
    return str(dtype).removeprefix("torch.")


@dataclass
class ModelConfig:
    """Decoder hyper-parameters. Build one with `ModelConfig.from_hf_dict` /
    `ModelConfig.from_file`, or directly (e.g. for a model trained from scratch)."""
    architecture: str
    vocab_size: int
    hidden_size: int
    intermediate_size: int
    num_hidden_layers: int
    num_attention_heads: int
    num_key_value_heads: Optional[int] = None      # None -> num_attention_heads (no GQA)
    head_dim: Optional[int] = None                 # None -> hidden_size // num_attention_heads
    rms_norm_eps: float = 1e-6
    rope_theta: float = 10000.0
    rope_scaling: Optional[RopeScaling] = None     # None = plain RoPE
    max_position_embeddings: int = 2048
    tie_word_embeddings: bool = False
    attention_bias: bool = False                   # bias on q/k/v projections
    attention_out_bias: bool = False               # bias on o_proj
    mlp_bias: bool = False                         # bias on gate/up/down (Llama's mlp_bias)
    qk_norm: bool = False                          # Qwen3: RMSNorm over head_dim on q and k
    sliding_window: Optional[int] = None           # window in tokens, for the layers in sliding_layers
    sliding_layers: tuple[bool, ...] = ()          # per layer: does sliding_window apply
    dtype: Optional[torch.dtype] = None            # the checkpoint's dtype (config.json dtype / torch_dtype)
    bos_token_id: Optional[int] = None
    eos_token_id: Optional[int | list[int]] = None
    pad_token_id: Optional[int] = None
    raw: dict = field(default_factory=dict, repr=False)  # the config.json it came from

    def __post_init__(self):
        if self.architecture not in _ARCHITECTURES:
            raise ValueError(f"architecture: unsupported {self.architecture!r} "
                             f"(supported: {', '.join(SUPPORTED_ARCHITECTURES)})")
        self._apply_architecture()
        if self.num_key_value_heads is None:
            self.num_key_value_heads = self.num_attention_heads
        if self.head_dim is None:
            self.head_dim = self.hidden_size // self.num_attention_heads
        if not self.sliding_layers:
            self.sliding_layers = (self.sliding_window is not None,) * self.num_hidden_layers
        self.sliding_layers = tuple(bool(s) for s in self.sliding_layers)
        self.validate()

    def _apply_architecture(self) -> None:
        """Flags the architecture fixes (whatever was passed): Qwen3 always has
        q/k norms, Qwen2 always has q/k/v biases and no o_proj bias, Mistral has
        no biases, only Llama has mlp_bias; o_proj follows attention_bias where
        the config decides. Keeps a hand-built config loadable by transformers."""
        spec = _ARCHITECTURES[self.architecture]
        self.qk_norm = spec["qk_norm"]
        if spec["qkv_bias"] == "always":
            self.attention_bias, self.attention_out_bias = True, False
        elif spec["qkv_bias"] == "never":
            self.attention_bias = self.attention_out_bias = False
        else:
            self.attention_out_bias = self.attention_bias
        if not spec["mlp_bias"]:
            self.mlp_bias = False
        if spec["sliding"] is None:
            self.sliding_window = None

    # ------------------------------------------------------------------
    def validate(self, source: str = "ModelConfig") -> None:
        """Shape consistency checks; `source` prefixes the message (e.g. the config.json path)."""
        def bad(name, msg):
            raise ValueError(f"{source}: field {name!r}: {msg}")
        for name in ("vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers",
                     "num_attention_heads", "num_key_value_heads", "head_dim", "max_position_embeddings"):
            v = getattr(self, name)
            if not _is_int(v) or v <= 0:
                bad(name, f"expected a positive integer, got {v!r}")
        if self.num_attention_heads % self.num_key_value_heads:
            bad("num_key_value_heads", f"num_attention_heads ({self.num_attention_heads}) must be a multiple of "
                f"num_key_value_heads ({self.num_key_value_heads})")
        if self.head_dim % 2:
            bad("head_dim", f"RoPE needs an even head_dim, got {self.head_dim}")
        if not (self.rms_norm_eps > 0):
            bad("rms_norm_eps", f"expected > 0, got {self.rms_norm_eps!r}")
        if not (self.rope_theta > 0):
            bad("rope_theta", f"expected > 0, got {self.rope_theta!r}")
        if self.sliding_window is not None and (not _is_int(self.sliding_window) or self.sliding_window <= 0):
            bad("sliding_window", f"expected a positive integer or null, got {self.sliding_window!r}")
        if len(self.sliding_layers) != self.num_hidden_layers:
            bad("layer_types", f"expected {self.num_hidden_layers} entries, got {len(self.sliding_layers)}")

    def layer_sliding_window(self, layer_idx: int) -> Optional[int]:
        """The sliding window of one layer in tokens (a query at sequence index i
        sees keys at indices j with i - window < j <= i), or None for full causal
        attention. An attention object given to the decoder must honor it."""
        return self.sliding_window if self.sliding_layers[layer_idx] else None

    @property
    def eos_token_ids(self) -> list[int]:
        e = self.eos_token_id
        return [] if e is None else [e] if _is_int(e) else list(e)

    # ------------------------------------------------------------------
    @classmethod
    def from_file(cls, path: str | os.PathLike) -> "ModelConfig":
        path = os.fspath(path)
        if not os.path.isfile(path):
            raise ValueError(f"{path}: config.json not found")
        try:
            with open(path, encoding="utf-8") as f:
                d = json.load(f)
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
            raise ValueError(f"{path}: config.json is not valid JSON ({e})") from None
        return cls.from_hf_dict(d, source=path)

    @classmethod
    def from_hf_dict(cls, d: dict, source: str = "config.json") -> "ModelConfig":
        """Parses a config.json dict; errors are ValueError "<source>: field '<name>': ..."."""
        if not isinstance(d, dict):
            raise ValueError(f"{source}: expected a JSON object, got {type(d).__name__}")

        def bad(name, msg):
            raise ValueError(f"{source}: field {name!r}: {msg}")

        arch = _architecture(d, bad)
        spec = _ARCHITECTURES[arch]
        defaults = spec["defaults"]

        def req_int(name):
            if name not in d or d[name] is None:
                bad(name, "missing")
            v = d[name]
            if not _is_int(v) or v <= 0:
                bad(name, f"expected a positive integer, got {v!r}")
            return v

        def opt(name, kind, default):
            v = d.get(name)
            if v is None:
                return default
            if kind is int and not (_is_int(v) and v > 0):
                bad(name, f"expected a positive integer, got {v!r}")
            if kind is float and not (_is_num(v) and v > 0):
                bad(name, f"expected a positive number, got {v!r}")
            if kind is bool and not isinstance(v, bool):
                bad(name, f"expected true or false, got {v!r}")
            return v

        hidden = req_int("hidden_size")
        heads = req_int("num_attention_heads")
        layers = req_int("num_hidden_layers")
        act = d.get("hidden_act", "silu")
        if act not in ("silu", "swish"):
            bad("hidden_act", f"only silu (SwiGLU) is supported, got {act!r}")
        head_dim = opt("head_dim", int, defaults.get("head_dim"))
        max_pos = opt("max_position_embeddings", int, defaults["max_position_embeddings"])
        rope_theta, rope_scaling = rope_of(d, max_pos, arch, bad)

        bias_kind = spec["qkv_bias"]
        attn_bias = opt("attention_bias", bool, False) if bias_kind == "config" else bias_kind == "always"
        out_bias = attn_bias if bias_kind == "config" else False
        mlp_bias = opt("mlp_bias", bool, False) if spec["mlp_bias"] else False

        sliding_window, sliding_layers = _sliding(d, spec, defaults, layers, bad)

        dtype_value = d.get("dtype", d.get("torch_dtype"))
        try:
            dtype = parse_dtype(dtype_value, what="dtype")
        except ValueError:
            # transformers tolerates e.g. "auto"/float64 here; the caller's dtype decides then
            dtype = None

        token = {}
        for name in ("bos_token_id", "pad_token_id"):
            v = d.get(name, defaults.get(name))
            if v is not None and not (_is_int(v) and v >= 0):
                bad(name, f"expected a non-negative integer or null, got {v!r}")
            token[name] = v
        eos = d.get("eos_token_id", defaults.get("eos_token_id"))
        if eos is not None and not (_is_int(eos) and eos >= 0) and not (
                isinstance(eos, list) and all(_is_int(e) and e >= 0 for e in eos)):
            bad("eos_token_id", f"expected a non-negative integer, a list of them, or null, got {eos!r}")

        cfg = cls.__new__(cls)
        # set fields without running __post_init__'s validation first: we want errors to name `source`
        values = dict(
            architecture=arch,
            vocab_size=req_int("vocab_size"),
            hidden_size=hidden,
            intermediate_size=req_int("intermediate_size"),
            num_hidden_layers=layers,
            num_attention_heads=heads,
            num_key_value_heads=opt("num_key_value_heads", int, heads),
            head_dim=head_dim if head_dim is not None else hidden // heads,
            rms_norm_eps=float(opt("rms_norm_eps", float, defaults["rms_norm_eps"])),
            rope_theta=float(rope_theta),
            rope_scaling=rope_scaling,
            max_position_embeddings=max_pos,
            tie_word_embeddings=opt("tie_word_embeddings", bool, defaults["tie_word_embeddings"]),
            attention_bias=attn_bias,
            attention_out_bias=out_bias,
            mlp_bias=mlp_bias,
            qk_norm=spec["qk_norm"],
            sliding_window=sliding_window,
            sliding_layers=sliding_layers,
            dtype=dtype,
            bos_token_id=token["bos_token_id"],
            eos_token_id=eos,
            pad_token_id=token["pad_token_id"],
            raw=dict(d),
        )
        for k, v in values.items():
            setattr(cfg, k, v)
        cfg.validate(source)
        return cfg

    def to_hf_dict(self, dtype: Optional[torch.dtype] = None) -> dict:
        """The config.json to write: the dict this config was parsed from (so
        fields we do not model survive a round trip) with our fields written
        over it; RoPE both ways (see `rope.rope_fields`)."""
        spec = _ARCHITECTURES[self.architecture]
        d = dict(self.raw)
        d.pop("rope_scaling", None)
        d.update(
            architectures=[self.architecture],
            model_type=d.get("model_type", spec["model_type"]),
            vocab_size=self.vocab_size,
            hidden_size=self.hidden_size,
            intermediate_size=self.intermediate_size,
            num_hidden_layers=self.num_hidden_layers,
            num_attention_heads=self.num_attention_heads,
            num_key_value_heads=self.num_key_value_heads,
            head_dim=self.head_dim,
            hidden_act=d.get("hidden_act", "silu"),
            rms_norm_eps=self.rms_norm_eps,
            **rope_fields(self.rope_theta, self.rope_scaling),
            max_position_embeddings=self.max_position_embeddings,
            tie_word_embeddings=self.tie_word_embeddings,
            bos_token_id=self.bos_token_id,
            eos_token_id=self.eos_token_id,
            pad_token_id=self.pad_token_id,
        )
        if spec["qkv_bias"] == "config":
            d["attention_bias"] = self.attention_bias
        if spec["mlp_bias"]:
            d["mlp_bias"] = self.mlp_bias
        if spec["sliding"] == "all":
            d["sliding_window"] = self.sliding_window
        elif spec["sliding"] == "layer_types":
            d["use_sliding_window"] = any(self.sliding_layers)
            d["sliding_window"] = self.sliding_window
            d["layer_types"] = ["sliding_attention" if s else "full_attention" for s in self.sliding_layers]
        dt = dtype or self.dtype
        if dt is not None:
            d["dtype"] = dtype_name(dt)
            if "torch_dtype" in d:
                d["torch_dtype"] = dtype_name(dt)
        return d


# ----------------------------------------------------------------------
# parsing helpers
# ----------------------------------------------------------------------
def _is_int(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_num(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def _architecture(d, bad) -> str:
    archs = d.get("architectures")
    if archs is None:
        bad("architectures", "missing")
    if not isinstance(archs, list) or len(archs) != 1 or not isinstance(archs[0], str):
        bad("architectures", f"expected a list with one architecture name, got {archs!r}")
    if archs[0] not in _ARCHITECTURES:
        bad("architectures", f"unsupported architecture {archs[0]!r} "
            f"(supported: {', '.join(SUPPORTED_ARCHITECTURES)})")
    return archs[0]


def _sliding(d, spec, defaults, layers, bad) -> tuple[Optional[int], tuple[bool, ...]]:
    """(window, per-layer flags) the way each architecture's transformers code decides them."""
    kind = spec["sliding"]
    if kind is None:
        return None, (False,) * layers
    window = d.get("sliding_window", defaults.get("sliding_window"))
    if window is not None and (not _is_int(window) or window <= 0):
        bad("sliding_window", f"expected a positive integer or null, got {window!r}")
    if kind == "all":
        # MistralAttention passes config.sliding_window to every layer
        return window, (window is not None,) * layers
    use = d.get("use_sliding_window", False)
    if not isinstance(use, bool):
        bad("use_sliding_window", f"expected true or false, got {use!r}")
    if not use:
        window = None  # Qwen2/3 configs null the window unless use_sliding_window
    types = d.get("layer_types")
    if types is None:
        mwl = d.get("max_window_layers", defaults["max_window_layers"])
        if not _is_int(mwl) or mwl < 0:
            bad("max_window_layers", f"expected a non-negative integer, got {mwl!r}")
        flags = tuple(window is not None and i >= mwl for i in range(layers))
    else:
        if not isinstance(types, list) or len(types) != layers or any(
                t not in ("full_attention", "sliding_attention") for t in types):
            bad("layer_types", f"expected {layers} entries of 'full_attention'/'sliding_attention', got {types!r}")
        flags = tuple(t == "sliding_attention" for t in types)
        if any(flags) and window is None:
            flags = (False,) * layers  # a sliding layer without a window is full attention
    return window, flags
