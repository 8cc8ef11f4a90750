//! Runs an experiment: teacher, then every chain level by level, writing the run directory.
//!
//! ```text
//! <out>/.lock                  held while a run works here
//! <out>/config.toml            the resolved config
//! <out>/plan.json              what the run does
//! <out>/teacher/final.safetensors, metrics.jsonl, timings.jsonl, result.json
//! <out>/<scheme>/<method>/<MODEL>/stage1.safetensors, final.safetensors, metrics.jsonl,
//!                                 timings.jsonl, result.json, resume.safetensors (until done)
//! <out>/results.json, report.md
//! <out>/run.log                (the CLI's, through `RunOptions::on_run_dir`)
//! ```
//! Every model carries a fingerprint of what determines it (see `fingerprint`). A level whose
//! `result.json` has the plan's fingerprint is complete and is reused; a level with a
//! `resume.safetensors` of that fingerprint continues after its last completed epoch; any other
//! fingerprint is an error before anything is written (or, with `--force`, the level is
//! redone). Files are written atomically.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::Instant;

use candle_core::Device;
use indicatif::MultiProgress;
use pyramid_models::{Adapter, Model, ModelConfig, ModelId, Scheme};
use pyramid_rng::Rng;
use pyramid_train::fsio::{read_json, write_atomic, write_json_atomic};
use pyramid_train::metrics::{write_jsonl_atomic, EpochMetrics, EpochTiming, JsonlWriter};
use serde::{Deserialize, Serialize};

use crate::config::{ExperimentConfig, OnDegenerate, TeacherConfig};
use crate::data::ExperimentData;
use crate::fingerprint::{DataIdentity, Fingerprint, Fingerprints, CHECKPOINT_KEY};
use crate::latency::Budget;
pub use crate::latency::Latency;
use crate::method::ModelRef;
use crate::plan::{Images, LevelPlan, Plan, StagePlan};
use crate::resume::{self, LevelProgress};
use crate::rundir::RunLock;
use crate::stage::{EpochDone, EpochSink, StageData, StageOutcome, StageRun, StageSnapshot};
use crate::Error;
use crate::{figures, latency, report};

/// Command-line level knobs of a run.
#[derive(Debug, Clone, Default)]
pub struct RunOptions {
    /// Overrides the config's `out_dir`.
    pub out_dir: Option<PathBuf>,
    /// Overrides the config's `device`.
    pub device: Option<String>,
    /// Overrides the data root.
    pub data_dir: Option<PathBuf>,
    /// Where the stages draw their progress bars (it draws only on a terminal); `None`: no
    /// bars. Log lines written while bars are shown must go through its `suspend`.
    pub progress: Option<MultiProgress>,
    /// Redo the levels whose fingerprint differs instead of refusing to run.
    pub force: bool,
    /// Set (by a signal handler) to stop after the current batch; the run then returns
    /// `Error::Interrupted` with every completed epoch saved.
    pub interrupt: Option<Arc<AtomicBool>>,
    /// Called once the run directory is locked and its models checked against the plan,
    /// before anything is written in it: where a caller starts its own files (the CLI's
    /// `run.log`). A refused run (locked, mismatched) never calls it.
    pub on_run_dir: Option<RunDirHook>,
    /// Run just this step of the plan (`teacher` or a level's label such as
    /// `forward/pyramid/SVGG17`), from the checkpoints its predecessors left in the run
    /// directory. Several such runs may work in one run directory at once.
    pub only: Option<String>,
    /// Overrides the config's seed; without `out_dir`, the run directory becomes
    /// `<out_dir>/seed-<seed>` (one directory per seed of a sweep).
    pub seed: Option<u64>,
}

impl RunOptions {
    /// The config as this run uses it: `cfg` with the options' overrides applied.
    pub fn resolve(&self, cfg: &ExperimentConfig) -> ExperimentConfig {
        let mut cfg = cfg.clone();
        if let Some(s) = self.seed {
            cfg.seed = s;
            cfg.out_dir = ExperimentConfig::seed_dir(&cfg.out_dir, s);
        }
        if let Some(o) = &self.out_dir {
            cfg.out_dir = o.clone();
        }
        if let Some(d) = &self.device {
            cfg.device = d.clone();
        }
        if let Some(d) = &self.data_dir {
            cfg.data.root = Some(d.clone());
        }
        cfg
    }
}

/// The function of a [`RunDirHook`].
pub type RunDirFn = dyn Fn(&Path) -> std::io::Result<()> + Send + Sync;

/// A callback given the run directory (see [`RunOptions::on_run_dir`]).
#[derive(Clone)]
pub struct RunDirHook(pub Arc<RunDirFn>);

