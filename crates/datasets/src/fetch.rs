//! Downloading and unpacking the official archives.
//!
//! `fetch(kind, dir, base_url_override)`:
//! 1. if `dir/<folder>` (e.g. `stl10_binary`) already holds the data, nothing is done;
//! 2. if `dir/<archive>` exists (e.g. placed there by hand) it is used, otherwise the archive is
//!    downloaded to `dir/<archive>.part`, while its MD5 is computed and progress reported;
//! 3. the MD5 must equal the publisher's; a mismatch or a short transfer deletes the `.part`
//!    file and fails;
//! 4. the archive is unpacked into a fresh temporary folder inside `dir`, and the data folder
//!    is renamed into place in one step, so `dir/<folder>` is either complete or absent;
//! 5. the archive is deleted (unless `FetchOptions::keep_archive`).
//!
//! An interrupted run leaves at most a `.part` file or a `.pyramid-extract*` folder, both of
//! which the next run replaces.

use std::fs::File;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use md5::{Digest, Md5};

use crate::error::{Error, Result};
use crate::{resolve_root, DatasetKind};

/// An official dataset archive.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ArchiveSpec {
    /// Where the publisher serves it.
    pub url: String,
    /// File name of the archive (also appended to a base-URL override).
    pub file_name: String,
    /// The publisher's MD5 of the archive, lower-case hex.
    pub md5: String,
    /// The top-level folder the archive unpacks to.
    pub folder: String,
    /// Files inside `folder` whose presence means the data is already there.
    pub markers: Vec<String>,
}

/// The official archive of `kind` (MD5s as published by the authors and used by torchvision).
pub fn archive_spec(kind: DatasetKind) -> Result<ArchiveSpec> {
    let info = kind.info();
    let Some(a) = info.archive() else {
        return Err(Error::Invalid(if info.is_embedded() {
            format!("the {kind} data set is compiled in; nothing to fetch")
        } else {
            format!("{kind} is not fetched by this tool: {}", info.hint)
        }));
    };
    Ok(ArchiveSpec {
        url: a.url.to_string(),
        file_name: a.url.rsplit('/').next().unwrap_or(a.url).to_string(),
        md5: a.md5.to_string(),
        folder: a.folder.to_string(),
        markers: a.markers.iter().map(|s| s.to_string()).collect(),
    })
}

/// Progress events of a fetch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Progress {
    /// Already present; nothing to do.
    AlreadyPresent(PathBuf),
    /// Using an archive found on disk instead of downloading.
    UsingLocalArchive(PathBuf),
    /// Download started; `total` from Content-Length if the server sent it.
    Connecting {
        /// The archive's address.
        url: String,
    },
    /// Transfer progress, reported as bytes arrive.
    Downloading {
        /// Bytes received so far.
        done: u64,
        /// Total size from the server's Content-Length, when it sent one.
        total: Option<u64>,
    },
    /// Checking the archive's MD5 against the published one.
    Verifying,
    /// Unpacking the archive into the data folder.
    Extracting,
    /// Finished; the data folder.
    Done(PathBuf),
}

/// Fetch options.
#[derive(Debug, Clone, Default)]
pub struct FetchOptions {
    /// Keep the downloaded archive next to the data.
    pub keep_archive: bool,
    /// Connect timeout in seconds (default 15).
    pub connect_timeout_s: Option<u64>,
    /// Read timeout in seconds (default 60).
    pub read_timeout_s: Option<u64>,
}

/// Downloads, verifies and unpacks the official archive of `kind` into `dir` (else
/// `$PYRAMID_DATA`, else `./data`); `base_url_override` replaces the publisher's base URL
/// (the archive file name is appended). Returns the data folder. Progress goes to `tracing`.
pub fn fetch(
    kind: DatasetKind,
    dir: Option<&Path>,
    base_url_override: Option<&str>,
) -> Result<PathBuf> {
    let mut last_pct = u64::MAX;
    fetch_with(
        kind,
        dir,
        base_url_override,
        &FetchOptions::default(),
        &mut |p| match p {
            Progress::Downloading {
                done,
                total: Some(t),
            } if t > 0 => {
                let pct = done * 100 / t;
                if pct / 5 != last_pct / 5 {
                    last_pct = pct;
                    tracing::info!("downloaded {pct}% ({} of {} MB)", done >> 20, t >> 20);
                }
            }
            Progress::Downloading { .. } => {}
            other => tracing::info!("{other:?}"),
        },
    )
}

