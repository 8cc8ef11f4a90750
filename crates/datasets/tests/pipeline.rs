//! Embedded data, PIL-exact resizing and the seeded loader.

use candle_core::Device;
use pyramid_datasets::loader::{Augment, Channels, LoaderConfig, Normalize};
use pyramid_datasets::resize::resize_bilinear;
use pyramid_datasets::{load, Dataset, DatasetKind, Loader, Split};

fn pattern(c: usize, h: usize, w: usize) -> Vec<u8> {
    let mut v = Vec::with_capacity(c * h * w);
    for ci in 0..c {
        for y in 0..h {
            for x in 0..w {
                v.push(((ci * 97 + y * 31 + x * 17 + y * x * 7 + (y * y * x) % 13) % 256) as u8);
            }
        }
    }
    v
}

fn fnv(b: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for &v in b {
        h ^= u64::from(v);
        h = h.wrapping_mul(0x0000_0100_0000_01B3);
    }
    h
}

/// Reference values from Pillow 13.0.0 `Image.resize((ow, oh), Image.BILINEAR)`, produced by
/// `tests/fixtures/pil_resize_reference.py` (FNV-1a of the C×H×W output bytes, sum, and some
/// pixels).
#[test]
fn resize_matches_pillow_bilinear() {
    type Case = (
        usize,
        usize,
        usize,
        usize,
        usize,
        u64,
        u64,
        [u8; 6],
        [u8; 6],
        [u8; 5],
    );
    let cases: [Case; 7] = [
        (
            3,
            32,
            32,
            96,
            96,
            0xb8b18fe59181cd1f,
            3518334,
            [0, 0, 6, 11, 17, 23],
            [170, 248, 240, 233, 225, 225],
            [185, 169, 155, 139, 154],
        ),
        (
            1,
            28,
            28,
            96,
            96,
            0x1d79f621a380160c,
            1150453,
            [0, 0, 4, 9, 14, 19],
            [55, 40, 26, 11, 0, 0],
            [101, 134, 167, 200, 195],
        ),
        (
            3,
            96,
            96,
            32,
            32,
            0x638732c1cca7d710,
            391047,
            [73, 128, 125, 110, 146, 127],
            [121, 98, 127, 120, 114, 144],
            [137, 123, 119, 135, 124],
        ),
        (
            1,
            20,
            32,
            50,
            96,
            0x67a6b5baa31b4ae6,
            620661,
            [0, 0, 6, 11, 17, 23],
            [177, 226, 194, 162, 130, 130],
            [120, 122, 124, 127, 98],
        ),
        (
            3,
            7,
            5,
            3,
            11,
            0x5b9694ccf269e07f,
            12292,
            [27, 31, 42, 53, 64, 75],
            [212, 144, 77, 82, 106, 115],
            [153, 122, 91, 81, 71],
        ),
        (
            1,
            40,
            40,
            30,
            50,
            0xfb5de7257f822990,
            186313,
            [9, 23, 39, 54, 69, 85],
            [95, 121, 146, 172, 197, 217],
            [101, 86, 137, 89, 137],
        ),
        (
            1,
            100,
            9,
            99,
            10,
            0x75ded2069e00b6fd,
            127640,
            [0, 15, 31, 46, 61, 77],
            [58, 120, 205, 152, 100, 52],
            [124, 131, 170, 152, 133],
        ),
    ];
    for (c, h, w, oh, ow, hash, sum, first, last, mid) in cases {
        let out = resize_bilinear(&pattern(c, h, w), c, h, w, oh, ow);
        let at = |ci: usize, y: usize, x: usize| out[(ci * oh + y) * ow + x];
        let f: Vec<u8> = (0..6).map(|x| at(0, 0, x)).collect();
        let l: Vec<u8> = (ow - 6..ow).map(|x| at(c - 1, oh - 1, x)).collect();
        let m: Vec<u8> = (ow / 2 - 2..ow / 2 + 3)
            .map(|x| at(c / 2, oh / 2, x))
            .collect();
        assert_eq!(f, first, "{c}x{h}x{w} -> {oh}x{ow} first row");
        assert_eq!(l, last, "{c}x{h}x{w} -> {oh}x{ow} last row");
        assert_eq!(m, mid, "{c}x{h}x{w} -> {oh}x{ow} middle");
        assert_eq!(out.iter().map(|&v| u64::from(v)).sum::<u64>(), sum);
        assert_eq!(fnv(&out), hash, "{c}x{h}x{w} -> {oh}x{ow} hash");
    }
}

