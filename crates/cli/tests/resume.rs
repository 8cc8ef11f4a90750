//! Crash recovery at CPU scale: a chain (teacher, two levels, two two-stage methods) killed
//! with SIGKILL at five moments and resumed each time ends byte-identical to an uninterrupted
//! run, redoes no completed epoch and leaves no temp file. The same chain at one and at two
//! threads gives byte-identical checkpoints.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

const CONFIG: &str = r#"
name = "resume-chain"
seed = 3
schemes = ["forward"]
methods = ["pyramid", "fitnet"]
levels = [1, 2]

[data]
dataset = "embedded"
batch_size = 64
eval_batch_size = 200
train_per_class = 32
test_per_class = 16
augment = { hflip = true }

[model]
input_size = 32
width_div = 16
in_channels = 1
batch_norm = true

[teacher]
source = "train"
[teacher.recipe]
optimizer = { kind = "adam", lr = 2e-3 }
schedule = { kind = "constant", max_epochs = 3 }

[stage1]
optimizer = { kind = "adam", lr = 1e-3 }
schedule = { kind = "constant", max_epochs = 2 }

[stage2]
optimizer = { kind = "adam", lr = 1e-3 }
schedule = { kind = "constant", max_epochs = 2 }
"#;

fn write_config(dir: &Path) -> PathBuf {
    let p = dir.join("chain.toml");
    std::fs::write(&p, CONFIG).unwrap();
    p
}

fn run(config: &Path, out: &Path, threads: &str, fault: Option<&str>) -> Output {
    let mut c = Command::new(env!("CARGO_BIN_EXE_pyramid"));
    c.args(["run", config.to_str().unwrap(), "--no-progress", "--out"])
        .arg(out)
        .env("RAYON_NUM_THREADS", threads)
        .env("RUST_LOG", "info")
        .env_remove("PYRAMID_FAULT");
    if let Some(f) = fault {
        c.env("PYRAMID_FAULT", f);
    }
    c.output().unwrap()
}

/// Every file under `dir`, relative path → bytes.
fn files(dir: &Path) -> BTreeMap<String, Vec<u8>> {
    let mut out = BTreeMap::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                stack.push(p);
            } else {
                let rel = p.strip_prefix(dir).unwrap().to_string_lossy().into_owned();
                out.insert(rel, std::fs::read(&p).unwrap());
            }
        }
    }
    out
}

/// A JSON document without its wall-clock fields.
fn without_timings(bytes: &[u8]) -> serde_json::Value {
    fn strip(v: &mut serde_json::Value) {
        match v {
            serde_json::Value::Object(m) => {
                for k in ["wall_seconds", "seconds", "images_per_sec", "latency"] {
                    m.remove(k);
                }
                m.values_mut().for_each(strip);
            }
            serde_json::Value::Array(a) => a.iter_mut().for_each(strip),
            _ => {}
        }
    }
    let mut v: serde_json::Value = serde_json::from_slice(bytes).unwrap();
    strip(&mut v);
    v
}

/// The (model, stage, epoch) of every epoch a log reports as completed.
fn completed_epochs(log: &str) -> Vec<String> {
    log.lines()
        .filter_map(|l| {
            let (_, msg) = l.split_once("pyramid::stage: ")?;
            if let Some((label, rest)) = msg.split_once(": epoch ") {
                let n = rest.split_whitespace().next()?;
                Some(format!("{label} epoch {n}"))
            } else {
                let (label, _) = msg.split_once(": start ")?;
                Some(format!("{label} epoch 0"))
            }
        })
        .collect()
}

