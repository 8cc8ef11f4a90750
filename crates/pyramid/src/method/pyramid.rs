//! Pyramid 2-stages (docs/method.md §7.2): inherit from the previous level, match the teacher's
//! output of the replaced block D with the new block C (MSE_sum), then train on labels.

use pyramid_losses::LossSpec;

use super::{Level, LevelRecipe, Method};

pub const METHOD: Method = Method {
    name: "pyramid",
    title: "Pyramid 2-stages",
    summary: "previous level teaches; hint C vs D up to C, then labels (docs/method.md §7.2)",
    settings: &[],
    level,
    absent: "",
};

fn level(l: &Level) -> Option<LevelRecipe> {
    let teacher = l.previous();
    Some(LevelRecipe {
        init: l.inherit(teacher.clone()),
        stages: vec![
            l.inherited_stage1(LossSpec::Hint, teacher.model()),
            l.label_stage(),
        ],
        teacher: Some(teacher),
    })
}
