//! Multi-head causal softmax attention straight from the packed [B, T, 3d]
//! projection: no mask tensor, no head transposes; scores 16 keys at a time
//! in registers; the backward pass from the kept weights.

use super::*;

/// Causal softmax attention over a packed [B, T, 3d] projection (q, k, v
/// side by side, heads contiguous within each) → [B, T, d]. The forward pass
/// keeps the weights [B, H, T, T] for the backward pass when the input needs
/// a gradient (2 MiB per layer at the suites' sizes, against a second
/// q·kᵀ, softmax and exp in the backward pass).
struct CausalAttention {
    heads: usize,
    keep: bool,
    weights: std::sync::Mutex<Option<Vec<f32>>>,
}

struct AttnShape {
    t: usize,
    d: usize,
    dh: usize,
    scale: f32,
}

/// out[j] = scale·Σ_e q[e]·kt[e][j] for j < width, 16 keys at a time with
/// the sums in registers (one pass over kᵀ, one store per key).
#[inline(always)]
fn scores_row(q: &[f32], kt: &[f32], t: usize, width: usize, scale: f32, out: &mut [f32]) {
    let mut jb = 0;
    while jb + 16 <= width {
        let mut acc = [0f32; 16];
        for (e, qe) in q.iter().enumerate() {
            let k = &kt[e * t + jb..e * t + jb + 16];
            for l in 0..16 {
                acc[l] += qe * k[l];
            }
        }
        for l in 0..16 {
            out[jb + l] = acc[l] * scale;
        }
        jb += 16;
    }
    for j in jb..width {
        let mut acc = 0f32;
        for (e, qe) in q.iter().enumerate() {
            acc += qe * kt[e * t + j];
        }
        out[j] = acc * scale;
    }
}

impl AttnShape {
    #[inline(always)]
    fn q(&self, i: usize, h: usize) -> usize {
        i * 3 * self.d + h * self.dh
    }
    #[inline(always)]
    fn k(&self, j: usize, h: usize) -> usize {
        self.q(j, h) + self.d
    }
    #[inline(always)]
    fn v(&self, j: usize, h: usize) -> usize {
        self.q(j, h) + 2 * self.d
    }

    /// Part `part` (0 q, 1 k, 2 v) of head h transposed to [dh, T], so that
    /// a row's products with every key are axpys over T.
    #[inline(always)]
    fn transposed(&self, dh: usize, qkv: &[f32], h: usize, part: usize, out: &mut [f32]) {
        let t = self.t;
        for j in 0..t {
            let at = self.q(j, h) + part * self.d;
            for e in 0..dh {
                out[e * t + j] = qkv[at + e];
            }
        }
    }

    /// The weights of head h, [T, T] (zero above the diagonal), given kᵀ.
    #[inline(always)]
    fn weights(&self, dh: usize, qkv: &[f32], h: usize, kt: &[f32], p: &mut [f32]) {
        let t = self.t;
        for i in 0..t {
            let row = &mut p[i * t..(i + 1) * t];
            row[i + 1..].fill(0.0);
            let q = &qkv[self.q(i, h)..self.q(i, h) + dh];
            scores_row(q, kt, t, i + 1, self.scale, row);
            let max = row[..=i].iter().copied().fold(f32::NEG_INFINITY, f32::max);
            let mut sum = 0f32;
            for x in &mut row[..=i] {
                *x = exp_f32(*x - max);
            }
            for x in &row[..=i] {
                sum += *x;
            }
            let inv = 1.0 / sum;
            row[..=i].iter_mut().for_each(|x| *x *= inv);
        }
    }
}

impl CausalAttention {
    fn shape(&self, dims: &[usize]) -> Result<(usize, AttnShape)> {
        let &[b, t, d3] = dims else {
            bail!("retbench-causal-attention: expects [B, T, 3d], got {dims:?}");
        };
        let d = d3 / 3;
        if d3 % 3 != 0 || d % self.heads != 0 {
            bail!(
                "retbench-causal-attention: width {d3} is not 3 × a multiple of {} heads",
                self.heads
            );
        }
        let dh = d / self.heads;
        Ok((
            b,
            AttnShape {
                t,
                d,
                dh,
                scale: 1.0 / (dh as f32).sqrt(),
            },
        ))
    }
}

/// One batch row's attention: out [T, d] from qkv [T, 3d]; the weights of
/// every head go to `w` [H, T, T] when `keep`, else `w` [T, T] is scratch.
#[multiversion(targets("x86_64+avx512f+avx512vl+avx2+fma", "x86_64+avx2+fma"))]
fn attn_fwd_batch(
    sh: &AttnShape,
    heads: usize,
    keep: bool,
    out: &mut [f32],
    qkv: &[f32],
    w: &mut [f32],
) {
    // Head widths known at compile time unroll the per-key loops.
    match sh.dh {
        16 => attn_fwd::<16>(sh, heads, keep, out, qkv, w),
        32 => attn_fwd::<32>(sh, heads, keep, out, qkv, w),
        _ => attn_fwd::<0>(sh, heads, keep, out, qkv, w),
    }
}

