//! Five memory abilities across sessions (suites/abilities.yaml): facts and
//! updates about entities over several sessions, then a query session that
//! mixes one query type per ability of a long-term memory (LongMemEval, Wu
//! et al. 2024): information extraction, knowledge updates, temporal
//! reasoning, aggregation over sessions and abstention. Each type is its own
//! slice of `accuracy` (`query=<type>`) with its own chance level.
//!
//! ```text
//! fact session s:  e1 v1  e2 v2 … (new entities, or updates) | Q ea  Q eb …   (in-session: ea's value)
//! query session:   Q e   P e   R e1 e2   C e   S e1 e2 …                       (shuffled)
//!                    ^ current value, or `unknown` if e was never stated
//! ```
//!
//! | ability | slice | tokens | answer | chance |
//! |---|---|---|---|---|
//! | (in context) | `in_session` | `Q e` | the value just stated | 1/values |
//! | extraction | `extract` | `Q e` | e's value, stated once and never changed | 1/(values+1) |
//! | updates | `update` | `Q e` | e's latest value (changed ≥ 1 time) | 1/(values+1) |
//! | temporal | `before` | `P e` | the value e held before its last change | 1/values |
//! | temporal | `order` | `R e1 e2` | whichever of e1, e2 was stated last (different sessions) | 1/2 |
//! | aggregation | `count` | `C e` | how many times e changed, capped at `count_cap` | 1/classes |
//! | aggregation | `same` | `S e1 e2` | `yes` if e1 and e2 hold the same value now | 1/2 |
//! | (ablation) | `same` | `S v1 v2` | `yes` if v1 = v2 (`same_operands: values`) | 1/2 |
//! | abstention | `abstain` | `Q e` | `unknown`: e was never stated | 1/(values+1) |
//!
//! The answers are balanced so that a model without memory can do no better
//! than chance beyond the current session: a `Q e` of the query session asks
//! about an unknown entity with probability 1/(values+1) (so `unknown` is as
//! likely as each value), count classes and yes/no are drawn uniformly, and
//! the order of e1, e2 is random. No entity is named by two queries of the
//! query session: only stated entities are asked about in `P`, `C`, `R`
//! and `S`, so an entity named twice would be known to have been stated,
//! and `unknown` would be guessable without memory (an earlier version let
//! a model without memory abstain on 87% of never-stated entities and 26%
//! of stated ones). Answers are not part of the input (the target sits at a
//! query's last token), so a query reveals nothing to the next. An episode whose story cannot give every query type
//! (no entity changed twice, no two entities with the same value, …) is
//! drawn again: the episodes are those stories conditioned on holding every
//! type. `stale_answer_rate` (the `update` answers that were a superseded
//! value) and the abstention scores ([`Abstentions`]) come with it.

use rand::Rng;
use rand::seq::{IndexedRandom, SliceRandom};
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

use crate::learned::{
    Context, Control, Episodes, LearnedTask, ScoredRow, Scorer, SessionData, StaleAnswers,
};
use crate::metric::{Metric, MetricSpec};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AbilitiesConfig {
    /// Entities to draw from; more than sessions × facts, so that some are
    /// never stated (what abstention asks about).
    #[serde(default = "thirty_two")]
    pub entities: usize,
    /// Values an entity can take.
    #[serde(default = "eight")]
    pub values: usize,
    /// Fact sessions; the query session follows them.
    #[serde(default = "three")]
    pub sessions: usize,
    /// Facts per fact session (distinct entities).
    #[serde(default = "six")]
    pub facts: usize,
    /// Chance that a fact of a later session updates a known entity (else
    /// it states a new one).
    #[serde(default = "half")]
    pub update_rate: f64,
    /// In-session queries per fact session (about its own facts).
    #[serde(default = "two")]
    pub queries: usize,
    /// Queries of the query session per type (`Q e` queries: three times
    /// as many, split between extraction, update and abstention). No
    /// entity is named by two queries of the session, so the stated
    /// entities must be enough for 7 × probes queries (9 × probes names).
    #[serde(default = "one")]
    pub probes: usize,
    /// The largest count a `count` query answers (`count_cap` stands
    /// for that many changes or more).
    #[serde(default = "two")]
    pub count_cap: usize,
    /// `sessions` (the context is cleared between them) or `full`.
    #[serde(default)]
    pub context: Context,
    /// What a `same` query names: the two `entities` (the ability: recall
    /// both values, then compare), or their two current `values` (an
    /// ablation: the comparison alone, with nothing to recall).
    #[serde(default)]
    pub same_operands: SameOperands,
}

/// The operands of a `same` query (`task.same_operands`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SameOperands {
    /// `S e1 e2`: the values must be recalled before they are compared.
    #[default]
    Entities,
    /// `S v1 v2`: the values themselves, so that only the comparison is
    /// learned (no memory needed: an ablation, not an ability).
    Values,
}

fn thirty_two() -> usize {
    32
}
fn eight() -> usize {
    8
}
fn six() -> usize {
    6
}
fn one() -> usize {
    1
}
fn three() -> usize {
    3
}
fn two() -> usize {
    2
}
fn half() -> f64 {
    0.5
}

/// The query types, in slice-label order (label = index).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Query {
    InSession,
    Extraction,
    Update,
    TemporalBefore,
    TemporalOrder,
    AggregationCount,
    AggregationSame,
    Abstention,
}

impl Query {
    pub const ALL: [Query; 8] = [
        Query::InSession,
        Query::Extraction,
        Query::Update,
        Query::TemporalBefore,
        Query::TemporalOrder,
        Query::AggregationCount,
        Query::AggregationSame,
        Query::Abstention,
    ];
    pub fn name(self) -> &'static str {
        match self {
            Query::InSession => "in_session",
            Query::Extraction => "extract",
            Query::Update => "update",
            Query::TemporalBefore => "before",
            Query::TemporalOrder => "order",
            Query::AggregationCount => "count",
            Query::AggregationSame => "same",
            Query::Abstention => "abstain",
        }
    }
    pub fn label(self) -> u8 {
        Query::ALL.iter().position(|q| *q == self).expect("listed") as u8
    }
}

/// Markers of the query forms, in token order after `unknown`.
#[derive(Debug, Clone, Copy)]
enum Marker {
    Current,
    Before,
    Recent,
    Count,
    Same,
}

/// How often an episode may be drawn again before the settings count as
/// unable to give every query type.
const MAX_DRAWS: usize = 200;

