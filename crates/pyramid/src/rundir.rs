//! The run directory's lock: one run at a time per directory.

use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use crate::Error;

/// The lock file's name in a run directory.
pub const LOCK_FILE: &str = ".lock";

/// Held for the whole run; the OS releases it when the process ends, however it ends (even
/// `kill -9`), so a stale lock file never blocks a later run.
#[derive(Debug)]
pub struct RunLock {
    _file: File,
    path: PathBuf,
}

impl RunLock {
    /// Creates `dir` if needed and locks it, or names the process that holds it.
    pub fn acquire(dir: &Path) -> Result<Self, Error> {
        std::fs::create_dir_all(dir).map_err(Error::io("create the run directory", dir))?;
        let path = dir.join(LOCK_FILE);
        let err = |e: std::io::Error| Error::io("lock", &path)(e);
        let mut file = loop {
            let mut file = OpenOptions::new()
                .read(true)
                .write(true)
                .create(true)
                .truncate(false)
                .open(&path)
                .map_err(err)?;
            match file.try_lock() {
                Ok(()) => {}
                Err(std::fs::TryLockError::WouldBlock) => {
                    let mut holder = String::new();
                    let _ = file.read_to_string(&mut holder);
                    return Err(Error::Locked {
                        dir: dir.display().to_string(),
                        holder: holder.trim().to_string(),
                    });
                }
                Err(std::fs::TryLockError::Error(e)) => return Err(err(e)),
            }
            // The holder removes the file when it ends: a lock taken on a file that was
            // unlinked meanwhile guards nothing, so try again on the new one.
            if same_file(&file, &path) {
                break file;
            }
        };
        let host = std::fs::read_to_string("/etc/hostname").unwrap_or_default();
        file.set_len(0).map_err(err)?;
        file.seek(SeekFrom::Start(0)).map_err(err)?;
        writeln!(file, "pid {} on {}", std::process::id(), host.trim()).map_err(err)?;
        file.flush().map_err(err)?;
        Ok(Self { _file: file, path })
    }

    /// The lock file (`<run dir>/.lock`), removed when the lock is dropped.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for RunLock {
    /// Removes the lock file (still holding the lock), so a finished or failed run leaves
    /// the directory as it found it. A killed run leaves the file, unlocked: the next run
    /// takes it over.
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

#[cfg(unix)]
fn same_file(file: &File, path: &Path) -> bool {
    use std::os::unix::fs::MetadataExt;
    match (file.metadata(), std::fs::metadata(path)) {
        (Ok(a), Ok(b)) => a.ino() == b.ino() && a.dev() == b.dev(),
        _ => false,
    }
}

#[cfg(not(unix))]
fn same_file(_file: &File, path: &Path) -> bool {
    path.exists()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_lock_names_the_holder_and_a_released_one_is_free() {
        let dir = tempfile::tempdir().unwrap();
        let first = RunLock::acquire(dir.path()).unwrap();
        let e = RunLock::acquire(dir.path()).unwrap_err().to_string();
        assert!(e.contains(&format!("pid {}", std::process::id())), "{e}");
        drop(first);
        assert!(!dir.path().join(LOCK_FILE).exists());
        let again = RunLock::acquire(dir.path()).unwrap();
        assert!(again.path().exists());
    }
}
