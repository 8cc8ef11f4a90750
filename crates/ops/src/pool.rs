//! 2x2 / stride-2 max-pool (floor mode) on contiguous f32 NCHW data.
//!
//! Backward follows PyTorch: the whole output gradient goes to the *first* maximum of each
//! window in scan order (top-left, top-right, bottom-left, bottom-right); trailing odd
//! rows/columns receive zero gradient.

use crate::simd::Simd;
use rayon::prelude::*;

/// Planes per rayon task (keeps tasks big enough for small maps).
fn planes_per_task(plane: usize) -> usize {
    (16384 / plane.max(1)).max(1)
}

pub(crate) fn pool_fwd(x: &[f32], planes: usize, h: usize, w: usize, simd: Simd) -> Vec<f32> {
    let (ho, wo) = (h / 2, w / 2);
    // Every output element is written below.
    let mut y = crate::par::alloc_overwritten(planes * ho * wo);
    if y.is_empty() {
        return y;
    }
    let ppt = planes_per_task(h * w);
    y.par_chunks_mut(ho * wo * ppt)
        .zip(x.par_chunks(h * w * ppt))
        .for_each(|(yc, xc)| {
            for (yp, xp) in yc.chunks_mut(ho * wo).zip(xc.chunks(h * w)) {
                for oh in 0..ho {
                    let r0 = &xp[2 * oh * w..2 * oh * w + 2 * wo];
                    let r1 = &xp[(2 * oh + 1) * w..(2 * oh + 1) * w + 2 * wo];
                    fwd_row(r0, r1, &mut yp[oh * wo..(oh + 1) * wo], simd);
                }
            }
        });
    y
}

/// One output row: `y[i]` is the first maximum of window `i` of input rows `r0`, `r1`
/// (`2 · y.len()` columns each).
pub(crate) fn fwd_row(r0: &[f32], r1: &[f32], y: &mut [f32], simd: Simd) {
    #[cfg(target_arch = "x86_64")]
    if simd.avx512() {
        // SAFETY: simd.avx512() holds only where the CPU has AVX-512F (Simd::new), the kernel's
        // one requirement: it checks the slice lengths itself.
        return unsafe { avx512::fwd_row(r0, r1, y) };
    }
    for (ow, yv) in y.iter_mut().enumerate() {
        let mut m = r0[2 * ow];
        if r0[2 * ow + 1] > m {
            m = r0[2 * ow + 1];
        }
        if r1[2 * ow] > m {
            m = r1[2 * ow];
        }
        if r1[2 * ow + 1] > m {
            m = r1[2 * ow + 1];
        }
        *yv = m;
    }
}

pub(crate) fn pool_bwd(
    x: &[f32],
    gy: &[f32],
    planes: usize,
    h: usize,
    w: usize,
    simd: Simd,
) -> Vec<f32> {
    let (ho, wo) = (h / 2, w / 2);
    // The windows cover every input element when both sizes are even; an odd trailing row or
    // column gets no gradient and must start at zero.
    let mut gx = if h.is_multiple_of(2) && w.is_multiple_of(2) {
        crate::par::alloc_overwritten(planes * h * w)
    } else {
        vec![0.0f32; planes * h * w]
    };
    if gx.is_empty() || ho * wo == 0 {
        return gx;
    }
    let ppt = planes_per_task(h * w);
    gx.par_chunks_mut(h * w * ppt)
        .zip(x.par_chunks(h * w * ppt))
        .zip(gy.par_chunks(ho * wo * ppt))
        .for_each(|((gc, xc), gyc)| {
            for ((gp, xp), gyp) in gc
                .chunks_mut(h * w)
                .zip(xc.chunks(h * w))
                .zip(gyc.chunks(ho * wo))
            {
                for oh in 0..ho {
                    let (r0, r1) = xp[2 * oh * w..(2 * oh + 2) * w].split_at(w);
                    let (g0, g1) = gp[2 * oh * w..(2 * oh + 2) * w].split_at_mut(w);
                    let n = 2 * wo;
                    bwd_row(
                        [&r0[..n], &r1[..n]],
                        &gyp[oh * wo..(oh + 1) * wo],
                        [&mut g0[..n], &mut g1[..n]],
                        simd,
                    );
                }
            }
        });
    gx
}

/// One output row of the backward: each gradient of `gr` goes to the first maximum of its
/// window in input rows `r`, zeros to the other three cells of `g`.
fn bwd_row([r0, r1]: [&[f32]; 2], gr: &[f32], [g0, g1]: [&mut [f32]; 2], simd: Simd) {
    #[cfg(target_arch = "x86_64")]
    if simd.avx512() {
        // SAFETY: as in fwd_row.
        return unsafe { avx512::bwd_row([r0, r1], gr, [g0, g1]) };
    }
    // Branch-free first-maximum selection (vectorisable).
    for ow in 0..gr.len() {
        let (a, b) = (r0[2 * ow], r0[2 * ow + 1]);
        let (c, d) = (r1[2 * ow], r1[2 * ow + 1]);
        let sb = b > a;
        let m1 = if sb { b } else { a };
        let sc = c > m1;
        let m2 = if sc { c } else { m1 };
        let sd = d > m2;
        let gv = gr[ow].to_bits();
        let pick = |cond: bool| f32::from_bits(gv & (cond as u32).wrapping_neg());
        g0[2 * ow] = pick(!sb && !sc && !sd);
        g0[2 * ow + 1] = pick(sb && !sc && !sd);
        g1[2 * ow] = pick(sc && !sd);
        g1[2 * ow + 1] = pick(sd);
    }
}

