//! x·Wᵀ + b as one gemm (the `gemm` crate candle uses) with the bias
//! pre-filled into the output; backward as two gemms with transposes as
//! strides and the bias gradient as a column sum.

use super::*;

struct LinearOp;

/// out [m, n] = x [m, k] · wᵀ (w [n, k]) (+ bias rows).
fn linear_fwd(x: &[f32], w: &[f32], bias: Option<&[f32]>, n: usize) -> Vec<f32> {
    let k = w.len() / n;
    let m = x.len() / k;
    let mut out = match bias {
        Some(b) => b.repeat(m),
        None => vec![0f32; m * n],
    };
    // SAFETY: the strides describe x [m, k] and w [n, k] read as wᵀ [k, n],
    // and out [m, n], all row-major and in bounds.
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            out.as_mut_ptr(),
            1,
            n as isize,
            bias.is_some(),
            x.as_ptr(),
            1,
            k as isize,
            w.as_ptr(),
            k as isize,
            1,
            1.0,
            1.0,
            false,
            false,
            false,
            parallelism(),
        )
    };
    out
}

fn linear_shape(x: &Layout, w: &Layout, op: &str) -> Result<(Shape, usize)> {
    let (n, k) = w.shape().dims2()?;
    let dims = x.dims();
    if dims.last() != Some(&k) {
        bail!(
            "{op}: x {:?} does not fit weight {:?}",
            x.shape(),
            w.shape()
        );
    }
    let mut out = dims.to_vec();
    *out.last_mut().expect("rank >= 1") = n;
    Ok((Shape::from(out), n))
}

/// dx = g·W, dW = gᵀ·x, db = Σ_rows g.
fn linear_bwd(
    x: &Tensor,
    w: &Tensor,
    grad: &Tensor,
    with_bias: bool,
) -> Result<(Tensor, Tensor, Option<Tensor>)> {
    let op = "retbench-linear";
    let (n, k) = w.dims2()?;
    let (dx, dw, db) = with_f32(x, op, |x| {
        with_f32(w, op, |w| {
            with_f32(grad, op, |g| {
                let m = x.len() / k;
                let mut dx = vec![0f32; m * k];
                let mut dw = vec![0f32; n * k];
                // SAFETY: g [m, n], w [n, k], dx [m, k]; then gᵀ read as
                // [n, m] (column stride n, row stride 1), x [m, k], dw [n, k].
                unsafe {
                    gemm::gemm(
                        m,
                        k,
                        n,
                        dx.as_mut_ptr(),
                        1,
                        k as isize,
                        false,
                        g.as_ptr(),
                        1,
                        n as isize,
                        w.as_ptr(),
                        1,
                        k as isize,
                        1.0,
                        1.0,
                        false,
                        false,
                        false,
                        parallelism(),
                    );
                    gemm::gemm(
                        n,
                        k,
                        m,
                        dw.as_mut_ptr(),
                        1,
                        k as isize,
                        false,
                        g.as_ptr(),
                        n as isize,
                        1,
                        x.as_ptr(),
                        1,
                        k as isize,
                        1.0,
                        1.0,
                        false,
                        false,
                        false,
                        parallelism(),
                    );
                }
                let db = with_bias.then(|| {
                    chunked_sum(m, n, |_, range, acc| {
                        for r in range {
                            acc.iter_mut()
                                .zip(&g[r * n..(r + 1) * n])
                                .for_each(|(a, g)| *a += g);
                        }
                    })
                });
                Ok((dx, dw, db))
            })
        })
    })?;
    Ok((
        tensor(dx, x.shape())?,
        tensor(dw, (n, k))?,
        db.map(|db| tensor(db, n)).transpose()?,
    ))
}

/// The forward pass of both arities: x·Wᵀ (+ b).
fn linear_cpu(
    (sx, lx): (&CpuStorage, &Layout),
    (sw, lw): (&CpuStorage, &Layout),
    bias: Option<(&CpuStorage, &Layout)>,
) -> Result<(CpuStorage, Shape)> {
    let op = "retbench-linear";
    let (shape, n) = linear_shape(lx, lw, op)?;
    let b = bias.map(|(s, l)| slice(s, l, op)).transpose()?;
    if let Some(b) = b.filter(|b| b.len() != n) {
        bail!("{op}: bias of {} for {n} outputs", b.len());
    }
    let out = linear_fwd(slice(sx, lx, op)?, slice(sw, lw, op)?, b, n);
    Ok((CpuStorage::F32(out), shape))
}

impl CustomOp2 for LinearOp {
    fn name(&self) -> &'static str {
        "retbench-linear"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        linear_cpu((s1, l1), (s2, l2), None)
    }

    fn bwd(
        &self,
        x: &Tensor,
        w: &Tensor,
        _res: &Tensor,
        grad: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>)> {
        let (dx, dw, _) = linear_bwd(x, w, grad, false)?;
        Ok((Some(dx), Some(dw)))
    }
}

impl CustomOp3 for LinearOp {
    fn name(&self) -> &'static str {
        "retbench-linear"
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
        linear_cpu((s1, l1), (s2, l2), Some((s3, l3)))
    }

    fn bwd(
        &self,
        x: &Tensor,
        w: &Tensor,
        _b: &Tensor,
        _res: &Tensor,
        grad: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let (dx, dw, db) = linear_bwd(x, w, grad, true)?;
        Ok((Some(dx), Some(dw), db))
    }
}

/// x·Wᵀ + b for a candle `Linear` (weight [out, in]).
pub fn linear(x: &Tensor, layer: &candle_nn::Linear) -> Result<Tensor> {
    use candle_core::Module;
    if !fused_for(x) {
        return layer.forward(x);
    }
    let (x, w) = (x.contiguous()?, layer.weight().contiguous()?);
    match layer.bias() {
        Some(b) => x.apply_op3(&w, &b.contiguous()?, LinearOp),
        None => x.apply_op2(&w, LinearOp),
    }
}