/// `attn_fwd_batch` for head width DH (0: `sh.dh` at run time).
#[inline(always)]
fn attn_fwd<const DH: usize>(
    sh: &AttnShape,
    heads: usize,
    keep: bool,
    out: &mut [f32],
    qkv: &[f32],
    w: &mut [f32],
) {
    let (t, d) = (sh.t, sh.d);
    let dh = if DH > 0 { DH } else { sh.dh };
    let mut kt = vec![0f32; dh * t];
    for h in 0..heads {
        sh.transposed(dh, qkv, h, 1, &mut kt);
        let p = if keep {
            &mut w[h * t * t..(h + 1) * t * t]
        } else {
            &mut w[..]
        };
        sh.weights(dh, qkv, h, &kt, p);
        for i in 0..t {
            let o = &mut out[i * d + h * dh..i * d + (h + 1) * dh];
            if DH > 0 {
                // The output row stays in registers across keys.
                let mut acc = [0f32; DH];
                for (j, pj) in p[i * t..i * t + i + 1].iter().enumerate() {
                    let v = &qkv[sh.v(j, h)..sh.v(j, h) + DH];
                    for l in 0..DH {
                        acc[l] += pj * v[l];
                    }
                }
                o.copy_from_slice(&acc);
            } else {
                for (j, pj) in p[i * t..i * t + i + 1].iter().enumerate() {
                    axpy(o, *pj, &qkv[sh.v(j, h)..sh.v(j, h) + dh]);
                }
            }
        }
    }
}

/// One batch row's backward pass: dqkv [T, 3d] from qkv and the output
/// gradient g [T, d]; `kept` holds the forward weights [H, T, T] or, when
/// absent, they are recomputed.
#[multiversion(targets("x86_64+avx512f+avx512vl+avx2+fma", "x86_64+avx2+fma"))]
fn attn_bwd_batch(
    sh: &AttnShape,
    heads: usize,
    kept: Option<&[f32]>,
    dqkv: &mut [f32],
    qkv: &[f32],
    g: &[f32],
) {
    match sh.dh {
        16 => attn_bwd::<16>(sh, heads, kept, dqkv, qkv, g),
        32 => attn_bwd::<32>(sh, heads, kept, dqkv, qkv, g),
        _ => attn_bwd::<0>(sh, heads, kept, dqkv, qkv, g),
    }
}

/// `attn_bwd_batch` for head width DH (0: `sh.dh` at run time).
#[inline(always)]
fn attn_bwd<const DH: usize>(
    sh: &AttnShape,
    heads: usize,
    kept: Option<&[f32]>,
    dqkv: &mut [f32],
    qkv: &[f32],
    g: &[f32],
) {
    let (t, d) = (sh.t, sh.d);
    let dh = if DH > 0 { DH } else { sh.dh };
    let mut p_own = vec![0f32; if kept.is_some() { 0 } else { t * t }];
    let mut kt = vec![0f32; dh * t];
    let mut vt = vec![0f32; dh * t];
    // dS for the whole head [T, T], so that dK and dV are sums down its
    // columns with the accumulators in registers.
    let mut ds = vec![0f32; t * t];
    for h in 0..heads {
        let p: &[f32] = match kept {
            Some(w) => &w[h * t * t..(h + 1) * t * t],
            None => {
                sh.transposed(dh, qkv, h, 1, &mut kt);
                sh.weights(dh, qkv, h, &kt, &mut p_own);
                &p_own
            }
        };
        sh.transposed(dh, qkv, h, 2, &mut vt);
        for i in 0..t {
            let go = &g[i * d + h * dh..i * d + (h + 1) * dh];
            let pi = &p[i * t..i * t + i + 1];
            // dP_ij = dO_i·v_j; dS_ij = P_ij (dP_ij − Σ_j P_ij dP_ij)
            let dsi = &mut ds[i * t..i * t + i + 1];
            scores_row(go, &vt, t, i + 1, 1.0, dsi);
            let total = dot(pi, dsi);
            for (dsj, pj) in dsi.iter_mut().zip(pi) {
                *dsj = pj * (*dsj - total) * sh.scale;
            }
            // dQ_i = Σ_j dS_ij k_j
            let q0 = sh.q(i, h);
            let dq = &mut dqkv[q0..q0 + dh];
            accumulate::<DH>(
                dq,
                (0..=i).map(|j| (dsi[j], &qkv[sh.k(j, h)..sh.k(j, h) + dh])),
            );
        }
        for j in 0..t {
            // dK_j = Σ_i dS_ij q_i; dV_j = Σ_i P_ij dO_i (i ≥ j)
            let k0 = sh.k(j, h);
            let dk = &mut dqkv[k0..k0 + dh];
            accumulate::<DH>(
                dk,
                (j..t).map(|i| (ds[i * t + j], &qkv[sh.q(i, h)..sh.q(i, h) + dh])),
            );
            let v0 = sh.v(j, h);
            let dv = &mut dqkv[v0..v0 + dh];
            accumulate::<DH>(
                dv,
                (j..t).map(|i| (p[i * t + j], &g[i * d + h * dh..i * d + (h + 1) * dh])),
            );
        }
    }
}

