//! retbench-harness: suite YAML → validated plan → parallel, resumable runs →
//! a run folder on disk (one atomic JSON file per finished run, tidy CSVs
//! rebuilt from them), with shards, merge and provenance.

pub mod config;
pub mod datasets;
pub mod folder;
pub mod provenance;
pub mod readers;
pub mod runner;
pub mod slurm;
pub mod suite;
mod yaml_error;

pub use config::RunConfig;
pub use folder::RunFolder;
pub use runner::{
    Progress, RunOptions, RunSummary, merge, parse_shard, refresh, run_plan, run_plan_with,
};
pub use suite::{Plan, PlannedRun, SuiteError};
