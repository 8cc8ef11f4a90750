mod common;
use candle_core::{DType, Device, Tensor, Var};
use common::*;
use proptest::prelude::*;
use pyramid_ops::{Backend, Isa};

fn check_pool(
    b: usize,
    c: usize,
    h: usize,
    w: usize,
    data: Vec<f32>,
    seed: u64,
) -> Result<(), String> {
    check_pool_with(b, c, h, w, data, seed, Isa::default())
}

fn check_pool_with(
    b: usize,
    c: usize,
    h: usize,
    w: usize,
    data: Vec<f32>,
    seed: u64,
    isa: Isa,
) -> Result<(), String> {
    let x = Var::from_vec(data.clone(), (b, c, h, w), &Device::Cpu).unwrap();
    let y = pyramid_ops::max_pool2x2_with(x.as_tensor(), Backend::Fast, isa).unwrap();
    let yc = x.as_tensor().max_pool2d(2).unwrap();
    if y.dims() != yc.dims() || rel_err(&y, &yc) != 0.0 {
        return Err(format!("forward differs from candle for {b}x{c}x{h}x{w}"));
    }
    let r = rand_tensor(y.dims(), seed);
    let g = (&y * &r).unwrap().sum_all().unwrap().backward().unwrap();
    let gx = g
        .get(x.as_tensor())
        .unwrap()
        .flatten_all()
        .unwrap()
        .to_vec1::<f32>()
        .unwrap();
    let gy = r.flatten_all().unwrap().to_vec1::<f32>().unwrap();
    let expect = ref_pool_grad(&data, &gy, b * c, h, w);
    if gx != expect {
        return Err(format!(
            "gradient differs from the PyTorch-semantics reference for {b}x{c}x{h}x{w}"
        ));
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, failure_persistence: None, ..ProptestConfig::default() })]
    #[test]
    fn pool_random(b in 1usize..=4, c in 1usize..=5, h in 2usize..=13, w in 2usize..=13, seed in any::<u64>()) {
        let data = rand_vec(b * c * h * w, seed);
        check_pool(b, c, h, w, data, seed ^ 5).map_err(TestCaseError::fail)?;
    }

    /// Rows of more than 16 windows (whole vector chunks and a tail), with the AVX-512 row
    /// kernels (where the CPU has them) and the portable ones.
    #[test]
    fn pool_wide_rows(b in 1usize..=2, c in 1usize..=3, h in 2usize..=5, w in 30usize..=70, seed in any::<u64>(), portable in any::<bool>()) {
        let isa = if portable { Isa::Portable } else { Isa::Detect };
        let data: Vec<f32> = rand_vec(b * c * h * w, seed).into_iter().map(|v| if v > 0.5 { 1.0 } else { v }).collect();
        check_pool_with(b, c, h, w, data, seed ^ 7, isa).map_err(TestCaseError::fail)?;
    }

    /// Values from {0, 1, 2}: many ties inside windows.
    #[test]
    fn pool_ties(b in 1usize..=3, c in 1usize..=3, h in 2usize..=9, w in 2usize..=9, seed in any::<u64>()) {
        let data: Vec<f32> = rand_vec(b * c * h * w, seed).into_iter().map(|v| ((v + 1.0) * 1.5).floor().min(2.0)).collect();
        check_pool(b, c, h, w, data, seed ^ 6).map_err(TestCaseError::fail)?;
    }
}

#[test]
fn pool_tie_goes_to_first_max() {
    // window [[5, 5], [5, 1]] -> gradient only on the top-left element (as PyTorch).
    let x = Var::from_vec(vec![5f32, 5., 5., 1.], (1, 1, 2, 2), &Device::Cpu).unwrap();
    let y = pyramid_ops::max_pool2x2(x.as_tensor(), Backend::Fast).unwrap();
    let g = y.sum_all().unwrap().backward().unwrap();
    let gx = g
        .get(x.as_tensor())
        .unwrap()
        .flatten_all()
        .unwrap()
        .to_vec1::<f32>()
        .unwrap();
    assert_eq!(gx, vec![1., 0., 0., 0.]);
}

#[test]
fn pool_odd_floor_mode_shapes() {
    let x = rand_tensor(&[2, 3, 7, 5], 1);
    let y = pyramid_ops::max_pool2x2(&x, Backend::Fast).unwrap();
    assert_eq!(y.dims(), &[2, 3, 3, 2]);
    let x = rand_tensor(&[1, 1, 3, 9], 2);
    assert_eq!(
        pyramid_ops::max_pool2x2(&x, Backend::Fast).unwrap().dims(),
        &[1, 1, 1, 4]
    );
    // like candle (and PyTorch), an empty output is an error
    assert!(pyramid_ops::max_pool2x2(&rand_tensor(&[1, 1, 1, 9], 2), Backend::Fast).is_err());
}

#[test]
fn pool_non_contiguous_input() {
    let base = Var::from_tensor(&rand_tensor(&[2, 3, 6, 8], 3)).unwrap();
    let x = base.as_tensor().transpose(2, 3).unwrap(); // [2,3,8,6] view
    let y = pyramid_ops::max_pool2x2(&x, Backend::Fast).unwrap();
    let yc = x.max_pool2d(2).unwrap();
    assert_eq!(rel_err(&y, &yc), 0.0);
    let g = y.sum_all().unwrap().backward().unwrap();
    let gx = g.get(base.as_tensor()).unwrap().transpose(2, 3).unwrap();
    let xc = x
        .contiguous()
        .unwrap()
        .flatten_all()
        .unwrap()
        .to_vec1::<f32>()
        .unwrap();
    let expect = ref_pool_grad(&xc, &vec![1.0; 2 * 3 * 4 * 3], 6, 8, 6);
    assert_eq!(gx.flatten_all().unwrap().to_vec1::<f32>().unwrap(), expect);
}

#[test]
fn pool_fallback_composite_f64() {
    // Backend::Fast with a non-f32 dtype uses the composite of candle ops; with distinct values
    // its gradient equals the reference.
    let data = rand_vec(2 * 2 * 5 * 7, 9);
    let x = Var::from_tensor(
        &Tensor::from_vec(data.clone(), (2, 2, 5, 7), &Device::Cpu)
            .unwrap()
            .to_dtype(DType::F64)
            .unwrap(),
    )
    .unwrap();
    let y = pyramid_ops::max_pool2x2(x.as_tensor(), Backend::Fast).unwrap();
    assert_eq!(y.dims(), &[2, 2, 2, 3]);
    let yc = x.as_tensor().max_pool2d(2).unwrap();
    assert_eq!(
        y.to_dtype(DType::F32)
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1::<f32>()
            .unwrap(),
        yc.to_dtype(DType::F32)
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1::<f32>()
            .unwrap()
    );
    let g = y.sum_all().unwrap().backward().unwrap();
    let gx = g
        .get(x.as_tensor())
        .unwrap()
        .to_dtype(DType::F32)
        .unwrap()
        .flatten_all()
        .unwrap()
        .to_vec1::<f32>()
        .unwrap();
    assert_eq!(gx, ref_pool_grad(&data, &[1.0; 24], 4, 5, 7));
}
