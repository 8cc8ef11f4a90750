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
/// dot-product kernels (dots.rs, direct.rs), so that both give the same bits.
#[inline]
pub(crate) fn lane_sum(lanes: &[f32; 16]) -> f32 {
    lanes.iter().fold(0.0, |s, v| s + v)
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
