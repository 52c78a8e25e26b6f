"""Checkpoints: OUTPUT/checkpoint-STEP/ holds the model in HF layout (so
transformers and vLLM load it as is; with LoRA, the adapters alone in PEFT's
format, which peft.PeftModel.from_pretrained and `sgpo merge` read) and trainer_state.pt (optimizer,
scheduler, RNG states, step / data position); under FSDP the optimizer state
is in optimizer/, sharded (torch.distributed.checkpoint), instead.

A checkpoint is written under a temporary name and renamed when complete, so
a crash (even SIGKILL) never leaves a half checkpoint that --resume would
pick up. Only the newest `keep` checkpoints are kept.
"""
from __future__ import annotations

import os
import random
import re
import shutil

import numpy as np
import torch

from ..model.files import fsync_dir
from ..model.lora import has_lora, save_adapter

STATE_FILE = "trainer_state.pt"
_NAME = re.compile(r"^checkpoint-(\d+)$")
# temporaries of save_checkpoint (.checkpoint-N.tmp) and of the model save inside
# it (..checkpoint-N.tmp.tmp-TAG / .old-TAG): debris when a run was killed mid-save
_TEMP = re.compile(r"^\.\.?checkpoint-\d+\.tmp")


def rng_state() -> dict:
    return {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state(),
            "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None}


def set_rng_state(state: dict):
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if state.get("cuda") is not None and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def save_checkpoint(output: str, step: int, policy, trainer_state: dict, keep: int) -> str:
    return finish_checkpoint(output, step, begin_checkpoint(output, step, policy), trainer_state, keep)


def temp_path(output: str, step: int) -> str:
    """Where checkpoint `step` is written before its rename (the same on every rank)."""
    return os.path.join(output, f".checkpoint-{step}.tmp")


def begin_checkpoint(output: str, step: int, policy) -> str:
    """Writes the model files under the temporary name; returns it. More files (a sharded
    optimizer) may go there before finish_checkpoint."""
    tmp = temp_path(output, step)
    shutil.rmtree(tmp, ignore_errors=True)
    if has_lora(policy):
        save_adapter(policy, tmp, base_model=getattr(policy, "base_model_path", None))
    else:
        policy.save(tmp)  # the model files (itself written atomically)
    return tmp


def finish_checkpoint(output: str, step: int, tmp: str, trainer_state: dict, keep: int) -> str:
    """Adds the trainer state (last: its presence marks a complete checkpoint), renames the
    folder into place and prunes old checkpoints and debris."""
    final = os.path.join(output, f"checkpoint-{step}")
    state_tmp = os.path.join(tmp, STATE_FILE + ".tmp")
    torch.save({**trainer_state, "step": step, "rng": rng_state()}, state_tmp)
    os.replace(state_tmp, os.path.join(tmp, STATE_FILE))
    fsync_dir(tmp)
    if os.path.exists(final):  # re-saving a step (e.g. after a resume): replace it whole
        shutil.rmtree(final)
    os.replace(tmp, final)
    fsync_dir(output)
    for old in list_checkpoints(output)[:-keep]:
        shutil.rmtree(old[1], ignore_errors=True)
    for name in os.listdir(output):  # what a killed save left behind (never read by --resume)
        if _TEMP.match(name):
            shutil.rmtree(os.path.join(output, name), ignore_errors=True)
    return final


def list_checkpoints(output: str) -> list[tuple[int, str]]:
    """Complete checkpoints [(step, path)], oldest first."""
    if not os.path.isdir(output):
        return []
    found = []
    for name in os.listdir(output):
        m = _NAME.match(name)
        path = os.path.join(output, name)
        if m and os.path.isfile(os.path.join(path, STATE_FILE)):
            found.append((int(m.group(1)), path))
    return sorted(found)


def latest_checkpoint(output: str):
    found = list_checkpoints(output)
    return found[-1][1] if found else None


def load_trainer_state(path: str) -> dict:
    file = os.path.join(path, STATE_FILE)
    try:
        return torch.load(file, map_location="cpu", weights_only=False)
    except Exception as e:  # a checkpoint the rename protocol says is complete, yet unreadable
        raise ValueError(f"{file}: cannot read the trainer state ({e})") from None
