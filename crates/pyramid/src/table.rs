//! Accuracy tables in the layout of the paper's Tables 1–4, from one or more run directories.
//!
//! One table per group of runs, data set and scheme: rows are VGG19 (the teacher) then the
//! levels, columns the methods present, each cell the best-epoch (or last-epoch) test accuracy,
//! and per row the model's parameters, MACs and measured inference speed.
//!
//! Runs that differ only by their seed form one *group*, and a group's cells are the mean ±
//! sample standard deviation over its seeds. A run's group identity ([`identity`]) is its name,
//! data set, model options, data settings and split sizes (not the splits' content hashes,
//! which depend on the seed when subsets are sampled), train and test image counts and
//! configured methods; on top, two runs of one group must have executed the same stages for
//! every model both trained. Directory names play no part.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use pyramid_models::{ModelId, Scheme};
use serde_json::{json, Value};

use crate::paper::{self, PaperCell};
use crate::run::{LevelResult, Results};
use crate::Error;

/// One run directory and its `results.json`.
#[derive(Debug, Clone)]
pub struct Run {
    /// The run directory, as given.
    pub dir: PathBuf,
    /// Its `results.json`.
    pub results: Results,
}

impl Run {
    /// Reads `<dir>/results.json`.
    pub fn load(dir: &Path) -> Result<Run, Error> {
        let path = dir.join("results.json");
        let bytes = match std::fs::read(&path) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(Error::file(
                    &path,
                    "not found: not a run directory, or its run has not finished a model yet",
                ))
            }
            Err(e) => return Err(Error::io("read", &path)(e)),
        };
        let results =
            serde_json::from_slice(&bytes).map_err(|source| Error::Json { path, source })?;
        Ok(Run {
            dir: dir.to_path_buf(),
            results,
        })
    }
}

/// Reads every directory's `results.json`, in order.
pub fn load_runs(dirs: &[PathBuf]) -> Result<Vec<Run>, Error> {
    dirs.iter().map(|d| Run::load(d)).collect()
}

/// Which epoch's test accuracy a cell shows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Measure {
    /// The selected (best) epoch's: the paper's tables.
    #[default]
    Best,
    /// The last epoch's.
    Last,
}

impl Measure {
    fn as_str(self) -> &'static str {
        match self {
            Measure::Best => "best",
            Measure::Last => "last",
        }
    }
}

/// What to build.
#[derive(Debug, Clone, Copy, Default)]
pub struct Options {
    /// Best- or last-epoch accuracy.
    pub measure: Measure,
    /// Show the paper's numbers beside ours.
    pub paper: bool,
}

/// Values over seeds: the mean, the sample standard deviation (n − 1; none for n = 1) and n,
/// over the finite values.
#[derive(Debug, Clone, PartialEq)]
pub struct Stats {
    /// One value per seed (a non-finite one is left out of the statistics).
    pub values: Vec<f64>,
    /// NaN when no value is finite.
    pub mean: f64,
    /// Sample standard deviation; none for fewer than two values.
    pub std: Option<f64>,
    /// How many values are finite.
    pub n: usize,
}

impl Stats {
    /// The statistics of `values`; the mean is NaN when none is finite.
    pub fn of(values: Vec<f64>) -> Stats {
        let finite: Vec<f64> = values.iter().copied().filter(|x| x.is_finite()).collect();
        let n = finite.len();
        let mean = finite.iter().sum::<f64>() / n as f64;
        let std = (n > 1).then(|| {
            (finite.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / (n - 1) as f64).sqrt()
        });
        Stats {
            values,
            mean,
            std,
            n,
        }
    }

    /// `mean ± std` to two decimals, or the value alone for one seed, or "–".
    pub fn text(&self) -> String {
        match (self.n, self.std) {
            (0, _) => "–".into(),
            (_, Some(s)) => format!("{:.2} ± {s:.2}", self.mean),
            _ => format!("{:.2}", self.mean),
        }
    }
}

