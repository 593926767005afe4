//! Multi-session training: an episode is S sessions of the same batch of
//! independent samples; the context is cleared between sessions and memory
//! carries over. The loss is masked cross-entropy over target positions,
//! summed over sessions and divided by their count; gradients flow back
//! through every memory write of the episode (or stop at session boundaries
//! with `detach_between_sessions`). AdamW with linear warm-up then cosine
//! decay, and global gradient-norm clipping. A non-finite loss stops
//! training with an error.

use candle_core::backprop::GradStore;
use candle_core::{CpuStorage, DType, InplaceOp1, Layout, Tensor, Var};
use candle_nn::{AdamW, Optimizer, ParamsAdamW, VarMap};
use serde::{Deserialize, Serialize};

use retbench_kernels::{Kernels, with_f32};

use crate::model::Model;
use retbench_core::MemoryState;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrainConfig {
    pub steps: usize,
    #[serde(default = "batch_default")]
    pub batch: usize,
    pub lr: f64,
    /// Linear warm-up steps (default: 5% of `steps`).
    #[serde(default)]
    pub warmup: Option<usize>,
    #[serde(default = "weight_decay_default")]
    pub weight_decay: f64,
    /// Global gradient-norm bound.
    #[serde(default = "clip_default")]
    pub clip: f64,
    /// Cut the graph between sessions (truncated backpropagation).
    #[serde(default)]
    pub detach_between_sessions: bool,
    /// Train only the retention parameters (the base is frozen).
    #[serde(default)]
    pub frozen_base: bool,
    /// Steps that first train the base alone, without retention (a
    /// stand-in for a pretrained model), before `steps` train it with
    /// retention: frozen with `frozen_base`, fine-tuned in full without.
    /// With `frozen_base` and no `base_init`, `steps` when left out.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub base_steps: Option<usize>,
    /// A checkpoint whose `base.*` weights are loaded instead of training
    /// the base (e.g. a `no_memory` run's model.safetensors), then frozen
    /// or fine-tuned as with `base_steps`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub base_init: Option<std::path::PathBuf>,
    /// The width `lr` is meant for: a model of width d trains its weight
    /// matrices (every 2-D parameter but the embedding tables) at
    /// lr·lr_width/d, and its embeddings, biases and norm gains at lr:
    /// μP's rule for Adam, under which one lr serves every width. Default
    /// 64 (the width the recall suite's lr was chosen at; nothing changes
    /// at width 64); `null`: one lr for every parameter at every width
    /// (the form before, and what the paper's optimiser would do).
    #[serde(default = "lr_width_default")]
    pub lr_width: Option<usize>,
    /// Stop before `steps` once the run has bound (`steps` is then the
    /// most a run may take).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stop: Option<StopConfig>,
}

/// Stopping on success: a suite can give a generous `train.steps` without
/// every run paying for it. The rule is checked at evaluations only
/// (`eval.every`), so a run stops on an evaluation step.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StopConfig {
    /// What must hold: `bound`, the task's binding slice above the binding
    /// threshold (the criterion of `time_to_bind`).
    pub when: StopWhen,
    /// How many evaluations in a row it must hold (default 2: one lucky
    /// evaluation does not end a run).
    #[serde(default = "patience_default")]
    pub patience: usize,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StopWhen {
    Bound,
}

fn patience_default() -> usize {
    2
}

impl StopConfig {
    /// Whether a run whose binding rule has held at the last `held`
    /// evaluations stops now.
    pub fn stops(&self, held: usize) -> bool {
        match self.when {
            StopWhen::Bound => held >= self.patience,
        }
    }
}

impl TrainConfig {
    /// `steps` of batch `batch` at peak learning rate `lr`, other fields at
    /// their defaults.
    pub fn new(steps: usize, batch: usize, lr: f64) -> Self {
        TrainConfig {
            steps,
            batch,
            lr,
            warmup: None,
            weight_decay: weight_decay_default(),
            clip: clip_default(),
            detach_between_sessions: false,
            frozen_base: false,
            base_steps: None,
            base_init: None,
            lr_width: lr_width_default(),
            stop: None,
        }
    }

    /// Whether a base is trained (or loaded) without retention before the
    /// main `steps`.
    pub fn pretrains_base(&self) -> bool {
        self.frozen_base || self.base_steps.is_some() || self.base_init.is_some()
    }

