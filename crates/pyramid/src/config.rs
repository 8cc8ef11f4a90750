//! The experiment config: one TOML file declares data, models, schemes, methods, teacher,
//! stage hyper-parameters, seed and output directory. Unknown fields are rejected.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use pyramid_datasets::{Augment, DatasetKind};
use pyramid_losses::LossSpec;
use pyramid_models::{ModelId, ModelSettings, Scheme};
use pyramid_train::optim::{AdamConfig, OptimizerConfig};
use pyramid_train::schedule::{PlateauConfig, ScheduleConfig};
use serde::{Deserialize, Serialize};

use crate::Error;

/// A whole experiment.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExperimentConfig {
    /// Shown in reports.
    #[serde(default = "default_name")]
    pub name: String,
    /// Seeds weight init, dropout, shuffling and augmentation.
    #[serde(default)]
    pub seed: u64,
    /// Run the whole experiment once per seed, into `<out_dir>/seed-<k>` (replaces `seed`).
    /// The runs share nothing, not even the teacher, unless `[run] share_teacher = true`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub seeds: Vec<u64>,
    /// Run directory (relative paths are relative to the current directory).
    #[serde(default = "default_out_dir")]
    pub out_dir: PathBuf,
    /// `cpu` or `cuda` (`cuda:N`); cuda needs a binary built with the `cuda` feature.
    #[serde(default = "default_device")]
    pub device: String,
    /// `[data]`: data set, root, batch sizes, subsets, model selection.
    pub data: DataConfig,
    /// Model options (input size, width, channels, batch norm); the classes come from the data.
    #[serde(default)]
    pub model: ModelSettings,
    /// Compression orders to run (default both, forward first).
    #[serde(default = "default_schemes")]
    pub schemes: Vec<Scheme>,
    /// Method names, in report-column order (see `pyramid::method::REGISTRY`).
    #[serde(default = "default_methods")]
    pub methods: Vec<String>,
    /// Pyramid levels to run, 1 (SVGG17) … 5 (SVGG5); a chain always runs its levels in order.
    #[serde(default = "default_levels")]
    pub levels: Vec<usize>,
    /// `[teacher]`: where the VGG19 teacher comes from.
    pub teacher: TeacherConfig,
    /// Optimiser and schedule of every method's first (distillation) stage. The loss comes
    /// from the method.
    #[serde(default = "StageConfig::paper_stage1")]
    pub stage1: StageConfig,
    /// Optimiser and schedule of every method's second (label) stage.
    #[serde(default = "StageConfig::paper_stage2")]
    pub stage2: StageConfig,
    /// Optimiser and schedule of single-stage methods (Scratch).
    #[serde(default = "StageConfig::paper_scratch")]
    pub scratch: StageConfig,
    /// Per-method settings and stage patches, e.g. `[method.kd] alpha = 0.9` or
    /// `[method.pyramid-gram.stage1] optimizer = { kind = "adam", lr = 1e-2 }`.
    #[serde(default)]
    pub method: BTreeMap<String, MethodSettings>,
    /// Per-model stage patches for every method, e.g. `[overrides.SVGG17B.stage1]`
    /// (the per-script overrides of the original, docs/method.md §9.2).
    #[serde(default)]
    pub overrides: BTreeMap<String, StageOverrides>,
    /// How the run treats what it finds.
    #[serde(default)]
    pub run: RunSection,
}

/// `[run]`: policies of the runner.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RunSection {
    /// A stage whose monitored metric never moves, or a teacher at chance level after
    /// training: `warn` (log it and mark it in the report) or `error` (stop the run).
    #[serde(default)]
    pub on_degenerate: OnDegenerate,
    /// With several seeds (`seeds`, or `pyramid run --seeds N`): train the teacher once, under
    /// the first seed, and let every other seed's run load it (`[teacher] source = "load"` of `<out_dir>/seed-<first>/teacher/final.safetensors`).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub share_teacher: bool,
}

/// What the run does when it meets a degenerate stage or teacher.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OnDegenerate {
    /// Log a warning and mark the result in the report, then go on.
    #[default]
    Warn,
    /// Stop the run with an error.
    Error,
}

fn default_name() -> String {
    "pyramid".into()
}
fn default_out_dir() -> PathBuf {
    PathBuf::from("runs/pyramid")
}
fn default_device() -> String {
    "cpu".into()
}
fn default_schemes() -> Vec<Scheme> {
    vec![Scheme::Forward, Scheme::Backward]
}
fn default_methods() -> Vec<String> {
    vec!["scratch".into(), "pyramid".into()]
}
fn default_levels() -> Vec<usize> {
    vec![1, 2, 3, 4, 5]
}

