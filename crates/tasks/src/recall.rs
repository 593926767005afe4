//! Cross-session associative recall (the data of suites/recall.yaml).
//!
//! ```text
//! session 1:  k1 v1 k2 v2 … k8 v8 | Q ka va  Q kb vb …      (facts, then gap=0 queries)
//! session 2:  Q kc vc  Q kd vd …                             (fresh context: gap=1 queries)
//!                ^^ target: the value bound to the key in session 1
//! ```
//!
//! Keys and values are disjoint symbol ranges; the keys of one episode are
//! distinct, and a session queries each fact at most once. The loss mask is 1 exactly at the positions whose next token is
//! a queried value, and `gap` says in which session the fact was stated
//! relative to the query (0: same session, 1: the one before). Sequences are
//! padded with `PAD` to a fixed length. Plain vectors, no tensors: the
//! learned-task driver ([`crate::learned`]) trains and scores the model.

use rand::Rng;
use rand::seq::SliceRandom;
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

pub use crate::learned::SessionData;
use crate::learned::{self, Context, Episodes, LearnedTask};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RecallConfig {
    #[serde(default = "sixteen")]
    pub keys: usize,
    #[serde(default = "sixteen")]
    pub values: usize,
    /// Facts stated in session 1.
    #[serde(default = "eight")]
    pub pairs: usize,
    /// Queries in session 1 about its own facts (gap 0).
    #[serde(default = "four")]
    pub queries_same: usize,
    /// Queries in session 2 about session 1's facts (gap 1).
    #[serde(default = "eight")]
    pub queries_next: usize,
    /// `sessions` (the context is cleared between them) or `full` (both in
    /// one context: the `full_context` baseline).
    #[serde(default)]
    pub context: Context,
    /// A mixture of difficulties in training: each training episode states
    /// a number of facts drawn uniformly from `pairs_min..=pairs` (and asks
    /// at most that many per session), as zoology trains its recall tasks on
    /// several pair counts at once. Held-out episodes always state `pairs`.
    /// Default none: every episode states `pairs`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pairs_min: Option<usize>,
}

fn sixteen() -> usize {
    16
}
fn eight() -> usize {
    8
}
fn four() -> usize {
    4
}

impl RecallConfig {
    pub fn validate(&self) -> Result<(), String> {
        if self.pairs == 0 || self.pairs > self.keys {
            return Err(format!("task.pairs: must be in 1..={} (keys)", self.keys));
        }
        if self.queries_same > self.pairs || self.queries_next > self.pairs {
            return Err(format!(
                "task.queries_same, task.queries_next: at most {} (pairs), each fact is queried once per session",
                self.pairs
            ));
        }
        if self.values == 0 {
            return Err("task.values: must be at least 1".into());
        }
        if let Some(min) = self.pairs_min
            && !(1..=self.pairs).contains(&min)
        {
            return Err(format!(
                "task.pairs_min: must be in 1..={} (pairs)",
                self.pairs
            ));
        }
        Ok(())
    }

    /// The query marker.
    pub fn query_token(&self) -> u32 {
        (self.keys + self.values) as u32
    }

    /// Padding (never a target).
    pub fn pad_token(&self) -> u32 {
        self.query_token() + 1
    }

    pub fn vocab(&self) -> usize {
        self.keys + self.values + 2
    }

    /// Session lengths: facts plus same-session queries; next-session queries.
    pub fn lengths(&self) -> [usize; 2] {
        [
            2 * self.pairs + 3 * self.queries_same,
            (3 * self.queries_next).max(1),
        ]
    }

    /// A batch of `batch` independent episodes (two sessions each), every
    /// one stating `pairs` facts: held-out episodes.
    pub fn generate<R: Rng>(&self, rng: &mut R, batch: usize) -> [SessionData; 2] {
        self.generate_with(rng, batch, false)
    }

