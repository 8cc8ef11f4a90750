//! What the im2col and Winograd paths share to run in parallel: the work-unit scheduler and its
//! order-fixed partial sums ([`run_units`], [`sum_accumulators`]), the gemm call, shared output
//! pointers, per-thread scratch and buffers kept between calls.
//!
//! Results are bit-identical whatever the thread count: the units depend on the geometry only
//! (a gemm's rounding depends on its shape), sums over units go through a fixed number of
//! per-group partial accumulators added in group order, and gemm's own parallelism splits the
//! destination, never the reduction (checked by `tests/threads.rs`).

use gemm::Parallelism;
use std::cell::RefCell;
use std::sync::Mutex;
use std::thread::LocalKey;

/// Partial sums of a weight gradient: groups of units, each with its own weight-sized
/// accumulator, added in group order at the end. Their number is fixed by the geometry, not
/// the thread count, so that the sum does not depend on it: up to `ACC_GROUPS` (enough to
/// balance 2, 4 and 8 threads) within `ACC_BYTES` of accumulators, but at least 2.
pub(crate) const ACC_GROUPS: usize = 8;
/// Memory budget of the partial weight-gradient accumulators of one op: beyond it, each one
/// costs more in page faults and additions than the parallelism it buys (with fewer groups
/// than threads, gemm itself runs on several threads).
const ACC_BYTES: usize = 16 << 20;

/// Partial-sum groups for weight-gradient accumulators of `floats` floats (see [`ACC_GROUPS`]).
pub(crate) fn acc_groups(floats: usize) -> usize {
    (ACC_BYTES / (4 * floats).max(1)).clamp(2, ACC_GROUPS)
}

/// Raw pointer wrapper to share disjoint output regions between threads.
#[derive(Clone, Copy)]
pub(crate) struct SendPtr(pub(crate) *mut f32);
// SAFETY: a SendPtr is an address; moving or sharing it dereferences nothing. Each access
// through it is an unsafe block of its own, which states why the region it touches is that
// thread's alone.
unsafe impl Send for SendPtr {}
// SAFETY: as for Send.
unsafe impl Sync for SendPtr {}
impl SendPtr {
    // A method (not field access) so closures capture the whole `Send + Sync` wrapper.
    #[inline]
    pub(crate) fn get(self) -> *mut f32 {
        self.0
    }
}

/// Runs `f` with this thread's scratch buffers in `key`, moved out of the thread-local for the
/// call: a multi-threaded gemm inside `f` may run another unit on this thread while it waits,
/// which then gets fresh buffers instead of a second borrow.
pub(crate) fn with_scratch<S: Default, R>(
    key: &'static LocalKey<RefCell<S>>,
    f: impl FnOnce(&mut S) -> R,
) -> R {
    let mut sc = key.take();
    let r = f(&mut sc);
    key.set(sc);
    r
}

/// A buffer kept between calls, for a large temporary that would otherwise be allocated and
/// page-faulted in again on every call.
pub(crate) struct KeptBuf(Mutex<Vec<f32>>);

impl KeptBuf {
    pub(crate) const fn new() -> Self {
        Self(Mutex::new(Vec::new()))
    }

    /// Runs `f` with the kept buffer, or with a fresh one while another call holds it.
    pub(crate) fn with<R>(&self, f: impl FnOnce(&mut Vec<f32>) -> R) -> R {
        match self.0.try_lock() {
            Ok(mut buf) => f(&mut buf),
            Err(_) => f(&mut Vec::new()),
        }
    }
}

