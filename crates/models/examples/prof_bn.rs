use pyramid_ops::slices::*;
use std::time::Instant;
fn main() {
    for (n, c, hw) in [(128usize, 8usize, 1024usize), (128, 16, 256), (128, 32, 64)] {
        let k = 12;
        let xs: Vec<Vec<f32>> = (0..k)
            .map(|j| {
                (0..n * c * hw)
                    .map(|i| (((i + j) * 7919) % 1000) as f32 / 500.0 - 1.0)
                    .collect()
            })
            .collect();
        let gs: Vec<Vec<f32>> = (0..k)
            .map(|j| {
                (0..n * c * hw)
                    .map(|i| (((i + j) * 104729) % 1000) as f32 / 500.0 - 1.0)
                    .collect()
            })
            .collect();
        let gamma = vec![1.0f32; c];
        let beta = vec![0.1f32; c];
        let st = channel_stats(&xs[0], n, c, hw);
        let (a, b) = batch_norm_affine(&st, &gamma, &beta, 1e-5);
        let ys: Vec<Vec<f32>> = xs
            .iter()
            .map(|x| channel_affine(x, &a, &b, c, hw, true))
            .collect();
        let t = Instant::now();
        for j in 0..k {
            let _ = channel_stats(&xs[j], n, c, hw);
        }
        let ts = t.elapsed().as_secs_f64() / k as f64 * 1e3;
        let t = Instant::now();
        for j in 0..k {
            let _ = batch_norm_relu_backward(
                &xs[j],
                &st,
                &gamma,
                Some((&a[..], &b[..])),
                &gs[j],
                1e-5,
                n,
                c,
                hw,
            );
        }
        let tb = t.elapsed().as_secs_f64() / k as f64 * 1e3;
        let t = Instant::now();
        let mut tot = 0f32;
        for j in 0..k {
            tot += xs[j].iter().sum::<f32>();
        }
        let tr = t.elapsed().as_secs_f64() / k as f64 * 1e3;
        println!("n{n} c{c} hw{hw} ({:.1} MB): cold stats {ts:.3} bwd {tb:.3} ms; plain sum read {tr:.3} ms ({:.1} GB/s) {tot}", (n*c*hw*4) as f64/1e6, (n*c*hw*4) as f64 / tr / 1e6);
    }
}
