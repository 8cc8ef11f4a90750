//! The CPU kernels on plain f32 slices, for a caller that runs its own forward and backward
//! without candle's graph (the fused VGG training step of `pyramid-models`).
//!
//! Every buffer is contiguous NCHW (or `[rows, cols]` row-major for the linear layers). The
//! functions check their slice lengths and panic on a mismatch: a caller that gets them wrong
//! has a bug, not bad input. Like the candle ops, the results do not depend on the rayon thread
//! count.

use rayon::prelude::*;

use crate::geom::Geom;
use crate::options::{ConvOptions, Isa};
use crate::par::{alloc_overwritten, gemm_f32};
use crate::simd::Simd;

/// A 3×3, stride-1, padding-1 convolution over `[b, c, h, w]` into `[b, o, h, w]`: every conv
/// of the VGG family.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Conv3x3 {
    /// Batch.
    pub b: usize,
    /// Input channels.
    pub c: usize,
    /// Output channels.
    pub o: usize,
    /// Height (input and output).
    pub h: usize,
    /// Width (input and output).
    pub w: usize,
}

impl Conv3x3 {
    fn geom(&self) -> Geom {
        Geom::new(self.b, self.c, self.h, self.w, self.o, 3, 1, 1)
            .expect("a 3x3 padding-1 conv fits any non-empty input")
    }
    fn check(&self, x: &[f32], w: &[f32]) {
        assert_eq!(
            x.len(),
            self.b * self.c * self.h * self.w,
            "conv input length"
        );
        assert_eq!(w.len(), self.o * self.c * 9, "conv weight length");
    }
    /// Elements of the output.
    pub fn out_len(&self) -> usize {
        self.b * self.o * self.h * self.w
    }
}

/// The gradients of a convolution.
#[derive(Debug)]
pub struct ConvGrads {
    /// w.r.t. the input, when asked for.
    pub x: Option<Vec<f32>>,
    /// w.r.t. the weight `[o, c, 3, 3]`.
    pub w: Vec<f32>,
    /// w.r.t. the bias `[o]`.
    pub b: Vec<f32>,
}

/// `conv(x, w) + bias`, then ReLU when `relu`.
pub fn conv3x3_forward(
    s: Conv3x3,
    x: &[f32],
    w: &[f32],
    bias: &[f32],
    relu: bool,
    opts: &ConvOptions,
) -> Vec<f32> {
    s.check(x, w);
    assert_eq!(bias.len(), s.o, "conv bias length");
    crate::conv::conv_fwd(&s.geom(), x, w, Some(bias), relu, opts)
}

/// Gradients of [`conv3x3_forward`] given the output gradient `gy`. With `y_relu` (the forward
/// ran with `relu`, and this is its output) `gy` is first masked by `y_relu > 0`.
pub fn conv3x3_backward(
    s: Conv3x3,
    x: &[f32],
    w: &[f32],
    gy: &[f32],
    y_relu: Option<&[f32]>,
    need_x: bool,
    opts: &ConvOptions,
) -> ConvGrads {
    s.check(x, w);
    assert_eq!(gy.len(), s.out_len(), "conv output-gradient length");
    let g = crate::conv::conv_bwd(&s.geom(), x, w, gy, y_relu, need_x, true, true, opts);
    ConvGrads {
        x: g.gx,
        w: g.gw.expect("asked for"),
        b: g.gb.expect("asked for"),
    }
}

/// 2×2 stride-2 max-pool (floor mode) of `planes` planes of `h × w`.
pub fn max_pool2x2_forward(x: &[f32], planes: usize, h: usize, w: usize, isa: Isa) -> Vec<f32> {
    assert_eq!(x.len(), planes * h * w, "pool input length");
    crate::pool::pool_fwd(x, planes, h, w, Simd::new(isa))
}

