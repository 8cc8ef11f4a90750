//! Weight initialisation from our own seeded RNG (candle cannot seed its CPU RNG).
//!
//! Each parameter draws from its own stream `Rng::stream(seed, "init/<name>")`, so a parameter's
//! initial value depends only on the seed and its name, never on construction order.

use pyramid_rng::Rng;
use serde::{Deserialize, Serialize};

use crate::spec::{ParamLayer, ParamSpec};

/// How a fresh parameter is drawn.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum InitRule {
    /// torchvision's VGG init: Kaiming-normal (fan_out, ReLU) convs, N(0, 0.01) linear, zero biases.
    TorchvisionVgg,
    /// PyTorch's default for new layers: U(±1/√fan_in) for weight and bias (docs/method.md §2.3).
    PytorchDefault,
    /// Kaiming-normal (fan_out, ReLU) convs with zero biases, PyTorch's default for linear
    /// layers: what trains a narrow BN-free VGG, whose N(0, 0.01) head would vanish.
    KaimingConvs,
}

/// How a fresh teacher (VGG19's blocks) is initialised; `[model] init` in a config.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum InitScheme {
    /// torchvision's VGG init, the paper's: Kaiming fan-out convs, N(0, 0.01) linear layers.
    #[default]
    Torchvision,
    /// Kaiming fan-out convs, PyTorch's default linear layers (U(±1/√fan_in)).
    Kaiming,
}

impl InitScheme {
    /// True for the default scheme (`Torchvision`), which is left out of serialised options.
    pub fn is_default(&self) -> bool {
        *self == Self::default()
    }

    /// The rule for VGG19's own blocks.
    pub fn rule(self) -> InitRule {
        match self {
            InitScheme::Torchvision => InitRule::TorchvisionVgg,
            InitScheme::Kaiming => InitRule::KaimingConvs,
        }
    }
}

/// Values of a fresh parameter of shape `p.shape`.
pub fn init_values(p: &ParamSpec, rule: InitRule, seed: u64) -> Vec<f32> {
    let n = p.numel();
    let is_weight = p.name.ends_with(".weight");
    if p.layer == ParamLayer::BatchNorm {
        // Affine weight and running variance start at 1, bias and running mean at 0.
        let one = is_weight || p.name.ends_with(".running_var");
        return vec![if one { 1.0 } else { 0.0 }; n];
    }
    let mut rng = Rng::stream(seed, &format!("init/{}", p.name));
    match (rule, p.layer, is_weight) {
        (InitRule::TorchvisionVgg, ParamLayer::Conv, true) => {
            rng.normal_vec(n, 0.0, (2.0 / p.fan_out as f64).sqrt())
        }
        (InitRule::TorchvisionVgg, _, true) => rng.normal_vec(n, 0.0, 0.01),
        (InitRule::TorchvisionVgg, _, false) => vec![0.0; n],
        (InitRule::KaimingConvs, ParamLayer::Conv, true) => {
            rng.normal_vec(n, 0.0, (2.0 / p.fan_out as f64).sqrt())
        }
        (InitRule::KaimingConvs, ParamLayer::Conv, false) => vec![0.0; n],
        (InitRule::PytorchDefault | InitRule::KaimingConvs, _, _) => {
            let bound = 1.0 / (p.fan_in as f64).sqrt();
            rng.uniform_vec(n, -bound, bound)
        }
    }
}
