//! Chained knowledge distillation: an experiment config becomes a plan (teacher, then levels,
//! then stages), each stage runs on the training engine, and a run directory collects
//! checkpoints, per-epoch metrics, `results.json` and a `report.md` in the shape of the paper's
//! tables (docs/method.md §10–§11).

#![warn(missing_docs)]

pub mod config;
pub mod data;
pub mod figures;
pub mod fingerprint;
pub mod latency;
pub mod method;
pub mod only;
pub mod paper;
pub mod plan;
mod progress;
pub mod report;
pub mod resume;
pub mod run;
pub mod rundir;
pub mod stage;
pub mod table;

use std::path::{Path, PathBuf};

pub use config::{ExperimentConfig, StageConfig};
pub use plan::Plan;
pub use run::{run_experiment, Latency, LevelResult, Results, RunDirHook, RunOptions};

/// Errors of configs, runs and reports.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A config that cannot be read, parsed or validated.
    #[error("config {path}: {message}")]
    Config {
        /// The config file, or `<config>` for text not read from a file.
        path: String,
        /// What is wrong, naming the field.
        message: String,
    },
    /// A stage cannot go on (a missing teacher, a non-finite loss, a state that does not fit).
    #[error("{label}: {message}")]
    Stage {
        /// The stage, e.g. `forward/pyramid/SVGG14 stage 1`.
        label: String,
        /// What went wrong.
        message: String,
    },
    /// The loss of a stage failed.
    #[error("{label}: the loss failed")]
    Loss {
        /// The stage, e.g. `forward/pyramid/SVGG14 stage 1`.
        label: String,
        /// The loss error.
        #[source]
        source: pyramid_losses::LossError,
    },
    /// A stage's optimiser or schedule could not be built or restored.
    #[error("{label}: the optimiser or schedule")]
    Optimizer {
        /// The stage, e.g. `forward/pyramid/SVGG14 stage 1`.
        label: String,
        /// The training-toolkit error.
        #[source]
        source: pyramid_train::TrainError,
    },
    /// A latency measurement that cannot be made (an empty budget).
    #[error("latency: {0}")]
    Latency(String),
    /// A figure could not be drawn.
    #[error("figure {}: {message}", path.display())]
    Figure {
        /// The figure's file.
        path: PathBuf,
        /// What went wrong.
        message: String,
    },
    /// A device string (config `device`, `--device`) that cannot be parsed or opened.
    #[error("bad device `{spec}`: {message}")]
    Device {
        /// The device string as given, e.g. `cuda:1`.
        spec: String,
        /// Why it cannot be used.
        message: String,
    },
    /// Every problem of a plan, one per line.
    #[error("the plan has {} problem(s):\n  {}", .0.len(), .0.join("\n  "))]
    Plan(Vec<String>),
    /// A file that is there but not what it must be.
    #[error("{}: {message}", path.display())]
    File {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        message: String,
    },
    /// A file operation failed.
    #[error("cannot {op} {}", path.display())]
    Io {
        /// The operation, as a verb for the message (`"read"`, `"remove"`, ...).
        op: &'static str,
        /// The file or directory.
        path: PathBuf,
        /// The underlying I/O error.
        #[source]
        source: std::io::Error,
    },
    /// An atomic file write failed.
    #[error(transparent)]
    Write(#[from] pyramid_fsio::WriteError),
    /// A file that should be safetensors (checkpoint, resume state) is not.
    #[error("{}: not a safetensors file", path.display())]
    Safetensors {
        /// The file.
        path: PathBuf,
        /// What the safetensors reader reported.
        #[source]
        source: safetensors::SafeTensorError,
    },
    /// A JSON file of the run directory that does not parse.
    #[error("bad JSON in {}", path.display())]
    Json {
        /// The file.
        path: PathBuf,
        /// The serde_json error (carries line and column).
        #[source]
        source: serde_json::Error,
    },
    /// A signal asked the run to stop; every completed epoch is saved.
    #[error("interrupted; every completed epoch is saved, and the same command continues the run")]
    Interrupted,
    /// `--only` names no step of the plan.
    #[error("--only {step}: the plan has no such step; its steps are: {}", .valid.join(", "))]
    UnknownStep {
        /// The step asked for.
        step: String,
        /// The plan's steps.
        valid: Vec<String>,
    },
    /// `--only` names a step whose predecessors are not complete in the run directory.
    #[error("--only {step} cannot start in {dir}:\n  {}", .missing.join("\n  "))]
    NotReady {
        /// The step asked for.
        step: String,
        /// The run directory.
        dir: String,
        /// What is missing, one line each.
        missing: Vec<String>,
    },
    /// Another process holds the run directory's lock.
    #[error("run directory {dir} is in use by another run ({holder}); wait for it or choose another --out")]
    Locked {
        /// The run directory.
        dir: String,
        /// The lock file's content: `pid <pid> on <host>` of the holder.
        holder: String,
    },
    /// Models in the run directory were trained with another config.
    #[error(
        "run directory {dir} holds models of another config:\n  {}\nUse another --out for this config, or --force to redo the affected models.",
        .problems.join("\n  ")
    )]
    Mismatch {
        /// The run directory.
        dir: String,
        /// One line per model: its path and the fields that differ.
        problems: Vec<String>,
    },
    /// A stage or teacher did not learn and `[run] on_degenerate = "error"`.
    #[error("{model} did not learn ([run] on_degenerate = \"error\"):\n  {}", .reasons.join("\n  "))]
    Degenerate {
        /// The model's run-directory path, e.g. `forward/pyramid/SVGG14`.
        model: String,
        /// Why it counts as degenerate, one per line.
        reasons: Vec<String>,
    },
    /// A model error (construction, forward pass, checkpoint I/O).
    #[error(transparent)]
    Model(#[from] pyramid_models::Error),
    /// A data error (reading, verification, loading).
    #[error(transparent)]
    Data(#[from] pyramid_datasets::Error),
    /// A training-toolkit error (optimiser, schedule, metrics log).
    #[error(transparent)]
    Train(#[from] pyramid_train::TrainError),
    /// A candle tensor operation failed.
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
