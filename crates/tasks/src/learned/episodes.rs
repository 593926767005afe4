//! Laying episodes out for the model: one context per session or all in one
//! (`Context`), batches as tensors, the model a task needs (`fitted_model`),
//! the memory estimate and the run-config checks every learned task shares.

use super::*;

/// The longest context a task feeds the model, in training or evaluation.
pub(super) fn max_context(task: &dyn Episodes) -> usize {
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

pub(super) fn layout(
    task: &dyn Episodes,
    sessions: Vec<SessionData>,
    batch: usize,
) -> Vec<SessionData> {
    match task.context() {
        Context::Sessions => sessions,
        Context::Full => vec![concat(&sessions, batch)],
    }
}

pub(super) fn tensors(
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
    if train.stop.is_some() && spec.eval.is_none_or(|e| e.every.is_none()) {
        return Err(invalid(
            "train.stop: a run can only stop at an evaluation; set eval.every".into(),
        ));
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
