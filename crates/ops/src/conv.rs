//! CPU f32 convolution kernels: im2col / col2im + `gemm`, multi-threaded with rayon; 3×3
//! stride-1 layers go to [`crate::winograd`] where the options' algorithm takes it.
//!
//! Layout conventions (all row-major, contiguous):
//! * `x`   `[B, C, H, W]`
//! * `w`   `[O, C, K, K]`, seen as the matrix `W [O, KK]` with `KK = C*K*K`
//! * `y`   `[B, O, Ho, Wo]`, `P = Ho*Wo`
//!
//! Work is split into *units*: either a group of `nb > 1` whole images (small feature maps,
//! so that the gemm `N` dimension is large enough), or one image processed in row *chunks*
//! (large feature maps, so that the im2col buffer of a chunk stays cache-sized). Units are
//! spread over rayon worker threads ([`run_units`]); each thread keeps its scratch buffers in
//! thread-local storage. The units depend on the geometry only, so the results do not depend
//! on the thread count (see [`crate::par`]).

use crate::geom::Geom;
use crate::options::{ConvAlgo, ConvOptions};
use crate::par::{
    acc_groups, alloc_overwritten, gemm_f32, grow, run_units, sum_accumulators, with_scratch,
    KeptBuf, SendPtr,
};
use crate::simd::Simd;
use std::cell::RefCell;

/// Small feature maps are grouped into at least this many units (when there are that many
/// images), so that threads get work; more would shrink the gemms (and with them the speed).
const MIN_UNITS: usize = 4;

/// A unit of work: images `b0..b0+nb`; when `nb == 1` the image is processed in chunks
/// of `rows` output rows.
#[derive(Clone, Copy, Debug)]
struct Unit {
    b0: usize,
    nb: usize,
}

#[derive(Clone, Copy, Debug)]
struct Plan {
    /// images per unit
    nb: usize,
    /// output rows per chunk when nb == 1 (== ho when the whole image fits)
    rows: usize,
    nunits: usize,
}

/// The units of a convolution: a function of the geometry and the tiling options only.
fn plan(g: &Geom, opts: &ConvOptions) -> Plan {
    let p = g.npix().max(1);
    let tile_cols = (opts.im2col_tile_bytes / (4 * g.kk().max(1))).max(g.wo.max(1));
    let min_cols = opts.im2col_min_cols.max(1);
    if p >= min_cols {
        // One image per unit, chunked by rows.
        let rows_max = (tile_cols / g.wo.max(1)).clamp(1, g.ho.max(1));
        let nchunks = g.ho.div_ceil(rows_max);
        let rows = g.ho.div_ceil(nchunks).max(1);
        Plan {
            nb: 1,
            rows,
            nunits: g.b,
        }
    } else {
        // Group images so that the gemm has at least `min_cols` columns, but keep at least
        // MIN_UNITS units to feed the threads; then even out the group sizes.
        let nb = min_cols.div_ceil(p).min(g.b.div_ceil(MIN_UNITS)).max(1);
        let nb = g.b.div_ceil(g.b.div_ceil(nb)).max(1);
        let nunits = g.b.div_ceil(nb);
        Plan {
            nb,
            rows: g.ho,
            nunits,
        }
    }
}

impl Plan {
    fn unit(&self, g: &Geom, i: usize) -> Unit {
        let b0 = i * self.nb;
        Unit {
            b0,
            nb: self.nb.min(g.b - b0),
        }
    }
}

#[derive(Default)]
struct Scratch {
    col: Vec<f32>,
    g: Vec<f32>,
    out: Vec<f32>,
}

thread_local! {
    static SCRATCH: RefCell<Scratch> = RefCell::new(Scratch::default());
}

/// Output-column range `[lo, hi)` of a stride-1 row for kernel column `kw`: the columns whose
/// input column `ow + kw - p` lies inside `[0, w)`.
#[inline]
fn s1_valid(g: &Geom, kw: usize) -> (usize, usize) {
    let lo = g.p.saturating_sub(kw).min(g.wo);
    let hi = (g.w + g.p).saturating_sub(kw).min(g.wo).max(lo);
    (lo, hi)
}

