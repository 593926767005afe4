//! The paper's read: softmax over every occupied slot, O(m) per query.

use candle_nn::VarBuilder;

use super::{ReadBackend, ReadQuery, ReadRecipe, Selection};
use crate::config::RetentionConfig;
use crate::error::{ConfigError, Result};

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

impl ReadRecipe for Dense {
    fn check(&self, _cfg: &RetentionConfig) -> std::result::Result<(), ConfigError> {
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
