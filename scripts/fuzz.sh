#!/usr/bin/env bash
# A long fuzzing campaign for one target, outside CI (CI runs each target 30 s in
# scripts/test.sh).
#
#   scripts/fuzz.sh TARGET MINUTES          # e.g. scripts/fuzz.sh apply 60
#
# Builds the target as scripts/test.sh does (`-s none`: the fuzzed crates forbid unsafe
# code, so AddressSanitizer finds nothing a panic would not; RUSTC_BOOTSTRAP=1 because
# these machines have no nightly), runs it niced (FUZZ_NICE, default 19) for MINUTES of
# wall time on one core, growing fuzz/corpus/TARGET, then minimises that corpus with
# `cargo fuzz cmin` and leaves it for committing. A crash stops the run (it needs a fix
# before fuzzing on); its input is copied to fuzz/regressions/TARGET/, which
# sync-core/tests/fuzz_regressions.rs and every later run replay.
#
# The last line is the campaign's figures, for docs/performance.md:
#   fuzz campaign: target=… minutes=… runs=… cpu_seconds=… crashes=… corpus=BEFORE->AFTER
# Exit status: 0 without a crash, 1 with one.
set -euo pipefail

target=${1:?usage: scripts/fuzz.sh TARGET MINUTES}
minutes=${2:?usage: scripts/fuzz.sh TARGET MINUTES}
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root/fuzz"

if ! grep -q "^name = \"$target\"" Cargo.toml; then
  echo "fuzz.sh: no fuzz target named $target in fuzz/Cargo.toml" >&2
  exit 2
fi
if ! cargo fuzz --version >/dev/null 2>&1; then
  cargo install cargo-fuzz --locked
fi

export RUSTC_BOOTSTRAP=1
nice -n "${FUZZ_NICE:-19}" cargo fuzz build -s none "$target"

mkdir -p "corpus/$target" "regressions/$target" "artifacts/$target"
corpus_before=$(find "corpus/$target" -type f | wc -l)
marker=$(mktemp)
log=$(mktemp)
trap 'rm -f "$marker" "$log" "${times_file:-}"' EXIT

# New inputs go into corpus/TARGET (the first directory); the saved findings are read
# too, so a regression is caught at once. Children's CPU time is read from bash's
# `times` before and after: the fuzzer runs in one process on one core.
# (`times` must run in this shell, not in a `$(…)` subshell, which has no children.)
times_file=$(mktemp)
children_cpu() {
  awk 'NR == 2 { split($1,u,"m"); split($2,s,"m"); printf "%.1f", u[1]*60+u[2]+s[1]*60+s[2] }' "$times_file"
}
times >"$times_file"
cpu_before=$(children_cpu)
set +e
nice -n "${FUZZ_NICE:-19}" cargo fuzz run -s none "$target" "corpus/$target" "regressions/$target" -- \
  -max_total_time=$((minutes * 60)) -rss_limit_mb=2048 -print_final_stats=1 \
  -artifact_prefix="artifacts/$target/" 2>&1 | tee "$log" | grep -E "^(#[0-9]+.*(pulse|DONE|REDUCE|NEW)|stat::|==|SUMMARY|thread '.*' panicked)" | tail -n 40
status=${PIPESTATUS[0]}
set -e
times >"$times_file"
cpu_after=$(children_cpu)

# libFuzzer also writes `slow-unit-*` files: inputs that took longer than 10 s of wall
# time, which on a niced fuzzer sharing a busy machine are mostly waits for the CPU (the
# 2026-12-06 campaign's took 35 s of wall time there and 66-141 ms when re-run alone).
# They are reported, not saved as regressions; re-time one with
# `fuzz/target/x86_64-unknown-linux-gnu/release/TARGET FILE`.
crashes=0
slow=0
while IFS= read -r -d '' found; do
  case "$(basename "$found")" in
    slow-unit-*)
      echo "fuzz.sh: slow input (not a crash) left in $found" >&2
      slow=$((slow + 1))
      continue
      ;;
  esac
  cp "$found" "regressions/$target/$(basename "$found")"
  echo "fuzz.sh: crash saved as fuzz/regressions/$target/$(basename "$found")" >&2
  crashes=$((crashes + 1))
done < <(find "artifacts/$target" -type f -newer "$marker" -print0)

runs=$(grep -o 'stat::number_of_executed_units: [0-9]*' "$log" | awk '{ print $2 }' | tail -n 1)
if [ -z "$runs" ]; then
  runs=$(grep -oE '^#[0-9]+' "$log" | tail -n 1 | tr -d '#')
fi

# Minimise: keep only inputs that add coverage, so the committed corpus stays small.
nice -n "${FUZZ_NICE:-19}" cargo fuzz cmin -s none "$target" "corpus/$target" >/dev/null 2>&1 || \
  echo "fuzz.sh: cmin failed; corpus/$target left unminimised" >&2
corpus_after=$(find "corpus/$target" -type f | wc -l)

cpu_seconds=$(awk -v a="$cpu_before" -v b="$cpu_after" 'BEGIN { printf "%.0f", b - a }')
echo "fuzz campaign: target=$target minutes=$minutes runs=${runs:-0} cpu_seconds=$cpu_seconds crashes=$crashes slow_inputs=$slow corpus=$corpus_before->$corpus_after"
# libFuzzer exits 72 when interrupted (SIGINT ends a campaign early): not a failure.
if [ "$crashes" -gt 0 ] || { [ "$status" -ne 0 ] && [ "$status" -ne 72 ]; }; then
  exit 1
fi
