//! One-pass scans over memory slots, on plain slices: the kernels behind
//! reads of large memories (docs/ARCHITECTURE.md, "Reads at scale").
//!
//! - [`attend`]: scores, masked softmax and the weighted sum of values for
//!   every query of a call in **one pass over memory** (online softmax over
//!   blocks of rows, as in FlashAttention): nothing of size m is allocated,
//!   and when keys and values are the same rows (recomputed keys, read in
//!   content space) each row comes from DRAM once.
//! - [`top_k`]: the exact k best-scoring occupied rows per query with a
//!   bounded heap per query, in the same single pass.
//!
//! Few queries go row by row with the block re-read from L1; many queries
//! share each block through two small matrix products (the `gemm` crate),
//! so a batch streams memory once for all of its queries. Rows are split in
//! fixed chunks of [`CHUNK`] rows whose partial results are merged in chunk
//! order, on a rayon pool when it has more than one thread: the result does
//! not depend on the thread count.

use multiversion::multiversion;
use rayon::prelude::*;

use crate::math::exp_f32;

/// Rows per parallel chunk (fixed, for thread-independent results).
pub const CHUNK: usize = 16_384;
/// Rows per block of the online softmax: a block's rows are still in L1
/// when their values are summed (1e6 × 64, one query: 64 rows measured 0.89
/// of a read-only pass, 32 rows 1.05, 16 rows 0.75).
const BLOCK: usize = 32;
/// Rows per block when many queries share it through matrix products.
const GEMM_BLOCK: usize = 256;
/// From this many queries per call, blocks go through matrix products.
const GEMM_QUERIES: usize = 8;

/// Memory rows as a scan sees them.
#[derive(Clone, Copy)]
pub struct Rows<'a> {
    /// Keys, m × `key_width`, row-major.
    pub keys: &'a [f32],
    pub key_width: usize,
    /// Values, m × `value_width`; may be `keys` itself (content space).
    pub values: &'a [f32],
    pub value_width: usize,
    /// Which rows hold content; `None` when all do.
    pub occupied: Option<&'a [bool]>,
}

impl Rows<'_> {
    pub fn len(&self) -> usize {
        self.keys.len() / self.key_width.max(1)
    }
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
    #[inline(always)]
    fn live(&self, j: usize) -> bool {
        self.occupied.is_none_or(|o| o[j])
    }
}

/// Running softmax state of a chunk: per query the max score, the sum of
/// exp(score − max), and Σ exp(score − max)·value.
struct Partial {
    max: Vec<f32>,
    sum: Vec<f32>,
    acc: Vec<f32>,
}

impl Partial {
    fn new(nq: usize, vw: usize) -> Self {
        Partial {
            max: vec![f32::NEG_INFINITY; nq],
            sum: vec![0.0; nq],
            acc: vec![0.0; nq * vw],
        }
    }

    /// Moves query `i`'s reference to `new_max` (≥ its max), rescaling.
    #[inline(always)]
    fn rebase(&mut self, i: usize, new_max: f32, vw: usize) {
        let old = self.max[i];
        if new_max > old {
            if old != f32::NEG_INFINITY {
                let r = exp_f32(old - new_max);
                self.sum[i] *= r;
                self.acc[i * vw..(i + 1) * vw]
                    .iter_mut()
                    .for_each(|a| *a *= r);
            }
            self.max[i] = new_max;
        }
    }

    /// Folds a later chunk's state into this one.
    fn merge(&mut self, other: &Partial, vw: usize) {
        for i in 0..self.max.len() {
            if other.max[i] == f32::NEG_INFINITY {
                continue;
            }
            self.rebase(i, other.max[i], vw);
            let r = exp_f32(other.max[i] - self.max[i]);
            self.sum[i] += r * other.sum[i];
            let (a, b) = (
                &mut self.acc[i * vw..(i + 1) * vw],
                &other.acc[i * vw..(i + 1) * vw],
            );
            a.iter_mut().zip(b).for_each(|(a, b)| *a += r * b);
        }
    }
}

/// Σ a⊙b with sixteen partial sums (one AVX-512 register; vectorises),
/// added pairwise at the end.
#[inline(always)]
pub fn dot(a: &[f32], b: &[f32]) -> f32 {
    let mut acc = [0f32; 16];
    let (ca, cb) = (a.chunks_exact(16), b.chunks_exact(16));
    let tail: f32 = ca
        .remainder()
        .iter()
        .zip(cb.remainder())
        .map(|(x, y)| x * y)
        .sum();
    for (x, y) in ca.zip(cb) {
        for l in 0..16 {
            acc[l] += x[l] * y[l];
        }
    }
    // A tree of halves (vector adds) rather than a chain of 15 scalar ones.
    sum_lanes(acc) + tail
}

/// Softmax-weighted values of the occupied rows for `nq` queries (q:
/// nq × key_width), scores scaled by `scale`. Writes `out` (nq ×
/// value_width) normalised, and returns each query's weight mass: 1, or 0
/// (and a zero row) when no row is occupied.
pub fn attend(q: &[f32], nq: usize, rows: Rows<'_>, scale: f32, out: &mut [f32]) -> Vec<f32> {
    let (m, vw) = (rows.len(), rows.value_width);
    assert_eq!(q.len(), nq * rows.key_width, "attend: query width");
    assert_eq!(out.len(), nq * vw, "attend: output size");
    let chunks = m.div_ceil(CHUNK).max(1);
    let run = |c: usize| {
        let mut p = Partial::new(nq, vw);
        attend_chunk(
            q,
            nq,
            &rows,
            scale,
            c * CHUNK..((c + 1) * CHUNK).min(m),
            &mut p,
        );
        p
    };
    let mut total = if chunks == 1 {
        run(0)
    } else if rayon::current_num_threads() > 1 {
        let parts: Vec<Partial> = (0..chunks).into_par_iter().map(run).collect();
        let mut it = parts.into_iter();
        let mut first = it.next().expect("at least one chunk");
        it.for_each(|p| first.merge(&p, vw));
        first
    } else {
        let mut first = run(0);
        (1..chunks).for_each(|c| first.merge(&run(c), vw));
        first
    };
    let mut mass = vec![0f32; nq];
    for i in 0..nq {
        let o = &mut out[i * vw..(i + 1) * vw];
        if total.sum[i] > 0.0 {
            let inv = 1.0 / total.sum[i];
            o.iter_mut()
                .zip(&total.acc[i * vw..(i + 1) * vw])
                .for_each(|(o, a)| *o = a * inv);
            mass[i] = 1.0;
        } else {
            o.fill(0.0);
        }
    }
    total.acc.clear();
    mass
}

#[multiversion(targets("x86_64+avx512f+avx512vl+avx2+fma", "x86_64+avx2+fma"))]
fn attend_chunk(
    q: &[f32],
    nq: usize,
    rows: &Rows<'_>,
    scale: f32,
    range: std::ops::Range<usize>,
    p: &mut Partial,
) {
    if nq >= GEMM_QUERIES {
        return attend_chunk_gemm(q, nq, rows, scale, range, p);
    }
    #[cfg(target_arch = "x86_64")]
    if crate::isa::avx512() {
        // SAFETY: the CPU has AVX-512F (`isa::avx512` checked it).
        let done = unsafe {
            match (rows.key_width, rows.value_width) {
                (64, 64) => avx512::attend::<4, 4>(q, nq, rows, scale, range.clone(), p),
                (32, 32) => avx512::attend::<2, 2>(q, nq, rows, scale, range.clone(), p),
                (128, 128) => avx512::attend::<8, 8>(q, nq, rows, scale, range.clone(), p),
                (16, 16) => avx512::attend::<1, 1>(q, nq, rows, scale, range.clone(), p),
                (128, 64) => avx512::attend::<8, 4>(q, nq, rows, scale, range.clone(), p),
                (64, 128) => avx512::attend::<4, 8>(q, nq, rows, scale, range.clone(), p),
                _ => false,
            }
        };
        if done {
            return;
        }
    }
    // The compiler's vectorisation of these loops (widths unknown) is the
    // fallback; a const-width version of them measured slower.
    attend_rows(q, nq, rows, scale, range, p);
}

