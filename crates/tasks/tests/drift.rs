//! The drift task through the learned-task driver: the probe after every
//! session is scored per `writes` for both its groups; a feedback gate fed
//! the true relevance (reliability 1) has precision and recall exactly 1,
//! which it could not have if the probe's own writes leaked into the
//! stream's memory; an open gate passes everything; forgetting, backward
//! transfer and half-life are those of the reported curve; drift starts
//! at 0.

use retbench_core::{GateConfig, Layers, RetentionConfig, WriteConfig, WriteSource};
use retbench_model::{EvalConfig, ModelConfig, TrainConfig};
use retbench_tasks::continual::{half_life, task_backward_transfer, task_forgetting};
use retbench_tasks::drift::DriftConfig;
use retbench_tasks::{Metric, RunSpec, TaskConfig, TaskContext};

fn get(ms: &[Metric], name: &str, slice: &str) -> f64 {
    ms.iter()
        .find(|m| m.metric == name && m.slice == slice && m.step.is_none())
        .unwrap_or_else(|| panic!("no {name} {slice}"))
        .value
}

fn run(gate: GateConfig) -> Vec<Metric> {
    let task = TaskConfig::Drift(DriftConfig {
        keys: 64,
        values: 8,
        facts: 4,
        later: 2,
        eval_later: 8,
        noise: 0.5,
        kinds: vec![
            retbench_tasks::drift::NoiseKind::Random,
            retbench_tasks::drift::NoiseKind::Contradict,
            retbench_tasks::drift::NoiseKind::Flip,
        ],
        reliability: 1.0,
    });
    let mut r = RetentionConfig::new(16);
    r.layers = Layers::List(vec![1]);
    r.write = WriteConfig::append(retbench_core::Evict::Fifo, WriteSource::Chunk { size: 2 });
    r.gate = gate;
    let m = ModelConfig {
        d_model: 32,
        layers: 2,
        heads: 2,
        ffn_mult: 2,
        vocab: None,
        max_len: None,
        init: Default::default(),
    };
    let train = TrainConfig::new(6, 8, 3e-3);
    let eval = EvalConfig {
        episodes: 24,
        batch: 12,
        every: None,
    };
    let spec = RunSpec {
        retention: Some(&r),
        model: Some(&m),
        train: Some(&train),
        eval: Some(&eval),
    };
    task.validate(&spec).unwrap();
    let ctx = TaskContext {
        config_hash: "drift-test".into(),
        seed: 0,
        bandwidth_gbps: None,
        artifacts: None,
    };
    let ms = task.run(&spec, &ctx).unwrap();
    let specs = task.task().metrics();
    for m in &ms {
        specs
            .iter()
            .find(|s| s.name == m.metric)
            .unwrap_or_else(|| panic!("{} has no spec", m.metric))
            .check(m)
            .unwrap();
    }
    ms
}

#[test]
fn a_truthful_feedback_gate_passes_exactly_the_relevant_writes() {
    let ms = run(GateConfig::Feedback { threshold: 0.5 });
    assert_eq!(get(&ms, "gate_precision", ""), 1.0);
    assert_eq!(get(&ms, "gate_recall", ""), 1.0);
    let pass = get(&ms, "gate_pass_rate", "");
    assert!(
        pass > 0.2 && pass < 0.9,
        "about half the later sessions are noise: {pass}"
    );
    let open = run(GateConfig::None {});
    assert_eq!(get(&open, "gate_pass_rate", ""), 1.0);
    assert_eq!(get(&open, "gate_recall", ""), 1.0);
    assert!(
        (get(&open, "gate_precision", "") - pass).abs() < 1e-9,
        "the relevant share"
    );
}

#[test]
fn stream_summaries_are_those_of_the_reported_curve() {
    let ms = run(GateConfig::None {});
    let curve: Vec<(f64, f64)> = (0..=8)
        .map(|w| (w as f64, get(&ms, "accuracy", &format!("writes={w}"))))
        .collect();
    for w in 0..=8 {
        let recent = get(&ms, "recent_accuracy", &format!("writes={w}"));
        assert!((0.0..=1.0).contains(&recent));
    }
    let rows: Vec<Vec<f64>> = curve.iter().map(|&(_, a)| vec![a]).collect();
    assert_eq!(
        get(&ms, "forgetting", ""),
        task_forgetting(&rows, 0).unwrap()
    );
    assert_eq!(
        get(&ms, "bwt", ""),
        task_backward_transfer(&rows, 0).unwrap()
    );
    let (h, censored) = (
        get(&ms, "half_life", ""),
        get(&ms, "half_life_censored", ""),
    );
    match half_life(&curve, 1.0 / 8.0) {
        Some(x) => assert_eq!((h, censored), (x, 0.0)),
        None if curve[0].1 <= 1.0 / 8.0 => assert_eq!((h, censored), (0.0, 0.0)),
        None => assert_eq!((h, censored), (8.0, 1.0), "censored at the stream's length"),
    }
    assert_eq!(get(&ms, "memory_drift", "writes=0"), 0.0);
    // 16 slots, 4 pairs a session: full after 3 later writes, then FIFO
    // overwrites the first facts' slots.
    assert!(get(&ms, "memory_drift", "writes=8") > 0.5);
    assert!(
        ms.iter()
            .any(|m| m.metric == "slot_evictions" && m.slice == "writes=8")
    );
}