impl std::fmt::Debug for RunDirHook {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("RunDirHook")
    }
}

/// One trained model of the run (a level of a chain, or the teacher).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LevelResult {
    /// The model's name (`VGG19`, `SVGG14`, `SVGG14B`, …).
    pub model: String,
    /// `forward` or `backward`; `-` for the teacher.
    pub scheme: String,
    /// `teacher`, or the method's config name (`pyramid`, `fitnet`, ...).
    pub method: String,
    /// 0 for the teacher, else 1 (SVGG17) … 5 (SVGG5).
    pub level: usize,
    /// Trainable parameters.
    pub params: usize,
    /// Multiply-accumulates of one forward pass of one image.
    pub macs: u64,
    /// Convolution layers.
    pub convs: usize,
    /// Fully connected layers.
    pub fcs: usize,
    /// Test accuracy (%) of the selected weights.
    pub best_test_acc: f64,
    /// Test accuracy (%) at the last epoch of the last stage.
    pub last_test_acc: f64,
    /// Every stage as it ended, in order.
    pub stages: Vec<StageOutcome>,
    /// Parameters inherited from the model it started from.
    pub inherited_params: usize,
    /// Parameters initialised afresh.
    pub fresh_params: usize,
    /// Seconds of training over every invocation (a timing).
    pub wall_seconds: f64,
    /// The final weights' file, relative to the model's folder.
    pub checkpoint: String,
    /// The model that taught it (its run-directory path), if any.
    #[serde(default)]
    pub teacher: Option<String>,
    /// Where its first weights came from.
    #[serde(default)]
    pub init_from: Option<String>,
    /// The stages as executed: equal to the plan's.
    #[serde(default)]
    pub executed: Vec<StagePlan>,
    /// The fingerprint of everything that determined this model, and those inputs.
    #[serde(default)]
    pub fingerprint: Option<String>,
    #[serde(default)]
    /// What the fingerprint was computed from (seed, data, model, stages, predecessors).
    pub inputs: Option<serde_json::Value>,
    /// Signs that the model did not learn (a stage stuck at its start, a teacher at chance).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub warnings: Vec<String>,
    /// Inference speed of the final weights on the run's device (a timing, like
    /// `wall_seconds`: not part of what a resumed run must reproduce bit for bit).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub latency: Option<Latency>,
}

/// Every result of a run (`results.json`).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Results {
    /// The config's `name`.
    pub name: String,
    /// The data set's canonical name.
    pub dataset: String,
    /// The seed of every model of the run.
    pub seed: u64,
    /// The device the run trained on.
    pub device: String,
    /// Input size, width, channels, batch norm and classes of every model.
    pub model_options: Option<pyramid_models::ModelOptions>,
    /// Training images (after any per-class subset).
    pub train_images: usize,
    /// Test images (after any per-class subset).
    pub test_images: usize,
    /// Unlabeled images added to every distillation stage 1 (`[data] stage1_unlabeled`).
    #[serde(default)]
    pub stage1_unlabeled_images: usize,
    /// The configured methods, in config order (the report's first columns).
    #[serde(default)]
    pub methods: Vec<String>,
    /// What the run trains on: data settings, split sizes and content hashes.
    #[serde(default)]
    pub data: Option<DataIdentity>,
    /// The teacher, when trained or loaded in this run directory.
    pub teacher: Option<LevelResult>,
    /// Every completed level, sorted by scheme, method and level.
    pub levels: Vec<LevelResult>,
    /// Models found in the run directory that belong to another config (another seed, data
    /// or model): left out of the tables.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub excluded: Vec<String>,
    /// Seconds of this invocation (a timing).
    pub wall_seconds: f64,
}

pub(crate) struct Ctx<'a> {
    pub(crate) cfg: &'a ExperimentConfig,
    pub(crate) data: &'a ExperimentData,
    pub(crate) out: PathBuf,
    pub(crate) progress: Option<MultiProgress>,
    pub(crate) device: Device,
    pub(crate) fingerprints: Fingerprints,
    pub(crate) interrupt: Option<Arc<AtomicBool>>,
}

