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

use crate::metric::{Metric, MetricSpec};
use crate::{RunSpec, Task, TaskContext, TaskError};

/// The metrics of a learned task: accuracy per slice (with its chance
/// level), one per control, losses, throughput and sizes, and slot
/// telemetry per session when the task asks for it.
pub fn metric_specs(task: &dyn Episodes) -> Vec<MetricSpec> {
    let key = task.slice_key();
    let references = task.references();
    let with_chance = |s: MetricSpec| match task.chance() {
        Some(c) => s.chance(c),
        None => s,
    };
    let with_references = |s: MetricSpec| {
        references
            .iter()
            .fold(s, |s, (label, slice, v)| s.reference(label, slice, *v))
    };
    let sliced = |s: MetricSpec| match task.second_slice() {
        Some(k2) => s.sliced(key).sliced(k2),
        None => s.sliced(key),
    };
    let mut out = vec![with_references(with_chance(sliced(MetricSpec::share(
        "accuracy",
        "held-out accuracy",
    ))))];
    for c in task.controls() {
        out.push(with_references(with_chance(sliced(MetricSpec::share(
            c.metric, c.about,
        )))));
    }
    for (name, about) in task.probe_groups() {
        out.push(with_chance(MetricSpec::share(name, about).sliced(key)));
    }
    if task.sequences() {
        out.push(
            MetricSpec::share("exact_sequence", "sequences reproduced without error").sliced(key),
        );
    }
    if task.bits().is_some() {
        // No one chance level: a guess costs bits/2 per symbol, so it grows
        // with the sequence's length.
        out.push(
            MetricSpec::new("bit_errors_per_sequence", "bit errors per sequence")
                .unit("bits")
                .lower()
                .at_least(0.0)
                .sliced(key),
        );
    }
    if task.stale() {
        out.push(
            MetricSpec::share(
                "stale_answer_rate",
                "answers that were a superseded value (queries about updated facts)",
            )
            .lower(),
        );
    }
    if task.side_probe() {
        out.extend([
            MetricSpec::new(
                "forgetting",
                "max earlier accuracy on the first session's facts minus the last (Chaudhry et al. 2018, eq. 8, one task)",
            )
            .lower()
            .bounds(-1.0, 1.0),
            MetricSpec::new(
                "bwt",
                "backward transfer: last accuracy minus accuracy right after the facts (Lopez-Paz & Ranzato 2017, eq. 3, one task)",
            )
            .bounds(-1.0, 1.0),
            MetricSpec::new(
                "half_life",
                "later writes until accuracy loses half its excess over chance (interpolated; the stream's length if never, 0 if no excess)",
            )
            .unit("writes")
            .at_least(0.0),
            MetricSpec::new(
                "memory_drift",
                "‖M_t − M_0‖/‖M_0‖ over the slots occupied after the first session",
            )
            .lower()
            .at_least(0.0)
            .sliced("writes"),
        ]);
    }
    if task.relevance() {
        out.extend([
            MetricSpec::share(
                "gate_precision",
                "share of the writes the gate passed that were relevant",
            ),
            MetricSpec::share(
                "gate_recall",
                "share of the relevant writes the gate passed",
            ),
            MetricSpec::share("gate_pass_rate", "share of candidate writes passed").neither(),
        ]);
    }
    if task.in_session_label().is_some() {
        out.extend([
            with_chance(MetricSpec::share(
                "in_session_before",
                "in-context accuracy of the base before retention was added",
            )),
            with_chance(MetricSpec::share(
                "in_session_after",
                "in-context accuracy of the final model",
            )),
        ]);
    }
    out.push(
        MetricSpec::new(
            "time_to_bind",
            "first evaluation step with accuracy above 0.9 on the binding slice (0: never)",
        )
        .unit("steps")
        .neither()
        .at_least(0.0),
    );
    let loss = |name: &str, about: &str| {
        MetricSpec::new(name, about)
            .unit("nats")
            .lower()
            .at_least(0.0)
    };
    out.extend([
        loss("final_loss", "held-out loss at the end"),
        loss("eval_loss", "held-out loss"),
        loss("train_loss", "training loss"),
        MetricSpec::new("train_tokens_per_s", "training throughput")
            .unit("tokens/s")
            .at_least(0.0)
            .timing(),
        MetricSpec::new(
            "train_seconds",
            "training time (after the base, where one is trained first)",
        )
        .unit("s")
        .lower()
        .at_least(0.0)
        .timing()
        .no_plot(),
        MetricSpec::new("base_seconds", "training time of the base alone")
            .unit("s")
            .lower()
            .at_least(0.0)
            .timing()
            .no_plot(),
        MetricSpec::new("trainable_params", "trainable parameters")
            .neither()
            .at_least(0.0)
            .no_plot(),
        MetricSpec::new("total_params", "parameters")
            .neither()
            .at_least(0.0)
            .no_plot(),
    ]);
    if task.telemetry() {
        let t = |name: &str, about: &str| {
            MetricSpec::new(name, about)
                .neither()
                .at_least(0.0)
                .sliced(task.telemetry_key())
        };
        out.extend([
            t("slot_occupancy", "occupied share of slots").bounds(0.0, 1.0),
            t("slot_usage_kl", "KL of read usage from uniform").unit("nats"),
            t("slot_usage_gini", "Gini coefficient of read usage").bounds(0.0, 1.0),
            t("slot_dead", "occupied slots never read").unit("slots"),
            t("slot_evictions", "evictions").unit("slots"),
        ]);
    }
    out
}

