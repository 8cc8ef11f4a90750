//! FitNet (docs/method.md §6, §7.6): VGG19 teaches every level with its ReLU(conv4_2) map; the
//! student starts from the Scratch initialisation, and a guided layer, through a regressor,
//! matches the hint. The regressor lives only in stage 1 and is never saved.

use pyramid_losses::LossSpec;
use pyramid_models::{AdapterSpec, Scheme};

use super::{FeaturePair, Level, LevelRecipe, Method, ModelRef, Offers, StageRecipe, TrainSet};
use crate::config::StageKind;

pub const METHOD: Method = Method {
    name: "fitnet",
    title: "FitNet",
    summary:
        "VGG19 teaches; Scratch init, guided layer + regressor vs ReLU(conv4_2), then labels (docs/method.md §7.6)",
    settings: &[],
    level,
    absent: "",
};

/// The teacher's hint: VGG19's ReLU(conv4_2) (module index 22).
pub const HINT: &str = "B4.conv4_2";

/// The guided layer and regressor of each level (the table of docs/method.md §6).
fn guided(l: &Level) -> (String, AdapterSpec) {
    let w = |c| l.options.width(c);
    let adapter = |pool, conv: Option<(usize, usize)>, upsample| AdapterSpec {
        pool,
        conv,
        upsample,
    };
    let none = adapter(false, None, false);
    let (tap, a) = match (l.scheme(), l.model.level) {
        (Scheme::Forward, 1) => ("B4.conv4_1", none),
        (Scheme::Forward, 2) => ("B3.conv3_3", adapter(true, Some((w(256), w(512))), false)),
        (Scheme::Forward, 3) => ("B3.conv3_2", adapter(true, Some((w(256), w(512))), false)),
        (Scheme::Forward, 4) => ("B2", adapter(true, Some((w(128), w(512))), false)),
        (Scheme::Forward, _) => ("K3.conv", adapter(true, Some((w(256), w(512))), false)),
        (Scheme::Backward, 1) => ("B4.conv4_3", none),
        (Scheme::Backward, 2) => ("B4.conv4_4", none),
        (Scheme::Backward, 3) => ("B5.conv5_3", adapter(false, None, true)),
        (Scheme::Backward, 4) => ("K4.conv", none),
        (Scheme::Backward, _) => ("K3", adapter(false, Some((w(256), w(512))), false)),
    };
    (tap.to_string(), a)
}

fn level(l: &Level) -> Option<LevelRecipe> {
    let (tap, adapter) = guided(l);
    Some(LevelRecipe {
        teacher: Some(ModelRef::teacher()),
        init: l.scratch_from(ModelRef::teacher()),
        stages: vec![
            StageRecipe {
                kind: StageKind::Stage1,
                loss: LossSpec::Hint,
                trains: TrainSet::UpTo { tap: tap.clone() },
                offers: Offers {
                    features: Some(FeaturePair {
                        student: tap,
                        teacher: HINT.into(),
                        adapter: (!adapter.is_identity()).then_some(adapter),
                    }),
                    gram_pairs: vec![],
                },
            },
            l.label_stage(),
        ],
    })
}
