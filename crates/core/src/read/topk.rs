//! Exact top-k: the k best-scoring occupied slots of each query, selected on
//! the host in O(m) per query (`select_nth_unstable`), softmax over those.
//! Gradients reach Q, K and V through the selected slots.

use super::{ReadBackend, ReadQuery, Selection};
use crate::error::Result;

#[derive(Debug)]
pub struct TopK {
    pub k: usize,
}

impl ReadBackend for TopK {
    fn name(&self) -> &'static str {
        "topk"
    }

    fn attended(&self, occupied: usize) -> usize {
        occupied.min(self.k)
    }

    fn select(&self, query: &mut ReadQuery<'_>) -> Result<Selection> {
        query.top_k(self.k)
    }
}
