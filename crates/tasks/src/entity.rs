//! Cross-session entity tracking with updates (suites/entity.yaml): facts
//! about entities are stated across sessions, later sessions change some of
//! them, and queries — in-session and in later sessions with a fresh
//! context — ask for each entity's latest value.
//!
//! ```text
//! session s:  e1 v1  e2 v2 … (facts: new entities, or updates of known ones) | Q ea va  Q eb vb …
//!                                                                                 ^^ target: ea's latest value
//! ```
//!
//! Each session states `facts` facts about distinct entities drawn uniformly
//! from the pool of `entities` (a known entity gets a different value: an
//! update), then asks `queries` distinct known entities. Every accuracy is sliced by `gap`
//! (sessions since the queried value was stated; 0: in this session's
//! context) and by `updates` (value changes of the queried entity so far;
//! `updates=2` means two or more). A prediction equal to one of the entity's
//! superseded values is a stale answer (`stale_answer_rate`, over queries
//! about updated entities). The pool size sets both how often facts are
//! updated (8 entities: most facts after the first session are updates) and
//! how many distinct facts an episode holds (128: nearly sessions × facts).

use rand::Rng;
use rand::seq::IndexedRandom;
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

use crate::learned::{Context, Episodes, LearnedTask, SessionData};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EntityConfig {
    /// Entities to draw from.
    #[serde(default = "eight")]
    pub entities: usize,
    /// Values an entity can take (chance is 1/values).
    #[serde(default = "eight")]
    pub values: usize,
    /// Sessions per episode.
    #[serde(default = "four")]
    pub sessions: usize,
    /// Facts stated per session (distinct entities).
    #[serde(default = "six")]
    pub facts: usize,
    /// Queries per session (distinct known entities).
    #[serde(default = "six")]
    pub queries: usize,
    /// `sessions` (the context is cleared between them) or `full`.
    #[serde(default)]
    pub context: Context,
}

fn eight() -> usize {
    8
}
fn four() -> usize {
    4
}
fn six() -> usize {
    6
}

/// `updates=2` stands for two or more.
const UPDATES_CAP: usize = 2;

impl EntityConfig {
    pub fn validate(&self) -> Result<(), String> {
        if self.entities == 0 {
            return Err("task.entities: must be at least 1".into());
        }
        if self.values < 2 {
            return Err("task.values: at least 2, so that an update can change a value".into());
        }
        if !(2..=255).contains(&self.sessions) {
            return Err("task.sessions: must be in 2..=255".into());
        }
        if self.facts == 0 || self.facts > self.entities {
            return Err(format!(
                "task.facts: must be in 1..={} (entities): a session states distinct entities",
                self.entities
            ));
        }
        if self.queries == 0 || self.queries > self.facts {
            return Err(format!(
                "task.queries: must be in 1..={} (facts): the first session can only ask what it stated",
                self.facts
            ));
        }
        Ok(())
    }

    pub fn query_token(&self) -> u32 {
        (self.entities + self.values) as u32
    }
    pub fn pad_token(&self) -> u32 {
        self.query_token() + 1
    }
    fn session_len(&self) -> usize {
        2 * self.facts + 3 * self.queries
    }

