//! Image resizing on u8 that reproduces Pillow's `Image.resize(size, Image.BILINEAR)`
//! bit for bit (Pillow ≥ 4: `libImaging/Resample.c`).
//!
//! Pillow resamples separably: one pass into an intermediate **u8** image, then the other
//! (horizontal first, except as noted in the code). For each output coordinate `x` it takes the source centre
//! `c = (x + 0.5)·scale` (`scale = in/out`), the triangle filter with support
//! `max(scale, 1)`, taps `xmin = ⌊c − support + 0.5⌋ … ⌊c + support + 0.5⌋` clipped to the
//! image, weights `tri((k − c + 0.5)/max(scale,1))` normalised to sum 1, converted to 22-bit
//! fixed point (rounded half away from zero), accumulated from `1 << 21` and shifted right by
//! 22 with clamping to 0..=255. For upscaling this is bilinear interpolation with pixel-centre
//! alignment (`align_corners = False`) and edge clamping, rounded to u8; for downscaling it
//! is an antialiasing (area-like) filter, as in Pillow.

const PRECISION_BITS: u32 = 32 - 8 - 2;

/// Fixed-point resampling coefficients for one axis.
#[derive(Debug, Clone)]
pub struct Coeffs {
    /// For each output coordinate: first source index and number of taps.
    pub bounds: Vec<(usize, usize)>,
    /// `ksize` weights per output coordinate (only the first `taps` are used).
    pub weights: Vec<i32>,
    /// Stride of `weights`: the largest tap count of any output coordinate.
    pub ksize: usize,
}

fn triangle(x: f64) -> f64 {
    let x = x.abs();
    if x < 1.0 {
        1.0 - x
    } else {
        0.0
    }
}

/// Pillow's `precompute_coeffs` + `normalize_coeffs_8bpc` for the bilinear filter.
pub fn bilinear_coeffs(in_size: usize, out_size: usize) -> Coeffs {
    let scale = in_size as f64 / out_size as f64;
    let filterscale = scale.max(1.0);
    let support = filterscale; // bilinear support 1.0 × filterscale
    let ksize = support.ceil() as usize * 2 + 1;
    let mut bounds = Vec::with_capacity(out_size);
    let mut weights = vec![0i32; out_size * ksize];
    let ss = 1.0 / filterscale;
    let mut k = vec![0f64; ksize];
    for xx in 0..out_size {
        let center = (xx as f64 + 0.5) * scale;
        // C: (int)(center - support + 0.5) truncates toward zero, then clamps at 0.
        let xmin = ((center - support + 0.5) as i64).max(0) as usize;
        let xmax = ((center + support + 0.5) as i64).min(in_size as i64).max(0) as usize;
        let taps = xmax.saturating_sub(xmin).min(ksize);
        let mut ww = 0.0;
        for (x, kx) in k.iter_mut().enumerate().take(taps) {
            let w = triangle((x as f64 + xmin as f64 - center + 0.5) * ss);
            *kx = w;
            ww += w;
        }
        for x in 0..taps {
            let w = if ww != 0.0 { k[x] / ww } else { k[x] };
            let f = w * f64::from(1u32 << PRECISION_BITS);
            weights[xx * ksize + x] = if w < 0.0 {
                (-0.5 + f) as i32
            } else {
                (0.5 + f) as i32
            };
        }
        bounds.push((xmin, taps));
    }
    Coeffs {
        bounds,
        weights,
        ksize,
    }
}

#[inline]
fn clip8(ss: i64) -> u8 {
    let v = ss >> PRECISION_BITS;
    v.clamp(0, 255) as u8
}

/// Resizes one `channels×h×w` planar u8 image to `channels×out_h×out_w` exactly like Pillow's
/// bilinear `resize` (horizontal pass first, rounded to u8, then vertical).
/// Returns a copy if the size is unchanged. Pass precomputed coefficients with
/// [`resize_bilinear_with`] when resizing many images of the same size.
pub fn resize_bilinear(
    src: &[u8],
    channels: usize,
    h: usize,
    w: usize,
    out_h: usize,
    out_w: usize,
) -> Vec<u8> {
    let ch = bilinear_coeffs(w, out_w);
    let cv = bilinear_coeffs(h, out_h);
    let mut out = vec![0u8; channels * out_h * out_w];
    resize_bilinear_with(src, channels, h, w, out_h, out_w, &ch, &cv, &mut out);
    out
}

