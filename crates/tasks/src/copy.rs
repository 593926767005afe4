//! Copy tasks (suites/copy.yaml, the paper's open question 1: append or
//! attention write?). Two levels:
//!
//! **`copy_probe`** (mechanism, no training): L items go through a write
//! policy and each is read back by its own key, with the probe layer of the
//! scaling task (W_Q = W_K = β·[I 0; 0 0], W_V = [0 0; 0 I], W_O = W_u = I):
//!
//! ```text
//! item i   = [ key k_i (d/2, random, zero mean, norm √(d/2)) | value c_{v_i} (d/2) ]
//! writes   = the items in order, `per_write` tokens per write call [1, per_write, d]
//!            (the write source makes u from them: each token, their mean, the last, …)
//! readback = read([k_i | 0]) → value half r_i;  copy_cosine = mean_i cos(r_i, c_{v_i})
//!            copy_exact = share of i with argmax_c cos(r_i, c) = v_i (codebook decoding)
//! L        = max(min_items, round(load · slots)) per load (slice `load=…`)
//! ```
//!
//! The items depend on (d, codebook, seed) only, so every write policy and
//! memory size reads back the same vectors (the first L of one stream).
//!
//! **`copy`** (learned): session 1 shows L symbols, the context is cleared,
//! session 2 reproduces them in order from memory (the NTM copy task,
//! Graves et al. 2014, across a context boundary):
//!
//! ```text
//! session 1:  x1 x2 … xL END PAD …        (written to memory)
//! session 2:  GO PAD PAD …                 targets x1 x2 … xL (position p → x_{p+1})
//! ```
//!
//! Training draws L uniformly from `train_min..=train_max`; the held-out set
//! has one group per length in `eval_lengths` (slice `len=…`), so lengths
//! beyond training measure length generalisation. With `bits`, symbols are
//! the 2^bits binary vectors of that width (the NTM paper's 8-bit vectors;
//! the model sees each as one token) and `bit_errors_per_sequence` counts the
//! Hamming distance between the reproduced and the true vectors.

use std::time::Instant;

use candle_core::{D, DType, Device, Tensor};
use rand::Rng;
use rand_chacha::ChaCha8Rng;
use retbench_core::rng::{randn, stream};
use retbench_core::{GateConfig, RetentionConfig, RetentionLayer};
use serde::{Deserialize, Serialize};

use crate::learned::{self, Context, Episodes, LearnedTask, SessionData};
use crate::metric::{Metric, MetricSpec, percentile};
use crate::{RunSpec, Task, TaskContext, TaskError, scaling};

// ---------------------------------------------------------------------------
// Mechanism level.

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CopyProbeConfig {
    /// Memory width d (keys in the first half, values in the second).
    #[serde(default = "d_default")]
    pub d: usize,
    /// Items written per slot of memory (slice `load=…`).
    #[serde(default = "loads_default")]
    pub loads: Vec<f64>,
    /// Fewest items at any load.
    #[serde(default = "min_items_default")]
    pub min_items: usize,
    /// Consecutive items per write call: the hidden states a write source
    /// pools (`token` writes each, `mean` one mean, `last` the last).
    #[serde(default = "per_write_default")]
    pub per_write: usize,
    /// Values are rows of a random codebook of this many vectors.
    #[serde(default = "codebook_default")]
    pub codebook: usize,
    /// β: scale of the probe layer's W_Q and W_K (softmax sharpness).
    #[serde(default = "sharpness_default")]
    pub sharpness: f64,
}

fn d_default() -> usize {
    64
}
fn loads_default() -> Vec<f64> {
    vec![0.25, 0.5, 1.0, 2.0, 4.0]
}
fn min_items_default() -> usize {
    4
}
fn per_write_default() -> usize {
    4
}
fn codebook_default() -> usize {
    256
}
fn sharpness_default() -> f64 {
    4.0
}

/// Readback queries per read call.
const READ_CHUNK: usize = 64;

/// The probe's data: item keys (L × half), the codebook (codebook × half)
/// and each item's codeword.
struct Items {
    keys: Vec<f32>,
    codebook: Vec<f32>,
    value_of: Vec<u32>,
}

impl Items {
    fn bytes(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(4 * (self.keys.len() + self.codebook.len()));
        for x in self.keys.iter().chain(&self.codebook) {
            out.extend(x.to_le_bytes());
        }
        for v in &self.value_of {
            out.extend(v.to_le_bytes());
        }
        out
    }
}

