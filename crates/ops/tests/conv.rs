mod common;
use common::*;
use proptest::prelude::*;

proptest! {
    #![proptest_config(ProptestConfig { cases: 96, failure_persistence: None, ..ProptestConfig::default() })]
    #[test]
    fn conv_matches_candle(c in case_strategy()) {
        check_conv(&c).map_err(TestCaseError::fail)?;
    }
}

#[test]
fn vgg_like_layer() {
    for (k, s, p, relu) in [
        (3, 1, 1, true),
        (3, 1, 1, false),
        (1, 1, 0, true),
        (3, 2, 1, false),
    ] {
        let c = Case {
            b: 3,
            c: 32,
            h: 20,
            w: 20,
            o: 48,
            k,
            s,
            p,
            bias: true,
            relu,
            seed: 7,
        };
        check_conv(&c).unwrap();
    }
}

#[test]
fn non_contiguous_inputs() {
    use candle_core::Var;
    use pyramid_ops::Backend;
    // x is a transposed view, w a narrowed view.
    let xt = Var::from_tensor(&rand_tensor(&[2, 3, 7, 9], 11)).unwrap();
    let wb = Var::from_tensor(&rand_tensor(&[6, 3, 3, 3], 12)).unwrap();
    let b = Var::from_tensor(&rand_tensor(&[4], 13)).unwrap();
    let mut res = vec![];
    for backend in [Backend::Fast, Backend::Candle] {
        let x = xt.as_tensor().transpose(2, 3).unwrap();
        let w = wb.as_tensor().narrow(0, 1, 4).unwrap();
        let y = pyramid_ops::conv2d_relu(&x, &w, Some(b.as_tensor()), 1, 1, backend).unwrap();
        let r = rand_tensor(y.dims(), 14);
        let g = (&y * &r).unwrap().sum_all().unwrap().backward().unwrap();
        res.push((
            y,
            g.get(xt.as_tensor()).unwrap().clone(),
            g.get(wb.as_tensor()).unwrap().clone(),
            g.get(b.as_tensor()).unwrap().clone(),
        ));
    }
    assert!(rel_err(&res[0].0, &res[1].0) < 1e-4);
    assert!(rel_err(&res[0].1, &res[1].1) < 1e-4);
    assert!(rel_err(&res[0].2, &res[1].2) < 1e-4);
    assert!(rel_err(&res[0].3, &res[1].3) < 1e-4);
}

#[test]
fn frozen_weights_only_input_grad() {
    use candle_core::Var;
    use pyramid_ops::Backend;
    // w and b are plain tensors (not tracked): only the input gradient is needed.
    let x = Var::from_tensor(&rand_tensor(&[2, 4, 6, 6], 21)).unwrap();
    let w = rand_tensor(&[5, 4, 3, 3], 22);
    let b = rand_tensor(&[5], 23);
    let gx: Vec<_> = [Backend::Fast, Backend::Candle]
        .into_iter()
        .map(|be| {
            let y = pyramid_ops::conv2d_relu(x.as_tensor(), &w, Some(&b), 1, 1, be).unwrap();
            let g = y.sqr().unwrap().sum_all().unwrap().backward().unwrap();
            if be == Backend::Fast {
                assert!(g.get(&w).is_none());
            }
            g.get(x.as_tensor()).unwrap().clone()
        })
        .collect();
    assert!(rel_err(&gx[0], &gx[1]) < 1e-4);
}

#[test]
fn fallback_for_other_dtypes() {
    use candle_core::DType;
    use pyramid_ops::Backend;
    let x = rand_tensor(&[1, 2, 5, 5], 31).to_dtype(DType::F64).unwrap();
    let w = rand_tensor(&[3, 2, 3, 3], 32).to_dtype(DType::F64).unwrap();
    let y = pyramid_ops::conv2d(&x, &w, None, 1, 1, Backend::Fast).unwrap();
    let r = x.conv2d(&w, 1, 1, 1, 1).unwrap();
    assert_eq!(y.dtype(), DType::F64);
    let d = (y - r)
        .unwrap()
        .abs()
        .unwrap()
        .max_all()
        .unwrap()
        .to_scalar::<f64>()
        .unwrap();
    assert!(d < 1e-12);
}
