//! The retention layer's dense read over memory slots: scores, softmax over
//! occupied slots, mix and per-slot usage statistics in one pass per (batch
//! row, head); dQ, dK, dV from the kept weights.

use super::*;

/// A read over memory slots: per batch row b and head h,
/// out_i = Σ_j P_ij v_j with P_i = softmax_j(scale·q_i·k_j) over the slots
/// j selected in `select` [B, m] (0/1), zero elsewhere, and an all-zero row
/// when nothing is selected (an empty memory reads exactly zero).
struct SlotAttention {
    select: Vec<f32>,
    scale: f32,
    keep: bool,
    weights: std::sync::Mutex<Option<Vec<f32>>>,
    /// Per batch row and slot, Σ over heads and queries of the weight / H
    /// and its maximum, when the caller records usage.
    usage: Option<std::sync::Arc<std::sync::Mutex<SlotUsage>>>,
}

/// Read usage of every slot, [B·m] each: the weight summed over heads and
/// queries and divided by the head count, and its largest value.
#[derive(Debug, Default)]
pub struct SlotUsage {
    pub total: Vec<f32>,
    pub peak: Vec<f32>,
}

/// [B, H, n, w] dims of the three inputs.
struct SlotShape {
    h: usize,
    t: usize,
    m: usize,
    dk: usize,
    dv: usize,
}

impl SlotAttention {
    fn shape(&self, q: &[usize], k: &[usize], v: &[usize]) -> Result<(usize, SlotShape)> {
        let (&[b, h, t, dk], &[b2, h2, m, dk2], &[b3, h3, m3, dv]) = (q, k, v) else {
            bail!("retbench-slot-attention: expects [B, H, n, w] inputs, got {q:?} {k:?} {v:?}");
        };
        if (b, h, dk, m) != (b2, h2, dk2, m3) || (b, h) != (b3, h3) || self.select.len() != b * m {
            bail!(
                "retbench-slot-attention: shapes {q:?}, {k:?}, {v:?} and {} selected do not fit",
                self.select.len()
            );
        }
        Ok((b, SlotShape { h, t, m, dk, dv }))
    }
}

/// Row i's weights over the selected slots of head-block `k` [m, dk].
#[inline(always)]
fn slot_weights(q: &[f32], k: &[f32], sel: &[f32], dk: usize, scale: f32, p: &mut [f32]) {
    let mut max = f32::NEG_INFINITY;
    for (j, pj) in p.iter_mut().enumerate() {
        if sel[j] != 0.0 {
            *pj = scale * dot(q, &k[j * dk..(j + 1) * dk]);
            max = max.max(*pj);
        } else {
            *pj = 0.0;
        }
    }
    if max == f32::NEG_INFINITY {
        return; // nothing selected: the row stays zero
    }
    let mut sum = 0f32;
    for (pj, s) in p.iter_mut().zip(sel) {
        if *s != 0.0 {
            *pj = exp_f32(*pj - max);
            sum += *pj;
        }
    }
    let inv = 1.0 / sum;
    p.iter_mut().for_each(|x| *x *= inv);
}

#[multiversion(targets("x86_64+avx512f+avx512vl+avx2+fma", "x86_64+avx2+fma"))]
#[allow(clippy::too_many_arguments)]
fn slot_fwd_batch(
    sh: &SlotShape,
    sel: &[f32],
    scale: f32,
    q: &[f32],
    k: &[f32],
    v: &[f32],
    out: &mut [f32],
    w: &mut [f32],
) {
    let (t, m, dk, dv) = (sh.t, sh.m, sh.dk, sh.dv);
    for h in 0..sh.h {
        let (kh, vh) = (
            &k[h * m * dk..(h + 1) * m * dk],
            &v[h * m * dv..(h + 1) * m * dv],
        );
        for i in 0..t {
            let p = &mut w[(h * t + i) * m..(h * t + i + 1) * m];
            let qi = &q[(h * t + i) * dk..(h * t + i + 1) * dk];
            slot_weights(qi, kh, sel, dk, scale, p);
            let o = &mut out[(h * t + i) * dv..(h * t + i + 1) * dv];
            o.fill(0.0);
            for (j, pj) in p.iter().enumerate() {
                if *pj != 0.0 {
                    axpy(o, *pj, &vh[j * dv..(j + 1) * dv]);
                }
            }
        }
    }
}

