//! The run folder: the on-disk layout of docs/ARCHITECTURE.md ("Files a run
//! folder holds") and the only code that reads or writes it. `run`,
//! `merge`, `report` and `compare` go through [`RunFolder`] and its typed
//! records ([`PlanFile`], [`RunRecord`], [`FailureRecord`], [`ResultRow`],
//! the metric specs); nothing else parses these files. Every file is written whole to a temporary name and renamed,
//! so a crash or `kill -9` never leaves a half-written file. A finished run
//! is `runs/<run_id>.json`; a failed one is `failures/<run_id>.json` until it
//! succeeds; `results.csv` and `failures.csv` are rebuilt from those files,
//! never appended to. `metrics.json` holds the specs of every metric the
//! plan's tasks report, for the report and the regression check.
//!
//! Run files are verified whenever they are read: one that does not parse,
//! holds another run's id, or was made from another config than the plan's
//! is redone by `run` and refused by `report` and `merge`, so a truncated or
//! misplaced file can never drop or duplicate rows. "Another config" is
//! checked twice: by config hash, and by reading the record's stored config
//! with today's code and comparing it whole with the plan's. The hash leaves
//! defaults out (so that a new option renames nothing); the second check
//! catches a record made before a default changed, whose hash is the same.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use retbench_tasks::{Metric, MetricSpec};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::config::RunConfig;
pub use crate::config::metric_specs;
use crate::suite::{Plan, PlannedRun};

/// What the plan expects of a run's record.
#[derive(Debug, Clone, PartialEq)]
pub struct Expected {
    /// The config hash: the root of the run's random streams.
    pub config_hash: String,
    /// The resolved config, when known: the record's stored config, read by
    /// today's code, must equal it.
    pub config: Option<RunConfig>,
}

/// Run id → what its record must match.
pub type ExpectedRuns = BTreeMap<String, Expected>;

/// A run folder's errors: a file that cannot be read or written, or a bad one.
pub use retbench_core::fsutil::FileError as FolderError;

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> FolderError + '_ {
    move |source| FolderError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// Where and how a run was measured.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Provenance {
    pub retbench_version: String,
    pub git_commit: String,
    /// For a commit `…-dirty`: the SHA-256 of the uncommitted changes,
    /// stored in the run folder as `diffs/<hash>.patch`
    /// ([`crate::provenance`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub diff_hash: Option<String>,
    pub rustc_version: String,
    pub cpu_model: String,
    /// Runs in parallel when this one ran.
    pub jobs: usize,
    /// Kernel threads of this run.
    pub threads: usize,
    pub wall_seconds: f64,
    /// Hash of the frozen dataset a task read, if any.
    #[serde(default)]
    pub dataset_hash: Option<String>,
    /// The CPU kernels the run trained with (`fused` or `unfused`; results
    /// agree to rounding, not bit for bit). Absent in records made before
    /// the fused kernels existed, which used candle's ops.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kernels: Option<String>,
    /// When the run finished, in seconds since the Unix epoch (UTC), for
    /// the reports' provenance. Absent in records made before it was kept.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finished_unix: Option<u64>,
}

/// `runs/<run_id>.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunRecord {
    pub run_id: String,
    pub suite: String,
    pub variant: String,
    pub seed: u64,
    pub params: BTreeMap<String, Value>,
    pub config_hash: String,
    pub config: Value,
    pub metrics: Vec<Metric>,
    pub provenance: Provenance,
    /// The fingerprint of the plan the run was made under
    /// ([`PlanFile::fingerprint`]); absent in records made before it was
    /// kept.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub plan: Option<String>,
}

/// `failures/<run_id>.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FailureRecord {
    pub run_id: String,
    pub error: String,
}

/// Writes `bytes` to `path` atomically (see [`retbench_core::fsutil`]).
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), FolderError> {
    retbench_core::fsutil::write_atomic(path, bytes).map_err(io(path))
}

/// The output folder of one suite's runs.
#[derive(Debug, Clone)]
pub struct RunFolder {
    pub dir: PathBuf,
}

