//! The layout check catches each defect the paper-output issue found on
//! the committed figures of an earlier main (copies of them in
//! `fixtures/layout/`), and passes figures made to be read.

use std::path::{Path, PathBuf};

use retbench_report::layout::{Defect, check_svg};

fn fixture(name: &str) -> Vec<Defect> {
    let p = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/layout")
        .join(name);
    check_svg(&p).unwrap()
}

fn count(ds: &[Defect], kind: fn(&Defect) -> bool) -> usize {
    ds.iter().filter(|d| kind(d)).count()
}

#[test]
fn long_config_names_on_a_category_axis_overlap_leave_the_figure_and_have_no_legend() {
    let ds = fixture("frozen_accuracy_gap1.svg");
    assert!(
        count(&ds, |d| matches!(d, Defect::Overlap { .. })) >= 5,
        "{ds:?}"
    );
    assert!(
        count(&ds, |d| matches!(d, Defect::Outside { .. })) >= 2,
        "{ds:?}"
    );
    assert!(ds.contains(&Defect::NoLegend { series: 6 }), "{ds:?}");
}

#[test]
fn a_truncated_legend_repeats_and_a_gap_axis_labels_halves() {
    let ds = fixture("frozen_accuracy_by_gap.svg");
    assert!(count(&ds, |d| matches!(d, Defect::LegendRepeats { .. })) >= 2);
    let halves: Vec<&Defect> = ds
        .iter()
        .filter(|d| matches!(d, Defect::FractionalTick { key, .. } if key == "gap"))
        .collect();
    assert!(!halves.is_empty(), "{ds:?}");
}

#[test]
fn an_axis_without_tick_labels_or_with_two_fails() {
    let ds = fixture("scaling_index_queries_per_s.svg");
    assert!(ds.contains(&Defect::FewTicks {
        axis: "y",
        labels: 0
    }));
    let ds = fixture("scaling_read_roofline_fraction.svg");
    assert_eq!(
        ds,
        vec![Defect::FewTicks {
            axis: "y",
            labels: 2
        }]
    );
}

#[test]
fn nine_series_in_one_panel_are_too_many() {
    let ds = fixture("copy_accuracy_by_len.svg");
    assert!(ds.contains(&Defect::TooManySeries { series: 9 }), "{ds:?}");
}

/// A figure drawn by hand in the shape the report draws: `labels` on the
/// x axis (at the bottom, centred), y ticks, a legend of `legend`, one
/// coloured stroke per series.
fn hand_drawn(x_ticks: &[&str], legend: &[&str], series: usize, x_name: &str) -> PathBuf {
    let mut s = String::from(
        r##"<svg width="600" height="400" viewBox="0 0 600 400" xmlns="http://www.w3.org/2000/svg">
<text x="300" y="5" dy="0.76em" text-anchor="middle" font-family="sans-serif" font-size="18">title</text>
"##,
    );
    for (i, t) in ["0", "0.5", "1"].iter().enumerate() {
        let y = 300 - 100 * i;
        s += &format!(
            r#"<text x="70" y="{y}" dy="0.5ex" text-anchor="end" font-family="sans-serif" font-size="11">{t}</text>
"#
        );
    }
    for (i, t) in x_ticks.iter().enumerate() {
        let x = 100 + 60 * i;
        s += &format!(
            r#"<text x="{x}" y="320" dy="0.76em" text-anchor="middle" font-family="sans-serif" font-size="11">{t}</text>
"#
        );
    }
    s += &format!(
        r#"<text x="250" y="380" dy="-0.5ex" text-anchor="middle" font-family="sans-serif" font-size="13">{x_name}</text>
"#
    );
    for (i, t) in legend.iter().enumerate() {
        let y = 40 + 18 * i;
        s += &format!(
            r#"<text x="480" y="{y}" dy="0.76em" font-family="sans-serif" font-size="11">{t}</text>
"#
        );
    }
    for i in 0..series {
        let c = format!("#{:02X}40{:02X}", 30 + 20 * i, 200 - 15 * i);
        s += &format!(
            r#"<polyline fill="none" stroke="{c}" stroke-width="2" points="100,{y} 300,{y}"/>
"#,
            y = 100 + 10 * i
        );
    }
    s += "</svg>\n";
    let dir = std::env::temp_dir().join(format!("retbench-layout-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let p = dir.join(format!(
        "{x_name}_{}_{}_{series}.svg",
        x_ticks.len(),
        legend.len()
    ));
    std::fs::write(&p, s).unwrap();
    p
}

#[test]
fn a_readable_figure_passes_and_each_rule_can_fail_it() {
    let ok = hand_drawn(&["1", "2", "3", "4"], &["dense", "top-k"], 2, "gap");
    assert_eq!(check_svg(&ok).unwrap(), vec![]);
    let no_legend = hand_drawn(&["1", "2", "3"], &[], 2, "gap");
    assert_eq!(
        check_svg(&no_legend).unwrap(),
        vec![Defect::NoLegend { series: 2 }]
    );
    let halves = hand_drawn(&["1", "1.5", "2"], &["a", "b"], 2, "gap");
    assert_eq!(
        check_svg(&halves).unwrap(),
        vec![Defect::FractionalTick {
            key: "gap".into(),
            tick: "1.5".into()
        }]
    );
    // Two values of a count (gap 0 and 1) are two categories, each
    // labelled; two ticks of a scale are too few to read it.
    let two_gaps = hand_drawn(&["0", "1"], &["a", "b"], 2, "gap");
    assert_eq!(check_svg(&two_gaps).unwrap(), vec![]);
    let two_loads = hand_drawn(&["0", "1"], &["a", "b"], 2, "load");
    assert_eq!(
        check_svg(&two_loads).unwrap(),
        vec![Defect::FewTicks {
            axis: "x",
            labels: 2
        }]
    );
    // The same ticks on a continuous axis are fine.
    let load = hand_drawn(&["1", "1.5", "2"], &["a", "b"], 2, "load");
    assert_eq!(check_svg(&load).unwrap(), vec![]);
    let long = hand_drawn(
        &["a much longer tick label than fits", "b", "c"],
        &["a", "b"],
        2,
        "load",
    );
    assert!(matches!(
        check_svg(&long).unwrap()[..],
        [Defect::Overlap { .. }]
    ));
    let nine: Vec<String> = (0..9).map(|i| format!("s{i}")).collect();
    let nine: Vec<&str> = nine.iter().map(|s| s.as_str()).collect();
    let many = hand_drawn(&["1", "2", "3"], &nine, 9, "gap");
    assert_eq!(
        check_svg(&many).unwrap(),
        vec![Defect::TooManySeries { series: 9 }]
    );
}
