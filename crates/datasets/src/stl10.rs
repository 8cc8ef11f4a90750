//! STL-10 binary format (`stl10_binary/`).
//!
//! `{train,test}_X.bin`: images of 3×96×96 bytes, each channel stored **column-major**, so
//! pixel (c, h, w) of an image is at byte `c·9216 + w·96 + h`. `{train,test}_y.bin`: one byte
//! per image, labels 1–10 (mapped to 0–9 here). `class_names.txt`: one name per line.
//! `unlabeled_X.bin`: 100,000 images (2.7 GB), served lazily by [`UnlabeledStl10`].

use std::fs::File;
use std::path::{Path, PathBuf};

use rayon::prelude::*;

use crate::dataset::Dataset;
use crate::error::{read_file, Error, Result};
use crate::registry::{Archive, DatasetInfo, LabelSet, Layout, Source, Unlabeled};
use crate::{Normalize, Split, DEFAULT_DATA_DIR};

/// Height and width of an STL-10 image, pixels.
pub const SIDE: usize = 96;
/// Bytes of one STL-10 image: 3 channels × 96 × 96, each channel stored column-major.
pub const IMAGE_BYTES: usize = 3 * SIDE * SIDE;
/// STL-10 class names in label order (`class_names.txt`; file labels 1..=10 map to 0..=9).
pub const CLASSES: [&str; 10] = [
    "airplane", "bird", "car", "cat", "deer", "dog", "horse", "monkey", "ship", "truck",
];
pub(crate) const HINT: &str = "Download and unpack stl10_binary.tar.gz (`fetch` in this crate, or \
    http://ai.stanford.edu/~acoates/stl10/stl10_binary.tar.gz) so that the folder \
    stl10_binary/ lies in the data root.";

/// STL-10 (Coates et al.), binary version: 96×96 labelled images and 100,000 unlabeled ones.
pub static STL10: DatasetInfo = DatasetInfo {
    name: "stl10",
    aliases: &[],
    shape: (3, SIDE, SIDE),
    labels: &[LabelSet::only(&CLASSES)],
    // docs/method.md §1: the CIFAR-10 constants, as the original code used them.
    mean: &Normalize::CIFAR_MEAN,
    std: &Normalize::CIFAR_STD,
    train: 5_000,
    test: 8_000,
    unlabeled: Some(Unlabeled {
        file: "unlabeled_X.bin",
        official: 100_000,
        count: |path| UnlabeledStl10::open_file(path).map(|u| u.len()),
    }),
    source: Source::Files {
        default_root: DEFAULT_DATA_DIR,
        layouts: &[Layout {
            dirs: &["stl10_binary", ""],
            markers: &["train_X.bin", "test_X.bin"],
            files: "{train,test}_{X,y}.bin",
            read: |dir, split, _| read_stl10(dir, split),
        }],
        archive: Some(Archive {
            url: "http://ai.stanford.edu/~acoates/stl10/stl10_binary.tar.gz",
            md5: "91f7769df0f17e558f3565bffb0c7dfb",
            folder: "stl10_binary",
            markers: &["train_X.bin", "train_y.bin", "test_X.bin", "test_y.bin"],
        }),
    },
    hint: HINT,
};

/// `root/stl10_binary` if it exists, else `root`.
pub fn stl10_dir(root: &Path) -> PathBuf {
    let sub = root.join("stl10_binary");
    if sub.is_dir() {
        sub
    } else {
        root.to_path_buf()
    }
}

/// Converts one STL-10 image from its stored column-major planes to C×H×W row-major. The
/// planes are square, so the same call converts row-major back to the stored layout.
pub fn transpose_image(src: &[u8], dst: &mut [u8]) {
    for c in 0..3 {
        let s = &src[c * SIDE * SIDE..(c + 1) * SIDE * SIDE];
        let d = &mut dst[c * SIDE * SIDE..(c + 1) * SIDE * SIDE];
        for w in 0..SIDE {
            for h in 0..SIDE {
                d[h * SIDE + w] = s[w * SIDE + h];
            }
        }
    }
}

