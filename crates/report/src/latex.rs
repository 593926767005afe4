//! `summary.tex`: the suite's final values as LaTeX tables for a paper
//! (`\usepackage{booktabs,longtable}` in the preamble), one table per
//! metric and slice, a row per config: mean and 95% interval (Student t,
//! or a percentile bootstrap marked $^{b}$ for bimodal seeds) clipped to
//! the metric's bounds (a share never gets an interval past 1),
//! each seed's value where there are 2 to 10, and the best mean of the
//! column in bold by the metric's direction (none for a metric with no
//! better direction). Curve points (rows with a step) are left to the
//! figures.

use std::path::Path;

use retbench_tasks::{Direction, MetricSpec};

use crate::summary::{Interval, SummaryRow, clipped_ci, label};
use crate::{ReportError, write_atomic};

/// Rows beyond which a table is a `longtable` (breaks across pages) rather
/// than a float: about what a page holds at `\small`.
const LONG_ROWS: usize = 40;

/// Text safe in LaTeX's text mode.
pub(crate) fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '\\' => out.push_str(r"\textbackslash{}"),
            '{' | '}' | '_' | '&' | '%' | '$' | '#' => {
                out.push('\\');
                out.push(c);
            }
            '~' => out.push_str(r"\textasciitilde{}"),
            '^' => out.push_str(r"\textasciicircum{}"),
            '"' => out.push_str("''"),
            'ε' => out.push_str(r"$\varepsilon$"),
            'µ' => out.push_str(r"$\mu$"),
            '−' => out.push_str("$-$"),
            '‖' => out.push_str(r"$\|$"),
            '×' => out.push_str(r"$\times$"),
            '·' => out.push_str(r"$\cdot$"),
            '≤' => out.push_str(r"$\leq$"),
            '≥' => out.push_str(r"$\geq$"),
            '→' => out.push_str(r"$\to$"),
            '²' => out.push_str(r"$^2$"),
            '√' => out.push_str(r"$\surd$"),
            '–' => out.push_str("--"),
            '—' => out.push_str("---"),
            '…' => out.push_str(r"\dots{}"),
            _ => out.push(c),
        }
    }
    out
}

/// A number with four significant digits, as the Markdown summary.
fn num(x: f64) -> String {
    if x.is_infinite() {
        return r"$\infty$".into();
    }
    if !x.is_finite() {
        return format!("{x}");
    }
    let a = x.abs();
    if a != 0.0 && !(1e-3..1e5).contains(&a) {
        let s = format!("{x:.3e}");
        let (m, e) = s.split_once('e').unwrap_or((&s, "0"));
        return format!("${m}\\times10^{{{e}}}$");
    }
    let digits = if a >= 1000.0 {
        0
    } else if a >= 100.0 {
        1
    } else if a >= 10.0 {
        2
    } else {
        3
    };
    format!("{x:.digits$}")
}

/// Writes `summary.tex` for `rows` (the summary of one suite): one table
/// per final metric and slice.
pub fn write_latex(
    path: &Path,
    suite: &str,
    params: &[String],
    rows: &[SummaryRow],
    specs: &[MetricSpec],
) -> Result<(), ReportError> {
    let mut keys: Vec<(&str, &str)> = Vec::new();
    for r in rows.iter().filter(|r| r.step.is_empty()) {
        if !keys.contains(&(r.metric.as_str(), r.slice.as_str())) {
            keys.push((&r.metric, &r.slice));
        }
    }
    let mut tex = format!(
        "% {suite}: final values over seeds, written by `retbench report`; needs \\usepackage{{booktabs,longtable}}.\n"
    );
    for (metric, slice) in keys {
        let spec = specs.iter().find(|s| s.name == metric);
        let group: Vec<&SummaryRow> = rows
            .iter()
            .filter(|r| r.step.is_empty() && r.metric == metric && r.slice == slice)
            .collect();
        tex += &table(suite, params, metric, slice, spec, &group);
    }
    write_atomic(path, tex.as_bytes())
}

/// The best mean of `group` by the metric's direction, if it has one.
fn best_mean(group: &[&SummaryRow], spec: Option<&MetricSpec>) -> Option<f64> {
    let means = group.iter().map(|r| r.mean).filter(|m| m.is_finite());
    match spec.map(|s| s.direction) {
        Some(Direction::Higher) => means.reduce(f64::max),
        Some(Direction::Lower) => means.reduce(f64::min),
        _ => None,
    }
}

/// The caption of one metric's table: what it is, its unit, the interval
/// method and the direction.
fn caption(
    suite: &str,
    metric: &str,
    slice: &str,
    spec: Option<&MetricSpec>,
    group: &[&SummaryRow],
) -> String {
    let unit = spec
        .filter(|s| !s.unit.is_empty())
        .map(|s| format!(" ({})", escape(&s.unit)))
        .unwrap_or_default();
    let about = spec.map(|s| escape(&s.about)).unwrap_or_default();
    let title = if slice.is_empty() {
        format!("\\texttt{{{}}}", escape(metric))
    } else {
        format!("\\texttt{{{}}}, {}", escape(metric), escape(slice))
    };
    let direction = match spec.map(|s| s.direction) {
        Some(Direction::Higher) => " Higher is better; the best mean is in bold.",
        Some(Direction::Lower) => " Lower is better; the best mean is in bold.",
        _ => "",
    };
    format!(
        "{suite_e}: {title}{unit} --- {about}. {stat}{boot}{clip}.{direction}",
        stat = if group
            .iter()
            .any(|r| matches!(r.interval, Interval::Median | Interval::CensoredMedian))
        {
            "Median over seeds, runs whose event never happened (censored) counted last, with the order-statistic interval covering it with at least 95\\% (none below 6 seeds)"
        } else {
            "Mean over seeds with its 95\\% Student-t interval"
        },
        boot = if group.iter().any(|r| r.interval == Interval::Bootstrap) {
            " ($^{b}$: percentile bootstrap, 10\\,000 resamples, where the seeds split into two clusters)"
        } else {
            ""
        },
        suite_e = escape(suite),
        clip = if spec.is_some_and(|s| s.lower.is_some() || s.upper.is_some()) {
            ", clipped to the metric's bounds"
        } else {
            ""
        },
    )
}

