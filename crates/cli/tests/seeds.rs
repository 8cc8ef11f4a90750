//! `seeds = [...]` and `--seeds N`: one run per seed in sibling directories `<out>/seed-<k>`,
//! each the same as a plain run with `seed = k`, sharing the teacher only when
//! `[run] share_teacher = true`.

use std::path::Path;
use std::process::{Command, Output};

mod common;

fn config() -> String {
    common::tiny_config(
        r#"name = "seeds"
schemes = ["forward"]
methods = ["scratch", "pyramid"]
levels = [1]"#,
        1,
    )
}

fn pyramid(dir: &Path, config: &str, args: &[&str]) -> Output {
    let path = dir.join(format!("{}.toml", args.join("_").replace(['-', '/'], "")));
    std::fs::write(&path, config).unwrap();
    Command::new(env!("CARGO_BIN_EXE_pyramid"))
        .arg("run")
        .arg(&path)
        .args(["--no-progress"])
        .args(args)
        .output()
        .unwrap()
}

fn ok(o: &Output) {
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
}

fn read(p: impl AsRef<Path>) -> Vec<u8> {
    std::fs::read(p.as_ref()).unwrap_or_else(|e| panic!("{}: {e}", p.as_ref().display()))
}

fn teacher_acc(run: &Path) -> f64 {
    let r: serde_json::Value =
        serde_json::from_slice(&read(run.join("teacher/result.json"))).unwrap();
    r["best_test_acc"].as_f64().unwrap()
}

#[test]
fn each_seed_is_a_plain_run_with_that_seed() {
    let tmp = tempfile::tempdir().unwrap();
    let multi = tmp.path().join("multi");
    let cfg = config().replace("name = \"seeds\"", "name = \"seeds\"\nseeds = [0, 1]");
    ok(&pyramid(
        tmp.path(),
        &cfg,
        &["--out", multi.to_str().unwrap()],
    ));
    let single = tmp.path().join("single");
    let cfg1 = config().replace("name = \"seeds\"", "name = \"seeds\"\nseed = 1");
    ok(&pyramid(
        tmp.path(),
        &cfg1,
        &["--out", single.to_str().unwrap()],
    ));
    let seed1 = multi.join("seed-1");
    for level in [
        "teacher",
        "forward/scratch/SVGG17",
        "forward/pyramid/SVGG17",
    ] {
        assert_eq!(
            read(seed1.join(level).join("metrics.jsonl")),
            read(single.join(level).join("metrics.jsonl")),
            "{level}"
        );
        assert_eq!(
            read(seed1.join(level).join("final.safetensors")),
            read(single.join(level).join("final.safetensors")),
            "{level}"
        );
    }
    // Without share_teacher each seed trains its own teacher.
    assert_ne!(
        read(multi.join("seed-0/teacher/metrics.jsonl")),
        read(seed1.join("teacher/metrics.jsonl"))
    );
    let config = String::from_utf8(read(seed1.join("config.toml"))).unwrap();
    assert!(config.lines().any(|l| l == "seed = 1"), "{config}");
    assert!(!config.lines().any(|l| l.starts_with("seeds")), "{config}");
}

#[test]
fn seeds_flag_and_a_shared_teacher() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("runs");
    let cfg = format!("{}\n[run]\nshare_teacher = true\n", config());
    // `--seeds 3` is seeds = [0, 1, 2].
    ok(&pyramid(
        tmp.path(),
        &cfg,
        &["--seeds", "3", "--out", out.to_str().unwrap()],
    ));
    let dirs: Vec<_> = (0..3).map(|k| out.join(format!("seed-{k}"))).collect();
    // Seeds 1 and 2 load seed 0's teacher: the same weights, so the same test accuracy, and
    // their students differ by seed only.
    let acc0 = teacher_acc(&dirs[0]);
    for d in &dirs[1..] {
        assert_eq!(teacher_acc(d), acc0);
        let r: serde_json::Value =
            serde_json::from_slice(&read(d.join("teacher/result.json"))).unwrap();
        // Loaded, not trained: no stage ran.
        assert_eq!(r["executed"], serde_json::json!([]), "{}", d.display());
    }
    assert_ne!(
        read(dirs[1].join("forward/scratch/SVGG17/metrics.jsonl")),
        read(dirs[2].join("forward/scratch/SVGG17/metrics.jsonl"))
    );
    // Each seed logs into its own run.log, which names its own directory only.
    for (k, d) in dirs.iter().enumerate() {
        let log = String::from_utf8(read(d.join("run.log"))).unwrap();
        assert!(log.contains(&format!("seed-{k} (locked")), "{log}");
        for other in (0..3).filter(|&j| j != k) {
            assert!(!log.contains(&format!("seed-{other} (locked")), "{log}");
        }
    }
    // The seeds aggregate into one table: the teacher row is one value (shared, std 0), the
    // students show mean ± std over n = 3.
    let table = String::from_utf8(read(out.join("table.md"))).unwrap();
    let row = table
        .lines()
        .find(|l| l.starts_with("| SVGG17 "))
        .unwrap_or_else(|| panic!("{table}"));
    assert_eq!(row.matches('±').count(), 2, "{row}");
    assert!(
        table.contains("n = 3") || table.contains("n=3") || table.contains("3 seeds"),
        "{table}"
    );
}

#[test]
fn contradicting_seed_settings_are_refused_before_anything_is_written() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("runs");
    for (prefix, needle) in [
        ("seed = 3\nseeds = [0, 1]\n", "set one of them"),
        ("seeds = [0, 1, 0]\n", "listed twice"),
    ] {
        let o = pyramid(
            tmp.path(),
            &format!("{prefix}{}", config()),
            &["--out", out.to_str().unwrap()],
        );
        assert!(!o.status.success());
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(err.contains(needle), "{err}");
        assert!(!out.exists(), "nothing is written");
    }
}
