//! The binary's contract: what `list` and `memory inspect` print, and exit
//! code 2 with a message naming the file on bad input.

mod common;

use std::process::Command;

use candle_core::{DType, Device, Tensor};
use retbench_core::{RetentionConfig, RetentionLayer, SeededVarMap, snapshot};

use common::{retbench, scratch};

#[test]
fn list_names_every_axis() {
    let (code, out, _) = retbench(&["list"]);
    assert_eq!(code, 0);
    for axis in [
        "read:",
        "write:",
        "write.source:",
        "gate:",
        "keys:",
        "slot_age:",
        "persistence:",
    ] {
        assert!(out.contains(axis), "{axis} missing from\n{out}");
    }
    assert!(out.contains("{ kind: topk, k: 32 }"));
    let (code, out, _) = retbench(&["list", "--format", "json"]);
    assert_eq!(code, 0);
    let doc: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert!(doc["backends"].as_array().unwrap().len() >= 20);
}

#[test]
fn inspect_reports_a_snapshot() {
    let dir = scratch("inspect");
    let cfg = RetentionConfig::new(16);
    let map = SeededVarMap::new(candle_nn::VarMap::new(), cfg.hash(), 0);
    let layer = RetentionLayer::new(&cfg, 8, map.var_builder(DType::F32, &Device::Cpu)).unwrap();
    let mut mem = layer.new_memory(2, 0, DType::F32, &Device::Cpu).unwrap();
    for i in 0..3 {
        let h = Tensor::full(i as f32, (2, 4, 8), &Device::Cpu).unwrap();
        layer.write(&h, &mut mem, None).unwrap();
    }
    let path = dir.join("mem.safetensors");
    snapshot::save_state(&mem, &path).unwrap();
    let (code, out, err) = retbench(&["memory", "inspect", path.to_str().unwrap()]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("2 memories x 16 slots x 8 dims"), "{out}");
    assert!(out.contains("6 / 32 slots"), "{out}");
    assert!(out.contains(&cfg.hash()), "{out}");
    let (code, out, _) = retbench(&[
        "memory",
        "inspect",
        path.to_str().unwrap(),
        "--format",
        "json",
    ]);
    assert_eq!(code, 0);
    let doc: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(doc["namespaces"][0]["occupied"], serde_json::json!([3, 3]));
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn inspect_refuses_bad_files_with_exit_2() {
    let dir = scratch("bad");
    let junk = dir.join("junk.safetensors");
    std::fs::write(&junk, b"this is not a snapshot").unwrap();
    for path in [junk, dir.join("missing.safetensors")] {
        let (code, _, err) = retbench(&["memory", "inspect", path.to_str().unwrap()]);
        assert_eq!(code, 2, "{err}");
        assert!(err.contains(path.to_str().unwrap()), "{err}");
        assert!(!err.contains("panicked"), "{err}");
    }
    let (code, _, _) = retbench(&["memory", "frobnicate"]);
    assert_eq!(code, 2, "usage errors exit 2");
    std::fs::remove_dir_all(dir).unwrap();
}

const TINY: &str = "\
name: tiny
base:
  task: { kind: scaling, d: 16, batches: [1], queries: 2, min_reads: 1, warmup: 0, writes: 1, probes: 8 }
  retention: { slots: 8 }
grid:
  retention.slots: [16, 32]
profiles:
  smoke: { seeds: [3] }
";

#[test]
fn plan_prints_ids_and_jsonl_in_a_stable_order() {
    let dir = scratch("plan");
    let suite = dir.join("tiny.yaml");
    std::fs::write(&suite, TINY).unwrap();
    let (code, ids, _) = retbench(&["plan", suite.to_str().unwrap(), "--format", "ids"]);
    assert_eq!(code, 0);
    assert_eq!(ids.lines().count(), 2);
    assert!(ids.lines().next().unwrap().starts_with("slots16-s0-"));
    let (_, again, _) = retbench(&["plan", suite.to_str().unwrap(), "--format", "ids"]);
    assert_eq!(ids, again);
    let (code, jsonl, _) = retbench(&[
        "plan",
        suite.to_str().unwrap(),
        "--format",
        "jsonl",
        "--profile",
        "smoke",
    ]);
    assert_eq!(code, 0);
    let first: serde_json::Value = serde_json::from_str(jsonl.lines().next().unwrap()).unwrap();
    assert_eq!(first["seed"], 3);
    assert_eq!(first["params"]["retention.slots"], 16);
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn a_yaml_mistake_exits_2_with_file_line_column_and_touches_nothing() {
    let dir = scratch("yaml");
    let suite = dir.join("bad.yaml");
    std::fs::write(
        &suite,
        TINY.replace("retention.slots: [16, 32]", "retention.slotz: [16, 32]"),
    )
    .unwrap();
    let out = dir.join("out");
    std::fs::create_dir_all(out.join("runs")).unwrap();
    std::fs::write(out.join("runs/keep.json"), "{}").unwrap();
    let (code, _, err) = retbench(&[
        "run",
        suite.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
    ]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains(&format!("{}:6:3:", suite.display())), "{err}");
    assert!(err.contains("retention.slotz names nothing"), "{err}");
    let left: Vec<_> = std::fs::read_dir(&out)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(left, ["runs"], "nothing written under --out");
    assert_eq!(
        std::fs::read_to_string(out.join("runs/keep.json")).unwrap(),
        "{}"
    );
    let (code, _, err) = retbench(&["run", suite.to_str().unwrap(), "--profile", "nope"]);
    assert_eq!(code, 2, "{err}");
    std::fs::remove_dir_all(dir).unwrap();
}

/// A suite whose runs take long enough to kill one mid-sweep.
const SLOW: &str = "\
name: slow
base:
  task: { kind: scaling, d: 64, batches: [1, 16], queries: 400, min_reads: 20, warmup: 2, writes: 20, probes: 64 }
  retention: { slots: 8 }
seeds: [0, 1, 2]
grid:
  retention.slots: [20000, 40000]
";

#[test]
fn killing_a_run_and_running_again_completes_without_duplicates() {
    let dir = scratch("kill");
    let suite = dir.join("slow.yaml");
    std::fs::write(&suite, SLOW).unwrap();
    let out = dir.join("out");
    let args = [
        "run",
        suite.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
        "--jobs",
        "1",
        "--no-report",
        "--quiet",
    ];
    // Progress lines ("[n/6] <run id> ok") reach stderr after the run's
    // file is written: kill at the first one, whatever the machine's speed
    // (no wall-clock deadline), then check the resume.
    let mut child = Command::new(env!("CARGO_BIN_EXE_retbench"))
        .args(&args[..args.len() - 1])
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let runs = out.join("runs");
    let stderr = std::io::BufReader::new(child.stderr.take().unwrap());
    let first = std::io::BufRead::lines(stderr)
        .map(|l| l.unwrap())
        .find(|l| l.starts_with("[1/6] ") && l.contains(" ok ("));
    assert!(first.is_some(), "the sweep ended before its first run");
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();
    let after_kill = std::fs::read_dir(&runs).unwrap().count();
    assert!(after_kill >= 1);
    let (code, _, err) = retbench(&args);
    assert_eq!(code, 0, "{err}");
    let per_run = common::rows_per_run(&std::fs::read_to_string(out.join("results.csv")).unwrap());
    assert_eq!(per_run.len(), 6, "every run present once");
    let counts: std::collections::BTreeSet<usize> = per_run.values().copied().collect();
    assert_eq!(
        counts.len(),
        1,
        "each run has the same number of rows: {per_run:?}"
    );
    let leftovers = std::fs::read_dir(&runs)
        .unwrap()
        .filter(|e| {
            e.as_ref()
                .unwrap()
                .file_name()
                .to_string_lossy()
                .starts_with('.')
        })
        .count();
    assert_eq!(leftovers, 0, "no temporary files left in runs/");
    // And a third run does nothing.
    let (code, _, err) = retbench(&args[..args.len() - 1]);
    assert_eq!(code, 0);
    assert!(err.contains("6 already done, 0 ok"), "{err}");
    std::fs::remove_dir_all(dir).unwrap();
}

/// `kill -9` at many points of a sweep (before, during and between run
/// writes; the points come from a fixed sequence of delays, and the property
/// must hold at any of them): after every kill each record present is whole
/// (`report` verifies every one and exits 0), and resuming until done gives
/// every run exactly once.
#[test]
fn a_sweep_killed_anywhere_keeps_only_whole_records() {
    let dir = scratch("kill-anywhere");
    let suite = dir.join("quick.yaml");
    std::fs::write(
        &suite,
        "name: quick\nbase:\n  task: { kind: scaling, d: 16, batches: [1], queries: 20, \
         min_reads: 2, warmup: 0, writes: 4, probes: 8 }\n  retention: { slots: 8 }\n\
         seeds: [0, 1, 2, 3]\ngrid:\n  retention.slots: [500, 1000, 2000]\n",
    )
    .unwrap();
    let out = dir.join("out");
    let args = [
        "run",
        suite.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
        "--jobs",
        "2",
        "--no-report",
        "--quiet",
    ];
    let mut delay_ms: u64 = 137;
    let mut finished = false;
    for _ in 0..12 {
        let mut child = Command::new(env!("CARGO_BIN_EXE_retbench"))
            .args(args)
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        std::thread::sleep(std::time::Duration::from_millis(delay_ms));
        delay_ms = (delay_ms * 7 + 89) % 700 + 40;
        if child.try_wait().unwrap().is_some_and(|s| s.success()) {
            finished = true;
            break;
        }
        child.kill().unwrap(); // SIGKILL
        child.wait().unwrap();
        if out.join("runs").is_dir() {
            let (code, _, err) = retbench(&["report", out.to_str().unwrap()]);
            assert_eq!(code, 0, "a record left by the kill is not whole: {err}");
        }
    }
    if !finished {
        let (code, _, err) = retbench(&args);
        assert_eq!(code, 0, "{err}");
    }
    let per_run = common::rows_per_run(&std::fs::read_to_string(out.join("results.csv")).unwrap());
    assert_eq!(per_run.len(), 12, "every run present once: {per_run:?}");
    let (code, _, err) = retbench(&args[..args.len() - 1]);
    assert_eq!(code, 0);
    assert!(err.contains("12 already done, 0 ok"), "{err}");
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn kernels_is_an_option_of_the_verbs_that_run_kernels_only() {
    let (code, _, err) = retbench(&["list", "--kernels", "unfused"]);
    assert_eq!(code, 2, "list takes no --kernels: {err}");
    let (code, _, err) = retbench(&["--kernels", "unfused", "list"]);
    assert_eq!(code, 2, "--kernels is not global: {err}");
    for verb in ["run", "bench", "train-bench"] {
        let (code, out, _) = retbench(&[verb, "--help"]);
        assert_eq!(code, 0);
        assert!(out.contains("--kernels"), "{verb} --help lists --kernels");
    }
}

#[test]
fn train_bench_measures_both_rows_on_the_kernels_asked_for() {
    for kernels in ["fused", "unfused"] {
        let (code, out, err) = retbench(&[
            "train-bench",
            "--kernels",
            kernels,
            "--d-model",
            "16",
            "--steps",
            "1",
            "--format",
            "jsonl",
        ]);
        assert_eq!(code, 0, "{err}");
        let rows: Vec<serde_json::Value> = out
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        assert_eq!(rows.len(), 2, "{out}");
        for (row, retention) in rows.iter().zip(["none", "block 1, dense, 64 slots, empty"]) {
            assert_eq!(row["retention"], retention);
            assert_eq!(row["kernels"], kernels);
            assert_eq!(row["d_model"], 16);
            assert!(row["tokens_per_s"].as_f64().unwrap() > 0.0, "{row}");
            let share = row["share_of_peak"].as_f64().unwrap();
            assert!(share > 0.0 && share.is_finite(), "{row}");
        }
        assert!(rows[1]["flops_per_token"].as_f64() > rows[0]["flops_per_token"].as_f64());
    }
    // Large memories through an exact top-k: one row per memory size.
    let (code, out, err) = retbench(&[
        "train-bench",
        "--d-model",
        "16",
        "--slots",
        "100,300",
        "--fill",
        "full",
        "--top-k",
        "8",
        "--steps",
        "1",
        "--format",
        "jsonl",
    ]);
    assert_eq!(code, 0, "{err}");
    let slots: Vec<_> = out
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap()["slots"].clone())
        .collect();
    assert_eq!(
        slots,
        [serde_json::Value::Null, 100.into(), 300.into()],
        "{out}"
    );
    assert!(out.contains("top-8, 300 slots, full"), "{out}");
    let (code, _, err) = retbench(&["train-bench", "--fill", "half"]);
    assert_eq!(code, 2);
    assert!(err.contains("expected empty, full or a number"), "{err}");
    let (code, _, err) = retbench(&["train-bench", "--steps", "0"]);
    assert_eq!(code, 2);
    assert!(err.contains("--steps"), "{err}");
}
