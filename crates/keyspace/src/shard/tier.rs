//! The keyspace's side of the disk tier (`tiered-storage`): a victim the eviction policy picked
//! moves its value to the tier instead of being dropped, keeping its key, type, version, expiry and
//! an 8-byte [`ColdHandle`] in memory; a command that reads it has the value loaded and put back
//! ([`Shard::promote`]) first.
//!
//! No I/O here: the tier is a [`ColdStore`] the server implements (on foyer). Putting a value
//! and forgetting one must not wait for the disk (they queue); loading happens in the server, off
//! the shard lock.
//!
//! What stays in memory: keys, metadata, every value the tier does not accept (smaller than
//! `tiered-storage-min-value-bytes` once encoded, or larger than its write buffer), and hashes with field TTLs (their field-expiry index needs the
//! value); such victims are evicted as without the tier.

use std::hash::BuildHasher;
use std::sync::Arc;

use super::{Candidate, Shard};
use crate::codec;
use crate::entry::{ColdHandle, Entry, Object, Payload, ValueRef};
use crate::notify;

/// The disk tier, as the keyspace sees it.
pub trait ColdStore: Send + Sync + std::fmt::Debug {
    /// Stores a value encoded by [`codec::encode_value`] under `id`. Must not block on I/O.
    fn put(&self, id: u64, encoded: Vec<u8>);
    /// The value under `id` is no longer referenced (its key was written, deleted, expired or
    /// its value loaded back); the tier may drop it.
    fn forget(&self, id: u64);
    /// Whether an encoded value of this size goes to the tier now, and if so the room it takes
    /// there in the store's own units (at most [`COLD_UNITS_MAX`]); the keyspace keeps them in
    /// the value's id ([`cold_id_units`]) so the store can count its live bytes without a table.
    /// A value refused (too small or large, or no room left) is evicted as without a tier.
    fn admit(&self, encoded_bytes: usize) -> Option<u64>;
    /// Reads a value back, waiting for the disk; `None` if the tier no longer has it. Only for
    /// walks of the keyspace that cannot pause (snapshots, digests, slot migration batches):
    /// requests load off-lock instead.
    fn load_blocking(&self, id: u64) -> Option<Vec<u8>>;
    /// Reads a value back without blocking the caller's thread; `None` if the tier no longer has
    /// it. The caller holds no shard lock while it waits.
    fn load(&self, id: u64) -> LoadFuture;
    /// The value under `id` was put back in memory ([`Shard::promote`]): counted, then forgotten.
    fn promoted(&self, id: u64);
    /// Counters for `INFO tiered`.
    fn info(&self) -> TierInfo;
}

/// A pending read of the tier.
pub type LoadFuture =
    std::pin::Pin<Box<dyn std::future::Future<Output = Option<Vec<u8>>> + Send + 'static>>;

/// The tier's counters (`INFO tiered`, metrics).
#[derive(Debug, Clone, Copy, Default)]
pub struct TierInfo {
    /// Values written to the tier, and their encoded bytes.
    pub writes: u64,
    pub bytes_written: u64,
    /// Reads of the tier, and those that found nothing (the tier had dropped the value).
    pub reads: u64,
    pub read_misses: u64,
    /// Values put back in memory.
    pub promotions: u64,
    /// Bytes of disk the tier may use.
    pub capacity_bytes: u64,
    /// Bytes of disk the values now on the tier take (the store's own footprint, page-rounded).
    pub live_bytes: u64,
    /// Victims the tier turned away because it was full (or its write queue was): their keys
    /// were evicted, as without a tier.
    pub dropped_full: u64,
    pub dropped_busy: u64,
    /// Bytes of values put but not yet on disk (held in memory meanwhile).
    pub pending_bytes: u64,
}

/// A shard's tier state.
#[derive(Debug)]
pub(super) struct ShardTier {
    pub(super) store: Arc<dyn ColdStore>,
    /// Per-shard counter; ids are `counter << 22 | units << 14 | shard index`, unique across
    /// shards (34 bits of counter: 1.7e10 values moved per shard).
    next: u64,
    /// Entries of this shard whose value is on the tier.
    pub(super) cold_keys: usize,
}

