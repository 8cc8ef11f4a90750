//! The plan of every method, pinned against the method's definition (the tables of
//! docs/method.md §3.3, §4.3, §5.3, §6 and §7), at paper width on STL10. Nothing trains here.

use pyramid::method::{ModelRef, TrainSet};
use pyramid::plan::{LevelPlan, StagePlan};
use pyramid::{ExperimentConfig, Plan};
use pyramid_losses::{LossSpec, Monitor};

const ALL: &str = r#"["scratch", "pyramid", "pyramid-gram", "pyramid-logits", "hinton", "fitnet", "gram-direct", "kd"]"#;

fn config(extra: &str) -> ExperimentConfig {
    config_with("", extra)
}

/// `top` goes before the first table, `extra` after the last.
fn config_with(top: &str, extra: &str) -> ExperimentConfig {
    let methods = if top.contains("methods") {
        String::new()
    } else {
        format!("methods = {ALL}")
    };
    ExperimentConfig::from_toml(&format!(
        r#"
{methods}
{top}
[data]
dataset = "stl10"
[teacher]
source = "train"
[teacher.recipe]
schedule = {{ kind = "plateau", stop = "single_stage" }}
{extra}
"#
    ))
    .unwrap()
}

fn plan() -> Plan {
    Plan::build(&config("")).unwrap()
}

fn step<'a>(p: &'a Plan, at: &str) -> &'a LevelPlan {
    p.step(&ModelRef(at.into()))
        .unwrap_or_else(|| panic!("no step {at}"))
}

fn stage1<'a>(p: &'a Plan, at: &str) -> &'a StagePlan {
    let s = &step(p, at).stages[0];
    assert_eq!(s.number, 1, "{at}");
    s
}

fn up_to(tap: &str) -> TrainSet {
    TrainSet::UpTo { tap: tap.into() }
}

fn features(s: &StagePlan) -> (&str, &str) {
    let f = s.features.as_ref().expect("a feature pair");
    (f.student.as_str(), f.teacher.as_str())
}

fn grams(s: &StagePlan) -> Vec<(&str, &str, &str, &str)> {
    s.gram_pairs
        .iter()
        .map(|g| {
            (
                g.student.0.as_str(),
                g.student.1.as_str(),
                g.teacher.0.as_str(),
                g.teacher.1.as_str(),
            )
        })
        .collect()
}

fn label_stage_is_cross_entropy_on_everything(s: &StagePlan) {
    assert_eq!(s.number, 2);
    assert_eq!(s.loss, LossSpec::CrossEntropy);
    assert_eq!(s.trains, TrainSet::All);
    assert_eq!(s.monitor, Monitor::Accuracy);
    assert!(!s.uses_teacher());
}

#[test]
fn pyramid_matches_c_against_d_and_trains_up_to_c() {
    let p = plan();
    // §3.3 (forward) and §4.3 (backward): (student C output, teacher D output).
    for (at, c, d) in [
        ("forward/pyramid/SVGG17", "FC1", "FC3"),
        ("forward/pyramid/SVGG14", "K5", "B5"),
        ("forward/pyramid/SVGG11", "K4", "B4"),
        ("forward/pyramid/SVGG8", "K3", "B3"),
        ("forward/pyramid/SVGG5", "K12", "B2"),
        ("backward/pyramid/SVGG17B", "K12", "B2"),
        ("backward/pyramid/SVGG14B", "K3", "B3"),
        ("backward/pyramid/SVGG11B", "K4", "B4"),
        ("backward/pyramid/SVGG8B", "K5", "B5"),
        ("backward/pyramid/SVGG5B", "FC1", "FC3"),
    ] {
        let s = stage1(&p, at);
        assert_eq!(s.loss, LossSpec::Hint, "{at}");
        assert_eq!(features(s), (c, d), "{at}");
        assert_eq!(s.trains, up_to(c), "{at}");
        assert_eq!(s.monitor, Monitor::Loss);
        assert!(
            s.gram_pairs.is_empty(),
            "{at}: a hint stage taps no Gram pair"
        );
        label_stage_is_cross_entropy_on_everything(&step(&p, at).stages[1]);
    }
    assert_eq!(
        step(&p, "forward/pyramid/SVGG17").teacher,
        Some(ModelRef::teacher())
    );
    assert_eq!(
        step(&p, "forward/pyramid/SVGG11").teacher,
        Some(ModelRef("forward/pyramid/SVGG14".into()))
    );
    assert_eq!(
        step(&p, "backward/pyramid/SVGG5B").init.from,
        ModelRef("backward/pyramid/SVGG8B".into())
    );
}

