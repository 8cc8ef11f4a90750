//! Fast CPU `conv2d` (+ fused bias/ReLU) and 2x2 max-pool for candle, with their own backward.
//!
//! candle 0.11's CPU conv backward is a direct loop and much slower than PyTorch; these ops use
//! Winograd F(2×2, 3×3) for 3×3 stride-1 layers (forward, input and weight gradients) and
//! im2col / col2im elsewhere, over the `gemm` crate (AVX-512 kernels enabled), spread over rayon
//! threads. [`ConvOptions`] choose between them, per call ([`conv2d_with`]); the default
//! options ([`conv2d`]) take the algorithm from `PYRAMID_CONV_ALGO`.
//! They are candle [`CustomOp2`]/[`CustomOp3`]/[`CustomOp1`] ops, so autograd works through them
//! (gradients for the input, the weight and the bias).
//!
//! * [`Backend::Fast`]: the custom ops for f32 tensors on the CPU; any other device or dtype
//!   falls back to candle's own ops (see [`max_pool2x2`] for the one exception). With the
//!   `cudnn` feature, the conv ops also run on CUDA f32 tensors, through cuDNN (module `cudnn`).
//! * [`Backend::Candle`]: candle's `conv2d`, `max_pool2d` and `relu`, for comparison. (For a
//!   strided conv whose two spatial remainders `(size + 2p - k) % stride` differ, the input is
//!   padded explicitly first, because candle 0.11.1's conv2d backward gets the input-gradient
//!   width wrong in that case.)
//!
//! Memory: each rayon thread keeps its im2col scratch (up to a few MB), the fused-ReLU
//! backward keeps one activation-sized buffer for the masked output gradient between calls, and
//! the Winograd weight gradient of layers beyond 128×256 channels keeps the transforms of 8
//! blocks (about 32 MB).
//!
//! Results do not depend on the number of rayon threads: forward and backward give the same
//! bits on any pool (`tests/threads.rs`), so `RAYON_NUM_THREADS` changes the speed of a
//! training run, not its numbers.
//!
//! **Note on candle's max-pool backward (candle 0.11.1):** its gradient is wrong: each maximum
//! receives `grad * (number of maxima in the window) / 4` (so `grad / 4` for a unique maximum),
//! and for odd spatial sizes the upsampled mask is misaligned with the windows. The fast
//! max-pool implements PyTorch's semantics instead (the whole gradient goes to the first
//! maximum of each window in scan order).

#![warn(missing_docs)]
#![deny(clippy::undocumented_unsafe_blocks)]

mod conv;
#[cfg(feature = "cudnn")]
pub mod cudnn;
mod dense;
mod direct;
#[cfg_attr(not(target_arch = "x86_64"), allow(dead_code))]
mod dots;
mod geom;
mod options;
mod par;
mod pool;
mod rows;
mod simd;
pub mod slices;
mod winograd;

use candle_core::{
    bail, CpuStorage, CustomOp1, CustomOp2, CustomOp3, DType, Layout, Shape, Storage,
};
pub use candle_core::{Result, Tensor};

pub use options::{conv_algo, ConvAlgo, ConvOptions, Isa, AUTO_MIN_CHANNELS};
use simd::Simd;

/// Tells glibc's malloc to keep freed memory for reuse instead of handing it back to the
/// kernel. A training step frees and reallocates tens of MB of activation-sized buffers; by
/// default glibc serves each of them with a fresh `mmap` (or trims the heap after the free), so
/// every step page-faults and zeroes them again: 96,000 page faults and about 10 % of a ÷8
/// CPU-config step (docs/benchmarks.md). Peak memory is unchanged (the buffers are the same);
/// what changes is that the process keeps its high-water mark mapped. Binaries call this once
/// at start; a no-op where the C library is not glibc.
pub fn keep_freed_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only sets two malloc parameters; it is called before any thread of ours
    // allocates in parallel, and glibc serialises it with its own lock anyway.
    unsafe {
        // Allocations below 1 GiB come from the heap, and free never trims it.
        libc::mallopt(libc::M_MMAP_THRESHOLD, 1 << 30);
        libc::mallopt(libc::M_TRIM_THRESHOLD, i32::MAX);
    }
}

