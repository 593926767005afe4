//! Slurm as an executor of a plan: the batch scripts of a submission (an
//! array job with one shard of the plan per task, each running `retbench run
//! --shard K/N` on the shared output folder, and a report job that depends on
//! the array with `afterany`), their submission with `sbatch`, the status of
//! each shard from the run folder and `squeue`/`sacct`, and the resubmission
//! of the shards whose runs are missing. Nothing here runs a task: the shards
//! are ordinary `run` invocations, so a Slurm sweep resumes, verifies and
//! reports exactly as a local one. What was submitted is kept in
//! `OUT/slurm/submission.json`, the scripts beside it, the logs in `logs/`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use serde::{Deserialize, Serialize};

use crate::folder::{FolderError, RunFolder, verify_run};
use crate::runner::RunError;
use crate::suite::Plan;

#[derive(Debug, thiserror::Error)]
pub enum SlurmError {
    /// Bad input: nothing was submitted.
    #[error("{0}")]
    Usage(String),
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    /// A Slurm command failed.
    #[error("`{command}` failed ({status}): {stderr}")]
    Command {
        command: String,
        status: String,
        stderr: String,
    },
    #[error(transparent)]
    Store(#[from] FolderError),
    #[error(transparent)]
    Run(#[from] RunError),
}

impl SlurmError {
    /// Whether the input was at fault (the CLI's exit code 2).
    pub fn is_usage(&self) -> bool {
        matches!(
            self,
            SlurmError::Usage(_) | SlurmError::Run(RunError::Usage(_))
        )
    }
}

fn io(path: &Path) -> impl Fn(std::io::Error) -> SlurmError + '_ {
    move |source| SlurmError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// What each job asks of the scheduler (`#SBATCH` lines). Only
/// `cpus_per_task` is always written: it also sets the shard's cores.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Resources {
    pub cpus_per_task: usize,
    pub partition: Option<String>,
    pub time: Option<String>,
    pub mem: Option<String>,
    pub account: Option<String>,
    pub qos: Option<String>,
    /// Further `sbatch` options, one per `#SBATCH` line (e.g. `--gres=gpu:1`).
    pub extra: Vec<String>,
}

impl Resources {
    fn directives(&self, with_cpus: bool) -> Vec<String> {
        let mut lines = Vec::new();
        if with_cpus {
            lines.push(format!("--cpus-per-task={}", self.cpus_per_task));
        }
        let named = [
            ("partition", &self.partition),
            ("time", &self.time),
            ("mem", &self.mem),
            ("account", &self.account),
            ("qos", &self.qos),
        ];
        for (name, value) in named {
            if let Some(v) = value {
                lines.push(format!("--{name}={v}"));
            }
        }
        lines.extend(self.extra.iter().cloned());
        lines
    }
}

/// One `sbatch` of the array and of its report job.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Submitted {
    pub array_job: String,
    pub report_job: String,
    /// The array indices (= shards) submitted.
    pub shards: Vec<usize>,
    pub unix: u64,
}

/// `OUT/slurm/submission.json`: everything `status` and `resume` need.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Submission {
    pub suite: String,
    /// The suite file and the output folder as given, relative to `workdir`.
    pub suite_file: PathBuf,
    pub profile: Option<String>,
    pub out: PathBuf,
    /// Where the jobs run (`--chdir`): the directory `submit` ran in.
    pub workdir: PathBuf,
    /// The retbench binary the jobs run (on the shared filesystem).
    pub retbench: PathBuf,
    /// N: task K runs shard K/N.
    pub tasks: usize,
    pub runs: usize,
    pub resources: Resources,
    #[serde(default)]
    pub jobs: Vec<Submitted>,
}

impl Submission {
    fn dir(&self) -> PathBuf {
        self.workdir.join(&self.out).join("slurm")
    }

    pub fn array_script_path(&self) -> PathBuf {
        self.dir().join("array.sbatch")
    }

    pub fn report_script_path(&self) -> PathBuf {
        self.dir().join("report.sbatch")
    }

    fn json_path(out: &Path) -> PathBuf {
        out.join("slurm").join("submission.json")
    }

    /// Reads `OUT/slurm/submission.json`.
    pub fn load(out: &Path) -> Result<Self, SlurmError> {
        let path = Self::json_path(out);
        let bytes = std::fs::read(&path).map_err(|e| {
            SlurmError::Usage(format!(
                "{}: no Slurm submission here ({e}); `retbench slurm submit` writes it",
                path.display()
            ))
        })?;
        serde_json::from_slice(&bytes).map_err(|e| {
            SlurmError::Usage(format!("{}: not a submission record: {e}", path.display()))
        })
    }

