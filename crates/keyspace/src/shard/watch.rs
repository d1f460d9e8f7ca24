//! Keys that clients WATCH (optimistic transactions), per shard.
//!
//! What `EXEC` must detect is "this key was written since `WATCH`". Versions answer it for a key that
//! existed at `WATCH` time: every write stamps a newer version, a deletion makes the key absent, so
//! comparing the live entry's version with the one seen at `WATCH` is exact. They cannot answer it
//! for a key that was absent at `WATCH` and was created and deleted again before `EXEC` (Redis aborts
//! then), nor for `SWAPDB` twice (every entry back where it was, versions unchanged). For those, the
//! shard keeps a small table of the watched `(db, key)` pairs, each with a touch counter that grows
//! when the key is created or replaced (every creation goes through [`Shard::insert`]) and when a
//! `SWAPDB` moves it (present in either database). The table is empty unless someone watches, and
//! the write path pays one emptiness check for it.
//!
//! The caller (the transaction layer) records, per watched key, the version if the key was live and
//! the touch counter; `EXEC` aborts if either changed, or if a key live at `WATCH` is not live now
//! (deleted, flushed or expired). Deleting a key that was already logically absent (an expired entry
//! removed, `FLUSHALL` of an absent key) is no change, as in Redis 7.0.

use std::collections::HashMap;

use super::Shard;
use crate::slot::key_slot;

/// The watched keys of one shard.
#[derive(Debug, Default)]
pub(crate) struct WatchTable {
    keys: HashMap<Box<[u8]>, Vec<WatchCell>>,
}

/// One watched `(db, key)`: how many watches hold it, and how often it was touched since the first.
#[derive(Debug)]
struct WatchCell {
    db: usize,
    refs: u32,
    touches: u64,
}

impl WatchTable {
    pub(crate) fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    /// Counts a creation or replacement of `key` in `db`, if it is watched.
    pub(crate) fn touch(&mut self, db: usize, key: &[u8]) {
        if let Some(cells) = self.keys.get_mut(key) {
            for c in cells.iter_mut().filter(|c| c.db == db) {
                c.touches += 1;
            }
        }
    }
}

impl Shard {
    /// Registers one watch of `key` in `db` and returns its touch counter. Each call must be paired
    /// with one [`Shard::unwatch_key`].
    pub fn watch_key(&mut self, db: usize, key: &[u8]) -> u64 {
        let cells = self.watch.keys.entry(key.into()).or_default();
        match cells.iter_mut().find(|c| c.db == db) {
            Some(c) => {
                c.refs += 1;
                c.touches
            }
            None => {
                cells.push(WatchCell {
                    db,
                    refs: 1,
                    touches: 0,
                });
                0
            }
        }
    }

    /// Drops one watch of `key` in `db`; the entry goes when the last watch does.
    pub fn unwatch_key(&mut self, db: usize, key: &[u8]) {
        let Some(cells) = self.watch.keys.get_mut(key) else {
            debug_assert!(false, "unwatch of a key that is not watched");
            return;
        };
        if let Some(i) = cells.iter().position(|c| c.db == db) {
            cells[i].refs -= 1;
            if cells[i].refs == 0 {
                cells.swap_remove(i);
            }
        }
        if cells.is_empty() {
            self.watch.keys.remove(key);
        }
    }

    /// The touch counter of a watched key (see [`Shard::watch_key`]).
    pub fn watch_touches(&self, db: usize, key: &[u8]) -> u64 {
        self.watch
            .keys
            .get(key)
            .and_then(|cells| cells.iter().find(|c| c.db == db))
            .map_or(0, |c| c.touches)
    }

    /// Number of distinct watched `(db, key)` pairs in this shard.
    pub fn watched_keys(&self) -> usize {
        self.watch.keys.values().map(|c| c.len()).sum()
    }

    /// `SWAPDB a b` touches every watched key of `a` or `b` that is present in either (Redis's
    /// `touchAllWatchedKeysInDb`). Called before the swap.
    pub(super) fn watch_on_swap(&mut self, a: usize, b: usize) {
        let mut touched = Vec::new();
        for (key, cells) in &self.watch.keys {
            let slot = key_slot(key);
            let present =
                self.peek_any(a, slot, key).is_some() || self.peek_any(b, slot, key).is_some();
            if present {
                for (i, c) in cells.iter().enumerate() {
                    if c.db == a || c.db == b {
                        touched.push((key.clone(), i));
                    }
                }
            }
        }
        for (key, i) in touched {
            if let Some(c) = self.watch.keys.get_mut(&key).and_then(|v| v.get_mut(i)) {
                c.touches += 1;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use crate::entry::Entry;
    use crate::shard::Keyspace;
    use crate::slot::key_slot;

    fn put(s: &mut super::Shard, db: usize, key: &[u8], version: u64) {
        s.insert(
            db,
            key_slot(key),
            Entry::new_string(key, b"v", None, version),
            0,
        );
    }

    #[test]
    fn creation_and_replacement_touch_a_watched_key_only() {
        let ks = Keyspace::new(2, 1, 1);
        let mut s = ks.lock(0);
        assert_eq!(s.watch_key(0, b"k"), 0);
        put(&mut s, 0, b"other", 1);
        put(&mut s, 1, b"k", 2);
        assert_eq!(s.watch_touches(0, b"k"), 0, "other key, other db");
        put(&mut s, 0, b"k", 3);
        assert_eq!(s.watch_touches(0, b"k"), 1);
        // Deleting it again does not undo the touch: created-then-deleted is a change.
        s.remove(0, key_slot(b"k"), b"k");
        assert_eq!(s.watch_touches(0, b"k"), 1);
        put(&mut s, 0, b"k", 4);
        assert_eq!(s.watch_touches(0, b"k"), 2);
    }

    #[test]
    fn watches_are_counted_and_the_table_empties() {
        let ks = Keyspace::new(1, 1, 1);
        let mut s = ks.lock(0);
        s.watch_key(0, b"k");
        put(&mut s, 0, b"k", 1);
        assert_eq!(
            s.watch_key(0, b"k"),
            1,
            "a second watch sees the current counter"
        );
        assert_eq!(s.watched_keys(), 1);
        s.unwatch_key(0, b"k");
        assert_eq!(s.watched_keys(), 1);
        s.unwatch_key(0, b"k");
        assert_eq!(s.watched_keys(), 0);
        assert!(s.watch.is_empty());
        // Unwatched: writes cost nothing and leave no trace.
        put(&mut s, 0, b"k", 2);
        assert_eq!(s.watch_key(0, b"k"), 0);
        s.unwatch_key(0, b"k");
    }

    #[test]
    fn swapdb_touches_keys_present_in_either_database() {
        let ks = Keyspace::new(3, 1, 1);
        let mut s = ks.lock(0);
        put(&mut s, 1, b"in1", 1);
        s.watch_key(0, b"in1");
        s.watch_key(0, b"nowhere");
        s.watch_key(2, b"in1");
        s.swap_db(0, 1);
        assert_eq!(s.watch_touches(0, b"in1"), 1);
        assert_eq!(s.watch_touches(0, b"nowhere"), 0);
        assert_eq!(s.watch_touches(2, b"in1"), 0, "db 2 was not swapped");
    }
}