/// im2col of images `b0..b0+nb`, output rows `oh0..oh1`, into `col` (`[KK, ld]`); image `j`
/// occupies columns `j*seg..(j+1)*seg` with `seg = (oh1-oh0)*wo`.
#[allow(clippy::too_many_arguments)]
fn im2col(
    g: &Geom,
    x: &[f32],
    b0: usize,
    nb: usize,
    oh0: usize,
    oh1: usize,
    col: &mut [f32],
    ld: usize,
) {
    let (k, s, p, wo) = (g.k, g.s, g.p, g.wo);
    let seg = (oh1 - oh0) * wo;
    for j in 0..nb {
        let xi = &x[(b0 + j) * g.in_img()..(b0 + j + 1) * g.in_img()];
        for ci in 0..g.c {
            let xc = &xi[ci * g.h * g.w..(ci + 1) * g.h * g.w];
            for kh in 0..k {
                for kw in 0..k {
                    let r = (ci * k + kh) * k + kw;
                    let drow = &mut col[r * ld + j * seg..r * ld + (j + 1) * seg];
                    let (lo, hi) = s1_valid(g, kw);
                    if s == 1 && wo == g.w && wo <= SHORT_ROW {
                        im2col_same_short(g, xc, kh, kw, (lo, hi), oh0, drow);
                        continue;
                    }
                    for (t, oh) in (oh0..oh1).enumerate() {
                        let d = &mut drow[t * wo..(t + 1) * wo];
                        let ih = (oh * s + kh) as isize - p as isize;
                        if ih < 0 || ih >= g.h as isize {
                            d.fill(0.0);
                            continue;
                        }
                        let src = &xc[ih as usize * g.w..(ih as usize + 1) * g.w];
                        if s == 1 {
                            d[..lo].fill(0.0);
                            d[lo..hi].copy_from_slice(&src[lo + kw - p..hi + kw - p]);
                            d[hi..].fill(0.0);
                        } else {
                            for (ow, dv) in d.iter_mut().enumerate() {
                                let iw = (ow * s + kw) as isize - p as isize;
                                *dv = if iw >= 0 && (iw as usize) < g.w {
                                    src[iw as usize]
                                } else {
                                    0.0
                                };
                            }
                        }
                    }
                }
            }
        }
    }
}

/// Rows at most this wide take [`im2col_same_short`]: at 32×32 input most layers have rows of
/// 2–16 pixels, where a `fill` + `copy_from_slice` per row (library calls for a few floats)
/// cost more than the data they move.
const SHORT_ROW: usize = 32;

/// im2col rows of one `(channel, kh, kw)` for a stride-1 "same" convolution (`wo == w`), output
/// rows `oh0..`: the valid rows are the input plane shifted by a constant flat offset, so they
/// are one copy; then the rows above/below the image and the (at most `p` per side) columns that
/// wrapped around a row edge are zeroed.
fn im2col_same_short(
    g: &Geom,
    xc: &[f32],
    kh: usize,
    kw: usize,
    (lo, hi): (usize, usize),
    oh0: usize,
    drow: &mut [f32],
) {
    let (w, p) = (g.w, g.p as isize);
    let rows = drow.len() / w;
    // Output row t reads input row oh0 + t + kh − p.
    let first = oh0 as isize + kh as isize - p;
    let t_lo = (-first).clamp(0, rows as isize) as usize;
    let t_hi = (g.h as isize - first).clamp(t_lo as isize, rows as isize) as usize;
    drow[..t_lo * w].fill(0.0);
    drow[t_hi * w..].fill(0.0);
    if t_lo == t_hi {
        return;
    }
    // drow[i] = xc[i + base] on the valid rows, clipped to the plane; what the clipping leaves
    // out is only ever a wrapped column, zeroed below.
    let base = first * w as isize + kw as isize - p;
    let start = ((t_lo * w) as isize).max(-base) as usize;
    let end = ((t_hi * w) as isize).min(xc.len() as isize - base) as usize;
    if start < end {
        let (a, b) = (
            (start as isize + base) as usize,
            (end as isize + base) as usize,
        );
        drow[start..end].copy_from_slice(&xc[a..b]);
    }
    for d in drow[t_lo * w..t_hi * w].chunks_exact_mut(w) {
        for v in &mut d[..lo] {
            *v = 0.0;
        }
        for v in &mut d[hi..] {
            *v = 0.0;
        }
    }
}

