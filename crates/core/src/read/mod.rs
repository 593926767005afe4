//! The read seam: a [`ReadBackend`] decides which slots each query attends
//! to and returns that as a [`Selection`]; the layer then computes the
//! softmax over the selected slots only and gathers only their rows.
//!
//! A backend sees the read through a [`ReadQuery`]: the per-head queries, the
//! memory, and scores over every slot *on demand* (exact backends ask for
//! them, indexed ones never do, so they can cost less than O(slots)). When a
//! backend asked for every score anyway, the layer uses them with a mask (one
//! streaming pass); otherwise it gathers the selected rows. A backend that
//! keeps state beside the slots returns a [`SlotIndex`] from
//! [`ReadBackend::new_index`], and the memory keeps it in step with writes.
//! `docs/ARCHITECTURE.md` shows how to add one.

mod dense;
mod ivf;
mod product;
mod topk;

pub use dense::Dense;
pub use ivf::{Ivf, IvfIndex};
pub use product::ProductKeys;
pub use topk::TopK;

pub use product::ProductKeysRecipe;

use candle_core::Tensor;
use candle_nn::VarBuilder;

use crate::config::RetentionConfig;
use crate::error::{ConfigError, Result};
use crate::memory::{MemoryState, SlotIndex};

/// Candidates per top-k slot that a scan of reduced-precision keys passes to
/// the exact re-ranking (measured: `reports/scaling-index`).
pub const RERANK: usize = 4;

/// Per-memory query rows in the space of what is scanned: content rows (d
/// wide; recomputed keys) or cached key rows (H·d_k wide, zero outside the
/// head's span). `q` is [B, H, T, d_k] row-major.
#[derive(Debug, Clone)]
pub(crate) struct ScanQueries {
    pub width: usize,
    /// [B][H·T rows × width].
    pub rows: Vec<Vec<f32>>,
}

/// Which slots each query row attends to. Rows are (memory, head, position)
/// in that order: B·H·T of them.
#[derive(Debug, Clone, PartialEq)]
pub enum Selection {
    /// Every occupied slot (the paper's dense read).
    Occupied,
    /// `k` slot indices (within the row's memory) per row; [`Selection::PAD`]
    /// fills rows with fewer than `k` candidates.
    Rows { k: usize, slots: Vec<u32> },
}

impl Selection {
    /// Padding in [`Selection::Rows`].
    pub const PAD: u32 = u32::MAX;

    /// The slots of query row `row` (padding included).
    pub fn row(&self, row: usize) -> Option<&[u32]> {
        match self {
            Selection::Occupied => None,
            Selection::Rows { k, slots } => Some(&slots[row * k..(row + 1) * k]),
        }
    }
}

/// A read as a backend sees it.
pub struct ReadQuery<'a> {
    pub(crate) mem: &'a MemoryState,
    /// Per-head queries [B, H, T, d_k].
    pub(crate) q: &'a Tensor,
    pub(crate) scorer: &'a dyn Fn() -> Result<Tensor>,
    pub(crate) scores: Option<Tensor>,
    /// Exact top-k in one scan over memory, where the layer can (`None`
    /// from it: rank `all_scores` instead).
    pub(crate) ranker: Option<&'a dyn Fn(usize) -> Result<Option<Vec<u32>>>>,
    /// Set when the backend asked for every score.
    pub(crate) scores_wanted: bool,
    /// Query rows in the space of the rows reads score (see
    /// `crate::infer`), where the layer can give them.
    pub(crate) scan: &'a dyn Fn() -> Result<Option<ScanQueries>>,
    pub(crate) scan_cache: Option<Option<ScanQueries>>,
    /// The queries' data [B, H, T, d_k] on the host, where the layer has it
    /// (the graph-free read): no tensor round trip per read.
    pub(crate) q_host: Option<&'a [f32]>,
}

impl<'a> ReadQuery<'a> {
    /// The memory being read.
    pub fn memory(&self) -> &'a MemoryState {
        self.mem
    }

    /// Per-head queries [B, H, T, d_k], in the space of the slot keys.
    pub fn queries(&self) -> &Tensor {
        self.q
    }

    /// The same queries as f32, row-major.
    pub fn query_rows(&self) -> Result<std::borrow::Cow<'a, [f32]>> {
        Ok(match self.q_host {
            Some(q) => std::borrow::Cow::Borrowed(q),
            None => std::borrow::Cow::Owned(
                self.q
                    .detach()
                    .to_dtype(candle_core::DType::F32)?
                    .flatten_all()?
                    .to_vec1()?,
            ),
        })
    }

    /// (B, H, T, m).
    pub fn dims(&self) -> Result<(usize, usize, usize, usize)> {
        let (b, h, t, _) = self.q.dims4()?;
        Ok((b, h, t, self.mem.slots()))
    }

    /// Scaled scores Q·Kᵀ/√d_k over every slot [B, H, T, m], computed once
    /// on first use: an O(m) pass that sublinear backends avoid.
    pub fn all_scores(&mut self) -> Result<&Tensor> {
        self.scores_wanted = true;
        if self.scores.is_none() {
            self.scores = Some((self.scorer)()?);
        }
        Ok(self.scores.as_ref().expect("just set"))
    }
}

