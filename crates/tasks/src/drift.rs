//! Drift under noisy writes (suites/drift.yaml, the paper's open question
//! 2): facts are stored in a first session, a stream of later sessions
//! writes to memory — new facts about other keys, or, at rate `noise`,
//! noise that threatens the first facts — and a probe asks for the first
//! facts and for the latest relevant session's facts after every later
//! session.
//!
//! ```text
//! session 0:      k1 v1  k2 v2  k3 v3  k4 v4            (the facts; relevant)
//! later, clean:   k9 v5  k12 v1 …                       (new facts on fresh keys; relevant)
//! later, noise:   random   t t t t t t t t              (random symbols; irrelevant)
//!                 contradict  k1 v7  k3 v2 …            (the facts' keys, other values)
//!                 flip     k1 v3  k2 v1 …               (the facts' values, deranged)
//! probe:          Q k3  Q k1  Q k4  Q k2 | Q k12  Q k9 …  (target at each key: its value;
//!                 first facts (label 0)    latest relevant facts (label 1))
//! ```
//!
//! Every session is `2·facts` tokens of (key, value)-shaped pairs, so a
//! chunk-of-2 write source stores one pair per slot. Each session carries
//! its true relevance (1: the facts and clean sessions; 0: noise), which
//! only the gate's precision and recall are scored against, and a feedback
//! signal for feedback gates: the relevance, flipped with probability
//! `1 − reliability`. Training episodes have `later` sessions and end with
//! the probe; held-out episodes have `eval_later` sessions, and the probe
//! runs after each of them on a copy of memory
//! ([`Episodes::side_probe`]): `accuracy` (first facts) and
//! `recent_accuracy` sliced by `writes`, the later sessions written so far.

use rand::Rng;
use rand::seq::{IndexedRandom, SliceRandom};
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

use crate::learned::{Context, Control, Episodes, LearnedTask, SessionData};

/// What a noise session writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum NoiseKind {
    /// Uniformly random key and value symbols.
    Random,
    /// The first facts' keys with other values (uniform over the rest).
    Contradict,
    /// The first facts' keys with one another's values (a derangement).
    Flip,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DriftConfig {
    /// Key symbols; the first facts take `facts` of them and each clean
    /// later session `facts` fresh ones (no key is stated twice in an
    /// episode, so a clean fact never competes with a stale value of its
    /// own key: only noise contradicts).
    #[serde(default = "two_fifty_six")]
    pub keys: usize,
    /// Value symbols (chance is 1/values).
    #[serde(default = "eight")]
    pub values: usize,
    /// Facts per session (the first facts' values are distinct).
    #[serde(default = "four")]
    pub facts: usize,
    /// Later sessions between the facts and the probe in training.
    #[serde(default = "three")]
    pub later: usize,
    /// Later sessions in evaluation, probed after each.
    #[serde(default = "fifty")]
    pub eval_later: usize,
    /// Probability that a later session is noise.
    #[serde(default)]
    pub noise: f64,
    /// The kinds of noise, drawn uniformly.
    #[serde(default = "all_kinds")]
    pub kinds: Vec<NoiseKind>,
    /// Probability that the feedback signal equals the true relevance (it
    /// is flipped otherwise).
    #[serde(default = "one")]
    pub reliability: f64,
}

fn two_fifty_six() -> usize {
    256
}
fn eight() -> usize {
    8
}
fn four() -> usize {
    4
}
fn three() -> usize {
    3
}
fn fifty() -> usize {
    50
}
fn one() -> f64 {
    1.0
}
fn all_kinds() -> Vec<NoiseKind> {
    vec![NoiseKind::Random, NoiseKind::Contradict, NoiseKind::Flip]
}

impl DriftConfig {
    pub fn validate(&self) -> Result<(), String> {
        if self.facts == 0 || self.facts > self.values {
            return Err(format!(
                "task.facts: must be in 1..={} (values): the first facts have distinct values",
                self.values
            ));
        }
        if self.values < 2 {
            return Err("task.values: at least 2, so that a fact can be contradicted".into());
        }
        if self.eval_later == 0 || self.eval_later > 254 {
            return Err("task.eval_later: must be in 1..=254".into());
        }
        let need = self.facts * (self.later.max(self.eval_later) + 1);
        if self.keys < need {
            return Err(format!(
                "task.keys: at least {need} (facts × (later sessions + 1)): every session states fresh keys"
            ));
        }
        if !(0.0..=1.0).contains(&self.noise) {
            return Err(format!("task.noise: a probability, got {}", self.noise));
        }
        if !(0.0..=1.0).contains(&self.reliability) {
            return Err(format!(
                "task.reliability: a probability, got {}",
                self.reliability
            ));
        }
        if self.noise > 0.0 && self.kinds.is_empty() {
            return Err("task.kinds: noise needs at least one kind".into());
        }
        Ok(())
    }

