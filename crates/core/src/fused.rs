//! Fused CPU kernels for training the transformer and its retention layers,
//! each a candle custom op with its own backward pass, and the switch that
//! selects them ([`Kernels`]). Candle builds every layer from generic ops:
//! one allocation and one pass per op, strided loops for broadcasts, and a
//! backward graph several times longer than the forward one. At the sizes
//! the suites train (d_model 64–128, sequences of 64) that overhead, not the
//! arithmetic, is the step (docs/ARCHITECTURE.md, "Kernels"). Here:
//!
//! - [`layer_norm`]: one pass per row forward, one backward (dx, dγ, dβ);
//! - [`linear`]: x·Wᵀ + b as one gemm with the bias folded in, backward as
//!   two gemms and a column sum, no transposed copies;
//! - [`gelu`]: the erf GELU and its derivative, one pass each;
//! - [`causal_attention`]: multi-head causal softmax attention straight from
//!   the packed [B, T, 3d] projection, no mask tensor, no head transposes;
//!   backward recomputes the weights (cheaper than keeping [B, H, T, T]);
//! - [`masked_cross_entropy`]: log-softmax, pick and masked mean in one pass
//!   over the logits, backward softmax − one-hot scaled by the mask;
//! - [`embed`]: token plus position embedding in one pass, backward as
//!   per-row sums (no index-add, no broadcast reduction);
//! - [`slot_attention`]: the retention layer's dense read over memory
//!   slots (masked by occupancy) with its usage statistics, backward from
//!   the kept weights.
//!
//! Each takes the unfused candle path when [`Kernels::Unfused`] is selected
//! (for tests and comparison) or the tensor is not f32 on the CPU. Partial
//! sums are taken over fixed-size chunks and added in chunk order, so results
//! do not depend on the number of threads.

use std::cell::Cell;
use std::sync::atomic::{AtomicBool, Ordering};

use candle_core::{
    CpuStorage, CustomOp1, CustomOp2, CustomOp3, D, DType, Layout, Result, Shape, Storage, Tensor,
    bail,
};
use multiversion::multiversion;
use rayon::prelude::*;

/// Which implementation of the model's layers runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kernels {
    /// The custom ops of this module (the default).
    Fused,
    /// Candle's generic ops, as the layers are written mathematically.
    Unfused,
}

impl Kernels {
    /// As written on the command line and in run records.
    pub fn name(self) -> &'static str {
        match self {
            Kernels::Fused => "fused",
            Kernels::Unfused => "unfused",
        }
    }
}

impl std::str::FromStr for Kernels {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        match s {
            "fused" => Ok(Kernels::Fused),
            "unfused" => Ok(Kernels::Unfused),
            _ => Err(format!("kernels: expected fused or unfused, got {s:?}")),
        }
    }
}

static UNFUSED_BY_DEFAULT: AtomicBool = AtomicBool::new(false);

thread_local! {
    static OVERRIDE: Cell<Option<Kernels>> = const { Cell::new(None) };
}

/// The kernels this thread uses: its [`with_kernels`] override, else the
/// process default.
pub fn kernels() -> Kernels {
    OVERRIDE.with(|k| k.get()).unwrap_or_else(|| {
        if UNFUSED_BY_DEFAULT.load(Ordering::Relaxed) {
            Kernels::Unfused
        } else {
            Kernels::Fused
        }
    })
}

/// Sets the process default (the CLI's `--kernels`).
pub fn set_default(k: Kernels) {
    UNFUSED_BY_DEFAULT.store(k == Kernels::Unfused, Ordering::Relaxed);
}

/// Runs `f` with `k` selected on this thread (forward and backward passes run
/// on the calling thread, so a test can compare both paths side by side).
pub fn with_kernels<R>(k: Kernels, f: impl FnOnce() -> R) -> R {
    let before = OVERRIDE.with(|c| c.replace(Some(k)));
    struct Restore(Option<Kernels>);
    impl Drop for Restore {
        fn drop(&mut self) {
            OVERRIDE.with(|c| c.set(self.0));
        }
    }
    let _restore = Restore(before);
    f()
}

