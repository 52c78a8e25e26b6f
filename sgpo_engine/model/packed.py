"""Attention over a packed row: several prompts, each followed by its completions.

    attention = PackedAttention(groups [L], seqs [L], positions [L], window_of)
    hidden = decoder(ids [1, L], positions[None], attention=attention)     # [1, L, H]

Token j of the row belongs to prompt group groups[j] and to sequence seqs[j]
(-1: the group's prompt itself). A prompt token sees the earlier tokens of its
prompt; a completion token sees its whole prompt and the earlier tokens of its
own completion, never a sibling's. At the RoPE positions generation gave it
(the completion continues from its prompt's length), every token thus sees
exactly the keys it sees in its own right-padded row, so its hidden state is
the padded layout's, while each prompt is computed once and nothing is padded.

Groups never see each other, so attention runs group by group: one SDPA call
per group segment with its own [S, S] bool mask (per distinct sliding window),
shared by every head and layer. Attention costs the sum of the segments'
squares, not L^2, and the masks' memory is bounded by the update's token
budget (micro_batch_tokens), however many completions a step has. SDPA's CPU
flash kernel reads a mask blockwise, without materializing [heads, S, S]
scores.
"""
from __future__ import annotations

from typing import Callable, Optional

import torch

from .decoder import sdpa


class PackedAttention:
    """The decoder's attention seam (decoder.AttentionFn) for a packed row (module docstring)."""

    stateless = True  # a pure function of q, k, v: the decoder may recompute a layer (checkpointing)

    def __init__(self, groups: torch.Tensor, seqs: torch.Tensor, positions: torch.Tensor,
                 window_of: Callable[[int], Optional[int]]):
        # groups are consecutive: segment g is [bounds[g], bounds[g + 1])
        starts = torch.nonzero(groups[1:] != groups[:-1]).flatten() + 1
        self.bounds = [0] + starts.tolist() + [len(groups)]
        self._window_of = window_of
        self._segments = []  # per segment: (query - key distance [S, S], visible [S, S])
        for s, e in zip(self.bounds, self.bounds[1:]):
            pos, seq = positions[s:e], seqs[s:e]
            distance = pos[:, None] - pos[None, :]                                   # [S, S] (query, key)
            own = (seq[None, :] == -1) | (seq[None, :] == seq[:, None])             # its prompt, or its own tokens
            self._segments.append((distance, own & (distance >= 0)))
        self._masks: dict = {}

    def masks(self, window: Optional[int]) -> list[torch.Tensor]:
        """Per segment [S, S] bool, True = may attend; with a sliding window only the last
        `window` positions."""
        if window not in self._masks:
            self._masks[window] = [visible if window is None else visible & (distance < window)
                                   for distance, visible in self._segments]
        return self._masks[window]

    def __call__(self, layer_idx: int, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        """q [1, Hq, L, D], k / v [1, Hkv, L, D] -> [1, Hq, L, D]."""
        masks = self.masks(self._window_of(layer_idx))
        return torch.cat([sdpa(q[:, :, s:e], k[:, :, s:e], v[:, :, s:e], m[None, None])
                          for (s, e), m in zip(zip(self.bounds, self.bounds[1:]), masks)], dim=2)
