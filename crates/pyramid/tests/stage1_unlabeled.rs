//! `[data] stage1_unlabeled`: pyramid stage 1 trains on the labelled images plus a seeded
//! choice of STL10's unlabeled images; every other stage sees only the labelled ones. Runs on
//! tiny STL10 files written here in the official binary format.

use std::path::Path;

use candle_core::Device;
use pyramid::data::ExperimentData;
use pyramid::{run_experiment, ExperimentConfig, Plan, RunOptions};
use pyramid_datasets::stl10::{transpose_image, UnlabeledStl10};
use pyramid_train::metrics::{read_jsonl, EpochMetrics};

const TRAIN: usize = 20;
const TEST: usize = 10;
const UNLABELED: usize = 30;
const CHOSEN: usize = 12;

/// Images `first..first + n` in STL10's stored layout (column-major planes; the reader's own
/// transpose is its own inverse).
fn stl_x(n: usize, first: usize) -> Vec<u8> {
    let mut v = vec![0u8; n * 27648];
    for (i, out) in v.chunks_exact_mut(27648).enumerate() {
        let row_major: Vec<u8> = (0..27648)
            .map(|p| ((first + i) * 37 + (p / 9216) * 80 + (p / 96 % 96) * 5 + (p % 96) * 3) as u8)
            .collect();
        transpose_image(&row_major, out);
    }
    v
}

fn make_stl10(root: &Path) {
    let d = root.join("stl10_binary");
    std::fs::create_dir_all(&d).unwrap();
    let labels = |n: usize| (0..n).map(|i| (i % 10 + 1) as u8).collect::<Vec<_>>();
    std::fs::write(d.join("train_X.bin"), stl_x(TRAIN, 0)).unwrap();
    std::fs::write(d.join("train_y.bin"), labels(TRAIN)).unwrap();
    std::fs::write(d.join("test_X.bin"), stl_x(TEST, 100)).unwrap();
    std::fs::write(d.join("test_y.bin"), labels(TEST)).unwrap();
    std::fs::write(d.join("unlabeled_X.bin"), stl_x(UNLABELED, 200)).unwrap();
}

fn config(root: &Path, out: &Path, stage1_unlabeled: usize, stage1_loss: &str) -> String {
    format!(
        r#"
name = "stl10-unlabeled"
seed = 3
schemes = ["forward"]
methods = ["pyramid"]
levels = [1]
out_dir = "{out}"

[data]
dataset = "stl10"
root = "{root}"
batch_size = 8
eval_batch_size = 16
stage1_unlabeled = {stage1_unlabeled}

[model]
input_size = 32
width_div = 16

[teacher]
source = "train"
[teacher.recipe]
loss = {{ kind = "cross_entropy" }}
schedule = {{ kind = "plateau", mode = "max", stop = "single_stage", max_epochs = 1 }}

[stage1]
schedule = {{ kind = "plateau", stop = "stage1", max_epochs = 1 }}

[stage2]
schedule = {{ kind = "plateau", stop = "stage2", max_epochs = 1 }}

[method.pyramid.stage1]
loss = {{ kind = "{stage1_loss}" }}
"#,
        out = out.display(),
        root = root.display(),
    )
}

#[test]
fn stage1_loader_adds_a_seeded_choice_of_unlabeled_images() {
    let t = tempfile::tempdir().unwrap();
    make_stl10(t.path());
    let cfg = ExperimentConfig::from_toml(&config(t.path(), t.path(), CHOSEN, "hint")).unwrap();
    let data = ExperimentData::load(&cfg, &Device::Cpu).unwrap();
    assert_eq!(data.train.len(), TRAIN);
    assert_eq!(data.stage1_loader().len(), TRAIN + CHOSEN);

    // The labelled images come first, unchanged; the rest are distinct unlabeled images, in
    // file order.
    let joined = data.stage1_loader().dataset();
    for i in 0..TRAIN {
        assert_eq!(joined.image(i), data.train.dataset().image(i));
    }
    let file = UnlabeledStl10::open(t.path()).unwrap();
    let mut picked = Vec::new();
    for k in TRAIN..TRAIN + CHOSEN {
        let i = (0..UNLABELED)
            .find(|&i| file.image(i).unwrap() == joined.image(k))
            .expect("an unlabeled image");
        picked.push(i);
    }
    assert!(picked.windows(2).all(|w| w[0] < w[1]), "{picked:?}");

    // Same seed, same choice; another seed, another choice.
    let again = ExperimentData::load(&cfg, &Device::Cpu).unwrap();
    assert_eq!(again.stage1_loader().dataset().images, joined.images);
    let mut other = cfg.clone();
    other.seed = 4;
    let other = ExperimentData::load(&other, &Device::Cpu).unwrap();
    assert_ne!(other.stage1_loader().dataset().images, joined.images);

    // Off: stage 1 uses the labelled loader itself.
    let off = ExperimentConfig::from_toml(&config(t.path(), t.path(), 0, "hint")).unwrap();
    let off = ExperimentData::load(&off, &Device::Cpu).unwrap();
    assert!(off.stage1_train.is_none());
    assert_eq!(off.stage1_loader().len(), TRAIN);
}

