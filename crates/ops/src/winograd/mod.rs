//! Winograd F(2×2, 3×3) convolution for 3×3 stride-1 layers (every convolution of VGG19 and
//! the SVGGs): forward, and the weight gradient. The input gradient of a stride-1 conv is itself
//! a 3×3 stride-1 conv (flipped kernel, see `conv::conv_bwd`), so it takes the forward path.
//!
//! Each 2×2 output tile is `Aᵀ [(G g Gᵀ) ⊙ (Bᵀ d B)] A` for its 4×4 input patch `d`: 16
//! multiplications instead of 36, so the matrix products (16 gemms `[O, C] × [C, tiles]` per
//! block of tiles, one per point ξ of the 4×4 transform) do 2.25× fewer FLOPs than im2col+gemm.
//! The weight gradient is the adjoint: `dU[ξ] = Σ_tiles (A dY Aᵀ)[ξ] · (Bᵀ d B)[ξ]` (16 gemms
//! `[O, tiles] × [tiles, C]`), then `dW = Gᵀ dU G`.
//!
//! Work is split into blocks of whole tile rows (one image, one row of 2×2 output tiles each),
//! so that the transforms run along contiguous rows and vectorise. Blocks are spread over rayon
//! threads. The block plan depends on the geometry only, and the weight gradient sums over
//! blocks in an order fixed by the geometry (see [`conv_grad_w`]), so the results are the same
//! bits whatever the thread count.
//!
//! The transforms run on 16 tiles at a time, in two implementations of the same arithmetic:
//! [`avx512`], intrinsics where the CPU has them (contiguous loads and stores along wide rows,
//! gathers and scatters across narrow ones), and [`portable`] Rust otherwise
//! (where the CPU lacks AVX-512, or where [`Isa::Portable`](crate::Isa) asks for it). This module holds the algorithm:
//! the tile and block plan, the tiles' addresses, the gemms and the parallel drivers.

#[cfg(target_arch = "x86_64")]
mod avx512;
mod portable;

use crate::geom::Geom;
use crate::options::{ConvAlgo, ConvOptions, AUTO_MIN_CHANNELS};
use crate::par::{
    acc_groups, alloc_overwritten, gemm_f32, grow, run_units, sum_accumulators, with_scratch,
    KeptBuf, SendPtr, ACC_GROUPS,
};
use crate::simd::Simd;
use gemm::Parallelism;
use std::cell::RefCell;

/// Whether the Winograd path handles this geometry under `algo`.
pub(crate) fn applies(g: &Geom, algo: ConvAlgo) -> bool {
    // Empty convolutions (a zero size anywhere) stay on the im2col path, which handles them.
    let shape_ok = g.k == 3 && g.s == 1 && g.p <= 2 && g.b * g.c * g.o * g.ho * g.wo > 0;
    shape_ok
        && match algo {
            ConvAlgo::Im2col => false,
            ConvAlgo::Winograd => true,
            ConvAlgo::Auto => g.c >= AUTO_MIN_CHANNELS && g.o >= AUTO_MIN_CHANNELS,
        }
}

/// Tile grid and block plan of one convolution.
#[derive(Clone, Copy, Debug)]
struct Tiles {
    /// tile rows / columns per image
    th: usize,
    tw: usize,
    /// tile rows per block
    rows: usize,
    nblocks: usize,
}

impl Tiles {
    /// `block_floats`: see [`ConvOptions::winograd_block_floats`] (and
    /// [`ConvOptions::winograd_grad_w_block_floats`]).
    fn new(g: &Geom, block_floats: usize) -> Self {
        let (th, tw) = (g.ho.div_ceil(2), g.wo.div_ceil(2));
        let total_rows = g.b * th;
        // A tile takes 16 (C + O) floats of transformed input and output.
        let per_tile = 16 * (g.c + g.o);
        let target_tiles = (block_floats / per_tile).max(1);
        let mut rows = (target_tiles / tw).clamp(1, total_rows);
        // Round the block count up so that threads get equal shares: to a multiple of 8 (for
        // 2, 4 and 8 threads) when that adds at most a quarter more blocks, else to an even
        // number (each block costs a repacking of the kernels, dear on small maps with many
        // channels). Not by the thread count: the blocks fix each gemm's shape and with it
        // the rounding.
        let nblocks = total_rows.div_ceil(rows);
        let balanced = match nblocks.div_ceil(8) * 8 {
            n8 if 4 * n8 <= 5 * nblocks => n8,
            _ => nblocks.div_ceil(2) * 2,
        };
        if balanced <= total_rows {
            rows = total_rows.div_ceil(balanced);
        }
        Self {
            th,
            tw,
            rows,
            nblocks: total_rows.div_ceil(rows),
        }
    }
    /// Global tile rows `r0..r1` of block `i` (row `r` is image `r / th`, tile row `r % th`).
    fn block(&self, g: &Geom, i: usize) -> (usize, usize) {
        let r0 = i * self.rows;
        (r0, (r0 + self.rows).min(g.b * self.th))
    }
}