/// Adjoint of [`im2col`]: scatter-adds `col` (`nb` images, output rows `oh0..oh1`) into `gx`,
/// the input gradient of those `nb` whole images.
fn col2im(g: &Geom, col: &[f32], ld: usize, nb: usize, oh0: usize, oh1: usize, gx: &mut [f32]) {
    let (k, s, p, wo) = (g.k, g.s, g.p, g.wo);
    let seg = (oh1 - oh0) * wo;
    for (j, gi) in gx.chunks_exact_mut(g.in_img()).take(nb).enumerate() {
        for ci in 0..g.c {
            let gc = &mut gi[ci * g.h * g.w..(ci + 1) * g.h * g.w];
            for kh in 0..k {
                for kw in 0..k {
                    let r = (ci * k + kh) * k + kw;
                    let srow = &col[r * ld + j * seg..r * ld + (j + 1) * seg];
                    let (lo, hi) = s1_valid(g, kw);
                    for (t, oh) in (oh0..oh1).enumerate() {
                        let sv = &srow[t * wo..(t + 1) * wo];
                        let ih = (oh * s + kh) as isize - p as isize;
                        if ih < 0 || ih >= g.h as isize {
                            continue;
                        }
                        let dst = &mut gc[ih as usize * g.w..(ih as usize + 1) * g.w];
                        if s == 1 {
                            for (d, v) in dst[lo + kw - p..hi + kw - p].iter_mut().zip(&sv[lo..hi])
                            {
                                *d += *v;
                            }
                        } else {
                            for (ow, v) in sv.iter().enumerate() {
                                let iw = (ow * s + kw) as isize - p as isize;
                                if iw >= 0 && (iw as usize) < g.w {
                                    dst[iw as usize] += *v;
                                }
                            }
                        }
                    }
                }
            }
        }
    }
}

/// Iterates the `(oh0, oh1)` chunks of a unit.
fn chunks(g: &Geom, pl: &Plan) -> impl Iterator<Item = (usize, usize)> {
    let ho = g.ho;
    let rows = if pl.nb == 1 {
        pl.rows.max(1)
    } else {
        ho.max(1)
    };
    (0..ho.div_ceil(rows)).map(move |i| (i * rows, ((i + 1) * rows).min(ho)))
}

/// The kernel that runs a forward convolution (or an input gradient computed as one).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum FwdPath {
    /// 2 × 2 maps as one dense product (dense.rs).
    Dense,
    /// Few channels, maps from 8 × 8 (direct.rs).
    Direct,
    /// Winograd F(2×2, 3×3) (winograd/).
    Winograd,
    /// im2col + gemm (here).
    Im2col,
}

/// Which kernel `opts` gives the geometry `g`, in order of precedence.
fn fwd_path(g: &Geom, opts: &ConvOptions) -> FwdPath {
    if crate::dense::applies(g, opts.algo) {
        FwdPath::Dense
    } else if opts.algo == ConvAlgo::Auto && crate::direct::applies(g) {
        FwdPath::Direct
    } else if crate::winograd::applies(g, opts.algo) {
        FwdPath::Winograd
    } else {
        FwdPath::Im2col
    }
}

/// `row + bias`, then ReLU when `relu`: the im2col paths' epilogue over one channel's run of
/// output pixels.
fn bias_relu(row: &mut [f32], bias: Option<f32>, relu: bool) {
    match (bias, relu) {
        (Some(bv), true) => row.iter_mut().for_each(|v| *v = (*v + bv).max(0.0)),
        (Some(bv), false) => row.iter_mut().for_each(|v| *v += bv),
        (None, true) => row.iter_mut().for_each(|v| *v = v.max(0.0)),
        (None, false) => {}
    }
}

