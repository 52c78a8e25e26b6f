#!/usr/bin/env bash
# Install sgpo-engine in editable mode, compiling its C++ (and, on a GPU
# machine, CUDA) extension against the torch already installed.
#   bash scripts/install.sh            # with the demo extras
#   bash scripts/install.sh test       # with the test extras
# Keeps a torch you already have; on a machine without one, installs the CPU
# build (pinned: an unpinned `torch` pulls a multi-GB CUDA build).
set -euo pipefail
cd "$(dirname "$0")/.."
extras=${1:-demo}
python -c "import torch" 2>/dev/null || python -m pip install "torch==2.13.0"
# --no-build-isolation skips build-system.requires, so bring the build tools here.
python -m pip install "setuptools>=70.1" wheel ninja
python -m pip install --no-build-isolation -e ".[${extras}]"
