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
//!
//! A write may skip its shard's queue: while the caller allows it ([`direct_scope`]), a shard
//! whose queue is empty hands the write's encoded effect straight to its [`EffectSink`] (the
//! stream's backlog) under its lock, if the sink can take it without waiting. That keeps the
//! order (everything the shard queued before is in the stream already; everything after needs
//! the lock) and saves the queue's round trip: the shard's effect buffer and queue, and locking
//! the shard again to drain them. The stream's end after such an append is noted here for the
//! caller's drain ([`take_direct_end`]).

use std::cell::{Cell, RefCell};

/// Where a shard may append a write's encoded effect at once (see the module's header): the
/// replication stream, which this crate does not know.
pub trait EffectSink: Send + Sync + std::fmt::Debug {
    /// Appends `bytes` to the stream if that can be done now, without waiting for another
    /// thread; returns the stream's end after them, or `None` (the write is queued instead).
    fn try_append(&self, bytes: &[u8]) -> Option<u64>;

    /// Asks the CPU to start loading, for writing, the lines the next append will write (a
    /// hint: see `Keyspace::prefetch_effects`).
    fn prefetch_tail(&self) {}
}

/// The most capacity the thread's encoding buffer for direct appends keeps between writes.
const DIRECT_SCRATCH_KEEP_BYTES: usize = 16 * 1024;

thread_local! {
    static TOUCHED: RefCell<Vec<usize>> = const { RefCell::new(Vec::new()) };
    /// Whether this thread's writes may go to their shard's sink at once ([`direct_scope`]).
    static DIRECT: Cell<bool> = const { Cell::new(false) };
    /// The stream's end after this thread's last direct append, until drained.
    static DIRECT_END: Cell<Option<u64>> = const { Cell::new(None) };
    /// Where a direct append is encoded: one buffer per thread, in this core's cache.
    static SCRATCH: RefCell<Vec<u8>> = const { RefCell::new(Vec::new()) };
}

/// While it lives, this thread's writes may be appended to the stream at once (see the module's
/// header). The caller then drains [`take_direct_end`] with the queues, before it replies. Only
/// for a command whose effects may reach the stream one key at a time, each in the order of its
/// shard: not a transaction or a script (which may drop theirs), not a multi-key write.
#[must_use = "direct appends stop when the scope is dropped"]
pub struct DirectScope(());

pub fn direct_scope() -> DirectScope {
    DIRECT.with(|d| d.set(true));
    DirectScope(())
}

impl Drop for DirectScope {
    fn drop(&mut self) {
        DIRECT.with(|d| d.set(false));
    }
}

pub(crate) fn direct_allowed() -> bool {
    DIRECT.with(Cell::get)
}

/// Encodes with `encode` into this thread's buffer and offers the bytes to `sink`. On success the
/// stream's end is noted for [`take_direct_end`]; otherwise `refused` gets the bytes.
pub(crate) fn append_direct(
    sink: &dyn EffectSink,
    encode: impl FnOnce(&mut Vec<u8>),
    refused: impl FnOnce(&[u8]),
) -> bool {
    SCRATCH.with(|s| {
        let mut buf = s.borrow_mut();
        buf.clear();
        encode(&mut buf);
        let done = match sink.try_append(&buf) {
            Some(end) => {
                DIRECT_END.with(|e| e.set(Some(e.get().map_or(end, |before| before.max(end)))));
                true
            }
            None => {
                refused(&buf);
                false
            }
        };
        if buf.capacity() > DIRECT_SCRATCH_KEEP_BYTES {
            *buf = Vec::new();
        }
        done
    })
}

/// The stream's end after this thread's direct appends since the last call, if any.
pub fn take_direct_end() -> Option<u64> {
    DIRECT_END.with(Cell::take)
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
