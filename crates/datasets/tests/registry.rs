//! Adding a data set touches one module: this file registers a toy data set (its whole entry
//! and reader are below) and every part of the crate then serves it: names, serde, shape,
//! classes, normalisation, `locate`, `load`, `verify`, `fetch` and `show_grid`.

use std::path::Path;
use std::sync::OnceLock;

use md5::{Digest, Md5};
use pyramid_datasets::fetch::{fetch_with, FetchOptions, Progress};
use pyramid_datasets::registry::{Archive, Layout, Source};
use pyramid_datasets::{
    layouts, load, locate, register, show_grid, verify, verify_with, Dataset, DatasetInfo,
    DatasetKind, Error, LabelSet, LoaderConfig, Located, Split, Verdict, VerifyOptions,
};

/// `{train,test}.toy`: records of 2 label bytes (shape, size) and 4×4 gray pixels.
const RECORD: usize = 2 + 16;

fn read_toy(dir: &Path, split: Split, labels: usize) -> pyramid_datasets::Result<Dataset> {
    let path = dir.join(format!("{split}.toy"));
    let b = std::fs::read(&path).map_err(|source| Error::Io {
        path: path.clone(),
        source,
    })?;
    if b.len() % RECORD != 0 {
        return Err(Error::Invalid(format!("{}: torn record", path.display())));
    }
    let set = &toy_info().labels[labels];
    Ok(Dataset {
        name: format!("toy_shapes/{split}"),
        images: b.chunks(RECORD).flat_map(|r| r[2..].to_vec()).collect(),
        labels: b.chunks(RECORD).map(|r| u32::from(r[labels])).collect(),
        n: b.len() / RECORD,
        channels: 1,
        height: 4,
        width: 4,
        class_names: set.classes.iter().map(|s| s.to_string()).collect(),
    })
}

fn records(n: usize) -> Vec<u8> {
    (0..n)
        .flat_map(|i| {
            let mut r = vec![(i % 3) as u8, (i % 2) as u8];
            r.extend((0..16).map(|p| (i * 16 + p) as u8));
            r
        })
        .collect()
}

/// A tar.gz of `toy-shapes/{train,test}.toy` (6 and 3 images).
fn archive() -> Vec<u8> {
    let gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    let mut b = tar::Builder::new(gz);
    for (name, n) in [("train", 6), ("test", 3)] {
        let data = records(n);
        let mut h = tar::Header::new_gnu();
        h.set_size(data.len() as u64);
        h.set_mode(0o644);
        h.set_cksum();
        b.append_data(&mut h, format!("toy-shapes/{name}.toy"), &data[..])
            .unwrap();
    }
    b.into_inner().unwrap().finish().unwrap()
}

/// The toy entry. Built at run time only because its archive's MD5 is computed here; a real
/// entry is a `static` (see `stl10::STL10`).
fn toy_info() -> &'static DatasetInfo {
    static INFO: OnceLock<&'static DatasetInfo> = OnceLock::new();
    INFO.get_or_init(|| {
        let md5 = format!("{:x}", Md5::digest(archive()));
        Box::leak(Box::new(DatasetInfo {
            name: "toy_shapes",
            aliases: &["toys"],
            shape: (1, 4, 4),
            labels: &[
                LabelSet {
                    name: "shape",
                    classes: &["square", "circle", "cross"],
                },
                LabelSet {
                    name: "size",
                    classes: &["small", "big"],
                },
            ],
            mean: &[0.5],
            std: &[0.25],
            train: 6,
            test: 3,
            unlabeled: None,
            source: Source::Files {
                default_root: "data",
                layouts: &[Layout {
                    dirs: &["toy-shapes", ""],
                    markers: &["train.toy", "test.toy"],
                    files: "{train,test}.toy",
                    read: read_toy,
                }],
                archive: Some(Archive {
                    url: "http://invalid.example/toys/toy-shapes.tar.gz",
                    md5: Box::leak(md5.into_boxed_str()),
                    folder: "toy-shapes",
                    markers: &["train.toy", "test.toy"],
                }),
            },
            hint: "Put toy-shapes.tar.gz in the root and fetch it.",
        }))
    })
}

fn toy() -> DatasetKind {
    register(toy_info()).unwrap()
}

#[test]
fn a_registered_data_set_has_names_and_serde() {
    let kind = toy();
    assert!(matches!(kind, DatasetKind::Other(_)));
    assert_eq!(
        register(toy_info()).unwrap(),
        kind,
        "registering twice is a no-op"
    );
    for s in [
        "toy_shapes",
        "toy-shapes",
        "Toy Shapes",
        "toys",
        "toy_shapes:shape",
    ] {
        assert_eq!(s.parse::<DatasetKind>().unwrap(), kind, "{s}");
    }
    let by_size: DatasetKind = "toy-shapes:size".parse().unwrap();
    assert_eq!("toyshapessize".parse::<DatasetKind>().unwrap(), by_size);
    assert_ne!(by_size, kind);
    assert_eq!(
        (kind.to_string(), by_size.to_string()),
        ("toy_shapes".into(), "toy_shapes:size".into())
    );
    assert_eq!((kind.num_classes(), by_size.num_classes()), (3, 2));
    assert_eq!(by_size.class_names(), ["small", "big"]);
    assert_eq!(kind.native_shape(), (1, 4, 4));
    assert_eq!(kind.normalize(3).mean, vec![0.5; 3]);
    assert_eq!(
        LoaderConfig::paper_test(kind, 0).normalize.std,
        vec![0.25; 3]
    );
    // Unknown names list it, with its other label set.
    let e = "toy_shapes:colour"
        .parse::<DatasetKind>()
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("cifar100:coarse, toy_shapes, toy_shapes:size"),
        "{e}"
    );

    assert_eq!(
        serde_json::to_string(&by_size).unwrap(),
        r#"{"kind":"toy_shapes","labels":"size"}"#
    );
    #[derive(serde::Deserialize, serde::Serialize)]
    struct C {
        dataset: DatasetKind,
    }
    let c: C = toml::from_str("dataset = \"toy-shapes:size\"").unwrap();
    assert_eq!(c.dataset, by_size);
    let c: C = toml::from_str("[dataset]\nkind = \"toy_shapes\"").unwrap();
    assert_eq!(c.dataset, kind);
    let back: C = toml::from_str(&toml::to_string(&C { dataset: by_size }).unwrap()).unwrap();
    assert_eq!(back.dataset, by_size);
    let e = toml::from_str::<C>("[dataset]\nkind = \"toys\"\nlabels = \"colour\"")
        .err()
        .unwrap()
        .to_string();
    assert!(e.contains("expected one of shape, size"), "{e}");
}

