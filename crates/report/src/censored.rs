//! Censored outcomes over seeds. A metric that times an event
//! (`time_to_bind`, `half_life`) has no value for a run where the event did
//! not happen: it records a sentinel (0: never) or a bound (the stream's
//! length). A mean over such values averages the sentinel and a
//! Student-t interval treats a bound as a measurement, so rows of a
//! censored metric carry the median over seeds instead, censored values
//! ordered after every measured one, with a distribution-free interval
//! from order statistics (the Kaplan–Meier median and its interval when
//! every run is censored at the same point, as in one config of a suite).

use std::collections::BTreeMap;

use retbench_harness::folder::ResultRow;
use retbench_tasks::{Censoring, MetricSpec};
use statrs::distribution::{Binomial, DiscreteCDF};

use crate::summary::{Interval, SummaryRow};

/// Rewrites every row of a censored metric: `mean` becomes the median (or
/// its bound), `ci95` the order-statistic interval, `interval` says which.
pub fn medians(rows: &mut [SummaryRow], results: &[ResultRow], specs: &[MetricSpec]) {
    let flags = flag_values(results, specs);
    for r in rows.iter_mut() {
        let Some(how) = specs
            .iter()
            .find(|s| s.name == r.metric)
            .and_then(|s| s.censoring.as_ref())
        else {
            continue;
        };
        let values: Vec<(f64, bool)> = r
            .seeds
            .iter()
            .map(|&(seed, v)| match how {
                Censoring::ZeroIsNever => (v, v == 0.0),
                Censoring::Flagged { flag } => {
                    let key = (
                        flag.clone(),
                        r.variant.clone(),
                        r.params.clone(),
                        seed,
                        r.step.clone(),
                    );
                    (v, flags.get(&key).is_some_and(|&f| f > 0.5))
                }
            })
            .collect();
        let never = matches!(how, Censoring::ZeroIsNever);
        let (median, censored) = median(&values, never);
        r.mean = median;
        r.ci95 = interval(&values, never);
        r.interval = match censored {
            true => Interval::CensoredMedian,
            false => Interval::Median,
        };
    }
}

type FlagKey = (String, String, Vec<String>, u64, String);

/// The value of every flag metric a censored spec names, by (flag,
/// variant, params, seed, step).
fn flag_values(results: &[ResultRow], specs: &[MetricSpec]) -> BTreeMap<FlagKey, f64> {
    let names: Vec<&str> = specs
        .iter()
        .filter_map(|s| match &s.censoring {
            Some(Censoring::Flagged { flag }) => Some(flag.as_str()),
            _ => None,
        })
        .collect();
    results
        .iter()
        .filter(|r| names.contains(&r.metric.as_str()) && r.slice.is_empty())
        .map(|r| {
            let key = (
                r.metric.clone(),
                r.variant.clone(),
                r.params.clone(),
                r.seed,
                r.step.clone(),
            );
            (key, r.value)
        })
        .collect()
}

/// The values in order, censored ones after every measured one (a never
/// event after everything; a bound after measured values up to it).
fn sorted(values: &[(f64, bool)], never: bool) -> Vec<(f64, bool)> {
    let key = |&(v, c): &(f64, bool)| match (c, never) {
        (true, true) => (f64::INFINITY, 1),
        (true, false) => (v, 1),
        (false, _) => (v, 0),
    };
    let mut v = values.to_vec();
    v.sort_by(|a, b| key(a).0.total_cmp(&key(b).0).then(key(a).1.cmp(&key(b).1)));
    v
}

/// The median and whether it is censored: the middle value (the mean of
/// the two middle ones where both are measured); where a middle value is
/// censored, its bound (NaN for never).
pub fn median(values: &[(f64, bool)], never: bool) -> (f64, bool) {
    if values.is_empty() {
        return (f64::NAN, false);
    }
    let v = sorted(values, never);
    let n = v.len();
    let (a, b) = (v[(n - 1) / 2], v[n / 2]);
    match (a.1 || b.1, never) {
        (false, _) => ((a.0 + b.0) / 2.0, false),
        (true, true) => (f64::NAN, true),
        (true, false) => (if a.1 { a.0 } else { b.0 }, true),
    }
}

/// The distribution-free 95% interval of the median: order statistics
/// x_(j) and x_(n+1-j) for the largest j with P(Bin(n, 1/2) < j) ≤ 0.025
/// (coverage ≥ 95%); `None` below 6 seeds, where no such j exists. An
/// upper end at a censored value is unbounded (infinity).
pub fn interval(values: &[(f64, bool)], never: bool) -> Option<(f64, f64)> {
    let n = values.len() as u64;
    let bin = Binomial::new(0.5, n).ok()?;
    let j = (1..=n / 2)
        .take_while(|&j| bin.cdf(j - 1) <= 0.025)
        .last()?;
    let v = sorted(values, never);
    let (lo, hi) = (v[(j - 1) as usize], v[(n - j) as usize]);
    let lo = if lo.1 && never { f64::INFINITY } else { lo.0 };
    let hi = if hi.1 { f64::INFINITY } else { hi.0 };
    Some((lo, hi))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(xs: &[f64]) -> Vec<(f64, bool)> {
        xs.iter().map(|&x| (x, false)).collect()
    }

    #[test]
    fn never_sorts_after_every_step_and_a_censored_middle_has_no_value() {
        let v = [(500.0, false), (0.0, true), (700.0, false)];
        assert_eq!(median(&v, true), (700.0, false));
        let (x, censored) = median(&[(500.0, false), (0.0, true), (0.0, true)], true);
        assert!(x.is_nan() && censored);
        assert_eq!(median(&m(&[400.0, 600.0]), true), (500.0, false));
    }

    #[test]
    fn a_bound_in_the_middle_gives_the_median_as_at_least_that_bound() {
        // half_life 12 and 30 measured, two never halved within 50 writes.
        let v = [(12.0, false), (50.0, true), (30.0, false), (50.0, true)];
        assert_eq!(median(&v, false), (50.0, true));
        let v = [(12.0, false), (50.0, true), (30.0, false)];
        assert_eq!(median(&v, false), (30.0, false));
    }

    #[test]
    fn the_order_statistic_interval_matches_the_binomial_tables() {
        // n = 5: P(Bin(5, 1/2) = 0) = 1/32 > 0.025, no 95% interval.
        assert_eq!(interval(&m(&[1.0, 2.0, 3.0, 4.0, 5.0]), true), None);
        // n = 6: j = 1 (P(0) = 1/64): [x(1), x(6)], 96.9%.
        let six = m(&[6.0, 1.0, 5.0, 2.0, 4.0, 3.0]);
        assert_eq!(interval(&six, true), Some((1.0, 6.0)));
        // n = 10: P(X ≤ 1) = 11/1024 ≤ 0.025 < P(X ≤ 2) = 56/1024: j = 2,
        // [x(2), x(9)], 97.9%.
        let ten: Vec<f64> = (1..=10).map(f64::from).collect();
        assert_eq!(interval(&m(&ten), true), Some((2.0, 9.0)));
        // Three of ten never bound: the upper end is unbounded.
        let mut v = m(&ten[..7]);
        v.extend([(0.0, true); 3]);
        assert_eq!(interval(&v, true), Some((2.0, f64::INFINITY)));
    }
}
