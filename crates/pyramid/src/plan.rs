//! The plan of an experiment: plain data that says everything a config will do before anything
//! trains. It is built once from the config and the method registry, validated as a whole
//! (every problem is reported, not just the first), printed by `--dry-run`, saved as
//! `plan.json`, and executed step by step by the runner.

use std::collections::BTreeMap;

use pyramid_losses::{LossSpec, Monitor, Output, Reduction};
use pyramid_models::{step_of, ModelId, ModelSpec, Scheme};
use pyramid_train::optim::OptimizerConfig;
use pyramid_train::schedule::ScheduleConfig;
use serde::{Deserialize, Serialize};

use crate::config::{check_stage, ExperimentConfig, StageConfig, StageKind, TeacherConfig};
use crate::method::{self, FeaturePair, GramPair, Init, Level, ModelRef, StageRecipe, TrainSet};
use crate::Error;

/// The whole plan.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Plan {
    /// The experiment's name (`name` in the config).
    pub name: String,
    /// The data set, as written in configs (e.g. `cifar100:coarse`).
    pub dataset: String,
    /// Where the teacher comes from and how it trains.
    pub teacher: TeacherPlan,
    /// The configured methods, in config order (the report's columns).
    pub methods: Vec<String>,
    /// Every trained level, in execution order: a level comes after the models it starts from.
    pub steps: Vec<LevelPlan>,
    /// Per scheme and configured method, its levels (for printing and reports).
    pub chains: Vec<ChainPlan>,
}

/// Where the VGG19 teacher comes from, and its training stage if it trains here.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TeacherPlan {
    /// In words, e.g. `loaded from runs/teacher.safetensors`.
    pub source: String,
    /// The teacher's training stage; `None` when it is loaded as is.
    pub stage: Option<StagePlan>,
}

/// One configured method's chain in one scheme.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ChainPlan {
    /// The compression order.
    pub scheme: Scheme,
    /// The method's registry name, e.g. `pyramid-gram`.
    pub method: String,
    /// The method's title in reports, e.g. `Pyramid Gram`.
    pub title: String,
    /// `(model name, the step that trains it)`; `None` where the method has no result.
    pub levels: Vec<(String, Option<ModelRef>)>,
    /// Why a level has no result.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub absent: String,
}

/// One student level: what teaches it, where its weights start, and its stages.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LevelPlan {
    /// Its run-directory path and its name for other steps.
    pub at: ModelRef,
    /// Paper name of the student, e.g. `SVGG14B`.
    pub model: String,
    /// Its compression order.
    pub scheme: Scheme,
    /// Its pyramid level, 1 (SVGG17) to 5 (SVGG5).
    pub level: usize,
    /// The method that trains it.
    pub method: String,
    /// Trainable parameters of the student.
    pub params: usize,
    /// Teacher blocks the level replaces, e.g. `["B1", "B2"]`.
    pub replaces: Vec<String>,
    /// The block that replaces them, e.g. `K12`.
    pub with: String,
    /// The model that teaches it (its distillation stages read this model); `None` without one.
    pub teacher: Option<ModelRef>,
    /// Where its weights start.
    pub init: Init,
    /// False for a level trained only because a configured one starts from it.
    pub configured: bool,
    /// Its stages, in order.
    pub stages: Vec<StagePlan>,
}

/// The training images a stage sees.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Images {
    /// The labelled training images only.
    Labelled,
    /// The labelled images plus this many from STL10's unlabeled split (`stage1_unlabeled`).
    LabelledPlusUnlabeled(usize),
}

/// One stage, fully resolved: the runner does exactly this.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StagePlan {
    /// Which section the stage comes from (`stage1`, `stage2`, `scratch`).
    pub kind: StageKind,
    /// 1 for a distillation stage, 2 for a label (or single) stage.
    pub number: u32,
    /// The resolved loss.
    pub loss: LossSpec,
    /// How the loss reduces over a batch (decides how it is logged per image).
    pub reduction: Reduction,
    /// What the stage monitors for model selection and its schedule.
    pub monitor: Monitor,
    /// Which student parameters train.
    pub trains: TrainSet,
    /// The matched feature maps, when the loss reads them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub features: Option<FeaturePair>,
    /// The Gram pairs, when the loss reads them.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub gram_pairs: Vec<GramPair>,
    /// Whether the loss reads the student's / the teacher's logits.
    pub student_logits: bool,
    /// Whether the loss reads the teacher's logits (so the teacher runs to its head).
    pub teacher_logits: bool,
    /// Whether the loss reads the labels.
    pub labels: bool,
    /// The training images the stage sees.
    pub images: Images,
    /// Optimiser and hyper-parameters, with every patch applied.
    pub optimizer: OptimizerConfig,
    /// With its mode derived from the loss.
    pub schedule: ScheduleConfig,
}

