//! Read and write latency of the retention backends at 1e2–1e5 slots
//! (d = 64, batch 1, one query / one write vector per call, memory full and
//! detached, as at evaluation). `cargo bench -p retbench-core --bench memory`.

use candle_core::{DType, Device};
use candle_nn::VarMap;
use criterion::{BenchmarkId, Criterion, criterion_group, criterion_main};
use retbench_core::rng::{randn_tensor, stream};
use retbench_core::*;

const D: usize = 64;
const SIZES: [usize; 4] = [100, 1_000, 10_000, 100_000];

fn config(slots: usize, read: ReadConfig, write: WriteConfig, keys: KeyMode) -> RetentionConfig {
    let mut c = RetentionConfig::new(slots);
    c.read = read;
    c.write = write;
    c.keys = keys;
    c
}

/// A layer and a memory filled to capacity with random content. The fill goes
/// through an append/token layer over the same parameters, in chunks.
fn setup(cfg: &RetentionConfig) -> (RetentionLayer, MemoryState) {
    let dev = Device::Cpu;
    let map = SeededVarMap::new(VarMap::new(), "bench", 0);
    let layer = RetentionLayer::new(cfg, D, map.var_builder(DType::F32, &dev)).unwrap();
    let mut fill_cfg = cfg.clone();
    fill_cfg.write = WriteConfig::append(Evict::Fifo, WriteSource::Token {});
    let filler = RetentionLayer::new(&fill_cfg, D, map.var_builder(DType::F32, &dev)).unwrap();
    let mut mem = layer.new_memory(1, 0, DType::F32, &dev).unwrap();
    let mut rng = stream("bench", 0, "fill");
    let mut left = cfg.slots;
    while left > 0 {
        let n = left.min(10_000);
        let h = randn_tensor(&mut rng, (1, n, D), 1.0, DType::F32, &dev).unwrap();
        filler.write(&h, &mut mem, None).unwrap();
        left -= n;
    }
    (layer, mem)
}

fn bench_read(c: &mut Criterion) {
    let mut group = c.benchmark_group("read");
    group.sample_size(10);
    let append = WriteConfig::append(Evict::Fifo, WriteSource::Last {});
    let variants = [
        ("dense/recompute", ReadConfig::dense(), KeyMode::Recompute),
        ("dense/cached", ReadConfig::dense(), KeyMode::Cached),
        ("topk32/recompute", ReadConfig::topk(32), KeyMode::Recompute),
        ("topk32/cached", ReadConfig::topk(32), KeyMode::Cached),
    ];
    for (name, read, keys) in variants {
        for slots in SIZES {
            let read = match read {
                ReadConfig {
                    kind: ReadKind::Topk { k },
                    ..
                } => ReadConfig::topk(k.min(slots)),
                r => r,
            };
            let (layer, mut mem) = setup(&config(slots, read, append, keys));
            let mut rng = stream("bench", 0, "query");
            let q = randn_tensor(&mut rng, (1, 1, D), 1.0, DType::F32, &Device::Cpu).unwrap();
            group.bench_with_input(BenchmarkId::new(name, slots), &slots, |b, _| {
                b.iter(|| layer.read(&q, &mut mem).unwrap().r)
            });
        }
    }
    group.finish();
}

fn bench_write(c: &mut Criterion) {
    let mut group = c.benchmark_group("write");
    group.sample_size(10);
    let variants = [
        (
            "append_fifo",
            WriteConfig::append(Evict::Fifo, WriteSource::Last {}),
        ),
        (
            "append_lru",
            WriteConfig::append(Evict::Lru, WriteSource::Last {}),
        ),
        (
            "attention",
            WriteConfig::attention(0.5, true, WriteSource::Last {}),
        ),
    ];
    for (name, write) in variants {
        for slots in SIZES {
            let (layer, mut mem) = setup(&config(
                slots,
                ReadConfig::dense(),
                write,
                KeyMode::Recompute,
            ));
            let mut rng = stream("bench", 0, "write");
            let h = randn_tensor(&mut rng, (1, 4, D), 1.0, DType::F32, &Device::Cpu).unwrap();
            group.bench_with_input(BenchmarkId::new(name, slots), &slots, |b, _| {
                b.iter(|| layer.write(&h, &mut mem, None).unwrap())
            });
        }
    }
    group.finish();
}

/// Keeps the whole run to a few minutes on 2 cores.
fn criterion() -> Criterion {
    Criterion::default()
        .warm_up_time(std::time::Duration::from_millis(500))
        .measurement_time(std::time::Duration::from_secs(2))
}

criterion_group! { name = benches; config = criterion(); targets = bench_read, bench_write }
criterion_main!(benches);
