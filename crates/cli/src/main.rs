//! The `retbench` binary: parses the command line (clap), dispatches to the
//! library crates, prints the whole error chain on failure, and maps failures
//! to the exit codes of docs/GUIDE.md (2 for bad input: usage, YAML, files).

mod alloc;
mod slurm;

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context;
use clap::{Parser, Subcommand, ValueEnum};
use retbench_core::config::CATALOG;
use retbench_core::{Telemetry, snapshot};
use retbench_harness::runner::Progress;
use retbench_harness::{Plan, RunOptions, suite};
use retbench_model::bench::{self, BenchRetention};

#[derive(Parser)]
#[command(
    name = "retbench",
    version,
    about = "Benchmark and evaluation harness for Transformer retention layers (arXiv 2501.09166)",
    long_about = None
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

/// The `--kernels` option of the verbs that train or read (run, bench,
/// train-bench); the others never touch a kernel.
#[derive(Clone, Copy, clap::Args)]
struct KernelsOpt {
    /// The model's CPU kernels: fused custom ops, or candle's generic ops
    /// (the same results to rounding; for testing and comparison).
    #[arg(long, value_enum, default_value_t = KernelsArg::Fused)]
    kernels: KernelsArg,
}

impl KernelsOpt {
    /// Makes this choice the process default.
    fn select(self) {
        retbench_kernels::set_default(match self.kernels {
            KernelsArg::Fused => retbench_kernels::Kernels::Fused,
            KernelsArg::Unfused => retbench_kernels::Kernels::Unfused,
        });
    }
}

#[derive(Clone, Copy, ValueEnum)]
enum SizeArg {
    Screen,
    OneColumn,
    TwoColumn,
}

#[derive(Clone, Copy, ValueEnum)]
enum CompareFormat {
    Markdown,
    Json,
}

// Every verb's --format takes names from one vocabulary: text (aligned
// columns for a terminal), markdown, json (one document), jsonl (a JSON
// object per line), ids (run ids only). Each verb offers the ones it can
// write; `table`, the old name of `text`, is still accepted.

#[derive(Clone, Copy, ValueEnum)]
enum KernelsArg {
    Fused,
    Unfused,
}

