use std::path::PathBuf;

/// Errors of the training toolkit.
#[derive(Debug, thiserror::Error)]
pub enum TrainError {
    #[error(transparent)]
    Candle(#[from] candle_core::Error),

    /// A file-system operation failed; names the path.
    #[error("cannot {op} {}", path.display())]
    Io {
        op: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    /// JSON (de)serialisation failed; names the path when there is one.
    #[error("bad JSON{}", path.as_ref().map(|p| format!(" in {}", p.display())).unwrap_or_default())]
    Json {
        path: Option<PathBuf>,
        #[source]
        source: serde_json::Error,
    },

    #[error("{}: {message}", path.display())]
    Safetensors { path: PathBuf, message: String },

    #[error(transparent)]
    Write(#[from] pyramid_fsio::WriteError),

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
