//! Optimiser tests against PyTorch (2.x, float64) and the PyTorch 0.2 Adam formula of docs/method.md §8.1.
//! Common setup of the Python snippets:
//! ```python
//! import torch, math
//! d = torch.float64
//! theta0 = torch.tensor([1.0, -2.0, 3.0, 0.5], dtype=d); target = torch.tensor([0.5, 0.5, -1.0, 2.0], dtype=d)
//! def grad(th): return 2*(th-target)   # loss = ((θ-target)**2).sum()
//! def torch_opt(make, steps=3):
//!     p = theta0.clone().requires_grad_(); opt = make([p]); out=[]
//!     for _ in range(steps):
//!         opt.zero_grad(); ((p-target)**2).sum().backward(); opt.step(); out.append(p.detach().clone().tolist())
//!     return out
//! ```

use candle_core::{DType, Device, Tensor, Var};
use pyramid_train::optim::*;

fn theta0() -> Var {
    Var::new(&[1.0f64, -2.0, 3.0, 0.5], &Device::Cpu).unwrap()
}
fn target() -> Tensor {
    Tensor::new(&[0.5f64, 0.5, -1.0, 2.0], &Device::Cpu).unwrap()
}
fn values(v: &Var) -> Vec<f64> {
    v.as_tensor()
        .to_dtype(DType::F64)
        .unwrap()
        .to_vec1()
        .unwrap()
}
fn group(params: Vec<(&str, Var)>, lr: f64, wd: f64) -> Vec<ParamGroup> {
    vec![ParamGroup {
        name: "all".into(),
        params: params
            .into_iter()
            .map(|(n, v)| (n.to_string(), v))
            .collect(),
        lr,
        weight_decay: wd,
    }]
}
/// One step on loss = Σ(θ − target)².
fn step(opt: &mut dyn Optimizer, p: &Var) {
    let loss = (p.as_tensor() - target())
        .unwrap()
        .sqr()
        .unwrap()
        .sum_all()
        .unwrap();
    opt.step(&loss.backward().unwrap()).unwrap();
}
fn run(opt: &mut dyn Optimizer, p: &Var, expected: &[[f64; 4]], tol: f64) {
    for (k, e) in expected.iter().enumerate() {
        step(opt, p);
        let got = values(p);
        for (g, x) in got.iter().zip(e) {
            assert!((g - x).abs() <= tol, "step {}: {got:?} vs {e:?}", k + 1);
        }
    }
}

// def adam02(lr=0.1, b1=0.9, b2=0.999, eps=1e-3, wd=0.1, steps=3):
//     th = theta0.clone(); m = torch.zeros_like(th); v = torch.zeros_like(th); out=[]
//     for t in range(1, steps+1):
//         g = grad(th) + wd*th
//         m = b1*m + (1-b1)*g; v = b2*v + (1-b2)*g*g
//         step = lr*math.sqrt(1-b2**t)/(1-b1**t)
//         th = th - step*m/(v.sqrt()+eps); out.append(th.tolist())
//     return out
const ADAM02: [[f64; 4]; 3] = [
    [
        0.9027944627181019,
        -1.9006044544484957,
        2.900379551228489,
        0.5989394105501928,
    ],
    [
        0.8060021375993385,
        -1.8011685401135484,
        2.8007261742849336,
        0.6979054714285553,
    ],
    [
        0.7111352141744322,
        -1.7018802853162878,
        2.701152775511623,
        0.7965335629304648,
    ],
];

#[test]
fn adam_matches_pytorch_0_2_formula_with_coupled_decay() {
    // eps = 1e-3 makes the eps placement visible: modern torch.optim.Adam (eps after bias
    // correction) gives [0.9000908265213442, ...] at step 1, not ADAM02.
    let p = theta0();
    let params = AdamParams {
        beta1: 0.9,
        beta2: 0.999,
        eps: 1e-3,
    };
    let mut opt = Adam::new(group(vec![("p", p.clone())], 0.1, 0.1), params).unwrap();
    run(&mut opt, &p, &ADAM02, 1e-12);
    assert_eq!(opt.param_step("p"), 3);
}

