//! VGG19 and the ten SVGG students of the Pyramid paper (docs/method.md §2–§4).
//!
//! Students are not hand-written: a [`plan::compression_plan`] lists, for each scheme, which
//! teacher blocks each level replaces and by what. A [`ModelSpec`] is the structure (blocks,
//! roles, shapes, counts); a [`Model`] adds candle `Var`s named like PyTorch state-dict keys
//! (`B3.conv3_1.weight`), a forward pass with taps, and inheritance of weights by name.

#![warn(missing_docs)]

use std::path::PathBuf;

pub mod adapter;
pub mod blocks;
pub mod config;
pub mod fused;
pub mod init;
pub mod io;
pub mod model;
pub mod plan;
pub mod spec;

pub use adapter::{Adapter, AdapterSpec};
pub use blocks::{BlockKind, LayerSpec};
pub use config::{ModelConfig, ModelId, ModelOptions, ModelSettings, Scheme};
pub use fused::{HintStep, TrainStep};
pub use init::{InitRule, InitScheme};
pub use model::{Inheritance, Mode, Model, Outputs, Taps};
pub use plan::{architecture, compression_plan, step_of, CompressionStep, Role};
pub use pyramid_ops::Backend;
pub use spec::{BlockSummary, ModelReport, ModelSpec, ParamSpec};

/// Errors of model construction, forward passes and checkpoint I/O.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A model name, scheme or level that does not parse; the message says what was expected.
    #[error("{0}")]
    Parse(String),
    /// A [`ModelOptions`] field out of range; the message names the field and the value.
    #[error("invalid model option: {0}")]
    InvalidOption(String),
    /// A parameter tensor's shape differs from the one the model needs.
    #[error("parameter `{name}`: expected shape {expected:?}, found {found:?}")]
    ShapeMismatch {
        /// The parameter's state-dict key, e.g. `B3.conv3_1.weight`.
        name: String,
        /// The shape the model needs.
        expected: Vec<usize>,
        /// The shape the file or tensor has.
        found: Vec<usize>,
    },
    /// A parameter name that the model does not have.
    #[error("unknown parameter `{0}`")]
    UnknownParam(String),
    /// A forward tap that names neither a block nor a layer of the model.
    #[error("unknown tap `{0}`: taps are block names (B4, K12, FC1) or layer names (B4.conv4_2)")]
    UnknownTap(String),
    /// An input batch whose per-image shape is not the model's `[C, H, W]`.
    #[error("input of shape {found:?} does not fit the model: expected [batch, {}, {}, {}]", expected[0], expected[1], expected[2])]
    InputShape {
        /// The model's per-image shape `[C, H, W]`.
        expected: Vec<usize>,
        /// The input's full shape.
        found: Vec<usize>,
    },
    /// A checkpoint or weights file that is readable but not what it must be.
    #[error("{}: {message}", path.display())]
    Checkpoint {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        message: String,
    },
    /// A file could not be read.
    #[error("cannot read {}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// The underlying I/O error.
        #[source]
        source: std::io::Error,
    },
    /// An atomic file write failed.
    #[error(transparent)]
    Write(#[from] pyramid_fsio::WriteError),
    /// A file is not a valid safetensors file.
    #[error("{}: not a safetensors file", path.display())]
    Safetensors {
        /// The file.
        path: PathBuf,
        /// What the safetensors reader reported.
        #[source]
        source: safetensors::SafeTensorError,
    },
    /// A safetensors header field (`__metadata__` key) whose JSON does not parse.
    #[error("{}: bad `{key}` metadata", path.display())]
    Metadata {
        /// The file.
        path: PathBuf,
        /// The metadata key, e.g. `pyramid.model_config`.
        key: &'static str,
        /// The serde_json error.
        #[source]
        source: serde_json::Error,
    },
    /// An error while reading or applying the tensors of a file.
    #[error("{}", path.display())]
    InFile {
        /// The file.
        path: PathBuf,
        /// The error inside it.
        #[source]
        source: Box<Error>,
    },
    /// A candle tensor operation failed.
    #[error(transparent)]
    Candle(#[from] candle_core::Error),
}

/// The result type of the models crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;