/// The accuracy at which a slice counts as bound (`time_to_bind`).
pub const BIND_THRESHOLD: f64 = 0.9;

/// The first step of `curve` (step, accuracy) whose accuracy exceeds
/// [`BIND_THRESHOLD`]; 0 when none does.
pub fn time_to_bind(curve: &[(usize, f64)]) -> usize {
    curve
        .iter()
        .find(|(_, a)| *a > BIND_THRESHOLD)
        .map_or(0, |(step, _)| *step)
}

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
    /// Whether whole sequences are scored: `exact_sequence` (every masked
    /// position of a session right), per label of the first slice.
    fn sequences(&self) -> bool {
        false
    }
    /// The width of the symbols as bit vectors, where tokens `0..2^bits`
    /// are such vectors: `bit_errors_per_sequence` (the NTM copy metric).
    fn bits(&self) -> Option<u32> {
        None
    }
    /// Whether masked positions carry superseded answers
    /// (`stale_answer_rate`).
    fn stale(&self) -> bool {
        false
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
/// out, and changes none of them).
pub fn without_layout<T>(config: &T) -> serde_json::Value
where
    T: Serialize + serde::de::DeserializeOwned + PartialEq,
{
    let mut v = retbench_core::canonical::canonical_json(config);
    if let Some(m) = v.as_object_mut() {
        m.remove("context");
    }
    v
}

/// The longest context a task feeds the model, in training or evaluation.
fn max_context(task: &dyn Episodes) -> usize {
    let fit = |lengths: Vec<usize>| match task.context() {
        Context::Sessions => lengths.iter().copied().max().unwrap_or(1),
        Context::Full => lengths.iter().sum(),
    };
    (0..task.eval_groups())
        .map(|g| fit(task.eval_lengths(g)))
        .chain([fit(task.lengths())])
        .max()
        .unwrap_or(1)
}

/// Joins the sessions of a batch into one context per episode.
pub fn concat(sessions: &[SessionData], batch: usize) -> SessionData {
    let len: usize = sessions.iter().map(|s| s.len).sum();
    let mut out = SessionData {
        tokens: Vec::with_capacity(batch * len),
        targets: Vec::with_capacity(batch * len),
        mask: Vec::with_capacity(batch * len),
        label: Vec::with_capacity(batch * len),
        len,
        feedback: sessions.iter().find_map(|s| s.feedback.clone()),
        label2: sessions
            .iter()
            .any(|s| s.label2.is_some())
            .then(|| Vec::with_capacity(batch * len)),
        stale: sessions
            .iter()
            .any(|s| s.stale.is_some())
            .then(|| Vec::with_capacity(batch * len)),
        // One context is one write: relevant only if every part is.
        relevance: sessions
            .iter()
            .filter_map(|s| s.relevance.clone())
            .reduce(|a, b| a.iter().zip(&b).map(|(x, y)| x.min(*y)).collect()),
    };
    for b in 0..batch {
        for s in sessions {
            let row = b * s.len..(b + 1) * s.len;
            out.tokens.extend_from_slice(&s.tokens[row.clone()]);
            out.targets.extend_from_slice(&s.targets[row.clone()]);
            out.mask.extend_from_slice(&s.mask[row.clone()]);
            out.label.extend_from_slice(&s.label[row.clone()]);
            if let Some(l) = &mut out.label2 {
                match &s.label2 {
                    Some(x) => l.extend_from_slice(&x[row.clone()]),
                    None => l.extend(std::iter::repeat_n(0, s.len)),
                }
            }
            if let Some(l) = &mut out.stale {
                match &s.stale {
                    Some(x) => l.extend_from_slice(&x[row]),
                    None => l.extend(std::iter::repeat_n(Vec::new(), s.len)),
                }
            }
        }
    }
    out
}

fn layout(task: &dyn Episodes, sessions: Vec<SessionData>, batch: usize) -> Vec<SessionData> {
    match task.context() {
        Context::Sessions => sessions,
        Context::Full => vec![concat(&sessions, batch)],
    }
}

fn tensors(
    sessions: &[SessionData],
    batch: usize,
    dev: &Device,
) -> candle_core::Result<Vec<Session>> {
    sessions
        .iter()
        .map(|s| {
            let mut out = retbench_model::eval::session(
                s.tokens.clone(),
                s.targets.clone(),
                s.mask.clone(),
                batch,
                s.len,
                dev,
            )?;
            out.feedback = s.feedback.clone();
            Ok(out)
        })
        .collect()
}

/// The model config a task's data needs, with the user's fields kept.
pub fn fitted_model(task: &dyn Episodes, model: &ModelConfig) -> Result<ModelConfig, String> {
    model.fit(task.vocab(), max_context(task))
}

/// The peak bytes of a learned run, by the field that drives each term:
/// parameters with their gradients and AdamW moments and the activations of
/// a training step (`model.d_model`), the logits over the vocabulary
/// (`vocab_field`), and the memories a batch keeps (`retention.slots`).
/// Takes the larger of training and evaluation batches.
pub fn estimate_bytes(
    task: &dyn Episodes,
    spec: &RunSpec<'_>,
    vocab_field: &'static str,
) -> Vec<(&'static str, u128)> {
    let (Some(model), Some(train)) = (spec.model, spec.train) else {
        return Vec::new();
    };
    let u = |x: usize| x as u128;
    let lengths = task.lengths();
    let tokens_per_episode: u128 = (0..task.eval_groups())
        .map(|g| task.eval_lengths(g).iter().map(|&l| u(l)).sum::<u128>())
        .chain([lengths.iter().map(|&l| u(l)).sum()])
        .max()
        .unwrap_or(1);
    let t_max = u(max_context(task));
    let (d, l, v, ffn) = (
        u(model.d_model),
        u(model.layers),
        u(model.vocab.unwrap_or(task.vocab()).max(task.vocab())),
        u(model.ffn_mult),
    );
    let batch = u(train.batch).max(u(spec.eval.map_or(0, |e| e.batch)));
    let tokens = batch.saturating_mul(tokens_per_episode);
    let sq = |x: u128| x.saturating_mul(x);
    let params = l
        .saturating_mul(sq(d).saturating_mul(4 + 2 * ffn))
        .saturating_add(sq(d).saturating_mul(6 * l))
        .saturating_add(t_max.saturating_mul(d));
    let model_bytes = params
        .saturating_mul(16)
        .saturating_add(
            tokens
                .saturating_mul(d)
                .saturating_mul(l)
                .saturating_mul(4 * (12 + 2 * ffn)),
        )
        .saturating_add(
            batch
                .saturating_mul(u(model.heads))
                .saturating_mul(sq(t_max))
                .saturating_mul(l * 16),
        );
    let vocab_bytes = v
        .saturating_mul(d)
        .saturating_mul(2 * 16)
        .saturating_add(tokens.saturating_mul(v).saturating_mul(12));
    let mut out = vec![("model.d_model", model_bytes), (vocab_field, vocab_bytes)];
    if let Some(r) = spec.retention {
        let sessions = u(lengths.len()) + 1;
        let memories = batch
            .saturating_mul(u(r.slots))
            .saturating_mul(d)
            .saturating_mul(l)
            .saturating_mul(sessions)
            .saturating_mul(8);
        out.push(("retention.slots", memories));
    }
    out
}

/// Checks a learned run's blocks together (paths relative to the run).
pub fn validate(task: &dyn Episodes, spec: &RunSpec<'_>) -> Result<(), TaskError> {
    let invalid = TaskError::Invalid;
    let model = spec
        .model
        .ok_or_else(|| invalid("model: this task trains a model; add a `model:` block".into()))?;
    let train = spec
        .train
        .ok_or_else(|| invalid("train: this task trains a model; add a `train:` block".into()))?;
    let model = fitted_model(task, model).map_err(invalid)?;
    model.validate().map_err(invalid)?;
    train.validate().map_err(invalid)?;
    if let Some(e) = spec.eval {
        e.validate().map_err(invalid)?;
    }
    match spec.retention {
        Some(r) => {
            r.layers
                .resolve(model.layers)
                .map_err(|e| invalid(format!("retention.{e}")))?;
            r.head_dim(model.d_model)
                .map_err(|e| invalid(format!("retention.{e}")))?;
        }
        None if train.frozen_base => {
            return Err(invalid(
                "train.frozen_base: there is nothing to train without retention (retention is null)"
                    .into(),
            ));
        }
        None => {}
    }
    if let Some(path) = &train.base_init {
        if !path.is_file() {
            return Err(invalid(format!(
                "train.base_init: {}: no such file",
                path.display()
            )));
        }
        // The checkpoint must hold every base parameter, in this model's
        // shapes: found now, not after a run has started.
        let map = VarMap::new();
        let vb = candle_nn::VarBuilder::from_varmap(&map, DType::F32, &Device::Cpu);
        Model::new(&model, None, vb)?;
        checkpoint::check(&map, path, "base.")
            .map_err(|e| invalid(format!("train.base_init: {e}")))?;
    }
    Ok(())
}

/// Accuracy and mean loss over masked positions, per slice label; whole
/// sequences and stale answers where the task scores them; and the slot
/// telemetry per session, summed over batches, when asked for.
#[derive(Debug, Default, Clone)]
struct Scores {
    /// (slice: 0 the first key, 1 the second, label) → (hits, count)
    hits: BTreeMap<(u8, u8), (usize, usize)>,
    /// A side probe's groups beyond the first: (group, writes) → (hits, count)
    groups: BTreeMap<(u8, u8), (usize, usize)>,
    /// first-slice label → (sequences all right, bit errors, sequences)
    sequences: BTreeMap<u8, (usize, u64, usize)>,
    /// (stale answers, queries that have superseded answers)
    stale: (usize, usize),
    nll: f64,
    n: usize,
    /// session → per batch, the mean telemetry of the first memory
    telemetry: BTreeMap<usize, Vec<Telemetry>>,
    /// session → (Σ per-memory drift, memories), side-probed streams
    drift: BTreeMap<usize, (f64, usize)>,
    /// (relevant passed, passed, relevant, candidates) over the stream
    gate: [f64; 4],
}

/// Bits that differ between two symbols of `bits` bits; a prediction that
/// is no such symbol (a marker) gets every bit wrong.
pub fn bit_errors(predicted: u32, target: u32, bits: u32) -> u32 {
    if predicted >> bits != 0 {
        bits
    } else {
        (predicted ^ target).count_ones()
    }
}

impl Scores {
    /// Scores one session; `label`, where given, is a side probe's
    /// `writes`: it replaces the first-slice label of group 0's positions,
    /// and the other groups are kept apart.
    fn add(
        &mut self,
        task: &dyn Episodes,
        data: &SessionData,
        out: &retbench_model::SessionOutput,
        label: Option<u8>,
    ) {
        let (sequences, bits) = (task.sequences(), task.bits());
        for row in 0..data.mask.len() / data.len.max(1) {
            // (all right, bit errors, first-slice label) of this row's sequence
            let mut seq: Option<(bool, u64, u8)> = None;
            for p in row * data.len..(row + 1) * data.len {
                if data.mask[p] == 0.0 {
                    continue;
                }
                let right = out.predictions[p] == data.targets[p];
                if let Some(writes) = label.filter(|_| data.label[p] > 0) {
                    let e = self.groups.entry((data.label[p], writes)).or_default();
                    e.0 += right as usize;
                    e.1 += 1;
                    continue;
                }
                let first = label.unwrap_or(data.label[p]);
                let e = self.hits.entry((0, first)).or_default();
                e.0 += right as usize;
                e.1 += 1;
                if let Some(l2) = &data.label2 {
                    let e = self.hits.entry((1, l2[p])).or_default();
                    e.0 += right as usize;
                    e.1 += 1;
                }
                if let Some(stale) = data.stale.as_ref().map(|s| &s[p])
                    && !stale.is_empty()
                {
                    self.stale.0 += stale.contains(&out.predictions[p]) as usize;
                    self.stale.1 += 1;
                }
                let s = seq.get_or_insert((true, 0, first));
                s.0 &= right;
                if let Some(b) = bits {
                    s.1 += bit_errors(out.predictions[p], data.targets[p], b) as u64;
                }
                self.nll += out.nll[p] as f64;
                self.n += 1;
            }
            if let (true, Some((all, errors, label))) = (sequences, seq) {
                let e = self.sequences.entry(label).or_default();
                e.0 += all as usize;
                e.1 += errors;
                e.2 += 1;
            }
        }
    }

    /// Accuracy per label of the first slice (`which` 0) or the second (1).
    fn accuracy_of(&self, which: u8) -> impl Iterator<Item = (u8, f64)> + '_ {
        self.hits
            .iter()
            .filter(move |((w, _), _)| *w == which)
            .map(|((_, l), (h, n))| (*l, *h as f64 / (*n).max(1) as f64))
    }

    fn accuracy(&self) -> impl Iterator<Item = (u8, f64)> + '_ {
        self.accuracy_of(0)
    }

    /// Every accuracy, sliced by the first key and, where there is one, the
    /// second, as `metric`.
    fn accuracy_metrics(&self, task: &dyn Episodes, metric: &str) -> Vec<Metric> {
        let mut out: Vec<Metric> = self
            .accuracy()
            .map(|(l, a)| Metric::sliced(metric, task.slice_key(), l, a))
            .collect();
        if let Some(key) = task.second_slice() {
            out.extend(
                self.accuracy_of(1)
                    .map(|(l, a)| Metric::sliced(metric, key, l, a)),
            );
        }
        let names = task.probe_groups();
        for ((group, writes), (h, n)) in &self.groups {
            if let Some((name, _)) = names.get(*group as usize - 1) {
                let a = *h as f64 / (*n).max(1) as f64;
                out.push(Metric::sliced(name, task.slice_key(), writes, a));
            }
        }
        out
    }

    /// `exact_sequence`, `bit_errors_per_sequence` and `stale_answer_rate`,
    /// where the task scores them.
    fn sequence_metrics(&self, task: &dyn Episodes) -> Vec<Metric> {
        let key = task.slice_key();
        let mut out = Vec::new();
        for (label, (all, errors, n)) in &self.sequences {
            let n = (*n).max(1) as f64;
            out.push(Metric::sliced(
                "exact_sequence",
                key,
                label,
                *all as f64 / n,
            ));
            if task.bits().is_some() {
                out.push(Metric::sliced(
                    "bit_errors_per_sequence",
                    key,
                    label,
                    *errors as f64 / n,
                ));
            }
        }
        if task.stale() {
            let (stale, n) = self.stale;
            out.push(Metric::new(
                "stale_answer_rate",
                stale as f64 / n.max(1) as f64,
            ));
        }
        out
    }

    fn loss(&self) -> f64 {
        self.nll / self.n.max(1) as f64
    }

    /// The side probe's summaries: forgetting, backward transfer and
    /// half-life of the accuracy-against-writes curve, and memory drift.
    fn stream_metrics(&self, task: &dyn Episodes) -> Vec<Metric> {
        use crate::continual::{half_life, task_backward_transfer, task_forgetting};
        let curve: Vec<(f64, f64)> = self.accuracy().map(|(w, a)| (w as f64, a)).collect();
        let mut out = Vec::new();
        // One task (the first session's facts), measured after every write.
        let rows: Vec<Vec<f64>> = curve.iter().map(|&(_, a)| vec![a]).collect();
        if let Some(f) = task_forgetting(&rows, 0) {
            out.push(Metric::new("forgetting", f));
        }
        if let Some(b) = task_backward_transfer(&rows, 0) {
            out.push(Metric::new("bwt", b));
        }
        if let (Some(&(_, a0)), Some(&(last, _))) = (curve.first(), curve.last()) {
            let chance = task.chance().unwrap_or(0.0);
            let h = match half_life(&curve, chance) {
                Some(h) => h,
                None if a0 <= chance => 0.0,
                None => last, // censored: never halved within the stream
            };
            out.push(Metric::new("half_life", h));
        }
        for (session, (sum, n)) in &self.drift {
            out.push(Metric::sliced(
                "memory_drift",
                "writes",
                session,
                sum / (*n).max(1) as f64,
            ));
        }
        out
    }

    /// The gate against the writes' true relevance, where a memory saw any.
    fn gate_metrics(&self) -> Vec<Metric> {
        let [tp, passed, relevant, seen] = self.gate;
        if seen == 0.0 {
            return Vec::new();
        }
        let mut out = vec![Metric::new("gate_pass_rate", passed / seen)];
        if passed > 0.0 {
            out.push(Metric::new("gate_precision", tp / passed));
        }
        if relevant > 0.0 {
            out.push(Metric::new("gate_recall", tp / relevant));
        }
        out
    }

    fn telemetry_metrics(&self, key: &str) -> Vec<Metric> {
        let mut out = Vec::new();
        for (session, batches) in &self.telemetry {
            let t = Telemetry::average(batches);
            for (name, v) in [
                ("slot_occupancy", t.occupancy),
                ("slot_usage_kl", t.usage_kl),
                ("slot_usage_gini", t.usage_gini),
                ("slot_dead", t.dead_slots),
                ("slot_evictions", t.evictions),
            ] {
                out.push(Metric::sliced(name, key, session, v));
            }
        }
        out
    }
}