fn fused_for(t: &Tensor) -> bool {
    kernels() == Kernels::Fused && t.device().is_cpu() && t.dtype() == DType::F32
}

/// Rows per parallel task: fixed, so that chunked sums do not depend on the
/// thread count.
const ROWS: usize = 64;

fn parallelism() -> gemm::Parallelism {
    match rayon::current_num_threads() {
        0 | 1 => gemm::Parallelism::None,
        n => gemm::Parallelism::Rayon(n),
    }
}

/// The f32 slice behind a contiguous CPU layout.
fn slice<'a>(s: &'a CpuStorage, l: &Layout, op: &str) -> Result<&'a [f32]> {
    let Some((a, b)) = l.contiguous_offsets() else {
        bail!("{op}: needs contiguous inputs");
    };
    match s {
        CpuStorage::F32(v) => Ok(&v[a..b]),
        _ => bail!("{op}: supports f32 only"),
    }
}

/// Runs `f` on the f32 data of `t` (made contiguous first) on the CPU.
pub fn with_f32<R>(t: &Tensor, op: &str, f: impl FnOnce(&[f32]) -> Result<R>) -> Result<R> {
    let t = t.contiguous()?;
    let (s, l) = t.storage_and_layout();
    match &*s {
        Storage::Cpu(c) => f(slice(c, l, op)?),
        _ => bail!("{op}: CPU only"),
    }
}

fn tensor(v: Vec<f32>, shape: impl Into<Shape>) -> Result<Tensor> {
    Tensor::from_vec(v, shape, &candle_core::Device::Cpu)
}

/// Σ over fixed chunks of rows of `per_chunk(chunk_index, rows)`, added in
/// chunk order (deterministic whatever the thread count).
fn chunked_sum(
    rows: usize,
    width: usize,
    per_chunk: impl Fn(usize, std::ops::Range<usize>, &mut [f32]) + Sync,
) -> Vec<f32> {
    let chunks = rows.div_ceil(ROWS);
    let partial: Vec<Vec<f32>> = (0..chunks)
        .into_par_iter()
        .map(|c| {
            let mut acc = vec![0f32; width];
            per_chunk(c, c * ROWS..((c + 1) * ROWS).min(rows), &mut acc);
            acc
        })
        .collect();
    let mut out = vec![0f32; width];
    for p in partial {
        out.iter_mut().zip(p).for_each(|(o, x)| *o += x);
    }
    out
}

// ---------------------------------------------------------------- layer norm

struct LayerNorm {
    eps: f32,
}

/// Σ x with eight partial sums (vectorises; one accumulator is a serial chain).
#[inline(always)]
fn sum8(x: &[f32]) -> f32 {
    let mut acc = [0f32; 8];
    let chunks = x.chunks_exact(8);
    let tail: f32 = chunks.remainder().iter().sum();
    for c in chunks {
        for l in 0..8 {
            acc[l] += c[l];
        }
    }
    acc.iter().sum::<f32>() + tail
}

