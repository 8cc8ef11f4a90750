//! The experiment config: one TOML file declares data, models, schemes, methods, teacher,
//! stage hyper-parameters, seed and output directory. Unknown fields are rejected.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use pyramid_datasets::{Augment, DatasetKind};
use pyramid_losses::LossSpec;
use pyramid_models::{ModelId, ModelOptions, Scheme};
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
    /// Run directory (relative paths are relative to the current directory).
    #[serde(default = "default_out_dir")]
    pub out_dir: PathBuf,
    /// `cpu` or `cuda` (`cuda:N`); cuda needs a binary built with the `cuda` feature.
    #[serde(default = "default_device")]
    pub device: String,
    pub data: DataConfig,
    #[serde(default)]
    pub model: ModelSection,
    #[serde(default = "default_schemes")]
    pub schemes: Vec<Scheme>,
    #[serde(default = "default_methods")]
    pub methods: Vec<Method>,
    /// Pyramid levels to run, 1 (SVGG17) … 5 (SVGG5); a chain always runs its levels in order.
    #[serde(default = "default_levels")]
    pub levels: Vec<usize>,
    pub teacher: TeacherConfig,
    /// Stage 1 of "Pyramid 2-stages" (hint at the compressed block).
    #[serde(default = "StageConfig::paper_stage1")]
    pub stage1: StageConfig,
    /// Stage 2 of "Pyramid 2-stages" (labels).
    #[serde(default = "StageConfig::paper_stage2")]
    pub stage2: StageConfig,
    /// The Scratch baseline's single stage.
    #[serde(default = "StageConfig::paper_scratch")]
    pub scratch: StageConfig,
    /// Per-model stage overrides, e.g. `[overrides.SVGG17B.stage1]` (METHOD.md §9.2).
    #[serde(default)]
    pub overrides: BTreeMap<String, StageOverrides>,
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
fn default_methods() -> Vec<Method> {
    vec![Method::Scratch, Method::Pyramid]
}
fn default_levels() -> Vec<usize> {
    vec![1, 2, 3, 4, 5]
}

/// Training methods (METHOD.md §7).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Method {
    /// Built from VGG19, new layers random, trained with CE only (§7.1).
    Scratch,
    /// "Pyramid 2-stages": inherit from the previous level, hint stage, then label stage (§7.2).
    Pyramid,
}

impl Method {
    pub fn as_str(self) -> &'static str {
        match self {
            Method::Scratch => "scratch",
            Method::Pyramid => "pyramid",
        }
    }
    /// The paper's column title.
    pub fn title(self) -> &'static str {
        match self {
            Method::Scratch => "Scratch",
            Method::Pyramid => "Pyramid 2-stages",
        }
    }
}

/// Where the data comes from and how it is fed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DataConfig {
    pub dataset: DatasetKind,
    /// Data root; falls back to `$PYRAMID_DATA`, then the dataset's default location.
    #[serde(default)]
    pub root: Option<PathBuf>,
    #[serde(default = "default_batch")]
    pub batch_size: usize,
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
    /// Model selection: `test` (the paper, §8) or `val` (a held-out, seeded, stratified slice
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
    /// 100,000) to the training images of every pyramid stage 1. Stage 1 matches the teacher and
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

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Selection {
    #[default]
    Test,
    Val,
}

/// Model options shared by the whole pyramid. `classes` comes from the data set.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelSection {
    #[serde(default = "default_input")]
    pub input_size: usize,
    #[serde(default = "default_one")]
    pub width_div: usize,
    /// 3 (grayscale replicated to RGB) or 1 (grayscale kept; RGB data is refused).
    #[serde(default = "default_three")]
    pub in_channels: usize,
    #[serde(default)]
    pub batch_norm: bool,
}

fn default_input() -> usize {
    96
}
fn default_one() -> usize {
    1
}
fn default_three() -> usize {
    3
}

impl Default for ModelSection {
    fn default() -> Self {
        Self {
            input_size: default_input(),
            width_div: 1,
            in_channels: 3,
            batch_norm: false,
        }
    }
}

impl ModelSection {
    pub fn options(&self, classes: usize) -> ModelOptions {
        ModelOptions {
            classes,
            input_size: self.input_size,
            in_channels: self.in_channels,
            width_div: self.width_div,
            batch_norm: self.batch_norm,
        }
    }
}

/// Where the VGG19 teacher comes from.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "source", rename_all = "snake_case", deny_unknown_fields)]
pub enum TeacherConfig {
    /// Trained here from torchvision's VGG init with the given recipe.
    Train { recipe: StageConfig },
    /// A pyramid checkpoint (safetensors written by this toolkit).
    Load { path: PathBuf },
    /// torchvision's ImageNet `vgg19` state dict (`.pth`), then fine-tuned with the recipe
    /// (the paper's starting point, §13 B11).
    Torchvision { path: PathBuf, recipe: StageConfig },
}

/// One training stage: its loss, what it trains, its optimiser and its schedule.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StageConfig {
    pub loss: LossSpec,
    #[serde(default)]
    pub optimizer: OptimizerConfig,
    pub schedule: ScheduleConfig,
    /// Stage 2 only: truly freeze the "frozen" blocks (after the compressed block), §13 B1.
    #[serde(default)]
    pub freeze_inherited: bool,
}

