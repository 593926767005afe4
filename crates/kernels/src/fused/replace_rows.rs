//! Replacing rows of a memory table inside the autograd graph: what a
//! tracked write does to the slots it fills. One copy of the table and the
//! new rows forward; backward the table's gradient with the replaced rows
//! zeroed and the rows' gradient gathered, instead of candle's
//! keep-mask product, zero table, index-add and sum (four passes over the
//! whole table each way, which at 16 384 slots were the largest part of a
//! training step).

use super::*;

struct ReplaceRows {
    dst: Vec<u32>,
}

impl ReplaceRows {
    /// `table` [n, w] and `rows` [a, w] as slices, checked.
    fn check(&self, table: &Layout, rows: &Layout) -> Result<(usize, usize)> {
        let (n, w) = table.shape().dims2()?;
        let (a, rw) = rows.shape().dims2()?;
        if rw != w || a != self.dst.len() {
            bail!(
                "{}: {a} rows of {rw} for {} slots of a [{n}, {w}] table",
                self.name(),
                self.dst.len()
            );
        }
        if let Some(&bad) = self.dst.iter().find(|&&d| d as usize >= n) {
            bail!("{}: slot {bad} outside a table of {n} rows", self.name());
        }
        Ok((n, w))
    }
}

impl CustomOp2 for ReplaceRows {
    fn name(&self) -> &'static str {
        "retbench-replace-rows"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let (_, w) = self.check(l1, l2)?;
        let (table, rows) = (slice(s1, l1, self.name())?, slice(s2, l2, self.name())?);
        let mut out = table.to_vec();
        // Zero first, then add in order: a slot named twice holds the sum
        // of its rows, as index_add (the unfused path) leaves it.
        for &d in &self.dst {
            out[d as usize * w..(d as usize + 1) * w].fill(0.0);
        }
        for (i, &d) in self.dst.iter().enumerate() {
            let o = &mut out[d as usize * w..(d as usize + 1) * w];
            o.iter_mut()
                .zip(&rows[i * w..(i + 1) * w])
                .for_each(|(o, r)| *o += r);
        }
        Ok((CpuStorage::F32(out), l1.shape().clone()))
    }

    fn bwd(
        &self,
        table: &Tensor,
        _rows: &Tensor,
        _res: &Tensor,
        grad: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>)> {
        let w = table.dim(1)?;
        let (d_table, d_rows) = with_f32(grad, self.name(), |g| {
            let mut d_table = g.to_vec();
            let mut d_rows = Vec::with_capacity(self.dst.len() * w);
            for &d in &self.dst {
                d_rows.extend_from_slice(&g[d as usize * w..(d as usize + 1) * w]);
            }
            for &d in &self.dst {
                d_table[d as usize * w..(d as usize + 1) * w].fill(0.0);
            }
            Ok((d_table, d_rows))
        })?;
        Ok((
            Some(tensor(d_table, table.shape())?),
            Some(tensor(d_rows, (self.dst.len(), w))?),
        ))
    }
}

/// `table` [n, w] with rows `dst` replaced by `rows` [dst.len(), w] (a slot
/// named twice gets the sum of its rows), differentiable in both: the
/// overwritten rows pass no gradient back to the table.
pub fn replace_rows(table: &Tensor, dst: &[u32], rows: &Tensor) -> Result<Tensor> {
    if fused_for(table) && fused_for(rows) {
        let op = ReplaceRows { dst: dst.to_vec() };
        return table.contiguous()?.apply_op2(&rows.contiguous()?, op);
    }
    // M·keep + index_add(0, dst, rows). Not `scatter`: its backward in
    // candle 0.11 passes the gradient to the overwritten rows as well
    // (caught by the finite-difference conformance test).
    let n = table.dim(0)?;
    let mut keep = vec![1f32; n];
    for &f in dst {
        keep[f as usize] = 0.0;
    }
    let keep = Tensor::from_vec(keep, (n, 1), table.device())?.to_dtype(table.dtype())?;
    let idx = Tensor::new(dst, table.device())?;
    let added = table.zeros_like()?.index_add(&idx, rows, 0)?;
    table.broadcast_mul(&keep)? + added
}
