"""Rotary position embeddings: the RoPE fields of a config.json (read and
written), inverse frequencies for each scaling recipe, and cos/sin for given
positions.

The recipes reproduce transformers' `modeling_rope_utils` (5.x) numerically:
fp32 frequencies, the same formula order, the same yarn correction range. They
are written from the formulas, not copied.

Layout is the "rotate half" one of Llama/Mistral/Qwen: the first and second
halves of head_dim form the (x, y) pairs, and frequency i drives dims i and
i + head_dim/2.
"""
from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Optional

import torch

from .json_fields import Bad, is_int, is_num

if TYPE_CHECKING:  # config.py imports this module for RopeScaling and the parsing
    from .config import ModelConfig

SUPPORTED_ROPE_TYPES = ("default", "linear", "llama3", "dynamic", "yarn")


@dataclass(frozen=True)
class RopeScaling:
    """One RoPE scaling recipe (transformers' `rope_parameters` minus rope_theta).

    Unused fields stay None; `original_max_position_embeddings` is resolved
    (to max_position_embeddings when absent) for llama3 and yarn, as
    transformers does.
    """
    rope_type: str                      # linear | llama3 | dynamic | yarn
    factor: Optional[float] = None
    # llama3
    low_freq_factor: Optional[float] = None
    high_freq_factor: Optional[float] = None
    original_max_position_embeddings: Optional[int] = None
    # yarn
    attention_factor: Optional[float] = None
    beta_fast: Optional[float] = None
    beta_slow: Optional[float] = None
    mscale: Optional[float] = None
    mscale_all_dim: Optional[float] = None
    truncate: bool = True


# ----------------------------------------------------------------------
# config.json
# ----------------------------------------------------------------------
def rope_of(d: dict, max_pos: int, architecture: str, bad: Bad) -> tuple[float, Optional[RopeScaling]]:
    """(rope_theta, scaling) of config.json `d` (`max_pos`: its max_position_embeddings).
    The decoder rotates all of head_dim, so a partial_rotary_factor other than 1 is an error."""
    theta, scaling = _recipe(d, max_pos, bad)
    prf = d.get("partial_rotary_factor")
    if prf is not None and prf != 1.0:
        bad("partial_rotary_factor", f"only 1.0 (full rotary) is supported by {architecture}, got {prf!r}")
    return theta, scaling


def rope_fields(theta: float, scaling: Optional[RopeScaling]) -> dict:
    """The RoPE fields of a config.json, written both ways: transformers-5
    `rope_parameters` (rope_theta inside) and the older top-level `rope_theta` +
    `rope_scaling`, which transformers 4 reads and transformers 5 accepts as the
    same thing."""
    rope = {"rope_type": "default", "rope_theta": theta}
    if scaling is not None:
        rope = {k: v for k, v in dataclasses.asdict(scaling).items() if v is not None}
        if rope.get("truncate") is True:
            rope.pop("truncate")          # the default; keeps llama3 configs free of yarn keys
        rope["rope_theta"] = theta
    return dict(rope_parameters=rope, rope_theta=theta,
                rope_scaling=None if scaling is None else {k: v for k, v in rope.items() if k != "rope_theta"})


