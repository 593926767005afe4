//! The `retbench` binary: parses the command line (clap), dispatches to the
//! library crates, prints the whole error chain on failure, and maps failures
//! to the exit codes of DESIGN.md (2 for bad input: usage, YAML, files).

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context;
use clap::{Parser, Subcommand, ValueEnum};
use retbench_core::config::CATALOG;
use retbench_core::{Telemetry, snapshot};

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

#[derive(Subcommand)]
enum Command {
    /// List every backend and option (as typed in a suite's `retention:` block) and the suites in suites/.
    List {
        #[arg(long, value_enum, default_value_t = Format::Text)]
        format: Format,
        /// Folder of suite files.
        #[arg(long, default_value = "suites")]
        suites: PathBuf,
    },
    /// Work with memory snapshots.
    Memory {
        #[command(subcommand)]
        command: MemoryCommand,
    },
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

fn main() -> ExitCode {
    let cli = Cli::parse(); // clap exits 2 on usage errors
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("error: {err:#}");
            ExitCode::from(2)
        }
    }
}

fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::List { format, suites } => list(format, &suites),
        Command::Memory {
            command: MemoryCommand::Inspect { snapshot, format },
        } => inspect(&snapshot, format),
    }
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

fn list(format: Format, suites: &Path) -> anyhow::Result<()> {
    let files = suite_files(suites)?;
    match format {
        Format::Json => {
            let doc = serde_json::json!({
                "backends": CATALOG,
                "suites": files.iter().map(|p| p.display().to_string()).collect::<Vec<_>>(),
            });
            println!("{}", serde_json::to_string_pretty(&doc)?);
        }
        Format::Text => {
            println!("Retention backends and options (keys under `retention:` in a suite file):");
            let mut axis = "";
            for e in CATALOG {
                if e.axis != axis {
                    axis = e.axis;
                    println!("\n  {axis}:");
                }
                println!("    {:<46} {}", e.yaml, e.about);
            }
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