/// One metric and slice as a booktabs table (a longtable past
/// `LONG_ROWS` rows).
fn table(
    suite: &str,
    params: &[String],
    metric: &str,
    slice: &str,
    spec: Option<&MetricSpec>,
    group: &[&SummaryRow],
) -> String {
    let best = best_mean(group, spec);
    let seeds = group.iter().any(|r| (2..=10).contains(&r.seeds.len()));
    let caption = caption(suite, metric, slice, spec, group);
    let columns = if seeds { "l r l l" } else { "l r l" };
    let header = format!(
        "\\toprule\nconfig & $n$ & mean [95\\% CI]{} \\\\\n\\midrule\n",
        if seeds { " & per seed" } else { "" }
    );
    // A float taller than a page cannot be placed (and LaTeX then
    // stops on "too many unprocessed floats"): long tables break
    // across pages instead.
    let long = group.len() > LONG_ROWS;
    let mut tex = if long {
        format!(
            "\n\\begin{{longtable}}{{{columns}}}\n\\caption{{{caption}}}\\\\\n{header}\\endhead\n"
        )
    } else {
        format!(
            "\n\\begin{{table}}[htbp]\n\\centering\\small\n\\caption{{{caption}}}\n\\begin{{tabular}}{{{columns}}}\n{header}"
        )
    };
    for r in group {
        tex += &table_row(params, r, spec, best, seeds);
    }
    tex += if long {
        "\\bottomrule\n\\end{longtable}\n"
    } else {
        "\\bottomrule\n\\end{tabular}\n\\end{table}\n"
    };
    tex
}

/// One config's row: its name, n, the mean (bold when best) with its
/// interval, and each seed's value where there are 2 to 10.
fn table_row(
    params: &[String],
    r: &SummaryRow,
    spec: Option<&MetricSpec>,
    best: Option<f64>,
    seeds: bool,
) -> String {
    let mean = match r.interval {
        Interval::Median | Interval::CensoredMedian => escape(&crate::summary::value_text(r)),
        _ => num(r.mean),
    };
    let mean = if best.is_some_and(|b| b == r.mean) {
        format!("\\textbf{{{mean}}}")
    } else {
        mean
    };
    let mark = match r.interval {
        Interval::Bootstrap => "$^{b}$",
        _ => "",
    };
    let ci = clipped_ci(r, spec)
        .map(|(lo, hi)| format!(" [{}, {}]{mark}", num(lo), num(hi)))
        .unwrap_or_default();
    let per = if seeds {
        let v: Vec<String> = if (2..=10).contains(&r.seeds.len()) {
            r.seeds.iter().map(|&(_, v)| num(v)).collect()
        } else {
            vec!["--".into()]
        };
        format!(" & {}", v.join(", "))
    } else {
        String::new()
    };
    let config = label(params, r);
    let config = if config.is_empty() {
        r.variant.clone()
    } else {
        config
    };
    format!("{} & {} & {mean}{ci}{per} \\\\\n", escape(&config), r.n)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(config: &str, seeds: &[f64], ci: Option<(f64, f64)>) -> SummaryRow {
        SummaryRow {
            variant: config.into(),
            std: 0.0,
            ci95: ci,
            ..crate::summary::test_row("accuracy", "gap=1", &[], seeds)
        }
    }

    #[test]
    fn tables_bold_the_best_clip_intervals_and_escape_text() {
        let dir = std::env::temp_dir().join(format!("retbench-tex-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let mut spec = MetricSpec::new("accuracy", "share right_answers");
        spec.lower = Some(0.0);
        spec.upper = Some(1.0);
        let rows = vec![
            row("a_b", &[0.5, 0.7, 0.6], Some((0.35, 0.85))),
            row("c&d", &[0.9, 1.0, 0.95], Some((0.83, 1.07))),
            // A curve point: not tabulated.
            SummaryRow {
                step: "100".into(),
                ..row("a_b", &[0.1], None)
            },
        ];
        let path = dir.join("summary.tex");
        write_latex(&path, "s_1", &[], &rows, &[spec]).unwrap();
        let tex = std::fs::read_to_string(&path).unwrap();
        assert!(tex.contains("a\\_b & 3 & 0.600 [0.350, 0.850] & 0.500, 0.700, 0.600 \\\\"));
        assert!(
            tex.contains("c\\&d & 3 & \\textbf{0.950} [0.830, 1.000]"),
            "best in bold, interval clipped at 1: {tex}"
        );
        assert!(tex.contains("\\caption{s\\_1: \\texttt{accuracy}, gap=1"));
        assert_eq!(
            escape("‖x−y‖ ≤ 2·ε"),
            r"$\|$x$-$y$\|$ $\leq$ 2$\cdot$$\varepsilon$"
        );
        assert_eq!(
            tex.matches("\\begin{table}").count(),
            1,
            "no table of curve points"
        );
        assert_eq!(
            tex.matches("\\toprule").count(),
            tex.matches("\\bottomrule").count()
        );
        std::fs::remove_dir_all(dir).unwrap();
    }
}