impl RunFolder {
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        RunFolder { dir: dir.into() }
    }

    /// `plan.json`: every planned run.
    pub fn plan_path(&self) -> PathBuf {
        self.dir.join("plan.json")
    }

    /// `metrics.json`: the spec of every metric the plan's tasks report.
    pub fn metrics_path(&self) -> PathBuf {
        self.dir.join("metrics.json")
    }

    /// `results.csv`: one row per metric value of every finished run.
    pub fn results_path(&self) -> PathBuf {
        self.dir.join("results.csv")
    }

    /// `failures.csv`: the runs that failed and why.
    pub fn failures_csv_path(&self) -> PathBuf {
        self.dir.join("failures.csv")
    }

    pub fn runs_dir(&self) -> PathBuf {
        self.dir.join("runs")
    }

    fn failures_dir(&self) -> PathBuf {
        self.dir.join("failures")
    }

    pub fn run_path(&self, run_id: &str) -> PathBuf {
        self.runs_dir().join(format!("{run_id}.json"))
    }

    /// Files a run keeps besides its record (model checkpoints): not part
    /// of the results, so not merged or committed.
    pub fn artifacts_dir(&self, run_id: &str) -> PathBuf {
        self.dir.join("artifacts").join(run_id)
    }

    /// Whether `run` has a valid record made from its config; `Err` says
    /// why an existing file is not one (the run must be redone).
    pub fn is_done(&self, run: &PlannedRun) -> Result<bool, String> {
        let path = self.run_path(&run.run_id);
        if !path.is_file() {
            return Ok(false);
        }
        let expected = BTreeMap::from([(run.run_id.clone(), Expected::of(run))]);
        match verify_run(&path, Some(&expected)) {
            Ok(_) => Ok(true),
            Err(FolderError::Bad { message, .. }) => Err(message),
            Err(e) => Err(e.to_string()),
        }
    }

    /// Brings the records in line with a new plan `planned`: a finished
    /// run the plan has under another id (the same config and seed: its id
    /// ends in the same `s<seed>-<hash>`, and its config hash agrees) is
    /// renamed, so a plan that only names its runs differently reruns
    /// nothing; the records (finished or failed) of runs the plan does not
    /// have move to `retired/runs/` and `retired/failures/`, kept but out of
    /// the results. Returns (renamed, retired).
    pub fn reconcile(&self, planned: &ExpectedRuns) -> Result<(usize, usize), FolderError> {
        let tail = |id: &str| id.rsplitn(3, '-').take(2).collect::<Vec<_>>().join("-");
        let by_tail: BTreeMap<String, &str> =
            planned.keys().map(|id| (tail(id), id.as_str())).collect();
        let (mut renamed, mut retired) = (0, 0);
        for (dir, kind) in [(self.runs_dir(), "runs"), (self.failures_dir(), "failures")] {
            for path in json_files(&dir)? {
                let id = path
                    .file_stem()
                    .unwrap_or_default()
                    .to_string_lossy()
                    .into_owned();
                let record = (kind == "runs")
                    .then(|| verify_run(&path, None).ok())
                    .flatten();
                let same = |e: &Expected| {
                    record
                        .as_ref()
                        .is_some_and(|r| r.config_hash == e.config_hash)
                };
                if planned
                    .get(&id)
                    .is_some_and(|e| kind == "failures" || same(e))
                {
                    continue;
                }
                let new_id = by_tail.get(&tail(&id)).filter(|n| same(&planned[**n]));
                if let (Some(new_id), Some(mut record)) = (new_id, record.clone())
                    && !self.run_path(new_id).exists()
                {
                    record.run_id = new_id.to_string();
                    self.write_run(&record)?;
                    std::fs::remove_file(&path).map_err(io(&path))?;
                    renamed += 1;
                    continue;
                }
                let to = self
                    .dir
                    .join("retired")
                    .join(kind)
                    .join(path.file_name().unwrap());
                std::fs::create_dir_all(to.parent().unwrap()).map_err(io(&to))?;
                std::fs::rename(&path, &to).map_err(io(&path))?;
                retired += 1;
            }
        }
        Ok((renamed, retired))
    }

    /// `diffs/<hash>.patch`: the uncommitted changes that dirty runs were
    /// made with.
    pub fn diff_path(&self, hash: &str) -> PathBuf {
        self.dir.join("diffs").join(format!("{hash}.patch"))
    }

    /// Stores a diff under its hash (once: the name says the contents).
    pub fn write_diff(&self, hash: &str, diff: &[u8]) -> Result<(), FolderError> {
        let path = self.diff_path(hash);
        if path.is_file() {
            return Ok(());
        }
        write_atomic(&path, diff)
    }

    /// Whether any record of `run_id` exists (valid or not).
    pub fn has_record(&self, run_id: &str) -> bool {
        self.run_path(run_id).is_file()
    }

    /// Removes temporary files left by writers that were killed: those of
    /// this machine whose process is gone. Writers still alive, such as
    /// another shard writing into the same folder, keep theirs; so do
    /// writers on other nodes of a cluster sharing the folder (their pids
    /// mean nothing here) unless their file is a day old. Needs /proc;
    /// elsewhere a no-op.
    pub fn remove_stale_temp_files(&self) {
        if !Path::new("/proc/self").exists() {
            return;
        }
        let here = retbench_core::fsutil::host_name();
        let day = std::time::Duration::from_secs(24 * 3600);
        for dir in [self.dir.clone(), self.runs_dir(), self.failures_dir()] {
            let Ok(entries) = std::fs::read_dir(&dir) else {
                continue;
            };
            for entry in entries.flatten() {
                let name = entry.file_name().to_string_lossy().into_owned();
                let Some((host, pid)) = retbench_core::fsutil::temp_file_writer(&name) else {
                    continue;
                };
                let stale = if host.is_empty() || host == here {
                    !Path::new("/proc").join(pid.to_string()).exists()
                } else {
                    entry
                        .metadata()
                        .and_then(|m| m.modified())
                        .ok()
                        .and_then(|t| t.elapsed().ok())
                        .is_some_and(|age| age > day)
                };
                if stale {
                    let _ = std::fs::remove_file(entry.path());
                }
            }
        }
    }

    /// Writes `plan.json` and `metrics.json`.
    pub fn write_plan(&self, plan: &Plan) -> Result<(), FolderError> {
        self.write_metric_specs(&plan_metric_specs(plan))?;
        let mut doc = serde_json::json!({
            "suite": plan.suite,
            "description": plan.description,
            "file": plan.file.display().to_string(),
            "profile": plan.profile,
            "fingerprint": plan_fingerprint(plan),
            "param_columns": plan.param_columns,
            "figures": plan.figures,
            "runs": plan.runs,
        });
        // Only where declared: plans of suites without one keep their bytes.
        if !plan.paper.is_empty() {
            doc["paper"] = serde_json::json!(plan.paper);
        }
        let path = self.plan_path();
        write_atomic(&path, &serde_json::to_vec_pretty(&doc).expect("json"))
    }

    pub fn write_metric_specs(&self, specs: &[MetricSpec]) -> Result<(), FolderError> {
        let path = self.metrics_path();
        write_atomic(&path, &serde_json::to_vec_pretty(specs).expect("json"))
    }

    /// Records a finished run and clears any earlier failure of it.
    pub fn write_run(&self, record: &RunRecord) -> Result<(), FolderError> {
        let bytes = serde_json::to_vec_pretty(record).expect("json");
        write_atomic(&self.run_path(&record.run_id), &bytes)?;
        let failed = self.failures_dir().join(format!("{}.json", record.run_id));
        if failed.exists() {
            std::fs::remove_file(&failed).map_err(io(&failed))?;
        }
        Ok(())
    }

    pub fn write_failure(&self, failure: &FailureRecord) -> Result<(), FolderError> {
        let path = self.failures_dir().join(format!("{}.json", failure.run_id));
        write_atomic(&path, &serde_json::to_vec_pretty(failure).expect("json"))
    }

    fn read_dir_json<T: for<'de> Deserialize<'de>>(
        dir: &Path,
    ) -> Result<Vec<(PathBuf, T)>, FolderError> {
        json_files(dir)?
            .into_iter()
            .map(|p| {
                let bytes = std::fs::read(&p).map_err(io(&p))?;
                let value = serde_json::from_slice(&bytes).map_err(|e| FolderError::Bad {
                    path: p.clone(),
                    message: e.to_string(),
                })?;
                Ok((p, value))
            })
            .collect()
    }

    /// Every finished run, sorted by file name, each verified: it parses,
    /// its id is its file name, and where `expected` (from the plan) names
    /// it, its config matches.
    pub fn runs(&self, expected: Option<&ExpectedRuns>) -> Result<Vec<RunRecord>, FolderError> {
        json_files(&self.runs_dir())?
            .iter()
            .map(|p| verify_run(p, expected))
            .collect()
    }

    pub fn failures(&self) -> Result<Vec<FailureRecord>, FolderError> {
        Ok(Self::read_dir_json(&self.failures_dir())?
            .into_iter()
            .map(|(_, r)| r)
            .collect())
    }

    /// Rebuilds `results.csv` and `failures.csv` from the run files. Rows
    /// follow `order` (run ids in plan order; others after, sorted).
    pub fn rebuild_csvs(
        &self,
        order: &[String],
        param_columns: &[String],
        expected: Option<&ExpectedRuns>,
    ) -> Result<(usize, usize), FolderError> {
        let mut runs = self.runs(expected)?;
        let rank: BTreeMap<&str, usize> = order
            .iter()
            .enumerate()
            .map(|(i, id)| (id.as_str(), i))
            .collect();
        runs.sort_by_key(|r| {
            (
                rank.get(r.run_id.as_str()).copied().unwrap_or(usize::MAX),
                r.run_id.clone(),
            )
        });
        let mut columns: Vec<String> = param_columns.to_vec();
        for r in &runs {
            for p in r.params.keys() {
                if !columns.contains(p) {
                    columns.push(p.clone());
                }
            }
        }
        let mut w = csv::Writer::from_writer(Vec::new());
        let mut header = vec![
            "run_id", "suite", "variant", "seed", "metric", "slice", "step", "value",
        ];
        header.extend(columns.iter().map(String::as_str));
        w.write_record(&header).expect("in-memory csv");
        let mut rows = 0;
        for r in &runs {
            let params: Vec<String> = columns
                .iter()
                .map(|c| r.params.get(c).map(csv_value).unwrap_or_default())
                .collect();
            for m in &r.metrics {
                let mut row = vec![
                    r.run_id.clone(),
                    r.suite.clone(),
                    r.variant.clone(),
                    r.seed.to_string(),
                    m.metric.clone(),
                    m.slice.clone(),
                    m.step.map(|s| s.to_string()).unwrap_or_default(),
                    format_value(m.value),
                ];
                row.extend(params.iter().cloned());
                w.write_record(&row).expect("in-memory csv");
                rows += 1;
            }
        }
        let bytes = w.into_inner().expect("in-memory csv");
        write_atomic(&self.results_path(), &bytes)?;

        let failures = self.failures()?;
        let mut w = csv::Writer::from_writer(Vec::new());
        w.write_record(["run_id", "error"]).expect("in-memory csv");
        for f in &failures {
            w.write_record([&f.run_id, &f.error])
                .expect("in-memory csv");
        }
        write_atomic(
            &self.failures_csv_path(),
            &w.into_inner().expect("in-memory csv"),
        )?;
        Ok((rows, failures.len()))
    }
}

