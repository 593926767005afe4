//! Evaluation and checkpoints: disk persistence gives exactly what process
//! persistence gives (and really goes through the files), clearing memory
//! changes what a later session sees, and a checkpoint restores a model
//! bit for bit (all of it, or its base alone).

use candle_core::{DType, Device, Tensor};
use candle_nn::VarMap;
use rand::Rng;
use retbench_core::rng::stream;
use retbench_core::{Layers, Persistence, RetentionConfig, SeededVarMap, WriteConfig, WriteSource};
use retbench_model::{Between, Model, ModelConfig, Session, checkpoint, run_episodes};

fn scratch(name: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("retbench-eval-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn cfg() -> ModelConfig {
    ModelConfig::new(32, 2, 2, 16, 12)
}

fn retention(persistence: Persistence) -> RetentionConfig {
    let mut r = RetentionConfig::new(32);
    r.layers = Layers::All;
    r.persistence = persistence;
    r.write = WriteConfig::append(retbench_core::Evict::Random, WriteSource::Token {});
    r
}

fn sessions(n: usize, b: usize, t: usize) -> Vec<Session> {
    let mut rng = stream("eval-tests", 0, "data");
    let dev = Device::Cpu;
    (0..n)
        .map(|_| {
            let tok: Vec<u32> = (0..b * t).map(|_| rng.random_range(0..16)).collect();
            let tgt: Vec<u32> = (0..b * t).map(|_| rng.random_range(0..16)).collect();
            Session {
                tokens: Tensor::from_vec(tok, (b, t), &dev).unwrap(),
                targets: Tensor::from_vec(tgt, (b, t), &dev).unwrap(),
                mask: Tensor::ones((b, t), DType::F32, &dev).unwrap(),
                feedback: None,
            }
        })
        .collect()
}

fn model(map: &SeededVarMap, r: Option<&RetentionConfig>) -> Model {
    Model::new(&cfg(), r, map.var_builder(DType::F32, &Device::Cpu)).unwrap()
}

#[test]
fn disk_persistence_equals_process_persistence_and_goes_through_files() {
    // Three sessions of 12 tokens into 32 slots: random eviction happens,
    // so the eviction stream must survive the snapshot too.
    let data = sessions(3, 4, 12);
    let map = SeededVarMap::new(VarMap::new(), "persist", 0);
    let process = run_episodes(
        &model(&map, Some(&retention(Persistence::Process))),
        &data,
        7,
        Between::Persist(Persistence::Process, std::path::Path::new("/nonexistent")),
    )
    .unwrap();
    let dir = scratch("disk");
    let disk_model = model(&map, Some(&retention(Persistence::Disk)));
    let disk = run_episodes(
        &disk_model,
        &data,
        7,
        Between::Persist(Persistence::Disk, &dir),
    )
    .unwrap();
    assert_eq!(disk, process, "bit-identical predictions and losses");
    let files: Vec<_> = std::fs::read_dir(&dir).unwrap().flatten().collect();
    assert_eq!(files.len(), 2, "one snapshot between each pair of sessions");
}

#[test]
fn clearing_memory_changes_only_the_sessions_after_it() {
    let data = sessions(2, 4, 12);
    let map = SeededVarMap::new(VarMap::new(), "clear", 0);
    let m = model(&map, Some(&retention(Persistence::Process)));
    let kept = run_episodes(
        &m,
        &data,
        0,
        Between::Persist(Persistence::Process, std::path::Path::new(".")),
    )
    .unwrap();
    let cleared = run_episodes(&m, &data, 0, Between::ClearBefore(1)).unwrap();
    assert_eq!(kept[0], cleared[0]);
    assert_ne!(
        kept[1].nll, cleared[1].nll,
        "session 2 read what session 1 wrote"
    );
    // Without retention, memory is not a thing to clear.
    let plain = model(&SeededVarMap::new(VarMap::new(), "clear", 0), None);
    let a = run_episodes(&plain, &data, 0, Between::ClearBefore(1)).unwrap();
    let b = run_episodes(
        &plain,
        &data,
        0,
        Between::Persist(Persistence::Process, std::path::Path::new(".")),
    )
    .unwrap();
    assert_eq!(a, b);
}

#[test]
fn checkpoints_restore_all_weights_or_the_base_alone() {
    let dir = scratch("ckpt");
    let path = dir.join("model.safetensors");
    let data = sessions(2, 2, 12);
    let between = Between::Persist(Persistence::Process, &dir);
    let r = retention(Persistence::Process);
    let trained = SeededVarMap::new(VarMap::new(), "ckpt-a", 0);
    let a = model(&trained, Some(&r));
    checkpoint::save(trained.varmap(), &path, "ckpt-a").unwrap();
    // Another init, then everything loaded: the same outputs.
    let other = SeededVarMap::new(VarMap::new(), "ckpt-b", 1);
    let b = model(&other, Some(&r));
    assert_ne!(
        run_episodes(&a, &data, 0, between).unwrap(),
        run_episodes(&b, &data, 0, between).unwrap()
    );
    let n = checkpoint::load_into(other.varmap(), &path, "").unwrap();
    assert_eq!(n, other.varmap().all_vars().len());
    assert_eq!(
        run_episodes(&a, &data, 0, between).unwrap(),
        run_episodes(&b, &data, 0, between).unwrap()
    );
    // The base alone into a model without retention.
    let base_only = SeededVarMap::new(VarMap::new(), "ckpt-c", 2);
    let c = model(&base_only, None);
    let n = checkpoint::load_into(base_only.varmap(), &path, "base.").unwrap();
    assert_eq!(n, base_only.varmap().all_vars().len());
    let names = |m: &SeededVarMap| {
        let data = m.varmap().data().lock().unwrap();
        let mut v: Vec<(String, Vec<f32>)> = data
            .iter()
            .filter(|(n, _)| n.starts_with("base."))
            .map(|(n, t)| (n.clone(), t.flatten_all().unwrap().to_vec1().unwrap()))
            .collect();
        v.sort_by(|x, y| x.0.cmp(&y.0));
        v
    };
    assert_eq!(names(&base_only), names(&trained));
    drop(c);
    // Bad files are named.
    let err = checkpoint::load_into(base_only.varmap(), &dir.join("missing.safetensors"), "")
        .unwrap_err()
        .to_string();
    assert!(err.contains("missing.safetensors"), "{err}");
    std::fs::write(dir.join("junk.safetensors"), b"not a checkpoint").unwrap();
    let err = checkpoint::load_into(base_only.varmap(), &dir.join("junk.safetensors"), "")
        .unwrap_err()
        .to_string();
    assert!(err.contains("junk.safetensors"), "{err}");
    // A model of another shape is refused, and nothing is half-loaded.
    let wide = SeededVarMap::new(VarMap::new(), "ckpt-d", 3);
    let _ = Model::new(
        &ModelConfig::new(64, 2, 2, 16, 12),
        None,
        wide.var_builder(DType::F32, &Device::Cpu),
    )
    .unwrap();
    let err = checkpoint::load_into(wide.varmap(), &path, "base.")
        .unwrap_err()
        .to_string();
    assert!(err.contains("shape"), "{err}");
}

/// A probe reads memory as a session would and leaves it as it was: the
/// same contents, slot metadata, clocks and gate counters, so a stream
/// probed after every session continues exactly as an unprobed one.
#[test]
fn a_probe_reads_memory_without_changing_it() {
    let data = sessions(3, 2, 8);
    let map = SeededVarMap::new(VarMap::new(), "probe", 0);
    let m = model(&map, Some(&retention(Persistence::Process)));
    let mut memories = m.new_memories(2, 0, DType::F32, &Device::Cpu).unwrap();
    for s in &data[..2] {
        let fwd = m.forward(&s.tokens, &mut memories).unwrap();
        m.write(&fwd, &mut memories, None).unwrap();
        memories.iter_mut().for_each(|x| x.detach().unwrap());
    }
    let snapshot = |ms: &[retbench_core::MemoryState]| {
        ms.iter()
            .map(|x| {
                (
                    x.content().flatten_all().unwrap().to_vec1::<f32>().unwrap(),
                    x.meta().clone(),
                    x.clocks(),
                    x.gate_counts().to_vec(),
                )
            })
            .collect::<Vec<_>>()
    };
    let before = snapshot(&memories);
    let out = retbench_model::eval::probe(&m, &data[2], &memories).unwrap();
    assert_eq!(out.predictions.len(), 2 * 8);
    assert_eq!(snapshot(&memories), before);
    // And it sees what a session in the stream would see.
    let fwd = m.forward(&data[2].tokens, &mut memories).unwrap();
    let direct: Vec<u32> = fwd
        .logits
        .argmax(candle_core::D::Minus1)
        .unwrap()
        .flatten_all()
        .unwrap()
        .to_vec1()
        .unwrap();
    assert_eq!(out.predictions, direct);
}
