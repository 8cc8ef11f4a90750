//! The training engine on real (embedded Fashion-MNIST) data at toy scale: stage 1 leaves
//! everything after the compressed block untouched, a stage that never improves lasts exactly
//! 30 epochs, the same seed gives the same metrics, and a re-run skips completed levels.

use std::path::Path;

use candle_core::Device;
use pyramid::config::{ExperimentConfig, StageKind};
use pyramid::data::ExperimentData;
use pyramid::method::{ModelRef, TrainSet};
use pyramid::plan::{Images, StagePlan};
use pyramid::stage::{StageData, StageRun};
use pyramid::{run_experiment, Plan, RunOptions};
use pyramid_losses::LossSpec;
use pyramid_models::{step_of, Model, ModelConfig, ModelId, Scheme};
use pyramid_rng::Rng;
use pyramid_train::metrics::{read_jsonl, EpochMetrics, JsonlWriter};
use pyramid_train::optim::{AdamConfig, OptimizerConfig};
use pyramid_train::schedule::{PlateauConfig, ScheduleConfig};

const TINY: &str = r#"
name = "tiny"
seed = 7
schemes = ["forward"]
methods = ["scratch", "pyramid"]
levels = [1, 2]

[data]
dataset = "embedded"
batch_size = 16
eval_batch_size = 64
train_per_class = 4
test_per_class = 3

[model]
input_size = 32
width_div = 16
in_channels = 1

[teacher]
source = "train"
[teacher.recipe]
loss = { kind = "cross_entropy" }
optimizer = { kind = "adam", lr = 1e-3 }
schedule = { kind = "plateau", mode = "max", stop = "single_stage", max_epochs = 2 }

[stage1]
schedule = { kind = "plateau", mode = "min", stop = "stage1", max_epochs = 2 }

[stage2]
schedule = { kind = "plateau", mode = "max", stop = "stage2", max_epochs = 2 }

[scratch]
schedule = { kind = "plateau", mode = "max", stop = "single_stage", max_epochs = 2 }
"#;

fn tiny() -> ExperimentConfig {
    ExperimentConfig::from_toml(TINY).unwrap()
}

fn values(m: &Model, name: &str) -> Vec<f32> {
    m.get(name)
        .unwrap()
        .flatten_all()
        .unwrap()
        .to_vec1()
        .unwrap()
}

/// The planned stage `kind` of `method` at `id`, from `cfg`'s plan, with the test's own
/// schedule and an Adam optimiser at `lr`.
fn planned_stage(
    cfg: &ExperimentConfig,
    method: &str,
    id: ModelId,
    kind: StageKind,
    schedule: ScheduleConfig,
    lr: f64,
) -> StagePlan {
    let plan = Plan::build(cfg).unwrap();
    let at = ModelRef::level(id.scheme, method, id);
    let step = plan
        .step(&at)
        .unwrap_or_else(|| panic!("{at} is not in the plan"));
    let mut stage = step
        .stages
        .iter()
        .find(|s| s.kind == kind)
        .unwrap_or_else(|| panic!("{at} has no {kind:?} stage"))
        .clone();
    stage.optimizer = OptimizerConfig::Adam(AdamConfig {
        lr,
        ..AdamConfig::default()
    });
    stage.schedule = schedule;
    stage
}

