//! `pyramid-bench data` (`cargo xtask bench data`): throughput of the input pipeline, ours
//! (`pyramid_datasets::Loader`) against torchvision's `DataLoader` on the same files.
//!
//! 1. Fixture files in the official binary formats are written to a temporary directory (or
//!    `--dir`): STL10 `stl10_binary/train_{X,y}.bin` (3×96×96, each channel column-major,
//!    labels 1–10) and CIFAR-100 `cifar-100-binary/train.bin` (coarse, fine, 3,072 bytes).
//!    The pixels are deterministic and image-like (gradients plus noise).
//! 2. Each loader setting (`--threads` × `--prefetch`) runs in a fresh child process (this
//!    binary re-invoked with the hidden `--single DATASET/THREADS/PREFETCH`) that reads the
//!    files with the crate's own readers and draws batches of 128 with the paper's training
//!    transforms (`LoaderConfig::paper_train`: CIFAR-100 resized 32→96 PIL-bilinear, random
//!    horizontal flip, normalisation, u8 → f32 per batch, shuffled), across epochs, `--warmup`
//!    batches then `--runs` timed runs of `--batches` batches; the best run is reported.
//!    Then the same child measures a **busy consumer**: between batches it runs
//!    `--busy-matmuls` 512×512 candle matmuls on candle's (global rayon) pool, as a trainer
//!    would, and records how long it waited for batches and how much slower its own compute
//!    became compared with the same compute without a loader.
//! 3. With `--torch PYTHON`, scripts/bench_torch_data.py does the same with torchvision
//!    transforms and `DataLoader(batch_size=128, shuffle=True, num_workers=2)`.
//!
//! CPU time is measured too (ours: the child process, all threads; torch: the process and its
//! workers), so "img/CPU-s" (images per CPU-second) compares the two independently of the load
//! of a shared machine.

use std::io::{BufWriter, Read as _, Write as _};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Instant;

use anyhow::{bail, Context, Result};
use candle_core::{Device, Tensor};
use clap::Parser;
use pyramid_datasets::{Batch, BatchIter, DatasetKind, Loader, LoaderConfig, Split};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::{cpu_time, loadavg, peak_rss_kib, CpuInfo};

#[derive(Parser, Debug)]
#[command(
    name = "pyramid-bench data",
    about = "Input-pipeline throughput (batches of 128 at 96×96 with the paper's augmentation), ours vs torchvision's DataLoader"
)]
pub struct Args {
    /// stl10, cifar100 or both.
    #[arg(long, default_value = "both")]
    dataset: String,
    /// Images in each fixture file (default: 5000 for STL10, its train split; 10000 for CIFAR-100).
    #[arg(long)]
    images: Option<usize>,
    /// Timed batches per run (default: two epochs' worth).
    #[arg(long)]
    batches: Option<usize>,
    /// Untimed batches before the timed runs.
    #[arg(long, default_value_t = 8)]
    warmup: usize,
    /// Timed runs per setting; the best is reported.
    #[arg(long, default_value_t = 3)]
    runs: usize,
    /// Comma-separated loader threads to measure (`LoaderConfig::threads`; 0 = auto).
    #[arg(long, value_delimiter = ',', default_value = "1,2")]
    threads: Vec<usize>,
    /// Comma-separated prefetch depths to measure (`LoaderConfig::prefetch`; 0 = none).
    #[arg(long, value_delimiter = ',', default_value = "0,2")]
    prefetch: Vec<usize>,
    /// Images per batch.
    #[arg(long, default_value_t = 128)]
    batch_size: usize,
    /// Busy consumer: 512×512 f32 matmuls per batch on candle's pool; 0 skips it.
    #[arg(long, default_value_t = 16)]
    busy_matmuls: usize,
    /// Steps (batches) of each busy-consumer run (default: one epoch's worth, at most 40).
    #[arg(long)]
    busy_batches: Option<usize>,
    /// A Python with torch + torchvision: also run torchvision's DataLoader.
    #[arg(long)]
    torch: Option<String>,
    /// The PyTorch side's script (default: scripts/bench_torch_data.py of this workspace).
    #[arg(long)]
    torch_script: Option<PathBuf>,
    /// DataLoader worker processes.
    #[arg(long, default_value_t = 2)]
    torch_workers: usize,
    /// Write the fixtures here (and keep them) instead of a temporary directory.
    #[arg(long)]
    dir: Option<PathBuf>,
    /// Seed of the fixtures, the shuffles and the augmentation.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Write every measurement as JSON here.
    #[arg(long)]
    json: Option<PathBuf>,
    /// Also print Markdown tables ready to paste into docs/benchmarks.md.
    #[arg(long)]
    markdown: bool,
    /// Internal: measure DATASET/THREADS/PREFETCH in this process and print JSON.
    #[arg(long, hide = true)]
    single: Option<String>,
}

// -------------------------------------------------------------------------------- datasets

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
enum Which {
    Stl10,
    Cifar100,
}

