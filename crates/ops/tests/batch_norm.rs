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

/// The slice kernels of the fused training step (`pyramid_ops::slices`): one-pass shifted
/// statistics against an f64 two-pass reference, also far from zero (mean 1000, std 0.01, where
/// E[x²] − E[x]² without a shift loses every digit in f32), and `relu(batch_norm)`'s backward
/// against candle's autograd through the same maths.
#[test]
fn slice_batch_norm_matches_references() {
    use pyramid_ops::slices::{
        batch_norm_affine, batch_norm_relu_backward, channel_affine, channel_stats,
    };
    for (shape, offset, scale) in [
        ([6usize, 3, 5, 7], 0.5f32, 3.0f32),
        ([4, 5, 4, 4], 1000.0, 0.01),
        ([3, 2, 1, 1], -2.0, 1.0),
        ([2, 16, 9, 9], 0.0, 1.0),
    ] {
        let [n, c, h, w] = shape;
        let hw = h * w;
        let x: Vec<f32> = rand(&shape, 7)
            .flatten_all()
            .unwrap()
            .to_vec1::<f32>()
            .unwrap()
            .iter()
            .map(|v| v * scale + offset)
            .collect();
        let st = channel_stats(&x, n, c, hw);
        for ch in 0..c {
            let vals: Vec<f64> = (0..n)
                .flat_map(|b| x[(b * c + ch) * hw..(b * c + ch + 1) * hw].iter())
                .map(|v| *v as f64)
                .collect();
            let mean = vals.iter().sum::<f64>() / vals.len() as f64;
            let var = vals.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / vals.len() as f64;
            assert!(
                (st.mean[ch] - mean).abs() <= 1e-6 * mean.abs().max(1.0),
                "{shape:?}"
            );
            assert!(
                (st.var[ch] - var).abs() <= 1e-4 * var + 1e-9,
                "{shape:?}: var {} vs {var}",
                st.var[ch]
            );
        }
        // Backward of relu(batch_norm(x)) against candle's autograd of the same maths. Not at
        // mean 1000 / std 0.01: there f32 itself holds x to 0.6 % of its spread, and both the
        // reference and `x·a + b` (PyTorch's CPU formulation too) round at that level.
        if offset.abs() > 100.0 * scale {
            continue;
        }
        let gamma: Vec<f32> = (0..c).map(|i| 0.5 + 0.25 * i as f32).collect();
        let beta: Vec<f32> = (0..c).map(|i| 0.1 * i as f32 - 0.2).collect();
        let (a, b) = batch_norm_affine(&st, &gamma, &beta, 1e-5);
        let y = channel_affine(&x, &a, &b, c, hw, true);
        let dy: Vec<f32> = rand(&shape, 9).flatten_all().unwrap().to_vec1().unwrap();
        let (dx, dg, db) =
            batch_norm_relu_backward(&x, &st, &gamma, Some((&a, &b)), &dy, 1e-5, n, c, hw);
        let dev = Device::Cpu;
        let xv = Var::from_tensor(&Tensor::from_vec(x.clone(), &shape[..], &dev).unwrap()).unwrap();
        let gv = Var::from_tensor(&Tensor::from_vec(gamma.clone(), c, &dev).unwrap()).unwrap();
        let bv = Var::from_tensor(&Tensor::from_vec(beta.clone(), c, &dev).unwrap()).unwrap();
        // The statistics depend on x too: recompute them in the graph (candle's mean/var of
        // the batch), so the reference is the full training-mode batch-norm gradient.
        let x3 = xv.as_tensor().reshape((n, c, hw)).unwrap();
        let m = (x3.sum_keepdim(2).unwrap().sum_keepdim(0).unwrap() / (n * hw) as f64).unwrap();
        let centred = x3.broadcast_sub(&m).unwrap();
        let v = (centred
            .sqr()
            .unwrap()
            .sum_keepdim(2)
            .unwrap()
            .sum_keepdim(0)
            .unwrap()
            / (n * hw) as f64)
            .unwrap();
        let out = centred
            .broadcast_div(&(v + 1e-5).unwrap().sqrt().unwrap())
            .unwrap()
            .broadcast_mul(&gv.as_tensor().reshape((1, c, 1)).unwrap())
            .unwrap()
            .broadcast_add(&bv.as_tensor().reshape((1, c, 1)).unwrap())
            .unwrap()
            .relu()
            .unwrap();
        let ours_y = Tensor::from_vec(y, (n, c, hw), &dev).unwrap();
        assert!(max_rel(&ours_y, &out) < 1e-3, "{shape:?}: forward");
        let dyt = Tensor::from_vec(dy, (n, c, hw), &dev).unwrap();
        let grads = (out * dyt).unwrap().sum_all().unwrap().backward().unwrap();
        let cmp = |ours: Vec<f32>, var: &Var, what: &str| {
            let r = grads.get(var.as_tensor()).unwrap();
            let o = Tensor::from_vec(ours, r.shape(), &dev).unwrap();
            assert!(
                max_rel(&o, r) < 2e-3,
                "{shape:?}: {what} differs by {}",
                max_rel(&o, r)
            );
        };
        cmp(dx, &xv, "dx");
        cmp(dg, &gv, "dgamma");
        cmp(db, &bv, "dbeta");
    }
}
