//! The paper set: a suite's headline figures (`paper: figures:` in its
//! YAML, at most six) drawn into `paper/` before the exhaustive set, with
//! named series and a legend, never a config string on an axis; and
//! `paper/table.md` / `paper/table.tex`, the cells those figures draw
//! (value, 95% interval, seeds), so a paper can quote the numbers behind
//! each figure. A pick names the configs of a group or series by their
//! varied parameters ([`Pick`]); a cell no config matches is left out,
//! and two configs in one cell are refused (the figure would hide one).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use retbench_tasks::{MetricSpec, PaperFigure, Pick};
use serde_json::Value;

use crate::figures::{FigureSize, Figures, PALETTE, Point, XAxis, dodge, panel_tag};

/// Chance marks: the palette's grey.
const CHANCE_COLOUR: plotters::style::RGBColor = PALETTE[7];
use crate::latex::escape;
use crate::summary::{SummaryRow, clipped_ci, fmt_bound, fmt_num, trim, value_text};
use crate::{ReportError, write_atomic};

/// Whether row `r` is one of `pick`'s configs: every `where` entry is the
/// variant's name, a varied parameter's value, or a value inside a
/// structured parameter (`task.kind` in a `task` column).
pub fn matches(pick: &Pick, params: &[String], r: &SummaryRow) -> bool {
    pick.only.iter().all(|(key, want)| {
        if key == "variant" {
            return want.as_str() == Some(r.variant.as_str());
        }
        value_at(params, r, key).is_some_and(|v| same(&v, want))
    })
}

/// A row's value at a dotted path: its own column, or the longest column
/// the path starts with, read into.
fn value_at(params: &[String], r: &SummaryRow, key: &str) -> Option<Value> {
    let (col, rest) = params
        .iter()
        .enumerate()
        .filter(|(_, p)| key == p.as_str() || key.starts_with(&format!("{p}.")))
        .max_by_key(|(_, p)| p.len())
        .map(|(i, p)| (i, key[p.len()..].trim_start_matches('.')))?;
    let cell = r.params.get(col).filter(|c| !c.is_empty())?;
    let mut v = serde_json::from_str::<Value>(cell).unwrap_or_else(|_| Value::String(cell.clone()));
    for part in rest.split('.').filter(|p| !p.is_empty()) {
        v = v.get(part)?.clone();
    }
    Some(v)
}

/// Values equal as written: numbers by value (1500 is 1500.0).
fn same(a: &Value, b: &Value) -> bool {
    match (a.as_f64(), b.as_f64()) {
        (Some(x), Some(y)) => x == y,
        _ => a == b,
    }
}

/// One cell of a paper figure: group, series and the row drawn there.
struct Cell<'r> {
    group: usize,
    series: usize,
    x: String,
    row: &'r SummaryRow,
}

/// The rows a figure draws: for a comparison, one per (group, series) at
/// its slice; for a figure `by` a slice key, one per (series, value).
fn cells<'r>(
    f: &PaperFigure,
    params: &[String],
    rows: &'r [SummaryRow],
) -> Result<Vec<Cell<'r>>, ReportError> {
    let one = [Pick {
        label: String::new(),
        only: BTreeMap::new(),
    }];
    let groups = if f.groups.is_empty() {
        &one[..]
    } else {
        &f.groups
    };
    let mut out: Vec<Cell<'r>> = Vec::new();
    let finals = rows
        .iter()
        .filter(|r| r.metric == f.metric && r.step.is_empty());
    for r in finals {
        let x = match &f.by {
            Some(by) => match r.slice.split_once('=') {
                Some((k, v)) if k == by => v.to_string(),
                _ => continue,
            },
            None if r.slice == f.slice => String::new(),
            None => continue,
        };
        let Some(g) = groups.iter().position(|p| matches(p, params, r)) else {
            continue;
        };
        let Some(s) = f.series.iter().position(|p| matches(p, params, r)) else {
            continue;
        };
        if out.iter().any(|c| (c.group, c.series, &c.x) == (g, s, &x)) {
            let within = match groups[g].label.is_empty() {
                true => String::new(),
                false => format!(" in group {:?}", groups[g].label),
            };
            let message = format!(
                "series {:?}{within} matches more than one config: narrow its `where`",
                f.series[s].label
            );
            let name = format!("paper/{}", f.name);
            return Err(ReportError::Plot { name, message });
        }
        out.push(Cell {
            group: g,
            series: s,
            x,
            row: r,
        });
    }
    Ok(out)
}

