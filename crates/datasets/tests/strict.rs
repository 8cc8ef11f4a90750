//! Data is never used silently: a root given explicitly (argument or `$PYRAMID_DATA`) must
//! hold the data set, with no fallback to another copy; the embedded set takes no root; and
//! `verify` fails on empty splits, unofficial sizes and wrong image shapes.

use std::path::Path;
use std::sync::Mutex;

use pyramid_datasets::idx::{write_idx_images, write_idx_labels, FASHION_MNIST_DEFAULT_DIR};
use pyramid_datasets::{
    load, locate, resolve_root, verify, verify_with, DataRoot, DatasetKind, Error, Located,
    RootOrigin, Split, Verdict, VerifyOptions, DATA_ENV,
};

/// Serialises the tests that read or write `$PYRAMID_DATA` (one process, one environment).
static ENV: Mutex<()> = Mutex::new(());

fn env_lock() -> std::sync::MutexGuard<'static, ()> {
    ENV.lock().unwrap_or_else(|e| e.into_inner())
}

/// Runs `f` with `$PYRAMID_DATA` set to `v` (removed for `None`), then restores it.
fn with_env<T>(v: Option<&Path>, f: impl FnOnce() -> T) -> T {
    let _g = env_lock();
    let old = std::env::var_os(DATA_ENV);
    match v {
        Some(v) => std::env::set_var(DATA_ENV, v),
        None => std::env::remove_var(DATA_ENV),
    }
    let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(f));
    match old {
        Some(o) => std::env::set_var(DATA_ENV, o),
        None => std::env::remove_var(DATA_ENV),
    }
    r.unwrap_or_else(|p| std::panic::resume_unwind(p))
}

fn write(p: &Path, b: &[u8]) {
    std::fs::create_dir_all(p.parent().unwrap()).unwrap();
    std::fs::write(p, b).unwrap();
}

/// Fashion-MNIST IDX files of `n` images of `side`×`side` (train) and `n` (t10k).
fn make_fmnist(dir: &Path, n: usize, side: usize) {
    for p in ["train", "t10k"] {
        let imgs: Vec<u8> = (0..n * side * side).map(|i| (i % 251) as u8).collect();
        let labels: Vec<u8> = (0..n).map(|i| (i % 10) as u8).collect();
        write(
            &dir.join(format!("{p}-images-idx3-ubyte")),
            &write_idx_images(n, side, side, &imgs),
        );
        write(
            &dir.join(format!("{p}-labels-idx1-ubyte")),
            &write_idx_labels(&labels),
        );
    }
}

/// CIFAR-100 binary records: `(train, test)` images.
fn make_cifar100(root: &Path, train: usize, test: usize) {
    let d = root.join("cifar-100-binary");
    for (name, n) in [("train", train), ("test", test)] {
        let mut f = Vec::new();
        for k in 0..n {
            f.push((k % 20) as u8);
            f.push((k % 100) as u8);
            f.extend((0..3072).map(|i| ((i + k) % 256) as u8));
        }
        write(&d.join(format!("{name}.bin")), &f);
    }
}

fn cifar100() -> DatasetKind {
    "cifar100".parse().unwrap()
}

#[test]
fn explicit_nonexistent_root_is_an_error_naming_it() {
    let t = tempfile::tempdir().unwrap();
    let missing = t.path().join("no-such-folder");
    for kind in [DatasetKind::FashionMnist, DatasetKind::Stl10, cifar100()] {
        let e = load(kind, Some(&missing), Split::Train).unwrap_err();
        let msg = e.to_string();
        assert!(
            matches!(&e, Error::NoDataset { root, .. } if root == &missing),
            "{kind}: {e:?}"
        );
        assert!(
            msg.contains(&missing.display().to_string())
                && msg.contains("does not exist")
                && msg.contains(&kind.to_string())
                && msg.contains("given explicitly")
                && msg.contains("layouts searched"),
            "{kind}: {msg}"
        );
        let e = verify(kind, Some(&missing)).unwrap_err().to_string();
        assert!(e.contains(&missing.display().to_string()), "{kind}: {e}");
    }
    // The system copy is never read in place of a root that was given.
    let e = load(
        DatasetKind::FashionMnist,
        Some(Path::new("/nonexistent")),
        Split::Test,
    )
    .unwrap_err()
    .to_string();
    assert!(
        e.starts_with("/nonexistent: does not exist") && e.contains("FashionMNIST/raw"),
        "{e}"
    );
}