/// [`fetch`] with options and a progress callback.
pub fn fetch_with(
    kind: DatasetKind,
    dir: Option<&Path>,
    base_url_override: Option<&str>,
    opts: &FetchOptions,
    progress: &mut dyn FnMut(Progress),
) -> Result<PathBuf> {
    let spec = archive_spec(kind)?;
    let dir = resolve_root(kind, dir);
    let url = match base_url_override {
        Some(b) => format!("{}/{}", b.trim_end_matches('/'), spec.file_name),
        None => spec.url.clone(),
    };
    fetch_archive(&spec, dir.path(), &url, opts, progress)
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> Error + '_ {
    move |e| Error::io(path, e)
}

fn manual_steps(spec: &ArchiveSpec, dir: &Path) -> String {
    format!(
        "To install it by hand: download {} (MD5 {}), then either put it at {} and run fetch \
         again (it is verified and unpacked), or unpack it yourself so that {} exists.",
        spec.url,
        spec.md5,
        dir.join(&spec.file_name).display(),
        dir.join(&spec.folder).display()
    )
}

/// Whether `dir/<folder>` holds every marker file.
pub fn is_present(spec: &ArchiveSpec, dir: &Path) -> bool {
    let d = dir.join(&spec.folder);
    spec.markers.iter().all(|m| d.join(m).is_file())
}

/// The work of [`fetch_with`] for an explicit archive spec and URL.
pub fn fetch_archive(
    spec: &ArchiveSpec,
    dir: &Path,
    url: &str,
    opts: &FetchOptions,
    progress: &mut dyn FnMut(Progress),
) -> Result<PathBuf> {
    let target = dir.join(&spec.folder);
    if is_present(spec, dir) {
        progress(Progress::AlreadyPresent(target.clone()));
        return Ok(target);
    }
    std::fs::create_dir_all(dir).map_err(io(dir))?;
    let archive = dir.join(&spec.file_name);
    if archive.is_file() {
        progress(Progress::UsingLocalArchive(archive.clone()));
        progress(Progress::Verifying);
        let got = md5_file(&archive)?;
        if got != spec.md5 {
            return Err(Error::Fetch {
                url: archive.display().to_string(),
                msg: format!(
                    "the archive on disk has MD5 {got}, expected {}; delete it and fetch again. {}",
                    spec.md5,
                    manual_steps(spec, dir)
                ),
            });
        }
    } else {
        download(spec, dir, url, &archive, opts, progress)?;
    }
    progress(Progress::Extracting);
    extract(spec, dir, &archive)?;
    if !opts.keep_archive {
        let _ = std::fs::remove_file(&archive);
    }
    progress(Progress::Done(target.clone()));
    Ok(target)
}

fn md5_file(path: &Path) -> Result<String> {
    let mut f = File::open(path).map_err(io(path))?;
    let mut h = Md5::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = f.read(&mut buf).map_err(io(path))?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
    }
    Ok(format!("{:x}", h.finalize()))
}

#[cfg(feature = "fetch")]
fn open_url(
    url: &str,
    opts: &FetchOptions,
) -> std::result::Result<(Option<u64>, Box<dyn Read + Send>), String> {
    use std::time::Duration;
    let agent = ureq::AgentBuilder::new()
        .timeout_connect(Duration::from_secs(opts.connect_timeout_s.unwrap_or(15)))
        .timeout_read(Duration::from_secs(opts.read_timeout_s.unwrap_or(60)))
        .build();
    match agent.get(url).call() {
        Ok(resp) => {
            let len = resp
                .header("Content-Length")
                .and_then(|s| s.trim().parse::<u64>().ok());
            Ok((len, Box::new(resp.into_reader())))
        }
        Err(ureq::Error::Status(code, r)) => Err(format!("HTTP {code} {}", r.status_text())),
        Err(e) => Err(e.to_string()),
    }
}

