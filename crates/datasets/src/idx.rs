//! IDX files (MNIST / Fashion-MNIST), gzip-compressed or raw.

use std::io::Read;
use std::path::{Path, PathBuf};

use crate::dataset::Dataset;
use crate::error::{read_file, Error, Result};
use crate::registry::{DatasetInfo, LabelSet, Layout, Source};
use crate::{Normalize, Split};

/// Fashion-MNIST class names, in label order.
pub const FASHION_MNIST_CLASSES: [&str; 10] = [
    "T-shirt/top",
    "Trouser",
    "Pullover",
    "Dress",
    "Coat",
    "Sandal",
    "Shirt",
    "Sneaker",
    "Bag",
    "Ankle boot",
];

/// Where the Debian package `dataset-fashion-mnist` installs the data.
pub const FASHION_MNIST_DEFAULT_DIR: &str = "/usr/share/datasets/fashion-mnist";

/// Fashion-MNIST (Zalando): IDX files, gzip-compressed or raw.
pub static FASHION_MNIST: DatasetInfo = DatasetInfo {
    name: "fashion-mnist",
    aliases: &["fmnist"],
    shape: (1, 28, 28),
    labels: &[LabelSet::only(&FASHION_MNIST_CLASSES)],
    mean: &[Normalize::FASHION_MNIST_MEAN],
    std: &[Normalize::FASHION_MNIST_STD],
    train: 60_000,
    test: 10_000,
    unlabeled: None,
    source: Source::Files {
        default_root: FASHION_MNIST_DEFAULT_DIR,
        // torchvision's download folder last.
        layouts: &[Layout {
            dirs: &["", "fashion-mnist", "FashionMNIST/raw"],
            markers: &[
                "train-images-idx3-ubyte.gz",
                "train-images-idx3-ubyte",
                "t10k-images-idx3-ubyte.gz",
                "t10k-images-idx3-ubyte",
            ],
            files: "{train,t10k}-{images-idx3,labels-idx1}-ubyte[.gz]",
            read: |dir, split, _| read_fashion_mnist(dir, split),
        }],
        // Not fetched: Debian packages it, and its host is not ours to hammer.
        archive: None,
    },
    hint: "Install the Debian package `dataset-fashion-mnist` (files in \
        /usr/share/datasets/fashion-mnist), or put the four IDX files in the root.",
};

/// Decompresses `bytes` if they start with the gzip magic, otherwise returns them unchanged.
pub fn maybe_gunzip(path: &Path, bytes: Vec<u8>) -> Result<Vec<u8>> {
    if bytes.len() >= 2 && bytes[0] == 0x1f && bytes[1] == 0x8b {
        let mut out = Vec::with_capacity(bytes.len() * 2);
        flate2::read::MultiGzDecoder::new(&bytes[..])
            .read_to_end(&mut out)
            .map_err(|e| {
                Error::format(
                    path,
                    out.len() as u64,
                    format!("bad gzip stream (offset is in the decompressed data): {e}"),
                )
            })?;
        Ok(out)
    } else {
        Ok(bytes)
    }
}

fn be_u32(b: &[u8], off: usize) -> u32 {
    u32::from_be_bytes([b[off], b[off + 1], b[off + 2], b[off + 3]])
}

/// A parsed IDX file of unsigned bytes: its dimensions and its data.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdxU8 {
    /// Dimensions from the header, outermost first (e.g. `[n, 28, 28]` for images, `[n]` for
    /// labels).
    pub dims: Vec<usize>,
    /// The elements in row-major order; `data.len()` is the product of `dims`.
    pub data: Vec<u8>,
}