/// Forward convolution (+ optional bias, optional ReLU). Returns `y` `[B, O, Ho, Wo]`.
pub(crate) fn conv_fwd(
    g: &Geom,
    x: &[f32],
    w: &[f32],
    bias: Option<&[f32]>,
    relu: bool,
    opts: &ConvOptions,
) -> Vec<f32> {
    match fwd_path(g, opts) {
        FwdPath::Dense => return crate::dense::conv_fwd(g, x, w, bias, relu),
        FwdPath::Direct => {
            return crate::direct::conv_fwd(g, x, w, bias, relu, None, Simd::new(opts.isa))
        }
        FwdPath::Winograd => {
            let out = crate::winograd::Epilogue {
                bias,
                relu,
                pool: false,
            };
            return crate::winograd::conv_fwd(g, x, w, out, opts);
        }
        FwdPath::Im2col => {}
    }
    // Every output pixel is written: by the gemm (nb == 1) or by the scatter below.
    let mut y = alloc_overwritten(g.b * g.out_img());
    if y.is_empty() {
        return y;
    }
    let pl = plan(g, opts);
    let yp = SendPtr(y.as_mut_ptr());
    let (kk, o, np) = (g.kk(), g.o, g.npix());
    // Units write disjoint outputs: every unit its own group.
    run_units(
        pl.nunits,
        pl.nunits,
        || (),
        |_, ui, par| {
            let u = pl.unit(g, ui);
            with_scratch(&SCRATCH, |sc| {
                for (oh0, oh1) in chunks(g, &pl) {
                    let seg = (oh1 - oh0) * g.wo;
                    let n = u.nb * seg;
                    // rhs: the im2col matrix [KK, n]
                    let (rhs, rhs_rs): (*const f32, usize) = if g.pointwise() && u.nb == 1 {
                        (x[u.b0 * g.in_img() + oh0 * g.w..].as_ptr(), g.h * g.w)
                    } else {
                        let col = grow(&mut sc.col, kk * n);
                        im2col(g, x, u.b0, u.nb, oh0, oh1, col, n);
                        (col.as_ptr(), n)
                    };
                    // dst: directly into y for single images, else a [O, n] scratch.
                    let (dst, dst_rs) = if u.nb == 1 {
                        // SAFETY: row oh0 of channel 0 of image b0 < B lies inside y.
                        (unsafe { yp.get().add(u.b0 * g.out_img() + oh0 * g.wo) }, np)
                    } else {
                        (grow(&mut sc.out, o * n).as_mut_ptr(), n)
                    };
                    // SAFETY: lhs is w [O, KK]. rhs [KK, n] is the im2col scratch (kk·n floats)
                    // or, pointwise, rows oh0..oh1 of each channel of image b0 inside x. dst
                    // [O, n] is the o·n scratch or rows oh0..oh1 of each channel of image b0
                    // in y, which only this unit writes; neither overlaps an input.
                    unsafe {
                        gemm_f32(
                            o,
                            n,
                            kk,
                            dst,
                            dst_rs,
                            false,
                            w.as_ptr(),
                            (1, kk),
                            rhs,
                            (1, rhs_rs),
                            par,
                        );
                    }
                    // epilogue: bias + relu, scatter grouped results
                    for j in 0..u.nb {
                        for oc in 0..o {
                            // SAFETY: seg floats of channel oc of image b0 + j < B from row oh0,
                            // inside y; only this unit writes its images, and the gemm that
                            // wrote them has returned.
                            let yrow = unsafe {
                                std::slice::from_raw_parts_mut(
                                    yp.get()
                                        .add((u.b0 + j) * g.out_img() + oc * np + oh0 * g.wo),
                                    seg,
                                )
                            };
                            if u.nb > 1 {
                                yrow.copy_from_slice(
                                    &sc.out[oc * n + j * seg..oc * n + (j + 1) * seg],
                                );
                            }
                            bias_relu(yrow, bias.map(|b| b[oc]), relu);
                        }
                    }
                }
            });
        },
    );
    y
}

