#!/usr/bin/env bash
# Runs a suite's runs one per core in the order of an id list, so that a
# sweep cut short leaves whole cells done (cheap cells first) rather than
# the plan's order. Resumable: runs already in OUT are skipped by `run`.
#   scripts/run_queue.sh SUITE OUT IDS_FILE [CORES]
# IDS_FILE: one run id a line (`retbench plan SUITE --format ids`, reordered).
# Each worker takes the next id under a lock and runs it pinned to its core
# with one kernel thread and --require-clean (records name a commit).
# RETBENCH overrides the binary (default: target/release/retbench); PROFILE
# applies a profile of the suite (the ids must be that profile's).
set -euo pipefail
[ $# -ge 3 ] || { echo "usage: $0 SUITE OUT IDS_FILE [CORES]" >&2; exit 2; }
suite="$1" out="$2" ids="$3" cores="${4:-$(nproc)}"
rb="${RETBENCH:-target/release/retbench}"
queue="$(mktemp)"
cp "$ids" "$queue"
trap 'rm -f "$queue" "$queue.lock"' EXIT
worker() {
  local core="$1" id
  while true; do
    id="$(flock "$queue.lock" sh -c 'id=$(head -n1 "$1"); [ -n "$id" ] && sed -i 1d "$1"; echo "$id"' _ "$queue")"
    [ -n "$id" ] || return 0
    echo "$(date -u +%T) core $core: $id"
    taskset -c "$core" "$rb" run "$suite" ${PROFILE:+--profile "$PROFILE"} --out "$out" --id "$id" \
      --jobs 1 --no-report --require-clean -q ||
      echo "$(date -u +%T) core $core: $id failed (see $out/failures.csv)"
  done
}
for ((c = 0; c < cores; c++)); do worker "$c" & done
wait
"$rb" report "$out"