impl Which {
    fn parse(s: &str) -> Result<Self> {
        match s.trim().to_ascii_lowercase().as_str() {
            "stl10" => Ok(Which::Stl10),
            "cifar100" => Ok(Which::Cifar100),
            other => bail!("unknown dataset `{other}` (stl10, cifar100 or both)"),
        }
    }
    fn list(s: &str) -> Result<Vec<Self>> {
        if s.trim().eq_ignore_ascii_case("both") {
            return Ok(vec![Which::Stl10, Which::Cifar100]);
        }
        s.split(',').map(Which::parse).collect()
    }
    fn name(self) -> &'static str {
        match self {
            Which::Stl10 => "stl10",
            Which::Cifar100 => "cifar100",
        }
    }
    fn kind(self) -> DatasetKind {
        match self {
            Which::Stl10 => DatasetKind::Stl10,
            Which::Cifar100 => "cifar100".parse().expect("a known kind"),
        }
    }
    fn default_images(self) -> usize {
        match self {
            Which::Stl10 => 5000,
            Which::Cifar100 => 10000,
        }
    }
    /// What the training transforms do with this data set (docs/method.md §1).
    fn transforms(self) -> &'static str {
        match self {
            Which::Stl10 => "hflip, normalise",
            Which::Cifar100 => "resize 32→96 bilinear, hflip, normalise",
        }
    }
}

// -------------------------------------------------------------------------------- fixtures

/// Image `i` of a fixture: `c×h×w` bytes, row-major per channel, a per-image/channel gradient
/// plus noise (so resizing and flipping see image-like data), a pure function of its arguments.
pub(crate) fn fixture_image(seed: u64, i: usize, c: usize, h: usize, w: usize) -> Vec<u8> {
    let mut rng = pyramid_rng::Rng::new(seed ^ (i as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15));
    let (gy, gx, base) = (rng.below(5) as usize, rng.below(5) as usize, rng.next_u64());
    let mut out = Vec::with_capacity(c * h * w);
    let mut bits = 0u64;
    for ch in 0..c {
        let b = (base >> (8 * ch)) as usize;
        for y in 0..h {
            for x in 0..w {
                if (x & 7) == 0 {
                    bits = rng.next_u64();
                }
                let noise = (bits >> (8 * (x & 7))) as usize & 31;
                out.push(((b + gy * y + gx * x + noise) & 255) as u8);
            }
        }
    }
    out
}

/// The 0-based label of fixture image `i` among `classes`.
pub(crate) fn fixture_label(seed: u64, i: usize, classes: usize) -> usize {
    ((i as u64).wrapping_mul(2_654_435_761).wrapping_add(seed) % classes as u64) as usize
}

fn create(path: &Path) -> Result<BufWriter<std::fs::File>> {
    if let Some(p) = path.parent() {
        std::fs::create_dir_all(p).with_context(|| format!("creating {}", p.display()))?;
    }
    let f = std::fs::File::create(path).with_context(|| format!("creating {}", path.display()))?;
    Ok(BufWriter::with_capacity(1 << 20, f))
}

fn write_names(path: &Path, names: &[&str]) -> Result<()> {
    std::fs::write(path, names.join("\n") + "\n")
        .with_context(|| format!("writing {}", path.display()))
}

/// Writes `root/stl10_binary/{train_X.bin, train_y.bin, class_names.txt}` with `n` fixture
/// images in STL10's binary format: 3×96×96 bytes per image, each channel stored column-major
/// (byte `c·9216 + w·96 + h`), one label byte 1–10 per image.
pub(crate) fn write_stl10(root: &Path, n: usize, seed: u64) -> Result<()> {
    use pyramid_datasets::stl10::{transpose_image, CLASSES, SIDE};
    let dir = root.join("stl10_binary");
    let xp = dir.join("train_X.bin");
    let mut x = create(&xp)?;
    let mut col = vec![0u8; 3 * SIDE * SIDE];
    for i in 0..n {
        transpose_image(&fixture_image(seed, i, 3, SIDE, SIDE), &mut col);
        x.write_all(&col)
            .with_context(|| format!("writing {}", xp.display()))?;
    }
    x.flush()?;
    let y: Vec<u8> = (0..n)
        .map(|i| fixture_label(seed, i, 10) as u8 + 1)
        .collect();
    std::fs::write(dir.join("train_y.bin"), y)
        .with_context(|| format!("writing {}", dir.join("train_y.bin").display()))?;
    write_names(&dir.join("class_names.txt"), &CLASSES)
}