impl CopyProbeConfig {
    fn half(&self) -> usize {
        self.d / 2
    }

    /// Items written at `load` into `slots` slots.
    pub fn items_at(&self, load: f64, slots: usize) -> usize {
        ((load * slots as f64).round() as usize).max(self.min_items)
    }

    fn max_items(&self, slots: usize) -> usize {
        self.loads
            .iter()
            .map(|&l| self.items_at(l, slots))
            .max()
            .unwrap_or(self.min_items)
    }

    /// The first `n` items of the stream of (d, codebook, seed).
    fn items(&self, n: usize, seed: u64) -> Items {
        let half = self.half();
        let mut rng = stream(
            &format!("copy_probe/d{}/codebook{}", self.d, self.codebook),
            seed,
            "items",
        );
        let codebook = (0..self.codebook * half)
            .map(|_| randn(&mut rng) as f32)
            .collect();
        let (mut keys, mut value_of) = (Vec::with_capacity(n * half), Vec::with_capacity(n));
        let mut row = vec![0f64; half];
        for _ in 0..n {
            row.iter_mut().for_each(|x| *x = randn(&mut rng));
            // Zero mean (the query LayerNorm then only rescales) and norm
            // √half, as the scaling probe's keys.
            let mean = row.iter().sum::<f64>() / half as f64;
            row.iter_mut().for_each(|x| *x -= mean);
            let norm = row.iter().map(|x| x * x).sum::<f64>().sqrt().max(1e-12);
            let scale = (half as f64).sqrt() / norm;
            keys.extend(row.iter().map(|x| (x * scale) as f32));
            value_of.push(rng.random_range(0..self.codebook as u32));
        }
        Items {
            keys,
            codebook,
            value_of,
        }
    }

    pub fn validate(&self, retention: Option<&RetentionConfig>) -> Result<(), TaskError> {
        let bad = |field: &str, msg: &str| Err(TaskError::Invalid(format!("task.{field}: {msg}")));
        if self.d < 2 || !self.d.is_multiple_of(2) {
            return bad(
                "d",
                "must be even and at least 2 (keys and values share it)",
            );
        }
        if self.loads.is_empty() || self.loads.iter().any(|l| !(l.is_finite() && *l > 0.0)) {
            return bad("loads", "needs at least one load, each a positive number");
        }
        if self.min_items == 0 || self.per_write == 0 {
            return bad("per_write", "min_items and per_write must be at least 1");
        }
        if self.codebook < 2 {
            return bad("codebook", "needs at least 2 codewords");
        }
        if !(self.sharpness.is_finite() && self.sharpness > 0.0) {
            return bad("sharpness", "must be a positive number");
        }
        let ret = scaling::probe_retention(retention, "the copy probe")?;
        if self.max_items(ret.slots) > 1 << 22 {
            return bad("loads", "more than 4 Mi items at this retention.slots");
        }
        Ok(())
    }
}

impl Task for CopyProbeConfig {
    fn kind(&self) -> &'static str {
        "copy_probe"
    }
    fn about(&self) -> &'static str {
        "write L items, read each back by its key (no training): copy fidelity against load, cost"
    }
    fn trains_a_model(&self) -> bool {
        false
    }
    fn validate(&self, spec: &RunSpec<'_>) -> Result<(), TaskError> {
        scaling::probe_blocks(spec, "the copy probe")?;
        CopyProbeConfig::validate(self, spec.retention)
    }
    fn run(&self, spec: &RunSpec<'_>, ctx: &TaskContext) -> Result<Vec<Metric>, TaskError> {
        run_probe(self, spec.retention, ctx)
    }
    fn metrics(&self) -> Vec<MetricSpec> {
        vec![
            MetricSpec::new("copy_cosine", "mean cosine of read-back and written value")
                .bounds(-1.0, 1.0)
                .sliced("load")
                .against("write_us_p50"),
            MetricSpec::share("copy_exact", "items recovered exactly (codebook decoding)")
                .chance(1.0 / self.codebook as f64)
                .sliced("load")
                .against("write_us_p50"),
            MetricSpec::latency_us("read_us_p50", "readback latency per query, p50"),
            MetricSpec::latency_us("write_us_p50", "write latency per call, p50"),
            MetricSpec::new("memory_bytes", "memory state")
                .unit("bytes")
                .lower()
                .at_least(0.0)
                .log(),
        ]
    }
    fn estimate_bytes(&self, spec: &RunSpec<'_>) -> Vec<(&'static str, u128)> {
        let Some(ret) = spec.retention else {
            return Vec::new();
        };
        let (m, d) = (ret.slots as u128, self.d as u128);
        let items = self.max_items(ret.slots) as u128;
        // Memory (contents, keys, metadata), the items, and the scores and
        // weights of a readback call over every slot.
        let per_slot = 12 * d + 40 + 12 * READ_CHUNK as u128;
        vec![
            ("retention.slots", m.saturating_mul(per_slot)),
            ("task.loads", items.saturating_mul(4 * d)),
        ]
    }
    fn ignores(&self) -> &'static [(&'static str, &'static str)] {
        scaling::PROBE_IGNORES
    }
    fn dataset_hash(
        &self,
        spec: &RunSpec<'_>,
        ctx: &TaskContext,
    ) -> Result<Option<String>, TaskError> {
        let Some(ret) = spec.retention else {
            return Ok(None);
        };
        let items = self.items(self.max_items(ret.slots), ctx.seed);
        Ok(Some(learned::sha256_hex(&items.bytes())))
    }
}

