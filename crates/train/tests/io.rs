use pyramid_train::fsio::{read_json, write_atomic, write_json_atomic};
use pyramid_train::metrics::{read_jsonl, EpochMetrics, JsonlWriter};
use pyramid_train::TrainError;

fn metrics(epoch: u64) -> EpochMetrics {
    EpochMetrics {
        stage: 2,
        epoch,
        train_loss: Some(0.5),
        train_acc: Some(80.0),
        train_images: 5000,
        test_loss: Some(0.6),
        test_acc: Some(75.25),
        val_loss: None,
        val_acc: None,
        lr: 1e-4,
        improved: epoch == 1,
        cut: false,
    }
}

#[test]
fn write_atomic_replaces_and_leaves_no_temp_files() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("state.json");
    write_atomic(&p, b"first").unwrap();
    write_atomic(&p, b"second").unwrap();
    assert_eq!(std::fs::read(&p).unwrap(), b"second");
    let names: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(names.len(), 1);

    write_json_atomic(&p, &metrics(3)).unwrap();
    let back: EpochMetrics = read_json(&p).unwrap();
    assert_eq!(back, metrics(3));
}

#[test]
fn errors_name_the_path() {
    let dir = tempfile::tempdir().unwrap();
    // The parent "folder" is a file, so it cannot be created.
    std::fs::write(dir.path().join("blocker"), b"").unwrap();
    let p = dir.path().join("blocker").join("x.json");
    let e = write_atomic(&p, b"x").unwrap_err();
    // The one conversion of an fsio error: its op and path, with the io error as source.
    assert!(matches!(e, TrainError::Write(_)));
    assert!(std::error::Error::source(&e).is_some());
    assert!(e.to_string().contains("blocker"), "{e}");
    let e = read_json::<EpochMetrics>(&p).unwrap_err();
    assert!(e.to_string().contains("x.json"), "{e}");
}

#[test]
fn jsonl_appends_one_line_per_epoch() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("logs").join("metrics.jsonl");
    {
        let mut w = JsonlWriter::open(&p).unwrap();
        w.append(&metrics(1)).unwrap();
        w.append_sync(&metrics(2)).unwrap();
    }
    // Re-opening appends (resume).
    let mut w = JsonlWriter::open(&p).unwrap();
    w.append(&metrics(3)).unwrap();
    let text = std::fs::read_to_string(&p).unwrap();
    assert_eq!(text.lines().count(), 3);
    assert!(!text.contains("val_acc"));
    let all: Vec<EpochMetrics> = read_jsonl(&p).unwrap();
    assert_eq!(all, vec![metrics(1), metrics(2), metrics(3)]);
}
