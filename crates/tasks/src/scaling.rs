//! The memory-size scaling task (no training): how a retention backend's
//! cost and fidelity change from hundreds to millions of slots.
//!
//! ```text
//! slot i   = [ key k_i (d/2, clustered) | value v_i (d/2) ]        m slots, filled once
//! query    = [ k_i + ε·‖k_i‖·ẑ          | 0                 ]      ε ∈ eps
//! probe layer: W_Q = W_K = β·[I 0; 0 0], W_V = [0 0; 0 I], W_O = W_u = I
//! readout  = Σ_j w_j [0 | v_j]  →  hit when argmax_j cos(readout, v_j) = i
//! ```
//!
//! Keys are drawn from a mixture of Gaussians (`clusters` centres, `spread`
//! around each), so near neighbours compete as they do in real memories, not
//! only isotropic noise; they are then centred and scaled to norm √(d/2), so
//! the layer's query LayerNorm only rescales a query and a clean query's own
//! key is its best match. Metrics: read latency per query at
//! each batch (p50, p99, queries/s), write latency, bytes per slot, the
//! bandwidth roofline fraction of batch-1 dense reads, associative accuracy
//! per noise level, and for top-k and indexed reads their fidelity to the
//! exact dense read (recall@k, attention-mass recall, relative output
//! error). Reads that keep something beside the slots (an index,
//! reduced-precision keys) also report its bytes, a build from the full
//! memory, and one-slot insert and removal times on its hooks.

use std::time::Instant;

use candle_core::{D, DType, Device, Tensor};
use candle_nn::VarMap;
use rand::Rng;
use rand_chacha::ChaCha8Rng;
use retbench_core::infer::no_grad;
use retbench_core::rng::{randn, stream};
use retbench_core::{
    Evict, MemoryState, ReadConfig, ReadKind, RetentionConfig, RetentionLayer, SeededVarMap,
    WriteConfig, WriteSource,
};
use serde::{Deserialize, Serialize};

use crate::metric::{Metric, MetricSpec, percentile};
use crate::{RunSpec, Task, TaskContext, TaskError};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ScalingConfig {
    /// Memory width d (keys in the first half, values in the second).
    #[serde(default = "d_default")]
    pub d: usize,
    /// Queries per read call to time (slice `batch=…`).
    #[serde(default = "batches_default")]
    pub batches: Vec<usize>,
    /// Timed queries per batch size, after warm-up.
    #[serde(default = "queries_default")]
    pub queries: usize,
    /// Fewest timed read calls per batch size, whatever `queries`.
    #[serde(default = "min_reads_default")]
    pub min_reads: usize,
    /// Untimed read calls before timing.
    #[serde(default = "warmup_default")]
    pub warmup: usize,
    /// Timed single-vector writes into the full memory.
    #[serde(default = "writes_default")]
    pub writes: usize,
    /// Query noise levels for associative recall (slice `eps=…`).
    #[serde(default = "eps_default")]
    pub eps: Vec<f64>,
    /// Probe queries per noise level.
    #[serde(default = "probes_default")]
    pub probes: usize,
    /// Gaussian clusters of keys.
    #[serde(default = "clusters_default")]
    pub clusters: usize,
    /// Spread of keys around their centre (centres have unit scale).
    #[serde(default = "spread_default")]
    pub spread: f64,
    /// β: scale of the probe layer's W_Q and W_K (softmax sharpness).
    #[serde(default = "sharpness_default")]
    pub sharpness: f64,
    /// Threads of the timed reads and writes, and of the bandwidth peers
    /// measured beside them in the same run (the STREAM triad and a
    /// read-only pass).
    #[serde(default = "threads_default")]
    pub threads: usize,
}

fn threads_default() -> usize {
    1
}

fn d_default() -> usize {
    64
}
fn batches_default() -> Vec<usize> {
    vec![1, 64]
}
fn queries_default() -> usize {
    200
}
fn min_reads_default() -> usize {
    10
}
fn warmup_default() -> usize {
    3
}
fn writes_default() -> usize {
    20
}
fn eps_default() -> Vec<f64> {
    vec![0.0, 0.1, 0.3]
}
fn probes_default() -> usize {
    128
}
fn clusters_default() -> usize {
    16
}
fn spread_default() -> f64 {
    0.5
}
fn sharpness_default() -> f64 {
    4.0
}

/// Slots written per fill call.
const FILL_CHUNK: usize = 8192;
/// Probe queries per read call when scoring accuracy.
const PROBE_CHUNK: usize = 64;
/// Floats of scores (and as many of weights) per fidelity chunk: queries ×
/// slots.
const FIDELITY_FLOATS: usize = 1 << 26;