/// The root of a pretrained base's random streams: 16 hex digits of the
/// blake3 hash of what the base depends on (the task, its layout, the model
/// and the base's training), so that runs which differ only in what comes
/// after the base share it.
pub fn base_key(
    kind: &str,
    task: &dyn Episodes,
    model: &ModelConfig,
    train: &TrainConfig,
) -> String {
    let text = serde_json::json!({
        "kind": kind,
        "task": task.dataset_config(),
        "context": task.context(),
        "model": retbench_core::canonical::canonical_json(model),
        "train": retbench_core::canonical::canonical_json(train),
    });
    blake3::hash(format!("base:{text}").as_bytes()).to_hex()[..16].to_string()
}

/// The key of a task's held-out data: 16 hex digits of the blake3 hash of
/// its kind and [`Episodes::dataset_config`].
pub fn dataset_key(kind: &str, task: &dyn Episodes) -> String {
    let text = format!("{kind}:{}", task.dataset_config());
    blake3::hash(text.as_bytes()).to_hex()[..16].to_string()
}

/// The held-out episodes of (task, seed): `episodes` per evaluation group,
/// each group one batch, drawn from one stream seeded by the dataset key,
/// so they depend on nothing else (not the model, not the variant, not the
/// evaluation batch size).
pub fn held_out(
    kind: &str,
    task: &dyn Episodes,
    episodes: usize,
    seed: u64,
) -> Vec<Vec<SessionData>> {
    let mut rng = stream(&dataset_key(kind, task), seed, "eval");
    (0..task.eval_groups())
        .map(|g| task.generate_eval(g, &mut rng, episodes))
        .collect()
}

