use std::path::PathBuf;

/// Errors of the training toolkit.
#[derive(Debug, thiserror::Error)]
pub enum TrainError {
    #[error(transparent)]
    Candle(#[from] candle_core::Error),

    /// A file-system operation failed; names the path.
    #[error("{op} {path}: {source}")]
    Io {
        op: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    /// JSON (de)serialisation failed; names the path when there is one.
    #[error("json {path:?}: {source}")]
    Json {
        path: Option<PathBuf>,
        #[source]
        source: serde_json::Error,
    },

    #[error("safetensors {path}: {message}")]
    Safetensors { path: PathBuf, message: String },

    /// Invalid optimiser / schedule configuration.
    #[error("invalid config: {0}")]
    Config(String),

    /// A saved optimiser or schedule state does not fit the object it is loaded into.
    #[error("state mismatch: {0}")]
    StateMismatch(String),
}

pub type Result<T> = std::result::Result<T, TrainError>;

impl TrainError {
    pub(crate) fn io(op: &'static str, path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        TrainError::Io {
            op,
            path: path.into(),
            source,
        }
    }
}
