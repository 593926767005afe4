//! `retbench slurm submit | status | resume`: the command line of the Slurm
//! executor (retbench_harness::slurm writes the scripts, submits them and
//! reads the shards' state). A suite folder submits every suite in it, each
//! into OUT/<suite>, as `bench` runs them.

use std::path::{Path, PathBuf};

use clap::Subcommand;
use retbench_harness::slurm::{self, Request, Resources};
use retbench_harness::suite;

// Parsed once per process: the size of the largest variant costs nothing.
#[allow(clippy::large_enum_variant)]
#[derive(Subcommand)]
pub enum SlurmCommand {
    /// Write a suite's batch scripts under OUT/slurm/ and submit them: an
    /// array job with one shard of the plan per task (each `retbench run
    /// --shard K/N` into OUT, which every node must see at the same path),
    /// then a report job that waits for the whole array (afterany), so that
    /// a partial sweep is still reported, its failures listed. Prints the
    /// job ids. A folder of suites submits each into OUT/<suite>.
    Submit {
        /// A suite file, or a folder of suite files (e.g. suites).
        suite: PathBuf,
        /// Apply this profile's overrides first (e.g. smoke).
        #[arg(long)]
        profile: Option<String>,
        /// The output folder, on the filesystem the nodes share.
        #[arg(long)]
        out: PathBuf,
        /// Array tasks [default: one per run, capped by the cluster's MaxArraySize].
        #[arg(long, value_parser = count)]
        tasks: Option<usize>,
        #[command(flatten)]
        sbatch: SbatchArgs,
        /// Accept an OUT holding an earlier plan of the suite (see `run --replan`).
        #[arg(long)]
        replan: bool,
        /// Write the scripts and print the sbatch lines; submit nothing.
        #[arg(long)]
        dry_run: bool,
    },
    /// Runs done, failed and missing in each shard of OUT, with the Slurm
    /// state of the array task that last ran it (squeue, sacct where the
    /// cluster keeps accounting).
    Status {
        /// A folder written by `slurm submit`.
        out: PathBuf,
    },
    /// Resubmit the shards of OUT with runs missing or failed (runs already
    /// done are skipped, as `run` resumes), and a new report job after them.
    /// Shards still queued or running are left alone.
    Resume {
        /// A folder written by `slurm submit`.
        out: PathBuf,
        /// Print the sbatch lines; submit nothing.
        #[arg(long)]
        dry_run: bool,
    },
}

/// What each job asks of the scheduler: `#SBATCH` lines of both jobs.
#[derive(clap::Args)]
pub struct SbatchArgs {
    /// CPUs per array task: each shard's runs use that many cores.
    #[arg(long, default_value_t = 1, value_parser = count)]
    cpus_per_task: usize,
    #[arg(long)]
    partition: Option<String>,
    /// Time limit of each task and of the report job (sbatch --time, e.g. 2:00:00).
    #[arg(long)]
    time: Option<String>,
    /// Memory per task (sbatch --mem, e.g. 8G).
    #[arg(long)]
    mem: Option<String>,
    #[arg(long)]
    account: Option<String>,
    #[arg(long)]
    qos: Option<String>,
    /// A further sbatch option for every job, as an #SBATCH line takes it
    /// (repeatable), e.g. --extra-sbatch=--constraint=avx512.
    #[arg(long, value_name = "OPTION", allow_hyphen_values = true)]
    extra_sbatch: Vec<String>,
}

impl From<SbatchArgs> for Resources {
    fn from(a: SbatchArgs) -> Self {
        Resources {
            cpus_per_task: a.cpus_per_task,
            partition: a.partition,
            time: a.time,
            mem: a.mem,
            account: a.account,
            qos: a.qos,
            extra: a.extra_sbatch,
        }
    }
}

fn count(s: &str) -> Result<usize, String> {
    match s.parse::<usize>() {
        Ok(n) if n > 0 => Ok(n),
        _ => Err(format!("{s:?}: expected a whole number of at least 1")),
    }
}

pub fn dispatch(cmd: SlurmCommand) -> anyhow::Result<()> {
    match cmd {
        SlurmCommand::Submit {
            suite,
            profile,
            out,
            tasks,
            sbatch,
            replan,
            dry_run,
        } => {
            let req = Request {
                suite_file: suite.clone(),
                out,
                tasks,
                resources: sbatch.into(),
                replan,
                dry_run,
            };
            submit(&suite, profile.as_deref(), &req)
        }
        SlurmCommand::Status { out } => status(&out),
        SlurmCommand::Resume { out, dry_run } => resume(&out, dry_run),
    }
}