/// One (model, method) of a group: its results over the group's seeds.
#[derive(Debug, Clone)]
pub struct Cell {
    /// The method's config name (`teacher` for the teacher's cell).
    pub method: String,
    /// The seeds that have this model, ascending, and their run directories.
    pub seeds: Vec<u64>,
    /// The run directory of each seed, aligned with `seeds`.
    pub dirs: Vec<PathBuf>,
    /// Best-epoch and last-epoch test accuracy (%), one value per seed.
    pub best: Stats,
    /// Last-epoch test accuracy (%), one value per seed.
    pub last: Stats,
    /// Whether any seed's model has warnings (signs that it did not learn).
    pub warned: bool,
    /// The paper's number for this cell, when built with [`Options::paper`].
    pub paper: Option<PaperCell>,
}

impl Cell {
    /// The statistics of `measure`.
    pub fn stats(&self, measure: Measure) -> &Stats {
        match measure {
            Measure::Best => &self.best,
            Measure::Last => &self.last,
        }
    }
}

/// Measured inference speed of a row's model, over every method and seed that has one.
#[derive(Debug, Clone)]
pub struct RowLatency {
    /// The device(s) timed on, comma-separated.
    pub device: String,
    /// Images per second.
    pub images_per_sec: Stats,
    /// Seconds per 13,000 images (the paper's Figure-3 unit at 96×96 input).
    pub seconds_per_13000: Stats,
}

/// One model of a table.
#[derive(Debug, Clone)]
pub struct Row {
    /// `VGG19` or the level's `ModelId::name()`.
    pub model: String,
    /// 0 for the teacher, else the level (1 = SVGG17 … 5 = SVGG5).
    pub level: usize,
    /// Parameters and multiply-accumulates of the model.
    pub params: usize,
    /// Multiply-accumulates of one image's forward pass.
    pub macs: u64,
    /// Measured inference speed, when any of its results has one.
    pub latency: Option<RowLatency>,
    /// Aligned with [`Table::columns`]; the teacher's row has one cell (method `teacher`),
    /// shown under the first column as in the paper.
    pub cells: Vec<Option<Cell>>,
    /// The paper's Figure-3 seconds per 13,000 images, when built with [`Options::paper`].
    pub paper_seconds: Option<f64>,
}

/// Runs that differ only by their seed.
#[derive(Debug, Clone)]
pub struct Group {
    /// The experiment's name and data set.
    pub name: String,
    /// The group's data set.
    pub dataset: String,
    /// Ascending, and their directories in the same order.
    pub seeds: Vec<u64>,
    /// The run directory of each seed, aligned with `seeds`.
    pub dirs: Vec<PathBuf>,
    /// The group's identity ([`identity`] of its first run).
    pub identity: Value,
    /// What sets this group apart from the others (`path = value`), empty for a lone group.
    pub distinct: Vec<String>,
    /// The method columns: configured methods first (config order), then any other found, in
    /// registry order.
    pub columns: Vec<String>,
}

/// One table: a group's models of one scheme.
#[derive(Debug, Clone)]
pub struct Table {
    /// Index into [`Tables::groups`].
    pub group: usize,
    /// The group's data set, and the scheme of every row.
    pub dataset: String,
    /// The scheme of every row.
    pub scheme: Scheme,
    /// Method config names.
    pub columns: Vec<String>,
    /// The VGG19 row, when the group has a teacher.
    pub teacher: Option<Row>,
    /// The levels, SVGG17 first.
    pub rows: Vec<Row>,
    /// The paper's table number for this data set and scheme, when built with `paper`.
    pub paper_table: Option<u8>,
    /// Why some cells have no paper number, said once (empty without `paper`).
    pub paper_notes: Vec<String>,
}

/// Every table of a set of runs.
#[derive(Debug, Clone)]
pub struct Tables {
    /// What they were built with.
    pub options: Options,
    /// In the order of their first run.
    pub groups: Vec<Group>,
    /// Per group, forward then backward.
    pub tables: Vec<Table>,
}

