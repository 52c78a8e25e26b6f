"""The decoder-only transformer of Llama / Mistral / Qwen2 / Qwen3.

Module and parameter names follow transformers exactly (model.embed_tokens,
model.layers.N.self_attn.q_proj, ..., model.norm, lm_head), so a checkpoint
is a plain name -> tensor mapping. With tied embeddings there is no lm_head
module: `lm_head_weight` is model.embed_tokens.weight, and the state dict
holds it once, as transformers writes it.

`Decoder.forward` returns final-normed hidden states, not logits: the fused
policy loss consumes hidden states and the LM-head weight without ever
building [tokens x vocab] logits.

Attention is pluggable. Each layer computes q [B, Hq, T, D] and k, v
[B, Hkv, T, D] (q/k norm and RoPE applied), then either calls the given
`attention(layer_idx, q, k, v) -> [B, Hq, T, D]` (the generation engine,
which owns the KV cache; the packed training layout, model/packed.py), or runs
causal SDPA over the T tokens themselves.
"""
from __future__ import annotations

from typing import Callable, Optional

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint

from .config import ModelConfig
from .rope import Rotary, apply_rotary

# attention(layer_idx, q [B, Hq, T, D], k [B, Hkv, T, D], v [B, Hkv, T, D]) -> [B, Hq, T, D]
AttentionFn = Callable[[int, torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]

# SDPA learned grouped-query attention (kv heads shared by query heads) in torch 2.5
_SDPA_HAS_GQA = tuple(int(p) for p in torch.__version__.split("+")[0].split(".")[:2]) >= (2, 5)


class RMSNorm(nn.Module):
    """x / rms(x) * weight, computed in fp32 (fp64 for fp64 inputs, so float64
    checks see float64 round-off) and cast back before the weight multiply (the
    order transformers uses, which matters in bf16)."""

    def __init__(self, dim: int, eps: float):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(dim))
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        dtype = x.dtype
        x32 = x.to(torch.promote_types(dtype, torch.float32))
        x32 = x32 * torch.rsqrt(x32.pow(2).mean(-1, keepdim=True) + self.eps)
        return self.weight * x32.to(dtype)


class MLP(nn.Module):
    """SwiGLU: down(silu(gate(x)) * up(x))."""

    def __init__(self, config: ModelConfig):
        super().__init__()
        h, i, b = config.hidden_size, config.intermediate_size, config.mlp_bias
        self.gate_proj = nn.Linear(h, i, bias=b)
        self.up_proj = nn.Linear(h, i, bias=b)
        self.down_proj = nn.Linear(i, h, bias=b)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # [B, T, H] -> [B, T, H]
        return self.down_proj(F.silu(self.gate_proj(x)) * self.up_proj(x))


def causal_mask(T: int, device, attention_mask: Optional[torch.Tensor] = None,
                sliding_window: Optional[int] = None) -> Optional[torch.Tensor]:
    """Boolean mask [B or 1, 1, T, T], True = may attend, or None when plain
    causal attention suffices (SDPA's is_causal is then faster).

    Key j is visible from query i when j <= i, j is a real token
    (attention_mask[b, j] == 1) and, with a sliding window, i - j < window
    (transformers' sliding overlay). A query row with no visible key (a left-pad
    query) is let to see itself so SDPA returns finite values; its output is
    garbage that the caller masks out anyway.
    """
    if attention_mask is None and sliding_window is None:
        return None
    i = torch.arange(T, device=device)
    allowed = i[None, :] <= i[:, None]                                   # [T, T] (query, key)
    if sliding_window is not None:
        allowed = allowed & (i[:, None] - i[None, :] < sliding_window)
    allowed = allowed[None, None]                                        # [1, 1, T, T]
    if attention_mask is not None:
        allowed = allowed & attention_mask.bool()[:, None, None, :]      # [B, 1, T, T]
    eye = torch.eye(T, dtype=torch.bool, device=device)[None, None]
    empty = ~allowed.any(-1, keepdim=True)                               # [B, 1, T, 1]
    return allowed | (empty & eye)


