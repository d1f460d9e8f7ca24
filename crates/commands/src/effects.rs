//! A command's effects on the replication stream. Every write queues its change in its shard
//! (`shoal_keyspace::delta::Pending`) and notes the shard (`shoal_keyspace::write_log`); after every
//! command (and each active-expire pass) each shard it wrote to is locked, its queue encoded and
//! appended to the backlog before the lock is released, so per key the stream holds the writes in
//! the order they were made. FLUSHDB/FLUSHALL and SWAPDB append every queue, then their own effect,
//! under all locks. The codec is `shoal_replication::stream`; this module only knows where the
//! queues are.
//!
//! Lock order: a shard's lock, then the backlog's. Nothing here takes the replication core's lock
//! (a role change holds it while it locks the shards).

use std::cell::RefCell;

use shoal_keyspace::ShardGuard;
use shoal_replication::stream;

use crate::state::ServerState;

/// Bytes a thread's encoding buffer starts with: a SET of a short value fits, so the buffer is
/// not grown several times on its first writes.
const EMIT_BUF_BYTES: usize = 512;
/// The most capacity a thread's encoding buffer keeps between writes (a large value's effect
/// gives its buffer back).
pub const EMIT_BUF_KEEP_BYTES: usize = 64 * 1024;

thread_local! {
    /// The buffer this thread encodes a shard's queue into before appending it to the stream:
    /// one per thread, so it stays in this core's cache (a buffer per shard was a cache miss
    /// per write under random keys) and a write allocates none.
    static SCRATCH: RefCell<Vec<u8>> = const { RefCell::new(Vec::new()) };
}

/// Appends what this thread's last command queued. Returns the stream offset that covers all of it
/// (for WAIT and the sync strategy), or `None` if it wrote nothing (or this node does not record).
/// `now_ms` stamps deletions.
pub fn emit_logged(srv: &ServerState, now_ms: u64) -> Option<u64> {
    // Drained whether or not this node records: the list is per thread, and whatever is in it
    // belongs to the command that just ran here.
    let mut covered: Option<u64> = None;
    let recording = srv.ks.recording();
    let mut appended = false;
    shoal_keyspace::write_log::drain_touched(|i| {
        if !recording {
            return;
        }
        let mut shard = srv.ks.lock(i);
        let (end, did) = append_queue(srv, &mut shard, now_ms);
        appended |= did;
        covered = Some(covered.map_or(end, |c| c.max(end)));
    });
    // Links are woken once, with no shard lock held.
    if appended {
        srv.repl.notify_appended();
    }
    covered
}

/// Appends one locked shard's queue (without waking links); returns the stream's end after it and
/// whether anything was appended. An empty queue was appended by another command that found it
/// full (under this lock, so its bytes are in the backlog now).
fn append_queue(srv: &ServerState, shard: &mut ShardGuard<'_>, now_ms: u64) -> (u64, bool) {
    if srv.active.is_on() {
        return match crate::active::append_local(srv, shard, now_ms) {
            Some(end) => (end, true),
            None => (srv.repl.stream_end(), false),
        };
    }
    let items = shard.take_pending();
    if items.is_empty() {
        shard.recycle_pending(items);
        return (srv.repl.stream_end(), false);
    }
    let mut out = SCRATCH.with(|s| std::mem::take(&mut *s.borrow_mut()));
    if out.capacity() == 0 {
        out.reserve(EMIT_BUF_BYTES);
    }
    stream::encode_pending(&mut out, shard, &items, &srv.ks.hlc, now_ms);
    shard.recycle_pending(items);
    let end = srv.repl.append_quiet(&out);
    if out.capacity() <= EMIT_BUF_KEEP_BYTES {
        out.clear();
        SCRATCH.with(|s| *s.borrow_mut() = out);
    }
    (end, true)
}

/// Appends a whole-keyspace effect (FLUSHDB, FLUSHALL, SWAPDB) while the caller holds every shard
/// lock (`shards`, all of them in order), after everything the shards had queued. `encode` writes
/// the effect; `apply` makes the change itself, between the queues being encoded (as the keys were
/// before it) and the effect. Returns the stream offset after the effect, if this node records.
pub fn emit_all_locked(
    srv: &ServerState,
    shards: &mut [ShardGuard<'_>],
    now_ms: u64,
    apply: impl FnOnce(&mut [ShardGuard<'_>]),
    encode: impl FnOnce(&mut Vec<u8>),
) -> Option<u64> {
    let recording = srv.ks.recording();
    let mut out = Vec::new();
    if recording && srv.active.is_on() {
        for shard in shards.iter_mut() {
            crate::active::append_local(srv, shard, now_ms);
        }
    } else if recording {
        for shard in shards.iter_mut() {
            let items = shard.take_pending();
            stream::encode_pending(&mut out, shard, &items, &srv.ks.hlc, now_ms);
            shard.recycle_pending(items);
        }
    }
    apply(shards);
    if !recording {
        return None;
    }
    encode(&mut out);
    Some(srv.repl.append(&out))
}

/// Drops what this thread's last command queued, unreplicated (a script's `redis.set_repl`
/// without `REPL_REPLICA`: Redis then does not propagate the command either).
pub fn discard_logged(srv: &ServerState) {
    shoal_keyspace::write_log::drain_touched(|i| {
        let mut shard = srv.ks.lock(i);
        let items = shard.take_pending();
        shard.recycle_pending(items);
    });
}
