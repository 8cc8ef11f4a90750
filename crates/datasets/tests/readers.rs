//! Readers on tiny fixtures in the exact official formats (made here, or checked in for the
//! python pickles): pixel positions, label mapping, counts, and error messages.

use std::path::Path;

use pyramid_datasets::stl10::UnlabeledStl10;
use pyramid_datasets::{load, Cifar100Labels, DatasetKind, Error, Split};

fn stl_val(i: usize, c: usize, h: usize, w: usize) -> u8 {
    ((i * 11 + c * 80 + h * 5 + w * 3) % 251) as u8
}

/// STL-10 stored layout: per image, per channel, column-major (byte c·9216 + w·96 + h).
fn stl_x(n: usize, first: usize) -> Vec<u8> {
    let mut v = vec![0u8; n * 27648];
    for i in 0..n {
        for c in 0..3 {
            for h in 0..96 {
                for w in 0..96 {
                    v[i * 27648 + c * 9216 + w * 96 + h] = stl_val(first + i, c, h, w);
                }
            }
        }
    }
    v
}

fn write(p: &Path, b: &[u8]) {
    std::fs::create_dir_all(p.parent().unwrap()).unwrap();
    std::fs::write(p, b).unwrap();
}

const STL_NAMES: &str = "airplane\nbird\ncar\ncat\ndeer\ndog\nhorse\nmonkey\nship\ntruck\n";

fn make_stl(root: &Path) {
    let d = root.join("stl10_binary");
    write(&d.join("train_X.bin"), &stl_x(4, 0));
    write(&d.join("train_y.bin"), &[1, 10, 5, 2]);
    write(&d.join("test_X.bin"), &stl_x(3, 100));
    write(&d.join("test_y.bin"), &[3, 3, 7]);
    write(&d.join("class_names.txt"), STL_NAMES.as_bytes());
    write(&d.join("unlabeled_X.bin"), &stl_x(5, 200));
}

#[test]
fn stl10_pixels_labels_counts() {
    let t = tempfile::tempdir().unwrap();
    make_stl(t.path());
    let tr = load(DatasetKind::Stl10, Some(t.path()), Split::Train).unwrap();
    assert_eq!((tr.n, tr.channels, tr.height, tr.width), (4, 3, 96, 96));
    assert_eq!(tr.labels, vec![0, 9, 4, 1]);
    assert_eq!(tr.class_names[7], "monkey");
    for &(i, c, h, w) in &[
        (0, 0, 0, 0),
        (1, 2, 0, 95),
        (2, 1, 95, 0),
        (3, 0, 17, 60),
        (0, 2, 60, 17),
    ] {
        assert_eq!(
            tr.pixel(i, c, h, w),
            stl_val(i, c, h, w),
            "({i},{c},{h},{w})"
        );
    }
    let te = load(
        DatasetKind::Stl10,
        Some(&t.path().join("stl10_binary")),
        Split::Test,
    )
    .unwrap();
    assert_eq!(te.n, 3);
    assert_eq!(te.labels, vec![2, 2, 6]);
    assert_eq!(te.pixel(2, 1, 40, 3), stl_val(102, 1, 40, 3));

    let u = UnlabeledStl10::open(t.path()).unwrap();
    assert_eq!(u.len(), 5);
    let img = u.image(3).unwrap();
    assert_eq!(img[2 * 9216 + 10 * 96 + 70], stl_val(203, 2, 10, 70));
    let s = u.subset(&[4, 0]).unwrap();
    assert_eq!(s.pixel(0, 1, 5, 6), stl_val(204, 1, 5, 6));
    assert_eq!(s.pixel(1, 1, 5, 6), stl_val(200, 1, 5, 6));
    let e = u.image(5).unwrap_err().to_string();
    assert!(
        e.contains("unlabeled_X.bin") && e.contains("record 5"),
        "{e}"
    );
    assert!(load(DatasetKind::Stl10, Some(t.path()), Split::Unlabeled).is_err());
}

