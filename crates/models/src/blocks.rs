//! Block specifications: the named pieces a VGG19 is cut into, and the smaller blocks that
//! replace them (docs/method.md §2).

use serde::{Deserialize, Serialize};

use crate::config::ModelOptions;

/// Every block that appears in any model of the paper.
///
/// VGG19 is `C11 B1 B2 B3 B4 B5 FC3`, where `C11` is conv1_1 (never compressed) and `B1` is the rest
/// of the paper's first block (conv1_2, pool1); the paper's K12 replaces `B1`+`B2` (§2.3).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum BlockKind {
    /// conv1_1 alone (input → 64 channels); kept by every model.
    C11,
    /// conv1_2 and pool1 (64 → 64 channels, halves the map).
    B1,
    /// conv2_1, conv2_2, pool2 (64 → 128 channels).
    B2,
    /// conv3_1..conv3_4, pool3 (128 → 256 channels).
    B3,
    /// conv4_1..conv4_4, pool4 (256 → 512 channels).
    B4,
    /// conv5_1..conv5_4, pool5 (512 → 512 channels).
    B5,
    /// VGG19's three-layer classifier: flatten, fc1, dropout, fc2, dropout, fc3.
    Fc3,
    /// Replaces B1+B2: pool, one conv 64 → 128, pool.
    K12,
    /// Replaces B3: one conv 128 → 256 and a pool.
    K3,
    /// Replaces B4: one conv 256 → 512 and a pool.
    K4,
    /// Replaces B5: one conv 512 → 512 and a pool.
    K5,
    /// Replaces FC3: flatten, dropout, one linear layer to the classes.
    Fc1,
}