#[test]
fn explicit_empty_or_wrong_root_is_an_error() {
    let t = tempfile::tempdir().unwrap();
    for kind in [
        DatasetKind::FashionMnist,
        DatasetKind::Stl10,
        DatasetKind::Cifar10,
        cifar100(),
    ] {
        let e = load(kind, Some(t.path()), Split::Train).unwrap_err();
        assert!(matches!(e, Error::NoDataset { .. }), "{kind}: {e:?}");
        let msg = e.to_string();
        assert!(
            msg.contains(&t.path().display().to_string())
                && msg.contains(&format!("holds no {kind} files")),
            "{kind}: {msg}"
        );
    }
    // A root holding another data set does not hold this one.
    make_cifar100(t.path(), 2, 2);
    let e = load(DatasetKind::Stl10, Some(t.path()), Split::Train)
        .unwrap_err()
        .to_string();
    assert!(e.contains("holds no stl10 files"), "{e}");
    assert_eq!(load(cifar100(), Some(t.path()), Split::Train).unwrap().n, 2);
    // A file is not a root.
    let f = t.path().join("file");
    write(&f, b"x");
    let e = load(DatasetKind::Cifar10, Some(&f), Split::Train)
        .unwrap_err()
        .to_string();
    assert!(e.contains("is not a folder"), "{e}");
}

#[test]
fn fashion_mnist_layouts_are_found_under_an_explicit_root() {
    for sub in ["", "fashion-mnist", "FashionMNIST/raw"] {
        let t = tempfile::tempdir().unwrap();
        let dir = t.path().join(sub);
        make_fmnist(&dir, 3, 28);
        let d = load(DatasetKind::FashionMnist, Some(t.path()), Split::Train).unwrap();
        assert_eq!((d.n, d.height, d.width), (3, 28, 28), "{sub}");
        match locate(DatasetKind::FashionMnist, Some(t.path())).unwrap() {
            Located::Files { root, dir: found } => {
                assert_eq!(found, dir, "{sub}");
                assert_eq!(root.origin(), RootOrigin::Argument);
            }
            Located::Embedded => panic!("not embedded"),
        }
    }
}

#[test]
fn embedded_takes_no_root() {
    let t = tempfile::tempdir().unwrap();
    for root in [t.path(), Path::new("/nonexistent")] {
        let e = load(DatasetKind::Embedded, Some(root), Split::Train)
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("embedded") && e.contains("takes no data root"),
            "{e}"
        );
        let e = verify(DatasetKind::Embedded, Some(root))
            .unwrap_err()
            .to_string();
        assert!(e.contains("takes no data root"), "{e}");
    }
}