/// A run's group identity: everything that defines its experiment except the seed (see the
/// module doc). The executed stages are compared separately (see [`build`]).
pub fn identity(r: &Results) -> Value {
    let data = r.data.as_ref().map(|d| {
        let splits: BTreeMap<&String, usize> =
            d.splits.iter().map(|(k, s)| (k, s.images)).collect();
        json!({ "settings": d.settings, "splits": splits })
    });
    json!({
        "name": r.name,
        "dataset": r.dataset,
        "model": r.model_options,
        "data": data,
        "train_images": r.train_images,
        "test_images": r.test_images,
        "methods": r.methods,
    })
}

/// A model's run-directory path: `teacher` or `<scheme>/<method>/<MODEL>`.
fn model_path(l: &LevelResult) -> String {
    if l.method == "teacher" {
        "teacher".into()
    } else {
        format!("{}/{}/{}", l.scheme, l.method, l.model)
    }
}

/// Each trained model's executed stages. A model that ran none (a loaded teacher, e.g. the
/// first seed's under `[run] share_teacher`) has nothing to compare and splits no group.
fn stages(r: &Results) -> BTreeMap<String, Value> {
    r.teacher
        .iter()
        .chain(&r.levels)
        .filter(|l| !l.executed.is_empty())
        .map(|l| {
            (
                model_path(l),
                serde_json::to_value(&l.executed).unwrap_or(Value::Null),
            )
        })
        .collect()
}

/// The method columns of some runs of one group: their configured methods in config order,
/// then any other method found, in registry order, then unregistered ones.
pub fn columns(runs: &[&Results]) -> Vec<String> {
    let mut cols: Vec<String> = Vec::new();
    for r in runs {
        for m in &r.methods {
            if !cols.contains(m) {
                cols.push(m.clone());
            }
        }
    }
    let found = |name: &str| {
        runs.iter()
            .any(|r| r.levels.iter().any(|l| l.method == name))
    };
    for m in crate::method::REGISTRY {
        if !cols.iter().any(|c| c == m.name) && found(m.name) {
            cols.push(m.name.to_string());
        }
    }
    for r in runs {
        for l in &r.levels {
            if !cols.contains(&l.method) {
                cols.push(l.method.clone());
            }
        }
    }
    cols
}

/// A method's column title (its config name if it is not registered).
pub fn title(method: &str) -> String {
    crate::method::lookup(method)
        .map(|m| m.title.to_string())
        .unwrap_or_else(|_| method.to_string())
}

/// Groups the runs and builds their tables. Groups come in the order of their first run;
/// two runs fall in one group when their [`identity`] is equal and every model both trained
/// executed the same stages. The same seed twice in a group is an error naming both
/// directories.
pub fn build(runs: &[Run], options: Options) -> Result<Tables, Error> {
    struct Pending<'a> {
        identity: Value,
        stages: BTreeMap<String, Value>,
        runs: Vec<&'a Run>,
    }
    let mut pending: Vec<Pending> = Vec::new();
    for run in runs {
        let id = identity(&run.results);
        let st = stages(&run.results);
        let fits = |p: &Pending| {
            p.identity == id
                && st
                    .iter()
                    .all(|(k, v)| p.stages.get(k).is_none_or(|w| w == v))
        };
        match pending.iter_mut().find(|p| fits(p)) {
            Some(p) => {
                if let Some(other) = p.runs.iter().find(|o| o.results.seed == run.results.seed) {
                    return Err(Error::file(
                        &run.dir,
                        format!(
                            "seed {} is also in {}, with the same config: the same run twice (give each seed once)",
                            run.results.seed,
                            other.dir.display()
                        ),
                    ));
                }
                p.stages.extend(st);
                p.runs.push(run);
            }
            None => pending.push(Pending {
                identity: id,
                stages: st,
                runs: vec![run],
            }),
        }
    }
    let distinct = distinctions(
        &pending
            .iter()
            .map(|p| {
                let mut id = p.identity.clone();
                if let Value::Object(m) = &mut id {
                    m.insert(
                        "stages".into(),
                        Value::Object(p.stages.clone().into_iter().collect()),
                    );
                }
                id
            })
            .collect::<Vec<_>>(),
    );
    let mut groups = Vec::new();
    let mut tables = Vec::new();
    for (gi, (mut p, distinct)) in pending.into_iter().zip(distinct).enumerate() {
        p.runs.sort_by_key(|r| r.results.seed);
        let results: Vec<&Results> = p.runs.iter().map(|r| &r.results).collect();
        let cols = columns(&results);
        let first = results[0];
        for scheme in Scheme::ALL {
            if let Some(t) = scheme_table(gi, scheme, &p.runs, &cols, options) {
                tables.push(t);
            }
        }
        groups.push(Group {
            name: first.name.clone(),
            dataset: first.dataset.clone(),
            seeds: results.iter().map(|r| r.seed).collect(),
            dirs: p.runs.iter().map(|r| r.dir.clone()).collect(),
            identity: p.identity,
            distinct,
            columns: cols,
        });
    }
    Ok(Tables {
        options,
        groups,
        tables,
    })
}

