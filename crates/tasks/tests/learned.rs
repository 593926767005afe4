//! The recall task end to end through the learned-task driver: a trained
//! model recalls across sessions and falls to chance when its memory is
//! cleared; disk and process persistence give identical metrics; a run is
//! deterministic; the frozen backbone trains only retention; bad blocks are
//! refused with their path.

use retbench_core::{Layers, Persistence, RetentionConfig, WriteConfig, WriteSource};
use retbench_model::{EvalConfig, ModelConfig, StopConfig, StopWhen, TrainConfig};
use retbench_tasks::learned::Context;
use retbench_tasks::recall::RecallConfig;
use retbench_tasks::{Metric, RunSpec, TaskConfig, TaskContext};

fn task(context: Context) -> TaskConfig {
    TaskConfig::Recall(RecallConfig {
        keys: 8,
        values: 8,
        pairs: 4,
        queries_same: 2,
        queries_next: 4,
        context,
        pairs_min: None,
    })
}

fn retention() -> RetentionConfig {
    let mut r = RetentionConfig::new(32);
    r.layers = Layers::List(vec![1]);
    r.write = WriteConfig::append(retbench_core::Evict::Fifo, WriteSource::Token {});
    r
}

fn model() -> ModelConfig {
    ModelConfig {
        d_model: 32,
        layers: 2,
        heads: 2,
        ffn_mult: 2,
        vocab: None,
        max_len: None,
        init: Default::default(),
    }
}

fn ctx(hash: &str) -> TaskContext {
    TaskContext {
        config_hash: hash.into(),
        seed: 0,
        bandwidth_gbps: None,
        artifacts: None,
    }
}

fn get(ms: &[Metric], name: &str, slice: &str) -> f64 {
    ms.iter()
        .find(|m| m.metric == name && m.slice == slice && m.step.is_none())
        .unwrap_or_else(|| panic!("no {name} {slice}"))
        .value
}

/// Everything but wall-clock measurements.
fn results(ms: &[Metric]) -> Vec<Metric> {
    ms.iter()
        .filter(|m| {
            !matches!(
                m.metric.as_str(),
                "train_tokens_per_s" | "train_seconds" | "base_seconds"
            )
        })
        .cloned()
        .collect()
}

/// Enough training for the small task's cross-session recall to form.
const RECALL_STEPS: usize = 400;

#[test]
fn recall_needs_memory_and_falls_to_chance_when_it_is_cleared() {
    let r = retention();
    let train = TrainConfig::new(RECALL_STEPS, 32, 3e-3);
    let eval = EvalConfig {
        episodes: 512,
        batch: 128,
        every: None,
    };
    let m = model();
    let spec = RunSpec {
        retention: Some(&r),
        model: Some(&m),
        train: Some(&train),
        eval: Some(&eval),
    };
    let t = task(Context::Sessions);
    let ms = t.run(&spec, &ctx("recall-test")).unwrap();
    let specs = t.task().metrics();
    for m in &ms {
        let s = specs.iter().find(|s| s.name == m.metric);
        s.unwrap_or_else(|| panic!("{} has no spec", m.metric))
            .check(m)
            .unwrap();
    }
    let chance: f64 = 1.0 / 8.0;
    let kept = get(&ms, "accuracy", "gap=1");
    let bound_at = get(&ms, "time_to_bind", "");
    if kept > 0.9 {
        assert_eq!(
            bound_at, RECALL_STEPS as f64,
            "bound by the final evaluation"
        );
    } else {
        assert_eq!(bound_at, 0.0);
    }
    let cleared = get(&ms, "accuracy_memory_cleared", "gap=1");
    // 2048 gap=1 queries: the binomial sd at chance is 0.0073.
    let sd = (chance * (1.0 - chance) / 2048.0).sqrt();
    eprintln!("gap=1 accuracy: memory kept {kept}, cleared {cleared}, chance {chance}");
    assert!(
        (cleared - chance).abs() < 4.0 * sd,
        "cleared memory leaves chance: {cleared} vs {chance}"
    );
    assert!(
        kept > chance + 0.15,
        "with memory the model recalls: {kept} (cleared {cleared})"
    );
}

/// Rows with a step at or before `last`, without wall-clock measurements.
fn curve_until(ms: &[Metric], last: u64) -> Vec<Metric> {
    results(ms)
        .into_iter()
        .filter(|m| m.step.is_some_and(|s| s <= last))
        .collect()
}

