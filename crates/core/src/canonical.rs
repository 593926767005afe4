//! Stable identity for configs: a canonical JSON form that leaves out every
//! field equal to its default, and the hash of that form. Adding an option
//! with a default to any config type therefore changes no existing hash, no
//! run id and no random draw (draws are seeded from these hashes).
//!
//! The form is found by trying: a field is left out when the config without
//! it deserializes back to an equal value. That needs no list of defaults to
//! keep in step with the types; it costs one deserialization per field,
//! which for configs of tens of fields is microseconds.

use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::Value;

/// The canonical JSON form of `value`: its serialization with every field
/// that deserialization would restore by default removed (innermost first,
/// so a block left entirely at its defaults disappears as a whole).
pub fn canonical_json<T>(value: &T) -> Value
where
    T: Serialize + DeserializeOwned + PartialEq,
{
    let mut json = serde_json::to_value(value).expect("configs serialize to JSON");
    let same = |candidate: &Value| {
        serde_json::from_value::<T>(candidate.clone()).is_ok_and(|v| v == *value)
    };
    let mut paths = Vec::new();
    collect_paths(&json, &mut Vec::new(), &mut paths);
    for path in paths {
        let mut candidate = json.clone();
        if remove(&mut candidate, &path) && same(&candidate) {
            json = candidate;
        }
    }
    json
}

/// 16 hex digits of the blake3 hash of the canonical form.
pub fn canonical_hash<T>(value: &T) -> String
where
    T: Serialize + DeserializeOwned + PartialEq,
{
    let bytes = serde_json::to_vec(&canonical_json(value)).expect("JSON serializes");
    blake3::hash(&bytes).to_hex()[..16].to_string()
}

/// Every object key path, children before their parent.
fn collect_paths(v: &Value, prefix: &mut Vec<String>, out: &mut Vec<Vec<String>>) {
    if let Value::Object(map) = v {
        for (k, child) in map {
            prefix.push(k.clone());
            collect_paths(child, prefix, out);
            out.push(prefix.clone());
            prefix.pop();
        }
    }
}

fn remove(root: &mut Value, path: &[String]) -> bool {
    let Some((last, parents)) = path.split_last() else {
        return false;
    };
    let mut cur = root;
    for p in parents {
        match cur.get_mut(p.as_str()) {
            Some(next) => cur = next,
            None => return false,
        }
    }
    cur.as_object_mut()
        .is_some_and(|m| m.remove(last.as_str()).is_some())
}

#[cfg(test)]
mod tests {
    use serde::Deserialize;

    use super::*;

    #[derive(Debug, PartialEq, Serialize, Deserialize)]
    struct Before {
        a: u32,
        inner: InnerBefore,
    }
    #[derive(Debug, PartialEq, Serialize, Deserialize)]
    struct InnerBefore {
        x: f64,
    }

    /// The same types after a release added defaulted options, one at the
    /// top and one nested.
    #[derive(Debug, PartialEq, Serialize, Deserialize)]
    struct After {
        a: u32,
        #[serde(default)]
        b: bool,
        inner: InnerAfter,
    }
    #[derive(Debug, PartialEq, Serialize, Deserialize)]
    struct InnerAfter {
        x: f64,
        #[serde(default = "three")]
        y: u32,
    }
    fn three() -> u32 {
        3
    }

    #[test]
    fn a_defaulted_field_changes_no_hash() {
        let old = Before {
            a: 1,
            inner: InnerBefore { x: 0.5 },
        };
        let new = After {
            a: 1,
            b: false,
            inner: InnerAfter { x: 0.5, y: 3 },
        };
        assert_eq!(canonical_hash(&old), canonical_hash(&new));
        let changed = After { b: true, ..new };
        assert_ne!(canonical_hash(&old), canonical_hash(&changed));
        let nested = After {
            a: 1,
            b: false,
            inner: InnerAfter { x: 0.5, y: 4 },
        };
        assert_ne!(canonical_hash(&old), canonical_hash(&nested));
        assert_eq!(
            canonical_json(&nested),
            serde_json::json!({ "a": 1, "inner": { "x": 0.5, "y": 4 } })
        );
    }

    #[test]
    fn a_block_at_its_defaults_disappears() {
        let cfg = crate::RetentionConfig::new(64);
        assert_eq!(canonical_json(&cfg), serde_json::json!({ "slots": 64 }));
        let mut topk = cfg.clone();
        topk.read = crate::ReadConfig::topk(4);
        assert_eq!(
            canonical_json(&topk),
            serde_json::json!({ "slots": 64, "read": { "kind": "topk", "k": 4 } })
        );
    }
}
