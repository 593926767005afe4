//! Figures (plotters, SVG and PNG), three kinds, each drawn when the data
//! has what it needs:
//!
//! - **sweeps**: one line per backend against memory size (`retention.slots`
//!   varied), with a shaded 95% interval where there are several seeds;
//! - **curves**: metrics recorded during training against the step, one
//!   line per config, shaded interval over seeds;
//! - **comparisons**: a final metric per config (baselines side by side)
//!   as a point with 95% error bars, when the suite varies no memory size.
//!
//! What each figure shows comes from the metric specs of `metrics.json`:
//! the axis label and unit, a log axis for metrics that span decades, the
//! bounds that clip axes and confidence bands (no band below 0 for a loss),
//! and a chance line where the metric has one. Specs marked `plot: false`
//! get no figure.
//!
//! Configs keep one colour, in one order, across every figure of a report.
//! Where there are several seeds, each seed's value is drawn faintly too (a
//! ring beside a comparison's mean, a thin line under a curve's): a mean and
//! a t interval over 3 seeds say nothing of a bimodal outcome.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Once;

use plotters::coord::Shift;
use plotters::coord::ranged1d::ValueFormatter;
use plotters::prelude::*;

use retbench_tasks::{FigureSpec, MetricSpec};

use retbench_core::fsutil::FileError;

use crate::ReportError;
use crate::summary::{SummaryRow, short_value};
use crate::ticks::log_ticks;

/// The x axis of sweeps, when the suite varies it.
const X_PARAM: &str = "retention.slots";

/// Tableau 10 (distinguishable, colour-blind aware), then its lighter
/// pairs (Tableau 20's other half) so that figures of 11 to 20 series do
/// not repeat a colour.
pub(crate) const PALETTE: [RGBColor; 20] = [
    RGBColor(31, 119, 180),
    RGBColor(255, 127, 14),
    RGBColor(44, 160, 44),
    RGBColor(214, 39, 40),
    RGBColor(148, 103, 189),
    RGBColor(140, 86, 75),
    RGBColor(227, 119, 194),
    RGBColor(127, 127, 127),
    RGBColor(188, 189, 34),
    RGBColor(23, 190, 207),
    RGBColor(174, 199, 232),
    RGBColor(255, 187, 120),
    RGBColor(152, 223, 138),
    RGBColor(255, 152, 150),
    RGBColor(197, 176, 213),
    RGBColor(196, 156, 148),
    RGBColor(247, 182, 210),
    RGBColor(199, 199, 199),
    RGBColor(219, 219, 141),
    RGBColor(158, 218, 229),
];

static FONT: Once = Once::new();

/// Registers the bundled font as "sans-serif" (plotters' ab_glyph backend
/// only draws registered fonts).
fn register_font() {
    FONT.call_once(|| {
        let bytes: &'static [u8] = include_bytes!("../assets/DejaVuSans.ttf");
        if plotters::style::register_font("sans-serif", FontStyle::Normal, bytes).is_err() {
            eprintln!("warning: the bundled font did not load; figures will have no text");
        }
    });
}

#[derive(Clone)]
pub struct Point {
    x: f64,
    mean: f64,
    ci: Option<(f64, f64)>,
    /// (seed, value): drawn faintly beside the mean where there are several.
    seeds: Vec<(u64, f64)>,
}

impl Point {
    pub fn of(x: f64, r: &SummaryRow) -> Self {
        Self {
            x,
            mean: r.mean,
            ci: r.ci95,
            seeds: if r.seeds.len() > 1 {
                r.seeds.clone()
            } else {
                Vec::new()
            },
        }
    }
    /// A known level (chance), without interval or seeds.
    pub fn level(x: f64, value: f64) -> Self {
        Self {
            x,
            mean: value,
            ci: None,
            seeds: Vec::new(),
        }
    }
}

/// Tick labels without trailing zeros ("0.25", "1", "12000", "2.5e-5").
fn tick(y: f64) -> String {
    let s = crate::summary::fmt_num(y);
    match s.split_once('e') {
        Some((mantissa, exp)) => format!("{}e{exp}", crate::summary::trim(mantissa)),
        None => crate::summary::trim(&s),
    }
}

/// Labels of a log y axis: where it leaves the range plain numbers read
/// well in (1e-3 to 1e5), every decade as a power ("1e-4" … "1e0"), so that
/// one axis never mixes "0.001" with "1e-4"; otherwise plain ticks.
fn log_tick(y: f64, powers: bool) -> String {
    if powers {
        let d = decade_label(y);
        if !d.is_empty() {
            return d;
        }
    }
    tick(y)
}

/// What the x axis of a figure is.
#[derive(Debug, Clone)]
pub enum XAxis {
    /// Memory size, log-scaled.
    Slots,
    /// Training step, linear.
    Step,
    /// One position per config (x = its index), labelled by name.
    Configs(Vec<String>),
    /// The numeric value of a slice key (`load`, `len`, `gap`), log-scaled
    /// when its values span a decade or more.
    Slice { key: String, log: bool },
    /// Another metric's value (a cost), one point per config.
    Metric { label: String, log: bool },
    /// Named categories (x = index): a paper figure's groups or the values
    /// of a discrete slice `key`; series as points side by side, or as
    /// `lines` across the categories; with a legend.
    Groups {
        names: Vec<String>,
        key: String,
        lines: bool,
    },
}

/// Series label of a row: its variant and every varied parameter but x,
/// shortened.
fn full_label(params: &[String], row: &SummaryRow, x_col: Option<usize>) -> String {
    let mut parts = Vec::new();
    if row.variant != "grid" {
        parts.push(row.variant.clone());
    }
    let names = crate::summary::short_names(params);
    for (i, (name, value)) in names.iter().zip(&row.params).enumerate() {
        if Some(i) != x_col && !value.is_empty() {
            parts.push(format!("{name}={}", short_value(value)));
        }
    }
    if parts.is_empty() {
        "all".into()
    } else {
        parts.join(" ")
    }
}

/// Labels per row: the variant's name alone where it names one config (a
/// suite of named baselines), the full label otherwise.
fn labeller(
    params: &[String],
    rows: &[SummaryRow],
    x_col: Option<usize>,
) -> BTreeMap<String, String> {
    let mut per_variant: BTreeMap<&str, std::collections::BTreeSet<String>> = BTreeMap::new();
    for r in rows {
        per_variant
            .entry(r.variant.as_str())
            .or_default()
            .insert(full_label(params, r, x_col));
    }
    let mut out = BTreeMap::new();
    for r in rows {
        let full = full_label(params, r, x_col);
        let short = r.variant != "grid" && per_variant[r.variant.as_str()].len() == 1;
        out.insert(full.clone(), if short { r.variant.clone() } else { full });
    }
    out
}

/// A numeric slice key with at least this many values is drawn as one
/// line figure against it, not as a figure per value.
const MANY_SLICES: usize = 12;

/// The value a pooled parameter shows in a figure's legend.
const POOLED: &str = "any";

/// Rows for figures: the configs of a metric that differ only in
/// parameters it cannot depend on (`MetricSpec::independent_of`; a column
/// named by the path or lying under it) become one row over all their
/// seeds, the parameter shown as `any`, appended after the other rows (so
/// colours of configs drawn elsewhere do not move). Seeds are renumbered
/// in pooled order, so a seed's thin line follows one config.
fn pool_independent(
    params: &[String],
    rows: &[SummaryRow],
    specs: &[MetricSpec],
) -> Vec<SummaryRow> {
    type Key = (String, Vec<String>, String, String, String);
    let mut out = Vec::new();
    let mut pooled: Vec<SummaryRow> = Vec::new();
    let mut at: BTreeMap<Key, usize> = BTreeMap::new();
    for r in rows {
        let free = specs
            .iter()
            .find(|s| s.name == r.metric)
            .map(|s| s.independent_of.as_slice())
            .unwrap_or_default();
        let cols: Vec<usize> = params
            .iter()
            .enumerate()
            .filter(|(c, p)| {
                !r.params[*c].is_empty()
                    && free
                        .iter()
                        .any(|f| *p == f || p.starts_with(&format!("{f}.")))
            })
            .map(|(c, _)| c)
            .collect();
        if cols.is_empty() {
            out.push(r.clone());
            continue;
        }
        let mut p = r.params.clone();
        for c in cols {
            p[c] = POOLED.into();
        }
        let key = (
            r.variant.clone(),
            p.clone(),
            r.metric.clone(),
            r.slice.clone(),
            r.step.clone(),
        );
        match at.get(&key) {
            Some(&i) => pooled[i].seeds.extend(r.seeds.iter().copied()),
            None => {
                at.insert(key, pooled.len());
                pooled.push(SummaryRow {
                    params: p,
                    ..r.clone()
                });
            }
        }
    }
    let mut merged: Vec<SummaryRow> = pooled
        .into_iter()
        .map(|mut r| {
            r.seeds = r
                .seeds
                .iter()
                .enumerate()
                .map(|(i, &(_, v))| (i as u64, v))
                .collect();
            let xs: Vec<f64> = r.seeds.iter().map(|&(_, v)| v).collect();
            (r.n, r.mean, r.std, r.ci95) = crate::summary::stats(&xs);
            r.interval = Default::default();
            r
        })
        .collect();
    crate::summary::bimodal_intervals(&mut merged, specs);
    out.extend(merged);
    out
}

