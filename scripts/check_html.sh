#!/usr/bin/env bash
# Opens each report.html in headless Chromium (Debian: chromium) and checks
# that every figure is visible: the page is loaded from a scratch copy with
# a small probe script added (the committed page has none), the probe measures
# each <figure>'s inline SVG as laid out (width and height > 0, not hidden,
# inside the page, its title text drawn with a non-empty box) and writes the
# verdict into the DOM, which Chromium prints (--dump-dom). A screenshot of
# the page's top is kept beside the verdict for a human look.
# Usage: scripts/check_html.sh [REPORT_DIR...]   (default: every reports/*/report.html)
# Exit 1 when a figure is missing or not visible, 2 when Chromium is absent
# or a folder has no report.html.
set -euo pipefail
cd "$(dirname "$0")/.."
browser="${CHROMIUM:-$(command -v chromium || command -v google-chrome || command -v chromium-browser || true)}"
test -n "$browser" || { echo "chromium not found (apt install chromium, or set CHROMIUM)" >&2; exit 2; }
if [ $# -eq 0 ]; then
  set -- $(for f in reports/*/report.html; do dirname "$f"; done)
fi
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
probe='<script>
addEventListener("load", () => {
  const bad = [];
  const figs = document.querySelectorAll("figure");
  const page = document.documentElement.getBoundingClientRect();
  for (const f of figs) {
    const svg = f.querySelector("svg");
    const name = f.id || "(unnamed)";
    if (!svg) { bad.push(name + ": no svg"); continue; }
    const r = svg.getBoundingClientRect();
    const s = getComputedStyle(svg);
    if (!(r.width > 0 && r.height > 0)) bad.push(name + ": empty box " + r.width + "x" + r.height);
    if (s.display === "none" || s.visibility !== "visible" || Number(s.opacity) === 0) bad.push(name + ": hidden");
    if (r.right > page.right + 1 || r.left < page.left - 1) bad.push(name + ": outside the page");
    const t = svg.querySelector("text");
    if (!t || !(t.getBBox().width > 0)) bad.push(name + ": no drawn text");
    if (!f.querySelector("figcaption")) bad.push(name + ": no caption");
  }
  const out = document.createElement("pre");
  out.id = "retbench-check";
  out.textContent = JSON.stringify({ figures: figs.length, bad });
  document.body.appendChild(out);
});
</script>'
flags=(--headless --no-sandbox --disable-gpu --disable-quic --no-first-run
  --disable-background-networking --disable-component-update --disable-sync
  --window-size=1200,900 --virtual-time-budget=10000)
failed=0
total=0
for dir in "$@"; do
  page="$dir/report.html"
  test -s "$page" || { echo "$dir: no report.html (run \`retbench report $dir\` first)" >&2; exit 2; }
  name="$(basename "$dir")"
  mkdir -p "$work/$name"
  # The probe goes just before </body>; everything else is byte for byte.
  python3 - "$page" "$work/$name/page.html" "$probe" <<'PY'
import sys
src, dst, probe = sys.argv[1:]
text = open(src, encoding="utf-8").read()
at = text.rfind("</body>")
if at < 0:
    sys.exit(f"{src}: no </body>")
open(dst, "w", encoding="utf-8").write(text[:at] + probe + text[at:])
PY
  expected="$(grep -c '<figure' "$page" || true)"
  "$browser" "${flags[@]}" --user-data-dir="$work/profile" --dump-dom \
    "file://$(realpath "$work/$name/page.html")" > "$work/$name/dom.html" 2> "$work/$name/stderr" || true
  verdict="$(python3 - "$work/$name/dom.html" <<'PY'
import html, json, re, sys
m = re.search(r'<pre id="retbench-check">(.*?)</pre>', open(sys.argv[1], encoding="utf-8").read(), re.S)
print(json.dumps(json.loads(html.unescape(m.group(1)))) if m else "")
PY
)"
  if [ -z "$verdict" ]; then
    echo "$page: Chromium did not run the probe (see its messages below)" >&2
    tail -5 "$work/$name/stderr" >&2
    failed=1
    continue
  fi
  figures="$(python3 -c 'import json,sys; print(json.loads(sys.argv[1])["figures"])' "$verdict")"
  bad="$(python3 -c 'import json,sys; print("\n".join(json.loads(sys.argv[1])["bad"]))' "$verdict")"
  if [ "$figures" != "$expected" ] || [ -n "$bad" ]; then
    echo "$page: $figures of $expected figures laid out; problems:" >&2
    printf '%s\n' "$bad" | head -20 >&2
    failed=1
  else
    echo "$page: all $figures figures visible"
  fi
  total=$((total + figures))
  if [ -n "${SCREENSHOTS:-}" ]; then
    mkdir -p "$SCREENSHOTS"
    "$browser" "${flags[@]}" --user-data-dir="$work/profile" --hide-scrollbars \
      --screenshot="$(realpath "$SCREENSHOTS")/$name.png" "file://$(realpath "$page")" 2>/dev/null || true
  fi
done
echo "$total figures checked in $# reports"
exit "$failed"