#[multiversion(targets("x86_64+avx512f+avx512vl+avx2+fma", "x86_64+avx2+fma"))]
#[allow(clippy::too_many_arguments)]
fn slot_bwd_batch(
    sh: &SlotShape,
    scale: f32,
    p: &[f32],
    q: &[f32],
    k: &[f32],
    v: &[f32],
    g: &[f32],
    dq: &mut [f32],
    dk_out: &mut [f32],
    dv_out: &mut [f32],
) {
    let (t, m, dk, dv) = (sh.t, sh.m, sh.dk, sh.dv);
    let mut ds = vec![0f32; m];
    dk_out.fill(0.0);
    dv_out.fill(0.0);
    for h in 0..sh.h {
        let (kh, vh) = (
            &k[h * m * dk..(h + 1) * m * dk],
            &v[h * m * dv..(h + 1) * m * dv],
        );
        for i in 0..t {
            let row = h * t + i;
            let (pi, go) = (&p[row * m..(row + 1) * m], &g[row * dv..(row + 1) * dv]);
            // dP_ij = dO_i·v_j; dS_ij = P_ij (dP_ij − Σ_j P_ij dP_ij)
            let mut total = 0f32;
            for j in 0..m {
                ds[j] = if pi[j] != 0.0 {
                    dot(go, &vh[j * dv..(j + 1) * dv])
                } else {
                    0.0
                };
                total += pi[j] * ds[j];
            }
            let qi = &q[row * dk..(row + 1) * dk];
            let dqi = &mut dq[row * dk..(row + 1) * dk];
            dqi.fill(0.0);
            for j in 0..m {
                if pi[j] == 0.0 {
                    continue;
                }
                let dsj = pi[j] * (ds[j] - total) * scale;
                axpy(dqi, dsj, &kh[j * dk..(j + 1) * dk]);
                let at = (h * m + j) * dk;
                axpy(&mut dk_out[at..at + dk], dsj, qi);
                let at = (h * m + j) * dv;
                axpy(&mut dv_out[at..at + dv], pi[j], go);
            }
        }
    }
}

