//! Held-out sets: the keys that seed them (`dataset_key`, `base_key`), the
//! episodes themselves (`held_out`) and their frozen, hashed serialisation
//! (`dataset`) that `retbench datasets` writes.

use super::*;

/// The root of a pretrained base's random streams: 16 hex digits of the
/// blake3 hash of what the base depends on (the task, its layout, the model
/// and the base's training), so that runs which differ only in what comes
/// after the base share it.
pub fn base_key(
    kind: &str,
    task: &dyn Episodes,
    model: &ModelConfig,
    train: &TrainConfig,
) -> String {
    let text = serde_json::json!({
        "kind": kind,
        "task": task.dataset_config(),
        "context": task.context(),
        "model": retbench_core::canonical::canonical_json(model),
        "train": retbench_core::canonical::canonical_json(train),
    });
    blake3::hash(format!("base:{text}").as_bytes()).to_hex()[..16].to_string()
}

/// The key of a task's held-out data: 16 hex digits of the blake3 hash of
/// its kind and [`Episodes::dataset_config`].
pub fn dataset_key(kind: &str, task: &dyn Episodes) -> String {
    let text = format!("{kind}:{}", task.dataset_config());
    blake3::hash(text.as_bytes()).to_hex()[..16].to_string()
}

/// The held-out episodes of (task, seed): `episodes` per evaluation group,
/// each group one batch, drawn from one stream seeded by the dataset key,
/// so they depend on nothing else (not the model, not the variant, not the
/// evaluation batch size).
pub fn held_out(
    kind: &str,
    task: &dyn Episodes,
    episodes: usize,
    seed: u64,
) -> Vec<Vec<SessionData>> {
    let mut rng = stream(&dataset_key(kind, task), seed, "eval");
    (0..task.eval_groups())
        .map(|g| task.generate_eval(g, &mut rng, episodes))
        .collect()
}

/// A task's held-out set as the bytes of its frozen file: one JSON object
/// per episode, `{"group", "sessions": [{"tokens", "queries": [[position,
/// target, label, (label2), (stale…)]], ("feedback"), ("relevance")}]}`.
#[derive(Debug, Clone, PartialEq)]
pub struct Dataset {
    /// `<kind>/<key>-seed<seed>-n<episodes>.jsonl`, under the datasets
    /// folder.
    pub file: String,
    pub kind: String,
    pub seed: u64,
    pub episodes: usize,
    /// [`Episodes::dataset_config`].
    pub config: serde_json::Value,
    pub bytes: Vec<u8>,
}

impl Dataset {
    /// Lower-case hex sha256 of the bytes.
    pub fn sha256(&self) -> String {
        sha256_hex(&self.bytes)
    }
}

/// Lower-case hex sha256.
pub fn sha256_hex(bytes: &[u8]) -> String {
    use sha2::Digest;
    sha2::Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// The frozen form of [`held_out`].
pub fn dataset(kind: &str, task: &dyn Episodes, episodes: usize, seed: u64) -> Dataset {
    let mut bytes = Vec::new();
    for (g, sessions) in held_out(kind, task, episodes, seed).iter().enumerate() {
        for b in 0..episodes {
            let mut line = serde_json::json!({ "group": g });
            let mut out = Vec::with_capacity(sessions.len());
            for s in sessions {
                let row = b * s.len..(b + 1) * s.len;
                let queries: Vec<serde_json::Value> = row
                    .clone()
                    .filter(|&p| s.mask[p] != 0.0)
                    .map(|p| {
                        let mut q = vec![
                            serde_json::json!(p - row.start),
                            serde_json::json!(s.targets[p]),
                            serde_json::json!(s.label[p]),
                        ];
                        if let Some(l2) = &s.label2 {
                            q.push(serde_json::json!(l2[p]));
                        }
                        if let Some(st) = &s.stale {
                            q.push(serde_json::json!(st[p]));
                        }
                        serde_json::Value::Array(q)
                    })
                    .collect();
                let mut session = serde_json::json!({
                    "tokens": &s.tokens[row],
                    "queries": queries,
                });
                if let Some(f) = &s.feedback {
                    session["feedback"] = serde_json::json!(f[b]);
                }
                if let Some(r) = &s.relevance {
                    session["relevance"] = serde_json::json!(r[b]);
                }
                out.push(session);
            }
            line["sessions"] = serde_json::Value::Array(out);
            bytes.extend(serde_json::to_vec(&line).expect("json"));
            bytes.push(b'\n');
        }
    }
    let key = dataset_key(kind, task);
    Dataset {
        file: format!("{kind}/{key}-seed{seed}-n{episodes}.jsonl"),
        kind: kind.to_string(),
        seed,
        episodes,
        config: task.dataset_config(),
        bytes,
    }
}
