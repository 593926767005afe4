//! Layer norm over the last dimension: one pass per row forward; dx, dγ and
//! dβ in one backward pass (dγ, dβ as per-chunk partials added in order).

use super::*;

struct LayerNorm {
    eps: f32,
}

#[multiversion(targets("x86_64+avx512f+avx512vl+avx2+fma", "x86_64+avx2+fma"))]
fn ln_fwd_rows(o: &mut [f32], x: &[f32], w: &[f32], b: &[f32], eps: f32) {
    let d = w.len();
    for (o, x) in o.chunks_exact_mut(d).zip(x.chunks_exact(d)) {
        let (mean, rstd) = row_stats(x, eps);
        for i in 0..d {
            o[i] = (x[i] - mean) * rstd * w[i] + b[i];
        }
    }
}

/// dx for rows of x and g; dγ and dβ added into acc[..d] and acc[d..].
#[multiversion(targets("x86_64+avx512f+avx512vl+avx2+fma", "x86_64+avx2+fma"))]
fn ln_bwd_rows(dx: &mut [f32], x: &[f32], g: &[f32], w: &[f32], eps: f32, acc: &mut [f32]) {
    let d = w.len();
    let (dw, db) = acc.split_at_mut(d);
    let mut gw = vec![0f32; d];
    let mut xhat = vec![0f32; d];
    for ((dx, x), g) in dx
        .chunks_exact_mut(d)
        .zip(x.chunks_exact(d))
        .zip(g.chunks_exact(d))
    {
        let (mean, rstd) = row_stats(x, eps);
        for i in 0..d {
            xhat[i] = (x[i] - mean) * rstd;
            gw[i] = g[i] * w[i];
            dw[i] += g[i] * xhat[i];
            db[i] += g[i];
        }
        let m1 = sum8(&gw) / d as f32;
        let m2 = dot(&gw, &xhat) / d as f32;
        for i in 0..d {
            dx[i] = rstd * (gw[i] - m1 - xhat[i] * m2);
        }
    }
}

impl CustomOp3 for LayerNorm {
    fn name(&self) -> &'static str {
        "retbench-layer-norm"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
        s3: &CpuStorage,
        l3: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let op = self.name();
        let (x, w, b) = (slice(s1, l1, op)?, slice(s2, l2, op)?, slice(s3, l3, op)?);
        let d = w.len();
        if b.len() != d || l1.dims().last() != Some(&d) {
            bail!(
                "{op}: x {:?} with weight {d} and bias {}",
                l1.shape(),
                b.len()
            );
        }
        let mut out = vec![0f32; x.len()];
        out.par_chunks_mut(ROWS * d)
            .zip(x.par_chunks(ROWS * d))
            .for_each(|(o, x)| ln_fwd_rows(o, x, w, b, self.eps));
        Ok((CpuStorage::F32(out), l1.shape().clone()))
    }

    fn bwd(
        &self,
        x: &Tensor,
        w: &Tensor,
        _b: &Tensor,
        _res: &Tensor,
        grad: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let op = self.name();
        let d = w.elem_count();
        let (dx, dwb) = with_f32(x, op, |x| {
            with_f32(w, op, |w| {
                with_f32(grad, op, |g| {
                    let rows = x.len() / d;
                    let mut dx = vec![0f32; x.len()];
                    // dγ and dβ side by side in one [2d] partial per chunk.
                    let dx_ptr = SendPtr(dx.as_mut_ptr());
                    let dwb = chunked_sum(rows, 2 * d, |_, range, acc| {
                        // SAFETY: each chunk's rows are written by that chunk alone.
                        let dx = unsafe { dx_ptr.row(range.start * d, range.len() * d) };
                        let rows = range.start * d..range.end * d;
                        ln_bwd_rows(dx, &x[rows.clone()], &g[rows], w, self.eps, acc);
                    });
                    Ok((dx, dwb))
                })
            })
        })?;
        Ok((
            Some(tensor(dx, x.shape())?),
            Some(tensor(dwb[..d].to_vec(), d)?),
            Some(tensor(dwb[d..].to_vec(), d)?),
        ))
    }
}

/// Layer norm over the last dimension: (x − mean)/√(var + eps)·γ + β.
pub fn layer_norm(x: &Tensor, weight: &Tensor, bias: &Tensor, eps: f64) -> Result<Tensor> {
    if fused_for(x) {
        return x.contiguous()?.apply_op3(
            &weight.contiguous()?,
            &bias.contiguous()?,
            LayerNorm { eps: eps as f32 },
        );
    }
    let mean = x.mean_keepdim(D::Minus1)?;
    let centred = x.broadcast_sub(&mean)?;
    let var = centred.sqr()?.mean_keepdim(D::Minus1)?;
    let normed = centred.broadcast_div(&(var + eps)?.sqrt()?)?;
    normed.broadcast_mul(weight)?.broadcast_add(bias)
}
