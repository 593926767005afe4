//! Frozen held-out sets: the committed ones regenerate bit for bit; every
//! variant of a suite (memory or none, sessions or one context) is scored
//! on the same episodes; a changed byte is found and named; and a run's
//! record carries the sha256 its dataset file has.

use std::path::{Path, PathBuf};

use retbench_harness::RunFolder;
use retbench_harness::datasets::{self, check, of_plan};
use retbench_harness::runner::{Progress, RunOptions, run_plan};
use retbench_harness::suite::parse;

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("retbench-datasets-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    dir
}

const SUITE: &str = "\
name: tiny-recall
base:
  task: { kind: recall, keys: 8, values: 8, pairs: 4, queries_same: 2, queries_next: 4 }
  model: { d_model: 16, layers: 1, heads: 2 }
  retention: { slots: 16, heads: 2, write: { kind: append, evict: fifo, source: token } }
  train: { steps: 2, batch: 4, lr: 1.0e-3 }
  eval: { episodes: 8, batch: 4 }
seeds: [0, 1]
variants:
  retention: {}
  no_memory: { retention: null }
  full_context: { retention: null, task.context: full }
";

#[test]
fn the_committed_datasets_regenerate_bit_for_bit() {
    let dir = repo().join("datasets");
    let n = check(&dir).unwrap_or_else(|p| panic!("{}", p.join("\n")));
    // recall, copy (symbols and bits) and entity, three seeds or more each
    assert!(n >= 12, "{n} datasets checked");
}

#[test]
fn variants_share_one_dataset_per_seed_and_a_changed_byte_is_named() {
    let plan = parse(Path::new("tiny.yaml"), SUITE, None).unwrap();
    let sets = of_plan(&plan);
    assert_eq!(sets.len(), 2, "one per seed, whatever the layout or memory");
    let dir = scratch("write");
    let w = datasets::write(&sets, &dir).unwrap();
    assert_eq!((w.written, w.unchanged), (2, 0));
    assert_eq!(check(&dir), Ok(2));
    let again = datasets::write(&sets, &dir).unwrap();
    assert_eq!((again.written, again.unchanged), (0, 2));
    // One byte of one episode changed: the file is named.
    let file = dir.join(&sets[1].file);
    let mut bytes = std::fs::read(&file).unwrap();
    let at = bytes.iter().position(|&b| b == b'5').unwrap();
    bytes[at] = b'6';
    std::fs::write(&file, bytes).unwrap();
    let problems = check(&dir).unwrap_err();
    assert_eq!(problems.len(), 1, "{problems:?}");
    assert!(problems[0].contains(&sets[1].file), "{problems:?}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_learned_run_records_its_dataset_files_sha256() {
    let plan = parse(Path::new("tiny.yaml"), SUITE, None).unwrap();
    let out = scratch("run");
    let opts = RunOptions {
        out: out.clone(),
        jobs: Some(1),
        cores: None,
        shard: None,
        only: None,
        force: false,
        replan: false,
        require_clean: false,
        progress: Progress::Quiet,
    };
    run_plan(&plan, &opts).unwrap();
    let sets = of_plan(&plan);
    for r in RunFolder::new(&out).runs(None).unwrap() {
        let expect = sets.iter().find(|d| d.seed == r.seed).unwrap().sha256();
        assert_eq!(
            r.provenance.dataset_hash.as_deref(),
            Some(expect.as_str()),
            "{}",
            r.run_id
        );
    }
    let _ = std::fs::remove_dir_all(&out);
}