/// exp(s − max), exactly 0 for masked rows and for weights below f32's
/// normal range (e^-87), so that rows with no weight are skipped. Sixteen
/// partial sums, so that the loop vectorises (one running sum is a chain
/// the compiler must keep scalar; it was a third of a batch-64 read).
#[inline(always)]
fn weights(s: &mut [f32], mx: f32) -> f32 {
    // Both sides computed, then selected: a branch here mispredicts on
    // every mix of kept and vanishing weights (clustered keys) and keeps
    // the loop scalar.
    let w = |x: f32| {
        let x = x - mx;
        let e = exp_f32(x);
        if x < -87.0 { 0.0 } else { e }
    };
    let mut acc = [0f32; 16];
    let mut chunks = s.chunks_exact_mut(16);
    for c in &mut chunks {
        for l in 0..16 {
            c[l] = w(c[l]);
            acc[l] += c[l];
        }
    }
    let mut tail = 0f32;
    for x in chunks.into_remainder() {
        *x = w(*x);
        tail += *x;
    }
    sum_lanes(acc) + tail
}

/// Σ of sixteen partial sums, pairwise.
#[inline(always)]
fn sum_lanes(mut acc: [f32; 16]) -> f32 {
    let mut w = 8;
    while w > 0 {
        for l in 0..w {
            acc[l] += acc[l + w];
        }
        w /= 2;
    }
    acc[0]
}

/// The largest of `s` (−∞ when empty), sixteen lanes at a time (a fold
/// with `f32::max` stays scalar: a chain of dependent maxima).
#[inline(always)]
fn block_max(s: &[f32]) -> f32 {
    let mut m = [f32::NEG_INFINITY; 16];
    let mut chunks = s.chunks_exact(16);
    for c in &mut chunks {
        for l in 0..16 {
            m[l] = if c[l] > m[l] { c[l] } else { m[l] };
        }
    }
    let tail = chunks
        .remainder()
        .iter()
        .copied()
        .fold(f32::NEG_INFINITY, f32::max);
    m.iter().copied().fold(tail, f32::max)
}

#[inline(always)]
fn attend_rows(
    q: &[f32],
    nq: usize,
    rows: &Rows<'_>,
    scale: f32,
    range: std::ops::Range<usize>,
    p: &mut Partial,
) {
    let (kw, vw) = (rows.key_width, rows.value_width);
    let mut s = [0f32; BLOCK];
    let mut start = range.start;
    while start < range.end {
        let end = (start + BLOCK).min(range.end);
        let bl = end - start;
        for i in 0..nq {
            let qi = &q[i * kw..(i + 1) * kw];
            let mut bmax = f32::NEG_INFINITY;
            for (r, sr) in s[..bl].iter_mut().enumerate() {
                let j = start + r;
                *sr = if rows.live(j) {
                    scale * dot(qi, &rows.keys[j * kw..(j + 1) * kw])
                } else {
                    f32::NEG_INFINITY
                };
                bmax = bmax.max(*sr);
            }
            if bmax == f32::NEG_INFINITY {
                continue;
            }
            p.rebase(i, bmax, vw);
            p.sum[i] += weights(&mut s[..bl], p.max[i]);
            let acc = &mut p.acc[i * vw..(i + 1) * vw];
            for (r, &w) in s[..bl].iter().enumerate() {
                if w != 0.0 {
                    let j = start + r;
                    let v = &rows.values[j * vw..(j + 1) * vw];
                    acc.iter_mut().zip(v).for_each(|(a, v)| *a += w * v);
                }
            }
        }
        start = end;
    }
}

/// The few-query kernel in AVX-512 intrinsics, for widths that are
/// multiples of 16 (`NK`, `NV` registers per key and value row): the
/// compiler's own vectorisation of the loops above reduces each dot product
/// lane by lane.
#[cfg(target_arch = "x86_64")]
mod avx512 {
    use super::{BLOCK, Partial, Rows, block_max};
    use std::arch::x86_64::*;

    /// e^x lane-wise, the polynomial of `fused::exp_f32`; lanes below −87
    /// give exactly 0.
    ///
    /// # Safety
    /// The CPU supports AVX-512F (and VNNI where a `target_feature` below
    /// says so; callers check with `crate::isa`), and slices
    /// hold what the asserts say.
    #[inline(always)]
    unsafe fn exp(x: __m512) -> __m512 {
        // SAFETY: register arithmetic only (no memory access); the caller
        // runs on a CPU with AVX-512F, as every function of this module.
        unsafe {
            let tiny = _mm512_cmp_ps_mask::<_CMP_LT_OQ>(x, _mm512_set1_ps(-87.0));
            let x = _mm512_min_ps(x, _mm512_set1_ps(88.0));
            let x = _mm512_max_ps(x, _mm512_set1_ps(-87.0));
            let k = _mm512_roundscale_ps::<{ _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC }>(
                _mm512_mul_ps(x, _mm512_set1_ps(std::f32::consts::LOG2_E)),
            );
            let r = _mm512_fnmadd_ps(k, _mm512_set1_ps(0.693_359_4), x);
            let r = _mm512_fnmadd_ps(k, _mm512_set1_ps(-2.121_944_4e-4), r);
            let mut y = _mm512_set1_ps(1.987_569_1e-4);
            for c in [
                1.398_199_9e-3,
                8.333_452e-3,
                4.166_579_6e-2,
                1.666_666_5e-1,
                0.5,
            ] {
                y = _mm512_fmadd_ps(y, r, _mm512_set1_ps(c));
            }
            let y = _mm512_fmadd_ps(
                _mm512_mul_ps(y, r),
                r,
                _mm512_add_ps(r, _mm512_set1_ps(1.0)),
            );
            let y = _mm512_scalef_ps(y, k);
            _mm512_maskz_mov_ps(!tiny, y)
        }
    }

    /// Rows ahead of the one being scored that are prefetched.
    const PREFETCH_ROWS: usize = 256;

