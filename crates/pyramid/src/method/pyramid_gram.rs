//! Pyramid Gram (docs/method.md §7.3): as Pyramid 2-stages, but stage 1 matches the single Gram pair
//! of §5.3. The backward students are the correct ones of §4 (not the original's block-5 bug,
//! §13 B3). The forward chain starts from the Pyramid 2-stages SVGG17 (§13 B7); levels that
//! compress the head have no Gram pair and no result (forward SVGG17, backward SVGG5B).

use pyramid_losses::LossSpec;
use pyramid_models::{ModelId, Scheme};

use super::{Level, LevelRecipe, Method};

pub const METHOD: Method = Method {
    name: "pyramid-gram",
    title: "Pyramid Gram",
    summary: "previous level teaches; Gram pair of the new block, then labels (docs/method.md §5.3, §7.3)",
    settings: &[],
    level,
    absent: "the head is the compressed block, and a Gram pair needs a conv block (docs/method.md §5.3)",
};

fn level(l: &Level) -> Option<LevelRecipe> {
    let prev = l.model.teacher()?;
    let teacher = if l.scheme() == Scheme::Forward && prev.level == 1 {
        l.of_method("pyramid", ModelId::new(1, Scheme::Forward).ok()?)
    } else {
        l.previous()
    };
    l.gram_pair(l.model.level, teacher.model())?;
    Some(LevelRecipe {
        init: l.inherit(teacher.clone()),
        stages: vec![
            l.inherited_stage1(LossSpec::Gram, teacher.model()),
            l.label_stage(),
        ],
        teacher: Some(teacher),
    })
}
