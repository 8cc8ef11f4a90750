//! Forward and backward passes of every model, inheritance, checkpoints and torchvision import.

use candle_core::{Device, Tensor, Var};
use pyramid_models::{Mode, Model, ModelConfig, ModelId, ModelOptions, Scheme, Taps};
use pyramid_rng::Rng;

fn input(b: usize, o: &ModelOptions, seed: u64) -> Tensor {
    let n = b * o.in_channels * o.input_size * o.input_size;
    let v = Rng::new(seed).normal_vec(n, 0.0, 1.0);
    Tensor::from_vec(
        v,
        (b, o.in_channels, o.input_size, o.input_size),
        &Device::Cpu,
    )
    .unwrap()
}

/// Sum of logits, backward, and every gradient finite; returns how many params got one.
fn backward_all(model: &Model, x: &Tensor) -> usize {
    let mut rng = Rng::new(1);
    let logits = model.forward(x, Mode::Train(&mut rng)).unwrap();
    assert_eq!(logits.dims(), &[x.dim(0).unwrap(), model.options().classes]);
    let loss = logits.sqr().unwrap().sum_all().unwrap();
    let grads = loss.backward().unwrap();
    let mut n = 0;
    for (name, var) in model.params() {
        let g = grads
            .get(var)
            .unwrap_or_else(|| panic!("{}: no grad for {name}", model.id()));
        let s: f32 = g.abs().unwrap().sum_all().unwrap().to_scalar().unwrap();
        assert!(s.is_finite(), "{}: grad of {name} not finite", model.id());
        n += 1;
    }
    n
}

#[test]
fn every_model_full_size_forward_backward_batch_2() {
    let o = ModelOptions::default();
    let x = input(2, &o, 3);
    for id in ModelId::all() {
        let m = Model::new(ModelConfig::new(id, o.clone()), 0, &Device::Cpu).unwrap();
        let n = backward_all(&m, &x);
        assert_eq!(n, m.params().len());
    }
}

#[test]
fn every_model_small_forward_backward_finite() {
    for channels in [1, 3] {
        let o = ModelOptions::default()
            .with_width_div(8)
            .with_input_size(32)
            .with_in_channels(channels);
        let x = input(4, &o, 4);
        for id in ModelId::all() {
            let m = Model::new(ModelConfig::new(id, o.clone()), 0, &Device::Cpu).unwrap();
            backward_all(&m, &x);
            // Eval mode is deterministic.
            let a = m.forward(&x, Mode::Eval).unwrap();
            let b = m.forward(&x, Mode::Eval).unwrap();
            let d: f32 = (a - b)
                .unwrap()
                .abs()
                .unwrap()
                .sum_all()
                .unwrap()
                .to_scalar()
                .unwrap();
            assert_eq!(d, 0.0);
        }
    }
}

#[test]
fn batch_norm_variant_trains() {
    let o = ModelOptions::default()
        .with_width_div(16)
        .with_input_size(32)
        .with_batch_norm(true);
    let x = input(4, &o, 5);
    let m = Model::new(ModelConfig::new(ModelId::VGG19, o), 0, &Device::Cpu).unwrap();
    assert!(!m.buffers().is_empty());
    let before = m
        .get("B3.conv3_1.bn.running_mean")
        .unwrap()
        .to_vec1::<f32>()
        .unwrap();
    backward_all(&m, &x);
    let after = m
        .get("B3.conv3_1.bn.running_mean")
        .unwrap()
        .to_vec1::<f32>()
        .unwrap();
    assert_ne!(before, after, "train mode updates running statistics");
}

fn small() -> ModelOptions {
    ModelOptions::default()
        .with_width_div(8)
        .with_input_size(32)
}

fn values(t: &Tensor) -> Vec<f32> {
    t.flatten_all().unwrap().to_vec1().unwrap()
}

