//! Reference values come from PyTorch 2.x in float64 (snippets pasted above each assertion).
//! Common setup of the snippets:
//! ```python
//! import torch, torch.nn.functional as F
//! d = torch.float64
//! s = torch.tensor([[1.,2.,3.],[1.,-1.,.5]], dtype=d); t = torch.tensor([[.5,2.5,1.],[2.,0.,-1.]], dtype=d)
//! y = torch.tensor([2, 0])
//! ```

use candle_core::{DType, Device, Tensor, Var};
use pyramid_losses::*;

const TOL: f64 = 1e-10;

fn dev() -> Device {
    Device::Cpu
}
fn student() -> Tensor {
    Tensor::new(&[[1f64, 2., 3.], [1., -1., 0.5]], &dev()).unwrap()
}
fn teacher() -> Tensor {
    Tensor::new(&[[0.5f64, 2.5, 1.], [2., 0., -1.]], &dev()).unwrap()
}
fn labels() -> Tensor {
    Tensor::new(&[2u32, 0], &dev()).unwrap()
}
fn scalar(t: &Tensor) -> f64 {
    t.to_dtype(DType::F64).unwrap().to_vec0::<f64>().unwrap()
}
fn assert_close(a: f64, b: f64, tol: f64) {
    assert!((a - b).abs() <= tol * b.abs().max(1.0), "{a} vs {b}");
}
fn assert_vec_close(a: &[f64], b: &[f64], tol: f64) {
    assert_eq!(a.len(), b.len());
    for (x, y) in a.iter().zip(b) {
        assert_close(*x, *y, tol);
    }
}
/// Gradient of `f(x)` w.r.t. `x`, flattened.
fn grad_of(x: &Tensor, f: impl Fn(&Tensor) -> Result<Tensor>) -> Vec<f64> {
    let v = Var::from_tensor(x).unwrap();
    let loss = f(v.as_tensor()).unwrap();
    let g = loss.backward().unwrap();
    g.get(v.as_tensor())
        .unwrap()
        .flatten_all()
        .unwrap()
        .to_dtype(DType::F64)
        .unwrap()
        .to_vec1()
        .unwrap()
}

#[test]
fn mse_sum_by_hand() {
    let a = Tensor::new(&[[1f32, 2.], [3., 4.]], &dev()).unwrap();
    let b = Tensor::new(&[[0.5f32, 2.5], [-1., 4.]], &dev()).unwrap();
    // 0.25 + 0.25 + 16 + 0
    assert_eq!(scalar(&mse_sum(&a, &b).unwrap()), 16.5);
    // d/da Σ(a−b)² = 2(a−b)
    let g = grad_of(&a, |a| mse_sum(a, &b));
    assert_eq!(g, vec![1.0, -1.0, 8.0, 0.0]);
}

#[test]
fn mse_sum_shape_mismatch_names_shapes() {
    let a = Tensor::zeros((2, 3), DType::F32, &dev()).unwrap();
    let b = Tensor::zeros((3, 2), DType::F32, &dev()).unwrap();
    let e = mse_sum(&a, &b).unwrap_err();
    assert!(matches!(e, LossError::ShapeMismatch { .. }));
    let msg = e.to_string();
    assert!(msg.contains("[2, 3]") && msg.contains("[3, 2]"), "{msg}");
}

#[test]
fn cross_entropy_matches_pytorch() {
    // F.cross_entropy(s, y).item()
    assert_close(
        scalar(&cross_entropy(&student(), &labels()).unwrap()),
        0.48128144204318557,
        TOL,
    );
    // s1 = s.clone().requires_grad_(); F.cross_entropy(s1, y).backward(); s1.grad.flatten().tolist()
    let g = grad_of(&student(), |s| cross_entropy(s, &labels()));
    assert_vec_close(
        &g,
        &[
            0.04501528658519022,
            0.12236423552739882,
            -0.1673795221125891,
            -0.21295150351615272,
            0.03884778957428529,
            0.1741037139418674,
        ],
        1e-9,
    );
}