#[test]
fn adam_f32_close_to_reference() {
    let p = Var::new(&[1.0f32, -2.0, 3.0, 0.5], &Device::Cpu).unwrap();
    let params = AdamParams {
        beta1: 0.9,
        beta2: 0.999,
        eps: 1e-3,
    };
    let mut opt = Adam::new(group(vec![("p", p.clone())], 0.1, 0.1), params).unwrap();
    let t = target().to_dtype(DType::F32).unwrap();
    for e in ADAM02 {
        let loss = (p.as_tensor() - &t)
            .unwrap()
            .sqr()
            .unwrap()
            .sum_all()
            .unwrap();
        opt.step(&loss.backward().unwrap()).unwrap();
        for (g, x) in values(&p).iter().zip(e) {
            assert!((g - x).abs() < 1e-5);
        }
    }
}

#[test]
fn params_without_gradient_are_untouched_bit_for_bit() {
    // docs/method.md §8.1: layers after C get no gradient in stage 1 and must not move (no decay).
    let used = theta0();
    let idle = Var::new(&[0.1234567f32, -1e-3, 7.0], &Device::Cpu).unwrap();
    let before: Vec<u32> = idle
        .as_tensor()
        .to_vec1::<f32>()
        .unwrap()
        .iter()
        .map(|x| x.to_bits())
        .collect();
    let mut opt = Adam::new(
        group(
            vec![("used", used.clone()), ("idle", idle.clone())],
            0.1,
            5e-4,
        ),
        AdamParams::default(),
    )
    .unwrap();
    for _ in 0..5 {
        step(&mut opt, &used);
    }
    let after: Vec<u32> = idle
        .as_tensor()
        .to_vec1::<f32>()
        .unwrap()
        .iter()
        .map(|x| x.to_bits())
        .collect();
    assert_eq!(before, after);
    assert_eq!(opt.param_step("idle"), 0);
    assert_eq!(opt.param_step("used"), 5);
    let st = opt.state().unwrap();
    assert!(!st.meta.steps.contains_key("idle"));
    assert!(!st.tensors.keys().any(|k| k.starts_with("idle/")));
}

#[test]
fn adamw_matches_pytorch() {
    // torch_opt(lambda ps: torch.optim.AdamW(ps, lr=0.1, eps=1e-3, weight_decay=0.1))
    let expected = [
        [
            0.8900999000999,
            -1.8800199960008,
            2.870012498437695,
            0.5949666777740753,
        ],
        [
            0.7827013040154209,
            -1.7613985884810686,
            2.7414247949793156,
            0.6887589713974299,
        ],
        [
            0.6793558618135682,
            -1.6442368302217358,
            2.6142924617587364,
            0.781220480773925,
        ],
    ];
    let p = theta0();
    let params = AdamWParams {
        beta1: 0.9,
        beta2: 0.999,
        eps: 1e-3,
    };
    let mut opt = AdamW::new(group(vec![("p", p.clone())], 0.1, 0.1), params).unwrap();
    run(&mut opt, &p, &expected, 1e-12);
}

#[test]
fn sgd_momentum_dampening_matches_pytorch() {
    // torch_opt(lambda ps: torch.optim.SGD(ps, lr=0.1, momentum=0.9, dampening=0.5, weight_decay=0.1))
    let expected = [
        [0.89, -1.48, 2.17, 0.795],
        [0.74755, -0.8066, 1.0951499999999998, 1.1770250000000002],
        [
            0.5908522500000001,
            -0.06584699999999999,
            -0.08720575000000019,
            1.5972598750000002,
        ],
    ];
    let p = theta0();
    let params = SgdParams {
        momentum: 0.9,
        dampening: 0.5,
        nesterov: false,
    };
    let mut opt = Sgd::new(group(vec![("p", p.clone())], 0.1, 0.1), params).unwrap();
    run(&mut opt, &p, &expected, 1e-12);
}

#[test]
fn sgd_nesterov_matches_pytorch() {
    // torch_opt(lambda ps: torch.optim.SGD(ps, lr=0.1, momentum=0.9, nesterov=True, weight_decay=0.1))
    let expected = [
        [
            0.7909999999999999,
            -1.0119999999999998,
            1.4229999999999998,
            1.0605,
        ],
        [
            0.5762909999999999,
            0.002988000000000225,
            -0.19707700000000047,
            1.6363105,
        ],
        [
            0.4026117909999999,
            0.8240169880000002,
            -1.5075655770000005,
            2.1020865605,
        ],
    ];
    let p = theta0();
    let params = SgdParams {
        momentum: 0.9,
        dampening: 0.0,
        nesterov: true,
    };
    let mut opt = Sgd::new(group(vec![("p", p.clone())], 0.1, 0.1), params).unwrap();
    run(&mut opt, &p, &expected, 1e-12);
}

