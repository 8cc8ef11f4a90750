//! What `pyramid run` writes for people: no colour codes or bars in a piped log, `--quiet`,
//! and `<run dir>/run.log` (appended by every invocation, each under a header line).

use std::path::Path;
use std::process::{Command, Output};

/// A tiny run (about a second): the embedded data set, a ÷16-wide teacher and one level.
mod common;

fn tiny() -> String {
    common::tiny_config(
        r#"name = "logs"
seed = 0
schemes = ["forward"]
methods = ["pyramid"]
levels = [1]"#,
        1,
    )
}

/// `pyramid run CONFIG --out OUT [extra...]` with stdout and stderr piped and no `RUST_LOG`.
fn run(config: &Path, out: &Path, extra: &[&str]) -> Output {
    let o = Command::new(env!("CARGO_BIN_EXE_pyramid"))
        .env_remove("RUST_LOG")
        .env("RAYON_NUM_THREADS", "1")
        .env_remove("PYRAMID_DATA")
        .env_remove("PYRAMID_FAULT")
        .args(["run", config.to_str().unwrap(), "--out"])
        .arg(out)
        .args(extra)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    o
}

fn text(b: &[u8]) -> String {
    String::from_utf8(b.to_vec()).unwrap()
}

/// Header lines of a run.log.
fn headers(log: &str) -> Vec<&str> {
    log.lines().filter(|l| l.starts_with("==== ")).collect()
}

#[test]
fn a_piped_run_has_no_escape_codes_and_logs_to_run_log_under_one_header_per_invocation() {
    let t = tempfile::tempdir().unwrap();
    let config = t.path().join("tiny.toml");
    std::fs::write(&config, tiny()).unwrap();
    let out = t.path().join("out");

    // Bars are on (no --no-progress) but stderr is a pipe: neither bars nor colours.
    let o = run(&config, &out, &[]);
    let (stdout, stderr) = (text(&o.stdout), text(&o.stderr));
    assert!(
        !stderr.contains('\x1b') && !stdout.contains('\x1b'),
        "{stderr}"
    );
    assert!(
        !stderr.contains("batches"),
        "a progress bar in a pipe:\n{stderr}"
    );
    assert!(stderr.contains(" INFO ") && stderr.contains("teacher/VGG19: epoch 1 "));
    assert!(stdout.contains(&format!("log: {}", out.join("run.log").display())));

    let first = std::fs::read_to_string(out.join("run.log")).unwrap();
    assert!(!first.contains('\x1b'), "{first}");
    let h = headers(&first);
    assert_eq!(h.len(), 1, "{first}");
    assert!(first.starts_with("==== "), "{first}");
    assert!(h[0].contains(&format!("pyramid {}: ", env!("CARGO_PKG_VERSION"))));
    assert!(h[0].ends_with(&format!("run {} --out {}", config.display(), out.display())));
    // Every console line is in the log, from before the run directory existed on.
    for line in stderr.lines() {
        // Each line has its own timestamp in each place.
        let msg = line.split_once(' ').map_or(line, |(_, m)| m);
        assert!(first.contains(msg), "run.log lacks `{msg}`:\n{first}");
    }
    assert!(first.contains(" INFO ") && first.contains("data embedded: 160 train / 80 test"));

    // A second invocation (everything is complete) appends under a header of its own.
    run(&config, &out, &["--no-progress"]);
    let second = std::fs::read_to_string(out.join("run.log")).unwrap();
    assert!(
        second.starts_with(&first),
        "the first invocation's log changed"
    );
    let added = &second[first.len()..];
    assert_eq!(headers(added).len(), 1, "{added}");
    assert!(added.starts_with("==== ") && added.contains("--no-progress"));
    assert!(added.contains("teacher: complete"), "{added}");
}

#[test]
fn quiet_keeps_the_table_and_warnings_and_drops_info_lines() {
    let t = tempfile::tempdir().unwrap();
    let config = t.path().join("tiny.toml");
    std::fs::write(&config, tiny()).unwrap();
    let out = t.path().join("out");
    let o = run(&config, &out, &["--quiet"]);
    let (stdout, stderr) = (text(&o.stdout), text(&o.stderr));
    assert!(!stderr.contains("INFO"), "{stderr}");
    assert!(
        stderr
            .lines()
            .all(|l| l.contains("WARN") || l.contains("ERROR")),
        "{stderr}"
    );
    assert!(stdout.contains("SVGG17"), "no table:\n{stdout}");
    // The log file keeps everything.
    let log = std::fs::read_to_string(out.join("run.log")).unwrap();
    assert!(log.contains("teacher/VGG19: epoch 1 "), "{log}");
}

#[test]
fn a_dry_run_writes_no_run_log() {
    let t = tempfile::tempdir().unwrap();
    let config = t.path().join("tiny.toml");
    std::fs::write(&config, tiny()).unwrap();
    let out = t.path().join("out");
    run(&config, &out, &["--dry-run"]);
    assert!(!out.exists(), "a dry run created {}", out.display());
}
