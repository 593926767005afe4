//! Regression checks between two run folders (`retbench compare BASELINE
//! CURRENT`): joins their summaries on config (variant and parameter
//! values, by name), metric and slice, and judges each pair by its metric's
//! spec. A quality metric regresses when it moves in its bad direction by
//! more than max(absolute tolerance, the larger 95% interval half-width of
//! the two sides); a timing metric only beyond a relative tolerance, and
//! then as a warning unless timing is strict. Curve points (rows with a
//! step) are not compared: the final values are. Output: a Markdown table
//! for a PR comment or a CI step summary, or JSON.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use serde::Serialize;

use retbench_core::fsutil::FileError;
use retbench_tasks::{Direction, MetricSpec};

use crate::ReportError;
use crate::summary::{SummaryRow, summarize};
use retbench_harness::RunFolder;

/// How far a value may move before it counts.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct Tolerances {
    /// Absolute move a quality metric may make in its bad direction
    /// (widened to the 95% interval half-width where seeds give one).
    pub quality: f64,
    /// Relative move of a timing metric (0.25: 25% slower).
    pub timing: f64,
    /// Whether a timing move beyond its tolerance is a regression rather
    /// than a warning.
    pub strict_timing: bool,
}

impl Default for Tolerances {
    fn default() -> Self {
        Tolerances {
            quality: 0.05,
            timing: 0.25,
            strict_timing: false,
        }
    }
}

/// The verdict on one (config, metric, slice).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, PartialOrd, Ord)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    /// Moved in its bad direction beyond the tolerance (fails the check).
    Regressed,
    /// In the baseline, not in the current results of the same config
    /// (fails the check: a metric that stops being reported hides a bug).
    Missing,
    /// A timing beyond its tolerance, not strict: reported, does not fail.
    Slower,
    /// Moved in its good direction beyond the tolerance.
    Improved,
    /// A metric with no better direction that moved beyond the tolerance.
    Changed,
    /// Only in the current results of a config both sides ran.
    New,
    Same,
}

impl Status {
    fn label(self) -> &'static str {
        match self {
            Status::Regressed => "REGRESSED",
            Status::Missing => "MISSING",
            Status::Slower => "slower (warning)",
            Status::Improved => "improved",
            Status::Changed => "changed",
            Status::New => "new",
            Status::Same => "same",
        }
    }
    /// Whether it fails the check.
    pub fn fails(self) -> bool {
        matches!(self, Status::Regressed | Status::Missing)
    }
}

/// One side's value: mean over seeds and its interval half-width.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct Side {
    pub mean: f64,
    pub n: usize,
    /// Half the 95% interval; `None` with one seed.
    pub ci_half: Option<f64>,
}

/// One compared row.
#[derive(Debug, Clone, Serialize)]
pub struct Comparison {
    pub config: String,
    pub metric: String,
    pub slice: String,
    pub unit: String,
    pub timing: bool,
    pub baseline: Option<Side>,
    pub current: Option<Side>,
    /// current − baseline (absolute), or its ratio to |baseline| for
    /// timings.
    pub change: Option<f64>,
    /// The move allowed before the row counts (same units as `change`).
    pub allowed: Option<f64>,
    pub status: Status,
}

/// Everything `compare` found.
#[derive(Debug, Clone, Serialize)]
pub struct CompareReport {
    pub baseline: String,
    pub current: String,
    pub tolerances: Tolerances,
    /// Every compared row, failing ones first.
    pub rows: Vec<Comparison>,
    /// Configs run on one side only.
    pub only_baseline: Vec<String>,
    pub only_current: Vec<String>,
    /// Configs both sides ran: the ones compared.
    pub joined: usize,
}

impl CompareReport {
    /// Whether any row fails the check, or a config of the baseline is
    /// missing from the current results (a config that stops running hides
    /// its regressions).
    pub fn regressed(&self) -> bool {
        self.rows.iter().any(|r| r.status.fails()) || !self.only_baseline.is_empty()
    }

    fn count(&self, s: Status) -> usize {
        self.rows.iter().filter(|r| r.status == s).count()
    }

