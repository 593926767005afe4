//! Indexed and reduced-precision reads against exact top-k: an IVF index
//! that probes every list, and f16/int8 keys, must select exactly what the
//! exact scan selects, through fills and evictions; the index must list
//! every occupied slot once; configs that cannot work are refused.

mod common;

use candle_core::DType;
use common::*;
use retbench_core::infer::no_grad;
use retbench_core::read::IvfIndex;
use retbench_core::rng::{randn_tensor, stream};
use retbench_core::*;

fn config(slots: usize, read: ReadConfig, keys: KeyMode, heads: usize) -> RetentionConfig {
    let mut c = RetentionConfig::new(slots);
    c.read = read;
    c.keys = keys;
    c.heads = heads;
    c.write = WriteConfig::append(Evict::Fifo, WriteSource::Token {});
    c
}

/// Writes `n` random rows, `per` a call, into `mem` through `layer`.
fn write_rows(layer: &RetentionLayer, mem: &mut MemoryState, n: usize, per: usize, seed: u64) {
    let mut rng = stream("indexed", seed, "rows");
    let mut left = n;
    while left > 0 {
        let t = per.min(left);
        let h = randn_tensor(
            &mut rng,
            (mem.batch(), t, layer.d_model()),
            1.0,
            DType::F32,
            &DEV,
        )
        .unwrap();
        layer.write(&h, mem, None).unwrap();
        left -= t;
    }
}

fn selections(
    approx: &RetentionLayer,
    exact: &RetentionLayer,
    mem: &mut MemoryState,
    exact_mem: &mut MemoryState,
    seed: u64,
) -> (Selection, Selection) {
    let mut rng = stream("indexed", seed, "queries");
    let h = randn_tensor(
        &mut rng,
        (mem.batch(), 5, approx.d_model()),
        1.0,
        DType::F32,
        &DEV,
    )
    .unwrap();
    let got = no_grad(|| approx.read(&h, mem)).unwrap().selection;
    let want = no_grad(|| exact.read(&h, exact_mem)).unwrap().selection;
    (got, want)
}

#[test]
fn ivf_probing_every_list_is_exact_through_evictions() {
    let d = 32;
    let (slots, lists) = (600, 6);
    for heads in [1, 2] {
        let ivf = ReadConfig::of(ReadKind::Ivf {
            k: 8,
            lists: Some(lists),
            probe: lists,
        });
        let c = config(slots, ivf, KeyMode::Cached, heads);
        c.validate().unwrap();
        let (layer, map) = layer(&c, d, DType::F32);
        let exact_cfg = config(slots, ReadConfig::topk(8), KeyMode::Cached, heads);
        let exact = RetentionLayer::new(&exact_cfg, d, map.var_builder(DType::F32, &DEV)).unwrap();
        let mut mem = layer.new_memory(2, 0, DType::F32, &DEV).unwrap();
        mem.record_usage(false);
        // Below the clustering threshold (32 rows a list) reads are exact
        // scans; then the index takes over, then evictions follow.
        for (step, n) in [(0, 100), (1, 400), (2, 700)] {
            write_rows(&layer, &mut mem, n, 64, step);
            let mut exact_mem = mem.deep_clone().unwrap();
            let index = mem
                .index()
                .and_then(|i| i.as_any().downcast_ref::<IvfIndex>())
                .expect("the ivf read keeps its index");
            assert_eq!(index.ready(), step > 0, "step {step}");
            let (got, want) = selections(&layer, &exact, &mut mem, &mut exact_mem, step);
            assert_eq!(got, want, "heads {heads} step {step}");
        }
        // Every occupied slot is listed exactly once.
        let index = mem
            .index()
            .unwrap()
            .as_any()
            .downcast_ref::<IvfIndex>()
            .unwrap();
        for b in 0..2 {
            let mut listed = index.listed(b);
            listed.sort_unstable();
            let occupied: Vec<u32> = (0..slots as u32)
                .filter(|&i| mem.meta().occupied[b * slots + i as usize])
                .collect();
            assert_eq!(listed, occupied, "memory {b}");
        }
    }
}

