//! Evaluation of a trained model on multi-session episodes with detached
//! memory: the forward pass of each session, its write, and, between
//! sessions, what the run's persistence asks for — memory kept in RAM
//! (`process`), or written as a snapshot and loaded back (`disk`), so that
//! what a later session reads is exactly what came off disk. Scoring belongs
//! to the task; this module returns per-position predictions and losses.

use std::path::Path;

use candle_core::{D, DType, Tensor};
use retbench_core::{MemoryBank, MemoryState, Persistence, snapshot};
use serde::{Deserialize, Serialize};

use crate::model::Model;
use crate::train::Session;

/// The `eval:` block of a run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EvalConfig {
    /// Held-out episodes scored at the end (and at every `every` steps).
    #[serde(default = "episodes_default")]
    pub episodes: usize,
    /// Episodes per forward batch (memory use, not results).
    #[serde(default = "batch_default")]
    pub batch: usize,
    /// Also evaluate every this many training steps (a training curve).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub every: Option<usize>,
}

fn episodes_default() -> usize {
    512
}
fn batch_default() -> usize {
    128
}

impl Default for EvalConfig {
    fn default() -> Self {
        EvalConfig {
            episodes: episodes_default(),
            batch: batch_default(),
            every: None,
        }
    }
}

impl EvalConfig {
    pub fn validate(&self) -> Result<(), String> {
        if self.episodes == 0 {
            return Err("eval.episodes: must be at least 1".into());
        }
        if self.batch == 0 {
            return Err("eval.batch: must be at least 1".into());
        }
        if self.every == Some(0) {
            return Err("eval.every: must be at least 1 (or left out)".into());
        }
        Ok(())
    }
}

/// What happens to memory between the sessions of an evaluated episode.
#[derive(Debug, Clone, Copy)]
pub enum Between<'a> {
    /// As the retention config's persistence says; `disk` writes snapshots
    /// under the given folder.
    Persist(Persistence, &'a Path),
    /// Memory is cleared before session `n` (a control: whatever the model
    /// gets right after that cannot come from memory).
    ClearBefore(usize),
}

/// One evaluated session, row-major [B, T].
#[derive(Debug, Clone, PartialEq)]
pub struct SessionOutput {
    /// Argmax prediction at every position.
    pub predictions: Vec<u32>,
    /// Negative log-likelihood of the target at every position.
    pub nll: Vec<f32>,
}

/// Runs one batch of episodes (sessions in order, one memory per episode)
/// with detached memory; `seed` seeds the memories' own streams (random
/// eviction).
pub fn run_episodes(
    model: &Model,
    sessions: &[Session],
    seed: u64,
    between: Between<'_>,
) -> retbench_core::Result<Vec<SessionOutput>> {
    run_episodes_observed(model, sessions, seed, between, &mut |_, _| {})
}

/// [`run_episodes`], calling `observe(session, memories)` after each
/// session's write: how a task reads slot telemetry over an episode.
pub fn run_episodes_observed(
    model: &Model,
    sessions: &[Session],
    seed: u64,
    between: Between<'_>,
    observe: &mut dyn FnMut(usize, &[MemoryState]),
) -> retbench_core::Result<Vec<SessionOutput>> {
    let Some(first) = sessions.first() else {
        return Ok(Vec::new());
    };
    let batch = first.tokens.dim(0)?;
    let dev = first.tokens.device().clone();
    let mut memories = model.new_memories(batch, seed, DType::F32, &dev)?;
    let mut out = Vec::with_capacity(sessions.len());
    for (i, s) in sessions.iter().enumerate() {
        if i > 0 {
            match between {
                Between::Persist(Persistence::Process, _) => {}
                Between::Persist(Persistence::Disk, dir) => {
                    memories = through_disk(memories, &snapshot::session_path(dir, i - 1))?;
                }
                Between::ClearBefore(n) if n == i => {
                    memories.iter_mut().try_for_each(|m| m.clear())?;
                }
                Between::ClearBefore(_) => {}
            }
        }
        let fwd = model.forward(&s.tokens, &mut memories)?;
        out.push(output(&fwd.logits, &s.targets)?);
        model.write(&fwd, &mut memories, s.feedback.as_deref())?;
        memories.iter_mut().try_for_each(|m| m.detach())?;
        observe(i, &memories);
    }
    Ok(out)
}

/// Predictions and target NLL of one forward pass's logits [B, T, V].
fn output(logits: &Tensor, targets: &Tensor) -> retbench_core::Result<SessionOutput> {
    let logp = candle_nn::ops::log_softmax(logits, D::Minus1)?;
    let predictions = logits.argmax(D::Minus1)?.flatten_all()?.to_vec1()?;
    let nll = logp
        .gather(&targets.unsqueeze(D::Minus1)?, D::Minus1)?
        .neg()?
        .flatten_all()?
        .to_vec1()?;
    Ok(SessionOutput { predictions, nll })
}

/// Runs `probe` against copies of `memories` and discards what it would
/// write or record: a measurement of what memory holds now that leaves the
/// memory (contents, usage, clocks) exactly as it was.
pub fn probe(
    model: &Model,
    probe: &Session,
    memories: &[MemoryState],
) -> retbench_core::Result<SessionOutput> {
    let mut copies = memories
        .iter()
        .map(|m| m.deep_clone())
        .collect::<retbench_core::Result<Vec<_>>>()?;
    let fwd = model.forward(&probe.tokens, &mut copies)?;
    output(&fwd.logits, &probe.targets)
}

/// Saves the memories as one snapshot (a namespace per memory) and returns
/// what loading it back gives: the next session reads only what was on disk.
fn through_disk(
    memories: Vec<MemoryState>,
    path: &Path,
) -> retbench_core::Result<Vec<MemoryState>> {
    let Some((hash, device)) = memories
        .first()
        .map(|m| (m.config_hash().to_string(), m.device().clone()))
    else {
        return Ok(memories);
    };
    let names: Vec<String> = (0..memories.len()).map(|i| format!("memory{i}")).collect();
    let mut bank = MemoryBank::new();
    for (name, m) in names.iter().zip(memories) {
        bank.insert(name, m)?;
    }
    snapshot::save(&bank, path)?;
    drop(bank);
    let mut loaded = snapshot::load(path, &hash, &device)?;
    names
        .iter()
        .map(|n| {
            loaded.remove(n).ok_or_else(|| {
                retbench_core::Error::Usage(format!(
                    "{}: snapshot has no namespace {n}",
                    path.display()
                ))
            })
        })
        .collect()
}

/// The tensor form of a session's data (row-major [B, T] vectors).
pub fn session(
    tokens: Vec<u32>,
    targets: Vec<u32>,
    mask: Vec<f32>,
    batch: usize,
    len: usize,
    device: &candle_core::Device,
) -> candle_core::Result<Session> {
    Ok(Session {
        tokens: Tensor::from_vec(tokens, (batch, len), device)?,
        targets: Tensor::from_vec(targets, (batch, len), device)?,
        mask: Tensor::from_vec(mask, (batch, len), device)?,
        feedback: None,
    })
}