/// Writes `root/cifar-100-binary/{train.bin, fine_label_names.txt, coarse_label_names.txt}`
/// with `n` fixture records in CIFAR-100's binary format: coarse label, fine label, then the
/// R, G, B planes of a 32×32 image, row-major.
pub(crate) fn write_cifar100(root: &Path, n: usize, seed: u64) -> Result<()> {
    use pyramid_datasets::cifar::{CIFAR100_COARSE, CIFAR100_FINE, SIDE};
    let dir = root.join("cifar-100-binary");
    let p = dir.join("train.bin");
    let mut f = create(&p)?;
    for i in 0..n {
        let fine = fixture_label(seed, i, 100);
        f.write_all(&[(fine / 5) as u8, fine as u8])?;
        f.write_all(&fixture_image(seed, i, 3, SIDE, SIDE))
            .with_context(|| format!("writing {}", p.display()))?;
    }
    f.flush()?;
    write_names(&dir.join("fine_label_names.txt"), &CIFAR100_FINE)?;
    write_names(&dir.join("coarse_label_names.txt"), &CIFAR100_COARSE)
}

fn write_fixture(which: Which, root: &Path, n: usize, seed: u64) -> Result<()> {
    match which {
        Which::Stl10 => write_stl10(root, n, seed),
        Which::Cifar100 => write_cifar100(root, n, seed),
    }
}

// ----------------------------------------------------------------------------- measurement

/// One timed run: `images` in `seconds` wall time and `cpu_seconds` of CPU time.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
struct Run {
    images: usize,
    seconds: f64,
    cpu_seconds: f64,
}

/// Best wall-clock images/s and best images per CPU-second over `runs`.
fn best(runs: &[Run]) -> (f64, f64) {
    let max = |f: &dyn Fn(&Run) -> f64| runs.iter().map(f).fold(0.0f64, f64::max);
    (
        max(&|r| r.images as f64 / r.seconds),
        max(&|r| r.images as f64 / r.cpu_seconds),
    )
}

/// The busy-consumer measurement of one loader setting (per batch / step, ms).
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Busy {
    steps: usize,
    matmuls: usize,
    /// The consumer's compute alone (no loader running), wall ms per step…
    alone_ms: f64,
    /// …and process CPU ms per step.
    alone_cpu_ms: f64,
    /// Wall ms per step with the loader: waiting for the batch + compute…
    step_ms: f64,
    /// …and process CPU ms per step (compute + loader).
    step_cpu_ms: f64,
    /// Of which waiting in `next()` (mean over all steps)…
    wait_ms: f64,
    /// …over the steps that took a batch other than an epoch's first…
    wait_within_epoch_ms: f64,
    /// …and over those that took an epoch's first batch (the prefetch thread starts per epoch).
    wait_epoch_start_ms: f64,
    /// Of which the consumer's compute.
    compute_ms: f64,
}

/// What a child (`--single`) prints: one loader setting on one data set.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Ours {
    dataset: Which,
    n: usize,
    /// Requested `LoaderConfig::threads` and what it resolved to.
    threads_requested: usize,
    threads: usize,
    prefetch: usize,
    /// Whether this is `LoaderConfig::paper_train`'s own setting.
    default: bool,
    batch_shape: Vec<usize>,
    read_seconds: f64,
    runs: Vec<Run>,
    busy: Option<Busy>,
    peak_rss_kib: u64,
}

/// What scripts/bench_torch_data.py prints.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Torch {
    dataset: Which,
    n: usize,
    workers: usize,
    batch_shape: Vec<usize>,
    runs: Vec<Run>,
    peak_rss_kib: u64,
    version: String,
}

/// Batches of consecutive epochs, without end.
struct Stream<'a> {
    loader: &'a Loader,
    epoch: u64,
    it: BatchIter,
}

impl<'a> Stream<'a> {
    /// From batch `start` of `epoch` on.
    fn new(loader: &'a Loader, epoch: u64, start: usize) -> Self {
        Self {
            loader,
            epoch,
            it: loader.iter_from(epoch, start),
        }
    }
    fn next_batch(&mut self) -> Result<Batch> {
        loop {
            if let Some(b) = self.it.next() {
                return Ok(b?);
            }
            self.epoch += 1;
            self.it = self.loader.iter(self.epoch);
        }
    }
}

/// `DATASET/THREADS/PREFETCH` → its parts.
fn parse_single(s: &str) -> Result<(Which, usize, usize)> {
    let p: Vec<&str> = s.split('/').collect();
    let [d, t, f] = p.as_slice() else {
        bail!("bad setting `{s}` (expected DATASET/THREADS/PREFETCH)");
    };
    Ok((
        Which::parse(d)?,
        t.parse().with_context(|| format!("threads in `{s}`"))?,
        f.parse().with_context(|| format!("prefetch in `{s}`"))?,
    ))
}

/// A trainer-like step on candle's global pool: read the batch, then `k` matmuls.
fn consume(a: &Tensor, images: &Tensor, k: usize) -> Result<f32> {
    let mut s = images.sum_all()?.to_scalar::<f32>()?;
    for _ in 0..k {
        s += a.matmul(a)?.sum_all()?.to_scalar::<f32>()?;
    }
    Ok(s)
}

fn ms_since(t: Instant) -> f64 {
    t.elapsed().as_secs_f64() * 1e3
}