    /// A Markdown report: a verdict line, a table of every row that moved,
    /// and the configs run on one side only.
    pub fn markdown(&self) -> String {
        let mut out = format!(
            "### retbench compare: `{}` → `{}`\n\n",
            self.baseline, self.current
        );
        out += &format!(
            "**{}**: {} configs compared; {} regressed, {} missing, {} timing warnings, {} improved, {} changed, {} new, {} same; {} configs only in the baseline, {} only in the current results.\n\n",
            if self.regressed() { "FAIL" } else { "PASS" },
            self.joined,
            self.count(Status::Regressed),
            self.count(Status::Missing),
            self.count(Status::Slower),
            self.count(Status::Improved),
            self.count(Status::Changed),
            self.count(Status::New),
            self.count(Status::Same),
            self.only_baseline.len(),
            self.only_current.len(),
        );
        out += &format!(
            "Quality metrics may move {} in their bad direction (or the 95% interval's half-width, if wider); timings {:.0}% ({}).\n\n",
            fmt(self.tolerances.quality),
            self.tolerances.timing * 100.0,
            if self.tolerances.strict_timing {
                "strict: a slower timing fails"
            } else {
                "a slower timing is a warning"
            }
        );
        let moved: Vec<&Comparison> = self
            .rows
            .iter()
            .filter(|r| r.status != Status::Same)
            .collect();
        if !moved.is_empty() {
            out += "| status | config | metric | slice | baseline | current | change | allowed |\n";
            out += "|---|---|---|---|---:|---:|---:|---:|\n";
            for r in moved {
                let side = |s: &Option<Side>| match s {
                    None => "—".to_string(),
                    Some(s) => match s.ci_half {
                        Some(h) => format!("{} ± {}", fmt(s.mean), fmt(h)),
                        None => fmt(s.mean),
                    },
                };
                let change = match (r.change, r.timing) {
                    (None, _) => "—".to_string(),
                    (Some(c), true) => format!("{:+.1}%", c * 100.0),
                    (Some(c), false) => signed(c),
                };
                let allowed = match (r.allowed, r.timing) {
                    (None, _) => "—".to_string(),
                    (Some(a), true) => format!("{:.0}%", a * 100.0),
                    (Some(a), false) => fmt(a),
                };
                let unit = if r.unit.is_empty() {
                    String::new()
                } else {
                    format!(" ({})", r.unit)
                };
                out += &format!(
                    "| {} | {} | {}{} | {} | {} | {} | {} | {} |\n",
                    r.status.label(),
                    cell(&r.config),
                    cell(&r.metric),
                    unit,
                    cell(&r.slice),
                    side(&r.baseline),
                    side(&r.current),
                    change,
                    allowed
                );
            }
            out += "\n";
        }
        for (title, list) in [
            ("Configs only in the baseline", &self.only_baseline),
            ("Configs only in the current results", &self.only_current),
        ] {
            if !list.is_empty() {
                out += &format!("{title}:\n\n");
                for c in list {
                    out += &format!("- {}\n", cell(c));
                }
                out += "\n";
            }
        }
        out
    }
}

/// A number as a table shows it: enough digits to tell small moves apart.
fn fmt(x: f64) -> String {
    if x.is_nan() {
        "NaN".into()
    } else if x == 0.0 || (1e-3..1e6).contains(&x.abs()) {
        let s = format!("{x:.4}");
        let s = s.trim_end_matches('0').trim_end_matches('.');
        s.to_string()
    } else {
        format!("{x:.3e}")
    }
}

fn signed(x: f64) -> String {
    if x >= 0.0 {
        format!("+{}", fmt(x))
    } else {
        fmt(x)
    }
}

/// Text safe inside a Markdown table cell.
fn cell(s: &str) -> String {
    if s.is_empty() {
        "—".into()
    } else {
        s.replace('|', "\\|")
    }
}

type Key = (String, String, String);

/// The summary rows of a folder's final values, by (config, metric,
/// slice), and its metric specs.
fn load(dir: &Path) -> Result<(BTreeMap<Key, SummaryRow>, Vec<MetricSpec>), ReportError> {
    let folder = RunFolder::new(dir);
    let (params, rows) = folder.results()?;
    let specs = folder.metric_specs()?;
    let mut out = BTreeMap::new();
    for s in summarize(&params, &rows) {
        if !s.step.is_empty() {
            continue;
        }
        out.insert((config(&params, &s), s.metric.clone(), s.slice.clone()), s);
    }
    Ok((out, specs))
}

/// A config's name that does not depend on column order: the variant and
/// its non-empty parameters, sorted by name.
fn config(params: &[String], s: &SummaryRow) -> String {
    let mut set: Vec<String> = params
        .iter()
        .zip(&s.params)
        .filter(|(_, v)| !v.is_empty())
        .map(|(p, v)| format!("{p}={v}"))
        .collect();
    set.sort();
    if set.is_empty() {
        s.variant.clone()
    } else {
        format!("{} {}", s.variant, set.join(" "))
    }
}

fn side(s: &SummaryRow) -> Side {
    Side {
        mean: s.mean,
        n: s.n,
        ci_half: s.ci95.map(|(lo, hi)| (hi - lo) / 2.0),
    }
}

