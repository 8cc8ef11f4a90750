//! `dst[i][j] (+)= Σ_p a_i[p] · b_j[p]` for a few short-ish rows `a_i`, `b_j` and a long `p`:
//! the weight gradient of a convolution with few channels (`gw[O, C·9] += G[O, n] · colᵀ`).
//!
//! With O and C·9 below about a hundred, gemm's packed micro-kernels (tiles of 64 × 6) run
//! mostly empty and spend their time packing the long reduction dimension; here blocks of 4 × 4
//! dot products run in 16-lane registers straight from the rows, a cache-sized span of `p` at
//! a time. The AVX-512 and portable versions add in the same order with fused multiply-adds,
//! so they give the same bits.

// The kernels index small fixed-size arrays by lane and block position, as the sums are written.
#![allow(clippy::needless_range_loop)]

use crate::simd::{lane_sum, Simd};

/// Columns of `p` per block: 4 + 4 rows of it stay in L1.
const BLOCK: usize = 512;
const LANES: usize = 16;

/// Whether [`dot_rows`] beats gemm for an `m × n` result (measured on the CPU configs' layers:
/// 3× faster for 8 × 72, even at 16 × 144, behind gemm at 32 × 144).
pub(crate) fn prefer(m: usize, n: usize) -> bool {
    m.min(n) <= 16 && m.max(n) <= 144
}

/// `dst[i·n + j] = (accumulate ? dst[i·n + j] : 0) + Σ_{p<k} a[i·a_rs + p] · b[j·b_rs + p]`.
///
/// # Safety
/// `a` holds `m` rows of `k` floats at stride `a_rs`, `b` holds `n` rows of `k` floats at
/// stride `b_rs`, and neither overlaps `dst`.
#[allow(clippy::too_many_arguments)]
pub(crate) unsafe fn dot_rows(
    m: usize,
    n: usize,
    k: usize,
    a: *const f32,
    a_rs: usize,
    b: *const f32,
    b_rs: usize,
    dst: &mut [f32],
    accumulate: bool,
    simd: Simd,
) {
    assert!(dst.len() >= m * n, "dot_rows: destination too short");
    if !accumulate {
        dst[..m * n].iter_mut().for_each(|v| *v = 0.0);
    }
    let mut p0 = 0;
    while p0 < k {
        let len = BLOCK.min(k - p0);
        let mut i0 = 0;
        while i0 < m {
            let ti = 4.min(m - i0);
            let mut j0 = 0;
            while j0 < n {
                let tj = 4.min(n - j0);
                let mut sums = [[0f32; 4]; 4];
                let ar = |i: usize| a.add((i0 + i) * a_rs + p0);
                let br = |j: usize| b.add((j0 + j) * b_rs + p0);
                #[cfg(target_arch = "x86_64")]
                if simd.avx512() {
                    // SAFETY: simd.avx512() holds only on CPUs with AVX-512F; the rows hold
                    // `len` floats from p0 (the caller's contract).
                    avx512::tile(ti, tj, len, ar, br, &mut sums);
                } else {
                    portable_tile(ti, tj, len, ar, br, &mut sums);
                }
                #[cfg(not(target_arch = "x86_64"))]
                {
                    let _ = simd;
                    portable_tile(ti, tj, len, ar, br, &mut sums);
                }
                for i in 0..ti {
                    for j in 0..tj {
                        dst[(i0 + i) * n + j0 + j] += sums[i][j];
                    }
                }
                j0 += tj;
            }
            i0 += ti;
        }
        p0 += len;
    }
}

/// The portable tile: per lane `acc = fma(a, b, acc)` over `len` (missing lanes of the last
/// chunk count as zeros, as the AVX-512 masked loads do).
unsafe fn portable_tile(
    ti: usize,
    tj: usize,
    len: usize,
    ar: impl Fn(usize) -> *const f32,
    br: impl Fn(usize) -> *const f32,
    sums: &mut [[f32; 4]; 4],
) {
    for i in 0..ti {
        let a = std::slice::from_raw_parts(ar(i), len);
        for j in 0..tj {
            let b = std::slice::from_raw_parts(br(j), len);
            let mut acc = [0f32; LANES];
            for (ca, cb) in a.chunks(LANES).zip(b.chunks(LANES)) {
                for l in 0..ca.len() {
                    acc[l] = ca[l].mul_add(cb[l], acc[l]);
                }
            }
            sums[i][j] = lane_sum(&acc);
        }
    }
}

#[cfg(target_arch = "x86_64")]
mod avx512 {
    use super::LANES;
    use crate::simd::{first_lanes, lane_sum};
    use std::arch::x86_64::*;

    /// # Safety
    /// AVX-512F, and `ar(i)` / `br(j)` point at `len` readable floats for `i < ti`, `j < tj`.
    #[target_feature(enable = "avx512f")]
    pub(super) unsafe fn tile(
        ti: usize,
        tj: usize,
        len: usize,
        ar: impl Fn(usize) -> *const f32,
        br: impl Fn(usize) -> *const f32,
        sums: &mut [[f32; 4]; 4],
    ) {
        match (ti, tj) {
            (4, 4) => tile_n::<4, 4>(len, ar, br, sums),
            _ => {
                // Edge tiles: one dot product at a time.
                for i in 0..ti {
                    for j in 0..tj {
                        let mut one = [[0f32; 4]; 4];
                        tile_n::<1, 1>(len, |_| ar(i), |_| br(j), &mut one);
                        sums[i][j] = one[0][0];
                    }
                }
            }
        }
    }

    #[target_feature(enable = "avx512f")]
    unsafe fn tile_n<const TI: usize, const TJ: usize>(
        len: usize,
        ar: impl Fn(usize) -> *const f32,
        br: impl Fn(usize) -> *const f32,
        sums: &mut [[f32; 4]; 4],
    ) {
        let a: [*const f32; TI] = std::array::from_fn(&ar);
        let b: [*const f32; TJ] = std::array::from_fn(&br);
        let mut acc = [[_mm512_setzero_ps(); TJ]; TI];
        let mut p = 0;
        while p < len {
            let mask: __mmask16 = first_lanes(LANES.min(len - p));
            let va: [__m512; TI] =
                std::array::from_fn(|i| _mm512_maskz_loadu_ps(mask, a[i].add(p)));
            let vb: [__m512; TJ] =
                std::array::from_fn(|j| _mm512_maskz_loadu_ps(mask, b[j].add(p)));
            for i in 0..TI {
                for j in 0..TJ {
                    acc[i][j] = _mm512_fmadd_ps(va[i], vb[j], acc[i][j]);
                }
            }
            p += LANES;
        }
        for i in 0..TI {
            for j in 0..TJ {
                let mut lanes = [0f32; LANES];
                _mm512_storeu_ps(lanes.as_mut_ptr(), acc[i][j]);
                sums[i][j] = lane_sum(&lanes);
            }
        }
    }
}
