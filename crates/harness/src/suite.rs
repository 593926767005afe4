//! Suite files and their expansion into a plan, validated in full before any
//! run starts.
//!
//! A suite (docs/GUIDE.md, "Suites") is a typed `base` run config plus axes over dotted
//! paths: `grid` (cartesian product, first axis outermost, in the order
//! written), `zip` (lock-step groups of equal length), `variants` (named
//! extra points beside the grid; with no grid or zip axes, the only points),
//! `figures` (metrics against a numeric slice, lines and panels named by
//! varied parameters), `exclude` (points to drop, matched on the
//! resolved config, or only some of their seeds with `seeds:`) and `profiles` (overrides applied before expansion: base
//! paths, `seeds`, or `grid.<path>` / `zip.<path>` to replace an axis's
//! values). Every
//! mistake is reported as `file:line:column: message`: YAML syntax, unknown
//! keys and wrong types by the YAML reader; dotted paths that name nothing,
//! unequal zip lengths, invalid values, empty expansions and duplicate run ids
//! by the checks here, at the node that caused them.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::{Path, PathBuf};

use serde::Deserialize;
use serde::de::{Deserializer, MapAccess, Visitor};
use serde::{Serialize, Serializer};
use serde_json::Value;
use serde_saphyr::Spanned;

use crate::config::RunConfig;

/// A suite file mistake, located in the file.
#[derive(Debug, thiserror::Error)]
pub enum SuiteError {
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{}:{line}:{column}: {message}", path.display())]
    At {
        path: PathBuf,
        line: u64,
        column: u64,
        message: String,
    },
}

/// A position in the suite file (1-based).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Loc {
    pub line: u64,
    pub column: u64,
}

impl<T> From<&Spanned<T>> for Loc {
    fn from(s: &Spanned<T>) -> Loc {
        Loc {
            line: s.referenced.line(),
            column: s.referenced.column(),
        }
    }
}

/// A YAML mapping that keeps the order it was written in.
#[derive(Debug, Clone)]
pub struct Ordered<K, V>(pub Vec<(K, V)>);

impl<K, V> Default for Ordered<K, V> {
    fn default() -> Self {
        Ordered(Vec::new())
    }
}

impl<'de, K: Deserialize<'de>, V: Deserialize<'de>> Deserialize<'de> for Ordered<K, V> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V2<K, V>(std::marker::PhantomData<(K, V)>);
        impl<'de, K: Deserialize<'de>, V: Deserialize<'de>> Visitor<'de> for V2<K, V> {
            type Value = Ordered<K, V>;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a mapping")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
                let mut out = Vec::new();
                while let Some(entry) = map.next_entry()? {
                    out.push(entry);
                }
                Ok(Ordered(out))
            }
        }
        d.deserialize_map(V2(std::marker::PhantomData))
    }
}

type Axis = Ordered<Spanned<String>, Spanned<Vec<Spanned<Value>>>>;
type Overrides = Ordered<Spanned<String>, Spanned<Value>>;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct SuiteFile {
    name: Spanned<String>,
    #[serde(default)]
    description: String,
    base: Spanned<RunConfig>,
    #[serde(default)]
    seeds: Option<Spanned<Vec<u64>>>,
    #[serde(default)]
    grid: Axis,
    #[serde(default)]
    zip: Vec<Spanned<Axis>>,
    #[serde(default)]
    variants: Ordered<Spanned<String>, Overrides>,
    #[serde(default)]
    exclude: Vec<Spanned<Overrides>>,
    #[serde(default)]
    profiles: Ordered<Spanned<String>, Overrides>,
    #[serde(default)]
    figures: Vec<Spanned<retbench_tasks::FigureSpec>>,
    #[serde(default)]
    paper: PaperBlock,
}

/// `paper:`: the suite's headline figures, drawn first and apart.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct PaperBlock {
    #[serde(default)]
    figures: Vec<Spanned<retbench_tasks::PaperFigure>>,
}

/// Most headline figures a suite declares: a paper's worth.
pub const MAX_PAPER_FIGURES: usize = 6;

/// A grid axis: its path, where it was written, and its located values.
type GridAxis = (String, Loc, Vec<(Value, Loc)>);

/// One override of a dotted path, with where it was written.
#[derive(Debug, Clone)]
struct Override {
    path: String,
    value: Value,
    loc: Loc,
}

/// One run of the plan.
#[derive(Debug, Clone, PartialEq)]
pub struct PlannedRun {
    pub run_id: String,
    /// `grid` for grid points, else the variant's name.
    pub variant: String,
    pub seed: u64,
    /// The varied parameters of this run: dotted path → value.
    pub params: Vec<(String, Value)>,
    pub config: RunConfig,
    /// Hash of `config` (without the seed): the root of its random streams.
    pub config_hash: String,
}

impl Serialize for PlannedRun {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let params: BTreeMap<&str, &Value> =
            self.params.iter().map(|(k, v)| (k.as_str(), v)).collect();
        serde_json::json!({
            "run_id": self.run_id,
            "variant": self.variant,
            "seed": self.seed,
            "params": params,
            "config_hash": self.config_hash,
            "config": self.config,
        })
        .serialize(s)
    }
}

/// A validated, fully expanded suite.
#[derive(Debug, Clone)]
pub struct Plan {
    pub file: PathBuf,
    pub suite: String,
    pub description: String,
    pub profile: Option<String>,
    pub runs: Vec<PlannedRun>,
    /// Every varied parameter, in order of first appearance: the extra
    /// columns of `results.csv`.
    pub param_columns: Vec<String>,
    pub profiles: Vec<String>,
    /// The figures the suite declares, checked against its metrics and
    /// varied parameters.
    pub figures: Vec<retbench_tasks::FigureSpec>,
    /// The suite's headline figures (`paper: figures:`), checked likewise.
    pub paper: Vec<retbench_tasks::PaperFigure>,
}

