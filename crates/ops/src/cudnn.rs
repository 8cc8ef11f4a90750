//! cuDNN convolution for CUDA tensors (the `cudnn` feature): f32 NCHW forward (+ bias, + fused
//! ReLU), backward-data and backward-filter, through cudarc's cuDNN bindings as re-exported by
//! candle (`candle_core::cuda_backend::cudarc`, so the cudarc version is candle's own).
//!
//! * Each (device, input shape, kernel shape, stride, padding, pass, math mode) picks its
//!   algorithm once with cuDNN's heuristics (`cudnnGetConvolution*Algorithm_v7`, the query cudarc
//!   exposes as `pick_algorithm`); the choice and its workspace size are cached in a global map
//!   (see [`algo_cache_stats`]). The workspace is allocated per call on candle's stream.
//! * The cuDNN handle is per thread and device (cuDNN handles are neither `Send` nor `Sync`) and
//!   runs on the device's candle stream, so it is ordered with candle's own kernels.
//! * Bias: the output is prefilled with the broadcast bias and the convolution accumulates into it
//!   (`beta = 1`). ReLU: candle's CUDA unary kernel on the result.
//! * Backward (see `conv_bwd`): the output gradient is masked by `y > 0` for the fused ReLU, the
//!   bias gradient is a candle sum over (N, H, W), and the input / weight gradients are the
//!   custom op [`Bwd`] (cuDNN backward-data / backward-filter).
//! * Determinism: cuDNN's heuristics may pick algorithms that accumulate with atomics (e.g.
//!   backward-filter `ALGO_0`/`ALGO_3`), so CUDA gradients can differ in the last bits between
//!   runs (PyTorch's default behaves the same), unlike the CPU ops.
//! * Precision: the math type is `CUDNN_FMA_MATH` (full f32, no TF32 tensor cores) unless
//!   [`set_allow_tf32`]`(true)` or `PYRAMID_CUDNN_TF32=1`; PyTorch's default would be TF32.

use std::cell::RefCell;
use std::collections::HashMap;
use std::sync::atomic::{AtomicU8, AtomicUsize, Ordering};
use std::sync::{Arc, LazyLock, Mutex};

use candle_core::backend::BackendStorage;
use candle_core::cuda_backend::cudarc;
use candle_core::cuda_backend::{CudaDevice, CudaStorage, DeviceId};
use candle_core::{bail, CpuStorage, CustomOp2, DType, Layout, Result, Shape, Tensor};
use cudarc::cudnn::{
    sys, ConvBackwardData, ConvBackwardFilter, ConvDescriptor, ConvForward, Cudnn,
    FilterDescriptor, TensorDescriptor,
};
use cudarc::driver::{CudaSlice, CudaView};

use crate::geom::Geom;

// ------------------------------------------------------------------------------- settings

/// 0: not decided yet (read `PYRAMID_CUDNN_TF32` on first use), 1: FMA only, 2: TF32 allowed.
static TF32: AtomicU8 = AtomicU8::new(0);

/// Allows cuDNN's TF32 tensor-core kernels for the f32 convolutions (faster on Ampere and newer,
/// about 1e-3 relative error). Default: off, unless the environment sets `PYRAMID_CUDNN_TF32=1`.
pub fn set_allow_tf32(allow: bool) {
    TF32.store(if allow { 2 } else { 1 }, Ordering::Relaxed);
}

fn allow_tf32() -> bool {
    match TF32.load(Ordering::Relaxed) {
        0 => {
            let on = std::env::var("PYRAMID_CUDNN_TF32").is_ok_and(|v| v == "1");
            // Keep an explicit `set_allow_tf32` that raced with us.
            let _ = TF32.compare_exchange(
                0,
                if on { 2 } else { 1 },
                Ordering::Relaxed,
                Ordering::Relaxed,
            );
            TF32.load(Ordering::Relaxed) == 2
        }
        v => v == 2,
    }
}

// -------------------------------------------------------------------------- handle, cache

thread_local! {
    static HANDLES: RefCell<HashMap<DeviceId, Arc<Cudnn>>> = RefCell::new(HashMap::new());
}

/// This thread's cuDNN handle for `dev`, on the device's candle stream.
fn handle(dev: &CudaDevice) -> Result<Arc<Cudnn>> {
    HANDLES.with(|h| {
        if let Some(c) = h.borrow().get(&dev.id()) {
            return Ok(c.clone());
        }
        let c = Cudnn::new(dev.cuda_stream())?;
        h.borrow_mut().insert(dev.id(), c.clone());
        Ok(c)
    })
}

