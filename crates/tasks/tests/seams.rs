//! The task seam from outside the crate: a toy learned task (three sessions,
//! its own slices, a control of its own, a metric of its own through a
//! `Scorer`, a feedback signal, slot telemetry) implemented with `Episodes`
//! and `LearnedTask` alone and run by the shared learned-task driver. Every
//! metric it reports must match a spec it declares.

use rand::Rng;
use rand_chacha::ChaCha8Rng;
use retbench_core::{GateConfig, Layers, RetentionConfig, WriteConfig, WriteSource};
use retbench_model::{EvalConfig, ModelConfig, TrainConfig};
use retbench_tasks::learned::{
    AfterSession, Context, Control, Episodes, LearnedTask, ScoredRow, Scorer, SessionData,
};
use retbench_tasks::metric::{Metric, MetricSpec};
use retbench_tasks::{RunSpec, Task, TaskContext};

/// The toy's own metrics: the answers it scored, and the share of them
/// whose predicted symbol has the right parity (what a model that learned
/// only the parity gets right).
#[derive(Default)]
struct Parity {
    answers: usize,
    right_parity: usize,
    /// Memories seen after a session, and of those, holding a slot.
    memories: usize,
    written: usize,
}

impl Scorer for Parity {
    fn specs(&self, key: &'static str) -> Vec<MetricSpec> {
        vec![
            MetricSpec::new("answers", "scored answers").at_least(0.0),
            MetricSpec::share("right_parity", "answers of the right parity").sliced(key),
            MetricSpec::new("memories_seen", "memories seen after a session").at_least(0.0),
            MetricSpec::share(
                "memories_written",
                "memories holding a slot after a session",
            ),
        ]
    }
    fn after_session(&mut self, seen: &AfterSession<'_>) {
        for m in seen.memories {
            for slots in m.meta().occupied.chunks(m.slots()) {
                self.memories += 1;
                self.written += slots.iter().any(|&o| o) as usize;
            }
        }
    }
    fn add(&mut self, row: &ScoredRow<'_>) {
        for &p in row.positions {
            self.answers += 1;
            self.right_parity += (row.predictions[p] % 2 == row.data.targets[p] % 2) as usize;
        }
    }
    fn metrics(&self, key: &'static str) -> Vec<Metric> {
        vec![
            Metric::new("answers", self.answers as f64),
            Metric::sliced(
                "right_parity",
                key,
                "all",
                self.right_parity as f64 / self.answers.max(1) as f64,
            ),
            Metric::new("memories_seen", self.memories as f64),
            Metric::new(
                "memories_written",
                self.written as f64 / self.memories.max(1) as f64,
            ),
        ]
    }
}

/// Session 0 shows a symbol; session 1 is filler; session 2 asks for it.
/// Samples whose symbol is even carry feedback 1, odd ones 0, so a feedback
/// gate writes only the even ones.
#[derive(Debug)]
struct Echo;

const SYMBOLS: u32 = 8;
const ASK: u32 = SYMBOLS;

impl Episodes for Echo {
    fn vocab(&self) -> usize {
        SYMBOLS as usize + 1
    }
    fn context(&self) -> Context {
        Context::Sessions
    }
    fn slice_key(&self) -> &'static str {
        "parity"
    }
    fn generate(&self, rng: &mut ChaCha8Rng, batch: usize) -> Vec<SessionData> {
        let symbols: Vec<u32> = (0..batch).map(|_| rng.random_range(0..SYMBOLS)).collect();
        let feedback: Vec<f32> = symbols.iter().map(|s| (s % 2 == 0) as u8 as f32).collect();
        let session =
            |tokens: Vec<u32>, targets: Vec<u32>, mask: Vec<f32>, label: Vec<u8>| SessionData {
                tokens,
                targets,
                mask,
                label,
                len: 2,
                feedback: Some(feedback.clone()),
                ..Default::default()
            };
        vec![
            session(
                symbols.iter().flat_map(|&s| [s, s]).collect(),
                vec![0; 2 * batch],
                vec![0.0; 2 * batch],
                vec![0; 2 * batch],
            ),
            session(
                vec![ASK; 2 * batch],
                vec![0; 2 * batch],
                vec![0.0; 2 * batch],
                vec![0; 2 * batch],
            ),
            session(
                vec![ASK; 2 * batch],
                symbols.iter().flat_map(|&s| [s, s]).collect(),
                (0..batch).flat_map(|_| [0.0, 1.0]).collect(),
                symbols.iter().flat_map(|&s| [0, (s % 2) as u8]).collect(),
            ),
        ]
    }
    fn lengths(&self) -> Vec<usize> {
        vec![2, 2, 2]
    }
    fn chance(&self) -> Option<f64> {
        Some(1.0 / SYMBOLS as f64)
    }
    fn controls(&self) -> Vec<Control> {
        vec![Control {
            metric: "accuracy_cleared_late",
            about: "accuracy, memory cleared before the last session",
            clear_before: 2,
        }]
    }
    fn telemetry(&self) -> bool {
        true
    }
    fn scorers(&self) -> Vec<Box<dyn Scorer>> {
        vec![Box::new(Parity::default())]
    }
    fn dataset_config(&self) -> serde_json::Value {
        serde_json::json!({ "symbols": SYMBOLS })
    }
}