/// A task's held-out set as the bytes of its frozen file: one JSON object
/// per episode, `{"group", "sessions": [{"tokens", "queries": [[position,
/// target, label, (label2), (stale…)]], ("feedback"), ("relevance")}]}`.
#[derive(Debug, Clone, PartialEq)]
pub struct Dataset {
    /// `<kind>/<key>-seed<seed>-n<episodes>.jsonl`, under the datasets
    /// folder.
    pub file: String,
    pub kind: String,
    pub seed: u64,
    pub episodes: usize,
    /// [`Episodes::dataset_config`].
    pub config: serde_json::Value,
    pub bytes: Vec<u8>,
}

impl Dataset {
    /// Lower-case hex sha256 of the bytes.
    pub fn sha256(&self) -> String {
        sha256_hex(&self.bytes)
    }
}

/// Lower-case hex sha256.
pub fn sha256_hex(bytes: &[u8]) -> String {
    use sha2::Digest;
    sha2::Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// The frozen form of [`held_out`].
pub fn dataset(kind: &str, task: &dyn Episodes, episodes: usize, seed: u64) -> Dataset {
    let mut bytes = Vec::new();
    for (g, sessions) in held_out(kind, task, episodes, seed).iter().enumerate() {
        for b in 0..episodes {
            let mut line = serde_json::json!({ "group": g });
            let mut out = Vec::with_capacity(sessions.len());
            for s in sessions {
                let row = b * s.len..(b + 1) * s.len;
                let queries: Vec<serde_json::Value> = row
                    .clone()
                    .filter(|&p| s.mask[p] != 0.0)
                    .map(|p| {
                        let mut q = vec![
                            serde_json::json!(p - row.start),
                            serde_json::json!(s.targets[p]),
                            serde_json::json!(s.label[p]),
                        ];
                        if let Some(l2) = &s.label2 {
                            q.push(serde_json::json!(l2[p]));
                        }
                        if let Some(st) = &s.stale {
                            q.push(serde_json::json!(st[p]));
                        }
                        serde_json::Value::Array(q)
                    })
                    .collect();
                let mut session = serde_json::json!({
                    "tokens": &s.tokens[row],
                    "queries": queries,
                });
                if let Some(f) = &s.feedback {
                    session["feedback"] = serde_json::json!(f[b]);
                }
                if let Some(r) = &s.relevance {
                    session["relevance"] = serde_json::json!(r[b]);
                }
                out.push(session);
            }
            line["sessions"] = serde_json::Value::Array(out);
            bytes.extend(serde_json::to_vec(&line).expect("json"));
            bytes.push(b'\n');
        }
    }
    let key = dataset_key(kind, task);
    Dataset {
        file: format!("{kind}/{key}-seed{seed}-n{episodes}.jsonl"),
        kind: kind.to_string(),
        seed,
        episodes,
        config: task.dataset_config(),
        bytes,
    }
}

/// The held-out episodes, generated once per run ([`held_out`]) and laid
/// out for the model in batches of `eval.batch`.
struct EvalSet {
    batches: Vec<(Vec<SessionData>, usize)>,
}

impl EvalSet {
    fn new(kind: &str, task: &dyn Episodes, eval: &EvalConfig, seed: u64) -> Self {
        let mut batches = Vec::new();
        for group in held_out(kind, task, eval.episodes, seed) {
            let mut start = 0;
            while start < eval.episodes {
                let b = (eval.episodes - start).min(eval.batch);
                let rows = group.iter().map(|s| s.rows(start, b)).collect();
                batches.push((layout(task, rows, b), b));
                start += b;
            }
        }
        EvalSet { batches }
    }

    /// Scores sessions `from..` of every episode; for a side-probed task
    /// ([`Episodes::side_probe`]), the probe after every session of the
    /// stream, with memory drift and the gate against relevance.
    fn score(
        &self,
        task: &dyn Episodes,
        model: &Model,
        between: Between<'_>,
        seed: u64,
        from: usize,
        telemetry: bool,
    ) -> Result<Scores, TaskError> {
        let mut scores = Scores::default();
        let dev = Device::Cpu;
        let probing = task.side_probe();
        for (i, (data, b)) in self.batches.iter().enumerate() {
            let sessions = tensors(data, *b, &dev)?;
            let n = if probing { data.len() / 2 } else { data.len() };
            let (stream, probes) = sessions.split_at(n);
            let mut tracker = StreamTracker::default();
            let mut failed: Option<retbench_core::Error> = None;
            let mut observe = |session: usize, memories: &[retbench_core::MemoryState]| {
                if telemetry && let Some(m) = memories.first() {
                    let t = Telemetry::mean(m);
                    scores.telemetry.entry(session).or_default().push(t);
                }
                let Some(p) = probes.get(session) else { return };
                match retbench_model::eval::probe(model, p, memories) {
                    Ok(o) => scores.add(task, &data[n + session], &o, Some(session as u8)),
                    Err(e) => failed = failed.take().or(Some(e)),
                }
                if let Some(m) = memories.first() {
                    tracker.observe(session, m, &data[session], &mut scores);
                }
            };
            let outs = run_episodes_observed(
                model,
                stream,
                seed.wrapping_add(i as u64),
                between,
                &mut observe,
            )?;
            if let Some(e) = failed {
                return Err(e.into());
            }
            if !probing {
                for (d, o) in data.iter().zip(&outs).skip(from) {
                    scores.add(task, d, o, None);
                }
            }
        }
        Ok(scores)
    }
}

/// What a side-probed stream compares each session's memory with: the
/// contents after the first session, and the gate's counters so far.
#[derive(Default)]
struct StreamTracker {
    /// Per memory of the batch, the occupied rows after session 0 (slot,
    /// contents).
    first: Vec<Vec<(usize, Vec<f32>)>>,
    gate: Vec<(u64, u64)>,
}

impl StreamTracker {
    fn observe(
        &mut self,
        session: usize,
        mem: &retbench_core::MemoryState,
        data: &SessionData,
        scores: &mut Scores,
    ) {
        let Ok(content) = mem
            .content()
            .to_dtype(DType::F32)
            .and_then(|c| c.to_vec3::<f32>())
        else {
            return;
        };
        let m = mem.slots();
        if session == 0 {
            self.first = content
                .iter()
                .enumerate()
                .map(|(b, rows)| {
                    (0..m)
                        .filter(|&i| mem.meta().occupied[b * m + i])
                        .map(|i| (i, rows[i].clone()))
                        .collect()
                })
                .collect();
        }
        // ‖M_t − M_0‖ / ‖M_0‖ per memory, over the slots occupied at first.
        let e = scores.drift.entry(session).or_default();
        for (rows, first) in content.iter().zip(&self.first) {
            let (mut diff, mut norm) = (0f64, 0f64);
            for (i, m0) in first {
                for (x, y) in rows[*i].iter().zip(m0) {
                    diff += ((x - y) as f64).powi(2);
                    norm += (*y as f64).powi(2);
                }
            }
            if norm > 0.0 {
                e.0 += (diff / norm).sqrt();
                e.1 += 1;
            }
        }
        // The gate's verdicts in this session against its relevance.
        let counts = mem.gate_counts();
        self.gate.resize(counts.len(), (0, 0));
        if let Some(rel) = &data.relevance {
            for ((now, before), r) in counts.iter().zip(&self.gate).zip(rel) {
                let (seen, passed) = ((now.0 - before.0) as f64, (now.1 - before.1) as f64);
                let r = *r as f64;
                scores.gate[0] += passed * r;
                scores.gate[1] += passed;
                scores.gate[2] += seen * r;
                scores.gate[3] += seen;
            }
        }
        self.gate = counts.to_vec();
    }
}

/// A folder for disk-persistence snapshots, removed when dropped.
struct Scratch(PathBuf);

impl Scratch {
    fn new(ctx: &TaskContext) -> Result<Self, TaskError> {
        let dir = match &ctx.artifacts {
            Some(a) => a.join("memory"),
            None => std::env::temp_dir().join(format!(
                "retbench-{}-{}-{}",
                ctx.config_hash,
                ctx.seed,
                std::process::id()
            )),
        };
        std::fs::create_dir_all(&dir)
            .map_err(|e| TaskError::Invalid(format!("{}: {e}", dir.display())))?;
        Ok(Scratch(dir))
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn count(varmap: &VarMap) -> usize {
    varmap.all_vars().iter().map(|v| v.elem_count()).sum()
}

/// Trains and evaluates one run of a learned task.
pub fn run(
    kind: &str,
    task: &dyn Episodes,
    spec: &RunSpec<'_>,
    ctx: &TaskContext,
) -> Result<Vec<Metric>, TaskError> {
    validate(task, spec)?;
    let invalid = TaskError::Invalid;
    let model_cfg = fitted_model(task, spec.model.expect("validated")).map_err(invalid)?;
    let train = spec.train.expect("validated");
    let eval = spec.eval.cloned().unwrap_or_default();
    let dev = Device::Cpu;
    let map = SeededVarMap::new(VarMap::new(), ctx.config_hash.clone(), ctx.seed);
    let vb = || map.var_builder(DType::F32, &dev);
    let mut train_rng = stream(&ctx.config_hash, ctx.seed, "train");
    let episode_tokens: usize = task.lengths().iter().sum::<usize>() * train.batch;
    // (seconds, steps) of training so far; reset after a base is trained.
    let clock = std::cell::Cell::new((0.0f64, 0usize));

    let step_on = |model: &Model,
                   trainer: &mut Trainer,
                   rng: &mut ChaCha8Rng,
                   step: usize|
     -> Result<f64, TaskError> {
        let data = layout(task, task.generate(rng, train.batch), train.batch);
        let sessions = tensors(&data, train.batch, &dev)?;
        let start = Instant::now();
        let loss = trainer
            .step(model, &sessions, step as u64)
            .map_err(|e| invalid(e.to_string()))?;
        let (t, n) = clock.get();
        clock.set((t + start.elapsed().as_secs_f64(), n + 1));
        Ok(loss)
    };

    let evals = EvalSet::new(kind, task, &eval, ctx.seed);
    let persistence = spec
        .retention
        .map(|r| r.persistence)
        .unwrap_or(Persistence::Process);
    let scratch = Scratch::new(ctx)?;
    let between = Between::Persist(persistence, &scratch.0);
    let mut out = Vec::new();
    let in_session = |s: &Scores| {
        let l = task.in_session_label()?;
        s.accuracy().find(|(x, _)| *x == l).map(|(_, a)| a)
    };

    // A base first, without retention (a stand-in for a pretrained model),
    // trained here or loaded; then frozen, or fine-tuned with retention.
    if train.pretrains_base() {
        let base = if let Some(path) = &train.base_init {
            let base = Model::new(&model_cfg, None, vb())?;
            checkpoint::load_into(map.varmap(), path, "base.")
                .map_err(|e| invalid(format!("train.base_init: {e}")))?;
            base
        } else {
            let steps = train.base_steps.unwrap_or(train.steps);
            let base_cfg = TrainConfig {
                steps,
                frozen_base: false,
                base_steps: None,
                ..train.clone()
            };
            // The base's draws (initialisation, data) come from a key of what
            // the base depends on, not of the whole run: a frozen and a
            // fine-tuned run of one suite start from the same base.
            let key = base_key(kind, task, &model_cfg, &base_cfg);
            let base_map = SeededVarMap::new(VarMap::new(), key.clone(), ctx.seed);
            let base = Model::new(&model_cfg, None, base_map.var_builder(DType::F32, &dev))?;
            let mut trainer =
                Trainer::new(&base_cfg, base_map.varmap()).map_err(|e| invalid(e.to_string()))?;
            let mut rng = stream(&key, ctx.seed, "train/base");
            for step in 0..steps {
                step_on(&base, &mut trainer, &mut rng, step)?;
            }
            out.push(Metric::new("base_seconds", clock.replace((0.0, 0)).0));
            let trained = base_map.varmap().data().lock().expect("varmap lock");
            for (name, var) in trained.iter() {
                map.set(name, &var.as_tensor().copy()?)?;
            }
            base
        };
        if task.in_session_label().is_some() {
            let s = evals.score(task, &base, between, ctx.seed, 0, false)?;
            out.extend(in_session(&s).map(|a| Metric::new("in_session_before", a)));
        }
    }

    let model = Model::new(&model_cfg, spec.retention, vb())?;
    let mut trainer = Trainer::new(train, map.varmap()).map_err(|e| invalid(e.to_string()))?;
    // (step, accuracy of the binding slice) at every evaluation.
    let mut bind_curve: Vec<(usize, f64)> = Vec::new();
    let bind_of = |s: &Scores| match task.bind_label() {
        Some(l) => s.accuracy().find(|(x, _)| *x == l).map(|(_, a)| a),
        None => s.accuracy().last().map(|(_, a)| a),
    };
    let (mut interval_loss, mut interval_n) = (0.0f64, 0usize);
    for step in 0..train.steps {
        interval_loss += step_on(&model, &mut trainer, &mut train_rng, step)?;
        interval_n += 1;
        let done = step + 1;
        if eval.every.is_some_and(|e| done % e == 0) && done < train.steps {
            let s = evals.score(task, &model, between, ctx.seed, 0, false)?;
            bind_curve.extend(bind_of(&s).map(|a| (done, a)));
            let at = Some(done as u64);
            for m in s.accuracy_metrics(task, "accuracy") {
                out.push(Metric { step: at, ..m });
            }
            out.push(Metric {
                step: at,
                ..Metric::new("eval_loss", s.loss())
            });
            out.push(Metric {
                step: at,
                ..Metric::new("train_loss", interval_loss / interval_n as f64)
            });
            (interval_loss, interval_n) = (0.0, 0);
        }
    }
    let last_interval = interval_loss / interval_n.max(1) as f64;

    let scores = evals.score(task, &model, between, ctx.seed, 0, task.telemetry())?;
    out.extend(scores.telemetry_metrics(task.telemetry_key()));
    out.extend(scores.sequence_metrics(task));
    if task.side_probe() {
        out.extend(scores.stream_metrics(task));
    }
    if task.relevance() {
        out.extend(scores.gate_metrics());
    }
    out.extend(in_session(&scores).map(|a| Metric::new("in_session_after", a)));
    bind_curve.extend(bind_of(&scores).map(|a| (train.steps, a)));
    // Binding: the binding slice ([`Episodes::bind_label`]) crossing 0.9.
    out.push(Metric::new(
        "time_to_bind",
        time_to_bind(&bind_curve) as f64,
    ));
    let at_end = Some(train.steps as u64);
    for m in scores.accuracy_metrics(task, "accuracy") {
        if eval.every.is_some() {
            out.push(Metric {
                step: at_end,
                ..m.clone()
            });
        }
        out.push(m);
    }
    if eval.every.is_some() {
        out.push(Metric {
            step: at_end,
            ..Metric::new("eval_loss", scores.loss())
        });
        out.push(Metric {
            step: at_end,
            ..Metric::new("train_loss", last_interval)
        });
    }
    out.push(Metric::new("final_loss", scores.loss()));
    // The controls: memory changed (cleared) before a session, so what the
    // model still gets right from there on cannot come from memory.
    if model.has_retention() {
        for c in task.controls() {
            let s = evals.score(
                task,
                &model,
                Between::ClearBefore(c.clear_before),
                ctx.seed,
                c.clear_before,
                false,
            )?;
            out.extend(s.accuracy_metrics(task, c.metric));
        }
    }
    out.push(Metric::new(
        "train_tokens_per_s",
        (episode_tokens * clock.get().1) as f64 / clock.get().0.max(1e-9),
    ));
    out.push(Metric::new("train_seconds", clock.get().0));
    out.push(Metric::new(
        "trainable_params",
        trainer.trainable_params() as f64,
    ));
    out.push(Metric::new("total_params", count(map.varmap()) as f64));
    if let Some(dir) = &ctx.artifacts {
        save_checkpoint(map.varmap(), dir, &ctx.config_hash)?;
    }
    Ok(out)
}

fn save_checkpoint(varmap: &VarMap, dir: &Path, hash: &str) -> Result<(), TaskError> {
    checkpoint::save(varmap, &dir.join("model.safetensors"), hash)
        .map_err(|e| TaskError::Invalid(e.to_string()))
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