/// `plan.json` as the tools read it back. Every field has a default, so a
/// folder from an older retbench (or a hand-written test folder) reads.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
pub struct PlanFile {
    #[serde(default)]
    pub suite: String,
    #[serde(default)]
    pub description: String,
    #[serde(default)]
    pub profile: Option<String>,
    /// The varied parameters: the extra columns of `results.csv`.
    #[serde(default)]
    pub param_columns: Vec<String>,
    /// The figures the suite declares (null in older plans).
    #[serde(default, deserialize_with = "null_as_empty")]
    pub figures: Vec<retbench_tasks::FigureSpec>,
    /// The suite's headline figures (absent in older plans).
    #[serde(default, deserialize_with = "null_as_empty")]
    pub paper: Vec<retbench_tasks::PaperFigure>,
    #[serde(default)]
    pub runs: Vec<PlanEntry>,
}

/// One run of `plan.json`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct PlanEntry {
    pub run_id: String,
    pub config_hash: String,
    /// The resolved config as written; read by today's code on demand
    /// ([`PlanFile::expectations`]).
    pub config: Value,
}

fn null_as_empty<'de, D: serde::Deserializer<'de>, T: Deserialize<'de>>(
    d: D,
) -> Result<Vec<T>, D::Error> {
    Ok(Option::<Vec<T>>::deserialize(d)?.unwrap_or_default())
}