/// `dW[o][c] = Gᵀ dU[·][o][c] G` (3×3 from 4×4), into `[O, C, 3, 3]`.
#[allow(clippy::needless_range_loop)] // indexed by tap, as the formula is written
fn inverse_transform_weight_grad(g: &Geom, du: &[f32]) -> Vec<f32> {
    use rayon::prelude::*;
    let oc_n = g.o * g.c;
    let mut gw = alloc_overwritten(oc_n * 9);
    gw.par_chunks_mut(9)
        .enumerate()
        .with_min_len(256)
        .for_each(|(idx, out)| {
            let u = |i: usize, j: usize| du[(i * 4 + j) * oc_n + idx];
            // Gᵀ on the rows: 4 → 3.
            let mut t = [[0.0f32; 4]; 3];
            for j in 0..4 {
                let (u0, u1, u2, u3) = (u(0, j), u(1, j), u(2, j), u(3, j));
                t[0][j] = u0 + 0.5 * (u1 + u2);
                t[1][j] = 0.5 * (u1 - u2);
                t[2][j] = 0.5 * (u1 + u2) + u3;
            }
            for (i, row) in t.iter().enumerate() {
                let [u0, u1, u2, u3] = *row;
                out[i * 3] = u0 + 0.5 * (u1 + u2);
                out[i * 3 + 1] = 0.5 * (u1 - u2);
                out[i * 3 + 2] = 0.5 * (u1 + u2) + u3;
            }
        });
    gw
}

/// The 16 block gemms `M[ξ] (O×T) = U[ξ] (O×C) · V[ξ] (C×T)`.
fn multiply(g: &Geom, u: Kernels, v: &[f32], m: &mut [f32], t_n: usize, par: Parallelism) {
    let (o, c) = (g.o, g.c);
    let (Kernels::Direct(uf) | Kernels::Rotated(uf)) = u;
    assert!(uf.len() >= 16 * o * c && v.len() >= 16 * c * t_n && m.len() >= 16 * o * t_n);
    for xi in 0..16 {
        // Column and row strides of U[ξ] (O×C) in its buffer.
        let (lhs, strides) = match u {
            Kernels::Direct(u) => (&u[xi * o * c..], (1, c)),
            Kernels::Rotated(u) => {
                let src = ROTATED_POINT[xi / 4] * 4 + ROTATED_POINT[xi % 4];
                (&u[src * o * c..], (o, 1))
            }
        };
        // SAFETY: with the lengths checked above, U[ξ] (O×C, rows of C, or for Rotated the
        // transposed C×O block of point p(ξ)), V[ξ] (C×T) and M[ξ] (O×T) lie inside u, v and
        // m; m is a &mut, so it overlaps neither input.
        unsafe {
            gemm_f32(
                o,
                t_n,
                c,
                m[xi * o * t_n..].as_mut_ptr(),
                t_n,
                false,
                lhs.as_ptr(),
                strides,
                v[xi * c * t_n..].as_ptr(),
                (1, t_n),
                par,
            );
        }
    }
}

/// Tiles (or kernels) per vector chunk: the transforms work on 16 at a time, one AVX-512
/// vector each (fixed-size arrays in the portable code).
const LANES: usize = 16;

#[derive(Default)]
struct Scratch {
    /// transformed input `[16, C, T]`
    v: Vec<f32>,
    /// transformed output (gradient) `[16, O, T]`
    m: Vec<f32>,
    /// zero-padded input plane split into even / odd columns: `[2·th + 2, ew]` each
    even: Vec<f32>,
    odd: Vec<f32>,
    addr: Addr,
}

thread_local! {
    static SCRATCH: RefCell<Scratch> = RefCell::new(Scratch::default());
}

