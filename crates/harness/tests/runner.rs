//! Running plans: resume, force, single ids, failures that never stop a
//! sweep, shards and merge, and quality metrics that do not depend on
//! `--jobs` or `--shard`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use retbench_harness::runner::{Progress, RunOptions, merge, run_plan, run_plan_with};
use retbench_harness::suite::parse;
use retbench_harness::{Plan, RunFolder};
use retbench_tasks::Metric;

const SUITE: &str = "\
name: tiny
base:
  task: { kind: scaling, d: 16, batches: [1], queries: 2, min_reads: 1, warmup: 0, writes: 1, probes: 16, eps: [0.0, 0.3] }
  retention: { slots: 8, read: { kind: dense }, write: { kind: append, evict: fifo } }
seeds: [0, 1]
grid:
  retention.slots: [16, 64]
  retention.read: [{ kind: dense }, { kind: topk, k: 4 }]
";

fn plan() -> Plan {
    parse(Path::new("tiny.yaml"), SUITE, None).unwrap()
}

fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("retbench-runner-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    dir
}

fn opts(out: &Path) -> RunOptions {
    RunOptions {
        out: out.to_path_buf(),
        jobs: Some(1),
        cores: None,
        shard: None,
        only: None,
        force: false,
        replan: false,
        require_clean: false,
        progress: Progress::Quiet,
    }
}

/// run_id → assoc_accuracy values (the quality metric of the scaling task).
fn quality(dir: &Path) -> BTreeMap<String, Vec<(String, u64)>> {
    RunFolder::new(dir)
        .runs(None)
        .unwrap()
        .into_iter()
        .map(|r| {
            let q = r
                .metrics
                .iter()
                .filter(|m| m.metric == "assoc_accuracy" || m.metric == "attention_mass_recall")
                .map(|m| (format!("{}{}", m.metric, m.slice), m.value.to_bits()))
                .collect();
            (r.run_id, q)
        })
        .collect()
}

fn csv_rows(dir: &Path) -> Vec<String> {
    std::fs::read_to_string(dir.join("results.csv"))
        .unwrap()
        .lines()
        .skip(1)
        .map(String::from)
        .collect()
}

#[test]
fn a_second_run_does_nothing_and_force_reruns() {
    let out = scratch("resume");
    let p = plan();
    let first = run_plan(&p, &opts(&out)).unwrap();
    assert_eq!(
        (first.selected, first.skipped, first.succeeded, first.failed),
        (8, 0, 8, 0)
    );
    let rows = csv_rows(&out);
    assert!(!rows.is_empty());
    let again = run_plan(&p, &opts(&out)).unwrap();
    assert_eq!((again.skipped, again.succeeded), (8, 0));
    assert_eq!(csv_rows(&out), rows, "results.csv rebuilt identically");
    let forced = run_plan(
        &p,
        &RunOptions {
            force: true,
            ..opts(&out)
        },
    )
    .unwrap();
    assert_eq!(forced.succeeded, 8);
    assert!(out.join("plan.json").is_file() && out.join("failures.csv").is_file());
    std::fs::remove_dir_all(out).unwrap();
}

#[test]
fn every_record_names_the_hash_of_the_data_it_read() {
    let p = plan();
    let out = scratch("dataset-hash");
    run_plan(&p, &opts(&out)).unwrap();
    let runs = RunFolder::new(&out).runs(None).unwrap();
    let hash = |id: &str| {
        let r = runs.iter().find(|r| r.run_id == id).unwrap();
        r.provenance.dataset_hash.clone().expect("filled")
    };
    for r in &runs {
        let h = r.provenance.dataset_hash.as_deref().unwrap_or_default();
        assert_eq!(h.len(), 64, "{}: a sha256, got {h:?}", r.run_id);
        assert!(h.bytes().all(|b| b.is_ascii_hexdigit()));
    }
    // Scaling data depends on the run's config and seed.
    let ids: Vec<&str> = runs.iter().map(|r| r.run_id.as_str()).collect();
    assert_ne!(hash(ids[0]), hash(ids[1]));
    let _ = std::fs::remove_dir_all(&out);
}

#[test]
fn a_deleted_run_file_is_the_only_run_redone() {
    let out = scratch("missing");
    let p = plan();
    run_plan(&p, &opts(&out)).unwrap();
    let before = csv_rows(&out);
    let victim = &p.runs[3].run_id;
    std::fs::remove_file(RunFolder::new(&out).run_path(victim)).unwrap();
    let again = run_plan(&p, &opts(&out)).unwrap();
    assert_eq!((again.skipped, again.succeeded), (7, 1));
    // Timings differ, but every row is back exactly once, in plan order.
    let after = csv_rows(&out);
    assert_eq!(after.len(), before.len());
    let ids = |rows: &[String]| {
        rows.iter()
            .map(|r| r.split(',').next().unwrap().to_string())
            .collect::<Vec<_>>()
    };
    assert_eq!(ids(&after), ids(&before));
    std::fs::remove_dir_all(out).unwrap();
}

