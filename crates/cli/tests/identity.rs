//! Results that cannot be mixed or misattributed, end to end through the
//! binary: `run`, `merge` and `compare` refuse folders of other plans (exit
//! 2, nothing written), `compare` refuses folders with nothing in common and
//! fails on a config the baseline has and the current results lack, and a
//! run from a dirty git tree keeps its diff under the hash its record names
//! (with the real `git`).

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use common::{files_under, scratch};

/// A small scaling suite named `name` over `slots` (a second or so a run).
fn suite(dir: &Path, file: &str, name: &str, slots: &str) -> PathBuf {
    let text = format!(
        "name: {name}\nbase:\n  task: {{ kind: scaling, d: 16, batches: [1], queries: 2, \
         min_reads: 1, warmup: 0, writes: 1, probes: 4 }}\n  retention: {{ slots: 8 }}\n\
         seeds: [0]\ngrid:\n  retention.slots: {slots}\n"
    );
    let path = dir.join(file);
    std::fs::write(&path, text).unwrap();
    path
}

fn run(args: &[&str]) -> (i32, String) {
    let (code, out, err) = common::retbench(args);
    (code, format!("{out}{err}"))
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

#[test]
fn folders_of_other_plans_are_never_mixed() {
    let dir = scratch("identity");
    let a = suite(&dir, "a.yaml", "alpha", "[8, 16]");
    let b = suite(&dir, "b.yaml", "beta", "[8, 16]");
    let (fa, fb) = (dir.join("fa"), dir.join("fb"));
    for (suite, out) in [(&a, &fa), (&b, &fb)] {
        let (code, log) = run(&["run", s(suite), "--out", s(out), "--no-report", "-q"]);
        assert_eq!(code, 0, "{log}");
    }

    // merge of two suites' folders: exit 2, the target never created.
    let merged = dir.join("merged");
    let (code, log) = run(&["merge", s(&merged), s(&fa), s(&fb)]);
    assert_eq!(code, 2, "{log}");
    assert!(
        log.contains("hold different plans") && log.contains("suite"),
        "{log}"
    );
    assert!(
        files_under(&merged).is_empty(),
        "merge wrote {:?}",
        files_under(&merged)
    );
    // ... nor into a target that holds another plan.
    let before = files_under(&fb);
    let (code, log) = run(&["merge", s(&fb), s(&fa)]);
    assert_eq!(code, 2, "{log}");
    assert_eq!(
        files_under(&fb),
        before,
        "a refused merge changed the target"
    );

    // run into another suite's folder: exit 2, the folder untouched.
    let (code, log) = run(&["run", s(&a), "--out", s(&fb), "--no-report", "-q"]);
    assert_eq!(code, 2, "{log}");
    assert!(log.contains("another plan"), "{log}");
    assert_eq!(files_under(&fb), before, "a refused run changed the folder");

    // An earlier plan of the same suite: refused, then with --replan a run
    // whose id alone changed (a variant renamed) keeps its record under the
    // new id and nothing reruns; a run the plan dropped is retired.
    let renamed = dir.join("renamed.yaml");
    let text = std::fs::read_to_string(&a).unwrap();
    let first =
        format!("{text}variants:\n  first: {{ retention.slots: 32 }}\n").replace("[8, 16]", "[8]");
    std::fs::write(&renamed, &first).unwrap();
    let fr = dir.join("fr");
    let (code, log) = run(&["run", s(&renamed), "--out", s(&fr), "--no-report", "-q"]);
    assert_eq!(code, 0, "{log}");
    std::fs::write(
        &renamed,
        first.replace("first:", "second:").replace("[8]", "[16]"),
    )
    .unwrap();
    let (code, log) = run(&["run", s(&renamed), "--out", s(&fr), "--no-report", "-q"]);
    assert_eq!(code, 2, "{log}");
    assert!(log.contains("--replan"), "{log}");
    let (code, log) = run(&[
        "run",
        s(&renamed),
        "--out",
        s(&fr),
        "--no-report",
        "--replan",
    ]);
    assert_eq!(code, 0, "{log}");
    assert!(
        log.contains("1 records renamed") && log.contains("1 records of runs it no longer has"),
        "{log}"
    );
    assert!(log.contains("1 already done, 1 ok"), "{log}");
    let ids: Vec<String> = std::fs::read_dir(fr.join("runs"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert!(ids.iter().any(|i| i.starts_with("second-")), "{ids:?}");
    assert_eq!(
        std::fs::read_dir(fr.join("retired/runs")).unwrap().count(),
        1
    );

    // compare of two suites: exit 2 unless asked for.
    let (code, log) = run(&["compare", s(&fa), s(&fb)]);
    assert_eq!(code, 2, "{log}");
    assert!(log.contains("different plans"), "{log}");
    let (code, log) = run(&["compare", s(&fa), s(&fb), "--allow-different-plans"]);
    assert_eq!(code, 0, "{log}");
    assert!(log.contains("2 configs compared"), "{log}");
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn compare_needs_a_config_in_common_and_misses_none_of_the_baselines() {
    let dir = scratch("joined");
    let (small, other, both) = (dir.join("small"), dir.join("other"), dir.join("both"));
    for (slots, out) in [("[8]", &small), ("[16]", &other), ("[8, 16]", &both)] {
        let file = suite(&dir, "s.yaml", "same", slots);
        let (code, log) = run(&["run", s(&file), "--out", s(out), "--no-report", "-q"]);
        assert_eq!(code, 0, "{log}");
    }
    // Nothing in common: an error, never PASS.
    let (code, log) = run(&["compare", s(&small), s(&other)]);
    assert_eq!(code, 2, "{log}");
    assert!(log.contains("no config in common"), "{log}");
    // The same run on both sides passes and says what it joined.
    let (code, log) = run(&["compare", s(&both), s(&both)]);
    assert_eq!(code, 0, "{log}");
    assert!(log.contains("**PASS**: 2 configs compared"), "{log}");
    // A config of the baseline missing from the current results fails.
    let (code, log) = run(&["compare", s(&both), s(&small)]);
    assert_eq!(code, 1, "{log}");
    assert!(log.contains("**FAIL**: 1 configs compared"), "{log}");
    assert!(log.contains("Configs only in the baseline"), "{log}");
    std::fs::remove_dir_all(dir).unwrap();
}

fn git(dir: &Path, args: &[&str]) {
    let out = Command::new("git")
        .args([
            "-c",
            "user.name=t",
            "-c",
            "user.email=t@t",
            "-c",
            "commit.gpgsign=false",
        ])
        .args(args)
        .current_dir(dir)
        .output()
        .unwrap();
    assert!(out.status.success(), "git {args:?}: {out:?}");
}

#[test]
fn a_run_from_a_dirty_tree_keeps_its_diff_under_the_hash_it_names() {
    let dir = scratch("dirty");
    let repo = dir.join("repo");
    std::fs::create_dir_all(repo.join("suites")).unwrap();
    let file = suite(&repo.join("suites"), "s.yaml", "dirty", "[8]");
    std::fs::write(repo.join("notes.md"), "notes\n").unwrap();
    git(&repo, &["init", "-q"]);
    git(&repo, &["add", "."]);
    git(&repo, &["commit", "-q", "-m", "suite"]);
    let bin = env!("CARGO_BIN_EXE_retbench");
    // A change outside the code and inputs (notes, run folders) is not
    // dirt: a sweep rewriting committed reports stays clean.
    std::fs::write(repo.join("notes.md"), "more notes\n").unwrap();
    let out = Command::new(bin)
        .args([
            "run",
            "suites/s.yaml",
            "--out",
            "clean",
            "--no-report",
            "-q",
        ])
        .arg("--require-clean")
        .current_dir(&repo)
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    // A tracked change and an untracked source file.
    std::fs::write(
        &file,
        std::fs::read_to_string(&file).unwrap() + "# changed\n",
    )
    .unwrap();
    std::fs::write(repo.join("suites/new.yaml"), "name: new\n").unwrap();

    let go = |extra: &[&str]| {
        let out = Command::new(bin)
            .args(["run", "suites/s.yaml", "--out", "out", "--no-report", "-q"])
            .args(extra)
            .current_dir(&repo)
            .output()
            .unwrap();
        (
            out.status.code().unwrap(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let (code, err) = go(&["--require-clean"]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("-dirty"), "{err}");
    assert!(
        !repo.join("out").exists(),
        "--require-clean wrote something"
    );

    let (code, err) = go(&[]);
    assert_eq!(code, 0, "{err}");
    let runs: Vec<PathBuf> = std::fs::read_dir(repo.join("out/runs"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert_eq!(runs.len(), 1);
    let record: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&runs[0]).unwrap()).unwrap();
    let prov = &record["provenance"];
    assert!(
        prov["git_commit"].as_str().unwrap().ends_with("-dirty"),
        "{prov}"
    );
    let hash = prov["diff_hash"].as_str().unwrap();
    let patch = std::fs::read(repo.join(format!("out/diffs/{hash}.patch"))).unwrap();
    assert_eq!(retbench_tasks::learned::sha256_hex(&patch), hash);
    let text = String::from_utf8_lossy(&patch);
    assert!(
        text.contains("+# changed") && text.contains("suites/new.yaml"),
        "{text}"
    );
    assert!(
        record["plan"].as_str().is_some_and(|p| p.len() == 16),
        "{record}"
    );

    // The stored diff recovers the tree that ran: the commit plus the patch.
    let check = dir.join("check");
    git(&dir, &["clone", "-q", s(&repo), s(&check)]);
    std::fs::write(dir.join("p.patch"), &patch).unwrap();
    git(&check, &["apply", s(&dir.join("p.patch"))]);
    for f in ["suites/s.yaml", "suites/new.yaml"] {
        assert_eq!(
            std::fs::read(check.join(f)).unwrap(),
            std::fs::read(repo.join(f)).unwrap(),
            "{f}"
        );
    }
    std::fs::remove_dir_all(dir).unwrap();
}
