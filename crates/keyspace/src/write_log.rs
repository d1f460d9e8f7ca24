//! The write log: which keys the current command wrote, for the replication stream.
//!
//! A command runs start to finish on one thread and the caller drains this log right after it, so a
//! thread-local list of the keys its writes touched (inserted, modified, deleted, expired, evicted)
//! is exactly that command's effect set. Whether anything is recorded is decided per keyspace
//! (`Keyspace::set_recording`, a flag in each shard), not by a process-wide switch, so several
//! nodes can share a process (the simulator, tests) without seeing each other's writes: each
//! drains after each of its commands, before the thread runs anything else.

use std::cell::RefCell;

thread_local! {
    static LOG: RefCell<Vec<(usize, Vec<u8>)>> = const { RefCell::new(Vec::new()) };
}

/// Records that `key` of `db` was written on this thread (the shard checked it is recording).
pub(crate) fn record(db: usize, key: &[u8]) {
    LOG.with(|l| l.borrow_mut().push((db, key.to_vec())));
}

/// Takes this thread's recorded keys (in write order, possibly with repeats).
pub fn drain() -> Vec<(usize, Vec<u8>)> {
    LOG.with(|l| std::mem::take(&mut *l.borrow_mut()))
}
