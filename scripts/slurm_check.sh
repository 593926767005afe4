#!/usr/bin/env bash
# `retbench slurm` against a real Slurm (CI): installs and starts a
# single-node cluster (scripts/slurm_cluster.sh), then
#   1. submits the scaling and recall smoke profiles with 3 array tasks,
#      waits for their report jobs, and holds each folder to a local `run`
#      of the same suite (non-timing rows of results.csv equal, report drawn);
#   2. shows that check failing on a deliberately perturbed shard's record;
#   3. cancels one array task of a fresh recall submission (scancel) before
#      it starts, sees its runs missing in `slurm status`, runs `slurm
#      resume`, and checks that the sweep completes with the same results.
# Stops the cluster on exit.
#   scripts/slurm_check.sh        (RETBENCH: the binary; default target/release/retbench)
set -euo pipefail
cd "$(dirname "$0")/.."
rb="$(realpath "${RETBENCH:-target/release/retbench}")"
t0=$(date +%s)
scripts/slurm_cluster.sh install
scripts/slurm_cluster.sh start
trap 'scripts/slurm_cluster.sh stop' EXIT
eval "$(scripts/slurm_cluster.sh env)"
echo "cluster installed and up in $(($(date +%s) - t0)) s"
work="$(mktemp -d)"
trap 'scripts/slurm_cluster.sh stop; rm -rf "$work"' EXIT

# Waits until none of the given jobs is queued or running (at most 10 min).
wait_jobs() {
  local ids; ids="$(IFS=,; echo "$*")"
  for _ in $(seq 600); do
    [ -z "$(squeue -h -j "$ids" 2>/dev/null)" ] && return 0
    sleep 1
  done
  echo "jobs $ids still queued after 600 s:" >&2; squeue >&2; return 1
}
report_job() { sed -n 's/^report job \([0-9]*\).*/\1/p' "$1"; }
array_job() { sed -n 's/^array job \([0-9]*\).*/\1/p' "$1"; }

t1=$(date +%s)
jobs=()
for suite in scaling recall; do
  "$rb" slurm submit "suites/$suite.yaml" --profile smoke --out "$work/slurm/$suite" --tasks 3 | tee "$work/$suite.submit"
  jobs+=("$(report_job "$work/$suite.submit")")
done
for suite in scaling recall; do
  "$rb" run "suites/$suite.yaml" --profile smoke --out "$work/local/$suite" --no-report -q
done
wait_jobs "${jobs[@]}"
echo "slurm sweeps and local runs done in $(($(date +%s) - t1)) s"
for suite in scaling recall; do
  "$rb" slurm status "$work/slurm/$suite"
  test -s "$work/slurm/$suite/report.html" || { echo "no report for $suite"; exit 1; }
  grep -q "report.html\|summary rows" "$work/slurm/$suite"/slurm/logs/report-job-*.out
  python3 scripts/same_results.py "$work/local/$suite" "$work/slurm/$suite"
done

echo "== the check fails on a perturbed shard"
cp -r "$work/slurm/recall" "$work/perturbed"
record="$(ls "$work/perturbed/runs/"*.json | head -n1)"
python3 - "$record" <<'EOF'
import json, sys
path = sys.argv[1]
r = json.load(open(path))
m = next(m for m in r["metrics"] if m["metric"] == "accuracy")
m["value"] = m["value"] + 0.125
json.dump(r, open(path, "w"), indent=2)
EOF
"$rb" report "$work/perturbed" >/dev/null
if python3 scripts/same_results.py "$work/local/recall" "$work/perturbed"; then
  echo "same_results.py did not notice a perturbed shard"; exit 1
fi
echo "(failed as it must)"

echo "== resume after cancelling one array task"
# The array waits 5 s before it starts, so that task 1 is cancelled pending.
"$rb" slurm submit suites/recall.yaml --profile smoke --out "$work/resume" --tasks 3 \
  --extra-sbatch=--begin=now+5 | tee "$work/resume.submit"
a="$(array_job "$work/resume.submit")"
scancel "${a}_1"
wait_jobs "$(report_job "$work/resume.submit")"
"$rb" slurm status "$work/resume" | tee "$work/status.before"
grep -Eq '^1 +[0-9]+ +0 +0 +[1-9]' "$work/status.before" || { echo "shard 1 should have no runs done"; exit 1; }
"$rb" slurm resume "$work/resume" | tee "$work/resume.again"
grep -q '^array job [0-9]* (shards 1)$' "$work/resume.again" || { echo "resume should resubmit shard 1 only"; exit 1; }
wait_jobs "$(report_job "$work/resume.again")"
"$rb" slurm status "$work/resume" | tee "$work/status.after"
grep -Eq '^all +([0-9]+) +\1 +0 +0$' "$work/status.after" || { echo "the sweep is not complete after resume"; exit 1; }
python3 scripts/same_results.py "$work/local/recall" "$work/resume"
"$rb" slurm resume "$work/resume" 2>&1 | grep -q "nothing to resubmit"
echo "slurm check passed in $(($(date +%s) - t0)) s"
