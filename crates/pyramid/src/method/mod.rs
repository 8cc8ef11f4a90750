//! Distillation methods as data (docs/method.md §7). A method says, for one level of one scheme,
//! which model teaches, where the student's weights come from, and its ordered stages: each
//! stage's default loss, the parameters it trains, and the outputs it can tap. `Plan::build`
//! turns these recipes into the executable plan; the runner has no per-method code.
//!
//! Adding a method is one file here plus one line in [`REGISTRY`]; `docs/architecture.md`
//! walks through an example.

mod fitnet;
mod gram_direct;
mod hinton;
mod kd;
mod pyramid;
mod pyramid_gram;
mod pyramid_logits;
mod scratch;

use pyramid_losses::LossSpec;
use pyramid_models::{step_of, AdapterSpec, ModelId, ModelOptions, ModelSpec, Scheme};
use serde::{Deserialize, Serialize};

use crate::config::{ExperimentConfig, MethodSettings, StageKind};

/// Every method a config can name, in the order reports list them after the configured ones.
pub const REGISTRY: &[Method] = &[
    scratch::METHOD,
    pyramid::METHOD,
    pyramid_gram::METHOD,
    pyramid_logits::METHOD,
    hinton::METHOD,
    fitnet::METHOD,
    gram_direct::METHOD,
    kd::METHOD,
];

/// The method registered under `name`.
pub fn lookup(name: &str) -> Result<&'static Method, String> {
    REGISTRY.iter().find(|m| m.name == name).ok_or_else(|| {
        format!(
            "unknown method `{name}`; known: {}",
            REGISTRY
                .iter()
                .map(|m| m.name)
                .collect::<Vec<_>>()
                .join(", ")
        )
    })
}

/// One distillation method.
pub struct Method {
    /// Config name, e.g. `pyramid-gram`.
    pub name: &'static str,
    /// Report column title, e.g. `Pyramid Gram`.
    pub title: &'static str,
    /// Where it comes from, for `--dry-run` and the docs.
    pub summary: &'static str,
    /// Which `[method.<name>]` keys it reads besides stage patches.
    pub settings: &'static [&'static str],
    /// The recipe of one level, or `None` where the method has no result (report: "–").
    pub level: fn(&Level) -> Option<LevelRecipe>,
    /// Why a level can have no result, for `--dry-run` (empty when every level has one).
    pub absent: &'static str,
}

impl Method {
    /// Refuses `[method.<name>]` keys this method does not read.
    pub fn check_settings(&self, s: &MethodSettings) -> Result<(), String> {
        for (key, set) in [
            ("teacher", s.teacher.is_some()),
            ("temperature", s.temperature.is_some()),
            ("alpha", s.alpha.is_some()),
        ] {
            if set && !self.settings.contains(&key) {
                return Err(format!(
                    "`{key}` is not a setting of method `{}`",
                    self.name
                ));
            }
        }
        if let Some(t) = s.temperature {
            if !(t.is_finite() && t > 0.0) {
                return Err(format!("temperature = {t}: must be > 0"));
            }
        }
        if let Some(a) = s.alpha {
            if !(0.0..=1.0).contains(&a) {
                return Err(format!("alpha = {a}: must be in [0, 1]"));
            }
        }
        Ok(())
    }
}

/// What a method sees when it plans one level.
pub struct Level<'a> {
    /// The student being planned.
    pub model: ModelId,
    /// The experiment's model options (classes included).
    pub options: &'a ModelOptions,
    /// `[method.<name>]` settings of this method (defaults when absent).
    pub settings: MethodSettings,
    /// The method's registry name.
    pub method: &'static str,
    /// The whole experiment config.
    pub config: &'a ExperimentConfig,
}

/// A trained model of the run directory: `teacher` (the VGG19) or `<scheme>/<method>/<MODEL>`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct ModelRef(pub String);