/// The cell of (model, method) over a group's runs, if any run has it.
fn cell(runs: &[&Run], model: &str, method: &str) -> Option<Cell> {
    let found: Vec<(&Run, &LevelResult)> = runs
        .iter()
        .filter_map(|r| {
            let l = if method == "teacher" {
                r.results.teacher.as_ref()
            } else {
                r.results
                    .levels
                    .iter()
                    .find(|l| l.model == model && l.method == method)
            };
            l.map(|l| (*r, l))
        })
        .collect();
    if found.is_empty() {
        return None;
    }
    Some(Cell {
        method: method.to_string(),
        seeds: found.iter().map(|(r, _)| r.results.seed).collect(),
        dirs: found.iter().map(|(r, _)| r.dir.clone()).collect(),
        best: Stats::of(found.iter().map(|(_, l)| l.best_test_acc).collect()),
        last: Stats::of(found.iter().map(|(_, l)| l.last_test_acc).collect()),
        warned: found.iter().any(|(_, l)| !l.warnings.is_empty()),
        paper: None,
    })
}

/// A row's model summary and latency from every result it has.
fn row(
    runs: &[&Run],
    model: &str,
    level: usize,
    methods: &[String],
    cells: Vec<Option<Cell>>,
) -> Option<Row> {
    let all: Vec<&LevelResult> = runs
        .iter()
        .flat_map(|r| {
            r.results
                .teacher
                .iter()
                .chain(&r.results.levels)
                .filter(|l| l.model == model && methods.contains(&l.method))
        })
        .collect();
    let any = all.first()?;
    let timed: Vec<&crate::run::Latency> = all.iter().filter_map(|l| l.latency.as_ref()).collect();
    let latency = (!timed.is_empty()).then(|| {
        let mut devices: Vec<&str> = timed.iter().map(|t| t.device.as_str()).collect();
        devices.sort_unstable();
        devices.dedup();
        RowLatency {
            device: devices.join(", "),
            images_per_sec: Stats::of(timed.iter().map(|t| t.images_per_sec).collect()),
            seconds_per_13000: Stats::of(timed.iter().map(|t| t.seconds_per_13000).collect()),
        }
    });
    Some(Row {
        model: model.to_string(),
        level,
        params: any.params,
        macs: any.macs,
        latency,
        cells,
        paper_seconds: None,
    })
}

fn scheme_table(
    group: usize,
    scheme: Scheme,
    runs: &[&Run],
    cols: &[String],
    options: Options,
) -> Option<Table> {
    let dataset = runs[0].results.dataset.clone();
    let mut rows = Vec::new();
    for level in 1..=5 {
        let name = ModelId { level, scheme }.name();
        let cells: Vec<Option<Cell>> = cols.iter().map(|m| cell(runs, &name, m)).collect();
        if cells.iter().all(Option::is_none) {
            continue;
        }
        if let Some(r) = row(runs, &name, level, cols, cells) {
            rows.push(r);
        }
    }
    if rows.is_empty() {
        return None;
    }
    let teacher = cell(runs, "VGG19", "teacher")
        .and_then(|c| row(runs, "VGG19", 0, &["teacher".to_string()], vec![Some(c)]));
    let mut t = Table {
        group,
        dataset,
        scheme,
        columns: cols.to_vec(),
        teacher,
        rows,
        paper_table: None,
        paper_notes: Vec::new(),
    };
    if options.paper {
        add_paper(&mut t, runs[0].results.model_options.as_ref());
    }
    Some(t)
}