#[test]
fn a_run_stops_once_bound_and_is_the_full_run_until_then() {
    let (r, m) = (retention(), model());
    let eval = EvalConfig {
        episodes: 256,
        batch: 128,
        every: Some(25),
    };
    let run = |train: &TrainConfig| {
        let spec = RunSpec {
            retention: Some(&r),
            model: Some(&m),
            train: Some(train),
            eval: Some(&eval),
        };
        task(Context::Sessions).run(&spec, &ctx("stop")).unwrap()
    };
    let full_cfg = TrainConfig::new(RECALL_STEPS, 32, 3e-3);
    let stop_cfg = TrainConfig {
        stop: Some(StopConfig {
            when: StopWhen::Bound,
            patience: 2,
        }),
        ..full_cfg.clone()
    };
    let (full, stopped) = (run(&full_cfg), run(&stop_cfg));
    let steps = get(&stopped, "train_steps", "");
    let bound_at = get(&stopped, "time_to_bind", "");
    assert_eq!(
        get(&stopped, "stopped", ""),
        1.0,
        "binds within {RECALL_STEPS} steps"
    );
    // Bound at two evaluations in a row: the first, and the one it stopped on.
    assert_eq!(steps, bound_at + 25.0);
    assert_eq!(bound_at, get(&full, "time_to_bind", ""));
    assert!(get(&stopped, "accuracy", "gap=1") > 0.9);
    // The curve ends at the step it stopped on, every row there once.
    let last = stopped.iter().filter_map(|m| m.step).max();
    assert_eq!(last, Some(steps as u64));
    let at_last = |name: &str| {
        stopped
            .iter()
            .filter(|m| m.metric == name && m.step == last)
            .count()
    };
    assert_eq!((at_last("eval_loss"), at_last("train_loss")), (1, 1));
    // Up to the stop nothing differs from the run that went on.
    assert_eq!(
        curve_until(&stopped, steps as u64),
        curve_until(&full, steps as u64)
    );
    assert!(full.iter().all(|m| m.metric != "train_steps"));
}

#[test]
fn a_stop_rule_needs_evaluations() {
    let (r, m) = (retention(), model());
    let train = TrainConfig {
        stop: Some(StopConfig {
            when: StopWhen::Bound,
            patience: 1,
        }),
        ..TrainConfig::new(10, 4, 3e-3)
    };
    let eval = EvalConfig {
        episodes: 8,
        batch: 8,
        every: None,
    };
    let spec = RunSpec {
        retention: Some(&r),
        model: Some(&m),
        train: Some(&train),
        eval: Some(&eval),
    };
    let err = task(Context::Sessions).validate(&spec).unwrap_err();
    assert!(err.to_string().contains("eval.every"), "{err}");
}

#[test]
fn disk_and_process_persistence_give_identical_metrics_and_runs_repeat() {
    let m = model();
    let train = TrainConfig::new(12, 8, 3e-3);
    let eval = EvalConfig {
        episodes: 40,
        batch: 16,
        every: Some(4),
    };
    let run = |p: Persistence| {
        let mut r = retention();
        r.persistence = p;
        let spec = RunSpec {
            retention: Some(&r),
            model: Some(&m),
            train: Some(&train),
            eval: Some(&eval),
        };
        task(Context::Sessions).run(&spec, &ctx("persist")).unwrap()
    };
    let process = run(Persistence::Process);
    let disk = run(Persistence::Disk);
    assert_eq!(results(&disk), results(&process));
    // The same run twice: the same loss curve, the same scores.
    assert_eq!(results(&run(Persistence::Process)), results(&process));
    let curve: Vec<&Metric> = process
        .iter()
        .filter(|m| m.metric == "train_loss")
        .collect();
    assert_eq!(
        curve.iter().map(|m| m.step).collect::<Vec<_>>(),
        vec![Some(4), Some(8), Some(12)]
    );
}

