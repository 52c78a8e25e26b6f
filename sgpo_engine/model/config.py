"""ModelConfig: the decoder hyper-parameters, parsed from a Hugging Face config.json.

Only the fields the decoder needs are kept as typed attributes; the original
dict is kept in `raw` so that `save` writes back everything it did not
understand (transformers_version, initializer_range, ...).

There is one way to build a ModelConfig, its constructor: `from_hf_dict` turns
a config.json into constructor arguments and calls it. The constructor applies
what the architecture fixes (architectures.py), derives the optional shapes
and validates, naming the config.json in its errors.

Defaults for optional fields are those of the transformers config class of
each architecture (transformers 5.x, `ArchSpec.defaults`), so a config.json
that relies on a class default means the same thing here as in transformers.
The fields that fix tensor shapes are required: a config.json without them is
an error rather than a silently different model. RoPE fields are read and
written by rope.py.
"""
from __future__ import annotations

import json
import os
from dataclasses import InitVar, dataclass, field
from typing import Any, Optional

import torch

from .architectures import ARCHITECTURES, SUPPORTED_ARCHITECTURES, ArchSpec, ClassDefaults, Sliding
from .json_fields import Bad, field_error, is_int, is_num
from .rope import RopeScaling, rope_fields, rope_of

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
    # init-only, not stored: what validation errors start with (from_hf_dict passes the file's path)
    source: InitVar[str] = "ModelConfig"

    def __post_init__(self, source: str):
        self._apply_architecture(_spec(self.architecture))
        if self.num_key_value_heads is None:
            self.num_key_value_heads = self.num_attention_heads
        if self.head_dim is None:
            self.head_dim = self.hidden_size // self.num_attention_heads
        if not self.sliding_layers:
            self.sliding_layers = (self.sliding_window is not None,) * self.num_hidden_layers
        self.sliding_layers = tuple(bool(s) for s in self.sliding_layers)
        self.validate(source)

    def _apply_architecture(self, spec: ArchSpec) -> None:
        """Flags the architecture fixes, whatever was passed (Qwen3 always has q/k
        norms, Qwen2 always q/k/v biases, ...), so that a hand-built config stays
        loadable by transformers."""
        self.qk_norm = spec.qk_norm
        self.attention_bias, self.attention_out_bias, self.mlp_bias = spec.biases(self.attention_bias,
                                                                                  self.mlp_bias)
        if spec.sliding is Sliding.NONE:
            self.sliding_window = None

    # ------------------------------------------------------------------
    def validate(self, source: str = "ModelConfig") -> None:
        """Shape consistency checks; `source` prefixes the message (e.g. the config.json path)."""
        bad = field_error(source)
        for name in ("vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers",
                     "num_attention_heads", "num_key_value_heads", "head_dim", "max_position_embeddings"):
            v = getattr(self, name)
            if not is_int(v) or v <= 0:
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
        if self.sliding_window is not None and (not is_int(self.sliding_window) or self.sliding_window <= 0):
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
        return [] if e is None else [e] if is_int(e) else list(e)

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
        return cls(**_arguments_of(d, field_error(source)), raw=dict(d), source=source)

    def to_hf_dict(self, dtype: Optional[torch.dtype] = None) -> dict:
        """The config.json to write: the dict this config was parsed from (so
        fields we do not model survive a round trip) with our fields written
        over it; RoPE both ways (see `rope.rope_fields`)."""
        spec = ARCHITECTURES[self.architecture]
        d = dict(self.raw)
        d.pop("rope_scaling", None)
        d.update(
            architectures=[self.architecture],
            model_type=d.get("model_type", spec.model_type),
            hidden_act=d.get("hidden_act", "silu"),
            **{name: getattr(self, name) for name in _WRITTEN_AS_IS},
            **rope_fields(self.rope_theta, self.rope_scaling),
        )
        d.update({name: getattr(self, name) for name in spec.bias_fields})
        d.update(spec.sliding_fields(self.sliding_window, self.sliding_layers))
        dt = dtype or self.dtype
        if dt is not None:
            d["dtype"] = dtype_name(dt)
            if "torch_dtype" in d:
                d["torch_dtype"] = dtype_name(dt)
        return d


# ----------------------------------------------------------------------
# parsing a config.json
# ----------------------------------------------------------------------
def _spec(architecture: str) -> ArchSpec:
    if architecture not in ARCHITECTURES:
        raise ValueError(f"architecture: unsupported {architecture!r} "
                         f"(supported: {', '.join(SUPPORTED_ARCHITECTURES)})")
    return ARCHITECTURES[architecture]


# The fields to_hf_dict writes under their own names, as they are.
_WRITTEN_AS_IS = ("vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads",
                  "num_key_value_heads", "head_dim", "rms_norm_eps", "max_position_embeddings",
                  "tie_word_embeddings", "bos_token_id", "eos_token_id", "pad_token_id")