/// Fills in the paper's numbers and says once why some are missing or not like for like.
fn add_paper(t: &mut Table, model: Option<&pyramid_models::ModelOptions>) {
    t.paper_table = paper::table(&t.dataset, t.scheme).map(|p| p.number);
    if let Some(Some(c)) = t.teacher.as_mut().and_then(|r| r.cells.first_mut()) {
        c.paper = Some(match paper::teacher(&t.dataset) {
            Some(x) => PaperCell::Value(x),
            None => PaperCell::NoTable,
        });
    }
    for r in t.teacher.iter_mut().chain(t.rows.iter_mut()) {
        r.paper_seconds = paper::figure3_seconds(&r.model);
        for c in r.cells.iter_mut().flatten() {
            if c.method != "teacher" {
                c.paper = Some(paper::cell(&t.dataset, t.scheme, r.level, &c.method));
            }
        }
    }
    if t.paper_table.is_none() {
        t.paper_notes.push(format!(
            "the paper has no {} table for {} (its Tables 1–4 are STL10 and CIFAR-100)",
            t.scheme.as_str(),
            t.dataset
        ));
        return;
    }
    if let Some(o) = model {
        if o.input_size != 96 || o.width_div != 1 || o.in_channels != 3 || o.batch_norm {
            t.paper_notes.push(format!(
                "the paper's models are full-width VGGs at 96×96 RGB input without batch norm; these are width ÷{} at {}×{}, {} channel(s){}",
                o.width_div,
                o.input_size,
                o.input_size,
                o.in_channels,
                if o.batch_norm { ", with batch norm" } else { "" }
            ));
        }
    }
    let no_method: Vec<String> = t
        .columns
        .iter()
        .filter(|m| !paper::METHODS.contains(&m.as_str()))
        .map(|m| title(m))
        .collect();
    if !no_method.is_empty() {
        t.paper_notes.push(format!(
            "the paper's tables have no column for {}",
            no_method.join(", ")
        ));
    }
    if t.rows.iter().any(|r| {
        r.cells
            .iter()
            .flatten()
            .any(|c| c.paper == Some(PaperCell::Dash))
    }) {
        t.paper_notes
            .push("\"paper –\": the paper prints no number for that level".into());
    }
}

/// For each identity, its `path = value` leaves that not all identities share (at most 8,
/// then a count).
fn distinctions(ids: &[Value]) -> Vec<Vec<String>> {
    if ids.len() < 2 {
        return vec![Vec::new(); ids.len()];
    }
    let flat: Vec<BTreeMap<String, String>> = ids
        .iter()
        .map(|v| {
            let mut m = BTreeMap::new();
            flatten("", v, &mut m);
            m
        })
        .collect();
    let mut keys: Vec<&String> = flat.iter().flat_map(|m| m.keys()).collect();
    keys.sort();
    keys.dedup();
    // A model only some groups trained is no difference of config; its stages are compared
    // where every group has it.
    let model_of = |k: &str| {
        k.strip_prefix("stages.")
            .map(|rest| rest.split('[').next().unwrap_or(rest).to_string())
    };
    let has_model = |m: &BTreeMap<String, String>, model: &str| {
        m.keys().any(|k| model_of(k).as_deref() == Some(model))
    };
    let differing: Vec<&String> = keys
        .into_iter()
        .filter(|k| model_of(k).is_none_or(|model| flat.iter().all(|m| has_model(m, &model))))
        .filter(|k| flat.iter().any(|m| m.get(*k) != flat[0].get(*k)))
        .collect();
    flat.iter()
        .map(|m| {
            let mut out: Vec<String> = differing
                .iter()
                .map(|k| format!("{k} = {}", m.get(*k).map_or("(none)", String::as_str)))
                .collect();
            if out.len() > 8 {
                let n = out.len() - 8;
                out.truncate(8);
                out.push(format!("… and {n} more"));
            }
            out
        })
        .collect()
}

