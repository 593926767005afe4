//! Scalar building blocks of the fused kernels: sums and row statistics
//! with eight partial sums (so loops vectorise), eˣ and erf without libm
//! calls, and the eight-lane dot product (of the attention ops and the row
//! ops) and axpy.
//! `scan` keeps its own sixteen-lane dot with a pairwise reduction: the two
//! round differently, and merging them would change every trained model's
//! bits.

/// Σ x with eight partial sums (vectorises; one accumulator is a serial chain).
#[inline(always)]
pub(crate) fn sum8(x: &[f32]) -> f32 {
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
pub fn row_stats(x: &[f32], eps: f32) -> (f32, f32) {
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

/// Σ a⊙b with eight independent partial sums, so that it vectorises (a
/// float sum in one accumulator is a serial chain the compiler must keep):
/// the one dot of the training ops and of the row ops (`rows`), in f32 and
/// f64.
#[inline(always)]
pub(crate) fn dot<T>(a: &[T], b: &[T]) -> T
where
    T: Copy + Default + std::ops::Add<Output = T> + std::ops::Mul<Output = T> + std::iter::Sum,
{
    let mut acc = [T::default(); 8];
    let (ca, cb) = (a.chunks_exact(8), b.chunks_exact(8));
    let tail: T = ca
        .remainder()
        .iter()
        .zip(cb.remainder())
        .map(|(x, y)| *x * *y)
        .sum();
    for (x, y) in ca.zip(cb) {
        for l in 0..8 {
            acc[l] = acc[l] + x[l] * y[l];
        }
    }
    acc.iter().copied().sum::<T>() + tail
}

/// y += a·x
#[inline(always)]
pub(crate) fn axpy(y: &mut [f32], a: f32, x: &[f32]) {
    y.iter_mut().zip(x).for_each(|(y, x)| *y += a * x);
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