#[test]
fn stl10_bad_input() {
    let t = tempfile::tempdir().unwrap();
    make_stl(t.path());
    let d = t.path().join("stl10_binary");
    // label 0 and 11 are out of range
    write(&d.join("train_y.bin"), &[1, 0, 5, 2]);
    let e = load(DatasetKind::Stl10, Some(t.path()), Split::Train)
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("train_y.bin") && e.contains("record 1") && e.contains("label 0"),
        "{e}"
    );
    write(&d.join("train_y.bin"), &[1, 2, 11, 2]);
    let e = load(DatasetKind::Stl10, Some(t.path()), Split::Train)
        .unwrap_err()
        .to_string();
    assert!(e.contains("record 2"), "{e}");
    // label count mismatch
    write(&d.join("train_y.bin"), &[1, 2, 3]);
    let e = load(DatasetKind::Stl10, Some(t.path()), Split::Train)
        .unwrap_err()
        .to_string();
    assert!(e.contains("train_y.bin") && e.contains("expected 4"), "{e}");
    // truncated images
    let mut x = stl_x(4, 0);
    x.truncate(3 * 27648 + 100);
    write(&d.join("train_X.bin"), &x);
    write(&d.join("train_y.bin"), &[1, 2, 3, 4]);
    let e = load(DatasetKind::Stl10, Some(t.path()), Split::Train)
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("train_X.bin") && e.contains("image 3") && e.contains("82944"),
        "{e}"
    );
    // missing file
    std::fs::remove_file(d.join("test_X.bin")).unwrap();
    let e = load(DatasetKind::Stl10, Some(t.path()), Split::Test).unwrap_err();
    assert!(matches!(e, Error::Missing { .. }), "{e}");
    assert!(e.to_string().contains("test_X.bin") && e.to_string().contains("stl10_binary"));
    // truncated unlabeled file
    write(&d.join("unlabeled_X.bin"), &vec![0u8; 27648 + 5]);
    let e = UnlabeledStl10::open(t.path()).unwrap_err().to_string();
    assert!(
        e.contains("unlabeled_X.bin") && e.contains("image 1"),
        "{e}"
    );
}

fn cifar_val(i: usize, c: usize, h: usize, w: usize) -> u8 {
    ((i * 13 + c * 70 + h * 7 + w * 2) % 253) as u8
}

fn cifar_image(i: usize) -> Vec<u8> {
    let mut v = Vec::with_capacity(3072);
    for c in 0..3 {
        for h in 0..32 {
            for w in 0..32 {
                v.push(cifar_val(i, c, h, w));
            }
        }
    }
    v
}

fn make_cifar10(root: &Path) {
    let d = root.join("cifar-10-batches-bin");
    let mut k = 0;
    for b in 1..=5 {
        let mut f = Vec::new();
        for _ in 0..2 {
            f.push((k % 10) as u8);
            f.extend(cifar_image(k));
            k += 1;
        }
        write(&d.join(format!("data_batch_{b}.bin")), &f);
    }
    let mut f = Vec::new();
    for j in 0..3 {
        f.push((9 - j) as u8);
        f.extend(cifar_image(100 + j));
    }
    write(&d.join("test_batch.bin"), &f);
    write(
        &d.join("batches.meta.txt"),
        b"airplane\nautomobile\nbird\ncat\ndeer\ndog\nfrog\nhorse\nship\ntruck\n\n",
    );
}

#[test]
fn cifar10_binary() {
    let t = tempfile::tempdir().unwrap();
    make_cifar10(t.path());
    let tr = load(DatasetKind::Cifar10, Some(t.path()), Split::Train).unwrap();
    assert_eq!((tr.n, tr.channels, tr.height, tr.width), (10, 3, 32, 32));
    assert_eq!(tr.labels, (0..10).collect::<Vec<u32>>());
    assert_eq!(tr.class_names[1], "automobile");
    for &(i, c, h, w) in &[(0, 0, 0, 0), (9, 2, 31, 0), (5, 1, 0, 31), (7, 0, 12, 25)] {
        assert_eq!(tr.pixel(i, c, h, w), cifar_val(i, c, h, w));
    }
    let te = load(DatasetKind::Cifar10, Some(t.path()), Split::Test).unwrap();
    assert_eq!(te.labels, vec![9, 8, 7]);
    assert_eq!(te.pixel(2, 2, 3, 30), cifar_val(102, 2, 3, 30));
    // bad label / truncated record
    let d = t.path().join("cifar-10-batches-bin");
    let mut f = std::fs::read(d.join("test_batch.bin")).unwrap();
    f[2 * 3073] = 10;
    write(&d.join("test_batch.bin"), &f);
    let e = load(DatasetKind::Cifar10, Some(t.path()), Split::Test)
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("test_batch.bin") && e.contains("record 2") && e.contains("6146"),
        "{e}"
    );
    f.truncate(3073 + 10);
    write(&d.join("test_batch.bin"), &f);
    let e = load(DatasetKind::Cifar10, Some(t.path()), Split::Test)
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("test_batch.bin") && e.contains("record 1"),
        "{e}"
    );
    std::fs::remove_file(d.join("data_batch_3.bin")).unwrap();
    let e = load(DatasetKind::Cifar10, Some(t.path()), Split::Train)
        .unwrap_err()
        .to_string();
    assert!(e.contains("data_batch_3.bin"), "{e}");
}

