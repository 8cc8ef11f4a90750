//! Crash-safe file writes: a reader sees either the old file or the complete new one, never a
//! partial file. Every crate that writes results or checkpoints goes through here.

use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

/// A failed atomic write: what was being done, to which file, and why.
#[derive(Debug)]
pub struct WriteError {
    pub op: &'static str,
    pub path: PathBuf,
    pub source: std::io::Error,
}

impl std::fmt::Display for WriteError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {}: {}", self.op, self.path.display(), self.source)
    }
}

impl std::error::Error for WriteError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&self.source)
    }
}

static COUNTER: AtomicU64 = AtomicU64::new(0);

/// A temp name beside `path`, unique per process and call, hidden (leading dot).
fn temp_path(path: &Path) -> Result<PathBuf, WriteError> {
    let name = path.file_name().ok_or_else(|| WriteError {
        op: "write",
        path: path.to_path_buf(),
        source: std::io::Error::new(std::io::ErrorKind::InvalidInput, "path has no file name"),
    })?;
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    Ok(path.with_file_name(format!(
        ".{}.tmp.{}.{}",
        name.to_string_lossy(),
        std::process::id(),
        n
    )))
}

fn err(op: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> WriteError {
    let path = path.to_path_buf();
    move |source| WriteError { op, path, source }
}

/// Writes `bytes` to `path` atomically: creates the parent folder if needed, writes a temp
/// file in the same folder, fsyncs it, renames it over `path`, then fsyncs the folder (best
/// effort) so the rename itself survives a crash. On error the temp file is removed.
pub fn write_atomic(path: impl AsRef<Path>, bytes: &[u8]) -> Result<(), WriteError> {
    let path = path.as_ref();
    if let Some(d) = parent(path) {
        fs::create_dir_all(d).map_err(err("create folder", d))?;
    }
    let tmp = temp_path(path)?;
    let result = (|| {
        let mut f = OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&tmp)
            .map_err(err("create", &tmp))?;
        f.write_all(bytes).map_err(err("write", &tmp))?;
        f.sync_all().map_err(err("fsync", &tmp))?;
        drop(f);
        fs::rename(&tmp, path).map_err(err("rename", path))
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result?;
    if let Ok(d) = File::open(parent(path).unwrap_or(Path::new("."))) {
        let _ = d.sync_all();
    }
    Ok(())
}

fn parent(path: &Path) -> Option<&Path> {
    path.parent().filter(|d| !d.as_os_str().is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replaces_creates_folders_and_leaves_no_temp_files() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("a/b/out.json");
        write_atomic(&p, b"one").unwrap();
        write_atomic(&p, b"two").unwrap();
        assert_eq!(fs::read(&p).unwrap(), b"two");
        let names: Vec<_> = fs::read_dir(p.parent().unwrap())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, vec![std::ffi::OsString::from("out.json")]);
    }

    #[test]
    fn a_failed_write_names_the_file_and_keeps_the_old_one() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("out.txt");
        write_atomic(&p, b"good").unwrap();
        // Renaming a file over a non-empty folder fails.
        let q = dir.path().join("folder");
        fs::create_dir_all(q.join("x")).unwrap();
        let e = write_atomic(&q, b"bad").unwrap_err();
        assert_eq!(e.op, "rename");
        assert!(e.to_string().contains("folder"), "{e}");
        assert_eq!(fs::read(&p).unwrap(), b"good");
        assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 2);
    }
}
