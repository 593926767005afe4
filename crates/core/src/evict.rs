//! Eviction policies: which occupied slot an append overwrites when memory is
//! full. Each policy is a small [`EvictionPolicy`] (the trait lives with the
//! memory that calls it, so this module depends on `memory` and not back); the memory calls it only
//! when no slot is free, and ties fall to the oldest insertion so that every
//! policy but `random` is deterministic.

use rand::Rng;

pub use crate::memory::EvictionPolicy;
use crate::memory::MemoryState;

/// The slot written longest ago.
#[derive(Debug)]
pub struct Fifo;

impl EvictionPolicy for Fifo {
    fn name(&self) -> &'static str {
        "fifo"
    }
    fn victim(&self, mem: &mut MemoryState, b: usize) -> usize {
        // The insertion order kept by the memory: O(1), not a scan.
        mem.oldest(b).unwrap_or(0)
    }
}

/// The slot read (or written) longest ago.
#[derive(Debug)]
pub struct Lru;

impl EvictionPolicy for Lru {
    fn name(&self) -> &'static str {
        "lru"
    }
    fn victim(&self, mem: &mut MemoryState, b: usize) -> usize {
        // A heap the memory keeps once asked: O(log m), not a scan.
        // An empty memory has no victim to rank; any slot will do.
        mem.least_recent(b).unwrap_or(0)
    }
    fn needs_usage(&self) -> bool {
        true
    }
}

/// The slot with the least cumulative read weight.
#[derive(Debug)]
pub struct Lfu;

impl EvictionPolicy for Lfu {
    fn name(&self) -> &'static str {
        "lfu"
    }
    fn victim(&self, mem: &mut MemoryState, b: usize) -> usize {
        let meta = mem.meta();
        mem.min_slot_by(b, |f| meta.read_weight[f] as f64)
    }
    fn needs_usage(&self) -> bool {
        true
    }
}

/// The slot whose write had the lowest gate score.
#[derive(Debug)]
pub struct LowestScore;

impl EvictionPolicy for LowestScore {
    fn name(&self) -> &'static str {
        "lowest_score"
    }
    fn victim(&self, mem: &mut MemoryState, b: usize) -> usize {
        // A heap the memory keeps once asked: O(log m), not a scan.
        // An empty memory has no victim to rank; any slot will do.
        mem.lowest_scored(b).unwrap_or(0)
    }
}

/// A uniformly random slot, from the memory's own seeded generator (so it
/// is saved and restored with snapshots).
#[derive(Debug)]
pub struct Random;

impl EvictionPolicy for Random {
    fn name(&self) -> &'static str {
        "random"
    }
    fn victim(&self, mem: &mut MemoryState, _b: usize) -> usize {
        let m = mem.slots();
        mem.rng().random_range(0..m)
    }
}