struct Ctx<'a> {
    path: &'a Path,
}

impl Ctx<'_> {
    fn at(&self, loc: Loc, message: impl Into<String>) -> SuiteError {
        SuiteError::At {
            path: self.path.to_path_buf(),
            line: loc.line,
            column: loc.column,
            message: message.into(),
        }
    }
}

/// Reads and expands a suite file.
pub fn load(path: &Path, profile: Option<&str>) -> Result<Plan, SuiteError> {
    load_with(path, profile, &Limits::default())
}

/// What a plan may ask for; beyond it, the plan is refused where the
/// offending value is written.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Peak bytes one run may need (estimated from the task's sizes).
    pub max_memory: u64,
    /// Runs one plan may hold (points × seeds).
    pub max_runs: usize,
}

impl Default for Limits {
    /// The machine's RAM (16 GiB where it cannot be read), 100 000 runs.
    fn default() -> Self {
        Limits {
            max_memory: machine_ram().unwrap_or(16 << 30),
            max_runs: 100_000,
        }
    }
}

/// MemTotal from /proc/meminfo, in bytes.
pub fn machine_ram() -> Option<u64> {
    let info = std::fs::read_to_string("/proc/meminfo").ok()?;
    let line = info.lines().find(|l| l.starts_with("MemTotal:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

/// Bytes as a person reads them ("1.5 GiB").
pub fn human_bytes(b: u128) -> String {
    let units = ["B", "KiB", "MiB", "GiB", "TiB", "PiB", "EiB"];
    let mut x = b as f64;
    let mut i = 0;
    while x >= 1024.0 && i + 1 < units.len() {
        x /= 1024.0;
        i += 1;
    }
    if i == 0 {
        format!("{b} B")
    } else {
        format!("{x:.1} {}", units[i])
    }
}

/// [`load`] under explicit limits.
pub fn load_with(path: &Path, profile: Option<&str>, limits: &Limits) -> Result<Plan, SuiteError> {
    let bytes = std::fs::read(path).map_err(|source| SuiteError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    let text = String::from_utf8(bytes).map_err(|e| {
        let ok = &e.as_bytes()[..e.utf8_error().valid_up_to()];
        let line = ok.iter().filter(|&&b| b == b'\n').count() as u64 + 1;
        let column =
            (ok.len() - ok.iter().rposition(|&b| b == b'\n').map_or(0, |i| i + 1)) as u64 + 1;
        SuiteError::At {
            path: path.to_path_buf(),
            line,
            column,
            message: format!(
                "not UTF-8 text (invalid byte at offset {})",
                e.utf8_error().valid_up_to()
            ),
        }
    })?;
    parse_with(path, &text, profile, limits)
}

/// Expands suite text (`path` names it in errors).
pub fn parse(path: &Path, text: &str, profile: Option<&str>) -> Result<Plan, SuiteError> {
    parse_with(path, text, profile, &Limits::default())
}

/// [`parse`] under explicit limits, in phases: read the file, locate the
/// base, overlay the profile, lay out the axes, expand the points into
/// runs, validate the declared figures. Each phase refuses at the location
/// of what it finds wrong, before anything is written.
pub fn parse_with(
    path: &Path,
    text: &str,
    profile: Option<&str>,
    limits: &Limits,
) -> Result<Plan, SuiteError> {
    let cx = Ctx { path };
    let file = read(&cx, text)?;
    let mut draft = Draft::new(&cx, &file, text)?;
    let profiles: Vec<String> = file
        .profiles
        .0
        .iter()
        .map(|(k, _)| k.value.clone())
        .collect();
    if let Some(wanted) = profile {
        draft.overlay(&cx, &file, wanted, &profiles)?;
    }
    let axes = draft.axes(&cx, &file)?;
    let excludes = excludes(&cx, &file, &draft.base)?;
    draft.check_size(&cx, &file, &axes, limits)?;
    let points = draft.points(&cx, &file, &axes)?;
    let runs = draft.expand(&cx, &points, &excludes, limits)?;
    let param_columns = param_columns(&runs);
    check_figures(&cx, &file, &runs, &param_columns)?;
    check_paper(&cx, &file, &runs, &param_columns)?;
    Ok(Plan {
        figures: file.figures.iter().map(|f| f.value.clone()).collect(),
        paper: file.paper.figures.iter().map(|f| f.value.clone()).collect(),
        file: path.to_path_buf(),
        suite: file.name.value.clone(),
        description: file.description.clone(),
        profile: profile.map(String::from),
        runs,
        param_columns,
        profiles,
    })
}

/// Phase 1: the YAML into a typed suite file, and its name checked (it
/// names the output folder).
fn read(cx: &Ctx, text: &str) -> Result<SuiteFile, SuiteError> {
    let file: SuiteFile = serde_saphyr::from_str(text).map_err(|e| {
        let loc = e.location().map_or(Loc { line: 1, column: 1 }, |l| Loc {
            line: l.line(),
            column: l.column(),
        });
        // Moved to the line a reader would fix, with the position once.
        let at = crate::yaml_error::Loc {
            line: loc.line,
            column: loc.column,
        };
        let (at, message) = crate::yaml_error::locate(text, at, &yaml_message(&e.to_string()));
        let loc = Loc {
            line: at.line,
            column: at.column,
        };
        cx.at(loc, message)
    })?;
    let name = &file.name.value;
    if name.trim().is_empty()
        || !name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
        || name.starts_with('.')
    {
        return Err(cx.at(
            Loc::from(&file.name),
            "name must be non-empty, use only [A-Za-z0-9._-] and not start with a dot (it names the output folder under reports/)",
        ));
    }
    Ok(file)
}

/// A point of the plan before expansion: its variant name, where it was
/// written, and its overrides.
type Point = (String, Loc, Vec<Override>);

/// What the phases build up between reading the file and expanding it.
struct Draft<'t> {
    /// The base config as JSON, with the profile's base overrides applied.
    base: Value,
    base_loc: Loc,
    name_loc: Loc,
    located: Located<'t>,
    seeds: Vec<u64>,
    grid: Vec<GridAxis>,
    /// Profile overrides every point takes after its own (see `overlay`).
    late: Vec<Override>,
    /// A profile's replacement values of zip axes (`zip.<path>`).
    zip_profile: HashMap<String, Vec<(Value, Loc)>>,
}

impl<'t> Draft<'t> {
    /// Phase 2: the base (validated, finite), the seeds and the grid axes,
    /// each located.
    fn new(cx: &Ctx, file: &SuiteFile, text: &'t str) -> Result<Self, SuiteError> {
        let base_loc = Loc::from(&file.base);
        let located = Located {
            text,
            base_loc,
            profile: Vec::new(),
        };
        if let Err(message) = file.base.value.validate() {
            let loc = located.find(&message, &[]).unwrap_or(base_loc);
            return Err(cx.at(loc, format!("base: invalid run config: {message}")));
        }
        let base = serde_json::to_value(&file.base.value).expect("run config serializes");
        if serde_json::from_value::<RunConfig>(base.clone())
            .ok()
            .as_ref()
            != Some(&file.base.value)
        {
            return Err(cx.at(
                base_loc,
                "base: a value is not a finite number (NaN or infinity)",
            ));
        }
        let seeds = match &file.seeds {
            Some(s) if s.value.is_empty() => {
                return Err(cx.at(Loc::from(s), "seeds must list at least one seed"));
            }
            Some(s) => s.value.clone(),
            None => vec![0],
        };
        let grid = grid_axes(cx, file, &base)?;
        Ok(Draft {
            base,
            base_loc,
            name_loc: Loc::from(&file.name),
            located,
            seeds,
            grid,
            late: Vec::new(),
            zip_profile: HashMap::new(),
        })
    }

    /// Phase 3: profile `wanted`'s overrides: `seeds`, `grid.<path>` and
    /// `zip.<path>` replace values; any other path applies to the base now
    /// and to every point after its own overrides.
    fn overlay(
        &mut self,
        cx: &Ctx,
        file: &SuiteFile,
        wanted: &str,
        profiles: &[String],
    ) -> Result<(), SuiteError> {
        let Some((_, overrides)) = file.profiles.0.iter().find(|(k, _)| k.value == wanted) else {
            let have = if profiles.is_empty() {
                "none".to_string()
            } else {
                profiles.join(", ")
            };
            return Err(cx.at(
                self.name_loc,
                format!("no profile named {wanted:?} in this suite (profiles: {have})"),
            ));
        };
        for (key, value) in &overrides.0 {
            let loc = Loc::from(key);
            if key.value == "seeds" {
                self.seeds = serde_json::from_value::<Vec<u64>>(value.value.clone())
                    .map_err(|e| cx.at(Loc::from(value), format!("seeds: {e}")))?;
                if self.seeds.is_empty() {
                    return Err(cx.at(Loc::from(value), "seeds must list at least one seed"));
                }
            } else if let Some(axis) = key.value.strip_prefix("zip.") {
                let known = file
                    .zip
                    .iter()
                    .any(|g| g.value.0.iter().any(|(k, _)| k.value == axis));
                if !known {
                    return Err(cx.at(loc, format!("{}: no zip group has axis {axis}", key.value)));
                }
                self.zip_profile
                    .insert(axis.to_string(), axis_values(cx, key, value)?);
            } else if let Some(axis) = key.value.strip_prefix("grid.") {
                let Some(slot) = self.grid.iter_mut().find(|(p, _, _)| p == axis) else {
                    return Err(cx.at(loc, format!("{}: the grid has no axis {axis}", key.value)));
                };
                slot.2 = axis_values(cx, key, value)?;
            } else {
                self.overlay_path(cx, key, value)?;
            }
        }
        Ok(())
    }

    /// A profile's override of a config path. Every point gets the value
    /// (after its own overrides: a variant that replaces a whole block, say
    /// its `train:`, still trains for the profile's steps), wherever the
    /// path's block exists. A block the base lacks (the learned variants of
    /// a probe suite) is only checked when the points are.
    fn overlay_path(
        &mut self,
        cx: &Ctx,
        key: &Spanned<String>,
        value: &Spanned<Value>,
    ) -> Result<(), SuiteError> {
        let loc = Loc::from(key);
        self.late.push(Override {
            path: key.value.clone(),
            value: value.value.clone(),
            loc: Loc::from(value),
        });
        if parent_is_null(&self.base, &key.value) {
            return Ok(());
        }
        check_path(&self.base, &key.value).map_err(|m| cx.at(loc, m))?;
        set_path(&mut self.base, &key.value, value.value.clone()).map_err(|m| cx.at(loc, m))?;
        self.located
            .profile
            .push((key.value.clone(), Loc::from(value)));
        if let Err(e) = serde_json::from_value::<RunConfig>(self.base.clone()) {
            return Err(cx.at(Loc::from(value), format!("{}: {e}", key.value)));
        }
        Ok(())
    }

    /// Phase 4: the axes, each a list of points, each point a list of
    /// overrides: the grid's axes, then one axis per zip group.
    fn axes(&self, cx: &Ctx, file: &SuiteFile) -> Result<Vec<Vec<Vec<Override>>>, SuiteError> {
        let mut axes: Vec<Vec<Vec<Override>>> = self
            .grid
            .iter()
            .map(|(path, _, values)| {
                values
                    .iter()
                    .map(|(v, loc)| {
                        vec![Override {
                            path: path.clone(),
                            value: v.clone(),
                            loc: *loc,
                        }]
                    })
                    .collect()
            })
            .collect();
        for group in &file.zip {
            let points = self.zip_points(cx, &group.value)?;
            if !points.is_empty() {
                axes.push(points);
            }
        }
        Ok(axes)
    }

    /// The lock-step points of one zip group (axes of equal length).
    fn zip_points(&self, cx: &Ctx, group: &Axis) -> Result<Vec<Vec<Override>>, SuiteError> {
        let mut len = None;
        let mut points: Vec<Vec<Override>> = Vec::new();
        for (key, values) in &group.0 {
            check_path(&self.base, &key.value).map_err(|m| cx.at(Loc::from(key), m))?;
            let values: Vec<(Value, Loc)> = match self.zip_profile.get(&key.value) {
                Some(v) => v.clone(),
                None => values
                    .value
                    .iter()
                    .map(|v| (v.value.clone(), Loc::from(v)))
                    .collect(),
            };
            let n = values.len();
            match len {
                None => {
                    if n == 0 {
                        return Err(cx.at(
                            Loc::from(key),
                            format!("zip axis {} has no values", key.value),
                        ));
                    }
                    len = Some(n);
                    points = vec![Vec::new(); n];
                }
                Some(first) if first != n => {
                    return Err(cx.at(
                        Loc::from(key),
                        format!("zip axes must have equal lengths: {} has {n} values, the first axis {first}", key.value),
                    ));
                }
                Some(_) => {}
            }
            for (point, (v, loc)) in points.iter_mut().zip(&values) {
                point.push(Override {
                    path: key.value.clone(),
                    value: v.clone(),
                    loc: *loc,
                });
            }
        }
        Ok(points)
    }

    /// Refuses a plan too large to hold before expanding it: 4 axes of 200
    /// values are 1.6e9 points.
    fn check_size(
        &self,
        cx: &Ctx,
        file: &SuiteFile,
        axes: &[Vec<Vec<Override>>],
        limits: &Limits,
    ) -> Result<(), SuiteError> {
        let variants = file.variants.0.len() as u128;
        let mut grid_points: u128 = 1;
        for (i, axis) in axes.iter().enumerate() {
            grid_points = grid_points.saturating_mul(axis.len() as u128);
            let runs = (grid_points + variants).saturating_mul(self.seeds.len() as u128);
            if runs > limits.max_runs as u128 {
                let loc = self
                    .grid
                    .get(i)
                    .map_or_else(|| axis[0].first().map_or(self.base_loc, |o| o.loc), |g| g.1);
                return Err(cx.at(
                    loc,
                    format!(
                        "the plan would hold {runs} runs or more, over the limit of {}: shrink the grid",
                        limits.max_runs
                    ),
                ));
            }
        }
        Ok(())
    }

    /// The grid × zip product, then the variants. Without grid or zip axes
    /// but with variants, the base is only their template (a suite of named
    /// baselines names every point, `retention: {}` included).
    fn points(
        &self,
        cx: &Ctx,
        file: &SuiteFile,
        axes: &[Vec<Vec<Override>>],
    ) -> Result<Vec<Point>, SuiteError> {
        let mut points: Vec<Point> = Vec::new();
        if !axes.is_empty() || file.variants.0.is_empty() {
            for combo in cartesian(axes) {
                points.push(("grid".to_string(), self.base_loc, combo));
            }
        }
        for (name, overrides) in &file.variants.0 {
            if name.value == "grid" || name.value.is_empty() {
                return Err(cx.at(
                    Loc::from(name),
                    "a variant cannot be named \"grid\" or be empty",
                ));
            }
            let mut ovs = Vec::new();
            for (key, value) in &overrides.0 {
                check_path(&self.base, &key.value).map_err(|m| cx.at(Loc::from(key), m))?;
                ovs.push(Override {
                    path: key.value.clone(),
                    value: value.value.clone(),
                    loc: Loc::from(value),
                });
            }
            points.push((name.value.clone(), Loc::from(name), ovs));
        }
        Ok(points)
    }

    /// Phase 5: every point that no `exclude` drops, resolved, validated,
    /// sized against the memory limit, and crossed with the seeds.
    fn expand(
        &self,
        cx: &Ctx,
        points: &[Point],
        excludes: &[Exclude],
        limits: &Limits,
    ) -> Result<Vec<PlannedRun>, SuiteError> {
        let mut runs = Vec::new();
        let mut seen: HashMap<String, Loc> = HashMap::new();
        let mut used_late: HashSet<String> = HashSet::new();
        let mut excluded_any = false;
        let shown = shown_fields(points);
        for (variant, loc, ovs) in points {
            let ovs_all = self.with_late(cx, ovs, &mut used_late);
            let json = resolve(cx, &self.base, &self.located, &ovs_all)?;
            let matching: Vec<&Exclude> = excludes.iter().filter(|e| e.matches(&json)).collect();
            if matching.iter().any(|e| e.seeds.is_none()) {
                excluded_any = true;
                continue;
            }
            let config: RunConfig = serde_json::from_value(json).expect("resolve checked it");
            self.check_memory(cx, &config, ovs, *loc, limits)?;
            let config_hash = config.hash();
            let params: Vec<(String, Value)> = ovs
                .iter()
                .map(|o| (o.path.clone(), o.value.clone()))
                .collect();
            for &seed in &self.seeds {
                if matching.iter().any(|e| e.drops(seed)) {
                    excluded_any = true;
                    continue;
                }
                let run_id = run_id(variant, &params, &shown, seed, &config);
                let here = ovs.first().map_or(*loc, |o| o.loc);
                if let Some(prev) = seen.insert(run_id.clone(), here) {
                    return Err(cx.at(
                        here,
                        format!(
                            "this point repeats run {run_id} (same config and seed as line {})",
                            prev.line
                        ),
                    ));
                }
                runs.push(PlannedRun {
                    run_id,
                    variant: variant.clone(),
                    seed,
                    params: params.clone(),
                    config: config.clone(),
                    config_hash: config_hash.clone(),
                });
            }
        }
        if let Some(l) = self.late.iter().find(|l| !used_late.contains(&l.path)) {
            return Err(cx.at(
                l.loc,
                format!("{}: names nothing in any run of this suite", l.path),
            ));
        }
        if runs.is_empty() {
            let loc = if excluded_any {
                excludes[0].loc
            } else {
                self.name_loc
            };
            return Err(cx.at(loc, "the suite expands to no runs"));
        }
        Ok(runs)
    }

    /// A point's overrides followed by the profile's late overrides that
    /// reach it: those whose block the point's config has, and whose field
    /// that block knows (the probe's `task.loads` is not a learned
    /// variant's to take).
    fn with_late(
        &self,
        cx: &Ctx,
        ovs: &[Override],
        used_late: &mut HashSet<String>,
    ) -> Vec<Override> {
        let mut ovs_all = ovs.to_vec();
        let own = resolve(cx, &self.base, &self.located, ovs).ok();
        for l in &self.late {
            let parent = l.path.rsplit_once('.').map(|(p, _)| p);
            let has_block = match (&own, parent) {
                (Some(json), Some(p)) => get_path(json, p).is_some_and(Value::is_object),
                (Some(_), None) => true,
                (None, _) => !parent_is_null(&self.base, &l.path),
            };
            let knows_field = own.as_ref().is_none_or(|json| {
                let mut probe = json.clone();
                set_path(&mut probe, &l.path, l.value.clone()).is_ok()
                    && !serde_json::from_value::<RunConfig>(probe)
                        .is_err_and(|e| e.to_string().contains("unknown field"))
            });
            if has_block && knows_field {
                used_late.insert(l.path.clone());
                ovs_all.push(l.clone());
            }
        }
        ovs_all
    }

    /// Refuses a run whose estimated peak memory exceeds the limit, at the
    /// field that costs most.
    fn check_memory(
        &self,
        cx: &Ctx,
        config: &RunConfig,
        ovs: &[Override],
        loc: Loc,
        limits: &Limits,
    ) -> Result<(), SuiteError> {
        let terms = config.task.task().estimate_bytes(&config.spec());
        let need: u128 = terms.iter().map(|t| t.1).fold(0, u128::saturating_add);
        if need <= limits.max_memory as u128 {
            return Ok(());
        }
        let (field, _) = terms.iter().max_by_key(|t| t.1).expect("need > 0");
        let loc = self.located.find(field, ovs).unwrap_or(loc);
        Err(cx.at(
            loc,
            format!(
                "{field}: this run would need about {} at its peak, more than the {} allowed (the machine's RAM; --max-memory to change)",
                human_bytes(need),
                human_bytes(limits.max_memory as u128)
            ),
        ))
    }
}

/// The grid's axes, located, each path checked against the base.
fn grid_axes(cx: &Ctx, file: &SuiteFile, base: &Value) -> Result<Vec<GridAxis>, SuiteError> {
    let mut grid: Vec<GridAxis> = Vec::new();
    for (key, values) in &file.grid.0 {
        check_path(base, &key.value).map_err(|m| cx.at(Loc::from(key), m))?;
        if values.value.is_empty() {
            return Err(cx.at(
                Loc::from(values),
                format!("grid axis {} has no values", key.value),
            ));
        }
        if grid.iter().any(|(p, _, _)| *p == key.value) {
            return Err(cx.at(
                Loc::from(key),
                format!("grid axis {} appears twice", key.value),
            ));
        }
        grid.push((
            key.value.clone(),
            Loc::from(key),
            values
                .value
                .iter()
                .map(|v| (v.value.clone(), Loc::from(v)))
                .collect(),
        ));
    }
    Ok(grid)
}

/// A profile's `grid.<path>` or `zip.<path>` value: the axis's new values.
fn axis_values(
    cx: &Ctx,
    key: &Spanned<String>,
    value: &Spanned<Value>,
) -> Result<Vec<(Value, Loc)>, SuiteError> {
    let values = value
        .value
        .as_array()
        .filter(|a| !a.is_empty())
        .ok_or_else(|| {
            cx.at(
                Loc::from(value),
                format!("{} must be a non-empty list", key.value),
            )
        })?;
    Ok(values
        .iter()
        .map(|v| (v.clone(), Loc::from(value)))
        .collect())
}

/// An `exclude` entry: where it was written, its (path, value) conditions,
/// and the seeds it drops from the points it matches (`seeds:`; all of them
/// when it names none).
struct Exclude {
    loc: Loc,
    conds: Vec<(String, Value)>,
    seeds: Option<Vec<u64>>,
}

impl Exclude {
    fn matches(&self, json: &Value) -> bool {
        self.conds
            .iter()
            .all(|(p, v)| get_path(json, p).is_some_and(|x| same(x, v)))
    }

    /// Whether this entry drops `seed` of a point it matches.
    fn drops(&self, seed: u64) -> bool {
        self.seeds.as_ref().is_none_or(|s| s.contains(&seed))
    }
}

fn excludes(cx: &Ctx, file: &SuiteFile, base: &Value) -> Result<Vec<Exclude>, SuiteError> {
    let mut excludes: Vec<Exclude> = Vec::new();
    for ex in &file.exclude {
        let (mut conds, mut seeds) = (Vec::new(), None);
        for (key, value) in &ex.value.0 {
            if key.value == "seeds" {
                let list = serde_json::from_value::<Vec<u64>>(value.value.clone())
                    .map_err(|e| cx.at(Loc::from(value), format!("seeds: {e}")))?;
                seeds = Some(list);
                continue;
            }
            check_path(base, &key.value).map_err(|m| cx.at(Loc::from(key), m))?;
            conds.push((key.value.clone(), value.value.clone()));
        }
        excludes.push(Exclude {
            loc: Loc::from(ex),
            conds,
            seeds,
        });
    }
    Ok(excludes)
}

/// Every varied parameter, in order of first appearance.
fn param_columns(runs: &[PlannedRun]) -> Vec<String> {
    let mut columns: Vec<String> = Vec::new();
    for r in runs {
        for (p, _) in &r.params {
            if !columns.contains(p) {
                columns.push(p.clone());
            }
        }
    }
    columns
}

/// Phase 6: each declared figure names a metric some run reports, sliced
/// by `by`, and parameters the plan varies.
fn check_figures(
    cx: &Ctx,
    file: &SuiteFile,
    runs: &[PlannedRun],
    param_columns: &[String],
) -> Result<(), SuiteError> {
    let specs = crate::config::metric_specs(runs.iter().map(|r| &r.config));
    for f in &file.figures {
        let loc = Loc::from(f);
        let fig = &f.value;
        let Some(spec) = specs.iter().find(|s| s.name == fig.metric) else {
            return Err(cx.at(
                loc,
                format!(
                    "figures: no run of this suite reports a metric {:?}",
                    fig.metric
                ),
            ));
        };
        if !spec.slices.contains(&fig.by) {
            return Err(cx.at(
                loc,
                format!(
                    "figures: {} is not sliced by {:?} (its slices: {})",
                    fig.metric,
                    fig.by,
                    if spec.slices.is_empty() {
                        "none".to_string()
                    } else {
                        spec.slices.join(", ")
                    }
                ),
            ));
        }
        for p in fig.lines.iter().chain(&fig.panels).chain(fig.only.keys()) {
            if !param_columns.contains(p) {
                return Err(cx.at(
                    loc,
                    format!(
                        "figures: {p} is not a parameter this suite varies ({})",
                        param_columns.join(", ")
                    ),
                ));
            }
        }
    }
    Ok(())
}

/// Phase 7: at most [`MAX_PAPER_FIGURES`] headline figures, each with a
/// distinct file-safe name, a metric some run reports (sliced by `by`
/// where it has one), and picks that name varied parameters.
fn check_paper(
    cx: &Ctx,
    file: &SuiteFile,
    runs: &[PlannedRun],
    param_columns: &[String],
) -> Result<(), SuiteError> {
    let specs = crate::config::metric_specs(runs.iter().map(|r| &r.config));
    if let Some(f) = file.paper.figures.get(MAX_PAPER_FIGURES) {
        let msg = format!(
            "paper: at most {MAX_PAPER_FIGURES} figures (the rest of the report has every figure)"
        );
        return Err(cx.at(Loc::from(f), msg));
    }
    let mut names = std::collections::BTreeSet::new();
    for f in &file.paper.figures {
        let (loc, fig) = (Loc::from(f), &f.value);
        let safe = |c: char| c.is_ascii_alphanumeric() || c == '_' || c == '-';
        if fig.name.is_empty() || !fig.name.chars().all(safe) || !names.insert(&fig.name) {
            let msg = format!(
                "paper: figure name {:?} must be unique, of letters, digits, _ and -",
                fig.name
            );
            return Err(cx.at(loc, msg));
        }
        let Some(spec) = specs.iter().find(|s| s.name == fig.metric) else {
            let msg = format!(
                "paper: no run of this suite reports a metric {:?}",
                fig.metric
            );
            return Err(cx.at(loc, msg));
        };
        if let Some(by) = fig.by.as_ref().filter(|b| !spec.slices.contains(b)) {
            let msg = format!(
                "paper: {} is not sliced by {by:?} (its slices: {})",
                fig.metric,
                spec.slices.join(", ")
            );
            return Err(cx.at(loc, msg));
        }
        if fig.series.is_empty() {
            return Err(cx.at(loc, "paper: a figure needs at least one series".to_string()));
        }
        let labels: Vec<&str> = fig.series.iter().map(|p| p.label.as_str()).collect();
        for c in &fig.contrasts {
            if let Some(l) = [&c.of, &c.against]
                .into_iter()
                .find(|l| !labels.contains(&l.as_str()))
            {
                let msg = format!(
                    "paper: contrast names {l:?}, not a series of this figure ({})",
                    labels.join(", ")
                );
                return Err(cx.at(loc, msg));
            }
        }
        for key in fig
            .groups
            .iter()
            .chain(&fig.series)
            .flat_map(|p| p.only.keys())
        {
            let root = key.split('.').scan(String::new(), |acc, part| {
                if !acc.is_empty() {
                    acc.push('.');
                }
                acc.push_str(part);
                Some(acc.clone())
            });
            let known = key == "variant" || root.into_iter().any(|p| param_columns.contains(&p));
            if !known {
                let msg = format!(
                    "paper: {key} is not variant, nor a parameter this suite varies or a path into one ({})",
                    param_columns.join(", ")
                );
                return Err(cx.at(loc, msg));
            }
        }
    }
    Ok(())
}

/// Strips the reader's own position suffix, if any, from its message.
fn yaml_message(msg: &str) -> String {
    msg.lines().next().unwrap_or(msg).trim().to_string()
}

/// Every combination of one point per axis, first axis outermost.
fn cartesian(axes: &[Vec<Vec<Override>>]) -> Vec<Vec<Override>> {
    let mut out: Vec<Vec<Override>> = vec![Vec::new()];
    for axis in axes {
        let mut next = Vec::with_capacity(out.len() * axis.len());
        for prefix in &out {
            for point in axis {
                let mut combo = prefix.clone();
                combo.extend(point.iter().cloned());
                next.push(combo);
            }
        }
        out = next;
    }
    out
}

/// Applies `ovs` to `base` and checks the result as a run config; a failure
/// is blamed on the first override whose application makes it fail.
fn resolve(
    cx: &Ctx,
    base: &Value,
    located: &Located<'_>,
    ovs: &[Override],
) -> Result<Value, SuiteError> {
    let base_loc = located.base_loc;
    let apply = |n: usize| -> Result<Value, (Loc, String)> {
        let mut json = base.clone();
        for o in &ovs[..n] {
            set_path(&mut json, &o.path, o.value.clone()).map_err(|m| (o.loc, m))?;
        }
        Ok(json)
    };
    let check = |json: &Value| -> Result<(), String> {
        let config: RunConfig = serde_json::from_value(json.clone()).map_err(|e| e.to_string())?;
        config.validate()
    };
    let full = apply(ovs.len()).map_err(|(loc, m)| cx.at(loc, m))?;
    let Err(message) = check(&full) else {
        return Ok(full);
    };
    for n in 0..=ovs.len() {
        let json = apply(n).map_err(|(loc, m)| cx.at(loc, m))?;
        if check(&json).is_err() {
            let (loc, what) = match n {
                0 => (
                    located.find(&message, &[]).unwrap_or(base_loc),
                    "base".to_string(),
                ),
                n => (ovs[n - 1].loc, ovs[n - 1].path.clone()),
            };
            return Err(cx.at(loc, format!("{what}: invalid run config: {message}")));
        }
    }
    Err(cx.at(base_loc, format!("invalid run config: {message}")))
}

/// Finds where a dotted path was written: in this point's overrides, in
/// the profile, or in the base's text.
struct Located<'a> {
    text: &'a str,
    base_loc: Loc,
    /// Profile overrides of base paths, with where their values are.
    profile: Vec<(String, Loc)>,
}

impl Located<'_> {
    /// The location of the field an error message (or a bare path) starts
    /// with, e.g. `retention.read.k: must be …`.
    fn find(&self, message: &str, ovs: &[Override]) -> Option<Loc> {
        let head = message.split([':', ',', ' ']).next()?;
        let ok = !head.is_empty()
            && head
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '.');
        if !ok {
            return None;
        }
        let covers = |p: &str| head == p || head.starts_with(&format!("{p}."));
        if let Some(o) = ovs.iter().rev().find(|o| covers(&o.path)) {
            return Some(o.loc);
        }
        if let Some((_, loc)) = self.profile.iter().rev().find(|(p, _)| covers(p)) {
            return Some(*loc);
        }
        // Deepest prefix of the path written in the base.
        let segs: Vec<&str> = head.split('.').collect();
        (1..=segs.len())
            .rev()
            .find_map(|n| find_in_base(self.text, self.base_loc, &segs[..n]))
    }
}