#[test]
fn pyramid_gram_matches_the_single_pair_of_section_5_3() {
    let p = plan();
    // (student F1, student F2, teacher F1, teacher F2): block input, last conv before the pool.
    for (at, teacher, pair) in [
        (
            "forward/pyramid-gram/SVGG14",
            "forward/pyramid/SVGG17",
            ("B4", "K5.conv", "B4", "B5.conv5_4"),
        ),
        (
            "forward/pyramid-gram/SVGG11",
            "forward/pyramid-gram/SVGG14",
            ("B3", "K4.conv", "B3", "B4.conv4_4"),
        ),
        (
            "forward/pyramid-gram/SVGG8",
            "forward/pyramid-gram/SVGG11",
            ("B2", "K3.conv", "B2", "B3.conv3_4"),
        ),
        (
            "forward/pyramid-gram/SVGG5",
            "forward/pyramid-gram/SVGG8",
            ("C11", "K12.conv", "C11", "B2.conv2_2"),
        ),
        (
            "backward/pyramid-gram/SVGG17B",
            "teacher",
            ("C11", "K12.conv", "C11", "B2.conv2_2"),
        ),
        (
            "backward/pyramid-gram/SVGG14B",
            "backward/pyramid-gram/SVGG17B",
            ("K12", "K3.conv", "K12", "B3.conv3_4"),
        ),
        (
            "backward/pyramid-gram/SVGG11B",
            "backward/pyramid-gram/SVGG14B",
            ("K3", "K4.conv", "K3", "B4.conv4_4"),
        ),
        (
            "backward/pyramid-gram/SVGG8B",
            "backward/pyramid-gram/SVGG11B",
            ("K4", "K5.conv", "K4", "B5.conv5_4"),
        ),
    ] {
        let l = step(&p, at);
        assert_eq!(l.teacher, Some(ModelRef(teacher.into())), "{at}");
        assert_eq!(l.init.from, ModelRef(teacher.into()), "{at}");
        let s = stage1(&p, at);
        assert_eq!(s.loss, LossSpec::Gram);
        assert_eq!(grams(s), vec![pair], "{at}");
        assert_eq!(s.trains, up_to(&l.with), "{at}");
        assert!(s.features.is_none());
    }
    // No Gram pair where the head is compressed: no result, shown as "–".
    assert!(p
        .step(&ModelRef("forward/pyramid-gram/SVGG17".into()))
        .is_none());
    assert!(p
        .step(&ModelRef("backward/pyramid-gram/SVGG5B".into()))
        .is_none());
    let chain = p
        .chains
        .iter()
        .find(|c| c.method == "pyramid-gram" && c.scheme == pyramid_models::Scheme::Forward)
        .unwrap();
    assert_eq!(chain.levels[0], ("SVGG17".to_string(), None));
    // The chain start (§7.3) is the Pyramid 2-stages SVGG17, trained before it.
    let order: Vec<&str> = p.steps.iter().map(|s| s.at.0.as_str()).collect();
    let pos = |x: &str| order.iter().position(|o| *o == x).unwrap();
    assert!(pos("forward/pyramid/SVGG17") < pos("forward/pyramid-gram/SVGG14"));
}

