//! Allocator tuning for processes that train or time retention layers.
//! candle allocates a fresh buffer for every op's output and frees it soon
//! after. glibc's malloc serves large buffers with fresh `mmap`s and hands
//! trimmed heap back to the kernel, so every training step pays page faults
//! and kernel zeroing for memory it has just freed: in a `perf` profile of
//! the recall model's training step, 39% of the samples were in the kernel
//! (page faults, `brk`, TLB shootdowns). Raising both thresholds keeps freed
//! memory in the process for reuse; the price is a resident size that stays
//! at the run's high-water mark.

/// The environment variable that turns the tuning off (`default`), for A/B
/// comparisons and for chasing a memory problem.
pub const ENV: &str = "RETBENCH_ALLOCATOR";

/// Keeps freed memory in the process (glibc on Linux); elsewhere, or with
/// `RETBENCH_ALLOCATOR=default`, does nothing. Returns whether it tuned.
/// Call it once at the start of `main`, before threads allocate.
pub fn keep_freed_memory() -> bool {
    if std::env::var(ENV).is_ok_and(|v| v == "default") {
        return false;
    }
    tune()
}

#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn tune() -> bool {
    // 32 MiB is glibc's largest mmap threshold on 64-bit targets; larger
    // buffers (a million-slot memory) still get their own mapping.
    const MMAP_THRESHOLD: libc::c_int = 32 << 20;
    const TRIM_THRESHOLD: libc::c_int = libc::c_int::MAX;
    // SAFETY: mallopt only sets allocator parameters; it is called before
    // the program's worker threads start.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, MMAP_THRESHOLD) == 1
            && libc::mallopt(libc::M_TRIM_THRESHOLD, TRIM_THRESHOLD) == 1
    }
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn tune() -> bool {
    false
}