#[test]
fn sgd_plain_matches_pytorch() {
    // torch_opt(lambda ps: torch.optim.SGD(ps, lr=0.1))
    let expected = [
        [0.9, -1.5, 2.2, 0.8],
        [0.8200000000000001, -1.1, 1.56, 1.04],
        [0.756, -0.78, 1.048, 1.232],
    ];
    let p = theta0();
    let mut opt = Sgd::new(
        group(vec![("p", p.clone())], 0.1, 0.0),
        SgdParams::default(),
    )
    .unwrap();
    run(&mut opt, &p, &expected, 1e-12);
    assert!(opt.state().unwrap().tensors.is_empty());
}

#[test]
fn state_save_load_round_trip_continues_identically() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("opt.safetensors");
    let cfg = OptimizerConfig::Adam(AdamConfig {
        lr: 0.05,
        ..AdamConfig::default()
    });
    let a = theta0();
    let mut opt_a = cfg
        .build(vec![("g".into(), vec![("p".into(), a.clone())])])
        .unwrap();
    for _ in 0..2 {
        step(opt_a.as_mut(), &a);
    }
    opt_a.set_lr(0, 0.02);
    opt_a.save(&path).unwrap();

    // A fresh optimiser over a copy of the weights, restored from disk.
    let b = Var::from_tensor(&a.as_tensor().copy().unwrap()).unwrap();
    let mut opt_b = cfg
        .build(vec![("g".into(), vec![("p".into(), b.clone())])])
        .unwrap();
    opt_b.load(&path, &Device::Cpu).unwrap();
    assert_eq!(opt_b.lr(0), 0.02);
    for _ in 0..3 {
        step(opt_a.as_mut(), &a);
        step(opt_b.as_mut(), &b);
        assert_eq!(values(&a), values(&b));
    }
    let loaded = OptimizerState::load(&path, &Device::Cpu).unwrap();
    assert_eq!(loaded.meta.steps["p"], 2);
    assert_eq!(loaded.meta.kind, "adam");

    // Wrong kind / unknown parameter are typed errors.
    let mut sgd = OptimizerConfig::Sgd(SgdConfig::default())
        .build(vec![("g".into(), vec![("p".into(), b.clone())])])
        .unwrap();
    assert!(sgd.load(&path, &Device::Cpu).is_err());
    let mut other = cfg
        .build(vec![("g".into(), vec![("q".into(), b.clone())])])
        .unwrap();
    assert!(other.load(&path, &Device::Cpu).is_err());
}