    pub fn query_token(&self) -> u32 {
        (self.keys + self.values) as u32
    }
    pub fn pad_token(&self) -> u32 {
        self.query_token() + 1
    }
    fn session_len(&self) -> usize {
        2 * self.facts
    }

    fn probe_len(&self) -> usize {
        4 * self.facts
    }

    /// Episodes of `later` later sessions, then the probe after the last
    /// (training), or after each session (`every`: held-out, the stream's
    /// `later + 1` sessions followed by their `later + 1` probes).
    pub fn episodes(
        &self,
        rng: &mut ChaCha8Rng,
        batch: usize,
        later: usize,
        every: bool,
    ) -> Vec<SessionData> {
        let (len, probes) = (self.session_len(), if every { later + 1 } else { 1 });
        let session = |len: usize| SessionData {
            len,
            feedback: Some(Vec::with_capacity(batch)),
            relevance: Some(Vec::with_capacity(batch)),
            ..Default::default()
        };
        let mut out: Vec<SessionData> = (0..later + 1).map(|_| session(len)).collect();
        out.extend((0..probes).map(|_| session(self.probe_len())));
        let value = |v: usize| (self.keys + v) as u32;
        for _ in 0..batch {
            let mut keys: Vec<usize> = (0..self.keys).collect();
            keys.shuffle(rng);
            let (first, others) = keys.split_at(self.facts);
            let mut fresh = others.chunks(self.facts);
            let mut values: Vec<usize> = (0..self.values).collect();
            values.shuffle(rng);
            let facts: Vec<(u32, u32)> = first
                .iter()
                .zip(&values[..self.facts])
                .map(|(&k, &v)| (k as u32, value(v)))
                .collect();
            let push =
                |s: &mut SessionData, pairs: &[(u32, u32)], rel: f32, rng: &mut ChaCha8Rng| {
                    for &(a, b) in pairs {
                        s.tokens.extend([a, b]);
                    }
                    s.targets.extend(std::iter::repeat_n(self.pad_token(), len));
                    s.mask.extend(std::iter::repeat_n(0.0, len));
                    s.label.extend(std::iter::repeat_n(0, len));
                    // Drawn whatever the reliability: one stream gives the same
                    // symbols at every reliability.
                    let honest = rng.random::<f64>() < self.reliability;
                    s.feedback
                        .as_mut()
                        .expect("set")
                        .push(if honest { rel } else { 1.0 - rel });
                    s.relevance.as_mut().expect("set").push(rel);
                };
            push(&mut out[0], &facts, 1.0, rng);
            // The facts of the latest relevant session, after each session.
            let mut recent: Vec<Vec<(u32, u32)>> = vec![facts.clone()];
            for s in out.iter_mut().take(later + 1).skip(1) {
                let kind = (rng.random::<f64>() < self.noise)
                    .then(|| *self.kinds.choose(rng).expect("validated"));
                let mut pairs: Vec<(u32, u32)> = match kind {
                    None => fresh
                        .next()
                        .expect("validated: enough keys")
                        .iter()
                        .map(|&k| (k as u32, value(rng.random_range(0..self.values))))
                        .collect(),
                    Some(NoiseKind::Random) => (0..self.facts)
                        .map(|_| {
                            let n = (self.keys + self.values) as u32;
                            (rng.random_range(0..n), rng.random_range(0..n))
                        })
                        .collect(),
                    Some(NoiseKind::Contradict) => facts
                        .iter()
                        .map(|&(k, v)| {
                            let w = rng.random_range(0..self.values as u32 - 1);
                            let v = v - self.keys as u32;
                            (k, value((if w >= v { w + 1 } else { w }) as usize))
                        })
                        .collect(),
                    Some(NoiseKind::Flip) => {
                        let sigma = derangement(self.facts, rng);
                        (0..self.facts)
                            .map(|i| (facts[i].0, facts[sigma[i]].1))
                            .collect()
                    }
                };
                pairs.shuffle(rng);
                let latest = match kind {
                    None => pairs.clone(),
                    Some(_) => recent.last().expect("session 0").clone(),
                };
                recent.push(latest);
                push(s, &pairs, kind.is_none() as u8 as f32, rng);
            }
            // Each probe asks every first fact (label 0), then every fact of
            // the latest relevant session (label 1), each in random order;
            // the target sits at the key.
            let asked_after: Vec<usize> = if every {
                (0..=later).collect()
            } else {
                vec![later]
            };
            for (probe, &after) in out[later + 1..].iter_mut().zip(&asked_after) {
                for (label, group) in [(0u8, &facts), (1u8, &recent[after])] {
                    let mut asked = group.clone();
                    asked.shuffle(rng);
                    for (k, v) in asked {
                        probe.tokens.extend([self.query_token(), k]);
                        probe.targets.extend([self.pad_token(), v]);
                        probe.mask.extend([0.0, 1.0]);
                        probe.label.extend([0, label]);
                    }
                }
                probe.feedback.as_mut().expect("set").push(1.0);
                probe.relevance.as_mut().expect("set").push(1.0);
            }
        }
        out
    }
}