/// Bits of a handle id that name the shard (up to 16384 shards).
const SHARD_BITS: u32 = 14;
/// Bits of a handle id that hold the value's size in the store's units ([`ColdStore::admit`]).
const UNITS_BITS: u32 = 8;
/// Largest size in units a store may give a value.
pub const COLD_UNITS_MAX: u64 = (1 << UNITS_BITS) - 1;

/// The size in the store's units of the value a handle id names (what [`ColdStore::admit`] said
/// when it went to the tier). Ids are `counter << 22 | units << 14 | shard index`.
pub fn cold_id_units(id: u64) -> u64 {
    (id >> SHARD_BITS) & COLD_UNITS_MAX
}

/// What [`Shard::promote`] found.
#[derive(Debug, PartialEq, Eq)]
pub enum Promoted {
    /// The value is in memory again.
    Done,
    /// The key is gone or was written since (a write in between wins): nothing to do.
    Stale,
    /// The tier returned bytes that do not decode: the key was removed and counted as evicted.
    Corrupt,
}

impl ShardTier {
    pub(super) fn new(store: Arc<dyn ColdStore>) -> Self {
        ShardTier {
            store,
            next: 0,
            cold_keys: 0,
        }
    }
}

impl Shard {
    /// Turns the disk tier on (`Some`) or off for this shard. Off, cold values already on the tier
    /// stay readable through the store the caller keeps; new victims are dropped.
    pub fn set_tier(&mut self, store: Option<Arc<dyn ColdStore>>) {
        let cold_keys = self.tier.as_ref().map_or(0, |t| t.cold_keys);
        self.tier = store.map(|s| {
            let mut t = Box::new(ShardTier::new(s));
            t.cold_keys = cold_keys;
            t
        });
    }

    /// Entries of this shard whose value is on the disk tier.
    pub fn cold_keys(&self) -> usize {
        self.tier.as_ref().map_or(0, |t| t.cold_keys)
    }

    /// Moves an eviction candidate's value to the tier; returns the bytes freed, or `None` when it
    /// does not go there (no tier, already cold, too small, a hash with field TTLs).
    pub(super) fn move_to_tier(&mut self, c: &Candidate) -> Option<usize> {
        let tier = self.tier.as_mut()?;
        let d = self.dbs[c.db].as_mut()?;
        let hasher = &self.hasher;
        let e = d.slots[c.local].find_mut(c.hash, |e| hasher.hash_one(e.key()) == c.hash)?;
        let mut encoded = Vec::new();
        match e.value() {
            ValueRef::Cold(_) => return None,
            ValueRef::Obj(Object::Hash(h)) if h.field_ttl_count() > 0 => return None,
            v => codec::encode_value(v, &mut encoded),
        }
        let units = tier.store.admit(encoded.len())?.min(COLD_UNITS_MAX);
        let id =
            (tier.next << (SHARD_BITS + UNITS_BITS)) | (units << SHARD_BITS) | self.index as u64;
        tier.next += 1;
        let handle = ColdHandle::new(id, e.kind(), e.encoding());
        tier.store.put(id, encoded);
        let before = e.mem_bytes();
        e.set_payload(Payload::Cold(handle));
        let after = e.mem_bytes();
        tier.cold_keys += 1;
        self.mem_bytes = self.mem_bytes + after - before;
        Some(before.saturating_sub(after))
    }

    /// The tier no longer needs `entry`'s value (the entry left the keyspace or was replaced).
    pub(super) fn forget_cold(&mut self, entry: &Entry) {
        if let (Some(h), Some(t)) = (entry.cold(), self.tier.as_mut()) {
            t.cold_keys -= 1;
            t.store.forget(h.id);
        }
    }

    /// The cold handle of a key, if its value is on the tier (expired keys included: the command
    /// that runs after the fetch decides about expiry).
    pub fn cold_handle(&self, db: usize, slot: u16, key: &[u8]) -> Option<ColdHandle> {
        let hash = self.hash(key);
        let local = self.local(slot) as usize;
        let d = self.dbs.get(db)?.as_ref()?;
        d.slots[local].find(hash, |e| e.key() == key)?.cold()
    }

