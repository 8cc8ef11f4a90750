//! CIFAR-10 and CIFAR-100, binary versions (`cifar-10-batches-bin/`, `cifar-100-binary/`) and
//! the python pickle versions torchvision downloads (`cifar-10-batches-py/`,
//! `cifar-100-python/`).
//!
//! Binary records: CIFAR-10 = 1 label byte + 3,072 pixel bytes; CIFAR-100 = 1 coarse label byte,
//! 1 fine label byte + 3,072 pixel bytes. Pixels are the R, G, B planes of a 32×32 image,
//! each row-major, i.e. already C×H×W.

use std::path::Path;

use crate::dataset::Dataset;
use crate::error::{read_file, Error, Result};
use crate::pickle;
use crate::registry::{Archive, DatasetInfo, LabelSet, Layout, Source};
use crate::stl10::read_names;
use crate::{Cifar100Labels, Normalize, Split, DEFAULT_DATA_DIR};

/// Height and width of a CIFAR image, pixels.
pub const SIDE: usize = 32;
/// Bytes of one CIFAR image: 3 channels × 32 × 32, channel-major (R plane, G plane, B plane).
pub const IMAGE_BYTES: usize = 3 * SIDE * SIDE;

/// CIFAR-10 class names, in label order (`batches.meta`).
pub const CIFAR10_CLASSES: [&str; 10] = [
    "airplane",
    "automobile",
    "bird",
    "cat",
    "deer",
    "dog",
    "frog",
    "horse",
    "ship",
    "truck",
];

/// CIFAR-100 coarse (superclass) names, in label order (`meta`).
pub const CIFAR100_COARSE: [&str; 20] = [
    "aquatic_mammals",
    "fish",
    "flowers",
    "food_containers",
    "fruit_and_vegetables",
    "household_electrical_devices",
    "household_furniture",
    "insects",
    "large_carnivores",
    "large_man-made_outdoor_things",
    "large_natural_outdoor_scenes",
    "large_omnivores_and_herbivores",
    "medium_mammals",
    "non-insect_invertebrates",
    "people",
    "reptiles",
    "small_mammals",
    "trees",
    "vehicles_1",
    "vehicles_2",
];

/// CIFAR-100 fine class names, in label order (`meta`).
pub const CIFAR100_FINE: [&str; 100] = [
    "apple",
    "aquarium_fish",
    "baby",
    "bear",
    "beaver",
    "bed",
    "bee",
    "beetle",
    "bicycle",
    "bottle",
    "bowl",
    "boy",
    "bridge",
    "bus",
    "butterfly",
    "camel",
    "can",
    "castle",
    "caterpillar",
    "cattle",
    "chair",
    "chimpanzee",
    "clock",
    "cloud",
    "cockroach",
    "couch",
    "crab",
    "crocodile",
    "cup",
    "dinosaur",
    "dolphin",
    "elephant",
    "flatfish",
    "forest",
    "fox",
    "girl",
    "hamster",
    "house",
    "kangaroo",
    "keyboard",
    "lamp",
    "lawn_mower",
    "leopard",
    "lion",
    "lizard",
    "lobster",
    "man",
    "maple_tree",
    "motorcycle",
    "mountain",
    "mouse",
    "mushroom",
    "oak_tree",
    "orange",
    "orchid",
    "otter",
    "palm_tree",
    "pear",
    "pickup_truck",
    "pine_tree",
    "plain",
    "plate",
    "poppy",
    "porcupine",
    "possum",
    "rabbit",
    "raccoon",
    "ray",
    "road",
    "rocket",
    "rose",
    "sea",
    "seal",
    "shark",
    "shrew",
    "skunk",
    "skyscraper",
    "snail",
    "snake",
    "spider",
    "squirrel",
    "streetcar",
    "sunflower",
    "sweet_pepper",
    "table",
    "tank",
    "telephone",
    "television",
    "tiger",
    "tractor",
    "train",
    "trout",
    "tulip",
    "turtle",
    "wardrobe",
    "whale",
    "willow_tree",
    "wolf",
    "woman",
    "worm",
];

pub(crate) const HINT10: &str =
    "Download and unpack cifar-10-binary.tar.gz (`fetch` in this crate, or \
    https://www.cs.toronto.edu/~kriz/cifar-10-binary.tar.gz) so that cifar-10-batches-bin/ \
    lies in the data root (or the python version cifar-10-batches-py/).";
pub(crate) const HINT100: &str =
    "Download and unpack cifar-100-binary.tar.gz (`fetch` in this crate, or \
    https://www.cs.toronto.edu/~kriz/cifar-100-binary.tar.gz) so that cifar-100-binary/ \
    lies in the data root (or the python version cifar-100-python/).";

