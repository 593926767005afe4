//! Continual-learning summaries of accuracy over a stream of later writes:
//! average forgetting (Chaudhry et al. 2018, "Riemannian Walk for
//! Incremental Learning"), backward transfer (Lopez-Paz & Ranzato 2017,
//! "Gradient Episodic Memory for Continual Learning") and the half-life of
//! retained accuracy. Pure functions over accuracy matrices and curves, so
//! that the formulas are tested on hand-computed values before any task
//! reports them (the drift suite's metrics).
//!
//! An accuracy matrix `r` has `r[i][j]`: accuracy on fact set (task) `j`
//! measured after stage `i` (after the writes of stage `i`), for `j ≤ i`;
//! entries with `j > i` are ignored.

/// Forgetting of task `j` after the last stage T (Chaudhry et al. 2018,
/// eq. 8): `f_j = max_{l ∈ [j, T)} r[l][j] − r[T][j]`, the best accuracy it
/// had at an earlier stage minus its accuracy now. Rows may be ragged (only
/// the tasks measured at that stage); the drift suite passes one column,
/// its original facts, measured after every later write. `None` when task
/// `j` was not measured at the last stage and at least one earlier one.
pub fn task_forgetting(r: &[Vec<f64>], j: usize) -> Option<f64> {
    let t = r.len().checked_sub(1).filter(|&t| t > j)?;
    let last = *r[t].get(j)?;
    let best = (j..t)
        .filter_map(|l| r[l].get(j).copied())
        .fold(f64::NEG_INFINITY, f64::max);
    best.is_finite().then_some(best - last)
}

/// Backward transfer of task `j` (one term of Lopez-Paz & Ranzato 2017,
/// eq. 3): `r[T][j] − r[j][j]`, its accuracy after the last stage minus
/// its accuracy right after it was learned. Negative: later stages erased
/// it. `None` when either entry is missing or T = j.
pub fn task_backward_transfer(r: &[Vec<f64>], j: usize) -> Option<f64> {
    let t = r.len().checked_sub(1).filter(|&t| t > j)?;
    Some(r[t].get(j)? - r[j].get(j)?)
}

/// Average forgetting after the last stage T (Chaudhry et al. 2018, eq. 9):
/// `F_T = 1/(T−1) · Σ_{j<T} f_j` with [`task_forgetting`]'s `f_j`. Stages
/// are 0-based here (the paper's k = T+1). `None` with fewer than two
/// stages.
pub fn average_forgetting(r: &[Vec<f64>]) -> Option<f64> {
    let t = r.len().checked_sub(1).filter(|&t| t >= 1)?;
    let f: Option<Vec<f64>> = (0..t).map(|j| task_forgetting(r, j)).collect();
    Some(f?.iter().sum::<f64>() / t as f64)
}

/// Backward transfer (Lopez-Paz & Ranzato 2017, eq. 3):
/// `BWT = 1/(T−1) · Σ_{i<T} (r[T][i] − r[i][i])` after the last stage T
/// (0-based). Negative: later stages erased earlier ones. `None` with
/// fewer than two stages.
pub fn backward_transfer(r: &[Vec<f64>]) -> Option<f64> {
    let t = r.len().checked_sub(1).filter(|&t| t >= 1)?;
    let b: Option<Vec<f64>> = (0..t).map(|i| task_backward_transfer(r, i)).collect();
    Some(b?.iter().sum::<f64>() / t as f64)
}

