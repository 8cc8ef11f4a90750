//! Fingerprints: what determines a trained model, hashed, so a run directory never mixes
//! models of different configs.
//!
//! A model's *inputs* are everything its weights depend on: the run format, the seed, the data
//! (name, split sizes, settings and a SHA-256 of the very images and labels fed), the model
//! options, its resolved stages (loss, optimiser, schedule, what trains) and the fingerprints of
//! the models it starts from and learns from. The fingerprint is a hash of those inputs, so a
//! change anywhere up a chain changes every model below it. `result.json`, the checkpoints and
//! the resume state carry it; a re-run reuses a model only when it matches.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::Value;
use sha2::{Digest, Sha256};

use crate::config::ExperimentConfig;
use crate::plan::{LevelPlan, Plan, StagePlan};

/// Bumped when a change of the code changes what a config trains (a resumed run refuses
/// models of another format).
pub const RUN_FORMAT: u32 = 2;

/// The checkpoint metadata key holding a model's fingerprint.
pub const CHECKPOINT_KEY: &str = "pyramid.fingerprint";

/// The data a run trains and selects on.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DataIdentity {
    /// The data set, e.g. `stl10`.
    pub dataset: String,
    /// The `[data]` settings that change what is fed (not the path, not the loader threads).
    pub settings: Value,
    /// Per fed split (`train`, `test`, `val`, `stage1_unlabeled`): size and content hash.
    pub splits: BTreeMap<String, SplitIdentity>,
}

/// One split as fed: its size and the SHA-256 of its shape, pixels and labels.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SplitIdentity {
    /// Number of images.
    pub images: usize,
    /// SHA-256 (lower-case hex) of the dimensions, the pixels and the labels.
    pub sha256: String,
}

impl SplitIdentity {
    /// Hashes the dataset as fed: its dimensions (u64 LE), its pixel bytes, its labels (u32 LE).
    pub fn of(d: &pyramid_datasets::Dataset) -> Self {
        let mut h = Sha256::new();
        for x in [d.n, d.channels, d.height, d.width] {
            h.update((x as u64).to_le_bytes());
        }
        h.update(&d.images);
        for l in &d.labels {
            h.update(l.to_le_bytes());
        }
        Self {
            images: d.n,
            sha256: hex(&h.finalize()),
        }
    }
}

impl DataIdentity {
    /// The identity of the data `cfg` feeds, given the hashes of its splits.
    pub fn new(cfg: &ExperimentConfig, splits: BTreeMap<String, SplitIdentity>) -> Self {
        let mut settings = serde_json::to_value(&cfg.data).expect("configs serialise");
        if let Value::Object(m) = &mut settings {
            m.remove("root");
            m.remove("loader_threads");
        }
        Self {
            dataset: cfg.data.dataset.to_string(),
            settings,
            splits,
        }
    }
}

/// A model's inputs and their hash.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Fingerprint {
    /// First 16 bytes of the SHA-256 of `inputs` (compact JSON), in lower-case hex (32 characters).
    pub hash: String,
    /// The inputs as JSON: format, seed, data, model options, stages and upstream fingerprints.
    pub inputs: Value,
}

impl Fingerprint {
    fn of(inputs: Value) -> Self {
        let bytes = serde_json::to_vec(&inputs).expect("values serialise");
        Self {
            hash: hex(&Sha256::digest(&bytes)[..16]),
            inputs,
        }
    }

    /// The fields whose values differ, as `path: old → new` lines (at most a dozen).
    pub fn differences(&self, recorded: &Value) -> Vec<String> {
        let mut out = Vec::new();
        diff("", recorded, &self.inputs, &mut out);
        if out.len() > 12 {
            let n = out.len() - 12;
            out.truncate(12);
            out.push(format!("... and {n} more"));
        }
        out
    }
}

/// The fingerprints of every model of a plan, keyed by run-directory path (`teacher`,
/// `forward/pyramid/SVGG17`, ...).
#[derive(Debug, Clone, Default)]
pub struct Fingerprints(pub BTreeMap<String, Fingerprint>);

impl Fingerprints {
    /// Computes them in plan order (a level's starting models come before it).
    pub fn of_plan(
        cfg: &ExperimentConfig,
        plan: &Plan,
        data: &DataIdentity,
        classes: usize,
    ) -> Self {
        let common = serde_json::json!({
            "format": RUN_FORMAT,
            "seed": cfg.seed,
            "data": data,
            "model": cfg.model.options(classes),
        });
        let mut all = BTreeMap::new();
        let teacher = {
            let mut v = common.clone();
            // The source's kind and file content; its recipe is in the resolved stage (so two
            // spellings of one recipe agree).
            v["teacher"] = Value::String(teacher_source(cfg).into());
            v["teacher_file_sha256"] = match teacher_file(cfg) {
                Some(p) => {
                    Value::String(file_sha256(p).unwrap_or_else(|e| format!("unreadable: {e}")))
                }
                None => Value::Null,
            };
            v["stage"] = serde_json::to_value(&plan.teacher.stage).expect("plans serialise");
            Fingerprint::of(v)
        };
        all.insert("teacher".to_string(), teacher);
        for step in &plan.steps {
            let fp = level_inputs(&common, step, &all);
            all.insert(step.at.0.clone(), fp);
        }
        Self(all)
    }

