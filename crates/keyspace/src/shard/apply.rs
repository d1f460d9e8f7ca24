//! Applying writes that come from elsewhere (a primary's stream, a snapshot, a peer) and reading a
//! whole database part out (snapshots). Writes from elsewhere are applied by version, last writer
//! wins: a put or a delete only takes effect if it is newer than what the key holds, so the order in
//! which effects arrive does not matter for the final state, and re-applying one is harmless.
//! A write applied from the stream is noted for client-side caching (`notify::TRACKING`), as a
//! Redis replica invalidates the keys its primary's commands modify.

use super::{Shard, StringWrite};
use crate::delta::{self, DeltaError};
use crate::entry::Entry;
use crate::notify;
use crate::types::EncodingLimits;

/// How many entries ahead of the one it hands out [`Shard::for_each_entry`] asks the CPU for.
pub const WALK_PREFETCH_AHEAD: usize = 8;

impl Shard {
    /// Visits every entry of a database part (expired ones included: a snapshot carries them with
    /// their deadline and the receiver drops them), with its global slot.
    pub fn for_each_entry(&self, index: usize, db: usize, f: impl FnMut(u16, &Entry)) {
        self.for_each_entry_from(index, db, 0, usize::MAX, f);
    }

    /// [`Shard::for_each_entry`] in pieces: the entries of this shard's slot tables from local
    /// slot `from` on, stopping after the first table that brings the count to `entries_max` or
    /// more. Returns the local slot to continue from ([`Shard::local_slot_count`] when done), so
    /// a long walk (a snapshot) can let go of the shard's lock between pieces: each key is still
    /// read whole under the lock, and a write between pieces is in the stream after the walk's
    /// start.
    pub fn for_each_entry_from(
        &self,
        index: usize,
        db: usize,
        from: usize,
        entries_max: usize,
        mut f: impl FnMut(u16, &Entry),
    ) -> usize {
        let Some(d) = self.dbs[db].as_ref() else {
            return self.local_slots;
        };
        // Each entry is a heap block of its own, a cache miss to read: the walk asks for the
        // block `WALK_PREFETCH_AHEAD` entries before it hands it to `f`, so the misses overlap
        // (a snapshot of a million keys spends most of its time waiting for them otherwise).
        let mut ring: [Option<(u16, &Entry)>; WALK_PREFETCH_AHEAD] = [None; WALK_PREFETCH_AHEAD];
        let mut at = 0;
        let mut seen = 0usize;
        let mut next = self.local_slots;
        for (local, table) in d.slots.iter().enumerate().skip(from) {
            if seen >= entries_max {
                next = local;
                break;
            }
            let slot = self.global_slot(index, local as u32);
            for e in table.iter() {
                e.prefetch_with_value();
                if let Some((s, old)) = ring[at].replace((slot, e)) {
                    f(s, old);
                }
                at = (at + 1) % WALK_PREFETCH_AHEAD;
            }
            seen += table.len();
        }
        // The last ones, oldest first.
        for i in 0..WALK_PREFETCH_AHEAD {
            if let Some((s, e)) = ring[(at + i) % WALK_PREFETCH_AHEAD].take() {
                f(s, e);
            }
        }
        next
    }

    /// How many slot tables each database of this shard has (the local slots
    /// [`Shard::for_each_entry_from`] walks).
    pub fn local_slot_count(&self) -> usize {
        self.local_slots
    }

    /// Inserts `entry` unless the key already holds a version at least as new. Returns whether it
    /// was applied.
    pub fn apply_put(&mut self, db: usize, slot: u16, entry: Entry, now_ms: u64) -> bool {
        let newer = self
            .peek_any(db, slot, entry.key())
            .is_none_or(|current| current.version() < entry.version());
        if newer {
            self.insert_quiet(db, slot, entry, now_ms);
        }
        newer
    }