impl ModelRef {
    /// The run's VGG19 (`teacher`).
    pub fn teacher() -> Self {
        ModelRef("teacher".into())
    }
    /// The reference of `model` trained by `method` in `scheme`; VGG19 is always `teacher`.
    pub fn level(scheme: Scheme, method: &str, model: ModelId) -> Self {
        if model.is_vgg19() {
            return Self::teacher();
        }
        ModelRef(format!("{scheme}/{method}/{}", model.name()))
    }
    /// True for the run's VGG19.
    pub fn is_teacher(&self) -> bool {
        self.0 == "teacher"
    }
    /// The method part of a level reference.
    pub fn method(&self) -> Option<&str> {
        self.0.split('/').nth(1)
    }
    /// The model this reference holds.
    pub fn model(&self) -> ModelId {
        if self.is_teacher() {
            return ModelId::VGG19;
        }
        let mut parts = self.0.split('/');
        let scheme = parts.next().and_then(|s| s.parse::<Scheme>().ok());
        let name = parts.nth(1);
        scheme
            .zip(name)
            .and_then(|(scheme, name)| ModelId::parse(name, scheme).ok())
            .expect("level references are made by ModelRef::level from a valid model")
    }
}

impl std::fmt::Display for ModelRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.is_teacher() {
            f.write_str("VGG19")
        } else {
            f.write_str(&self.0)
        }
    }
}

/// How a level's student gets its first weights: every parameter whose name exists in `from`
/// is copied; every other one is new, with its fresh initialisation (docs/method.md §2.3).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Init {
    /// The model whose weights are copied.
    pub from: ModelRef,
    /// Said in the plan, e.g. "inherit; K5 new" or "Scratch: layers of VGG19 kept, K4, K5 new".
    pub note: String,
}

/// Which parameters a stage trains. Parameters outside the set keep their exact bits.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TrainSet {
    /// Every parameter of the student.
    All,
    /// The parameters at or before a tap (a block: all of it; a layer: up to it).
    UpTo {
        /// Block or layer name, e.g. `K12` or `B4.conv4_2`.
        tap: String,
    },
}

impl TrainSet {
    /// In words for the plan: `all` or `up to and including <tap>`.
    pub fn describe(&self) -> String {
        match self {
            TrainSet::All => "all".into(),
            TrainSet::UpTo { tap } => format!("up to and including {tap}"),
        }
    }
}

/// A matched feature map: the student's tap (through an adapter, for FitNet) against the
/// teacher's.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FeaturePair {
    /// Tap of the student (a block or layer name).
    pub student: String,
    /// Tap of the teacher it is matched against.
    pub teacher: String,
    /// FitNet's regressor mapping the student's tap to the teacher's shape; `None` when the shapes
    /// agree.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub adapter: Option<AdapterSpec>,
}

/// One Gram (FSP) pair, `(F1, F2)` taps in the student and in the teacher (docs/method.md §5.3).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GramPair {
    /// Student taps `(F1, F2)`.
    pub student: (String, String),
    /// Teacher taps `(F1, F2)`, the same layers' counterparts.
    pub teacher: (String, String),
}

/// The outputs a stage can offer its loss. A loss reads what it needs; a plan whose loss
/// reads something the level does not offer is refused before anything trains.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct Offers {
    /// The matched feature maps, if the level has a pair.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub features: Option<FeaturePair>,
    /// The Gram pairs, if any.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub gram_pairs: Vec<GramPair>,
}

/// One stage of a method at one level.
#[derive(Debug, Clone, PartialEq)]
pub struct StageRecipe {
    /// Which config section gives its optimiser and schedule.
    pub kind: StageKind,
    /// The method's loss; `[method.<name>.<kind>] loss` replaces it.
    pub loss: LossSpec,
    /// Which student parameters train.
    pub trains: TrainSet,
    /// What the stage offers its loss.
    pub offers: Offers,
}

/// A method's plan for one level.
#[derive(Debug, Clone, PartialEq)]
pub struct LevelRecipe {
    /// The model that teaches the level; `None` for a method without one (Scratch).
    pub teacher: Option<ModelRef>,
    /// Where the student's weights start.
    pub init: Init,
    /// Its stages, in order.
    pub stages: Vec<StageRecipe>,
}

// ------------------------------------------------------------------- shared building blocks