impl Task for ScalingConfig {
    fn kind(&self) -> &'static str {
        "scaling"
    }
    fn about(&self) -> &'static str {
        "memory-size scaling probes (no training): latency, top-k fidelity, associative recall"
    }
    fn trains_a_model(&self) -> bool {
        false
    }
    fn validate(&self, spec: &RunSpec<'_>) -> Result<(), TaskError> {
        probe_blocks(spec, "the scaling task")?;
        ScalingConfig::validate(self, spec.retention)
    }
    fn run(&self, spec: &RunSpec<'_>, ctx: &TaskContext) -> Result<Vec<Metric>, TaskError> {
        run(self, spec.retention, ctx)
    }
    fn estimate_bytes(&self, spec: &RunSpec<'_>) -> Vec<(&'static str, u128)> {
        let Some(ret) = spec.retention else {
            return Vec::new();
        };
        let (m, d) = (ret.slots as u128, self.d as u128);
        let batch = self.batches.iter().copied().max().unwrap_or(1) as u128;
        // Contents, cached keys or an index's copy of the rows, and
        // projections (at most 3 d-wide f32 arrays beside the contents),
        // host keys and values and their unit copies, metadata, and what a
        // read of up to 8 queries on the tensor path allocates per slot;
        // plus the fidelity probe's chunks (scores, weights, selection).
        let per_slot = 16 * d + 4 * d + 40 + 12 * batch.min(8);
        let fixed = 12 * FIDELITY_FLOATS as u128;
        vec![("retention.slots", m.saturating_mul(per_slot) + fixed)]
    }
    fn dataset_hash(
        &self,
        spec: &RunSpec<'_>,
        ctx: &TaskContext,
    ) -> Result<Option<String>, TaskError> {
        let Some(ret) = spec.retention else {
            return Ok(None);
        };
        // The keys and values `run` fills memory with, regenerated.
        let mut rng = stream(&ctx.config_hash, ctx.seed, "scaling/pairs");
        let (keys, values) = clustered_pairs(&mut rng, self, ret.slots, self.d / 2);
        let bytes: Vec<u8> = keys
            .iter()
            .chain(&values)
            .flat_map(|x| x.to_le_bytes())
            .collect();
        Ok(Some(crate::learned::sha256_hex(&bytes)))
    }
    fn ignores(&self) -> &'static [(&'static str, &'static str)] {
        PROBE_IGNORES
    }
    fn metrics(&self) -> Vec<MetricSpec> {
        // `run` measures everything but the write latencies before its
        // first timed write, on a memory filled the same way for every
        // write policy: the write and gate configs cannot move them.
        let before_writes = |s: MetricSpec| match s.name.as_str() {
            "write_us_p50" | "write_us_p99" | "bytes_per_slot" => s,
            _ => s.independent_of(&["retention.write", "retention.gate"]),
        };
        [
            MetricSpec::latency_us("read_us_p50", "read latency per query, p50").sliced("batch"),
            MetricSpec::latency_us("read_us_p99", "read latency per query, p99").sliced("batch"),
            MetricSpec::new("queries_per_s", "queries per second")
                .unit("queries/s")
                .at_least(0.0)
                .log()
                .timing()
                .sliced("batch"),
            MetricSpec::latency_us("write_us_p50", "write latency, p50"),
            MetricSpec::latency_us("write_us_p99", "write latency, p99").no_plot(),
            MetricSpec::new("bytes_per_slot", "memory state per slot")
                .unit("bytes")
                .lower()
                .at_least(0.0)
                .no_plot(),
            MetricSpec::new(
                "stream_read_gbps",
                "read-only pass over a memory-sized array, same threads",
            )
            .unit("GB/s")
            .neither()
            .at_least(0.0)
            .timing()
            .no_plot(),
            MetricSpec::new(
                "read_stream_fraction",
                "dense read bandwidth / read-only pass bandwidth",
            )
            .at_least(0.0)
            .timing(),
            MetricSpec::new(
                "bandwidth_gbps",
                "STREAM-triad bandwidth in the run, same threads",
            )
            .unit("GB/s")
            .neither()
            .at_least(0.0)
            .timing()
            .no_plot(),
            MetricSpec::new(
                "read_roofline_fraction",
                "fraction of the bandwidth roofline",
            )
            .at_least(0.0)
            .log()
            .timing(),
            MetricSpec::share("assoc_accuracy", "associative recall accuracy").sliced("eps"),
            MetricSpec::share("recall_at_k", "recall@k vs exact dense")
                .against("read_us_p50[batch=1]"),
            MetricSpec::new(
                "build_s",
                "index build from the full memory (reduced keys: encoding)",
            )
            .unit("s")
            .lower()
            .at_least(0.0)
            .log()
            .timing(),
            MetricSpec::latency_us("insert_us_p50", "index insert of one slot, p50"),
            MetricSpec::latency_us("evict_us_p50", "index removal of one slot, p50"),
            MetricSpec::new("index_bytes", "bytes kept beside the memory for reads")
                .unit("bytes")
                .lower()
                .at_least(0.0)
                .log(),
            MetricSpec::share(
                "attention_mass_recall",
                "share of dense attention mass selected",
            ),
            MetricSpec::new("relative_output_error", "relative output error vs dense")
                .lower()
                .at_least(0.0)
                .log(),
        ]
        .into_iter()
        .map(before_writes)
        .collect()
    }
}

