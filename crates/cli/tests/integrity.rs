//! A run directory you can trust, black-box: every way a run can go wrong is a clear error
//! with a non-zero exit, found before any epoch where it can be, and a run that fails leaves
//! an existing run directory exactly as it was (same files, same bytes, not rewritten).
//!
//! Cases: configs mixed in one directory, a corrupt data file, a data root that does not hold
//! the data, degenerate runs (empty splits, a diverging or a non-learning teacher), plan errors
//! found late, Ctrl-C and resume, two runs on one directory.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant, SystemTime};

/// A tiny, fast run (under a second on one core): the embedded data set, 160 train / 80 test
/// images, a ÷16-wide VGG19 teacher and one pyramid level, one epoch per stage. The three
/// learning rates differ so that each section's line is unique for `edit`.
const TINY: &str = r#"
name = "integrity"
seed = 0
schemes = ["forward"]
methods = ["pyramid"]
levels = [1]

[data]
dataset = "embedded"
batch_size = 32
eval_batch_size = 200
train_per_class = 16
test_per_class = 8

[model]
input_size = 32
width_div = 16
in_channels = 1
batch_norm = true

[teacher]
source = "train"
[teacher.recipe]
optimizer = { kind = "adam", lr = 3e-3 }
schedule = { kind = "constant", max_epochs = 1 }

[stage1]
optimizer = { kind = "adam", lr = 1e-3 }
schedule = { kind = "constant", max_epochs = 1 }

[stage2]
optimizer = { kind = "adam", lr = 2e-3 }
schedule = { kind = "constant", max_epochs = 1 }
"#;

/// `cfg` with the first `from` at or after the line `section` replaced by `to` (`""` for the
/// top of the file). Panics if there is nothing to replace: an edit never silently does nothing.
fn edit(cfg: &str, section: &str, from: &str, to: &str) -> String {
    let start = if section.is_empty() {
        0
    } else {
        cfg.find(&format!("\n{section}\n"))
            .unwrap_or_else(|| panic!("no section {section}"))
    };
    let at = start
        + cfg[start..]
            .find(from)
            .unwrap_or_else(|| panic!("no `{from}` after {section:?}"));
    format!("{}{to}{}", &cfg[..at], &cfg[at + from.len()..])
}

/// A long run (~10 s on two cores): 1,000 training images and an 8-epoch teacher.
fn long_config() -> String {
    let c = edit(
        TINY,
        "[data]",
        "train_per_class = 16",
        "train_per_class = 100",
    );
    edit(&c, "[teacher.recipe]", "max_epochs = 1", "max_epochs = 8")
}

fn write_config(dir: &Path, name: &str, text: &str) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, text).unwrap();
    p
}

fn pyramid() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_pyramid"));
    c.env("RUST_LOG", "info")
        .env("RAYON_NUM_THREADS", "1")
        .env_remove("PYRAMID_DATA")
        .env_remove("PYRAMID_FAULT");
    c
}

/// `pyramid run CONFIG --no-progress --out OUT [extra...]`.
fn run(config: &Path, out: &Path, extra: &[&str]) -> Output {
    pyramid()
        .args(["run", config.to_str().unwrap(), "--no-progress", "--out"])
        .arg(out)
        .args(extra)
        .output()
        .unwrap()
}

