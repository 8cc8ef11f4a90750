//! Whole-epoch cases of `pyramid-bench` (`epoch-d16-bn`, `epoch-d16-nobn`, `epoch-d8-bn`,
//! `epoch-d8-nobn`): one training epoch of VGG19 over the full Fashion-MNIST train split as
//! `pyramid run` does it for the CPU configs, then the test pass.
//!
//! The data comes through `pyramid::data::ExperimentData::load` from configs/fashion-mnist.toml
//! (÷16, batch norm) or configs/fashion-mnist-nobn.toml (÷8, no batch norm, `init = "kaiming"`),
//! with `[model] width_div` / `batch_norm` / `init` set for the case: 1×32×32, batch 128 with
//! random horizontal flips, eval batch 500. Every batch is a `Model::train_step_ce` (the fused
//! step, or candle's autograd with `--epoch-backend candle`) and an Adam step built from the
//! teacher recipe's `OptimizerConfig` (Adam, lr 1e-3), with the same per-batch random streams as
//! the stage engine; then an eval-mode pass over the 10,000 test images.

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{bail, Context, Result};
use candle_core::{DType, Device};
use pyramid::config::TeacherConfig;
use pyramid::data::ExperimentData;
use pyramid::ExperimentConfig;
use pyramid_models::{InitScheme, Mode, Model, ModelConfig, ModelId};
use pyramid_rng::Rng;
use serde::{Deserialize, Serialize};

/// The epoch cases, in the order `cargo xtask bench` runs them.
pub const CASES: [&str; 4] = [
    "epoch-d16-bn",
    "epoch-d16-nobn",
    "epoch-d8-bn",
    "epoch-d8-nobn",
];

/// One epoch case: VGG19 at width ÷`div`, with or without batch norm.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EpochCase {
    /// Width divisor (8 or 16).
    pub div: usize,
    /// Batch norm after every conv.
    pub bn: bool,
}

impl EpochCase {
    /// `epoch-d16-bn` → ÷16 with batch norm; `None` for a name that is no epoch case.
    pub fn parse(name: &str) -> Option<Self> {
        let rest = name.trim().strip_prefix("epoch-d")?;
        let (div, bn) = rest.split_once('-')?;
        let bn = match bn {
            "bn" => true,
            "nobn" => false,
            _ => return None,
        };
        let div = div.parse().ok().filter(|d| [8, 16].contains(d))?;
        Some(Self { div, bn })
    }

    /// The case name, e.g. `epoch-d8-nobn`.
    pub fn name(&self) -> String {
        format!(
            "epoch-d{}-{}",
            self.div,
            if self.bn { "bn" } else { "nobn" }
        )
    }
}

/// What one epoch measured (the child's JSON line; scripts/bench_torch_epoch.py prints the same).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct EpochRaw {
    /// Seconds of the training part (every batch: loading, step, optimizer update).
    pub train_s: f64,
    /// Seconds of the test pass.
    pub test_s: f64,
    /// Seconds spent before the epoch (reading the data set, building the model).
    #[serde(default)]
    pub setup_s: f64,
    /// Training images fed.
    pub train_images: usize,
    /// Test images evaluated.
    pub test_images: usize,
    /// Training batches run.
    pub batches: usize,
    /// Mean training cross-entropy over the epoch.
    pub train_loss: f64,
    /// Training accuracy (%) over the epoch (training-mode logits).
    pub train_acc: f64,
    /// Mean test cross-entropy after the epoch.
    pub test_loss: f64,
    /// Test accuracy (%) after the epoch.
    pub test_acc: f64,
    /// Process CPU seconds (all threads) of the epoch, train and test.
    pub cpu_s: f64,
    /// VmHWM at the end of the process, KiB.
    pub peak_rss_kib: u64,
    /// Compute threads.
    #[serde(default)]
    pub threads: usize,
    /// Library and path, e.g. "candle 0.11.1, fused" or "torch 2.5.1".
    #[serde(default)]
    pub version: String,
}

impl EpochRaw {
    /// Training images per second.
    pub fn train_images_per_s(&self) -> f64 {
        self.train_images as f64 / self.train_s.max(1e-12)
    }
}

fn configs_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../configs")
}