#[test]
fn embedded_subset_is_balanced() {
    let tr = load(DatasetKind::Embedded, None, Split::Train).unwrap();
    let te = load(DatasetKind::Embedded, None, Split::Test).unwrap();
    assert_eq!((tr.n, tr.channels, tr.height, tr.width), (2000, 1, 28, 28));
    assert_eq!(te.n, 1000);
    assert_eq!(tr.class_counts(), vec![200; 10]);
    assert_eq!(te.class_counts(), vec![100; 10]);
    assert_eq!(tr.class_names[0], "T-shirt/top");
    assert_eq!(tr.class_names[9], "Ankle boot");
    assert!(tr.validate().is_ok());
    // Not blank: real images have a spread of values.
    let mean = tr.images.iter().map(|&v| f64::from(v)).sum::<f64>() / tr.images.len() as f64;
    assert!((mean / 255.0 - 0.286).abs() < 0.03, "mean {mean}");
}

fn toy(n: usize) -> Dataset {
    Dataset {
        name: "toy".into(),
        images: (0..n * 2 * 4 * 5).map(|x| (x * 7 % 256) as u8).collect(),
        labels: (0..n).map(|i| (i % 3) as u32).collect(),
        n,
        channels: 2,
        height: 4,
        width: 5,
        class_names: vec!["a".into(), "b".into(), "c".into()],
    }
}

fn collect(loader: &Loader, epoch: u64, from: usize) -> Vec<(Vec<usize>, Vec<f32>, Vec<u32>)> {
    loader
        .iter_from(epoch, from)
        .map(|b| {
            let b = b.unwrap();
            (
                b.indices,
                b.images.flatten_all().unwrap().to_vec1::<f32>().unwrap(),
                b.labels.to_vec1::<u32>().unwrap(),
            )
        })
        .collect()
}

#[test]
fn loader_is_reproducible_resumable_and_thread_independent() {
    let d = toy(23);
    let mut cfg = LoaderConfig::new(5);
    cfg.shuffle = true;
    cfg.augment = Augment {
        hflip: true,
        pad_crop: 1,
    };
    cfg.seed = 9;
    let dev = Device::Cpu;
    let a = Loader::new(d.clone(), cfg.clone(), &dev).unwrap();
    assert_eq!(a.num_batches(), 5);
    let e1 = collect(&a, 1, 0);
    assert_eq!(e1.len(), 5);
    assert_eq!(e1[4].0.len(), 3, "last partial batch kept");
    let mut seen: Vec<usize> = e1.iter().flat_map(|b| b.0.clone()).collect();
    seen.sort_unstable();
    assert_eq!(seen, (0..23).collect::<Vec<_>>());
    for b in &e1 {
        let want: Vec<u32> = b.0.iter().map(|&i| d.labels[i]).collect();
        assert_eq!(b.2, want);
    }
    // same again, resumed, without prefetch, with more threads
    assert_eq!(collect(&a, 1, 0), e1);
    assert_eq!(collect(&a, 1, 3), e1[3..].to_vec());
    for (prefetch, threads) in [(0, 1), (1, 2), (3, 3)] {
        let mut c2 = cfg.clone();
        c2.prefetch = prefetch;
        c2.threads = threads;
        let l2 = Loader::new(d.clone(), c2, &dev).unwrap();
        assert_eq!(collect(&l2, 1, 0), e1);
    }
    let single = a.batch(1, 2).unwrap();
    assert_eq!(single.indices, e1[2].0);
    // another epoch: another order
    assert_ne!(collect(&a, 2, 0)[0].0, e1[0].0);
    // early drop of an iterator does not hang
    let mut it = a.iter(3);
    let _ = it.next();
    drop(it);
    assert!(a.batch(1, 5).is_err());
}

