"""A preallocated KV cache for group rollouts whose prompt KV is shared.

A rollout of P prompts x G samples stores each prompt's keys and values once
(the prefix, [P, Hkv, Lp, D] per layer) and each sample's generated tokens
separately (the suffix, [S, Hkv, Ls, D] per layer, S = P * G slots). Samples
of a group read their prompt's prefix in place: no copies, and the prompt is
prefilled once per group instead of G times.

The decoder calls `attention(layer, q, k, v)` with rotated q [B, Hq, T, D]
and k, v [B, Hkv, T, D]; the two adapters below store k, v and attend.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from .. import ops


class SharedPrefixKVCache:
    def __init__(self, num_layers, num_prompts, prefix_capacity, num_slots, suffix_capacity,
                 kv_heads, head_dim, dtype, device, windows=None):
        pre = (num_prompts, kv_heads, prefix_capacity, head_dim)
        suf = (num_slots, kv_heads, suffix_capacity, head_dim)
        self.prefix_k = [torch.empty(pre, dtype=dtype, device=device) for _ in range(num_layers)]
        self.prefix_v = [torch.empty(pre, dtype=dtype, device=device) for _ in range(num_layers)]
        self.suffix_k = [torch.empty(suf, dtype=dtype, device=device) for _ in range(num_layers)]
        self.suffix_v = [torch.empty(suf, dtype=dtype, device=device) for _ in range(num_layers)]
        self.prefix_len = torch.zeros(num_prompts, dtype=torch.int64, device=device)  # [P]
        self.prefix_of = torch.zeros(num_slots, dtype=torch.int64, device=device)     # [S]
        self.suffix_len = torch.zeros(num_slots, dtype=torch.int64, device=device)    # [S]
        # Per layer: sliding window in tokens, or None (full causal attention).
        self.windows = list(windows) if windows is not None else [None] * num_layers

    def prefill(self, prompt_lens: torch.Tensor) -> "PrefillAttention":
        """Attention for the prompts' forward pass, right-padded [P, Lp]."""
        self.prefix_len.copy_(prompt_lens)
        return PrefillAttention(self)

    def decode(self, rows: torch.Tensor) -> "DecodeAttention":
        """Attention for one new token of each slot in rows [A]; grows their suffix."""
        self.suffix_len[rows] += 1
        return DecodeAttention(self, rows)


class PrefillAttention:
    def __init__(self, cache: SharedPrefixKVCache):
        self.cache = cache

    def __call__(self, layer, q, k, v):
        T = k.shape[2]
        self.cache.prefix_k[layer][:, :, :T] = k
        self.cache.prefix_v[layer][:, :, :T] = v
        # Right padding + a causal mask: real tokens never see the pads after them.
        window = self.cache.windows[layer]
        if window is None or window >= T:
            return F.scaled_dot_product_attention(q, k, v, is_causal=True, enable_gqa=True)
        i = torch.arange(T, device=q.device)
        visible = (i[None, :] <= i[:, None]) & (i[:, None] - i[None, :] < window)  # [T, T]
        return F.scaled_dot_product_attention(q, k, v, attn_mask=visible, enable_gqa=True)


class DecodeAttention:
    def __init__(self, cache: SharedPrefixKVCache, rows: torch.Tensor):
        self.cache, self.rows = cache, rows
        self.suffix_len = cache.suffix_len[rows]  # [A], this step's token included
        self.pos = self.suffix_len - 1            # [A] where this step's k, v go
        self.prefix_of = cache.prefix_of[rows]

    def __call__(self, layer, q, k, v):
        c = self.cache
        c.suffix_k[layer][self.rows, :, self.pos] = k[:, :, 0]  # [A, Hkv, D]
        c.suffix_v[layer][self.rows, :, self.pos] = v[:, :, 0]
        out = ops.decode_attention(q[:, :, 0], c.prefix_k[layer], c.prefix_v[layer], c.prefix_len,
                                   self.prefix_of, c.suffix_k[layer], c.suffix_v[layer], self.suffix_len,
                                   self.rows, window=c.windows[layer] or 0)
        return out.unsqueeze(2)  # [A, Hq, 1, D]
