//! The slice path of reads (`infer::no_grad`) against the tensor path: the
//! same R for every read backend, key mode, head count and bias setting,
//! over partly and fully occupied memories of several batches; and the
//! one-scan top-k ranking against ranking every score.

mod common;

use candle_core::{DType, Tensor};
use common::*;
use retbench_core::infer::{grad_enabled, no_grad};
use retbench_core::rng::{randn_tensor, stream};
use retbench_core::*;

fn filled(layer: &RetentionLayer, slots: usize, b: usize, writes: usize, seed: u64) -> MemoryState {
    let mut mem = layer.new_memory(b, 0, DType::F32, &DEV).unwrap();
    let mut rng = stream("infer", seed, "fill");
    let h = randn_tensor(
        &mut rng,
        (b, writes.min(slots), layer.d_model()),
        1.0,
        DType::F32,
        &DEV,
    )
    .unwrap();
    layer.write(&h, &mut mem, None).unwrap();
    mem
}

#[test]
fn slice_reads_match_tensor_reads() {
    let d = 32;
    for slots in [5, 40, 3000] {
        for read in reads(slots) {
            for keys in [KeyMode::Recompute, KeyMode::Cached, KeyMode::Int8] {
                for heads in [1, 4] {
                    for (b, t) in [(1, 1), (2, 3), (1, 20)] {
                        let mut c = RetentionConfig::new(slots);
                        c.heads = heads;
                        c.read = read;
                        c.keys = keys;
                        c.write = WriteConfig::append(Evict::Fifo, WriteSource::Token {});
                        let (layer, _) = layer(&c, d, DType::F32);
                        for writes in [slots / 2, slots] {
                            let mut mem = filled(&layer, slots, b, writes, slots as u64);
                            mem.record_usage(false);
                            let mut rng = stream("infer", 1, "query");
                            let h =
                                randn_tensor(&mut rng, (b, t, d), 1.0, DType::F32, &DEV).unwrap();
                            let want = layer.read(&h, &mut mem).unwrap();
                            let got = no_grad(|| layer.read(&h, &mut mem)).unwrap();
                            assert_eq!(want.selection, got.selection, "{}", label(&c));
                            let diff = (&want.r - &got.r)
                                .unwrap()
                                .abs()
                                .unwrap()
                                .max_all()
                                .unwrap();
                            let diff: f32 = diff.to_scalar().unwrap();
                            assert!(
                                diff < 1e-4,
                                "{} slots {slots} b {b} t {t} writes {writes}: {diff}",
                                label(&c)
                            );
                        }
                    }
                }
            }
        }
    }
}

#[test]
fn no_grad_is_scoped_and_restored() {
    assert!(grad_enabled());
    no_grad(|| {
        assert!(!grad_enabled());
        no_grad(|| assert!(!grad_enabled()));
        assert!(!grad_enabled());
    });
    assert!(grad_enabled());
    let r = std::panic::catch_unwind(|| no_grad(|| panic!("inside")));
    assert!(r.is_err());
    assert!(grad_enabled());
}

#[test]
fn an_empty_memory_reads_zero_on_the_slice_path() {
    let c = RetentionConfig::new(50);
    let (layer, _) = layer(&c, 16, DType::F32);
    let mut mem = layer.new_memory(2, 0, DType::F32, &DEV).unwrap();
    let h = Tensor::ones((2, 3, 16), DType::F32, &DEV).unwrap();
    let r = no_grad(|| layer.read(&h, &mut mem)).unwrap().r;
    // W_O's bias (zero-initialised here) is all an empty read adds.
    let want = layer.read(&h, &mut mem).unwrap().r;
    assert_eq!(r.to_vec3::<f32>().unwrap(), want.to_vec3::<f32>().unwrap());
}
