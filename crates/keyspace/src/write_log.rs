//! The write log: which keys the current thread wrote, for the replication stream.
//!
//! A command runs start to finish on one thread, so a thread-local list of the keys its writes
//! touched (inserted, modified, deleted, expired, evicted) is exactly that command's effect set. The
//! replication layer drains it after each command and sends each key's resulting state. Recording
//! costs one relaxed load while replication is off (no replicas ever attached).

use std::cell::RefCell;
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};

static ENABLED: AtomicBool = AtomicBool::new(false);

thread_local! {
    static LOG: RefCell<Vec<(usize, Vec<u8>)>> = const { RefCell::new(Vec::new()) };
}

/// Turns recording on (a replica attached) or off.
pub fn set_enabled(on: bool) {
    ENABLED.store(on, Relaxed);
}

pub fn enabled() -> bool {
    ENABLED.load(Relaxed)
}

/// Records that `key` of `db` was written on this thread.
pub(crate) fn record(db: usize, key: &[u8]) {
    if enabled() {
        LOG.with(|l| l.borrow_mut().push((db, key.to_vec())));
    }
}

/// Takes this thread's recorded keys (in write order, possibly with repeats).
pub fn drain() -> Vec<(usize, Vec<u8>)> {
    LOG.with(|l| std::mem::take(&mut *l.borrow_mut()))
}