#[test]
fn the_logit_methods_match_logits_and_train_everything() {
    let p = plan();
    for scheme in ["forward", "backward"] {
        for model in ["SVGG17", "SVGG14", "SVGG11", "SVGG8", "SVGG5"] {
            let m = if scheme == "backward" {
                format!("{model}B")
            } else {
                model.to_string()
            };
            // §7.4: the previous level teaches, the student inherits from it.
            let at = format!("{scheme}/pyramid-logits/{m}");
            let s = stage1(&p, &at);
            assert_eq!(s.loss, LossSpec::LogitMse);
            assert!(s.student_logits && s.teacher_logits && !s.labels);
            assert_eq!(s.trains, TrainSet::All);
            assert!(s.features.is_none() && s.gram_pairs.is_empty());
            let l = step(&p, &at);
            assert_eq!(l.init.from, l.teacher.clone().unwrap());
            // §7.5: VGG19 teaches every level, Scratch initialisation.
            let at = format!("{scheme}/hinton/{m}");
            let l = step(&p, &at);
            assert_eq!(l.teacher, Some(ModelRef::teacher()));
            assert_eq!(l.init.from, ModelRef::teacher());
            assert_eq!(stage1(&p, &at).loss, LossSpec::LogitMse);
            assert_eq!(stage1(&p, &at).trains, TrainSet::All);
            label_stage_is_cross_entropy_on_everything(&l.stages[1]);
        }
    }
}

#[test]
fn fitnet_guides_the_section_6_layers_through_its_regressors() {
    let p = plan();
    // (guided tap, regressor, regressor params at paper width: docs/method.md §14 item 9)
    for (at, guided, regressor, params) in [
        ("forward/fitnet/SVGG17", "B4.conv4_1", "identity", 0),
        (
            "forward/fitnet/SVGG14",
            "B3.conv3_3",
            "pool, conv(256→512, no ReLU)",
            1_180_160,
        ),
        (
            "forward/fitnet/SVGG11",
            "B3.conv3_2",
            "pool, conv(256→512, no ReLU)",
            1_180_160,
        ),
        (
            "forward/fitnet/SVGG8",
            "B2",
            "pool, conv(128→512, no ReLU)",
            590_336,
        ),
        (
            "forward/fitnet/SVGG5",
            "K3.conv",
            "pool, conv(256→512, no ReLU)",
            1_180_160,
        ),
        ("backward/fitnet/SVGG17B", "B4.conv4_3", "identity", 0),
        ("backward/fitnet/SVGG14B", "B4.conv4_4", "identity", 0),
        ("backward/fitnet/SVGG11B", "B5.conv5_3", "upsample×2", 0),
        ("backward/fitnet/SVGG8B", "K4.conv", "identity", 0),
        (
            "backward/fitnet/SVGG5B",
            "K3",
            "conv(256→512, no ReLU)",
            1_180_160,
        ),
    ] {
        let l = step(&p, at);
        assert_eq!(l.teacher, Some(ModelRef::teacher()), "{at}");
        assert_eq!(l.init.from, ModelRef::teacher(), "{at}");
        let s = stage1(&p, at);
        assert_eq!(s.loss, LossSpec::Hint);
        // The hint is VGG19's ReLU(conv4_2), 512×12×12.
        assert_eq!(features(s), (guided, "B4.conv4_2"), "{at}");
        let f = s.features.as_ref().unwrap();
        let a = f.adapter.clone().unwrap_or(pyramid_models::AdapterSpec {
            pool: false,
            conv: None,
            upsample: false,
        });
        assert_eq!(a.describe(), regressor, "{at}");
        assert_eq!(a.num_params(), params, "{at}");
        assert_eq!(s.trains, up_to(guided), "{at}");
        label_stage_is_cross_entropy_on_everything(&l.stages[1]);
    }
}