/// The child side: one data set, one loader setting.
fn run_single(a: &Args, spec: &str, dir: &Path) -> Result<Ours> {
    let (which, threads, prefetch) = parse_single(spec)?;
    let kind = which.kind();
    let t = Instant::now();
    let data = pyramid_datasets::load(kind, Some(dir), Split::Train)
        .with_context(|| format!("reading the {} fixture in {}", which.name(), dir.display()))?;
    let read_seconds = t.elapsed().as_secs_f64();
    let paper = LoaderConfig::paper_train(kind, a.seed);
    let cfg = LoaderConfig {
        batch_size: a.batch_size,
        threads,
        prefetch,
        ..paper.clone()
    };
    let default =
        (cfg.effective_threads(), cfg.prefetch) == (paper.effective_threads(), paper.prefetch);
    let n = data.n;
    let dev = Device::Cpu;
    let loader = Loader::new(data, cfg.clone(), &dev)?;
    let nb = loader.num_batches();
    let batches = a.batches.unwrap_or(2 * nb).max(1);

    let mut stream = Stream::new(&loader, 0, 0);
    let mut shape = vec![];
    for _ in 0..a.warmup {
        shape = stream.next_batch()?.images.dims().to_vec();
    }
    let mut runs = vec![];
    for _ in 0..a.runs {
        let (c0, t0) = (cpu_time(), Instant::now());
        let mut images = 0;
        for _ in 0..batches {
            let b = stream.next_batch()?;
            images += b.images.dim(0)?;
            std::hint::black_box(&b.images);
        }
        runs.push(Run {
            images,
            seconds: t0.elapsed().as_secs_f64(),
            cpu_seconds: cpu_time() - c0,
        });
    }
    let next_epoch = stream.epoch + 1;
    drop(stream);

    let busy = if a.busy_matmuls > 0 {
        Some(busy_consumer(a, &loader, next_epoch)?)
    } else {
        None
    };
    Ok(Ours {
        dataset: which,
        n,
        threads_requested: threads,
        threads: cfg.effective_threads(),
        prefetch,
        default,
        batch_shape: shape,
        read_seconds,
        runs,
        busy,
        peak_rss_kib: peak_rss_kib(),
    })
}

/// The busy consumer: `--runs` pairs of runs of `--busy-batches` steps (default: one epoch's
/// worth, at most 40), first the compute alone, then the compute fed by the loader; the best
/// (fastest) of each is kept. Each loader run starts mid-epoch (after one untimed batch) so
/// that it crosses exactly one epoch start, where `Loader::iter` starts a new prefetch thread.
fn busy_consumer(a: &Args, loader: &Loader, first_epoch: u64) -> Result<Busy> {
    let dev = Device::Cpu;
    let nb = loader.num_batches();
    let steps = a.busy_batches.unwrap_or(nb.min(40)).max(1);
    let m = Tensor::randn(0f32, 1.0, (512, 512), &dev)?;
    let (c, h, w) = loader.sample_shape();
    let dummy = Tensor::zeros((a.batch_size, c, h, w), candle_core::DType::F32, &dev)?;
    let mut check = consume(&m, &dummy, a.busy_matmuls)?; // warm-up
    let mut best: Option<Busy> = None;
    let (mut alone_ms, mut alone_cpu_ms) = (f64::INFINITY, f64::INFINITY);
    for r in 0..a.runs {
        let (t, c0) = (Instant::now(), cpu_time());
        for _ in 0..steps {
            check += consume(&m, &dummy, a.busy_matmuls)?;
        }
        alone_ms = alone_ms.min(ms_since(t) / steps as f64);
        alone_cpu_ms = alone_cpu_ms.min((cpu_time() - c0) * 1e3 / steps as f64);

        let start = nb.saturating_sub(steps.div_ceil(2));
        let mut stream = Stream::new(loader, first_epoch + 2 * r as u64, start);
        check += consume(&m, &stream.next_batch()?.images, a.busy_matmuls)?;
        let (mut wait, mut wait_start, mut starts, mut compute) = (0.0, 0.0, 0usize, 0.0);
        let (t, c0) = (Instant::now(), cpu_time());
        for _ in 0..steps {
            let tw = Instant::now();
            let b = stream.next_batch()?;
            let waited = ms_since(tw);
            wait += waited;
            if b.index == 0 {
                wait_start += waited;
                starts += 1;
            }
            let tc = Instant::now();
            check += consume(&m, &b.images, a.busy_matmuls)?;
            compute += ms_since(tc);
        }
        let step_ms = ms_since(t) / steps as f64;
        let step_cpu_ms = (cpu_time() - c0) * 1e3 / steps as f64;
        let within = steps - starts;
        let mean = |v: f64, k: usize| if k > 0 { v / k as f64 } else { 0.0 };
        let run = Busy {
            steps,
            matmuls: a.busy_matmuls,
            alone_ms,
            alone_cpu_ms,
            step_ms,
            step_cpu_ms,
            wait_ms: wait / steps as f64,
            wait_within_epoch_ms: mean(wait - wait_start, within),
            wait_epoch_start_ms: mean(wait_start, starts),
            compute_ms: compute / steps as f64,
        };
        if best.as_ref().is_none_or(|b| run.step_ms < b.step_ms) {
            best = Some(run);
        }
    }
    if check.is_nan() {
        bail!("the busy consumer computed NaN");
    }
    let mut b = best.expect("--runs ≥ 1");
    (b.alone_ms, b.alone_cpu_ms) = (alone_ms, alone_cpu_ms);
    Ok(b)
}