impl Ctx<'_> {
    fn stage_data(&self, plan: &StagePlan) -> StageData<'_> {
        StageData {
            train: match plan.images {
                Images::LabelledPlusUnlabeled(_) => self.data.stage1_loader(),
                Images::Labelled => &self.data.train,
            },
            select: &self.data.select,
            test: self.data.test.as_ref(),
        }
    }

    fn run_stage(
        &self,
        label: String,
        plan: &StagePlan,
        student: &Model,
        teacher: Option<&Model>,
        resume: Option<StageSnapshot>,
        sink: &mut LevelSink,
    ) -> Result<StageOutcome, Error> {
        let rng = Rng::stream(self.cfg.seed, &format!("stage/{label}"));
        let adapter = match plan.features.as_ref().and_then(|f| f.adapter.clone()) {
            Some(spec) => Some(Adapter::new(spec, self.cfg.seed, &self.device)?),
            None => None,
        };
        StageRun {
            label: label.clone(),
            plan,
            student,
            teacher,
            adapter: adapter.as_ref(),
            rng,
            progress: self.progress.as_ref(),
            resume,
            interrupt: self.interrupt.as_deref(),
            // Only the teacher must leave chance at once; a narrow student may take longer.
            chance_accuracy: (label == TEACHER_LABEL).then(|| 100.0 / self.data.classes as f64),
        }
        .run(&self.stage_data(plan), sink)
    }

    fn dir(&self, at: &ModelRef) -> PathBuf {
        self.out.join(&at.0)
    }

    fn fingerprint(&self, at: &ModelRef) -> &Fingerprint {
        self.fingerprints.get(&at.0)
    }

    /// Saves a checkpoint stamped with its model's fingerprint.
    fn save_checkpoint(
        &self,
        model: &Model,
        path: &Path,
        at: &ModelRef,
        stage: Option<u32>,
    ) -> Result<(), Error> {
        let mut meta = HashMap::from([(
            CHECKPOINT_KEY.to_string(),
            self.fingerprint(at).hash.clone(),
        )]);
        if let Some(n) = stage {
            meta.insert("pyramid.stage".to_string(), n.to_string());
        }
        Ok(model.save_with_metadata(path, &meta)?)
    }

    /// Loads `<at>/final.safetensors`, refusing a file whose fingerprint is not the plan's.
    fn load_final(&self, at: &ModelRef) -> Result<Model, Error> {
        let path = self.dir(at).join("final.safetensors");
        let found = checkpoint_fingerprint(&path)?;
        let want = &self.fingerprint(at).hash;
        if found.as_deref() != Some(want.as_str()) {
            return Err(Error::file(
                &path,
                format!(
                    "fingerprint {} but the plan's {at} is {want}: the file was replaced after its result.json was written",
                    found.as_deref().unwrap_or("(none)")
                ),
            ));
        }
        Ok(Model::load(&path, &self.device)?)
    }

    /// The inference speed of a finished model at the run's evaluation batch size: a timing
    /// (no weights, logs or draws change), so it is not part of what a resume reproduces.
    fn latency(&self, model: &Model) -> Result<Latency, Error> {
        let l = latency::measure(model, &Budget::run(self.cfg.data.eval_batch_size))?;
        tracing::info!(
            "{}: {:.0} images/s at batch {} ({:.2} s per 13,000 images)",
            model.id(),
            l.images_per_sec,
            l.batch_size,
            l.seconds_per_13000
        );
        Ok(l)
    }

    fn on_degenerate(&self, at: &ModelRef, warnings: &[String]) -> Result<(), Error> {
        if !warnings.is_empty() && self.cfg.run.on_degenerate == OnDegenerate::Error {
            return Err(Error::Degenerate {
                model: at.0.clone(),
                reasons: warnings.to_vec(),
            });
        }
        Ok(())
    }
}

/// The teacher's stage label in logs (and fault points).
const TEACHER_LABEL: &str = "teacher/VGG19";

/// The fingerprint stamped in a checkpoint's metadata, if any (reads only the header).
pub fn checkpoint_fingerprint(path: &Path) -> Result<Option<String>, Error> {
    Ok(resume::read_metadata(path)?.remove(CHECKPOINT_KEY))
}

fn summary(model: &Model) -> (usize, u64, usize, usize) {
    let s = model.spec();
    (s.num_params(), s.macs(), s.conv_count(), s.fc_count())
}

/// Persists a level's progress at the end of every epoch: the resume state first, then the
/// metrics and timing lines.
struct LevelSink {
    dir: PathBuf,
    progress: LevelProgress,
    metrics: JsonlWriter,
    timings: JsonlWriter,
    started: Instant,
}

impl LevelSink {
    /// Opens the level's logs: restored to exactly the epochs of `progress` (a fresh level
    /// starts them empty).
    fn open(dir: &Path, progress: LevelProgress) -> Result<Self, Error> {
        let (m, t) = (dir.join("metrics.jsonl"), dir.join("timings.jsonl"));
        write_jsonl_atomic(&m, &progress.metrics)?;
        write_jsonl_atomic(&t, &progress.timings)?;
        Ok(Self {
            dir: dir.to_path_buf(),
            metrics: JsonlWriter::open(&m)?,
            timings: JsonlWriter::open(&t)?,
            progress,
            started: Instant::now(),
        })
    }

