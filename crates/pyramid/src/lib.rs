//! Chained knowledge distillation: an experiment config becomes a plan (teacher, then levels,
//! then stages), each stage runs on the training engine, and a run directory collects
//! checkpoints, per-epoch metrics, `results.json` and a `report.md` in the shape of the paper's
//! tables (METHOD.md §10–§11).

pub mod config;
pub mod data;
pub mod figures;
pub mod fingerprint;
pub mod latency;
pub mod method;
pub mod plan;
pub mod report;
pub mod resume;
pub mod run;
pub mod rundir;
pub mod stage;

use std::path::{Path, PathBuf};

pub use config::{ExperimentConfig, StageConfig};
pub use plan::Plan;
pub use run::{run_experiment, Latency, LevelResult, Results, RunOptions};

/// Errors of configs, runs and reports.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("config {path}: {message}")]
    Config { path: String, message: String },
    /// A stage cannot go on (a missing teacher, a non-finite loss, a state that does not fit).
    #[error("{label}: {message}")]
    Stage { label: String, message: String },
    /// The loss of a stage failed.
    #[error("{label}: the loss failed")]
    Loss {
        label: String,
        #[source]
        source: pyramid_losses::LossError,
    },
    /// A stage's optimiser or schedule could not be built or restored.
    #[error("{label}: the optimiser or schedule")]
    Optimizer {
        label: String,
        #[source]
        source: pyramid_train::TrainError,
    },
    /// A latency measurement that cannot be made (an empty budget).
    #[error("latency: {0}")]
    Latency(String),
    /// A figure could not be drawn.
    #[error("figure {}: {message}", path.display())]
    Figure { path: PathBuf, message: String },
    #[error("bad device `{spec}`: {message}")]
    Device { spec: String, message: String },
    /// Every problem of a plan, one per line.
    #[error("the plan has {} problem(s):\n  {}", .0.len(), .0.join("\n  "))]
    Plan(Vec<String>),
    /// A file that is there but not what it must be.
    #[error("{}: {message}", path.display())]
    File { path: PathBuf, message: String },
    #[error("cannot {op} {}", path.display())]
    Io {
        op: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    Write(#[from] pyramid_fsio::WriteError),
    #[error("{}: not a safetensors file", path.display())]
    Safetensors {
        path: PathBuf,
        #[source]
        source: safetensors::SafeTensorError,
    },
    #[error("bad JSON in {}", path.display())]
    Json {
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },
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

impl Error {
    /// A file that is not what it must be.
    pub(crate) fn file(path: &Path, message: impl std::fmt::Display) -> Self {
        Error::File {
            path: path.to_path_buf(),
            message: message.to_string(),
        }
    }

    /// Wraps an io error of `op` on `path`.
    pub(crate) fn io<'a>(
        op: &'static str,
        path: &'a Path,
    ) -> impl FnOnce(std::io::Error) -> Self + 'a {
        move |source| Error::Io {
            op,
            path: path.to_path_buf(),
            source,
        }
    }
}

/// An error and its sources on one line (`outer: inner: …`), as anyhow's `{:#}` prints it.
pub fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        s.push_str(": ");
        s.push_str(&c.to_string());
        cur = c.source();
    }
    s
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
            .ok_or_else(|| Error::Device {
                spec: s.clone(),
                message: "expected cpu, cuda or cuda:N".into(),
            })?,
        None => {
            return Err(Error::Device {
                spec: s.clone(),
                message: "expected cpu, cuda or cuda:N".into(),
            })
        }
    };
    candle_core::Device::new_cuda(ordinal).map_err(|e| Error::Device {
        spec: s.clone(),
        // candle's message says which (no CUDA support compiled in, or no such GPU).
        message: format!(
            "{e} (build with `--features cuda` and run on a machine with an NVIDIA GPU)"
        ),
    })
}
