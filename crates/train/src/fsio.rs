//! Crash-safe file writes: a reader sees either the old file or the complete new one.

use std::fs;
use std::path::Path;

use serde::Serialize;

use crate::error::{Result, TrainError};

/// Writes `bytes` to `path` atomically (see `pyramid_fsio::write_atomic`): temp file in the
/// same folder, fsync, rename, fsync of the folder.
pub fn write_atomic(path: impl AsRef<Path>, bytes: &[u8]) -> Result<()> {
    Ok(pyramid_fsio::write_atomic(path, bytes)?)
}

/// Pretty JSON of `value`, written atomically with a trailing newline.
pub fn write_json_atomic<T: Serialize + ?Sized>(path: impl AsRef<Path>, value: &T) -> Result<()> {
    let path = path.as_ref();
    let mut bytes = serde_json::to_vec_pretty(value).map_err(|e| TrainError::Json {
        path: Some(path.to_path_buf()),
        source: e,
    })?;
    bytes.push(b'\n');
    write_atomic(path, &bytes)
}

/// Reads and parses a JSON file; errors name the path.
pub fn read_json<T: serde::de::DeserializeOwned>(path: impl AsRef<Path>) -> Result<T> {
    let path = path.as_ref();
    let bytes = fs::read(path).map_err(|e| TrainError::io("read", path, e))?;
    serde_json::from_slice(&bytes).map_err(|e| TrainError::Json {
        path: Some(path.to_path_buf()),
        source: e,
    })
}
