//! `table`: the paper's Tables 1–4 layout from run directories, with mean ± std over seeds.
//!
//! Fixtures (`tests/data/table/`, hand-written `results.json`): `run-a`, `run-b` and `run-c`
//! are one config (width ÷8, scratch and pyramid) with seeds 3, 1 and 2 (directory names
//! deliberately out of seed order; seed 2 has no pyramid SVGG14, and a warning on its scratch
//! SVGG14); `other` is another config (width ÷16, scratch only, forward and backward) with
//! seed 1; `dup` is run-b's config with seed 1 again.

use std::path::{Path, PathBuf};

use pyramid::paper::PaperCell;
use pyramid::table::{self, Measure, Options, Run, Tables};

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data/table")
        .join(name)
}

fn build(names: &[&str], options: Options) -> Tables {
    let dirs: Vec<PathBuf> = names.iter().map(|n| fixture(n)).collect();
    let runs = table::load_runs(&dirs).unwrap();
    table::build(&runs, options).unwrap()
}

fn close(a: f64, b: f64) -> bool {
    (a - b).abs() < 1e-9
}

#[test]
fn seeds_of_one_config_are_one_group_with_mean_and_sample_std() {
    let t = build(&["run-a", "run-b", "run-c", "other"], Options::default());
    assert_eq!(t.groups.len(), 2);
    let g = &t.groups[0];
    // Sorted by seed, whatever the directory names and the order given.
    assert_eq!(g.seeds, vec![1, 2, 3]);
    assert_eq!(
        g.dirs,
        vec![fixture("run-b"), fixture("run-c"), fixture("run-a")]
    );
    assert_eq!(g.columns, vec!["scratch", "pyramid"]);
    assert_eq!(
        g.distinct,
        vec![
            r#"methods = ["scratch","pyramid"]"#.to_string(),
            "model.width_div = 8".to_string()
        ]
    );
    assert_eq!(t.groups[1].seeds, vec![1]);
    assert_eq!(
        t.groups[1].distinct,
        vec![r#"methods = ["scratch"]"#, "model.width_div = 16"]
    );
    // Group 0 trained forward only; group 1 forward and backward.
    let shape: Vec<(usize, &str)> = t
        .tables
        .iter()
        .map(|x| (x.group, x.scheme.as_str()))
        .collect();
    assert_eq!(shape, vec![(0, "forward"), (1, "forward"), (1, "backward")]);

    let fwd = &t.tables[0];
    let models: Vec<&str> = fwd.rows.iter().map(|r| r.model.as_str()).collect();
    assert_eq!(models, vec!["SVGG17", "SVGG14"]);
    // Teacher, best epoch: 90, 91, 92 → mean 91; deviations −1, 0, 1 → (1 + 0 + 1) / 2 = 1 → std 1.
    let teacher = fwd.teacher.as_ref().unwrap().cells[0].as_ref().unwrap();
    assert_eq!(teacher.method, "teacher");
    assert!(close(teacher.best.mean, 91.0) && close(teacher.best.std.unwrap(), 1.0));
    // SVGG17 scratch: 85, 86, 87 → mean 86, std 1.
    let s17 = fwd.rows[0].cells[0].as_ref().unwrap();
    assert_eq!((s17.best.n, s17.seeds.clone()), (3, vec![1, 2, 3]));
    assert!(close(s17.best.mean, 86.0) && close(s17.best.std.unwrap(), 1.0));
    // SVGG17 pyramid: 88, 90, 92 → mean 90; (4 + 0 + 4) / 2 = 4 → std 2.
    let p17 = fwd.rows[0].cells[1].as_ref().unwrap();
    assert!(close(p17.best.mean, 90.0) && close(p17.best.std.unwrap(), 2.0));
    // SVGG14 scratch: 80, 81, 85 → mean 82; (4 + 1 + 9) / 2 = 7 → std √7; seed 2 warned.
    let s14 = fwd.rows[1].cells[0].as_ref().unwrap();
    assert!(close(s14.best.mean, 82.0) && close(s14.best.std.unwrap(), 7f64.sqrt()));
    assert!(s14.warned && !s17.warned);
    // SVGG14 pyramid: seeds 1 and 3 only: 84, 86 → mean 85; (1 + 1) / 1 = 2 → std √2, n 2.
    let p14 = fwd.rows[1].cells[1].as_ref().unwrap();
    assert_eq!(p14.seeds, vec![1, 3]);
    assert_eq!(p14.dirs, vec![fixture("run-b"), fixture("run-a")]);
    assert_eq!(p14.best.values, vec![84.0, 86.0]);
    assert!(close(p14.best.mean, 85.0) && close(p14.best.std.unwrap(), 2f64.sqrt()));
    assert_eq!(p14.best.n, 2);
    // Latency of SVGG17 (seed 1: scratch 1300 img/s, 10 s; pyramid 1000 img/s, 13 s):
    // mean 1150, std √((150² + 150²) / 1) = 212.132…; seconds 11.5 ± √(2 · 1.5²) = 2.1213….
    let lat = fwd.rows[0].latency.as_ref().unwrap();
    assert_eq!(lat.device, "cpu");
    assert!(close(lat.images_per_sec.mean, 1150.0));
    assert!(close(lat.images_per_sec.std.unwrap(), 45000f64.sqrt()));
    assert!(close(lat.seconds_per_13000.mean, 11.5));
    assert!(close(lat.seconds_per_13000.std.unwrap(), 4.5f64.sqrt()));
    assert!(fwd.rows[1].latency.is_none());
    // One seed: the value, no std.
    let o = t.tables[2].rows[0].cells[0].as_ref().unwrap();
    assert_eq!(t.tables[2].rows[0].model, "SVGG17B");
    assert_eq!((o.best.n, o.best.std), (1, None));
    assert_eq!(o.best.text(), "55.50");

    let md = t.markdown();
    assert!(
        md.contains("| SVGG17 | 0.315 M | 6.0 M | 86.00 ± 1.00 | 90.00 ± 2.00 | 1300 | 10.00 |\n"),
        "{md}"
    );
    assert!(
        md.contains("| SVGG14 | 0.200 M | 5.0 M | 82.00 ± 2.65 ⚠ | 85.00 ± 1.41 (n=2) | – | – |\n"),
        "{md}"
    );
    assert!(
        md.contains("| VGG19 (teacher) | 0.480 M | 6.2 M | 91.00 ± 1.00 | | – | – |\n"),
        "{md}"
    );
    assert!(md.contains("3 seeds (1, 2, 3)"), "{md}");
    assert!(md.contains("- `model.width_div = 16`"), "{md}");
}

#[test]
fn last_shows_the_last_epochs_accuracy() {
    let t = build(
        &["run-a", "run-b", "run-c"],
        Options {
            measure: Measure::Last,
            paper: false,
        },
    );
    assert_eq!(t.groups.len(), 1);
    assert!(t.groups[0].distinct.is_empty());
    // SVGG17 scratch, last epoch: 84, 84, 87 → mean 85; (1 + 1 + 4) / 2 = 3 → std √3 = 1.732….
    let c = t.tables[0].rows[0].cells[0].as_ref().unwrap();
    assert!(close(c.last.mean, 85.0) && close(c.last.std.unwrap(), 3f64.sqrt()));
    // Teacher, last epoch: 89, 90, 94 → mean 91; (4 + 1 + 9) / 2 = 7 → std √7 = 2.6458.
    let md = t.markdown();
    assert!(md.contains("of the last epoch"), "{md}");
    assert!(
        md.contains("| SVGG17 | 0.315 M | 6.0 M | 85.00 ± 1.73 | 89.00 ± 2.00 |"),
        "{md}"
    );
    assert!(
        md.contains("| VGG19 (teacher) | 0.480 M | 6.2 M | 91.00 ± 2.65 | |"),
        "{md}"
    );
}

#[test]
fn csv_has_one_line_per_model_and_method() {
    let t = build(&["run-a", "run-b", "run-c", "other"], Options::default());
    let csv = t.csv();
    let lines: Vec<&str> = csv.lines().collect();
    assert_eq!(
        lines[0],
        "group,name,dataset,scheme,model,method,params,macs,measure,n,mean,std,values,seeds,warned,paper,images_per_sec,seconds_per_13000"
    );
    // Group 1 forward: teacher + 2 × 2 cells; group 2: teacher + SVGG17, teacher + SVGG17B.
    assert_eq!(lines.len(), 1 + 5 + 2 + 2);
    assert_eq!(
        lines[1],
        "1,fixture,stl10,forward,VGG19,teacher,480000,6200000,best,3,91,1,90 91 92,1 2 3,false,,,"
    );
    assert_eq!(
        lines[2],
        "1,fixture,stl10,forward,SVGG17,scratch,315000,6000000,best,3,86,1,85 86 87,1 2 3,false,,1150,11.5"
    );
    assert_eq!(
        lines[5],
        "1,fixture,stl10,forward,SVGG14,pyramid,200000,5000000,best,2,85,1.4142135623730951,84 86,1 3,false,,,"
    );
    assert_eq!(
        lines[9],
        "2,fixture,stl10,backward,SVGG17B,scratch,310000,2000000,best,1,55.5,,55.5,1,false,,,"
    );
}

#[test]
fn json_gives_values_mean_std_n_seeds_and_dirs_per_cell() {
    let t = build(&["run-a", "run-b", "run-c"], Options::default());
    let v = t.json();
    assert_eq!(v["measure"], "best");
    assert_eq!(v["groups"][0]["seeds"], serde_json::json!([1, 2, 3]));
    let cell = &v["tables"][0]["rows"][1]["cells"][1];
    assert_eq!(cell["method"], "pyramid");
    assert_eq!(cell["values"], serde_json::json!([84.0, 86.0]));
    assert_eq!(cell["mean"], 85.0);
    assert_eq!(cell["std"], 2f64.sqrt());
    assert_eq!(cell["n"], 2);
    assert_eq!(cell["seeds"], serde_json::json!([1, 3]));
    assert_eq!(
        cell["dirs"],
        serde_json::json!([fixture("run-b"), fixture("run-a")])
    );
    assert_eq!(cell["last"]["mean"], 84.0);
    assert_eq!(cell["paper"], serde_json::Value::Null);
    let lat = &v["tables"][0]["rows"][0]["latency"];
    assert_eq!(lat["images_per_sec"]["mean"], 1150.0);
}

#[test]
fn paper_numbers_sit_beside_ours_and_gaps_are_said_once() {
    let t = build(
        &["run-b", "other"],
        Options {
            measure: Measure::Best,
            paper: true,
        },
    );
    let fwd = &t.tables[0];
    assert_eq!(fwd.paper_table, Some(1));
    // The paper's Table 1: SVGG17 Scratch 93.925, SVGG14 Pyramid 2-stages 93.8625.
    assert_eq!(
        fwd.rows[0].cells[0].as_ref().unwrap().paper,
        Some(PaperCell::Value(93.925))
    );
    assert_eq!(
        fwd.rows[1].cells[1].as_ref().unwrap().paper,
        Some(PaperCell::Value(93.8625))
    );
    assert_eq!(fwd.rows[0].paper_seconds, Some(16.14));
    assert_eq!(t.tables[2].paper_table, Some(3));
    let md = t.markdown();
    assert!(
        md.contains("## Forward scheme (the paper's Table 1)"),
        "{md}"
    );
    assert!(
        md.contains("## Backward scheme (the paper's Table 3)"),
        "{md}"
    );
    assert!(
        md.contains("| SVGG17 | 0.315 M | 6.0 M | 85.00 [paper 93.925] | 88.00 [paper 93.925] | 1300 | 10.00 | 16.14 |"),
        "{md}"
    );
    assert!(
        md.contains("| SVGG17B | 0.310 M | 2.0 M | 55.50 [paper 81.25] |"),
        "{md}"
    );
    assert!(md.contains("Paper: the paper's models are full-width VGGs at 96×96 RGB input without batch norm; these are width ÷8 at 32×32, 3 channel(s), with batch norm.\n"), "{md}");
    let csv = t.csv();
    assert!(csv.contains("1,fixture,stl10,forward,SVGG17,scratch,315000,6000000,best,1,85,,85,1,false,93.925,1150,11.5\n"), "{csv}");
}

#[test]
fn the_same_seed_twice_in_one_group_is_an_error_naming_both() {
    let runs = table::load_runs(&[fixture("run-b"), fixture("dup")]).unwrap();
    let e = table::build(&runs, Options::default())
        .unwrap_err()
        .to_string();
    assert!(e.contains(&fixture("run-b").display().to_string()), "{e}");
    assert!(e.contains(&fixture("dup").display().to_string()), "{e}");
    assert!(e.contains("seed 1"), "{e}");
    // The same seed in another config is no clash.
    let runs = table::load_runs(&[fixture("run-b"), fixture("other")]).unwrap();
    assert_eq!(
        table::build(&runs, Options::default())
            .unwrap()
            .groups
            .len(),
        2
    );
}

#[test]
fn a_directory_without_results_is_an_error_naming_it() {
    let dir = tempfile::tempdir().unwrap();
    let e = Run::load(dir.path()).unwrap_err().to_string();
    assert!(
        e.contains(&dir.path().join("results.json").display().to_string())
            && e.contains("not a run directory"),
        "{e}"
    );
    std::fs::write(dir.path().join("results.json"), "{ not json").unwrap();
    let e = Run::load(dir.path()).unwrap_err().to_string();
    assert!(e.contains("bad JSON") && e.contains("results.json"), "{e}");
}

#[test]
fn report_md_builds_its_tables_through_table() {
    let run = Run::load(&fixture("run-b")).unwrap();
    let md = pyramid::report::markdown(&run.results);
    // One seed: best (last) per cell; latency: the fastest of both methods' SVGG17 timings.
    assert!(
        md.contains(
            "| SVGG17 | 0.315 M | 6.0 M | 85.00 (84.00) | 88.00 (87.00) | 1300 | 10.00 |\n"
        ),
        "{md}"
    );
    assert!(
        md.contains("| VGG19 (teacher) | 0.480 M | 6.2 M | 90.00 (89.00) | | – | – |\n"),
        "{md}"
    );
    assert!(
        md.contains("| SVGG17 | +3.00 |\n| SVGG14 | +4.00 |\n"),
        "{md}"
    );
}

#[test]
fn runs_whose_common_models_executed_other_stages_are_other_groups() {
    let cfg = pyramid::ExperimentConfig::from_file(
        &Path::new(env!("CARGO_MANIFEST_DIR")).join("../../configs/smoke/scratch.toml"),
    )
    .unwrap();
    let plan = pyramid::Plan::build(&cfg).unwrap();
    let step = plan
        .steps
        .iter()
        .find(|s| s.at.0 == "forward/scratch/SVGG17")
        .unwrap();
    let with_stages = |name: &str, number: u32| {
        let mut run = Run::load(&fixture(name)).unwrap();
        let mut stages = step.stages.clone();
        stages[0].number = number;
        for l in &mut run.results.levels {
            if l.model == "SVGG17" && l.method == "scratch" {
                l.executed = stages.clone();
            }
        }
        run
    };
    // Seeds 1 and 2 executed the same stages, seed 3 another; a model only one run has
    // (seed 2 lacks pyramid SVGG14) splits nothing.
    let runs = vec![
        with_stages("run-b", 2),
        with_stages("run-c", 2),
        with_stages("run-a", 3),
    ];
    let t = table::build(&runs, Options::default()).unwrap();
    assert_eq!(t.groups.len(), 2);
    assert_eq!(t.groups[0].seeds, vec![1, 2]);
    assert_eq!(t.groups[1].seeds, vec![3]);
    assert_eq!(
        t.groups[0].distinct,
        vec!["stages.forward/scratch/SVGG17[0].number = 2"]
    );
    assert_eq!(
        t.groups[1].distinct,
        vec!["stages.forward/scratch/SVGG17[0].number = 3"]
    );
}

#[test]
fn paper_gaps_are_said_once_per_table() {
    let mut run = Run::load(&fixture("other")).unwrap();
    // The backward SVGG17B scratch result, relabelled as pyramid-gram at SVGG5B (the paper
    // prints "–" there) and as KD (a method the paper has no column for).
    let mut b = run.results.levels[1].clone();
    (b.model, b.level, b.method) = ("SVGG5B".into(), 5, "pyramid-gram".into());
    let mut kd = b.clone();
    kd.method = "kd".into();
    run.results.levels.extend([b, kd]);
    let t = table::build(
        &[run],
        Options {
            measure: Measure::Best,
            paper: true,
        },
    )
    .unwrap();
    let bwd = &t.tables[1];
    assert_eq!(bwd.columns, vec!["scratch", "pyramid-gram", "kd"]);
    assert_eq!(
        bwd.rows[1].cells[1].as_ref().unwrap().paper,
        Some(PaperCell::Dash)
    );
    assert_eq!(
        bwd.rows[1].cells[2].as_ref().unwrap().paper,
        Some(PaperCell::NoMethod)
    );
    let md = t.markdown();
    assert!(
        md.contains("| SVGG5B | 0.310 M | 2.0 M | – | 55.50 [paper –] | 55.50 |"),
        "{md}"
    );
    assert_eq!(
        md.matches("Paper: the paper's tables have no column for KD.")
            .count(),
        2,
        "{md}"
    );
    assert_eq!(
        md.matches("Paper: \"paper –\": the paper prints no number for that level.")
            .count(),
        1,
        "{md}"
    );
}
