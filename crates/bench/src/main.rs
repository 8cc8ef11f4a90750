//! `pyramid-bench` (`cargo xtask bench`): whole-model throughput of VGG19 and SVGG5.
//!
//! Times a training step (forward + cross-entropy, backward, Adam update) and inference for each
//! model, backend (`fast` = crates/ops kernels, `candle` = candle's own conv / pool) and case.
//! A `fast` training step on the CPU is the engine's, `Model::train_step_ce` on the fused path
//! (forward and backward timed as one); elsewhere it is candle's autograd. The cases:
//!
//! - `train96`: 96×96, batch 32, training step;
//! - `infer96`: 96×96, batch 64, inference (eval mode, no dropout);
//! - `train32`: 32×32, batch 64, training step;
//! - `infer32`: 32×32, batch 64, inference (not in the default set);
//! - `epoch-d16-bn`, `epoch-d16-nobn`, `epoch-d8-bn`, `epoch-d8-nobn`: one whole training epoch of
//!   VGG19 (width ÷16 or ÷8, with or without batch norm) over full Fashion-MNIST as `pyramid run`
//!   does it for the CPU configs, then the test pass (epoch.rs; PyTorch side:
//!   scripts/bench_torch_epoch.py). Model-independent: they run once, not per `--models` entry.
//!
//! Every case runs in a fresh child process (this binary re-invoked with the hidden
//! `--single CASE`), so its peak RSS (`VmHWM`) is its own. With `--torch PYTHON` the same cases
//! run in PyTorch (scripts/bench_torch.py, also one process per case) and the ratio ours/torch
//! is printed. Timings are best-of-N (after one warm-up step); GFLOP/s counts 2×MACs per image
//! for inference and 6×MACs for a training step (backward ≈ 2× forward).
//!
//! `pyramid-bench data ...` (`cargo xtask bench data`) is the input-pipeline bench: see data.rs.
//! `pyramid-bench resume ...` (`cargo xtask bench resume`) times the per-epoch resume state: see
//! resume.rs.

mod data;
mod epoch;
mod resume;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use anyhow::{anyhow, bail, Context, Result};
use candle_core::{DType, Device, Tensor};
use clap::Parser;
use pyramid_models::{Backend, Mode, Model, ModelConfig, ModelId, ModelOptions, Scheme};
use serde::{Deserialize, Serialize};

#[derive(Parser, Debug)]
#[command(
    name = "pyramid-bench",
    about = "Training / inference throughput of VGG19 and SVGG5 (candle fast/candle backends, optionally vs PyTorch)"
)]
struct Args {
    /// Comma-separated models: vgg19, svgg5 (or any SVGG name, e.g. svgg3b).
    #[arg(long, default_value = "vgg19,svgg5", value_delimiter = ',')]
    models: Vec<String>,
    /// Comma-separated cases: train96 (b32), infer96 (b64), train32 (b64), infer32 (b64), and the
    /// whole-epoch cases epoch-d16-bn, epoch-d16-nobn, epoch-d8-bn, epoch-d8-nobn.
    #[arg(
        long,
        default_value = "train96,infer96,train32,epoch-d16-bn,epoch-d16-nobn,epoch-d8-bn,epoch-d8-nobn",
        value_delimiter = ','
    )]
    cases: Vec<String>,
    /// Epoch cases: fused (the fused training step the engine uses), candle (the same epoch
    /// through candle's autograd, `Model::set_fused(false)`) or both.
    #[arg(long, default_value = "fused")]
    epoch_backend: String,
    /// Epoch cases: run at most N training and N test batches (quick checks; not an epoch).
    #[arg(long)]
    limit_batches: Option<usize>,
    /// Print per-layer wall times: of the fused step's training batches (epoch cases), and of
    /// the timed passes of the inference cases (fast backend, CPU).
    #[arg(long)]
    profile: bool,
    /// Epoch cases: Fashion-MNIST directory (default: $PYRAMID_DATA, then
    /// /usr/share/datasets/fashion-mnist).
    #[arg(long)]
    data_root: Option<PathBuf>,
    /// Timed iterations per case (after one warm-up iteration); the best is reported.
    #[arg(long, default_value_t = 3)]
    iters: usize,
    /// Timed iterations for the candle backend (default: --iters); a candle VGG19 training
    /// step takes tens of seconds on 2 cores.
    #[arg(long)]
    candle_iters: Option<usize>,
    /// fast, candle or both.
    #[arg(long, default_value = "fast")]
    backend: String,
    /// A Python with torch (+torchvision): also run the cases in PyTorch and print ours/torch.
    #[arg(long)]
    torch: Option<String>,
    /// The PyTorch side's script (default: scripts/bench_torch.py of this workspace); the epoch
    /// cases run bench_torch_epoch.py from the same folder.
    #[arg(long)]
    torch_script: Option<PathBuf>,
    /// cpu or cuda (cuda needs the `cuda` feature: `cargo xtask bench --device cuda`).
    #[arg(long, default_value = "cpu")]
    device: String,
    /// Compute threads (RAYON_NUM_THREADS for ours, torch.set_num_threads for torch).
    /// Default: all logical CPUs.
    #[arg(long)]
    threads: Option<usize>,
    /// Write every measurement as JSON here.
    #[arg(long)]
    json: Option<PathBuf>,
    /// Also print a Markdown table ready to paste into docs/benchmarks.md.
    #[arg(long)]
    markdown: bool,
    /// Internal: run one case in this process and print its measurement as JSON.
    #[arg(long, hide = true)]
    single: Option<String>,
}

