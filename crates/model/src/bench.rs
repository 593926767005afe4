//! Training throughput of the reference shape that the learned suites train
//! (2 layers, 4 heads, sequence 64, batch 32, vocabulary 32, GELU FFN ×4,
//! AdamW, fp32): tokens per second, as the median over timed steps, without
//! retention and with a retention layer after self-attention in block 1
//! (append of every token, FIFO, a dense or exact top-k read over a memory
//! empty as at an episode's first session, or filled before the timed
//! steps), beside the arithmetic each step cannot avoid and
//! the fp32 matmul peak measured in the same process, so that every row can
//! be read as a share of what the cores can do. `retbench train-bench`
//! prints it; `scripts/train_throughput.py` runs a PyTorch model of the same
//! shape beside it and prints the ratio.

use std::time::Instant;

use candle_core::{DType, Device, Tensor};
use candle_nn::VarMap;
use rand::Rng;
use retbench_core::rng::stream;
use retbench_core::{
    Evict, MemoryState, ReadConfig, RetentionConfig, SeededVarMap, WriteConfig, WriteSource,
};

use crate::model::Forward;
use crate::{Model, ModelConfig, Session, TrainConfig, TrainError, Trainer};

/// The reference shape: batch, sequence length, vocabulary, layers, heads.
pub const BATCH: usize = 32;
pub const SEQ: usize = 64;
pub const VOCAB: usize = 32;
pub const LAYERS: usize = 2;
pub const HEADS: usize = 4;
/// FFN width as a multiple of d_model.
const FFN: usize = 4;

/// The retention layer of a "with retention" row: block 1, FIFO append of
/// every token, `slots` slots read densely or through an exact top-k, of
/// which `filled` hold earlier writes when the timed step starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BenchRetention {
    pub slots: usize,
    /// `None`: dense; `Some(k)`: exact top-k.
    pub top_k: Option<usize>,
    /// Slots written before the step (at most `slots`); 0 is the first
    /// session of an episode, which reads an empty memory.
    pub filled: usize,
}

impl BenchRetention {
    /// The reference layer of the training issue: 64 slots, dense, read
    /// empty as in an episode's first session (the form the issue's
    /// baseline was measured in).
    pub const REFERENCE: BenchRetention = BenchRetention {
        slots: 64,
        top_k: None,
        filled: 0,
    };

    pub fn config(&self) -> RetentionConfig {
        let mut retention = RetentionConfig::new(self.slots);
        retention.write = WriteConfig::append(Evict::Fifo, WriteSource::Token {});
        retention.layers = retbench_core::Layers::List(vec![1]);
        if let Some(k) = self.top_k {
            retention.read = ReadConfig::topk(k);
        }
        retention
    }

    /// "dense, 64 slots, empty", "top-32, 16384 slots, full".
    pub fn label(&self) -> String {
        let read = match self.top_k {
            None => "dense".to_string(),
            Some(k) => format!("top-{k}"),
        };
        let state = match self.filled {
            0 => "empty".to_string(),
            f if f >= self.slots => "full".to_string(),
            f => format!("{f} filled"),
        };
        format!("{read}, {} slots, {state}", self.slots)
    }
}