fn missing(path: PathBuf) -> Error {
    Error::Missing {
        path,
        hint: HINT.into(),
    }
}

fn open_or_missing(path: &Path) -> Result<Vec<u8>> {
    if !path.exists() {
        return Err(missing(path.to_path_buf()));
    }
    read_file(path)
}

/// Reads `class_names.txt` (exactly `n` non-empty lines); the built-in names if it is absent.
pub(crate) fn read_names(path: &Path, n: usize, default: &[&str]) -> Result<Vec<String>> {
    if !path.exists() {
        tracing::warn!(path = %path.display(), "class name file missing; using built-in names");
        return Ok(default.iter().map(|s| s.to_string()).collect());
    }
    let bytes = read_file(path)?;
    let text = String::from_utf8(bytes)
        .map_err(|e| Error::format(path, e.utf8_error().valid_up_to() as u64, "not UTF-8"))?;
    let names: Vec<String> = text
        .lines()
        .map(|l| l.trim().to_string())
        .filter(|l| !l.is_empty())
        .collect();
    if names.len() != n {
        return Err(Error::format(
            path,
            0,
            format!("expected {n} class names, found {}", names.len()),
        ));
    }
    Ok(names)
}

/// Parses STL-10 image and label bytes (paths only for error messages).
pub fn parse_stl10(
    name: &str,
    x_path: &Path,
    mut x: Vec<u8>,
    y_path: &Path,
    y: &[u8],
    class_names: Vec<String>,
) -> Result<Dataset> {
    if x.len() / IMAGE_BYTES * IMAGE_BYTES != x.len() {
        let n = x.len() / IMAGE_BYTES;
        return Err(Error::size(
            x_path,
            ((n + 1) * IMAGE_BYTES) as u64,
            x.len() as u64,
            format!(
                "not a whole number of {IMAGE_BYTES}-byte images: image {n} at byte offset {} is truncated",
                n * IMAGE_BYTES
            ),
        ));
    }
    let n = x.len() / IMAGE_BYTES;
    if y.len() != n {
        return Err(Error::size(
            y_path,
            n as u64,
            y.len() as u64,
            format!("{} holds {n} images", x_path.display()),
        ));
    }
    let k = class_names.len();
    let mut labels = Vec::with_capacity(n);
    for (i, &l) in y.iter().enumerate() {
        if l == 0 || l as usize > k {
            return Err(Error::record(
                y_path,
                i,
                format!("label {l} out of range 1..={k} (byte offset {i})"),
            ));
        }
        labels.push(u32::from(l) - 1);
    }
    x.par_chunks_mut(IMAGE_BYTES).for_each_init(
        || vec![0u8; IMAGE_BYTES],
        |scratch, img| {
            scratch.copy_from_slice(img);
            transpose_image(scratch, img);
        },
    );
    Ok(Dataset {
        name: name.to_string(),
        images: x,
        labels,
        n,
        channels: 3,
        height: SIDE,
        width: SIDE,
        class_names,
    })
}

/// Reads the labelled STL-10 `split` from `dir` (the `stl10_binary` folder).
pub fn read_stl10(dir: &Path, split: Split) -> Result<Dataset> {
    let s = match split {
        Split::Train => "train",
        Split::Test => "test",
        Split::Unlabeled => {
            return Err(Error::Invalid(
                "the STL-10 unlabeled split (2.7 GB) is not loaded into memory; \
                 use stl10::UnlabeledStl10::open"
                    .into(),
            ))
        }
    };
    let xp = dir.join(format!("{s}_X.bin"));
    let yp = dir.join(format!("{s}_y.bin"));
    let names = read_names(&dir.join("class_names.txt"), 10, &CLASSES)?;
    let y = open_or_missing(&yp)?;
    let x = open_or_missing(&xp)?;
    parse_stl10(&format!("stl10/{s}"), &xp, x, &yp, &y, names)
}

/// STL-10's `unlabeled_X.bin`, read image by image on demand (positioned reads; the file is
/// never loaded whole). Safe to share between threads.
#[derive(Debug)]
pub struct UnlabeledStl10 {
    path: PathBuf,
    file: File,
    n: usize,
}

