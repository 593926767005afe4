//! The retention layer: parameters, the memory-attention read with its
//! residual integration X̃ = LN(X + Z + R) or X + Z + R, and the write path (source →
//! projection → gate → append-with-eviction or attention blend); see
//! docs/ARCHITECTURE.md.
//!
//! Every operation on the tensor path is built from differentiable candle
//! primitives (candle's fused softmax and layer-norm kernels have no backward
//! pass), so gradients reach W_Q, W_K, W_V, W_O, W_u and the written content.
//! Discrete decisions — which slots a top-k read selects, which slot an append
//! evicts, whether a gate opens — are made on the host and enter the graph as
//! constant masks and indices.
//!
//! Which slots a read attends to, how a write enters memory, which slot an
//! append evicts and whether a write happens are delegated to the backends
//! of [`crate::backends`]; the layer owns the parameters and the tensor
//! algebra around them.

pub mod infer;

use std::sync::Arc;

use candle_core::{D, DType, Device, Tensor};
use candle_nn::{Init, Linear, VarBuilder};

use crate::backends::{self, Backends};
use crate::config::{GateConfig, Integrate, KeyMode, RetentionConfig, SlotAge, WriteSource};
use crate::error::{Error, Result};
use crate::gate::{Gate, GateInput};
use crate::memory::MemoryState;
use crate::read::{ReadBackend, ReadQuery, Selection};
use crate::rng::stream_seed;
pub use crate::write::WriteReport;
use crate::write::{Candidates, WriteBackend, WriteContext};
use retbench_kernels::quant::LowKeys;
use retbench_kernels::rows;

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

    /// (γ, β, ε).
    pub(crate) fn params(&self) -> (&Tensor, &Tensor, f64) {
        (&self.weight, &self.bias, self.eps)
    }

    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        Ok(retbench_kernels::fused::layer_norm(
            x,
            &self.weight,
            &self.bias,
            self.eps,
        )?)
    }
}

/// What a read returns: the readout R [B, T, d] and the slots each query
/// attended to. Weights over every slot are not part of a read (they cost
/// O(m) per query); [`RetentionLayer::inspect_read`] computes them on demand.
#[derive(Debug, Clone)]
pub struct ReadOutput {
    pub r: Tensor,
    pub selection: Selection,
}

/// A read's weights over every slot, [B, H, T, m]: the attention weights
/// (zero on unselected and empty slots), the scaled scores before masking,
/// and the 0/1 selection mask. For fidelity metrics and tests.
#[derive(Debug, Clone)]
pub struct DenseRead {
    pub r: Tensor,
    pub weights: Tensor,
    pub scores: Tensor,
    pub selected: Tensor,
}

/// Usage of one read per touched slot: (flat slot, weight summed over
/// queries and averaged over heads, peak weight).
type Usage = Vec<(usize, f32, f32)>;

/// What `read_core` computed: the readout, the selection, usage when the
/// memory records it, and the weights over every slot when inspecting.
struct ReadParts {
    r: Tensor,
    selection: Selection,
    usage: Option<Usage>,
    dense: Option<DenseRead>,
}

/// A retention layer over memories of width d_model.
#[derive(Debug, Clone)]
pub struct RetentionLayer {
    pub(crate) cfg: RetentionConfig,
    hash: String,
    pub(crate) d_model: usize,
    pub(crate) heads: usize,
    pub(crate) head_dim: usize,
    pub(crate) ln_q: Norm,
    /// The norm of `LN(X + Z + R)`; absent when the read is added plainly.
    ln_out: Option<Norm>,
    pub(crate) w_q: Linear,
    pub(crate) w_k: Linear,
    pub(crate) w_v: Linear,
    pub(crate) w_o: Linear,
    /// W_u; absent when writes store u unprojected.
    w_u: Option<Linear>,
    pool_query: Option<Tensor>,
    age_emb: Option<Tensor>,
    pub(crate) read: Arc<dyn ReadBackend>,
    write_backend: Arc<dyn WriteBackend>,
    gate: Arc<dyn Gate>,
}

