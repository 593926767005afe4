#!/usr/bin/env python3
"""FAISS peers of the scaling suites' reads, side by side in one process,
one thread: exact flat inner-product search (batch 1 and 64), IVF (flat and
SQ8 lists, nprobe 2-64) and HNSW (M = 32) over clustered keys built with the scaling task's recipe (a
mixture of `clusters` Gaussians with `spread`, rows centred and scaled to
norm sqrt(d)); plus the one-thread STREAM triad, so that every time can be
read as a fraction of the same run's bandwidth.

    python3 -m venv ~/.venvs/faiss && ~/.venvs/faiss/bin/pip install faiss-cpu numpy
    ~/.venvs/faiss/bin/python scripts/faiss_scan.py --slots 1000000 --d 32 [--ivf] [--hnsw]

Prints one JSON object. Compare with `retbench run suites/scaling-index.yaml`
(read_us_p50, recall_at_k, build_s) measured on the same machine in the
same sitting.
The keys are drawn by numpy, not by retbench's streams: the same
distribution, not the same vectors.
"""
import argparse
import json
import time

import faiss
import numpy as np


def clustered(m, d, clusters, spread, rng):
    centres = rng.standard_normal((clusters, d)).astype(np.float32)
    x = centres[rng.integers(0, clusters, m)] + spread * rng.standard_normal((m, d)).astype(np.float32)
    x -= x.mean(axis=0, keepdims=True)
    x *= np.sqrt(d) / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)
    return np.ascontiguousarray(x, dtype=np.float32)


def triad_gbps(n=32 << 20, reps=3):
    b = np.ones(n, np.float32)
    c = np.full(n, 2.0, np.float32)
    a = np.zeros(n, np.float32)
    best = float("inf")
    for _ in range(reps):
        t = time.perf_counter()
        np.multiply(c, 3.0, out=a)
        np.add(a, b, out=a)
        best = min(best, time.perf_counter() - t)
    # numpy's triad takes two passes over a; count STREAM's 3 arrays once.
    return 12 * n / best / 1e9


def per_query_us(index, q, k, batch, calls):
    times = []
    for i in range(calls):
        rows = q[(i * batch) % len(q):][:batch]
        if len(rows) < batch:
            rows = q[:batch]
        t = time.perf_counter()
        index.search(rows, k)
        times.append((time.perf_counter() - t) * 1e6 / batch)
    return float(np.median(times))


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--slots", type=int, default=1_000_000)
    p.add_argument("--d", type=int, default=64, help="key width (the scaling task's keys are d/2 of its d)")
    p.add_argument("--k", type=int, default=32)
    p.add_argument("--clusters", type=int, default=16)
    p.add_argument("--spread", type=float, default=0.5)
    p.add_argument("--queries", type=int, default=64)
    p.add_argument("--hnsw", action="store_true", help="also build HNSW (M=32); slow at 1e6")
    p.add_argument("--ivf", action="store_true",
                   help="also build IVF (sqrt(slots) lists; flat and SQ8 codes) and sweep nprobe")
    p.add_argument("--seed", type=int, default=0)
    a = p.parse_args()
    faiss.omp_set_num_threads(1)
    rng = np.random.default_rng(a.seed)
    keys = clustered(a.slots, a.d, a.clusters, a.spread, rng)
    picks = rng.integers(0, a.slots, a.queries)
    q = keys[picks] + 0.1 * rng.standard_normal((a.queries, a.d)).astype(np.float32)
    out = {"slots": a.slots, "d": a.d, "k": a.k, "threads": 1, "faiss": faiss.__version__}
    out["triad_gbps"] = triad_gbps()
    flat = faiss.IndexFlatIP(a.d)
    flat.add(keys)
    out["flat_us_batch1"] = per_query_us(flat, q, a.k, 1, 20)
    out["flat_us_batch64"] = per_query_us(flat, q, a.k, min(64, a.queries), 5)
    out["flat_fraction_of_triad"] = 4 * a.slots * a.d / (out["flat_us_batch1"] * 1e-6) / 1e9 / out["triad_gbps"]
    _, truth = flat.search(q, a.k)

    def recall(got):
        return float(np.mean([len(set(g) & set(t)) / a.k for g, t in zip(got, truth)]))

    if a.ivf:
        lists = max(1, round(np.sqrt(a.slots)))
        for name, make in [
            ("ivf_flat", lambda qz: faiss.IndexIVFFlat(qz, a.d, lists, faiss.METRIC_INNER_PRODUCT)),
            ("ivf_sq8", lambda qz: faiss.IndexIVFScalarQuantizer(
                qz, a.d, lists, faiss.ScalarQuantizer.QT_8bit, faiss.METRIC_INNER_PRODUCT)),
        ]:
            quantizer = faiss.IndexFlatIP(a.d)
            index = make(quantizer)
            t = time.perf_counter()
            index.train(keys)
            index.add(keys)
            out[f"{name}_build_s"] = time.perf_counter() - t
            for probe in [2, 4, 8, 16, 32, 64]:
                index.nprobe = probe
                _, got = index.search(q, a.k)
                out[f"{name}_probe{probe}"] = {
                    "us": per_query_us(index, q, a.k, 1, 20),
                    "recall_at_k": recall(got),
                }
    if a.hnsw:
        t = time.perf_counter()
        h = faiss.IndexHNSWFlat(a.d, 32, faiss.METRIC_INNER_PRODUCT)
        h.add(keys)
        out["hnsw_build_s"] = time.perf_counter() - t
        for ef in [32, 64, 128, 256]:
            h.hnsw.efSearch = ef
            _, got = h.search(q, a.k)
            out[f"hnsw_ef{ef}"] = {"us": per_query_us(h, q, a.k, 1, 20), "recall_at_k": recall(got)}
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
