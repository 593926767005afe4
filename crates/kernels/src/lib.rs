//! retbench-kernels: the CPU kernels under the retention layer and the
//! model, which know nothing of memories, configs or tasks. They take plain
//! slices or candle tensors and return the same:
//!
//! - [`scan`]: one-pass reads over a table of slots (dense attend, exact
//!   top-k, the reservoir other layouts reuse);
//! - [`quant`]: reduced-precision (f16, int8) copies of keys that scans read
//!   as candidates;
//! - [`rows`]: few-row products, masked softmax and the in-place row blend of
//!   an attention write, as candle custom ops;
//! - [`fused`]: the model's training ops (layer norm, linear, GELU, causal
//!   and slot attention, embedding, loss) with their backward passes, one
//!   file per op;
//! - [`switch`]: which of fused or candle's generic ops a thread runs;
//! - [`isa`]: which hand-written instruction-set path the scans take (the
//!   CPU's, or a lower one a test forces);
//! - [`math`]: the scalar building blocks they share (`exp_f32`, `erf_f32`,
//!   row statistics, the eight-lane dot product).
//!
//! Results never depend on the thread count: parallel loops split work
//! into fixed chunks and add partial sums in chunk order
//! (docs/ARCHITECTURE.md, "Kernels" and "Reads at scale").

pub mod fused;
pub mod isa;
pub mod math;
pub mod quant;
pub mod rows;
pub mod scan;
mod shim;
pub mod switch;

pub use shim::{storage_f32, with_f32};
pub use switch::{Kernels, kernels, set_default, with_kernels};

/// Seeded Gaussian data for the kernels' tests.
#[cfg(test)]
pub(crate) mod test_data {
    use rand::SeedableRng;
    use rand_chacha::ChaCha8Rng;
    use rand_distr::{Distribution, StandardNormal};

    /// A generator for (`name`, `seed`, `part`): a fixed function of its
    /// arguments, so a failing case reproduces.
    pub fn stream(name: &str, seed: u64, part: &str) -> ChaCha8Rng {
        let mut key = [0u8; 32];
        for (i, b) in name.bytes().chain([0]).chain(part.bytes()).enumerate() {
            key[i % 24] ^= b;
        }
        key[24..].copy_from_slice(&seed.to_le_bytes());
        ChaCha8Rng::from_seed(key)
    }

    /// A standard-normal draw.
    pub fn randn(rng: &mut ChaCha8Rng) -> f64 {
        StandardNormal.sample(rng)
    }
}
