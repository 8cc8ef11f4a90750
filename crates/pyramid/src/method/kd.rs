//! Knowledge distillation (Hinton et al. 2015), beyond the paper: the label stage's loss is
//! `(1 − α)·CE + α·T²·KL(teacher ‖ student)` with the batch mean. With the default teacher
//! (`previous`) the student inherits from the previous level and first runs the Pyramid hint
//! stage; with `teacher = "vgg19"` it starts from the Scratch initialisation and has the KD
//! stage only.

use pyramid_losses::LossSpec;

use super::{Level, LevelRecipe, Method, ModelRef, Offers, StageRecipe, TrainSet};
use crate::config::{StageKind, TeacherChoice};

pub const METHOD: Method = Method {
    name: "kd",
    title: "KD",
    summary:
        "Hinton KD: (1−α)·CE + α·T²·KL against the previous level (or VGG19) (docs/method.md §7.8)",
    settings: &["teacher", "temperature", "alpha"],
    level,
    absent: "",
};

/// Hinton et al.'s usual values.
const TEMPERATURE: f64 = 4.0;
const ALPHA: f64 = 0.9;

fn level(l: &Level) -> Option<LevelRecipe> {
    let kd = LossSpec::Kd {
        temperature: l.settings.temperature.unwrap_or(TEMPERATURE),
        alpha: l.settings.alpha.unwrap_or(ALPHA),
    };
    let recipe = match l.settings.teacher.unwrap_or(TeacherChoice::Previous) {
        TeacherChoice::Previous => {
            let teacher = l.previous();
            let mut label = l.label_stage();
            label.loss = kd;
            LevelRecipe {
                init: l.inherit(teacher.clone()),
                stages: vec![l.inherited_stage1(LossSpec::Hint, teacher.model()), label],
                teacher: Some(teacher),
            }
        }
        TeacherChoice::Vgg19 => LevelRecipe {
            teacher: Some(ModelRef::teacher()),
            init: l.scratch_from(ModelRef::teacher()),
            stages: vec![StageRecipe {
                kind: StageKind::Scratch,
                loss: kd,
                trains: TrainSet::All,
                offers: Offers::default(),
            }],
        },
    };
    Some(recipe)
}
