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
//!
//! Slot bookkeeping is the state's own: [`MemoryState::take_slot`] picks and
//! fills a slot through an [`EvictionPolicy`], [`MemoryState::record_read`]
//! updates usage statistics, and a read backend's [`SlotIndex`], if it keeps
//! one, is told of every fill, eviction and clear here, so no caller can
//! leave the metadata and an index out of step.

use std::cmp::Reverse;
use std::collections::{BTreeMap, BinaryHeap, VecDeque};

use candle_core::{DType, Device, Tensor};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

use crate::error::{Error, Result};

/// Picks the victim slot of a full memory.
pub trait EvictionPolicy: Send + Sync + std::fmt::Debug {
    /// The name as written in YAML (`fifo`).
    fn name(&self) -> &'static str;
    /// The slot index (within memory `b`, not flat) to overwrite.
    fn victim(&self, mem: &mut MemoryState, b: usize) -> usize;
    /// Whether the policy ranks slots by read statistics, so that reads must
    /// keep them whatever [`MemoryState::record_usage`] says.
    fn needs_usage(&self) -> bool {
        false
    }
}

/// State a read backend keeps beside the slots (an inverted-file index, a
/// product-key table). The memory calls these hooks as slots change, and
/// snapshots store what [`SlotIndex::save`] returns; on load, the backend's
/// `load_index` restores it (by default it rebuilds from the contents; see
/// `docs/ARCHITECTURE.md`).
pub trait SlotIndex: Send + Sync + std::fmt::Debug {
    /// Flat slot `b·m + i` was (re)filled. Its content is in the memory
    /// after the write call completes; `refresh` then follows.
    fn on_fill(&mut self, flat_slot: usize);
    /// Flat slot `b·m + i` lost its content to an eviction (a fill follows).
    fn on_evict(&mut self, flat_slot: usize);
    /// Every slot was emptied.
    fn on_clear(&mut self);
    /// Called once per write call, after contents changed, with the rows
    /// reads score: cached keys [B, m, H·d_k] when the memory keeps them,
    /// else the contents [B, m, d].
    fn refresh(&mut self, _rows: &Tensor) -> Result<()> {
        Ok(())
    }
    fn box_clone(&self) -> Box<dyn SlotIndex>;
    /// Bytes the index holds beside the memory, where it knows them.
    fn bytes(&self) -> Option<usize> {
        None
    }
    /// The index as bytes for a snapshot; `None` (the default) stores
    /// nothing, and the index is rebuilt from the contents on load.
    fn save(&self) -> Option<Vec<u8>> {
        None
    }
    /// The concrete index, so that its backend can downcast it.
    fn as_any(&self) -> &dyn std::any::Any;
}

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
    /// Per memory, gate verdicts so far: (candidates seen, candidates the
    /// gate passed). Diagnostics of this process (not in snapshots): the
    /// drift suite scores a gate's precision and recall from them.
    pub(crate) gate_counts: Vec<(u64, u64)>,
    pub(crate) rng: ChaCha8Rng,
    pub(crate) tracked: bool,
    pub(crate) config_hash: String,
    /// Per memory, a lower bound on the first free slot. Slots are only
    /// freed by `clear`, which resets it, so filling m slots costs O(m), not
    /// O(m²).
    pub(crate) free_hint: Vec<usize>,
    /// Whether reads update `read_weight` and `last_read` (an O(m) pass per
    /// read). On by default for telemetry; eviction policies that rank by
    /// usage need it regardless (see [`MemoryState::record_usage`]).
    pub(crate) usage: bool,
    /// Occupied slots per memory, kept by fills and clears so that asking
    /// costs O(1), not a scan.
    pub(crate) occupied_count: Vec<usize>,
    /// Per memory, (insertion number, slot) of every fill in order, with
    /// stale entries (a slot filled again since) skipped lazily: the oldest
    /// slot in amortised O(1) instead of a scan of every slot (FIFO
    /// eviction at 1e6 slots). Rebuilt from `meta.seq` when it outgrows
    /// twice the slots, so it stays O(slots) under any policy.
    pub(crate) order: Vec<VecDeque<(u64, u32)>>,
    /// Per memory, a min-heap of (gate score in total order, insertion
    /// number, slot) over fills, stale entries skipped lazily: the
    /// lowest-scored slot in O(log slots). Built on the first
    /// `lowest_scored` call (only `lowest_score` eviction pays for it) and
    /// rebuilt when it outgrows twice the slots.
    pub(crate) by_score: Option<Vec<SlotHeap>>,
    /// The same for (last read, insertion number, slot), pushed by fills and
    /// by reads that move a slot's LRU clock: `least_recent`, LRU's victim.
    pub(crate) by_recency: Option<Vec<SlotHeap>>,
    /// A read backend's index over the slots, if it keeps one.
    pub(crate) index: Option<Box<dyn SlotIndex>>,
    /// A saved index read from a snapshot, until a layer's backend restores
    /// it.
    pub(crate) saved_index: Option<Vec<u8>>,
    /// Reduced-precision keys (`keys: f16 | int8`), encoded by the layer
    /// for the slots each write call filled.
    pub(crate) low: Option<retbench_kernels::quant::LowKeys>,
}