#[test]
fn normalise_flip_and_channels() {
    // one 1×2×3 gray image
    let d = Dataset {
        name: "g".into(),
        images: vec![0, 51, 102, 153, 204, 255],
        labels: vec![0],
        n: 1,
        channels: 1,
        height: 2,
        width: 3,
        class_names: vec!["x".into()],
    };
    let mut cfg = LoaderConfig::new(1);
    cfg.channels = Channels::Rgb;
    cfg.normalize = Normalize::new(vec![0.5, 0.0, 0.2], vec![0.5, 1.0, 0.1]);
    let l = Loader::new(d.clone(), cfg.clone(), &Device::Cpu).unwrap();
    assert_eq!(l.sample_shape(), (3, 2, 3));
    let s = l.sample(0, 0);
    let exp = |c: usize, v: f32| {
        let (m, sd) = [(0.5, 0.5), (0.0, 1.0), (0.2, 0.1)][c];
        (v / 255.0 - m) / sd
    };
    for c in 0..3 {
        for (k, &v) in d.images.iter().enumerate() {
            assert!((s[c * 6 + k] - exp(c, f32::from(v))).abs() < 1e-5);
        }
    }
    // flips: over many epochs about half are mirrored, each either identity or mirror
    cfg.augment = Augment::flip();
    cfg.normalize = Normalize::unit();
    cfg.channels = Channels::Keep;
    let l = Loader::new(d, cfg, &Device::Cpu).unwrap();
    let mut flipped = 0;
    for e in 0..200 {
        let s: Vec<u8> = l
            .sample(e, 0)
            .iter()
            .map(|v| (v * 255.0).round() as u8)
            .collect();
        if s == vec![102, 51, 0, 255, 204, 153] {
            flipped += 1;
        } else {
            assert_eq!(s, vec![0, 51, 102, 153, 204, 255]);
        }
    }
    assert!((70..130).contains(&flipped), "{flipped}");
}

#[test]
fn pad_crop_shifts_with_zero_fill() {
    let d = Dataset {
        name: "g".into(),
        images: (1..=16).collect(),
        labels: vec![0],
        n: 1,
        channels: 1,
        height: 4,
        width: 4,
        class_names: vec!["x".into()],
    };
    let mut cfg = LoaderConfig::new(1);
    cfg.augment = Augment {
        hflip: false,
        pad_crop: 2,
    };
    let l = Loader::new(d, cfg, &Device::Cpu).unwrap();
    let mut shifts = std::collections::HashSet::new();
    for e in 0..300 {
        let s: Vec<u8> = l
            .sample(e, 0)
            .iter()
            .map(|v| (v * 255.0).round() as u8)
            .collect();
        // find the shift: value v at (y,x) came from source (y+dy, x+dx)
        let mut found = None;
        'o: for dy in -2i32..=2 {
            for dx in -2i32..=2 {
                let ok = (0..4).all(|y| {
                    (0..4).all(|x| {
                        let (sy, sx) = (y + dy, x + dx);
                        let want = if (0..4).contains(&sy) && (0..4).contains(&sx) {
                            (sy * 4 + sx + 1) as u8
                        } else {
                            0
                        };
                        s[(y * 4 + x) as usize] == want
                    })
                });
                if ok {
                    found = Some((dy, dx));
                    break 'o;
                }
            }
        }
        shifts.insert(found.expect("output is a shifted copy"));
    }
    assert_eq!(shifts.len(), 25);
}

#[test]
fn paper_config_on_embedded() {
    let d = load(DatasetKind::Embedded, None, Split::Test).unwrap();
    let cfg = LoaderConfig::paper_train(DatasetKind::Embedded, 1);
    let l = Loader::new(d, cfg, &Device::Cpu).unwrap();
    assert_eq!(l.num_batches(), 8);
    let b = l.batch(0, 7).unwrap();
    assert_eq!(b.images.dims(), &[1000 - 7 * 128, 3, 96, 96]);
    assert_eq!(b.labels.dims(), &[1000 - 7 * 128]);
}