/// Input gradient of [`max_pool2x2_forward`] (PyTorch's rule: the first maximum of a window
/// takes its gradient).
pub fn max_pool2x2_backward(
    x: &[f32],
    gy: &[f32],
    planes: usize,
    h: usize,
    w: usize,
    isa: Isa,
) -> Vec<f32> {
    assert_eq!(x.len(), planes * h * w, "pool input length");
    assert_eq!(gy.len(), planes * (h / 2) * (w / 2), "pool gradient length");
    crate::pool::pool_bwd(x, gy, planes, h, w, Simd::new(isa))
}

/// Per-channel batch statistics of an NCHW buffer: the mean and the biased variance, each
/// channel summed in a fixed order (f64 across planes).
#[derive(Clone, Debug)]
pub struct ChannelStats {
    /// Mean per channel.
    pub mean: Vec<f64>,
    /// Biased variance per channel.
    pub var: Vec<f64>,
}

/// f32 sum with 16 lanes, for a plane (at most a few thousand values), widened at the end.
#[inline]
fn plane_sum(v: &[f32], f: impl Fn(f32) -> f32) -> f64 {
    let mut acc = [0f32; 16];
    let mut it = v.chunks_exact(16);
    for ch in &mut it {
        for (a, x) in acc.iter_mut().zip(ch) {
            *a += f(*x);
        }
    }
    let tail: f32 = it.remainder().iter().map(|x| f(*x)).sum();
    acc.iter().map(|a| *a as f64).sum::<f64>() + tail as f64
}

/// The channel statistics of `x` `[n, c, hw]`.
pub fn channel_stats(x: &[f32], n: usize, c: usize, hw: usize) -> ChannelStats {
    assert_eq!(x.len(), n * c * hw, "batch-norm input length");
    let m = (n * hw) as f64;
    let (mean, var) = (0..c)
        .into_par_iter()
        .map(|ch| {
            let plane = |b: usize| &x[(b * c + ch) * hw..(b * c + ch + 1) * hw];
            let mean = (0..n).map(|b| plane_sum(plane(b), |v| v)).sum::<f64>() / m;
            let mf = mean as f32;
            let var = (0..n)
                .map(|b| plane_sum(plane(b), |v| (v - mf) * (v - mf)))
                .sum::<f64>()
                / m;
            (mean, var)
        })
        .unzip();
    ChannelStats { mean, var }
}

/// Per-channel `y = x·a + b`, then ReLU when `relu`: batch norm with given statistics
/// (`a = γ/√(σ²+eps)`, `b = β − μ·a`), in training or eval mode.
pub fn channel_affine(
    x: &[f32],
    a: &[f32],
    b: &[f32],
    c: usize,
    hw: usize,
    relu: bool,
) -> Vec<f32> {
    assert!(a.len() == c && b.len() == c && x.len().is_multiple_of(c * hw.max(1)));
    let mut y = alloc_overwritten(x.len());
    let ppt = (8192 / hw.max(1)).max(1);
    y.par_chunks_mut(hw * ppt)
        .zip(x.par_chunks(hw * ppt))
        .enumerate()
        .for_each(|(t, (yc, xc))| {
            for (i, (yp, xp)) in yc.chunks_mut(hw).zip(xc.chunks(hw)).enumerate() {
                let ch = (t * ppt + i) % c;
                let (a, b) = (a[ch], b[ch]);
                if relu {
                    for (o, &v) in yp.iter_mut().zip(xp) {
                        *o = (v * a + b).max(0.0);
                    }
                } else {
                    for (o, &v) in yp.iter_mut().zip(xp) {
                        *o = v * a + b;
                    }
                }
            }
        });
    y
}

/// The scale and shift of training-mode batch norm: `a = γ/√(σ²+eps)`, `b = β − μ·a`.
pub fn batch_norm_affine(
    stats: &ChannelStats,
    gamma: &[f32],
    beta: &[f32],
    eps: f64,
) -> (Vec<f32>, Vec<f32>) {
    (0..gamma.len())
        .map(|ch| {
            let inv = 1.0 / (stats.var[ch] + eps).sqrt();
            let a = gamma[ch] as f64 * inv;
            (a as f32, (beta[ch] as f64 - stats.mean[ch] * a) as f32)
        })
        .unzip()
}

