//! Slot telemetry: the numbers that expose the paper's failure signatures
//! (reads that collapse onto a few slots, slots that are never read, memory
//! that grows without eviction). Computed from a memory's metadata alone, so
//! it works on a live state and on a loaded snapshot alike.

use serde::Serialize;

use crate::memory::MemoryState;

/// Usage statistics of one memory (or the mean over a batch of memories).
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Telemetry {
    /// Occupied slots / capacity.
    pub occupancy: f64,
    /// KL(usage ‖ uniform over all slots), in nats; 0 when nothing was read.
    pub usage_kl: f64,
    /// Gini coefficient of cumulative read weight over all slots.
    pub usage_gini: f64,
    /// Occupied slots whose read weight is under 1% of the occupied mean.
    pub dead_slots: f64,
    /// Appends that overwrote an occupied slot.
    pub evictions: f64,
}

/// Share of occupied-mean read weight under which a slot counts as dead.
const DEAD_FRACTION: f64 = 0.01;

impl Telemetry {
    /// Statistics of memory `b` of `mem`.
    pub fn of(mem: &MemoryState, b: usize) -> Telemetry {
        let m = mem.slots();
        let meta = mem.meta();
        let range = b * m..(b + 1) * m;
        let occupied = &meta.occupied[range.clone()];
        let usage: Vec<f64> = meta.read_weight[range].iter().map(|&w| w as f64).collect();
        let occ = occupied.iter().filter(|&&o| o).count();
        let total: f64 = usage.iter().sum();
        let (usage_kl, usage_gini) = if total > 0.0 {
            (kl_from_uniform(&usage, total), gini(&usage))
        } else {
            (0.0, 0.0)
        };
        let dead = if occ > 0 {
            let occ_total: f64 = usage
                .iter()
                .zip(occupied)
                .filter(|(_, o)| **o)
                .map(|(w, _)| w)
                .sum();
            let cutoff = DEAD_FRACTION * occ_total / occ as f64;
            usage
                .iter()
                .zip(occupied)
                .filter(|(w, o)| **o && **w <= cutoff)
                .count()
        } else {
            0
        };
        Telemetry {
            occupancy: occ as f64 / m as f64,
            usage_kl,
            usage_gini,
            dead_slots: dead as f64,
            evictions: mem.evictions()[b] as f64,
        }
    }

    /// The mean over every memory of the batch.
    pub fn mean(mem: &MemoryState) -> Telemetry {
        let all: Vec<Telemetry> = (0..mem.batch()).map(|b| Telemetry::of(mem, b)).collect();
        Telemetry::average(&all)
    }

    /// The field-wise mean of `all` (all zeros when empty).
    pub fn average(all: &[Telemetry]) -> Telemetry {
        let n = all.len().max(1) as f64;
        let avg = |f: fn(&Telemetry) -> f64| all.iter().map(f).sum::<f64>() / n;
        Telemetry {
            occupancy: avg(|t| t.occupancy),
            usage_kl: avg(|t| t.usage_kl),
            usage_gini: avg(|t| t.usage_gini),
            dead_slots: avg(|t| t.dead_slots),
            evictions: avg(|t| t.evictions),
        }
    }
}

/// Σ p ln(p·m) with p = w / total over all m slots.
fn kl_from_uniform(w: &[f64], total: f64) -> f64 {
    let m = w.len() as f64;
    w.iter()
        .filter(|&&x| x > 0.0)
        .map(|&x| {
            let p = x / total;
            p * (p * m).ln()
        })
        .sum::<f64>()
        .max(0.0)
}

/// Gini coefficient: 0 for equal usage, (m−1)/m when one slot takes all.
fn gini(w: &[f64]) -> f64 {
    let mut sorted = w.to_vec();
    sorted.sort_by(f64::total_cmp);
    let m = sorted.len() as f64;
    let total: f64 = sorted.iter().sum();
    let weighted: f64 = sorted
        .iter()
        .enumerate()
        .map(|(i, x)| (2.0 * (i as f64 + 1.0) - m - 1.0) * x)
        .sum();
    weighted / (m * total)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gini_and_kl_bounds() {
        assert!(gini(&[1.0, 1.0, 1.0, 1.0]).abs() < 1e-12);
        assert!((gini(&[0.0, 0.0, 0.0, 4.0]) - 0.75).abs() < 1e-12);
        assert!(kl_from_uniform(&[2.0, 2.0], 4.0).abs() < 1e-12);
        assert!((kl_from_uniform(&[0.0, 0.0, 0.0, 1.0], 1.0) - (4f64).ln()).abs() < 1e-12);
    }
}