#[derive(Subcommand)]
enum Command {
    /// List every backend and option (as typed in a suite's `retention:` block) and the suites in suites/.
    List {
        /// text: for a terminal; markdown: the reference in docs/AXES.md; json: for tools.
        #[arg(long, value_enum, default_value_t = ListFormat::Text)]
        format: ListFormat,
        /// Folder of suite files.
        #[arg(long, default_value = "suites")]
        suites: PathBuf,
    },
    /// Expand a suite into its runs (validated in full) and print them.
    Plan {
        /// The suite file (YAML).
        suite: PathBuf,
        /// Apply this profile's overrides first (e.g. smoke).
        #[arg(long)]
        profile: Option<String>,
        /// text: one line per run; ids: run ids only; jsonl: each run as JSON.
        #[arg(long, value_enum, default_value_t = PlanFormat::Text)]
        format: PlanFormat,
        /// Refuse runs estimated to need more memory than this (e.g. 8G, 512M) [default: the machine's RAM].
        #[arg(long, value_name = "BYTES", value_parser = parse_bytes)]
        max_memory: Option<u64>,
    },
    /// Run a suite: parallel, resumable; then write the summary and figures.
    Run {
        /// The suite file (YAML).
        suite: PathBuf,
        /// Apply this profile's overrides first (e.g. smoke).
        #[arg(long)]
        profile: Option<String>,
        /// Output folder [default: reports/<suite name>[-<profile>]].
        #[arg(long)]
        out: Option<PathBuf>,
        /// Runs in parallel [default: every core]; each run gets cores/jobs kernel threads.
        #[arg(long, value_parser = parse_jobs)]
        jobs: Option<usize>,
        /// The cores to use [default: every core of the machine], e.g. $SLURM_CPUS_PER_TASK.
        #[arg(long, value_parser = parse_jobs)]
        cores: Option<usize>,
        /// Refuse runs estimated to need more memory than this (e.g. 8G, 512M) [default: the machine's RAM].
        #[arg(long, value_name = "BYTES", value_parser = parse_bytes)]
        max_memory: Option<u64>,
        /// Take share I of N of the plan (0 <= I < N): runs i with i mod N = I. `retbench slurm submit` writes the array job that runs every share.
        #[arg(long, value_name = "I/N", value_parser = parse_shard)]
        shard: Option<(usize, usize)>,
        /// Run only this run id (see `retbench plan --format ids`).
        #[arg(long = "id", value_name = "RUN_ID")]
        only: Option<String>,
        /// Rerun runs that already have results.
        #[arg(long)]
        force: bool,
        /// Accept an output folder that holds an earlier plan of this suite and
        /// profile: keep the runs both plans share (renaming records of runs whose id
        /// alone changed), move the other records to retired/.
        #[arg(long)]
        replan: bool,
        /// Refuse to run from a working tree with uncommitted changes (by default
        /// such a run stores the diff beside its record: OUT/diffs/<hash>.patch).
        #[arg(long)]
        require_clean: bool,
        /// Skip the summary and figures at the end.
        #[arg(long)]
        no_report: bool,
        /// No progress output.
        #[arg(long, short)]
        quiet: bool,
        #[command(flatten)]
        kernels: KernelsOpt,
    },
    /// Join shard folders into OUT_DIR; a run present twice with different results is refused.
    Merge {
        /// Folder to merge into (created if missing).
        out_dir: PathBuf,
        /// Folders written by `retbench run --shard`.
        #[arg(required = true)]
        shard_dirs: Vec<PathBuf>,
    },
    /// Write summary.csv, summary.md, report.html and figures/ for run folders.
    Report {
        /// Folders written by `retbench run` (each holds plan.json and runs/).
        #[arg(required = true)]
        dirs: Vec<PathBuf>,
        /// Also write an index page linking these reports (e.g. reports/index.html).
        #[arg(long)]
        index: Option<PathBuf>,
        /// Also write each figure as vector PDF (font embedded, text selectable), for papers.
        #[arg(long)]
        pdf: bool,
        /// The figures' canvas: screen (900x600), one-column (600x450) or two-column (1200x500).
        #[arg(long, value_enum, default_value_t = SizeArg::Screen)]
        size: SizeArg,
    },
    /// Check the layout of SVG figures: exit 1 when any has a defect.
    ///
    /// Measures each figure as drawn (the bundled font lays out its text): no two
    /// labels overlap, none leaves the figure, each axis has at least 3 labelled
    /// ticks, a figure of several series has a legend whose entries differ, at
    /// most 8 series per panel, and the axis of a discrete slice (gap, updates,
    /// sessions ...) labels no fraction. Prints each defect, then counts per kind.
    CheckFigures {
        /// SVG files, or folders searched for them (e.g. reports/*/paper).
        #[arg(required = true)]
        paths: Vec<PathBuf>,
        /// Print only the counts per kind of defect.
        #[arg(long)]
        summary: bool,
    },
    /// Compare two run folders (a baseline and current results): exit 1 when a metric regressed.
    ///
    /// Joins the final values on config (variant and parameter values), metric and
    /// slice. A quality metric regresses when it moves in its bad direction by more
    /// than max(--tolerance, the 95% interval half-width of either side); a timing
    /// metric moving beyond --timing-tolerance is a warning, or a regression with
    /// --strict-timing. A metric the baseline has and the current results lack
    /// regresses too, and so does a config the baseline has and the current
    /// results lack. Folders of different suites or profiles are refused (exit 2)
    /// unless --allow-different-plans, and so are folders with no config in
    /// common. Prints a Markdown table (for a PR comment or a CI step summary)
    /// or JSON.
    Compare {
        /// The reference folder (e.g. reports/baselines/<suite>).
        baseline: PathBuf,
        /// The folder to check.
        current: PathBuf,
        /// Absolute move a quality metric may make in its bad direction.
        #[arg(long, default_value_t = 0.05)]
        tolerance: f64,
        /// Relative move a timing may make (0.25 = 25% slower).
        #[arg(long, default_value_t = 0.25)]
        timing_tolerance: f64,
        /// A timing beyond its tolerance fails instead of warning.
        #[arg(long)]
        strict_timing: bool,
        /// Compare folders of different suites or profiles (refused by default).
        #[arg(long)]
        allow_different_plans: bool,
        #[arg(long, value_enum, default_value_t = CompareFormat::Markdown)]
        format: CompareFormat,
    },
    /// Run every suite in suites/, then report each (what `just bench` runs).
    Bench {
        /// Apply this profile to every suite (each must define it, e.g. smoke).
        #[arg(long)]
        profile: Option<String>,
        /// Folder of suite files.
        #[arg(long, default_value = "suites")]
        suites: PathBuf,
        /// Runs in parallel [default: every core].
        #[arg(long, value_parser = parse_jobs)]
        jobs: Option<usize>,
        /// The cores to use [default: every core of the machine].
        #[arg(long, value_parser = parse_jobs)]
        cores: Option<usize>,
        /// Run share I of N of every suite's plan (0 <= I < N; see `run --shard`).
        #[arg(long, value_name = "I/N", value_parser = parse_shard)]
        shard: Option<(usize, usize)>,
        /// Refuse runs estimated to need more memory than this (e.g. 8G, 512M) [default: the machine's RAM].
        #[arg(long, value_name = "BYTES", value_parser = parse_bytes)]
        max_memory: Option<u64>,
        /// Write each suite to OUT/<suite> [default: reports/<suite>[-<profile>]].
        #[arg(long)]
        out: Option<PathBuf>,
        /// Rerun runs that already have results.
        #[arg(long)]
        force: bool,
        /// Accept output folders that hold an earlier plan of their suite (see `run --replan`).
        #[arg(long)]
        replan: bool,
        /// Refuse to run from a working tree with uncommitted changes (see `run --require-clean`).
        #[arg(long)]
        require_clean: bool,
        #[command(flatten)]
        kernels: KernelsOpt,
    },
    /// Training throughput (tokens/s) of the reference model: 2 layers, 4
    /// heads, sequence 64, batch 32, AdamW, without and with a retention
    /// layer in block 1 (append of every token, FIFO); each row with the
    /// arithmetic it cannot avoid, as a share of the fp32 matmul peak
    /// measured in the same invocation (scripts/train_throughput.py runs
    /// PyTorch beside it).
    TrainBench {
        /// Model widths to measure.
        #[arg(long, value_delimiter = ',', default_value = "64,128", value_parser = parse_jobs)]
        d_model: Vec<usize>,
        /// Memory sizes of the "with retention" rows.
        #[arg(long, value_delimiter = ',', default_value = "64", value_parser = parse_jobs)]
        slots: Vec<usize>,
        /// Slots holding earlier writes when each step starts: `empty` (an
        /// episode's first session), `full`, or a count.
        #[arg(long, default_value = "empty", value_parser = parse_fill)]
        fill: usize,
        /// Read through an exact top-k of this k instead of densely.
        #[arg(long, value_parser = parse_jobs)]
        top_k: Option<usize>,
        /// Timed steps per measurement (after one warm-up step); the median is reported.
        #[arg(long, default_value_t = 30, value_parser = parse_jobs)]
        steps: usize,
        /// Kernel threads per training [default: every core / jobs].
        #[arg(long, value_parser = parse_jobs)]
        threads: Option<usize>,
        /// Trainings side by side (as `run --jobs` schedules them); tokens/s is their sum.
        #[arg(long, default_value_t = 1, value_parser = parse_jobs)]
        jobs: usize,
        #[arg(long, value_enum, default_value_t = BenchFormat::Text)]
        format: BenchFormat,
        #[command(flatten)]
        kernels: KernelsOpt,
    },
    /// Write the frozen held-out sets of the suites' learned runs to
    /// DIR/<task>/ (JSONL, with a sha256 manifest), or check them.
    Datasets {
        /// Suite files [default: every suite in suites/].
        suites: Vec<PathBuf>,
        /// Apply this profile's overrides first.
        #[arg(long)]
        profile: Option<String>,
        /// The datasets folder.
        #[arg(long, default_value = "datasets")]
        out: PathBuf,
        /// Regenerate every dataset the manifests list and compare it bit
        /// for bit (exit 1 on a mismatch); writes nothing.
        #[arg(long)]
        check: bool,
    },
    /// Run suites on a Slurm cluster: submit an array job of shards and a
    /// report job after it; see the status of each shard; resubmit what is
    /// missing (docs/CLUSTER.md).
    Slurm {
        #[command(subcommand)]
        command: slurm::SlurmCommand,
    },
    /// Work with memory snapshots.
    Memory {
        #[command(subcommand)]
        command: MemoryCommand,
    },
}