    fn fresh(dir: &Path, fingerprint: &str) -> Result<Self, Error> {
        Self::open(
            dir,
            LevelProgress {
                format: crate::fingerprint::RUN_FORMAT,
                fingerprint: fingerprint.to_string(),
                stage_index: 0,
                completed: Vec::new(),
                stage: None,
                optimizer: None,
                has_best: false,
                metrics: Vec::new(),
                timings: Vec::new(),
                wall_seconds: 0.0,
            },
        )
    }

    fn wall_seconds(&self) -> f64 {
        self.progress.wall_seconds + self.started.elapsed().as_secs_f64()
    }

    /// A stage finished: the next one starts from the student as it is now.
    fn stage_done(&mut self, student: &Model, outcome: StageOutcome) -> Result<(), Error> {
        self.progress.completed.push(outcome);
        self.progress.stage_index += 1;
        self.progress.stage = None;
        self.progress.optimizer = None;
        self.progress.has_best = false;
        let mut p = self.progress.clone();
        p.wall_seconds = self.wall_seconds();
        resume::save(&self.dir.join(resume::FILE), &p, student, None)
    }

    /// The level is complete (its result.json is written): the state has served.
    fn finish(self) -> Result<(), Error> {
        let path = self.dir.join(resume::FILE);
        match std::fs::remove_file(&path) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(Error::io("remove", &path)(e)),
        }
    }
}

impl EpochSink for LevelSink {
    fn epoch_done(&mut self, student: &Model, done: EpochDone) -> Result<(), Error> {
        let EpochDone {
            snapshot,
            metrics,
            timing,
        } = done;
        self.progress.metrics.push(metrics.clone());
        self.progress.timings.push(timing.clone());
        self.progress.stage = Some(snapshot.progress.clone());
        self.progress.optimizer = Some(snapshot.optimizer.meta.clone());
        self.progress.has_best = snapshot.best.is_some();
        let mut p = self.progress.clone();
        p.wall_seconds = self.wall_seconds();
        resume::save(&self.dir.join(resume::FILE), &p, student, Some(&snapshot))?;
        self.metrics.append(&metrics)?;
        self.timings.append(&timing)?;
        Ok(())
    }
}

/// The trained models the remaining steps still need, loaded on first use and dropped after
/// their last.
pub(crate) struct Models {
    loaded: BTreeMap<ModelRef, Model>,
    last_use: BTreeMap<ModelRef, usize>,
}

impl Models {
    pub(crate) fn new(plan: &Plan) -> Self {
        let mut last_use = BTreeMap::new();
        for (i, s) in plan.steps.iter().enumerate() {
            for r in s.teacher.iter().chain(std::iter::once(&s.init.from)) {
                last_use.insert(r.clone(), i);
            }
        }
        Self {
            loaded: BTreeMap::new(),
            last_use,
        }
    }

    fn get(&mut self, ctx: &Ctx, at: &ModelRef) -> Result<&Model, Error> {
        if !self.loaded.contains_key(at) {
            if !ctx.dir(at).join("result.json").exists() {
                return Err(Error::file(
                    &ctx.dir(at).join("final.safetensors"),
                    format!("{at} is needed but has not been trained (no result.json)"),
                ));
            }
            let m = ctx.load_final(at)?;
            self.loaded.insert(at.clone(), m);
        }
        Ok(&self.loaded[at])
    }

    fn keep(&mut self, at: &ModelRef, model: Model) {
        if self.last_use.contains_key(at) {
            self.loaded.insert(at.clone(), model);
        }
    }

    /// Drops the models no step after `step` needs.
    fn release(&mut self, step: usize) {
        let last_use = &self.last_use;
        self.loaded
            .retain(|r, _| last_use.get(r).is_some_and(|&i| i > step));
    }
}

/// What the run directory already holds for one model of the plan.
pub(crate) enum Found {
    Nothing,
    Complete,
    Resumable,
}