/// `U[ξ][o][c] = (G g Gᵀ)[ξ]` for every 3×3 kernel `g = w[o][c]` of `w` `[O, C, 3, 3]`.
fn transform_weights(simd: Simd, w: &[f32], o: usize, c: usize) -> Vec<f32> {
    use rayon::prelude::*;
    let mut u = alloc_overwritten(16 * o * c);
    let up = SendPtr(u.as_mut_ptr());
    // Rows in parallel: a serial pass here idles the other cores for a 16 MB write on
    // 512-channel layers.
    (0..o).into_par_iter().with_min_len(8).for_each(|r| {
        // SAFETY: up is u, 16·o·c floats, and each row r goes to one task only.
        unsafe { transform_weight_row(simd, w, o, c, r, up) }
    });
    u
}

/// Row `r` of every `U[ξ]` (see [`portable::transform_weight_row`]), with AVX-512 when the CPU
/// has it.
///
/// # Safety
/// `up` points at `16 · o · c` floats, in which no one else accesses row `r` of any `U[ξ]`
/// meanwhile.
unsafe fn transform_weight_row(simd: Simd, w: &[f32], o: usize, c: usize, r: usize, up: SendPtr) {
    #[cfg(target_arch = "x86_64")]
    if simd.avx512() {
        // SAFETY: simd.avx512() holds only where the CPU has AVX-512F (Simd::new); `up` as
        // this function requires.
        return unsafe { avx512::transform_weight_row(w, o, c, r, up) };
    }
    // SAFETY: `up` as this function requires.
    unsafe { portable::transform_weight_row(w, o, c, r, up) }
}