    /// Lane l of the result = Σ of the 16 lanes of a[l]: the reductions of
    /// 16 rows' dot products share their shuffles (a tree of 15 adds).
    ///
    /// # Safety
    /// The CPU supports AVX-512F (and VNNI where a `target_feature` below
    /// says so; callers check with `crate::isa`), and slices
    /// hold what the asserts say.
    #[inline(always)]
    unsafe fn sum16(a: [__m512; 16]) -> __m512 {
        // SAFETY: shuffles and adds of registers (no memory access); the
        // caller runs on a CPU with AVX-512F.
        unsafe {
            // Pairs: lanes of a[2j], a[2j+1] interleaved within 128 bits.
            let mut b = [_mm512_setzero_ps(); 8];
            for (j, bj) in b.iter_mut().enumerate() {
                let (x, y) = (a[2 * j], a[2 * j + 1]);
                *bj = _mm512_add_ps(_mm512_unpacklo_ps(x, y), _mm512_unpackhi_ps(x, y));
            }
            // Quads: each 128-bit lane holds partial sums of 4 rows.
            let mut c = [_mm512_setzero_ps(); 4];
            for (j, cj) in c.iter_mut().enumerate() {
                let (x, y) = (_mm512_castps_pd(b[2 * j]), _mm512_castps_pd(b[2 * j + 1]));
                *cj = _mm512_add_ps(
                    _mm512_castpd_ps(_mm512_unpacklo_pd(x, y)),
                    _mm512_castpd_ps(_mm512_unpackhi_pd(x, y)),
                );
            }
            // Octets, then all 16: fold 128-bit lanes across registers.
            macro_rules! fold {
                ($x:expr, $y:expr) => {
                    _mm512_add_ps(
                        _mm512_shuffle_f32x4::<0b10_00_10_00>($x, $y),
                        _mm512_shuffle_f32x4::<0b11_01_11_01>($x, $y),
                    )
                };
            }
            let d0 = fold!(c[0], c[1]);
            let d1 = fold!(c[2], c[3]);
            fold!(d0, d1)
        }
    }

    /// # Safety
    /// The CPU supports AVX-512F (and VNNI where a `target_feature` below
    /// says so; callers check with `crate::isa`), and slices
    /// hold what the asserts say.
    #[inline(always)]
    unsafe fn load<const N: usize>(x: &[f32]) -> [__m512; N] {
        debug_assert!(x.len() >= N * 16);
        // SAFETY: the caller's slice holds N·16 floats.
        let mut out = [unsafe { _mm512_setzero_ps() }; N];
        for (c, o) in out.iter_mut().enumerate() {
            *o = unsafe { _mm512_loadu_ps(x.as_ptr().add(c * 16)) };
        }
        out
    }

    /// s[r] = scale·(q·key r) for the rows of `keys` (s.len() rows of NK·16).
    ///
    /// # Safety
    /// The CPU supports AVX-512F (and VNNI where a `target_feature` below
    /// says so; callers check with `crate::isa`), and slices
    /// hold what the asserts say.
    #[inline]
    #[target_feature(enable = "avx512f")]
    pub(super) unsafe fn scores<const NK: usize>(
        q: &[f32],
        keys: &[f32],
        scale: f32,
        s: &mut [f32],
        ahead: usize,
    ) {
        let kw = NK * 16;
        let bl = s.len();
        assert!(keys.len() >= bl * kw && q.len() >= kw);
        // SAFETY: every load reads whole rows inside `keys`; prefetches
        // may point past it, which is allowed.
        unsafe {
            let qi: [__m512; NK] = load(q);
            let sc = _mm512_set1_ps(scale);
            // (No closure: closures do not inherit `target_feature`.)
            macro_rules! row {
                ($r:expr) => {{
                    let k = keys.as_ptr().add($r * kw);
                    // Far enough ahead to keep DRAM busy while this block
                    // computes (one line per 16 floats), and only within
                    // the rows that follow (`ahead` of them past the
                    // block): a prefetch past the end of a small table
                    // (product-key halves) can cost a page walk each.
                    if $r + PREFETCH_ROWS < bl + ahead {
                        for c in 0..NK {
                            _mm_prefetch::<_MM_HINT_T0>(
                                k.wrapping_add(PREFETCH_ROWS * kw + c * 16).cast(),
                            );
                        }
                    }
                    let mut a = _mm512_mul_ps(qi[0], _mm512_loadu_ps(k));
                    for c in 1..NK {
                        a = _mm512_fmadd_ps(qi[c], _mm512_loadu_ps(k.add(c * 16)), a);
                    }
                    a
                }};
            }
            let mut r = 0;
            while r + 16 <= bl {
                let mut a = [_mm512_setzero_ps(); 16];
                for (l, al) in a.iter_mut().enumerate() {
                    *al = row!(r + l);
                }
                _mm512_storeu_ps(s.as_mut_ptr().add(r), _mm512_mul_ps(sum16(a), sc));
                r += 16;
            }
            while r < bl {
                s[r] = _mm512_reduce_add_ps(_mm512_mul_ps(row!(r), sc));
                r += 1;
            }
        }
    }

