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
use crate::rows;
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

/// `maxpool2x2(relu(conv(x, w) + bias))` (floor mode): an inference pass's conv followed by
/// its pool, `[B, O, H/2, W/2]`, the same bits as [`conv3x3_forward`] with `relu` and then
/// [`max_pool2x2_forward`], without the full-size conv output where the im2col path runs
/// (large maps with few input channels, such as a VGG's first layer).
pub fn conv3x3_relu_pool_forward(
    s: Conv3x3,
    x: &[f32],
    w: &[f32],
    bias: &[f32],
    opts: &ConvOptions,
) -> Vec<f32> {
    s.check(x, w);
    assert_eq!(bias.len(), s.o, "conv bias length");
    crate::conv::conv_fwd_relu_pool(&s.geom(), x, w, Some(bias), opts)
}

/// Gradients of [`conv3x3_forward`] given the output gradient `gy`. With `y_relu` (the forward
/// ran with `relu`, and this is its output) `gy` is first masked by `y_relu > 0`. With
/// `gx_mask` (shaped like `x`; typically `x` itself, the ReLU output of the layer below) the
/// input gradient is zeroed where the mask is not positive, as it is written: the layer below's
/// backward then needs no ReLU mask of its own.
#[allow(clippy::too_many_arguments)]
pub fn conv3x3_backward(
    s: Conv3x3,
    x: &[f32],
    w: &[f32],
    gy: &[f32],
    y_relu: Option<&[f32]>,
    gx_mask: Option<&[f32]>,
    need_x: bool,
    opts: &ConvOptions,
) -> ConvGrads {
    s.check(x, w);
    assert_eq!(gy.len(), s.out_len(), "conv output-gradient length");
    let g = crate::conv::conv_bwd(
        &s.geom(),
        x,
        w,
        gy,
        y_relu,
        gx_mask,
        need_x,
        true,
        true,
        opts,
    );
    ConvGrads {
        x: g.gx,
        w: g.gw.expect("asked for"),
        b: g.gb.expect("asked for"),
    }
}

