//! The resolved run config: what one run needs, strictly typed. A suite's
//! `base` deserializes into it, and every expanded plan point is checked by
//! deserializing its JSON form back into it, so a dotted path or value that
//! the types reject never reaches a run.

use retbench_core::RetentionConfig;
use retbench_model::{EvalConfig, ModelConfig, TrainConfig};
use retbench_tasks::{MetricSpec, RunSpec, TaskConfig, TaskError};
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RunConfig {
    pub task: TaskConfig,
    /// The retention layer under test; `null` for runs without memory.
    #[serde(default)]
    pub retention: Option<RetentionConfig>,
    /// The transformer, for tasks that train one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model: Option<ModelConfig>,
    /// Training, for tasks that train a model.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub train: Option<TrainConfig>,
    /// Held-out evaluation, for tasks that train a model.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub eval: Option<EvalConfig>,
}

impl RunConfig {
    /// Value checks serde cannot express. Errors start with the dotted
    /// path of the offending field.
    pub fn validate(&self) -> Result<(), String> {
        if let Some(r) = &self.retention {
            r.validate().map_err(|e| format!("retention.{e}"))?;
        }
        self.task
            .validate(&self.spec())
            .map_err(|e: TaskError| e.to_string())
    }

    /// The blocks a task reads besides its own.
    pub fn spec(&self) -> RunSpec<'_> {
        RunSpec {
            retention: self.retention.as_ref(),
            model: self.model.as_ref(),
            train: self.train.as_ref(),
            eval: self.eval.as_ref(),
        }
    }

    /// Hash of the canonical JSON form (fields at their defaults left out, so
    /// a new defaulted option renames nothing): the root of the run's random
    /// streams.
    /// Persistence is hashed as `process`: where memory waits between
    /// sessions must not change a result, so it must not change a draw
    /// either (a `disk` run is the `process` run, through snapshots). The
    /// run id still tells them apart.
    pub fn hash(&self) -> String {
        let mut canonical = self.clone();
        if let Some(r) = &mut canonical.retention {
            r.persistence = retbench_core::Persistence::Process;
        }
        retbench_core::canonical::canonical_hash(&canonical)
    }
}

/// The specs of every metric the tasks of `configs` report, by name. Two
/// tasks that give one metric different chance levels leave it without one;
/// it keeps only the reference levels and the independent parameters that
/// every task gives it.
pub fn metric_specs<'a>(configs: impl Iterator<Item = &'a RunConfig>) -> Vec<MetricSpec> {
    let mut out: Vec<MetricSpec> = Vec::new();
    for config in configs {
        for spec in config.task.task().metrics() {
            match out.iter_mut().find(|s| s.name == spec.name) {
                Some(s) => {
                    if s.chance != spec.chance {
                        s.chance = None;
                    }
                    s.references.retain(|r| spec.references.contains(r));
                    s.independent_of.retain(|p| spec.independent_of.contains(p));
                }
                None => out.push(spec),
            }
        }
    }
    out
}