/// What every figure kind reads: the summary rows (configs that cannot
/// differ pooled), the rows as the suite declared them, the metric specs,
/// and the series labels and their order (one colour per label across
/// every figure of a report).
pub struct FigureInput<'a> {
    pub params: &'a [String],
    /// Summary rows, configs a metric cannot depend on pooled (`…=any`).
    pub rows: &'a [SummaryRow],
    /// Summary rows as the plan has them (declared figures choose their lines).
    pub as_declared: &'a [SummaryRow],
    pub specs: &'a [MetricSpec],
    pub declared: &'a [FigureSpec],
    /// The column of `retention.slots` when the suite varies it.
    pub x_col: Option<usize>,
    /// Series labels in order of first appearance (the plan's order).
    pub order: Vec<String>,
    names: BTreeMap<String, String>,
    /// (metric, slice key) → its numeric slice values.
    values_of: BTreeMap<(String, String), std::collections::BTreeSet<String>>,
}

impl FigureInput<'_> {
    /// The series label of a row.
    pub fn label(&self, r: &SummaryRow) -> String {
        self.names[&full_label(self.params, r, self.x_col)].clone()
    }

    /// The specs that get figures (`plot: true`).
    pub fn plotted(&self) -> impl Iterator<Item = &MetricSpec> {
        self.specs.iter().filter(|s| s.plot)
    }

    /// The slices of `metric` with final values (`with_step`: with values
    /// recorded during training), sorted; a slice key with many numeric
    /// values gets no figure per value.
    pub fn slices_of(&self, metric: &str, with_step: bool) -> Vec<&str> {
        let many = |slice: &str| {
            slice.split_once('=').is_some_and(|(key, _)| {
                self.values_of
                    .get(&(metric.to_string(), key.to_string()))
                    .is_some_and(|v| v.len() >= MANY_SLICES)
            })
        };
        let mut slices: Vec<&str> = self
            .rows
            .iter()
            .filter(|r| r.metric == metric && r.step.is_empty() != with_step)
            .map(|r| r.slice.as_str())
            .filter(|s| with_step || !many(s))
            .collect();
        slices.sort();
        slices.dedup();
        slices
    }

    /// Final rows of `metric` at `slice`.
    pub fn finals<'r>(
        &'r self,
        metric: &'r str,
        slice: &'r str,
    ) -> impl Iterator<Item = &'r SummaryRow> {
        self.rows
            .iter()
            .filter(move |r| r.metric == metric && r.slice == slice && r.step.is_empty())
    }
}

/// A kind of figure: draws every figure of its kind that the input has
/// data for, through [`Figures::emit`] or [`Figures::emit_named`].
pub type FigureKind = fn(&mut Figures<'_>, &FigureInput<'_>) -> Result<(), ReportError>;

/// Every kind of figure, in the order they are drawn (and listed in a
/// report). A new kind is one function and one line here.
pub const KINDS: &[(&str, FigureKind)] = &[
    ("final", finals),
    ("by_slice", by_slice),
    ("declared", declared_figures),
    ("tradeoff", tradeoffs),
    ("curve", curves),
];

/// Every figure of every kind in [`KINDS`].
pub fn render_all(
    dir: &Path,
    suite: &str,
    params: &[String],
    rows: &[SummaryRow],
    specs: &[MetricSpec],
    declared: &[FigureSpec],
    size: FigureSize,
) -> Result<Vec<PathBuf>, ReportError> {
    render_with(KINDS, dir, suite, params, rows, specs, declared, size)
}

/// The figures of `kinds`, drawn into `dir/figures/`; returns the files.
#[allow(clippy::too_many_arguments)]
pub fn render_with(
    kinds: &[(&str, FigureKind)],
    dir: &Path,
    suite: &str,
    params: &[String],
    rows: &[SummaryRow],
    specs: &[MetricSpec],
    declared: &[FigureSpec],
    size: FigureSize,
) -> Result<Vec<PathBuf>, ReportError> {
    register_font();
    let x_col = params.iter().position(|p| p == X_PARAM);
    // Figures draw configs that cannot differ as one (declared figures keep
    // the suite's own choice of lines).
    let pooled = pool_independent(params, rows, specs);
    let both: Vec<SummaryRow> = pooled.iter().chain(rows).cloned().collect();
    let names = labeller(params, &both, x_col);
    let mut input = FigureInput {
        params,
        rows: &pooled,
        as_declared: rows,
        specs,
        declared,
        x_col,
        order: Vec::new(),
        names,
        values_of: BTreeMap::new(),
    };
    // One colour per series, fixed across figures, in order of first
    // appearance (the plan's order).
    for r in &both {
        let l = input.label(r);
        if !input.order.contains(&l) {
            input.order.push(l);
        }
    }
    for r in input.rows {
        if let Some((key, v)) = r.slice.split_once('=')
            && v.parse::<f64>().is_ok()
        {
            input
                .values_of
                .entry((r.metric.clone(), key.to_string()))
                .or_default()
                .insert(v.to_string());
        }
    }
    let colour: BTreeMap<String, RGBColor> = input
        .order
        .iter()
        .enumerate()
        .map(|(i, l)| (l.clone(), PALETTE[i % PALETTE.len()]))
        .collect();
    let mut fig = Figures {
        dir,
        suite,
        colour,
        written: Vec::new(),
        pixels: size.pixels(),
        order: Vec::new(),
    };
    for (_, kind) in kinds {
        kind(&mut fig, &input)?;
    }
    Ok(fig.written)
}

/// Final metrics: against memory size when the suite sweeps it (and one
/// point per config for the variants that do not), else one point per
/// config with 95% error bars.
fn finals(fig: &mut Figures<'_>, inp: &FigureInput<'_>) -> Result<(), ReportError> {
    for spec in inp.plotted() {
        let metric = spec.name.as_str();
        for slice in inp.slices_of(metric, false) {
            match inp.x_col {
                Some(x_col) => sweep(fig, inp, spec, slice, x_col)?,
                None => {
                    let rows: Vec<&SummaryRow> = inp.finals(metric, slice).collect();
                    side_by_side(fig, inp, spec, (slice, ""), &inp.order, &rows)?;
                }
            }
        }
    }
    Ok(())
}

/// One metric and slice against memory size, then the configs that vary
/// no size (a probe suite's learned variants) as points of their own.
fn sweep(
    fig: &mut Figures<'_>,
    inp: &FigureInput<'_>,
    spec: &MetricSpec,
    slice: &str,
    x_col: usize,
) -> Result<(), ReportError> {
    let metric = spec.name.as_str();
    let mut series: BTreeMap<String, Vec<Point>> = BTreeMap::new();
    for r in inp.finals(metric, slice) {
        // A log axis has no place for 0, negatives, inf or NaN.
        let Some(x) = r.params[x_col]
            .parse::<f64>()
            .ok()
            .filter(|x| x.is_finite() && *x > 0.0)
        else {
            continue;
        };
        series
            .entry(inp.label(r))
            .or_default()
            .push(Point::of(x, r));
    }
    fig.emit(spec, slice, "", XAxis::Slots, series)?;
    let unswept: Vec<&SummaryRow> = inp
        .finals(metric, slice)
        .filter(|r| r.params[x_col].is_empty())
        .collect();
    let names: Vec<String> = inp
        .order
        .iter()
        .filter(|o| unswept.iter().any(|r| inp.label(r) == **o))
        .cloned()
        .collect();
    side_by_side(fig, inp, spec, (slice, "configs_"), &names, &unswept)
}

/// The x offset of series `i` of `m` side by side in one category (the
/// category's middle 60%).
pub(crate) fn dodge(i: usize, m: usize) -> f64 {
    let m = m.max(1) as f64;
    (i as f64 - (m - 1.0) / 2.0) * 0.6 / m
}

/// Final values of several configs: one category (the slice, or the
/// metric), a point per config side by side in plan order, named by the
/// legend (config names on an axis overprint each other).
fn side_by_side(
    fig: &mut Figures<'_>,
    inp: &FigureInput<'_>,
    spec: &MetricSpec,
    (slice, prefix): (&str, &str),
    names: &[String],
    rows: &[&SummaryRow],
) -> Result<(), ReportError> {
    let mut series: BTreeMap<String, Vec<Point>> = BTreeMap::new();
    for r in rows {
        let l = inp.label(r);
        let i = names.iter().position(|o| *o == l).unwrap_or(0);
        let x = dodge(i, names.len());
        series.entry(l).or_default().push(Point::of(x, r));
    }
    let category = match slice.is_empty() {
        true => spec.name.clone(),
        false => slice.to_string(),
    };
    let axis = XAxis::Groups {
        names: vec![category],
        key: String::new(),
        lines: false,
    };
    let natural = std::mem::replace(&mut fig.order, names.to_vec());
    let out = fig.emit(spec, slice, prefix, axis, series);
    fig.order = natural;
    out
}

