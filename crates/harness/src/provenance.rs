//! Where a run's code came from: the commit it was built from and, for a
//! working tree with uncommitted changes, the changes themselves. A dirty
//! run's record names the SHA-256 of its diff (what `sha256sum` prints, so
//! `scripts/provenance.py` checks it without Rust), and the diff is stored in
//! the run folder under that hash (`diffs/<hash>.patch`), so the code that
//! made any result can be checked out again: the commit, then `git apply`.
//! With `--require-clean` a run refuses to start from such a tree instead.
//! Only the code and inputs count (`SOURCES`): a sweep that rewrites
//! committed run folders under `reports/` stays clean.

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
    /// The source of the process's working folder. "Dirty" means changes
    /// to the code and inputs ([`SOURCES`]), not to run folders: a sweep
    /// writing into `reports/` does not make its own later runs dirty.
    pub fn here() -> Self {
        let Some(head) = git(&["describe", "--always", "--abbrev=12"]) else {
            return Source {
                commit: "unknown".into(),
                diff: None,
            };
        };
        let head = String::from_utf8_lossy(&head).trim().to_string();
        let diff = working_diff();
        if diff.is_empty() {
            return Source {
                commit: head,
                diff: None,
            };
        }
        Source {
            commit: format!("{head}-dirty"),
            diff: Some((retbench_tasks::learned::sha256_hex(&diff), diff)),
        }
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

/// The folders and files that make a run's code and inputs (sources,
/// build settings, suites, datasets). Changes elsewhere (run folders under
/// `reports/`, docs) change no result.
const SOURCES: [&str; 8] = [
    "crates",
    "suites",
    "scripts",
    "datasets",
    "Cargo.toml",
    "Cargo.lock",
    "rust-toolchain.toml",
    ".cargo",
];

/// What `git apply` on the commit turns into the tree that ran: the diff of
/// tracked source files against HEAD, then each untracked source file as an
/// addition. Empty for a clean tree.
fn working_diff() -> Vec<u8> {
    let mut args = vec!["diff", "--binary", "HEAD", "--"];
    args.extend(SOURCES);
    let mut out = git(&args).unwrap_or_default();
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
