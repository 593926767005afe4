//! `retbench slurm submit` without a cluster: the scripts a dry run writes
//! (array size, shard arguments, resources, the report job's dependency) and
//! every bad input refused with exit 2 before anything is written or
//! submitted. The real cluster is exercised by scripts/slurm_check.sh in CI.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use common::{files_under, scratch};

fn suite(name: &str) -> String {
    let p = Path::new(env!("CARGO_MANIFEST_DIR")).join(format!("../../suites/{name}.yaml"));
    p.canonicalize().unwrap().display().to_string()
}

/// `retbench ARGS` with PATH set to `path`: (exit code, stdout, stderr).
fn retbench_with_path(args: &[&str], path: &Path) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_retbench"))
        .args(args)
        .env("PATH", path)
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn read(p: PathBuf) -> String {
    std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

#[test]
fn a_dry_run_writes_an_array_of_shards_and_a_report_job_after_it() {
    let dir = scratch("slurm-dry");
    let out = dir.join("recall");
    let recall = suite("recall");
    let (code, stdout, stderr) = common::retbench(&[
        "slurm",
        "submit",
        &recall,
        "--profile",
        "smoke",
        "--out",
        out.to_str().unwrap(),
        "--tasks",
        "3",
        "--cpus-per-task",
        "2",
        "--partition",
        "short",
        "--time",
        "0:30:00",
        "--extra-sbatch=--constraint=avx2",
        "--dry-run",
    ]);
    assert_eq!(code, 0, "{stderr}");
    let lines: Vec<&str> = stdout.lines().collect();
    let array = out.join("slurm/array.sbatch");
    let report = out.join("slurm/report.sbatch");
    assert_eq!(lines[1], format!("sbatch --parsable {}", array.display()));
    assert_eq!(
        lines[2],
        format!(
            "sbatch --parsable '--dependency=afterany:<array job id>' {}",
            report.display()
        )
    );
    let script = read(array);
    for want in [
        "#SBATCH --array=0-2\n",
        "#SBATCH --cpus-per-task=2\n",
        "#SBATCH --partition=short\n",
        "#SBATCH --time=0:30:00\n",
        "#SBATCH --constraint=avx2\n",
        " --profile smoke ",
        " --shard \"$SLURM_ARRAY_TASK_ID/3\" ",
        " --cores \"${SLURM_CPUS_PER_TASK:-2}\" ",
        &format!(" run {recall} "),
        &format!(" --out {} ", out.display()),
    ] {
        assert!(
            script.contains(want),
            "array script lacks {want:?}:\n{script}"
        );
    }
    let report = read(report);
    assert!(
        report.contains(&format!(" report {}\n", out.display())),
        "{report}"
    );
    assert!(report.contains(" slurm status "), "{report}");
    assert!(!report.contains("--array"), "{report}");
    // The plan is written as `run` writes it: a later local run resumes it.
    assert!(out.join("plan.json").is_file());
    let sub: serde_json::Value =
        serde_json::from_str(&read(out.join("slurm/submission.json"))).unwrap();
    assert_eq!(sub["tasks"], 3);
    assert_eq!(sub["runs"], 5);
    assert_eq!(
        sub["jobs"].as_array().unwrap().len(),
        0,
        "nothing submitted"
    );
}

#[test]
fn the_array_has_one_task_per_run_by_default_and_never_more() {
    let dir = scratch("slurm-tasks");
    for (tasks, want) in [(None, "0-4"), (Some("40"), "0-4")] {
        let out = dir.join(format!("out-{}", tasks.unwrap_or("default")));
        let mut args = vec![
            "slurm".to_string(),
            "submit".into(),
            suite("recall"),
            "--profile".into(),
            "smoke".into(),
            "--out".into(),
            out.display().to_string(),
            "--dry-run".into(),
        ];
        if let Some(t) = tasks {
            args.extend(["--tasks".into(), t.to_string()]);
        }
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let (code, _, stderr) = common::retbench(&args);
        assert_eq!(code, 0, "{stderr}");
        let script = read(out.join("slurm/array.sbatch"));
        assert!(
            script.contains(&format!("#SBATCH --array={want}\n")),
            "{script}"
        );
        assert!(
            script.contains("--shard \"$SLURM_ARRAY_TASK_ID/5\""),
            "{script}"
        );
    }
}

/// `slurm submit ARGS` must exit 2 with `want` in its message and leave
/// `out` as it was; run with PATH = `path` where given.
fn refused(args: &[&str], out: &Path, path: Option<&Path>, want: &str) {
    let before = files_under(out);
    let mut all = vec!["slurm", "submit"];
    all.extend_from_slice(args);
    let (code, _, err) = match path {
        Some(p) => retbench_with_path(&all, p),
        None => common::retbench(&all),
    };
    assert_eq!(code, 2, "{args:?}: {err}");
    assert!(err.contains(want), "{args:?}: want {want:?} in {err}");
    assert!(!err.contains("panicked"), "{err}");
    assert_eq!(
        files_under(out),
        before,
        "{args:?} wrote under {}",
        out.display()
    );
}

#[test]
fn bad_input_is_refused_before_anything_is_written_or_submitted() {
    let dir = scratch("slurm-bad");
    let out = dir.join("out");
    let o = out.to_str().unwrap();
    let recall = suite("recall");
    let bad = dir.join("bad.yaml");
    std::fs::write(&bad, "name: bad\nbase: [\n").unwrap();
    refused(
        &[bad.to_str().unwrap(), "--out", o, "--dry-run"],
        &out,
        None,
        "bad.yaml",
    );
    refused(
        &[&recall, "--profile", "nonesuch", "--out", o, "--dry-run"],
        &out,
        None,
        "nonesuch",
    );
    refused(
        &[&recall, "--out", o, "--tasks", "0"],
        &out,
        None,
        "--tasks",
    );
    // sbatch missing: a submission (not a dry run) needs it.
    let empty = dir.join("empty-path");
    std::fs::create_dir_all(&empty).unwrap();
    refused(
        &[&recall, "--profile", "smoke", "--out", o],
        &out,
        Some(&empty),
        "sbatch is not on PATH",
    );
    // An --out that holds another plan.
    let (code, _, err) = common::retbench(&[
        "slurm",
        "submit",
        &suite("scaling"),
        "--profile",
        "smoke",
        "--out",
        o,
        "--dry-run",
    ]);
    assert_eq!(code, 0, "{err}");
    refused(
        &[&recall, "--profile", "smoke", "--out", o, "--dry-run"],
        &out,
        None,
        "holds the results of another plan",
    );
}

#[test]
fn status_and_resume_need_a_submission() {
    let dir = scratch("slurm-none");
    let (code, _, err) = common::retbench(&["slurm", "status", dir.to_str().unwrap()]);
    assert_eq!(code, 2);
    assert!(err.contains("no Slurm submission here"), "{err}");
    let (code, _, err) = common::retbench(&["slurm", "resume", dir.to_str().unwrap()]);
    assert_eq!(code, 2);
    assert!(err.contains("no Slurm submission here"), "{err}");
}