    /// Checks values serde cannot. Errors start with the dotted path.
    pub fn validate(&self) -> Result<(), String> {
        if self.steps == 0 {
            return Err("train.steps: must be at least 1".into());
        }
        if self.batch == 0 {
            return Err("train.batch: must be at least 1".into());
        }
        if !(self.lr.is_finite() && self.lr > 0.0) {
            return Err(format!("train.lr: must be positive, got {}", self.lr));
        }
        if !(self.clip.is_finite() && self.clip > 0.0) {
            return Err(format!("train.clip: must be positive, got {}", self.clip));
        }
        if !(self.weight_decay.is_finite() && self.weight_decay >= 0.0) {
            return Err(format!(
                "train.weight_decay: must be at least 0, got {}",
                self.weight_decay
            ));
        }
        if self.base_steps.is_some() && self.base_init.is_some() {
            return Err(
                "train.base_steps, train.base_init: give one (train the base first, or load it), not both"
                    .into(),
            );
        }
        if self.base_steps == Some(0) {
            return Err("train.base_steps: must be at least 1".into());
        }
        if self.lr_width == Some(0) {
            return Err("train.lr_width: must be at least 1".into());
        }
        if self.stop.as_ref().is_some_and(|s| s.patience == 0) {
            return Err("train.stop.patience: must be at least 1".into());
        }
        Ok(())
    }
}

fn batch_default() -> usize {
    32
}
fn weight_decay_default() -> f64 {
    0.01
}
fn lr_width_default() -> Option<usize> {
    Some(64)
}
fn clip_default() -> f64 {
    1.0
}

/// One session of a batch: tokens and targets [B, T] (u32), a 0/1 loss
/// mask [B, T] (f32) marking the positions that count, and the task's
/// per-sample feedback signal in [0, 1] for feedback gates, if it has one.
#[derive(Debug, Clone)]
pub struct Session {
    pub tokens: Tensor,
    pub targets: Tensor,
    pub mask: Tensor,
    pub feedback: Option<Vec<f32>>,
}

#[derive(Debug, thiserror::Error)]
pub enum TrainError {
    #[error(transparent)]
    Core(#[from] retbench_core::Error),
    #[error(transparent)]
    Candle(#[from] candle_core::Error),
    #[error("loss is {loss} at step {step}: training diverged (lower lr, or check the data)")]
    NonFinite { step: usize, loss: f64 },
    #[error("{0}")]
    Usage(String),
}

/// Masked mean cross-entropy of `logits` [B, T, V] against `targets` [B, T].
pub fn masked_cross_entropy(
    logits: &Tensor,
    targets: &Tensor,
    mask: &Tensor,
) -> candle_core::Result<Tensor> {
    retbench_kernels::fused::masked_cross_entropy(logits, targets, mask)
}

/// The parameters training updates: everything, or only retention's.
pub fn trainable_vars(varmap: &VarMap, frozen_base: bool) -> Vec<Var> {
    trainable_named(varmap, frozen_base)
        .into_iter()
        .map(|(_, v)| v)
        .collect()
}

/// [`trainable_vars`] with their names, in name order (a stable order for
/// the optimiser).
fn trainable_named(varmap: &VarMap, frozen_base: bool) -> Vec<(String, Var)> {
    let data = varmap.data().lock().expect("varmap lock");
    let mut named: Vec<(String, Var)> = data
        .iter()
        .filter(|(name, _)| !frozen_base || name.starts_with("retention."))
        .map(|(n, v)| (n.clone(), v.clone()))
        .collect();
    named.sort_by(|a, b| a.0.cmp(&b.0));
    named
}

/// The embedding tables: trained at the base `lr` under `lr_width`, as μP
/// trains input weights (their fan-in is the vocabulary, not the width).
const EMBEDDINGS: [&str; 2] = ["base.tok.weight", "base.pos.weight"];

/// The multiple of `lr` a parameter trains at (`train.lr_width`).
fn lr_mult(cfg: &TrainConfig, d_model: usize, name: &str, var: &Var) -> f64 {
    match cfg.lr_width {
        Some(w) if var.rank() == 2 && !EMBEDDINGS.contains(&name) => w as f64 / d_model as f64,
        _ => 1.0,
    }
}

/// AdamW as candle's, in one pass per parameter over its data, moments and
/// gradient (with the clipping scale folded in): no tensor temporaries. The
/// fused kernels' optimiser; candle's `AdamW` is the unfused one.
struct FusedAdamW {
    vars: Vec<Var>,
    /// Per parameter, the multiple of `params.lr` it trains at.
    mults: Vec<f64>,
    moments: Vec<(Vec<f32>, Vec<f32>)>,
    params: ParamsAdamW,
    step_t: i32,
}

/// θ ← θ(1 − lr·λ) − lr·m̂/(√v̂ + ε) in place, with m and v updated alongside.
struct AdamUpdate<'a> {
    grad: &'a [f32],
    moments: std::sync::Mutex<(&'a mut [f32], &'a mut [f32])>,
    /// Gradient scale (clipping), β1, β2, m̂ and v̂ bias corrections, lr, lr·λ, ε.
    k: [f32; 8],
}

impl InplaceOp1 for AdamUpdate<'_> {
    fn name(&self) -> &'static str {
        "retbench-adamw"
    }

    fn cpu_fwd(&self, storage: &mut CpuStorage, layout: &Layout) -> candle_core::Result<()> {
        let (CpuStorage::F32(theta), Some((a, b))) = (storage, layout.contiguous_offsets()) else {
            candle_core::bail!("retbench-adamw: needs a contiguous f32 parameter");
        };
        let [scale, b1, b2, sm, sv, lr, decay, eps] = self.k;
        let mut guard = self.moments.lock().expect("moments lock");
        let (m, v) = &mut *guard;
        let theta = &mut theta[a..b];
        if theta.len() != self.grad.len() || m.len() != theta.len() {
            candle_core::bail!("retbench-adamw: gradient and parameter sizes differ");
        }
        for i in 0..theta.len() {
            let g = self.grad[i] * scale;
            m[i] = m[i] * b1 + g * (1.0 - b1);
            v[i] = v[i] * b2 + g * g * (1.0 - b2);
            let step = (m[i] * sm) / ((v[i] * sv).sqrt() + eps);
            theta[i] = theta[i] * (1.0 - decay) - step * lr;
        }
        Ok(())
    }
}

