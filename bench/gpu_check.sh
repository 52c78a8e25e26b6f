#!/usr/bin/env bash
# One script for a GPU machine: build with CUDA, run the CUDA tests, run the
# benchmarks on CUDA (vs eager torch, Liger and transformers), print a short
# table last. Outputs go to ${OUT:-bench/results/gpu}; record them with the
# card's name in bench/RESULTS.md.
#
#   bash bench/gpu_check.sh            # uses the torch already installed (must have CUDA)
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-bench/results/gpu}
mkdir -p "$OUT"
export SGPO_FORCE_CUDA=1 TORCH_CUDA_ARCH_LIST=${TORCH_CUDA_ARCH_LIST:-"8.0;9.0"} MAX_JOBS=${MAX_JOBS:-16}
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | tee "$OUT/gpu.txt"

step() { echo "== $1"; shift; "$@" 2>&1 | tee -a "$OUT/log.txt"; return "${PIPESTATUS[0]}"; }
status=()
step "build" python -m pip install --no-build-isolation -e ".[test,bench]" -q; status+=("build=$?")
step "cuda tests" python -m pytest -q tests/test_cuda.py -x; status+=("cuda_tests=$?")
step "op tests on cuda" python -m pytest -q tests/test_generate.py -k decode_attention; status+=("cpu_tests=$?")
step "bench ops" python bench/bench_ops.py --device cuda --out "$OUT/ops_cuda.json"; status+=("bench_ops=$?")
step "bench generate" python bench/bench_generate.py --device cuda --out "$OUT/generate_cuda.json"; status+=("bench_gen=$?")
step "bench generate large" python bench/bench_generate.py --device cuda --large --out "$OUT/generate_cuda_large.json"
status+=("bench_gen_large=$?")

echo
echo "== summary ($(cat "$OUT/gpu.txt"))"
echo "${status[*]}"
python - "$OUT" <<'PY'
import json, os, sys
out = sys.argv[1]
for name in ("ops_cuda.json", "generate_cuda.json", "generate_cuda_large.json"):
    path = os.path.join(out, name)
    if os.path.exists(path):
        s = json.load(open(path)).get("summary", {})
        print(f"{name:26s} " + "  ".join(f"{k}={v:.3g}" for k, v in s.items()))
    else:
        print(f"{name:26s} (missing)")
PY
