//! Aggregation over seeds: one summary row per (variant, parameters, metric,
//! slice, step) with n, mean, sample std and a 95% interval: Student-t, or a
//! percentile bootstrap where a bounded outcome is bimodal across seeds
//! ([`bimodal_intervals`]); each row says which.

use retbench_harness::folder::ResultRow;
use std::collections::BTreeMap;
use std::path::Path;

use rand::Rng;
use statrs::distribution::{ContinuousCDF, StudentsT};

use retbench_core::fsutil::FileError;
use retbench_tasks::MetricSpec;

use crate::{ReportError, write_atomic};

/// One row of `summary.csv`.
#[derive(Debug, Clone, PartialEq)]
pub struct SummaryRow {
    pub variant: String,
    pub params: Vec<String>,
    pub metric: String,
    pub slice: String,
    pub step: String,
    pub n: usize,
    pub mean: f64,
    pub std: f64,
    /// `None` with a single seed: no interval can be claimed.
    pub ci95: Option<(f64, f64)>,
    /// How `ci95` was computed.
    pub interval: Interval,
    /// Each seed's value, in the order of the results: figures mark them,
    /// because a mean and interval over 3 seeds hide a bimodal outcome.
    pub seeds: Vec<(u64, f64)>,
}

/// Which 95% interval a summary row carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Interval {
    /// Student t over the seeds' values (the default).
    #[default]
    StudentT,
    /// Percentile bootstrap of the mean ([`bootstrap_ci`]): the seeds split
    /// into two clusters ([`bimodal`]), where a t-interval, symmetric about
    /// a mean that no seed is near, would claim values none reached.
    Bootstrap,
    /// A censored metric ([`crate::censored`]): the row's `mean` holds the
    /// median over seeds and `ci95` a distribution-free interval of it.
    Median,
    /// As `Median`, but the median seed's value is censored: `mean` holds
    /// its lower bound (NaN where the event never happened).
    CensoredMedian,
}

impl Interval {
    /// The name `summary.csv` gives it (`ci95_method`).
    pub fn name(self) -> &'static str {
        match self {
            Interval::StudentT => "t",
            Interval::Bootstrap => "bootstrap",
            Interval::Median => "median",
            Interval::CensoredMedian => "median_censored",
        }
    }
}

/// Resamples of a bootstrap interval.
pub const RESAMPLES: usize = 10_000;

/// Whether the values split into two clusters: at least 3 values, and the
/// largest gap between neighbours in sorted order is at least a quarter of
/// the metric's range (`upper - lower`) and at least twice the spread
/// within either side. A seed that binds (accuracy 1) beside two that do
/// not (0.28) is bimodal; timing noise around one level, or a spread of
/// learning outcomes without a gap, is not.
pub fn bimodal(xs: &[f64], lower: f64, upper: f64) -> bool {
    if xs.len() < 3 || upper.partial_cmp(&lower) != Some(std::cmp::Ordering::Greater) {
        return false;
    }
    if xs.iter().any(|x| !x.is_finite()) {
        return false;
    }
    let mut v = xs.to_vec();
    v.sort_by(f64::total_cmp);
    let Some((i, gap)) = v
        .windows(2)
        .map(|w| w[1] - w[0])
        .enumerate()
        .max_by(|a, b| a.1.total_cmp(&b.1))
    else {
        return false;
    };
    let spread = (v[i] - v[0]).max(v[v.len() - 1] - v[i + 1]);
    gap >= 0.25 * (upper - lower) && gap >= 2.0 * spread
}

/// The 95% percentile-bootstrap interval of the mean of `xs`:
/// [`RESAMPLES`] resamples with replacement, drawn from the stream of
/// `key` (the row's identity), so a report is the same every time.
pub fn bootstrap_ci(xs: &[f64], key: &str) -> (f64, f64) {
    let n = xs.len();
    let mut rng = retbench_core::rng::stream(key, 0, "report/bootstrap");
    let mut means: Vec<f64> = (0..RESAMPLES)
        .map(|_| (0..n).map(|_| xs[rng.random_range(0..n)]).sum::<f64>() / n as f64)
        .collect();
    means.sort_by(f64::total_cmp);
    let at = |q: f64| means[((q * (RESAMPLES - 1) as f64).round() as usize).min(RESAMPLES - 1)];
    (at(0.025), at(0.975))
}