    /// Inserts `entry` unless the key already holds a newer version: a put read from the stream,
    /// which is in write order per key, so a put at the key's own version (a second write by one
    /// command) replaces it.
    pub fn apply_put_in_order(&mut self, db: usize, slot: u16, entry: Entry, now_ms: u64) -> bool {
        let current = self.peek_any(db, slot, entry.key()).map(|e| e.version());
        let apply = current.is_none_or(|v| v <= entry.version());
        if apply {
            self.note(notify::TRACKING, "replicated", db, entry.key());
            self.insert_quiet(db, slot, entry, now_ms);
        }
        apply
    }

    /// [`Shard::apply_put_in_order`] of a plain inline string (no external version, no
    /// stale-after deadline), which overwrites a live string of the same block size in place
    /// as [`Shard::insert_string`] does: a replica applying a primary's SETs allocates and frees
    /// no block for them.
    pub fn apply_string_in_order(
        &mut self,
        db: usize,
        slot: u16,
        w: StringWrite<'_>,
        now_ms: u64,
    ) -> bool {
        let current = self.peek_any(db, slot, w.key).map(|e| e.version());
        let apply = current.is_none_or(|v| v <= w.version);
        if apply {
            self.note(notify::TRACKING, "replicated", db, w.key);
            let hash = self.hash(w.key);
            let in_place = current.is_some()
                && !self.keep_priors
                && self.overwrite_string(db, slot, hash, &w, now_ms, None);
            if !in_place {
                let entry = Entry::new_string(w.key, w.value, w.expire_ms, w.version);
                self.insert_quiet_as(db, slot, entry, now_ms, None, Some(hash));
            }
        }
        apply
    }

    /// Applies a delta made to `key` at version `base` that left it at version `new`. Returns
    /// whether it applied (`false`: the key is already at `new` or later, from a snapshot or a
    /// read-back). A key at another version, or absent, means the stream is broken. A collection
    /// the delta empties is deleted, as on the primary.
    #[allow(clippy::too_many_arguments)]
    pub fn apply_delta(
        &mut self,
        db: usize,
        slot: u16,
        key: &[u8],
        base: u64,
        new: u64,
        ops: &[u8],
        limits: &EncodingLimits,
    ) -> Result<bool, DeltaError> {
        let version = self
            .peek_any(db, slot, key)
            .map(|e| e.version())
            .ok_or(DeltaError::Diverged(None))?;
        if version >= new {
            return Ok(false);
        }
        if version != base {
            return Err(DeltaError::Diverged(Some(version)));
        }
        let empty = {
            // A replica never expires keys itself, so the lookup finds the key whatever its TTL.
            let mut e = self
                .lookup_any(db, slot, key)
                .ok_or(DeltaError::Diverged(None))?;
            delta::apply(&mut e, ops, limits)?;
            e.set_version(new);
            // A collection the ops emptied goes, as on the primary; an empty stream stays.
            e.object_mut()
                .is_some_and(|o| o.is_empty() && o.kind() != crate::Kind::Stream)
        };
        if empty {
            self.remove(db, slot, key);
        }
        self.note(notify::TRACKING, "replicated", db, key);
        Ok(true)
    }

    /// Writes a value merged from an active-active peer (`None`: the key is gone), queuing nothing
    /// for the stream: a peer's write is never sent on (no echo). The version only grows.
    pub fn put_merged(
        &mut self,
        db: usize,
        slot: u16,
        key: &[u8],
        entry: Option<Entry>,
        now_ms: u64,
    ) {
        let recording = std::mem::replace(&mut self.recording, false);
        match entry {
            Some(e) => {
                self.insert_quiet(db, slot, e, now_ms);
            }
            None => {
                self.remove(db, slot, key);
            }
        }
        self.recording = recording;
    }

    /// Deletes `key` if its version is older than `version`. Returns whether it deleted.
    pub fn apply_del(&mut self, db: usize, slot: u16, key: &[u8], version: u64) -> bool {
        let older = self
            .peek_any(db, slot, key)
            .is_some_and(|e| e.version() < version);
        if older {
            self.remove(db, slot, key);
            self.note(notify::TRACKING, "replicated", db, key);
        }
        older
    }

