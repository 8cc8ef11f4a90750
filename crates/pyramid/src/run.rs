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

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::Instant;

use candle_core::Device;
use pyramid_models::{step_of, Model, ModelConfig, ModelId, Scheme};
use pyramid_rng::Rng;
use pyramid_train::fsio::{read_json, write_atomic, write_json_atomic};
use pyramid_train::metrics::JsonlWriter;
use serde::{Deserialize, Serialize};

use crate::config::{ExperimentConfig, Method, StageConfig, StageKind, TeacherConfig};
use crate::data::ExperimentData;
use crate::plan::Plan;
use crate::report;
use crate::stage::{StageData, StageOutcome, StageRun, Trainable};
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
    /// `teacher`, `scratch` or `pyramid`.
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
    /// Unlabeled images added to every pyramid stage 1 (`[data] stage1_unlabeled`).
    #[serde(default)]
    pub stage1_unlabeled_images: usize,
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
}

impl Ctx<'_> {
    /// Stage 1 of a pyramid level may train on extra unlabeled images.
    fn stage_data(&self, stage: u32) -> StageData<'_> {
        StageData {
            train: if stage == 1 {
                self.data.stage1_loader()
            } else {
                &self.data.train
            },
            select: &self.data.select,
            test: self.data.test.as_ref(),
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn run_stage(
        &self,
        label: String,
        stage: u32,
        student: &Model,
        teacher: Option<&Model>,
        config: &StageConfig,
        trainable: Trainable,
        taps: (Option<String>, Option<String>),
        log: &mut JsonlWriter,
    ) -> Result<StageOutcome, Error> {
        let rng = Rng::stream(self.cfg.seed, &format!("stage/{label}"));
        StageRun {
            label,
            stage,
            student,
            teacher,
            config,
            trainable,
            student_tap: taps.0,
            teacher_tap: taps.1,
            rng,
            show_progress: self.show_progress,
        }
        .run(&self.stage_data(stage), log)
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
    cfg.validate()?;
    let device = crate::device_from_str(&cfg.device)?;
    let out = cfg.out_dir.clone();
    std::fs::create_dir_all(&out).map_err(|e| file_err(&out, e))?;
    let resolved =
        toml::to_string_pretty(&cfg).map_err(|e| file_err(&out.join("config.toml"), e))?;
    write_atomic(out.join("config.toml"), resolved.as_bytes())?;
    let plan = Plan::new(&cfg);
    write_json_atomic(out.join("plan.json"), &plan)?;
    tracing::info!("run directory {}", out.display());

    let data = ExperimentData::load(&cfg, &device)?;
    tracing::info!(
        "data {}: {} train / {} test images, {} classes",
        cfg.data.dataset,
        data.train_len,
        data.test_len,
        data.classes
    );
    let ctx = Ctx {
        cfg: &cfg,
        data: &data,
        out: out.clone(),
        show_progress: opts.show_progress,
    };
    let mut results = Results {
        name: cfg.name.clone(),
        dataset: cfg.data.dataset.to_string(),
        seed: cfg.seed,
        device: cfg.device.clone(),
        model_options: Some(cfg.model.options(data.classes)),
        train_images: data.train_len,
        test_images: data.test_len,
        stage1_unlabeled_images: cfg.data.stage1_unlabeled,
        ..Default::default()
    };
    let (teacher, teacher_result) = obtain_teacher(&ctx, &device)?;
    results.teacher = Some(teacher_result);
    save_results(&out, &results, started)?;

    for &scheme in &cfg.schemes {
        for &method in &cfg.methods {
            let mut prev: Option<Model> = None;
            for level in cfg.sorted_levels() {
                let id = ModelId::new(level, scheme)?;
                let (model, r) = match method {
                    Method::Scratch => run_scratch_level(&ctx, &teacher, id)?,
                    Method::Pyramid => {
                        let t = prev.as_ref().unwrap_or(&teacher);
                        if t.id() != id.teacher().expect("level >= 1") {
                            return Err(Error::Stage(format!(
                                "{id} needs {} as its teacher, but the chain has {}: pyramid levels must be contiguous from 1",
                                id.teacher().unwrap(),
                                t.id()
                            )));
                        }
                        run_pyramid_level(&ctx, t, id)?
                    }
                };
                results
                    .levels
                    .retain(|l| !(l.model == r.model && l.method == r.method));
                results.levels.push(r);
                save_results(&out, &results, started)?;
                prev = Some(model);
            }
        }
    }
    results.wall_seconds = started.elapsed().as_secs_f64();
    save_results(&out, &results, started)?;
    Ok(results)
}

fn save_results(out: &Path, results: &Results, started: Instant) -> Result<(), Error> {
    let mut r = results.clone();
    r.wall_seconds = started.elapsed().as_secs_f64();
    write_json_atomic(out.join("results.json"), &r)?;
    write_atomic(out.join("report.md"), report::markdown(&r).as_bytes())?;
    Ok(())
}

fn load_done(dir: &Path, device: &Device) -> Result<Option<(Model, LevelResult)>, Error> {
    let result = dir.join("result.json");
    if !result.exists() {
        return Ok(None);
    }
    let r: LevelResult = read_json(&result)?;
    let model = Model::load(dir.join(&r.checkpoint), device)?;
    tracing::info!("{}: complete, loaded from {}", r.model, dir.display());
    Ok(Some((model, r)))
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
    }
}

