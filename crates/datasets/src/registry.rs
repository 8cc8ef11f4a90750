//! What the crate knows about each data set, in one [`DatasetInfo`] entry per data set.
//!
//! `load`, `locate`, `verify`, `fetch`, `resolve_root`, and `DatasetKind`'s names, shape,
//! classes, normalisation and serde all read the entry; nothing else knows about a data set.
//! A built-in entry is a `static` next to its reader (e.g. [`crate::stl10::STL10`]) and one line
//! in [`BUILTIN`]; any other one is added at run time with [`register`] and is then a
//! [`DatasetKind::Other`] that every function of the crate accepts.

use std::path::{Path, PathBuf};
use std::sync::RwLock;

use crate::dataset::Dataset;
use crate::error::{Error, Result};
use crate::loader::Normalize;
use crate::{DatasetKind, Split, DEFAULT_DATA_DIR};

/// Everything about one data set.
#[derive(Debug)]
pub struct DatasetInfo {
    /// The canonical name: printed, serialised and used in messages (`"fashion-mnist"`).
    pub name: &'static str,
    /// Other accepted names. Names are compared ignoring case, `-`, `_` and spaces, so
    /// `fashion_mnist` and `FashionMNIST` need no alias.
    pub aliases: &'static [&'static str],
    /// Native (channels, height, width) of the images; other shapes are refused.
    pub shape: (usize, usize, usize),
    /// The label sets; the first is the default, another is chosen as `name:set`.
    pub labels: &'static [LabelSet],
    /// Normalisation `(x/255 − mean) / std` (docs/method.md §1); a single value applies to every
    /// channel.
    pub mean: &'static [f32],
    /// Standard deviation per channel (or one for all), same convention as `mean`.
    pub std: &'static [f32],
    /// Official number of training and test images (`verify` checks them).
    pub train: usize,
    /// Official number of test images (`verify` checks it).
    pub test: usize,
    /// An unlabeled split on disk that `verify` counts when present (STL-10's).
    pub unlabeled: Option<Unlabeled>,
    /// Compiled in, or files under a data root.
    pub source: Source,
    /// How to obtain the data, shown when it is not found ("" when nothing is needed).
    pub hint: &'static str,
}

/// One way to label the images (CIFAR-100: 100 fine classes or 20 coarse ones).
#[derive(Debug)]
pub struct LabelSet {
    /// `""` for a data set's only label set; otherwise the `set` of `name:set` and the
    /// `labels = "set"` of a config.
    pub name: &'static str,
    /// Class names in label order (a name file next to the data may override them).
    pub classes: &'static [&'static str],
}

impl LabelSet {
    /// The only label set of a data set.
    pub const fn only(classes: &'static [&'static str]) -> Self {
        Self { name: "", classes }
    }
}

/// Where the images come from.
#[derive(Debug)]
pub enum Source {
    /// Compiled into the library: no data root, nothing to fetch.
    Embedded {
        /// Reads a split from the compiled-in data.
        read: fn(Split) -> Result<Dataset>,
    },
    /// Files under a data root.
    Files {
        /// The root used when neither an argument nor `$PYRAMID_DATA` gives one.
        default_root: &'static str,
        /// The layouts searched, in order; the first folder that holds one wins.
        layouts: &'static [Layout],
        /// The official archive, if `fetch` can download it.
        archive: Option<Archive>,
    },
}

/// One arrangement of a data set's files, and its reader.
#[derive(Debug)]
pub struct Layout {
    /// Folders tried under the root, in order; `""` is the root itself.
    pub dirs: &'static [&'static str],
    /// A folder holds this layout when it holds any of these files.
    pub markers: &'static [&'static str],
    /// The files read, for messages (`"{train,test}_{X,y}.bin"`).
    pub files: &'static str,
    /// Reads one split from a folder of this layout; the `usize` is the label set (an index
    /// into [`DatasetInfo::labels`]).
    pub read: fn(&Path, Split, usize) -> Result<Dataset>,
}

impl Layout {
    /// Whether `dir` itself holds this layout.
    pub fn holds(&self, dir: &Path) -> bool {
        self.markers.iter().any(|m| dir.join(m).is_file())
    }

    /// The first of `dirs` under `root` that holds this layout.
    pub fn find(&self, root: &Path) -> Option<PathBuf> {
        self.dirs
            .iter()
            .map(|d| {
                if d.is_empty() {
                    root.to_path_buf()
                } else {
                    root.join(d)
                }
            })
            .find(|d| self.holds(d))
    }

    /// `{root/sub, root}/files`, as in messages.
    pub fn describe(&self) -> String {
        let dirs: Vec<String> = self
            .dirs
            .iter()
            .map(|d| {
                if d.is_empty() {
                    "root".into()
                } else {
                    format!("root/{d}")
                }
            })
            .collect();
        format!("{{{}}}/{}", dirs.join(", "), self.files)
    }
}