fn make_cifar100(root: &Path) {
    let d = root.join("cifar-100-binary");
    for (name, n, off) in [("train", 4, 0), ("test", 2, 50)] {
        let mut f = Vec::new();
        for k in 0..n {
            let fine = (k * 37 + off) % 100;
            f.push((fine % 20) as u8);
            f.push(fine as u8);
            f.extend(cifar_image(off + k));
        }
        write(&d.join(format!("{name}.bin")), &f);
    }
    let fine: String = (0..100).map(|i| format!("fine_{i}\n")).collect();
    let coarse: String = (0..20).map(|i| format!("coarse_{i}\n")).collect();
    write(&d.join("fine_label_names.txt"), fine.as_bytes());
    write(&d.join("coarse_label_names.txt"), coarse.as_bytes());
}

#[test]
fn cifar100_binary_fine_and_coarse() {
    let t = tempfile::tempdir().unwrap();
    make_cifar100(t.path());
    let fine = load("cifar100".parse().unwrap(), Some(t.path()), Split::Train).unwrap();
    assert_eq!(fine.n, 4);
    assert_eq!(fine.labels, vec![0, 37, 74, 11]);
    assert_eq!(fine.num_classes(), 100);
    assert_eq!(fine.class_names[37], "fine_37");
    assert_eq!(fine.pixel(3, 2, 31, 31), cifar_val(3, 2, 31, 31));
    assert_eq!(fine.pixel(1, 0, 4, 9), cifar_val(1, 0, 4, 9));
    let coarse = load(
        DatasetKind::Cifar100 {
            labels: Cifar100Labels::Coarse,
        },
        Some(t.path()),
        Split::Train,
    )
    .unwrap();
    assert_eq!(coarse.labels, vec![0, 17, 14, 11]);
    assert_eq!(coarse.num_classes(), 20);
    assert_eq!(coarse.images, fine.images);
    let te = load("cifar100".parse().unwrap(), Some(t.path()), Split::Test).unwrap();
    assert_eq!(te.labels, vec![50, 87]);
    assert_eq!(te.pixel(1, 1, 16, 8), cifar_val(51, 1, 16, 8));
    // coarse label out of range (>= 20) is reported even when fine labels are used
    let d = t.path().join("cifar-100-binary");
    let mut f = std::fs::read(d.join("test.bin")).unwrap();
    f[3074] = 20;
    write(&d.join("test.bin"), &f);
    let e = load("cifar100".parse().unwrap(), Some(t.path()), Split::Test)
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("test.bin") && e.contains("record 1") && e.contains("label byte 0"),
        "{e}"
    );
    // wrong number of class names
    write(&d.join("coarse_label_names.txt"), b"a\nb\n");
    let e = load(
        "cifar100:coarse".parse().unwrap(),
        Some(t.path()),
        Split::Train,
    )
    .unwrap_err()
    .to_string();
    assert!(
        e.contains("coarse_label_names.txt") && e.contains("expected 20"),
        "{e}"
    );
}

fn fixtures() -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures")
}

fn py_val(k: usize, c: usize, h: usize, w: usize) -> u8 {
    ((k * 7 + c * 50 + h * 3 + w) % 256) as u8
}