    /// A batch of training episodes: as [`RecallConfig::generate`], but
    /// with `pairs_min` each states a uniform number of facts in
    /// `pairs_min..=pairs` (drawn from the same stream, first).
    pub fn generate_train<R: Rng>(&self, rng: &mut R, batch: usize) -> [SessionData; 2] {
        self.generate_with(rng, batch, true)
    }

    fn generate_with<R: Rng>(&self, rng: &mut R, batch: usize, train: bool) -> [SessionData; 2] {
        let lens = self.lengths();
        let mut out = lens.map(|len| SessionData {
            tokens: Vec::with_capacity(batch * len),
            targets: Vec::with_capacity(batch * len),
            mask: Vec::with_capacity(batch * len),
            label: Vec::with_capacity(batch * len),
            len,
            ..Default::default()
        });
        let (q, pad) = (self.query_token(), self.pad_token());
        for _ in 0..batch {
            let pairs = match self.pairs_min {
                Some(min) if train => rng.random_range(min..=self.pairs),
                _ => self.pairs,
            };
            let mut keys: Vec<u32> = (0..self.keys as u32).collect();
            keys.shuffle(rng);
            keys.truncate(pairs);
            let values: Vec<u32> = (0..pairs)
                .map(|_| (self.keys + rng.random_range(0..self.values)) as u32)
                .collect();
            let mut s1: Vec<u32> = keys
                .iter()
                .zip(&values)
                .flat_map(|(k, v)| [*k, *v])
                .collect();
            // Each fact is queried at most once per session: a repeated query
            // could be answered from the earlier one in the same context, and
            // a memory-cleared control would then not fall to chance.
            let mut queried = |n: usize, seq: &mut Vec<u32>| {
                let mut order: Vec<usize> = (0..pairs).collect();
                order.shuffle(rng);
                for &i in &order[..n.min(pairs)] {
                    seq.extend([q, keys[i], values[i]]);
                }
            };
            queried(self.queries_same, &mut s1);
            let mut s2 = Vec::new();
            queried(self.queries_next, &mut s2);
            for (session, (seq, gap)) in out.iter_mut().zip([(s1, 0u8), (s2, 1u8)]) {
                let facts = if gap == 0 { 2 * pairs } else { 0 };
                let mut seq = seq;
                seq.resize(session.len, pad);
                for t in 0..session.len {
                    let next = seq.get(t + 1).copied().unwrap_or(pad);
                    // A target is the value after "Q key": position t holds the key.
                    let is_query =
                        t > facts && (t - facts) % 3 == 1 && seq[t - 1] == q && next != pad;
                    session.tokens.push(seq[t]);
                    session.targets.push(if is_query { next } else { pad });
                    session.mask.push(if is_query { 1.0 } else { 0.0 });
                    session.label.push(if is_query { gap } else { 0 });
                }
            }
        }
        out
    }
}

/// What a predictor scores that knows which values session 1 stated but not
/// which key each belongs to: the level a model reaches with memory that
/// carries the facts' values without binding them to their keys. Mean
/// accuracy per query, each guess the most frequent candidate (ties shared).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Unbound {
    /// Candidates: every value stated in session 1.
    pub values: f64,
    /// Candidates: the values of facts not yet queried in this session (what
    /// the context shows: each fact is queried at most once per session).
    pub values_not_yet_asked: f64,
}

/// Episodes behind the reference levels a recall run's figures draw.
pub const REFERENCE_EPISODES: usize = 8192;

