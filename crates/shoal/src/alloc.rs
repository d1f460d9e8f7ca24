//! The process allocator: mimalloc (tight size classes, low fragmentation: memory per key is a
//! headline figure), counting live bytes by their usable size, which is what `INFO memory` reports
//! as `used_memory` and what `maxmemory` is checked against, as Redis does with jemalloc.
//!
//! Requests whose alignment mimalloc guarantees anyway (8, or 16 for blocks of 16 bytes or more)
//! go to the plain `mi_malloc` family. The `mimalloc` crate sends every request through
//! `mi_malloc_aligned`, whose fallback over-allocates by the alignment whenever a page's free list
//! is empty: a 96-byte key entry then lands in the 112-byte class, 16% more memory per key.
//!
//! **Counted per thread, summed in bounded steps.** Every allocation and free of every thread
//! changed one shared counter with a locked instruction: into a full cache, where each write
//! allocates an entry and frees a victim's, its cache line moved between the two workers several
//! times per write (its load in `used_memory` alone was 1.6% of a two-worker profile). A thread
//! now adds to a count of its own and moves it to the shared one when it reaches
//! [`THREAD_SLACK_BYTES`] either way, and when the thread ends. `used_memory` is therefore exact
//! to within that many bytes per thread (a few hundred kilobytes in all), which is finer than
//! what `maxmemory` and `INFO` need; the shared count is never read as below zero.

use std::alloc::{GlobalAlloc, Layout};
use std::cell::Cell;
use std::ffi::c_void;
use std::sync::atomic::{AtomicIsize, Ordering::Relaxed};

use libmimalloc_sys as mi;

pub struct Counting;

/// Net bytes a thread allocates (or frees) before they are added to the shared count.
pub const THREAD_SLACK_BYTES: isize = 16 * 1024;

/// Live bytes, but for what threads have not moved here yet (each less than
/// [`THREAD_SLACK_BYTES`]); may dip below zero for a moment when one thread frees what another
/// allocated and has not counted yet.
static USED: AtomicIsize = AtomicIsize::new(0);

/// A thread's count not yet in [`USED`]; moved there when the thread ends.
struct Pending(Cell<isize>);

impl Drop for Pending {
    fn drop(&mut self) {
        USED.fetch_add(self.0.replace(0), Relaxed);
    }
}

thread_local! {
    // Const-initialised: its first use in a thread registers the destructor with the C
    // library (`__cxa_thread_atexit_impl`, which allocates with libc's own malloc, not this
    // allocator), so using it from inside the allocator does not recurse.
    static PENDING: Pending = const { Pending(Cell::new(0)) };
}

/// Adds `n` bytes (negative: freed) to the calling thread's count.
#[inline]
fn count(n: isize) {
    let counted = PENDING.try_with(|p| {
        let d = p.0.get() + n;
        if d.unsigned_abs() >= THREAD_SLACK_BYTES as usize {
            p.0.set(0);
            USED.fetch_add(d, Relaxed);
        } else {
            p.0.set(d);
        }
    });
    if counted.is_err() {
        // The thread's count is gone (its destructors are running): count here directly.
        USED.fetch_add(n, Relaxed);
    }
}

fn usable(p: *mut u8) -> usize {
    // SAFETY: `p` was returned by mimalloc and is live.
    unsafe { mi::mi_usable_size(p as *const c_void) }
}

/// Whether mimalloc's plain allocation already satisfies the alignment.
fn natural(layout: &Layout) -> bool {
    natural_for(layout.align(), layout.size())
}

fn natural_for(align: usize, size: usize) -> bool {
    align <= 8 || (align <= 16 && size >= 16)
}

fn count_in(p: *mut u8) -> *mut u8 {
    if !p.is_null() {
        count(usable(p) as isize);
    }
    p
}

// SAFETY: every path forwards to mimalloc with a size and alignment it honours; counting does not
// touch the memory.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let p = unsafe {
            if natural(&layout) {
                mi::mi_malloc(layout.size())
            } else {
                mi::mi_malloc_aligned(layout.size(), layout.align())
            }
        };
        count_in(p as *mut u8)
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        let p = unsafe {
            if natural(&layout) {
                mi::mi_zalloc(layout.size())
            } else {
                mi::mi_zalloc_aligned(layout.size(), layout.align())
            }
        };
        count_in(p as *mut u8)
    }

    unsafe fn dealloc(&self, ptr: *mut u8, _layout: Layout) {
        count(-(usable(ptr) as isize));
        unsafe { mi::mi_free(ptr as *mut c_void) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let before = usable(ptr);
        let p = unsafe {
            if natural_for(layout.align(), new_size) {
                mi::mi_realloc(ptr as *mut c_void, new_size)
            } else {
                mi::mi_realloc_aligned(ptr as *mut c_void, new_size, layout.align())
            }
        } as *mut u8;
        if !p.is_null() {
            count(usable(p) as isize - before as isize);
        }
        p
    }
}

/// Bytes currently allocated (usable sizes).
pub fn used_memory() -> usize {
    USED.load(Relaxed).max(0) as usize
}

