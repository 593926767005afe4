//! What a figure draws is the summary: for a hand-written `results.csv`,
//! the means, error bars and bands read back from the SVG (through its y
//! axis's own tick labels) equal `summary.csv`'s means and intervals, for
//! the comparison kind (a point per config), the line kind (a metric by
//! its slice) and a paper figure. A figure that plotted another column,
//! another config's value or a shifted interval would fail.

mod common;

use std::collections::BTreeMap;
use std::path::Path;

/// Tableau's first three colours: configs in the plan's order.
const COLOURS: [&str; 3] = ["#1F77B4", "#FF7F0E", "#2CA02C"];

/// Three configs × 3 seeds, accuracy at gaps 0..3; known, distinct values
/// away from the metric's bounds.
fn folder(name: &str, paper: serde_json::Value) -> std::path::PathBuf {
    let dir = common::run_folder(name, "recall");
    common::write_plan(&dir, serde_json::json!({ "suite": "t", "paper": paper }));
    let mut csv = String::from("run_id,suite,variant,seed,metric,slice,step,value,model.d_model\n");
    for (c, d) in ["32", "64", "128"].iter().enumerate() {
        for seed in 0..3 {
            for gap in 0..4 {
                let v = 0.2 + 0.2 * c as f64 + 0.03 * gap as f64 + [0.0, 0.04, 0.1][seed];
                csv.push_str(&format!(
                    "r{c}{seed},t,grid,{seed},accuracy,gap={gap},,{v},{d}\n"
                ));
            }
        }
    }
    std::fs::write(dir.join("results.csv"), csv).unwrap();
    dir
}

/// (mean, lo, hi) of config `c` at `slice`, from summary.csv.
fn summary(dir: &Path) -> BTreeMap<(String, String), (f64, f64, f64)> {
    let text = std::fs::read_to_string(dir.join("summary.csv")).unwrap();
    let mut lines = text.lines();
    let head: Vec<&str> = lines.next().unwrap().split(',').collect();
    let col = |n: &str| head.iter().position(|h| *h == n).unwrap();
    let mut out = BTreeMap::new();
    for l in lines {
        let f: Vec<&str> = l.split(',').collect();
        if f[col("metric")] != "accuracy" || !f[col("step")].is_empty() {
            continue;
        }
        let num = |n: &str| f[col(n)].parse::<f64>().unwrap();
        let key = (
            f[col("model.d_model")].to_string(),
            f[col("slice")].to_string(),
        );
        out.insert(key, (num("mean"), num("ci95_lo"), num("ci95_hi")));
    }
    out
}

fn attr(line: &str, name: &str) -> Option<f64> {
    let start = line.find(&format!(" {name}=\""))? + name.len() + 3;
    line[start..].split('"').next()?.parse().ok()
}

/// The SVG's pixel → value map of the y axis, from its first and last
/// tick labels (right-aligned numbers).
fn y_axis(svg: &str) -> impl Fn(f64) -> f64 {
    let mut ticks: Vec<(f64, f64)> = Vec::new();
    let mut lines = svg.lines();
    while let Some(l) = lines.next() {
        if l.starts_with("<text") && l.contains("text-anchor=\"end\"") {
            let value = lines.next().and_then(|v| v.trim().parse::<f64>().ok());
            if let (Some(v), Some(y)) = (value, attr(l, "y")) {
                ticks.push((y, v));
            }
        }
    }
    assert!(ticks.len() >= 3, "y ticks: {ticks:?}");
    let ((y0, v0), (y1, v1)) = (ticks[0], ticks[ticks.len() - 1]);
    move |y| v0 + (y - y0) * (v1 - v0) / (y1 - y0)
}

/// Value per pixel of the y axis: how close a read-back value can be.
fn resolution(to: &impl Fn(f64) -> f64) -> f64 {
    (to(1.0) - to(0.0)).abs() * 1.5
}

/// Per colour: the filled mean markers' values (circles of radius r).
fn markers(svg: &str, r: u32, to: &impl Fn(f64) -> f64) -> BTreeMap<String, Vec<f64>> {
    let mut out: BTreeMap<String, Vec<f64>> = BTreeMap::new();
    for l in svg
        .lines()
        .filter(|l| l.starts_with("<circle") && l.contains(&format!("r=\"{r}\"")))
    {
        if let Some(c) = COLOURS
            .iter()
            .find(|c| l.contains(&format!("fill=\"{c}\"")))
        {
            out.entry(c.to_string())
                .or_default()
                .push(to(attr(l, "cy").unwrap()));
        }
    }
    out
}

