//! retbench-tasks: what a run measures. Each task kind has a strictly typed
//! config (one variant of [`TaskConfig`], tagged by `kind` in YAML) and a
//! runner that turns (task config, retention config, seed) into a list of
//! [`Metric`]s. Tasks draw every random number from streams seeded by
//! (config hash, seed, stream name), so quality metrics never depend on
//! scheduling. The harness owns files and parallelism; tasks own science.

pub mod learned;
pub mod metric;
pub mod probe;
pub mod recall;
pub mod scaling;

use serde::{Deserialize, Serialize};

pub use metric::Metric;
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

impl TaskConfig {
    /// Short name of the task kind.
    pub fn kind(&self) -> &'static str {
        match self {
            TaskConfig::Scaling(_) => "scaling",
            TaskConfig::Recall(_) => "recall",
        }
    }

    /// Checks the task config and its pairing with a retention config.
    /// Errors name the field relative to the run config (`task.…`).
    pub fn validate(&self, spec: &RunSpec<'_>) -> Result<(), TaskError> {
        match self {
            TaskConfig::Scaling(c) => {
                for (name, set) in [
                    ("model", spec.model.is_some()),
                    ("train", spec.train.is_some()),
                    ("eval", spec.eval.is_some()),
                ] {
                    if set {
                        return Err(TaskError::Invalid(format!(
                            "{name}: the scaling task trains no model; remove the `{name}:` block"
                        )));
                    }
                }
                c.validate(spec.retention)
            }
            TaskConfig::Recall(c) => {
                c.validate().map_err(TaskError::Invalid)?;
                learned::validate(c, spec)
            }
        }
    }

    /// Runs the task.
    pub fn run(&self, spec: &RunSpec<'_>, ctx: &TaskContext) -> Result<Vec<Metric>, TaskError> {
        match self {
            TaskConfig::Scaling(c) => scaling::run(c, spec.retention, ctx),
            TaskConfig::Recall(c) => learned::run(c, spec, ctx),
        }
    }

    /// The task `kind` with every option at its default (`None`: no such
    /// kind).
    pub fn with_defaults(kind: &str) -> Option<Self> {
        serde_json::from_value(serde_json::json!({ "kind": kind })).ok()
    }

    /// Whether the task trains a model (and so reads `model:`, `train:`,
    /// `eval:`).
    pub fn trains_a_model(&self) -> bool {
        match self {
            TaskConfig::Scaling(_) => false,
            TaskConfig::Recall(_) => true,
        }
    }

    /// Whether the task's metrics include wall-clock timings (such tasks
    /// should run with one job at a time for clean numbers).
    pub fn is_timing(&self) -> bool {
        matches!(self, TaskConfig::Scaling(_))
    }
}

/// A task's options with their defaults, as the `task:` block of a suite
/// would spell them out (derived from the types, so it cannot go stale).
pub fn task_defaults(kind: &str) -> Option<serde_json::Value> {
    serde_json::to_value(TaskConfig::with_defaults(kind)?).ok()
}

/// What `retbench list` prints for tasks and their metrics.
pub const TASKS: &[(&str, &str, &[&str])] = &[
    (
        "scaling",
        "memory-size scaling probes (no training): latency, top-k fidelity, associative recall",
        scaling::METRICS,
    ),
    (
        "recall",
        "cross-session associative recall (trains a model): accuracy by gap, loss, throughput",
        learned::METRICS,
    ),
];
