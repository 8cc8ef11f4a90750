//! `pyramid-bench resume` (`cargo xtask bench resume`): the cost of the per-epoch resume state.
//!
//! A run rewrites `resume.safetensors` at the end of every epoch: the student's weights, the
//! selected weights (when they differ), the optimiser's buffers and the bookkeeping. This bench
//! builds a model at the given size with Adam state after real training steps, then times the
//! atomic write (fsync included) and the read back, and sets them against the epoch they
//! follow (training steps × batches per epoch).

use std::time::Instant;

use anyhow::{Context, Result};
use candle_core::{Device, Tensor};
use clap::Parser;
use pyramid::resume::{self, LevelProgress};
use pyramid::stage::{StageProgress, StageSnapshot};
use pyramid_models::{Mode, Model, ModelConfig, ModelId, ModelOptions, Scheme};
use pyramid_train::optim::OptimizerConfig;
use pyramid_train::schedule::ScheduleConfig;

#[derive(Parser, Debug)]
#[command(
    name = "pyramid-bench resume",
    about = "Seconds and bytes of the per-epoch resume state"
)]
struct Args {
    /// VGG19, SVGG5, ...
    #[arg(long, default_value = "VGG19")]
    model: String,
    /// Input size (96 = STL10, the paper's width).
    #[arg(long, default_value_t = 96)]
    size: usize,
    /// Width divisor (1 = paper width).
    #[arg(long, default_value_t = 1)]
    width_div: usize,
    /// Training batch size.
    #[arg(long, default_value_t = 32)]
    batch: usize,
    /// Training images per epoch (5,000 = STL10's train split).
    #[arg(long, default_value_t = 5000)]
    epoch_images: usize,
    /// Timed writes (and training steps).
    #[arg(long, default_value_t = 5)]
    repeats: usize,
    /// Folder for the state files (default: a temp folder; put it on the disk runs use).
    #[arg(long)]
    dir: Option<std::path::PathBuf>,
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

pub fn main(args: impl Iterator<Item = std::ffi::OsString>) -> Result<()> {
    let a = Args::parse_from(std::iter::once("pyramid-bench resume".into()).chain(args));
    anyhow::ensure!(
        a.repeats > 0 && a.batch > 0,
        "--repeats and --batch must be > 0"
    );
    let device = Device::Cpu;
    let id = ModelId::parse(&a.model, Scheme::Forward).map_err(|e| anyhow::anyhow!("{e}"))?;
    let options = ModelOptions {
        input_size: a.size,
        width_div: a.width_div,
        ..ModelOptions::default()
    };
    let model = Model::new(ModelConfig::new(id, options.clone()), 0, &device)?;
    let mut opt = OptimizerConfig::default()
        .build(vec![("features".into(), model.params().to_vec())])
        .context("optimiser")?;
    let x = Tensor::randn(0f32, 1.0, (a.batch, 3, a.size, a.size), &device)?;
    let y = Tensor::new(
        (0..a.batch as u32)
            .map(|i| i % options.classes as u32)
            .collect::<Vec<_>>(),
        &device,
    )?;
    let mut step_s = Vec::new();
    let mut rng = pyramid_rng::Rng::new(0);
    for i in 0..=a.repeats {
        let t = Instant::now();
        let logits = model.forward(&x, Mode::Train(&mut rng))?;
        let loss = pyramid_losses::cross_entropy(&logits, &y)?;
        opt.step(&loss.backward()?)?;
        if i > 0 {
            step_s.push(t.elapsed().as_secs_f64());
        }
    }
    let schedule: ScheduleConfig =
        serde_json::from_str(r#"{"kind": "constant", "max_epochs": 100, "mode": "max"}"#)?;
    let progress = StageProgress {
        epoch: 1,
        schedule: schedule.build(opt.lrs())?,
        best_epoch: 0,
        best_metric: 0.0,
        best_test_acc: None,
        last_test_acc: None,
        initial_metric: 0.0,
        metric_moved: true,
        images_seen: a.epoch_images,
        train_seconds: 0.0,
        seconds: 0.0,
    };
    // The worst case: the selected weights differ from the current ones, so both are written.
    let snapshot = StageSnapshot {
        progress: progress.clone(),
        optimizer: opt.state()?,
        best: Some(model.snapshot()),
        adapter: Vec::new(),
    };
    let level = LevelProgress {
        format: pyramid::fingerprint::RUN_FORMAT,
        fingerprint: "bench".into(),
        stage_index: 0,
        completed: Vec::new(),
        stage: Some(progress),
        optimizer: Some(snapshot.optimizer.meta.clone()),
        has_best: true,
        metrics: Vec::new(),
        timings: Vec::new(),
        wall_seconds: 0.0,
    };
    let tmp = tempfile::tempdir_in(a.dir.clone().unwrap_or_else(std::env::temp_dir))?;
    let path = tmp.path().join(resume::FILE);
    let (mut write_s, mut read_s) = (Vec::new(), Vec::new());
    for _ in 0..a.repeats {
        let t = Instant::now();
        resume::save(&path, &level, &model, Some(&snapshot))?;
        write_s.push(t.elapsed().as_secs_f64());
        let t = Instant::now();
        let back = resume::load(&path, &device)?;
        read_s.push(t.elapsed().as_secs_f64());
        anyhow::ensure!(
            back.model.len() == model.snapshot().len(),
            "read back differs"
        );
    }
    let bytes = std::fs::metadata(&path)?.len();
    let step = median(step_s);
    let epoch = step * a.epoch_images.div_ceil(a.batch) as f64;
    let write = median(write_s);
    let threads = rayon_threads();
    println!(
        "resume state of {} ({}×{}, width ÷{}, {} params, Adam), {} threads:",
        id,
        a.size,
        a.size,
        a.width_div,
        model.num_params(),
        threads
    );
    println!(
        "  size {:.1} MB (weights, selected weights, 2 Adam moments)",
        bytes as f64 / 1e6
    );
    println!(
        "  write (atomic, fsync) {:.3} s median of {}; read {:.3} s",
        write,
        a.repeats,
        median(read_s)
    );
    println!(
        "  one epoch of {} images at batch {}: ≈ {:.1} s of training ({:.3} s/step) → the state adds {:.2} % per epoch",
        a.epoch_images,
        a.batch,
        epoch,
        step,
        100.0 * write / epoch
    );
    Ok(())
}

fn rayon_threads() -> usize {
    std::env::var("RAYON_NUM_THREADS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| {
            std::thread::available_parallelism()
                .map(|n| n.get())
                .unwrap_or(1)
        })
}