/// Compares every model of the plan with what the run directory holds. Returns what each
/// holds, or (without `force`) every mismatch at once, before anything is written.
pub(crate) fn survey(
    out: &Path,
    ctx_fps: &Fingerprints,
    force: bool,
) -> Result<BTreeMap<String, Found>, Error> {
    let mut found = BTreeMap::new();
    let mut problems = Vec::new();
    let mut redo = Vec::new();
    for (at, fp) in &ctx_fps.0 {
        let dir = out.join(at);
        let result = dir.join("result.json");
        let state = dir.join(resume::FILE);
        let (what, recorded_fp, recorded_inputs) = if result.exists() {
            let r: LevelResult = read_json(&result)?;
            (Found::Complete, r.fingerprint, r.inputs)
        } else if state.exists() {
            (
                Found::Resumable,
                Some(resume::fingerprint_of(&state)?),
                None,
            )
        } else {
            // Nothing, or the files of a level killed before its first epoch ended: it
            // starts over.
            (Found::Nothing, Some(fp.hash.clone()), None)
        };
        if recorded_fp.as_deref() == Some(fp.hash.as_str()) {
            if matches!(what, Found::Complete) && state.exists() {
                // Killed between its result.json and the state's removal.
                std::fs::remove_file(&state).map_err(Error::io("remove", &state))?;
            }
            found.insert(at.clone(), what);
            continue;
        }
        let why = match (&recorded_fp, &recorded_inputs) {
            (None, _) => vec!["it has no fingerprint (written by an older version)".to_string()],
            (Some(_), Some(inputs)) => fp.differences(inputs),
            (Some(h), None) => vec![format!(
                "its resume state has fingerprint {h}, the plan's is {}",
                fp.hash
            )],
        };
        if force {
            tracing::warn!("{at}: redone (--force): {}", why.join("; "));
            redo.push(dir);
            found.insert(at.clone(), Found::Nothing);
        } else {
            problems.push(format!("{at}: {}", why.join("; ")));
        }
    }
    if !problems.is_empty() {
        return Err(Error::Mismatch {
            dir: out.display().to_string(),
            problems,
        });
    }
    for dir in redo {
        std::fs::remove_dir_all(&dir).map_err(Error::io("remove", &dir))?;
    }
    Ok(found)
}

/// Runs (or resumes) the experiment and returns its results.
pub fn run_experiment(cfg: &ExperimentConfig, opts: &RunOptions) -> Result<Results, Error> {
    let started = Instant::now();
    let cfg = opts.resolve(cfg);
    let device = crate::device_from_str(&cfg.device)?;
    // Plan and data are both checked before anything is written, and their problems reported
    // together: a bad data file leaves the run directory as it was.
    let plan = cfg.validate().and_then(|_| Plan::build(&cfg));
    let data = ExperimentData::load(&cfg, &device);
    let (plan, data) = match (plan, data) {
        (Ok(p), Ok(d)) => (p, d),
        (Err(e), Ok(_)) | (Ok(_), Err(e)) => return Err(e),
        (Err(p), Err(d)) => {
            let mut problems = match p {
                Error::Plan(v) => v,
                other => vec![crate::error_chain(&other)],
            };
            problems.push(format!("data: {}", crate::error_chain(&d)));
            return Err(Error::Plan(problems));
        }
    };
    tracing::info!(
        "data {}: {} train / {} test images, {} classes",
        cfg.data.dataset,
        data.train_len,
        data.test_len,
        data.classes
    );
    let fingerprints = Fingerprints::of_plan(&cfg, &plan, &data.identity, data.classes);
    if let Some(only) = &opts.only {
        return crate::only::run_step(
            &cfg,
            &plan,
            &data,
            fingerprints,
            device,
            opts,
            only,
            started,
        );
    }
    let out = cfg.out_dir.clone();
    let lock = RunLock::acquire(&out)?;
    let stale = pyramid_fsio::remove_temp_files(&out)?;
    for p in &stale {
        tracing::info!("removed {}, left by a killed run", p.display());
    }
    let found = survey(&out, &fingerprints, opts.force)?;
    if let Some(hook) = &opts.on_run_dir {
        (hook.0)(&out).map_err(Error::io("start the run's files in", &out))?;
    }
    let resolved =
        toml::to_string_pretty(&cfg).map_err(|e| Error::file(&out.join("config.toml"), e))?;
    write_atomic(out.join("config.toml"), resolved.as_bytes())?;
    write_json_atomic(out.join("plan.json"), &plan)?;
    tracing::info!(
        "run directory {} (locked: {})",
        out.display(),
        lock.path().display()
    );
    let ctx = Ctx {
        cfg: &cfg,
        data: &data,
        out: out.clone(),
        progress: opts.progress.clone(),
        device: device.clone(),
        fingerprints,
        interrupt: opts.interrupt.clone(),
    };
    let header = results_header(&cfg, &plan, &data);
    let is_complete = |at: &ModelRef| matches!(found.get(&at.0), Some(Found::Complete));
    let mut models = Models::new(&plan);
    if is_complete(&ModelRef::teacher()) {
        tracing::info!("teacher: complete");
    } else {
        let teacher = obtain_teacher(&ctx, &plan)?;
        models.keep(&ModelRef::teacher(), teacher);
        save_results(&out, &header, started)?;
        pyramid_fsio::fault_point("level done teacher");
    }

    for (i, step) in plan.steps.iter().enumerate() {
        if is_complete(&step.at) {
            tracing::info!("{}: complete", step.at);
        } else {
            let model = run_level(&ctx, &mut models, step)?;
            models.keep(&step.at, model);
            save_results(&out, &header, started)?;
            pyramid_fsio::fault_point(&format!("level done {}", step.at));
        }
        models.release(i);
    }
    save_results(&out, &header, started)
}