#[test]
fn stage1_leaves_everything_after_the_compressed_block_bit_identical() {
    let cfg = tiny();
    // The same config planned over both schemes and three levels: the stage-1 plans of the
    // levels below.
    let mut wide = cfg.clone();
    wide.schemes = vec![Scheme::Forward, Scheme::Backward];
    wide.levels = vec![1, 2, 3];
    let data = ExperimentData::load(&cfg, &Device::Cpu).unwrap();
    let options = cfg.model.options(10);
    let teacher = Model::new(ModelConfig::new(ModelId::VGG19, options), 1, &Device::Cpu).unwrap();
    for (level, scheme) in [(3, Scheme::Forward), (2, Scheme::Backward)] {
        let id = ModelId::new(level, scheme).unwrap();
        // Build the real teacher of this level by inheritance down the chain.
        let mut t = Model::inherit(&teacher, ModelId::new(1, scheme).unwrap(), 2)
            .unwrap()
            .0;
        for l in 2..level {
            t = Model::inherit(&t, ModelId::new(l, scheme).unwrap(), 2)
                .unwrap()
                .0;
        }
        let (student, _) = Model::inherit(&t, id, 3).unwrap();
        let before = student.snapshot();
        let step = step_of(id).unwrap();
        let plan1 = planned_stage(
            &wide,
            "pyramid",
            id,
            StageKind::Stage1,
            ScheduleConfig::Plateau(PlateauConfig {
                max_epochs: Some(2),
                ..PlateauConfig::stage1()
            }),
            1e-3,
        );
        // Pyramid stage 1: hint loss, C against D, trains up to C.
        assert_eq!(plan1.loss, LossSpec::Hint);
        assert_eq!(plan1.number, 1);
        assert_eq!(
            plan1.trains,
            TrainSet::UpTo {
                tap: step.with.name().into()
            }
        );
        let pair = plan1.features.as_ref().expect("a feature pair");
        assert_eq!(pair.student, step.with.name());
        assert_eq!(pair.teacher, step.matched_teacher_block().name());
        assert!(pair.adapter.is_none());
        let dir = tempfile::tempdir().unwrap();
        let mut log = JsonlWriter::open(dir.path().join("m.jsonl")).unwrap();
        let out = StageRun {
            label: format!("{id} stage 1"),
            plan: &plan1,
            student: &student,
            teacher: Some(&t),
            adapter: None,
            rng: Rng::new(0),
            progress: None,
            resume: None,
            interrupt: None,
            chance_accuracy: None,
        }
        .run(
            &StageData {
                train: &data.train,
                select: &data.select,
                test: None,
            },
            &mut log,
        )
        .unwrap();
        assert_eq!(out.epochs, 2);
        let after_c: Vec<String> = student
            .params_where(|_, r| r.is_after_compressed())
            .into_iter()
            .map(|(n, _)| n)
            .collect();
        assert!(!after_c.is_empty());
        let mut moved = 0;
        for (name, t0) in &before {
            let t0: Vec<f32> = t0.flatten_all().unwrap().to_vec1().unwrap();
            let now = values(&student, name);
            if after_c.contains(name) {
                assert_eq!(t0, now, "{id}: {name} moved in stage 1");
            } else if t0 != now {
                moved += 1;
            }
        }
        if out.best_epoch > 0 {
            assert!(moved > 0, "{id}: stage 1 trained nothing");
        }
    }
}

#[test]
fn a_label_stage_that_never_improves_lasts_exactly_30_epochs() {
    let mut cfg = tiny();
    cfg.data.train_per_class = Some(1);
    let data = ExperimentData::load(&cfg, &Device::Cpu).unwrap();
    let options = cfg.model.options(10);
    let id = ModelId::new(5, Scheme::Backward).unwrap();
    let student = Model::new(ModelConfig::new(id, options), 1, &Device::Cpu).unwrap();
    // All-zero weights: the features stay 0, so only the head's bias learns and every image gets
    // the same class. On a class-balanced test set accuracy is then exactly 10% at every epoch
    // and never strictly improves (docs/method.md §14 item 10).
    for (name, var) in student.params() {
        student
            .set(name, &var.as_tensor().zeros_like().unwrap())
            .unwrap();
    }
    // A label stage as the plan makes it (cross entropy, every parameter), with the paper's
    // stage-2 schedule.
    let s2 = planned_stage(
        &cfg,
        "pyramid",
        ModelId::new(2, Scheme::Forward).unwrap(),
        StageKind::Stage2,
        ScheduleConfig::Plateau(PlateauConfig::stage2()),
        1e-4,
    );
    assert_eq!(s2.loss, LossSpec::CrossEntropy);
    assert_eq!(s2.number, 2);
    assert_eq!(s2.trains, TrainSet::All);
    assert!(s2.features.is_none() && s2.gram_pairs.is_empty());
    assert_eq!(s2.images, Images::Labelled);
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("m.jsonl");
    let mut log = JsonlWriter::open(&path).unwrap();
    let out = StageRun {
        label: "never improves".into(),
        plan: &s2,
        student: &student,
        teacher: None,
        adapter: None,
        rng: Rng::new(0),
        progress: None,
        resume: None,
        interrupt: None,
        chance_accuracy: None,
    }
    .run(
        &StageData {
            train: &data.train,
            select: &data.select,
            test: None,
        },
        &mut log,
    )
    .unwrap();
    assert_eq!(out.epochs, 30);
    assert_eq!(out.best_epoch, 0);
    let rows: Vec<EpochMetrics> = read_jsonl(&path).unwrap();
    assert_eq!(rows.len(), 31);
    let cuts: Vec<u64> = rows.iter().filter(|r| r.cut).map(|r| r.epoch).collect();
    assert_eq!(cuts, vec![6, 12, 18, 24, 30]);
}