/// Host metadata bytes per slot: occupied (1), seq, written_at and last_read
/// (8 each), write_count, read_weight and gate_score (4 each). The
/// insertion order (`order`, 16 bytes an entry, at most 2·slots + 16
/// entries) is auxiliary, like a read index, and not counted here.
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
            gate_counts: vec![(0, 0); batch],
            rng: ChaCha8Rng::from_seed(rng_seed),
            tracked: false,
            config_hash: config_hash.to_string(),
            free_hint: vec![0; batch],
            usage: true,
            occupied_count: vec![0; batch],
            order: vec![VecDeque::new(); batch],
            by_score: None,
            by_recency: None,
            index: None,
            saved_index: None,
            low: None,
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
    /// Per memory, (candidate writes the gate saw, those it passed) so far.
    pub fn gate_counts(&self) -> &[(u64, u64)] {
        &self.gate_counts
    }
    /// Occupied slots of memory `b`.
    pub fn occupied(&self, b: usize) -> usize {
        self.occupied_count[b]
    }
    /// Bytes of memory state per slot: contents, cached keys and metadata.
    pub fn bytes_per_slot(&self) -> usize {
        self.dtype().size_in_bytes() * (self.dim + self.key_dim)
            + META_BYTES_PER_SLOT
            + self
                .low
                .as_ref()
                .map_or(0, |l| l.precision().bytes_per_slot(l.width()))
    }

    /// The rows reads score: cached keys when kept, else the contents.
    pub fn scanned(&self) -> &Tensor {
        self.keys.as_ref().unwrap_or(&self.content)
    }

    /// Reduced-precision keys, when the layer keeps them.
    pub fn low_keys(&self) -> Option<&retbench_kernels::quant::LowKeys> {
        self.low.as_ref()
    }

    /// The lowest free slot of memory `b`, if any (amortised O(1) while filling).
    pub(crate) fn first_free(&mut self, b: usize) -> Option<usize> {
        let m = self.slots;
        let occupied = &self.meta.occupied[b * m..(b + 1) * m];
        let found = (self.free_hint[b]..m).find(|&i| !occupied[i]);
        self.free_hint[b] = found.unwrap_or(m);
        found
    }

    /// Turns usage statistics of reads on or off. Off, a read skips its
    /// O(m) bookkeeping pass (timing probes); policies that evict by usage
    /// (LRU, LFU) keep it on whatever this says.
    pub fn record_usage(&mut self, on: bool) {
        self.usage = on;
    }

    /// The read backend's index, if one is attached.
    pub fn index(&self) -> Option<&dyn SlotIndex> {
        self.index.as_deref()
    }

    /// Detaches the read backend's index (to drive its hooks directly, as
    /// the scaling task's timings do; [`MemoryState::set_index`] puts it
    /// back).
    pub fn take_index(&mut self) -> Option<Box<dyn SlotIndex>> {
        self.index.take()
    }

    /// Attaches a read backend's index (replacing any other).
    pub fn set_index(&mut self, index: Option<Box<dyn SlotIndex>>) {
        self.index = index;
    }

    /// Marks flat slot `f` as freshly written with gate score `score`.
    pub(crate) fn fill_slot(&mut self, f: usize, score: f32) {
        let meta = &mut self.meta;
        if !meta.occupied[f] {
            self.occupied_count[f / self.slots] += 1;
        }
        meta.occupied[f] = true;
        meta.seq[f] = self.clocks.next_seq;
        self.clocks.next_seq += 1;
        meta.written_at[f] = self.clocks.writes;
        meta.write_count[f] = 1;
        meta.last_read[f] = self.clocks.events;
        meta.read_weight[f] = 0.0;
        meta.gate_score[f] = score;
        let (b, m) = (f / self.slots, self.slots);
        self.order[b].push_back((meta.seq[f], (f % m) as u32));
        if self.order[b].len() > 2 * m + 16 {
            self.order[b] = insertion_order(meta, b, m);
        }
        if let Some(heaps) = &mut self.by_score {
            push_bounded(&mut heaps[b], score_key(score), meta, f, m, score_of);
        }
        if let Some(heaps) = &mut self.by_recency {
            push_bounded(&mut heaps[b], meta.last_read[f], meta, f, m, recency_of);
        }
        if let Some(index) = &mut self.index {
            index.on_fill(f);
        }
        if let Some(low) = &mut self.low {
            low.mark_pending(f);
        }
    }

    /// The occupied slot of memory `b` whose fill had the lowest gate score,
    /// ties to the oldest (`lowest_score`'s victim), or None when it is
    /// empty. O(log slots) amortised.
    pub fn lowest_scored(&mut self, b: usize) -> Option<usize> {
        heap_victim(
            &mut self.by_score,
            &self.meta,
            self.batch,
            b,
            self.slots,
            score_of,
        )
    }

    /// The occupied slot of memory `b` read (or filled) longest ago, ties
    /// to the oldest (LRU's victim), or None when it is empty. O(log slots)
    /// amortised.
    pub fn least_recent(&mut self, b: usize) -> Option<usize> {
        heap_victim(
            &mut self.by_recency,
            &self.meta,
            self.batch,
            b,
            self.slots,
            recency_of,
        )
    }

    /// The occupied slot of memory `b` filled longest ago (FIFO's victim),
    /// or None when it is empty. Amortised O(1).
    pub fn oldest(&mut self, b: usize) -> Option<usize> {
        let m = self.slots;
        while let Some(&(seq, i)) = self.order[b].front() {
            let f = b * m + i as usize;
            if self.meta.occupied[f] && self.meta.seq[f] == seq {
                return Some(i as usize);
            }
            self.order[b].pop_front();
        }
        None
    }

    /// Picks the slot memory `b` writes next (a free one, else `policy`'s
    /// victim, counted as an eviction), fills it, and returns its flat index
    /// and whether an occupied slot was overwritten.
    pub(crate) fn take_slot(
        &mut self,
        b: usize,
        policy: &dyn EvictionPolicy,
        score: f32,
    ) -> (usize, bool) {
        if let Some(f) = self.fill_free(b, score) {
            return (f, false);
        }
        // A full memory: the victim is occupied, so this evicts.
        let victim = policy.victim(self, b);
        self.take_addressed(b, victim, score)
    }

    /// Fills slot `i` of memory `b` (a write addressed there), evicting its
    /// content if it has any; returns the flat index and whether it evicted.
    pub(crate) fn take_addressed(&mut self, b: usize, i: usize, score: f32) -> (usize, bool) {
        let f = b * self.slots + i;
        let evicted = self.meta.occupied[f];
        if evicted {
            self.evictions[b] += 1;
            if let Some(index) = &mut self.index {
                index.on_evict(f);
            }
        }
        self.fill_slot(f, score);
        (f, evicted)
    }

    /// Fills the lowest free slot of memory `b`, if there is one, and
    /// returns its flat index.
    pub(crate) fn fill_free(&mut self, b: usize, score: f32) -> Option<usize> {
        let f = b * self.slots + self.first_free(b)?;
        self.fill_slot(f, score);
        Some(f)
    }

    /// The occupied slot of memory `b` with the smallest `key`, ties to the
    /// oldest insertion: what every deterministic eviction policy ranks by.
    /// `key` takes the flat slot index.
    pub fn min_slot_by(&self, b: usize, key: impl Fn(usize) -> f64) -> usize {
        let base = b * self.slots;
        (0..self.slots)
            .min_by(|&i, &j| {
                key(base + i)
                    .total_cmp(&key(base + j))
                    .then(self.meta.seq[base + i].cmp(&self.meta.seq[base + j]))
            })
            .expect("slots ≥ 1")
    }

    /// The memory's seeded generator (random eviction).
    pub(crate) fn rng(&mut self) -> &mut ChaCha8Rng {
        &mut self.rng
    }

    /// Read bookkeeping over the slots a read touched, as (flat slot, read
    /// weight summed over queries and averaged over heads, peak weight):
    /// adds the weight and moves the LRU clock of slots whose peak reached a
    /// uniform share of the `attended(occupied)` slots the read covered.
    pub(crate) fn record_read(
        &mut self,
        usage: impl Iterator<Item = (usize, f32, f32)>,
        attended: impl Fn(usize) -> usize,
    ) {
        self.clocks.events += 1;
        let now = self.clocks.events;
        let m = self.slots;
        let uniform: Vec<Option<f32>> = (0..self.batch)
            .map(|bi| match attended(self.occupied(bi)) {
                0 => None,
                n => Some(1.0 / n as f32),
            })
            .collect();
        for (f, total, peak) in usage {
            let Some(uniform) = uniform[f / m] else {
                continue;
            };
            self.meta.read_weight[f] += total;
            if self.meta.occupied[f] && peak >= uniform {
                self.meta.last_read[f] = now;
                if let Some(heaps) = &mut self.by_recency {
                    push_bounded(&mut heaps[f / m], now, &self.meta, f, m, recency_of);
                }
            }
        }
    }

    /// Telemetry of an attention write's content blend: a slot counts as
    /// written when it got more than a uniform share `rate/occupied` of the
    /// write weight (`share` [B·m]), and its age restarts at half the rate.
    pub(crate) fn record_blend(&mut self, share: &[f32], occupied_before: &[bool], rate: f32) {
        let m = self.slots;
        for bi in 0..self.batch {
            let count = occupied_before[bi * m..(bi + 1) * m]
                .iter()
                .filter(|&&o| o)
                .count();
            if count == 0 {
                continue;
            }
            let uniform = rate / count as f32;
            for i in 0..m {
                let f = bi * m + i;
                if occupied_before[f] && share[f] > uniform {
                    self.meta.write_count[f] += 1;
                    if share[f] >= 0.5 * rate {
                        self.meta.written_at[f] = self.clocks.writes;
                    }
                }
            }
        }
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
        self.gate_counts = vec![(0, 0); self.batch];
        self.free_hint = vec![0; self.batch];
        self.occupied_count = vec![0; self.batch];
        self.order = vec![VecDeque::new(); self.batch];
        for heaps in [&mut self.by_score, &mut self.by_recency] {
            if heaps.is_some() {
                *heaps = Some(vec![SlotHeap::new(); self.batch]);
            }
        }
        if let Some(index) = &mut self.index {
            index.on_clear();
        }
        if let Some(low) = &mut self.low {
            low.clear_pending();
        }
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
            gate_counts: self.gate_counts.clone(),
            rng: self.rng.clone(),
            tracked: self.tracked,
            config_hash: self.config_hash.clone(),
            free_hint: self.free_hint.clone(),
            usage: self.usage,
            occupied_count: self.occupied_count.clone(),
            order: self.order.clone(),
            by_score: self.by_score.clone(),
            by_recency: self.by_recency.clone(),
            index: self.index.as_ref().map(|i| i.box_clone()),
            saved_index: self.saved_index.clone(),
            low: self.low.clone(),
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

/// A min-heap of (key, insertion number, slot) over a memory's fills, with
/// stale entries (the slot refilled, freed, or its key moved since) left in
/// place and skipped when they reach the top.
pub(crate) type SlotHeap = BinaryHeap<Reverse<(u64, u64, u32)>>;

/// `x` in the order of `f32::total_cmp`.
fn score_key(x: f32) -> u64 {
    let bits = x.to_bits();
    (if bits >> 31 == 1 {
        !bits
    } else {
        bits | 1 << 31
    }) as u64
}

/// The heap key of flat slot `f` by gate score (`lowest_score`).
fn score_of(meta: &SlotMeta, f: usize) -> u64 {
    score_key(meta.gate_score[f])
}

/// The heap key of flat slot `f` by last read (LRU).
fn recency_of(meta: &SlotMeta, f: usize) -> u64 {
    meta.last_read[f]
}

/// Memory `b`'s occupied slots by (`key`, insertion number).
fn slot_heap(meta: &SlotMeta, b: usize, m: usize, key: fn(&SlotMeta, usize) -> u64) -> SlotHeap {
    (0..m)
        .map(|i| b * m + i)
        .filter(|&f| meta.occupied[f])
        .map(|f| Reverse((key(meta, f), meta.seq[f], (f % m) as u32)))
        .collect()
}

/// Pushes flat slot `f` with `k`; rebuilds the heap from the slots when
/// it outgrows twice their number.
fn push_bounded(
    heap: &mut SlotHeap,
    k: u64,
    meta: &SlotMeta,
    f: usize,
    m: usize,
    key: fn(&SlotMeta, usize) -> u64,
) {
    heap.push(Reverse((k, meta.seq[f], (f % m) as u32)));
    if heap.len() > 2 * m + 16 {
        *heap = slot_heap(meta, f / m, m, key);
    }
}

/// The slot at the top of memory `b`'s heap once stale entries are popped,
/// building every memory's heap by `key` on first use.
fn heap_victim(
    heaps: &mut Option<Vec<SlotHeap>>,
    meta: &SlotMeta,
    batch: usize,
    b: usize,
    m: usize,
    key: fn(&SlotMeta, usize) -> u64,
) -> Option<usize> {
    let heap = &mut heaps
        .get_or_insert_with(|| (0..batch).map(|bi| slot_heap(meta, bi, m, key)).collect())[b];
    while let Some(&Reverse((k, seq, i))) = heap.peek() {
        let f = b * m + i as usize;
        if meta.occupied[f] && meta.seq[f] == seq && key(meta, f) == k {
            return Some(i as usize);
        }
        heap.pop();
    }
    None
}

/// Memory `b`'s occupied slots as (insertion number, slot), oldest first.
pub(crate) fn insertion_order(meta: &SlotMeta, b: usize, m: usize) -> VecDeque<(u64, u32)> {
    let mut order: Vec<(u64, u32)> = (0..m)
        .filter(|&i| meta.occupied[b * m + i])
        .map(|i| (meta.seq[b * m + i], i as u32))
        .collect();
    order.sort_unstable();
    order.into()
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::evict::{Fifo, LowestScore, Lru, Random};
    use rand::Rng;

    /// The kept insertion order and heaps give the slots a full scan would
    /// (the occupied slot with the smallest insertion number; the one with
    /// the lowest gate score, or read longest ago, ties to the oldest) after
    /// any mix of FIFO, lowest-score, LRU and random evictions, reads and
    /// clears, and stay within their bounds.
    #[test]
    fn the_oldest_slot_matches_a_scan_under_any_eviction_mix() {
        let (b, m) = (2, 5);
        let mut mem =
            MemoryState::empty(b, m, 4, 0, "t", [7; 32], DType::F32, &Device::Cpu).unwrap();
        let mut rng = crate::rng::stream("order", 0, "ops");
        for step in 0..2000 {
            let bi = rng.random_range(0..b);
            match rng.random_range(0..20) {
                0 => mem.clear().unwrap(),
                // Scores with ties and negatives: ties go to the oldest.
                1..=7 => {
                    let score = rng.random_range(-2..3) as f32 * 0.5;
                    mem.take_slot(bi, &Fifo, score);
                }
                8..=12 => {
                    let score = rng.random_range(-2..3) as f32 * 0.5;
                    mem.take_slot(bi, &LowestScore, score);
                }
                13..=15 => {
                    mem.take_slot(bi, &Lru, 1.0);
                }
                16..=17 => {
                    // A read touching some slots; those whose peak reaches a
                    // uniform share move their LRU clock.
                    let mut touched: Vec<(usize, f32, f32)> = Vec::new();
                    for i in 0..m {
                        if rng.random_range(0..2) == 0 {
                            let peak = rng.random_range(0..10) as f32 / 10.0;
                            touched.push((bi * m + i, 0.1, peak));
                        }
                    }
                    mem.record_read(touched.into_iter(), |n| n);
                }
                _ => {
                    mem.take_slot(bi, &Random, 1.0);
                }
            }
            for bj in 0..b {
                let scan = (mem.occupied(bj) > 0).then(|| {
                    (0..m)
                        .filter(|&i| mem.meta.occupied[bj * m + i])
                        .min_by_key(|&i| mem.meta.seq[bj * m + i])
                        .unwrap()
                });
                assert_eq!(mem.oldest(bj), scan, "step {step}, memory {bj}");
                assert!(mem.order[bj].len() <= 2 * m + 17);
                let meta = &mem.meta;
                let by_score = (0..m)
                    .filter(|&i| meta.occupied[bj * m + i])
                    .min_by(|&i, &j| {
                        let (f, g) = (bj * m + i, bj * m + j);
                        (meta.gate_score[f].total_cmp(&meta.gate_score[g]))
                            .then(meta.seq[f].cmp(&meta.seq[g]))
                    });
                assert_eq!(mem.lowest_scored(bj), by_score, "step {step}, memory {bj}");
                let meta = &mem.meta;
                let by_recency = (0..m)
                    .filter(|&i| meta.occupied[bj * m + i])
                    .min_by_key(|&i| (meta.last_read[bj * m + i], meta.seq[bj * m + i]));
                assert_eq!(mem.least_recent(bj), by_recency, "step {step}, memory {bj}");
                assert!(mem.by_recency.as_ref().unwrap()[bj].len() <= 2 * m + 17);
                let heap = &mem.by_score.as_ref().unwrap()[bj];
                assert!(heap.len() <= 2 * m + 17);
            }
        }
    }
}
