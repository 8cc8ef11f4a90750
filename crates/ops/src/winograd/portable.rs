//! The Winograd transforms in portable Rust: 16 tiles (or kernels) at a time in fixed-size
//! arrays, which the compiler vectorises for whatever the target has. The reference for
//! [`super::avx512`], which computes the same values in the same order.

// The transforms index small fixed-size arrays by tap and lane, as the formulas are written.
#![allow(clippy::needless_range_loop, clippy::manual_memcpy)]

use super::{chunks, even_odd_width, fill_planes, Addr, Epilogue, Tiles, LANES};
use crate::geom::Geom;
use crate::par::SendPtr;

/// `dst[..n] = src[..n]` for `n ≤ LANES`, as one fixed-size (vector) copy when `n == LANES`.
#[inline(always)]
fn copy_lanes(dst: &mut [f32], src: &[f32], n: usize) {
    if n == LANES {
        let d: &mut [f32; LANES] = (&mut dst[..LANES]).try_into().expect("LANES elements");
        let s: &[f32; LANES] = (&src[..LANES]).try_into().expect("LANES elements");
        *d = *s;
    } else {
        dst[..n].copy_from_slice(&src[..n]);
    }
}

/// Row `r` of every `U[ξ]`, 16 input channels at a time.
///
/// # Safety
/// As [`super::transform_weight_row`]: `up` points at `16 · o · c` floats, in which no one else
/// accesses row `r` of any `U[ξ]` meanwhile.
#[inline(always)]
pub(super) unsafe fn transform_weight_row(w: &[f32], o: usize, c: usize, r: usize, up: SendPtr) {
    let row = &w[r * c * 9..(r + 1) * c * 9];
    let mut q = 0;
    while q < c {
        let n = LANES.min(c - q);
        let mut k = [[0.0f32; LANES]; 9];
        for l in 0..n {
            for i in 0..9 {
                k[i][l] = row[(q + l) * 9 + i];
            }
        }
        // G on the columns of g (each column is 3 taps), then on the rows.
        let mut t = [[[0.0f32; LANES]; 3]; 4];
        for j in 0..3 {
            for l in 0..LANES {
                let (a, b, d) = (k[j][l], k[3 + j][l], k[6 + j][l]);
                t[0][j][l] = a;
                t[1][j][l] = 0.5 * (a + b + d);
                t[2][j][l] = 0.5 * (a - b + d);
                t[3][j][l] = d;
            }
        }
        for (i, ti) in t.iter().enumerate() {
            let mut vals = [[0.0f32; LANES]; 4];
            for l in 0..LANES {
                let (a, b, d) = (ti[0][l], ti[1][l], ti[2][l]);
                vals[0][l] = a;
                vals[1][l] = 0.5 * (a + b + d);
                vals[2][l] = 0.5 * (a - b + d);
                vals[3][l] = d;
            }
            for (j, v) in vals.iter().enumerate() {
                // SAFETY: columns q..q + n < c of row r < o of U[ξ], inside the 16·o·c floats at
                // `up`, which this call alone accesses (the function's contract).
                let dst = unsafe {
                    std::slice::from_raw_parts_mut(up.get().add(((i * 4 + j) * o + r) * c + q), n)
                };
                copy_lanes(dst, v, n);
            }
        }
        q += n;
    }
}

