//! Scoring a model's predictions on held-out episodes: accuracy and loss
//! per slice, exact sequences and bit errors, stale answers, gate precision
//! and recall, and the metrics they become.

use super::*;

/// Accuracy and mean loss over masked positions, per slice label; whole
/// sequences and stale answers where the task scores them; and the slot
/// telemetry per session, summed over batches, when asked for.
#[derive(Debug, Default, Clone)]
pub(super) struct Scores {
    /// (slice: 0 the first key, 1 the second, label) → (hits, count)
    pub(super) hits: BTreeMap<(u8, u8), (usize, usize)>,
    /// A side probe's groups beyond the first: (group, writes) → (hits, count)
    pub(super) groups: BTreeMap<(u8, u8), (usize, usize)>,
    /// first-slice label → (sequences all right, bit errors, sequences)
    pub(super) sequences: BTreeMap<u8, (usize, u64, usize)>,
    /// (stale answers, queries that have superseded answers)
    pub(super) stale: (usize, usize),
    pub(super) nll: f64,
    pub(super) n: usize,
    /// session → per batch, the mean telemetry of the first memory
    pub(super) telemetry: BTreeMap<usize, Vec<Telemetry>>,
    /// session → (Σ per-memory drift, memories), side-probed streams
    pub(super) drift: BTreeMap<usize, (f64, usize)>,
    /// (relevant passed, passed, relevant, candidates) over the stream
    pub(super) gate: [f64; 4],
}

/// Bits that differ between two symbols of `bits` bits; a prediction that
/// is no such symbol (a marker) gets every bit wrong.
pub fn bit_errors(predicted: u32, target: u32, bits: u32) -> u32 {
    if predicted >> bits != 0 {
        bits
    } else {
        (predicted ^ target).count_ones()
    }
}

impl Scores {
    /// Scores one session; `label`, where given, is a side probe's
    /// `writes`: it replaces the first-slice label of group 0's positions,
    /// and the other groups are kept apart.
    pub(super) fn add(
        &mut self,
        task: &dyn Episodes,
        data: &SessionData,
        out: &retbench_model::SessionOutput,
        label: Option<u8>,
    ) {
        let (sequences, bits) = (task.sequences(), task.bits());
        for row in 0..data.mask.len() / data.len.max(1) {
            // (all right, bit errors, first-slice label) of this row's sequence
            let mut seq: Option<(bool, u64, u8)> = None;
            for p in row * data.len..(row + 1) * data.len {
                if data.mask[p] == 0.0 {
                    continue;
                }
                let right = out.predictions[p] == data.targets[p];
                if let Some(writes) = label.filter(|_| data.label[p] > 0) {
                    let e = self.groups.entry((data.label[p], writes)).or_default();
                    e.0 += right as usize;
                    e.1 += 1;
                    continue;
                }
                let first = label.unwrap_or(data.label[p]);
                let e = self.hits.entry((0, first)).or_default();
                e.0 += right as usize;
                e.1 += 1;
                if let Some(l2) = &data.label2 {
                    let e = self.hits.entry((1, l2[p])).or_default();
                    e.0 += right as usize;
                    e.1 += 1;
                }
                if let Some(stale) = data.stale.as_ref().map(|s| &s[p])
                    && !stale.is_empty()
                {
                    self.stale.0 += stale.contains(&out.predictions[p]) as usize;
                    self.stale.1 += 1;
                }
                let s = seq.get_or_insert((true, 0, first));
                s.0 &= right;
                if let Some(b) = bits {
                    s.1 += bit_errors(out.predictions[p], data.targets[p], b) as u64;
                }
                self.nll += out.nll[p] as f64;
                self.n += 1;
            }
            if let (true, Some((all, errors, label))) = (sequences, seq) {
                let e = self.sequences.entry(label).or_default();
                e.0 += all as usize;
                e.1 += errors;
                e.2 += 1;
            }
        }
    }

