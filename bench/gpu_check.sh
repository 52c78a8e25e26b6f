#!/usr/bin/env bash
# The check for a lent GPU machine, in one run that needs no network: build
# with CUDA, prove every kernel against the reference (tests/test_cuda.py:
# every op, greedy generation and 5 training steps against CPU), run each
# kernel once under compute-sanitizer memcheck, benchmark ops, generation and
# a training step against their baselines, and print a table last.
#
#   bash bench/gpu_wheels.sh                  # here, first: the baselines' wheels into .whl/
#   run(command="bash bench/gpu_check.sh", carry=[".whl"], timeout_s=480)   # the device tool
#   bash bench/gpu_check.sh --cpu-rehearsal   # here, and in CI: the same steps on CPU
#
# Budget: GPU_CHECK_BUDGET seconds (default 400, under 7 minutes) for all
# steps; each step gets at most what is left, in order of importance. Results
# go to $OUT (the device tool's folder; default bench/results/gpu): log.txt,
# tests.xml, summary.txt and the benchmark JSON files, 8 files at most.
#
# --cpu-rehearsal first builds a fresh venv from bench/gpu_image_packages.txt
# (what the lent image holds) and the wheels of bench/gpu_wheels.sh for this
# Python, then runs every step with the device set to cpu (SGPO_TEST_DEVICE=cpu
# runs tests/test_cuda.py on CPU tensors; memcheck runs the smoke program
# without the sanitizer), offline as on the lent machine.
set -uo pipefail
cd "$(dirname "$0")/.."
REPO=$PWD
MODE=gpu
[[ "${1:-}" == "--cpu-rehearsal" ]] && MODE=cpu
OUT=${OUT:-$REPO/bench/results/gpu}
mkdir -p "$OUT"
LOG="$OUT/log.txt"
: > "$LOG"
BUDGET=${GPU_CHECK_BUDGET:-400}
PY=${PYTHON:-python3}

if [[ $MODE == cpu ]]; then
  # The rehearsal's setup is the one part that may use the network (here, not there).
  VENV=${REHEARSAL_VENV:-/tmp/sgpo-gpu-rehearsal}
  echo "== rehearsal venv $VENV (image packages + carried wheels)" | tee -a "$LOG"
  rm -rf "$VENV"
  python3 -m venv "$VENV" && "$VENV/bin/python" -m pip install -q -r bench/gpu_image_packages.txt >>"$LOG" 2>&1 \
    || { echo "rehearsal venv failed: see $LOG" | tee -a "$LOG"; tail -20 "$LOG"; exit 1; }
  PY="$VENV/bin/python"
  WHEEL_DIR=$VENV/wheels PYTHON="$PY" bash bench/gpu_wheels.sh "$("$PY" -c 'import sys; print("%d.%d" % sys.version_info[:2])')" \
    >>"$LOG" 2>&1 || { echo "rehearsal wheels failed: see $LOG" | tee -a "$LOG"; exit 1; }
  WHEELS=$VENV/wheels
  DEV=cpu
  export SGPO_FORCE_CUDA=0
  QUICK=--quick
  TRAIN_STEPS=2
  SECONDS=0  # the budget is for the steps, not the rehearsal's setup
else
  WHEELS=.whl
  DEV=cuda
  export SGPO_FORCE_CUDA=1 TORCH_CUDA_ARCH_LIST=${TORCH_CUDA_ARCH_LIST:-9.0a} MAX_JOBS=${MAX_JOBS:-16}
  QUICK=
  TRAIN_STEPS=3
fi
export SGPO_TEST_DEVICE=$DEV PIP_NO_INDEX=1 PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_ROOT_USER_ACTION=ignore
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 HF_DATASETS_OFFLINE=1 PYTHONUNBUFFERED=1

STEPS=()
# step NAME LIMIT CMD...: runs CMD with at most LIMIT seconds and what is left of the budget.
step() {
  local name=$1 limit=$2 left=$((BUDGET - SECONDS))
  shift 2
  if ((left < 10)); then STEPS+=("$name=skip:budget spent"); echo "== $name: skipped (budget spent)" | tee -a "$LOG"; return 1; fi
  ((limit > left)) && limit=$left
  echo "== $name (at most $limit s)" | tee -a "$LOG"
  local t0=$SECONDS
  timeout "$limit" "$@" >>"$LOG" 2>&1
  local rc=$?
  STEPS+=("$name=$rc:$((SECONDS - t0)) s")
  echo "   exit $rc after $((SECONDS - t0)) s" | tee -a "$LOG"
  return $rc
}
skip() { STEPS+=("$1=skip:$2"); echo "== $1: skipped ($2)" | tee -a "$LOG"; }
summary() { "$PY" bench/gpu_summary.py "$OUT" "${STEPS[@]}"; }

if ls "$WHEELS"/*.whl >/dev/null 2>&1; then
  SITE=/tmp/sgpo-carried-site
  step wheels 60 "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target "$SITE" "$WHEELS"/*.whl \
    && export PYTHONPATH=$SITE${PYTHONPATH:+:$PYTHONPATH}
else
  skip wheels "no .whl/ (bash bench/gpu_wheels.sh): the Liger and TRL baselines will say they are missing"
fi
[[ $MODE == gpu ]] && nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader >>"$LOG" 2>&1
step build 240 "$PY" -m pip install -q --no-index --no-build-isolation --no-deps -e . || { summary; exit 1; }
step tests 150 "$PY" -m pytest -q -p no:cacheprovider tests/test_cuda.py --junitxml="$OUT/tests.xml"
if [[ $MODE == gpu ]] && command -v compute-sanitizer >/dev/null; then
  step memcheck 120 compute-sanitizer --tool memcheck --error-exitcode 1 "$PY" bench/gpu_smoke.py --device cuda
elif [[ $MODE == gpu ]]; then
  skip memcheck "compute-sanitizer not on PATH"
else
  step memcheck 60 "$PY" bench/gpu_smoke.py --device cpu  # the program, without the sanitizer
fi
step bench_ops 90 "$PY" bench/bench_ops.py --device "$DEV" $QUICK --out "$OUT/ops_$DEV.json"
step bench_generate 90 "$PY" bench/bench_generate.py --device "$DEV" $QUICK --out "$OUT/generate_$DEV.json"
TRAIN_ENGINES=()  # on a GPU also TRL with our fused loss and TRL with Liger's (Triton: GPU only)
[[ $MODE == gpu ]] && TRAIN_ENGINES=(--engines sgpo_grpo,sgpo_sgpo,trl_grpo,trl_fused,trl_liger)
step bench_train 150 "$PY" bench/bench_train.py --device "$DEV" --steps "$TRAIN_STEPS" "${TRAIN_ENGINES[@]}" \
  --out "$OUT/train_$DEV.json"
if [[ $MODE == gpu ]]; then
  step bench_generate_large 90 "$PY" bench/bench_generate.py --device cuda --large --out "$OUT/generate_large_cuda.json"
else
  skip bench_generate_large "GPU only (hidden 2048, 24 layers, bf16)"
fi
summary
# Failed: no summary, a failed or timed-out step, a failing kernel, or a step the budget cut.
[[ -s "$OUT/summary.txt" ]] && ! grep -q "FAIL\|FAILED\|TIMED OUT\|budget spent" "$OUT/summary.txt"
