//! The feedback-gate seam: a [`Gate`] decides, per candidate write, whether
//! it happens, and gives it a score that `lowest_score` eviction ranks by.
//! The paper's gate is the feedback signal; `learned` and `surprise` are the
//! alternatives it implies.

use candle_core::{DType, Module, Tensor};
use candle_nn::Linear;

use crate::error::{Error, Result};

/// What a gate sees of one write call.
pub struct GateInput<'a> {
    /// Source vectors u [B, n, d].
    pub u: &'a Tensor,
    /// Content to write, u·W_u [B, n, d].
    pub v: Tensor,
    /// Stored keys [B, m, d_k·H] (cached, or recomputed on demand).
    pub stored_keys: &'a dyn Fn() -> Result<Tensor>,
    /// The key projection of content rows.
    pub key_of: &'a dyn Fn(&Tensor) -> Result<Tensor>,
    /// Occupancy of every slot, flat over (memory, slot).
    pub occupied: &'a [bool],
    /// The caller's per-sample signal in [0, 1], if any.
    pub feedback: Option<&'a [f32]>,
}

/// A gate's verdict: the content to write (a learned gate re-wires it for
/// its straight-through gradient), a score and a pass flag per candidate,
/// in (memory, candidate) order.
pub struct GateDecision {
    pub v: Tensor,
    pub scores: Vec<f32>,
    pub pass: Vec<bool>,
}

/// Decides which candidate writes happen.
pub trait Gate: Send + Sync + std::fmt::Debug {
    /// The name as written in YAML.
    fn name(&self) -> &'static str;
    fn decide(&self, input: GateInput<'_>) -> Result<GateDecision>;
    /// Whether a write needs the caller's feedback signal; a task that has
    /// none cannot run this gate.
    fn needs_feedback(&self) -> bool {
        false
    }
}

/// Every candidate is written, with score 1.
#[derive(Debug)]
pub struct Open;

impl Gate for Open {
    fn name(&self) -> &'static str {
        "none"
    }
    fn decide(&self, input: GateInput<'_>) -> Result<GateDecision> {
        let (b, n, _) = input.v.dims3()?;
        Ok(GateDecision {
            v: input.v,
            scores: vec![1.0; b * n],
            pass: vec![true; b * n],
        })
    }
}

/// The paper's gate: an external per-sample signal s ∈ [0, 1]; written when
/// s ≥ threshold.
#[derive(Debug)]
pub struct Feedback {
    pub threshold: f64,
}

impl Gate for Feedback {
    fn name(&self) -> &'static str {
        "feedback"
    }
    fn needs_feedback(&self) -> bool {
        true
    }
    fn decide(&self, input: GateInput<'_>) -> Result<GateDecision> {
        let (b, n, _) = input.v.dims3()?;
        let signal = input.feedback.ok_or_else(|| {
            Error::Usage("a feedback gate needs a feedback signal per sample".into())
        })?;
        if signal.len() != b || signal.iter().any(|s| !(0.0..=1.0).contains(s)) {
            return Err(Error::Usage(format!(
                "feedback must hold {b} values in [0, 1], got {signal:?}"
            )));
        }
        let scores: Vec<f32> = (0..b * n).map(|i| signal[i / n]).collect();
        let pass = scores.iter().map(|&s| s as f64 >= self.threshold).collect();
        Ok(GateDecision {
            v: input.v,
            scores,
            pass,
        })
    }
}

/// g = sigmoid(u·w + b), written when g ≥ 0.5, trained straight-through.
#[derive(Debug)]
pub struct Learned {
    pub linear: Linear,
}

impl Gate for Learned {
    fn name(&self) -> &'static str {
        "learned"
    }
    fn decide(&self, input: GateInput<'_>) -> Result<GateDecision> {
        let g = candle_nn::ops::sigmoid(&self.linear.forward(input.u)?)?; // [B, n, 1]
        let scores: Vec<f32> = g.flatten_all()?.to_dtype(DType::F32)?.to_vec1()?;
        let pass = scores.iter().map(|&s| s >= 0.5).collect();
        // Straight-through: the forward value stays v, the gradient of the
        // written content reaches the gate's parameters.
        let st = ((&g - g.detach())? + 1.0)?;
        Ok(GateDecision {
            v: input.v.broadcast_mul(&st)?,
            scores,
            pass,
        })
    }
}

/// Novelty 1 − max cosine(key of v, stored keys); written when ≥ threshold.
/// Candidates accepted earlier in the same call count as stored.
#[derive(Debug)]
pub struct Surprise {
    pub threshold: f64,
}

impl Gate for Surprise {
    fn name(&self) -> &'static str {
        "surprise"
    }
    fn decide(&self, input: GateInput<'_>) -> Result<GateDecision> {
        let cand = (input.key_of)(&input.v)?
            .to_dtype(DType::F32)?
            .to_vec3::<f32>()?;
        let stored = (input.stored_keys)()?
            .to_dtype(DType::F32)?
            .to_vec3::<f32>()?;
        let m = stored.first().map_or(0, Vec::len);
        let mut scores = Vec::new();
        let mut pass = Vec::new();
        for (bi, cands) in cand.iter().enumerate() {
            let mut accepted: Vec<&[f32]> = Vec::new();
            for c in cands {
                let best = (0..m)
                    .filter(|&i| input.occupied[bi * m + i])
                    .map(|i| stored[bi][i].as_slice())
                    .chain(accepted.iter().copied())
                    .map(|s| cosine(c, s))
                    .fold(f32::NEG_INFINITY, f32::max);
                let novelty = if best.is_finite() { 1.0 - best } else { 1.0 };
                let ok = novelty as f64 >= self.threshold;
                if ok {
                    accepted.push(c);
                }
                scores.push(novelty);
                pass.push(ok);
            }
        }
        Ok(GateDecision {
            v: input.v,
            scores,
            pass,
        })
    }
}

fn cosine(a: &[f32], b: &[f32]) -> f32 {
    let (mut ab, mut aa, mut bb) = (0f32, 0f32, 0f32);
    for (x, y) in a.iter().zip(b) {
        ab += x * y;
        aa += x * x;
        bb += y * y;
    }
    let denom = (aa * bb).sqrt();
    if denom > 0.0 { ab / denom } else { 0.0 }
}
