//! Exact top-k: the k best-scoring occupied slots of each query, selected on
//! the host in O(m) per query (`select_nth_unstable`), softmax over those.
//! Gradients reach Q, K and V through the selected slots.

use candle_nn::VarBuilder;

use super::{ReadBackend, ReadQuery, ReadRecipe, Selection};
use crate::config::RetentionConfig;
use crate::error::{ConfigError, Result};

#[derive(Debug)]
pub struct TopK {
    pub k: usize,
}

impl ReadBackend for TopK {
    fn name(&self) -> &'static str {
        "topk"
    }

    fn k(&self) -> Option<usize> {
        Some(self.k)
    }

    fn attended(&self, occupied: usize) -> usize {
        occupied.min(self.k)
    }

    fn select(&self, query: &mut ReadQuery<'_>) -> Result<Selection> {
        #[cfg(feature = "degraded-topk")]
        return degraded(self.k, query);
        #[cfg(not(feature = "degraded-topk"))]
        query.top_k(self.k)
    }
}

impl ReadRecipe for TopK {
    fn check(&self, cfg: &RetentionConfig) -> std::result::Result<(), ConfigError> {
        super::check_k(self.k, cfg.slots)
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

/// A deliberately broken top-k for checking that regression tracking
/// catches a bad backend (`--features degraded-topk`, never a release):
/// k occupied slots per query row drawn at random, ignoring the scores.
#[cfg(feature = "degraded-topk")]
fn degraded(k: usize, query: &mut ReadQuery<'_>) -> Result<Selection> {
    use rand::seq::SliceRandom;
    use rand::{SeedableRng, rngs::StdRng};
    let (b, nh, t, m) = query.dims()?;
    let occupied = &query.mem.meta().occupied;
    let mut rng = StdRng::seed_from_u64(0x5eed);
    let mut slots = vec![Selection::PAD; b * nh * t * k];
    for row in 0..b * nh * t {
        let bi = row / (nh * t);
        let mut cand: Vec<u32> = (0..m as u32)
            .filter(|&i| occupied[bi * m + i as usize])
            .collect();
        cand.shuffle(&mut rng);
        cand.truncate(k);
        cand.sort_unstable();
        slots[row * k..row * k + cand.len()].copy_from_slice(&cand);
    }
    Ok(Selection::Rows { k, slots })
}