    /// Deletes every key of a database part whose version is older than `version` (a replicated
    /// FLUSHDB/FLUSHALL: keys written after the flush survive it).
    pub fn apply_flush(&mut self, db: usize, version: u64) -> usize {
        let Some(d) = self.dbs[db].as_mut() else {
            return 0;
        };
        let mut removed = 0;
        let mut freed = 0;
        let mut volatile_removed = 0;
        let mut deadlines_removed = 0u128;
        for table in d.slots.iter_mut() {
            table.retain(|e| {
                if e.version() < version {
                    removed += 1;
                    freed += e.mem_bytes();
                    if let Some(at_ms) = e.expire_ms() {
                        volatile_removed += 1;
                        deadlines_removed += u128::from(at_ms);
                    }
                    false
                } else {
                    true
                }
            });
            super::shrink_table(table, &self.hasher);
        }
        d.keys -= removed;
        d.volatile -= volatile_removed;
        d.deadline_sum_ms -= deadlines_removed;
        self.mem_bytes -= freed;
        // The expiry heap keeps items for removed keys; they are stale and skipped when due.
        removed
    }

    /// An entry whether or not it has expired.
    pub fn peek_any(&self, db: usize, slot: u16, key: &[u8]) -> Option<&Entry> {
        let d = self.dbs.get(db)?.as_ref()?;
        let hash = self.hash(key);
        d.slots[self.local(slot) as usize].find(hash, |e| e.key() == key)
    }
}

#[cfg(test)]
mod tests {
    use crate::entry::Entry;
    use crate::shard::Keyspace;
    use crate::slot::key_slot;

    #[test]
    fn a_walk_in_pieces_visits_every_entry_once_and_stops_at_table_boundaries() {
        let ks = Keyspace::new(1, 4, 7);
        let mut s = ks.lock(0);
        let mut written = std::collections::BTreeSet::new();
        for i in 0..5000u32 {
            let key = format!("key:{i}").into_bytes();
            let slot = key_slot(&key);
            if ks.shard_of(slot) == 0 {
                s.insert(0, slot, Entry::new_string(&key, b"v", None, 1), 0);
                written.insert(key);
            }
        }
        assert!(written.len() > 1000, "{}", written.len());
        for max in [1, 64, 1000, usize::MAX] {
            let (mut from, mut pieces) = (0, 0);
            let mut seen = Vec::new();
            while from < s.local_slot_count() {
                let mut piece: Vec<(u16, Vec<u8>)> = Vec::new();
                let next = s.for_each_entry_from(0, 0, from, max, |slot, e| {
                    piece.push((slot, e.key().to_vec()))
                });
                assert!(next > from, "a piece moves on");
                // A piece ends after the first table that reaches `max`: without its last
                // table it holds fewer.
                if next < s.local_slot_count() {
                    let last = piece.last().expect("a piece that stops holds keys").0;
                    let before_last = piece.iter().filter(|(slot, _)| *slot != last).count();
                    assert!(piece.len() >= max && before_last < max, "max {max}");
                }
                seen.extend(piece.into_iter().map(|(_, k)| k));
                from = next;
                pieces += 1;
            }
            let unique: std::collections::BTreeSet<_> = seen.iter().cloned().collect();
            assert_eq!(seen.len(), unique.len(), "max {max}: a key twice");
            assert_eq!(unique, written, "max {max}");
            if max == usize::MAX {
                assert_eq!(pieces, 1);
            } else if max == 1 {
                assert!(pieces > 16, "{pieces}");
            }
        }
    }

