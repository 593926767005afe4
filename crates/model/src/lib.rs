//! retbench-model: a tiny decoder-only transformer with retention hooks and
//! its multi-session training loop (AdamW, warm-up + cosine, clipping).
//! Baselines, checkpoints and the learned suites build on these (issue 4).

pub mod model;
pub mod train;

pub use model::{Forward, Model, ModelConfig};
pub use train::{Session, TrainConfig, TrainError, Trainer, masked_cross_entropy, trainable_vars};
