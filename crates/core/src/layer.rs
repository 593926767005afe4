//! The retention layer: parameters, the memory-attention read with its
//! residual integration X̃ = LN(X + Z + R), and the write path (source →
//! projection → gate → append-with-eviction or attention blend), following
//! the component map in DESIGN.md.
//!
//! Every operation on the tensor path is built from differentiable candle
//! primitives (candle's fused softmax and layer-norm kernels have no backward
//! pass), so gradients reach W_Q, W_K, W_V, W_O, W_u and the written content.
//! Discrete decisions — which slots a top-k read selects, which slot an append
//! evicts, whether a gate opens — are made on the host and enter the graph as
//! constant masks and indices.

use candle_core::{D, DType, Device, Module, Tensor};
use candle_nn::{Init, Linear, VarBuilder};
use rand::Rng;

use crate::config::{
    Evict, GateConfig, KeyMode, ReadConfig, RetentionConfig, SlotAge, WriteConfig, WriteSource,
};
use crate::error::{Error, Result};
use crate::kernels;
use crate::memory::MemoryState;
use crate::rng::stream_seed;

/// Layer normalisation from primitive ops, so that it has a backward pass.
#[derive(Debug, Clone)]
pub struct Norm {
    weight: Tensor,
    bias: Tensor,
    eps: f64,
}

impl Norm {
    pub fn new(dim: usize, vb: VarBuilder) -> Result<Self> {
        Ok(Norm {
            weight: vb.get_with_hints(dim, "weight", Init::Const(1.0))?,
            bias: vb.get_with_hints(dim, "bias", Init::Const(0.0))?,
            eps: 1e-5,
        })
    }

    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let mean = x.mean_keepdim(D::Minus1)?;
        let centred = x.broadcast_sub(&mean)?;
        let var = centred.sqr()?.mean_keepdim(D::Minus1)?;
        let normed = centred.broadcast_div(&(var + self.eps)?.sqrt()?)?;
        Ok(normed
            .broadcast_mul(&self.weight)?
            .broadcast_add(&self.bias)?)
    }
}

/// What a read returns: the readout R [B, T, d]; and over slots
/// [B, H, T, m]: the attention weights (zero on unselected and empty slots),
/// the scaled scores before masking, and the 0/1 selection mask.
#[derive(Debug, Clone)]
pub struct ReadOutput {
    pub r: Tensor,
    pub weights: Tensor,
    pub scores: Tensor,
    pub selected: Tensor,
}

/// What a write did, per call.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct WriteReport {
    /// Candidate vectors produced by the write source (B × n).
    pub candidates: usize,
    /// Candidates the gate let through and that changed memory.
    pub written: usize,
    /// Occupied slots overwritten by appends.
    pub evicted: usize,
    /// Gate score per candidate, in (memory, candidate) order.
    pub gate_scores: Vec<f32>,
}

/// A retention layer over memories of width d_model.
#[derive(Debug, Clone)]
pub struct RetentionLayer {
    cfg: RetentionConfig,
    hash: String,
    d_model: usize,
    heads: usize,
    head_dim: usize,
    ln_q: Norm,
    ln_out: Norm,
    w_q: Linear,
    w_k: Linear,
    w_v: Linear,
    w_o: Linear,
    w_u: Linear,
    pool_query: Option<Tensor>,
    gate: Option<Linear>,
    age_emb: Option<Tensor>,
}

