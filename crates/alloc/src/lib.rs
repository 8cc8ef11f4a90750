//! A global allocator that keeps large freed buffers and hands them back to the next request
//! of the same size.
//!
//! Why: a training step allocates and frees the same set of activation and gradient buffers
//! every time (tens to hundreds of MB each). glibc serves every block above 32 MiB (and, after
//! trimming, many smaller ones) with a fresh `mmap`, so each step page-faults its whole working
//! set again: about 2 GB, half a million faults and ~10 % of a VGG19 step on two cores. Keeping
//! those blocks turns the faults into reuse. Small blocks go straight to the system allocator.
//!
//! Binaries opt in (libraries never set a global allocator):
//!
//! ```ignore
//! #[global_allocator]
//! static ALLOC: pyramid_alloc::Recycling = pyramid_alloc::Recycling::new();
//! ```
//!
//! The cache is bounded ([`Recycling::set_limit`], default 2 GiB; `PYRAMID_RECYCLE_MIB` through
//! [`Recycling::configure_from_env`]), so at worst a process holds that much more than it uses;
//! a block that does not fit is returned to the system at once.

#![deny(clippy::undocumented_unsafe_blocks)]

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;

/// Blocks at least this large are recycled.
pub const MIN_RECYCLED: usize = 1 << 20;
/// Recycled sizes are rounded up to this granularity, so near sizes share blocks.
const GRANULE: usize = 64 << 10;
const SLOTS: usize = 256;
const DEFAULT_LIMIT: usize = 2 << 30;
/// Environment variable read by [`Recycling::configure_from_env`].
pub const ENV: &str = "PYRAMID_RECYCLE_MIB";

/// One cached block: the layout System allocated it with (see [`block`]) and its address
/// (`0` = empty slot).
#[derive(Clone, Copy)]
struct Slot {
    layout: Layout,
    addr: usize,
}

const EMPTY: Slot = Slot {
    layout: Layout::new::<u8>(),
    addr: 0,
};

struct Cache {
    slots: [Slot; SLOTS],
    bytes: usize,
}

/// The recycling allocator; see the crate docs.
pub struct Recycling {
    cache: Mutex<Cache>,
    limit: AtomicUsize,
    hits: AtomicUsize,
    misses: AtomicUsize,
}

/// Counters, for benchmarks and tests.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stats {
    /// Large requests served from the cache.
    pub hits: usize,
    /// Large requests that went to the system allocator.
    pub misses: usize,
    /// Bytes held in the cache now.
    pub cached_bytes: usize,
}

impl Default for Recycling {
    fn default() -> Self {
        Self::new()
    }
}

impl Recycling {
    pub const fn new() -> Self {
        Self {
            cache: Mutex::new(Cache {
                slots: [EMPTY; SLOTS],
                bytes: 0,
            }),
            limit: AtomicUsize::new(DEFAULT_LIMIT),
            hits: AtomicUsize::new(0),
            misses: AtomicUsize::new(0),
        }
    }

    /// Caps the bytes kept for reuse (0 turns recycling off). Blocks already cached beyond
    /// the new cap are released.
    pub fn set_limit(&self, bytes: usize) {
        self.limit.store(bytes, Ordering::Relaxed);
        let mut freed = [EMPTY; SLOTS];
        if let Ok(mut c) = self.cache.lock() {
            for (i, s) in c.slots.iter_mut().enumerate() {
                if s.addr != 0 {
                    freed[i] = *s;
                    *s = EMPTY;
                }
            }
            c.bytes = 0;
        }
        // Freed outside the lock: the system allocator may take its own locks.
        for s in freed.iter().filter(|s| s.addr != 0) {
            // SAFETY: a slot holds a block that System allocated with `s.layout` and that only
            // the cache owned; it left the cache under the lock, so nothing else frees it or
            // hands it out.
            unsafe { System.dealloc(s.addr as *mut u8, s.layout) };
        }
    }

