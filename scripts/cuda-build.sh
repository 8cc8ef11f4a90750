#!/usr/bin/env bash
# Compiles the `pyramid` binary with candle's CUDA backend (`--features cuda`, then `cudnn`) on a
# machine WITHOUT a GPU or a CUDA toolkit (docs/cuda.md):
# NVIDIA's CUDA 13.0 wheels from PyPI in a virtualenv, a link directory with unversioned .so names
# and a stub libcuda.so (scripts/mk-cuda-linkdir.sh), then cargo with CUDA_COMPUTE_CAP=90
# (sm_90a: H100/H200) into a separate target directory. Then checks that the binary starts with
# the wheels' libraries on LD_LIBRARY_PATH and that asking for CUDA fails cleanly (the stub returns
# CUDA_ERROR_STUB_LIBRARY: non-zero exit, an error message, no panic).
#
#   scripts/cuda-build.sh                  # cuda, then cudnn
#   PYRAMID_CUDA_FEATURES=cuda scripts/cuda-build.sh
#
# Environment:
#   PYRAMID_CUDA_VENV      scratch dir for the venv and link dir (default ~/.cache/pyramid-cuda;
#                          reused when present; about 2 GB)
#   PYRAMID_CUDA_FEATURES  features to build, in order (default "cuda cudnn")
#   CUDA_COMPUTE_CAP       GPU arch (default 90 = sm_90a, H100/H200)
#   CARGO_TARGET_DIR       default target/cuda (keeps the CPU build in target/ intact)
# Prints, at the end, the environment to export to build by hand (e.g. `cargo xtask bench
# --device cuda`) and the LD_LIBRARY_PATH the binary needs here.
# Takes about 12-15 minutes on 2 cores (cold), cudnn after cuda about 1.5 minutes.
set -euo pipefail
ROOT=$(git -C "$(dirname "$0")" rev-parse --show-toplevel)
cd "$ROOT"
W=${PYRAMID_CUDA_VENV:-$HOME/.cache/pyramid-cuda}
FEATURES=${PYRAMID_CUDA_FEATURES:-cuda cudnn}
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$ROOT/target/cuda}
log() { printf '\n== %s\n' "$*" >&2; }

# 1. The toolkit: NVIDIA's CUDA 13.0 wheels (13.0.x: nvcc 13.0 emits PTX 9.0, what driver 580 loads).
PKGS=(nvidia-cuda-nvcc==13.0.88 nvidia-cuda-crt==13.0.88 nvidia-nvvm==13.0.88
      nvidia-cuda-runtime==13.0.96 nvidia-cuda-cccl==13.0.85
      nvidia-cublas==13.0.2.14 nvidia-curand==10.4.0.35 nvidia-cuda-nvrtc==13.0.88
      nvidia-cudnn-cu13==9.27.0.42)
if [ -x "$W/venv/bin/python" ] && [ -x "$("$W/venv/bin/python" -c 'import sysconfig;print(sysconfig.get_paths()["purelib"])')/nvidia/cu13/bin/nvcc" ] \
   && [ -d "$("$W/venv/bin/python" -c 'import sysconfig;print(sysconfig.get_paths()["purelib"])')/nvidia/cudnn/lib" ]; then
  log "reusing the CUDA 13.0 wheels in $W/venv"
else
  log "installing NVIDIA's CUDA 13.0 wheels into $W/venv (about 2 GB)"
  mkdir -p "$W"
  python3 -m venv "$W/venv"
  "$W/venv/bin/pip" install --quiet --disable-pip-version-check "${PKGS[@]}"
fi
SP=$("$W/venv/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
CU=$SP/nvidia/cu13
CUDNN_LIB=$SP/nvidia/cudnn/lib
"$CU/bin/nvcc" --version | tail -2 >&2

# 2. Link directory: unversioned .so names and the stub driver library (reads cudarc's sources).
log "cargo fetch; link dir $W/cuda-link"
cargo fetch --locked
bash "$ROOT/scripts/mk-cuda-linkdir.sh" "$CU" "$W/cuda-link" "$CUDNN_LIB"

# 3. Build environment (CUDA_ROOT makes cudarc search only the link dir; no GPU: arch is explicit).
export PATH=$CU/bin:$PATH NVCC=$CU/bin/nvcc CUDA_HOME=$CU CUDA_ROOT=$W/cuda-link
export CUDA_COMPUTE_CAP=${CUDA_COMPUTE_CAP:-90} CUDAFORGE_THREADS=${CUDAFORGE_THREADS:-2}
RUNTIME_LD=$CU/lib:$CUDNN_LIB:$W/cuda-link/lib/stubs

BIN=$CARGO_TARGET_DIR/release/pyramid
CFG=$ROOT/configs/quickstart.toml
status=0
for f in $FEATURES; do
  log "cargo build --release -p pyramid-cli --features $f  (CARGO_TARGET_DIR=$CARGO_TARGET_DIR)"
  t0=$(date +%s)
  if ! cargo build --release --locked -p pyramid-cli --features "$f"; then
    echo "RESULT feature=$f build=FAILED seconds=$(( $(date +%s) - t0 ))"
    status=1
    continue
  fi
  secs=$(( $(date +%s) - t0 ))
  size=$(stat -c %s "$BIN")
  # 4. Starts with the wheels' libraries (and the stub libcuda.so.1) on LD_LIBRARY_PATH ...
  missing=$(LD_LIBRARY_PATH=$RUNTIME_LD ldd "$BIN" | grep 'not found' || true)
  if [ -n "$missing" ]; then echo "missing libraries: $missing" >&2; status=1; fi
  starts=ok
  LD_LIBRARY_PATH=$RUNTIME_LD "$BIN" inspect VGG19 >/dev/null || { starts=FAILED; status=1; }
  # ... and asking for CUDA fails cleanly: non-zero exit, CUDA_ERROR_STUB_LIBRARY, no panic.
  out=$(mktemp -d)
  set +e
  msg=$(env -u RUST_BACKTRACE LD_LIBRARY_PATH=$RUNTIME_LD "$BIN" run "$CFG" --device cuda --out "$out/run" --no-progress 2>&1)
  rc=$?
  set -e
  rm -rf "$out"
  clean=ok
  printf 'pyramid run --device cuda (exit %s): %s\n' "$rc" "$(grep -m1 -E 'Error|panicked' <<<"$msg" || tail -1 <<<"$msg")" >&2
  if [ $rc -eq 0 ] || [ $rc -eq 101 ] || grep -q panicked <<<"$msg"; then
    clean=FAILED; status=1
  elif ! grep -q CUDA_ERROR_STUB_LIBRARY <<<"$msg"; then
    clean="ok-but-no-CUDA_ERROR_STUB_LIBRARY-in-message"
  fi
  cp "$BIN" "$CARGO_TARGET_DIR/release/pyramid-$f"
  echo "RESULT feature=$f build=ok seconds=$secs size_bytes=$size starts=$starts cuda_fails_cleanly=$clean exit=$rc binary=$CARGO_TARGET_DIR/release/pyramid-$f"
done

cat >&2 <<EOF

To build by hand in this shell (e.g. cargo xtask bench --device cuda):
  export PATH=$CU/bin:\$PATH NVCC=$CU/bin/nvcc CUDA_HOME=$CU CUDA_ROOT=$W/cuda-link CUDA_COMPUTE_CAP=$CUDA_COMPUTE_CAP CUDAFORGE_THREADS=$CUDAFORGE_THREADS
To start the binary on this GPU-less machine:
  export LD_LIBRARY_PATH=$RUNTIME_LD
EOF
exit $status
