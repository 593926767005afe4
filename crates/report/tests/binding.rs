//! A learned suite's report opens with the binding table: the budget of
//! each config comes from its planned `train.steps`, a run that never
//! bound (time_to_bind 0) counts as censored at that budget, and the
//! shares are given at every budget of the suite and its doublings.

mod common;

#[test]
fn the_summary_gives_binding_rates_and_censored_medians_per_config() {
    let dir = common::run_folder("binding", "recall");
    // d_model 64: 4 of 4 bound (400, 500, 500, 2500) within 3000 steps;
    // d_model 128: 1 of 3 within 1500 steps.
    let runs: [(&str, u64, u64, u64); 7] = [
        ("a0", 0, 64, 400),
        ("a1", 1, 64, 500),
        ("a2", 2, 64, 500),
        ("a3", 3, 64, 2500),
        ("b0", 0, 128, 0),
        ("b1", 1, 128, 700),
        ("b2", 2, 128, 0),
    ];
    let mut csv = String::from("run_id,suite,variant,seed,metric,slice,step,value,model.d_model\n");
    let mut plan = Vec::new();
    for (id, seed, width, ttb) in runs {
        csv += &format!("{id},t,grid,{seed},time_to_bind,,,{ttb},{width}\n");
        let steps = if width == 64 { 3000 } else { 1500 };
        plan.push(serde_json::json!({
            "run_id": id, "config_hash": "h", "config": { "train": { "steps": steps } },
        }));
    }
    std::fs::write(dir.join("results.csv"), csv).unwrap();
    common::write_plan(&dir, serde_json::json!({ "suite": "t", "runs": plan }));
    retbench_report::report(&dir).unwrap();
    let md = std::fs::read_to_string(dir.join("summary.md")).unwrap();
    let table: Vec<&str> = md
        .lines()
        .skip_while(|l| *l != "## Binding")
        .filter(|l| l.starts_with("| "))
        .take(3)
        .collect();
    assert_eq!(
        table[0],
        "| config | budget | bound | rate [95% Wilson] | median step | mean step of bound | by 1500 | by 3000 | per seed |"
    );
    assert_eq!(
        table[1],
        "| d_model=64 | 3000 | 4 of 4 | 1.00 [0.51, 1.00] | 500 | 975 | 0.75 | 1.00 | s0 400, s1 500, s2 500, s3 2500 |"
    );
    assert_eq!(
        table[2],
        "| d_model=128 | 1500 | 1 of 3 | 0.33 [0.06, 0.79] | never | 700 | 0.33 | – | s0 never, s1 700, s2 never |"
    );
    // The per-metric table gives the censored median, never a mean of 0s.
    let medians: Vec<&str> = md
        .lines()
        .skip_while(|l| !l.starts_with("## time_to_bind: median over seeds"))
        .filter(|l| l.starts_with("| d_model"))
        .take(2)
        .collect();
    assert!(
        medians[0].starts_with("| d_model=64 |  | 4 | 500.0 | – |"),
        "{}",
        medians[0]
    );
    assert!(
        medians[1].starts_with("| d_model=128 |  | 3 | never | – |"),
        "{}",
        medians[1]
    );
    let csv = std::fs::read_to_string(dir.join("summary.csv")).unwrap();
    assert!(csv.lines().any(|l| l.ends_with(",median_censored")));
    let html = std::fs::read_to_string(dir.join("report.html")).unwrap();
    assert!(html.contains("<h2 id=\"binding\">Binding</h2>"));
    assert!(html.contains("<a href=\"#binding\">"), "in the contents");
    assert!(html.contains("<td>1 of 3</td>"));
}