impl RetentionLayer {
    /// Builds the layer; parameter names are scoped by `vb` (candle style).
    pub fn new(cfg: &RetentionConfig, d_model: usize, vb: VarBuilder) -> Result<Self> {
        cfg.validate()?;
        let heads = cfg.heads;
        let head_dim = cfg.head_dim(d_model)?;
        let inner = heads * head_dim;
        let pool_query = match cfg.write.source() {
            WriteSource::Learned {} => Some(vb.get_with_hints(
                d_model,
                "pool_query",
                Init::Randn {
                    mean: 0.0,
                    stdev: 1.0 / (d_model as f64).sqrt(),
                },
            )?),
            _ => None,
        };
        let gate = match cfg.gate {
            GateConfig::Learned {} => Some(candle_nn::linear(d_model, 1, vb.pp("gate"))?),
            _ => None,
        };
        let age_emb = match cfg.slot_age {
            SlotAge::Learned { buckets } => Some(vb.get_with_hints(
                (buckets, inner),
                "age_emb",
                Init::Randn {
                    mean: 0.0,
                    stdev: 0.02,
                },
            )?),
            SlotAge::None {} => None,
        };
        Ok(RetentionLayer {
            cfg: cfg.clone(),
            hash: cfg.hash(),
            d_model,
            heads,
            head_dim,
            ln_q: Norm::new(d_model, vb.pp("ln_q"))?,
            ln_out: Norm::new(d_model, vb.pp("ln_out"))?,
            w_q: candle_nn::linear_no_bias(d_model, inner, vb.pp("w_q"))?,
            w_k: candle_nn::linear_no_bias(d_model, inner, vb.pp("w_k"))?,
            w_v: candle_nn::linear_no_bias(d_model, inner, vb.pp("w_v"))?,
            w_o: candle_nn::linear_no_bias(inner, d_model, vb.pp("w_o"))?,
            w_u: candle_nn::linear_no_bias(d_model, d_model, vb.pp("w_u"))?,
            pool_query,
            gate,
            age_emb,
        })
    }

    pub fn config(&self) -> &RetentionConfig {
        &self.cfg
    }

    /// The config hash that snapshots of this layer's memory carry.
    pub fn config_hash(&self) -> &str {
        &self.hash
    }

    pub fn d_model(&self) -> usize {
        self.d_model
    }

    /// A fresh, empty memory for `batch` independent samples. `seed` seeds
    /// random eviction through the stream ("memory/evict").
    pub fn new_memory(
        &self,
        batch: usize,
        seed: u64,
        dtype: DType,
        device: &Device,
    ) -> Result<MemoryState> {
        let key_dim = match self.cfg.keys {
            KeyMode::Cached => self.heads * self.head_dim,
            KeyMode::Recompute => 0,
        };
        MemoryState::empty(
            batch,
            self.cfg.slots,
            self.d_model,
            key_dim,
            &self.hash,
            stream_seed(&self.hash, seed, "memory/evict"),
            dtype,
            device,
        )
    }

    /// A memory fits this layer when its shapes do: the read mode, rates and
    /// gates may differ from the config that wrote it (e.g. write with dense
    /// reads, evaluate with top-k). Snapshots check the full config hash.
    fn check_memory(&self, mem: &MemoryState, batch: usize) -> Result<()> {
        let key_dim = match self.cfg.keys {
            KeyMode::Cached => self.heads * self.head_dim,
            KeyMode::Recompute => 0,
        };
        if (mem.slots(), mem.dim(), mem.key_dim()) != (self.cfg.slots, self.d_model, key_dim) {
            return Err(Error::Usage(format!(
                "memory has {} slots of width {} (cached key width {}); this layer needs {} of width {} ({})",
                mem.slots(),
                mem.dim(),
                mem.key_dim(),
                self.cfg.slots,
                self.d_model,
                key_dim
            )));
        }
        if mem.batch() != batch {
            return Err(Error::Usage(format!(
                "hidden states have batch {batch}, memory has {}",
                mem.batch()
            )));
        }
        Ok(())
    }

    /// The block output X̃ = LN(X + Z + R), with Z the self-attention output.
    pub fn forward(&self, x: &Tensor, z: &Tensor, mem: &mut MemoryState) -> Result<Tensor> {
        let h = (x + z)?;
        let read = self.read(&h, mem)?;
        self.ln_out.forward(&(h + read.r)?)
    }

    /// Slot keys [B, m, H·d_k]: recomputed from contents or cached, plus the
    /// age embedding when slot age is learned.
    fn slot_keys(&self, mem: &MemoryState) -> Result<Tensor> {
        let base = match (&self.cfg.keys, mem.keys()) {
            (KeyMode::Cached, Some(k)) => k.clone(),
            (KeyMode::Cached, None) => {
                return Err(Error::Usage(
                    "cached keys requested but memory holds none".into(),
                ));
            }
            (KeyMode::Recompute, _) => self.w_k.forward(mem.content())?,
        };
        match self.age_keys(mem)? {
            Some(ages) => Ok((base + ages)?),
            None => Ok(base),
        }
    }

