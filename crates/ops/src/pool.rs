//! 2x2 / stride-2 max-pool (floor mode) on contiguous f32 NCHW data.
//!
//! Backward follows PyTorch: the whole output gradient goes to the *first* maximum of each
//! window in scan order (top-left, top-right, bottom-left, bottom-right); trailing odd
//! rows/columns receive zero gradient.

use rayon::prelude::*;

/// Planes per rayon task (keeps tasks big enough for small maps).
fn planes_per_task(plane: usize) -> usize {
    (16384 / plane.max(1)).max(1)
}

pub(crate) fn pool_fwd(x: &[f32], planes: usize, h: usize, w: usize) -> Vec<f32> {
    let (ho, wo) = (h / 2, w / 2);
    // Every output element is written below.
    let mut y = crate::conv::alloc_overwritten(planes * ho * wo);
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
                    let yr = &mut yp[oh * wo..(oh + 1) * wo];
                    for (ow, yv) in yr.iter_mut().enumerate() {
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
            }
        });
    y
}

pub(crate) fn pool_bwd(x: &[f32], gy: &[f32], planes: usize, h: usize, w: usize) -> Vec<f32> {
    let (ho, wo) = (h / 2, w / 2);
    // The windows cover every input element when both sizes are even; an odd trailing row or
    // column gets no gradient and must start at zero.
    let mut gx = if h.is_multiple_of(2) && w.is_multiple_of(2) {
        crate::conv::alloc_overwritten(planes * h * w)
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
                    let gr = &gyp[oh * wo..(oh + 1) * wo];
                    // Branch-free first-maximum selection (vectorisable).
                    for ow in 0..wo {
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
            }
        });
    gx
}