/// The position of the key `segs` (a path below `base:`) in the suite
/// text, for block mappings (`key:` on its own line, deeper indented) and
/// flow mappings (`{ kind: topk, k: 32 }`).
fn find_in_base(text: &str, base_loc: Loc, segs: &[&str]) -> Option<Loc> {
    let lines: Vec<&str> = text.lines().collect();
    let indent = |l: &str| l.len() - l.trim_start().len();
    let start = (0..(base_loc.line as usize).min(lines.len()))
        .rev()
        .find(|&i| lines[i].trim_start().starts_with("base:"))?;
    let (mut line, mut col, mut parent_indent) = (start, 0usize, indent(lines[start]));
    for seg in segs {
        let key = format!("{seg}:");
        // Inside a flow mapping on the parent's line.
        if let Some(rest) = lines[line].get(col..)
            && let Some(brace) = rest.find('{')
        {
            let flow = &rest[brace..];
            if let Some(at) = find_key(flow, &key) {
                col = col + brace + at;
                continue;
            }
        }
        let mut found = None;
        for (i, l) in lines.iter().enumerate().skip(line + 1) {
            let t = l.trim_start();
            if t.is_empty() || t.starts_with('#') {
                continue;
            }
            if indent(l) <= parent_indent {
                break;
            }
            if t.starts_with(&key) {
                found = Some(i);
                break;
            }
        }
        line = found?;
        col = indent(lines[line]);
        parent_indent = col;
    }
    Some(Loc {
        line: line as u64 + 1,
        column: col as u64 + 1,
    })
}