/// CIFAR-10 (Krizhevsky): the binary version, else the python pickles torchvision downloads.
pub static CIFAR10: DatasetInfo = DatasetInfo {
    name: "cifar10",
    aliases: &[],
    shape: (3, SIDE, SIDE),
    labels: &[LabelSet::only(&CIFAR10_CLASSES)],
    mean: &Normalize::CIFAR_MEAN,
    std: &Normalize::CIFAR_STD,
    train: 50_000,
    test: 10_000,
    unlabeled: None,
    source: Source::Files {
        default_root: DEFAULT_DATA_DIR,
        layouts: &[
            Layout {
                dirs: &["cifar-10-batches-bin", ""],
                markers: &["test_batch.bin", "data_batch_1.bin"],
                files: "{data_batch_1..5,test_batch}.bin",
                read: |dir, split, _| read_cifar10_bin(dir, split),
            },
            Layout {
                dirs: &["cifar-10-batches-py", ""],
                markers: &["test_batch", "data_batch_1"],
                files: "{data_batch_1..5,test_batch} (python pickles)",
                read: |dir, split, _| read_cifar10_py(dir, split),
            },
        ],
        archive: Some(Archive {
            url: "https://www.cs.toronto.edu/~kriz/cifar-10-binary.tar.gz",
            md5: "c32a1d4ab5d03f1284b67883e8d87530",
            folder: "cifar-10-batches-bin",
            markers: &["data_batch_1.bin", "data_batch_5.bin", "test_batch.bin"],
        }),
    },
    hint: HINT10,
};

/// CIFAR-100 with its fine (default) or coarse labels, in the order of [`Cifar100Labels`].
pub static CIFAR100: DatasetInfo = DatasetInfo {
    name: "cifar100",
    aliases: &[],
    shape: (3, SIDE, SIDE),
    labels: &[
        LabelSet {
            name: "fine",
            classes: &CIFAR100_FINE,
        },
        LabelSet {
            name: "coarse",
            classes: &CIFAR100_COARSE,
        },
    ],
    // docs/method.md §1 uses the CIFAR-10 constants for CIFAR-100 too.
    mean: &Normalize::CIFAR_MEAN,
    std: &Normalize::CIFAR_STD,
    train: 50_000,
    test: 10_000,
    unlabeled: None,
    source: Source::Files {
        default_root: DEFAULT_DATA_DIR,
        layouts: &[
            Layout {
                dirs: &["cifar-100-binary", ""],
                markers: &["test.bin", "train.bin"],
                files: "{train,test}.bin",
                read: |dir, split, l| read_cifar100_bin(dir, split, Cifar100Labels::from_index(l)),
            },
            Layout {
                dirs: &["cifar-100-python", ""],
                markers: &["test", "train"],
                files: "{train,test} (python pickles)",
                read: |dir, split, l| read_cifar100_py(dir, split, Cifar100Labels::from_index(l)),
            },
        ],
        archive: Some(Archive {
            url: "https://www.cs.toronto.edu/~kriz/cifar-100-binary.tar.gz",
            md5: "03b5dce01913d631647c71ecec9e9cb8",
            folder: "cifar-100-binary",
            markers: &["train.bin", "test.bin"],
        }),
    },
    hint: HINT100,
};

/// Parses binary CIFAR records of `nlabels` label bytes + 3,072 pixels. `label_pos` selects
/// the label byte that is returned; every label byte `j` is checked against `limits[j]`.
/// Appends to `images`/`labels`.
pub fn parse_records(
    path: &Path,
    bytes: &[u8],
    limits: &[u32],
    label_pos: usize,
    images: &mut Vec<u8>,
    labels: &mut Vec<u32>,
) -> Result<usize> {
    let nl = limits.len();
    let rec = nl + IMAGE_BYTES;
    if bytes.len() / rec * rec != bytes.len() {
        let n = bytes.len() / rec;
        return Err(Error::size(
            path,
            ((n + 1) * rec) as u64,
            bytes.len() as u64,
            format!(
                "not a whole number of {rec}-byte records: record {n} at byte offset {} is truncated",
                n * rec
            ),
        ));
    }
    let n = bytes.len() / rec;
    images.reserve(n * IMAGE_BYTES);
    labels.reserve(n);
    for (i, r) in bytes.chunks_exact(rec).enumerate() {
        for (j, &lim) in limits.iter().enumerate() {
            if u32::from(r[j]) >= lim {
                return Err(Error::record(
                    path,
                    i,
                    format!(
                        "label byte {j} = {} out of range 0..{lim} (byte offset {})",
                        r[j],
                        i * rec + j
                    ),
                ));
            }
        }
        labels.push(u32::from(r[label_pos]));
        images.extend_from_slice(&r[nl..]);
    }
    Ok(n)
}

fn read_required(path: &Path, hint: &str) -> Result<Vec<u8>> {
    if !path.exists() {
        return Err(Error::Missing {
            path: path.to_path_buf(),
            hint: hint.into(),
        });
    }
    read_file(path)
}