#[test]
fn students_inherit_bit_identical_weights_and_fresh_compressed_blocks() {
    for scheme in Scheme::ALL {
        let mut teacher =
            Model::new(ModelConfig::new(ModelId::VGG19, small()), 11, &Device::Cpu).unwrap();
        for level in 1..=5 {
            let id = ModelId::new(level, scheme).unwrap();
            let (student, report) = Model::inherit(&teacher, id, 99).unwrap();
            let compressed = student.spec().compressed_block().unwrap();
            for (name, var) in student.params() {
                let in_c = name.starts_with(&format!("{}.", compressed.name()));
                match teacher.get(name) {
                    Some(t) => {
                        assert!(!in_c, "{id}: compressed param {name} exists in the teacher");
                        assert_eq!(
                            values(t),
                            values(var.as_tensor()),
                            "{id}: {name} not bit-identical"
                        );
                        assert!(report.inherited.contains(name));
                    }
                    None => {
                        assert!(in_c, "{id}: {name} is new but outside the compressed block");
                        assert!(report.fresh.contains(name));
                    }
                }
            }
            assert!(!report.fresh.is_empty());
            // Fresh weights follow PyTorch's default bound 1/sqrt(fan_in), and are not all equal.
            let w_name = report.fresh.iter().find(|n| n.ends_with("weight")).unwrap();
            let w = values(student.get(w_name).unwrap());
            let spec = student
                .spec()
                .params()
                .into_iter()
                .find(|p| &p.name == w_name)
                .unwrap();
            let bound = 1.0 / (spec.fan_in as f32).sqrt();
            assert!(w.iter().all(|v| v.abs() <= bound));
            assert!(w.iter().any(|v| (v - w[0]).abs() > 1e-6));
            teacher = student;
        }
    }
}

#[test]
fn same_seed_same_weights() {
    let a = Model::new(ModelConfig::new(ModelId::VGG19, small()), 5, &Device::Cpu).unwrap();
    let b = Model::new(ModelConfig::new(ModelId::VGG19, small()), 5, &Device::Cpu).unwrap();
    let c = Model::new(ModelConfig::new(ModelId::VGG19, small()), 6, &Device::Cpu).unwrap();
    for ((n, va), (_, vb)) in a.params().iter().zip(b.params()) {
        assert_eq!(values(va.as_tensor()), values(vb.as_tensor()), "{n}");
    }
    let w = "B3.conv3_1.weight";
    assert_ne!(values(a.get(w).unwrap()), values(c.get(w).unwrap()));
    // torchvision VGG init: zero biases, Kaiming-normal std sqrt(2/fan_out) for convs.
    assert!(values(a.get("B3.conv3_1.bias").unwrap())
        .iter()
        .all(|&v| v == 0.0));
    let full = Model::new(
        ModelConfig::new(ModelId::VGG19, ModelOptions::default()),
        5,
        &Device::Cpu,
    )
    .unwrap();
    let w = values(full.get("B4.conv4_2.weight").unwrap());
    let std = (w.iter().map(|v| v * v).sum::<f32>() / w.len() as f32).sqrt();
    let expected = (2.0f32 / (512.0 * 9.0)).sqrt();
    assert!(
        (std / expected - 1.0).abs() < 0.01,
        "std {std} vs {expected}"
    );
    let fc = values(full.get("FC3.fc1.weight").unwrap());
    let std = (fc.iter().map(|v| v * v).sum::<f32>() / fc.len() as f32).sqrt();
    assert!((std / 0.01 - 1.0).abs() < 0.01, "linear std {std}");
}

