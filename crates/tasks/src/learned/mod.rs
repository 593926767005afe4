//! The driver every learned task shares: build the model a run config
//! describes, train it on episodes the task generates, evaluate it on
//! held-out episodes (every `eval.every` steps and at the end), and score
//! accuracy and loss per slice of the targets. Baselines are configurations,
//! not code paths: `no_memory` is `retention: null`; `full_context` feeds all
//! sessions of an episode as one context; the frozen backbone trains (or
//! loads) the base without retention, freezes it, then trains retention only.
//!
//! Every random draw comes from `stream(config hash, seed, name)`: parameter
//! init per parameter name, training data from "train", held-out data from
//! "eval", memories from the seed; so a run gives the same loss curve twice.
//!
//! One file per concern: the task-facing traits here (`Episodes`,
//! `LearnedTask`, the episode data), `metrics` (what a learned task
//! reports), `scorer` (the seam for a task's own metrics), `episodes`
//! (layout, sizes, checks), `held_out` (the frozen evaluation sets), `eval`
//! and `scoring` (evaluation), `driver` (training one run, checkpoints).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Instant;

use candle_core::{DType, Device};
use candle_nn::VarMap;
use rand_chacha::ChaCha8Rng;
use retbench_core::rng::stream;
use retbench_core::{Persistence, SeededVarMap, Telemetry};
use retbench_model::{
    Between, EvalConfig, Model, ModelConfig, Session, TrainConfig, Trainer, checkpoint,
    run_episodes_observed,
};
use serde::{Deserialize, Serialize};

use crate::metric::{Censoring, Metric, MetricSpec};
use crate::{RunSpec, Task, TaskContext, TaskError};

mod driver;
mod episodes;
mod eval;
mod held_out;
mod metrics;
mod scorer;
mod scoring;

pub use driver::run;
use episodes::*;
pub use episodes::{concat, estimate_bytes, fitted_model, validate};
use eval::*;
pub use held_out::{Dataset, base_key, dataset, dataset_key, held_out, sha256_hex};
pub use metrics::{BIND_THRESHOLD, metric_specs, time_to_bind};
pub use scorer::{AfterSession, ScoredRow, Scorer, Sequences, StaleAnswers, bit_errors};
use scoring::*;

/// An evaluation under a changed memory: the memory is cleared before
/// session `clear_before`, and sessions from there on are scored, so what
/// the model still gets right cannot come from memory.
#[derive(Debug, Clone, Copy)]
pub struct Control {
    pub metric: &'static str,
    pub about: &'static str,
    pub clear_before: usize,
}

/// One session of a batch of episodes, row-major [B, T].
#[derive(Debug, Clone, PartialEq, Default)]
pub struct SessionData {
    pub tokens: Vec<u32>,
    pub targets: Vec<u32>,
    /// 1 where the loss and the scores count.
    pub mask: Vec<f32>,
    /// Slice label of each masked position (for recall, its gap: 0 or 1);
    /// 0 elsewhere.
    pub label: Vec<u8>,
    pub len: usize,
    /// Per-sample feedback signal in [0, 1] (B values), for tasks that give
    /// one to feedback gates.
    pub feedback: Option<Vec<f32>>,
    /// A second slice label of each masked position, for tasks with
    /// [`Episodes::second_slice`] (entity tracking: the queried entity's
    /// updates); `None` otherwise.
    pub label2: Option<Vec<u8>>,
    /// Superseded answers of each masked position (empty elsewhere), for
    /// tasks with [`Episodes::stale`]: a prediction among them is stale.
    pub stale: Option<Vec<Vec<u32>>>,
    /// Per sample (B values), whether this session's writes are truly
    /// relevant (1) or noise (0): what a gate's precision and recall are
    /// scored against. Never shown to the model or the gate.
    pub relevance: Option<Vec<f32>>,
}

