//! Which hand-written instruction-set paths the scans may take: what the
//! CPU has, capped by [`set_cap`], so that a test can run the portable
//! path (and on an AVX-512 host, the AVX-512 path without VNNI) on one
//! machine and compare each with a reference. The cap is process-wide (one
//! relaxed atomic load at each dispatch, as cheap as the CPU check it
//! wraps); tests that set it run in a binary of their own.
//!
//! It governs the dispatch points written by hand (the AVX-512 score,
//! attend and coded-key kernels, the VNNI int8 scan). Loops compiled by
//! `multiversion` choose their build (AVX-512, AVX2+FMA, baseline) from the
//! CPU alone.

use std::sync::atomic::{AtomicU8, Ordering};

/// A dispatch path, from the most portable up.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Isa {
    /// The portable loops (vectorised by the compiler as the CPU allows).
    Portable,
    /// The AVX-512F kernels.
    Avx512,
    /// AVX-512F plus VNNI integer dot products for int8 keys.
    Avx512Vnni,
}

impl Isa {
    /// As written in test output.
    pub fn name(self) -> &'static str {
        match self {
            Isa::Portable => "portable",
            Isa::Avx512 => "avx512",
            Isa::Avx512Vnni => "avx512+vnni",
        }
    }
}

static CAP: AtomicU8 = AtomicU8::new(u8::MAX);

/// The best path this CPU supports.
pub fn detected() -> Isa {
    #[cfg(target_arch = "x86_64")]
    {
        if std::arch::is_x86_feature_detected!("avx512f") {
            return if std::arch::is_x86_feature_detected!("avx512vnni") {
                Isa::Avx512Vnni
            } else {
                Isa::Avx512
            };
        }
    }
    Isa::Portable
}

/// Every path this CPU can run, most portable first.
pub fn available() -> Vec<Isa> {
    [Isa::Portable, Isa::Avx512, Isa::Avx512Vnni]
        .into_iter()
        .filter(|&i| i <= detected())
        .collect()
}

/// Caps the paths the scans take at `cap` (None: no cap), process-wide.
pub fn set_cap(cap: Option<Isa>) {
    CAP.store(cap.map_or(u8::MAX, |c| c as u8), Ordering::Relaxed);
}

/// The path the scans take now: the CPU's best, within the cap.
pub fn current() -> Isa {
    let cap = CAP.load(Ordering::Relaxed);
    let best = detected();
    if (best as u8) <= cap {
        best
    } else {
        [Isa::Avx512, Isa::Portable]
            .into_iter()
            .find(|&i| i as u8 <= cap)
            .unwrap_or(Isa::Portable)
    }
}

/// Whether the AVX-512F kernels may run.
#[inline(always)]
pub(crate) fn avx512() -> bool {
    CAP.load(Ordering::Relaxed) >= Isa::Avx512 as u8 && detected() >= Isa::Avx512
}

/// Whether the VNNI int8 kernels may run.
#[inline(always)]
pub(crate) fn vnni() -> bool {
    CAP.load(Ordering::Relaxed) >= Isa::Avx512Vnni as u8 && detected() >= Isa::Avx512Vnni
}