impl UnlabeledStl10 {
    /// Opens `dir/unlabeled_X.bin` (`dir` is the `stl10_binary` folder or the data root).
    pub fn open(dir: &Path) -> Result<Self> {
        let path = stl10_dir(dir).join("unlabeled_X.bin");
        Self::open_file(&path)
    }

    /// Opens an unlabeled-format file directly.
    pub fn open_file(path: &Path) -> Result<Self> {
        if !path.exists() {
            return Err(missing(path.to_path_buf()));
        }
        let file = File::open(path).map_err(|e| Error::io(path, e))?;
        let len = file.metadata().map_err(|e| Error::io(path, e))?.len();
        if len % IMAGE_BYTES as u64 != 0 {
            let n = len / IMAGE_BYTES as u64;
            return Err(Error::size(
                path,
                (n + 1) * IMAGE_BYTES as u64,
                len,
                format!(
                    "image {n} at byte offset {} is truncated",
                    n * IMAGE_BYTES as u64
                ),
            ));
        }
        Ok(Self {
            path: path.to_path_buf(),
            file,
            n: (len / IMAGE_BYTES as u64) as usize,
        })
    }

    /// Number of images in the file.
    pub fn len(&self) -> usize {
        self.n
    }

    /// The file this reads.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// True when the file holds no images.
    pub fn is_empty(&self) -> bool {
        self.n == 0
    }

    /// Image `i` as 3×96×96 bytes, row-major per channel.
    pub fn image(&self, i: usize) -> Result<Vec<u8>> {
        let mut out = vec![0u8; IMAGE_BYTES];
        self.image_into(i, &mut out)?;
        Ok(out)
    }

    /// Writes image `i` (3×96×96, row-major) into `out` (`IMAGE_BYTES` long).
    pub fn image_into(&self, i: usize, out: &mut [u8]) -> Result<()> {
        if i >= self.n {
            return Err(Error::record(
                &self.path,
                i,
                format!("image index out of range (the file holds {})", self.n),
            ));
        }
        if out.len() != IMAGE_BYTES {
            return Err(Error::Invalid(format!(
                "output buffer has {} bytes, expected {IMAGE_BYTES}",
                out.len()
            )));
        }
        let mut raw = vec![0u8; IMAGE_BYTES];
        let off = (i * IMAGE_BYTES) as u64;
        read_exact_at(&self.file, &mut raw, off).map_err(|e| Error::Format {
            path: self.path.clone(),
            offset: off,
            msg: format!("reading image {i}: {e}"),
        })?;
        transpose_image(&raw, out);
        Ok(())
    }

    /// The images at `indices` as an in-memory [`Dataset`] (every label 0, one class
    /// "unlabeled").
    pub fn subset(&self, indices: &[usize]) -> Result<Dataset> {
        let mut images = vec![0u8; indices.len() * IMAGE_BYTES];
        images
            .par_chunks_mut(IMAGE_BYTES)
            .zip(indices.par_iter())
            .try_for_each(|(o, &i)| self.image_into(i, o))?;
        Ok(Dataset {
            name: "stl10/unlabeled".into(),
            images,
            labels: vec![0; indices.len()],
            n: indices.len(),
            channels: 3,
            height: SIDE,
            width: SIDE,
            class_names: vec!["unlabeled".into()],
        })
    }
}

#[cfg(unix)]
fn read_exact_at(f: &File, buf: &mut [u8], off: u64) -> std::io::Result<()> {
    use std::os::unix::fs::FileExt;
    f.read_exact_at(buf, off)
}

#[cfg(windows)]
fn read_exact_at(f: &File, mut buf: &mut [u8], mut off: u64) -> std::io::Result<()> {
    use std::os::windows::fs::FileExt;
    while !buf.is_empty() {
        match f.seek_read(buf, off) {
            Ok(0) => return Err(std::io::ErrorKind::UnexpectedEof.into()),
            Ok(n) => {
                buf = &mut buf[n..];
                off += n as u64;
            }
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}
