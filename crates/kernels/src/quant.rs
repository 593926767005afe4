//! Reduced-precision key storage (the `keys: f16` and `keys: int8` options):
//! a copy of every slot's key in 2 or 1 (+4 per slot) bytes a component,
//! which a top-k read scans for candidates before re-ranking them exactly
//! against keys recomputed from the contents (docs/ARCHITECTURE.md, "Reads
//! at scale").
//!
//! The memory state owns the copy and notes which slots were filled; the
//! layer encodes their keys at the end of each write call (it owns W_K).
//! Int8 keys carry one f32 scale per slot (max |x| / 127, round to nearest),
//! so a slot's relative error is bounded whatever its norm, and the sum of
//! their codes. Scans score f16 and int8 rows in registers with AVX-512
//! kernels; int8 rows 64 or 128 wide go through VNNI integer dot products
//! with the query quantised to int8 too (its error is one more reason for
//! the exact re-ranking). Elsewhere a block of rows is decoded into an
//! L1-sized f32 buffer and scored by the f32 kernels
//! ([`crate::scan::KeySource`]).

use half::f16;
use half::slice::HalfFloatSliceExt;

use crate::scan::{KeySource, Prepared};

// The coded scans decode f16 keys from their bytes as little-endian.
const _: () = assert!(
    cfg!(target_endian = "little"),
    "retbench-kernels reads f16 keys as little-endian bytes"
);

/// Storage of a reduced-precision key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Precision {
    F16,
    Int8,
}

impl Precision {
    /// Bytes per slot of keys `width` wide.
    pub fn bytes_per_slot(self, width: usize) -> usize {
        match self {
            Precision::F16 => 2 * width,
            Precision::Int8 => width + 8,
        }
    }
}

/// Keys of every slot of a batch of memories, flat over (memory, slot).
#[derive(Debug, Clone)]
pub struct LowKeys {
    precision: Precision,
    width: usize,
    half: Vec<f16>,
    int8: Vec<i8>,
    scale: Vec<f32>,
    /// Per slot Σ codes (the VNNI kernel's correction for its unsigned
    /// query).
    sums: Vec<i32>,
    /// Flat slots filled since their owner last encoded keys (the caller
    /// keeps this list: see [`LowKeys::mark_pending`]).
    pending: Vec<usize>,
}

impl LowKeys {
    /// Zeroed storage for `slots` flat slots of keys `width` wide.
    pub fn new(precision: Precision, slots: usize, width: usize) -> Self {
        let (half, int8, scale, sums) = match precision {
            Precision::F16 => (vec![f16::ZERO; slots * width], vec![], vec![], vec![]),
            Precision::Int8 => (
                vec![],
                vec![0; slots * width],
                vec![0.0; slots],
                vec![0; slots],
            ),
        };
        LowKeys {
            precision,
            width,
            half,
            int8,
            scale,
            sums,
            pending: Vec::new(),
        }
    }

    /// Slots filled whose keys are not encoded yet (0 after every write
    /// call; a read ranks exactly while any are).
    pub fn pending(&self) -> usize {
        self.pending.len()
    }

    /// Notes that flat slot `slot` was filled and needs encoding.
    pub fn mark_pending(&mut self, slot: usize) {
        self.pending.push(slot);
    }

    /// Replaces the slots to encode (e.g. every occupied slot).
    pub fn set_pending(&mut self, slots: Vec<usize>) {
        self.pending = slots;
    }

    /// The slots to encode, leaving none pending.
    pub fn take_pending(&mut self) -> Vec<usize> {
        std::mem::take(&mut self.pending)
    }

    /// Forgets every pending slot (the memory was cleared).
    pub fn clear_pending(&mut self) {
        self.pending.clear();
    }

    pub fn precision(&self) -> Precision {
        self.precision
    }

    pub fn width(&self) -> usize {
        self.width
    }

    /// Bytes held (codes, scales and code sums).
    pub fn bytes(&self) -> usize {
        2 * self.half.len() + self.int8.len() + 4 * self.scale.len() + 4 * self.sums.len()
    }

    /// Stores the key of flat slot `f`.
    pub fn set(&mut self, f: usize, key: &[f32]) {
        let w = self.width;
        assert_eq!(key.len(), w, "key width");
        match self.precision {
            Precision::F16 => self.half[f * w..(f + 1) * w].convert_from_f32_slice(key),
            Precision::Int8 => {
                let (scale, sum) = encode_int8(key, &mut self.int8[f * w..(f + 1) * w]);
                self.scale[f] = scale;
                self.sums[f] = sum;
            }
        }
    }

    /// The key of flat slot `f` as stored, decoded.
    pub fn get(&self, f: usize) -> Vec<f32> {
        let mut out = Vec::new();
        self.decode(f..f + 1, &mut out);
        out
    }

    /// Decodes flat slots `range` into `out` (resized), row-major.
    fn decode(&self, range: std::ops::Range<usize>, out: &mut Vec<f32>) {
        let w = self.width;
        out.resize(range.len() * w, 0.0);
        match self.precision {
            Precision::F16 => {
                self.half[range.start * w..range.end * w].convert_to_f32_slice(out);
            }
            Precision::Int8 => {
                let codes = &self.int8[range.start * w..range.end * w];
                let scales = &self.scale[range];
                decode_int8(codes, scales, w, out);
            }
        }
    }

    /// The keys of memory `b` (of `m` slots) as a scan source.
    pub fn view<'a>(&'a self, b: usize, m: usize, occupied: &'a [bool]) -> LowView<'a> {
        LowView {
            keys: self,
            base: b * m,
            m,
            occupied,
        }
    }
}