/// A plan's identity: 16 hex digits of the blake3 hash of its suite, its
/// profile, and each run's id and config hash in plan order. Two folders
/// hold the same sweep exactly when their fingerprints agree; the
/// description, the file's path and the declared figures are not part of
/// it (they change no result).
pub fn fingerprint<'a>(
    suite: &str,
    profile: Option<&str>,
    runs: impl IntoIterator<Item = (&'a str, &'a str)>,
) -> String {
    let mut h = blake3::Hasher::new();
    let mut field = |s: &str| {
        h.update(&(s.len() as u64).to_le_bytes());
        h.update(s.as_bytes());
    };
    field(suite);
    field(profile.unwrap_or(""));
    field(if profile.is_some() { "profile" } else { "none" });
    for (id, hash) in runs {
        field(id);
        field(hash);
    }
    h.finalize().to_hex()[..16].to_string()
}

/// The fingerprint of a plan as `run` writes it.
pub fn plan_fingerprint(plan: &Plan) -> String {
    fingerprint(
        &plan.suite,
        plan.profile.as_deref(),
        plan.runs
            .iter()
            .map(|r| (r.run_id.as_str(), r.config_hash.as_str())),
    )
}

impl PlanFile {
    /// What `run` writes for `plan`, as the tools read it back.
    pub fn of(plan: &Plan) -> Self {
        PlanFile {
            suite: plan.suite.clone(),
            description: plan.description.clone(),
            profile: plan.profile.clone(),
            param_columns: plan.param_columns.clone(),
            figures: plan.figures.clone(),
            paper: plan.paper.clone(),
            runs: plan
                .runs
                .iter()
                .map(|r| PlanEntry {
                    run_id: r.run_id.clone(),
                    config_hash: r.config_hash.clone(),
                    config: serde_json::to_value(&r.config).expect("json"),
                })
                .collect(),
        }
    }

