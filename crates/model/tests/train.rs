//! Training: a tiny model overfits a fixed batch; a frozen base stays
//! bit-identical; gradients cross session boundaries through memory writes.

use candle_core::{DType, Device, Tensor};
use candle_nn::VarMap;
use rand::Rng;
use retbench_core::rng::stream;
use retbench_core::{RetentionConfig, SeededVarMap, WriteConfig, WriteSource};
use retbench_model::{Model, ModelConfig, Session, TrainConfig, Trainer};

fn cfg() -> ModelConfig {
    ModelConfig {
        ffn_mult: 2,
        ..ModelConfig::new(32, 2, 2, 16, 16)
    }
}

fn train_cfg(steps: usize, frozen: bool) -> TrainConfig {
    TrainConfig {
        warmup: Some(5),
        weight_decay: 0.0,
        frozen_base: frozen,
        ..TrainConfig::new(steps, 4, 1e-2)
    }
}

/// A fixed batch of random sequences; targets are the next tokens.
fn session(seed: &str, b: usize, t: usize) -> Session {
    let mut rng = stream("model-tests", 0, seed);
    let seq: Vec<u32> = (0..b * (t + 1)).map(|_| rng.random_range(0..16)).collect();
    let tokens: Vec<u32> = (0..b)
        .flat_map(|i| seq[i * (t + 1)..i * (t + 1) + t].to_vec())
        .collect();
    let targets: Vec<u32> = (0..b)
        .flat_map(|i| seq[i * (t + 1) + 1..(i + 1) * (t + 1)].to_vec())
        .collect();
    let dev = Device::Cpu;
    Session {
        tokens: Tensor::from_vec(tokens, (b, t), &dev).unwrap(),
        targets: Tensor::from_vec(targets, (b, t), &dev).unwrap(),
        mask: Tensor::ones((b, t), DType::F32, &dev).unwrap(),
        feedback: None,
    }
}

fn retention() -> RetentionConfig {
    let mut r = RetentionConfig::new(16);
    r.layers = retbench_core::Layers::List(vec![1]);
    r.write = WriteConfig::append(retbench_core::Evict::Fifo, WriteSource::Token {});
    r
}

#[test]
fn a_tiny_model_overfits_a_fixed_batch() {
    let map = SeededVarMap::new(VarMap::new(), "overfit", 0);
    let model = Model::new(&cfg(), None, map.var_builder(DType::F32, &Device::Cpu)).unwrap();
    let mut trainer = Trainer::new(&train_cfg(200, false), map.varmap(), cfg().d_model).unwrap();
    let batch = [session("fixed", 4, 8)];
    let first = trainer.step(&model, &batch, 0).unwrap();
    let mut last = first;
    for _ in 1..200 {
        last = trainer.step(&model, &batch, 0).unwrap();
    }
    assert!(first > 2.0, "starts near ln 16: {first}");
    assert!(last < 0.1, "memorised: {last}");
}

#[test]
fn a_frozen_base_stays_bit_identical_while_retention_trains() {
    let map = SeededVarMap::new(VarMap::new(), "frozen", 0);
    let model = Model::new(
        &cfg(),
        Some(&retention()),
        map.var_builder(DType::F32, &Device::Cpu),
    )
    .unwrap();
    let snapshot = |prefix: &str| -> Vec<(String, Vec<u32>)> {
        let data = map.varmap().data().lock().unwrap();
        let mut out: Vec<(String, Vec<u32>)> = data
            .iter()
            .filter(|(n, _)| n.starts_with(prefix))
            .map(|(n, v)| {
                (
                    n.clone(),
                    v.flatten_all()
                        .unwrap()
                        .to_vec1::<f32>()
                        .unwrap()
                        .iter()
                        .map(|x| x.to_bits())
                        .collect(),
                )
            })
            .collect();
        out.sort();
        out
    };
    let (base0, ret0) = (snapshot("base."), snapshot("retention."));
    assert!(!base0.is_empty() && !ret0.is_empty());
    let mut trainer = Trainer::new(&train_cfg(5, true), map.varmap(), cfg().d_model).unwrap();
    let episode = [session("s1", 4, 8), session("s2", 4, 8)];
    for _ in 0..5 {
        trainer.step(&model, &episode, 0).unwrap();
    }
    assert_eq!(snapshot("base."), base0, "base weights unchanged");
    assert_ne!(snapshot("retention."), ret0, "retention weights trained");
    let total: usize = map.varmap().all_vars().iter().map(|v| v.elem_count()).sum();
    assert!(trainer.trainable_params() < total);
}