/// Writes until accuracy has lost half its excess over chance: the first
/// `w` where `a(w) − chance ≤ (a(w₀) − chance) / 2`, with `(w₀, a(w₀))` the
/// curve's first point and linear interpolation between measured points.
/// `curve` is (writes, accuracy) in increasing writes. `None` when the
/// curve never gets there (or starts at or below chance).
pub fn half_life(curve: &[(f64, f64)], chance: f64) -> Option<f64> {
    let &(w0, a0) = curve.first()?;
    let excess = a0 - chance;
    if excess <= 0.0 {
        return None;
    }
    let target = chance + excess / 2.0;
    let mut prev = (w0, a0);
    for &(w, a) in &curve[1..] {
        if a <= target {
            let (pw, pa) = prev;
            // pa > target ≥ a: interpolate where the line crosses target.
            return Some(pw + (w - pw) * (pa - target) / (pa - a));
        }
        prev = (w, a);
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn close(a: f64, b: f64) -> bool {
        (a - b).abs() < 1e-12
    }

    /// Three stages, computed by hand:
    ///
    /// ```text
    ///            task 0  task 1  task 2
    /// stage 0     0.9
    /// stage 1     0.7     0.8
    /// stage 2     0.5     0.6     0.95
    /// ```
    fn matrix() -> Vec<Vec<f64>> {
        vec![vec![0.9], vec![0.7, 0.8], vec![0.5, 0.6, 0.95]]
    }

    #[test]
    fn forgetting_takes_each_tasks_best_earlier_accuracy() {
        // f_0 = max(0.9, 0.7) − 0.5 = 0.4; f_1 = 0.8 − 0.6 = 0.2; mean 0.3.
        assert!(close(average_forgetting(&matrix()).unwrap(), 0.3));
        // A task that improved after it was learned: its best is the later
        // value, not the diagonal. f_0 = max(0.5, 0.8) − 0.6 = 0.2.
        let r = vec![vec![0.5], vec![0.8, 0.9], vec![0.6, 0.9, 1.0]];
        assert!(close(average_forgetting(&r).unwrap(), (0.2 + 0.0) / 2.0));
        assert_eq!(average_forgetting(&[vec![0.9]]), None);
    }

    #[test]
    fn backward_transfer_compares_the_end_with_the_diagonal() {
        // ((0.5 − 0.9) + (0.6 − 0.8)) / 2 = −0.3.
        assert!(close(backward_transfer(&matrix()).unwrap(), -0.3));
        // Positive when later stages help earlier tasks.
        let r = vec![vec![0.5], vec![0.7, 0.6]];
        assert!(close(backward_transfer(&r).unwrap(), 0.2));
        assert_eq!(backward_transfer(&[]), None);
    }

    #[test]
    fn one_task_measured_after_every_stage() {
        // The drift suite's shape: one column, the original facts,
        // accuracy 0.9 → 0.95 → 0.6 → 0.7 over three later writes.
        let r = vec![vec![0.9], vec![0.95], vec![0.6], vec![0.7]];
        // Best earlier 0.95 (not the first value), now 0.7.
        assert!(close(task_forgetting(&r, 0).unwrap(), 0.25));
        assert!(close(task_backward_transfer(&r, 0).unwrap(), 0.7 - 0.9));
        // Rising accuracy: no forgetting is negative forgetting.
        let up = vec![vec![0.5], vec![0.8]];
        assert!(close(task_forgetting(&up, 0).unwrap(), -0.3));
        // The columns of the full matrix agree with the averages.
        let m = matrix();
        assert!(close(task_forgetting(&m, 1).unwrap(), 0.2));
        assert!(close(task_backward_transfer(&m, 1).unwrap(), 0.6 - 0.8));
        assert_eq!(task_forgetting(&[vec![0.9]], 0), None);
        assert_eq!(task_forgetting(&m, 2), None, "the last stage's own task");
    }

    #[test]
    fn half_life_interpolates_the_crossing_of_half_the_excess() {
        // Chance 0.2, start 1.0: half the excess is at 0.6, crossed between
        // 10 writes (0.8) and 20 writes (0.4): 10 + 10 · 0.2/0.4 = 15.
        let curve = [(0.0, 1.0), (10.0, 0.8), (20.0, 0.4), (30.0, 0.2)];
        assert!(close(half_life(&curve, 0.2).unwrap(), 15.0));
        // Reaching the target exactly at a point gives that point.
        assert!(close(
            half_life(&[(0.0, 1.0), (5.0, 0.6)], 0.2).unwrap(),
            5.0
        ));
        // Never halved, or nothing to lose.
        assert_eq!(half_life(&[(0.0, 1.0), (50.0, 0.7)], 0.2), None);
        assert_eq!(half_life(&[(0.0, 0.2), (5.0, 0.1)], 0.2), None);
    }
}