#[test]
fn gram_direct_sums_a_pair_per_compressed_block_against_the_top_model() {
    let p = plan();
    let fwd_top = ModelRef("forward/pyramid/SVGG17".into());
    // §7.7, the clean definition; pairs in compression order.
    // The student's F1 is whatever block now precedes the new one (f4m = K4's output once
    // block 4 is compressed); the teacher's pairs stay SVGG17's.
    let t5 = ("B4", "B5.conv5_4");
    let t4 = ("B3", "B4.conv4_4");
    let t3 = ("B2", "B3.conv3_4");
    let t2 = ("C11", "B2.conv2_2");
    let pair = |s1, s2, t: (&'static str, &'static str)| (s1, s2, t.0, t.1);
    for (at, pairs, deepest) in [
        (
            "forward/gram-direct/SVGG14",
            vec![pair("B4", "K5.conv", t5)],
            "K5.conv",
        ),
        (
            "forward/gram-direct/SVGG11",
            vec![pair("K4", "K5.conv", t5), pair("B3", "K4.conv", t4)],
            "K5.conv",
        ),
        (
            "forward/gram-direct/SVGG8",
            vec![
                pair("K4", "K5.conv", t5),
                pair("K3", "K4.conv", t4),
                pair("B2", "K3.conv", t3),
            ],
            "K5.conv",
        ),
        (
            "forward/gram-direct/SVGG5",
            vec![
                pair("K4", "K5.conv", t5),
                pair("K3", "K4.conv", t4),
                pair("K12", "K3.conv", t3),
                pair("C11", "K12.conv", t2),
            ],
            "K5.conv",
        ),
    ] {
        let l = step(&p, at);
        assert_eq!(l.teacher.as_ref(), Some(&fwd_top), "{at}");
        assert_eq!(l.init.from, fwd_top, "{at}");
        assert_eq!(grams(stage1(&p, at)), pairs, "{at}");
        assert_eq!(stage1(&p, at).trains, up_to(deepest), "{at}");
    }
    let b17 = ("C11", "K12.conv", "C11", "B2.conv2_2");
    let b14 = ("K12", "K3.conv", "B2", "B3.conv3_4");
    let b11 = ("K3", "K4.conv", "B3", "B4.conv4_4");
    let b8 = ("K4", "K5.conv", "B4", "B5.conv5_4");
    for (at, pairs, deepest) in [
        ("backward/gram-direct/SVGG17B", vec![b17], "K12.conv"),
        ("backward/gram-direct/SVGG14B", vec![b17, b14], "K3.conv"),
        (
            "backward/gram-direct/SVGG11B",
            vec![b17, b14, b11],
            "K4.conv",
        ),
        (
            "backward/gram-direct/SVGG8B",
            vec![b17, b14, b11, b8],
            "K5.conv",
        ),
    ] {
        let l = step(&p, at);
        assert_eq!(l.teacher, Some(ModelRef::teacher()), "{at}");
        assert_eq!(grams(stage1(&p, at)), pairs, "{at}");
        assert_eq!(stage1(&p, at).trains, up_to(deepest), "{at}");
    }
    assert!(p
        .step(&ModelRef("forward/gram-direct/SVGG17".into()))
        .is_none());
    assert!(p
        .step(&ModelRef("backward/gram-direct/SVGG5B".into()))
        .is_none());
}

