//! The metrics a learned task reports beyond what every task reports
//! (accuracy and loss per slice, controls, training, telemetry): each is a
//! [`Scorer`], and a task lists its own in [`Episodes::scorers`]. The driver
//! declares their specs, hands them every scored sequence of the held-out
//! set, and collects what they measured, so a task with a new kind of
//! answer (an abstention, a count) adds a scorer beside the task, not a hook
//! in the driver. `copy` scores whole sequences and bit errors
//! ([`Sequences`]); `entity` scores superseded answers ([`StaleAnswers`]).

use super::*;

/// One scored sequence: a row of a held-out session, the positions of it
/// that count (masked, and not a side probe's other groups), the model's
/// predictions for the whole session, and the row's first-slice label (its
/// first scored position's).
pub struct ScoredRow<'a> {
    pub data: &'a SessionData,
    pub predictions: &'a [u32],
    pub positions: &'a [usize],
    pub label: u8,
}

/// A held-out batch right after one of its sessions.
pub struct AfterSession<'a> {
    pub session: usize,
    pub data: &'a SessionData,
    pub memories: &'a [retbench_core::MemoryState],
    pub model: &'a Model,
}

/// A family of metrics scored from held-out predictions. A fresh scorer
/// (from [`Episodes::scorers`]) accumulates one evaluation.
pub trait Scorer: Send {
    /// The specs of what it reports; `key` is the task's first slice.
    fn specs(&self, key: &'static str) -> Vec<MetricSpec>;
    /// Adds one scored sequence.
    fn add(&mut self, row: &ScoredRow<'_>);
    /// Sees the memories after each session of a held-out batch, with the
    /// session's data and the model (which can read them: attention mass on
    /// given slots, the rank of a slot), for metrics about the memory rather
    /// than the answers. Most scorers need nothing here.
    fn after_session(&mut self, _seen: &AfterSession<'_>) {}
    /// What it measured, in the order of its specs.
    fn metrics(&self, key: &'static str) -> Vec<Metric>;
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

/// `exact_sequence` (every scored position of a sequence right) per
/// first-slice label and, where symbols are `bits`-bit vectors,
/// `bit_errors_per_sequence` (the NTM copy metric).
#[derive(Debug, Default)]
pub struct Sequences {
    pub bits: Option<u32>,
    /// label → (sequences all right, bit errors, sequences)
    tally: BTreeMap<u8, (usize, u64, usize)>,
}

impl Sequences {
    pub fn new(bits: Option<u32>) -> Self {
        Sequences {
            bits,
            tally: BTreeMap::new(),
        }
    }
}

impl Scorer for Sequences {
    fn specs(&self, key: &'static str) -> Vec<MetricSpec> {
        let mut out = vec![
            MetricSpec::share("exact_sequence", "sequences reproduced without error").sliced(key),
        ];
        if self.bits.is_some() {
            // No one chance level: a guess costs bits/2 per symbol, so it
            // grows with the sequence's length.
            out.push(
                MetricSpec::new("bit_errors_per_sequence", "bit errors per sequence")
                    .unit("bits")
                    .lower()
                    .at_least(0.0)
                    .sliced(key),
            );
        }
        out
    }

    fn add(&mut self, row: &ScoredRow<'_>) {
        let (targets, predicted) = (&row.data.targets, row.predictions);
        let all = row.positions.iter().all(|&p| predicted[p] == targets[p]);
        let errors: u64 = match self.bits {
            Some(b) => row
                .positions
                .iter()
                .map(|&p| bit_errors(predicted[p], targets[p], b) as u64)
                .sum(),
            None => 0,
        };
        let e = self.tally.entry(row.label).or_default();
        e.0 += all as usize;
        e.1 += errors;
        e.2 += 1;
    }

    fn metrics(&self, key: &'static str) -> Vec<Metric> {
        let mut out = Vec::new();
        for (label, (all, errors, n)) in &self.tally {
            let n = (*n).max(1) as f64;
            out.push(Metric::sliced(
                "exact_sequence",
                key,
                label,
                *all as f64 / n,
            ));
            if self.bits.is_some() {
                out.push(Metric::sliced(
                    "bit_errors_per_sequence",
                    key,
                    label,
                    *errors as f64 / n,
                ));
            }
        }
        out
    }
}

/// `stale_answer_rate`: of the queries whose answer has superseded values
/// ([`SessionData::stale`]), the share answered with one of them.
#[derive(Debug, Default)]
pub struct StaleAnswers {
    /// (stale answers, queries with superseded answers)
    tally: (usize, usize),
}

impl Scorer for StaleAnswers {
    fn specs(&self, _key: &'static str) -> Vec<MetricSpec> {
        vec![
            MetricSpec::share(
                "stale_answer_rate",
                "answers that were a superseded value (queries about updated facts)",
            )
            .lower(),
        ]
    }

    fn add(&mut self, row: &ScoredRow<'_>) {
        let Some(stale) = &row.data.stale else { return };
        for &p in row.positions {
            if !stale[p].is_empty() {
                self.tally.0 += stale[p].contains(&row.predictions[p]) as usize;
                self.tally.1 += 1;
            }
        }
    }

    fn metrics(&self, _key: &'static str) -> Vec<Metric> {
        let (stale, n) = self.tally;
        vec![Metric::new(
            "stale_answer_rate",
            stale as f64 / n.max(1) as f64,
        )]
    }
}
