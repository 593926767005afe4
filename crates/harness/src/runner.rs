//! Running a plan: selection (shard, single id, resume, force), `jobs` runs
//! at a time with `threads` kernel threads each (jobs × threads ≤ cores),
//! progress on a terminal or plain log lines otherwise, and one atomic file
//! per finished run. A failed or panicking run is recorded and the sweep
//! goes on; killing the process loses at most the runs in flight, and
//! running again does only what is missing.

use std::collections::BTreeMap;
use std::io::IsTerminal;
use std::panic::AssertUnwindSafe;
use std::path::PathBuf;
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Instant;

use indicatif::{ProgressBar, ProgressStyle};
use retbench_tasks::{Metric, TaskContext};

use crate::folder::{
    FailureRecord, FolderError, PlanFile, Provenance, RunFolder, RunRecord, metric_specs,
    plan_expectations,
};
use crate::suite::{Plan, PlannedRun};

#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error(transparent)]
    Store(#[from] FolderError),
    #[error("{0}")]
    Usage(String),
    #[error("cannot start a thread pool: {0}")]
    Pool(String),
}

/// How progress is shown.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Progress {
    /// A bar with ETA on a terminal, log lines otherwise.
    Auto,
    /// Nothing but the final summary.
    Quiet,
}

#[derive(Debug, Clone)]
pub struct RunOptions {
    pub out: PathBuf,
    /// Runs in parallel; `None` uses every core.
    pub jobs: Option<usize>,
    /// The cores this process may use (jobs × kernel threads ≤ cores);
    /// `None`: every core of the machine. A batch system's allocation
    /// (`$SLURM_CPUS_PER_TASK`) is not visible to the process otherwise
    /// when the site binds no CPUs (TaskPlugin=task/none).
    pub cores: Option<usize>,
    /// (index, count), 0-based: this process takes runs i with i % count == index.
    pub shard: Option<(usize, usize)>,
    /// Run only this run id.
    pub only: Option<String>,
    /// Rerun runs that already have a result.
    pub force: bool,
    /// Accept a folder that holds an earlier plan of the same suite and
    /// profile: runs both plans share (same id and config) are kept, the
    /// records of runs the new plan no longer has move to `retired/`.
    pub replan: bool,
    /// Refuse to run from a working tree with uncommitted changes (or
    /// outside a git checkout).
    pub require_clean: bool,
    pub progress: Progress,
}

#[derive(Debug, Clone, Default, PartialEq)]
pub struct RunSummary {
    pub planned: usize,
    /// Runs this invocation was responsible for (after shard / id).
    pub selected: usize,
    /// Of those, already done and skipped.
    pub skipped: usize,
    pub succeeded: usize,
    pub failed: usize,
    pub jobs: usize,
    pub threads: usize,
    pub bandwidth_gbps: Option<f64>,
    pub rows: usize,
}

/// Parses `I/N` (0 ≤ I < N).
pub fn parse_shard(text: &str) -> Result<(usize, usize), String> {
    let (i, n) = text
        .split_once('/')
        .ok_or_else(|| format!("--shard {text:?}: expected I/N, e.g. 0/4"))?;
    let i: usize = i
        .trim()
        .parse()
        .map_err(|_| format!("--shard {text:?}: I is not a number"))?;
    let n: usize = n
        .trim()
        .parse()
        .map_err(|_| format!("--shard {text:?}: N is not a number"))?;
    if n == 0 || i >= n {
        return Err(format!("--shard {text:?}: need 0 <= I < N"));
    }
    Ok((i, n))
}

/// (jobs, kernel threads per run) for this plan and these options: never
/// more jobs than runs left to do, and jobs × threads ≤ cores.
pub fn schedule(plan: &Plan, opts: &RunOptions) -> (usize, usize) {
    let cores = opts
        .cores
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()));
    let store = RunFolder::new(&opts.out);
    let todo = select(plan, opts)
        .into_iter()
        .filter(|r| opts.force || store.is_done(r) != Ok(true))
        .count();
    let jobs = opts.jobs.unwrap_or(cores).clamp(1, todo.max(1));
    (jobs, (cores / jobs).max(1))
}

/// The runs this invocation is responsible for: its shard, or one id.
fn select<'p>(plan: &'p Plan, opts: &RunOptions) -> Vec<&'p PlannedRun> {
    let mut selected: Vec<&PlannedRun> = plan
        .runs
        .iter()
        .enumerate()
        .filter(|(i, _)| opts.shard.is_none_or(|(k, n)| i % n == k))
        .map(|(_, r)| r)
        .collect();
    if let Some(id) = &opts.only {
        selected.retain(|r| &r.run_id == id);
    }
    selected
}