impl ReadQuery<'_> {
    /// Per memory, the query rows (B·H·T of them, as in [`Selection`]) in
    /// the space of [`MemoryState::scanned`] rows: content space (q·W_K per
    /// head) for recomputed keys, each head's span of the key row for
    /// cached ones. `None` where the layer cannot give them (not f32 on
    /// the CPU, learned slot age).
    pub(crate) fn scan_queries(&mut self) -> Result<Option<&ScanQueries>> {
        if self.scan_cache.is_none() {
            self.scan_cache = Some((self.scan)()?);
        }
        Ok(self.scan_cache.as_ref().and_then(|c| c.as_ref()))
    }

    /// The `k` occupied slots with the highest scores per query row (ties to
    /// the lower slot), in increasing slot order, padded with
    /// [`Selection::PAD`]. One scan over memory with a bounded heap per row
    /// (`retbench_kernels::scan::top_k`) where the layer supports it; otherwise from
    /// [`ReadQuery::all_scores`].
    pub fn top_k(&mut self, k: usize) -> Result<Selection> {
        if let Some(rank) = self.ranker
            && let Some(slots) = rank(k)?
        {
            return Ok(Selection::Rows { k, slots });
        }
        let (b, nh, t, m) = self.dims()?;
        let occupied = &self.mem.meta().occupied;
        let scores = self.all_scores()?;
        let flat: Vec<f32> = scores
            .to_dtype(candle_core::DType::F32)?
            .flatten_all()?
            .to_vec1()?;
        let mut slots = vec![Selection::PAD; b * nh * t * k];
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
            cand.sort_unstable();
            for (o, &i) in slots[row * k..].iter_mut().zip(&cand) {
                *o = i as u32;
            }
        }
        Ok(Selection::Rows { k, slots })
    }
}

/// A read kind as the registry (`crate::backends`) hands it out, before
/// any parameter exists: the rules it sets for the rest of the config, and
/// how it becomes a backend. Backends without parameters are their own
/// recipe.
pub trait ReadRecipe {
    /// The constraints this read puts on `cfg` (field paths relative to
    /// the `retention` block).
    fn check(&self, cfg: &RetentionConfig) -> std::result::Result<(), ConfigError>;
    /// The backend, its parameters (if any) created through `vb`.
    fn build(
        self: Box<Self>,
        cfg: &RetentionConfig,
        d_model: usize,
        vb: &VarBuilder,
    ) -> Result<Box<dyn ReadBackend>>;
}

/// The rule of every read that attends to `k` slots.
pub(crate) fn check_k(k: usize, slots: usize) -> std::result::Result<(), ConfigError> {
    if k == 0 || k > slots {
        return Err(ConfigError::Invalid {
            field: "read.k".into(),
            message: format!("must be in 1..={slots} (slots), got {k}"),
        });
    }
    Ok(())
}

/// A way of choosing the slots a read attends to.
pub trait ReadBackend: Send + Sync + std::fmt::Debug {
    /// The name as written in YAML (`dense`, `topk`).
    fn name(&self) -> &'static str;
    /// The slots a query attends to, for reads that select a fixed number
    /// (`None`: every occupied slot).
    fn k(&self) -> Option<usize> {
        None
    }
    /// The slots every query row attends to.
    fn select(&self, query: &mut ReadQuery<'_>) -> Result<Selection>;
    /// How many slots a read attends to in a memory with `occupied` slots:
    /// a slot that gets a uniform share of those counts as used (LRU).
    fn attended(&self, occupied: usize) -> usize {
        occupied
    }
    /// A fresh index for a new memory, for backends that keep one. It is
    /// built over the memory's current contents (`SlotIndex::refresh`
    /// follows).
    fn new_index(&self, _mem: &MemoryState) -> Option<Box<dyn SlotIndex>> {
        None
    }
    /// Keys of `slots` (indices within a memory) [len, d_k], for a backend
    /// whose slot keys are its own parameters (product keys); `None` (the
    /// default) when keys come from the memory. The layer scores selected
    /// slots with them, so they receive gradients.
    fn keys_of(&self, _slots: &[u32]) -> Result<Option<Tensor>> {
        Ok(None)
    }
    /// Whether [`ReadBackend::keys_of`] gives the slot keys (true exactly
    /// when it returns `Some`).
    fn owns_keys(&self) -> bool {
        false
    }
    /// q·key (unscaled) of `slots` for one query row `q` [d_k] on slices,
    /// for such backends (the graph-free read); false where it does not
    /// apply.
    fn score_slots(&self, _q: &[f32], _slots: &[u32], _out: &mut [f32]) -> Result<bool> {
        Ok(false)
    }
    /// The slots that writes go to, given their keys [rows, d_k] on
    /// demand, for a backend that addresses writes (product keys); `None`
    /// (the default, which never asks for the keys) leaves placement to the
    /// write backend.
    fn address_writes(&self, _keys: &dyn Fn() -> Result<Tensor>) -> Result<Option<Vec<usize>>> {
        Ok(None)
    }
    /// The index a snapshot saved (`SlotIndex::save`), restored for `mem`.
    /// By default it is rebuilt from the contents instead.
    fn load_index(&self, mem: &MemoryState, _saved: &[u8]) -> Result<Option<Box<dyn SlotIndex>>> {
        Ok(self.new_index(mem))
    }
}