/// The run-wide fields of `results.json`.
pub(crate) fn results_header(
    cfg: &ExperimentConfig,
    plan: &Plan,
    data: &ExperimentData,
) -> Results {
    Results {
        name: cfg.name.clone(),
        dataset: cfg.data.dataset.to_string(),
        seed: cfg.seed,
        device: cfg.device.clone(),
        model_options: Some(cfg.model.options(data.classes)),
        train_images: data.train_len,
        test_images: data.test_len,
        stage1_unlabeled_images: cfg.data.stage1_unlabeled,
        methods: plan.methods.clone(),
        data: Some(data.identity.clone()),
        ..Default::default()
    }
}

/// Gathers every level's `result.json` under `out` into `results.json` and `report.md`.
pub(crate) fn save_results(
    out: &Path,
    header: &Results,
    started: Instant,
) -> Result<Results, Error> {
    let mut r = Results::collect(out, header)?;
    r.wall_seconds = started.elapsed().as_secs_f64();
    write_json_atomic(out.join("results.json"), &r)?;
    let made = figures::render(out, &r)?;
    let text = report::markdown(&r) + &report::figures_section(&made);
    write_atomic(out.join("report.md"), text.as_bytes())?;
    Ok(r)
}

impl Results {
    /// Whether a model's recorded inputs are of this run's seed, data and model options (a
    /// run directory can hold several configs' methods, never several seeds or data sets).
    fn owns(&self, inputs: Option<&serde_json::Value>) -> bool {
        let Some(i) = inputs else {
            return self.data.is_none();
        };
        let Some(data) = &self.data else {
            return true;
        };
        i.get("format") == Some(&serde_json::json!(crate::fingerprint::RUN_FORMAT))
            && i.get("seed") == Some(&serde_json::json!(self.seed))
            && i.get("data") == serde_json::to_value(data).ok().as_ref()
            && i.get("model") == serde_json::to_value(&self.model_options).ok().as_ref()
    }

    /// The results found in a run directory (`teacher/` and `<scheme>/<method>/<MODEL>/`), with
    /// the run-wide fields of `header`. Levels are sorted by scheme, method and level; those
    /// of another seed, data set or model options go to `excluded`.
    pub fn collect(out: &Path, header: &Results) -> Result<Results, Error> {
        let mut r = header.clone();
        r.excluded.clear();
        let teacher = out.join("teacher/result.json");
        r.teacher = None;
        if teacher.exists() {
            let t: LevelResult = read_json(&teacher)?;
            if r.owns(t.inputs.as_ref()) {
                r.teacher = Some(t);
            } else {
                r.excluded.push("teacher".into());
            }
        }
        r.levels.clear();
        for scheme in Scheme::ALL {
            let dir = out.join(scheme.as_str());
            let Ok(methods) = std::fs::read_dir(&dir) else {
                continue;
            };
            for m in methods.flatten() {
                let Ok(models) = std::fs::read_dir(m.path()) else {
                    continue;
                };
                for model in models.flatten() {
                    let p = model.path().join("result.json");
                    if p.exists() {
                        let l: LevelResult = read_json(&p)?;
                        if r.owns(l.inputs.as_ref()) {
                            r.levels.push(l);
                        } else {
                            r.excluded
                                .push(format!("{}/{}/{}", l.scheme, l.method, l.model));
                        }
                    }
                }
            }
        }
        r.levels
            .sort_by(|a, b| (&a.scheme, &a.method, a.level).cmp(&(&b.scheme, &b.method, b.level)));
        r.excluded.sort();
        Ok(r)
    }
}