#[test]
fn a_record_made_under_another_default_is_redone_not_reused() {
    let out = scratch("stale");
    let p = plan();
    run_plan(&p, &opts(&out)).unwrap();
    // What a record from before a default changed looks like: the same hash
    // (defaults are not hashed) but, written out, the old default's value.
    let store = RunFolder::new(&out);
    let victim = &p.runs[2];
    let path = store.run_path(&victim.run_id);
    let mut record: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
    record["config"]["retention"]["init"] = serde_json::json!({ "kind": "normal", "std": 0.5 });
    std::fs::write(&path, serde_json::to_vec(&record).unwrap()).unwrap();
    let why = store.is_done(victim).unwrap_err();
    assert!(
        why.contains("a default changed") && why.contains("retention.init"),
        "{why}"
    );
    // An untouched record is still reused, and the stale one is redone.
    assert_eq!(store.is_done(&p.runs[3]), Ok(true));
    let again = run_plan(&p, &opts(&out)).unwrap();
    assert_eq!((again.skipped, again.succeeded), (7, 1));
    assert_eq!(store.is_done(victim), Ok(true));
    std::fs::remove_dir_all(out).unwrap();
}

#[test]
fn a_failed_run_never_stops_the_sweep_and_is_retried() {
    let out = scratch("fail");
    let p = plan();
    let doomed = p.runs[2].run_id.clone();
    let flaky = |run: &retbench_harness::PlannedRun,
                 _: &retbench_tasks::TaskContext|
     -> Result<Vec<Metric>, String> {
        if run.run_id == doomed {
            panic!("injected failure");
        }
        Ok(vec![Metric::new("x", 1.0)])
    };
    let s = run_plan_with(&p, &opts(&out), &flaky).unwrap();
    assert_eq!((s.succeeded, s.failed), (7, 1));
    let failures = std::fs::read_to_string(out.join("failures.csv")).unwrap();
    assert!(
        failures.contains(&doomed) && failures.contains("injected failure"),
        "{failures}"
    );
    assert_eq!(csv_rows(&out).len(), 7);
    // Run again with a working task: only the failed run is redone.
    let ok = |_: &retbench_harness::PlannedRun, _: &retbench_tasks::TaskContext| {
        Ok(vec![Metric::new("x", 1.0)])
    };
    let s = run_plan_with(&p, &opts(&out), &ok).unwrap();
    assert_eq!((s.skipped, s.succeeded, s.failed), (7, 1, 0));
    assert_eq!(
        std::fs::read_to_string(out.join("failures.csv"))
            .unwrap()
            .trim(),
        "run_id,error"
    );
    std::fs::remove_dir_all(out).unwrap();
}

#[test]
fn one_id_runs_alone_and_an_unknown_id_is_refused() {
    let out = scratch("id");
    let p = plan();
    let id = p.runs[5].run_id.clone();
    let s = run_plan(
        &p,
        &RunOptions {
            only: Some(id.clone()),
            ..opts(&out)
        },
    )
    .unwrap();
    assert_eq!((s.selected, s.succeeded), (1, 1));
    assert_eq!(RunFolder::new(&out).is_done(&p.runs[5]), Ok(true));
    assert!(
        run_plan(
            &p,
            &RunOptions {
                only: Some("nope".into()),
                ..opts(&out)
            }
        )
        .is_err()
    );
    std::fs::remove_dir_all(out).unwrap();
}