impl FusedAdamW {
    fn new(vars: Vec<Var>, mults: Vec<f64>, params: ParamsAdamW) -> Self {
        let moments = vars
            .iter()
            .map(|v| (vec![0f32; v.elem_count()], vec![0f32; v.elem_count()]))
            .collect();
        FusedAdamW {
            vars,
            mults,
            moments,
            params,
            step_t: 0,
        }
    }

    /// The gradients' global L2 norm.
    fn grad_norm(&self, grads: &GradStore) -> candle_core::Result<f64> {
        let mut sq = 0f64;
        for v in &self.vars {
            if let Some(g) = grads.get(v.as_tensor()) {
                sq += with_f32(g, "retbench-adamw", |g| {
                    Ok(g.iter().map(|x| x * x).sum::<f32>() as f64)
                })?;
            }
        }
        Ok(sq.sqrt())
    }

    fn step(&mut self, grads: &GradStore, scale: f64) -> candle_core::Result<()> {
        self.step_t += 1;
        let p = &self.params;
        for ((var, (m, v)), mult) in self.vars.iter().zip(&mut self.moments).zip(&self.mults) {
            let Some(g) = grads.get(var.as_tensor()) else {
                continue;
            };
            let lr = p.lr * mult;
            let k = [
                scale,
                p.beta1,
                p.beta2,
                1.0 / (1.0 - p.beta1.powi(self.step_t)),
                1.0 / (1.0 - p.beta2.powi(self.step_t)),
                lr,
                lr * p.weight_decay,
                p.eps,
            ]
            .map(|x| x as f32);
            with_f32(g, "retbench-adamw", |grad| {
                var.as_tensor().inplace_op1(&AdamUpdate {
                    grad,
                    moments: std::sync::Mutex::new((m, v)),
                    k,
                })
            })?;
        }
        Ok(())
    }
}

/// Candle's `AdamW`, one per distinct learning-rate multiple.
fn candle_groups(
    vars: &[Var],
    mults: &[f64],
    params: ParamsAdamW,
) -> candle_core::Result<Vec<(AdamW, f64)>> {
    let mut distinct: Vec<f64> = mults.to_vec();
    distinct.sort_by(f64::total_cmp);
    distinct.dedup();
    distinct
        .into_iter()
        .map(|mult| {
            let group = vars
                .iter()
                .zip(mults)
                .filter(|(_, m)| **m == mult)
                .map(|(v, _)| v.clone())
                .collect();
            Ok((AdamW::new(group, params.clone())?, mult))
        })
        .collect()
}

/// The optimiser of the selected kernels; candle's as one `AdamW` per
/// learning-rate multiple (`train.lr_width`).
enum Optim {
    Candle(Vec<(AdamW, f64)>),
    Fused(FusedAdamW),
}

pub struct Trainer {
    cfg: TrainConfig,
    opt: Optim,
    vars: Vec<Var>,
    step: usize,
}