fn check(config: &Path) -> Output {
    pyramid()
        .args(["check", config.to_str().unwrap()])
        .output()
        .unwrap()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// Runs and asserts success.
fn run_ok(config: &Path, out: &Path, extra: &[&str]) -> String {
    let o = run(config, out, extra);
    let err = stderr(&o);
    assert!(
        o.status.success(),
        "run {} failed:\n{err}",
        config.display()
    );
    err
}

/// Asserts a failed command: exit status 1 (not a crash, not a signal), an `error:` line, and
/// every one of `words` in stderr.
fn assert_fails(o: &Output, what: &str, words: &[&str]) -> String {
    let err = stderr(o);
    assert!(
        !o.status.success(),
        "{what}: succeeded but should fail\n{err}"
    );
    assert_eq!(o.status.code(), Some(1), "{what}: exit status\n{err}");
    assert!(err.contains("error: "), "{what}: no error line\n{err}");
    for w in words {
        assert!(err.contains(w), "{what}: stderr lacks `{w}`:\n{err}");
    }
    err
}

/// Asserts that no training epoch ran (no stage log line at all).
fn assert_no_epoch(err: &str, what: &str) {
    assert!(
        !err.contains("pyramid::stage") && !err.contains(": epoch ") && !err.contains(": start "),
        "{what}: training started before the error:\n{err}"
    );
}

/// One file of a run directory: its bytes and whether it is the very same file (inode and
/// modification time), so that a rewrite with the same content is seen too.
#[derive(Debug, PartialEq, Eq)]
struct FileState {
    bytes: Vec<u8>,
    ino: u64,
    modified: SystemTime,
}

/// Every file (with its state) and every folder (`name/`) under `dir`.
fn snapshot(dir: &Path) -> BTreeMap<String, Option<FileState>> {
    use std::os::unix::fs::MetadataExt;
    let mut out = BTreeMap::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            let rel = p.strip_prefix(dir).unwrap().to_string_lossy().into_owned();
            let m = std::fs::metadata(&p).unwrap();
            if m.is_dir() {
                out.insert(format!("{rel}/"), None);
                stack.push(p);
            } else {
                out.insert(
                    rel,
                    Some(FileState {
                        bytes: std::fs::read(&p).unwrap(),
                        ino: m.ino(),
                        modified: m.modified().unwrap(),
                    }),
                );
            }
        }
    }
    out
}

/// Asserts that `dir` is exactly as `before`, naming what changed.
fn assert_unchanged(before: &BTreeMap<String, Option<FileState>>, dir: &Path, what: &str) {
    let after = snapshot(dir);
    let names = |m: &BTreeMap<String, Option<FileState>>| m.keys().cloned().collect::<Vec<_>>();
    assert_eq!(
        names(before),
        names(&after),
        "{what}: files of the run directory changed"
    );
    for (name, state) in before {
        if let (Some(a), Some(b)) = (state, &after[name]) {
            assert!(a.bytes == b.bytes, "{what}: {name} changed its bytes");
            assert!(
                a.ino == b.ino && a.modified == b.modified,
                "{what}: {name} was rewritten (same bytes, new file)"
            );
        }
    }
}

/// A finished tiny run in `dir/good`, checked for what every later case relies on.
fn good_run(dir: &Path, config_text: &str) -> (PathBuf, PathBuf) {
    let config = write_config(dir, "good.toml", config_text);
    let out = dir.join("good");
    run_ok(&config, &out, &[]);
    for f in [
        "config.toml",
        "plan.json",
        "results.json",
        "report.md",
        "teacher/result.json",
        "forward/pyramid/SVGG17/result.json",
        "run.log",
    ] {
        assert!(out.join(f).is_file(), "the good run wrote no {f}");
    }
    assert!(!out.join(".lock").exists(), "a finished run left its .lock");
    (config, out)
}