impl AbilitiesConfig {
    pub fn validate(&self) -> Result<(), String> {
        if self.values < 2 {
            return Err("task.values: at least 2, so that an update can change a value".into());
        }
        if !(2..=254).contains(&self.sessions) {
            return Err("task.sessions: must be in 2..=254 (an update needs two sessions)".into());
        }
        if self.facts < 2 {
            return Err("task.facts: at least 2 (two entities are compared)".into());
        }
        if self.entities <= self.sessions * self.facts {
            return Err(format!(
                "task.entities: must exceed sessions × facts = {}, so that some entity is never stated (abstention)",
                self.sessions * self.facts
            ));
        }
        if !(self.update_rate > 0.0 && self.update_rate < 1.0) {
            return Err("task.update_rate: must be in (0, 1)".into());
        }
        if self.queries > self.facts {
            return Err(format!(
                "task.queries: at most {} (facts): a session asks about its own facts once",
                self.facts
            ));
        }
        if self.probes == 0 {
            return Err("task.probes: must be at least 1".into());
        }
        if self.count_cap == 0 {
            return Err("task.count_cap: must be at least 1".into());
        }
        self.check_draws()
    }

    /// Fails where stories that host the hardest query session (every
    /// `Q e` an update, the top count class, `same` answered yes) are too
    /// rare to draw: an episode's asks are kept until a story hosts them.
    fn check_draws(&self) -> Result<(), String> {
        let mut rng = retbench_core::rng::stream("abilities", 0, "feasibility");
        let top = self.count_classes() - 1;
        let mut hardest = Vec::with_capacity(7 * self.probes);
        for (kind, class, n) in [
            (Query::AggregationCount, top, 1),
            (Query::AggregationSame, 1, 1),
            (Query::TemporalOrder, 0, 1),
            (Query::TemporalBefore, 0, 1),
            (Query::Update, 0, 3),
        ] {
            hardest.extend(std::iter::repeat_n(Ask { kind, class }, n * self.probes));
        }
        for _ in 0..16 {
            let fails = |rng: &mut ChaCha8Rng| {
                let story = Story::draw(self, rng);
                !story.complete(self) || self.host_all(&story, &hardest, rng).is_none()
            };
            if (0..MAX_DRAWS).all(|_| fails(&mut rng)) {
                return Err(format!(
                    "task: an episode with every query type takes more than {MAX_DRAWS} draws at these settings; raise task.facts, task.sessions or task.update_rate, or lower task.count_cap"
                ));
            }
        }
        Ok(())
    }

    /// Classes of a `count` answer: 0 changes up to the cap.
    pub fn count_classes(&self) -> usize {
        self.count_cap.min(self.sessions - 1) + 1
    }

    pub fn value_token(&self, v: u32) -> u32 {
        (self.entities as u32) + v
    }
    pub fn count_token(&self, c: usize) -> u32 {
        (self.entities + self.values + c) as u32
    }
    pub fn yes_token(&self) -> u32 {
        (self.entities + self.values + self.count_classes()) as u32
    }
    pub fn no_token(&self) -> u32 {
        self.yes_token() + 1
    }
    pub fn unknown_token(&self) -> u32 {
        self.yes_token() + 2
    }
    fn marker(&self, m: Marker) -> u32 {
        self.unknown_token() + 1 + m as u32
    }
    pub fn pad_token(&self) -> u32 {
        self.marker(Marker::Same) + 1
    }

    fn fact_len(&self) -> usize {
        2 * self.facts + 2 * self.queries
    }
    /// `3·probes` two-token `Q e`, `probes` each of `P e` and `C e`, and
    /// `probes` each of the three-token `R e1 e2` and `S e1 e2`.
    fn query_len(&self) -> usize {
        2 * 5 * self.probes + 3 * 2 * self.probes
    }

    /// A batch of `batch` episodes, session by session.
    pub fn generate(&self, rng: &mut ChaCha8Rng, batch: usize) -> Vec<SessionData> {
        let mut out: Vec<SessionData> = self
            .session_lengths()
            .into_iter()
            .map(|len| SessionData {
                len,
                stale: Some(Vec::with_capacity(batch * len)),
                label2: Some(Vec::with_capacity(batch * len)),
                ..Default::default()
            })
            .collect();
        for _ in 0..batch {
            let (story, probes) = self.draw_episode(rng);
            for (s, session) in out.iter_mut().enumerate().take(self.sessions) {
                self.fact_session(&story, s, rng, session);
            }
            self.query_session(probes, &mut out[self.sessions]);
        }
        out
    }

    /// The query session's asks are drawn first and kept; stories are
    /// drawn until one can host them all, each about entities no other
    /// query of the session names. Were the whole episode redrawn instead,
    /// a redraw would depend on the answers drawn: a count of 2 uses up an
    /// updated entity that a later query needs, and such redraws left the
    /// count classes at 0.366 / 0.327 / 0.307 of the held-out queries, so
    /// a model without memory learned to answer 0. With the asks kept, the
    /// answers are exactly as drawn; only the story depends on them, and a
    /// model without memory never sees the story.
    fn draw_episode(&self, rng: &mut ChaCha8Rng) -> (Story, Vec<(Query, Probe)>) {
        let asks = self.draw_asks(rng);
        loop {
            let story = Story::draw_complete(self, rng);
            if let Some(probes) = self.host_all(&story, &asks, rng) {
                return (story, probes);
            }
        }
    }

    /// One ask per query of the query session, scarcest first (count
    /// classes, then pairs, then entities with changes) so that a story
    /// hosts them more often.
    fn draw_asks(&self, rng: &mut ChaCha8Rng) -> Vec<Ask> {
        let mut kinds: Vec<Query> = Vec::with_capacity(7 * self.probes);
        for q in [
            Query::AggregationCount,
            Query::AggregationSame,
            Query::TemporalOrder,
            Query::TemporalBefore,
        ] {
            kinds.extend(std::iter::repeat_n(q, self.probes));
        }
        let mut current: Vec<Query> = (0..3 * self.probes)
            .map(|_| self.current_kind(rng))
            .collect();
        current.sort_by_key(|q| *q != Query::Update);
        kinds.extend(current);
        kinds.into_iter().map(|q| self.draw_ask(q, rng)).collect()
    }

    /// The query session's queries in a random order, each about entities
    /// that appear in no other query of it: were an entity to appear in
    /// two, a model without memory could tell from the session alone that
    /// it was stated (only stated entities are asked about in `P`, `C`,
    /// `R` and `S`), so `unknown` would be guessable without memory.
    fn host_all(
        &self,
        story: &Story,
        asks: &[Ask],
        rng: &mut ChaCha8Rng,
    ) -> Option<Vec<(Query, Probe)>> {
        let mut used: Vec<usize> = Vec::new();
        let mut probes = Vec::with_capacity(asks.len());
        for &ask in asks {
            probes.push((ask.kind, self.host(story, ask, rng, &mut used)?));
        }
        probes.shuffle(rng);
        Some(probes)
    }

