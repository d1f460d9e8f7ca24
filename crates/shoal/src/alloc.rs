//! The process allocator: mimalloc (tight size classes, low fragmentation: memory per key is a
//! headline figure), wrapped to count live bytes by their usable size, which is what `INFO memory`
//! reports as `used_memory` and what `maxmemory` is checked against, as Redis does with jemalloc.

use std::alloc::{GlobalAlloc, Layout};
use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};

use mimalloc::MiMalloc;

pub struct Counting;

static USED: AtomicUsize = AtomicUsize::new(0);

fn usable(p: *mut u8) -> usize {
    // SAFETY: `p` was returned by mimalloc and is live.
    unsafe { libmimalloc_sys::mi_usable_size(p as *const _) }
}

// SAFETY: forwards to MiMalloc, which upholds the GlobalAlloc contract; counting has no effect on it.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let p = unsafe { MiMalloc.alloc(layout) };
        if !p.is_null() {
            USED.fetch_add(usable(p), Relaxed);
        }
        p
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        let p = unsafe { MiMalloc.alloc_zeroed(layout) };
        if !p.is_null() {
            USED.fetch_add(usable(p), Relaxed);
        }
        p
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        USED.fetch_sub(usable(ptr), Relaxed);
        unsafe { MiMalloc.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let before = usable(ptr);
        let p = unsafe { MiMalloc.realloc(ptr, layout, new_size) };
        if !p.is_null() {
            USED.fetch_sub(before, Relaxed);
            USED.fetch_add(usable(p), Relaxed);
        }
        p
    }
}

/// Bytes currently allocated (usable sizes).
pub fn used_memory() -> usize {
    USED.load(Relaxed)
}
