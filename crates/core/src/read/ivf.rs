//! The `ivf` read: approximate top-k through an inverted-file index over the
//! cached keys that follows inserts and evictions without a rebuild — an
//! answer to open question 3 for append memories (docs/ARCHITECTURE.md,
//! "Reads at scale"). It needs `keys: cached`: clustering raw contents
//! would mix in the components keys ignore (measured: recall@32 0.18 at
//! probe 8 of 1000 lists over contents of the scaling task's 1e6 slots).
//!
//! Rows are clustered by spherical k-means (unit centroids, inner-product
//! assignment, as FAISS's IVF does for inner products) into `lists`
//! inverted lists, each holding its slot ids and contiguous int8 codes of
//! their keys (per-row scale, as `keys: int8`; FAISS calls this IVF-SQ8). A
//! read scores the centroids, scans the `probe` best lists' codes for
//! `read::RERANK`·k candidates and re-ranks those exactly against the
//! cached f32 keys in memory. A fill assigns the new row to its best centroid
//! and appends it; an eviction swap-removes it (O(width)). Clustering waits
//! until a memory holds [`TRAIN_PER_LIST`] rows per list (or is full), and
//! is redone when the inserts since the last clustering reach
//! [`RETRAIN`] times the rows it saw, so the centroids follow a memory that
//! grows or turns over. Until a memory is clustered, reads are exact.
//! Attention writes blend into every slot and are refused with this read.

use std::any::Any;

use candle_core::{DType, Tensor};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use candle_nn::VarBuilder;

use super::{ReadBackend, ReadQuery, ReadRecipe, Selection};
use crate::config::{RetentionConfig, WriteKind};
use crate::error::{ConfigError, Result};
use crate::memory::{MemoryState, SlotIndex};
use retbench_kernels::scan::{self, Rows};

/// Rows per list a memory holds before it is first clustered.
pub const TRAIN_PER_LIST: usize = 32;
/// Rows per list sampled to fit centroids.
pub const SAMPLE_PER_LIST: usize = 64;
/// Lloyd iterations per clustering.
pub const KMEANS_ITERS: usize = 10;
/// Recluster when inserts since the last clustering reach this many times
/// the rows it was fitted on.
pub const RETRAIN: usize = 3;

/// Approximate top-k reads through an inverted-file index.
#[derive(Debug, Clone)]
pub struct Ivf {
    pub k: usize,
    pub lists: usize,
    pub probe: usize,
}

impl Ivf {
    /// Lists for a memory of `slots` slots when the config names none:
    /// √slots (FAISS's rule of thumb is 1–16·√n), at least 1.
    pub fn default_lists(slots: usize) -> usize {
        ((slots as f64).sqrt().round() as usize).max(1)
    }

    /// The read a config names: `lists` defaults to
    /// [`Ivf::default_lists`].
    pub fn new(k: usize, lists: Option<usize>, probe: usize, slots: usize) -> Self {
        Ivf {
            k,
            lists: lists.unwrap_or_else(|| Ivf::default_lists(slots)),
            probe,
        }
    }
}

impl ReadRecipe for Ivf {
    fn check(&self, cfg: &RetentionConfig) -> std::result::Result<(), ConfigError> {
        let bad = |field: &str, message: String| {
            Err(ConfigError::Invalid {
                field: field.into(),
                message,
            })
        };
        super::check_k(self.k, cfg.slots)?;
        if self.lists == 0 || self.lists > cfg.slots {
            let (lists, slots) = (self.lists, cfg.slots);
            return bad(
                "read.lists",
                format!("must be in 1..={slots} (slots), got {lists}"),
            );
        }
        if self.probe == 0 {
            return bad("read.probe", "must be at least 1".into());
        }
        if !cfg.keys.cached() {
            return bad(
                "read.kind",
                "ivf indexes cached keys (set `keys: cached`): recomputed keys change \
                 with W_K, and clustering raw contents mixes in what keys ignore"
                    .into(),
            );
        }
        if matches!(cfg.write.kind, WriteKind::Attention { .. }) {
            return bad(
                "read.kind",
                "ivf indexes append memories; an attention write blends into every slot \
                 and would invalidate the index at each write (use topk)"
                    .into(),
            );
        }
        Ok(())
    }