/// Parses an (uncompressed) IDX file with element type u8 (type code 0x08).
pub fn parse_idx_u8(path: &Path, b: &[u8]) -> Result<IdxU8> {
    if b.len() < 4 {
        return Err(Error::size(
            path,
            4,
            b.len() as u64,
            "shorter than the IDX magic",
        ));
    }
    if b[0] != 0 || b[1] != 0 {
        return Err(Error::format(
            path,
            0,
            format!(
                "not an IDX file: magic {:02x?} (expected 00 00 08 nd)",
                &b[..4]
            ),
        ));
    }
    if b[2] != 0x08 {
        return Err(Error::format(
            path,
            2,
            format!(
                "IDX element type 0x{:02x}, only unsigned byte (0x08) is supported",
                b[2]
            ),
        ));
    }
    let nd = b[3] as usize;
    if nd == 0 {
        return Err(Error::format(path, 3, "IDX file with zero dimensions"));
    }
    let header = 4 + 4 * nd;
    if b.len() < header {
        return Err(Error::size(
            path,
            header as u64,
            b.len() as u64,
            "truncated IDX header",
        ));
    }
    let dims: Vec<usize> = (0..nd).map(|i| be_u32(b, 4 + 4 * i) as usize).collect();
    let total = dims
        .iter()
        .try_fold(1usize, |acc, &d| acc.checked_mul(d))
        .ok_or_else(|| Error::format(path, 4, format!("IDX dimensions {dims:?} overflow")))?;
    let expected = header as u64 + total as u64;
    if b.len() as u64 != expected {
        return Err(Error::size(
            path,
            expected,
            b.len() as u64,
            format!("IDX dims {dims:?}"),
        ));
    }
    Ok(IdxU8 {
        dims,
        data: b[header..].to_vec(),
    })
}

/// Builds a dataset from the bytes of an image IDX file (N×H×W) and a label IDX file (N).
/// The bytes may be gzip-compressed. The paths are only used in error messages.
pub fn parse_idx_pair(
    name: &str,
    images_path: &Path,
    images: Vec<u8>,
    labels_path: &Path,
    labels: Vec<u8>,
    class_names: &[&str],
) -> Result<Dataset> {
    let im = parse_idx_u8(images_path, &maybe_gunzip(images_path, images)?)?;
    let lb = parse_idx_u8(labels_path, &maybe_gunzip(labels_path, labels)?)?;
    if im.dims.len() != 3 {
        return Err(Error::format(
            images_path,
            3,
            format!(
                "expected a 3-d image file (N×H×W), found dims {:?}",
                im.dims
            ),
        ));
    }
    if lb.dims.len() != 1 {
        return Err(Error::format(
            labels_path,
            3,
            format!("expected a 1-d label file, found dims {:?}", lb.dims),
        ));
    }
    let (n, h, w) = (im.dims[0], im.dims[1], im.dims[2]);
    if lb.dims[0] != n {
        return Err(Error::format(
            labels_path,
            4,
            format!(
                "{} labels but {} has {n} images",
                lb.dims[0],
                images_path.display()
            ),
        ));
    }
    let k = class_names.len();
    let mut out = Vec::with_capacity(n);
    for (i, &l) in lb.data.iter().enumerate() {
        if l as usize >= k {
            return Err(Error::record(
                labels_path,
                i,
                format!("label {l} out of range 0..{k} (byte offset {})", 8 + i),
            ));
        }
        out.push(l as u32);
    }
    Ok(Dataset {
        name: name.to_string(),
        images: im.data,
        labels: out,
        n,
        channels: 1,
        height: h,
        width: w,
        class_names: class_names.iter().map(|s| s.to_string()).collect(),
    })
}

/// File stem of the Fashion-MNIST split (`train` or `t10k`).
pub fn fashion_mnist_prefix(split: Split) -> Result<&'static str> {
    match split {
        Split::Train => Ok("train"),
        Split::Test => Ok("t10k"),
        Split::Unlabeled => Err(Error::Invalid(
            "Fashion-MNIST has no unlabeled split".into(),
        )),
    }
}

/// Finds `stem` or `stem.gz` in `dir`.
fn find_gz_or_raw(dir: &Path, stem: &str) -> Result<PathBuf> {
    let gz = dir.join(format!("{stem}.gz"));
    if gz.is_file() {
        return Ok(gz);
    }
    let raw = dir.join(stem);
    if raw.is_file() {
        return Ok(raw);
    }
    Err(Error::Missing {
        path: gz,
        hint: format!(
            "Neither {stem}.gz nor {stem} is in {}. Install the Debian package \
             `dataset-fashion-mnist` (files in {FASHION_MNIST_DEFAULT_DIR}), or put the four \
             IDX files there and point PYRAMID_DATA (or --data-dir) at the folder.",
            dir.display()
        ),
    })
}