impl RetentionLayer {
    /// Builds the layer; parameter names are scoped by `vb` (candle style).
    pub fn new(cfg: &RetentionConfig, d_model: usize, vb: VarBuilder) -> Result<Self> {
        cfg.validate()?;
        let heads = cfg.heads;
        let head_dim = cfg.head_dim(d_model)?;
        let inner = heads * head_dim;
        let pool_query = match cfg.write.source {
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
        let Backends { read, write, gate } = backends::build(cfg, d_model, &vb)?;
        let init = cfg.init;
        let bias = cfg.read.bias;
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
            ln_out: match cfg.read.integrate {
                Integrate::PostNorm => Some(Norm::new(d_model, vb.pp("ln_out"))?),
                Integrate::Add => None,
            },
            w_q: init.linear(d_model, inner, bias, 1.0, vb.pp("w_q"))?,
            w_k: init.linear(d_model, inner, bias, 1.0, vb.pp("w_k"))?,
            w_v: init.linear(d_model, inner, bias, 1.0, vb.pp("w_v"))?,
            // W_O stays unbiased: a bias there would be added whether or
            // not memory holds anything, and an empty memory reads zero.
            w_o: init.linear(inner, d_model, false, 1.0, vb.pp("w_o"))?,
            w_u: if cfg.write.project {
                Some(init.linear(d_model, d_model, false, 1.0, vb.pp("w_u"))?)
            } else {
                None
            },
            pool_query,
            age_emb,
            read: Arc::from(read),
            write_backend: Arc::from(write),
            gate: Arc::from(gate),
        })
    }

    /// The same layer with another read backend: how a backend that no
    /// config names yet (a test's, an experiment's) is plugged in. Memories
    /// made afterwards get its index.
    pub fn with_read_backend(mut self, read: Box<dyn ReadBackend>) -> Self {
        self.read = Arc::from(read);
        self
    }

    /// The read backend's name (`dense`, `topk`, ...).
    pub fn read_backend(&self) -> &dyn ReadBackend {
        self.read.as_ref()
    }

    /// Whether writes need a feedback signal from the caller.
    pub fn needs_feedback(&self) -> bool {
        self.gate.needs_feedback()
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
        let key_dim = if self.cfg.keys.cached() {
            self.heads * self.head_dim
        } else {
            0
        };
        let mut mem = MemoryState::empty(
            batch,
            self.cfg.slots,
            self.d_model,
            key_dim,
            &self.hash,
            stream_seed(&self.hash, seed, "memory/evict"),
            dtype,
            device,
        )?;
        self.ensure_index(&mut mem)?;
        Ok(mem)
    }

    /// Drops what `mem` keeps beside its slots for this layer's reads (the
    /// read backend's index, reduced-precision keys) and builds it again
    /// from the contents: what the scaling task times as `build_s`.
    pub fn rebuild_index(&self, mem: &mut MemoryState) -> Result<()> {
        mem.index = None;
        mem.saved_index = None;
        mem.low = None;
        self.ensure_index(mem)
    }

    /// Gives `mem` the read backend's index if it keeps one and the memory
    /// has none: restored from what a snapshot saved, else built from the
    /// current contents.
    fn ensure_index(&self, mem: &mut MemoryState) -> Result<()> {
        if mem.index.is_none() {
            let index = match mem.saved_index.take() {
                Some(bytes) => self.read.load_index(mem, &bytes)?,
                None => self.read.new_index(mem),
            };
            if let Some(mut index) = index {
                index.refresh(mem.scanned())?;
                mem.index = Some(index);
            }
        }
        if let Some(p) = self.cfg.keys.reduced()
            && mem.low.as_ref().is_none_or(|l| l.precision() != p)
        {
            let mut low = LowKeys::new(p, mem.batch * mem.slots, self.inner_dim());
            low.set_pending(
                (0..mem.batch * mem.slots)
                    .filter(|&f| mem.meta.occupied[f])
                    .collect(),
            );
            mem.low = Some(low);
            self.encode_low_keys(mem)?;
        }
        Ok(())
    }

    /// Encodes the reduced-precision keys of the slots filled since the last
    /// call (every occupied slot after an attention write, which blends into
    /// all of them).
    fn encode_low_keys(&self, mem: &mut MemoryState) -> Result<()> {
        let MemoryState {
            low: Some(low),
            content,
            batch,
            slots,
            dim,
            ..
        } = mem
        else {
            return Ok(());
        };
        let mut dirty = low.take_pending();
        dirty.sort_unstable();
        dirty.dedup();
        let flat = content.reshape((*batch * *slots, *dim))?;
        for part in dirty.chunks(1 << 16) {
            let idx: Vec<u32> = part.iter().map(|&f| f as u32).collect();
            let idx = Tensor::from_vec(idx, part.len(), content.device())?;
            let keys: Vec<f32> = self
                .key_rows(&flat.index_select(&idx, 0)?)?
                .to_dtype(DType::F32)?
                .flatten_all()?
                .to_vec1()?;
            let w = low.width();
            for (&f, key) in part.iter().zip(keys.chunks_exact(w)) {
                low.set(f, key);
            }
        }
        Ok(())
    }

    /// A memory fits this layer when its shapes do: the read mode, rates and
    /// gates may differ from the config that wrote it (e.g. write with dense
    /// reads, evaluate with top-k). Snapshots check the full config hash.
    pub(crate) fn check_memory(&self, mem: &MemoryState, batch: usize) -> Result<()> {
        let key_dim = if self.cfg.keys.cached() {
            self.heads * self.head_dim
        } else {
            0
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

    /// The block output X̃ = LN(X + Z + R) (`integrate: post_norm`) or
    /// X + Z + R (`add`), with Z the self-attention output.
    pub fn forward(&self, x: &Tensor, z: &Tensor, mem: &mut MemoryState) -> Result<Tensor> {
        let h = (x + z)?;
        let read = self.read(&h, mem)?;
        let mixed = (h + read.r)?;
        match &self.ln_out {
            Some(ln) => ln.forward(&mixed),
            None => Ok(mixed),
        }
    }

    /// Adds q·b_K per head to `scores` [B, H, T, ·] from queries q
    /// [B, H, T, d_k]: the term the shortcuts that contract q with W_K and
    /// the raw contents leave out. It is the same for every slot, so it
    /// never changes a softmax; scores stay exact for inspection all the same.
    fn add_key_bias(&self, scores: Tensor, q: &Tensor) -> Result<Tensor> {
        let Some(b) = self.w_k.bias() else {
            return Ok(scores);
        };
        let (_, nh, _, dk) = q.dims4()?;
        let qb = q
            .broadcast_mul(&b.reshape((1, nh, 1, dk))?)?
            .sum_keepdim(D::Minus1)?;
        Ok(scores.broadcast_add(&qb)?)
    }

    /// Adds b_V·Σw to per-head mixed values `out` [B, H, T, d_k] from
    /// weights [B, H, T, ·]: what w·(M·W_Vᵀ + b_V) has beyond (w·M)·W_Vᵀ.
    /// Σw is 1, or 0 for a query that selected nothing.
    fn add_value_bias(&self, out: Tensor, weights: &Tensor) -> Result<Tensor> {
        let Some(b) = self.w_v.bias() else {
            return Ok(out);
        };
        let (_, nh, _, dk) = out.dims4()?;
        let mass = weights.sum_keepdim(D::Minus1)?;
        Ok((out + mass.broadcast_mul(&b.reshape((1, nh, 1, dk))?)?)?)
    }

    /// Slot keys [B, m, H·d_k]: recomputed from contents or cached, plus the
    /// age embedding when slot age is learned.
    fn slot_keys(&self, mem: &MemoryState) -> Result<Tensor> {
        let every: Vec<u32> = (0..mem.slots() as u32).collect();
        if let Some(own) = self.read.keys_of(&every)? {
            // Keys that are the read's parameters: the same for every memory.
            let (b, m) = (mem.batch(), mem.slots());
            return Ok(own
                .unsqueeze(0)?
                .broadcast_as((b, m, own.dim(1)?))?
                .contiguous()?);
        }
        let base = match (&self.cfg.keys, mem.keys()) {
            (KeyMode::Cached, Some(k)) => k.clone(),
            (KeyMode::Cached, None) => {
                return Err(Error::Usage(
                    "cached keys requested but memory holds none".into(),
                ));
            }
            (_, _) => retbench_kernels::fused::linear(mem.content(), &self.w_k)?,
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
    /// LN(h)·W_Q, keys and values from the slots the read backend selects.
    /// Updates the memory's read clock, and its usage statistics when they
    /// are recorded.
    pub fn read(&self, h: &Tensor, mem: &mut MemoryState) -> Result<ReadOutput> {
        self.ensure_index(mem)?;
        if let Some((r, selection)) = self.read_slices(h, mem, self.usage_wanted(mem))? {
            mem.clocks.events += 1;
            return Ok(ReadOutput { r, selection });
        }
        let parts = self.read_core(h, mem, false)?;
        match parts.usage {
            Some(usage) => mem.record_read(usage.into_iter(), |occ| self.read.attended(occ)),
            None => mem.clocks.events += 1,
        }
        Ok(ReadOutput {
            r: parts.r,
            selection: parts.selection,
        })
    }

    /// The same read with its weights over every slot, computed on demand
    /// (an O(m) pass per query) and without touching the memory's
    /// statistics: for fidelity metrics, telemetry and tests.
    pub fn inspect_read(&self, h: &Tensor, mem: &MemoryState) -> Result<DenseRead> {
        Ok(self
            .read_core(h, mem, true)?
            .dense
            .expect("inspection computes every weight"))
    }

    /// Whether reads of `mem` must record usage statistics.
    fn usage_wanted(&self, mem: &MemoryState) -> bool {
        mem.usage
            || self
                .write_backend
                .eviction()
                .is_some_and(|e| e.needs_usage())
    }

    /// The read; with `inspect`, also weights over every slot (and no
    /// usage, which inspection never records).
    fn read_core(&self, h: &Tensor, mem: &MemoryState, inspect: bool) -> Result<ReadParts> {
        let (b, t, d) = h.dims3()?;
        self.check_memory(mem, b)?;
        if d != self.d_model {
            return Err(Error::Usage(format!(
                "hidden width {d}, layer expects {}",
                self.d_model
            )));
        }
        let (nh, dk, m) = (self.heads, self.head_dim, mem.slots());
        let split = |x: Tensor, n: usize| self.split_heads(x, b, n);
        let q = split(
            retbench_kernels::fused::linear(&self.ln_q.forward(h)?, &self.w_q)?,
            t,
        )?;
        // With fewer queries than the head width, contracting the slot axis
        // first is cheaper: Q(M·W_K)ᵀ = (Q·W_K)Mᵀ and w(M·W_V) = (w·M)W_V cost
        // O(H·T·m·d) instead of O(m·d·H·d_k) to project every slot. Same
        // product; only the order of float additions differs.
        let few = t < dk;
        let owns_keys = self.read.owns_keys();
        let content = mem.content();
        let scorer = || -> Result<Tensor> {
            let scores = if few && !self.cfg.keys.cached() && !owns_keys {
                let w_k = self.w_k.weight().reshape((nh, dk, d))?;
                let qk = per_head(&q, &w_k)?.reshape((b, nh * t, d))?;
                let s = rows::rows_dot(&qk, content)?.reshape((b, nh, t, m))?;
                let s = self.add_key_bias(s, &q)?;
                match self.age_keys(mem)? {
                    Some(ages) => (s + q.matmul(&split(ages, m)?.t()?)?)?,
                    None => s,
                }
            } else {
                q.matmul(&split(self.slot_keys(mem)?, m)?.t()?)?
            };
            Ok((scores / (dk as f64).sqrt())?) // [B, H, T, m]
        };
        let ranker = |k: usize| self.rank_top_k(&q, mem, k);
        let scan = || self.tensor_scan_queries(&q, mem);
        let mut query = ReadQuery {
            mem,
            q: &q,
            scorer: &scorer,
            scores: None,
            ranker: Some(&ranker),
            scores_wanted: false,
            scan: &scan,
            scan_cache: None,
            q_host: None,
        };
        let selection = self.read.select(&mut query)?;
        let scores = query.scores.take();
        let want_usage = self.usage_wanted(mem);
        // Inspection keeps the R of the path a read takes, so that it reads
        // what a read reads bit for bit, and computes the weights it shows
        // below.
        let mut fused_r = None;
        if let (Selection::Rows { k, slots }, None) = (&selection, &scores) {
            let (r, usage) = self.gathered_read(&q, mem, *k, slots, want_usage && !inspect)?;
            if !inspect {
                return Ok(ReadParts {
                    r,
                    selection,
                    usage,
                    dense: None,
                });
            }
            fused_r = Some(r);
        }
        // The dense read: one fused op from q, keys and values (usage
        // included).
        if !few
            && scores.is_none()
            && matches!(selection, Selection::Occupied)
            && let Some((r, usage)) = self.fused_dense(&q, mem, want_usage && !inspect)?
        {
            if !inspect {
                return Ok(ReadParts {
                    r,
                    selection,
                    usage,
                    dense: None,
                });
            }
            fused_r = Some(r);
        }
        // Every score is at hand (or inspection wants them): one masked
        // softmax over all slots, zero outside the selection, and an
        // all-zero row when nothing is selected, so that an empty memory
        // contributes exactly zero.
        let scores = match scores {
            Some(s) => s,
            None => scorer()?,
        };
        let select = selection_mask(&selection, mem, &scores)?;
        let weights = rows::masked_softmax(&scores, &select)?;
        let r = match fused_r {
            Some(r) => r,
            None => self.mix_values(&weights, mem, few)?,
        };
        let usage = if want_usage && !inspect {
            Some(usage_of(&weights, nh)?)
        } else {
            None
        };
        let dense = inspect.then(|| DenseRead {
            r: r.clone(),
            weights,
            scores,
            selected: select,
        });
        Ok(ReadParts {
            r,
            selection,
            usage,
            dense,
        })
    }

    /// Rows [B, n, H·d_k] as per-head rows [B, H, n, d_k] (contiguous).
    fn split_heads(&self, x: Tensor, b: usize, n: usize) -> Result<Tensor> {
        Ok(x.reshape((b, n, self.heads, self.head_dim))?
            .transpose(1, 2)?
            .contiguous()?)
    }

    /// R from weights [B, H, T, m] over the slots: w·(M·W_V) per head, or
    /// (w·M)·W_V with few queries (same product, other order of
    /// additions), then W_O.
    fn mix_values(&self, weights: &Tensor, mem: &MemoryState, few: bool) -> Result<Tensor> {
        let (b, nh, t, m) = weights.dims4()?;
        let (d, dk, content) = (self.d_model, self.head_dim, mem.content());
        let out = if few {
            let w_v = self.w_v.weight().reshape((nh, dk, d))?.transpose(1, 2)?;
            let wm = rows::rows_mix(&weights.reshape((b, nh * t, m))?, content)?;
            self.add_value_bias(per_head(&wm.reshape((b, nh, t, d))?, &w_v)?, weights)?
        } else {
            let values = retbench_kernels::fused::linear(content, &self.w_v)?;
            weights.matmul(&self.split_heads(values, b, m)?)?
        };
        let out = out.transpose(1, 2)?.reshape((b, t, nh * dk))?;
        Ok(retbench_kernels::fused::linear(&out, &self.w_o)?)
    }

    /// The dense read as one fused op from q, keys and values (usage
    /// included when asked): R and the usage, or None where the fused op
    /// does not apply.
    fn fused_dense(
        &self,
        q: &Tensor,
        mem: &MemoryState,
        usage: bool,
    ) -> Result<Option<(Tensor, Option<Usage>)>> {
        let (b, nh, t, dk) = q.dims4()?;
        let m = mem.slots();
        let split = |x: Tensor, n: usize| self.split_heads(x, b, n);
        let keys = split(self.slot_keys(mem)?, m)?;
        let values = split(
            retbench_kernels::fused::linear(mem.content(), &self.w_v)?,
            m,
        )?;
        let scale = 1.0 / (dk as f64).sqrt();
        let occupied = mem.occupancy_mask()?;
        let Some((out, used)) =
            retbench_kernels::fused::slot_attention(q, &keys, &values, &occupied, scale, usage)?
        else {
            return Ok(None);
        };
        let out = out.transpose(1, 2)?.reshape((b, t, nh * dk))?;
        let r = retbench_kernels::fused::linear(&out, &self.w_o)?;
        Ok(Some((r, used.map(|u| usage_rows(u.total, u.peak)))))
    }

    /// A read over the selected rows only: gathers k slots per query row,
    /// scores them, softmax over the k, mixes their values. Costs O(k·d) per
    /// query, whatever the memory's size.
    fn gathered_read(
        &self,
        q: &Tensor,
        mem: &MemoryState,
        k: usize,
        slots: &[u32],
        want_usage: bool,
    ) -> Result<(Tensor, Option<Usage>)> {
        let (b, nh, t, dk) = q.dims4()?;
        let (m, d) = (mem.slots(), self.d_model);
        let rows_n = b * nh * t;
        if slots.len() != rows_n * k {
            return Err(Error::Usage(format!(
                "read backend {} selected {} slots, expected {rows_n} rows of {k}",
                self.read.name(),
                slots.len()
            )));
        }
        let mut flat = Vec::with_capacity(rows_n * k);
        let mut head_flat = Vec::with_capacity(rows_n * k);
        let mut sel = vec![0f32; rows_n * k];
        for (row, chosen) in slots.chunks(k).enumerate() {
            let (bi, hi) = (row / (nh * t), (row / t) % nh);
            for (j, &i) in chosen.iter().enumerate() {
                let i = if i == Selection::PAD {
                    0
                } else if (i as usize) < m && mem.meta.occupied[bi * m + i as usize] {
                    sel[row * k + j] = 1.0;
                    i as usize
                } else {
                    return Err(Error::Usage(format!(
                        "read backend {} selected slot {i}, which is empty or past {m}",
                        self.read.name()
                    )));
                };
                flat.push((bi * m + i) as u32);
                head_flat.push(((bi * m + i) * nh + hi) as u32);
            }
        }
        let dev = mem.device();
        let idx = Tensor::from_vec(flat.clone(), rows_n * k, dev)?;
        let rows = mem
            .content()
            .reshape((b * m, d))?
            .index_select(&idx, 0)?
            .reshape((b, nh, t, k, d))?;
        let dot = |a: &Tensor, x: &Tensor| -> Result<Tensor> {
            Ok(a.broadcast_mul(&x.unsqueeze(3)?)?.sum(D::Minus1)?)
        };
        let within: Vec<u32> = flat.iter().map(|&f| f % m as u32).collect();
        let mut scores = match (self.read.keys_of(&within)?, mem.keys()) {
            (Some(own), _) => dot(&own.reshape((b, nh, t, k, dk))?, q)?,
            (None, Some(keys)) if self.cfg.keys.cached() => {
                let hidx = Tensor::from_vec(head_flat, rows_n * k, dev)?;
                let gk = keys
                    .reshape((b * m * nh, dk))?
                    .index_select(&hidx, 0)?
                    .reshape((b, nh, t, k, dk))?;
                dot(&gk, q)?
            }
            (None, _) => {
                let w_k = self.w_k.weight().reshape((nh, dk, d))?;
                self.add_key_bias(dot(&rows, &per_head(q, &w_k)?)?, q)?
            }
        };
        if let (Some(emb), SlotAge::Learned { buckets }) = (&self.age_emb, self.cfg.slot_age) {
            let writes = mem.clocks.writes;
            let aidx: Vec<u32> = flat
                .iter()
                .enumerate()
                .map(|(n, &f)| {
                    let age = writes.saturating_sub(mem.meta.written_at[f as usize]);
                    let hi = (n / k / t) % nh;
                    (age_bucket(age, buckets) * nh + hi) as u32
                })
                .collect();
            let aidx = Tensor::from_vec(aidx, rows_n * k, dev)?;
            let ga = emb
                .reshape((buckets * nh, dk))?
                .index_select(&aidx, 0)?
                .reshape((b, nh, t, k, dk))?;
            scores = (scores + dot(&ga, q)?)?;
        }
        let scores = (scores / (dk as f64).sqrt())?;
        let sel = Tensor::from_vec(sel, (b, nh, t, k), dev)?.to_dtype(scores.dtype())?;
        let weights = rows::masked_softmax(&scores, &sel)?; // [B, H, T, k]
        let wm = weights.unsqueeze(D::Minus1)?.broadcast_mul(&rows)?.sum(3)?; // [B, H, T, d]
        let w_v = self.w_v.weight().reshape((nh, dk, d))?.transpose(1, 2)?;
        let out = self
            .add_value_bias(per_head(&wm, &w_v)?, &weights)?
            .transpose(1, 2)?
            .reshape((b, t, nh * dk))?;
        let r = retbench_kernels::fused::linear(&out, &self.w_o)?;
        let usage = if want_usage {
            let w: Vec<f32> = weights
                .detach()
                .to_dtype(DType::F32)?
                .flatten_all()?
                .to_vec1()?;
            let mut per_slot: std::collections::BTreeMap<usize, (f32, f32)> = Default::default();
            for (n, &f) in flat.iter().enumerate() {
                let e = per_slot.entry(f as usize).or_default();
                e.0 += w[n] / nh as f32;
                e.1 = e.1.max(w[n]);
            }
            Some(per_slot.into_iter().map(|(f, (a, p))| (f, a, p)).collect())
        } else {
            None
        };
        Ok((r, usage))
    }

    /// The write vectors u [B, n, d] that the configured source derives from
    /// the layer's hidden states [B, T, d].
    pub fn write_source(&self, hidden: &Tensor) -> Result<Tensor> {
        let (_, t, d) = hidden.dims3()?;
        Ok(match self.cfg.write.source {
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
        self.ensure_index(mem)?;
        let v = match &self.w_u {
            Some(w_u) => retbench_kernels::fused::linear(&u, w_u)?,
            None => u.clone(),
        };
        let stored_keys = || -> Result<Tensor> {
            match mem.keys() {
                Some(k) => Ok(k.clone()),
                None => Ok(retbench_kernels::fused::linear(mem.content(), &self.w_k)?),
            }
        };
        let key_of = |x: &Tensor| self.key_rows(x);
        let decision = self.gate.decide(GateInput {
            u: &u,
            v,
            stored_keys: &stored_keys,
            key_of: &key_of,
            occupied: &mem.meta.occupied,
            feedback,
        })?;
        mem.clocks.writes += 1;
        mem.clocks.events += 1;
        for (k, &passed) in decision.pass.iter().enumerate() {
            let counts = &mut mem.gate_counts[k / n];
            counts.0 += 1;
            counts.1 += passed as u64;
        }
        let mut report = WriteReport {
            candidates: b * n,
            gate_scores: decision.scores.clone(),
            ..Default::default()
        };
        let cand = Candidates {
            u: &u,
            v: &decision.v,
            scores: &decision.scores,
            pass: &decision.pass,
        };
        self.write_backend.write(self, mem, &cand, &mut report)?;
        if let Some(index) = &mut mem.index {
            let rows = mem.keys.as_ref().unwrap_or(&mem.content);
            index.refresh(rows)?;
        }
        if let Some(low) = &mut mem.low {
            if self.write_backend.blends() {
                low.set_pending(
                    (0..mem.batch * mem.slots)
                        .filter(|&f| mem.meta.occupied[f])
                        .collect(),
                );
            }
            self.encode_low_keys(mem)?;
        }
        Ok(report)
    }

    /// Keys of content rows, x·W_Kᵀ [.., H·d_k].
    pub(crate) fn key_rows(&self, x: &Tensor) -> Result<Tensor> {
        Ok(retbench_kernels::fused::linear(x, &self.w_k)?)
    }

    /// H·d_k, the width of keys and queries.
    pub(crate) fn inner_dim(&self) -> usize {
        self.heads * self.head_dim
    }

    /// Unscaled content-addressing logits (u·W_Q)·Kᵀ [B, n, m] of an
    /// attention write.
    pub(crate) fn address_logits(&self, u: &Tensor, mem: &MemoryState) -> Result<Tensor> {
        let n = u.dim(1)?;
        let q = retbench_kernels::fused::linear(u, &self.w_q)?; // [B, n, H·d_k]
        // As in reads: with few candidates, q(M·W_K)ᵀ = (q·W_K)Mᵀ avoids
        // projecting every slot.
        Ok(if !self.cfg.keys.cached() && n < self.inner_dim() {
            let qk = q.broadcast_matmul(&self.w_k.weight().unsqueeze(0)?)?; // [B, n, d]
            let s = rows::rows_dot(&qk, &mem.content)?;
            let s = match self.w_k.bias() {
                Some(bk) => s.broadcast_add(&q.broadcast_mul(bk)?.sum_keepdim(D::Minus1)?)?,
                None => s,
            };
            match self.age_keys(mem)? {
                Some(ages) => (s + q.matmul(&ages.t()?)?)?,
                None => s,
            }
        } else {
            q.matmul(&self.slot_keys(mem)?.t()?)?
        })
    }

    /// Number of scalar parameters.
    pub fn param_count(&self) -> usize {
        let mut n = 0;
        for l in [&self.w_q, &self.w_k, &self.w_v, &self.w_o]
            .into_iter()
            .chain(self.w_u.as_ref())
        {
            n += l.weight().elem_count() + l.bias().map_or(0, |b| b.elem_count());
        }
        // Two norms (one without post-norm integration), weight and bias.
        n += 2 * self.d_model * (1 + usize::from(self.ln_out.is_some()));
        n += self.pool_query.as_ref().map_or(0, |t| t.elem_count());
        if matches!(self.cfg.gate, GateConfig::Learned {}) {
            n += self.d_model + 1;
        }
        n += self.age_emb.as_ref().map_or(0, |t| t.elem_count());
        n
    }
}

/// Usage per flat slot (b·m + slot) from the weight summed over heads and
/// queries / H (`total`) and its largest value (`peak`), both [B·m].
/// The selection as a 0/1 mask shaped like `scores` [B, H, T, m]: the
/// occupied slots, or the rows a backend chose per query.
fn selection_mask(selection: &Selection, mem: &MemoryState, scores: &Tensor) -> Result<Tensor> {
    let (b, nh, t, m) = scores.dims4()?;
    Ok(match selection {
        Selection::Occupied => mem
            .occupancy_mask()?
            .reshape((b, 1, 1, m))?
            .broadcast_as((b, nh, t, m))?
            .contiguous()?,
        Selection::Rows { k, slots } => {
            let mut mask = vec![0f32; b * nh * t * m];
            for (row, chosen) in slots.chunks(*k).enumerate() {
                for &i in chosen.iter().filter(|&&i| i != Selection::PAD) {
                    mask[row * m + i as usize] = 1.0;
                }
            }
            Tensor::from_vec(mask, (b, nh, t, m), scores.device())?.to_dtype(scores.dtype())?
        }
    })
}

/// Per memory slot, the mean read weight over heads and queries and its
/// peak, from weights [B, H, T, m].
fn usage_of(weights: &Tensor, nh: usize) -> Result<Usage> {
    let w = weights.detach().to_dtype(DType::F32)?;
    let total: Vec<f32> = (w.sum(2)?.sum(1)? / nh as f64)?.flatten_all()?.to_vec1()?;
    let peak: Vec<f32> = w.max(2)?.max(1)?.flatten_all()?.to_vec1()?;
    Ok(usage_rows(total, peak))
}

fn usage_rows(total: Vec<f32>, peak: Vec<f32>) -> Usage {
    total
        .into_iter()
        .zip(peak)
        .enumerate()
        .map(|(f, (t, p))| (f, t, p))
        .collect()
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
impl WriteContext for RetentionLayer {
    fn key_rows(&self, x: &Tensor) -> Result<Tensor> {
        RetentionLayer::key_rows(self, x)
    }
    fn inner_dim(&self) -> usize {
        RetentionLayer::inner_dim(self)
    }
    fn address_logits(&self, u: &Tensor, mem: &MemoryState) -> Result<Tensor> {
        RetentionLayer::address_logits(self, u, mem)
    }
    fn address_writes(&self, keys: &dyn Fn() -> Result<Tensor>) -> Result<Option<Vec<usize>>> {
        self.read.address_writes(keys)
    }
}