/// Runs `cmd` and parses the last stdout line that is a `T` in JSON. Stderr passes through.
pub(crate) fn run_json<T: DeserializeOwned>(mut cmd: Command, what: &str) -> Result<T> {
    cmd.stdout(Stdio::piped()).stderr(Stdio::inherit());
    let mut child = cmd.spawn().with_context(|| format!("starting {what}"))?;
    let mut out = String::new();
    child
        .stdout
        .take()
        .expect("piped")
        .read_to_string(&mut out)?;
    let st = child.wait()?;
    let parsed = out
        .lines()
        .rev()
        .find_map(|l| serde_json::from_str::<T>(l.trim()).ok());
    match (st.success(), parsed) {
        (true, Some(r)) => Ok(r),
        (ok, _) => {
            let tail: String = out.lines().rev().take(5).collect::<Vec<_>>().join(" | ");
            let why = if ok {
                "printed no result".to_string()
            } else {
                format!("failed with {st}")
            };
            bail!("{what} {why} (stdout tail: {tail})")
        }
    }
}

fn default_torch_script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../scripts/bench_torch_data.py")
}

/// The (threads, prefetch) settings to measure, in order, without duplicates after resolving
/// `threads = 0`.
fn settings(threads: &[usize], prefetch: &[usize]) -> Vec<(usize, usize)> {
    let mut out: Vec<(usize, usize)> = vec![];
    for &t in threads {
        for &p in prefetch {
            let resolved = LoaderConfig {
                threads: t,
                ..LoaderConfig::new(1)
            }
            .effective_threads();
            if !out.iter().any(|&(t2, p2)| {
                p2 == p
                    && LoaderConfig {
                        threads: t2,
                        ..LoaderConfig::new(1)
                    }
                    .effective_threads()
                        == resolved
            }) {
                out.push((t, p));
            }
        }
    }
    out
}

// ------------------------------------------------------------------------------------ entry