    fn build(
        self: Box<Self>,
        _cfg: &RetentionConfig,
        _d_model: usize,
        _vb: &VarBuilder,
    ) -> Result<Box<dyn ReadBackend>> {
        Ok(self)
    }
}

impl ReadBackend for Ivf {
    fn name(&self) -> &'static str {
        "ivf"
    }

    fn k(&self) -> Option<usize> {
        Some(self.k)
    }

    fn select(&self, query: &mut ReadQuery<'_>) -> Result<Selection> {
        let mem = query.memory();
        let index = mem
            .index()
            .and_then(|i| i.as_any().downcast_ref::<IvfIndex>());
        let Some(index) = index.filter(|i| i.ready()) else {
            return query.top_k(self.k);
        };
        let k = self.k;
        let Some(sq) = query.scan_queries()? else {
            return query.top_k(k);
        };
        if sq.width != index.width {
            return query.top_k(k);
        }
        let scanned = mem.scanned();
        let (storage, layout) = scanned.storage_and_layout();
        let Some(all) = retbench_kernels::storage_f32(&storage, layout) else {
            return query.top_k(k);
        };
        let (m, w) = (mem.slots(), sq.width);
        let mut slots = Vec::new();
        for (b, qrows) in sq.rows.iter().enumerate() {
            let rows = &all[b * m * w..(b + 1) * m * w];
            for q in qrows.chunks_exact(w) {
                slots.extend(index.search(b, q, k, self.probe, rows));
            }
        }
        Ok(Selection::Rows { k, slots })
    }

    fn attended(&self, occupied: usize) -> usize {
        self.k.min(occupied)
    }

    fn new_index(&self, mem: &MemoryState) -> Option<Box<dyn SlotIndex>> {
        let seed = crate::rng::stream_seed(mem.config_hash(), 0, "read/ivf");
        Some(Box::new(IvfIndex::new(
            mem.batch(),
            mem.slots(),
            self.lists.min(mem.slots()),
            seed,
            &mem.meta().occupied,
        )))
    }
}

/// No list: a slot that is not indexed.
const NOWHERE: (u32, u32) = (u32::MAX, u32::MAX);

/// One memory's lists.
#[derive(Debug, Clone, Default)]
struct Inverted {
    /// lists × width unit centroids; empty until clustered.
    centroids: Vec<f32>,
    ids: Vec<Vec<u32>>,
    /// Per list, int8 codes of its rows (width each), their scales and
    /// code sums.
    codes: Vec<Vec<i8>>,
    scales: Vec<Vec<f32>>,
    sums: Vec<Vec<i32>>,
    /// Rows the last clustering was fitted on, and inserts since.
    fitted_on: usize,
    inserts: usize,
}

/// The inverted lists of a batch of memories, kept in step with their
/// slots through the [`SlotIndex`] hooks.
#[derive(Debug, Clone)]
pub struct IvfIndex {
    m: usize,
    lists: usize,
    seed: [u8; 32],
    /// Row width, known from the first refresh.
    width: usize,
    mems: Vec<Inverted>,
    /// Per flat slot: (list, position) or [`NOWHERE`].
    place: Vec<(u32, u32)>,
    live: Vec<bool>,
    live_count: Vec<usize>,
    /// Flat slots filled since the last refresh.
    pending: Vec<usize>,
    /// Clusterings so far (each draws its sample from its own stream).
    pub clusterings: u64,
}

impl IvfIndex {
    fn new(batch: usize, m: usize, lists: usize, seed: [u8; 32], occupied: &[bool]) -> Self {
        let live = occupied.to_vec();
        let live_count = (0..batch)
            .map(|b| live[b * m..(b + 1) * m].iter().filter(|&&o| o).count())
            .collect();
        IvfIndex {
            m,
            lists: lists.max(1),
            seed,
            width: 0,
            mems: vec![Inverted::default(); batch],
            place: vec![NOWHERE; batch * m],
            pending: (0..batch * m).filter(|&f| live[f]).collect(),
            live,
            live_count,
            clusterings: 0,
        }
    }