impl StagePlan {
    /// Whether the teacher runs.
    pub fn uses_teacher(&self) -> bool {
        self.teacher_logits || !self.teacher_taps().is_empty()
    }
    /// The student's tapped outputs (besides logits), each once.
    pub fn student_taps(&self) -> Vec<String> {
        unique(
            self.features.iter().map(|f| f.student.clone()).chain(
                self.gram_pairs
                    .iter()
                    .flat_map(|p| [p.student.0.clone(), p.student.1.clone()]),
            ),
        )
    }
    /// The teacher's tapped outputs (besides logits), each once.
    pub fn teacher_taps(&self) -> Vec<String> {
        unique(
            self.features.iter().map(|f| f.teacher.clone()).chain(
                self.gram_pairs
                    .iter()
                    .flat_map(|p| [p.teacher.0.clone(), p.teacher.1.clone()]),
            ),
        )
    }
    /// One line for `--dry-run`.
    pub fn describe(&self) -> String {
        let mut s = format!(
            "loss {}, trains {}",
            self.loss.describe(),
            self.trains.describe()
        );
        if let Some(a) = self.features.as_ref().and_then(|f| f.adapter.as_ref()) {
            s.push_str(&format!(" + regressor [{}]", a.describe()));
        }
        let taps = |own: Vec<String>, logits: bool| {
            let mut v = own;
            if logits {
                v.push("logits".into());
            }
            v.join(", ")
        };
        s.push_str(&format!(
            "; taps student [{}]",
            taps(self.student_taps(), self.student_logits)
        ));
        if self.uses_teacher() {
            s.push_str(&format!(
                " teacher [{}]",
                taps(self.teacher_taps(), self.teacher_logits)
            ));
        }
        if let Some(f) = &self.features {
            s.push_str(&format!(" ({} vs {})", f.student, f.teacher));
        }
        for p in &self.gram_pairs {
            s.push_str(&format!(
                " G({}, {}) vs G({}, {})",
                p.student.0, p.student.1, p.teacher.0, p.teacher.1
            ));
        }
        s.push_str(&format!(
            "; {}, {}; monitors {}; {}",
            self.optimizer.describe(),
            self.schedule.describe(),
            match self.monitor {
                Monitor::Loss => "loss (min)",
                Monitor::Accuracy => "accuracy (max)",
            },
            match self.images {
                Images::Labelled => "labelled images".to_string(),
                Images::LabelledPlusUnlabeled(n) => format!("labelled + {n} unlabeled images"),
            }
        ));
        s
    }
}

fn unique(names: impl Iterator<Item = String>) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for n in names {
        if !out.contains(&n) {
            out.push(n);
        }
    }
    out
}

struct Builder<'a> {
    cfg: &'a ExperimentConfig,
    steps: Vec<LevelPlan>,
    index: BTreeMap<ModelRef, usize>,
    problems: Vec<String>,
}

impl Plan {
    /// Builds and validates the plan of `cfg`. Every problem found is in the error.
    pub fn build(cfg: &ExperimentConfig) -> Result<Plan, Error> {
        cfg.validate()?;
        let mut b = Builder {
            cfg,
            steps: Vec::new(),
            index: BTreeMap::new(),
            problems: Vec::new(),
        };
        let teacher = b.teacher();
        let mut chains = Vec::new();
        for &scheme in &cfg.schemes {
            for name in &cfg.methods {
                let info = method::lookup(name).map_err(|e| Error::Plan(vec![e]))?;
                let mut levels = Vec::new();
                for level in cfg.sorted_levels() {
                    let id = ModelId::new(level, scheme)?;
                    levels.push((id.name(), b.ensure(info, id, true)));
                }
                chains.push(ChainPlan {
                    scheme,
                    method: name.clone(),
                    title: info.title.into(),
                    levels,
                    absent: info.absent.into(),
                });
            }
        }
        if !b.problems.is_empty() {
            return Err(Error::Plan(b.problems));
        }
        Ok(Plan {
            name: cfg.name.clone(),
            dataset: cfg.data.dataset.to_string(),
            teacher,
            methods: cfg.methods.clone(),
            steps: b.steps,
            chains,
        })
    }

    /// The step that trains `at`.
    pub fn step(&self, at: &ModelRef) -> Option<&LevelPlan> {
        self.steps.iter().find(|s| &s.at == at)
    }

