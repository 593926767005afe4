//! One AFL++ target per file format: `readers FORMAT` reads inputs as
//! FORMAT through `retbench_harness::readers::read` (see that module); a
//! refusal is fine, a panic or abort is a crash.

fn main() {
    let format = std::env::args().nth(1).expect("usage: readers FORMAT");
    assert!(
        retbench_harness::readers::FORMATS.contains(&format.as_str()),
        "no format {format}"
    );
    let scratch = std::env::temp_dir().join(format!("retbench-fuzz-{}", std::process::id()));
    afl::fuzz!(|data: &[u8]| {
        let _ = retbench_harness::readers::read(&format, data, &scratch);
    });
}
