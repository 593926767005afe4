//! Fused CPU kernels for training the transformer and its retention layers,
//! each a candle custom op with its own backward pass, one file per op (the switch that
//! selects them is [`crate::switch`]). Candle builds every layer from generic ops:
//! one allocation and one pass per op, strided loops for broadcasts, and a
//! backward graph several times longer than the forward one. At the sizes
//! the suites train (d_model 64–128, sequences of 64) that overhead, not the
//! arithmetic, is the step (docs/ARCHITECTURE.md, "Kernels"). Here:
//!
//! - [`layer_norm`]: one pass per row forward, one backward (dx, dγ, dβ);
//! - [`linear`]: x·Wᵀ + b as one gemm with the bias folded in, backward as
//!   two gemms and a column sum, no transposed copies;
//! - [`gelu`]: the erf GELU and its derivative, one pass each;
//! - [`causal_attention`]: multi-head causal softmax attention straight from
//!   the packed [B, T, 3d] projection, no mask tensor, no head transposes;
//!   backward recomputes the weights (cheaper than keeping [B, H, T, T]);
//! - [`masked_cross_entropy`]: log-softmax, pick and masked mean in one pass
//!   over the logits, backward softmax − one-hot scaled by the mask;
//! - [`embed`]: token plus position embedding in one pass, backward as
//!   per-row sums (no index-add, no broadcast reduction);
//! - [`slot_attention`]: the retention layer's dense read over memory
//!   slots (masked by occupancy) with its usage statistics, backward from
//!   the kept weights;
//! - [`replace_rows`]: a tracked write's new slots in the memory table, one
//!   copy forward and one backward.
//!
//! Each takes the unfused candle path when [`Kernels::Unfused`] is selected
//! (for tests and comparison) or the tensor is not f32 on the CPU. Partial
//! sums are taken over fixed-size chunks and added in chunk order, so results
//! do not depend on the number of threads.

use candle_core::{
    CpuStorage, CustomOp1, CustomOp2, CustomOp3, D, DType, Layout, Result, Shape, Tensor, bail,
};
use multiversion::multiversion;
use rayon::prelude::*;

use crate::math::{axpy, dot, erf_f32, exp_f32, row_stats, sum8};
use crate::shim::{SendPtr, slice, tensor, u32s, with_f32};
use crate::switch::fused_for;

mod attention;
mod embed;
mod gelu;
mod layer_norm;
mod linear;
mod loss;
mod replace_rows;
mod slot_attention;

pub use attention::causal_attention;
pub use embed::embed;
pub use gelu::gelu;
pub use layer_norm::layer_norm;
pub use linear::linear;
pub use loss::masked_cross_entropy;
pub use replace_rows::replace_rows;
pub use slot_attention::{SlotUsage, slot_attention};

/// Rows per parallel task: fixed, so that chunked sums do not depend on the
/// thread count.
const ROWS: usize = 64;

fn parallelism() -> gemm::Parallelism {
    match rayon::current_num_threads() {
        0 | 1 => gemm::Parallelism::None,
        n => gemm::Parallelism::Rayon(n),
    }
}

/// Σ over fixed chunks of rows of `per_chunk(chunk_index, rows)`, added in
/// chunk order (deterministic whatever the thread count).
fn chunked_sum(
    rows: usize,
    width: usize,
    per_chunk: impl Fn(usize, std::ops::Range<usize>, &mut [f32]) + Sync,
) -> Vec<f32> {
    let chunks = rows.div_ceil(ROWS);
    let partial: Vec<Vec<f32>> = (0..chunks)
        .into_par_iter()
        .map(|c| {
            let mut acc = vec![0f32; width];
            per_chunk(c, c * ROWS..((c + 1) * ROWS).min(rows), &mut acc);
            acc
        })
        .collect();
    let mut out = vec![0f32; width];
    for p in partial {
        out.iter_mut().zip(p).for_each(|(o, x)| *o += x);
    }
    out
}
