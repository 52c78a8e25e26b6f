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
def pytest_configure(config):
    torch.set_num_threads(int(os.environ.get("SGPO_TEST_THREADS", "1")))
