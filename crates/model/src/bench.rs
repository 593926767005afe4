//! Training throughput of the reference shape that the learned suites train
//! (2 layers, 4 heads, sequence 64, batch 32, vocabulary 32, GELU FFN ×4,
//! AdamW, fp32): tokens per second, as the median over timed steps, without
//! retention and with a retention layer after self-attention in block 1
//! (append of every token, FIFO, a dense or exact top-k read over a memory
//! filled before the timed steps), beside the arithmetic each step does and
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
/// every token, `slots` slots read densely or through an exact top-k.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BenchRetention {
    pub slots: usize,
    /// `None`: dense; `Some(k)`: exact top-k.
    pub top_k: Option<usize>,
}

impl BenchRetention {
    /// The reference layer of the training issue: 64 slots, dense.
    pub const REFERENCE: BenchRetention = BenchRetention {
        slots: 64,
        top_k: None,
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

    /// "dense, 64 slots", "top-32, 16384 slots".
    pub fn label(&self) -> String {
        match self.top_k {
            None => format!("dense, {} slots", self.slots),
            Some(k) => format!("top-{k}, {} slots", self.slots),
        }
    }
}

/// Floating-point operations (2 per multiply-add) of one training step per
/// token: the arithmetic the step cannot avoid, every matmul of the forward
/// pass once and of the backward pass twice. Without retention: the linear
/// layers, causal attention (seq/2 keys per query on average, for q·k and
/// p·v) and the output head (the same count as
/// scripts/train_throughput.py). With retention, per token: the read's W_Q
/// and W_O, the write's W_u and the key and value of the slot it writes
/// (W_K, W_V: each slot projected once, when written), a score against every
/// slot and the mix of the slots read (every slot dense, k top-k). Top-k
/// scores every slot in the forward pass only: its backward reaches just
/// the k rows it read. An implementation that projects every slot again at
/// every read does more than this, and shows it as a lower share of peak.
pub fn flops_per_token(d: usize, retention: Option<BenchRetention>) -> f64 {
    let (d, seq) = (d as f64, SEQ as f64);
    let linear = LAYERS as f64 * (4.0 * d * d + 2.0 * FFN as f64 * d * d) + d * VOCAB as f64;
    let attention = LAYERS as f64 * 2.0 * (seq / 2.0) * d;
    let base = 2.0 * 3.0 * (linear + attention);
    let Some(r) = retention else {
        return base;
    };
    let m = r.slots as f64;
    let (trained_slots, forward_only) = match r.top_k {
        None => (2.0 * m, 0.0),
        Some(k) => (2.0 * (k as f64).min(m), m * d),
    };
    let trained = 5.0 * d * d + trained_slots * d;
    base + 2.0 * (3.0 * trained + forward_only)
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
        fill(&model, &mut filled, r.slots, d_model)?;
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
/// best of 3 rounds of 5, after 2 warm-ups): what the cores can do, measured
/// in the same process as the rows it is compared with.
pub fn matmul_peak_gflops() -> Result<f64, TrainError> {
    const N: usize = 2048;
    let mut rng = stream("throughput", 0, "peak");
    let mut random = || -> candle_core::Result<Tensor> {
        let x: Vec<f32> = (0..N * N).map(|_| rng.random_range(-1.0..1.0)).collect();
        Tensor::from_vec(x, (N, N), &Device::Cpu)
    };
    let (a, b) = (random()?, random()?);
    for _ in 0..2 {
        a.matmul(&b)?;
    }
    let mut best = 0.0f64;
    for _ in 0..3 {
        let t = Instant::now();
        for _ in 0..5 {
            a.matmul(&b)?;
        }
        best = best.max(5.0 * 2.0 * (N as f64).powi(3) / t.elapsed().as_secs_f64() / 1e9);
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

    #[test]
    fn top_k_backward_does_not_grow_with_slots() {
        let at = |slots| {
            flops_per_token(
                64,
                Some(BenchRetention {
                    slots,
                    top_k: Some(32),
                }),
            )
        };
        let dense = |slots| flops_per_token(64, Some(BenchRetention { slots, top_k: None }));
        // Growing the memory 16× adds, per extra slot, one forward score
        // for top-k (2·d flops), and a score and a mix in all three passes
        // for dense (3·2·2·d).
        let per_slot_topk = (at(16_384) - at(1_024)) / 15_360.0;
        let per_slot_dense = (dense(16_384) - dense(1_024)) / 15_360.0;
        assert_eq!(per_slot_topk, 2.0 * 64.0);
        assert_eq!(per_slot_dense, 12.0 * 64.0);
    }

    #[test]
    fn a_filled_memory_is_full_and_out_of_the_graph() {
        let dev = Device::Cpu;
        let cfg = ModelConfig::new(32, LAYERS, HEADS, VOCAB, SEQ);
        let map = SeededVarMap::new(VarMap::new(), "test", 0);
        let r = BenchRetention {
            slots: 100,
            top_k: Some(8),
        };
        let model = Model::new(&cfg, Some(&r.config()), map.var_builder(DType::F32, &dev)).unwrap();
        let mut mems = model.new_memories(BATCH, 0, DType::F32, &dev).unwrap();
        fill(&model, &mut mems, r.slots, 32).unwrap();
        assert_eq!(mems.len(), 1);
        assert!((0..BATCH).all(|b| mems[0].occupied(b) == 100));
        assert!(!mems[0].is_tracked());
    }
}