#[test]
fn config_serde_defaults_and_group_overrides() {
    let cfg: OptimizerConfig = serde_json::from_str(r#"{"kind":"adam"}"#).unwrap();
    assert_eq!(
        cfg,
        OptimizerConfig::Adam(AdamConfig {
            lr: 1e-4,
            betas: (0.9, 0.999),
            eps: 1e-8,
            weight_decay: 5e-4,
            groups: Default::default()
        })
    );
    // Conv trunk 1e-4, head 1e-3 (docs/method.md §13 B11).
    let cfg: OptimizerConfig =
        serde_json::from_str(r#"{"kind":"adam","lr":1e-4,"groups":{"head":{"lr":1e-3}}}"#).unwrap();
    let trunk = Var::new(&[1f32], &Device::Cpu).unwrap();
    let head = Var::new(&[1f32], &Device::Cpu).unwrap();
    let named = vec![
        ("features".to_string(), vec![("f.w".to_string(), trunk)]),
        ("head".to_string(), vec![("h.w".to_string(), head)]),
    ];
    let mut opt = cfg.build(named.clone()).unwrap();
    assert_eq!(opt.lrs(), vec![1e-4, 1e-3]);
    assert_eq!(opt.group_name(1), "head");
    opt.scale_lr(0.1);
    assert!((opt.lr(1) - 1e-4).abs() < 1e-18);

    let bad: OptimizerConfig =
        serde_json::from_str(r#"{"kind":"adam","groups":{"hed":{"lr":1e-3}}}"#).unwrap();
    assert!(bad.build(named.clone()).is_err());
    assert!(serde_json::from_str::<OptimizerConfig>(r#"{"kind":"adam","lr_":1}"#).is_err());
    let sgd: OptimizerConfig =
        serde_json::from_str(r#"{"kind":"sgd","lr":0.1,"momentum":0.9,"nesterov":true}"#).unwrap();
    assert_eq!(sgd.build(named.clone()).unwrap().kind(), "sgd");
    let bad: OptimizerConfig = serde_json::from_str(r#"{"kind":"sgd","nesterov":true}"#).unwrap();
    assert!(bad.build(named.clone()).is_err());
    let adamw: OptimizerConfig = serde_json::from_str(r#"{"kind":"adamw"}"#).unwrap();
    assert_eq!(adamw.build(named).unwrap().kind(), "adamw");
}

#[test]
fn duplicate_parameter_names_rejected() {
    let v = Var::new(&[1f32], &Device::Cpu).unwrap();
    let r = Adam::new(
        group(vec![("x", v.clone()), ("x", v)], 0.1, 0.0),
        AdamParams::default(),
    );
    assert!(r.is_err());
}

#[test]
fn clip_grad_norm_scales_like_pytorch() {
    let p = Var::new(&[3f64, 4.0], &Device::Cpu).unwrap();
    // loss = Σ p² / 2 → grad = p, norm 5
    let loss = (p.as_tensor().sqr().unwrap().sum_all().unwrap() * 0.5).unwrap();
    let mut grads = loss.backward().unwrap();
    let n = clip_grad_norm(&mut grads, std::slice::from_ref(&p), 1.0).unwrap();
    assert!((n - 5.0).abs() < 1e-12);
    let g: Vec<f64> = grads.get(p.as_tensor()).unwrap().to_vec1().unwrap();
    // torch: coef = 1 / (5 + 1e-6)
    let c = 1.0 / (5.0 + 1e-6);
    assert!((g[0] - 3.0 * c).abs() < 1e-12 && (g[1] - 4.0 * c).abs() < 1e-12);
}

/// The fused in-place CPU path (f32) gives bit-for-bit what the tensor formula gives, for
/// Adam and AdamW, with and without weight decay, over a parameter spanning several chunks;
/// and a state taken mid-run is a copy that later in-place steps do not change.
#[test]
fn fused_cpu_path_is_bit_identical_to_the_tensor_formula() {
    let n = 200_003;
    let dev = Device::Cpu;
    let theta: Vec<f32> = (0..n)
        .map(|i| ((i * 7919) % 1000) as f32 / 250.0 - 2.0)
        .collect();
    let grads: Vec<Tensor> = (0..5)
        .map(|s| {
            let g: Vec<f32> = (0..n)
                .map(|i| (((i + 31 * s) * 104729) % 2001) as f32 / 1000.0 - 1.0)
                .collect();
            Tensor::from_vec(g, n, &dev).unwrap()
        })
        .collect();
    for wd in [0.0, 5e-4] {
        for adamw in [false, true] {
            let var = Var::from_vec(theta.clone(), n, &dev).unwrap();
            let cfg = if adamw {
                OptimizerConfig::AdamW(AdamConfig {
                    lr: 1e-2,
                    weight_decay: wd,
                    ..AdamConfig::default()
                })
            } else {
                OptimizerConfig::Adam(AdamConfig {
                    lr: 1e-2,
                    weight_decay: wd,
                    ..AdamConfig::default()
                })
            };
            let mut opt = cfg
                .build(vec![("g".into(), vec![("p".into(), var.clone())])])
                .unwrap();
            // The reference: the rule's tensor formula, step by step.
            let mut reference = Tensor::from_vec(theta.clone(), n, &dev).unwrap();
            let mut buffers: Vec<Option<Tensor>> = vec![None, None];
            let mut mid_state = None;
            for (k, g) in grads.iter().enumerate() {
                // A loss whose gradient w.r.t. θ is exactly g.
                let loss = (var.as_tensor() * g).unwrap().sum_all().unwrap();
                opt.step(&loss.backward().unwrap()).unwrap();
                let step = k as u64 + 1;
                reference = if adamw {
                    AdamWParams::default()
                        .update(&reference, g, step, 1e-2, wd, &mut buffers)
                        .unwrap()
                } else {
                    AdamParams::default()
                        .update(&reference, g, step, 1e-2, wd, &mut buffers)
                        .unwrap()
                };
                let got: Vec<f32> = var.as_tensor().to_vec1().unwrap();
                let want: Vec<f32> = reference.to_vec1().unwrap();
                assert!(
                    got.iter()
                        .zip(&want)
                        .all(|(a, b)| a.to_bits() == b.to_bits()),
                    "adamw={adamw} wd={wd} step {step}: fused and tensor paths differ"
                );
                if k == 1 {
                    mid_state = Some(opt.state().unwrap());
                }
            }
            let mid = mid_state.unwrap();
            let m_mid: Vec<f32> = mid.tensors["p/exp_avg"].to_vec1().unwrap();
            let m_now: Vec<f32> = opt.state().unwrap().tensors["p/exp_avg"].to_vec1().unwrap();
            assert_ne!(m_mid, m_now, "the saved state aliases the live buffer");
        }
    }
}

#[test]
fn config_validate_refuses_bad_rates() {
    let err = |json: &str| {
        let cfg: OptimizerConfig = serde_json::from_str(json).unwrap();
        cfg.validate().unwrap_err().to_string()
    };
    assert!(
        err(r#"{"kind":"adam","lr":-0.001}"#).contains("lr must be finite and >= 0, got -0.001")
    );
    assert!(err(r#"{"kind":"sgd","lr":-1}"#).contains("lr must be finite and >= 0, got -1"));
    assert!(err(r#"{"kind":"adamw","weight_decay":-0.5}"#)
        .contains("weight_decay must be finite and >= 0, got -0.5"));
    assert!(err(r#"{"kind":"adam","groups":{"head":{"lr":-0.001}}}"#)
        .contains("groups.head.lr must be finite and >= 0, got -0.001"));
    assert!(
        err(r#"{"kind":"sgd","groups":{"head":{"weight_decay":-2}}}"#)
            .contains("groups.head.weight_decay must be finite and >= 0, got -2")
    );

    // NaN / infinity cannot come from JSON; build them directly.
    for bad in [f64::NAN, f64::INFINITY, f64::NEG_INFINITY] {
        let cfg = OptimizerConfig::Adam(AdamConfig {
            lr: bad,
            ..AdamConfig::default()
        });
        assert!(cfg
            .validate()
            .unwrap_err()
            .to_string()
            .contains("lr must be finite"));
        let cfg = OptimizerConfig::Sgd(SgdConfig {
            weight_decay: bad,
            ..SgdConfig::default()
        });
        assert!(cfg
            .validate()
            .unwrap_err()
            .to_string()
            .contains("weight_decay must be finite"));
        let mut groups = std::collections::BTreeMap::new();
        groups.insert(
            "head".to_string(),
            GroupOverride {
                lr: Some(bad),
                weight_decay: None,
            },
        );
        let cfg = OptimizerConfig::AdamW(AdamConfig {
            groups,
            ..AdamConfig::default()
        });
        assert!(cfg
            .validate()
            .unwrap_err()
            .to_string()
            .contains("groups.head.lr must be finite"));
    }

    // `build` refuses them too, before touching any parameter.
    let cfg: OptimizerConfig = serde_json::from_str(r#"{"kind":"adam","lr":-0.001}"#).unwrap();
    assert!(cfg
        .build(vec![("g".into(), vec![("p".into(), theta0())])])
        .is_err());

    // lr = 0 (and weight decay 0) is allowed, config-wide and per group.
    for json in [
        r#"{"kind":"adam","lr":0}"#,
        r#"{"kind":"sgd","lr":0,"weight_decay":0}"#,
        r#"{"kind":"adamw","groups":{"head":{"lr":0,"weight_decay":0}}}"#,
    ] {
        let cfg: OptimizerConfig = serde_json::from_str(json).unwrap();
        cfg.validate().unwrap();
    }
}