#[test]
fn cross_entropy_is_stable_for_huge_logits() {
    let s = Tensor::new(&[[1000f32, 0.], [-1000., 1000.]], &dev()).unwrap();
    let l = scalar(&cross_entropy(&s, &Tensor::new(&[1u32, 1], &dev()).unwrap()).unwrap());
    // (1000 + 0) / 2
    assert_close(l, 500.0, 1e-6);
}

#[test]
fn cross_entropy_rejects_bad_labels() {
    let e = cross_entropy(&student(), &Tensor::new(&[1u32, 0, 2], &dev()).unwrap()).unwrap_err();
    assert!(matches!(e, LossError::BadShape { .. }));
    // class index out of range → candle's InvalidIndex, not a silent read
    let e = cross_entropy(&student(), &Tensor::new(&[3u32, 0], &dev()).unwrap()).unwrap_err();
    assert!(matches!(e, LossError::Candle(_)), "{e}");
}

#[test]
fn kd_kl_matches_pytorch() {
    // (F.kl_div(F.log_softmax(s/4,1), F.softmax(t/4,1), reduction="batchmean")*16).item()
    assert_close(
        scalar(&kd_kl(&student(), &teacher(), 4.0).unwrap()),
        0.5903223341387716,
        TOL,
    );
    // gradient w.r.t. s of the same expression
    let g = grad_of(&student(), |s| kd_kl(s, &teacher(), 4.0));
    assert_vec_close(
        &g,
        &[
            -0.02028852118232094,
            -0.2189163480440648,
            0.23920486922638573,
            -0.15852186802565948,
            -0.09614837319248226,
            0.25467024121814186,
        ],
        1e-9,
    );
    // KL(p‖p) = 0
    assert_close(
        scalar(&kd_kl(&student(), &student(), 2.0).unwrap()),
        0.0,
        1e-12,
    );
}

#[test]
fn dkd_matches_mdistiller() {
    // mdistiller's dkd_loss (mdistiller/distillers/DKD.py), float64:
    // def dkd_loss(ls, lt, target, alpha, beta, T):
    //     gt = torch.zeros_like(ls).scatter_(1, target.unsqueeze(1), 1).bool()
    //     other = torch.ones_like(ls).scatter_(1, target.unsqueeze(1), 0).bool()
    //     ps = F.softmax(ls/T,1); pt = F.softmax(lt/T,1)
    //     cm = lambda x: torch.cat([(x*gt).sum(1,keepdims=True),(x*other).sum(1,keepdims=True)],1)
    //     ps, pt = cm(ps), cm(pt)
    //     tckd = F.kl_div(torch.log(ps), pt, reduction="sum")*T**2/target.shape[0]
    //     pt2 = F.softmax(lt/T - 1000.0*gt, 1); lps2 = F.log_softmax(ls/T - 1000.0*gt, 1)
    //     nckd = F.kl_div(lps2, pt2, reduction="sum")*T**2/target.shape[0]
    //     return alpha*tckd + beta*nckd, tckd, nckd
    // dkd_loss(s, t, y, 1.0, 8.0, 4.0) -> 3.932252623109417, tckd 0.3468813710248768, nckd 0.4481714065105675
    let l = |a, b| scalar(&dkd(&student(), &teacher(), &labels(), a, b, 4.0).unwrap());
    assert_close(l(1.0, 8.0), 3.932252623109417, TOL);
    assert_close(l(1.0, 0.0), 0.3468813710248768, TOL);
    assert_close(l(0.0, 1.0), 0.4481714065105675, TOL);
    // s2 = s.clone().requires_grad_(); dkd_loss(s2,t,y,1.0,8.0,4.0)[0].backward(); s2.grad.flatten().tolist()
    let g = grad_of(&student(), |s| dkd(s, &teacher(), &labels(), 1.0, 8.0, 4.0));
    assert_vec_close(
        &g,
        &[
            0.8597957722070513,
            -1.099000641433439,
            0.23920486922638592,
            -0.15852186802565946,
            -2.4129183619533614,
            2.57144022997902,
        ],
        1e-8,
    );
}

