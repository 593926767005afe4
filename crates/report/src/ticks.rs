//! Tick positions of log-scaled axes. plotters places log ticks at powers
//! of ten and fills the first decade only, so an axis spanning less than
//! a decade or two (slots 256–1024, a latency of 80–130 µs) gets one or
//! two labels, sometimes the same one twice. Here a log axis gets the
//! sparsest of the usual mantissa sets (1; 1, 3; 1, 2, 5; 1, 2, 3, 5, 7;
//! 1–9) that puts at least three ticks in its range, and evenly spaced
//! ticks when even 1–9 does not (a range narrower than one step of it).

/// Mantissa sets from sparsest to densest.
const SETS: [&[f64]; 5] = [
    &[1.0],
    &[1.0, 3.0],
    &[1.0, 2.0, 5.0],
    &[1.0, 2.0, 3.0, 5.0, 7.0],
    &[1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0, 9.0],
];

/// At most this many ticks on a log axis: more decades than this keep
/// every second (third, …) one.
const MOST: usize = 8;

/// At least this many labelled ticks on every axis.
const LEAST: usize = 3;

/// Tick positions for a log axis over `[lo, hi]` (both > 0).
pub(crate) fn log_ticks(lo: f64, hi: f64) -> Vec<f64> {
    if !(lo > 0.0 && hi > lo && hi.is_finite()) {
        return vec![lo];
    }
    for set in SETS {
        let ticks = mantissa_ticks(lo, hi, set);
        if ticks.len() >= LEAST {
            return thinned(ticks);
        }
    }
    linear_ticks(lo, hi)
}

/// Every m·10^k in `[lo, hi]` for m in `set`, ascending.
fn mantissa_ticks(lo: f64, hi: f64, set: &[f64]) -> Vec<f64> {
    let first = lo.log10().floor() as i32;
    let last = hi.log10().ceil() as i32;
    let mut out = Vec::new();
    for k in first..=last {
        for m in set {
            // Rounded to 12 significant digits so that 3·10^-1 prints as 0.3.
            let v = round_sig(m * 10f64.powi(k));
            if v >= lo && v <= hi {
                out.push(v);
            }
        }
    }
    out
}

/// Every n-th tick, so that at most `MOST` remain.
fn thinned(ticks: Vec<f64>) -> Vec<f64> {
    let every = ticks.len().div_ceil(MOST);
    ticks.into_iter().step_by(every).collect()
}

/// Evenly spaced ticks (steps of 1, 2, 2.5 or 5 × 10^k), the widest
/// step that still puts `LEAST` in the range (the fewest labels, since
/// these are long: 260000, 280000).
fn linear_ticks(lo: f64, hi: f64) -> Vec<f64> {
    let base = 10f64.powi((hi - lo).log10().floor() as i32);
    let steps = [1.0, 0.1, 0.01].map(|d| [5.0, 2.5, 2.0, 1.0].map(|m| m * d * base));
    for step in steps.into_iter().flatten() {
        let ticks: Vec<f64> = ((lo / step).ceil() as i64..=(hi / step).floor() as i64)
            .map(|i| round_sig(i as f64 * step))
            .collect();
        if ticks.len() >= LEAST {
            return ticks;
        }
    }
    vec![lo, hi]
}

fn round_sig(v: f64) -> f64 {
    format!("{v:.11e}").parse().unwrap_or(v)
}

#[cfg(test)]
mod tests {
    use super::log_ticks;

    #[test]
    fn wide_ranges_get_decades_and_no_more_than_eight() {
        assert_eq!(log_ticks(77.0, 1.3e7), vec![1e2, 1e3, 1e4, 1e5, 1e6, 1e7]);
        let many = log_ticks(1e-9, 1e9);
        assert!(many.len() <= 8 && many.len() >= 3, "{many:?}");
        assert!(
            many.iter()
                .all(|v| (v.log10() - v.log10().round()).abs() < 1e-9)
        );
    }

    #[test]
    fn narrow_ranges_get_denser_mantissas_then_even_steps() {
        // Slots 256 to 1024, padded by 1.3 either side.
        assert_eq!(log_ticks(197.0, 1331.0), vec![200.0, 500.0, 1000.0]);
        assert_eq!(log_ticks(30.0, 400.0), vec![30.0, 100.0, 300.0]);
        assert_eq!(log_ticks(24.6, 124.8), vec![30.0, 50.0, 70.0, 100.0]);
        assert_eq!(log_ticks(78.0, 132.0), vec![80.0, 90.0, 100.0]);
        assert_eq!(log_ticks(101.0, 118.0), vec![105.0, 110.0, 115.0]);
        assert_eq!(log_ticks(0.21, 0.33), vec![0.225, 0.25, 0.275, 0.3, 0.325]);
    }

    #[test]
    fn every_range_gets_at_least_three_distinct_ticks_inside_it() {
        let mut lo = 1e-4;
        while lo < 1e6 {
            for ratio in [1.05, 1.3, 2.0, 4.9, 11.0, 120.0, 1e5] {
                let hi = lo * ratio;
                let t = log_ticks(lo, hi);
                assert!(t.len() >= 3, "{lo}..{hi}: {t:?}");
                assert!(t.windows(2).all(|w| w[0] < w[1]), "{lo}..{hi}: {t:?}");
                assert!(t.iter().all(|&v| v >= lo && v <= hi), "{lo}..{hi}: {t:?}");
            }
            lo *= 1.7;
        }
    }
}