    #[test]
    fn strings_from_the_stream_apply_in_order_and_in_place() {
        use crate::shard::StringWrite;
        let ks = Keyspace::new(1, 1, 1);
        let mut s = ks.lock(0);
        let slot = key_slot(b"k");
        let w = |value: &'static [u8], expire_ms, version| StringWrite {
            key: b"k",
            value,
            expire_ms,
            version,
        };
        assert!(s.apply_string_in_order(0, slot, w(b"aaaa", Some(400), 10), 0));
        let block = s.peek(0, slot, b"k", 0).unwrap().block_addr();
        // The same version again (a second write of one command) applies; an older one does not.
        assert!(s.apply_string_in_order(0, slot, w(b"bbbb", Some(500), 10), 0));
        assert!(!s.apply_string_in_order(0, slot, w(b"cccc", None, 9), 0));
        let e = s.peek(0, slot, b"k", 0).unwrap();
        assert_eq!(
            (e.string(), e.expire_ms(), e.version()),
            (Some(&b"bbbb"[..]), Some(500), 10)
        );
        assert_eq!(e.block_addr(), block, "rewritten where it was");
        s.check_invariants();
        // A longer value takes a new block; the accounting follows.
        assert!(s.apply_string_in_order(0, slot, w(&[b'x'; 200], None, 11), 0));
        assert_eq!(
            s.peek(0, slot, b"k", 0).unwrap().string(),
            Some(&[b'x'; 200][..])
        );
        s.check_invariants();
    }

    #[test]
    fn last_writer_wins_whatever_the_arrival_order() {
        let ks = Keyspace::new(1, 1, 1);
        let mut s = ks.lock(0);
        let slot = key_slot(b"k");
        assert!(s.apply_put(0, slot, Entry::new_string(b"k", b"new", None, 20), 0));
        assert!(!s.apply_put(0, slot, Entry::new_string(b"k", b"old", None, 10), 0));
        assert_eq!(
            s.peek(0, slot, b"k", 0).unwrap().string(),
            Some(&b"new"[..])
        );
        assert!(
            !s.apply_del(0, slot, b"k", 15),
            "a delete older than the value loses"
        );
        assert!(s.apply_del(0, slot, b"k", 25));
        assert!(s.peek(0, slot, b"k", 0).is_none());
        s.check_invariants();
    }

    #[test]
    fn flush_keeps_keys_written_after_it() {
        let ks = Keyspace::new(1, 1, 1);
        let mut s = ks.lock(0);
        for (k, v) in [(&b"a"[..], 5u64), (b"b", 50), (b"c", 7)] {
            s.apply_put(
                0,
                key_slot(k),
                Entry::new_string(k, b"x", Some(1_000_000), v),
                0,
            );
        }
        assert_eq!(s.apply_flush(0, 10), 2);
        assert_eq!(s.db_len(0), 1);
        let mut seen = Vec::new();
        s.for_each_entry(0, 0, |_, e| seen.push(e.key().to_vec()));
        assert_eq!(seen, vec![b"b".to_vec()]);
        s.check_invariants();
    }

    #[test]
    fn the_prefetching_walk_hands_out_every_entry_once_in_table_order() {
        use super::WALK_PREFETCH_AHEAD;
        for n in [
            0,
            1,
            WALK_PREFETCH_AHEAD - 1,
            WALK_PREFETCH_AHEAD,
            WALK_PREFETCH_AHEAD + 1,
            1000,
        ] {
            let ks = Keyspace::new(1, 1, 1);
            let mut s = ks.lock(0);
            for i in 0..n {
                let k = format!("key:{i}");
                let slot = key_slot(k.as_bytes());
                s.apply_put(0, slot, Entry::new_string(k.as_bytes(), b"v", None, 1), 0);
            }
            // The order of the tables themselves, slot by slot.
            let mut expected = Vec::new();
            if let Some(d) = s.dbs[0].as_ref() {
                for (local, table) in d.slots.iter().enumerate() {
                    let slot = s.global_slot(0, local as u32);
                    expected.extend(table.iter().map(|e| (slot, e.key().to_vec())));
                }
            }
            let mut seen = Vec::new();
            s.for_each_entry(0, 0, |slot, e| seen.push((slot, e.key().to_vec())));
            assert_eq!(seen.len(), n, "{n} entries");
            assert_eq!(seen, expected, "{n} entries, in the tables' order");
        }
    }
}

#[cfg(test)]
mod queue_tests {
    use crate::delta::Pending;
    use crate::entry::Entry;
    use crate::shard::Keyspace;
    use crate::slot::key_slot;
    use crate::write_log;

    fn touched() -> Vec<usize> {
        let mut v = Vec::new();
        write_log::drain_touched(|i| v.push(i));
        v
    }