#[cfg(not(feature = "fetch"))]
fn open_url(
    _url: &str,
    _opts: &FetchOptions,
) -> std::result::Result<(Option<u64>, Box<dyn Read + Send>), String> {
    Err("this build of pyramid-datasets has no download support (feature `fetch`)".into())
}

fn download(
    spec: &ArchiveSpec,
    dir: &Path,
    url: &str,
    archive: &Path,
    opts: &FetchOptions,
    progress: &mut dyn FnMut(Progress),
) -> Result<()> {
    let fail = |msg: String| Error::Fetch {
        url: url.to_string(),
        msg: format!("{msg}. {}", manual_steps(spec, dir)),
    };
    progress(Progress::Connecting {
        url: url.to_string(),
    });
    let (total, mut reader) =
        open_url(url, opts).map_err(|e| fail(format!("cannot download: {e}")))?;
    let part = dir.join(format!("{}.part", spec.file_name));
    let result = (|| -> Result<()> {
        let mut out = File::create(&part).map_err(io(&part))?;
        let mut h = Md5::new();
        let mut buf = vec![0u8; 1 << 16];
        let mut done = 0u64;
        progress(Progress::Downloading { done, total });
        loop {
            let n = match reader.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    return Err(fail(format!(
                        "transfer failed after {done} bytes{}: {e}",
                        total.map_or(String::new(), |t| format!(" of {t}"))
                    )))
                }
            };
            h.update(&buf[..n]);
            out.write_all(&buf[..n]).map_err(io(&part))?;
            done += n as u64;
            progress(Progress::Downloading { done, total });
        }
        out.sync_all().map_err(io(&part))?;
        if let Some(t) = total {
            if done != t {
                return Err(fail(format!(
                    "truncated transfer: received {done} of {t} bytes"
                )));
            }
        }
        progress(Progress::Verifying);
        let got = format!("{:x}", h.finalize());
        if got != spec.md5 {
            return Err(fail(format!(
                "checksum mismatch: MD5 of the {done} bytes received is {got}, expected {}",
                spec.md5
            )));
        }
        std::fs::rename(&part, archive).map_err(io(archive))?;
        Ok(())
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&part);
    }
    result
}

fn extract(spec: &ArchiveSpec, dir: &Path, archive: &Path) -> Result<()> {
    // Leftovers of interrupted runs.
    if let Ok(rd) = std::fs::read_dir(dir) {
        for e in rd.flatten() {
            if e.file_name()
                .to_string_lossy()
                .starts_with(".pyramid-extract")
            {
                let _ = std::fs::remove_dir_all(e.path());
            }
        }
    }
    let tmp = tempfile::Builder::new()
        .prefix(".pyramid-extract")
        .tempdir_in(dir)
        .map_err(io(dir))?;
    let f = File::open(archive).map_err(io(archive))?;
    let gz = flate2::read::MultiGzDecoder::new(std::io::BufReader::new(f));
    let mut ar = tar::Archive::new(gz);
    ar.set_preserve_permissions(false);
    ar.unpack(tmp.path()).map_err(|e| Error::Format {
        path: archive.to_path_buf(),
        offset: 0,
        msg: format!("cannot unpack the archive: {e}"),
    })?;
    let src = tmp.path().join(&spec.folder);
    for m in &spec.markers {
        if !src.join(m).is_file() {
            return Err(Error::Format {
                path: archive.to_path_buf(),
                offset: 0,
                msg: format!("the archive has no {}/{m}", spec.folder),
            });
        }
    }
    let target = dir.join(&spec.folder);
    if target.exists() {
        // An incomplete folder from an earlier manual attempt: move it aside, then delete.
        let old = tmp.path().join(".old");
        std::fs::rename(&target, &old).map_err(io(&target))?;
    }
    std::fs::rename(&src, &target).map_err(io(&target))?;
    Ok(())
}