    fn save(&self) -> Result<(), SlurmError> {
        let path = Self::json_path(&self.workdir.join(&self.out));
        let bytes = serde_json::to_vec_pretty(self).expect("json");
        crate::folder::write_atomic(&path, &bytes)?;
        Ok(())
    }

    /// The array job's script: one shard per task, all into the same folder.
    pub fn array_script(&self) -> String {
        let mut s = self.header(
            &format!("retbench-{}", self.suite),
            "shard-%a-job-%A.out",
            true,
        );
        s.insert_str(
            s.find("#SBATCH").unwrap_or(s.len()),
            &format!(
                "# One shard of the plan ({} runs) per array task: task K runs shard K/{}.\n\
                 # Resubmit the shards with runs missing: retbench slurm resume {}\n",
                self.runs,
                self.tasks,
                sh_quote(&self.out.display().to_string()),
            ),
        );
        s.push_str(&format!("#SBATCH --array=0-{}\n", self.tasks - 1));
        s.push_str("set -euo pipefail\n");
        s.push_str(&format!(
            "exec {} run {}{} --out {} --shard \"$SLURM_ARRAY_TASK_ID/{}\" --cores \"${{SLURM_CPUS_PER_TASK:-{}}}\" --no-report\n",
            sh_quote(&self.retbench.display().to_string()),
            sh_quote(&self.suite_file.display().to_string()),
            self.profile
                .as_ref()
                .map(|p| format!(" --profile {}", sh_quote(p)))
                .unwrap_or_default(),
            sh_quote(&self.out.display().to_string()),
            self.tasks,
            self.resources.cpus_per_task,
        ));
        s
    }

    /// The report job's script: rebuild the tables from every run file,
    /// draw the report, then log the status of every shard (failures too).
    pub fn report_script(&self) -> String {
        let rb = sh_quote(&self.retbench.display().to_string());
        let out = sh_quote(&self.out.display().to_string());
        let mut s = self.header(
            &format!("retbench-{}-report", self.suite),
            "report-job-%j.out",
            false,
        );
        s.push_str("set -uo pipefail\n");
        s.push_str(&format!("{rb} report {out}\nstatus=$?\n"));
        s.push_str(&format!("{rb} slurm status {out}\nexit $status\n"));
        s
    }

    fn header(&self, name: &str, log: &str, with_cpus: bool) -> String {
        let mut s = format!(
            "#!/bin/bash\n# Written by `retbench slurm submit` for suite {}{}.\n",
            self.suite,
            self.profile
                .as_ref()
                .map(|p| format!(" (profile {p})"))
                .unwrap_or_default()
        );
        let mut lines = vec![
            format!("--job-name={name}"),
            format!("--chdir={}", self.workdir.display()),
            format!("--output={}", self.dir().join("logs").join(log).display()),
        ];
        lines.extend(self.resources.directives(with_cpus));
        for l in lines {
            s.push_str(&format!("#SBATCH {l}\n"));
        }
        s
    }
}

/// Quotes a word for the shell: bare when it is plainly safe, else in
/// single quotes.
pub fn sh_quote(word: &str) -> String {
    let plain = !word.is_empty()
        && word
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_./=:,+@%".contains(c));
    if plain {
        word.to_string()
    } else {
        format!("'{}'", word.replace('\'', r"'\''"))
    }
}

/// Array indices as Slurm writes them: `0-3,7,9-10`.
pub fn array_spec(indices: &[usize]) -> String {
    let mut parts = Vec::new();
    let mut i = 0;
    while i < indices.len() {
        let start = indices[i];
        let mut end = start;
        while i + 1 < indices.len() && indices[i + 1] == end + 1 {
            i += 1;
            end = indices[i];
        }
        parts.push(if start == end {
            start.to_string()
        } else {
            format!("{start}-{end}")
        });
        i += 1;
    }
    parts.join(",")
}

/// What `submit` was asked.
#[derive(Debug, Clone)]
pub struct Request {
    /// The suite file and output folder as the user gave them (relative
    /// to the current directory, where the jobs will run).
    pub suite_file: PathBuf,
    pub out: PathBuf,
    /// Array tasks; `None`: one per run. Capped by the runs and MaxArraySize.
    pub tasks: Option<usize>,
    pub resources: Resources,
    /// Accept a folder holding an earlier plan of the suite (see `run --replan`).
    pub replan: bool,
    pub dry_run: bool,
}

