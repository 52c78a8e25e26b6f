"""Small file helpers shared by the loaders and the checkpoint writer."""
from __future__ import annotations

import json
import os
from typing import Optional


def read_json(path: str) -> Optional[dict]:
    """The JSON object in `path`, None if the file does not exist; errors name the file."""
    if not os.path.isfile(path):
        return None
    try:
        with open(path, encoding="utf-8") as f:
            d = json.load(f)
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ValueError(f"{path}: not valid JSON ({e})") from None
    if not isinstance(d, dict):
        raise ValueError(f"{path}: expected a JSON object, got {type(d).__name__}")
    return d


def json_lines(path: str) -> list[tuple[str, dict]]:
    """(line, object) for each JSON object line of a .jsonl log; blank lines and a line torn by
    a kill in the middle of a write are skipped (metrics.jsonl, completions.jsonl)."""
    out = []
    with open(path, encoding="utf-8") as f:
        for line in f:
            try:
                row = json.loads(line)
            except json.JSONDecodeError:
                continue
            if isinstance(row, dict):
                out.append((line, row))
    return out


def fsync_dir(folder: str) -> None:
    """Makes a rename inside `folder` durable (best effort)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass  # some filesystems do not fsync directories
    finally:
        os.close(fd)