/// `pyramid-bench data ARGS`: `argv` are the arguments after `data`.
pub fn main(argv: impl IntoIterator<Item = std::ffi::OsString>) -> Result<()> {
    let a = Args::parse_from(std::iter::once("pyramid-bench data".into()).chain(argv));
    if a.runs == 0 || a.batch_size == 0 {
        bail!("--runs and --batch-size must be at least 1");
    }
    if let Some(spec) = &a.single {
        let dir = a.dir.as_deref().context("--single needs --dir")?;
        let r = run_single(&a, spec, dir)?;
        println!("{}", serde_json::to_string(&r)?);
        return Ok(());
    }
    let which = Which::list(&a.dataset)?;
    if a.threads.is_empty() || a.prefetch.is_empty() {
        bail!("--threads and --prefetch need at least one value");
    }
    let settings = settings(&a.threads, &a.prefetch);

    let tmp;
    let dir = match &a.dir {
        Some(d) => d.clone(),
        None => {
            tmp = tempfile::Builder::new()
                .prefix("pyramid-bench-data-")
                .tempdir()?;
            tmp.path().to_path_buf()
        }
    };
    let mut sizes = vec![];
    for &w in &which {
        let n = a.images.unwrap_or_else(|| w.default_images());
        let t = Instant::now();
        write_fixture(w, &dir, n, a.seed)?;
        eprintln!(
            "pyramid-bench data: wrote {n} {} images to {} in {:.1} s",
            w.name(),
            dir.display(),
            t.elapsed().as_secs_f64()
        );
        sizes.push(n);
    }

    let cpu = CpuInfo::read();
    let load_before = loadavg();
    let started = Instant::now();
    eprintln!(
        "pyramid-bench data: {} setting(s) per data set, batch {}, {} warm-up batch(es), best of {} run(s), load average {load_before}",
        settings.len(),
        a.batch_size,
        a.warmup,
        a.runs
    );
    let exe = std::env::current_exe()?;
    let script = a.torch_script.clone().unwrap_or_else(default_torch_script);
    let mut ours: Vec<Ours> = vec![];
    let mut torch: Vec<Torch> = vec![];
    for (&w, &n) in which.iter().zip(&sizes) {
        let batches = a.batches.unwrap_or(2 * n.div_ceil(a.batch_size)).max(1);
        for &(t, p) in &settings {
            let spec = format!("{}/{t}/{p}", w.name());
            let mut c = Command::new(&exe);
            c.arg("data")
                .args(["--single", &spec])
                .arg("--dir")
                .arg(&dir)
                .args(["--batch-size", &a.batch_size.to_string()])
                .args(["--batches", &batches.to_string()])
                .args(["--warmup", &a.warmup.to_string()])
                .args(["--runs", &a.runs.to_string()])
                .args(["--busy-matmuls", &a.busy_matmuls.to_string()])
                .args(["--seed", &a.seed.to_string()]);
            if let Some(b) = a.busy_batches {
                c.args(["--busy-batches", &b.to_string()]);
            }
            let t0 = Instant::now();
            let r: Ours = run_json(c, &format!("ours {spec}"))?;
            let (ips, cps) = best(&r.runs);
            eprintln!(
                "  ours  {spec:<16} {ips:>8.0} img/s {cps:>8.0} img/CPU-s  peak RSS {:>5.0} MiB{}  [{:.0} s]",
                r.peak_rss_kib as f64 / 1024.0,
                r.busy.as_ref().map_or(String::new(), |b| format!(
                    "  busy: waited {:.1} of {:.1} ms/step ({:.2} within an epoch; compute alone {:.1})",
                    b.wait_ms, b.step_ms, b.wait_within_epoch_ms, b.alone_ms
                )),
                t0.elapsed().as_secs_f64()
            );
            ours.push(r);
        }
        if let Some(py) = &a.torch {
            let mut c = Command::new(py);
            c.arg(&script)
                .args(["--dataset", w.name()])
                .arg("--dir")
                .arg(&dir)
                .args(["--batch-size", &a.batch_size.to_string()])
                .args(["--batches", &batches.to_string()])
                .args(["--warmup", &a.warmup.to_string()])
                .args(["--runs", &a.runs.to_string()])
                .args(["--workers", &a.torch_workers.to_string()])
                .args(["--seed", &a.seed.to_string()]);
            let t0 = Instant::now();
            let r: Torch = run_json(c, &format!("torch {}", w.name()))?;
            let (ips, cps) = best(&r.runs);
            eprintln!(
                "  torch {:<16} {ips:>8.0} img/s {cps:>8.0} img/CPU-s  peak RSS {:>5.0} MiB  [{:.0} s]",
                format!("{}/{}w", w.name(), r.workers),
                r.peak_rss_kib as f64 / 1024.0,
                t0.elapsed().as_secs_f64()
            );
            torch.push(r);
        }
    }
    let load_after = loadavg();
    report(&a, &cpu, &ours, &torch, &load_before, &load_after, started)?;
    if let Some(path) = &a.json {
        let doc = serde_json::json!({
            "cpu": { "name": cpu.name, "logical_cpus": cpu.cpus, "mhz": cpu.mhz },
            "batch_size": a.batch_size,
            "warmup": a.warmup,
            "runs": a.runs,
            "busy_matmuls": a.busy_matmuls,
            "load_average_before": load_before,
            "load_average_after": load_after,
            "ours": ours,
            "torch": torch,
        });
        std::fs::write(path, serde_json::to_string_pretty(&doc)?)
            .with_context(|| format!("writing {}", path.display()))?;
        eprintln!("wrote {}", path.display());
    }
    Ok(())
}

fn ratio(a: f64, b: Option<f64>) -> String {
    b.map_or("–".into(), |b| format!("{:.2}×", a / b))
}