/// Compares the run folders `baseline` and `current` (each holding
/// `results.csv` and `metrics.json`, as `retbench run` writes them).
/// Refused (an error) when they hold other suites or profiles, unless
/// `allow_different_plans`, and whenever they have no config in common.
pub fn compare(
    baseline: &Path,
    current: &Path,
    tol: Tolerances,
    allow_different_plans: bool,
) -> Result<CompareReport, ReportError> {
    if !allow_different_plans {
        same_suite_and_profile(baseline, current)?;
    }
    let (base, base_specs) = load(baseline)?;
    let (cur, cur_specs) = load(current)?;
    let spec_of = |metric: &str| -> Result<&MetricSpec, ReportError> {
        cur_specs
            .iter()
            .chain(&base_specs)
            .find(|s| s.name == metric)
            .ok_or_else(|| {
                FileError::Bad {
                    path: RunFolder::new(current).metrics_path(),
                    message: format!("metric {metric} has no spec on either side"),
                }
                .into()
            })
    };
    let configs = |m: &BTreeMap<Key, SummaryRow>| -> BTreeSet<String> {
        m.keys().map(|k| k.0.clone()).collect()
    };
    let (base_configs, cur_configs) = (configs(&base), configs(&cur));
    let mut rows = Vec::new();
    for key in base.keys().chain(cur.keys()).collect::<BTreeSet<_>>() {
        if !(base_configs.contains(&key.0) && cur_configs.contains(&key.0)) {
            continue;
        }
        let spec = spec_of(&key.1)?;
        let (b, c) = (base.get(key).map(side), cur.get(key).map(side));
        let (change, allowed, status) = judge(spec, b, c, tol);
        rows.push(Comparison {
            config: key.0.clone(),
            metric: key.1.clone(),
            slice: key.2.clone(),
            unit: spec.unit.clone(),
            timing: spec.timing,
            baseline: b,
            current: c,
            change,
            allowed,
            status,
        });
    }
    rows.sort_by_key(|r| r.status);
    let joined = base_configs.intersection(&cur_configs).count();
    if joined == 0 {
        return Err(ReportError::Refused(format!(
            "{} and {} have no config in common: nothing to compare",
            baseline.display(),
            current.display()
        )));
    }
    Ok(CompareReport {
        joined,
        baseline: baseline.display().to_string(),
        current: current.display().to_string(),
        tolerances: tol,
        rows,
        only_baseline: base_configs.difference(&cur_configs).cloned().collect(),
        only_current: cur_configs.difference(&base_configs).cloned().collect(),
    })
}

/// The suite and profile of a folder: from `plan.json`, or, for a folder
/// without one (an old baseline), the suite from `results.csv` and the
/// profile unknown.
fn identity(dir: &Path) -> Result<(BTreeSet<String>, Option<Option<String>>), ReportError> {
    let folder = RunFolder::new(dir);
    if let Some(plan) = folder.plan()? {
        return Ok((BTreeSet::from([plan.suite]), Some(plan.profile)));
    }
    let (_, rows) = folder.results()?;
    Ok((rows.into_iter().map(|r| r.suite).collect(), None))
}

/// Refuses two folders of different suites, or of different profiles where
/// both say which.
fn same_suite_and_profile(baseline: &Path, current: &Path) -> Result<(), ReportError> {
    let ((bs, bp), (cs, cp)) = (identity(baseline)?, identity(current)?);
    let name = |p: &Option<String>| p.clone().unwrap_or_else(|| "none".into());
    let list = |s: &BTreeSet<String>| s.iter().cloned().collect::<Vec<_>>().join(", ");
    let why = if !bs.is_empty() && !cs.is_empty() && bs != cs {
        format!("suite {} against {}", list(&bs), list(&cs))
    } else if let (Some(bp), Some(cp)) = (&bp, &cp)
        && bp != cp
    {
        format!("profile {} against {}", name(bp), name(cp))
    } else {
        return Ok(());
    };
    Err(ReportError::Refused(format!(
        "{} and {} are results of different plans ({why}); pass \
         --allow-different-plans to compare them anyway",
        baseline.display(),
        current.display()
    )))
}

