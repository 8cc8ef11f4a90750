//! Pyramid Hinton 2-stages (docs/method.md §7.4): inherit from the previous level, match its logits
//! with MSE_sum (no temperature, no softmax) training every parameter, then train on labels.

use pyramid_losses::LossSpec;

use super::{Level, LevelRecipe, Method, Offers, StageRecipe, TrainSet};
use crate::config::StageKind;

pub const METHOD: Method = Method {
    name: "pyramid-logits",
    title: "Pyramid logits",
    summary: "previous level teaches; MSE_sum on logits, all parameters, then labels (docs/method.md §7.4)",
    settings: &[],
    level,
    absent: "",
};

fn level(l: &Level) -> Option<LevelRecipe> {
    let teacher = l.previous();
    Some(LevelRecipe {
        init: l.inherit(teacher.clone()),
        stages: vec![
            StageRecipe {
                kind: StageKind::Stage1,
                loss: LossSpec::LogitMse,
                trains: TrainSet::All,
                offers: Offers::default(),
            },
            l.label_stage(),
        ],
        teacher: Some(teacher),
    })
}
