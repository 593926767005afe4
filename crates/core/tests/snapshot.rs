//! Snapshots: bit-exact round trips over every backend combination, and a
//! clear refusal — never a panic — of every kind of bad file.

mod common;

use std::collections::HashMap;
use std::path::Path;

use candle_core::{DType, Tensor};
use common::*;
use retbench_core::snapshot::{self, FORMAT_VERSION};
use retbench_core::*;

fn scratch(name: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("retbench-snap-{}-{name}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// A memory that has seen writes past capacity and reads.
fn used_memory(cfg: &RetentionConfig, l: &RetentionLayer) -> MemoryState {
    let _ = cfg;
    let mut mem = l.new_memory(2, 5, DType::F32, &DEV).unwrap();
    for step in 0..4 {
        let h = randn(&format!("w{step}"), &[2, 3, 8], DType::F32);
        write(l, &h, &mut mem);
        l.read(&h, &mut mem).unwrap();
    }
    mem
}

fn assert_same(a: &MemoryState, b: &MemoryState, what: &str) {
    let bits = |t: &Tensor| -> Vec<u32> {
        t.flatten_all()
            .unwrap()
            .to_vec1::<f32>()
            .unwrap()
            .iter()
            .map(|x| x.to_bits())
            .collect()
    };
    assert_eq!(bits(a.content()), bits(b.content()), "{what}: content");
    assert_eq!(a.keys().map(bits), b.keys().map(bits), "{what}: keys");
    assert_eq!(a.meta(), b.meta(), "{what}: metadata");
    assert_eq!(a.clocks(), b.clocks(), "{what}: clocks");
    assert_eq!(a.evictions(), b.evictions(), "{what}: evictions");
}

#[test]
fn save_then_load_is_bit_exact_for_every_backend() {
    let dir = scratch("roundtrip");
    for (i, cfg) in combos(4, 2, WriteSource::Token {}).iter().enumerate() {
        let (l, _) = layer(cfg, 8, DType::F32);
        let mut mem = used_memory(cfg, &l);
        let path = dir.join(format!("{i}.safetensors"));
        snapshot::save_state(&mem, &path).unwrap();
        let mut back = snapshot::load_state(&path, &cfg.hash(), &DEV).unwrap();
        assert_same(&mem, &back, &label(cfg));
        // The eviction generator continues where it stopped.
        for step in 0..3 {
            let h = randn(&format!("after{step}"), &[2, 3, 8], DType::F32);
            write(&l, &h, &mut mem);
            write(&l, &h, &mut back);
        }
        assert_same(&mem, &back, &format!("after more writes: {}", label(cfg)));
    }
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn a_bank_keeps_its_namespaces_apart() {
    let dir = scratch("bank");
    let cfg = RetentionConfig::new(4);
    let (l, _) = layer(&cfg, 8, DType::F32);
    let mut bank = MemoryBank::new();
    bank.insert("alice", used_memory(&cfg, &l)).unwrap();
    bank.insert("bob", l.new_memory(1, 0, DType::F32, &DEV).unwrap())
        .unwrap();
    let path = dir.join("bank.safetensors");
    snapshot::save(&bank, &path).unwrap();
    let back = snapshot::load(&path, &cfg.hash(), &DEV).unwrap();
    let names: Vec<&str> = back.iter().map(|(n, _)| n).collect();
    assert_eq!(names, ["alice", "bob"]);
    assert_same(
        bank.get("alice").unwrap(),
        back.get("alice").unwrap(),
        "alice",
    );
    assert_eq!(back.get("bob").unwrap().occupied(0), 0);
    std::fs::remove_dir_all(dir).unwrap();
}

fn saved(dir: &Path) -> (RetentionConfig, std::path::PathBuf, Vec<u8>) {
    let cfg = RetentionConfig::new(4);
    let (l, _) = layer(&cfg, 8, DType::F32);
    let path = dir.join("good.safetensors");
    snapshot::save_state(&used_memory(&cfg, &l), &path).unwrap();
    let bytes = std::fs::read(&path).unwrap();
    (cfg, path, bytes)
}

fn refused(path: &Path, hash: &str, expect: &str) {
    let err = snapshot::load_state(path, hash, &DEV).expect_err("must be refused");
    let text = err.to_string();
    assert!(
        text.contains(&path.display().to_string()),
        "names the file: {text}"
    );
    assert!(text.contains(expect), "{expect:?} in {text}");
}

#[test]
fn truncated_corrupted_foreign_and_newer_files_are_refused() {
    let dir = scratch("bad");
    let (cfg, good, bytes) = saved(&dir);
    let hash = cfg.hash();

    for cut in [0, 7, 100, bytes.len() / 2, bytes.len() - 1] {
        let p = dir.join(format!("truncated-{cut}.safetensors"));
        std::fs::write(&p, &bytes[..cut]).unwrap();
        refused(&p, &hash, "truncated or corrupted");
    }

    let mut flipped = bytes.clone();
    let last = flipped.len() - 20;
    flipped[last] ^= 0x40;
    let p = dir.join("flipped.safetensors");
    std::fs::write(&p, &flipped).unwrap();
    refused(&p, &hash, "checksum mismatch");

    let mut other = cfg.clone();
    other.slots = 5;
    refused(&good, &other.hash(), "written for retention config");

    refused(&dir.join("missing.safetensors"), &hash, "No such file");

    // A valid safetensors file that is not a snapshot.
    let p = dir.join("plain.safetensors");
    let t = Tensor::zeros((2, 2), DType::F32, &DEV).unwrap();
    candle_core::safetensors::save(&HashMap::from([("x".to_string(), t)]), &p).unwrap();
    refused(&p, &hash, "not a retbench memory snapshot");

    // The same file re-headed as a future format version.
    let snap = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let (_, header) = safetensors::SafeTensors::read_metadata(&bytes).unwrap();
    let mut meta = header.metadata().clone().unwrap();
    meta.insert("format_version".into(), (FORMAT_VERSION + 1).to_string());
    let p = dir.join("future.safetensors");
    let views: Vec<(String, safetensors::tensor::TensorView)> = snap
        .names()
        .into_iter()
        .map(|n| (n.to_string(), snap.tensor(n).unwrap()))
        .collect();
    std::fs::write(&p, safetensors::serialize(views, Some(meta)).unwrap()).unwrap();
    refused(&p, &hash, "newer than this retbench supports");

    std::fs::remove_dir_all(dir).unwrap();
}

/// `bytes` (a snapshot) with the tensors `edit` returns replaced (new
/// shape and bytes) and the checksum recomputed as the writer computes it:
/// a well-formed file holding values that no memory can.
fn rewritten(
    bytes: &[u8],
    edit: impl Fn(&str, &safetensors::tensor::TensorView) -> Option<(Vec<usize>, Vec<u8>)>,
) -> Vec<u8> {
    let snap = safetensors::SafeTensors::deserialize(bytes).unwrap();
    let (_, header) = safetensors::SafeTensors::read_metadata(bytes).unwrap();
    let mut meta = header.metadata().clone().unwrap();
    let mut names: Vec<String> = snap.names().into_iter().map(String::from).collect();
    names.sort();
    let tensors: Vec<(String, safetensors::Dtype, Vec<usize>, Vec<u8>)> = names
        .iter()
        .map(|n| {
            let v = snap.tensor(n).unwrap();
            let (shape, data) = edit(n, &v).unwrap_or((v.shape().to_vec(), v.data().to_vec()));
            (n.clone(), v.dtype(), shape, data)
        })
        .collect();
    let mut h = blake3::Hasher::new();
    h.update(meta["config_hash"].as_bytes());
    for (name, dtype, shape, data) in &tensors {
        h.update(name.as_bytes());
        h.update(&[0]);
        h.update(format!("{dtype:?}{shape:?}").as_bytes());
        h.update(&(data.len() as u64).to_le_bytes());
        h.update(data);
    }
    meta.insert("checksum".into(), h.finalize().to_hex().to_string());
    let views: Vec<(String, safetensors::tensor::TensorView)> = tensors
        .iter()
        .map(|(n, d, s, b)| {
            let v = safetensors::tensor::TensorView::new(*d, s.clone(), b).unwrap();
            (n.clone(), v)
        })
        .collect();
    safetensors::serialize(views, Some(meta)).unwrap()
}

#[test]
fn values_no_memory_can_hold_are_refused_naming_the_tensor() {
    let dir = scratch("impossible");
    let (cfg, _, bytes) = saved(&dir);
    let hash = cfg.hash();
    let write = |name: &str, b: Vec<u8>| {
        let p = dir.join(format!("{name}.safetensors"));
        std::fs::write(&p, b).unwrap();
        p
    };
    // Zero slots: every per-slot tensor empty (this panicked once).
    let p = write(
        "zero-slots",
        rewritten(&bytes, |n, v| {
            let s = v.shape();
            match s.len() {
                3 => Some((vec![s[0], 0, s[2]], Vec::new())),
                2 if !n.ends_with("/clocks") => Some((vec![s[0], 0], Vec::new())),
                _ => None,
            }
        }),
    );
    refused(
        &p,
        &hash,
        "memories of 0 slots: a memory has at least one slot",
    );
    // A negative read weight.
    let p = write(
        "negative-weight",
        rewritten(&bytes, |n, v| {
            n.ends_with("/read_weight").then(|| {
                let mut d = v.data().to_vec();
                d[..4].copy_from_slice(&(-0.5f32).to_le_bytes());
                (v.shape().to_vec(), d)
            })
        }),
    );
    refused(&p, &hash, "default/read_weight: slot 0 holds -0.5");
    // An occupied slot written after the memory's write clock.
    let p = write(
        "clock-ahead",
        rewritten(&bytes, |n, v| {
            n.ends_with("/written_at").then(|| {
                let mut d = v.data().to_vec();
                d[..8].copy_from_slice(&1_000_000u64.to_le_bytes());
                (v.shape().to_vec(), d)
            })
        }),
    );
    refused(
        &p,
        &hash,
        "default/written_at: slot 0 is written at 1000000",
    );
    // The unedited file still loads: the checks refuse only what they name.
    let p = write("unedited", rewritten(&bytes, |_, _| None));
    snapshot::load_state(&p, &hash, &DEV).unwrap();
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn a_failed_save_leaves_the_previous_snapshot_intact() {
    let dir = scratch("atomic");
    let (cfg, good, bytes) = saved(&dir);
    // A save that cannot complete (its target is a non-empty folder) fails
    // with an error naming the path, leaves no temp file, and the previous
    // snapshot is untouched...
    let (l, _) = layer(&cfg, 8, DType::F32);
    let mem = l.new_memory(1, 0, DType::F32, &DEV).unwrap();
    let blocked = dir.join("blocked.safetensors");
    std::fs::create_dir_all(blocked.join("inside")).unwrap();
    let err = snapshot::save_state(&mem, &blocked)
        .unwrap_err()
        .to_string();
    assert!(err.contains("blocked.safetensors"), "{err}");
    assert_eq!(std::fs::read(&good).unwrap(), bytes);
    // ...a missing parent folder is created...
    snapshot::save_state(&mem, &dir.join("new/sub/x.safetensors")).unwrap();
    // ...and overwriting replaces the file whole, leaving no temp file.
    snapshot::save_state(&mem, &good).unwrap();
    assert_ne!(std::fs::read(&good).unwrap(), bytes);
    let leftovers: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().contains(".tmp-"))
        .collect();
    assert!(leftovers.is_empty());
    std::fs::remove_dir_all(dir).unwrap();
}