/// The experiment config of `case`: the CPU config it comes from with the case's width, batch
/// norm and init, and `data_root` when given.
pub fn config(case: EpochCase, data_root: Option<&Path>) -> Result<ExperimentConfig> {
    let file = configs_dir().join(if case.bn {
        "fashion-mnist.toml"
    } else {
        "fashion-mnist-nobn.toml"
    });
    let mut cfg = ExperimentConfig::from_file(&file)
        .with_context(|| format!("reading {}", file.display()))?;
    cfg.model.width_div = case.div;
    cfg.model.batch_norm = case.bn;
    // As configs/fashion-mnist-nobn.toml: a narrow BN-free VGG19 needs Kaiming linear layers.
    cfg.model.init = if case.bn {
        InitScheme::default()
    } else {
        InitScheme::Kaiming
    };
    if let Some(r) = data_root {
        cfg.data.root = Some(r.to_path_buf());
    }
    cfg.validate()?;
    Ok(cfg)
}

/// Runs one epoch of `case` in this process. `fused = false` switches the model to candle's
/// autograd (`Model::set_fused(false)`); `limit` caps the train and test batches; `profile`
/// prints the fused step's per-layer wall times (training batches only) to stderr.
pub fn run(
    case: EpochCase,
    fused: bool,
    limit: Option<usize>,
    data_root: Option<&Path>,
    profile: bool,
    threads: usize,
) -> Result<EpochRaw> {
    let t0 = Instant::now();
    let dev = Device::Cpu;
    let cfg = config(case, data_root)?;
    let data = ExperimentData::load(&cfg, &dev)?;
    let options = cfg.model.options(data.classes);
    let mut model = Model::new(ModelConfig::new(ModelId::VGG19, options), cfg.seed, &dev)?;
    model.set_fused(fused);
    let opt_cfg = match &cfg.teacher {
        TeacherConfig::Train { recipe } | TeacherConfig::Torchvision { recipe, .. } => {
            recipe.optimizer.clone()
        }
        TeacherConfig::Load { .. } => bail!("the config loads its teacher: no recipe to time"),
    };
    let mut optimizer = opt_cfg.build(vec![("all".into(), model.params().to_vec())])?;
    let limit = limit.unwrap_or(usize::MAX);
    let setup_s = t0.elapsed().as_secs_f64();

    let rng = Rng::new(cfg.seed);
    let epoch = 1u64;
    if profile {
        pyramid_models::fused::profile::enable();
    }
    let c0 = crate::cpu_time();
    let t = Instant::now();
    let (mut loss_sum, mut correct, mut n, mut batches) = (0.0, 0u64, 0usize, 0usize);
    for batch in data.train.iter(epoch).take(limit) {
        let batch = batch?;
        let b = batch.indices.len();
        let mut r = rng.derive(&format!("epoch{epoch}/batch{}", batch.index));
        let s = model.train_step_ce(&batch.images, &batch.labels, &mut r)?;
        if !s.loss.is_finite() {
            bail!("loss became {} at batch {}", s.loss, batch.index);
        }
        optimizer.step(&s.grads)?;
        loss_sum += s.loss * b as f64;
        correct += pyramid::stage::count_correct(&s.logits, &batch.labels)?;
        n += b;
        batches += 1;
    }
    let train_s = t.elapsed().as_secs_f64();
    let table = profile.then(pyramid_models::fused::profile::take);

    // The test pass of `pyramid::stage::evaluate_model`, batch-capped by `limit`.
    let t = Instant::now();
    let (mut test_loss, mut test_correct, mut test_n) = (0.0, 0u64, 0usize);
    for batch in data.test_loader().iter(0).take(limit) {
        let batch = batch?;
        let b = batch.indices.len();
        let logits = model.forward(&batch.images, Mode::Eval)?;
        let l = pyramid_losses::cross_entropy(&logits, &batch.labels)?;
        test_loss += l.to_dtype(DType::F64)?.to_scalar::<f64>()? * b as f64;
        test_correct += pyramid::stage::count_correct(&logits, &batch.labels)?;
        test_n += b;
    }
    let test_s = t.elapsed().as_secs_f64();
    let cpu_s = crate::cpu_time() - c0;
    if let Some(table) = table {
        eprint!(
            "{}",
            profile_table(&case.name(), &table, train_s, "training steps")
        );
    }
    Ok(EpochRaw {
        train_s,
        test_s,
        setup_s,
        train_images: n,
        test_images: test_n,
        batches,
        train_loss: loss_sum / n.max(1) as f64,
        train_acc: 100.0 * correct as f64 / n.max(1) as f64,
        test_loss: test_loss / test_n.max(1) as f64,
        test_acc: 100.0 * test_correct as f64 / test_n.max(1) as f64,
        cpu_s,
        peak_rss_kib: crate::peak_rss_kib(),
        threads,
        version: format!(
            "candle 0.11.1, {}",
            if model.fused_available() {
                "fused"
            } else {
                "autograd"
            }
        ),
    })
}

