#!/usr/bin/env bash
# The GPU check, for a machine with an NVIDIA GPU, torch 2.11 (CUDA build) in its python3, nvcc,
# cmake, and no Node, npm registry or network. Here first:  node scripts/gpu-pack.mjs
# then run, on the GPU machine from the repository root, with .gpu-carry carried:
#     bash scripts/gpu-check.sh
# It builds the addon against that torch (CUDA kernels on), runs the engine tests (the CUDA
# kernel's included), the GPU Node tests, the GPU benchmark, and prints a short table last.
# Writes everything to $OUT (when set) as well.
set -euo pipefail
cd "$(dirname "$0")/.."
CARRY=.gpu-carry
OUT_DIR=${OUT:-/tmp/bertgate-gpu-check}
mkdir -p "$OUT_DIR"
START=$SECONDS
step() { printf '\n== %s (%d s)\n' "$1" $((SECONDS - START)); }

step "unpack Node and the runtime"
mkdir -p /tmp/bertgate-node/bin
xz -dc "$CARRY/node.xz" > /tmp/bertgate-node/bin/node
chmod +x /tmp/bertgate-node/bin/node
export PATH=/tmp/bertgate-node/bin:$PATH
rm -rf node_modules dist
tar -xJf "$CARRY/runtime.tar.xz"
if [ -f "$CARRY/googletest.tar.xz" ]; then
  tar -xJf "$CARRY/googletest.tar.xz" -C /tmp
  export BERTGATE_GTEST_SOURCE=/tmp/googletest
fi
node --version

step "environment"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true
python3 -c "import torch, transformers, tokenizers; print('torch', torch.__version__, 'cuda', torch.cuda.is_available(), '| transformers', transformers.__version__, '| tokenizers', tokenizers.__version__)"
# The machine's own torch is the libtorch to build against and run with.
unset VIRTUAL_ENV
export BERTGATE_PYTHON="$(command -v python3)" PYTHONPATH="$PWD/python" HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 \
  TRANSFORMERS_VERBOSITY=error HF_HUB_DISABLE_PROGRESS_BARS=1

step "build: cmake-js, CUDA kernels required"
BERTGATE_CUDA=ON node scripts/build-native.mjs --tests 2>&1 | tail -5
node dist/lib/cli/main.js doctor | tee "$OUT_DIR/doctor.txt"

step "engine tests (the CUDA kernel against fp64 at::log_softmax)"
./build/engine_tests --gtest_brief=1 2>&1 | tee "$OUT_DIR/engine-tests.txt" | tail -4

step "fixtures and GPU Node tests"
python3 -m bertgate_export.fixtures .fixtures > /dev/null
node --test --test-reporter=spec dist/test/gpu.test.js dist/test/parity.test.js 2>&1 | tee "$OUT_DIR/node-tests.txt" | tail -12

step "GPU benchmark: BERT-base geometry, 128 tokens"
[ -f bench/models/bert-base/model.pt ] || python3 bench/make_model.py bench/models/bert-base bert-base --max-length 128 > /dev/null
node dist/bench/gpu.js --bundle bench/models/bert-base --dtype float16 | tee "$OUT_DIR/gpu-bench.md"

step "done"