/// (mean, 1/√(var + ε)) of a row.
#[inline(always)]
pub(crate) fn row_stats(x: &[f32], eps: f32) -> (f32, f32) {
    let n = x.len() as f32;
    let mean = sum8(x) / n;
    let mut acc = [0f32; 8];
    let chunks = x.chunks_exact(8);
    let mut var: f32 = chunks
        .remainder()
        .iter()
        .map(|v| (v - mean) * (v - mean))
        .sum();
    for c in chunks {
        for l in 0..8 {
            acc[l] += (c[l] - mean) * (c[l] - mean);
        }
    }
    var += acc.iter().sum::<f32>();
    (mean, 1.0 / (var / n + eps).sqrt())
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

/// A raw pointer that chunks of a parallel loop write through, each to rows
/// no other chunk touches.
#[derive(Clone, Copy)]
struct SendPtr(*mut f32);
unsafe impl Send for SendPtr {}
unsafe impl Sync for SendPtr {}
impl SendPtr {
    /// # Safety
    /// `[at, at + len)` lies in the buffer and no other thread uses it.
    #[allow(clippy::mut_from_ref)]
    unsafe fn row(&self, at: usize, len: usize) -> &mut [f32] {
        unsafe { std::slice::from_raw_parts_mut(self.0.add(at), len) }
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

// ---------------------------------------------------------------- linear

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

// ---------------------------------------------------------------- GELU

struct Gelu;

const FRAC_1_SQRT_2: f32 = std::f32::consts::FRAC_1_SQRT_2;

/// eˣ in f32 without a libm call, so that loops over it vectorise: Cephes'
/// range reduction x = k·ln2 + r and degree-6 polynomial, 2ᵏ built from
/// bits; relative error < 3e-7 over [-87, 88] (tested against `f32::exp`).
#[inline(always)]
pub fn exp_f32(x: f32) -> f32 {
    let x = x.clamp(-87.0, 88.0);
    // Round to nearest by the 1.5·2²³ trick (no floor/round libcall).
    const MAGIC: f32 = 12_582_912.0;
    let k = (x * std::f32::consts::LOG2_E + MAGIC) - MAGIC;
    let r = x - k * 0.693_359_4 - k * -2.121_944_4e-4;
    let y = ((((1.987_569_1e-4 * r + 1.398_199_9e-3) * r + 8.333_452e-3) * r + 4.166_579_6e-2) * r
        + 1.666_666_5e-1)
        * r
        + 0.5;
    let y = y * r * r + r + 1.0;
    // SAFETY: k is an integer in [-126, 127] after the clamp.
    let k = unsafe { k.to_int_unchecked::<i32>() };
    y * f32::from_bits(((k + 127) << 23) as u32)
}

/// erf(x) by Abramowitz & Stegun 7.1.26 (absolute error < 1.5e-7 in exact
/// arithmetic; < 8e-7 in f32, tested against libm), branch-free so that
/// GELU's loops vectorise.
#[inline(always)]
pub fn erf_f32(x: f32) -> f32 {
    let a = x.abs();
    let t = 1.0 / (1.0 + 0.327_591_1 * a);
    let poly = ((((1.061_405_4 * t - 1.453_152_1) * t + 1.421_413_8) * t - 0.284_496_74) * t
        + 0.254_829_6)
        * t;
    (1.0 - poly * exp_f32(-a * a)).copysign(x)
}

#[inline(always)]
fn gelu_value(x: f32) -> f32 {
    0.5 * x * (1.0 + erf_f32(x * FRAC_1_SQRT_2))
}

#[inline(always)]
fn gelu_slope(x: f32) -> f32 {
    // d/dx x·Φ(x) = Φ(x) + x·φ(x)
    let cdf = 0.5 * (1.0 + erf_f32(x * FRAC_1_SQRT_2));
    let pdf = exp_f32(-0.5 * x * x) * (0.5 * std::f32::consts::FRAC_2_SQRT_PI * FRAC_1_SQRT_2);
    cdf + x * pdf
}

#[multiversion(targets("x86_64+avx512f+avx512vl+avx2+fma", "x86_64+avx2+fma"))]
fn gelu_fwd(o: &mut [f32], x: &[f32]) {
    o.iter_mut().zip(x).for_each(|(o, x)| *o = gelu_value(*x));
}

#[multiversion(targets("x86_64+avx512f+avx512vl+avx2+fma", "x86_64+avx2+fma"))]
fn gelu_bwd(d: &mut [f32], x: &[f32], g: &[f32]) {
    for i in 0..d.len() {
        d[i] = g[i] * gelu_slope(x[i]);
    }
}

impl CustomOp1 for Gelu {
    fn name(&self) -> &'static str {
        "retbench-gelu"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> Result<(CpuStorage, Shape)> {
        let x = slice(s, l, self.name())?;
        let mut out = vec![0f32; x.len()];
        out.par_chunks_mut(4096)
            .zip(x.par_chunks(4096))
            .for_each(|(o, x)| gelu_fwd(o, x));
        Ok((CpuStorage::F32(out), l.shape().clone()))
    }

    fn bwd(&self, x: &Tensor, _res: &Tensor, grad: &Tensor) -> Result<Option<Tensor>> {
        let dx = with_f32(x, self.name(), |x| {
            with_f32(grad, self.name(), |g| {
                let mut dx = vec![0f32; x.len()];
                dx.par_chunks_mut(4096)
                    .zip(x.par_chunks(4096).zip(g.par_chunks(4096)))
                    .for_each(|(d, (x, g))| gelu_bwd(d, x, g));
                Ok(dx)
            })
        })?;
        Ok(Some(tensor(dx, x.shape())?))
    }
}

/// GELU with the exact (erf) form.
pub fn gelu(x: &Tensor) -> Result<Tensor> {
    if fused_for(x) {
        return x.contiguous()?.apply_op1(Gelu);
    }
    x.gelu_erf()
}

// ---------------------------------------------------------------- attention

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

/// Σ a⊙b with eight independent partial sums, so that it vectorises (a
/// float sum in one accumulator is a serial chain the compiler must keep).
#[inline(always)]
fn dot(a: &[f32], b: &[f32]) -> f32 {
    let mut acc = [0f32; 8];
    let (ca, cb) = (a.chunks_exact(8), b.chunks_exact(8));
    let tail: f32 = ca
        .remainder()
        .iter()
        .zip(cb.remainder())
        .map(|(x, y)| x * y)
        .sum();
    for (x, y) in ca.zip(cb) {
        for l in 0..8 {
            acc[l] += x[l] * y[l];
        }
    }
    acc.iter().sum::<f32>() + tail
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

/// y += a·x
#[inline(always)]
fn axpy(y: &mut [f32], a: f32, x: &[f32]) {
    y.iter_mut().zip(x).for_each(|(y, x)| *y += a * x);
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

// ---------------------------------------------------------------- embedding

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

// ---------------------------------------------------------------- slot attention

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

// ---------------------------------------------------------------- loss

/// Masked mean cross-entropy: Σ_r mask_r·(logsumexp(x_r) − x_r[target_r]) /
/// max(1, Σ mask).
struct CrossEntropy;

fn u32s<'a>(s: &'a CpuStorage, l: &Layout, op: &str) -> Result<&'a [u32]> {
    let Some((a, b)) = l.contiguous_offsets() else {
        bail!("{op}: needs contiguous targets");
    };
    match s {
        CpuStorage::U32(v) => Ok(&v[a..b]),
        _ => bail!("{op}: targets must be u32"),
    }
}

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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exp_matches_libm_to_a_few_ulp() {
        let mut worst = 0f64;
        for i in 0..=200_000 {
            let x = -87.0 + 175.0 * i as f32 / 200_000.0;
            let (ours, libm) = (exp_f32(x) as f64, (x as f64).exp());
            worst = worst.max(((ours - libm) / libm).abs());
        }
        assert!(worst < 3e-7, "relative error {worst}");
    }

    #[test]
    fn erf_matches_libm_closely() {
        let mut worst = 0f64;
        for i in 0..=200_000 {
            let x = -6.0 + 12.0 * i as f32 / 200_000.0;
            let (ours, libm) = (erf_f32(x) as f64, candle_core::cpu::erf::erf_f64(x as f64));
            worst = worst.max((ours - libm).abs());
        }
        assert!(worst < 8e-7, "absolute error {worst}"); // 1.5e-7 exact, plus f32 rounding
        assert!(erf_f32(0.0).abs() < 3e-7);
        assert!(erf_f32(-1.0) < 0.0);
    }
}