/// Metrics sliced by a number (`load=`, `len=`, `gap=`): the metric
/// against that number, one line per config; with a memory-size sweep,
/// one figure per size (and one for configs without a size).
fn by_slice(fig: &mut Figures<'_>, inp: &FigureInput<'_>) -> Result<(), ReportError> {
    for spec in inp.plotted() {
        let metric = spec.name.as_str();
        let mut by_key: BTreeMap<&str, Vec<(f64, &SummaryRow)>> = BTreeMap::new();
        for r in inp
            .rows
            .iter()
            .filter(|r| r.metric == metric && r.step.is_empty())
        {
            let Some((key, value)) = r.slice.split_once('=') else {
                continue;
            };
            if let Some(v) = value.parse::<f64>().ok().filter(|v| v.is_finite()) {
                by_key.entry(key).or_default().push((v, r));
            }
        }
        for (key, points) in by_key {
            if inp
                .declared
                .iter()
                .any(|f| f.metric == metric && f.by == key)
            {
                continue; // drawn as the suite declares
            }
            by_slice_key(fig, inp, spec, key, points)?;
        }
    }
    Ok(())
}

/// The figures of one metric against one numeric slice key.
fn by_slice_key(
    fig: &mut Figures<'_>,
    inp: &FigureInput<'_>,
    spec: &MetricSpec,
    key: &str,
    points: Vec<(f64, &SummaryRow)>,
) -> Result<(), ReportError> {
    let metric = spec.name.as_str();
    let mut values: Vec<f64> = points.iter().map(|(v, _)| *v).collect();
    values.sort_by(f64::total_cmp);
    values.dedup();
    if values.len() < 2 {
        return Ok(());
    }
    let log = values[0] > 0.0 && values[values.len() - 1] / values[0] >= 10.0;
    // A count (gap, updates, sessions) with a few whole values gets an
    // axis of those values: no tick between two sessions.
    let counted = crate::layout::DISCRETE_KEYS.contains(&key)
        && values.len() <= 16
        && values.iter().all(|v| v.fract() == 0.0);
    let at = |v: f64| match counted {
        true => values.iter().position(|&a| a == v).unwrap_or(0) as f64,
        false => v,
    };
    let mut groups: BTreeMap<String, BTreeMap<String, Vec<Point>>> = BTreeMap::new();
    for (v, r) in points {
        let v = at(v);
        let size = inp.x_col.map(|c| r.params[c].clone()).unwrap_or_default();
        groups
            .entry(size)
            .or_default()
            .entry(inp.label(r))
            .or_default()
            .push(Point::of(v, r));
    }
    for (size, series) in groups {
        let name = if size.is_empty() {
            format!("{metric}_by_{key}")
        } else {
            format!("{metric}_by_{key}_slots{size}")
        };
        let axis = match counted {
            true => XAxis::Groups {
                names: values.iter().map(|v| tick(*v)).collect(),
                key: key.to_string(),
                lines: true,
            },
            false => XAxis::Slice {
                key: key.to_string(),
                log,
            },
        };
        fig.emit_named(spec, &name, &format!("by {key}"), &size, "", axis, series)?;
    }
    Ok(())
}

/// The figures a suite declares (`figures:` in its YAML).
fn declared_figures(fig: &mut Figures<'_>, inp: &FigureInput<'_>) -> Result<(), ReportError> {
    for f in inp.declared {
        fig.declared(f, inp.params, inp.as_declared, inp.specs)?;
    }
    Ok(())
}

/// Trade-offs: a quality metric against a cost of the same config
/// (`MetricSpec::against`: a whole-run metric, or `name[slice]` for one
/// slice of a sliced one), one point per config; in a memory-size sweep
/// each series joins its sizes (cost grows with memory), and each size
/// gets a figure of its own with one point per config: the Pareto view.
fn tradeoffs(fig: &mut Figures<'_>, inp: &FigureInput<'_>) -> Result<(), ReportError> {
    for spec in inp.plotted() {
        for cost in &spec.against {
            let (cost_name, cost_slice) = match cost.split_once('[') {
                Some((n, rest)) => (n, rest.trim_end_matches(']')),
                None => (cost.as_str(), ""),
            };
            let Some(cost_spec) = inp.specs.iter().find(|c| c.name == cost_name) else {
                continue;
            };
            for slice in inp.slices_of(&spec.name, false) {
                tradeoff(fig, inp, spec, slice, cost_spec, cost_slice)?;
            }
        }
    }
    Ok(())
}

/// One metric and slice against one cost.
fn tradeoff(
    fig: &mut Figures<'_>,
    inp: &FigureInput<'_>,
    spec: &MetricSpec,
    slice: &str,
    cost_spec: &MetricSpec,
    cost_slice: &str,
) -> Result<(), ReportError> {
    let (metric, cost_name) = (spec.name.as_str(), cost_spec.name.as_str());
    let cost_of = |r: &SummaryRow| {
        inp.rows
            .iter()
            .find(|c| {
                c.metric == cost_name
                    && c.slice == cost_slice
                    && c.step.is_empty()
                    && c.variant == r.variant
                    && c.params == r.params
            })
            .map(|c| c.mean)
            .filter(|x| x.is_finite() && (!cost_spec.log_axis || *x > 0.0))
    };
    let cost_tag = format!("{cost_name}{}", cost_slice.replace('=', ""));
    let axis = || XAxis::Metric {
        label: cost_spec.label(),
        log: cost_spec.log_axis,
    };
    let mut series: BTreeMap<String, Vec<Point>> = BTreeMap::new();
    let mut by_size: BTreeMap<String, BTreeMap<String, Vec<Point>>> = BTreeMap::new();
    for r in inp.finals(metric, slice) {
        let Some(x) = cost_of(r) else { continue };
        series
            .entry(inp.label(r))
            .or_default()
            .push(Point::of(x, r));
        if let Some(c) = inp.x_col.filter(|&c| !r.params[c].is_empty()) {
            by_size
                .entry(r.params[c].clone())
                .or_default()
                .entry(inp.label(r))
                .or_default()
                .push(Point::of(x, r));
        }
    }
    let tag = slice.replace('=', "");
    let name = if tag.is_empty() {
        format!("{metric}_vs_{cost_tag}")
    } else {
        format!("{metric}_{tag}_vs_{cost_tag}")
    };
    let what = if cost_slice.is_empty() {
        format!("({slice}) against {cost_name}")
    } else {
        format!("({slice}) against {cost_name} ({cost_slice})")
    };
    fig.emit_named(spec, &name, &what, "", slice, axis(), series)?;
    if by_size.len() > 1 {
        for (size, series) in by_size {
            let name = format!("{name}_slots{size}");
            fig.emit_named(spec, &name, &what, &size, slice, axis(), series)?;
        }
    }
    Ok(())
}

/// Training curves: every metric recorded with a step, one line per config.
fn curves(fig: &mut Figures<'_>, inp: &FigureInput<'_>) -> Result<(), ReportError> {
    for spec in inp.plotted() {
        let metric = spec.name.as_str();
        for slice in inp.slices_of(metric, true) {
            let mut series: BTreeMap<String, Vec<Point>> = BTreeMap::new();
            for r in inp
                .rows
                .iter()
                .filter(|r| r.metric == metric && r.slice == slice && !r.step.is_empty())
            {
                let Some(x) = r.step.parse::<f64>().ok().filter(|x| x.is_finite()) else {
                    continue;
                };
                series
                    .entry(inp.label(r))
                    .or_default()
                    .push(Point::of(x, r));
            }
            fig.emit(spec, slice, "curve_", XAxis::Step, series)?;
        }
    }
    Ok(())
}

/// The figures of a report being drawn: where they go, the colour of each
/// series, what was written.
pub struct Figures<'a> {
    dir: &'a Path,
    suite: &'a str,
    colour: BTreeMap<String, RGBColor>,
    written: Vec<PathBuf>,
    pixels: (u32, u32),
    /// Series in the order a suite declared them (legend and drawing);
    /// empty: natural order.
    order: Vec<String>,
}

/// The canvas figures are drawn on. Type sizes are fixed in pixels, so a
/// smaller canvas gives larger type once the figure is scaled to its
/// column: `one-column` reads at a single column's width (about 3.3 in),
/// `two-column` spans a page (about 7 in) at a wide aspect.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum FigureSize {
    /// 900 × 600: reports and the screen.
    #[default]
    Screen,
    /// 600 × 450.
    OneColumn,
    /// 1200 × 500.
    TwoColumn,
}

impl FigureSize {
    fn pixels(self) -> (u32, u32) {
        match self {
            FigureSize::Screen => (900, 600),
            FigureSize::OneColumn => (600, 450),
            FigureSize::TwoColumn => (1200, 500),
        }
    }
}

/// Whether a row passes a declared figure's `where` (`only`): each named
/// parameter is unset or has the wanted value (a cell holds a scalar as
/// written or a structure as compact JSON).
fn kept(f: &FigureSpec, params: &[String], r: &SummaryRow) -> bool {
    let cell = |c: &str| {
        serde_json::from_str::<serde_json::Value>(c)
            .unwrap_or_else(|_| serde_json::Value::String(c.to_string()))
    };
    f.only.iter().all(|(p, want)| {
        params
            .iter()
            .position(|x| x == p)
            .is_none_or(|c| r.params[c].is_empty() || cell(&r.params[c]) == *want)
    })
}

