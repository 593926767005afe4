//! Every dispatch path this CPU has (`isa::available`: the portable loops,
//! and on AVX-512 hosts the AVX-512 and VNNI kernels), forced in turn
//! through `isa::set_cap`, at the production widths (64, 128), the other
//! kernel widths (16, 32) and widths no kernel has (7, 40, 100), against
//! an f64 reference: the dense attend (few queries, row by row, and the
//! batched matrix-product path), exact top-k, and the f16 / int8 candidate
//! scans. The cap is process-wide, so this binary holds one test.

use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use rand_distr::{Distribution, StandardNormal};
use retbench_kernels::isa::{self, Isa};
use retbench_kernels::quant::{LowKeys, Precision};
use retbench_kernels::scan::{self, Rows};

fn data(n: usize, seed: u64) -> Vec<f32> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    (0..n)
        .map(|_| StandardNormal.sample(&mut rng))
        .map(|x: f64| x as f32)
        .collect()
}

fn dot64(a: &[f32], b: &[f32]) -> f64 {
    a.iter().zip(b).map(|(x, y)| *x as f64 * *y as f64).sum()
}

/// Softmax-weighted values over the live rows, in f64.
fn attend_reference(q: &[f32], rows: &Rows<'_>, scale: f32) -> Vec<f64> {
    let (kw, vw, m) = (rows.key_width, rows.value_width, rows.len());
    let live = |j: usize| rows.occupied.is_none_or(|o| o[j]);
    let mut out = Vec::new();
    for qi in q.chunks(kw) {
        let s: Vec<f64> = (0..m)
            .map(|j| scale as f64 * dot64(qi, &rows.keys[j * kw..(j + 1) * kw]))
            .collect();
        let mx = (0..m)
            .filter(|&j| live(j))
            .map(|j| s[j])
            .fold(f64::MIN, f64::max);
        let mut acc = vec![0f64; vw];
        let mut z = 0.0;
        for j in (0..m).filter(|&j| live(j)) {
            let p = (s[j] - mx).exp();
            z += p;
            for (a, v) in acc.iter_mut().zip(&rows.values[j * vw..(j + 1) * vw]) {
                *a += p * *v as f64;
            }
        }
        out.extend(acc.into_iter().map(|a| a / z));
    }
    out
}

fn check_attend(path: Isa, kw: usize, vw: usize, nq: usize, occupied: Option<&[bool]>) {
    let m = 1000;
    let keys = data(m * kw, kw as u64);
    let values = data(m * vw, 1000 + vw as u64);
    let q = data(nq * kw, 7 + nq as u64);
    let rows = Rows {
        keys: &keys,
        key_width: kw,
        values: &values,
        value_width: vw,
        occupied,
    };
    let scale = 1.0 / (kw as f32).sqrt();
    let mut out = vec![0f32; nq * vw];
    let mass = scan::attend(&q, nq, rows, scale, &mut out);
    assert!(mass.iter().all(|&w| w == 1.0));
    let want = attend_reference(&q, &rows, scale);
    for (i, (got, want)) in out.iter().zip(&want).enumerate() {
        assert!(
            (*got as f64 - want).abs() < 1e-4 * want.abs().max(1.0),
            "{} attend kw {kw} vw {vw} nq {nq}: element {i} {got} vs {want}",
            path.name()
        );
    }
}

/// Whether `chosen` are k distinct rows whose exact scores all reach the
/// k-th best exact score, up to rounding.
fn is_top_k(q: &[f32], keys: &[f32], kw: usize, chosen: &[u32], k: usize) -> Result<(), String> {
    let m = keys.len() / kw;
    let score: Vec<f64> = (0..m)
        .map(|j| dot64(q, &keys[j * kw..(j + 1) * kw]))
        .collect();
    let mut sorted = score.clone();
    sorted.sort_by(|a, b| b.total_cmp(a));
    let kth = sorted[k - 1];
    let mut ids: Vec<u32> = chosen.to_vec();
    ids.sort_unstable();
    ids.dedup();
    if ids.len() != k {
        return Err(format!("{} distinct rows, want {k}", ids.len()));
    }
    let slack = 1e-4 * kth.abs().max(1.0);
    match ids.iter().find(|&&j| score[j as usize] < kth - slack) {
        Some(j) => Err(format!(
            "row {j} scores {} below the k-th {kth}",
            score[*j as usize]
        )),
        None => Ok(()),
    }
}

