//! Direct 3×3 stride-1 padding-1 convolution for layers with few input channels (the CPU
//! configs' blocks up to 32 channels, on maps from 32² down to 8²).
//!
//! There im2col writes nine copies of the input for a gemm whose depth (9·C ≤ 144) and width
//! (O ≤ 32) leave its micro-kernels half empty. Here each output plane is read as a flat run of
//! pixels, 16 to a vector; for every input channel and tap one masked load (the mask drops the
//! lanes whose tap falls in the padding) feeds fused multiply-adds into 8 output channels × 2
//! vectors of accumulators. The input gradient of such a layer is the same convolution with the
//! rotated, transposed kernels (`conv::conv_bwd_masked`), so it runs here too.
//!
//! The weight gradient reads the same masked, shifted input vectors against the output
//! gradient's: `gw[o][c][t] = Σ_pixels gy[o] · x[c] shifted by tap t`, in 4 × 4 blocks of
//! 16-lane accumulators, with no im2col copy.
//!
//! The AVX-512 and portable versions add in the same order with fused multiply-adds, so they
//! give the same bits.

// The kernels index small fixed-size arrays by lane and block position, as the sums are written.
#![allow(clippy::needless_range_loop)]

use rayon::prelude::*;

use crate::geom::Geom;
use crate::par::{acc_groups, alloc_overwritten, run_units, sum_accumulators, SendPtr};
use crate::simd::{lane_sum, Simd};

const LANES: usize = 16;
/// Output channels per register tile.
const OT: usize = 8;
/// Vectors of pixels per register tile.
const VT: usize = 2;

/// Whether the direct kernel serves this convolution (a forward pass, or an input gradient as
/// the convolution of the output gradient): 3×3, stride 1, padding 1, at most 32 input and 32
/// output channels, maps of at least 8 × 8. Measured on the CPU configs' layers (2 threads,
/// batch 128): 2× Winograd's speed at 32 → 32 channels on 8 × 8, 1.5× im2col's below. A
/// first layer of 3 → 64 channels (full width) stays faster through im2col.
pub(crate) fn applies(g: &Geom) -> bool {
    g.k == 3 && g.s == 1 && g.p == 1 && g.c <= 32 && g.o <= 32 && g.h >= 8 && g.w >= 8 && g.o > 0
}

/// Whether [`conv_grad_w`] serves this layer's weight gradient: where [`applies`] holds (in a
/// ÷8 VGG19 training step it beat Winograd's at 32 → 32 channels on 8 × 8 maps as well).
pub(crate) fn applies_grad_w(g: &Geom) -> bool {
    applies(g) && g.c <= 32
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
///
/// With `out_mask` (an `[B, O, H, W]` buffer) each output is kept where the mask's element is
/// positive and zeroed elsewhere: the ReLU mask of the layer below, applied to an input gradient
/// as it is written instead of in a pass of its own.
pub(crate) fn conv_fwd(
    g: &Geom,
    x: &[f32],
    w: &[f32],
    bias: Option<&[f32]>,
    relu: bool,
    out_mask: Option<&[f32]>,
    simd: Simd,
) -> Vec<f32> {
    debug_assert!(applies(g));
    if let Some(m) = out_mask {
        assert_eq!(
            m.len(),
            g.b * g.o * g.h * g.w,
            "direct conv: output mask length"
        );
    }
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
            out_mask: out_mask.map(|m| &m[(b * o + o0) * hw..(b * o + o0 + on) * hw]),
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
    /// This unit's planes of the output mask.
    out_mask: Option<&'a [f32]>,
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
                    let keep = t.out_mask.is_none_or(|m| m[oi * hw + q] > 0.0);
                    yb[oi * hw + q] = if keep { t.finish(oi, *a) } else { 0.0 };
                }
            }
        }
    }
}