/// One metrics row without its timings: (stage, epoch, train loss, train acc, test loss,
/// test acc, lr).
type Row = (
    u32,
    u64,
    Option<f64>,
    Option<f64>,
    Option<f64>,
    Option<f64>,
    f64,
);

fn comparable(path: &Path) -> Vec<Row> {
    let rows: Vec<EpochMetrics> = read_jsonl(path).unwrap();
    rows.into_iter()
        .map(|r| {
            (
                r.stage,
                r.epoch,
                r.train_loss,
                r.train_acc,
                r.test_loss,
                r.test_acc,
                r.lr,
            )
        })
        .collect()
}

#[test]
fn same_seed_same_metrics_and_reruns_skip_completed_levels() {
    let cfg = tiny();
    let a = tempfile::tempdir().unwrap();
    let b = tempfile::tempdir().unwrap();
    let opts = |d: &Path| RunOptions {
        out_dir: Some(d.to_path_buf()),
        ..RunOptions::default()
    };
    let ra = run_experiment(&cfg, &opts(a.path())).unwrap();
    let rb = run_experiment(&cfg, &opts(b.path())).unwrap();
    for rel in [
        "teacher/metrics.jsonl",
        "forward/pyramid/SVGG17/metrics.jsonl",
        "forward/pyramid/SVGG14/metrics.jsonl",
        "forward/scratch/SVGG14/metrics.jsonl",
    ] {
        assert_eq!(
            comparable(&a.path().join(rel)),
            comparable(&b.path().join(rel)),
            "{rel}"
        );
    }
    assert_eq!(ra.levels.len(), 4);
    for (x, y) in ra.levels.iter().zip(&rb.levels) {
        assert_eq!(x.best_test_acc, y.best_test_acc, "{}", x.model);
    }
    for f in ["config.toml", "plan.json", "results.json", "report.md"] {
        assert!(a.path().join(f).exists(), "{f}");
    }
    for f in ["stage1.safetensors", "final.safetensors", "result.json"] {
        assert!(
            a.path().join("forward/pyramid/SVGG14").join(f).exists(),
            "{f}"
        );
    }
    let report = std::fs::read_to_string(a.path().join("report.md")).unwrap();
    assert!(
        report.contains("| SVGG14 |") && report.contains("Pyramid 2-stages"),
        "{report}"
    );

    // A re-run finds every level complete and trains nothing.
    let stamp = |p: &Path| std::fs::metadata(p).unwrap().modified().unwrap();
    let result = a.path().join("forward/pyramid/SVGG14/result.json");
    let t0 = stamp(&result);
    let again = run_experiment(&cfg, &opts(a.path())).unwrap();
    assert_eq!(stamp(&result), t0);
    assert_eq!(again.levels.len(), ra.levels.len());
    for (x, y) in ra.levels.iter().zip(&again.levels) {
        assert_eq!(x.best_test_acc, y.best_test_acc);
    }
    // Removing a level's result re-runs that level only, with the same numbers.
    std::fs::remove_file(&result).unwrap();
    let partial = run_experiment(&cfg, &opts(a.path())).unwrap();
    let svgg14 = |r: &pyramid::Results| {
        r.levels
            .iter()
            .find(|l| l.model == "SVGG14" && l.method == "pyramid")
            .unwrap()
            .best_test_acc
    };
    assert_eq!(svgg14(&partial), svgg14(&ra));
}