#[test]
fn kd_and_scratch() {
    let p = plan();
    let l = step(&p, "backward/kd/SVGG11B");
    assert_eq!(l.teacher, Some(ModelRef("backward/kd/SVGG14B".into())));
    assert_eq!(stage1(&p, "backward/kd/SVGG11B").loss, LossSpec::Hint);
    let s2 = &l.stages[1];
    assert_eq!(
        s2.loss,
        LossSpec::Kd {
            temperature: 4.0,
            alpha: 0.9
        }
    );
    assert!(s2.teacher_logits && s2.labels);
    assert_eq!(s2.monitor, Monitor::Accuracy);
    let l = step(&p, "forward/scratch/SVGG8");
    assert_eq!(l.teacher, None);
    assert_eq!(l.init.from, ModelRef::teacher());
    assert_eq!(l.stages.len(), 1);
    assert_eq!(l.init.note, "Scratch init from VGG19; K3, K4, K5, FC1 new");

    // `[method.kd]` settings: VGG19 as teacher makes it single-stage from the Scratch init,
    // and the stage-2 loss can be any weighted sum (here CE + DKD).
    let p = Plan::build(&config(
        r#"
[method.kd]
teacher = "vgg19"
temperature = 2.0
alpha = 0.5
[method.pyramid.stage2]
loss = { kind = "sum", terms = [ { weight = 1.0, loss = { kind = "cross_entropy" } }, { weight = 1.0, loss = { kind = "dkd", alpha = 1.0, beta = 8.0, temperature = 4.0 } } ] }
"#,
    ))
    .unwrap();
    let l = step(&p, "forward/kd/SVGG14");
    assert_eq!(l.teacher, Some(ModelRef::teacher()));
    assert_eq!(l.stages.len(), 1);
    assert_eq!(
        l.stages[0].loss,
        LossSpec::Kd {
            temperature: 2.0,
            alpha: 0.5
        }
    );
    let s2 = &step(&p, "forward/pyramid/SVGG14").stages[1];
    assert!(s2.teacher_logits && s2.labels);
    assert_eq!(s2.loss.describe(), "1·cross_entropy + 1·dkd(α=1, β=8, T=4)");
}

#[test]
fn the_dry_run_text_names_every_chain_stage_and_tap() {
    let text = plan().to_text();
    for needle in [
        "forward / Pyramid Gram (pyramid-gram):",
        "  SVGG17   – (no result: the head is the compressed block, and a Gram pair needs a conv block (docs/method.md §5.3))",
        "G(B4, K5.conv) vs G(B4, B5.conv5_4)",
        "stage 1: loss hint, trains up to and including B3.conv3_3 + regressor [pool, conv(256→512, no ReLU)]",
        "(B3.conv3_3 vs B4.conv4_2)",
        "stage 1: loss logit_mse, trains all; taps student [logits] teacher [logits]",
        "stage 2: loss kd(T=4, α=0.9), trains all",
        "backward / Gram Direct (gram-direct):",
        "init: Scratch init from forward/pyramid/SVGG17; K4, K5 new",
    ] {
        assert!(text.contains(needle), "missing `{needle}` in:\n{text}");
    }
}

#[test]
fn every_problem_is_reported_before_anything_trains() {
    let cfg = config_with(
        "levels = [1, 3]",
        r#"
[method.pyramid.stage1]
loss = { kind = "attention_transfer", beta = 1000.0 }
[method.scratch.scratch]
optimizer = { kind = "adam", lr = -0.001 }
[overrides.SVGG17B.stage2]
schedule = { kind = "plateau", mode = "min", stop = "stage2" }
"#,
    );
    let started = std::time::Instant::now();
    let err = Plan::build(&cfg).unwrap_err().to_string();
    assert!(started.elapsed().as_secs_f64() < 1.0);
    for needle in [
        // AT needs feature maps; at SVGG17 the matched output is the logits.
        "[forward/pyramid/SVGG17 stage1] SVGG17 FC1 vs teacher FC3: invalid loss spec: attention_transfer needs feature maps",
        // A gap in the chain.
        "levels = [1, 3]: pyramid SVGG11 starts from pyramid SVGG14, which is not in levels; add level 2",
        // A bad lr in a stage that would run late.
        "[forward/scratch/SVGG17 scratch] optimizer: invalid config: lr must be finite and >= 0, got -0.001",
        // A schedule mode that contradicts the loss.
        "[backward/pyramid/SVGG17B stage2]",
    ] {
        assert!(err.contains(needle), "missing `{needle}` in:\n{err}");
    }
    assert!(err.contains("contradicts the loss"), "{err}");

    // Gram where the level has no pair, and a label loss fed unlabeled images.
    let err = Plan::build(&config_with(
        r#"methods = ["pyramid"]"#,
        r#"
[method.pyramid.stage1]
loss = { kind = "gram" }
"#,
    ))
    .map(|_| ())
    .unwrap_err()
    .to_string();
    assert!(
        err.contains(
            "[forward/pyramid/SVGG17 stage1] loss `gram` reads Gram pairs, and SVGG17 has none"
        ),
        "{err}"
    );
    let err = ExperimentConfig::from_toml(
        r#"
methods = ["hinton", "nonsense"]
[data]
dataset = "stl10"
[teacher]
source = "train"
[teacher.recipe]
schedule = { kind = "plateau", stop = "single_stage" }
"#,
    )
    .unwrap_err()
    .to_string();
    assert!(err.contains("methods[1]: unknown method `nonsense`; known: scratch, pyramid, pyramid-gram, pyramid-logits, hinton, fitnet, gram-direct, kd"), "{err}");
    let err = ExperimentConfig::from_toml(
        r#"
[data]
dataset = "stl10"
[teacher]
source = "train"
[teacher.recipe]
schedule = { kind = "plateau", stop = "single_stage" }
[stage1]
loss = { kind = "hint" }
schedule = { kind = "plateau", stop = "stage1" }
"#,
    )
    .unwrap_err()
    .to_string();
    assert!(
        err.contains("[stage1] loss = `hint`: a stage's loss comes from its method"),
        "{err}"
    );
}