/// A uniformly drawn permutation of `0..n` without fixed points (rejection
/// sampling: about e tries); the identity's only alternative for n = 1.
fn derangement(n: usize, rng: &mut ChaCha8Rng) -> Vec<usize> {
    let mut p: Vec<usize> = (0..n).collect();
    if n < 2 {
        return p;
    }
    loop {
        p.shuffle(rng);
        if p.iter().enumerate().all(|(i, &x)| i != x) {
            return p;
        }
    }
}

impl Episodes for DriftConfig {
    fn vocab(&self) -> usize {
        self.keys + self.values + 2
    }
    fn context(&self) -> Context {
        Context::Sessions
    }
    fn slice_key(&self) -> &'static str {
        "writes"
    }
    fn generate(&self, rng: &mut ChaCha8Rng, batch: usize) -> Vec<SessionData> {
        self.episodes(rng, batch, self.later, false)
    }
    fn lengths(&self) -> Vec<usize> {
        let mut l = vec![self.session_len(); self.later + 1];
        l.push(self.probe_len());
        l
    }
    fn generate_eval(&self, _group: usize, rng: &mut ChaCha8Rng, batch: usize) -> Vec<SessionData> {
        self.episodes(rng, batch, self.eval_later, true)
    }
    fn eval_lengths(&self, _group: usize) -> Vec<usize> {
        let n = self.eval_later + 1;
        let mut l = vec![self.session_len(); n];
        l.extend(std::iter::repeat_n(self.probe_len(), n));
        l
    }
    fn probe_groups(&self) -> Vec<(&'static str, &'static str)> {
        vec![(
            "recent_accuracy",
            "held-out accuracy on the latest relevant session's facts",
        )]
    }
    fn chance(&self) -> Option<f64> {
        Some(1.0 / self.values as f64)
    }
    /// None: the side probe already measures memory after every session.
    fn controls(&self) -> Vec<Control> {
        Vec::new()
    }
    fn telemetry(&self) -> bool {
        true
    }
    fn bind_label(&self) -> Option<u8> {
        Some(0)
    }
    fn side_probe(&self) -> bool {
        true
    }
    fn relevance(&self) -> bool {
        true
    }
    fn dataset_config(&self) -> serde_json::Value {
        crate::learned::without_layout(self, &[])
    }
}