/// mimalloc's version and the memory it committed (`INFO memory`'s allocator figures).
pub fn info() -> shoal_commands::server::AllocatorInfo {
    let mut commit = 0usize;
    // SAFETY: null out-parameters are allowed; `commit` is a valid place for one.
    unsafe {
        mi::mi_process_info(
            std::ptr::null_mut(),
            std::ptr::null_mut(),
            std::ptr::null_mut(),
            std::ptr::null_mut(),
            std::ptr::null_mut(),
            &mut commit,
            std::ptr::null_mut(),
            std::ptr::null_mut(),
        )
    };
    // SAFETY: no preconditions.
    let v = unsafe { mi::mi_version() };
    shoal_commands::server::AllocatorInfo {
        // Major, then two digits each of minor and patch (30302 is 3.3.2).
        name: format!("mimalloc-{}.{}.{}", v / 10000, v / 100 % 100, v % 100),
        committed_bytes: commit as u64,
    }
}

/// Largest `MEMORY MALLOC-STATS` text kept.
const STATS_TEXT_BYTES_MAX: usize = 64 * 1024;

/// mimalloc's statistics report (`MEMORY MALLOC-STATS`).
pub fn stats_text() -> String {
    unsafe extern "C" fn append(msg: *const std::ffi::c_char, arg: *mut c_void) {
        // SAFETY: `arg` is the `String` passed below, alive for the call; `msg` is a C string.
        let (out, msg) = unsafe { (&mut *(arg as *mut String), std::ffi::CStr::from_ptr(msg)) };
        if out.len() < STATS_TEXT_BYTES_MAX {
            out.push_str(&msg.to_string_lossy());
        }
    }
    let mut out = String::new();
    // SAFETY: the callback only appends to `out`, which outlives the call.
    unsafe { mi::mi_stats_print_out(Some(append), &mut out as *mut String as *mut c_void) };
    out
}

/// mimalloc 3's `mi_option_purge_delay` (`include/mimalloc.h`; the sys crate, pinned, does not
/// name it). A test below checks that this number is that option.
const MI_OPTION_PURGE_DELAY: mi::mi_option_t = 15;
/// How long memory a node freed stays committed before mimalloc returns it to the OS, unless the
/// environment sets `MIMALLOC_PURGE_DELAY`. mimalloc's own default (1 s) returned and re-faulted
/// the same memory over and over under a steady load: a list growing by LPUSH at pipeline 16 took
/// 1,000–1,400 page faults of 2 MB (transparent huge pages, each cleared on fault: 10% of the
/// server's time) for a 200 MB list, 120 at 10 s; a steady SET load 121 against 6. jemalloc, as
/// Redis configures it, decays dirty pages over 10 s too. `MEMORY PURGE` returns them at once.
pub const PURGE_DELAY_MS: std::ffi::c_long = 10_000;

/// Sets the allocator's options (before the node starts; see [`PURGE_DELAY_MS`]).
pub fn configure() {
    if std::env::var_os("MIMALLOC_PURGE_DELAY").is_none() {
        // SAFETY: setting an option has no preconditions.
        unsafe { mi::mi_option_set(MI_OPTION_PURGE_DELAY, PURGE_DELAY_MS) };
    }
}

/// Returns free memory to the OS (`MEMORY PURGE`).
pub fn purge() {
    // SAFETY: no preconditions.
    unsafe { mi::mi_collect(true) }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn threads_counts_reach_the_shared_count_in_bounded_steps_and_when_they_end() {
        // Eight threads each allocate 256 blocks of 1,000 bytes, hand them to this thread (which
        // frees them after the threads ended) and leak one block of half the slack: less than a
        // thread moves to the shared count on its own, so only the thread's end brings it there.
        // The leaks are counted, to within this thread's own steps (a few, of less than the
        // slack each way).
        const THREADS: usize = 8;
        const BLOCKS: usize = 256;
        let leak = THREAD_SLACK_BYTES as usize / 2;
        let before = used_memory() as isize;
        let handed: Vec<Vec<Vec<u8>>> = (0..THREADS)
            .map(|_| {
                std::thread::spawn(move || {
                    let hand: Vec<Vec<u8>> = (0..BLOCKS).map(|i| vec![i as u8; 1000]).collect();
                    std::mem::forget(vec![1u8; leak]);
                    hand
                })
            })
            .map(|t| t.join().expect("thread"))
            .collect();
        drop(handed);
        let counted = used_memory() as isize - before;
        let want = THREADS as isize * usable_of(leak);
        assert!(
            (counted - want).abs() < 2 * THREAD_SLACK_BYTES,
            "{counted} bytes counted for {want} leaked by ended threads"
        );
    }

    /// The usable size mimalloc gives a request of `n` bytes.
    fn usable_of(n: usize) -> isize {
        let b = vec![0u8; n];
        usable(b.as_ptr() as *mut u8) as isize
    }

    #[test]
    fn the_purge_delay_option_is_the_one_configure_sets() {
        // SAFETY: reading and setting options has no preconditions.
        unsafe {
            if std::env::var_os("MIMALLOC_PURGE_DELAY").is_none() {
                assert_eq!(
                    mi::mi_option_get(MI_OPTION_PURGE_DELAY),
                    1000,
                    "mimalloc 3's purge_delay default: the option number still names it"
                );
            }
            configure();
            if std::env::var_os("MIMALLOC_PURGE_DELAY").is_none() {
                assert_eq!(mi::mi_option_get(MI_OPTION_PURGE_DELAY), PURGE_DELAY_MS);
            }
        }
    }
}
