#!/usr/bin/env bash
# Instruction counts of the hot kernels (crates/core/benches/instructions.rs,
# gungraun under Valgrind's Callgrind) against reports/baselines/instructions.json.
#
#   scripts/instructions.sh check [TOLERANCE_PCT]   exit 1 when a count grew by more
#                                                   than the tolerance (default: the
#                                                   baseline's, 2%); a Markdown table
#   scripts/instructions.sh refresh                 rewrite the baseline (commit it on
#                                                   its own, saying why counts moved)
#
# Counts are the same on every run of one binary (measured: equal, or within
# 0.1% for the layer write's allocator path), so the tolerance is tight, unlike
# wall-clock timings. They depend on the compiler and on the CPU features
# Valgrind reports (AVX2, never AVX-512): the baseline records rustc and
# valgrind, and on another toolchain the check shows the counts without
# gating them.
#
# Needs valgrind (Debian package) and gungraun-runner of the version in
# Cargo.lock: taken from GUNGRAUN_RUNNER, else installed once with cargo into
# ${RETBENCH_TOOLS:-$HOME/.cache/retbench/tools}.
set -euo pipefail
cd "$(dirname "$0")/.."
mode="${1:-check}"
case "$mode" in
  check|refresh) ;;
  *) echo "usage: scripts/instructions.sh check [TOLERANCE_PCT] | refresh (not \"$mode\")" >&2; exit 2 ;;
esac
if [ -n "${2:-}" ] && ! [[ "$2" =~ ^[0-9]+([.][0-9]+)?$ ]]; then
  echo "scripts/instructions.sh: tolerance \"$2\" is not a percentage (e.g. 2 or 0.5)" >&2; exit 2
fi
baseline="reports/baselines/instructions.json"
command -v valgrind >/dev/null || { echo "valgrind not found (apt install valgrind)" >&2; exit 2; }
version="$(awk '/^name = "gungraun"$/ { getline; gsub(/[^0-9.]/, ""); print; exit }' Cargo.lock)"
test -n "$version" || { echo "gungraun is not in Cargo.lock" >&2; exit 2; }
if [ -z "${GUNGRAUN_RUNNER:-}" ]; then
  tools="${RETBENCH_TOOLS:-$HOME/.cache/retbench/tools}"
  GUNGRAUN_RUNNER="$tools/bin/gungraun-runner"
  if ! "$GUNGRAUN_RUNNER" --version 2>/dev/null | grep -qF "$version"; then
    echo "installing gungraun-runner $version into $tools"
    cargo install --quiet --locked --version "$version" --root "$tools" gungraun-runner
  fi
fi
export GUNGRAUN_RUNNER
out="$(mktemp)"
trap 'rm -f "$out"' EXIT
cargo bench --quiet --locked -p retbench-core --bench instructions -- --output-format=json > "$out"
python3 - "$mode" "$baseline" "$out" "${2:-}" "$(rustc --version)" "$(valgrind --version)" <<'PY'
import json, sys
mode, path, out, tol_arg, rustc, valgrind = sys.argv[1:]
counts = {}
for line in open(out, encoding="utf-8"):
    line = line.strip()
    if not line.startswith("{"):
        continue
    b = json.loads(line)
    name = f"{b['group']}::{b['function_name']}.{b['id']}"
    ir = 0
    for profile in b["profiles"]:
        for part in profile["data"]["parts"]:
            # A part (a thread) only the previous run had carries "old"
            # alone: it is not part of this run's count.
            ir += part["metrics"]["Ir"]["values"].get("new", 0)
    counts[name] = ir
if not counts:
    sys.exit("no benchmark results in the bench's output")
if mode == "refresh":
    doc = {
        "about": "instructions (Callgrind Ir) per call of each kernel bench; scripts/instructions.sh",
        "tolerance_pct": 2.0,
        "rustc": rustc,
        "valgrind": valgrind,
        "instructions": dict(sorted(counts.items())),
    }
    with open(path, "w", encoding="utf-8") as f:
        json.dump(doc, f, indent=2)
        f.write("\n")
    print(f"wrote {path}: {len(counts)} benches")
    sys.exit(0)
if mode != "check":
    sys.exit(f"unknown mode {mode!r}: check or refresh")
base = json.load(open(path, encoding="utf-8"))
tol = float(tol_arg) if tol_arg else float(base["tolerance_pct"])
# Counts are of one compiler's code under one Valgrind: across toolchains
# they are shown, not gated.
comparable = base.get("rustc") == rustc and base.get("valgrind") == valgrind
if not comparable:
    print(f"note: baseline from {base.get('rustc')}, {base.get('valgrind')}; this is {rustc}, {valgrind}:")
    print("counts shown, not gated (`just baseline-instructions` on this toolchain to gate)\n")
print(f"| bench | baseline | now | change | |\n|---|---:|---:|---:|---|")
regressed = 0
for name in sorted(set(counts) | set(base["instructions"])):
    old, new = base["instructions"].get(name), counts.get(name)
    if old is None or new is None:
        status = "new (refresh the baseline)" if old is None else "missing"
        regressed += new is None
        print(f"| {name} | {old if old is not None else '–'} | {new if new is not None else '–'} | | {status} |")
        continue
    change = 100.0 * (new - old) / old
    status = "REGRESSED" if change > tol else ("fewer: refresh the baseline" if change < -tol else "same")
    regressed += status == "REGRESSED"
    print(f"| {name} | {old} | {new} | {change:+.2f}% | {status} |")
print(f"\n{regressed} regressed beyond +{tol}% of {len(counts)} benches")
sys.exit(1 if regressed and comparable else 0)
PY
