"""Read and write Hugging Face-format checkpoints (config.json + safetensors).

`read_folder` is all-or-nothing: every tensor the config implies must be
present with its shape, nothing else may be (except what transformers itself
ignores), and any problem is a ValueError naming the file and the tensor; it
returns the parts of a Policy (policy.py's `load` builds it). `save` writes a
folder that transformers' from_pretrained reads, into a temporary sibling
folder that is renamed into place, so a crash never leaves a half-written
checkpoint under the target name. This module knows the Policy only by the
attributes `save` reads (state_dict(), config, dtype, generation_config,
tokenizer), so policy.py can import it and not the other way round.
"""
from __future__ import annotations

import json
import os
import re
import shutil
import uuid
from typing import Optional

import torch

from .config import ModelConfig, dtype_name, parse_dtype
from .decoder import Decoder
from .tokenizer import Tokenizer
from .files import fsync_dir, read_json

SINGLE_FILE = "model.safetensors"
INDEX_FILE = "model.safetensors.index.json"
DEFAULT_MAX_SHARD_SIZE = "5GB"

# safetensors dtype tags we accept as weights (all are cast to the load dtype)
_FLOAT_TAGS = {"F64", "F32", "F16", "BF16"}


def _ignored(name: str, config: ModelConfig) -> bool:
    """Tensors transformers skips when loading: old rotary inv_freq buffers, and a
    tied lm_head (the embedding matrix is used)."""
    return name.endswith("rotary_emb.inv_freq") or (config.tie_word_embeddings and name == "lm_head.weight")


def expected_shapes(config: ModelConfig) -> dict[str, tuple[int, ...]]:
    """name -> shape of every tensor a checkpoint of `config` holds."""
    with torch.device("meta"):
        decoder = Decoder(config)
    return {k: tuple(v.shape) for k, v in decoder.state_dict().items()}


# ----------------------------------------------------------------------
# load
# ----------------------------------------------------------------------
def _safe_open(file: str):
    from safetensors import safe_open
    if not os.path.isfile(file):
        raise ValueError(f"{file}: weights file not found")
    try:
        return safe_open(file, framework="pt", device="cpu")
    except Exception as e:  # SafetensorError / OSError: truncated, bad header, ...
        raise ValueError(f"{file}: not a valid safetensors file ({e})") from None


def _tensor_locations(path: str) -> tuple[dict[str, str], list[str]]:
    """(tensor name -> file holding it, the files) for a single-file or sharded checkpoint."""
    single = os.path.join(path, SINGLE_FILE)
    index = os.path.join(path, INDEX_FILE)
    if os.path.isfile(single):
        with _safe_open(single) as f:
            return {k: single for k in f.keys()}, [single]
    if not os.path.isfile(index):
        others = sorted(n for n in os.listdir(path) if n.endswith((".bin", ".pt", ".pth", ".gguf")))
        hint = f" (found {', '.join(others)}: only safetensors is supported)" if others else ""
        raise ValueError(f"{path}: no weights: neither {SINGLE_FILE} nor {INDEX_FILE}{hint}")
    try:
        with open(index, encoding="utf-8") as fh:
            weight_map = json.load(fh)["weight_map"]
        if not isinstance(weight_map, dict) or not all(isinstance(v, str) for v in weight_map.values()):
            raise TypeError("weight_map must map tensor names to file names")
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, KeyError, TypeError) as e:
        raise ValueError(f"{index}: not a valid safetensors index ({type(e).__name__}: {e})") from None
    locations: dict[str, str] = {}
    shards = sorted(set(weight_map.values()))
    for shard in shards:
        if os.path.basename(shard) != shard:
            raise ValueError(f"{index}: shard name {shard!r} must be a file name in the folder")
        file = os.path.join(path, shard)
        if not os.path.isfile(file):
            first = next(k for k, v in weight_map.items() if v == shard)
            raise ValueError(f"{index}: tensor {first!r} points to missing shard {file}")
        with _safe_open(file) as f:
            present = set(f.keys())
        for name, s in weight_map.items():
            if s == shard:
                if name not in present:
                    raise ValueError(f"{file}: tensor {name!r} listed in {INDEX_FILE} is not in this shard")
                locations[name] = file
    return locations, [os.path.join(path, s) for s in shards]