/// Floating-point operations (2 per multiply-add) of one training step per
/// token: the arithmetic the step cannot avoid, every matmul of the forward
/// pass once and of the backward pass twice. Without retention: the linear
/// layers, causal attention (seq/2 keys per query on average, for q·k and
/// p·v) and the output head (the same count as
/// scripts/train_throughput.py). With retention, per token: the write's W_u
/// and the key and value of the slot it writes (W_K, W_V: each slot
/// projected once, when written); where the memory holds `filled` slots,
/// the read's W_Q and W_O, a score against every filled slot and the mix of
/// the slots read (every filled slot dense, k top-k); an empty memory reads
/// zero, which costs nothing. Top-k scores the filled slots in the forward
/// pass only: its backward reaches just the k rows it read. An
/// implementation that projects every slot again at every read, or scores
/// empty slots, does more than this, and shows it as a lower share of peak.
pub fn flops_per_token(d: usize, retention: Option<BenchRetention>) -> f64 {
    let (d, seq) = (d as f64, SEQ as f64);
    let linear = LAYERS as f64 * (4.0 * d * d + 2.0 * FFN as f64 * d * d) + d * VOCAB as f64;
    let attention = LAYERS as f64 * 2.0 * (seq / 2.0) * d;
    let base = 2.0 * 3.0 * (linear + attention);
    let Some(r) = retention else {
        return base;
    };
    let m = r.filled.min(r.slots) as f64;
    let write = 3.0 * d * d;
    let (read, forward_only) = match (m > 0.0, r.top_k) {
        (false, _) => (0.0, 0.0),
        (true, None) => (2.0 * d * d + 2.0 * m * d, 0.0),
        (true, Some(k)) => (2.0 * d * d + 2.0 * (k as f64).min(m) * d, m * d),
    };
    base + 2.0 * (3.0 * (write + read) + forward_only)
}

/// One random session of the reference shape (fixed seed).
pub fn reference_session(dev: &Device) -> candle_core::Result<Session> {
    let mut rng = stream("throughput", 0, "data");
    let tokens: Vec<u32> = (0..BATCH * (SEQ + 1))
        .map(|_| rng.random_range(0..VOCAB as u32))
        .collect();
    let take = |off: usize| -> Vec<u32> {
        (0..BATCH)
            .flat_map(|b| tokens[b * (SEQ + 1) + off..b * (SEQ + 1) + off + SEQ].to_vec())
            .collect()
    };
    Ok(Session {
        tokens: Tensor::from_vec(take(0), (BATCH, SEQ), dev)?,
        targets: Tensor::from_vec(take(1), (BATCH, SEQ), dev)?,
        mask: Tensor::ones((BATCH, SEQ), DType::F32, dev)?,
        feedback: None,
    })
}

/// Fills every slot of `memories` through the model's own write path with
/// random hidden states (fixed seed), as earlier sessions would have, and
/// cuts them from the graph: the timed step reads a full memory and
/// back-propagates into what it writes itself (truncated backpropagation).
fn fill(
    model: &Model,
    memories: &mut [MemoryState],
    slots: usize,
    d: usize,
) -> Result<(), TrainError> {
    let mut rng = stream("throughput", 0, "fill");
    let mut written = 0;
    while written < slots {
        let n = SEQ.min(slots - written);
        let h: Vec<f32> = (0..BATCH * n * d)
            .map(|_| rng.random_range(-1.0..1.0))
            .collect();
        let h = Tensor::from_vec(h, (BATCH, n, d), &Device::Cpu)?;
        let fwd = Forward {
            logits: h.clone(),
            hidden: vec![h; model.retention_layers()],
        };
        model.write(&fwd, memories, None)?;
        written += n;
    }
    for m in memories.iter_mut() {
        m.detach()?;
    }
    Ok(())
}

/// Trains the reference model at `d_model` (with `retention` or without)
/// for one warm-up step and `steps` timed steps, and returns tokens/s per
/// timed step, in order. Every step starts from the same filled memory (its
/// copy is made outside the timed region). Runs on the current rayon pool
/// and the calling thread's kernel choice.
pub fn train_throughput(
    d_model: usize,
    retention: Option<BenchRetention>,
    steps: usize,
) -> Result<Vec<f64>, TrainError> {
    let dev = Device::Cpu;
    let session = reference_session(&dev)?;
    let cfg = ModelConfig::new(d_model, LAYERS, HEADS, VOCAB, SEQ);
    let map = SeededVarMap::new(VarMap::new(), "throughput", 0);
    let retention_cfg = retention.map(|r| r.config());
    let model = Model::new(
        &cfg,
        retention_cfg.as_ref(),
        map.var_builder(DType::F32, &dev),
    )?;
    let mut filled = model.new_memories(BATCH, 0, DType::F32, &dev)?;
    if let Some(r) = retention {
        fill(&model, &mut filled, r.filled.min(r.slots), d_model)?;
    }
    let train = TrainConfig::new(steps + 1, BATCH, 1e-3);
    let mut trainer = Trainer::new(&train, map.varmap(), d_model)?;
    let episode = std::slice::from_ref(&session);
    let fresh = || -> Result<Vec<MemoryState>, TrainError> {
        Ok(filled
            .iter()
            .map(|m| m.deep_clone())
            .collect::<retbench_core::Result<_>>()?)
    };
    trainer.step_from(&model, episode, fresh()?)?; // warm-up: first-touch allocations
    (0..steps)
        .map(|_| {
            let memories = fresh()?;
            let t = Instant::now();
            trainer
                .step_from(&model, episode, memories)
                .map(|_| (BATCH * SEQ) as f64 / t.elapsed().as_secs_f64())
        })
        .collect()
}

