//! The Winograd transforms with AVX-512F intrinsics, one vector per 16 tiles (or kernels): the
//! arithmetic of [`super::portable`] in the same order, with loads and stores (wide rows) or
//! gathers and scatters (narrow rows) in place of per-lane copies. Callers check that the CPU
//! has AVX-512F.

// The transforms index small fixed-size arrays by tap and lane, as the formulas are written.
#![allow(clippy::needless_range_loop)]

use super::{chunks, even_odd_width, fill_planes, Addr, Epilogue, Tiles, LANES};
use crate::geom::Geom;
use crate::par::SendPtr;
use crate::simd::{first_lanes, perm};
use std::arch::x86_64::*;

/// [`super::portable::transform_weight_row`] in AVX-512 registers: one stride-9 gather per tap brings
/// in 16 kernels at once (the generic code transposes them with scalar stores).
///
/// # Safety
/// The CPU must support AVX-512F; `up` must point at `16 · o · c` floats of which row `r` of
/// each `U[ξ]` is this call's alone.
#[target_feature(enable = "avx512f")]
pub(super) unsafe fn transform_weight_row(w: &[f32], o: usize, c: usize, r: usize, up: SendPtr) {
    let row = &w[r * c * 9..(r + 1) * c * 9];
    let taps = _mm512_mullo_epi32(
        _mm512_set_epi32(15, 14, 13, 12, 11, 10, 9, 8, 7, 6, 5, 4, 3, 2, 1, 0),
        _mm512_set1_epi32(9),
    );
    let half = _mm512_set1_ps(0.5);
    let zero = _mm512_setzero_ps();
    let mut q = 0;
    while q < c {
        let n = LANES.min(c - q);
        let mask: __mmask16 = first_lanes(n);
        // SAFETY: the active lanes read taps of kernels q..q + n of this row.
        let k: [__m512; 9] = std::array::from_fn(|i| {
            _mm512_mask_i32gather_ps::<4>(zero, mask, taps, row.as_ptr().add(q * 9 + i))
        });
        // G on the columns of g (each column is 3 taps), then on the rows.
        let g3 = |a: __m512, b: __m512, d: __m512| {
            [
                a,
                _mm512_mul_ps(half, _mm512_add_ps(_mm512_add_ps(a, b), d)),
                _mm512_mul_ps(half, _mm512_add_ps(_mm512_sub_ps(a, b), d)),
                d,
            ]
        };
        let cols: [[__m512; 4]; 3] = std::array::from_fn(|j| g3(k[j], k[3 + j], k[6 + j]));
        for i in 0..4 {
            let vals = g3(cols[0][i], cols[1][i], cols[2][i]);
            for (j, v) in vals.into_iter().enumerate() {
                // SAFETY: row r of U[4i + j], columns q..q + n.
                _mm512_mask_storeu_ps(up.get().add(((i * 4 + j) * o + r) * c + q), mask, v);
            }
        }
        q += n;
    }
}

