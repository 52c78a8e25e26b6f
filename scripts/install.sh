#!/usr/bin/env bash
# Install sgpo-engine in editable mode, compiling its C++ (and, on a GPU
# machine, CUDA) extension against the torch already installed.
#   bash scripts/install.sh            # with the demo extras
#   bash scripts/install.sh test       # with the test extras (and verl, without its pins)
# Keeps a torch you already have; on a machine without one, installs the CPU
# build (pinned: an unpinned `torch` pulls a multi-GB CUDA build).
set -euo pipefail
cd "$(dirname "$0")/.."
extras=${1:-demo}
python -c "import torch" 2>/dev/null || python -m pip install "torch==2.13.0"
# --no-build-isolation skips build-system.requires, so bring the build tools here.
python -m pip install "setuptools>=70.1" wheel ninja
python -m pip install --no-build-isolation -e ".[${extras}]"
# The verl integration's tests run verl's own code. verl 0.9.1 pins transformers < 5.11
# and a torch of its choosing; it is installed without them (the test extra brings the
# modules its trainer imports).
if [[ ",${extras}," == *,test,* ]]; then
  python -m pip install --no-deps "verl==0.9.1"
fi
