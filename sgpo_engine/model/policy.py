"""Policy (a decoder with its config and tokenizer, the object the engine trains and samples from) and `load`."""
from __future__ import annotations

import os
from typing import Iterator, Optional

import torch

from .config import ModelConfig, parse_dtype
from .decoder import AttentionFn, Decoder
from .io import read_folder, save
from .lora import has_lora, merged_state_dict
from .tokenizer import Tokenizer


class Policy:
    def __init__(self, config: ModelConfig, decoder: Decoder, tokenizer: Optional[Tokenizer] = None,
                 generation_config: Optional[dict] = None):
        self.config = config
        self.decoder = decoder
        self.tokenizer = tokenizer
        # generation_config.json as loaded (written back by save); None -> derived from config
        self.generation_config = generation_config

    @classmethod
    def from_config(cls, config: ModelConfig, tokenizer: Optional[Tokenizer] = None, *,
                    dtype=None, device=None, seed: Optional[int] = None, std: float = 0.02) -> "Policy":
        """A randomly initialized policy (e.g. for training from scratch)."""
        dtype = parse_dtype(dtype) or config.dtype or torch.float32
        gen = torch.Generator().manual_seed(seed) if seed is not None else None
        decoder = Decoder(config)
        decoder.reset_parameters(std, gen)  # on CPU in fp32, so a seed gives the same weights anywhere
        decoder.to(device=device, dtype=dtype)
        return cls(config, decoder, tokenizer)

    # ------------------------------------------------------------------
    def hidden_states(self, input_ids: torch.Tensor, positions: Optional[torch.Tensor] = None,
                      attention: Optional[AttentionFn] = None,
                      attention_mask: Optional[torch.Tensor] = None) -> torch.Tensor:
        """input_ids [B, T] -> final-normed hidden states [B, T, H] (see Decoder.forward)."""
        return self.decoder(input_ids, positions, attention, attention_mask)

    def logits(self, input_ids: torch.Tensor, positions: Optional[torch.Tensor] = None,
               attention_mask: Optional[torch.Tensor] = None) -> torch.Tensor:
        """input_ids [B, T] -> logits [B, T, V] (full logits: for evaluation and
        tests; training uses hidden_states + the fused loss)."""
        hidden = self.hidden_states(input_ids, positions, None, attention_mask)     # [B, T, H]
        return hidden @ self.lm_head_weight.T                                       # [B, T, V]

    @property
    def lm_head_weight(self) -> torch.Tensor:
        """[V, H], the embedding matrix when the embeddings are tied."""
        return self.decoder.lm_head_weight

    # ------------------------------------------------------------------
    def save(self, path: str | os.PathLike, **kwargs) -> None:
        """Writes this policy as a Hugging Face folder (see io.save for max_shard_size); with
        LoRA adapters, the merged model (lora.merged_state_dict; lora.save_adapter writes the
        adapters alone)."""
        save(self, path, state=merged_state_dict(self) if has_lora(self) else None, **kwargs)

    def to(self, *args, **kwargs) -> "Policy":
        """Like nn.Module.to (device and/or dtype; dtype strings such as 'bf16' allowed). Returns self."""
        if "dtype" in kwargs:
            kwargs["dtype"] = parse_dtype(kwargs["dtype"])
        args = tuple(parse_dtype(a) if isinstance(a, str) and a.removeprefix("torch.").lower() in
                     ("float32", "fp32", "float", "bfloat16", "bf16", "float16", "fp16", "half") else a
                     for a in args)
        self.decoder.to(*args, **kwargs)
        return self

    def parameters(self) -> Iterator[torch.nn.Parameter]:
        return self.decoder.parameters()

    def named_parameters(self):
        return self.decoder.named_parameters()

    def state_dict(self) -> dict[str, torch.Tensor]:
        """transformers-named tensors (lm_head.weight absent when tied); with LoRA adapters,
        theirs too (<module>.lora_A.weight, .lora_B.weight)."""
        return self.decoder.state_dict()

    def train(self, mode: bool = True) -> "Policy":
        self.decoder.train(mode)
        return self

    def eval(self) -> "Policy":
        return self.train(False)

    @property
    def device(self) -> torch.device:
        return self.decoder.model.embed_tokens.weight.device

    @property
    def dtype(self) -> torch.dtype:
        return self.decoder.model.embed_tokens.weight.dtype

    @property
    def gradient_checkpointing(self) -> bool:
        return self.decoder.gradient_checkpointing

    @gradient_checkpointing.setter
    def gradient_checkpointing(self, value: bool) -> None:
        self.decoder.gradient_checkpointing = bool(value)

    def __repr__(self) -> str:
        c = self.config
        n = sum(p.numel() for p in self.parameters())
        return (f"Policy({c.architecture}, layers={c.num_hidden_layers}, hidden={c.hidden_size}, "
                f"vocab={c.vocab_size}, params={n:,}, dtype={self.dtype}, device={self.device})")


def load(path: str | os.PathLike, dtype=None, device=None, tokenizer: bool = True) -> Policy:
    """Loads a Hugging Face-format folder into a Policy (io.read_folder: all or nothing).

    dtype: 'fp32'/'bf16'/'fp16' (or the long names, or a torch.dtype); default
      the config.json dtype, else float32.
    device: where the parameters go (default CPU).
    tokenizer: load tokenizer.json when present (Policy.tokenizer is None otherwise).
    """
    return Policy(*read_folder(path, dtype=dtype, device=device, tokenizer=tokenizer))