/// [`resize_bilinear`] with precomputed horizontal (`ch`, w → out_w) and vertical
/// (`cv`, h → out_h) coefficients, writing into `out` (`channels·out_h·out_w` bytes).
#[allow(clippy::too_many_arguments)]
pub fn resize_bilinear_with(
    src: &[u8],
    channels: usize,
    h: usize,
    w: usize,
    out_h: usize,
    out_w: usize,
    ch: &Coeffs,
    cv: &Coeffs,
    out: &mut [u8],
) {
    assert_eq!(src.len(), channels * h * w, "resize: source size");
    assert_eq!(out.len(), channels * out_h * out_w, "resize: output size");
    let need_h = w != out_w;
    let need_v = h != out_h;
    // Pillow 13 runs the vertical pass first when it shrinks and the horizontal one grows
    // (checked empirically against Pillow 13.0.0); otherwise horizontal first, as in
    // Pillow 4–10's `ImagingResampleInner`. The order matters through the u8 rounding of the
    // intermediate image.
    let vertical_first = need_h && need_v && out_h < h && out_w > w;
    let mut tmp = Vec::new();
    for c in 0..channels {
        let plane = &src[c * h * w..(c + 1) * h * w];
        let dst = &mut out[c * out_h * out_w..(c + 1) * out_h * out_w];
        match (need_h, need_v) {
            (true, false) => horizontal(plane, h, w, out_w, ch, dst),
            (false, true) => vertical(plane, w, out_h, cv, dst),
            (true, true) if vertical_first => {
                tmp.resize(out_h * w, 0);
                vertical(plane, w, out_h, cv, &mut tmp);
                horizontal(&tmp, out_h, w, out_w, ch, dst);
            }
            (true, true) => {
                tmp.resize(h * out_w, 0);
                horizontal(plane, h, w, out_w, ch, &mut tmp);
                vertical(&tmp, out_w, out_h, cv, dst);
            }
            (false, false) => dst.copy_from_slice(plane),
        }
    }
}

const HALF: i64 = 1 << (PRECISION_BITS - 1);

/// Horizontal pass: `rows` rows of width `w` → width `out_w`.
fn horizontal(src: &[u8], rows: usize, w: usize, out_w: usize, ch: &Coeffs, dst: &mut [u8]) {
    for y in 0..rows {
        let row = &src[y * w..(y + 1) * w];
        let orow = &mut dst[y * out_w..(y + 1) * out_w];
        for (xx, o) in orow.iter_mut().enumerate() {
            let (xmin, taps) = ch.bounds[xx];
            let k = &ch.weights[xx * ch.ksize..xx * ch.ksize + taps];
            let mut ss = HALF;
            for (&p, &kw) in row[xmin..xmin + taps].iter().zip(k) {
                ss += i64::from(p) * i64::from(kw);
            }
            *o = clip8(ss);
        }
    }
}

/// Vertical pass: rows of width `w` → `out_h` rows.
fn vertical(src: &[u8], w: usize, out_h: usize, cv: &Coeffs, dst: &mut [u8]) {
    for yy in 0..out_h {
        let (ymin, taps) = cv.bounds[yy];
        let k = &cv.weights[yy * cv.ksize..yy * cv.ksize + taps];
        let orow = &mut dst[yy * w..(yy + 1) * w];
        for (xx, o) in orow.iter_mut().enumerate() {
            let mut ss = HALF;
            for (t, &kw) in k.iter().enumerate() {
                ss += i64::from(src[(ymin + t) * w + xx]) * i64::from(kw);
            }
            *o = clip8(ss);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identity_and_constant() {
        let src: Vec<u8> = (0..2 * 5 * 7).map(|x| (x * 3) as u8).collect();
        assert_eq!(resize_bilinear(&src, 2, 5, 7, 5, 7), src);
        let flat = vec![77u8; 3 * 32 * 32];
        assert!(resize_bilinear(&flat, 3, 32, 32, 96, 96)
            .iter()
            .all(|&v| v == 77));
        assert!(resize_bilinear(&flat, 3, 32, 32, 13, 20)
            .iter()
            .all(|&v| v == 77));
    }

    #[test]
    fn upscale_by_two_is_centre_aligned_bilinear() {
        // 1-D row [0, 100]: output centres at 0.25, 0.75, 1.25, 1.75 in source pixel units
        // (minus 0.5 = -0.25, 0.25, 0.75, 1.25) → 0, 25, 75, 100 after edge clamping.
        let out = resize_bilinear(&[0, 100], 1, 1, 2, 1, 4);
        assert_eq!(out, vec![0, 25, 75, 100]);
    }
}
