//! `pyramid run`, `pyramid check` and `pyramid eval`.

use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;
use std::sync::Arc;

use anyhow::{Context, Result};
use clap::Args;
use pyramid::{report, ExperimentConfig, Plan, RunDirHook, RunOptions};
use pyramid_datasets::{Channels, DatasetKind, Loader, LoaderConfig, Split};
use pyramid_models::Model;
use signal_hook::consts::{SIGINT, SIGTERM};

use crate::log;

#[derive(Args)]
pub struct RunArgs {
    /// Experiment config (TOML).
    config: PathBuf,
    /// Run directory (overrides the config's out_dir).
    #[arg(long)]
    out: Option<PathBuf>,
    /// cpu, cuda or cuda:N (overrides the config).
    #[arg(long)]
    device: Option<String>,
    /// Data root (overrides the config and $PYRAMID_DATA).
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// Print the plan and exit without training.
    #[arg(long)]
    dry_run: bool,
    /// No progress bars (the log lines still show).
    #[arg(long)]
    no_progress: bool,
    /// No progress bars and only warnings and errors on stderr; the results table still goes
    /// to stdout and the full log to <run dir>/run.log.
    #[arg(long, short)]
    quiet: bool,
    /// Redo the models of the run directory that were trained with another config (their
    /// fingerprint differs) instead of refusing to run.
    #[arg(long)]
    force: bool,
    /// Run the experiment once per seed 0 … N−1, into <out>/seed-<k> (replaces the config's
    /// `seed`/`seeds`).
    #[arg(long, value_name = "N")]
    seeds: Option<u64>,
    /// Run just one step of the plan: `teacher` or a level such as `forward/pyramid/SVGG17`
    /// (`--dry-run` lists them). The models it starts from and learns from must be complete in
    /// the run directory. Several `--only` runs may share a run directory.
    #[arg(long, value_name = "STEP")]
    only: Option<String>,
    /// Overrides the config's seed; without --out the run directory is <out_dir>/seed-<K>.
    #[arg(long, value_name = "K")]
    seed: Option<u64>,
    /// With --dry-run: print the plan as JSON (run directory, steps, their predecessors and
    /// fingerprints) for tools such as `cargo xtask slurm`.
    #[arg(long, requires = "dry_run")]
    json: bool,
}

impl RunArgs {
    /// What the console shows.
    pub fn console(&self) -> log::Console {
        if self.quiet {
            log::Console::Quiet
        } else {
            log::Console::Normal
        }
    }

    /// Whether this invocation writes `run.log` (a dry run writes nothing).
    pub fn writes_run_log(&self) -> bool {
        !self.dry_run
    }
}

/// Builds the plan and loads the data, reporting the problems of both at once: what a run
/// would meet before its first epoch, found without training or writing anything.
fn validate(
    config: &std::path::Path,
    cfg: &ExperimentConfig,
) -> Result<(Plan, pyramid::data::ExperimentData)> {
    let plan = cfg
        .validate()
        .map_err(anyhow::Error::from)
        .and_then(|_| Plan::build(cfg).with_context(|| format!("planning {}", config.display())));
    let data = pyramid::data::ExperimentData::load(cfg, &candle_core::Device::Cpu)
        .with_context(|| format!("loading the data of {}", config.display()));
    match (plan, data) {
        (Ok(p), Ok(d)) => Ok((p, d)),
        (Err(e), Ok(_)) | (Ok(_), Err(e)) => Err(e),
        (Err(p), Err(d)) => Err(anyhow::anyhow!("{p:#}\nand {d:#}")),
    }
}