/// What `submit` did, for the CLI to print.
#[derive(Debug, Clone)]
pub struct Outcome {
    pub submission: Submission,
    /// The `sbatch` command lines, in order (the report job's names its
    /// dependency as `afterany:<array job>` when not submitted).
    pub commands: Vec<String>,
    /// Why the task count differs from what was asked, where it does.
    pub notes: Vec<String>,
}

/// Writes the scripts of `plan` under `OUT/slurm/` and, unless a dry run,
/// submits the array and its report job. Every check (folder, paths,
/// `sbatch` on PATH) comes before anything is written.
pub fn submit(plan: &Plan, req: &Request) -> Result<Outcome, SlurmError> {
    let workdir = std::env::current_dir().map_err(io(Path::new(".")))?;
    check_path_words(&[&workdir, &workdir.join(&req.out)])?;
    if req.tasks == Some(0) {
        return Err(SlurmError::Usage(
            "--tasks 0: need at least one task".into(),
        ));
    }
    if plan.runs.is_empty() {
        return Err(SlurmError::Usage(format!(
            "{}: the plan has no runs; nothing to submit",
            plan.file.display()
        )));
    }
    crate::runner::check_out(plan, &workdir.join(&req.out), req.replan)?;
    if !req.dry_run {
        need_on_path("sbatch")?;
    }
    let max_array = if req.dry_run { None } else { max_array_size() };
    let (tasks, notes) = task_count(req.tasks, plan.runs.len(), max_array);
    let retbench = std::env::current_exe().map_err(io(Path::new("retbench")))?;
    let mut submission = Submission {
        suite: plan.suite.clone(),
        suite_file: req.suite_file.clone(),
        profile: plan.profile.clone(),
        out: req.out.clone(),
        workdir,
        retbench,
        tasks,
        runs: plan.runs.len(),
        resources: req.resources.clone(),
        jobs: Vec::new(),
    };
    let store = RunFolder::new(submission.workdir.join(&req.out));
    store.write_plan(plan)?;
    write_scripts(&submission)?;
    submission.save()?;
    let commands = submit_jobs(&mut submission, None, req.dry_run)?;
    Ok(Outcome {
        submission,
        commands,
        notes,
    })
}

/// The array size: as asked, else one task per run; never more tasks than
/// runs (a task without runs does nothing) nor than the site's MaxArraySize.
fn task_count(asked: Option<usize>, runs: usize, max_array: Option<usize>) -> (usize, Vec<String>) {
    let mut notes = Vec::new();
    let mut tasks = asked.unwrap_or(runs);
    if tasks > runs {
        notes.push(format!(
            "--tasks {tasks}: the plan has {runs} runs; {runs} tasks"
        ));
        tasks = runs;
    }
    if let Some(max) = max_array
        && tasks > max
    {
        notes.push(format!(
            "{tasks} tasks: the cluster's MaxArraySize is {max}; {max} tasks, several runs each"
        ));
        tasks = max;
    }
    (tasks, notes)
}

fn check_path_words(paths: &[&Path]) -> Result<(), SlurmError> {
    for p in paths {
        let text = p.display().to_string();
        if text.chars().any(char::is_whitespace) {
            return Err(SlurmError::Usage(format!(
                "{text:?}: an #SBATCH line cannot hold a path with white space; \
                 submit from (and into) a path without it"
            )));
        }
    }
    Ok(())
}

fn need_on_path(program: &str) -> Result<(), SlurmError> {
    let found = std::env::var_os("PATH")
        .map(|paths| std::env::split_paths(&paths).any(|d| d.join(program).is_file()))
        .unwrap_or(false);
    if found {
        Ok(())
    } else {
        Err(SlurmError::Usage(format!(
            "{program} is not on PATH: submit from a machine with the Slurm client commands \
             (a login node); nothing was submitted (--dry-run writes the scripts without it)"
        )))
    }
}

/// The site's MaxArraySize (`scontrol show config`); task indices must stay
/// below it. `None` where it cannot be read.
fn max_array_size() -> Option<usize> {
    let out = Command::new("scontrol")
        .args(["show", "config"])
        .output()
        .ok()?;
    String::from_utf8_lossy(&out.stdout).lines().find_map(|l| {
        let (k, v) = l.split_once('=')?;
        (k.trim() == "MaxArraySize")
            .then(|| v.trim().parse().ok())
            .flatten()
    })
}

fn write_scripts(s: &Submission) -> Result<(), SlurmError> {
    let logs = s.dir().join("logs");
    std::fs::create_dir_all(&logs).map_err(io(&logs))?;
    crate::folder::write_atomic(&s.array_script_path(), s.array_script().as_bytes())?;
    crate::folder::write_atomic(&s.report_script_path(), s.report_script().as_bytes())?;
    Ok(())
}