#[test]
fn baselines_and_the_frozen_backbone_report_their_parameters() {
    let m = model();
    let eval = EvalConfig {
        episodes: 16,
        batch: 16,
        every: None,
    };
    let train = TrainConfig::new(3, 4, 3e-3);
    let r = retention();
    let spec = |retention, train| RunSpec {
        retention,
        model: Some(&m),
        train: Some(train),
        eval: Some(&eval),
    };
    let with = task(Context::Sessions)
        .run(&spec(Some(&r), &train), &ctx("p"))
        .unwrap();
    let without = task(Context::Sessions)
        .run(&spec(None, &train), &ctx("p"))
        .unwrap();
    let full = task(Context::Full)
        .run(&spec(None, &train), &ctx("p"))
        .unwrap();
    let total = get(&with, "total_params", "");
    assert_eq!(get(&with, "trainable_params", ""), total);
    assert!(get(&without, "total_params", "") < total);
    // The full-context model needs positions for both sessions: more of them.
    assert!(get(&full, "total_params", "") > get(&without, "total_params", ""));
    assert!(
        without
            .iter()
            .all(|m| m.metric != "accuracy_memory_cleared"),
        "no memory, no memory control"
    );
    let frozen = TrainConfig {
        frozen_base: true,
        ..train.clone()
    };
    let f = task(Context::Sessions)
        .run(&spec(Some(&r), &frozen), &ctx("p"))
        .unwrap();
    assert_eq!(get(&f, "total_params", ""), total);
    assert_eq!(
        get(&f, "trainable_params", ""),
        total - get(&without, "total_params", ""),
        "only the retention layer trains"
    );
}

/// A base trained first: frozen or fine-tuned, both runs start from the
/// same base (whatever their config hashes), report its in-context
/// accuracy before retention, and differ in what trains.
#[test]
fn frozen_and_fine_tuned_runs_start_from_one_base() {
    let m = model();
    let eval = EvalConfig {
        episodes: 32,
        batch: 16,
        every: None,
    };
    let r = retention();
    let base = |frozen: bool| TrainConfig {
        frozen_base: frozen,
        base_steps: Some(20),
        ..TrainConfig::new(4, 8, 3e-3)
    };
    let run = |train: &TrainConfig, hash: &str| {
        let spec = RunSpec {
            retention: Some(&r),
            model: Some(&m),
            train: Some(train),
            eval: Some(&eval),
        };
        task(Context::Sessions).run(&spec, &ctx(hash)).unwrap()
    };
    let frozen = run(&base(true), "frozen");
    let tuned = run(&base(false), "tuned");
    let scratch = run(&TrainConfig::new(4, 8, 3e-3), "scratch");
    assert_eq!(
        get(&frozen, "in_session_before", ""),
        get(&tuned, "in_session_before", ""),
        "one base"
    );
    let total = get(&tuned, "total_params", "");
    assert_eq!(get(&tuned, "trainable_params", ""), total);
    assert!(get(&frozen, "trainable_params", "") < total / 2.0);
    for ms in [&frozen, &tuned] {
        assert!(get(ms, "base_seconds", "") > 0.0);
        assert!((0.0..=1.0).contains(&get(ms, "in_session_after", "")));
    }
    assert!(
        scratch
            .iter()
            .all(|m| m.metric != "in_session_before" && m.metric != "base_seconds")
    );
    assert_eq!(
        get(&scratch, "in_session_after", ""),
        get(&scratch, "accuracy", "gap=0")
    );
    // A base of a different budget is a different base.
    let longer = TrainConfig {
        base_steps: Some(21),
        ..base(true)
    };
    assert_ne!(
        results(&run(&longer, "frozen")),
        results(&frozen),
        "the base's key covers its training"
    );
}

#[test]
fn bad_blocks_are_refused_with_their_path() {
    let m = model();
    let train = TrainConfig::new(3, 4, 3e-3);
    let mut r = retention();
    r.layers = Layers::List(vec![2]);
    let err = |spec: RunSpec<'_>| {
        task(Context::Sessions)
            .validate(&spec)
            .unwrap_err()
            .to_string()
    };
    let e = err(RunSpec {
        retention: Some(&r),
        model: Some(&m),
        train: Some(&train),
        eval: None,
    });
    assert!(e.starts_with("retention.layers"), "{e}");
    let e = err(RunSpec {
        retention: None,
        model: None,
        train: Some(&train),
        eval: None,
    });
    assert!(e.starts_with("model"), "{e}");
    let small = ModelConfig {
        max_len: Some(4),
        ..model()
    };
    let e = err(RunSpec {
        retention: None,
        model: Some(&small),
        train: Some(&train),
        eval: None,
    });
    assert!(e.starts_with("model.max_len"), "{e}");
    let frozen = TrainConfig {
        frozen_base: true,
        ..train.clone()
    };
    let e = err(RunSpec {
        retention: None,
        model: Some(&m),
        train: Some(&frozen),
        eval: None,
    });
    assert!(e.starts_with("train.frozen_base"), "{e}");
}
