"""Counter-based random numbers: the uniform of row r at step t depends only
on (seed of r, t), never on which other rows share the batch. That makes a
prompt's samples identical whether it is rolled out alone, with other
prompts, or on another rank (the torchrun equality test relies on it)."""
from __future__ import annotations

import torch


def _to_signed(x: int) -> int:
    return x - (1 << 64) if x >= 1 << 63 else x


_GOLDEN = _to_signed(0x9E3779B97F4A7C15)
_M1 = _to_signed(0xBF58476D1CE4E5B9)
_M2 = _to_signed(0x94D049BB133111EB)


def _shr(x: torch.Tensor, n: int) -> torch.Tensor:
    """Logical right shift of int64 (torch's >> is arithmetic)."""
    return (x >> n) & ((1 << (64 - n)) - 1)


def splitmix64(x: torch.Tensor) -> torch.Tensor:
    """[*] int64 -> [*] int64, a bijective mix (SplitMix64; int64 products wrap)."""
    x = x + _GOLDEN
    x = (x ^ _shr(x, 30)) * _M1
    x = (x ^ _shr(x, 27)) * _M2
    return x ^ _shr(x, 31)


def mix_seeds(a, b) -> torch.Tensor:
    """A seed derived from two (tensors of) int64 seeds."""
    a = torch.as_tensor(a, dtype=torch.int64)
    return splitmix64(splitmix64(a) ^ torch.as_tensor(b, dtype=torch.int64))


def uniforms(row_seeds: torch.Tensor, step: int) -> torch.Tensor:
    """[S] int64 seeds -> [S] float64 in [0, 1) for decoding step `step`."""
    bits = mix_seeds(row_seeds, step)
    return _shr(bits, 11).to(torch.float64) * (1.0 / (1 << 53))  # top 53 bits
