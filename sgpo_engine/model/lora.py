"""LoRA (Hu et al. 2021) on the decoder's linears, in PEFT's format.

    y = x W^T + b + (alpha / r) * dropout(x) A^T B^T        A [r, in], B [out, r]

`add_lora(policy, LoRAConfig(r=8, ...))` turns each targeted nn.Linear into a
LoRALinear in place: the same module (its frozen `weight` and `bias` keep their
transformers names, so the base model's state dict is unchanged) plus the
trainable `lora_A` and `lora_B`. B starts at zero (PEFT's init), so the adapted
model starts as the base model; every other parameter is frozen.

The adapters run unmerged in the forward (two small GEMMs more per linear):
the base weights are never modified, so `adapters_off(policy)` is exactly the
base model (the KL term's reference, with no second copy of the weights), and
a merged copy is built only where a whole model must leave the process
(`merged_state_dict`: a rollout server's weights, `sgpo merge`).

On disk, a checkpoint of the adapters is PEFT's: adapter_config.json and
adapter_model.safetensors with keys `base_model.model.<module>.lora_A.weight`,
so `peft.PeftModel.from_pretrained(base, folder)` loads it; `load_adapter`
reads PEFT's own back.
"""
from __future__ import annotations

import contextlib
import json
import math
import os
from dataclasses import dataclass, field
from typing import Iterator, Optional

import torch
from torch import nn

ADAPTER_CONFIG = "adapter_config.json"
ADAPTER_WEIGHTS = "adapter_model.safetensors"
PEFT_PREFIX = "base_model.model."
# every linear of attention and the MLP (the lm_head and the embeddings stay frozen)
ALL_LINEARS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")


@dataclass
class LoRAConfig:
    r: int = 8
    alpha: float = 16.0
    dropout: float = 0.0
    target_modules: list = field(default_factory=lambda: list(ALL_LINEARS))

    @property
    def scaling(self) -> float:
        return self.alpha / self.r

    def validated(self, name=lambda f: f) -> "LoRAConfig":
        if isinstance(self.r, bool) or not isinstance(self.r, int) or self.r < 1:
            raise ValueError(f"{name('r')}: expected an int >= 1, got {self.r!r}")
        if not self.alpha > 0:
            raise ValueError(f"{name('alpha')}: expected > 0, got {self.alpha}")
        if not 0 <= self.dropout < 1:
            raise ValueError(f"{name('dropout')}: expected in [0, 1), got {self.dropout}")
        if not self.target_modules:
            raise ValueError(f"{name('target_modules')}: expected at least one module name")
        return self


class LoRALinear(nn.Linear):
    """An nn.Linear (frozen) with a low-rank update beside it. Built by `wrap` from an
    existing Linear, sharing its weight and bias."""

    lora_A: nn.Linear
    lora_B: nn.Linear

    @classmethod
    def wrap(cls, base: nn.Linear, cfg: LoRAConfig) -> "LoRALinear":
        with torch.device("meta"):
            m = cls(base.in_features, base.out_features, bias=base.bias is not None)
        m.weight = base.weight
        m.bias = base.bias
        dev, dt = base.weight.device, base.weight.dtype
        m.lora_A = nn.Linear(base.in_features, cfg.r, bias=False, device=dev, dtype=dt)
        m.lora_B = nn.Linear(cfg.r, base.out_features, bias=False, device=dev, dtype=dt)
        nn.init.kaiming_uniform_(m.lora_A.weight, a=math.sqrt(5))  # PEFT's default init of A
        nn.init.zeros_(m.lora_B.weight)
        m.scaling = cfg.scaling
        m.lora_dropout = nn.Dropout(cfg.dropout) if cfg.dropout else nn.Identity()
        m.adapters_on = True
        return m

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # [..., in] -> [..., out]
        y = super().forward(x)
        if not self.adapters_on:
            return y
        return y + self.lora_B(self.lora_A(self.lora_dropout(x))) * self.scaling

    def delta_weight(self) -> torch.Tensor:
        """[out, in]: scaling * B A, what merging adds to the weight."""
        return (self.lora_B.weight @ self.lora_A.weight) * self.scaling


