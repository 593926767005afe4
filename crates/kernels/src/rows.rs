//! Hand-written CPU kernels for the hot spots of large memories, where
//! candle's generic ops dominate the cost (elementwise ops: one pass and an
//! allocation per op, slow strided loops for broadcasts; gemm: a general
//! kernel several times slower than one streaming pass for the few-row
//! products of a read):
//!
//! - [`rows_dot`] and [`rows_mix`]: q·Mᵀ and w·M for few rows, each one
//!   streaming pass over the slots (the second skips unweighted slots), with
//!   backward passes;
//! - [`masked_softmax`]: softmax over the selected slots of each row of
//!   scores, zero elsewhere (and an all-zero row when nothing is selected),
//!   in one pass per row, with a backward pass so training can use it;
//! - [`blend_rows_in_place`]: the attention write's update of a detached
//!   memory, M_i ← keep_i·M_i + Σ_j w_ij v_j, touching only rows with weight.
//!
//! Both fall back to candle ops off the CPU.

use crate::math::dot;
use candle_core::{
    CpuStorage, CustomOp2, D, DType, InplaceOp1, Layout, Result, Shape, Tensor, bail,
};
use rayon::prelude::*;

struct MaskedSoftmax;

fn softmax_rows<T: num_like::Float>(x: &[T], sel: &[T], width: usize) -> Vec<T> {
    let mut out = vec![T::zero(); x.len()];
    out.par_chunks_mut(width)
        .zip(x.par_chunks(width))
        .zip(sel.par_chunks(width))
        .for_each(|((o, x), s)| {
            let mut max = T::neg_infinity();
            for (xi, si) in x.iter().zip(s) {
                if *si != T::zero() && *xi > max {
                    max = *xi;
                }
            }
            if max == T::neg_infinity() {
                return; // nothing selected: the row stays zero
            }
            let mut sum = T::zero();
            for ((oi, xi), si) in o.iter_mut().zip(x).zip(s) {
                if *si != T::zero() {
                    *oi = (*xi - max).exp();
                    sum = sum + *oi;
                }
            }
            let inv = T::one() / sum;
            // Flush subnormal weights to zero: far slots of a sharp softmax
            // land there, and every later product with a subnormal takes a
            // slow microcode path (measured: 5x on a dense read of 1e5 slots).
            o.iter_mut().for_each(|oi| {
                let w = *oi * inv;
                *oi = if w < T::min_positive() { T::zero() } else { w };
            });
        });
    out
}

/// Just enough float abstraction for the two dtypes memories use.
mod num_like {
    pub trait Float:
        Copy
        + Send
        + Sync
        + PartialOrd
        + std::ops::Add<Output = Self>
        + std::ops::Sub<Output = Self>
        + std::ops::Mul<Output = Self>
        + std::ops::Div<Output = Self>
        + std::iter::Sum
        + Default
    {
        fn zero() -> Self;
        fn one() -> Self;
        fn neg_infinity() -> Self;
        fn min_positive() -> Self;
        fn exp(self) -> Self;
    }
    macro_rules! float {
        ($t:ty) => {
            impl Float for $t {
                fn zero() -> Self {
                    0.0
                }
                fn one() -> Self {
                    1.0
                }
                fn neg_infinity() -> Self {
                    <$t>::NEG_INFINITY
                }
                fn min_positive() -> Self {
                    <$t>::MIN_POSITIVE
                }
                fn exp(self) -> Self {
                    <$t>::exp(self)
                }
            }
        };
    }
    float!(f32);
    float!(f64);
}

