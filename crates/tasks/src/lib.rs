//! retbench-tasks: what a run measures. Each task kind has a strictly typed
//! config (one variant of [`TaskConfig`], tagged by `kind` in YAML) and a
//! runner that turns (task config, retention config, seed) into a list of
//! [`Metric`]s. Tasks draw every random number from streams seeded by
//! (config hash, seed, stream name), so quality metrics never depend on
//! scheduling. The harness owns files and parallelism; tasks own science.

pub mod abilities;
pub mod continual;
pub mod copy;
pub mod drift;
pub mod entity;
pub mod learned;
pub mod metric;
pub mod probe;
pub mod recall;
pub mod scaling;

use serde::{Deserialize, Serialize};

pub use metric::{
    Censoring, Contrast, Direction, FigureSpec, Metric, MetricSpec, PaperFigure, Pick, Reference,
};
use retbench_core::RetentionConfig;
use retbench_model::{EvalConfig, ModelConfig, TrainConfig};

/// Every task kind, as the `task:` block of a run config.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum TaskConfig {
    /// Memory-size scaling probes: read/write latency, top-k fidelity and
    /// associative recall at up to millions of slots (no training).
    Scaling(scaling::ScalingConfig),
    /// Cross-session associative recall: a model is trained and scored on
    /// recalling, in a fresh context, facts stated in an earlier session.
    Recall(recall::RecallConfig),
    /// Copy probe (no training): L items through a write policy, each read
    /// back by its key; fidelity against load, and cost.
    CopyProbe(copy::CopyProbeConfig),
    /// Learned copy: reproduce a sequence from memory in a fresh context.
    Copy(copy::CopyConfig),
    /// Cross-session entity tracking with updates.
    Entity(entity::EntityConfig),
    /// Drift under noisy writes: accuracy on first facts against later
    /// writes, with and without gates.
    Drift(drift::DriftConfig),
    /// Five memory abilities across sessions: extraction, updates, time,
    /// aggregation, abstention.
    Abilities(abilities::AbilitiesConfig),
}

/// The blocks of a run config a task reads besides its own.
#[derive(Debug, Clone, Copy, Default)]
pub struct RunSpec<'a> {
    pub retention: Option<&'a RetentionConfig>,
    pub model: Option<&'a ModelConfig>,
    pub train: Option<&'a TrainConfig>,
    pub eval: Option<&'a EvalConfig>,
}

