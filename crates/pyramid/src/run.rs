//! Runs an experiment: teacher, then every chain level by level, writing the run directory.
//!
//! ```text
//! <out>/config.toml            the resolved config
//! <out>/plan.json              what the run does
//! <out>/teacher/VGG19.safetensors, metrics.jsonl, result.json
//! <out>/<scheme>/<method>/<MODEL>/stage1.safetensors, final.safetensors, metrics.jsonl, result.json
//! <out>/results.json, report.md
//! ```
//! A level whose `result.json` exists is complete and is skipped on a re-run (its final
//! checkpoint becomes the next level's teacher). Files are written atomically.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::time::Instant;

use candle_core::Device;
use pyramid_models::{Adapter, Model, ModelConfig, ModelId, Scheme};
use pyramid_rng::Rng;
use pyramid_train::fsio::{read_json, write_atomic, write_json_atomic};
use pyramid_train::metrics::JsonlWriter;
use serde::{Deserialize, Serialize};

use crate::config::{ExperimentConfig, TeacherConfig};
use crate::data::ExperimentData;
use crate::method::ModelRef;
use crate::plan::{Images, LevelPlan, Plan, StagePlan};
use crate::report;
use crate::stage::{StageData, StageOutcome, StageRun};
use crate::Error;

/// Command-line level knobs of a run.
#[derive(Debug, Clone, Default)]
pub struct RunOptions {
    /// Overrides the config's `out_dir`.
    pub out_dir: Option<PathBuf>,
    /// Overrides the config's `device`.
    pub device: Option<String>,
    /// Overrides the data root.
    pub data_dir: Option<PathBuf>,
    pub show_progress: bool,
}

/// One trained model of the run (a level of a chain, or the teacher).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LevelResult {
    pub model: String,
    pub scheme: String,
    /// `teacher`, or the method's config name (`pyramid`, `fitnet`, ...).
    pub method: String,
    pub level: usize,
    pub params: usize,
    pub macs: u64,
    pub convs: usize,
    pub fcs: usize,
    /// Test accuracy (%) of the selected weights.
    pub best_test_acc: f64,
    /// Test accuracy (%) at the last epoch of the last stage.
    pub last_test_acc: f64,
    pub stages: Vec<StageOutcome>,
    pub inherited_params: usize,
    pub fresh_params: usize,
    pub wall_seconds: f64,
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
}

/// Every result of a run (`results.json`).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Results {
    pub name: String,
    pub dataset: String,
    pub seed: u64,
    pub device: String,
    pub model_options: Option<pyramid_models::ModelOptions>,
    pub train_images: usize,
    pub test_images: usize,
    /// Unlabeled images added to every distillation stage 1 (`[data] stage1_unlabeled`).
    #[serde(default)]
    pub stage1_unlabeled_images: usize,
    /// The configured methods, in config order (the report's first columns).
    #[serde(default)]
    pub methods: Vec<String>,
    pub teacher: Option<LevelResult>,
    pub levels: Vec<LevelResult>,
    pub wall_seconds: f64,
}

fn file_err(path: &Path, e: impl std::fmt::Display) -> Error {
    Error::File {
        path: path.display().to_string(),
        message: e.to_string(),
    }
}

struct Ctx<'a> {
    cfg: &'a ExperimentConfig,
    data: &'a ExperimentData,
    out: PathBuf,
    show_progress: bool,
    device: Device,
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

    #[allow(clippy::too_many_arguments)]
    fn run_stage(
        &self,
        label: String,
        plan: &StagePlan,
        student: &Model,
        teacher: Option<&Model>,
        log: &mut JsonlWriter,
    ) -> Result<StageOutcome, Error> {
        let rng = Rng::stream(self.cfg.seed, &format!("stage/{label}"));
        let adapter = match plan.features.as_ref().and_then(|f| f.adapter.clone()) {
            Some(spec) => Some(Adapter::new(spec, self.cfg.seed, &self.device)?),
            None => None,
        };
        StageRun {
            label,
            plan,
            student,
            teacher,
            adapter: adapter.as_ref(),
            rng,
            show_progress: self.show_progress,
        }
        .run(&self.stage_data(plan), log)
    }

    fn dir(&self, at: &ModelRef) -> PathBuf {
        self.out.join(&at.0)
    }
}