    /// The fingerprint of the model at run-directory path `at`. Panics if `at` is not a model of
    /// the plan.
    pub fn get(&self, at: &str) -> &Fingerprint {
        &self.0[at]
    }
}

fn teacher_source(cfg: &ExperimentConfig) -> &'static str {
    use crate::config::TeacherConfig;
    match &cfg.teacher {
        TeacherConfig::Train { .. } => "train",
        TeacherConfig::Load { .. } => "load",
        TeacherConfig::Torchvision { .. } => "torchvision",
    }
}

fn teacher_file(cfg: &ExperimentConfig) -> Option<&std::path::Path> {
    use crate::config::TeacherConfig;
    match &cfg.teacher {
        TeacherConfig::Train { .. } => None,
        TeacherConfig::Load { path } | TeacherConfig::Torchvision { path, .. } => Some(path),
    }
}

fn level_inputs(
    common: &Value,
    step: &LevelPlan,
    known: &BTreeMap<String, Fingerprint>,
) -> Fingerprint {
    let hash_of = |r: &str| known.get(r).map(|f| f.hash.clone());
    let mut v = common.clone();
    v["level"] = serde_json::json!({
        "at": step.at.0,
        "model": step.model,
        "scheme": step.scheme,
        "method": step.method,
    });
    v["init"] =
        serde_json::json!({"from": step.init.from.0, "fingerprint": hash_of(&step.init.from.0)});
    v["teacher"] = match &step.teacher {
        Some(t) => serde_json::json!({"model": t.0, "fingerprint": hash_of(&t.0)}),
        None => Value::Null,
    };
    v["stages"] = serde_json::to_value::<&[StagePlan]>(&step.stages).expect("plans serialise");
    Fingerprint::of(v)
}

/// SHA-256 of a file's bytes, hex.
pub fn file_sha256(path: &std::path::Path) -> std::io::Result<String> {
    use std::io::Read;
    let mut f = std::fs::File::open(path)?;
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = f.read(&mut buf)?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
    }
    Ok(hex(&h.finalize()))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// A value as shown in a difference: strings unquoted, anything long cut with an ellipsis.
fn short(v: &Value) -> String {
    let s = match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    };
    if s.chars().count() > 60 {
        format!("{}…", s.chars().take(57).collect::<String>())
    } else {
        s
    }
}

fn diff(path: &str, old: &Value, new: &Value, out: &mut Vec<String>) {
    let join = |k: &str| {
        if path.is_empty() {
            k.to_string()
        } else {
            format!("{path}.{k}")
        }
    };
    match (old, new) {
        (Value::Object(a), Value::Object(b)) => {
            let keys: std::collections::BTreeSet<&String> = a.keys().chain(b.keys()).collect();
            for k in keys {
                let null = Value::Null;
                diff(
                    &join(k),
                    a.get(k).unwrap_or(&null),
                    b.get(k).unwrap_or(&null),
                    out,
                );
            }
        }
        (Value::Array(a), Value::Array(b)) if a.len() == b.len() => {
            for (i, (x, y)) in a.iter().zip(b).enumerate() {
                diff(&format!("{path}[{i}]"), x, y, out);
            }
        }
        (a, b) if a != b => out.push(format!(
            "{}: {} → {}",
            if path.is_empty() { "(all)" } else { path },
            short(a),
            short(b)
        )),
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn differences_name_the_changed_fields() {
        let old = serde_json::json!({"seed": 0, "data": {"splits": {"train": {"images": 10}}}, "stages": [{"lr": 1e-3}]});
        let new = Fingerprint::of(
            serde_json::json!({"seed": 1, "data": {"splits": {"train": {"images": 20}}}, "stages": [{"lr": 1e-3}]}),
        );
        assert_eq!(
            new.differences(&old),
            vec![
                "data.splits.train.images: 10 → 20".to_string(),
                "seed: 0 → 1".to_string()
            ]
        );
        assert!(Fingerprint::of(old.clone()).differences(&old).is_empty());
        assert_eq!(Fingerprint::of(old.clone()), Fingerprint::of(old));
        assert_eq!(new.hash.len(), 32);
    }
}