/// What runs one planned run: the real tasks, or a stand-in in tests.
pub type Executor<'a> =
    dyn Fn(&PlannedRun, &TaskContext) -> Result<Vec<Metric>, String> + Sync + 'a;

/// Runs a plan with the real tasks.
pub fn run_plan(plan: &Plan, opts: &RunOptions) -> Result<RunSummary, RunError> {
    run_plan_with(plan, opts, &|run, ctx| {
        run.config
            .task
            .run(&run.config.spec(), ctx)
            .map_err(|e| e.to_string())
    })
}

/// Runs a plan with `execute` as the task runner (tests inject failures).
pub fn run_plan_with(
    plan: &Plan,
    opts: &RunOptions,
    execute: &Executor<'_>,
) -> Result<RunSummary, RunError> {
    let (selected, source, store) = prepare(plan, opts)?;
    let total = selected.len();
    let todo = still_to_do(&store, &selected, opts);
    let (jobs, threads) = schedule(plan, opts);
    let mut summary = RunSummary {
        planned: plan.runs.len(),
        selected: total,
        skipped: total - todo.len(),
        jobs,
        threads,
        ..Default::default()
    };
    let timing = todo.iter().any(|r| r.config.task.is_timing());
    if timing {
        // 3 arrays of 32 Mi f32 (384 MiB): far beyond any cache.
        summary.bandwidth_gbps = Some(retbench_tasks::probe::triad_bandwidth_gbps(
            32 << 20,
            3,
            threads,
        ));
    }
    let base = crate::provenance::base(&source, jobs, threads);
    if let Some((hash, diff)) = &source.diff {
        store.write_diff(hash, diff)?;
    }
    let bar = progress_bar(opts.progress, todo.len() as u64);
    let done = AtomicUsize::new(0);
    let failed = AtomicUsize::new(0);
    let store_errors: Mutex<Vec<FolderError>> = Mutex::new(Vec::new());
    let one = |run: &PlannedRun, kernels: &rayon::ThreadPool| {
        let ctx = TaskContext {
            config_hash: run.config_hash.clone(),
            seed: run.seed,
            bandwidth_gbps: summary.bandwidth_gbps,
            artifacts: Some(store.artifacts_dir(&run.run_id)),
        };
        // Hashed before the clock starts: the data is regenerated for it.
        let dataset_hash = run
            .config
            .task
            .dataset_hash(&run.config.spec(), &ctx)
            .ok()
            .flatten();
        let start = Instant::now();
        let outcome = kernels.install(|| {
            std::panic::catch_unwind(AssertUnwindSafe(|| execute(run, &ctx)))
                .unwrap_or_else(|p| Err(panic_message(p)))
        });
        let wall = start.elapsed().as_secs_f64();
        let written = match &outcome {
            Ok(metrics) => store.write_run(&record_of(
                plan,
                run,
                metrics,
                Provenance {
                    wall_seconds: wall,
                    dataset_hash: dataset_hash.clone(),
                    ..base.clone()
                },
            )),
            Err(error) => {
                failed.fetch_add(1, Ordering::Relaxed);
                store.write_failure(&FailureRecord {
                    run_id: run.run_id.clone(),
                    error: error.clone(),
                })
            }
        };
        if let Err(e) = written {
            store_errors.lock().expect("lock").push(e);
        }
        let n = done.fetch_add(1, Ordering::Relaxed) + 1;
        let line = progress_line(n, todo.len(), &run.run_id, &outcome, wall);
        match &bar {
            Some(b) => {
                if outcome.is_err() {
                    b.println(line);
                }
                b.inc(1);
            }
            None if opts.progress == Progress::Auto => eprintln!("{line}"),
            None => {}
        }
    };
    on_threads(jobs, threads, &todo, one)?;
    if let Some(b) = bar {
        b.finish_and_clear();
    }
    if let Some(e) = store_errors.into_inner().expect("lock").into_iter().next() {
        return Err(e.into());
    }
    summary.failed = failed.into_inner();
    summary.succeeded = todo.len() - summary.failed;
    let order: Vec<String> = plan.runs.iter().map(|r| r.run_id.clone()).collect();
    let (rows, _) =
        store.rebuild_csvs(&order, &plan.param_columns, Some(&plan_expectations(plan)))?;
    summary.rows = rows;
    Ok(summary)
}

