//! The figure layout check (`retbench check-figures`): measures a drawn
//! SVG, not the data behind it, so it holds for any figure whatever code
//! drew it, old figures included. usvg lays the text out with the bundled
//! font (the one the figures are drawn with), which gives every label its
//! box on the canvas; the strokes give the series. A figure passes when
//! no two labels overlap, no label leaves the canvas, each axis has at
//! least three labelled ticks (a numeric one; named categories and the
//! whole-number values of a count are labelled one by one), a figure of
//! several series has a legend whose entries differ, it draws at most [`MAX_SERIES`] series, and an
//! axis of a discrete slice (gap, updates, sessions …) labels no fraction.
//!
//! How the roles of text are told apart, from the drawing alone: tick
//! labels of the y axis are right-aligned at one x; tick labels of the x
//! axis are centred, in the y tick labels' type size, in rows at one y;
//! legend entries are left-aligned; the axis names are the other centred
//! text (a rotated one for y). Series are the colours of the wide opaque
//! strokes (means, error bars, legend swatches); grid lines, axes and
//! reference levels are black or translucent.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::path::Path;

use retbench_core::fsutil::FileError;
use svg2pdf::usvg::{self, Node, TextAnchor};

use crate::ReportError;

/// Most series one panel may draw; more become panels or a table.
pub const MAX_SERIES: usize = 8;

/// Fewest labelled ticks an axis may have.
pub const MIN_TICKS: usize = 3;

/// Slice keys whose values are counts: their axes label whole numbers.
pub const DISCRETE_KEYS: &[&str] = &[
    "gap", "updates", "changes", "sessions", "session", "writes", "len", "length", "pairs", "facts",
];

/// One thing wrong with a figure.
#[derive(Debug, Clone, PartialEq)]
pub enum Defect {
    /// Two labels' boxes overlap.
    Overlap { a: String, b: String },
    /// A label reaches past the canvas.
    Outside { text: String },
    /// An axis with fewer than [`MIN_TICKS`] labelled ticks.
    FewTicks { axis: &'static str, labels: usize },
    /// Several series and no legend.
    NoLegend { series: usize },
    /// Two legend entries read the same.
    LegendRepeats { entry: String },
    /// More series than [`MAX_SERIES`].
    TooManySeries { series: usize },
    /// A discrete slice's axis labels a fraction.
    FractionalTick { key: String, tick: String },
}

impl Defect {
    /// The defect's kind, for counts.
    pub fn kind(&self) -> &'static str {
        match self {
            Defect::Overlap { .. } => "overlapping text",
            Defect::Outside { .. } => "text outside the figure",
            Defect::FewTicks { .. } => "axis with fewer than 3 labelled ticks",
            Defect::NoLegend { .. } => "several series, no legend",
            Defect::LegendRepeats { .. } => "legend entries that repeat",
            Defect::TooManySeries { .. } => "more than 8 series",
            Defect::FractionalTick { .. } => "fractional tick on a discrete axis",
        }
    }
}

impl fmt::Display for Defect {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let cut = |s: &str| -> String {
            match s.chars().count() > 40 {
                true => format!("{}…", s.chars().take(39).collect::<String>()),
                false => s.to_string(),
            }
        };
        match self {
            Defect::Overlap { a, b } => write!(f, "{:?} overlaps {:?}", cut(a), cut(b)),
            Defect::Outside { text } => write!(f, "{:?} leaves the figure", cut(text)),
            Defect::FewTicks { axis, labels } => {
                write!(
                    f,
                    "the {axis} axis has {labels} labelled ticks (fewer than {MIN_TICKS})"
                )
            }
            Defect::NoLegend { series } => write!(f, "{series} series and no legend"),
            Defect::LegendRepeats { entry } => {
                write!(f, "the legend has {:?} more than once", cut(entry))
            }
            Defect::TooManySeries { series } => {
                write!(f, "{series} series in one panel (at most {MAX_SERIES})")
            }
            Defect::FractionalTick { key, tick } => {
                write!(f, "the {key} axis labels {tick}, but {key} is a count")
            }
        }
    }
}

/// A label as drawn: its text, box on the canvas, alignment, type size
/// and whether it is turned.
#[derive(Debug, Clone)]
struct Label {
    text: String,
    rect: (f32, f32, f32, f32),
    anchor: TextAnchor,
    x: f32,
    y: f32,
    size: f32,
    turned: bool,
}