#[test]
fn a_registered_data_set_is_located_fetched_loaded_verified_and_shown() {
    let kind = toy();
    let t = tempfile::tempdir().unwrap();
    // Not there yet: the error names the layouts and the hint.
    let e = load(kind, Some(t.path()), Split::Train).unwrap_err();
    assert!(matches!(e, Error::NoDataset { .. }), "{e:?}");
    let msg = e.to_string();
    assert!(
        msg.contains("holds no toy_shapes files")
            && msg.contains("{root/toy-shapes, root}/{train,test}.toy")
            && msg.contains("toy-shapes.tar.gz in the root"),
        "{msg}"
    );
    assert_eq!(layouts(kind), "{root/toy-shapes, root}/{train,test}.toy");

    // fetch: an archive placed in the root is checked against the entry's MD5 and unpacked.
    std::fs::write(t.path().join("toy-shapes.tar.gz"), archive()).unwrap();
    let mut events = Vec::new();
    let dir = fetch_with(
        kind,
        Some(t.path()),
        None,
        &FetchOptions::default(),
        &mut |p| events.push(p),
    )
    .unwrap();
    assert_eq!(dir, t.path().join("toy-shapes"));
    assert!(
        matches!(events[0], Progress::UsingLocalArchive(_)),
        "{events:?}"
    );

    match locate(kind, Some(t.path())).unwrap() {
        Located::Files { dir: found, .. } => assert_eq!(found, dir),
        Located::Embedded => panic!("not embedded"),
    }
    let d = load(kind, Some(t.path()), Split::Train).unwrap();
    assert_eq!((d.n, d.labels.clone()), (6, vec![0, 1, 2, 0, 1, 2]));
    let by_size: DatasetKind = "toys:size".parse().unwrap();
    let d = load(by_size, Some(t.path()), Split::Test).unwrap();
    assert_eq!(
        (d.labels.clone(), d.class_names[1].as_str()),
        (vec![0, 1, 0], "big")
    );

    let s = verify(kind, Some(t.path())).unwrap();
    assert_eq!(s.verdict, Verdict::Ok);
    assert_eq!(
        (s.kind.as_str(), s.splits[0].n, s.splits[1].n),
        ("toy_shapes", 6, 3)
    );
    assert_eq!(s.class_names, ["square", "circle", "cross"]);
    show_grid(&d, 3, &t.path().join("grid.png")).unwrap();

    // The official sizes come from the entry too.
    std::fs::write(dir.join("test.toy"), records(2)).unwrap();
    let e = verify(kind, Some(t.path())).unwrap_err().to_string();
    assert!(
        e.contains("test: 2 images, the official toy_shapes has 3"),
        "{e}"
    );
    let s = verify_with(
        kind,
        Some(t.path()),
        VerifyOptions {
            allow_partial: true,
        },
    )
    .unwrap();
    assert_eq!(s.verdict, Verdict::Partial);
}

#[test]
fn a_name_taken_or_a_broken_entry_is_refused() {
    fn entry(
        name: &'static str,
        aliases: &'static [&'static str],
        mean: &'static [f32],
    ) -> &'static DatasetInfo {
        const AB: [LabelSet; 1] = [LabelSet::only(&["a", "b"])];
        Box::leak(Box::new(DatasetInfo {
            name,
            aliases,
            shape: (1, 2, 2),
            labels: &AB,
            mean,
            std: &[1.0],
            train: 1,
            test: 1,
            unlabeled: None,
            source: Source::Files {
                default_root: "data",
                layouts: &[Layout {
                    dirs: &[""],
                    markers: &["x"],
                    files: "x",
                    read: |_, _, _| Err(Error::Invalid("unused".into())),
                }],
                archive: None,
            },
            hint: "",
        }))
    }
    let e = register(entry("STL-10", &[], &[0.0]))
        .unwrap_err()
        .to_string();
    assert!(e.contains("taken by stl10"), "{e}");
    let e = register(entry("my_fashion", &["fmnist"], &[0.0]))
        .unwrap_err()
        .to_string();
    assert!(e.contains("\"fmnist\" is taken by fashion-mnist"), "{e}");
    let e = register(entry("two_means", &[], &[0.0, 1.0]))
        .unwrap_err()
        .to_string();
    assert!(e.contains("normalisation"), "{e}");
    assert!("two_means".parse::<DatasetKind>().is_err());
}
