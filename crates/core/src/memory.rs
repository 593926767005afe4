//! Memory state: a batch of independent slot memories and their per-slot
//! metadata, plus [`MemoryBank`], which partitions memories into namespaces.
//!
//! The state lives outside the layer and is passed in by `&mut`, so the
//! caller decides when memory persists, resets or is saved. Contents are a
//! candle tensor [B, m, d] (and cached keys [B, m, d_key] when the layer
//! caches keys); metadata is kept on the host because eviction decisions are
//! sequential and cheap. A *tracked* state keeps writes in the autograd graph
//! (training within an episode); a detached state updates in place, so a
//! write costs O(d) per slot written instead of O(m·d).

use std::collections::BTreeMap;

use candle_core::{DType, Device, Tensor};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

use crate::error::{Error, Result};

/// Per-slot metadata, flattened over (memory, slot): index `b * slots + i`.
#[derive(Debug, Clone, PartialEq)]
pub struct SlotMeta {
    pub occupied: Vec<bool>,
    /// Monotone insertion number of the slot's current content (FIFO order).
    pub seq: Vec<u64>,
    /// Memory write step at which the content was written (its age origin).
    pub written_at: Vec<u64>,
    /// How many writes have gone into the slot since it was (re)filled.
    pub write_count: Vec<u32>,
    /// Event clock of the last read that favoured the slot, or of its write.
    pub last_read: Vec<u64>,
    /// Cumulative read weight (summed over queries, averaged over heads).
    pub read_weight: Vec<f32>,
    /// Gate score of the write that filled the slot (1 when ungated).
    pub gate_score: Vec<f32>,
}

impl SlotMeta {
    fn new(n: usize) -> Self {
        SlotMeta {
            occupied: vec![false; n],
            seq: vec![0; n],
            written_at: vec![0; n],
            write_count: vec![0; n],
            last_read: vec![0; n],
            read_weight: vec![0.0; n],
            gate_score: vec![0.0; n],
        }
    }
}

/// Counters that order events in a memory state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Clocks {
    /// Write calls so far; a slot's age is `writes − written_at`.
    pub writes: u64,
    /// Reads and writes so far; orders LRU.
    pub events: u64,
    /// Next insertion number.
    pub next_seq: u64,
}

/// A batch of `batch` independent memories of `slots` slots each.
#[derive(Debug)]
pub struct MemoryState {
    pub(crate) batch: usize,
    pub(crate) slots: usize,
    pub(crate) dim: usize,
    pub(crate) key_dim: usize,
    pub(crate) content: Tensor,
    pub(crate) keys: Option<Tensor>,
    pub(crate) meta: SlotMeta,
    pub(crate) clocks: Clocks,
    pub(crate) evictions: Vec<u64>,
    pub(crate) rng: ChaCha8Rng,
    pub(crate) tracked: bool,
    pub(crate) config_hash: String,
    /// Per memory, a lower bound on the first free slot. Slots are only
    /// freed by `clear`, which resets it, so filling m slots costs O(m), not
    /// O(m²).
    pub(crate) free_hint: Vec<usize>,
}

/// Host metadata bytes per slot: occupied (1), seq, written_at and last_read
/// (8 each), write_count, read_weight and gate_score (4 each).
pub const META_BYTES_PER_SLOT: usize = 1 + 3 * 8 + 3 * 4;

impl MemoryState {
    /// An empty state. `key_dim` is the width of cached keys (0 when keys are
    /// recomputed); `rng_seed` seeds random eviction.
    #[allow(clippy::too_many_arguments)]
    pub fn empty(
        batch: usize,
        slots: usize,
        dim: usize,
        key_dim: usize,
        config_hash: &str,
        rng_seed: [u8; 32],
        dtype: DType,
        device: &Device,
    ) -> Result<Self> {
        if batch == 0 || slots == 0 || dim == 0 {
            return Err(Error::Usage(format!(
                "memory needs batch, slots and dim ≥ 1 (got {batch}, {slots}, {dim})"
            )));
        }
        let content = Tensor::zeros((batch, slots, dim), dtype, device)?;
        let keys = if key_dim > 0 {
            Some(Tensor::zeros((batch, slots, key_dim), dtype, device)?)
        } else {
            None
        };
        Ok(MemoryState {
            batch,
            slots,
            dim,
            key_dim,
            content,
            keys,
            meta: SlotMeta::new(batch * slots),
            clocks: Clocks::default(),
            evictions: vec![0; batch],
            rng: ChaCha8Rng::from_seed(rng_seed),
            tracked: false,
            config_hash: config_hash.to_string(),
            free_hint: vec![0; batch],
        })
    }

