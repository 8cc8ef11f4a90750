//! The input pipeline: resize → channel adaptation → seeded augmentation → normalisation →
//! batches of candle tensors, assembled in parallel and prefetched on a background thread.
//!
//! Reproducibility: the sample order of epoch `e` is a pure function of `(seed, e)`, and every
//! augmentation draw of a sample is a pure function of `(seed, e, dataset index)`. So batch `b`
//! of epoch `e` is the same whether the epoch is iterated from the start, resumed at `b`
//! ([`Loader::iter_from`]) or computed alone ([`Loader::batch`]), whatever the thread count.

use std::sync::mpsc::{sync_channel, Receiver};
use std::sync::Arc;
use std::thread::JoinHandle;

use candle_core::{Device, Tensor};
use pyramid_rng::Rng;
use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use crate::dataset::Dataset;
use crate::error::{Error, Result};
use crate::resize::{bilinear_coeffs, resize_bilinear_with, Coeffs};

/// Per-channel normalisation `(x/255 − mean[c]) / std[c]`. A single mean/std value is applied
/// to every channel.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Normalize {
    /// Mean of each channel on the [0, 1] scale; one value stands for every channel.
    pub mean: Vec<f32>,
    /// Standard deviation of each channel (> 0); one value stands for every channel.
    pub std: Vec<f32>,
}

impl Normalize {
    /// CIFAR-10 constants; docs/method.md §1 uses them for STL10 **and** CIFAR-100.
    pub const CIFAR_MEAN: [f32; 3] = [0.4914, 0.4822, 0.4465];
    /// CIFAR-10 per-channel standard deviations (the original code's values).
    pub const CIFAR_STD: [f32; 3] = [0.2023, 0.1994, 0.2010];
    /// Fashion-MNIST training-set statistics (of x/255 over all 60,000·784 pixels:
    /// mean 0.28604, std 0.35302; checked by a test when the full data set is installed).
    pub const FASHION_MNIST_MEAN: f32 = 0.2860;
    /// See [`Normalize::FASHION_MNIST_MEAN`].
    pub const FASHION_MNIST_STD: f32 = 0.3530;

    /// Per-channel (or single) mean and std; checked against the image channels when a loader is
    /// built.
    pub fn new(mean: Vec<f32>, std: Vec<f32>) -> Self {
        Self { mean, std }
    }
    /// The constants docs/method.md §1 uses for both STL10 and CIFAR-100 (and CIFAR-10).
    pub fn cifar() -> Self {
        Self::new(Self::CIFAR_MEAN.to_vec(), Self::CIFAR_STD.to_vec())
    }
    /// Same as [`Normalize::cifar`] (the original code used the CIFAR constants for STL10).
    pub fn stl10() -> Self {
        Self::cifar()
    }
    /// Fashion-MNIST statistics replicated over `channels` channels.
    pub fn fashion_mnist(channels: usize) -> Self {
        let c = channels.max(1);
        Self::new(
            vec![Self::FASHION_MNIST_MEAN; c],
            vec![Self::FASHION_MNIST_STD; c],
        )
    }
    /// Only scale to [0, 1].
    pub fn unit() -> Self {
        Self::new(vec![0.0], vec![1.0])
    }

    /// Per-channel `(scale, offset)` so that `out = byte·scale + offset`.
    fn affine(&self, channels: usize) -> Result<Vec<(f32, f32)>> {
        let pick = |v: &[f32], c: usize| -> Result<f32> {
            match v.len() {
                1 => Ok(v[0]),
                n if n == channels => Ok(v[c]),
                n => Err(Error::Invalid(format!(
                    "normalisation has {n} values but the images have {channels} channels"
                ))),
            }
        };
        (0..channels)
            .map(|c| {
                let m = pick(&self.mean, c)?;
                let s = pick(&self.std, c)?;
                if !(s.is_finite() && s > 0.0 && m.is_finite()) {
                    return Err(Error::Invalid(format!(
                        "normalisation channel {c}: mean {m}, std {s} (std must be > 0)"
                    )));
                }
                Ok((1.0 / (255.0 * s), -m / s))
            })
            .collect()
    }
}

