//! Every method runs end to end on tiny models (the embedded Fashion-MNIST subset, widths ÷16,
//! a few images), and the run does what the plan says: each distillation stage changes exactly
//! the parameters it trains and leaves every other one bit-identical, FitNet's regressor never
//! reaches a checkpoint, the executed stages equal `plan.json`, and the report has one column
//! per method.

use std::collections::BTreeMap;
use std::path::Path;

use candle_core::{DType, Device, Tensor};
use pyramid::method::TrainSet;
use pyramid::plan::LevelPlan;
use pyramid::{ExperimentConfig, Plan, RunOptions};
use pyramid_models::{Model, ModelId, ModelSpec};

const CONFIG: &str = r#"
name = "every-method"
seed = 3
methods = ["scratch", "pyramid", "pyramid-gram", "pyramid-logits", "hinton", "fitnet", "gram-direct", "kd"]
levels = [1, 2, 3, 4, 5]

[data]
dataset = "embedded"
batch_size = 25
eval_batch_size = 50
train_per_class = 5
test_per_class = 5
augment = { hflip = false }

[model]
input_size = 32
width_div = 16
in_channels = 1

[teacher]
source = "train"
[teacher.recipe]
optimizer = { kind = "adam", lr = 1e-3 }
schedule = { kind = "constant", max_epochs = 1 }

[stage1]
optimizer = { kind = "adam", lr = 1e-3 }
schedule = { kind = "constant", max_epochs = 2 }

[stage2]
optimizer = { kind = "adam", lr = 1e-3 }
schedule = { kind = "constant", max_epochs = 1 }

[scratch]
optimizer = { kind = "adam", lr = 1e-3 }
schedule = { kind = "constant", max_epochs = 1 }
"#;

fn tensors(path: &Path) -> BTreeMap<String, Vec<f32>> {
    let map = candle_core::safetensors::load(path, &Device::Cpu).unwrap();
    map.into_iter()
        .map(|(k, t): (String, Tensor)| {
            let v = t
                .to_dtype(DType::F32)
                .unwrap()
                .flatten_all()
                .unwrap()
                .to_vec1::<f32>()
                .unwrap();
            (k, v)
        })
        .collect()
}

/// The student exactly as the runner builds it before its first stage.
fn initial(out: &Path, l: &LevelPlan, seed: u64) -> BTreeMap<String, Vec<f32>> {
    let from = Model::load(
        out.join(&l.init.from.0).join("final.safetensors"),
        &Device::Cpu,
    )
    .unwrap();
    let id = ModelId::parse(&l.model, l.scheme).unwrap();
    let (m, _) = Model::inherit(&from, id, seed).unwrap();
    m.params()
        .iter()
        .map(|(n, v)| {
            (
                n.clone(),
                v.as_tensor()
                    .flatten_all()
                    .unwrap()
                    .to_vec1::<f32>()
                    .unwrap(),
            )
        })
        .collect()
}