/// Replaces the Student-t interval of every row whose metric has both
/// bounds and whose seeds are [`bimodal`] by [`bootstrap_ci`].
pub fn bimodal_intervals(rows: &mut [SummaryRow], specs: &[MetricSpec]) {
    for r in rows.iter_mut() {
        let Some((lo, hi)) = specs
            .iter()
            .find(|s| s.name == r.metric)
            .and_then(|s| Some((s.lower?, s.upper?)))
        else {
            continue;
        };
        let xs: Vec<f64> = r.seeds.iter().map(|&(_, v)| v).collect();
        if bimodal(&xs, lo, hi) {
            let key = format!(
                "{}\0{}\0{}\0{}\0{}",
                r.variant,
                r.params.join("\0"),
                r.metric,
                r.slice,
                r.step
            );
            r.ci95 = Some(bootstrap_ci(&xs, &key));
            r.interval = Interval::Bootstrap;
        }
    }
}

/// Groups rows over seeds, in order of first appearance.
pub fn summarize(_params: &[String], rows: &[ResultRow]) -> Vec<SummaryRow> {
    type Key = (String, Vec<String>, String, String, String);
    let mut order: Vec<Key> = Vec::new();
    let mut groups: BTreeMap<Key, Vec<(u64, f64)>> = BTreeMap::new();
    for r in rows {
        let key = (
            r.variant.clone(),
            r.params.clone(),
            r.metric.clone(),
            r.slice.clone(),
            r.step.clone(),
        );
        groups.entry(key.clone()).or_insert_with(|| {
            order.push(key.clone());
            Vec::new()
        });
        groups
            .get_mut(&key)
            .expect("inserted")
            .push((r.seed, r.value));
    }
    order
        .into_iter()
        .map(|key| {
            let seeds = groups.remove(&key).expect("grouped");
            let xs: Vec<f64> = seeds.iter().map(|&(_, v)| v).collect();
            let (n, mean, std, ci95) = stats(&xs);
            let (variant, params, metric, slice, step) = key;
            SummaryRow {
                variant,
                params,
                metric,
                slice,
                step,
                n,
                mean,
                std,
                ci95,
                interval: Interval::StudentT,
                seeds,
            }
        })
        .collect()
}

/// n, mean, sample std, and the 95% Student-t interval of the mean.
pub fn stats(xs: &[f64]) -> (usize, f64, f64, Option<(f64, f64)>) {
    let n = xs.len();
    let mean = xs.iter().sum::<f64>() / n as f64;
    if n < 2 {
        return (n, mean, 0.0, None);
    }
    let var = xs.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / (n - 1) as f64;
    let std = var.sqrt();
    let t = StudentsT::new(0.0, 1.0, (n - 1) as f64)
        .expect("n ≥ 2")
        .inverse_cdf(0.975);
    let half = t * std / (n as f64).sqrt();
    (n, mean, std, Some((mean - half, mean + half)))
}

pub fn write_csv(path: &Path, params: &[String], rows: &[SummaryRow]) -> Result<(), ReportError> {
    let mut w = csv::Writer::from_writer(Vec::new());
    let mut header = vec!["variant"];
    header.extend(params.iter().map(String::as_str));
    header.extend([
        "metric",
        "slice",
        "step",
        "n",
        "mean",
        "std",
        "ci95_lo",
        "ci95_hi",
        "ci95_method",
    ]);
    w.write_record(&header).expect("in-memory csv");
    for r in rows {
        let mut rec = vec![r.variant.clone()];
        rec.extend(r.params.iter().cloned());
        rec.extend([
            r.metric.clone(),
            r.slice.clone(),
            r.step.clone(),
            r.n.to_string(),
            r.mean.to_string(),
            r.std.to_string(),
            r.ci95.map(|c| c.0.to_string()).unwrap_or_default(),
            r.ci95.map(|c| c.1.to_string()).unwrap_or_default(),
            match (r.ci95, r.interval) {
                (None, Interval::StudentT | Interval::Bootstrap) => String::new(),
                _ => r.interval.name().to_string(),
            },
        ]);
        w.write_record(&rec).expect("in-memory csv");
    }
    write_atomic(path, &w.into_inner().expect("in-memory csv"))
}