/// `maxpool2x2(relu(conv(x, w) + bias))` (floor mode), an inference pass's conv + pool,
/// returned as `[B, O, Ho/2, Wo/2]`, without writing the conv output to memory and reading it
/// back where the algorithm allows: Winograd pools each 2 × 2 output tile in its output
/// transform; im2col with one image per unit (large maps, such as SVGG5's first layer at
/// 96 × 96) runs chunks of an even number of output rows through the gemm into a cache-sized
/// scratch and pools them from there. Elsewhere it is the conv, then the pool. The same bits
/// either way: the chunks' gemms add in the same order, and the pool only compares.
pub(crate) fn conv_fwd_relu_pool(
    g: &Geom,
    x: &[f32],
    w: &[f32],
    bias: Option<&[f32]>,
    opts: &ConvOptions,
) -> Vec<f32> {
    let simd = Simd::new(opts.isa);
    let (ph, pw) = (g.ho / 2, g.wo / 2);
    match fwd_path(g, opts) {
        FwdPath::Winograd => {
            let out = crate::winograd::Epilogue {
                bias,
                relu: true,
                pool: true,
            };
            return crate::winograd::conv_fwd(g, x, w, out, opts);
        }
        FwdPath::Im2col if plan(g, opts).nb == 1 && !g.pointwise() && ph * pw * g.o > 0 => {}
        _ => {
            let y = conv_fwd(g, x, w, bias, true, opts);
            return crate::pool::pool_fwd(&y, g.b * g.o, g.ho, g.wo, simd);
        }
    }
    // Every pooled pixel is written below.
    let mut y = alloc_overwritten(g.b * g.o * ph * pw);
    let (kk, o, wo) = (g.kk(), g.o, g.wo);
    // Output rows per chunk: even, and few enough that the chunk's im2col matrix and conv
    // output stay within the im2col tile.
    let row_bytes = 4 * wo * (kk + o);
    let rows = ((opts.im2col_tile_bytes / row_bytes) / 2 * 2).clamp(2, 2 * ph);
    let yp = SendPtr(y.as_mut_ptr());
    run_units(
        g.b,
        g.b,
        || (),
        |_, b, par| {
            with_scratch(&SCRATCH, |sc| {
                let mut oh0 = 0;
                while oh0 < 2 * ph {
                    let oh1 = (oh0 + rows).min(2 * ph);
                    let n = (oh1 - oh0) * wo;
                    let col = grow(&mut sc.col, kk * n);
                    im2col(g, x, b, 1, oh0, oh1, col, n);
                    let out = grow(&mut sc.out, o * n);
                    // SAFETY: lhs is w [O, KK], rhs the im2col scratch [KK, n], dst the o·n
                    // scratch; none overlaps another.
                    unsafe {
                        gemm_f32(
                            o,
                            n,
                            kk,
                            out.as_mut_ptr(),
                            n,
                            false,
                            w.as_ptr(),
                            (1, kk),
                            col.as_ptr(),
                            (1, n),
                            par,
                        );
                    }
                    for (oc, chunk) in out[..o * n].chunks_exact_mut(n).enumerate() {
                        bias_relu(chunk, bias.map(|b| b[oc]), true);
                        for (r, pair) in chunk.chunks_exact(2 * wo).enumerate() {
                            let (r0, r1) = pair.split_at(wo);
                            // SAFETY: pooled row oh0/2 + r < ph of channel oc of image b lies
                            // inside y, and only this unit writes image b.
                            let dst = unsafe {
                                std::slice::from_raw_parts_mut(
                                    yp.get().add(((b * o + oc) * ph + oh0 / 2 + r) * pw),
                                    pw,
                                )
                            };
                            crate::pool::fwd_row(&r0[..2 * pw], &r1[..2 * pw], dst, simd);
                        }
                    }
                    oh0 = oh1;
                }
            });
        },
    );
    y
}

/// Gradients of a convolution. `gy` is the gradient w.r.t. the op's output; when `y_relu` is
/// given, the op was `relu(conv)` with output `y_relu`, and `gy` is masked by `y_relu > 0`.
pub(crate) struct ConvGrads {
    pub gx: Option<Vec<f32>>,
    pub gw: Option<Vec<f32>>,
    pub gb: Option<Vec<f32>>,
}