#[cfg(target_arch = "x86_64")]
mod avx512 {
    use super::{Tile, WBlock, GB, LANES, OT, VT};
    use crate::simd::{first_lanes, lane_sums16};
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
                    if let Some(om) = t.out_mask {
                        let mv = _mm512_maskz_loadu_ps(m, om.as_ptr().add(oi * hw + q0));
                        let pos = _mm512_cmp_ps_mask::<_CMP_GT_OQ>(mv, _mm512_setzero_ps());
                        r = _mm512_maskz_mov_ps(pos, r);
                    }
                    _mm512_mask_storeu_ps(yb.as_mut_ptr().add(oi * hw + q0), m, r);
                }
            }
            v0 += vn;
        }
    }

    /// # Safety
    /// AVX-512F.
    #[target_feature(enable = "avx512f")]
    pub(super) unsafe fn grad_block(blk: &WBlock, sums: &mut [[f32; GB]; GB]) {
        let mut acc = [[_mm512_setzero_ps(); GB]; GB];
        // Rows and columns past the block's repeat its last one (their sums are dropped): the
        // loop then has no branch per lane group.
        let pairs: [(usize, usize, isize); GB] =
            std::array::from_fn(|ki| blk.pair(ki.min(blk.kn - 1)));
        let taps: [usize; GB] = std::array::from_fn(|ki| pairs[ki].1);
        for b in blk.images.0..blk.images.1 {
            let gp: [*const f32; GB] =
                std::array::from_fn(|oi| blk.gy.as_ptr().add(blk.gy_plane(b, oi.min(blk.on - 1))));
            // Each pair's plane, shifted by its tap: masked-off lanes (padding, past the plane)
            // are not read, and the addresses are formed with wrapping arithmetic for that.
            let xp: [*const f32; GB] = std::array::from_fn(|ki| {
                let (ci, _, off) = pairs[ki];
                blk.x.as_ptr().add(blk.x_plane(b, ci)).wrapping_offset(off)
            });
            for (v, m) in blk.masks.iter().enumerate() {
                let q0 = v * LANES;
                let valid: __mmask16 = first_lanes(LANES.min(blk.hw - q0));
                let gv: [__m512; GB] =
                    std::array::from_fn(|oi| _mm512_maskz_loadu_ps(valid, gp[oi].add(q0)));
                let xv: [__m512; GB] = std::array::from_fn(|ki| {
                    _mm512_maskz_loadu_ps(m[taps[ki]], xp[ki].wrapping_add(q0))
                });
                for oi in 0..GB {
                    for ki in 0..GB {
                        acc[oi][ki] = _mm512_fmadd_ps(gv[oi], xv[ki], acc[oi][ki]);
                    }
                }
            }
        }
        let flat: [__m512; GB * GB] = std::array::from_fn(|i| acc[i / GB][i % GB]);
        let s = lane_sums16(&flat);
        for oi in 0..blk.on {
            for ki in 0..blk.kn {
                sums[oi][ki] = s[oi * GB + ki];
            }
        }
    }
}

/// Rows (output channels) and columns (input channel × tap pairs) of a weight-gradient block.
const GB: usize = 4;

