//! Every input the fuzzer ever crashed a reader with (kept under
//! `fuzz/regressions/<format>/`), and every seed of its corpus
//! (`fuzz/corpus/<format>/`), is read again: a refusal is fine, a panic
//! fails. `scripts/fuzz.sh` adds the crashes it finds.

use std::path::Path;

use retbench_harness::readers::{FORMATS, read};

#[test]
fn no_kept_input_makes_a_reader_panic() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fuzz");
    let scratch = std::env::temp_dir().join(format!("retbench-regress-{}", std::process::id()));
    let mut seen = 0;
    for format in FORMATS {
        for kind in ["regressions", "corpus"] {
            let Ok(entries) = std::fs::read_dir(root.join(kind).join(format)) else {
                continue;
            };
            for entry in entries {
                let path = entry.unwrap().path();
                let bytes = std::fs::read(&path).unwrap();
                let outcome = std::panic::catch_unwind(|| read(format, &bytes, &scratch));
                assert!(
                    outcome.is_ok(),
                    "{} made the {format} reader panic",
                    path.display()
                );
                seen += 1;
            }
        }
    }
    let _ = std::fs::remove_dir_all(&scratch);
    assert!(
        seen >= FORMATS.len(),
        "the seed corpus is missing: {seen} inputs"
    );
}
