//! One measured number: the row type of `results.csv` before the harness adds
//! run columns. `slice` is empty for whole-run metrics and `name=value`
//! otherwise (`batch=64`, `eps=0.1`); `step` is set only for values recorded
//! during training.
//!
//! Every metric a task can report has a [`MetricSpec`]: what it measures,
//! its unit, which direction is better, its bounds, its chance level, the
//! slices it comes in and whether it is a timing. `run` writes the specs of
//! a plan to `metrics.json`; the report draws axes, bands and reference
//! lines from them, and a regression check reads the directions.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Metric {
    pub metric: String,
    #[serde(default)]
    pub slice: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub step: Option<u64>,
    pub value: f64,
}

impl Metric {
    /// A whole-run metric.
    pub fn new(metric: &str, value: f64) -> Self {
        Metric {
            metric: metric.to_string(),
            slice: String::new(),
            step: None,
            value,
        }
    }

    /// A metric for one slice, e.g. `Metric::sliced("read_us_p50", "batch", 64, v)`.
    pub fn sliced(metric: &str, key: &str, at: impl std::fmt::Display, value: f64) -> Self {
        Metric {
            metric: metric.to_string(),
            slice: format!("{key}={at}"),
            step: None,
            value,
        }
    }
}

/// Which way a metric is better.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Direction {
    Higher,
    Lower,
    /// Descriptive (a size, a parameter count): neither way is better.
    Neither,
}

/// A figure a suite declares (`figures:` in its YAML): a metric against
/// one of its numeric slices, one line per value of the `lines`
/// parameters, one figure per value of the `panels` parameters. Runs that
/// vary none of the panel parameters (a `no_memory` variant) are drawn in
/// every panel, as a reference.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FigureSpec {
    pub metric: String,
    /// The slice key on the x axis (`writes`).
    pub by: String,
    /// Varied parameters (dotted paths) whose values name the lines.
    pub lines: Vec<String>,
    /// Varied parameters whose values split the figures.
    #[serde(default)]
    pub panels: Vec<String>,
    /// Only runs whose varied parameters have these values (dotted path →
    /// value as written in the suite); runs that do not vary a path are
    /// kept, as references.
    #[serde(default, rename = "where", skip_serializing_if = "BTreeMap::is_empty")]
    pub only: BTreeMap<String, serde_json::Value>,
}

/// One of a suite's headline figures (`paper: figures:` in its YAML),
/// drawn into the report's `paper/` folder before everything else, with
/// named series and a legend. Without `by` it compares final values at
/// `slice`: a point with its 95% interval per group (x axis) and series.
/// With `by` it draws a line per series against that slice key, one
/// point per value (whole-number keys on an axis of their values).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PaperFigure {
    /// File stem in `paper/` (letters, digits, `_` and `-`).
    pub name: String,
    pub metric: String,
    /// The slice a comparison shows (`gap=1`); empty for an unsliced metric.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub slice: String,
    /// A slice key: lines against it instead of a comparison.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub by: Option<String>,
    /// Categories on the x axis of a comparison (default: one, unnamed).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub groups: Vec<Pick>,
    /// The series, in legend order.
    pub series: Vec<Pick>,
    /// What the title says after the metric (default: the slice, or `by
    /// <key>`).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub title: String,
    /// Paired differences the paper's claims rest on (`of` − `against`,
    /// two of the figure's series), per group, paired by seed.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub contrasts: Vec<Contrast>,
}

/// A claim's effect size: series `of` minus series `against`, seed by
/// seed (runs of one seed share their data), in each group.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Contrast {
    pub of: String,
    pub against: String,
}

/// A named selection of a suite's configs: those whose varied parameters
/// have the values in `where` (a parameter's dotted path, a path into a
/// structured parameter such as `task.kind`, or `variant`). A config
/// belongs to the first pick it matches.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Pick {
    pub label: String,
    #[serde(default, rename = "where")]
    pub only: BTreeMap<String, serde_json::Value>,
}

/// What one metric means, for reports and regression checks.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MetricSpec {
    pub name: String,
    /// What it measures, as an axis label without the unit.
    pub about: String,
    /// Unit as printed on an axis (`µs`, `tokens/s`); empty for a pure number.
    pub unit: String,
    pub direction: Direction,
    /// The smallest and largest values the metric can take, where it has them.
    pub lower: Option<f64>,
    pub upper: Option<f64>,
    /// Whether values span decades (latencies), so a log axis reads best.
    pub log_axis: bool,
    /// The value of a model that guesses, where there is one.
    pub chance: Option<f64>,
    /// The slice keys it comes in (`batch`, `gap`); empty when whole-run.
    pub slices: Vec<String>,
    /// A wall-clock measurement: noisy, compared with a relative tolerance.
    pub timing: bool,
    /// Whether the report draws a figure of it.
    pub plot: bool,
    /// Whole-run metrics (costs) to draw it against, one point per config:
    /// the trade-off figures (`copy_cosine` against `write_us_p50`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub against: Vec<String>,
    /// Levels beyond chance that a result should be read against, drawn as
    /// labelled dotted lines (the recall task's "values without keys"
    /// predictor).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub references: Vec<Reference>,
    /// Parameters (dotted paths, as in a suite's grid) the metric cannot
    /// depend on, because the task measures it before they act (the scaling
    /// task times its reads before any write). Figures pool the configs
    /// that differ only in these, so noise between identical measurements
    /// is not drawn as a difference; tables keep every config.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub independent_of: Vec<String>,
    /// Whether a run's value can be censored: the event the metric times
    /// did not happen within the run, so the value is a bound, not a
    /// measurement. Summaries give the median over seeds, never a mean.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub censoring: Option<Censoring>,
}

