//! A command's effects on the replication stream. Every write queues its change in its shard
//! (`shoal_keyspace::delta::Pending`) and notes the shard (`shoal_keyspace::write_log`); after every
//! command (and each active-expire pass) the shards it wrote to are locked in order, a group at a
//! time, their queues encoded and appended to the backlog in one append before the locks are
//! released, so per key the stream holds the writes in the order they were made. A pipeline's data
//! commands leave their queues for one such append at the end of the connection's batch
//! ([`flush_deferred`]); such a command of one key may instead append its write's effect at
//! once, under its shard's lock, when that shard's queue is empty and the backlog's lock is free
//! (`shoal_keyspace::write_log`), and the drain here collects the stream's end after it.
//! FLUSHDB/FLUSHALL and SWAPDB append every queue, then their own effect,
//! under all locks. The codec is `shoal_replication::stream`; this module only knows where the
//! queues are.
//!
//! Lock order: shards in ascending order, then the backlog's. Nothing here takes the replication
//! core's lock (a role change holds it while it locks the shards).

use std::cell::RefCell;

use shoal_keyspace::ShardGuard;
use shoal_replication::stream;

use crate::state::{Client, ServerState};
use crate::table::{Group, Spec, flag};

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

/// Shards whose queues go to the stream in one append: the shards a command (or a deferred
/// pipeline, see [`flush_deferred`]) wrote to are locked in order this many at a time, their
/// queues encoded into one buffer and appended together, so the backlog's lock (a cache line
/// every writing thread and the log's writer share) is taken once for them all. Bounds how many
/// shards one thread holds at once, and so how long another waits for one of them.
pub const EMIT_GROUP_SHARDS_MAX: usize = 16;
/// Commands of one pipeline batch whose effects may wait in their shards' queues before the
/// connection loop appends them together ([`flush_deferred`]); the next one flushes first. Bounds
/// the queues (and the shards one flush locks) whatever a batch holds.
pub const DEFERRED_COMMANDS_MAX: u32 = 64;

/// Appends what this thread's last command queued. Returns the stream offset that covers all of it
/// (for WAIT and the sync strategy), or `None` if it wrote nothing (or this node does not record).
/// `now_ms` stamps deletions.
pub fn emit_logged(srv: &ServerState, now_ms: u64) -> Option<u64> {
    // Drained whether or not this node records: the list is per thread, and whatever is in it
    // belongs to the command that just ran here.
    // Writes appended at once, under their shards' locks (`shoal_keyspace::write_log`).
    let mut covered: Option<u64> = shoal_keyspace::write_log::take_direct_end();
    let recording = srv.ks.recording();
    let mut appended = covered.is_some();
    let mut group = [0usize; EMIT_GROUP_SHARDS_MAX];
    let mut n = 0;
    let mut emit = |group: &[usize]| {
        let (end, did) = append_group(srv, group, now_ms);
        appended |= did;
        covered = Some(covered.map_or(end, |c| c.max(end)));
    };
    shoal_keyspace::write_log::drain_touched(|i| {
        if !recording {
            return;
        }
        group[n] = i;
        n += 1;
        if n == EMIT_GROUP_SHARDS_MAX {
            emit(&group[..n]);
            n = 0;
        }
    });
    if n > 0 {
        emit(&group[..n]);
    }
    // Links are woken once, with no shard lock held.
    if appended {
        srv.repl.notify_appended();
    }
    covered
}

/// Whether a command's effects may wait in their shards' queues until the end of its
/// connection's pipeline batch: the data types' commands, which read and write keys and nothing
/// of the replication stream. Everything else (WAIT and WAITAOF, which read a client's last
/// offset; SAVE, INFO, ROLE, PSYNC, which read the stream's; EXEC and scripts; the cluster's and
/// shoal's own commands) first appends what the batch deferred.
pub fn deferrable(spec: &Spec) -> bool {
    matches!(
        spec.group,
        Group::String
            | Group::List
            | Group::Hash
            | Group::Set
            | Group::SortedSet
            | Group::Bitmap
            | Group::HyperLogLog
            | Group::Geo
            | Group::Stream
            | Group::Bloom
    ) && !spec.has(flag::TX_CONTROL)
}