/// [`super::portable::transform_input`] in AVX-512 registers: loads (wide rows) or gathers (narrow
/// ones) of the even / odd planes, the transform on whole vectors, masked stores. Written with
/// intrinsics because the generic arrays (48 vectors) spill to the stack, and the narrow path's
/// per-lane scalar loads cost more than one gather per patch cell.
///
/// # Safety
/// The CPU must support AVX-512F; `addr.inp32` must hold the block's `t_n` tile offsets.
#[target_feature(enable = "avx512f")]
#[allow(clippy::too_many_arguments)]
pub(super) unsafe fn transform_input(
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
    let wide = tw >= LANES;
    assert!(addr.inp32.len() == t_n && v.len() >= 16 * c * t_n);
    // A wide chunk's loads reach 3 rows + LANES past its first tile's offset, a gather 3 rows
    // + 1 past any tile's.
    let last = if wide {
        chunks(tl, t_n)
            .map(|(t0, _)| addr.inp[t0] + 3 * ew + LANES)
            .max()
    } else {
        addr.inp.iter().map(|&o| o + 3 * ew + 1).max()
    };
    assert!(last.unwrap_or(0) < even.len() && even.len() == odd.len());
    for ci in 0..c {
        fill_planes(g, tl, x, ci, r0, r1, even, odd);
        let (ep, op) = (even.as_ptr(), odd.as_ptr());
        for (t0, n) in chunks(tl, t_n) {
            let mask: __mmask16 = first_lanes(n);
            // SAFETY (loads, gathers, stores): a wide chunk reads LANES + 1 columns of 4 rows
            // from its first tile's offset, inside the planes (`even_odd_width`); a gather
            // reads at most 3 rows + 1 past a tile's offset (inactive lanes read offset 0);
            // the masked stores write the chunk's n tiles of one row of V.
            let idx = _mm512_maskz_loadu_epi32(mask, addr.inp32.as_ptr().add(t0));
            // Bᵀ on the columns of each patch row i: columns 0..4 are even[k], odd[k],
            // even[k + 1], odd[k + 1] of its padded row.
            let mut t = [[_mm512_setzero_ps(); 4]; 4];
            for (i, ti) in t.iter_mut().enumerate() {
                let [e0, o0, e1, o1] = if wide {
                    let row = addr.inp[t0] + i * ew;
                    [
                        _mm512_loadu_ps(ep.add(row)),
                        _mm512_loadu_ps(op.add(row)),
                        _mm512_loadu_ps(ep.add(row + 1)),
                        _mm512_loadu_ps(op.add(row + 1)),
                    ]
                } else {
                    let ix = _mm512_add_epi32(idx, _mm512_set1_epi32((i * ew) as i32));
                    let ix1 = _mm512_add_epi32(ix, _mm512_set1_epi32(1));
                    [
                        _mm512_i32gather_ps::<4>(ix, ep),
                        _mm512_i32gather_ps::<4>(ix, op),
                        _mm512_i32gather_ps::<4>(ix1, ep),
                        _mm512_i32gather_ps::<4>(ix1, op),
                    ]
                };
                *ti = [
                    _mm512_sub_ps(e0, e1),
                    _mm512_add_ps(o0, e1),
                    _mm512_sub_ps(e1, o0),
                    _mm512_sub_ps(o0, o1),
                ];
            }
            // Then on the rows, and out to V[ξ = 4i + j][ci][t0..t0 + n].
            let vp = v.as_mut_ptr();
            for j in 0..4 {
                let [a0, a1, a2, a3] = [t[0][j], t[1][j], t[2][j], t[3][j]];
                let out = [
                    _mm512_sub_ps(a0, a2),
                    _mm512_add_ps(a1, a2),
                    _mm512_sub_ps(a2, a1),
                    _mm512_sub_ps(a1, a3),
                ];
                for (i, val) in out.into_iter().enumerate() {
                    let at = ((i * 4 + j) * c + ci) * t_n + t0;
                    _mm512_mask_storeu_ps(vp.add(at), mask, val);
                }
            }
        }
    }
}

/// Where the output pixels of a chunk's tiles lie, for the AVX-512 output-side kernels.
struct PixelLanes {
    /// The chunk's `n` tiles.
    tiles: u16,
    /// Narrow rows: per pixel `(a, j)` of a tile, the lanes whose tile has it (inside the
    /// image), and its offset from channel oc's plane of image 0.
    mask: [[u16; 2]; 2],
    idx: [[__m512i; 2]; 2],
    /// Wide rows: the output rows the chunk covers (1 or 2), and the lanes of the first and
    /// second 16 columns of each (`2n` columns, one less when the last tile has no right one).
    rows: usize,
    halves: (u16, u16),
}

impl PixelLanes {
    /// # Safety
    /// The CPU must support AVX-512F; `addr.out32` must hold the block's tile offsets.
    #[target_feature(enable = "avx512f")]
    unsafe fn new(addr: &Addr, wo: usize, t0: usize, n: usize) -> Self {
        let mut mask = [[0u16; 2]; 2];
        for l in 0..n {
            let e = addr.edge[t0 + l];
            let (right, bottom) = (e & 1 != 0, e & 2 != 0);
            mask[0][0] |= 1 << l;
            mask[0][1] |= u16::from(right) << l;
            mask[1][0] |= u16::from(bottom) << l;
            mask[1][1] |= u16::from(right && bottom) << l;
        }
        let tiles = mask[0][0];
        // SAFETY: lanes t0..t0 + n of out32 (the caller's guarantee).
        let idx = _mm512_maskz_loadu_epi32(tiles, addr.out32.as_ptr().add(t0));
        let at = |a: usize, j: usize| _mm512_add_epi32(idx, _mm512_set1_epi32((a * wo + j) as i32));
        let cols = 2 * n - usize::from(addr.edge[t0 + n - 1] & 1 == 0);
        Self {
            tiles,
            mask,
            idx: [[at(0, 0), at(0, 1)], [at(1, 0), at(1, 1)]],
            rows: 1 + usize::from(addr.edge[t0] & 2 != 0),
            halves: (first_lanes(cols), first_lanes(cols.saturating_sub(16))),
        }
    }
}