    /// The answer class of a `kind` query, drawn alike: a count class for
    /// `count`, yes (1) or no (0) for `same`; 0 for the other types, whose
    /// answers follow from the entity asked about.
    fn draw_ask(&self, kind: Query, rng: &mut ChaCha8Rng) -> Ask {
        let class = match kind {
            Query::AggregationCount => rng.random_range(0..self.count_classes()),
            Query::AggregationSame => rng.random_bool(0.5) as usize,
            _ => 0,
        };
        Ask { kind, class }
    }

    fn session_lengths(&self) -> Vec<usize> {
        let mut v = vec![self.fact_len(); self.sessions];
        v.push(self.query_len());
        v
    }

    /// Session `s`'s facts, then in-session queries about some of them.
    fn fact_session(&self, story: &Story, s: usize, rng: &mut ChaCha8Rng, out: &mut SessionData) {
        let facts = &story.sessions[s];
        let pad = self.pad_token();
        for &(e, v) in facts {
            push(out, &[e as u32, self.value_token(v)], pad, None);
        }
        for &(e, v) in facts.choose_multiple(rng, self.queries) {
            let target = Target {
                answer: self.value_token(v),
                label: Query::InSession.label(),
                stale: Vec::new(),
                changes: 0,
            };
            push(
                out,
                &[self.marker(Marker::Current), e as u32],
                pad,
                Some(target),
            );
        }
    }

    /// The query session: every type's queries.
    fn query_session(&self, probes: Vec<(Query, Probe)>, out: &mut SessionData) {
        for (kind, p) in probes {
            let target = Target {
                answer: p.answer,
                label: kind.label(),
                stale: p.stale,
                changes: p.changes,
            };
            push(out, &p.tokens, self.pad_token(), Some(target));
        }
    }

    /// The type of a `Q e` query: unknown with probability 1/(values+1),
    /// else extraction or update alike.
    fn current_kind(&self, rng: &mut ChaCha8Rng) -> Query {
        if rng.random_range(0..=self.values) == 0 {
            Query::Abstention
        } else if rng.random_bool(0.5) {
            Query::Extraction
        } else {
            Query::Update
        }
    }

    /// A query of type `kind`, its answer class drawn here (see
    /// [`AbilitiesConfig::host`]).
    #[cfg(test)]
    fn probe(
        &self,
        story: &Story,
        kind: Query,
        rng: &mut ChaCha8Rng,
        used: &mut Vec<usize>,
    ) -> Option<Probe> {
        let ask = self.draw_ask(kind, rng);
        self.host(story, ask, rng, used)
    }

    /// The query `ask` about entities not in `used` (which then holds them
    /// too); `None` where the story has none left.
    fn host(
        &self,
        story: &Story,
        ask: Ask,
        rng: &mut ChaCha8Rng,
        used: &mut Vec<usize>,
    ) -> Option<Probe> {
        let mut pick = |pool: Vec<usize>, rng: &mut ChaCha8Rng| {
            let e = *pool
                .iter()
                .filter(|e| !used.contains(e))
                .collect::<Vec<_>>()
                .choose(rng)?;
            used.push(*e);
            Some(*e)
        };
        let one =
            |m: Marker, e: usize, answer: u32| Probe::new(vec![self.marker(m), e as u32], answer);
        Some(match ask.kind {
            Query::Extraction => {
                let e = pick(story.with_changes(0, 0), rng)?;
                one(Marker::Current, e, self.value_token(story.current(e)))
            }
            Query::Update => {
                let e = pick(story.with_changes(1, usize::MAX), rng)?;
                let mut p = one(Marker::Current, e, self.value_token(story.current(e)));
                p.stale = story.superseded(e).map(|v| self.value_token(v)).collect();
                p
            }
            Query::TemporalBefore => {
                let e = pick(story.with_changes(1, usize::MAX), rng)?;
                let mut p = one(Marker::Before, e, self.value_token(story.before(e)));
                p.changes = story.changes(e).min(u8::MAX as usize) as u8;
                p
            }
            Query::AggregationCount => {
                let e = pick(story.in_count_class(self, ask.class), rng)?;
                one(Marker::Count, e, self.count_token(ask.class))
            }
            Query::Abstention => {
                let e = pick(story.unmentioned(self), rng)?;
                one(Marker::Current, e, self.unknown_token())
            }
            Query::TemporalOrder => self.order_probe(story, rng, used)?,
            Query::AggregationSame => self.same_probe(story, ask.class == 1, rng, used)?,
            Query::InSession => unreachable!("asked in fact sessions"),
        })
    }

    /// `R e1 e2`: two entities last stated in different sessions, in random
    /// order; the answer is the later one.
    fn order_probe(
        &self,
        story: &Story,
        rng: &mut ChaCha8Rng,
        used: &mut Vec<usize>,
    ) -> Option<Probe> {
        let (e1, e2) = pick_pair(story.order_pairs(), rng, used)?;
        let later = if story.last_session(e1) > story.last_session(e2) {
            e1
        } else {
            e2
        };
        Some(Probe::new(
            vec![self.marker(Marker::Recent), e1 as u32, e2 as u32],
            later as u32,
        ))
    }

    /// `S e1 e2` (or `S v1 v2` with `same_operands: values`): a pair whose
    /// values are the same, or differ.
    fn same_probe(
        &self,
        story: &Story,
        same: bool,
        rng: &mut ChaCha8Rng,
        used: &mut Vec<usize>,
    ) -> Option<Probe> {
        let (e1, e2) = pick_pair(story.value_pairs(same), rng, used)?;
        let operand = |e: usize| match self.same_operands {
            SameOperands::Entities => e as u32,
            SameOperands::Values => self.value_token(story.current(e)),
        };
        let answer = if same {
            self.yes_token()
        } else {
            self.no_token()
        };
        Some(Probe::new(
            vec![self.marker(Marker::Same), operand(e1), operand(e2)],
            answer,
        ))
    }
}

/// One of `pairs` with neither entity in `used` (which then holds both),
/// in random order: the pairs are listed lower entity first, and a fixed
/// order would tell the model which of the two it is.
fn pick_pair(
    pairs: Vec<(usize, usize)>,
    rng: &mut ChaCha8Rng,
    used: &mut Vec<usize>,
) -> Option<(usize, usize)> {
    let free: Vec<&(usize, usize)> = pairs
        .iter()
        .filter(|(a, b)| !used.contains(a) && !used.contains(b))
        .collect();
    let &&(a, b) = free.choose(rng)?;
    used.extend([a, b]);
    Some(if rng.random_bool(0.5) { (a, b) } else { (b, a) })
}