def _check_tensors(config: ModelConfig, locations: dict[str, str], files: list[str]) -> dict[str, tuple[str, str]]:
    """Validates names, shapes and dtypes from the headers alone (before reading
    any data); returns the plan: expected name -> (file, name stored in the file)."""
    expected = expected_shapes(config)
    where = files[0] if len(files) == 1 else os.path.join(os.path.dirname(files[0]), INDEX_FILE)
    plan = {k: (f, k) for k, f in locations.items()}
    if config.tie_word_embeddings and "model.embed_tokens.weight" not in plan and "lm_head.weight" in plan:
        # a tied checkpoint that stored the matrix under its lm_head name: transformers ties it either way
        plan["model.embed_tokens.weight"] = plan.pop("lm_head.weight")
    unexpected = sorted(k for k in plan if k not in expected and not _ignored(k, config))
    if unexpected:
        k = unexpected[0]
        more = f" (and {len(unexpected) - 1} more)" if len(unexpected) > 1 else ""
        raise ValueError(f"{plan[k][0]}: unexpected tensor {k!r}{more} for {config.architecture} "
                         f"with this config.json")
    missing = [k for k in expected if k not in plan]
    if missing:
        k = missing[0]
        more = f" (and {len(missing) - 1} more: {', '.join(missing[1:4])}{'...' if len(missing) > 4 else ''})" \
            if len(missing) > 1 else ""
        raise ValueError(f"{where}: missing tensor {k!r} (expected shape {list(expected[k])}){more}")
    plan = {k: plan[k] for k in expected}
    for file, names in _by_file(plan).items():
        with _safe_open(file) as f:
            for k, stored in names:
                sl = f.get_slice(stored)
                shape, tag = tuple(sl.get_shape()), sl.get_dtype()
                if shape != expected[k]:
                    raise ValueError(f"{file}: tensor {stored!r} has shape {list(shape)}, "
                                     f"expected {list(expected[k])}")
                if tag not in _FLOAT_TAGS:
                    raise ValueError(f"{file}: tensor {stored!r} has dtype {tag}, expected a float type")
    return plan


def _by_file(plan: dict[str, tuple[str, str]]) -> dict[str, list[tuple[str, str]]]:
    """file -> [(expected name, stored name)], so each file is opened once."""
    out: dict[str, list[tuple[str, str]]] = {}
    for k, (file, stored) in plan.items():
        out.setdefault(file, []).append((k, stored))
    return out


def _read_tensors(plan: dict[str, tuple[str, str]], dtype: torch.dtype, device) -> dict[str, torch.Tensor]:
    out = {}
    for file, names in _by_file(plan).items():
        with _safe_open(file) as f:
            for k, stored in names:
                try:
                    t = f.get_tensor(stored)
                except Exception as e:
                    raise ValueError(f"{file}: cannot read tensor {stored!r} ({e})") from None
                out[k] = t.to(device=device, dtype=dtype)
    return out


def read_folder(path: str | os.PathLike, dtype=None, device=None, tokenizer: bool = True
                ) -> tuple[ModelConfig, Decoder, Optional[Tokenizer], Optional[dict]]:
    """Reads a Hugging Face-format folder: (config, decoder, tokenizer,
    generation_config), the arguments of Policy(...). See policy.load for
    dtype, device and tokenizer."""
    path = os.fspath(path)
    if not os.path.isdir(path):
        raise ValueError(f"{path}: checkpoint folder not found")
    config = ModelConfig.from_file(os.path.join(path, "config.json"))
    dtype = parse_dtype(dtype) or config.dtype or torch.float32
    device = torch.device(device) if device is not None else torch.device("cpu")

    locations, files = _tensor_locations(path)
    plan = _check_tensors(config, locations, files)
    state = _read_tensors(plan, dtype, device)

    with torch.device("meta"):
        decoder = Decoder(config)
    # assign=True adopts the loaded tensors (no second copy); strict: every name matched
    decoder.load_state_dict(state, strict=True, assign=True)
    decoder.eval()

    tok = None
    if tokenizer and os.path.isfile(os.path.join(path, "tokenizer.json")):
        tok = Tokenizer.from_folder(path)
    gen = read_json(os.path.join(path, "generation_config.json"))
    return config, decoder, tok, gen


# ----------------------------------------------------------------------
# save
# ----------------------------------------------------------------------
_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([KMGT]?)(I?)B?\s*$", re.IGNORECASE)


