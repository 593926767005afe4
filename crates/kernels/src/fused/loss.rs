//! Masked mean cross-entropy: log-sum-exp, pick and masked mean in one
//! pass; backward softmax − one-hot scaled by mask / count.

use super::*;

/// Masked mean cross-entropy: Σ_r mask_r·(logsumexp(x_r) − x_r[target_r]) /
/// max(1, Σ mask).
struct CrossEntropy;

fn log_sum_exp(x: &[f32]) -> f32 {
    let max = x.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    max + x.iter().map(|v| (v - max).exp()).sum::<f32>().ln()
}

impl CustomOp3 for CrossEntropy {
    fn name(&self) -> &'static str {
        "retbench-cross-entropy"
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
        let (x, tgt, mask) = (slice(s1, l1, op)?, u32s(s2, l2, op)?, slice(s3, l3, op)?);
        let v = l1.dims().last().copied().unwrap_or(1);
        let rows = tgt.len();
        if x.len() != rows * v || mask.len() != rows {
            bail!(
                "{op}: logits {:?}, targets {:?} and mask {:?} do not fit",
                l1.shape(),
                l2.shape(),
                l3.shape()
            );
        }
        if let Some(t) = tgt.iter().find(|t| **t as usize >= v) {
            bail!("{op}: target {t} outside a vocabulary of {v}");
        }
        let sums = chunked_sum(rows, 2, |_, range, acc| {
            for r in range {
                if mask[r] != 0.0 {
                    let row = &x[r * v..(r + 1) * v];
                    acc[0] += mask[r] * (log_sum_exp(row) - row[tgt[r] as usize]);
                }
                acc[1] += mask[r];
            }
        });
        Ok((
            CpuStorage::F32(vec![sums[0] / sums[1].max(1.0)]),
            Shape::from(()),
        ))
    }

    fn bwd(
        &self,
        logits: &Tensor,
        targets: &Tensor,
        mask: &Tensor,
        _res: &Tensor,
        grad: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let op = self.name();
        let v = logits.dim(D::Minus1)?;
        let g = grad.to_dtype(DType::F32)?.to_scalar::<f32>()?;
        let tgt = targets.flatten_all()?.to_vec1::<u32>()?;
        let dx = with_f32(logits, op, |x| {
            with_f32(mask, op, |mask| {
                let total = mask.iter().sum::<f32>().max(1.0);
                let mut dx = vec![0f32; x.len()];
                dx.par_chunks_mut(v)
                    .zip(x.par_chunks(v))
                    .enumerate()
                    .for_each(|(r, (d, x))| {
                        if mask[r] == 0.0 {
                            return;
                        }
                        let lse = log_sum_exp(x);
                        let s = g * mask[r] / total;
                        d.iter_mut()
                            .zip(x)
                            .for_each(|(d, x)| *d = s * (x - lse).exp());
                        d[tgt[r] as usize] -= s;
                    });
                Ok(dx)
            })
        })?;
        Ok((Some(tensor(dx, logits.shape())?), None, None))
    }
}

/// Masked mean cross-entropy of `logits` [B, T, V] against `targets` [B, T]
/// (u32) with a 0/1 `mask` [B, T]: a scalar.
pub fn masked_cross_entropy(logits: &Tensor, targets: &Tensor, mask: &Tensor) -> Result<Tensor> {
    if fused_for(logits) && targets.dtype() == DType::U32 {
        let mask = mask.to_dtype(DType::F32)?.contiguous()?;
        return logits
            .contiguous()?
            .apply_op3(&targets.contiguous()?, &mask, CrossEntropy);
    }
    let logp = candle_nn::ops::log_softmax(logits, D::Minus1)?;
    let picked = logp
        .gather(&targets.unsqueeze(D::Minus1)?, D::Minus1)?
        .squeeze(D::Minus1)?;
    let mask = mask.to_dtype(picked.dtype())?;
    let total = mask.sum_all()?.to_scalar::<f32>()?.max(1.0) as f64;
    (picked * mask)?.sum_all()?.neg()? / total
}