/// Submits the array (all shards, or `shards`) and the report job after it;
/// records both in the submission. A dry run only returns the commands.
fn submit_jobs(
    s: &mut Submission,
    shards: Option<&[usize]>,
    dry_run: bool,
) -> Result<Vec<String>, SlurmError> {
    let all: Vec<usize> = (0..s.tasks).collect();
    let shards = shards.unwrap_or(&all).to_vec();
    let mut array_args = vec!["--parsable".to_string()];
    if shards != all {
        array_args.push(format!("--array={}", array_spec(&shards)));
    }
    array_args.push(s.array_script_path().display().to_string());
    let report_args = |dep: &str| {
        vec![
            "--parsable".to_string(),
            format!("--dependency=afterany:{dep}"),
            s.report_script_path().display().to_string(),
        ]
    };
    let line = |args: &[String]| {
        std::iter::once("sbatch".to_string())
            .chain(args.iter().map(|a| sh_quote(a)))
            .collect::<Vec<_>>()
            .join(" ")
    };
    if dry_run {
        return Ok(vec![
            line(&array_args),
            line(&report_args("<array job id>")),
        ]);
    }
    let array_job = sbatch(&array_args)?;
    let report = report_args(&array_job);
    let report_job = sbatch(&report)?;
    s.jobs.push(Submitted {
        array_job: array_job.clone(),
        report_job,
        shards,
        unix: std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs()),
    });
    s.save()?;
    Ok(vec![line(&array_args), line(&report)])
}

/// Runs `sbatch --parsable …` and returns the job id it prints
/// (`123` or `123;cluster`).
fn sbatch(args: &[String]) -> Result<String, SlurmError> {
    let out = Command::new("sbatch")
        .args(args)
        .output()
        .map_err(io(Path::new("sbatch")))?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    let id = stdout.trim().split(';').next().unwrap_or("").to_string();
    if !out.status.success() || id.is_empty() || !id.chars().all(|c| c.is_ascii_digit()) {
        return Err(SlurmError::Command {
            command: format!("sbatch {}", args.join(" ")),
            status: out.status.to_string(),
            stderr: String::from_utf8_lossy(&out.stderr).trim().to_string(),
        });
    }
    Ok(id)
}

/// One shard's runs as the folder holds them, and its latest Slurm state.
#[derive(Debug, Clone, PartialEq)]
pub struct ShardStatus {
    pub shard: usize,
    pub runs: usize,
    pub done: usize,
    pub failed: usize,
    pub missing: usize,
    /// `123_4` of the latest submission that included the shard.
    pub job: Option<String>,
    /// PENDING, RUNNING, COMPLETED … (`squeue`, else `sacct`); `None`
    /// where Slurm no longer knows the job (or cannot be asked).
    pub state: Option<String>,
}

impl ShardStatus {
    /// Queued or running: resubmitting it would run its runs twice.
    pub fn is_active(&self) -> bool {
        self.state.as_deref().is_some_and(|s| {
            [
                "PENDING",
                "RUNNING",
                "CONFIGURING",
                "COMPLETING",
                "REQUEUED",
                "RESIZING",
                "SUSPENDED",
            ]
            .contains(&s)
        })
    }
}

/// A submission's state: its record, each shard, the latest report job
/// and its state.
#[derive(Debug, Clone)]
pub struct Status {
    pub submission: Submission,
    pub shards: Vec<ShardStatus>,
    pub report_job: Option<(String, Option<String>)>,
}

/// Every shard of the submission in `out`, and the latest report job's state.
pub fn status(out: &Path) -> Result<Status, SlurmError> {
    let submission = Submission::load(out)?;
    let folder = RunFolder::new(out);
    let plan = folder
        .plan()?
        .ok_or_else(|| SlurmError::Usage(format!("{}: no plan.json", out.display())))?;
    let expected = plan.expectations();
    let failed: std::collections::BTreeSet<String> =
        folder.failures()?.into_iter().map(|f| f.run_id).collect();
    let jobs: Vec<&str> = submission
        .jobs
        .iter()
        .flat_map(|j| [j.array_job.as_str(), j.report_job.as_str()])
        .collect();
    let states = slurm_states(&jobs);
    let n = submission.tasks;
    let mut shards: Vec<ShardStatus> = (0..n)
        .map(|k| ShardStatus {
            shard: k,
            runs: 0,
            done: 0,
            failed: 0,
            missing: 0,
            job: None,
            state: None,
        })
        .collect();
    for (i, id) in plan.order().iter().enumerate() {
        let s = &mut shards[i % n];
        s.runs += 1;
        let path = folder.run_path(id);
        if path.is_file() && verify_run(&path, Some(&expected)).is_ok() {
            s.done += 1;
        } else if failed.contains(id) {
            s.failed += 1;
        } else {
            s.missing += 1;
        }
    }
    for j in &submission.jobs {
        for &k in &j.shards {
            if let Some(s) = shards.get_mut(k) {
                let job = format!("{}_{k}", j.array_job);
                s.state = states.get(&job).cloned();
                s.job = Some(job);
            }
        }
    }
    let report_job = submission
        .jobs
        .last()
        .map(|j| (j.report_job.clone(), states.get(&j.report_job).cloned()));
    Ok(Status {
        submission,
        shards,
        report_job,
    })
}

