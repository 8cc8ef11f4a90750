//! The run directory's locks: one whole run at a time per directory, or any number of
//! single-step runs (`--only`), each step locked on its own, with a short lock around the
//! files they share.

use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use crate::Error;

/// The lock file's name in a run directory.
pub const LOCK_FILE: &str = ".lock";

/// Held for the whole run (or, for a [`RunLock::step`], one step); the OS releases it when the
/// process ends, however it ends (even `kill -9`), so a stale lock file never blocks a later run.
#[derive(Debug)]
pub struct RunLock {
    _file: File,
    path: PathBuf,
    /// Shared holders leave the file: another may still hold it.
    remove_on_drop: bool,
}

/// How a lock file is held.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    Exclusive,
    Shared,
}

impl RunLock {
    /// Creates `dir` if needed and locks it, or names the process that holds it.
    pub fn acquire(dir: &Path) -> Result<Self, Error> {
        std::fs::create_dir_all(dir).map_err(Error::io("create the run directory", dir))?;
        Self::lock(dir, &dir.join(LOCK_FILE), Mode::Exclusive)
    }

    /// Locks `dir` shared: any number of single-step runs (`--only`) hold it together, and a
    /// whole run (which takes it exclusively) waits for none of them but refuses to start.
    pub fn acquire_shared(dir: &Path) -> Result<Self, Error> {
        std::fs::create_dir_all(dir).map_err(Error::io("create the run directory", dir))?;
        Self::lock(dir, &dir.join(LOCK_FILE), Mode::Shared)
    }

    /// Locks one step of a run directory, `<dir>/<at>.lock` (beside the step's folder, so that
    /// `--force` can remove the folder while the lock is held).
    pub fn step(dir: &Path, at: &str) -> Result<Self, Error> {
        let path = dir.join(format!("{at}{}", LOCK_FILE));
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).map_err(Error::io("create", parent))?;
        }
        Self::lock(&dir.join(at), &path, Mode::Exclusive)
    }

    fn lock(dir: &Path, path: &Path, mode: Mode) -> Result<Self, Error> {
        let err = |e: std::io::Error| Error::io("lock", path)(e);
        let mut file = loop {
            let mut file = OpenOptions::new()
                .read(true)
                .write(true)
                .create(true)
                .truncate(false)
                .open(path)
                .map_err(err)?;
            let attempt = match mode {
                Mode::Exclusive => file.try_lock(),
                Mode::Shared => file.try_lock_shared(),
            };
            match attempt {
                Ok(()) => {}
                Err(std::fs::TryLockError::WouldBlock) => {
                    let mut holder = String::new();
                    let _ = file.read_to_string(&mut holder);
                    let holder = match holder.trim() {
                        // Shared holders write nothing.
                        "" => "one or more jobs running single steps (--only)".to_string(),
                        h => h.to_string(),
                    };
                    return Err(Error::Locked {
                        dir: dir.display().to_string(),
                        holder,
                    });
                }
                Err(std::fs::TryLockError::Error(e)) => return Err(err(e)),
            }
            // The holder removes the file when it ends: a lock taken on a file that was
            // unlinked meanwhile guards nothing, so try again on the new one.
            if same_file(&file, path) {
                break file;
            }
        };
        if mode == Mode::Exclusive {
            let host = std::fs::read_to_string("/etc/hostname").unwrap_or_default();
            file.set_len(0).map_err(err)?;
            file.seek(SeekFrom::Start(0)).map_err(err)?;
            writeln!(file, "pid {} on {}", std::process::id(), host.trim()).map_err(err)?;
            file.flush().map_err(err)?;
        }
        Ok(Self {
            _file: file,
            path: path.to_path_buf(),
            remove_on_drop: mode == Mode::Exclusive,
        })
    }

    /// The lock file (`<run dir>/.lock`, or a step's own lock).
    pub fn path(&self) -> &Path {
        &self.path
    }
}

/// The short lock around rewriting a run directory's shared files (`results.json`,
/// `report.md`, `config.toml`, `plan.json`) while single-step runs work there concurrently.
/// Blocks until free; released when dropped. Its file, `.results.lock`, stays (removing it
/// would let two writers lock two different files).
#[derive(Debug)]
pub struct SharedFilesLock {
    _file: File,
}

/// The file of [`SharedFilesLock`].
pub const SHARED_FILES_LOCK: &str = ".results.lock";

impl SharedFilesLock {
    /// Waits for, then takes, the lock of `dir`'s shared files.
    pub fn acquire(dir: &Path) -> Result<Self, Error> {
        let path = dir.join(SHARED_FILES_LOCK);
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .map_err(Error::io("lock", &path))?;
        file.lock().map_err(Error::io("lock", &path))?;
        Ok(Self { _file: file })
    }
}

impl Drop for RunLock {
    /// Removes the lock file (still holding the lock), so a finished or failed run leaves
    /// the directory as it found it. A killed run leaves the file, unlocked: the next run
    /// takes it over.
    fn drop(&mut self) {
        if self.remove_on_drop {
            let _ = std::fs::remove_file(&self.path);
        }
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

    #[test]
    fn shared_holders_coexist_and_keep_a_whole_run_out() {
        let dir = tempfile::tempdir().unwrap();
        let a = RunLock::acquire_shared(dir.path()).unwrap();
        let b = RunLock::acquire_shared(dir.path()).unwrap();
        let e = RunLock::acquire(dir.path()).unwrap_err().to_string();
        assert!(e.contains("single steps (--only)"), "{e}");
        drop(a);
        assert!(RunLock::acquire(dir.path()).is_err());
        drop(b);
        let whole = RunLock::acquire(dir.path()).unwrap();
        let e = RunLock::acquire_shared(dir.path()).unwrap_err().to_string();
        assert!(e.contains(&format!("pid {}", std::process::id())), "{e}");
        drop(whole);
    }

    #[test]
    fn a_step_lock_is_per_step_and_sits_beside_the_step_folder() {
        let dir = tempfile::tempdir().unwrap();
        let s = RunLock::step(dir.path(), "forward/pyramid/SVGG17F").unwrap();
        assert_eq!(s.path(), dir.path().join("forward/pyramid/SVGG17F.lock"));
        let e = RunLock::step(dir.path(), "forward/pyramid/SVGG17F").unwrap_err();
        assert!(e.to_string().contains("SVGG17F"), "{e}");
        let other = RunLock::step(dir.path(), "forward/pyramid/SVGG14F").unwrap();
        drop((s, other));
        assert!(!dir.path().join("forward/pyramid/SVGG17F.lock").exists());
    }
}
