//! 3×3 padding-1 convolutions on 2 × 2 maps (B5 of a 32 × 32 input) as one dense matrix
//! product per pass.
//!
//! On a 2 × 2 map every output pixel sees every input pixel, through one of 16 of the kernel's
//! taps (which one depends on the pair). So the layer is `Y[B, 4O] = X[B, 4C] · W₂ᵀ` with
//! `W₂[(o, p), (c, q)] = w[o, c, 1 + q_y − p_y, 1 + q_x − p_x]`: the same multiplications as
//! Winograd F(2×2, 3×3) on such a map, but as one gemm of batch × 4O × 4C instead of transforms
//! around 16 small ones. The input gradient is `GY · W₂`, the weight gradient `GYᵀ · X` folded
//! back onto the taps. gemm splits the destination between threads, never a sum, so the results
//! do not depend on the thread count.

use gemm::Parallelism;

use crate::geom::Geom;
use crate::options::ConvAlgo;
use crate::par::{alloc_overwritten, gemm_f32};

/// Whether this path serves the layer: 3×3, stride 1, padding 1, a 2 × 2 input, at most 64
/// channels on either side, default options. (With 512 channels, SVGG5's last layer at 32²
/// input, `W₂` is 16 MB to build on every call, and Winograd's 16 smaller products were 1.5×
/// faster over the whole training step.)
pub(crate) fn applies(g: &Geom, algo: ConvAlgo) -> bool {
    algo == ConvAlgo::Auto
        && g.k == 3
        && g.s == 1
        && g.p == 1
        && g.h == 2
        && g.w == 2
        && g.c <= 64
        && g.o <= 64
}

/// The tap of `w` linking output pixel `p` and input pixel `q` (both 0..4, row-major 2 × 2).
#[inline]
fn tap(p: usize, q: usize) -> usize {
    let (py, px, qy, qx) = (p / 2, p % 2, q / 2, q % 2);
    (1 + qy - py) * 3 + (1 + qx - px)
}

fn parallelism() -> Parallelism {
    match rayon::current_num_threads() {
        0 | 1 => Parallelism::None,
        n => Parallelism::Rayon(n),
    }
}

/// `W₂` `[4O, 4C]` from `w` `[O, C, 3, 3]`.
fn expand(w: &[f32], o: usize, c: usize) -> Vec<f32> {
    let mut w2 = alloc_overwritten(16 * o * c);
    for oc in 0..o {
        for p in 0..4 {
            let row = &mut w2[(oc * 4 + p) * 4 * c..(oc * 4 + p + 1) * 4 * c];
            for ic in 0..c {
                for q in 0..4 {
                    row[ic * 4 + q] = w[(oc * c + ic) * 9 + tap(p, q)];
                }
            }
        }
    }
    w2
}

/// Forward convolution (+ bias, + ReLU) of a layer where [`applies`] holds.
pub(crate) fn conv_fwd(
    g: &Geom,
    x: &[f32],
    w: &[f32],
    bias: Option<&[f32]>,
    relu: bool,
) -> Vec<f32> {
    let (b, c, o) = (g.b, g.c, g.o);
    let w2 = expand(w, o, c);
    let mut y = alloc_overwritten(b * 4 * o);
    for row in y.chunks_mut(4 * o) {
        for (oc, v) in row.chunks_mut(4).enumerate() {
            v.fill(bias.map_or(0.0, |bs| bs[oc]));
        }
    }
    if !y.is_empty() {
        // SAFETY: x is [b, 4c] row-major; W₂ᵀ is read as [4c, 4o] with strides (4c, 1) over the
        // [4o, 4c] buffer; y is a separate [b, 4o] buffer.
        unsafe {
            gemm_f32(
                b,
                4 * o,
                4 * c,
                y.as_mut_ptr(),
                4 * o,
                true,
                x.as_ptr(),
                (1, 4 * c),
                w2.as_ptr(),
                (4 * c, 1),
                parallelism(),
            )
        };
    }
    if relu {
        y.iter_mut().for_each(|v| *v = v.max(0.0));
    }
    y
}

/// Weight gradient `[O, C, 3, 3]` given the (already ReLU-masked) output gradient `gy`.
pub(crate) fn conv_grad_w(g: &Geom, x: &[f32], gy: &[f32]) -> Vec<f32> {
    let (b, c, o) = (g.b, g.c, g.o);
    let mut gw2 = alloc_overwritten(16 * o * c);
    if b == 0 {
        gw2.fill(0.0);
    } else {
        // SAFETY: GYᵀ is read as [4o, b] with strides (4o, 1) over gy [b, 4o]; x is [b, 4c];
        // gw2 is a separate [4o, 4c] buffer.
        unsafe {
            gemm_f32(
                4 * o,
                4 * c,
                b,
                gw2.as_mut_ptr(),
                4 * c,
                false,
                gy.as_ptr(),
                (4 * o, 1),
                x.as_ptr(),
                (1, 4 * c),
                parallelism(),
            )
        };
    }
    // Fold: each tap sums the (p, q) pairs it links, in a fixed order.
    let mut gw = vec![0f32; o * c * 9];
    for oc in 0..o {
        for ic in 0..c {
            let dst = &mut gw[(oc * c + ic) * 9..(oc * c + ic + 1) * 9];
            for p in 0..4 {
                for q in 0..4 {
                    dst[tap(p, q)] += gw2[(oc * 4 + p) * 4 * c + ic * 4 + q];
                }
            }
        }
    }
    gw
}