/// [`super::portable::transform_output`] in AVX-512 registers: interleaving stores (wide rows) or
/// masked scatters (narrow ones).
///
/// # Safety
/// The CPU must support AVX-512F; `addr.out32` must hold the block's `t_n` tile offsets; `yp`
/// must point at the whole output, whose pixels of this block's tiles no one else writes.
#[target_feature(enable = "avx512f")]
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
    let (bias, relu) = (ep.bias, ep.relu);
    assert!(addr.out32.len() == t_n && m.len() >= 16 * o * t_n);
    assert!(
        !ep.pool || addr.pooled32.len() == t_n,
        "pooled offsets of the block"
    );
    let (lo, hi) = (
        _mm512_loadu_epi32(perm::LO.as_ptr()),
        _mm512_loadu_epi32(perm::HI.as_ptr()),
    );
    let zero = _mm512_setzero_ps();
    let wide = tl.tw >= LANES;
    for (t0, n) in chunks(tl, t_n) {
        let px = PixelLanes::new(addr, wo, t0, n);
        for oc in 0..o {
            let bv = _mm512_set1_ps(bias.map_or(0.0, |b| b[oc]));
            // SAFETY (loads): 16 lanes from (ξ, oc, t0) of M; lanes past n are masked.
            let mm: [__m512; 16] = std::array::from_fn(|xi| {
                _mm512_maskz_loadu_ps(px.tiles, m.as_ptr().add((xi * o + oc) * t_n + t0))
            });
            // Aᵀ on the columns (j), then on the rows (i); out[a][j]: output pixel (a, j).
            let s: [[__m512; 2]; 4] = std::array::from_fn(|i| {
                let [m0, m1, m2, m3] = [mm[i * 4], mm[i * 4 + 1], mm[i * 4 + 2], mm[i * 4 + 3]];
                [
                    _mm512_add_ps(_mm512_add_ps(m0, m1), m2),
                    _mm512_sub_ps(_mm512_sub_ps(m1, m2), m3),
                ]
            });
            let act = |u: __m512| if relu { _mm512_max_ps(u, zero) } else { u };
            let out: [[__m512; 2]; 2] = std::array::from_fn(|a| {
                std::array::from_fn(|j| {
                    let [a0, a1, a2, a3] = [s[0][j], s[1][j], s[2][j], s[3][j]];
                    let u = if a == 0 {
                        _mm512_add_ps(_mm512_add_ps(a0, a1), a2)
                    } else {
                        _mm512_sub_ps(_mm512_sub_ps(a1, a2), a3)
                    };
                    act(_mm512_add_ps(u, bv))
                })
            });
            if ep.pool {
                // One pooled pixel per whole tile (both edge bits: mask[1][1]); the maximum
                // of values that are not NaN after the ReLU is the pool's first maximum.
                let v = _mm512_max_ps(
                    _mm512_max_ps(out[0][0], out[0][1]),
                    _mm512_max_ps(out[1][0], out[1][1]),
                );
                let whole = px.mask[1][1];
                // SAFETY: the pooled pixels of this block's whole tiles in channel oc (the
                // masked-out lanes touch no memory).
                let yc = yp.get().add(oc * pooled_plane);
                if wide {
                    _mm512_mask_storeu_ps(yc.wrapping_add(addr.pooled[t0]), whole, v);
                } else {
                    let idx = _mm512_maskz_loadu_epi32(px.tiles, addr.pooled32.as_ptr().add(t0));
                    _mm512_mask_i32scatter_ps::<4>(yc, whole, idx, v);
                }
                continue;
            }
            // SAFETY (stores): the pixels of this block's tiles in channel oc, kept inside
            // the image by the row / edge masks.
            let yc = yp.get().add(oc * np);
            if wide {
                let base = yc.add(addr.out[t0]);
                for (a, pair) in out.iter().enumerate().take(px.rows) {
                    let row = base.add(a * wo);
                    let zip_lo = _mm512_permutex2var_ps(pair[0], lo, pair[1]);
                    let zip_hi = _mm512_permutex2var_ps(pair[0], hi, pair[1]);
                    _mm512_mask_storeu_ps(row, px.halves.0, zip_lo);
                    _mm512_mask_storeu_ps(row.wrapping_add(16), px.halves.1, zip_hi);
                }
            } else {
                for (a, pair) in out.iter().enumerate() {
                    for (j, &val) in pair.iter().enumerate() {
                        _mm512_mask_i32scatter_ps::<4>(yc, px.mask[a][j], px.idx[a][j], val);
                    }
                }
            }
        }
    }
}

