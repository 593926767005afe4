//! Instruction counts of the hot kernels under Callgrind (gungraun): the
//! dense scan (`scan::attend`), the exact and reduced-precision top-k scans,
//! a product-key half, and one read and one append write through the layer
//! at 1000 slots. Unlike the wall-clock benches (`memory.rs`) a count is the
//! same on every run of one binary on one CPU kind, whatever else the
//! machine does, so CI can gate on it with a tight tolerance:
//! `scripts/instructions.sh check` compares each count with
//! `reports/baselines/instructions.json` (`just bench-instructions`).
//!
//! Inputs are fixed (a seeded xorshift, the harness's seeded streams) and
//! every kernel runs on one thread (`RAYON_NUM_THREADS=1`, set below), so a
//! count moves only when the code that runs moves. Under Valgrind the CPU
//! reports no AVX-512, so the multiversioned kernels take their AVX2 paths.

use std::hint::black_box;

use candle_core::{DType, Device, Tensor};
use candle_nn::VarMap;
use gungraun::prelude::*;
use retbench_core::rng::{randn_tensor, stream};
use retbench_core::*;
use retbench_kernels::quant::{LowKeys, Precision};
use retbench_kernels::scan::{Rows, attend, top_k, top_k_in};

const D: usize = 64;
const SLOTS: usize = 4096;
const K: usize = 32;

/// Builds rayon's global pool in a setup (outside the counted region) and
/// checks it has the one thread `main!` asks for.
fn one_thread() {
    assert_eq!(rayon::current_num_threads(), 1, "RAYON_NUM_THREADS=1");
}

/// `n` values in [-0.5, 0.5) from a fixed xorshift: the same on every run.
fn table(n: usize, seed: u32) -> Vec<f32> {
    let mut x = seed.max(1);
    (0..n)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            (x as f32 / u32::MAX as f32) - 0.5
        })
        .collect()
}

/// Keys (also the values), and `nq` queries near the first rows.
fn scan_inputs(nq: usize) -> (Vec<f32>, Vec<f32>) {
    one_thread();
    let keys = table(SLOTS * D, 7);
    let q = keys[..nq * D].iter().map(|v| v * 0.5).collect();
    (keys, q)
}

fn rows(keys: &[f32], width: usize) -> Rows<'_> {
    Rows {
        keys,
        key_width: width,
        values: keys,
        value_width: width,
        occupied: None,
    }
}

#[library_benchmark]
#[bench::batch1(setup = scan_inputs, args = (1))]
#[bench::batch8(setup = scan_inputs, args = (8))]
fn dense_attend(input: (Vec<f32>, Vec<f32>)) -> Vec<f32> {
    let (keys, q) = input;
    let nq = q.len() / D;
    let mut out = vec![0f32; nq * D];
    black_box(attend(&q, nq, rows(&keys, D), 0.125, &mut out));
    out
}

#[library_benchmark]
#[bench::batch1(setup = scan_inputs, args = (1))]
#[bench::batch8(setup = scan_inputs, args = (8))]
fn topk_exact(input: (Vec<f32>, Vec<f32>)) -> Vec<u32> {
    let (keys, q) = input;
    let nq = q.len() / D;
    black_box(top_k(&q, nq, rows(&keys, D), K))
}

/// A product-key half: the k best of 1000 sub-keys 32 wide.
fn subkey_inputs() -> (Vec<f32>, Vec<f32>) {
    one_thread();
    let keys = table(1000 * 32, 11);
    let q = table(32, 13);
    (keys, q)
}

#[library_benchmark]
#[bench::k32(setup = subkey_inputs)]
fn subkey_topk(input: (Vec<f32>, Vec<f32>)) -> Vec<u32> {
    let (keys, q) = input;
    black_box(top_k(&q, 1, rows(&keys, 32), K))
}

fn low_inputs(precision: Precision) -> (LowKeys, Vec<f32>, Vec<bool>) {
    let (keys, q) = scan_inputs(1);
    let mut low = LowKeys::new(precision, SLOTS, D);
    for (f, k) in keys.chunks_exact(D).enumerate() {
        low.set(f, k);
    }
    (low, q, vec![true; SLOTS])
}

// The candidate scan over reduced keys (128 candidates, before the exact
// re-ranking).
#[library_benchmark]
#[bench::f16(setup = low_inputs, args = (Precision::F16))]
#[bench::int8(setup = low_inputs, args = (Precision::Int8))]
fn topk_reduced(input: (LowKeys, Vec<f32>, Vec<bool>)) -> Vec<u32> {
    let (low, q, occupied) = input;
    let view = low.view(0, SLOTS, &occupied);
    black_box(top_k_in(&q, 1, &view, 128))
}

/// A layer over a memory of 1000 slots filled through an append layer, and
/// one query or write input, from the harness's seeded streams.
fn layer_inputs(read: ReadConfig) -> (RetentionLayer, MemoryState, Tensor) {
    one_thread();
    let dev = Device::Cpu;
    let mut cfg = RetentionConfig::new(1000);
    cfg.read = read;
    cfg.write = WriteConfig::append(Evict::Fifo, WriteSource::Last {});
    let map = SeededVarMap::new(VarMap::new(), "instructions", 0);
    let layer = RetentionLayer::new(&cfg, D, map.var_builder(DType::F32, &dev)).unwrap();
    let mut fill = cfg.clone();
    fill.write = WriteConfig::append(Evict::Fifo, WriteSource::Token {});
    let filler = RetentionLayer::new(&fill, D, map.var_builder(DType::F32, &dev)).unwrap();
    let mut mem = layer.new_memory(1, 0, DType::F32, &dev).unwrap();
    let mut rng = stream("instructions", 0, "fill");
    let h = randn_tensor(&mut rng, (1, 1000, D), 1.0, DType::F32, &dev).unwrap();
    filler.write(&h, &mut mem, None).unwrap();
    let x = randn_tensor(&mut rng, (1, 1, D), 1.0, DType::F32, &dev).unwrap();
    // One read and write first: lazily built state (cached shapes, the
    // allocator's first pages) is not what a steady-state call costs.
    layer.read(&x, &mut mem).unwrap();
    (layer, mem, x)
}

#[library_benchmark]
#[bench::dense(setup = layer_inputs, args = (ReadConfig::dense()))]
#[bench::topk32(setup = layer_inputs, args = (ReadConfig::topk(32)))]
fn layer_read(input: (RetentionLayer, MemoryState, Tensor)) -> Tensor {
    let (layer, mut mem, q) = input;
    black_box(layer.read(&q, &mut mem).unwrap().r)
}

#[library_benchmark]
#[bench::append_fifo(setup = layer_inputs, args = (ReadConfig::dense()))]
fn layer_write(input: (RetentionLayer, MemoryState, Tensor)) -> MemoryState {
    let (layer, mut mem, h) = input;
    layer.write(&h, &mut mem, None).unwrap();
    mem
}

library_benchmark_group!(
    name = kernels,
    benchmarks = [dense_attend, topk_exact, subkey_topk, topk_reduced]
);
library_benchmark_group!(name = layer, benchmarks = [layer_read, layer_write]);

main!(
    config = LibraryBenchmarkConfig::default().env("RAYON_NUM_THREADS", "1");
    library_benchmark_groups = kernels, layer
);
