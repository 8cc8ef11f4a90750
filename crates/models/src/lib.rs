//! VGG19 and the ten SVGG students of the Pyramid paper (docs/method.md §2–§4).
//!
//! Students are not hand-written: a [`plan::compression_plan`] lists, for each scheme, which
//! teacher blocks each level replaces and by what. A [`ModelSpec`] is the structure (blocks,
//! roles, shapes, counts); a [`Model`] adds candle `Var`s named like PyTorch state-dict keys
//! (`B3.conv3_1.weight`), a forward pass with taps, and inheritance of weights by name.

use std::path::PathBuf;

pub mod adapter;
pub mod blocks;
pub mod config;
pub mod init;
pub mod io;
pub mod model;
pub mod plan;
pub mod spec;

pub use adapter::{Adapter, AdapterSpec};
pub use blocks::{BlockKind, LayerSpec};
pub use config::{ModelConfig, ModelId, ModelOptions, ModelSettings, Scheme};
pub use init::{InitRule, InitScheme};
pub use model::{Inheritance, Mode, Model, Outputs, Taps};
pub use plan::{architecture, compression_plan, step_of, CompressionStep, Role};
pub use pyramid_ops::Backend;
pub use spec::{BlockSummary, ModelReport, ModelSpec, ParamSpec};

/// Errors of model construction, forward passes and checkpoint I/O.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{0}")]
    Parse(String),
    #[error("invalid model option: {0}")]
    InvalidOption(String),
    #[error("parameter `{name}`: expected shape {expected:?}, found {found:?}")]
    ShapeMismatch {
        name: String,
        expected: Vec<usize>,
        found: Vec<usize>,
    },
    #[error("unknown parameter `{0}`")]
    UnknownParam(String),
    #[error("unknown tap `{0}`: taps are block names (B4, K12, FC1) or layer names (B4.conv4_2)")]
    UnknownTap(String),
    #[error("input of shape {found:?} does not fit the model: expected [batch, {}, {}, {}]", expected[0], expected[1], expected[2])]
    InputShape {
        expected: Vec<usize>,
        found: Vec<usize>,
    },
    /// A checkpoint or weights file that is readable but not what it must be.
    #[error("{}: {message}", path.display())]
    Checkpoint { path: PathBuf, message: String },
    #[error("cannot read {}", path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    Write(#[from] pyramid_fsio::WriteError),
    #[error("{}: not a safetensors file", path.display())]
    Safetensors {
        path: PathBuf,
        #[source]
        source: safetensors::SafeTensorError,
    },
    #[error("{}: bad `{key}` metadata", path.display())]
    Metadata {
        path: PathBuf,
        key: &'static str,
        #[source]
        source: serde_json::Error,
    },
    /// An error while reading or applying the tensors of a file.
    #[error("{}", path.display())]
    InFile {
        path: PathBuf,
        #[source]
        source: Box<Error>,
    },
    #[error(transparent)]
    Candle(#[from] candle_core::Error),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