/// Unit rows of a [n, half] matrix.
fn unit_rows(t: &Tensor) -> Result<Tensor, TaskError> {
    let n = t
        .sqr()?
        .sum_keepdim(D::Minus1)?
        .sqrt()?
        .clamp(1e-12, f64::INFINITY)?;
    Ok(t.broadcast_div(&n)?)
}

fn run_probe(
    cfg: &CopyProbeConfig,
    retention: Option<&RetentionConfig>,
    ctx: &TaskContext,
) -> Result<Vec<Metric>, TaskError> {
    cfg.validate(retention)?;
    let ret = retention.expect("validated");
    let dev = Device::Cpu;
    let (d, half) = (cfg.d, cfg.half());
    let map = scaling::probe_layer_params(d, cfg.sharpness, ctx)?;
    let layer = RetentionLayer::new(ret, d, map.var_builder(DType::F32, &dev))?;
    let items = cfg.items(cfg.max_items(ret.slots), ctx.seed);
    let codebook = unit_rows(&Tensor::from_vec(
        items.codebook.clone(),
        (cfg.codebook, half),
        &dev,
    )?)?;
    let codeword = |i: usize| {
        let c = items.value_of[i] as usize;
        &items.codebook[c * half..(c + 1) * half]
    };
    let feedback = matches!(ret.gate, GateConfig::Feedback { .. }).then_some([1.0f32]);
    let mut out = Vec::new();
    let (mut write_us, mut read_us) = (Vec::new(), Vec::new());
    let mut bytes = 0usize;
    for &load in &cfg.loads {
        let n = cfg.items_at(load, ret.slots);
        let mut mem = layer.new_memory(1, ctx.seed, DType::F32, &dev)?;
        let mut start = 0;
        while start < n {
            let t = cfg.per_write.min(n - start);
            let mut data = vec![0f32; t * d];
            for r in 0..t {
                let i = start + r;
                data[r * d..r * d + half].copy_from_slice(&items.keys[i * half..(i + 1) * half]);
                data[r * d + half..(r + 1) * d].copy_from_slice(codeword(i));
            }
            let h = Tensor::from_vec(data, (1, t, d), &dev)?;
            let clock = Instant::now();
            layer.write(&h, &mut mem, feedback.as_ref().map(|f| f.as_slice()))?;
            write_us.push(clock.elapsed().as_secs_f64() * 1e6);
            start += t;
        }
        bytes = mem.bytes_per_slot() * ret.slots;
        let (mut cosine, mut exact) = (0.0f64, 0usize);
        let mut start = 0;
        while start < n {
            let t = READ_CHUNK.min(n - start);
            let mut q = vec![0f32; t * d];
            let mut truth = Vec::with_capacity(t * half);
            for r in 0..t {
                let i = start + r;
                q[r * d..r * d + half].copy_from_slice(&items.keys[i * half..(i + 1) * half]);
                truth.extend_from_slice(codeword(i));
            }
            let q = Tensor::from_vec(q, (1, t, d), &dev)?;
            let clock = Instant::now();
            let read = layer.read(&q, &mut mem)?;
            read_us.push(clock.elapsed().as_secs_f64() * 1e6 / t as f64);
            let r = unit_rows(&read.r.squeeze(0)?.narrow(1, half, half)?)?;
            let truth = unit_rows(&Tensor::from_vec(truth, (t, half), &dev)?)?;
            let cos: Vec<f32> = (&r * &truth)?.sum(1)?.to_vec1()?;
            cosine += cos.iter().map(|&c| c as f64).sum::<f64>();
            let best: Vec<u32> = r.matmul(&codebook.t()?)?.argmax(1)?.to_vec1()?;
            exact += best
                .iter()
                .enumerate()
                .filter(|(r, b)| **b == items.value_of[start + r])
                .count();
            start += t;
        }
        out.push(Metric::sliced(
            "copy_cosine",
            "load",
            load,
            cosine / n as f64,
        ));
        out.push(Metric::sliced(
            "copy_exact",
            "load",
            load,
            exact as f64 / n as f64,
        ));
    }
    out.push(Metric::new("read_us_p50", percentile(&read_us, 50.0)));
    out.push(Metric::new("write_us_p50", percentile(&write_us, 50.0)));
    out.push(Metric::new("memory_bytes", bytes as f64));
    Ok(out)
}

