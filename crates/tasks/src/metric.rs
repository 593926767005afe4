//! One measured number: the row type of `results.csv` before the harness adds
//! run columns. `slice` is empty for whole-run metrics and `name=value`
//! otherwise (`batch=64`, `eps=0.1`); `step` is set only for values recorded
//! during training.

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