/// One table per (metric, slice), in order of first appearance: its title
/// and rows of cells (config, step, n, mean, 95% CI, per seed), shared by
/// the Markdown and HTML summaries.
/// A row's 95% interval clipped to its metric's bounds, where the spec
/// gives them (summary.csv keeps the raw interval).
pub(crate) fn clipped_ci(r: &SummaryRow, spec: Option<&MetricSpec>) -> Option<(f64, f64)> {
    let (lo, hi) = r.ci95?;
    let lo = spec.and_then(|s| s.lower).map_or(lo, |b| lo.max(b));
    let hi = spec.and_then(|s| s.upper).map_or(hi, |b| hi.min(b));
    Some((lo, hi))
}

/// One table per (metric, slice); intervals clipped to the metric's
/// bounds where its spec gives them (a share's interval never passes 1).
fn tables(
    params: &[String],
    rows: &[SummaryRow],
    specs: &[MetricSpec],
) -> Vec<(String, Vec<[String; 6]>)> {
    let mut keys: Vec<(&str, &str)> = Vec::new();
    for r in rows {
        if !keys.contains(&(r.metric.as_str(), r.slice.as_str())) {
            keys.push((&r.metric, &r.slice));
        }
    }
    keys.into_iter()
        .map(|(metric, slice)| {
            let mut title = match slice.is_empty() {
                true => metric.to_string(),
                false => format!("{metric} ({slice})"),
            };
            if specs
                .iter()
                .any(|s| s.name == metric && s.censoring.is_some())
            {
                title.push_str(": median over seeds, censored runs counted last");
            }
            let cells = rows
                .iter()
                .filter(|r| r.metric == metric && r.slice == slice)
                .map(|r| {
                    let spec = specs.iter().find(|s| s.name == r.metric);
                    let mark = match r.interval {
                        Interval::Bootstrap => BOOTSTRAP_MARK,
                        _ => "",
                    };
                    let ci = clipped_ci(r, spec)
                        .map(|(lo, hi)| format!("[{}, {}]{mark}", fmt_bound(lo), fmt_bound(hi)))
                        .unwrap_or_else(|| "–".into());
                    [
                        label(params, r),
                        r.step.clone(),
                        r.n.to_string(),
                        value_text(r),
                        ci,
                        per_seed(r),
                    ]
                })
                .collect();
            (title, cells)
        })
        .collect()
}

/// A row's value as a table prints it: the mean, or for a censored
/// metric the median, "≥ x" where the median seed's value is a bound and
/// "never" where its event never happened.
pub(crate) fn value_text(r: &SummaryRow) -> String {
    match r.interval {
        Interval::CensoredMedian if r.mean.is_nan() => "never".into(),
        Interval::CensoredMedian => format!("≥ {}", fmt_num(r.mean)),
        _ => fmt_num(r.mean),
    }
}

/// An interval's end: a censored upper end is unbounded.
pub(crate) fn fmt_bound(x: f64) -> String {
    match x.is_infinite() {
        true => "∞".into(),
        false => fmt_num(x),
    }
}

/// Marks a bootstrap interval in the Markdown and HTML tables.
pub(crate) const BOOTSTRAP_MARK: &str = " (b)";

/// What the tables' intervals are, for the text above them.
pub(crate) const INTERVALS: &str = "95% Student-t interval where n ≥ 2, or, marked (b), a percentile bootstrap (10 000 resamples) where a bounded metric's seeds split into two clusters (a gap between sorted values of at least a quarter of its range and twice the spread on either side); censored metrics (time_to_bind, half_life) give the median with the order-statistic interval that covers it with at least 95% (none below 6 seeds)";

/// "s0 0.416, s1 0.422, s2 1" for a handful of seeds: the values behind a
/// mean, which an interval over 3 seeds can misrepresent (a bimodal outcome).
fn per_seed(r: &SummaryRow) -> String {
    if r.seeds.len() < 2 || r.seeds.len() > 10 {
        return "–".into();
    }
    r.seeds
        .iter()
        .map(|(seed, v)| format!("s{seed} {}", trim(&fmt_num(*v))))
        .collect::<Vec<_>>()
        .join(", ")
}