/// Byte offset of `key` (`name:`) in a flow mapping, at a word start.
fn find_key(flow: &str, key: &str) -> Option<usize> {
    flow.match_indices(key).map(|(i, _)| i).find(|&i| {
        i == 0
            || flow[..i]
                .chars()
                .next_back()
                .is_some_and(|c| c == '{' || c == ',' || c == ' ')
    })
}

/// Numbers compare by value (1 == 1.0); everything else structurally.
fn same(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => x.as_f64() == y.as_f64(),
        _ => a == b,
    }
}

pub fn get_path<'v>(json: &'v Value, path: &str) -> Option<&'v Value> {
    path.split('.')
        .try_fold(json, |v, seg| v.as_object()?.get(seg))
}

fn set_path(json: &mut Value, path: &str, value: Value) -> Result<(), String> {
    let segs: Vec<&str> = path.split('.').collect();
    let mut cur = json;
    for (i, seg) in segs.iter().enumerate() {
        let Value::Object(map) = cur else {
            let parent = segs[..i].join(".");
            return Err(format!(
                "{path}: {parent} is not a mapping in this run (it is {cur})"
            ));
        };
        if i + 1 == segs.len() {
            map.insert(seg.to_string(), value);
            return Ok(());
        }
        cur = map.entry(seg.to_string()).or_insert(Value::Null);
    }
    unreachable!("paths have at least one segment")
}

