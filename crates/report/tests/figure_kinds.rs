//! The figure seam: a new kind of figure is one function added to the
//! table of kinds (`figures::KINDS`), drawn beside the others without
//! touching them.

mod common;

use std::collections::BTreeMap;

use retbench_harness::RunFolder;
use retbench_report::figures::{
    FigureInput, FigureSize, Figures, KINDS, Point, XAxis, render_with,
};
use retbench_report::{ReportError, summarize};
use retbench_tasks::{MetricSpec, TaskConfig};

/// A toy kind: each plotted metric's final values against the number of
/// seeds behind them, one figure per metric.
fn seeds_behind(fig: &mut Figures<'_>, inp: &FigureInput<'_>) -> Result<(), ReportError> {
    for spec in inp.plotted() {
        let mut series: BTreeMap<String, Vec<Point>> = BTreeMap::new();
        for r in inp
            .rows
            .iter()
            .filter(|r| r.metric == spec.name && r.step.is_empty())
        {
            series
                .entry(inp.label(r))
                .or_default()
                .push(Point::of(r.n as f64, r));
        }
        let axis = XAxis::Metric {
            label: "seeds".into(),
            log: false,
        };
        let name = format!("toy_{}", spec.name);
        fig.emit_named(spec, &name, "against its seeds", "", "", axis, series)?;
    }
    Ok(())
}

fn names(files: &[std::path::PathBuf]) -> Vec<String> {
    files
        .iter()
        .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
        .collect()
}

#[test]
fn a_figure_kind_added_to_the_table_is_drawn_beside_the_others() {
    let dir = common::run_folder("figkinds", "copy_probe");
    let mut csv = String::from("run_id,suite,variant,seed,metric,slice,step,value,task.d\n");
    for (i, d) in ["32", "64"].iter().enumerate() {
        for seed in 0..3 {
            let v = 0.5 + 0.1 * i as f64 + 0.01 * seed as f64;
            csv.push_str(&format!(
                "r{i}{seed},t,grid,{seed},copy_cosine,load=1,,{v},{d}\n"
            ));
        }
    }
    std::fs::write(dir.join("results.csv"), &csv).unwrap();
    let (params, rows) = RunFolder::new(&dir).results().unwrap();
    let summary = summarize(&params, &rows);
    let specs: Vec<MetricSpec> = TaskConfig::with_defaults("copy_probe")
        .unwrap()
        .task()
        .metrics();
    let draw = |kinds: &[(&str, retbench_report::figures::FigureKind)]| {
        let out = dir.join(format!("figures-{}", kinds.len()));
        render_with(
            kinds,
            &out,
            "t",
            &params,
            &summary,
            &specs,
            &[],
            FigureSize::Screen,
        )
        .unwrap()
    };
    let before = names(&draw(KINDS));
    assert!(!before.is_empty(), "the table's kinds draw figures");
    let mut kinds = KINDS.to_vec();
    kinds.push(("seeds_behind", seeds_behind));
    let after = draw(&kinds);
    let after_names = names(&after);
    assert_eq!(
        after_names[..before.len()],
        before[..],
        "the other kinds draw what they drew"
    );
    let toy: Vec<&std::path::PathBuf> = after
        .iter()
        .filter(|p| p.to_string_lossy().contains("toy_copy_cosine"))
        .collect();
    assert_eq!(toy.len(), 2, "one SVG and one PNG: {after_names:?}");
    let svg = std::fs::read_to_string(
        toy.iter()
            .find(|p| p.extension().unwrap() == "svg")
            .unwrap(),
    )
    .unwrap();
    assert!(svg.contains("against its seeds"), "drawn with its title");
    std::fs::remove_dir_all(dir).unwrap();
}
