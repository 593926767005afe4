//! The write seam: a [`WriteBackend`] puts the candidates a gate let through
//! into memory. `append` (option A) takes a slot per candidate through an
//! eviction policy; `attention` (option B) blends into content-addressed
//! slots. Shared here: writing whole rows (a fill), in place for a detached
//! memory and as a graph op for a tracked one.

mod append;
mod attention;

pub use append::Append;
pub use attention::Attention;

use candle_core::Tensor;

use crate::config::RetentionConfig;
use crate::error::{ConfigError, Result};
use crate::evict::EvictionPolicy;
use crate::memory::MemoryState;

/// What a write did, per call.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct WriteReport {
    /// Candidate vectors produced by the write source (B × n).
    pub candidates: usize,
    /// Candidates the gate let through and that changed memory.
    pub written: usize,
    /// Occupied slots overwritten by appends.
    pub evicted: usize,
    /// Gate score per candidate, in (memory, candidate) order.
    pub gate_scores: Vec<f32>,
}

/// What a write backend may ask of the layer it writes for. The layer
/// implements it; backends see this and not the whole `RetentionLayer`.
pub trait WriteContext {
    /// Keys of content rows x [.., d]: x·W_K.
    fn key_rows(&self, x: &Tensor) -> Result<Tensor>;
    /// H·d_k, the width of a key row.
    fn inner_dim(&self) -> usize;
    /// Addressing logits of candidates u [B, n, d] against every slot of
    /// `mem` ([B, n, m]), unscaled.
    fn address_logits(&self, u: &Tensor, mem: &MemoryState) -> Result<Tensor>;
    /// The slots the read backend addresses for these candidates' keys
    /// (product keys), or None when writes take any slot.
    fn address_writes(&self, keys: &dyn Fn() -> Result<Tensor>) -> Result<Option<Vec<usize>>>;
}

/// The candidates of one write call.
pub struct Candidates<'a> {
    /// Source vectors u [B, n, d].
    pub u: &'a Tensor,
    /// Content to write, u·W_u [B, n, d].
    pub v: &'a Tensor,
    /// Gate score per candidate, (memory, candidate) order.
    pub scores: &'a [f32],
    /// Whether the gate let each candidate through.
    pub pass: &'a [bool],
}

/// A way of putting candidates into memory.
pub trait WriteBackend: Send + Sync + std::fmt::Debug {
    /// The name as written in YAML (`append`, `attention`).
    fn name(&self) -> &'static str;
    fn write(
        &self,
        layer: &dyn WriteContext,
        mem: &mut MemoryState,
        cand: &Candidates<'_>,
        report: &mut WriteReport,
    ) -> Result<()>;
    /// The eviction policy, for backends that evict.
    fn eviction(&self) -> Option<&dyn EvictionPolicy> {
        None
    }
    /// The constraints this write puts on `cfg` (field paths relative to
    /// the `retention` block).
    fn check(&self, _cfg: &RetentionConfig) -> std::result::Result<(), ConfigError> {
        Ok(())
    }
    /// Whether a write may change slots that were already occupied (a
    /// blend), so that anything derived from every slot (reduced-precision
    /// keys) must be redone after it.
    fn blends(&self) -> bool {
        false
    }
}

/// Writes candidates `src` (flat indices into v [B, n, d]), scaled, into flat
/// slots `dst`, with their cached keys when the memory keeps them.
pub(crate) fn put_rows(
    layer: &dyn WriteContext,
    mem: &mut MemoryState,
    v: &Tensor,
    dst: &[u32],
    src: Vec<u32>,
    scale: f64,
) -> Result<()> {
    if dst.is_empty() {
        return Ok(());
    }
    let (b, n, d) = v.dims3()?;
    let src = Tensor::new(src, mem.device())?;
    let rows = (v.reshape((b * n, d))?.index_select(&src, 0)? * scale)?;
    mem.content = scatter_rows(&mem.content, dst, &rows, mem.tracked)?;
    if let Some(keys) = &mem.keys {
        let key_rows = layer.key_rows(&rows)?;
        mem.keys = Some(scatter_rows(keys, dst, &key_rows, mem.tracked)?);
    }
    Ok(())
}

/// Replaces rows `dst` of `table` [B, m, w] (flat row index b·m + i) by `rows`
/// [A, w]: in place for detached memory (O(A·w)), as a graph op otherwise.
fn scatter_rows(table: &Tensor, dst: &[u32], rows: &Tensor, tracked: bool) -> Result<Tensor> {
    let (b, m, w) = table.dims3()?;
    let a = dst.len();
    let flat = table.reshape((b * m, w))?;
    if tracked {
        let out = retbench_kernels::fused::replace_rows(&flat, dst, rows)?;
        Ok(out.reshape((b, m, w))?)
    } else {
        let idx = Tensor::new(dst, table.device())?
            .reshape((a, 1))?
            .broadcast_as((a, w))?
            .contiguous()?;
        flat.scatter_set(&idx, &rows.detach().contiguous()?, 0)?;
        Ok(table.clone())
    }
}
