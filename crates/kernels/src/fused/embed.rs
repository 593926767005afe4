//! Token plus position embedding in one pass; backward as per-token and
//! per-position sums of rows in row order (counting sort, no index-add).

use super::*;

/// Token plus position embedding: out[b, t] = tok[tokens[b, t]] + pos[t].
struct Embed;

impl CustomOp3 for Embed {
    fn name(&self) -> &'static str {
        "retbench-embed"
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
        let (ids, tok, pos) = (u32s(s1, l1, op)?, slice(s2, l2, op)?, slice(s3, l3, op)?);
        let (b, t) = l1.shape().dims2()?;
        let (v, d) = l2.shape().dims2()?;
        let (p, d2) = l3.shape().dims2()?;
        if d != d2 || t > p {
            bail!(
                "{op}: tokens {:?}, table {:?}, positions {:?}",
                l1.shape(),
                l2.shape(),
                l3.shape()
            );
        }
        if let Some(id) = ids.iter().find(|i| **i as usize >= v) {
            bail!("{op}: token {id} outside a vocabulary of {v}");
        }
        let mut out = vec![0f32; b * t * d];
        out.par_chunks_mut(t * d)
            .zip(ids.par_chunks(t))
            .for_each(|(o, ids)| {
                for (i, (o, id)) in o.chunks_exact_mut(d).zip(ids).enumerate() {
                    let row = &tok[*id as usize * d..(*id as usize + 1) * d];
                    let at = &pos[i * d..(i + 1) * d];
                    for k in 0..d {
                        o[k] = row[k] + at[k];
                    }
                }
            });
        Ok((CpuStorage::F32(out), Shape::from((b, t, d))))
    }

    fn bwd(
        &self,
        tokens: &Tensor,
        tok: &Tensor,
        pos: &Tensor,
        _res: &Tensor,
        grad: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let (v, d) = tok.dims2()?;
        let (p, _) = pos.dims2()?;
        let (_, t) = tokens.dims2()?;
        let ids = tokens.flatten_all()?.to_vec1::<u32>()?;
        let (dtok, dpos) = with_f32(grad, self.name(), |g| {
            // Each token row sums its positions in order; each position sums
            // the batch in order: no atomics, the same sums for any thread count.
            // Rows grouped by token (a counting sort keeps them in order).
            let mut start = vec![0usize; v + 1];
            ids.iter().for_each(|i| start[*i as usize + 1] += 1);
            (0..v).for_each(|i| start[i + 1] += start[i]);
            let mut rows = vec![0usize; ids.len()];
            let mut next = start.clone();
            for (r, i) in ids.iter().enumerate() {
                rows[next[*i as usize]] = r;
                next[*i as usize] += 1;
            }
            let mut dtok = vec![0f32; v * d];
            dtok.par_chunks_mut(d).enumerate().for_each(|(id, acc)| {
                for r in &rows[start[id]..start[id + 1]] {
                    axpy(acc, 1.0, &g[r * d..(r + 1) * d]);
                }
            });
            let mut dpos = vec![0f32; p * d];
            dpos[..t * d]
                .par_chunks_mut(d)
                .enumerate()
                .for_each(|(i, acc)| {
                    for row in (i..ids.len()).step_by(t) {
                        axpy(acc, 1.0, &g[row * d..(row + 1) * d]);
                    }
                });
            Ok((dtok, dpos))
        })?;
        Ok((
            None,
            Some(tensor(dtok, (v, d))?),
            Some(tensor(dpos, (p, d))?),
        ))
    }
}

/// Token embeddings of `tokens` [B, T] (u32) from `tok` [V, d] plus the
/// position embeddings `pos` [P ≥ T, d] of positions 0..T: [B, T, d].
pub fn embed(tokens: &Tensor, tok: &Tensor, pos: &Tensor) -> Result<Tensor> {
    if fused_for(tok) && tokens.dtype() == DType::U32 {
        return tokens
            .contiguous()?
            .apply_op3(&tok.contiguous()?, &pos.contiguous()?, Embed);
    }
    let (_, t) = tokens.dims2()?;
    let positions = Tensor::arange(0u32, t as u32, tokens.device())?;
    let tok = candle_nn::Embedding::new(tok.clone(), tok.dim(1)?);
    let pos = candle_nn::Embedding::new(pos.clone(), pos.dim(1)?);
    use candle_core::Module;
    tok.forward(tokens)?
        .broadcast_add(&pos.forward(&positions)?)
}
