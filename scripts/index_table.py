#!/usr/bin/env python3
"""The table of reports/scaling-index/README.md from the suite's summary:
`python3 scripts/index_table.py reports/scaling-index/summary.csv`."""
import csv, json, sys
rows = list(csv.DictReader(open(sys.argv[1])))
cfg = {}
for r in rows:
    if r["step"]: continue
    key = (r["variant"], r["retention.slots"], r["retention.read"], r["retention.keys"])
    cfg.setdefault(key, {})[(r["metric"], r["slice"])] = float(r["mean"])
def name(k):
    read = json.loads(k[2]); kind = read["kind"]
    if kind == "dense": return "dense"
    if kind == "ivf": return f"ivf probe {read.get('probe')}"
    if kind == "product_keys": return "product keys"
    return f"topk{read['k']}/{k[3]}"
def f(x, d=3):
    if x is None: return "–"
    if x >= 1000: return f"{x:.0f}"
    if x >= 100: return f"{x:.0f}"
    if x >= 10: return f"{x:.1f}"
    return f"{x:.{d}g}" if d else f"{x}"
print("| slots | read | read b1 µs | read b64 µs/q | recall@32 | build s | insert µs | evict µs | index MB | write µs | assoc ε=0.1 | triad GB/s | of triad |")
print("|---|---|---|---|---|---|---|---|---|---|---|---|---|")
items = sorted(cfg.items(), key=lambda kv: (int(kv[0][1]), name(kv[0])))
for k, m in items:
    g = lambda a, b="": m.get((a, b))
    ib = g("index_bytes")
    out = [f"{float(k[1]):.0e}".replace("e+0","e+0"), name(k), f(g("read_us_p50","batch=1")), f(g("read_us_p50","batch=64")),
           "–" if g("recall_at_k") is None else f"{g('recall_at_k'):.3f}",
           "–" if g("build_s") is None else f"{g('build_s'):.2f}",
           f(g("insert_us_p50")), f(g("evict_us_p50")),
           "–" if ib is None else f"{ib/1e6:.1f}",
           f(g("write_us_p50")), "–" if g("assoc_accuracy","eps=0.1") is None else f"{g('assoc_accuracy','eps=0.1'):.3f}",
           f(g("bandwidth_gbps")), "–" if g("read_roofline_fraction") is None else f"{g('read_roofline_fraction'):.3f}"]
    print("| " + " | ".join(out) + " |")