#[test]
fn only_stage1_of_a_pyramid_level_sees_the_unlabeled_images() {
    let t = tempfile::tempdir().unwrap();
    make_stl10(t.path());
    let out = t.path().join("run");
    let cfg = ExperimentConfig::from_toml(&config(t.path(), &out, CHOSEN, "hint")).unwrap();
    let plan = Plan::build(&cfg).unwrap().to_text();
    let line = |prefix: &str| {
        plan.lines()
            .map(str::trim)
            .find(|l| l.starts_with(prefix))
            .unwrap_or_else(|| panic!("no `{prefix}` line in\n{plan}"))
            .to_string()
    };
    let s1 = line("stage 1:");
    assert!(
        s1.starts_with("stage 1: loss hint, trains up to and including FC1;")
            && s1.ends_with(&format!("; labelled + {CHOSEN} unlabeled images")),
        "{plan}"
    );
    let s2 = line("stage 2:");
    assert!(
        s2.starts_with("stage 2: loss cross_entropy, trains all;")
            && s2.ends_with("; labelled images"),
        "{plan}"
    );

    let results = run_experiment(&cfg, &RunOptions::default()).unwrap();
    assert_eq!(results.stage1_unlabeled_images, CHOSEN);
    let level = out.join("forward/pyramid/SVGG17/metrics.jsonl");
    let rows: Vec<EpochMetrics> = read_jsonl(&level).unwrap();
    let trained = |stage: u32| {
        rows.iter()
            .filter(|r| r.stage == stage && r.epoch > 0)
            .map(|r| r.train_images)
            .collect::<Vec<_>>()
    };
    assert_eq!(trained(1), vec![(TRAIN + CHOSEN) as u64]);
    assert!(!trained(2).is_empty());
    assert!(trained(2).iter().all(|&n| n == TRAIN as u64));
    let teacher: Vec<EpochMetrics> = read_jsonl(out.join("teacher/metrics.jsonl")).unwrap();
    assert!(teacher
        .iter()
        .filter(|r| r.epoch > 0)
        .all(|r| r.train_images == TRAIN as u64));
    let report = std::fs::read_to_string(out.join("report.md")).unwrap();
    assert!(report.contains(&format!("also trained on {CHOSEN} unlabeled images")));
}

#[test]
fn bad_stage1_unlabeled_configs_are_refused_with_the_field() {
    let t = tempfile::tempdir().unwrap();
    make_stl10(t.path());
    // Refused by the config, or else by its plan (before anything trains).
    let err = |text: String| match ExperimentConfig::from_toml(&text) {
        Err(e) => e.to_string(),
        Ok(cfg) => match Plan::build(&cfg) {
            Err(e) => e.to_string(),
            Ok(_) => panic!("accepted:\n{text}"),
        },
    };

    let e = err(config(t.path(), t.path(), CHOSEN, "cross_entropy"));
    assert!(
        e.contains("[forward/pyramid/SVGG17 stage1] loss `cross_entropy` uses labels"),
        "{e}"
    );
    assert!(e.contains("stage1_unlabeled = 12"), "{e}");

    let e = err(config(t.path(), t.path(), CHOSEN, "hint").replace("\"stl10\"", "\"embedded\""));
    assert!(
        e.contains("stage1_unlabeled = 12: only stl10 has an unlabeled split"),
        "{e}"
    );

    // More than the file holds: the error names the file and its count.
    let cfg = ExperimentConfig::from_toml(&config(t.path(), t.path(), 31, "hint")).unwrap();
    let e = match ExperimentData::load(&cfg, &Device::Cpu) {
        Err(e) => e.to_string(),
        Ok(_) => panic!("31 of 30 unlabeled images accepted"),
    };
    assert!(e.contains("stage1_unlabeled = 31"), "{e}");
    assert!(e.contains("unlabeled_X.bin holds only 30 images"), "{e}");

    // A missing unlabeled file is named.
    std::fs::remove_file(t.path().join("stl10_binary/unlabeled_X.bin")).unwrap();
    let cfg = ExperimentConfig::from_toml(&config(t.path(), t.path(), 5, "hint")).unwrap();
    let e = match ExperimentData::load(&cfg, &Device::Cpu) {
        Err(e) => e.to_string(),
        Ok(_) => panic!("a missing unlabeled_X.bin accepted"),
    };
    assert!(e.contains("unlabeled_X.bin"), "{e}");
}
