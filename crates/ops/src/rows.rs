//! Element-wise row kernels of batch norm (`slices.rs`), compiled twice: for the baseline target
//! and with AVX-512F enabled, chosen at run time. The workspace builds for baseline x86-64, so
//! without the second copy these loops vectorise 4 lanes wide; each element is computed on its
//! own (no sums across lanes, no fused multiply-adds), so both copies give the same bits.

// Index loops over slices cut to one length: the form LLVM vectorises.
#![allow(clippy::needless_range_loop)]

use crate::options::Isa;
use crate::simd::Simd;

/// Defines `pub(crate) fn $name(simd: Simd, args…)` running `$body` under AVX-512F where the
/// CPU has it (through an `#[inline(always)]` generic copy), plain otherwise.
macro_rules! dispatch {
    ($(#[$doc:meta])* fn $name:ident($($arg:ident: $ty:ty),* $(,)?) $body:block) => {
        $(#[$doc])*
        pub(crate) fn $name($($arg: $ty),*) {
            #[inline(always)]
            fn generic($($arg: $ty),*) $body
            #[cfg(target_arch = "x86_64")]
            #[target_feature(enable = "avx512f")]
            unsafe fn avx512($($arg: $ty),*) {
                generic($($arg),*)
            }
            #[cfg(target_arch = "x86_64")]
            if Simd::new(Isa::Detect).avx512() {
                // SAFETY: the CPU has AVX-512F (checked at run time just above).
                return unsafe { avx512($($arg),*) };
            }
            generic($($arg),*)
        }
    };
}

dispatch! {
    /// `s1 += x − k`, `s2 += (x − k)²`.
    fn shifted_sums(x: &[f32], k: &[f32], s1: &mut [f32], s2: &mut [f32]) {
        let n = x.len();
        let (k, s1, s2) = (&k[..n], &mut s1[..n], &mut s2[..n]);
        for j in 0..n {
            let d = x[j] - k[j];
            s1[j] += d;
            s2[j] += d * d;
        }
    }
}

dispatch! {
    /// `y = x·a + b`, then ReLU (`max(·, 0)`) when `relu`.
    fn affine(x: &[f32], a: &[f32], b: &[f32], y: &mut [f32], relu: bool) {
        let n = x.len();
        let (a, b, y) = (&a[..n], &b[..n], &mut y[..n]);
        if relu {
            for j in 0..n {
                y[j] = (x[j] * a[j] + b[j]).max(0.0);
            }
        } else {
            for j in 0..n {
                y[j] = x[j] * a[j] + b[j];
            }
        }
    }
}

dispatch! {
    /// With `g' = g` masked by `x·ra + rb > 0` (when `relu` is given): `sb += g'`,
    /// `sc += g'·(x − mu)`.
    fn bn_grad_sums(
        x: &[f32],
        g: &[f32],
        mu: &[f32],
        relu: Option<(&[f32], &[f32])>,
        sb: &mut [f32],
        sc: &mut [f32],
    ) {
        let n = x.len();
        let (g, mu, sb, sc) = (&g[..n], &mu[..n], &mut sb[..n], &mut sc[..n]);
        match relu {
            Some((ra, rb)) => {
                let (ra, rb) = (&ra[..n], &rb[..n]);
                for j in 0..n {
                    let gm = if x[j] * ra[j] + rb[j] > 0.0 { g[j] } else { 0.0 };
                    sb[j] += gm;
                    sc[j] += gm * (x[j] - mu[j]);
                }
            }
            None => {
                for j in 0..n {
                    sb[j] += g[j];
                    sc[j] += g[j] * (x[j] - mu[j]);
                }
            }
        }
    }
}

dispatch! {
    /// `o = k1·g' − k2·x + k0`, `g'` as in [`bn_grad_sums`].
    fn bn_grad_x(
        x: &[f32],
        g: &[f32],
        relu: Option<(&[f32], &[f32])>,
        k1: &[f32],
        k2: &[f32],
        k0: &[f32],
        o: &mut [f32],
    ) {
        let n = x.len();
        let (g, k1, k2, k0, o) = (&g[..n], &k1[..n], &k2[..n], &k0[..n], &mut o[..n]);
        match relu {
            Some((ra, rb)) => {
                let (ra, rb) = (&ra[..n], &rb[..n]);
                for j in 0..n {
                    let gm = if x[j] * ra[j] + rb[j] > 0.0 { g[j] } else { 0.0 };
                    o[j] = k1[j] * gm - k2[j] * x[j] + k0[j];
                }
            }
            None => {
                for j in 0..n {
                    o[j] = k1[j] * g[j] - k2[j] * x[j] + k0[j];
                }
            }
        }
    }
}