    /// This plan's identity (see [`fingerprint`]), computed from its
    /// contents, so that plans written before fingerprints were kept have
    /// one too.
    pub fn fingerprint(&self) -> String {
        fingerprint(
            &self.suite,
            self.profile.as_deref(),
            self.runs
                .iter()
                .map(|r| (r.run_id.as_str(), r.config_hash.as_str())),
        )
    }

    /// Whether `other` is a plan of the same suite and profile (a sweep of
    /// the same question, maybe with other runs).
    pub fn same_suite(&self, other: &PlanFile) -> bool {
        self.suite == other.suite && self.profile == other.profile
    }

    /// The first way `other` differs from this plan, in words (`None`:
    /// the same plan).
    pub fn first_difference(&self, other: &PlanFile) -> Option<String> {
        let profile = |p: &Option<String>| p.clone().unwrap_or_else(|| "none".into());
        if self.suite != other.suite {
            return Some(format!("suite {:?} against {:?}", self.suite, other.suite));
        }
        if self.profile != other.profile {
            return Some(format!(
                "profile {} against {}",
                profile(&self.profile),
                profile(&other.profile)
            ));
        }
        for (i, (a, b)) in self.runs.iter().zip(&other.runs).enumerate() {
            if (&a.run_id, &a.config_hash) != (&b.run_id, &b.config_hash) {
                return Some(format!(
                    "run {} of the plan: {} (config {}) against {} (config {})",
                    i + 1,
                    a.run_id,
                    a.config_hash,
                    b.run_id,
                    b.config_hash
                ));
            }
        }
        let (n, m) = (self.runs.len(), other.runs.len());
        (n != m).then(|| format!("{n} runs against {m} (the first {} agree)", n.min(m)))
    }

    /// Run ids in plan order.
    pub fn order(&self) -> Vec<String> {
        self.runs.iter().map(|r| r.run_id.clone()).collect()
    }

    /// What each run's record must match: its config hash, and its config
    /// where today's code reads it.
    pub fn expectations(&self) -> ExpectedRuns {
        self.runs
            .iter()
            .map(|r| {
                let expected = Expected {
                    config_hash: r.config_hash.clone(),
                    config: serde_json::from_value(r.config.clone()).ok(),
                };
                (r.run_id.clone(), expected)
            })
            .collect()
    }
}

/// One row of `results.csv`.
#[derive(Debug, Clone, PartialEq)]
pub struct ResultRow {
    pub run_id: String,
    pub suite: String,
    pub variant: String,
    pub seed: u64,
    pub metric: String,
    pub slice: String,
    pub step: String,
    pub value: f64,
    /// Values of the parameter columns, in column order.
    pub params: Vec<String>,
}

/// The fixed columns of `results.csv`, before the parameter columns.
pub const RESULT_COLUMNS: [&str; 8] = [
    "run_id", "suite", "variant", "seed", "metric", "slice", "step", "value",
];