/// Appends what the client's deferred commands left queued (see [`deferrable`]); the connection
/// loop calls it at the end of each batch and before anything that waits or hands the connection
/// over, and the request path before a command that may not be deferred. Per key the stream
/// still holds the writes in order: every shard's queue is appended under its lock, by whichever
/// thread drains it first. Their replies have not left yet, so WAIT, the sync strategy and
/// `appendfsync always` see the offset before any reply is sent (and the last two do not defer).
pub fn flush_deferred(srv: &ServerState, client: &mut Client, now_ms: u64) {
    if client.repl.deferred == 0 {
        return;
    }
    client.repl.deferred = 0;
    if let Some(offset) = emit_logged(srv, now_ms) {
        client.repl.last_write_offset = client.repl.last_write_offset.max(offset);
    }
}

/// Appends a group of shards' queues (ascending indices, all locked while their bytes are
/// encoded and appended); returns the stream's end after it and whether anything was appended.
/// An empty queue was appended by another command that found it full (under its lock, so its
/// bytes are in the backlog now).
fn append_group(srv: &ServerState, group: &[usize], now_ms: u64) -> (u64, bool) {
    // The lock order every multi-shard lock keeps (commands lock their keys' shards the same way).
    debug_assert!(
        group.windows(2).all(|w| w[0] < w[1]),
        "a group's shards are locked in ascending order: {group:?}"
    );
    debug_assert!(group.len() <= EMIT_GROUP_SHARDS_MAX);
    if srv.active.is_on() {
        let mut end = None;
        for &i in group {
            let mut shard = srv.ks.lock(i);
            if let Some(e) = crate::active::append_local(srv, &mut shard, now_ms) {
                end = Some(e);
            }
        }
        return match end {
            Some(end) => (end, true),
            None => (srv.repl.stream_end(), false),
        };
    }
    let mut out = SCRATCH.with(|s| std::mem::take(&mut *s.borrow_mut()));
    if out.capacity() == 0 {
        out.reserve(EMIT_BUF_BYTES);
    }
    let mut guards: [Option<ShardGuard<'_>>; EMIT_GROUP_SHARDS_MAX] = std::array::from_fn(|_| None);
    // A shard whose queue holds only writes encoded as they were made (SET and its family: the
    // usual case) has its stream bytes in one run of its effect buffer, in order: that run goes
    // to the backlog as it is, with no copy through `out`. Its queue is given back after the
    // append (which empties the buffer).
    let mut direct: [Option<(Vec<shoal_keyspace::delta::Pending>, usize, usize)>;
        EMIT_GROUP_SHARDS_MAX] = std::array::from_fn(|_| None);
    for ((slot, run), &i) in guards.iter_mut().zip(direct.iter_mut()).zip(group) {
        let mut shard = srv.ks.lock(i);
        let items = shard.take_pending();
        match stream::encoded_run(&items) {
            Some((start, end)) => *run = Some((items, start, end)),
            None => {
                if !items.is_empty() {
                    stream::encode_pending(&mut out, &shard, &items, &srv.ks.hlc, now_ms);
                }
                shard.recycle_pending(items);
            }
        }
        *slot = Some(shard);
    }
    let mut parts: [&[u8]; EMIT_GROUP_SHARDS_MAX + 1] = [&[]; EMIT_GROUP_SHARDS_MAX + 1];
    let mut n = 0;
    if !out.is_empty() {
        parts[0] = &out;
        n = 1;
    }
    for (guard, run) in guards.iter().zip(&direct) {
        if let (Some(shard), Some((_, start, end))) = (guard, run) {
            parts[n] = shard.effect_bytes(*start, end - start);
            n += 1;
        }
    }
    let result = if n == 0 {
        (srv.repl.stream_end(), false)
    } else {
        (srv.repl.append_quiet_parts(&parts[..n]), true)
    };
    for (guard, run) in guards.iter_mut().zip(direct.iter_mut()) {
        if let (Some(shard), Some((items, _, _))) = (guard.as_mut(), run.take()) {
            shard.recycle_pending(items);
        }
    }
    drop(guards);
    if out.capacity() <= EMIT_BUF_KEEP_BYTES {
        out.clear();
        SCRATCH.with(|s| *s.borrow_mut() = out);
    }
    result
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
    // Scripts never append at once (see `write_log::direct_scope`): nothing of theirs is there.
    let direct = shoal_keyspace::write_log::take_direct_end();
    debug_assert!(direct.is_none(), "a script's write was appended at once");
    shoal_keyspace::write_log::drain_touched(|i| {
        let mut shard = srv.ks.lock(i);
        let items = shard.take_pending();
        shard.recycle_pending(items);
    });
}
