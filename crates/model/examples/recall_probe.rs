//! A first look at cross-session recall (issue 4, not its suite): trains the
//! tiny model with a retention layer on the recall task and prints gap=0 and
//! gap=1 accuracy at evaluation, with memory kept and with memory cleared
//! between the sessions (chance is 1/values).
//!
//! `cargo run --release -p retbench-model --example recall_probe [STEPS]`

use candle_core::{D, DType, Device, Tensor};
use candle_nn::VarMap;
use retbench_core::rng::stream;
use retbench_core::{Evict, RetentionConfig, SeededVarMap, WriteConfig, WriteSource};
use retbench_model::{Model, ModelConfig, Session, TrainConfig, Trainer};
use retbench_tasks::recall::{RecallConfig, SessionData};

fn to_session(s: &SessionData, batch: usize, dev: &Device) -> candle_core::Result<Session> {
    Ok(Session {
        tokens: Tensor::from_vec(s.tokens.clone(), (batch, s.len), dev)?,
        targets: Tensor::from_vec(s.targets.clone(), (batch, s.len), dev)?,
        mask: Tensor::from_vec(s.mask.clone(), (batch, s.len), dev)?,
    })
}

/// (gap=0 accuracy, gap=1 accuracy) over `batch` fresh episodes.
fn evaluate(
    model: &Model,
    task: &RecallConfig,
    seed: u64,
    batch: usize,
    clear: bool,
) -> anyhow::Result<(f64, f64)> {
    let dev = Device::Cpu;
    let data = task.generate(&mut stream("recall-probe", seed, "eval"), batch);
    let mut memories = model.new_memories(batch, seed, DType::F32, &dev)?;
    let (mut hits, mut total) = ([0usize; 2], [0usize; 2]);
    for (i, s) in data.iter().enumerate() {
        if i == 1 && clear {
            memories.iter_mut().try_for_each(|m| m.clear())?;
        }
        let session = to_session(s, batch, &dev)?;
        let fwd = model.forward(&session.tokens, &mut memories)?;
        let pred: Vec<u32> = fwd.logits.argmax(D::Minus1)?.flatten_all()?.to_vec1()?;
        for (p, predicted) in pred.iter().enumerate() {
            if s.mask[p] == 1.0 {
                let g = s.gap[p] as usize;
                total[g] += 1;
                hits[g] += (*predicted == s.targets[p]) as usize;
            }
        }
        model.write(&fwd, &mut memories, None)?;
        memories.iter_mut().try_for_each(|m| m.detach())?;
    }
    Ok((
        hits[0] as f64 / total[0].max(1) as f64,
        hits[1] as f64 / total[1].max(1) as f64,
    ))
}

fn main() -> anyhow::Result<()> {
    let steps: usize = std::env::args()
        .nth(1)
        .map(|s| s.parse())
        .transpose()?
        .unwrap_or(300);
    let task = RecallConfig {
        keys: 16,
        values: 16,
        pairs: 8,
        queries_same: 4,
        queries_next: 8,
    };
    let cfg = ModelConfig {
        d_model: 64,
        layers: 2,
        heads: 4,
        ffn_mult: 4,
        vocab: task.vocab(),
        max_len: 32,
    };
    let mut retention = RetentionConfig::new(64);
    retention.write = WriteConfig::Append {
        evict: Evict::Fifo,
        source: WriteSource::Token {},
    };
    let map = SeededVarMap::new(VarMap::new(), "recall-probe", 0);
    let model = Model::new(
        &cfg,
        Some((&retention, &[1])),
        map.var_builder(DType::F32, &Device::Cpu),
    )?;
    let train = TrainConfig {
        steps,
        batch: 32,
        lr: 3e-3,
        warmup: None,
        weight_decay: 0.01,
        clip: 1.0,
        detach_between_sessions: false,
        frozen_base: false,
    };
    let mut trainer = Trainer::new(&train, map.varmap())?;
    let mut data_rng = stream("recall-probe", 0, "train");
    for step in 0..steps {
        let [s1, s2] = task.generate(&mut data_rng, train.batch);
        let episode = [
            to_session(&s1, train.batch, &Device::Cpu)?,
            to_session(&s2, train.batch, &Device::Cpu)?,
        ];
        let loss = trainer.step(&model, &episode, step as u64)?;
        if step % 50 == 0 || step + 1 == steps {
            let (g0, g1) = evaluate(&model, &task, 1, 128, false)?;
            eprintln!("step {step:4}  loss {loss:.3}  gap0 {g0:.3}  gap1 {g1:.3}");
        }
    }
    let (g0, g1) = evaluate(&model, &task, 2, 256, false)?;
    let (c0, c1) = evaluate(&model, &task, 2, 256, true)?;
    println!(
        "after {steps} steps: memory kept: gap0 {g0:.3} gap1 {g1:.3}; memory cleared: gap0 {c0:.3} gap1 {c1:.3}; chance {:.3}",
        1.0 / task.values as f64
    );
    Ok(())
}