/// Sum with 16 independent accumulators (vectorisable, unlike a sequential f32 fold).
#[inline]
fn sum_f32(v: &[f32]) -> f32 {
    let mut acc = [0f32; 16];
    let mut it = v.chunks_exact(16);
    for ch in &mut it {
        for (a, x) in acc.iter_mut().zip(ch) {
            *a += *x;
        }
    }
    acc.iter().sum::<f32>() + it.remainder().iter().sum::<f32>()
}

/// The ReLU-masked output gradient, a temporary of the backward pass: kept, so that a backward
/// call does not allocate and page-fault a fresh activation-sized buffer.
static MASK_BUF: KeptBuf = KeptBuf::new();

/// `out = gy * (y > 0)` in parallel (branch-free select, vectorisable).
fn relu_mask_into(out: &mut [f32], gy: &[f32], y: &[f32]) {
    use rayon::prelude::*;
    const CH: usize = 1 << 15;
    out.par_chunks_mut(CH)
        .zip(gy.par_chunks(CH))
        .zip(y.par_chunks(CH))
        .for_each(|((o, g), y)| {
            let n = o.len();
            let (g, y) = (&g[..n], &y[..n]);
            for i in 0..n {
                let m = ((y[i] > 0.0) as u32).wrapping_neg();
                o[i] = f32::from_bits(g[i].to_bits() & m);
            }
        });
}

/// `g = g · (m > 0)` in place, in parallel: a ReLU mask applied to a gradient (zero where the
/// mask is not positive, NaN included).
pub(crate) fn mask_where_positive(g: &mut [f32], m: &[f32]) {
    use rayon::prelude::*;
    assert_eq!(g.len(), m.len(), "mask length");
    const CH: usize = 1 << 15;
    g.par_chunks_mut(CH)
        .zip(m.par_chunks(CH))
        .for_each(|(g, m)| {
            g.iter_mut()
                .zip(m)
                .for_each(|(g, m)| *g = if *m > 0.0 { *g } else { 0.0 })
        });
}

/// Gradients of a convolution (see [`ConvGrads`]).
///
/// With `gx_mask` (shaped like `x`) the input gradient is zeroed where the mask is not positive:
/// the ReLU mask of the layer below (whose output is `x`), applied as the gradient is written.
#[allow(clippy::too_many_arguments)]
pub(crate) fn conv_bwd(
    g: &Geom,
    x: &[f32],
    w: &[f32],
    gy: &[f32],
    y_relu: Option<&[f32]>,
    gx_mask: Option<&[f32]>,
    need_x: bool,
    need_w: bool,
    need_b: bool,
    opts: &ConvOptions,
) -> ConvGrads {
    match y_relu {
        Some(y) if need_x || need_w || need_b => MASK_BUF.with(|buf| {
            let masked = grow(buf, gy.len());
            relu_mask_into(masked, gy, y);
            conv_bwd_masked(g, x, w, masked, gx_mask, need_x, need_w, need_b, opts)
        }),
        _ => conv_bwd_masked(g, x, w, gy, gx_mask, need_x, need_w, need_b, opts),
    }
}

