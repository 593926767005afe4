//! The paper set (`paper: figures:` in a suite, carried in `plan.json`):
//! groups and series picked by parameter values (a path into a structured
//! parameter too), the legend in declared order with short names, the
//! cells' table, whole-number slices on an axis of their values, a cell
//! two configs match refused, and figures that pass the layout check.

mod common;

use retbench_report::layout::check_svg;

/// A frozen-like folder: two tasks × three regimes × 3 seeds, accuracy
/// at gaps 0..3.
fn folder(name: &str, paper: serde_json::Value) -> std::path::PathBuf {
    let dir = common::run_folder(name, "recall");
    common::write_plan(&dir, serde_json::json!({ "suite": "t", "paper": paper }));
    let mut csv = String::from(
        "run_id,suite,variant,seed,metric,slice,step,value,task,train.frozen_base,train.base_steps\n",
    );
    let tasks = [
        r#""{""kind"":""recall"",""keys"":16}""#,
        r#""{""kind"":""entity"",""entities"":32}""#,
    ];
    let regimes = [("false", "null"), ("true", "1500"), ("false", "1500")];
    for (t, task) in tasks.iter().enumerate() {
        for (g, (frozen, base)) in regimes.iter().enumerate() {
            for seed in 0..3 {
                for gap in 0..4 {
                    // Distinct, known means: 0.1·t + 0.2·g + 0.01·gap (+ seed spread).
                    let v =
                        0.1 * t as f64 + 0.2 * g as f64 + 0.01 * gap as f64 + 0.001 * seed as f64;
                    csv.push_str(&format!(
                        "r{t}{g}{seed},t,grid,{seed},accuracy,gap={gap},,{v},{task},{frozen},{base}\n"
                    ));
                }
            }
        }
    }
    std::fs::write(dir.join("results.csv"), csv).unwrap();
    dir
}

fn regimes() -> serde_json::Value {
    serde_json::json!([
        { "label": "from scratch", "where": { "train.base_steps": null } },
        { "label": "frozen base", "where": { "train.frozen_base": true } },
        { "label": "fine-tuned", "where": { "train.frozen_base": false } },
    ])
}

fn tasks() -> serde_json::Value {
    serde_json::json!([
        { "label": "recall", "where": { "task.kind": "recall" } },
        { "label": "entity", "where": { "task.kind": "entity" } },
    ])
}

#[test]
fn a_comparison_names_its_groups_and_series_and_tables_their_cells() {
    let dir = folder(
        "paper-cmp",
        serde_json::json!([
            { "name": "next", "metric": "accuracy", "slice": "gap=1",
              "groups": tasks(), "series": regimes() },
            { "name": "by_gap", "metric": "accuracy", "by": "gap",
              "groups": tasks(), "series": regimes() },
        ]),
    );
    let out = retbench_report::report(&dir).unwrap();
    let names: Vec<String> = out
        .paper
        .iter()
        .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
        .collect();
    for want in [
        "next.svg",
        "next.png",
        "by_gap_recall.svg",
        "by_gap_entity.svg",
        "table.md",
        "table.tex",
    ] {
        assert!(names.iter().any(|n| n == want), "{want}: {names:?}");
    }
    let svg = std::fs::read_to_string(dir.join("paper/next.svg")).unwrap();
    // Short names on the axis and in the legend, declared order; no config string.
    let at = |s: &str| {
        svg.find(&format!(">\n{s}\n<"))
            .unwrap_or_else(|| panic!("{s}"))
    };
    assert!(at("from scratch") < at("frozen base") && at("frozen base") < at("fine-tuned"));
    assert!(at("recall") > 0 && at("entity") > 0);
    assert!(!svg.contains("frozen_base="), "no config string");
    // The cells are the summary's means: scratch recall 0.011 (+0.001 mean
    // seed spread), fine-tuned entity 0.1 + 0.4 + 0.01 + 0.001.
    let md = std::fs::read_to_string(dir.join("paper/table.md")).unwrap();
    let next = md.split("## by_gap").next().unwrap();
    assert!(
        next.contains("| from scratch | 0.011 ["),
        "scratch recall: {next}"
    );
    assert!(next.contains("| fine-tuned | 0.411 ["), "{next}");
    assert!(next.contains("0.511 ["), "fine-tuned entity: {next}");
    assert!(next.contains("(n=3)"));
    // Gaps 0..3 are whole numbers: an axis of those values, no 0.5.
    let by = std::fs::read_to_string(dir.join("paper/by_gap_entity.svg")).unwrap();
    assert!(by.contains(">\n3\n<") && !by.contains(">\n1.5\n<") && !by.contains(">\n2.5\n<"));
    for f in out
        .paper
        .iter()
        .filter(|p| p.extension().is_some_and(|e| e == "svg"))
    {
        assert_eq!(check_svg(f).unwrap(), vec![], "{}", f.display());
    }
    let html = std::fs::read_to_string(dir.join("report.html")).unwrap();
    let (paper, all) = (
        html.find("id=\"paper\"").unwrap(),
        html.find("id=\"figures\"").unwrap(),
    );
    assert!(paper < all, "the paper set comes first");
}