fn check_top_k(path: Isa, kw: usize, nq: usize) {
    let (m, k) = (3000, 10);
    let keys = data(m * kw, 50 + kw as u64);
    let q = data(nq * kw, 60 + nq as u64);
    let rows = Rows {
        keys: &keys,
        key_width: kw,
        values: &keys,
        value_width: kw,
        occupied: None,
    };
    let got = scan::top_k(&q, nq, rows, k);
    for (i, chosen) in got.chunks(k).enumerate() {
        if let Err(e) = is_top_k(&q[i * kw..(i + 1) * kw], &keys, kw, chosen, k) {
            panic!("{} top-k kw {kw} nq {nq} query {i}: {e}", path.name());
        }
    }
}

/// Reduced-precision candidates (4·k per query) hold the exact top k
/// (f16), or nearly all of it (int8, whose per-slot scale costs a little).
fn check_low_keys(path: Isa, precision: Precision, kw: usize) {
    let (m, k, nq) = (2000, 8, 4);
    let keys = data(m * kw, 80 + kw as u64);
    let q = data(nq * kw, 90);
    let mut low = LowKeys::new(precision, m, kw);
    for j in 0..m {
        low.set(j, &keys[j * kw..(j + 1) * kw]);
    }
    let occupied = vec![true; m];
    let cand = scan::top_k_in(&q, nq, &low.view(0, m, &occupied), 4 * k);
    let (mut found, mut total) = (0, 0);
    for (i, c) in cand.chunks(4 * k).enumerate() {
        let qi = &q[i * kw..(i + 1) * kw];
        let score: Vec<f64> = (0..m)
            .map(|j| dot64(qi, &keys[j * kw..(j + 1) * kw]))
            .collect();
        let mut order: Vec<usize> = (0..m).collect();
        order.sort_by(|&a, &b| score[b].total_cmp(&score[a]));
        found += order[..k]
            .iter()
            .filter(|&&j| c.contains(&(j as u32)))
            .count();
        total += k;
    }
    let recall = found as f64 / total as f64;
    let floor = if precision == Precision::F16 {
        1.0
    } else {
        0.95
    };
    assert!(
        recall >= floor,
        "{} {precision:?} kw {kw}: candidates hold {recall} of the exact top k",
        path.name()
    );
}

#[test]
fn every_dispatch_path_agrees_with_an_f64_reference() {
    let paths = isa::available();
    assert_eq!(paths[0], Isa::Portable, "the portable path runs everywhere");
    for &path in &paths {
        isa::set_cap(Some(path));
        assert_eq!(isa::current(), path);
        let mut some = vec![true; 1000];
        some.iter_mut().step_by(3).for_each(|o| *o = false);
        for (kw, vw) in [
            (16, 16),
            (32, 32),
            (64, 64),
            (128, 128),
            (128, 64),
            (64, 128),
        ] {
            for nq in [1, 3, 8, 20] {
                check_attend(path, kw, vw, nq, None);
            }
            check_attend(path, kw, vw, 2, Some(&some));
        }
        for w in [7, 40, 100] {
            check_attend(path, w, w, 1, None);
            check_attend(path, w, w, 9, Some(&some));
        }
        for kw in [16, 32, 64, 128, 7, 40, 100] {
            check_top_k(path, kw, 1);
            check_top_k(path, kw, 5);
        }
        for kw in [16, 64, 128, 40] {
            check_low_keys(path, Precision::F16, kw);
            check_low_keys(path, Precision::Int8, kw);
        }
    }
    isa::set_cap(None);
    println!(
        "paths run: {}",
        paths
            .iter()
            .map(|p| p.name())
            .collect::<Vec<_>>()
            .join(", ")
    );
}