fn at_inputs() -> (Tensor, Tensor) {
    let xs = Tensor::arange(0f64, 24., &dev())
        .unwrap()
        .reshape((2, 3, 2, 2))
        .unwrap()
        .sin()
        .unwrap();
    let xt = Tensor::arange(0f64, 40., &dev())
        .unwrap()
        .reshape((2, 5, 2, 2))
        .unwrap()
        .cos()
        .unwrap();
    (xs, xt)
}

#[test]
fn attention_transfer_matches_reference() {
    let (xs, xt) = at_inputs();
    // xs = torch.arange(24,dtype=d).reshape(2,3,2,2).sin(); xt = torch.arange(40,dtype=d).reshape(2,5,2,2).cos()
    // at = lambda x: F.normalize(x.pow(2).mean(1).view(x.size(0),-1))
    // (at(xs)-at(xt)).pow(2).sum(1).mean().item()   # authors' .mean() version = 0.010067658014566595 = this / 4
    let v = scalar(&attention_transfer(&xs, &xt).unwrap());
    assert_close(v, 0.04027063205826638, TOL);
    assert_close(v / 4.0, 0.010067658014566595, TOL);
    let g = grad_of(&xs, |x| attention_transfer(x, &xt));
    assert!(g.iter().all(|x| x.is_finite()) && g.iter().any(|x| *x != 0.0));
}

#[test]
fn gram_with_upsampling_matches_pytorch() {
    let f1 = Tensor::arange(0f64, 8., &dev())
        .unwrap()
        .reshape((1, 2, 2, 2))
        .unwrap();
    let f2 = Tensor::new(&[1f64, -2., 3.], &dev())
        .unwrap()
        .reshape((1, 3, 1, 1))
        .unwrap();
    // f1 = torch.arange(8,dtype=d).reshape(1,2,2,2); f2 = torch.tensor([1.,-2.,3.],dtype=d).reshape(1,3,1,1)
    // f2u = F.interpolate(f2, scale_factor=2, mode="nearest")
    // torch.bmm(f1.view(1,2,4), f2u.view(1,3,4).transpose(1,2))/4
    let g = gram(&f1, &f2).unwrap();
    assert_eq!(g.dims(), &[1, 2, 3]);
    let v: Vec<f64> = g.flatten_all().unwrap().to_vec1().unwrap();
    assert_eq!(v, vec![1.5, -3.0, 4.5, 5.5, -11.0, 16.5]);
}

#[test]
fn gram_of_all_ones_is_all_ones_and_has_pyramid_shape() {
    // docs/method.md §14 item 8: 64×96×96 with 128×48×48 → 64×128 (÷9216), all ones for constant maps.
    let f1 = Tensor::ones((2, 64, 96, 96), DType::F32, &dev()).unwrap();
    let f2 = Tensor::ones((2, 128, 48, 48), DType::F32, &dev()).unwrap();
    let g = gram(&f1, &f2).unwrap();
    assert_eq!(g.dims(), &[2, 64, 128]);
    let v: Vec<f32> = g.flatten_all().unwrap().to_vec1().unwrap();
    assert!(v.iter().all(|x| (*x - 1.0).abs() < 1e-6));
    // Other §14 item 8 shapes (no upsampling): 512×6×6 pair → 512×512.
    let a = Tensor::ones((1, 512, 6, 6), DType::F32, &dev()).unwrap();
    assert_eq!(gram(&a, &a).unwrap().dims(), &[1, 512, 512]);
    let a = Tensor::ones((1, 256, 12, 12), DType::F32, &dev()).unwrap();
    let b = Tensor::ones((1, 512, 12, 12), DType::F32, &dev()).unwrap();
    assert_eq!(gram(&a, &b).unwrap().dims(), &[1, 256, 512]);
}

#[test]
fn gram_rejects_unsupported_sizes() {
    let f1 = Tensor::ones((1, 2, 6, 6), DType::F32, &dev()).unwrap();
    // only one spatial side differs
    let f2 = Tensor::ones((1, 2, 6, 3), DType::F32, &dev()).unwrap();
    assert!(matches!(
        gram(&f1, &f2).unwrap_err(),
        LossError::ShapeMismatch { .. }
    ));
    // non-integer factor
    let f2 = Tensor::ones((1, 2, 4, 4), DType::F32, &dev()).unwrap();
    assert!(matches!(
        gram(&f1, &f2).unwrap_err(),
        LossError::NonIntegerUpsample { .. }
    ));
}