    fn keys(p: &[Pending]) -> Vec<&[u8]> {
        p.iter().map(|p| p.db_key().1).collect()
    }

    #[test]
    fn writes_deletions_and_expiry_are_queued_reads_are_not() {
        let _ = touched();
        let ks = Keyspace::new(1, 1, 1);
        // A keyspace that does not record queues nothing.
        ks.lock(0)
            .insert(0, key_slot(b"z"), Entry::new_string(b"z", b"1", None, 1), 0);
        assert!(touched().is_empty());
        assert!(ks.lock(0).take_pending().is_empty());
        ks.set_recording(true);
        assert!(ks.recording());
        let mut s = ks.lock(0);
        let (a, b) = (key_slot(b"a"), key_slot(b"b"));
        s.insert(0, a, Entry::new_string(b"a", b"1", None, 1), 0);
        s.insert(0, b, Entry::new_string(b"b", b"1", Some(5), 2), 0);
        assert!(s.lookup(0, a, b"a", 0, true).is_some()); // a read
        s.lookup(0, a, b"a", 0, true).unwrap().set_version(3); // a write through EntryMut
        assert!(s.lookup(0, b, b"b", 10, true).is_none()); // lazily expired
        s.remove(0, a, b"a");
        let q = s.take_pending();
        assert_eq!(keys(&q), vec![&b"a"[..], b"b", b"a", b"b", b"a"]);
        assert!(q.iter().all(|p| matches!(p, Pending::Key { .. })));
        assert_eq!(touched(), vec![0]);
    }

    #[test]
    fn a_write_that_notes_its_changes_queues_a_delta() {
        let ks = Keyspace::new(1, 1, 1);
        ks.set_recording(true);
        let mut s = ks.lock(0);
        let slot = key_slot(b"k");
        s.insert(0, slot, Entry::new_string(b"k", b"abc", None, 1), 0);
        let _ = s.take_pending();
        let mut e = s.lookup(0, slot, b"k", 0, true).unwrap();
        let mut ops = e.ops();
        ops.append(b"d");
        e.make_raw_string().unwrap().push(b'd');
        e.note(ops);
        e.set_version(7);
        drop(e);
        let q = s.take_pending();
        let [Pending::Delta { base, new, .. }] = q.as_slice() else {
            panic!("one delta: {q:?}")
        };
        assert_eq!((*base, *new), (1, 7));
        // Changing the expiry without noting it sends the whole value.
        let mut e = s.lookup(0, slot, b"k", 0, true).unwrap();
        let mut ops = e.ops();
        ops.append(b"e");
        e.make_raw_string().unwrap().push(b'e');
        e.note(ops);
        e.set_expire_ms(Some(100));
        e.set_version(8);
        drop(e);
        assert!(matches!(s.take_pending().as_slice(), [Pending::Key { .. }]));
        let _ = touched();
    }

    #[test]
    fn a_delta_applies_only_to_its_base_version() {
        let ks = Keyspace::new(1, 1, 1);
        let limits = crate::types::EncodingLimits::default();
        let mut s = ks.lock(0);
        let slot = key_slot(b"k");
        s.insert(0, slot, Entry::new_string(b"k", b"ab", None, 5), 0);
        let mut ops = crate::delta::Ops::new(true);
        ops.append(b"c");
        let ops = ops.into_bytes();
        assert_eq!(s.apply_delta(0, slot, b"k", 5, 6, &ops, &limits), Ok(true));
        assert_eq!(
            s.peek_any(0, slot, b"k").unwrap().string(),
            Some(&b"abc"[..])
        );
        assert_eq!(
            s.apply_delta(0, slot, b"k", 5, 6, &ops, &limits),
            Ok(false),
            "already there"
        );
        assert_eq!(
            s.apply_delta(0, slot, b"k", 7, 8, &ops, &limits),
            Err(crate::delta::DeltaError::Diverged(Some(6)))
        );
        assert_eq!(
            s.apply_delta(0, slot, b"x", 1, 2, &ops, &limits),
            Err(crate::delta::DeltaError::Diverged(None))
        );
        s.check_invariants();
    }
}
