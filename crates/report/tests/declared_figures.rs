//! A suite's declared figures (`figures:` in its YAML, carried in
//! `plan.json`): one figure per panel value, one line per line value, the
//! runs outside every panel drawn in each, `where` keeping only matching
//! runs, and no figure per value of a slice with many values.

mod common;

#[test]
fn declared_figures_split_panels_name_lines_and_share_references() {
    let dir = common::run_folder("declfig", "drift");
    common::write_plan(
        &dir,
        serde_json::json!({
            "suite": "t",
            "figures": [
                { "metric": "accuracy", "by": "writes",
                  "lines": ["retention.gate"], "panels": ["task.noise"] },
                { "metric": "recent_accuracy", "by": "writes",
                  "lines": ["task.noise"], "where": { "retention.gate": { "kind": "none" } } },
            ],
        }),
    );
    let mut csv = String::from(
        "run_id,suite,variant,seed,metric,slice,step,value,task.noise,retention.gate\n",
    );
    let gates = [
        r#""{""kind"":""none""}""#,
        r#""{""kind"":""feedback"",""threshold"":0.5}""#,
    ];
    let mut n = 0;
    for (variant, noise, gate) in [
        ("grid", "0.1", gates[0]),
        ("grid", "0.1", gates[1]),
        ("grid", "0.5", gates[0]),
        ("grid", "0.5", gates[1]),
        ("no_memory", "", ""),
    ] {
        for seed in 0..2 {
            for w in 0..20 {
                let v = 1.0 / (1.0 + w as f64) + seed as f64 * 0.01;
                for metric in ["accuracy", "recent_accuracy"] {
                    csv.push_str(&format!(
                        "r{n},t,{variant},{seed},{metric},writes={w},,{v},{noise},{gate}\n"
                    ));
                }
            }
            n += 1;
        }
    }
    std::fs::write(dir.join("results.csv"), csv).unwrap();
    let out = retbench_report::report(&dir).unwrap();
    let names = common::figure_names(&out);
    for want in [
        "accuracy_by_writes_noise_0.1.svg",
        "accuracy_by_writes_noise_0.5.svg",
    ] {
        assert!(names.iter().any(|n| n == want), "{want} missing: {names:?}");
    }
    assert!(
        !names.iter().any(|n| n.starts_with("accuracy_writes")),
        "20 slice values: no figure per value ({names:?})"
    );
    assert!(
        !names.iter().any(|n| n == "accuracy_by_writes.svg"),
        "the declared figure replaces the generic one"
    );
    let svg =
        std::fs::read_to_string(dir.join("figures/accuracy_by_writes_noise_0.5.svg")).unwrap();
    for line in ["gate=none", "gate=feedback(threshold=0.5)", "no_memory"] {
        assert!(svg.contains(line), "{line} is a line of the panel");
    }
    assert!(
        svg.contains("noise=0.5") && !svg.contains("noise=0.1"),
        "titled by its panel"
    );
    // A figure the suite no longer declares is gone after the next report;
    // other files in the folder stay.
    std::fs::write(dir.join("figures/notes.txt"), "mine").unwrap();
    let mut plan: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.join("plan.json")).unwrap()).unwrap();
    plan["figures"].as_array_mut().unwrap().remove(0);
    std::fs::write(dir.join("plan.json"), serde_json::to_vec(&plan).unwrap()).unwrap();
    retbench_report::report(&dir).unwrap();
    assert!(
        !dir.join("figures/accuracy_by_writes_noise_0.5.svg")
            .exists()
    );
    assert!(
        dir.join("figures/accuracy_by_writes.svg").exists(),
        "the generic one again"
    );
    assert!(dir.join("figures/recent_accuracy_by_writes.svg").exists());
    assert!(dir.join("figures/notes.txt").exists());
    std::fs::remove_dir_all(dir).unwrap();
}