// ------------------------------------------------------------------------------------ cases

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
enum Kind {
    Train,
    Infer,
}

/// One benchmark case: `MODEL/KIND/SIZE/BATCH/BACKEND`, e.g. `vgg19/train/96/32/fast`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct Case {
    model: String,
    kind: Kind,
    size: usize,
    batch: usize,
    /// fast, candle or torch.
    backend: String,
}

impl Case {
    fn to_arg(&self) -> String {
        let k = match self.kind {
            Kind::Train => "train",
            Kind::Infer => "infer",
        };
        format!(
            "{}/{k}/{}/{}/{}",
            self.model, self.size, self.batch, self.backend
        )
    }

    fn parse(s: &str) -> Result<Self> {
        let p: Vec<&str> = s.split('/').collect();
        let [model, kind, size, batch, backend] = p.as_slice() else {
            bail!("bad case `{s}` (expected MODEL/train|infer/SIZE/BATCH/BACKEND)");
        };
        let kind = match *kind {
            "train" => Kind::Train,
            "infer" => Kind::Infer,
            k => bail!("bad case kind `{k}` in `{s}`"),
        };
        Ok(Case {
            model: model.to_string(),
            kind,
            size: size.parse().with_context(|| format!("size in `{s}`"))?,
            batch: batch.parse().with_context(|| format!("batch in `{s}`"))?,
            backend: backend.to_string(),
        })
    }

    /// The case name without model and backend, as in `--cases`.
    fn short(&self) -> String {
        let k = match self.kind {
            Kind::Train => "train",
            Kind::Infer => "infer",
        };
        format!("{k}{} b{}", self.size, self.batch)
    }
}

/// `train96` → (Train, 96, 32) etc.
fn case_shape(name: &str) -> Result<(Kind, usize, usize)> {
    Ok(match name.trim() {
        "train96" => (Kind::Train, 96, 32),
        "infer96" => (Kind::Infer, 96, 64),
        "train32" => (Kind::Train, 32, 64),
        "infer32" => (Kind::Infer, 32, 64),
        other => bail!("unknown case `{other}` (train96, infer96, train32, infer32)"),
    })
}

fn model_id(name: &str) -> Result<ModelId> {
    ModelId::parse(name, Scheme::Forward).map_err(|e| anyhow!("model `{name}`: {e}"))
}

fn options(size: usize) -> ModelOptions {
    ModelOptions::default().with_input_size(size)
}

/// Multiply-accumulates per image of `model` at `size`×`size`.
fn macs_per_image(model: &str, size: usize) -> Result<u64> {
    let spec = pyramid_models::ModelSpec::of(model_id(model)?, options(size))?;
    Ok(spec.macs())
}

/// FLOPs of one step over `batch` images: 2×MACs forward, 6×MACs for a training step.
fn step_flops(kind: Kind, macs_per_image: u64, batch: usize) -> f64 {
    let per = match kind {
        Kind::Train => 6.0,
        Kind::Infer => 2.0,
    };
    per * macs_per_image as f64 * batch as f64
}

// ------------------------------------------------------------------------------ measurement

/// Per-iteration timings of one case (ms), as printed by `--single` and by bench_torch.py.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
struct Raw {
    fwd_ms: Vec<f64>,
    #[serde(default)]
    bwd_ms: Vec<f64>,
    #[serde(default)]
    upd_ms: Vec<f64>,
    /// Process CPU time per iteration (all threads), ms.
    #[serde(default)]
    cpu_ms: Vec<f64>,
    /// VmHWM at the end of the process, KiB.
    peak_rss_kib: u64,
    #[serde(default)]
    threads: usize,
    /// Library version (torch) or "candle 0.11.1".
    #[serde(default)]
    version: String,
    /// Peak device memory (cuda), MiB, when known.
    #[serde(default)]
    gpu_peak_mib: Option<f64>,
    /// Training cases: the step ran as the engine runs it on the CPU, the fused forward and
    /// backward of `Model::train_step_ce`, timed as one (`fwd_ms`; `bwd_ms` is 0).
    #[serde(default)]
    fused_step: bool,
}

impl Raw {
    fn step_ms(&self, i: usize) -> f64 {
        self.fwd_ms[i] + self.bwd_ms.get(i).unwrap_or(&0.0) + self.upd_ms.get(i).unwrap_or(&0.0)
    }
    /// Index of the fastest iteration.
    fn best(&self) -> usize {
        (0..self.fwd_ms.len())
            .min_by(|&a, &b| self.step_ms(a).total_cmp(&self.step_ms(b)))
            .unwrap_or(0)
    }
}