/// An official archive: downloaded, checked and unpacked by `fetch`.
#[derive(Debug)]
pub struct Archive {
    /// Download address of the archive.
    pub url: &'static str,
    /// The publisher's MD5, lower-case hex.
    pub md5: &'static str,
    /// The folder the archive unpacks to.
    pub folder: &'static str,
    /// Files in `folder` whose presence means the data is there (all of them).
    pub markers: &'static [&'static str],
}

/// A split too large to load, checked by `verify` when its file is present.
#[derive(Debug)]
pub struct Unlabeled {
    /// File name in the data folder.
    pub file: &'static str,
    /// Official number of images.
    pub official: usize,
    /// Counts the images of the file (checking its format).
    pub count: fn(&Path) -> Result<usize>,
}

impl DatasetInfo {
    /// Normalisation constants for images of `channels` channels.
    pub fn normalize(&self, channels: usize) -> Normalize {
        let widen = |v: &[f32]| match v {
            [x] => vec![*x; channels.max(1)],
            v => v.to_vec(),
        };
        Normalize::new(widen(self.mean), widen(self.std))
    }

    /// True for the compiled-in subset (no data root).
    pub fn is_embedded(&self) -> bool {
        matches!(self.source, Source::Embedded { .. })
    }

    /// The data root used when none is given.
    pub fn default_root(&self) -> &'static str {
        match self.source {
            Source::Files { default_root, .. } => default_root,
            Source::Embedded { .. } => DEFAULT_DATA_DIR,
        }
    }

    /// The folder layouts searched under a data root, in order (none for the embedded set).
    pub fn layouts(&self) -> &'static [Layout] {
        match self.source {
            Source::Files { layouts, .. } => layouts,
            Source::Embedded { .. } => &[],
        }
    }

    /// The official archive `fetch` downloads, if the data set has one.
    pub fn archive(&self) -> Option<&Archive> {
        match &self.source {
            Source::Files { archive, .. } => archive.as_ref(),
            Source::Embedded { .. } => None,
        }
    }

    /// The first layout's folder under `root`, with the layout.
    pub fn find(&self, root: &Path) -> Option<(&'static Layout, PathBuf)> {
        self.layouts()
            .iter()
            .find_map(|l| l.find(root).map(|d| (l, d)))
    }

    /// The index of the label set called `set` (compared like names), if any.
    pub fn label_set(&self, set: &str) -> Option<usize> {
        let set = normalise(set);
        self.labels
            .iter()
            .position(|l| !l.name.is_empty() && normalise(l.name) == set)
    }

    fn spellings(&self) -> impl Iterator<Item = String> + '_ {
        std::iter::once(self.name)
            .chain(self.aliases.iter().copied())
            .map(normalise)
    }

    fn answers_to(&self, normalised: &str) -> bool {
        self.spellings().any(|s| s == normalised)
    }

    /// Why this entry cannot be used, if it cannot.
    fn problem(&self) -> Option<String> {
        let (c, h, w) = self.shape;
        if normalise(self.name).is_empty() || self.name.contains(':') {
            return Some("its name is empty or holds ':'".into());
        }
        if c * h * w == 0 {
            return Some(format!("image shape {c}×{h}×{w}"));
        }
        if self.labels.is_empty() || self.labels.iter().any(|l| l.classes.is_empty()) {
            return Some("a data set needs a label set, and a label set classes".into());
        }
        if self.labels.len() > 1 && self.labels.iter().any(|l| l.name.is_empty()) {
            return Some("every label set of several needs a name".into());
        }
        if ![1, c].contains(&self.mean.len()) || self.mean.len() != self.std.len() {
            return Some(format!(
                "normalisation of {} means and {} stds for {c} channels",
                self.mean.len(),
                self.std.len()
            ));
        }
        if !self.is_embedded() && self.layouts().is_empty() {
            return Some("a data set on disk needs a layout".into());
        }
        None
    }
}

/// Case, `-`, `_` and spaces do not matter in names.
fn normalise(s: &str) -> String {
    s.trim()
        .to_ascii_lowercase()
        .chars()
        .filter(|c| !matches!(c, '-' | '_' | ' '))
        .collect()
}

/// The built-in data sets, in the order they are listed in messages.
pub static BUILTIN: &[&DatasetInfo] = &[
    &crate::idx::FASHION_MNIST,
    &crate::embedded::EMBEDDED,
    &crate::stl10::STL10,
    &crate::cifar::CIFAR10,
    &crate::cifar::CIFAR100,
];

/// Data sets added with [`register`].
static REGISTERED: RwLock<Vec<&'static DatasetInfo>> = RwLock::new(Vec::new());

/// Every known data set: the built-in ones, then the registered ones.
pub fn all() -> Vec<&'static DatasetInfo> {
    let reg = REGISTERED.read().unwrap_or_else(|e| e.into_inner());
    BUILTIN.iter().copied().chain(reg.iter().copied()).collect()
}

/// The data set called `name` (or one of its aliases; no `:set`).
pub fn find(name: &str) -> Option<&'static DatasetInfo> {
    let n = normalise(name);
    all().into_iter().find(|i| i.answers_to(&n))
}