/// Where the data comes from and how it is fed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DataConfig {
    /// The data set, e.g. `"stl10"` or `"cifar100:coarse"`.
    pub dataset: DatasetKind,
    /// Data root; falls back to `$PYRAMID_DATA`, then the dataset's default location.
    #[serde(default)]
    pub root: Option<PathBuf>,
    /// Images per training batch (default 128).
    #[serde(default = "default_batch")]
    pub batch_size: usize,
    /// Images per evaluation batch (default 256).
    #[serde(default = "default_eval_batch")]
    pub eval_batch_size: usize,
    /// Training augmentation (the paper: horizontal flip only).
    #[serde(default = "Augment::flip")]
    pub augment: Augment,
    /// Keep at most this many training images per class (class-balanced, seeded); none = all.
    #[serde(default)]
    pub train_per_class: Option<usize>,
    /// Keep at most this many test images per class; none = all.
    #[serde(default)]
    pub test_per_class: Option<usize>,
    /// Model selection: `test` (the paper, docs/method.md §8.6) or `val` (a held-out, seeded, stratified slice
    /// of the training set). Both best-epoch and last-epoch test accuracy are always recorded.
    #[serde(default)]
    pub selection: Selection,
    /// Fraction of the training set held out when `selection = "val"`.
    #[serde(default = "default_val_fraction")]
    pub val_fraction: f64,
    /// Threads assembling each batch (0 = auto).
    #[serde(default)]
    pub loader_threads: usize,
    /// STL10 only: add this many images of the unlabeled split (a seeded choice out of its
    /// 100,000) to the training images of every distillation stage 1. Stage 1 matches the teacher and
    /// needs no labels, so this is free extra "dark knowledge"; the original never did it.
    /// Stage 2, Scratch and the teacher still train on the labelled images only. 0 = off.
    #[serde(default)]
    pub stage1_unlabeled: usize,
}

fn default_batch() -> usize {
    128
}
fn default_eval_batch() -> usize {
    256
}
fn default_val_fraction() -> f64 {
    0.1
}

/// Which split decides the best epoch of a stage (checkpoint kept, learning-rate reloads).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Selection {
    /// The test split, as the paper does.
    #[default]
    Test,
    /// A held-out slice of the training set (`val_fraction` of it, stratified, seeded).
    Val,
}

/// Where the VGG19 teacher comes from.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "source", rename_all = "snake_case", deny_unknown_fields)]
pub enum TeacherConfig {
    /// Trained here from torchvision's VGG init with the given recipe.
    Train {
        /// How the teacher is trained (loss defaults to cross entropy).
        recipe: StageConfig,
    },
    /// A pyramid checkpoint (safetensors written by this toolkit).
    Load {
        /// The checkpoint file.
        path: PathBuf,
    },
    /// torchvision's ImageNet `vgg19` state dict (`.pth`), then fine-tuned with the recipe
    /// (the paper's starting point, docs/method.md §13 B11).
    Torchvision {
        /// The `.pth` file.
        path: PathBuf,
        /// How the ImageNet weights are fine-tuned on the data set.
        recipe: StageConfig,
    },
}

/// One training stage's hyper-parameters. In `[stage1]`, `[stage2]` and `[scratch]` the loss is
/// left out (each method brings its own); the teacher's recipe may set it (default: cross
/// entropy). The schedule's `mode` is derived from the loss and is normally left out.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StageConfig {
    /// Loss of the stage; `None` in the shared sections, where the method brings its own.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub loss: Option<LossSpec>,
    /// Optimiser and its hyper-parameters (default: Adam, lr 1e-4, weight decay 5e-4).
    #[serde(default)]
    pub optimizer: OptimizerConfig,
    /// Learning-rate schedule and stop rule (required).
    pub schedule: ScheduleConfig,
    /// Label stage of a distilled level only: truly freeze the blocks after the compressed
    /// one (the original trains them, docs/method.md §13 B1).
    #[serde(default)]
    pub freeze_inherited: bool,
}