#[test]
fn gram_upsampling_x4_and_gradient() {
    // docs/method.md §7.10: 24×24 upsampled ×4 to 96×96; gradient w.r.t. the upsampled map is finite.
    let f1 = Tensor::randn(0f32, 1., (1, 4, 8, 8), &dev()).unwrap();
    let f2 = Tensor::randn(0f32, 1., (1, 3, 2, 2), &dev()).unwrap();
    let g = grad_of(&f2, |f2| {
        let t = Tensor::zeros((1, 4, 3), DType::F32, &dev())?;
        mse_sum(&gram(&f1, f2)?, &t)
    });
    assert_eq!(g.len(), 12);
    assert!(g.iter().all(|x| x.is_finite()) && g.iter().any(|x| *x != 0.0));
    // Gram of upsampled map equals Gram against the explicitly repeated map.
    let up = f2.upsample_nearest2d(8, 8).unwrap();
    let d = mse_sum(&gram(&f1, &f2).unwrap(), &gram(&f1, &up).unwrap()).unwrap();
    assert!(scalar(&d) < 1e-10);
}

#[test]
fn gram_loss_gradients_flow() {
    let s1 = Tensor::randn(0f32, 1., (2, 4, 6, 6), &dev()).unwrap();
    let s2 = Tensor::randn(0f32, 1., (2, 5, 3, 3), &dev()).unwrap();
    let t2 = Tensor::randn(0f32, 1., (2, 5, 3, 3), &dev()).unwrap();
    let g = grad_of(&s2, |x| gram_loss((&s1, x), (&s1, &t2)));
    assert!(g.iter().all(|x| x.is_finite()) && g.iter().any(|x| *x != 0.0));
}

#[test]
fn losses_backward_is_finite_in_f32() {
    let s = Tensor::randn(0f32, 5., (4, 10), &dev()).unwrap();
    let t = Tensor::randn(0f32, 5., (4, 10), &dev()).unwrap();
    let y = Tensor::new(&[0u32, 3, 9, 9], &dev()).unwrap();
    type LossFn<'a> = Box<dyn Fn(&Tensor) -> Result<Tensor> + 'a>;
    let fs: Vec<LossFn> = vec![
        Box::new(|x| cross_entropy(x, &y)),
        Box::new(|x| kd_kl(x, &t, 4.0)),
        Box::new(|x| logit_mse(x, &t)),
        Box::new(|x| dkd(x, &t, &y, 1.0, 8.0, 4.0)),
    ];
    for f in fs {
        let g = grad_of(&s, f);
        assert!(g.iter().all(|x| x.is_finite()));
    }
}

// ---------------------------------------------------------------- LossSpec