/// Job (or array task, `123_4`) → state, from `squeue` for jobs it still
/// holds and `sacct` for the others where accounting is kept. Empty where
/// neither answers (no Slurm here, or the jobs are long gone).
fn slurm_states(jobs: &[&str]) -> BTreeMap<String, String> {
    let mut states = BTreeMap::new();
    if jobs.is_empty() {
        return states;
    }
    let list = jobs.join(",");
    let sacct = ["-n", "-P", "-X", "-j", &list, "-o", "JobID,State"];
    let squeue = ["-h", "-r", "-j", &list, "-o", "%i|%T"];
    for (program, args) in [("sacct", &sacct[..]), ("squeue", &squeue[..])] {
        let Ok(out) = Command::new(program).args(args).output() else {
            continue;
        };
        if !out.status.success() {
            continue;
        }
        // squeue after sacct: its view of live jobs is the fresher.
        for line in String::from_utf8_lossy(&out.stdout).lines() {
            if let Some((id, state)) = line.split_once('|') {
                let state = state.split_whitespace().next().unwrap_or("").to_string();
                states.insert(id.trim().to_string(), state);
            }
        }
    }
    states
}

/// What `resume` did.
#[derive(Debug, Clone)]
pub struct Resumed {
    pub shards: Vec<usize>,
    /// Shards with runs missing left alone: still queued or running.
    pub active: Vec<(usize, String)>,
    pub commands: Vec<String>,
}

/// Resubmits the shards of `out` that have runs missing or failed (and are
/// not still queued or running), with a new report job after them. `plan`
/// is the suite as it reads now: it must still be the plan in `out`.
pub fn resume(out: &Path, plan: &Plan, dry_run: bool) -> Result<Resumed, SlurmError> {
    let Status {
        mut submission,
        shards,
        ..
    } = status(out)?;
    crate::runner::check_out(plan, out, false)?;
    if !dry_run {
        need_on_path("sbatch")?;
    }
    let mut todo = Vec::new();
    let mut active = Vec::new();
    for s in shards.iter().filter(|s| s.done < s.runs) {
        if s.is_active() {
            active.push((s.shard, s.state.clone().unwrap_or_default()));
        } else {
            todo.push(s.shard);
        }
    }
    let commands = if todo.is_empty() {
        Vec::new()
    } else {
        write_scripts(&submission)?;
        submit_jobs(&mut submission, Some(&todo), dry_run)?
    };
    Ok(Resumed {
        shards: todo,
        active,
        commands,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn array_specs_join_runs_of_indices() {
        assert_eq!(array_spec(&[0, 1, 2, 3, 7, 9, 10]), "0-3,7,9-10");
        assert_eq!(array_spec(&[4]), "4");
        assert_eq!(array_spec(&[]), "");
    }

    #[test]
    fn words_are_quoted_only_where_the_shell_needs_it() {
        assert_eq!(sh_quote("suites/recall.yaml"), "suites/recall.yaml");
        assert_eq!(sh_quote("a b"), "'a b'");
        assert_eq!(sh_quote("it's"), r"'it'\''s'");
        assert_eq!(sh_quote(""), "''");
    }

    #[test]
    fn the_task_count_is_capped_by_runs_and_the_sites_array_size() {
        assert_eq!(task_count(None, 12, Some(1001)).0, 12);
        assert_eq!(task_count(Some(3), 12, Some(1001)).0, 3);
        let (n, notes) = task_count(Some(40), 12, None);
        assert_eq!((n, notes.len()), (12, 1));
        let (n, notes) = task_count(None, 5000, Some(1001));
        assert_eq!(n, 1001);
        assert!(notes[0].contains("MaxArraySize"), "{notes:?}");
    }
}