impl ScalingConfig {
    pub fn validate(&self, retention: Option<&RetentionConfig>) -> Result<(), TaskError> {
        let bad = |field: &str, msg: &str| Err(TaskError::Invalid(format!("task.{field}: {msg}")));
        if self.d < 2 || !self.d.is_multiple_of(2) {
            return bad(
                "d",
                "must be even and at least 2 (keys and values share it)",
            );
        }
        if self.batches.is_empty() || self.batches.contains(&0) {
            return bad("batches", "needs at least one batch size, each at least 1");
        }
        if self.threads == 0 {
            return bad("threads", "must be at least 1");
        }
        if self.queries == 0 || self.min_reads == 0 || self.probes == 0 || self.clusters == 0 {
            return bad(
                "queries",
                "queries, min_reads, probes and clusters must be at least 1",
            );
        }
        if self.eps.iter().any(|e| !(e.is_finite() && *e >= 0.0)) {
            return bad("eps", "noise levels must be finite and ≥ 0");
        }
        let finite_non_negative = |x: f64| x.is_finite() && x >= 0.0;
        if !finite_non_negative(self.spread)
            || !finite_non_negative(self.sharpness)
            || self.sharpness == 0.0
        {
            return bad("spread", "spread must be ≥ 0 and sharpness > 0");
        }
        probe_retention(retention, "the scaling task").map(|_| ())
    }
}

/// Keys (clustered, zero-mean rows) and values, each m × half, row-major.
fn clustered_pairs(
    rng: &mut ChaCha8Rng,
    cfg: &ScalingConfig,
    m: usize,
    half: usize,
) -> (Vec<f32>, Vec<f32>) {
    let centres: Vec<f64> = (0..cfg.clusters * half).map(|_| randn(rng)).collect();
    let norm = (1.0 + cfg.spread * cfg.spread).sqrt();
    let mut keys = Vec::with_capacity(m * half);
    let mut row = vec![0f64; half];
    for _ in 0..m {
        let c = rng.random_range(0..cfg.clusters);
        for (j, x) in row.iter_mut().enumerate() {
            *x = (centres[c * half + j] + cfg.spread * randn(rng)) / norm;
        }
        // Zero mean (LayerNorm then only rescales a query) and equal norm
        // √half, so that a clean query's own key is its unique best match.
        let mean = row.iter().sum::<f64>() / half as f64;
        row.iter_mut().for_each(|x| *x -= mean);
        let scale = (half as f64).sqrt() / row.iter().map(|x| x * x).sum::<f64>().sqrt().max(1e-12);
        keys.extend(row.iter().map(|x| (x * scale) as f32));
    }
    let values = (0..m * half).map(|_| randn(rng) as f32).collect();
    (keys, values)
}

/// `key + eps·‖key‖·ẑ`, re-centred to zero mean.
fn noisy(key: &[f32], eps: f64, rng: &mut ChaCha8Rng) -> Vec<f32> {
    if eps == 0.0 {
        return key.to_vec();
    }
    let z: Vec<f64> = key.iter().map(|_| randn(rng)).collect();
    let zn = z.iter().map(|x| x * x).sum::<f64>().sqrt().max(1e-12);
    let kn = key.iter().map(|&x| (x as f64).powi(2)).sum::<f64>().sqrt();
    let mut out: Vec<f64> = key
        .iter()
        .zip(&z)
        .map(|(&k, zi)| k as f64 + eps * kn * zi / zn)
        .collect();
    let mean = out.iter().sum::<f64>() / out.len() as f64;
    out.iter_mut().for_each(|x| *x -= mean);
    out.into_iter().map(|x| x as f32).collect()
}

/// Hidden states [1, T, d] whose key halves are `rows` (each of length half).
fn queries(rows: &[Vec<f32>], d: usize, dev: &Device) -> Result<Tensor, TaskError> {
    let half = d / 2;
    let mut data = vec![0f32; rows.len() * d];
    for (t, r) in rows.iter().enumerate() {
        data[t * d..t * d + half].copy_from_slice(r);
    }
    Ok(Tensor::from_vec(data, (1, rows.len(), d), dev)?)
}

/// `retention` options a probe layer does not read.
pub(crate) const PROBE_IGNORES: &[(&str, &str)] = &[
    (
        "persistence",
        "the probe layer's memory never leaves the process",
    ),
    ("sharing", "the probe is one free-standing layer"),
    (
        "layers",
        "the probe is one free-standing layer, not a model",
    ),
];

