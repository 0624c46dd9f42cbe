#!/usr/bin/env bash
# The GPU check, for a machine with an NVIDIA GPU, torch 2.11 (CUDA build) in its python3, nvcc,
# cmake, and no Node, npm registry or network. Here first:  node scripts/gpu-pack.mjs
# then run, on the GPU machine from the repository root, with .gpu-carry carried:
#     bash scripts/gpu-check.sh            (DRY_RUN=1: stop before the first step that needs a GPU)
# It builds the addon against that torch (CUDA kernels on), checks that doctor sees CUDA, runs
# the engine tests (the CUDA kernel's included), the GPU benchmark, the replicas benchmark (a
# replica on every device against one device; two streams on one device) and the GPU Node tests.
#
# Device time is scarce, so one failure must not lose the rest: every step runs (unless one it
# needs failed), its whole log is kept in $OUT/<n>-<step>.log, its status in $OUT/status.txt,
# the benchmark runs whatever the tests said, and the exit status is the worst step's, after
# the summary table.
set -uo pipefail
cd "$(dirname "$0")/.."
CARRY=.gpu-carry
OUT_DIR=${OUT:-/tmp/bertgate-gpu-check}
mkdir -p "$OUT_DIR"
: > "$OUT_DIR/status.txt"
START=$SECONDS
WORST=0
N=0

# step NAME COMMAND...: runs COMMAND with its full output in its own log, prints the log's tail,
# and records the status. Returns the command's status, so a later step can depend on it.
step() {
  local name=$1
  shift
  N=$((N + 1))
  local log
  # Plain names only: the device tool brings back no file whose name has odd characters.
  log="$OUT_DIR/$(printf '%02d' "$N")-$(printf '%s' "$name" | tr -cs 'A-Za-z0-9' '-' | sed 's/-$//').log"
  printf '\n== %s (%d s)\n' "$name" $((SECONDS - START))
  "$@" > "$log" 2>&1
  local status=$?
  tail -n 15 "$log"
  printf '%-45s %s (%d s)\n' "$name" "$([ $status -eq 0 ] && echo ok || echo "FAILED ($status)")" \
    $((SECONDS - START)) >> "$OUT_DIR/status.txt"
  [ $status -gt "$WORST" ] && WORST=$status
  return $status
}
skip() {
  printf '%-45s skipped: %s\n' "$1" "$2" >> "$OUT_DIR/status.txt"
  [ "$WORST" -eq 0 ] && WORST=1
}
finish() {
  printf '\n== summary (%d s)\n' $((SECONDS - START))
  cat "$OUT_DIR/status.txt"
  exit "$WORST"
}

# xz is not on every image: Python's lzma reads the same files.
unxz_to() { if command -v xz > /dev/null; then xz -dc "$1" > "$2"; else python3 -c 'import lzma,shutil,sys; shutil.copyfileobj(lzma.open(sys.argv[1]), open(sys.argv[2], "wb"))' "$1" "$2"; fi; }
untar_xz() { if command -v xz > /dev/null; then tar -xJf "$@"; else python3 -c 'import sys,tarfile; tarfile.open(sys.argv[1]).extractall(sys.argv[3] if len(sys.argv) > 3 else ".")' "$@"; fi; }

unpack() {
  mkdir -p /tmp/bertgate-node/bin &&
    unxz_to "$CARRY/node.xz" /tmp/bertgate-node/bin/node &&
    chmod +x /tmp/bertgate-node/bin/node &&
    rm -rf node_modules dist &&
    untar_xz "$CARRY/runtime.tar.xz" &&
    if [ -f "$CARRY/googletest.tar.xz" ]; then untar_xz "$CARRY/googletest.tar.xz" -C /tmp; fi &&
    /tmp/bertgate-node/bin/node --version
}
export PATH=/tmp/bertgate-node/bin:$PATH
[ -f "$CARRY/googletest.tar.xz" ] && export BERTGATE_GTEST_SOURCE=/tmp/googletest
# nvcc: CUDACXX, PATH, or the usual toolkit place (the pip wheel is found by the build itself).
if [ -z "${CUDACXX:-}" ] && ! command -v nvcc > /dev/null && [ -x /usr/local/cuda/bin/nvcc ]; then
  export CUDACXX=/usr/local/cuda/bin/nvcc PATH=/usr/local/cuda/bin:$PATH