    /// Whether every memory is clustered and indexed up to date.
    pub fn ready(&self) -> bool {
        self.pending.is_empty() && self.mems.iter().all(|m| !m.centroids.is_empty())
    }

    /// The slots of memory `b` its lists hold, list by list.
    pub fn listed(&self, b: usize) -> Vec<u32> {
        self.mems[b].ids.iter().flatten().copied().collect()
    }

    /// Lists per memory.
    pub fn lists(&self) -> usize {
        self.lists
    }

    /// Bytes the index holds beside the memory: centroids, list rows and
    /// ids, slot places and flags.
    pub fn bytes(&self) -> usize {
        let lists: usize = self
            .mems
            .iter()
            .map(|m| {
                4 * m.centroids.len()
                    + m.codes.iter().map(|c| c.capacity()).sum::<usize>()
                    + m.scales.iter().map(|c| 4 * c.capacity()).sum::<usize>()
                    + m.sums.iter().map(|c| 4 * c.capacity()).sum::<usize>()
                    + m.ids.iter().map(|i| 4 * i.capacity()).sum::<usize>()
            })
            .sum();
        lists + 8 * self.place.len() + self.live.len()
    }

    fn remove(&mut self, f: usize) {
        let (l, pos) = self.place[f];
        if (l, pos) == NOWHERE {
            return;
        }
        let (l, pos, w) = (l as usize, pos as usize, self.width);
        let inv = &mut self.mems[f / self.m];
        let ids = &mut inv.ids[l];
        let codes = &mut inv.codes[l];
        let last = ids.len() - 1;
        ids.swap_remove(pos);
        inv.scales[l].swap_remove(pos);
        inv.sums[l].swap_remove(pos);
        if pos != last {
            codes.copy_within(last * w..(last + 1) * w, pos * w);
            let moved = ids[pos] as usize + (f / self.m) * self.m;
            self.place[moved] = (l as u32, pos as u32);
        }
        codes.truncate(last * w);
        self.place[f] = NOWHERE;
    }

    /// Best centroid of each row of `rows` (n × width) by inner product
    /// (ties to the lower list).
    fn assign(centroids: &[f32], lists: usize, rows: &[f32], w: usize) -> Vec<u32> {
        const BLOCK: usize = 512;
        if rows.len() < 8 * w {
            // A few rows (a write's inserts): one scan each, no matrix
            // product to set up.
            let c = Rows {
                keys: centroids,
                key_width: w,
                values: centroids,
                value_width: w,
                occupied: None,
            };
            return rows
                .chunks_exact(w)
                .map(|r| scan::top_k(r, 1, c, 1)[0])
                .collect();
        }
        let mut s = vec![0f32; BLOCK * lists];
        let mut out = Vec::with_capacity(rows.len() / w);
        for block in rows.chunks(BLOCK * w) {
            let n = block.len() / w;
            scan::products(block, n, centroids, lists, w, &mut s);
            for r in 0..n {
                let row = &s[r * lists..(r + 1) * lists];
                let mut best = 0;
                for (l, &x) in row.iter().enumerate() {
                    if x > row[best] {
                        best = l;
                    }
                }
                out.push(best as u32);
            }
        }
        out
    }

    fn insert(&mut self, f: usize, list: u32, row: &[f32]) {
        let inv = &mut self.mems[f / self.m];
        let l = list as usize;
        self.place[f] = (list, inv.ids[l].len() as u32);
        inv.ids[l].push((f % self.m) as u32);
        let at = inv.codes[l].len();
        inv.codes[l].resize(at + row.len(), 0);
        let (scale, sum) = retbench_kernels::quant::encode_int8(row, &mut inv.codes[l][at..]);
        inv.scales[l].push(scale);
        inv.sums[l].push(sum);
    }