    /// The learned age embedding of every slot [B, m, H·d_k], if enabled.
    fn age_keys(&self, mem: &MemoryState) -> Result<Option<Tensor>> {
        let (Some(emb), SlotAge::Learned { buckets }) = (&self.age_emb, self.cfg.slot_age) else {
            return Ok(None);
        };
        let writes = mem.clocks.writes;
        let idx: Vec<u32> = mem
            .meta
            .written_at
            .iter()
            .map(|&w| age_bucket(writes.saturating_sub(w), buckets) as u32)
            .collect();
        let idx = Tensor::new(idx, mem.device())?;
        let shape = (mem.batch(), mem.slots(), self.heads * self.head_dim);
        Ok(Some(emb.index_select(&idx, 0)?.reshape(shape)?))
    }

    /// Memory-attention read for hidden states `h` [B, T, d]: queries
    /// LN(h)·W_Q, keys and values from the slots. Updates read telemetry.
    pub fn read(&self, h: &Tensor, mem: &mut MemoryState) -> Result<ReadOutput> {
        let (b, t, d) = h.dims3()?;
        self.check_memory(mem, b)?;
        if d != self.d_model {
            return Err(Error::Usage(format!(
                "hidden width {d}, layer expects {}",
                self.d_model
            )));
        }
        let (nh, dk, m) = (self.heads, self.head_dim, mem.slots());
        let split = |x: Tensor, n: usize| -> Result<Tensor> {
            Ok(x.reshape((b, n, nh, dk))?.transpose(1, 2)?.contiguous()?)
        };
        let q = split(self.w_q.forward(&self.ln_q.forward(h)?)?, t)?;
        // With fewer queries than the head width, contracting the slot axis
        // first is cheaper: Q(M·W_K)ᵀ = (Q·W_K)Mᵀ and w(M·W_V) = (w·M)W_V cost
        // O(H·T·m·d) instead of O(m·d·H·d_k) to project every slot. Same
        // product; only the order of float additions differs.
        let few = t < dk;
        let content = mem.content();
        let scores = if few && self.cfg.keys == KeyMode::Recompute {
            let w_k = self.w_k.weight().reshape((nh, dk, d))?;
            let qk = per_head(&q, &w_k)?.reshape((b, nh * t, d))?;
            let s = kernels::rows_dot(&qk, content)?.reshape((b, nh, t, m))?;
            match self.age_keys(mem)? {
                Some(ages) => (s + q.matmul(&split(ages, m)?.t()?)?)?,
                None => s,
            }
        } else {
            q.matmul(&split(self.slot_keys(mem)?, m)?.t()?)?
        };
        let scores = (scores / (dk as f64).sqrt())?; // [B, H, T, m]
        let select = match self.cfg.read {
            ReadConfig::Dense {} => mem
                .occupancy_mask()?
                .reshape((b, 1, 1, m))?
                .broadcast_as((b, nh, t, m))?
                .contiguous()?,
            ReadConfig::Topk { k } => topk_mask(&scores, &mem.meta.occupied, k)?,
        };
        // Zero outside the selection, and an all-zero row when nothing is
        // selected, so that an empty memory contributes exactly zero.
        let weights = kernels::masked_softmax(&scores, &select)?;
        let out = if few {
            let w_v = self.w_v.weight().reshape((nh, dk, d))?.transpose(1, 2)?;
            let wm = kernels::rows_mix(&weights.reshape((b, nh * t, m))?, content)?;
            per_head(&wm.reshape((b, nh, t, d))?, &w_v)?
        } else {
            weights.matmul(&split(self.w_v.forward(content)?, m)?)?
        };
        let out = out.transpose(1, 2)?.reshape((b, t, nh * dk))?;
        let r = self.w_o.forward(&out)?;
        record_read(mem, &weights, self.cfg.read)?;
        Ok(ReadOutput {
            r,
            weights,
            scores,
            selected: select,
        })
    }

