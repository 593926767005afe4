#!/usr/bin/env bash
# Compiles every committed reports/<suite>/summary.tex inside a minimal
# document with pdflatex (Debian: texlive-latex-base texlive-latex-recommended),
# so a change to the LaTeX tables cannot ship text LaTeX refuses.
set -euo pipefail
cd "$(dirname "$0")/.."
command -v pdflatex >/dev/null || { echo "pdflatex not found (apt install texlive-latex-base texlive-latex-recommended)" >&2; exit 2; }
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
status=0
for tex in reports/*/summary.tex; do
  suite="$(basename "$(dirname "$tex")")"
  printf '\\documentclass{article}\n\\usepackage[utf8]{inputenc}\n\\usepackage{booktabs,longtable}\n\\begin{document}\n\\input{%s}\n\\end{document}\n' "$PWD/$tex" > "$work/$suite.tex"
  if (cd "$work" && timeout 600 pdflatex -interaction=nonstopmode -halt-on-error "$suite.tex" > "$suite.log" 2>&1); then
    echo "$suite: $(grep -o '[0-9]* pages' "$work/$suite.log" | head -1)"
  else
    echo "$suite: pdflatex failed:" >&2
    grep -m5 '^!' "$work/$suite.log" >&2 || tail -20 "$work/$suite.log" >&2
    status=1
  fi
done
exit "$status"