fn close(a: f64, b: f64, tol: f64, what: &str) {
    assert!(
        (a - b).abs() <= tol,
        "{what}: drawn {a}, summary {b} (±{tol})"
    );
}

#[test]
fn a_comparison_draws_each_configs_mean_and_interval() {
    let dir = folder("content-final", serde_json::json!([]));
    retbench_report::report(&dir).unwrap();
    let want = summary(&dir);
    let svg = std::fs::read_to_string(dir.join("figures/accuracy_gap1.svg")).unwrap();
    let to = y_axis(&svg);
    let tol = resolution(&to);
    let means = markers(&svg, 5, &to);
    for (c, d) in ["32", "64", "128"].iter().enumerate() {
        let (mean, lo, hi) = want[&(d.to_string(), "gap=1".to_string())];
        close(means[COLOURS[c]][0], mean, tol, "mean");
        // The error bar: the vertical stroke of the config's colour.
        let bar = svg
            .lines()
            .find(|l| {
                l.starts_with("<line")
                    && l.contains(&format!("stroke=\"{}\"", COLOURS[c]))
                    && attr(l, "x1") == attr(l, "x2")
                    && attr(l, "y1") != attr(l, "y2")
            })
            .unwrap();
        let (a, b) = (to(attr(bar, "y1").unwrap()), to(attr(bar, "y2").unwrap()));
        close(a.min(b), lo, tol, "interval low");
        close(a.max(b), hi, tol, "interval high");
    }
}

#[test]
fn a_line_by_slice_draws_the_means_and_a_band_of_the_intervals() {
    let dir = folder("content-line", serde_json::json!([]));
    retbench_report::report(&dir).unwrap();
    let want = summary(&dir);
    let svg = std::fs::read_to_string(dir.join("figures/accuracy_by_gap.svg")).unwrap();
    let to = y_axis(&svg);
    let tol = resolution(&to);
    for (c, d) in ["32", "64", "128"].iter().enumerate() {
        let line = svg
            .lines()
            .find(|l| {
                l.starts_with("<polyline")
                    && l.contains(&format!("stroke=\"{}\"", COLOURS[c]))
                    && l.contains("stroke-width=\"2\"")
            })
            .unwrap();
        let pts: Vec<f64> = points(line).into_iter().map(|(_, y)| to(y)).collect();
        assert_eq!(pts.len(), 4, "a point per gap");
        let band = svg
            .lines()
            .find(|l| l.starts_with("<polygon") && l.contains(&format!("fill=\"{}\"", COLOURS[c])))
            .unwrap();
        let edge: Vec<f64> = points(band).into_iter().map(|(_, y)| to(y)).collect();
        for (gap, drawn) in pts.iter().enumerate() {
            let (mean, lo, hi) = want[&(d.to_string(), format!("gap={gap}"))];
            close(*drawn, mean, tol, "line point");
            // The band runs along the upper ends, then back along the lower.
            close(edge[gap], hi, tol, "band top");
            close(edge[7 - gap], lo, tol, "band bottom");
        }
    }
}

fn points(element: &str) -> Vec<(f64, f64)> {
    let start = element.find("points=\"").unwrap() + 8;
    element[start..]
        .split('"')
        .next()
        .unwrap()
        .split_whitespace()
        .map(|p| {
            let (x, y) = p.split_once(',').unwrap();
            (x.parse().unwrap(), y.parse().unwrap())
        })
        .collect()
}

#[test]
fn a_paper_comparison_draws_the_cells_it_tables() {
    let series = serde_json::json!([
        { "label": "d=32", "where": { "model.d_model": 32 } },
        { "label": "d=64", "where": { "model.d_model": 64 } },
        { "label": "d=128", "where": { "model.d_model": 128 } },
    ]);
    let dir = folder(
        "content-paper",
        serde_json::json!([{ "name": "next", "metric": "accuracy", "slice": "gap=2", "series": series }]),
    );
    retbench_report::report(&dir).unwrap();
    let want = summary(&dir);
    let svg = std::fs::read_to_string(dir.join("paper/next.svg")).unwrap();
    let to = y_axis(&svg);
    let tol = resolution(&to);
    let means = markers(&svg, 5, &to);
    for (c, d) in ["32", "64", "128"].iter().enumerate() {
        let (mean, _, _) = want[&(d.to_string(), "gap=2".to_string())];
        close(means[COLOURS[c]][0], mean, tol, "paper mean");
    }
}
