//! Option A: each candidate the gate lets through takes a free slot, or
//! evicts one chosen by the eviction policy. O(d) per write into a detached
//! memory, plus the policy's choice.

use std::collections::BTreeMap;

use super::{Candidates, WriteBackend, put_rows};
use crate::error::Result;
use crate::evict::EvictionPolicy;
use crate::layer::{RetentionLayer, WriteReport};
use crate::memory::MemoryState;

#[derive(Debug)]
pub struct Append {
    pub evict: Box<dyn EvictionPolicy>,
}

impl WriteBackend for Append {
    fn name(&self) -> &'static str {
        "append"
    }

    fn eviction(&self) -> Option<&dyn EvictionPolicy> {
        Some(self.evict.as_ref())
    }

    fn write(
        &self,
        layer: &RetentionLayer,
        mem: &mut MemoryState,
        c: &Candidates<'_>,
        report: &mut WriteReport,
    ) -> Result<()> {
        let (b, n, _) = c.v.dims3()?;
        // Target flat slot -> source flat candidate; a later candidate that
        // lands on the same slot (more candidates than slots) wins.
        let mut targets: BTreeMap<u32, u32> = BTreeMap::new();
        for bi in 0..b {
            for j in 0..n {
                let k = bi * n + j;
                if !c.pass[k] {
                    continue;
                }
                let (f, evicted) = mem.take_slot(bi, self.evict.as_ref(), c.scores[k]);
                report.evicted += evicted as usize;
                targets.insert(f as u32, k as u32);
                report.written += 1;
            }
        }
        let (dst, src): (Vec<u32>, Vec<u32>) = targets.into_iter().unzip();
        put_rows(layer, mem, c.v, &dst, src, 1.0)
    }
}