/// The weight gradient `[O, C, 3, 3]` of a layer where [`applies_grad_w`] holds, given the (already
/// ReLU-masked) output gradient `gy`. Images are summed in a fixed number of groups (each in
/// image order), and the groups in group order, whatever the thread count.
pub(crate) fn conv_grad_w(g: &Geom, x: &[f32], gy: &[f32], simd: Simd) -> Vec<f32> {
    debug_assert!(applies_grad_w(g));
    let (hw, c, o) = (g.h * g.w, g.c, g.o);
    let masks = tap_masks(g.h, g.w);
    let n = o * c * 9;
    let groups = acc_groups(n).min(g.b.max(1));
    // Images per block pass: enough vectors between two lane reductions on small maps.
    let chunk = (1024 / hw).max(1);
    let accs = run_units(
        groups,
        groups,
        || vec![0f32; n],
        |acc, gi, _| {
            let (b0, b1) = (gi * g.b / groups, (gi + 1) * g.b / groups);
            let mut i0 = b0;
            while i0 < b1 {
                let i1 = (i0 + chunk).min(b1);
                let mut o0 = 0;
                while o0 < o {
                    let on = GB.min(o - o0);
                    let mut k0 = 0;
                    while k0 < c * 9 {
                        let kn = GB.min(c * 9 - k0);
                        let blk = WBlock {
                            hw,
                            w: g.w,
                            c,
                            o,
                            x,
                            gy,
                            images: (i0, i1),
                            masks: &masks,
                            o0,
                            on,
                            k0,
                            kn,
                        };
                        let mut sums = [[0f32; GB]; GB];
                        #[cfg(target_arch = "x86_64")]
                        if simd.avx512() {
                            // SAFETY: simd.avx512() holds only on CPUs with AVX-512F.
                            unsafe { avx512::grad_block(&blk, &mut sums) };
                        } else {
                            grad_block_portable(&blk, &mut sums);
                        }
                        #[cfg(not(target_arch = "x86_64"))]
                        {
                            let _ = simd;
                            grad_block_portable(&blk, &mut sums);
                        }
                        for (oi, row) in sums.iter().enumerate().take(on) {
                            for (ki, v) in row.iter().enumerate().take(kn) {
                                acc[(o0 + oi) * c * 9 + k0 + ki] += *v;
                            }
                        }
                        k0 += kn;
                    }
                    o0 += on;
                }
                i0 = i1;
            }
        },
    );
    sum_accumulators(accs.into_iter().map(Some), n)
}

/// A block of the weight gradient over images `images.0..images.1`: output channels
/// `o0..o0 + on` against the (input channel, tap) pairs `k0..k0 + kn` (pair k is channel k / 9,
/// tap k % 9).
struct WBlock<'a> {
    hw: usize,
    w: usize,
    c: usize,
    o: usize,
    x: &'a [f32],
    gy: &'a [f32],
    images: (usize, usize),
    masks: &'a [[u16; 9]],
    o0: usize,
    on: usize,
    k0: usize,
    kn: usize,
}

impl WBlock<'_> {
    /// (input channel, tap, offset) of pair `ki`.
    fn pair(&self, ki: usize) -> (usize, usize, isize) {
        let k = self.k0 + ki;
        let (ci, t) = (k / 9, k % 9);
        let off = (t as isize / 3 - 1) * self.w as isize + (t as isize % 3 - 1);
        (ci, t, off)
    }
    /// Start of input plane `ci` of image `b`.
    fn x_plane(&self, b: usize, ci: usize) -> usize {
        (b * self.c + ci) * self.hw
    }
    /// Start of output-gradient plane `oi` (of the block) of image `b`.
    fn gy_plane(&self, b: usize, oi: usize) -> usize {
        (b * self.o + self.o0 + oi) * self.hw
    }
}

fn grad_block_portable(blk: &WBlock, sums: &mut [[f32; GB]; GB]) {
    for oi in 0..blk.on {
        for ki in 0..blk.kn {
            let (ci, t, off) = blk.pair(ki);
            let mut acc = [0f32; LANES];
            for b in blk.images.0..blk.images.1 {
                let gs = blk.gy_plane(b, oi);
                let gp = &blk.gy[gs..gs + blk.hw];
                let xs = blk.x_plane(b, ci);
                for (v, m) in blk.masks.iter().enumerate() {
                    for (l, a) in acc.iter_mut().enumerate() {
                        let q = v * LANES + l;
                        if q >= blk.hw {
                            continue;
                        }
                        let xv = if m[t] >> l & 1 == 1 {
                            blk.x[xs + (q as isize + off) as usize]
                        } else {
                            0.0
                        };
                        *a = gp[q].mul_add(xv, *a);
                    }
                }
            }
            sums[oi][ki] = lane_sum(&acc);
        }
    }
}