#[test]
fn reduced_keys_hold_the_keys_and_rank_like_exact_keys_through_evictions() {
    let d = 32;
    let slots = 1000;
    for keys in [KeyMode::F16, KeyMode::Int8] {
        for heads in [1, 2] {
            let c = config(slots, ReadConfig::topk(4), keys, heads);
            let (layer, map) = layer(&c, d, DType::F32);
            // The reference keeps f32 keys of the same contents.
            let exact_cfg = config(slots, ReadConfig::topk(4), KeyMode::Cached, heads);
            let exact =
                RetentionLayer::new(&exact_cfg, d, map.var_builder(DType::F32, &DEV)).unwrap();
            let mut mem = layer.new_memory(2, 0, DType::F32, &DEV).unwrap();
            let mut exact_mem = exact.new_memory(2, 0, DType::F32, &DEV).unwrap();
            mem.record_usage(false);
            exact_mem.record_usage(false);
            for (step, n) in [(0, 300), (1, 1200)] {
                write_rows(&layer, &mut mem, n, 100, step + 10);
                write_rows(&exact, &mut exact_mem, n, 100, step + 10);
                let low = mem.low_keys().expect("reduced keys are kept");
                assert_eq!(low.pending(), 0);
                let want: Vec<f32> = exact_mem
                    .keys()
                    .unwrap()
                    .flatten_all()
                    .unwrap()
                    .to_vec1()
                    .unwrap();
                let w = low.width();
                for f in 0..2 * slots {
                    let key = &want[f * w..(f + 1) * w];
                    let max = key.iter().fold(0f32, |a, x| a.max(x.abs()));
                    for (a, b) in low.get(f).iter().zip(key) {
                        assert!(
                            (a - b).abs() <= max / 200.0,
                            "{keys:?} slot {f}: {a} vs {b}"
                        );
                    }
                }
                let (got, want) = selections(&layer, &exact, &mut mem, &mut exact_mem, step);
                assert_eq!(got, want, "{keys:?} heads {heads} step {step}");
            }
            assert_eq!(
                mem.bytes_per_slot(),
                4 * d
                    + 37
                    + layer.d_model() * if keys == KeyMode::F16 { 2 } else { 1 }
                    + if keys == KeyMode::Int8 { 8 } else { 0 }
            );
        }
    }
}

#[test]
fn ivf_needs_cached_keys_and_append_writes() {
    let ivf = ReadConfig::of(ReadKind::Ivf {
        k: 4,
        lists: None,
        probe: 2,
    });
    let err = config(64, ivf, KeyMode::Recompute, 1)
        .validate()
        .unwrap_err();
    assert!(err.to_string().contains("keys: cached"), "{err}");
    let mut c = config(64, ivf, KeyMode::Cached, 1);
    c.write = WriteConfig::attention(0.5, true, WriteSource::Token {});
    let err = c.validate().unwrap_err();
    assert!(err.to_string().contains("append"), "{err}");
    let mut c = config(64, ivf, KeyMode::Cached, 1);
    c.read = ReadConfig::of(ReadKind::Ivf {
        k: 4,
        lists: Some(65),
        probe: 2,
    });
    let err = c.validate().unwrap_err();
    assert!(err.to_string().contains("read.lists"), "{err}");
}

fn product(k: usize) -> ReadConfig {
    ReadConfig::of(ReadKind::ProductKeys { k })
}