/// Output channel handling.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Channels {
    /// Keep the dataset's channel count.
    #[default]
    Keep,
    /// Three channels: grayscale images are replicated, RGB images are kept.
    Rgb,
}

/// Seeded training-time augmentation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Augment {
    /// Random horizontal flip with p = 0.5.
    #[serde(default)]
    pub hflip: bool,
    /// Zero-pad by this many pixels on each side (after resizing), then crop a random window
    /// of the target size (torchvision `RandomCrop(size, padding=P)`); 0 = off.
    #[serde(default)]
    pub pad_crop: usize,
}

impl Augment {
    /// No augmentation.
    pub fn none() -> Self {
        Self::default()
    }
    /// The paper's training augmentation: random horizontal flip only.
    pub fn flip() -> Self {
        Self {
            hflip: true,
            pad_crop: 0,
        }
    }
    /// True when no augmentation is on.
    pub fn is_none(&self) -> bool {
        !self.hflip && self.pad_crop == 0
    }
}

/// Loader settings. `LoaderConfig::new(128)` then adjust fields, or use
/// [`LoaderConfig::paper_train`] / [`LoaderConfig::paper_test`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LoaderConfig {
    /// Images per batch (> 0); the last batch of an epoch may be smaller.
    pub batch_size: usize,
    /// Whether each epoch visits the samples in a seeded random order (else in dataset order).
    pub shuffle: bool,
    /// Training-time augmentation, drawn from `seed`.
    pub augment: Augment,
    /// Target (height, width); `None` keeps the native size.
    pub size: Option<(usize, usize)>,
    /// Output channel handling.
    pub channels: Channels,
    /// Normalisation applied after resizing and augmentation.
    pub normalize: Normalize,
    /// Seed of the shuffle order and of every augmentation draw.
    pub seed: u64,
    /// Batches computed ahead on a background thread; 0 = compute in `next()`.
    pub prefetch: usize,
    /// Worker threads used to assemble one batch (a private rayon pool, so the trainer's global
    /// pool is not oversubscribed); 1 = sequential on the prefetch thread; 0 = auto (1 on
    /// machines with ≤ 4 cores, else 2). Measured (`cargo xtask bench data`, 2 cores,
    /// docs/benchmarks.md): a batch of 128 costs ≈ 2–3 ms of CPU for STL10 (flip, normalise)
    /// and ≈ 20–30 ms for CIFAR (resize 32→96, flip, normalise), a small fraction of a CPU
    /// training step; a second thread gains nothing measurable there and competes with
    /// candle's own pool.
    pub threads: usize,
}

impl LoaderConfig {
    /// Defaults: `batch_size` images per batch, no shuffle, no augmentation, native size and
    /// channels, scaling to [0, 1] only, seed 0, 2 batches prefetched, auto threads.
    pub fn new(batch_size: usize) -> Self {
        Self {
            batch_size,
            shuffle: false,
            augment: Augment::none(),
            size: None,
            channels: Channels::Keep,
            normalize: Normalize::unit(),
            seed: 0,
            prefetch: 2,
            threads: 0,
        }
    }

    /// The number of batch-assembly threads `threads` stands for on this machine (0 = auto:
    /// 1 with ≤ 4 logical CPUs, else 2).
    pub fn effective_threads(&self) -> usize {
        match self.threads {
            0 => match std::thread::available_parallelism().map(|n| n.get()) {
                Ok(n) if n > 4 => 2,
                _ => 1,
            },
            t => t,
        }
    }

    /// docs/method.md §1 training loader: batch 128, shuffled, resized to 96×96, 3 channels, random
    /// horizontal flip, the dataset's normalisation.
    pub fn paper_train(kind: crate::DatasetKind, seed: u64) -> Self {
        Self {
            shuffle: true,
            augment: Augment::flip(),
            ..Self::paper_test(kind, seed)
        }
    }

