//! Quick timing of the scan kernels at 1e6 × 64 on one thread, beside the
//! STREAM triad: `cargo run --release -p retbench-core --example scan_speed`
//! (arguments: query counts, default 1 and 64). Top-k also over f16 and int8
//! copies of the keys (`core::quant`), without the exact re-ranking; the
//! k best of 1000 × 32 sub-keys (a product-key half); and the multiply-add
//! rate of a large matrix product on this core.
use retbench_kernels::quant::{LowKeys, Precision};
use retbench_kernels::scan::{Rows, attend, top_k, top_k_in};
use std::time::Instant;

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn main() {
    let (m, d) = (1_000_000usize, 64usize);
    let mut x = 1u32;
    let mut keys: Vec<f32> = Vec::with_capacity(m * d);
    keys.extend((0..m * d).map(|_| {
        x ^= x << 13;
        x ^= x >> 17;
        x ^= x << 5;
        (x as f32 / u32::MAX as f32) - 0.5
    }));
    let q: Vec<f32> = keys[..64 * d].iter().map(|v| v * 0.5).collect();
    let rows = Rows {
        keys: &keys,
        key_width: d,
        values: &keys,
        value_width: d,
        occupied: None,
    };
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(1)
        .build()
        .unwrap();
    pool.install(|| {
        let n = 32 << 20;
        let (mut b, mut c, mut a) = (
            Vec::with_capacity(n),
            Vec::with_capacity(n),
            Vec::with_capacity(n),
        );
        b.resize(n, 1f32);
        c.resize(n, 2f32);
        a.resize(n, 0f32);
        let mut t = vec![];
        for _ in 0..5 {
            let s = Instant::now();
            for ((x, y), z) in a.iter_mut().zip(&b).zip(&c) {
                *x = y + 3.0 * z;
            }
            t.push(s.elapsed().as_secs_f64());
            std::hint::black_box(&a);
        }
        let triad = 12.0 * n as f64 / t.iter().cloned().fold(f64::INFINITY, f64::min) / 1e9;
        let bytes = (m * d * 4) as f64;
        println!(
            "triad {triad:.1} GB/s; roofline for 1 pass {:.1} ms",
            bytes / triad / 1e6
        );
        // A product-key half: the k best of 1000 sub-keys 32 wide (L2).
        let table = &keys[..1000 * 32];
        let sub = Rows {
            keys: table,
            key_width: 32,
            values: table,
            value_width: 32,
            occupied: None,
        };
        let s = Instant::now();
        let reps = if std::env::var_os("SUBKEYS_ONLY").is_some() {
            1_000_000
        } else {
            10_000
        };
        for r in 0..reps {
            std::hint::black_box(top_k(
                &keys[(r % 10_000) * 32..(r % 10_000 + 1) * 32],
                1,
                sub,
                32,
            ));
        }
        println!(
            "top_k of 1000 x 32 sub-keys: {:.2} µs",
            s.elapsed().as_secs_f64() * 1e6 / reps as f64
        );
        if std::env::var_os("SUBKEYS_ONLY").is_some() {
            return;
        }
        // This core's multiply-add rate in a large matrix product (the
        // ceiling of a batched exact read, which needs 2·nq·d·m of them).
        let (ga, gb) = (&keys[..2048 * 256], &keys[2048 * 256..4096 * 256]);
        let mut gout = vec![0f32; 2048 * 2048];
        let ts: Vec<f64> = (0..5)
            .map(|_| {
                let s = Instant::now();
                retbench_kernels::scan::products(ga, 2048, gb, 2048, 256, &mut gout);
                s.elapsed().as_secs_f64()
            })
            .collect();
        println!(
            "gemm 2048 x 2048 x 256: {:.1} G multiply-adds/s",
            2048.0 * 2048.0 * 256.0 / median(ts) / 1e9
        );
        let which: Vec<usize> = std::env::args()
            .skip(1)
            .map(|a| a.parse().unwrap())
            .collect();
        // One pass that only reads: the bandwidth a scan can hope for.
        let read_only = || {
            let s = Instant::now();
            let mut acc = [0f32; 32];
            for c in keys.chunks_exact(32) {
                for l in 0..32 {
                    acc[l] += c[l];
                }
            }
            std::hint::black_box(acc);
            s.elapsed().as_secs_f64() * 1e3
        };
        for nq in if which.is_empty() {
            vec![1usize, 64]
        } else {
            which.clone()
        } {
            let mut out = vec![0f32; nq * d];
            // Interleaved, so that the ratios compare calls made under the
            // same load (this machine's bandwidth drifts by tens of %).
            let (mut tr, mut ta, mut tk) = (vec![], vec![], vec![]);
            for _ in 0..11 {
                tr.push(read_only());
                let s = Instant::now();
                attend(&q[..nq * d], nq, rows, 0.125, &mut out);
                ta.push(s.elapsed().as_secs_f64() * 1e3);
                let s = Instant::now();
                std::hint::black_box(top_k(&q[..nq * d], nq, rows, 32));
                tk.push(s.elapsed().as_secs_f64() * 1e3);
            }
            let ratio = |x: &[f64]| median(x.iter().zip(&tr).map(|(x, r)| r / x).collect());
            let (r, t) = (median(tr.clone()), median(ta.clone()));
            println!(
                "read-only sum: {r:.2} ms, {:.2} of triad",
                bytes / (r / 1e3) / 1e9 / triad
            );
            println!(
                "attend nq={nq}: {t:.2} ms/call, {:.3} ms/query, {:.2} of triad, {:.2} of read-only",
                t / nq as f64,
                bytes / (t / 1e3) / 1e9 / triad,
                ratio(&ta)
            );
            let t = median(tk.clone());
            println!(
                "top_k nq={nq}: {t:.2} ms/call, {:.3} ms/query, {:.2} of read-only",
                t / nq as f64,
                ratio(&tk)
            );
            for p in [Precision::F16, Precision::Int8] {
                let mut low = LowKeys::new(p, m, d);
                for (f, k) in keys.chunks_exact(d).enumerate() {
                    low.set(f, k);
                }
                let occupied = vec![true; m];
                let view = low.view(0, m, &occupied);
                let ts: Vec<f64> = (0..9)
                    .map(|_| {
                        let s = Instant::now();
                        std::hint::black_box(top_k_in(&q[..nq * d], nq, &view, 128));
                        s.elapsed().as_secs_f64() * 1e3
                    })
                    .collect();
                let t = median(ts);
                println!(
                    "top_k {p:?} (128 candidates) nq={nq}: {t:.2} ms/call, {:.3} ms/query",
                    t / nq as f64
                );
            }
        }
    });
}