/// A summarised case.
#[derive(Debug, Clone, Serialize)]
struct Result1 {
    case: Case,
    iters: usize,
    /// Best iteration's split (ms).
    fwd_ms: f64,
    bwd_ms: f64,
    upd_ms: f64,
    step_ms: f64,
    mean_step_ms: f64,
    images_per_s: f64,
    /// Images/s from process CPU time / threads (a load-independent, optimistic estimate).
    images_per_s_cpu: Option<f64>,
    gflops: f64,
    peak_rss_mib: f64,
    gpu_peak_mib: Option<f64>,
    version: String,
    raw: Raw,
}

impl Result1 {
    /// The step's parts in ms, with `digits` decimals: `fwd / bwd / upd`, `fwd+bwd … / upd …`
    /// for a fused training step, `fwd / – / –` for inference.
    fn split(&self, digits: usize) -> String {
        let f = |v: f64| format!("{v:.digits$}");
        match (self.case.kind, self.raw.fused_step) {
            (Kind::Train, true) => {
                format!("fwd+bwd {} fused / upd {}", f(self.fwd_ms), f(self.upd_ms))
            }
            (Kind::Train, false) => format!(
                "fwd {} / bwd {} / upd {}",
                f(self.fwd_ms),
                f(self.bwd_ms),
                f(self.upd_ms)
            ),
            (Kind::Infer, _) => format!("fwd {} / – / –", f(self.fwd_ms)),
        }
    }
}

fn summarise(case: Case, raw: Raw, macs: u64) -> Result<Result1> {
    let n = raw.fwd_ms.len();
    if n == 0 {
        bail!("no timed iterations");
    }
    let b = raw.best();
    let step = raw.step_ms(b);
    let mean = (0..n).map(|i| raw.step_ms(i)).sum::<f64>() / n as f64;
    let imgs = case.batch as f64 / (step / 1e3);
    let cpu = raw
        .cpu_ms
        .iter()
        .cloned()
        .fold(None, |m: Option<f64>, v| Some(m.map_or(v, |m| m.min(v))))
        .filter(|_| raw.threads > 0)
        .map(|c| case.batch as f64 / (c / raw.threads as f64 / 1e3));
    Ok(Result1 {
        iters: n,
        fwd_ms: raw.fwd_ms[b],
        bwd_ms: *raw.bwd_ms.get(b).unwrap_or(&0.0),
        upd_ms: *raw.upd_ms.get(b).unwrap_or(&0.0),
        step_ms: step,
        mean_step_ms: mean,
        images_per_s: imgs,
        images_per_s_cpu: cpu,
        gflops: step_flops(case.kind, macs, case.batch) / (step / 1e3) / 1e9,
        peak_rss_mib: raw.peak_rss_kib as f64 / 1024.0,
        gpu_peak_mib: raw.gpu_peak_mib,
        version: raw.version.clone(),
        case,
        raw,
    })
}

/// Process CPU time (all threads), seconds.
fn cpu_time() -> f64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime only writes the timespec we pass.
    unsafe { libc::clock_gettime(libc::CLOCK_PROCESS_CPUTIME_ID, &mut ts) };
    ts.tv_sec as f64 + ts.tv_nsec as f64 * 1e-9
}

/// `VmHWM` of this process in KiB (0 where /proc is unavailable).
fn peak_rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse().ok())
        })
        .unwrap_or(0)
}

fn device(name: &str) -> Result<Device> {
    match name {
        "cpu" => Ok(Device::Cpu),
        "cuda" => {
            if !cfg!(feature = "cuda") {
                bail!(
                    "pyramid-bench was built without the cuda feature: use `cargo xtask bench --device cuda` \
                     (it adds --features cuda) or `cargo build --release -p pyramid-bench --features cuda`; \
                     see scripts/cuda-build.sh for the toolchain"
                );
            }
            Device::new_cuda(0).context("opening CUDA device 0")
        }
        other => bail!("unknown device `{other}` (cpu or cuda)"),
    }
}

