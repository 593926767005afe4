#!/usr/bin/env python3
"""Independent PyTorch reference of retbench's recall suite (retention variant):
same task layout, same model (pre-LN, learned positions, GELU FFN x4, retention
in block 1 with post-norm LN(X+Z+R), token writes stored unprojected, dense
read, 4 heads), PyTorch's default nn.Linear init, N(0,1) embeddings, AdamW
(wd 0.01, clip 1.0), warmup 5% then cosine to 10%. Not bit-identical (its
own RNG): it separates the recipe from the harness.

PyTorch is not a dependency of the build; install it outside the repository:

    python3 -m venv ~/.cache/retbench/torch-venv
    ~/.cache/retbench/torch-venv/bin/pip install torch numpy
    ~/.cache/retbench/torch-venv/bin/python scripts/torch_recall.py --d 128 --lr 3e-3 --seeds 100 101

Options: --d (width), --lr, --lr-width W (weight matrices at lr*W/d, as
train.lr_width; 0: one lr), --steps, --seeds, --keys/--values/--pairs,
--qs/--qn (queries per session), --threads. Prints, per seed, the first
evaluation step with gap=1 accuracy above 0.9 (0: never), the final gap=0
and gap=1 accuracy and the gap=1 curve (every 100 steps, 256 held-out
episodes).
"""
import argparse, math, time
import numpy as np
import torch, torch.nn as nn, torch.nn.functional as F

def episodes(rng, B, K, V, P, QS, QN):
    Q, PAD = K + V, K + V + 1
    L1, L2 = 2 * P + 3 * QS, 3 * QN
    out = []
    toks = [np.full((B, L), PAD, np.int64) for L in (L1, L2)]
    tgts = [np.full((B, L), PAD, np.int64) for L in (L1, L2)]
    for b in range(B):
        keys = rng.permutation(K)[:P]
        vals = K + rng.integers(0, V, P)
        s1 = [x for k, v in zip(keys, vals) for x in (k, v)]
        for i in rng.permutation(P)[:QS]: s1 += [Q, keys[i], vals[i]]
        s2 = []
        for i in rng.permutation(P)[:QN]: s2 += [Q, keys[i], vals[i]]
        for si, (seq, facts) in enumerate(((s1, 2 * P), (s2, 0))):
            toks[si][b, :len(seq)] = seq
            for t in range(len(seq) - 1):
                if t > facts and (t - facts) % 3 == 1 and seq[t - 1] == Q:
                    tgts[si][b, t] = seq[t + 1]
    return [(torch.tensor(a), torch.tensor(t)) for a, t in zip(toks, tgts)], PAD

