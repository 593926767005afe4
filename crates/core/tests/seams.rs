//! The read seam from outside the crate: a toy backend that keeps its own
//! index and selects without scoring every slot, plugged into a layer with
//! `with_read_backend` alone (what docs/ARCHITECTURE.md describes).

mod common;

use std::sync::{Arc, Mutex};

use candle_core::{DType, Tensor};
use common::*;
use retbench_core::*;

/// Events the index saw, shared with the test.
type Log = Arc<Mutex<Vec<String>>>;

/// Keeps the occupied even slots of each memory; reads attend to those.
#[derive(Debug, Clone)]
struct EvenIndex {
    slots: usize,
    even: Vec<Vec<u32>>,
    log: Log,
}

impl SlotIndex for EvenIndex {
    fn on_fill(&mut self, f: usize) {
        let (b, i) = (f / self.slots, (f % self.slots) as u32);
        if i % 2 == 0 && !self.even[b].contains(&i) {
            self.even[b].push(i);
            self.even[b].sort_unstable();
        }
        self.log.lock().unwrap().push(format!("fill {f}"));
    }
    fn on_evict(&mut self, f: usize) {
        self.log.lock().unwrap().push(format!("evict {f}"));
    }
    fn on_clear(&mut self) {
        self.even.iter_mut().for_each(Vec::clear);
        self.log.lock().unwrap().push("clear".into());
    }
    fn box_clone(&self) -> Box<dyn SlotIndex> {
        Box::new(self.clone())
    }
    fn as_any(&self) -> &dyn std::any::Any {
        self
    }
    fn save(&self) -> Option<Vec<u8>> {
        // One line per memory: its even slots.
        let text: Vec<String> = self
            .even
            .iter()
            .map(|e| e.iter().map(u32::to_string).collect::<Vec<_>>().join(" "))
            .collect();
        Some(text.join("\n").into_bytes())
    }
}

#[derive(Debug)]
struct Even {
    log: Log,
}

impl ReadBackend for Even {
    fn name(&self) -> &'static str {
        "even"
    }
    fn select(&self, query: &mut ReadQuery<'_>) -> retbench_core::Result<Selection> {
        let (b, h, t, m) = query.dims()?;
        let index = query
            .memory()
            .index()
            .expect("the layer attached our index");
        let index: &EvenIndex = index.as_any().downcast_ref().expect("our own index");
        // Selection from the index alone: no score over every slot.
        let k = m.div_ceil(2);
        let mut slots = vec![Selection::PAD; b * h * t * k];
        for (bi, even) in index.even.iter().enumerate() {
            for row in bi * h * t..(bi + 1) * h * t {
                slots[row * k..row * k + even.len()].copy_from_slice(even);
            }
        }
        Ok(Selection::Rows { k, slots })
    }
    fn new_index(&self, mem: &MemoryState) -> Option<Box<dyn SlotIndex>> {
        self.log.lock().unwrap().push("new".into());
        Some(Box::new(EvenIndex {
            slots: mem.slots(),
            even: vec![Vec::new(); mem.batch()],
            log: self.log.clone(),
        }))
    }
    fn load_index(
        &self,
        mem: &MemoryState,
        saved: &[u8],
    ) -> retbench_core::Result<Option<Box<dyn SlotIndex>>> {
        self.log.lock().unwrap().push("load".into());
        let text = String::from_utf8_lossy(saved);
        let mut even: Vec<Vec<u32>> = text
            .split('\n')
            .map(|l| l.split_whitespace().map(|x| x.parse().unwrap()).collect())
            .collect();
        even.resize(mem.batch(), Vec::new());
        Ok(Some(Box::new(EvenIndex {
            slots: mem.slots(),
            even,
            log: self.log.clone(),
        })))
    }
}