#[test]
fn taps_read_blocks_and_layers_and_stop_early() {
    let m = Model::new(
        ModelConfig::new(ModelId::new(2, Scheme::Forward).unwrap(), small()),
        0,
        &Device::Cpu,
    )
    .unwrap();
    let x = input(3, m.options(), 1);
    let out = m
        .forward_taps(
            &x,
            Mode::Eval,
            &Taps::of(&["B2", "B2.conv2_2", "K5", "FC1"]),
        )
        .unwrap();
    assert_eq!(out.tap("B2").unwrap().dims(), &[3, 16, 8, 8]);
    assert_eq!(out.tap("B2.conv2_2").unwrap().dims(), &[3, 16, 16, 16]);
    assert_eq!(out.tap("K5").unwrap().dims(), &[3, 64, 1, 1]);
    let logits = out.logits.clone().unwrap();
    assert_eq!(values(out.tap("FC1").unwrap()), values(&logits));
    let early = m
        .forward_taps(&x, Mode::Eval, &Taps::until(&["B3"]))
        .unwrap();
    assert!(early.logits.is_none());
    assert_eq!(early.tap("B3").unwrap().dims(), &[3, 32, 4, 4]);
    let err = m
        .forward_taps(&x, Mode::Eval, &Taps::of(&["B9"]))
        .unwrap_err();
    assert!(err.to_string().contains("B9"));
    let bad = input(1, &ModelOptions::default(), 1);
    assert!(m
        .forward(&bad, Mode::Eval)
        .unwrap_err()
        .to_string()
        .contains("expected [batch, 3, 32, 32]"));
}

#[test]
fn stage1_params_stop_at_the_compressed_block() {
    let id = ModelId::new(3, Scheme::Forward).unwrap(); // SVGG11: C11 B1 B2 B3 K4 | K5 FC1
    let m = Model::new(ModelConfig::new(id, small()), 0, &Device::Cpu).unwrap();
    let names: Vec<String> = m.stage1_params().into_iter().map(|(n, _)| n).collect();
    assert!(names.contains(&"K4.conv.weight".to_string()));
    assert!(names.contains(&"C11.conv1_1.bias".to_string()));
    assert!(!names
        .iter()
        .any(|n| n.starts_with("K5") || n.starts_with("FC1")));
    let id = ModelId::new(5, Scheme::Backward).unwrap(); // SVGG5B: C = FC1, everything trains
    let m = Model::new(ModelConfig::new(id, small()), 0, &Device::Cpu).unwrap();
    assert_eq!(m.stage1_params().len(), m.params().len());
}

#[test]
fn checkpoint_round_trip_rebuilds_the_model_from_the_file_alone() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("svgg8b.safetensors");
    let o = small().with_batch_norm(true).with_classes(7);
    let m = Model::new(
        ModelConfig::new(ModelId::new(4, Scheme::Backward).unwrap(), o),
        3,
        &Device::Cpu,
    )
    .unwrap();
    m.save(&path).unwrap();
    let back = Model::load(&path, &Device::Cpu).unwrap();
    assert_eq!(back.config(), m.config());
    for (n, t) in m.snapshot() {
        assert_eq!(values(&t), values(back.get(&n).unwrap()), "{n}");
    }
    // Truncated and foreign files are refused with the path in the message.
    let bytes = std::fs::read(&path).unwrap();
    let bad = dir.path().join("truncated.safetensors");
    std::fs::write(&bad, &bytes[..bytes.len() / 2]).unwrap();
    let e = Model::load(&bad, &Device::Cpu).err().unwrap().to_string();
    assert!(e.contains("truncated.safetensors"), "{e}");
    let foreign = dir.path().join("foreign.safetensors");
    let t = Tensor::zeros((2, 2), candle_core::DType::F32, &Device::Cpu).unwrap();
    candle_core::safetensors::save(
        &std::collections::HashMap::from([("w".to_string(), t)]),
        &foreign,
    )
    .unwrap();
    let e = Model::load(&foreign, &Device::Cpu)
        .err()
        .unwrap()
        .to_string();
    assert!(e.contains("not a pyramid checkpoint"), "{e}");
    assert!(!dir.path().read_dir().unwrap().any(|f| f
        .unwrap()
        .file_name()
        .to_string_lossy()
        .ends_with(".tmp")));
}