class Attn(nn.Module):
    def __init__(s, d, h):
        super().__init__(); s.qkv = nn.Linear(d, 3 * d); s.proj = nn.Linear(d, d); s.h = h
    def forward(s, x):
        B, T, D = x.shape
        q, k, v = s.qkv(x).view(B, T, 3, s.h, D // s.h).permute(2, 0, 3, 1, 4)
        y = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        return s.proj(y.transpose(1, 2).reshape(B, T, D))

class Retention(nn.Module):
    def __init__(s, d, h):
        super().__init__(); s.h = h
        s.ln_q = nn.LayerNorm(d); s.ln_out = nn.LayerNorm(d)
        s.w_q = nn.Linear(d, d, bias=False); s.w_k = nn.Linear(d, d, bias=False)
        s.w_v = nn.Linear(d, d, bias=False); s.w_o = nn.Linear(d, d, bias=False)
    def forward(s, x, z, mem):
        h = x + z
        if mem is not None:
            B, T, D = h.shape; m = mem.shape[1]; dk = D // s.h
            q = s.w_q(s.ln_q(h)).view(B, T, s.h, dk).transpose(1, 2)
            k = s.w_k(mem).view(B, m, s.h, dk).transpose(1, 2)
            v = s.w_v(mem).view(B, m, s.h, dk).transpose(1, 2)
            w = torch.softmax(q @ k.transpose(-1, -2) / math.sqrt(dk), -1)
            h = h + s.w_o((w @ v).transpose(1, 2).reshape(B, T, D))
        return s.ln_out(h)

class Model(nn.Module):
    def __init__(s, vocab, maxlen, d, layers=2, heads=4, ret_at=1):
        super().__init__()
        s.tok = nn.Embedding(vocab, d); s.pos = nn.Embedding(maxlen, d)
        s.blocks = nn.ModuleList()
        for _ in range(layers):
            s.blocks.append(nn.ModuleDict(dict(ln1=nn.LayerNorm(d), attn=Attn(d, heads), ln2=nn.LayerNorm(d),
                                               fc1=nn.Linear(d, 4 * d), fc2=nn.Linear(4 * d, d))))
        s.ret_at = ret_at; s.ret = Retention(d, heads)
        s.ln_f = nn.LayerNorm(d); s.head = nn.Linear(d, vocab)
    def forward(s, tok, mem):
        x = s.tok(tok) + s.pos(torch.arange(tok.shape[1]))[None]
        hidden = None
        for l, b in enumerate(s.blocks):
            z = b["attn"](b["ln1"](x))
            if l == s.ret_at:
                x = s.ret(x, z, mem); hidden = x
            else:
                x = x + z
            x = x + b["fc2"](F.gelu(b["fc1"](b["ln2"](x)), approximate="tanh"))
        return s.head(s.ln_f(x)), hidden

def loss_and_acc(model, sess, pad):
    (t1, y1), (t2, y2) = sess
    l1, hid = model(t1, None)
    l2, _ = model(t2, hid)
    out = []
    for lg, y in ((l1, y1), (l2, y2)):
        m = y != pad
        out.append((F.cross_entropy(lg[m], y[m]), (lg[m].argmax(-1) == y[m]).float().mean().item()))
    return (out[0][0] + out[1][0]) / 2, out[0][1], out[1][1]

def run(a, seed):
    torch.manual_seed(seed); rng = np.random.default_rng(seed)
    ev_rng = np.random.default_rng(10_000 + seed)
    vocab = a.keys + a.values + 2; maxlen = max(2 * a.pairs + 3 * a.qs, 3 * a.qn)
    model = Model(vocab, maxlen, a.d)
    mat = [p for n, p in model.named_parameters() if p.dim() == 2 and not n.startswith(("tok", "pos"))]
    rest = [p for n, p in model.named_parameters() if not (p.dim() == 2 and not n.startswith(("tok", "pos")))]
    mult = (a.lr_width / a.d) if a.lr_width else 1.0
    opt = torch.optim.AdamW([dict(params=mat, m=mult), dict(params=rest, m=1.0)], lr=a.lr, weight_decay=0.01)
    warm = max(1, a.steps // 20)
    evalset = [episodes(ev_rng, 128, a.keys, a.values, a.pairs, a.qs, a.qn) for _ in range(2)]
    bound_at, curve = 0, []
    for step in range(a.steps):
        lr = a.lr * (step + 1) / warm if step < warm else a.lr * (0.1 + 0.45 * (1 + math.cos(math.pi * min(1, (step - warm) / max(1, a.steps - warm)))))
        for g in opt.param_groups: g["lr"] = lr * g["m"]
        sess, pad = episodes(rng, 32, a.keys, a.values, a.pairs, a.qs, a.qn)
        loss, _, _ = loss_and_acc(model, sess, pad)
        opt.zero_grad(); loss.backward(); nn.utils.clip_grad_norm_(model.parameters(), 1.0); opt.step()
        if (step + 1) % 100 == 0:
            with torch.no_grad():
                accs = [loss_and_acc(model, s, p)[1:] for s, p in evalset]
            g0, g1 = np.mean([x[0] for x in accs]), np.mean([x[1] for x in accs])
            curve.append(g1)
            if g1 > 0.9 and not bound_at: bound_at = step + 1
    print(f"d{a.d} lr{a.lr} lr_width{a.lr_width} K{a.keys} s{seed}: bound_at {bound_at} gap0 {g0:.3f} gap1 {g1:.3f} | " + " ".join(f"{c:.2f}" for c in curve), flush=True)

if __name__ == "__main__":
    p = argparse.ArgumentParser()
    p.add_argument("--d", type=int, default=64); p.add_argument("--lr", type=float, default=3e-3)
    p.add_argument("--lr-width", type=int, default=0); p.add_argument("--steps", type=int, default=1500)
    p.add_argument("--seeds", type=int, nargs="+", default=[100]); p.add_argument("--keys", type=int, default=16)
    p.add_argument("--values", type=int, default=16); p.add_argument("--pairs", type=int, default=8)
    p.add_argument("--qs", type=int, default=4); p.add_argument("--qn", type=int, default=8)
    p.add_argument("--threads", type=int, default=1)
    a = p.parse_args(); torch.set_num_threads(a.threads)
    for s in a.seeds: run(a, s)