/// A panel's values as a file-name tag: runs of anything but letters,
/// digits and dots become one underscore.
pub(crate) fn panel_tag(panel: &[String]) -> String {
    panel
        .join("_")
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '.' {
                c
            } else {
                '_'
            }
        })
        .collect::<String>()
        .split('_')
        .filter(|p| !p.is_empty())
        .collect::<Vec<_>>()
        .join("_")
}

impl<'a> Figures<'a> {
    /// A canvas of `size` drawing into `dir`, a colour per series.
    pub(crate) fn new(
        dir: &'a Path,
        suite: &'a str,
        colour: BTreeMap<String, RGBColor>,
        size: FigureSize,
        order: Vec<String>,
    ) -> Self {
        register_font();
        Figures {
            dir,
            suite,
            colour,
            written: Vec::new(),
            pixels: size.pixels(),
            order,
        }
    }

    /// The files written so far.
    pub(crate) fn written(self) -> Vec<PathBuf> {
        self.written
    }

    /// A suite's declared figure ([`FigureSpec`]): one figure per value of
    /// its panel parameters, a line per value of its line parameters (plus
    /// the runs that vary no panel parameter, in every panel); lines keep
    /// one colour across the panels.
    fn declared(
        &mut self,
        f: &FigureSpec,
        params: &[String],
        rows: &[SummaryRow],
        specs: &[MetricSpec],
    ) -> Result<(), ReportError> {
        let Some(spec) = specs.iter().find(|s| s.name == f.metric) else {
            return Ok(());
        };
        let cols = |paths: &[String]| -> Vec<usize> {
            paths
                .iter()
                .filter_map(|p| params.iter().position(|x| x == p))
                .collect()
        };
        let (line_cols, panel_cols) = (cols(&f.lines), cols(&f.panels));
        let names = crate::summary::short_names(params);
        let describe = |r: &SummaryRow, cs: &[usize]| -> Vec<String> {
            cs.iter()
                .filter(|&&c| !r.params[c].is_empty())
                .map(|&c| format!("{}={}", names[c], short_value(&r.params[c])))
                .collect()
        };
        type Series = BTreeMap<String, Vec<Point>>;
        let mut panels: BTreeMap<Vec<String>, Series> = BTreeMap::new();
        let mut everywhere: Series = BTreeMap::new();
        let mut lines: Vec<String> = Vec::new();
        let mut xs: Vec<f64> = Vec::new();
        for r in rows
            .iter()
            .filter(|r| r.metric == f.metric && r.step.is_empty() && kept(f, params, r))
        {
            let Some(x) = r
                .slice
                .split_once('=')
                .filter(|(k, _)| *k == f.by)
                .and_then(|(_, v)| v.parse::<f64>().ok())
                .filter(|x| x.is_finite())
            else {
                continue;
            };
            let mut parts = describe(r, &line_cols);
            if r.variant != "grid" {
                parts.insert(0, r.variant.clone());
            }
            let label = if parts.is_empty() {
                "all".into()
            } else {
                parts.join(" ")
            };
            if !lines.contains(&label) {
                lines.push(label.clone());
            }
            xs.push(x);
            let panel = describe(r, &panel_cols);
            let target = if panel.is_empty() {
                &mut everywhere
            } else {
                panels.entry(panel).or_default()
            };
            target.entry(label).or_default().push(Point::of(x, r));
        }
        // The figure's own colours, one per line in order of appearance,
        // the same in every panel (the report-wide ones could collide here:
        // a reference run keeps its colour from other figures).
        let own: BTreeMap<String, RGBColor> = lines
            .iter()
            .enumerate()
            .map(|(i, l)| (l.clone(), PALETTE[i % PALETTE.len()]))
            .collect();
        let report_wide = std::mem::replace(&mut self.colour, own);
        xs.sort_by(f64::total_cmp);
        let log =
            xs.first().is_some_and(|&a| a > 0.0) && xs.last().is_some_and(|&b| b / xs[0] >= 10.0);
        if panels.is_empty() && !everywhere.is_empty() {
            panels.insert(Vec::new(), BTreeMap::new());
        }
        for (panel, mut series) in panels {
            for (l, pts) in &everywhere {
                series.entry(l.clone()).or_insert_with(|| pts.clone());
            }
            let tag = panel_tag(&panel);
            let name = if tag.is_empty() {
                format!("{}_by_{}", f.metric, f.by)
            } else {
                format!("{}_by_{}_{tag}", f.metric, f.by)
            };
            let what = if panel.is_empty() {
                format!("by {}", f.by)
            } else {
                format!("by {}, {}", f.by, panel.join(" "))
            };
            let axis = XAxis::Slice {
                key: f.by.clone(),
                log,
            };
            if let Err(e) = self.emit_named(spec, &name, &what, "", "", axis, series) {
                self.colour = report_wide;
                return Err(e);
            }
        }
        self.colour = report_wide;
        Ok(())
    }

    /// Sorts points by x, clips intervals to the metric's bounds, and drops
    /// points without a finite mean and series left empty.
    fn tidy(spec: &MetricSpec, series: &mut BTreeMap<String, Vec<Point>>) {
        let (lo, hi) = (
            spec.lower.unwrap_or(f64::NEG_INFINITY),
            spec.upper.unwrap_or(f64::INFINITY),
        );
        series.values_mut().for_each(|pts| {
            pts.sort_by(|a, b| a.x.total_cmp(&b.x));
            // A t interval over few seeds can leave the metric's range; the
            // metric cannot.
            for p in pts.iter_mut() {
                p.ci =
                    p.ci.filter(|(a, b)| a.is_finite() && b.is_finite())
                        .map(|(a, b)| (a.clamp(lo, hi), b.clamp(lo, hi)));
                p.seeds.retain(|(_, v)| v.is_finite());
            }
        });
        // A point without a finite mean (a failed measurement) is left out,
        // not its whole series.
        series
            .values_mut()
            .for_each(|pts| pts.retain(|p| p.mean.is_finite()));
        series.retain(|_, pts| !pts.is_empty());
    }

    /// Writes one figure (SVG and PNG) unless it would be empty.
    pub fn emit(
        &mut self,
        spec: &MetricSpec,
        slice: &str,
        prefix: &str,
        x: XAxis,
        mut series: BTreeMap<String, Vec<Point>>,
    ) -> Result<(), ReportError> {
        let metric = spec.name.as_str();
        Self::tidy(spec, &mut series);
        if series.is_empty() {
            return Ok(());
        }
        let name = if slice.is_empty() {
            format!("{prefix}{metric}")
        } else {
            format!("{prefix}{metric}_{}", slice.replace('=', ""))
        };
        let what = match prefix {
            "" => "",
            "configs_" => ", variants without a memory-size sweep",
            _ => ", training curve",
        };
        let title = if slice.is_empty() {
            format!("{}: {metric}{what}", self.suite)
        } else {
            format!("{}: {metric} ({slice}){what}", self.suite)
        };
        self.write(spec, &name, &title, slice, x, series)
    }

    /// A figure of a metric against a slice's value or a cost: `name` as
    /// given, `what` (`by load`) and the memory size (if any) in the title;
    /// `slice` the one slice it draws, if it draws one (its reference
    /// levels).
    #[allow(clippy::too_many_arguments)]
    pub fn emit_named(
        &mut self,
        spec: &MetricSpec,
        name: &str,
        what: &str,
        size: &str,
        slice: &str,
        x: XAxis,
        mut series: BTreeMap<String, Vec<Point>>,
    ) -> Result<(), ReportError> {
        Self::tidy(spec, &mut series);
        if series.is_empty() {
            return Ok(());
        }
        let title = if size.is_empty() {
            format!("{}: {} {what}", self.suite, spec.name)
        } else {
            format!("{}: {} {what}, {size} slots", self.suite, spec.name)
        };
        self.write(spec, name, &title, slice, x, series)
    }

    /// Writes SVG and PNG of a figure; `slice` picks the reference levels
    /// that hold for it (those of every slice, and those of `slice`).
    fn write(
        &mut self,
        spec: &MetricSpec,
        name: &str,
        title: &str,
        slice: &str,
        x: XAxis,
        series: BTreeMap<String, Vec<Point>>,
    ) -> Result<(), ReportError> {
        let most = crate::layout::MAX_SERIES;
        if series.len() <= most {
            return self.write_one(spec, name, title, slice, x, series);
        }
        // More series than a reader can tell apart: side-by-side values are
        // left to the summary's table (it has every config); lines are
        // drawn in parts of at most `most`, in legend order.
        if matches!(x, XAxis::Groups { lines: false, .. }) {
            return Ok(());
        }
        let names: Vec<String> = in_order(&self.order, series.keys())
            .into_iter()
            .cloned()
            .collect();
        let parts = names.len().div_ceil(most);
        for (i, chunk) in names.chunks(most).enumerate() {
            let part: BTreeMap<String, Vec<Point>> = chunk
                .iter()
                .map(|n| (n.clone(), series[n].clone()))
                .collect();
            let name = format!("{name}_part{}", i + 1);
            let title = format!("{title} ({} of {parts})", i + 1);
            self.write_one(spec, &name, &title, slice, x.clone(), part)?;
        }
        Ok(())
    }