/// Runs `one` on every run of `todo`: `jobs` plain threads take runs from a
/// shared counter; each owns a rayon pool of `threads` for its kernels.
/// (Not a rayon pool of jobs: a rayon worker blocked in another pool's
/// `install` steals more runs meanwhile, and then far more than `jobs` runs
/// are in flight.)
fn on_threads(
    jobs: usize,
    threads: usize,
    todo: &[&PlannedRun],
    one: impl Fn(&PlannedRun, &rayon::ThreadPool) + Sync,
) -> Result<(), RunError> {
    let next = AtomicUsize::new(0);
    let pool_error: Mutex<Option<String>> = Mutex::new(None);
    std::thread::scope(|scope| {
        for _ in 0..jobs {
            scope.spawn(|| {
                let kernels = match rayon::ThreadPoolBuilder::new().num_threads(threads).build() {
                    Ok(p) => p,
                    Err(e) => {
                        *pool_error.lock().expect("lock") = Some(e.to_string());
                        return;
                    }
                };
                while let Some(run) = todo.get(next.fetch_add(1, Ordering::Relaxed)) {
                    one(run, &kernels);
                }
            });
        }
    });
    match pool_error.into_inner().expect("lock") {
        Some(e) => Err(RunError::Pool(e)),
        None => Ok(()),
    }
}

/// The selected runs that need running: all with `--force`, else those
/// without a valid record (a record that fails verification is redone, and
/// said so unless quiet).
fn still_to_do<'p>(
    store: &RunFolder,
    selected: &[&'p PlannedRun],
    opts: &RunOptions,
) -> Vec<&'p PlannedRun> {
    let mut redone = Vec::new();
    let todo: Vec<&PlannedRun> = selected
        .iter()
        .copied()
        .filter(|r| {
            if opts.force {
                return true;
            }
            match store.is_done(r) {
                Ok(done) => !done,
                Err(why) => {
                    redone.push(format!("{}: {why}", store.run_path(&r.run_id).display()));
                    true
                }
            }
        })
        .collect();
    if opts.progress != Progress::Quiet {
        for line in &redone {
            eprintln!("redoing {line}");
        }
    }
    todo
}

/// Everything checked and written before the first run: the runs this
/// invocation does (an `--id` that names none is an error), the code's
/// source (`--require-clean` refuses a dirty one), and the folder, which
/// must hold no other plan, with this plan written into it.
fn prepare<'p>(
    plan: &'p Plan,
    opts: &RunOptions,
) -> Result<(Vec<&'p PlannedRun>, crate::provenance::Source, RunFolder), RunError> {
    let selected = select(plan, opts);
    if let Some(id) = &opts.only
        && selected.is_empty()
    {
        return Err(RunError::Usage(format!(
            "--id {id}: no such run in {} (see `retbench plan {} --format ids`)",
            plan.file.display(),
            plan.file.display()
        )));
    }
    let source = crate::provenance::Source::here();
    if opts.require_clean && !source.is_clean() {
        return Err(RunError::Usage(format!(
            "--require-clean: the code is {}, not a commit as the repository holds it; \
             commit (or stash) the changes first",
            source.commit
        )));
    }
    let store = RunFolder::new(&opts.out);
    same_plan_or_replan(&store, plan, opts.replan)?;
    store.remove_stale_temp_files();
    store.write_plan(plan)?;
    Ok((selected, source, store))
}

/// What `run` checks of its output folder before anything is written,
/// for executors that write the plan ahead of the runs (`slurm submit`):
/// another plan there is refused, an earlier plan of the suite too unless
/// `replan` (then reconciled as `run --replan` does).
pub fn check_out(plan: &Plan, out: &std::path::Path, replan: bool) -> Result<(), RunError> {
    same_plan_or_replan(&RunFolder::new(out), plan, replan)
}

/// Refuses to run `plan` into a folder that holds another plan: one of
/// another suite or profile always, an earlier plan of the same suite unless
/// `replan` (which retires the records the new plan no longer has).
fn same_plan_or_replan(store: &RunFolder, plan: &Plan, replan: bool) -> Result<(), RunError> {
    let Some(existing) = store.plan()? else {
        return Ok(());
    };
    let new = PlanFile::of(plan);
    let Some(diff) = existing.first_difference(&new) else {
        return Ok(());
    };
    let dir = store.dir.display();
    if !existing.same_suite(&new) {
        return Err(RunError::Usage(format!(
            "{dir} holds the results of another plan ({diff}); nothing was run or \
             written: choose another --out"
        )));
    }
    if !replan {
        return Err(RunError::Usage(format!(
            "{dir} holds an earlier plan of suite {} ({diff}); nothing was run or written. \
             Rerun with --replan to keep the runs both plans share (renaming the records of \
             runs whose id alone changed) and move the others' records to {dir}/retired/, \
             or choose another --out",
            new.suite
        )));
    }
    let (renamed, retired) = store.reconcile(&new.expectations())?;
    // The runs both plans share now belong to the new one.
    let fp = new.fingerprint();
    for mut record in store.runs(None)? {
        if record.plan.as_deref() != Some(fp.as_str()) {
            record.plan = Some(fp.clone());
            store.write_run(&record)?;
        }
    }
    eprintln!(
        "{dir}: new plan of suite {} ({diff}); {renamed} records renamed to the new ids of \
         their runs, {retired} records of runs it no longer has moved to retired/",
        new.suite
    );
    Ok(())
}

