#!/usr/bin/env bash
# One command on the GPU machine (no cargo there): rlo CUDA vs PyTorch eager / torch.compile for
# grpo, dapo, gspo at 1024x4096 and 4096x8192, f32 and bf16, plus copy bandwidth, roofline and
# compile times. See BENCHMARKS.md (GPU section).
#
# On the development machine:   bench/gpu.sh --build     (builds target/release/rlo-bench-cuda into bench/bin/)
# On the GPU machine:           bench/gpu.sh             (runs; writes bench/out/*.jsonl and prints a table)
set -euo pipefail
cd "$(dirname "$0")/.."

if [[ "${1:-}" == "--build" ]]; then
    cargo build --release -p rlo-runtime --bin rlo-bench-cuda
    mkdir -p bench/bin
    cp "${CARGO_TARGET_DIR:-target}/release/rlo-bench-cuda" bench/bin/
    strip bench/bin/rlo-bench-cuda || true
    echo "built bench/bin/rlo-bench-cuda; bring the repository (with bench/bin) to the GPU machine"
    exit 0
fi

export LD_LIBRARY_PATH=/usr/local/nvidia/lib64:/usr/local/cuda/targets/x86_64-linux/lib:${LD_LIBRARY_PATH:-}
ITERS=${ITERS:-20}
mkdir -p bench/out
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader || true

BIN=${RLO_BENCH_BIN:-bench/bin/rlo-bench-cuda}
"$BIN" --stdlib stdlib --iters "$ITERS" | tee bench/out/rlo.jsonl
python3 bench/torch_losses.py "$ITERS" | tee bench/out/torch.jsonl
python3 bench/summarize.py bench/out/rlo.jsonl bench/out/torch.jsonl | tee bench/out/summary.txt