#[test]
fn a_cell_two_configs_match_is_refused() {
    // Without groups, each series spans both tasks.
    let dir = folder(
        "paper-ambiguous",
        serde_json::json!([
            { "name": "next", "metric": "accuracy", "slice": "gap=1", "series": regimes() },
        ]),
    );
    let err = retbench_report::report(&dir).unwrap_err().to_string();
    assert!(
        err.contains("from scratch") && err.contains("more than one config"),
        "{err}"
    );
}

/// A figure `by` a key whose values are names (abilities' `query`): a
/// group per value in the results' order, the series side by side, and a
/// `chance` mark per group at the metric's level for that value.
#[test]
fn a_by_figure_over_named_values_groups_them_and_marks_chance() {
    let dir = common::run_folder("paper-named", "abilities");
    let paper = serde_json::json!([
        { "name": "per_query", "metric": "accuracy", "by": "query",
          "series": [
              { "label": "memory", "where": { "variant": "memory" } },
              { "label": "none", "where": { "variant": "none" } },
          ] },
    ]);
    common::write_plan(&dir, serde_json::json!({ "suite": "t", "paper": paper }));
    let mut csv = String::from("run_id,suite,variant,seed,metric,slice,step,value\n");
    for (variant, v) in [("memory", 0.9), ("none", 0.2)] {
        for seed in 0..3 {
            for q in ["extract", "order", "abstain"] {
                csv.push_str(&format!(
                    "{variant}{seed},t,{variant},{seed},accuracy,query={q},,{v}\n"
                ));
            }
        }
    }
    std::fs::write(dir.join("results.csv"), csv).unwrap();
    let out = retbench_report::report(&dir).unwrap();
    let svg_path = dir.join("paper/per_query.svg");
    assert!(out.paper.contains(&svg_path), "{:?}", out.paper);
    let svg = std::fs::read_to_string(&svg_path).unwrap();
    let at = |s: &str| {
        svg.find(&format!(">\n{s}\n<"))
            .unwrap_or_else(|| panic!("{s}"))
    };
    // The results' order, not the alphabet's; chance in the legend.
    assert!(at("extract") < at("order") && at("order") < at("abstain"));
    assert!(at("chance") > 0 && at("memory") > 0);
    assert_eq!(check_svg(&svg_path).unwrap(), vec![]);
    // Chance differs by value: 1/9 for extract and abstain, 1/2 for order
    // (the abilities task's defaults), drawn as three grey marks.
    let grey = svg.matches("fill=\"#7F7F7F\"").count();
    assert_eq!(grey, 3, "a chance mark per group");
}

/// Two numeric values (abilities' `changes` 1 and 2) are a comparison,
/// drawn as groups with the metric's one chance level, not left out and
/// not drawn as a line with a scale.
#[test]
fn a_by_figure_over_two_numbers_groups_them() {
    let dir = common::run_folder("paper-two", "abilities");
    let paper = serde_json::json!([
        { "name": "before", "metric": "before_accuracy", "by": "changes",
          "series": [
              { "label": "memory", "where": { "variant": "memory" } },
              { "label": "none", "where": { "variant": "none" } },
          ] },
    ]);
    common::write_plan(&dir, serde_json::json!({ "suite": "t", "paper": paper }));
    let mut csv = String::from("run_id,suite,variant,seed,metric,slice,step,value\n");
    for (variant, v) in [("memory", 0.9), ("none", 0.1)] {
        for seed in 0..3 {
            for c in [1, 2] {
                csv.push_str(&format!(
                    "{variant}{seed},t,{variant},{seed},before_accuracy,changes={c},,{v}\n"
                ));
            }
        }
    }
    std::fs::write(dir.join("results.csv"), csv).unwrap();
    let out = retbench_report::report(&dir).unwrap();
    let svg_path = dir.join("paper/before.svg");
    assert!(out.paper.contains(&svg_path), "{:?}", out.paper);
    let svg = std::fs::read_to_string(&svg_path).unwrap();
    assert!(svg.contains(">\n1\n<") && svg.contains(">\n2\n<"));
    assert_eq!(check_svg(&svg_path).unwrap(), vec![]);
    assert!(
        svg.contains("chance (0.125)"),
        "the metric's one chance level"
    );
}