/// The x axis of a `by` figure: its values in order, on an axis of their
/// own where they are whole numbers (a count is never drawn at 0.5).
fn by_axis(key: &str, cells: &[&Cell<'_>]) -> (XAxis, Vec<f64>) {
    let mut xs: Vec<f64> = cells.iter().filter_map(|c| c.x.parse().ok()).collect();
    xs.sort_by(f64::total_cmp);
    xs.dedup();
    let whole = xs.iter().all(|x| x.fract() == 0.0);
    if whole && xs.len() <= 16 {
        let names = xs.iter().map(|x| trim(&fmt_num(*x))).collect();
        let axis = XAxis::Groups {
            names,
            key: key.to_string(),
            lines: true,
        };
        return (axis, xs);
    }
    let log = xs.first().is_some_and(|&a| a > 0.0) && xs.last().is_some_and(|&b| b / xs[0] >= 10.0);
    let axis = XAxis::Slice {
        key: key.to_string(),
        log,
    };
    (axis, Vec::new())
}

/// Draws every paper figure into `dir` (SVG and PNG); returns the files.
pub fn render(
    dir: &Path,
    suite: &str,
    params: &[String],
    rows: &[SummaryRow],
    specs: &[MetricSpec],
    paper: &[PaperFigure],
    size: FigureSize,
) -> Result<Vec<PathBuf>, ReportError> {
    let mut written = Vec::new();
    for f in paper {
        let Some(spec) = specs.iter().find(|s| s.name == f.metric) else {
            continue;
        };
        let cells = cells(f, params, rows)?;
        let colour: BTreeMap<_, _> = f
            .series
            .iter()
            .enumerate()
            .map(|(i, p)| (p.label.clone(), PALETTE[i % PALETTE.len()]))
            .collect();
        let mut colour = colour;
        colour.insert(CHANCE.to_string(), CHANCE_COLOUR);
        let order = f.series.iter().map(|p| p.label.clone()).collect();
        let mut fig = Figures::new(dir, suite, colour, size, order);
        match &f.by {
            // Lines against a slice: a figure per group (a panel).
            Some(by) if !f.groups.is_empty() => {
                for (g, pick) in f.groups.iter().enumerate() {
                    let mine: Vec<&Cell<'_>> = cells.iter().filter(|c| c.group == g).collect();
                    let name = format!(
                        "{}_{}",
                        f.name,
                        panel_tag(std::slice::from_ref(&pick.label))
                    );
                    let what = format!("{}, {}", heading(f, &format!("by {by}")), pick.label);
                    by_figure(&mut fig, f, spec, (&name, &what), by, &mine)?;
                }
            }
            Some(by) => {
                let all: Vec<&Cell<'_>> = cells.iter().collect();
                let what = heading(f, &format!("by {by}"));
                by_figure(&mut fig, f, spec, (&f.name, &what), by, &all)?;
            }
            None => comparison(&mut fig, f, spec, &cells)?,
        }
        written.extend(fig.written());
    }
    Ok(written)
}

/// The title after the metric: the suite's own words, else `default`.
fn heading(f: &PaperFigure, default: &str) -> String {
    match f.title.is_empty() {
        true => default.to_string(),
        false => f.title.clone(),
    }
}

/// One figure of lines against slice key `by`, a point per value.
fn by_figure(
    fig: &mut Figures<'_>,
    f: &PaperFigure,
    spec: &MetricSpec,
    (name, what): (&str, &str),
    by: &str,
    cells: &[&Cell<'_>],
) -> Result<(), ReportError> {
    let values: std::collections::BTreeSet<&str> = cells.iter().map(|c| c.x.as_str()).collect();
    // Names are categories; so are two values: a comparison, not a trend,
    // and drawn as lines they would give an axis nobody can read a scale
    // from.
    if values.len() < 3 || cells.iter().any(|c| c.x.parse::<f64>().is_err()) {
        return by_categories(fig, f, spec, (name, what), by, cells);
    }
    let (axis, xs) = by_axis(by, cells);
    let mut series: BTreeMap<String, Vec<Point>> = BTreeMap::new();
    for c in cells {
        let v: f64 = c.x.parse().unwrap_or(f64::NAN);
        let x = match xs.is_empty() {
            true => v,
            false => xs.iter().position(|&a| a == v).unwrap_or(0) as f64,
        };
        let label = f.series[c.series].label.clone();
        series.entry(label).or_default().push(Point::of(x, c.row));
    }
    fig.emit_named(spec, name, what, "", "", axis, series)
}

/// A figure `by` a key whose values name categories (abilities' `query`),
/// or that takes only two values: a group per value, in the order the
/// results list them (the task's), the series side by side, and where the
/// metric declares a `chance` level per value, a `chance` mark beside them:
/// categories are no trend, and their chance levels may differ (one level
/// for the metric is its dashed line, as in every figure).
fn by_categories(
    fig: &mut Figures<'_>,
    f: &PaperFigure,
    spec: &MetricSpec,
    (name, what): (&str, &str),
    by: &str,
    cells: &[&Cell<'_>],
) -> Result<(), ReportError> {
    let mut names: Vec<String> = Vec::new();
    for c in cells {
        if !names.contains(&c.x) {
            names.push(c.x.clone());
        }
    }
    let chance: Vec<Option<f64>> = names
        .iter()
        .map(|v| {
            let slice = format!("{by}={v}");
            let r = spec
                .references
                .iter()
                .find(|r| r.label == CHANCE && r.slice == slice);
            r.map(|r| r.value)
        })
        .collect();
    let marks = f.series.len() + usize::from(chance.iter().any(Option::is_some));
    let mut series: BTreeMap<String, Vec<Point>> = BTreeMap::new();
    for c in cells {
        let g = names.iter().position(|n| *n == c.x).expect("listed above");
        let x = g as f64 + dodge(c.series, marks);
        let label = f.series[c.series].label.clone();
        series.entry(label).or_default().push(Point::of(x, c.row));
    }
    for (g, level) in chance.iter().enumerate() {
        if let Some(v) = level {
            let x = g as f64 + dodge(f.series.len(), marks);
            series
                .entry(CHANCE.into())
                .or_default()
                .push(Point::level(x, *v));
        }
    }
    let axis = XAxis::Groups {
        names,
        key: by.to_string(),
        lines: false,
    };
    fig.emit_named(spec, name, what, "", "", axis, series)
}

/// The reference label a `by` figure over categories draws per category.
pub const CHANCE: &str = "chance";

/// Final values at the figure's slice: a point per series in each group,
/// side by side.
fn comparison(
    fig: &mut Figures<'_>,
    f: &PaperFigure,
    spec: &MetricSpec,
    cells: &[Cell<'_>],
) -> Result<(), ReportError> {
    // Series sit side by side in each group; a figure without groups has
    // one, named by its slice (or metric), and the legend names the series
    // (eight names in a row would not fit a column's width).
    let mut series: BTreeMap<String, Vec<Point>> = BTreeMap::new();
    for c in cells {
        let x = c.group as f64 + dodge(c.series, f.series.len());
        let label = f.series[c.series].label.clone();
        series.entry(label).or_default().push(Point::of(x, c.row));
    }
    let names = match f.groups.is_empty() {
        true if f.slice.is_empty() => vec![f.metric.clone()],
        true => vec![f.slice.clone()],
        false => f.groups.iter().map(|g| g.label.clone()).collect(),
    };
    let axis = XAxis::Groups {
        names,
        key: String::new(),
        lines: false,
    };
    let what = match f.slice.is_empty() {
        true => heading(f, ""),
        false => heading(f, &format!("({})", f.slice)),
    };
    fig.emit_named(spec, &f.name, &what, "", &f.slice, axis, series)
}

/// `table.md` and `table.tex` in `dir`: per paper figure, a row per
/// series and a column per group (or slice value), each cell the value,
/// its 95% interval and the seeds behind it.
pub fn write_tables(
    dir: &Path,
    params: &[String],
    rows: &[SummaryRow],
    specs: &[MetricSpec],
    paper: &[PaperFigure],
) -> Result<Vec<PathBuf>, ReportError> {
    let (mut md, mut tex) = (String::new(), String::new());
    md.push_str("# Headline cells\n\nThe values the paper figures draw: mean over seeds (the median for a censored metric) and its 95% interval, as in summary.md; n seeds.\n");
    for f in paper {
        let cells = cells(f, params, rows)?;
        let spec = specs.iter().find(|s| s.name == f.metric);
        let mut cols: Vec<(usize, String)> = cells.iter().map(|c| (c.group, c.x.clone())).collect();
        cols.sort_by(|a, b| a.0.cmp(&b.0).then(num_order(&a.1, &b.1)));
        cols.dedup();
        let head: Vec<String> = cols
            .iter()
            .map(|(g, x)| {
                let g = f.groups.get(*g).map_or("", |p| p.label.as_str());
                match (&f.by, g.is_empty()) {
                    (Some(by), true) => format!("{by}={x}"),
                    (Some(by), false) => format!("{g} {by}={x}"),
                    (None, _) => g.to_string(),
                }
            })
            .collect();
        let title = match (&f.by, f.slice.is_empty()) {
            (Some(by), _) => format!("{} by {by}", f.metric),
            (None, true) => f.metric.clone(),
            (None, false) => format!("{} ({})", f.metric, f.slice),
        };
        md.push_str(&format!(
            "\n## {} — {title}\n\n| series | {} |\n|---|{}\n",
            f.name,
            head.join(" | "),
            "---|".repeat(head.len())
        ));
        tex.push_str(&format!(
            "% {}: {title}\n\\begin{{tabular}}{{l{}}}\n\\toprule\nseries & {} \\\\\n\\midrule\n",
            f.name,
            "r".repeat(head.len()),
            head.iter()
                .map(|h| escape(h))
                .collect::<Vec<_>>()
                .join(" & ")
        ));
        for (s, pick) in f.series.iter().enumerate() {
            let texts: Vec<String> = cols
                .iter()
                .map(|(g, x)| {
                    cells
                        .iter()
                        .find(|c| c.series == s && c.group == *g && c.x == *x)
                        .map_or_else(|| "–".to_string(), |c| cell_text(c.row, spec))
                })
                .collect();
            md.push_str(&format!("| {} | {} |\n", pick.label, texts.join(" | ")));
            let tex_cells: Vec<String> = texts.iter().map(|t| escape(t)).collect();
            tex.push_str(&format!(
                "{} & {} \\\\\n",
                escape(&pick.label),
                tex_cells.join(" & ")
            ));
        }
        tex.push_str("\\bottomrule\n\\end{tabular}\n\n");
        contrast_tables(f, &cells, (&mut md, &mut tex));
    }
    let (md_path, tex_path) = (dir.join("table.md"), dir.join("table.tex"));
    write_atomic(&md_path, md.as_bytes())?;
    write_atomic(&tex_path, tex.as_bytes())?;
    Ok(vec![md_path, tex_path])
}

/// A paired difference over seeds: the seeds both rows have, each
/// seed's `of − against`, their mean with a Student-t interval, and how
/// many pairs favour `of`.
#[derive(Debug, Clone, PartialEq)]
pub struct Paired {
    pub diffs: Vec<(u64, f64)>,
    pub mean: f64,
    pub ci95: Option<(f64, f64)>,
    pub above: usize,
}

/// [`Paired`] of two summary rows, by seed.
pub fn paired(of: &SummaryRow, against: &SummaryRow) -> Paired {
    let diffs: Vec<(u64, f64)> = of
        .seeds
        .iter()
        .filter_map(|&(seed, v)| {
            let w = against.seeds.iter().find(|(s, _)| *s == seed)?.1;
            Some((seed, v - w)).filter(|(_, d)| d.is_finite())
        })
        .collect();
    let xs: Vec<f64> = diffs.iter().map(|d| d.1).collect();
    let (_, mean, _, ci95) = crate::summary::stats(&xs);
    let above = xs.iter().filter(|&&d| d > 0.0).count();
    Paired {
        diffs,
        mean,
        ci95,
        above,
    }
}

/// The figure's contrasts, per group (or slice value), after its table.
fn contrast_tables(f: &PaperFigure, cells: &[Cell<'_>], (md, tex): (&mut String, &mut String)) {
    if f.contrasts.is_empty() {
        return;
    }
    md.push_str("\nPaired by seed (seeds share data): mean difference with its 95% Student-t interval, the pairs where the first is higher, each seed's difference.\n\n| contrast | where | difference [95% CI] | first higher | per seed |\n|---|---|---|---|---|\n");
    tex.push_str(&format!("% {}: paired differences by seed\n\\begin{{tabular}}{{llrr}}\n\\toprule\ncontrast & where & difference [95\\% CI] & first higher \\\\\n\\midrule\n", f.name));
    let index = |label: &str| f.series.iter().position(|p| p.label == label);
    for c in &f.contrasts {
        let (Some(a), Some(b)) = (index(&c.of), index(&c.against)) else {
            continue;
        };
        for x in cells.iter().filter(|x| x.series == a) {
            let Some(y) = cells
                .iter()
                .find(|y| y.series == b && y.group == x.group && y.x == x.x)
            else {
                continue;
            };
            let p = paired(x.row, y.row);
            let name = format!("{} − {}", c.of, c.against);
            let at = match (f.groups.get(x.group), x.x.is_empty()) {
                (Some(g), true) => g.label.clone(),
                (Some(g), false) => {
                    format!("{} {}={}", g.label, f.by.as_deref().unwrap_or(""), x.x)
                }
                (None, true) => f.slice.clone(),
                (None, false) => format!("{}={}", f.by.as_deref().unwrap_or(""), x.x),
            };
            let ci = p
                .ci95
                .map(|(lo, hi)| format!(" [{}, {}]", trim(&fmt_num(lo)), trim(&fmt_num(hi))))
                .unwrap_or_default();
            let diff = format!("{}{ci}", trim(&fmt_num(p.mean)));
            let higher = format!("{} of {}", p.above, p.diffs.len());
            let seeds: Vec<String> = p
                .diffs
                .iter()
                .map(|(s, d)| format!("s{s} {}", trim(&fmt_num(*d))))
                .collect();
            md.push_str(&format!(
                "| {name} | {at} | {diff} | {higher} | {} |\n",
                seeds.join(", ")
            ));
            tex.push_str(&format!(
                "{} & {} & {} & {} \\\\\n",
                escape(&name),
                escape(&at),
                escape(&diff),
                escape(&higher)
            ));
        }
    }
    tex.push_str("\\bottomrule\n\\end{tabular}\n\n");
}

/// Slice values in numeric order where both are numbers.
fn num_order(a: &str, b: &str) -> std::cmp::Ordering {
    match (a.parse::<f64>(), b.parse::<f64>()) {
        (Ok(x), Ok(y)) => x.total_cmp(&y),
        _ => a.cmp(b),
    }
}

/// "0.973 [0.87, 1] (n=3)".
fn cell_text(r: &SummaryRow, spec: Option<&MetricSpec>) -> String {
    let ci = clipped_ci(r, spec)
        .map(|(lo, hi)| format!(" [{}, {}]", trim(&fmt_bound(lo)), trim(&fmt_bound(hi))))
        .unwrap_or_default();
    format!("{}{ci} (n={})", trim(&value_text(r)), r.n)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::summary::test_row;

    #[test]
    fn a_paired_difference_pairs_by_seed_and_matches_a_hand_computed_interval() {
        let of = test_row("accuracy", "gap=1", &[], &[0.5, 0.7, 0.9]);
        let mut against = test_row("accuracy", "gap=1", &[], &[0.4, 0.4, 1.0, 0.2]);
        // Seed 3 has no partner: left out, not averaged in.
        against.seeds[3].0 = 3;
        let p = paired(&of, &against);
        assert_eq!(p.diffs.iter().map(|d| d.0).collect::<Vec<_>>(), [0, 1, 2]);
        assert!((p.mean - 0.1).abs() < 1e-12);
        // sd 0.2 over 3 pairs; t(2, 0.975) = 4.302653: half-width 0.496828.
        let (lo, hi) = p.ci95.unwrap();
        assert!((lo - (0.1 - 0.496828)).abs() < 1e-5, "{lo}");
        assert!((hi - (0.1 + 0.496828)).abs() < 1e-5, "{hi}");
        assert_eq!(p.above, 2);
    }

    #[test]
    fn a_pick_reads_into_structured_parameters_and_compares_numbers_by_value() {
        let params = vec!["task".to_string(), "train.steps".to_string()];
        let mut r = test_row("accuracy", "", &[], &[1.0]);
        r.params = vec![r#"{"kind":"recall","keys":16}"#.into(), "1500".into()];
        let pick = |w: serde_json::Value| Pick {
            label: "x".into(),
            only: serde_json::from_value(w).unwrap(),
        };
        assert!(matches(
            &pick(serde_json::json!({"task.kind": "recall"})),
            &params,
            &r
        ));
        assert!(matches(
            &pick(serde_json::json!({"train.steps": 1500.0})),
            &params,
            &r
        ));
        assert!(!matches(
            &pick(serde_json::json!({"task.kind": "entity"})),
            &params,
            &r
        ));
        assert!(!matches(
            &pick(serde_json::json!({"task.keys": 32})),
            &params,
            &r
        ));
        // A parameter this row does not vary (an empty cell) matches nothing.
        r.params[1] = String::new();
        assert!(!matches(
            &pick(serde_json::json!({"train.steps": 1500})),
            &params,
            &r
        ));
        assert!(matches(
            &pick(serde_json::json!({"variant": "grid"})),
            &params,
            &r
        ));
    }
}