    /// Accuracy per label of the first slice (`which` 0) or the second (1).
    pub(super) fn accuracy_of(&self, which: u8) -> impl Iterator<Item = (u8, f64)> + '_ {
        self.hits
            .iter()
            .filter(move |((w, _), _)| *w == which)
            .map(|((_, l), (h, n))| (*l, *h as f64 / (*n).max(1) as f64))
    }

    pub(super) fn accuracy(&self) -> impl Iterator<Item = (u8, f64)> + '_ {
        self.accuracy_of(0)
    }

    /// Every accuracy, sliced by the first key and, where there is one, the
    /// second, as `metric`.
    pub(super) fn accuracy_metrics(&self, task: &dyn Episodes, metric: &str) -> Vec<Metric> {
        let mut out: Vec<Metric> = self
            .accuracy()
            .map(|(l, a)| Metric::sliced(metric, task.slice_key(), l, a))
            .collect();
        if let Some(key) = task.second_slice() {
            out.extend(
                self.accuracy_of(1)
                    .map(|(l, a)| Metric::sliced(metric, key, l, a)),
            );
        }
        let names = task.probe_groups();
        for ((group, writes), (h, n)) in &self.groups {
            if let Some((name, _)) = names.get(*group as usize - 1) {
                let a = *h as f64 / (*n).max(1) as f64;
                out.push(Metric::sliced(name, task.slice_key(), writes, a));
            }
        }
        out
    }

    /// `exact_sequence`, `bit_errors_per_sequence` and `stale_answer_rate`,
    /// where the task scores them.
    pub(super) fn sequence_metrics(&self, task: &dyn Episodes) -> Vec<Metric> {
        let key = task.slice_key();
        let mut out = Vec::new();
        for (label, (all, errors, n)) in &self.sequences {
            let n = (*n).max(1) as f64;
            out.push(Metric::sliced(
                "exact_sequence",
                key,
                label,
                *all as f64 / n,
            ));
            if task.bits().is_some() {
                out.push(Metric::sliced(
                    "bit_errors_per_sequence",
                    key,
                    label,
                    *errors as f64 / n,
                ));
            }
        }
        if task.stale() {
            let (stale, n) = self.stale;
            out.push(Metric::new(
                "stale_answer_rate",
                stale as f64 / n.max(1) as f64,
            ));
        }
        out
    }

    pub(super) fn loss(&self) -> f64 {
        self.nll / self.n.max(1) as f64
    }

    /// The side probe's summaries: forgetting, backward transfer and
    /// half-life of the accuracy-against-writes curve, and memory drift.
    pub(super) fn stream_metrics(&self, task: &dyn Episodes) -> Vec<Metric> {
        use crate::continual::{half_life, task_backward_transfer, task_forgetting};
        let curve: Vec<(f64, f64)> = self.accuracy().map(|(w, a)| (w as f64, a)).collect();
        let mut out = Vec::new();
        // One task (the first session's facts), measured after every write.
        let rows: Vec<Vec<f64>> = curve.iter().map(|&(_, a)| vec![a]).collect();
        if let Some(f) = task_forgetting(&rows, 0) {
            out.push(Metric::new("forgetting", f));
        }
        if let Some(b) = task_backward_transfer(&rows, 0) {
            out.push(Metric::new("bwt", b));
        }
        if let (Some(&(_, a0)), Some(&(last, _))) = (curve.first(), curve.last()) {
            let chance = task.chance().unwrap_or(0.0);
            let h = match half_life(&curve, chance) {
                Some(h) => h,
                None if a0 <= chance => 0.0,
                None => last, // censored: never halved within the stream
            };
            out.push(Metric::new("half_life", h));
        }
        for (session, (sum, n)) in &self.drift {
            out.push(Metric::sliced(
                "memory_drift",
                "writes",
                session,
                sum / (*n).max(1) as f64,
            ));
        }
        out
    }

    /// The gate against the writes' true relevance, where a memory saw any.
    pub(super) fn gate_metrics(&self) -> Vec<Metric> {
        let [tp, passed, relevant, seen] = self.gate;
        if seen == 0.0 {
            return Vec::new();
        }
        let mut out = vec![Metric::new("gate_pass_rate", passed / seen)];
        if passed > 0.0 {
            out.push(Metric::new("gate_precision", tp / passed));
        }
        if relevant > 0.0 {
            out.push(Metric::new("gate_recall", tp / relevant));
        }
        out
    }

    pub(super) fn telemetry_metrics(&self, key: &str) -> Vec<Metric> {
        let mut out = Vec::new();
        for (session, batches) in &self.telemetry {
            let t = Telemetry::average(batches);
            for (name, v) in [
                ("slot_occupancy", t.occupancy),
                ("slot_usage_kl", t.usage_kl),
                ("slot_usage_gini", t.usage_gini),
                ("slot_dead", t.dead_slots),
                ("slot_evictions", t.evictions),
            ] {
                out.push(Metric::sliced(name, key, session, v));
            }
        }
        out
    }
}