/// (change, allowed move, verdict) for one pair of sides.
fn judge(
    spec: &MetricSpec,
    b: Option<Side>,
    c: Option<Side>,
    tol: Tolerances,
) -> (Option<f64>, Option<f64>, Status) {
    let (b, c) = match (b, c) {
        (Some(b), Some(c)) => (b, c),
        (Some(_), None) => return (None, None, Status::Missing),
        (None, _) => return (None, None, Status::New),
    };
    // A value that stops being a number (a loss that diverged) regresses;
    // one that becomes a number again improves.
    match (b.mean.is_nan(), c.mean.is_nan()) {
        (true, true) => return (None, None, Status::Same),
        (false, true) => return (None, None, Status::Regressed),
        (true, false) => return (None, None, Status::Improved),
        (false, false) => {}
    }
    let worse = |delta: f64| match spec.direction {
        Direction::Higher => -delta,
        Direction::Lower => delta,
        Direction::Neither => delta.abs(),
    };
    if spec.timing {
        let change = if b.mean == 0.0 {
            if c.mean == 0.0 {
                0.0
            } else {
                f64::INFINITY * c.mean.signum()
            }
        } else {
            (c.mean - b.mean) / b.mean.abs()
        };
        let bad = worse(change);
        let status = if bad > tol.timing {
            match (spec.direction, tol.strict_timing) {
                (Direction::Neither, _) => Status::Changed,
                (_, true) => Status::Regressed,
                (_, false) => Status::Slower,
            }
        } else if spec.direction != Direction::Neither && -bad > tol.timing {
            Status::Improved
        } else {
            Status::Same
        };
        return (Some(change), Some(tol.timing), status);
    }
    let change = c.mean - b.mean;
    let half = b.ci_half.unwrap_or(0.0).max(c.ci_half.unwrap_or(0.0));
    let allowed = tol.quality.max(half);
    let bad = worse(change);
    let status = if bad > allowed {
        if spec.direction == Direction::Neither {
            Status::Changed
        } else {
            Status::Regressed
        }
    } else if spec.direction != Direction::Neither && -bad > allowed {
        Status::Improved
    } else {
        Status::Same
    };
    (Some(change), Some(allowed), status)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(direction: Direction, timing: bool) -> MetricSpec {
        let mut s = MetricSpec::new("m", "m");
        s.direction = direction;
        s.timing = timing;
        s
    }

    fn one(mean: f64) -> Option<Side> {
        Some(Side {
            mean,
            n: 1,
            ci_half: None,
        })
    }

    #[test]
    fn quality_moves_count_beyond_the_tolerance_or_the_interval() {
        let t = Tolerances::default();
        let hi = spec(Direction::Higher, false);
        assert_eq!(judge(&hi, one(0.9), one(0.86), t).2, Status::Same);
        assert_eq!(judge(&hi, one(0.9), one(0.84), t).2, Status::Regressed);
        assert_eq!(judge(&hi, one(0.9), one(0.96), t).2, Status::Improved);
        let lo = spec(Direction::Lower, false);
        assert_eq!(judge(&lo, one(0.9), one(0.96), t).2, Status::Regressed);
        // A wide interval on either side widens what is allowed.
        let wide = Some(Side {
            mean: 0.9,
            n: 3,
            ci_half: Some(0.2),
        });
        assert_eq!(judge(&hi, wide, one(0.75), t).2, Status::Same);
        assert_eq!(judge(&hi, one(0.75), wide, t).2, Status::Same);
        assert_eq!(judge(&hi, wide, one(0.65), t).2, Status::Regressed);
        let neither = spec(Direction::Neither, false);
        assert_eq!(judge(&neither, one(1.0), one(2.0), t).2, Status::Changed);
        assert_eq!(judge(&hi, one(0.9), one(f64::NAN), t).2, Status::Regressed);
        assert_eq!(judge(&hi, one(0.9), None, t).2, Status::Missing);
        assert_eq!(judge(&hi, None, one(0.9), t).2, Status::New);
    }

    #[test]
    fn timings_warn_unless_strict_and_count_relative_moves() {
        let mut t = Tolerances::default();
        let lat = spec(Direction::Lower, true);
        assert_eq!(judge(&lat, one(100.0), one(120.0), t).2, Status::Same);
        let (change, _, status) = judge(&lat, one(100.0), one(130.0), t);
        assert_eq!(status, Status::Slower);
        assert!((change.unwrap() - 0.3).abs() < 1e-12);
        assert_eq!(judge(&lat, one(100.0), one(70.0), t).2, Status::Improved);
        let thr = spec(Direction::Higher, true);
        assert_eq!(judge(&thr, one(100.0), one(70.0), t).2, Status::Slower);
        t.strict_timing = true;
        assert_eq!(judge(&lat, one(100.0), one(130.0), t).2, Status::Regressed);
        assert!(Status::Regressed.fails() && !Status::Slower.fails());
    }

    #[test]
    fn config_names_ignore_column_order_and_empty_parameters() {
        let row = |params: Vec<&str>| SummaryRow {
            variant: "grid".into(),
            params: params.into_iter().map(String::from).collect(),
            metric: "m".into(),
            slice: String::new(),
            step: String::new(),
            n: 1,
            mean: 0.0,
            std: 0.0,
            ci95: None,
            interval: Default::default(),
            seeds: vec![],
        };
        let a = config(
            &["x".into(), "y".into(), "z".into()],
            &row(vec!["1", "", "3"]),
        );
        let b = config(&["z".into(), "x".into()], &row(vec!["3", "1"]));
        assert_eq!(a, b);
        assert_eq!(a, "grid x=1 z=3");
    }
}