/// `V[ξ][c][t] = (Bᵀ d B)[ξ]` for the tiles of rows `r0..r1` (`T = (r1 - r0) · tw` tiles).
/// `even` / `odd` hold one plane per image segment of the block and must be zero on entry
/// (only in-image cells are ever written, so the padding stays zero).
#[inline(always)]
#[allow(clippy::too_many_arguments)]
pub(super) fn transform_input(
    g: &Geom,
    tl: &Tiles,
    addr: &Addr,
    x: &[f32],
    r0: usize,
    r1: usize,
    v: &mut [f32],
    even: &mut [f32],
    odd: &mut [f32],
) {
    let (c, tw) = (g.c, tl.tw);
    let t_n = (r1 - r0) * tw;
    let ew = even_odd_width(tl);
    for ci in 0..c {
        fill_planes(g, tl, x, ci, r0, r1, even, odd);
        for (t0, n) in chunks(tl, t_n) {
            // d[i][j][l]: patch value (i, j) of tile t0 + l; columns j = 0..4 of patch row i
            // are even[k], odd[k], even[k + 1], odd[k + 1] of its padded row.
            let mut d = [[[0.0f32; LANES]; 4]; 4];
            if tw >= LANES {
                let base = addr.inp[t0];
                for (i, di) in d.iter_mut().enumerate() {
                    let row = base + i * ew;
                    let (e, o) = (&even[row..row + LANES + 1], &odd[row..row + LANES + 1]);
                    for l in 0..LANES {
                        di[0][l] = e[l];
                        di[1][l] = o[l];
                        di[2][l] = e[l + 1];
                        di[3][l] = o[l + 1];
                    }
                }
            } else {
                for l in 0..n {
                    let base = addr.inp[t0 + l];
                    for (i, di) in d.iter_mut().enumerate() {
                        let row = base + i * ew;
                        di[0][l] = even[row];
                        di[1][l] = odd[row];
                        di[2][l] = even[row + 1];
                        di[3][l] = odd[row + 1];
                    }
                }
            }
            // Bᵀ on the columns of each patch row, then on the rows.
            let mut t = [[[0.0f32; LANES]; 4]; 4];
            for i in 0..4 {
                for l in 0..LANES {
                    let [d0, d1, d2, d3] = [d[i][0][l], d[i][1][l], d[i][2][l], d[i][3][l]];
                    t[i][0][l] = d0 - d2;
                    t[i][1][l] = d1 + d2;
                    t[i][2][l] = d2 - d1;
                    t[i][3][l] = d1 - d3;
                }
            }
            for j in 0..4 {
                let mut out = [[0.0f32; LANES]; 4];
                for l in 0..LANES {
                    let [a0, a1, a2, a3] = [t[0][j][l], t[1][j][l], t[2][j][l], t[3][j][l]];
                    out[0][l] = a0 - a2;
                    out[1][l] = a1 + a2;
                    out[2][l] = a2 - a1;
                    out[3][l] = a1 - a3;
                }
                for (i, vals) in out.iter().enumerate() {
                    let at = ((i * 4 + j) * c + ci) * t_n + t0;
                    copy_lanes(&mut v[at..], vals, n);
                }
            }
        }
    }
}

/// Output transform of a block: `y = Aᵀ M A` per tile (+ bias, ReLU), into the pixels of `y`
/// the block's tiles cover.
///
/// # Safety
/// As [`super::transform_output`]: `addr` was filled for this block of `g` and `tl`, and `yp`
/// points at the whole output `[B, O, Ho, Wo]`, whose pixels of this block's tiles no one else
/// accesses.
#[inline(always)]
#[allow(clippy::too_many_arguments)]
pub(super) unsafe fn transform_output(
    g: &Geom,
    tl: &Tiles,
    addr: &Addr,
    m: &[f32],
    t_n: usize,
    ep: Epilogue,
    yp: SendPtr,
) {
    let (o, wo) = (g.o, g.wo);
    let (np, pooled_plane) = (g.ho * wo, (g.ho / 2) * (wo / 2));
    let relu = ep.relu;
    for oc in 0..o {
        let bv = ep.bias.map_or(0.0, |b| b[oc]);
        for (t0, n) in chunks(tl, t_n) {
            let mut mm = [[0.0f32; LANES]; 16];
            for (xi, lane) in mm.iter_mut().enumerate() {
                copy_lanes(lane, &m[(xi * o + oc) * t_n + t0..], n);
            }
            // Aᵀ on the columns (j), then on the rows (i); out[a][j]: output pixel (a, j).
            let mut s = [[[0.0f32; LANES]; 2]; 4];
            for i in 0..4 {
                for l in 0..LANES {
                    let [m0, m1, m2, m3] = [
                        mm[i * 4][l],
                        mm[i * 4 + 1][l],
                        mm[i * 4 + 2][l],
                        mm[i * 4 + 3][l],
                    ];
                    s[i][0][l] = m0 + m1 + m2;
                    s[i][1][l] = m1 - m2 - m3;
                }
            }
            let mut out = [[[0.0f32; LANES]; 2]; 2];
            for j in 0..2 {
                for l in 0..LANES {
                    let [a0, a1, a2, a3] = [s[0][j][l], s[1][j][l], s[2][j][l], s[3][j][l]];
                    let (u, w) = (a0 + a1 + a2 + bv, a1 - a2 - a3 + bv);
                    out[0][j][l] = if relu { u.max(0.0) } else { u };
                    out[1][j][l] = if relu { w.max(0.0) } else { w };
                }
            }
            if ep.pool {
                for l in (0..n).filter(|&l| addr.edge[t0 + l] == 3) {
                    // The first maximum of the window, as the pool takes it.
                    let mut v = out[0][0][l];
                    for u in [out[0][1][l], out[1][0][l], out[1][1][l]] {
                        if u > v {
                            v = u;
                        }
                    }
                    // SAFETY: the pooled pixel of a whole tile of this block, inside the pooled
                    // output and this block's alone.
                    unsafe { *yp.get().add(addr.pooled[t0 + l] + oc * pooled_plane) = v };
                }
                continue;
            }
            if tl.tw >= LANES {
                // Adjacent tiles of one tile row: interleaved stores along two output rows.
                let base = addr.out[t0] + oc * np;
                let cols = 2 * n - usize::from(addr.edge[t0 + n - 1] & 1 == 0);
                let rows = 1 + usize::from(addr.edge[t0] & 2 != 0);
                for (a, pair) in out.iter().enumerate().take(rows) {
                    // SAFETY: `rows` output rows of `cols` pixels from tile t0's top-left pixel
                    // in channel oc: the pixels of these n tiles (the edge bits drop a missing
                    // bottom row or right column), inside y and this block's alone.
                    let yrow = unsafe {
                        std::slice::from_raw_parts_mut(yp.get().add(base + a * wo), cols)
                    };
                    if cols == 2 * LANES {
                        let d: &mut [f32; 2 * LANES] = yrow.try_into().expect("cols == 2 · LANES");
                        for l in 0..LANES {
                            d[2 * l] = pair[0][l];
                            d[2 * l + 1] = pair[1][l];
                        }
                    } else {
                        for (k, px) in yrow.iter_mut().enumerate() {
                            *px = pair[k % 2][k / 2];
                        }
                    }
                }
            } else {
                for l in 0..n {
                    let (base, edge) = (addr.out[t0 + l] + oc * np, addr.edge[t0 + l]);
                    // SAFETY: as above, per tile: its top-left pixel, and the right / bottom
                    // ones only where the edge bits say they are inside the image.
                    unsafe {
                        let y = yp.get().add(base);
                        *y = out[0][0][l];
                        if edge & 1 != 0 {
                            *y.add(1) = out[0][1][l];
                        }
                        if edge & 2 != 0 {
                            *y.add(wo) = out[1][0][l];
                            if edge & 1 != 0 {
                                *y.add(wo + 1) = out[1][1][l];
                            }
                        }
                    }
                }
            }
        }
    }
}