    /// The write vectors u [B, n, d] that the configured source derives from
    /// the layer's hidden states [B, T, d].
    pub fn write_source(&self, hidden: &Tensor) -> Result<Tensor> {
        let (_, t, d) = hidden.dims3()?;
        Ok(match self.cfg.write.source() {
            WriteSource::Mean {} => hidden.mean_keepdim(1)?,
            WriteSource::Last {} => hidden.narrow(1, t - 1, 1)?,
            WriteSource::Token {} => hidden.clone(),
            WriteSource::Chunk { size } => {
                let parts = (0..t)
                    .step_by(size)
                    .map(|s| hidden.narrow(1, s, size.min(t - s))?.mean_keepdim(1))
                    .collect::<candle_core::Result<Vec<_>>>()?;
                Tensor::cat(&parts, 1)?
            }
            WriteSource::Learned {} => {
                let query = self
                    .pool_query
                    .as_ref()
                    .expect("built with the learned source");
                let logits =
                    (hidden.broadcast_matmul(&query.reshape((d, 1))?)? / (d as f64).sqrt())?;
                let attn = candle_nn::ops::softmax(&logits, 1)?; // [B, T, 1]
                hidden.broadcast_mul(&attn)?.sum_keepdim(1)?
            }
        })
    }

    /// Writes into `mem` from the layer's hidden states [B, T, d].
    /// `feedback` is the per-sample signal in [0, 1] a feedback gate needs.
    pub fn write(
        &self,
        hidden: &Tensor,
        mem: &mut MemoryState,
        feedback: Option<&[f32]>,
    ) -> Result<WriteReport> {
        let u = self.write_source(hidden)?;
        let (b, n, _) = u.dims3()?;
        self.check_memory(mem, b)?;
        let v = self.w_u.forward(&u)?;
        let (v, scores, pass) = self.gate(&u, v, mem, feedback)?;
        mem.clocks.writes += 1;
        mem.clocks.events += 1;
        let mut report = WriteReport {
            candidates: b * n,
            gate_scores: scores.clone(),
            ..Default::default()
        };
        match self.cfg.write {
            WriteConfig::Append { evict, .. } => {
                self.append(&v, mem, &scores, &pass, evict, &mut report)?
            }
            WriteConfig::Attention { rate, erase, .. } => {
                self.blend(&u, &v, mem, &scores, &pass, rate, erase, &mut report)?
            }
        }
        Ok(report)
    }

    /// Gate decisions: returns the (possibly re-wired) write content, a score
    /// per candidate and whether each candidate is written.
    fn gate(
        &self,
        u: &Tensor,
        v: Tensor,
        mem: &MemoryState,
        feedback: Option<&[f32]>,
    ) -> Result<(Tensor, Vec<f32>, Vec<bool>)> {
        let (b, n, _) = v.dims3()?;
        match self.cfg.gate {
            GateConfig::None {} => Ok((v, vec![1.0; b * n], vec![true; b * n])),
            GateConfig::Feedback { threshold } => {
                let signal = feedback.ok_or_else(|| {
                    Error::Usage("a feedback gate needs a feedback signal per sample".into())
                })?;
                if signal.len() != b || signal.iter().any(|s| !(0.0..=1.0).contains(s)) {
                    return Err(Error::Usage(format!(
                        "feedback must hold {b} values in [0, 1], got {signal:?}"
                    )));
                }
                let scores: Vec<f32> = (0..b * n).map(|i| signal[i / n]).collect();
                let pass = scores.iter().map(|&s| s as f64 >= threshold).collect();
                Ok((v, scores, pass))
            }
            GateConfig::Learned {} => {
                let lin = self.gate.as_ref().expect("built with the learned gate");
                let g = candle_nn::ops::sigmoid(&lin.forward(u)?)?; // [B, n, 1]
                let scores: Vec<f32> = g.flatten_all()?.to_dtype(DType::F32)?.to_vec1()?;
                let pass = scores.iter().map(|&s| s >= 0.5).collect();
                // Straight-through: the forward value stays v, the gradient of
                // the written content reaches the gate's parameters.
                let st = ((&g - g.detach())? + 1.0)?;
                Ok((v.broadcast_mul(&st)?, scores, pass))
            }
            GateConfig::Surprise { threshold } => {
                let cand = self
                    .w_k
                    .forward(&v)?
                    .to_dtype(DType::F32)?
                    .to_vec3::<f32>()?;
                let stored = match (&self.cfg.keys, mem.keys()) {
                    (KeyMode::Cached, Some(k)) => k.clone(),
                    _ => self.w_k.forward(mem.content())?,
                }
                .to_dtype(DType::F32)?
                .to_vec3::<f32>()?;
                let m = mem.slots();
                let mut scores = Vec::with_capacity(b * n);
                let mut pass = Vec::with_capacity(b * n);
                for (bi, cands) in cand.iter().enumerate() {
                    // Candidates accepted earlier in this call count as stored.
                    let mut accepted: Vec<&[f32]> = Vec::new();
                    for c in cands {
                        let best = (0..m)
                            .filter(|&i| mem.meta.occupied[bi * m + i])
                            .map(|i| stored[bi][i].as_slice())
                            .chain(accepted.iter().copied())
                            .map(|s| cosine(c, s))
                            .fold(f32::NEG_INFINITY, f32::max);
                        let novelty = if best.is_finite() { 1.0 - best } else { 1.0 };
                        let ok = novelty as f64 >= threshold;
                        if ok {
                            accepted.push(c);
                        }
                        scores.push(novelty);
                        pass.push(ok);
                    }
                }
                Ok((v, scores, pass))
            }
        }
    }

