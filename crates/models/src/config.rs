//! Model identities and options (serde), separate from the modules they build.

use serde::{Deserialize, Serialize};
use std::fmt;
use std::str::FromStr;

use crate::init::InitScheme;
use crate::Error;

/// The order in which a pyramid compresses VGG19 (docs/method.md §3 and §4).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Scheme {
    /// From the last layers to the first: SVGG17 → … → SVGG5.
    #[default]
    Forward,
    /// From the first layers to the last: SVGG17B → … → SVGG5B.
    Backward,
}

impl Scheme {
    /// Both schemes, forward first.
    pub const ALL: [Scheme; 2] = [Scheme::Forward, Scheme::Backward];

    /// `"forward"` or `"backward"`, as written in a config.
    pub fn as_str(self) -> &'static str {
        match self {
            Scheme::Forward => "forward",
            Scheme::Backward => "backward",
        }
    }
}

impl fmt::Display for Scheme {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Scheme {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self, Error> {
        match s.to_ascii_lowercase().as_str() {
            "forward" | "fwd" => Ok(Scheme::Forward),
            "backward" | "bwd" => Ok(Scheme::Backward),
            _ => Err(Error::Parse(format!(
                "unknown scheme `{s}` (expected `forward` or `backward`)"
            ))),
        }
    }
}

/// One model of a pyramid: VGG19 (level 0) or the student at `level` 1..=5 of a scheme.
///
/// Level 1 is SVGG17(B), 2 SVGG14(B), 3 SVGG11(B), 4 SVGG8(B), 5 SVGG5(B).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ModelId {
    /// Pyramid level, 0 (VGG19) to 5 (SVGG5).
    pub level: usize,
    /// The compression order; always `Forward` for level 0.
    pub scheme: Scheme,
}

/// The paper's depth label of each level (`SVGG<depth>`).
pub const LEVEL_DEPTHS: [usize; 6] = [19, 17, 14, 11, 8, 5];

impl ModelId {
    /// The teacher of every pyramid, level 0.
    pub const VGG19: ModelId = ModelId {
        level: 0,
        scheme: Scheme::Forward,
    };

    /// Checks `level` ≤ 5; level 0 takes `Forward` whatever `scheme` says.
    pub fn new(level: usize, scheme: Scheme) -> Result<Self, Error> {
        if level > 5 {
            return Err(Error::Parse(format!(
                "pyramid level {level} out of range 0..=5"
            )));
        }
        let scheme = if level == 0 { Scheme::Forward } else { scheme };
        Ok(Self { level, scheme })
    }

    /// Every model of both schemes: VGG19, the five forward and the five backward students.
    pub fn all() -> Vec<ModelId> {
        let mut v = vec![ModelId::VGG19];
        for scheme in Scheme::ALL {
            v.extend((1..=5).map(|level| ModelId { level, scheme }));
        }
        v
    }

    /// The teacher this model is distilled from in its pyramid (None for VGG19).
    pub fn teacher(self) -> Option<ModelId> {
        (self.level > 0).then(|| ModelId {
            level: self.level - 1,
            scheme: if self.level == 1 {
                Scheme::Forward
            } else {
                self.scheme
            },
        })
    }

    /// True for level 0, the uncompressed teacher.
    pub fn is_vgg19(self) -> bool {
        self.level == 0
    }

    /// Depth label of the paper (19, 17, 14, 11, 8, 5).
    pub fn depth(self) -> usize {
        LEVEL_DEPTHS[self.level]
    }

    /// The paper's name: `VGG19`, `SVGG14`, `SVGG14B`.
    pub fn name(self) -> String {
        match (self.level, self.scheme) {
            (0, _) => "VGG19".to_string(),
            (_, Scheme::Forward) => format!("SVGG{}", self.depth()),
            (_, Scheme::Backward) => format!("SVGG{}B", self.depth()),
        }
    }

    /// Parses `VGG19`, `SVGG14`, `svgg14b`, `SVGG14_BACKWARD`; a bare `SVGG14` takes `default_scheme`.
    pub fn parse(s: &str, default_scheme: Scheme) -> Result<Self, Error> {
        let u = s.trim().to_ascii_uppercase().replace('-', "_");
        if u == "VGG19" {
            return Ok(ModelId::VGG19);
        }
        let rest = u.strip_prefix("SVGG").ok_or_else(|| unknown_model(s))?;
        let (digits, scheme) = if let Some(d) = rest.strip_suffix("_BACKWARD") {
            (d, Scheme::Backward)
        } else if let Some(d) = rest.strip_suffix('B') {
            (d, Scheme::Backward)
        } else {
            (rest, default_scheme)
        };
        let depth: usize = digits.parse().map_err(|_| unknown_model(s))?;
        let level = LEVEL_DEPTHS
            .iter()
            .position(|&d| d == depth)
            .filter(|&l| l > 0)
            .ok_or_else(|| unknown_model(s))?;
        ModelId::new(level, scheme)
    }
}

fn unknown_model(s: &str) -> Error {
    Error::Parse(format!(
        "unknown model `{s}` (expected VGG19, SVGG17, SVGG14, SVGG11, SVGG8, SVGG5, or one of those with a `B` suffix for the backward scheme)"
    ))
}

impl fmt::Display for ModelId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.name())
    }
}

impl Serialize for ModelId {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.name())
    }
}

impl<'de> Deserialize<'de> for ModelId {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        ModelId::parse(&s, Scheme::Forward).map_err(serde::de::Error::custom)
    }
}