impl SessionData {
    /// Rows `start..start + n` of a batch.
    pub fn rows(&self, start: usize, n: usize) -> SessionData {
        let r = start * self.len..(start + n) * self.len;
        SessionData {
            tokens: self.tokens[r.clone()].to_vec(),
            targets: self.targets[r.clone()].to_vec(),
            mask: self.mask[r.clone()].to_vec(),
            label: self.label[r.clone()].to_vec(),
            len: self.len,
            feedback: self.feedback.as_ref().map(|f| f[start..start + n].to_vec()),
            label2: self.label2.as_ref().map(|l| l[r.clone()].to_vec()),
            stale: self.stale.as_ref().map(|l| l[r].to_vec()),
            relevance: self
                .relevance
                .as_ref()
                .map(|f| f[start..start + n].to_vec()),
        }
    }
}

/// How an episode's sessions reach the model.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Context {
    /// One context per session, cleared in between (memory carries over).
    #[default]
    Sessions,
    /// All sessions in one context: what a long enough window gives (the
    /// `full_context` baseline).
    Full,
}

/// What a learned task provides to the driver.
pub trait Episodes {
    /// Symbols the model must embed.
    fn vocab(&self) -> usize;
    /// How sessions reach the model.
    fn context(&self) -> Context;
    /// Name of the slice the labels give (`gap`).
    fn slice_key(&self) -> &'static str;
    /// How first-slice label `label` is written in a slice (`gap=1`); a
    /// task whose labels name categories (abilities: `query=update`) says
    /// so here.
    fn slice_label(&self, label: u8) -> String {
        label.to_string()
    }
    /// A batch of `batch` independent episodes, session by session.
    fn generate(&self, rng: &mut ChaCha8Rng, batch: usize) -> Vec<SessionData>;
    /// Session lengths of every episode.
    fn lengths(&self) -> Vec<usize>;
    /// Accuracy of a model that guesses, where there is one.
    fn chance(&self) -> Option<f64> {
        None
    }
    /// Accuracy levels beyond chance that a predictor with partial
    /// knowledge reaches, as (label, slice, value): drawn as reference
    /// lines on the accuracy figures.
    fn references(&self) -> Vec<(String, String, f64)> {
        Vec::new()
    }
    /// The controls to evaluate besides the plain run; by default, memory
    /// cleared before the second session of a multi-session episode.
    fn controls(&self) -> Vec<Control> {
        if self.context() == Context::Sessions && self.lengths().len() > 1 {
            vec![Control {
                metric: "accuracy_memory_cleared",
                about: "accuracy, memory cleared before the session",
                clear_before: 1,
            }]
        } else {
            Vec::new()
        }
    }
    /// Whether the final evaluation reports slot telemetry per session.
    fn telemetry(&self) -> bool {
        false
    }
    /// The first-slice label whose accuracy crossing [`BIND_THRESHOLD`] is
    /// `time_to_bind`; by default the last (recall: gap=1).
    fn bind_label(&self) -> Option<u8> {
        None
    }
    /// The key of [`SessionData::label2`], a second slice of every
    /// accuracy (entity tracking: `updates`).
    fn second_slice(&self) -> Option<&'static str> {
        None
    }
    /// The task's own metrics beyond accuracy and loss (whole sequences,
    /// bit errors, stale answers, …), each a fresh [`Scorer`]: the driver
    /// declares their specs and feeds them every scored sequence.
    fn scorers(&self) -> Vec<Box<dyn Scorer>> {
        Vec::new()
    }
    /// Groups of held-out episodes with shapes of their own (copy: one per
    /// evaluated length); each is scored with the same model.
    fn eval_groups(&self) -> usize {
        1
    }
    /// A batch of held-out episodes of `group`.
    fn generate_eval(&self, group: usize, rng: &mut ChaCha8Rng, batch: usize) -> Vec<SessionData> {
        let _ = group;
        self.generate(rng, batch)
    }
    /// Session lengths of the held-out episodes of `group`.
    fn eval_lengths(&self, group: usize) -> Vec<usize> {
        let _ = group;
        self.lengths()
    }
    /// Whether held-out episodes are a stream of n sessions followed by n
    /// probes, probe i run after stream session i against a copy of memory
    /// (what it would write or record is discarded), not as part of the
    /// stream. Its accuracy is sliced by `writes`, the index of the session
    /// it followed (0: right after the first); masked positions labelled 0
    /// are `accuracy`, those labelled l > 0 the l-th of
    /// [`Episodes::probe_groups`]. Training episodes end with one probe, an
    /// ordinary last session. Adds `forgetting`, `bwt`, `half_life` (of
    /// `accuracy`) and `memory_drift`.
    fn side_probe(&self) -> bool {
        false
    }
    /// Metric names and descriptions of a side probe's label groups 1, 2, …
    fn probe_groups(&self) -> Vec<(&'static str, &'static str)> {
        Vec::new()
    }
    /// Whether sessions carry [`SessionData::relevance`]: the gate's
    /// `gate_precision`, `gate_recall` and `gate_pass_rate` are scored.
    fn relevance(&self) -> bool {
        false
    }
    /// The slice of per-session telemetry (`writes` for a side-probed
    /// stream).
    fn telemetry_key(&self) -> &'static str {
        if self.side_probe() {
            "writes"
        } else {
            "session"
        }
    }
    /// The first-slice label of answers the context holds (recall and
    /// entity: gap 0): `in_session_after`, and `in_session_before` for a
    /// base trained first, measure whether retention costs in-context
    /// skill.
    fn in_session_label(&self) -> Option<u8> {
        None
    }
    /// What the episodes depend on: the task config without the options
    /// that only lay them out (`context`). It seeds the held-out stream and
    /// names the frozen dataset, so that every variant of a suite (memory or
    /// none, sessions or one context) is scored on the same episodes.
    fn dataset_config(&self) -> serde_json::Value;
}