impl Trainer {
    /// A trainer of `varmap`'s trainable parameters, for a model of width
    /// `d_model` (the learning rates of `train.lr_width`).
    pub fn new(cfg: &TrainConfig, varmap: &VarMap, d_model: usize) -> Result<Self, TrainError> {
        let named = trainable_named(varmap, cfg.frozen_base);
        if named.is_empty() {
            return Err(TrainError::Usage(
                "no trainable parameters (frozen base without retention?)".into(),
            ));
        }
        let mults: Vec<f64> = named
            .iter()
            .map(|(n, v)| lr_mult(cfg, d_model, n, v))
            .collect();
        let vars: Vec<Var> = named.into_iter().map(|(_, v)| v).collect();
        let params = ParamsAdamW {
            lr: cfg.lr,
            weight_decay: cfg.weight_decay,
            ..Default::default()
        };
        let fusable = vars
            .iter()
            .all(|v| v.device().is_cpu() && v.dtype() == DType::F32 && v.is_contiguous());
        let opt = if fusable && retbench_kernels::kernels() == Kernels::Fused {
            Optim::Fused(FusedAdamW::new(vars.clone(), mults, params))
        } else {
            Optim::Candle(candle_groups(&vars, &mults, params)?)
        };
        Ok(Trainer {
            cfg: cfg.clone(),
            opt,
            vars,
            step: 0,
        })
    }

    pub fn trainable_params(&self) -> usize {
        self.vars.iter().map(|v| v.elem_count()).sum()
    }

    /// Learning rate at `step`: linear warm-up, then cosine decay to 10%.
    pub fn lr_at(&self, step: usize) -> f64 {
        let warmup = self.cfg.warmup.unwrap_or(self.cfg.steps / 20).max(1);
        if step < warmup {
            return self.cfg.lr * (step + 1) as f64 / warmup as f64;
        }
        let span = (self.cfg.steps.saturating_sub(warmup)).max(1) as f64;
        let progress = ((step - warmup) as f64 / span).min(1.0);
        self.cfg.lr * (0.1 + 0.9 * 0.5 * (1.0 + (std::f64::consts::PI * progress).cos()))
    }

    /// One optimisation step on one episode; returns the loss.
    pub fn step(
        &mut self,
        model: &Model,
        episode: &[Session],
        seed: u64,
    ) -> Result<f64, TrainError> {
        let batch = episode
            .first()
            .ok_or_else(|| TrainError::Usage("an episode needs at least one session".into()))?
            .tokens
            .dim(0)?;
        let dev = episode[0].tokens.device().clone();
        let memories = model.new_memories(batch, seed, DType::F32, &dev)?;
        self.step_from(model, episode, memories)
    }

    /// One optimisation step on one episode that starts from `memories`
    /// (what earlier episodes left, held as constants: gradients reach only
    /// what this episode writes); returns the loss.
    pub fn step_from(
        &mut self,
        model: &Model,
        episode: &[Session],
        mut memories: Vec<MemoryState>,
    ) -> Result<f64, TrainError> {
        memories.iter_mut().for_each(|m| m.track());
        let mut total: Option<Tensor> = None;
        for session in episode {
            let fwd = model.forward(&session.tokens, &mut memories)?;
            let loss = masked_cross_entropy(&fwd.logits, &session.targets, &session.mask)?;
            total = Some(match total {
                Some(t) => (t + loss)?,
                None => loss,
            });
            model.write(&fwd, &mut memories, session.feedback.as_deref())?;
            if self.cfg.detach_between_sessions {
                for m in &mut memories {
                    m.detach()?;
                    m.track();
                }
            }
        }
        let loss = (total.expect("one session at least") / episode.len() as f64)?;
        let value = loss.to_scalar::<f32>()? as f64;
        if !value.is_finite() {
            return Err(TrainError::NonFinite {
                step: self.step,
                loss: value,
            });
        }
        let mut grads = loss.backward()?;
        let lr = self.lr_at(self.step);
        match &mut self.opt {
            Optim::Fused(opt) => {
                let norm = opt.grad_norm(&grads)?;
                opt.params.lr = lr;
                let scale = if norm > self.cfg.clip {
                    self.cfg.clip / norm
                } else {
                    1.0
                };
                opt.step(&grads, scale)?;
            }
            Optim::Candle(groups) => {
                let mut sq = 0.0f64;
                for v in &self.vars {
                    if let Some(g) = grads.get(v.as_tensor()) {
                        sq += g.sqr()?.sum_all()?.to_scalar::<f32>()? as f64;
                    }
                }
                let norm = sq.sqrt();
                if norm > self.cfg.clip {
                    let scale = self.cfg.clip / norm;
                    for v in &self.vars {
                        if let Some(g) = grads.remove(v.as_tensor()) {
                            grads.insert(v.as_tensor(), (g * scale)?);
                        }
                    }
                }
                for (opt, mult) in groups {
                    opt.set_learning_rate(lr * *mult);
                    opt.step(&grads)?;
                }
            }
        }
        self.step += 1;
        Ok(value)
    }
}
