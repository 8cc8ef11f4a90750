//! Dataset readers and the seeded input pipeline of the Pyramid toolkit.
//!
//! * [`Dataset`]: u8 images in NCHW order plus labels and class names.
//! * [`load`]: reads a [`DatasetKind`] split from disk (or from the embedded Fashion-MNIST
//!   subset, which needs no files).
//! * [`loader`]: resizing (PIL-exact bilinear), channel adaptation, seeded augmentation,
//!   normalisation and parallel, prefetched batching into candle tensors.
//!
//! * [`registry`]: one [`DatasetInfo`] entry per data set (names, shape, classes,
//!   normalisation, official sizes, default root, layouts and readers, archive, hint), read by
//!   everything else; [`register`] adds one.
//!
//! Data layout on disk. The root folder is `root_dir` (the argument of [`load`], [`verify()`]),
//! else a non-empty `$PYRAMID_DATA`; a root given either way must exist and hold the data set
//! in one of its entry's layouts (printed by [`layouts`]), or [`load`] fails with
//! [`Error::NoDataset`] naming it: nothing else is searched in its place. Only when neither is
//! given is the entry's default root used (`/usr/share/datasets/fashion-mnist` for
//! Fashion-MNIST, `./data` otherwise). The embedded set takes no root.

#![warn(missing_docs)]

pub mod cifar;
pub mod dataset;
pub mod embedded;
pub mod error;
pub mod fetch;
pub mod idx;
pub mod loader;
pub mod pickle;
pub mod registry;
pub mod resize;
pub mod stl10;
pub mod verify;

use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use registry::Source;
pub use registry::{register, DatasetInfo, LabelSet};

pub use dataset::Dataset;
pub use error::{Error, Result};
pub use loader::{Augment, Batch, BatchIter, Channels, Loader, LoaderConfig, Normalize};
pub use verify::{show_grid, verify, verify_with, Summary, Verdict, VerifyOptions};

/// Environment variable naming the data root folder.
pub const DATA_ENV: &str = "PYRAMID_DATA";
/// The default root of most data sets (and of the embedded one, which reads none).
pub const DEFAULT_DATA_DIR: &str = "data";

/// Which CIFAR-100 labels to use: an index into [`cifar::CIFAR100`]'s label sets.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Cifar100Labels {
    /// The 100 fine classes (default; what the paper uses).
    #[default]
    Fine = 0,
    /// The 20 superclasses.
    Coarse = 1,
}

impl Cifar100Labels {
    /// The labels of label set `k` of [`cifar::CIFAR100`].
    pub(crate) fn from_index(k: usize) -> Self {
        if k == Cifar100Labels::Coarse as usize {
            Cifar100Labels::Coarse
        } else {
            Cifar100Labels::Fine
        }
    }
}

/// A data set, with one of its label sets: the handle of a [`DatasetInfo`] entry, which holds
/// everything else. In configs it is written either as a string (`"stl10"`, `"cifar100"`,
/// `"cifar100:coarse"`, `"fashion-mnist"`, `"embedded"`) or as a table
/// `{ kind = "cifar100", labels = "coarse" }`; it is serialised as the table.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DatasetKind {
    /// Full Fashion-MNIST (70,000 28×28 grayscale images, 10 classes), read from IDX files.
    FashionMnist,
    /// The class-balanced Fashion-MNIST subset compiled into this library.
    Embedded,
    /// STL-10: 96×96 RGB images, 10 classes, 5,000 train and 8,000 test (plus unlabeled).
    Stl10,
    /// CIFAR-10: 32×32 RGB images, 10 classes, 50,000 train and 10,000 test.
    Cifar10,
    /// CIFAR-100: 32×32 RGB images, 50,000 train and 10,000 test, fine or coarse labels.
    Cifar100 {
        /// Which label set: the 100 fine classes or the 20 superclasses.
        labels: Cifar100Labels,
    },
    /// A data set without a variant of its own: a newer entry of [`registry::BUILTIN`], or
    /// one added with [`register`].
    Other(DatasetId),
}

/// A [`DatasetKind::Other`]: a data set and one of its label sets. Made only by parsing,
/// deserialising or [`register`], which give a data set that has a variant that variant, so
/// two kinds of one data set and label set always compare equal.
#[derive(Clone, Copy)]
pub struct DatasetId {
    info: &'static DatasetInfo,
    labels: usize,
}

