//! retbench-core: the retention layer of "Attention is All You Need Until You
//! Need Retention" (arXiv 2501.09166) on candle, with every backend the paper
//! describes or implies — dense and top-k reads; append (five eviction
//! policies) and attention writes; mean, last, token, chunk and learned write
//! sources; feedback, learned and surprise gates; recomputed, cached or
//! reduced-precision keys;
//! optional learned slot age — plus the memory state those backends share,
//! its telemetry, and snapshots that let a memory outlive the process.
//!
//! The CPU kernels under it (scans, reduced-precision keys, fused training
//! ops) live in `retbench-kernels`; this crate holds no `unsafe` code.
//!
//! The memory is owned by the caller and passed by `&mut`, so persistence,
//! resets and saving are the caller's decisions (see [`memory`]).

#![forbid(unsafe_code)]

pub mod backends;
pub mod canonical;
pub mod config;
pub mod error;
pub mod evict;
pub mod fsutil;
pub mod gate;
pub mod layer;
// The graph-free read is part of the layer (`impl RetentionLayer`); its
// public functions keep their path.
pub use layer::infer;
pub mod memory;
pub mod read;
pub mod rng;
pub mod snapshot;
pub mod telemetry;
pub mod write;

pub use config::{
    Evict, GateConfig, InitConfig, Integrate, KeyMode, Layers, Persistence, ReadConfig, ReadKind,
    RetentionConfig, Sharing, SlotAge, WriteConfig, WriteFrom, WriteKind, WriteSource,
};
pub use error::{ConfigError, Error, Result, SnapshotError};
pub use layer::{DenseRead, ReadOutput, RetentionLayer, WriteReport};
pub use memory::{MemoryBank, MemoryState, SlotIndex, SlotMeta};
pub use read::{ReadBackend, ReadQuery, Selection};
pub use rng::SeededVarMap;
pub use telemetry::Telemetry;