#[derive(Clone, Copy, ValueEnum)]
enum BenchFormat {
    #[value(alias = "table")]
    Text,
    Jsonl,
}

#[derive(Clone, Copy, ValueEnum)]
enum PlanFormat {
    #[value(alias = "table")]
    Text,
    Ids,
    Jsonl,
}

fn parse_shard(s: &str) -> Result<(usize, usize), String> {
    retbench_harness::parse_shard(s)
}

#[derive(Subcommand)]
enum MemoryCommand {
    /// Print a snapshot's capacity, occupancy, namespaces and slot telemetry.
    Inspect {
        /// A snapshot written by retbench (.safetensors).
        snapshot: PathBuf,
        #[arg(long, value_enum, default_value_t = Format::Text)]
        format: Format,
    },
}

#[derive(Clone, Copy, ValueEnum)]
enum Format {
    Text,
    Json,
}

#[derive(Clone, Copy, ValueEnum)]
enum ListFormat {
    Text,
    Markdown,
    Json,
}

/// Outcome of a command that ran: some runs failed (exit 1) or not.
enum Outcome {
    Ok,
    SomeFailed,
}

/// Dies quietly of SIGPIPE, as `ls` and `cat` do, when what reads the
/// output stops (`retbench plan … | head`); Rust ignores the signal and a
/// print to the closed pipe would panic instead.
#[cfg(unix)]
fn quiet_on_closed_pipe() {
    // SAFETY: restores the default disposition of one signal, before any
    // thread is started.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
}

#[cfg(not(unix))]
fn quiet_on_closed_pipe() {}

fn main() -> ExitCode {
    quiet_on_closed_pipe();
    alloc::keep_freed_memory();
    let cli = Cli::parse(); // clap exits 2 on usage errors
    match dispatch(cli) {
        Ok(Outcome::Ok) => ExitCode::SUCCESS,
        Ok(Outcome::SomeFailed) => ExitCode::from(1),
        Err(err) => {
            eprintln!("error: {err:#}");
            ExitCode::from(2)
        }
    }
}