    /// A batch of `batch` episodes, session by session.
    pub fn generate(&self, rng: &mut ChaCha8Rng, batch: usize) -> Vec<SessionData> {
        let len = self.session_len();
        let mut out: Vec<SessionData> = (0..self.sessions)
            .map(|_| SessionData {
                len,
                label2: Some(Vec::with_capacity(batch * len)),
                stale: Some(Vec::with_capacity(batch * len)),
                ..Default::default()
            })
            .collect();
        let e_tokens = self.entities as u32;
        for _ in 0..batch {
            // Per entity: value history (latest last), and the session its
            // current value was last in context (stated or answered).
            let mut history: Vec<Vec<u32>> = vec![Vec::new(); self.entities];
            let mut seen_in = vec![0usize; self.entities];
            for (s, session) in out.iter_mut().enumerate() {
                let mut chosen: Vec<usize> = Vec::with_capacity(self.facts);
                for _ in 0..self.facts {
                    let pool: Vec<usize> =
                        (0..self.entities).filter(|e| !chosen.contains(e)).collect();
                    let e = *pool.choose(rng).expect("facts ≤ entities");
                    let value = match history[e].last() {
                        Some(&old) => {
                            // A different value: uniform over the other A − 1.
                            let v = rng.random_range(0..self.values as u32 - 1);
                            if v >= old { v + 1 } else { v }
                        }
                        None => rng.random_range(0..self.values as u32),
                    };
                    history[e].push(value);
                    seen_in[e] = s;
                    chosen.push(e);
                }
                let known: Vec<usize> = (0..self.entities)
                    .filter(|e| !history[*e].is_empty())
                    .collect();
                let asked: Vec<usize> = known.choose_multiple(rng, self.queries).copied().collect();
                let labels = session.label2.as_mut().expect("set above");
                let stale = session.stale.as_mut().expect("set above");
                let value_token = |v: u32| e_tokens + v;
                for &e in &chosen {
                    let v = *history[e].last().expect("stated");
                    session.tokens.extend([e as u32, value_token(v)]);
                }
                for _ in 0..2 * self.facts {
                    session.targets.push(self.pad_token());
                    session.mask.push(0.0);
                    session.label.push(0);
                    labels.push(0);
                    stale.push(Vec::new());
                }
                for &e in &asked {
                    let h = &history[e];
                    let current = *h.last().expect("known");
                    let updates = h.len() - 1;
                    let mut old: Vec<u32> = h[..updates]
                        .iter()
                        .filter(|&&v| v != current)
                        .map(|&v| value_token(v))
                        .collect();
                    old.sort_unstable();
                    old.dedup();
                    session
                        .tokens
                        .extend([self.query_token(), e as u32, value_token(current)]);
                    // The target sits at the entity's position.
                    session.targets.extend([
                        self.pad_token(),
                        value_token(current),
                        self.pad_token(),
                    ]);
                    session.mask.extend([0.0, 1.0, 0.0]);
                    session.label.extend([0, (s - seen_in[e]) as u8, 0]);
                    seen_in[e] = s;
                    labels.extend([0, updates.min(UPDATES_CAP) as u8, 0]);
                    stale.extend([Vec::new(), old, Vec::new()]);
                }
            }
        }
        out
    }
}

impl Episodes for EntityConfig {
    fn vocab(&self) -> usize {
        self.entities + self.values + 2
    }
    fn context(&self) -> Context {
        self.context
    }
    fn slice_key(&self) -> &'static str {
        "gap"
    }
    fn second_slice(&self) -> Option<&'static str> {
        Some("updates")
    }
    fn generate(&self, rng: &mut ChaCha8Rng, batch: usize) -> Vec<SessionData> {
        EntityConfig::generate(self, rng, batch)
    }
    fn lengths(&self) -> Vec<usize> {
        vec![self.session_len(); self.sessions]
    }
    fn in_session_label(&self) -> Option<u8> {
        Some(0)
    }
    fn chance(&self) -> Option<f64> {
        Some(1.0 / self.values as f64)
    }
    fn scorers(&self) -> Vec<Box<dyn crate::learned::Scorer>> {
        vec![Box::new(crate::learned::StaleAnswers::default())]
    }
    fn telemetry(&self) -> bool {
        true
    }
    fn dataset_config(&self) -> serde_json::Value {
        crate::learned::without_layout(self, &[])
    }
}