impl LearnedTask for DriftConfig {
    const KIND: &'static str = "drift";
    const ABOUT: &'static str = "drift under noisy writes (trains a model): accuracy on first facts against later writes, forgetting, gate precision/recall";
    fn check(&self) -> Result<(), String> {
        DriftConfig::validate(self)
    }
    fn vocab_field(&self) -> &'static str {
        "task.keys"
    }
    fn gives_feedback(&self) -> bool {
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use retbench_core::rng::stream;

    fn cfg(json: &str) -> DriftConfig {
        serde_json::from_str(json).unwrap()
    }

    /// Replays held-out episodes and classifies every later session by
    /// what it does to the first facts: the share of noise matches the
    /// rate, each kind looks as documented, and the probe after each
    /// session asks the first facts and the latest relevant session's.
    #[test]
    fn later_sessions_are_clean_or_the_documented_noise() {
        let c = cfg(r#"{"noise": 0.5, "eval_later": 60}"#);
        let batch = 100;
        let data = c.episodes(&mut stream("drift", 0, "data"), batch, c.eval_later, true);
        assert_eq!(data.len(), 2 * 61);
        let pairs_of =
            |v: &[u32]| -> Vec<(u32, u32)> { v.chunks(2).map(|p| (p[0], p[1])).collect() };
        let (mut noise, mut kinds) = (0usize, [0usize; 3]);
        for b in 0..batch {
            let row = |s: &SessionData| s.tokens[b * s.len..(b + 1) * s.len].to_vec();
            let first = pairs_of(&row(&data[0]));
            let keys: Vec<u32> = first.iter().map(|f| f.0).collect();
            let mut vals: Vec<u32> = first.iter().map(|f| f.1).collect();
            vals.sort_unstable();
            vals.dedup();
            assert_eq!(vals.len(), 4, "the first values are distinct");
            assert_eq!(data[0].relevance.as_ref().unwrap()[b], 1.0);
            let mut latest = first.clone();
            let mut seen: std::collections::HashSet<u32> = keys.iter().copied().collect();
            for (w, s) in data[..61].iter().enumerate() {
                let pairs = pairs_of(&row(s));
                let rel = s.relevance.as_ref().unwrap()[b];
                assert_eq!(s.feedback.as_ref().unwrap()[b], rel, "reliability 1");
                let on_first = pairs.iter().filter(|p| keys.contains(&p.0)).count();
                if w > 0 && rel == 1.0 {
                    assert_eq!(on_first, 0, "clean sessions use other keys");
                    for p in &pairs {
                        assert!(seen.insert(p.0), "a fresh key");
                    }
                    latest = pairs.clone();
                } else if w > 0 {
                    noise += 1;
                    let is_fact = |p: &(u32, u32)| first.contains(p);
                    if on_first == 4 && pairs.iter().all(|p| vals.contains(&p.1) && !is_fact(p)) {
                        kinds[2] += 1; // flip: the first values, none at its key
                    } else if on_first == 4 && pairs.iter().all(|p| !is_fact(p)) {
                        kinds[1] += 1; // contradiction
                    } else {
                        kinds[0] += 1;
                    }
                }
                // Probe w: Q k for the 4 first facts (label 0), then the 4
                // latest relevant ones (label 1).
                let probe = &data[61 + w];
                assert_eq!(probe.len, 16);
                for q in 0..8 {
                    let p = b * 16 + 2 * q + 1;
                    assert_eq!(probe.tokens[p - 1], c.query_token());
                    let (group, label) = if q < 4 { (&first, 0) } else { (&latest, 1) };
                    let fact = group.iter().find(|f| f.0 == probe.tokens[p]).unwrap();
                    assert_eq!((probe.targets[p], probe.mask[p]), (fact.1, 1.0));
                    assert_eq!(probe.label[p], label);
                }
            }
        }
        let share = noise as f64 / (batch * 60) as f64;
        assert!((share - 0.5).abs() < 0.03, "{share}");
        // A contradiction can pass for a flip (its values may be the first
        // values), never the reverse; random noise rarely passes for either.
        assert!(
            kinds.iter().all(|&k| k as f64 > 0.2 * noise as f64),
            "{kinds:?}"
        );
        // Training episodes: the stream, then one probe after its last session.
        let train = c.generate(&mut stream("drift", 0, "train"), 4);
        assert_eq!(train.len(), c.lengths().len());
        assert_eq!(train.iter().map(|s| s.len).collect::<Vec<_>>(), c.lengths());
        assert_eq!(train.last().unwrap().mask.iter().sum::<f32>(), 4.0 * 8.0);
    }

    #[test]
    fn unreliable_feedback_flips_at_the_rate_and_leaves_the_symbols_alone() {
        let draw = |r: f64| {
            let c = cfg(&format!(r#"{{"noise": 0.3, "reliability": {r}}}"#));
            c.episodes(&mut stream("drift", 1, "data"), 200, 50, false)
        };
        let (honest, noisy) = (draw(1.0), draw(0.6));
        let (mut flipped, mut n) = (0, 0);
        for (a, b) in honest.iter().zip(&noisy) {
            assert_eq!(a.tokens, b.tokens);
            assert_eq!(a.relevance, b.relevance);
            for (x, y) in a
                .feedback
                .as_ref()
                .unwrap()
                .iter()
                .zip(b.feedback.as_ref().unwrap())
            {
                flipped += (x != y) as usize;
                n += 1;
            }
        }
        let rate = flipped as f64 / n as f64;
        // The probe's signal is never flipped: 51 of 52 sessions can be.
        assert!((rate - 0.4 * 51.0 / 52.0).abs() < 0.03, "{rate}");
    }

    #[test]
    fn derangements_move_every_element() {
        let mut rng = stream("drift", 0, "derangement");
        for n in 2..7 {
            for _ in 0..50 {
                let p = derangement(n, &mut rng);
                let mut s = p.clone();
                s.sort_unstable();
                assert_eq!(s, (0..n).collect::<Vec<_>>());
                assert!(p.iter().enumerate().all(|(i, &x)| i != x));
            }
        }
    }

    #[test]
    fn bad_configs_name_the_field() {
        let err = |j: &str| cfg(j).validate().unwrap_err();
        assert!(err(r#"{"facts": 9}"#).starts_with("task.facts"));
        assert!(err(r#"{"keys": 200}"#).starts_with("task.keys"));
        assert!(err(r#"{"noise": 1.5}"#).starts_with("task.noise"));
        assert!(err(r#"{"reliability": -0.1}"#).starts_with("task.reliability"));
        assert!(err(r#"{"noise": 0.1, "kinds": []}"#).starts_with("task.kinds"));
        assert!(err(r#"{"eval_later": 0}"#).starts_with("task.eval_later"));
        assert!(cfg("{}").validate().is_ok());
    }
}
