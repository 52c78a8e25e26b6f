#!/usr/bin/env bash
# Install sgpo-engine with its test dependencies and run the test suite.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install.sh test
python -m pytest "$@"