fn read_json(p: &Path) -> serde_json::Value {
    serde_json::from_slice(&std::fs::read(p).unwrap())
        .unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

/// Every `result.json` under `dir`.
fn result_files(dir: &Path) -> Vec<PathBuf> {
    snapshot(dir)
        .keys()
        .filter(|n| n.ends_with("result.json"))
        .map(|n| dir.join(n))
        .collect()
}

// ---------------------------------------------------------------------------------------------
// 1. Mixed configs

#[test]
fn another_config_on_a_finished_run_is_refused_and_force_redoes_it_all() {
    let t = tempfile::tempdir().unwrap();
    let (_, out) = good_run(t.path(), TINY);
    let before = snapshot(&out);

    let cases = [
        (
            "seed",
            edit(TINY, "", "seed = 0", "seed = 1"),
            "seed: 0 → 1",
        ),
        (
            "width_div",
            edit(TINY, "[model]", "width_div = 16", "width_div = 8"),
            "model.width_div: 16 → 8",
        ),
        (
            "train_per_class",
            edit(
                TINY,
                "[data]",
                "train_per_class = 16",
                "train_per_class = 12",
            ),
            "data.settings.train_per_class: 16 → 12",
        ),
    ];
    for (what, text, names) in &cases {
        let config = write_config(t.path(), &format!("{what}.toml"), text);
        let o = run(&config, &out, &[]);
        let err = assert_fails(
            &o,
            what,
            &[
                &out.display().to_string(),
                "another config",
                names,
                "teacher:",
                "forward/pyramid/SVGG17:",
                "--force",
                "another --out",
            ],
        );
        assert_no_epoch(&err, what);
        assert_unchanged(&before, &out, what);
    }
    // The data change names the split sizes too.
    let config = write_config(t.path(), "tpc.toml", &cases[2].1);
    let err = stderr(&run(&config, &out, &[]));
    assert!(err.contains("data.splits.train.images: 160 → 120"), "{err}");

    // --force redoes every model: nothing of seed 0 is left.
    let config = write_config(t.path(), "seed1.toml", &cases[0].1);
    let err = run_ok(&config, &out, &["--force"]);
    assert!(err.contains("redone (--force)"), "{err}");
    let results = read_json(&out.join("results.json"));
    assert_eq!(results["seed"], 1, "{results:#}");
    assert_eq!(results["teacher"]["inputs"]["seed"], 1, "{results:#}");
    assert!(
        results.get("excluded").is_none(),
        "results.json excludes models: {results:#}"
    );
    assert_eq!(
        results["levels"].as_array().unwrap().len(),
        1,
        "{results:#}"
    );
    let found = result_files(&out);
    assert_eq!(found.len(), 2, "{found:?}");
    for p in found {
        let r = read_json(&p);
        assert_eq!(r["inputs"]["seed"], 1, "{} mixes seeds", p.display());
    }
    let cfg = std::fs::read_to_string(out.join("config.toml")).unwrap();
    assert!(cfg.contains("seed = 1"), "{cfg}");
    assert!(!out.join(".lock").exists());
}

// ---------------------------------------------------------------------------------------------
// 2. A failed run never overwrites a good record

/// Fashion-MNIST IDX files (uncompressed, 28×28): `train` images in `train-*`, `test` in
/// `t10k-*`, labels 0..9 in turn. IDX: magic 00 00 08 <dims>, each dim a big-endian u32,
/// then the bytes.
fn make_fashion_mnist(dir: &Path, train: usize, test: usize) {
    fn idx(dims: &[usize], data: impl Iterator<Item = u8>) -> Vec<u8> {
        let mut b = vec![0, 0, 8, dims.len() as u8];
        for d in dims {
            b.extend_from_slice(&(*d as u32).to_be_bytes());
        }
        b.extend(data);
        b
    }
    std::fs::create_dir_all(dir).unwrap();
    for (prefix, n) in [("train", train), ("t10k", test)] {
        let images = (0..n * 28 * 28).map(|i| ((i * 7 + (i / 784) * 13) % 251) as u8);
        let labels = (0..n).map(|i| (i % 10) as u8);
        std::fs::write(
            dir.join(format!("{prefix}-images-idx3-ubyte")),
            idx(&[n, 28, 28], images),
        )
        .unwrap();
        std::fs::write(
            dir.join(format!("{prefix}-labels-idx1-ubyte")),
            idx(&[n], labels),
        )
        .unwrap();
    }
}

fn fashion_mnist_config(root: &Path) -> String {
    // All the generated images: 6 train and 3 test per class.
    let c = edit(
        TINY,
        "[data]",
        "dataset = \"embedded\"",
        &format!(
            "dataset = \"fashion_mnist\"\nroot = {:?}",
            root.display().to_string()
        ),
    );
    let c = edit(&c, "[data]", "train_per_class = 16\n", "");
    edit(&c, "[data]", "test_per_class = 8\n", "")
}

#[test]
fn a_corrupt_data_file_leaves_the_finished_run_untouched() {
    let t = tempfile::tempdir().unwrap();
    let data = t.path().join("fmnist");
    make_fashion_mnist(&data, 60, 30);
    let (config, out) = good_run(t.path(), &fashion_mnist_config(&data));
    // The loader takes data of unofficial sizes (60 / 30 here): only `data verify` insists on
    // the official ones.
    let results = read_json(&out.join("results.json"));
    assert_eq!(
        (&results["train_images"], &results["test_images"]),
        (&serde_json::json!(60), &serde_json::json!(30))
    );
    let before = snapshot(&out);

    let file = data.join("train-images-idx3-ubyte");
    let bytes = std::fs::read(&file).unwrap();
    std::fs::write(&file, &bytes[..bytes.len() / 2]).unwrap();
    let o = run(&config, &out, &[]);
    let err = assert_fails(
        &o,
        "truncated train images",
        &[&file.display().to_string(), "wrong size"],
    );
    assert_no_epoch(&err, "truncated train images");
    // config.toml and plan.json included: not rewritten, even with the same bytes.
    assert_unchanged(&before, &out, "truncated train images");

    // A truncated label file, likewise.
    std::fs::write(&file, &bytes).unwrap();
    let labels = data.join("t10k-labels-idx1-ubyte");
    let lb = std::fs::read(&labels).unwrap();
    std::fs::write(&labels, &lb[..lb.len() - 3]).unwrap();
    let o = run(&config, &out, &[]);
    assert_fails(
        &o,
        "truncated test labels",
        &[&labels.display().to_string()],
    );
    assert_unchanged(&before, &out, "truncated test labels");
}

// ---------------------------------------------------------------------------------------------
// 3. No silent data fallback

#[test]
fn a_data_root_without_the_data_is_an_error_never_a_fallback() {
    let t = tempfile::tempdir().unwrap();
    let out = t.path().join("out");
    let fashion = edit(
        TINY,
        "[data]",
        "dataset = \"embedded\"",
        "dataset = \"fashion_mnist\"",
    );

    let config = write_config(
        t.path(),
        "root.toml",
        &edit(
            &fashion,
            "[data]",
            "dataset = \"fashion_mnist\"",
            "dataset = \"fashion_mnist\"\nroot = \"/nonexistent\"",
        ),
    );
    let o = run(&config, &out, &[]);
    let err = assert_fails(
        &o,
        "root = /nonexistent",
        &["/nonexistent", "does not exist", "fashion-mnist"],
    );
    assert!(!err.contains("/usr/share/datasets/fashion-mnist/"), "{err}");
    assert!(!out.exists(), "a run with no data created its directory");
    let o = run(&config, &out, &["--dry-run"]);
    assert_fails(&o, "--dry-run, root = /nonexistent", &["/nonexistent"]);
    let o = check(&config);
    assert_fails(&o, "check, root = /nonexistent", &["/nonexistent"]);
    assert!(!out.exists());

    // --data-dir names a root just as explicitly.
    let config = write_config(t.path(), "fashion.toml", &fashion);
    let o = run(&config, &out, &["--data-dir", "/nonexistent"]);
    assert_fails(
        &o,
        "--data-dir /nonexistent",
        &["/nonexistent", "does not exist", "given explicitly"],
    );
    assert!(!out.exists());

    // An empty folder as root: named, and not the system copy either.
    let empty = t.path().join("empty");
    std::fs::create_dir(&empty).unwrap();
    let o = run(&config, &out, &["--data-dir", empty.to_str().unwrap()]);
    assert_fails(
        &o,
        "--data-dir <empty folder>",
        &[&empty.display().to_string(), "holds no fashion-mnist files"],
    );
    assert!(!out.exists());

    // The embedded set takes no root, from the config or the command line.
    let config = write_config(
        t.path(),
        "embedded-root.toml",
        &edit(
            TINY,
            "[data]",
            "dataset = \"embedded\"",
            "dataset = \"embedded\"\nroot = \"/some/where\"",
        ),
    );
    let o = run(&config, &out, &[]);
    assert_fails(
        &o,
        "embedded with root",
        &["root", "/some/where", "embedded"],
    );
    let o = check(&config);
    assert_fails(&o, "check embedded with root", &["root", "/some/where"]);
    let config = write_config(t.path(), "tiny.toml", TINY);
    let o = run(&config, &out, &["--data-dir", "/some/where"]);
    assert_fails(&o, "embedded with --data-dir", &["root", "/some/where"]);
    assert!(!out.exists());
}

// ---------------------------------------------------------------------------------------------
// 4. Degenerate runs

#[test]
fn empty_splits_are_refused_before_training() {
    let t = tempfile::tempdir().unwrap();
    let out = t.path().join("out");
    for key in ["train_per_class", "test_per_class"] {
        let n = if key == "train_per_class" { 16 } else { 8 };
        let text = edit(
            TINY,
            "[data]",
            &format!("{key} = {n}"),
            &format!("{key} = 0"),
        );
        let config = write_config(t.path(), &format!("{key}.toml"), &text);
        let o = run(&config, &out, &[]);
        let err = assert_fails(&o, key, &[&format!("{key} = 0")]);
        assert_no_epoch(&err, key);
        assert!(!out.exists(), "{key} = 0 created the run directory");
        let o = check(&config);
        assert_fails(&o, &format!("check {key}"), &[&format!("{key} = 0")]);
    }
}

#[test]
fn a_diverging_teacher_stops_the_run_naming_epoch_and_batch() {
    let t = tempfile::tempdir().unwrap();
    let out = t.path().join("out");
    let text = edit(TINY, "[teacher.recipe]", "lr = 3e-3", "lr = 1e12");
    let config = write_config(t.path(), "huge-lr.toml", &text);
    let o = run(&config, &out, &[]);
    let err = assert_fails(
        &o,
        "lr = 1e12",
        &["teacher/VGG19", "lower the learning rate"],
    );
    let during = err.contains("loss became") && err.contains("at epoch 1, batch ");
    let after = err.contains("loss is") && err.contains("after epoch 1");
    assert!(
        during || after,
        "the error names no epoch (and batch):\n{err}"
    );
    assert!(
        !err.contains("teacher/VGG19: epoch 1"),
        "a non-finite epoch was logged as completed:\n{err}"
    );
    // The teacher is not marked complete; nothing downstream exists.
    assert!(!out.join("teacher/result.json").exists());
    assert!(!out.join("teacher/final.safetensors").exists());
    assert!(!out.join("forward").exists());
    assert!(!out.join("results.json").exists());
    assert!(!out.join(".lock").exists());
}

#[test]
fn a_teacher_that_cannot_learn_is_an_error_on_request_and_a_warning_by_default() {
    let t = tempfile::tempdir().unwrap();
    let stuck = edit(TINY, "[teacher.recipe]", "lr = 3e-3", "lr = 0.0");

    let strict = format!("{stuck}\n[run]\non_degenerate = \"error\"\n");
    let config = write_config(t.path(), "strict.toml", &strict);
    let out = t.path().join("strict");
    let o = run(&config, &out, &[]);
    assert_fails(
        &o,
        "on_degenerate = error",
        &["teacher", "did not learn", "on_degenerate"],
    );
    assert!(
        !out.join("teacher/result.json").exists(),
        "a teacher that did not learn was marked complete"
    );
    assert!(!out.join("forward").exists(), "levels trained on it");

    let config = write_config(t.path(), "warn.toml", &stuck);
    let out = t.path().join("warn");
    let err = run_ok(&config, &out, &[]);
    assert!(
        err.contains("WARN") && err.contains("did not learn"),
        "{err}"
    );
    let teacher = read_json(&out.join("teacher/result.json"));
    let warnings = teacher["warnings"].as_array().cloned().unwrap_or_default();
    assert!(
        !warnings.is_empty(),
        "no warnings in teacher/result.json: {teacher:#}"
    );
    assert!(
        warnings
            .iter()
            .any(|w| w.as_str().unwrap().contains("did not learn")),
        "{warnings:?}"
    );
    let report = std::fs::read_to_string(out.join("report.md")).unwrap();
    assert!(
        report.contains("Warnings")
            && report.contains("**teacher**")
            && report.contains("did not learn"),
        "report.md does not mention the teacher's warning:\n{report}"
    );
}

// ---------------------------------------------------------------------------------------------
// 5. Late errors come first

#[test]
fn plan_errors_are_found_before_any_epoch_by_run_dry_run_and_check() {
    let t = tempfile::tempdir().unwrap();
    let (_, out) = good_run(t.path(), TINY);
    let before = snapshot(&out);

    let negative = |c: &str| edit(c, "[stage2]", "lr = 2e-3", "lr = -2e-3");
    let gap = |c: &str| edit(c, "", "levels = [1]", "levels = [1, 3]");
    let max = |c: &str| {
        edit(
            c,
            "[stage1]",
            "kind = \"constant\", max_epochs = 1",
            "kind = \"constant\", mode = \"max\", max_epochs = 1",
        )
    };
    let negative_msg =
        "[forward/pyramid/SVGG17 stage2] optimizer: invalid config: lr must be finite and >= 0, got -0.002";
    let gap_msg = "levels = [1, 3]: pyramid SVGG11 starts from pyramid SVGG14, which is not in levels; add level 2";
    let max_msg = "[forward/pyramid/SVGG17 stage1] loss `hint`: invalid config: schedule mode = \"max\" contradicts the loss";
    let all = max(&gap(&negative(TINY)));
    let cases: [(&str, String, Vec<&str>); 4] = [
        ("negative stage2 lr", negative(TINY), vec![negative_msg]),
        ("a gap in levels", gap(TINY), vec![gap_msg]),
        ("mode = max on stage1", max(TINY), vec![max_msg]),
        ("all three", all, vec![negative_msg, gap_msg, max_msg]),
    ];
    for (what, text, messages) in &cases {
        let config = write_config(t.path(), "late.toml", text);
        // On the finished run's directory: left as it was.
        let o = run(&config, &out, &[]);
        let err = assert_fails(&o, &format!("run: {what}"), messages);
        assert_no_epoch(&err, what);
        assert_unchanged(&before, &out, what);
        // On a new directory: not even created.
        let fresh = t.path().join("fresh");
        let o = run(&config, &fresh, &[]);
        assert_fails(&o, &format!("run (new --out): {what}"), messages);
        assert!(!fresh.exists(), "{what}: the run directory was created");
        let o = run(&config, &out, &["--dry-run"]);
        assert_fails(&o, &format!("run --dry-run: {what}"), messages);
        assert_unchanged(&before, &out, what);
        let o = check(&config);
        assert_fails(&o, &format!("check: {what}"), messages);
        if *what == "all three" {
            // One error listing them all (the negative lr and the mode are also reported at
            // the second level).
            assert!(err.contains("the plan has 5 problem(s)"), "{err}");
            assert_eq!(err.matches("error: ").count(), 1, "{err}");
        }
    }
}

// ---------------------------------------------------------------------------------------------
// 6. Ctrl-C, 7. two runs on one directory

/// A `pyramid run` in the background whose stderr lines arrive as they are written.
struct Background {
    child: Child,
    lines: mpsc::Receiver<String>,
    seen: String,
    reader: Option<std::thread::JoinHandle<()>>,
}

impl Background {
    fn start(config: &Path, out: &Path) -> Self {
        let mut child = pyramid()
            .args(["run", config.to_str().unwrap(), "--no-progress", "--out"])
            .arg(out)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let (tx, lines) = mpsc::channel();
        let err = child.stderr.take().unwrap();
        let reader = std::thread::spawn(move || {
            for line in BufReader::new(err).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Self {
            child,
            lines,
            seen: String::new(),
            reader: Some(reader),
        }
    }

    /// Waits for a stderr line containing `what`; panics after `limit` or if the run ends.
    fn wait_for(&mut self, what: &str, limit: Duration) {
        let deadline = Instant::now() + limit;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) => {
                    let found = line.contains(what);
                    self.seen.push_str(&line);
                    self.seen.push('\n');
                    if found {
                        return;
                    }
                }
                Err(e) => {
                    let _ = self.child.kill();
                    panic!("no `{what}` in stderr ({e:?}):\n{}", self.seen);
                }
            }
        }
    }

    fn signal(&self, sig: &str) {
        let s = Command::new("kill")
            .args([sig, &self.child.id().to_string()])
            .status()
            .unwrap();
        assert!(s.success());
    }

    /// Waits for the process to end: its exit status and its whole stderr.
    fn finish(mut self) -> (std::process::ExitStatus, String) {
        let status = self.child.wait().unwrap();
        self.reader.take().unwrap().join().unwrap();
        while let Ok(line) = self.lines.try_recv() {
            self.seen.push_str(&line);
            self.seen.push('\n');
        }
        (status, std::mem::take(&mut self.seen))
    }
}

