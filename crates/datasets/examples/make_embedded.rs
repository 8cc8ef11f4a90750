//! Regenerates `data/fashion-mnist-mini/` (the Fashion-MNIST subset compiled into the library)
//! deterministically from the full Fashion-MNIST:
//!
//! ```text
//! cargo run -p pyramid-datasets --example make_embedded -- [FASHION_MNIST_DIR] [OUT_DIR]
//! ```
//!
//! Defaults: `/usr/share/datasets/fashion-mnist` and `data/fashion-mnist-mini` (relative to the
//! workspace root). Selection: `Dataset::class_balanced_indices(per_class, EMBEDDED_SEED)`:
//! a permutation of all image indices from `Rng::stream(2017, "datasets/class_balanced_subset")`,
//! taking the first 200 (train) / 100 (test) images of each class in permutation order, then
//! writing them in ascending original index order. Output: IDX files gzip-compressed at level 9
//! with mtime 0 (byte-for-byte reproducible).

use std::path::PathBuf;

use pyramid_datasets::embedded::{
    EMBEDDED_SEED, EMBEDDED_TEST_PER_CLASS, EMBEDDED_TRAIN_PER_CLASS,
};
use pyramid_datasets::idx::{gzip, read_fashion_mnist, write_idx_images, write_idx_labels};
use pyramid_datasets::Split;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let src = PathBuf::from(
        args.next()
            .unwrap_or_else(|| pyramid_datasets::idx::FASHION_MNIST_DEFAULT_DIR.into()),
    );
    let out = PathBuf::from(args.next().unwrap_or_else(|| {
        concat!(env!("CARGO_MANIFEST_DIR"), "/../../data/fashion-mnist-mini").into()
    }));
    std::fs::create_dir_all(&out)?;
    for (split, prefix, per_class) in [
        (Split::Train, "train", EMBEDDED_TRAIN_PER_CLASS),
        (Split::Test, "t10k", EMBEDDED_TEST_PER_CLASS),
    ] {
        let full = read_fashion_mnist(&src, split)?;
        let idx = full.class_balanced_indices(per_class, EMBEDDED_SEED);
        let sub = full.subset(&idx);
        let labels: Vec<u8> = sub.labels.iter().map(|&l| l as u8).collect();
        let ib = gzip(&write_idx_images(sub.n, sub.height, sub.width, &sub.images));
        let lb = gzip(&write_idx_labels(&labels));
        std::fs::write(out.join(format!("{prefix}-images-idx3-ubyte.gz")), &ib)?;
        std::fs::write(out.join(format!("{prefix}-labels-idx1-ubyte.gz")), &lb)?;
        let first: Vec<usize> = idx.iter().take(5).copied().collect();
        println!(
            "{prefix}: {} images ({} per class) from {} — first source indices {first:?}; \
             images {} bytes gz, labels {} bytes gz",
            sub.n,
            per_class,
            full.n,
            ib.len(),
            lb.len()
        );
    }
    Ok(())
}