#[test]
fn a_logit_loss_in_stage_1_trains_every_parameter() {
    // docs/method.md §7.4: matching logits reaches, and trains, the whole network, even when the
    // method's own hint would stop at the compressed block.
    let p = Plan::build(&config_with(
        r#"methods = ["pyramid"]"#,
        r#"
[method.pyramid.stage1]
loss = { kind = "logit_mse" }
"#,
    ))
    .unwrap();
    let s = stage1(&p, "forward/pyramid/SVGG11");
    assert_eq!(s.loss, LossSpec::LogitMse);
    assert_eq!(s.trains, TrainSet::All);
    assert!(s.features.is_none(), "a logit loss taps no feature map");
    // The label stage with `freeze_inherited` still stops at the compressed block (§13 B1).
    let p = Plan::build(&config_with(
        r#"methods = ["pyramid"]"#,
        r#"
[method.pyramid.stage2]
freeze_inherited = true
"#,
    ))
    .unwrap();
    assert_eq!(
        step(&p, "forward/pyramid/SVGG11").stages[1].trains,
        up_to("K4")
    );
}

/// The whole `--dry-run` text of every method at paper width on STL10, pinned line for line.
/// Each line was checked against the method's tables (docs/method.md; the paper's §3.4/§4.4
/// parameter counts, §3.3/§4.3 matched outputs, §5.3 Gram pairs, §6 FitNet layers, §7). After
/// an intended change, regenerate with `PYRAMID_BLESS=1 cargo test -p pyramid --test plan`
/// and review the diff.
#[test]
fn the_printed_plan_of_every_method_is_pinned() {
    let cfg = ExperimentConfig::from_toml(&format!(
        r#"
name = "all-methods"
methods = {ALL}
[data]
dataset = "stl10"
[teacher]
source = "train"
[teacher.recipe]
schedule = {{ kind = "plateau", stop = "single_stage" }}
"#
    ))
    .unwrap();
    let text = Plan::build(&cfg).unwrap().to_text();
    let golden =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/dry-run-all-methods.txt");
    if std::env::var_os("PYRAMID_BLESS").is_some() {
        std::fs::write(&golden, &text).unwrap();
    }
    let expected = std::fs::read_to_string(&golden).unwrap();
    for (i, (got, want)) in text.lines().zip(expected.lines()).enumerate() {
        assert_eq!(got, want, "line {} of {}", i + 1, golden.display());
    }
    assert_eq!(text.lines().count(), expected.lines().count());
}
