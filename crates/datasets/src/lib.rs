//! Dataset readers and the seeded input pipeline of the Pyramid toolkit.
//!
//! * [`Dataset`]: u8 images in NCHW order plus labels and class names.
//! * [`load`]: reads a [`DatasetKind`] split from disk (or from the embedded Fashion-MNIST
//!   subset, which needs no files).
//! * [`loader`]: resizing (PIL-exact bilinear), channel adaptation, seeded augmentation,
//!   normalisation and parallel, prefetched batching into candle tensors.
//!
//! Data layout on disk. The root folder is `root_dir` (the argument of [`load`], [`verify`]),
//! else a non-empty `$PYRAMID_DATA`; a root given either way must exist and hold the data set
//! in one of these layouts, or [`load`] fails with [`Error::NoDataset`] naming it: nothing
//! else is searched in its place. Only when neither is given is the default used.
//!
//! | kind | files looked for (first match wins) | default root |
//! |---|---|---|
//! | `fashion_mnist` | `{root, root/fashion-mnist, root/FashionMNIST/raw}/{train,t10k}-{images-idx3,labels-idx1}-ubyte[.gz]` | `/usr/share/datasets/fashion-mnist` |
//! | `embedded` | none: compiled in; a `root_dir` is an error, `$PYRAMID_DATA` is not read | - |
//! | `stl10` | `{root/stl10_binary, root}/{train,test}_{X,y}.bin` (one of `train_X.bin`, `test_X.bin` marks the folder), `class_names.txt`, `unlabeled_X.bin` | `./data` |
//! | `cifar10` | `{root/cifar-10-batches-bin, root}/data_batch_{1..5}.bin, test_batch.bin, batches.meta.txt`, else the python pickles `{root/cifar-10-batches-py, root}/{data_batch_{1..5}, test_batch, batches.meta}` | `./data` |
//! | `cifar100` | `{root/cifar-100-binary, root}/{train,test}.bin, {fine,coarse}_label_names.txt`, else the pickles `{root/cifar-100-python, root}/{train, test, meta}` | `./data` |

pub mod cifar;
pub mod dataset;
pub mod embedded;
pub mod error;
pub mod fetch;
pub mod idx;
pub mod loader;
pub mod pickle;
pub mod resize;
pub mod stl10;
pub mod verify;

use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

pub use dataset::Dataset;
pub use error::{Error, Result};
pub use loader::{Augment, Batch, BatchIter, Channels, Loader, LoaderConfig, Normalize};
pub use verify::{show_grid, verify, verify_with, Summary, Verdict, VerifyOptions};

/// Environment variable naming the data root folder.
pub const DATA_ENV: &str = "PYRAMID_DATA";
/// Root used for STL10 / CIFAR when neither an argument nor `$PYRAMID_DATA` is given.
pub const DEFAULT_DATA_DIR: &str = "data";

/// Which CIFAR-100 labels to use.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Cifar100Labels {
    /// The 100 fine classes (default; what the paper uses).
    #[default]
    Fine,
    /// The 20 superclasses.
    Coarse,
}

/// A dataset family. In configs it is written either as a string (`"stl10"`,
/// `"cifar100"`, `"cifar100:coarse"`, `"fashion_mnist"`, `"embedded"`) or as a table
/// `{ kind = "cifar100", labels = "coarse" }`; it is serialised as the table.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DatasetKind {
    FashionMnist,
    /// The class-balanced Fashion-MNIST subset compiled into this library.
    Embedded,
    Stl10,
    Cifar10,
    Cifar100 {
        labels: Cifar100Labels,
    },
}

#[derive(Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
enum TaggedKind {
    FashionMnist,
    Embedded,
    Stl10,
    Cifar10,
    Cifar100 {
        #[serde(default)]
        labels: Cifar100Labels,
    },
}

#[derive(Deserialize)]
#[serde(untagged)]
enum KindRepr {
    Name(String),
    Tagged(TaggedKind),
}

impl From<TaggedKind> for DatasetKind {
    fn from(t: TaggedKind) -> Self {
        match t {
            TaggedKind::FashionMnist => DatasetKind::FashionMnist,
            TaggedKind::Embedded => DatasetKind::Embedded,
            TaggedKind::Stl10 => DatasetKind::Stl10,
            TaggedKind::Cifar10 => DatasetKind::Cifar10,
            TaggedKind::Cifar100 { labels } => DatasetKind::Cifar100 { labels },
        }
    }
}

