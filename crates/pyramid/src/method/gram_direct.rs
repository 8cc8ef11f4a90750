//! Gram Direct (docs/method.md §7.7, the recommended clean definition): the teacher is fixed at the
//! top model (backward: VGG19; forward: the Pyramid 2-stages SVGG17), the student is built from
//! it like Scratch (every compressed block new), and stage 1 minimises the sum of the Gram
//! losses of every compressed position so far, with one optimiser over the parameters up to
//! the deepest of them. Levels that compress the head have no result.

use pyramid_losses::LossSpec;
use pyramid_models::{ModelId, Scheme};

use super::{GramPair, Level, LevelRecipe, Method, ModelRef, Offers, StageRecipe, TrainSet};
use crate::config::StageKind;

pub const METHOD: Method = Method {
    name: "gram-direct",
    title: "Gram Direct",
    summary: "top model teaches; Scratch init, a Gram pair per compressed block so far, then labels (docs/method.md §7.7)",
    settings: &[],
    level,
    absent: "the head is the compressed block, and a Gram pair needs a conv block (docs/method.md §5.3)",
};

fn level(l: &Level) -> Option<LevelRecipe> {
    let top = match l.scheme() {
        Scheme::Forward => l.of_method("pyramid", ModelId::new(1, Scheme::Forward).ok()?),
        Scheme::Backward => ModelRef::teacher(),
    };
    // No pair where this level compresses the head: no result.
    let own = l.gram_pair(l.model.level, top.model())?;
    let mut pairs: Vec<GramPair> = (1..l.model.level)
        .filter_map(|k| l.gram_pair(k, top.model()))
        .collect();
    pairs.push(own);
    // The deepest student map in forward order bounds what stage 1 can reach.
    let order: Vec<String> = l
        .spec(l.model)
        .tap_shapes()
        .into_iter()
        .map(|(n, _)| n)
        .collect();
    let deepest = pairs
        .iter()
        .map(|p| p.student.1.clone())
        .max_by_key(|t| order.iter().position(|n| n == t))?;
    Some(LevelRecipe {
        teacher: Some(top.clone()),
        init: l.scratch_from(top),
        stages: vec![
            StageRecipe {
                kind: StageKind::Stage1,
                loss: LossSpec::Gram,
                trains: TrainSet::UpTo { tap: deepest },
                offers: Offers {
                    features: None,
                    gram_pairs: pairs,
                },
            },
            l.label_stage(),
        ],
    })
}