// ---------------------------------------------------------------------------
// Learned.

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CopyConfig {
    /// Distinct symbols (default 16); with `bits`, 2^bits and not set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub symbols: Option<usize>,
    /// Symbols are binary vectors of this many bits (the NTM variant).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bits: Option<u32>,
    /// Shortest training sequence.
    #[serde(default = "one")]
    pub train_min: usize,
    /// Longest training sequence.
    #[serde(default = "twenty")]
    pub train_max: usize,
    /// Held-out lengths (slice `len=…`), each its own group of episodes.
    #[serde(default = "eval_lengths_default")]
    pub eval_lengths: Vec<usize>,
    /// `sessions` (the context is cleared between them) or `full`.
    #[serde(default)]
    pub context: Context,
}

fn one() -> usize {
    1
}
fn twenty() -> usize {
    20
}
fn eval_lengths_default() -> Vec<usize> {
    vec![20, 40, 80]
}

impl CopyConfig {
    pub fn symbol_count(&self) -> usize {
        match (self.bits, self.symbols) {
            (Some(b), _) => 1 << b,
            (None, Some(s)) => s,
            (None, None) => 16,
        }
    }
    fn go(&self) -> u32 {
        self.symbol_count() as u32
    }
    fn end(&self) -> u32 {
        self.go() + 1
    }
    fn pad(&self) -> u32 {
        self.go() + 2
    }

    pub fn validate(&self) -> Result<(), String> {
        if self.bits.is_some() && self.symbols.is_some() {
            return Err("task.symbols: set symbols or bits, not both".into());
        }
        if let Some(b) = self.bits
            && !(1..=12).contains(&b)
        {
            return Err(format!("task.bits: must be in 1..=12, got {b}"));
        }
        if self.symbol_count() < 2 {
            return Err("task.symbols: needs at least 2 symbols".into());
        }
        if self.train_min == 0 || self.train_min > self.train_max {
            return Err(format!(
                "task.train_min: must be in 1..={} (train_max)",
                self.train_max
            ));
        }
        if self.eval_lengths.is_empty() {
            return Err("task.eval_lengths: needs at least one length".into());
        }
        // Lengths are slice labels (one byte) and the longest sequence
        // fixes every session's length.
        if let Some(l) = self
            .eval_lengths
            .iter()
            .chain([&self.train_max])
            .find(|&&l| l == 0 || l > 255)
        {
            return Err(format!(
                "task.eval_lengths: lengths must be in 1..=255, got {l}"
            ));
        }
        Ok(())
    }