/// `g = g · (m > 0)` in place: a ReLU's mask (`m` its output) applied to a gradient, as
/// [`conv3x3_backward`]'s `gx_mask` does.
pub fn mask_where_positive(g: &mut [f32], m: &[f32]) {
    crate::conv::mask_where_positive(g, m)
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

/// Per-channel batch statistics of an NCHW buffer: the mean and the biased variance.
#[derive(Clone, Debug)]
pub struct ChannelStats {
    /// Mean per channel.
    pub mean: Vec<f64>,
    /// Biased variance per channel.
    pub var: Vec<f64>,
}

/// Image groups of the batch-norm reductions: a fixed number, so that the sums do not depend
/// on the thread count.
const REDUCE_GROUPS: usize = 8;

/// Per-channel values repeated over a plane: a row of `c · hw` matching one image.
fn expand(v: impl Iterator<Item = f32>, hw: usize) -> Vec<f32> {
    v.flat_map(|a| std::iter::repeat_n(a, hw)).collect()
}

/// `k` per-channel sums over an `[n, c, hw]` batch: `f(image, acc)` adds an image's
/// contributions to `k` rows of `c · hw` accumulators (element-wise over the image, so it
/// vectorises whatever `hw` is); groups of images accumulate in f32, and the groups and the
/// elements of a channel are then added in a fixed order in f64.
fn channel_sums(
    n: usize,
    c: usize,
    hw: usize,
    k: usize,
    f: impl Fn(usize, &mut [f32]) + Sync,
) -> Vec<Vec<f64>> {
    let row = c * hw;
    let groups = n.clamp(1, REDUCE_GROUPS);
    let parts: Vec<Vec<f32>> = (0..groups)
        .into_par_iter()
        .map(|g| {
            let mut acc = vec![0f32; k * row];
            for b in g * n / groups..(g + 1) * n / groups {
                f(b, &mut acc);
            }
            acc
        })
        .collect();
    (0..k)
        .map(|q| {
            (0..c)
                .map(|ch| {
                    let r = q * row + ch * hw..q * row + (ch + 1) * hw;
                    parts
                        .iter()
                        .map(|p| p[r.clone()].iter().map(|v| *v as f64).sum::<f64>())
                        .sum()
                })
                .collect()
        })
        .collect()
}

/// The channel statistics of `x` `[n, c, hw]`, in one pass: sums of `x − K` and `(x − K)²`
/// per channel, with the shift `K` the channel's mean over the first image (close to the batch
/// mean, so the variance `E[(x−K)²] − (E[x−K])²` does not cancel).
pub fn channel_stats(x: &[f32], n: usize, c: usize, hw: usize) -> ChannelStats {
    assert_eq!(x.len(), n * c * hw, "batch-norm input length");
    let row = c * hw;
    let m = (n * hw) as f64;
    let shift: Vec<f32> = (0..c)
        .map(|ch| {
            let p = &x[ch * hw..(ch + 1) * hw];
            (p.iter().map(|v| *v as f64).sum::<f64>() / hw.max(1) as f64) as f32
        })
        .collect();
    let krow = expand(shift.iter().copied(), hw);
    let sums = channel_sums(n, c, hw, 2, |b, acc| {
        let (a1, a2) = acc.split_at_mut(row);
        rows::shifted_sums(&x[b * row..(b + 1) * row], &krow, a1, a2);
    });
    let (mut mean, mut var) = (Vec::with_capacity(c), Vec::with_capacity(c));
    for ch in 0..c {
        let d = sums[0][ch] / m;
        mean.push(shift[ch] as f64 + d);
        var.push((sums[1][ch] / m - d * d).max(0.0));
    }
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
    let row = c * hw;
    assert!(a.len() == c && b.len() == c && row > 0 && x.len().is_multiple_of(row));
    let (arow, brow) = (expand(a.iter().copied(), hw), expand(b.iter().copied(), hw));
    let mut y = alloc_overwritten(x.len());
    let ipt = (16384 / row).max(1);
    y.par_chunks_mut(row * ipt)
        .zip(x.par_chunks(row * ipt))
        .for_each(|(yc, xc)| {
            for (yi, xi) in yc.chunks_mut(row).zip(xc.chunks(row)) {
                rows::affine(xi, &arow, &brow, yi, relu);
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
/// batch statistics, the forward's per-channel scale and shift `relu = Some((a, b))` (the ReLU
/// passed where `x·a + b > 0`, which [`channel_affine`] computes the same way; `None`: no ReLU)
/// and the output gradient `dy`, returns `(dx, dγ, dβ)`. Recomputing the mask from `x` spares a
/// pass over the output, which at these sizes is memory-bound.
#[allow(clippy::too_many_arguments)]
pub fn batch_norm_relu_backward(
    x: &[f32],
    stats: &ChannelStats,
    gamma: &[f32],
    relu: Option<(&[f32], &[f32])>,
    dy: &[f32],
    eps: f64,
    n: usize,
    c: usize,
    hw: usize,
) -> (Vec<f32>, Vec<f32>, Vec<f32>) {
    assert_eq!(x.len(), n * c * hw, "batch-norm input length");
    assert_eq!(dy.len(), x.len(), "batch-norm gradient length");
    if let Some((a, b)) = relu {
        assert!(a.len() == c && b.len() == c, "batch-norm affine length");
    }
    let row = c * hw;
    let m = (n * hw) as f64;
    let mrow = expand(stats.mean.iter().map(|v| *v as f32), hw);
    let relu_rows =
        relu.map(|(a, b)| (expand(a.iter().copied(), hw), expand(b.iter().copied(), hw)));
    // dβ = Σ dy', dγ = Σ dy'·x̂ = inv · Σ dy'·(x − μ) per channel. (Index loops over slices
    // cut to one length: the form LLVM vectorises.)
    let sums = channel_sums(n, c, hw, 2, |b, acc| {
        let (ab, ac) = acc.split_at_mut(row);
        let off = b * row;
        let relu = relu_rows.as_ref().map(|(a, b)| (&a[..], &b[..]));
        rows::bn_grad_sums(&x[off..off + row], &dy[off..off + row], &mrow, relu, ab, ac);
    });
    let inv: Vec<f64> = stats.var.iter().map(|v| 1.0 / (v + eps).sqrt()).collect();
    let dbeta = &sums[0];
    let dgamma: Vec<f64> = sums[1].iter().zip(&inv).map(|(s, i)| s * i).collect();
    // dx = γ·inv/M · (M·dy' − dβ − x̂·dγ) = k1·dy' − k2·x + k0 per channel.
    let (mut k1, mut k2, mut k0) = (Vec::new(), Vec::new(), Vec::new());
    for ch in 0..c {
        let k = gamma[ch] as f64 * inv[ch] / m;
        k1.push((k * m) as f32);
        k2.push((k * inv[ch] * dgamma[ch]) as f32);
        k0.push((k * (stats.mean[ch] * inv[ch] * dgamma[ch] - dbeta[ch])) as f32);
    }
    let (k1, k2, k0) = (
        expand(k1.into_iter(), hw),
        expand(k2.into_iter(), hw),
        expand(k0.into_iter(), hw),
    );
    let mut dx = alloc_overwritten(x.len());
    let ipt = (16384 / row.max(1)).max(1);
    dx.par_chunks_mut(row * ipt)
        .enumerate()
        .for_each(|(t, out)| {
            for (bi, o) in out.chunks_mut(row).enumerate() {
                let off = (t * ipt + bi) * row;
                let relu = relu_rows.as_ref().map(|(a, b)| (&a[..], &b[..]));
                let (xs, gs) = (&x[off..off + row], &dy[off..off + row]);
                rows::bn_grad_x(xs, gs, relu, &k1, &k2, &k0, o);
            }
        });
    (
        dx,
        dgamma.into_iter().map(|v| v as f32).collect(),
        dbeta.iter().map(|v| *v as f32).collect(),
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
    if !gw.is_empty() {
        // SAFETY: dyᵀ is read as [d_out, rows] with strides (d_out, 1) over dy [rows, d_out]; x
        // is [rows, d_in]; gw is a separate [d_out, d_in] buffer: all lengths checked above.
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