/// out = Σ a·x over `terms`, with the sum in registers when DH is known.
#[inline(always)]
fn accumulate<'a, const DH: usize>(out: &mut [f32], terms: impl Iterator<Item = (f32, &'a [f32])>) {
    if DH > 0 {
        let mut acc = [0f32; DH];
        for (a, x) in terms {
            for l in 0..DH {
                acc[l] += a * x[l];
            }
        }
        out.copy_from_slice(&acc);
    } else {
        out.fill(0.0);
        for (a, x) in terms {
            axpy(out, a, x);
        }
    }
}

impl CustomOp1 for CausalAttention {
    fn name(&self) -> &'static str {
        "retbench-causal-attention"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> Result<(CpuStorage, Shape)> {
        let qkv = slice(s, l, self.name())?;
        let (b, sh) = self.shape(l.dims())?;
        let (t, d, heads) = (sh.t, sh.d, self.heads);
        let mut out = vec![0f32; b * t * d];
        // Without a backward pass to come, one [T, T] scratch per batch row.
        let per_b = if self.keep { heads * t * t } else { t * t };
        let mut weights = vec![0f32; b * per_b];
        out.par_chunks_mut(t * d)
            .zip(qkv.par_chunks(t * 3 * d))
            .zip(weights.par_chunks_mut(per_b))
            .for_each(|((out, qkv), w)| attn_fwd_batch(&sh, heads, self.keep, out, qkv, w));
        if self.keep {
            *self.weights.lock().expect("attention weights") = Some(weights);
        }
        Ok((CpuStorage::F32(out), Shape::from((b, t, d))))
    }

    fn bwd(&self, qkv: &Tensor, _res: &Tensor, grad: &Tensor) -> Result<Option<Tensor>> {
        let (b, sh) = self.shape(qkv.dims())?;
        let (t, d, heads) = (sh.t, sh.d, self.heads);
        let kept = self.weights.lock().expect("attention weights").take();
        let dqkv = with_f32(qkv, self.name(), |qkv| {
            with_f32(grad, self.name(), |g| {
                let mut dqkv = vec![0f32; b * t * 3 * d];
                dqkv.par_chunks_mut(t * 3 * d)
                    .zip(qkv.par_chunks(t * 3 * d).zip(g.par_chunks(t * d)))
                    .enumerate()
                    .for_each(|(bi, (dqkv, (qkv, g)))| {
                        let at = bi * heads * t * t;
                        let p = kept.as_ref().map(|w| &w[at..at + heads * t * t]);
                        attn_bwd_batch(&sh, heads, p, dqkv, qkv, g);
                    });
                Ok(dqkv)
            })
        })?;
        Ok(Some(tensor(dqkv, qkv.shape())?))
    }
}

/// Causal multi-head attention: `qkv` [B, T, 3d] holds q, k and v side by
/// side (each [heads × d/heads]); returns softmax(q·kᵀ/√dh + causal)·v with
/// heads joined back to [B, T, d].
pub fn causal_attention(qkv: &Tensor, heads: usize) -> Result<Tensor> {
    if fused_for(qkv) {
        return qkv.contiguous()?.apply_op1(CausalAttention {
            heads,
            keep: qkv.track_op(),
            weights: std::sync::Mutex::new(None),
        });
    }
    let (b, t, d3) = qkv.dims3()?;
    let (d, dev) = (d3 / 3, qkv.device());
    let dh = d / heads;
    let qkv = qkv.reshape((b, t, 3, heads, dh))?;
    let part = |i: usize| {
        qkv.narrow(2, i, 1)?
            .squeeze(2)?
            .transpose(1, 2)?
            .contiguous()
    };
    let (q, k, v) = (part(0)?, part(1)?, part(2)?);
    let mask: Vec<f32> = (0..t * t)
        .map(|i| if i % t > i / t { -1e9 } else { 0.0 })
        .collect();
    let mask = Tensor::from_vec(mask, (t, t), dev)?.to_dtype(q.dtype())?;
    let scores = (q.matmul(&k.t()?)? / (dh as f64).sqrt())?.broadcast_add(&mask)?;
    let w = candle_nn::ops::softmax(&scores, D::Minus1)?;
    w.matmul(&v)?.transpose(1, 2)?.reshape((b, t, d))
}