/// Gradients of `relu(batch_norm(x))` in training mode: given the input `x` `[n, c, hw]`, its
/// batch statistics, the output `y` (for the ReLU mask; `None`: no ReLU) and the output
/// gradient `dy`, returns `(dx, dγ, dβ)`.
#[allow(clippy::too_many_arguments)]
pub fn batch_norm_relu_backward(
    x: &[f32],
    stats: &ChannelStats,
    gamma: &[f32],
    y: Option<&[f32]>,
    dy: &[f32],
    eps: f64,
    n: usize,
    c: usize,
    hw: usize,
) -> (Vec<f32>, Vec<f32>, Vec<f32>) {
    assert_eq!(x.len(), n * c * hw, "batch-norm input length");
    assert_eq!(dy.len(), x.len(), "batch-norm gradient length");
    let m = (n * hw) as f64;
    let masked = |i: usize| match y {
        Some(y) if y[i] <= 0.0 => 0.0,
        _ => dy[i],
    };
    // dβ = Σ dy', dγ = Σ dy'·x̂ per channel (dy' = the ReLU-masked gradient).
    let (dbeta, dgamma): (Vec<f64>, Vec<f64>) = (0..c)
        .into_par_iter()
        .map(|ch| {
            let inv = (1.0 / (stats.var[ch] + eps).sqrt()) as f32;
            let mean = stats.mean[ch] as f32;
            let (mut sb, mut sg) = (0f64, 0f64);
            for b in 0..n {
                let off = (b * c + ch) * hw;
                let (mut pb, mut pg) = ([0f32; 16], [0f32; 16]);
                for j in 0..hw {
                    let i = off + j;
                    let g = masked(i);
                    pb[j % 16] += g;
                    pg[j % 16] += g * (x[i] - mean) * inv;
                }
                sb += pb.iter().map(|v| *v as f64).sum::<f64>();
                sg += pg.iter().map(|v| *v as f64).sum::<f64>();
            }
            (sb, sg)
        })
        .unzip();
    // dx = γ·inv/M · (M·dy' − dβ − x̂·dγ)
    let mut dx = alloc_overwritten(x.len());
    let ppt = (8192 / hw.max(1)).max(1);
    dx.par_chunks_mut(hw * ppt)
        .enumerate()
        .for_each(|(t, out)| {
            for (pi, op) in out.chunks_mut(hw).enumerate() {
                let plane = t * ppt + pi;
                let ch = plane % c;
                let inv = 1.0 / (stats.var[ch] + eps).sqrt();
                let k = (gamma[ch] as f64 * inv / m) as f32;
                let (mf, db, dg, invf) =
                    (m as f32, dbeta[ch] as f32, dgamma[ch] as f32, inv as f32);
                let mean = stats.mean[ch] as f32;
                let off = plane * hw;
                for (j, o) in op.iter_mut().enumerate() {
                    let xhat = (x[off + j] - mean) * invf;
                    *o = k * (mf * masked(off + j) - db - xhat * dg);
                }
            }
        });
    (
        dx,
        dgamma.into_iter().map(|v| v as f32).collect(),
        dbeta.into_iter().map(|v| v as f32).collect(),
    )
}