/// Does `dir` itself hold Fashion-MNIST image files?
pub fn is_fashion_mnist_dir(dir: &Path) -> bool {
    FASHION_MNIST.layouts().iter().any(|l| l.holds(dir))
}

/// Reads Fashion-MNIST (`{train,t10k}-{images-idx3,labels-idx1}-ubyte[.gz]`) from `dir`.
pub fn read_fashion_mnist(dir: &Path, split: Split) -> Result<Dataset> {
    let p = fashion_mnist_prefix(split)?;
    let ip = find_gz_or_raw(dir, &format!("{p}-images-idx3-ubyte"))?;
    let lp = find_gz_or_raw(dir, &format!("{p}-labels-idx1-ubyte"))?;
    let ib = read_file(&ip)?;
    let lb = read_file(&lp)?;
    parse_idx_pair(
        &format!("fashion-mnist/{}", split.as_str()),
        &ip,
        ib,
        &lp,
        lb,
        &FASHION_MNIST_CLASSES,
    )
}

/// Serialises an N×H×W u8 image array as an IDX file (uncompressed).
pub fn write_idx_images(n: usize, h: usize, w: usize, data: &[u8]) -> Vec<u8> {
    let mut out = vec![0, 0, 8, 3];
    for d in [n, h, w] {
        out.extend_from_slice(&(d as u32).to_be_bytes());
    }
    out.extend_from_slice(data);
    out
}

/// Serialises labels as an IDX file (uncompressed).
pub fn write_idx_labels(labels: &[u8]) -> Vec<u8> {
    let mut out = vec![0, 0, 8, 1];
    out.extend_from_slice(&(labels.len() as u32).to_be_bytes());
    out.extend_from_slice(labels);
    out
}

/// Gzip-compresses `data` deterministically (mtime 0, no file name, best compression).
pub fn gzip(data: &[u8]) -> Vec<u8> {
    use std::io::Write;
    let mut enc = flate2::GzBuilder::new()
        .mtime(0)
        .write(Vec::new(), flate2::Compression::best());
    enc.write_all(data).expect("writing to a Vec cannot fail");
    enc.finish().expect("writing to a Vec cannot fail")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roundtrip_gz_and_raw() {
        let imgs: Vec<u8> = (0..3 * 4 * 5).map(|x| x as u8).collect();
        let labels = vec![0u8, 9, 3];
        for gz in [false, true] {
            let mut ib = write_idx_images(3, 4, 5, &imgs);
            let mut lb = write_idx_labels(&labels);
            if gz {
                ib = gzip(&ib);
                lb = gzip(&lb);
            }
            let d = parse_idx_pair(
                "t",
                Path::new("i"),
                ib,
                Path::new("l"),
                lb,
                &FASHION_MNIST_CLASSES,
            )
            .unwrap();
            assert_eq!((d.n, d.channels, d.height, d.width), (3, 1, 4, 5));
            assert_eq!(d.labels, vec![0, 9, 3]);
            assert_eq!(d.pixel(1, 0, 2, 3), (20 + 10 + 3) as u8);
        }
    }

    #[test]
    fn errors_name_file_and_place() {
        let ib = write_idx_images(2, 2, 2, &[0; 8]);
        let lb = write_idx_labels(&[1, 10]);
        let e = parse_idx_pair(
            "t",
            Path::new("imgs.idx"),
            ib.clone(),
            Path::new("labels.idx"),
            lb,
            &FASHION_MNIST_CLASSES,
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("labels.idx") && e.contains("record 1"), "{e}");
        let e = parse_idx_pair(
            "t",
            Path::new("imgs.idx"),
            ib[..ib.len() - 1].to_vec(),
            Path::new("labels.idx"),
            write_idx_labels(&[1, 1]),
            &FASHION_MNIST_CLASSES,
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("imgs.idx") && e.contains("expected 24"), "{e}");
    }
}
