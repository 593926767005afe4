#!/usr/bin/env python3
"""The code's shape, measured from the source: each crate's share of the
lines, import circles between files of one crate, and functions longer
than a limit outside tests. Used for the house-keeping targets of
docs/ARCHITECTURE.md ("Shape of the code"); prints a report, and with
--check exits 1 when a crate holds over 30% of the code, a crate has an
import circle, or a function outside tests runs past 120 lines.

    python3 scripts/code_shape.py [--check]

Counting: lines of `.rs` files under crates/*/src (tests/, benches/ and
examples/ are not the crate's code), blank and comment lines included. An
arrow a -> b is any `crate::b` path in file a (`use` or inline), where b is
the top-level module it names; `mod.rs` and a file named like a folder are
one module. A function runs from its `fn` line to the matching closing
brace; functions inside `#[cfg(test)]` modules are skipped.
"""
import os, re, sys
from collections import defaultdict

ROOT = os.environ.get('ROOT') or os.path.join(os.path.dirname(os.path.abspath(__file__)), '..')
LIMIT = 120


def crate_files(crate):
    src = os.path.join(ROOT, 'crates', crate, 'src')
    for d, _, fs in os.walk(src):
        for f in fs:
            if f.endswith('.rs'):
                p = os.path.join(d, f)
                yield os.path.relpath(p, src), open(p).read()


def module_of(rel):
    """Top-level module of a file path relative to src/ (lib/main: root)."""
    head = rel.split(os.sep)[0]
    name = head[:-3] if head.endswith('.rs') else head
    return None if name in ('lib', 'main') else name


def strip_tests(text):
    """The text without `#[cfg(test)] mod … { … }` blocks."""
    out, i = [], 0
    for m in re.finditer(r'#\[cfg\(test\)\]\s*(pub(\(crate\))?\s+)?mod\s+\w+\s*\{', text):
        if m.start() < i:
            continue
        out.append(text[i:m.start()])
        depth, j = 1, m.end()
        while depth and j < len(text):
            depth += {'{': 1, '}': -1}.get(text[j], 0)
            j += 1
        i = j
    out.append(text[i:])
    return ''.join(out)


def cycles(edges):
    """Strongly connected components with more than one module (Tarjan)."""
    index, low, stack, on, out, n = {}, {}, [], set(), [], [0]

    def visit(v):
        index[v] = low[v] = n[0]; n[0] += 1
        stack.append(v); on.add(v)
        for w in edges[v]:
            if w not in index:
                visit(w); low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop(); on.discard(w); comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))
    for v in list(edges):
        if v not in index:
            visit(v)
    return out


def long_functions(rel, text):
    lines = text.split('\n')
    found = []
    for i, l in enumerate(lines):
        m = re.match(r'\s*(pub(\([^)]*\))?\s+)?(const\s+)?(async\s+)?(unsafe\s+)?fn\s+(\w+)', l)
        if not m:
            continue
        depth, started, j = 0, False, i
        while j < len(lines):
            s = re.sub(r'"(\\.|[^"\\])*"', '""', lines[j])
            s = re.sub(r"'(\\.|[^'\\])'", "' '", s).split('//')[0]
            for c in s:
                if c == '{':
                    depth += 1; started = True
                elif c == '}':
                    depth -= 1
            if started and depth == 0:
                break
            if not started and s.rstrip().endswith(';'):
                break
            j += 1
        n = j - i + 1
        if started and n > LIMIT:
            found.append((n, f'{rel}:{i + 1} {m.group(6)}'))
    return found


def main():
    check = '--check' in sys.argv
    crates = sorted(os.listdir(os.path.join(ROOT, 'crates')))
    sizes, circles, longs = {}, {}, []
    for c in crates:
        edges, total = defaultdict(set), 0
        for rel, text in crate_files(c):
            total += text.count('\n')
            body = strip_tests(text)
            code = re.sub(r'//.*', '', body)  # doc links are not imports
            a = module_of(rel)
            if a:
                edges[a]
                for b in re.findall(r'\bcrate::(\w+)', code):
                    if b != a:
                        edges[a].add(b)
                # `use crate::{x, y}` groups
                for grp in re.findall(r'\bcrate::\{([^}]*)\}', code):
                    for b in re.findall(r'^\s*(\w+)', grp) + re.findall(r',\s*(\w+)', grp):
                        if b != a:
                            edges[a].add(b)
            longs += [(n, f'crates/{c}/src/{w}') for n, w in long_functions(rel, body)]
        sizes[c] = total
        circles[c] = cycles(edges)
    all_lines = sum(sizes.values())
    print('| crate | lines | share | import circles |\n|---|---|---|---|')
    bad = False
    for c in crates:
        share = sizes[c] / all_lines
        circ = '; '.join(' <-> '.join(x) for x in circles[c]) or 'none'
        print(f'| {c} | {sizes[c]} | {share:.1%} | {circ} |')
        bad |= share > 0.30 or bool(circles[c])
    longs.sort(reverse=True)
    print(f'\n{len(longs)} functions over {LIMIT} lines outside tests:')
    for n, w in longs:
        print(f'  {n:4d}  {w}')
    if check and (bad or longs):
        sys.exit(1)


main()
