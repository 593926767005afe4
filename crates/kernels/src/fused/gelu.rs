//! The erf GELU and its derivative, one vectorised pass each (erf and eˣ
//! from [`crate::math`], no libm calls).

use super::*;

struct Gelu;

const FRAC_1_SQRT_2: f32 = std::f32::consts::FRAC_1_SQRT_2;

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
