//! Figures of a run (PNG + SVG) from a fixture `Results` and metrics logs, and the latency
//! measurement of a tiny model.

use std::path::Path;

use candle_core::Device;
use pyramid::figures::{self, LatencyPoint, LatencySetting};
use pyramid::latency::{self, Budget};
use pyramid::{report, Results};
use pyramid_models::{Model, ModelConfig, ModelId, ModelOptions};

fn latency(seconds: f64) -> serde_json::Value {
    serde_json::json!({
        "device": "cpu", "input_size": 96, "batch_size": 32, "repeats": 5,
        "median_batch_seconds": seconds * 32.0 / 13000.0,
        "images_per_sec": 13000.0 / seconds, "seconds_per_13000": seconds
    })
}

fn level(
    model: &str,
    scheme: &str,
    method: &str,
    lvl: usize,
    params: usize,
    acc: f64,
) -> serde_json::Value {
    serde_json::json!({
        "model": model, "scheme": scheme, "method": method, "level": lvl,
        "params": params, "macs": params as u64 * 40, "convs": 5, "fcs": 1,
        "best_test_acc": acc, "last_test_acc": acc - 1.0, "stages": [],
        "inherited_params": 0, "fresh_params": params, "wall_seconds": 1.0,
        "checkpoint": "final.safetensors",
        "latency": latency(20.0 - 3.0 * lvl as f64),
    })
}

/// A stage-1 hint stage (no accuracy, a large loss) then a stage-2 classification stage.
fn write_metrics(dir: &Path, two_stages: bool) {
    std::fs::create_dir_all(dir).unwrap();
    let mut lines = Vec::new();
    let row = |stage: u32, epoch: u64, loss: Option<f64>, acc: Option<f64>| {
        serde_json::json!({
            "stage": stage, "epoch": epoch, "train_loss": loss, "train_acc": null,
            "train_images": 100, "test_loss": 1.0, "test_acc": acc, "lr": 1e-3,
            "improved": true, "cut": false
        })
        .to_string()
    };
    if two_stages {
        lines.push(row(1, 0, None, None));
        lines.push(row(1, 1, Some(5000.0), None));
        lines.push(row(1, 2, Some(900.0), None));
    }
    lines.push(row(2, 0, None, Some(30.0)));
    lines.push(row(2, 1, Some(1.2), Some(60.0)));
    lines.push(row(2, 2, Some(0.7), Some(70.0)));
    std::fs::write(dir.join("metrics.jsonl"), lines.join("\n") + "\n").unwrap();
}

fn fixture(out: &Path) -> Results {
    let params = [20_070_474, 12_991_050, 5_911_626];
    let mut levels = Vec::new();
    for (i, p) in params.iter().enumerate() {
        let name = ["SVGG17", "SVGG14", "SVGG11"][i];
        for (method, acc) in [("scratch", 70.0 - i as f64), ("pyramid", 75.0 - i as f64)] {
            levels.push(level(name, "forward", method, i + 1, *p, acc));
            write_metrics(
                &out.join("forward").join(method).join(name),
                method == "pyramid",
            );
        }
    }
    write_metrics(&out.join("teacher"), false);
    let mut teacher = level("VGG19", "-", "teacher", 0, 30_517_834, 80.0);
    teacher["latency"] = latency(17.89);
    serde_json::from_value(serde_json::json!({
        "name": "fixture", "dataset": "stl10", "seed": 0, "device": "cpu",
        "model_options": {"classes": 10, "input_size": 96, "in_channels": 3, "width_div": 1, "batch_norm": false},
        "train_images": 100, "test_images": 100, "methods": ["scratch", "pyramid"],
        "teacher": teacher, "levels": levels, "wall_seconds": 1.0
    }))
    .unwrap()
}

fn png_size(path: &Path) -> (u32, u32) {
    let decoder = png::Decoder::new(std::io::BufReader::new(std::fs::File::open(path).unwrap()));
    let reader = decoder.read_info().unwrap();
    let info = reader.info();
    (info.width, info.height)
}