impl Serialize for DatasetKind {
    fn serialize<S: Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        let t = match *self {
            DatasetKind::FashionMnist => TaggedKind::FashionMnist,
            DatasetKind::Embedded => TaggedKind::Embedded,
            DatasetKind::Stl10 => TaggedKind::Stl10,
            DatasetKind::Cifar10 => TaggedKind::Cifar10,
            DatasetKind::Cifar100 { labels } => TaggedKind::Cifar100 { labels },
        };
        t.serialize(s)
    }
}

impl<'de> Deserialize<'de> for DatasetKind {
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        match KindRepr::deserialize(d)? {
            KindRepr::Name(s) => s.parse().map_err(serde::de::Error::custom),
            KindRepr::Tagged(t) => Ok(t.into()),
        }
    }
}

impl FromStr for DatasetKind {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        let norm: String = s
            .trim()
            .to_ascii_lowercase()
            .chars()
            .filter(|c| !matches!(c, '-' | '_' | ' '))
            .collect();
        Ok(match norm.as_str() {
            "fashionmnist" | "fmnist" => DatasetKind::FashionMnist,
            "embedded" | "fashionmnistmini" | "mini" => DatasetKind::Embedded,
            "stl10" => DatasetKind::Stl10,
            "cifar10" => DatasetKind::Cifar10,
            "cifar100" | "cifar100:fine" | "cifar100fine" => DatasetKind::Cifar100 {
                labels: Cifar100Labels::Fine,
            },
            "cifar100:coarse" | "cifar100coarse" => DatasetKind::Cifar100 {
                labels: Cifar100Labels::Coarse,
            },
            _ => {
                return Err(Error::Invalid(format!(
                    "unknown dataset {s:?}; expected one of fashion_mnist, embedded, stl10, \
                     cifar10, cifar100, cifar100:coarse"
                )))
            }
        })
    }
}

impl fmt::Display for DatasetKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            DatasetKind::FashionMnist => "fashion_mnist",
            DatasetKind::Embedded => "embedded",
            DatasetKind::Stl10 => "stl10",
            DatasetKind::Cifar10 => "cifar10",
            DatasetKind::Cifar100 {
                labels: Cifar100Labels::Fine,
            } => "cifar100",
            DatasetKind::Cifar100 {
                labels: Cifar100Labels::Coarse,
            } => "cifar100:coarse",
        })
    }
}

impl DatasetKind {
    /// Native (channels, height, width) of the images.
    pub fn native_shape(&self) -> (usize, usize, usize) {
        match self {
            DatasetKind::FashionMnist | DatasetKind::Embedded => (1, 28, 28),
            DatasetKind::Stl10 => (3, 96, 96),
            DatasetKind::Cifar10 | DatasetKind::Cifar100 { .. } => (3, 32, 32),
        }
    }

    pub fn num_classes(&self) -> usize {
        match self {
            DatasetKind::Cifar100 {
                labels: Cifar100Labels::Fine,
            } => 100,
            DatasetKind::Cifar100 {
                labels: Cifar100Labels::Coarse,
            } => 20,
            _ => 10,
        }
    }

    /// The normalisation constants used for this dataset (METHOD §1); see [`Normalize`].
    pub fn normalize(&self, channels: usize) -> Normalize {
        match self {
            DatasetKind::FashionMnist | DatasetKind::Embedded => Normalize::fashion_mnist(channels),
            _ => Normalize::cifar(),
        }
    }
}

/// A dataset split.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Split {
    Train,
    Test,
    /// STL10's 100,000 unlabeled images (see `stl10::UnlabeledStl10`).
    Unlabeled,
}

impl Split {
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
    Explicit { path: PathBuf, origin: RootOrigin },
    /// No path given: the kind's default (`/usr/share/datasets/fashion-mnist` for
    /// Fashion-MNIST, `./data` otherwise).
    Default(PathBuf),
}

impl DataRoot {
    pub fn path(&self) -> &Path {
        match self {
            DataRoot::Explicit { path, .. } | DataRoot::Default(path) => path,
        }
    }

    pub fn origin(&self) -> RootOrigin {
        match self {
            DataRoot::Explicit { origin, .. } => *origin,
            DataRoot::Default(_) => RootOrigin::Default,
        }
    }

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
    DataRoot::Default(match kind {
        DatasetKind::FashionMnist => PathBuf::from(idx::FASHION_MNIST_DEFAULT_DIR),
        _ => PathBuf::from(DEFAULT_DATA_DIR),
    })
}