    /// Human-readable form (`--dry-run`).
    pub fn to_text(&self) -> String {
        let mut s = format!(
            "experiment `{}` on {}\nteacher VGG19: {}\n",
            self.name, self.dataset, self.teacher.source
        );
        if let Some(st) = &self.teacher.stage {
            s.push_str(&format!("  training: {}\n", st.describe()));
        }
        for c in &self.chains {
            s.push_str(&format!("\n{} / {} ({}):\n", c.scheme, c.title, c.method));
            for (model, at) in &c.levels {
                match at.as_ref().and_then(|a| self.step(a)) {
                    None => s.push_str(&format!("  {model:<8} – (no result: {})\n", c.absent)),
                    Some(l) => s.push_str(&level_text(l)),
                }
            }
        }
        let extra: Vec<&LevelPlan> = self.steps.iter().filter(|l| !l.configured).collect();
        if !extra.is_empty() {
            s.push_str("\nalso trained, because a configured level starts from it:\n");
            for l in extra {
                s.push_str(&format!("  [{}]\n", l.at));
                s.push_str(&level_text(l));
            }
        }
        s
    }
}

fn level_text(l: &LevelPlan) -> String {
    let mut s = format!(
        "  {:<8} {} params; replaces {} with {}; teacher {}; init: {}\n",
        l.model,
        l.params,
        l.replaces.join("+"),
        l.with,
        l.teacher
            .as_ref()
            .map_or("none".to_string(), |t| t.to_string()),
        l.init.note
    );
    for st in &l.stages {
        s.push_str(&format!(
            "           stage {}: {}\n",
            st.number,
            st.describe()
        ));
    }
    s
}

