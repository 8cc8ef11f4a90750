//! The plan of an experiment: plain data that says what a config will do before anything
//! trains (`pyramid run --dry-run`).

use pyramid_models::{step_of, ModelId, Scheme};
use serde::Serialize;

use crate::config::{ExperimentConfig, Method, StageKind, TeacherConfig};

#[derive(Debug, Clone, Serialize)]
pub struct Plan {
    pub name: String,
    pub dataset: String,
    pub teacher: String,
    pub chains: Vec<ChainPlan>,
}

#[derive(Debug, Clone, Serialize)]
pub struct ChainPlan {
    pub scheme: Scheme,
    pub method: Method,
    pub levels: Vec<LevelPlan>,
}

#[derive(Debug, Clone, Serialize)]
pub struct LevelPlan {
    pub model: String,
    /// Where the initial weights come from.
    pub init_from: String,
    pub replaces: Vec<String>,
    pub with: String,
    pub params: usize,
    pub stages: Vec<StagePlan>,
}

#[derive(Debug, Clone, Serialize)]
pub struct StagePlan {
    pub stage: u32,
    pub loss: String,
    pub trains: String,
    pub teacher: Option<String>,
    /// The training images it sees.
    pub data: String,
}

impl Plan {
    pub fn new(cfg: &ExperimentConfig) -> Self {
        let options = cfg.model.options(cfg.data.dataset.num_classes());
        let teacher = match &cfg.teacher {
            TeacherConfig::Train { .. } => "VGG19 trained here (torchvision VGG init)".to_string(),
            TeacherConfig::Load { path } => format!("VGG19 loaded from {}", path.display()),
            TeacherConfig::Torchvision { path, .. } => {
                format!(
                    "VGG19 from torchvision weights {}, fine-tuned",
                    path.display()
                )
            }
        };
        let labelled = "labelled train images".to_string();
        let stage1_data = match cfg.data.stage1_unlabeled {
            0 => labelled.clone(),
            n => format!("{labelled} + {n} unlabeled"),
        };
        let mut chains = Vec::new();
        for &scheme in &cfg.schemes {
            for &method in &cfg.methods {
                let levels = cfg
                    .sorted_levels()
                    .into_iter()
                    .map(|level| {
                        let id = ModelId::new(level, scheme).expect("validated level");
                        let step = step_of(id).expect("level >= 1");
                        let params = pyramid_models::ModelSpec::of(id, options.clone())
                            .map(|s| s.num_params())
                            .unwrap_or(0);
                        let prev = id.teacher().expect("level >= 1").name();
                        let stages = match method {
                            Method::Scratch => vec![StagePlan {
                                stage: 2,
                                loss: cfg.stage_for(id, StageKind::Scratch).loss.name().into(),
                                trains: "all".into(),
                                teacher: None,
                                data: labelled.clone(),
                            }],
                            Method::Pyramid => {
                                let s2 = cfg.stage_for(id, StageKind::Stage2);
                                vec![
                                    StagePlan {
                                        stage: 1,
                                        loss: cfg
                                            .stage_for(id, StageKind::Stage1)
                                            .loss
                                            .name()
                                            .into(),
                                        trains: format!("up to and including {}", step.with.name()),
                                        teacher: Some(prev.clone()),
                                        data: stage1_data.clone(),
                                    },
                                    StagePlan {
                                        stage: 2,
                                        loss: s2.loss.name().into(),
                                        trains: if s2.freeze_inherited {
                                            "all but the blocks after the compressed one".into()
                                        } else {
                                            "all".into()
                                        },
                                        teacher: s2.loss.needs_teacher().then(|| prev.clone()),
                                        data: labelled.clone(),
                                    },
                                ]
                            }
                        };
                        LevelPlan {
                            model: id.name(),
                            init_from: match method {
                                Method::Scratch => "VGG19 (new layers random)".into(),
                                Method::Pyramid => format!("{prev} (compressed block random)"),
                            },
                            replaces: step.replaces.iter().map(|b| b.name().to_string()).collect(),
                            with: step.with.name().into(),
                            params,
                            stages,
                        }
                    })
                    .collect();
                chains.push(ChainPlan {
                    scheme,
                    method,
                    levels,
                });
            }
        }
        Plan {
            name: cfg.name.clone(),
            dataset: cfg.data.dataset.to_string(),
            teacher,
            chains,
        }
    }

    /// Human-readable form.
    pub fn to_text(&self) -> String {
        let mut s = format!(
            "experiment `{}` on {}\nteacher: {}\n",
            self.name, self.dataset, self.teacher
        );
        for c in &self.chains {
            s.push_str(&format!("\n{} / {}:\n", c.scheme, c.method.title()));
            for l in &c.levels {
                s.push_str(&format!(
                    "  {:<8} from {:<32} replaces {:<8} with {:<4} ({} params)\n",
                    l.model,
                    l.init_from,
                    l.replaces.join("+"),
                    l.with,
                    l.params
                ));
                for st in &l.stages {
                    s.push_str(&format!(
                        "           stage {}: loss {}, trains {}, on {}{}\n",
                        st.stage,
                        st.loss,
                        st.trains,
                        st.data,
                        st.teacher
                            .as_ref()
                            .map(|t| format!(", teacher {t}"))
                            .unwrap_or_default()
                    ));
                }
            }
        }
        s
    }
}