def _arguments_of(d: dict, bad: Bad) -> dict[str, Any]:
    """The ModelConfig arguments config.json `d` means; the constructor derives
    the rest (num_key_value_heads, head_dim) and validates the shapes."""
    arch = _architecture(d, bad)
    spec = ARCHITECTURES[arch]
    hidden = _required_int(d, "hidden_size", bad)
    heads = _required_int(d, "num_attention_heads", bad)
    layers = _required_int(d, "num_hidden_layers", bad)
    act = d.get("hidden_act", "silu")
    if act not in ("silu", "swish"):
        bad("hidden_act", f"only silu (SwiGLU) is supported, got {act!r}")
    head_dim = _optional(d, "head_dim", int, spec.defaults.head_dim, bad)
    max_pos = _optional(d, "max_position_embeddings", int, spec.defaults.max_position_embeddings, bad)
    rope_theta, rope_scaling = rope_of(d, max_pos, arch, bad)
    biases = {name: _optional(d, name, bool, False, bad) for name in spec.bias_fields}
    sliding_window, sliding_layers = spec.sliding_of(d, layers, bad)
    dtype = _checkpoint_dtype(d)
    tokens = _token_ids(d, spec.defaults, bad)
    return dict(
        architecture=arch,
        vocab_size=_required_int(d, "vocab_size", bad),
        hidden_size=hidden,
        intermediate_size=_required_int(d, "intermediate_size", bad),
        num_hidden_layers=layers,
        num_attention_heads=heads,
        num_key_value_heads=_optional(d, "num_key_value_heads", int, None, bad),
        head_dim=head_dim,
        rms_norm_eps=float(_optional(d, "rms_norm_eps", float, spec.defaults.rms_norm_eps, bad)),
        rope_theta=float(rope_theta),
        rope_scaling=rope_scaling,
        max_position_embeddings=max_pos,
        tie_word_embeddings=_optional(d, "tie_word_embeddings", bool, spec.defaults.tie_word_embeddings, bad),
        **biases,
        sliding_window=sliding_window,
        sliding_layers=sliding_layers,
        dtype=dtype,
        **tokens,
    )


def _architecture(d: dict, bad: Bad) -> str:
    archs = d.get("architectures")
    if archs is None:
        bad("architectures", "missing")
    if not isinstance(archs, list) or len(archs) != 1 or not isinstance(archs[0], str):
        bad("architectures", f"expected a list with one architecture name, got {archs!r}")
    if archs[0] not in ARCHITECTURES:
        bad("architectures", f"unsupported architecture {archs[0]!r} "
            f"(supported: {', '.join(SUPPORTED_ARCHITECTURES)})")
    return archs[0]


def _required_int(d: dict, name: str, bad: Bad) -> int:
    if name not in d or d[name] is None:
        bad(name, "missing")
    v = d[name]
    if not is_int(v) or v <= 0:
        bad(name, f"expected a positive integer, got {v!r}")
    return v


def _optional(d: dict, name: str, kind: type, default: Any, bad: Bad) -> Any:
    """d[name] checked as a positive int, a positive number or a bool; `default` when absent or null."""
    v = d.get(name)
    if v is None:
        return default
    if kind is int and not (is_int(v) and v > 0):
        bad(name, f"expected a positive integer, got {v!r}")
    if kind is float and not (is_num(v) and v > 0):
        bad(name, f"expected a positive number, got {v!r}")
    if kind is bool and not isinstance(v, bool):
        bad(name, f"expected true or false, got {v!r}")
    return v


def _checkpoint_dtype(d: dict) -> Optional[torch.dtype]:
    try:
        return parse_dtype(d.get("dtype", d.get("torch_dtype")), what="dtype")
    except ValueError:
        # transformers tolerates e.g. "auto"/float64 here; the caller's dtype decides then
        return None


def _token_ids(d: dict, defaults: ClassDefaults, bad: Bad) -> dict[str, Any]:
    """bos/pad: a non-negative integer or null; eos: that, or a list of them."""
    tokens = {}
    for name in ("bos_token_id", "pad_token_id"):
        v = d.get(name, getattr(defaults, name))
        if v is not None and not (is_int(v) and v >= 0):
            bad(name, f"expected a non-negative integer or null, got {v!r}")
        tokens[name] = v
    eos = d.get("eos_token_id", defaults.eos_token_id)
    if eos is not None and not (is_int(eos) and eos >= 0) and not (
            isinstance(eos, list) and all(is_int(e) and e >= 0 for e in eos)):
        bad("eos_token_id", f"expected a non-negative integer, a list of them, or null, got {eos!r}")
    tokens["eos_token_id"] = eos
    return tokens