impl LearnedTask for Echo {
    const KIND: &'static str = "echo";
    const ABOUT: &'static str = "a toy: recall one symbol two sessions later";
    fn check(&self) -> Result<(), String> {
        Ok(())
    }
    fn vocab_field(&self) -> &'static str {
        "task"
    }
    fn gives_feedback(&self) -> bool {
        true
    }
}

#[test]
fn a_toy_task_runs_through_the_driver_with_its_own_slices_controls_and_feedback() {
    let mut r = RetentionConfig::new(8);
    r.layers = Layers::List(vec![0]);
    r.gate = GateConfig::Feedback { threshold: 0.5 };
    r.write = WriteConfig::append(retbench_core::Evict::Fifo, WriteSource::Last {});
    let model = ModelConfig {
        d_model: 16,
        layers: 1,
        heads: 2,
        ffn_mult: 2,
        vocab: None,
        max_len: None,
        init: Default::default(),
    };
    let train = TrainConfig::new(3, 8, 1e-3);
    let eval = EvalConfig {
        episodes: 16,
        batch: 8,
        every: Some(2),
    };
    let spec = RunSpec {
        retention: Some(&r),
        model: Some(&model),
        train: Some(&train),
        eval: Some(&eval),
    };
    let task: &dyn Task = &Echo;
    task.validate(&spec).unwrap();
    let ctx = TaskContext {
        config_hash: "echo".into(),
        seed: 0,
        bandwidth_gbps: None,
        artifacts: None,
    };
    let metrics = task.run(&spec, &ctx).unwrap();
    let specs = task.metrics();
    for m in &metrics {
        let s = specs
            .iter()
            .find(|s| s.name == m.metric)
            .unwrap_or_else(|| panic!("{} has no spec", m.metric));
        s.check(m).unwrap();
    }
    let has =
        |name: &str, slice: &str| metrics.iter().any(|m| m.metric == name && m.slice == slice);
    assert!(has("accuracy", "parity=0") && has("accuracy", "parity=1"));
    assert!(has("accuracy_cleared_late", "parity=0"));
    // The scorer saw each held-out episode's one answer (session 2's
    // masked position), once: not the unmasked positions, not the training
    // evaluations, not the controls.
    let answers = metrics.iter().find(|m| m.metric == "answers").unwrap();
    assert_eq!(answers.value, eval.episodes as f64);
    let parity = metrics.iter().find(|m| m.metric == "right_parity").unwrap();
    assert_eq!(parity.slice, "parity=all");
    // ... and every held-out episode's memory (one layer has one) after
    // each of its 3 sessions, once.
    let value = |name: &str| metrics.iter().find(|m| m.metric == name).unwrap().value;
    assert_eq!(value("memories_seen"), 3.0 * eval.episodes as f64);
    // The gate writes only even symbols: some memories, never all, hold a
    // slot after a session.
    let written = value("memories_written");
    assert!(written > 0.0 && written < 1.0, "{written}");
    assert!(
        !metrics
            .iter()
            .any(|m| m.metric == "accuracy_memory_cleared")
    );
    // The gate wrote only the even-symbol samples: about half the memories
    // hold a slot after session 0, and fewer than all after all sessions.
    let occupancy = |s: usize| {
        metrics
            .iter()
            .find(|m| m.metric == "slot_occupancy" && m.slice == format!("session={s}"))
            .unwrap()
            .value
    };
    let (first, last) = (occupancy(0), occupancy(2));
    assert!(
        first > 0.0 && first < 1.0 / 8.0,
        "occupancy after session 0: {first}"
    );
    assert!(last >= first, "{first} then {last}");
}
