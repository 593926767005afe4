//! What the report crate's integration tests share: a scratch run folder
//! holding a task's metric specs (and optionally a plan), and the names of
//! the figures a report drew.

#![allow(dead_code)] // each test binary uses its own part

use std::path::{Path, PathBuf};

use retbench_tasks::{MetricSpec, TaskConfig};

/// An empty scratch folder `retbench-<name>-<pid>` with `runs/` and the
/// `metrics.json` of task `kind` at its defaults.
pub fn run_folder(name: &str, kind: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("retbench-{name}-{}", std::process::id()));
    run_folder_at(&dir, kind);
    dir
}

/// [`run_folder`] at `dir` (emptied first).
pub fn run_folder_at(dir: &Path, kind: &str) {
    let _ = std::fs::remove_dir_all(dir);
    std::fs::create_dir_all(dir.join("runs")).unwrap();
    let specs: Vec<MetricSpec> = TaskConfig::with_defaults(kind).unwrap().task().metrics();
    std::fs::write(
        dir.join("metrics.json"),
        serde_json::to_vec(&specs).unwrap(),
    )
    .unwrap();
}

/// Writes `plan.json`.
pub fn write_plan(dir: &Path, plan: serde_json::Value) {
    std::fs::write(dir.join("plan.json"), serde_json::to_vec(&plan).unwrap()).unwrap();
}

/// The file names of the figures a report wrote.
pub fn figure_names(out: &retbench_report::ReportOutput) -> Vec<String> {
    out.figures
        .iter()
        .filter_map(|p| p.file_name().map(|f| f.to_string_lossy().into_owned()))
        .collect()
}