impl CustomOp2 for MaskedSoftmax {
    fn name(&self) -> &'static str {
        "retbench-masked-softmax"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let width = l1.dims().last().copied().unwrap_or(1).max(1);
        let (Some((a, b)), Some((c, e))) = (l1.contiguous_offsets(), l2.contiguous_offsets())
        else {
            bail!("masked-softmax needs contiguous inputs");
        };
        if l1.shape() != l2.shape() {
            bail!(
                "masked-softmax: scores {:?} and selection {:?} differ",
                l1.shape(),
                l2.shape()
            );
        }
        let out = match (s1, s2) {
            (CpuStorage::F32(x), CpuStorage::F32(s)) => {
                CpuStorage::F32(softmax_rows(&x[a..b], &s[c..e], width))
            }
            (CpuStorage::F64(x), CpuStorage::F64(s)) => {
                CpuStorage::F64(softmax_rows(&x[a..b], &s[c..e], width))
            }
            _ => bail!("masked-softmax supports f32 and f64 of one dtype"),
        };
        Ok((out, l1.shape().clone()))
    }

    fn bwd(
        &self,
        _scores: &Tensor,
        _sel: &Tensor,
        res: &Tensor,
        grad: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>)> {
        // d softmax: y ⊙ (g − Σ g⊙y); unselected entries have y = 0.
        let dot = (grad * res)?.sum_keepdim(D::Minus1)?;
        Ok((Some((res * grad.broadcast_sub(&dot)?)?), None))
    }
}

/// Softmax over the last dimension restricted to entries where `select` is
/// non-zero; other entries, and rows with nothing selected, are 0.
pub fn masked_softmax(scores: &Tensor, select: &Tensor) -> Result<Tensor> {
    if scores.device().is_cpu() && matches!(scores.dtype(), DType::F32 | DType::F64) {
        return scores
            .contiguous()?
            .apply_op2(&select.contiguous()?, MaskedSoftmax);
    }
    // Elsewhere: an additive mask, then a plain softmax, then zero the rest.
    let bias = ((1.0 - select)? * -1e30)?;
    candle_nn::ops::softmax(&(scores + bias)?, D::Minus1)? * select
}

/// M_i ← keep_i·M_i + Σ_j w_ij v_j for every memory b and slot i with weight.
struct BlendRows<'a> {
    /// [B, m, n] blend weights.
    w: &'a [f64],
    /// [B, n, width] rows to blend in.
    v: &'a [f64],
    slots: usize,
    n: usize,
    erase: bool,
}

impl BlendRows<'_> {
    fn apply<T: Copy + Send + Sync + Into<f64>>(
        &self,
        data: &mut [T],
        width: usize,
        from: fn(f64) -> T,
    ) {
        let (w, v, n, erase) = (self.w, self.v, self.n, self.erase);
        data.par_chunks_mut(width)
            .enumerate()
            .for_each(|(row, out)| {
                let ws = &w[row * n..(row + 1) * n];
                if ws.iter().all(|&x| x == 0.0) {
                    return; // untouched rows stay bit-identical
                }
                let b = row / self.slots;
                let keep = if erase {
                    1.0 - ws.iter().sum::<f64>()
                } else {
                    1.0
                };
                for (k, o) in out.iter_mut().enumerate() {
                    let mut acc = keep * (*o).into();
                    for (j, &wj) in ws.iter().enumerate() {
                        acc += wj * v[(b * n + j) * width + k];
                    }
                    *o = from(acc);
                }
            });
    }
}

impl InplaceOp1 for BlendRows<'_> {
    fn name(&self) -> &'static str {
        "retbench-blend-rows"
    }

    fn cpu_fwd(&self, storage: &mut CpuStorage, layout: &Layout) -> Result<()> {
        let Some((a, b)) = layout.contiguous_offsets() else {
            bail!("blend-rows needs a contiguous memory");
        };
        let width = layout.dims().last().copied().unwrap_or(1);
        match storage {
            CpuStorage::F32(x) => self.apply(&mut x[a..b], width, |y| y as f32),
            CpuStorage::F64(x) => self.apply(&mut x[a..b], width, |y| y),
            _ => bail!("blend-rows supports f32 and f64 memories"),
        }
        Ok(())
    }
}