def sdpa(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: Optional[torch.Tensor]) -> torch.Tensor:
    """q [B, Hq, T, D], k/v [B, Hkv, T, D] -> [B, Hq, T, D], scale 1/sqrt(D)."""
    groups = q.shape[1] // k.shape[1]
    if groups > 1 and not _SDPA_HAS_GQA:
        # older torch: materialize the shared kv heads (kv head h serves q heads h*groups..)
        k = k.repeat_interleave(groups, dim=1)
        v = v.repeat_interleave(groups, dim=1)
    kwargs = {"enable_gqa": True} if groups > 1 and _SDPA_HAS_GQA else {}
    if mask is None:
        return F.scaled_dot_product_attention(q, k, v, is_causal=True, **kwargs)
    return F.scaled_dot_product_attention(q, k, v, attn_mask=mask, **kwargs)


class Attention(nn.Module):
    def __init__(self, config: ModelConfig, layer_idx: int):
        super().__init__()
        self.layer_idx = layer_idx
        self.num_heads = config.num_attention_heads
        self.num_kv_heads = config.num_key_value_heads
        self.head_dim = config.head_dim
        self.sliding_window = config.layer_sliding_window(layer_idx)
        h, d = config.hidden_size, config.head_dim
        self.q_proj = nn.Linear(h, self.num_heads * d, bias=config.attention_bias)
        self.k_proj = nn.Linear(h, self.num_kv_heads * d, bias=config.attention_bias)
        self.v_proj = nn.Linear(h, self.num_kv_heads * d, bias=config.attention_bias)
        self.o_proj = nn.Linear(self.num_heads * d, h, bias=config.attention_out_bias)
        if config.qk_norm:
            self.q_norm = RMSNorm(d, config.rms_norm_eps)
            self.k_norm = RMSNorm(d, config.rms_norm_eps)
        else:
            self.q_norm = self.k_norm = None

    def forward(self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor,
                attention: Optional[AttentionFn], attention_mask: Optional[torch.Tensor]) -> torch.Tensor:
        B, T, _ = x.shape
        q = self.q_proj(x).view(B, T, self.num_heads, self.head_dim)      # [B, T, Hq, D]
        k = self.k_proj(x).view(B, T, self.num_kv_heads, self.head_dim)   # [B, T, Hkv, D]
        v = self.v_proj(x).view(B, T, self.num_kv_heads, self.head_dim)   # [B, T, Hkv, D]
        if self.q_norm is not None:
            # Qwen3 normalizes each head vector before RoPE
            q, k = self.q_norm(q), self.k_norm(k)
        q, k, v = q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2)  # [B, heads, T, D]
        q, k = apply_rotary(q, cos, sin), apply_rotary(k, cos, sin)
        if attention is not None:
            out = attention(self.layer_idx, q, k, v)                      # [B, Hq, T, D]
            if out.shape != q.shape:
                raise ValueError(f"attention: layer {self.layer_idx} returned shape {tuple(out.shape)}, "
                                 f"expected {tuple(q.shape)}")
        else:
            mask = causal_mask(T, x.device, attention_mask, self.sliding_window)
            out = sdpa(q, k, v, mask)                                     # [B, Hq, T, D]
        out = out.transpose(1, 2).reshape(B, T, self.num_heads * self.head_dim)
        return self.o_proj(out)                                           # [B, T, H]


class DecoderLayer(nn.Module):
    """Pre-norm block: x + attn(norm(x)), then x + mlp(norm(x))."""

    def __init__(self, config: ModelConfig, layer_idx: int):
        super().__init__()
        self.self_attn = Attention(config, layer_idx)
        self.mlp = MLP(config)
        self.input_layernorm = RMSNorm(config.hidden_size, config.rms_norm_eps)
        self.post_attention_layernorm = RMSNorm(config.hidden_size, config.rms_norm_eps)

    def forward(self, x, cos, sin, attention=None, attention_mask=None):  # [B, T, H] -> [B, T, H]
        x = x + self.self_attn(self.input_layernorm(x), cos, sin, attention, attention_mask)
        return x + self.mlp(self.post_attention_layernorm(x))


