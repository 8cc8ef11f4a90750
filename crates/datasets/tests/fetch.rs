//! `fetch` against a local HTTP server on 127.0.0.1 serving generated archives.

use std::io::{Read, Write};
use std::net::TcpListener;
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::Duration;

use md5::{Digest, Md5};
use pyramid_datasets::fetch::{fetch_archive, is_present, ArchiveSpec, FetchOptions, Progress};
use pyramid_datasets::{load, DatasetKind, Split};

/// A tar.gz holding a tiny but valid `stl10_binary/` (2 train, 1 test image).
fn stl_archive() -> Vec<u8> {
    let mut files: Vec<(&str, Vec<u8>)> = vec![
        ("stl10_binary/train_X.bin", vec![7u8; 2 * 27648]),
        ("stl10_binary/train_y.bin", vec![1, 10]),
        ("stl10_binary/test_X.bin", vec![9u8; 27648]),
        ("stl10_binary/test_y.bin", vec![4]),
    ];
    files.push((
        "stl10_binary/class_names.txt",
        b"airplane\nbird\ncar\ncat\ndeer\ndog\nhorse\nmonkey\nship\ntruck\n".to_vec(),
    ));
    let gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    let mut b = tar::Builder::new(gz);
    for (name, data) in files {
        let mut h = tar::Header::new_gnu();
        h.set_size(data.len() as u64);
        h.set_mode(0o644);
        h.set_cksum();
        b.append_data(&mut h, name, &data[..]).unwrap();
    }
    b.into_inner().unwrap().finish().unwrap()
}

fn md5_hex(b: &[u8]) -> String {
    format!("{:x}", Md5::digest(b))
}

fn spec(md5: String) -> ArchiveSpec {
    ArchiveSpec {
        url: "http://invalid.example/stl10_binary.tar.gz".into(),
        file_name: "stl10_binary.tar.gz".into(),
        md5,
        folder: "stl10_binary".into(),
        markers: vec!["train_X.bin".into(), "test_y.bin".into()],
    }
}

/// Serves `body` to up to `max` requests; `send` bytes of it are actually written
/// (Content-Length always announces the full length). Returns (base URL, request counter).
fn serve(body: Vec<u8>, send: usize, max: usize) -> (String, Arc<AtomicUsize>) {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap();
    let count = Arc::new(AtomicUsize::new(0));
    let c2 = count.clone();
    thread::spawn(move || {
        l.set_nonblocking(false).unwrap();
        for s in l.incoming().take(max) {
            let Ok(mut s) = s else { break };
            s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
            let mut req = Vec::new();
            let mut buf = [0u8; 1024];
            while !req.windows(4).any(|w| w == b"\r\n\r\n") {
                match s.read(&mut buf) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => req.extend_from_slice(&buf[..n]),
                }
            }
            c2.fetch_add(1, Ordering::SeqCst);
            let head = format!(
                "HTTP/1.1 200 OK\r\nContent-Type: application/gzip\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                body.len()
            );
            let _ = s.write_all(head.as_bytes());
            let _ = s.write_all(&body[..send.min(body.len())]);
            let _ = s.flush();
        }
    });
    (format!("http://{addr}"), count)
}

fn opts() -> FetchOptions {
    FetchOptions {
        keep_archive: false,
        connect_timeout_s: Some(5),
        read_timeout_s: Some(5),
    }
}

fn leftovers(dir: &Path) -> Vec<String> {
    std::fs::read_dir(dir)
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect()
}

#[test]
fn good_checksum_unpacks_and_loads() {
    let body = stl_archive();
    let s = spec(md5_hex(&body));
    let (base, count) = serve(body.clone(), body.len(), 1);
    let t = tempfile::tempdir().unwrap();
    let mut events = Vec::new();
    let url = format!("{base}/stl10_binary.tar.gz");
    let out = fetch_archive(&s, t.path(), &url, &opts(), &mut |p| events.push(p)).unwrap();
    assert_eq!(out, t.path().join("stl10_binary"));
    assert!(is_present(&s, t.path()));
    assert_eq!(leftovers(t.path()), vec!["stl10_binary".to_string()]);
    assert!(events
        .iter()
        .any(|e| matches!(e, Progress::Downloading { done, total: Some(t) } if done == t)));
    assert!(matches!(events.last(), Some(Progress::Done(_))));
    let d = load(DatasetKind::Stl10, Some(t.path()), Split::Train).unwrap();
    assert_eq!((d.n, d.labels.clone()), (2, vec![0, 9]));
    // a second run finds it and downloads nothing
    let mut ev2 = Vec::new();
    fetch_archive(&s, t.path(), &url, &opts(), &mut |p| ev2.push(p)).unwrap();
    assert!(matches!(ev2[0], Progress::AlreadyPresent(_)));
    assert_eq!(count.load(Ordering::SeqCst), 1);
}