/// "1.0000" → "1", "0.4160" → "0.416"; exponents untouched.
pub(crate) fn trim(s: &str) -> String {
    if s.contains('.') && !s.contains('e') {
        s.trim_end_matches('0').trim_end_matches('.').to_string()
    } else {
        s.to_string()
    }
}

/// Compact, human-readable number.
pub fn fmt_num(x: f64) -> String {
    let a = x.abs();
    if x == 0.0 {
        "0".into()
    } else if !(1e-3..1e6).contains(&a) {
        format!("{x:.3e}")
    } else if a >= 100.0 {
        format!("{x:.1}")
    } else {
        format!("{x:.4}")
    }
}

/// The config label of a summary row: variant plus the parameter values.
pub fn label(params: &[String], row: &SummaryRow) -> String {
    label_of(params, &row.variant, &row.params)
}

/// [`label`] of a variant and its parameter values.
pub fn label_of(params: &[String], variant: &str, values: &[String]) -> String {
    let mut parts: Vec<String> = Vec::new();
    if variant != "grid" {
        parts.push(variant.to_string());
    }
    let names = short_names(params);
    for (name, value) in names.iter().zip(values) {
        if !value.is_empty() {
            parts.push(format!("{name}={}", short_value(value)));
        }
    }
    parts.join(" ")
}

/// Each dotted parameter path shortened to its shortest suffix that no
/// other path shares: `retention.init` and `model.init` stay apart,
/// `retention.write.project` becomes `project`.
pub fn short_names(params: &[String]) -> Vec<String> {
    let suffix = |path: &str, k: usize| -> String {
        let parts: Vec<&str> = path.split('.').collect();
        parts[parts.len().saturating_sub(k)..].join(".")
    };
    params
        .iter()
        .map(|path| {
            let depth = path.split('.').count();
            (1..=depth)
                .map(|k| suffix(path, k))
                .find(|s| {
                    params
                        .iter()
                        .filter(|o| *o != path)
                        .all(|o| o != s && !o.ends_with(&format!(".{s}")))
                })
                .unwrap_or_else(|| path.clone())
        })
        .collect()
}

/// `{"kind":"topk","k":32}` → `topk(k=32)`, nested blocks alike; scalars
/// unchanged.
pub fn short_value(value: &str) -> String {
    match serde_json::from_str::<serde_json::Value>(value) {
        Ok(serde_json::Value::Object(m)) => {
            let kind = m.get("kind").and_then(|k| k.as_str()).unwrap_or("");
            let rest: Vec<String> = m
                .iter()
                .filter(|(k, _)| k.as_str() != "kind")
                .map(|(k, v)| {
                    let v = match v {
                        serde_json::Value::String(s) => s.clone(),
                        // A nested block: `source=chunk(size=2)`.
                        other => short_value(&other.to_string()),
                    };
                    format!("{k}={v}")
                })
                .collect();
            if rest.is_empty() {
                kind.to_string()
            } else {
                format!("{kind}({})", rest.join(","))
            }
        }
        _ => value.to_string(),
    }
}

pub fn write_markdown(
    path: &Path,
    suite: &str,
    params: &[String],
    rows: &[SummaryRow],
    specs: &[MetricSpec],
    binding: &Table,
) -> Result<(), ReportError> {
    let mut md = format!(
        "# {suite}: summary\n\nMean over seeds; {INTERVALS}; each seed's value where there are 2 to 10; intervals clipped to the metric's bounds. Regenerate with `retbench report DIR`.\n"
    );
    if !binding.1.is_empty() {
        let (header, cells) = binding;
        md.push_str(&format!(
            "\n## Binding\n\n{}.\n\n| {} |\n|{}\n",
            crate::binding::ABOUT,
            header.join(" | "),
            "---|".repeat(header.len())
        ));
        for row in cells {
            md.push_str(&format!("| {} |\n", row.join(" | ")));
        }
    }
    for (title, cells) in tables(params, rows, specs) {
        md.push_str(&format!(
            "\n## {title}\n\n| config | step | n | mean | 95% CI | per seed |\n|---|---|---|---|---|---|\n"
        ));
        for row in cells {
            md.push_str(&format!("| {} |\n", row.join(" | ")));
        }
    }
    write_atomic(path, md.as_bytes())
}