/// A query of the query session before a story hosts it: its type and,
/// for `count` and `same`, its answer class.
#[derive(Debug, Clone, Copy)]
struct Ask {
    kind: Query,
    class: usize,
}

/// One query of the query session.
struct Probe {
    tokens: Vec<u32>,
    answer: u32,
    stale: Vec<u32>,
    /// For `before`: how often the entity changed (the second label).
    changes: u8,
}

impl Probe {
    /// A probe with no superseded values and no change count; `update` and
    /// `before` fill in theirs afterwards.
    fn new(tokens: Vec<u32>, answer: u32) -> Self {
        Self {
            tokens,
            answer,
            stale: Vec::new(),
            changes: 0,
        }
    }
}

/// What a scored query adds besides its tokens: the answer, its slice
/// label and its superseded values.
struct Target {
    answer: u32,
    label: u8,
    stale: Vec<u32>,
    changes: u8,
}

/// Appends `tokens` to the row `out` is building; a `target` sits at the
/// last token (the others predict `pad`, unscored).
fn push(out: &mut SessionData, tokens: &[u32], pad: u32, target: Option<Target>) {
    let stale = out
        .stale
        .as_mut()
        .expect("abilities sessions carry stale sets");
    let changes = out
        .label2
        .as_mut()
        .expect("abilities sessions carry change counts");
    let last = tokens.len() - 1;
    for (i, &t) in tokens.iter().enumerate() {
        out.tokens.push(t);
        match target.as_ref().filter(|_| i == last) {
            Some(t) => {
                out.targets.push(t.answer);
                out.mask.push(1.0);
                out.label.push(t.label);
                stale.push(t.stale.clone());
                changes.push(t.changes);
            }
            None => {
                out.targets.push(pad);
                out.mask.push(0.0);
                out.label.push(0);
                stale.push(Vec::new());
                changes.push(0);
            }
        }
    }
}

/// What an episode's fact sessions state: the facts of each session, and
/// per entity its values in order with the session of each.
#[derive(Debug, Clone)]
struct Story {
    sessions: Vec<Vec<(usize, u32)>>,
    history: Vec<Vec<(usize, u32)>>,
}

impl Story {
    /// Fact sessions: each fact after the first session updates a known
    /// entity not yet stated in the session with probability `update_rate`
    /// (to a different value), else states a new entity.
    fn draw(cfg: &AbilitiesConfig, rng: &mut ChaCha8Rng) -> Story {
        let mut story = Story {
            sessions: Vec::with_capacity(cfg.sessions),
            history: vec![Vec::new(); cfg.entities],
        };
        for s in 0..cfg.sessions {
            let mut facts: Vec<(usize, u32)> = Vec::with_capacity(cfg.facts);
            for _ in 0..cfg.facts {
                let known: Vec<usize> = story
                    .mentioned()
                    .filter(|e| facts.iter().all(|(f, _)| f != e))
                    .collect();
                let fact = match known.is_empty() || !rng.random_bool(cfg.update_rate) {
                    true => {
                        let fresh = story.unmentioned(cfg);
                        let e = *fresh.choose(rng).expect("entities > sessions × facts");
                        (e, rng.random_range(0..cfg.values as u32))
                    }
                    false => {
                        let e = *known.choose(rng).expect("not empty");
                        let v = rng.random_range(0..cfg.values as u32 - 1);
                        let old = story.current(e);
                        (e, if v >= old { v + 1 } else { v })
                    }
                };
                story.history[fact.0].push((s, fact.1));
                facts.push(fact);
            }
            story.sessions.push(facts);
        }
        story
    }

    /// The first story that gives every query type ([`Story::complete`]).
    fn draw_complete(cfg: &AbilitiesConfig, rng: &mut ChaCha8Rng) -> Story {
        loop {
            let story = Story::draw(cfg, rng);
            if story.complete(cfg) {
                return story;
            }
        }
    }

    fn complete(&self, cfg: &AbilitiesConfig) -> bool {
        !self.with_changes(0, 0).is_empty()
            && (0..cfg.count_classes()).all(|c| !self.in_count_class(cfg, c).is_empty())
            && !self.order_pairs().is_empty()
            && !self.value_pairs(true).is_empty()
            && !self.value_pairs(false).is_empty()
    }

    fn mentioned(&self) -> impl Iterator<Item = usize> + '_ {
        (0..self.history.len()).filter(|&e| !self.history[e].is_empty())
    }
    fn unmentioned(&self, cfg: &AbilitiesConfig) -> Vec<usize> {
        (0..cfg.entities)
            .filter(|&e| self.history[e].is_empty())
            .collect()
    }
    fn changes(&self, e: usize) -> usize {
        self.history[e].len().saturating_sub(1)
    }
    fn current(&self, e: usize) -> u32 {
        self.history[e].last().expect("mentioned").1
    }
    fn before(&self, e: usize) -> u32 {
        self.history[e][self.history[e].len() - 2].1
    }
    fn last_session(&self, e: usize) -> usize {
        self.history[e].last().expect("mentioned").0
    }
    /// The distinct earlier values of `e` other than its current one.
    fn superseded(&self, e: usize) -> impl Iterator<Item = u32> + '_ {
        let now = self.current(e);
        let mut old: Vec<u32> = self.history[e]
            .iter()
            .map(|h| h.1)
            .filter(|&v| v != now)
            .collect();
        old.sort_unstable();
        old.dedup();
        old.into_iter()
    }
    /// Mentioned entities with `lo..=hi` changes.
    fn with_changes(&self, lo: usize, hi: usize) -> Vec<usize> {
        self.mentioned()
            .filter(|&e| (lo..=hi).contains(&self.changes(e)))
            .collect()
    }
    fn in_count_class(&self, cfg: &AbilitiesConfig, c: usize) -> Vec<usize> {
        let top = cfg.count_classes() - 1;
        match c < top {
            true => self.with_changes(c, c),
            false => self.with_changes(top, usize::MAX),
        }
    }
    fn pairs(&self, keep: impl Fn(usize, usize) -> bool) -> Vec<(usize, usize)> {
        let m: Vec<usize> = self.mentioned().collect();
        let mut out = Vec::new();
        for (i, &a) in m.iter().enumerate() {
            out.extend(m[i + 1..].iter().filter(|&&b| keep(a, b)).map(|&b| (a, b)));
        }
        out
    }
    fn order_pairs(&self) -> Vec<(usize, usize)> {
        self.pairs(|a, b| self.last_session(a) != self.last_session(b))
    }
    fn value_pairs(&self, same: bool) -> Vec<(usize, usize)> {
        self.pairs(|a, b| (self.current(a) == self.current(b)) == same)
    }
}

