//! Shared fixtures for the conformance tests: the table of every backend
//! combination, layers with seeded or hand-set weights, and small helpers.

#![allow(dead_code)]

use candle_core::{DType, Device, Tensor};
use candle_nn::VarMap;
use retbench_core::rng::{randn_tensor, stream};
use retbench_core::*;

pub const DEV: Device = Device::Cpu;

pub fn reads(slots: usize) -> Vec<ReadConfig> {
    vec![
        ReadConfig::dense(),
        ReadConfig::topk(2.min(slots)),
        // Biased projections and a plain residual: the reassociated and
        // gathered paths must add back the bias terms they leave out.
        ReadConfig {
            integrate: Integrate::Add,
            bias: true,
            ..ReadConfig::dense()
        },
        ReadConfig {
            integrate: Integrate::Add,
            bias: true,
            ..ReadConfig::topk(2.min(slots))
        },
    ]
}

pub fn writes(source: WriteSource) -> Vec<WriteConfig> {
    let mut w: Vec<WriteConfig> = [
        Evict::Fifo,
        Evict::Lru,
        Evict::Lfu,
        Evict::LowestScore,
        Evict::Random,
    ]
    .into_iter()
    .map(|evict| WriteConfig::append(evict, source))
    .collect();
    for erase in [true, false] {
        w.push(WriteConfig::attention(0.5, erase, source));
    }
    // Without W_u the stored content is u itself.
    w.push(WriteConfig {
        from: WriteFrom::Input,
        ..WriteConfig::append(Evict::Fifo, source)
    });
    w.push(WriteConfig::attention(0.5, true, source));
    w
}

pub fn gates() -> Vec<GateConfig> {
    vec![
        GateConfig::None {},
        GateConfig::Feedback { threshold: 0.5 },
        GateConfig::Learned {},
        GateConfig::Surprise { threshold: 0.05 },
    ]
}

/// Every read × write × gate × key mode × slot age combination.
pub fn combos(slots: usize, heads: usize, source: WriteSource) -> Vec<RetentionConfig> {
    let mut out = Vec::new();
    for read in reads(slots) {
        for write in writes(source) {
            for gate in gates() {
                for keys in [KeyMode::Recompute, KeyMode::Cached] {
                    for slot_age in [SlotAge::None {}, SlotAge::Learned { buckets: 4 }] {
                        let mut c = RetentionConfig::new(slots);
                        c.heads = heads;
                        c.read = read;
                        c.write = write;
                        c.gate = gate;
                        c.keys = keys;
                        c.slot_age = slot_age;
                        out.push(c);
                    }
                }
            }
        }
    }
    out
}

/// A short name for failure messages.
pub fn label(c: &RetentionConfig) -> String {
    serde_json::to_string(c).unwrap()
}

/// A layer with seeded weights; a learned gate is biased open so that the
/// checks that need writes get them (its closed case has its own test).
pub fn layer(cfg: &RetentionConfig, d: usize, dtype: DType) -> (RetentionLayer, SeededVarMap) {
    let map = SeededVarMap::new(VarMap::new(), cfg.hash(), 7);
    if matches!(cfg.gate, GateConfig::Learned {}) {
        map.set(
            "gate.bias",
            &Tensor::new(&[5.0f32], &DEV)
                .unwrap()
                .to_dtype(dtype)
                .unwrap(),
        )
        .unwrap();
    }
    let l = RetentionLayer::new(cfg, d, map.var_builder(dtype, &DEV)).unwrap();
    (l, map)
}

/// A layer whose projections are scaled identities: keys and queries of a
/// stored vector align, values read back unchanged.
pub fn identity_layer(cfg: &RetentionConfig, d: usize, scale: f64) -> RetentionLayer {
    let map = SeededVarMap::new(VarMap::new(), cfg.hash(), 7);
    let eye = Tensor::eye(d, DType::F32, &DEV).unwrap();
    for (name, s) in [
        ("w_q.weight", scale),
        ("w_k.weight", scale),
        ("w_v.weight", 1.0),
        ("w_o.weight", 1.0),
        ("w_u.weight", 1.0),
    ] {
        map.set(name, &(&eye * s).unwrap()).unwrap();
    }
    if matches!(cfg.gate, GateConfig::Learned {}) {
        map.set("gate.bias", &Tensor::new(&[5.0f32], &DEV).unwrap())
            .unwrap();
    }
    RetentionLayer::new(cfg, d, map.var_builder(DType::F32, &DEV)).unwrap()
}

/// Feedback 1 for a feedback gate, nothing otherwise.
pub fn open_feedback(cfg: &RetentionConfig, batch: usize) -> Option<Vec<f32>> {
    match cfg.gate {
        GateConfig::Feedback { .. } => Some(vec![1.0; batch]),
        _ => None,
    }
}

pub fn write(l: &RetentionLayer, h: &Tensor, mem: &mut MemoryState) -> WriteReport {
    let fb = open_feedback(l.config(), mem.batch());
    l.write(h, mem, fb.as_deref()).unwrap()
}

pub fn randn(seed: &str, shape: &[usize], dtype: DType) -> Tensor {
    let mut rng = stream("tests", 0, seed);
    randn_tensor(&mut rng, shape, 1.0, dtype, &DEV).unwrap()
}

pub fn flat(t: &Tensor) -> Vec<f64> {
    t.to_dtype(DType::F64)
        .unwrap()
        .flatten_all()
        .unwrap()
        .to_vec1()
        .unwrap()
}

/// Basis vector e_i · scale as hidden states [1, 1, d].
pub fn basis(i: usize, d: usize, scale: f32) -> Tensor {
    let mut v = vec![0f32; d];
    v[i] = scale;
    Tensor::from_vec(v, (1, 1, d), &DEV).unwrap()
}