/// Pickles written by `tests/fixtures/make_pickles.py` (numpy 2, protocols 2, 3, 4 and 5).
#[test]
fn cifar_python_pickles() {
    let root = fixtures();
    let tr = load(DatasetKind::Cifar10, Some(&root), Split::Train).unwrap();
    assert_eq!((tr.n, tr.channels, tr.height, tr.width), (10, 3, 32, 32));
    assert_eq!(tr.labels, vec![2, 3, 4, 5, 6, 7, 8, 9, 0, 1]);
    assert_eq!(tr.class_names[9], "truck");
    for &(i, c, h, w) in &[(0, 0, 0, 0), (1, 2, 31, 5), (3, 1, 7, 30)] {
        assert_eq!(tr.pixel(i, c, h, w), py_val(i % 2, c, h, w));
    }
    let te = load(DatasetKind::Cifar10, Some(&root), Split::Test).unwrap();
    assert_eq!(te.labels, vec![8, 9]);

    let f = load("cifar100".parse().unwrap(), Some(&root), Split::Train).unwrap();
    assert_eq!(f.labels, vec![0, 37, 74]);
    assert_eq!(f.class_names[74], "fine_74");
    assert_eq!(f.pixel(2, 1, 20, 21), py_val(2, 1, 20, 21));
    let c = load("cifar100:coarse".parse().unwrap(), Some(&root), Split::Test).unwrap();
    assert_eq!(c.labels, vec![5, 2]);
    assert_eq!(c.class_names[2], "coarse_02");
    assert_eq!(c.pixel(1, 2, 31, 31), py_val(1, 2, 31, 31));
}

/// A pickle in the exact form of the original Python 2 `cPickle.dump(d, f, 2)` files (str
/// keys as SHORT_BINSTRING, numpy bools as `I00`, raw data as BINSTRING).
#[test]
fn python2_style_pickle() {
    use pyramid_datasets::pickle;
    let n = 2usize;
    let mut data = Vec::new();
    for k in 0..n {
        data.extend(cifar_image(k));
    }
    let mut p: Vec<u8> = vec![0x80, 2, b'}', b'q', 1, b'('];
    let sbs = |p: &mut Vec<u8>, s: &[u8]| {
        p.push(b'U');
        p.push(s.len() as u8);
        p.extend_from_slice(s);
    };
    sbs(&mut p, b"data");
    p.extend_from_slice(
        b"q\x02cnumpy.core.multiarray\n_reconstruct\nq\x03cnumpy\nndarray\nq\x04K\x00\x85",
    );
    sbs(&mut p, b"b");
    p.extend_from_slice(b"\x87Rq\x05(K\x01K\x02M\x00\x0c\x86cnumpy\ndtype\nq\x06");
    sbs(&mut p, b"u1");
    p.extend_from_slice(b"K\x00K\x01\x87Rq\x07(K\x03");
    sbs(&mut p, b"|");
    p.extend_from_slice(b"NNNJ\xff\xff\xff\xffJ\xff\xff\xff\xffK\x00tbI00\nT");
    p.extend_from_slice(&(data.len() as u32).to_le_bytes());
    p.extend_from_slice(&data);
    p.extend_from_slice(b"tbq\x08");
    sbs(&mut p, b"labels");
    p.extend_from_slice(b"]q\x09(K\x03K\x07e");
    sbs(&mut p, b"batch_label");
    sbs(&mut p, b"training batch 1 of 5");
    p.extend_from_slice(b"u.");
    let path = Path::new("data_batch_1");
    let v = pickle::parse(path, &p).unwrap();
    let (im, lb) = v.cifar_batch(path, "labels", 10).unwrap();
    assert_eq!(im, data);
    assert_eq!(lb, vec![3, 7]);
    let e = v.cifar_batch(path, "labels", 5).unwrap_err().to_string();
    assert!(e.contains("data_batch_1") && e.contains("record 1"), "{e}");
    // truncated inside the raw data: a size error with the offset, no panic
    for cut in [1, 10, 100, p.len() - 300, p.len() - 1] {
        let e = pickle::parse(path, &p[..cut]).unwrap_err().to_string();
        assert!(e.contains("data_batch_1"), "{e}");
    }
}

#[test]
fn missing_dataset_is_a_clear_error() {
    let t = tempfile::tempdir().unwrap();
    for kind in ["stl10", "cifar10", "cifar100"] {
        let e = load(kind.parse().unwrap(), Some(t.path()), Split::Train).unwrap_err();
        assert!(matches!(e, Error::NoDataset { .. }), "{kind}: {e}");
        assert!(e.to_string().contains("fetch"), "{e}");
    }
}
