#!/usr/bin/env python3
"""Training throughput of retbench against PyTorch, side by side in one
invocation: the reference shape (2 layers, 4 heads, sequence 64, batch 32,
vocabulary 32, GELU FFN x4, pre-LN, AdamW, fp32) at d_model 64 and 128.

For each round and d_model it runs `retbench train-bench` (retbench's own
model, without and with a retention layer) and then a PyTorch model of the
same shape, alternating so that both see the same machine load, and prints
medians over rounds with the ratio retbench / PyTorch.

PyTorch is not a dependency of the build; install it outside the repository:

    python3 -m venv ~/.cache/retbench/torch-venv
    ~/.cache/retbench/torch-venv/bin/pip install torch numpy
    ~/.cache/retbench/torch-venv/bin/python scripts/train_throughput.py

Options: --threads N (default 2, for both), --steps N (timed steps per
measurement, default 30), --rounds N (default 3), --retbench PATH (default
target/release/retbench, or $CARGO_TARGET_DIR/release/retbench),
--kernels fused|unfused (passed to retbench).
"""
import argparse
import json
import os
import statistics
import subprocess
import sys
import time


def torch_tokens_per_s(d_model, steps, threads):
    import torch
    import torch.nn as nn
    import torch.nn.functional as F

    torch.set_num_threads(threads)
    torch.manual_seed(0)
    batch, seq, vocab, layers, heads = 32, 64, 32, 2, 4

    class Block(nn.Module):
        def __init__(self, d):
            super().__init__()
            self.ln1 = nn.LayerNorm(d)
            self.qkv = nn.Linear(d, 3 * d)
            self.proj = nn.Linear(d, d)
            self.ln2 = nn.LayerNorm(d)
            self.fc1 = nn.Linear(d, 4 * d)
            self.fc2 = nn.Linear(4 * d, d)

        def forward(self, x):
            b, t, d = x.shape
            q, k, v = self.qkv(self.ln1(x)).view(b, t, 3, heads, d // heads).unbind(2)
            q, k, v = (z.transpose(1, 2) for z in (q, k, v))
            z = F.scaled_dot_product_attention(q, k, v, is_causal=True)
            x = x + self.proj(z.transpose(1, 2).reshape(b, t, d))
            return x + self.fc2(F.gelu(self.fc1(self.ln2(x))))

    class Model(nn.Module):
        def __init__(self, d):
            super().__init__()
            self.tok = nn.Embedding(vocab, d)
            self.pos = nn.Embedding(seq, d)
            self.blocks = nn.ModuleList(Block(d) for _ in range(layers))
            self.ln_f = nn.LayerNorm(d)
            self.head = nn.Linear(d, vocab)

        def forward(self, tokens):
            x = self.tok(tokens) + self.pos(torch.arange(tokens.shape[1]))
            for blk in self.blocks:
                x = blk(x)
            return self.head(self.ln_f(x))

    model = Model(d_model)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=0.01)
    g = torch.Generator().manual_seed(0)
    data = torch.randint(0, vocab, (batch, seq + 1), generator=g)
    tokens, targets = data[:, :-1], data[:, 1:]

    def step():
        logits = model(tokens)
        loss = F.cross_entropy(logits.reshape(-1, vocab), targets.reshape(-1))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()

    step()  # warm-up
    rates = []
    for _ in range(steps):
        t = time.perf_counter()
        step()
        rates.append(batch * seq / (time.perf_counter() - t))
    return statistics.median(rates), torch.__version__


