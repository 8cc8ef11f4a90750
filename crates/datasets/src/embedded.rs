//! A class-balanced real subset of Fashion-MNIST, checked into the repository under
//! `data/fashion-mnist-mini/` and compiled into the library, so tests and demos need no files.
//!
//! 200 training images per class (2,000) and 100 test images per class (1,000), chosen by
//! `examples/make_embedded.rs` with seed [`EMBEDDED_SEED`] (see the README next to the data).
//! Fashion-MNIST is © Zalando SE, MIT licence (`data/fashion-mnist-mini/LICENSE`).

use std::path::Path;

use crate::dataset::Dataset;
use crate::error::Result;
use crate::idx::{parse_idx_pair, FASHION_MNIST, FASHION_MNIST_CLASSES};
use crate::registry::{DatasetInfo, LabelSet, Source};
use crate::Split;

/// Seed used by `examples/make_embedded.rs` to pick the subset.
pub const EMBEDDED_SEED: u64 = 2017;
/// Images per class in the embedded training split.
pub const EMBEDDED_TRAIN_PER_CLASS: usize = 200;
/// Images per class in the embedded test split.
pub const EMBEDDED_TEST_PER_CLASS: usize = 100;

/// The embedded subset: Fashion-MNIST's images, classes and normalisation, no files.
pub static EMBEDDED: DatasetInfo = DatasetInfo {
    name: "embedded",
    aliases: &["fashion_mnist_mini", "mini"],
    shape: FASHION_MNIST.shape,
    labels: &[LabelSet::only(&FASHION_MNIST_CLASSES)],
    mean: FASHION_MNIST.mean,
    std: FASHION_MNIST.std,
    train: 10 * EMBEDDED_TRAIN_PER_CLASS,
    test: 10 * EMBEDDED_TEST_PER_CLASS,
    unlabeled: None,
    source: Source::Embedded { read: embedded },
    hint: "",
};

/// Gzipped IDX images of the embedded training split (2,000 × 28 × 28).
pub const TRAIN_IMAGES_GZ: &[u8] =
    include_bytes!("../../../data/fashion-mnist-mini/train-images-idx3-ubyte.gz");
/// Gzipped IDX labels of the embedded training split.
pub const TRAIN_LABELS_GZ: &[u8] =
    include_bytes!("../../../data/fashion-mnist-mini/train-labels-idx1-ubyte.gz");
/// Gzipped IDX images of the embedded test split (1,000 × 28 × 28).
pub const TEST_IMAGES_GZ: &[u8] =
    include_bytes!("../../../data/fashion-mnist-mini/t10k-images-idx3-ubyte.gz");
/// Gzipped IDX labels of the embedded test split.
pub const TEST_LABELS_GZ: &[u8] =
    include_bytes!("../../../data/fashion-mnist-mini/t10k-labels-idx1-ubyte.gz");

/// The embedded Fashion-MNIST subset (1×28×28, 10 classes).
pub fn embedded(split: Split) -> Result<Dataset> {
    let (ib, lb, p) = match split {
        Split::Train => (TRAIN_IMAGES_GZ, TRAIN_LABELS_GZ, "train"),
        Split::Test => (TEST_IMAGES_GZ, TEST_LABELS_GZ, "t10k"),
        Split::Unlabeled => {
            return Err(crate::Error::Invalid(
                "the embedded Fashion-MNIST subset has no unlabeled split".into(),
            ))
        }
    };
    parse_idx_pair(
        &format!("embedded/{}", split.as_str()),
        Path::new(&format!("<embedded>/{p}-images-idx3-ubyte.gz")),
        ib.to_vec(),
        Path::new(&format!("<embedded>/{p}-labels-idx1-ubyte.gz")),
        lb.to_vec(),
        &FASHION_MNIST_CLASSES,
    )
}