fn obtain_teacher(ctx: &Ctx, device: &Device) -> Result<(Model, LevelResult), Error> {
    let dir = ctx.out.join("teacher");
    if let Some(done) = load_done(&dir, device)? {
        return Ok(done);
    }
    let started = Instant::now();
    let options = ctx.cfg.model.options(ctx.data.classes);
    let config = ModelConfig::new(ModelId::VGG19, options.clone());
    let (model, recipe) = match &ctx.cfg.teacher {
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
            (m, None)
        }
        TeacherConfig::Train { recipe } => {
            (Model::new(config, ctx.cfg.seed, device)?, Some(recipe))
        }
        TeacherConfig::Torchvision { path, recipe } => {
            let m = Model::new(config, ctx.cfg.seed, device)?;
            let n = m.import_torchvision_vgg19(path, ctx.cfg.seed)?;
            tracing::info!("imported {} tensors from {}", n.len(), path.display());
            (m, Some(recipe))
        }
    };
    let mut log = metrics_log(&dir)?;
    let stages = match recipe {
        Some(recipe) => vec![ctx.run_stage(
            "teacher/VGG19".into(),
            2,
            &model,
            None,
            recipe,
            Trainable::All,
            (None, None),
            &mut log,
        )?],
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
    write_json_atomic(dir.join("result.json"), &r)?;
    tracing::info!("teacher VGG19: test accuracy {:.2}%", r.best_test_acc);
    Ok((model, r))
}

fn level_dir(ctx: &Ctx, scheme: Scheme, method: Method, id: ModelId) -> PathBuf {
    ctx.out
        .join(scheme.as_str())
        .join(method.as_str())
        .join(id.name())
}

fn run_pyramid_level(
    ctx: &Ctx,
    teacher: &Model,
    id: ModelId,
) -> Result<(Model, LevelResult), Error> {
    let dir = level_dir(ctx, id.scheme, Method::Pyramid, id);
    if let Some(done) = load_done(&dir, teacher.device())? {
        return Ok(done);
    }
    let started = Instant::now();
    let step = step_of(id).expect("level >= 1");
    let (student, inh) = Model::inherit(teacher, id, ctx.cfg.seed)?;
    tracing::info!(
        "{id}: {} parameters inherited from {}, {} fresh ({} replaces {})",
        inh.inherited.len(),
        teacher.id(),
        inh.fresh.len(),
        step.with.name(),
        step.replaces
            .iter()
            .map(|b| b.name())
            .collect::<Vec<_>>()
            .join("+")
    );
    let mut log = metrics_log(&dir)?;
    let label = format!("{}/pyramid/{}", id.scheme, id.name());
    let s1 = ctx.run_stage(
        format!("{label} stage 1"),
        1,
        &student,
        Some(teacher),
        ctx.cfg.stage_for(id, StageKind::Stage1),
        Trainable::UpToCompressed,
        (
            Some(step.with.name().to_string()),
            Some(step.matched_teacher_block().name().to_string()),
        ),
        &mut log,
    )?;
    student.save_with_metadata(
        dir.join("stage1.safetensors"),
        &HashMap::from([("pyramid.stage".to_string(), "1".to_string())]),
    )?;
    let s2cfg = ctx.cfg.stage_for(id, StageKind::Stage2);
    let s2 = ctx.run_stage(
        format!("{label} stage 2"),
        2,
        &student,
        Some(teacher),
        s2cfg,
        if s2cfg.freeze_inherited {
            Trainable::AllButFrozen
        } else {
            Trainable::All
        },
        (None, None),
        &mut log,
    )?;
    finish_level(
        &dir,
        student,
        id.scheme,
        Method::Pyramid,
        vec![s1, s2],
        &inh,
        started,
    )
}

/// Saves a trained level's final checkpoint and `result.json` (written last: it marks the
/// level complete).
fn finish_level(
    dir: &Path,
    student: Model,
    scheme: Scheme,
    method: Method,
    stages: Vec<StageOutcome>,
    inh: &pyramid_models::Inheritance,
    started: Instant,
) -> Result<(Model, LevelResult), Error> {
    student.save(dir.join("final.safetensors"))?;
    let r = level_result(
        &student,
        scheme,
        method.as_str(),
        stages,
        (inh.inherited.len(), inh.fresh.len()),
        started,
    );
    write_json_atomic(dir.join("result.json"), &r)?;
    tracing::info!(
        "{} {}: test accuracy {:.2}% (last epoch {:.2}%)",
        r.model,
        method.as_str(),
        r.best_test_acc,
        r.last_test_acc
    );
    Ok((student, r))
}

fn run_scratch_level(ctx: &Ctx, vgg19: &Model, id: ModelId) -> Result<(Model, LevelResult), Error> {
    let dir = level_dir(ctx, id.scheme, Method::Scratch, id);
    if let Some(done) = load_done(&dir, vgg19.device())? {
        return Ok(done);
    }
    let started = Instant::now();
    // §7.1: every layer that exists in VGG19 keeps its weights, every new layer is random.
    let (student, inh) = Model::inherit(vgg19, id, ctx.cfg.seed)?;
    let mut log = metrics_log(&dir)?;
    let s = ctx.run_stage(
        format!("{}/scratch/{}", id.scheme, id.name()),
        2,
        &student,
        None,
        ctx.cfg.stage_for(id, StageKind::Scratch),
        Trainable::All,
        (None, None),
        &mut log,
    )?;
    finish_level(
        &dir,
        student,
        id.scheme,
        Method::Scratch,
        vec![s],
        &inh,
        started,
    )
}