fn html_escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// Where a report's numbers come from, read from its run records.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Provenance {
    pub runs: usize,
    /// Distinct values over the runs, sorted.
    pub commits: Vec<String>,
    pub machines: Vec<String>,
    pub rustc: Vec<String>,
    pub kernels: Vec<String>,
    /// First and last finishing time (Unix seconds), where records keep it.
    pub finished: Option<(u64, u64)>,
    /// Runs without a finishing time (made before records kept one).
    pub undated: usize,
    pub wall_seconds: f64,
}

impl Provenance {
    fn html(&self) -> String {
        let list = |v: &[String]| {
            if v.is_empty() {
                "unknown".to_string()
            } else {
                html_escape(&v.join(", "))
            }
        };
        let date = |t: u64| {
            humantime::format_rfc3339_seconds(
                std::time::UNIX_EPOCH + std::time::Duration::from_secs(t),
            )
            .to_string()
        };
        let when = match self.finished {
            Some((a, b)) if a == b => format!("finished {}", date(a)),
            Some((a, b)) => format!("finished between {} and {}", date(a), date(b)),
            None => "finishing dates not recorded".into(),
        };
        let undated = if self.finished.is_some() && self.undated > 0 {
            format!(" ({} runs undated)", self.undated)
        } else {
            String::new()
        };
        format!(
            "<p class=\"prov\">{} runs, {}{}; commit {}; machine {}; {}; kernels {}; {:.1} h of run time in all.</p>\n",
            self.runs,
            when,
            undated,
            list(&self.commits),
            list(&self.machines),
            list(&self.rustc),
            list(&self.kernels),
            self.wall_seconds / 3600.0
        )
    }
}

/// The page's text besides tables and figures.
#[derive(Debug, Clone, Default)]
pub struct Page {
    pub description: String,
    pub provenance: Provenance,
    /// The binding table (`crate::binding`), empty where no run reports
    /// `time_to_bind`.
    pub binding: Table,
    /// The index page, relative to this one, where one links it.
    pub back: Option<String>,
}

const STYLE: &str = "body{font-family:sans-serif;max-width:1100px;margin:2em auto;padding:0 1em}table{border-collapse:collapse;margin-bottom:1.5em}td,th{border:1px solid #ccc;padding:2px 8px;text-align:right}td:first-child{text-align:left}figure{margin:1.5em 0}figure svg{max-width:100%;height:auto}figcaption{font-size:90%;color:#444}.prov{color:#444;font-size:90%}";

/// A self-contained page (no network, no other file): the suite's
/// description and provenance, every figure inline as SVG with a caption,
/// and one table per metric.
pub fn write_html(
    path: &Path,
    suite: &str,
    params: &[String],
    rows: &[SummaryRow],
    (paper, figures): (&[std::path::PathBuf], &[std::path::PathBuf]),
    page: &Page,
    specs: &[MetricSpec],
) -> Result<(), ReportError> {
    let mut h = format!(
        "<!doctype html>\n<html><head><meta charset=\"utf-8\"><title>{0}</title>\n<style>{STYLE}</style></head><body>\n<h1>{0}</h1>\n<p>{1}</p>\n{2}<p>Mean over seeds; {3}; each seed's value where there are 2 to 10; intervals clipped to the metric's bounds. Regenerate with <code>retbench report DIR</code>.</p>\n",
        html_escape(suite),
        html_escape(&page.description),
        page.provenance.html(),
        html_escape(INTERVALS)
    );
    let svg_of = |files: &[std::path::PathBuf]| -> Vec<std::path::PathBuf> {
        files
            .iter()
            .filter(|f| f.extension().is_some_and(|e| e == "svg"))
            .cloned()
            .collect()
    };
    let (paper_svgs, svgs) = (svg_of(paper), svg_of(figures));
    let titles: Vec<String> = tables(params, rows, specs)
        .into_iter()
        .map(|t| t.0)
        .collect();
    h.insert_str(
        h.find("<h1>").unwrap_or(0),
        &nav(page, (&paper_svgs, &svgs), &titles),
    );
    if !paper_svgs.is_empty() {
        h.push_str("<h2 id=\"paper\">Paper figures</h2>\n<p>The suite's headline figures (<code>paper/</code>; their cells in <code>paper/table.md</code> and <code>paper/table.tex</code>). Every figure follows below them.</p>\n");
        embed(&mut h, &paper_svgs, "paper", "paper-")?;
    }
    if !page.binding.1.is_empty() {
        h.push_str(&html_table("Binding", crate::binding::ABOUT, &page.binding));
    }
    if !svgs.is_empty() {
        h.push_str("<h2 id=\"figures\">Figures</h2>\n");
    }
    embed(&mut h, &svgs, "figures", "")?;
    for (i, (title, cells)) in tables(params, rows, specs).into_iter().enumerate() {
        h.push_str(&format!("<h2 id=\"table-{i}\">{}</h2>\n<table><tr><th>config</th><th>step</th><th>n</th><th>mean</th><th>95% CI</th><th>per seed</th></tr>\n", html_escape(&title)));
        for row in cells {
            let tds: Vec<String> = row
                .iter()
                .map(|c| format!("<td>{}</td>", html_escape(c)))
                .collect();
            h.push_str(&format!("<tr>{}</tr>\n", tds.concat()));
        }
        h.push_str("</table>\n");
    }
    h.push_str("</body></html>\n");
    write_atomic(path, h.as_bytes())
}

