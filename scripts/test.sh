#!/usr/bin/env bash
# Installs what the tests need and runs the whole suite: formatting, lints, unit,
# end-to-end and interop tests. CI runs exactly this (.ci/run).
set -euo pipefail
cd "$(dirname "$0")/.."

step() { printf '\n==> %s\n' "$*"; }

step "JS interop client (automerge-repo 2.5 from the npm registry)"
npm ci --prefix tests/js --no-audit --no-fund --loglevel=error

step "cargo fmt --check"
cargo fmt --all --check

step "cargo clippy"
cargo clippy --workspace --all-targets -- -D warnings

# buurtsync and buurtsync-loadgen (tests/tests/loadgen_smoke.rs runs a few seconds of
# the load generator against the real server: correctness only, never speed).
step "build binaries used by the end-to-end tests"
cargo build --workspace --bins

if cargo nextest --version >/dev/null 2>&1; then
  # nextest skips doctests; run them first so the suite's summary closes the log.
  step "doctests"
  cargo test --workspace --doc
  step "tests"
  cargo nextest run --workspace --no-fail-fast
else
  step "tests"
  cargo test --workspace --no-fail-fast
fi
