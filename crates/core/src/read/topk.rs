//! Exact top-k: the k best-scoring occupied slots of each query, selected on
//! the host in O(m) per query (`select_nth_unstable`), softmax over those.
//! Gradients reach Q, K and V through the selected slots.

use candle_core::DType;

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
        let (b, nh, t, m) = query.dims()?;
        let occupied = &query.memory().meta().occupied;
        let scores = query.all_scores()?;
        let flat: Vec<f32> = scores.to_dtype(DType::F32)?.flatten_all()?.to_vec1()?;
        let k = self.k;
        let mut slots = vec![Selection::PAD; b * nh * t * k];
        let mut cand: Vec<usize> = Vec::with_capacity(m);
        for row in 0..b * nh * t {
            let bi = row / (nh * t);
            let occ = &occupied[bi * m..(bi + 1) * m];
            let s = &flat[row * m..(row + 1) * m];
            cand.clear();
            cand.extend((0..m).filter(|&i| occ[i]));
            if cand.len() > k {
                cand.select_nth_unstable_by(k - 1, |&i, &j| s[j].total_cmp(&s[i]).then(i.cmp(&j)));
                cand.truncate(k);
            }
            cand.sort_unstable();
            for (o, &i) in slots[row * k..].iter_mut().zip(&cand) {
                *o = i as u32;
            }
        }
        Ok(Selection::Rows { k, slots })
    }
}