    /// s[r] = q·key r for rows stored reduced: f16 (`HALF`) or int8 codes
    /// times a per-row scale, NK·16 components a row, decoded in registers
    /// (no buffer). `codes` holds s.len() rows of such bytes.
    ///
    /// # Safety
    /// The CPU supports AVX-512F (and VNNI where a `target_feature` below
    /// says so; callers check with `crate::isa`), and slices
    /// hold what the asserts say.
    #[inline]
    #[target_feature(enable = "avx512f")]
    pub(super) unsafe fn scores_coded<const NK: usize, const HALF: bool>(
        q: &[f32],
        codes: &[u8],
        scales: &[f32],
        s: &mut [f32],
    ) {
        let kw = NK * 16;
        let rb = if HALF { 2 * kw } else { kw };
        let bl = s.len();
        assert!(codes.len() >= bl * rb && q.len() >= kw && (HALF || scales.len() >= bl));
        // SAFETY: every load reads whole rows inside `codes`; prefetches
        // may point past it, which is allowed.
        unsafe {
            let qi: [__m512; NK] = load(q);
            macro_rules! lanes {
                ($p:expr, $c:expr) => {
                    if HALF {
                        _mm512_cvtph_ps(_mm256_loadu_si256($p.add($c * 32).cast()))
                    } else {
                        _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(_mm_loadu_si128(
                            $p.add($c * 16).cast(),
                        )))
                    }
                };
            }
            macro_rules! row {
                ($r:expr) => {{
                    let p = codes.as_ptr().add($r * rb);
                    for line in 0..rb.div_ceil(64) {
                        _mm_prefetch::<_MM_HINT_T0>(
                            p.wrapping_add(PREFETCH_ROWS * rb + line * 64).cast(),
                        );
                    }
                    let mut a = _mm512_mul_ps(qi[0], lanes!(p, 0));
                    for c in 1..NK {
                        a = _mm512_fmadd_ps(qi[c], lanes!(p, c), a);
                    }
                    a
                }};
            }
            let mut r = 0;
            while r + 16 <= bl {
                let mut a = [_mm512_setzero_ps(); 16];
                for (l, al) in a.iter_mut().enumerate() {
                    *al = row!(r + l);
                }
                let mut v = sum16(a);
                if !HALF {
                    v = _mm512_mul_ps(v, _mm512_loadu_ps(scales.as_ptr().add(r)));
                }
                _mm512_storeu_ps(s.as_mut_ptr().add(r), v);
                r += 16;
            }
            while r < bl {
                let v = _mm512_reduce_add_ps(row!(r));
                s[r] = if HALF { v } else { v * scales[r] };
                r += 1;
            }
        }
    }

    /// s[r] = q·key r for int8 rows (NZ·64 codes a row) by VNNI integer dot
    /// products: the query quantised to int8 (scale `qs`) and shifted by
    /// 128 to unsigned, so s[r] = qs·scale_r·(Σ (q_e + 128)·c_e − 128·Σ c_e),
    /// with Σ c_e stored per row. One instruction per 64 components.
    ///
    /// # Safety
    /// The CPU supports AVX-512F (and VNNI where a `target_feature` below
    /// says so; callers check with `crate::isa`), and slices
    /// hold what the asserts say.
    #[inline]
    #[target_feature(enable = "avx512f,avx512vnni")]
    pub(super) unsafe fn scores_vnni<const NZ: usize>(
        qu: &[u8],
        qs: f32,
        codes: &[u8],
        sums: &[i32],
        scales: &[f32],
        s: &mut [f32],
    ) {
        let rb = NZ * 64;
        let bl = s.len();
        assert!(codes.len() >= bl * rb && qu.len() >= rb && sums.len() >= bl && scales.len() >= bl);
        // SAFETY: every load reads whole rows inside `codes`; prefetches
        // may point past it, which is allowed.
        unsafe {
            let mut qz = [_mm512_setzero_si512(); NZ];
            for (c, z) in qz.iter_mut().enumerate() {
                *z = _mm512_loadu_si512(qu.as_ptr().add(c * 64).cast());
            }
            macro_rules! row {
                ($r:expr) => {{
                    let p = codes.as_ptr().add($r * rb);
                    for c in 0..NZ {
                        _mm_prefetch::<_MM_HINT_T0>(
                            p.wrapping_add(PREFETCH_ROWS * rb + c * 64).cast(),
                        );
                    }
                    let mut a = _mm512_dpbusd_epi32(
                        _mm512_setzero_si512(),
                        qz[0],
                        _mm512_loadu_si512(p.cast()),
                    );
                    for c in 1..NZ {
                        a = _mm512_dpbusd_epi32(a, qz[c], _mm512_loadu_si512(p.add(c * 64).cast()));
                    }
                    _mm512_cvtepi32_ps(a)
                }};
            }
            let shift = _mm512_set1_ps(128.0);
            let qsv = _mm512_set1_ps(qs);
            let mut r = 0;
            while r + 16 <= bl {
                let mut a = [_mm512_setzero_ps(); 16];
                for (l, al) in a.iter_mut().enumerate() {
                    *al = row!(r + l);
                }
                let sum = _mm512_cvtepi32_ps(_mm512_loadu_si512(sums.as_ptr().add(r).cast()));
                let v = _mm512_fnmadd_ps(shift, sum, sum16(a));
                let sc = _mm512_mul_ps(qsv, _mm512_loadu_ps(scales.as_ptr().add(r)));
                _mm512_storeu_ps(s.as_mut_ptr().add(r), _mm512_mul_ps(v, sc));
                r += 16;
            }
            while r < bl {
                let v = _mm512_reduce_add_ps(row!(r)) - 128.0 * sums[r] as f32;
                s[r] = v * qs * scales[r];
                r += 1;
            }
        }
    }

    /// Returns false (doing nothing) when the block layout does not apply.
    ///
    /// # Safety
    /// The CPU supports AVX-512F (and VNNI where a `target_feature` below
    /// says so; callers check with `crate::isa`), and slices
    /// hold what the asserts say.
    #[target_feature(enable = "avx512f")]
    pub(super) unsafe fn attend<const NK: usize, const NV: usize>(
        q: &[f32],
        nq: usize,
        rows: &Rows<'_>,
        scale: f32,
        range: std::ops::Range<usize>,
        p: &mut Partial,
    ) -> bool {
        let (kw, vw) = (NK * 16, NV * 16);
        let mut s = [0f32; BLOCK];
        let mut start = range.start;
        while start < range.end {
            let end = (start + BLOCK).min(range.end);
            let bl = end - start;
            let keys = &rows.keys[start * kw..end * kw];
            let values = &rows.values[start * vw..end * vw];
            for i in 0..nq {
                // SAFETY: every load below reads whole rows of the slices.
                unsafe {
                    let ahead = rows.len() - end;
                    scores::<NK>(&q[i * kw..(i + 1) * kw], keys, scale, &mut s[..bl], ahead);
                    if let Some(occ) = rows.occupied {
                        for (sr, &o) in s[..bl].iter_mut().zip(&occ[start..end]) {
                            if !o {
                                *sr = f32::NEG_INFINITY;
                            }
                        }
                    }
                    let bmax = block_max(&s[..bl]);
                    if bmax == f32::NEG_INFINITY {
                        continue;
                    }
                    p.rebase(i, bmax, vw);
                    let mx = _mm512_set1_ps(p.max[i]);
                    let mut sum = _mm512_setzero_ps();
                    let mut r = 0;
                    while r < bl {
                        let lanes = (bl - r).min(16);
                        let mask: __mmask16 = if lanes == 16 { !0 } else { (1u16 << lanes) - 1 };
                        let x = _mm512_maskz_loadu_ps(mask, s.as_ptr().add(r));
                        let w = _mm512_maskz_mov_ps(mask, exp(_mm512_sub_ps(x, mx)));
                        _mm512_mask_storeu_ps(s.as_mut_ptr().add(r), mask, w);
                        sum = _mm512_add_ps(sum, w);
                        r += 16;
                    }
                    p.sum[i] += _mm512_reduce_add_ps(sum);
                    let slot = &mut p.acc[i * vw..(i + 1) * vw];
                    let mut acc: [__m512; NV] = load(slot);
                    // Four sets of accumulators (rows r mod 4): with one,
                    // each row waits out the multiply-add latency of the
                    // last, a quarter of a block's memory time at NV = 4.
                    let mut more = [[_mm512_setzero_ps(); NV]; 3];
                    // Branch-free: zero weights add zero, and skipping
                    // them costs a mispredicted branch per row.
                    let mut r = 0;
                    while r + 4 <= bl {
                        let v = values.as_ptr().add(r * vw);
                        // The values of rows ahead, even where they are the
                        // keys just fetched: with prefetches issued only while
                        // scoring, DRAM idles through this loop (measured:
                        // 0.83 of a read-only pass without these, 1.05 with).
                        if r + 4 + PREFETCH_ROWS <= bl + ahead {
                            for line in 0..4 * NV {
                                _mm_prefetch::<_MM_HINT_T0>(
                                    v.wrapping_add(PREFETCH_ROWS * vw + line * 16).cast(),
                                );
                            }
                        }
                        let w = [
                            _mm512_set1_ps(s[r]),
                            _mm512_set1_ps(s[r + 1]),
                            _mm512_set1_ps(s[r + 2]),
                            _mm512_set1_ps(s[r + 3]),
                        ];
                        for c in 0..NV {
                            acc[c] = _mm512_fmadd_ps(w[0], _mm512_loadu_ps(v.add(c * 16)), acc[c]);
                            for (j, m) in more.iter_mut().enumerate() {
                                let x = _mm512_loadu_ps(v.add((j + 1) * vw + c * 16));
                                m[c] = _mm512_fmadd_ps(w[j + 1], x, m[c]);
                            }
                        }
                        r += 4;
                    }
                    while r < bl {
                        let v = values.as_ptr().add(r * vw);
                        let w0 = _mm512_set1_ps(s[r]);
                        for (c, a) in acc.iter_mut().enumerate() {
                            *a = _mm512_fmadd_ps(w0, _mm512_loadu_ps(v.add(c * 16)), *a);
                        }
                        r += 1;
                    }
                    for (c, a) in acc.iter().enumerate() {
                        let sum = _mm512_add_ps(
                            _mm512_add_ps(*a, more[0][c]),
                            _mm512_add_ps(more[1][c], more[2][c]),
                        );
                        _mm512_storeu_ps(slot.as_mut_ptr().add(c * 16), sum);
                    }
                }
            }
            start = end;
        }
        true
    }
}