/// Each SVG inline in a `<figure>` with an id (`prefix` + its stem) and a
/// caption naming its file under `folder`.
fn embed(
    h: &mut String,
    svgs: &[std::path::PathBuf],
    folder: &str,
    prefix: &str,
) -> Result<(), ReportError> {
    for f in svgs {
        let svg = std::fs::read_to_string(f).map_err(|source| FileError::Io {
            path: f.clone(),
            source,
        })?;
        // The document's own prologue cannot sit inside HTML.
        let body = match svg.find("<svg") {
            Some(i) => &svg[i..],
            None => svg.as_str(),
        };
        let stem = f
            .file_stem()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        h.push_str(&format!(
            "<figure id=\"{prefix}{0}\">\n{1}\n<figcaption>{2} (<code>{folder}/{0}.svg</code>, <code>.png</code>)</figcaption></figure>\n",
            html_escape(&stem),
            body.trim_end(),
            html_escape(&stem.replace('_', " "))
        ));
    }
    Ok(())
}

/// The page's head: a link back to the index where there is one, and a
/// table of contents (binding table, each figure, each metric's table);
/// pages run to hundreds of figures.
fn nav(
    page: &Page,
    (paper, svgs): (&[std::path::PathBuf], &[std::path::PathBuf]),
    tables: &[String],
) -> String {
    let mut n = String::from("<nav>");
    if let Some(back) = &page.back {
        n.push_str(&format!(
            "<p><a href=\"{}\">← all reports</a></p>",
            html_escape(back)
        ));
    }
    n.push_str("<details><summary>Contents</summary><ul>");
    if !paper.is_empty() {
        n.push_str(&format!(
            "<li><a href=\"#paper\">Paper figures ({})</a><ul>",
            paper.len()
        ));
        for f in paper {
            let stem = f
                .file_stem()
                .map(|s| s.to_string_lossy())
                .unwrap_or_default();
            let stem = html_escape(&stem);
            n.push_str(&format!(
                "<li><a href=\"#paper-{stem}\">{}</a></li>",
                stem.replace('_', " ")
            ));
        }
        n.push_str("</ul></li>");
    }
    if !page.binding.1.is_empty() {
        n.push_str("<li><a href=\"#binding\">Binding</a></li>");
    }
    if !svgs.is_empty() {
        n.push_str(&format!(
            "<li><a href=\"#figures\">Figures ({})</a><ul>",
            svgs.len()
        ));
        for f in svgs {
            let stem = f
                .file_stem()
                .map(|s| s.to_string_lossy())
                .unwrap_or_default();
            let stem = html_escape(&stem);
            n.push_str(&format!(
                "<li><a href=\"#{stem}\">{}</a></li>",
                stem.replace('_', " ")
            ));
        }
        n.push_str("</ul></li>");
    }
    n.push_str("<li>Tables<ul>");
    for (i, t) in tables.iter().enumerate() {
        n.push_str(&format!(
            "<li><a href=\"#table-{i}\">{}</a></li>",
            html_escape(t)
        ));
    }
    n.push_str("</ul></li></ul></details></nav>\n");
    n
}

/// A header and rows of cells.
pub type Table = (Vec<String>, Vec<Vec<String>>);

