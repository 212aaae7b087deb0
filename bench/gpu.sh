#!/usr/bin/env bash
# One command on the GPU machine (no cargo there): rlo CUDA vs PyTorch eager / torch.compile for
# grpo, dapo, gspo at 1024x4096 and 4096x8192, f32 and bf16, plus copy bandwidth, roofline and
# compile times. See BENCHMARKS.md (GPU section).
#
# On the development machine:   bench/gpu.sh --build     (builds rlo-bench-cuda and the GPU tests into bench/bin/)
# On the GPU machine:           bench/gpu.sh             (runs; writes bench/out/*.jsonl and prints a table)
#                               bench/gpu.sh --tests     (only the GPU tests; RLO_GPU_TESTS=0 skips them)
set -euo pipefail
cd "$(dirname "$0")/.."

if [[ "${1:-}" == "--build" ]]; then
    cargo build --release -p rlo-runtime --bin rlo-bench-cuda
    mkdir -p bench/bin
    cp "${CARGO_TARGET_DIR:-target}/release/rlo-bench-cuda" bench/bin/
    strip bench/bin/rlo-bench-cuda || true
    # the GPU tests (tests/cuda_gpu.rs) as a binary too: the GPU machine has no cargo
    tests=$(cargo test --release -p rlo-tests --test cuda_gpu --no-run --message-format=json 2>/dev/null |
        python3 bench/test_exe.py cuda_gpu)
    [[ -n "$tests" ]] || { echo "the cuda_gpu test binary was not built" >&2; exit 1; }
    cp "$tests" bench/bin/cuda_gpu_tests
    strip bench/bin/cuda_gpu_tests || true
    echo "built bench/bin/rlo-bench-cuda and bench/bin/cuda_gpu_tests; bring the repository (with bench/bin) to the GPU machine"
    exit 0
fi

export LD_LIBRARY_PATH=/usr/local/nvidia/lib64:/usr/local/cuda/targets/x86_64-linux/lib:${LD_LIBRARY_PATH:-}
ITERS=${ITERS:-20}
mkdir -p bench/out
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader || true

BIN=${RLO_BENCH_BIN:-bench/bin/rlo-bench-cuda}
# correctness first (#6): every stdlib objective and RLO_GPU_CASES random programs against the
# interpreter, repeated runs bit-identical; a failure is reported and the benchmark runs anyway
# (`--tests`: only these; RLO_GPU_TESTS=0: skip them; RLO_GPU_CASES: random programs, 240)
if [[ -x bench/bin/cuda_gpu_tests && "${RLO_GPU_TESTS:-1}" != 0 ]]; then
    RLO_STDLIB_DIR=stdlib bench/bin/cuda_gpu_tests --test-threads 1 --nocapture 2>&1 |
        tee bench/out/gpu_tests.txt || echo "!! GPU TESTS FAILED (bench/out/gpu_tests.txt)"
fi
[[ "${1:-}" == "--tests" ]] && exit 0
"$BIN" --stdlib stdlib --iters "$ITERS" | tee bench/out/rlo.jsonl
python3 bench/torch_losses.py "$ITERS" | tee bench/out/torch.jsonl
python3 bench/summarize.py bench/out/rlo.jsonl bench/out/torch.jsonl | tee bench/out/summary.txt
# What seq-local fusion and recomputation save, on the objectives they change (traffic model:
# gspo 4.00 -> 1.00, gmpo 3.67 -> 1.00, ppo 3.00 -> 1.60 of the roofline; plain also stores
# scan arguments), and grpo as a control.
"$BIN" --stdlib stdlib --iters "$ITERS" --objectives gspo,gmpo,ppo,grpo --shapes 4096x8192 \
    --dtypes f32 --variants plain,fused | tee bench/out/fusion.jsonl
python3 bench/summarize.py bench/out/fusion.jsonl | tee bench/out/fusion.txt
# NVRTC with --Ofast-compile=max: cold compile about 1.7x faster here (CPU-only measurement);
# what it costs the kernels is this run's `rlo ms` against the first table's.
RLO_NVRTC_FAST_COMPILE=1 "$BIN" --stdlib stdlib --iters "$ITERS" --objectives grpo,dapo,gspo \
    --shapes 1024x4096,4096x8192 --dtypes f32 | tee bench/out/fastcompile.jsonl
python3 bench/summarize.py bench/out/fastcompile.jsonl | tee bench/out/fastcompile.txt
# Cold compile as one NVRTC program (the default splits the kernels into one program per core,
# at most 8, compiled at once): the `cold ms` column against the first table's.
RLO_NVRTC_THREADS=1 "$BIN" --stdlib stdlib --iters 2 --objectives grpo,dapo,gspo \
    --shapes 1024x4096 --dtypes f32 | tee bench/out/onethread.jsonl
python3 bench/summarize.py bench/out/onethread.jsonl | tee bench/out/onethread.txt
# Block size of the per-sequence kernels (fused ones have 1024 threads; the cap lowers it).
for t in 128 256 512; do
    echo "RLO_CUDA_PASS_THREADS=$t"
    RLO_CUDA_PASS_THREADS=$t "$BIN" --stdlib stdlib --iters "$ITERS" --objectives gspo,grpo \
        --shapes 4096x8192 --dtypes f32 | tee bench/out/threads$t.jsonl
done