/// Transformed kernels for [`multiply`].
#[derive(Clone, Copy)]
enum Kernels<'a> {
    /// `U[ξ]` `[O, C]` of the convolution's own weights.
    Direct(&'a [f32]),
    /// The transform of the rotated, transposed kernels (the input gradient's), read from the
    /// forward `U` of the weights: rotating g by 180° swaps rows and columns 0 and 3 of
    /// `G g Gᵀ` (`G J = P G` with `J` the reversal, `P` the 0↔3 swap), so
    /// `U'[(i, j)][c][o] = U[(p(i), p(j))][o][c]`: a transposed, permuted view.
    Rotated(&'a [f32]),
}

/// `p` of [`Kernels::Rotated`]: the 0↔3 swap of transform points.
const ROTATED_POINT: [usize; 4] = [3, 1, 2, 0];

/// Tile rows `r0..r1` grouped by image: `(image, first tile row, end tile row, first tile)`
/// (the tile index counts from the block's first tile).
fn segments(
    tl: &Tiles,
    r0: usize,
    r1: usize,
) -> impl Iterator<Item = (usize, usize, usize, usize)> {
    let (th, tw) = (tl.th, tl.tw);
    let mut r = r0;
    std::iter::from_fn(move || {
        if r >= r1 {
            return None;
        }
        let (b, ty0) = (r / th, r % th);
        let ty1 = th.min(ty0 + (r1 - r));
        let seg = (b, ty0, ty1, (r - r0) * tw);
        r += ty1 - ty0;
        Some(seg)
    })
}

/// Row width of the even / odd planes: one column past the last tile's, and for wide rows a
/// whole number of chunks (a row chunk loads 16 + 1 columns whatever its tile count).
fn even_odd_width(tl: &Tiles) -> usize {
    if tl.tw < LANES {
        tl.tw + 1
    } else {
        tl.tw.div_ceil(LANES) * LANES + 1
    }
}

/// Where each tile of a block reads and writes: `inp[t]` is the offset of its patch in the
/// block's even / odd planes, `out[t]` the offset of its top-left output pixel in channel 0 of
/// `y` (add `oc · Ho · Wo`), `edge[t]` bit 0 whether it has a right column, bit 1 a bottom row.
#[derive(Default)]
struct Addr {
    inp: Vec<usize>,
    /// `inp` as gather indices (AVX-512), empty when an offset does not fit an `i32`.
    inp32: Vec<i32>,
    out: Vec<usize>,
    /// `out` as scatter / gather indices, empty when `y` is too large for `i32` offsets.
    out32: Vec<i32>,
    edge: Vec<u8>,
    /// With a 2 × 2 max-pool after the conv ([`Addr::fill_pooled`], not `fill`): the offset of
    /// the tile's pooled pixel in channel 0 of the pooled output `[B, O, Ho/2, Wo/2]` (a 2 × 2
    /// output tile is one pool window), meaningful for tiles with both edge bits; `pooled32` as
    /// `out32`.
    pooled: Vec<usize>,
    pooled32: Vec<i32>,
}

impl Addr {
    fn fill(&mut self, g: &Geom, tl: &Tiles, r0: usize, r1: usize) {
        let (tw, ew, np) = (tl.tw, even_odd_width(tl), g.ho * g.wo);
        let plane = (2 * tl.th + 2) * ew;
        let t_n = (r1 - r0) * tw;
        self.inp.resize(t_n, 0);
        self.out.resize(t_n, 0);
        self.edge.resize(t_n, 0);
        for (s, (b, ty0, ty1, t_base)) in segments(tl, r0, r1).enumerate() {
            for ty in ty0..ty1 {
                for tx in 0..tw {
                    let t = t_base + (ty - ty0) * tw + tx;
                    self.inp[t] = s * plane + 2 * ty * ew + tx;
                    self.out[t] = b * g.o * np + 2 * ty * g.wo + 2 * tx;
                    self.edge[t] = (2 * tx + 1 < g.wo) as u8 | (((2 * ty + 1 < g.ho) as u8) << 1);
                }
            }
        }
        self.inp32.clear();
        // The largest index a gather forms is a tile's offset + 3 rows + 1.
        let fits = |&o: &usize| i32::try_from(o + 3 * ew + 1).is_ok();
        if self.inp.iter().all(fits) {
            self.inp32.extend(self.inp.iter().map(|&o| o as i32));
        }
        self.out32.clear();
        // Indices count from channel oc's plane of image 0 (the kernels add oc · Ho · Wo to
        // the base pointer), and reach at most one row + 1 past a tile's pixel.
        if i32::try_from(g.b * g.o * np + g.wo + 1).is_ok() {
            self.out32.extend(self.out.iter().map(|&o| o as i32));
        }
    }

    /// `pooled` (and `pooled32`, where `out32` is filled) of the block [`Addr::fill`] filled
    /// last, for the pooled forward: tiles in the same order.
    fn fill_pooled(&mut self, g: &Geom, tl: &Tiles, r0: usize, r1: usize) {
        let (ph, pw) = (g.ho / 2, g.wo / 2);
        self.pooled.clear();
        for (b, ty0, ty1, _) in segments(tl, r0, r1) {
            for ty in ty0..ty1 {
                self.pooled
                    .extend((0..tl.tw).map(|tx| b * g.o * ph * pw + ty * pw + tx));
            }
        }
        self.pooled32.clear();
        // Pooled offsets are below the output offsets, which fit an i32 where out32 is filled.
        if self.out32.len() == self.out.len() {
            self.pooled32.extend(self.pooled.iter().map(|&o| o as i32));
        }
    }
}

/// The chunks of a block: `(first tile, tiles)`. Wide rows (`tw ≥ LANES`) are cut per tile row,
/// so that a chunk's tiles are adjacent in the image (contiguous loads and stores); narrow ones
/// run straight across tile rows and images, so that the lanes stay full.
fn chunks(tl: &Tiles, t_n: usize) -> impl Iterator<Item = (usize, usize)> {
    let tw = tl.tw;
    let rows = if tw >= LANES { t_n / tw } else { 0 };
    let per_row = (0..rows).flat_map(move |r| {
        (0..tw)
            .step_by(LANES)
            .map(move |tx0| (r * tw + tx0, LANES.min(tw - tx0)))
    });
    let flat_n = if tw >= LANES { 0 } else { t_n };
    let flat = (0..flat_n)
        .step_by(LANES)
        .map(move |t0| (t0, LANES.min(flat_n - t0)));
    per_row.chain(flat)
}

/// Copies the input rows of image `b`'s channel `ci` that tile rows `ty0..ty1` read into a
/// zero-padded plane split into even and odd columns (`ew` wide). Padded row q is input row
/// q − p; padded column ix + p holds input column ix.
#[inline(always)]
#[allow(clippy::too_many_arguments)]
fn fill_even_odd(
    g: &Geom,
    xc: &[f32],
    ty0: usize,
    ty1: usize,
    ew: usize,
    even: &mut [f32],
    odd: &mut [f32],
) {
    let p = g.p;
    for q in 2 * ty0..2 * ty1 + 2 {
        let Some(iy) = q.checked_sub(p).filter(|&iy| iy < g.h) else {
            continue;
        };
        let src = &xc[iy * g.w..(iy + 1) * g.w];
        let (e, o) = (
            &mut even[q * ew..(q + 1) * ew],
            &mut odd[q * ew..(q + 1) * ew],
        );
        // Input columns 2k and 2k + 1 land at padded p + 2k and p + 2k + 1.
        let (first, second, shift) = if p.is_multiple_of(2) {
            (e, o, (p / 2, p / 2))
        } else {
            (o, e, (p / 2, p / 2 + 1))
        };
        let pairs = src.chunks_exact(2);
        let n2 = g.w / 2;
        if let [last] = pairs.remainder() {
            first[n2 + shift.0] = *last;
        }
        let (f, s) = (
            &mut first[shift.0..shift.0 + n2],
            &mut second[shift.1..shift.1 + n2],
        );
        for ((pair, a), b) in pairs.zip(f.iter_mut()).zip(s.iter_mut()) {
            *a = pair[0];
            *b = pair[1];
        }
    }
}

/// [`fill_even_odd`] for channel `ci` of every image segment of the block (one plane each).
#[inline(always)]
#[allow(clippy::too_many_arguments)]
fn fill_planes(
    g: &Geom,
    tl: &Tiles,
    x: &[f32],
    ci: usize,
    r0: usize,
    r1: usize,
    even: &mut [f32],
    odd: &mut [f32],
) {
    let (c, hw, ew) = (g.c, g.h * g.w, even_odd_width(tl));
    let plane = (2 * tl.th + 2) * ew;
    for (s, (b, ty0, ty1, _)) in segments(tl, r0, r1).enumerate() {
        let xc = &x[(b * c + ci) * hw..(b * c + ci + 1) * hw];
        let (e, o) = (
            &mut even[s * plane..(s + 1) * plane],
            &mut odd[s * plane..(s + 1) * plane],
        );
        fill_even_odd(g, xc, ty0, ty1, ew, e, o);
    }
}

/// `V` of a block (see [`portable::transform_input`]), with AVX-512 when the CPU has it.
#[allow(clippy::too_many_arguments)]
fn transform_input(
    simd: Simd,
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
    #[cfg(target_arch = "x86_64")]
    if simd.avx512() && addr.inp32.len() == (r1 - r0) * tl.tw {
        // SAFETY: simd.avx512() holds only where the CPU has AVX-512F (Simd::new). inp32 is
        // inp as i32 (Addr::fill writes both), here with the block's length; the kernel checks
        // the other bounds.
        return unsafe { avx512::transform_input(g, tl, addr, x, r0, r1, v, even, odd) };
    }
    portable::transform_input(g, tl, addr, x, r0, r1, v, even, odd)
}

/// The output transform of a block (see [`portable::transform_output`]), with AVX-512 when the
/// CPU has it.
///
/// # Safety
/// `addr` was filled for this block of `g` and `tl`, and `yp` points at the whole output
/// (`[B, O, Ho, Wo]` of `g`, or with `out.pool` `[B, O, Ho/2, Wo/2]`), whose pixels of this
/// block's tiles no one else accesses meanwhile.
#[allow(clippy::too_many_arguments)]
unsafe fn transform_output(
    simd: Simd,
    g: &Geom,
    tl: &Tiles,
    addr: &Addr,
    m: &[f32],
    t_n: usize,
    out: Epilogue,
    yp: SendPtr,
) {
    #[cfg(target_arch = "x86_64")]
    if simd.avx512() && addr.out32.len() == t_n {
        // SAFETY: simd.avx512() holds only where the CPU has AVX-512F (Simd::new); out32 (and
        // with a pool pooled32) are out and pooled as i32 (Addr::fill, Addr::fill_pooled), here
        // with the block's length; `yp` as this function requires.
        return unsafe { avx512::transform_output(g, tl, addr, m, t_n, out, yp) };
    }
    // SAFETY: `addr` and `yp` as this function requires.
    unsafe { portable::transform_output(g, tl, addr, m, t_n, out, yp) }
}

/// What the output transform adds and where it writes: the bias, the ReLU, and with `pool` a
/// 2 × 2 max-pool (floor mode), one pooled pixel per whole tile.
#[derive(Clone, Copy)]
pub(crate) struct Epilogue<'a> {
    pub(crate) bias: Option<&'a [f32]>,
    pub(crate) relu: bool,
    pub(crate) pool: bool,
}

