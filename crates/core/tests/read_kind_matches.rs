//! ARCHITECTURE.md lists every function (outside tests) that names a read
//! kind (`ReadKind::Dense`, `Topk`, `Ivf`, `ProductKeys`); a new read
//! backend has to touch each of them. This test keeps that list equal to
//! the code, so that the cost of adding a backend is stated truly.

use std::collections::BTreeSet;
use std::path::Path;

/// `file::function` for each function of `crates/*/src` naming a read kind.
fn in_code(root: &Path) -> BTreeSet<String> {
    let kinds = ["Dense", "Topk", "Ivf", "ProductKeys"].map(|k| format!("ReadKind::{k}"));
    let mut found = BTreeSet::new();
    let mut stack = vec![root.join("crates")];
    while let Some(dir) = stack.pop() {
        for e in std::fs::read_dir(&dir).unwrap().flatten() {
            let p = e.path();
            let rel = p
                .strip_prefix(root)
                .unwrap()
                .to_string_lossy()
                .replace('\\', "/");
            if p.is_dir() {
                let parts: Vec<&str> = rel.split('/').collect();
                if parts.len() < 3 || parts[2] == "src" {
                    stack.push(p);
                }
                continue;
            }
            if p.extension().is_none_or(|x| x != "rs") {
                continue;
            }
            let text = std::fs::read_to_string(&p).unwrap();
            let mut function = String::new();
            for line in text.lines() {
                if line.starts_with("#[cfg(test)]") {
                    break;
                }
                if let Some(name) = fn_name(line) {
                    function = name;
                }
                let names_kind = kinds.iter().any(|k| {
                    line.match_indices(k.as_str()).any(|(i, _)| {
                        let next = line[i + k.len()..].chars().next();
                        !next.is_some_and(|c| c.is_alphanumeric() || c == '_')
                    })
                });
                if names_kind {
                    found.insert(format!("{rel}::{function}"));
                }
            }
        }
    }
    found
}

fn fn_name(line: &str) -> Option<String> {
    let t = line.trim_start();
    let t = t.strip_prefix("pub ").unwrap_or(t);
    let t = t
        .strip_prefix("pub(crate) ")
        .or_else(|| t.strip_prefix("pub(super) "))
        .unwrap_or(t);
    let t = t.strip_prefix("const ").unwrap_or(t);
    let rest = t.strip_prefix("fn ")?;
    Some(
        rest.chars()
            .take_while(|c| c.is_alphanumeric() || *c == '_')
            .collect(),
    )
}

/// The list between the markers of ARCHITECTURE.md: each backticked
/// `file::function`, and `::function` after it for the same file.
fn in_docs(root: &Path) -> BTreeSet<String> {
    let doc = std::fs::read_to_string(root.join("docs/ARCHITECTURE.md")).unwrap();
    let start = doc.find("<!-- read-kind matches: begin -->").unwrap();
    let end = doc.find("<!-- read-kind matches: end -->").unwrap();
    let mut listed = BTreeSet::new();
    for line in doc[start..end].lines().filter(|l| l.starts_with("- ")) {
        let mut file = String::new();
        for item in line.split('`').skip(1).step_by(2) {
            match item.split_once("::") {
                Some(("", f)) => listed.insert(format!("{file}::{f}")),
                Some((path, f)) => {
                    file = path.to_string();
                    listed.insert(format!("{path}::{f}"))
                }
                None => continue,
            };
        }
    }
    listed
}

#[test]
fn the_documented_read_kind_matches_are_the_ones_in_the_code() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let (code, docs) = (in_code(&root), in_docs(&root));
    assert!(code.contains("crates/core/src/backends.rs::read_recipe"));
    assert_eq!(
        code, docs,
        "docs/ARCHITECTURE.md's list of read-kind matches differs from the code"
    );
}
