//! `pyramid inspect` end to end.

use std::process::Command;

fn pyramid(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_pyramid"))
        .args(args)
        .output()
        .unwrap()
}

#[test]
fn inspect_all_json_reports_the_paper_counts() {
    let out = pyramid(&["inspect", "--all", "--json", "--dataset", "stl10"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let arr = v.as_array().unwrap();
    assert_eq!(arr.len(), 11);
    let expected = [
        ("VGG19", 30_517_834u64, 16u64, 3u64),
        ("SVGG17", 20_070_474, 16, 1),
        ("SVGG14", 12_991_050, 13, 1),
        ("SVGG11", 5_911_626, 10, 1),
        ("SVGG8", 4_141_386, 7, 1),
        ("SVGG5", 3_956_874, 5, 1),
        ("SVGG17B", 30_333_322, 14, 3),
        ("SVGG14B", 28_563_082, 11, 3),
        ("SVGG11B", 21_483_658, 8, 3),
        ("SVGG8B", 14_404_234, 5, 3),
        ("SVGG5B", 3_956_874, 5, 1),
    ];
    for (name, params, convs, fcs) in expected {
        let m = arr.iter().find(|m| m["model"] == name).unwrap();
        assert_eq!(m["params"].as_u64(), Some(params), "{name}");
        assert_eq!(m["convs"].as_u64(), Some(convs), "{name}");
        assert_eq!(m["fcs"].as_u64(), Some(fcs), "{name}");
        assert!(m["macs"].as_u64().unwrap() > 0);
        for key in ["scheme", "blocks"] {
            assert!(m.get(key).is_some(), "{name} lacks {key}");
        }
        for b in m["blocks"].as_array().unwrap() {
            assert!(b["name"].is_string() && b["role"].is_string() && b["out_shape"].is_array());
        }
    }
}

#[test]
fn inspect_one_model_with_options() {
    let out = pyramid(&[
        "inspect",
        "svgg11",
        "--scheme",
        "backward",
        "--dataset",
        "cifar100",
        "--json",
    ]);
    assert!(out.status.success());
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["model"], "SVGG11B");
    assert_eq!(v["params"], 21_529_828);
    let out = pyramid(&["inspect", "SVGG5", "--input", "32", "--width-div", "8"]);
    assert!(out.status.success());
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(
        text.contains("K12") && text.contains("compressed"),
        "{text}"
    );
}

#[test]
fn inspect_rejects_bad_input_with_a_clear_message() {
    let out = pyramid(&["inspect", "SVGG13"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("SVGG13"));
    let out = pyramid(&["inspect", "VGG19", "--input", "50"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("input_size = 50"));
}
