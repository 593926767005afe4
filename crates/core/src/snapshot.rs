//! Memory snapshots: a whole [`MemoryBank`] — every namespace's contents,
//! cached keys, slot metadata, clocks and eviction generator — as one
//! safetensors file, so that a memory outlives the process exactly.
//!
//! The header metadata carries `format` ("retbench-memory"), `format_version`,
//! the retention config hash and a blake3 checksum over every tensor's name,
//! dtype, shape and bytes. Reading refuses, with an error naming the file,
//! anything truncated or corrupted, written for another config, or written by
//! a newer format version; it never panics on bad bytes. Files are written to
//! a temporary name and renamed, so a crash never leaves half a snapshot.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use candle_core::{DType, Device, Tensor};
use rand_chacha::ChaCha8Rng;
use safetensors::tensor::{Dtype, SafeTensors, TensorView};

use crate::error::{Error, Result, SnapshotError};
use crate::memory::{Clocks, MemoryBank, MemoryState, SlotMeta, validate_namespace};

pub const FORMAT: &str = "retbench-memory";
pub const FORMAT_VERSION: u32 = 1;

/// A snapshot as read from disk.
#[derive(Debug)]
pub struct Snapshot {
    pub bank: MemoryBank,
    pub config_hash: String,
    pub format_version: u32,
    pub retbench_version: String,
}

/// One tensor to serialize, as little-endian bytes.
struct Entry {
    name: String,
    dtype: Dtype,
    shape: Vec<usize>,
    bytes: Vec<u8>,
}

fn le<T: Copy, const N: usize>(xs: &[T], f: fn(T) -> [u8; N]) -> Vec<u8> {
    let mut out = Vec::with_capacity(xs.len() * N);
    for &x in xs {
        out.extend_from_slice(&f(x));
    }
    out
}

fn tensor_entry(name: String, t: &Tensor) -> Result<Entry> {
    let shape = t.dims().to_vec();
    let flat = t.detach().flatten_all()?;
    let (dtype, bytes) = match t.dtype() {
        DType::F32 => (Dtype::F32, le(&flat.to_vec1::<f32>()?, f32::to_le_bytes)),
        DType::F64 => (Dtype::F64, le(&flat.to_vec1::<f64>()?, f64::to_le_bytes)),
        other => {
            return Err(Error::Usage(format!(
                "snapshots hold f32 or f64 memories, not {other:?}"
            )));
        }
    };
    Ok(Entry {
        name,
        dtype,
        shape,
        bytes,
    })
}

fn checksum<'a>(
    config_hash: &str,
    entries: impl Iterator<Item = (&'a str, Dtype, &'a [usize], &'a [u8])>,
) -> String {
    let mut h = blake3::Hasher::new();
    h.update(config_hash.as_bytes());
    for (name, dtype, shape, bytes) in entries {
        h.update(name.as_bytes());
        h.update(&[0]);
        h.update(format!("{dtype:?}{shape:?}").as_bytes());
        h.update(&(bytes.len() as u64).to_le_bytes());
        h.update(bytes);
    }
    h.finalize().to_hex().to_string()
}