/// The record of a finished run, stamped with the time it finished.
fn record_of(
    plan: &Plan,
    run: &PlannedRun,
    metrics: &[Metric],
    provenance: Provenance,
) -> RunRecord {
    RunRecord {
        run_id: run.run_id.clone(),
        suite: plan.suite.clone(),
        variant: run.variant.clone(),
        seed: run.seed,
        params: run.params.iter().cloned().collect(),
        config_hash: run.config_hash.clone(),
        config: serde_json::to_value(&run.config).expect("json"),
        metrics: metrics.to_vec(),
        plan: Some(crate::folder::plan_fingerprint(plan)),
        provenance: Provenance {
            finished_unix: std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .ok()
                .map(|d| d.as_secs()),
            ..provenance
        },
    }
}

/// `[n/total] <run id> ok (1.2s)`, or FAILED with the error's first line.
fn progress_line(
    n: usize,
    total: usize,
    run_id: &str,
    outcome: &Result<Vec<Metric>, String>,
    wall: f64,
) -> String {
    let status = match outcome {
        Ok(_) => "ok".to_string(),
        Err(e) => format!("FAILED: {}", e.lines().next().unwrap_or("")),
    };
    format!("[{n}/{total}] {run_id} {status} ({wall:.1}s)")
}

fn progress_bar(progress: Progress, len: u64) -> Option<ProgressBar> {
    if progress != Progress::Auto || !std::io::stderr().is_terminal() || len == 0 {
        return None;
    }
    let bar = ProgressBar::new(len);
    bar.set_style(
        ProgressStyle::with_template("{elapsed_precise} [{bar:40}] {pos}/{len} runs, ETA {eta}")
            .expect("template")
            .progress_chars("=> "),
    );
    Some(bar)
}

fn panic_message(p: Box<dyn std::any::Any + Send>) -> String {
    let text = p
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| p.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "unknown panic".into());
    format!("panicked: {text}")
}

/// Joins shard folders into `out`: copies every run file, refusing a run id
/// present twice with different contents (same contents are fine). Every
/// shard's run files are read and checked before anything is written, so a
/// refused merge leaves `out` as it was. Every folder (the shards, and `out`
/// where it holds a plan) must hold the same plan, and every record must
/// have been made under it: shards of two sweeps are never mixed.
pub fn merge(out: &std::path::Path, shards: &[PathBuf]) -> Result<usize, RunError> {
    let target = RunFolder::new(out);
    let fingerprint = one_plan(out, shards)?;
    // The first shard with a plan gives the plan, its bytes and its specs.
    let mut plan: Option<(PlanFile, Vec<u8>, Option<Vec<u8>>)> = None;
    let mut incoming: BTreeMap<String, (PathBuf, RunRecord)> = BTreeMap::new();
    let mut failures = Vec::new();
    for dir in shards {
        let shard = RunFolder::new(dir);
        if !shard.runs_dir().is_dir() {
            return Err(RunError::Usage(format!(
                "{}: not a run folder (no runs/)",
                dir.display()
            )));
        }
        if plan.is_none()
            && let Some(p) = shard.plan()?
        {
            let bytes = shard.plan_bytes().unwrap_or_default();
            plan = Some((p, bytes, shard.metric_specs_bytes()));
        }
        let expected = plan.as_ref().map(|(p, _, _)| p.expectations());
        for record in shard.runs(expected.as_ref())? {
            of_this_plan(&record, dir, expected.as_ref(), fingerprint.as_deref())?;
            match incoming.get(&record.run_id) {
                Some((other, prev))
                    if prev.config != record.config || prev.metrics != record.metrics =>
                {
                    return Err(RunError::Usage(format!(
                        "run {} is in {} and in {} with different results: refusing to merge",
                        record.run_id,
                        other.display(),
                        dir.display()
                    )));
                }
                Some(_) => {}
                None => {
                    incoming.insert(record.run_id.clone(), (dir.clone(), record));
                }
            }
        }
        failures.extend(shard.failures()?);
    }
    let expected = plan.as_ref().map(|(p, _, _)| p.expectations());
    let existing: BTreeMap<String, RunRecord> = target
        .runs(expected.as_ref())?
        .into_iter()
        .map(|r| (r.run_id.clone(), r))
        .collect();
    for (id, (dir, record)) in &incoming {
        if let Some(prev) = existing.get(id)
            && (prev.config != record.config || prev.metrics != record.metrics)
        {
            return Err(RunError::Usage(format!(
                "run {id} is in {} and in {} with different results: refusing to merge",
                out.display(),
                dir.display()
            )));
        }
    }
    let mut copied = 0;
    for (id, (_, record)) in &incoming {
        if !existing.contains_key(id) {
            target.write_run(record)?;
            copied += 1;
        }
    }
    for failure in failures {
        if !target.has_record(&failure.run_id) {
            target.write_failure(&failure)?;
        }
    }
    if let Some((_, plan_bytes, specs)) = &plan {
        target.write_plan_bytes(plan_bytes, specs.as_deref())?;
    }
    let (order, columns) = plan
        .as_ref()
        .map(|(p, _, _)| (p.order(), p.param_columns.clone()))
        .unwrap_or_default();
    target.rebuild_csvs(&order, &columns, expected.as_ref())?;
    Ok(copied)
}