    /// Writes SVG and PNG of one figure of at most eight series.
    fn write_one(
        &mut self,
        spec: &MetricSpec,
        name: &str,
        title: &str,
        slice: &str,
        x: XAxis,
        series: BTreeMap<String, Vec<Point>>,
    ) -> Result<(), ReportError> {
        let title = title.to_string();
        let name = name.to_string();
        let svg = self.dir.join(format!("{name}.svg"));
        let png = self.dir.join(format!("{name}.png"));
        std::fs::create_dir_all(self.dir).map_err(|source| FileError::Io {
            path: self.dir.to_path_buf(),
            source,
        })?;
        let plot_err = |e: String| ReportError::Plot {
            name: name.clone(),
            message: e,
        };
        let y_label = spec.label();
        let levels: Vec<Level> = spec
            .chance
            .map(|c| Level {
                label: format!("chance ({})", tick(c)),
                value: c,
                dotted: false,
            })
            .into_iter()
            .chain(
                spec.references
                    .iter()
                    .filter(|r| r.slice.is_empty() || r.slice == slice)
                    .map(|r| Level {
                        label: format!("{} ({})", r.label, tick(r.value)),
                        value: r.value,
                        dotted: true,
                    }),
            )
            .filter(|l| l.value.is_finite())
            .collect();
        let look = Look {
            title: &title,
            y_label: &y_label,
            // A log axis over less than a decade labels one or two ticks.
            log_y: spec.log_axis && spans_decade(&series),
            lower: spec.lower,
            upper: spec.upper,
            levels: &levels,
            x: &x,
            order: &self.order,
        };
        let svg_root = SVGBackend::new(&svg, self.pixels).into_drawing_area();
        present(svg_root, &look, &series, &self.colour).map_err(plot_err)?;
        let png_root = BitMapBackend::new(&png, self.pixels).into_drawing_area();
        present(png_root, &look, &series, &self.colour).map_err(plot_err)?;
        self.written.push(svg);
        self.written.push(png);
        Ok(())
    }
}

/// Series names as a legend shows them, each at most `fit` characters
/// where that can be done without two reading the same: first without
/// the words every one of them shares (a legend of configs that differ in
/// one parameter names that parameter only; names left empty are kept
/// whole), then, while one is longer than `fit`, with structured values
/// shown by their kind (`task=recall(keys=16,…)` as `task=recall`) or
/// else without their fields' names (`append(fifo,chunk(2))`), then
/// without whole parameters that the others determine (`steps=3000` where
/// `base_steps` already tells the configs apart), longest first. What
/// still does not fit loses its middle when drawn.
fn distinct_parts(names: &[&String], fit: usize) -> Vec<String> {
    let mut words: Vec<Vec<String>> = names
        .iter()
        .map(|n| n.split(' ').map(str::to_string).collect())
        .collect();
    let shared: Vec<String> = match words.split_first() {
        Some((first, rest)) if !rest.is_empty() => first
            .iter()
            .filter(|w| rest.iter().all(|n| n.contains(w)))
            .cloned()
            .collect(),
        _ => Vec::new(),
    };
    for n in words.iter_mut() {
        let kept: Vec<String> = n.iter().filter(|w| !shared.contains(w)).cloned().collect();
        if !kept.is_empty() {
            *n = kept;
        }
    }
    let too_long = |w: &[Vec<String>]| w.iter().any(|n| n.join(" ").chars().count() > fit);
    for shorter in [without_fields, without_field_names] {
        if !too_long(&words) {
            break;
        }
        let next: Vec<Vec<String>> = words
            .iter()
            .map(|n| n.iter().map(|w| shorter(w)).collect())
            .collect();
        if all_distinct(&next) {
            words = next;
        }
    }
    while too_long(&words) {
        let Some(next) = droppable(&words) else { break };
        words = next;
    }
    words.iter().map(|n| n.join(" ")).collect()
}

/// `task=recall(keys=16,…)` as `task=recall`: a structured value by its kind.
fn without_fields(word: &str) -> String {
    match word.split_once('(') {
        Some((head, _)) if word.ends_with(')') => head.to_string(),
        _ => word.to_string(),
    }
}

/// `append(evict=fifo,source=chunk(size=2))` as `append(fifo,chunk(2))`:
/// a structured value's fields by their values alone.
fn without_field_names(word: &str) -> String {
    let mut out = String::with_capacity(word.len());
    let mut rest = word;
    let mut depth = 0;
    while let Some(c) = rest.chars().next() {
        let at_field = depth > 0 && (out.ends_with('(') || out.ends_with(','));
        let name_len = rest
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_' || c == '.'))
            .filter(|&n| n > 0 && rest[n..].starts_with('='));
        if let (true, Some(n)) = (at_field, name_len) {
            rest = &rest[n + 1..];
            continue;
        }
        depth += match c {
            '(' => 1,
            ')' => -1,
            _ => 0,
        };
        out.push(c);
        rest = &rest[c.len_utf8()..];
    }
    out
}

/// Labels cut to `fit` characters with … in place of their middle; where
/// the even cut makes two read the same, the cut moves (more of the head
/// or of the tail kept) to a place where they differ, if one exists.
fn ellipsized(labels: &[String], fit: usize) -> Vec<String> {
    let cut = |t: &str, tail: usize| {
        let chars: Vec<char> = t.chars().collect();
        if chars.len() <= fit {
            return t.to_string();
        }
        let head = fit - 1 - tail;
        let (a, b) = (&chars[..head], &chars[chars.len() - tail..]);
        format!(
            "{}…{}",
            a.iter().collect::<String>(),
            b.iter().collect::<String>()
        )
    };
    let even = fit.saturating_sub(1) - fit.saturating_sub(1) / 2;
    let tails = (0..fit.saturating_sub(1)).map(|d| {
        // even, even + 1, even - 1, even + 2, …
        let step = d.div_ceil(2);
        if d % 2 == 1 {
            even + step
        } else {
            even.saturating_sub(step)
        }
    });
    let cuts = |tail: usize| labels.iter().map(|l| cut(l, tail)).collect::<Vec<_>>();
    tails
        .filter(|&t| t < fit)
        .map(cuts)
        .find(|c| c.iter().collect::<std::collections::BTreeSet<_>>().len() == labels.len())
        .unwrap_or_else(|| cuts(even))
}

/// Whether no two labels (as word lists) read the same or are empty.
fn all_distinct(words: &[Vec<String>]) -> bool {
    let set: std::collections::BTreeSet<String> = words.iter().map(|n| n.join(" ")).collect();
    set.len() == words.len() && words.iter().all(|n| !n.is_empty())
}

/// The labels without the longest parameter (`name=…`) whose removal
/// leaves them distinct; None when every parameter is needed.
fn droppable(words: &[Vec<String>]) -> Option<Vec<Vec<String>>> {
    let key = |w: &str| w.split_once('=').map(|(k, _)| k.to_string());
    let mut keys: BTreeMap<String, usize> = BTreeMap::new();
    for w in words.iter().flatten() {
        if let Some(k) = key(w) {
            *keys.entry(k).or_default() += w.chars().count();
        }
    }
    let mut keys: Vec<(String, usize)> = keys.into_iter().collect();
    keys.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
    keys.into_iter().find_map(|(k, _)| {
        let next: Vec<Vec<String>> = words
            .iter()
            .map(|n| {
                n.iter()
                    .filter(|w| key(w).as_ref() != Some(&k))
                    .cloned()
                    .collect()
            })
            .collect();
        all_distinct(&next).then_some(next)
    })
}

/// Whether the positive values a figure draws span a factor of 10.
fn spans_decade(series: &BTreeMap<String, Vec<Point>>) -> bool {
    let ys = series.values().flatten().flat_map(|p| {
        let (lo, hi) = p.ci.unwrap_or((p.mean, p.mean));
        [p.mean, lo, hi]
    });
    let (lo, hi) = ys
        .filter(|y| y.is_finite() && *y > 0.0)
        .fold((f64::INFINITY, 0.0_f64), |(a, b), y| (a.min(y), b.max(y)));
    hi / lo >= 10.0
}

/// Orders labels as people read them: runs of digits (with a decimal
/// point) compare as numbers, the rest as text — `d=64` before `d=128`,
/// `probe 8` before `probe 16`.
fn natural_cmp(a: &str, b: &str) -> std::cmp::Ordering {
    fn chunks(s: &str) -> Vec<Result<f64, &str>> {
        let mut out = Vec::new();
        let mut rest = s;
        while !rest.is_empty() {
            let digits = rest
                .char_indices()
                .take_while(|&(i, c)| c.is_ascii_digit() || (c == '.' && i > 0))
                .count();
            let (head, tail) = if digits > 0 {
                rest.split_at(digits)
            } else {
                let text = rest
                    .char_indices()
                    .find(|&(_, c)| c.is_ascii_digit())
                    .map_or(rest.len(), |(i, _)| i);
                rest.split_at(text)
            };
            out.push(if digits > 0 {
                head.trim_end_matches('.').parse::<f64>().map_err(|_| head)
            } else {
                Err(head)
            });
            rest = tail;
        }
        out
    }
    let (x, y) = (chunks(a), chunks(b));
    for (p, q) in x.iter().zip(&y) {
        let o = match (p, q) {
            (Ok(m), Ok(n)) => m.total_cmp(n),
            (Err(s), Err(t)) => s.cmp(t),
            (Ok(_), Err(_)) => std::cmp::Ordering::Less,
            (Err(_), Ok(_)) => std::cmp::Ordering::Greater,
        };
        if o.is_ne() {
            return o;
        }
    }
    x.len().cmp(&y.len()).then_with(|| a.cmp(b))
}