fi
# The machine's own torch is the libtorch to build against and run with.
unset VIRTUAL_ENV
export BERTGATE_PYTHON="$(command -v python3)" PYTHONPATH="$PWD/python" HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 \
  TRANSFORMERS_VERBOSITY=error HF_HUB_DISABLE_PROGRESS_BARS=1

environment() {
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
  python3 -c "import torch, transformers, tokenizers; print('torch', torch.__version__, 'cuda', torch.cuda.is_available(), '| transformers', transformers.__version__, '| tokenizers', tokenizers.__version__)"
  echo "nvcc: ${CUDACXX:-$(command -v nvcc || echo 'not on PATH (the build looks for the pip wheel)')}"
}
# On this machine a missing GPU is a failure, not a skip: the GPU tests skip without one.
cuda_seen() {
  node dist/lib/cli/main.js doctor --json > "$OUT_DIR/doctor.json" &&
    node -e 'const r = require(process.argv[1]); const c = r.runtime ?? {};
      if (!c.cudaAvailable) { console.error("doctor: CUDA is not available", JSON.stringify(c)); process.exit(1); }
      console.log(`CUDA available, ${c.cudaDeviceCount} device(s)`);' "$OUT_DIR/doctor.json"
}
bench_model() {
  [ -f bench/models/bert-base/model.pt ] || python3 bench/make_model.py bench/models/bert-base bert-base --max-length 128
}

step "unpack Node and the runtime" unpack || finish
step "environment" environment
step "build: cmake-js, CUDA kernels required" env BERTGATE_BUILD_CUDA=ON node scripts/build-native.mjs --tests || finish
step "doctor" node dist/lib/cli/main.js doctor
if [ "${DRY_RUN:-0}" = 1 ]; then
  echo "DRY_RUN=1: stopping before the steps that need a GPU"
  finish
fi
CUDA=0
if step "doctor sees CUDA" cuda_seen; then
  CUDA=1
  step "engine tests (CUDA kernel vs fp64)" ./build/engine_tests --gtest_brief=1
else
  skip "engine tests" "no CUDA device seen"
fi
# The benchmarks run first and whatever the tests said: their tables are the run's most valuable
# output, and a lease that runs out should cut the Node tests, not them.
if step "bench model (BERT-base geometry)" bench_model; then
  step "GPU benchmark, 128 tokens" node dist/bench/gpu.js --bundle bench/models/bert-base --dtype float16
  cp "$OUT_DIR/$(printf '%02d' "$N")-GPU-benchmark-128-tokens.log" "$OUT_DIR/gpu-bench.md"
  # Every device against one (expected >= 0.9 x the device count), and two replicas on one
  # device (two streams) against one: docs/benchmarks.md, "Replicas".
  step "replicas benchmark: cuda:* vs cuda:0, 2 streams" node dist/bench/replicas.js \
    --bundle bench/models/bert-base --texts data/debian/test.jsonl.gz \
    --configs 'cuda:0:1x1,cuda:*:1x1,cuda:0:2x1' --requests 10000 --concurrency 1024 --rounds 3
else
  skip "GPU benchmark, replicas benchmark" "no bench model"
fi
if [ "$CUDA" = 1 ]; then
  if step "fixtures" python3 -m bertgate_export.fixtures .fixtures; then
    step "GPU Node tests" node --test --test-reporter=spec dist/test/gpu.test.js dist/test/gpu-memory-cap.test.js \
      dist/test/parity.test.js
  else
    skip "GPU Node tests" "no fixtures"
  fi
else
  skip "GPU Node tests" "no CUDA device seen"
fi
finish
