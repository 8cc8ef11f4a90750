#!/usr/bin/env bash
# The whole GPU check of pyramid-ops' cuDNN convs (the `cudnn` feature) in one short command.
#
# 1. On the build machine (no GPU needed; the CUDA 13 wheels venv of scripts/cuda-build.sh):
#      scripts/gpu-check.sh --build
#    builds pyramid-ops' tests/cudnn.rs test binary and pyramid-bench with `--features cudnn`
#    into target/cuda, and packs stripped, gzipped copies into target/gpu-check/ (about 25 MB).
# 2. On a GPU machine (NVIDIA driver >= 580; the CUDA 13 runtime libraries, see below), with
#    target/gpu-check/ copied over (for the device tool: carry ["target/gpu-check"]):
#      scripts/gpu-check.sh [PYRAMID-BENCH ARGS...]
#    runs the test (cuDNN forward and input / weight / bias gradients against the CPU Fast ops,
#    plus the algorithm cache; a "SKIPPED" test counts as a failure here), then
#      pyramid-bench --device cuda ARGS       (ARGS default: --backend both --candle-iters 1)
#    (fast = pyramid-ops' cuDNN convs, candle = candle's conv: cuDNN forward, naive backward).
#    Logs (and bench.json) go to $OUT/gpu-check when $OUT is set (the device tool), else to
#    target/gpu-check/results-DATE.
#
# Libraries needed at run time (see docs/cuda.md): libcuda.so.1 (driver),
# libcudart.so.13, libcublas(Lt).so.13, libcurand.so.10, libnvrtc.so.13, libcudnn.so.9. Searched
# in $PYRAMID_CUDA_LD (a colon-separated list), then in a python's nvidia/cu13 + nvidia/cudnn
# wheels (e.g. a CUDA 13 PyTorch), then /usr/local/cuda*/lib64; the loader's defaults come last.
#
# Environment: PYRAMID_CUDA_VENV (build: as in cuda-build.sh), CUDA_COMPUTE_CAP (build, default
# 90 = sm_90a), PYTHON (run: the python whose wheels to use, default python3).
set -euo pipefail
ROOT=$(git -C "$(dirname "$0")" rev-parse --show-toplevel)
cd "$ROOT"
PACK=$ROOT/target/gpu-check
log() { printf '\n== %s\n' "$*" >&2; }

if [ "${1:-}" = "--build" ]; then
  W=${PYRAMID_CUDA_VENV:-$HOME/.cache/pyramid-cuda}
  [ -x "$W/venv/bin/python" ] || { echo "no CUDA venv in $W: run scripts/cuda-build.sh first" >&2; exit 2; }
  SP=$("$W/venv/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
  CU=$SP/nvidia/cu13
  export PATH=$CU/bin:$PATH NVCC=$CU/bin/nvcc CUDA_HOME=$CU CUDA_ROOT=$W/cuda-link
  export CUDA_COMPUTE_CAP=${CUDA_COMPUTE_CAP:-90} CUDAFORGE_THREADS=${CUDAFORGE_THREADS:-2}
  export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$ROOT/target/cuda}
  log "cargo test --release -p pyramid-ops --features cudnn --test cudnn --no-run"
  out=$(cargo test --release -p pyramid-ops --features cudnn --test cudnn --no-run 2>&1) \
    || { echo "$out" >&2; exit 1; }
  echo "$out" | tail -3 >&2
  test_bin=$(echo "$out" | sed -n 's/.*Executable tests\/cudnn.rs (\(.*\))/\1/p' | tail -1)
  [ -n "$test_bin" ] || { echo "could not find the test binary in cargo's output" >&2; exit 1; }
  case $test_bin in /*) ;; *) test_bin=$ROOT/$test_bin ;; esac
  log "cargo build --release -p pyramid-bench --features cudnn"
  cargo build --release -p pyramid-bench --features cudnn
  mkdir -p "$PACK"
  strip -o "$PACK/cudnn-test" "$test_bin"
  strip -o "$PACK/pyramid-bench" "$CARGO_TARGET_DIR/release/pyramid-bench"
  gzip -f -1 "$PACK/cudnn-test" "$PACK/pyramid-bench"
  printf 'commit %s%s\nbuilt %s\nCUDA_COMPUTE_CAP=%s\n' "$(git rev-parse --short HEAD)" \
    "$(git diff --quiet HEAD -- crates || echo ' (+ uncommitted changes)')" "$(date -u +%FT%TZ)" \
    "$CUDA_COMPUTE_CAP" > "$PACK/BUILD-INFO"
  ls -la "$PACK" >&2
  echo "packed into $PACK: carry target/gpu-check to the GPU machine and run scripts/gpu-check.sh there"
  exit 0
fi

# ---- run on the GPU machine
for f in cudnn-test.gz pyramid-bench.gz; do
  [ -f "$PACK/$f" ] || { echo "missing $PACK/$f: run scripts/gpu-check.sh --build first" >&2; exit 2; }
done
cat "$PACK/BUILD-INFO" >&2 || true
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader >&2 \
  || echo "(nvidia-smi failed)" >&2
if [ -n "${OUT:-}" ]; then RES=$OUT/gpu-check; else RES=$PACK/results-$(date +%Y%m%d-%H%M%S); fi
mkdir -p "$RES"
BIN=$(mktemp -d)
trap 'rm -rf "$BIN"' EXIT
gunzip -c "$PACK/cudnn-test.gz" > "$BIN/cudnn-test"
gunzip -c "$PACK/pyramid-bench.gz" > "$BIN/pyramid-bench"
chmod +x "$BIN/cudnn-test" "$BIN/pyramid-bench"

# The CUDA 13 libraries.
LD=${PYRAMID_CUDA_LD:-}
SITE=$("${PYTHON:-python3}" -c 'import sysconfig;print(sysconfig.get_paths()["purelib"])' 2>/dev/null || true)
for d in "$SITE/nvidia/cu13/lib" "$SITE/nvidia/cudnn/lib" /usr/local/cuda/lib64 /usr/local/cuda-13*/lib64; do
  [ -d "$d" ] && LD=${LD:+$LD:}$d
done
export LD_LIBRARY_PATH=${LD}${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}
echo "LD_LIBRARY_PATH=$LD_LIBRARY_PATH" >&2
missing=$(ldd "$BIN/pyramid-bench" "$BIN/cudnn-test" | grep 'not found' | sort -u || true)
if [ -n "$missing" ]; then
  echo "missing CUDA libraries (set PYRAMID_CUDA_LD or PYTHON, see the header of this script):" >&2
  echo "$missing" >&2
  exit 2
fi

status=0
log "cuDNN conv test (cudnn vs CPU Fast: forward, dx, dw, db; algorithm cache)"
if ! "$BIN/cudnn-test" --nocapture --test-threads=1 2>&1 | tee "$RES/test.log"; then
  status=1
fi
if grep -q SKIPPED "$RES/test.log"; then
  echo "the test was SKIPPED: no usable CUDA device" >&2
  status=1
fi
echo "RESULT cudnn-test $([ $status -eq 0 ] && echo ok || echo FAILED)"

[ $# -gt 0 ] || set -- --backend both --candle-iters 1
log "pyramid-bench --device cuda $*"
if ! "$BIN/pyramid-bench" --device cuda --json "$RES/bench.json" "$@" \
    2>&1 | tee "$RES/bench.log"; then
  status=1
  echo "RESULT pyramid-bench FAILED"
else
  echo "RESULT pyramid-bench ok (see $RES)"
fi
exit $status