/// Which implementation to use.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub enum Backend {
    /// Winograd / im2col + gemm custom ops on the CPU for f32 (and cuDNN convs on CUDA with the
    /// `cudnn` feature); falls back to candle elsewhere.
    #[default]
    Fast,
    /// candle's built-in ops.
    Candle,
}

/// 2-D convolution, `x` NCHW f32, `w` `[Cout, Cin, K, K]`, `b` `[Cout]`; output NCHW.
/// Differentiable w.r.t. `x`, `w` and `b`. Runs with `ConvOptions::default()`.
pub fn conv2d(
    x: &Tensor,
    w: &Tensor,
    b: Option<&Tensor>,
    stride: usize,
    padding: usize,
    backend: Backend,
) -> Result<Tensor> {
    conv2d_with(x, w, b, stride, padding, backend, &ConvOptions::default())
}

/// [`conv2d`] with explicit options (which `Backend::Fast` on the CPU follows, forward and
/// backward).
pub fn conv2d_with(
    x: &Tensor,
    w: &Tensor,
    b: Option<&Tensor>,
    stride: usize,
    padding: usize,
    backend: Backend,
    opts: &ConvOptions,
) -> Result<Tensor> {
    conv_impl(x, w, b, stride, padding, false, backend, *opts)
}

/// `relu(conv2d(x, w, b))`, fused (the backward masks the output gradient by `output > 0`).
/// Runs with `ConvOptions::default()`.
pub fn conv2d_relu(
    x: &Tensor,
    w: &Tensor,
    b: Option<&Tensor>,
    stride: usize,
    padding: usize,
    backend: Backend,
) -> Result<Tensor> {
    conv2d_relu_with(x, w, b, stride, padding, backend, &ConvOptions::default())
}

/// [`conv2d_relu`] with explicit options.
pub fn conv2d_relu_with(
    x: &Tensor,
    w: &Tensor,
    b: Option<&Tensor>,
    stride: usize,
    padding: usize,
    backend: Backend,
    opts: &ConvOptions,
) -> Result<Tensor> {
    conv_impl(x, w, b, stride, padding, true, backend, *opts)
}

/// Max-pool with kernel 2 and stride 2, floor mode (odd trailing rows/columns are dropped).
/// Differentiable.
///
/// `Backend::Candle` is candle's `max_pool2d(2)` (whose backward is wrong in candle 0.11.1, see
/// the crate docs). `Backend::Fast` on a non-CPU device or a non-f32 dtype uses a composite of
/// candle ops (reshape + two `max` reductions) with a correct gradient (ties: every maximum
/// receives the gradient, as in candle's `max` reduction).
pub fn max_pool2x2(x: &Tensor, backend: Backend) -> Result<Tensor> {
    max_pool2x2_with(x, backend, Isa::default())
}

/// [`max_pool2x2`] whose CPU kernels run the code `isa` selects.
pub fn max_pool2x2_with(x: &Tensor, backend: Backend, isa: Isa) -> Result<Tensor> {
    let (b, c, h, w) = x.dims4()?;
    if h < 2 || w < 2 {
        bail!(
            "pyramid-ops max_pool2x2: input {:?} smaller than the 2x2 window",
            x.shape()
        );
    }
    match backend {
        Backend::Candle => x.max_pool2d(2),
        Backend::Fast if x.device().is_cpu() && x.dtype() == DType::F32 => {
            x.contiguous()?.apply_op1(MaxPool2x2 { isa })
        }
        Backend::Fast => {
            let (ho, wo) = (h / 2, w / 2);
            x.narrow(2, 0, 2 * ho)?
                .narrow(3, 0, 2 * wo)?
                .contiguous()?
                .reshape((b, c, ho, 2, wo, 2))?
                .max(5)?
                .max(3)
        }
    }
}

