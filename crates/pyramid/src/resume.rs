//! A level's resume state, `resume.safetensors` in its folder: rewritten atomically at the end
//! of every epoch, removed when the level completes.
//!
//! One file holds everything a resumed run needs to continue exactly where the last completed
//! epoch left off: the student's weights (`model/…`), the selected weights when they differ
//! (`best/…`), the optimiser's buffers (`optim/…`), the FitNet regressor (`adapter/…`), and as
//! metadata the stage in progress, its schedule and bookkeeping, the outcomes of completed
//! stages and the metrics log so far.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;

use candle_core::{Device, Tensor};
use pyramid_models::Model;
use pyramid_train::metrics::{EpochMetrics, EpochTiming};
use pyramid_train::optim::{OptimizerMeta, OptimizerState};
use serde::{Deserialize, Serialize};

use crate::fingerprint::RUN_FORMAT;
use crate::stage::{StageOutcome, StageProgress, StageSnapshot};
use crate::Error;

/// The file name in a level's folder.
pub const FILE: &str = "resume.safetensors";
const META_KEY: &str = "pyramid.resume";

/// The metadata part of a resume state.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LevelProgress {
    /// The run format ([`RUN_FORMAT`]) the state was written in; another format is refused.
    pub format: u32,
    /// The level's fingerprint: a state of another config is never continued.
    pub fingerprint: String,
    /// Index (in the level's plan) of the stage in progress or next to start.
    pub stage_index: usize,
    /// Outcomes of the level's finished stages, in order.
    pub completed: Vec<StageOutcome>,
    /// The stage in progress; `None` when stage `stage_index` has not started.
    pub stage: Option<StageProgress>,
    /// The optimiser's metadata (kind, groups, step counts); its buffers are the `optim/…` tensors.
    pub optimizer: Option<OptimizerMeta>,
    /// Whether the file holds separately selected weights (`best/…`).
    pub has_best: bool,
    /// The level's metrics log so far (every stage, every epoch).
    pub metrics: Vec<EpochMetrics>,
    /// The level's per-epoch timings so far.
    pub timings: Vec<EpochTiming>,
    /// Wall-clock seconds the level has run, summed over interrupted runs.
    pub wall_seconds: f64,
}

/// A loaded resume state.
pub struct LevelState {
    /// The metadata.
    pub progress: LevelProgress,
    /// The student's weights and buffers.
    pub model: Vec<(String, Tensor)>,
    /// The stage in progress, ready for `StageRun::resume`.
    pub stage: Option<StageSnapshot>,
}

fn not_state(path: &Path) -> impl Fn(safetensors::SafeTensorError) -> Error + '_ {
    move |source| Error::Safetensors {
        path: path.to_path_buf(),
        source,
    }
}

fn bad_json(path: &Path) -> impl Fn(serde_json::Error) -> Error + '_ {
    move |source| Error::Json {
        path: path.to_path_buf(),
        source,
    }
}

/// Writes the state atomically. `stage` is the stage in progress (with its tensors).
pub fn save(
    path: &Path,
    progress: &LevelProgress,
    student: &Model,
    stage: Option<&StageSnapshot>,
) -> Result<(), Error> {
    let mut tensors: BTreeMap<String, Tensor> = BTreeMap::new();
    for (n, t) in student.snapshot() {
        tensors.insert(format!("model/{n}"), t);
    }
    if let Some(s) = stage {
        for (k, t) in &s.optimizer.tensors {
            tensors.insert(format!("optim/{k}"), t.clone());
        }
        for (n, t) in s.best.iter().flatten() {
            tensors.insert(format!("best/{n}"), t.clone());
        }
        for (n, t) in &s.adapter {
            tensors.insert(format!("adapter/{n}"), t.clone());
        }
    }
    let meta = serde_json::to_string(progress).map_err(bad_json(path))?;
    let info = HashMap::from([(META_KEY.to_string(), meta)]);
    let cpu: BTreeMap<String, Tensor> = tensors
        .into_iter()
        .map(|(k, t)| Ok((k, t.to_device(&Device::Cpu)?)))
        .collect::<Result<_, candle_core::Error>>()?;
    let bytes =
        safetensors::tensor::serialize(cpu.iter(), Some(info)).map_err(|e| Error::file(path, e))?;
    pyramid_fsio::write_atomic(path, &pyramid_fsio::canonical_safetensors(bytes))
        .map_err(|e| Error::file(&e.path, format!("{}: {}", e.op, e.source)))
}