/// A probe task trains nothing: `model:`, `train:` and `eval:` are refused.
pub(crate) fn probe_blocks(spec: &RunSpec<'_>, task: &str) -> Result<(), TaskError> {
    for (name, set) in [
        ("model", spec.model.is_some()),
        ("train", spec.train.is_some()),
        ("eval", spec.eval.is_some()),
    ] {
        if set {
            return Err(TaskError::Invalid(format!(
                "{name}: {task} trains no model; remove the `{name}:` block"
            )));
        }
    }
    Ok(())
}

/// A probe needs a retention layer, single-head (its projections are fixed
/// d × d matrices).
pub(crate) fn probe_retention<'r>(
    retention: Option<&'r RetentionConfig>,
    task: &str,
) -> Result<&'r RetentionConfig, TaskError> {
    let Some(ret) = retention else {
        return Err(TaskError::Invalid(format!(
            "retention: {task} measures a retention layer; it cannot be null"
        )));
    };
    if ret.heads != 1 || ret.head_dim.is_some() {
        return Err(TaskError::Invalid(format!(
            "retention.heads: {task} uses a single-head probe layer (heads: 1, no head_dim)"
        )));
    }
    Ok(ret)
}

/// The probe layer's parameters (see the module doc), in a fresh map.
fn probe_params(
    cfg: &ScalingConfig,
    ret: &RetentionConfig,
    ctx: &TaskContext,
) -> Result<SeededVarMap, TaskError> {
    let map = probe_layer_params(cfg.d, cfg.sharpness, ctx)?;
    if let ReadKind::ProductKeys { .. } = ret.read.kind {
        // Product keys split a key into halves that address independently:
        // W_Q = W_K put key components [0, d/4) in the first half of the key
        // row and [d/4, d/2) in the second (the same scores, permuted), not
        // the whole key in one half and zeros in the other.
        let (d, quarter) = (cfg.d, cfg.d / 4);
        let mut v = vec![0f32; d * d];
        for e in 0..2 * quarter {
            let row = if e < quarter { e } else { d / 2 + e - quarter };
            v[row * d + e] = cfg.sharpness as f32;
        }
        let w = Tensor::from_vec(v, (d, d), &Device::Cpu)?;
        map.set("w_q.weight", &w)?;
        map.set("w_k.weight", &w)?;
    }
    Ok(map)
}

/// A probe layer over [key | value] rows of width `d`: W_Q = W_K =
/// β·[I 0; 0 0], W_V = [0 0; 0 I], W_O = W_u = I (the copy probe's too).
pub(crate) fn probe_layer_params(
    d: usize,
    sharpness: f64,
    ctx: &TaskContext,
) -> Result<SeededVarMap, TaskError> {
    let half = d / 2;
    let map = SeededVarMap::new(VarMap::new(), &ctx.config_hash, ctx.seed);
    let diag = |first: f32, second: f32| -> Result<Tensor, TaskError> {
        let mut v = vec![0f32; d * d];
        for i in 0..d {
            v[i * d + i] = if i < half { first } else { second };
        }
        Ok(Tensor::from_vec(v, (d, d), &Device::Cpu)?)
    };
    let beta = sharpness as f32;
    map.set("w_q.weight", &diag(beta, 0.0)?)?;
    map.set("w_k.weight", &diag(beta, 0.0)?)?;
    map.set("w_v.weight", &diag(0.0, 1.0)?)?;
    map.set("w_o.weight", &diag(1.0, 1.0)?)?;
    map.set("w_u.weight", &diag(1.0, 1.0)?)?;
    Ok(map)
}

/// Writes every (key, value) pair as one slot, through an append/token layer
/// over the same parameters (attention writes fill free slots the same way).
fn fill(
    ret: &RetentionConfig,
    map: &SeededVarMap,
    mem: &mut MemoryState,
    keys: &[f32],
    values: &[f32],
    d: usize,
) -> Result<(), TaskError> {
    let half = d / 2;
    let m = keys.len() / half;
    let mut filler_cfg = ret.clone();
    filler_cfg.write = WriteConfig::append(Evict::Fifo, WriteSource::Token {});
    filler_cfg.gate = retbench_core::GateConfig::None {};
    let filler = RetentionLayer::new(&filler_cfg, d, map.var_builder(DType::F32, &Device::Cpu))?;
    let mut start = 0;
    while start < m {
        let n = FILL_CHUNK.min(m - start);
        let mut data = vec![0f32; n * d];
        for r in 0..n {
            let i = start + r;
            data[r * d..r * d + half].copy_from_slice(&keys[i * half..(i + 1) * half]);
            data[r * d + half..(r + 1) * d].copy_from_slice(&values[i * half..(i + 1) * half]);
        }
        let h = Tensor::from_vec(data, (1, n, d), &Device::Cpu)?;
        filler.write(&h, mem, None)?;
        start += n;
    }
    Ok(())
}

/// Rows of `t` [1, T, d] normalised to unit length over the value half.
fn value_half_unit(t: &Tensor, half: usize) -> Result<Tensor, TaskError> {
    let v = t.squeeze(0)?.narrow(1, half, half)?;
    let n = v
        .sqr()?
        .sum_keepdim(1)?
        .sqrt()?
        .clamp(1e-12, f64::INFINITY)?;
    Ok(v.broadcast_div(&n)?)
}

