//! Evaluation: the held-out episodes of a run in batches (`EvalSet`), scored
//! under a persistence mode or a memory control, and the side probe that
//! follows the first session's facts through a stream of writes.

use super::*;

/// The held-out episodes, generated once per run ([`held_out`]) and laid
/// out for the model in batches of `eval.batch`.
pub(super) struct EvalSet {
    batches: Vec<(Vec<SessionData>, usize)>,
}

impl EvalSet {
    pub(super) fn new(kind: &str, task: &dyn Episodes, eval: &EvalConfig, seed: u64) -> Self {
        let mut batches = Vec::new();
        for group in held_out(kind, task, eval.episodes, seed) {
            let mut start = 0;
            while start < eval.episodes {
                let b = (eval.episodes - start).min(eval.batch);
                let rows = group.iter().map(|s| s.rows(start, b)).collect();
                batches.push((layout(task, rows, b), b));
                start += b;
            }
        }
        EvalSet { batches }
    }

    /// Scores sessions `from..` of every episode; for a side-probed task
    /// ([`Episodes::side_probe`]), the probe after every session of the
    /// stream, with memory drift and the gate against relevance.
    pub(super) fn score(
        &self,
        task: &dyn Episodes,
        model: &Model,
        between: Between<'_>,
        seed: u64,
        from: usize,
        telemetry: bool,
    ) -> Result<Scores, TaskError> {
        let mut scores = Scores::new(task);
        let dev = Device::Cpu;
        let probing = task.side_probe();
        for (i, (data, b)) in self.batches.iter().enumerate() {
            let sessions = tensors(data, *b, &dev)?;
            let n = if probing { data.len() / 2 } else { data.len() };
            let (stream, probes) = sessions.split_at(n);
            let mut tracker = StreamTracker::default();
            let mut failed: Option<retbench_core::Error> = None;
            let mut observe = |session: usize, memories: &[retbench_core::MemoryState]| {
                let seen = AfterSession {
                    session,
                    data: &data[session],
                    memories,
                    model,
                };
                scores
                    .scorers
                    .iter_mut()
                    .for_each(|s| s.after_session(&seen));
                if telemetry && let Some(m) = memories.first() {
                    let t = Telemetry::mean(m);
                    scores.telemetry.entry(session).or_default().push(t);
                }
                let Some(p) = probes.get(session) else { return };
                match retbench_model::eval::probe(model, p, memories) {
                    Ok(o) => scores.add(&data[n + session], &o, Some(session as u8)),
                    Err(e) => failed = failed.take().or(Some(e)),
                }
                if let Some(m) = memories.first() {
                    tracker.observe(session, m, &data[session], &mut scores);
                }
            };
            let outs = run_episodes_observed(
                model,
                stream,
                seed.wrapping_add(i as u64),
                between,
                &mut observe,
            )?;
            if let Some(e) = failed {
                return Err(e.into());
            }
            if !probing {
                for (d, o) in data.iter().zip(&outs).skip(from) {
                    scores.add(d, o, None);
                }
            }
        }
        Ok(scores)
    }
}

/// What a side-probed stream compares each session's memory with: the
/// contents after the first session, and the gate's counters so far.
#[derive(Default)]
pub(super) struct StreamTracker {
    /// Per memory of the batch, the occupied rows after session 0 (slot,
    /// contents).
    first: Vec<Vec<(usize, Vec<f32>)>>,
    gate: Vec<(u64, u64)>,
}

impl StreamTracker {
    pub(super) fn observe(
        &mut self,
        session: usize,
        mem: &retbench_core::MemoryState,
        data: &SessionData,
        scores: &mut Scores,
    ) {
        let Ok(content) = mem
            .content()
            .to_dtype(DType::F32)
            .and_then(|c| c.to_vec3::<f32>())
        else {
            return;
        };
        let m = mem.slots();
        if session == 0 {
            self.first = content
                .iter()
                .enumerate()
                .map(|(b, rows)| {
                    (0..m)
                        .filter(|&i| mem.meta().occupied[b * m + i])
                        .map(|i| (i, rows[i].clone()))
                        .collect()
                })
                .collect();
        }
        // ‖M_t − M_0‖ / ‖M_0‖ per memory, over the slots occupied at first.
        let e = scores.drift.entry(session).or_default();
        for (rows, first) in content.iter().zip(&self.first) {
            let (mut diff, mut norm) = (0f64, 0f64);
            for (i, m0) in first {
                for (x, y) in rows[*i].iter().zip(m0) {
                    diff += ((x - y) as f64).powi(2);
                    norm += (*y as f64).powi(2);
                }
            }
            if norm > 0.0 {
                e.0 += (diff / norm).sqrt();
                e.1 += 1;
            }
        }
        // The gate's verdicts in this session against its relevance.
        let counts = mem.gate_counts();
        self.gate.resize(counts.len(), (0, 0));
        if let Some(rel) = &data.relevance {
            for ((now, before), r) in counts.iter().zip(&self.gate).zip(rel) {
                let (seen, passed) = ((now.0 - before.0) as f64, (now.1 - before.1) as f64);
                let r = *r as f64;
                scores.gate[0] += passed * r;
                scores.gate[1] += passed;
                scores.gate[2] += seen * r;
                scores.gate[3] += seen;
            }
        }
        self.gate = counts.to_vec();
    }
}