fn level_result(
    model: &Model,
    scheme: Scheme,
    method: &str,
    stages: Vec<StageOutcome>,
    inherited: (usize, usize),
    wall_seconds: f64,
) -> LevelResult {
    let (params, macs, convs, fcs) = summary(model);
    let last = stages.last().expect("at least one stage");
    let warnings = stages
        .iter()
        .flat_map(|s| {
            s.warnings
                .iter()
                .map(move |w| format!("stage {}: {w}", s.stage))
        })
        .collect();
    LevelResult {
        model: model.id().name(),
        scheme: if model.id().is_vgg19() {
            "-".into()
        } else {
            scheme.to_string()
        },
        method: method.into(),
        level: model.id().level,
        params,
        macs,
        convs,
        fcs,
        best_test_acc: last.best_test_acc.unwrap_or(f64::NAN),
        last_test_acc: last.last_test_acc.unwrap_or(f64::NAN),
        inherited_params: inherited.0,
        fresh_params: inherited.1,
        wall_seconds,
        checkpoint: "final.safetensors".into(),
        stages,
        teacher: None,
        init_from: None,
        executed: Vec::new(),
        fingerprint: None,
        inputs: None,
        warnings,
        latency: None,
    }
}

/// The resume state of the model at `at`, if one is there (its fingerprint was checked by
/// `survey`).
fn resume_state(ctx: &Ctx, at: &ModelRef) -> Result<Option<resume::LevelState>, Error> {
    let path = ctx.dir(at).join(resume::FILE);
    if !path.exists() {
        return Ok(None);
    }
    let state = resume::load(&path, &ctx.device)?;
    if state.progress.fingerprint != ctx.fingerprint(at).hash {
        return Err(Error::file(
            &path,
            "fingerprint changed while the run was starting",
        ));
    }
    Ok(Some(state))
}

/// Runs the stages of a level (or the teacher) from `state`, returning their outcomes.
fn run_stages(
    ctx: &Ctx,
    at: &ModelRef,
    stages: &[StagePlan],
    student: &Model,
    teacher: Option<&Model>,
    state: Option<resume::LevelState>,
) -> Result<(Vec<StageOutcome>, LevelSink), Error> {
    let dir = ctx.dir(at);
    let (mut sink, mut stage_resume) = match state {
        Some(s) => {
            student.restore(&s.model)?;
            tracing::info!(
                "{at}: resuming in stage {} of {} ({} epoch records kept)",
                s.progress.stage_index + 1,
                stages.len(),
                s.progress.metrics.len()
            );
            (LevelSink::open(&dir, s.progress)?, s.stage)
        }
        None => (LevelSink::fresh(&dir, &ctx.fingerprint(at).hash)?, None),
    };
    for (i, stage) in stages.iter().enumerate().skip(sink.progress.stage_index) {
        let label = if at.0 == "teacher" {
            TEACHER_LABEL.to_string()
        } else {
            format!("{at} stage {}", stage.number)
        };
        let outcome = ctx.run_stage(
            label,
            stage,
            student,
            teacher,
            stage_resume.take(),
            &mut sink,
        )?;
        ctx.on_degenerate(at, &outcome.warnings)?;
        if i + 1 < stages.len() {
            let path = dir.join(format!("stage{}.safetensors", stage.number));
            ctx.save_checkpoint(student, &path, at, Some(stage.number))?;
        }
        sink.stage_done(student, outcome)?;
    }
    let outcomes = sink.progress.completed.clone();
    Ok((outcomes, sink))
}

