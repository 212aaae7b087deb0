#!/usr/bin/env bash
# Builds the CUDA `train` binary (feature `cuda`: candle's CUDA device + rlo's NVRTC loss kernels)
# on a development machine with no GPU and no CUDA toolkit, following ../shared/gpu.md:
#
#   1. a venv with nvcc 13.0 from PyPI (five packages pinned to 13.0; unpinned, nvvm emits PTX a
#      13.0 driver rejects), plus NVRTC 13.0 for the compile-only checks;
#   2. CUDA_COMPUTE_CAP=90, CUDARC_CUDA_VERSION=13000, NVCC, CUDAFORGE_THREADS;
#   3. a generated copy of candle-core 0.11.1 with cudarc's `dynamic-linking` swapped for
#      `dynamic-loading` (no libcuda stub is needed to link), applied with
#      `cargo --config 'patch.crates-io.candle-core.path=…'` for this build only;
#   4. a link-search dir (LIBRARY_PATH) holding libcudart.a -> the toolkit's libcudart_static.a,
#      so candle-kernels' `-lcudart` links cudart statically.
#
# Everything generated lives under $CARGO_TARGET_DIR/cuda-tools (default target/, ignored by git).
#
#   examples/build_cuda.sh                 build → examples/bin/{train,cuda_train_tests} (stripped;
#                                          run them on the GPU machine with examples/gpu_train.sh)
#   examples/build_cuda.sh env             print the environment (`eval "$(examples/build_cuda.sh env)"`)
#   examples/build_cuda.sh cargo ARGS...   run `cargo ARGS --config patch…` in that environment
#                                          (e.g. `cargo clippy -p rlo-examples --all-targets --features cuda`)
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)
TARGET=${CARGO_TARGET_DIR:-$ROOT/target}
TOOLS=$TARGET/cuda-tools
VENV=$TOOLS/venv
PY=${PYTHON:-python3}

setup() {
    mkdir -p "$TOOLS"
    if [[ ! -x "$VENV/bin/nvcc-ok" ]]; then
        "$PY" -m venv "$VENV" >&2
        "$VENV/bin/pip" install --quiet \
            nvidia-cuda-nvcc==13.0.88 nvidia-nvvm==13.0.88 nvidia-cuda-runtime==13.0.88 \
            nvidia-cuda-crt==13.0.88 nvidia-cuda-cccl==13.0.85 nvidia-cuda-nvrtc==13.0.88 >&2
        printf '#!/bin/sh\n' >"$VENV/bin/nvcc-ok"
        chmod +x "$VENV/bin/nvcc-ok"
    fi
    CU=$(echo "$VENV"/lib/python3*/site-packages/nvidia/cu13)
    [[ -x "$CU/bin/nvcc" ]] || { echo "nvcc not found under $CU" >&2; exit 1; }

    # candle-core with dynamic-loading (generated, never committed)
    local src
    src=$(cargo metadata --format-version 1 --manifest-path "$ROOT/Cargo.toml" 2>/dev/null |
        "$PY" -c 'import json,sys; print(next(p["manifest_path"] for p in json.load(sys.stdin)["packages"] if p["name"]=="candle-core"))')
    src=$(dirname "$src")
    CANDLE=$TOOLS/candle-core-0.11.1
    if [[ ! -f "$CANDLE/.rlo-patched" ]]; then
        rm -rf "$CANDLE"
        cp -r "$src" "$CANDLE"
        grep -q '"dynamic-linking"' "$CANDLE/Cargo.toml" ||
            { echo "candle-core's Cargo.toml no longer names dynamic-linking: check gpu.md" >&2; exit 1; }
        sed -i 's/"dynamic-linking"/"dynamic-loading"/' "$CANDLE/Cargo.toml"
        touch "$CANDLE/.rlo-patched"
    fi

    # static cudart for candle-kernels' `-lcudart` (gcc searches LIBRARY_PATH; no .so there)
    LINKDIR=$TOOLS/cudart-static
    mkdir -p "$LINKDIR"
    ln -sf "$CU/lib/libcudart_static.a" "$LINKDIR/libcudart.a"

    export CUDA_COMPUTE_CAP=${CUDA_COMPUTE_CAP:-90}
    export CUDARC_CUDA_VERSION=13000
    export NVCC=$CU/bin/nvcc
    export CUDAFORGE_THREADS=${CUDAFORGE_THREADS:-2}
    export PATH=$CU/bin:$PATH
    export LIBRARY_PATH=$LINKDIR${LIBRARY_PATH:+:$LIBRARY_PATH}
    # NVRTC for the compile-only checks (tests that launch kernels still skip without a GPU)
    export RLO_NVRTC_LIB_DIR=${RLO_NVRTC_LIB_DIR:-$CU/lib}
    PATCH="patch.crates-io.candle-core.path=\"$CANDLE\""
}

# cargo with the patch; the patch rewrites candle-core's entry in Cargo.lock (a path source), so
# the committed lock file is put back afterwards (the default build must not see the copy).
patched_cargo() {
    local sub=$1
    shift
    if [[ -z "${LOCK_SAVED:-}" ]]; then
        cp Cargo.lock "$TOOLS/Cargo.lock.orig"
        trap 'cp "$TOOLS/Cargo.lock.orig" Cargo.lock' EXIT
        LOCK_SAVED=1
    fi
    cargo "$sub" --config "$PATCH" "$@"
}

case "${1:-build}" in
env)
    setup
    for v in CUDA_COMPUTE_CAP CUDARC_CUDA_VERSION NVCC CUDAFORGE_THREADS PATH LIBRARY_PATH RLO_NVRTC_LIB_DIR; do
        printf 'export %s=%q\n' "$v" "${!v}"
    done
    printf 'export RLO_CUDA_PATCH=%q\n' "$PATCH"
    echo "# then: cargo <cmd> --config \"\$RLO_CUDA_PATCH\" ... --features cuda"
    echo "# (this rewrites candle-core's entry in Cargo.lock: git checkout Cargo.lock afterwards)"
    ;;
cargo)
    shift
    setup
    patched_cargo "$@"
    ;;
build)
    setup
    start=$(date +%s)
    patched_cargo build --release -p rlo-examples --bin train --features cuda
    mkdir -p examples/bin
    cp "$TARGET/release/train" examples/bin/train
    strip examples/bin/train || true
    # the GPU tests as a binary too (the GPU machine has no cargo)
    tests=$(patched_cargo test --release -p rlo-examples --features cuda --test cuda_train \
        --no-run --message-format=json 2>/dev/null |
        "$PY" bench/test_exe.py cuda_train)
    [[ -n "$tests" ]] || { echo "the cuda_train test binary was not built" >&2; exit 1; }
    cp "$tests" examples/bin/cuda_train_tests
    strip examples/bin/cuda_train_tests || true
    echo "built examples/bin/train and examples/bin/cuda_train_tests in $(($(date +%s) - start)) s ($(du -h examples/bin/train | cut -f1), $(du -h examples/bin/cuda_train_tests | cut -f1))"
    echo "on the GPU machine (repository with examples/bin/ and stdlib/): examples/gpu_train.sh"
    ;;
*)
    echo "usage: $0 [build | env | cargo ARGS...]" >&2
    exit 2
    ;;
esac
