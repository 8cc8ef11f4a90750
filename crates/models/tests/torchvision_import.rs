//! Import of torchvision's VGG19 state dict (`features.N.*`) into our VGG19 trunk.

mod common;

use candle_core::Device;
use pyramid_models::io::{TORCHVISION_FEATURE_INDEX, TORCHVISION_VGG19_CONVS};
use pyramid_models::{Model, ModelConfig, ModelId, ModelOptions, Scheme};

/// A torchvision-shaped VGG19 state dict with recognisable values: features.N.weight[i] =
/// N + (i mod 1000)/1000, bias[i] = -N - i/1000. Classifier tensors have torchvision's sizes.
fn fake_torchvision_vgg19() -> Vec<(String, Vec<usize>, Vec<f32>)> {
    let spec = pyramid_models::ModelSpec::of(ModelId::VGG19, ModelOptions::default()).unwrap();
    let params = spec.params();
    let mut out = Vec::new();
    for (k, (block, conv)) in TORCHVISION_VGG19_CONVS.iter().enumerate() {
        let n = TORCHVISION_FEATURE_INDEX[k];
        let w = params
            .iter()
            .find(|p| p.name == format!("{}.{conv}.weight", block.name()))
            .unwrap();
        let numel = w.numel();
        out.push((
            format!("features.{n}.weight"),
            w.shape.clone(),
            (0..numel)
                .map(|i| n as f32 + (i % 1000) as f32 / 1000.0)
                .collect(),
        ));
        let c = w.shape[0];
        out.push((
            format!("features.{n}.bias"),
            vec![c],
            (0..c).map(|i| -(n as f32) - i as f32 / 1000.0).collect(),
        ));
    }
    // torchvision's classifier (25088 -> 4096 -> 4096 -> 1000) does not fit and is ignored;
    // a small stand-in with the right key is enough to show it is skipped.
    out.push(("classifier.6.bias".into(), vec![1000], vec![0.5; 1000]));
    out
}

#[test]
fn imports_every_conv_and_redraws_the_head() {
    let dir = tempfile::tempdir().unwrap();
    let pth = dir.path().join("vgg19-dcbb9e9d.pth");
    common::write_pth(&pth, &fake_torchvision_vgg19());

    let m = Model::new(
        ModelConfig::new(ModelId::VGG19, ModelOptions::default()),
        0,
        &Device::Cpu,
    )
    .unwrap();
    let head_before: Vec<f32> = m.get("FC3.fc1.bias").unwrap().to_vec1().unwrap();
    let imported = m.import_torchvision_vgg19(&pth, 1).unwrap();
    assert_eq!(imported.len(), 32);
    let w: Vec<f32> = m
        .get("B4.conv4_2.weight")
        .unwrap()
        .flatten_all()
        .unwrap()
        .to_vec1()
        .unwrap();
    assert_eq!(w[0], 21.0);
    assert_eq!(w[1234], 21.234);
    let b: Vec<f32> = m.get("B5.conv5_4.bias").unwrap().to_vec1().unwrap();
    assert_eq!(b[7], -34.007);
    let c11: Vec<f32> = m
        .get("C11.conv1_1.weight")
        .unwrap()
        .flatten_all()
        .unwrap()
        .to_vec1()
        .unwrap();
    assert_eq!(c11[5], 0.005);
    // FC3 was re-drawn with PyTorch's default init: U(±1/sqrt(4608)) bias instead of zeros.
    let head_after: Vec<f32> = m.get("FC3.fc1.bias").unwrap().to_vec1().unwrap();
    assert_ne!(head_before, head_after);
    let bound = 1.0 / (4608f32).sqrt();
    assert!(head_after.iter().all(|v| v.abs() <= bound));

    // A backward student takes only the convs it still has.
    let s = Model::new(
        ModelConfig::new(
            ModelId::new(2, Scheme::Backward).unwrap(),
            ModelOptions::default(),
        ),
        0,
        &Device::Cpu,
    )
    .unwrap();
    let imported = s.import_torchvision_vgg19(&pth, 1).unwrap();
    assert_eq!(imported.len(), 2 * (1 + 4 + 4)); // C11, B4, B5

    // Grayscale models sum conv1_1's RGB filters.
    let g = Model::new(
        ModelConfig::new(ModelId::VGG19, ModelOptions::default().with_in_channels(1)),
        0,
        &Device::Cpu,
    )
    .unwrap();
    g.import_torchvision_vgg19(&pth, 1).unwrap();
    let w: Vec<f32> = g
        .get("C11.conv1_1.weight")
        .unwrap()
        .flatten_all()
        .unwrap()
        .to_vec1()
        .unwrap();
    // Filter 0, pixel 0: channels at flat indices 0, 9, 18 -> 0.000 + 0.009 + 0.018.
    assert!((w[0] - 0.027).abs() < 1e-6);
}

#[test]
fn bad_files_are_refused_with_the_path() {
    let dir = tempfile::tempdir().unwrap();
    let m = Model::new(
        ModelConfig::new(ModelId::VGG19, ModelOptions::default()),
        0,
        &Device::Cpu,
    )
    .unwrap();

    let partial = dir.path().join("partial.pth");
    let mut sd = fake_torchvision_vgg19();
    sd.retain(|(k, _, _)| k != "features.21.weight");
    common::write_pth(&partial, &sd);
    let e = m
        .import_torchvision_vgg19(&partial, 0)
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("partial.pth") && e.contains("features.21.weight"),
        "{e}"
    );

    let bn = dir.path().join("vgg19_bn.pth");
    common::write_pth(
        &bn,
        &[("features.1.running_mean".into(), vec![64], vec![0.0; 64])],
    );
    let e = m.import_torchvision_vgg19(&bn, 0).unwrap_err().to_string();
    assert!(e.contains("vgg19_bn"), "{e}");

    let garbage = dir.path().join("garbage.pth");
    std::fs::write(&garbage, b"not a zip").unwrap();
    let e = m
        .import_torchvision_vgg19(&garbage, 0)
        .unwrap_err()
        .to_string();
    assert!(e.contains("garbage.pth"), "{e}");

    let small = Model::new(
        ModelConfig::new(ModelId::VGG19, ModelOptions::default().with_width_div(8)),
        0,
        &Device::Cpu,
    )
    .unwrap();
    let e = small
        .import_torchvision_vgg19(&partial, 0)
        .unwrap_err()
        .to_string();
    assert!(e.contains("width_div = 8"), "{e}");
}
