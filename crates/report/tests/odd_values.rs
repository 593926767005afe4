//! A report never hangs, aborts or allocates without bound on odd values:
//! a varied parameter of 0, inf or NaN on the log x axis, and metric values
//! of 0, negative, inf or NaN on log and bounded y axes.

use std::sync::mpsc;
use std::time::Duration;

mod common;

#[test]
fn odd_values_on_log_axes_are_left_out_not_looped_on() {
    let dir = common::run_folder("odd", "scaling");
    let mut csv =
        String::from("run_id,suite,variant,seed,metric,slice,step,value,retention.slots\n");
    let slots = ["0", "inf", "NaN", "-5", "100", "1000"];
    let values = ["0", "-1", "inf", "NaN", "3.5", "1e-300", "1e300"];
    let mut n = 0;
    for s in slots {
        for (seed, v) in values.iter().enumerate() {
            for (metric, slice) in [
                ("read_us_p50", "batch=1"),
                ("assoc_accuracy", "eps=0"),
                ("relative_output_error", ""),
            ] {
                csv.push_str(&format!("r{n},odd,grid,{seed},{metric},{slice},,{v},{s}\n"));
            }
            n += 1;
        }
    }
    // Clean values at odd x (before the fix, x = inf spun forever), and
    // clean points beside them, which must still be drawn.
    for s in ["0", "inf", "NaN", "-5", "10000", "100000"] {
        for seed in 0..3 {
            for (metric, slice) in [("read_us_p50", "batch=1"), ("assoc_accuracy", "eps=0")] {
                csv.push_str(&format!("c{n},odd,grid,{seed},{metric},{slice},,0.5,{s}\n"));
                n += 1;
            }
        }
    }
    std::fs::write(dir.join("results.csv"), csv).unwrap();
    let (tx, rx) = mpsc::channel();
    let d = dir.clone();
    std::thread::spawn(move || {
        tx.send(retbench_report::report(&d).map(|o| o.figures.len()))
            .ok();
    });
    let out = rx
        .recv_timeout(Duration::from_secs(120))
        .expect("the report hung on odd values");
    let figures = out.unwrap();
    assert!(
        figures >= 4,
        "the finite points still make figures: {figures}"
    );
    std::fs::remove_dir_all(dir).unwrap();
}