impl RecallConfig {
    /// [`Unbound`] levels per gap (`[gap=0, gap=1]`) over a batch of
    /// episodes from [`RecallConfig::generate`].
    pub fn unbound_accuracy(&self, sessions: &[SessionData; 2], batch: usize) -> [Unbound; 2] {
        let [s1, _] = sessions;
        let mut out = [(0.0, 0.0, 0usize); 2];
        for b in 0..batch {
            let facts: Vec<u32> = (0..self.pairs)
                .map(|i| s1.tokens[b * s1.len + 2 * i + 1])
                .collect();
            for (gap, s) in sessions.iter().enumerate() {
                let asked: Vec<u32> = (b * s.len..(b + 1) * s.len)
                    .filter(|&t| s.mask[t] == 1.0)
                    .map(|t| s.targets[t])
                    .collect();
                let (v, va) = unbound(&facts, &asked);
                out[gap].0 += v;
                out[gap].1 += va;
                out[gap].2 += asked.len();
            }
        }
        out.map(|(v, va, n)| Unbound {
            values: v / n.max(1) as f64,
            values_not_yet_asked: va / n.max(1) as f64,
        })
    }
}

/// Summed expected hits over `asked` (targets, in query order) of the two
/// unbound predictors, given the facts' values.
fn unbound(facts: &[u32], asked: &[u32]) -> (f64, f64) {
    use std::collections::BTreeMap;
    let hit = |counts: &BTreeMap<u32, usize>, target: u32| {
        let max = counts.values().copied().max().unwrap_or(0);
        let ties = counts.values().filter(|&&c| c == max).count();
        if max > 0 && counts.get(&target) == Some(&max) {
            1.0 / ties as f64
        } else {
            0.0
        }
    };
    let mut all = BTreeMap::new();
    for &v in facts {
        *all.entry(v).or_insert(0usize) += 1;
    }
    let mut left = all.clone();
    let (mut values, mut not_yet) = (0.0, 0.0);
    for &target in asked {
        values += hit(&all, target);
        not_yet += hit(&left, target);
        if let Some(c) = left.get_mut(&target) {
            *c -= 1;
        }
    }
    (values, not_yet)
}

impl Episodes for RecallConfig {
    fn vocab(&self) -> usize {
        RecallConfig::vocab(self)
    }
    fn context(&self) -> Context {
        self.context
    }
    fn slice_key(&self) -> &'static str {
        "gap"
    }
    fn generate(&self, rng: &mut ChaCha8Rng, batch: usize) -> Vec<SessionData> {
        RecallConfig::generate_train(self, rng, batch).into()
    }
    fn generate_eval(&self, _group: usize, rng: &mut ChaCha8Rng, batch: usize) -> Vec<SessionData> {
        RecallConfig::generate(self, rng, batch).into()
    }
    fn lengths(&self) -> Vec<usize> {
        RecallConfig::lengths(self).to_vec()
    }
    fn in_session_label(&self) -> Option<u8> {
        Some(0)
    }
    fn chance(&self) -> Option<f64> {
        Some(1.0 / self.values as f64)
    }
    /// The [`Unbound`] levels per gap, over [`REFERENCE_EPISODES`] episodes
    /// of a fixed stream (standard error about 0.002): a run that plateaus
    /// at one carries session 1's values without their keys.
    fn references(&self) -> Vec<(String, String, f64)> {
        if self.validate().is_err() {
            return Vec::new();
        }
        let data = RecallConfig::generate(
            self,
            &mut retbench_core::rng::stream("recall", 0, "reference-levels"),
            REFERENCE_EPISODES,
        );
        let levels = self.unbound_accuracy(&data, REFERENCE_EPISODES);
        let round = |x: f64| (x * 1000.0).round() / 1000.0;
        levels
            .iter()
            .enumerate()
            .flat_map(|(gap, l)| {
                [
                    ("values without keys".to_string(), l.values),
                    (
                        "values without keys, asked excluded".to_string(),
                        l.values_not_yet_asked,
                    ),
                ]
                .map(|(label, v)| (label, format!("gap={gap}"), round(v)))
            })
            .collect()
    }
    /// Without `pairs_min` too: it shapes training episodes only, so a
    /// mixture is scored on the same held-out episodes as the fixed form.
    fn dataset_config(&self) -> serde_json::Value {
        learned::without_layout(self, &["pairs_min"])
    }
}