pub fn run(
    cfg: &ScalingConfig,
    retention: Option<&RetentionConfig>,
    ctx: &TaskContext,
) -> Result<Vec<Metric>, TaskError> {
    cfg.validate(retention)?;
    let ret = retention.expect("validated");
    let dev = Device::Cpu;
    let (d, half, m) = (cfg.d, cfg.d / 2, ret.slots);
    let map = probe_params(cfg, ret, ctx)?;
    let layer = RetentionLayer::new(ret, d, map.var_builder(DType::F32, &dev))?;
    let mut mem = layer.new_memory(1, ctx.seed, DType::F32, &dev)?;
    let mut rng = stream(&ctx.config_hash, ctx.seed, "scaling/pairs");
    let (keys, values) = clustered_pairs(&mut rng, cfg, m, half);
    fill(ret, &map, &mut mem, &keys, &values, d)?;
    let p = Probe {
        cfg,
        ret,
        ctx,
        layer: &layer,
        keys: &keys,
        dev: &dev,
    };
    let mut out = vec![Metric::new("bytes_per_slot", mem.bytes_per_slot() as f64)];
    let targets = p.assoc_recall(&values, &mut mem, &mut out)?;
    if let Some(k) = layer.read_backend().k() {
        p.topk_fidelity(&map, &mem, &targets, k, &mut out)?;
    }
    p.index_costs(&mut mem, &mut out)?;
    // Usage statistics are telemetry, not part of a read: timed reads
    // skip them (policies that evict by usage keep them regardless).
    mem.record_usage(false);
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(cfg.threads)
        .build()
        .map_err(|e| TaskError::Invalid(format!("task.threads: {e}")))?;
    let mut time_rng = stream(&ctx.config_hash, ctx.seed, "scaling/timing");
    p.read_latency(&pool, &mut mem, &mut time_rng, &mut out)?;
    p.write_latency(&pool, &mut mem, &mut time_rng, &mut out)?;
    Ok(out)
}

/// One scaling run's filled layer and what its measurements share.
struct Probe<'a> {
    cfg: &'a ScalingConfig,
    ret: &'a RetentionConfig,
    ctx: &'a TaskContext,
    layer: &'a RetentionLayer,
    /// The stored keys, `d / 2` floats each.
    keys: &'a [f32],
    dev: &'a Device,
}

