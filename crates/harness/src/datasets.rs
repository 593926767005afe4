//! Frozen held-out sets: the episodes every learned run of a plan is scored
//! on, written once to `datasets/<kind>/<key>-seed<seed>-n<episodes>.jsonl`
//! with a `manifest.json` per task kind giving each file's sha256, task
//! config, seed and episode count. Runs regenerate their held-out set from
//! (task config, seed) rather than read these files; the files are a copy
//! anyone can score other models on, and [`check`] (run by a test and by
//! `retbench datasets --check`) regenerates every one bit for bit.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use retbench_core::fsutil::{FileError, write_atomic};
use retbench_tasks::TaskConfig;
use retbench_tasks::learned::{Dataset, sha256_hex};
use serde::{Deserialize, Serialize};

use crate::suite::Plan;

/// One frozen file, as its kind's manifest lists it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Entry {
    /// Path under the datasets folder.
    pub file: String,
    pub sha256: String,
    /// The task config the episodes depend on (`kind` and the fields that
    /// change episodes; layout options such as `context` left out).
    pub task: serde_json::Value,
    pub seed: u64,
    pub episodes: usize,
}

/// `datasets/<kind>/manifest.json`.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    pub datasets: Vec<Entry>,
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> FileError + '_ {
    move |source| FileError::Io {
        path: path.to_path_buf(),
        source,
    }
}

fn manifest_path(dir: &Path, kind: &str) -> PathBuf {
    dir.join(kind).join("manifest.json")
}

fn read_manifest(path: &Path) -> Result<Manifest, FileError> {
    match std::fs::read(path) {
        Ok(bytes) => serde_json::from_slice(&bytes).map_err(|e| FileError::Bad {
            path: path.to_path_buf(),
            message: e.to_string(),
        }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Manifest::default()),
        Err(e) => Err(io(path)(e)),
    }
}

fn entry(d: &Dataset) -> Entry {
    let mut task = serde_json::json!({ "kind": d.kind });
    if let (Some(t), Some(c)) = (task.as_object_mut(), d.config.as_object()) {
        t.extend(c.clone());
    }
    Entry {
        file: d.file.clone(),
        sha256: d.sha256(),
        task,
        seed: d.seed,
        episodes: d.episodes,
    }
}

/// The held-out sets of a plan's learned runs, each once (variants that
/// lay the same episodes out differently share one).
pub fn of_plan(plan: &Plan) -> Vec<Dataset> {
    let mut out: BTreeMap<String, Dataset> = BTreeMap::new();
    for run in &plan.runs {
        if let Some(d) = run.config.task.task().dataset(&run.config.spec(), run.seed) {
            out.entry(d.file.clone()).or_insert(d);
        }
    }
    out.into_values().collect()
}

/// What [`write`] did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Written {
    pub written: usize,
    pub unchanged: usize,
}

/// Writes each dataset (atomically) and its manifest entry under `dir`;
/// a file already there with the same bytes is left alone.
pub fn write(datasets: &[Dataset], dir: &Path) -> Result<Written, FileError> {
    let mut by_kind: BTreeMap<&str, Vec<&Dataset>> = BTreeMap::new();
    for d in datasets {
        by_kind.entry(&d.kind).or_default().push(d);
    }
    let mut done = Written::default();
    for (kind, sets) in by_kind {
        let path = manifest_path(dir, kind);
        let mut manifest = read_manifest(&path)?;
        for d in sets {
            let file = dir.join(&d.file);
            let same = std::fs::read(&file).is_ok_and(|b| b == d.bytes);
            if same {
                done.unchanged += 1;
            } else {
                write_atomic(&file, &d.bytes).map_err(io(&file))?;
                done.written += 1;
            }
            let e = entry(d);
            manifest.datasets.retain(|x| x.file != e.file);
            manifest.datasets.push(e);
        }
        manifest.datasets.sort_by(|a, b| a.file.cmp(&b.file));
        let mut text = serde_json::to_vec_pretty(&manifest).expect("json");
        text.push(b'\n');
        write_atomic(&path, &text).map_err(io(&path))?;
    }
    Ok(done)
}

/// Regenerates every dataset the manifests under `dir` list and compares it
/// with the manifest's sha256 and the file's bytes. Returns the number
/// checked, or one line per mismatch.
pub fn check(dir: &Path) -> Result<usize, Vec<String>> {
    let mut problems = Vec::new();
    let mut checked = 0;
    let kinds = std::fs::read_dir(dir).map_err(|e| vec![format!("{}: {e}", dir.display())])?;
    let mut manifests: Vec<PathBuf> = kinds
        .filter_map(|k| k.ok())
        .map(|k| k.path().join("manifest.json"))
        .filter(|p| p.is_file())
        .collect();
    manifests.sort();
    for path in manifests {
        let manifest = match read_manifest(&path) {
            Ok(m) => m,
            Err(e) => {
                problems.push(e.to_string());
                continue;
            }
        };
        for e in manifest.datasets {
            let at = dir.join(&e.file);
            let task: TaskConfig = match serde_json::from_value(e.task.clone()) {
                Ok(t) => t,
                Err(err) => {
                    problems.push(format!("{}: {}: task: {err}", path.display(), e.file));
                    continue;
                }
            };
            let Some(episodes) = task.task().episodes() else {
                problems.push(format!(
                    "{}: {}: not a learned task",
                    path.display(),
                    e.file
                ));
                continue;
            };
            let d = retbench_tasks::learned::dataset(task.kind(), episodes, e.episodes, e.seed);
            checked += 1;
            if d.file != e.file {
                problems.push(format!(
                    "{}: the manifest's config makes {}, not {}",
                    path.display(),
                    d.file,
                    e.file
                ));
            }
            if d.sha256() != e.sha256 {
                problems.push(format!(
                    "{}: regenerated sha256 {} ≠ manifest {}",
                    e.file,
                    d.sha256(),
                    e.sha256
                ));
            }
            match std::fs::read(&at) {
                Ok(bytes) if bytes == d.bytes => {}
                Ok(bytes) => problems.push(format!(
                    "{}: file sha256 {} ≠ regenerated {}",
                    at.display(),
                    sha256_hex(&bytes),
                    d.sha256()
                )),
                Err(err) => problems.push(format!("{}: {err}", at.display())),
            }
        }
    }
    if problems.is_empty() {
        Ok(checked)
    } else {
        Err(problems)
    }
}
