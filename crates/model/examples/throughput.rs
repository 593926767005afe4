//! Training throughput (tokens/s, median over steps) of the tiny model at
//! d_model 64 and 128: 2 layers, 4 heads, sequence 64, batch 32, one session
//! per step; without retention and with a dense/append/token retention layer
//! (128 slots) after self-attention in block 1.
//!
//! `cargo run --release -p retbench-model --example throughput [STEPS]`
//! (`RETBENCH_ALLOCATOR=default` leaves the allocator untuned, see
//! `retbench_core::alloc`).

use std::time::Instant;

use candle_core::{DType, Device, Tensor};
use candle_nn::VarMap;
use rand::Rng;
use retbench_core::rng::stream;
use retbench_core::{Evict, RetentionConfig, SeededVarMap, WriteConfig, WriteSource};
use retbench_model::{Model, ModelConfig, Session, TrainConfig, Trainer};

fn main() -> anyhow::Result<()> {
    let tuned = retbench_core::alloc::keep_freed_memory();
    let steps: usize = std::env::args()
        .nth(1)
        .map(|s| s.parse())
        .transpose()?
        .unwrap_or(20);
    let (batch, seq) = (32, 64);
    let dev = Device::Cpu;
    let mut rng = stream("throughput", 0, "data");
    let tokens: Vec<u32> = (0..batch * (seq + 1))
        .map(|_| rng.random_range(0..32))
        .collect();
    let take = |off: usize| -> Vec<u32> {
        (0..batch)
            .flat_map(|b| tokens[b * (seq + 1) + off..b * (seq + 1) + off + seq].to_vec())
            .collect()
    };
    let session = Session {
        tokens: Tensor::from_vec(take(0), (batch, seq), &dev)?,
        targets: Tensor::from_vec(take(1), (batch, seq), &dev)?,
        mask: Tensor::ones((batch, seq), DType::F32, &dev)?,
        feedback: None,
    };
    let mut retention = RetentionConfig::new(128);
    retention.write = WriteConfig::append(Evict::Fifo, WriteSource::Token {});
    retention.layers = retbench_core::Layers::List(vec![1]);
    println!(
        "allocator: {} ({}=default to compare)\n",
        if tuned { "freed memory kept" } else { "as is" },
        retbench_core::alloc::ENV
    );
    println!("| d_model | retention | tokens/s (median of {steps} steps) |\n|---|---|---|");
    for d in [64, 128] {
        for with_memory in [false, true] {
            let cfg = ModelConfig::new(d, 2, 4, 32, seq);
            let map = SeededVarMap::new(VarMap::new(), "throughput", 0);
            let ret = with_memory.then_some(&retention);
            let model = Model::new(&cfg, ret, map.var_builder(DType::F32, &dev))?;
            let train = TrainConfig::new(steps, batch, 1e-3);
            let mut trainer = Trainer::new(&train, map.varmap())?;
            trainer.step(&model, std::slice::from_ref(&session), 0)?; // warm-up
            let mut rates: Vec<f64> = (0..steps)
                .map(|_| {
                    let t = Instant::now();
                    trainer
                        .step(&model, std::slice::from_ref(&session), 0)
                        .map(|_| (batch * seq) as f64 / t.elapsed().as_secs_f64())
                })
                .collect::<Result<_, _>>()?;
            rates.sort_by(f64::total_cmp);
            println!(
                "| {d} | {} | {:.0} |",
                if with_memory {
                    "block 1, 128 slots"
                } else {
                    "none"
                },
                rates[rates.len() / 2]
            );
        }
    }
    Ok(())
}