def lora_layers(module: nn.Module) -> Iterator[tuple[str, LoRALinear]]:
    return ((n, m) for n, m in module.named_modules() if isinstance(m, LoRALinear))


def has_lora(policy) -> bool:
    return any(True for _ in lora_layers(policy.decoder))


def linear_names(decoder: nn.Module) -> list[str]:
    """The short names of the decoder's linears (what target_modules may name)."""
    return sorted({n.rsplit(".", 1)[-1] for n, m in decoder.named_modules() if isinstance(m, nn.Linear)})


def add_lora(policy, cfg: LoRAConfig, where: str = "lora_target_modules") -> list[str]:
    """Adds adapters to every linear whose short name is in cfg.target_modules and freezes
    everything else; returns the adapted modules' full names."""
    decoder = policy.decoder
    known = linear_names(decoder)
    unknown = [t for t in cfg.target_modules if t not in known]
    if unknown:
        raise ValueError(f"{where}: {', '.join(map(repr, unknown))} is not a linear of this model "
                         f"(its linears: {', '.join(known)})")
    decoder.requires_grad_(False)
    targets = [(n, m) for n, m in decoder.named_modules()
               if isinstance(m, nn.Linear) and not isinstance(m, LoRALinear) and n.rsplit(".", 1)[-1]
               in cfg.target_modules and not n.startswith("lm_head")]
    for name, m in targets:
        parent, _, child = name.rpartition(".")
        setattr(decoder.get_submodule(parent), child, LoRALinear.wrap(m, cfg))
    policy.lora_config = cfg
    return [n for n, _ in targets]


@contextlib.contextmanager
def adapters_off(policy):
    """The base model, for the body of the `with`: every adapter skipped in the forward."""
    layers = [m for _, m in lora_layers(policy.decoder)]
    before = [m.adapters_on for m in layers]
    for m in layers:
        m.adapters_on = False
    try:
        yield policy
    finally:
        for m, on in zip(layers, before):
            m.adapters_on = on


def adapter_state_dict(policy) -> dict[str, torch.Tensor]:
    """The adapters, PEFT-named: base_model.model.<module>.lora_A.weight, ..."""
    out = {}
    for name, m in lora_layers(policy.decoder):
        out[f"{PEFT_PREFIX}{name}.lora_A.weight"] = m.lora_A.weight.detach()
        out[f"{PEFT_PREFIX}{name}.lora_B.weight"] = m.lora_B.weight.detach()
    return out


def base_state_dict(policy) -> dict[str, torch.Tensor]:
    """The base model's transformers-named tensors (the adapters left out)."""
    return {k: v for k, v in policy.decoder.state_dict().items() if ".lora_" not in k}


@torch.no_grad()
def merged_state_dict(policy) -> dict[str, torch.Tensor]:
    """The base model's tensors with each adapter merged into its weight (W + s B A), as new
    tensors: the base weights stay as they are."""
    state = base_state_dict(policy)
    for name, m in lora_layers(policy.decoder):
        state[f"{name}.weight"] = m.weight + m.delta_weight().to(m.weight.dtype)
    return state


@torch.no_grad()
def merged_copy(policy, into=None):
    """A Policy without adapters holding the merged weights (merged_state_dict): the copy
    rollouts sample from, where two GEMMs less per linear per token pay for a second copy of
    the weights. `into`: an earlier merged copy, refreshed in place (no new memory)."""
    import copy
    from .decoder import Decoder
    if into is None:
        into = copy.copy(policy)
        into.decoder = Decoder(policy.config).to(device=policy.device, dtype=policy.dtype).eval()
        into.decoder.requires_grad_(False)
        into.__dict__.pop("lora_config", None)
    into.decoder.load_state_dict(merged_state_dict(policy))
    return into


