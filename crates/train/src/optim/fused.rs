//! The in-place CPU path of two-buffer update rules (see `UpdateRule::fused`): the parameter
//! and its two buffers are updated where they live, in parallel chunks, with no temporaries.

use std::cell::RefCell;

use candle_core::{CpuStorage, DType, Device, InplaceOp1, InplaceOp2, Layout, Tensor};
use rayon::prelude::*;

use super::FusedKernel;

/// Elements per parallel chunk (the kernel is element-wise, so chunking never changes
/// results).
const CHUNK: usize = 1 << 16;

/// Whether the fused path can take this parameter: f32, on the CPU, contiguous.
pub(super) fn applies(theta: &Tensor, grad: &Tensor) -> bool {
    matches!(theta.device(), Device::Cpu)
        && theta.dtype() == DType::F32
        && grad.dtype() == DType::F32
        && theta.shape() == grad.shape()
        && theta.is_contiguous()
        && grad.is_contiguous()
}

/// Runs `kernel` over θ (updated in place), the gradient, and both buffers (created as zeros
/// on first use, then updated in place).
pub(super) fn step(
    kernel: &FusedKernel,
    theta: &Tensor,
    grad: &Tensor,
    buffers: &mut [Option<Tensor>],
) -> candle_core::Result<()> {
    let [b0, b1] = buffers else {
        candle_core::bail!(
            "fused update needs two buffers, the rule has {}",
            buffers.len()
        );
    };
    for b in [&mut *b0, &mut *b1] {
        if b.is_none() {
            *b = Some(theta.zeros_like()?);
        }
    }
    let (Some(m), Some(v)) = (b0.as_ref(), b1.as_ref()) else {
        unreachable!("both buffers were just set")
    };
    // Nested in-place ops: each lends its storage as a mutable slice to the next; the
    // innermost runs the kernel with all four slices.
    let mut on_m = |m_s: &mut [f32]| {
        let mut on_v = |v_s: &mut [f32]| {
            let mut on_theta = |t_s: &mut [f32], g_s: &[f32]| {
                t_s.par_chunks_mut(CHUNK)
                    .zip(g_s.par_chunks(CHUNK))
                    .zip(m_s.par_chunks_mut(CHUNK))
                    .zip(v_s.par_chunks_mut(CHUNK))
                    .for_each(|(((t, g), m), v)| kernel(t, g, m, v));
            };
            theta.inplace_op2(grad, &Lend2(RefCell::new(&mut on_theta)))
        };
        v.inplace_op1(&Lend1(RefCell::new(&mut on_v)))
    };
    m.inplace_op1(&Lend1(RefCell::new(&mut on_m)))
}

fn slice_mut<'a>(s: &'a mut CpuStorage, l: &Layout) -> candle_core::Result<&'a mut [f32]> {
    let CpuStorage::F32(data) = s else {
        candle_core::bail!("fused update: expected f32 storage");
    };
    match l.contiguous_offsets() {
        Some((a, b)) => Ok(&mut data[a..b]),
        None => candle_core::bail!("fused update: non-contiguous tensor"),
    }
}

fn slice<'a>(s: &'a CpuStorage, l: &Layout) -> candle_core::Result<&'a [f32]> {
    let CpuStorage::F32(data) = s else {
        candle_core::bail!("fused update: expected f32 storage");
    };
    match l.contiguous_offsets() {
        Some((a, b)) => Ok(&data[a..b]),
        None => candle_core::bail!("fused update: non-contiguous tensor"),
    }
}

type Lent1<'a> = dyn FnMut(&mut [f32]) -> candle_core::Result<()> + 'a;
type Lent2<'a> = dyn FnMut(&mut [f32], &[f32]) + 'a;

/// Lends a tensor's storage, as a mutable f32 slice, to a closure.
struct Lend1<'a, 'b>(RefCell<&'b mut Lent1<'a>>);

impl InplaceOp1 for Lend1<'_, '_> {
    fn name(&self) -> &'static str {
        "fused-update-lend"
    }
    fn cpu_fwd(&self, s: &mut CpuStorage, l: &Layout) -> candle_core::Result<()> {
        (self.0.borrow_mut())(slice_mut(s, l)?)
    }
}

/// Lends a tensor's storage mutably and a second one read-only.
struct Lend2<'a, 'b>(RefCell<&'b mut Lent2<'a>>);

impl InplaceOp2 for Lend2<'_, '_> {
    fn name(&self) -> &'static str {
        "fused-update"
    }
    fn cpu_fwd(
        &self,
        s1: &mut CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> candle_core::Result<()> {
        let (a, b) = (slice_mut(s1, l1)?, slice(s2, l2)?);
        if a.len() != b.len() {
            candle_core::bail!(
                "fused update: {} parameters, {} gradients",
                a.len(),
                b.len()
            );
        }
        (self.0.borrow_mut())(a, b);
        Ok(())
    }
}
