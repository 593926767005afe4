//! Where a run's code came from: the commit it was built from and, for a
//! working tree with uncommitted changes, the changes themselves. A dirty
//! run's record names the SHA-256 of its diff (what `sha256sum` prints, so
//! `scripts/provenance.py` checks it without Rust), and the diff is stored in
//! the run folder under that hash (`diffs/<hash>.patch`), so the code that
//! made any result can be checked out again: the commit, then `git apply`.
//! With `--require-clean` a run refuses to start from such a tree instead.

use crate::folder::Provenance;

/// The code a run is made from.
#[derive(Debug, Clone)]
pub struct Source {
    /// `git describe --always --dirty --abbrev=12`, or `unknown` outside a
    /// git checkout.
    pub commit: String,
    /// For a dirty tree: the diff's hash and bytes.
    pub diff: Option<(String, Vec<u8>)>,
}

impl Source {
    /// The source of the process's working folder.
    pub fn here() -> Self {
        let commit = git(&["describe", "--always", "--dirty", "--abbrev=12"])
            .map(|o| String::from_utf8_lossy(&o).trim().to_string())
            .unwrap_or_else(|| "unknown".into());
        let diff = commit
            .ends_with("-dirty")
            .then(working_diff)
            .map(|d| (retbench_tasks::learned::sha256_hex(&d), d));
        Source { commit, diff }
    }

    /// Whether the code is a commit the repository holds as it is.
    pub fn is_clean(&self) -> bool {
        self.commit != "unknown" && !self.commit.ends_with("-dirty")
    }
}

/// Runs git with `args`; its stdout when it succeeds.
fn git(args: &[&str]) -> Option<Vec<u8>> {
    std::process::Command::new("git")
        .args(args)
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| o.stdout)
}

/// Folders and files whose untracked contents are code or inputs of a run
/// (new source files, suites, datasets); untracked outputs elsewhere (run
/// folders) are not.
const SOURCES: [&str; 7] = [
    "crates",
    "suites",
    "scripts",
    "datasets",
    "Cargo.toml",
    "Cargo.lock",
    "rust-toolchain.toml",
];

/// What `git apply` on the commit turns into the tree that ran: the diff of
/// tracked files against HEAD, then each untracked source file as an
/// addition.
fn working_diff() -> Vec<u8> {
    let mut out = git(&["diff", "--binary", "HEAD"]).unwrap_or_default();
    let mut args = vec!["ls-files", "--others", "--exclude-standard", "-z", "--"];
    args.extend(SOURCES);
    let untracked = git(&args).unwrap_or_default();
    for file in untracked.split(|&b| b == 0).filter(|f| !f.is_empty()) {
        let file = String::from_utf8_lossy(file);
        // `--no-index` exits 1 when the files differ, which they do.
        if let Ok(o) = std::process::Command::new("git")
            .args(["diff", "--binary", "--no-index", "--", "/dev/null", &file])
            .output()
        {
            out.extend(o.stdout);
        }
    }
    out
}

/// Facts about this machine, build and source, gathered once per
/// invocation.
pub fn base(source: &Source, jobs: usize, threads: usize) -> Provenance {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split_once(':'))
                .map(|(_, v)| v.trim().to_string())
        })
        .unwrap_or_else(|| std::env::consts::ARCH.to_string());
    Provenance {
        retbench_version: env!("CARGO_PKG_VERSION").to_string(),
        git_commit: source.commit.clone(),
        diff_hash: source.diff.as_ref().map(|(h, _)| h.clone()),
        rustc_version: env!("RETBENCH_RUSTC_VERSION").to_string(),
        cpu_model: cpu,
        jobs,
        threads,
        wall_seconds: 0.0,
        dataset_hash: None,
        kernels: Some(retbench_kernels::kernels().name().into()),
        finished_unix: None,
    }
}