/// The folder under `root` that holds Fashion-MNIST: the first of `root`,
/// `root/fashion-mnist` and torchvision's `root/FashionMNIST/raw` with its image files.
pub fn fashion_mnist_dir(root: &Path) -> Option<PathBuf> {
    [
        root.to_path_buf(),
        root.join("fashion-mnist"),
        root.join("FashionMNIST").join("raw"),
    ]
    .into_iter()
    .find(|d| idx::is_fashion_mnist_dir(d))
}

/// The folders and files searched under a root for `kind` (as in the crate docs).
pub fn layouts(kind: DatasetKind) -> &'static str {
    match kind {
        DatasetKind::FashionMnist => {
            "{root, root/fashion-mnist, root/FashionMNIST/raw}/\
             {train,t10k}-{images-idx3,labels-idx1}-ubyte[.gz]"
        }
        DatasetKind::Embedded => "none (compiled into the library)",
        DatasetKind::Stl10 => "{root/stl10_binary, root}/{train,test}_{X,y}.bin",
        DatasetKind::Cifar10 => {
            "{root/cifar-10-batches-bin, root}/{data_batch_1..5,test_batch}.bin, or the \
             pickles {root/cifar-10-batches-py, root}/{data_batch_1..5,test_batch}"
        }
        DatasetKind::Cifar100 { .. } => {
            "{root/cifar-100-binary, root}/{train,test}.bin, or the pickles \
             {root/cifar-100-python, root}/{train,test}"
        }
    }
}

/// How to obtain `kind`.
pub fn fetch_hint(kind: DatasetKind) -> &'static str {
    match kind {
        DatasetKind::FashionMnist => {
            "Install the Debian package `dataset-fashion-mnist` (files in \
             /usr/share/datasets/fashion-mnist), or put the four IDX files in the root."
        }
        DatasetKind::Embedded => "",
        DatasetKind::Stl10 => stl10::HINT,
        DatasetKind::Cifar10 => cifar::HINT10,
        DatasetKind::Cifar100 { .. } => cifar::HINT100,
    }
}

/// Where a data set's files are, as found by [`locate`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Located {
    /// The embedded subset: compiled in, no files.
    Embedded,
    /// `dir` (`root` itself or a folder under it) holds the files.
    Files { root: DataRoot, dir: PathBuf },
}

/// Finds the folder that holds `kind` under the root chosen by [`resolve_root`]. It is an
/// error if that root does not exist or holds the data set in none of the [`layouts`]
/// (explicit or default root alike: there is no fallback), and if a root is given for the
/// embedded set, which takes none (`$PYRAMID_DATA` is not read for it).
pub fn locate(kind: DatasetKind, root_dir: Option<&Path>) -> Result<Located> {
    if kind == DatasetKind::Embedded {
        if let Some(r) = root_dir {
            return Err(Error::Invalid(format!(
                "the embedded data set is compiled into the binary and takes no data root \
                 (got {})",
                r.display()
            )));
        }
        return Ok(Located::Embedded);
    }
    let root = resolve_root(kind, root_dir);
    let found = match kind {
        DatasetKind::FashionMnist => fashion_mnist_dir(&root),
        DatasetKind::Stl10 => stl10::find_stl10_dir(&root),
        DatasetKind::Cifar10 => cifar::cifar10_dir(&root),
        DatasetKind::Cifar100 { .. } => cifar::cifar100_dir(&root),
        DatasetKind::Embedded => unreachable!("handled above"),
    };
    match found {
        Some(dir) => Ok(Located::Files { root, dir }),
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

/// Reads one split from where [`locate`] found it; no check of the image shape.
pub(crate) fn read_located(kind: DatasetKind, loc: &Located, split: Split) -> Result<Dataset> {
    match (kind, loc) {
        (DatasetKind::Embedded, _) => embedded::embedded(split),
        (_, Located::Embedded) => Err(Error::Invalid(format!("{kind} is not embedded"))),
        (DatasetKind::FashionMnist, Located::Files { dir, .. }) => {
            idx::read_fashion_mnist(dir, split)
        }
        (DatasetKind::Stl10, Located::Files { dir, .. }) => stl10::read_stl10(dir, split),
        (DatasetKind::Cifar10, Located::Files { dir, .. }) => cifar::read_cifar10(dir, split),
        (DatasetKind::Cifar100 { labels }, Located::Files { dir, .. }) => {
            cifar::read_cifar100(dir, split, labels)
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
