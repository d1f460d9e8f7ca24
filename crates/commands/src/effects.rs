//! A command's effects on the replication stream. After every command (and each active-expire
//! pass) the keys its writes touched (see `shoal_keyspace::write_log`) are read back and appended to
//! the backlog as their new state or as their deletion; FLUSHDB/FLUSHALL and SWAPDB append their
//! own effect. The codec is `shoal_replication::stream`; this module only knows where the keys are.

use shoal_keyspace::key_slot;
use shoal_replication::stream;

use crate::state::ServerState;

/// Sends the effects of what this thread just wrote: each key's current state, or its deletion.
/// Returns the stream offset after them (for WAIT and the sync strategy), or `None` if nothing was
/// appended. `now_ms` stamps deletions.
pub fn emit_logged(srv: &ServerState, now_ms: u64) -> Option<u64> {
    // Drained whether or not this node records: the log is per thread, and whatever is in it
    // belongs to the command that just ran here.
    let mut keys = shoal_keyspace::write_log::drain();
    if keys.is_empty() || !srv.ks.recording() {
        return None;
    }
    // A command may touch a key several times; one effect with its final state is enough.
    if keys.len() > 1 {
        let mut seen = std::collections::HashSet::with_capacity(keys.len());
        keys.retain(|k| seen.insert(k.clone()));
    }
    let mut out = Vec::with_capacity(keys.len() * 64);
    for (db, key) in &keys {
        let slot = key_slot(key);
        let shard = srv.ks.lock(srv.ks.shard_of(slot));
        match shard.peek_any(*db, slot, key) {
            Some(e) => stream::encode_put(&mut out, *db, e),
            // The deletion's version is taken under the shard lock, so any later write of this key
            // (which needs the lock) carries a newer version and survives the deletion.
            None => stream::encode_del(&mut out, *db, key, srv.ks.hlc.next(now_ms)),
        }
    }
    Some(srv.repl.append(&out))
}

/// Appends a whole-database effect (FLUSHDB, FLUSHALL, SWAPDB) built by `encode`, if this node
/// records. Returns the stream offset after it.
pub fn emit(srv: &ServerState, encode: impl FnOnce(&mut Vec<u8>)) -> Option<u64> {
    if !srv.ks.recording() {
        return None;
    }
    let mut out = Vec::new();
    encode(&mut out);
    Some(srv.repl.append(&out))
}
