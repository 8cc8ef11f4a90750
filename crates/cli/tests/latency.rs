//! `pyramid latency` and `pyramid figures` end to end, at a tiny size.

use std::process::Command;

fn pyramid(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_pyramid"))
        .args(args)
        .output()
        .unwrap()
}

const TINY: [&str; 11] = [
    "latency",
    "--input-size",
    "32",
    "--width-div",
    "16",
    "--batch",
    "2",
    "--warmup",
    "1",
    "--repeats",
    "2",
];

#[test]
fn latency_json_times_every_model() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("lat.json");
    let plot = dir.path().join("plot");
    let mut args = TINY.to_vec();
    args.extend([
        "--json",
        "--out",
        file.to_str().unwrap(),
        "--plot",
        plot.to_str().unwrap(),
    ]);
    let out = pyramid(&args);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let saved: serde_json::Value = serde_json::from_slice(&std::fs::read(&file).unwrap()).unwrap();
    assert_eq!(v, saved, "--out holds what --json printed");
    assert_eq!(v["options"]["input_size"], 32);
    assert_eq!(v["options"]["width_div"], 16);
    let models = v["models"].as_array().unwrap();
    let names: Vec<&str> = models
        .iter()
        .map(|m| m["model"].as_str().unwrap())
        .collect();
    assert_eq!(
        names,
        [
            "VGG19", "SVGG17", "SVGG14", "SVGG11", "SVGG8", "SVGG5", "SVGG17B", "SVGG14B",
            "SVGG11B", "SVGG8B", "SVGG5B"
        ]
    );
    let depths: Vec<u64> = models
        .iter()
        .map(|m| m["depth"].as_u64().unwrap())
        .collect();
    assert_eq!(depths, [19, 17, 14, 11, 8, 5, 17, 14, 11, 8, 5]);
    let vgg = models[0]["latency"]["seconds_per_13000"].as_f64().unwrap();
    for m in models {
        let l = &m["latency"];
        let med = l["median_batch_seconds"].as_f64().unwrap();
        let ips = l["images_per_sec"].as_f64().unwrap();
        let s13 = l["seconds_per_13000"].as_f64().unwrap();
        assert!(med > 0.0 && med.is_finite(), "{m}");
        assert!((ips - 2.0 / med).abs() <= 1e-9 * ips, "{m}");
        assert!((s13 - 13000.0 / ips).abs() <= 1e-9 * s13, "{m}");
        let speedup = m["speedup_vs_vgg19"].as_f64().unwrap();
        assert!((speedup - vgg / s13).abs() <= 1e-9 * speedup, "{m}");
        assert_eq!(
            (l["batch_size"].as_u64(), l["repeats"].as_u64()),
            (Some(2), Some(2))
        );
    }
    assert_eq!(models[0]["speedup_vs_vgg19"].as_f64(), Some(1.0));
    // SVGG5 and SVGG5B are the same architecture.
    assert_eq!(models[5]["params"], models[10]["params"]);
    assert!(plot.join("figure3.png").exists() && plot.join("figure3.svg").exists());

    // The same file redraws a run directory's Figure 3.
    let run = dir.path().join("run");
    std::fs::create_dir_all(&run).unwrap();
    std::fs::write(
        run.join("results.json"),
        r#"{"name":"empty","dataset":"embedded","seed":0,"device":"cpu","model_options":null,
            "train_images":0,"test_images":0,"teacher":null,"levels":[],"wall_seconds":0.0}"#,
    )
    .unwrap();
    let out = pyramid(&[
        "figures",
        run.to_str().unwrap(),
        "--latency",
        file.to_str().unwrap(),
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(run.join("figures/figure3.png").exists());
    let report = std::fs::read_to_string(run.join("report.md")).unwrap();
    assert!(report.contains("![Figure 3: inference time per level](figures/figure3.png)"));
}

#[test]
fn latency_table_and_bad_options() {
    let out = pyramid(&TINY);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("s/13k images") && text.contains("speed-up"),
        "{text}"
    );
    assert_eq!(text.lines().filter(|l| l.starts_with("SVGG")).count(), 10);

    let mut bad = TINY.to_vec();
    bad[2] = "40"; // not a multiple of 32
    let out = pyramid(&bad);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("40"));

    let out = pyramid(&["figures", "/nonexistent/run"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("/nonexistent/run/results.json"));
}