    /// Applies `PYRAMID_RECYCLE_MIB` (the cache cap in MiB; 0 turns recycling off) if set.
    /// Returns the cap in bytes now in force.
    pub fn configure_from_env(&self) -> usize {
        if let Some(mib) = std::env::var(ENV)
            .ok()
            .and_then(|v| v.trim().parse::<usize>().ok())
        {
            self.set_limit(mib << 20);
        }
        self.limit.load(Ordering::Relaxed)
    }

    pub fn stats(&self) -> Stats {
        Stats {
            hits: self.hits.load(Ordering::Relaxed),
            misses: self.misses.load(Ordering::Relaxed),
            cached_bytes: self.cache.lock().map(|c| c.bytes).unwrap_or(0),
        }
    }

    /// A cached block of exactly this (block) layout.
    fn take(&self, block: Layout) -> Option<*mut u8> {
        let mut c = self.cache.lock().ok()?;
        let i = c
            .slots
            .iter()
            .position(|s| s.addr != 0 && s.layout == block)?;
        let s = std::mem::replace(&mut c.slots[i], EMPTY);
        c.bytes -= s.layout.size();
        Some(s.addr as *mut u8)
    }

    /// Keeps a block for reuse; false when the cache is full.
    fn keep(&self, ptr: *mut u8, block: Layout) -> bool {
        let limit = self.limit.load(Ordering::Relaxed);
        let Ok(mut c) = self.cache.lock() else {
            return false;
        };
        if c.bytes + block.size() > limit {
            return false;
        }
        let Some(i) = c.slots.iter().position(|s| s.addr == 0) else {
            return false;
        };
        c.slots[i] = Slot {
            layout: block,
            addr: ptr as usize,
        };
        c.bytes += block.size();
        true
    }
}

/// The layout of the block that serves a recycled request `l`: its size rounded up to
/// [`GRANULE`], its alignment. `None` where that size is no valid layout (a request within
/// 64 KiB of `isize::MAX`), which no allocator could serve anyway.
fn block(l: &Layout) -> Option<Layout> {
    Layout::from_size_align(l.size().div_ceil(GRANULE) * GRANULE, l.align()).ok()
}

fn recycled(l: &Layout) -> bool {
    l.size() >= MIN_RECYCLED
}

// SAFETY: small requests go to System unchanged. A large request `l` gets a block System
// allocated with `block(l)` (same alignment, size rounded up, so at least as large), either
// fresh or from the cache, and `dealloc(_, l)` frees it with `block(l)` again or caches it: the
// layout is a function of `l`, so System always frees a block with the layout it allocated it
// with. A cached block is owned by the cache alone (taken and put back under the mutex), so no
// block is handed out twice. Nothing here allocates (the std Mutex does not), and a poisoned
// mutex just bypasses the cache.
unsafe impl GlobalAlloc for Recycling {
    unsafe fn alloc(&self, l: Layout) -> *mut u8 {
        if !recycled(&l) {
            return System.alloc(l);
        }
        let Some(b) = block(&l) else {
            return std::ptr::null_mut();
        };
        if let Some(p) = self.take(b) {
            self.hits.fetch_add(1, Ordering::Relaxed);
            return p;
        }
        self.misses.fetch_add(1, Ordering::Relaxed);
        System.alloc(b)
    }

    unsafe fn alloc_zeroed(&self, l: Layout) -> *mut u8 {
        if !recycled(&l) {
            return System.alloc_zeroed(l);
        }
        let Some(b) = block(&l) else {
            return std::ptr::null_mut();
        };
        if let Some(p) = self.take(b) {
            self.hits.fetch_add(1, Ordering::Relaxed);
            // Cheaper than the page faults of a fresh zeroed mapping.
            std::ptr::write_bytes(p, 0, l.size());
            return p;
        }
        self.misses.fetch_add(1, Ordering::Relaxed);
        System.alloc_zeroed(b)
    }