fn report(
    a: &Args,
    cpu: &CpuInfo,
    ours: &[Ours],
    torch: &[Torch],
    load_before: &str,
    load_after: &str,
    started: Instant,
) -> Result<()> {
    let torch_of = |w: Which| torch.iter().find(|t| t.dataset == w).map(|t| best(&t.runs));
    println!();
    println!(
        "CPU: {} ({} logical CPUs); batch {}; best of {} run(s) after {} warm-up batch(es); load average before {load_before}, after {load_after}; {:.0} s",
        cpu.name,
        cpu.cpus,
        a.batch_size,
        a.runs,
        a.warmup,
        started.elapsed().as_secs_f64()
    );
    println!(
        "{:<9} {:<24} {:>8} {:>9} {:>10} {:>10} {:>9} {:>9} {:>9}",
        "dataset",
        "pipeline",
        "threads",
        "prefetch",
        "img/s",
        "img/CPU-s",
        "RSS MiB",
        "x torch",
        "CPU x"
    );
    let mut rows = vec![];
    for r in ours {
        let (ips, cps) = best(&r.runs);
        let t = torch_of(r.dataset);
        rows.push((
            r.dataset,
            format!("ours{}", if r.default { " (default)" } else { "" }),
            r.threads.to_string(),
            r.prefetch.to_string(),
            ips,
            cps,
            r.peak_rss_kib as f64 / 1024.0,
            ratio(ips, t.map(|t| t.0)),
            ratio(cps, t.map(|t| t.1)),
        ));
    }
    for r in torch {
        let (ips, cps) = best(&r.runs);
        rows.push((
            r.dataset,
            "torchvision DataLoader".into(),
            format!("{} proc", r.workers),
            "2/worker".into(),
            ips,
            cps,
            r.peak_rss_kib as f64 / 1024.0,
            "–".into(),
            "–".into(),
        ));
    }
    rows.sort_by_key(|r| r.0);
    for (w, p, t, f, ips, cps, rss, x, xc) in &rows {
        println!(
            "{:<9} {p:<24} {t:>8} {f:>9} {ips:>10.0} {cps:>10.0} {rss:>9.0} {x:>9} {xc:>9}",
            w.name()
        );
    }
    let busy: Vec<(&Ours, &Busy)> = ours
        .iter()
        .filter_map(|r| r.busy.as_ref().map(|b| (r, b)))
        .collect();
    if !busy.is_empty() {
        println!();
        println!(
            "busy consumer ({} × 512² matmuls per batch on candle's pool), ms per step:",
            a.busy_matmuls
        );
        let header: [[&str; 12]; 2] = [
            [
                "", "", "", "alone", "", "waited", "within", "epoch", "", "", "CPU ms", "CPU ms",
            ],
            [
                "dataset",
                "threads",
                "prefetch",
                "compute",
                "step",
                "(mean)",
                "epoch",
                "start",
                "compute",
                "slowdown",
                "alone",
                "w/ loader",
            ],
        ];
        for line in header {
            println!("{}", busy_text_line(&line.map(String::from)));
        }
        for (r, b) in &busy {
            println!("{}", busy_text_line(&busy_cells(r, b)));
        }
    }
    if a.markdown {
        println!();
        println!("| data set | transforms | pipeline | threads | prefetch | img/s | img/CPU-s | peak RSS MiB | img/s vs torch | img/CPU-s vs torch |");
        println!("|---|---|---|---|---|---|---|---|---|---|");
        for (w, p, t, f, ips, cps, rss, x, xc) in &rows {
            println!(
                "| {} | {} | {p} | {t} | {f} | {ips:.0} | {cps:.0} | {rss:.0} | {x} | {xc} |",
                w.name(),
                w.transforms()
            );
        }
        if !busy.is_empty() {
            println!();
            println!("| data set | threads | prefetch | compute alone | step | waited (mean) | waited within epoch | waited at epoch start | compute | compute slowdown | CPU alone | CPU with loader |");
            println!("|---|---|---|---|---|---|---|---|---|---|---|---|");
            for (r, b) in &busy {
                println!("| {} |", busy_cells(r, b).join(" | "));
            }
        }
    }
    Ok(())
}

/// The cells of one busy-consumer row, formatted once for both the text and the Markdown table.
fn busy_cells(r: &Ours, b: &Busy) -> [String; 12] {
    [
        r.dataset.name().to_string(),
        r.threads.to_string(),
        r.prefetch.to_string(),
        format!("{:.1}", b.alone_ms),
        format!("{:.1}", b.step_ms),
        format!("{:.2}", b.wait_ms),
        format!("{:.2}", b.wait_within_epoch_ms),
        format!("{:.1}", b.wait_epoch_start_ms),
        format!("{:.1}", b.compute_ms),
        format!("{:.2}×", b.compute_ms / b.alone_ms),
        format!("{:.1}", b.alone_cpu_ms),
        format!("{:.1}", b.step_cpu_ms),
    ]
}