// Registered names are unique, so the name identifies the entry.
impl PartialEq for DatasetId {
    fn eq(&self, other: &Self) -> bool {
        (self.info.name, self.labels) == (other.info.name, other.labels)
    }
}

impl Eq for DatasetId {}

impl std::hash::Hash for DatasetId {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        (self.info.name, self.labels).hash(state);
    }
}

impl fmt::Debug for DatasetId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "DatasetId({})", DatasetKind::Other(*self))
    }
}

impl DatasetKind {
    /// The variants of the built-in data sets: a kind parsed or deserialised from a name is
    /// one of these whenever it can be, so it compares equal to them.
    const NAMED: [DatasetKind; 6] = [
        DatasetKind::FashionMnist,
        DatasetKind::Embedded,
        DatasetKind::Stl10,
        DatasetKind::Cifar10,
        DatasetKind::Cifar100 {
            labels: Cifar100Labels::Fine,
        },
        DatasetKind::Cifar100 {
            labels: Cifar100Labels::Coarse,
        },
    ];

    /// The entry and the label set (an index into its `labels`). The one match on the kind.
    fn parts(&self) -> (&'static DatasetInfo, usize) {
        match *self {
            DatasetKind::FashionMnist => (&idx::FASHION_MNIST, 0),
            DatasetKind::Embedded => (&embedded::EMBEDDED, 0),
            DatasetKind::Stl10 => (&stl10::STL10, 0),
            DatasetKind::Cifar10 => (&cifar::CIFAR10, 0),
            DatasetKind::Cifar100 { labels } => (&cifar::CIFAR100, labels as usize),
            DatasetKind::Other(id) => (id.info, id.labels),
        }
    }

    /// The kind of `info` with label set `labels`.
    pub(crate) fn from_info(info: &'static DatasetInfo, labels: usize) -> Self {
        Self::NAMED
            .into_iter()
            .find(|k| {
                let (i, l) = k.parts();
                (i.name, l) == (info.name, labels)
            })
            .unwrap_or(DatasetKind::Other(DatasetId { info, labels }))
    }

    /// Everything about this data set.
    pub fn info(&self) -> &'static DatasetInfo {
        self.parts().0
    }

    /// The label set used.
    pub fn label_set(&self) -> &'static LabelSet {
        let (info, l) = self.parts();
        &info.labels[l]
    }

    /// Native (channels, height, width) of the images.
    pub fn native_shape(&self) -> (usize, usize, usize) {
        self.info().shape
    }

    /// Number of classes of the label set.
    pub fn num_classes(&self) -> usize {
        self.label_set().classes.len()
    }

    /// The built-in class names, in label order.
    pub fn class_names(&self) -> &'static [&'static str] {
        self.label_set().classes
    }

    /// The normalisation constants used for this dataset (docs/method.md §1); see [`Normalize`].
    pub fn normalize(&self, channels: usize) -> Normalize {
        self.info().normalize(channels)
    }

    /// True for the embedded Fashion-MNIST subset (no files, no root).
    pub fn is_embedded(&self) -> bool {
        self.info().is_embedded()
    }
}

impl FromStr for DatasetKind {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        registry::parse(s)
    }
}

impl fmt::Display for DatasetKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (info, l) = self.parts();
        match l {
            0 => f.write_str(info.name),
            _ => write!(f, "{}:{}", info.name, info.labels[l].name),
        }
    }
}

/// `{ kind = "cifar100", labels = "fine" }`; `labels` only for a data set with several.
impl Serialize for DatasetKind {
    fn serialize<S: Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        use serde::ser::SerializeStruct;
        let (info, l) = self.parts();
        let several = info.labels.len() > 1;
        let mut t = s.serialize_struct("DatasetKind", 1 + usize::from(several))?;
        t.serialize_field("kind", info.name)?;
        if several {
            t.serialize_field("labels", info.labels[l].name)?;
        }
        t.end()
    }
}

#[derive(Deserialize)]
#[serde(untagged)]
enum KindRepr {
    Name(String),
    Tagged {
        kind: String,
        #[serde(default)]
        labels: Option<String>,
    },
}