fn dispatch(cli: Cli) -> anyhow::Result<Outcome> {
    match cli.command {
        Command::List { format, suites } => list(format, &suites).map(|_| Outcome::Ok),
        Command::Plan {
            suite,
            profile,
            format,
            max_memory,
        } => plan(&suite, profile.as_deref(), format, &limits(max_memory)).map(|_| Outcome::Ok),
        cmd @ Command::Run { .. } => run_command(cmd),
        Command::Merge {
            out_dir,
            shard_dirs,
        } => {
            let copied = retbench_harness::merge(&out_dir, &shard_dirs)?;
            eprintln!(
                "merged {} shard folders into {}: {copied} runs copied",
                shard_dirs.len(),
                out_dir.display()
            );
            Ok(Outcome::Ok)
        }
        Command::Report {
            dirs,
            index,
            pdf,
            size,
        } => report_command(dirs, index, pdf, size),
        cmd @ Command::Compare { .. } => compare_command(cmd),
        Command::CheckFigures { paths, summary } => check_figures(&paths, summary),
        Command::Bench {
            profile,
            suites,
            jobs,
            cores,
            shard,
            max_memory,
            out,
            force,
            replan,
            require_clean,
            kernels,
        } => {
            kernels.select();
            bench(
                &suites,
                profile.as_deref(),
                (jobs, cores, shard),
                &limits(max_memory),
                out.as_deref(),
                (force, replan, require_clean),
            )
        }
        Command::TrainBench {
            d_model,
            slots,
            fill,
            top_k,
            steps,
            threads,
            jobs,
            format,
            kernels,
        } => {
            kernels.select();
            let retention: Vec<_> = slots
                .iter()
                .map(|&slots| BenchRetention {
                    slots,
                    top_k,
                    filled: fill.min(slots),
                })
                .collect();
            train_bench(&d_model, &retention, steps, (threads, jobs), format).map(|_| Outcome::Ok)
        }
        Command::Datasets {
            suites,
            profile,
            out,
            check,
        } => datasets(suites, profile.as_deref(), &out, check),
        Command::Slurm { command } => slurm::dispatch(command).map(|_| Outcome::Ok),
        Command::Memory {
            command: MemoryCommand::Inspect { snapshot, format },
        } => inspect(&snapshot, format).map(|_| Outcome::Ok),
    }
}

/// `retbench check-figures`: every defect of every SVG under `paths`, then
/// counts per kind; any defect fails (exit 1).
fn check_figures(paths: &[PathBuf], summary: bool) -> anyhow::Result<Outcome> {
    let svgs = retbench_report::layout::svgs_under(paths)?;
    anyhow::ensure!(!svgs.is_empty(), "no SVG figure under {paths:?}");
    let mut kinds: std::collections::BTreeMap<&str, (usize, usize)> = Default::default();
    let mut bad = 0;
    for svg in &svgs {
        let defects = retbench_report::layout::check_svg(svg)?;
        let mut seen = std::collections::BTreeSet::new();
        for d in &defects {
            let k = kinds.entry(d.kind()).or_default();
            k.0 += 1;
            if seen.insert(d.kind()) {
                k.1 += 1;
            }
            if !summary {
                println!("{}: {d}", svg.display());
            }
        }
        bad += usize::from(!defects.is_empty());
    }
    for (kind, (n, figures)) in &kinds {
        println!("{kind}: {n} in {figures} figures");
    }
    println!("{bad} of {} figures have defects", svgs.len());
    Ok(if bad == 0 {
        Outcome::Ok
    } else {
        Outcome::SomeFailed
    })
}

/// `retbench run`: plan, run (resumable), report.
fn run_command(cmd: Command) -> anyhow::Result<Outcome> {
    let Command::Run {
        suite,
        profile,
        out,
        jobs,
        cores,
        shard,
        only,
        force,
        replan,
        require_clean,
        no_report,
        quiet,
        max_memory,
        kernels,
    } = cmd
    else {
        unreachable!("run_command takes Command::Run")
    };
    kernels.select();
    let plan = suite::load_with(&suite, profile.as_deref(), &limits(max_memory))?;
    let out = out.unwrap_or_else(|| default_out(&plan));
    let opts = RunOptions {
        out,
        jobs,
        cores,
        shard,
        only,
        force,
        replan,
        require_clean,
        progress: if quiet {
            Progress::Quiet
        } else {
            Progress::Auto
        },
    };
    limit_candle_threads(retbench_harness::runner::schedule(&plan, &opts).1);
    run_suite(&plan, &opts, !no_report)
}

/// `retbench report`: re-derive each folder's tables from its run files,
/// then its summaries, figures and page; and an index across them.
fn report_command(
    dirs: Vec<PathBuf>,
    index: Option<PathBuf>,
    pdf: bool,
    size: SizeArg,
) -> anyhow::Result<Outcome> {
    let mut done = Vec::new();
    for dir in dirs {
        retbench_harness::refresh(&dir)?;
        let size = match size {
            SizeArg::Screen => retbench_report::FigureSize::Screen,
            SizeArg::OneColumn => retbench_report::FigureSize::OneColumn,
            SizeArg::TwoColumn => retbench_report::FigureSize::TwoColumn,
        };
        let opts = retbench_report::ReportOptions {
            pdf,
            size,
            index: index.clone(),
        };
        let out = retbench_report::report_with(&dir, opts)?;
        eprintln!(
            "{}: {} summary rows, {} figure files",
            dir.display(),
            out.summary_rows,
            out.figures.len()
        );
        done.push((dir, out));
    }
    if let Some(index) = index {
        retbench_report::write_index(&index, &done)
            .with_context(|| format!("writing {}", index.display()))?;
        eprintln!("{}: {} reports", index.display(), done.len());
    }
    Ok(Outcome::Ok)
}

/// `retbench compare`: a regression check of two run folders.
fn compare_command(cmd: Command) -> anyhow::Result<Outcome> {
    let Command::Compare {
        baseline,
        current,
        tolerance,
        timing_tolerance,
        strict_timing,
        allow_different_plans,
        format,
    } = cmd
    else {
        unreachable!("compare_command takes Command::Compare")
    };
    for (name, v) in [
        ("--tolerance", tolerance),
        ("--timing-tolerance", timing_tolerance),
    ] {
        anyhow::ensure!(v.is_finite() && v >= 0.0, "{name} must be >= 0, got {v}");
    }
    let tol = retbench_report::Tolerances {
        quality: tolerance,
        timing: timing_tolerance,
        strict_timing,
    };
    let report = retbench_report::compare(&baseline, &current, tol, allow_different_plans)
        .with_context(|| {
            format!(
                "comparing {} with {}",
                baseline.display(),
                current.display()
            )
        })?;
    match format {
        CompareFormat::Markdown => print!("{}", report.markdown()),
        CompareFormat::Json => {
            println!("{}", serde_json::to_string_pretty(&report)?)
        }
    }
    Ok(if report.regressed() {
        Outcome::SomeFailed
    } else {
        Outcome::Ok
    })
}

