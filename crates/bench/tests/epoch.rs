//! The whole-epoch cases of `pyramid-bench` end to end, capped at a few batches: the child runs
//! the engine's data path and fused step on full Fashion-MNIST and the parent's JSON holds every
//! field; a missing data directory is refused before any case runs.

use std::path::Path;
use std::process::Command;

fn bench() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_pyramid-bench"));
    c.env_remove("PYRAMID_DATA").env("RUST_BACKTRACE", "0");
    c
}

#[test]
fn capped_epoch_case_reports_every_field() {
    if !Path::new("/usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz").exists() {
        eprintln!("skipped: the Debian package dataset-fashion-mnist is not installed");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let json = dir.path().join("bench.json");
    let out = bench()
        .args([
            "--cases",
            "epoch-d16-bn",
            "--limit-batches",
            "3",
            "--threads",
            "2",
        ])
        .arg("--json")
        .arg(&json)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains("capped at 3 train / 3 test batches"),
        "{stdout}"
    );
    let doc: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    assert_eq!(doc["limit_batches"], 3);
    assert_eq!(doc["results"].as_array().unwrap().len(), 0);
    let r = &doc["epoch_results"][0];
    assert_eq!(r["case"], "epoch-d16-bn");
    assert_eq!(r["backend"], "fused");
    assert_eq!(r["version"], "candle 0.11.1, fused");
    // 3 batches of 128 training images, 3 of 500 test images.
    assert_eq!(r["batches"], 3);
    assert_eq!(r["train_images"], 384);
    assert_eq!(r["test_images"], 1500);
    assert_eq!(r["threads"], 2);
    for k in ["train_s", "test_s", "cpu_s"] {
        assert!(r[k].as_f64().unwrap() > 0.0, "{k}: {r}");
    }
    // Fresh weights: about ln 10 = 2.303 on ten classes.
    let loss = r["train_loss"].as_f64().unwrap();
    assert!((loss - 10f64.ln()).abs() < 0.2, "{loss}");
    for k in ["train_acc", "test_acc"] {
        let v = r[k].as_f64().unwrap();
        assert!((0.0..=100.0).contains(&v), "{k} = {v}");
    }
    assert!(r["test_loss"].as_f64().unwrap().is_finite());
    assert!(r["peak_rss_kib"].as_u64().unwrap() > 10_000);
}

#[test]
fn missing_data_is_refused_before_any_case() {
    let out = bench()
        .args([
            "--cases",
            "epoch-d16-bn,epoch-d8-nobn",
            "--limit-batches",
            "1",
        ])
        .args(["--data-root", "/nonexistent/fashion-mnist"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("/nonexistent/fashion-mnist"), "{err}");
    assert!(err.contains("dataset-fashion-mnist"), "{err}");
    assert!(
        err.contains("the epoch cases train on full Fashion-MNIST"),
        "{err}"
    );
    // Refused in the parent: no case started.
    assert!(!err.contains("FAILED"), "{err}");
    assert!(
        out.stdout.is_empty(),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
}

#[test]
fn unknown_epoch_case_is_refused() {
    let out = bench().args(["--cases", "epoch-d4-bn"]).output().unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("unknown case `epoch-d4-bn`"), "{err}");
    assert!(
        err.contains("epoch-d16-bn, epoch-d16-nobn, epoch-d8-bn, epoch-d8-nobn"),
        "{err}"
    );
}