/// S [nq, rows of `block`] = scale·Q·Kᵀ for a block of rows, as one
/// matrix product (row stride of S: the block's length).
#[inline(always)]
fn gemm_scores(
    q: &[f32],
    nq: usize,
    rows: &Rows<'_>,
    block: std::ops::Range<usize>,
    scale: f32,
    s: &mut [f32],
) {
    let (kw, bl) = (rows.key_width, block.len());
    assert!(s.len() >= nq * bl && q.len() >= nq * kw && rows.keys.len() >= block.end * kw);
    // SAFETY: S [nq, bl] row-major; Q [nq, kw] row-major; the block's keys
    // [bl, kw] row-major read as Kᵀ [kw, bl]; all in bounds (asserted).
    unsafe {
        gemm::gemm(
            nq,
            bl,
            kw,
            s.as_mut_ptr(),
            1,
            bl as isize,
            false,
            q.as_ptr(),
            1,
            kw as isize,
            rows.keys[block.start * kw..].as_ptr(),
            kw as isize,
            1,
            0.0,
            scale,
            false,
            false,
            false,
            gemm::Parallelism::None,
        )
    };
}

/// The chunk for many queries: per block, S = Q·Kᵀ and acc += P·V as
/// matrix products, the softmax bookkeeping between them.
#[inline(always)]
fn attend_chunk_gemm(
    q: &[f32],
    nq: usize,
    rows: &Rows<'_>,
    scale: f32,
    range: std::ops::Range<usize>,
    p: &mut Partial,
) {
    let vw = rows.value_width;
    let mut s = vec![0f32; nq * GEMM_BLOCK];
    let mut start = range.start;
    while start < range.end {
        let end = (start + GEMM_BLOCK).min(range.end);
        let bl = end - start;
        gemm_scores(q, nq, rows, start..end, scale, &mut s);
        for i in 0..nq {
            let si = &mut s[i * bl..(i + 1) * bl];
            if let Some(occ) = rows.occupied {
                for (sr, &o) in si.iter_mut().zip(&occ[start..end]) {
                    if !o {
                        *sr = f32::NEG_INFINITY;
                    }
                }
            }
            let bmax = block_max(si);
            if bmax == f32::NEG_INFINITY {
                si.fill(0.0);
                continue;
            }
            p.rebase(i, bmax, vw);
            p.sum[i] += weights(si, p.max[i]);
        }
        // SAFETY: acc [nq, vw] += P [nq, bl] · V_block [bl, vw], row-major.
        unsafe {
            gemm::gemm(
                nq,
                vw,
                bl,
                p.acc.as_mut_ptr(),
                1,
                vw as isize,
                true,
                s.as_ptr(),
                1,
                bl as isize,
                rows.values[start * vw..].as_ptr(),
                1,
                vw as isize,
                1.0,
                1.0,
                false,
                false,
                false,
                gemm::Parallelism::None,
            )
        };
        start = end;
    }
}

/// Unscaled scores of a block by the AVX-512 kernel, where the CPU and
/// width allow; false otherwise.
#[inline(always)]
fn fast_scores(q: &[f32], keys: &[f32], kw: usize, s: &mut [f32], ahead: usize) -> bool {
    #[cfg(target_arch = "x86_64")]
    if crate::isa::avx512() {
        // SAFETY: the CPU has AVX-512F (`isa::avx512` checked it).
        unsafe {
            match kw {
                16 => avx512::scores::<1>(q, keys, 1.0, s, ahead),
                32 => avx512::scores::<2>(q, keys, 1.0, s, ahead),
                64 => avx512::scores::<4>(q, keys, 1.0, s, ahead),
                128 => avx512::scores::<8>(q, keys, 1.0, s, ahead),
                _ => return false,
            }
        }
        return true;
    }
    false
}

/// Whether [`coded_scores`] has a kernel for rows `kw` wide on this CPU.
pub(crate) fn coded_direct(kw: usize) -> bool {
    #[cfg(target_arch = "x86_64")]
    if matches!(kw, 16 | 32 | 64 | 128) && crate::isa::avx512() {
        return true;
    }
    let _ = kw;
    false
}

/// Scores of a block of reduced-precision rows (f16 when `scales` is
/// `None`, else int8 codes times the row scales) by the AVX-512 kernel,
/// decoded in registers; false (nothing done) where the CPU or the width
/// does not allow it.
#[inline(always)]
pub(crate) fn coded_scores(
    q: &[f32],
    codes: &[u8],
    scales: Option<&[f32]>,
    kw: usize,
    s: &mut [f32],
) -> bool {
    #[cfg(target_arch = "x86_64")]
    if crate::isa::avx512() {
        // SAFETY: the CPU has AVX-512F (`isa::avx512` checked it).
        unsafe {
            match (kw, scales) {
                (16, None) => avx512::scores_coded::<1, true>(q, codes, &[], s),
                (32, None) => avx512::scores_coded::<2, true>(q, codes, &[], s),
                (64, None) => avx512::scores_coded::<4, true>(q, codes, &[], s),
                (128, None) => avx512::scores_coded::<8, true>(q, codes, &[], s),
                (16, Some(sc)) => avx512::scores_coded::<1, false>(q, codes, sc, s),
                (32, Some(sc)) => avx512::scores_coded::<2, false>(q, codes, sc, s),
                (64, Some(sc)) => avx512::scores_coded::<4, false>(q, codes, sc, s),
                (128, Some(sc)) => avx512::scores_coded::<8, false>(q, codes, sc, s),
                _ => return false,
            }
        }
        return true;
    }
    let _ = (q, codes, scales, kw, s);
    false
}

/// Whether [`int8_scores`] has a kernel for rows `kw` wide on this CPU.
pub(crate) fn int8_direct(kw: usize) -> bool {
    #[cfg(target_arch = "x86_64")]
    if kw.is_multiple_of(64) && kw <= 128 && crate::isa::vnni() {
        return true;
    }
    let _ = kw;
    false
}

/// Scores of a block of int8 rows against a query from [`crate::quant::quantise_query`]
/// by VNNI dot products, where [`int8_direct`] holds.
#[inline(always)]
pub(crate) fn int8_scores(
    qu: &[u8],
    qs: f32,
    codes: &[u8],
    sums: &[i32],
    scales: &[f32],
    s: &mut [f32],
) {
    #[cfg(target_arch = "x86_64")]
    {
        // SAFETY: the caller checked `int8_direct` for this width.
        unsafe {
            match codes.len() / s.len().max(1) {
                _ if s.is_empty() => {}
                64 => avx512::scores_vnni::<1>(qu, qs, codes, sums, scales, s),
                128 => avx512::scores_vnni::<2>(qu, qs, codes, sums, scales, s),
                w => unreachable!("no VNNI kernel for width {w}"),
            }
        }
    }
    #[cfg(not(target_arch = "x86_64"))]
    unreachable!("no VNNI kernel off x86_64: {qu:?} {qs} {codes:?} {sums:?} {scales:?} {s:?}");
}