/// "1e3" at powers of ten, nothing in between (log axes label every tick).
fn decade_label(x: f64) -> String {
    let l = x.log10();
    if x > 0.0 && (l - l.round()).abs() < 1e-6 {
        format!("1e{}", l.round() as i64)
    } else {
        String::new()
    }
}

struct Look<'a> {
    title: &'a str,
    y_label: &'a str,
    log_y: bool,
    lower: Option<f64>,
    upper: Option<f64>,
    /// Horizontal reference lines: chance, then the spec's references.
    levels: &'a [Level],
    x: &'a XAxis,
    /// Declared series order, else natural.
    order: &'a [String],
}

/// Series names in the order a figure lists them: as declared where the
/// figure has an order, else natural (d=64 before d=128).
fn in_order<'s>(order: &[String], names: impl Iterator<Item = &'s String>) -> Vec<&'s String> {
    let mut names: Vec<&String> = names.collect();
    let at = |n: &String| order.iter().position(|o| o == n).unwrap_or(usize::MAX);
    names.sort_by(|a, b| at(a).cmp(&at(b)).then_with(|| natural_cmp(a, b)));
    names
}

/// A labelled horizontal line across a figure.
struct Level {
    label: String,
    value: f64,
    /// Dotted (a reference) or dashed (chance).
    dotted: bool,
}

impl Level {
    /// Dash and gap lengths of the line in the chart.
    fn pattern(&self) -> (u32, u32) {
        if self.dotted { (2, 3) } else { (6, 4) }
    }
    /// The legend swatch's dashes (pixel spans), drawn to match.
    fn swatch(&self) -> &'static [(i32, i32)] {
        if self.dotted {
            &[(4, 6), (9, 11), (14, 16), (19, 21)]
        } else {
            &[(4, 10), (14, 20)]
        }
    }
}

/// Draws one figure on `root` and writes it out.
fn present<DB: DrawingBackend>(
    root: DrawingArea<DB, Shift>,
    look: &Look<'_>,
    series: &BTreeMap<String, Vec<Point>>,
    colour: &BTreeMap<String, RGBColor>,
) -> Result<(), String> {
    draw(&root, look, series, colour)?;
    root.present().map_err(|e| e.to_string())
}

/// A drawing error as the message figures report.
fn plot_err<E: std::error::Error + Send + Sync>(e: DrawingAreaErrorKind<E>) -> String {
    e.to_string()
}

/// Draws one figure: the title across it, the chart, and the legend in a
/// strip to its right (never over the data).
fn draw<DB: DrawingBackend>(
    root: &DrawingArea<DB, Shift>,
    look: &Look<'_>,
    series: &BTreeMap<String, Vec<Point>>,
    colour: &BTreeMap<String, RGBColor>,
) -> Result<(), String> {
    root.fill(&WHITE).map_err(plot_err)?;
    let xs = series.values().flatten().map(|p| p.x);
    let (x0, x1) = xs.fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), x| {
        (a.min(x), b.max(x))
    });
    let Some((y0, y1)) = y_range(look, series) else {
        return Ok(());
    };
    let (x0, x1, x_desc) = x_range(look.x, x0, x1);
    let configs = matches!(look.x, XAxis::Configs(_));
    let legend = !configs || !look.levels.is_empty();
    let entries = Legend::of(root.dim_in_pixel().0, look, series);
    let legend_w = if legend { entries.width } else { 0 };
    // The title spans the figure; the chart and its legend share the rest.
    let title = fit(
        root,
        (look.title, 22),
        root.dim_in_pixel().0.saturating_sub(8),
    );
    let area = root.titled(&title, ("sans-serif", 22)).map_err(plot_err)?;
    let (w, _) = area.dim_in_pixel();
    let (chart_area, legend_area) = area.split_horizontally(w - legend_w);
    let mut builder = ChartBuilder::on(&chart_area);
    builder
        .margin(16)
        .x_label_area_size(44)
        .y_label_area_size(72);
    // The y axis's name runs along the chart's height, less its margins
    // and the x labels' strip; a longer one is shortened, not clipped.
    let along = chart_area.dim_in_pixel().1.saturating_sub(2 * 16 + 44);
    let y_desc = fit(&chart_area, (look.y_label, 16), along);
    let frame = Frame {
        look,
        series,
        colour,
        x: (x0, x1),
        y: (y0, y1),
        x_desc,
        y_desc: &y_desc,
    };
    let log_x = matches!(
        look.x,
        XAxis::Slots | XAxis::Slice { log: true, .. } | XAxis::Metric { log: true, .. }
    );
    // Log axes take their ticks from `ticks::log_ticks` (at least three
    // labelled, never the same twice).
    let (lx, ly) = (log_ticks(x0, x1), log_ticks(y0, y1));
    match (log_x, look.log_y) {
        (true, true) => frame.plot(
            builder
                .build_cartesian_2d(
                    (x0..x1).log_scale().with_key_points(lx),
                    (y0..y1).log_scale().with_key_points(ly),
                )
                .map_err(plot_err)?,
        )?,
        (true, false) => frame.plot(
            builder
                .build_cartesian_2d((x0..x1).log_scale().with_key_points(lx), y0..y1)
                .map_err(plot_err)?,
        )?,
        (false, true) => frame.plot(
            builder
                .build_cartesian_2d(x0..x1, (y0..y1).log_scale().with_key_points(ly))
                .map_err(plot_err)?,
        )?,
        (false, false) => frame.plot(
            builder
                .build_cartesian_2d(x0..x1, y0..y1)
                .map_err(plot_err)?,
        )?,
    }
    if legend {
        draw_legend(&legend_area, &entries, look, colour)?;
    }
    Ok(())
}

/// The y range: every mean, interval end, seed and level, padded (by a
/// factor on a log axis), kept within the metric's bounds, from zero for
/// side-by-side values without bounds. None when nothing is finite.
fn y_range(look: &Look<'_>, series: &BTreeMap<String, Vec<Point>>) -> Option<(f64, f64)> {
    let log_y = look.log_y;
    let ys = series.values().flatten().flat_map(|p| {
        let (lo, hi) = p.ci.unwrap_or((p.mean, p.mean));
        [p.mean, lo, hi]
            .into_iter()
            .chain(p.seeds.iter().map(|&(_, v)| v))
    });
    let ys: Vec<f64> = ys
        .chain(look.levels.iter().map(|l| l.value))
        .filter(|y| y.is_finite() && (!log_y || *y > 0.0))
        .collect();
    let (mut y0, mut y1) = ys
        .iter()
        .fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), &y| {
            (a.min(y), b.max(y))
        });
    if !y0.is_finite() {
        return None;
    }
    if log_y {
        return Some((y0 / 1.5, y1 * 1.5));
    }
    let pad = ((y1 - y0) * 0.08).max(0.02);
    y0 -= pad;
    y1 += pad;
    if let Some(lo) = look.lower {
        y0 = y0.max(lo);
    }
    if let Some(hi) = look.upper {
        let span = hi - look.lower.unwrap_or(0.0);
        y1 = y1.min(hi + 0.02 * span.abs().max(f64::MIN_POSITIVE));
    }
    if matches!(look.x, XAxis::Configs(_) | XAxis::Groups { .. })
        && y0 > 0.0
        && look.upper.is_none()
    {
        // Side-by-side values read best from zero.
        y0 = 0.0;
    }
    Some((y0, y1))
}

/// The x range of the data padded for its axis, and the axis's name.
fn x_range(x: &XAxis, x0: f64, x1: f64) -> (f64, f64, &str) {
    match x {
        XAxis::Slots => (x0 / 1.3, x1 * 1.3, "memory slots"),
        XAxis::Step => (0.0, x1 * 1.03, "training step"),
        XAxis::Configs(names) => (-0.6, names.len() as f64 - 0.4, ""),
        XAxis::Groups { names, key, .. } => (-0.6, names.len() as f64 - 0.4, key.as_str()),
        XAxis::Slice { key, log: true } => (x0 / 1.3, x1 * 1.3, key.as_str()),
        XAxis::Slice { key, log: false } => {
            let pad = ((x1 - x0) * 0.05).max(0.05);
            (x0 - pad, x1 + pad, key.as_str())
        }
        XAxis::Metric { label, log: true } => (x0 / 1.3, x1 * 1.3, label.as_str()),
        XAxis::Metric { label, log: false } => {
            let pad = ((x1 - x0) * 0.05).max(x1.abs() * 0.05).max(1e-9);
            (x0 - pad, x1 + pad, label.as_str())
        }
    }
}

/// A figure's legend: its series in the order listed, the label each
/// shows, and the strip's width.
struct Legend<'s> {
    names: Vec<&'s String>,
    shown: Vec<String>,
    width: u32,
}

