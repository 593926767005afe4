//! Scoring a model's predictions on held-out episodes: accuracy and loss
//! per slice, gate precision and recall, and the metrics they become; the
//! task's own scorers ([`Scorer`]) are fed here too.

use super::*;

/// Accuracy and mean loss over masked positions, per slice label; the
/// task's own scorers; and the slot telemetry per session, summed over
/// batches, when asked for.
#[derive(Default)]
pub(super) struct Scores {
    /// (slice: 0 the first key, 1 the second, label) → (hits, count)
    pub(super) hits: BTreeMap<(u8, u8), (usize, usize)>,
    /// A side probe's groups beyond the first: (group, writes) → (hits, count)
    pub(super) groups: BTreeMap<(u8, u8), (usize, usize)>,
    /// The task's own metrics ([`Episodes::scorers`]).
    pub(super) scorers: Vec<Box<dyn Scorer>>,
    pub(super) nll: f64,
    pub(super) n: usize,
    /// session → per batch, the mean telemetry of the first memory
    pub(super) telemetry: BTreeMap<usize, Vec<Telemetry>>,
    /// session → (Σ per-memory drift, memories), side-probed streams
    pub(super) drift: BTreeMap<usize, (f64, usize)>,
    /// (relevant passed, passed, relevant, candidates) over the stream
    pub(super) gate: [f64; 4],
}

impl Scores {
    /// Empty scores, with fresh scorers of `task`.
    pub(super) fn new(task: &dyn Episodes) -> Self {
        Scores {
            scorers: task.scorers(),
            ..Scores::default()
        }
    }

    /// Scores one session; `label`, where given, is a side probe's
    /// `writes`: it replaces the first-slice label of group 0's positions,
    /// and the other groups are kept apart.
    pub(super) fn add(
        &mut self,
        data: &SessionData,
        out: &retbench_model::SessionOutput,
        label: Option<u8>,
    ) {
        let mut positions = Vec::with_capacity(data.len);
        for row in 0..data.mask.len() / data.len.max(1) {
            positions.clear();
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
                positions.push(p);
                self.nll += out.nll[p] as f64;
                self.n += 1;
            }
            let Some(&p0) = positions.first() else {
                continue;
            };
            let row = ScoredRow {
                data,
                predictions: &out.predictions,
                positions: &positions,
                label: label.unwrap_or(data.label[p0]),
            };
            for scorer in &mut self.scorers {
                scorer.add(&row);
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
            .map(|(l, a)| Metric::sliced(metric, task.slice_key(), task.slice_label(l), a))
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

    /// What the task's own scorers measured.
    pub(super) fn scorer_metrics(&self, task: &dyn Episodes) -> Vec<Metric> {
        let key = task.slice_key();
        self.scorers.iter().flat_map(|s| s.metrics(key)).collect()
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
            let (h, censored) = match half_life(&curve, chance) {
                Some(h) => (h, false),
                None if a0 <= chance => (0.0, false),
                None => (last, true), // never halved within the stream
            };
            out.push(Metric::new("half_life", h));
            out.push(Metric::new("half_life_censored", f64::from(censored)));
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