/// A query's k best (score, row) so far, under one total order: higher
/// score, then lower row. A reservoir rather than a heap: entries that beat
/// the cut are appended, and when 4k have gathered one selection keeps the
/// k best and moves the cut to the k-th (amortised O(1) an entry; a binary
/// heap's sift per replacement dominated small scans, measured 5.5 µs for
/// the k = 32 best of 1000 sub-keys). Entries are packed into one integer
/// each ([`rank`]), so that the selection compares plain `u64`s (it took a
/// third of that scan when it compared float, then row).
struct Best {
    k: usize,
    items: Vec<u64>,
    /// The k-th best kept at the last selection; nothing worse enters.
    cut: Option<u64>,
}

/// (score, row) as one integer that orders like the pair under "higher
/// score (`f32::total_cmp`), then lower row": the score's bits made
/// monotone in the high half, the row complemented in the low half.
#[inline(always)]
fn rank(score: f32, row: u32) -> u64 {
    let b = score.to_bits();
    let ordered = if b >> 31 == 1 { !b } else { b | 1 << 31 };
    (ordered as u64) << 32 | (!row) as u64
}

/// The inverse of [`rank`].
#[inline(always)]
fn unrank(r: u64) -> (f32, u32) {
    let ordered = (r >> 32) as u32;
    let b = if ordered >> 31 == 1 {
        ordered & !(1 << 31)
    } else {
        !ordered
    };
    (f32::from_bits(b), !(r as u32))
}

impl Best {
    fn new(k: usize) -> Self {
        Best {
            k,
            items: Vec::with_capacity(4 * k.max(8)),
            cut: None,
        }
    }
    /// The score a row must beat to enter when rows arrive in increasing
    /// order (an equal score never does then).
    #[inline(always)]
    fn bar(&self) -> f32 {
        self.cut.map_or(f32::NEG_INFINITY, |c| unrank(c).0)
    }
    #[inline(always)]
    fn offer(&mut self, score: f32, row: u32) {
        let r = rank(score, row);
        if self.k == 0 || self.cut.is_some_and(|c| r <= c) {
            return;
        }
        self.items.push(r);
        if self.items.len() >= 4 * self.k.max(8) {
            self.select();
        }
    }
    /// Keeps the k best and moves the cut to the worst of them.
    fn select(&mut self) {
        let n = self.items.len();
        if n > self.k {
            // The k largest end up at the back, the k-th largest first.
            self.items.select_nth_unstable(n - self.k);
            self.items.drain(..n - self.k);
        }
        if self.items.len() == self.k {
            self.cut = self.items.iter().min().copied();
        }
    }
    /// The kept entries (at most k) as (score, row), in no order.
    fn into_items(mut self) -> Vec<(f32, u32)> {
        self.select();
        self.items.into_iter().map(unrank).collect()
    }
    /// The kept rows, increasing, padded with `u32::MAX` to k.
    fn into_rows(mut self) -> Vec<u32> {
        let k = self.k;
        self.select();
        let mut out: Vec<u32> = self.items.iter().map(|&r| !(r as u32)).collect();
        out.sort_unstable();
        out.resize(k, u32::MAX);
        out
    }
}

/// Keys as a top-k scan reads them: f32 rows in place, or stored otherwise
/// (reduced precision) and scored straight from storage or decoded a block
/// at a time into an L1-sized buffer, so that one scan serves every
/// storage.
pub trait KeySource: Sync {
    /// Floats per key row.
    fn width(&self) -> usize;
    /// Rows.
    fn rows(&self) -> usize;
    /// Whether row `j` holds content.
    fn live(&self, j: usize) -> bool;
    /// The keys of rows `range` as f32, row-major: borrowed where they are
    /// stored so, else decoded into `buf`.
    fn block<'b>(&'b self, range: std::ops::Range<usize>, buf: &'b mut Vec<f32>) -> &'b [f32];
    /// Whether [`KeySource::scores`] serves this source (then a scan for
    /// few queries never decodes blocks).
    fn direct(&self) -> bool {
        false
    }
    /// What [`KeySource::scores`] needs of a query beyond its floats
    /// (int8 codes for integer kernels), computed once per query and scan
    /// chunk.
    fn prepare(&self, _q: &[f32]) -> Prepared {
        Prepared::default()
    }
    /// s[r] = q·key of row `range.start + r`, straight from storage.
    fn scores(
        &self,
        _q: &[f32],
        _prepared: &Prepared,
        _range: std::ops::Range<usize>,
        _s: &mut [f32],
    ) {
        unreachable!("scores is only called where direct() holds")
    }
}

/// A query as a [`KeySource`] with integer kernels wants it: int8 codes
/// shifted to unsigned (at most 128 wide) and their scale.
#[derive(Clone, Copy)]
pub struct Prepared {
    pub codes: [u8; 128],
    pub scale: f32,
}

impl Default for Prepared {
    fn default() -> Self {
        Prepared {
            codes: [128; 128],
            scale: 1.0,
        }
    }
}

impl KeySource for Rows<'_> {
    fn width(&self) -> usize {
        self.key_width
    }
    fn rows(&self) -> usize {
        self.len()
    }
    #[inline(always)]
    fn live(&self, j: usize) -> bool {
        Rows::live(self, j)
    }
    #[inline(always)]
    fn block<'b>(&'b self, range: std::ops::Range<usize>, _: &'b mut Vec<f32>) -> &'b [f32] {
        &self.keys[range.start * self.key_width..range.end * self.key_width]
    }
}

/// The `k` occupied rows with the highest q·key per query (ties to the lower
/// row), as nq × k row indices in increasing row order, padded with
/// `u32::MAX` when fewer than k rows are occupied.
pub fn top_k(q: &[f32], nq: usize, rows: Rows<'_>, k: usize) -> Vec<u32> {
    top_k_in(q, nq, &rows, k)
}

/// [`top_k`] over any [`KeySource`].
pub fn top_k_in<S: KeySource>(q: &[f32], nq: usize, keys: &S, k: usize) -> Vec<u32> {
    let m = keys.rows();
    assert_eq!(q.len(), nq * keys.width(), "top_k: query width");
    let chunks = m.div_ceil(CHUNK).max(1);
    let range = |c: usize| c * CHUNK..((c + 1) * CHUNK).min(m);
    let fresh = || -> Vec<Best> { (0..nq).map(|_| Best::new(k)).collect() };
    // The k best under one total order (score, then lower row) whatever
    // the order rows are offered in: one heap per query over every chunk
    // on one thread (a heap per chunk would refill k entries 61 times at
    // 1e6 rows), per-chunk heaps merged in chunk order on several.
    let total = if chunks > 1 && rayon::current_num_threads() > 1 {
        let parts: Vec<Vec<Best>> = (0..chunks)
            .into_par_iter()
            .map(|c| {
                let mut best = fresh();
                top_k_chunk(q, nq, keys, range(c), &mut best);
                best
            })
            .collect();
        let mut parts = parts.into_iter();
        let mut total = parts.next().expect("at least one chunk");
        for part in parts {
            for (t, p) in total.iter_mut().zip(part) {
                p.into_items().into_iter().for_each(|w| t.offer(w.0, w.1));
            }
        }
        total
    } else {
        let mut best = fresh();
        for c in 0..chunks {
            top_k_chunk(q, nq, keys, range(c), &mut best);
        }
        best
    };
    let mut out = vec![u32::MAX; nq * k];
    for (i, best) in total.into_iter().enumerate() {
        out[i * k..(i + 1) * k].copy_from_slice(&best.into_rows());
    }
    out
}