/// `dst[m×n] = lhs[m×k] · rhs[k×n]`, or `dst += lhs · rhs` with `accumulate`, in f32. `dst` has
/// unit column stride and row stride `dst_rs`; `lhs` and `rhs` are given as
/// `(column stride, row stride)`.
///
/// # Safety
/// The three matrices lie inside live allocations with these strides, and `dst` overlaps
/// neither input.
#[allow(clippy::too_many_arguments)]
pub(crate) unsafe fn gemm_f32(
    m: usize,
    n: usize,
    k: usize,
    dst: *mut f32,
    dst_rs: usize,
    accumulate: bool,
    lhs: *const f32,
    (lhs_cs, lhs_rs): (usize, usize),
    rhs: *const f32,
    (rhs_cs, rhs_rs): (usize, usize),
    par: Parallelism,
) {
    // alpha (the factor on dst) only counts when `read_dst`; beta scales lhs·rhs.
    gemm::gemm(
        m,
        n,
        k,
        dst,
        1,
        dst_rs as isize,
        accumulate,
        lhs,
        lhs_cs as isize,
        lhs_rs as isize,
        rhs,
        rhs_cs as isize,
        rhs_rs as isize,
        1.0,
        1.0,
        false,
        false,
        false,
        par,
    )
}

/// A vector of `n` floats for a caller that writes every element before reading any: skips
/// the zeroing, a memset of up to hundreds of MB per training step.
#[allow(clippy::uninit_vec)]
pub(crate) fn alloc_overwritten(n: usize) -> Vec<f32> {
    let mut v = Vec::with_capacity(n);
    // SAFETY: f32 has no invalid bit patterns, and every caller overwrites all `n` elements
    // (gemm with `read_dst = false`, or plain stores) before anything reads them.
    unsafe { v.set_len(n) };
    v
}

/// The first `n` floats of `v`, grown (with zeros) to hold them.
#[inline]
pub(crate) fn grow(v: &mut Vec<f32>, n: usize) -> &mut [f32] {
    if v.len() < n {
        v.resize(n, 0.0);
    }
    &mut v[..n]
}

/// Runs `f(acc, unit, parallelism_for_gemm)` on units `0..nunits`, split into
/// `min(ngroups, nunits)` groups of consecutive units: each group starts from `init()` and
/// folds its units in order into its accumulator. Returns the accumulators in group order.
///
/// The groups depend on the arguments only, never on the thread count, so whatever runs where,
/// each accumulator holds the same sum and the caller adds them in a fixed order. Groups are
/// taken by threads dynamically; with fewer groups than threads, gemm is multi-threaded too
/// (it splits the destination, not the reduction, so the bits do not change).
pub(crate) fn run_units<A: Send, I: Fn() -> A + Sync, F: Fn(&mut A, usize, Parallelism) + Sync>(
    nunits: usize,
    ngroups: usize,
    init: I,
    f: F,
) -> Vec<A> {
    use rayon::prelude::*;
    if nunits == 0 {
        return Vec::new();
    }
    let ng = ngroups.clamp(1, nunits);
    let nt = rayon::current_num_threads().max(1);
    let par = if nt > ng {
        Parallelism::Rayon(nt.div_ceil(ng))
    } else {
        Parallelism::None
    };
    let group = |gi: usize| {
        let mut acc = init();
        for u in gi * nunits / ng..(gi + 1) * nunits / ng {
            f(&mut acc, u, par);
        }
        acc
    };
    if ng == 1 || nt == 1 {
        (0..ng).map(group).collect()
    } else {
        (0..ng).into_par_iter().with_max_len(1).map(group).collect()
    }
}

/// Sums accumulators in the given (group) order: element `i` is `((a0[i] + a1[i]) + a2[i]) …`
/// whatever the thread count. `None` marks a group that wrote nothing; with no accumulator at
/// all the sum is `n` zeros.
pub(crate) fn sum_accumulators(
    parts: impl IntoIterator<Item = Option<Vec<f32>>>,
    n: usize,
) -> Vec<f32> {
    use rayon::prelude::*;
    const CH: usize = 1 << 14;
    let mut it = parts.into_iter().flatten();
    let Some(mut sum) = it.next() else {
        return vec![0.0; n];
    };
    let rest: Vec<Vec<f32>> = it.collect();
    // One pass, a cache-sized chunk of the sum at a time through every part.
    sum.par_chunks_mut(CH).enumerate().for_each(|(ci, d)| {
        for a in &rest {
            let s = &a[ci * CH..ci * CH + d.len()];
            d.iter_mut().zip(s).for_each(|(d, s)| *d += *s);
        }
    });
    sum
}