#[test]
fn wrong_checksum_is_refused_and_leaves_nothing() {
    let body = stl_archive();
    let s = spec("0123456789abcdef0123456789abcdef".into());
    let (base, _) = serve(body.clone(), body.len(), 1);
    let t = tempfile::tempdir().unwrap();
    let e = fetch_archive(
        &s,
        t.path(),
        &format!("{base}/x.tar.gz"),
        &opts(),
        &mut |_| {},
    )
    .unwrap_err()
    .to_string();
    assert!(
        e.contains("checksum mismatch") && e.contains(&md5_hex(&body)),
        "{e}"
    );
    assert!(e.contains("by hand"), "{e}");
    assert!(leftovers(t.path()).is_empty(), "{:?}", leftovers(t.path()));
}

#[test]
fn truncated_transfer_is_refused_and_rerun_succeeds() {
    let body = stl_archive();
    let s = spec(md5_hex(&body));
    let (base, _) = serve(body.clone(), body.len() / 2, 1);
    let t = tempfile::tempdir().unwrap();
    let url = format!("{base}/stl10_binary.tar.gz");
    let e = fetch_archive(&s, t.path(), &url, &opts(), &mut |_| {})
        .unwrap_err()
        .to_string();
    assert!(e.contains("127.0.0.1"), "{e}");
    assert!(leftovers(t.path()).is_empty(), "{:?}", leftovers(t.path()));
    // simulate the debris of a run killed mid-download and mid-extraction
    std::fs::write(t.path().join("stl10_binary.tar.gz.part"), b"partial").unwrap();
    std::fs::create_dir_all(t.path().join(".pyramid-extractXYZ/stl10_binary")).unwrap();
    let (base2, _) = serve(body.clone(), body.len(), 1);
    fetch_archive(
        &s,
        t.path(),
        &format!("{base2}/stl10_binary.tar.gz"),
        &opts(),
        &mut |_| {},
    )
    .unwrap();
    assert_eq!(leftovers(t.path()), vec!["stl10_binary".to_string()]);
}

#[test]
fn local_archive_is_used_and_verified() {
    let body = stl_archive();
    let s = spec(md5_hex(&body));
    let t = tempfile::tempdir().unwrap();
    std::fs::write(t.path().join("stl10_binary.tar.gz"), &body).unwrap();
    // an incomplete data folder from an earlier attempt is replaced
    std::fs::create_dir_all(t.path().join("stl10_binary")).unwrap();
    std::fs::write(t.path().join("stl10_binary/train_X.bin"), b"junk").unwrap();
    let mut events = Vec::new();
    // no server at all: the URL is never used
    fetch_archive(&s, t.path(), "http://127.0.0.1:9/none", &opts(), &mut |p| {
        events.push(p)
    })
    .unwrap();
    assert!(matches!(events[0], Progress::UsingLocalArchive(_)));
    assert_eq!(
        std::fs::read(t.path().join("stl10_binary/train_X.bin"))
            .unwrap()
            .len(),
        2 * 27648
    );
    assert_eq!(leftovers(t.path()), vec!["stl10_binary".to_string()]);
    // a corrupt local archive is refused
    let t2 = tempfile::tempdir().unwrap();
    std::fs::write(
        t2.path().join("stl10_binary.tar.gz"),
        &body[..body.len() - 1],
    )
    .unwrap();
    let e = fetch_archive(
        &s,
        t2.path(),
        "http://127.0.0.1:9/none",
        &opts(),
        &mut |_| {},
    )
    .unwrap_err()
    .to_string();
    assert!(
        e.contains("MD5") && e.contains("stl10_binary.tar.gz"),
        "{e}"
    );
}

#[test]
fn bad_archive_is_refused() {
    let body = b"this is not a gzip file".to_vec();
    let s = spec(md5_hex(&body));
    let (base, _) = serve(body.clone(), body.len(), 1);
    let t = tempfile::tempdir().unwrap();
    let e = fetch_archive(
        &s,
        t.path(),
        &format!("{base}/a.tar.gz"),
        &opts(),
        &mut |_| {},
    )
    .unwrap_err()
    .to_string();
    assert!(
        e.contains("stl10_binary.tar.gz") && e.contains("unpack"),
        "{e}"
    );
    assert!(!t.path().join("stl10_binary").exists());
}

#[test]
fn no_network_fails_fast_with_manual_steps() {
    // a port nobody listens on
    let port = {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let t = tempfile::tempdir().unwrap();
    let start = std::time::Instant::now();
    let e = pyramid_datasets::fetch::fetch_with(
        DatasetKind::Cifar10,
        Some(t.path()),
        Some(&format!("http://127.0.0.1:{port}/mirror")),
        &opts(),
        &mut |_| {},
    )
    .unwrap_err()
    .to_string();
    assert!(start.elapsed() < Duration::from_secs(10));
    assert!(
        e.contains("cifar-10-binary.tar.gz") && e.contains("c32a1d4ab5d03f1284b67883e8d87530"),
        "{e}"
    );
    assert!(e.contains("by hand"), "{e}");
    assert!(leftovers(t.path()).is_empty());
}