    /// Fits memory `b`'s centroids to a sample of its rows and lists every
    /// row anew.
    fn cluster(&mut self, b: usize, all: &[f32]) {
        let (m, w, lists) = (self.m, self.width, self.lists);
        let own = &all[b * m * w..(b + 1) * m * w];
        let slots: Vec<usize> = (0..m).filter(|&i| self.live[b * m + i]).collect();
        let mut rng = ChaCha8Rng::from_seed(self.seed);
        rng.set_stream(self.clusterings);
        self.clusterings += 1;
        // A uniform sample without replacement (partial Fisher–Yates).
        let mut sample = slots.clone();
        let n = sample.len().min(SAMPLE_PER_LIST * lists);
        for i in 0..n {
            let j = rng.random_range(i..sample.len());
            sample.swap(i, j);
        }
        sample.truncate(n);
        sample.sort_unstable();
        let data: Vec<f32> = sample
            .iter()
            .flat_map(|&i| own[i * w..(i + 1) * w].iter().copied())
            .collect();
        let mut centroids: Vec<f32> = (0..lists)
            .flat_map(|c| data[(c % n.max(1)) * w..(c % n.max(1) + 1) * w].to_vec())
            .collect();
        normalise(&mut centroids, w);
        for _ in 0..KMEANS_ITERS {
            let labels = Self::assign(&centroids, lists, &data, w);
            let mut sums = vec![0f32; lists * w];
            let mut counts = vec![0usize; lists];
            for (r, &l) in labels.iter().enumerate() {
                let l = l as usize;
                counts[l] += 1;
                sums[l * w..(l + 1) * w]
                    .iter_mut()
                    .zip(&data[r * w..(r + 1) * w])
                    .for_each(|(s, x)| *s += x);
            }
            for l in 0..lists {
                if counts[l] == 0 {
                    // An empty list restarts at a random sample row.
                    let r = rng.random_range(0..n.max(1));
                    sums[l * w..(l + 1) * w].copy_from_slice(&data[r * w..(r + 1) * w]);
                }
            }
            normalise(&mut sums, w);
            centroids = sums;
        }
        for &i in &slots {
            self.place[b * m + i] = NOWHERE;
        }
        let inv = &mut self.mems[b];
        inv.centroids = centroids;
        inv.ids = vec![Vec::new(); lists];
        inv.codes = vec![Vec::new(); lists];
        inv.scales = vec![Vec::new(); lists];
        inv.sums = vec![Vec::new(); lists];
        inv.fitted_on = slots.len();
        inv.inserts = 0;
        self.add(b, &slots, own);
    }

    /// Lists slots `slots` of memory `b` (rows in `own`).
    fn add(&mut self, b: usize, slots: &[usize], own: &[f32]) {
        let w = self.width;
        let rows: Vec<f32> = slots
            .iter()
            .flat_map(|&i| own[i * w..(i + 1) * w].iter().copied())
            .collect();
        let labels = Self::assign(&self.mems[b].centroids, self.lists, &rows, w);
        for ((&i, &l), row) in slots.iter().zip(&labels).zip(rows.chunks_exact(w)) {
            self.insert(b * self.m + i, l, row);
        }
    }

    /// The k best slots of memory `b` for query `q` among its `probe` best
    /// lists, in increasing slot order, padded: `RERANK`·k candidates by
    /// their codes, re-ranked exactly against `rows` (memory `b`'s f32 key
    /// rows).
    pub fn search(&self, b: usize, q: &[f32], k: usize, probe: usize, rows: &[f32]) -> Vec<u32> {
        let (inv, w) = (&self.mems[b], self.width);
        let centroids = Rows {
            keys: &inv.centroids,
            key_width: w,
            values: &inv.centroids,
            value_width: w,
            occupied: None,
        };
        let lists = scan::top_k(q, 1, centroids, probe.min(self.lists));
        let prepared = if w <= 128 {
            retbench_kernels::quant::quantise_query(q)
        } else {
            scan::Prepared::default()
        };
        let mut pick = scan::Selector::new(super::RERANK * k);
        let mut s = [0f32; 64];
        for &l in lists.iter().filter(|&&l| l != u32::MAX) {
            let l = l as usize;
            let ids = &inv.ids[l];
            for start in (0..ids.len()).step_by(64) {
                let end = (start + 64).min(ids.len());
                let s = &mut s[..end - start];
                scan::int8_block_scores(
                    q,
                    &prepared,
                    &inv.codes[l][start * w..end * w],
                    &inv.sums[l][start..end],
                    &inv.scales[l][start..end],
                    w,
                    s,
                );
                pick.offer(s, &ids[start..end]);
            }
        }
        scan::rerank(q, 1, rows, w, &pick.finish(), k)
    }
}