fn dataset(name: String, images: Vec<u8>, labels: Vec<u32>, names: Vec<String>) -> Dataset {
    Dataset {
        name,
        n: labels.len(),
        images,
        labels,
        channels: 3,
        height: SIDE,
        width: SIDE,
        class_names: names,
    }
}

fn split_files10(split: Split) -> Result<Vec<String>> {
    match split {
        Split::Train => Ok((1..=5).map(|i| format!("data_batch_{i}")).collect()),
        Split::Test => Ok(vec!["test_batch".into()]),
        Split::Unlabeled => Err(Error::Invalid("CIFAR has no unlabeled split".into())),
    }
}

/// Reads binary CIFAR-10 from `dir` (the `cifar-10-batches-bin` folder).
pub fn read_cifar10_bin(dir: &Path, split: Split) -> Result<Dataset> {
    let names = read_names(&dir.join("batches.meta.txt"), 10, &CIFAR10_CLASSES)?;
    let (mut images, mut labels) = (Vec::new(), Vec::new());
    for f in split_files10(split)? {
        let p = dir.join(format!("{f}.bin"));
        let b = read_required(&p, HINT10)?;
        parse_records(&p, &b, &[10], 0, &mut images, &mut labels)?;
    }
    Ok(dataset(format!("cifar10/{split}"), images, labels, names))
}

fn split_file100(split: Split) -> Result<&'static str> {
    match split {
        Split::Train => Ok("train"),
        Split::Test => Ok("test"),
        Split::Unlabeled => Err(Error::Invalid("CIFAR has no unlabeled split".into())),
    }
}

/// Reads binary CIFAR-100 from `dir` (the `cifar-100-binary` folder).
pub fn read_cifar100_bin(dir: &Path, split: Split, which: Cifar100Labels) -> Result<Dataset> {
    let (names, pos) = match which {
        Cifar100Labels::Fine => (
            read_names(&dir.join("fine_label_names.txt"), 100, &CIFAR100_FINE)?,
            1,
        ),
        Cifar100Labels::Coarse => (
            read_names(&dir.join("coarse_label_names.txt"), 20, &CIFAR100_COARSE)?,
            0,
        ),
    };
    let p = dir.join(format!("{}.bin", split_file100(split)?));
    let b = read_required(&p, HINT100)?;
    let (mut images, mut labels) = (Vec::new(), Vec::new());
    parse_records(&p, &b, &[20, 100], pos, &mut images, &mut labels)?;
    Ok(dataset(
        format!("cifar100/{split}/{}", label_word(which)),
        images,
        labels,
        names,
    ))
}

fn label_word(w: Cifar100Labels) -> &'static str {
    CIFAR100.labels[w as usize].name
}

/// Reads the python-pickle CIFAR-10 from `dir` (the `cifar-10-batches-py` folder).
pub fn read_cifar10_py(dir: &Path, split: Split) -> Result<Dataset> {
    let meta = dir.join("batches.meta");
    let names = if meta.exists() {
        pickle::read_pickle_file(&meta)?.string_list(&meta, "label_names")?
    } else {
        CIFAR10_CLASSES.iter().map(|s| s.to_string()).collect()
    };
    let (mut images, mut labels) = (Vec::new(), Vec::new());
    for f in split_files10(split)? {
        let p = dir.join(&f);
        if !p.exists() {
            return Err(Error::Missing {
                path: p,
                hint: HINT10.into(),
            });
        }
        let v = pickle::read_pickle_file(&p)?;
        let (im, lb) = v.cifar_batch(&p, "labels", names.len())?;
        images.extend_from_slice(&im);
        labels.extend_from_slice(&lb);
    }
    Ok(dataset(format!("cifar10/{split}"), images, labels, names))
}

/// Reads the python-pickle CIFAR-100 from `dir` (the `cifar-100-python` folder).
pub fn read_cifar100_py(dir: &Path, split: Split, which: Cifar100Labels) -> Result<Dataset> {
    let (key, names_key, default): (&str, &str, &[&str]) = match which {
        Cifar100Labels::Fine => ("fine_labels", "fine_label_names", &CIFAR100_FINE),
        Cifar100Labels::Coarse => ("coarse_labels", "coarse_label_names", &CIFAR100_COARSE),
    };
    let meta = dir.join("meta");
    let names = if meta.exists() {
        pickle::read_pickle_file(&meta)?.string_list(&meta, names_key)?
    } else {
        default.iter().map(|s| s.to_string()).collect()
    };
    let p = dir.join(split_file100(split)?);
    if !p.exists() {
        return Err(Error::Missing {
            path: p,
            hint: HINT100.into(),
        });
    }
    let v = pickle::read_pickle_file(&p)?;
    let (images, labels) = v.cifar_batch(&p, key, names.len())?;
    Ok(dataset(
        format!("cifar100/{split}/{}", label_word(which)),
        images,
        labels,
        names,
    ))
}