/// [`conv_bwd`] given the output gradient of the convolution itself (ReLU already applied).
#[allow(clippy::too_many_arguments)]
fn conv_bwd_masked(
    g: &Geom,
    x: &[f32],
    w: &[f32],
    gy: &[f32],
    gx_mask: Option<&[f32]>,
    need_x: bool,
    need_w: bool,
    need_b: bool,
    opts: &ConvOptions,
) -> ConvGrads {
    if let Some(m) = gx_mask {
        assert_eq!(
            m.len(),
            x.len(),
            "conv backward: input-gradient mask length"
        );
    }
    // Whether gx still needs `gx_mask` applied after it is computed.
    let mut mask_after = gx_mask.is_some();
    let (kk, o, np) = (g.kk(), g.o, g.npix());
    // Stride 1: the input gradient is a convolution of the output gradient with the flipped,
    // transposed kernel (padding K-1-p), computed by `conv_fwd` directly into gx: a gemm with
    // depth O*K*K and no col2im scatter.
    let flipped = g.s == 1 && g.p < g.k;
    let mut gx = None;
    if need_x && flipped {
        let gg =
            Geom::new(g.b, o, g.ho, g.wo, g.c, g.k, 1, g.k - 1 - g.p).expect("transposed geometry");
        debug_assert_eq!((gg.ho, gg.wo), (g.h, g.w));
        let path = fwd_path(&gg, opts);
        gx = Some(if path == FwdPath::Winograd {
            crate::winograd::conv_input_grad(&gg, gy, w, opts)
        } else {
            let k2 = g.k * g.k;
            let mut wf = alloc_overwritten(w.len());
            for oc in 0..o {
                for ci in 0..g.c {
                    let src = &w[(oc * g.c + ci) * k2..(oc * g.c + ci + 1) * k2];
                    let dst = &mut wf[(ci * o + oc) * k2..(ci * o + oc + 1) * k2];
                    for (d, s) in dst.iter_mut().zip(src.iter().rev()) {
                        *d = *s;
                    }
                }
            }
            if path == FwdPath::Direct {
                mask_after = false;
                crate::direct::conv_fwd(&gg, gy, &wf, None, false, gx_mask, Simd::new(opts.isa))
            } else {
                conv_fwd(&gg, gy, &wf, None, false, opts)
            }
        });
    }
    // The weight gradient of a 3×3 stride-1 layer: the direct kernel's with few input channels
    // (no im2col copy), else Winograd's where it applies.
    let direct_w = need_w && opts.algo == ConvAlgo::Auto && crate::direct::applies_grad_w(g);
    let dense_w = need_w && crate::dense::applies(g, opts.algo);
    let dense_gw = dense_w.then(|| crate::dense::conv_grad_w(g, x, gy));
    let wino_w = need_w && !direct_w && !dense_w && crate::winograd::applies(g, opts.algo);
    let wino_gw = wino_w.then(|| crate::winograd::conv_grad_w(g, x, gy, opts));
    let direct_gw = direct_w.then(|| crate::direct::conv_grad_w(g, x, gy, Simd::new(opts.isa)));
    let need_w = need_w && !wino_w && !direct_w && !dense_w;
    let col2im_x = need_x && !flipped;
    if col2im_x {
        gx = Some(vec![0.0f32; g.b * g.in_img()]);
    }
    let gxp = SendPtr(gx.as_mut().map_or(std::ptr::null_mut(), |v| v.as_mut_ptr()));
    let pl = plan(g, opts);
    let any = need_w || need_b || col2im_x;
    // A fixed number of weight-gradient partial sums (bias ones are tiny: one per unit).
    let ngroups = if need_w {
        acc_groups(o * kk)
    } else {
        pl.nunits
    };
    let mut accs = run_units(
        if g.b * np == 0 || !any { 0 } else { pl.nunits },
        ngroups,
        || {
            (
                // Written by the first gemm (`read_dst = false` until `gw_init`).
                if need_w {
                    alloc_overwritten(o * kk)
                } else {
                    vec![]
                },
                vec![0.0f64; if need_b { o } else { 0 }],
                false,
            )
        },
        |acc, ui, par| {
            let u = pl.unit(g, ui);
            let (gw_acc, gb_acc, gw_init) = acc;
            with_scratch(&SCRATCH, |sc| {
                for (oh0, oh1) in chunks(g, &pl) {
                    let seg = (oh1 - oh0) * g.wo;
                    let n = u.nb * seg;
                    // G: the output gradient of this chunk as an [O, n] matrix.
                    let (gm, gm_rs): (*const f32, usize) = if u.nb == 1 {
                        (gy[u.b0 * g.out_img() + oh0 * g.wo..].as_ptr(), np)
                    } else {
                        let buf = grow(&mut sc.g, o * n);
                        for j in 0..u.nb {
                            for oc in 0..o {
                                let off = (u.b0 + j) * g.out_img() + oc * np + oh0 * g.wo;
                                buf[oc * n + j * seg..oc * n + (j + 1) * seg]
                                    .copy_from_slice(&gy[off..off + seg]);
                            }
                        }
                        (buf.as_ptr(), n)
                    };
                    if need_b {
                        for (oc, acc) in gb_acc.iter_mut().enumerate() {
                            for j in 0..u.nb {
                                // SAFETY: gm is the [O, n] matrix with row stride gm_rs (rows of
                                // gy, or the o·n scratch), so these seg floats of row oc lie
                                // inside it; nothing writes it meanwhile.
                                let row = unsafe {
                                    std::slice::from_raw_parts(gm.add(oc * gm_rs + j * seg), seg)
                                };
                                *acc += sum_f32(row) as f64;
                            }
                        }
                    }
                    if need_w {
                        let (rhs, ld): (*const f32, usize) = if g.pointwise() && u.nb == 1 {
                            (x[u.b0 * g.in_img() + oh0 * g.w..].as_ptr(), g.h * g.w)
                        } else {
                            let col = grow(&mut sc.col, kk * n);
                            im2col(g, x, u.b0, u.nb, oh0, oh1, col, n);
                            (col.as_ptr(), n)
                        };
                        // gw[O, KK] += G[O, n] * col^T[n, KK]
                        if crate::dots::prefer(o, kk) {
                            // SAFETY: G has o rows of n floats at stride gm_rs, the im2col
                            // scratch (or x, pointwise) kk rows of n at stride ld; the
                            // accumulator is this group's own.
                            unsafe {
                                crate::dots::dot_rows(
                                    o,
                                    kk,
                                    n,
                                    gm,
                                    gm_rs,
                                    rhs,
                                    ld,
                                    gw_acc,
                                    *gw_init,
                                    Simd::new(opts.isa),
                                )
                            };
                        } else {
                            // SAFETY: dst is this group's own o·kk accumulator; lhs is G above; rhs
                            // is the [KK, n] im2col scratch (or rows of x, pointwise) read
                            // transposed.
                            unsafe {
                                gemm_f32(
                                    o,
                                    kk,
                                    n,
                                    gw_acc.as_mut_ptr(),
                                    kk,
                                    *gw_init,
                                    gm,
                                    (1, gm_rs),
                                    rhs,
                                    (ld, 1),
                                    par,
                                );
                            }
                        }
                        *gw_init = true;
                    }
                    if col2im_x {
                        let col = grow(&mut sc.col, kk * n);
                        // gcol[KK, n] = W^T[KK, O] * G[O, n]
                        // SAFETY: dst is the kk·n im2col scratch (G is in gy or sc.g, not
                        // sc.col); lhs is w [O, KK] read transposed; rhs is G above.
                        unsafe {
                            gemm_f32(
                                kk,
                                n,
                                o,
                                col.as_mut_ptr(),
                                n,
                                false,
                                w.as_ptr(),
                                (kk, 1),
                                gm,
                                (1, gm_rs),
                                par,
                            );
                        }
                        // SAFETY: gx holds B·C·H·W floats, so images b0..b0 + nb lie inside it;
                        // units own disjoint images, so no other reference to them is live.
                        let gxu = unsafe {
                            std::slice::from_raw_parts_mut(
                                gxp.get().add(u.b0 * g.in_img()),
                                u.nb * g.in_img(),
                            )
                        };
                        col2im(g, col, n, u.nb, oh0, oh1, gxu);
                    }
                }
            });
        },
    );
    let gw = need_w.then(|| {
        let parts = accs
            .iter_mut()
            .map(|a| a.2.then(|| std::mem::take(&mut a.0)));
        sum_accumulators(parts, o * kk)
    });
    let gb = need_b.then(|| {
        let mut out = vec![0.0f64; o];
        for a in &accs {
            out.iter_mut().zip(&a.1).for_each(|(d, s)| *d += *s);
        }
        out.into_iter().map(|v| v as f32).collect()
    });
    if let (Some(gx), Some(m), true) = (gx.as_mut(), gx_mask, mask_after) {
        mask_where_positive(gx, m);
    }
    ConvGrads {
        gx,
        gw: wino_gw.or(direct_gw).or(dense_gw).or(gw),
        gb,
    }
}
