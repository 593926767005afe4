#!/usr/bin/env bash
# Draws a report's figures (and its paper set) as PDF (`retbench report --pdf`, on a scratch copy)
# and checks each with poppler (Debian: poppler-utils): it renders
# (pdftoppm) and its text is text (pdftotext finds the figure's title).
# Usage: scripts/check_pdf.sh [REPORT_DIR]   (default reports/recall)
set -euo pipefail
cd "$(dirname "$0")/.."
src="${1:-reports/recall}"
for tool in pdftoppm pdftotext; do
  command -v "$tool" >/dev/null || { echo "$tool not found (apt install poppler-utils)" >&2; exit 2; }
done
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
cp -r "$src" "$work/report"
cargo run --release --quiet -- report --pdf "$work/report" >/dev/null
n=0
shopt -s nullglob
for pdf in "$work"/report/figures/*.pdf "$work"/report/paper/*.pdf; do
  svg="${pdf%.pdf}.svg"
  pdftoppm -r 30 -png -singlefile "$pdf" "$work/page" || { echo "$pdf does not render" >&2; exit 1; }
  test -s "$work/page.png" || { echo "$pdf rendered nothing" >&2; exit 1; }
  # The title is the SVG's first text element (its text on the next line).
  title="$(awk '/<text/ { getline; print; exit }' "$svg" | sed 's/^ *//; s/ *$//; s/&amp;/\&/g; s/&lt;/</g; s/&gt;/>/g')"
  test -n "$title" || { echo "$svg: no title found" >&2; exit 1; }
  pdftotext "$pdf" "$work/text.txt"
  tr -s ' \n' ' ' < "$work/text.txt" > "$work/flat.txt"
  grep -qF "$title" "$work/flat.txt" || { echo "$pdf: title \"$title\" is not text" >&2; exit 1; }
  n=$((n + 1))
done
echo "$n PDF figures of $src render and keep their text"