/// A titled HTML table with a line of text above it.
fn html_table(title: &str, about: &str, (header, cells): &Table) -> String {
    let th: String = header
        .iter()
        .map(|c| format!("<th>{}</th>", html_escape(c)))
        .collect();
    let mut h = format!(
        "<h2 id=\"{}\">{}</h2>\n<p>{}.</p>\n<table><tr>{th}</tr>\n",
        html_escape(&title.to_lowercase()),
        html_escape(title),
        html_escape(about)
    );
    for row in cells {
        let tds: String = row
            .iter()
            .map(|c| format!("<td>{}</td>", html_escape(c)))
            .collect();
        h.push_str(&format!("<tr>{tds}</tr>\n"));
    }
    h.push_str("</table>\n");
    h
}

/// One suite on the index page.
#[derive(Debug, Clone)]
pub struct IndexEntry {
    pub suite: String,
    /// The report page, relative to the index.
    pub href: String,
    pub description: String,
    pub provenance: Provenance,
    /// Figures drawn (each as SVG and PNG).
    pub figures: usize,
}

/// `index.html` across suites: a link to each report with its description
/// and provenance.
pub fn write_index(path: &Path, entries: &[IndexEntry]) -> Result<(), ReportError> {
    let mut h = format!(
        "<!doctype html>\n<html><head><meta charset=\"utf-8\"><title>retbench reports</title>\n<style>{STYLE}</style></head><body>\n<h1>retbench reports</h1>\n<p>One page per suite, each self-contained. Regenerate with <code>just report</code>.</p>\n"
    );
    // The answers the reports support, where the index sits beside them.
    if path.with_file_name("FINDINGS.md").is_file() {
        h.push_str("<p><a href=\"FINDINGS.md\">FINDINGS.md</a>: the current answers to the paper's open questions, with the figures and tables they rest on.</p>\n");
    }
    for e in entries {
        h.push_str(&format!(
            "<h2><a href=\"{}\">{}</a></h2>\n<p>{}</p>\n{}<p class=\"prov\">{} figures.</p>\n",
            html_escape(&e.href),
            html_escape(&e.suite),
            html_escape(&e.description),
            e.provenance.html(),
            e.figures
        ));
    }
    h.push_str("</body></html>\n");
    write_atomic(path, h.as_bytes())
}