fn flatten(prefix: &str, v: &Value, out: &mut BTreeMap<String, String>) {
    match v {
        Value::Object(m) if !m.is_empty() => {
            for (k, x) in m {
                let p = if prefix.is_empty() {
                    k.clone()
                } else {
                    format!("{prefix}.{k}")
                };
                flatten(&p, x, out);
            }
        }
        Value::Array(a) if !a.is_empty() && a.iter().any(|x| x.is_object()) => {
            for (i, x) in a.iter().enumerate() {
                flatten(&format!("{prefix}[{i}]"), x, out);
            }
        }
        other => {
            out.insert(prefix.to_string(), other.to_string());
        }
    }
}

fn millions(n: usize) -> String {
    format!("{:.3} M", n as f64 / 1e6)
}

fn mmacs(n: u64) -> String {
    format!("{:.1} M", n as f64 / 1e6)
}

fn pct(x: f64) -> String {
    if x.is_finite() {
        format!("{x:.2}")
    } else {
        "–".into()
    }
}

/// How markdown cells read.
#[derive(Debug, Clone, Copy, Default)]
pub struct Style {
    /// `best (last)` for one seed, as report.md shows it (the measure is then ignored).
    pub best_and_last: bool,
    /// The group's seed count: a cell with fewer seeds says its n.
    pub seeds: usize,
}

impl Table {
    fn cell_text(&self, c: &Cell, measure: Measure, style: Style) -> String {
        let mut s = if style.best_and_last && c.best.values.len() == 1 {
            format!("{} ({})", pct(c.best.values[0]), pct(c.last.values[0]))
        } else {
            let st = c.stats(measure);
            let mut s = st.text();
            if st.n != style.seeds {
                s.push_str(&format!(" (n={})", st.n));
            }
            s
        };
        if c.warned {
            s.push_str(" ⚠");
        }
        match c.paper {
            Some(PaperCell::Value(x)) => s.push_str(&format!(" [paper {}]", fmt_paper(x))),
            Some(PaperCell::Dash) => s.push_str(" [paper –]"),
            _ => {}
        }
        s
    }

    /// Whether any row has a latency.
    pub fn has_latency(&self) -> bool {
        self.teacher
            .iter()
            .chain(&self.rows)
            .any(|r| r.latency.is_some())
    }

    /// The markdown grid (header, separator, one line per row): Model, Params, MACs, one
    /// column per method, then the fastest timing's images/s and seconds per 13,000 images
    /// when measured.
    pub fn markdown_grid(&self, measure: Measure, style: Style) -> String {
        let titles: Vec<String> = self.columns.iter().map(|m| title(m)).collect();
        let latency = self.has_latency();
        let paper_seconds = latency
            && self
                .teacher
                .iter()
                .chain(&self.rows)
                .any(|r| r.paper_seconds.is_some());
        let (lat_head, lat_sep) = match (latency, paper_seconds) {
            (false, _) => ("", ""),
            (true, false) => (" img/s (best) | s / 13k img (best) |", "---:|---:|"),
            (true, true) => (
                " img/s (best) | s / 13k img (best) | paper s / 13k img |",
                "---:|---:|---:|",
            ),
        };
        let mut s = format!(
            "| Model | Params | MACs | {} |{lat_head}\n|---|---:|---:|{}{lat_sep}\n",
            titles.join(" | "),
            "---:|".repeat(self.columns.len())
        );
        let lat = |r: &Row| -> String {
            if !latency {
                return String::new();
            }
            let mut s = match &r.latency {
                Some(l) => format!(
                    " {} | {} |",
                    fastest(&l.images_per_sec, f64::max, 0),
                    fastest(&l.seconds_per_13000, f64::min, 2)
                ),
                None => " – | – |".into(),
            };
            if paper_seconds {
                s.push_str(&format!(
                    " {} |",
                    r.paper_seconds.map_or("–".into(), |x| format!("{x:.2}"))
                ));
            }
            s
        };
        if let Some(t) = &self.teacher {
            if let Some(Some(c)) = t.cells.first() {
                s.push_str(&format!(
                    "| VGG19 (teacher) | {} | {} | {} |{}{}\n",
                    millions(t.params),
                    mmacs(t.macs),
                    self.cell_text(c, measure, style),
                    " |".repeat(self.columns.len().saturating_sub(1)),
                    lat(t)
                ));
            }
        }
        for r in &self.rows {
            let cells: Vec<String> = r
                .cells
                .iter()
                .map(|c| {
                    c.as_ref()
                        .map_or("–".into(), |c| self.cell_text(c, measure, style))
                })
                .collect();
            s.push_str(&format!(
                "| {} | {} | {} | {} |{}\n",
                r.model,
                millions(r.params),
                mmacs(r.macs),
                cells.join(" | "),
                lat(r)
            ));
        }
        s
    }
}

