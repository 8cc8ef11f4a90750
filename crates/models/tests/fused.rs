//! The fused training step and eval pass (src/fused.rs) against candle's autograd, on every
//! model of the CPU configs: VGG19 and all ten students, widths ÷8 and ÷16, 1×32×32 input,
//! with and without batch norm.

use candle_core::{Device, Tensor};
use pyramid_models::{InitScheme, Mode, Model, ModelConfig, ModelId, ModelOptions, Taps};
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

fn values(t: &Tensor) -> Vec<f32> {
    t.flatten_all().unwrap().to_vec1().unwrap()
}

/// max |a − b| / max(max |b|, floor): the error relative to the tensor's scale.
fn rel_err(a: &[f32], b: &[f32], floor: f32) -> f32 {
    assert_eq!(a.len(), b.len());
    let scale = b.iter().fold(floor, |m, v| m.max(v.abs()));
    a.iter().zip(b).fold(0f32, |m, (x, y)| m.max((x - y).abs())) / scale
}

fn options(width_div: usize, batch_norm: bool) -> ModelOptions {
    ModelOptions {
        input_size: 32,
        in_channels: 1,
        width_div,
        batch_norm,
        init: if batch_norm {
            InitScheme::default()
        } else {
            InitScheme::Kaiming
        },
        ..ModelOptions::default()
    }
}

/// Two identical models (same seed), one on each path.
fn pair(id: ModelId, o: &ModelOptions) -> (Model, Model) {
    let fused = Model::new(ModelConfig::new(id, o.clone()), 7, &Device::Cpu).unwrap();
    let mut candle = Model::new(ModelConfig::new(id, o.clone()), 7, &Device::Cpu).unwrap();
    candle.set_fused(false);
    assert!(fused.fused_available() && !candle.fused_available());
    (fused, candle)
}

fn check_step(id: ModelId, o: &ModelOptions) {
    let (fused, candle) = pair(id, o);
    let x = input(6, o, 11);
    let labels = Tensor::from_vec(vec![0u32, 3, 9, 3, 5, 1], 6, &Device::Cpu).unwrap();
    let a = fused.train_step_ce(&x, &labels, &mut Rng::new(5)).unwrap();
    let b = candle.train_step_ce(&x, &labels, &mut Rng::new(5)).unwrap();
    let what = format!("{id} ÷{} bn={}", o.width_div, o.batch_norm);
    assert!(
        (a.loss - b.loss).abs() <= 1e-5 * b.loss.abs().max(1.0),
        "{what}: loss {} vs {}",
        a.loss,
        b.loss
    );
    let e = rel_err(&values(&a.logits), &values(&b.logits), 1e-3);
    assert!(e < 1e-4, "{what}: logits differ by {e}");
    for (name, var) in fused.params() {
        let ga = a
            .grads
            .get(var.as_tensor())
            .unwrap_or_else(|| panic!("{what}: no fused gradient for {name}"));
        let vb = candle.get(name).unwrap();
        // The candle model's variables are other tensors: look its gradient up by its own var.
        let gb = candle
            .params()
            .iter()
            .find(|(n, _)| n == name)
            .and_then(|(_, v)| b.grads.get(v.as_tensor()))
            .unwrap_or_else(|| panic!("{what}: no candle gradient for {name}"));
        assert_eq!(ga.dims(), vb.dims(), "{what}: {name}");
        // Under batch norm a conv bias does not change the loss: its gradient is rounding
        // noise around 0 on both paths, measured against the layer's weight gradient.
        let floor = match name.strip_suffix(".bias") {
            Some(layer) if o.batch_norm && !layer.ends_with(".bn") && !layer.contains(".fc") => {
                let w = fused.get(&format!("{layer}.weight")).unwrap();
                let gw = values(a.grads.get(w).unwrap());
                gw.iter().fold(1e-6f32, |m, v| m.max(v.abs()))
            }
            _ => 1e-6,
        };
        let e = rel_err(&values(ga), &values(gb), floor);
        assert!(e < 2e-3, "{what}: gradient of {name} differs by {e}");
    }
    for ((name, ra), (_, rb)) in fused.buffers().iter().zip(candle.buffers()) {
        let e = rel_err(&values(ra.as_tensor()), &values(rb.as_tensor()), 1e-6);
        assert!(e < 1e-5, "{what}: running statistic {name} differs by {e}");
    }
}

fn cpu_models() -> Vec<ModelId> {
    ModelId::all()
}

#[test]
fn fused_training_step_matches_candle_on_every_cpu_config_model() {
    for (div, bn) in [(8, false), (8, true), (16, true), (16, false)] {
        let o = options(div, bn);
        for id in cpu_models() {
            check_step(id, &o);
        }
    }
}

