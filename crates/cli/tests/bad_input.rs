//! Every bad input the plan and the run store must refuse: exit code 2, the
//! file (and for YAML, line and column of the offending key or value), no
//! panic or abort, and nothing written under --out.

mod common;

use std::path::{Path, PathBuf};

use candle_core::{DType, Device, Tensor};
use retbench_core::{RetentionConfig, RetentionLayer, SeededVarMap, snapshot};

use common::{files_under, scratch};

/// `retbench ARGS`: (exit code, stderr).
fn retbench(args: &[&str]) -> (i32, String) {
    let (code, _, err) = common::retbench(args);
    (code, err)
}

/// `retbench run` of `suite` text must exit 2 at `file:line:column`
/// (`want_at`), with `want` in the message, and leave --out untouched.
fn refused(name: &str, suite: &[u8], extra: &[&str], want_at: &str, want: &str) {
    let dir = scratch(name);
    let file = dir.join(format!("{name}.yaml"));
    std::fs::write(&file, suite).unwrap();
    let out = dir.join("out");
    std::fs::create_dir_all(out.join("runs")).unwrap();
    std::fs::write(out.join("runs/keep.json"), "{}").unwrap();
    let before = files_under(&out);
    let mut args = vec![
        "run",
        file.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
    ];
    args.extend_from_slice(extra);
    let (code, err) = retbench(&args);
    assert_eq!(code, 2, "{name}: {err}");
    assert!(!err.contains("panicked"), "{name}: {err}");
    assert!(
        err.contains(&format!("{}:{want_at}:", file.display())),
        "{name}: wanted {want_at} in {err}"
    );
    assert!(err.contains(want), "{name}: wanted {want:?} in {err}");
    assert_eq!(files_under(&out), before, "{name}: something was written");
    std::fs::remove_dir_all(dir).unwrap();
}

const LEARNED: &str = "\
name: learned
base:
  task:
    kind: recall
    keys: 16
  retention: { slots: 64, heads: 4 }
  model: { d_model: 64, layers: 2, heads: 4 }
  train:
    steps: 10
    lr: 0.003
";

#[test]
fn yaml_syntax_errors_point_at_the_line_to_fix_and_say_it_once() {
    // A key indented deeper than its siblings: YAML folds it into the
    // value above, which then fails as a number on line 5; the line to fix
    // is 6.
    let deeper = b"name: s\nbase:\n  task: { kind: scaling, d: 16 }\n  retention:\n    slots: 8\n      read: dense\nseeds: [0]\n";
    refused(
        "deeper",
        deeper,
        &[],
        "6:7",
        "indented deeper than the key on line 5",
    );
    // An unclosed `{`: the reader stumbles on the next line; the `{` is
    // where the `}` is missing.
    let brace =
        b"name: s\nbase:\n  task: { kind: scaling, d: 16\n  retention: { slots: 8 }\nseeds: [0]\n";
    refused(
        "brace",
        brace,
        &[],
        "3:9",
        "the `{` opened here is not closed",
    );
    let bracket = b"name: s\nseeds: [0, 1\ngrid:\n  retention.slots: [8]\n";
    refused(
        "bracket",
        bracket,
        &[],
        "2:8",
        "the `[` opened here is not closed",
    );
    // A bad indent the reader locates itself: kept, its position said once.
    let indent = b"name: s\nbase:\n  task: { kind: scaling, d: 16 }\n seeds: [0]\n";
    refused("indent", indent, &[], "4:2", "did not find expected key");
    for (name, text) in [("deeper", &deeper[..]), ("indent", &indent[..])] {
        let dir = scratch(&format!("{name}-once"));
        let file = dir.join("s.yaml");
        std::fs::write(&file, text).unwrap();
        let (code, err) = retbench(&["plan", file.to_str().unwrap()]);
        assert_eq!(code, 2, "{err}");
        assert!(!err.contains("line ") || !err.contains(" column "), "{err}");
        std::fs::remove_dir_all(dir).unwrap();
    }
}