/// GFLOP/s of candle's fp32 2048×2048 matmul on the current rayon pool (the
/// best of 3, after one warm-up; about 3 s on one core): what the cores can
/// do, measured in the same process as the rows it is compared with.
pub fn matmul_peak_gflops() -> Result<f64, TrainError> {
    const N: usize = 2048;
    let mut rng = stream("throughput", 0, "peak");
    let mut random = || -> candle_core::Result<Tensor> {
        let x: Vec<f32> = (0..N * N).map(|_| rng.random_range(-1.0..1.0)).collect();
        Tensor::from_vec(x, (N, N), &Device::Cpu)
    };
    let (a, b) = (random()?, random()?);
    a.matmul(&b)?;
    let mut best = 0.0f64;
    for _ in 0..3 {
        let t = Instant::now();
        a.matmul(&b)?;
        best = best.max(2.0 * (N as f64).powi(3) / t.elapsed().as_secs_f64() / 1e9);
    }
    Ok(best)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flops_without_retention_match_the_python_peer() {
        // scripts/train_throughput.py's flops_per_token(64): 6·(2·(12·64²)
        // + 64·32 + 2·2·32·64).
        assert_eq!(flops_per_token(64, None), 651_264.0);
    }

    fn full(slots: usize, top_k: Option<usize>) -> Option<BenchRetention> {
        Some(BenchRetention {
            slots,
            top_k,
            filled: slots,
        })
    }

    #[test]
    fn top_k_backward_does_not_grow_with_slots() {
        let at = |slots| flops_per_token(64, full(slots, Some(32)));
        let dense = |slots| flops_per_token(64, full(slots, None));
        // Growing a full memory 16× adds, per extra slot, one forward
        // score for top-k (2·d flops), and a score and a mix in all three
        // passes for dense (3·2·2·d).
        let per_slot_topk = (at(16_384) - at(1_024)) / 15_360.0;
        let per_slot_dense = (dense(16_384) - dense(1_024)) / 15_360.0;
        assert_eq!(per_slot_topk, 2.0 * 64.0);
        assert_eq!(per_slot_dense, 12.0 * 64.0);
        // An empty memory costs only the write: W_u, W_K, W_V, three passes.
        let empty = flops_per_token(64, Some(BenchRetention::REFERENCE));
        assert_eq!(empty - flops_per_token(64, None), 6.0 * 3.0 * 64.0 * 64.0);
    }

    #[test]
    fn a_filled_memory_holds_what_was_asked_and_is_out_of_the_graph() {
        let dev = Device::Cpu;
        let cfg = ModelConfig::new(32, LAYERS, HEADS, VOCAB, SEQ);
        let map = SeededVarMap::new(VarMap::new(), "test", 0);
        let r = full(100, Some(8)).unwrap();
        let model = Model::new(&cfg, Some(&r.config()), map.var_builder(DType::F32, &dev)).unwrap();
        for (filled, occupied) in [(0, 0), (70, 70), (100, 100)] {
            let mut mems = model.new_memories(BATCH, 0, DType::F32, &dev).unwrap();
            fill(&model, &mut mems, filled, 32).unwrap();
            assert_eq!(mems.len(), 1);
            assert!((0..BATCH).all(|b| mems[0].occupied(b) == occupied));
            assert!(!mems[0].is_tracked());
        }
    }
}
