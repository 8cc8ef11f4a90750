//! Dataset readers and the seeded input pipeline of the Pyramid toolkit.
//!
//! * [`Dataset`]: u8 images in NCHW order plus labels and class names.
//! * [`load`]: reads a [`DatasetKind`] split from disk (or from the embedded Fashion-MNIST
//!   subset, which needs no files).
//! * [`loader`]: resizing (PIL-exact bilinear), channel adaptation, seeded augmentation,
//!   normalisation and parallel, prefetched batching into candle tensors.
//!
//! Data layout on disk (the root folder is `root_dir`, else `$PYRAMID_DATA`, else a default):
//!
//! | kind | files looked for (first match wins) |
//! |---|---|
//! | `fashion_mnist` | `{root, root/fashion-mnist, root/FashionMNIST/raw}/{train,t10k}-{images-idx3,labels-idx1}-ubyte[.gz]`; default root `/usr/share/datasets/fashion-mnist` |
//! | `stl10` | `{root/stl10_binary, root}/{train,test}_{X,y}.bin`, `class_names.txt`, `unlabeled_X.bin` |
//! | `cifar10` | `{root/cifar-10-batches-bin, root}/data_batch_{1..5}.bin, test_batch.bin, batches.meta.txt`, else the python pickles in `root/cifar-10-batches-py` |
//! | `cifar100` | `{root/cifar-100-binary, root}/{train,test}.bin, {fine,coarse}_label_names.txt`, else the pickles in `root/cifar-100-python` |

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
pub use verify::{show_grid, verify, Summary};

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

/// The data root: `root_dir`, else `$PYRAMID_DATA`, else the kind's default
/// (`/usr/share/datasets/fashion-mnist` for Fashion-MNIST, `./data` otherwise).
pub fn resolve_root(kind: DatasetKind, root_dir: Option<&Path>) -> PathBuf {
    if let Some(r) = root_dir {
        return r.to_path_buf();
    }
    if let Some(v) = std::env::var_os(DATA_ENV) {
        if !v.is_empty() {
            return PathBuf::from(v);
        }
    }
    match kind {
        DatasetKind::FashionMnist => PathBuf::from(idx::FASHION_MNIST_DEFAULT_DIR),
        _ => PathBuf::from(DEFAULT_DATA_DIR),
    }
}

/// The folder under `root` that holds Fashion-MNIST: `root`, `root/fashion-mnist` or
/// torchvision's `root/FashionMNIST/raw`; falls back to the Debian default location.
pub fn fashion_mnist_dir(root: &Path) -> PathBuf {
    let candidates = [
        root.to_path_buf(),
        root.join("fashion-mnist"),
        root.join("FashionMNIST").join("raw"),
        PathBuf::from(idx::FASHION_MNIST_DEFAULT_DIR),
    ];
    candidates
        .iter()
        .find(|d| idx::is_fashion_mnist_dir(d))
        .cloned()
        .unwrap_or_else(|| root.to_path_buf())
}

/// Loads one split of a dataset into memory.
///
/// `root_dir` (else `$PYRAMID_DATA`, else a default) is the data root; see the crate docs for
/// the folder layout. `Split::Unlabeled` exists only for STL10 and is too large to load: use
/// `stl10::UnlabeledStl10::open` instead.
pub fn load(kind: DatasetKind, root_dir: Option<&Path>, split: Split) -> Result<Dataset> {
    let root = resolve_root(kind, root_dir);
    tracing::debug!(%kind, %split, root = %root.display(), "loading dataset");
    let d = match kind {
        DatasetKind::Embedded => embedded::embedded(split)?,
        DatasetKind::FashionMnist => idx::read_fashion_mnist(&fashion_mnist_dir(&root), split)?,
        DatasetKind::Stl10 => stl10::read_stl10(&stl10::stl10_dir(&root), split)?,
        DatasetKind::Cifar10 => cifar::read_cifar10(&root, split)?,
        DatasetKind::Cifar100 { labels } => cifar::read_cifar100(&root, split, labels)?,
    };
    tracing::debug!(name = %d.name, n = d.n, "loaded dataset");
    Ok(d)
}