/// Reads a `results.csv`: the parameter column names and every row.
pub fn read_results(path: &Path) -> Result<(Vec<String>, Vec<ResultRow>), FolderError> {
    let bad = |message: String| FolderError::Bad {
        path: path.to_path_buf(),
        message,
    };
    let mut reader = csv::Reader::from_path(path).map_err(|e| match e.kind() {
        csv::ErrorKind::Io(_) => FolderError::Io {
            path: path.to_path_buf(),
            source: std::io::Error::other(e.to_string()),
        },
        _ => bad(e.to_string()),
    })?;
    let header: Vec<String> = reader
        .headers()
        .map_err(|e| bad(e.to_string()))?
        .iter()
        .map(String::from)
        .collect();
    let fixed = RESULT_COLUMNS.len();
    if header.len() < fixed || header[..fixed] != RESULT_COLUMNS {
        return Err(bad(format!(
            "expected columns {} first, found {}",
            RESULT_COLUMNS.join(","),
            header.join(",")
        )));
    }
    let params = header[fixed..].to_vec();
    let mut rows = Vec::new();
    for (i, record) in reader.records().enumerate() {
        let r = record.map_err(|e| bad(e.to_string()))?;
        let line = i + 2;
        let seed = r[3]
            .parse()
            .map_err(|_| bad(format!("line {line}: seed {:?} is not a number", &r[3])))?;
        let value = r[7]
            .parse()
            .map_err(|_| bad(format!("line {line}: value {:?} is not a number", &r[7])))?;
        rows.push(ResultRow {
            run_id: r[0].to_string(),
            suite: r[1].to_string(),
            variant: r[2].to_string(),
            seed,
            metric: r[4].to_string(),
            slice: r[5].to_string(),
            step: r[6].to_string(),
            value,
            params: r.iter().skip(fixed).map(String::from).collect(),
        });
    }
    Ok((params, rows))
}

impl RunFolder {
    /// `plan.json`, if the folder has one.
    pub fn plan(&self) -> Result<Option<PlanFile>, FolderError> {
        let path = self.plan_path();
        let Ok(bytes) = std::fs::read(&path) else {
            return Ok(None);
        };
        serde_json::from_slice(&bytes)
            .map(Some)
            .map_err(|e| FolderError::Bad {
                path,
                message: format!("not a readable plan: {e}"),
            })
    }

    /// `plan.json`'s bytes as written (a merge copies them unchanged).
    pub fn plan_bytes(&self) -> Option<Vec<u8>> {
        std::fs::read(self.plan_path()).ok()
    }

    /// `metrics.json`: the spec of every metric the plan's tasks report.
    pub fn metric_specs(&self) -> Result<Vec<MetricSpec>, FolderError> {
        let path = self.metrics_path();
        let bytes = std::fs::read(&path).map_err(io(&path))?;
        serde_json::from_slice(&bytes).map_err(|e| FolderError::Bad {
            path,
            message: format!("not a list of metric specs: {e}"),
        })
    }

    /// `metrics.json`'s bytes as written, if any (a merge copies them).
    pub fn metric_specs_bytes(&self) -> Option<Vec<u8>> {
        std::fs::read(self.metrics_path()).ok()
    }

    /// Writes another folder's `plan.json` and `metrics.json` bytes
    /// unchanged (a merge adopts its shards' plan).
    pub fn write_plan_bytes(&self, plan: &[u8], specs: Option<&[u8]>) -> Result<(), FolderError> {
        if let Some(specs) = specs {
            write_atomic(&self.metrics_path(), specs)?;
        }
        write_atomic(&self.plan_path(), plan)
    }

    /// Whether the folder has `metrics.json`.
    pub fn has_metric_specs(&self) -> bool {
        self.metrics_path().is_file()
    }

    /// `results.csv`: the parameter column names and every row.
    pub fn results(&self) -> Result<(Vec<String>, Vec<ResultRow>), FolderError> {
        read_results(&self.results_path())
    }
}

