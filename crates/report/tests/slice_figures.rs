//! Metrics sliced by a number are drawn against it: one figure per memory
//! size in a slots sweep, one for the variants outside the sweep, each
//! series with every slice value as a point; and those variants also get
//! per-config figures of their own instead of being dropped from the sweep;
//! a metric declared `against` a cost is drawn against it.

mod common;

#[test]
fn a_numeric_slice_becomes_an_axis_and_unswept_variants_are_drawn() {
    let dir = common::run_folder("slicefig", "copy_probe");
    let mut csv =
        String::from("run_id,suite,variant,seed,metric,slice,step,value,retention.slots\n");
    let mut n = 0;
    for (variant, slots) in [("grid", "16"), ("grid", "64"), ("source_mean", "")] {
        for seed in 0..3 {
            csv.push_str(&format!(
                "r{n},t,{variant},{seed},write_us_p50,,,{},{slots}\n",
                2.0 + seed as f64
            ));
            for load in ["0.25", "1", "4"] {
                let v = 1.0 / load.parse::<f64>().unwrap().max(1.0);
                csv.push_str(&format!(
                    "r{n},t,{variant},{seed},copy_exact,load={load},,{v},{slots}\n"
                ));
            }
            n += 1;
        }
    }
    std::fs::write(dir.join("results.csv"), csv).unwrap();
    let out = retbench_report::report(&dir).unwrap();
    let names = common::figure_names(&out);
    for want in [
        "copy_exact_by_load_slots16.svg",
        "copy_exact_by_load_slots64.svg",
        "copy_exact_by_load.svg",
        "configs_copy_exact_load1.svg",
        "copy_exact_load1.svg",
        "copy_exact_load1_vs_write_us_p50.svg",
    ] {
        assert!(names.iter().any(|n| n == want), "{want} missing: {names:?}");
    }
    let svg = std::fs::read_to_string(dir.join("figures/copy_exact_by_load.svg")).unwrap();
    assert!(svg.contains("by load"), "titled by its axis");
    assert!(svg.contains("source_mean"), "the variant is the series");
    std::fs::remove_dir_all(dir).unwrap();
}
