//! `pyramid table` end to end, on the run-directory fixtures of the pyramid crate's table tests
//! (seeds 3, 1, 2 of one config in `run-a`, `run-b`, `run-c`; another config in `other`; seed 1
//! of run-b's config again in `dup`).

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../pyramid/tests/data/table")
        .join(name)
}

fn pyramid(args: &[&str], dirs: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_pyramid"))
        .arg("table")
        .args(dirs.iter().map(|d| fixture(d)))
        .args(args)
        .output()
        .unwrap()
}

fn ok(out: &Output) -> String {
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout.clone()).unwrap()
}

#[test]
fn markdown_of_three_seeds_and_another_config() {
    let md = ok(&pyramid(&[], &["run-a", "run-b", "run-c", "other"]));
    // SVGG17 scratch 85, 86, 87 → 86 ± 1; pyramid 88, 90, 92 → 90 ± 2 (sample std); latency:
    // the fastest timing (1300 img/s, 10 s per 13,000 images).
    assert!(
        md.contains("| SVGG17 | 0.315 M | 6.0 M | 86.00 ± 1.00 | 90.00 ± 2.00 | 1300 | 10.00 |"),
        "{md}"
    );
    assert!(
        md.contains("3 seeds (1, 2, 3)") && md.contains("1 seed (1)"),
        "{md}"
    );
    assert_eq!(md.matches("## Forward scheme").count(), 2, "{md}");
    assert_eq!(md.matches("## Backward scheme").count(), 1, "{md}");
}

#[test]
fn csv_with_last_and_paper_to_a_file() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("sub/table.csv");
    let out = pyramid(
        &[
            "--format",
            "csv",
            "--last",
            "--paper",
            "--out",
            file.to_str().unwrap(),
        ],
        &["run-a", "run-b", "run-c"],
    );
    assert!(ok(&out).is_empty(), "--out writes nothing to stdout");
    let csv = std::fs::read_to_string(&file).unwrap();
    // Last epoch of SVGG17 scratch: 84, 84, 87 → mean 85, std √3; the paper's Table 1: 93.925.
    assert!(
        csv.contains("1,fixture,stl10,forward,SVGG17,scratch,315000,6000000,last,3,85,1.7320508075688772,84 84 87,1 2 3,false,93.925,1150,11.5\n"),
        "{csv}"
    );
    assert_eq!(csv.lines().count(), 1 + 5);
}

#[test]
fn json_is_structured() {
    let out = pyramid(&["--format", "json"], &["run-a", "run-b", "run-c"]);
    let v: serde_json::Value = serde_json::from_str(&ok(&out)).unwrap();
    let cell = &v["tables"][0]["rows"][1]["cells"][1];
    // SVGG14 pyramid: seeds 1 and 3 only, 84 and 86 → 85 ± √2.
    assert_eq!(cell["n"], 2);
    assert_eq!(cell["mean"], 85.0);
    assert_eq!(cell["std"], 2f64.sqrt());
    assert_eq!(cell["seeds"], serde_json::json!([1, 3]));
}

#[test]
fn bad_inputs_fail_naming_the_culprit() {
    let out = pyramid(&[], &["run-b", "dup"]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("seed 1") && err.contains("run-b") && err.contains("dup"),
        "{err}"
    );

    let out = pyramid(&[], &["run-b", "no-such-run"]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("no-such-run/results.json"), "{err}");

    let out = pyramid(&["--format", "xml"], &["run-b"]);
    assert!(!out.status.success());
}
