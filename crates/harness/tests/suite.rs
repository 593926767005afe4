//! Suite parsing and expansion: the plan's order is pinned, and every kind
//! of mistake is reported with file:line:column before anything runs.

use std::path::Path;

use retbench_harness::suite::{SuiteError, parse};

const GOOD: &str = "\
name: demo
description: a small suite
base:
  task: { kind: scaling, d: 16, batches: [1], queries: 2, min_reads: 1, warmup: 0, writes: 1, probes: 4 }
  retention: { slots: 8, read: { kind: dense }, write: { kind: append, evict: fifo } }
seeds: [0, 1]
grid:
  retention.slots: [8, 16]
  retention.read:
    - { kind: dense }
    - { kind: topk, k: 4 }
zip:
  - { task.d: [16, 32], task.probes: [4, 8] }
variants:
  fifo-lru: { retention.write.evict: lru }
exclude:
  - { retention.slots: 16, retention.read.kind: topk, task.d: 32 }
profiles:
  smoke: { seeds: [7], grid.retention.slots: [8] }
";

fn plan(text: &str) -> retbench_harness::Plan {
    parse(Path::new("demo.yaml"), text, None).unwrap()
}

/// The error for `text`, which must be located.
fn mistake(text: &str) -> (u64, u64, String) {
    match parse(Path::new("bad.yaml"), text, None) {
        Err(SuiteError::At {
            path,
            line,
            column,
            message,
        }) => {
            assert_eq!(path, Path::new("bad.yaml"));
            let shown = SuiteError::At {
                path,
                line,
                column,
                message: message.clone(),
            }
            .to_string();
            assert!(
                shown.starts_with(&format!("bad.yaml:{line}:{column}: ")),
                "{shown}"
            );
            (line, column, message)
        }
        Err(other) => panic!("unlocated error: {other}"),
        Ok(p) => panic!("accepted: {} runs", p.runs.len()),
    }
}

#[test]
fn an_exclude_with_seeds_drops_only_those_seeds_of_the_points_it_matches() {
    let text = GOOD
        .replace("seeds: [0, 1]", "seeds: [0, 1, 2]")
        .replace(
            "  - { retention.slots: 16, retention.read.kind: topk, task.d: 32 }",
            "  - { retention.slots: 16, retention.read.kind: topk, task.d: 32 }\n  - { task.d: 32, seeds: [1, 2] }",
        );
    let p = plan(&text);
    let seeds = |d: u64| -> Vec<u64> {
        let mut s: Vec<u64> = p
            .runs
            .iter()
            .filter(|r| {
                r.variant == "grid"
                    && r.params
                        .iter()
                        .any(|(k, v)| k == "task.d" && v.as_u64() == Some(d))
            })
            .map(|r| r.seed)
            .collect();
        s.sort();
        s.dedup();
        s
    };
    assert_eq!(seeds(16), [0, 1, 2]);
    assert_eq!(seeds(32), [0], "seeds 1 and 2 of d 32 dropped");
    // 4 points of d 16 with 3 seeds, 3 of d 32 (one excluded whole) with 1,
    // the variant (d 16) with 3.
    assert_eq!(p.runs.len(), 4 * 3 + 3 + 3);
    let bad = text.replace("seeds: [1, 2]", "seeds: [one]");
    let (line, _, message) = mistake(&bad);
    assert_eq!(line, 18);
    assert!(message.starts_with("seeds:"), "{message}");
}

