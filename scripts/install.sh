#!/usr/bin/env bash
# Install sgpo-engine in editable mode, compiling its C++ (and, on a GPU
# machine, CUDA) extension against the torch already installed.
#   bash scripts/install.sh            # with the demo extras
#   bash scripts/install.sh test       # with the test extras (and verl, without its pins)
#   bash scripts/install.sh real       # with transformers + gguf, for scripts/get_smollm2.py
# Keeps a torch you already have. On a machine without one it installs
# torch==2.13.0: with a GPU, PyPI's (CUDA) build; without one, the CPU build
# from PyTorch's CPU index when that index answers (PyPI's torch is the CUDA
# build, multi-GB with its nvidia-* wheels), else from the indexes pip is
# configured with, saying so.
set -euo pipefail
cd "$(dirname "$0")/.."
extras=${1:-demo}
TORCH="torch==2.13.0"
CPU_INDEX="https://download.pytorch.org/whl/cpu"

install_torch() {
  if nvidia-smi -L >/dev/null 2>&1; then
    python -m pip install "$TORCH"
  elif python -c "import urllib.request; urllib.request.urlopen('$CPU_INDEX/torch/', timeout=5)" 2>/dev/null; then
    # the index's 2.13.0+cpu is a higher version than PyPI's 2.13.0, so pip takes it
    python -m pip install "$TORCH" --extra-index-url "$CPU_INDEX"
  else
    echo "install.sh: no GPU, and $CPU_INDEX does not answer: installing $TORCH from pip's configured" \
         "indexes (from plain PyPI that is the CUDA build; install the CPU build first to avoid it)" >&2
    python -m pip install "$TORCH"
  fi
}

python -c "import torch" 2>/dev/null || install_torch
# --no-build-isolation skips build-system.requires, so bring the build tools here.
python -m pip install "setuptools>=70.1" wheel ninja
python -m pip install --no-build-isolation -e ".[${extras}]"
# The verl integration's tests run verl's own code. verl 0.9.1 pins transformers < 5.11
# and a torch of its choosing; it is installed without them (the test extra brings the
# modules its trainer imports).
if [[ ",${extras}," == *,test,* ]]; then
  python -m pip install --no-deps "verl==0.9.1"
fi