impl LearnedTask for EntityConfig {
    const KIND: &'static str = "entity";
    const ABOUT: &'static str = "cross-session entity tracking with updates (trains a model): accuracy by gap and updates, stale answers";
    fn check(&self) -> Result<(), String> {
        EntityConfig::validate(self)
    }
    fn vocab_field(&self) -> &'static str {
        if self.entities >= self.values {
            "task.entities"
        } else {
            "task.values"
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use retbench_core::rng::stream;
    use std::collections::HashMap;

    fn cfg(json: &str) -> EntityConfig {
        serde_json::from_str(json).unwrap()
    }

    /// Replays every episode with a plain map of latest values and checks
    /// each query's target, gap (since the answer was last in context),
    /// update count and stale set against it.
    #[test]
    fn targets_are_the_latest_values_with_their_gap_updates_and_stale_set() {
        let c = cfg(r#"{"entities": 12}"#);
        let batch = 200;
        let data = c.generate(&mut stream("entity", 0, "data"), batch);
        assert_eq!(data.len(), 4);
        let (mut updated, mut gaps) = (0, [0usize; 4]);
        for b in 0..batch {
            // entity → (values so far, session of the latest)
            let mut truth: HashMap<u32, (Vec<u32>, usize)> = HashMap::new();
            for (s, sd) in data.iter().enumerate() {
                let row = |v: &[u32]| v[b * sd.len..(b + 1) * sd.len].to_vec();
                let tok = row(&sd.tokens);
                let mut stated = std::collections::HashSet::new();
                for f in tok[..12].chunks(2) {
                    assert!(f[0] < 12 && (12..20).contains(&f[1]), "{f:?}");
                    assert!(stated.insert(f[0]), "distinct entities per session");
                    let e = truth.entry(f[0]).or_default();
                    if let Some(&last) = e.0.last() {
                        assert_ne!(last, f[1], "an update changes the value");
                    }
                    e.0.push(f[1]);
                    e.1 = s;
                }
                let mut asked = std::collections::HashSet::new();
                for q in 0..6 {
                    let p = b * sd.len + 12 + 3 * q + 1;
                    assert_eq!(sd.tokens[p - 1], c.query_token());
                    assert_eq!(sd.mask[p], 1.0);
                    let e = sd.tokens[p];
                    assert!(asked.insert(e), "distinct queries per session");
                    let (hist, at) = truth.get_mut(&e).unwrap();
                    assert_eq!(sd.targets[p], *hist.last().unwrap());
                    assert_eq!(sd.label[p] as usize, s - *at);
                    gaps[s - *at] += 1;
                    *at = s; // the answer is now in context
                    let ups = hist.len() - 1;
                    assert_eq!(sd.label2.as_ref().unwrap()[p] as usize, ups.min(2));
                    let stale = &sd.stale.as_ref().unwrap()[p];
                    assert_eq!(stale.is_empty(), ups == 0);
                    assert!(!stale.contains(&sd.targets[p]));
                    updated += (ups > 0) as usize;
                }
                assert_eq!(
                    sd.mask[b * sd.len..(b + 1) * sd.len].iter().sum::<f32>(),
                    6.0
                );
            }
        }
        assert!(
            updated > 100,
            "8 entities: many queries about updated facts ({updated})"
        );
        assert!(gaps.iter().all(|&g| g > 0), "every gap occurs: {gaps:?}");
    }

    #[test]
    fn a_large_pool_has_few_updates() {
        let few = |e: usize| {
            let c = cfg(&format!("{{\"entities\": {e}}}"));
            let data = c.generate(&mut stream("entity", 0, "data"), 200);
            let l2: Vec<u8> = data
                .iter()
                .flat_map(|s| {
                    let l = s.label2.as_ref().unwrap();
                    (0..s.mask.len())
                        .filter(|&p| s.mask[p] == 1.0)
                        .map(|p| l[p])
                })
                .collect();
            l2.iter().filter(|&&u| u > 0).count() as f64 / l2.len() as f64
        };
        let (small, large) = (few(8), few(128));
        assert!(small > 0.5 && large < small / 2.0, "{small} {large}");
    }

    #[test]
    fn bad_configs_name_the_field() {
        assert!(
            cfg(r#"{"facts": 9}"#)
                .validate()
                .unwrap_err()
                .starts_with("task.facts")
        );
        assert!(
            cfg(r#"{"queries": 7}"#)
                .validate()
                .unwrap_err()
                .starts_with("task.queries")
        );
        assert!(
            cfg(r#"{"values": 1}"#)
                .validate()
                .unwrap_err()
                .starts_with("task.values")
        );
        assert!(cfg("{}").validate().is_ok());
    }
}