#[test]
fn quality_metrics_do_not_depend_on_jobs_or_shards() {
    let p = plan();
    let single = scratch("single");
    run_plan(&p, &opts(&single)).unwrap();
    let (a, b, merged) = (scratch("shard0"), scratch("shard1"), scratch("merged"));
    let s0 = run_plan(
        &p,
        &RunOptions {
            jobs: Some(2),
            shard: Some((0, 2)),
            ..opts(&a)
        },
    )
    .unwrap();
    let s1 = run_plan(
        &p,
        &RunOptions {
            jobs: Some(2),
            shard: Some((1, 2)),
            ..opts(&b)
        },
    )
    .unwrap();
    assert_eq!(s0.selected + s1.selected, p.runs.len());
    assert_eq!(
        merge(&merged, &[a.clone(), b.clone()]).unwrap(),
        p.runs.len()
    );
    let q = quality(&single);
    assert_eq!(q.len(), p.runs.len());
    assert_eq!(quality(&merged), q);
    assert_eq!(csv_rows(&merged).len(), csv_rows(&single).len());
    // Merging the same shard twice is fine; conflicting results are refused.
    merge(&merged, std::slice::from_ref(&a)).unwrap();
    let store = RunFolder::new(&a);
    let mut record = store.runs(None).unwrap().remove(0);
    record.metrics[0].value += 1.0;
    store.write_run(&record).unwrap();
    let err = merge(&merged, std::slice::from_ref(&a))
        .unwrap_err()
        .to_string();
    assert!(err.contains("different results"), "{err}");
    for d in [single, a, b, merged] {
        std::fs::remove_dir_all(d).unwrap();
    }
}

#[test]
fn shard_specs_are_checked() {
    use retbench_harness::parse_shard;
    assert_eq!(parse_shard("1/4"), Ok((1, 4)));
    assert!(parse_shard("4/4").is_err());
    assert!(parse_shard("0/0").is_err());
    assert!(parse_shard("x").is_err());
}

#[test]
fn never_more_than_jobs_runs_in_flight_each_with_its_thread_share() {
    use std::sync::atomic::{AtomicUsize, Ordering};
    let p = plan();
    let cores = std::thread::available_parallelism().unwrap().get();
    for jobs in [1, 2] {
        let out = scratch(&format!("jobs{jobs}"));
        let (now, peak) = (AtomicUsize::new(0), AtomicUsize::new(0));
        let kernel_threads = AtomicUsize::new(0);
        let probe = |_: &retbench_harness::PlannedRun,
                     _: &retbench_tasks::TaskContext|
         -> Result<Vec<Metric>, String> {
            let n = now.fetch_add(1, Ordering::SeqCst) + 1;
            peak.fetch_max(n, Ordering::SeqCst);
            kernel_threads.store(rayon::current_num_threads(), Ordering::SeqCst);
            // Kernel work on the run's pool, the way candle's matmuls use it.
            let _: u64 = rayon::iter::ParallelIterator::sum(
                rayon::iter::IntoParallelIterator::into_par_iter(0..200_000u64),
            );
            std::thread::sleep(std::time::Duration::from_millis(30));
            now.fetch_sub(1, Ordering::SeqCst);
            Ok(vec![Metric::new("x", 1.0)])
        };
        let s = run_plan_with(
            &p,
            &RunOptions {
                jobs: Some(jobs),
                ..opts(&out)
            },
            &probe,
        )
        .unwrap();
        assert_eq!(s.succeeded, 8);
        assert!(
            peak.load(Ordering::SeqCst) <= jobs,
            "jobs {jobs}: peak {}",
            peak.load(Ordering::SeqCst)
        );
        assert_eq!(kernel_threads.load(Ordering::SeqCst), (cores / jobs).max(1));
        std::fs::remove_dir_all(out).unwrap();
    }
}

/// Shards on several nodes write into one folder: a run's start removes the
/// temporary files of dead writers on its own machine, and no other's.
#[test]
fn stale_temp_files_are_removed_only_where_their_writer_is_known_dead() {
    let out = scratch("temp-files");
    let runs = out.join("runs");
    std::fs::create_dir_all(&runs).unwrap();
    let here = retbench_core::fsutil::host_name();
    let me = std::process::id();
    let dead = 999_999_999u32; // beyond pid_max: no such process
    let files = [
        (format!(".a.json.tmp-{here}-{dead}-ThreadId(1)"), false),
        (format!(".b.json.tmp-{here}-{me}-ThreadId(1)"), true),
        (format!(".c.json.tmp-{dead}-ThreadId(2)"), false), // no host: this one's
        (
            format!(".d.json.tmp-other-node.cluster-{dead}-ThreadId(1)"),
            true,
        ),
        (format!(".e.json.tmp-other-node-{dead}-ThreadId(1)"), false), // a day old
    ];
    for (name, _) in &files {
        std::fs::write(runs.join(name), b"{").unwrap();
    }
    let old = std::time::SystemTime::now() - std::time::Duration::from_secs(2 * 24 * 3600);
    std::fs::File::options()
        .write(true)
        .open(runs.join(&files[4].0))
        .unwrap()
        .set_modified(old)
        .unwrap();
    RunFolder::new(&out).remove_stale_temp_files();
    for (name, kept) in &files {
        assert_eq!(runs.join(name).exists(), *kept, "{name}");
    }
    std::fs::remove_dir_all(out).unwrap();
}
