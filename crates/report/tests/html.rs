//! `report.html` is self-contained (every figure inline as SVG, nothing
//! fetched), says what the suite is and where its numbers come from (read
//! from the run records), and the index links every report.

use std::path::Path;

mod common;

fn folder(dir: &Path) {
    common::run_folder_at(dir, "scaling");
    common::write_plan(
        dir,
        serde_json::json!({
            "suite": "tiny", "description": "Reads <fast> & exact.",
        }),
    );
    let mut csv =
        String::from("run_id,suite,variant,seed,metric,slice,step,value,retention.slots\n");
    for (i, slots) in [100, 1000, 10000].into_iter().enumerate() {
        for seed in 0..2 {
            let id = format!("r{i}-s{seed}");
            csv += &format!(
                "{id},tiny,grid,{seed},read_us_p50,batch=1,,{},{slots}\n",
                1.0 + i as f64 + seed as f64 * 0.1
            );
            csv += &format!("{id},tiny,grid,{seed},recall_at_k,,,0.9,{slots}\n");
            // Two commits, two finishing times, one record without a date.
            let mut prov = serde_json::json!({
                "retbench_version": "0.1.0", "git_commit": format!("abc{seed}"),
                "cpu_model": "Test CPU", "rustc_version": "rustc 1.0", "kernels": "fused",
                "jobs": 1, "threads": 1, "wall_seconds": 1800.0,
            });
            if !(i == 2 && seed == 1) {
                prov["finished_unix"] = serde_json::json!(1_764_000_000u64 + 3600 * i as u64);
            }
            std::fs::write(
                dir.join("runs").join(format!("{id}.json")),
                serde_json::to_vec(&serde_json::json!({
                    "run_id": id, "suite": "tiny", "variant": "grid", "seed": seed,
                    "params": {}, "config_hash": "h", "config": {}, "metrics": [],
                    "provenance": prov,
                }))
                .unwrap(),
            )
            .unwrap();
        }
    }
    std::fs::write(dir.join("results.csv"), csv).unwrap();
}

#[test]
fn the_page_inlines_every_figure_and_states_its_provenance() {
    let root = std::env::temp_dir().join(format!("retbench-html-{}", std::process::id()));
    let dir = root.join("tiny");
    folder(&dir);
    let out = retbench_report::report(&dir).unwrap();
    let html = std::fs::read_to_string(dir.join("report.html")).unwrap();
    let svgs = out
        .figures
        .iter()
        .filter(|f| f.extension().is_some_and(|e| e == "svg"))
        .count();
    assert!(svgs >= 2, "a sweep of each metric at least");
    assert_eq!(
        html.matches("<svg").count(),
        svgs,
        "each figure inline, once"
    );
    assert_eq!(html.matches("<figcaption>").count(), svgs);
    assert!(!html.contains("<?xml"), "no XML prologue inside HTML");
    for fetch in ["<img", "<script", "<link", "src=", "url("] {
        assert!(
            !html.contains(fetch),
            "{fetch}: the page must need no other file"
        );
    }
    assert!(html.contains("Reads &lt;fast&gt; &amp; exact."));
    assert!(html.contains("6 runs"));
    assert!(html.contains("commit abc0, abc1"));
    assert!(html.contains("machine Test CPU"));
    assert!(
        html.contains("between 2025-11-24T16:00:00Z and 2025-11-24T18:00:00Z (1 runs undated)"),
        "{}",
        &html[..html.find("<figure").unwrap_or(html.len())]
    );
    assert!(html.contains("3.0 h of run time"));

    let index = root.join("index.html");
    retbench_report::write_index(&index, &[(dir.clone(), out)]).unwrap();
    let page = std::fs::read_to_string(&index).unwrap();
    assert!(page.contains("<a href=\"tiny/report.html\">tiny</a>"));
    assert!(page.contains(&format!("{svgs} figures")));
    assert!(!page.contains("FINDINGS.md"), "no findings beside it yet");

    // Navigation: the index links the findings beside it; a page made for
    // an index links back to it and lists every figure and table.
    std::fs::write(root.join("FINDINGS.md"), "# Findings\n").unwrap();
    let opts = retbench_report::ReportOptions {
        index: Some(index.clone()),
        ..Default::default()
    };
    let out = retbench_report::report_with(&dir, opts).unwrap();
    retbench_report::write_index(&index, &[(dir.clone(), out)]).unwrap();
    let page = std::fs::read_to_string(&index).unwrap();
    assert!(page.contains("<a href=\"FINDINGS.md\">"));
    let linked = std::fs::read_to_string(dir.join("report.html")).unwrap();
    assert!(linked.contains("<a href=\"../index.html\">"));
    let contents = &linked[linked.find("<nav>").unwrap()..linked.find("</nav>").unwrap()];
    assert_eq!(
        contents.matches("<li><a href=\"#").count(),
        svgs + 3,
        "the figures, each figure, both tables"
    );
    for anchor in contents.split("href=\"#").skip(1) {
        let id = &anchor[..anchor.find('"').unwrap()];
        assert!(
            linked.contains(&format!("id=\"{id}\"")),
            "#{id} names a place on the page"
        );
    }

    // A second report changes no byte.
    retbench_report::report(&dir).unwrap();
    let first = std::fs::read(dir.join("report.html")).unwrap();
    retbench_report::report(&dir).unwrap();
    assert_eq!(std::fs::read(dir.join("report.html")).unwrap(), first);

    // With PDFs: one per SVG, a TrueType subset embedded with a
    // ToUnicode map (text stays selectable). (Not byte-reproducible:
    // svg2pdf writes resource dictionaries in hash-map order.)
    let opts = retbench_report::ReportOptions {
        pdf: true,
        ..Default::default()
    };
    let out = retbench_report::report_with(&dir, opts).unwrap();
    let pdfs: Vec<_> = out
        .figures
        .iter()
        .filter(|f| f.extension().is_some_and(|e| e == "pdf"))
        .cloned()
        .collect();
    assert_eq!(pdfs.len(), svgs);
    let bytes = std::fs::read(&pdfs[0]).unwrap();
    assert!(bytes.starts_with(b"%PDF-"));
    let has = |needle: &[u8]| bytes.windows(needle.len()).any(|w| w == needle);
    assert!(has(b"/FontFile2"), "the font is embedded");
    assert!(has(b"/ToUnicode"), "glyphs map back to text");
    assert!(
        !has(b"/Subtype /Image") && !has(b"/Subtype/Image"),
        "vector, not raster"
    );
    // A report without PDFs leaves them.
    retbench_report::report(&dir).unwrap();
    assert!(pdfs[0].is_file());
    std::fs::remove_dir_all(root).unwrap();
}