    /// Puts a value loaded from the tier back into its entry, if the entry still holds `handle`
    /// (a write in between wins). Not a write: the version, the watch table and the replication
    /// stream are untouched.
    #[allow(clippy::too_many_arguments)]
    pub fn promote(
        &mut self,
        db: usize,
        slot: u16,
        key: &[u8],
        handle: ColdHandle,
        encoded: &[u8],
        limits: &crate::EncodingLimits,
        now_ms: u64,
    ) -> Promoted {
        // Read now: it is the most recently used key, not the next victim.
        let access = self.initial_access(now_ms);
        let hash = self.hash(key);
        let local = self.local(slot);
        let Some(d) = self.dbs.get_mut(db).and_then(|d| d.as_mut()) else {
            return Promoted::Stale;
        };
        let Some(e) = d.slots[local as usize].find_mut(hash, |e| e.key() == key) else {
            return Promoted::Stale;
        };
        if e.cold() != Some(handle) {
            return Promoted::Stale;
        }
        let Some(payload) = codec::decode_value(encoded, limits) else {
            self.drop_lost(db, slot, key, handle);
            return Promoted::Corrupt;
        };
        let before = e.mem_bytes();
        e.set_payload(payload);
        e.set_access(access);
        let after = e.mem_bytes();
        self.mem_bytes = self.mem_bytes + after - before;
        if let Some(t) = self.tier.as_mut() {
            t.cold_keys -= 1;
            t.store.promoted(handle.id);
        }
        Promoted::Done
    }

    /// The tier no longer has the value of a key that still holds `handle` (the tier evicted it
    /// when full): the key is removed and counted as evicted, as if evicted from memory. Returns
    /// whether it was removed.
    pub fn drop_lost(&mut self, db: usize, slot: u16, key: &[u8], handle: ColdHandle) -> bool {
        if self.cold_handle(db, slot, key) != Some(handle) {
            return false;
        }
        if self.remove(db, slot, key).is_none() {
            return false;
        }
        self.stats.evicted_keys += 1;
        self.note(notify::EVICTED, "evicted", db, key);
        true
    }
}

impl super::Keyspace {
    /// Turns the disk tier on in every shard (once, at start-up: cold values need their store for
    /// as long as they exist).
    pub fn set_tier(&self, store: Arc<dyn ColdStore>) {
        self.tiered
            .store(true, std::sync::atomic::Ordering::Release);
        *self.cold_store.lock() = Some(store.clone());
        for i in 0..self.shards.len() {
            self.lock(i).set_tier(Some(store.clone()));
        }
    }

    /// A cold value's encoding, read from the tier waiting for the disk (see
    /// [`ColdStore::load_blocking`]); `None` if the tier no longer has it.
    pub fn load_cold_blocking(&self, h: ColdHandle) -> Option<Vec<u8>> {
        let store = self.cold_store.lock().clone()?;
        store.load_blocking(h.id)
    }

    /// Appends the encoding of an entry's value ([`codec::encode_value`]), reading a cold one
    /// from the tier; `false` (nothing appended) if the tier lost it.
    pub fn encode_entry_value(&self, e: &Entry, out: &mut Vec<u8>) -> bool {
        match e.value() {
            ValueRef::Cold(h) => match self.load_cold_blocking(h) {
                Some(v) => {
                    out.extend_from_slice(&v);
                    true
                }
                None => false,
            },
            v => {
                codec::encode_value(v, out);
                true
            }
        }
    }

    /// Whether the disk tier was ever on (so some values may be cold). One atomic load: requests
    /// look for cold keys only then.
    pub fn tiered(&self) -> bool {
        self.tiered.load(std::sync::atomic::Ordering::Acquire)
    }

    /// The disk tier's store, if it is on.
    pub fn cold_store(&self) -> Option<Arc<dyn ColdStore>> {
        self.cold_store.lock().clone()
    }

    /// Keys whose value is on the disk tier (locks each shard in turn).
    pub fn cold_keys(&self) -> usize {
        (0..self.shards.len())
            .map(|i| self.lock(i).cold_keys())
            .sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Entry, EvictConfig, Keyspace, Policy, key_slot};
    use std::collections::HashMap;
    use std::sync::Mutex;

