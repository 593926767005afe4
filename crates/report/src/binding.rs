//! Binding outcomes per config: whether each seed's model bound (its
//! `time_to_bind` is a step) or never did within its budget (0, a value
//! censored at the run's `train.steps`). A mean of `time_to_bind` would
//! average "never" as 0 and a percentile interval over a handful of
//! bind/no-bind outcomes says little, so this table gives what such an
//! outcome needs: the share of seeds bound with a 95% Wilson score
//! interval, the median step with censoring (a median past the budget is
//! "never"), and the share bound by each budget of the suite.

use std::collections::BTreeMap;

use retbench_harness::folder::ResultRow;
use statrs::distribution::{ContinuousCDF, Normal};

/// The metric whose rows this table reads.
pub const METRIC: &str = "time_to_bind";

/// One config's binding outcome over its seeds.
#[derive(Debug, Clone, PartialEq)]
pub struct BindingRow {
    pub variant: String,
    pub params: Vec<String>,
    /// Steps at which each seed bound (`None`: never, within `budget`),
    /// in the order of the results.
    pub seeds: Vec<(u64, Option<u64>)>,
    /// The largest `train.steps` of the config's runs (0 where the plan
    /// does not say).
    pub budget: u64,
}

impl BindingRow {
    pub fn n(&self) -> usize {
        self.seeds.len()
    }

    pub fn bound(&self) -> usize {
        self.seeds.iter().filter(|(_, t)| t.is_some()).count()
    }

    /// The share bound and its 95% Wilson score interval.
    pub fn rate(&self) -> (f64, (f64, f64)) {
        let (k, n) = (self.bound() as f64, self.n() as f64);
        (k / n, wilson(self.bound(), self.n()))
    }

    /// The median step to bind, never-bound seeds counting as later than
    /// any step; `None` where the median seed never bound.
    pub fn median(&self) -> Option<f64> {
        let mut t: Vec<u64> = self
            .seeds
            .iter()
            .map(|(_, t)| t.unwrap_or(u64::MAX))
            .collect();
        t.sort_unstable();
        let n = t.len();
        let mid = [t[(n - 1) / 2], t[n / 2]];
        match mid.contains(&u64::MAX) {
            true => None,
            false => Some((mid[0] + mid[1]) as f64 / 2.0),
        }
    }

    /// The mean step among the seeds that bound (`None`: none did).
    pub fn mean_bound(&self) -> Option<f64> {
        let t: Vec<u64> = self.seeds.iter().filter_map(|(_, t)| *t).collect();
        (!t.is_empty()).then(|| t.iter().sum::<u64>() as f64 / t.len() as f64)
    }

    /// The share of seeds bound by step `s`; `None` when `s` is past the
    /// budget (a seed not bound by then might have bound later).
    pub fn share_by(&self, s: u64) -> Option<f64> {
        if self.budget > 0 && s > self.budget {
            return None;
        }
        let k = self.seeds.iter().filter(|(_, t)| t.is_some_and(|t| t <= s));
        Some(k.count() as f64 / self.n() as f64)
    }
}

/// The 95% Wilson score interval of `k` successes in `n` trials: unlike
/// the normal approximation it stays inside [0, 1] and is not empty at
/// 0 or n successes (10 of 10 seeds bound: [0.72, 1]).
pub fn wilson(k: usize, n: usize) -> (f64, f64) {
    if n == 0 {
        return (0.0, 1.0);
    }
    let z = Normal::standard().inverse_cdf(0.975);
    let (n, p) = (n as f64, k as f64 / n as f64);
    let denom = 1.0 + z * z / n;
    let centre = (p + z * z / (2.0 * n)) / denom;
    let half = z / denom * (p * (1.0 - p) / n + z * z / (4.0 * n * n)).sqrt();
    ((centre - half).max(0.0), (centre + half).min(1.0))
}

/// One row per (variant, parameters) with final `time_to_bind` values, in
/// order of first appearance; `budgets` maps a run id to its
/// `train.steps`.
pub fn rows(results: &[ResultRow], budgets: &BTreeMap<String, u64>) -> Vec<BindingRow> {
    let mut out: Vec<BindingRow> = Vec::new();
    let finals = results
        .iter()
        .filter(|r| r.metric == METRIC && r.slice.is_empty() && r.step.is_empty());
    for r in finals {
        let budget = budgets.get(&r.run_id).copied().unwrap_or(0);
        let at = (r.value > 0.0).then_some(r.value as u64);
        match out
            .iter_mut()
            .find(|b| b.variant == r.variant && b.params == r.params)
        {
            Some(b) => {
                b.seeds.push((r.seed, at));
                b.budget = b.budget.max(budget);
            }
            None => out.push(BindingRow {
                variant: r.variant.clone(),
                params: r.params.clone(),
                seeds: vec![(r.seed, at)],
                budget,
            }),
        }
    }
    out
}

/// The steps the table reports shares at: every budget in the suite, and
/// the doublings of the smallest up to the largest (1500 and 6000 give
/// 1500, 3000 and 6000).
pub fn checkpoints(rows: &[BindingRow]) -> Vec<u64> {
    let mut b: Vec<u64> = rows.iter().map(|r| r.budget).filter(|&b| b > 0).collect();
    b.sort_unstable();
    b.dedup();
    let (Some(&lo), Some(&hi)) = (b.first(), b.last()) else {
        return Vec::new();
    };
    let mut s = lo;
    while s * 2 <= hi {
        s *= 2;
        b.push(s);
    }
    b.sort_unstable();
    b.dedup();
    b
}