#[test]
fn a_run_gets_every_figure_as_png_and_svg() {
    let dir = tempfile::tempdir().unwrap();
    let r = fixture(dir.path());
    let made = figures::render(dir.path(), &r).unwrap();
    let names: Vec<&str> = made.iter().map(|f| f.name.as_str()).collect();
    assert_eq!(
        names,
        [
            "figure3",
            "accuracy-params",
            "accuracy-macs",
            "curves-teacher",
            "curves-forward-scratch",
            "curves-forward-pyramid"
        ]
    );
    // Sizes: one 900×600 panel (+44 px title); one 960×640 panel; teacher 2 × 520×380;
    // a chain of three levels: 3 columns × 2 rows of 400×340.
    let sizes = [
        (900, 644),
        (960, 684),
        (960, 684),
        (1040, 424),
        (1200, 724),
        (1200, 724),
    ];
    for (f, size) in made.iter().zip(sizes) {
        assert_eq!(f.png, dir.path().join(format!("figures/{}.png", f.name)));
        assert_eq!(png_size(&f.png), size, "{}", f.name);
        let svg = std::fs::read_to_string(&f.svg).unwrap();
        assert!(svg.starts_with("<svg"), "{}", f.name);
    }
    let svg = |name: &str| {
        std::fs::read_to_string(dir.path().join(format!("figures/{name}.svg"))).unwrap()
    };
    let fig3 = svg("figure3");
    for label in [
        "Number of layers",
        "Seconds to classify 13,000 96×96 images",
        "forward (measured)",
        "forward (paper, GPU)",
        "backward (paper, GPU)",
    ] {
        assert!(fig3.contains(label), "figure3.svg lacks {label:?}");
    }
    // Only forward levels were measured: no measured backward line.
    assert!(!fig3.contains("backward (measured)"));
    let acc = svg("accuracy-params");
    for label in [
        "Parameters",
        "Test accuracy (%)",
        "Scratch, forward",
        "Pyramid 2-stages, forward",
        "VGG19 (teacher)",
    ] {
        assert!(acc.contains(label), "accuracy-params.svg lacks {label:?}");
    }
    assert!(svg("accuracy-macs").contains("MACs (multiply-accumulates per image"));
    let curves = svg("curves-forward-pyramid");
    for label in [
        "Test accuracy (%)",
        "Train loss (log scale)",
        "Epoch (stages in sequence)",
        "stage 2",
        "SVGG11",
    ] {
        assert!(curves.contains(label), "curves svg lacks {label:?}");
    }
    // Scratch levels have one stage: no boundary, and a loss within a decade stays linear.
    let scratch = svg("curves-forward-scratch");
    assert!(!scratch.contains("stage 2") && scratch.contains("\nTrain loss\n"));

    let section = report::figures_section(&made);
    assert!(section.starts_with("\n## Figures\n"));
    assert!(section.contains("![Figure 3: inference time per level](figures/figure3.png)"));
    assert!(section.contains("[SVG](figures/curves-teacher.svg)"));
    assert_eq!(report::figures_section(&[]), "");
}

#[test]
fn figure3_shows_the_paper_only_at_its_setting() {
    let dir = tempfile::tempdir().unwrap();
    let points: Vec<LatencyPoint> = [("-", 19, 2.0), ("backward", 17, 1.5), ("backward", 5, 0.5)]
        .iter()
        .map(|&(scheme, depth, s)| LatencyPoint {
            scheme: scheme.into(),
            depth,
            seconds_per_13000: s,
        })
        .collect();
    let setting = LatencySetting {
        device: "cpu".into(),
        input_size: 32,
        width_div: 16,
        batch_size: 8,
    };
    let f = figures::figure3(dir.path(), &points, &setting)
        .unwrap()
        .unwrap();
    let svg = std::fs::read_to_string(&f.svg).unwrap();
    assert!(svg.contains("backward (measured)") && !svg.contains("paper"));
    assert!(svg.contains("Seconds to classify 13,000 32×32 images"));
    assert_eq!(png_size(&f.png), (900, 644));
    assert!(figures::figure3(dir.path(), &[], &setting)
        .unwrap()
        .is_none());
}

#[test]
fn measure_times_a_tiny_model() {
    let options = ModelOptions {
        input_size: 32,
        width_div: 16,
        ..ModelOptions::default()
    };
    let model = Model::new(ModelConfig::new(ModelId::VGG19, options), 0, &Device::Cpu).unwrap();
    let budget = Budget {
        batch: 4,
        warmup: 1,
        repeats: 3,
    };
    let l = latency::measure(&model, &budget).unwrap();
    assert_eq!(
        (l.device.as_str(), l.input_size, l.batch_size, l.repeats),
        ("cpu", 32, 4, 3)
    );
    assert!(l.median_batch_seconds.is_finite() && l.median_batch_seconds > 0.0);
    assert!((l.images_per_sec - 4.0 / l.median_batch_seconds).abs() < 1e-9 * l.images_per_sec);
    assert!((l.seconds_per_13000 - 13000.0 / l.images_per_sec).abs() < 1e-9 * l.seconds_per_13000);
    let empty = Budget {
        repeats: 0,
        ..budget
    };
    let e = latency::measure(&model, &empty).unwrap_err().to_string();
    assert!(e.contains("must be > 0"), "{e}");
}
