//! Pins every number of docs/method.md §14 that the structure determines: parameter counts for STL10
//! and CIFAR-100, conv/FC counts, block output shapes at 96×96, stage-1 matched shapes and MACs.

use pyramid_models::{step_of, BlockKind, ModelId, ModelOptions, ModelSpec, Role, Scheme};

fn spec(name: &str, classes: usize) -> ModelSpec {
    let id = ModelId::parse(name, Scheme::Forward).unwrap();
    ModelSpec::of(id, ModelOptions::default().with_classes(classes)).unwrap()
}

// docs/method.md §14 items 3 and 4.
const COUNTS: [(&str, usize, usize); 11] = [
    ("VGG19", 30_517_834, 30_564_004),
    ("SVGG17", 20_070_474, 20_485_284),
    ("SVGG14", 12_991_050, 13_405_860),
    ("SVGG11", 5_911_626, 6_326_436),
    ("SVGG8", 4_141_386, 4_556_196),
    ("SVGG5", 3_956_874, 4_371_684),
    ("SVGG17B", 30_333_322, 30_379_492),
    ("SVGG14B", 28_563_082, 28_609_252),
    ("SVGG11B", 21_483_658, 21_529_828),
    ("SVGG8B", 14_404_234, 14_450_404),
    ("SVGG5B", 3_956_874, 4_371_684),
];

#[test]
fn parameter_counts_match_method_14_3_and_14_4() {
    for (name, stl10, cifar100) in COUNTS {
        assert_eq!(spec(name, 10).num_params(), stl10, "{name} STL10");
        assert_eq!(spec(name, 100).num_params(), cifar100, "{name} CIFAR-100");
    }
}

#[test]
fn conv_and_fc_counts_match_method_14_5() {
    let expected = [
        ("VGG19", 16, 3),
        ("SVGG17", 16, 1),
        ("SVGG14", 13, 1),
        ("SVGG11", 10, 1),
        ("SVGG8", 7, 1),
        ("SVGG5", 5, 1),
        ("SVGG17B", 14, 3),
        ("SVGG14B", 11, 3),
        ("SVGG11B", 8, 3),
        ("SVGG8B", 5, 3),
        ("SVGG5B", 5, 1),
    ];
    for (name, convs, fcs) in expected {
        let s = spec(name, 10);
        assert_eq!((s.conv_count(), s.fc_count()), (convs, fcs), "{name}");
    }
}

#[test]
fn component_counts_match_method_14_5() {
    let vgg = spec("VGG19", 10);
    let conv: usize = vgg
        .summaries()
        .iter()
        .filter(|b| b.name != "FC3")
        .map(|b| b.params)
        .sum();
    assert_eq!(conv, 20_024_384);
    let head = |name: &str, classes: usize, block: &str| {
        spec(name, classes)
            .summaries()
            .into_iter()
            .find(|b| b.name == block)
            .unwrap()
            .params
    };
    assert_eq!(head("VGG19", 10, "FC3"), 10_493_450);
    assert_eq!(head("VGG19", 100, "FC3"), 10_539_620);
    assert_eq!(head("SVGG17", 10, "FC1"), 46_090);
    assert_eq!(head("SVGG17", 100, "FC1"), 460_900);
    // §2.1 per-block counts (C11 + B1 = the paper's B1).
    let b = |n: &str| head("VGG19", 10, n);
    assert_eq!(b("C11") + b("B1"), 38_720);
    assert_eq!(b("B2"), 221_440);
    assert_eq!(b("B3"), 2_065_408);
    assert_eq!(b("B4"), 8_259_584);
    assert_eq!(b("B5"), 9_439_232);
    // §2.3 compressed blocks.
    assert_eq!(head("SVGG5", 10, "K12"), 73_856);
    assert_eq!(head("SVGG5", 10, "K3"), 295_168);
    assert_eq!(head("SVGG5", 10, "K4"), 1_180_160);
    assert_eq!(head("SVGG5", 10, "K5"), 2_359_808);
}

fn shapes(name: &str) -> Vec<(String, Vec<usize>)> {
    spec(name, 10)
        .summaries()
        .into_iter()
        .map(|b| (b.name, b.out_shape))
        .collect()
}