/// `dM` of a block (see [`portable::transform_output_grad`]), with AVX-512 when the CPU has it.
fn transform_output_grad(
    simd: Simd,
    g: &Geom,
    tl: &Tiles,
    addr: &Addr,
    gy: &[f32],
    t_n: usize,
    m: &mut [f32],
) {
    #[cfg(target_arch = "x86_64")]
    if simd.avx512() && addr.out32.len() == t_n {
        // SAFETY: simd.avx512() holds only where the CPU has AVX-512F (Simd::new). out32 is out
        // as i32 (Addr::fill, always called for this block of g and tl before the transforms),
        // here with the block's length, so the pixels it gathers lie in the image; the kernel
        // checks the lengths of gy and m.
        return unsafe { avx512::transform_output_grad(g, tl, addr, gy, t_n, m) };
    }
    portable::transform_output_grad(g, tl, addr, gy, t_n, m)
}

/// The per-thread buffers of one block: `V` (`[16, C, T]`), zeroed even / odd planes (one per
/// image segment) and the tiles' addresses.
fn block_buffers<'a>(
    sc: &'a mut Scratch,
    g: &Geom,
    tl: &Tiles,
    r0: usize,
    r1: usize,
) -> (&'a mut [f32], &'a mut [f32], &'a mut [f32], &'a Addr) {
    let t_n = (r1 - r0) * tl.tw;
    let v = grow(&mut sc.v, 16 * g.c * t_n);
    let (even, odd, addr) = block_planes(&mut sc.even, &mut sc.odd, &mut sc.addr, g, tl, r0, r1);
    (v, even, odd, addr)
}