#[allow(clippy::too_many_arguments)]
fn conv_impl(
    x: &Tensor,
    w: &Tensor,
    b: Option<&Tensor>,
    stride: usize,
    padding: usize,
    relu: bool,
    backend: Backend,
    opts: ConvOptions,
) -> Result<Tensor> {
    let fast = backend == Backend::Fast
        && (x.device().is_cpu() || cfg!(feature = "cudnn") && x.device().is_cuda())
        && x.dtype() == DType::F32
        && w.dtype() == DType::F32
        && b.is_none_or(|b| b.dtype() == DType::F32);
    if !fast {
        let (_, _, h, wd) = x.dims4()?;
        let k = w.dim(2)?;
        let (rh, rw) = (
            (h + 2 * padding).saturating_sub(k) % stride.max(1),
            (wd + 2 * padding).saturating_sub(k) % stride.max(1),
        );
        let mut y = if rh == rw {
            x.conv2d(w, padding, stride, 1, 1)?
        } else {
            // candle 0.11.1's conv2d backward derives the transposed conv's output padding from
            // the height only, so its input gradient has the wrong width when the two spatial
            // remainders differ. Pad explicitly and crop the never-read trailing rows/columns.
            x.pad_with_zeros(2, padding, padding)?
                .pad_with_zeros(3, padding, padding)?
                .narrow(2, 0, h + 2 * padding - rh)?
                .narrow(3, 0, wd + 2 * padding - rw)?
                .conv2d(w, 0, stride, 1, 1)?
        };
        if let Some(b) = b {
            let o = b.dims1()?;
            y = y.broadcast_add(&b.reshape((1, o, 1, 1))?)?;
        }
        return if relu { y.relu() } else { Ok(y) };
    }
    let op = Conv {
        stride,
        padding,
        relu,
        opts,
    };
    // validate shapes early for a clear error
    op.geom(x.layout(), w.layout(), b.map(|b| b.layout()))?;
    let x = x.contiguous()?;
    let w = w.contiguous()?;
    match b {
        Some(b) => x.apply_op3(&w, &b.contiguous()?, op),
        None => x.apply_op2(&w, op),
    }
}

/// Contiguous f32 slice of a CPU storage.
fn slice<'a>(s: &'a CpuStorage, l: &Layout) -> Result<&'a [f32]> {
    let data = s.as_slice::<f32>()?;
    match l.contiguous_offsets() {
        Some((a, b)) => Ok(&data[a..b]),
        None => bail!("pyramid-ops: expected a contiguous tensor"),
    }
}

/// Runs `f` on the contiguous f32 data of a CPU tensor.
fn with_f32<R>(t: &Tensor, f: impl FnOnce(&[f32]) -> Result<R>) -> Result<R> {
    let t = t.contiguous()?;
    let (st, l) = t.storage_and_layout();
    match &*st {
        Storage::Cpu(c) => f(slice(c, l)?),
        _ => bail!("pyramid-ops: expected a CPU tensor"),
    }
}

#[derive(Clone, Copy, Debug)]
struct Conv {
    stride: usize,
    padding: usize,
    relu: bool,
    /// The CPU kernels' choices, for the backward as well as the forward.
    opts: ConvOptions,
}

impl Conv {
    fn geom(&self, xl: &Layout, wl: &Layout, bl: Option<&Layout>) -> Result<geom::Geom> {
        let (b, c, h, w) = xl.shape().dims4()?;
        let (o, ci, kh, kw) = wl.shape().dims4()?;
        if ci != c || kh != kw {
            bail!(
                "pyramid-ops conv2d: input {:?} incompatible with kernel {:?} (need [Cout, {c}, K, K])",
                xl.shape(),
                wl.shape()
            );
        }
        if let Some(bl) = bl {
            if bl.shape().dims1()? != o {
                bail!(
                    "pyramid-ops conv2d: bias {:?} for {o} output channels",
                    bl.shape()
                );
            }
        }
        match geom::Geom::new(b, c, h, w, o, kh, self.stride, self.padding) {
            Some(g) => Ok(g),
            None => bail!(
                "pyramid-ops conv2d: bad geometry input {:?} kernel {kh} stride {} padding {}",
                xl.shape(),
                self.stride,
                self.padding
            ),
        }
    }

    fn fwd(
        &self,
        xs: &CpuStorage,
        xl: &Layout,
        ws: &CpuStorage,
        wl: &Layout,
        b: Option<(&CpuStorage, &Layout)>,
    ) -> Result<(CpuStorage, Shape)> {
        let g = self.geom(xl, wl, b.map(|b| b.1))?;
        let x = slice(xs, xl)?;
        let w = slice(ws, wl)?;
        let bias = match b {
            Some((s, l)) => Some(slice(s, l)?),
            None => None,
        };
        let y = conv::conv_fwd(&g, x, w, bias, self.relu, &self.opts);
        Ok((CpuStorage::F32(y), Shape::from((g.b, g.o, g.ho, g.wo))))
    }