#[test]
fn spec_serde_and_needs() {
    let spec: LossSpec = serde_json::from_str(
        r#"{"kind":"sum","terms":[
            {"weight":1.0,"loss":{"kind":"cross_entropy"}},
            {"weight":0.5,"loss":{"kind":"dkd","alpha":1.0,"beta":8.0,"temperature":4.0}}]}"#,
    )
    .unwrap();
    assert!(spec.needs_teacher() && spec.needs_labels() && spec.needs_logits());
    assert!(!spec.needs_features() && !spec.needs_gram_pairs());
    let back: LossSpec = serde_json::from_str(&serde_json::to_string(&spec).unwrap()).unwrap();
    assert_eq!(back, spec);

    let hint: LossSpec = serde_json::from_str(r#"{"kind":"hint"}"#).unwrap();
    assert!(hint.needs_teacher() && !hint.needs_labels() && hint.needs_features());
    assert!(!LossSpec::CrossEntropy.needs_teacher());
    let kd = LossSpec::Kd {
        temperature: 4.0,
        alpha: 1.0,
    };
    assert!(!kd.needs_labels());
    // (serde ignores extra keys on unit variants of internally tagged enums; struct variants deny them)
    assert!(serde_json::from_str::<LossSpec>(
        r#"{"kind":"kd","temperature":4.0,"alpha":0.5,"extra":1}"#
    )
    .is_err());
    assert!(serde_json::from_str::<LossSpec>(r#"{"kind":"kd","temperature":4.0}"#).is_err());
    assert!(serde_json::from_str::<LossSpec>(r#"{"kind":"nope"}"#).is_err());
    assert!(LossSpec::Sum { terms: vec![] }.validate().is_err());
    assert!(LossSpec::Kd {
        temperature: 0.0,
        alpha: 0.5
    }
    .validate()
    .is_err());
}

#[test]
fn spec_evaluate_matches_functions() {
    let (s, t, y) = (student(), teacher(), labels());
    let inputs = LossInputs {
        student_logits: Some(&s),
        teacher_logits: Some(&t),
        labels: Some(&y),
        ..Default::default()
    };
    let kd = LossSpec::Kd {
        temperature: 4.0,
        alpha: 0.9,
    };
    // 0.9·0.5903223341387716 + 0.1·0.48128144204318557
    assert_close(
        scalar(&kd.evaluate(&inputs).unwrap()),
        0.9 * 0.5903223341387716 + 0.1 * 0.48128144204318557,
        TOL,
    );
    let sum = LossSpec::Sum {
        terms: vec![
            Weighted {
                weight: 2.0,
                loss: LossSpec::LogitMse,
            },
            Weighted {
                weight: 1.0,
                loss: LossSpec::CrossEntropy,
            },
        ],
    };
    let expect = 2.0 * scalar(&mse_sum(&s, &t).unwrap()) + 0.48128144204318557;
    assert_close(scalar(&sum.evaluate(&inputs).unwrap()), expect, TOL);
    // Teacher tensors are detached: no gradient reaches the teacher.
    let tv = Var::from_tensor(&t).unwrap();
    let sv = Var::from_tensor(&s).unwrap();
    let inputs = LossInputs {
        student_logits: Some(sv.as_tensor()),
        teacher_logits: Some(tv.as_tensor()),
        ..Default::default()
    };
    let grads = LossSpec::LogitMse
        .evaluate(&inputs)
        .unwrap()
        .backward()
        .unwrap();
    assert!(grads.get(sv.as_tensor()).is_some());
    assert!(grads.get(tv.as_tensor()).is_none());
    // Missing input is a typed error.
    let e = LossSpec::Hint.evaluate(&inputs).unwrap_err();
    assert!(matches!(e, LossError::MissingInput { loss: "hint", .. }));
}

#[test]
fn spec_gram_sums_pairs() {
    let a = Tensor::ones((1, 2, 4, 4), DType::F32, &dev()).unwrap();
    let b = Tensor::ones((1, 3, 2, 2), DType::F32, &dev()).unwrap();
    let z = Tensor::zeros((1, 3, 2, 2), DType::F32, &dev()).unwrap();
    let s = vec![(a.clone(), b.clone()), (a.clone(), b.clone())];
    let t = vec![(a.clone(), z.clone()), (a.clone(), b.clone())];
    let inputs = LossInputs {
        student_gram_pairs: &s,
        teacher_gram_pairs: &t,
        ..Default::default()
    };
    // first pair: all-ones 2×3 Gram vs zeros → 6; second pair: 0.
    assert_eq!(scalar(&LossSpec::Gram.evaluate(&inputs).unwrap()), 6.0);
    let inputs = LossInputs {
        student_gram_pairs: &s,
        teacher_gram_pairs: &t[..1],
        ..Default::default()
    };
    assert!(matches!(
        LossSpec::Gram.evaluate(&inputs).unwrap_err(),
        LossError::GramPairCount { .. }
    ));
}

#[test]
fn spec_attention_transfer_uses_beta_over_two() {
    let (xs, xt) = at_inputs();
    let inputs = LossInputs {
        student_features: Some(&xs),
        teacher_features: Some(&xt),
        ..Default::default()
    };
    let v = scalar(
        &LossSpec::AttentionTransfer { beta: 1000.0 }
            .evaluate(&inputs)
            .unwrap(),
    );
    assert_close(v, 500.0 * 0.04027063205826638, TOL);
}