fn sh(v: &[(&str, &[usize])]) -> Vec<(String, Vec<usize>)> {
    v.iter().map(|(n, s)| (n.to_string(), s.to_vec())).collect()
}

#[test]
fn block_output_shapes_at_96_match_method_3_2_and_4_2() {
    let c11: &[usize] = &[64, 96, 96];
    let b1: &[usize] = &[64, 48, 48];
    let b2: &[usize] = &[128, 24, 24];
    let b3: &[usize] = &[256, 12, 12];
    let b4: &[usize] = &[512, 6, 6];
    let b5: &[usize] = &[512, 3, 3];
    let n: &[usize] = &[10];
    assert_eq!(
        shapes("VGG19"),
        sh(&[
            ("C11", c11),
            ("B1", b1),
            ("B2", b2),
            ("B3", b3),
            ("B4", b4),
            ("B5", b5),
            ("FC3", n)
        ])
    );
    assert_eq!(
        shapes("SVGG17"),
        sh(&[
            ("C11", c11),
            ("B1", b1),
            ("B2", b2),
            ("B3", b3),
            ("B4", b4),
            ("B5", b5),
            ("FC1", n)
        ])
    );
    assert_eq!(
        shapes("SVGG14"),
        sh(&[
            ("C11", c11),
            ("B1", b1),
            ("B2", b2),
            ("B3", b3),
            ("B4", b4),
            ("K5", b5),
            ("FC1", n)
        ])
    );
    assert_eq!(
        shapes("SVGG11"),
        sh(&[
            ("C11", c11),
            ("B1", b1),
            ("B2", b2),
            ("B3", b3),
            ("K4", b4),
            ("K5", b5),
            ("FC1", n)
        ])
    );
    assert_eq!(
        shapes("SVGG8"),
        sh(&[
            ("C11", c11),
            ("B1", b1),
            ("B2", b2),
            ("K3", b3),
            ("K4", b4),
            ("K5", b5),
            ("FC1", n)
        ])
    );
    assert_eq!(
        shapes("SVGG5"),
        sh(&[
            ("C11", c11),
            ("K12", b2),
            ("K3", b3),
            ("K4", b4),
            ("K5", b5),
            ("FC1", n)
        ])
    );
    assert_eq!(
        shapes("SVGG17B"),
        sh(&[
            ("C11", c11),
            ("K12", b2),
            ("B3", b3),
            ("B4", b4),
            ("B5", b5),
            ("FC3", n)
        ])
    );
    assert_eq!(
        shapes("SVGG14B"),
        sh(&[
            ("C11", c11),
            ("K12", b2),
            ("K3", b3),
            ("B4", b4),
            ("B5", b5),
            ("FC3", n)
        ])
    );
    assert_eq!(
        shapes("SVGG11B"),
        sh(&[
            ("C11", c11),
            ("K12", b2),
            ("K3", b3),
            ("K4", b4),
            ("B5", b5),
            ("FC3", n)
        ])
    );
    assert_eq!(
        shapes("SVGG8B"),
        sh(&[
            ("C11", c11),
            ("K12", b2),
            ("K3", b3),
            ("K4", b4),
            ("K5", b5),
            ("FC3", n)
        ])
    );
    assert_eq!(
        shapes("SVGG5B"),
        shapes("SVGG5"),
        "§14 item 6: SVGG5 and SVGG5B are identical"
    );
}

#[test]
fn stage1_matched_shapes_match_method_14_7() {
    let expected: [(&str, &[usize]); 10] = [
        ("SVGG17", &[10]),
        ("SVGG14", &[512, 3, 3]),
        ("SVGG11", &[512, 6, 6]),
        ("SVGG8", &[256, 12, 12]),
        ("SVGG5", &[128, 24, 24]),
        ("SVGG17B", &[128, 24, 24]),
        ("SVGG14B", &[256, 12, 12]),
        ("SVGG11B", &[512, 6, 6]),
        ("SVGG8B", &[512, 3, 3]),
        ("SVGG5B", &[10]),
    ];
    for (name, shape) in expected {
        let student = spec(name, 10);
        let step = step_of(student.id()).unwrap();
        let teacher_id = student.id().teacher().unwrap();
        let teacher = ModelSpec::of(teacher_id, ModelOptions::default()).unwrap();
        let s = student.block_out_shape(step.with).unwrap();
        let t = teacher
            .block_out_shape(step.matched_teacher_block())
            .unwrap();
        assert_eq!(s, shape, "{name} student side");
        assert_eq!(t, shape, "{name} teacher side ({teacher_id})");
    }
}