fn summary(model: &Model) -> (usize, u64, usize, usize) {
    let s = model.spec();
    (s.num_params(), s.macs(), s.conv_count(), s.fc_count())
}

fn metrics_log(dir: &Path) -> Result<JsonlWriter, Error> {
    let path = dir.join("metrics.jsonl");
    // A level that did not finish is re-run from its start: drop its partial log.
    if path.exists() {
        std::fs::remove_file(&path).map_err(|e| file_err(&path, e))?;
    }
    Ok(JsonlWriter::open(&path)?)
}

/// The trained models the remaining steps still need, loaded on first use and dropped after
/// their last.
struct Models {
    loaded: BTreeMap<ModelRef, Model>,
    last_use: BTreeMap<ModelRef, usize>,
}

impl Models {
    fn new(plan: &Plan) -> Self {
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
            let path = ctx.dir(at).join("final.safetensors");
            if !ctx.dir(at).join("result.json").exists() {
                return Err(file_err(
                    &path,
                    format!("{at} is needed but has not been trained (no result.json)"),
                ));
            }
            let m = Model::load(&path, &ctx.device)?;
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

/// Runs (or resumes) the experiment and returns its results.
pub fn run_experiment(cfg: &ExperimentConfig, opts: &RunOptions) -> Result<Results, Error> {
    let started = Instant::now();
    let mut cfg = cfg.clone();
    if let Some(o) = &opts.out_dir {
        cfg.out_dir = o.clone();
    }
    if let Some(d) = &opts.device {
        cfg.device = d.clone();
    }
    if let Some(d) = &opts.data_dir {
        cfg.data.root = Some(d.clone());
    }
    let plan = Plan::build(&cfg)?;
    let device = crate::device_from_str(&cfg.device)?;
    // The data loads before anything is written: a bad data file leaves the run directory as
    // it was.
    let data = ExperimentData::load(&cfg, &device)?;
    tracing::info!(
        "data {}: {} train / {} test images, {} classes",
        cfg.data.dataset,
        data.train_len,
        data.test_len,
        data.classes
    );
    let out = cfg.out_dir.clone();
    std::fs::create_dir_all(&out).map_err(|e| file_err(&out, e))?;
    let resolved =
        toml::to_string_pretty(&cfg).map_err(|e| file_err(&out.join("config.toml"), e))?;
    write_atomic(out.join("config.toml"), resolved.as_bytes())?;
    write_json_atomic(out.join("plan.json"), &plan)?;
    tracing::info!("run directory {}", out.display());
    let ctx = Ctx {
        cfg: &cfg,
        data: &data,
        out: out.clone(),
        show_progress: opts.show_progress,
        device: device.clone(),
    };
    let header = Results {
        name: cfg.name.clone(),
        dataset: cfg.data.dataset.to_string(),
        seed: cfg.seed,
        device: cfg.device.clone(),
        model_options: Some(cfg.model.options(data.classes)),
        train_images: data.train_len,
        test_images: data.test_len,
        stage1_unlabeled_images: cfg.data.stage1_unlabeled,
        methods: plan.methods.clone(),
        ..Default::default()
    };
    let mut models = Models::new(&plan);
    let teacher = obtain_teacher(&ctx, &plan)?;
    models.keep(&ModelRef::teacher(), teacher);
    save_results(&out, &header, started)?;

    for (i, step) in plan.steps.iter().enumerate() {
        if !ctx.dir(&step.at).join("result.json").exists() {
            let model = run_level(&ctx, &mut models, step)?;
            models.keep(&step.at, model);
            save_results(&out, &header, started)?;
        } else {
            tracing::info!("{}: complete", step.at);
        }
        models.release(i);
    }
    save_results(&out, &header, started)
}

/// Gathers every level's `result.json` under `out` into `results.json` and `report.md`.
fn save_results(out: &Path, header: &Results, started: Instant) -> Result<Results, Error> {
    let mut r = Results::collect(out, header)?;
    r.wall_seconds = started.elapsed().as_secs_f64();
    write_json_atomic(out.join("results.json"), &r)?;
    write_atomic(out.join("report.md"), report::markdown(&r).as_bytes())?;
    Ok(r)
}

impl Results {
    /// The results found in a run directory (`teacher/` and `<scheme>/<method>/<MODEL>/`), with
    /// the run-wide fields of `header`. Levels are sorted by scheme, method and level.
    pub fn collect(out: &Path, header: &Results) -> Result<Results, Error> {
        let mut r = header.clone();
        let teacher = out.join("teacher/result.json");
        r.teacher = if teacher.exists() {
            Some(read_json(&teacher)?)
        } else {
            None
        };
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
                        r.levels.push(read_json(&p)?);
                    }
                }
            }
        }
        r.levels
            .sort_by(|a, b| (&a.scheme, &a.method, a.level).cmp(&(&b.scheme, &b.method, b.level)));
        Ok(r)
    }
}