#[test]
fn snapshot_restore_and_vars_are_shared() {
    let m = Model::new(ModelConfig::new(ModelId::VGG19, small()), 0, &Device::Cpu).unwrap();
    let snap = m.snapshot();
    let (_, var): &(String, Var) = &m.params()[0];
    var.set(&var.as_tensor().zeros_like().unwrap()).unwrap();
    assert!(values(m.get("C11.conv1_1.weight").unwrap())
        .iter()
        .all(|&v| v == 0.0));
    m.restore(&snap).unwrap();
    assert_eq!(
        values(m.get("C11.conv1_1.weight").unwrap()),
        values(&snap[0].1)
    );
}

/// Eval passes record no graph (their activations are freed as they go): no parameter gets a
/// gradient from one, while the same pass in train mode reaches every parameter.
#[test]
fn eval_forward_records_no_graph() {
    let o = ModelOptions {
        input_size: 32,
        width_div: 8,
        batch_norm: true,
        ..ModelOptions::default()
    };
    let m = Model::new(ModelConfig::new(ModelId::VGG19, o.clone()), 3, &Device::Cpu).unwrap();
    let x = input(2, &o, 5);
    let grads = m
        .forward(&x, Mode::Eval)
        .unwrap()
        .sqr()
        .unwrap()
        .sum_all()
        .unwrap()
        .backward()
        .unwrap();
    for (name, var) in m.params() {
        assert!(
            grads.get(var).is_none(),
            "{name} got a gradient in eval mode"
        );
    }
    assert!(backward_all(&m, &x) > 0);
}

/// `init = "kaiming"` keeps the convolutions of torchvision's init (the same draws) and gives
/// the linear layers PyTorch's default, U(±1/√fan_in) for weights and biases; the default
/// init's linear weights are N(0, 0.01) with zero biases.
#[test]
fn kaiming_init_changes_only_the_linear_layers() {
    use pyramid_models::InitScheme;
    let base = ModelOptions {
        input_size: 32,
        width_div: 8,
        ..ModelOptions::default()
    };
    let kaiming = ModelOptions {
        init: InitScheme::Kaiming,
        ..base.clone()
    };
    let tv = Model::new(ModelConfig::new(ModelId::VGG19, base), 0, &Device::Cpu).unwrap();
    let km = Model::new(ModelConfig::new(ModelId::VGG19, kaiming), 0, &Device::Cpu).unwrap();
    let values = |m: &Model, n: &str| -> Vec<f32> {
        m.get(n)
            .unwrap_or_else(|| panic!("no {n}"))
            .flatten_all()
            .unwrap()
            .to_vec1()
            .unwrap()
    };
    let mut linear = 0;
    for (name, _) in tv.params() {
        let (a, b) = (values(&tv, name), values(&km, name));
        if name.starts_with("FC3.") {
            linear += 1;
            let fan_in = tv.get(name).unwrap().dims().last().copied().unwrap();
            let fan_in = if name.ends_with(".bias") {
                // A bias's fan-in is its layer's: the weight's second dimension.
                tv.get(&name.replace(".bias", ".weight")).unwrap().dims()[1]
            } else {
                fan_in
            };
            let bound = 1.0 / (fan_in as f32).sqrt();
            assert!(
                b.iter().all(|x| x.abs() <= bound),
                "{name}: beyond ±{bound}"
            );
            let spread = b.iter().fold(0f32, |m, x| m.max(x.abs()));
            assert!(
                spread > 0.5 * bound,
                "{name}: max |x| {spread} for bound {bound}"
            );
            if name.ends_with(".bias") {
                assert!(
                    a.iter().all(|x| *x == 0.0),
                    "{name}: torchvision biases are 0"
                );
            } else {
                let std = (a.iter().map(|x| x * x).sum::<f32>() / a.len() as f32).sqrt();
                assert!((std - 0.01).abs() < 0.003, "{name}: std {std}");
            }
        } else {
            assert_eq!(a, b, "{name}: convolutions must not change");
        }
    }
    assert_eq!(linear, 6, "three linear layers, weight and bias each");
}