def _recipe(d: dict, max_pos: int, bad: Bad) -> tuple[float, Optional[RopeScaling]]:
    """(rope_theta, scaling) from either spelling: transformers-5 `rope_parameters`
    (with rope_theta inside) or the older top-level `rope_theta` + `rope_scaling`
    (with `type` or `rope_type`). As in transformers, `rope_scaling` wins when both
    are present, and a theta inside the dict wins over the top-level one."""
    if d.get("rope_scaling") is not None:
        name, params = "rope_scaling", d["rope_scaling"]
    else:
        name, params = "rope_parameters", d.get("rope_parameters")
    params = {} if params is None else params
    if not isinstance(params, dict):
        bad(name, f"expected an object, got {params!r}")
    if any(isinstance(v, dict) for v in params.values()):
        bad(name, "per-layer-type RoPE parameters are not supported")
    theta = params.get("rope_theta", d.get("rope_theta", 10000.0))
    if not is_num(theta) or theta <= 0:
        bad(f"{name}.rope_theta" if "rope_theta" in params else "rope_theta",
            f"expected a positive number, got {theta!r}")
    rope_type = params.get("rope_type", params.get("type", "default"))
    if rope_type not in SUPPORTED_ROPE_TYPES:
        bad(f"{name}.rope_type", f"unknown rope type {rope_type!r} (supported: {', '.join(SUPPORTED_ROPE_TYPES)})")
    if params.get("partial_rotary_factor", 1.0) != 1.0:
        bad(f"{name}.partial_rotary_factor", f"only 1.0 is supported, got {params['partial_rotary_factor']!r}")
    if rope_type == "default":
        return theta, None

    def num(key, required, positive=True):
        v = params.get(key)
        if v is None:
            if required:
                bad(f"{name}.{key}", f"missing (required by rope type {rope_type!r})")
            return None
        if not is_num(v) or (positive and v <= 0):
            bad(f"{name}.{key}", f"expected a positive number, got {v!r}")
        return float(v)

    def orig_max():
        v = params.get("original_max_position_embeddings")
        if v is None:
            return max_pos  # transformers' setdefault for llama3 / yarn
        if not is_int(v) or v <= 0:
            bad(f"{name}.original_max_position_embeddings", f"expected a positive integer, got {v!r}")
        return v

    if rope_type in ("linear", "dynamic"):
        return theta, RopeScaling(rope_type, factor=num("factor", True))
    if rope_type == "llama3":
        low, high = num("low_freq_factor", True), num("high_freq_factor", True)
        if high == low:
            bad(f"{name}.high_freq_factor", "must differ from low_freq_factor")
        return theta, RopeScaling(rope_type, factor=num("factor", True), low_freq_factor=low,
                                  high_freq_factor=high, original_max_position_embeddings=orig_max())
    # yarn: factor may be omitted (then max_position_embeddings / original_max_position_embeddings)
    omax = orig_max()
    factor = num("factor", False)
    if factor is None:
        factor = max_pos / omax
    truncate = params.get("truncate", True)
    if not isinstance(truncate, bool):
        bad(f"{name}.truncate", f"expected true or false, got {truncate!r}")
    return theta, RopeScaling(
        rope_type, factor=factor, original_max_position_embeddings=omax,
        attention_factor=num("attention_factor", False, positive=False),
        beta_fast=num("beta_fast", False, positive=False), beta_slow=num("beta_slow", False, positive=False),
        mscale=num("mscale", False, positive=False), mscale_all_dim=num("mscale_all_dim", False, positive=False),
        truncate=truncate)


# ----------------------------------------------------------------------
# frequencies
# ----------------------------------------------------------------------
def _base_inv_freq(theta: float, dim: int, device=None) -> torch.Tensor:
    """theta^(-2i/dim) for i in [0, dim/2): the unscaled RoPE frequencies."""
    exponents = torch.arange(0, dim, 2, dtype=torch.int64, device=device).float() / dim  # [dim/2]
    return 1.0 / (theta ** exponents)


def _llama3(inv_freq: torch.Tensor, s: RopeScaling) -> torch.Tensor:
    """Llama 3.1: keep high frequencies, divide low ones by `factor`, and blend
    linearly (in 1/wavelength) in between."""
    old_len = s.original_max_position_embeddings
    low_wavelen = old_len / s.low_freq_factor     # longer wavelengths than this: fully scaled
    high_wavelen = old_len / s.high_freq_factor   # shorter than this: untouched
    wavelen = 2 * math.pi / inv_freq
    scaled = torch.where(wavelen > low_wavelen, inv_freq / s.factor, inv_freq)
    # smooth = 0 at wavelen == low_wavelen, 1 at wavelen == high_wavelen
    smooth = (old_len / wavelen - s.low_freq_factor) / (s.high_freq_factor - s.low_freq_factor)
    blended = (1 - smooth) * scaled / s.factor + smooth * scaled
    medium = (wavelen >= high_wavelen) & (wavelen <= low_wavelen)
    return torch.where(medium, blended, scaled)


def _yarn_mscale(scale: float, mscale: float = 1.0) -> float:
    return 1.0 if scale <= 1 else 0.1 * mscale * math.log(scale) + 1.0


