#!/usr/bin/env bash
# Fuzzes every file format retbench reads (retbench_harness::readers) under
# AFL++ through afl.rs, on stable Rust, for SECONDS each (default 60):
#   scripts/fuzz.sh [SECONDS]
# Installs cargo-afl when it is missing (it builds AFL++ itself; a C compiler
# and make are enough). Seeds: fuzz/corpus/<format>/. Prints the executions
# and crashes per format; a crash is copied to fuzz/regressions/<format>/
# (commit it: crates/harness/tests/fuzz_regressions.rs replays it) and the
# script exits 1. If AFL++ cannot run here at all (no shared memory, say),
# it says so and exits 3, so that CI can warn instead of failing. The instrumented build keeps its own target dir
# (RETBENCH_FUZZ_TARGET, default ~/.cache/retbench/fuzz-target).
set -euo pipefail
cd "$(dirname "$0")/.."
secs="${1:-60}"
command -v cargo-afl >/dev/null || cargo install --locked cargo-afl
export CARGO_TARGET_DIR="${RETBENCH_FUZZ_TARGET:-$HOME/.cache/retbench/fuzz-target}"
(cd fuzz && cargo afl build --release --quiet)
bin="$CARGO_TARGET_DIR/release/readers"
out="$(mktemp -d)"
trap 'rm -rf "$out"' EXIT
# A container has no core-dump handler and no CPU governor to set; the
# fuzzer's defaults would refuse to start.
export AFL_NO_UI=1 AFL_SKIP_CPUFREQ=1 AFL_I_DONT_CARE_ABOUT_MISSING_CRASHES=1 AFL_NO_AFFINITY=1
status=0
unrun=0
for format in suite snapshot checkpoint run_record results_csv metrics_json plan_json; do
  cargo afl fuzz -i "fuzz/corpus/$format" -o "$out/$format" -V "$secs" -t 5000 -- "$bin" "$format" \
    > "$out/$format.log" 2>&1 || {
    echo "$format: AFL++ did not run:"
    grep -a -m3 "ABORT\|Location\|shmget" "$out/$format.log" || tail -3 "$out/$format.log"
    unrun=1
    continue
  }
  stats="$out/$format/default/fuzzer_stats"
  execs="$(awk '/^execs_done/ {print $3}' "$stats")"
  crashes=("$out/$format/default/crashes"/id*)
  n=0
  if [ -e "${crashes[0]}" ]; then
    n=${#crashes[@]}
    mkdir -p "fuzz/regressions/$format"
    for c in "${crashes[@]}"; do cp "$c" "fuzz/regressions/$format/$(sha256sum "$c" | cut -c1-16)"; done
    status=1
  fi
  echo "$format: $execs executions in ${secs}s, $n crashes"
done
if [ "$status" -eq 0 ] && [ "$unrun" -eq 1 ]; then
  exit 3
fi
exit $status