/// [`super::portable::transform_output_grad`] in AVX-512 registers: de-interleaving loads (wide rows)
/// or masked gathers (narrow ones).
///
/// # Safety
/// The CPU must support AVX-512F; `addr.out32` must hold the block's `t_n` tile offsets.
#[target_feature(enable = "avx512f")]
pub(super) unsafe fn transform_output_grad(
    g: &Geom,
    tl: &Tiles,
    addr: &Addr,
    gy: &[f32],
    t_n: usize,
    m: &mut [f32],
) {
    let (o, wo) = (g.o, g.wo);
    let np = g.ho * wo;
    assert!(addr.out32.len() == t_n && m.len() >= 16 * o * t_n);
    assert!(gy.len() >= g.b * o * np);
    let (even, odd) = (
        _mm512_loadu_epi32(perm::EVEN.as_ptr()),
        _mm512_loadu_epi32(perm::ODD.as_ptr()),
    );
    let mp = m.as_mut_ptr();
    let wide = tl.tw >= LANES;
    for (t0, n) in chunks(tl, t_n) {
        let px = PixelLanes::new(addr, wo, t0, n);
        for oc in 0..o {
            // SAFETY (loads, gathers): the pixels of this block's tiles in channel oc, kept
            // inside the image by the row / edge masks; y[a][j]: pixel (a, j) of each tile.
            let gc = gy.as_ptr().add(oc * np);
            let zero = _mm512_setzero_ps();
            let mut y = [[zero; 2]; 2];
            if wide {
                let base = gc.add(addr.out[t0]);
                for (a, ya) in y.iter_mut().enumerate().take(px.rows) {
                    let row = base.add(a * wo);
                    let p0 = _mm512_maskz_loadu_ps(px.halves.0, row);
                    let p1 = _mm512_maskz_loadu_ps(px.halves.1, row.wrapping_add(16));
                    *ya = [
                        _mm512_permutex2var_ps(p0, even, p1),
                        _mm512_permutex2var_ps(p0, odd, p1),
                    ];
                }
            } else {
                y = std::array::from_fn(|a| {
                    std::array::from_fn(|j| {
                        _mm512_mask_i32gather_ps::<4>(zero, px.mask[a][j], px.idx[a][j], gc)
                    })
                });
            }
            // A on the columns (j), then on the rows (i); out to dM[ξ = 4i + j][oc].
            let cj: [[__m512; 4]; 2] = std::array::from_fn(|a| {
                let (y0, y1) = (y[a][0], y[a][1]);
                [
                    y0,
                    _mm512_add_ps(y0, y1),
                    _mm512_sub_ps(y0, y1),
                    _mm512_sub_ps(zero, y1),
                ]
            });
            for j in 0..4 {
                let (c0, c1) = (cj[0][j], cj[1][j]);
                let out = [
                    c0,
                    _mm512_add_ps(c0, c1),
                    _mm512_sub_ps(c0, c1),
                    _mm512_sub_ps(zero, c1),
                ];
                for (i, val) in out.into_iter().enumerate() {
                    // SAFETY: lanes t0..t0 + n of row (ξ, oc) of dM.
                    _mm512_mask_storeu_ps(mp.add(((i * 4 + j) * o + oc) * t_n + t0), px.tiles, val);
                }
            }
        }
    }
}
