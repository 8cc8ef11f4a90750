//! `pyramid latency` (the paper's Figure 3 on this machine) and `pyramid figures`.

use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::Args;
use pyramid::figures;
use pyramid::latency::{self, Budget, LatencyReport};
use pyramid::{report, Results};
use pyramid_models::ModelOptions;

#[derive(Args)]
pub struct LatencyArgs {
    /// Square input size in pixels (a multiple of 32); the paper's Figure 3 is at 96.
    #[arg(long, default_value_t = 96)]
    input_size: usize,
    /// Divides every conv width and the FC hidden widths (1 = the paper's models).
    #[arg(long, default_value_t = 1)]
    width_div: usize,
    /// Input channels: 3 (RGB) or 1 (grayscale).
    #[arg(long, default_value_t = 3)]
    in_channels: usize,
    /// Number of classes (the size of the logits).
    #[arg(long, default_value_t = 10)]
    classes: usize,
    /// Batch norm after every conv (off in the paper).
    #[arg(long)]
    batch_norm: bool,
    /// Images per timed batch.
    #[arg(long, default_value_t = 32)]
    batch: usize,
    /// Untimed batches before the timed ones (caches, allocator, CUDA kernels).
    #[arg(long, default_value_t = 2)]
    warmup: usize,
    /// Timed batches per model; the median is reported.
    #[arg(long, default_value_t = 10)]
    repeats: usize,
    /// cpu, cuda or cuda:N.
    #[arg(long, default_value = "cpu")]
    device: String,
    /// Seed of the fresh weights (the timing does not depend on their values).
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Print the measurement as JSON instead of a table.
    #[arg(long)]
    json: bool,
    /// Also write the measurement as JSON to this file (atomically).
    #[arg(long)]
    out: Option<PathBuf>,
    /// Write Figure 3 (figure3.png and figure3.svg) of the measurement into this folder.
    #[arg(long)]
    plot: Option<PathBuf>,
}

/// The terminal table of a measurement.
pub fn table(r: &LatencyReport) -> String {
    let o = &r.options;
    let first = r.models.first().map(|m| &m.latency);
    let mut s = format!(
        "{}×{}×{} input, width ÷{}{}, batch {}, {} warm-up + {} timed batches, device {}\n",
        o.in_channels,
        o.input_size,
        o.input_size,
        o.width_div,
        if o.batch_norm { ", batch norm" } else { "" },
        first.map_or(0, |l| l.batch_size),
        r.warmup,
        first.map_or(0, |l| l.repeats),
        first.map_or("?", |l| l.device.as_str()),
    );
    s.push_str(&format!(
        "{:<8} {:>12} {:>10} {:>12} {:>10} {:>14} {:>9}\n",
        "model", "params", "MMACs", "ms/batch", "images/s", "s/13k images", "speed-up"
    ));
    for m in &r.models {
        s.push_str(&format!(
            "{:<8} {:>12} {:>10.1} {:>12.3} {:>10.1} {:>14.3} {:>8.2}×\n",
            m.model,
            m.params,
            m.macs as f64 / 1e6,
            m.latency.median_batch_seconds * 1e3,
            m.latency.images_per_sec,
            m.latency.seconds_per_13000,
            m.speedup_vs_vgg19
        ));
    }
    s
}

pub fn run(a: LatencyArgs) -> Result<()> {
    let device = pyramid::device_from_str(&a.device)?;
    let options = ModelOptions {
        classes: a.classes,
        input_size: a.input_size,
        in_channels: a.in_channels,
        width_div: a.width_div,
        batch_norm: a.batch_norm,
        ..ModelOptions::default()
    };
    let budget = Budget {
        batch: a.batch,
        warmup: a.warmup,
        repeats: a.repeats,
    };
    let r = latency::measure_all(&options, &budget, &device, a.seed)?;
    let json = serde_json::to_string_pretty(&r)?;
    if let Some(path) = &a.out {
        pyramid_fsio::write_atomic(path, format!("{json}\n").as_bytes())?;
    }
    if let Some(dir) = &a.plot {
        let (points, setting) = figures::latency_points(&r);
        if let Some(f) = figures::figure3(dir, &points, &setting)? {
            eprintln!("wrote {} and {}", f.png.display(), f.svg.display());
        }
    }
    if a.json {
        println!("{json}");
    } else {
        print!("{}", table(&r));
    }
    Ok(())
}

#[derive(Args)]
pub struct FiguresArgs {
    /// A run directory (with its results.json).
    run_dir: PathBuf,
    /// A `pyramid latency --out` (or `--json`) file: Figure 3 from it instead of the
    /// latencies the run recorded.
    #[arg(long)]
    latency: Option<PathBuf>,
}

/// Redraws a run directory's figures and rewrites its report.md with them.
pub fn figures(a: FiguresArgs) -> Result<()> {
    let path = a.run_dir.join("results.json");
    let text = std::fs::read_to_string(&path)
        .with_context(|| format!("reading {} (is it a run directory?)", path.display()))?;
    let r: Results =
        serde_json::from_str(&text).with_context(|| format!("parsing {}", path.display()))?;
    let mut made = figures::render(&a.run_dir, &r)?;
    if let Some(file) = &a.latency {
        let text =
            std::fs::read_to_string(file).with_context(|| format!("reading {}", file.display()))?;
        let lr: LatencyReport = serde_json::from_str(&text).with_context(|| {
            format!(
                "parsing {} (expected the JSON of `pyramid latency --out`)",
                file.display()
            )
        })?;
        let (points, setting) = figures::latency_points(&lr);
        if let Some(f) = figures::figure3(&a.run_dir.join("figures"), &points, &setting)? {
            made.retain(|g| g.name != f.name);
            made.insert(0, f);
        }
    }
    let report_md = report::markdown(&r) + &report::figures_section(&made);
    pyramid_fsio::write_atomic(a.run_dir.join("report.md"), report_md.as_bytes())?;
    for f in &made {
        println!("{}", f.png.display());
    }
    println!("{}", a.run_dir.join("report.md").display());
    Ok(())
}