    fn bwd(
        &self,
        x: &Tensor,
        w: &Tensor,
        b: Option<&Tensor>,
        res: &Tensor,
        grad: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let g = self.geom(x.layout(), w.layout(), b.map(|b| b.layout()))?;
        let need_x = x.track_op();
        let need_w = w.track_op();
        let need_b = b.is_some_and(|b| b.track_op());
        #[cfg(feature = "cudnn")]
        if x.device().is_cuda() {
            return cudnn::conv_bwd(&g, self.relu, x, w, res, grad, need_x, need_w, need_b);
        }
        let grads = with_f32(x, |xd| {
            with_f32(w, |wd| {
                with_f32(grad, |gd| {
                    if self.relu {
                        with_f32(res, |yd| {
                            Ok(conv::conv_bwd(
                                &g,
                                xd,
                                wd,
                                gd,
                                Some(yd),
                                None,
                                need_x,
                                need_w,
                                need_b,
                                &self.opts,
                            ))
                        })
                    } else {
                        Ok(conv::conv_bwd(
                            &g, xd, wd, gd, None, None, need_x, need_w, need_b, &self.opts,
                        ))
                    }
                })
            })
        })?;
        let dev = x.device();
        let gx = grads
            .gx
            .map(|v| Tensor::from_vec(v, x.shape(), dev))
            .transpose()?;
        let gw = grads
            .gw
            .map(|v| Tensor::from_vec(v, w.shape(), dev))
            .transpose()?;
        let gb = grads
            .gb
            .map(|v| Tensor::from_vec(v, g.o, dev))
            .transpose()?;
        Ok((gx, gw, gb))
    }
}

impl CustomOp2 for Conv {
    fn name(&self) -> &'static str {
        "pyramid-conv2d"
    }
    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        self.fwd(s1, l1, s2, l2, None)
    }
    #[cfg(feature = "cudnn")]
    fn cuda_fwd(
        &self,
        s1: &candle_core::CudaStorage,
        l1: &Layout,
        s2: &candle_core::CudaStorage,
        l2: &Layout,
    ) -> Result<(candle_core::CudaStorage, Shape)> {
        let g = self.geom(l1, l2, None)?;
        cudnn::conv_fwd(&g, (s1, l1), (s2, l2), None, self.relu)
    }
    fn bwd(
        &self,
        x: &Tensor,
        w: &Tensor,
        res: &Tensor,
        grad: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>)> {
        let (gx, gw, _) = Conv::bwd(self, x, w, None, res, grad)?;
        Ok((gx, gw))
    }
}

impl CustomOp3 for Conv {
    fn name(&self) -> &'static str {
        "pyramid-conv2d-bias"
    }
    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
        s3: &CpuStorage,
        l3: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        self.fwd(s1, l1, s2, l2, Some((s3, l3)))
    }
    #[cfg(feature = "cudnn")]
    fn cuda_fwd(
        &self,
        s1: &candle_core::CudaStorage,
        l1: &Layout,
        s2: &candle_core::CudaStorage,
        l2: &Layout,
        s3: &candle_core::CudaStorage,
        l3: &Layout,
    ) -> Result<(candle_core::CudaStorage, Shape)> {
        let g = self.geom(l1, l2, Some(l3))?;
        cudnn::conv_fwd(&g, (s1, l1), (s2, l2), Some((s3, l3)), self.relu)
    }
    fn bwd(
        &self,
        x: &Tensor,
        w: &Tensor,
        b: &Tensor,
        res: &Tensor,
        grad: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        Conv::bwd(self, x, w, Some(b), res, grad)
    }
}

struct MaxPool2x2 {
    isa: Isa,
}

