#!/usr/bin/env python3
"""Whether two run folders hold the same results, timings aside.

    scripts/same_results.py EXPECTED ACTUAL

Compares the rows of EXPECTED/results.csv and ACTUAL/results.csv, keyed by
(run_id, metric, slice, step), leaving out the metrics EXPECTED/metrics.json
marks as timing (wall-clock values differ from run to run). Values must be
equal as written (retbench writes them exactly), parameters too. Prints each
difference and exits 1 on any; 0 when the same. Used by scripts/slurm_check.sh
to hold a Slurm sweep to a local run of the same suite.
"""
import csv
import json
import sys
from pathlib import Path


def rows(folder: Path, timing: set) -> dict:
    with open(folder / "results.csv", newline="") as f:
        out = {}
        for row in csv.DictReader(f):
            if row["metric"] in timing:
                continue
            key = (row["run_id"], row["metric"], row["slice"], row["step"])
            out[key] = row
        return out


def main() -> int:
    if len(sys.argv) != 3:
        print(__doc__.strip().splitlines()[2].strip(), file=sys.stderr)
        return 2
    expected, actual = Path(sys.argv[1]), Path(sys.argv[2])
    specs = json.loads((expected / "metrics.json").read_text())
    timing = {s["name"] for s in specs if s.get("timing")}
    a, b = rows(expected, timing), rows(actual, timing)
    problems = []
    for key in sorted(a.keys() - b.keys()):
        problems.append(f"missing in {actual}: {key}")
    for key in sorted(b.keys() - a.keys()):
        problems.append(f"not in {expected}: {key}")
    for key in sorted(a.keys() & b.keys()):
        if a[key] != b[key]:
            diff = {k: (a[key][k], b[key].get(k)) for k in a[key] if a[key][k] != b[key].get(k)}
            problems.append(f"differs: {key}: {diff}")
    for p in problems[:20]:
        print(p)
    if problems:
        print(f"{len(problems)} differences between {expected} and {actual} "
              f"({len(a)} rows compared, timings left out)")
        return 1
    print(f"same: {len(a)} rows of {expected} and {actual} (timings left out: {', '.join(sorted(timing)) or 'none'})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