    /// The tier as a map: what the server's foyer store does, without a disk.
    #[derive(Debug, Default)]
    struct MapStore(Mutex<HashMap<u64, Vec<u8>>>);

    impl ColdStore for MapStore {
        fn put(&self, id: u64, encoded: Vec<u8>) {
            self.0.lock().unwrap().insert(id, encoded);
        }
        fn forget(&self, id: u64) {
            self.0.lock().unwrap().remove(&id);
        }
        fn admit(&self, n: usize) -> Option<u64> {
            (n >= 64).then_some(n as u64 / 64)
        }
        fn load_blocking(&self, id: u64) -> Option<Vec<u8>> {
            self.0.lock().unwrap().get(&id).cloned()
        }
        fn load(&self, id: u64) -> LoadFuture {
            let v = self.load_blocking(id);
            Box::pin(async move { v })
        }
        fn promoted(&self, id: u64) {
            self.forget(id);
        }
        fn info(&self) -> TierInfo {
            TierInfo::default()
        }
    }

    #[test]
    fn victims_go_cold_promote_back_and_writes_forget_their_handle() {
        let ks = Keyspace::new(1, 4, 1);
        let store = Arc::new(MapStore::default());
        ks.set_tier(store.clone());
        ks.set_evict_config(
            EvictConfig {
                policy: Policy::AllKeysLru,
                ..EvictConfig::default()
            },
            100,
        );
        let value = |i: usize| format!("{i:04}-").repeat(40).into_bytes();
        for i in 0..100 {
            let k = format!("k{i}");
            let slot = key_slot(k.as_bytes());
            let mut g = ks.lock(ks.shard_of(slot));
            g.insert(
                0,
                slot,
                Entry::new_string(k.as_bytes(), &value(i), None, i as u64 + 1),
                0,
            );
        }
        let before = ks.mem_bytes();
        // Evict 60 victims: every one goes cold (values of 200 bytes), no key is dropped.
        let mut moved = 0;
        for round in 0..60 {
            let s = round % 4;
            let mut g = ks.lock(s);
            if let Some(c) = g.best_candidate(0) {
                let ev = g.evict_candidate(&c).expect("victim");
                assert!(ev.key.is_empty(), "moved, not dropped");
                moved += 1;
            }
        }
        assert_eq!(ks.cold_keys(), moved);
        assert_eq!(store.0.lock().unwrap().len(), moved);
        assert!(ks.mem_bytes() < before);
        assert_eq!(ks.db_size(0).0, 100);
        for i in 0..4 {
            ks.lock(i).check_invariants();
        }
        // Promote every cold key back, or see it written over.
        let limits = crate::EncodingLimits::default();
        for i in 0..100 {
            let k = format!("k{i}");
            let slot = key_slot(k.as_bytes());
            let mut g = ks.lock(ks.shard_of(slot));
            let Some(h) = g.cold_handle(0, slot, k.as_bytes()) else {
                continue;
            };
            if i % 2 == 0 {
                let v = store.load_blocking(h.id).unwrap();
                // The id carries the units the store gave the value.
                assert_eq!(cold_id_units(h.id), v.len() as u64 / 64);
                assert_eq!(
                    g.promote(0, slot, k.as_bytes(), h, &v, &limits, 0),
                    Promoted::Done
                );
                let e = g.peek(0, slot, k.as_bytes(), 0).unwrap();
                assert_eq!(e.string(), Some(&value(i)[..]));
                assert_eq!(e.version(), i as u64 + 1);
                // A stale handle does nothing.
                assert_eq!(
                    g.promote(0, slot, k.as_bytes(), h, &v, &limits, 0),
                    Promoted::Stale
                );
            } else {
                let e = Entry::new_string(k.as_bytes(), b"new", None, 1000);
                g.insert(0, slot, e, 0);
            }
        }
        assert_eq!(ks.cold_keys(), 0);
        assert!(store.0.lock().unwrap().is_empty(), "every handle forgotten");
        for i in 0..4 {
            ks.lock(i).check_invariants();
        }
    }
}
