#!/usr/bin/env python3
"""Prints the medians of the last `cargo bench -p retbench-core --bench memory` run as a
Markdown table (one row per benchmark, one column per slot count), read from
criterion's estimates under target/criterion (or $CARGO_TARGET_DIR)."""
import glob
import json
import os
import sys

target = os.environ.get("CARGO_TARGET_DIR", "target")
rows = {}
for path in sorted(glob.glob(os.path.join(target, "criterion", "*", "*", "*", "new", "estimates.json"))):
    group, name, size = path.split(os.sep)[-5:-2]
    if not size.isdigit():
        continue
    with open(path) as f:
        rows.setdefault(f"{group}/{name}", {})[int(size)] = json.load(f)["median"]["point_estimate"] / 1e3
if not rows:
    sys.exit(f"no criterion results under {target}/criterion: run `cargo bench -p retbench-core --bench memory` first")
sizes = sorted({s for v in rows.values() for s in v})
fmt = lambda us: f"{us:.1f} µs" if us < 1000 else f"{us / 1000:.2f} ms"
print("| benchmark (median) | " + " | ".join(f"{s:.0e} slots" for s in sizes) + " |")
print("|---" * (len(sizes) + 1) + "|")
for name, v in rows.items():
    print(f"| {name} | " + " | ".join(fmt(v[s]) if s in v else "" for s in sizes) + " |")
