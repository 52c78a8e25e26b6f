#!/usr/bin/env bash
# Install sgpo-engine with its test dependencies and run the test suite.
# Keeps a torch you already have; on a machine without one, installs the CPU
# build (pin it: an unpinned `torch` pulls a multi-GB CUDA build).
set -euo pipefail
cd "$(dirname "$0")/.."
python -c "import torch" 2>/dev/null || python -m pip install "torch==2.13.0"
python -m pip install --no-build-isolation -e ".[test]"
python -m pytest "$@"