/// The `k` best of `candidates` (row ids, `u32::MAX` skipped) per query by
/// exact q·key over f32 rows `keys` (width `kw`): the re-ranking step after
/// a scan of reduced-precision keys. Same output form as [`top_k`].
pub fn rerank(
    q: &[f32],
    nq: usize,
    keys: &[f32],
    kw: usize,
    candidates: &[u32],
    k: usize,
) -> Vec<u32> {
    let per = candidates.len() / nq.max(1);
    let mut out = vec![u32::MAX; nq * k];
    for i in 0..nq {
        let qi = &q[i * kw..(i + 1) * kw];
        let mut best = Best::new(k);
        // Candidates come in increasing row order, as `offer` assumes.
        for &j in &candidates[i * per..(i + 1) * per] {
            if j != u32::MAX {
                let j = j as usize;
                best.offer(dot(qi, &keys[j * kw..(j + 1) * kw]), j as u32);
            }
        }
        out[i * k..(i + 1) * k].copy_from_slice(&best.into_rows());
    }
    out
}

/// A bounded selection of the k best (score, id) offered, for scans over
/// storage this module does not lay out (an index's lists).
pub struct Selector(Best);

impl Selector {
    pub fn new(k: usize) -> Self {
        Selector(Best::new(k))
    }
    /// Offers a block of scores and their ids; an equal score keeps the id
    /// offered first.
    #[inline]
    pub fn offer(&mut self, scores: &[f32], ids: &[u32]) {
        let mut bar = self.0.bar();
        for (&sc, &id) in scores.iter().zip(ids) {
            if sc > bar {
                self.0.offer(sc, id);
                bar = self.0.bar();
            }
        }
    }
    /// The score a new id must beat to be kept.
    #[inline]
    pub fn bar(&self) -> f32 {
        self.0.bar()
    }
    /// Offers one (score, id); ids offered in increasing order keep the
    /// lower id on an equal score.
    #[inline]
    pub fn offer_one(&mut self, score: f32, id: u32) {
        if score > self.0.bar() {
            self.0.offer(score, id);
        }
    }
    /// The ids kept, increasing, padded with `u32::MAX` to k.
    pub fn finish(self) -> Vec<u32> {
        self.0.into_rows()
    }
}

/// s[r] = q·row r for `s.len()` int8 rows `w` wide (codes, per-row scales
/// and code sums): the VNNI kernel where it applies (`prepared` from
/// [`crate::quant::quantise_query`]), else decoded and scored in f32.
pub fn int8_block_scores(
    q: &[f32],
    prepared: &Prepared,
    codes: &[i8],
    sums: &[i32],
    scales: &[f32],
    w: usize,
    s: &mut [f32],
) {
    // The kernels read the codes as signed bytes.
    let bytes: &[u8] = bytemuck::cast_slice(codes);
    if int8_direct(w) {
        int8_scores(&prepared.codes, prepared.scale, bytes, sums, scales, s);
    } else if !coded_scores(q, bytes, Some(scales), w, s) {
        for ((sr, c), &sc) in s.iter_mut().zip(codes.chunks_exact(w)).zip(scales) {
            *sr = sc * q.iter().zip(c).map(|(&x, &c)| x * c as f32).sum::<f32>();
        }
    }
}

/// out[i·nb + j] = a_i · b_j for rows a (na × w) and b (nb × w): one matrix
/// product (the `gemm` crate), for index training and batch assignment.
pub fn products(a: &[f32], na: usize, b: &[f32], nb: usize, w: usize, out: &mut [f32]) {
    assert!(a.len() >= na * w && b.len() >= nb * w && out.len() >= na * nb);
    // SAFETY: out [na, nb], a [na, w] and b [nb, w] (read as bᵀ [w, nb]),
    // all row-major and in bounds (asserted).
    unsafe {
        gemm::gemm(
            na,
            nb,
            w,
            out.as_mut_ptr(),
            1,
            nb as isize,
            false,
            a.as_ptr(),
            1,
            w as isize,
            b.as_ptr(),
            w as isize,
            1,
            0.0,
            1.0,
            false,
            false,
            false,
            gemm::Parallelism::None,
        )
    };
}

/// Offers a block of scores of rows `start..` to `b`.
#[inline(always)]
fn offer_block<S: KeySource>(b: &mut Best, s: &[f32], start: usize, src: &S) {
    // Sixteen scores to a mask first (one vector compare where the caller
    // is compiled for it): once the cut settles few rows pass, and a branch
    // per row mispredicts on each that does.
    let mut chunks = s.chunks_exact(16);
    let mut base = start;
    for c in &mut chunks {
        let bar = b.bar();
        let mut mask = 0u32;
        for (l, &x) in c.iter().enumerate() {
            mask |= ((x > bar) as u32) << l;
        }
        while mask != 0 {
            let l = mask.trailing_zeros() as usize;
            mask &= mask - 1;
            if c[l] > b.bar() && src.live(base + l) {
                b.offer(c[l], (base + l) as u32);
            }
        }
        base += 16;
    }
    let mut bar = b.bar();
    for (r, &sc) in chunks.remainder().iter().enumerate() {
        if sc > bar && src.live(base + r) {
            b.offer(sc, (base + r) as u32);
            bar = b.bar();
        }
    }
}