fn state_entries(ns: &str, s: &MemoryState) -> Result<Vec<Entry>> {
    let (b, m) = (s.batch, s.slots);
    let meta = &s.meta;
    let e = |field: &str, dtype, shape: Vec<usize>, bytes| Entry {
        name: format!("{ns}/{field}"),
        dtype,
        shape,
        bytes,
    };
    let mut rng = Vec::with_capacity(56);
    rng.extend_from_slice(&s.rng.get_seed());
    rng.extend_from_slice(&s.rng.get_word_pos().to_le_bytes());
    rng.extend_from_slice(&s.rng.get_stream().to_le_bytes());
    let clocks = [s.clocks.writes, s.clocks.events, s.clocks.next_seq];
    let mut out = vec![tensor_entry(format!("{ns}/content"), &s.content)?];
    if let Some(k) = &s.keys {
        out.push(tensor_entry(format!("{ns}/keys"), k)?);
    }
    // A read backend's index, when it saves one (else it is rebuilt).
    let saved = s
        .index
        .as_ref()
        .and_then(|i| i.save())
        .or(s.saved_index.clone());
    if let Some(bytes) = saved {
        out.push(e("index", Dtype::U8, vec![bytes.len()], bytes));
    }
    let occupied: Vec<u8> = meta.occupied.iter().map(|&o| o as u8).collect();
    out.extend([
        e("occupied", Dtype::U8, vec![b, m], occupied),
        e(
            "seq",
            Dtype::U64,
            vec![b, m],
            le(&meta.seq, u64::to_le_bytes),
        ),
        e(
            "written_at",
            Dtype::U64,
            vec![b, m],
            le(&meta.written_at, u64::to_le_bytes),
        ),
        e(
            "write_count",
            Dtype::U32,
            vec![b, m],
            le(&meta.write_count, u32::to_le_bytes),
        ),
        e(
            "last_read",
            Dtype::U64,
            vec![b, m],
            le(&meta.last_read, u64::to_le_bytes),
        ),
        e(
            "read_weight",
            Dtype::F32,
            vec![b, m],
            le(&meta.read_weight, f32::to_le_bytes),
        ),
        e(
            "gate_score",
            Dtype::F32,
            vec![b, m],
            le(&meta.gate_score, f32::to_le_bytes),
        ),
        e(
            "evictions",
            Dtype::U64,
            vec![b],
            le(&s.evictions, u64::to_le_bytes),
        ),
        e("clocks", Dtype::U64, vec![3], le(&clocks, u64::to_le_bytes)),
        e("rng", Dtype::U8, vec![56], rng),
    ]);
    Ok(out)
}

/// Writes `bank` to `path` atomically. Every namespace must come from the
/// same retention config.
pub fn save(bank: &MemoryBank, path: &Path) -> Result<()> {
    let mut hashes = bank.iter().map(|(_, s)| s.config_hash());
    let config_hash = hashes
        .next()
        .ok_or_else(|| Error::Usage("cannot snapshot an empty memory bank".into()))?
        .to_string();
    if hashes.any(|h| h != config_hash) {
        return Err(Error::Usage(
            "every namespace of a snapshot must share one retention config".into(),
        ));
    }
    let mut entries = Vec::new();
    for (ns, state) in bank.iter() {
        entries.extend(state_entries(ns, state)?);
    }
    entries.sort_by(|a, b| a.name.cmp(&b.name));
    let sum = checksum(
        &config_hash,
        entries.iter().map(|e| {
            (
                e.name.as_str(),
                e.dtype,
                e.shape.as_slice(),
                e.bytes.as_slice(),
            )
        }),
    );
    let names: Vec<&str> = bank.iter().map(|(ns, _)| ns).collect();
    let metadata = HashMap::from([
        ("format".to_string(), FORMAT.to_string()),
        ("format_version".to_string(), FORMAT_VERSION.to_string()),
        ("config_hash".to_string(), config_hash.clone()),
        ("checksum".to_string(), sum),
        ("namespaces".to_string(), names.join(",")),
        (
            "retbench_version".to_string(),
            env!("CARGO_PKG_VERSION").to_string(),
        ),
    ]);
    let views = entries
        .iter()
        .map(|e| {
            TensorView::new(e.dtype, e.shape.clone(), &e.bytes)
                .map(|v| (e.name.clone(), v))
                .map_err(|err| Error::Usage(format!("snapshot tensor {}: {err}", e.name)))
        })
        .collect::<Result<Vec<_>>>()?;
    let bytes = safetensors::serialize(views, Some(metadata))
        .map_err(|err| Error::Usage(format!("serializing snapshot: {err}")))?;
    write_atomic(path, &bytes)
}

/// Writes one memory state as namespace "default".
pub fn save_state(state: &MemoryState, path: &Path) -> Result<()> {
    let tmp = state.deep_clone()?;
    let mut bank = MemoryBank::new();
    bank.insert("default", tmp)?;
    save(&bank, path)
}

fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    crate::fsutil::write_atomic(path, bytes).map_err(|source| SnapshotError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    Ok(())
}

