//! The CPU smoke config of every method (configs/smoke/) runs end to end through the `pyramid`
//! binary, sharing one run directory (the teacher trains once), and the report then has one
//! column per method.

use std::path::PathBuf;
use std::process::Command;

#[test]
fn every_smoke_config_runs_and_the_report_has_a_column_per_method() {
    let configs = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../configs/smoke");
    let mut paths: Vec<PathBuf> = std::fs::read_dir(&configs)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "toml"))
        .collect();
    paths.sort();
    assert_eq!(paths.len(), 8, "one smoke config per method");
    let out = tempfile::tempdir().unwrap();
    for p in &paths {
        let o = Command::new(env!("CARGO_BIN_EXE_pyramid"))
            .args(["run", p.to_str().unwrap(), "--no-progress", "--out"])
            .arg(out.path())
            .output()
            .unwrap();
        assert!(
            o.status.success(),
            "{}: {}",
            p.display(),
            String::from_utf8_lossy(&o.stderr)
        );
    }
    let report = std::fs::read_to_string(out.path().join("report.md")).unwrap();
    // The last config's method (scratch) comes first, then every other method found in the
    // run directory, in registry order; then the measured latency.
    let header = report
        .lines()
        .find(|l| l.starts_with("| Model | Params | MACs |"))
        .unwrap();
    assert_eq!(
        header,
        "| Model | Params | MACs | Scratch | Pyramid 2-stages | Pyramid Gram | Pyramid logits | Hinton 2-stages | FitNet | Gram Direct | KD | img/s (best) | s / 13k img (best) |"
    );
    // Every run times its models and draws its figures, and the report embeds them.
    for figure in [
        "figure3",
        "accuracy-params",
        "accuracy-macs",
        "curves-teacher",
    ] {
        assert!(
            report.contains(&format!("(figures/{figure}.png)")),
            "{figure} not in report.md"
        );
        assert!(out.path().join(format!("figures/{figure}.png")).is_file());
        assert!(out.path().join(format!("figures/{figure}.svg")).is_file());
    }
    let results: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.path().join("results.json")).unwrap())
            .unwrap();
    // 8 methods × 10 levels, less the Gram methods' four head-compressing levels.
    assert_eq!(results["levels"].as_array().unwrap().len(), 76);
}