impl StageConfig {
    /// §9.1 stage 1: Adam 1e-4 wd 5e-4, plateau on the test hint loss, stop rule of §8.2.
    pub fn paper_stage1() -> Self {
        Self {
            loss: LossSpec::Hint,
            optimizer: OptimizerConfig::Adam(AdamConfig::default()),
            schedule: ScheduleConfig::Plateau(PlateauConfig::stage1()),
            freeze_inherited: false,
        }
    }
    /// §9.1 stage 2: Adam 1e-4, plateau on test accuracy, stop rule of §8.3.
    pub fn paper_stage2() -> Self {
        Self {
            loss: LossSpec::CrossEntropy,
            optimizer: OptimizerConfig::Adam(AdamConfig::default()),
            schedule: ScheduleConfig::Plateau(PlateauConfig::stage2()),
            freeze_inherited: false,
        }
    }
    /// §7.1 / §8.4 Scratch: single stage, plateau with the 1e-4 relative threshold.
    pub fn paper_scratch() -> Self {
        Self {
            schedule: ScheduleConfig::Plateau(PlateauConfig::single_stage()),
            ..Self::paper_stage2()
        }
    }
}

/// Per-model replacements of whole stage configs.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StageOverrides {
    #[serde(default)]
    pub stage1: Option<StageConfig>,
    #[serde(default)]
    pub stage2: Option<StageConfig>,
    #[serde(default)]
    pub scratch: Option<StageConfig>,
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

    pub fn validate(&self) -> Result<(), Error> {
        let options = self.model.options(self.data.dataset.num_classes());
        options
            .validate()
            .map_err(|e| Self::invalid(format!("[model] {e}")))?;
        if self.levels.is_empty() || self.levels.iter().any(|l| !(1..=5).contains(l)) {
            return Err(Self::invalid(format!(
                "levels = {:?}: each level must be 1 (SVGG17) … 5 (SVGG5)",
                self.levels
            )));
        }
        if self.data.batch_size == 0 || self.data.eval_batch_size == 0 {
            return Err(Self::invalid("[data] batch sizes must be > 0".into()));
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
        for (name, o) in &self.overrides {
            ModelId::parse(name, Scheme::Forward)
                .map_err(|e| Self::invalid(format!("[overrides.{name}] {e}")))?;
            for (which, s) in [
                ("stage1", &o.stage1),
                ("stage2", &o.stage2),
                ("scratch", &o.scratch),
            ] {
                if let Some(s) = s {
                    s.validate(&format!("overrides.{name}.{which}"))?;
                }
            }
        }
        self.stage1.validate("stage1")?;
        if self.data.stage1_unlabeled > 0 {
            self.validate_stage1_unlabeled()?;
        }
        self.stage2.validate("stage2")?;
        self.scratch.validate("scratch")?;
        match &self.teacher {
            TeacherConfig::Train { recipe } | TeacherConfig::Torchvision { recipe, .. } => {
                recipe.validate("teacher.recipe")?
            }
            TeacherConfig::Load { .. } => {}
        }
        Ok(())
    }

    /// Unlabeled images exist only for STL10, and carry no labels for a stage-1 loss to use.
    fn validate_stage1_unlabeled(&self) -> Result<(), Error> {
        let n = self.data.stage1_unlabeled;
        if self.data.dataset != DatasetKind::Stl10 {
            return Err(Self::invalid(format!(
                "[data] stage1_unlabeled = {n}: only stl10 has an unlabeled split (dataset is {})",
                self.data.dataset
            )));
        }
        let stage1s = std::iter::once(("stage1".to_string(), &self.stage1)).chain(
            self.overrides.iter().filter_map(|(k, o)| {
                o.stage1
                    .as_ref()
                    .map(|s| (format!("overrides.{k}.stage1"), s))
            }),
        );
        for (at, s) in stage1s {
            if s.loss.needs_labels() {
                return Err(Self::invalid(format!(
                    "[{at}] loss `{}` uses labels, but [data] stage1_unlabeled = {n} feeds stage 1 unlabeled images; use a label-free loss (hint, logit_mse, attention_transfer, kd with alpha = 1) or set stage1_unlabeled = 0",
                    s.loss.name()
                )));
            }
        }
        Ok(())
    }

    /// Levels in chain order, deduplicated.
    pub fn sorted_levels(&self) -> Vec<usize> {
        let mut l = self.levels.clone();
        l.sort_unstable();
        l.dedup();
        l
    }

    /// The stage config for `model`, after overrides.
    pub fn stage_for(&self, model: ModelId, which: StageKind) -> &StageConfig {
        let o = self
            .overrides
            .iter()
            .find(|(k, _)| ModelId::parse(k, Scheme::Forward).ok() == Some(model))
            .map(|(_, v)| v);
        match which {
            StageKind::Stage1 => o.and_then(|o| o.stage1.as_ref()).unwrap_or(&self.stage1),
            StageKind::Stage2 => o.and_then(|o| o.stage2.as_ref()).unwrap_or(&self.stage2),
            StageKind::Scratch => o.and_then(|o| o.scratch.as_ref()).unwrap_or(&self.scratch),
        }
    }
}

/// Which configured stage.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StageKind {
    Stage1,
    Stage2,
    Scratch,
}

impl StageConfig {
    fn validate(&self, at: &str) -> Result<(), Error> {
        let bad = |m: String| ExperimentConfig::invalid(format!("[{at}] {m}"));
        self.loss
            .validate()
            .map_err(|e| bad(format!("loss: {e}")))?;
        self.optimizer
            .validate()
            .map_err(|e| bad(format!("optimizer: {e}")))?;
        if self.loss.needs_gram_pairs() {
            return Err(bad(
                "loss `gram` is not wired into the pyramid runner yet (the Gram pairs of METHOD.md §5.3 need their own taps); use `hint`, `logit_mse`, `kd`, `attention_transfer`, `dkd` or `cross_entropy`".into(),
            ));
        }
        if let ScheduleConfig::Plateau(p) = &self.schedule {
            p.validate().map_err(|e| bad(format!("schedule: {e}")))?;
        }
        Ok(())
    }
}