def _yarn(theta: float, dim: int, s: RopeScaling, device=None) -> tuple[torch.Tensor, float]:
    """YaRN: per-dimension blend of interpolated (divided by factor) and
    extrapolated (unchanged) frequencies, with a linear ramp over the dims whose
    number of rotations over the original context lies in [beta_slow, beta_fast];
    cos/sin are scaled by the attention factor."""
    factor = s.factor
    if s.attention_factor is not None:
        attention_factor = s.attention_factor
    elif s.mscale and s.mscale_all_dim:
        attention_factor = float(_yarn_mscale(factor, s.mscale) / _yarn_mscale(factor, s.mscale_all_dim))
    else:
        attention_factor = _yarn_mscale(factor)
    beta_fast = s.beta_fast or 32  # `or`: 0 / None mean the paper's defaults, as in transformers
    beta_slow = s.beta_slow or 1
    orig = s.original_max_position_embeddings

    def correction_dim(num_rotations):
        # the dim index whose wavelength fits num_rotations times into the original context
        return (dim * math.log(orig / (num_rotations * 2 * math.pi))) / (2 * math.log(theta))

    low, high = correction_dim(beta_fast), correction_dim(beta_slow)
    if s.truncate:
        low, high = math.floor(low), math.ceil(high)
    low, high = max(low, 0), min(high, dim - 1)
    if low == high:
        high += 0.001  # avoid a zero-width ramp

    pos_freqs = theta ** (torch.arange(0, dim, 2, device=device).float() / dim)       # [dim/2]
    extrapolation = 1.0 / pos_freqs
    interpolation = 1.0 / (factor * pos_freqs)
    ramp = ((torch.arange(dim // 2, dtype=torch.float32, device=device) - low) / (high - low)).clamp(0, 1)
    extrapolation_weight = 1 - ramp                                                    # 1 = keep unscaled
    inv_freq = interpolation * (1 - extrapolation_weight) + extrapolation * extrapolation_weight
    return inv_freq, attention_factor


def inv_freq(config: ModelConfig, seq_len: Optional[int] = None, device=None) -> tuple[torch.Tensor, float]:
    """(inv_freq [head_dim/2] fp32, attention_scaling) for the config's RoPE.

    `seq_len` only matters for `dynamic` (NTK) scaling: the base grows with the
    longest sequence seen, and below max_position_embeddings it is plain RoPE.
    transformers keeps the grown frequencies in the module between calls; here
    they are a pure function of the current call's seq_len (max position + 1),
    which is what transformers gives on any call whose length is not shorter
    than an earlier call's in the same model instance. `Rotary` applies it per
    sequence (row), see there.
    """
    dim, theta, s = config.head_dim, config.rope_theta, config.rope_scaling
    if s is None:
        return _base_inv_freq(theta, dim, device), 1.0
    if s.rope_type == "linear":
        return _base_inv_freq(theta, dim, device) / s.factor, 1.0
    if s.rope_type == "llama3":
        return _llama3(_base_inv_freq(theta, dim, device), s), 1.0
    if s.rope_type == "dynamic":
        max_pos = config.max_position_embeddings
        seq_len = max_pos if seq_len is None else max(int(seq_len), max_pos)
        base = theta * ((s.factor * seq_len / max_pos) - (s.factor - 1)) ** (dim / (dim - 2))
        return _base_inv_freq(base, dim, device), 1.0
    if s.rope_type == "yarn":
        return _yarn(theta, dim, s, device)
    raise ValueError(f"rope_scaling.rope_type: unknown {s.rope_type!r}")  # config parsing rejects these first


class Rotary:
    """cos/sin tables for positions; caches the (position-independent) inverse
    frequencies per device. Not an nn.Module on purpose: the frequencies stay
    fp32 when the model is cast to bf16 (`Module.to(dtype)` would cast a buffer)."""

    def __init__(self, config: ModelConfig):
        self.config = config
        self.dynamic = config.rope_scaling is not None and config.rope_scaling.rope_type == "dynamic"
        self._cache: dict[torch.device, tuple[torch.Tensor, float]] = {}

    def _freqs(self, positions: torch.Tensor) -> tuple[torch.Tensor, float]:
        """(inv_freq [D/2] or, for dynamic scaling, [B, 1, D/2]; attention scaling)."""
        dev = positions.device
        if self.dynamic and positions.numel():
            # Per row: each sequence's frequencies follow its own longest position,
            # so a row's result does not depend on what it is batched with (transformers
            # uses the batch maximum; the two agree for one sequence or equal lengths).
            seq_lens = (positions.max(dim=-1).values + 1).tolist()               # [B]
            table = {n: inv_freq(self.config, n, dev)[0] for n in set(seq_lens)}
            return torch.stack([table[n] for n in seq_lens])[:, None, :], 1.0   # [B, 1, D/2]
        if dev not in self._cache:
            self._cache[dev] = inv_freq(self.config, None, dev)
        return self._cache[dev]

    def __call__(self, positions: torch.Tensor, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
        """positions [B, T] int -> (cos, sin) [B, T, head_dim] in `dtype`."""
        freqs, scaling = self._freqs(positions)                    # [D/2] or [B, 1, D/2]
        angles = positions[..., None].float() * freqs              # [B, T, D/2], fp32 as transformers
        emb = torch.cat((angles, angles), dim=-1)                  # [B, T, D]
        return (emb.cos() * scaling).to(dtype), (emb.sin() * scaling).to(dtype)


def rotate_half(x: torch.Tensor) -> torch.Tensor:
    """[..., D] -> [-x2, x1] with x1, x2 the two halves of the last dim."""
    half = x.shape[-1] // 2
    return torch.cat((-x[..., half:], x[..., :half]), dim=-1)


def apply_rotary(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """x [B, heads, T, D], cos/sin [B, T, D] -> x rotated by its positions' angles."""
    cos, sin = cos.unsqueeze(1), sin.unsqueeze(1)                  # [B, 1, T, D]
    return x * cos + rotate_half(x) * sin