/// Reads a snapshot whatever its config (for inspection).
pub fn read(path: &Path, device: &Device) -> Result<Snapshot> {
    let bytes = std::fs::read(path).map_err(|source| SnapshotError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    parse(path, &bytes, device)
}

/// Reads a snapshot and checks it was written for `config_hash`.
pub fn load(path: &Path, config_hash: &str, device: &Device) -> Result<MemoryBank> {
    let snap = read(path, device)?;
    if snap.config_hash != config_hash {
        return Err(SnapshotError::ConfigMismatch {
            path: path.to_path_buf(),
            expected: config_hash.to_string(),
            found: snap.config_hash,
        }
        .into());
    }
    Ok(snap.bank)
}

/// Reads the "default" namespace written by [`save_state`].
pub fn load_state(path: &Path, config_hash: &str, device: &Device) -> Result<MemoryState> {
    let mut bank = load(path, config_hash, device)?;
    bank.remove("default").ok_or_else(|| {
        SnapshotError::NotSnapshot {
            path: path.to_path_buf(),
            message: "no namespace named \"default\"".into(),
        }
        .into()
    })
}

fn parse(path: &Path, bytes: &[u8], device: &Device) -> Result<Snapshot> {
    let p = || path.to_path_buf();
    let malformed = |e: safetensors::SafeTensorError| SnapshotError::Malformed {
        path: p(),
        message: e.to_string(),
    };
    let not = |message: String| SnapshotError::NotSnapshot { path: p(), message };
    let (_, header) = SafeTensors::read_metadata(bytes).map_err(malformed)?;
    let tensors = SafeTensors::deserialize(bytes).map_err(malformed)?;
    let meta = header.metadata().clone().unwrap_or_default();
    let field = |k: &str| {
        meta.get(k)
            .cloned()
            .ok_or_else(|| not(format!("header has no {k:?}")))
    };
    if field("format")? != FORMAT {
        return Err(not(format!("format is {:?}", meta.get("format"))).into());
    }
    let version_text = field("format_version")?;
    let format_version: u32 = version_text
        .parse()
        .map_err(|_| not(format!("format_version {version_text:?} is not a number")))?;
    if format_version > FORMAT_VERSION {
        return Err(SnapshotError::NewerVersion {
            path: p(),
            found: format_version,
            supported: FORMAT_VERSION,
        }
        .into());
    }
    let config_hash = field("config_hash")?;
    let stored = field("checksum")?;
    let mut names: Vec<String> = tensors.names().into_iter().map(String::from).collect();
    names.sort();
    let views: Vec<(String, TensorView)> = names
        .iter()
        .map(|n| tensors.tensor(n).map(|v| (n.clone(), v)).map_err(malformed))
        .collect::<Result<_, _>>()?;
    let computed = checksum(
        &config_hash,
        views
            .iter()
            .map(|(n, v)| (n.as_str(), v.dtype(), v.shape(), v.data())),
    );
    if computed != stored {
        return Err(SnapshotError::Checksum {
            path: p(),
            stored,
            computed,
        }
        .into());
    }
    let view_map: HashMap<&str, &TensorView> = views.iter().map(|(n, v)| (n.as_str(), v)).collect();
    let mut bank = MemoryBank::new();
    let namespaces = field("namespaces")?;
    for ns in namespaces.split(',').filter(|s| !s.is_empty()) {
        validate_namespace(ns).map_err(|e| not(e.to_string()))?;
        let state = decode_state(ns, &view_map, &config_hash, device).map_err(not)?;
        if let Some((tensor, what)) = non_finite(ns, &state)? {
            return Err(SnapshotError::NonFinite {
                path: p(),
                tensor,
                what,
            }
            .into());
        }
        bank.insert(ns, state).map_err(|e| not(e.to_string()))?;
    }
    if bank.is_empty() {
        return Err(not("no namespaces".into()).into());
    }
    Ok(Snapshot {
        bank,
        config_hash,
        format_version,
        retbench_version: meta.get("retbench_version").cloned().unwrap_or_default(),
    })
}

/// The first tensor of a state that holds NaN or infinity, if any, with
/// where: one such slot poisons every read of the memory.
fn non_finite(ns: &str, s: &MemoryState) -> Result<Option<(String, String)>> {
    let check = |name: &str, t: &candle_core::Tensor| -> Result<Option<(String, String)>> {
        let v: Vec<f64> = t
            .to_dtype(candle_core::DType::F64)?
            .flatten_all()?
            .to_vec1()?;
        let width = t.dims().last().copied().unwrap_or(1).max(1);
        let per_memory = width * s.slots;
        Ok(v.iter().position(|x| !x.is_finite()).map(|i| {
            (
                format!("{ns}/{name}"),
                format!(
                    "{} in memory {}, slot {}",
                    v[i],
                    i / per_memory,
                    (i % per_memory) / width
                ),
            )
        }))
    };
    if let Some(bad) = check("content", &s.content)? {
        return Ok(Some(bad));
    }
    if let Some(keys) = &s.keys
        && let Some(bad) = check("keys", keys)?
    {
        return Ok(Some(bad));
    }
    for (name, xs) in [
        ("read_weight", &s.meta.read_weight),
        ("gate_score", &s.meta.gate_score),
    ] {
        if let Some(i) = xs.iter().position(|x| !x.is_finite()) {
            return Ok(Some((
                format!("{ns}/{name}"),
                format!("{} in memory {}, slot {}", xs[i], i / s.slots, i % s.slots),
            )));
        }
    }
    Ok(None)
}

/// Rebuilds one namespace; errors are plain messages the caller wraps with
/// the file's path.
fn decode_state(
    ns: &str,
    views: &HashMap<&str, &TensorView>,
    config_hash: &str,
    device: &Device,
) -> std::result::Result<MemoryState, String> {
    let get = |field: &str, dtype: Dtype| -> std::result::Result<&TensorView, String> {
        let name = format!("{ns}/{field}");
        let v = views
            .get(name.as_str())
            .ok_or_else(|| format!("missing tensor {name}"))?;
        if v.dtype() != dtype {
            return Err(format!(
                "{name} has dtype {:?}, expected {dtype:?}",
                v.dtype()
            ));
        }
        Ok(v)
    };
    let content_view = views
        .get(format!("{ns}/content").as_str())
        .ok_or_else(|| format!("missing tensor {ns}/content"))?;
    let [b, m, d] = <[usize; 3]>::try_from(content_view.shape())
        .map_err(|_| format!("{ns}/content must be [batch, slots, dim]"))?;
    let float = |v: &TensorView, shape: Vec<usize>| -> std::result::Result<Tensor, String> {
        if v.shape() != shape.as_slice() {
            return Err(format!("shape {:?}, expected {shape:?}", v.shape()));
        }
        let t = match v.dtype() {
            Dtype::F32 => Tensor::from_vec(decode(v.data(), f32::from_le_bytes), shape, device),
            Dtype::F64 => Tensor::from_vec(decode(v.data(), f64::from_le_bytes), shape, device),
            other => return Err(format!("unsupported content dtype {other:?}")),
        };
        t.map_err(|e| e.to_string())
    };
    let content = float(content_view, vec![b, m, d])?;
    let keys = match views.get(format!("{ns}/keys").as_str()) {
        Some(v) => {
            let [kb, km, kd] = <[usize; 3]>::try_from(v.shape())
                .map_err(|_| format!("{ns}/keys must be [batch, slots, key_dim]"))?;
            if (kb, km) != (b, m) || v.dtype() != content_view.dtype() {
                return Err(format!("{ns}/keys does not match {ns}/content"));
            }
            Some(float(v, vec![b, m, kd])?)
        }
        None => None,
    };
    let sized = |field: &str, dtype: Dtype, n: usize| -> std::result::Result<&[u8], String> {
        let v = get(field, dtype)?;
        if v.shape().iter().product::<usize>() != n {
            return Err(format!(
                "{ns}/{field} has shape {:?}, expected {n} values",
                v.shape()
            ));
        }
        Ok(v.data())
    };
    let meta = decode_meta(&sized, b * m)?;
    let occupied_count = meta
        .occupied
        .chunks(m.max(1))
        .map(|c| c.iter().filter(|&&o| o).count())
        .collect();
    let order = (0..b)
        .map(|bi| crate::memory::insertion_order(&meta, bi, m))
        .collect();
    let evictions = decode(sized("evictions", Dtype::U64, b)?, u64::from_le_bytes);
    let clocks = decode(sized("clocks", Dtype::U64, 3)?, u64::from_le_bytes);
    let clocks = Clocks {
        writes: clocks[0],
        events: clocks[1],
        next_seq: clocks[2],
    };
    check_meta(ns, b, m, &meta, &clocks)?;
    let rng_bytes = sized("rng", Dtype::U8, 56)?;
    let mut seed = [0u8; 32];
    seed.copy_from_slice(&rng_bytes[..32]);
    let word_pos = u128::from_le_bytes(rng_bytes[32..48].try_into().expect("16 bytes"));
    let stream = u64::from_le_bytes(rng_bytes[48..56].try_into().expect("8 bytes"));
    let mut rng = <ChaCha8Rng as rand::SeedableRng>::from_seed(seed);
    rng.set_stream(stream);
    rng.set_word_pos(word_pos);
    Ok(MemoryState {
        batch: b,
        slots: m,
        dim: d,
        key_dim: keys.as_ref().map_or(0, |k| k.dims()[2]),
        content,
        keys,
        meta,
        clocks,
        evictions,
        gate_counts: vec![(0, 0); b],
        rng,
        tracked: false,
        config_hash: config_hash.to_string(),
        free_hint: vec![0; b],
        usage: true,
        order,
        by_score: None,
        by_recency: None,
        occupied_count,
        index: None,
        low: None,
        saved_index: views
            .get(format!("{ns}/index").as_str())
            .filter(|v| v.dtype() == Dtype::U8)
            .map(|v| v.data().to_vec()),
    })
}

/// The per-slot metadata of `n` slots, each tensor through `sized` (which
/// checks its dtype and size).
fn decode_meta<'a>(
    sized: &impl Fn(&str, Dtype, usize) -> std::result::Result<&'a [u8], String>,
    n: usize,
) -> std::result::Result<SlotMeta, String> {
    Ok(SlotMeta {
        occupied: sized("occupied", Dtype::U8, n)?
            .iter()
            .map(|&x| x != 0)
            .collect(),
        seq: decode(sized("seq", Dtype::U64, n)?, u64::from_le_bytes),
        written_at: decode(sized("written_at", Dtype::U64, n)?, u64::from_le_bytes),
        write_count: decode(sized("write_count", Dtype::U32, n)?, u32::from_le_bytes),
        last_read: decode(sized("last_read", Dtype::U64, n)?, u64::from_le_bytes),
        read_weight: decode(sized("read_weight", Dtype::F32, n)?, f32::from_le_bytes),
        gate_score: decode(sized("gate_score", Dtype::F32, n)?, f32::from_le_bytes),
    })
}

