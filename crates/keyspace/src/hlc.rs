//! Hybrid logical clock for key versions (DESIGN.md §2): 48 bits of wall-clock milliseconds, 16 bits of
//! logical counter. Versions handed out by one node strictly grow, even when the wall clock stands still
//! or steps back, so "versions of a key only grow" holds without trusting the clock.

use std::sync::atomic::{AtomicU64, Ordering};

const LOGICAL_BITS: u32 = 16;

/// A node's version source. The wall clock is an input, so tests and simulation control it.
///
/// Every write moves it, from any worker: it has its own cache lines (two, for the adjacent-line
/// prefetcher), so the read-mostly fields next to it in the `Keyspace` (the shards' pointer, the
/// recording and notification flags, read by every command) do not move between cores with it.
#[derive(Debug, Default)]
#[repr(align(128))]
pub struct Hlc {
    last: AtomicU64,
}

/// Builds a version from its parts.
pub fn version_from_parts(ms: u64, logical: u16) -> u64 {
    (ms << LOGICAL_BITS) | logical as u64
}

/// The wall-clock milliseconds part of a version.
pub fn version_ms(v: u64) -> u64 {
    v >> LOGICAL_BITS
}

impl Hlc {
    pub fn new() -> Self {
        Hlc::default()
    }

    /// A new version, greater than every version this clock issued or observed before.
    pub fn next(&self, now_ms: u64) -> u64 {
        let wall = version_from_parts(now_ms & ((1 << 48) - 1), 0);
        let mut last = self.last.load(Ordering::Relaxed);
        loop {
            let candidate = if wall > last { wall } else { last + 1 };
            match self.last.compare_exchange_weak(
                last,
                candidate,
                Ordering::Relaxed,
                Ordering::Relaxed,
            ) {
                Ok(_) => return candidate,
                Err(seen) => last = seen,
            }
        }
    }

    /// Records a version seen from elsewhere (a replica applying its primary's writes, a peer's
    /// write in active-active), so later local versions are greater.
    pub fn observe(&self, version: u64) {
        self.last.fetch_max(version, Ordering::Relaxed);
    }

    pub fn last(&self) -> u64 {
        self.last.load(Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strictly_grows_when_clock_stalls_or_steps_back() {
        let h = Hlc::new();
        let a = h.next(1000);
        let b = h.next(1000);
        let c = h.next(900);
        assert!(a < b && b < c);
        assert_eq!(version_ms(a), 1000);
        let d = h.next(2000);
        assert_eq!(d, version_from_parts(2000, 0));
        h.observe(version_from_parts(5000, 7));
        assert_eq!(h.next(2001), version_from_parts(5000, 8));
    }
}
