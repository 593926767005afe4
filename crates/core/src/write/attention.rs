//! Option B: blend into content-addressed slots,
//! M' = M + rate·w ⊙ (v − M) with erase, M + rate·w ⊙ v without, where
//! w = softmax over occupied slots of K·(u·W_Q). Free slots are filled first
//! (w one-hot on the free slot, a row write). The candidates of one call are
//! applied together and each slot's total blend weight is capped at 1, so
//! memory stays a convex mix.

use candle_core::{DType, Tensor};

use super::{Candidates, WriteBackend, put_rows};
use super::{WriteContext, WriteReport};
use crate::config::RetentionConfig;
use crate::error::{ConfigError, Result};
use crate::memory::MemoryState;
use retbench_kernels::rows;

#[derive(Debug)]
pub struct Attention {
    pub rate: f64,
    pub erase: bool,
}

impl WriteBackend for Attention {
    fn name(&self) -> &'static str {
        "attention"
    }

    fn check(&self, _cfg: &RetentionConfig) -> std::result::Result<(), ConfigError> {
        if !(0.0..=1.0).contains(&self.rate) {
            return Err(ConfigError::Invalid {
                field: "write.rate".into(),
                message: format!("must be in [0, 1], got {}", self.rate),
            });
        }
        Ok(())
    }

    fn blends(&self) -> bool {
        true
    }

    fn write(
        &self,
        layer: &dyn WriteContext,
        mem: &mut MemoryState,
        c: &Candidates<'_>,
        report: &mut WriteReport,
    ) -> Result<()> {
        if self.rate == 0.0 || !c.pass.iter().any(|&p| p) {
            return Ok(()); // a write of strength zero writes nothing
        }
        let (b, n, _) = c.v.dims3()?;
        let occupied_before = mem.meta.occupied.clone();
        // Host plan: which candidates fill a free slot, which address content.
        let mut fills: Vec<(u32, u32)> = Vec::new(); // (flat slot, flat candidate)
        let mut addressed = vec![0f32; b * n];
        for bi in 0..b {
            for j in 0..n {
                let k = bi * n + j;
                if !c.pass[k] {
                    continue;
                }
                report.written += 1;
                match mem.fill_free(bi, c.scores[k]) {
                    Some(f) => fills.push((f as u32, k as u32)),
                    None => addressed[k] = 1.0,
                }
            }
        }
        if addressed.iter().any(|&a| a > 0.0) {
            self.blend_content(layer, c.u, c.v, mem, &occupied_before, addressed)?;
        }
        // A fill has w one-hot on a free (zero) slot, so with or without
        // erase M' = rate·v there: a row scatter, O(d) per fill.
        let (dst, src): (Vec<u32>, Vec<u32>) = fills.into_iter().unzip();
        put_rows(layer, mem, c.v, &dst, src, self.rate)
    }
}

impl Attention {
    /// The content-addressed part, over the slots occupied before the call.
    /// `addressed` [B·n] marks the candidates that take part.
    fn blend_content(
        &self,
        layer: &dyn WriteContext,
        u: &Tensor,
        v: &Tensor,
        mem: &mut MemoryState,
        occupied_before: &[bool],
        addressed: Vec<f32>,
    ) -> Result<()> {
        let (rate, erase) = (self.rate, self.erase);
        let (b, n, _) = v.dims3()?;
        let m = mem.slots();
        let dev = mem.device().clone();
        let dtype = mem.dtype();
        let host = |data: Vec<f32>, shape: (usize, usize, usize)| -> Result<Tensor> {
            Ok(Tensor::from_vec(data, shape, &dev)?.to_dtype(dtype)?)
        };
        let addressed = host(addressed, (b, n, 1))?;
        let occ: Vec<f32> = occupied_before.iter().map(|&o| o as u8 as f32).collect();
        let occ = host(occ, (b, 1, m))?;
        let logits = layer.address_logits(u, mem)?; // [B, n, m]
        let logits = (logits / (layer.inner_dim() as f64).sqrt())?;
        let occ = occ.broadcast_as(logits.shape())?.contiguous()?;
        let address = rows::masked_softmax(&logits, &occ)?.broadcast_mul(&addressed)?;
        let w = (address * rate)?.transpose(1, 2)?.contiguous()?; // [B, m, n]
        let w = if erase {
            // Cap each slot's total weight at 1: a convex combination.
            w.broadcast_div(&w.sum_keepdim(2)?.maximum(1.0)?)?
        } else {
            w
        };
        let tracked = mem.tracked;
        let update = |old: &Tensor, new: &Tensor| -> Result<Tensor> {
            // One candidate: an outer product, far cheaper as a broadcast
            // than as a matmul with inner dimension 1.
            let add = if n == 1 {
                w.broadcast_mul(new)?
            } else {
                w.matmul(new)?
            };
            let out = if erase {
                let keep = (1.0 - w.sum_keepdim(2)?)?;
                (old.broadcast_mul(&keep)? + add)?
            } else {
                (old + add)?
            };
            Ok(if tracked { out } else { out.detach() })
        };
        let new_keys = match &mem.keys {
            Some(_) => Some(layer.key_rows(v)?),
            None => None,
        };
        // A detached memory is updated in place, touching only rows with weight.
        if !tracked && rows::blend_rows_in_place(&mem.content, &w, v, erase)? {
            if let (Some(keys), Some(k)) = (&mem.keys, &new_keys) {
                rows::blend_rows_in_place(keys, &w, k, erase)?;
            }
        } else {
            mem.content = update(&mem.content, v)?;
            if let (Some(keys), Some(k)) = (&mem.keys, &new_keys) {
                mem.keys = Some(update(keys, k)?);
            }
        }
        let share: Vec<f32> = w.sum(2)?.to_dtype(DType::F32)?.flatten_all()?.to_vec1()?;
        mem.record_blend(&share, occupied_before, rate as f32);
        Ok(())
    }
}