/// Whether the block holding `path` is null or absent in `base` (a probe
/// suite's base has no `train:`).
fn parent_is_null(base: &Value, path: &str) -> bool {
    match path.rsplit_once('.') {
        Some((parent, _)) => !get_path(base, parent).is_some_and(Value::is_object),
        None => false,
    }
}

/// A dotted path names something when it exists in the (default-filled)
/// base, or when setting it keeps the base a valid run config (an optional
/// field the base leaves out).
fn check_path(base: &Value, path: &str) -> Result<(), String> {
    if path.is_empty() || path.split('.').any(str::is_empty) {
        return Err(format!("{path:?} is not a dotted path"));
    }
    if get_path(base, path).is_some() {
        return Ok(());
    }
    let (parent, leaf) = path.rsplit_once('.').unwrap_or(("", path));
    let parent_value = if parent.is_empty() {
        Some(base)
    } else {
        get_path(base, parent)
    };
    match parent_value {
        Some(Value::Object(_)) => {
            // Null: an optional block (`model:` of a probe suite's learned
            // variant) takes it, and an unknown field is refused whatever
            // its value.
            let mut probe = base.clone();
            set_path(&mut probe, path, Value::Null).ok();
            match serde_json::from_value::<RunConfig>(probe) {
                Err(e) if e.to_string().contains("unknown field") => Err(format!(
                    "{path} names nothing: {} has no field {leaf:?}",
                    if parent.is_empty() {
                        "a run config"
                    } else {
                        parent
                    }
                )),
                _ => Ok(()),
            }
        }
        Some(Value::Null) => Err(format!(
            "{path} names nothing: {parent} is null in the base config"
        )),
        Some(other) => Err(format!(
            "{path} names nothing: {parent} is {other}, not a mapping"
        )),
        None => Err(format!("{path} names nothing in the base config")),
    }
}