/// The zeroed even / odd planes and the addresses of a block (see [`block_buffers`]).
fn block_planes<'a>(
    even: &'a mut Vec<f32>,
    odd: &'a mut Vec<f32>,
    addr: &'a mut Addr,
    g: &Geom,
    tl: &Tiles,
    r0: usize,
    r1: usize,
) -> (&'a mut [f32], &'a mut [f32], &'a Addr) {
    let nseg = segments(tl, r0, r1).count();
    let planes = nseg * (2 * tl.th + 2) * even_odd_width(tl);
    let even = grow(even, planes);
    even.fill(0.0);
    let odd = grow(odd, planes);
    odd.fill(0.0);
    addr.fill(g, tl, r0, r1);
    (even, odd, addr)
}

/// Forward convolution of a 3×3 stride-1 layer, with the epilogue `out`: `[B, O, Ho, Wo]`, or
/// with `out.pool` (which needs `out.relu`) `[B, O, Ho/2, Wo/2]`, where each 2 × 2 output tile
/// is one pool window: the output transform writes its maximum and the conv output never
/// exists. The same bits as the conv followed by the pool (the pool only compares).
pub(crate) fn conv_fwd(
    g: &Geom,
    x: &[f32],
    w: &[f32],
    out: Epilogue,
    opts: &ConvOptions,
) -> Vec<f32> {
    assert!(
        !out.pool || out.relu,
        "the pooled epilogue is relu, then pool"
    );
    let u = transform_weights(Simd::new(opts.isa), w, g.o, g.c);
    conv_fwd_transformed(g, x, Kernels::Direct(&u), out, opts)
}

/// Input gradient of a 3×3 stride-1 layer with weights `w` `[O, C, 3, 3]`, as the forward
/// convolution `gg` (input `gy` `[B, O, Ho, Wo]`, output `[B, C, H, W]`, padding 2 − p) with the
/// rotated, transposed kernels, read from the transform of `w` ([`Kernels::Rotated`]).
pub(crate) fn conv_input_grad(gg: &Geom, gy: &[f32], w: &[f32], opts: &ConvOptions) -> Vec<f32> {
    let u = transform_weights(Simd::new(opts.isa), w, gg.c, gg.o);
    let out = Epilogue {
        bias: None,
        relu: false,
        pool: false,
    };
    conv_fwd_transformed(gg, gy, Kernels::Rotated(&u), out, opts)
}

