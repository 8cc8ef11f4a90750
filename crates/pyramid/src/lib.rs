//! Chained knowledge distillation: an experiment config becomes a plan (teacher, then levels,
//! then stages), each stage runs on the training engine, and a run directory collects
//! checkpoints, per-epoch metrics, `results.json` and a `report.md` in the shape of the paper's
//! tables (METHOD.md §10–§11).

pub mod config;
pub mod data;
pub mod fingerprint;
pub mod method;
pub mod plan;
pub mod report;
pub mod resume;
pub mod run;
pub mod rundir;
pub mod stage;

pub use config::{ExperimentConfig, StageConfig};
pub use plan::Plan;
pub use run::{run_experiment, LevelResult, Results, RunOptions};

/// Errors of configs, runs and reports.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("config {path}: {message}")]
    Config { path: String, message: String },
    #[error("{0}")]
    Stage(String),
    /// Every problem of a plan, one per line.
    #[error("the plan has {} problem(s):\n  {}", .0.len(), .0.join("\n  "))]
    Plan(Vec<String>),
    #[error("{path}: {message}")]
    File { path: String, message: String },
    /// A signal asked the run to stop; every completed epoch is saved.
    #[error("interrupted; every completed epoch is saved, and the same command continues the run")]
    Interrupted,
    #[error("run directory {dir} is in use by another run ({holder}); wait for it or choose another --out")]
    Locked { dir: String, holder: String },
    /// Models in the run directory were trained with another config.
    #[error(
        "run directory {dir} holds models of another config:\n  {}\nUse another --out for this config, or --force to redo the affected models.",
        .problems.join("\n  ")
    )]
    Mismatch { dir: String, problems: Vec<String> },
    /// A stage or teacher did not learn and `[run] on_degenerate = "error"`.
    #[error("{model} did not learn ([run] on_degenerate = \"error\"):\n  {}", .reasons.join("\n  "))]
    Degenerate { model: String, reasons: Vec<String> },
    #[error(transparent)]
    Model(#[from] pyramid_models::Error),
    #[error(transparent)]
    Data(#[from] pyramid_datasets::Error),
    #[error(transparent)]
    Train(#[from] pyramid_train::TrainError),
    #[error(transparent)]
    Candle(#[from] candle_core::Error),
}

/// Parses `cpu`, `cuda` or `cuda:N`.
pub fn device_from_str(s: &str) -> Result<candle_core::Device, Error> {
    let s = s.trim().to_ascii_lowercase();
    if s == "cpu" {
        return Ok(candle_core::Device::Cpu);
    }
    let ordinal = match s.strip_prefix("cuda") {
        Some("") => 0,
        Some(rest) => rest
            .strip_prefix(':')
            .and_then(|n| n.parse().ok())
            .ok_or_else(|| Error::Stage(format!("bad device `{s}` (cpu, cuda or cuda:N)")))?,
        None => {
            return Err(Error::Stage(format!(
                "bad device `{s}` (cpu, cuda or cuda:N)"
            )))
        }
    };
    candle_core::Device::new_cuda(ordinal).map_err(|e| {
        Error::Stage(format!(
            "device `{s}`: {e} (build with `--features cuda` and run on a machine with an NVIDIA GPU)"
        ))
    })
}