#[test]
fn expansion_order_is_grid_first_axis_outermost_then_zip_then_seeds_then_variants() {
    let p = plan(GOOD);
    let points: Vec<String> = p
        .runs
        .iter()
        .map(|r| {
            let v: Vec<String> = r.params.iter().map(|(k, v)| format!("{k}={v}")).collect();
            format!("{} s{} {}", r.variant, r.seed, v.join(" "))
        })
        .collect();
    let dense = r#"retention.read={"kind":"dense"}"#;
    let topk = r#"retention.read={"k":4,"kind":"topk"}"#;
    let expect = [
        format!("grid s0 retention.slots=8 {dense} task.d=16 task.probes=4"),
        format!("grid s1 retention.slots=8 {dense} task.d=16 task.probes=4"),
        format!("grid s0 retention.slots=8 {dense} task.d=32 task.probes=8"),
        format!("grid s1 retention.slots=8 {dense} task.d=32 task.probes=8"),
        format!("grid s0 retention.slots=8 {topk} task.d=16 task.probes=4"),
        format!("grid s1 retention.slots=8 {topk} task.d=16 task.probes=4"),
        format!("grid s0 retention.slots=8 {topk} task.d=32 task.probes=8"),
        format!("grid s1 retention.slots=8 {topk} task.d=32 task.probes=8"),
        format!("grid s0 retention.slots=16 {dense} task.d=16 task.probes=4"),
        format!("grid s1 retention.slots=16 {dense} task.d=16 task.probes=4"),
        format!("grid s0 retention.slots=16 {dense} task.d=32 task.probes=8"),
        format!("grid s1 retention.slots=16 {dense} task.d=32 task.probes=8"),
        format!("grid s0 retention.slots=16 {topk} task.d=16 task.probes=4"),
        format!("grid s1 retention.slots=16 {topk} task.d=16 task.probes=4"),
        // slots 16 × topk × d 32 is excluded.
        r#"fifo-lru s0 retention.write.evict="lru""#.to_string(),
        r#"fifo-lru s1 retention.write.evict="lru""#.to_string(),
    ];
    assert_eq!(points, expect);
    assert_eq!(
        p.param_columns,
        [
            "retention.slots",
            "retention.read",
            "task.d",
            "task.probes",
            "retention.write.evict"
        ]
    );
    // Run ids are stable, readable and unique.
    assert_eq!(p.runs, plan(GOOD).runs);
    assert!(
        p.runs[0]
            .run_id
            .starts_with("slots8-readdense-d16-probes4-s0-"),
        "{}",
        p.runs[0].run_id
    );
    let mut ids: Vec<&str> = p.runs.iter().map(|r| r.run_id.as_str()).collect();
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), p.runs.len());
}

#[test]
fn run_ids_name_the_fields_that_differ_within_one_kind() {
    let text = GOOD.replace(
        "  retention.read:\n    - { kind: dense }\n    - { kind: topk, k: 4 }\n",
        "  retention.write:\n    - { kind: append }\n    - { kind: append, evict: lru }\n    \
         - { kind: attention, rate: 0.5 }\n    - { kind: attention, rate: 0.5, erase: false }\n",
    );
    let text = text.replace(
        "variants:\n  fifo-lru: { retention.write.evict: lru }\n",
        "",
    );
    let text = text.replace(
        ", retention.read.kind: topk",
        ", retention.write.kind: attention",
    );
    let p = plan(&text);
    let prefixes: Vec<String> = p
        .runs
        .iter()
        .filter(|r| r.seed == 0 && r.run_id.starts_with("slots8-"))
        .map(|r| r.run_id.rsplitn(3, '-').nth(2).unwrap().to_string())
        .collect();
    assert_eq!(
        prefixes,
        [
            "slots8-writeappend-d16-probes4",
            "slots8-writeappend-d32-probes8",
            "slots8-writeappend_evictlru-d16-probes4",
            "slots8-writeappend_evictlru-d32-probes8",
            "slots8-writeattention-d16-probes4",
            "slots8-writeattention-d32-probes8",
            "slots8-writeattention_erasefalse-d16-probes4",
            "slots8-writeattention_erasefalse-d32-probes8",
        ]
    );
}

#[test]
fn a_profile_overrides_seeds_axes_and_base_before_expansion() {
    let p = parse(Path::new("demo.yaml"), GOOD, Some("smoke")).unwrap();
    assert!(p.runs.iter().all(|r| r.seed == 7));
    assert!(
        p.runs
            .iter()
            .filter(|r| r.variant == "grid")
            .all(|r| r.params[0].1 == 8)
    );
    assert_eq!(p.runs.len(), 2 * 2 + 1);
    let (line, _, msg) = match parse(Path::new("bad.yaml"), GOOD, Some("full")) {
        Err(SuiteError::At {
            line,
            column,
            message,
            ..
        }) => (line, column, message),
        other => panic!("{other:?}"),
    };
    assert_eq!(line, 1);
    assert!(
        msg.contains("no profile named \"full\"") && msg.contains("smoke"),
        "{msg}"
    );
}