/// A summary row of the grid over `seeds` (seed i has value `seeds[i]`),
/// with the statistics `summarize` would give it: the unit tests' input.
#[cfg(test)]
pub(crate) fn test_row(metric: &str, slice: &str, params: &[&str], seeds: &[f64]) -> SummaryRow {
    let (n, mean, std, ci95) = stats(seeds);
    SummaryRow {
        variant: "grid".into(),
        params: params.iter().map(|p| p.to_string()).collect(),
        metric: metric.into(),
        slice: slice.into(),
        step: String::new(),
        n,
        mean,
        std,
        ci95,
        interval: Interval::StudentT,
        seeds: seeds
            .iter()
            .enumerate()
            .map(|(i, &v)| (i as u64, v))
            .collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parameter_names_shorten_to_a_suffix_no_other_shares() {
        let p = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert_eq!(
            short_names(&p(&[
                "model.init",
                "retention.init",
                "retention.write.project",
                "retention.slots",
            ])),
            p(&["model.init", "retention.init", "project", "slots"])
        );
        assert_eq!(
            short_names(&p(&["a.b.k", "c.b.k", "d"])),
            p(&["a.b.k", "c.b.k", "d"])
        );
    }

    #[test]
    fn bimodal_needs_a_wide_gap_and_tight_clusters() {
        // One seed binds, two do not (recall-long, gap 0).
        assert!(bimodal(&[1.0, 0.284, 0.287], 0.0, 1.0));
        assert!(bimodal(&[0.0, 0.0, 1.0, 1.0, 0.98], 0.0, 1.0));
        // A spread without a gap, and a gap narrower than a quarter of the range.
        assert!(!bimodal(&[0.2, 0.45, 0.7, 0.95], 0.0, 1.0));
        assert!(!bimodal(&[0.5, 0.51, 0.7], 0.0, 1.0));
        // The gap must be twice the spread within either side.
        assert!(!bimodal(&[0.0, 0.35, 0.9], 0.0, 1.0));
        // Two seeds, a NaN, or no range: never.
        assert!(!bimodal(&[0.0, 1.0], 0.0, 1.0));
        assert!(!bimodal(&[0.0, f64::NAN, 1.0], 0.0, 1.0));
        assert!(!bimodal(&[0.0, 0.0, 1.0], 1.0, 1.0));
    }

    #[test]
    fn bootstrap_interval_spans_the_two_modes_and_is_reproducible() {
        // Means of 3 draws from {1, 0.28, 0.28} range over 0.28..1; all three
        // 0.28 has chance 8/27 > 2.5%, all three 1 has 1/27 > 2.5%.
        let xs = [1.0, 0.28, 0.28];
        let (lo, hi) = bootstrap_ci(&xs, "k");
        assert_eq!((lo, hi), (0.28, 1.0));
        // Five seeds, one high: the upper end falls below the high mode
        // (all five draws high has chance 1/3125), the lower end is the low mode.
        let xs = [0.0, 0.0, 0.0, 0.0, 1.0];
        let (lo, hi) = bootstrap_ci(&xs, "k");
        assert_eq!(lo, 0.0);
        assert!((0.5..0.9).contains(&hi), "{hi}");
        assert_eq!(bootstrap_ci(&xs, "k"), (lo, hi));
        // The t-interval of the same seeds leaves the metric's range.
        let t = stats(&xs).3.unwrap();
        assert!(t.0 < 0.0 && t.1 > hi);
    }

    #[test]
    fn only_bounded_bimodal_rows_get_a_bootstrap_interval() {
        let row = |metric: &str, xs: &[f64]| test_row(metric, "", &[], xs);
        let specs = vec![
            MetricSpec::share("accuracy", "accuracy"),
            MetricSpec::new("loss", "loss").lower().at_least(0.0),
        ];
        let mut rows = vec![
            row("accuracy", &[1.0, 0.28, 0.28]),
            row("accuracy", &[0.5, 0.6, 0.55]),
            row("loss", &[0.0, 0.0, 5.0]),
        ];
        let t = rows.clone();
        bimodal_intervals(&mut rows, &specs);
        assert_eq!(rows[0].interval, Interval::Bootstrap);
        assert_eq!(rows[0].ci95, Some((0.28, 1.0)));
        assert_eq!(rows[1..], t[1..]);
    }

    #[test]
    fn student_t_interval_matches_a_hand_computed_one() {
        // n = 3, mean 2, s = 1, t(0.975, 2) = 4.302653
        let (n, mean, std, ci) = stats(&[1.0, 2.0, 3.0]);
        assert_eq!((n, mean, std), (3, 2.0, 1.0));
        let (lo, hi) = ci.unwrap();
        let half = 4.302653 / 3f64.sqrt();
        assert!((lo - (2.0 - half)).abs() < 1e-5 && (hi - (2.0 + half)).abs() < 1e-5);
        assert_eq!(stats(&[5.0]).3, None);
    }

    #[test]
    fn summary_groups_over_seeds_only() {
        let row = |seed: u64, slots: &str, value: f64| ResultRow {
            run_id: format!("r{seed}{slots}"),
            suite: "s".into(),
            variant: "grid".into(),
            seed,
            metric: "m".into(),
            slice: String::new(),
            step: String::new(),
            value,
            params: vec![slots.into()],
        };
        let rows = [row(0, "10", 1.0), row(1, "10", 3.0), row(0, "20", 5.0)];
        let s = summarize(&["retention.slots".into()], &rows);
        assert_eq!(s.len(), 2);
        assert_eq!((s[0].n, s[0].mean), (2, 2.0));
        assert_eq!((s[1].n, s[1].mean), (1, 5.0));
        assert_eq!(s[0].seeds, vec![(0, 1.0), (1, 3.0)]);
        assert_eq!(per_seed(&s[0]), "s0 1, s1 3");
        assert_eq!(per_seed(&s[1]), "–");
        assert_eq!(short_value(r#"{"kind":"topk","k":32}"#), "topk(k=32)");
        assert_eq!(
            short_value(r#"{"kind":"append","evict":"lru","source":{"kind":"chunk","size":2}}"#),
            "append(evict=lru,source=chunk(size=2))"
        );
        assert_eq!(short_value("0.5"), "0.5");
    }
}
