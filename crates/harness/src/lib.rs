//! retbench-harness: suite YAML → validated plan → parallel, resumable runs →
//! a run store on disk (one atomic JSON file per finished run, tidy CSVs
//! rebuilt from them), with shards, merge and provenance.

pub mod config;
pub mod datasets;
pub mod runner;
pub mod store;
pub mod suite;

pub use config::RunConfig;
pub use runner::{
    Progress, RunOptions, RunSummary, merge, parse_shard, refresh, run_plan, run_plan_with,
};
pub use store::Store;
pub use suite::{Plan, PlannedRun, SuiteError};