/// Reads a state written by [`save`]; tensors go to `device`.
pub fn load(path: &Path, device: &Device) -> Result<LevelState, Error> {
    let bytes = std::fs::read(path).map_err(Error::io("read", path))?;
    let (_, header) = safetensors::SafeTensors::read_metadata(&bytes).map_err(not_state(path))?;
    let meta = header
        .metadata()
        .as_ref()
        .and_then(|m| m.get(META_KEY))
        .ok_or_else(|| {
            Error::file(
                path,
                format!("no `{META_KEY}` metadata: not a resume state"),
            )
        })?;
    let progress: LevelProgress = serde_json::from_str(meta).map_err(bad_json(path))?;
    if progress.format != RUN_FORMAT {
        return Err(Error::file(
            path,
            format!(
                "resume state of run format {}, this build writes {RUN_FORMAT}",
                progress.format
            ),
        ));
    }
    let all = candle_core::safetensors::load_buffer(&bytes, device)?;
    let (mut model, mut best, mut optim, mut adapter) =
        (Vec::new(), Vec::new(), BTreeMap::new(), Vec::new());
    let mut names: Vec<_> = all.into_iter().collect();
    names.sort_by(|a, b| a.0.cmp(&b.0));
    for (k, t) in names {
        match k.split_once('/') {
            Some(("model", n)) => model.push((n.to_string(), t)),
            Some(("best", n)) => best.push((n.to_string(), t)),
            Some(("optim", n)) => {
                optim.insert(n.to_string(), t);
            }
            Some(("adapter", n)) => adapter.push((n.to_string(), t)),
            _ => return Err(Error::file(path, format!("unexpected tensor `{k}`"))),
        }
    }
    let stage = match (&progress.stage, &progress.optimizer) {
        (Some(p), Some(meta)) => Some(StageSnapshot {
            progress: p.clone(),
            optimizer: OptimizerState {
                meta: meta.clone(),
                tensors: optim,
            },
            best: progress.has_best.then_some(best),
            adapter,
        }),
        (None, _) => None,
        (Some(_), None) => {
            return Err(Error::file(
                path,
                "a stage in progress without its optimiser state",
            ))
        }
    };
    Ok(LevelState {
        progress,
        model,
        stage,
    })
}

/// The `__metadata__` map of a safetensors file, reading only its header (a checkpoint's
/// tensors can be hundreds of MB).
pub(crate) fn read_metadata(path: &Path) -> Result<BTreeMap<String, String>, Error> {
    use std::io::Read;
    let mut f = std::fs::File::open(path).map_err(Error::io("open", path))?;
    let mut len = [0u8; 8];
    f.read_exact(&mut len).map_err(Error::io("read", path))?;
    let n = u64::from_le_bytes(len);
    if n > 100 << 20 {
        return Err(Error::file(
            path,
            "not a safetensors file (header too large)",
        ));
    }
    let mut header = vec![0u8; n as usize];
    f.read_exact(&mut header).map_err(Error::io("read", path))?;
    #[derive(Deserialize)]
    struct Header {
        #[serde(rename = "__metadata__", default)]
        metadata: BTreeMap<String, String>,
    }
    let h: Header = serde_json::from_slice(&header).map_err(bad_json(path))?;
    Ok(h.metadata)
}

/// Reads only the fingerprint of a state (for the run directory's check).
pub fn fingerprint_of(path: &Path) -> Result<String, Error> {
    let metadata = read_metadata(path)?;
    let meta = metadata
        .get(META_KEY)
        .ok_or_else(|| Error::file(path, format!("no `{META_KEY}` metadata")))?;
    #[derive(Deserialize)]
    struct Fp {
        fingerprint: String,
    }
    let fp: Fp = serde_json::from_str(meta).map_err(bad_json(path))?;
    Ok(fp.fingerprint)
}
