//! Crash-safe file writes: a reader sees either the old file or the complete new one, never a
//! partial file. Every crate that writes results or checkpoints goes through here.

#![warn(missing_docs)]

use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

/// A failed atomic write: what was being done, to which file, and why.
#[derive(Debug)]
pub struct WriteError {
    /// The step that failed, as a verb for the message (`"create"`, `"write"`, `"fsync"`,
    /// `"rename"`, ...).
    pub op: &'static str,
    /// The file the step acted on (the final path or its temp file).
    pub path: PathBuf,
    /// The underlying I/O error.
    pub source: std::io::Error,
}

impl std::fmt::Display for WriteError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The io error is the `source`: printed by `{:#}` chains, not repeated here.
        write!(f, "cannot {} {}", self.op, self.path.display())
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
        // A kill here leaves the complete temp file and the old target: the crash window.
        fault_point(&format!("write {}", path.display()));
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

/// Whether `name` is a temp file of [`write_atomic`] (`.<name>.tmp.<pid>.<n>`), which only a
/// killed writer leaves behind.
pub fn is_temp_file(name: &str) -> bool {
    let Some(rest) = name.strip_prefix('.') else {
        return false;
    };
    let mut parts = rest.rsplitn(3, '.');
    let (n, pid, head) = (parts.next(), parts.next(), parts.next());
    let digits =
        |s: Option<&str>| s.is_some_and(|s| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()));
    digits(n) && digits(pid) && head.is_some_and(|h| h.ends_with(".tmp") && h.len() > 4)
}

/// Removes every temp file of [`write_atomic`] under `dir` (recursively) and returns their
/// paths. Only call it while no other process writes there (e.g. holding the run's lock).
pub fn remove_temp_files(dir: &Path) -> Result<Vec<PathBuf>, WriteError> {
    let mut removed = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let entries = match fs::read_dir(&d) {
            Ok(e) => e,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => return Err(err("list", &d)(e)),
        };
        for entry in entries {
            let entry = entry.map_err(err("list", &d))?;
            let path = entry.path();
            let kind = entry.file_type().map_err(err("stat", &path))?;
            if kind.is_dir() {
                stack.push(path);
            } else if is_temp_file(&entry.file_name().to_string_lossy()) {
                fs::remove_file(&path).map_err(err("remove", &path))?;
                removed.push(path);
            }
        }
    }
    removed.sort();
    Ok(removed)
}

/// The environment variable naming a fault point (tests of crash recovery only).
pub const FAULT_ENV: &str = "PYRAMID_FAULT";

/// A named point where a test can kill this process as `kill -9` would (no destructor, no
/// flush): when `$PYRAMID_FAULT` equals `point`, or `point#k` for its k-th occurrence, the
/// process sends itself SIGKILL. Costs one relaxed load when the variable is unset.
pub fn fault_point(point: &str) {
    use std::sync::OnceLock;
    static TARGET: OnceLock<Option<(String, u64)>> = OnceLock::new();
    static HITS: AtomicU64 = AtomicU64::new(0);
    let target = TARGET.get_or_init(|| {
        let v = std::env::var(FAULT_ENV).ok().filter(|v| !v.is_empty())?;
        Some(match v.rsplit_once('#') {
            Some((p, k)) if k.parse::<u64>().is_ok() => (p.to_string(), k.parse().unwrap_or(1)),
            _ => (v, 1),
        })
    });
    let Some((want, k)) = target else {
        return;
    };
    if want == point && HITS.fetch_add(1, Ordering::SeqCst) + 1 == *k {
        eprintln!("fault point `{point}`: killing the process");
        kill_self();
    }
}

#[cfg(unix)]
fn kill_self() -> ! {
    // SAFETY: kill(2) on our own pid has no memory-safety preconditions.
    unsafe {
        libc::kill(libc::getpid(), libc::SIGKILL);
    }
    std::process::abort()
}

#[cfg(not(unix))]
fn kill_self() -> ! {
    std::process::abort()
}