#[test]
fn sizes_that_would_not_fit_are_refused_where_they_are_written() {
    let scaling = "name: big\nbase:\n  task: { kind: scaling, d: 64 }\n  retention:\n    slots: 1000000000000\n";
    refused(
        "slots",
        scaling.as_bytes(),
        &[],
        "5:5",
        "retention.slots: this run would need",
    );
    refused(
        "keys",
        LEARNED.replace("keys: 16", "keys: 4294967296").as_bytes(),
        &[],
        "5:5",
        "task.keys: this run would need",
    );
    refused(
        "dmodel",
        LEARNED
            .replace("d_model: 64", "d_model: 1048576")
            .as_bytes(),
        &[],
        "7:12",
        "model.d_model: this run would need",
    );
    // A limit of our own: the same small run fits 1G and not 1M.
    let small =
        "name: small\nbase:\n  task: { kind: scaling, d: 64 }\n  retention:\n    slots: 100000\n";
    refused(
        "limit",
        small.as_bytes(),
        &["--max-memory", "1M"],
        "5:5",
        "more than the 1.0 MiB",
    );
    let dir = scratch("fits");
    let file = dir.join("small.yaml");
    std::fs::write(&file, small).unwrap();
    let (code, err) = retbench(&["plan", file.to_str().unwrap(), "--max-memory", "1G"]);
    assert_eq!(code, 0, "{err}");
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn a_grid_too_large_to_expand_is_refused_at_its_axis() {
    let values: Vec<String> = (1..=200).map(|i| (2 * i).to_string()).collect();
    let v = values.join(", ");
    let suite = format!(
        "name: grid\nbase:\n  task: {{ kind: scaling, d: 64 }}\n  retention: {{ slots: 10 }}\ngrid:\n  retention.slots: [{v}]\n  task.d: [{v}]\n  task.queries: [{v}]\n  task.probes: [{v}]\n"
    );
    refused(
        "grid",
        suite.as_bytes(),
        &[],
        "8:3",
        "over the limit of 100000",
    );
}

#[test]
fn combinations_a_task_cannot_run_are_refused() {
    refused(
        "feedback",
        LEARNED
            .replace(
                "heads: 4 }\n  model",
                "heads: 4, gate: { kind: feedback, threshold: 0.5 } }\n  model",
            )
            .as_bytes(),
        &[],
        "6:37",
        "a feedback gate needs a per-sample feedback signal",
    );
    refused(
        "heads",
        LEARNED
            .replace("slots: 64, heads: 4", "slots: 64, heads: 3")
            .as_bytes(),
        &[],
        "6:27",
        "retention.heads: d_model 64 is not divisible by 3 heads",
    );
    refused(
        "ignored",
        b"name: ign\nbase:\n  task: { kind: scaling }\n  retention:\n    slots: 10\n    persistence: disk\n",
        &[],
        "6:5",
        "retention.persistence: the scaling task ignores it",
    );
    let dir = scratch("init-file");
    let not_a_checkpoint = dir.join("base.safetensors");
    std::fs::write(&not_a_checkpoint, b"nope").unwrap();
    let with_init = LEARNED.replace(
        "    lr: 0.003\n",
        &format!(
            "    lr: 0.003\n    frozen_base: true\n    base_init: {}\n",
            not_a_checkpoint.display()
        ),
    );
    refused(
        "init",
        with_init.as_bytes(),
        &[],
        "12:5",
        "train.base_init: ",
    );
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn errors_point_at_the_value_whatever_block_it_came_from() {
    refused(
        "nan",
        LEARNED.replace("lr: 0.003", "lr: .nan").as_bytes(),
        &[],
        "10:5",
        "train.lr: must be positive, got NaN",
    );
    refused(
        "base-k",
        b"name: k\nbase:\n  task: { kind: scaling }\n  retention:\n    slots: 10\n    read: { kind: topk, k: 40 }\n",
        &[],
        "6:25",
        "retention.read.k: must be in 1..=10",
    );
    let profiled = b"name: p\nbase:\n  task: { kind: scaling }\n  retention: { slots: 10, read: { kind: topk, k: 4 } }\nprofiles:\n  smoke:\n    retention.read.k: 400\n";
    refused(
        "profile",
        profiled,
        &["--profile", "smoke"],
        "7:23",
        "retention.read.k",
    );
    let grid = b"name: g\nbase:\n  task: { kind: scaling }\n  retention: { slots: 10, read: { kind: topk, k: 4 } }\ngrid:\n  retention.read.k: [2, 400]\n";
    refused("grid-value", grid, &[], "6:25", "retention.read.k");
    refused(
        "utf8",
        b"name: x\nbase:\n  task: { kind: scaling }\n  retention: { slots: \xff }\n",
        &[],
        "4:23",
        "not UTF-8",
    );
}

#[test]
fn names_that_escape_reports_and_zero_jobs_are_refused() {
    for (name, at) in [
        ("\"..\"", "1:7"),
        ("\".\"", "1:7"),
        ("a/b", "1:7"),
        (".hidden", "1:7"),
    ] {
        let suite = format!(
            "name: {name}\nbase:\n  task: {{ kind: scaling }}\n  retention: {{ slots: 10 }}\n"
        );
        refused("name", suite.as_bytes(), &[], at, "name must be");
    }
    let dir = scratch("jobs");
    let file = dir.join("ok.yaml");
    std::fs::write(
        &file,
        "name: ok\nbase:\n  task: { kind: scaling }\n  retention: { slots: 10 }\n",
    )
    .unwrap();
    let (code, err) = retbench(&[
        "run",
        file.to_str().unwrap(),
        "--jobs",
        "0",
        "--out",
        dir.join("out").to_str().unwrap(),
    ]);
    assert_eq!(code, 2, "{err}");
    assert!(
        err.contains("--jobs") && err.contains("at least 1"),
        "{err}"
    );
    assert!(!dir.join("out").exists());
    std::fs::remove_dir_all(dir).unwrap();
}

const TINY: &str = "\
name: tiny
base:
  task: { kind: scaling, d: 16, batches: [1], queries: 2, min_reads: 1, warmup: 0, writes: 1, probes: 8 }
  retention: { slots: 8 }
grid:
  retention.slots: [16, 32]
";

/// `retbench run FILE --out OUT --quiet`, which must succeed.
fn run_quietly(file: &Path, out: &Path) {
    let (code, err) = retbench(&[
        "run",
        file.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
        "--quiet",
    ]);
    assert_eq!(code, 0, "{err}");
}

/// A finished tiny suite in `dir/out`, its run files sorted.
fn finished(dir: &Path) -> (PathBuf, PathBuf, Vec<PathBuf>) {
    let file = dir.join("tiny.yaml");
    std::fs::write(&file, TINY).unwrap();
    let out = dir.join("out");
    run_quietly(&file, &out);
    let mut runs: Vec<PathBuf> = std::fs::read_dir(out.join("runs"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    runs.sort();
    (file, out, runs)
}

#[test]
fn a_truncated_run_file_is_refused_by_report_and_redone_by_run() {
    let dir = scratch("truncated");
    let (file, out, runs) = finished(&dir);
    let bytes = std::fs::read(&runs[0]).unwrap();
    std::fs::write(&runs[0], &bytes[..bytes.len() / 2]).unwrap();
    let before = files_under(&out);
    let (code, err) = retbench(&["report", out.to_str().unwrap()]);
    assert_eq!(code, 2, "{err}");
    assert!(
        err.contains(runs[0].to_str().unwrap()) && err.contains("truncated"),
        "{err}"
    );
    assert_eq!(
        files_under(&out),
        before,
        "report wrote despite a bad run file"
    );
    let (code, err) = retbench(&[
        "run",
        file.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
    ]);
    assert_eq!(code, 0, "{err}");
    assert!(err.contains("redoing") && err.contains("1 ok"), "{err}");
    let original: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
    let redone: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&runs[0]).unwrap()).unwrap();
    assert_eq!(redone["run_id"], original["run_id"]);
    assert_eq!(redone["config_hash"], original["config_hash"]);
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn a_run_record_under_another_name_is_refused_and_makes_no_duplicate_rows() {
    let dir = scratch("copied");
    let (file, out, runs) = finished(&dir);
    std::fs::copy(&runs[0], &runs[1]).unwrap();
    let before = files_under(&out);
    let (code, err) = retbench(&["report", out.to_str().unwrap()]);
    assert_eq!(code, 2, "{err}");
    assert!(
        err.contains(runs[1].to_str().unwrap()) && err.contains("another run's name"),
        "{err}"
    );
    assert_eq!(files_under(&out), before);
    run_quietly(&file, &out);
    let csv = std::fs::read_to_string(out.join("results.csv")).unwrap();
    let ids: std::collections::BTreeSet<&str> = csv
        .lines()
        .skip(1)
        .filter_map(|l| l.split(',').next())
        .collect();
    assert_eq!(ids.len(), 2, "{ids:?}");
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn merge_checks_every_shard_before_writing() {
    let dir = scratch("merge");
    let (_, out, runs) = finished(&dir);
    let bytes = std::fs::read(&runs[1]).unwrap();
    std::fs::write(&runs[1], &bytes[..10]).unwrap();
    let target = dir.join("merged");
    let (code, err) = retbench(&["merge", target.to_str().unwrap(), out.to_str().unwrap()]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains(runs[1].to_str().unwrap()), "{err}");
    assert!(
        !target.join("runs").exists() || files_under(&target).is_empty(),
        "merge wrote before checking"
    );
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn a_snapshot_holding_nan_is_refused_naming_the_tensor() {
    let dir = scratch("nan-snapshot");
    let cfg = RetentionConfig::new(4);
    let map = SeededVarMap::new(candle_nn::VarMap::new(), cfg.hash(), 0);
    let layer = RetentionLayer::new(&cfg, 8, map.var_builder(DType::F32, &Device::Cpu)).unwrap();
    let mut mem = layer.new_memory(1, 0, DType::F32, &Device::Cpu).unwrap();
    let mut h = vec![1f32; 8];
    h[3] = f32::NAN;
    layer
        .write(
            &Tensor::from_vec(h, (1, 1, 8), &Device::Cpu).unwrap(),
            &mut mem,
            None,
        )
        .unwrap();
    let path = dir.join("nan.safetensors");
    snapshot::save_state(&mem, &path).unwrap();
    let (code, err) = retbench(&["memory", "inspect", path.to_str().unwrap()]);
    assert_eq!(code, 2, "{err}");
    assert!(
        err.contains(path.to_str().unwrap()) && err.contains("/content"),
        "{err}"
    );
    assert!(err.contains("NaN"), "{err}");
    let loaded = snapshot::load_state(&path, &cfg.hash(), &Device::Cpu);
    assert!(loaded.is_err());
    std::fs::remove_dir_all(dir).unwrap();
}
