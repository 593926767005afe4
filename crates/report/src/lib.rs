//! retbench-report: turns a run folder's `results.csv` into `summary.csv`
//! (per config over seeds: n, mean, std and a 95% interval, Student-t or,
//! for bimodal bounded outcomes, a percentile bootstrap),
//! `summary.md`, `summary.tex` (booktabs tables), a self-contained
//! `report.html`, and figures in SVG and PNG; and compares two folders
//! (`compare`). Reports only read what the
//! harness recorded; they re-derive nothing upstream decided.
//!
//! Figures render with a font bundled in this crate (DejaVu Sans), so no
//! system fonts are needed, and each series (a backend: the varied
//! parameters other than the x axis) keeps one colour across every figure.

pub mod binding;
pub mod censored;
pub mod compare;
pub mod figures;
mod latex;
pub mod layout;
pub mod paper;
mod pdf;
mod summary;
mod ticks;

use std::path::{Path, PathBuf};

use retbench_core::fsutil::FileError;
use retbench_harness::RunFolder;

pub use compare::{CompareReport, Tolerances, compare};
pub use figures::FigureSize;
pub use pdf::svg_to_pdf;
pub use summary::{IndexEntry, Page, Provenance, SummaryRow, summarize};

#[derive(Debug, thiserror::Error)]
pub enum ReportError {
    #[error(transparent)]
    File(#[from] FileError),
    #[error("figure {name}: {message}")]
    Plot { name: String, message: String },
    /// Two folders that a comparison must not join (other suites, other
    /// profiles, nothing in common).
    #[error("{0}")]
    Refused(String),
}

/// What `report` wrote.
#[derive(Debug, Default)]
pub struct ReportOutput {
    pub suite: String,
    pub summary_rows: usize,
    pub figures: Vec<PathBuf>,
    /// The paper set: its figures and tables (`paper/`), if declared.
    pub paper: Vec<PathBuf>,
    pub page: Page,
}

/// What `report_with` draws besides the defaults.
#[derive(Debug, Clone, Default)]
pub struct ReportOptions {
    /// Vector PDF copies of the figures (fonts embedded, text selectable).
    pub pdf: bool,
    /// The figures' canvas (a paper's one- or two-column width).
    pub size: FigureSize,
    /// The index page that will link this report: the page links back.
    pub index: Option<PathBuf>,
}

/// Writes `summary.csv`, `summary.md` and `figures/` for the run folder
/// `dir` (removing figures an earlier report drew and this one does not).
pub fn report(dir: &Path) -> Result<ReportOutput, ReportError> {
    report_with(dir, ReportOptions::default())
}

/// [`report`], with options.
pub fn report_with(dir: &Path, opts: ReportOptions) -> Result<ReportOutput, ReportError> {
    let folder = RunFolder::new(dir);
    let (params, rows) = folder.results()?;
    let mut summary = summarize(&params, &rows);
    let suite = rows.first().map(|r| r.suite.clone()).unwrap_or_default();
    let specs = folder.metric_specs()?;
    summary::bimodal_intervals(&mut summary, &specs);
    censored::medians(&mut summary, &rows, &specs);
    let plan = folder.plan()?.unwrap_or_default();
    let binding = binding_table(&params, &rows, &plan);
    summary::write_csv(&dir.join("summary.csv"), &params, &summary)?;
    summary::write_markdown(
        &dir.join("summary.md"),
        &suite,
        &params,
        &summary,
        &specs,
        &binding,
    )?;
    for row in &rows {
        if !specs.iter().any(|s| s.name == row.metric) {
            return Err(FileError::Bad {
                path: folder.metrics_path(),
                message: format!(
                    "metric {} (run {}) has no spec: every metric a task reports must be declared",
                    row.metric, row.run_id
                ),
            }
            .into());
        }
    }
    latex::write_latex(&dir.join("summary.tex"), &suite, &params, &summary, &specs)?;
    let (declared, description) = (plan.figures, plan.description.trim().to_string());
    let figures = figures::render_all(
        &dir.join("figures"),
        &suite,
        &params,
        &summary,
        &specs,
        &declared,
        opts.size,
    )?;
    let mut figures = figures;
    if opts.pdf {
        let pdfs = figures
            .iter()
            .filter(|f| f.extension().is_some_and(|e| e == "svg"))
            .map(|f| pdf::svg_to_pdf(f))
            .collect::<Result<Vec<_>, _>>()?;
        figures.extend(pdfs);
    }
    remove_stale_figures(&dir.join("figures"), &figures, opts.pdf)?;
    let paper = paper_set(dir, &suite, &params, &summary, &specs, &plan.paper, &opts)?;
    let page = Page {
        description,
        provenance: read_provenance(&folder)?,
        binding,
        back: opts.index.as_deref().and_then(|i| href(dir, i)),
    };
    summary::write_html(
        &dir.join("report.html"),
        &suite,
        &params,
        &summary,
        (&paper, &figures),
        &page,
        &specs,
    )?;
    Ok(ReportOutput {
        suite,
        summary_rows: summary.len(),
        figures,
        paper,
        page,
    })
}

/// The binding table of the runs with `time_to_bind`, each run's budget
/// its planned `train.steps`.
fn binding_table(
    params: &[String],
    rows: &[retbench_harness::folder::ResultRow],
    plan: &retbench_harness::folder::PlanFile,
) -> summary::Table {
    let budgets = plan
        .runs
        .iter()
        .filter_map(|r| {
            Some((
                r.run_id.clone(),
                r.config.pointer("/train/steps")?.as_u64()?,
            ))
        })
        .collect();
    let rows = binding::rows(rows, &budgets);
    binding::table(&rows, |v, p| summary::label_of(params, v, p))
}

/// `to` as a link from a page in folder `from` (`../index.html`).
fn href(from: &Path, to: &Path) -> Option<String> {
    let (from, to) = (
        std::path::absolute(from).ok()?,
        std::path::absolute(to).ok()?,
    );
    let rel = pathdiff::diff_paths(to, from)?;
    Some(rel.to_string_lossy().replace('\\', "/"))
}

/// Writes `index` linking the reports of `dirs` (as `report` returned
/// them), paths relative to the index's folder.
pub fn write_index(index: &Path, dirs: &[(PathBuf, ReportOutput)]) -> Result<(), ReportError> {
    let base = index.parent().unwrap_or(Path::new(""));
    let entries: Vec<IndexEntry> = dirs
        .iter()
        .map(|(dir, out)| {
            let page = dir.join("report.html");
            let href = page
                .strip_prefix(base)
                .unwrap_or(&page)
                .to_string_lossy()
                .replace('\\', "/");
            IndexEntry {
                suite: out.suite.clone(),
                href,
                description: out.page.description.clone(),
                provenance: out.page.provenance.clone(),
                figures: out
                    .figures
                    .iter()
                    .filter(|f| f.extension().is_some_and(|e| e == "svg"))
                    .count(),
            }
        })
        .collect();
    summary::write_index(index, &entries)
}

/// Commits, machines, compilers, kernels, dates and run time of the run
/// records in `runs` (sorted and deduplicated: the page does not depend
/// on the order files are listed in).
fn read_provenance(folder: &RunFolder) -> Result<Provenance, ReportError> {
    let mut sets: [std::collections::BTreeSet<String>; 4] = Default::default();
    let mut p = Provenance::default();
    let mut dates: Vec<u64> = Vec::new();
    // Sorted by file name, so that the sum of run times is the same sum.
    for record in folder.runs(None)? {
        let prov = &record.provenance;
        let values = [
            Some(&prov.git_commit),
            Some(&prov.cpu_model),
            Some(&prov.rustc_version),
            prov.kernels.as_ref(),
        ];
        for (set, value) in sets.iter_mut().zip(values) {
            if let Some(v) = value {
                set.insert(v.clone());
            }
        }
        p.wall_seconds += prov.wall_seconds;
        match prov.finished_unix {
            Some(t) => dates.push(t),
            None => p.undated += 1,
        }
        p.runs += 1;
    }
    let [commits, machines, rustc, kernels] = sets;
    p.commits = commits.into_iter().collect();
    p.machines = machines.into_iter().collect();
    p.rustc = rustc.into_iter().collect();
    p.kernels = kernels.into_iter().collect();
    p.finished = dates
        .iter()
        .min()
        .zip(dates.iter().max())
        .map(|(&a, &b)| (a, b));
    Ok(p)
}

/// The suite's paper set in `dir/paper/` (figures, PDF copies with
/// `--pdf`, the tables of their cells); nothing where none is declared.
fn paper_set(
    dir: &Path,
    suite: &str,
    params: &[String],
    summary: &[SummaryRow],
    specs: &[retbench_tasks::MetricSpec],
    declared: &[retbench_tasks::PaperFigure],
    opts: &ReportOptions,
) -> Result<Vec<PathBuf>, ReportError> {
    if declared.is_empty() {
        return Ok(Vec::new());
    }
    let out = dir.join("paper");
    let mut files = paper::render(&out, suite, params, summary, specs, declared, opts.size)?;
    if opts.pdf {
        let svgs: Vec<PathBuf> = files.clone();
        for f in svgs
            .iter()
            .filter(|f| f.extension().is_some_and(|e| e == "svg"))
        {
            files.push(pdf::svg_to_pdf(f)?);
        }
    }
    remove_stale_figures(&out, &files, opts.pdf)?;
    files.extend(paper::write_tables(&out, params, summary, specs, declared)?);
    Ok(files)
}

/// Deletes the figures (SVG, PNG; PDF when this report draws PDFs) an
/// earlier report of this folder drew and this one did not (a renamed or dropped figure), so that the folder
/// shows this report only. `figures/` belongs to the report; other files
/// there are left alone.
fn remove_stale_figures(dir: &Path, written: &[PathBuf], pdf: bool) -> Result<(), ReportError> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Ok(());
    };
    for entry in entries.flatten() {
        let path = entry.path();
        // PDFs are drawn on request only: a report without --pdf leaves
        // the ones a --pdf report drew.
        let figure = match path.extension().and_then(|e| e.to_str()) {
            Some("svg" | "png") => true,
            Some("pdf") => pdf,
            _ => false,
        };
        if figure && !written.contains(&path) {
            std::fs::remove_file(&path).map_err(|source| FileError::Io {
                path: path.clone(),
                source,
            })?;
        }
    }
    Ok(())
}

/// Writes `bytes` to `path` atomically, as every retbench output is
/// written (see `retbench_core::fsutil`).
pub(crate) fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), ReportError> {
    retbench_core::fsutil::write_atomic(path, bytes)
        .map_err(|source| FileError::Io {
            path: path.to_path_buf(),
            source,
        })
        .map_err(Into::into)
}
