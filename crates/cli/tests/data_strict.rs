//! `pyramid data verify|show` never use data silently: a given root must hold the data set,
//! and verify exits non-zero on empty splits, unofficial sizes and wrong image shapes.

use std::path::Path;
use std::process::{Command, Output};

fn pyramid(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_pyramid"))
        .args(args)
        // The default root only, never a copy named by the caller's environment.
        .env_remove("PYRAMID_DATA")
        .output()
        .unwrap()
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

fn write(p: &Path, b: &[u8]) {
    std::fs::create_dir_all(p.parent().unwrap()).unwrap();
    std::fs::write(p, b).unwrap();
}

/// CIFAR-100 binary files with `train` and `test` records.
fn make_cifar100(root: &Path, train: usize, test: usize) {
    let d = root.join("cifar-100-binary");
    for (name, n) in [("train", train), ("test", test)] {
        let mut f = Vec::new();
        for k in 0..n {
            f.push((k % 20) as u8);
            f.push((k % 100) as u8);
            f.extend((0..3072).map(|i| ((i * 7 + k) % 256) as u8));
        }
        write(&d.join(format!("{name}.bin")), &f);
    }
}

/// An uncompressed IDX image file (N×H×W) and its labels.
fn make_idx(dir: &Path, prefix: &str, n: usize, h: usize, w: usize) {
    let mut im = vec![0, 0, 8, 3];
    for d in [n, h, w] {
        im.extend_from_slice(&(d as u32).to_be_bytes());
    }
    im.extend((0..n * h * w).map(|i| (i % 256) as u8));
    write(&dir.join(format!("{prefix}-images-idx3-ubyte")), &im);
    let mut lb = vec![0, 0, 8, 1];
    lb.extend_from_slice(&(n as u32).to_be_bytes());
    lb.extend((0..n).map(|i| (i % 10) as u8));
    write(&dir.join(format!("{prefix}-labels-idx1-ubyte")), &lb);
}

fn verify(dataset: &str, dir: &Path, extra: &[&str]) -> Output {
    let mut a = vec!["data", "verify", "--dataset", dataset, "--dir"];
    a.push(dir.to_str().unwrap());
    a.extend_from_slice(extra);
    pyramid(&a)
}

#[test]
fn verify_refuses_a_missing_root_instead_of_the_system_copy() {
    let o = verify("fashion-mnist", Path::new("/nonexistent"), &[]);
    let err = text(&o.stderr);
    assert!(!o.status.success(), "{}", text(&o.stdout));
    assert!(
        err.contains("/nonexistent: does not exist") && err.contains("fashion-mnist"),
        "{err}"
    );
    assert!(
        !text(&o.stdout).contains("/usr/share/datasets"),
        "{}",
        text(&o.stdout)
    );
    // $PYRAMID_DATA is a given root too.
    let o = Command::new(env!("CARGO_BIN_EXE_pyramid"))
        .args(["data", "verify", "--dataset", "cifar100"])
        .env("PYRAMID_DATA", "/nonexistent/pyramid-data")
        .output()
        .unwrap();
    let err = text(&o.stderr);
    assert!(!o.status.success());
    assert!(
        err.contains("/nonexistent/pyramid-data") && err.contains("$PYRAMID_DATA"),
        "{err}"
    );
}

#[test]
fn embedded_with_a_dir_is_refused() {
    let t = tempfile::tempdir().unwrap();
    let o = verify("embedded", t.path(), &[]);
    assert!(!o.status.success());
    assert!(
        text(&o.stderr).contains("takes no data root"),
        "{}",
        text(&o.stderr)
    );
    let out = t.path().join("g.png");
    let o = pyramid(&[
        "data",
        "show",
        "--dataset",
        "embedded",
        "--dir",
        t.path().to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
    ]);
    assert!(!o.status.success());
    assert!(
        text(&o.stderr).contains("takes no data root"),
        "{}",
        text(&o.stderr)
    );
    assert!(!out.exists());
    // Without a dir it verifies, with the verdict in the JSON.
    let o = pyramid(&["data", "verify", "--dataset", "embedded", "--json"]);
    assert!(o.status.success(), "{}", text(&o.stderr));
    let j: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(j["verdict"], "ok");
}

#[test]
fn verify_fails_on_an_empty_split() {
    let t = tempfile::tempdir().unwrap();
    make_cifar100(t.path(), 0, 3);
    for extra in [&[][..], &["--allow-partial"][..]] {
        let o = verify("cifar100", t.path(), extra);
        let (out, err) = (text(&o.stdout), text(&o.stderr));
        assert!(!o.status.success(), "{extra:?}: {out}");
        assert!(err.contains("train is empty"), "{err}");
        // The summary is printed before the error.
        assert!(out.contains("verdict: FAILED"), "{out}");
    }
}

#[test]
fn verify_fails_on_partial_data_unless_allowed() {
    let t = tempfile::tempdir().unwrap();
    make_cifar100(t.path(), 6, 4);
    let o = verify("cifar100", t.path(), &[]);
    let err = text(&o.stderr);
    assert!(!o.status.success(), "{}", text(&o.stdout));
    assert!(
        err.contains("train: 6 images, the official cifar100 has 50000") && err.contains("test: 4"),
        "{err}"
    );
    let o = verify("cifar100", t.path(), &["--json"]);
    assert!(!o.status.success());
    let j: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(j["verdict"], "failed");
    assert_eq!(j["problems"].as_array().unwrap().len(), 2, "{j}");

    let o = verify("cifar100", t.path(), &["--allow-partial"]);
    let out = text(&o.stdout);
    assert!(o.status.success(), "{}", text(&o.stderr));
    assert!(out.contains("verdict: partial"), "{out}");
    let o = verify("cifar100", t.path(), &["--allow-partial", "--json"]);
    assert!(o.status.success(), "{}", text(&o.stderr));
    let j: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(j["verdict"], "partial");
    assert_eq!(j["splits"][0]["n"], 6);
}

#[test]
fn verify_fails_on_a_wrong_image_size() {
    // IDX files declaring 27×27 images.
    let t = tempfile::tempdir().unwrap();
    make_idx(t.path(), "train", 5, 27, 27);
    make_idx(t.path(), "t10k", 5, 27, 27);
    let o = verify("fashion_mnist", t.path(), &["--allow-partial"]);
    let err = text(&o.stderr);
    assert!(!o.status.success(), "{}", text(&o.stdout));
    assert!(
        err.contains("train: images are 1×27×27") && err.contains("1×28×28"),
        "{err}"
    );
    // STL-10 images of 64×64 (12,288 bytes) in a file that should hold 96×96 ones.
    let t = tempfile::tempdir().unwrap();
    let d = t.path().join("stl10_binary");
    for s in ["train", "test"] {
        write(&d.join(format!("{s}_X.bin")), &vec![7u8; 3 * 3 * 64 * 64]);
        write(&d.join(format!("{s}_y.bin")), &[1, 2, 3]);
    }
    let o = verify("stl10", t.path(), &["--allow-partial"]);
    let err = text(&o.stderr);
    assert!(!o.status.success(), "{}", text(&o.stdout));
    assert!(
        err.contains("train_X.bin") && err.contains("27648"),
        "{err}"
    );
}

#[test]
fn data_options_have_help() {
    for sub in ["fetch", "verify", "show"] {
        let o = pyramid(&["data", sub, "--help"]);
        assert!(o.status.success());
        let out = text(&o.stdout);
        for line in out.lines().filter(|l| l.trim_start().starts_with("--")) {
            let l = line.trim();
            if l.starts_with("--help") {
                continue;
            }
            // "--name <VALUE>  help text": something after the option itself.
            let rest = l.split_once("  ").map_or("", |(_, r)| r.trim());
            assert!(!rest.is_empty(), "data {sub}: {l:?} has no help\n{out}");
        }
    }
}
