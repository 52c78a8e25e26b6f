#!/usr/bin/env bash
# Downloads into .whl/ (git-ignored) the wheels that bench/gpu_check.sh needs
# and the lent GPU image lacks: the Liger and TRL baselines and what TRL needs
# beyond the image (the device tool's KINDS.md lists the image's packages).
# The device machine reaches no registry, so they travel with `carry`.
#
#   bash bench/gpu_wheels.sh         # for the lent image's Python (3.12)
#   WHEEL_DIR=/tmp/w bash bench/gpu_wheels.sh 3.11   # elsewhere, for another Python
#
# Pure-Python wheels but one (multiprocess, per Python version); about 3 MB.
set -euo pipefail
cd "$(dirname "$0")/.."
PYV=${1:-3.12}
DEST=${WHEEL_DIR:-.whl}
WHEELS=(liger-kernel==0.8.5 trl==1.16.0 datasets==5.2.0 dill==0.4.1 multiprocess==0.70.19)
rm -rf "$DEST"
mkdir -p "$DEST"
"${PYTHON:-python3}" -m pip download -q --no-deps --only-binary=:all: --python-version "$PYV" --implementation cp \
  --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
  -d "$DEST" "${WHEELS[@]}" 2> >(grep -v "is ignored: it is neither a file nor a directory" >&2)
ls "$DEST"