fn normalise(rows: &mut [f32], w: usize) {
    for r in rows.chunks_exact_mut(w) {
        let n = r.iter().map(|x| x * x).sum::<f32>().sqrt();
        if n > 0.0 {
            r.iter_mut().for_each(|x| *x /= n);
        }
    }
}

impl SlotIndex for IvfIndex {
    fn on_fill(&mut self, f: usize) {
        self.remove(f);
        if !self.live[f] {
            self.live[f] = true;
            self.live_count[f / self.m] += 1;
        }
        self.pending.push(f);
    }

    fn on_evict(&mut self, f: usize) {
        self.remove(f);
        if self.live[f] {
            self.live[f] = false;
            self.live_count[f / self.m] -= 1;
        }
    }

    fn on_clear(&mut self) {
        let batch = self.mems.len();
        self.mems = vec![Inverted::default(); batch];
        self.place.fill(NOWHERE);
        self.live.fill(false);
        self.live_count.fill(0);
        self.pending.clear();
    }

    fn refresh(&mut self, rows: &Tensor) -> Result<()> {
        let (_, m, w) = rows.dims3()?;
        debug_assert_eq!(m, self.m);
        if self.width != w {
            // First sight of the rows (or a new width): start over.
            self.width = w;
            let batch = self.mems.len();
            self.mems = vec![Inverted::default(); batch];
            self.place.fill(NOWHERE);
            self.pending = (0..self.live.len()).filter(|&f| self.live[f]).collect();
        }
        if self.pending.is_empty() {
            return Ok(());
        }
        let (storage, layout) = rows.storage_and_layout();
        let copied;
        let all: &[f32] = match retbench_kernels::storage_f32(&storage, layout) {
            Some(v) => v,
            None => {
                copied = rows.to_dtype(DType::F32)?.flatten_all()?.to_vec1::<f32>()?;
                &copied
            }
        };
        let mut pending = std::mem::take(&mut self.pending);
        pending.sort_unstable();
        pending.dedup();
        for b in 0..self.mems.len() {
            let lo = pending.partition_point(|&f| f < b * m);
            let hi = pending.partition_point(|&f| f < (b + 1) * m);
            let fresh: Vec<usize> = pending[lo..hi]
                .iter()
                .filter(|&&f| self.live[f])
                .map(|&f| f - b * m)
                .collect();
            let inv = &self.mems[b];
            let live = self.live_count[b];
            let clustered = !inv.centroids.is_empty();
            if !clustered {
                if live >= (TRAIN_PER_LIST * self.lists).min(m) {
                    self.cluster(b, all);
                }
            } else if inv.inserts + fresh.len() >= RETRAIN * inv.fitted_on.max(1) {
                self.cluster(b, all);
            } else if !fresh.is_empty() {
                self.mems[b].inserts += fresh.len();
                self.add(b, &fresh, &all[b * m * w..(b + 1) * m * w]);
            }
        }
        // Memories still too small to cluster keep their slots pending.
        self.pending = pending
            .into_iter()
            .filter(|&f| self.live[f] && self.place[f] == NOWHERE)
            .collect();
        Ok(())
    }

    fn box_clone(&self) -> Box<dyn SlotIndex> {
        Box::new(self.clone())
    }

    fn bytes(&self) -> Option<usize> {
        Some(IvfIndex::bytes(self))
    }

    fn as_any(&self) -> &dyn Any {
        self
    }
}