/// The paper's value as printed (up to four decimals, no trailing zeros).
fn fmt_paper(x: f64) -> String {
    let s = format!("{x:.4}");
    s.trim_end_matches('0').trim_end_matches('.').to_string()
}

/// The best of a model's timings (every method and seed times the same architecture): the
/// one least disturbed by other work on the machine, as benchmarks report, where a mean ± std
/// would mix that noise with the model's speed. The JSON output keeps every value.
fn fastest(st: &Stats, best: fn(f64, f64) -> f64, decimals: usize) -> String {
    st.values
        .iter()
        .copied()
        .filter(|x| x.is_finite())
        .reduce(best)
        .map_or("–".into(), |x| format!("{x:.decimals$}"))
}

fn capitalise(s: &str) -> String {
    let mut c = s.chars();
    c.next()
        .map(|f| f.to_uppercase().collect::<String>() + c.as_str())
        .unwrap_or_default()
}

fn seeds_text(seeds: &[u64]) -> String {
    seeds
        .iter()
        .map(u64::to_string)
        .collect::<Vec<_>>()
        .join(", ")
}

fn csv_field(s: &str) -> String {
    if s.contains([',', '"', '\n']) {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s.to_string()
    }
}

fn csv_num(x: Option<f64>) -> String {
    x.filter(|x| x.is_finite())
        .map(|x| format!("{x}"))
        .unwrap_or_default()
}

impl Tables {
    /// The whole document: per group a heading (name, data set, seeds, what distinguishes it),
    /// then one table per scheme.
    pub fn markdown(&self) -> String {
        let m = self.options.measure;
        let mut s = format!(
            "Test accuracy (%) of the {} epoch; mean ± sample standard deviation over seeds where a group has several (a cell with fewer seeds gives its n).\n\n",
            if m == Measure::Best { "selected (best)" } else { "last" }
        );
        for (gi, g) in self.groups.iter().enumerate() {
            s.push_str(&format!("# {} — {}\n\n", g.name, g.dataset));
            s.push_str(&format!(
                "{} seed{} ({}): {}.\n\n",
                g.seeds.len(),
                if g.seeds.len() == 1 { "" } else { "s" },
                seeds_text(&g.seeds),
                g.dirs
                    .iter()
                    .map(|d| d.display().to_string())
                    .collect::<Vec<_>>()
                    .join(", ")
            ));
            if !g.distinct.is_empty() {
                s.push_str("Differs from the other groups in:\n\n");
                for d in &g.distinct {
                    s.push_str(&format!("- `{d}`\n"));
                }
                s.push('\n');
            }
            let style = Style {
                best_and_last: false,
                seeds: g.seeds.len(),
            };
            for t in self.tables.iter().filter(|t| t.group == gi) {
                s.push_str(&format!("## {} scheme", capitalise(t.scheme.as_str())));
                if let Some(n) = t.paper_table {
                    s.push_str(&format!(" (the paper's Table {n})"));
                }
                s.push_str("\n\n");
                s.push_str(&t.markdown_grid(m, style));
                s.push('\n');
                for n in &t.paper_notes {
                    s.push_str(&format!("Paper: {n}.\n"));
                }
                if !t.paper_notes.is_empty() {
                    s.push('\n');
                }
            }
        }
        s
    }