impl<'s> Legend<'s> {
    /// The strip is as wide as the longest label needs (13 px type: about
    /// 7 px a character, plus the swatch), at most 40% of the figure's
    /// width `w`; labels are shortened to fit it (`distinct_parts`).
    fn of(w: u32, look: &Look<'_>, series: &'s BTreeMap<String, Vec<Point>>) -> Self {
        let cap = w * 2 / 5;
        let names = in_order(look.order, series.keys());
        let shown = distinct_parts(&names, (cap.saturating_sub(40) / 7) as usize);
        let longest = shown
            .iter()
            .chain(look.levels.iter().map(|l| &l.label))
            .map(|k| k.chars().count())
            .max()
            .unwrap_or(0);
        let width = (longest as u32 * 7 + 40).min(cap);
        Legend {
            names,
            shown,
            width,
        }
    }
}

/// What the chart of one figure draws, whatever its axes' scales.
struct Frame<'a> {
    look: &'a Look<'a>,
    series: &'a BTreeMap<String, Vec<Point>>,
    colour: &'a BTreeMap<String, RGBColor>,
    x: (f64, f64),
    y: (f64, f64),
    x_desc: &'a str,
    y_desc: &'a str,
}

/// `text` in type of `size`, shortened with … to `room` pixels.
fn fit<DB: DrawingBackend>(
    area: &DrawingArea<DB, Shift>,
    (text, size): (&str, u32),
    room: u32,
) -> String {
    let font: TextStyle<'_> = ("sans-serif", size).into_font().into();
    let wide = |t: &str| area.estimate_text_size(t, &font).map_or(0, |(w, _)| w);
    if wide(text) <= room {
        return text.to_string();
    }
    let chars: Vec<char> = text.chars().collect();
    (1..chars.len())
        .rev()
        .map(|n| format!("{}…", chars[..n].iter().collect::<String>().trim_end()))
        .find(|t| wide(t) <= room)
        .unwrap_or_default()
}

impl Frame<'_> {
    /// The x tick label: a decade, a number, a step or a config's name.
    fn x_label(&self, x: f64) -> String {
        match self.look.x {
            // Under three decades a log axis has one or two powers of ten:
            // label its other ticks too.
            XAxis::Slots if self.x.1 / self.x.0 < 1000.0 => tick(x),
            XAxis::Slots => decade_label(x),
            XAxis::Slice { .. } | XAxis::Metric { .. } => tick(x),
            XAxis::Step => format!("{x:.0}"),
            XAxis::Configs(names) | XAxis::Groups { names, .. } => {
                let i = x.round();
                if (x - i).abs() < 1e-6 && i >= 0.0 {
                    names.get(i as usize).cloned().unwrap_or_default()
                } else {
                    String::new()
                }
            }
        }
    }

    /// The x tick labels' type size: 14 px, smaller (down to 9) where
    /// named categories would otherwise run into each other (eight query
    /// types at one column's width), at about 0.6 em a character.
    fn category_label_px(&self, width: u32) -> u32 {
        let (XAxis::Configs(names) | XAxis::Groups { names, .. }) = self.look.x else {
            return 14;
        };
        let per_group = width as f64 / names.len().max(1) as f64;
        let widest = names
            .windows(2)
            .map(|w| (w[0].chars().count() + w[1].chars().count()) as f64 / 2.0)
            .fold(0.0, f64::max);
        if widest == 0.0 {
            return 14;
        }
        let fits = (0.9 * per_group / (0.6 * widest)).floor() as u32;
        fits.clamp(9, 14)
    }

    /// The mesh, every series (in natural order), and the levels.
    fn plot<DB, X, Y>(
        &self,
        mut chart: ChartContext<'_, DB, Cartesian2d<X, Y>>,
    ) -> Result<(), String>
    where
        DB: DrawingBackend,
        X: Ranged<ValueType = f64> + ValueFormatter<f64>,
        Y: Ranged<ValueType = f64> + ValueFormatter<f64>,
    {
        let (log_y, (y0, y1)) = (self.look.log_y, self.y);
        let powers = log_y && (y0 < 1e-3 || y1 > 1e5);
        let configs = matches!(self.look.x, XAxis::Configs(_) | XAxis::Groups { .. });
        let joined = matches!(self.look.x, XAxis::Groups { lines: true, .. });
        let x_labels = match self.look.x {
            XAxis::Configs(names) | XAxis::Groups { names, .. } => names.len().max(1) * 2 + 1,
            _ => 10,
        };
        let label_px = self.category_label_px(chart.plotting_area().dim_in_pixel().0);
        let mut mesh = chart.configure_mesh();
        if configs {
            // Configs are categories: no grid between them.
            mesh.disable_x_mesh();
        }
        mesh.x_labels(x_labels)
            .x_label_formatter(&|x: &f64| self.x_label(*x))
            .y_label_formatter(&|y: &f64| {
                if log_y {
                    log_tick(*y, powers)
                } else {
                    tick(*y)
                }
            })
            .x_desc(self.x_desc)
            .y_desc(self.y_desc)
            .label_style(("sans-serif", 14))
            .x_label_style(("sans-serif", label_px))
            .axis_desc_style(("sans-serif", 16))
            .draw()
            .map_err(plot_err)?;
        // Legends in natural order (d=64 before d=128), not the map's.
        for name in in_order(self.look.order, self.series.keys()) {
            let pts = &self.series[name];
            let c = self.colour[name];
            if configs && !joined {
                self.points(&mut chart, pts, c)?;
            } else {
                self.line(&mut chart, name, pts, c)?;
            }
        }
        for level in self.look.levels {
            let (dash, gap) = level.pattern();
            let c = level.value;
            if log_y && c <= 0.0 {
                continue;
            }
            chart
                .draw_series(DashedLineSeries::new(
                    vec![(self.x.0, c), (self.x.1, c)],
                    dash,
                    gap,
                    BLACK.mix(0.55).stroke_width(1),
                ))
                .map_err(plot_err)?;
        }
        Ok(())
    }

    /// A config's mean with its error bar, each seed as a ring beside it.
    fn points<DB, X, Y>(
        &self,
        chart: &mut ChartContext<'_, DB, Cartesian2d<X, Y>>,
        pts: &[Point],
        c: RGBColor,
    ) -> Result<(), String>
    where
        DB: DrawingBackend,
        X: Ranged<ValueType = f64>,
        Y: Ranged<ValueType = f64>,
    {
        chart
            .draw_series(pts.iter().filter_map(|p| {
                p.ci.map(|(lo, hi)| {
                    ErrorBar::new_vertical(p.x, lo, p.mean, hi, c.stroke_width(2), 14)
                })
            }))
            .map_err(plot_err)?;
        chart
            .draw_series(
                pts.iter()
                    .map(|p| Circle::new((p.x, p.mean), 5, c.filled())),
            )
            .map_err(plot_err)?;
        // Each seed as a ring to the right of its mean, within the mean's
        // own share of a group where series sit side by side.
        let dx = match self.look.x {
            XAxis::Groups { .. } => 0.2 / self.series.len().max(1) as f64,
            _ => 0.12,
        };
        chart
            .draw_series(pts.iter().flat_map(|p| {
                p.seeds
                    .iter()
                    .map(move |&(_, v)| Circle::new((p.x + dx, v), 4, c.mix(0.8).stroke_width(1)))
            }))
            .map_err(plot_err)?;
        Ok(())
    }

    /// A series as a line over its interval band, each seed as a thin line
    /// under it.
    fn line<DB, X, Y>(
        &self,
        chart: &mut ChartContext<'_, DB, Cartesian2d<X, Y>>,
        name: &str,
        pts: &[Point],
        c: RGBColor,
    ) -> Result<(), String>
    where
        DB: DrawingBackend,
        X: Ranged<ValueType = f64>,
        Y: Ranged<ValueType = f64>,
    {
        let log_y = self.look.log_y;
        let band: Vec<(f64, f64)> = pts
            .iter()
            .filter_map(|p| p.ci.map(|(_, hi)| (p.x, hi)))
            .chain(
                pts.iter()
                    .rev()
                    .filter_map(|p| p.ci.map(|(lo, _)| (p.x, lo))),
            )
            .filter(|(_, y)| !log_y || *y > 0.0)
            .collect();
        if band.len() >= 4 {
            chart
                .draw_series(std::iter::once(Polygon::new(band, c.mix(0.18).filled())))
                .map_err(plot_err)?;
        }
        // Each seed as a thin line under the mean's.
        let mut per_seed: BTreeMap<u64, Vec<(f64, f64)>> = BTreeMap::new();
        for p in pts {
            for &(seed, v) in &p.seeds {
                if v.is_finite() && (!log_y || v > 0.0) {
                    per_seed.entry(seed).or_default().push((p.x, v));
                }
            }
        }
        chart
            .draw_series(
                per_seed
                    .into_values()
                    .filter(|l| l.len() > 1)
                    .map(|l| PathElement::new(l, c.mix(0.45).stroke_width(1))),
            )
            .map_err(plot_err)?;
        let line: Vec<(f64, f64)> = pts
            .iter()
            .filter(|p| !log_y || p.mean > 0.0)
            .map(|p| (p.x, p.mean))
            .collect();
        chart
            .draw_series(LineSeries::new(line.clone(), c.stroke_width(2)))
            .map_err(plot_err)?
            .label(name)
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 18, y)], c.stroke_width(3)));
        chart
            .draw_series(
                line.iter()
                    .map(|&(x, y)| Circle::new((x, y), 3, c.filled())),
            )
            .map_err(plot_err)?;
        Ok(())
    }
}