    /// Option A: each passing candidate takes a free slot, or evicts one.
    fn append(
        &self,
        v: &Tensor,
        mem: &mut MemoryState,
        scores: &[f32],
        pass: &[bool],
        evict: Evict,
        report: &mut WriteReport,
    ) -> Result<()> {
        let (b, n, _) = v.dims3()?;
        let m = mem.slots();
        // Target flat slot -> source flat candidate; a later candidate that
        // lands on the same slot (more candidates than slots) wins.
        let mut targets: std::collections::BTreeMap<u32, u32> = Default::default();
        for bi in 0..b {
            for j in 0..n {
                let c = bi * n + j;
                if !pass[c] {
                    continue;
                }
                let slot = choose_slot(mem, bi, evict);
                let f = bi * m + slot;
                if mem.meta.occupied[f] {
                    mem.evictions[bi] += 1;
                    report.evicted += 1;
                }
                fill_slot(mem, f, scores[c]);
                targets.insert(f as u32, c as u32);
                report.written += 1;
            }
        }
        let (dst, src): (Vec<u32>, Vec<u32>) = targets.into_iter().unzip();
        self.put_rows(mem, v, &dst, src, 1.0)
    }

    /// Writes candidates `src` (flat indices into v [B, n, d]), scaled, into
    /// flat slots `dst`, with their cached keys when the memory keeps them.
    fn put_rows(
        &self,
        mem: &mut MemoryState,
        v: &Tensor,
        dst: &[u32],
        src: Vec<u32>,
        scale: f64,
    ) -> Result<()> {
        if dst.is_empty() {
            return Ok(());
        }
        let (b, n, d) = v.dims3()?;
        let src = Tensor::new(src, mem.device())?;
        let rows = (v.reshape((b * n, d))?.index_select(&src, 0)? * scale)?;
        mem.content = scatter_rows(&mem.content, dst, &rows, mem.tracked)?;
        if let Some(keys) = &mem.keys {
            let key_rows = self.w_k.forward(&rows)?;
            mem.keys = Some(scatter_rows(keys, dst, &key_rows, mem.tracked)?);
        }
        Ok(())
    }