impl Probe<'_> {
    fn key(&self, i: usize) -> &[f32] {
        let half = self.cfg.d / 2;
        &self.keys[i * half..(i + 1) * half]
    }

    /// Associative recall per noise level: a noisy key's read must be
    /// nearest to its own value. Returns the probed slots.
    fn assoc_recall(
        &self,
        values: &[f32],
        mem: &mut MemoryState,
        out: &mut Vec<Metric>,
    ) -> Result<Vec<usize>, TaskError> {
        let (cfg, ctx, dev) = (self.cfg, self.ctx, self.dev);
        let (d, half, m) = (cfg.d, cfg.d / 2, self.ret.slots);
        let unit_values = {
            let v = Tensor::from_vec(values.to_vec(), (m, half), dev)?;
            let n = v
                .sqr()?
                .sum_keepdim(1)?
                .sqrt()?
                .clamp(1e-12, f64::INFINITY)?;
            v.broadcast_div(&n)?
        };
        let mut probe_rng = stream(&ctx.config_hash, ctx.seed, "scaling/probes");
        let targets: Vec<usize> = (0..cfg.probes)
            .map(|_| probe_rng.random_range(0..m))
            .collect();
        for &eps in &cfg.eps {
            let mut noise_rng = stream(&ctx.config_hash, ctx.seed, &format!("scaling/noise/{eps}"));
            let mut hits = 0usize;
            for chunk in targets.chunks(PROBE_CHUNK) {
                let rows: Vec<Vec<f32>> = chunk
                    .iter()
                    .map(|&i| noisy(self.key(i), eps, &mut noise_rng))
                    .collect();
                let q = queries(&rows, d, dev)?;
                let read = no_grad(|| self.layer.read(&q, mem))?;
                let sims = value_half_unit(&read.r, half)?.matmul(&unit_values.t()?)?;
                let best: Vec<u32> = sims.argmax(D::Minus1)?.to_vec1()?;
                hits += best
                    .iter()
                    .zip(chunk)
                    .filter(|(b, t)| **b as usize == **t)
                    .count();
            }
            out.push(Metric::sliced(
                "assoc_accuracy",
                "eps",
                eps,
                hits as f64 / targets.len() as f64,
            ));
        }
        Ok(targets)
    }

    /// Top-k fidelity against the exact dense read over the same memory, on
    /// the first 64 probes, a few at a time so that the weights over every
    /// slot stay within ~256 MiB.
    fn topk_fidelity(
        &self,
        map: &SeededVarMap,
        mem: &MemoryState,
        targets: &[usize],
        k: usize,
        out: &mut Vec<Metric>,
    ) -> Result<(), TaskError> {
        let (ret, dev, layer) = (self.ret, self.dev, self.layer);
        let (d, m) = (self.cfg.d, ret.slots);
        let mut dense_cfg = ret.clone();
        dense_cfg.read = ReadConfig {
            kind: ReadKind::Dense,
            ..ret.read
        };
        let dense = RetentionLayer::new(&dense_cfg, d, map.var_builder(DType::F32, dev))?;
        let probes = &targets[..targets.len().min(PROBE_CHUNK)];
        let owns_keys = layer.read_backend().owns_keys();
        let k = k.min(m);
        let (mut recall, mut mass, mut rel) = (0.0, 0.0, 0.0);
        for chunk in probes.chunks((FIDELITY_FLOATS / m).clamp(1, PROBE_CHUNK)) {
            let rows: Vec<Vec<f32>> = chunk.iter().map(|&i| self.key(i).to_vec()).collect();
            let q = queries(&rows, d, dev)?;
            let approx = layer.inspect_read(&q, mem)?;
            // Product keys score with their own keys, which no dense read
            // has: the reference is the exhaustive ranking and softmax of
            // those keys over every occupied slot (in the inspection).
            let exact = if owns_keys {
                exhaustive(&approx, mem, m, dev)?
            } else {
                dense.inspect_read(&q, mem)?
            };
            let (r, ma) = recall_and_mass(&approx, &exact, m, k)?;
            recall += r;
            mass += ma;
            let diff = (&approx.r - &exact.r)?.sqr()?.sum(D::Minus1)?.sqrt()?;
            let base = exact
                .r
                .sqr()?
                .sum(D::Minus1)?
                .sqrt()?
                .clamp(1e-12, f64::INFINITY)?;
            rel += (diff / base)?.sum_all()?.to_scalar::<f32>()? as f64;
        }
        let n = probes.len() as f64;
        out.push(Metric::new("recall_at_k", recall / n));
        out.push(Metric::new("attention_mass_recall", mass / n));
        if !owns_keys {
            out.push(Metric::new("relative_output_error", rel / n));
        }
        Ok(())
    }

    /// What reads keep beside the slots (an index, reduced-precision keys):
    /// its size, a build from the full memory, and its insert and removal
    /// of one slot, timed on the index's own hooks.
    fn index_costs(&self, mem: &mut MemoryState, out: &mut Vec<Metric>) -> Result<(), TaskError> {
        let (cfg, ctx, layer, m) = (self.cfg, self.ctx, self.layer, self.ret.slots);
        let kept = mem
            .index()
            .and_then(|i| i.bytes())
            .or(mem.low_keys().map(|l| l.bytes()));
        if let Some(bytes) = kept {
            out.push(Metric::new("index_bytes", bytes as f64));
            let start = Instant::now();
            layer.rebuild_index(mem)?;
            out.push(Metric::new("build_s", start.elapsed().as_secs_f64()));
        }
        if let Some(mut index) = mem.take_index() {
            let mut hook_rng = stream(&ctx.config_hash, ctx.seed, "scaling/index");
            let (mut insert_us, mut evict_us) = (Vec::new(), Vec::new());
            for _ in 0..cfg.writes.max(1) {
                let f = hook_rng.random_range(0..m);
                if !mem.meta().occupied[f] {
                    continue;
                }
                let start = Instant::now();
                index.on_evict(f);
                evict_us.push(start.elapsed().as_secs_f64() * 1e6);
                let start = Instant::now();
                index.on_fill(f);
                index.refresh(mem.scanned())?;
                insert_us.push(start.elapsed().as_secs_f64() * 1e6);
            }
            mem.set_index(Some(index));
            if !insert_us.is_empty() {
                out.push(Metric::new("insert_us_p50", percentile(&insert_us, 50.0)));
                out.push(Metric::new("evict_us_p50", percentile(&evict_us, 50.0)));
            }
        }
        Ok(())
    }

    /// Read latency per query, per batch size, and (dense reads, batch 1)
    /// the share of the memory roofline reached. Peers measured here, on
    /// the same threads: the bytes an exact dense read must stream
    /// (contents, and cached keys when kept) over the triad's bandwidth and
    /// over a plain read-only pass of as many bytes (at least 128 MiB,
    /// beyond the last-level cache).
    fn read_latency(
        &self,
        pool: &rayon::ThreadPool,
        mem: &mut MemoryState,
        time_rng: &mut ChaCha8Rng,
        out: &mut Vec<Metric>,
    ) -> Result<(), TaskError> {
        let (cfg, ret, layer, dev) = (self.cfg, self.ret, self.layer, self.dev);
        let (d, m) = (cfg.d, ret.slots);
        let stream_bytes = 4.0 * m as f64 * (d + mem.key_dim()) as f64;
        let (triad, read_only) = pool.install(|| {
            (
                crate::probe::triad_bandwidth_gbps(32 << 20, 3, cfg.threads),
                crate::probe::read_bandwidth_gbps((stream_bytes as usize / 4).max(1 << 25), 3),
            )
        });
        for &batch in &cfg.batches {
            let calls = cfg.queries.div_ceil(batch).max(cfg.min_reads);
            // A fresh batch for every call: an index's lists (or any state a
            // read touches) must not stay cached from an earlier identical
            // query (cycling 4 batches made indexed batch-1 reads look 2.5×
            // faster than they are).
            let qpool: Vec<Tensor> = (0..calls + cfg.warmup)
                .map(|_| {
                    let rows: Vec<Vec<f32>> = (0..batch)
                        .map(|_| {
                            let i = time_rng.random_range(0..m);
                            noisy(self.key(i), 0.1, time_rng)
                        })
                        .collect();
                    queries(&rows, d, dev)
                })
                .collect::<Result<_, _>>()?;
            let per_query_us = pool.install(|| {
                no_grad(|| -> Result<Vec<f64>, TaskError> {
                    for q in &qpool[calls..] {
                        layer.read(q, mem)?;
                    }
                    let mut per_query_us = Vec::with_capacity(calls);
                    for q in &qpool[..calls] {
                        let start = Instant::now();
                        let r = layer.read(q, mem)?;
                        std::hint::black_box(&r);
                        per_query_us.push(start.elapsed().as_secs_f64() * 1e6 / batch as f64);
                    }
                    Ok(per_query_us)
                })
            })?;
            let p50 = percentile(&per_query_us, 50.0);
            out.push(Metric::sliced("read_us_p50", "batch", batch, p50));
            out.push(Metric::sliced(
                "read_us_p99",
                "batch",
                batch,
                percentile(&per_query_us, 99.0),
            ));
            out.push(Metric::sliced("queries_per_s", "batch", batch, 1e6 / p50));
            if let (1, ReadKind::Dense) = (batch, ret.read.kind) {
                let achieved = stream_bytes / (p50 * 1e-6) / 1e9;
                out.push(Metric::new("read_roofline_fraction", achieved / triad));
                out.push(Metric::new("read_stream_fraction", achieved / read_only));
            }
        }
        out.push(Metric::new("bandwidth_gbps", triad));
        out.push(Metric::new("stream_read_gbps", read_only));
        Ok(())
    }

    /// Write latency into the full memory (last: it evicts or blends).
    fn write_latency(
        &self,
        pool: &rayon::ThreadPool,
        mem: &mut MemoryState,
        time_rng: &mut ChaCha8Rng,
        out: &mut Vec<Metric>,
    ) -> Result<(), TaskError> {
        let (cfg, ret, layer, dev) = (self.cfg, self.ret, self.layer, self.dev);
        let (d, half, m) = (cfg.d, cfg.d / 2, ret.slots);
        let mut write_us = Vec::with_capacity(cfg.writes);
        let feedback =
            matches!(ret.gate, retbench_core::GateConfig::Feedback { .. }).then_some([1.0f32]);
        // One hand-over to the pool for the whole loop: entering it per call
        // would add a cross-thread wake-up (µs) to every write.
        pool.install(|| -> Result<(), TaskError> {
            for _ in 0..cfg.writes {
                let i = time_rng.random_range(0..m);
                let mut row = noisy(self.key(i), 0.1, time_rng);
                row.extend((0..half).map(|_| randn(time_rng) as f32));
                let h = Tensor::from_vec(row, (1, 1, d), dev)?;
                let start = Instant::now();
                layer.write(&h, mem, feedback.as_ref().map(|f| f.as_slice()))?;
                write_us.push(start.elapsed().as_secs_f64() * 1e6);
            }
            Ok(())
        })?;
        if !write_us.is_empty() {
            out.push(Metric::new("write_us_p50", percentile(&write_us, 50.0)));
            out.push(Metric::new("write_us_p99", percentile(&write_us, 99.0)));
        }
        Ok(())
    }
}

