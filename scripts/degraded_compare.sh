#!/usr/bin/env bash
# Shows that regression tracking catches a broken backend: builds retbench
# with `--features degraded-topk` (top-k reads pick random occupied slots),
# runs the scaling suite's smoke profile with it, and requires
# `retbench compare` against reports/baselines/scaling to fail (exit 1) with
# top-k rows marked REGRESSED; then requires the real build to pass the same
# comparison. Prints both tables. Run by .ci/run.
set -euo pipefail
cd "$(dirname "$0")/.."
target="${CARGO_TARGET_DIR:-target}"
scratch="$(mktemp -d)"
trap 'rm -rf "$scratch"' EXIT
# Same target dir: only the workspace crates rebuild with the feature; the
# binary is copied away before the real build replaces it.
cargo build --release --locked -p retbench-cli --features degraded-topk
cp "$target/release/retbench" "$scratch/retbench-degraded"
cargo build --release --locked -p retbench-cli
real="$target/release/retbench"

"$scratch/retbench-degraded" run suites/scaling.yaml --profile smoke --out "$scratch/degraded" -q
set +e
"$scratch/retbench-degraded" compare reports/baselines/scaling "$scratch/degraded" > "$scratch/degraded.md"
rc=$?
set -e
cat "$scratch/degraded.md"
if [ "$rc" -ne 1 ]; then
  echo "FAIL: compare exited $rc on the degraded build (expected 1)" >&2
  exit 1
fi
grep -q '^| REGRESSED | .*read={"k":32,"kind":"topk"}.* | recall_at_k ' "$scratch/degraded.md" || {
  echo "FAIL: no top-k recall_at_k regression in the table" >&2
  exit 1
}

"$real" run suites/scaling.yaml --profile smoke --out "$scratch/real" -q
"$real" compare reports/baselines/scaling "$scratch/real" > "$scratch/real.md" || {
  cat "$scratch/real.md"
  echo "FAIL: the real build does not pass its baseline" >&2
  exit 1
}
head -3 "$scratch/real.md"
echo "ok: the degraded build fails the comparison, the real build passes"