impl CustomOp1 for MaxPool2x2 {
    fn name(&self) -> &'static str {
        "pyramid-max-pool-2x2"
    }
    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> Result<(CpuStorage, Shape)> {
        let (b, c, h, w) = l.shape().dims4()?;
        let y = pool::pool_fwd(slice(s, l)?, b * c, h, w, Simd::new(self.isa));
        Ok((CpuStorage::F32(y), Shape::from((b, c, h / 2, w / 2))))
    }
    fn bwd(&self, arg: &Tensor, _res: &Tensor, grad: &Tensor) -> Result<Option<Tensor>> {
        let (b, c, h, w) = arg.dims4()?;
        let gx = with_f32(arg, |xd| {
            with_f32(grad, |gd| {
                Ok(pool::pool_bwd(xd, gd, b * c, h, w, Simd::new(self.isa)))
            })
        })?;
        Ok(Some(Tensor::from_vec(gx, arg.shape(), arg.device())?))
    }
}

/// Training-mode batch norm of an NCHW tensor over (N, H, W): returns the normalised, scaled
/// and shifted output and the batch's per-channel mean and biased variance (detached, for the
/// running statistics). Differentiable w.r.t. `x`, `gamma` and `beta`.
pub fn batch_norm_train(
    x: &Tensor,
    gamma: &Tensor,
    beta: &Tensor,
    eps: f64,
    backend: Backend,
) -> Result<(Tensor, Tensor, Tensor)> {
    let (n, c, h, w) = x.dims4()?;
    let fast = backend == Backend::Fast && x.device().is_cpu() && x.dtype() == DType::F32;
    if !fast {
        let x3 = x.reshape((n, c, h * w))?;
        let count = (n * h * w) as f64;
        let mean = (x3.sum_keepdim(2)?.sum_keepdim(0)? / count)?;
        let centred = x3.broadcast_sub(&mean)?;
        let var = (centred.sqr()?.sum_keepdim(2)?.sum_keepdim(0)? / count)?;
        let y = centred
            .broadcast_div(&(&var + eps)?.sqrt()?)?
            .broadcast_mul(&gamma.reshape((1, c, 1))?)?
            .broadcast_add(&beta.reshape((1, c, 1))?)?
            .reshape((n, c, h, w))?;
        return Ok((y, mean.detach().flatten_all()?, var.detach().flatten_all()?));
    }
    let x = x.contiguous()?;
    let stats = with_f32(&x, |xd| Ok(slices::channel_stats(xd, n, c, h * w)))?;
    let (mean, var) = (stats.mean, stats.var);
    let to_t = |v: Vec<f64>| {
        Tensor::from_vec(
            v.into_iter().map(|x| x as f32).collect::<Vec<f32>>(),
            c,
            x.device(),
        )
    };
    let y = x.apply_op3(&gamma.contiguous()?, &beta.contiguous()?, BatchNorm { eps })?;
    Ok((y, to_t(mean)?, to_t(var)?))
}

struct BatchNorm {
    eps: f64,
}

impl CustomOp3 for BatchNorm {
    fn name(&self) -> &'static str {
        "pyramid-batch-norm-train"
    }
    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
        s3: &CpuStorage,
        l3: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let (n, c, h, w) = l1.shape().dims4()?;
        let x = slice(s1, l1)?;
        let stats = slices::channel_stats(x, n, c, h * w);
        let (a, b) = slices::batch_norm_affine(&stats, slice(s2, l2)?, slice(s3, l3)?, self.eps);
        let y = slices::channel_affine(x, &a, &b, c, h * w, false);
        Ok((CpuStorage::F32(y), l1.shape().clone()))
    }
    fn bwd(
        &self,
        x: &Tensor,
        gamma: &Tensor,
        beta: &Tensor,
        _res: &Tensor,
        grad: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let (n, c, h, w) = x.dims4()?;
        let grad = grad.contiguous()?;
        let (dx, dg, db) = with_f32(x, |xd| {
            with_f32(gamma, |gd| {
                with_f32(&grad, |dyd| {
                    let stats = slices::channel_stats(xd, n, c, h * w);
                    Ok(slices::batch_norm_relu_backward(
                        xd,
                        &stats,
                        gd,
                        None,
                        dyd,
                        self.eps,
                        n,
                        c,
                        h * w,
                    ))
                })
            })
        })?;
        Ok((
            Some(Tensor::from_vec(dx, x.shape(), x.device())?),
            Some(Tensor::from_vec(dg, gamma.shape(), gamma.device())?),
            Some(Tensor::from_vec(db, beta.shape(), beta.device())?),
        ))
    }
}