impl<'de> Deserialize<'de> for DatasetKind {
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        use serde::de::Error as _;
        match KindRepr::deserialize(d)? {
            KindRepr::Name(s) => s.parse().map_err(D::Error::custom),
            KindRepr::Tagged { kind, labels } => {
                let info = registry::find(&kind)
                    .ok_or_else(|| D::Error::custom(registry::unknown(&kind)))?;
                let l = match labels {
                    None => 0,
                    Some(l) => info.label_set(&l).ok_or_else(|| {
                        let sets: Vec<&str> = info.labels.iter().map(|s| s.name).collect();
                        D::Error::custom(match info.labels.len() {
                            1 => format!(
                                "{} has one label set; labels = {l:?} is not one",
                                info.name
                            ),
                            _ => format!(
                                "unknown labels {l:?} for {}; expected one of {}",
                                info.name,
                                sets.join(", ")
                            ),
                        })
                    })?,
                };
                Ok(DatasetKind::from_info(info, l))
            }
        }
    }
}

/// A dataset split.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Split {
    /// The labelled training split.
    Train,
    /// The labelled test split.
    Test,
    /// STL10's 100,000 unlabeled images (see `stl10::UnlabeledStl10`).
    Unlabeled,
}

impl Split {
    /// `"train"`, `"test"` or `"unlabeled"`, as written in configs and file names.
    pub fn as_str(&self) -> &'static str {
        match self {
            Split::Train => "train",
            Split::Test => "test",
            Split::Unlabeled => "unlabeled",
        }
    }
}

impl fmt::Display for Split {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Split {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        match s.trim().to_ascii_lowercase().as_str() {
            "train" => Ok(Split::Train),
            "test" | "t10k" => Ok(Split::Test),
            "unlabeled" | "unlabelled" => Ok(Split::Unlabeled),
            _ => Err(Error::Invalid(format!(
                "unknown split {s:?}; expected train, test or unlabeled"
            ))),
        }
    }
}

/// Where a data root came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum RootOrigin {
    /// Passed by the caller (`root_dir`: a `--dir`, `--data-dir` or `[data] root`).
    Argument,
    /// Read from `$PYRAMID_DATA`.
    Env,
    /// Nothing was given: the kind's default location.
    Default,
}

impl fmt::Display for RootOrigin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            RootOrigin::Argument => "given explicitly",
            RootOrigin::Env => "given by $PYRAMID_DATA",
            RootOrigin::Default => "the default, as no root and no $PYRAMID_DATA was given",
        })
    }
}

/// A data root as chosen by [`resolve_root`]. An explicit root must hold the data set (see
/// [`locate`]); nothing else is ever searched in its place.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DataRoot {
    /// Given by an argument or `$PYRAMID_DATA`.
    Explicit {
        /// The root as given.
        path: PathBuf,
        /// Whether an argument or `$PYRAMID_DATA` gave it.
        origin: RootOrigin,
    },
    /// No path given: the kind's default ([`DatasetInfo::default_root`]).
    Default(PathBuf),
}

impl DataRoot {
    /// The root's path (not checked to exist).
    pub fn path(&self) -> &Path {
        match self {
            DataRoot::Explicit { path, .. } | DataRoot::Default(path) => path,
        }
    }

    /// Where the root came from.
    pub fn origin(&self) -> RootOrigin {
        match self {
            DataRoot::Explicit { origin, .. } => *origin,
            DataRoot::Default(_) => RootOrigin::Default,
        }
    }

    /// True when the root was given (argument or `$PYRAMID_DATA`), not defaulted.
    pub fn is_explicit(&self) -> bool {
        matches!(self, DataRoot::Explicit { .. })
    }
}

// Lets a `DataRoot` stand where a `&Path` is expected (the root itself, unchecked).
impl std::ops::Deref for DataRoot {
    type Target = Path;
    fn deref(&self) -> &Path {
        self.path()
    }
}

impl AsRef<Path> for DataRoot {
    fn as_ref(&self) -> &Path {
        self.path()
    }
}

/// Chooses the data root, without touching the file system: `root_dir`, else a non-empty
/// `$PYRAMID_DATA`, else the kind's default. Use [`locate`] to check that it holds the data.
pub fn resolve_root(kind: DatasetKind, root_dir: Option<&Path>) -> DataRoot {
    if let Some(r) = root_dir {
        return DataRoot::Explicit {
            path: r.to_path_buf(),
            origin: RootOrigin::Argument,
        };
    }
    if let Some(v) = std::env::var_os(DATA_ENV) {
        if !v.is_empty() {
            return DataRoot::Explicit {
                path: PathBuf::from(v),
                origin: RootOrigin::Env,
            };
        }
    }
    DataRoot::Default(PathBuf::from(kind.info().default_root()))
}

