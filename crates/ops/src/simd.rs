//! Run-time choice between the AVX-512 kernels (intrinsics, chosen when the CPU has AVX-512F:
//! the workspace builds for baseline x86-64) and their portable Rust versions, and what the
//! AVX-512 kernels share.

use crate::options::Isa;

/// The kernels one op call runs, resolved once from its [`Isa`].
#[derive(Clone, Copy, Debug)]
pub(crate) struct Simd {
    avx512: bool,
}

impl Simd {
    pub(crate) fn new(isa: Isa) -> Self {
        #[cfg(target_arch = "x86_64")]
        let avx512 = isa == Isa::Detect && std::arch::is_x86_feature_detected!("avx512f");
        #[cfg(not(target_arch = "x86_64"))]
        let avx512 = {
            let _ = isa;
            false
        };
        Self { avx512 }
    }

    /// Whether to run the AVX-512 kernels: true only where the CPU has AVX-512F (checked by
    /// [`Simd::new`], the only constructor), which is what makes calling them sound.
    #[inline]
    #[cfg_attr(not(target_arch = "x86_64"), allow(dead_code))]
    pub(crate) fn avx512(self) -> bool {
        self.avx512
    }
}

/// Index vectors of `_mm512_permutex2var_ps`: `LO` / `HI` zip two vectors into 32 values,
/// `EVEN` / `ODD` split 32 values into their even and odd lanes.
#[cfg(target_arch = "x86_64")]
pub(crate) mod perm {
    pub const LO: [i32; 16] = [0, 16, 1, 17, 2, 18, 3, 19, 4, 20, 5, 21, 6, 22, 7, 23];
    pub const HI: [i32; 16] = [8, 24, 9, 25, 10, 26, 11, 27, 12, 28, 13, 29, 14, 30, 15, 31];
    pub const EVEN: [i32; 16] = [0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26, 28, 30];
    pub const ODD: [i32; 16] = [1, 3, 5, 7, 9, 11, 13, 15, 17, 19, 21, 23, 25, 27, 29, 31];
}

/// The sum of 16 lanes in a fixed order, shared by the AVX-512 and portable versions of the
/// dot-product kernels (dots.rs, direct.rs), so that both give the same bits: a halving tree
/// (lane i plus lane i + 8, then i + 4, i + 2, i + 1), the order [`lane_sums16`] adds 16
/// vectors in at once.
#[inline]
pub(crate) fn lane_sum(lanes: &[f32; 16]) -> f32 {
    let mut s = *lanes;
    for half in [8, 4, 2, 1] {
        for i in 0..half {
            s[i] += s[i + half];
        }
    }
    s[0]
}

/// `[lane_sum(v[0]), …, lane_sum(v[15])]` in one vector, with the same additions: each level of
/// the tree adds the two halves of every vector's live lanes, packing two vectors' results
/// into one, so the 16 reductions take 15 vector additions and their shuffles.
///
/// # Safety
/// The CPU must support AVX-512F.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
pub(crate) unsafe fn lane_sums16(v: &[std::arch::x86_64::__m512; 16]) -> [f32; 16] {
    use std::arch::x86_64::*;
    // Lanes i and i + 8: vector pairs into halves [v2k: 8 sums | v2k+1: 8 sums].
    let l8: [__m512; 8] = std::array::from_fn(|k| {
        let (a, b) = (v[2 * k], v[2 * k + 1]);
        _mm512_add_ps(
            _mm512_shuffle_f32x4::<0b01_00_01_00>(a, b),
            _mm512_shuffle_f32x4::<0b11_10_11_10>(a, b),
        )
    });
    // Lanes i and i + 4: quarters [v4k, v4k+1, v4k+2, v4k+3], 4 sums each.
    let l4: [__m512; 4] = std::array::from_fn(|k| {
        let (a, b) = (l8[2 * k], l8[2 * k + 1]);
        _mm512_add_ps(
            _mm512_shuffle_f32x4::<0b10_00_10_00>(a, b),
            _mm512_shuffle_f32x4::<0b11_01_11_01>(a, b),
        )
    });
    // Lanes i and i + 2, within each quarter q: [vq, vq+4 | …] 2 sums each (and vq+8, vq+12).
    let l2: [__m512; 2] = std::array::from_fn(|k| {
        let (a, b) = (l4[2 * k], l4[2 * k + 1]);
        _mm512_add_ps(
            _mm512_shuffle_ps::<0b01_00_01_00>(a, b),
            _mm512_shuffle_ps::<0b11_10_11_10>(a, b),
        )
    });
    // Lanes 0 and 1: quarter q holds the sums of vq, vq+4, vq+8, vq+12.
    let l1 = _mm512_add_ps(
        _mm512_shuffle_ps::<0b10_00_10_00>(l2[0], l2[1]),
        _mm512_shuffle_ps::<0b11_01_11_01>(l2[0], l2[1]),
    );
    let mut r = [0f32; 16];
    _mm512_storeu_ps(r.as_mut_ptr(), l1);
    // Lane 4q + j holds the sum of vector 4j + q.
    std::array::from_fn(|i| r[4 * (i % 4) + i / 4])
}

/// Lane mask of the first `n ≤ 16` lanes.
#[cfg(target_arch = "x86_64")]
pub(crate) fn first_lanes(n: usize) -> u16 {
    if n >= 16 {
        !0
    } else {
        (1u16 << n) - 1
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The halving tree, by hand: ((1 + 9) + (5 + 13)) + ((3 + 11) + (7 + 15)) + … = 136 for
    /// 1..=16, and an order-sensitive case: 1e8 cancels before the small lanes are added.
    #[test]
    fn lane_sum_is_a_halving_tree() {
        let ones: [f32; 16] = std::array::from_fn(|i| (i + 1) as f32);
        assert_eq!(lane_sum(&ones), 136.0);
        let mut v = [0.5f32; 16];
        v[0] = 1e8;
        v[8] = -1e8;
        // Lanes 0 and 8 meet first (0.0); a left fold would lose the 0.5s in 1e8 instead.
        assert_eq!(lane_sum(&v), 7.0);
    }

    #[cfg(target_arch = "x86_64")]
    #[test]
    fn lane_sums16_matches_lane_sum_bitwise() {
        if !std::arch::is_x86_feature_detected!("avx512f") {
            return;
        }
        let mut s = 1u64;
        let mut next = || {
            s = s
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            ((s >> 33) as f32 / (1u64 << 31) as f32 - 0.5) * 10f32.powi((s % 7) as i32)
        };
        let lanes: [[f32; 16]; 16] = std::array::from_fn(|_| std::array::from_fn(|_| next()));
        // SAFETY: AVX-512F is present (checked above); the loads read 16 floats each.
        let got = unsafe {
            use std::arch::x86_64::*;
            let v: [__m512; 16] = std::array::from_fn(|i| _mm512_loadu_ps(lanes[i].as_ptr()));
            lane_sums16(&v)
        };
        for (i, l) in lanes.iter().enumerate() {
            assert_eq!(got[i].to_bits(), lane_sum(l).to_bits(), "vector {i}");
        }
    }
}
