//! The one set of adapters between candle's custom-op interface and plain
//! slices: a contiguous layout's f32 or u32 data, a tensor's f32 data on the
//! CPU, a result vector back into a tensor, and the pointer that chunks of a
//! parallel loop write disjoint rows through.

use candle_core::{CpuStorage, Layout, Result, Shape, Storage, Tensor, bail};

/// The f32 slice behind a contiguous CPU layout.
pub(crate) fn slice<'a>(s: &'a CpuStorage, l: &Layout, op: &str) -> Result<&'a [f32]> {
    let Some((a, b)) = l.contiguous_offsets() else {
        bail!("{op}: needs contiguous inputs");
    };
    match s {
        CpuStorage::F32(v) => Ok(&v[a..b]),
        _ => bail!("{op}: supports f32 only"),
    }
}

/// The f32 data behind a contiguous CPU storage, or None (another dtype,
/// device or layout): the slice paths fall back to tensors on None.
pub fn storage_f32<'a>(s: &'a Storage, l: &Layout) -> Option<&'a [f32]> {
    match s {
        Storage::Cpu(c) => slice(c, l, "storage_f32").ok(),
        _ => None,
    }
}

/// Runs `f` on the f32 data of `t` (made contiguous first) on the CPU.
pub fn with_f32<R>(t: &Tensor, op: &str, f: impl FnOnce(&[f32]) -> Result<R>) -> Result<R> {
    let t = t.contiguous()?;
    let (s, l) = t.storage_and_layout();
    match &*s {
        Storage::Cpu(c) => f(slice(c, l, op)?),
        _ => bail!("{op}: CPU only"),
    }
}

pub(crate) fn tensor(v: Vec<f32>, shape: impl Into<Shape>) -> Result<Tensor> {
    Tensor::from_vec(v, shape, &candle_core::Device::Cpu)
}

pub(crate) fn u32s<'a>(s: &'a CpuStorage, l: &Layout, op: &str) -> Result<&'a [u32]> {
    let Some((a, b)) = l.contiguous_offsets() else {
        bail!("{op}: needs contiguous targets");
    };
    match s {
        CpuStorage::U32(v) => Ok(&v[a..b]),
        _ => bail!("{op}: targets must be u32"),
    }
}

/// A raw pointer that chunks of a parallel loop write through, each to rows
/// no other chunk touches.
#[derive(Clone, Copy)]
pub(crate) struct SendPtr(pub(crate) *mut f32);
// SAFETY: a SendPtr is only dereferenced through `row`, whose callers hand
// each parallel chunk rows that no other chunk reads or writes, and the
// buffer outlives the parallel loop that uses it.
unsafe impl Send for SendPtr {}
// SAFETY: as for Send: shared use is disjoint rows only.
unsafe impl Sync for SendPtr {}
impl SendPtr {
    /// # Safety
    /// `[at, at + len)` lies in the buffer and no other thread uses it.
    #[allow(clippy::mut_from_ref)]
    pub(crate) unsafe fn row(&self, at: usize, len: usize) -> &mut [f32] {
        // SAFETY: the caller guarantees the range is in bounds and exclusive.
        unsafe { std::slice::from_raw_parts_mut(self.0.add(at), len) }
    }
}
