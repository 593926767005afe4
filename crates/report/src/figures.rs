//! Figures (plotters, SVG and PNG): one line per backend against the x
//! parameter (memory size), with a shaded 95% interval where there are
//! several seeds. Backends keep one colour, in one order, across every
//! figure of a report.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Once;

use plotters::coord::Shift;
use plotters::prelude::*;

use crate::ReportError;
use crate::summary::{SummaryRow, short_value};

/// The x axis every figure uses, when the suite varies it.
const X_PARAM: &str = "retention.slots";

/// (metric, log-scaled y, y label). One figure per slice of each metric.
/// Metrics in [0, 1] (see `BOUNDED`) have their axis and bands clipped there.
const FIGURES: &[(&str, bool, &str)] = &[
    ("read_us_p50", true, "read latency per query, p50 (µs)"),
    ("read_us_p99", true, "read latency per query, p99 (µs)"),
    ("write_us_p50", true, "write latency, p50 (µs)"),
    ("queries_per_s", true, "queries per second"),
    (
        "read_roofline_fraction",
        true,
        "fraction of the bandwidth roofline",
    ),
    ("recall_at_k", false, "recall@k vs exact dense"),
    (
        "attention_mass_recall",
        false,
        "share of dense attention mass selected",
    ),
    (
        "relative_output_error",
        true,
        "relative output error vs dense",
    ),
    ("assoc_accuracy", false, "associative recall accuracy"),
];

/// Metrics that are shares: a t interval over few seeds can leave [0, 1],
/// the metric cannot.
const BOUNDED: &[&str] = &["recall_at_k", "attention_mass_recall", "assoc_accuracy"];