/// The folders and files searched under a root for `kind`.
pub fn layouts(kind: DatasetKind) -> String {
    let info = kind.info();
    if info.is_embedded() {
        return "none (compiled into the library)".into();
    }
    let all: Vec<String> = info.layouts().iter().map(|l| l.describe()).collect();
    all.join(", or ")
}

/// How to obtain `kind`.
pub fn fetch_hint(kind: DatasetKind) -> &'static str {
    kind.info().hint
}

/// Where a data set's files are, as found by [`locate`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Located {
    /// The embedded subset: compiled in, no files.
    Embedded,
    /// `dir` (`root` itself or a folder under it) holds the files.
    Files {
        /// The root that was searched.
        root: DataRoot,
        /// The folder holding the files.
        dir: PathBuf,
    },
}

/// Finds the folder that holds `kind` under the root chosen by [`resolve_root`]. It is an
/// error if that root does not exist or holds the data set in none of the [`layouts`]
/// (explicit or default root alike: there is no fallback), and if a root is given for the
/// embedded set, which takes none (`$PYRAMID_DATA` is not read for it).
pub fn locate(kind: DatasetKind, root_dir: Option<&Path>) -> Result<Located> {
    let info = kind.info();
    if info.is_embedded() {
        if let Some(r) = root_dir {
            return Err(Error::Invalid(format!(
                "the {kind} data set is compiled into the binary and takes no data root \
                 (got {})",
                r.display()
            )));
        }
        return Ok(Located::Embedded);
    }
    let root = resolve_root(kind, root_dir);
    match info.find(root.path()) {
        Some((_, dir)) => Ok(Located::Files { root, dir }),
        None => {
            let problem = match std::fs::metadata(root.path()) {
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => "does not exist".into(),
                Err(e) => format!("cannot be read ({e})"),
                Ok(m) if !m.is_dir() => "is not a folder".into(),
                Ok(_) => format!("holds no {kind} files"),
            };
            Err(Error::NoDataset {
                root: root.path().to_path_buf(),
                kind,
                origin: root.origin(),
                problem,
            })
        }
    }
}

/// Reads one split from where [`locate`] found it, with the reader of the layout found
/// there; no check of the image shape.
pub(crate) fn read_located(kind: DatasetKind, loc: &Located, split: Split) -> Result<Dataset> {
    let (info, labels) = kind.parts();
    match (&info.source, loc) {
        (Source::Embedded { read }, _) => read(split),
        (Source::Files { layouts, .. }, Located::Files { dir, .. }) => {
            // `locate` returns the folder, not the layout: the first that `dir` holds.
            let layout = layouts.iter().find(|l| l.holds(dir)).ok_or_else(|| {
                Error::Invalid(format!("{} holds no {kind} files", dir.display()))
            })?;
            (layout.read)(dir, split, labels)
        }
        (Source::Files { .. }, Located::Embedded) => {
            Err(Error::Invalid(format!("{kind} is not embedded")))
        }
    }
}

/// Loads one split of a dataset into memory.
///
/// The files are looked for by [`locate`] (explicit root, `$PYRAMID_DATA` or the kind's
/// default; see the crate docs for the layouts), and a root that does not hold the data set
/// is an error. Images of another shape than [`DatasetKind::native_shape`] are an error too.
/// `Split::Unlabeled` exists only for STL10 and is too large to load: use
/// `stl10::UnlabeledStl10::open` instead.
pub fn load(kind: DatasetKind, root_dir: Option<&Path>, split: Split) -> Result<Dataset> {
    let loc = locate(kind, root_dir)?;
    if let Located::Files { root, dir } = &loc {
        tracing::debug!(%kind, %split, root = %root.display(), origin = %root.origin(),
            dir = %dir.display(), "loading dataset");
    }
    let d = read_located(kind, &loc, split)?;
    if let Some(msg) = shape_problem(kind, &d) {
        return Err(Error::Invalid(format!("{kind} {split}: {msg}")));
    }
    tracing::debug!(name = %d.name, n = d.n, "loaded dataset");
    Ok(d)
}

/// Why `d`'s images do not have `kind`'s native shape, if they don't.
pub(crate) fn shape_problem(kind: DatasetKind, d: &Dataset) -> Option<String> {
    let (c, h, w) = kind.native_shape();
    ((d.channels, d.height, d.width) != (c, h, w)).then(|| {
        format!(
            "images are {}×{}×{}, {kind} images are {c}×{h}×{w} ({})",
            d.channels, d.height, d.width, d.name
        )
    })
}