    /// `batch` episodes with lengths from `len` (drawn per episode), in
    /// sessions of lengths [longest + 1, longest].
    fn draw(
        &self,
        rng: &mut ChaCha8Rng,
        batch: usize,
        longest: usize,
        mut len: impl FnMut(&mut ChaCha8Rng) -> usize,
    ) -> Vec<SessionData> {
        let lens = [longest + 1, longest];
        let mut out = lens.map(|len| SessionData {
            len,
            ..Default::default()
        });
        let s = self.symbol_count() as u32;
        for _ in 0..batch {
            let l = len(rng);
            let xs: Vec<u32> = (0..l).map(|_| rng.random_range(0..s)).collect();
            let [s1, s2] = &mut out;
            for t in 0..lens[0] {
                s1.tokens.push(match t {
                    t if t < l => xs[t],
                    t if t == l => self.end(),
                    _ => self.pad(),
                });
            }
            s1.targets.extend(std::iter::repeat_n(self.pad(), lens[0]));
            s1.mask.extend(std::iter::repeat_n(0.0, lens[0]));
            s1.label.extend(std::iter::repeat_n(0, lens[0]));
            for t in 0..lens[1] {
                let x = xs.get(t).copied();
                s2.tokens.push(if t == 0 { self.go() } else { self.pad() });
                s2.targets.push(x.unwrap_or(self.pad()));
                s2.mask.push(if x.is_some() { 1.0 } else { 0.0 });
                s2.label.push(if x.is_some() { l as u8 } else { 0 });
            }
        }
        out.into()
    }
}

impl Episodes for CopyConfig {
    fn vocab(&self) -> usize {
        self.symbol_count() + 3
    }
    fn context(&self) -> Context {
        self.context
    }
    fn slice_key(&self) -> &'static str {
        "len"
    }
    fn generate(&self, rng: &mut ChaCha8Rng, batch: usize) -> Vec<SessionData> {
        let (lo, hi) = (self.train_min, self.train_max);
        self.draw(rng, batch, hi, |r| r.random_range(lo..=hi))
    }
    fn lengths(&self) -> Vec<usize> {
        vec![self.train_max + 1, self.train_max]
    }
    fn chance(&self) -> Option<f64> {
        Some(1.0 / self.symbol_count() as f64)
    }
    fn scorers(&self) -> Vec<Box<dyn learned::Scorer>> {
        vec![Box::new(learned::Sequences::new(self.bits))]
    }
    /// Binding is the first evaluated length (the training range's), not
    /// the longest.
    fn bind_label(&self) -> Option<u8> {
        self.eval_lengths.first().map(|&l| l as u8)
    }
    fn eval_groups(&self) -> usize {
        self.eval_lengths.len()
    }
    fn generate_eval(&self, group: usize, rng: &mut ChaCha8Rng, batch: usize) -> Vec<SessionData> {
        let l = self.eval_lengths[group];
        self.draw(rng, batch, l, |_| l)
    }
    fn eval_lengths(&self, group: usize) -> Vec<usize> {
        let l = self.eval_lengths[group];
        vec![l + 1, l]
    }
    fn dataset_config(&self) -> serde_json::Value {
        crate::learned::without_layout(self, &[])
    }
}

impl LearnedTask for CopyConfig {
    const KIND: &'static str = "copy";
    const ABOUT: &'static str = "reproduce a sequence from memory in a fresh context (trains a model): accuracy, exact sequences, bit errors by length";
    fn check(&self) -> Result<(), String> {
        CopyConfig::validate(self)
    }
    fn vocab_field(&self) -> &'static str {
        "task.symbols"
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ctx() -> TaskContext {
        TaskContext {
            config_hash: "test".into(),
            seed: 0,
            artifacts: None,
            bandwidth_gbps: None,
        }
    }

    fn get(ms: &[Metric], name: &str, slice: &str) -> f64 {
        ms.iter()
            .find(|m| m.metric == name && m.slice == slice)
            .unwrap_or_else(|| panic!("{name} {slice} missing"))
            .value
    }