#[test]
fn teachers_follow_the_chain() {
    let t = |n: &str| {
        ModelId::parse(n, Scheme::Forward)
            .unwrap()
            .teacher()
            .unwrap()
            .name()
    };
    assert_eq!(t("SVGG17"), "VGG19");
    assert_eq!(t("SVGG5"), "SVGG8");
    assert_eq!(t("SVGG17B"), "VGG19");
    assert_eq!(t("SVGG14B"), "SVGG17B");
    assert_eq!(t("SVGG5B"), "SVGG8B");
}

#[test]
fn macs_match_method_3_4_and_4_4() {
    // Approximate multiply-accumulates per 96×96 image, as the spec rounds them (GMACs, 2 decimals).
    let expected = [
        ("VGG19", 3.59),
        ("SVGG17", 3.58),
        ("SVGG14", 3.33),
        ("SVGG11", 2.31),
        ("SVGG8", 1.29),
        ("SVGG5", 0.61),
        ("SVGG17B", 2.91),
        ("SVGG14B", 1.90),
        ("SVGG11B", 0.88),
        ("SVGG8B", 0.62),
        ("SVGG5B", 0.61),
    ];
    for (name, gmacs) in expected {
        let m = spec(name, 10).macs() as f64 / 1e9;
        assert!(
            (m - gmacs).abs() < 0.006,
            "{name}: {m:.4} GMACs, spec {gmacs}"
        );
    }
}

#[test]
fn roles_and_compressed_blocks() {
    let s = spec("SVGG11", 10);
    assert_eq!(s.compressed_block(), Some(BlockKind::K4));
    let roles: Vec<Role> = s.blocks.iter().map(|b| b.role).collect();
    assert_eq!(
        roles,
        [
            Role::Inherited,
            Role::Inherited,
            Role::Inherited,
            Role::Inherited,
            Role::Compressed,
            Role::Frozen,
            Role::Head
        ]
    );
    assert_eq!(spec("VGG19", 10).compressed_block(), None);
}

#[test]
fn options_are_validated_with_the_field_named() {
    let bad = |o: ModelOptions| ModelSpec::of(ModelId::VGG19, o).unwrap_err().to_string();
    assert!(bad(ModelOptions::default().with_input_size(40)).contains("input_size = 40"));
    assert!(bad(ModelOptions::default().with_width_div(3)).contains("width_div = 3"));
    assert!(bad(ModelOptions::default().with_in_channels(2)).contains("in_channels = 2"));
    assert!(ModelId::parse("SVGG13", Scheme::Forward)
        .unwrap_err()
        .to_string()
        .contains("SVGG13"));
}

#[test]
fn names_parse_both_ways() {
    for id in ModelId::all() {
        assert_eq!(ModelId::parse(&id.name(), Scheme::Forward).unwrap(), id);
    }
    assert_eq!(
        ModelId::parse("svgg14", Scheme::Backward).unwrap().name(),
        "SVGG14B"
    );
    assert_eq!(
        ModelId::parse("SVGG14_BACKWARD", Scheme::Forward)
            .unwrap()
            .name(),
        "SVGG14B"
    );
    assert_eq!(ModelId::all().len(), 11);
}

#[test]
fn small_options_scale_every_width() {
    let o = ModelOptions::default()
        .with_width_div(8)
        .with_input_size(32)
        .with_in_channels(1);
    let s = ModelSpec::of(ModelId::VGG19, o).unwrap();
    let sum = s.summaries();
    assert_eq!(sum[0].out_shape, vec![8, 32, 32]);
    assert_eq!(sum[5].out_shape, vec![64, 1, 1]);
    assert_eq!(sum[6].out_shape, vec![10]);
}
