# Thin wrappers over cargo / retbench; `cargo install just` to use them.
# Every recipe builds and runs in release: candle in debug is too slow.

default:
    @just --list

# Run the test suite (what CI runs).
test:
    cargo test --workspace --release

# Lints CI holds the tree to.
lint:
    cargo fmt --all -- --check
    cargo clippy --workspace --all-targets --release -- -D warnings

fmt:
    cargo fmt --all

# Criterion micro-benchmarks of memory read/write (1e2..1e5 slots).
bench:
    cargo bench -p retbench-core

# List backends, options and suites.
list:
    cargo run --release -- list

# Medians of the last bench run as a Markdown table.
bench-table:
    python3 scripts/bench_table.py
