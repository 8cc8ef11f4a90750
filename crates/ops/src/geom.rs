//! The geometry of one convolution, shared by the im2col (`conv`) and Winograd paths.

/// Convolution geometry: input `[b, c, h, w]`, kernel `[o, c, k, k]`, stride `s`, padding
/// `p`, output `[b, o, ho, wo]`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Geom {
    pub b: usize,
    pub c: usize,
    pub h: usize,
    pub w: usize,
    pub o: usize,
    pub k: usize,
    pub s: usize,
    pub p: usize,
    pub ho: usize,
    pub wo: usize,
}

impl Geom {
    /// Returns `None` when the (padded) input is smaller than the kernel or stride is 0.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        b: usize,
        c: usize,
        h: usize,
        w: usize,
        o: usize,
        k: usize,
        s: usize,
        p: usize,
    ) -> Option<Self> {
        if s == 0 || k == 0 || h + 2 * p < k || w + 2 * p < k {
            return None;
        }
        let ho = (h + 2 * p - k) / s + 1;
        let wo = (w + 2 * p - k) / s + 1;
        Some(Self {
            b,
            c,
            h,
            w,
            o,
            k,
            s,
            p,
            ho,
            wo,
        })
    }
    /// Rows of the im2col matrix: `C·K·K`.
    #[inline]
    pub fn kk(&self) -> usize {
        self.c * self.k * self.k
    }
    /// Output pixels per channel: `Ho·Wo`.
    #[inline]
    pub fn npix(&self) -> usize {
        self.ho * self.wo
    }
    /// Floats of one input image.
    #[inline]
    pub fn in_img(&self) -> usize {
        self.c * self.h * self.w
    }
    /// Floats of one output image.
    #[inline]
    pub fn out_img(&self) -> usize {
        self.o * self.npix()
    }
    /// 1x1 stride-1 unpadded conv: the input itself is the im2col matrix.
    #[inline]
    pub fn pointwise(&self) -> bool {
        self.k == 1 && self.s == 1 && self.p == 0
    }
}