impl BlockKind {
    /// The block's name, used as the prefix of its weight names and as its tap name.
    pub fn name(self) -> &'static str {
        match self {
            BlockKind::C11 => "C11",
            BlockKind::B1 => "B1",
            BlockKind::B2 => "B2",
            BlockKind::B3 => "B3",
            BlockKind::B4 => "B4",
            BlockKind::B5 => "B5",
            BlockKind::Fc3 => "FC3",
            BlockKind::K12 => "K12",
            BlockKind::K3 => "K3",
            BlockKind::K4 => "K4",
            BlockKind::K5 => "K5",
            BlockKind::Fc1 => "FC1",
        }
    }

    /// The kind whose [`BlockKind::name`] equals `name`, ignoring ASCII case; `None` if none does.
    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL
            .into_iter()
            .find(|k| k.name().eq_ignore_ascii_case(name))
    }

    /// Every kind, VGG19's blocks first, then the compressed ones.
    pub const ALL: [BlockKind; 12] = [
        BlockKind::C11,
        BlockKind::B1,
        BlockKind::B2,
        BlockKind::B3,
        BlockKind::B4,
        BlockKind::B5,
        BlockKind::Fc3,
        BlockKind::K12,
        BlockKind::K3,
        BlockKind::K4,
        BlockKind::K5,
        BlockKind::Fc1,
    ];

    /// The VGG19 blocks in forward order.
    pub const VGG19: [BlockKind; 7] = [
        BlockKind::C11,
        BlockKind::B1,
        BlockKind::B2,
        BlockKind::B3,
        BlockKind::B4,
        BlockKind::B5,
        BlockKind::Fc3,
    ];

    /// True for the classifier heads (FC3, FC1).
    pub fn is_head(self) -> bool {
        matches!(self, BlockKind::Fc3 | BlockKind::Fc1)
    }

    /// True for the compressed (new, smaller) blocks of §2.3.
    pub fn is_compressed_kind(self) -> bool {
        matches!(
            self,
            BlockKind::K12 | BlockKind::K3 | BlockKind::K4 | BlockKind::K5 | BlockKind::Fc1
        )
    }

    /// The layers of this block at the given options.
    pub fn layers(self, o: &ModelOptions) -> Vec<LayerSpec> {
        let w = |c: usize| o.width(c);
        let conv = |name: &str, c_in: usize, c_out: usize| LayerSpec::Conv {
            name: name.to_string(),
            c_in,
            c_out,
        };
        let pool = |name: &str| LayerSpec::Pool {
            name: name.to_string(),
        };
        match self {
            BlockKind::C11 => vec![conv("conv1_1", o.in_channels, w(64))],
            BlockKind::B1 => vec![conv("conv1_2", w(64), w(64)), pool("pool1")],
            BlockKind::B2 => vec![
                conv("conv2_1", w(64), w(128)),
                conv("conv2_2", w(128), w(128)),
                pool("pool2"),
            ],
            BlockKind::B3 => vec![
                conv("conv3_1", w(128), w(256)),
                conv("conv3_2", w(256), w(256)),
                conv("conv3_3", w(256), w(256)),
                conv("conv3_4", w(256), w(256)),
                pool("pool3"),
            ],
            BlockKind::B4 => vec![
                conv("conv4_1", w(256), w(512)),
                conv("conv4_2", w(512), w(512)),
                conv("conv4_3", w(512), w(512)),
                conv("conv4_4", w(512), w(512)),
                pool("pool4"),
            ],
            BlockKind::B5 => vec![
                conv("conv5_1", w(512), w(512)),
                conv("conv5_2", w(512), w(512)),
                conv("conv5_3", w(512), w(512)),
                conv("conv5_4", w(512), w(512)),
                pool("pool5"),
            ],
            BlockKind::K12 => vec![pool("pool_in"), conv("conv", w(64), w(128)), pool("pool")],
            BlockKind::K3 => vec![conv("conv", w(128), w(256)), pool("pool")],
            BlockKind::K4 => vec![conv("conv", w(256), w(512)), pool("pool")],
            BlockKind::K5 => vec![conv("conv", w(512), w(512)), pool("pool")],
            BlockKind::Fc3 => vec![
                LayerSpec::Flatten,
                LayerSpec::Linear {
                    name: "fc1".into(),
                    d_in: o.flat_features(),
                    d_out: w(2048),
                    relu: true,
                },
                LayerSpec::Dropout { p: 0.5 },
                LayerSpec::Linear {
                    name: "fc2".into(),
                    d_in: w(2048),
                    d_out: w(512),
                    relu: true,
                },
                LayerSpec::Dropout { p: 0.5 },
                LayerSpec::Linear {
                    name: "fc3".into(),
                    d_in: w(512),
                    d_out: o.classes,
                    relu: false,
                },
            ],
            BlockKind::Fc1 => vec![
                LayerSpec::Flatten,
                LayerSpec::Dropout { p: 0.5 },
                LayerSpec::Linear {
                    name: "fc".into(),
                    d_in: o.flat_features(),
                    d_out: o.classes,
                    relu: false,
                },
            ],
        }
    }
}

/// One layer. Convs are 3×3, stride 1, padding 1, with bias, always followed by ReLU (§0);
/// pools are 2×2 max-pools with stride 2.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum LayerSpec {
    /// A 3×3 convolution (stride 1, padding 1, bias) followed by ReLU.
    Conv {
        /// Layer name inside the block, e.g. `conv3_1`.
        name: String,
        /// Input channels.
        c_in: usize,
        /// Output channels.
        c_out: usize,
    },
    /// A 2×2 max-pool with stride 2.
    Pool {
        /// Layer name inside the block, e.g. `pool3`.
        name: String,
    },
    /// Flattens `[B, C, H, W]` to `[B, C·H·W]` (row-major, as PyTorch's `view`).
    Flatten,
    /// Dropout, active only in training mode.
    Dropout {
        /// Probability of zeroing an element.
        p: f64,
    },
    /// A fully connected layer `y = x Wᵀ + b`, optionally followed by ReLU.
    Linear {
        /// Layer name inside the block, e.g. `fc1`.
        name: String,
        /// Input features.
        d_in: usize,
        /// Output features.
        d_out: usize,
        /// Whether ReLU follows (false for the last layer of a head).
        relu: bool,
    },
}

impl LayerSpec {
    /// The layer's name inside its block (convs, pools and linear layers are named).
    pub fn name(&self) -> Option<&str> {
        match self {
            LayerSpec::Conv { name, .. }
            | LayerSpec::Pool { name }
            | LayerSpec::Linear { name, .. } => Some(name),
            LayerSpec::Flatten | LayerSpec::Dropout { .. } => None,
        }
    }
}