/// Adds a data set, so that its name parses to a [`DatasetKind`] (returned: its default
/// label set) that every function of the crate accepts. Registering the same entry again is a
/// no-op; a name or alias that another data set answers to is an error.
pub fn register(info: &'static DatasetInfo) -> Result<DatasetKind> {
    if let Some(p) = info.problem() {
        return Err(Error::Invalid(format!("data set {:?}: {p}", info.name)));
    }
    let mut reg = REGISTERED.write().unwrap_or_else(|e| e.into_inner());
    let known = BUILTIN.iter().copied().chain(reg.iter().copied());
    for other in known {
        if std::ptr::eq(other, info) {
            return Ok(DatasetKind::from_info(info, 0));
        }
        if let Some(s) = info.spellings().find(|s| other.answers_to(s)) {
            return Err(Error::Invalid(format!(
                "data set {:?}: the name {s:?} is taken by {}",
                info.name, other.name
            )));
        }
    }
    reg.push(info);
    Ok(DatasetKind::from_info(info, 0))
}

/// Parses `name` or `name:set` (also `nameset` run together, as `cifar100coarse`).
pub(crate) fn parse(s: &str) -> Result<DatasetKind> {
    let n = normalise(s);
    let all = all();
    let (base, set) = match n.split_once(':') {
        Some((b, l)) => (b, Some(l)),
        None => (n.as_str(), None),
    };
    if let Some(info) = all.iter().find(|i| i.answers_to(base)) {
        match set {
            None => return Ok(DatasetKind::from_info(info, 0)),
            Some(l) => {
                if let Some(k) = info.label_set(l) {
                    return Ok(DatasetKind::from_info(info, k));
                }
            }
        }
    }
    if set.is_none() {
        for info in &all {
            for (k, l) in info
                .labels
                .iter()
                .enumerate()
                .filter(|(_, l)| !l.name.is_empty())
            {
                let set = normalise(l.name);
                if info.spellings().any(|sp| n == format!("{sp}{set}")) {
                    return Ok(DatasetKind::from_info(info, k));
                }
            }
        }
    }
    Err(unknown(s))
}

/// The error for a name no data set answers to.
pub(crate) fn unknown(s: &str) -> Error {
    Error::Invalid(format!(
        "unknown dataset {s:?}; expected one of {}",
        names(&all()).join(", ")
    ))
}

/// Every spelling `Display` prints: `name`, and `name:set` for the other label sets.
fn names(all: &[&'static DatasetInfo]) -> Vec<String> {
    all.iter()
        .flat_map(|i| {
            std::iter::once(i.name.to_string()).chain(
                i.labels
                    .iter()
                    .skip(1)
                    .map(|l| format!("{}:{}", i.name, l.name)),
            )
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builtin_entries_are_usable_and_distinct() {
        for (k, info) in BUILTIN.iter().enumerate() {
            assert_eq!(info.problem(), None, "{}", info.name);
            for other in &BUILTIN[k + 1..] {
                assert!(
                    info.spellings().all(|s| !other.answers_to(&s)),
                    "{} and {}",
                    info.name,
                    other.name
                );
            }
        }
        assert_eq!(
            names(BUILTIN),
            [
                "fashion-mnist",
                "embedded",
                "stl10",
                "cifar10",
                "cifar100",
                "cifar100:coarse"
            ]
        );
    }

    /// Configs and run fingerprints hold this form: it must not change. (Fashion-MNIST's
    /// was `fashion_mnist` until its name got one spelling; that form still parses.)
    #[test]
    fn serialised_form_is_as_before_the_table() {
        use crate::Cifar100Labels;
        let json = |k: DatasetKind| serde_json::to_string(&k).unwrap();
        assert_eq!(
            json(DatasetKind::FashionMnist),
            r#"{"kind":"fashion-mnist"}"#
        );
        for old in [
            r#"{"kind":"fashion_mnist"}"#,
            r#""fashion_mnist""#,
            r#""FashionMNIST""#,
            r#""fmnist""#,
        ] {
            assert_eq!(
                serde_json::from_str::<DatasetKind>(old).unwrap(),
                DatasetKind::FashionMnist,
                "{old}"
            );
        }
        assert_eq!(json(DatasetKind::Embedded), r#"{"kind":"embedded"}"#);
        assert_eq!(json(DatasetKind::Cifar10), r#"{"kind":"cifar10"}"#);
        for (labels, name) in [
            (Cifar100Labels::Fine, "fine"),
            (Cifar100Labels::Coarse, "coarse"),
        ] {
            let k = DatasetKind::Cifar100 { labels };
            assert_eq!(
                json(k),
                format!(r#"{{"kind":"cifar100","labels":"{name}"}}"#)
            );
            assert_eq!(serde_json::from_str::<DatasetKind>(&json(k)).unwrap(), k);
        }
        assert_eq!(
            serde_json::from_str::<DatasetKind>(r#"{"kind":"cifar100"}"#).unwrap(),
            DatasetKind::Cifar100 {
                labels: Cifar100Labels::Fine
            }
        );
        for k in DatasetKind::NAMED {
            assert_eq!(k.to_string().parse::<DatasetKind>().unwrap(), k);
        }
    }
}
