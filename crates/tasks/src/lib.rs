//! retbench-tasks: what a run measures. Each task kind has a strictly typed
//! config (one variant of [`TaskConfig`], tagged by `kind` in YAML) and a
//! runner that turns (task config, retention config, seed) into a list of
//! [`Metric`]s. Tasks draw every random number from streams seeded by
//! (config hash, seed, stream name), so quality metrics never depend on
//! scheduling. The harness owns files and parallelism; tasks own science.

pub mod metric;
pub mod probe;
pub mod recall;
pub mod scaling;

use serde::{Deserialize, Serialize};

pub use metric::Metric;
use retbench_core::RetentionConfig;

/// Every task kind, as the `task:` block of a run config.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum TaskConfig {
    /// Memory-size scaling probes: read/write latency, top-k fidelity and
    /// associative recall at up to millions of slots (no training).
    Scaling(scaling::ScalingConfig),
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
}

impl TaskConfig {
    /// Short name of the task kind.
    pub fn kind(&self) -> &'static str {
        match self {
            TaskConfig::Scaling(_) => "scaling",
        }
    }

    /// Checks the task config and its pairing with a retention config.
    /// Errors name the field relative to the run config (`task.…`).
    pub fn validate(&self, retention: Option<&RetentionConfig>) -> Result<(), TaskError> {
        match self {
            TaskConfig::Scaling(c) => c.validate(retention),
        }
    }

    /// Runs the task.
    pub fn run(
        &self,
        retention: Option<&RetentionConfig>,
        ctx: &TaskContext,
    ) -> Result<Vec<Metric>, TaskError> {
        match self {
            TaskConfig::Scaling(c) => scaling::run(c, retention, ctx),
        }
    }

    /// Whether the task's metrics include wall-clock timings (such tasks
    /// should run with one job at a time for clean numbers).
    pub fn is_timing(&self) -> bool {
        matches!(self, TaskConfig::Scaling(_))
    }
}

/// What `retbench list` prints for tasks and their metrics.
pub const TASKS: &[(&str, &str, &[&str])] = &[(
    "scaling",
    "memory-size scaling probes (no training): latency, top-k fidelity, associative recall",
    scaling::METRICS,
)];