impl Episodes for AbilitiesConfig {
    fn vocab(&self) -> usize {
        self.pad_token() as usize + 1
    }
    fn context(&self) -> Context {
        self.context
    }
    fn slice_key(&self) -> &'static str {
        "query"
    }
    fn slice_label(&self, label: u8) -> String {
        Query::ALL
            .get(label as usize)
            .map_or_else(|| label.to_string(), |q| q.name().to_string())
    }
    fn generate(&self, rng: &mut ChaCha8Rng, batch: usize) -> Vec<SessionData> {
        AbilitiesConfig::generate(self, rng, batch)
    }
    fn lengths(&self) -> Vec<usize> {
        self.session_lengths()
    }
    /// Chance differs by query type: one reference level per slice.
    fn references(&self) -> Vec<(String, String, f64)> {
        Query::ALL
            .iter()
            .map(|&q| {
                let slice = format!("query={}", q.name());
                ("chance".to_string(), slice, self.chance_of(q))
            })
            .collect()
    }
    /// Memory cleared before the query session: every query type but
    /// `in_session` must fall to chance.
    fn controls(&self) -> Vec<Control> {
        match self.context {
            Context::Sessions => vec![Control {
                metric: "accuracy_memory_cleared",
                about: "accuracy, memory cleared before the query session",
                clear_before: self.sessions,
            }],
            Context::Full => Vec::new(),
        }
    }
    fn bind_label(&self) -> Option<u8> {
        Some(Query::Extraction.label())
    }
    fn in_session_label(&self) -> Option<u8> {
        Some(Query::InSession.label())
    }
    fn scorers(&self) -> Vec<Box<dyn Scorer>> {
        vec![
            Box::new(StaleAnswers::default()),
            Box::new(Abstentions::new(self.unknown_token())),
            Box::new(BeforeByChanges::new(1.0 / self.values as f64)),
        ]
    }
    fn telemetry(&self) -> bool {
        true
    }
    fn dataset_config(&self) -> serde_json::Value {
        crate::learned::without_layout(self, &[])
    }
}

impl AbilitiesConfig {
    /// The accuracy of a uniform guess over the answers query type `q` can
    /// have.
    pub fn chance_of(&self, q: Query) -> f64 {
        let answers = match q {
            Query::InSession | Query::TemporalBefore => self.values,
            Query::Extraction | Query::Update | Query::Abstention => self.values + 1,
            Query::TemporalOrder | Query::AggregationSame => 2,
            Query::AggregationCount => self.count_classes(),
        };
        1.0 / answers as f64
    }
}

impl LearnedTask for AbilitiesConfig {
    const KIND: &'static str = "abilities";
    const ABOUT: &'static str = "five memory abilities across sessions (trains a model): extraction, updates, temporal order, aggregation, abstention";
    fn check(&self) -> Result<(), String> {
        AbilitiesConfig::validate(self)
    }
    fn vocab_field(&self) -> &'static str {
        "task.entities"
    }
}

/// Abstention scored as a classifier of "never stated": recall over the
/// `abstain` queries, false abstention over the queries about known
/// entities beyond the current session (`extract`, `update`), and
/// precision over every scored answer that was `unknown`.
#[derive(Debug)]
pub struct Abstentions {
    unknown: u32,
    /// (abstained, abstention queries), (abstained, known queries),
    /// (`unknown` answers on abstention queries, `unknown` answers)
    recall: (usize, usize),
    false_rate: (usize, usize),
    precision: (usize, usize),
}

impl Abstentions {
    pub fn new(unknown: u32) -> Self {
        Abstentions {
            unknown,
            recall: (0, 0),
            false_rate: (0, 0),
            precision: (0, 0),
        }
    }
}

impl Abstentions {
    /// Recall minus false abstention rate, where both have queries.
    fn discrimination(&self) -> Option<Metric> {
        let share = |(k, n): (usize, usize)| (n > 0).then(|| k as f64 / n as f64);
        let j = share(self.recall)? - share(self.false_rate)?;
        Some(Metric::new("abstention_discrimination", j))
    }
}

impl Scorer for Abstentions {
    fn specs(&self, _key: &'static str) -> Vec<MetricSpec> {
        vec![
            MetricSpec::share(
                "abstention_recall",
                "queries about never-stated entities answered `unknown`",
            ),
            MetricSpec::share(
                "abstention_precision",
                "`unknown` answers that were about a never-stated entity",
            ),
            MetricSpec::share(
                "false_abstention_rate",
                "queries about known entities (extraction, update) answered `unknown`",
            )
            .lower(),
            // Youden's J: a model that cannot tell a stated entity from a
            // never-stated one abstains at one rate on both, whatever its
            // bias, so J is 0 for it where the per-slice accuracies only
            // trade `abstain` against `extract` and `update`.
            MetricSpec::new(
                "abstention_discrimination",
                "abstention recall minus false abstention rate (Youden's J; 0 without memory)",
            )
            .bounds(-1.0, 1.0)
            .chance(0.0),
        ]
    }

    fn add(&mut self, row: &ScoredRow<'_>) {
        let abstain = Query::Abstention.label();
        let known = [Query::Extraction.label(), Query::Update.label()];
        for &p in row.positions {
            let said = row.predictions[p] == self.unknown;
            let label = row.data.label[p];
            if label == abstain {
                self.recall.0 += said as usize;
                self.recall.1 += 1;
            } else if known.contains(&label) {
                self.false_rate.0 += said as usize;
                self.false_rate.1 += 1;
            }
            if said {
                self.precision.0 += (label == abstain) as usize;
                self.precision.1 += 1;
            }
        }
    }

    /// Each share where it has a denominator (no `unknown` answers: no
    /// precision).
    fn metrics(&self, _key: &'static str) -> Vec<Metric> {
        [
            ("abstention_recall", self.recall),
            ("abstention_precision", self.precision),
            ("false_abstention_rate", self.false_rate),
        ]
        .into_iter()
        .filter(|(_, (_, n))| *n > 0)
        .map(|(name, (k, n))| Metric::new(name, k as f64 / n as f64))
        .chain(self.discrimination())
        .collect()
    }
}

/// `before` accuracy by how often the entity changed (the second label):
/// after one change the value before it is the entity's first, which a
/// write that read the old value can carry; after two it is the middle of
/// three, and only the order of the writes tells it from the first.
#[derive(Debug)]
pub struct BeforeByChanges {
    chance: f64,
    /// (right, asked) per change count
    hits: std::collections::BTreeMap<u8, (usize, usize)>,
}

impl BeforeByChanges {
    pub fn new(chance: f64) -> Self {
        BeforeByChanges {
            chance,
            hits: Default::default(),
        }
    }
}