/// The row kernels on 16 windows at a time: two loads per input row, split into the windows'
/// left and right columns by permutes; the same comparisons as the portable code (`>` is an
/// ordered compare: a NaN never displaces the first value).
#[cfg(target_arch = "x86_64")]
mod avx512 {
    use crate::simd::{first_lanes, perm};
    use std::arch::x86_64::*;

    /// Left and right columns of 16 windows of row `r` from column `2 · i`, and the masks of
    /// the two 16-column halves.
    #[target_feature(enable = "avx512f")]
    unsafe fn split(r: &[f32], i: usize, n: usize) -> (__m512, __m512, [u16; 2]) {
        let k = [first_lanes(2 * n), first_lanes((2 * n).saturating_sub(16))];
        assert!(2 * (i + n) <= r.len());
        // SAFETY: the masked lanes lie inside r (checked above).
        let p0 = _mm512_maskz_loadu_ps(k[0], r.as_ptr().add(2 * i));
        // (Wrapping: with an empty mask the second half may start past the row.)
        let p1 = _mm512_maskz_loadu_ps(k[1], r.as_ptr().wrapping_add(2 * i + 16));
        let (even, odd) = (
            _mm512_loadu_epi32(perm::EVEN.as_ptr()),
            _mm512_loadu_epi32(perm::ODD.as_ptr()),
        );
        (
            _mm512_permutex2var_ps(p0, even, p1),
            _mm512_permutex2var_ps(p0, odd, p1),
            k,
        )
    }

    /// Running first maximum: `(m', whether b replaced m)`.
    #[target_feature(enable = "avx512f")]
    unsafe fn step(m: __m512, b: __m512) -> (__m512, u16) {
        let gt = _mm512_cmp_ps_mask::<_CMP_GT_OQ>(b, m);
        (_mm512_mask_blend_ps(gt, m, b), gt)
    }

    /// The first maximum of windows `i..i + n` of rows `r0`, `r1`: its value, the lanes where
    /// the top-right, bottom-left, bottom-right value took over, and the column masks of
    /// [`split`].
    #[target_feature(enable = "avx512f")]
    unsafe fn first_max([r0, r1]: [&[f32]; 2], i: usize, n: usize) -> (__m512, [u16; 3], [u16; 2]) {
        let (a, b, k) = split(r0, i, n);
        let (c, d, _) = split(r1, i, n);
        let (m, sb) = step(a, b);
        let (m, sc) = step(m, c);
        let (m, sd) = step(m, d);
        (m, [sb, sc, sd], k)
    }

    /// # Safety
    /// The CPU must support AVX-512F (the slice lengths are checked).
    #[target_feature(enable = "avx512f")]
    pub(super) unsafe fn fwd_row(r0: &[f32], r1: &[f32], y: &mut [f32]) {
        let mut i = 0;
        while i < y.len() {
            let n = (y.len() - i).min(16);
            let (m, _, _) = first_max([r0, r1], i, n);
            // SAFETY: lanes i..i + n of y.
            _mm512_mask_storeu_ps(y.as_mut_ptr().add(i), first_lanes(n), m);
            i += n;
        }
    }

    /// # Safety
    /// The CPU must support AVX-512F (the slice lengths are checked).
    #[target_feature(enable = "avx512f")]
    pub(super) unsafe fn bwd_row([r0, r1]: [&[f32]; 2], gr: &[f32], [g0, g1]: [&mut [f32]; 2]) {
        assert!(g0.len() >= 2 * gr.len() && g1.len() >= 2 * gr.len());
        let (lo, hi) = (
            _mm512_loadu_epi32(perm::LO.as_ptr()),
            _mm512_loadu_epi32(perm::HI.as_ptr()),
        );
        let mut i = 0;
        while i < gr.len() {
            let n = (gr.len() - i).min(16);
            let (_, [sb, sc, sd], k) = first_max([r0, r1], i, n);
            // SAFETY (loads, stores): lanes i..i + n of gr, columns 2i..2(i + n) of g0, g1.
            let gv = _mm512_maskz_loadu_ps(first_lanes(n), gr.as_ptr().add(i));
            let pick = |k: u16| _mm512_maskz_mov_ps(k, gv);
            let rows = [
                (pick(!sb & !sc & !sd), pick(sb & !sc & !sd), g0.as_mut_ptr()),
                (pick(sc & !sd), pick(sd), g1.as_mut_ptr()),
            ];
            for (left, right, g) in rows {
                let g = g.add(2 * i);
                _mm512_mask_storeu_ps(g, k[0], _mm512_permutex2var_ps(left, lo, right));
                _mm512_mask_storeu_ps(
                    g.wrapping_add(16),
                    k[1],
                    _mm512_permutex2var_ps(left, hi, right),
                );
            }
            i += n;
        }
    }
}