#[test]
fn gradients_cross_sessions_through_memory_writes() {
    let map = SeededVarMap::new(VarMap::new(), "cross", 0);
    let mut r = retention();
    r.write = WriteConfig {
        project: true,
        ..WriteConfig::append(retbench_core::Evict::Fifo, WriteSource::Token {})
    };
    let model = Model::new(&cfg(), Some(&r), map.var_builder(DType::F32, &Device::Cpu)).unwrap();
    // Session 2's loss depends on W_u only through what session 1 wrote.
    let (s1, s2) = (session("a", 2, 6), session("b", 2, 6));
    let mut mems = model.new_memories(2, 0, DType::F32, &Device::Cpu).unwrap();
    mems.iter_mut().for_each(|m| m.track());
    let f1 = model.forward(&s1.tokens, &mut mems).unwrap();
    model.write(&f1, &mut mems, None).unwrap();
    let f2 = model.forward(&s2.tokens, &mut mems).unwrap();
    let loss = retbench_model::masked_cross_entropy(&f2.logits, &s2.targets, &s2.mask).unwrap();
    let grads = loss.backward().unwrap();
    let w_u = map.varmap().data().lock().unwrap()["retention.block1.w_u.weight"].clone();
    let g = grads
        .get(w_u.as_tensor())
        .expect("gradient reaches the write projection");
    assert!(
        g.abs()
            .unwrap()
            .sum_all()
            .unwrap()
            .to_scalar::<f32>()
            .unwrap()
            > 0.0
    );
    // Detached between sessions, it does not.
    let mut mems = model.new_memories(2, 0, DType::F32, &Device::Cpu).unwrap();
    mems.iter_mut().for_each(|m| m.track());
    let f1 = model.forward(&s1.tokens, &mut mems).unwrap();
    model.write(&f1, &mut mems, None).unwrap();
    mems.iter_mut().for_each(|m| m.detach().unwrap());
    let f2 = model.forward(&s2.tokens, &mut mems).unwrap();
    let loss = retbench_model::masked_cross_entropy(&f2.logits, &s2.targets, &s2.mask).unwrap();
    let grads = loss.backward().unwrap();
    assert!(grads.get(w_u.as_tensor()).is_none());
}

#[test]
fn a_diverging_loss_is_an_error_not_a_nan_model() {
    let map = SeededVarMap::new(VarMap::new(), "nan", 0);
    let model = Model::new(&cfg(), None, map.var_builder(DType::F32, &Device::Cpu)).unwrap();
    let head = map.varmap().data().lock().unwrap()["base.head.weight"].clone();
    head.set(&(head.as_tensor().ones_like().unwrap() * f64::NAN).unwrap())
        .unwrap();
    let mut trainer = Trainer::new(&train_cfg(5, false), map.varmap(), cfg().d_model).unwrap();
    let err = trainer
        .step(&model, &[session("x", 2, 4)], 0)
        .unwrap_err()
        .to_string();
    assert!(err.contains("diverged"), "{err}");
}

/// Every parameter as a flat vector, by name.
fn params(map: &SeededVarMap) -> std::collections::BTreeMap<String, Vec<f32>> {
    let data = map.varmap().data().lock().unwrap();
    data.iter()
        .map(|(n, v)| {
            (
                n.clone(),
                v.flatten_all().unwrap().to_vec1::<f32>().unwrap(),
            )
        })
        .collect()
}

#[test]
fn lr_width_trains_weight_matrices_of_a_wider_model_slower() {
    // Adam's first step moves every parameter with a gradient by lr (times
    // its multiple): m̂/√v̂ = ±1. lr_width 16 at width 32 halves the weight
    // matrices' step and leaves embeddings, biases and norm gains at lr.
    let lr = 1e-2;
    let train = TrainConfig {
        warmup: Some(1),
        weight_decay: 0.0,
        lr_width: Some(16),
        ..TrainConfig::new(10, 4, lr)
    };
    let map = SeededVarMap::new(VarMap::new(), "lr-width", 0);
    let model = Model::new(&cfg(), None, map.var_builder(DType::F32, &Device::Cpu)).unwrap();
    let before = params(&map);
    let mut trainer = Trainer::new(&train, map.varmap(), cfg().d_model).unwrap();
    trainer.step(&model, &[session("w", 4, 8)], 0).unwrap();
    let after = params(&map);
    let largest_step = |name: &str| {
        before[name]
            .iter()
            .zip(&after[name])
            .map(|(a, b)| (a - b).abs() as f64)
            .fold(0.0, f64::max)
    };
    for (name, mult) in [
        ("base.block0.attn.qkv.weight", 0.5),
        ("base.block1.fc2.weight", 0.5),
        ("base.head.weight", 0.5),
        ("base.tok.weight", 1.0),
        ("base.pos.weight", 1.0),
        ("base.block0.fc1.bias", 1.0),
    ] {
        let step = largest_step(name);
        assert!(
            (step - lr * mult).abs() < 1e-3 * lr,
            "{name}: largest step {step}, expected {}",
            lr * mult
        );
    }
}