/// The fingerprint of the one plan that the shards (and `out`, where it has
/// one) hold; an error naming two folders and how their plans differ when
/// there is more than one. `None` when no folder has a plan.
fn one_plan(out: &std::path::Path, shards: &[PathBuf]) -> Result<Option<String>, RunError> {
    let mut first: Option<(&std::path::Path, PlanFile)> = None;
    for dir in shards.iter().map(PathBuf::as_path).chain([out]) {
        let Some(p) = RunFolder::new(dir).plan()? else {
            continue;
        };
        match &first {
            None => first = Some((dir, p)),
            Some((d0, p0)) => {
                if let Some(diff) = p0.first_difference(&p) {
                    return Err(RunError::Usage(format!(
                        "{} and {} hold different plans ({diff}): refusing to merge; \
                         nothing was written",
                        d0.display(),
                        dir.display()
                    )));
                }
            }
        }
    }
    Ok(first.map(|(_, p)| p.fingerprint()))
}

/// Refuses a record made under another plan than the merge's, or of a run
/// the plan does not have.
fn of_this_plan(
    record: &RunRecord,
    dir: &std::path::Path,
    expected: Option<&crate::folder::ExpectedRuns>,
    fingerprint: Option<&str>,
) -> Result<(), RunError> {
    let other = |why: String| {
        Err(RunError::Usage(format!(
            "{}: run {} {why}: refusing to merge; nothing was written",
            dir.display(),
            record.run_id
        )))
    };
    if let (Some(made), Some(fp)) = (record.plan.as_deref(), fingerprint)
        && made != fp
    {
        return other(format!("was made under plan {made}, not this merge's {fp}"));
    }
    if let Some(expected) = expected
        && !expected.contains_key(&record.run_id)
    {
        return other("is not in the plan".into());
    }
    Ok(())
}

/// Re-derives a run folder's tables from its run files before a report:
/// verifies every `runs/<id>.json` against `plan.json`, rebuilds
/// `results.csv` and `failures.csv`, and writes `metrics.json` from the
/// plan's configs when it is missing (folders from before it existed).
/// Returns the number of result rows.
pub fn refresh(out: &std::path::Path) -> Result<usize, RunError> {
    let folder = RunFolder::new(out);
    if !folder.runs_dir().is_dir() {
        return Err(RunError::Usage(format!(
            "{}: not a run folder (no runs/)",
            out.display()
        )));
    }
    let plan = folder.plan()?.unwrap_or_default();
    let expected = (!plan.runs.is_empty()).then(|| plan.expectations());
    // Verify every run file before writing anything.
    folder.runs(expected.as_ref())?;
    if !folder.has_metric_specs() {
        let configs = plan
            .runs
            .iter()
            .map(|r| {
                serde_json::from_value::<crate::RunConfig>(r.config.clone()).map_err(|e| {
                    FolderError::Bad {
                        path: folder.plan_path(),
                        message: format!("run {:?}: {e}", r.run_id),
                    }
                })
            })
            .collect::<Result<Vec<_>, _>>()?;
        folder.write_metric_specs(&metric_specs(configs.iter()))?;
    }
    let (rows, _) = folder.rebuild_csvs(&plan.order(), &plan.param_columns, expected.as_ref())?;
    Ok(rows)
}