#[multiversion(targets("x86_64+avx512f+avx512vl+avx2+fma", "x86_64+avx2+fma"))]
fn top_k_chunk<S: KeySource>(
    q: &[f32],
    nq: usize,
    src: &S,
    range: std::ops::Range<usize>,
    best: &mut [Best],
) {
    let kw = src.width();
    let mut buf = Vec::new();
    if nq >= GEMM_QUERIES {
        let mut s = vec![0f32; nq * GEMM_BLOCK];
        let mut start = range.start;
        while start < range.end {
            let end = (start + GEMM_BLOCK).min(range.end);
            let bl = end - start;
            let keys = src.block(start..end, &mut buf);
            let block = Rows {
                keys,
                key_width: kw,
                values: keys,
                value_width: kw,
                occupied: None,
            };
            gemm_scores(q, nq, &block, 0..bl, 1.0, &mut s);
            for (i, b) in best.iter_mut().enumerate() {
                offer_block(b, &s[i * bl..(i + 1) * bl], start, src);
            }
            start = end;
        }
        return;
    }
    let mut s = [0f32; BLOCK];
    let mut start = range.start;
    let direct = src.direct();
    let prepared: Vec<Prepared> = if direct {
        (0..nq)
            .map(|i| src.prepare(&q[i * kw..(i + 1) * kw]))
            .collect()
    } else {
        Vec::new()
    };
    while start < range.end {
        let end = (start + BLOCK).min(range.end);
        let bl = end - start;
        let keys: &[f32] = if direct {
            &[]
        } else {
            src.block(start..end, &mut buf)
        };
        for (i, b) in best.iter_mut().enumerate() {
            let qi = &q[i * kw..(i + 1) * kw];
            if direct {
                src.scores(qi, &prepared[i], start..end, &mut s[..bl]);
            } else if !fast_scores(qi, keys, kw, &mut s[..bl], src.rows() - end) {
                for (sr, k) in s[..bl].iter_mut().zip(keys.chunks_exact(kw)) {
                    *sr = dot(qi, k);
                }
            }
            offer_block(b, &s[..bl], start, src);
        }
        start = end;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_data::{randn, stream};

    fn data(m: usize, w: usize, seed: u64) -> Vec<f32> {
        let mut rng = stream("scan", seed, "rows");
        (0..m * w).map(|_| randn(&mut rng) as f32).collect()
    }

    /// The textbook two-pass read in f64.
    fn reference(q: &[f32], rows: &Rows<'_>, scale: f32) -> Vec<f64> {
        let (kw, vw, m) = (rows.key_width, rows.value_width, rows.len());
        let nq = q.len() / kw;
        let mut out = vec![0f64; nq * vw];
        for i in 0..nq {
            let s: Vec<Option<f64>> = (0..m)
                .map(|j| {
                    rows.live(j).then(|| {
                        scale as f64
                            * (0..kw)
                                .map(|e| q[i * kw + e] as f64 * rows.keys[j * kw + e] as f64)
                                .sum::<f64>()
                    })
                })
                .collect();
            let mx = s
                .iter()
                .flatten()
                .copied()
                .fold(f64::NEG_INFINITY, f64::max);
            if mx == f64::NEG_INFINITY {
                continue;
            }
            let z: f64 = s.iter().flatten().map(|x| (x - mx).exp()).sum();
            for (j, sj) in s.iter().enumerate() {
                if let Some(x) = sj {
                    let w = (x - mx).exp() / z;
                    for e in 0..vw {
                        out[i * vw + e] += w * rows.values[j * vw + e] as f64;
                    }
                }
            }
        }
        out
    }

    fn check_attend(nq: usize, m: usize, masked: bool, same: bool, threads: usize) {
        let (kw, vw) = (16, if same { 16 } else { 24 });
        let keys = data(m, kw, 1);
        let values = if same { keys.clone() } else { data(m, vw, 2) };
        let occ: Vec<bool> = (0..m).map(|j| !masked || j % 3 != 1).collect();
        let q = data(nq, kw, 3);
        let rows = Rows {
            keys: &keys,
            key_width: kw,
            values: &values,
            value_width: vw,
            occupied: masked.then_some(&occ[..]),
        };
        let mut out = vec![0f32; nq * vw];
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .build()
            .unwrap();
        let mass = pool.install(|| attend(&q, nq, rows, 0.7, &mut out));
        let want = reference(&q, &rows, 0.7);
        for (i, (a, b)) in out.iter().zip(&want).enumerate() {
            assert!(
                (*a as f64 - b).abs() < 2e-5 * (1.0 + b.abs()),
                "nq {nq} m {m} masked {masked}: [{i}] {a} vs {b}"
            );
        }
        assert!(mass.iter().all(|&x| x == 1.0));
    }

    #[test]
    fn attend_matches_a_two_pass_softmax_read() {
        for nq in [1, 3, GEMM_QUERIES, 20] {
            for m in [1, 63, 65, 1000, 2 * CHUNK + 17] {
                check_attend(nq, m, false, true, 1);
                check_attend(nq, m, true, false, 1);
            }
        }
        check_attend(2, 3 * CHUNK + 5, true, true, 3);
        check_attend(12, 3 * CHUNK + 5, true, false, 2);
    }

    #[test]
    fn attend_is_the_same_bit_for_bit_on_any_thread_count() {
        let (kw, m, nq) = (32, 5 * CHUNK + 3, 3);
        let keys = data(m, kw, 4);
        let q = data(nq, kw, 5);
        let rows = Rows {
            keys: &keys,
            key_width: kw,
            values: &keys,
            value_width: kw,
            occupied: None,
        };
        let outs: Vec<Vec<f32>> = [1, 2, 4]
            .iter()
            .map(|&t| {
                let mut out = vec![0f32; nq * kw];
                rayon::ThreadPoolBuilder::new()
                    .num_threads(t)
                    .build()
                    .unwrap()
                    .install(|| attend(&q, nq, rows, 0.2, &mut out));
                out
            })
            .collect();
        assert_eq!(outs[0], outs[1]);
        assert_eq!(outs[0], outs[2]);
    }

    #[test]
    fn attend_over_an_empty_memory_is_zero_with_zero_mass() {
        let keys = data(100, 8, 6);
        let occ = vec![false; 100];
        let rows = Rows {
            keys: &keys,
            key_width: 8,
            values: &keys,
            value_width: 8,
            occupied: Some(&occ),
        };
        let mut out = vec![1f32; 2 * 8];
        let mass = attend(&data(2, 8, 7), 2, rows, 1.0, &mut out);
        assert_eq!(mass, vec![0.0, 0.0]);
        assert!(out.iter().all(|&x| x == 0.0));
    }

    #[test]
    fn packed_ranks_order_like_score_then_row_and_unpack() {
        let scores = [
            f32::NEG_INFINITY,
            -3.5,
            -0.0,
            0.0,
            1e-40,
            2.0,
            2.0,
            f32::INFINITY,
            f32::NAN,
            -f32::NAN,
        ];
        let mut pairs = vec![];
        for (i, &s) in scores.iter().enumerate() {
            for row in [0u32, 7, u32::MAX - 1] {
                pairs.push((s, row + i as u32 % 2));
            }
        }
        let mut by_pair = pairs.clone();
        by_pair.sort_by(|a, b| b.0.total_cmp(&a.0).then(a.1.cmp(&b.1)));
        let mut by_rank = pairs.clone();
        by_rank.sort_by_key(|&(s, r)| std::cmp::Reverse(rank(s, r)));
        let bits = |v: &[(f32, u32)]| v.iter().map(|(s, r)| (s.to_bits(), *r)).collect::<Vec<_>>();
        assert_eq!(bits(&by_rank), bits(&by_pair));
        for &(s, r) in &pairs {
            let (s2, r2) = unrank(rank(s, r));
            assert_eq!((s2.to_bits(), r2), (s.to_bits(), r));
        }
    }

    #[test]
    fn top_k_is_the_exact_k_best_occupied_rows() {
        let kw = 16;
        for nq in [1, 2, GEMM_QUERIES + 1] {
            for (m, k) in [(10, 32), (500, 7), (2 * CHUNK + 9, 32)] {
                let keys = data(m, kw, 8);
                let occ: Vec<bool> = (0..m).map(|j| j % 5 != 0).collect();
                let q = data(nq, kw, 9);
                let rows = Rows {
                    keys: &keys,
                    key_width: kw,
                    values: &keys,
                    value_width: kw,
                    occupied: Some(&occ),
                };
                // One reservoir across chunks on one thread, merged
                // per-chunk reservoirs on two.
                let got = rayon::ThreadPoolBuilder::new()
                    .num_threads(1)
                    .build()
                    .unwrap()
                    .install(|| top_k(&q, nq, rows, k));
                let got2 = rayon::ThreadPoolBuilder::new()
                    .num_threads(2)
                    .build()
                    .unwrap()
                    .install(|| top_k(&q, nq, rows, k));
                assert_eq!(got, got2, "nq {nq} m {m} k {k}");
                for i in 0..nq {
                    let score =
                        |j: usize| dot(&q[i * kw..(i + 1) * kw], &keys[j * kw..(j + 1) * kw]);
                    let mut all: Vec<usize> = (0..m).filter(|&j| occ[j]).collect();
                    all.sort_by(|&a, &b| score(b).total_cmp(&score(a)).then(a.cmp(&b)));
                    let mut want: Vec<u32> = all.iter().take(k).map(|&j| j as u32).collect();
                    want.sort_unstable();
                    want.resize(k, u32::MAX);
                    assert_eq!(&got[i * k..(i + 1) * k], &want[..], "nq {nq} m {m} k {k}");
                }
            }
        }
    }
}