impl CustomOp3 for SlotAttention {
    fn name(&self) -> &'static str {
        "retbench-slot-attention"
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
        let (q, k, v) = (slice(s1, l1, op)?, slice(s2, l2, op)?, slice(s3, l3, op)?);
        let (b, sh) = self.shape(l1.dims(), l2.dims(), l3.dims())?;
        let (h, t, m, dk, dv) = (sh.h, sh.t, sh.m, sh.dk, sh.dv);
        let mut out = vec![0f32; b * h * t * dv];
        let mut w = vec![0f32; b * h * t * m];
        out.par_chunks_mut(h * t * dv)
            .zip(w.par_chunks_mut(h * t * m))
            .enumerate()
            .for_each(|(bi, (out, w))| {
                slot_fwd_batch(
                    &sh,
                    &self.select[bi * m..(bi + 1) * m],
                    self.scale,
                    &q[bi * h * t * dk..(bi + 1) * h * t * dk],
                    &k[bi * h * m * dk..(bi + 1) * h * m * dk],
                    &v[bi * h * m * dv..(bi + 1) * h * m * dv],
                    out,
                    w,
                )
            });
        if let Some(usage) = &self.usage {
            let (mut total, mut peak) = (vec![0f32; b * m], vec![0f32; b * m]);
            for (bi, wb) in w.chunks(h * t * m).enumerate() {
                let (tot, pk) = (
                    &mut total[bi * m..(bi + 1) * m],
                    &mut peak[bi * m..(bi + 1) * m],
                );
                for row in wb.chunks(m) {
                    for j in 0..m {
                        tot[j] += row[j];
                        pk[j] = pk[j].max(row[j]);
                    }
                }
                tot.iter_mut().for_each(|x| *x /= h as f32);
            }
            *usage.lock().expect("slot usage") = SlotUsage { total, peak };
        }
        if self.keep {
            *self.weights.lock().expect("slot weights") = Some(w);
        }
        Ok((CpuStorage::F32(out), Shape::from((b, h, t, dv))))
    }

    fn bwd(
        &self,
        q: &Tensor,
        k: &Tensor,
        v: &Tensor,
        _res: &Tensor,
        grad: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let op = self.name();
        let (_, sh) = self.shape(q.dims(), k.dims(), v.dims())?;
        let (h, t, m, dk, dv) = (sh.h, sh.t, sh.m, sh.dk, sh.dv);
        let kept = self.weights.lock().expect("slot weights").take();
        let p = match kept {
            Some(p) => p,
            None => {
                // Recompute the weights (a backward pass without a kept forward).
                let again = SlotAttention {
                    select: self.select.clone(),
                    scale: self.scale,
                    keep: true,
                    weights: std::sync::Mutex::new(None),
                    usage: None,
                };
                q.apply_op3_no_bwd(k, v, &again)?;
                again
                    .weights
                    .into_inner()
                    .expect("slot weights")
                    .unwrap_or_default()
            }
        };
        let (dq, dkk, dvv) = with_f32(q, op, |q| {
            with_f32(k, op, |k| {
                with_f32(v, op, |v| {
                    with_f32(grad, op, |g| {
                        let mut dq = vec![0f32; q.len()];
                        let mut dkk = vec![0f32; k.len()];
                        let mut dvv = vec![0f32; v.len()];
                        dq.par_chunks_mut(h * t * dk)
                            .zip(
                                dkk.par_chunks_mut(h * m * dk)
                                    .zip(dvv.par_chunks_mut(h * m * dv)),
                            )
                            .enumerate()
                            .for_each(|(bi, (dq, (dkb, dvb)))| {
                                slot_bwd_batch(
                                    &sh,
                                    self.scale,
                                    &p[bi * h * t * m..(bi + 1) * h * t * m],
                                    &q[bi * h * t * dk..(bi + 1) * h * t * dk],
                                    &k[bi * h * m * dk..(bi + 1) * h * m * dk],
                                    &v[bi * h * m * dv..(bi + 1) * h * m * dv],
                                    &g[bi * h * t * dv..(bi + 1) * h * t * dv],
                                    dq,
                                    dkb,
                                    dvb,
                                )
                            });
                        Ok((dq, dkk, dvv))
                    })
                })
            })
        })?;
        Ok((
            Some(tensor(dq, q.shape())?),
            Some(tensor(dkk, k.shape())?),
            Some(tensor(dvv, v.shape())?),
        ))
    }
}

/// A read over memory slots: q [B, H, T, dk], slot keys k [B, H, m, dk],
/// slot values v [B, H, m, dv], `select` [B, m] (0/1, e.g. occupancy):
/// softmax(scale·q·kᵀ) over the selected slots (zero elsewhere; an all-zero
/// row when none is selected) times v, [B, H, T, dv], and with `usage`
/// the read usage of every slot. `None` when the fused path does not apply
/// (the caller then uses its candle ops).
pub fn slot_attention(
    q: &Tensor,
    k: &Tensor,
    v: &Tensor,
    select: &Tensor,
    scale: f64,
    usage: bool,
) -> Result<Option<(Tensor, Option<SlotUsage>)>> {
    if !fused_for(q) {
        return Ok(None);
    }
    let usage = usage.then(|| std::sync::Arc::new(std::sync::Mutex::new(SlotUsage::default())));
    let track = q.track_op() || k.track_op() || v.track_op();
    let select = select
        .to_dtype(DType::F32)?
        .flatten_all()?
        .to_vec1::<f32>()?;
    let out = q.contiguous()?.apply_op3(
        &k.contiguous()?,
        &v.contiguous()?,
        SlotAttention {
            select,
            scale: scale as f32,
            keep: track,
            weights: std::sync::Mutex::new(None),
            usage: usage.clone(),
        },
    )?;
    let usage = usage.map(|u| std::mem::take(&mut *u.lock().expect("slot usage")));
    Ok(Some((out, usage)))
}