impl StageConfig {
    /// docs/method.md §9.1 stage 1: Adam 1e-4 wd 5e-4, plateau on the monitored loss, stop rule of §8.2.
    pub fn paper_stage1() -> Self {
        Self {
            loss: None,
            optimizer: OptimizerConfig::Adam(AdamConfig::default()),
            schedule: ScheduleConfig::Plateau(PlateauConfig {
                mode: None,
                ..PlateauConfig::stage1()
            }),
            freeze_inherited: false,
        }
    }
    /// docs/method.md §9.1 stage 2: Adam 1e-4, plateau on test accuracy, stop rule of §8.3.
    pub fn paper_stage2() -> Self {
        Self {
            loss: None,
            optimizer: OptimizerConfig::Adam(AdamConfig::default()),
            schedule: ScheduleConfig::Plateau(PlateauConfig {
                mode: None,
                ..PlateauConfig::stage2()
            }),
            freeze_inherited: false,
        }
    }
    /// docs/method.md §7.1 / §8.4 Scratch: single stage, plateau with the 1e-4 relative threshold.
    pub fn paper_scratch() -> Self {
        Self {
            schedule: ScheduleConfig::Plateau(PlateauConfig {
                mode: None,
                ..PlateauConfig::single_stage()
            }),
            ..Self::paper_stage2()
        }
    }

    /// This config with a patch applied (fields the patch sets replace ours).
    pub fn patched(&self, patch: &StagePatch) -> StageConfig {
        StageConfig {
            loss: patch.loss.clone().or_else(|| self.loss.clone()),
            optimizer: patch
                .optimizer
                .clone()
                .unwrap_or_else(|| self.optimizer.clone()),
            schedule: patch
                .schedule
                .clone()
                .unwrap_or_else(|| self.schedule.clone()),
            freeze_inherited: patch.freeze_inherited.unwrap_or(self.freeze_inherited),
        }
    }
}

/// A partial stage config: what it sets replaces the section it patches.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StagePatch {
    /// Replaces the loss.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub loss: Option<LossSpec>,
    /// Replaces the whole optimiser section.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub optimizer: Option<OptimizerConfig>,
    /// Replaces the whole schedule section.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub schedule: Option<ScheduleConfig>,
    /// Replaces `freeze_inherited`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub freeze_inherited: Option<bool>,
}

/// Per-model (`[overrides.SVGG17B]`) or per-method patches of the three stage sections.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StageOverrides {
    /// Patch of `[stage1]`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stage1: Option<StagePatch>,
    /// Patch of `[stage2]`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stage2: Option<StagePatch>,
    /// Patch of `[scratch]`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scratch: Option<StagePatch>,
}

impl StageOverrides {
    /// The patch of the section of `kind`, if any.
    pub fn get(&self, kind: StageKind) -> Option<&StagePatch> {
        kind.pick(&self.stage1, &self.stage2, &self.scratch)
            .as_ref()
    }
}

/// Which teacher a method with a choice uses (`[method.kd] teacher = "vgg19"`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TeacherChoice {
    /// The previous level of the same chain (VGG19 for level 1).
    Previous,
    /// The run's VGG19 for every level.
    Vgg19,
}

/// `[method.<name>]`: settings of one method.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MethodSettings {
    /// Methods that offer a choice (`kd`): `previous` (default) or `vgg19`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub teacher: Option<TeacherChoice>,
    /// `kd`: softmax temperature T (default 4).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub temperature: Option<f64>,
    /// `kd`: weight α of the KD term; CE gets 1 − α (default 0.9).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub alpha: Option<f64>,
    /// Patch of the method's distillation stage (`[method.<name>.stage1]`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stage1: Option<StagePatch>,
    /// Patch of the method's label stage.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stage2: Option<StagePatch>,
    /// Patch of the method's single stage.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scratch: Option<StagePatch>,
}

impl MethodSettings {
    /// The method's patch of the section of `kind`, if any.
    pub fn patch(&self, kind: StageKind) -> Option<&StagePatch> {
        kind.pick(&self.stage1, &self.stage2, &self.scratch)
            .as_ref()
    }
}

impl ExperimentConfig {
    /// Reads and validates a TOML config; errors name the file and the field.
    pub fn from_file(path: &Path) -> Result<Self, Error> {
        let text = std::fs::read_to_string(path).map_err(|e| Error::Config {
            path: path.display().to_string(),
            message: e.to_string(),
        })?;
        Self::from_toml(&text).map_err(|e| match e {
            Error::Config { message, .. } => Error::Config {
                path: path.display().to_string(),
                message,
            },
            other => other,
        })
    }

    /// Parses and validates a TOML config held in memory; errors name the field.
    pub fn from_toml(text: &str) -> Result<Self, Error> {
        let cfg: ExperimentConfig = toml::from_str(text).map_err(|e| Error::Config {
            path: "<config>".into(),
            message: e.to_string(),
        })?;
        cfg.validate()?;
        Ok(cfg)
    }

    fn invalid(message: String) -> Error {
        Error::Config {
            path: "<config>".into(),
            message,
        }
    }

