//! Training-mode batch norm over (N, H, W) as one fused op with its own backward.
//!
//! Built from candle ops, batch norm costs a dozen broadcast kernels forward and more backward,
//! each a strided pass over the activation; here forward and backward are one pass each per
//! channel (plus one for the statistics), parallel over channels.

use rayon::prelude::*;

/// Per-channel mean and biased variance of an NCHW buffer (f64 accumulation).
pub fn channel_stats(x: &[f32], n: usize, c: usize, hw: usize) -> (Vec<f64>, Vec<f64>) {
    let m = (n * hw) as f64;
    (0..c)
        .into_par_iter()
        .map(|ch| {
            let (mut s, mut s2) = (0f64, 0f64);
            for b in 0..n {
                let off = (b * c + ch) * hw;
                for &v in &x[off..off + hw] {
                    s += v as f64;
                }
            }
            let mean = s / m;
            for b in 0..n {
                let off = (b * c + ch) * hw;
                for &v in &x[off..off + hw] {
                    let d = v as f64 - mean;
                    s2 += d * d;
                }
            }
            (mean, s2 / m)
        })
        .unzip()
}

/// y = γ·(x − μ)/√(σ² + eps) + β with batch statistics.
#[allow(clippy::too_many_arguments)]
pub fn forward(
    x: &[f32],
    gamma: &[f32],
    beta: &[f32],
    eps: f64,
    n: usize,
    c: usize,
    hw: usize,
) -> Vec<f32> {
    let (mean, var) = channel_stats(x, n, c, hw);
    let mut y = vec![0f32; x.len()];
    // Split the output by (batch, channel) planes; each plane knows its channel.
    y.par_chunks_mut(hw).enumerate().for_each(|(plane, out)| {
        let ch = plane % c;
        let inv = 1.0 / (var[ch] + eps).sqrt();
        let a = (gamma[ch] as f64 * inv) as f32;
        let b = (beta[ch] as f64 - mean[ch] * gamma[ch] as f64 * inv) as f32;
        let src = &x[plane * hw..(plane + 1) * hw];
        for (o, &v) in out.iter_mut().zip(src) {
            *o = v * a + b;
        }
    });
    y
}

/// Gradients (dx, dγ, dβ) of `forward` given dy.
#[allow(clippy::too_many_arguments)]
pub fn backward(
    x: &[f32],
    gamma: &[f32],
    dy: &[f32],
    eps: f64,
    n: usize,
    c: usize,
    hw: usize,
) -> (Vec<f32>, Vec<f32>, Vec<f32>) {
    let (mean, var) = channel_stats(x, n, c, hw);
    let m = (n * hw) as f64;
    // dβ = Σ dy, dγ = Σ dy·x̂ per channel.
    let (dbeta, dgamma): (Vec<f64>, Vec<f64>) = (0..c)
        .into_par_iter()
        .map(|ch| {
            let inv = 1.0 / (var[ch] + eps).sqrt();
            let (mut sb, mut sg) = (0f64, 0f64);
            for b in 0..n {
                let off = (b * c + ch) * hw;
                for i in off..off + hw {
                    let g = dy[i] as f64;
                    sb += g;
                    sg += g * (x[i] as f64 - mean[ch]) * inv;
                }
            }
            (sb, sg)
        })
        .unzip();
    // dx = γ·inv/M · (M·dy − dβ − x̂·dγ)
    let mut dx = vec![0f32; x.len()];
    dx.par_chunks_mut(hw).enumerate().for_each(|(plane, out)| {
        let ch = plane % c;
        let inv = 1.0 / (var[ch] + eps).sqrt();
        let k = gamma[ch] as f64 * inv / m;
        let off = plane * hw;
        for (j, o) in out.iter_mut().enumerate() {
            let xhat = (x[off + j] as f64 - mean[ch]) * inv;
            *o = (k * (m * dy[off + j] as f64 - dbeta[ch] - xhat * dgamma[ch])) as f32;
        }
    });
    (
        dx,
        dgamma.into_iter().map(|v| v as f32).collect(),
        dbeta.into_iter().map(|v| v as f32).collect(),
    )
}