#[test]
fn fused_eval_pass_matches_candle_with_taps() {
    for (div, bn) in [(8, false), (16, true)] {
        let o = options(div, bn);
        for id in cpu_models() {
            let (fused, candle) = pair(id, &o);
            // Move the batch-norm statistics off their initial values first.
            let x = input(5, &o, 3);
            let labels = Tensor::from_vec(vec![1u32, 2, 3, 4, 5], 5, &Device::Cpu).unwrap();
            fused.train_step_ce(&x, &labels, &mut Rng::new(1)).unwrap();
            candle.train_step_ce(&x, &labels, &mut Rng::new(1)).unwrap();
            let block = fused.spec().blocks[1].name().to_string();
            let taps = Taps::of(std::slice::from_ref(&block));
            let a = fused.forward_taps(&x, Mode::Eval, &taps).unwrap();
            let b = candle.forward_taps(&x, Mode::Eval, &taps).unwrap();
            let what = format!("{id} ÷{div} bn={bn}");
            let e = rel_err(
                &values(a.logits.as_ref().unwrap()),
                &values(b.logits.as_ref().unwrap()),
                1e-3,
            );
            assert!(e < 1e-4, "{what}: eval logits differ by {e}");
            let (ta, tb) = (a.tap(&block).unwrap(), b.tap(&block).unwrap());
            assert_eq!(ta.dims(), tb.dims(), "{what}: tap {block}");
            let e = rel_err(&values(ta), &values(tb), 1e-3);
            assert!(e < 1e-4, "{what}: tap {block} differs by {e}");
            // Stopping early returns the tap and no logits on both paths.
            let until = Taps::until(std::slice::from_ref(&block));
            let a = fused.forward_taps(&x, Mode::Eval, &until).unwrap();
            assert!(a.logits.is_none() && a.taps.len() == 1, "{what}");
        }
    }
}

#[test]
fn fused_step_is_deterministic_and_rejects_bad_labels() {
    let o = options(16, true);
    let run = || {
        let m = Model::new(ModelConfig::new(ModelId::VGG19, o.clone()), 2, &Device::Cpu).unwrap();
        let x = input(4, &o, 9);
        let labels = Tensor::from_vec(vec![0u32, 1, 2, 3], 4, &Device::Cpu).unwrap();
        let s = m.train_step_ce(&x, &labels, &mut Rng::new(3)).unwrap();
        let g: Vec<Vec<f32>> = m
            .params()
            .iter()
            .map(|(_, v)| values(s.grads.get(v.as_tensor()).unwrap()))
            .collect();
        (s.loss, g)
    };
    let (l1, g1) = run();
    let (l2, g2) = run();
    assert_eq!(l1.to_bits(), l2.to_bits());
    assert_eq!(g1, g2);

    let m = Model::new(ModelConfig::new(ModelId::VGG19, o.clone()), 2, &Device::Cpu).unwrap();
    let x = input(2, &o, 9);
    let bad = Tensor::from_vec(vec![0u32, 10], 2, &Device::Cpu).unwrap();
    let err = m
        .train_step_ce(&x, &bad, &mut Rng::new(3))
        .unwrap_err()
        .to_string();
    assert!(err.contains("label 10 of image 1"), "{err}");
    let short = Tensor::from_vec(vec![0u32], 1, &Device::Cpu).unwrap();
    assert!(m.train_step_ce(&x, &short, &mut Rng::new(3)).is_err());
}