#[test]
fn configs_reject_unknown_fields_and_bad_values_by_name() {
    let e = ExperimentConfig::from_toml(&TINY.replace("seed = 7", "seed = 7\nsede = 3"))
        .unwrap_err()
        .to_string();
    assert!(e.contains("sede"), "{e}");
    let e = ExperimentConfig::from_toml(&TINY.replace("width_div = 16", "width_div = 5"))
        .unwrap_err()
        .to_string();
    assert!(e.contains("width_div = 5"), "{e}");
    let e = ExperimentConfig::from_toml(&TINY.replace("levels = [1, 2]", "levels = [0, 7]"))
        .unwrap_err()
        .to_string();
    assert!(e.contains("levels"), "{e}");
    let e = ExperimentConfig::from_toml(
        &TINY.replace(r#"dataset = "embedded""#, r#"dataset = "mnist""#),
    )
    .unwrap_err()
    .to_string();
    assert!(e.contains("mnist"), "{e}");
    // A loss in [stage1] is refused by name: the method brings its loss.
    let e = ExperimentConfig::from_toml(
        &TINY.replace("[stage1]\n", "[stage1]\nloss = { kind = \"gram\" }\n"),
    )
    .unwrap_err()
    .to_string();
    assert!(e.contains("[stage1] loss = `gram`"), "{e}");
    // A method's own loss that its level cannot feed is refused by the plan, before anything
    // trains: forward SVGG17 compresses the head and has no Gram pair.
    let cfg = ExperimentConfig::from_toml(&format!(
        "{TINY}\n[method.pyramid.stage1]\nloss = {{ kind = \"gram\" }}\n"
    ))
    .unwrap();
    let e = Plan::build(&cfg).unwrap_err().to_string();
    assert!(
        e.contains("[forward/pyramid/SVGG17 stage1] loss `gram` reads Gram pairs"),
        "{e}"
    );
}

#[test]
fn a_schedule_mode_that_contradicts_the_loss_is_refused_before_training() {
    // Consistent explicit modes (TINY: min for the hint stage, max for label stages) are kept.
    let plan = Plan::build(&tiny()).unwrap();
    assert!(!plan.steps.is_empty());
    // `max` on the hint stage: the plan names the stage section and both modes.
    let cfg = ExperimentConfig::from_toml(&TINY.replace(
        r#"mode = "min", stop = "stage1""#,
        r#"mode = "max", stop = "stage1""#,
    ))
    .unwrap();
    let e = Plan::build(&cfg).unwrap_err().to_string();
    assert!(e.contains("stage1]"), "{e}");
    assert!(
        e.contains(r#"schedule mode = "max" contradicts the loss, which is monitored by min"#),
        "{e}"
    );
    // The same for `min` on a label stage.
    let cfg = ExperimentConfig::from_toml(&TINY.replace(
        r#"mode = "max", stop = "stage2""#,
        r#"mode = "min", stop = "stage2""#,
    ))
    .unwrap();
    let e = Plan::build(&cfg).unwrap_err().to_string();
    assert!(e.contains("stage2]"), "{e}");
    assert!(
        e.contains(r#"schedule mode = "min" contradicts the loss, which is monitored by max"#),
        "{e}"
    );
    // And in the teacher's recipe, which the config itself checks.
    let e = ExperimentConfig::from_toml(&TINY.replacen(
        r#"mode = "max", stop = "single_stage""#,
        r#"mode = "min", stop = "single_stage""#,
        1,
    ))
    .map(|_| ())
    .unwrap_err()
    .to_string();
    assert!(
        e.contains("[teacher.recipe]") && e.contains(r#"mode = "min""#),
        "{e}"
    );
}
