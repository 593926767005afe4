//! Seeded randomness. Every random draw in retbench comes from a ChaCha8
//! generator whose seed is derived from (config hash, seed, stream name), so a
//! result never depends on thread scheduling, job count or draw order across
//! streams. Parameter initialisation goes through [`SeededVarMap`], a candle
//! `VarBuilder` backend that draws each parameter from its own stream (named
//! by its path), because candle's CPU device cannot be seeded.

use candle_core::{DType, Device, Shape, Tensor, Var};
use candle_nn::var_builder::SimpleBackend;
use candle_nn::{Init, VarBuilder, VarMap};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rand_distr_free::normal;

/// The 32-byte seed of stream `stream` for (`config_hash`, `seed`).
pub fn stream_seed(config_hash: &str, seed: u64, stream: &str) -> [u8; 32] {
    let mut h = blake3::Hasher::new();
    h.update(b"retbench-stream\0");
    h.update(config_hash.as_bytes());
    h.update(b"\0");
    h.update(&seed.to_le_bytes());
    h.update(stream.as_bytes());
    *h.finalize().as_bytes()
}

/// A generator for stream `stream` of (`config_hash`, `seed`).
pub fn stream(config_hash: &str, seed: u64, stream: &str) -> ChaCha8Rng {
    ChaCha8Rng::from_seed(stream_seed(config_hash, seed, stream))
}

/// Gaussian draws without pulling in rand_distr: Box–Muller is exact and the
/// volume here (parameter init, synthetic data) is small.
mod rand_distr_free {
    use rand::Rng;
    pub fn normal<R: Rng>(rng: &mut R) -> f64 {
        let u1: f64 = 1.0 - rng.random::<f64>(); // (0, 1], keeps ln finite
        let u2: f64 = rng.random::<f64>();
        (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()
    }
}

/// A standard-normal sample.
pub fn randn<R: Rng>(rng: &mut R) -> f64 {
    normal(rng)
}

/// A tensor of i.i.d. N(0, std²) values from `rng`.
pub fn randn_tensor<R: Rng>(
    rng: &mut R,
    shape: impl Into<Shape>,
    std: f64,
    dtype: DType,
    device: &Device,
) -> candle_core::Result<Tensor> {
    let shape = shape.into();
    let values: Vec<f64> = (0..shape.elem_count()).map(|_| normal(rng) * std).collect();
    Tensor::from_vec(values, shape, device)?.to_dtype(dtype)
}

/// A `VarMap` whose missing parameters are drawn from per-name seeded streams.
/// Parameters already present (inserted by hand, or loaded) are returned as is.
#[derive(Clone)]
pub struct SeededVarMap {
    varmap: VarMap,
    config_hash: String,
    seed: u64,
}

impl SeededVarMap {
    pub fn new(varmap: VarMap, config_hash: impl Into<String>, seed: u64) -> Self {
        SeededVarMap {
            varmap,
            config_hash: config_hash.into(),
            seed,
        }
    }

    pub fn varmap(&self) -> &VarMap {
        &self.varmap
    }

    /// A `VarBuilder` over this map.
    pub fn var_builder(&self, dtype: DType, device: &Device) -> VarBuilder<'static> {
        VarBuilder::from_backend(Box::new(self.clone()), dtype, device.clone())
    }

    /// Sets (or overrides) a parameter, e.g. to build a layer with known weights.
    pub fn set(&self, name: &str, value: &Tensor) -> candle_core::Result<()> {
        let mut data = self.varmap.data().lock().expect("varmap lock");
        data.insert(name.to_string(), Var::from_tensor(value)?);
        Ok(())
    }

    fn draw(&self, shape: &Shape, name: &str, init: Init) -> Vec<f64> {
        let mut rng = stream(&self.config_hash, self.seed, &format!("param/{name}"));
        let n = shape.elem_count();
        let dims = shape.dims();
        // candle's convention: a weight is [out, in], so fan-in is the last dim.
        let fan_in = dims.last().copied().unwrap_or(1).max(1) as f64;
        match init {
            Init::Const(c) => vec![c; n],
            Init::Randn { mean, stdev } => {
                (0..n).map(|_| mean + stdev * normal(&mut rng)).collect()
            }
            Init::Uniform { lo, up } => (0..n).map(|_| rng.random_range(lo..up)).collect(),
            // Kaiming with a linear / ReLU-family gain: std = gain / sqrt(fan_in).
            Init::Kaiming { .. } => {
                let std = (2.0f64).sqrt() / fan_in.sqrt();
                (0..n).map(|_| std * normal(&mut rng)).collect()
            }
        }
    }
}

impl SimpleBackend for SeededVarMap {
    fn get(
        &self,
        s: Shape,
        name: &str,
        h: Init,
        dtype: DType,
        dev: &Device,
    ) -> candle_core::Result<Tensor> {
        let mut data = self.varmap.data().lock().expect("varmap lock");
        if let Some(var) = data.get(name) {
            if var.shape() != &s {
                candle_core::bail!("shape mismatch on {name}: {s:?} <> {:?}", var.shape());
            }
            return Ok(var.as_tensor().clone());
        }
        let values = self.draw(&s, name, h);
        let tensor = Tensor::from_vec(values, s, dev)?.to_dtype(dtype)?;
        let var = Var::from_tensor(&tensor)?;
        let t = var.as_tensor().clone();
        data.insert(name.to_string(), var);
        Ok(t)
    }

    fn get_unchecked(
        &self,
        name: &str,
        _dtype: DType,
        _dev: &Device,
    ) -> candle_core::Result<Tensor> {
        let data = self.varmap.data().lock().expect("varmap lock");
        match data.get(name) {
            Some(v) => Ok(v.as_tensor().clone()),
            None => candle_core::bail!("no parameter named {name}"),
        }
    }

    fn contains_tensor(&self, name: &str) -> bool {
        self.varmap
            .data()
            .lock()
            .expect("varmap lock")
            .contains_key(name)
    }
}