impl LearnedTask for RecallConfig {
    const KIND: &'static str = "recall";
    const ABOUT: &'static str =
        "cross-session associative recall (trains a model): accuracy by gap, loss, throughput";
    fn check(&self) -> Result<(), String> {
        RecallConfig::validate(self)
    }
    fn vocab_field(&self) -> &'static str {
        if self.keys >= self.values {
            "task.keys"
        } else {
            "task.values"
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use retbench_core::rng::stream;

    #[test]
    fn every_target_is_the_value_stated_in_session_one() {
        let cfg = RecallConfig {
            keys: 16,
            values: 16,
            pairs: 8,
            queries_same: 4,
            queries_next: 8,
            context: Context::Sessions,
            pairs_min: None,
        };
        let [s1, s2] = cfg.generate(&mut stream("recall", 0, "data"), 5);
        assert_eq!((s1.len, s2.len), (28, 24));
        for b in 0..5 {
            let row = |s: &SessionData, v: &Vec<u32>| v[b * s.len..(b + 1) * s.len].to_vec();
            let facts: std::collections::HashMap<u32, u32> = row(&s1, &s1.tokens)[..16]
                .chunks(2)
                .map(|p| (p[0], p[1]))
                .collect();
            assert_eq!(facts.len(), 8, "keys distinct within an episode");
            for (s, gap, expect) in [(&s1, 0u8, 4), (&s2, 1u8, 8)] {
                let (tok, tgt, mask, gaps) = (
                    row(s, &s.tokens),
                    row(s, &s.targets),
                    &s.mask[b * s.len..(b + 1) * s.len],
                    &s.label[b * s.len..(b + 1) * s.len],
                );
                let masked: Vec<usize> = (0..s.len).filter(|&t| mask[t] == 1.0).collect();
                assert_eq!(masked.len(), expect);
                let asked: std::collections::HashSet<u32> =
                    masked.iter().map(|&t| tok[t]).collect();
                assert_eq!(asked.len(), expect, "no fact queried twice in a session");
                for t in masked {
                    assert_eq!(tok[t - 1], cfg.query_token());
                    assert_eq!(tgt[t], facts[&tok[t]], "target is the bound value");
                    assert!(tgt[t] >= 16 && tgt[t] < 32);
                    assert_eq!(gaps[t], gap);
                }
            }
        }
        assert_eq!(
            cfg.generate(&mut stream("recall", 0, "data"), 5),
            [s1, s2],
            "deterministic"
        );
    }

    #[test]
    fn a_mixture_trains_on_fewer_facts_and_scores_on_all() {
        let cfg: RecallConfig = serde_json::from_str(r#"{"pairs": 8, "pairs_min": 2}"#).unwrap();
        let batch = 256;
        let [s1, s2] = cfg.generate_train(&mut stream("recall", 0, "mix"), batch);
        let mut stated = std::collections::BTreeSet::new();
        for b in 0..batch {
            let row = &s1.tokens[b * s1.len..(b + 1) * s1.len];
            // Facts are key-value pairs of symbols below the query marker.
            let n = row
                .chunks(2)
                .take_while(|p| p[0] < 16 && p[1] >= 16)
                .count();
            stated.insert(n);
            let facts: std::collections::HashMap<u32, u32> =
                row[..2 * n].chunks(2).map(|p| (p[0], p[1])).collect();
            for s in [&s1, &s2] {
                let range = b * s.len..(b + 1) * s.len;
                let masked: Vec<usize> = range.filter(|&t| s.mask[t] == 1.0).collect();
                assert!(!masked.is_empty() && masked.len() <= n.min(8));
                for t in masked {
                    assert_eq!(
                        s.targets[t], facts[&s.tokens[t]],
                        "target is the bound value"
                    );
                }
            }
        }
        assert_eq!(*stated.first().unwrap(), 2);
        assert_eq!(*stated.last().unwrap(), 8);
        assert_eq!(stated.len(), 7, "every count in 2..=8 is drawn");
        // Held-out episodes state every fact, and are those of the fixed form.
        let fixed: RecallConfig = serde_json::from_str(r#"{"pairs": 8}"#).unwrap();
        let eval =
            |c: &RecallConfig| Episodes::generate_eval(c, 0, &mut stream("recall", 0, "e"), 4);
        assert_eq!(eval(&cfg), eval(&fixed));
        assert_eq!(cfg.dataset_config(), fixed.dataset_config());
        // Without a mixture, training draws exactly the held-out stream.
        let train = Episodes::generate(&fixed, &mut stream("recall", 0, "e"), 4);
        assert_eq!(train, eval(&fixed));
        let bad: RecallConfig = serde_json::from_str(r#"{"pairs": 8, "pairs_min": 9}"#).unwrap();
        assert!(bad.validate().unwrap_err().starts_with("task.pairs_min"));
    }

    #[test]
    fn unbound_levels_match_a_hand_count() {
        // Values A A B C, asked in the order A B A C.
        let (a, b, c) = (20, 21, 22);
        let (v, va) = unbound(&[a, a, b, c], &[a, b, a, c]);
        // Always guessing A (the mode): hits the two A queries.
        assert!((v - 2.0).abs() < 1e-12);
        // {A2 B1 C1} → A: 1; {A1 B1 C1} → B: 1/3; {A1 C1} → A: 1/2; {C1} → 1.
        assert!((va - (1.0 + 1.0 / 3.0 + 0.5 + 1.0)).abs() < 1e-12);
    }

    #[test]
    fn reference_levels_reach_the_accuracy_specs_per_gap() {
        let cfg: RecallConfig = serde_json::from_str("{}").unwrap();
        let specs = crate::learned::metric_specs(&cfg);
        let acc = specs.iter().find(|s| s.name == "accuracy").unwrap();
        let at = |label: &str, slice: &str| {
            acc.references
                .iter()
                .find(|r| r.label == label && r.slice == slice)
                .map(|r| r.value)
                .unwrap()
        };
        assert!((0.24..0.28).contains(&at("values without keys", "gap=1")));
        assert!((0.40..0.45).contains(&at("values without keys, asked excluded", "gap=1")));
        assert!(at("values without keys, asked excluded", "gap=0") < 0.3);
        // The same levels every time: figures must not move between reports.
        assert_eq!(crate::learned::metric_specs(&cfg)[0], *acc);
    }

    #[test]
    fn unbound_level_of_the_recall_suite_is_far_above_chance() {
        let cfg: RecallConfig = serde_json::from_str("{}").unwrap();
        let batch = 4096;
        let data = cfg.generate(&mut stream("recall", 0, "levels"), batch);
        let [g0, g1] = cfg.unbound_accuracy(&data, batch);
        // 8 values of 16 symbols: about 6 distinct, the mode often repeated.
        assert!((0.24..0.28).contains(&g1.values), "{g1:?}");
        assert!((0.40..0.45).contains(&g1.values_not_yet_asked), "{g1:?}");
        // Session 1 asks 4 of 8 facts: less left to eliminate.
        assert!(g0.values_not_yet_asked < g1.values_not_yet_asked, "{g0:?}");
        assert!((g0.values - g1.values).abs() < 0.02, "{g0:?} {g1:?}");
    }

    #[test]
    fn bad_configs_name_the_field() {
        let mut cfg = RecallConfig {
            keys: 4,
            values: 4,
            pairs: 5,
            queries_same: 0,
            queries_next: 1,
            context: Context::Sessions,
            pairs_min: None,
        };
        assert!(cfg.validate().unwrap_err().starts_with("task.pairs"));
        cfg.pairs = 4;
        assert!(cfg.validate().is_ok());
        cfg.queries_next = 5;
        assert!(cfg.validate().unwrap_err().contains("queries_next"));
    }
}