/// Which cuDNN call an algorithm is for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
enum Pass {
    Forward,
    BackwardData,
    BackwardFilter,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
struct Key {
    dev: DeviceId,
    x: [usize; 4],
    w: [usize; 4],
    stride: usize,
    pad: usize,
    pass: Pass,
    tf32: bool,
}

impl Key {
    fn new(dev: &CudaDevice, g: &Geom, pass: Pass, tf32: bool) -> Self {
        Self {
            dev: dev.id(),
            x: [g.b, g.c, g.h, g.w],
            w: [g.o, g.c, g.k, g.k],
            stride: g.s,
            pad: g.p,
            pass,
            tf32,
        }
    }
}

#[derive(Clone, Copy, Debug)]
enum Algo {
    Fwd(sys::cudnnConvolutionFwdAlgo_t),
    Data(sys::cudnnConvolutionBwdDataAlgo_t),
    Filter(sys::cudnnConvolutionBwdFilterAlgo_t),
}

/// An algorithm and its workspace size in bytes.
type Entry = (Algo, usize);

static CACHE: LazyLock<Mutex<HashMap<Key, Entry>>> = LazyLock::new(Default::default);
static HITS: AtomicUsize = AtomicUsize::new(0);
static MISSES: AtomicUsize = AtomicUsize::new(0);

/// Counters of the per-shape algorithm cache.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AlgoCacheStats {
    /// Cached (shape, pass) entries.
    pub entries: usize,
    /// Calls that found their algorithm in the cache.
    pub hits: usize,
    /// Calls that asked cuDNN for an algorithm.
    pub misses: usize,
}

/// The algorithm cache's current counters (process-wide).
pub fn algo_cache_stats() -> AlgoCacheStats {
    AlgoCacheStats {
        entries: CACHE.lock().unwrap_or_else(|e| e.into_inner()).len(),
        hits: HITS.load(Ordering::Relaxed),
        misses: MISSES.load(Ordering::Relaxed),
    }
}

/// The cached algorithm for `key`, or `pick()`'s (then cached).
fn cached(key: Key, pick: impl FnOnce() -> Result<Entry>) -> Result<Entry> {
    if let Some(e) = CACHE.lock().unwrap_or_else(|e| e.into_inner()).get(&key) {
        HITS.fetch_add(1, Ordering::Relaxed);
        return Ok(*e);
    }
    let e = pick()?;
    MISSES.fetch_add(1, Ordering::Relaxed);
    CACHE
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .insert(key, e);
    Ok(e)
}

// ---------------------------------------------------------------------------- descriptors

struct Descs {
    conv: ConvDescriptor<f32>,
    x: TensorDescriptor<f32>,
    w: FilterDescriptor<f32>,
    y: TensorDescriptor<f32>,
}

fn i32_of(v: usize) -> Result<i32> {
    match i32::try_from(v) {
        Ok(v) => Ok(v),
        Err(_) => bail!("pyramid-ops cudnn: dimension {v} too large"),
    }
}

fn descs(cudnn: &Arc<Cudnn>, g: &Geom, tf32: bool) -> Result<Descs> {
    use sys::cudnnTensorFormat_t::CUDNN_TENSOR_NCHW as NCHW;
    let (p, s) = (i32_of(g.p)?, i32_of(g.s)?);
    let mut conv = cudnn.create_conv2d::<f32>(
        [p, p],
        [s, s],
        [1, 1],
        sys::cudnnConvolutionMode_t::CUDNN_CROSS_CORRELATION,
    )?;
    conv.set_math_type(if tf32 {
        sys::cudnnMathType_t::CUDNN_DEFAULT_MATH
    } else {
        sys::cudnnMathType_t::CUDNN_FMA_MATH
    })?;
    let d4 =
        |a, b, c, d| -> Result<[i32; 4]> { Ok([i32_of(a)?, i32_of(b)?, i32_of(c)?, i32_of(d)?]) };
    Ok(Descs {
        x: cudnn.create_4d_tensor::<f32>(NCHW, d4(g.b, g.c, g.h, g.w)?)?,
        w: cudnn.create_4d_filter::<f32>(NCHW, d4(g.o, g.c, g.k, g.k)?)?,
        y: cudnn.create_4d_tensor::<f32>(NCHW, d4(g.b, g.o, g.ho, g.wo)?)?,
        conv,
    })
}

/// The contiguous f32 data of a CUDA storage, `len` elements from the layout's offset.
fn view<'a>(s: &'a CudaStorage, l: &Layout, len: usize) -> Result<CudaView<'a, f32>> {
    match l.contiguous_offsets() {
        Some((a, b)) if b - a == len => Ok(s.as_cuda_slice::<f32>()?.slice(a..b)),
        _ => bail!("pyramid-ops cudnn: expected a contiguous tensor of {len} elements"),
    }
}