/// The fused hint step (`Σ (tap − target)²`, stopping at the tap) against candle's autograd, at
/// every block of every CPU-config model and at a layer tap: the loss, the gradients of the
/// parameters up to the tap, no gradient past it, and the batch-norm statistics.
#[test]
fn fused_hint_step_matches_candle_at_every_block() {
    for (div, bn) in [(8, false), (16, true)] {
        let o = options(div, bn);
        for id in cpu_models() {
            let probe = Model::new(ModelConfig::new(id, o.clone()), 7, &Device::Cpu).unwrap();
            let mut taps: Vec<String> = probe
                .spec()
                .blocks
                .iter()
                .map(|b| b.name().to_string())
                .collect();
            taps.push(format!("{}.{}", probe.spec().blocks[1].name(), {
                probe.spec().blocks[1]
                    .layers
                    .iter()
                    .find_map(|l| l.name().map(str::to_string))
                    .unwrap()
            }));
            for tap in taps {
                let (fused, candle) = pair(id, &o);
                let x = input(4, &o, 21);
                let shape = candle
                    .forward_taps(&x, Mode::Eval, &Taps::until(std::slice::from_ref(&tap)))
                    .unwrap()
                    .tap(&tap)
                    .unwrap()
                    .dims()
                    .to_vec();
                let n: usize = shape.iter().product();
                let target = Tensor::from_vec(
                    Rng::new(4).normal_vec(n, 0.0, 1.0),
                    &shape[..],
                    &Device::Cpu,
                )
                .unwrap();
                let a = fused
                    .train_step_hint(&x, &tap, &target, &mut Rng::new(6))
                    .unwrap();
                let b = candle
                    .train_step_hint(&x, &tap, &target, &mut Rng::new(6))
                    .unwrap();
                let what = format!("{id} ÷{div} bn={bn} tap {tap}");
                assert!(
                    (a.loss - b.loss).abs() <= 1e-4 * b.loss.abs().max(1.0),
                    "{what}: loss {} vs {}",
                    a.loss,
                    b.loss
                );
                let below: Vec<String> = fused
                    .params_up_to(&tap)
                    .unwrap()
                    .into_iter()
                    .map(|(n, _)| n)
                    .collect();
                for ((name, va), (_, vb)) in fused.params().iter().zip(candle.params()) {
                    let (ga, gb) = (a.grads.get(va.as_tensor()), b.grads.get(vb.as_tensor()));
                    if !below.contains(name) {
                        assert!(
                            ga.is_none() && gb.is_none(),
                            "{what}: gradient past the tap for {name}"
                        );
                        continue;
                    }
                    let (ga, gb) = (ga.unwrap(), gb.unwrap());
                    let floor = if bn && name.ends_with(".bias") && !name.contains(".bn") {
                        // A conv bias under batch norm: rounding noise around 0 (see above).
                        let w = fused.get(&name.replace(".bias", ".weight")).unwrap();
                        let gw = values(a.grads.get(w).unwrap());
                        gw.iter().fold(1e-6f32, |m, v| m.max(v.abs()))
                    } else {
                        1e-6
                    };
                    let e = rel_err(&values(ga), &values(gb), floor);
                    assert!(e < 2e-3, "{what}: gradient of {name} differs by {e}");
                }
                for ((name, ra), (_, rb)) in fused.buffers().iter().zip(candle.buffers()) {
                    let e = rel_err(&values(ra.as_tensor()), &values(rb.as_tensor()), 1e-6);
                    assert!(e < 1e-5, "{what}: running statistic {name} differs by {e}");
                }
            }
        }
    }
    // A target of the wrong size is refused.
    let o = options(16, true);
    let m = Model::new(ModelConfig::new(ModelId::VGG19, o.clone()), 7, &Device::Cpu).unwrap();
    let x = input(2, &o, 1);
    let bad = Tensor::zeros(3, candle_core::DType::F32, &Device::Cpu).unwrap();
    let err = m
        .train_step_hint(&x, "B2", &bad, &mut Rng::new(1))
        .unwrap_err()
        .to_string();
    assert!(err.contains("tap `B2`"), "{err}");
    assert!(m.train_step_hint(&x, "B9", &bad, &mut Rng::new(1)).is_err());
}

/// At paper width (3 input channels, full widths, no batch norm) the fused eval pass runs each
/// conv that a pool follows as one conv + ReLU + pool (SVGG5's first layer through im2col row
/// chunks, the Winograd layers in their output transform). Its logits match candle's, and are
/// the same bits as when a tap on the conv's output keeps that conv and its pool apart.
#[test]
fn fused_eval_pools_inside_the_conv_at_paper_width() {
    let o = ModelOptions {
        input_size: 32,
        ..ModelOptions::default()
    };
    assert!(!o.batch_norm && o.in_channels == 3 && o.width_div == 1);
    for id in [
        ModelId::parse("svgg5", pyramid_models::Scheme::Forward).unwrap(),
        ModelId::parse("vgg19", pyramid_models::Scheme::Forward).unwrap(),
    ] {
        let (fused, candle) = pair(id, &o);
        let x = input(2, &o, 4);
        let a = fused.forward(&x, Mode::Eval).unwrap();
        let b = candle.forward(&x, Mode::Eval).unwrap();
        let e = rel_err(&values(&a), &values(&b), 1e-3);
        assert!(e < 1e-4, "{id}: eval logits differ from candle's by {e}");
        // A tap on the first block's output (SVGG5: C11, the conv before K12's pool; VGG19:
        // B1, after its pool) changes nothing in the logits.
        let first = fused.spec().blocks[0].name().to_string();
        let taps = Taps::of(std::slice::from_ref(&first));
        let t = fused.forward_taps(&x, Mode::Eval, &taps).unwrap();
        assert_eq!(values(t.logits.as_ref().unwrap()), values(&a), "{id}");
        let tb = candle.forward_taps(&x, Mode::Eval, &taps).unwrap();
        let e = rel_err(
            &values(t.tap(&first).unwrap()),
            &values(tb.tap(&first).unwrap()),
            1e-3,
        );
        assert!(e < 1e-4, "{id}: tap {first} differs by {e}");
    }
}