impl Level<'_> {
    /// The student's compression order.
    pub fn scheme(&self) -> Scheme {
        self.model.scheme
    }

    /// The same method's previous level (the run's VGG19 below level 1).
    pub fn previous(&self) -> ModelRef {
        ModelRef::level(
            self.scheme(),
            self.method,
            self.model.teacher().expect("a student has a teacher"),
        )
    }

    /// Another method's model of this scheme.
    pub fn of_method(&self, method: &str, model: ModelId) -> ModelRef {
        ModelRef::level(self.scheme(), method, model)
    }

    /// The structure of `model` at the experiment's options.
    pub fn spec(&self, model: ModelId) -> ModelSpec {
        ModelSpec::of(model, self.options.clone()).expect("options validated with the config")
    }

    /// The block this level's compression step put in (C).
    pub fn compressed(&self) -> pyramid_models::BlockKind {
        step_of(self.model).expect("level >= 1").with
    }

    /// Inherit from `from`: only the compressed block is new.
    pub fn inherit(&self, from: ModelRef) -> Init {
        let note = format!("inherit from {from}; {} new", self.compressed().name());
        Init { from, note }
    }

    /// Scratch initialisation from a top model (docs/method.md §7.1): layers it has keep their
    /// weights, every other layer is new.
    pub fn scratch_from(&self, from: ModelRef) -> Init {
        let top = self.spec(from.model());
        let new: Vec<&str> = self
            .spec(self.model)
            .blocks
            .iter()
            .filter(|b| top.block(b.kind).is_none())
            .map(|b| b.name())
            .collect();
        let note = format!("Scratch init from {from}; {} new", new.join(", "));
        Init { from, note }
    }

    /// The stage-1 pair of Pyramid 2-stages: output of C against the teacher's output of D
    /// (docs/method.md §3.3, §4.3).
    pub fn compressed_pair(&self) -> FeaturePair {
        let step = step_of(self.model).expect("level >= 1");
        FeaturePair {
            student: step.with.name().into(),
            teacher: step.matched_teacher_block().name().into(),
            adapter: None,
        }
    }

    /// The Gram pair of compression step `step_level` of this scheme, between this student and
    /// `teacher` (docs/method.md §5.2–§5.3): (input of the block, output of its last conv before the
    /// pool). None where the step compresses the head.
    pub fn gram_pair(&self, step_level: usize, teacher: ModelId) -> Option<GramPair> {
        let step = pyramid_models::compression_plan(self.scheme())[step_level - 1].clone();
        let (s, t) = (self.spec(self.model), self.spec(teacher));
        let student = (
            s.block_before(step.with)?.name().to_string(),
            s.last_conv_tap(step.with)?,
        );
        let teacher = (
            t.block_before(step.replaces[0])?.name().to_string(),
            t.last_conv_tap(step.matched_teacher_block())?,
        );
        Some(GramPair { student, teacher })
    }

    /// The label stage every two-stage method ends with: cross entropy, all parameters (or up
    /// to C with `freeze_inherited`, docs/method.md §13 B1).
    pub fn label_stage(&self) -> StageRecipe {
        let s2 = self
            .config
            .stage_for(self.method, self.model, StageKind::Stage2);
        StageRecipe {
            kind: StageKind::Stage2,
            loss: LossSpec::CrossEntropy,
            trains: if s2.freeze_inherited {
                TrainSet::UpTo {
                    tap: self.compressed().name().into(),
                }
            } else {
                TrainSet::All
            },
            offers: Offers::default(),
        }
    }

    /// The distillation stage of a student that inherits from `teacher`: `loss` on what the
    /// level offers (C against D, and its Gram pair), training up to C.
    pub fn inherited_stage1(&self, loss: LossSpec, teacher: ModelId) -> StageRecipe {
        StageRecipe {
            kind: StageKind::Stage1,
            loss,
            trains: TrainSet::UpTo {
                tap: self.compressed().name().into(),
            },
            offers: self.pyramid_offers(teacher),
        }
    }

    /// What a student inheriting from the previous level offers in its distillation stage:
    /// the C/D pair, and the level's Gram pair where one exists.
    pub fn pyramid_offers(&self, teacher: ModelId) -> Offers {
        Offers {
            features: Some(self.compressed_pair()),
            gram_pairs: self
                .gram_pair(self.model.level, teacher)
                .into_iter()
                .collect(),
        }
    }
}
