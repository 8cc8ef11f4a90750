//! Direct 3×3 stride-1 padding-1 convolution for layers with few input channels (the CPU
//! configs' first blocks: 1 → 8, 8 → 8, 8 → 16 channels at 32² and 16²).
//!
//! There im2col writes nine copies of the input for a gemm whose depth (9·C ≤ 144) and width
//! (O ≤ 32) leave its micro-kernels half empty. Here each output plane is read as a flat run of
//! pixels, 16 to a vector; for every input channel and tap one masked load (the mask drops the
//! lanes whose tap falls in the padding) feeds fused multiply-adds into 8 output channels × 2
//! vectors of accumulators. The input gradient of such a layer is the same convolution with the
//! rotated, transposed kernels (`conv::conv_bwd_masked`), so it runs here too.
//!
//! The AVX-512 and portable versions add in the same order (input channel, then tap) with fused
//! multiply-adds, so they give the same bits.

use rayon::prelude::*;

use crate::geom::Geom;
use crate::par::{alloc_overwritten, SendPtr};
use crate::simd::Simd;

const LANES: usize = 16;
/// Output channels per register tile.
const OT: usize = 8;
/// Vectors of pixels per register tile.
const VT: usize = 2;

/// Whether the direct kernel serves this layer: 3×3, stride 1, padding 1, at most 16 input
/// channels (beyond that im2col's gemm is deep enough) on maps of at least 8 × 8.
pub(crate) fn applies(g: &Geom) -> bool {
    g.k == 3 && g.s == 1 && g.p == 1 && g.c <= 16 && g.h >= 8 && g.w >= 8 && g.o > 0
}

/// Per vector of a plane and per tap, the lanes whose input pixel lies inside the image.
fn tap_masks(h: usize, w: usize) -> Vec<[u16; 9]> {
    let hw = h * w;
    (0..hw.div_ceil(LANES))
        .map(|v| {
            let mut m = [0u16; 9];
            for l in 0..LANES {
                let q = v * LANES + l;
                if q >= hw {
                    continue;
                }
                let (r, col) = ((q / w) as isize, (q % w) as isize);
                for (t, mt) in m.iter_mut().enumerate() {
                    let (dy, dx) = (t as isize / 3 - 1, t as isize % 3 - 1);
                    let (rr, cc) = (r + dy, col + dx);
                    if rr >= 0 && rr < h as isize && cc >= 0 && cc < w as isize {
                        *mt |= 1 << l;
                    }
                }
            }
            m
        })
        .collect()
}

/// `y = conv(x, w) + bias`, then ReLU when `relu`, for a layer where [`applies`] holds.
pub(crate) fn conv_fwd(
    g: &Geom,
    x: &[f32],
    w: &[f32],
    bias: Option<&[f32]>,
    relu: bool,
    simd: Simd,
) -> Vec<f32> {
    debug_assert!(applies(g));
    let (hw, c, o) = (g.h * g.w, g.c, g.o);
    let masks = tap_masks(g.h, g.w);
    let mut y = alloc_overwritten(g.b * o * hw);
    let yp = SendPtr(y.as_mut_ptr());
    let otiles = o.div_ceil(OT);
    (0..g.b * otiles).into_par_iter().for_each(|unit| {
        let (b, ot) = (unit / otiles, unit % otiles);
        let o0 = ot * OT;
        let on = OT.min(o - o0);
        let xb = &x[b * c * hw..(b + 1) * c * hw];
        // SAFETY: this unit writes output channels o0..o0 + on of image b only: disjoint from
        // every other unit's, inside y (B·O·HW floats).
        let yb =
            unsafe { std::slice::from_raw_parts_mut(yp.get().add((b * o + o0) * hw), on * hw) };
        let t = Tile {
            g,
            xb,
            w,
            bias,
            relu,
            o0,
            on,
            masks: &masks,
        };
        #[cfg(target_arch = "x86_64")]
        if simd.avx512() {
            // SAFETY: simd.avx512() holds only on CPUs with AVX-512F.
            unsafe { avx512::run(&t, yb) };
            return;
        }
        let _ = simd;
        portable(&t, yb);
    });
    y
}

/// One unit's inputs: an image, a run of output channels.
struct Tile<'a> {
    g: &'a Geom,
    xb: &'a [f32],
    w: &'a [f32],
    bias: Option<&'a [f32]>,
    relu: bool,
    o0: usize,
    on: usize,
    masks: &'a [[u16; 9]],
}