    /// Option B: M' = M + rate·w ⊙ (v − M) (erase) or M + rate·w ⊙ v, with
    /// w = softmax over occupied slots of K·(u·W_Q); free slots are filled
    /// first. Candidates of one call are applied simultaneously, and each
    /// slot's total blend weight is capped at 1 so memory stays a convex mix.
    #[allow(clippy::too_many_arguments)]
    fn blend(
        &self,
        u: &Tensor,
        v: &Tensor,
        mem: &mut MemoryState,
        scores: &[f32],
        pass: &[bool],
        rate: f64,
        erase: bool,
        report: &mut WriteReport,
    ) -> Result<()> {
        if rate == 0.0 || !pass.iter().any(|&p| p) {
            return Ok(()); // a write of strength zero writes nothing
        }
        let (b, n, _) = v.dims3()?;
        let m = mem.slots();
        let occupied_before = mem.meta.occupied.clone();
        let occ_count: Vec<usize> = (0..b).map(|bi| mem.occupied(bi)).collect();
        // Host plan: which candidates fill a free slot, which address content.
        let mut fills: Vec<(u32, u32)> = Vec::new(); // (flat slot, flat candidate)
        let mut addressed = vec![0f32; b * n];
        for bi in 0..b {
            for j in 0..n {
                let c = bi * n + j;
                if !pass[c] {
                    continue;
                }
                report.written += 1;
                match mem.first_free(bi) {
                    Some(i) => {
                        fill_slot(mem, bi * m + i, scores[c]);
                        fills.push(((bi * m + i) as u32, c as u32));
                    }
                    None => addressed[c] = 1.0,
                }
            }
        }
        if addressed.iter().any(|&a| a > 0.0) {
            self.blend_content(
                u,
                v,
                mem,
                &occupied_before,
                &occ_count,
                addressed,
                rate,
                erase,
            )?;
        }
        // A fill has w one-hot on a free (zero) slot, so with or without erase
        // M' = rate·v there: a row scatter, O(d) per fill instead of O(m·d).
        let (dst, src): (Vec<u32>, Vec<u32>) = fills.into_iter().unzip();
        self.put_rows(mem, v, &dst, src, rate)
    }

    /// The content-addressed part of an attention write, over the slots that
    /// were occupied before the call. `addressed` [B·n] marks the candidates
    /// that take part.
    #[allow(clippy::too_many_arguments)]
    fn blend_content(
        &self,
        u: &Tensor,
        v: &Tensor,
        mem: &mut MemoryState,
        occupied_before: &[bool],
        occ_count: &[usize],
        addressed: Vec<f32>,
        rate: f64,
        erase: bool,
    ) -> Result<()> {
        let (b, n, _) = v.dims3()?;
        let m = mem.slots();
        let dev = mem.device().clone();
        let dtype = mem.dtype();
        let host = |data: Vec<f32>, shape: (usize, usize, usize)| -> Result<Tensor> {
            Ok(Tensor::from_vec(data, shape, &dev)?.to_dtype(dtype)?)
        };
        let addressed = host(addressed, (b, n, 1))?;
        let occ: Vec<f32> = occupied_before.iter().map(|&o| o as u8 as f32).collect();
        let occ = host(occ, (b, 1, m))?;
        let inner = (self.heads * self.head_dim) as f64;
        let q = self.w_q.forward(u)?; // [B, n, H·d_k]
        // As in reads: with few candidates, q(M·W_K)ᵀ = (q·W_K)Mᵀ avoids
        // projecting every slot.
        let logits = if self.cfg.keys == KeyMode::Recompute && n < self.heads * self.head_dim {
            let qk = q.broadcast_matmul(&self.w_k.weight().unsqueeze(0)?)?; // [B, n, d]
            let s = kernels::rows_dot(&qk, &mem.content)?;
            match self.age_keys(mem)? {
                Some(ages) => (s + q.matmul(&ages.t()?)?)?,
                None => s,
            }
        } else {
            q.matmul(&self.slot_keys(mem)?.t()?)?
        };
        let logits = (logits / inner.sqrt())?; // [B, n, m]
        let occ = occ.broadcast_as(logits.shape())?.contiguous()?;
        let address = kernels::masked_softmax(&logits, &occ)?.broadcast_mul(&addressed)?;
        let w = (address * rate)?.transpose(1, 2)?.contiguous()?; // [B, m, n]
        let w = if erase {
            // Cap each slot's total weight at 1: a convex combination.
            w.broadcast_div(&w.sum_keepdim(2)?.maximum(1.0)?)?
        } else {
            w
        };
        let update = |old: &Tensor, new: &Tensor| -> Result<Tensor> {
            // One candidate: an outer product, far cheaper as a broadcast
            // than as a matmul with inner dimension 1.
            let add = if n == 1 {
                w.broadcast_mul(new)?
            } else {
                w.matmul(new)?
            };
            let out = if erase {
                let keep = (1.0 - w.sum_keepdim(2)?)?;
                (old.broadcast_mul(&keep)? + add)?
            } else {
                (old + add)?
            };
            Ok(if mem.tracked { out } else { out.detach() })
        };
        let new_keys = match &mem.keys {
            Some(_) => Some(self.w_k.forward(v)?),
            None => None,
        };
        // A detached memory is updated in place, touching only rows with weight.
        if !mem.tracked && kernels::blend_rows_in_place(&mem.content, &w, v, erase)? {
            if let (Some(keys), Some(k)) = (&mem.keys, &new_keys) {
                kernels::blend_rows_in_place(keys, &w, k, erase)?;
            }
        } else {
            mem.content = update(&mem.content, v)?;
            if let (Some(keys), Some(k)) = (&mem.keys, &new_keys) {
                mem.keys = Some(update(keys, k)?);
            }
        }
        // Telemetry: a slot counts as written when it got more than a uniform
        // share of the write weight.
        let share: Vec<f32> = w.sum(2)?.to_dtype(DType::F32)?.flatten_all()?.to_vec1()?;
        for (bi, &count) in occ_count.iter().enumerate() {
            if count == 0 {
                continue;
            }
            let uniform = (rate as f32) / count as f32;
            for i in 0..m {
                let f = bi * m + i;
                if occupied_before[f] && share[f] > uniform {
                    mem.meta.write_count[f] += 1;
                    if share[f] >= 0.5 * rate as f32 {
                        mem.meta.written_at[f] = mem.clocks.writes;
                    }
                }
            }
        }
        Ok(())
    }