/// The `*.json` files of `dir` (none if it is missing), sorted, without
/// hidden ones (temporary files of writers in flight).
fn json_files(dir: &Path) -> Result<Vec<PathBuf>, FolderError> {
    if !dir.exists() {
        return Ok(Vec::new());
    }
    let mut paths: Vec<PathBuf> = std::fs::read_dir(dir)
        .map_err(io(dir))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            p.extension().is_some_and(|e| e == "json")
                && !p
                    .file_name()
                    .is_some_and(|n| n.to_string_lossy().starts_with('.'))
        })
        .collect();
    paths.sort();
    Ok(paths)
}

/// Reads and checks one run file (see the module docs).
pub fn verify_run(path: &Path, expected: Option<&ExpectedRuns>) -> Result<RunRecord, FolderError> {
    let bad = |message: String| FolderError::Bad {
        path: path.to_path_buf(),
        message,
    };
    let bytes = std::fs::read(path).map_err(io(path))?;
    let record: RunRecord = serde_json::from_slice(&bytes).map_err(|e| {
        bad(format!(
            "not a readable run record (truncated or corrupted?): {e}"
        ))
    })?;
    let stem = path
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default();
    if record.run_id != stem {
        return Err(bad(format!(
            "holds run {}, not {stem}: a record copied under another run's name",
            record.run_id
        )));
    }
    if let Some(exp) = expected.and_then(|e| e.get(&record.run_id)) {
        let hash = &exp.config_hash;
        if *hash != record.config_hash {
            return Err(bad(format!(
                "was made from config {}, but the plan's config for {stem} hashes to {hash}",
                record.config_hash
            )));
        }
        if let Some(planned) = &exp.config {
            match serde_json::from_value::<RunConfig>(record.config.clone()) {
                Ok(stored) if stored == *planned => {}
                Ok(stored) => {
                    return Err(bad(format!(
                        "was made from a config that differs from the plan's for {stem} under the \
                         same hash (a default changed since it ran): {}",
                        config_difference(&stored, planned)
                    )));
                }
                Err(e) => {
                    return Err(bad(format!(
                        "holds a config that today's retbench cannot read: {e}"
                    )));
                }
            }
        }
    }
    if let Some(m) = record.metrics.iter().find(|m| m.value.is_infinite()) {
        return Err(bad(format!("metric {} is {}", m.metric, m.value)));
    }
    Ok(record)
}

impl Expected {
    pub fn of(run: &PlannedRun) -> Self {
        Expected {
            config_hash: run.config_hash.clone(),
            config: Some(run.config.clone()),
        }
    }
}

/// What every run of `plan` must match.
pub fn plan_expectations(plan: &Plan) -> ExpectedRuns {
    plan.runs
        .iter()
        .map(|r| (r.run_id.clone(), Expected::of(r)))
        .collect()
}

/// The first dotted path at which two configs' JSON forms differ, with both
/// values: what a stale record is told apart by.
fn config_difference(stored: &RunConfig, planned: &RunConfig) -> String {
    fn walk(a: &Value, b: &Value, path: &str) -> Option<String> {
        match (a, b) {
            (Value::Object(x), Value::Object(y)) => {
                let keys: std::collections::BTreeSet<&String> = x.keys().chain(y.keys()).collect();
                keys.into_iter().find_map(|k| {
                    let p = if path.is_empty() {
                        k.clone()
                    } else {
                        format!("{path}.{k}")
                    };
                    walk(
                        x.get(k).unwrap_or(&Value::Null),
                        y.get(k).unwrap_or(&Value::Null),
                        &p,
                    )
                })
            }
            _ if a == b => None,
            _ => Some(format!("{path} is {a} in the record, {b} in the plan")),
        }
    }
    let json = |c: &RunConfig| serde_json::to_value(c).expect("configs serialize");
    walk(&json(stored), &json(planned), "").unwrap_or_else(|| "(no difference in JSON)".into())
}

/// The specs of every metric the plan's tasks report, by name.
pub fn plan_metric_specs(plan: &Plan) -> Vec<MetricSpec> {
    metric_specs(plan.runs.iter().map(|r| &r.config))
}

/// A parameter value as a CSV cell: scalars plain, structures as compact JSON.
pub fn csv_value(v: &Value) -> String {
    match v {
        Value::Null => "null".into(),
        Value::String(s) => s.clone(),
        Value::Number(n) => n.to_string(),
        Value::Bool(b) => b.to_string(),
        other => other.to_string(),
    }
}

/// Full precision, shortest round-trip form.
fn format_value(x: f64) -> String {
    if x.is_finite() {
        format!("{x}")
    } else {
        x.to_string()
    }
}