/// `y[rows, out] = x[rows, in] · wᵀ + bias` (`w` is `[out, in]`, PyTorch's layout), then ReLU
/// when `relu`.
pub fn linear_forward(
    x: &[f32],
    w: &[f32],
    bias: &[f32],
    rows: usize,
    d_in: usize,
    d_out: usize,
    relu: bool,
) -> Vec<f32> {
    assert_eq!(x.len(), rows * d_in, "linear input length");
    assert_eq!(w.len(), d_out * d_in, "linear weight length");
    assert_eq!(bias.len(), d_out, "linear bias length");
    let mut y = alloc_overwritten(rows * d_out);
    if y.is_empty() {
        return y;
    }
    for r in 0..rows {
        y[r * d_out..(r + 1) * d_out].copy_from_slice(bias);
    }
    // SAFETY: x is [rows, d_in] row-major, wᵀ is read as [d_in, d_out] with strides (d_in, 1)
    // over the [d_out, d_in] buffer, y is a separate [rows, d_out] buffer: all lengths checked.
    unsafe {
        gemm_f32(
            rows,
            d_out,
            d_in,
            y.as_mut_ptr(),
            d_out,
            true,
            x.as_ptr(),
            (1, d_in),
            w.as_ptr(),
            (d_in, 1),
            gemm::Parallelism::None,
        )
    };
    if relu {
        y.iter_mut().for_each(|v| *v = v.max(0.0));
    }
    y
}

/// The gradients of a linear layer.
#[derive(Debug)]
pub struct LinearGrads {
    /// w.r.t. the input `[rows, in]`, when asked for.
    pub x: Option<Vec<f32>>,
    /// w.r.t. the weight `[out, in]`.
    pub w: Vec<f32>,
    /// w.r.t. the bias `[out]`.
    pub b: Vec<f32>,
}

/// Gradients of [`linear_forward`] given `dy` `[rows, out]`; with `y_relu` (the forward's
/// output when it ran with `relu`) `dy` is first masked by `y_relu > 0`.
#[allow(clippy::too_many_arguments)]
pub fn linear_backward(
    x: &[f32],
    w: &[f32],
    dy: &[f32],
    y_relu: Option<&[f32]>,
    rows: usize,
    d_in: usize,
    d_out: usize,
    need_x: bool,
) -> LinearGrads {
    assert_eq!(x.len(), rows * d_in, "linear input length");
    assert_eq!(w.len(), d_out * d_in, "linear weight length");
    assert_eq!(dy.len(), rows * d_out, "linear gradient length");
    let masked;
    let dy = match y_relu {
        Some(y) => {
            assert_eq!(y.len(), dy.len(), "linear output length");
            masked = dy
                .iter()
                .zip(y)
                .map(|(g, y)| if *y > 0.0 { *g } else { 0.0 })
                .collect::<Vec<f32>>();
            &masked[..]
        }
        None => dy,
    };
    let mut gb = vec![0f32; d_out];
    for r in 0..rows {
        for (s, g) in gb.iter_mut().zip(&dy[r * d_out..(r + 1) * d_out]) {
            *s += *g;
        }
    }
    let mut gw = alloc_overwritten(d_out * d_in);
    // SAFETY: dyᵀ is read as [d_out, rows] with strides (d_out, 1) over dy [rows, d_out]; x is
    // [rows, d_in]; gw is a separate [d_out, d_in] buffer: all lengths checked above.
    if !gw.is_empty() {
        unsafe {
            gemm_f32(
                d_out,
                d_in,
                rows,
                gw.as_mut_ptr(),
                d_in,
                false,
                dy.as_ptr(),
                (d_out, 1),
                x.as_ptr(),
                (1, d_in),
                gemm::Parallelism::None,
            )
        };
    }
    let gx = need_x.then(|| {
        let mut gx = alloc_overwritten(rows * d_in);
        if !gx.is_empty() {
            // SAFETY: dy [rows, d_out] times w [d_out, d_in] into a separate [rows, d_in].
            unsafe {
                gemm_f32(
                    rows,
                    d_in,
                    d_out,
                    gx.as_mut_ptr(),
                    d_in,
                    false,
                    dy.as_ptr(),
                    (1, d_out),
                    w.as_ptr(),
                    (1, d_in),
                    gemm::Parallelism::None,
                )
            };
        }
        gx
    });
    LinearGrads {
        x: gx,
        w: gw,
        b: gb,
    }
}
