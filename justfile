# Thin wrappers over cargo / retbench; `cargo install just` to use them.
# Every recipe builds and runs in release: candle in debug is too slow.

default:
    @just --list

# Every suite in suites/ with its full profile, then the reports: only from
# committed code (the reports it writes are committed; see scripts/provenance.py).
bench *args:
    cargo run --release -- bench --require-clean {{args}}

# Every suite's smoke profile (what CI runs), then the reports.
smoke:
    cargo run --release -- bench --profile smoke

# Run the test suite (the README's test command, what CI runs).
test:
    cargo test --workspace --release

# Which committed reports hold runs whose code the repository cannot give
# back (CI runs it with --check).
provenance:
    python3 scripts/provenance.py

# Lints CI holds the tree to.
lint:
    cargo fmt --all -- --check
    cargo clippy --workspace --all-targets --release -- -D warnings

fmt:
    cargo fmt --all

# Summary, Markdown, HTML and figures of run folders from their committed
# results (every folder in reports/ with a plan.json, and reports/index.html
# across them; or the folders named); re-runs nothing, and a second run
# changes no byte (CI checks both).
report *dirs:
    #!/usr/bin/env bash
    set -euo pipefail
    dirs="{{dirs}}"
    if [ -z "$dirs" ]; then
      dirs="$(for d in reports/*/; do if [ -f "$d/plan.json" ]; then echo "$d"; fi; done)"
    fi
    cargo build --release --quiet
    if [ -z "{{dirs}}" ]; then
      ./target/release/retbench report --index reports/index.html $dirs
    else
      ./target/release/retbench report $dirs
    fi

# Criterion micro-benchmarks of memory read/write (1e2..1e5 slots).
microbench:
    cargo bench -p retbench-core --bench memory

# Medians of the last microbench run as a Markdown table.
bench-table:
    python3 scripts/bench_table.py

# List backends, options, tasks and suites.
list:
    cargo run --release -- list

# Regenerate docs/AXES.md from the code's catalogue (CI checks it is current).
axes:
    cargo run --release --quiet -- list --format markdown > docs/AXES.md

# Rerun every suite's smoke profile and rewrite reports/baselines/ (commit
# that on its own, saying why the baseline moved).
baseline:
    scripts/baselines.sh refresh

# Rerun every suite's smoke profile and compare it with reports/baselines/
# (what CI runs; exit 1 on a regression, timings only warn).
check-baselines:
    scripts/baselines.sh check

# Compare two run folders: a Markdown table, exit 1 on a regression.
compare baseline current *args:
    cargo run --release -- compare {{baseline}} {{current}} {{args}}

# Save criterion's wall-clock results of the kernel benches as a baseline.
bench-save name="main":
    cargo bench -p retbench-core --bench memory -- --save-baseline {{name}}

# The kernel benches against a saved criterion baseline.
bench-compare name="main":
    cargo bench -p retbench-core --bench memory -- --baseline {{name}}

# Instruction counts of the hot kernels under Callgrind (gungraun) against
# reports/baselines/instructions.json: exit 1 when one grew beyond 2% (what
# CI runs; needs valgrind, installs gungraun-runner once).
bench-instructions:
    scripts/instructions.sh check

# Rewrite reports/baselines/instructions.json (commit it on its own, saying
# why the counts moved).
baseline-instructions:
    scripts/instructions.sh refresh

# Compile every committed summary.tex with pdflatex (needs texlive).
check-latex:
    scripts/check_latex.sh

# Draw a report's figures as PDF on a scratch copy and check they render
# with their text selectable (needs poppler-utils).
check-pdf dir="reports/recall":
    scripts/check_pdf.sh {{dir}}

# Open every committed report.html in headless Chromium and check each figure
# is laid out visible with its caption (needs chromium; SCREENSHOTS=DIR keeps
# a screenshot of each page).
check-html *dirs:
    scripts/check_html.sh {{dirs}}

# Submit the scaling and recall smoke profiles to a real single-node Slurm
# cluster (installed and started by scripts/slurm_cluster.sh; needs root or
# sudo) and hold the results to local runs; resume after a cancelled task.
check-slurm:
    cargo build --release
    RETBENCH=target/release/retbench scripts/slurm_check.sh
