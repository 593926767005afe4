//! Training throughput (tokens/s, median over steps) of the reference shape
//! at d_model 64 and 128, without and with retention; the same numbers as
//! `retbench train-bench`, for profiling the model crate alone
//! (`perf record -g target/release/examples/throughput 30`).
//!
//! `cargo run --release -p retbench --example throughput [STEPS]`

// The binary's allocator tuning, shared by path (it is not a library API).
#[path = "../src/alloc.rs"]
mod alloc;

fn main() -> anyhow::Result<()> {
    alloc::keep_freed_memory();
    if std::env::var_os("CANDLE_NUM_THREADS").is_none() {
        // As `retbench train-bench` does: candle's spinning elementwise pool
        // would take the cores from the fused kernels' threads.
        // SAFETY: before any other thread exists.
        unsafe { std::env::set_var("CANDLE_NUM_THREADS", "1") };
    }
    let steps: usize = std::env::args()
        .nth(1)
        .map(|s| s.parse())
        .transpose()?
        .unwrap_or(20);
    println!("| d_model | retention | tokens/s (median of {steps} steps) |\n|---|---|---|");
    use retbench_model::bench::{BenchRetention, train_throughput};
    for d in [64, 128] {
        for retention in [None, Some(BenchRetention::REFERENCE)] {
            let mut rates = train_throughput(d, retention, steps)?;
            rates.sort_by(f64::total_cmp);
            let label = retention.map_or("none".to_string(), |r| format!("block 1, {}", r.label()));
            println!("| {d} | {label} | {:.0} |", rates[rates.len() / 2]);
        }
    }
    Ok(())
}