/// What the check reads off one figure.
#[derive(Debug, Default)]
struct Drawing {
    width: f32,
    height: f32,
    labels: Vec<Label>,
    series: BTreeSet<(u8, u8, u8)>,
}

/// The defects of the SVG figure at `path`.
pub fn check_svg(path: &Path) -> Result<Vec<Defect>, ReportError> {
    let text = std::fs::read_to_string(path).map_err(|source| FileError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    let tree =
        usvg::Tree::from_str(&text, crate::pdf::options()).map_err(|e| ReportError::Plot {
            name: path.display().to_string(),
            message: format!("SVG not understood: {e}"),
        })?;
    Ok(defects(&read(&tree)))
}

fn read(tree: &usvg::Tree) -> Drawing {
    let mut d = Drawing {
        width: tree.size().width(),
        height: tree.size().height(),
        ..Drawing::default()
    };
    walk(tree.root(), 1.0, &mut d);
    d
}

fn walk(group: &usvg::Group, opacity: f32, d: &mut Drawing) {
    let opacity = opacity * group.opacity().get();
    for node in group.children() {
        match node {
            Node::Group(g) => walk(g, opacity, d),
            Node::Text(t) => d.labels.extend(label(t)),
            Node::Path(p) => {
                if let Some(c) = series_colour(p, opacity) {
                    d.series.insert(c);
                }
            }
            Node::Image(_) => {}
        }
    }
}

fn label(t: &usvg::Text) -> Option<Label> {
    let chunk = t.chunks().first()?;
    let text: String = t.chunks().iter().map(|c| c.text()).collect();
    let text = text.trim().to_string();
    if text.is_empty() {
        return None;
    }
    let b = t.abs_bounding_box();
    let m = t.abs_transform();
    let size = chunk.spans().first().map_or(0.0, |s| s.font_size().get());
    Some(Label {
        text,
        rect: (b.left(), b.top(), b.right(), b.bottom()),
        anchor: chunk.anchor(),
        x: chunk.x().unwrap_or(0.0) + m.tx,
        y: chunk.y().unwrap_or(0.0) + m.ty,
        size,
        turned: m.kx.abs() > 1e-3 || m.ky.abs() > 1e-3,
    })
}

/// A wide, opaque, coloured stroke draws a series (a mean, an error bar,
/// a legend swatch); grid lines, axes and levels are black or faint.
fn series_colour(p: &usvg::Path, opacity: f32) -> Option<(u8, u8, u8)> {
    let s = p.stroke()?;
    let usvg::Paint::Color(c) = s.paint() else {
        return None;
    };
    let opaque = opacity * s.opacity().get() > 0.99;
    let black = (c.red, c.green, c.blue) == (0, 0, 0);
    (opaque && !black && s.width().get() >= 2.0).then_some((c.red, c.green, c.blue))
}

fn defects(d: &Drawing) -> Vec<Defect> {
    let mut out = Vec::new();
    overlaps(d, &mut out);
    for l in &d.labels {
        let (x0, y0, x1, y1) = l.rect;
        if x0 < -0.5 || y0 < -0.5 || x1 > d.width + 0.5 || y1 > d.height + 0.5 {
            out.push(Defect::Outside {
                text: l.text.clone(),
            });
        }
    }
    ticks(d, &mut out);
    legend(d, &mut out);
    out
}

fn overlaps(d: &Drawing, out: &mut Vec<Defect>) {
    for (i, a) in d.labels.iter().enumerate() {
        for b in &d.labels[i + 1..] {
            let w = a.rect.2.min(b.rect.2) - a.rect.0.max(b.rect.0);
            let h = a.rect.3.min(b.rect.3) - a.rect.1.max(b.rect.1);
            // A pixel of contact is type touching, not text over text.
            if w > 1.0 && h > 1.0 {
                out.push(Defect::Overlap {
                    a: a.text.clone(),
                    b: b.text.clone(),
                });
            }
        }
    }
}

/// Keys of a float that groups equal positions (a tenth of a pixel).
fn key(x: f32) -> i64 {
    (x * 10.0).round() as i64
}

/// Tick labels of the y axes (right-aligned, one column each) and of the
/// x axes (centred rows in the y labels' type size); each needs
/// [`MIN_TICKS`] distinct labels, and a discrete x axis whole numbers.
fn ticks(d: &Drawing, out: &mut Vec<Defect>) {
    let flat = || d.labels.iter().filter(|l| !l.turned);
    let mut columns: BTreeMap<i64, BTreeSet<&str>> = BTreeMap::new();
    for l in flat().filter(|l| l.anchor == TextAnchor::End) {
        columns.entry(key(l.x)).or_default().insert(&l.text);
    }
    let tick_size = flat()
        .filter(|l| l.anchor == TextAnchor::End)
        .map(|l| key(l.size))
        .next();
    if columns.is_empty() {
        out.push(Defect::FewTicks {
            axis: "y",
            labels: 0,
        });
    }
    for col in columns.values().filter(|c| c.len() < MIN_TICKS) {
        out.push(Defect::FewTicks {
            axis: "y",
            labels: col.len(),
        });
    }
    // The title is the largest type; the x axis's name the centred text
    // below the lowest tick row.
    let title = d.labels.iter().map(|l| key(l.size)).max();
    let centred: Vec<&Label> = flat()
        .filter(|l| l.anchor == TextAnchor::Middle && Some(key(l.size)) != title)
        .collect();
    let size = tick_size.or_else(|| centred.iter().map(|l| key(l.size)).min());
    let mut rows: BTreeMap<i64, Vec<&Label>> = BTreeMap::new();
    // Tick labels are set no larger than the y ticks (named categories
    // may be set smaller to fit); axis names are larger.
    let tick = |l: &&Label| size.is_some_and(|s| key(l.size) <= s);
    for l in centred.iter().filter(|l| tick(l)) {
        rows.entry(key(l.y)).or_default().push(l);
    }
    let names: Vec<&Label> = centred.iter().copied().filter(|l| !tick(l)).collect();
    if rows.is_empty() {
        out.push(Defect::FewTicks {
            axis: "x",
            labels: 0,
        });
    }
    for (y, row) in &rows {
        let distinct: BTreeSet<&str> = row.iter().map(|l| l.text.as_str()).collect();
        // The axis's name is the nearest centred text below the row.
        let name = names
            .iter()
            .filter(|n| key(n.y) > *y)
            .min_by_key(|n| key(n.y) - y)
            .filter(|n| DISCRETE_KEYS.contains(&n.text.as_str()));
        // Named categories are all labelled by construction, and so are
        // the whole-number values of a count (gap 0 and 1); a scale needs
        // enough numbers to be read.
        let numeric = distinct.iter().all(|t| t.parse::<f64>().is_ok());
        let counts = name.is_some() && !distinct.iter().any(|t| fractional(t));
        if numeric && !counts && distinct.len() < MIN_TICKS {
            out.push(Defect::FewTicks {
                axis: "x",
                labels: distinct.len(),
            });
        }
        if let Some(name) = name {
            for t in distinct.iter().filter(|t| fractional(t)) {
                out.push(Defect::FractionalTick {
                    key: name.text.clone(),
                    tick: t.to_string(),
                });
            }
        }
    }
}

fn fractional(t: &str) -> bool {
    t.parse::<f64>().is_ok_and(|v| v.fract() != 0.0)
}

/// A figure of several series needs a legend (left-aligned entries, each
/// once), and no panel more than [`MAX_SERIES`] series.
fn legend(d: &Drawing, out: &mut Vec<Defect>) {
    let n = d.series.len();
    if n > MAX_SERIES {
        out.push(Defect::TooManySeries { series: n });
    }
    let entries: Vec<&str> = d
        .labels
        .iter()
        .filter(|l| !l.turned && l.anchor == TextAnchor::Start)
        .map(|l| l.text.as_str())
        .collect();
    if n > 1 && entries.is_empty() {
        out.push(Defect::NoLegend { series: n });
    }
    let mut seen = BTreeSet::new();
    for e in entries {
        if !seen.insert(e) {
            out.push(Defect::LegendRepeats {
                entry: e.to_string(),
            });
        }
    }
}

/// Every `.svg` under each of `paths` (a file or a folder), sorted.
pub fn svgs_under(paths: &[std::path::PathBuf]) -> Result<Vec<std::path::PathBuf>, ReportError> {
    let mut found = Vec::new();
    for p in paths {
        collect(p, &mut found)?;
    }
    found.sort();
    Ok(found)
}

fn collect(p: &Path, found: &mut Vec<std::path::PathBuf>) -> Result<(), ReportError> {
    let io = |source| FileError::Io {
        path: p.to_path_buf(),
        source,
    };
    if p.is_dir() {
        for e in std::fs::read_dir(p).map_err(io)? {
            collect(&e.map_err(io)?.path(), found)?;
        }
    } else if p.extension().is_some_and(|e| e == "svg") {
        found.push(p.to_path_buf());
    }
    Ok(())
}