/// A learned task: its episodes plus what its `Task` implementation needs
/// that episodes do not say. Every `LearnedTask` is a [`Task`] whose
/// validation, run, metrics, memory estimate and held-out set come from
/// this driver.
pub trait LearnedTask: Episodes + Send + Sync {
    /// The `kind` in YAML.
    const KIND: &'static str;
    /// One line for `retbench list`.
    const ABOUT: &'static str;
    /// The task config's own checks; errors start with `task.<field>`.
    fn check(&self) -> Result<(), String>;
    /// The task field that sets the vocabulary's size (what a memory
    /// estimate blames for the logits).
    fn vocab_field(&self) -> &'static str;
    /// Whether its episodes carry a per-sample feedback signal.
    fn gives_feedback(&self) -> bool {
        false
    }
}

impl<T: LearnedTask> Task for T {
    fn kind(&self) -> &'static str {
        T::KIND
    }
    fn about(&self) -> &'static str {
        T::ABOUT
    }
    fn trains_a_model(&self) -> bool {
        true
    }
    fn validate(&self, spec: &RunSpec<'_>) -> Result<(), TaskError> {
        self.check().map_err(TaskError::Invalid)?;
        validate(self, spec)
    }
    fn run(&self, spec: &RunSpec<'_>, ctx: &TaskContext) -> Result<Vec<Metric>, TaskError> {
        run(T::KIND, self, spec, ctx)
    }
    fn metrics(&self) -> Vec<MetricSpec> {
        metric_specs(self)
    }
    fn estimate_bytes(&self, spec: &RunSpec<'_>) -> Vec<(&'static str, u128)> {
        estimate_bytes(self, spec, self.vocab_field())
    }
    fn episodes(&self) -> Option<&dyn Episodes> {
        Some(self)
    }
    fn gives_feedback(&self) -> bool {
        LearnedTask::gives_feedback(self)
    }
}

/// A task config's canonical JSON without `context` (which lays episodes
/// out, and changes none of them) and without `training_only`: fields that
/// shape training episodes only (recall's `pairs_min`), so that a config
/// differing in them is scored on the same held-out episodes.
pub fn without_layout<T>(config: &T, training_only: &[&str]) -> serde_json::Value
where
    T: Serialize + serde::de::DeserializeOwned + PartialEq,
{
    let mut v = retbench_core::canonical::canonical_json(config);
    if let Some(m) = v.as_object_mut() {
        m.remove("context");
        for field in training_only {
            m.remove(*field);
        }
    }
    v
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn time_to_bind_is_the_first_step_over_the_threshold() {
        assert_eq!(
            time_to_bind(&[(250, 0.4), (500, 0.95), (750, 0.5), (1000, 0.99)]),
            500
        );
        assert_eq!(
            time_to_bind(&[(250, 0.4), (500, 0.9)]),
            0,
            "0.9 itself is not above"
        );
        assert_eq!(time_to_bind(&[]), 0);
    }
}
