//! retbench-model: the tiny decoder-only transformer with retention hooks,
//! its multi-session training loop and the `no_memory` / `full_context`
//! baselines. Not built yet: it arrives with the model issue, on top of
//! [`retbench_core::RetentionLayer`].
