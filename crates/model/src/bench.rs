//! Training throughput of the reference shape that the learned suites train
//! (2 layers, 4 heads, sequence 64, batch 32, vocabulary 32, GELU FFN ×4,
//! AdamW, fp32): tokens per second, as the median over timed steps, without
//! retention and with a dense/append/token retention layer of 128 slots
//! after self-attention in block 1. `retbench train-bench` prints it;
//! `scripts/train_throughput.py` runs a PyTorch model of the same shape
//! beside it and prints the ratio.

use std::time::Instant;

use candle_core::{DType, Device, Tensor};
use candle_nn::VarMap;
use rand::Rng;
use retbench_core::rng::stream;
use retbench_core::{Evict, RetentionConfig, SeededVarMap, WriteConfig, WriteSource};

use crate::{Model, ModelConfig, Session, TrainConfig, TrainError, Trainer};

/// The reference shape: batch, sequence length, vocabulary, layers, heads.
pub const BATCH: usize = 32;
pub const SEQ: usize = 64;
pub const VOCAB: usize = 32;
pub const LAYERS: usize = 2;
pub const HEADS: usize = 4;

/// The retention layer of the "with retention" rows: dense read, FIFO
/// append of every token, 128 slots, in block 1.
pub fn reference_retention() -> RetentionConfig {
    let mut retention = RetentionConfig::new(128);
    retention.write = WriteConfig::append(Evict::Fifo, WriteSource::Token {});
    retention.layers = retbench_core::Layers::List(vec![1]);
    retention
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

/// Trains the reference model at `d_model` (with the reference retention
/// layer or without) for one warm-up step and `steps` timed steps, and
/// returns tokens/s per timed step, in order. Runs on the current rayon
/// pool and the calling thread's kernel choice.
pub fn train_throughput(
    d_model: usize,
    with_retention: bool,
    steps: usize,
) -> Result<Vec<f64>, TrainError> {
    let dev = Device::Cpu;
    let session = reference_session(&dev)?;
    let cfg = ModelConfig::new(d_model, LAYERS, HEADS, VOCAB, SEQ);
    let map = SeededVarMap::new(VarMap::new(), "throughput", 0);
    let retention = reference_retention();
    let model = Model::new(
        &cfg,
        with_retention.then_some(&retention),
        map.var_builder(DType::F32, &dev),
    )?;
    let train = TrainConfig::new(steps + 1, BATCH, 1e-3);
    let mut trainer = Trainer::new(&train, map.varmap(), d_model)?;
    let episode = std::slice::from_ref(&session);
    trainer.step(&model, episode, 0)?; // warm-up: first-touch allocations
    (0..steps)
        .map(|_| {
            let t = Instant::now();
            trainer
                .step(&model, episode, 0)
                .map(|_| (BATCH * SEQ) as f64 / t.elapsed().as_secs_f64())
        })
        .collect()
}
