#!/usr/bin/env bash
# Makes the link directory a CUDA build needs on a machine without a CUDA toolkit (docs/cuda.md):
#   scripts/mk-cuda-linkdir.sh CUDA_ROOT OUT_DIR [EXTRA_LIB_DIR...]
# CUDA_ROOT is site-packages/nvidia/cu13 of a venv with NVIDIA's CUDA 13.0 wheels; EXTRA_LIB_DIR
# e.g. site-packages/nvidia/cudnn/lib for the cudnn feature. It writes
#   OUT_DIR/lib/libX.so          unversioned links to the wheels' libX.so.N (the linker wants -lX)
#   OUT_DIR/lib/stubs/libcuda.so a link-time stand-in for the driver library (SONAME libcuda.so.1)
#                                whose every cu* entry point returns 34, CUDA_ERROR_STUB_LIBRARY;
#                                the real one comes with the NVIDIA driver of the GPU machine.
# The entry points are read from cudarc 0.19.10's sources, so run `cargo fetch` first.
set -euo pipefail
[ $# -ge 2 ] || { echo "usage: $0 CUDA_ROOT OUT_DIR [EXTRA_LIB_DIR...]" >&2; exit 2; }
CUDA_ROOT=$(readlink -f "$1")
OUT=$2
shift 2
mkdir -p "$OUT/lib/stubs"
shopt -s nullglob

libs=("$CUDA_ROOT"/lib/lib*.so.*)
for dir in "$@"; do
  libs+=("$(readlink -f "$dir")"/lib*.so.*)
done
for lib in "${libs[@]}"; do
  name=$(basename "$lib")
  case "$name" in *alt.so*|*builtins*) continue ;; esac
  ln -sfn "$lib" "$OUT/lib/${name%%.so.*}.so"
done

sys=$(ls -d "${CARGO_HOME:-$HOME/.cargo}"/registry/src/*/cudarc-0.19.10/src/driver/sys/mod.rs 2>/dev/null | head -1)
[ -n "$sys" ] || { echo "cudarc 0.19.10 sources not found: run \`cargo fetch\` first" >&2; exit 1; }
grep -A1 'extern "C" {' "$sys" \
  | sed -nE 's/^\s+fn (cu[A-Za-z0-9_]+)\(.*/\1/p' | sort -u \
  | awk '{ print "int " $1 "(void) { return 34; }" }' > "$OUT/lib/stubs/libcuda_stub.c"
gcc -shared -fPIC -O1 -Wl,-soname,libcuda.so.1 -o "$OUT/lib/stubs/libcuda.so" "$OUT/lib/stubs/libcuda_stub.c"
# Only so that the binary starts here (without a GPU) for the smoke checks.
ln -sfn libcuda.so "$OUT/lib/stubs/libcuda.so.1"
