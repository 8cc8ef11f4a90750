#!/usr/bin/env bash
# The README's test command: installs what the tests need, then runs every test.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ ! -d /usr/share/datasets/fashion-mnist ] && command -v apt-get >/dev/null; then
  # Real image data for the Fashion-MNIST reader tests (Debian package, no download at run time).
  (apt-get update -qq && apt-get install -y -qq dataset-fashion-mnist) >/dev/null 2>&1 \
    || echo "note: dataset-fashion-mnist not installed; tests that need it are skipped" >&2
fi
cargo test --workspace --release --locked
# A sweep on a live one-node Slurm (docs/distributed.md; about 5 minutes on 2 cores): installs
# slurm-wlm and munge where it can, else prints "Slurm test skipped: <reason>".
./scripts/slurm-test.sh
# The conventions: formatting, lints, API docs without rustdoc warnings (broken intra-doc
# links and the like), and tidy (private paths, SAFETY comments, no unwrap in libraries, no
# unused dependencies), after the tests so a style slip never hides a failure.
cargo fmt --all -- --check
cargo clippy --workspace --all-targets --release --locked -- -D warnings
RUSTDOCFLAGS="-D warnings" cargo doc --workspace --no-deps --locked --release
cargo run --release --locked -q -p xtask -- tidy