impl Scorer for BeforeByChanges {
    fn specs(&self, _key: &'static str) -> Vec<MetricSpec> {
        vec![
            MetricSpec::share(
                "before_accuracy",
                "accuracy of `before` queries by how often the entity changed",
            )
            .sliced("changes")
            .chance(self.chance),
        ]
    }

    fn add(&mut self, row: &ScoredRow<'_>) {
        let Some(changes) = &row.data.label2 else {
            return;
        };
        for &p in row.positions {
            if row.data.label[p] == Query::TemporalBefore.label() {
                let e = self.hits.entry(changes[p]).or_default();
                e.0 += (row.predictions[p] == row.data.targets[p]) as usize;
                e.1 += 1;
            }
        }
    }

    fn metrics(&self, _key: &'static str) -> Vec<Metric> {
        self.hits
            .iter()
            .map(|(c, (k, n))| {
                Metric::sliced("before_accuracy", "changes", c, *k as f64 / *n as f64)
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use retbench_core::rng::stream;
    use std::collections::{BTreeMap, BTreeSet, HashMap};

    fn cfg(json: &str) -> AbilitiesConfig {
        serde_json::from_str(json).unwrap()
    }

    /// 12 entities, 3 sessions of 3 facts; by hand:
    /// e0 = 1 (s0); e1 = 2 (s0) → 5 (s1); e2 = 3 (s0) → 4 (s1) → 6 (s2);
    /// e3 = 3 (s1); e4 = 2 (s2); e5 = 1 (s2); e6..e11 never stated.
    fn hand_built() -> (AbilitiesConfig, Story) {
        let c = cfg(r#"{"entities": 12, "facts": 3}"#);
        let sessions = vec![
            vec![(0, 1), (1, 2), (2, 3)],
            vec![(1, 5), (3, 3), (2, 4)],
            vec![(2, 6), (4, 2), (5, 1)],
        ];
        let mut history = vec![Vec::new(); 12];
        for (s, facts) in sessions.iter().enumerate() {
            for &(e, v) in facts {
                history[e].push((s, v));
            }
        }
        (c, Story { sessions, history })
    }

    /// Draws `kind`'s query 300 times on the hand-built story; returns per
    /// query (entities asked, answer token) and checks the marker and slice.
    fn asked(kind: Query, marker: Marker) -> Vec<(Vec<u32>, u32)> {
        let (c, story) = hand_built();
        assert!(story.complete(&c));
        let mut rng = stream("abilities-golden", 0, kind.name());
        (0..300)
            .map(|_| {
                let p = c.probe(&story, kind, &mut rng, &mut Vec::new()).unwrap();
                assert_eq!(p.tokens[0], c.marker(marker), "{kind:?}");
                (p.tokens[1..].to_vec(), p.answer)
            })
            .collect()
    }

    /// Every answer of `kind` against a hand-written table of entity →
    /// answer; every entity of the table is asked.
    fn golden(kind: Query, marker: Marker, table: &[(u32, u32)]) {
        let table: HashMap<u32, u32> = table.iter().copied().collect();
        let mut seen = BTreeSet::new();
        for (es, answer) in asked(kind, marker) {
            assert_eq!(es.len(), 1);
            assert_eq!(Some(&answer), table.get(&es[0]), "{kind:?} e{}", es[0]);
            seen.insert(es[0]);
        }
        assert_eq!(
            seen.len(),
            table.len(),
            "{kind:?} asks every eligible entity"
        );
    }

    #[test]
    fn golden_extraction_update_before_count_abstention() {
        let (c, _) = hand_built();
        let v = |x: u32| c.value_token(x);
        let n = |x: usize| c.count_token(x);
        let extraction = [(0, v(1)), (3, v(3)), (4, v(2)), (5, v(1))];
        golden(Query::Extraction, Marker::Current, &extraction);
        golden(Query::Update, Marker::Current, &[(1, v(5)), (2, v(6))]);
        golden(
            Query::TemporalBefore,
            Marker::Before,
            &[(1, v(2)), (2, v(4))],
        );
        let counts = [
            (0, n(0)),
            (1, n(1)),
            (2, n(2)),
            (3, n(0)),
            (4, n(0)),
            (5, n(0)),
        ];
        golden(Query::AggregationCount, Marker::Count, &counts);
        let unknown: Vec<(u32, u32)> = (6..12).map(|e| (e, c.unknown_token())).collect();
        golden(Query::Abstention, Marker::Current, &unknown);
        // The stale set of an update: e2's superseded 3 and 4.
        let mut rng = stream("abilities-golden", 1, "stale");
        let p = (0..50)
            .map(|_| {
                c.probe(&hand_built().1, Query::Update, &mut rng, &mut Vec::new())
                    .unwrap()
            })
            .find(|p| p.tokens[1] == 2)
            .unwrap();
        assert_eq!(p.stale, vec![v(3), v(4)]);
    }

    /// Entities already named in the session are never asked again; a
    /// type with no entity left gives `None` (the episode is redrawn).
    #[test]
    fn a_query_never_names_an_entity_already_asked() {
        let (c, story) = hand_built();
        let mut rng = stream("abilities-golden", 2, "used");
        // Updated entities are e1 and e2: a third update query has none.
        let mut used = Vec::new();
        let a = c.probe(&story, Query::Update, &mut rng, &mut used).unwrap();
        let b = c
            .probe(&story, Query::TemporalBefore, &mut rng, &mut used)
            .unwrap();
        assert_ne!(a.tokens[1], b.tokens[1]);
        assert_eq!(used.len(), 2);
        assert!(
            c.probe(&story, Query::Update, &mut rng, &mut used)
                .is_none()
        );
        // The only same-value pair is (e0, e5): with e5 used, no `yes`.
        let mut used = vec![5];
        for _ in 0..50 {
            let mut u = used.clone();
            if let Some(p) = c.probe(&story, Query::AggregationSame, &mut rng, &mut u) {
                assert_eq!(p.answer, c.no_token());
                assert!(!p.tokens.contains(&5));
            }
        }
        used.clear();
    }

    #[test]
    fn golden_temporal_order_and_same_value() {
        let (c, _) = hand_built();
        // Last stated: e0 s0; e1, e3 s1; e2, e4, e5 s2.
        let last = [0, 1, 2, 1, 2, 2];
        let mut firsts = 0;
        for (es, answer) in asked(Query::TemporalOrder, Marker::Recent) {
            let (a, b) = (es[0] as usize, es[1] as usize);
            assert_ne!(last[a], last[b], "a pair from different sessions");
            let later = if last[a] > last[b] { a } else { b };
            assert_eq!(answer, later as u32);
            firsts += (answer == es[0]) as usize;
        }
        assert!((100..200).contains(&firsts), "either position: {firsts}");
        // Only e0 and e5 hold the same value (1).
        let mut yes = 0;
        for (es, answer) in asked(Query::AggregationSame, Marker::Same) {
            let pair: BTreeSet<u32> = es.iter().copied().collect();
            let same = pair == BTreeSet::from([0, 5]);
            assert_eq!(answer, if same { c.yes_token() } else { c.no_token() });
            yes += same as usize;
        }
        assert!((100..200).contains(&yes), "yes and no alike: {yes}");
    }

    /// `same_operands: values` names the two current values instead of the
    /// entities: e0 and e5 hold 1 (`yes`); e2 and e3 hold 6 and 3 (`no`).
    #[test]
    fn golden_same_with_values_as_operands() {
        let (entities, story) = hand_built();
        let c = AbilitiesConfig {
            same_operands: SameOperands::Values,
            ..entities
        };
        let v = |x: u32| c.value_token(x);
        let mut rng = stream("abilities-golden", 3, "same-values");
        let (mut yes, mut no) = (0, 0);
        for _ in 0..200 {
            let p = c
                .probe(&story, Query::AggregationSame, &mut rng, &mut Vec::new())
                .unwrap();
            assert_eq!(p.tokens[0], c.marker(Marker::Same));
            let (a, b) = (p.tokens[1], p.tokens[2]);
            assert!((v(0)..v(8)).contains(&a) && (v(0)..v(8)).contains(&b));
            let same = a == b;
            assert_eq!(p.answer, if same { c.yes_token() } else { c.no_token() });
            if same {
                assert_eq!(a, v(1), "only e0 and e5 share a value");
                yes += 1;
            } else {
                no += 1;
            }
        }
        assert!(yes > 50 && no > 50, "both answers drawn: {yes} {no}");
        // The default names entities, and the default drops out of the
        // config's canonical form (run ids of existing suites stay).
        assert_eq!(cfg("{}").same_operands, SameOperands::Entities);
        let canon = retbench_core::canonical::canonical_json(&cfg("{}"));
        assert!(canon.get("same_operands").is_none());
    }

    #[test]
    fn golden_slices_and_chance_levels() {
        let c = cfg("{}");
        let want = [
            ("in_session", 1.0 / 8.0),
            ("extract", 1.0 / 9.0),
            ("update", 1.0 / 9.0),
            ("before", 1.0 / 8.0),
            ("order", 0.5),
            ("count", 1.0 / 3.0),
            ("same", 0.5),
            ("abstain", 1.0 / 9.0),
        ];
        let refs = c.references();
        for (i, (name, chance)) in want.iter().enumerate() {
            assert_eq!(c.slice_label(i as u8), *name);
            let r = refs
                .iter()
                .find(|r| r.1 == format!("query={name}"))
                .unwrap();
            assert_eq!((r.0.as_str(), r.2), ("chance", *chance), "{name}");
        }
    }

    /// An independent replay of generated episodes: per entity the values
    /// stated so far, and every scored query's answer from them.
    #[test]
    fn generated_episodes_replay_to_their_answers() {
        let c = cfg("{}");
        let batch = 300;
        let data = c.generate(&mut stream("abilities", 0, "data"), batch);
        assert_eq!(data.len(), 4);
        let mut per_label: BTreeMap<u8, usize> = BTreeMap::new();
        let mut answers: BTreeMap<(u8, u32), usize> = BTreeMap::new();
        for b in 0..batch {
            let mut hist: HashMap<u32, Vec<(usize, u32)>> = HashMap::new();
            for (s, sd) in data.iter().enumerate() {
                let row = b * sd.len..(b + 1) * sd.len;
                assert_eq!(sd.tokens[row.clone()].len(), sd.len);
                if s < 3 {
                    for f in sd.tokens[row.start..row.start + 12].chunks(2) {
                        let v = f[1] - 32;
                        if let Some(&(_, old)) = hist.get(&f[0]).and_then(|h| h.last()) {
                            assert_ne!(old, v, "an update changes the value");
                        }
                        hist.entry(f[0]).or_default().push((s, v));
                    }
                }
                if s == 3 {
                    // No entity in two queries: nothing but memory says
                    // whether an entity was stated.
                    let named: Vec<u32> = sd.tokens[row.clone()]
                        .iter()
                        .copied()
                        .filter(|&t| t < 32)
                        .collect();
                    let distinct: BTreeSet<u32> = named.iter().copied().collect();
                    assert_eq!(distinct.len(), named.len(), "episode {b}: {named:?}");
                }
                for p in row.filter(|&p| sd.mask[p] == 1.0) {
                    let (label, answer) = (sd.label[p], sd.targets[p]);
                    let want = replay(&c, &hist, &sd.tokens, p, label);
                    assert_eq!(answer, want, "episode {b} session {s} label {label}");
                    let changes = sd.label2.as_ref().unwrap()[p] as usize;
                    if label == Query::TemporalBefore.label() {
                        assert_eq!(changes, hist[&sd.tokens[p]].len() - 1, "episode {b}");
                    } else {
                        assert_eq!(changes, 0, "only `before` carries a change count");
                    }
                    *per_label.entry(label).or_default() += 1;
                    *answers.entry((label, answer)).or_default() += 1;
                }
            }
        }
        assert_eq!(per_label.len(), 8, "every query type occurs: {per_label:?}");
        // Balanced answers: count classes and yes/no alike, and `unknown`
        // about as often as each value among the `Q e` of the last session.
        let share =
            |l: Query, t: u32| answers[&(l.label(), t)] as f64 / per_label[&l.label()] as f64;
        for k in 0..3 {
            let s = share(Query::AggregationCount, c.count_token(k));
            assert!((s - 1.0 / 3.0).abs() < 0.08, "count {k}: {s}");
        }
        assert!((share(Query::AggregationSame, c.yes_token()) - 0.5).abs() < 0.08);
        let cur = [Query::Extraction, Query::Update, Query::Abstention];
        let total: usize = cur.iter().map(|q| per_label[&q.label()]).sum();
        let unknown = per_label[&Query::Abstention.label()] as f64 / total as f64;
        assert!((unknown - 1.0 / 9.0).abs() < 0.03, "{unknown}");
    }

    /// Answers drawn before the story, so no redraw depends on them: over
    /// 4000 episodes each count class and yes/no within 0.025 of uniform
    /// (standard error 0.0075 and 0.008; redrawing whole episodes gave the
    /// classes 0.366 / 0.327 / 0.307).
    #[test]
    fn count_classes_and_same_answers_stay_uniform() {
        let c = cfg("{}");
        let data = c.generate(&mut stream("abilities", 1, "balance"), 4000);
        let q = &data[3];
        let mut count = [0usize; 3];
        let (mut yes, mut same) = (0, 0);
        for p in (0..q.mask.len()).filter(|&p| q.mask[p] == 1.0) {
            if q.label[p] == Query::AggregationCount.label() {
                count[(q.targets[p] - c.count_token(0)) as usize] += 1;
            } else if q.label[p] == Query::AggregationSame.label() {
                same += 1;
                yes += (q.targets[p] == c.yes_token()) as usize;
            }
        }
        let n: usize = count.iter().sum();
        for (k, &m) in count.iter().enumerate() {
            let share = m as f64 / n as f64;
            assert!((share - 1.0 / 3.0).abs() < 0.025, "count {k}: {share}");
        }
        let share = yes as f64 / same as f64;
        assert!((share - 0.5).abs() < 0.025, "yes: {share}");
    }

    /// The answer to the query ending at `p`, from the replayed history.
    fn replay(
        c: &AbilitiesConfig,
        hist: &HashMap<u32, Vec<(usize, u32)>>,
        tokens: &[u32],
        p: usize,
        label: u8,
    ) -> u32 {
        let m = |x: Marker| c.marker(x);
        let h = |e: u32| hist.get(&e).cloned().unwrap_or_default();
        let now = |e: u32| h(e).last().map(|x| x.1);
        let q = Query::ALL[label as usize];
        let (e, marker) = (tokens[p], tokens[p - 1]);
        match q {
            Query::InSession | Query::Extraction | Query::Update | Query::Abstention => {
                assert_eq!(marker, m(Marker::Current));
                let changes = h(e).len().saturating_sub(1);
                match q {
                    Query::Extraction => assert_eq!(changes, 0),
                    Query::Update => assert!(changes >= 1),
                    Query::Abstention => assert!(h(e).is_empty()),
                    _ => {}
                }
                now(e).map_or(c.unknown_token(), |v| c.value_token(v))
            }
            Query::TemporalBefore => {
                assert_eq!(marker, m(Marker::Before));
                let h = h(e);
                c.value_token(h[h.len() - 2].1)
            }
            Query::AggregationCount => {
                assert_eq!(marker, m(Marker::Count));
                c.count_token((h(e).len() - 1).min(2))
            }
            Query::TemporalOrder | Query::AggregationSame => {
                let (a, b) = (tokens[p - 1], tokens[p]);
                if q == Query::TemporalOrder {
                    assert_eq!(tokens[p - 2], m(Marker::Recent));
                    let (la, lb) = (h(a).last().unwrap().0, h(b).last().unwrap().0);
                    assert_ne!(la, lb);
                    if la > lb { a } else { b }
                } else {
                    assert_eq!(tokens[p - 2], m(Marker::Same));
                    if now(a).unwrap() == now(b).unwrap() {
                        c.yes_token()
                    } else {
                        c.no_token()
                    }
                }
            }
        }
    }

    /// Four abstention queries (3 answered `unknown`), four extraction and
    /// update queries (1 answered `unknown`), one `order` query answered
    /// `unknown`, which counts only against precision: recall 3/4, false
    /// rate 1/4, precision 3/5, J 1/2; and a
    /// model that abstains at one rate on both kinds scores J = 0.
    #[test]
    fn abstention_scores_count_the_right_queries() {
        let c = cfg("{}");
        let (u, v) = (c.unknown_token(), c.value_token(0));
        let (a, x, up) = (
            Query::Abstention.label(),
            Query::Extraction.label(),
            Query::Update.label(),
        );
        let labels = [a, a, a, a, x, x, up, up, Query::TemporalOrder.label()];
        let scored = |said: [u32; 9]| {
            let data = SessionData {
                tokens: vec![0; 9],
                targets: vec![0; 9],
                mask: vec![1.0; 9],
                label: labels.to_vec(),
                len: 9,
                ..Default::default()
            };
            let mut s = Abstentions::new(u);
            s.add(&ScoredRow {
                data: &data,
                predictions: &said,
                positions: &(0..9).collect::<Vec<_>>(),
                label: 0,
            });
            s.metrics("query")
                .into_iter()
                .map(|m| (m.metric, m.value))
                .collect::<BTreeMap<_, _>>()
        };
        let m = scored([u, u, u, v, u, v, v, v, u]);
        assert_eq!(m["abstention_recall"], 0.75);
        assert_eq!(m["false_abstention_rate"], 0.25);
        assert_eq!(m["abstention_precision"], 0.6);
        assert_eq!(m["abstention_discrimination"], 0.5);
        let blind = scored([u, u, v, v, u, u, v, v, v]);
        assert_eq!(blind["abstention_discrimination"], 0.0);
        let always = scored([u; 9]);
        assert_eq!(always["abstention_recall"], 1.0);
        assert_eq!(always["abstention_discrimination"], 0.0);
    }

    /// `before` queries after 1 change (2 of 3 right) and after 2 (0 of 1),
    /// beside other types that do not count.
    #[test]
    fn before_accuracy_is_sliced_by_changes() {
        let b = Query::TemporalBefore.label();
        let data = SessionData {
            targets: vec![7, 7, 7, 7, 7],
            mask: vec![1.0; 5],
            label: vec![b, b, b, b, Query::Extraction.label()],
            label2: Some(vec![1, 1, 1, 2, 0]),
            len: 5,
            ..Default::default()
        };
        let mut s = BeforeByChanges::new(0.125);
        s.add(&ScoredRow {
            data: &data,
            predictions: &[7, 3, 7, 3, 7],
            positions: &[0, 1, 2, 3, 4],
            label: 0,
        });
        let got: Vec<(String, f64)> = s
            .metrics("query")
            .into_iter()
            .map(|m| (m.slice, m.value))
            .collect();
        assert_eq!(
            got,
            vec![("changes=1".into(), 2.0 / 3.0), ("changes=2".into(), 0.0)]
        );
    }

    #[test]
    fn bad_configs_name_the_field() {
        let err = |j: &str| cfg(j).validate().unwrap_err();
        assert!(err(r#"{"entities": 12}"#).starts_with("task.entities"));
        assert!(err(r#"{"update_rate": 0}"#).starts_with("task.update_rate"));
        assert!(err(r#"{"queries": 7}"#).starts_with("task.queries"));
        assert!(
            err(r#"{"probes": 3}"#).starts_with("task:"),
            "27 names, about 12 stated"
        );
        assert!(err(r#"{"sessions": 1}"#).starts_with("task.sessions"));
        assert!(err(r#"{"update_rate": 0.01, "count_cap": 2}"#).starts_with("task:"));
        assert!(cfg("{}").validate().is_ok());
    }
}
