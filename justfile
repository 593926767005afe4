# Thin wrappers over cargo / retbench; `cargo install just` to use them.
# Every recipe builds and runs in release: candle in debug is too slow.

default:
    @just --list

# Every suite in suites/ with its full profile, then the reports.
bench *args:
    cargo run --release -- bench {{args}}

# Every suite's smoke profile (what CI runs), then the reports.
smoke:
    cargo run --release -- bench --profile smoke

# Run the test suite (the README's test command, what CI runs).
test:
    cargo test --workspace --release

# Lints CI holds the tree to.
lint:
    cargo fmt --all -- --check
    cargo clippy --workspace --all-targets --release -- -D warnings

fmt:
    cargo fmt --all

# Summary, Markdown, HTML and figures for a run folder.
report dir:
    cargo run --release -- report {{dir}}

# Criterion micro-benchmarks of memory read/write (1e2..1e5 slots).
microbench:
    cargo bench -p retbench-core

# Medians of the last microbench run as a Markdown table.
bench-table:
    python3 scripts/bench_table.py

# List backends, options, tasks and suites.
list:
    cargo run --release -- list
