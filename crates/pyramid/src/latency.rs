//! Inference speed of a model (the paper's Figure 3): batches of random images through the
//! forward pass test evaluation uses (eval mode, no graph), timed after warm-up batches.

use std::time::Instant;

use candle_core::{DType, Device, DeviceLocation, Tensor};
use pyramid_models::{Mode, Model, ModelConfig, ModelId, ModelOptions};
use pyramid_rng::Rng;
use serde::{Deserialize, Serialize};

use crate::Error;

/// The number of images of Figure 3 (STL10's 5,000 train + 8,000 test images).
pub const FIGURE3_IMAGES: f64 = 13_000.0;

/// Inference speed of one model: batches of `batch_size` images at `input_size`², timed after
/// warm-up batches; the median batch gives images/s and the paper's Figure-3 unit.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Latency {
    /// The device it was timed on (`cpu`, `cuda:0`).
    pub device: String,
    /// Input height and width in pixels.
    pub input_size: usize,
    /// Images per timed batch.
    pub batch_size: usize,
    /// Timed batches (after the warm-up ones).
    pub repeats: usize,
    /// Median seconds per batch.
    pub median_batch_seconds: f64,
    /// `batch_size` / median seconds per batch.
    pub images_per_sec: f64,
    /// Seconds to classify 13,000 images at `input_size`² at that speed: Figure 3's unit when
    /// `input_size` is 96.
    pub seconds_per_13000: f64,
}

/// How much to time: `warmup` untimed batches, then `repeats` timed ones of `batch` images.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Budget {
    /// Images per batch.
    pub batch: usize,
    /// Untimed batches first (allocations, kernel choice).
    pub warmup: usize,
    /// Timed batches; the median counts.
    pub repeats: usize,
}

impl Budget {
    /// What a run spends on each model it finishes: one warm-up and five timed batches of
    /// the run's evaluation batch size (the forward passes of six evaluation batches).
    pub fn run(eval_batch: usize) -> Self {
        Self {
            batch: eval_batch,
            warmup: 1,
            repeats: 5,
        }
    }
}

/// The name a device is recorded under: `cpu`, `cuda:N`, `metal:N`.
pub fn device_name(device: &Device) -> String {
    match device.location() {
        DeviceLocation::Cpu => "cpu".into(),
        DeviceLocation::Cuda { gpu_id } => format!("cuda:{gpu_id}"),
        DeviceLocation::Metal { gpu_id } => format!("metal:{gpu_id}"),
    }
}

/// The median of `xs` (the mean of the middle two for an even count); NaN when empty.
pub fn median(xs: &[f64]) -> f64 {
    let mut v = xs.to_vec();
    v.sort_by(f64::total_cmp);
    match v.len() {
        0 => f64::NAN,
        n if n % 2 == 1 => v[n / 2],
        n => (v[n / 2 - 1] + v[n / 2]) / 2.0,
    }
}

/// The latency of `batch` images per `median_batch_seconds`.
pub fn from_median(
    device: String,
    input_size: usize,
    budget: &Budget,
    median_batch_seconds: f64,
) -> Latency {
    let images_per_sec = budget.batch as f64 / median_batch_seconds;
    Latency {
        device,
        input_size,
        batch_size: budget.batch,
        repeats: budget.repeats,
        median_batch_seconds,
        images_per_sec,
        seconds_per_13000: FIGURE3_IMAGES / images_per_sec,
    }
}