fn conv_fwd_transformed(
    g: &Geom,
    x: &[f32],
    u: Kernels,
    out: Epilogue,
    opts: &ConvOptions,
) -> Vec<f32> {
    // The tiles cover every output pixel, and every pool window.
    let mut y = if out.pool {
        alloc_overwritten(g.b * g.o * (g.ho / 2) * (g.wo / 2))
    } else {
        alloc_overwritten(g.b * g.o * g.ho * g.wo)
    };
    if y.is_empty() {
        return y;
    }
    let tl = Tiles::new(g, opts.winograd_block_floats);
    let simd = Simd::new(opts.isa);
    let yp = SendPtr(y.as_mut_ptr());
    // Blocks write disjoint outputs: every block its own group.
    run_units(
        tl.nblocks,
        tl.nblocks,
        || (),
        |_, bi, par| {
            let (r0, r1) = tl.block(g, bi);
            let t_n = (r1 - r0) * tl.tw;
            with_scratch(&SCRATCH, |sc| {
                let (v, even, odd, addr) = block_buffers(sc, g, &tl, r0, r1);
                transform_input(simd, g, &tl, addr, x, r0, r1, v, even, odd);
                if out.pool {
                    sc.addr.fill_pooled(g, &tl, r0, r1);
                }
                let m = grow(&mut sc.m, 16 * g.o * t_n);
                multiply(g, u, &sc.v, m, t_n, par);
                // SAFETY: sc.addr was filled for this block (block_buffers); yp is y, the whole
                // output ([B, O, Ho, Wo], or pooled), and blocks are disjoint tile rows, so
                // this block's pixels are its own.
                unsafe { transform_output(simd, g, &tl, &sc.addr, m, t_n, out, yp) };
            });
        },
    );
    y
}

/// Weight gradient `[O, C, 3, 3]` of a 3×3 stride-1 layer, given the (already ReLU-masked)
/// output gradient `gy`: `dU[ξ] = Σ_blocks dM[ξ] · V[ξ]ᵀ`, then `dW = Gᵀ dU G`.
///
/// Where `ACC_GROUPS` copies of `dU` fit the partial-sum budget (up to 128×256 channels),
/// groups of consecutive blocks sum into their own copy, each block's products right after its
/// transforms (while they are in cache), and the copies are added in group order. Larger `dU`s
/// (16 MB on a 512→512 layer) are summed in place instead, see [`grad_u_in_place`].
pub(crate) fn conv_grad_w(g: &Geom, x: &[f32], gy: &[f32], opts: &ConvOptions) -> Vec<f32> {
    let tl = Tiles::new(g, opts.winograd_grad_w_block_floats);
    let simd = Simd::new(opts.isa);
    let du = if acc_groups(16 * g.o * g.c) == ACC_GROUPS {
        grad_u_grouped(simd, g, &tl, x, gy)
    } else {
        grad_u_in_place(simd, g, &tl, x, gy)
    };
    inverse_transform_weight_grad(g, &du)
}

fn grad_u_grouped(simd: Simd, g: &Geom, tl: &Tiles, x: &[f32], gy: &[f32]) -> Vec<f32> {
    let (o, c) = (g.o, g.c);
    let accs = run_units(
        tl.nblocks,
        ACC_GROUPS,
        // Written by the group's first block's gemms (`read_dst = started`).
        || (alloc_overwritten(16 * o * c), false),
        |(du, started), bi, par| {
            let (r0, r1) = tl.block(g, bi);
            let t_n = (r1 - r0) * tl.tw;
            with_scratch(&SCRATCH, |sc| {
                let (v, even, odd, addr) = block_buffers(sc, g, tl, r0, r1);
                transform_input(simd, g, tl, addr, x, r0, r1, v, even, odd);
                let m = grow(&mut sc.m, 16 * o * t_n);
                transform_output_grad(simd, g, tl, &sc.addr, gy, t_n, m);
                // dU[ξ] (O×C) += dM[ξ] (O×T) · V[ξ]ᵀ (T×C)
                for xi in 0..16 {
                    // SAFETY: dU[ξ] (O×C) lies inside du (16·o·c floats, this group's own), dM[ξ]
                    // (O×T) inside m (16·o·t_n) and V[ξ] (C×T, read transposed) inside sc.v
                    // (grown to 16·c·t_n by block_buffers).
                    unsafe {
                        gemm_f32(
                            o,
                            c,
                            t_n,
                            du[xi * o * c..].as_mut_ptr(),
                            c,
                            *started,
                            m[xi * o * t_n..].as_ptr(),
                            (1, t_n),
                            sc.v[xi * c * t_n..].as_ptr(),
                            (t_n, 1),
                            par,
                        );
                    }
                }
                *started = true;
            });
        },
    );
    let parts = accs.into_iter().map(|(du, started)| started.then_some(du));
    sum_accumulators(parts, 16 * o * c)
}