    /// docs/method.md §1 test loader: like [`LoaderConfig::paper_train`] without augmentation and
    /// without shuffling (the original shuffled the test set too, which changes nothing).
    pub fn paper_test(kind: crate::DatasetKind, seed: u64) -> Self {
        Self {
            batch_size: 128,
            shuffle: false,
            augment: Augment::none(),
            size: Some((96, 96)),
            channels: Channels::Rgb,
            normalize: kind.normalize(3),
            seed,
            prefetch: 2,
            threads: 0,
        }
    }
}

/// One batch: `images` f32 `[B, C, H, W]` (normalised), `labels` u32 `[B]`, and the dataset
/// indices of its samples.
#[derive(Debug, Clone)]
pub struct Batch {
    /// Images, f32 `[B, C, H, W]`, normalised.
    pub images: Tensor,
    /// Labels, u32 `[B]`.
    pub labels: Tensor,
    /// Dataset index of each sample, in batch order.
    pub indices: Vec<usize>,
    /// Position of this batch in its epoch.
    pub index: usize,
}

struct Inner {
    data: Arc<Dataset>,
    cfg: LoaderConfig,
    device: Device,
    out_c: usize,
    out_h: usize,
    out_w: usize,
    affine: Vec<(f32, f32)>,
    hcoef: Coeffs,
    vcoef: Coeffs,
    pool: Option<rayon::ThreadPool>,
}

/// A reusable, cheaply cloneable batch source over a dataset.
#[derive(Clone)]
pub struct Loader {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Loader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Loader")
            .field("dataset", &self.inner.data.name)
            .field("n", &self.inner.data.n)
            .field("cfg", &self.inner.cfg)
            .finish()
    }
}

impl Loader {
    /// A loader over `data`, batches placed on `device`. Checks the dataset, the batch size, the
    /// target size and the channel conversion.
    pub fn new(data: impl Into<Arc<Dataset>>, cfg: LoaderConfig, device: &Device) -> Result<Self> {
        let data: Arc<Dataset> = data.into();
        data.validate().map_err(Error::Invalid)?;
        if cfg.batch_size == 0 {
            return Err(Error::Invalid("batch_size must be > 0".into()));
        }
        let (out_h, out_w) = cfg.size.unwrap_or((data.height, data.width));
        if out_h == 0 || out_w == 0 || data.height == 0 || data.width == 0 {
            return Err(Error::Invalid(format!(
                "cannot resize {}×{} images to {out_h}×{out_w}",
                data.height, data.width
            )));
        }
        let out_c = match (cfg.channels, data.channels) {
            (Channels::Keep, c) => c,
            (Channels::Rgb, 1) | (Channels::Rgb, 3) => 3,
            (Channels::Rgb, c) => {
                return Err(Error::Invalid(format!(
                    "cannot make 3 channels out of {c}-channel images"
                )))
            }
        };
        let affine = cfg.normalize.affine(out_c)?;
        let threads = cfg.effective_threads();
        let pool = if threads > 1 {
            Some(
                rayon::ThreadPoolBuilder::new()
                    .num_threads(threads)
                    .thread_name(|i| format!("pyramid-loader-{i}"))
                    .build()
                    .map_err(|e| Error::Invalid(format!("loader thread pool: {e}")))?,
            )
        } else {
            None
        };
        Ok(Self {
            inner: Arc::new(Inner {
                hcoef: bilinear_coeffs(data.width, out_w),
                vcoef: bilinear_coeffs(data.height, out_h),
                data,
                cfg,
                device: device.clone(),
                out_c,
                out_h,
                out_w,
                affine,
                pool,
            }),
        })
    }

    /// The dataset the loader reads.
    pub fn dataset(&self) -> &Arc<Dataset> {
        &self.inner.data
    }

