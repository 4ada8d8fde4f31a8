#!/usr/bin/env bash
# Installs what the tests need and runs the whole suite: formatting, lints, unit,
# end-to-end and interop tests, then bounded fuzzing. CI runs exactly this (.ci/run).
set -euo pipefail
cd "$(dirname "$0")/.."

step() { printf '\n==> %s\n' "$*"; }

step "JS interop client (automerge-repo 2.5 from the npm registry)"
npm ci --prefix tests/js --no-audit --no-fund --loglevel=error

step "Browser tests: Debian's Chromium and playwright-core from the npm registry"
bash scripts/ensure-chromium.sh >/dev/null
npm ci --prefix tests/browser --no-audit --no-fund --loglevel=error

step "volunteer web app: npm ci + vite build, its unit tests"
bash scripts/build-web-app.sh
npm test --silent --prefix mobile-examples/web-volunteer

step "fuzzing tools (cargo-fuzz and a C++ compiler for libFuzzer; installed once)"
if ! command -v c++ >/dev/null 2>&1; then
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq g++ >/dev/null
fi
if ! cargo fuzz --version >/dev/null 2>&1; then
  cargo install cargo-fuzz --locked
fi

step "cargo fmt --check"
cargo fmt --all --check
cargo fmt --manifest-path fuzz/Cargo.toml --check

step "cargo clippy"
cargo clippy --workspace --all-targets -- -D warnings

# buurtsync and buurtsync-loadgen (tests/tests/loadgen_smoke.rs runs a few seconds of
# the load generator against the real server: correctness only, never speed).
step "build binaries used by the end-to-end tests"
cargo build --workspace

step "sqlite3 command-line tool (central_outcomes wipes a store's release memory with it)"
if ! command -v sqlite3 >/dev/null 2>&1; then
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq sqlite3 >/dev/null
fi

step "Python for the client library's tests and examples (Debian python3 if missing)"
if ! command -v python3 >/dev/null 2>&1; then
  apt-get update -qq && apt-get install -y -qq python3 >/dev/null
fi
python3 --version

step "client library bindings (UniFFI: Python, Kotlin, Swift)"
bash scripts/gen-bindings.sh

step "Python client tests: generated bindings, real library, real server"
python3 tests/python/run.py

step "Python mobile examples, as mobile-examples/python/README.md runs them"
PYTHONPATH=client-ffi/bindings/python python3 mobile-examples/python/huisbezoek.py
PYTHONPATH=client-ffi/bindings/python python3 mobile-examples/python/activiteit.py

step "JVM: generated Kotlin + Android example code (Maven), real library vs serve --tls-cert"
bash scripts/jvm-test.sh

step "PostgreSQL for the store and multi-node tests (Debian's postgresql, throwaway cluster)"
# Installs postgresql with apt-get if initdb is missing (CI has none), starts a private
# cluster on a free loopback port, and stops and removes it when this script exits.
PG_DIR=$(mktemp -d "${TMPDIR:-/tmp}/buurtsync-pg.XXXXXX")
trap 'bash scripts/ensure-postgres.sh stop "$PG_DIR"' EXIT
BUURTSYNC_TEST_POSTGRES_URL=$(bash scripts/ensure-postgres.sh start "$PG_DIR")
export BUURTSYNC_TEST_POSTGRES_URL

# The suite runs the same way everywhere: nextest, installed once when missing.
if ! cargo nextest --version >/dev/null 2>&1; then
  step "cargo-nextest (installed once)"
  cargo install cargo-nextest --locked
fi
# nextest skips doctests; run them first so the suite's summary closes the log.
step "doctests"
cargo test --workspace --doc
step "tests"
cargo nextest run --workspace --no-fail-fast

# Each fuzz target runs for a bounded time (FUZZ_SECONDS, default 30) from the corpus and
# the saved findings in the repo; new inputs go to a scratch directory, not the repo.
# A crash fails the suite and leaves its input in fuzz/artifacts/<target>/.
# No AddressSanitizer (`-s none`): the fuzzed crates forbid unsafe code, so ASan finds
# nothing a panic would not, and building without it saves minutes on a cold CI machine.
# Longer campaigns: scripts/fuzz.sh TARGET MINUTES (niced, minimises the corpus, saves
# crashes to fuzz/regressions/TARGET/, prints runs and CPU seconds).
step "fuzz targets (${FUZZ_SECONDS:-30}s each)"
for target in codec apply stateful summary http; do
  scratch="$(mktemp -d)"
  # git keeps no empty folder: a target with no saved finding yet has none in a clone.
  mkdir -p "fuzz/regressions/$target"
  (cd fuzz && RUSTC_BOOTSTRAP=1 cargo fuzz run -s none "$target" "$scratch" "corpus/$target" "regressions/$target" \
      -- -max_total_time="${FUZZ_SECONDS:-30}" -rss_limit_mb=2048 -print_final_stats=1 2>&1 | tail -n 25)
  rm -rf "$scratch"
done
