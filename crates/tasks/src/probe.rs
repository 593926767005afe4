//! Machine probes. `triad_bandwidth_gbps` measures sustainable memory
//! bandwidth with a STREAM-style triad (a = b + s·c over arrays far larger
//! than cache), so that read latencies can be put against a roofline.

use std::hint::black_box;
use std::time::Instant;

/// Best-of-`reps` triad bandwidth in GB/s over arrays of `len` f32 each,
/// counting 3 × 4 bytes per element (two loads, one store) as STREAM does.
/// `threads` splits the arrays across that many scoped threads.
pub fn triad_bandwidth_gbps(len: usize, reps: usize, threads: usize) -> f64 {
    let threads = threads.max(1);
    let b = vec![1.0f32; len];
    let c = vec![2.0f32; len];
    let mut a = vec![0.0f32; len];
    let s = black_box(3.0f32);
    let chunk = len.div_ceil(threads);
    let mut best = f64::INFINITY;
    for _ in 0..reps.max(1) {
        let start = Instant::now();
        std::thread::scope(|scope| {
            for ((a, b), c) in a
                .chunks_mut(chunk)
                .zip(b.chunks(chunk))
                .zip(c.chunks(chunk))
            {
                scope.spawn(move || {
                    for ((x, y), z) in a.iter_mut().zip(b).zip(c) {
                        *x = y + s * z;
                    }
                });
            }
        });
        best = best.min(start.elapsed().as_secs_f64());
        black_box(&a);
    }
    (3 * 4 * len) as f64 / best / 1e9
}

/// Best-of-`reps` bandwidth in GB/s of one read-only pass (a sum) over
/// `len` f32 on the current thread: what a scan that streams memory once
/// can reach at best, the peer of one-pass reads.
pub fn read_bandwidth_gbps(len: usize, reps: usize) -> f64 {
    let data = vec![1.0f32; len];
    let mut best = f64::INFINITY;
    for _ in 0..reps.max(1) {
        let start = Instant::now();
        let mut acc = [0f32; 32];
        for c in data.chunks_exact(32) {
            for l in 0..32 {
                acc[l] += c[l];
            }
        }
        black_box(acc);
        best = best.min(start.elapsed().as_secs_f64());
    }
    (4 * len) as f64 / best / 1e9
}

#[cfg(test)]
mod tests {
    #[test]
    fn triad_reports_a_positive_finite_bandwidth() {
        let gbps = super::triad_bandwidth_gbps(1 << 20, 2, 2);
        assert!(gbps.is_finite() && gbps > 0.0, "{gbps}");
        let gbps = super::read_bandwidth_gbps(1 << 20, 2);
        assert!(gbps.is_finite() && gbps > 0.0, "{gbps}");
    }
}