    pub fn batch(&self) -> usize {
        self.batch
    }
    pub fn slots(&self) -> usize {
        self.slots
    }
    pub fn dim(&self) -> usize {
        self.dim
    }
    pub fn key_dim(&self) -> usize {
        self.key_dim
    }
    pub fn config_hash(&self) -> &str {
        &self.config_hash
    }
    pub fn dtype(&self) -> DType {
        self.content.dtype()
    }
    pub fn device(&self) -> &Device {
        self.content.device()
    }
    /// Slot contents [B, m, d]. Detached writes update this storage in place:
    /// `copy()` it to keep a value.
    pub fn content(&self) -> &Tensor {
        &self.content
    }
    /// Cached keys [B, m, d_key], when the layer caches keys.
    pub fn keys(&self) -> Option<&Tensor> {
        self.keys.as_ref()
    }
    pub fn meta(&self) -> &SlotMeta {
        &self.meta
    }
    pub fn clocks(&self) -> Clocks {
        self.clocks
    }
    /// Evictions so far, per memory.
    pub fn evictions(&self) -> &[u64] {
        &self.evictions
    }
    /// Occupied slots of memory `b`.
    pub fn occupied(&self, b: usize) -> usize {
        self.meta.occupied[b * self.slots..(b + 1) * self.slots]
            .iter()
            .filter(|&&o| o)
            .count()
    }
    /// Bytes of memory state per slot: contents, cached keys and metadata.
    pub fn bytes_per_slot(&self) -> usize {
        self.dtype().size_in_bytes() * (self.dim + self.key_dim) + META_BYTES_PER_SLOT
    }

    /// The lowest free slot of memory `b`, if any (amortised O(1) while filling).
    pub(crate) fn first_free(&mut self, b: usize) -> Option<usize> {
        let m = self.slots;
        let occupied = &self.meta.occupied[b * m..(b + 1) * m];
        let found = (self.free_hint[b]..m).find(|&i| !occupied[i]);
        self.free_hint[b] = found.unwrap_or(m);
        found
    }

    pub fn is_tracked(&self) -> bool {
        self.tracked
    }

    /// Keeps later writes in the autograd graph, so gradients flow from reads
    /// back through the writes that produced the memory.
    pub fn track(&mut self) {
        self.tracked = true;
    }

    /// Cuts the graph: contents become plain values (own storage, so that
    /// in-place writes never alias a tensor the caller still holds).
    pub fn detach(&mut self) -> Result<()> {
        self.content = self.content.detach().copy()?;
        if let Some(k) = &self.keys {
            self.keys = Some(k.detach().copy()?);
        }
        self.tracked = false;
        Ok(())
    }

    /// Empties every slot (the memory-cleared control).
    pub fn clear(&mut self) -> Result<()> {
        self.content = self.content.zeros_like()?;
        if let Some(k) = &self.keys {
            self.keys = Some(k.zeros_like()?);
        }
        self.meta = SlotMeta::new(self.batch * self.slots);
        self.evictions = vec![0; self.batch];
        self.free_hint = vec![0; self.batch];
        Ok(())
    }

    /// A deep copy (contents are copied, not shared).
    pub fn deep_clone(&self) -> Result<Self> {
        Ok(MemoryState {
            batch: self.batch,
            slots: self.slots,
            dim: self.dim,
            key_dim: self.key_dim,
            content: self.content.copy()?,
            keys: self.keys.as_ref().map(|k| k.copy()).transpose()?,
            meta: self.meta.clone(),
            clocks: self.clocks,
            evictions: self.evictions.clone(),
            rng: self.rng.clone(),
            tracked: self.tracked,
            config_hash: self.config_hash.clone(),
            free_hint: self.free_hint.clone(),
        })
    }

    /// Host-side occupancy mask [B, m] as 0/1 in the memory's dtype.
    pub(crate) fn occupancy_mask(&self) -> Result<Tensor> {
        let mask: Vec<f32> = self
            .meta
            .occupied
            .iter()
            .map(|&o| if o { 1.0 } else { 0.0 })
            .collect();
        Ok(
            Tensor::from_vec(mask, (self.batch, self.slots), self.device())?
                .to_dtype(self.dtype())?,
        )
    }
}

/// Memories partitioned by namespace. A read or write names one namespace and
/// touches only its state, so memories of different users can never mix.
#[derive(Debug, Default)]
pub struct MemoryBank {
    spaces: BTreeMap<String, MemoryState>,
}

impl MemoryBank {
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a namespace; an existing one of that name is an error.
    pub fn insert(&mut self, name: &str, state: MemoryState) -> Result<()> {
        validate_namespace(name)?;
        if self.spaces.contains_key(name) {
            return Err(Error::Usage(format!("namespace {name:?} already exists")));
        }
        self.spaces.insert(name.to_string(), state);
        Ok(())
    }

    pub fn get(&self, name: &str) -> Option<&MemoryState> {
        self.spaces.get(name)
    }

    pub fn get_mut(&mut self, name: &str) -> Option<&mut MemoryState> {
        self.spaces.get_mut(name)
    }

    pub fn remove(&mut self, name: &str) -> Option<MemoryState> {
        self.spaces.remove(name)
    }

    /// Namespaces in sorted order, with their states.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &MemoryState)> {
        self.spaces.iter().map(|(k, v)| (k.as_str(), v))
    }

    pub fn len(&self) -> usize {
        self.spaces.len()
    }

    pub fn is_empty(&self) -> bool {
        self.spaces.is_empty()
    }
}

/// Namespace names become tensor-name prefixes in snapshots: keep them plain.
pub fn validate_namespace(name: &str) -> Result<()> {
    let ok = !name.is_empty()
        && name.len() <= 128
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_'));
    if ok {
        Ok(())
    } else {
        Err(Error::Usage(format!(
            "namespace {name:?} must be 1–128 characters of [A-Za-z0-9_-]"
        )))
    }
}
