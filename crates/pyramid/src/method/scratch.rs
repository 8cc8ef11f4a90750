//! Scratch (docs/method.md §7.1): no teacher; the student is built from VGG19 (its layers keep their
//! weights, every new layer is random) and trained on labels in one stage.

use pyramid_losses::LossSpec;

use super::{Level, LevelRecipe, Method, ModelRef, Offers, StageRecipe, TrainSet};
use crate::config::StageKind;

pub const METHOD: Method = Method {
    name: "scratch",
    title: "Scratch",
    summary: "built from VGG19, new layers random, cross entropy only (docs/method.md §7.1)",
    settings: &[],
    level,
    absent: "",
};

fn level(l: &Level) -> Option<LevelRecipe> {
    Some(LevelRecipe {
        teacher: None,
        init: l.scratch_from(ModelRef::teacher()),
        stages: vec![StageRecipe {
            kind: StageKind::Scratch,
            loss: LossSpec::CrossEntropy,
            trains: TrainSet::All,
            offers: Offers::default(),
        }],
    })
}
