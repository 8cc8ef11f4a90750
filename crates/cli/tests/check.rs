//! `pyramid check` validates a config, its whole plan and its data, and writes nothing.

use std::path::PathBuf;
use std::process::Command;

fn configs() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../configs")
}

fn check(config: &std::path::Path) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_pyramid"))
        .arg("check")
        .arg(config)
        .output()
        .unwrap()
}

#[test]
fn check_accepts_the_quickstart_and_refuses_bad_configs_before_training() {
    let o = check(&configs().join("quickstart.toml"));
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(
        out.contains("ok. 20 levels to train (30 stages) in 4 chains; embedded: 2000 train / 1000 test images. Nothing was written."),
        "{out}"
    );

    let dir = tempfile::tempdir().unwrap();
    let text = std::fs::read_to_string(configs().join("quickstart.toml"))
        .unwrap()
        .replace(
            "out_dir = \"runs/quickstart\"",
            &format!("out_dir = {:?}", dir.path().join("out")),
        );
    // A negative learning rate in the Scratch stage of every level: every level's problem is
    // reported at once, before anything trains, with a non-zero exit.
    let bad = text.replacen(
        "[scratch]\noptimizer = { kind = \"adam\", lr = 1e-3 }",
        "[scratch]\noptimizer = { kind = \"adam\", lr = -1e-3 }",
        1,
    );
    assert_ne!(bad, text);
    let path = dir.path().join("bad.toml");
    std::fs::write(&path, bad).unwrap();
    let o = check(&path);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success());
    assert!(
        err.contains("[forward/scratch/SVGG17 scratch] optimizer: invalid config: lr must be finite and >= 0, got -0.001"),
        "{err}"
    );
    assert!(err.contains("[backward/scratch/SVGG5B scratch]"), "{err}");
    assert!(!dir.path().join("out").exists(), "check writes nothing");
}