/// One line of the busy-consumer text table: the first cell left-aligned, the rest
/// right-aligned, with bars between the column groups.
fn busy_text_line(cells: &[String; 12]) -> String {
    const WIDTHS: [usize; 12] = [9, 7, 8, 8, 8, 8, 8, 8, 8, 8, 8, 9];
    let mut line = String::new();
    for (i, (cell, width)) in cells.iter().zip(WIDTHS).enumerate() {
        if i > 0 {
            line.push_str(if matches!(i, 3 | 5 | 8 | 10) {
                " | "
            } else {
                " "
            });
        }
        if i == 0 {
            line.push_str(&format!("{cell:<width$}"));
        } else {
            line.push_str(&format!("{cell:>width$}"));
        }
    }
    line
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stl10_fixture_round_trips_through_the_reader() {
        let dir = tempfile::tempdir().unwrap();
        write_stl10(dir.path(), 3, 7).unwrap();
        let d = pyramid_datasets::load(DatasetKind::Stl10, Some(dir.path()), Split::Train).unwrap();
        assert_eq!((d.n, d.channels, d.height, d.width), (3, 3, 96, 96));
        for i in 0..3 {
            assert_eq!(d.image(i), fixture_image(7, i, 3, 96, 96).as_slice());
            assert_eq!(d.labels[i] as usize, fixture_label(7, i, 10));
        }
        assert_eq!(d.class_names[0], "airplane");
        // Column-major on disk: byte 1 of the file is pixel (c0, h1, w0).
        let raw = std::fs::read(dir.path().join("stl10_binary/train_X.bin")).unwrap();
        assert_eq!(raw.len(), 3 * 3 * 96 * 96);
        assert_eq!(raw[1], d.pixel(0, 0, 1, 0));
        assert_eq!(raw[96], d.pixel(0, 0, 0, 1));
    }

    #[test]
    fn cifar100_fixture_round_trips_through_the_reader() {
        let dir = tempfile::tempdir().unwrap();
        write_cifar100(dir.path(), 4, 3).unwrap();
        let kind = Which::Cifar100.kind();
        let d = pyramid_datasets::load(kind, Some(dir.path()), Split::Train).unwrap();
        assert_eq!((d.n, d.height, d.num_classes()), (4, 32, 100));
        for i in 0..4 {
            assert_eq!(d.image(i), fixture_image(3, i, 3, 32, 32).as_slice());
            assert_eq!(d.labels[i] as usize, fixture_label(3, i, 100));
        }
        let coarse: DatasetKind = "cifar100:coarse".parse().unwrap();
        let c = pyramid_datasets::load(coarse, Some(dir.path()), Split::Train).unwrap();
        assert_eq!(c.labels[1] as usize, fixture_label(3, 1, 100) / 5);
    }

    #[test]
    fn fixtures_are_deterministic_and_varied() {
        assert_eq!(fixture_image(1, 5, 3, 8, 8), fixture_image(1, 5, 3, 8, 8));
        assert_ne!(fixture_image(1, 5, 3, 8, 8), fixture_image(1, 6, 3, 8, 8));
        assert_ne!(fixture_image(1, 5, 3, 8, 8), fixture_image(2, 5, 3, 8, 8));
        let labels: std::collections::BTreeSet<usize> =
            (0..200).map(|i| fixture_label(1, i, 10)).collect();
        assert_eq!(labels.len(), 10);
    }

    #[test]
    fn args_parse() {
        let a = Args::try_parse_from([
            "pyramid-bench data",
            "--dataset",
            "stl10",
            "--images",
            "256",
            "--batches",
            "4",
            "--threads",
            "2",
            "--torch",
            "python3",
            "--markdown",
            "--json",
            "out.json",
            "--dir",
            "/tmp/x",
        ])
        .unwrap();
        assert_eq!(Which::list(&a.dataset).unwrap(), [Which::Stl10]);
        assert_eq!((a.images, a.batches), (Some(256), Some(4)));
        assert_eq!((a.threads, a.prefetch), (vec![2], vec![0, 2]));
        assert_eq!(a.torch.as_deref(), Some("python3"));
        assert!(a.markdown);
        assert_eq!(a.dir, Some(PathBuf::from("/tmp/x")));
        let d = Args::try_parse_from(["pyramid-bench data"]).unwrap();
        assert_eq!(
            Which::list(&d.dataset).unwrap(),
            [Which::Stl10, Which::Cifar100]
        );
        assert_eq!((d.threads, d.runs, d.batch_size), (vec![1, 2], 3, 128));
        assert!(Which::list("mnist").is_err());
        assert!(Args::try_parse_from(["pyramid-bench data", "--models", "vgg19"]).is_err());
        assert_eq!(
            parse_single("cifar100/2/0").unwrap(),
            (Which::Cifar100, 2, 0)
        );
        assert!(parse_single("cifar100/2").is_err());
    }

    #[test]
    fn settings_skip_duplicates_of_auto() {
        let auto = LoaderConfig::new(1).effective_threads();
        let s = settings(&[auto, 0, 3], &[0, 2]);
        assert_eq!(s, [(auto, 0), (auto, 2), (3, 0), (3, 2)]);
    }

    #[test]
    fn best_run() {
        let runs = [
            Run {
                images: 100,
                seconds: 1.0,
                cpu_seconds: 0.5,
            },
            Run {
                images: 100,
                seconds: 0.5,
                cpu_seconds: 1.0,
            },
        ];
        assert_eq!(best(&runs), (200.0, 200.0));
    }

    #[test]
    fn a_tiny_single_run() {
        let dir = tempfile::tempdir().unwrap();
        write_cifar100(dir.path(), 10, 1).unwrap();
        let a = Args::try_parse_from([
            "pyramid-bench data",
            "--batch-size",
            "4",
            "--batches",
            "4",
            "--warmup",
            "1",
            "--runs",
            "1",
            "--busy-matmuls",
            "1",
        ])
        .unwrap();
        let r = run_single(&a, "cifar100/1/2", dir.path()).unwrap();
        assert_eq!(r.batch_shape, [4, 3, 96, 96]);
        // 4 batches from epoch 0 (3 batches: 4, 4, 2) after one warm-up batch: 4 + 2 + 4 + 4.
        assert_eq!(r.runs[0].images, 14);
        assert_eq!(
            r.default,
            r.threads == LoaderConfig::new(1).effective_threads()
        );
        let b = r.busy.unwrap();
        assert_eq!(b.steps, 3);
        assert!(b.wait_ms <= b.step_ms && b.alone_ms > 0.0);
        // Each loader run starts mid-epoch and crosses one epoch start.
        assert!(b.wait_epoch_start_ms >= 0.0 && b.step_cpu_ms > 0.0);
    }
}