#[test]
fn product_keys_read_what_their_key_addressed_and_agree_across_paths() {
    let d = 16;
    let slots = 64; // 8 sub-keys a half
    let c = config(slots, product(4), KeyMode::Recompute, 1);
    c.validate().unwrap();
    let (layer, _) = layer(&c, d, DType::F32);
    let mut mem = layer.new_memory(2, 0, DType::F32, &DEV).unwrap();
    mem.record_usage(false);
    write_rows(&layer, &mut mem, 40, 10, 3);
    // Fewer slots than writes were filled: writes landing on one address
    // replace each other, and each landed where its key points.
    let filled = (0..2).map(|b| mem.occupied(b)).sum::<usize>();
    assert!(filled < 80 && filled > 8, "{filled}");
    let mut rng = stream("indexed", 7, "queries");
    let h = randn_tensor(&mut rng, (2, 3, d), 1.0, DType::F32, &DEV).unwrap();
    // The slice path, the tensor path and inspection read the same.
    let fast = no_grad(|| layer.read(&h, &mut mem)).unwrap();
    let slow = layer.read(&h, &mut mem).unwrap();
    assert_eq!(fast.selection, slow.selection);
    let diff: f32 = (&fast.r - &slow.r)
        .unwrap()
        .abs()
        .unwrap()
        .max_all()
        .unwrap()
        .to_scalar()
        .unwrap();
    assert!(diff < 1e-4, "{diff}");
    let seen = layer.inspect_read(&h, &mem).unwrap();
    let diff: f32 = (&seen.r - &slow.r)
        .unwrap()
        .abs()
        .unwrap()
        .max_all()
        .unwrap()
        .to_scalar()
        .unwrap();
    assert!(diff < 1e-4, "{diff}");
    // Only occupied slots are selected.
    let Selection::Rows { k, slots: chosen } = &fast.selection else {
        panic!("product keys select rows")
    };
    for (row, s) in chosen.chunks(*k).enumerate() {
        for &i in s.iter().filter(|&&i| i != Selection::PAD) {
            assert!(mem.meta().occupied[(row / 3) * slots + i as usize]);
        }
    }
}

#[test]
fn product_sub_keys_get_gradients_through_the_read() {
    let d = 16;
    let c = config(64, product(4), KeyMode::Recompute, 1);
    let (layer, map) = layer(&c, d, DType::F32);
    let mut mem = layer.new_memory(1, 0, DType::F32, &DEV).unwrap();
    write_rows(&layer, &mut mem, 30, 10, 4);
    let mut rng = stream("indexed", 8, "queries");
    let h = randn_tensor(&mut rng, (1, 2, d), 1.0, DType::F32, &DEV).unwrap();
    let r = layer.read(&h, &mut mem).unwrap().r;
    let grads = r.sqr().unwrap().sum_all().unwrap().backward().unwrap();
    let data = map.varmap().data().lock().unwrap();
    let mut touched = 0;
    for (name, v) in data.iter() {
        if name.contains("pk_c") {
            let g = grads
                .get(v.as_tensor())
                .expect("a sub-key table has a gradient");
            let norm: f32 = g.sqr().unwrap().sum_all().unwrap().to_scalar().unwrap();
            assert!(norm > 0.0, "{name}");
            touched += 1;
        }
    }
    assert_eq!(touched, 2);
}

#[test]
fn product_keys_need_a_square_memory_one_head_and_append_writes() {
    let err = config(60, product(4), KeyMode::Recompute, 1)
        .validate()
        .unwrap_err();
    assert!(err.to_string().contains("square"), "{err}");
    let err = config(64, product(9), KeyMode::Recompute, 1)
        .validate()
        .unwrap_err();
    assert!(err.to_string().contains("k ≤ 8"), "{err}");
    let err = config(64, product(4), KeyMode::Recompute, 2)
        .validate()
        .unwrap_err();
    assert!(err.to_string().contains("one head"), "{err}");
    let mut c = config(64, product(4), KeyMode::Recompute, 1);
    c.write = WriteConfig::attention(0.5, true, WriteSource::Token {});
    assert!(c.validate().unwrap_err().to_string().contains("append"));
}