impl Drop for Background {
    fn drop(&mut self) {
        // A failed assertion must not leave the run behind.
        if self.child.try_wait().ok().flatten().is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

#[test]
fn ctrl_c_stops_the_run_says_how_to_resume_and_the_same_command_resumes() {
    let t = tempfile::tempdir().unwrap();
    let config = write_config(t.path(), "long.toml", &long_config());
    let out = t.path().join("out");
    let mut bg = Background::start(&config, &out);
    bg.wait_for("teacher/VGG19: epoch 1 ", Duration::from_secs(120));
    bg.signal("-INT");
    let (status, err) = bg.finish();
    assert_eq!(status.code(), Some(130), "exit status {status:?}:\n{err}");
    assert!(err.contains("Resume with"), "{err}");
    assert!(
        err.contains(&format!(
            "pyramid run {} --out {}",
            config.display(),
            out.display()
        )),
        "{err}"
    );
    assert!(
        !err.contains("teacher VGG19: test accuracy"),
        "the teacher finished:\n{err}"
    );
    assert!(out.join("teacher/resume.safetensors").is_file());
    assert!(!out.join("teacher/result.json").exists());
    assert!(
        !out.join(".lock").exists(),
        "an interrupted run left its .lock"
    );

    let err = run_ok(&config, &out, &[]);
    assert!(err.contains("teacher/VGG19: resuming after epoch"), "{err}");
    assert!(
        !err.contains("teacher/VGG19: epoch 1 "),
        "epoch 1 was redone:\n{err}"
    );
    for f in [
        "results.json",
        "report.md",
        "teacher/result.json",
        "forward/pyramid/SVGG17/result.json",
    ] {
        assert!(out.join(f).is_file(), "no {f} after the resumed run");
    }
    let teacher = read_json(&out.join("teacher/result.json"));
    assert_eq!(teacher["stages"][0]["epochs"], 8, "{teacher:#}");
    // One log for both invocations, each under its own header.
    let log = std::fs::read_to_string(out.join("run.log")).unwrap();
    assert_eq!(log.matches("\n==== ").count() + 1, 2, "{log}");
    let resumed = log.find("resuming after epoch").unwrap();
    assert!(log[..resumed].contains("teacher/VGG19: epoch 1 "), "{log}");
    assert!(!out.join("teacher/resume.safetensors").exists());
    assert!(!out.join(".lock").exists());
}

#[test]
fn a_second_run_on_a_directory_in_use_is_refused_naming_the_first() {
    let t = tempfile::tempdir().unwrap();
    let config = write_config(t.path(), "long.toml", &long_config());
    let out = t.path().join("out");
    let mut bg = Background::start(&config, &out);
    bg.wait_for("teacher/VGG19: epoch 1 ", Duration::from_secs(120));
    let first = bg.child.id();

    let started = Instant::now();
    let o = run(&config, &out, &[]);
    let secs = started.elapsed().as_secs_f64();
    let err = assert_fails(
        &o,
        "second run",
        &[
            &out.display().to_string(),
            "in use by another run",
            &format!("pid {first}"),
        ],
    );
    assert_no_epoch(&err, "second run");
    assert!(secs < 20.0, "the second run took {secs:.1}s to give up");
    // The first one still runs and still holds the lock.
    assert!(
        bg.child.try_wait().unwrap().is_none(),
        "the first run ended"
    );
    let lock = std::fs::read_to_string(out.join(".lock")).unwrap();
    assert!(lock.contains(&format!("pid {first}")), "{lock}");

    bg.signal("-INT");
    let (status, err) = bg.finish();
    assert_eq!(status.code(), Some(130), "{err}");
    assert!(!out.join(".lock").exists());
}