fn workspace(dev: &CudaDevice, bytes: usize) -> Result<Option<CudaSlice<u8>>> {
    if bytes == 0 {
        return Ok(None);
    }
    // SAFETY: cuDNN only uses the workspace as scratch; it needs no initialisation.
    Ok(Some(unsafe { dev.alloc::<u8>(bytes)? }))
}

fn empty(g: &Geom) -> bool {
    g.b * g.c * g.o * g.ho * g.wo == 0
}

// -------------------------------------------------------------------------------- passes

/// `relu?(conv(x, w) + bias)`, `x` `[B, C, H, W]`, `w` `[O, C, K, K]`, all contiguous f32.
pub(crate) fn conv_fwd(
    g: &Geom,
    (xs, xl): (&CudaStorage, &Layout),
    (ws, wl): (&CudaStorage, &Layout),
    bias: Option<(&CudaStorage, &Layout)>,
    relu: bool,
) -> Result<(CudaStorage, Shape)> {
    let dev = &xs.device;
    let shape = Shape::from((g.b, g.o, g.ho, g.wo));
    let n = shape.elem_count();
    // SAFETY: every element is written below (bias prefill and/or the convolution with beta = 0).
    let y = unsafe { dev.alloc::<f32>(n)? };
    let mut ys = CudaStorage::wrap_cuda_slice(y, dev.clone());
    let beta = match bias {
        Some((bs, bl)) => {
            // y = bias broadcast over (N, H, W); the convolution then accumulates into it.
            let bcast = Layout::new(
                shape.clone(),
                vec![0, bl.stride()[0], 0, 0],
                bl.start_offset(),
            );
            bs.copy_strided_src(&mut ys, 0, &bcast)?;
            1.0
        }
        None => 0.0,
    };
    if empty(g) {
        if n > 0 && bias.is_none() {
            ys = CudaStorage::wrap_cuda_slice(dev.alloc_zeros::<f32>(n)?, dev.clone());
        }
    } else {
        let x = view(xs, xl, g.b * g.c * g.h * g.w)?;
        let w = view(ws, wl, g.o * g.c * g.k * g.k)?;
        let tf32 = allow_tf32();
        let cudnn = handle(dev)?;
        let d = descs(&cudnn, g, tf32)?;
        let op = ConvForward {
            conv: &d.conv,
            x: &d.x,
            w: &d.w,
            y: &d.y,
        };
        let (algo, bytes) = cached(Key::new(dev, g, Pass::Forward, tf32), || {
            let a = op.pick_algorithm()?;
            Ok((Algo::Fwd(a), op.get_workspace_size(a)?))
        })?;
        let Algo::Fwd(algo) = algo else {
            bail!("pyramid-ops cudnn: cache holds a non-forward algorithm for a forward key")
        };
        let mut ws = workspace(dev, bytes)?;
        let y = ys.as_cuda_slice_mut::<f32>()?;
        // SAFETY: the descriptors describe these contiguous f32 NCHW buffers.
        unsafe {
            op.launch::<CudaSlice<u8>, _, _, _>(algo, ws.as_mut(), (1.0, beta), &x, &w, y)?;
        }
    }
    if relu {
        ys = ys.unary_impl::<candle_core::op::Relu>(&Layout::contiguous(shape.clone()))?;
    }
    Ok((ys, shape))
}

/// Which gradient a [`Bwd`] op computes.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Grad {
    /// The input gradient: arguments `(dy, w)`, output `dx` `[B, C, H, W]`.
    Data,
    /// The weight gradient: arguments `(x, dy)`, output `dw` `[O, C, K, K]`.
    Filter,
}

/// A cuDNN backward pass of the convolution `.0` as a custom op (CUDA only).
#[derive(Clone, Copy, Debug)]
pub(crate) struct Bwd(pub Geom, pub Grad);

