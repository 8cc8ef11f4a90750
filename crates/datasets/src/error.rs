//! Typed errors. Every error about a file names the file, and where it makes sense the record
//! index or the byte offset at which the input stopped making sense.

use std::path::{Path, PathBuf};

/// The result type of the datasets crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Errors of the dataset readers, the input pipeline and `fetch`.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// An I/O error while opening or reading `path`.
    #[error("cannot read {}", .path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// The underlying I/O error.
        #[source]
        source: std::io::Error,
    },
    /// A required file does not exist.
    #[error("{}: file not found. {hint}", .path.display())]
    Missing {
        /// The file that was looked for.
        path: PathBuf,
        /// How to obtain the data (where to download it and where to unpack it).
        hint: String,
    },
    /// The bytes of `path` do not follow the expected format at `offset`.
    #[error("{}: byte offset {offset}: {msg}", .path.display())]
    Format {
        /// The file.
        path: PathBuf,
        /// Byte offset where the format broke.
        offset: u64,
        /// What is wrong there.
        msg: String,
    },
    /// Record `record` of `path` is invalid (e.g. a label out of range).
    #[error("{}: record {record}: {msg}", .path.display())]
    Record {
        /// The file.
        path: PathBuf,
        /// Index of the record (image) within the file, from 0.
        record: usize,
        /// What is wrong with it.
        msg: String,
    },
    /// The file is shorter (or longer) than its format requires.
    #[error("{}: wrong size: expected {expected} bytes, found {found}{}", .path.display(), .detail)]
    Size {
        /// The file.
        path: PathBuf,
        /// Size the format requires, bytes.
        expected: u64,
        /// Size found, bytes.
        found: u64,
        /// Extra context, already formatted as ` (...)`, or empty.
        detail: String,
    },
    /// The data root does not exist, or holds `kind` in none of its documented layouts.
    #[error("{}: {problem} ({kind} data root, {origin}); layouts searched: {}. {}",
        .root.display(), crate::layouts(*.kind), crate::fetch_hint(*.kind))]
    NoDataset {
        /// The root that was searched.
        root: PathBuf,
        /// The data set looked for.
        kind: crate::DatasetKind,
        /// Where the root came from: an argument, `$PYRAMID_DATA` or the kind's default.
        origin: crate::RootOrigin,
        /// What is wrong with `root` ("does not exist", ...).
        problem: String,
    },
    /// `verify` found the data unusable (empty split, unofficial size, wrong image shape);
    /// the summary, with its `problems`, is kept for printing.
    #[error("{} in {}: verification failed: {}", .summary.kind, .summary.dir.display(), .summary.problems.join("; "))]
    Verify {
        /// The verification summary, `problems` non-empty.
        summary: Box<crate::verify::Summary>,
    },
    /// A bad argument (e.g. an unknown dataset name or an unsupported channel conversion).
    #[error("{0}")]
    Invalid(String),
    /// Downloading or unpacking an archive failed.
    #[error("fetch {url}: {msg}")]
    Fetch {
        /// The archive's address.
        url: String,
        /// What went wrong.
        msg: String,
    },
    /// A candle tensor operation failed.
    #[error(transparent)]
    Candle(#[from] candle_core::Error),
}

impl Error {
    pub(crate) fn io(path: &Path, source: std::io::Error) -> Self {
        if source.kind() == std::io::ErrorKind::NotFound {
            return Error::Missing {
                path: path.to_path_buf(),
                hint: String::new(),
            };
        }
        Error::Io {
            path: path.to_path_buf(),
            source,
        }
    }
    pub(crate) fn format(path: &Path, offset: u64, msg: impl Into<String>) -> Self {
        Error::Format {
            path: path.to_path_buf(),
            offset,
            msg: msg.into(),
        }
    }
    pub(crate) fn record(path: &Path, record: usize, msg: impl Into<String>) -> Self {
        Error::Record {
            path: path.to_path_buf(),
            record,
            msg: msg.into(),
        }
    }
    pub(crate) fn size(path: &Path, expected: u64, found: u64, detail: impl Into<String>) -> Self {
        let d: String = detail.into();
        Error::Size {
            path: path.to_path_buf(),
            expected,
            found,
            detail: if d.is_empty() { d } else { format!(" ({d})") },
        }
    }
}

/// Reads a whole file, mapping errors to [`Error`] with the file name.
pub(crate) fn read_file(path: &Path) -> Result<Vec<u8>> {
    std::fs::read(path).map_err(|e| Error::io(path, e))
}