/// One suite, or each suite of a folder (every one validated, and its
/// folder checked, before any is submitted).
fn submit(path: &Path, profile: Option<&str>, req: &Request) -> anyhow::Result<()> {
    let files = if path.is_dir() {
        crate::suite_files(path)?
    } else {
        vec![path.to_path_buf()]
    };
    anyhow::ensure!(
        !files.is_empty(),
        "no suite files (*.yaml) in {}",
        path.display()
    );
    let plans = files
        .iter()
        .map(|f| suite::load_with(f, profile, &crate::limits(None)))
        .collect::<Result<Vec<_>, _>>()?;
    let many = path.is_dir();
    let reqs: Vec<Request> = plans
        .iter()
        .zip(&files)
        .map(|(plan, file)| Request {
            suite_file: file.clone(),
            out: if many {
                req.out.join(&plan.suite)
            } else {
                req.out.clone()
            },
            ..req.clone()
        })
        .collect();
    for (plan, r) in plans.iter().zip(&reqs) {
        retbench_harness::runner::check_out(plan, &r.out, r.replan)?;
    }
    for (plan, r) in plans.iter().zip(&reqs) {
        let done = slurm::submit(plan, r)?;
        let s = &done.submission;
        for note in &done.notes {
            eprintln!("note: {note}");
        }
        eprintln!(
            "{}: {} runs in {} array tasks -> {}",
            s.suite,
            s.runs,
            s.tasks,
            r.out.display()
        );
        print_submitted(&done.commands, s.jobs.last(), r.dry_run);
    }
    Ok(())
}

fn print_submitted(commands: &[String], job: Option<&slurm::Submitted>, dry_run: bool) {
    if dry_run {
        println!("# dry run: nothing submitted; these would be:");
        commands.iter().for_each(|c| println!("{c}"));
        return;
    }
    if let Some(j) = job {
        println!(
            "array job {} (shards {})",
            j.array_job,
            slurm::array_spec(&j.shards)
        );
        println!("report job {} (afterany:{})", j.report_job, j.array_job);
    }
}

fn status(out: &Path) -> anyhow::Result<()> {
    let slurm::Status {
        submission: s,
        shards,
        report_job: report,
    } = slurm::status(out)?;
    println!(
        "{}{}: {} runs in {} shards -> {}",
        s.suite,
        s.profile
            .as_ref()
            .map(|p| format!(" (profile {p})"))
            .unwrap_or_default(),
        s.runs,
        s.tasks,
        out.display()
    );
    println!(
        "{:<6} {:>5} {:>5} {:>7} {:>8}  {:<12} state",
        "shard", "runs", "done", "failed", "missing", "job"
    );
    let mut total = [0usize; 4];
    for sh in &shards {
        println!(
            "{:<6} {:>5} {:>5} {:>7} {:>8}  {:<12} {}",
            sh.shard,
            sh.runs,
            sh.done,
            sh.failed,
            sh.missing,
            sh.job.as_deref().unwrap_or("-"),
            sh.state.as_deref().unwrap_or("-")
        );
        for (t, v) in total
            .iter_mut()
            .zip([sh.runs, sh.done, sh.failed, sh.missing])
        {
            *t += v;
        }
    }
    println!(
        "{:<6} {:>5} {:>5} {:>7} {:>8}",
        "all", total[0], total[1], total[2], total[3]
    );
    if let Some((job, state)) = report {
        println!("report job {job}: {}", state.as_deref().unwrap_or("-"));
    }
    if shards
        .iter()
        .any(|sh| sh.job.is_some() && sh.state.is_none())
    {
        println!(
            "(-: Slurm no longer lists the task; sacct keeps its end state where the cluster keeps accounting)"
        );
    }
    if total[2] + total[3] > 0 {
        println!(
            "{} runs to do: `retbench slurm resume {}` resubmits their shards",
            total[2] + total[3],
            out.display()
        );
    }
    Ok(())
}

fn resume(out: &Path, dry_run: bool) -> anyhow::Result<()> {
    let s = slurm::Submission::load(out)?;
    let file = s.workdir.join(&s.suite_file);
    let plan = suite::load_with(&file, s.profile.as_deref(), &crate::limits(None))?;
    let done = slurm::resume(out, &plan, dry_run)?;
    for (k, state) in &done.active {
        eprintln!("shard {k}: still {state}, left alone");
    }
    if done.shards.is_empty() {
        eprintln!(
            "nothing to resubmit: {}",
            if done.active.is_empty() {
                "every shard's runs are done"
            } else {
                "the shards with runs to do are still queued or running"
            }
        );
        return Ok(());
    }
    let s = slurm::Submission::load(out)?;
    print_submitted(&done.commands, s.jobs.last(), dry_run);
    Ok(())
}