#[test]
fn kind_parsing_and_serde() {
    use pyramid_datasets::Cifar100Labels;
    assert_eq!("STL10".parse::<DatasetKind>().unwrap(), DatasetKind::Stl10);
    assert_eq!(
        "cifar100:coarse".parse::<DatasetKind>().unwrap(),
        DatasetKind::Cifar100 {
            labels: Cifar100Labels::Coarse
        }
    );
    assert_eq!(
        "fashion-mnist".parse::<DatasetKind>().unwrap(),
        DatasetKind::FashionMnist
    );
    assert!("imagenet".parse::<DatasetKind>().is_err());
    #[derive(serde::Deserialize, serde::Serialize)]
    struct C {
        data: DatasetKind,
        split: Split,
    }
    let c: C = toml::from_str("data = \"cifar100\"\nsplit = \"test\"").unwrap();
    assert_eq!(
        c.data,
        DatasetKind::Cifar100 {
            labels: Cifar100Labels::Fine
        }
    );
    let c: C =
        toml::from_str("split = \"train\"\n[data]\nkind = \"cifar100\"\nlabels = \"coarse\"")
            .unwrap();
    assert_eq!(c.data.num_classes(), 20);
    let s = toml::to_string(&c).unwrap();
    let back: C = toml::from_str(&s).unwrap();
    assert_eq!(back.data, c.data);
    let j = serde_json::to_string(&DatasetKind::Stl10).unwrap();
    assert_eq!(j, r#"{"kind":"stl10"}"#);
    assert_eq!(
        serde_json::from_str::<DatasetKind>("\"embedded\"").unwrap(),
        DatasetKind::Embedded
    );
}

/// The real Fashion-MNIST, when the Debian package is installed.
#[test]
fn real_fashion_mnist_when_present() {
    let dir = std::path::Path::new(pyramid_datasets::idx::FASHION_MNIST_DEFAULT_DIR);
    if !pyramid_datasets::idx::is_fashion_mnist_dir(dir) {
        eprintln!("skipped: Fashion-MNIST not installed in {}", dir.display());
        return;
    }
    let tr = load(DatasetKind::FashionMnist, Some(dir), Split::Train).unwrap();
    let te = load(DatasetKind::FashionMnist, Some(dir), Split::Test).unwrap();
    assert_eq!((tr.n, te.n), (60_000, 10_000));
    assert_eq!((tr.height, tr.width, tr.channels), (28, 28, 1));
    assert_eq!(tr.class_counts(), vec![6000; 10]);
    assert_eq!(te.class_counts(), vec![1000; 10]);
    let n = tr.images.len() as f64;
    let mean = tr.images.iter().map(|&v| f64::from(v) / 255.0).sum::<f64>() / n;
    let var = tr
        .images
        .iter()
        .map(|&v| (f64::from(v) / 255.0 - mean).powi(2))
        .sum::<f64>()
        / n;
    assert!(
        (mean - f64::from(Normalize::FASHION_MNIST_MEAN)).abs() < 1e-3,
        "mean {mean}"
    );
    assert!(
        (var.sqrt() - f64::from(Normalize::FASHION_MNIST_STD)).abs() < 1e-3,
        "std {}",
        var.sqrt()
    );
    // the embedded subset really is a subset of it
    let emb = load(DatasetKind::Embedded, None, Split::Train).unwrap();
    let idx = tr.class_balanced_indices(200, pyramid_datasets::embedded::EMBEDDED_SEED);
    assert_eq!(tr.subset(&idx).images, emb.images);
}

#[test]
fn verify_and_grid_on_embedded() {
    use pyramid_datasets::{show_grid, verify};
    let s = verify(DatasetKind::Embedded, None).unwrap();
    assert!(s.warnings.is_empty(), "{:?}", s.warnings);
    assert_eq!(s.splits[0].n, 2000);
    assert_eq!(s.splits[1].class_counts, vec![100; 10]);
    assert_eq!(
        (s.splits[0].label_min, s.splits[0].label_max),
        (Some(0), Some(9))
    );
    let text = s.to_string();
    assert!(text.contains("Ankle boot=200"), "{text}");
    let t = tempfile::tempdir().unwrap();
    let out = t.path().join("grid.png");
    let d = load(DatasetKind::Embedded, None, Split::Test).unwrap();
    show_grid(&d, 20, &out).unwrap();
    let png = std::fs::read(&out).unwrap();
    assert_eq!(&png[..8], b"\x89PNG\r\n\x1a\n");
    // IHDR: width/height of a 5×4 grid of 84+4-pixel cells
    let w = u32::from_be_bytes([png[16], png[17], png[18], png[19]]);
    let h = u32::from_be_bytes([png[20], png[21], png[22], png[23]]);
    assert_eq!((w, h), (5 * 88, 4 * (84 + 18 + 4)));
}