def peft_config(cfg: LoRAConfig, base_model: Optional[str], adapted: list[str]) -> dict:
    """adapter_config.json as PEFT writes it for a causal LM."""
    return {"peft_type": "LORA", "task_type": "CAUSAL_LM", "base_model_name_or_path": base_model,
            "r": cfg.r, "lora_alpha": cfg.alpha, "lora_dropout": cfg.dropout,
            "target_modules": sorted({n.rsplit(".", 1)[-1] for n in adapted}), "bias": "none",
            "fan_in_fan_out": False, "inference_mode": True, "init_lora_weights": True, "use_rslora": False,
            "use_dora": False, "modules_to_save": None, "layers_to_transform": None, "layers_pattern": None,
            "rank_pattern": {}, "alpha_pattern": {}, "revision": None}


def save_adapter(policy, path: str, base_model: Optional[str] = None) -> None:
    """Writes adapter_config.json + adapter_model.safetensors (PEFT's format) into `path`,
    each through a temporary file renamed into place."""
    from safetensors.torch import save_file
    os.makedirs(path, exist_ok=True)
    state = {k: v.contiguous().cpu() for k, v in adapter_state_dict(policy).items()}
    tmp = os.path.join(path, ADAPTER_WEIGHTS + ".tmp")
    save_file(state, tmp, metadata={"format": "pt"})
    os.replace(tmp, os.path.join(path, ADAPTER_WEIGHTS))
    adapted = [n for n, _ in lora_layers(policy.decoder)]
    tmp = os.path.join(path, ADAPTER_CONFIG + ".tmp")
    with open(tmp, "w") as f:
        json.dump(peft_config(policy.lora_config, base_model, adapted), f, indent=2)
    os.replace(tmp, os.path.join(path, ADAPTER_CONFIG))


def read_adapter_config(path: str) -> LoRAConfig:
    file = os.path.join(path, ADAPTER_CONFIG)
    try:
        with open(file) as f:
            c = json.load(f)
    except FileNotFoundError:
        raise ValueError(f"{file}: not found (is {path} a LoRA adapter folder?)") from None
    except json.JSONDecodeError as e:
        raise ValueError(f"{file}: invalid JSON ({e.msg})") from None
    if c.get("peft_type", "LORA") != "LORA":
        raise ValueError(f"{file}: peft_type {c.get('peft_type')!r}; only LORA adapters are supported")
    for key in ("use_dora", "use_rslora"):
        if c.get(key):
            raise ValueError(f"{file}: {key} is true; plain LoRA only")
    targets = c.get("target_modules")
    targets = [targets] if isinstance(targets, str) else list(targets or [])
    return LoRAConfig(r=int(c["r"]), alpha=float(c.get("lora_alpha", c["r"])),
                      dropout=float(c.get("lora_dropout", 0.0)), target_modules=targets).validated(
        lambda f: f"{file}: {f}")


def load_adapter(policy, path: str) -> list[str]:
    """Adds the adapters of a PEFT folder (ours or PEFT's) to `policy` and loads their
    weights; every tensor must match a module of the model, with its shape."""
    from safetensors.torch import load_file
    cfg = read_adapter_config(path)
    adapted = add_lora(policy, cfg, where=f"{os.path.join(path, ADAPTER_CONFIG)}: target_modules")
    file = os.path.join(path, ADAPTER_WEIGHTS)
    if not os.path.isfile(file):
        raise ValueError(f"{file}: not found")
    saved = {k.replace(".default.weight", ".weight"): v for k, v in load_file(file).items()}
    want = adapter_state_dict(policy)
    missing, extra = sorted(set(want) - set(saved)), sorted(set(saved) - set(want))
    if missing or extra:
        raise ValueError(f"{file}: adapter tensors do not match the model "
                         f"(missing {missing[:3]}, unexpected {extra[:3]})")
    with torch.no_grad():
        for name, m in lora_layers(policy.decoder):
            for part in ("lora_A", "lora_B"):
                t = saved[f"{PEFT_PREFIX}{name}.{part}.weight"]
                w = getattr(m, part).weight
                if tuple(t.shape) != tuple(w.shape):
                    raise ValueError(f"{file}: {PEFT_PREFIX}{name}.{part}.weight has shape {tuple(t.shape)}, "
                                     f"expected {tuple(w.shape)}")
                w.copy_(t)
    return adapted