fn assert_same_run(reference: &Path, other: &Path) {
    let (a, b) = (files(reference), files(other));
    let names = |m: &BTreeMap<String, Vec<u8>>| -> BTreeSet<String> { m.keys().cloned().collect() };
    assert_eq!(names(&a), names(&b), "the two runs wrote different files");
    for (name, bytes) in &a {
        let theirs = &b[name];
        // run.log: times, and one header per invocation; Figure 3 draws the inference timings.
        // The other figures must be identical.
        if name.ends_with("timings.jsonl")
            || name.ends_with("report.md")
            || name == "run.log"
            || name.contains("figures/figure3.")
        {
            continue;
        }
        if name == "config.toml" {
            // The two runs differ in their --out only.
            let strip = |b: &[u8]| -> Vec<String> {
                String::from_utf8_lossy(b)
                    .lines()
                    .filter(|l| !l.starts_with("out_dir"))
                    .map(String::from)
                    .collect()
            };
            assert_eq!(strip(bytes), strip(theirs), "config.toml differs");
        } else if name.ends_with(".json") {
            assert_eq!(
                without_timings(bytes),
                without_timings(theirs),
                "{name} differs beyond its timings"
            );
        } else {
            assert!(bytes == theirs, "{name} differs byte-wise");
        }
    }
}

#[test]
fn a_chain_killed_five_times_and_resumed_equals_an_uninterrupted_run() {
    let t = tempfile::tempdir().unwrap();
    let config = write_config(t.path());
    let reference = t.path().join("reference");
    let o = run(&config, &reference, "2", None);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let reference_log = String::from_utf8_lossy(&o.stderr).into_owned();

    let out = t.path().join("killed");
    let out_s = out.display().to_string();
    // In the order the run meets them.
    let faults = [
        "batch teacher/VGG19 epoch 2 batch 2".to_string(),
        "batch forward/pyramid/SVGG17 stage 1 epoch 2 batch 1".to_string(),
        "level done forward/pyramid/SVGG17".to_string(),
        format!("write {out_s}/forward/pyramid/SVGG14/stage1.safetensors"),
        "batch forward/fitnet/SVGG14 stage 2 epoch 1 batch 3".to_string(),
    ];
    let mut logs = String::new();
    for f in &faults {
        let o = run(&config, &out, "2", Some(f));
        let log = String::from_utf8_lossy(&o.stderr).into_owned();
        use std::os::unix::process::ExitStatusExt;
        assert_eq!(o.status.signal(), Some(9), "not killed at `{f}`:\n{log}");
        assert!(log.contains(&format!("fault point `{f}`")), "{log}");
        logs.push_str(&log);
    }
    let o = run(&config, &out, "2", None);
    let log = String::from_utf8_lossy(&o.stderr).into_owned();
    assert!(o.status.success(), "{log}");
    assert!(log.contains("resuming after epoch"), "{log}");
    logs.push_str(&log);

    // A killed writer leaves its temp file; the next run removed it.
    assert!(logs.contains("left by a killed run"), "{logs}");
    assert_same_run(&reference, &out);
    for name in files(&out).keys() {
        let base = name.rsplit('/').next().unwrap();
        assert!(
            !pyramid_fsio::is_temp_file(base) && base != "resume.safetensors" && base != ".lock",
            "{name} left behind"
        );
    }

    // Every epoch was completed exactly once over the six runs, and they are the reference's.
    let done = completed_epochs(&logs);
    let unique: BTreeSet<&String> = done.iter().collect();
    assert_eq!(done.len(), unique.len(), "an epoch was redone: {done:#?}");
    let expected: BTreeSet<String> = completed_epochs(&reference_log).into_iter().collect();
    assert_eq!(
        unique.into_iter().cloned().collect::<BTreeSet<_>>(),
        expected
    );
    // run.log has the six runs, each under its header, and lost no line to a SIGKILL.
    let run_log = std::fs::read_to_string(out.join("run.log")).unwrap();
    assert_eq!(
        run_log.lines().filter(|l| l.starts_with("==== ")).count(),
        6
    );
    assert_eq!(completed_epochs(&run_log), done);
}

#[test]
fn one_and_two_threads_give_byte_identical_checkpoints() {
    let t = tempfile::tempdir().unwrap();
    let config = write_config(t.path());
    let (one, two) = (t.path().join("one"), t.path().join("two"));
    for (dir, n) in [(&one, "1"), (&two, "2")] {
        let o = run(&config, dir, n, None);
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    }
    assert_same_run(&one, &two);
    let checkpoints = files(&one)
        .keys()
        .filter(|n| n.ends_with(".safetensors"))
        .count();
    assert_eq!(checkpoints, 9, "teacher + 4 levels × (stage1 + final)");
}