/// The variable `suffix` names in `map` (the layer's own scope), as f32.
fn var(map: &SeededVarMap, suffix: &str) -> Vec<f32> {
    let data = map.varmap().data().lock().unwrap();
    let (_, v) = data
        .iter()
        .find(|(name, _)| name.ends_with(suffix))
        .unwrap_or_else(|| panic!("no variable {suffix}"));
    v.as_tensor()
        .flatten_all()
        .unwrap()
        .to_vec1::<f32>()
        .unwrap()
}

/// Indices of the `k` largest values (ties to the lower index).
fn top(values: &[f32], k: usize) -> Vec<usize> {
    let mut idx: Vec<usize> = (0..values.len()).collect();
    idx.sort_by(|&a, &b| values[b].total_cmp(&values[a]).then(a.cmp(&b)));
    idx.truncate(k);
    idx
}

/// Product keys against a brute force written from their definition alone:
/// the query q = W_Q·LN(h) scores each half's sub-keys, the k best of each
/// half make a k×k grid of slots i·n + j, and the read takes the k best
/// occupied ones by q₁·c1_i + q₂·c2_j. Any other slot numbering (j·n + i)
/// or candidate rule selects other slots.
#[test]
fn product_keys_select_the_brute_force_top_k_of_their_grid() {
    let (d, n, k) = (16, 8, 3);
    let c = config(n * n, product(k), KeyMode::Recompute, 1);
    let (layer, map) = layer(&c, d, DType::F32);
    let mut mem = layer.new_memory(1, 0, DType::F32, &DEV).unwrap();
    mem.record_usage(false);
    write_rows(&layer, &mut mem, 120, 10, 11);
    let (c1, c2, wq) = (
        var(&map, "pk_c1"),
        var(&map, "pk_c2"),
        var(&map, "w_q.weight"),
    );
    let (gamma, beta) = (var(&map, "ln_q.weight"), var(&map, "ln_q.bias"));
    let half = d / 2;
    let mut rng = stream("indexed", 12, "queries");
    let rows = 12;
    let h = randn_tensor(&mut rng, (1, rows, d), 1.0, DType::F32, &DEV).unwrap();
    let sel = no_grad(|| layer.read(&h, &mut mem)).unwrap().selection;
    let Selection::Rows { k: kk, slots } = &sel else {
        panic!("product keys select rows")
    };
    assert_eq!(*kk, k);
    let hv = h.flatten_all().unwrap().to_vec1::<f32>().unwrap();
    let occupied = &mem.meta().occupied;
    let mut checked = 0;
    for r in 0..rows {
        let x = &hv[r * d..(r + 1) * d];
        let mean = x.iter().sum::<f32>() / d as f32;
        let var_ = x.iter().map(|v| (v - mean).powi(2)).sum::<f32>() / d as f32;
        let ln: Vec<f32> = (0..d)
            .map(|i| (x[i] - mean) / (var_ + 1e-5).sqrt() * gamma[i] + beta[i])
            .collect();
        let q: Vec<f32> = (0..d)
            .map(|o| (0..d).map(|i| wq[o * d + i] * ln[i]).sum())
            .collect();
        let score = |table: &[f32], qh: &[f32]| -> Vec<f32> {
            (0..n)
                .map(|i| (0..half).map(|e| table[i * half + e] * qh[e]).sum())
                .collect()
        };
        let (s1, s2) = (score(&c1, &q[..half]), score(&c2, &q[half..]));
        let mut grid: Vec<(f32, usize)> = Vec::new();
        for &i in &top(&s1, k) {
            for &j in &top(&s2, k) {
                if occupied[i * n + j] {
                    grid.push((s1[i] + s2[j], i * n + j));
                }
            }
        }
        grid.sort_by(|a, b| b.0.total_cmp(&a.0));
        // Near-ties at a boundary may fall either way in f32: skip those rows.
        let margin = |v: &[f32], at: usize| {
            v.len() <= at || {
                let t = top(v, at + 1);
                (v[t[at - 1]] - v[t[at]]).abs() > 1e-4
            }
        };
        let grid_margin = grid.len() <= k || (grid[k - 1].0 - grid[k].0).abs() > 1e-4;
        if !(margin(&s1, k) && margin(&s2, k) && grid_margin) {
            continue;
        }
        let mut want: Vec<u32> = grid.iter().take(k).map(|&(_, s)| s as u32).collect();
        want.sort_unstable();
        let got: Vec<u32> = slots[r * k..(r + 1) * k]
            .iter()
            .copied()
            .filter(|&s| s != Selection::PAD)
            .collect();
        assert_eq!(got, want, "query row {r}");
        checked += 1;
    }
    assert!(checked >= rows / 2, "only {checked} rows without near-ties");
}

