use std::path::PathBuf;

/// Errors of the training toolkit.
#[derive(Debug, thiserror::Error)]
pub enum TrainError {
    /// A candle tensor operation failed.
    #[error(transparent)]
    Candle(#[from] candle_core::Error),

    /// A file-system operation failed; names the path.
    #[error("cannot {op} {}", path.display())]
    Io {
        /// The operation, as a verb for the message (`"open"`, `"read"`, ...).
        op: &'static str,
        /// The file or directory it acted on.
        path: PathBuf,
        /// The underlying I/O error.
        #[source]
        source: std::io::Error,
    },

    /// JSON (de)serialisation failed; names the path when there is one.
    #[error("bad JSON{}", path.as_ref().map(|p| format!(" in {}", p.display())).unwrap_or_default())]
    Json {
        /// The file being read or written, if any.
        path: Option<PathBuf>,
        /// The serde_json error (carries line and column).
        #[source]
        source: serde_json::Error,
    },

    /// A safetensors file (optimiser state) could not be read or written.
    #[error("{}: {message}", path.display())]
    Safetensors {
        /// The file.
        path: PathBuf,
        /// What the safetensors reader or writer reported.
        message: String,
    },

    /// An atomic file write failed.
    #[error(transparent)]
    Write(#[from] pyramid_fsio::WriteError),

    /// Invalid optimiser / schedule configuration.
    #[error("invalid config: {0}")]
    Config(String),

    /// A saved optimiser or schedule state does not fit the object it is loaded into.
    #[error("state mismatch: {0}")]
    StateMismatch(String),
}

/// The result type of the training toolkit.
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