    /// The loader's settings.
    pub fn config(&self) -> &LoaderConfig {
        &self.inner.cfg
    }

    /// Number of samples per epoch.
    pub fn len(&self) -> usize {
        self.inner.data.n
    }

    /// True when the dataset has no samples.
    pub fn is_empty(&self) -> bool {
        self.inner.data.n == 0
    }

    /// Batches per epoch (the last partial batch is kept).
    pub fn num_batches(&self) -> usize {
        self.inner.data.n.div_ceil(self.inner.cfg.batch_size)
    }

    /// Shape (C, H, W) of one output sample.
    pub fn sample_shape(&self) -> (usize, usize, usize) {
        (self.inner.out_c, self.inner.out_h, self.inner.out_w)
    }

    /// The sample order of `epoch`: a seeded permutation if shuffling, else `0..n`.
    pub fn order(&self, epoch: u64) -> Vec<usize> {
        self.inner.order(epoch)
    }

    /// Dataset indices of batch `b` of `epoch`.
    pub fn batch_indices(&self, epoch: u64, b: usize) -> Vec<usize> {
        self.inner.batch_indices(&self.order(epoch), b).to_vec()
    }

    /// Batch `b` of `epoch`, computed synchronously.
    pub fn batch(&self, epoch: u64, b: usize) -> Result<Batch> {
        if b >= self.num_batches() {
            return Err(Error::Invalid(format!(
                "batch {b} out of range: the epoch has {} batches",
                self.num_batches()
            )));
        }
        let order = self.order(epoch);
        self.inner.make_batch(&order, epoch, b)
    }

    /// One processed sample (C·H·W normalised f32) of dataset image `index` in `epoch`.
    pub fn sample(&self, epoch: u64, index: usize) -> Vec<f32> {
        let n = self.inner.out_c * self.inner.out_h * self.inner.out_w;
        let mut out = vec![0f32; n];
        let mut scratch = Vec::new();
        self.inner.process(epoch, index, &mut scratch, &mut out);
        out
    }

    /// Iterates over all batches of `epoch`.
    pub fn iter(&self, epoch: u64) -> BatchIter {
        self.iter_from(epoch, 0)
    }

    /// Iterates over batches `start_batch..` of `epoch` (resuming mid-epoch).
    pub fn iter_from(&self, epoch: u64, start_batch: usize) -> BatchIter {
        let nb = self.num_batches();
        let order = Arc::new(self.order(epoch));
        let prefetch = self.inner.cfg.prefetch;
        if prefetch == 0 || start_batch >= nb {
            return BatchIter {
                loader: self.clone(),
                order,
                epoch,
                next: start_batch,
                end: nb,
                rx: None,
                handle: None,
            };
        }
        // A rendezvous channel of capacity `prefetch - 1` plus the batch the worker holds
        // keeps `prefetch` batches ahead.
        let (tx, rx) = sync_channel(prefetch - 1);
        let inner = self.inner.clone();
        let ord = order.clone();
        let handle = std::thread::Builder::new()
            .name("pyramid-prefetch".into())
            .spawn(move || {
                for b in start_batch..nb {
                    let r = inner.make_batch(&ord, epoch, b);
                    if tx.send(r).is_err() {
                        break;
                    }
                }
            })
            .ok();
        let rx = handle.as_ref().map(|_| rx);
        BatchIter {
            loader: self.clone(),
            order,
            epoch,
            next: start_batch,
            end: nb,
            rx,
            handle,
        }
    }
}

impl Inner {
    fn order(&self, epoch: u64) -> Vec<usize> {
        if self.cfg.shuffle {
            Rng::stream(self.cfg.seed, "loader/shuffle")
                .derive(&format!("epoch{epoch}"))
                .permutation(self.data.n)
        } else {
            (0..self.data.n).collect()
        }
    }