/// The exhaustive read of product keys: the softmax of their scores over
/// every occupied slot (no dense read has their keys).
fn exhaustive(
    approx: &retbench_core::DenseRead,
    mem: &MemoryState,
    m: usize,
    dev: &Device,
) -> Result<retbench_core::DenseRead, TaskError> {
    let occupied = Tensor::from_vec(
        mem.meta()
            .occupied
            .iter()
            .map(|&o| o as u8 as f32)
            .collect::<Vec<_>>(),
        (1, 1, 1, m),
        dev,
    )?
    .broadcast_as(approx.scores.shape())?
    .contiguous()?;
    let weights = retbench_kernels::rows::masked_softmax(&approx.scores, &occupied)?;
    Ok(retbench_core::DenseRead {
        r: approx.r.clone(),
        weights,
        scores: approx.scores.clone(),
        selected: occupied,
    })
}

/// Summed over a chunk of queries: the share of the exact top-k a read
/// selected, and the exact attention mass on what it selected.
fn recall_and_mass(
    approx: &retbench_core::DenseRead,
    exact: &retbench_core::DenseRead,
    m: usize,
    k: usize,
) -> Result<(f64, f64), TaskError> {
    let rows2 = |t: &Tensor| -> Result<Vec<Vec<f32>>, TaskError> {
        Ok(t.squeeze(0)?.squeeze(0)?.to_vec2()?)
    };
    let w_exact = rows2(&exact.weights)?;
    let s_exact = rows2(&exact.scores)?;
    let selected = rows2(&approx.selected)?;
    let (mut recall, mut mass) = (0.0, 0.0);
    for ((we, se), sel) in w_exact.iter().zip(&s_exact).zip(&selected) {
        // The exact top-k by score: weights of far slots underflow to 0.
        let mut order: Vec<usize> = (0..m).collect();
        order.select_nth_unstable_by(k - 1, |&a, &b| se[b].total_cmp(&se[a]));
        let truth: std::collections::HashSet<usize> = order[..k].iter().copied().collect();
        let chosen: Vec<usize> = (0..m).filter(|&i| sel[i] > 0.0).collect();
        recall += chosen.iter().filter(|i| truth.contains(i)).count() as f64 / k as f64;
        mass += chosen.iter().map(|&i| we[i] as f64).sum::<f64>();
    }
    Ok((recall, mass))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn small() -> ScalingConfig {
        serde_saphyr::from_str(
            "d: 32\nbatches: [1, 8]\nqueries: 8\nmin_reads: 2\nwarmup: 1\nwrites: 3\nprobes: 64\n",
        )
        .unwrap()
    }

    fn ctx() -> TaskContext {
        TaskContext {
            config_hash: "test".into(),
            seed: 0,
            artifacts: None,
            bandwidth_gbps: Some(10.0),
        }
    }

    fn get(ms: &[Metric], name: &str, slice: &str) -> f64 {
        ms.iter()
            .find(|m| m.metric == name && m.slice == slice)
            .unwrap_or_else(|| panic!("{name} {slice} missing"))
            .value
    }

    #[test]
    fn recall_is_near_perfect_without_noise_and_falls_with_it() {
        let ret = RetentionConfig::new(256);
        let mut cfg = small();
        cfg.eps = vec![0.0, 1.5];
        let ms = run(&cfg, Some(&ret), &ctx()).unwrap();
        let clean = get(&ms, "assoc_accuracy", "eps=0");
        let noisy = get(&ms, "assoc_accuracy", "eps=1.5");
        assert!(clean > 0.9, "{clean}");
        assert!(noisy < clean, "{noisy} vs {clean}");
        assert!(get(&ms, "read_us_p50", "batch=8") > 0.0);
        assert!(get(&ms, "read_roofline_fraction", "") > 0.0);
        assert_eq!(get(&ms, "bytes_per_slot", ""), (4 * 32 + 37) as f64);
    }

    #[test]
    fn topk_fidelity_is_exact_when_k_covers_memory() {
        let mut ret = RetentionConfig::new(64);
        ret.read = ReadConfig::topk(64);
        let ms = run(&small(), Some(&ret), &ctx()).unwrap();
        let specs = small().metrics();
        for m in &ms {
            let s = specs.iter().find(|s| s.name == m.metric);
            s.unwrap_or_else(|| panic!("{} has no spec", m.metric))
                .check(m)
                .unwrap();
        }
        assert_eq!(get(&ms, "recall_at_k", ""), 1.0);
        assert!((get(&ms, "attention_mass_recall", "") - 1.0).abs() < 1e-4);
        assert!(get(&ms, "relative_output_error", "") < 1e-4);
        ret.read = ReadConfig::topk(2);
        let ms = run(&small(), Some(&ret), &ctx()).unwrap();
        assert!(get(&ms, "attention_mass_recall", "") < 1.0);
    }

    #[test]
    fn quality_metrics_are_deterministic() {
        let ret = RetentionConfig::new(128);
        let quality = |ms: Vec<Metric>| -> Vec<(String, String, u64)> {
            ms.into_iter()
                .filter(|m| m.metric == "assoc_accuracy")
                .map(|m| (m.metric, m.slice, m.value.to_bits()))
                .collect()
        };
        let a = quality(run(&small(), Some(&ret), &ctx()).unwrap());
        assert_eq!(a, quality(run(&small(), Some(&ret), &ctx()).unwrap()));
    }

    #[test]
    fn validation_names_the_field() {
        let mut cfg = small();
        cfg.d = 7;
        let err = cfg
            .validate(Some(&RetentionConfig::new(8)))
            .unwrap_err()
            .to_string();
        assert!(err.starts_with("task.d"), "{err}");
        let err = small().validate(None).unwrap_err().to_string();
        assert!(err.starts_with("retention"), "{err}");
    }
}