/// Blocks whose transforms [`grad_u_in_place`] holds at once.
const GW_BLOCKS: usize = 8;
/// Rows of `dU[ξ]` per weight-gradient product task.
const GW_ROWS: usize = 256;
/// The weight gradient's transform buffers, kept between calls (up to `GW_BLOCKS` blocks of
/// about `winograd_grad_w_block_floats` each): fresh ones would be page-faulted in on every call.
static GW_BUF: KeptBuf = KeptBuf::new();

/// `dU` summed over blocks in block order into one buffer, `GW_BLOCKS` blocks at a time: first
/// their transforms, one block per task, then the products, one task per (ξ, `GW_ROWS` rows of
/// `dU[ξ]`) running through the blocks in order. No copies of `dU` to allocate and add up, and
/// each product task keeps its rows of `dU` in cache across the blocks.
fn grad_u_in_place(simd: Simd, g: &Geom, tl: &Tiles, x: &[f32], gy: &[f32]) -> Vec<f32> {
    use rayon::prelude::*;
    let (o, c) = (g.o, g.c);
    // Per-block strides of the V and dM regions.
    let t_max = tl.rows * tl.tw;
    let (vs, ms) = (16 * c * t_max, 16 * o * t_max);
    GW_BUF.with(|buf| {
        let nb = GW_BLOCKS.min(tl.nblocks);
        let (vbuf, mbuf) = grow(buf, nb * (vs + ms)).split_at_mut(nb * vs);
        // Written by the first block's products (`read_dst` from then on).
        let mut du = alloc_overwritten(16 * o * c);
        let dup = SendPtr(du.as_mut_ptr());
        let row_tasks = o.div_ceil(GW_ROWS);
        for first in (0..tl.nblocks).step_by(GW_BLOCKS) {
            let n = GW_BLOCKS.min(tl.nblocks - first);
            let tiles = |j: usize| {
                let (r0, r1) = tl.block(g, first + j);
                (r0, r1, (r1 - r0) * tl.tw)
            };
            vbuf[..n * vs]
                .par_chunks_mut(vs)
                .zip(mbuf[..n * ms].par_chunks_mut(ms))
                .enumerate()
                .with_max_len(1)
                .for_each(|(j, (v, m))| {
                    let (r0, r1, t_n) = tiles(j);
                    with_scratch(&SCRATCH, |sc| {
                        let (even, odd, addr) =
                            block_planes(&mut sc.even, &mut sc.odd, &mut sc.addr, g, tl, r0, r1);
                        transform_input(simd, g, tl, addr, x, r0, r1, v, even, odd);
                        transform_output_grad(simd, g, tl, addr, gy, t_n, m);
                    });
                });
            let (vbuf, mbuf) = (&*vbuf, &*mbuf);
            (0..16 * row_tasks)
                .into_par_iter()
                .with_max_len(1)
                .for_each(|task| {
                    let (xi, o0) = (task / row_tasks, task % row_tasks * GW_ROWS);
                    let rows = GW_ROWS.min(o - o0);
                    for j in 0..n {
                        let t_n = tiles(j).2;
                        let m = &mbuf[j * ms + (xi * o + o0) * t_n..];
                        let v = &vbuf[j * vs + xi * c * t_n..];
                        // dU[ξ] rows (rows×C) += dM[ξ] rows (rows×T) · V[ξ]ᵀ (T×C)
                        // SAFETY: rows o0..o0 + rows of dU[ξ] lie inside du (16·o·c floats) and
                        // are this task's alone; block j's dM[ξ] rows and V[ξ] lie inside its
                        // regions of mbuf / vbuf (sized for the largest block, t_max tiles).
                        unsafe {
                            gemm_f32(
                                rows,
                                c,
                                t_n,
                                dup.get().add((xi * o + o0) * c),
                                c,
                                first + j > 0,
                                m.as_ptr(),
                                (1, t_n),
                                v.as_ptr(),
                                (t_n, 1),
                                Parallelism::None,
                            );
                        }
                    }
                });
        }
        du
    })
}