    /// Checks what can be checked without building the plan; `Plan::build` checks the rest
    /// (every stage's loss, optimiser and schedule against its level).
    pub fn validate(&self) -> Result<(), Error> {
        let options = self.model.options(self.data.dataset.num_classes());
        options
            .validate()
            .map_err(|e| Self::invalid(format!("[model] {e}")))?;
        if !self.seeds.is_empty() && self.seed != 0 {
            return Err(Self::invalid(format!(
                "seed = {} and seeds = {:?}: set one of them (`seeds` runs the experiment once per seed)",
                self.seed, self.seeds
            )));
        }
        for (i, k) in self.seeds.iter().enumerate() {
            if self.seeds[..i].contains(k) {
                return Err(Self::invalid(format!("seeds: {k} is listed twice")));
            }
        }
        if self.run.share_teacher && matches!(self.teacher, TeacherConfig::Load { .. }) {
            return Err(Self::invalid(
                "[run] share_teacher = true: the teacher is loaded from a file, which every seed shares already; drop share_teacher".into(),
            ));
        }
        if self.levels.is_empty() || self.levels.iter().any(|l| !(1..=5).contains(l)) {
            return Err(Self::invalid(format!(
                "levels = {:?}: each level must be 1 (SVGG17) … 5 (SVGG5)",
                self.levels
            )));
        }
        if self.data.batch_size == 0 || self.data.eval_batch_size == 0 {
            return Err(Self::invalid("[data] batch sizes must be > 0".into()));
        }
        for (key, n) in [
            ("train_per_class", self.data.train_per_class),
            ("test_per_class", self.data.test_per_class),
        ] {
            if n == Some(0) {
                return Err(Self::invalid(format!(
                    "[data] {key} = 0 leaves no images; leave it out to use them all"
                )));
            }
        }
        if !(self.data.val_fraction > 0.0 && self.data.val_fraction < 1.0) {
            return Err(Self::invalid(format!(
                "[data] val_fraction = {}: must be in (0, 1)",
                self.data.val_fraction
            )));
        }
        if self.schemes.is_empty() || self.methods.is_empty() {
            return Err(Self::invalid(
                "schemes and methods must not be empty".into(),
            ));
        }
        for (i, m) in self.methods.iter().enumerate() {
            crate::method::lookup(m).map_err(|e| Self::invalid(format!("methods[{i}]: {e}")))?;
            if self.methods[..i].contains(m) {
                return Err(Self::invalid(format!("methods: `{m}` is listed twice")));
            }
        }
        for (name, settings) in &self.method {
            let info = crate::method::lookup(name)
                .map_err(|e| Self::invalid(format!("[method.{name}] {e}")))?;
            info.check_settings(settings)
                .map_err(|e| Self::invalid(format!("[method.{name}] {e}")))?;
        }
        for name in self.overrides.keys() {
            ModelId::parse(name, Scheme::Forward)
                .map_err(|e| Self::invalid(format!("[overrides.{name}] {e}")))?;
        }
        for (at, s) in [
            ("stage1", &self.stage1),
            ("stage2", &self.stage2),
            ("scratch", &self.scratch),
        ] {
            if let Some(loss) = &s.loss {
                return Err(Self::invalid(format!(
                    "[{at}] loss = `{}`: a stage's loss comes from its method; set it for one method with [method.<name>.{at}] loss = ...",
                    loss.name()
                )));
            }
        }
        if self.data.stage1_unlabeled > 0 && self.data.dataset.info().unlabeled.is_none() {
            return Err(Self::invalid(format!(
                "[data] stage1_unlabeled = {}: only stl10 has an unlabeled split (dataset is {})",
                self.data.stage1_unlabeled, self.data.dataset
            )));
        }
        match &self.teacher {
            TeacherConfig::Train { recipe } | TeacherConfig::Torchvision { recipe, .. } => {
                let loss = recipe.loss.clone().unwrap_or(LossSpec::CrossEntropy);
                if loss.needs_teacher() {
                    return Err(Self::invalid(format!(
                        "[teacher.recipe] loss `{}` needs a teacher; the teacher has none",
                        loss.name()
                    )));
                }
                check_stage("teacher.recipe", recipe, &loss).map_err(Self::invalid)?;
            }
            TeacherConfig::Load { .. } => {}
        }
        if self.data.dataset.is_embedded() {
            if let Some(root) = &self.data.root {
                return Err(Self::invalid(format!(
                    "[data] root = {:?}: the embedded data set is built into the binary and takes no root (remove it, or pick another dataset)",
                    root.display().to_string()
                )));
            }
        }
        Ok(())
    }