/// A probe base with a learned variant that brings its own blocks: the
/// profile's `train.steps` and `eval.episodes` reach that variant (the base
/// has no `train:`), `task.loads` stays with the probe points, and a path
/// that names nothing in any run is refused where it is written.
const MIXED: &str = "\
name: mixed
base:
  task: { kind: copy_probe, d: 16, loads: [1, 2], codebook: 8 }
  retention: { slots: 8 }
seeds: [0]
variants:
  probe: {}
  learned:
    task: { kind: copy, train_max: 4, eval_lengths: [4] }
    model: { d_model: 16, layers: 1, heads: 2 }
    retention: { slots: 16, heads: 2, write: { kind: append, evict: fifo, source: token } }
    train: { steps: 500, batch: 8, lr: 1.0e-3 }
    eval: { episodes: 64 }
profiles:
  smoke: { task.loads: [1], train.steps: 3, eval.episodes: 4 }
  typo: { train.stepz: 3 }
";

#[test]
fn a_profile_replaces_a_zip_axis_in_lock_step() {
    let text = GOOD.replace(
        "smoke: { seeds: [7], grid.retention.slots: [8] }",
        "smoke: { seeds: [7], zip.task.probes: [2, 3] }\n  bad: { zip.task.nope: [1] }\n  short: { zip.task.probes: [2] }",
    );
    let p = parse(Path::new("demo.yaml"), &text, Some("smoke")).unwrap();
    let probes: Vec<String> = p
        .runs
        .iter()
        .filter(|r| r.variant == "grid" && r.params[0].1 == 8)
        .map(|r| format!("{}/{}", r.params[2].1, r.params[3].1))
        .collect();
    assert_eq!(
        probes,
        ["16/2", "32/3", "16/2", "32/3"],
        "d and probes still in step"
    );
    for (profile, want) in [
        ("bad", "no zip group has axis task.nope"),
        ("short", "equal lengths"),
    ] {
        match parse(Path::new("bad.yaml"), &text, Some(profile)) {
            Err(SuiteError::At { message, .. }) => assert!(message.contains(want), "{message}"),
            other => panic!("{other:?}"),
        }
    }
}

