use pyramid_ops::slices::*;
use std::time::Instant;
fn main() {
    for (n, c, hw) in [
        (128usize, 4usize, 1024usize),
        (128, 8, 256),
        (128, 16, 64),
        (128, 32, 16),
        (128, 32, 4),
    ] {
        let x: Vec<f32> = (0..n * c * hw)
            .map(|i| ((i * 7919) % 1000) as f32 / 500.0 - 1.0)
            .collect();
        let g: Vec<f32> = (0..n * c * hw)
            .map(|i| ((i * 104729) % 1000) as f32 / 500.0 - 1.0)
            .collect();
        let gamma = vec![1.0f32; c];
        let beta = vec![0.1f32; c];
        let reps = 20;
        let t = Instant::now();
        let mut st = None;
        for _ in 0..reps {
            st = Some(channel_stats(&x, n, c, hw));
        }
        let ts = t.elapsed().as_secs_f64() / reps as f64 * 1e3;
        let st = st.unwrap();
        let (a, b) = batch_norm_affine(&st, &gamma, &beta, 1e-5);
        let t = Instant::now();
        let mut y = vec![];
        for _ in 0..reps {
            y = channel_affine(&x, &a, &b, c, hw, true);
        }
        let ta = t.elapsed().as_secs_f64() / reps as f64 * 1e3;
        let t = Instant::now();
        for _ in 0..reps {
            let _ = batch_norm_relu_backward(&x, &st, &gamma, Some(&y), &g, 1e-5, n, c, hw);
        }
        let tb = t.elapsed().as_secs_f64() / reps as f64 * 1e3;
        println!("n{n} c{c} hw{hw}: stats {ts:.3} affine {ta:.3} bwd {tb:.3} ms");
    }
}
