//! `pyramid run --only STEP`: one plan step per process, as a cluster job runs it. A bad step
//! lists the plan's steps; a level whose teacher is not trained refuses before training; the
//! teacher and then two levels run as separate, concurrent processes in one run directory end
//! byte-identical to a whole run (checkpoints, metrics; results without timings).

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

mod common;

fn chain_config() -> String {
    common::tiny_config(
        r#"name = "only-chain"
seed = 5
schemes = ["forward"]
methods = ["pyramid", "fitnet"]
levels = [1]"#,
        2,
    )
}

fn pyramid(config: &Path, out: &Path, extra: &[&str]) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_pyramid"));
    c.args(["run", config.to_str().unwrap(), "--no-progress", "--out"])
        .arg(out)
        .args(extra)
        .env("RUST_LOG", "warn")
        .env_remove("PYRAMID_FAULT");
    c
}

fn ok(o: Output) -> Output {
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    o
}

fn without_timings(path: &Path) -> serde_json::Value {
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
    let mut v: serde_json::Value = serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap();
    strip(&mut v);
    v
}

const LEVELS: [&str; 2] = ["forward/pyramid/SVGG17", "forward/fitnet/SVGG17"];

#[test]
fn single_steps_in_separate_processes_equal_a_whole_run() {
    let tmp = tempfile::tempdir().unwrap();
    let config: PathBuf = tmp.path().join("chain.toml");
    std::fs::write(&config, chain_config()).unwrap();
    let (steps, whole) = (tmp.path().join("steps"), tmp.path().join("whole"));

    let o = pyramid(&config, &steps, &["--only", "forward/pyramid/SVGG99"])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success());
    assert!(
        err.contains("its steps are: teacher, forward/pyramid/SVGG17, forward/fitnet/SVGG17"),
        "{err}"
    );

    let o = pyramid(&config, &steps, &["--only", LEVELS[0]])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success());
    assert!(
        err.contains("teacher has not been trained (no result.json): run `--only teacher` first"),
        "{err}"
    );
    assert!(!steps.join(LEVELS[0]).join("metrics.jsonl").exists());

    ok(pyramid(&config, &steps, &["--only", "teacher"])
        .output()
        .unwrap());
    // Both levels learn from the teacher only: run them at once.
    let children: Vec<_> = LEVELS
        .iter()
        .map(|l| pyramid(&config, &steps, &["--only", l]).spawn().unwrap())
        .collect();
    for c in children {
        ok(c.wait_with_output().unwrap());
    }
    ok(pyramid(&config, &whole, &[]).output().unwrap());

    for at in std::iter::once("teacher").chain(LEVELS) {
        let (a, b) = (whole.join(at), steps.join(at));
        for f in ["final.safetensors", "metrics.jsonl"] {
            assert!(
                std::fs::read(a.join(f)).unwrap() == std::fs::read(b.join(f)).unwrap(),
                "{at}/{f} differs"
            );
        }
        assert_eq!(
            without_timings(&a.join("result.json")),
            without_timings(&b.join("result.json")),
            "{at}/result.json"
        );
        assert!(!b.join("resume.safetensors").exists());
    }
    let stage1 = format!("{}/stage1.safetensors", LEVELS[0]);
    assert!(
        std::fs::read(whole.join(&stage1)).unwrap() == std::fs::read(steps.join(&stage1)).unwrap()
    );
    // results.json gathers every step, whichever process wrote it last.
    let r = without_timings(&steps.join("results.json"));
    assert_eq!(r["levels"].as_array().unwrap().len(), 2);
    assert_eq!(r, without_timings(&whole.join("results.json")));

    // A step already complete is found so, and the whole run finds everything complete.
    ok(pyramid(&config, &steps, &["--only", LEVELS[1]])
        .output()
        .unwrap());
    let o = ok(pyramid(&config, &steps, &[]).output().unwrap());
    assert!(String::from_utf8_lossy(&o.stdout).contains("results:"));
}