    fn batch_indices<'a>(&self, order: &'a [usize], b: usize) -> &'a [usize] {
        let bs = self.cfg.batch_size;
        let lo = (b * bs).min(order.len());
        let hi = ((b + 1) * bs).min(order.len());
        &order[lo..hi]
    }

    /// Writes the processed sample `index` of `epoch` into `out` (C·H·W f32).
    fn process(&self, epoch: u64, index: usize, scratch: &mut Vec<u8>, out: &mut [f32]) {
        let d = &*self.data;
        let (oc, oh, ow) = (self.out_c, self.out_h, self.out_w);
        let src = d.image(index);
        let img: &[u8] = if (d.height, d.width) == (oh, ow) {
            src
        } else {
            scratch.resize(d.channels * oh * ow, 0);
            resize_bilinear_with(
                src,
                d.channels,
                d.height,
                d.width,
                oh,
                ow,
                &self.hcoef,
                &self.vcoef,
                scratch,
            );
            scratch
        };
        // Augmentation draws: a pure function of (seed, epoch, dataset index).
        let aug = self.cfg.augment;
        let (mut dy, mut dx, mut flip) = (0isize, 0isize, false);
        if !aug.is_none() {
            let mut rng =
                Rng::stream(self.cfg.seed, "loader/augment").derive(&format!("{epoch}/{index}"));
            if aug.pad_crop > 0 {
                let p = aug.pad_crop as u64;
                dy = rng.below(2 * p + 1) as isize - aug.pad_crop as isize;
                dx = rng.below(2 * p + 1) as isize - aug.pad_crop as isize;
            }
            if aug.hflip {
                flip = rng.bernoulli(0.5);
            }
        }
        let plane = oh * ow;
        for c in 0..oc {
            let sc = if d.channels == 1 { 0 } else { c };
            let sp = &img[sc * plane..(sc + 1) * plane];
            let (scale, offset) = self.affine[c];
            let op = &mut out[c * plane..(c + 1) * plane];
            for (y, orow) in op.chunks_exact_mut(ow).enumerate() {
                let sy = y as isize + dy;
                if sy < 0 || sy >= oh as isize {
                    orow.fill(offset); // zero padding
                    continue;
                }
                let srow = &sp[sy as usize * ow..(sy as usize + 1) * ow];
                normalize_row(srow, orow, flip, dx, scale, offset);
            }
        }
    }

    fn make_batch(&self, order: &[usize], epoch: u64, b: usize) -> Result<Batch> {
        let idx = self.batch_indices(order, b);
        let per = self.out_c * self.out_h * self.out_w;
        let mut buf = vec![0f32; idx.len() * per];
        let work = |buf: &mut Vec<f32>| {
            buf.par_chunks_mut(per.max(1))
                .zip(idx.par_iter())
                .for_each_init(Vec::new, |scratch, (out, &i)| {
                    self.process(epoch, i, scratch, out)
                });
        };
        match &self.pool {
            Some(p) => p.install(|| work(&mut buf)),
            None => {
                let mut scratch = Vec::new();
                for (out, &i) in buf.chunks_mut(per.max(1)).zip(idx) {
                    self.process(epoch, i, &mut scratch, out);
                }
            }
        }
        let labels: Vec<u32> = idx.iter().map(|&i| self.data.labels[i]).collect();
        let bsz = idx.len();
        Ok(Batch {
            images: Tensor::from_vec(buf, (bsz, self.out_c, self.out_h, self.out_w), &self.device)?,
            labels: Tensor::from_vec(labels, bsz, &self.device)?,
            indices: idx.to_vec(),
            index: b,
        })
    }
}