/// Runs one case in this process (the child side of `--single`).
fn run_single(
    case: &Case,
    iters: usize,
    dev_name: &str,
    threads: usize,
    profile: bool,
) -> Result<Raw> {
    let dev = device(dev_name)?;
    let backend = match case.backend.as_str() {
        "fast" => Backend::Fast,
        "candle" => Backend::Candle,
        b => bail!("backend `{b}` cannot run in pyramid-bench (fast or candle)"),
    };
    let id = model_id(&case.model)?;
    let opts = options(case.size);
    let classes = opts.classes;
    let mut model = Model::new(ModelConfig::new(id, opts), 0, &dev)?;
    model.set_backend(backend);
    let mut rng = pyramid_rng::Rng::new(1);
    let x = Tensor::randn(0f32, 1.0, (case.batch, 3, case.size, case.size), &dev)?;
    let labels: Vec<u32> = (0..case.batch)
        .map(|_| (rng.next_u64() % classes as u64) as u32)
        .collect();
    let labels = Tensor::from_vec(labels, case.batch, &dev)?;
    let mut opt = pyramid_train::optim::OptimizerConfig::default()
        .build(vec![("all".into(), model.params().to_vec())])?;
    // Which CPU convolution ran (PYRAMID_CONV_ALGO), so a JSON file says what it measured.
    let version = if backend == Backend::Fast && dev.is_cpu() {
        format!("candle 0.11.1, conv {:?}", pyramid_ops::conv_algo()).to_lowercase()
    } else {
        "candle 0.11.1".into()
    };
    // The fast backend on the CPU trains through the fused step, as the engine does; elsewhere
    // (candle backend, CUDA) the step is candle's autograd, timed forward / backward / update.
    let fused_step = case.kind == Kind::Train && model.fused_available();
    let mut raw = Raw {
        threads,
        version,
        fused_step,
        ..Raw::default()
    };
    let ms = |t: Instant| t.elapsed().as_secs_f64() * 1e3;
    // Inference cases: the layers of the timed passes (the fused eval pass records them).
    let profile = profile && case.kind == Kind::Infer;
    for it in 0..=iters {
        if profile && it == 1 {
            pyramid_models::fused::profile::enable();
        }
        let c0 = cpu_time();
        match case.kind {
            Kind::Train if fused_step => {
                let t = Instant::now();
                let step = model.train_step_ce(&x, &labels, &mut rng)?;
                let fwd_bwd = ms(t);
                let t = Instant::now();
                opt.step(&step.grads)?;
                drop(step.grads);
                let upd = ms(t);
                if !step.loss.is_finite() {
                    bail!("loss is {}", step.loss);
                }
                if it > 0 {
                    raw.fwd_ms.push(fwd_bwd);
                    raw.bwd_ms.push(0.0);
                    raw.upd_ms.push(upd);
                }
            }
            Kind::Train => {
                let t = Instant::now();
                let logits = model.forward(&x, Mode::Train(&mut rng))?;
                let loss = pyramid_losses::cross_entropy(&logits, &labels)?;
                dev.synchronize()?;
                let fwd = ms(t);
                let t = Instant::now();
                let grads = loss.backward()?;
                dev.synchronize()?;
                let bwd = ms(t);
                let t = Instant::now();
                opt.step(&grads)?;
                drop(grads);
                dev.synchronize()?;
                let upd = ms(t);
                let l = loss.to_dtype(DType::F32)?.to_scalar::<f32>()?;
                if !l.is_finite() {
                    bail!("loss is {l}");
                }
                if it > 0 {
                    raw.fwd_ms.push(fwd);
                    raw.bwd_ms.push(bwd);
                    raw.upd_ms.push(upd);
                }
            }
            Kind::Infer => {
                let t = Instant::now();
                let logits = model.forward(&x, Mode::Eval)?;
                dev.synchronize()?;
                let fwd = ms(t);
                drop(logits);
                if it > 0 {
                    raw.fwd_ms.push(fwd);
                }
            }
        }
        if it > 0 {
            raw.cpu_ms.push((cpu_time() - c0) * 1e3);
        }
    }
    if profile {
        let table = pyramid_models::fused::profile::take();
        let secs = raw.fwd_ms.iter().sum::<f64>() / 1e3;
        let part = format!("{iters} inference passes");
        eprint!(
            "{}",
            epoch::profile_table(&case.to_arg(), &table, secs, &part)
        );
    }
    raw.peak_rss_kib = peak_rss_kib();
    Ok(raw)
}

// ----------------------------------------------------------------------------------- parent

fn default_torch_script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../scripts/bench_torch.py")
}

/// This machine's CPU: (model name, logical CPUs, MHz, fp32 FLOP/cycle/core, peak GFLOP/s).
struct CpuInfo {
    name: String,
    cpus: usize,
    mhz: f64,
    flop_per_cycle: f64,
    assumption: &'static str,
}

impl CpuInfo {
    fn read() -> Self {
        let txt = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
        let field = |k: &str| {
            txt.lines()
                .find(|l| l.starts_with(k))
                .and_then(|l| l.split_once(':'))
                .map(|(_, v)| v.trim().to_string())
        };
        let cpus = txt.lines().filter(|l| l.starts_with("processor")).count();
        let flags = field("flags").unwrap_or_default();
        let has = |f: &str| flags.split_whitespace().any(|x| x == f);
        let (flop_per_cycle, assumption) = if has("avx512f") {
            (
                64.0,
                "AVX-512: 2 FMA units × 16 fp32 lanes × 2 FLOP per FMA = 64 FLOP/cycle/core",
            )
        } else if has("avx2") && has("fma") {
            (
                32.0,
                "AVX2: 2 FMA units × 8 fp32 lanes × 2 FLOP per FMA = 32 FLOP/cycle/core",
            )
        } else {
            (8.0, "no AVX2/FMA: 8 FLOP/cycle/core")
        };
        CpuInfo {
            name: field("model name").unwrap_or_else(|| "unknown CPU".into()),
            cpus: cpus.max(1),
            mhz: field("cpu MHz").and_then(|v| v.parse().ok()).unwrap_or(0.0),
            flop_per_cycle,
            assumption,
        }
    }
    fn peak_gflops(&self, threads: usize) -> f64 {
        threads.min(self.cpus) as f64 * self.mhz / 1e3 * self.flop_per_cycle
    }
}

fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|_| "?".into())
}

fn fmt_opt(v: Option<f64>, prec: usize) -> String {
    v.map_or("-".into(), |v| format!("{v:.prec$}"))
}

/// The header row of the per-step cases' table.
fn print_step_header() {
    println!(
        "{:<7} {:<12} {:<7} {:>8} {:>9} {:>9} {:>9} {:>9} {:>8} {:>6} {:>8} {:>9} {:>9}",
        "model",
        "case",
        "backend",
        "img/s",
        "step ms",
        "fwd ms",
        "bwd ms",
        "upd ms",
        "GFLOP/s",
        "%peak",
        "RSS MiB",
        "x torch",
        "RSS/torch"
    );
}

/// One epoch case's measurement, as in `--json`'s `epoch_results`.
#[derive(Debug, Clone, Serialize)]
struct EpochResult {
    /// e.g. `epoch-d16-bn`.
    case: String,
    /// fused, candle or torch.
    backend: String,
    #[serde(flatten)]
    raw: epoch::EpochRaw,
}

/// The epoch cases' table (and its Markdown form), with ours/torch speed-up and RSS ratio.
fn print_epoch_table(results: &[EpochResult], markdown: bool, limit: Option<usize>) {
    let torch_of = |r: &EpochResult| {
        results
            .iter()
            .find(|t| t.backend == "torch" && t.case == r.case && r.backend != "torch")
    };
    println!();
    match limit {
        Some(n) => println!("whole epochs, capped at {n} train / {n} test batches (--limit-batches): not a full epoch"),
        None => println!("whole epochs: 60,000 training images (batch 128) + 10,000 test images (batch 500)"),
    }
    println!(
        "{:<15} {:<7} {:>8} {:>7} {:>8} {:>8} {:>8} {:>8} {:>8} {:>8} {:>9} {:>9}",
        "case",
        "backend",
        "train s",
        "test s",
        "img/s",
        "CPU s",
        "loss",
        "test %",
        "RSS MiB",
        "x torch",
        "RSS/torch",
        "setup s"
    );
    for r in results {
        let t = torch_of(r);
        let x = &r.raw;
        println!(
            "{:<15} {:<7} {:>8.1} {:>7.1} {:>8.1} {:>8.1} {:>8.4} {:>8.2} {:>8.0} {:>8} {:>9} {:>9.1}",
            r.case,
            r.backend,
            x.train_s,
            x.test_s,
            x.train_images_per_s(),
            x.cpu_s,
            x.train_loss,
            x.test_acc,
            x.peak_rss_kib as f64 / 1024.0,
            fmt_opt(t.map(|t| speedup(x, &t.raw)), 2),
            fmt_opt(t.map(|t| x.peak_rss_kib as f64 / t.raw.peak_rss_kib.max(1) as f64), 2),
            x.setup_s,
        );
    }
    if markdown {
        println!();
        println!("| case | backend | epoch s: train + test | train img/s | CPU s | train loss | test acc % | peak RSS MiB | speed-up vs torch | RSS vs torch |");
        println!("|---|---|---|---|---|---|---|---|---|---|");
        for r in results {
            let t = torch_of(r);
            let x = &r.raw;
            let ratio = |v: Option<f64>| v.map_or("–".to_string(), |v| format!("{v:.2}×"));
            println!(
                "| {} | {} | {:.1} + {:.1} | {:.0} | {:.0} | {:.3} | {:.2} | {:.0} | {} | {} |",
                r.case,
                r.backend,
                x.train_s,
                x.test_s,
                x.train_images_per_s(),
                x.cpu_s,
                x.train_loss,
                x.test_acc,
                x.peak_rss_kib as f64 / 1024.0,
                ratio(t.map(|t| speedup(x, &t.raw))),
                ratio(t.map(|t| x.peak_rss_kib as f64 / t.raw.peak_rss_kib.max(1) as f64)),
            );
        }
    }
}

/// Speed-up of `ours` over `torch` on the whole epoch (train + test wall time): > 1 = faster.
fn speedup(ours: &epoch::EpochRaw, torch: &epoch::EpochRaw) -> f64 {
    (torch.train_s + torch.test_s) / (ours.train_s + ours.test_s).max(1e-12)
}

// No `#[global_allocator]`: std's (glibc malloc) beat a recycling allocator, mimalloc and
// jemalloc on VGG19 training and on a CPU-config run (docs/benchmarks.md, "Allocator"); `main`
// tells it to keep freed memory (`pyramid_ops::keep_freed_memory`).

