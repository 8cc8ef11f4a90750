//! The fused batch norm matches the same maths built from candle ops, forward and backward.

use candle_core::{Device, Tensor, Var};
use pyramid_ops::{batch_norm_train, Backend};

fn rand(shape: &[usize], seed: u64) -> Tensor {
    let n: usize = shape.iter().product();
    let mut s = seed;
    let v: Vec<f32> = (0..n)
        .map(|_| {
            s = s
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            ((s >> 33) as f32 / (1u64 << 31) as f32) * 2.0 - 1.0
        })
        .collect();
    Tensor::from_vec(v, shape, &Device::Cpu).unwrap()
}

fn max_rel(a: &Tensor, b: &Tensor) -> f32 {
    let a: Vec<f32> = a.flatten_all().unwrap().to_vec1().unwrap();
    let b: Vec<f32> = b.flatten_all().unwrap().to_vec1().unwrap();
    let scale = b.iter().fold(0f32, |m, v| m.max(v.abs())).max(1e-6);
    a.iter()
        .zip(&b)
        .fold(0f32, |m, (x, y)| m.max((x - y).abs() / scale))
}

#[test]
fn fused_batch_norm_matches_candle_ops() {
    for (shape, seed) in [
        ([4usize, 3, 5, 7], 1u64),
        ([2, 8, 6, 6], 2),
        ([1, 2, 3, 1], 3),
    ] {
        let x = Var::from_tensor(
            &(rand(&shape, seed) * 3.0)
                .unwrap()
                .affine(1.0, 0.5)
                .unwrap(),
        )
        .unwrap();
        let g = Var::from_tensor(&rand(&[shape[1]], seed + 10).affine(1.0, 1.5).unwrap()).unwrap();
        let b = Var::from_tensor(&rand(&[shape[1]], seed + 20)).unwrap();
        let w = rand(&shape, seed + 30);
        let mut outs = Vec::new();
        for backend in [Backend::Fast, Backend::Candle] {
            let (y, mean, var) = batch_norm_train(&x, &g, &b, 1e-5, backend).unwrap();
            let loss = (y.clone() * &w).unwrap().sum_all().unwrap();
            let grads = loss.backward().unwrap();
            outs.push((
                y,
                mean,
                var,
                grads.get(&x).unwrap().clone(),
                grads.get(&g).unwrap().clone(),
                grads.get(&b).unwrap().clone(),
            ));
        }
        let (f, c) = (&outs[0], &outs[1]);
        assert!(max_rel(&f.0, &c.0) < 1e-5, "y {shape:?}");
        assert!(max_rel(&f.1, &c.1) < 1e-5, "mean");
        assert!(max_rel(&f.2, &c.2) < 1e-5, "var");
        assert!(
            max_rel(&f.3, &c.3) < 1e-4,
            "dx {shape:?}: {}",
            max_rel(&f.3, &c.3)
        );
        assert!(max_rel(&f.4, &c.4) < 1e-4, "dgamma");
        assert!(max_rel(&f.5, &c.5) < 1e-4, "dbeta");
    }
}
