//! The run folder has one owner: `harness::folder` names its files, and no
//! other source file joins their names onto a path (a reader elsewhere
//! would parse them by string keys, which is what `RunFolder` replaced).

#[test]
fn only_the_run_folder_names_its_files() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let names = [
        "plan.json",
        "metrics.json",
        "results.csv",
        "failures.csv",
        "runs",
        "failures",
    ];
    let mut offenders = Vec::new();
    for krate in std::fs::read_dir(&root).unwrap().flatten() {
        let src = krate.path().join("src");
        let mut stack = vec![src];
        while let Some(dir) = stack.pop() {
            let Ok(entries) = std::fs::read_dir(&dir) else {
                continue;
            };
            for e in entries.flatten() {
                let p = e.path();
                if p.is_dir() {
                    stack.push(p);
                } else if p.extension().is_some_and(|x| x == "rs")
                    && !p.ends_with("harness/src/folder.rs")
                {
                    let text = std::fs::read_to_string(&p).unwrap();
                    for n in names {
                        if text.contains(&format!("join(\"{n}\")")) {
                            offenders.push(format!("{}: join(\"{n}\")", p.display()));
                        }
                    }
                }
            }
        }
    }
    assert!(
        offenders.is_empty(),
        "use RunFolder instead: {offenders:#?}"
    );
}