/// The `--profile` table: one row per (layer kind, direction), slowest first, with calls, total
/// seconds, ms per call and share of the profiled wall time `train_s` (the training steps of
/// an epoch case, or the timed passes of an inference case: `part` names which).
pub fn profile_table(
    case: &str,
    rows: &std::collections::BTreeMap<(String, &'static str), (u64, f64)>,
    train_s: f64,
    part: &str,
) -> String {
    use std::fmt::Write;
    let mut v: Vec<_> = rows.iter().collect();
    v.sort_by(|a, b| b.1 .1.total_cmp(&a.1 .1).then_with(|| a.0.cmp(b.0)));
    // fold, not sum: an empty sum of f64 is -0.0. Parts of a layer, such as "(batch norm)",
    // are inside their layer's row already.
    let total = v
        .iter()
        .filter(|r| !r.0 .0.starts_with('('))
        .fold(0.0, |t, r| t + r.1 .1);
    let mut s = String::new();
    let _ = writeln!(
        s,
        "profile {case}: {part} {train_s:.2} s, of which layers {total:.2} s ({:.0}%)",
        100.0 * total / train_s.max(1e-12)
    );
    let _ = writeln!(
        s,
        "{:<28} {:<8} {:>7} {:>9} {:>9} {:>6}",
        "layer", "dir", "calls", "total s", "ms/call", "%time"
    );
    if v.is_empty() {
        let _ = writeln!(
            s,
            "(no layer recorded: only the fused path is profiled: epoch cases without \
             --epoch-backend candle, and inference cases of the fast backend on the CPU)"
        );
    }
    for ((kind, dir), (calls, secs)) in v {
        let _ = writeln!(
            s,
            "{:<28} {:<8} {:>7} {:>9.3} {:>9.3} {:>5.1}%",
            kind,
            dir,
            calls,
            secs,
            secs * 1e3 / (*calls).max(1) as f64,
            100.0 * secs / train_s.max(1e-12)
        );
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn case_names() {
        for name in CASES {
            assert_eq!(EpochCase::parse(name).map(|c| c.name()), Some(name.into()));
        }
        assert_eq!(
            EpochCase::parse("epoch-d8-nobn"),
            Some(EpochCase { div: 8, bn: false })
        );
        for bad in [
            "epoch-d4-bn",
            "epoch-d16",
            "epoch-d16-xx",
            "train32",
            "epoch-dx-bn",
        ] {
            assert_eq!(EpochCase::parse(bad), None, "{bad}");
        }
    }

    #[test]
    fn configs_follow_the_case() {
        let c = config(EpochCase { div: 8, bn: true }, None).unwrap();
        assert_eq!((c.model.width_div, c.model.batch_norm), (8, true));
        assert_eq!(c.model.init, InitScheme::Torchvision);
        assert_eq!((c.data.batch_size, c.data.eval_batch_size), (128, 500));
        assert_eq!((c.model.input_size, c.model.in_channels), (32, 1));
        let c = config(EpochCase { div: 16, bn: false }, Some(Path::new("/x"))).unwrap();
        assert_eq!((c.model.width_div, c.model.batch_norm), (16, false));
        assert_eq!(c.model.init, InitScheme::Kaiming);
        assert_eq!(c.data.root.as_deref(), Some(Path::new("/x")));
    }

    #[test]
    fn rates_and_profile_rows() {
        let r = EpochRaw {
            train_s: 50.0,
            test_s: 5.0,
            train_images: 60_000,
            test_images: 10_000,
            ..EpochRaw::default()
        };
        assert!((r.train_images_per_s() - 1200.0).abs() < 1e-9);
        let mut rows = std::collections::BTreeMap::new();
        rows.insert(("B1 pool".to_string(), "fwd"), (4u64, 0.5));
        rows.insert(("B1 conv 4→4".to_string(), "bwd"), (4u64, 2.0));
        let t = profile_table("epoch-d16-bn", &rows, 10.0, "training steps");
        let lines: Vec<&str> = t.lines().collect();
        assert_eq!(
            lines[0],
            "profile epoch-d16-bn: training steps 10.00 s, of which layers 2.50 s (25%)"
        );
        assert!(lines[2].starts_with("B1 conv 4→4"), "{t}");
        assert!(lines[2].ends_with("    2.000   500.000  20.0%"), "{t}");
        assert!(lines[3].ends_with("    0.500   125.000   5.0%"), "{t}");
    }
}
