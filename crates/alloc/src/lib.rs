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

/// One cached block: its rounded size, alignment and address (`0` = empty slot).
#[derive(Clone, Copy)]
struct Slot {
    size: usize,
    align: usize,
    addr: usize,
}

const EMPTY: Slot = Slot {
    size: 0,
    align: 0,
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
            unsafe { System.dealloc(s.addr as *mut u8, layout(s.size, s.align)) };
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

    /// A cached block of exactly this rounded size and alignment.
    fn take(&self, size: usize, align: usize) -> Option<*mut u8> {
        let mut c = self.cache.lock().ok()?;
        let i = c
            .slots
            .iter()
            .position(|s| s.addr != 0 && s.size == size && s.align == align)?;
        let s = std::mem::replace(&mut c.slots[i], EMPTY);
        c.bytes -= s.size;
        Some(s.addr as *mut u8)
    }

    /// Keeps a block for reuse; false when the cache is full.
    fn keep(&self, ptr: *mut u8, size: usize, align: usize) -> bool {
        let limit = self.limit.load(Ordering::Relaxed);
        let Ok(mut c) = self.cache.lock() else {
            return false;
        };
        if c.bytes + size > limit {
            return false;
        }
        let Some(i) = c.slots.iter().position(|s| s.addr == 0) else {
            return false;
        };
        c.slots[i] = Slot {
            size,
            align,
            addr: ptr as usize,
        };
        c.bytes += size;
        true
    }
}

fn rounded(size: usize) -> usize {
    size.div_ceil(GRANULE) * GRANULE
}

fn layout(size: usize, align: usize) -> Layout {
    // Sizes and alignments come from valid layouts, rounded up within isize::MAX.
    unsafe { Layout::from_size_align_unchecked(size, align) }
}

fn recycled(l: &Layout) -> bool {
    l.size() >= MIN_RECYCLED
}

unsafe impl GlobalAlloc for Recycling {
    unsafe fn alloc(&self, l: Layout) -> *mut u8 {
        if !recycled(&l) {
            return System.alloc(l);
        }
        let size = rounded(l.size());
        if let Some(p) = self.take(size, l.align()) {
            self.hits.fetch_add(1, Ordering::Relaxed);
            return p;
        }
        self.misses.fetch_add(1, Ordering::Relaxed);
        System.alloc(layout(size, l.align()))
    }

    unsafe fn alloc_zeroed(&self, l: Layout) -> *mut u8 {
        if !recycled(&l) {
            return System.alloc_zeroed(l);
        }
        let size = rounded(l.size());
        if let Some(p) = self.take(size, l.align()) {
            self.hits.fetch_add(1, Ordering::Relaxed);
            // Cheaper than the page faults of a fresh zeroed mapping.
            std::ptr::write_bytes(p, 0, l.size());
            return p;
        }
        self.misses.fetch_add(1, Ordering::Relaxed);
        System.alloc_zeroed(layout(size, l.align()))
    }

    unsafe fn dealloc(&self, ptr: *mut u8, l: Layout) {
        if !recycled(&l) {
            return System.dealloc(ptr, l);
        }
        let size = rounded(l.size());
        if !self.keep(ptr, size, l.align()) {
            System.dealloc(ptr, layout(size, l.align()));
        }
    }

    unsafe fn realloc(&self, ptr: *mut u8, l: Layout, new_size: usize) -> *mut u8 {
        if !recycled(&l) && new_size < MIN_RECYCLED {
            return System.realloc(ptr, l, new_size);
        }
        let new = layout(new_size, l.align());
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