pub fn run(a: RunArgs, logging: &log::Logging) -> Result<()> {
    let mut cfg = ExperimentConfig::from_file(&a.config)?;
    if let Some(n) = a.seeds {
        anyhow::ensure!(n > 0, "--seeds 0: give at least one seed");
        anyhow::ensure!(
            a.seed.is_none(),
            "--seeds {n} and --seed {}: give one of them",
            a.seed.unwrap_or_default()
        );
        cfg.seed = 0;
        cfg.seeds = (0..n).collect();
    }
    if a.seed.is_some() {
        // One seed of a sweep (a Slurm array task): the config's `seeds` list gives way.
        cfg.seeds.clear();
    }
    if a.dry_run {
        let cfg = RunOptions {
            out_dir: a.out.clone(),
            data_dir: a.data_dir.clone(),
            seed: a.seed,
            ..Default::default()
        }
        .resolve(&cfg);
        let (plan, data) = validate(&a.config, &cfg)?;
        if let Some(only) = &a.only {
            pyramid::only::predecessors(&plan, only)?;
        }
        if a.json {
            println!(
                "{}",
                serde_json::to_string_pretty(&plan_json(&cfg, &plan, &data))?
            );
            return Ok(());
        }
        print!("{}", plan.to_text());
        println!(
            "data: {} train / {} test images of {}, found and read. Nothing was written.",
            data.train_len, data.test_len, cfg.data.dataset
        );
        if !cfg.seeds.is_empty() {
            let dirs: Vec<String> = cfg
                .per_seed(a.out.as_deref())
                .iter()
                .map(|c| format!("seed {} → {}", c.seed, c.out_dir.display()))
                .collect();
            println!("once per seed: {}", dirs.join(", "));
        }
        return Ok(());
    }
    let mut resume = format!("pyramid run {}", a.config.display());
    if let Some(o) = &a.out {
        resume += &format!(" --out {}", o.display());
    }
    if let Some(n) = a.seeds {
        resume += &format!(" --seeds {n}");
    }
    if let Some(k) = a.seed {
        resume += &format!(" --seed {k}");
    }
    if let Some(o) = &a.only {
        resume += &format!(" --only {o}");
    }
    // SIGINT / SIGTERM stop the run after its current batch; a second one ends it at once.
    let interrupt = Arc::new(AtomicBool::new(false));
    for sig in [SIGINT, SIGTERM] {
        signal_hook::flag::register_conditional_shutdown(sig, 130, Arc::clone(&interrupt))?;
        signal_hook::flag::register(sig, Arc::clone(&interrupt))?;
    }
    let opts = RunOptions {
        out_dir: None,
        device: a.device,
        data_dir: a.data_dir,
        progress: (!a.no_progress && !a.quiet).then(|| logging.progress.clone()),
        force: a.force,
        interrupt: Some(interrupt),
        on_run_dir: Some(RunDirHook({
            let run_log = logging.run_log.clone();
            Arc::new(move |dir: &Path| run_log.start(dir))
        })),
        only: a.only.clone(),
        seed: None,
    };
    // `--seed K` is one run in <out_dir>/seed-K (or --out); otherwise one run per seed of
    // `seeds`, or the config's single run.
    let runs = match a.seed {
        Some(_) => vec![RunOptions {
            out_dir: a.out.clone(),
            seed: a.seed,
            ..Default::default()
        }
        .resolve(&cfg)],
        None => cfg.per_seed(a.out.as_deref()),
    };
    for run in &runs {
        let out = run.out_dir.clone();
        if runs.len() > 1 {
            eprintln!("seed {} of {:?}: {}", run.seed, cfg.seeds, out.display());
        }
        let results = match pyramid::run_experiment(run, &opts) {
            Err(pyramid::Error::Interrupted) => {
                eprintln!(
                    "interrupted: every completed epoch is saved in {}.\nResume with: {resume}",
                    out.display(),
                );
                std::process::exit(130);
            }
            r => r.with_context(|| format!("running {}", a.config.display()))?,
        };
        println!("{}", report::terminal_table(&results));
        println!(
            "report: {}\nresults: {}\nlog: {}",
            out.join("report.md").display(),
            out.join("results.json").display(),
            out.join(log::RUN_LOG).display()
        );
        logging.run_log.detach();
    }
    if runs.len() > 1 {
        // The seeds side by side: mean ± std over the seed directories, in the terminal and
        // in <base>/table.md.
        let dirs: Vec<PathBuf> = runs.iter().map(|r| r.out_dir.clone()).collect();
        let tables = pyramid::table::build(
            &pyramid::table::load_runs(&dirs)?,
            pyramid::table::Options::default(),
        )?;
        let text = tables.markdown();
        let base = a.out.clone().unwrap_or_else(|| cfg.out_dir.clone());
        let path = base.join("table.md");
        pyramid::table::write(&path, &text)?;
        println!("{text}\nover {} seeds: {}", runs.len(), path.display());
    }
    Ok(())
}