/// Rewrites a safetensors file's JSON header with its keys sorted (the `safetensors` crate
/// writes its metadata map in `HashMap` order, so identical checkpoints differed byte-wise).
/// The header keeps its length, so tensor offsets are unchanged. Returns the input unchanged
/// if it is not a well-formed safetensors buffer.
pub fn canonical_safetensors(mut bytes: Vec<u8>) -> Vec<u8> {
    use std::collections::BTreeMap;
    let Some(len) = bytes
        .get(..8)
        .map(|b| u64::from_le_bytes(b.try_into().expect("8 bytes")))
    else {
        return bytes;
    };
    let Some(end) = usize::try_from(len).ok().and_then(|l| l.checked_add(8)) else {
        return bytes;
    };
    let Some(header) = bytes.get(8..end) else {
        return bytes;
    };
    let Ok(mut map) = serde_json::from_slice::<BTreeMap<String, serde_json::Value>>(header) else {
        return bytes;
    };
    if let Some(serde_json::Value::Object(meta)) = map.get("__metadata__") {
        let sorted: BTreeMap<_, _> = meta.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
        map.insert(
            "__metadata__".into(),
            serde_json::to_value(sorted).expect("strings serialise"),
        );
    }
    let Ok(mut text) = serde_json::to_vec(&map) else {
        return bytes;
    };
    if text.len() > header.len() {
        return bytes;
    }
    // The same padding the writer used: spaces up to the header's length.
    text.resize(header.len(), b' ');
    bytes[8..end].copy_from_slice(&text);
    bytes
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
        assert!(std::error::Error::source(&e).is_some());
        assert_eq!(fs::read(&p).unwrap(), b"good");
        assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 2);
    }

    #[test]
    fn temp_files_are_recognised_and_removed_recursively() {
        assert!(is_temp_file(".final.safetensors.tmp.4242.7"));
        assert!(is_temp_file(".results.json.tmp.1.0"));
        for name in [
            "final.safetensors",
            ".tmp.1.2",
            ".x.tmp.a.2",
            ".x.tmp.1.",
            "x.tmp.1.2",
            ".lock",
        ] {
            assert!(!is_temp_file(name), "{name}");
        }
        let dir = tempfile::tempdir().unwrap();
        let deep = dir.path().join("forward/pyramid/SVGG17");
        fs::create_dir_all(&deep).unwrap();
        fs::write(deep.join(".final.safetensors.tmp.99.3"), b"partial").unwrap();
        fs::write(deep.join("final.safetensors"), b"good").unwrap();
        fs::write(dir.path().join(".results.json.tmp.99.4"), b"{").unwrap();
        let removed = remove_temp_files(dir.path()).unwrap();
        assert_eq!(removed.len(), 2);
        assert_eq!(fs::read(deep.join("final.safetensors")).unwrap(), b"good");
        assert_eq!(fs::read_dir(&deep).unwrap().count(), 1);
        assert!(remove_temp_files(&dir.path().join("absent"))
            .unwrap()
            .is_empty());
    }

    #[test]
    fn safetensors_headers_become_sorted_with_their_length_kept() {
        // Header {"b":.., "__metadata__":{"z":"1","a":"2"}, "a":..} padded to 8 bytes.
        let header = br#"{"w":{"dtype":"F32","shape":[1],"data_offsets":[0,4]},"__metadata__":{"z":"1","a":"2"}}"#;
        let mut h = header.to_vec();
        while !h.len().is_multiple_of(8) {
            h.push(b' ');
        }
        let mut bytes = (h.len() as u64).to_le_bytes().to_vec();
        bytes.extend_from_slice(&h);
        bytes.extend_from_slice(&1.5f32.to_le_bytes());
        let out = canonical_safetensors(bytes.clone());
        assert_eq!(out.len(), bytes.len());
        assert_eq!(out[..8], bytes[..8]);
        assert_eq!(out[out.len() - 4..], bytes[bytes.len() - 4..]);
        let text = String::from_utf8(out[8..8 + h.len()].to_vec()).unwrap();
        assert!(
            text.starts_with(r#"{"__metadata__":{"a":"2","z":"1"},"w":"#),
            "{text}"
        );
        // Idempotent, and garbage passes through unchanged.
        assert_eq!(canonical_safetensors(out.clone()), out);
        assert_eq!(canonical_safetensors(b"abc".to_vec()), b"abc");
    }
}