/// Applies an attention write to a detached `table` [B, m, width] in place:
/// `w` [B, m, n] weights (already scaled by the rate and capped), `v`
/// [B, n, width] the written rows. Returns false off the CPU, where the
/// caller uses tensor ops instead.
pub fn blend_rows_in_place(table: &Tensor, w: &Tensor, v: &Tensor, erase: bool) -> Result<bool> {
    if !table.device().is_cpu() || !table.is_contiguous() {
        return Ok(false);
    }
    let n = w.dim(D::Minus1)?;
    let slots = table.dim(1)?;
    let w: Vec<f64> = w.to_dtype(DType::F64)?.flatten_all()?.to_vec1()?;
    let v: Vec<f64> = v.detach().to_dtype(DType::F64)?.flatten_all()?.to_vec1()?;
    table.inplace_op1(&BlendRows {
        w: &w,
        v: &v,
        slots,
        n,
        erase,
    })?;
    Ok(true)
}

/// Slots per parallel task: large enough to amortise scheduling.
const SLOT_CHUNK: usize = 4096;

/// q [B, R, d] · M [B, m, d]ᵀ → [B, R, m], streaming M once.
fn rows_dot_cpu<T: num_like::Float>(
    q: &[T],
    mem: &[T],
    b: usize,
    r: usize,
    m: usize,
    d: usize,
) -> Vec<T> {
    let mut out = vec![T::zero(); b * r * m];
    for bi in 0..b {
        let q = &q[bi * r * d..(bi + 1) * r * d];
        let mem = &mem[bi * m * d..(bi + 1) * m * d];
        let out = &mut out[bi * r * m..(bi + 1) * r * m];
        if r == 1 {
            out.par_chunks_mut(SLOT_CHUNK)
                .enumerate()
                .for_each(|(c, o)| {
                    for (k, oi) in o.iter_mut().enumerate() {
                        let i = c * SLOT_CHUNK + k;
                        *oi = dot(q, &mem[i * d..(i + 1) * d]);
                    }
                });
        } else {
            // Slot-major, then transposed: each task owns a contiguous block.
            let mut t = vec![T::zero(); m * r];
            t.par_chunks_mut(SLOT_CHUNK * r)
                .enumerate()
                .for_each(|(c, o)| {
                    for (k, row) in o.chunks_mut(r).enumerate() {
                        let i = c * SLOT_CHUNK + k;
                        let s = &mem[i * d..(i + 1) * d];
                        for (ri, v) in row.iter_mut().enumerate() {
                            *v = dot(&q[ri * d..(ri + 1) * d], s);
                        }
                    }
                });
            for i in 0..m {
                for ri in 0..r {
                    out[ri * m + i] = t[i * r + ri];
                }
            }
        }
    }
    out
}

/// w [B, R, m] · M [B, m, d] → [B, R, d], streaming M once and skipping
/// slots no row weighs (most of them after a top-k selection).
fn rows_mix_cpu<T: num_like::Float>(
    w: &[T],
    mem: &[T],
    b: usize,
    r: usize,
    m: usize,
    d: usize,
) -> Vec<T> {
    let mut out = Vec::with_capacity(b * r * d);
    for bi in 0..b {
        let w = &w[bi * r * m..(bi + 1) * r * m];
        let mem = &mem[bi * m * d..(bi + 1) * m * d];
        let chunks = m.div_ceil(SLOT_CHUNK);
        let acc = (0..chunks)
            .into_par_iter()
            .map(|c| {
                let mut part = vec![T::zero(); r * d];
                for i in c * SLOT_CHUNK..((c + 1) * SLOT_CHUNK).min(m) {
                    let s = &mem[i * d..(i + 1) * d];
                    for ri in 0..r {
                        let wi = w[ri * m + i];
                        if wi != T::zero() {
                            for (o, x) in part[ri * d..(ri + 1) * d].iter_mut().zip(s) {
                                *o = *o + wi * *x;
                            }
                        }
                    }
                }
                part
            })
            .reduce(
                || vec![T::zero(); r * d],
                |mut a, p| {
                    a.iter_mut().zip(&p).for_each(|(x, y)| *x = *x + *y);
                    a
                },
            );
        out.extend(acc);
    }
    out
}

