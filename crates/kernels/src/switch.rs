//! The switch between the fused kernels and candle's generic ops: a
//! process default (the CLI's `--kernels`) and a per-thread override, so
//! that tests can run both paths side by side in one process.

use std::cell::Cell;
use std::sync::atomic::{AtomicBool, Ordering};

use candle_core::{DType, Tensor};

/// Which implementation of the model's layers runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kernels {
    /// The custom ops of this module (the default).
    Fused,
    /// Candle's generic ops, as the layers are written mathematically.
    Unfused,
}

impl Kernels {
    /// As written on the command line and in run records.
    pub fn name(self) -> &'static str {
        match self {
            Kernels::Fused => "fused",
            Kernels::Unfused => "unfused",
        }
    }
}

impl std::str::FromStr for Kernels {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        match s {
            "fused" => Ok(Kernels::Fused),
            "unfused" => Ok(Kernels::Unfused),
            _ => Err(format!("kernels: expected fused or unfused, got {s:?}")),
        }
    }
}

static UNFUSED_BY_DEFAULT: AtomicBool = AtomicBool::new(false);

thread_local! {
    static OVERRIDE: Cell<Option<Kernels>> = const { Cell::new(None) };
}

/// The kernels this thread uses: its [`with_kernels`] override, else the
/// process default.
pub fn kernels() -> Kernels {
    OVERRIDE.with(|k| k.get()).unwrap_or_else(|| {
        if UNFUSED_BY_DEFAULT.load(Ordering::Relaxed) {
            Kernels::Unfused
        } else {
            Kernels::Fused
        }
    })
}

/// Sets the process default (the CLI's `--kernels`).
pub fn set_default(k: Kernels) {
    UNFUSED_BY_DEFAULT.store(k == Kernels::Unfused, Ordering::Relaxed);
}

/// Runs `f` with `k` selected on this thread (forward and backward passes run
/// on the calling thread, so a test can compare both paths side by side).
pub fn with_kernels<R>(k: Kernels, f: impl FnOnce() -> R) -> R {
    let before = OVERRIDE.with(|c| c.replace(Some(k)));
    struct Restore(Option<Kernels>);
    impl Drop for Restore {
        fn drop(&mut self) {
            OVERRIDE.with(|c| c.set(self.0));
        }
    }
    let _restore = Restore(before);
    f()
}

pub(crate) fn fused_for(t: &Tensor) -> bool {
    kernels() == Kernels::Fused && t.device().is_cpu() && t.dtype() == DType::F32
}