/// For each varied path and kind, the fields of that kind's maps whose
/// values differ between the suite's points (or that some of them leave
/// out): what a run id shows beside the kind, so that `write: { kind:
/// append, evict: lru }` and `{ kind: append }` read differently.
type Shown = BTreeMap<(String, String), Vec<String>>;

fn shown_fields(points: &[Point]) -> Shown {
    // (path, kind) → (maps, field → (maps naming it, its values))
    type Seen = (usize, BTreeMap<String, (usize, Vec<String>)>);
    let mut seen: BTreeMap<(String, String), Seen> = BTreeMap::new();
    for o in points.iter().flat_map(|(_, _, ovs)| ovs) {
        let Value::Object(m) = &o.value else { continue };
        let Some(kind) = m.get("kind").and_then(Value::as_str) else {
            continue;
        };
        let e = seen.entry((o.path.clone(), kind.to_string())).or_default();
        e.0 += 1;
        for (field, v) in m.iter().filter(|(f, _)| *f != "kind") {
            let f = e.1.entry(field.clone()).or_default();
            f.0 += 1;
            let v = short(v).unwrap_or_default();
            if !f.1.contains(&v) {
                f.1.push(v);
            }
        }
    }
    seen.into_iter()
        .map(|(key, (maps, fields))| {
            let differ = fields
                .into_iter()
                .filter(|(_, (n, values))| *n < maps || values.len() > 1)
                .map(|(field, _)| field)
                .collect();
            (key, differ)
        })
        .collect()
}