#[test]
fn a_backend_index_travels_through_a_snapshot() {
    let mut cfg = RetentionConfig::new(6);
    cfg.write = WriteConfig::append(Evict::Fifo, WriteSource::Token {});
    let log: Log = Default::default();
    let (l, _) = layer(&cfg, 8, DType::F32);
    let l = l.with_read_backend(Box::new(Even { log: log.clone() }));
    let mut mem = l.new_memory(2, 0, DType::F32, &DEV).unwrap();
    write(&l, &randn("w", &[2, 5, 8], DType::F32), &mut mem);
    let q = randn("q", &[2, 3, 8], DType::F32);
    let before = flat(&l.read(&q, &mut mem).unwrap().r);
    let dir = std::env::temp_dir().join(format!("retbench-seams-{}", std::process::id()));
    let path = dir.join("mem.safetensors");
    snapshot::save_state(&mem, &path).unwrap();
    let mut loaded = snapshot::load_state(&path, l.config_hash(), &DEV).unwrap();
    assert!(loaded.index().is_none(), "the index waits for its backend");
    let after = flat(&l.read(&q, &mut loaded).unwrap().r);
    assert_eq!(before, after);
    let index: &EvenIndex = loaded.index().unwrap().as_any().downcast_ref().unwrap();
    assert_eq!(index.even, vec![vec![0, 2, 4], vec![0, 2, 4]]);
    assert_eq!(
        log.lock().unwrap().last().unwrap(),
        "load",
        "restored, not rebuilt"
    );
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn a_backend_outside_the_crate_selects_reads_and_keeps_its_index() {
    let (b, t, d, slots) = (2, 3, 8, 6);
    for cfg in combos(slots, 2, WriteSource::Token {}) {
        if !matches!(cfg.read.kind, ReadKind::Dense)
            || !matches!(cfg.write.kind, WriteKind::Append { evict: Evict::Fifo })
            || !matches!(cfg.gate, GateConfig::None {})
        {
            continue;
        }
        let log: Log = Default::default();
        let (l, _) = layer(&cfg, d, DType::F32);
        let l = l.with_read_backend(Box::new(Even { log: log.clone() }));
        assert_eq!(l.read_backend().name(), "even");
        let mut mem = l.new_memory(b, 0, DType::F32, &DEV).unwrap();
        write(&l, &randn("w0", &[b, 4, d], DType::F32), &mut mem);
        write(&l, &randn("w1", &[b, 4, d], DType::F32), &mut mem); // evicts
        let q = randn("q", &[b, t, d], DType::F32);
        // The gathered read against the masked read over every slot.
        let reference = l.inspect_read(&q, &mem).unwrap();
        let read = l.read(&q, &mut mem).unwrap();
        for (x, y) in flat(&read.r).iter().zip(flat(&reference.r)) {
            assert!((x - y).abs() <= 1e-5, "{}: {x} vs {y}", label(&cfg));
        }
        for (row, w) in flat(&reference.weights).chunks(slots).enumerate() {
            for (i, &wi) in w.iter().enumerate() {
                assert!(i % 2 == 0 || wi == 0.0, "row {row} reads odd slot {i}");
            }
        }
        // Reads record usage for the slots they touched, and only those.
        let usage = &mem.meta().read_weight;
        assert!(
            usage
                .iter()
                .enumerate()
                .all(|(f, &u)| (f % slots) % 2 == 0 || u == 0.0)
        );
        assert!(usage.iter().any(|&u| u > 0.0));
        let events = log.lock().unwrap().clone();
        assert_eq!(
            events.iter().filter(|e| e.starts_with("fill")).count(),
            2 * b * 4
        );
        assert_eq!(
            events.iter().filter(|e| e.starts_with("evict")).count(),
            b * 2
        );
        mem.clear().unwrap();
        assert_eq!(log.lock().unwrap().last().unwrap(), "clear");
        let empty = l.read(&q, &mut mem).unwrap();
        assert!(flat(&empty.r).iter().all(|&x| x == 0.0));
    }
}

#[test]
fn a_backend_gets_gradients_through_the_gathered_rows() {
    let mut cfg = RetentionConfig::new(4);
    // With W_u, so that the gradient through the written content reaches it.
    cfg.write = WriteConfig {
        project: true,
        ..WriteConfig::append(Evict::Fifo, WriteSource::Token {})
    };
    let (l, map) = layer(&cfg, 8, DType::F32);
    let l = l.with_read_backend(Box::new(Even {
        log: Default::default(),
    }));
    let mut mem = l.new_memory(1, 0, DType::F32, &DEV).unwrap();
    mem.track();
    write(&l, &randn("w", &[1, 4, 8], DType::F32), &mut mem);
    let r = l
        .read(&randn("q", &[1, 2, 8], DType::F32), &mut mem)
        .unwrap()
        .r;
    let grads = r.sqr().unwrap().sum_all().unwrap().backward().unwrap();
    for name in ["w_q.weight", "w_k.weight", "w_v.weight", "w_u.weight"] {
        let var = map.varmap().data().lock().unwrap()[name]
            .as_tensor()
            .clone();
        let g: Tensor = grads.get(&var).expect(name).clone();
        let norm = g
            .sqr()
            .unwrap()
            .sum_all()
            .unwrap()
            .to_scalar::<f32>()
            .unwrap();
        assert!(norm > 0.0, "{name} got no gradient");
    }
}