/// Writes one output row: output pixel `x` is source pixel `sx = (flip ? w−1−x : x) + dx`,
/// normalised as `byte·scale + offset`, or `offset` (a zero byte) where `sx` falls outside the
/// row. The valid range is computed once, so the inner loops are branch-free and vectorise;
/// the arithmetic per pixel is the same expression as a per-pixel loop, so results are
/// bit-identical.
fn normalize_row(src: &[u8], out: &mut [f32], flip: bool, dx: isize, scale: f32, offset: f32) {
    let w = out.len() as isize;
    debug_assert_eq!(src.len(), out.len());
    let (lo, hi) = if flip {
        (dx.max(0), (w + dx).min(w))
    } else {
        ((-dx).max(0), (w - dx).min(w))
    };
    if lo >= hi {
        out.fill(offset);
        return;
    }
    let (lo, hi) = (lo as usize, hi as usize);
    out[..lo].fill(offset);
    out[hi..].fill(offset);
    let o = &mut out[lo..hi];
    let len = o.len();
    if flip {
        // x = lo reads sx = w−1−lo+dx, x = hi−1 reads w−hi+dx.
        let s0 = (w - hi as isize + dx) as usize;
        for (o, &p) in o.iter_mut().zip(src[s0..s0 + len].iter().rev()) {
            *o = f32::from(p) * scale + offset;
        }
    } else {
        let s0 = (lo as isize + dx) as usize;
        for (o, &p) in o.iter_mut().zip(&src[s0..s0 + len]) {
            *o = f32::from(p) * scale + offset;
        }
    }
}

/// Iterator over the batches of one epoch; yields `Result<Batch>`.
pub struct BatchIter {
    loader: Loader,
    order: Arc<Vec<usize>>,
    epoch: u64,
    next: usize,
    end: usize,
    rx: Option<Receiver<Result<Batch>>>,
    handle: Option<JoinHandle<()>>,
}

impl BatchIter {
    /// The epoch this iterator walks (from 0).
    pub fn epoch(&self) -> u64 {
        self.epoch
    }
    /// The sample order of this epoch.
    pub fn order(&self) -> &[usize] {
        &self.order
    }
}

impl Iterator for BatchIter {
    type Item = Result<Batch>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.next >= self.end {
            return None;
        }
        let b = self.next;
        self.next += 1;
        match &self.rx {
            Some(rx) => match rx.recv() {
                Ok(r) => Some(r),
                Err(_) => Some(Err(Error::Invalid(
                    "the prefetch thread stopped unexpectedly".into(),
                ))),
            },
            None => Some(self.loader.inner.make_batch(&self.order, self.epoch, b)),
        }
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        let r = self.end.saturating_sub(self.next);
        (r, Some(r))
    }
}

impl ExactSizeIterator for BatchIter {}

impl Drop for BatchIter {
    fn drop(&mut self) {
        // Closing the channel makes the worker's next send fail, so it exits.
        drop(self.rx.take());
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::normalize_row;

    /// The per-pixel definition `normalize_row` replaces.
    fn reference(src: &[u8], flip: bool, dx: isize, scale: f32, offset: f32) -> Vec<f32> {
        let w = src.len();
        (0..w)
            .map(|x| {
                let sx = if flip { w - 1 - x } else { x } as isize + dx;
                if sx < 0 || sx >= w as isize {
                    offset
                } else {
                    f32::from(src[sx as usize]) * scale + offset
                }
            })
            .collect()
    }

    #[test]
    fn normalize_row_matches_the_per_pixel_definition() {
        let (scale, offset) = (1.0 / (255.0 * 0.2023), -0.4914 / 0.2023);
        for w in [1usize, 2, 5, 17, 96] {
            let src: Vec<u8> = (0..w).map(|x| (x * 37 % 256) as u8).collect();
            for flip in [false, true] {
                for dx in -(w as isize) - 2..=w as isize + 2 {
                    let mut out = vec![f32::NAN; w];
                    normalize_row(&src, &mut out, flip, dx, scale, offset);
                    let want = reference(&src, flip, dx, scale, offset);
                    let bits = |v: &[f32]| v.iter().map(|f| f.to_bits()).collect::<Vec<_>>();
                    assert_eq!(bits(&out), bits(&want), "w {w} flip {flip} dx {dx}");
                }
            }
        }
    }
}