/// Int8 codes of `key` into `codes` (round to nearest, scale max |x| / 127;
/// a zero key gets scale 1); returns the scale and the sum of the codes.
pub fn encode_int8(key: &[f32], codes: &mut [i8]) -> (f32, i32) {
    let max = key.iter().fold(0f32, |a, x| a.max(x.abs()));
    let scale = if max > 0.0 { max / 127.0 } else { 1.0 };
    let inv = 1.0 / scale;
    let mut sum = 0i32;
    for (c, &x) in codes.iter_mut().zip(key) {
        *c = (x * inv).round_ties_even().clamp(-127.0, 127.0) as i8;
        sum += *c as i32;
    }
    (scale, sum)
}

#[multiversion::multiversion(targets("x86_64+avx512f+avx512vl+avx2+fma", "x86_64+avx2+fma"))]
fn decode_int8(codes: &[i8], scales: &[f32], w: usize, out: &mut [f32]) {
    for ((o, c), &s) in out
        .chunks_exact_mut(w)
        .zip(codes.chunks_exact(w))
        .zip(scales)
    {
        for (o, &c) in o.iter_mut().zip(c) {
            *o = c as f32 * s;
        }
    }
}

/// One memory's reduced-precision keys, as a [`KeySource`].
pub struct LowView<'a> {
    keys: &'a LowKeys,
    base: usize,
    m: usize,
    /// The memory's occupancy (m entries).
    occupied: &'a [bool],
}

impl KeySource for LowView<'_> {
    fn width(&self) -> usize {
        self.keys.width
    }
    fn rows(&self) -> usize {
        self.m
    }
    #[inline(always)]
    fn live(&self, j: usize) -> bool {
        self.occupied[j]
    }
    fn block<'b>(&'b self, range: std::ops::Range<usize>, buf: &'b mut Vec<f32>) -> &'b [f32] {
        self.keys
            .decode(self.base + range.start..self.base + range.end, buf);
        buf
    }
    fn direct(&self) -> bool {
        let w = self.keys.width;
        crate::scan::int8_direct(w) && self.keys.precision == Precision::Int8
            || crate::scan::coded_direct(w)
    }
    fn prepare(&self, q: &[f32]) -> Prepared {
        if self.keys.precision == Precision::Int8 && crate::scan::int8_direct(self.keys.width) {
            quantise_query(q)
        } else {
            Prepared::default()
        }
    }
    fn scores(&self, q: &[f32], prepared: &Prepared, range: std::ops::Range<usize>, s: &mut [f32]) {
        let w = self.keys.width;
        let (a, b) = (self.base + range.start, self.base + range.end);
        let done = match self.keys.precision {
            Precision::F16 => {
                let halves = &self.keys.half[a * w..b * w];
                // Native-order bytes, which are the little-endian ones the
                // kernels decode (checked at compile time below).
                let bytes: &[u8] = bytemuck::cast_slice(halves);
                crate::scan::coded_scores(q, bytes, None, w, s)
            }
            Precision::Int8 => {
                let codes = &self.keys.int8[a * w..b * w];
                // The kernels read the codes as signed bytes.
                let bytes: &[u8] = bytemuck::cast_slice(codes);
                let scales = &self.keys.scale[a..b];
                if crate::scan::int8_direct(w) {
                    let (qu, qs) = (&prepared.codes, prepared.scale);
                    crate::scan::int8_scores(qu, qs, bytes, &self.keys.sums[a..b], scales, s);
                    true
                } else {
                    crate::scan::coded_scores(q, bytes, Some(scales), w, s)
                }
            }
        };
        debug_assert!(done, "direct() promised a kernel");
    }
}

/// A query (at most 128 wide) quantised for [`crate::scan`]'s int8 scores: int8 (round
/// to nearest even, scale max |q| / 127) shifted by 128 to unsigned.
pub fn quantise_query(q: &[f32]) -> Prepared {
    let mut signed = [0i8; 128];
    let (scale, _) = encode_int8(q, &mut signed[..q.len()]);
    let mut codes = [128u8; 128];
    for (c, &x) in codes.iter_mut().zip(&signed) {
        *c = (x as i32 + 128) as u8;
    }
    Prepared { codes, scale }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_round_trip_within_their_precision() {
        let w = 16;
        let keys: Vec<Vec<f32>> = (0..5)
            .map(|i| {
                (0..w)
                    .map(|j| ((i * 31 + j * 7) % 23) as f32 / 3.0 - 3.5 * i as f32)
                    .collect()
            })
            .collect();
        for p in [Precision::F16, Precision::Int8] {
            let mut low = LowKeys::new(p, keys.len(), w);
            for (f, k) in keys.iter().enumerate() {
                low.set(f, k);
            }
            for (f, k) in keys.iter().enumerate() {
                let max = k.iter().fold(0f32, |a, x| a.max(x.abs()));
                let tol = match p {
                    Precision::F16 => max / 1024.0,
                    Precision::Int8 => max / 254.0 + 1e-6,
                };
                for (a, b) in low.get(f).iter().zip(k) {
                    assert!((a - b).abs() <= tol, "{p:?}: {a} vs {b}");
                }
            }
            assert_eq!(low.bytes(), keys.len() * p.bytes_per_slot(w));
        }
    }

    #[test]
    fn a_zero_key_decodes_to_zero() {
        let mut low = LowKeys::new(Precision::Int8, 1, 4);
        low.set(0, &[0.0; 4]);
        assert_eq!(low.get(0), vec![0.0; 4]);
    }
}