/// A value as a run id shows it: a map by its kind (`None` without one:
/// a whole block, which the variant's name and the hash identify).
fn short(value: &Value) -> Option<String> {
    Some(match value {
        Value::Null => "none".to_string(),
        Value::Bool(b) => b.to_string(),
        Value::Number(n) => n.to_string(),
        Value::String(s) => s.clone(),
        Value::Object(m) => m.get("kind").and_then(Value::as_str)?.to_string(),
        Value::Array(_) => "list".to_string(),
    })
}

/// A readable prefix (variant, varied values, and the fields of a varied
/// kind that differ between points) plus a hash of the resolved config and
/// seed: stable across runs of the same suite.
fn run_id(
    variant: &str,
    params: &[(String, Value)],
    shown: &Shown,
    seed: u64,
    config: &RunConfig,
) -> String {
    let mut parts: Vec<String> = Vec::new();
    if variant != "grid" {
        parts.push(variant.to_string());
    }
    for (path, value) in params {
        let leaf = path.rsplit('.').next().unwrap_or(path);
        let Some(v) = short(value) else { continue };
        let mut part = format!("{leaf}{v}");
        if let Value::Object(m) = value {
            let fields = shown.get(&(path.clone(), v)).into_iter().flatten();
            for (field, fv) in fields.filter_map(|f| Some((f, short(m.get(f)?)?))) {
                part.push_str(&format!("_{field}{fv}"));
            }
        }
        parts.push(part);
    }
    let mut prefix: String = parts
        .join("-")
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '.' {
                c
            } else {
                '_'
            }
        })
        .collect();
    prefix.truncate(72);
    let mut h = blake3::Hasher::new();
    let canonical = retbench_core::canonical::canonical_json(config);
    h.update(&serde_json::to_vec(&canonical).expect("serializes"));
    h.update(&seed.to_le_bytes());
    let hash = &h.finalize().to_hex()[..10];
    if prefix.is_empty() {
        format!("s{seed}-{hash}")
    } else {
        format!("{prefix}-s{seed}-{hash}")
    }
}
