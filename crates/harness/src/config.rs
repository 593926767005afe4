//! The resolved run config: what one run needs, strictly typed. A suite's
//! `base` deserializes into it, and every expanded plan point is checked by
//! deserializing its JSON form back into it, so a dotted path or value that
//! the types reject never reaches a run.

use retbench_core::RetentionConfig;
use retbench_tasks::{TaskConfig, TaskError};
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RunConfig {
    pub task: TaskConfig,
    /// The retention layer under test; `null` for runs without memory.
    #[serde(default)]
    pub retention: Option<RetentionConfig>,
}

impl RunConfig {
    /// Value checks serde cannot express. Errors start with the dotted
    /// path of the offending field.
    pub fn validate(&self) -> Result<(), String> {
        if let Some(r) = &self.retention {
            r.validate().map_err(|e| format!("retention.{e}"))?;
        }
        self.task
            .validate(self.retention.as_ref())
            .map_err(|e: TaskError| e.to_string())
    }

    /// Hash of the canonical JSON form: the root of the run's random streams.
    pub fn hash(&self) -> String {
        let json = serde_json::to_vec(self).expect("run config serializes");
        blake3::hash(&json).to_hex()[..16].to_string()
    }
}