impl CustomOp2 for Bwd {
    fn name(&self) -> &'static str {
        match self.1 {
            Grad::Data => "pyramid-conv2d-bwd-data-cudnn",
            Grad::Filter => "pyramid-conv2d-bwd-filter-cudnn",
        }
    }
    fn cpu_fwd(
        &self,
        _: &CpuStorage,
        _: &Layout,
        _: &CpuStorage,
        _: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        bail!("{}: CUDA only", self.name())
    }
    fn cuda_fwd(
        &self,
        s1: &CudaStorage,
        l1: &Layout,
        s2: &CudaStorage,
        l2: &Layout,
    ) -> Result<(CudaStorage, Shape)> {
        let Bwd(g, grad) = self;
        let dev = &s1.device;
        let shape = match grad {
            Grad::Data => Shape::from((g.b, g.c, g.h, g.w)),
            Grad::Filter => Shape::from((g.o, g.c, g.k, g.k)),
        };
        let n = shape.elem_count();
        if empty(g) {
            return Ok((
                CudaStorage::wrap_cuda_slice(dev.alloc_zeros::<f32>(n)?, dev.clone()),
                shape,
            ));
        }
        let (x_len, w_len, dy_len) = (
            g.b * g.c * g.h * g.w,
            g.o * g.c * g.k * g.k,
            g.b * g.o * g.ho * g.wo,
        );
        let tf32 = allow_tf32();
        let cudnn = handle(dev)?;
        let d = descs(&cudnn, g, tf32)?;
        // SAFETY: beta = 0 writes every element.
        let mut out = unsafe { dev.alloc::<f32>(n)? };
        match grad {
            Grad::Data => {
                let (dy, w) = (view(s1, l1, dy_len)?, view(s2, l2, w_len)?);
                let op = ConvBackwardData {
                    conv: &d.conv,
                    dx: &d.x,
                    w: &d.w,
                    dy: &d.y,
                };
                let key = Key::new(dev, g, Pass::BackwardData, tf32);
                let (algo, bytes) = cached(key, || {
                    let a = op.pick_algorithm()?;
                    Ok((Algo::Data(a), op.get_workspace_size(a)?))
                })?;
                let Algo::Data(algo) = algo else {
                    bail!("pyramid-ops cudnn: cache holds a non-backward-data algorithm")
                };
                let mut wsp = workspace(dev, bytes)?;
                // SAFETY: the descriptors describe these contiguous f32 NCHW buffers.
                unsafe {
                    op.launch::<CudaSlice<u8>, _, _, _>(
                        algo,
                        wsp.as_mut(),
                        (1.0, 0.0),
                        &mut out,
                        &w,
                        &dy,
                    )?;
                }
            }
            Grad::Filter => {
                let (x, dy) = (view(s1, l1, x_len)?, view(s2, l2, dy_len)?);
                let op = ConvBackwardFilter {
                    conv: &d.conv,
                    x: &d.x,
                    dw: &d.w,
                    dy: &d.y,
                };
                let key = Key::new(dev, g, Pass::BackwardFilter, tf32);
                let (algo, bytes) = cached(key, || {
                    let a = op.pick_algorithm()?;
                    Ok((Algo::Filter(a), op.get_workspace_size(a)?))
                })?;
                let Algo::Filter(algo) = algo else {
                    bail!("pyramid-ops cudnn: cache holds a non-backward-filter algorithm")
                };
                let mut wsp = workspace(dev, bytes)?;
                // SAFETY: the descriptors describe these contiguous f32 NCHW buffers.
                unsafe {
                    op.launch::<CudaSlice<u8>, _, _, _>(
                        algo,
                        wsp.as_mut(),
                        (1.0, 0.0),
                        &x,
                        &mut out,
                        &dy,
                    )?;
                }
            }
        }
        Ok((CudaStorage::wrap_cuda_slice(out, dev.clone()), shape))
    }
}

/// Gradients of the conv custom op on CUDA: `(dx, dw, db)` for the requested ones. `res` is the
/// op's output (`relu(conv)` when `relu`), `grad` the gradient with respect to it.
#[allow(clippy::too_many_arguments)]
pub(crate) fn conv_bwd(
    g: &Geom,
    relu: bool,
    x: &Tensor,
    w: &Tensor,
    res: &Tensor,
    grad: &Tensor,
    need_x: bool,
    need_w: bool,
    need_b: bool,
) -> Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
    if !(need_x || need_w || need_b) {
        return Ok((None, None, None));
    }
    let mut dy = grad.detach();
    if relu {
        dy = dy.mul(&res.detach().gt(0f32)?.to_dtype(DType::F32)?)?;
    }
    let dy = dy.contiguous()?;
    let gb = need_b.then(|| dy.sum((0, 2, 3))).transpose()?;
    let gx = need_x
        .then(|| dy.apply_op2_no_bwd(&w.detach().contiguous()?, &Bwd(*g, Grad::Data)))
        .transpose()?;
    let gw = need_w
        .then(|| {
            x.detach()
                .contiguous()?
                .apply_op2_no_bwd(&dy, &Bwd(*g, Grad::Filter))
        })
        .transpose()?;
    Ok((gx, gw, gb))
}