impl Builder<'_> {
    fn options(&self) -> pyramid_models::ModelOptions {
        self.cfg.model.options(self.cfg.data.dataset.num_classes())
    }

    fn teacher(&mut self) -> TeacherPlan {
        let (source, recipe) = match &self.cfg.teacher {
            TeacherConfig::Train { recipe } => (
                "trained here from torchvision's VGG init".to_string(),
                Some(recipe),
            ),
            TeacherConfig::Load { path } => (format!("loaded from {}", path.display()), None),
            TeacherConfig::Torchvision { path, recipe } => (
                format!("torchvision weights {}, fine-tuned here", path.display()),
                Some(recipe),
            ),
        };
        let stage = recipe.and_then(|r| {
            let recipe = StageRecipe {
                kind: StageKind::Scratch,
                loss: r.loss.clone().unwrap_or(LossSpec::CrossEntropy),
                trains: TrainSet::All,
                offers: Default::default(),
            };
            self.stage("teacher.recipe", r.clone(), &recipe, ModelId::VGG19, None)
        });
        TeacherPlan { source, stage }
    }

    /// Plans `method` at `model` (and, first, any level it starts from). Returns where it will
    /// be, or None where the method has no result.
    fn ensure(
        &mut self,
        info: &'static method::Method,
        model: ModelId,
        configured: bool,
    ) -> Option<ModelRef> {
        let at = ModelRef::level(model.scheme, info.name, model);
        if let Some(&i) = self.index.get(&at) {
            self.steps[i].configured |= configured;
            return Some(at);
        }
        let options = self.options();
        let level = Level {
            model,
            options: &options,
            settings: self.cfg.method_settings(info.name),
            method: info.name,
            config: self.cfg,
        };
        let recipe = (info.level)(&level)?;
        let mut deps: Vec<ModelRef> = recipe.teacher.iter().cloned().collect();
        deps.push(recipe.init.from.clone());
        // A method whose teacher is also its init would report a missing level twice.
        deps.dedup();
        for dep in deps.iter().filter(|d| !d.is_teacher()) {
            let dep_model = dep.model();
            let dep_method = dep.method().unwrap_or_default();
            if dep_method == info.name && configured && !self.cfg.levels.contains(&dep_model.level)
            {
                self.problems.push(format!(
                    "levels = {:?}: {} {} starts from {} {}, which is not in levels; add level {} (levels of a chain run in order from its first)",
                    self.cfg.levels, info.name, model, info.name, dep_model, dep_model.level
                ));
                continue;
            }
            let dep_info = match method::lookup(dep_method) {
                Ok(i) => i,
                Err(e) => {
                    self.problems.push(e);
                    continue;
                }
            };
            if self.ensure(dep_info, dep_model, false).is_none() {
                self.problems.push(format!(
                    "{at} starts from {dep}, which method {dep_method} does not produce"
                ));
            }
        }
        let teacher_model = recipe.teacher.as_ref().map(|t| t.model());
        let stages = recipe
            .stages
            .iter()
            .filter_map(|r| {
                let section = self.cfg.stage_for(info.name, model, r.kind);
                let loss = section.loss.clone().unwrap_or_else(|| r.loss.clone());
                let r = StageRecipe { loss, ..r.clone() };
                self.stage(
                    &format!("{at} {}", r.kind.section()),
                    section,
                    &r,
                    model,
                    teacher_model,
                )
            })
            .collect();
        let step = step_of(model).expect("students have a step");
        let params = ModelSpec::of(model, options.clone())
            .map(|s| s.num_params())
            .unwrap_or(0);
        self.index.insert(at.clone(), self.steps.len());
        self.steps.push(LevelPlan {
            at: at.clone(),
            model: model.name(),
            scheme: model.scheme,
            level: model.level,
            method: info.name.into(),
            params,
            replaces: step.replaces.iter().map(|b| b.name().to_string()).collect(),
            with: step.with.name().into(),
            teacher: recipe.teacher,
            init: recipe.init,
            configured,
            stages,
        });
        Some(at)
    }

    /// Resolves one stage; records its problems and returns None when it has any.
    fn stage(
        &mut self,
        at: &str,
        section: StageConfig,
        r: &StageRecipe,
        model: ModelId,
        teacher: Option<ModelId>,
    ) -> Option<StagePlan> {
        let before = self.problems.len();
        let loss = &r.loss;
        let schedule = match check_stage(at, &section, loss) {
            Ok(schedule) => Some(schedule),
            Err(e) => {
                self.problems.push(e);
                None
            }
        };
        let reads = loss.reads();
        let options = self.options();
        let spec = |m: ModelId| ModelSpec::of(m, options.clone()).ok();
        let (student_spec, teacher_spec) = (spec(model), teacher.and_then(spec));
        if reads.needs_teacher() && teacher.is_none() {
            self.problems.push(format!(
                "[{at}] loss `{}` reads a teacher's outputs, but this stage has no teacher",
                loss.describe()
            ));
        }
        let features = if reads.student.contains(&Output::Features) {
            match &r.offers.features {
                None => {
                    self.problems.push(format!(
                        "[{at}] loss `{}` reads matched feature maps, which this method does not offer at {model}",
                        loss.describe()
                    ));
                    None
                }
                Some(f) => {
                    let s = student_spec.as_ref().and_then(|s| s.tap_shape(&f.student));
                    let s = match (&f.adapter, s) {
                        (Some(a), Some(s)) => a.out_shape(&s),
                        (None, s) => s,
                        _ => None,
                    };
                    let t = teacher_spec.as_ref().and_then(|t| t.tap_shape(&f.teacher));
                    match (s, t) {
                        (Some(s), Some(t)) => {
                            if let Err(e) = loss.check_feature_shapes(&s, &t) {
                                self.problems.push(format!(
                                    "[{at}] {model} {} vs teacher {}: {e}",
                                    f.student, f.teacher
                                ));
                            }
                        }
                        _ => self.problems.push(format!(
                            "[{at}] taps {} / {} do not exist in {model} or its teacher",
                            f.student, f.teacher
                        )),
                    }
                    Some(f.clone())
                }
            }
        } else {
            None
        };
        let gram_pairs = if reads.student.contains(&Output::GramPairs) {
            if r.offers.gram_pairs.is_empty() {
                self.problems.push(format!(
                    "[{at}] loss `{}` reads Gram pairs, and {model} has none (its compressed block is the head, docs/method.md §5.3)",
                    loss.describe()
                ));
            }
            r.offers.gram_pairs.clone()
        } else {
            Vec::new()
        };
        // A distillation loss on the logits reaches every parameter, and trains them all
        // (docs/method.md §7.4), whatever the method's own loss would have reached.
        let trains = if r.kind == StageKind::Stage1 && reads.student.contains(&Output::Logits) {
            TrainSet::All
        } else {
            r.trains.clone()
        };
        if let (TrainSet::UpTo { tap }, Some(s)) = (&trains, &student_spec) {
            if let Err(e) = s.params_up_to(tap) {
                self.problems.push(format!("[{at}] trains: {e}"));
            }
        }
        let unlabeled = self.cfg.data.stage1_unlabeled;
        let images = match (r.kind, unlabeled) {
            (StageKind::Stage1, n) if n > 0 => {
                if reads.labels {
                    self.problems.push(format!(
                        "[{at}] loss `{}` uses labels, but [data] stage1_unlabeled = {n} feeds stage 1 unlabeled images; use a label-free loss (hint, gram, logit_mse, attention_transfer, kd with alpha = 1) or set stage1_unlabeled = 0",
                        loss.describe()
                    ));
                }
                Images::LabelledPlusUnlabeled(n)
            }
            _ => Images::Labelled,
        };
        let schedule = schedule.filter(|_| self.problems.len() == before)?;
        Some(StagePlan {
            kind: r.kind,
            number: r.kind.number(),
            loss: loss.clone(),
            reduction: loss.reduction(),
            monitor: loss.monitor(),
            trains,
            features,
            gram_pairs,
            student_logits: reads.student.contains(&Output::Logits),
            teacher_logits: reads.teacher.contains(&Output::Logits),
            labels: reads.labels,
            images,
            optimizer: section.optimizer.clone(),
            schedule,
        })
    }
}