/// Which of the two slot-streaming products.
#[derive(Clone, Copy)]
enum SlotProduct {
    /// q · Mᵀ: scores of R queries against every slot.
    Dot,
    /// w · M: R weighted sums of slots.
    Mix,
}

impl CustomOp2 for SlotProduct {
    fn name(&self) -> &'static str {
        match self {
            SlotProduct::Dot => "retbench-rows-dot",
            SlotProduct::Mix => "retbench-rows-mix",
        }
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let (Some((a0, a1)), Some((b0, b1))) = (l1.contiguous_offsets(), l2.contiguous_offsets())
        else {
            bail!("{} needs contiguous inputs", self.name());
        };
        let (b, r, k) = l1.shape().dims3()?;
        let (b2, m, d) = l2.shape().dims3()?;
        let inner = match self {
            SlotProduct::Dot => d,
            SlotProduct::Mix => m,
        };
        if b != b2 || k != inner {
            bail!(
                "{}: shapes {:?} and {:?} do not fit",
                self.name(),
                l1.shape(),
                l2.shape()
            );
        }
        let (out, cols) = match (self, s1, s2) {
            (SlotProduct::Dot, CpuStorage::F32(x), CpuStorage::F32(y)) => (
                CpuStorage::F32(rows_dot_cpu(&x[a0..a1], &y[b0..b1], b, r, m, d)),
                m,
            ),
            (SlotProduct::Dot, CpuStorage::F64(x), CpuStorage::F64(y)) => (
                CpuStorage::F64(rows_dot_cpu(&x[a0..a1], &y[b0..b1], b, r, m, d)),
                m,
            ),
            (SlotProduct::Mix, CpuStorage::F32(x), CpuStorage::F32(y)) => (
                CpuStorage::F32(rows_mix_cpu(&x[a0..a1], &y[b0..b1], b, r, m, d)),
                d,
            ),
            (SlotProduct::Mix, CpuStorage::F64(x), CpuStorage::F64(y)) => (
                CpuStorage::F64(rows_mix_cpu(&x[a0..a1], &y[b0..b1], b, r, m, d)),
                d,
            ),
            _ => bail!("{} supports f32 and f64 of one dtype", self.name()),
        };
        Ok((out, Shape::from((b, r, cols))))
    }

    fn bwd(
        &self,
        lhs: &Tensor,
        mem: &Tensor,
        _res: &Tensor,
        grad: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>)> {
        match self {
            // out = q·Mᵀ: dq = g·M, dM = gᵀ·q.
            SlotProduct::Dot => Ok((
                Some(rows_mix(grad, mem)?),
                Some(grad.transpose(1, 2)?.matmul(lhs)?),
            )),
            // out = w·M: dw = g·Mᵀ, dM = wᵀ·g.
            SlotProduct::Mix => Ok((
                Some(rows_dot(grad, mem)?),
                Some(lhs.transpose(1, 2)?.matmul(grad)?),
            )),
        }
    }
}

fn slot_product(kind: SlotProduct, lhs: &Tensor, mem: &Tensor) -> Result<Tensor> {
    if lhs.device().is_cpu() && matches!(lhs.dtype(), DType::F32 | DType::F64) {
        return lhs.contiguous()?.apply_op2(&mem.contiguous()?, kind);
    }
    match kind {
        SlotProduct::Dot => lhs.matmul(&mem.t()?),
        SlotProduct::Mix => lhs.matmul(mem),
    }
}

/// q [B, R, d] · M [B, m, d]ᵀ → [B, R, m]: one pass over the slots, where
/// gemm's general kernel is several times slower for few rows R.
pub fn rows_dot(q: &Tensor, mem: &Tensor) -> Result<Tensor> {
    slot_product(SlotProduct::Dot, q, mem)
}

/// w [B, R, m] · M [B, m, d] → [B, R, d]: one pass over the slots, skipping
/// slots with zero weight in every row.
pub fn rows_mix(w: &Tensor, mem: &Tensor) -> Result<Tensor> {
    slot_product(SlotProduct::Mix, w, mem)
}