/// The plan limits, with `--max-memory` if given.
fn limits(max_memory: Option<u64>) -> suite::Limits {
    let mut l = suite::Limits::default();
    if let Some(m) = max_memory {
        l.max_memory = m;
    }
    l
}

/// `--jobs`: at least one.
fn parse_jobs(s: &str) -> Result<usize, String> {
    match s.parse::<usize>() {
        Ok(0) => Err("must be at least 1".into()),
        Ok(n) => Ok(n),
        Err(e) => Err(e.to_string()),
    }
}

/// A byte count with an optional binary suffix: 512M, 8G, 1.5T, 1048576.
fn parse_bytes(s: &str) -> Result<u64, String> {
    let t = s.trim();
    let (num, mult) = match t.char_indices().find(|(_, c)| c.is_ascii_alphabetic()) {
        Some((i, _)) => {
            let unit = t[i..].to_ascii_uppercase();
            let m: u64 = match unit.trim_end_matches("IB").trim_end_matches('B') {
                "" => 1,
                "K" => 1 << 10,
                "M" => 1 << 20,
                "G" => 1 << 30,
                "T" => 1 << 40,
                _ => return Err(format!("unknown unit {:?} (use K, M, G or T)", &t[i..])),
            };
            (&t[..i], m)
        }
        None => (t, 1),
    };
    let x: f64 = num
        .trim()
        .parse()
        .map_err(|_| format!("{s:?} is not a size such as 8G or 512M"))?;
    if !(x.is_finite() && x > 0.0) {
        return Err("must be a positive size".into());
    }
    Ok((x * mult as f64) as u64)
}

/// Sizes candle's process-wide pool for elementwise ops to one run's share
/// of the cores, so that jobs × threads ≤ cores holds for every kernel, not
/// only for the matmuls that run inside each run's rayon pool. Under the
/// fused kernels candle's own elementwise ops are few and small, and its
/// pool's workers spin on pinned cores between them, taking those cores from
/// the rayon threads that do the work (measured: 1.45x tokens/s at d_model 64
/// with 2 threads when it has one thread), so it gets one. A value the user
/// set is kept.
fn limit_candle_threads(threads: usize) {
    let threads = match retbench_kernels::kernels() {
        retbench_kernels::Kernels::Fused => 1,
        retbench_kernels::Kernels::Unfused => threads,
    };
    if std::env::var_os("CANDLE_NUM_THREADS").is_none() {
        // SAFETY: called from main before any other thread exists (no rayon
        // or candle pool has started yet), so nothing reads the environment
        // concurrently.
        unsafe { std::env::set_var("CANDLE_NUM_THREADS", threads.to_string()) };
    }
}

/// `retbench train-bench`: `jobs` trainings side by side, each on its own
/// pool of `threads` kernel threads, for every width, without retention and
/// with each of `retention`; the matmul peak first, measured the same way.
fn train_bench(
    widths: &[usize],
    retention: &[BenchRetention],
    steps: usize,
    (threads, jobs): (Option<usize>, usize),
    format: BenchFormat,
) -> anyhow::Result<()> {
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let threads = threads.unwrap_or((cores / jobs).max(1));
    if std::env::var_os("RAYON_NUM_THREADS").is_none() {
        // SAFETY: as in limit_candle_threads, before any thread exists.
        unsafe { std::env::set_var("RAYON_NUM_THREADS", threads.to_string()) };
    }
    limit_candle_threads(threads);
    let kernels = retbench_kernels::kernels().name();
    let peak: f64 = side_by_side(jobs, threads, bench::matmul_peak_gflops)?
        .iter()
        .sum();
    if let BenchFormat::Text = format {
        println!(
            "kernels {kernels}, {jobs} job(s) x {threads} thread(s), {cores} cores; median of {steps} steps after one warm-up; fp32 matmul peak (candle, 2048x2048) {peak:.0} GFLOP/s\n"
        );
        println!(
            "| d_model | retention | tokens/s | per job | GFLOP per token | GFLOP/s | share of peak |\n|---|---|---|---|---|---|---|"
        );
    }
    let rows = std::iter::once(None).chain(retention.iter().copied().map(Some));
    for &d in widths {
        for r in rows.clone() {
            let per_job = side_by_side(jobs, threads, || {
                let mut rates = bench::train_throughput(d, r, steps)?;
                rates.sort_by(f64::total_cmp);
                Ok(rates[rates.len() / 2])
            })?;
            let total: f64 = per_job.iter().sum();
            let flops = bench::flops_per_token(d, r);
            let gflops = total * flops / 1e9;
            let label = r.map_or("none".to_string(), |r| format!("block 1, {}", r.label()));
            match format {
                BenchFormat::Text => println!(
                    "| {d} | {label} | {total:.0} | {} | {:.3}e-3 | {gflops:.1} | {:.1}% |",
                    per_job
                        .iter()
                        .map(|r| format!("{r:.0}"))
                        .collect::<Vec<_>>()
                        .join(" "),
                    flops / 1e6,
                    100.0 * gflops / peak
                ),
                BenchFormat::Jsonl => println!(
                    "{}",
                    serde_json::json!({
                        "d_model": d, "retention": label,
                        "slots": r.map(|r| r.slots), "top_k": r.and_then(|r| r.top_k),
                        "filled": r.map(|r| r.filled),
                        "kernels": kernels, "jobs": jobs, "threads": threads, "steps": steps,
                        "tokens_per_s": total, "per_job": per_job,
                        "flops_per_token": flops, "gflops": gflops,
                        "matmul_peak_gflops": peak, "share_of_peak": gflops / peak,
                    })
                ),
            }
        }
    }
    Ok(())
}