/// The plan as `--dry-run --json` prints it: what a scheduler needs to chain one job per step.
fn plan_json(
    cfg: &ExperimentConfig,
    plan: &Plan,
    data: &pyramid::data::ExperimentData,
) -> serde_json::Value {
    let fps = pyramid::fingerprint::Fingerprints::of_plan(cfg, plan, &data.identity, data.classes);
    let steps: Vec<_> = pyramid::only::step_labels(plan)
        .into_iter()
        .map(|at| {
            let needs: Vec<String> = pyramid::only::predecessors(plan, &at)
                .unwrap_or_default()
                .into_iter()
                .map(|r| r.0)
                .collect();
            let fingerprint = fps.0.get(&at).map(|f| f.hash.clone());
            serde_json::json!({"at": at, "needs": needs, "fingerprint": fingerprint})
        })
        .collect();
    serde_json::json!({
        "name": cfg.name,
        "dataset": cfg.data.dataset.to_string(),
        "seed": cfg.seed,
        "out_dir": cfg.out_dir,
        "steps": steps,
    })
}

#[derive(Args)]
pub struct CheckArgs {
    /// Experiment config (TOML).
    config: PathBuf,
    /// Data root (overrides the config and $PYRAMID_DATA).
    #[arg(long)]
    data_dir: Option<PathBuf>,
}

/// Validates the config and its whole plan and loads the data, writing nothing.
pub fn check(a: CheckArgs) -> Result<()> {
    let mut cfg = ExperimentConfig::from_file(&a.config)?;
    if let Some(d) = a.data_dir {
        cfg.data.root = Some(d);
    }
    let (plan, data) = validate(&a.config, &cfg)?;
    println!(
        "{}: ok. {} levels to train ({} stages) in {} chains; {}: {} train / {} test images. Nothing was written.",
        a.config.display(),
        plan.steps.len(),
        plan.steps.iter().map(|s| s.stages.len()).sum::<usize>(),
        plan.chains.len(),
        cfg.data.dataset,
        data.train_len,
        data.test_len
    );
    Ok(())
}

#[derive(Args)]
pub struct EvalArgs {
    /// A checkpoint written by `pyramid run` (safetensors with the model config inside).
    checkpoint: PathBuf,
    /// fashion-mnist, embedded, stl10, cifar10, cifar100 or cifar100:coarse.
    #[arg(long)]
    dataset: String,
    /// Data root (default: $PYRAMID_DATA, else the data set's default root).
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// test or train.
    #[arg(long, default_value = "test")]
    split: String,
    /// Images per forward pass (changes the speed and memory, not the numbers).
    #[arg(long, default_value_t = 256)]
    batch_size: usize,
    /// cpu, cuda or cuda:N.
    #[arg(long, default_value = "cpu")]
    device: String,
    /// Print one JSON object (model, dataset, split, images, loss, accuracy) instead of a
    /// sentence.
    #[arg(long)]
    json: bool,
}

pub fn eval(a: EvalArgs) -> Result<()> {
    let device = pyramid::device_from_str(&a.device)?;
    let model = Model::load(&a.checkpoint, &device)?;
    let kind: DatasetKind = a.dataset.parse()?;
    let split = match a.split.as_str() {
        "test" => Split::Test,
        "train" => Split::Train,
        other => anyhow::bail!("--split {other}: expected test or train"),
    };
    let data = pyramid_datasets::load(kind, a.data_dir.as_deref(), split)?;
    let o = model.options();
    anyhow::ensure!(
        data.num_classes() <= o.classes,
        "{} has {} classes but {} predicts {}",
        kind,
        data.num_classes(),
        model.id(),
        o.classes
    );
    let cfg = LoaderConfig {
        size: Some((o.input_size, o.input_size)),
        channels: if o.in_channels == 3 {
            Channels::Rgb
        } else {
            Channels::Keep
        },
        normalize: kind.normalize(o.in_channels),
        ..LoaderConfig::new(a.batch_size)
    };
    let n = data.len();
    let loader = Loader::new(Arc::new(data), cfg, &device)?;
    let (loss, acc) = pyramid::stage::evaluate_model(&model, &loader)?;
    if a.json {
        println!(
            "{}",
            serde_json::json!({"model": model.id().name(), "dataset": kind.to_string(), "split": a.split, "images": n, "loss": loss, "accuracy": acc})
        );
    } else {
        println!(
            "{} on {} {} ({} images): accuracy {:.2}%, cross-entropy {:.4}",
            model.id(),
            kind,
            a.split,
            n,
            acc,
            loss
        );
    }
    Ok(())
}