pub(crate) fn obtain_teacher(ctx: &Ctx, plan: &Plan) -> Result<Model, Error> {
    let at = ModelRef::teacher();
    let dir = ctx.dir(&at);
    let device = &ctx.device;
    let started = Instant::now();
    let options = ctx.cfg.model.options(ctx.data.classes);
    let config = ModelConfig::new(ModelId::VGG19, options.clone());
    let model = match &ctx.cfg.teacher {
        TeacherConfig::Load { path } => {
            let m = Model::load(path, device)?;
            if m.id() != ModelId::VGG19 || m.options() != &options {
                return Err(Error::file(
                    path,
                    format!(
                        "teacher checkpoint is {} with {:?}; the config needs VGG19 with {:?}",
                        m.id(),
                        m.options(),
                        options
                    ),
                ));
            }
            m
        }
        TeacherConfig::Train { .. } => Model::new(config, ctx.cfg.seed, device)?,
        TeacherConfig::Torchvision { path, .. } => {
            let m = Model::new(config, ctx.cfg.seed, device)?;
            let n = m.import_torchvision_vgg19(path, ctx.cfg.seed)?;
            tracing::info!("imported {} tensors from {}", n.len(), path.display());
            m
        }
    };
    let (stages, wall, sink) = match &plan.teacher.stage {
        Some(stage) => {
            let state = resume_state(ctx, &at)?;
            let (outcomes, sink) =
                run_stages(ctx, &at, std::slice::from_ref(stage), &model, None, state)?;
            (outcomes, sink.wall_seconds(), Some(sink))
        }
        None => {
            // A loaded teacher is only evaluated.
            let acc = crate::stage::evaluate_accuracy(&model, ctx.data.test_loader())?;
            let outcome = StageOutcome {
                stage: 0,
                loss: "none".into(),
                epochs: 0,
                best_epoch: 0,
                best_metric: acc,
                monitored: "test accuracy".into(),
                best_test_acc: Some(acc),
                last_test_acc: Some(acc),
                stop: None,
                seconds: started.elapsed().as_secs_f64(),
                images_per_sec: 0.0,
                warnings: Vec::new(),
            };
            (vec![outcome], started.elapsed().as_secs_f64(), None)
        }
    };
    ctx.save_checkpoint(&model, &dir.join("final.safetensors"), &at, None)?;
    let mut r = level_result(&model, Scheme::Forward, "teacher", stages, (0, 0), wall);
    r.fresh_params = r.params;
    r.executed = plan.teacher.stage.iter().cloned().collect();
    // A teacher no better than guessing would silently poison every level below it.
    let chance = 100.0 / ctx.data.classes as f64;
    if r.best_test_acc <= 1.5 * chance {
        let w = format!(
            "the teacher's test accuracy {:.2}% is at chance level ({chance:.2}% for {} classes): it did not learn",
            r.best_test_acc, ctx.data.classes
        );
        tracing::warn!("teacher: {w}");
        r.warnings.push(w);
    }
    let fp = ctx.fingerprint(&at);
    r.fingerprint = Some(fp.hash.clone());
    r.inputs = Some(fp.inputs.clone());
    ctx.on_degenerate(&at, &r.warnings)?;
    r.latency = Some(ctx.latency(&model)?);
    // Written last: it marks the teacher complete.
    write_json_atomic(dir.join("result.json"), &r)?;
    if let Some(sink) = sink {
        sink.finish()?;
    }
    tracing::info!("teacher VGG19: test accuracy {:.2}%", r.best_test_acc);
    Ok(model)
}

/// Trains one level of the plan: its student from `init.from`, then its stages in order.
pub(crate) fn run_level(ctx: &Ctx, models: &mut Models, step: &LevelPlan) -> Result<Model, Error> {
    let dir = ctx.dir(&step.at);
    let id = ModelId::parse(&step.model, step.scheme)?;
    let (student, inh) = Model::inherit(models.get(ctx, &step.init.from)?, id, ctx.cfg.seed)?;
    tracing::info!(
        "{}: {} parameters from {}, {} new ({})",
        step.at,
        inh.inherited.len(),
        step.init.from,
        inh.fresh.len(),
        step.init.note
    );
    if let Some(t) = &step.teacher {
        models.get(ctx, t)?;
    }
    let teacher = step.teacher.as_ref().map(|t| &models.loaded[t]);
    let state = resume_state(ctx, &step.at)?;
    let (outcomes, sink) = run_stages(ctx, &step.at, &step.stages, &student, teacher, state)?;
    ctx.save_checkpoint(&student, &dir.join("final.safetensors"), &step.at, None)?;
    let mut r = level_result(
        &student,
        step.scheme,
        &step.method,
        outcomes,
        (inh.inherited.len(), inh.fresh.len()),
        sink.wall_seconds(),
    );
    r.teacher = step.teacher.as_ref().map(|t| t.0.clone());
    r.init_from = Some(step.init.from.0.clone());
    r.executed = step.stages.clone();
    let fp = ctx.fingerprint(&step.at);
    r.fingerprint = Some(fp.hash.clone());
    r.inputs = Some(fp.inputs.clone());
    r.latency = Some(ctx.latency(&student)?);
    // Written last: it marks the level complete.
    write_json_atomic(dir.join("result.json"), &r)?;
    sink.finish()?;
    tracing::info!(
        "{}: test accuracy {:.2}% (last epoch {:.2}%)",
        step.at,
        r.best_test_acc,
        r.last_test_acc
    );
    Ok(student)
}

/// Reads the metrics log of a model folder (for reports and tests).
pub fn read_metrics(dir: &Path) -> Result<Vec<EpochMetrics>, Error> {
    Ok(pyramid_train::metrics::read_jsonl(
        dir.join("metrics.jsonl"),
    )?)
}

/// Reads the timings log of a model folder.
pub fn read_timings(dir: &Path) -> Result<Vec<EpochTiming>, Error> {
    Ok(pyramid_train::metrics::read_jsonl(
        dir.join("timings.jsonl"),
    )?)
}