    /// The runs this config asks for: itself when `seeds` is empty, otherwise one config per
    /// seed with `seed = k`, `seeds` cleared and `out_dir = <base>/seed-<k>`, where `base` is
    /// `out` if given, else `out_dir`. With `[run] share_teacher`, every seed after the first
    /// loads the first seed's trained teacher.
    pub fn per_seed(&self, out: Option<&Path>) -> Vec<ExperimentConfig> {
        let base = out.unwrap_or(&self.out_dir).to_path_buf();
        if self.seeds.is_empty() {
            let mut c = self.clone();
            c.out_dir = base;
            return vec![c];
        }
        let first = Self::seed_dir(&base, self.seeds[0]);
        self.seeds
            .iter()
            .enumerate()
            .map(|(i, &k)| {
                let mut c = self.clone();
                c.seed = k;
                c.seeds.clear();
                // Consumed here: each seed's own run is a plain one.
                c.run.share_teacher = false;
                c.out_dir = Self::seed_dir(&base, k);
                if i > 0 && self.run.share_teacher {
                    c.teacher = TeacherConfig::Load {
                        path: first.join("teacher").join("final.safetensors"),
                    };
                }
                c
            })
            .collect()
    }

    /// The run directory of seed `k` of a multi-seed experiment rooted at `base`.
    pub fn seed_dir(base: &Path, k: u64) -> PathBuf {
        base.join(format!("seed-{k}"))
    }

    /// Levels in chain order, deduplicated.
    pub fn sorted_levels(&self) -> Vec<usize> {
        let mut l = self.levels.clone();
        l.sort_unstable();
        l.dedup();
        l
    }

    /// The stage config of `method` at `model`: the section of `kind`, patched by
    /// `[method.<name>.<kind>]`, then by `[overrides.<MODEL>.<kind>]`.
    pub fn stage_for(&self, method: &str, model: ModelId, kind: StageKind) -> StageConfig {
        let mut s = kind.pick(&self.stage1, &self.stage2, &self.scratch).clone();
        if let Some(p) = self.method.get(method).and_then(|m| m.patch(kind)) {
            s = s.patched(p);
        }
        let o = self
            .overrides
            .iter()
            .find(|(k, _)| ModelId::parse(k, Scheme::Forward).ok() == Some(model))
            .and_then(|(_, v)| v.get(kind));
        if let Some(p) = o {
            s = s.patched(p);
        }
        s
    }

    /// Settings of `method` (defaults when the config has no `[method.<name>]`).
    pub fn method_settings(&self, method: &str) -> MethodSettings {
        self.method.get(method).cloned().unwrap_or_default()
    }
}

/// Which configured stage section.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StageKind {
    /// A method's distillation stage (`[stage1]`).
    Stage1,
    /// A method's label stage (`[stage2]`).
    Stage2,
    /// A single-stage method (`[scratch]`).
    Scratch,
}

impl StageKind {
    /// The section's name in the config.
    pub fn section(self) -> &'static str {
        match self {
            StageKind::Stage1 => "stage1",
            StageKind::Stage2 => "stage2",
            StageKind::Scratch => "scratch",
        }
    }
    /// The one of three per-kind values that belongs to this kind.
    pub fn pick<'a, T>(self, stage1: &'a T, stage2: &'a T, scratch: &'a T) -> &'a T {
        match self {
            StageKind::Stage1 => stage1,
            StageKind::Stage2 => stage2,
            StageKind::Scratch => scratch,
        }
    }
    /// Stage number in logs and metrics (single stages count as label stages).
    pub fn number(self) -> u32 {
        match self {
            StageKind::Stage1 => 1,
            StageKind::Stage2 | StageKind::Scratch => 2,
        }
    }
}

/// Checks a stage's loss, optimiser and schedule, and returns the schedule with its mode
/// derived from the loss; or the message of the first problem.
pub(crate) fn check_stage(
    at: &str,
    s: &StageConfig,
    loss: &LossSpec,
) -> Result<ScheduleConfig, String> {
    loss.validate().map_err(|e| format!("[{at}] loss: {e}"))?;
    s.optimizer
        .validate()
        .map_err(|e| format!("[{at}] optimizer: {e}"))?;
    s.schedule
        .validate()
        .map_err(|e| format!("[{at}] schedule: {e}"))?;
    s.schedule
        .with_mode(monitor_mode(loss))
        .map_err(|e| format!("[{at}] loss `{}`: {e}", loss.name()))
}

/// The schedule mode a loss implies: its monitor's direction.
pub fn monitor_mode(loss: &LossSpec) -> pyramid_train::schedule::Mode {
    if loss.monitor().higher_is_better() {
        pyramid_train::schedule::Mode::Max
    } else {
        pyramid_train::schedule::Mode::Min
    }
}