/// The table as a header and rows of cells, the config label first
/// (`label` turns a variant and parameter values into one).
pub fn table(
    rows: &[BindingRow],
    label: impl Fn(&str, &[String]) -> String,
) -> (Vec<String>, Vec<Vec<String>>) {
    let steps = checkpoints(rows);
    let mut header: Vec<String> = [
        "config",
        "budget",
        "bound",
        "rate [95% Wilson]",
        "median step",
        "mean step of bound",
    ]
    .map(String::from)
    .to_vec();
    header.extend(steps.iter().map(|s| format!("by {s}")));
    header.push("per seed".into());
    let cells = rows
        .iter()
        .map(|r| {
            let (rate, (lo, hi)) = r.rate();
            let mut c = vec![
                label(&r.variant, &r.params),
                r.budget.to_string(),
                format!("{} of {}", r.bound(), r.n()),
                format!("{rate:.2} [{lo:.2}, {hi:.2}]"),
                r.median()
                    .map_or_else(|| "never".into(), |m| format!("{m}")),
                r.mean_bound()
                    .map_or_else(|| "–".into(), |m| format!("{m:.0}")),
            ];
            c.extend(steps.iter().map(|&s| {
                r.share_by(s)
                    .map_or_else(|| "–".into(), |x| format!("{x:.2}"))
            }));
            c.push(per_seed(r));
            c
        })
        .collect();
    (header, cells)
}

/// "s0 500, s1 never" for up to 10 seeds.
fn per_seed(r: &BindingRow) -> String {
    if r.seeds.len() > 10 {
        return "–".into();
    }
    r.seeds
        .iter()
        .map(|(s, t)| match t {
            Some(t) => format!("s{s} {t}"),
            None => format!("s{s} never"),
        })
        .collect::<Vec<_>>()
        .join(", ")
}

/// What the table is, for the text above it.
pub const ABOUT: &str = "Per config: seeds whose model bound (time_to_bind: the first evaluation with accuracy above 0.9 on the binding slice) within the run's budget (train.steps; runs with train.stop end earlier once bound), the share with a 95% Wilson score interval, the median step to bind counting never-bound seeds as later than any step (\"never\" when the median seed did not bind), the mean step among the seeds that bound, and the share bound by each step (\"–\" past the config's budget)";

#[cfg(test)]
mod tests {
    use super::*;

    fn row(seeds: &[Option<u64>], budget: u64) -> BindingRow {
        BindingRow {
            variant: "grid".into(),
            params: vec![],
            seeds: seeds
                .iter()
                .enumerate()
                .map(|(i, &t)| (i as u64, t))
                .collect(),
            budget,
        }
    }

    #[test]
    fn wilson_matches_the_textbook_values() {
        // Wilson (1927) at z = 1.96: 10 of 10 → [0.722, 1]; 0 of 5 →
        // [0, 0.434]; 5 of 10 → [0.237, 0.763].
        let r = |(a, b): (f64, f64)| ((a * 1000.0).round(), (b * 1000.0).round());
        assert_eq!(r(wilson(10, 10)), (722.0, 1000.0));
        assert_eq!(r(wilson(0, 5)), (0.0, 434.0));
        assert_eq!(r(wilson(5, 10)), (237.0, 763.0));
    }

    #[test]
    fn a_never_bound_seed_counts_as_later_than_any_step() {
        assert_eq!(
            row(&[Some(500), None, Some(700)], 1500).median(),
            Some(700.0)
        );
        assert_eq!(row(&[Some(500), None, None], 1500).median(), None);
        assert_eq!(row(&[Some(400), Some(600)], 1500).median(), Some(500.0));
        assert_eq!(row(&[Some(400), None], 1500).median(), None);
    }

    #[test]
    fn shares_past_the_budget_are_unknown() {
        let r = row(&[Some(500), Some(2000), None, Some(1500)], 3000);
        assert_eq!(r.share_by(1500), Some(0.5));
        assert_eq!(r.share_by(3000), Some(0.75));
        assert_eq!(r.share_by(6000), None);
        assert_eq!(
            checkpoints(&[r, row(&[None], 1500), row(&[None], 6000)]),
            vec![1500, 3000, 6000]
        );
    }

    #[test]
    fn rows_group_seeds_by_config_and_read_zero_as_never() {
        let rr = |id: &str, p: &str, seed: u64, v: f64| ResultRow {
            run_id: id.into(),
            suite: "s".into(),
            variant: "grid".into(),
            seed,
            metric: METRIC.into(),
            slice: String::new(),
            step: String::new(),
            value: v,
            params: vec![p.into()],
        };
        let results = [
            rr("a0", "64", 0, 500.0),
            rr("b0", "128", 0, 0.0),
            rr("a1", "64", 1, 0.0),
        ];
        let budgets = BTreeMap::from([("a0".to_string(), 1500), ("a1".to_string(), 1500)]);
        let rows = rows(&results, &budgets);
        assert_eq!(rows.len(), 2);
        assert_eq!(rows[0].seeds, vec![(0, Some(500)), (1, None)]);
        assert_eq!((rows[0].budget, rows[1].budget), (1500, 0));
        assert_eq!(rows[1].bound(), 0);
    }
}