def flops_per_token(d, seq=64, layers=2, vocab=32, ffn=4):
    """Multiply-adds x 2 of one training step per token (forward, and a
    backward of twice the forward): the linear layers, causal attention
    (on average seq/2 keys per query for q.k and p.v), the output head."""
    linear = layers * (3 * d * d + d * d + 2 * ffn * d * d) + d * vocab
    attention = layers * 2 * (seq // 2) * d
    return 2 * 3 * (linear + attention)


def sgemm_peak(threads):
    """GFLOP/s of PyTorch's fp32 2048x2048 matmul: what the cores can do."""
    import torch

    torch.set_num_threads(threads)
    a, b = torch.randn(2048, 2048), torch.randn(2048, 2048)
    for _ in range(2):
        a @ b
    best = 0.0
    for _ in range(3):
        t = time.perf_counter()
        for _ in range(5):
            a @ b
        best = max(best, 5 * 2 * 2048**3 / (time.perf_counter() - t) / 1e9)
    return best


def retbench_tokens_per_s(binary, d_model, steps, threads, kernels):
    cmd = [binary, "train-bench", "--d-model", str(d_model), "--steps", str(steps),
           "--threads", str(threads), "--format", "jsonl"]
    if kernels:
        cmd += ["--kernels", kernels]
    out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
    rows = [json.loads(line) for line in out.splitlines() if line.startswith("{")]
    # "block 1": the reference retention layer (dense, 64 slots, empty).
    return {("none" if r["slots"] is None else "block 1"): r["tokens_per_s"] for r in rows}


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--steps", type=int, default=30)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--d-model", type=int, nargs="+", default=[64, 128])
    ap.add_argument("--kernels", choices=["fused", "unfused"])
    target = os.environ.get("CARGO_TARGET_DIR", "target")
    ap.add_argument("--retbench", default=os.path.join(target, "release", "retbench"))
    args = ap.parse_args()
    if not os.path.exists(args.retbench):
        sys.exit(f"{args.retbench} not found: `cargo build --release` first (or pass --retbench)")
    try:
        import torch  # noqa: F401
    except ImportError:
        sys.exit("PyTorch is not installed in this Python: see the header of this script")

    runs = {d: {"torch": [], "none": [], "block 1": []} for d in args.d_model}
    peak = []
    version = None
    for r in range(args.rounds):
        peak.append(sgemm_peak(args.threads))
        for d in args.d_model:
            ours = retbench_tokens_per_s(args.retbench, d, args.steps, args.threads, args.kernels)
            theirs, version = torch_tokens_per_s(d, args.steps, args.threads)
            runs[d]["torch"].append(theirs)
            for k, v in ours.items():
                runs[d][k].append(v)
            print(f"round {r + 1}/{args.rounds} d_model {d}: retbench {ours['none']:.0f} "
                  f"(with retention {ours['block 1']:.0f}), PyTorch {theirs:.0f} tokens/s",
                  file=sys.stderr, flush=True)
    print(f"\nPyTorch {version}, {args.threads} threads, median of {args.steps} steps per "
          f"measurement, {args.rounds} rounds; per-round values in brackets\n")
    print("| d_model | PyTorch tokens/s | retbench tokens/s | ratio | retbench + retention tokens/s | ratio |")
    print("|---|---|---|---|---|---|")
    fmt = lambda xs: f"{statistics.median(xs):.0f} ({' '.join(f'{x:.0f}' for x in xs)})"
    for d, v in runs.items():
        ratio = [a / b for a, b in zip(v["none"], v["torch"])]
        ratio_ret = [a / b for a, b in zip(v["block 1"], v["torch"])]
        print(f"| {d} | {fmt(v['torch'])} | {fmt(v['none'])} | {statistics.median(ratio):.2f}x "
              f"| {fmt(v['block 1'])} | {statistics.median(ratio_ret):.2f}x |")
    p = statistics.median(peak)
    print(f"\nfp32 matmul peak (PyTorch, 2048x2048, {args.threads} threads): {p:.0f} GFLOP/s "
          f"({' '.join(f'{x:.0f}' for x in peak)}). Training arithmetic, as a share of it:\n")
    print("| d_model | GFLOP per token | PyTorch GFLOP/s | % of peak | retbench GFLOP/s | % of peak | 1.5x PyTorch would need |")
    print("|---|---|---|---|---|---|---|")
    for d, v in runs.items():
        f = flops_per_token(d)
        ours, theirs = statistics.median(v["none"]) * f / 1e9, statistics.median(v["torch"]) * f / 1e9
        print(f"| {d} | {f / 1e9 * 1e3:.2f}e-3 | {theirs:.0f} | {100 * theirs / p:.0f}% | {ours:.0f} "
              f"| {100 * ours / p:.0f}% | {100 * 1.5 * theirs / p:.0f}% of peak |")


if __name__ == "__main__":
    main()