    /// One line per (group, data set, scheme, model, method), with numeric columns.
    pub fn csv(&self) -> String {
        let mut s = String::from(
            "group,name,dataset,scheme,model,method,params,macs,measure,n,mean,std,values,seeds,warned,paper,images_per_sec,seconds_per_13000\n",
        );
        let m = self.options.measure;
        for t in &self.tables {
            let g = &self.groups[t.group];
            for r in t.teacher.iter().chain(&t.rows) {
                for c in r.cells.iter().flatten() {
                    let st = c.stats(m);
                    let paper = match c.paper {
                        Some(PaperCell::Value(x)) => Some(x),
                        _ => None,
                    };
                    let fields = [
                        (t.group + 1).to_string(),
                        csv_field(&g.name),
                        csv_field(&t.dataset),
                        t.scheme.as_str().to_string(),
                        r.model.clone(),
                        csv_field(&c.method),
                        r.params.to_string(),
                        r.macs.to_string(),
                        m.as_str().to_string(),
                        st.n.to_string(),
                        csv_num(Some(st.mean)),
                        csv_num(st.std),
                        csv_field(
                            &st.values
                                .iter()
                                .map(|x| csv_num(Some(*x)))
                                .collect::<Vec<_>>()
                                .join(" "),
                        ),
                        seeds_text(&c.seeds).replace(", ", " "),
                        c.warned.to_string(),
                        csv_num(paper),
                        csv_num(r.latency.as_ref().map(|l| l.images_per_sec.mean)),
                        csv_num(r.latency.as_ref().map(|l| l.seconds_per_13000.mean)),
                    ];
                    s.push_str(&fields.join(","));
                    s.push('\n');
                }
            }
        }
        s
    }

    /// Structured: groups (identity, seeds, directories, what sets each apart) and tables
    /// (rows, and per cell values, mean, std, n, seeds, dirs and the paper's number).
    pub fn json(&self) -> Value {
        let m = self.options.measure;
        let stats = |st: &Stats| {
            json!({
                "values": st.values,
                "mean": (st.n > 0).then_some(st.mean),
                "std": st.std,
                "n": st.n,
            })
        };
        let cell = |c: &Cell| {
            let st = c.stats(m);
            let paper = match c.paper {
                None => Value::Null,
                Some(PaperCell::Value(x)) => json!(x),
                Some(PaperCell::Dash) => json!("–"),
                Some(PaperCell::NoTable) => json!("no table"),
                Some(PaperCell::NoMethod) => json!("no column"),
            };
            json!({
                "method": c.method,
                "values": st.values,
                "mean": (st.n > 0).then_some(st.mean),
                "std": st.std,
                "n": st.n,
                "seeds": c.seeds,
                "dirs": c.dirs,
                "best": stats(&c.best),
                "last": stats(&c.last),
                "warned": c.warned,
                "paper": paper,
            })
        };
        let row = |r: &Row| {
            json!({
                "model": r.model,
                "level": r.level,
                "params": r.params,
                "macs": r.macs,
                "latency": r.latency.as_ref().map(|l| json!({
                    "device": l.device,
                    "images_per_sec": stats(&l.images_per_sec),
                    "seconds_per_13000": stats(&l.seconds_per_13000),
                })),
                "paper_seconds_per_13000": r.paper_seconds,
                "cells": r.cells.iter().map(|c| c.as_ref().map(cell)).collect::<Vec<_>>(),
            })
        };
        json!({
            "measure": m.as_str(),
            "groups": self.groups.iter().map(|g| json!({
                "name": g.name,
                "dataset": g.dataset,
                "seeds": g.seeds,
                "dirs": g.dirs,
                "identity": g.identity,
                "distinct": g.distinct,
                "columns": g.columns,
            })).collect::<Vec<_>>(),
            "tables": self.tables.iter().map(|t| json!({
                "group": t.group,
                "dataset": t.dataset,
                "scheme": t.scheme.as_str(),
                "columns": t.columns,
                "paper_table": t.paper_table,
                "paper_notes": t.paper_notes,
                "teacher": t.teacher.as_ref().map(row),
                "rows": t.rows.iter().map(row).collect::<Vec<_>>(),
            })).collect::<Vec<_>>(),
        })
    }
}

/// Writes `text` to `path` atomically.
pub fn write(path: &Path, text: &str) -> Result<(), Error> {
    Ok(pyramid_fsio::write_atomic(path, text.as_bytes())?)
}