fn level_result(
    model: &Model,
    scheme: Scheme,
    method: &str,
    stages: Vec<StageOutcome>,
    inherited: (usize, usize),
    started: Instant,
) -> LevelResult {
    let (params, macs, convs, fcs) = summary(model);
    let last = stages.last().expect("at least one stage");
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
        wall_seconds: started.elapsed().as_secs_f64(),
        checkpoint: "final.safetensors".into(),
        stages,
        teacher: None,
        init_from: None,
        executed: Vec::new(),
    }
}

fn obtain_teacher(ctx: &Ctx, plan: &Plan) -> Result<Model, Error> {
    let dir = ctx.out.join("teacher");
    let device = &ctx.device;
    if dir.join("result.json").exists() {
        tracing::info!("teacher: complete, loaded from {}", dir.display());
        return Ok(Model::load(dir.join("final.safetensors"), device)?);
    }
    let started = Instant::now();
    let options = ctx.cfg.model.options(ctx.data.classes);
    let config = ModelConfig::new(ModelId::VGG19, options.clone());
    let model = match &ctx.cfg.teacher {
        TeacherConfig::Load { path } => {
            let m = Model::load(path, device)?;
            if m.id() != ModelId::VGG19 || m.options() != &options {
                return Err(file_err(
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
    let mut log = metrics_log(&dir)?;
    let stages = match &plan.teacher.stage {
        Some(stage) => {
            vec![ctx.run_stage("teacher/VGG19".into(), stage, &model, None, &mut log)?]
        }
        None => {
            // A loaded teacher is only evaluated.
            let acc = crate::stage::evaluate_accuracy(&model, ctx.data.test_loader())?;
            vec![StageOutcome {
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
            }]
        }
    };
    model.save(dir.join("final.safetensors"))?;
    let mut r = level_result(&model, Scheme::Forward, "teacher", stages, (0, 0), started);
    r.fresh_params = r.params;
    r.executed = plan.teacher.stage.iter().cloned().collect();
    write_json_atomic(dir.join("result.json"), &r)?;
    tracing::info!("teacher VGG19: test accuracy {:.2}%", r.best_test_acc);
    Ok(model)
}

/// Trains one level of the plan: its student from `init.from`, then its stages in order.
fn run_level(ctx: &Ctx, models: &mut Models, step: &LevelPlan) -> Result<Model, Error> {
    let dir = ctx.dir(&step.at);
    let started = Instant::now();
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
    let mut log = metrics_log(&dir)?;
    let mut outcomes = Vec::new();
    for (i, stage) in step.stages.iter().enumerate() {
        let label = format!("{} stage {}", step.at, stage.number);
        outcomes.push(ctx.run_stage(label, stage, &student, teacher, &mut log)?);
        if i + 1 < step.stages.len() {
            student.save_with_metadata(
                dir.join(format!("stage{}.safetensors", stage.number)),
                &HashMap::from([("pyramid.stage".to_string(), stage.number.to_string())]),
            )?;
        }
    }
    student.save(dir.join("final.safetensors"))?;
    let mut r = level_result(
        &student,
        step.scheme,
        &step.method,
        outcomes,
        (inh.inherited.len(), inh.fresh.len()),
        started,
    );
    r.teacher = step.teacher.as_ref().map(|t| t.0.clone());
    r.init_from = Some(step.init.from.0.clone());
    r.executed = step.stages.clone();
    // Written last: it marks the level complete.
    write_json_atomic(dir.join("result.json"), &r)?;
    tracing::info!(
        "{}: test accuracy {:.2}% (last epoch {:.2}%)",
        step.at,
        r.best_test_acc,
        r.last_test_acc
    );
    Ok(student)
}
