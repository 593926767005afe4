//! The binary's contract: what `list` and `memory inspect` print, and exit
//! code 2 with a message naming the file on bad input.

use std::path::PathBuf;
use std::process::Command;

use candle_core::{DType, Device, Tensor};
use retbench_core::{RetentionConfig, RetentionLayer, SeededVarMap, snapshot};

fn retbench(args: &[&str]) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_retbench"))
        .args(args)
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("retbench-cli-{}-{name}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

#[test]
fn list_names_every_axis() {
    let (code, out, _) = retbench(&["list"]);
    assert_eq!(code, 0);
    for axis in [
        "read:",
        "write:",
        "write.source:",
        "gate:",
        "keys:",
        "slot_age:",
        "persistence:",
    ] {
        assert!(out.contains(axis), "{axis} missing from\n{out}");
    }
    assert!(out.contains("{ kind: topk, k: 32 }"));
    let (code, out, _) = retbench(&["list", "--format", "json"]);
    assert_eq!(code, 0);
    let doc: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert!(doc["backends"].as_array().unwrap().len() >= 20);
}

#[test]
fn inspect_reports_a_snapshot() {
    let dir = scratch("inspect");
    let cfg = RetentionConfig::new(16);
    let map = SeededVarMap::new(candle_nn::VarMap::new(), cfg.hash(), 0);
    let layer = RetentionLayer::new(&cfg, 8, map.var_builder(DType::F32, &Device::Cpu)).unwrap();
    let mut mem = layer.new_memory(2, 0, DType::F32, &Device::Cpu).unwrap();
    for i in 0..3 {
        let h = Tensor::full(i as f32, (2, 4, 8), &Device::Cpu).unwrap();
        layer.write(&h, &mut mem, None).unwrap();
    }
    let path = dir.join("mem.safetensors");
    snapshot::save_state(&mem, &path).unwrap();
    let (code, out, err) = retbench(&["memory", "inspect", path.to_str().unwrap()]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("2 memories x 16 slots x 8 dims"), "{out}");
    assert!(out.contains("6 / 32 slots"), "{out}");
    assert!(out.contains(&cfg.hash()), "{out}");
    let (code, out, _) = retbench(&[
        "memory",
        "inspect",
        path.to_str().unwrap(),
        "--format",
        "json",
    ]);
    assert_eq!(code, 0);
    let doc: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(doc["namespaces"][0]["occupied"], serde_json::json!([3, 3]));
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn inspect_refuses_bad_files_with_exit_2() {
    let dir = scratch("bad");
    let junk = dir.join("junk.safetensors");
    std::fs::write(&junk, b"this is not a snapshot").unwrap();
    for path in [junk, dir.join("missing.safetensors")] {
        let (code, _, err) = retbench(&["memory", "inspect", path.to_str().unwrap()]);
        assert_eq!(code, 2, "{err}");
        assert!(err.contains(path.to_str().unwrap()), "{err}");
        assert!(!err.contains("panicked"), "{err}");
    }
    let (code, _, _) = retbench(&["memory", "frobnicate"]);
    assert_eq!(code, 2, "usage errors exit 2");
    std::fs::remove_dir_all(dir).unwrap();
}