/// Size options shared by every model of a pyramid.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelOptions {
    /// Number of classes (10 for STL10, 100 for CIFAR-100).
    #[serde(default = "default_classes")]
    pub classes: usize,
    /// Square input size; a multiple of 32 (five 2×2 pools). 96 in the paper.
    #[serde(default = "default_input_size")]
    pub input_size: usize,
    /// 3 (RGB) or 1 (grayscale).
    #[serde(default = "default_in_channels")]
    pub in_channels: usize,
    /// Divides every conv width and the FC3 hidden widths: 1 = the paper, 8 or 16 for CPU-scale runs.
    #[serde(default = "default_width_div")]
    pub width_div: usize,
    /// Batch norm after every conv (off in the paper).
    #[serde(default)]
    pub batch_norm: bool,
    /// How a fresh VGG19 is initialised (written only when not the default, so checkpoints and
    /// fingerprints of torchvision-initialised models are unchanged).
    #[serde(default, skip_serializing_if = "InitScheme::is_default")]
    pub init: InitScheme,
}

fn default_classes() -> usize {
    10
}
fn default_input_size() -> usize {
    96
}
fn default_in_channels() -> usize {
    3
}
fn default_width_div() -> usize {
    1
}

impl Default for ModelOptions {
    fn default() -> Self {
        Self {
            classes: default_classes(),
            input_size: default_input_size(),
            in_channels: default_in_channels(),
            width_div: default_width_div(),
            batch_norm: false,
            init: InitScheme::default(),
        }
    }
}

/// What an experiment chooses of [`ModelOptions`]: all but `classes`, which the data set
/// gives. The same fields with the same defaults, so configs and checkpoints cannot drift.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelSettings {
    /// Square input size; a multiple of 32 (five 2×2 pools). 96 in the paper.
    #[serde(default = "default_input_size")]
    pub input_size: usize,
    /// Divides every conv width and the FC3 hidden widths: 1 = the paper, 8 or 16 for CPU-scale runs.
    #[serde(default = "default_width_div")]
    pub width_div: usize,
    /// 3 (grayscale replicated to RGB) or 1 (grayscale kept; RGB data is refused).
    #[serde(default = "default_in_channels")]
    pub in_channels: usize,
    /// Batch norm after every conv (off in the paper).
    #[serde(default)]
    pub batch_norm: bool,
    /// `torchvision` (the paper's: Kaiming convs, N(0, 0.01) linear layers) or `kaiming`
    /// (Kaiming convs, PyTorch's default linear layers, for narrow BN-free teachers).
    #[serde(default, skip_serializing_if = "InitScheme::is_default")]
    pub init: InitScheme,
}

impl Default for ModelSettings {
    fn default() -> Self {
        let o = ModelOptions::default();
        Self {
            input_size: o.input_size,
            width_div: o.width_div,
            in_channels: o.in_channels,
            batch_norm: o.batch_norm,
            init: o.init,
        }
    }
}

impl ModelSettings {
    /// The full options for a data set of `classes` classes.
    pub fn options(&self, classes: usize) -> ModelOptions {
        ModelOptions {
            classes,
            input_size: self.input_size,
            in_channels: self.in_channels,
            width_div: self.width_div,
            batch_norm: self.batch_norm,
            init: self.init,
        }
    }
}

impl ModelOptions {
    /// The same options with `classes` output classes.
    pub fn with_classes(mut self, classes: usize) -> Self {
        self.classes = classes;
        self
    }
    /// The same options with input images of `input_size`×`input_size` pixels.
    pub fn with_input_size(mut self, input_size: usize) -> Self {
        self.input_size = input_size;
        self
    }
    /// The same options with every conv width divided by `width_div`.
    pub fn with_width_div(mut self, width_div: usize) -> Self {
        self.width_div = width_div;
        self
    }
    /// The same options with `in_channels` input channels (1 or 3).
    pub fn with_in_channels(mut self, in_channels: usize) -> Self {
        self.in_channels = in_channels;
        self
    }
    /// The same options with or without batch norm after each conv.
    pub fn with_batch_norm(mut self, batch_norm: bool) -> Self {
        self.batch_norm = batch_norm;
        self
    }

    /// Checks every option; the error names the field and the value.
    pub fn validate(&self) -> Result<(), Error> {
        let bad = |field: &str, value: usize, why: &str| {
            Err(Error::InvalidOption(format!("{field} = {value}: {why}")))
        };
        if self.classes < 2 {
            return bad("classes", self.classes, "need at least 2 classes");
        }
        if self.input_size < 32 || !self.input_size.is_multiple_of(32) {
            return bad(
                "input_size",
                self.input_size,
                "must be a positive multiple of 32 (five 2x2 pools); resize smaller images up to 32",
            );
        }
        if self.in_channels != 1 && self.in_channels != 3 {
            return bad("in_channels", self.in_channels, "must be 1 or 3");
        }
        if self.width_div == 0 || 64 % self.width_div != 0 {
            return bad(
                "width_div",
                self.width_div,
                "must divide 64 (1, 2, 4, 8, 16, 32 or 64) so every conv width stays whole",
            );
        }
        Ok(())
    }

    /// A conv width of the paper divided by `width_div`.
    pub fn width(&self, paper_width: usize) -> usize {
        paper_width / self.width_div
    }

    /// Spatial size of the final map (3 for 96×96).
    pub fn final_spatial(&self) -> usize {
        self.input_size / 32
    }

    /// Length of the flattened final map (4608 in the paper).
    pub fn flat_features(&self) -> usize {
        self.width(512) * self.final_spatial() * self.final_spatial()
    }
}

/// Everything needed to rebuild a model: which one, and its options. Stored in checkpoints.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelConfig {
    /// Which model.
    pub model: ModelId,
    /// Its size options (classes, input size, width, batch norm, init).
    pub options: ModelOptions,
}

impl ModelConfig {
    /// Pairs a model with its options.
    pub fn new(model: ModelId, options: ModelOptions) -> Self {
        Self { model, options }
    }
}