    unsafe fn dealloc(&self, ptr: *mut u8, l: Layout) {
        if !recycled(&l) {
            return System.dealloc(ptr, l);
        }
        // `alloc(l)` succeeded, so `block(l)` is a layout.
        let Some(b) = block(&l) else {
            return;
        };
        if !self.keep(ptr, b) {
            System.dealloc(ptr, b);
        }
    }

    unsafe fn realloc(&self, ptr: *mut u8, l: Layout, new_size: usize) -> *mut u8 {
        if !recycled(&l) && new_size < MIN_RECYCLED {
            return System.realloc(ptr, l, new_size);
        }
        // The caller guarantees a valid layout; on the impossible error, fail the realloc.
        let Ok(new) = Layout::from_size_align(new_size, l.align()) else {
            return std::ptr::null_mut();
        };
        let p = self.alloc(new);
        if !p.is_null() {
            std::ptr::copy_nonoverlapping(ptr, p, l.size().min(new_size));
            self.dealloc(ptr, l);
        }
        p
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn large_blocks_are_reused_and_zeroed() {
        let a = Recycling::new();
        let l = Layout::from_size_align(3 << 20, 64).unwrap();
        // SAFETY: each pointer is used within its layout's size and freed once, with the
        // layout it was allocated (or reallocated) with.
        unsafe {
            let p = a.alloc(l);
            std::ptr::write_bytes(p, 7, l.size());
            a.dealloc(p, l);
            assert_eq!(a.stats().cached_bytes, 3 << 20);
            // A slightly smaller request rounds to the same block.
            let l2 = Layout::from_size_align((3 << 20) - 100, 64).unwrap();
            let q = a.alloc_zeroed(l2);
            assert_eq!(q, p);
            assert!(std::slice::from_raw_parts(q, l2.size())
                .iter()
                .all(|&b| b == 0));
            assert_eq!(
                a.stats(),
                Stats {
                    hits: 1,
                    misses: 1,
                    cached_bytes: 0
                }
            );
            a.dealloc(q, l2);
        }
        a.set_limit(0);
        assert_eq!(a.stats().cached_bytes, 0);
    }

    #[test]
    fn limit_and_small_blocks_bypass_the_cache() {
        let a = Recycling::new();
        a.set_limit(4 << 20);
        let big = Layout::from_size_align(3 << 20, 8).unwrap();
        let small = Layout::from_size_align(4096, 8).unwrap();
        // SAFETY: as in large_blocks_are_reused_and_zeroed.
        unsafe {
            let (p, q) = (a.alloc(big), a.alloc(big));
            a.dealloc(p, big);
            a.dealloc(q, big); // over the 4 MiB limit: released
            assert_eq!(a.stats().cached_bytes, 3 << 20);
            let s = a.alloc(small);
            a.dealloc(s, small);
            assert_eq!(a.stats().cached_bytes, 3 << 20);
            // Another alignment is another block.
            let other = Layout::from_size_align(3 << 20, 4096).unwrap();
            let r = a.alloc(other);
            assert_eq!(a.stats().misses, 3);
            a.dealloc(r, other);
        }
        a.set_limit(0);
    }

    #[test]
    fn realloc_keeps_contents_across_the_threshold() {
        let a = Recycling::new();
        let l = Layout::from_size_align(1000, 8).unwrap();
        // SAFETY: as in large_blocks_are_reused_and_zeroed.
        unsafe {
            let p = a.alloc(l);
            for i in 0..1000 {
                *p.add(i) = i as u8;
            }
            let q = a.realloc(p, l, 2 << 20);
            let l2 = Layout::from_size_align(2 << 20, 8).unwrap();
            assert!((0..1000).all(|i| *q.add(i) == i as u8));
            let r = a.realloc(q, l2, 500);
            assert!((0..500).all(|i| *r.add(i) == i as u8));
            a.dealloc(r, Layout::from_size_align(500, 8).unwrap());
        }
        a.set_limit(0);
    }
}