class Backbone(nn.Module):
    """transformers' `model.` prefix: embeddings, layers, final norm."""

    def __init__(self, config: ModelConfig):
        super().__init__()
        self.embed_tokens = nn.Embedding(config.vocab_size, config.hidden_size)
        self.layers = nn.ModuleList(DecoderLayer(config, i) for i in range(config.num_hidden_layers))
        self.norm = RMSNorm(config.hidden_size, config.rms_norm_eps)


class Decoder(nn.Module):
    def __init__(self, config: ModelConfig):
        super().__init__()
        self.config = config
        self.model = Backbone(config)
        # tied: no separate module, so the state dict holds the matrix once (as on disk)
        self.lm_head = None if config.tie_word_embeddings else \
            nn.Linear(config.hidden_size, config.vocab_size, bias=False)
        self.rotary = Rotary(config)
        self.gradient_checkpointing = False

    @property
    def lm_head_weight(self) -> torch.Tensor:
        """[V, H]: the output projection (the embedding matrix when tied)."""
        return self.model.embed_tokens.weight if self.lm_head is None else self.lm_head.weight

    def reset_parameters(self, std: float = 0.02, generator: Optional[torch.Generator] = None) -> None:
        """transformers' init: normal(0, std) for linear and embedding weights,
        zero biases, unit norm weights."""
        for m in self.modules():
            if isinstance(m, (nn.Linear, nn.Embedding)):
                with torch.no_grad():
                    m.weight.normal_(0.0, std, generator=generator)
                    if getattr(m, "bias", None) is not None:
                        m.bias.zero_()
            elif isinstance(m, RMSNorm):
                with torch.no_grad():
                    m.weight.fill_(1.0)

    def forward(self, input_ids: torch.Tensor, positions: Optional[torch.Tensor] = None,
                attention: Optional[AttentionFn] = None,
                attention_mask: Optional[torch.Tensor] = None) -> torch.Tensor:
        """input_ids [B, T] -> final-normed hidden states [B, T, H].

        positions [B, T]: the RoPE position of each token. Default: 0..T-1, or,
          with an attention_mask, the count of real tokens before each one
          (so left-padded rows start at 0 on their first real token).
        attention: see the module docstring; with it, attention_mask is ignored
          (the attention object owns masking).
        attention_mask [B, T]: 1 = real token, 0 = padding (left or right);
          only used by the built-in SDPA path.
        """
        if input_ids.dim() != 2:
            raise ValueError(f"input_ids: expected shape [B, T], got {tuple(input_ids.shape)}")
        B, T = input_ids.shape
        if attention_mask is not None and tuple(attention_mask.shape) != (B, T):
            raise ValueError(f"attention_mask: expected shape {(B, T)}, got {tuple(attention_mask.shape)}")
        if positions is None:
            if attention_mask is not None:
                positions = (attention_mask.long().cumsum(-1) - 1).clamp(min=0)      # [B, T]
            else:
                positions = torch.arange(T, device=input_ids.device).expand(B, T)   # [B, T]
        elif tuple(positions.shape) != (B, T):
            raise ValueError(f"positions: expected shape {(B, T)}, got {tuple(positions.shape)}")

        x = self.model.embed_tokens(input_ids)                                      # [B, T, H]
        cos, sin = self.rotary(positions, x.dtype)                                  # [B, T, D]
        # Recomputing a layer must not call a stateful attention (a KV cache) twice, so
        # checkpointing applies to the built-in attention and to one marked `stateless`
        # (model/packed.py: a pure function of q, k, v).
        recomputable = attention is None or getattr(attention, "stateless", False)
        use_ckpt = self.gradient_checkpointing and recomputable and torch.is_grad_enabled()
        for layer in self.model.layers:
            if use_ckpt:
                x = checkpoint(layer, x, cos, sin, attention, attention_mask, use_reentrant=False)
            else:
                x = layer(x, cos, sin, attention, attention_mask)
        return self.model.norm(x)                                                   # [B, T, H]
