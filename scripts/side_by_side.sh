#!/usr/bin/env bash
# Two retbench binaries measured side by side in one invocation, rounds
# alternating (the machine's drift hits both alike): training tokens/s
# (`train-bench`, d_model 64 and 128, with and without retention) and the
# 1e6-slot dense read (a scaling run at d 64 and 128, batch 1 and 64).
# Prints the median of the rounds per measurement and new/old.
#   scripts/side_by_side.sh OLD_BINARY NEW_BINARY [ROUNDS]
# Run it on a quiet machine (nothing else on the cores).
set -euo pipefail
[ $# -ge 2 ] || { echo "usage: $0 OLD_BINARY NEW_BINARY [ROUNDS]" >&2; exit 2; }
old="$1"; new="$2"; rounds="${3:-3}"
for b in "$old" "$new"; do [ -x "$b" ] || { echo "$b: not an executable" >&2; exit 2; }; done
scratch="$(mktemp -d)"
trap 'rm -rf "$scratch"' EXIT
cat > "$scratch/read.yaml" <<'YAML'
name: side-by-side-read
base:
  task: { kind: scaling, d: 64, batches: [1, 64], queries: 200, min_reads: 20, warmup: 3, writes: 1, eps: [0.0], probes: 8 }
  retention: { slots: 1000000, read: { kind: dense }, write: { kind: append, evict: fifo }, keys: recompute }
seeds: [0]
grid:
  task.d: [64, 128]
YAML
for r in $(seq "$rounds"); do
  for side in old new; do
    bin="$old"; [ "$side" = new ] && bin="$new"
    "$bin" train-bench --d-model 64,128 --steps 20 --format jsonl 2>/dev/null \
      | sed "s/^/$side train /" >> "$scratch/rows"
    out="$scratch/$side-$r"
    "$bin" run "$scratch/read.yaml" --out "$out" --jobs 1 --no-report --quiet
    grep ',read_us_p50,' "$out/results.csv" | sed "s/^/$side read /" >> "$scratch/rows"
  done
done
python3 - "$scratch/rows" <<'PY'
import json, statistics, sys
data = {}
for line in open(sys.argv[1]):
    side, kind, rest = line.rstrip("\n").split(" ", 2)
    if kind == "train":
        r = json.loads(rest)
        key = f"train tokens/s d={r['d_model']} retention={r['retention']}"
        data.setdefault(key, {}).setdefault(side, []).append(r["tokens_per_s"])
    else:
        cols = rest.split(",")
        # run_id,suite,variant,seed,metric,slice,step,value,task.d
        key = f"1e6-slot dense read us/query d={cols[8]} {cols[5]}"
        data.setdefault(key, {}).setdefault(side, []).append(float(cols[7]))
print("| measurement | old (median) | new (median) | new/old | rounds |")
print("|---|---:|---:|---:|---:|")
for key, sides in sorted(data.items()):
    if set(sides) != {"old", "new"}:
        # A row one binary lacks (train-bench's retention row names its
        # memory since issue 29): shown, not compared.
        side, values = next(iter(sides.items()))
        print(f"| {key} | {side} only: {statistics.median(values):.4g} | | | {len(values)} |")
        continue
    o, n = statistics.median(sides["old"]), statistics.median(sides["new"])
    print(f"| {key} | {o:.4g} | {n:.4g} | {n / o:.3f} | {len(sides['old'])} |")
PY
