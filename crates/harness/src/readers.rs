//! Every file format retbench reads, behind one entry point for fuzzing:
//! [`read`] writes the bytes to a scratch file and hands it to the reader of
//! that format, exactly as `run`, `report`, `merge` and `memory inspect` do.
//! A reader may refuse (an `Err` naming the file); it must never panic or
//! allocate without bound. `fuzz/` drives it under AFL++; the crashes it
//! finds are kept in `fuzz/regressions/<format>/` and replayed by
//! `crates/harness/tests/fuzz_regressions.rs`.

use std::path::{Path, PathBuf};

/// The formats, as `fuzz/` and the regression folders name them.
pub const FORMATS: [&str; 7] = [
    "suite",
    "snapshot",
    "checkpoint",
    "run_record",
    "results_csv",
    "metrics_json",
    "plan_json",
];

/// Reads `bytes` as `format` from a file under `scratch`; the reader's
/// refusal as text. Panics only where the reader does (a bug).
pub fn read(format: &str, bytes: &[u8], scratch: &Path) -> Result<(), String> {
    let put = |p: PathBuf| -> PathBuf {
        std::fs::create_dir_all(p.parent().unwrap()).expect("scratch folder");
        std::fs::write(&p, bytes).expect("scratch file");
        p
    };
    let folder = crate::RunFolder::new(scratch.join("folder"));
    let text = String::from_utf8_lossy(bytes);
    let e = |e: &dyn std::fmt::Display| e.to_string();
    let cpu = candle_core::Device::Cpu;
    match format {
        "suite" => crate::suite::parse(Path::new("fuzz.yaml"), &text, None)
            .map(drop)
            .map_err(|x| e(&x)),
        "snapshot" => {
            retbench_core::snapshot::load(&put(scratch.join("m.safetensors")), "fuzz", &cpu)
                .map(drop)
                .map_err(|x| e(&x))
        }
        "checkpoint" => {
            let map = candle_nn::VarMap::new();
            retbench_model::checkpoint::load_into(&map, &put(scratch.join("c.safetensors")), "")
                .map(drop)
                .map_err(|x| e(&x))
        }
        "run_record" => crate::folder::verify_run(&put(folder.run_path("r")), None)
            .map(drop)
            .map_err(|x| e(&x)),
        "results_csv" => crate::folder::read_results(&put(folder.results_path()))
            .map(drop)
            .map_err(|x| e(&x)),
        "metrics_json" => {
            put(folder.metrics_path());
            folder.metric_specs().map(drop).map_err(|x| e(&x))
        }
        "plan_json" => {
            put(folder.plan_path());
            folder.plan().map(drop).map_err(|x| e(&x))
        }
        other => panic!("no format {other}"),
    }
}