#[test]
fn every_method_runs_and_does_what_its_plan_says() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("run");
    let cfg = ExperimentConfig::from_toml(CONFIG).unwrap();
    let plan = Plan::build(&cfg).unwrap();
    let results = pyramid::run_experiment(
        &cfg,
        &RunOptions {
            out_dir: Some(out.clone()),
            ..Default::default()
        },
    )
    .unwrap();
    // 8 methods × 2 schemes × 5 levels, less the four head-compressing Gram levels.
    assert_eq!(plan.steps.len(), 76);
    assert_eq!(results.levels.len(), 76);

    let saved: Plan =
        serde_json::from_str(&std::fs::read_to_string(out.join("plan.json")).unwrap()).unwrap();
    assert_eq!(saved, plan);
    let options = cfg.model.options(10);
    let mut checked = 0;
    let mut moved: BTreeMap<String, usize> = BTreeMap::new();
    for l in &plan.steps {
        let dir = out.join(&l.at.0);
        // The stages the runner executed are the plan's, field for field.
        let r: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(dir.join("result.json")).unwrap())
                .unwrap();
        assert_eq!(
            r["executed"],
            serde_json::to_value(&l.stages).unwrap(),
            "{}",
            l.at
        );
        assert_eq!(r["init_from"], serde_json::json!(l.init.from.0), "{}", l.at);

        let final_names: Vec<String> = tensors(&dir.join("final.safetensors"))
            .into_keys()
            .collect();
        let spec =
            ModelSpec::of(ModelId::parse(&l.model, l.scheme).unwrap(), options.clone()).unwrap();
        let expected: Vec<String> = spec.params().into_iter().map(|p| p.name).collect();
        let mut sorted = expected.clone();
        sorted.sort();
        // Nothing but the model's own parameters is saved (no FitNet regressor).
        assert_eq!(final_names, sorted, "{}", l.at);
        assert!(!final_names.iter().any(|n| n.starts_with("regressor")));

        if l.stages.len() < 2 {
            continue;
        }
        let s1 = &l.stages[0];
        let before = initial(&out, l, cfg.seed);
        let after = tensors(&dir.join("stage1.safetensors"));
        let trained: Vec<String> = match &s1.trains {
            TrainSet::All => spec
                .params()
                .into_iter()
                .filter(|p| !p.is_buffer)
                .map(|p| p.name)
                .collect(),
            TrainSet::UpTo { tap } => spec.params_up_to(tap).unwrap(),
        };
        // A stage that never beat its starting point reloads it (epoch 0): nothing moves.
        let selected_start = r["stages"][0]["best_epoch"] == serde_json::json!(0);
        if !selected_start {
            *moved.entry(l.method.clone()).or_insert(0) += 1;
        }
        for (name, v0) in &before {
            let v1 = &after[name];
            let same = v0.iter().zip(v1).all(|(a, b)| a.to_bits() == b.to_bits());
            if trained.contains(name) && !selected_start {
                if name.ends_with(".weight") {
                    assert!(!same, "{} stage 1 should have trained {name}", l.at);
                }
            } else {
                assert!(
                    same,
                    "{} stage 1 changed {name}, which it does not train",
                    l.at
                );
            }
        }
        checked += 1;
    }
    assert_eq!(checked, 76 - 10, "every two-stage level was checked");
    // Every two-stage method trained past its start somewhere (most levels do).
    assert_eq!(moved.len(), 7, "{moved:?}");
    assert!(moved.values().sum::<usize>() >= 50, "{moved:?}");

    // The report: one column per method, in config order, and "–" where there is no result.
    let report = std::fs::read_to_string(out.join("report.md")).unwrap();
    assert!(
        report.contains("| Model | Params | MACs | Scratch | Pyramid 2-stages | Pyramid Gram | Pyramid logits | Hinton 2-stages | FitNet | Gram Direct | KD |"),
        "{report}"
    );
    let svgg17 = report
        .lines()
        .find(|l| l.starts_with("| SVGG17 |"))
        .unwrap();
    assert_eq!(svgg17.matches("| –").count(), 2, "{svgg17}");
}

/// Attention transfer and DKD run wherever their inputs exist: AT on the matched feature maps
/// (with the hint kept at SVGG17, whose matched output is the logits), and CE + DKD as the
/// label stage.
#[test]
fn attention_transfer_and_dkd_run_where_their_inputs_exist() {
    let dir = tempfile::tempdir().unwrap();
    let toml = CONFIG
        .replace(
            r#"methods = ["scratch", "pyramid", "pyramid-gram", "pyramid-logits", "hinton", "fitnet", "gram-direct", "kd"]"#,
            r#"methods = ["pyramid"]
schemes = ["forward"]"#,
        )
        .replace("levels = [1, 2, 3, 4, 5]", "levels = [1, 2, 3]")
        + r#"
[method.pyramid.stage1]
loss = { kind = "attention_transfer", beta = 1000.0 }
[method.pyramid.stage2]
loss = { kind = "sum", terms = [ { weight = 1.0, loss = { kind = "cross_entropy" } }, { weight = 1.0, loss = { kind = "dkd", alpha = 1.0, beta = 8.0, temperature = 4.0 } } ] }
[overrides.SVGG17.stage1]
loss = { kind = "hint" }
"#;
    let cfg = ExperimentConfig::from_toml(&toml).unwrap();
    let results = pyramid::run_experiment(
        &cfg,
        &RunOptions {
            out_dir: Some(dir.path().to_path_buf()),
            ..Default::default()
        },
    )
    .unwrap();
    let losses: Vec<(String, Vec<String>)> = results
        .levels
        .iter()
        .map(|l| {
            (
                l.model.clone(),
                l.stages.iter().map(|s| s.loss.clone()).collect(),
            )
        })
        .collect();
    let ce_dkd = "1·cross_entropy + 1·dkd(α=1, β=8, T=4)".to_string();
    assert_eq!(
        losses,
        vec![
            ("SVGG17".into(), vec!["hint".into(), ce_dkd.clone()]),
            (
                "SVGG14".into(),
                vec!["attention_transfer(β=1000)".into(), ce_dkd.clone()]
            ),
            (
                "SVGG11".into(),
                vec!["attention_transfer(β=1000)".into(), ce_dkd]
            ),
        ]
    );
    for l in &results.levels {
        assert!(l.best_test_acc.is_finite() && l.stages[0].best_metric.is_finite());
    }
}
