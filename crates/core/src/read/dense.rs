//! The paper's read: softmax over every occupied slot, O(m) per query.

use super::{ReadBackend, ReadQuery, Selection};
use crate::error::Result;

#[derive(Debug)]
pub struct Dense;

impl ReadBackend for Dense {
    fn name(&self) -> &'static str {
        "dense"
    }

    fn select(&self, _query: &mut ReadQuery<'_>) -> Result<Selection> {
        // Every occupied slot, whatever the scores: the layer computes them
        // where it needs them (or never, on the fused path).
        Ok(Selection::Occupied)
    }
}