#[test]
fn a_profile_reaches_the_blocks_a_variant_brings_and_only_fields_they_have() {
    let p = parse(Path::new("mixed.yaml"), MIXED, Some("smoke")).unwrap();
    let run = |v: &str| p.runs.iter().find(|r| r.variant == v).unwrap();
    let learned = &run("learned").config;
    assert_eq!(learned.train.as_ref().unwrap().steps, 3);
    assert_eq!(learned.eval.as_ref().unwrap().episodes, 4);
    let probe = serde_json::to_value(&run("probe").config).unwrap();
    assert_eq!(probe["task"]["loads"], serde_json::json!([1.0]));
    assert!(run("probe").config.train.is_none());
    // Without the profile the variant keeps its own budget.
    let full = parse(Path::new("mixed.yaml"), MIXED, None).unwrap();
    let l = full.runs.iter().find(|r| r.variant == "learned").unwrap();
    assert_eq!(l.config.train.as_ref().unwrap().steps, 500);
    match parse(Path::new("mixed.yaml"), MIXED, Some("typo")) {
        Err(SuiteError::At { line, message, .. }) => {
            assert_eq!(line, 16, "{message}");
            assert!(message.contains("train.stepz"), "{message}");
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn yaml_syntax_errors_are_located() {
    let (line, _, _) = mistake("name: x\nbase: { task: { kind: scaling }\nseeds: [0]\n");
    assert!(line >= 2, "{line}");
}

#[test]
fn unknown_top_level_keys_are_located() {
    let (line, col, msg) = mistake(&GOOD.replace("seeds: [0, 1]", "sedes: [0, 1]"));
    assert_eq!((line, col), (6, 1), "{msg}");
    assert!(msg.contains("sedes"), "{msg}");
}

#[test]
fn unknown_keys_inside_base_are_located() {
    let (line, _, msg) = mistake(&GOOD.replace("evict: fifo }", "evict: fifo, extra: 1 }"));
    assert_eq!(line, 5, "{msg}");
    assert!(msg.contains("extra"), "{msg}");
}

#[test]
fn wrong_types_are_located() {
    let (line, _, msg) = mistake(&GOOD.replace("slots: 8, read", "slots: many, read"));
    assert_eq!(line, 5, "{msg}");
    let (line, _, msg) = mistake(&GOOD.replace("seeds: [0, 1]", "seeds: zero"));
    assert_eq!(line, 6, "{msg}");
}

#[test]
fn negative_slots_are_located() {
    let (line, _, msg) =
        mistake(&GOOD.replace("retention.slots: [8, 16]", "retention.slots: [8, -16]"));
    assert_eq!(line, 8, "{msg}");
}

#[test]
fn dotted_paths_that_name_nothing_are_located() {
    let (line, col, msg) =
        mistake(&GOOD.replace("retention.slots: [8, 16]", "retention.slot: [8, 16]"));
    assert_eq!((line, col), (8, 3), "{msg}");
    assert!(msg.contains("retention.slot names nothing"), "{msg}");
    let (line, _, msg) = mistake(&GOOD.replace(
        "fifo-lru: { retention.write.evict: lru }",
        "fifo-lru: { model.d_model: 3 }",
    ));
    assert_eq!(line, 15, "{msg}");
    let (line, _, msg) = mistake(&GOOD.replace(
        "- { retention.slots: 16, retention.read.kind",
        "- { retention.slotz: 16, retention.read.kind",
    ));
    assert_eq!(line, 17, "{msg}");
}

#[test]
fn zip_axes_of_unequal_length_are_located() {
    let (line, _, msg) = mistake(&GOOD.replace("task.probes: [4, 8]", "task.probes: [4, 8, 12]"));
    assert_eq!(line, 13, "{msg}");
    assert!(msg.contains("equal lengths"), "{msg}");
}

#[test]
fn invalid_values_are_blamed_on_the_axis_value_that_made_them() {
    // k = 4 > slots = 2: blamed on the value that completes the bad pair
    // (the top-k read, applied after slots = 2).
    let (line, _, msg) =
        mistake(&GOOD.replace("retention.slots: [8, 16]", "retention.slots: [8, 2]"));
    assert_eq!(line, 11, "{msg}");
    assert!(msg.contains("read.k"), "{msg}");
    // A rate outside [0, 1] in a variant.
    let (line, _, msg) = mistake(&GOOD.replace(
        "fifo-lru: { retention.write.evict: lru }",
        "blend: { retention.write: { kind: attention, rate: 2.0 } }",
    ));
    assert_eq!(line, 15, "{msg}");
    assert!(msg.contains("rate"), "{msg}");
    // An odd width breaks the scaling task.
    let (line, _, msg) = mistake(&GOOD.replace("task.d: [16, 32]", "task.d: [16, 33]"));
    assert_eq!(line, 13, "{msg}");
    assert!(msg.contains("task.d"), "{msg}");
}

#[test]
fn an_empty_expansion_is_an_error() {
    let text = GOOD
        .replace(
            "  - { retention.slots: 16, retention.read.kind: topk, task.d: 32 }",
            "  - { task.kind: scaling }",
        )
        .replace(
            "variants:\n  fifo-lru: { retention.write.evict: lru }\n",
            "",
        );
    let (line, _, msg) = mistake(&text);
    assert_eq!(line, 15, "{msg}");
    assert!(msg.contains("no runs"), "{msg}");
    let (_, _, msg) = mistake(&GOOD.replace("retention.slots: [8, 16]", "retention.slots: []"));
    assert!(msg.contains("no values"), "{msg}");
}

#[test]
fn duplicate_run_ids_are_errors() {
    let (line, _, msg) =
        mistake(&GOOD.replace("retention.slots: [8, 16]", "retention.slots: [8, 8]"));
    assert_eq!(line, 8, "{msg}");
    assert!(msg.contains("repeats run"), "{msg}");
}

#[test]
fn a_missing_base_or_bad_name_is_an_error() {
    let (_, _, msg) = mistake("name: x\nseeds: [0]\n");
    assert!(msg.contains("base"), "{msg}");
    let (line, _, msg) = mistake(&GOOD.replace("name: demo", "name: my suite"));
    assert_eq!(line, 1, "{msg}");
}

#[test]
fn a_null_retention_cannot_be_reached_into() {
    let text = GOOD.replace(
        "fifo-lru: { retention.write.evict: lru }",
        "none: { retention: null }",
    );
    // The scaling task needs a retention layer: blamed on the variant.
    let (line, _, msg) = mistake(&text);
    assert_eq!(line, 15, "{msg}");
    assert!(msg.contains("retention"), "{msg}");
}

const LEARNED: &str = "\
name: learned
base:
  task: { kind: recall }
  model: { d_model: 32, layers: 2, heads: 2 }
  retention: { slots: 32, layers: [1], write: { kind: append, evict: fifo, source: token } }
  train: { steps: 10, batch: 4, lr: 3.0e-3 }
  eval: { episodes: 8 }
seeds: [0, 1]
variants:
  retention: {}
  no_memory: { retention: null }
  full_context: { retention: null, task.context: full }
  frozen: { train.frozen_base: true }
";

#[test]
fn a_suite_of_named_baselines_runs_only_its_variants() {
    let p = plan(LEARNED);
    let variants: Vec<(&str, u64)> = p
        .runs
        .iter()
        .map(|r| (r.variant.as_str(), r.seed))
        .collect();
    assert_eq!(
        variants,
        vec![
            ("retention", 0),
            ("retention", 1),
            ("no_memory", 0),
            ("no_memory", 1),
            ("full_context", 0),
            ("full_context", 1),
            ("frozen", 0),
            ("frozen", 1)
        ]
    );
    // The committed suite expands too, with its smoke profile.
    let text = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../../suites/recall.yaml"),
    )
    .unwrap();
    let full = parse(Path::new("recall.yaml"), &text, None).unwrap();
    assert_eq!(full.runs.len(), 25);
    let smoke = parse(Path::new("recall.yaml"), &text, Some("smoke")).unwrap();
    assert_eq!(smoke.runs.len(), 5);
}

#[test]
fn learned_blocks_are_typed_and_checked_with_locations() {
    // An unknown key inside train.
    let (line, _, msg) = mistake(&LEARNED.replace("lr: 3.0e-3", "lr: 3.0e-3, lr_max: 1"));
    assert_eq!(line, 6, "{msg}");
    // A retention block in a block the model lacks: blamed on the variant value.
    let bad = LEARNED.replace(
        "  frozen: { train.frozen_base: true }",
        "  deep: { retention.layers: [3] }",
    );
    let (line, _, msg) = mistake(&bad);
    assert_eq!(line, 13, "{msg}");
    assert!(msg.contains("retention.layers"), "{msg}");
    // Frozen base without retention has nothing to train.
    let bad = LEARNED.replace(
        "  frozen: { train.frozen_base: true }",
        "  frozen: { train.frozen_base: true, retention: null }",
    );
    let (_, _, msg) = mistake(&bad);
    assert!(msg.contains("train.frozen_base"), "{msg}");
    // The scaling task refuses a model block.
    let bad = GOOD.replace(
        "  retention: { slots: 8,",
        "  model: { d_model: 8, layers: 1, heads: 1 }\n  retention: { slots: 8,",
    );
    let (_, _, msg) = mistake(&bad);
    assert!(msg.contains("model"), "{msg}");
}

#[test]
fn every_committed_suite_expands_with_and_without_its_smoke_profile() {
    // `just smoke` (bench --profile smoke) needs a smoke profile in every
    // suite, and a suite that no longer parses would only show up when
    // someone runs it.
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../suites");
    let mut seen = 0;
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_none_or(|e| e != "yaml") {
            continue;
        }
        let text = std::fs::read_to_string(&path).unwrap();
        let full = parse(&path, &text, None).unwrap_or_else(|e| panic!("{e}"));
        let smoke = parse(&path, &text, Some("smoke")).unwrap_or_else(|e| panic!("{e}"));
        assert!(!smoke.runs.is_empty(), "{}", path.display());
        assert!(smoke.runs.len() <= full.runs.len(), "{}", path.display());
        assert_eq!(full.suite, path.file_stem().unwrap().to_str().unwrap());
        seen += 1;
    }
    assert!(seen >= 4, "only {seen} suites in {}", dir.display());
}

#[test]
fn declared_figures_are_checked_against_metrics_and_varied_parameters() {
    let with = |fig: &str| format!("{GOOD}figures:\n  - {fig}\n");
    let good =
        "{ metric: read_us_p50, by: batch, lines: [retention.read], panels: [retention.slots] }";
    let p = parse(Path::new("demo.yaml"), &with(good), None).unwrap();
    assert_eq!(p.figures.len(), 1);
    assert_eq!(p.figures[0].panels, ["retention.slots"]);
    for (fig, want) in [
        (
            "{ metric: nope, by: batch, lines: [retention.read] }",
            "no run of this suite reports a metric \"nope\"",
        ),
        (
            "{ metric: read_us_p50, by: gap, lines: [retention.read] }",
            "not sliced by \"gap\"",
        ),
        (
            "{ metric: read_us_p50, by: batch, lines: [retention.heads] }",
            "retention.heads is not a parameter this suite varies",
        ),
    ] {
        let (line, _, msg) = mistake(&with(fig));
        assert_eq!(line, 21, "{msg}");
        assert!(msg.contains(want), "{msg}");
    }
}

#[test]
fn paper_figures_are_checked_and_point_at_the_figure() {
    let with = |figs: &[&str]| {
        let list: String = figs.iter().map(|f| format!("    - {f}\n")).collect();
        format!("{GOOD}paper:\n  figures:\n{list}")
    };
    let good = "{ name: reads, metric: read_us_p50, series: [{ label: dense, where: { retention.read: dense } }] }";
    let p = parse(Path::new("demo.yaml"), &with(&[good]), None).unwrap();
    assert_eq!(p.paper.len(), 1);
    assert_eq!(p.paper[0].series[0].label, "dense");
    for (fig, want) in [
        (
            "{ name: a, metric: nope, series: [{ label: x }] }",
            "no run of this suite reports a metric \"nope\"",
        ),
        (
            "{ name: a, metric: read_us_p50, by: gap, series: [{ label: x }] }",
            "not sliced by \"gap\"",
        ),
        (
            "{ name: a, metric: read_us_p50, series: [{ label: x, where: { retention.heads: 2 } }] }",
            "retention.heads is not variant, nor a parameter this suite varies",
        ),
        (
            "{ name: a b, metric: read_us_p50, series: [{ label: x }] }",
            "figure name \"a b\"",
        ),
        (
            "{ name: a, metric: read_us_p50, series: [] }",
            "at least one series",
        ),
    ] {
        let (line, _, msg) = mistake(&with(&[fig]));
        assert_eq!(line, 22, "{msg}");
        assert!(msg.contains(want), "{msg}");
    }
    let seven: Vec<String> = (0..7)
        .map(|i| format!("{{ name: f{i}, metric: read_us_p50, series: [{{ label: x }}] }}"))
        .collect();
    let seven: Vec<&str> = seven.iter().map(|s| s.as_str()).collect();
    let (line, _, msg) = mistake(&with(&seven));
    assert_eq!(line, 28, "the seventh figure: {msg}");
    assert!(msg.contains("at most 6"), "{msg}");
}