/// How a censored value is recorded (see [`MetricSpec::censoring`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum Censoring {
    /// 0 means never within the run (`time_to_bind`): later than any step.
    ZeroIsNever,
    /// The run also reports the 0/1 metric `flag`; 1 marks the value as a
    /// lower bound (`half_life`: never halved within the stream, the value
    /// is the stream's length).
    Flagged { flag: String },
}

/// A named level of a metric (see [`MetricSpec::references`]).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Reference {
    /// What reaches it, as a legend label (`values without keys`).
    pub label: String,
    pub value: f64,
    /// The slice it holds for (`gap=1`); empty for every slice.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub slice: String,
}

impl MetricSpec {
    /// A metric where higher is better, plotted, linear axis, no bounds.
    pub fn new(name: &str, about: &str) -> Self {
        MetricSpec {
            name: name.into(),
            about: about.into(),
            unit: String::new(),
            direction: Direction::Higher,
            lower: None,
            upper: None,
            log_axis: false,
            chance: None,
            slices: Vec::new(),
            timing: false,
            plot: true,
            against: Vec::new(),
            references: Vec::new(),
            independent_of: Vec::new(),
            censoring: None,
        }
    }
    /// A share in [0, 1] where higher is better.
    pub fn share(name: &str, about: &str) -> Self {
        Self::new(name, about).bounds(0.0, 1.0)
    }
    /// A latency in µs: lower is better, a timing, on a log axis, ≥ 0.
    pub fn latency_us(name: &str, about: &str) -> Self {
        let mut s = Self::new(name, about).unit("µs").lower().log().timing();
        s.lower = Some(0.0);
        s
    }
    pub fn unit(mut self, unit: &str) -> Self {
        self.unit = unit.into();
        self
    }
    pub fn lower(mut self) -> Self {
        self.direction = Direction::Lower;
        self
    }
    pub fn neither(mut self) -> Self {
        self.direction = Direction::Neither;
        self
    }
    pub fn bounds(mut self, lo: f64, hi: f64) -> Self {
        (self.lower, self.upper) = (Some(lo), Some(hi));
        self
    }
    pub fn at_least(mut self, lo: f64) -> Self {
        self.lower = Some(lo);
        self
    }
    pub fn log(mut self) -> Self {
        self.log_axis = true;
        self
    }
    pub fn timing(mut self) -> Self {
        self.timing = true;
        self
    }
    pub fn chance(mut self, level: f64) -> Self {
        self.chance = Some(level);
        self
    }
    pub fn sliced(mut self, key: &str) -> Self {
        self.slices.push(key.into());
        self
    }
    pub fn no_plot(mut self) -> Self {
        self.plot = false;
        self
    }
    /// Also drawn against the whole-run metric `cost`, one point per config.
    pub fn against(mut self, cost: &str) -> Self {
        self.against.push(cost.into());
        self
    }
    /// A labelled reference level for slice `slice` (empty: every slice;
    /// see [`MetricSpec::references`]).
    pub fn reference(mut self, label: &str, slice: &str, value: f64) -> Self {
        self.references.push(Reference {
            label: label.into(),
            value,
            slice: slice.into(),
        });
        self
    }
    /// Declares parameters the metric cannot depend on (see
    /// [`MetricSpec::independent_of`]).
    pub fn independent_of(mut self, paths: &[&str]) -> Self {
        self.independent_of
            .extend(paths.iter().map(|p| p.to_string()));
        self
    }
    /// Declares how a value is censored (see [`MetricSpec::censoring`]).
    pub fn censored(mut self, how: Censoring) -> Self {
        self.censoring = Some(how);
        self
    }
    /// The axis label: what it measures, with its unit.
    pub fn label(&self) -> String {
        if self.unit.is_empty() {
            self.about.clone()
        } else {
            format!("{} ({})", self.about, self.unit)
        }
    }
    /// Whether `m` is a value this spec describes: a slice it declares, a
    /// value inside its bounds (or NaN, which records a failure to measure).
    pub fn check(&self, m: &Metric) -> Result<(), String> {
        if m.metric != self.name {
            return Err(format!("{} is not {}", m.metric, self.name));
        }
        if !m.slice.is_empty() {
            let key = m.slice.split('=').next().unwrap_or_default();
            if !self.slices.iter().any(|s| s == key) {
                return Err(format!(
                    "{}: slice {:?} is not one of {:?}",
                    self.name, m.slice, self.slices
                ));
            }
        }
        let v = m.value;
        if v.is_finite()
            && (self.lower.is_some_and(|lo| v < lo - 1e-9)
                || self.upper.is_some_and(|hi| v > hi + 1e-9))
        {
            return Err(format!(
                "{} = {v} lies outside [{:?}, {:?}]",
                self.name, self.lower, self.upper
            ));
        }
        Ok(())
    }
}

/// The nearest-rank percentile `p` (0–100) of `xs`; NaN when empty.
pub fn percentile(xs: &[f64], p: f64) -> f64 {
    if xs.is_empty() {
        return f64::NAN;
    }
    let mut sorted = xs.to_vec();
    sorted.sort_by(f64::total_cmp);
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_rank_percentiles() {
        let xs: Vec<f64> = (1..=100).map(f64::from).collect();
        assert_eq!(percentile(&xs, 50.0), 50.0);
        assert_eq!(percentile(&xs, 99.0), 99.0);
        assert_eq!(percentile(&xs, 100.0), 100.0);
        assert_eq!(percentile(&[3.0, 1.0, 2.0], 50.0), 2.0);
        assert!(percentile(&[], 50.0).is_nan());
    }
}