/// Recall@k of `got` against `want` (selections of the same rows).
fn recall(got: &Selection, want: &Selection) -> f64 {
    let (Selection::Rows { k, slots: g }, Selection::Rows { slots: w, .. }) = (got, want) else {
        panic!("both select rows")
    };
    let (mut hit, mut n) = (0, 0);
    for (gr, wr) in g.chunks(*k).zip(w.chunks(*k)) {
        for s in wr.iter().filter(|&&s| s != Selection::PAD) {
            n += 1;
            hit += gr.contains(s) as usize;
        }
    }
    hit as f64 / n as f64
}

/// An IVF read that probes fewer lists than it has misses some of the exact
/// top-k, finds more as it probes more, and with half the lists finds at
/// least half of it: probing half the lists at random would find half in
/// expectation, and probing the lists nearest the query must do no worse.
#[test]
fn ivf_recall_rises_with_probe_and_half_the_lists_find_half() {
    let (d, slots, lists, k) = (16, 2048, 16, 8);
    let exact_cfg = config(slots, ReadConfig::topk(k), KeyMode::Cached, 1);
    let ivf = |probe| {
        let read = ReadConfig::of(ReadKind::Ivf {
            k,
            lists: Some(lists),
            probe,
        });
        config(slots, read, KeyMode::Cached, 1)
    };
    let (exact, map) = layer(&exact_cfg, d, DType::F32);
    let mut exact_mem = exact.new_memory(1, 0, DType::F32, &DEV).unwrap();
    exact_mem.record_usage(false);
    write_rows(&exact, &mut exact_mem, slots, 256, 21);
    let mut rates = Vec::new();
    for probe in [1, 2, 4, 8, 16] {
        let c = ivf(probe);
        let approx = RetentionLayer::new(&c, d, map.var_builder(DType::F32, &DEV)).unwrap();
        let mut mem = approx.new_memory(1, 0, DType::F32, &DEV).unwrap();
        mem.record_usage(false);
        write_rows(&approx, &mut mem, slots, 256, 21);
        let mut want_mem = exact_mem.deep_clone().unwrap();
        let (got, want) = selections(&approx, &exact, &mut mem, &mut want_mem, 22);
        rates.push((probe, recall(&got, &want)));
    }
    let at = |p: usize| rates.iter().find(|r| r.0 == p).unwrap().1;
    assert_eq!(at(16), 1.0, "{rates:?}");
    assert!(
        at(1) < 1.0,
        "probing one list of 16 found everything: {rates:?}"
    );
    assert!(at(8) >= 0.5, "{rates:?}");
    assert!(at(1) <= at(4) && at(4) <= at(16), "{rates:?}");
    eprintln!("recall@{k} by probe: {rates:?}");
}