/// Times `model` on its own device at its own input size and channels. The input is the same
/// fixed pseudo-random batch every time (its values do not change the work); the device is
/// synchronised before every clock reading, so a CUDA batch counts until its kernels finish.
/// Leaves the model unchanged: eval mode updates nothing and draws nothing.
pub fn measure(model: &Model, budget: &Budget) -> Result<Latency, Error> {
    if budget.batch == 0 || budget.repeats == 0 {
        return Err(Error::Latency(format!(
            "batch ({}) and timed batches ({}) must be > 0",
            budget.batch, budget.repeats
        )));
    }
    let o = model.options();
    let device = model.device();
    let shape = (budget.batch, o.in_channels, o.input_size, o.input_size);
    let n = budget.batch * o.in_channels * o.input_size * o.input_size;
    let values = Rng::stream(0, "latency/input").normal_vec(n, 0.0, 1.0);
    let x = Tensor::from_vec(values, shape, device)?.to_dtype(DType::F32)?;
    let run = || -> Result<f64, Error> {
        device.synchronize()?;
        let t = Instant::now();
        let logits = model.forward(&x, Mode::Eval)?;
        device.synchronize()?;
        let s = t.elapsed().as_secs_f64();
        drop(logits);
        Ok(s)
    };
    for _ in 0..budget.warmup {
        run()?;
    }
    let times = (0..budget.repeats)
        .map(|_| run())
        .collect::<Result<Vec<_>, _>>()?;
    // A clock too coarse for a tiny model can read 0: one nanosecond keeps images/s finite.
    let med = median(&times).max(1e-9);
    Ok(from_median(device_name(device), o.input_size, budget, med))
}

/// One model of a `pyramid latency` measurement.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ModelLatency {
    /// `VGG19`, `SVGG14`, `SVGG14B`.
    pub model: String,
    /// `-` for VGG19, else `forward` or `backward`.
    pub scheme: String,
    /// 0 for VGG19, else 1 (SVGG17) … 5 (SVGG5).
    pub level: usize,
    /// The paper's depth label (19, 17, 14, 11, 8, 5): Figure 3's x axis.
    pub depth: usize,
    /// Trainable parameters.
    pub params: usize,
    /// Multiply-accumulates of one image's forward pass.
    pub macs: u64,
    /// The measurement.
    pub latency: Latency,
    /// VGG19's seconds per 13,000 images over this model's.
    pub speedup_vs_vgg19: f64,
}

/// What `pyramid latency --json` writes: every model at one set of options and one budget.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LatencyReport {
    /// The model options every model was built with.
    pub options: ModelOptions,
    /// Untimed batches before each model's timed ones.
    pub warmup: usize,
    /// VGG19, then the forward and the backward levels.
    pub models: Vec<ModelLatency>,
}

/// Times VGG19 and the five forward and five backward levels with fresh weights (`seed`),
/// one after the other on `device`, each dropped before the next is built.
pub fn measure_all(
    options: &ModelOptions,
    budget: &Budget,
    device: &Device,
    seed: u64,
) -> Result<LatencyReport, Error> {
    let mut models = Vec::new();
    for id in ModelId::all() {
        let model = Model::new(ModelConfig::new(id, options.clone()), seed, device)?;
        let latency = measure(&model, budget)?;
        let s = model.spec();
        tracing::debug!(
            "{}: {:.4} s per batch of {}",
            id,
            latency.median_batch_seconds,
            budget.batch
        );
        models.push(ModelLatency {
            model: id.name(),
            scheme: if id.is_vgg19() {
                "-".into()
            } else {
                id.scheme.to_string()
            },
            level: id.level,
            depth: id.depth(),
            params: s.num_params(),
            macs: s.macs(),
            latency,
            speedup_vs_vgg19: f64::NAN,
        });
    }
    let vgg = models
        .first()
        .map_or(f64::NAN, |m| m.latency.seconds_per_13000);
    for m in &mut models {
        m.speedup_vs_vgg19 = vgg / m.latency.seconds_per_13000;
    }
    Ok(LatencyReport {
        options: options.clone(),
        warmup: budget.warmup,
        models,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn median_of_odd_and_even_counts() {
        assert_eq!(median(&[3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(&[4.0, 1.0, 3.0, 2.0]), 2.5);
        assert!(median(&[]).is_nan());
    }

    #[test]
    fn figure3_unit_from_the_median() {
        // 32 images in 0.1 s: 320 images/s, 13,000 / 320 = 40.625 s.
        let l = from_median(
            "cpu".into(),
            96,
            &Budget {
                batch: 32,
                warmup: 1,
                repeats: 3,
            },
            0.1,
        );
        assert!((l.images_per_sec - 320.0).abs() < 1e-9);
        assert!((l.seconds_per_13000 - 40.625).abs() < 1e-9);
    }
}
