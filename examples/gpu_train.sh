#!/usr/bin/env bash
# On the GPU machine (no cargo there): runs the GPU tests, then trains on the GPU (policy on
# candle's CUDA device, loss kernels from NVRTC on candle's stream) and the same run on the CPU,
# and prints steps/s of both and the share of step time in the loss.
#
# Build first, on a development machine:   examples/build_cuda.sh
#   → examples/bin/train, examples/bin/cuda_train_tests
# Bring the repository with examples/bin/ (and stdlib/) to the GPU machine, then from its root:
#   examples/gpu_train.sh                     # 100 RL steps each (override: STEPS=200)
#   EXTRA="--hidden 256 --layers 4 --prompts 64" examples/gpu_train.sh   # a bigger policy
set -euo pipefail
cd "$(dirname "$0")/.."
export LD_LIBRARY_PATH=/usr/local/nvidia/lib64:/usr/local/cuda/targets/x86_64-linux/lib:${LD_LIBRARY_PATH:-}
STEPS=${STEPS:-100}
EXTRA=${EXTRA:-}
BIN=${RLO_TRAIN_BIN:-examples/bin/train}
mkdir -p out
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader || true

if [[ -x examples/bin/cuda_train_tests ]]; then
    echo "== GPU tests (examples/tests/cuda_train.rs)"
    # a failure is reported, and the training runs anyway
    examples/bin/cuda_train_tests --test-threads 1 --nocapture 2>&1 | tee out/gpu_tests.txt ||
        echo "!! GPU TESTS FAILED (out/gpu_tests.txt)"
fi

echo "== GPU: --device cuda --backend cuda"
# shellcheck disable=SC2086
"$BIN" --device cuda --backend cuda --steps "$STEPS" --quiet --out out/gpu $EXTRA 2>&1 | tee out/gpu_train.txt
echo "== CPU baseline: --device cpu --backend cpu (same binary, same settings)"
# shellcheck disable=SC2086
"$BIN" --device cpu --backend cpu --steps "$STEPS" --quiet --out out/cpu $EXTRA 2>&1 | tee out/cpu_train.txt

echo "== summary"
grep -h "^RL:" out/gpu_train.txt out/cpu_train.txt