/// `dM[ξ][o][t] = (A dY Aᵀ)[ξ]` for a block's tiles, from the output gradient `gy` (zero
/// outside the output); `A y = (y0, y0 + y1, y0 − y1, −y1)`.
#[inline(always)]
pub(super) fn transform_output_grad(
    g: &Geom,
    tl: &Tiles,
    addr: &Addr,
    gy: &[f32],
    t_n: usize,
    m: &mut [f32],
) {
    let (o, wo) = (g.o, g.wo);
    let np = g.ho * wo;
    for oc in 0..o {
        for (t0, n) in chunks(tl, t_n) {
            // y[a][j][l]: output-gradient pixel (a, j) of tile t0 + l.
            let mut y = [[[0.0f32; LANES]; 2]; 2];
            if tl.tw >= LANES {
                let base = addr.out[t0] + oc * np;
                let cols = 2 * n - usize::from(addr.edge[t0 + n - 1] & 1 == 0);
                let rows = 1 + usize::from(addr.edge[t0] & 2 != 0);
                for (a, ya) in y.iter_mut().enumerate().take(rows) {
                    let src = &gy[base + a * wo..base + a * wo + cols];
                    if cols == 2 * LANES {
                        let s: &[f32; 2 * LANES] = src.try_into().expect("cols == 2 · LANES");
                        for l in 0..LANES {
                            ya[0][l] = s[2 * l];
                            ya[1][l] = s[2 * l + 1];
                        }
                    } else {
                        for (k, px) in src.iter().enumerate() {
                            ya[k % 2][k / 2] = *px;
                        }
                    }
                }
            } else {
                for l in 0..n {
                    let (base, edge) = (addr.out[t0 + l] + oc * np, addr.edge[t0 + l]);
                    y[0][0][l] = gy[base];
                    if edge & 1 != 0 {
                        y[0][1][l] = gy[base + 1];
                    }
                    if edge & 2 != 0 {
                        y[1][0][l] = gy[base + wo];
                        if edge & 1 != 0 {
                            y[1][1][l] = gy[base + wo + 1];
                        }
                    }
                }
            }
            // A on the columns (j), then on the rows (i).
            let mut cj = [[[0.0f32; LANES]; 4]; 2];
            for a in 0..2 {
                for l in 0..LANES {
                    let (y0, y1) = (y[a][0][l], y[a][1][l]);
                    cj[a][0][l] = y0;
                    cj[a][1][l] = y0 + y1;
                    cj[a][2][l] = y0 - y1;
                    cj[a][3][l] = -y1;
                }
            }
            for j in 0..4 {
                let mut out = [[0.0f32; LANES]; 4];
                for l in 0..LANES {
                    let (c0, c1) = (cj[0][j][l], cj[1][j][l]);
                    out[0][l] = c0;
                    out[1][l] = c0 + c1;
                    out[2][l] = c0 - c1;
                    out[3][l] = -c1;
                }
                for (i, vals) in out.iter().enumerate() {
                    let at = ((i * 4 + j) * o + oc) * t_n + t0;
                    copy_lanes(&mut m[at..], vals, n);
                }
            }
        }
    }
}
