//! Per-epoch metrics and an append-only JSON-lines log.

use std::fs::{File, OpenOptions};
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::error::{Result, TrainError};

/// One epoch of one stage. Losses follow docs/method.md §8.5 ("average loss" = Σ batch losses /
/// dataset size); accuracies in percent.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EpochMetrics {
    /// Stage number (1 or 2; single-stage runs use 2).
    pub stage: u32,
    /// 0 for the initial evaluation, then 1, 2, ...
    pub epoch: u64,
    /// Mean training loss per image over the epoch; `None` for the initial evaluation.
    pub train_loss: Option<f64>,
    /// Training accuracy over the epoch, percent; `None` for the initial evaluation or when the
    /// stage computes no logits (feature-matching stages).
    pub train_acc: Option<f64>,
    /// Images trained on in this epoch (0 for the initial evaluation).
    #[serde(default)]
    pub train_images: u64,
    /// Mean loss per image on the test split.
    pub test_loss: Option<f64>,
    /// Test accuracy, percent; `None` when the stage computes no logits.
    pub test_acc: Option<f64>,
    /// Mean loss per image on the validation split (which then drives model selection); `None`,
    /// and absent from the JSON, without one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub val_loss: Option<f64>,
    /// Validation accuracy, percent; `None` without a validation split or without logits.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub val_acc: Option<f64>,
    /// Learning rate used for this epoch's training (first param group).
    pub lr: f64,
    /// The monitored metric improved (a checkpoint was saved).
    pub improved: bool,
    /// The learning rate was cut at the end of this epoch.
    pub cut: bool,
}

/// Wall-clock figures of one epoch. They live apart from [`EpochMetrics`] (in `timings.jsonl`)
/// so that a metrics log is a pure function of config and seed: a resumed run's equals an
/// uninterrupted one's byte for byte.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EpochTiming {
    /// Stage number, as in [`EpochMetrics::stage`].
    pub stage: u32,
    /// Epoch number, as in [`EpochMetrics::epoch`].
    pub epoch: u64,
    /// Seconds of the epoch (train + eval).
    pub seconds: f64,
    /// Training throughput.
    pub images_per_sec: f64,
}

/// Appends one JSON object per line and flushes after each, so a crash loses at most the
/// line being written.
pub struct JsonlWriter {
    path: PathBuf,
    out: BufWriter<File>,
}

impl JsonlWriter {
    /// Opens `path` for appending, creating it (and missing parent directories) if needed.
    pub fn open(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref().to_path_buf();
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|e| TrainError::io("create_dir_all", dir, e))?;
        }
        let f = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .map_err(|e| TrainError::io("open", &path, e))?;
        Ok(Self {
            path,
            out: BufWriter::new(f),
        })
    }

    /// The file being appended to.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Writes `record` as one line and flushes it to the OS.
    pub fn append<T: Serialize + ?Sized>(&mut self, record: &T) -> Result<()> {
        let mut line = serde_json::to_vec(record).map_err(|e| TrainError::Json {
            path: Some(self.path.clone()),
            source: e,
        })?;
        line.push(b'\n');
        self.out
            .write_all(&line)
            .and_then(|_| self.out.flush())
            .map_err(|e| TrainError::io("append", &self.path, e))
    }

    /// Like `append`, then fsyncs the file.
    pub fn append_sync<T: Serialize + ?Sized>(&mut self, record: &T) -> Result<()> {
        self.append(record)?;
        self.out
            .get_ref()
            .sync_data()
            .map_err(|e| TrainError::io("fsync", &self.path, e))
    }
}

/// Replaces `path` atomically with one line per record (how a resumed run restores a log to
/// exactly the epochs its resume state holds).
pub fn write_jsonl_atomic<T: Serialize>(path: impl AsRef<Path>, records: &[T]) -> Result<()> {
    let path = path.as_ref();
    let mut text = Vec::new();
    for r in records {
        serde_json::to_writer(&mut text, r).map_err(|e| TrainError::Json {
            path: Some(path.to_path_buf()),
            source: e,
        })?;
        text.push(b'\n');
    }
    crate::fsio::write_atomic(path, &text)
}

/// Reads every line of a JSON-lines file.
pub fn read_jsonl<T: serde::de::DeserializeOwned>(path: impl AsRef<Path>) -> Result<Vec<T>> {
    let path = path.as_ref();
    let text = std::fs::read_to_string(path).map_err(|e| TrainError::io("read", path, e))?;
    text.lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| {
            serde_json::from_str(l).map_err(|e| TrainError::Json {
                path: Some(path.to_path_buf()),
                source: e,
            })
        })
        .collect()
}
