#!/usr/bin/env bash
# Regression baselines: the smoke profile of every suite in suites/.
#   scripts/baselines.sh refresh   rerun them all and rewrite reports/baselines/
#                                  (commit that on its own: `just baseline`)
#   scripts/baselines.sh check     rerun them all into a scratch folder and
#                                  `retbench compare` each with its baseline;
#                                  exit 1 on a regression (what .ci/run does)
# A baseline keeps what `compare` reads (plan.json: the suite and profile it
# must match; results.csv, metrics.json) and the summary for people
# (summary.md); models and figures stay out of git.
# RETBENCH overrides the binary (default: cargo run --release --locked).
set -euo pipefail
cd "$(dirname "$0")/.."
mode="${1:-}"
case "$mode" in refresh | check) ;; *)
  echo "usage: $0 refresh|check" >&2
  exit 2
  ;;
esac
if [ -n "${RETBENCH:-}" ]; then
  rb() { "$RETBENCH" "$@"; }
else
  rb() { cargo run --release --locked --quiet -- "$@"; }
fi
scratch="$(mktemp -d)"
trap 'rm -rf "$scratch"' EXIT
# Failed runs are recorded in failures.csv and the run goes on; a baseline
# with failures would hide them, so both modes refuse one.
rb bench --profile smoke --out "$scratch" || true
status=0
for suite in suites/*.yaml; do
  name="$(basename "$suite" .yaml)"
  out="$scratch/$name"
  if [ ! -s "$out/results.csv" ] || [ "$(wc -l < "$out/failures.csv")" -ne 1 ]; then
    echo "$name: smoke runs failed or wrote nothing:" >&2
    cat "$out/failures.csv" >&2 2>/dev/null || true
    status=1
    continue
  fi
  case "$mode" in
  refresh)
    mkdir -p "reports/baselines/$name"
    cp "$out/plan.json" "$out/results.csv" "$out/metrics.json" "$out/summary.md" "reports/baselines/$name/"
    echo "reports/baselines/$name: $(($(wc -l < "$out/results.csv") - 1)) result rows"
    ;;
  check)
    if [ ! -d "reports/baselines/$name" ]; then
      echo "$name: no baseline (run: scripts/baselines.sh refresh)" >&2
      status=1
      continue
    fi
    report="$scratch/$name.compare.md"
    if rb compare "reports/baselines/$name" "$out" > "$report"; then
      echo "$name: $(grep -m1 '^\*\*' "$report")"
    else
      rc=$?
      echo "$name: regression against reports/baselines/$name" >&2
      status=$((rc > status ? rc : status))
    fi
    # Regressions and warnings in full (and in the CI step summary when
    # GitHub Actions provides one).
    if grep -q '^| ' "$report"; then cat "$report"; fi
    if [ -n "${GITHUB_STEP_SUMMARY:-}" ]; then cat "$report" >> "$GITHUB_STEP_SUMMARY"; fi
    ;;
  esac
done
exit "$status"
