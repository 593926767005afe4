//! retbench-model: a tiny decoder-only transformer with retention hooks, its
//! multi-session training loop (AdamW, warm-up + cosine, clipping, frozen
//! base), evaluation with detached memory under process or disk
//! persistence, and safetensors checkpoints. Tasks build their learned runs
//! from these; baselines are configurations of them (no retention; all
//! sessions in one context). `bench` measures training throughput of the
//! reference shape (`retbench train-bench`).

pub mod bench;
pub mod checkpoint;
pub mod eval;
pub mod model;
pub mod train;

pub use eval::{Between, EvalConfig, SessionOutput, run_episodes, run_episodes_observed};
pub use model::{Forward, Model, ModelConfig};
pub use train::{
    Session, StopConfig, StopWhen, TrainConfig, TrainError, Trainer, masked_cross_entropy,
    trainable_vars,
};