/// All the tests that depend on `$PYRAMID_DATA`, under one lock.
#[test]
fn env_root_and_defaults() {
    let t = tempfile::tempdir().unwrap();
    let missing = t.path().join("gone");
    with_env(Some(&missing), || {
        assert_eq!(
            resolve_root(DatasetKind::Stl10, None),
            DataRoot::Explicit {
                path: missing.clone(),
                origin: RootOrigin::Env
            }
        );
        for kind in [DatasetKind::FashionMnist, DatasetKind::Stl10, cifar100()] {
            let e = load(kind, None, Split::Test).unwrap_err();
            let msg = e.to_string();
            assert!(matches!(e, Error::NoDataset { .. }), "{kind}: {msg}");
            assert!(
                msg.contains(&missing.display().to_string())
                    && msg.contains("does not exist")
                    && msg.contains("$PYRAMID_DATA"),
                "{kind}: {msg}"
            );
        }
        // An argument still wins over the variable.
        let good = t.path().join("good");
        make_cifar100(&good, 3, 1);
        assert_eq!(load(cifar100(), Some(&good), Split::Train).unwrap().n, 3);
        // The embedded set ignores the variable (it is a root for the others).
        assert_eq!(
            load(DatasetKind::Embedded, None, Split::Test).unwrap().n,
            1000
        );
    });
    // An empty variable counts as unset.
    with_env(Some(Path::new("")), || {
        assert!(!resolve_root(DatasetKind::Cifar10, None).is_explicit());
    });
    with_env(None, || {
        assert_eq!(
            resolve_root(DatasetKind::Cifar10, None),
            DataRoot::Default("data".into())
        );
        assert_eq!(
            load(DatasetKind::Embedded, None, Split::Train).unwrap().n,
            2000
        );
        let s = verify(DatasetKind::Embedded, None).unwrap();
        assert_eq!(s.verdict, Verdict::Ok);
        let sys = Path::new(FASHION_MNIST_DEFAULT_DIR);
        if !pyramid_datasets::idx::is_fashion_mnist_dir(sys) {
            eprintln!(
                "skipped the Fashion-MNIST default: nothing in {}",
                sys.display()
            );
            return;
        }
        match locate(DatasetKind::FashionMnist, None).unwrap() {
            Located::Files { root, dir } => {
                assert_eq!(root, DataRoot::Default(sys.to_path_buf()));
                assert_eq!(dir, sys);
            }
            Located::Embedded => panic!("not embedded"),
        }
        let d = load(DatasetKind::FashionMnist, None, Split::Test).unwrap();
        assert_eq!((d.n, d.height, d.width), (10_000, 28, 28));
    });
}

#[test]
fn verify_fails_on_empty_partial_and_misshapen_data() {
    // Empty train split: fails even with allow_partial, naming the split.
    let t = tempfile::tempdir().unwrap();
    make_cifar100(t.path(), 0, 2);
    for allow_partial in [false, true] {
        let e =
            verify_with(cifar100(), Some(t.path()), VerifyOptions { allow_partial }).unwrap_err();
        let Error::Verify { summary } = &e else {
            panic!("{e:?}")
        };
        assert_eq!(summary.verdict, Verdict::Failed);
        assert_eq!(summary.splits[0].n, 0);
        assert!(
            summary.problems.iter().any(|p| p == "train is empty"),
            "{:?}",
            summary.problems
        );
        assert!(e.to_string().contains("train is empty"), "{e}");
    }
    // Partial: fails by default, accepted (as partial) when allowed.
    let t = tempfile::tempdir().unwrap();
    make_cifar100(t.path(), 5, 3);
    let e = verify(cifar100(), Some(t.path())).unwrap_err().to_string();
    assert!(
        e.contains("train: 5 images, the official cifar100 has 50000")
            && e.contains("test: 3 images"),
        "{e}"
    );
    let s = verify_with(
        cifar100(),
        Some(t.path()),
        VerifyOptions {
            allow_partial: true,
        },
    )
    .unwrap();
    assert_eq!(s.verdict, Verdict::Partial);
    assert!(s.problems.is_empty());
    assert_eq!(s.warnings.len(), 2, "{:?}", s.warnings);
    assert!(s.to_string().contains("verdict: partial"), "{s}");
    let j = serde_json::to_value(&s).unwrap();
    assert_eq!(j["verdict"], "partial");
    // Wrong image shape (27×27 IDX): verify fails naming the split, load refuses it.
    let t = tempfile::tempdir().unwrap();
    make_fmnist(t.path(), 4, 27);
    let e = verify_with(
        DatasetKind::FashionMnist,
        Some(t.path()),
        VerifyOptions {
            allow_partial: true,
        },
    )
    .unwrap_err();
    let Error::Verify { summary } = &e else {
        panic!("{e:?}")
    };
    assert!(
        summary
            .problems
            .iter()
            .any(|p| p.starts_with("train: images are 1×27×27")),
        "{:?}",
        summary.problems
    );
    let j = serde_json::to_value(summary).unwrap();
    assert_eq!(j["verdict"], "failed");
    let e = load(DatasetKind::FashionMnist, Some(t.path()), Split::Test)
        .unwrap_err()
        .to_string();
    assert!(e.contains("1×27×27") && e.contains("1×28×28"), "{e}");
}