/// Tableau 10: distinguishable, colour-blind aware.
const PALETTE: [RGBColor; 10] = [
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

struct Point {
    x: f64,
    mean: f64,
    ci: Option<(f64, f64)>,
}

/// Series label of a row: every parameter but x, shortened.
fn series_label(params: &[String], row: &SummaryRow, x_col: usize) -> String {
    let mut parts = Vec::new();
    if row.variant != "grid" {
        parts.push(row.variant.clone());
    }
    for (i, (name, value)) in params.iter().zip(&row.params).enumerate() {
        if i != x_col && !value.is_empty() {
            let leaf = name.rsplit('.').next().unwrap_or(name);
            parts.push(format!("{leaf}={}", short_value(value)));
        }
    }
    if parts.is_empty() {
        "all".into()
    } else {
        parts.join(" ")
    }
}

pub fn render_all(
    dir: &Path,
    suite: &str,
    params: &[String],
    rows: &[SummaryRow],
) -> Result<Vec<PathBuf>, ReportError> {
    let Some(x_col) = params.iter().position(|p| p == X_PARAM) else {
        return Ok(Vec::new());
    };
    register_font();
    // One colour per series, fixed across figures: sorted label order.
    let mut labels: Vec<String> = rows
        .iter()
        .map(|r| series_label(params, r, x_col))
        .collect();
    labels.sort();
    labels.dedup();
    let colour: BTreeMap<String, RGBColor> = labels
        .iter()
        .enumerate()
        .map(|(i, l)| (l.clone(), PALETTE[i % PALETTE.len()]))
        .collect();
    let mut written = Vec::new();
    for &(metric, log_y, y_label) in FIGURES {
        let mut slices: Vec<&str> = rows
            .iter()
            .filter(|r| r.metric == metric)
            .map(|r| r.slice.as_str())
            .collect();
        slices.sort();
        slices.dedup();
        for slice in slices {
            let mut series: BTreeMap<String, Vec<Point>> = BTreeMap::new();
            for r in rows
                .iter()
                .filter(|r| r.metric == metric && r.slice == slice && r.step.is_empty())
            {
                let Ok(x) = r.params[x_col].parse::<f64>() else {
                    continue;
                };
                series
                    .entry(series_label(params, r, x_col))
                    .or_default()
                    .push(Point {
                        x,
                        mean: r.mean,
                        ci: r.ci95,
                    });
            }
            series
                .values_mut()
                .for_each(|pts| pts.sort_by(|a, b| a.x.total_cmp(&b.x)));
            series.retain(|_, pts| pts.iter().all(|p| p.mean.is_finite()) && !pts.is_empty());
            if series.is_empty() {
                continue;
            }
            let name = if slice.is_empty() {
                metric.to_string()
            } else {
                format!("{metric}_{}", slice.replace('=', ""))
            };
            let title = if slice.is_empty() {
                format!("{suite}: {metric}")
            } else {
                format!("{suite}: {metric} ({slice})")
            };
            let svg = dir.join(format!("{name}.svg"));
            let png = dir.join(format!("{name}.png"));
            std::fs::create_dir_all(dir).map_err(|source| ReportError::Io {
                path: dir.to_path_buf(),
                source,
            })?;
            let plot_err = |e: String| ReportError::Plot {
                name: name.clone(),
                message: e,
            };
            let bounded = BOUNDED.contains(&metric);
            let svg_root = SVGBackend::new(&svg, (900, 600)).into_drawing_area();
            present(svg_root, &title, y_label, log_y, bounded, &series, &colour)
                .map_err(plot_err)?;
            let png_root = BitMapBackend::new(&png, (900, 600)).into_drawing_area();
            present(png_root, &title, y_label, log_y, bounded, &series, &colour)
                .map_err(plot_err)?;
            written.push(svg);
            written.push(png);
        }
    }
    Ok(written)
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

/// Draws one figure on `root` and writes it out.
fn present<DB: DrawingBackend>(
    root: DrawingArea<DB, Shift>,
    title: &str,
    y_label: &str,
    log_y: bool,
    bounded: bool,
    series: &BTreeMap<String, Vec<Point>>,
    colour: &BTreeMap<String, RGBColor>,
) -> Result<(), String> {
    draw(&root, title, y_label, log_y, bounded, series, colour)?;
    root.present().map_err(|e| e.to_string())
}

fn draw<DB: DrawingBackend>(
    root: &DrawingArea<DB, Shift>,
    title: &str,
    y_label: &str,
    log_y: bool,
    bounded: bool,
    series: &BTreeMap<String, Vec<Point>>,
    colour: &BTreeMap<String, RGBColor>,
) -> Result<(), String> {
    let e = |e: DrawingAreaErrorKind<DB::ErrorType>| e.to_string();
    root.fill(&WHITE).map_err(e)?;
    let xs = series.values().flatten().map(|p| p.x);
    let (x0, x1) = xs.fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), x| {
        (a.min(x), b.max(x))
    });
    let ys = series.values().flatten().flat_map(|p| {
        let (lo, hi) = p.ci.unwrap_or((p.mean, p.mean));
        [p.mean, lo, hi]
    });
    let ys: Vec<f64> = ys
        .filter(|y| y.is_finite() && (!log_y || *y > 0.0))
        .collect();
    let (mut y0, mut y1) = ys
        .iter()
        .fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), &y| {
            (a.min(y), b.max(y))
        });
    if !y0.is_finite() {
        return Ok(());
    }
    if log_y {
        y0 /= 1.5;
        y1 *= 1.5;
    } else {
        let pad = ((y1 - y0) * 0.08).max(0.02);
        y0 -= pad;
        y1 += pad;
        if bounded {
            (y0, y1) = (y0.max(0.0), y1.min(1.02));
        }
    }
    let (x0, x1) = (x0 / 1.3, x1 * 1.3);
    let mut builder = ChartBuilder::on(root);
    builder
        .caption(title, ("sans-serif", 22))
        .margin(16)
        .x_label_area_size(44)
        .y_label_area_size(72);
    macro_rules! plot {
        ($chart:expr) => {{
            let mut chart = $chart;
            chart
                .configure_mesh()
                .x_label_formatter(&|x: &f64| decade_label(*x))
                .y_label_formatter(&|y: &f64| crate::summary::fmt_num(*y))
                .x_desc("memory slots")
                .y_desc(y_label)
                .label_style(("sans-serif", 14))
                .axis_desc_style(("sans-serif", 16))
                .draw()
                .map_err(e)?;
            for (name, pts) in series {
                let c = colour[name];
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
                        .map_err(e)?;
                }
                let line: Vec<(f64, f64)> = pts
                    .iter()
                    .filter(|p| !log_y || p.mean > 0.0)
                    .map(|p| (p.x, p.mean))
                    .collect();
                chart
                    .draw_series(LineSeries::new(line.clone(), c.stroke_width(2)))
                    .map_err(e)?
                    .label(name.as_str())
                    .legend(move |(x, y)| {
                        PathElement::new(vec![(x, y), (x + 18, y)], c.stroke_width(3))
                    });
                chart
                    .draw_series(
                        line.iter()
                            .map(|&(x, y)| Circle::new((x, y), 3, c.filled())),
                    )
                    .map_err(e)?;
            }
            chart
                .configure_series_labels()
                .background_style(WHITE.mix(0.85))
                .border_style(BLACK.mix(0.3))
                .label_font(("sans-serif", 13))
                .position(if bounded {
                    SeriesLabelPosition::LowerLeft
                } else {
                    SeriesLabelPosition::UpperLeft
                })
                .draw()
                .map_err(e)?;
        }};
    }
    if log_y {
        plot!(
            builder
                .build_cartesian_2d((x0..x1).log_scale(), (y0..y1).log_scale())
                .map_err(e)?
        );
    } else {
        plot!(
            builder
                .build_cartesian_2d((x0..x1).log_scale(), y0..y1)
                .map_err(e)?
        );
    }
    Ok(())
}