fn main() -> Result<()> {
    pyramid_ops::keep_freed_memory();
    // `pyramid-bench data ...`: the input-pipeline bench (data.rs).
    if std::env::args_os().nth(1).is_some_and(|a| a == "data") {
        return data::main(std::env::args_os().skip(2));
    }
    // `pyramid-bench resume ...`: the per-epoch resume state's cost (resume.rs).
    if std::env::args_os().nth(1).is_some_and(|a| a == "resume") {
        return resume::main(std::env::args_os().skip(2));
    }
    let a = Args::parse();
    let threads = a.threads.unwrap_or_else(|| {
        std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1)
    });
    if a.iters == 0 {
        bail!("--iters must be at least 1");
    }
    if let Some(limit) = a.limit_batches {
        if limit == 0 {
            bail!("--limit-batches must be at least 1");
        }
    }
    if let Some(case) = a.single.as_deref().filter(|c| c.starts_with("epoch-")) {
        let (name, backend) = case.split_once('/').unwrap_or((case, "fused"));
        let c = epoch::EpochCase::parse(name).ok_or_else(|| anyhow!("bad epoch case `{name}`"))?;
        let fused = match backend {
            "fused" => true,
            "candle" => false,
            b => bail!("epoch backend `{b}` cannot run in pyramid-bench (fused or candle)"),
        };
        let raw = epoch::run(
            c,
            fused,
            a.limit_batches,
            a.data_root.as_deref(),
            a.profile,
            threads,
        )?;
        println!("{}", serde_json::to_string(&raw)?);
        return Ok(());
    }
    if let Some(case) = &a.single {
        let case = Case::parse(case)?;
        let raw = run_single(&case, a.iters, &a.device, threads, a.profile)?;
        println!("{}", serde_json::to_string(&raw)?);
        return Ok(());
    }

    // Fail early (and clearly) on a device this binary cannot drive.
    if a.device == "cuda" && !cfg!(feature = "cuda") {
        device("cuda")?;
    }
    if a.device != "cpu" && a.device != "cuda" {
        bail!("unknown device `{}` (cpu or cuda)", a.device);
    }
    let backends: Vec<&str> = match a.backend.as_str() {
        "fast" => vec!["fast"],
        "candle" => vec!["candle"],
        "both" => vec!["fast", "candle"],
        b => bail!("unknown backend `{b}` (fast, candle or both)"),
    };
    let epoch_backends: Vec<&str> = match a.epoch_backend.as_str() {
        "fused" => vec!["fused"],
        "candle" => vec!["candle"],
        "both" => vec!["fused", "candle"],
        b => bail!("unknown epoch backend `{b}` (fused, candle or both)"),
    };
    let (epoch_names, step_names): (Vec<&String>, Vec<&String>) =
        a.cases.iter().partition(|c| c.trim().starts_with("epoch-"));
    let mut epoch_cases = vec![];
    for c in &epoch_names {
        let e = epoch::EpochCase::parse(c).ok_or_else(|| {
            anyhow!(
                "unknown case `{}` (epoch cases: {})",
                c.trim(),
                epoch::CASES.join(", ")
            )
        })?;
        if a.device != "cpu" {
            bail!("the epoch cases run on the CPU only (--device cpu)");
        }
        let mut bs: Vec<&str> = epoch_backends.clone();
        if a.torch.is_some() {
            bs.push("torch");
        }
        for b in bs {
            epoch_cases.push((e, b));
        }
    }
    if !epoch_cases.is_empty() {
        // Before any case runs: the epoch cases need the full data set's files.
        pyramid_datasets::locate(
            pyramid_datasets::DatasetKind::FashionMnist,
            a.data_root.as_deref(),
        )
        .context("the epoch cases train on full Fashion-MNIST")?;
    }
    let mut cases = vec![];
    for m in &a.models {
        let m = m.trim().to_ascii_lowercase();
        model_id(&m)?;
        for c in &step_names {
            let (kind, size, batch) = case_shape(c)?;
            let mut bs: Vec<String> = backends.iter().map(|b| b.to_string()).collect();
            if a.torch.is_some() {
                bs.push("torch".into());
            }
            for backend in bs {
                cases.push(Case {
                    model: m.clone(),
                    kind,
                    size,
                    batch,
                    backend,
                });
            }
        }
    }

    let cpu = CpuInfo::read();
    let load_before = loadavg();
    let started = Instant::now();
    eprintln!(
        "pyramid-bench: {} case(s), device {}, {threads} thread(s), {} timed iteration(s) (+1 warm-up), load average {load_before}",
        cases.len() + epoch_cases.len(),
        a.device,
        a.iters
    );
    let exe = std::env::current_exe()?;
    let script = a.torch_script.clone().unwrap_or_else(default_torch_script);
    let mut results = vec![];
    let mut failures = vec![];
    for case in &cases {
        let iters = if case.backend == "candle" {
            a.candle_iters.unwrap_or(a.iters).max(1)
        } else {
            a.iters
        };
        let mut cmd = if case.backend == "torch" {
            let mut c = Command::new(a.torch.as_ref().expect("torch cases need --torch"));
            c.arg(&script);
            c
        } else {
            let mut c = Command::new(&exe);
            c.env("RAYON_NUM_THREADS", threads.to_string());
            if a.profile {
                c.arg("--profile");
            }
            c
        };
        cmd.args(["--single", &case.to_arg()])
            .args(["--iters", &iters.to_string()])
            .args(["--threads", &threads.to_string()])
            .args(["--device", &a.device]);
        let t = Instant::now();
        let r = data::run_json::<Raw>(cmd, &case.to_arg())
            .and_then(|raw| summarise(case.clone(), raw, macs_per_image(&case.model, case.size)?));
        match r {
            Ok(r) => {
                eprintln!(
                    "  {:<28} {:>8.1} img/s  step {:>8.1} ms ({})  {:>6.1} GFLOP/s  peak RSS {:>6.0} MiB  [{:.0} s]",
                    case.to_arg(),
                    r.images_per_s,
                    r.step_ms,
                    r.split(1),
                    r.gflops,
                    r.peak_rss_mib,
                    t.elapsed().as_secs_f64()
                );
                results.push(r);
            }
            Err(e) => {
                eprintln!("  {:<28} FAILED: {e:#}", case.to_arg());
                failures.push((case.to_arg(), format!("{e:#}")));
            }
        }
    }
    let mut epoch_results: Vec<EpochResult> = vec![];
    for &(case, backend) in &epoch_cases {
        let arg = format!("{}/{backend}", case.name());
        let mut cmd = if backend == "torch" {
            let mut c = Command::new(a.torch.as_ref().expect("torch cases need --torch"));
            c.arg(script.with_file_name("bench_torch_epoch.py"));
            c
        } else {
            let mut c = Command::new(&exe);
            c.env("RAYON_NUM_THREADS", threads.to_string());
            if a.profile {
                c.arg("--profile");
            }
            c
        };
        cmd.args(["--single", &arg])
            .args(["--threads", &threads.to_string()]);
        if let Some(n) = a.limit_batches {
            cmd.args(["--limit-batches", &n.to_string()]);
        }
        if let Some(r) = &a.data_root {
            cmd.arg("--data-root").arg(r);
        }
        let t = Instant::now();
        match data::run_json::<epoch::EpochRaw>(cmd, &arg) {
            Ok(raw) => {
                eprintln!(
                    "  {:<28} train {:>7.1} s + test {:>5.1} s  {:>7.1} img/s  loss {:.4}  test acc {:.2}%  peak RSS {:>6.0} MiB  [{:.0} s]",
                    arg,
                    raw.train_s,
                    raw.test_s,
                    raw.train_images_per_s(),
                    raw.train_loss,
                    raw.test_acc,
                    raw.peak_rss_kib as f64 / 1024.0,
                    t.elapsed().as_secs_f64()
                );
                epoch_results.push(EpochResult {
                    case: case.name(),
                    backend: backend.to_string(),
                    raw,
                });
            }
            Err(e) => {
                eprintln!("  {arg:<28} FAILED: {e:#}");
                failures.push((arg, format!("{e:#}")));
            }
        }
    }
    let load_after = loadavg();

    let peak = cpu.peak_gflops(threads);
    let torch_of = |c: &Case| {
        results.iter().find(|r| {
            r.case.backend == "torch"
                && Case {
                    backend: "torch".into(),
                    ..c.clone()
                } == r.case
        })
    };
    println!();
    println!(
        "CPU: {} ({} logical CPUs, {:.0} MHz from /proc/cpuinfo); {threads} thread(s); fp32 peak ≈ {peak:.0} GFLOP/s ({})",
        cpu.name, cpu.cpus, cpu.mhz, cpu.assumption
    );
    let timing = if cases.is_empty() {
        "one run per case".to_string()
    } else {
        format!("best of {} timed iteration(s) after 1 warm-up", a.iters)
    };
    println!(
        "device {}, {timing}; load average before {load_before}, after {load_after}; {:.0} s",
        a.device,
        started.elapsed().as_secs_f64()
    );
    if !results.is_empty() {
        print_step_header();
    }
    for r in &results {
        let t = torch_of(&r.case).filter(|_| r.case.backend != "torch");
        // A fused training step times forward and backward as one, in the fwd column.
        let bwd = if r.raw.fused_step {
            "(fused)".to_string()
        } else {
            format!("{:.1}", r.bwd_ms)
        };
        println!(
            "{:<7} {:<12} {:<7} {:>8.1} {:>9.1} {:>9.1} {:>9} {:>9.1} {:>8.1} {:>5.0}% {:>8.0} {:>9} {:>9}",
            r.case.model,
            r.case.short(),
            r.case.backend,
            r.images_per_s,
            r.step_ms,
            r.fwd_ms,
            bwd,
            r.upd_ms,
            r.gflops,
            if a.device == "cpu" { r.gflops / peak * 100.0 } else { f64::NAN },
            r.peak_rss_mib,
            fmt_opt(t.map(|t| r.images_per_s / t.images_per_s), 2),
            fmt_opt(t.map(|t| r.peak_rss_mib / t.peak_rss_mib), 2),
        );
    }
    if !epoch_results.is_empty() {
        print_epoch_table(&epoch_results, a.markdown, a.limit_batches);
    }
    if a.markdown && !results.is_empty() {
        println!();
        println!("| model | case | backend | img/s | img/s (CPU-time est.) | step ms: fwd / bwd / upd (fused: fwd + bwd / upd) | GFLOP/s | peak RSS MiB | img/s vs torch | RSS vs torch |");
        println!("|---|---|---|---|---|---|---|---|---|---|");
        for r in &results {
            let t = torch_of(&r.case).filter(|_| r.case.backend != "torch");
            let split = r.split(0);
            println!(
                "| {} | {} | {} | {:.1} | {} | {split} | {:.0} | {:.0} | {} | {} |",
                r.case.model,
                r.case.short(),
                r.case.backend,
                r.images_per_s,
                fmt_opt(r.images_per_s_cpu, 1),
                r.gflops,
                r.peak_rss_mib,
                fmt_opt(t.map(|t| r.images_per_s / t.images_per_s), 2).replace('-', "–")
                    + if t.is_some() { "×" } else { "" },
                fmt_opt(t.map(|t| r.peak_rss_mib / t.peak_rss_mib), 2).replace('-', "–")
                    + if t.is_some() { "×" } else { "" },
            );
        }
    }
    for (c, e) in &failures {
        println!("FAILED {c}: {e}");
    }
    if let Some(path) = &a.json {
        let doc = serde_json::json!({
            "cpu": {
                "name": cpu.name, "logical_cpus": cpu.cpus, "mhz": cpu.mhz,
                "flop_per_cycle_per_core": cpu.flop_per_cycle, "assumption": cpu.assumption,
                "peak_gflops": peak,
            },
            "device": a.device,
            "threads": threads,
            "iters": a.iters,
            "load_average_before": load_before,
            "load_average_after": load_after,
            "results": results,
            "epoch_results": epoch_results,
            "limit_batches": a.limit_batches,
            "failures": failures,
        });
        std::fs::write(path, serde_json::to_string_pretty(&doc)?)
            .with_context(|| format!("writing {}", path.display()))?;
        eprintln!("wrote {}", path.display());
    }
    if !failures.is_empty() {
        bail!("{} case(s) failed", failures.len());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn case_round_trip() {
        let c = Case::parse("vgg19/train/96/32/fast").unwrap();
        assert_eq!(c.kind, Kind::Train);
        assert_eq!((c.size, c.batch), (96, 32));
        assert_eq!(c.to_arg(), "vgg19/train/96/32/fast");
        assert_eq!(c.short(), "train96 b32");
        assert!(Case::parse("vgg19/train/96/fast").is_err());
        assert!(Case::parse("vgg19/sleep/96/32/fast").is_err());
    }

    #[test]
    fn args_parse() {
        let a = Args::try_parse_from([
            "pyramid-bench",
            "--models",
            "vgg19,svgg5",
            "--iters",
            "2",
            "--backend",
            "both",
            "--threads",
            "2",
            "--markdown",
        ])
        .unwrap();
        assert_eq!(a.models, ["vgg19", "svgg5"]);
        assert_eq!(
            a.cases,
            [
                "train96",
                "infer96",
                "train32",
                "epoch-d16-bn",
                "epoch-d16-nobn",
                "epoch-d8-bn",
                "epoch-d8-nobn"
            ]
        );
        assert_eq!((a.epoch_backend.as_str(), a.limit_batches), ("fused", None));
        assert_eq!((a.iters, a.threads, a.markdown), (2, Some(2), true));
        assert_eq!(case_shape("infer96").unwrap(), (Kind::Infer, 96, 64));
        assert!(case_shape("train64").is_err());
    }

    #[test]
    fn flop_arithmetic() {
        // VGG19 convs at 96×96: (96/224)² of the 19.6 GMAC of torchvision's VGG19 features;
        // SVGG5 is much smaller; FLOPs per step are 2× (inference) or 6× (training) MACs.
        let v = macs_per_image("vgg19", 96).unwrap();
        let s = macs_per_image("svgg5", 96).unwrap();
        let conv = 19.5e9 * (96.0f64 / 224.0).powi(2);
        assert!((v as f64 - conv).abs() / conv < 0.05, "vgg19 macs {v}");
        assert!(s < v / 5, "svgg5 macs {s}");
        assert_eq!(step_flops(Kind::Infer, 10, 64), 1280.0);
        assert_eq!(step_flops(Kind::Train, 10, 32), 1920.0);
        let raw = Raw {
            fwd_ms: vec![100.0, 50.0],
            bwd_ms: vec![100.0, 100.0],
            upd_ms: vec![10.0, 10.0],
            cpu_ms: vec![400.0, 300.0],
            peak_rss_kib: 2048,
            threads: 2,
            ..Raw::default()
        };
        let r = summarise(
            Case::parse("svgg5/train/96/32/fast").unwrap(),
            raw,
            1_000_000,
        )
        .unwrap();
        assert_eq!(r.step_ms, 160.0);
        assert_eq!(r.mean_step_ms, 185.0);
        assert!((r.images_per_s - 200.0).abs() < 1e-9);
        assert!((r.images_per_s_cpu.unwrap() - 32.0 / 0.15).abs() < 1e-9);
        assert!((r.gflops - 6.0 * 32.0 * 1e6 / 0.16 / 1e9).abs() < 1e-9);
        assert_eq!(r.peak_rss_mib, 2.0);
    }
}