impl Tile<'_> {
    /// Offset of tap `t` from an output pixel in the flat plane.
    fn offset(&self, t: usize) -> isize {
        (t as isize / 3 - 1) * self.g.w as isize + (t as isize % 3 - 1)
    }
    fn weight(&self, oi: usize, ci: usize, t: usize) -> f32 {
        self.w[((self.o0 + oi) * self.g.c + ci) * 9 + t]
    }
    fn finish(&self, oi: usize, v: f32) -> f32 {
        let v = v + self.bias.map_or(0.0, |b| b[self.o0 + oi]);
        // As `_mm512_max_ps(v, 0)`: v when v > 0, else 0 (also for NaN and −0).
        if !self.relu || v > 0.0 {
            v
        } else {
            0.0
        }
    }
}

/// The portable kernel: the same sums as the AVX-512 one, lane by lane.
fn portable(t: &Tile, yb: &mut [f32]) {
    let hw = t.g.h * t.g.w;
    for (v, m) in t.masks.iter().enumerate() {
        for oi in 0..t.on {
            let mut acc = [0f32; LANES];
            for ci in 0..t.g.c {
                let xc = &t.xb[ci * hw..(ci + 1) * hw];
                for (tap, mt) in m.iter().enumerate() {
                    let wv = t.weight(oi, ci, tap);
                    let off = t.offset(tap);
                    for (l, a) in acc.iter_mut().enumerate() {
                        let xv = if mt >> l & 1 == 1 {
                            xc[((v * LANES + l) as isize + off) as usize]
                        } else {
                            0.0
                        };
                        *a = wv.mul_add(xv, *a);
                    }
                }
            }
            for (l, a) in acc.iter().enumerate() {
                let q = v * LANES + l;
                if q < hw {
                    yb[oi * hw + q] = t.finish(oi, *a);
                }
            }
        }
    }
}

#[cfg(target_arch = "x86_64")]
mod avx512 {
    use super::{Tile, LANES, OT, VT};
    use crate::simd::first_lanes;
    use std::arch::x86_64::*;

    /// # Safety
    /// AVX-512F; `yb` holds `t.on` planes of the image.
    #[target_feature(enable = "avx512f")]
    pub(super) unsafe fn run(t: &Tile, yb: &mut [f32]) {
        let hw = t.g.h * t.g.w;
        let nvec = t.masks.len();
        let mut v0 = 0;
        while v0 < nvec {
            let vn = VT.min(nvec - v0);
            let mut acc = [[_mm512_setzero_ps(); VT]; OT];
            for ci in 0..t.g.c {
                let xc = t.xb.as_ptr().add(ci * hw);
                let wc = t.w.as_ptr().add((t.o0 * t.g.c + ci) * 9);
                for tap in 0..9 {
                    let off = t.offset(tap);
                    let mut xv = [_mm512_setzero_ps(); VT];
                    for (v, xv) in xv.iter_mut().enumerate().take(vn) {
                        let m: __mmask16 = t.masks[v0 + v][tap];
                        // Masked-off lanes (padding, past the plane) are not read; the
                        // address is formed with wrapping arithmetic for that reason.
                        *xv = _mm512_maskz_loadu_ps(
                            m,
                            xc.wrapping_offset(((v0 + v) * LANES) as isize + off),
                        );
                    }
                    for (oi, acc) in acc.iter_mut().enumerate().take(t.on) {
                        let wv = _mm512_set1_ps(*wc.add(oi * t.g.c * 9 + tap));
                        for v in 0..VT {
                            acc[v] = _mm512_fmadd_ps(wv, xv[v], acc[v]);
                        }
                    }
                }
            }
            for (oi, acc) in acc.iter().enumerate().take(t.on) {
                let b = _mm512_set1_ps(t.bias.map_or(0.0, |b| b[t.o0 + oi]));
                for (v, a) in acc.iter().enumerate().take(vn) {
                    let q0 = (v0 + v) * LANES;
                    let mut r = _mm512_add_ps(*a, b);
                    if t.relu {
                        r = _mm512_max_ps(r, _mm512_setzero_ps());
                    }
                    let m: __mmask16 = first_lanes(LANES.min(hw - q0));
                    _mm512_mask_storeu_ps(yb.as_mut_ptr().add(oi * hw + q0), m, r);
                }
            }
            v0 += vn;
        }
    }
}