/// Values no memory can hold, which a damaged or hand-made file can: no
/// slots, negative or non-finite read weights, a slot written, read or
/// numbered after the memory's own clocks. Each names the tensor.
fn check_meta(
    ns: &str,
    b: usize,
    m: usize,
    meta: &SlotMeta,
    clocks: &Clocks,
) -> std::result::Result<(), String> {
    if b == 0 || m == 0 {
        return Err(format!(
            "{ns}/content holds {b} memories of {m} slots: a memory has at least one slot"
        ));
    }
    let first_bad = |name: &str, bad: Option<(usize, String)>| match bad {
        Some((i, why)) => Err(format!("{ns}/{name}: slot {i} {why}")),
        None => Ok(()),
    };
    first_bad(
        "read_weight",
        meta.read_weight
            .iter()
            .position(|w| !(w.is_finite() && *w >= 0.0))
            .map(|i| {
                let w = meta.read_weight[i];
                (
                    i,
                    format!("holds {w}: read weights are sums of softmax weights, never negative"),
                )
            }),
    )?;
    let ahead = |values: &[u64], clock: u64, what: &str| {
        values
            .iter()
            .zip(&meta.occupied)
            .position(|(&v, &occupied)| occupied && v > clock)
            .map(|i| {
                (
                    i,
                    format!(
                        "is {what} {}, after the memory's clock ({clock})",
                        values[i]
                    ),
                )
            })
    };
    first_bad(
        "written_at",
        ahead(&meta.written_at, clocks.writes, "written at"),
    )?;
    first_bad(
        "last_read",
        ahead(&meta.last_read, clocks.events, "last read at"),
    )?;
    let numbered = clocks.next_seq.saturating_sub(1);
    first_bad("seq", ahead(&meta.seq, numbered, "numbered"))
}

fn decode<T, const N: usize>(bytes: &[u8], f: fn([u8; N]) -> T) -> Vec<T> {
    bytes
        .chunks_exact(N)
        .map(|c| f(c.try_into().expect("chunk of N bytes")))
        .collect()
}

/// Where a snapshot of session `session` goes under `dir` (disk persistence).
pub fn session_path(dir: &Path, session: usize) -> PathBuf {
    dir.join(format!("memory-session-{session:04}.safetensors"))
}
