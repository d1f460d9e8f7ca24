//! Which shards the current command queued changes in, for the replication stream.
//!
//! A write queues its change in its shard ([`crate::delta::Pending`], under the shard lock) and
//! notes the shard's index here, in a thread-local list. A command runs start to finish on one
//! thread, and right after it (or, for a pipeline's data commands, at the end of the connection's
//! batch, which runs on one thread without waiting) the caller drains this list: it locks the
//! shards named, takes their queues and appends them to the stream before releasing the locks. A shard's queue may hold
//! other commands' changes too (they drain it themselves if it is still full when they look); the
//! lock makes each queue reach the stream in write order. Whether anything is queued is decided per
//! keyspace (`Keyspace::set_recording`), not by a process-wide switch, so several nodes can share a
//! process (the simulator, tests): each drains after each of its commands, before the thread runs
//! anything else.

use std::cell::RefCell;

thread_local! {
    static TOUCHED: RefCell<Vec<usize>> = const { RefCell::new(Vec::new()) };
}

/// Notes that shard `index` queued a change on this thread.
pub(crate) fn touch(index: usize) {
    TOUCHED.with(|t| {
        let mut t = t.borrow_mut();
        if t.last() != Some(&index) {
            t.push(index);
        }
    });
}

/// Calls `f` once for each shard this thread queued changes in since the last drain (ascending
/// order), and forgets them.
pub fn drain_touched(mut f: impl FnMut(usize)) {
    let mut list = TOUCHED.with(|t| std::mem::take(&mut *t.borrow_mut()));
    if list.is_empty() {
        return;
    }
    if list.len() > 1 {
        list.sort_unstable();
        list.dedup();
    }
    for &i in &list {
        f(i);
    }
    list.clear();
    // Keep the capacity for the next command (unless `f` queued something itself).
    TOUCHED.with(|t| {
        let mut t = t.borrow_mut();
        if t.is_empty() {
            *t = list;
        }
    });
}