/// The legend beside the chart, so that it never covers data: a swatch
/// and the label per series, in natural order, then the levels with their
/// own dashes; labels too long for the strip are shortened.
fn draw_legend<DB: DrawingBackend>(
    area: &DrawingArea<DB, Shift>,
    legend: &Legend<'_>,
    look: &Look<'_>,
    colour: &BTreeMap<String, RGBColor>,
) -> Result<(), String> {
    let fit = (legend.width.saturating_sub(40) / 7).max(4) as usize;
    // Long names lose their middle, where they do not differ.
    let shown = ellipsized(&legend.shown, fit);
    let shorten = |t: &String| ellipsized(std::slice::from_ref(t), fit).remove(0);
    // (label, stroke, swatch spans): a solid swatch per series, the
    // level's own dashes after them.
    type Entry = (String, ShapeStyle, &'static [(i32, i32)]);
    let mut entries: Vec<Entry> = legend
        .names
        .iter()
        .zip(shown)
        .map(|(n, s)| (s, colour[*n].stroke_width(3), &[(4, 22)][..]))
        .collect();
    for level in look.levels {
        entries.push((
            shorten(&level.label),
            BLACK.mix(0.55).stroke_width(1),
            level.swatch(),
        ));
    }
    let font = ("sans-serif", 13).into_font();
    for (i, (text, style, segments)) in entries.into_iter().enumerate() {
        let y = 24 + 18 * i as i32;
        for &(a, b) in segments {
            area.draw(&PathElement::new(vec![(a, y), (b, y)], style))
                .map_err(plot_err)?;
        }
        area.draw(&Text::new(text, (28, y - 7), font.clone()))
            .map_err(plot_err)?;
    }
    Ok(())
}

#[cfg(test)]
mod natural_order_tests {
    #[test]
    fn labels_sort_with_numbers_as_numbers() {
        let mut v = vec![
            "d=128",
            "d=64",
            "probe 16",
            "probe 8",
            "probe 2",
            "dense",
            "d=64 k=32",
        ];
        v.sort_by(|a, b| super::natural_cmp(a, b));
        assert_eq!(
            v,
            [
                "d=64",
                "d=64 k=32",
                "d=128",
                "dense",
                "probe 2",
                "probe 8",
                "probe 16"
            ]
        );
    }
}

#[cfg(test)]
mod level_and_pooling_tests {
    use super::*;

    use crate::summary::test_row as row;

    #[test]
    fn ticks_drop_padding_and_log_axes_do_not_mix_notations() {
        assert_eq!(tick(0.25), "0.25");
        assert_eq!(tick(12000.0), "12000");
        assert_eq!(tick(2.5e-5), "2.5e-5");
        assert_eq!(tick(1e-4), "1e-4");
        // An axis past 1e-3 labels every decade as a power, 1 included.
        assert_eq!(log_tick(0.001, true), "1e-3");
        assert_eq!(log_tick(1.0, true), "1e0");
        assert_eq!(log_tick(0.001, false), "0.001");
    }

    #[test]
    fn configs_that_cannot_differ_are_pooled_and_others_kept() {
        let params = vec!["retention.slots".to_string(), "retention.write".to_string()];
        let specs = vec![
            MetricSpec::latency_us("read_us", "read").independent_of(&["retention.write"]),
            MetricSpec::latency_us("write_us", "write"),
        ];
        let rows = vec![
            row(
                "read_us",
                "",
                &["100", "{\"kind\":\"append\"}"],
                &[1.0, 2.0],
            ),
            row(
                "read_us",
                "",
                &["100", "{\"kind\":\"attention\"}"],
                &[3.0, 4.0],
            ),
            row(
                "read_us",
                "",
                &["1000", "{\"kind\":\"append\"}"],
                &[9.0, 9.0],
            ),
            row(
                "write_us",
                "",
                &["100", "{\"kind\":\"append\"}"],
                &[5.0, 5.0],
            ),
            row(
                "write_us",
                "",
                &["100", "{\"kind\":\"attention\"}"],
                &[7.0, 7.0],
            ),
        ];
        let out = pool_independent(&params, &rows, &specs);
        // The write rows untouched and first; one pooled read row per size.
        assert_eq!(out[..2], rows[3..]);
        assert_eq!(out.len(), 4);
        let p100 = &out[2];
        assert_eq!(p100.params, ["100", POOLED]);
        assert_eq!((p100.n, p100.mean), (4, 2.5));
        assert_eq!(
            p100.seeds,
            [(0, 1.0), (1, 2.0), (2, 3.0), (3, 4.0)],
            "seeds renumbered so a seed's line follows one config"
        );
        assert!(p100.ci95.is_some_and(|(lo, hi)| lo < 1.0 && hi > 4.0));
        assert_eq!((out[3].n, out[3].params[0].as_str()), (2, "1000"));
    }

    #[test]
    fn reference_levels_are_drawn_labelled_for_their_slice_only() {
        let dir = std::env::temp_dir().join(format!("retbench-levels-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let spec = MetricSpec::share("accuracy", "accuracy")
            .chance(0.0625)
            .reference("values without keys", "gap=1", 0.258)
            .reference("everywhere", "", 0.5);
        let rows = vec![
            row("accuracy", "gap=0", &[], &[0.9, 0.95]),
            row("accuracy", "gap=1", &[], &[0.4, 0.45]),
        ];
        let written =
            render_all(&dir, "t", &[], &rows, &[spec], &[], FigureSize::default()).unwrap();
        let text = |name: &str| {
            let path = written
                .iter()
                .find(|p| p.file_name().is_some_and(|f| f == name))
                .unwrap_or_else(|| panic!("{name} not drawn: {written:?}"));
            std::fs::read_to_string(path).unwrap()
        };
        let gap1 = text("accuracy_gap1.svg");
        assert!(gap1.contains("chance (0.0625)"));
        assert!(gap1.contains("values without keys (0.258)"));
        assert!(gap1.contains("everywhere (0.5)"));
        let gap0 = text("accuracy_gap0.svg");
        assert!(!gap0.contains("values without keys"));
        assert!(gap0.contains("everywhere (0.5)"));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}

#[cfg(test)]
mod legend_tests {
    use super::distinct_parts;

    fn shown(names: &[&str], fit: usize) -> Vec<String> {
        let owned: Vec<String> = names.iter().map(|n| n.to_string()).collect();
        distinct_parts(&owned.iter().collect::<Vec<_>>(), fit)
    }

    #[test]
    fn shared_words_go_first_and_short_labels_stay_whole() {
        assert_eq!(
            shown(&["write=append d=64", "write=append d=128"], 40),
            ["d=64", "d=128"]
        );
        assert_eq!(shown(&["same", "same"], 40), ["same", "same"]);
    }

    #[test]
    fn long_labels_lose_fields_and_determined_parameters_but_stay_distinct() {
        // The frozen suite's six configs: two tasks, three regimes.
        let names = [
            "task=recall(keys=16,pairs=8) frozen=false base_steps=null steps=3000",
            "task=recall(keys=16,pairs=8) frozen=true base_steps=1500 steps=1500",
            "task=recall(keys=16,pairs=8) frozen=false base_steps=1500 steps=1500",
            "task=entity(entities=32) frozen=false base_steps=null steps=3000",
            "task=entity(entities=32) frozen=true base_steps=1500 steps=1500",
            "task=entity(entities=32) frozen=false base_steps=1500 steps=1500",
        ];
        let got = shown(&names, 40);
        assert_eq!(got[0], "task=recall frozen=false steps=3000");
        let set: std::collections::BTreeSet<&String> = got.iter().collect();
        assert_eq!(set.len(), names.len(), "{got:?}");
        assert!(got.iter().all(|g| g.chars().count() <= 40), "{got:?}");
        // Field values stay where the kind alone would not tell configs
        // apart; their names go.
        let same_kind = shown(
            &[
                "task=recall(keys=16,pairs=8) lr=0.003 batch=32 steps=1500",
                "task=recall(keys=32,pairs=12) lr=0.003 batch=32 steps=1500",
            ],
            10,
        );
        assert_eq!(same_kind[0], "task=recall(16,8)");
    }
}

#[cfg(test)]
mod shortening_tests {
    use super::{ellipsized, without_field_names};

    #[test]
    fn fields_keep_their_values_and_lose_their_names() {
        assert_eq!(
            without_field_names("write=append(evict=fifo,source=chunk(size=2))"),
            "write=append(fifo,chunk(2))"
        );
        assert_eq!(without_field_names("lr=0.003"), "lr=0.003");
    }

    #[test]
    fn the_cut_moves_to_where_labels_differ() {
        let labels = [
            "write=append(fifo,chunk(2)) gate=none".to_string(),
            "write=append(lru,chunk(2)) gate=none".to_string(),
        ];
        // An even cut keeps "write=ap" and "2)) gate=none": the same text.
        let got = ellipsized(&labels, 22);
        assert_ne!(got[0], got[1], "{got:?}");
        assert!(got.iter().all(|g| g.chars().count() == 22), "{got:?}");
        // Labels that fit stay whole.
        assert_eq!(ellipsized(&labels, 60), labels);
    }
}