    fn probe() -> CopyProbeConfig {
        serde_json::from_str(r#"{"d": 32, "loads": [0.5, 1, 4], "codebook": 64}"#).unwrap()
    }

    #[test]
    fn token_appends_copy_exactly_until_full_then_keep_only_what_fits() {
        let mut ret = RetentionConfig::new(32);
        ret.write = retbench_core::WriteConfig::append(
            retbench_core::Evict::Fifo,
            retbench_core::WriteSource::Token {},
        );
        let ms = run_probe(&probe(), Some(&ret), &ctx()).unwrap();
        for load in ["0.5", "1"] {
            assert_eq!(
                get(&ms, "copy_exact", &format!("load={load}")),
                1.0,
                "{load}"
            );
            assert!(get(&ms, "copy_cosine", &format!("load={load}")) > 0.99);
        }
        // 128 items into 32 slots: the last 32 survive (a quarter), the rest
        // read back whatever their nearest surviving key holds.
        let exact = get(&ms, "copy_exact", "load=4");
        assert!((0.25..0.32).contains(&exact), "{exact}");
        for m in &ms {
            let spec = probe().metrics().into_iter().find(|s| s.name == m.metric);
            spec.unwrap().check(m).unwrap();
        }
    }

    #[test]
    fn a_mean_write_blends_its_items_and_attention_writes_degrade_gracefully() {
        let mut ret = RetentionConfig::new(32);
        ret.write = retbench_core::WriteConfig::append(
            retbench_core::Evict::Fifo,
            retbench_core::WriteSource::Mean {},
        );
        let ms = run_probe(&probe(), Some(&ret), &ctx()).unwrap();
        // One slot holds the mean of 4 items: cosine ≈ 1/2, exact about 1/4.
        let cos = get(&ms, "copy_cosine", "load=0.5");
        assert!((0.35..0.65).contains(&cos), "{cos}");
        let exact = get(&ms, "copy_exact", "load=0.5");
        assert!(exact < 0.5, "{exact}");
        ret.write =
            retbench_core::WriteConfig::attention(0.5, true, retbench_core::WriteSource::Token {});
        let ms = run_probe(&probe(), Some(&ret), &ctx()).unwrap();
        assert_eq!(get(&ms, "copy_exact", "load=1"), 1.0);
        let over = get(&ms, "copy_cosine", "load=4");
        assert!(over < 0.99 && over > 0.0, "{over}");
    }

    #[test]
    fn probe_items_depend_on_d_codebook_and_seed_only() {
        let a = probe();
        let mut b = probe();
        b.loads = vec![2.0];
        b.per_write = 1;
        let (x, y) = (a.items(50, 3), b.items(80, 3));
        assert_eq!(x.keys[..], y.keys[..x.keys.len()]);
        assert_eq!(x.value_of[..], y.value_of[..50]);
        assert_ne!(a.items(50, 4).keys, x.keys);
    }

    fn copy(json: &str) -> CopyConfig {
        serde_json::from_str(json).unwrap()
    }

    #[test]
    fn session_two_targets_session_one_in_order() {
        let cfg = copy(r#"{"train_max": 6}"#);
        let mut rng = stream("copy", 0, "data");
        let [s1, s2]: [SessionData; 2] = cfg.generate(&mut rng, 20).try_into().unwrap();
        assert_eq!((s1.len, s2.len), (7, 6));
        for b in 0..20 {
            let row1 = &s1.tokens[b * 7..(b + 1) * 7];
            let l = row1.iter().position(|&t| t == cfg.end()).unwrap();
            assert!((1..=6).contains(&l));
            assert!(row1[l + 1..].iter().all(|&t| t == cfg.pad()));
            for (t, &shown) in row1[..6].iter().enumerate() {
                let p = b * 6 + t;
                assert_eq!(s2.mask[p] == 1.0, t < l);
                if t < l {
                    assert_eq!(s2.targets[p], shown);
                    assert_eq!(s2.label[p] as usize, l);
                }
                assert_eq!(s2.tokens[p], if t == 0 { cfg.go() } else { cfg.pad() });
            }
            assert!(s1.mask[b * 7..(b + 1) * 7].iter().all(|&m| m == 0.0));
        }
        let g = cfg.generate_eval(2, &mut rng, 3);
        assert_eq!((g[0].len, g[1].len), (81, 80));
        assert_eq!(g[1].mask.iter().filter(|&&m| m == 1.0).count(), 3 * 80);
    }

    #[test]
    fn bit_errors_count_differing_bits_and_markers_as_all_wrong() {
        assert_eq!(learned::bit_errors(0b1011, 0b0010, 8), 2);
        assert_eq!(learned::bit_errors(256, 0, 8), 8);
        let cfg = copy(r#"{"bits": 8}"#);
        assert_eq!(cfg.symbol_count(), 256);
        assert!(
            copy(r#"{"bits": 8, "symbols": 4}"#)
                .validate()
                .unwrap_err()
                .starts_with("task.symbols")
        );
        assert!(
            copy(r#"{"eval_lengths": [300]}"#)
                .validate()
                .unwrap_err()
                .starts_with("task.eval_lengths")
        );
        assert!(
            copy(r#"{"train_min": 30}"#)
                .validate()
                .unwrap_err()
                .starts_with("task.train_min")
        );
    }
}