/// Why a task could not run or finish.
#[derive(Debug, thiserror::Error)]
pub enum TaskError {
    #[error(transparent)]
    Core(#[from] retbench_core::Error),
    #[error(transparent)]
    Candle(#[from] candle_core::Error),
    #[error("{0}")]
    Invalid(String),
}

/// What a run knows besides its configs.
#[derive(Debug, Clone)]
pub struct TaskContext {
    /// Hash of the resolved run config: the root of every random stream.
    pub config_hash: String,
    pub seed: u64,
    /// Memory bandwidth measured at the start of the suite, if any.
    pub bandwidth_gbps: Option<f64>,
    /// A folder of the run's own for files it keeps (model checkpoints) or
    /// needs while running (disk-persistence snapshots).
    pub artifacts: Option<std::path::PathBuf>,
}

/// What every task provides to the harness. A task is one file: a config
/// type that implements this, and one variant of [`TaskConfig`] (see
/// `docs/ARCHITECTURE.md`).
pub trait Task: Send + Sync {
    /// The `kind` in YAML.
    fn kind(&self) -> &'static str;
    /// One line for `retbench list`.
    fn about(&self) -> &'static str;
    /// Whether the task trains a model (and so reads `model:`, `train:`,
    /// `eval:`).
    fn trains_a_model(&self) -> bool;
    /// Checks the task config against the run's other blocks. Errors start
    /// with the dotted path of the offending field (`task.pairs: …`).
    fn validate(&self, spec: &RunSpec<'_>) -> Result<(), TaskError>;
    /// Runs the task.
    fn run(&self, spec: &RunSpec<'_>, ctx: &TaskContext) -> Result<Vec<Metric>, TaskError>;
    /// Every metric the task can report with this config.
    fn metrics(&self) -> Vec<MetricSpec>;
    /// Whether it gives the model a per-sample feedback signal (what a
    /// feedback gate needs).
    fn gives_feedback(&self) -> bool {
        false
    }
    /// The bytes a run would need at its peak, as terms blamed on the
    /// dotted path that drives each (`retention.slots`, `model.d_model`),
    /// so that a plan can refuse what would not fit before any run starts.
    /// A rough upper estimate: its purpose is to catch absurd values.
    fn estimate_bytes(&self, _spec: &RunSpec<'_>) -> Vec<(&'static str, u128)> {
        Vec::new()
    }
    /// `retention` options the task does not read, as (dotted path, why):
    /// set to anything but their default, the plan refuses them.
    fn ignores(&self) -> &'static [(&'static str, &'static str)] {
        &[]
    }
    /// A learned task's episodes (what the shared driver trains and scores
    /// on, and what its frozen held-out set is made of); `None` for tasks
    /// that train nothing.
    fn episodes(&self) -> Option<&dyn learned::Episodes> {
        None
    }
    /// The sha256 of the data a run reads: a learned task's frozen held-out
    /// set (the file `retbench datasets` writes), or for a probe task the
    /// vectors it generates. Recorded as `provenance.dataset_hash`.
    fn dataset_hash(
        &self,
        spec: &RunSpec<'_>,
        ctx: &TaskContext,
    ) -> Result<Option<String>, TaskError> {
        Ok(self.dataset(spec, ctx.seed).map(|d| d.sha256()))
    }
    /// A learned task's frozen held-out set for this run.
    fn dataset(&self, spec: &RunSpec<'_>, seed: u64) -> Option<learned::Dataset> {
        let episodes = self.episodes()?;
        let n = spec.eval.cloned().unwrap_or_default().episodes;
        Some(learned::dataset(self.kind(), episodes, n, seed))
    }
}

impl TaskConfig {
    /// Every task kind, as `kind:` names it; a test checks it against the
    /// enum.
    pub const KINDS: &[&str] = &[
        "scaling",
        "recall",
        "copy_probe",
        "copy",
        "entity",
        "drift",
        "abilities",
    ];

    /// The task behind this config: the only exhaustive match over kinds.
    pub fn task(&self) -> &dyn Task {
        match self {
            TaskConfig::Scaling(c) => c,
            TaskConfig::Recall(c) => c,
            TaskConfig::CopyProbe(c) => c,
            TaskConfig::Copy(c) => c,
            TaskConfig::Entity(c) => c,
            TaskConfig::Drift(c) => c,
            TaskConfig::Abilities(c) => c,
        }
    }

    /// Short name of the task kind.
    pub fn kind(&self) -> &'static str {
        self.task().kind()
    }

    /// Checks the task config and its pairing with the other blocks: the
    /// task's own checks, then what no task can run (a feedback gate
    /// without a feedback signal, retention options the task ignores).
    pub fn validate(&self, spec: &RunSpec<'_>) -> Result<(), TaskError> {
        let task = self.task();
        task.validate(spec)?;
        let Some(ret) = spec.retention else {
            return Ok(());
        };
        if matches!(ret.gate, retbench_core::GateConfig::Feedback { .. }) && !task.gives_feedback()
        {
            return Err(TaskError::Invalid(format!(
                "retention.gate: a feedback gate needs a per-sample feedback signal, and the {} task gives none",
                task.kind()
            )));
        }
        let set = serde_json::to_value(ret).unwrap_or_default();
        let default = serde_json::to_value(RetentionConfig::new(ret.slots)).unwrap_or_default();
        for (path, why) in task.ignores() {
            let (a, b) = (set.get(path), default.get(path));
            if a != b {
                return Err(TaskError::Invalid(format!(
                    "retention.{path}: the {} task ignores it ({why}); remove it",
                    task.kind()
                )));
            }
        }
        Ok(())
    }

    /// Runs the task.
    pub fn run(&self, spec: &RunSpec<'_>, ctx: &TaskContext) -> Result<Vec<Metric>, TaskError> {
        self.task().run(spec, ctx)
    }

    /// [`Task::dataset_hash`].
    pub fn dataset_hash(
        &self,
        spec: &RunSpec<'_>,
        ctx: &TaskContext,
    ) -> Result<Option<String>, TaskError> {
        self.task().dataset_hash(spec, ctx)
    }

    /// The task `kind` with every option at its default (`None`: no such
    /// kind).
    pub fn with_defaults(kind: &str) -> Option<Self> {
        serde_json::from_value(serde_json::json!({ "kind": kind })).ok()
    }

    pub fn trains_a_model(&self) -> bool {
        self.task().trains_a_model()
    }

    /// Whether the task's metrics include wall-clock timings (such tasks
    /// should run with one job at a time for clean numbers).
    pub fn is_timing(&self) -> bool {
        self.task().metrics().iter().any(|m| m.timing) && !self.trains_a_model()
    }
}

/// A task's options with their defaults, as the `task:` block of a suite
/// would spell them out (derived from the types, so it cannot go stale).
pub fn task_defaults(kind: &str) -> Option<serde_json::Value> {
    serde_json::to_value(TaskConfig::with_defaults(kind)?).ok()
}
