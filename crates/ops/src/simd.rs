//! Run-time choice between the AVX-512 kernels (intrinsics, chosen when the CPU has AVX-512F:
//! the workspace builds for baseline x86-64) and their portable Rust versions.

use std::sync::atomic::{AtomicBool, Ordering};

static PORTABLE: AtomicBool = AtomicBool::new(false);

/// Test knob: with `true`, the Winograd transforms and the max-pool take their portable code
/// even where the CPU has AVX-512, so that the tests cover both.
#[doc(hidden)]
pub fn set_portable_kernels(on: bool) {
    PORTABLE.store(on, Ordering::Relaxed);
}

/// Whether the kernels run their AVX-512 code.
#[cfg(target_arch = "x86_64")]
pub(crate) fn avx512() -> bool {
    !PORTABLE.load(Ordering::Relaxed) && std::arch::is_x86_feature_detected!("avx512f")
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

/// Lane mask of the first `n ≤ 16` lanes.
#[cfg(target_arch = "x86_64")]
pub(crate) fn first_lanes(n: usize) -> u16 {
    if n >= 16 {
        !0
    } else {
        (1u16 << n) - 1
    }
}
