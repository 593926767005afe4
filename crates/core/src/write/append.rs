//! Option A: each candidate the gate lets through takes a free slot, or
//! evicts one chosen by the eviction policy. O(d) per write into a detached
//! memory, plus the policy's choice. Under a read that addresses writes
//! (product keys), the candidate goes to the slot its key addresses.

use std::collections::BTreeMap;

use super::{Candidates, WriteBackend, put_rows};
use super::{WriteContext, WriteReport};
use crate::error::Result;
use crate::evict::EvictionPolicy;
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
        layer: &dyn WriteContext,
        mem: &mut MemoryState,
        c: &Candidates<'_>,
        report: &mut WriteReport,
    ) -> Result<()> {
        let (b, n, _) = c.v.dims3()?;
        // A read that addresses writes (product keys) places each candidate
        // in the slot its key picks; the eviction policy is not consulted.
        let addressed = layer.address_writes(&|| layer.key_rows(c.v))?;
        // Target flat slot -> source flat candidate; a later candidate that
        // lands on the same slot (more candidates than slots) wins.
        let mut targets: BTreeMap<u32, u32> = BTreeMap::new();
        for bi in 0..b {
            for j in 0..n {
                let k = bi * n + j;
                if !c.pass[k] {
                    continue;
                }
                let (f, evicted) = match &addressed {
                    Some(slots) => mem.take_addressed(bi, slots[k], c.scores[k]),
                    None => mem.take_slot(bi, self.evict.as_ref(), c.scores[k]),
                };
                report.evicted += evicted as usize;
                targets.insert(f as u32, k as u32);
                report.written += 1;
            }
        }
        let (dst, src): (Vec<u32>, Vec<u32>) = targets.into_iter().unzip();
        put_rows(layer, mem, c.v, &dst, src, 1.0)
    }
}