/// The same read, bit for bit, whatever the number of kernel threads: the
/// batched dense and exact reads (16 queries), IVF and product keys, on the
/// graph-free path and the tensor path.
#[test]
fn reads_are_bit_identical_across_thread_counts() {
    // Memories of several parallel chunks (the scans split 4096 slots a
    // task), most of them filled.
    let d = 16;
    let ivf = ReadConfig::of(ReadKind::Ivf {
        k: 8,
        lists: Some(32),
        probe: 5,
    });
    let cases = [
        ("dense", 12_000, ReadConfig::dense(), KeyMode::Recompute),
        ("topk", 12_000, ReadConfig::topk(8), KeyMode::Recompute),
        ("topk-int8", 12_000, ReadConfig::topk(8), KeyMode::Int8),
        ("ivf", 12_000, ivf, KeyMode::Cached),
        ("product", 96 * 96, product(4), KeyMode::Recompute),
    ];
    for (name, slots, read, keys) in cases {
        let c = config(slots, read, keys, 1);
        let (layer, _) = layer(&c, d, DType::F32);
        let mut mem = layer.new_memory(2, 0, DType::F32, &DEV).unwrap();
        mem.record_usage(false);
        write_rows(&layer, &mut mem, 10_000, 1000, 31);
        let mut rng = stream("indexed", 32, "queries");
        let h = randn_tensor(&mut rng, (2, 16, d), 1.0, DType::F32, &DEV).unwrap();
        let bits = |threads: usize, graph: bool| {
            let pool = rayon::ThreadPoolBuilder::new()
                .num_threads(threads)
                .build()
                .unwrap();
            let mut m = mem.deep_clone().unwrap();
            let out = pool.install(|| {
                if graph {
                    layer.read(&h, &mut m)
                } else {
                    no_grad(|| layer.read(&h, &mut m))
                }
            });
            let out = out.unwrap();
            let r: Vec<u32> = out
                .r
                .flatten_all()
                .unwrap()
                .to_vec1::<f32>()
                .unwrap()
                .iter()
                .map(|x| x.to_bits())
                .collect();
            (r, out.selection)
        };
        for graph in [false, true] {
            let one = bits(1, graph);
            for threads in [2, 3, 4] {
                assert!(
                    bits(threads, graph) == one,
                    "{name} (graph {graph}): {threads} threads differ from 1"
                );
            }
        }
    }
}

/// A write under product keys lands in the slot its own key addresses,
/// found here by brute force over all n² slots from the stored content:
/// key = W_K·v, slot = argmax over (i, j) of key₁·c1_i + key₂·c2_j, numbered
/// i·n + j.
#[test]
fn product_key_writes_land_where_their_key_points() {
    let (d, n) = (16, 8);
    let c = config(n * n, product(3), KeyMode::Recompute, 1);
    let (layer, map) = layer(&c, d, DType::F32);
    let (c1, c2, wk) = (
        var(&map, "pk_c1"),
        var(&map, "pk_c2"),
        var(&map, "w_k.weight"),
    );
    let half = d / 2;
    let mut rng = stream("indexed", 41, "rows");
    for row in 0..12 {
        let mut mem = layer.new_memory(1, 0, DType::F32, &DEV).unwrap();
        let h = randn_tensor(&mut rng, (1, 1, d), 1.0, DType::F32, &DEV).unwrap();
        layer.write(&h, &mut mem, None).unwrap();
        let slot = (0..n * n)
            .find(|&s| mem.meta().occupied[s])
            .expect("one slot written");
        assert_eq!(mem.occupied(0), 1);
        let content = mem
            .content()
            .flatten_all()
            .unwrap()
            .to_vec1::<f32>()
            .unwrap();
        let v = &content[slot * d..(slot + 1) * d];
        let key: Vec<f32> = (0..d)
            .map(|o| (0..d).map(|i| wk[o * d + i] * v[i]).sum())
            .collect();
        let mut best = (f32::NEG_INFINITY, usize::MAX);
        for i in 0..n {
            for j in 0..n {
                let s: f32 = (0..half)
                    .map(|e| key[e] * c1[i * half + e] + key[half + e] * c2[j * half + e])
                    .sum();
                if s > best.0 {
                    best = (s, i * n + j);
                }
            }
        }
        assert_eq!(slot, best.1, "row {row}");
    }
}