    /// Number of scalar parameters.
    pub fn param_count(&self) -> usize {
        let mut n = 0;
        for l in [&self.w_q, &self.w_k, &self.w_v, &self.w_o, &self.w_u] {
            n += l.weight().elem_count();
        }
        n += 4 * self.d_model; // two norms, weight and bias
        n += self.pool_query.as_ref().map_or(0, |t| t.elem_count());
        n += self
            .gate
            .as_ref()
            .map_or(0, |g| g.weight().elem_count() + 1);
        n += self.age_emb.as_ref().map_or(0, |t| t.elem_count());
        n
    }
}

/// Per-head product: x [B, H, T, a] by w [H, a, c] gives [B, H, T, c].
fn per_head(x: &Tensor, w: &Tensor) -> Result<Tensor> {
    let (b, nh, t, a) = x.dims4()?;
    let c = w.dim(2)?;
    let x = x.transpose(0, 1)?.contiguous()?.reshape((nh, b * t, a))?;
    let y = x.matmul(&w.contiguous()?)?;
    Ok(y.reshape((nh, b, t, c))?.transpose(0, 1)?.contiguous()?)
}

/// ⌊log2(age + 1)⌋, capped at `buckets − 1`.
pub fn age_bucket(age: u64, buckets: usize) -> usize {
    ((64 - (age + 1).leading_zeros() - 1) as usize).min(buckets - 1)
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

/// Marks flat slot `f` as freshly written.
fn fill_slot(mem: &mut MemoryState, f: usize, score: f32) {
    let meta = &mut mem.meta;
    meta.occupied[f] = true;
    meta.seq[f] = mem.clocks.next_seq;
    mem.clocks.next_seq += 1;
    meta.written_at[f] = mem.clocks.writes;
    meta.write_count[f] = 1;
    meta.last_read[f] = mem.clocks.events;
    meta.read_weight[f] = 0.0;
    meta.gate_score[f] = score;
}

/// The slot memory `b` writes next: a free one, else the eviction victim.
/// Ties fall to the oldest insertion, so every policy is deterministic.
fn choose_slot(mem: &mut MemoryState, b: usize, evict: Evict) -> usize {
    let m = mem.slots();
    let base = b * m;
    if let Some(i) = mem.first_free(b) {
        return i;
    }
    let meta = &mem.meta;
    let by = |key: &dyn Fn(usize) -> (f64, u64)| -> usize {
        (0..m)
            .min_by(|&i, &j| {
                let (a, b) = (key(base + i), key(base + j));
                a.0.total_cmp(&b.0).then(a.1.cmp(&b.1))
            })
            .expect("slots ≥ 1")
    };
    match evict {
        Evict::Fifo => by(&|f| (0.0, meta.seq[f])),
        Evict::Lru => by(&|f| (meta.last_read[f] as f64, meta.seq[f])),
        Evict::Lfu => by(&|f| (meta.read_weight[f] as f64, meta.seq[f])),
        Evict::LowestScore => by(&|f| (meta.gate_score[f] as f64, meta.seq[f])),
        Evict::Random => mem.rng.random_range(0..m),
    }
}

/// Replaces rows `dst` of `table` [B, m, w] (flat row index b·m + i) by `rows`
/// [A, w]: in place for detached memory (O(A·w)), as a graph op otherwise.
fn scatter_rows(table: &Tensor, dst: &[u32], rows: &Tensor, tracked: bool) -> Result<Tensor> {
    let (b, m, w) = table.dims3()?;
    let a = dst.len();
    let flat = table.reshape((b * m, w))?;
    if tracked {
        // M·keep + index_add(0, dst, rows). Not `scatter`: its backward in
        // candle 0.11 passes the gradient to the overwritten rows as well
        // (caught by the finite-difference conformance test).
        let mut keep = vec![1f32; b * m];
        for &f in dst {
            keep[f as usize] = 0.0;
        }
        let keep = Tensor::from_vec(keep, (b * m, 1), table.device())?.to_dtype(table.dtype())?;
        let idx = Tensor::new(dst, table.device())?;
        let added = flat.zeros_like()?.index_add(&idx, rows, 0)?;
        Ok((flat.broadcast_mul(&keep)? + added)?.reshape((b, m, w))?)
    } else {
        let idx = Tensor::new(dst, table.device())?
            .reshape((a, 1))?
            .broadcast_as((a, w))?
            .contiguous()?;
        flat.scatter_set(&idx, &rows.detach().contiguous()?, 0)?;
        Ok(table.clone())
    }
}

/// Selection mask [B, H, T, m] of the k best-scoring occupied slots per query.
/// Selection runs on the host in O(m) per query (select_nth_unstable).
fn topk_mask(scores: &Tensor, occupied: &[bool], k: usize) -> Result<Tensor> {
    let (b, nh, t, m) = scores.dims4()?;
    let flat: Vec<f32> = scores.to_dtype(DType::F32)?.flatten_all()?.to_vec1()?;
    let mut mask = vec![0f32; flat.len()];
    let mut cand: Vec<usize> = Vec::with_capacity(m);
    for row in 0..b * nh * t {
        let bi = row / (nh * t);
        let occ = &occupied[bi * m..(bi + 1) * m];
        let s = &flat[row * m..(row + 1) * m];
        cand.clear();
        cand.extend((0..m).filter(|&i| occ[i]));
        if cand.len() > k {
            cand.select_nth_unstable_by(k - 1, |&i, &j| s[j].total_cmp(&s[i]).then(i.cmp(&j)));
            cand.truncate(k);
        }
        for &i in &cand {
            mask[row * m + i] = 1.0;
        }
    }
    Ok(Tensor::from_vec(mask, (b, nh, t, m), scores.device())?.to_dtype(scores.dtype())?)
}

/// Read telemetry: cumulative weight per slot (summed over queries, averaged
/// over heads), and the LRU clock for slots that got more than a uniform share
/// of the slots the read attended to.
fn record_read(mem: &mut MemoryState, weights: &Tensor, read: ReadConfig) -> Result<()> {
    let (b, nh, _, m) = weights.dims4()?;
    let w = weights.detach().to_dtype(DType::F32)?;
    let total: Vec<f32> = (w.sum(2)?.sum(1)? / nh as f64)?.flatten_all()?.to_vec1()?;
    let peak: Vec<f32> = w.max(2)?.max(1)?.flatten_all()?.to_vec1()?;
    mem.clocks.events += 1;
    let now = mem.clocks.events;
    for bi in 0..b {
        let occ = mem.occupied(bi);
        let attended = match read {
            ReadConfig::Dense {} => occ,
            ReadConfig::Topk { k } => occ.min(k),
        };
        if attended == 0 {
            continue;
        }
        let uniform = 1.0 / attended as f32;
        for i in 0..m {
            let f = bi * m + i;
            mem.meta.read_weight[f] += total[f];
            if mem.meta.occupied[f] && peak[f] >= uniform {
                mem.meta.last_read[f] = now;
            }
        }
    }
    Ok(())
}