/// Runs `f` in `jobs` threads at once, each on its own pool of `threads`
/// kernel threads; its results in job order.
fn side_by_side<F>(jobs: usize, threads: usize, f: F) -> anyhow::Result<Vec<f64>>
where
    F: Fn() -> Result<f64, retbench_model::TrainError> + Sync,
{
    std::thread::scope(|scope| {
        let handles: Vec<_> = (0..jobs)
            .map(|_| {
                scope.spawn(|| -> anyhow::Result<f64> {
                    let pool = rayon_pool(threads)?;
                    Ok(pool.install(&f)?)
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("bench thread panicked"))
            .collect()
    })
}

/// `--fill`: `empty`, `full` (every slot, whatever `--slots`) or a count.
fn parse_fill(s: &str) -> Result<usize, String> {
    match s {
        "empty" => Ok(0),
        "full" => Ok(usize::MAX),
        n => n
            .parse()
            .map_err(|_| format!("`{n}`: expected empty, full or a number of slots")),
    }
}

fn rayon_pool(threads: usize) -> anyhow::Result<rayon::ThreadPool> {
    rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .build()
        .context("starting a thread pool")
}

/// `reports/<suite>` or `reports/<suite>-<profile>`.
fn default_out(plan: &Plan) -> PathBuf {
    let name = match &plan.profile {
        Some(p) => format!("{}-{p}", plan.suite),
        None => plan.suite.clone(),
    };
    PathBuf::from("reports").join(name)
}

fn plan(
    path: &Path,
    profile: Option<&str>,
    format: PlanFormat,
    limits: &suite::Limits,
) -> anyhow::Result<()> {
    let plan = suite::load_with(path, profile, limits)?;
    match format {
        PlanFormat::Ids => plan.runs.iter().for_each(|r| println!("{}", r.run_id)),
        PlanFormat::Jsonl => {
            for r in &plan.runs {
                println!("{}", serde_json::to_string(r)?);
            }
        }
        PlanFormat::Text => {
            println!(
                "{} ({} runs{})",
                plan.suite,
                plan.runs.len(),
                plan.profile
                    .as_ref()
                    .map(|p| format!(", profile {p}"))
                    .unwrap_or_default()
            );
            let mut header = vec!["run_id".to_string(), "variant".into(), "seed".into()];
            header.extend(plan.param_columns.iter().cloned());
            let rows: Vec<Vec<String>> = plan
                .runs
                .iter()
                .map(|r| {
                    let mut row = vec![r.run_id.clone(), r.variant.clone(), r.seed.to_string()];
                    row.extend(plan.param_columns.iter().map(|c| {
                        r.params
                            .iter()
                            .find(|(p, _)| p == c)
                            .map(|(_, v)| retbench_harness::folder::csv_value(v))
                            .unwrap_or_default()
                    }));
                    row
                })
                .collect();
            let widths: Vec<usize> = (0..header.len())
                .map(|i| {
                    rows.iter()
                        .map(|r| r[i].chars().count())
                        .chain([header[i].len()])
                        .max()
                        .unwrap_or(0)
                })
                .collect();
            let line = |cells: &[String]| {
                cells
                    .iter()
                    .zip(&widths)
                    .map(|(c, w)| format!("{c:<w$}"))
                    .collect::<Vec<_>>()
                    .join("  ")
                    .trim_end()
                    .to_string()
            };
            println!("{}", line(&header));
            rows.iter().for_each(|r| println!("{}", line(r)));
        }
    }
    Ok(())
}

fn run_suite(plan: &Plan, opts: &RunOptions, with_report: bool) -> anyhow::Result<Outcome> {
    eprintln!(
        "{}: {} runs planned{} -> {}",
        plan.suite,
        plan.runs.len(),
        plan.profile
            .as_ref()
            .map(|p| format!(" (profile {p})"))
            .unwrap_or_default(),
        opts.out.display()
    );
    let s = retbench_harness::run_plan(plan, opts)?;
    eprintln!(
        "{} selected, {} already done, {} ok, {} failed; jobs {} x threads {}{}; results.csv: {} rows",
        s.selected,
        s.skipped,
        s.succeeded,
        s.failed,
        s.jobs,
        s.threads,
        s.bandwidth_gbps
            .map(|b| format!("; bandwidth {b:.1} GB/s"))
            .unwrap_or_default(),
        s.rows
    );
    if s.failed > 0 {
        eprintln!(
            "failed runs are listed in {}",
            retbench_harness::RunFolder::new(&opts.out)
                .failures_csv_path()
                .display()
        );
    }
    if with_report && s.rows > 0 {
        let out = retbench_report::report(&opts.out)
            .with_context(|| format!("reporting {}", opts.out.display()))?;
        eprintln!(
            "report: {} summary rows, {} figure files in {}",
            out.summary_rows,
            out.figures.len(),
            opts.out.display()
        );
    }
    Ok(if s.failed > 0 {
        Outcome::SomeFailed
    } else {
        Outcome::Ok
    })
}

fn bench(
    dir: &Path,
    profile: Option<&str>,
    (jobs, cores, shard): (Option<usize>, Option<usize>, Option<(usize, usize)>),
    limits: &suite::Limits,
    out: Option<&Path>,
    (force, replan, require_clean): (bool, bool, bool),
) -> anyhow::Result<Outcome> {
    let files = suite_files(dir)?;
    if files.is_empty() {
        anyhow::bail!("no suite files (*.yaml) in {}", dir.display());
    }
    // Validate every suite before running any.
    let plans = files
        .iter()
        .map(|f| suite::load_with(f, profile, limits))
        .collect::<Result<Vec<_>, _>>()?;
    let cores =
        cores.unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()));
    limit_candle_threads((cores / jobs.unwrap_or(cores).max(1)).max(1));
    let mut outcome = Outcome::Ok;
    for plan in &plans {
        let opts = RunOptions {
            out: out.map_or_else(|| default_out(plan), |o| o.join(&plan.suite)),
            jobs,
            cores: Some(cores),
            shard,
            only: None,
            force,
            replan,
            require_clean,
            progress: Progress::Auto,
        };
        if let Outcome::SomeFailed = run_suite(plan, &opts, true)? {
            outcome = Outcome::SomeFailed;
        }
    }
    Ok(outcome)
}

fn datasets(
    suites: Vec<PathBuf>,
    profile: Option<&str>,
    out: &Path,
    check: bool,
) -> anyhow::Result<Outcome> {
    use retbench_harness::datasets;
    if check {
        return match datasets::check(out) {
            Ok(n) => {
                eprintln!("{}: {n} datasets regenerate bit for bit", out.display());
                Ok(Outcome::Ok)
            }
            Err(problems) => {
                for p in &problems {
                    eprintln!("{p}");
                }
                Ok(Outcome::SomeFailed)
            }
        };
    }
    let files = if suites.is_empty() {
        suite_files(Path::new("suites"))?
    } else {
        suites
    };
    let mut all = Vec::new();
    for f in &files {
        let plan = suite::load(f, profile)?;
        all.extend(datasets::of_plan(&plan));
    }
    let done = datasets::write(&all, out)?;
    eprintln!(
        "{}: {} datasets written, {} unchanged",
        out.display(),
        done.written,
        done.unchanged
    );
    Ok(Outcome::Ok)
}

fn suite_files(dir: &Path) -> anyhow::Result<Vec<PathBuf>> {
    if !dir.exists() {
        return Ok(Vec::new());
    }
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .with_context(|| format!("reading {}", dir.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| matches!(p.extension().and_then(|e| e.to_str()), Some("yaml" | "yml")))
        .collect();
    files.sort();
    Ok(files)
}

/// docs/AXES.md: the catalogue of options, the tasks and their metrics, and
/// the suites, as Markdown tables (CI checks the file is this output).
fn list_markdown(files: &[PathBuf]) -> String {
    use std::fmt::Write;
    let cell = |s: &str| s.replace('|', "\\|");
    let mut md = String::from(
        "# Axes, tasks and metrics\n\n\
         Generated by `retbench list --format markdown` from the code (the \
         backend catalogue and the tasks' metric specs); CI fails when this file \
         is not current. Every value is written as it is typed under \
         `retention:` in a suite file, and a test parses each one.\n",
    );
    let mut axis = "";
    for e in CATALOG {
        if e.axis != axis {
            axis = e.axis;
            let _ = write!(md, "\n## `{axis}`\n\n| value | what it does |\n|---|---|\n");
        }
        let _ = writeln!(md, "| `{}` | {} |", cell(e.yaml), cell(e.about));
    }
    md.push_str("\n## Tasks (the `task:` block) and their metrics\n");
    for kind in retbench_tasks::TaskConfig::KINDS {
        let Some(cfg) = retbench_tasks::TaskConfig::with_defaults(kind) else {
            continue;
        };
        let task = cfg.task();
        let _ = write!(md, "\n### `{kind}`\n\n{}\n\n", task.about());
        if let Some(defaults) = retbench_tasks::task_defaults(kind) {
            let _ = write!(md, "Defaults: `{defaults}`\n\n");
        }
        md.push_str("| metric | what it measures | slices |\n|---|---|---|\n");
        for m in task.metrics() {
            let _ = writeln!(
                md,
                "| `{}` | {} | {} |",
                m.name,
                cell(&m.label()),
                m.slices.join(", ")
            );
        }
    }
    md.push_str("\n## Suites\n\n");
    for f in files {
        let _ = writeln!(md, "- `{}`", f.display());
    }
    md
}

fn list(format: ListFormat, suites: &Path) -> anyhow::Result<()> {
    let files = suite_files(suites)?;
    match format {
        ListFormat::Markdown => print!("{}", list_markdown(&files)),
        ListFormat::Json => {
            let tasks: Vec<serde_json::Value> = retbench_tasks::TaskConfig::KINDS
                .iter()
                .filter_map(|kind| retbench_tasks::TaskConfig::with_defaults(kind))
                .map(|cfg| {
                    let task = cfg.task();
                    serde_json::json!({
                        "kind": task.kind(),
                        "about": task.about(),
                        "defaults": retbench_tasks::task_defaults(task.kind()),
                        "trains_a_model": task.trains_a_model(),
                        "metrics": task.metrics(),
                    })
                })
                .collect();
            let doc = serde_json::json!({
                "backends": CATALOG,
                "tasks": tasks,
                "suites": files.iter().map(|p| p.display().to_string()).collect::<Vec<_>>(),
            });
            println!("{}", serde_json::to_string_pretty(&doc)?);
        }
        ListFormat::Text => {
            println!("Retention backends and options (keys under `retention:` in a suite file):");
            let mut axis = "";
            for e in CATALOG {
                if e.axis != axis {
                    axis = e.axis;
                    println!("\n  {axis}:");
                }
                println!("    {:<46} {}", e.yaml, e.about);
            }
            println!("\nTasks (the `task:` block) and their metrics:");
            for kind in retbench_tasks::TaskConfig::KINDS {
                let Some(cfg) = retbench_tasks::TaskConfig::with_defaults(kind) else {
                    continue;
                };
                let task = cfg.task();
                println!("\n  {{ kind: {kind} }}    {}", task.about());
                if let Some(defaults) = retbench_tasks::task_defaults(kind) {
                    println!("    defaults: {defaults}");
                }
                println!("    metrics:");
                for m in task.metrics() {
                    let slices = if m.slices.is_empty() {
                        String::new()
                    } else {
                        format!(" [by {}]", m.slices.join(", "))
                    };
                    println!("      {:<26} {}{slices}", m.name, m.label());
                }
            }
            println!(
                "\nBlocks of tasks that train a model (recall), with defaults:\n\n\
                 \x20 model: {{ d_model, layers, heads, ffn_mult: 4 }}   vocab and max_len: from the task\n\
                 \x20 train: {{ steps, lr, batch: 32, warmup: 5% of steps, weight_decay: 0.01, clip: 1.0,\n\
                 \x20         detach_between_sessions: false, frozen_base: false, base_steps: STEPS, base_init: PATH }}\n\
                 \x20   (base_steps or base_init: a base without retention first, then frozen_base: true\n\
                 \x20    trains retention only, false fine-tunes everything; frozen_base alone: base_steps = steps)\n\
                 \x20 eval:  {{ episodes: 512, batch: 128, every: STEPS }}\n\
                 \x20 baselines: `retention: null` (no memory); `task.context: full` (all sessions in one context)"
            );
            println!("\nSuites in {}/:", suites.display());
            if files.is_empty() {
                println!("  (none)");
            }
            for f in files {
                println!("  {}", f.display());
            }
        }
    }
    Ok(())
}

fn inspect(path: &Path, format: Format) -> anyhow::Result<()> {
    // The snapshot error already names the file.
    let snap = snapshot::read(path, &candle_core::Device::Cpu)?;
    let spaces: Vec<serde_json::Value> = snap
        .bank
        .iter()
        .map(|(name, s)| {
            let occupied: Vec<usize> = (0..s.batch()).map(|b| s.occupied(b)).collect();
            serde_json::json!({
                "namespace": name,
                "memories": s.batch(),
                "slots": s.slots(),
                "dim": s.dim(),
                "cached_key_dim": s.key_dim(),
                "dtype": format!("{:?}", s.dtype()).to_lowercase(),
                "occupied": occupied,
                "writes": s.clocks().writes,
                "events": s.clocks().events,
                "telemetry": Telemetry::mean(s),
            })
        })
        .collect();
    match format {
        Format::Json => {
            let doc = serde_json::json!({
                "file": path.display().to_string(),
                "format_version": snap.format_version,
                "config_hash": snap.config_hash,
                "retbench_version": snap.retbench_version,
                "namespaces": spaces,
            });
            println!("{}", serde_json::to_string_pretty(&doc)?);
        }
        Format::Text => {
            println!("{}", path.display());
            println!(
                "  format v{}, written by retbench {}, retention config {}",
                snap.format_version, snap.retbench_version, snap.config_hash
            );
            for (name, s) in snap.bank.iter() {
                let t = Telemetry::mean(s);
                let occupied: usize = (0..s.batch()).map(|b| s.occupied(b)).sum();
                println!("\n  namespace {name}");
                println!(
                    "    capacity     {} memories x {} slots x {} dims ({:?}{})",
                    s.batch(),
                    s.slots(),
                    s.dim(),
                    s.dtype(),
                    if s.key_dim() > 0 {
                        format!(", cached keys of width {}", s.key_dim())
                    } else {
                        String::new()
                    }
                );
                println!(
                    "    occupancy    {occupied} / {} slots ({:.1}%)",
                    s.batch() * s.slots(),
                    100.0 * t.occupancy
                );
                println!(
                    "    writes       {} (events {})",
                    s.clocks().writes,
                    s.clocks().events
                );
                println!("    evictions    {:.1} per memory", t.evictions);
                println!("    usage KL     {:.4} nats from uniform", t.usage_kl);
                println!("    usage Gini   {:.4}", t.usage_gini);
                println!("    dead slots   {:.1} per memory", t.dead_slots);
            }
        }
    }
    Ok(())
}