def parse_size(size: int | str) -> int:
    """5000000, "5GB" (10^9) or "5GiB" (2^30) -> bytes (transformers' convention)."""
    if isinstance(size, int) and not isinstance(size, bool) and size > 0:
        return size
    m = _SIZE.match(size) if isinstance(size, str) else None
    if not m:
        raise ValueError(f"max_shard_size: expected bytes or a size like '5GB', got {size!r}")
    number, unit, binary = float(m.group(1)), m.group(2).upper(), bool(m.group(3))
    power = " KMGT".index(unit or " ")
    value = int(number * (1024 if binary else 1000) ** power)
    if value <= 0:
        raise ValueError(f"max_shard_size: must be positive, got {size!r}")
    return value


def _shards(state: dict[str, torch.Tensor], limit: int) -> list[dict[str, torch.Tensor]]:
    """Greedy split in state-dict order; a tensor larger than the limit gets a shard of its own."""
    shards, current, size = [], {}, 0
    for k, t in state.items():
        n = t.numel() * t.element_size()
        if current and size + n > limit:
            shards.append(current)
            current, size = {}, 0
        current[k] = t
        size += n
    if current:
        shards.append(current)
    return shards


def _write_json(file: str, d: dict) -> None:
    with open(file, "w", encoding="utf-8") as f:
        json.dump(d, f, indent=2, sort_keys=True, ensure_ascii=False)
        f.write("\n")


def _fsync_tree(folder: str) -> None:
    for name in os.listdir(folder):
        fd = os.open(os.path.join(folder, name), os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
    fsync_dir(folder)


def _write_checkpoint(policy, folder: str, max_shard_size: int, state: Optional[dict]) -> None:
    from safetensors.torch import save_file
    state = policy.state_dict() if state is None else state
    state = {k: v.detach().to("cpu").contiguous() for k, v in state.items()}  # [*] per tensor
    metadata = {"format": "pt"}  # transformers refuses safetensors files without it
    shards = _shards(state, max_shard_size)
    if len(shards) == 1:
        save_file(shards[0], os.path.join(folder, SINGLE_FILE), metadata=metadata)
    else:
        weight_map = {}
        for i, shard in enumerate(shards):
            name = f"model-{i + 1:05d}-of-{len(shards):05d}.safetensors"
            save_file(shard, os.path.join(folder, name), metadata=metadata)
            weight_map.update({k: name for k in shard})
        total = sum(t.numel() * t.element_size() for t in state.values())
        _write_json(os.path.join(folder, INDEX_FILE), {"metadata": {"total_size": total}, "weight_map": weight_map})

    config = policy.config.to_hf_dict(dtype=policy.dtype)
    _write_json(os.path.join(folder, "config.json"), config)
    gen = policy.generation_config
    if gen is None:
        gen = {"_from_model_config": True}
        for k in ("bos_token_id", "eos_token_id", "pad_token_id"):
            if config.get(k) is not None:
                gen[k] = config[k]
    _write_json(os.path.join(folder, "generation_config.json"), gen)
    if policy.tokenizer is not None:
        policy.tokenizer.save(folder)


def save(policy, path: str | os.PathLike, max_shard_size: int | str = DEFAULT_MAX_SHARD_SIZE,
         state: Optional[dict] = None) -> None:
    """Writes `policy` (a Policy) as a Hugging Face folder: model.safetensors (sharded with
    an index above max_shard_size), config.json (with the current dtype),
    generation_config.json, and the tokenizer files. state: the tensors to write
    (default policy.state_dict(); a LoRA policy gives its merged weights).

    The folder is written next to `path` under a temporary name, flushed, then
    renamed into place; an existing folder at `path` is replaced as a whole.
    """
    path = os.path.abspath(os.fspath(path))
    limit = parse_size(max_shard_size)
    if os.path.exists(path) and not os.path.isdir(path):
        raise ValueError(f"{path}: exists and is not a folder")
    parent, name = os.path.split(path)
    os.makedirs(parent, exist_ok=True)
    tag = f"{os.getpid()}-{uuid.uuid4().hex[:8]}"
    tmp = os.path.join(parent, f".{name}.tmp-{tag}")
    os.mkdir(tmp)
    try:
        _write_checkpoint(policy, tmp, limit, state)
        _fsync_tree(tmp)
        if os.path.exists(path):
            old = os.path.join(parent, f".{name}.old-{tag}")
            os.rename(path, old)        # a crash here leaves the old checkpoint under `old`
            os.rename(tmp, path)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.rename(tmp, path)
        fsync_dir(parent)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


__all__ = ["read_folder", "save", "expected_shapes", "parse_size", "dtype_name"]
