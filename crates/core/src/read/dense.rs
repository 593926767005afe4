//! The paper's read: softmax over every occupied slot, O(m) per query.

use super::{ReadBackend, ReadQuery, Selection};
use crate::error::Result;

#[derive(Debug)]
pub struct Dense;

impl ReadBackend for Dense {
    fn name(&self) -> &'static str {
        "dense"
    }

    fn select(&self, query: &mut ReadQuery<'_>) -> Result<Selection> {
        query.all_scores()?;
        Ok(Selection::Occupied)
    }
}
