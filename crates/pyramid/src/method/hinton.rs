//! Hinton 2-stages (docs/method.md §7.5): VGG19 teaches every level; the student starts from the
//! Scratch initialisation, matches VGG19's logits (MSE_sum, every parameter), then trains on
//! labels.

use pyramid_losses::LossSpec;

use super::{Level, LevelRecipe, Method, ModelRef, Offers, StageRecipe, TrainSet};
use crate::config::StageKind;

pub const METHOD: Method = Method {
    name: "hinton",
    title: "Hinton 2-stages",
    summary: "VGG19 teaches; Scratch init, MSE_sum on logits, then labels (docs/method.md §7.5)",
    settings: &[],
    level,
    absent: "",
};

fn level(l: &Level) -> Option<LevelRecipe> {
    Some(LevelRecipe {
        teacher: Some(ModelRef::teacher()),
        init: l.scratch_from(ModelRef::teacher()),
        stages: vec![
            StageRecipe {
                kind: StageKind::Stage1,
                loss: LossSpec::LogitMse,
                trains: TrainSet::All,
                offers: Offers::default(),
            },
            l.label_stage(),
        ],
    })
}
