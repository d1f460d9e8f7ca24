//! Shards, databases and per-slot tables; lookup with lazy expiry; the expiry index and the active
//! expire cycle; memory accounting; eviction by sampling.
//!
//! Layout: the 16384 slots are spread over `N` shards (`slot % N`), each behind its own mutex, so
//! connections on different threads rarely contend. Inside a shard, every database that holds keys has
//! one small hash table per slot the shard owns. Per-slot tables make slot-level work (digest, listing,
//! counting, resharding, SCAN cursors) proportional to the slot, not to the keyspace.
//!
//! Invariants (checked by [`Shard::check_invariants`] in tests):
//! - `mem_bytes` equals the sum of `Entry::mem_bytes` over all entries of the shard;
//! - each database's `keys` and `volatile` counts equal what its tables hold;
//! - every key with an expiry has an item in its database's expiry heap with that deadline (stale
//!   items for changed or deleted keys are allowed and skipped; they are bounded by compaction).

use parking_lot::{Mutex, MutexGuard};
use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::hash::BuildHasher;
use std::mem::ManuallyDrop;

use hashbrown::HashTable;

use crate::delta::{Ops, Pending};
use crate::entry::{Entry, Object, ValueRef};
use crate::evict::{self, LfuParams, Policy, Rng, Sketch};
use crate::hlc::Hlc;
use crate::notify;
use crate::prefetch::Hints;
use crate::prior::{self, How, Prior, Was};
use crate::slot::SLOTS;
use crate::sticky;

mod apply;
pub mod tier;
mod track;
mod watch;

pub use track::Tracked;

type Hasher = foldhash::fast::FixedState;

/// Eviction samples whose loads are issued together (see [`Shard::sample_candidates`]).
const SAMPLE_BATCH_MAX: usize = 16;
/// Buckets one sampling walk looks at per key it wants, at most (a sparse table yields fewer).
const SAMPLE_WALK_PER_KEY: usize = 8;

/// Random table probes before falling back to a scan when sampling a sparse database.
const RANDOM_PROBES: usize = 64;

/// Counters kept per shard (under its lock) and summed for `INFO`.
#[derive(Debug, Default, Clone, Copy)]
pub struct ShardStats {
    pub expired_keys: u64,
    pub evicted_keys: u64,
    pub keyspace_hits: u64,
    pub keyspace_misses: u64,
    /// Hash fields deleted because their TTL passed (INFO `expired_subkeys`, Redis 7.4).
    pub expired_fields: u64,
}

/// An item of the expiry heap: deadline, key hash and local slot index.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
struct ExpiryItem {
    at_ms: u64,
    hash: u64,
    local: u32,
}

/// One database's part of one shard.
#[derive(Debug)]
pub struct DbShard {
    slots: Box<[HashTable<Entry>]>,
    keys: usize,
    volatile: usize,
    /// Sum of the volatile keys' deadlines (ms), for their average TTL (INFO `avg_ttl`).
    deadline_sum_ms: u128,
    expiry: BinaryHeap<Reverse<ExpiryItem>>,
    /// Hashes with field TTLs, by their earliest field deadline, for active field expiry. Like
    /// `expiry`, items go stale (the hash's deadlines changed, the key went) and are skipped: an
    /// item is live when the hash's `indexed_at` names its deadline (see `index_field_ttls`).
    field_expiry: BinaryHeap<Reverse<ExpiryItem>>,
    /// Items `field_expiry` held after its last rebuild: it is rebuilt once it holds twice as
    /// many (plus a margin), so a rebuild's walk is paid for by the pushes since the last one.
    field_expiry_rebuilt: usize,
}

impl DbShard {
    fn new(local_slots: usize) -> Self {
        DbShard {
            slots: (0..local_slots).map(|_| HashTable::new()).collect(),
            keys: 0,
            volatile: 0,
            deadline_sum_ms: 0,
            expiry: BinaryHeap::new(),
            field_expiry: BinaryHeap::new(),
            field_expiry_rebuilt: 0,
        }
    }

    fn table_bytes(&self) -> usize {
        self.slots.len() * std::mem::size_of::<HashTable<Entry>>()
    }

    /// Total of `Entry::mem_bytes` over the database part, computed from scratch.
    pub fn entries_mem_bytes(&self) -> usize {
        self.slots
            .iter()
            .flat_map(|t| t.iter())
            .map(|e| e.mem_bytes())
            .sum()
    }
}

/// Tables at least this large (in buckets' capacity) shrink once a quarter full or less.
const TABLE_SHRINK_CAPACITY_MIN: usize = 32;

/// Frees an emptied slot table and shrinks one that churn left mostly empty. hashbrown never
/// shrinks on removal, so without this every slot a churning cache ever touched keeps its buckets:
/// at `maxmemory 4mb` (about 2,000 keys over 16,384 slots) that was over 1 MB of empty tables.
/// A shrink rehashes `len` entries after at least `3 × len` removals, so its cost is amortised.
fn shrink_table(table: &mut HashTable<Entry>, hasher: &Hasher) {
    if table.is_empty() {
        if table.capacity() > 0 {
            *table = HashTable::new();
        }
    } else if table.capacity() >= TABLE_SHRINK_CAPACITY_MIN && table.len() * 4 <= table.capacity() {
        table.shrink_to(table.len(), |e| hasher.hash_one(e.key()));
    }
}

/// A mutable view of one entry that keeps the shard's accounting right: when dropped, it charges the
/// change of the entry's memory and indexes a changed deadline.
pub struct EntryMut<'a> {
    entry: &'a mut Entry,
    mem: &'a mut usize,
    volatile: &'a mut usize,
    deadline_sum_ms: &'a mut u128,
    expiry: &'a mut BinaryHeap<Reverse<ExpiryItem>>,
    field_expiry: &'a mut BinaryHeap<Reverse<ExpiryItem>>,
    mem_before: usize,
    /// The value was on the disk tier when the view was taken (its handle id).
    cold_before: Option<u64>,
    tier: Option<&'a mut tier::ShardTier>,
    expire_before: Option<u64>,
    version_before: u64,
    db: usize,
    hash: u64,
    local: u32,
    /// The shard records writes for the replication stream.
    recording: bool,
    /// The element-level changes noted through this view (`EntryMut::note`).
    ops: Ops,
    /// The shard's queue of changes for the replication stream, and its index.
    pending: &'a mut Vec<Pending>,
    /// The shard's priors, when it keeps them (active-active, see `prior.rs`).
    priors: Option<&'a mut Vec<Prior>>,
    shard_index: usize,
}

impl EntryMut<'_> {
    /// A recorder for the element-level changes of a write through this view; hand it back with
    /// [`EntryMut::note`]. Noting is a no-op when the shard does not record writes.
    pub fn ops(&self) -> Ops {
        Ops::new(self.recording)
    }

    /// Adds the changes noted in `ops` to this view's. When the view is dropped after a write that
    /// noted changes, the stream gets them instead of the whole value.
    pub fn note(&mut self, ops: Ops) {
        if self.ops.is_empty() {
            self.ops = ops;
        } else {
            self.ops.extend(ops);
        }
    }

    /// Deletes up to `max` fields of this hash whose TTL has passed (none if it is not a hash),
    /// noting each as an HDEL for the replication stream and stamping `version()` if any went.
    /// Returns how many. The caller deletes the key if the hash is left empty.
    pub fn expire_fields(
        &mut self,
        now_ms: u64,
        max: usize,
        version: impl FnOnce() -> u64,
    ) -> usize {
        let mut ops = self.ops();
        let Some(Object::Hash(h)) = self.entry.object_mut() else {
            return 0;
        };
        let n = h.remove_due_fields(now_ms, max, |f| ops.hdel(f));
        if n > 0 {
            self.note(ops);
            self.entry.set_version(version());
        }
        n
    }
}

/// Puts a hash with field TTLs in the field-expiry index when its earliest deadline is earlier
/// than the one the index holds for it (a later one is found when the earlier item pops).
fn index_field_ttls(
    entry: &mut Entry,
    heap: &mut BinaryHeap<Reverse<ExpiryItem>>,
    hash: u64,
    local: u32,
) {
    let Some(Object::Hash(h)) = entry.object_mut() else {
        return;
    };
    if let Some(at_ms) = h.min_field_expire()
        && h.indexed_at().is_none_or(|i| at_ms < i)
    {
        heap.push(Reverse(ExpiryItem { at_ms, hash, local }));
        h.set_indexed_at(Some(at_ms));
    }
}

impl std::ops::Deref for EntryMut<'_> {
    type Target = Entry;
    fn deref(&self) -> &Entry {
        self.entry
    }
}

impl std::ops::DerefMut for EntryMut<'_> {
    fn deref_mut(&mut self) -> &mut Entry {
        self.entry
    }
}

impl Drop for EntryMut<'_> {
    fn drop(&mut self) {
        if let Some(id) = self.cold_before
            && self.entry.cold().is_none_or(|h| h.id != id)
            && let Some(t) = self.tier.as_deref_mut()
        {
            // Written over through this view (a cold value is never changed in place).
            t.cold_keys -= 1;
            t.store.forget(id);
        }
        let after = self.entry.mem_bytes();
        if self.recording {
            // Every write sets the version, so a changed version means this view was used to
            // write. A delta is sent when the write noted its changes, did not change the expiry
            // behind their back, and is smaller than the value; otherwise the value is read back.
            let version = self.entry.version();
            let ops = std::mem::take(&mut self.ops);
            if let Some(priors) = self.priors.as_deref_mut()
                && (version != self.version_before || !ops.is_empty())
            {
                let was = Was {
                    version: self.version_before,
                    node: self.entry.merge_node(),
                    expire_ms: self.expire_before,
                };
                let ttl_only = ops.only_expiry();
                prior::note(
                    priors,
                    self.db,
                    self.entry.key(),
                    Some(was),
                    How::InPlace { ttl_only },
                );
            }
            let pending = if version != self.version_before {
                let expiry_noted =
                    self.entry.expire_ms() == self.expire_before || ops.sets_expire();
                if !ops.is_empty() && expiry_noted && ops.len() < after {
                    Some(Pending::Delta {
                        db: self.db,
                        key: self.entry.key().into(),
                        base: self.version_before,
                        new: version,
                        ops: ops.into_bytes(),
                    })
                } else {
                    Some(Pending::Key {
                        db: self.db,
                        key: self.entry.key().into(),
                    })
                }
            } else if !ops.is_empty() {
                // A second write of this key by the same command (same version): no version to
                // make a delta from, so the value is read back.
                Some(Pending::Key {
                    db: self.db,
                    key: self.entry.key().into(),
                })
            } else {
                None
            };
            if let Some(p) = pending {
                self.pending.push(p);
                crate::write_log::touch(self.shard_index);
            }
        }
        *self.mem = *self.mem - self.mem_before + after;
        index_field_ttls(self.entry, self.field_expiry, self.hash, self.local);
        let expire = self.entry.expire_ms();
        if expire != self.expire_before {
            match (self.expire_before, expire) {
                (None, Some(_)) => *self.volatile += 1,
                (Some(_), None) => *self.volatile -= 1,
                _ => {}
            }
            if let Some(before) = self.expire_before {
                *self.deadline_sum_ms -= u128::from(before);
            }
            if let Some(after) = expire {
                *self.deadline_sum_ms += u128::from(after);
            }
            if let Some(at_ms) = expire {
                self.expiry.push(Reverse(ExpiryItem {
                    at_ms,
                    hash: self.hash,
                    local: self.local,
                }));
            }
        }
    }
}

/// Eviction configuration shared by all shards.
#[derive(Debug, Clone, Copy)]
pub struct EvictConfig {
    pub policy: Policy,
    pub samples: usize,
    pub lfu: LfuParams,
    /// Whether eviction can happen at all (maxmemory set); access tracking is skipped otherwise.
    pub active: bool,
}

impl Default for EvictConfig {
    fn default() -> Self {
        EvictConfig {
            policy: Policy::AllKeysTinyLfu,
            samples: 5,
            lfu: LfuParams::default(),
            active: false,
        }
    }
}

/// A shard: the keys of the slots `slot % N == index`, in every database.
#[derive(Debug)]
pub struct Shard {
    dbs: Vec<Option<Box<DbShard>>>,
    hasher: Hasher,
    /// log2 of the shard count: `local = slot >> shift`.
    shift: u32,
    local_slots: usize,
    mem_bytes: usize,
    pub stats: ShardStats,
    evict: EvictConfig,
    sketch: Option<Sketch>,
    rng: Rng,
    /// Replicas do not delete expired keys themselves; the primary's deletions arrive instead.
    pub expire_on_access: bool,
    /// Keys clients WATCH (see `watch.rs`); empty unless a transaction is being prepared.
    watch: watch::WatchTable,
    /// Writes are queued in `pending` for the replication stream (see `Keyspace::set_recording`).
    recording: bool,
    /// Where a write may append its effect at once instead of queueing it (see `write_log`).
    sink: Option<std::sync::Arc<dyn crate::write_log::EffectSink>>,
    /// Changes not yet appended to the replication stream, in write order (see `write_log`).
    pending: Vec<Pending>,
    /// The encoded effects `Pending::Put` items of `pending` point into; emptied when the queue
    /// is given back drained (`recycle_pending`).
    effects: Vec<u8>,
    /// Active-active: what each key queued in `pending` was before its first write (see
    /// `prior.rs`); noted only while `keep_priors` and `recording` are on.
    priors: Vec<Prior>,
    keep_priors: bool,
    /// This shard's index in its keyspace.
    index: usize,
    /// The lock holder reads without updating access info (CLIENT NO-TOUCH); cleared when its
    /// guard drops.
    no_touch: bool,
    /// Keyspace notification classes on (`notify::*`), for the events the keyspace raises itself.
    notify: u32,
    /// Slots an atomic migration is exporting, and the keys written in them (see `track.rs`).
    track: Option<Box<track::Tracker>>,
    /// The disk tier, when on: victims' values move there (see `tier.rs`).
    tier: Option<Box<tier::ShardTier>>,
    /// Where database 0's tables are, for prefetches outside the lock (see `prefetch.rs`).
    hints: std::sync::Arc<Hints>,
}

/// A sampled eviction candidate: higher `score` is a better victim.
#[derive(Debug, Clone, Copy)]
pub struct Candidate {
    pub score: u64,
    /// Keys examined to find it (`maxmemory-samples`, fewer in a shard holding fewer keys).
    pub sampled: usize,
    db: usize,
    local: usize,
    hash: u64,
    /// Its value is on the disk tier already: evicting it drops the key (only when no sampled
    /// key had its value in memory).
    cold: bool,
}

impl Candidate {
    /// A placeholder filling the unused places of an [`crate::pool::EvictionPool`].
    pub(crate) const EMPTY: Candidate = Candidate {
        score: 0,
        sampled: 0,
        db: 0,
        local: 0,
        hash: 0,
        cold: false,
    };

    /// Whether two candidates of one shard name the same key.
    pub(crate) fn same_key(&self, other: &Candidate) -> bool {
        (self.db, self.local, self.hash) == (other.db, other.local, other.hash)
    }

    /// The candidate with the score it has now.
    pub(crate) fn rescored(self, score: u64) -> Candidate {
        Candidate { score, ..self }
    }

    #[cfg(test)]
    pub(crate) fn for_test(hash: u64, score: u64) -> Candidate {
        Candidate {
            score,
            sampled: 1,
            db: 0,
            local: 0,
            hash,
            cold: false,
        }
    }
}

/// What became of a pooled candidate offered for eviction ([`Shard::evict_pooled`]).
#[derive(Debug, PartialEq, Eq)]
pub enum Pooled {
    /// It was evicted.
    Evicted(Evicted),
    /// It is gone (deleted or evicted meanwhile).
    Gone,
    /// It was used since it was sampled: this is its score now.
    Used(u64),
}

/// Higher is a better victim.
fn victim_score(
    cfg: &EvictConfig,
    sketch: Option<&Sketch>,
    e: &Entry,
    hash: u64,
    now_ms: u64,
    random: u64,
) -> u64 {
    let idle = || evict::lru_idle_s(e.access(), now_ms).min(u32::MAX as u64);
    match cfg.policy {
        Policy::NoEviction => 0,
        Policy::AllKeysRandom | Policy::VolatileRandom => random,
        Policy::AllKeysLru | Policy::VolatileLru => idle(),
        Policy::AllKeysLfu | Policy::VolatileLfu => {
            255 - evict::lfu_counter(e.access(), now_ms, cfg.lfu) as u64
        }
        Policy::VolatileTtl => u64::MAX - e.expire_ms().unwrap_or(u64::MAX),
        Policy::AllKeysTinyLfu => {
            let freq = sketch.map_or(0, |s| s.estimate(hash)) as u64;
            ((16 - freq) << 32) | idle()
        }
    }
}

/// Outcome of one eviction attempt.
#[derive(Debug, PartialEq, Eq)]
pub struct Evicted {
    pub db: usize,
    pub key: Vec<u8>,
    pub freed_bytes: usize,
}

impl Shard {
    /// `seed` is the keyspace's: the shard's hasher and random numbers derive theirs from it.
    fn new(index: usize, dbs: usize, shift: u32, seed: u64, hints: std::sync::Arc<Hints>) -> Self {
        Shard {
            dbs: (0..dbs).map(|_| None).collect(),
            hasher: Hints::hasher(seed, index),
            shift,
            local_slots: SLOTS >> shift,
            mem_bytes: 0,
            stats: ShardStats::default(),
            evict: EvictConfig::default(),
            sketch: None,
            rng: Rng::new(seed.wrapping_add(index as u64) ^ 0x5DEE_CE66),
            expire_on_access: true,
            watch: watch::WatchTable::default(),
            recording: false,
            sink: None,
            pending: Vec::new(),
            effects: Vec::new(),
            priors: Vec::new(),
            keep_priors: false,
            index,
            no_touch: false,
            notify: 0,
            track: None,
            tier: None,
            hints,
        }
    }

    /// Queues a change for the replication stream (the shard records writes).
    fn queue(&mut self, p: Pending) {
        self.pending.push(p);
        crate::write_log::touch(self.index);
    }

    /// Notes that the write just made to `key` (its `field`, for a hash) was an increment by `by`,
    /// for active-active merging (a no-op unless this shard records writes).
    pub fn note_count(
        &mut self,
        db: usize,
        key: &[u8],
        field: Option<&[u8]>,
        by: crate::merge::By,
    ) {
        if self.recording && self.keep_priors {
            prior::note(
                &mut self.priors,
                db,
                key,
                None,
                How::InPlace { ttl_only: false },
            );
            if let Some(p) = self
                .priors
                .iter_mut()
                .rev()
                .find(|p| p.db == db && *p.key == *key)
            {
                // `note` counted this as a write: it is the write's increment.
                p.writes -= 1;
                p.counts += 1;
            }
        }
        if self.recording {
            self.queue(Pending::Count {
                db,
                key: key.into(),
                field: field.map(Into::into),
                by,
            });
        }
    }

    /// Active-active: notes each written key's prior (see `prior.rs`) from now on, or stops.
    pub fn set_keep_priors(&mut self, on: bool) {
        self.keep_priors = on;
        self.priors.clear();
    }

    /// Notes `key`'s prior now, with its string value, unless a write of this batch noted it
    /// already: called by an increment before it writes (the merge state needs the string it was
    /// made to). A no-op unless priors are kept.
    pub fn keep_prior(&mut self, db: usize, slot: u16, key: &[u8]) {
        if !(self.recording && self.keep_priors)
            || self.priors.iter().any(|p| p.db == db && *p.key == *key)
        {
            return;
        }
        let (was, base) = match self.peek_any(db, slot, key) {
            Some(e) => (Some(prior::Was::of(e)), e.string().map(Box::<[u8]>::from)),
            None => (None, None),
        };
        self.priors.push(Prior {
            db,
            key: key.into(),
            was,
            writes: 0,
            counts: 0,
            ttl_only: true,
            removed: false,
            base,
            base_known: true,
        });
    }

    /// Takes the priors noted since the last call (before [`Shard::take_pending`], which drops
    /// those left).
    pub fn take_priors(&mut self) -> Vec<Prior> {
        std::mem::take(&mut self.priors)
    }

    /// Takes the changes queued for the replication stream, oldest first. The caller appends them
    /// to the stream before it releases this shard's lock, so the stream keeps their order.
    pub fn take_pending(&mut self) -> Vec<Pending> {
        self.priors.clear();
        if let Some(t) = self.track.as_mut() {
            t.note(&self.pending, self.shift);
        }
        std::mem::take(&mut self.pending)
    }

    /// Starts or stops noting the keys written in `slot` (one of this shard's), for an atomic
    /// migration exporting it. Keys are noted as their changes are queued for the replication
    /// stream, so the caller turns recording on first.
    pub fn track_slot(&mut self, slot: u16, on: bool) {
        let local = self.local(slot);
        if on {
            let n = self.local_slots;
            self.track
                .get_or_insert_with(|| Box::new(track::Tracker::new(n)))
                .set(local, true);
        } else if let Some(t) = self.track.as_mut() {
            t.set(local, false);
            if t.is_empty() {
                self.track = None;
            }
        }
    }

    /// The keys written in tracked slots since the last call (queued changes not yet taken for the
    /// stream included), and whether database 0 was flushed meanwhile.
    pub fn take_tracked(&mut self) -> Tracked {
        match self.track.as_mut() {
            Some(t) => {
                t.note(&self.pending, self.shift);
                t.take()
            }
            None => Tracked::default(),
        }
    }

    /// Gives back the (emptied) vector `take_priors` returned, keeping its capacity.
    pub fn recycle_priors(&mut self, mut v: Vec<Prior>) {
        v.clear();
        if self.priors.is_empty() {
            self.priors = v;
        }
    }

    /// Gives back the (emptied) vector `take_pending` returned, keeping its capacity. The effects
    /// its `Pending::Put` items pointed to go too.
    pub fn recycle_pending(&mut self, mut v: Vec<Pending>) {
        v.clear();
        if self.pending.is_empty() {
            self.pending = v;
            self.effects.clear();
            if self.effects.capacity() > EFFECTS_KEEP_BYTES {
                self.effects = Vec::new();
            }
        }
    }

    /// The bytes a `Pending::Put` taken from this shard's queue points to (valid until the queue
    /// is given back with [`Shard::recycle_pending`]).
    pub fn effect_bytes(&self, at: usize, len: usize) -> &[u8] {
        &self.effects[at..at + len]
    }

    /// Whether writes are being recorded for the replication stream.
    pub fn recording(&self) -> bool {
        self.recording
    }

    pub fn hash(&self, key: &[u8]) -> u64 {
        self.hasher.hash_one(key)
    }

    fn local(&self, slot: u16) -> u32 {
        (slot as u32) >> self.shift
    }

    /// Global slot number of a local slot index in this shard.
    fn global_slot(&self, index: usize, local: u32) -> u16 {
        ((local << self.shift) as usize | index) as u16
    }

    /// Memory charged to the entries of this shard.
    pub fn mem_bytes(&self) -> usize {
        self.mem_bytes
    }

    pub fn set_evict_config(&mut self, cfg: EvictConfig, sketch_keys: usize) {
        self.evict = cfg;
        let wants_sketch = cfg.active && cfg.policy == Policy::AllKeysTinyLfu;
        match (&self.sketch, wants_sketch) {
            (Some(s), true) if s.width() >= sketch_keys.clamp(evict::SKETCH_WIDTH_MIN, 1 << 24) => {
            }
            (_, true) => self.sketch = Some(Sketch::new(sketch_keys)),
            (_, false) => self.sketch = None,
        }
    }

    fn db_mut(&mut self, db: usize) -> &mut DbShard {
        let local_slots = self.local_slots;
        let slot = &mut self.dbs[db];
        if slot.is_none() {
            let d = DbShard::new(local_slots);
            self.mem_bytes += d.table_bytes();
            *slot = Some(Box::new(d));
            if db == 0 {
                let d = slot.as_deref().expect("db just created");
                let at = d as *const DbShard as usize;
                self.hints
                    .note_db(self.index, at, d.slots.as_ptr() as usize);
            }
        }
        slot.as_mut().expect("db just created")
    }

    /// Records an access for the eviction policy (no-op unless eviction is active).
    fn record_access(
        evict: &EvictConfig,
        sketch: &mut Option<Sketch>,
        rng: &mut Rng,
        e: &mut Entry,
        hash: u64,
        now_ms: u64,
    ) {
        // The access info is kept even without maxmemory, so OBJECT IDLETIME/FREQ are right and a
        // later CONFIG SET maxmemory starts from real recency; only the sketch waits for eviction.
        if evict.policy.uses_lfu() {
            let a = evict::lfu_touch(e.access(), now_ms, evict.lfu, rng.unit());
            e.set_access(a);
        } else {
            e.set_access(evict::lru_clock(now_ms));
        }
        if let Some(s) = sketch {
            s.increment(hash);
        }
    }

    /// Records a lookup of a key that is absent (TinyLFU remembers misses, see `evict.rs`).
    fn record_miss(&mut self, hash: u64) {
        if let Some(s) = &mut self.sketch {
            s.increment(hash);
        }
    }

    /// The initial access info of a new entry under the current policy.
    /// Notes a keyspace notification (`notify`) if its class is on: the events the keyspace
    /// raises itself, and those of commands that hold the shard of the key.
    #[inline]
    pub fn note(&self, class: u32, event: &'static str, db: usize, key: &[u8]) {
        if self.notify & class != 0 {
            notify::push(class, event, db, key);
        }
    }

    pub fn initial_access(&self, now_ms: u64) -> u32 {
        if self.evict.policy.uses_lfu() {
            evict::lfu_initial(now_ms)
        } else {
            evict::lru_clock(now_ms)
        }
    }

    /// Looks a key up for reading or writing. An expired key is deleted (on a primary) and reported
    /// absent. `touch` records the access for eviction; commands that only inspect (TYPE, OBJECT, TTL
    /// in Redis terms "NOTOUCH") pass false.
    pub fn lookup(
        &mut self,
        db: usize,
        slot: u16,
        key: &[u8],
        now_ms: u64,
        touch: bool,
    ) -> Option<EntryMut<'_>> {
        self.lookup_counted(db, slot, key, now_ms, touch, false)
    }

    /// Where `key`'s entry sits in its table (the bucket's address), for the prefetch hints' test.
    #[cfg(test)]
    pub(crate) fn entry_address(&self, db: usize, slot: u16, key: &[u8]) -> Option<usize> {
        let d = self.dbs[db].as_ref()?;
        let e = d.slots[self.local(slot) as usize].find(self.hash(key), |e| e.key() == key)?;
        Some(e as *const Entry as usize)
    }

    /// Lookups made through this lock do not update keys' access info (OBJECT IDLETIME / FREQ,
    /// the eviction sketch) until the guard drops: a client in CLIENT NO-TOUCH mode, Redis 7.2.
    pub fn set_no_touch(&mut self, on: bool) {
        self.no_touch = on;
    }

    /// `lookup`, also counting the outcome in `keyspace_hits`/`keyspace_misses` when `count`.
    fn lookup_counted(
        &mut self,
        db: usize,
        slot: u16,
        key: &[u8],
        now_ms: u64,
        touch: bool,
        count: bool,
    ) -> Option<EntryMut<'_>> {
        let touch = touch && !self.no_touch;
        let hash = self.hash(key);
        let local = self.local(slot);
        if self.dbs[db].is_none() {
            if touch {
                self.record_miss(hash);
            }
            if count {
                self.stats.keyspace_misses += 1;
                self.note(notify::KEY_MISS, "keymiss", db, key);
            }
            return None;
        }
        // Expired? Delete first, then report absent.
        {
            let d = self.dbs[db].as_mut()?;
            let table = &mut d.slots[local as usize];
            let e = table.find(hash, |e| e.key() == key);
            match e {
                None => {
                    if touch {
                        self.record_miss(hash);
                    }
                    if count {
                        self.stats.keyspace_misses += 1;
                        self.note(notify::KEY_MISS, "keymiss", db, key);
                    }
                    return None;
                }
                Some(e) if e.is_expired(now_ms) => {
                    if self.expire_on_access {
                        self.remove_hashed(db, local, hash, key);
                        self.stats.expired_keys += 1;
                        self.note(notify::EXPIRED, "expired", db, key);
                    }
                    if count {
                        self.stats.keyspace_misses += 1;
                        self.note(notify::KEY_MISS, "keymiss", db, key);
                    }
                    return None;
                }
                Some(_) => {
                    if count {
                        self.stats.keyspace_hits += 1;
                    }
                }
            }
        }
        self.entry_mut(db, local, hash, key, touch.then_some(now_ms))
    }

    /// A mutable view of a key whether or not it has expired (a replica applying its primary's
    /// stream: replicas never expire keys themselves).
    pub fn lookup_any(&mut self, db: usize, slot: u16, key: &[u8]) -> Option<EntryMut<'_>> {
        let hash = self.hash(key);
        let local = self.local(slot);
        self.entry_mut(db, local, hash, key, None)
    }

    /// The view of an entry; records an access at `touch_ms` if given.
    fn entry_mut(
        &mut self,
        db: usize,
        local: u32,
        hash: u64,
        key: &[u8],
        touch_ms: Option<u64>,
    ) -> Option<EntryMut<'_>> {
        let recording = self.recording;
        let shard_index = self.index;
        let keep_priors = self.keep_priors && recording;
        let Shard {
            dbs,
            mem_bytes,
            evict,
            sketch,
            rng,
            pending,
            priors,
            tier,
            ..
        } = self;
        let d = dbs.get_mut(db)?.as_mut()?;
        let entry = d.slots[local as usize].find_mut(hash, |e| e.key() == key)?;
        if let Some(now_ms) = touch_ms {
            Self::record_access(evict, sketch, rng, entry, hash, now_ms);
        }
        Some(EntryMut {
            mem_before: entry.mem_bytes(),
            cold_before: entry.cold().map(|h| h.id),
            tier: tier.as_deref_mut(),
            expire_before: entry.expire_ms(),
            version_before: entry.version(),
            db,
            entry,
            mem: mem_bytes,
            volatile: &mut d.volatile,
            deadline_sum_ms: &mut d.deadline_sum_ms,
            expiry: &mut d.expiry,
            field_expiry: &mut d.field_expiry,
            hash,
            local,
            recording,
            ops: Ops::default(),
            pending,
            priors: keep_priors.then_some(priors),
            shard_index,
        })
    }

    /// Looks a key up for a read command, counting `keyspace_hits` / `keyspace_misses`.
    pub fn lookup_read(
        &mut self,
        db: usize,
        slot: u16,
        key: &[u8],
        now_ms: u64,
    ) -> Option<EntryMut<'_>> {
        self.lookup_counted(db, slot, key, now_ms, true, true)
    }

    /// Whether a live (unexpired) key exists. Does not touch or delete.
    pub fn contains(&self, db: usize, slot: u16, key: &[u8], now_ms: u64) -> bool {
        self.peek(db, slot, key, now_ms).is_some()
    }

    /// Reads a live entry without touching it or deleting it if expired.
    pub fn peek(&self, db: usize, slot: u16, key: &[u8], now_ms: u64) -> Option<&Entry> {
        let d = self.dbs[db].as_ref()?;
        let hash = self.hash(key);
        d.slots[self.local(slot) as usize]
            .find(hash, |e| e.key() == key)
            .filter(|e| !e.is_expired(now_ms))
    }

    /// Inserts or replaces an entry; returns the entry it replaced (expired or not). A command's
    /// write: a key it creates raises the `new` event (an expired key it replaces, `expired` first).
    pub fn insert(&mut self, db: usize, slot: u16, entry: Entry, now_ms: u64) -> Option<Entry> {
        self.insert_noting(db, slot, entry, now_ms, None, None)
    }

    #[inline(always)]
    fn insert_noting(
        &mut self,
        db: usize,
        slot: u16,
        entry: Entry,
        now_ms: u64,
        put: Option<PutEncoder>,
        hash: Option<u64>,
    ) -> Option<Entry> {
        let noted = self.notify & (notify::NEW | notify::EXPIRED) != 0;
        let key = noted.then(|| entry.key().to_vec());
        let old = self.insert_quiet_as(db, slot, entry, now_ms, put, hash);
        if let Some(key) = key {
            match &old {
                None => self.note(notify::NEW, "new", db, &key),
                Some(o) if o.is_expired(now_ms) && self.expire_on_access => {
                    self.note(notify::EXPIRED, "expired", db, &key);
                    self.note(notify::NEW, "new", db, &key);
                }
                Some(_) => {}
            }
        }
        old
    }

    /// [`Shard::insert`] for a whole value that no later step of the command changes (SET and its
    /// family): when the shard records writes, `put` encodes the entry's effect now, while the
    /// entry is in this core's cache, instead of the queue reading the key back when it is
    /// drained (a second lookup, and the entry's lines again). Values above
    /// [`EFFECT_ENCODED_MAX_BYTES`] are read back as usual (encoded now, they would be copied
    /// once more), as are writes of active-active members (their queue reads back every key).
    pub fn insert_encoded(
        &mut self,
        db: usize,
        slot: u16,
        entry: Entry,
        now_ms: u64,
        put: PutEncoder,
    ) -> Option<Entry> {
        self.insert_noting(db, slot, entry, now_ms, Some(put), None)
    }

    /// Stores an inline string (SET and its family): [`Shard::insert_encoded`] of
    /// `Entry::new_string(w.key, w.value, w.expire_ms, w.version)`, except that a live string of
    /// the same block size is overwritten in its block ([`Entry::overwrite_string`]) instead of
    /// replaced by a new one: no allocation, no free, the same accounting and effects.
    pub fn insert_string(
        &mut self,
        db: usize,
        slot: u16,
        w: StringWrite<'_>,
        now_ms: u64,
        put: PutEncoder,
    ) {
        let hash = self.hash(w.key);
        // An active-active member records the entry it replaces; that one keeps the old path.
        if !self.keep_priors && self.overwrite_string(db, slot, hash, &w, now_ms, Some(put)) {
            return;
        }
        self.insert_noting(
            db,
            slot,
            Entry::new_string(w.key, w.value, w.expire_ms, w.version),
            now_ms,
            Some(put),
            Some(hash),
        );
    }

    /// The in-place half of [`Shard::insert_string`]; false (nothing changed) unless the key is
    /// a live entry that [`Entry::overwrite_string`] can rewrite.
    fn overwrite_string(
        &mut self,
        db: usize,
        slot: u16,
        hash: u64,
        w: &StringWrite<'_>,
        now_ms: u64,
        put: Option<PutEncoder>,
    ) -> bool {
        let StringWrite {
            key,
            value,
            expire_ms,
            version,
        } = *w;
        let local = self.local(slot);
        let access = self.initial_access(now_ms);
        let Some(d) = self.dbs[db].as_mut() else {
            return false;
        };
        let Some(e) = d.slots[local as usize].find_mut(hash, |e| e.key() == key) else {
            return false;
        };
        // An expired key is replaced by the old path, which raises its `expired` event.
        if e.is_expired(now_ms) {
            return false;
        }
        debug_assert!(
            version >= e.version(),
            "versions of a key only grow: {:?} replaced by version {}",
            e,
            version
        );
        let old_expire = e.expire_ms();
        let before = e.mem_bytes();
        if !e.overwrite_string(key, value, expire_ms, version, access) {
            return false;
        }
        // The allocation is the same; what is charged is the bytes used (as for a new block).
        self.mem_bytes = self.mem_bytes + e.mem_bytes() - before;
        let encode_now = self.recording && e.mem_bytes() <= EFFECT_ENCODED_MAX_BYTES;
        let encoded = match put {
            Some(put) if encode_now => Some(Self::put_effect(
                &mut self.effects,
                self.sink.as_deref(),
                self.pending.is_empty() && self.track.is_none(),
                |out| put(out, db, e),
            )),
            _ => None,
        };
        if let Some(at_ms) = old_expire {
            d.volatile -= 1;
            d.deadline_sum_ms -= u128::from(at_ms);
        }
        if let Some(at_ms) = expire_ms {
            d.volatile += 1;
            d.deadline_sum_ms += u128::from(at_ms);
            d.expiry.push(Reverse(ExpiryItem { at_ms, hash, local }));
        }
        if self.recording {
            match encoded {
                // Appended to the stream already.
                Some(None) => {}
                Some(Some((at, len))) => self.queue(Pending::Put {
                    db,
                    key: key.into(),
                    at,
                    len,
                }),
                None => self.queue(Pending::Key {
                    db,
                    key: key.into(),
                }),
            }
        }
        if !self.watch.is_empty() {
            self.watch.touch(db, key);
        }
        true
    }

    /// A write's effect, encoded now by `encode`: appended to the stream at once when `may_skip`
    /// (the shard's queue is empty and no slot is tracked), the caller allows it and the sink
    /// takes it without waiting (`None`; see `write_log`), else put in `effects` for the queue
    /// (`Some((at, len))`, for a [`Pending::Put`]). A function of the fields it needs, so a
    /// caller may hold a borrow of the entry being written.
    fn put_effect(
        effects: &mut Vec<u8>,
        sink: Option<&dyn crate::write_log::EffectSink>,
        may_skip: bool,
        encode: impl FnOnce(&mut Vec<u8>),
    ) -> Option<(usize, usize)> {
        let at = effects.len();
        match sink {
            Some(sink) if may_skip && crate::write_log::direct_allowed() => {
                if crate::write_log::append_direct(sink, encode, |b| effects.extend_from_slice(b)) {
                    return None;
                }
            }
            _ => encode(effects),
        }
        Some((at, effects.len() - at))
    }

    /// [`Shard::insert`] raising no event: writes applied from elsewhere (a primary's stream, a
    /// snapshot), which Redis loads without notifications too.
    pub(crate) fn insert_quiet(
        &mut self,
        db: usize,
        slot: u16,
        entry: Entry,
        now_ms: u64,
    ) -> Option<Entry> {
        self.insert_quiet_as(db, slot, entry, now_ms, None, None)
    }

    #[inline(always)]
    fn insert_quiet_as(
        &mut self,
        db: usize,
        slot: u16,
        mut entry: Entry,
        now_ms: u64,
        put: Option<PutEncoder>,
        hash: Option<u64>,
    ) -> Option<Entry> {
        let hash = hash.unwrap_or_else(|| self.hash(entry.key()));
        let local = self.local(slot);
        let access = self.initial_access(now_ms);
        entry.set_access(access);
        let prior_key = (self.recording && self.keep_priors).then(|| entry.key().to_vec());
        if self.recording {
            match put {
                Some(encode)
                    if !self.keep_priors && entry.mem_bytes() <= EFFECT_ENCODED_MAX_BYTES =>
                {
                    if let Some((at, len)) = Self::put_effect(
                        &mut self.effects,
                        self.sink.as_deref(),
                        self.pending.is_empty() && self.track.is_none(),
                        |out| encode(out, db, &entry),
                    ) {
                        let key = entry.key().into();
                        self.queue(Pending::Put { db, key, at, len });
                    }
                }
                _ => {
                    let key = entry.key().into();
                    self.queue(Pending::Key { db, key });
                }
            }
        }
        if !self.watch.is_empty() {
            self.watch.touch(db, entry.key());
        }
        let hasher = self.hasher.clone();
        let added = entry.mem_bytes();
        let expire = entry.expire_ms();
        let d = self.db_mut(db);
        // A copied or restored hash brings no item of this index with it.
        if let Some(Object::Hash(h)) = entry.object_mut() {
            h.set_indexed_at(None);
        }
        index_field_ttls(&mut entry, &mut d.field_expiry, hash, local);
        let table = &mut d.slots[local as usize];
        // Where a new entry went, for the table's prefetch hint.
        let mut placed_at = None;
        let old = match table.find_mut(hash, |e| e.key() == entry.key()) {
            Some(slot_ref) => {
                debug_assert!(
                    entry.version() >= slot_ref.version(),
                    "versions of a key only grow: {:?} replaced by version {}",
                    slot_ref,
                    entry.version()
                );
                Some(std::mem::replace(slot_ref, entry))
            }
            None => {
                let placed = table.insert_unique(hash, entry, |e| hasher.hash_one(e.key()));
                if db == 0 {
                    let (at, index) = (placed.get() as *const Entry, placed.bucket_index());
                    let buckets = placed.into_table().num_buckets();
                    let headers = d.slots.as_ptr() as usize;
                    let db_at = &*d as *const DbShard as usize;
                    placed_at = Some((at as usize, index, buckets, db_at, headers));
                }
                d.keys += 1;
                None
            }
        };
        if let Some(at_ms) = expire {
            d.volatile += 1;
            d.deadline_sum_ms += u128::from(at_ms);
            d.expiry.push(Reverse(ExpiryItem { at_ms, hash, local }));
        }
        let removed = old.as_ref().map_or(0, |o| {
            if let Some(at_ms) = o.expire_ms() {
                d.volatile -= 1;
                d.deadline_sum_ms -= u128::from(at_ms);
            }
            o.mem_bytes()
        });
        self.mem_bytes = self.mem_bytes + added - removed;
        if let Some(key) = prior_key {
            prior::note(
                &mut self.priors,
                db,
                &key,
                old.as_ref().map(Was::of),
                How::Whole,
            );
        }
        if let Some(o) = &old {
            self.forget_cold(o);
        }
        if let Some((at, index, buckets, db_at, headers)) = placed_at {
            self.hints.note_table(slot, at, index, buckets);
            // SWAPDB may have given database 0 another place.
            self.hints.note_db(self.index, db_at, headers);
        }
        old
    }

    fn remove_hashed(&mut self, db: usize, local: u32, hash: u64, key: &[u8]) -> Option<Entry> {
        let d = self.dbs[db].as_mut()?;
        let table = &mut d.slots[local as usize];
        let found = table.find_entry(hash, |e| e.key() == key).ok()?;
        let (entry, _) = found.remove();
        shrink_table(table, &self.hasher);
        self.after_remove(db, entry)
    }

    /// The accounting, replication and tier bookkeeping of an entry just taken out of its table.
    fn after_remove(&mut self, db: usize, entry: Entry) -> Option<Entry> {
        let d = self.dbs[db].as_mut()?;
        let key = entry.key();
        d.keys -= 1;
        if let Some(at_ms) = entry.expire_ms() {
            d.volatile -= 1;
            d.deadline_sum_ms -= u128::from(at_ms);
        }
        self.mem_bytes -= entry.mem_bytes();
        self.forget_cold(&entry);
        if self.recording {
            if self.keep_priors {
                prior::note(
                    &mut self.priors,
                    db,
                    key,
                    Some(Was::of(&entry)),
                    How::Removed,
                );
            }
            self.queue(Pending::Key {
                db,
                key: key.into(),
            });
        }
        Some(entry)
    }

    /// Removes a key (expired or not) and returns its entry.
    pub fn remove(&mut self, db: usize, slot: u16, key: &[u8]) -> Option<Entry> {
        let hash = self.hash(key);
        let local = self.local(slot);
        self.remove_hashed(db, local, hash, key)
    }

    /// Keys in a database part (expired-but-not-yet-deleted keys included, as in Redis's DBSIZE).
    pub fn db_len(&self, db: usize) -> usize {
        self.dbs[db].as_ref().map_or(0, |d| d.keys)
    }

    pub fn db_volatile(&self, db: usize) -> usize {
        self.dbs[db].as_ref().map_or(0, |d| d.volatile)
    }

    /// Sum of the deadlines (ms) of a database part's volatile keys.
    pub fn db_deadline_sum_ms(&self, db: usize) -> u128 {
        self.dbs[db].as_ref().map_or(0, |d| d.deadline_sum_ms)
    }

    /// Keys stored in one slot of a database.
    pub fn slot_len(&self, db: usize, slot: u16) -> usize {
        self.dbs[db]
            .as_ref()
            .map_or(0, |d| d.slots[self.local(slot) as usize].len())
    }

    /// Visits the live keys of one slot.
    pub fn for_each_in_slot(&self, db: usize, slot: u16, now_ms: u64, mut f: impl FnMut(&Entry)) {
        if let Some(d) = self.dbs[db].as_ref() {
            for e in d.slots[self.local(slot) as usize].iter() {
                if !e.is_expired(now_ms) {
                    f(e);
                }
            }
        }
    }

    /// Visits every key of one slot, expired or not.
    pub fn for_each_key_in_slot(&self, db: usize, slot: u16, mut f: impl FnMut(&[u8])) {
        if let Some(d) = self.dbs[db].as_ref() {
            for e in d.slots[self.local(slot) as usize].iter() {
                f(e.key());
            }
        }
    }

    /// The global slot numbers this shard owns, ascending.
    pub fn owned_slots(&self, index: usize) -> impl Iterator<Item = u16> + '_ {
        (0..self.local_slots as u32).map(move |l| self.global_slot(index, l))
    }

    /// Removes and returns a whole database part (FLUSHDB/FLUSHALL; the caller may drop it on a
    /// background thread).
    pub fn take_db(&mut self, db: usize) -> Option<Box<DbShard>> {
        if db == 0
            && let Some(t) = self.track.as_mut()
        {
            t.note_flush();
        }
        let d = self.dbs[db].take()?;
        self.mem_bytes -= d.table_bytes() + d.entries_mem_bytes();
        if self.cold_keys() > 0 {
            for e in d.slots.iter().flat_map(|t| t.iter()) {
                self.forget_cold(e);
            }
        }
        Some(d)
    }

    pub fn swap_db(&mut self, a: usize, b: usize) {
        if !self.watch.is_empty() {
            self.watch_on_swap(a, b);
        }
        self.dbs.swap(a, b);
    }

    /// A random live key of a database part, if any.
    pub fn random_key(&mut self, db: usize, now_ms: u64) -> Option<Vec<u8>> {
        for _ in 0..32 {
            let (local, i) = self.random_position(db)?;
            let d = self.dbs[db].as_ref()?;
            let e = d.slots[local].iter().nth(i)?;
            if !e.is_expired(now_ms) {
                return Some(e.key().to_vec());
            }
        }
        None
    }

    /// A random non-empty table of a database part (local slot): random probes first, then a
    /// forward scan from a random slot, as [`Shard::random_position`].
    fn random_table(&mut self, db: usize) -> Option<usize> {
        let d = self.dbs[db].as_ref()?;
        if d.keys == 0 {
            return None;
        }
        let n = d.slots.len();
        for _ in 0..RANDOM_PROBES {
            let local = self.rng.below(n);
            if !d.slots[local].is_empty() {
                return Some(local);
            }
        }
        let start = self.rng.below(n);
        (0..n)
            .map(|k| (start + k) % n)
            .find(|&local| !d.slots[local].is_empty())
    }

    /// A random (local slot, index) of a non-empty table: random probes first (unbiased), then a
    /// forward scan from a random slot when the tables are too sparse for probing to find one soon.
    fn random_position(&mut self, db: usize) -> Option<(usize, usize)> {
        let d = self.dbs[db].as_ref()?;
        if d.keys == 0 {
            return None;
        }
        let n = d.slots.len();
        for _ in 0..RANDOM_PROBES {
            let local = self.rng.below(n);
            let len = d.slots[local].len();
            if len > 0 {
                return Some((local, self.rng.below(len)));
            }
        }
        let start = self.rng.below(n);
        for k in 0..n {
            let local = (start + k) % n;
            let len = d.slots[local].len();
            if len > 0 {
                return Some((local, self.rng.below(len)));
            }
        }
        None
    }

    /// Deletes expired keys, at most `max_keys` of them; calls `on_expired(db, key)` for each (the
    /// replication stream turns them into deletions). Returns (deleted, more_due).
    pub fn expire_cycle(
        &mut self,
        now_ms: u64,
        max_keys: usize,
        mut on_expired: impl FnMut(usize, &[u8]),
    ) -> (usize, bool) {
        let mut done = 0;
        let mut examined = 0;
        for db in 0..self.dbs.len() {
            loop {
                if examined >= max_keys * 4 || done >= max_keys {
                    return (done, true);
                }
                let Some(d) = self.dbs[db].as_mut() else {
                    break;
                };
                let Some(&Reverse(item)) = d.expiry.peek() else {
                    break;
                };
                if item.at_ms > now_ms {
                    break;
                }
                d.expiry.pop();
                examined += 1;
                let table = &mut d.slots[item.local as usize];
                let hasher = &self.hasher;
                // The item is stale if the key is gone or its deadline changed; then skip it.
                let Ok(found) = table.find_entry(item.hash, |e| {
                    e.expire_ms() == Some(item.at_ms) && hasher.hash_one(e.key()) == item.hash
                }) else {
                    continue;
                };
                let (entry, _) = found.remove();
                shrink_table(table, hasher);
                d.keys -= 1;
                d.volatile -= 1;
                d.deadline_sum_ms -= u128::from(item.at_ms);
                self.mem_bytes -= entry.mem_bytes();
                self.stats.expired_keys += 1;
                done += 1;
                if self.recording {
                    if self.keep_priors {
                        let was = Some(Was::of(&entry));
                        prior::note(&mut self.priors, db, entry.key(), was, How::Removed);
                    }
                    self.queue(Pending::Key {
                        db,
                        key: entry.key().into(),
                    });
                }
                if self.notify & notify::EXPIRED != 0 {
                    notify::push(notify::EXPIRED, "expired", db, entry.key());
                }
                on_expired(db, entry.key());
            }
            self.compact_expiry(db);
        }
        (done, false)
    }

    /// Deletes hash fields whose TTL has passed, at most `max_fields` of them; each hash changed
    /// gets a version from `version` (its deletions replicate as HDELs), and a hash left empty is
    /// deleted. Calls `on_expired(db, key)` for each hash that lost fields. Returns (fields
    /// deleted, more due).
    pub fn expire_fields_cycle(
        &mut self,
        now_ms: u64,
        max_fields: usize,
        mut version: impl FnMut() -> u64,
        mut on_expired: impl FnMut(usize, &[u8]),
    ) -> (usize, bool) {
        let mut done = 0;
        let mut examined = 0;
        for db in 0..self.dbs.len() {
            loop {
                if examined >= max_fields * 4 || done >= max_fields {
                    return (done, true);
                }
                let Some(d) = self.dbs[db].as_mut() else {
                    break;
                };
                let Some(&Reverse(item)) = d.field_expiry.peek() else {
                    break;
                };
                if item.at_ms > now_ms {
                    break;
                }
                d.field_expiry.pop();
                examined += 1;
                let hasher = &self.hasher;
                let live = |e: &Entry| {
                    hasher.hash_one(e.key()) == item.hash
                        && matches!(e.value(), ValueRef::Obj(Object::Hash(h))
                            if h.indexed_at() == Some(item.at_ms))
                };
                // Stale item: the key is gone, or its hash was indexed again since.
                let Some(found) = d.slots[item.local as usize].find(item.hash, live) else {
                    continue;
                };
                let key = found.key().to_vec();
                let (n, empty) = {
                    let mut e = self
                        .entry_mut(db, item.local, item.hash, &key, None)
                        .expect("found above");
                    if let Some(Object::Hash(h)) = e.object_mut() {
                        // This item is consumed: dropping the view indexes what remains.
                        h.set_indexed_at(None);
                    }
                    let n = e.expire_fields(now_ms, max_fields - done, &mut version);
                    (n, e.object_mut().is_some_and(|o| o.is_empty()))
                };
                // Redis 7.4's events: `hexpired` once per hash and pass, then `del` if emptied.
                if n > 0 {
                    self.note(notify::HASH, "hexpired", db, &key);
                }
                if empty {
                    self.remove_hashed(db, item.local, item.hash, &key);
                    self.note(notify::GENERIC, "del", db, &key);
                }
                self.stats.expired_fields += n as u64;
                done += n;
                if n > 0 {
                    on_expired(db, &key);
                }
            }
            self.compact_field_expiry(db);
        }
        (done, false)
    }

    /// Rebuilds a field-expiry heap that holds many stale items.
    fn compact_field_expiry(&mut self, db: usize) {
        let hasher = self.hasher.clone();
        let Some(d) = self.dbs[db].as_mut() else {
            return;
        };
        if d.field_expiry.len() <= 1024 + 2 * d.field_expiry_rebuilt {
            return;
        }
        let mut items = Vec::new();
        for (local, table) in d.slots.iter_mut().enumerate() {
            for e in table.iter_mut() {
                let hash = hasher.hash_one(e.key());
                if let Some(Object::Hash(h)) = e.object_mut() {
                    h.set_indexed_at(None);
                    if let Some(at_ms) = h.min_field_expire() {
                        h.set_indexed_at(Some(at_ms));
                        items.push(Reverse(ExpiryItem {
                            at_ms,
                            hash,
                            local: local as u32,
                        }));
                    }
                }
            }
        }
        d.field_expiry_rebuilt = items.len();
        d.field_expiry = BinaryHeap::from(items);
    }

    /// Rebuilds an expiry heap that holds many stale items (keys whose TTL changed often).
    fn compact_expiry(&mut self, db: usize) {
        let hasher = self.hasher.clone();
        let Some(d) = self.dbs[db].as_mut() else {
            return;
        };
        if d.expiry.len() <= 2 * d.volatile + 1024 {
            return;
        }
        let mut items = Vec::with_capacity(d.volatile);
        for (local, table) in d.slots.iter().enumerate() {
            for e in table.iter() {
                if let Some(at_ms) = e.expire_ms() {
                    items.push(Reverse(ExpiryItem {
                        at_ms,
                        hash: hasher.hash_one(e.key()),
                        local: local as u32,
                    }));
                }
            }
        }
        d.expiry = BinaryHeap::from(items);
    }

    /// Evicts one key chosen by the policy among sampled candidates. `None` if nothing can be
    /// evicted from this shard (empty, or no volatile keys under a volatile policy).
    pub fn evict_one(&mut self, now_ms: u64) -> Option<Evicted> {
        let c = self.best_candidate(now_ms)?;
        self.evict_candidate(&c)
    }

    /// The best victim among `maxmemory-samples` keys sampled from this shard, without evicting
    /// it. The caller compares candidates of several shards and evicts the globally best one, so
    /// a shard that happens to hold fewer keys is not drained first.
    pub fn best_candidate(&mut self, now_ms: u64) -> Option<Candidate> {
        let mut best: Option<Candidate> = None;
        // With the disk tier on, keys already there free almost nothing: they are victims only
        // when no sampled key has its value in memory (see `tier_score`).
        let mut best_cold: Option<Candidate> = None;
        let taken = self.sample_candidates(now_ms, self.evict.samples, |c| {
            let slot = if c.cold { &mut best_cold } else { &mut best };
            if slot.as_ref().is_none_or(|b| c.score > b.score) {
                *slot = Some(c);
            }
        });
        best.or(best_cold).map(|b| Candidate {
            sampled: taken,
            ..b
        })
    }

    /// Samples `samples` keys the policy may evict (each of them once when the shard holds no
    /// more than that) and passes each as a candidate to `each`. Returns how many were sampled.
    pub fn sample_candidates(
        &mut self,
        now_ms: u64,
        samples: usize,
        mut each: impl FnMut(Candidate),
    ) -> usize {
        let policy = self.evict.policy;
        if policy == Policy::NoEviction {
            return 0;
        }
        // A database holding keys the policy may evict, chosen at random among them.
        let eligible = |d: &DbShard| {
            if policy.volatile_only() {
                d.volatile
            } else {
                d.keys
            }
        };
        let holding = self
            .dbs
            .iter()
            .flatten()
            .filter(|d| eligible(d) > 0)
            .count();
        if holding == 0 {
            return 0;
        }
        let pick = self.rng.below(holding);
        let Some((db, n)) = self
            .dbs
            .iter()
            .enumerate()
            .filter_map(|(db, d)| Some((db, eligible(d.as_deref()?))))
            .filter(|&(_, n)| n > 0)
            .nth(pick)
        else {
            return 0;
        };
        let samples = samples.max(1);
        let mut taken = 0;
        let mut consider = |shard: &Self, e: &Entry, local: usize, hash: u64, random: u64| {
            if policy.volatile_only() && e.expire_ms().is_none() {
                return false;
            }
            let (score, cold) = shard.tier_score(e, shard.victim_score(e, hash, now_ms, random));
            each(Candidate {
                score,
                sampled: 1,
                db,
                local,
                hash,
                cold,
            });
            // A key already on disk does not count as a sample: the look goes on for keys whose
            // value is in memory (bounded by the tries below).
            !cold
        };
        if n <= samples {
            // A shard holding only a few keys: look at each of them once (random draws would
            // see some twice and miss others), and say how few they were, so the caller looks
            // at more shards.
            let Some(d) = self.dbs[db].as_ref() else {
                return 0;
            };
            for (local, table) in d.slots.iter().enumerate() {
                for e in table.iter() {
                    let r = self.rng.next_u64();
                    let hash = self.hasher.hash_one(e.key());
                    taken += consider(self, e, local, hash, r) as usize;
                }
            }
        } else {
            // Neighbouring buckets of one random non-empty slot table, from a random bucket on
            // (as Redis's `dictGetSomeKeys`): a table orders its keys by hash, so neighbours are
            // unrelated keys, and their control bytes and entry pointers share cache lines, where
            // independent picks paid two dependent misses each (the control byte, then the
            // pointer) before the entry's. Walking neighbouring *slots* instead would sample
            // correlated keys (CRC16 puts `key:1`, `key:2`... in nearby slots). The entry blocks,
            // then their sketch blocks, are asked for all at once before any is read, so those
            // misses overlap instead of queueing.
            let mut attempts = 0;
            while taken < samples && attempts < samples * 16 {
                attempts += 1;
                let Some(local) = self.random_table(db) else {
                    break;
                };
                let want = (samples - taken).min(SAMPLE_BATCH_MAX);
                let start = self.rng.next_u64();
                let mut randoms = [0u64; SAMPLE_BATCH_MAX];
                for r in &mut randoms[..want] {
                    *r = self.rng.next_u64();
                }
                let Some(d) = self.dbs[db].as_ref() else {
                    break;
                };
                let table = &d.slots[local];
                let buckets = table.num_buckets();
                debug_assert!(buckets.is_power_of_two());
                let first = ((start as u128 * buckets as u128) >> 64) as usize;
                let mut found: [(Option<&Entry>, u64); SAMPLE_BATCH_MAX] =
                    [(None, 0); SAMPLE_BATCH_MAX];
                let mut n = 0;
                // A table emptied by deletions keeps its buckets until it shrinks: the walk is
                // bounded, and a short one just leaves fewer samples for the next table.
                for k in 0..buckets.min(want * SAMPLE_WALK_PER_KEY) {
                    if n == want {
                        break;
                    }
                    if let Some(e) = table.get_bucket((first + k) & (buckets - 1)) {
                        e.prefetch();
                        found[n].0 = Some(e);
                        n += 1;
                    }
                }
                for (e, hash) in found[..n].iter_mut() {
                    let Some(e) = e else { continue };
                    *hash = self.hasher.hash_one(e.key());
                    if let Some(sk) = &self.sketch {
                        sk.prefetch(*hash);
                    }
                }
                for (&(e, hash), &r) in found[..n].iter().zip(&randoms) {
                    if let Some(e) = e {
                        taken += consider(self, e, local, hash, r) as usize;
                    }
                }
            }
        }
        taken
    }

    /// The policy's current score of a sampled candidate, or `None` if it is gone. A score
    /// lower than when it was sampled means the key was used since.
    pub fn candidate_score(&self, c: &Candidate, now_ms: u64) -> Option<u64> {
        let d = self.dbs.get(c.db)?.as_ref()?;
        let hasher = &self.hasher;
        let e = d.slots[c.local].find(c.hash, |e| hasher.hash_one(e.key()) == c.hash)?;
        if self.evict.policy.volatile_only() && e.expire_ms().is_none() {
            return None;
        }
        Some(
            self.tier_score(e, self.victim_score(e, c.hash, now_ms, c.score))
                .0,
        )
    }

    /// A candidate's score with the disk tier in mind: with the tier on, any key whose value is
    /// in memory (moving it frees memory and keeps the key) beats every key already on disk
    /// (score 0; evicting it drops the key). The second value says the key is on disk.
    fn tier_score(&self, e: &Entry, score: u64) -> (u64, bool) {
        if self.tier.is_none() {
            return (score, false);
        }
        match e.cold() {
            Some(_) => (0, true),
            None => (score.saturating_add(1), false),
        }
    }

    /// Evicts a candidate found by [`Shard::best_candidate`] if it is still there.
    pub fn evict_candidate(&mut self, c: &Candidate) -> Option<Evicted> {
        // With the disk tier on, the victim's value moves there and the key stays.
        if !c.cold
            && let Some(freed_bytes) = self.move_to_tier(c)
        {
            return Some(Evicted {
                db: c.db,
                key: Vec::new(),
                freed_bytes,
            });
        }
        let key = {
            let d = self.dbs[c.db].as_ref()?;
            let hasher = &self.hasher;
            d.slots[c.local]
                .find(c.hash, |e| hasher.hash_one(e.key()) == c.hash)?
                .key()
                .to_vec()
        };
        let entry = self.remove_hashed(c.db, c.local as u32, c.hash, &key)?;
        self.stats.evicted_keys += 1;
        self.note(notify::EVICTED, "evicted", c.db, &key);
        Some(Evicted {
            db: c.db,
            freed_bytes: entry.mem_bytes(),
            key,
        })
    }

    /// Higher is a better victim.
    fn victim_score(&self, e: &Entry, hash: u64, now_ms: u64, random: u64) -> u64 {
        victim_score(&self.evict, self.sketch.as_ref(), e, hash, now_ms, random)
    }

    /// Evicts a pooled candidate unless it went or was used since it was sampled, finding it
    /// once: its table's lines and its entry were read to score it, so the removal that follows
    /// costs no further cache miss (rescoring, then finding it again to evict it, took three
    /// lookups and three hashes of the key per eviction).
    pub fn evict_pooled(&mut self, c: &Candidate, now_ms: u64) -> Pooled {
        let Shard {
            dbs,
            evict,
            sketch,
            tier,
            hasher,
            ..
        } = self;
        let Some(d) = dbs.get_mut(c.db).and_then(|d| d.as_mut()) else {
            return Pooled::Gone;
        };
        let table = &mut d.slots[c.local];
        let Ok(found) = table.find_entry(c.hash, |e| hasher.hash_one(e.key()) == c.hash) else {
            return Pooled::Gone;
        };
        let e = found.get();
        if evict.policy.volatile_only() && e.expire_ms().is_none() {
            return Pooled::Gone;
        }
        let score = victim_score(evict, sketch.as_ref(), e, c.hash, now_ms, c.score);
        let now = match tier {
            None => score,
            Some(_) if e.cold().is_some() => 0,
            Some(_) => score.saturating_add(1),
        };
        if now < c.score {
            return Pooled::Used(now);
        }
        if tier.is_some() {
            // The disk tier moves values rather than removing keys: its own path.
            return self
                .evict_candidate(c)
                .map_or(Pooled::Gone, Pooled::Evicted);
        }
        let (entry, _) = found.remove();
        shrink_table(table, hasher);
        let Some(entry) = self.after_remove(c.db, entry) else {
            return Pooled::Gone;
        };
        self.stats.evicted_keys += 1;
        self.note(notify::EVICTED, "evicted", c.db, entry.key());
        Pooled::Evicted(Evicted {
            db: c.db,
            freed_bytes: entry.mem_bytes(),
            key: entry.key().to_vec(),
        })
    }

    /// Recomputes every accounted quantity and panics if it disagrees with the running totals.
    pub fn check_invariants(&self) {
        let mut mem = 0;
        for d in self.dbs.iter().flatten() {
            let keys: usize = d.slots.iter().map(|t| t.len()).sum();
            assert_eq!(keys, d.keys, "key count");
            let volatile = d
                .slots
                .iter()
                .flat_map(|t| t.iter())
                .filter(|e| e.expire_ms().is_some())
                .count();
            assert_eq!(volatile, d.volatile, "volatile count");
            let deadlines: u128 = d
                .slots
                .iter()
                .flat_map(|t| t.iter())
                .filter_map(|e| e.expire_ms().map(u128::from))
                .sum();
            assert_eq!(deadlines, d.deadline_sum_ms, "sum of deadlines");
            for (local, t) in d.slots.iter().enumerate() {
                for e in t.iter() {
                    if let Some(at_ms) = e.expire_ms() {
                        let hash = self.hash(e.key());
                        assert!(
                            d.expiry.iter().any(|Reverse(i)| i.at_ms == at_ms
                                && i.hash == hash
                                && i.local as usize == local),
                            "expiry index misses {e:?}"
                        );
                    }
                }
            }
            for (local, t) in d.slots.iter().enumerate() {
                for e in t.iter() {
                    let ValueRef::Obj(Object::Hash(h)) = e.value() else {
                        continue;
                    };
                    h.check_invariants();
                    if let Some(at_ms) = h.min_field_expire() {
                        let indexed = h.indexed_at().expect("a hash with field TTLs is indexed");
                        assert!(indexed <= at_ms, "field expiry indexed too late");
                        let hash = self.hash(e.key());
                        assert!(
                            d.field_expiry.iter().any(|Reverse(i)| i.at_ms == indexed
                                && i.hash == hash
                                && i.local as usize == local),
                            "field expiry index misses {e:?}"
                        );
                    }
                }
            }
            mem += d.table_bytes() + d.entries_mem_bytes();
        }
        assert_eq!(mem, self.mem_bytes, "accounted memory");
    }
}

/// A locked shard. Dropping it clears the lock holder's no-touch mode ([`Shard::set_no_touch`]),
/// so the mode never outlives the command that set it, and unlocks the shard, unless the guard
/// was lent out of the thread's hold ([`crate::sticky`]): then the hold is given back, still
/// locked.
pub struct ShardGuard<'a> {
    guard: ManuallyDrop<MutexGuard<'a, Shard>>,
    /// Borrowed from the thread's hold (which owns the lock) rather than owning it.
    lent: Option<&'a Mutex<Shard>>,
}

impl<'a> ShardGuard<'a> {
    fn owned(guard: MutexGuard<'a, Shard>) -> Self {
        ShardGuard {
            guard: ManuallyDrop::new(guard),
            lent: None,
        }
    }

    /// A guard for `mutex`, which this thread holds and has just lent (see [`crate::sticky`]).
    fn lent(mutex: &'a Mutex<Shard>) -> Self {
        debug_assert!(sticky::holds(mutex) && mutex.is_locked());
        ShardGuard {
            // SAFETY: the thread's hold locked `mutex` and lends it to this guard alone (`lent`
            // is asserted by `sticky`); the guard is forgotten on drop, never unlocked through.
            guard: ManuallyDrop::new(unsafe { mutex.make_guard_unchecked() }),
            lent: Some(mutex),
        }
    }
}

impl std::ops::Deref for ShardGuard<'_> {
    type Target = Shard;
    fn deref(&self) -> &Shard {
        &self.guard
    }
}

impl std::ops::DerefMut for ShardGuard<'_> {
    fn deref_mut(&mut self) -> &mut Shard {
        &mut self.guard
    }
}

impl ShardGuard<'_> {
    /// Releases the lock handing it straight to a thread waiting for it, if any: for a long walk
    /// that takes the same lock again at once (a snapshot's next piece), which would otherwise
    /// take it back before the woken waiter runs, again and again (parking_lot is fair only
    /// every half millisecond). Without a waiter it is a plain unlock.
    pub fn unlock_fair(mut self) {
        if self.lent.is_some() {
            return;
        }
        self.guard.no_touch = false;
        // SAFETY: the guard is taken out once, here, and `self` is forgotten so its drop does
        // not release it a second time.
        let guard = unsafe { ManuallyDrop::take(&mut self.guard) };
        std::mem::forget(self);
        MutexGuard::unlock_fair(guard);
    }
}

impl Drop for ShardGuard<'_> {
    fn drop(&mut self) {
        self.guard.no_touch = false;
        match self.lent {
            Some(mutex) => sticky::give_back(mutex),
            // SAFETY: dropped once, here; the field is not used after.
            None => unsafe { ManuallyDrop::drop(&mut self.guard) },
        }
    }
}

/// Number of shards (a power of two dividing 16384). Multi-key writes (MSET of 10 keys) lock
/// several shards at once: with 64, two workers' MSETs almost always collided; 256 makes that
/// rare while each shard still holds enough keys for eviction sampling (at 1,024, a small
/// `maxmemory` leaves one or two keys per shard and volatile-ttl picked worse victims). An empty
/// shard costs about 1 KB.
pub const SHARDS_DEFAULT: usize = 256;
/// The largest entry (in memory) whose effect a write encodes at once ([`Shard::insert_encoded`]).
pub const EFFECT_ENCODED_MAX_BYTES: usize = 4096;
/// The most capacity a shard's effect buffer keeps once its queue is drained.
pub const EFFECTS_KEEP_BYTES: usize = 64 * 1024;
/// Encodes the replication stream's effect of a whole entry (database, entry) onto a buffer: the
/// stream's codec, which this crate does not know (`shoal_replication::stream::encode_put`).
pub type PutEncoder = fn(&mut Vec<u8>, usize, &Entry);

/// A whole string value written under a key ([`Shard::insert_string`]): the key, the value, its
/// absolute deadline and the write's version.
#[derive(Debug, Clone, Copy)]
pub struct StringWrite<'a> {
    pub key: &'a [u8],
    pub value: &'a [u8],
    pub expire_ms: Option<u64>,
    pub version: u64,
}

/// All shards, plus the version clock.
pub struct Keyspace {
    shards: Box<[Mutex<Shard>]>,
    mask: usize,
    databases: usize,
    /// `maxmemory-samples` of the current eviction config (read on every eviction, so not
    /// behind a shard lock).
    evict_samples: std::sync::atomic::AtomicUsize,
    /// The best victims sampled so far, one pool per evicting thread (see `pool.rs`).
    pub(crate) evict_pools: Box<[crate::pool::ThreadPool]>,
    pub hlc: Hlc,
    /// Mirrors the shards' `recording` flag, read once per command.
    recording: std::sync::atomic::AtomicBool,
    /// SWAPDBs so far. A snapshot taken one shard at a time is consistent only if no SWAPDB ran
    /// while it was taken (a swap is not ordered by versions as other writes are).
    swaps: std::sync::atomic::AtomicU64,
    /// Keyspace notification classes on (`notify::*`); mirrored in every shard.
    notify: std::sync::atomic::AtomicU32,
    /// The disk tier was turned on at some point: requests look for cold keys (see `tier.rs`).
    tiered: std::sync::atomic::AtomicBool,
    /// The disk tier's store (see `tier.rs`), for walks that read cold values.
    cold_store: Mutex<Option<std::sync::Arc<dyn tier::ColdStore>>>,
    /// Where database 0's tables are, for [`Keyspace::prefetch`].
    hints: std::sync::Arc<Hints>,
    /// Hot shards gathered on one worker ([`crate::claim`]).
    claims: crate::claim::Claims,
    /// Where writes may append their effects at once (see [`Keyspace::set_effect_sink`]).
    effect_sink: std::sync::OnceLock<std::sync::Arc<dyn crate::write_log::EffectSink>>,
}

impl std::fmt::Debug for Keyspace {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Keyspace")
            .field("shards", &self.shards.len())
            .field("databases", &self.databases)
            .finish()
    }
}

impl Keyspace {
    /// `shards` must be a power of two between 1 and 16384.
    pub fn new(databases: usize, shards: usize, seed: u64) -> Self {
        assert!(shards.is_power_of_two() && shards <= SLOTS, "shard count");
        assert!(databases >= 1, "at least one database");
        let shift = shards.trailing_zeros();
        let count = shards;
        let hints = std::sync::Arc::new(Hints::new(count, seed));
        let shards: Box<[Mutex<Shard>]> = (0..count)
            .map(|i| Mutex::new(Shard::new(i, databases, shift, seed, hints.clone())))
            .collect();
        for (i, m) in shards.iter().enumerate() {
            let field = m.data_ptr() as usize + std::mem::offset_of!(Shard, dbs);
            let buffer = m.lock().dbs.as_ptr() as usize;
            hints.note_shard(i, field, buffer);
        }
        Keyspace {
            shards,
            hints,
            mask: count - 1,
            databases,
            evict_samples: std::sync::atomic::AtomicUsize::new(EvictConfig::default().samples),
            hlc: Hlc::new(),
            recording: std::sync::atomic::AtomicBool::new(false),
            swaps: std::sync::atomic::AtomicU64::new(0),
            evict_pools: (0..crate::pool::EVICT_POOLS)
                .map(|_| crate::pool::ThreadPool::default())
                .collect(),
            notify: std::sync::atomic::AtomicU32::new(0),
            tiered: std::sync::atomic::AtomicBool::new(false),
            cold_store: Mutex::new(None),
            claims: crate::claim::Claims::new(count),
            effect_sink: std::sync::OnceLock::new(),
        }
    }

    /// Active-active: every shard notes written keys' priors (see `prior.rs`), or stops.
    pub fn set_keep_priors(&self, on: bool) {
        for i in 0..self.shards.len() {
            self.lock(i).set_keep_priors(on);
        }
    }

    /// Counts a SWAPDB. Call while holding every shard lock, before swapping any: a reader holding
    /// one shard's lock then sees either no swap of that shard or the new count.
    pub fn note_swap(&self) {
        self.swaps.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
    }

    /// SWAPDBs so far (see [`Keyspace::note_swap`]).
    pub fn swaps(&self) -> u64 {
        self.swaps.load(std::sync::atomic::Ordering::SeqCst)
    }

    /// Turns recording of writes for the replication stream on or off (see `write_log`). The
    /// switch belongs to this keyspace, so nodes sharing a process do not see each other's.
    /// Lets writes append their effects straight to `sink` when their shard's queue is empty
    /// and their caller allows it (see `write_log`). Set once (a later call changes nothing).
    pub fn set_effect_sink(&self, sink: std::sync::Arc<dyn crate::write_log::EffectSink>) {
        if self.effect_sink.set(sink.clone()).is_err() {
            return;
        }
        for i in 0..self.shards.len() {
            self.lock(i).sink = Some(sink.clone());
        }
    }

    /// While this node records, asks the CPU to start loading, for writing, the stream's lines
    /// the next direct append will write (`write_log`): called as a request is decoded, so that
    /// a write's copy into the backlog finds them owned instead of waiting for each (`perf
    /// annotate` of a logged SET at P16 put 80% of the append's own time on the unlock, the
    /// fence where those stores wait). A hint: a request that writes nothing costs a prefetch.
    #[inline]
    pub fn prefetch_effects(&self) {
        if self.recording.load(std::sync::atomic::Ordering::Relaxed)
            && let Some(sink) = self.effect_sink.get()
        {
            sink.prefetch_tail();
        }
    }

    pub fn set_recording(&self, on: bool) {
        for i in 0..self.shards.len() {
            let mut s = self.lock(i);
            s.recording = on;
            if !on {
                // Changes queued before the switch belong to no stream (a primary turned replica
                // takes its primary's stream).
                s.pending.clear();
                s.effects.clear();
            }
        }
        self.recording
            .store(on, std::sync::atomic::Ordering::Relaxed);
    }

    /// Sets the keyspace notification classes (`notify-keyspace-events`). Only a mask that
    /// publishes something (a class and `K` or `E`) makes anything be noted.
    pub fn set_notify(&self, mask: u32) {
        let mask = if notify::publishes(mask) { mask } else { 0 };
        for i in 0..self.shards.len() {
            self.lock(i).notify = mask;
        }
        self.notify
            .store(mask, std::sync::atomic::Ordering::Relaxed);
    }

    /// Whether events of `class` are published (one load: the check on every write).
    #[inline]
    pub fn notifies(&self, class: u32) -> bool {
        self.notify.load(std::sync::atomic::Ordering::Relaxed) & class != 0
    }

    /// Whether writes are being recorded.
    pub fn recording(&self) -> bool {
        self.recording.load(std::sync::atomic::Ordering::Relaxed)
    }

    pub fn databases(&self) -> usize {
        self.databases
    }

    pub fn shard_count(&self) -> usize {
        self.shards.len()
    }

    /// The shard index owning a slot.
    pub fn shard_of(&self, slot: u16) -> usize {
        slot as usize & self.mask
    }

    /// Locks one shard. parking_lot's mutex spins briefly before parking: commands hold a shard for
    /// a microsecond or two, and on a hot key (all clients on one shard) the futex sleep/wake of a
    /// parking-first mutex cost more than the command itself.
    ///
    /// A shard this thread holds between commands ([`crate::sticky`]) is lent instead; a hold of
    /// another shard is given up first (unless a guard uses it).
    /// Asks the CPU to start loading what a lookup of `key` in `db` will read first (the
    /// shard's lock, the slot table's header, the probe's first control group and bucket), so
    /// the lookup of a pipeline's next command overlaps the current one. Only a hint; database 0.
    #[inline]
    pub fn prefetch(&self, db: usize, key: &[u8]) {
        self.prefetch_in(db, crate::slot::key_slot(key), key);
    }

    /// [`Keyspace::prefetch`] of a key whose slot the caller has computed.
    #[inline]
    pub fn prefetch_in(&self, db: usize, slot: u16, key: &[u8]) {
        self.hints
            .prefetch(|i| &self.shards[i] as *const _ as usize, db, slot, key);
    }

    #[cfg(test)]
    pub(crate) fn hints(&self) -> &Hints {
        &self.hints
    }

    pub fn lock(&self, index: usize) -> ShardGuard<'_> {
        let mutex = &self.shards[index];
        if sticky::lend_or_release(mutex) {
            return ShardGuard::lent(mutex);
        }
        ShardGuard::owned(self.lock_noting(index, false))
    }

    /// Locks shard `index`, noting for a claim ([`crate::claim`]) that this thread uses it and,
    /// if `claimable`, that it found it taken. Only commands that may keep their shard
    /// ([`Keyspace::lock_sticky`]: sorted sets, geo and HyperLogLogs, whose work under the lock is long) claim
    /// a hot shard: for short ones (LPUSH, HSET on one key) two workers contending still beat one
    /// doing all the parsing and replying (`bench/ab` LPUSH P16 ×0.89 with claims).
    #[inline]
    fn lock_noting(&self, index: usize, claimable: bool) -> parking_lot::MutexGuard<'_, Shard> {
        let mutex = &self.shards[index];
        match mutex.try_lock() {
            Some(g) => {
                self.claims.used(index);
                g
            }
            None => {
                if claimable {
                    self.claims.contended(index);
                }
                self.claims.used(index);
                mutex.lock()
            }
        }
    }

    /// The shards' claims ([`crate::claim`]).
    pub fn claims(&self) -> &crate::claim::Claims {
        &self.claims
    }

    /// [`Keyspace::lock`] for a command that may keep the shard locked after its guard drops,
    /// for the next commands of its connection's pipeline ([`crate::sticky`]): the thread then
    /// holds it until [`sticky::release`] or a lock of another shard.
    pub fn lock_sticky(&self, index: usize) -> ShardGuard<'_> {
        let mutex = &self.shards[index];
        if sticky::lend_counted(mutex) {
            return ShardGuard::lent(mutex);
        }
        // Not held, handed over past its runs, or another shard held: that hold is given up
        // (a lent one stays; then this lock is a plain one).
        if sticky::lend_or_release(mutex) {
            return ShardGuard::lent(mutex);
        }
        if !sticky::can_hold() {
            return ShardGuard::owned(self.lock_noting(index, true));
        }
        std::mem::forget(self.lock_noting(index, true));
        sticky::hold(mutex);
        ShardGuard::lent(mutex)
    }

    /// One shard's mutex, to look at it from another thread without the holds' rules.
    #[cfg(test)]
    pub(crate) fn shard_mutex(&self, index: usize) -> &Mutex<Shard> {
        &self.shards[index]
    }

    /// Whether this thread holds the shard of `slot` between commands ([`crate::sticky`]).
    pub fn holds_sticky(&self, slot: u16) -> bool {
        sticky::holds(&self.shards[self.shard_of(slot)])
    }

    /// Locks the shards of the given slots, in ascending shard order (no deadlock between
    /// multi-key commands). Returns (shard index, guard) pairs.
    pub fn lock_slots(&self, slots: &[u16]) -> Vec<(usize, ShardGuard<'_>)> {
        let mut idx: Vec<usize> = slots.iter().map(|&s| self.shard_of(s)).collect();
        idx.sort_unstable();
        idx.dedup();
        idx.into_iter().map(|i| (i, self.lock(i))).collect()
    }

    /// Locks every shard, in order.
    pub fn lock_all(&self) -> Vec<ShardGuard<'_>> {
        (0..self.shards.len()).map(|i| self.lock(i)).collect()
    }

    pub fn set_evict_config(&self, cfg: EvictConfig, expected_keys: usize) {
        let per_shard = expected_keys / self.shards.len() + 1;
        self.evict_samples
            .store(cfg.samples.max(1), std::sync::atomic::Ordering::Relaxed);
        for i in 0..self.shards.len() {
            self.lock(i).set_evict_config(cfg, per_shard);
        }
        self.clear_eviction_pool();
    }

    /// `maxmemory-samples` as last set by [`Keyspace::set_evict_config`].
    pub fn eviction_samples(&self) -> usize {
        self.evict_samples
            .load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Sum of accounted entry memory over all shards.
    pub fn mem_bytes(&self) -> usize {
        (0..self.shards.len())
            .map(|i| self.lock(i).mem_bytes())
            .sum()
    }

    pub fn stats(&self) -> ShardStats {
        let mut s = ShardStats::default();
        for i in 0..self.shards.len() {
            let g = self.lock(i);
            s.expired_keys += g.stats.expired_keys;
            s.evicted_keys += g.stats.evicted_keys;
            s.keyspace_hits += g.stats.keyspace_hits;
            s.keyspace_misses += g.stats.keyspace_misses;
            s.expired_fields += g.stats.expired_fields;
        }
        s
    }

    pub fn reset_stats(&self) {
        for i in 0..self.shards.len() {
            self.lock(i).stats = ShardStats::default();
        }
    }

    /// Average time to live (ms) of a database's keys with a deadline, at `now_ms` (0 without
    /// any): from each shard's running sum of deadlines, so it costs a lock per shard, not a walk.
    pub fn db_avg_ttl_ms(&self, db: usize, now_ms: u64) -> u64 {
        let (n, sum) = (0..self.shards.len()).fold((0u128, 0u128), |(n, sum), i| {
            let g = self.lock(i);
            (
                n + g.db_volatile(db) as u128,
                sum + g.db_deadline_sum_ms(db),
            )
        });
        match sum.checked_div(n) {
            Some(avg) => avg.saturating_sub(u128::from(now_ms)) as u64,
            None => 0,
        }
    }

    /// (keys, keys with expiry) of a database.
    pub fn db_size(&self, db: usize) -> (usize, usize) {
        (0..self.shards.len()).fold((0, 0), |(k, v), i| {
            let g = self.lock(i);
            (k + g.db_len(db), v + g.db_volatile(db))
        })
    }

    pub fn set_expire_on_access(&self, on: bool) {
        for i in 0..self.shards.len() {
            self.lock(i).expire_on_access = on;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::slot::key_slot;

    fn ks() -> Keyspace {
        Keyspace::new(2, 4, 1)
    }

    fn put(ks: &Keyspace, key: &[u8], val: &[u8], expire: Option<u64>, now: u64) {
        let slot = key_slot(key);
        let mut g = ks.lock(ks.shard_of(slot));
        g.insert(
            0,
            slot,
            Entry::new_string(key, val, expire, ks.hlc.next(now)),
            now,
        );
    }

    fn get(ks: &Keyspace, key: &[u8], now: u64) -> Option<Vec<u8>> {
        let slot = key_slot(key);
        let mut g = ks.lock(ks.shard_of(slot));
        g.lookup(0, slot, key, now, true)
            .map(|e| e.string().unwrap().to_vec())
    }

    fn check(ks: &Keyspace) {
        for s in ks.lock_all() {
            s.check_invariants();
        }
    }

    #[test]
    fn a_fair_unlock_releases_the_shard_and_hands_it_to_a_waiter() {
        let ks = ks();
        let g = ks.lock(0);
        g.unlock_fair();
        assert!(!ks.shards[0].is_locked(), "released with no waiter");
        // A waiter parked on the lock gets it: the test would hang (and the harness time out)
        // if the handoff lost it.
        let g = ks.lock(0);
        std::thread::scope(|scope| {
            let waiter = scope.spawn(|| {
                let mut w = ks.lock(0);
                w.stats.keyspace_hits += 1;
            });
            g.unlock_fair();
            waiter.join().expect("the waiter ran");
        });
        assert_eq!(ks.lock(0).stats.keyspace_hits, 1);
    }

    #[test]
    fn lazy_expiry_on_a_paused_clock() {
        let ks = ks();
        put(&ks, b"a", b"1", Some(1_000), 0);
        put(&ks, b"b", b"2", None, 0);
        assert_eq!(get(&ks, b"a", 999), Some(b"1".to_vec()));
        assert_eq!(get(&ks, b"a", 1_000), None);
        assert_eq!(ks.stats().expired_keys, 1);
        assert_eq!(ks.db_size(0), (1, 0));
        check(&ks);
    }

    #[test]
    fn average_ttl_follows_deadlines_set_replaced_expired_and_removed() {
        let ks = ks();
        assert_eq!(ks.db_avg_ttl_ms(0, 0), 0);
        put(&ks, b"a", b"1", Some(1_000), 0);
        put(&ks, b"b", b"2", Some(3_000), 0);
        put(&ks, b"c", b"3", None, 0);
        assert_eq!(ks.db_avg_ttl_ms(0, 0), 2_000);
        assert_eq!(ks.db_avg_ttl_ms(0, 500), 1_500);
        // Replaced with another deadline, then with none.
        put(&ks, b"a", b"1", Some(5_000), 0);
        assert_eq!(ks.db_avg_ttl_ms(0, 0), 4_000);
        put(&ks, b"a", b"1", None, 0);
        assert_eq!(ks.db_avg_ttl_ms(0, 0), 3_000);
        check(&ks);
        // Expired on access, then none left.
        assert_eq!(get(&ks, b"b", 3_000), None);
        assert_eq!(ks.db_avg_ttl_ms(0, 0), 0);
        check(&ks);
    }

    #[test]
    fn strings_overwritten_in_place_keep_the_accounting_true() {
        fn encode(out: &mut Vec<u8>, _db: usize, e: &Entry) {
            out.extend_from_slice(e.key());
            out.extend_from_slice(e.string().unwrap());
        }
        let ks = ks();
        let set = |key: &[u8], val: &[u8], expire: Option<u64>, now: u64| {
            let slot = key_slot(key);
            let mut g = ks.lock(ks.shard_of(slot));
            let v = ks.hlc.next(now);
            let w = StringWrite {
                key,
                value: val,
                expire_ms: expire,
                version: v,
            };
            g.insert_string(0, slot, w, now, encode);
        };
        set(b"a", b"12345678", None, 0);
        set(b"b", b"12345678", Some(1_000), 0);
        let block = |key: &[u8]| {
            let slot = key_slot(key);
            let g = ks.lock(ks.shard_of(slot));
            g.peek(0, slot, key, 0).map(|e| e.block_addr())
        };
        let (a, b) = (block(b"a"), block(b"b"));
        // In place: another value of the same length, without and with a TTL (replaced).
        set(b"a", b"abcdefgh", None, 0);
        set(b"b", b"abcdefgh", Some(2_000), 0);
        assert_eq!((block(b"a"), block(b"b")), (a, b));
        check(&ks);
        assert_eq!(ks.db_avg_ttl_ms(0, 0), 2_000);
        assert_eq!(get(&ks, b"b", 1_999), Some(b"abcdefgh".to_vec()));
        // The TTL's 8 bytes gone and the value 8 bytes longer: the same block size.
        set(b"b", b"abcdefgh12345678", None, 0);
        assert_eq!(block(b"b"), b);
        check(&ks);
        assert_eq!(ks.db_avg_ttl_ms(0, 0), 0);
        assert_eq!(get(&ks, b"b", 5_000), Some(b"abcdefgh12345678".to_vec()));
        // Now a TTL that is due: the deadline written in place is indexed.
        set(b"b", b"abcdefgh", Some(6_000), 5_000);
        assert_eq!(block(b"b"), b);
        assert_eq!(get(&ks, b"b", 6_000), None);
        // A longer value takes a new block, as before.
        set(b"a", &[b'x'; 100], None, 5_000);
        assert_ne!(block(b"a"), a);
        assert_eq!(ks.db_size(0), (1, 0));
        check(&ks);
    }

    #[test]
    fn an_overwrite_in_place_queues_the_same_effect_as_a_new_block() {
        fn encode(out: &mut Vec<u8>, _db: usize, e: &Entry) {
            out.extend_from_slice(e.key());
            out.push(b'=');
            out.extend_from_slice(e.string().unwrap());
        }
        let ks = ks();
        ks.set_recording(true);
        let slot = key_slot(b"k");
        let mut g = ks.lock(ks.shard_of(slot));
        for (value, version) in [(&b"one"[..], 1), (b"two", 2)] {
            let w = StringWrite {
                key: b"k",
                value,
                expire_ms: None,
                version,
            };
            g.insert_string(0, slot, w, 0, encode);
        }
        let puts: Vec<&[u8]> = g
            .pending
            .iter()
            .map(|p| match p {
                Pending::Put { at, len, .. } => &g.effects[*at..at + len],
                _ => panic!("a SET's effect is encoded as it writes"),
            })
            .collect();
        assert_eq!(puts, [&b"k=one"[..], &b"k=two"[..]]);
    }

    #[test]
    fn active_expiry_is_bounded_per_cycle_and_skips_stale_items() {
        let ks = Keyspace::new(1, 1, 3);
        for i in 0..100u32 {
            put(&ks, format!("k{i}").as_bytes(), b"v", Some(10), 0);
        }
        // Re-set one key without TTL and one with a later TTL: their heap items become stale.
        put(&ks, b"k1", b"v", None, 0);
        put(&ks, b"k2", b"v", Some(50), 0);
        let mut g = ks.lock(0);
        let mut seen = Vec::new();
        let (n, more) = g.expire_cycle(20, 30, |_, k| seen.push(k.to_vec()));
        assert_eq!((n, more), (30, true));
        let (n2, more2) = g.expire_cycle(20, 1000, |_, k| seen.push(k.to_vec()));
        assert_eq!(n + n2, 98);
        assert!(!more2);
        assert!(!seen.contains(&b"k1".to_vec()) && !seen.contains(&b"k2".to_vec()));
        g.check_invariants();
        assert_eq!(g.db_len(0), 2);
    }

    /// A hash with `n` fields `f0..`, field `fi` due at `deadline(i)` when given.
    fn put_hash(ks: &Keyspace, key: &[u8], n: usize, deadline: impl Fn(usize) -> Option<u64>) {
        let l = crate::EncodingLimits::default();
        let mut h = crate::types::hash::Hash::new(&l);
        for i in 0..n {
            let f = format!("f{i}");
            h.insert(f.as_bytes(), b"v", &l);
            if let Some(at) = deadline(i) {
                h.set_field_expire(f.as_bytes(), at);
            }
        }
        let slot = key_slot(key);
        let e = Entry::new(
            key,
            crate::Payload::Object(Box::new(Object::Hash(h))),
            None,
            None,
            ks.hlc.next(0),
            0,
        );
        ks.lock(ks.shard_of(slot)).insert(0, slot, e, 0);
    }

    fn hash_len(ks: &Keyspace, key: &[u8]) -> Option<usize> {
        let slot = key_slot(key);
        let g = ks.lock(ks.shard_of(slot));
        g.peek(0, slot, key, 0).map(|e| match e.value() {
            ValueRef::Obj(Object::Hash(h)) => h.len(),
            _ => panic!("a hash"),
        })
    }

    #[test]
    fn active_field_expiry_is_bounded_replicates_hdels_and_deletes_emptied_hashes() {
        let ks = Keyspace::new(1, 1, 5);
        ks.set_recording(true);
        // Ten hashes: half lose every field at 100, half keep one field without TTL.
        for k in 0..10 {
            put_hash(&ks, format!("h{k}").as_bytes(), 5, |i| {
                (k % 2 == 0 || i > 0).then_some(100 + i as u64)
            });
        }
        check(&ks);
        let mut g = ks.lock(0);
        let _ = g.take_pending();
        assert_eq!(g.expire_fields_cycle(99, 100, || 1, |_, _| {}), (0, false));
        let mut versions = 10_000u64;
        let mut seen = Vec::new();
        let (n, more) = g.expire_fields_cycle(
            200,
            12,
            || {
                versions += 1;
                versions
            },
            |_, k| seen.push(k.to_vec()),
        );
        assert_eq!((n, more), (12, true), "bounded by max_fields");
        g.check_invariants();
        let mut total = n;
        for _ in 0..10 {
            let (n, more) = g.expire_fields_cycle(
                200,
                12,
                || {
                    versions += 1;
                    versions
                },
                |_, k| seen.push(k.to_vec()),
            );
            total += n;
            g.check_invariants();
            if !more {
                break;
            }
        }
        assert_eq!(total, 5 * 5 + 5 * 4);
        assert_eq!(g.stats.expired_fields, 45);
        let pending = g.take_pending();
        assert!(
            pending.iter().any(|p| matches!(p, Pending::Delta { .. })),
            "HDEL deltas"
        );
        drop(g);
        for k in 0..10 {
            let want = (k % 2 == 1).then_some(1);
            assert_eq!(hash_len(&ks, format!("h{k}").as_bytes()), want, "h{k}");
        }
        check(&ks);
    }

    #[test]
    fn field_expiry_index_follows_deadlines_moved_earlier_and_later() {
        let ks = Keyspace::new(1, 1, 6);
        put_hash(&ks, b"h", 3, |i| Some(1000 + i as u64));
        let slot = key_slot(b"h");
        {
            let mut g = ks.lock(0);
            let mut e = g.lookup(0, slot, b"h", 0, true).unwrap();
            let Some(Object::Hash(h)) = e.object_mut() else {
                panic!()
            };
            h.set_field_expire(b"f2", 10); // earlier: indexed again
            h.persist_field(b"f0"); // f1 at 1001 remains
        }
        check(&ks);
        let mut g = ks.lock(0);
        assert_eq!(g.expire_fields_cycle(10, 100, || 7, |_, _| {}).0, 1);
        g.check_invariants();
        assert_eq!(g.expire_fields_cycle(1000, 100, || 8, |_, _| {}).0, 0);
        assert_eq!(g.expire_fields_cycle(1001, 100, || 9, |_, _| {}).0, 1);
        g.check_invariants();
        drop(g);
        assert_eq!(hash_len(&ks, b"h"), Some(1));
    }

    #[test]
    fn a_field_expiry_index_full_of_stale_items_is_rebuilt() {
        let ks = Keyspace::new(1, 1, 8);
        put_hash(&ks, b"h", 2, |_| Some(1_000_000));
        let slot = key_slot(b"h");
        // Each earlier deadline pushes an item; the older ones go stale.
        for i in 0..5_000u64 {
            let mut g = ks.lock(0);
            let mut e = g.lookup(0, slot, b"h", 0, true).unwrap();
            let Some(Object::Hash(h)) = e.object_mut() else {
                panic!()
            };
            h.set_field_expire(b"f0", 900_000 - i);
        }
        let mut g = ks.lock(0);
        assert!(g.dbs[0].as_ref().unwrap().field_expiry.len() > 5_000);
        assert_eq!(g.expire_fields_cycle(1, 64, || 1, |_, _| {}), (0, false));
        assert_eq!(g.dbs[0].as_ref().unwrap().field_expiry.len(), 1, "rebuilt");
        g.check_invariants();
        assert_eq!(
            g.expire_fields_cycle(1_000_000, 64, || 2, |_, _| {}),
            (2, false)
        );
        assert_eq!(g.db_len(0), 0);
    }

    #[test]
    fn no_touch_lookups_keep_access_info_and_the_mode_ends_with_the_guard() {
        let ks = ks();
        put(&ks, b"k", b"v", None, 0);
        let slot = key_slot(b"k");
        let access = |ks: &Keyspace| {
            ks.lock(ks.shard_of(slot))
                .peek(0, slot, b"k", 0)
                .unwrap()
                .access()
        };
        let before = access(&ks);
        {
            let mut g = ks.lock(ks.shard_of(slot));
            g.set_no_touch(true);
            assert!(g.lookup_read(0, slot, b"k", 3_600_000).is_some());
        }
        assert_eq!(access(&ks), before, "no-touch lookup left the LRU clock");
        // A new guard is back to touching.
        let mut g = ks.lock(ks.shard_of(slot));
        assert!(g.lookup_read(0, slot, b"k", 3_600_000).is_some());
        drop(g);
        assert_ne!(access(&ks), before);
    }

    #[test]
    fn entry_mut_keeps_memory_and_expiry_index_right() {
        let ks = ks();
        put(&ks, b"k", b"v", None, 0);
        let slot = key_slot(b"k");
        {
            let mut g = ks.lock(ks.shard_of(slot));
            let mut e = g.lookup(0, slot, b"k", 0, true).unwrap();
            e.make_raw_string()
                .unwrap()
                .extend_from_slice(&[b'x'; 1000]);
            e.set_expire_ms(Some(5));
        }
        check(&ks);
        let mut g = ks.lock(ks.shard_of(slot));
        assert_eq!(g.expire_cycle(6, 10, |_, _| {}), (1, false));
        g.check_invariants();
        let tables = SLOTS / 4 * std::mem::size_of::<HashTable<Entry>>();
        assert_eq!(g.mem_bytes(), tables, "only empty tables remain");
    }

    #[test]
    fn versions_only_grow_across_overwrites() {
        let ks = ks();
        put(&ks, b"k", b"1", None, 100);
        let slot = key_slot(b"k");
        let v1 = ks
            .lock(ks.shard_of(slot))
            .peek(0, slot, b"k", 100)
            .unwrap()
            .version();
        put(&ks, b"k", b"2", None, 50); // clock stepped back
        let v2 = ks
            .lock(ks.shard_of(slot))
            .peek(0, slot, b"k", 100)
            .unwrap()
            .version();
        assert!(v2 > v1);
    }

    fn fill(ks: &Keyspace, n: usize, ttl_every: usize, now: u64) {
        for i in 0..n {
            let exp = (ttl_every > 0 && i % ttl_every == 0).then_some(now + 1_000_000 + i as u64);
            put(ks, format!("key:{i:06}").as_bytes(), &[b'v'; 64], exp, now);
        }
    }

    fn evict_until(ks: &Keyspace, target_keys: usize, now: u64) -> usize {
        let mut evicted = 0;
        for shard in 0..1_000_000 {
            if ks.db_size(0).0 <= target_keys {
                break;
            }
            let mut g = ks.lock(shard % ks.shard_count());
            if g.evict_one(now).is_some() {
                evicted += 1;
            }
        }
        evicted
    }

    #[test]
    fn each_policy_evicts_what_it_should() {
        for policy in Policy::ALL {
            let ks = Keyspace::new(1, 4, 9);
            ks.set_evict_config(
                EvictConfig {
                    policy,
                    samples: 5,
                    lfu: LfuParams::default(),
                    active: true,
                },
                1000,
            );
            fill(&ks, 1000, 4, 0);
            let evicted = evict_until(&ks, 900, 0);
            match policy {
                Policy::NoEviction => assert_eq!(evicted, 0),
                p if p.volatile_only() => {
                    assert_eq!(evicted, 100, "{p:?}");
                    assert_eq!(ks.db_size(0), (900, 150), "{p:?} evicts only keys with TTL");
                }
                p => assert_eq!(evicted, 100, "{p:?}"),
            }
            check(&ks);
        }
    }

    #[test]
    fn volatile_ttl_prefers_nearest_deadline() {
        let ks = Keyspace::new(1, 1, 5);
        ks.set_evict_config(
            EvictConfig {
                policy: Policy::VolatileTtl,
                samples: 10,
                lfu: LfuParams::default(),
                active: true,
            },
            100,
        );
        for i in 0..100u64 {
            put(
                &ks,
                format!("k{i}").as_bytes(),
                b"v",
                Some(1_000 + i * 1_000),
                0,
            );
        }
        let mut g = ks.lock(0);
        let mut sum = 0;
        for _ in 0..20 {
            let e = g.evict_one(0).unwrap();
            sum += String::from_utf8(e.key[1..].to_vec())
                .unwrap()
                .parse::<usize>()
                .unwrap();
        }
        // Twenty uniform picks would average 49.5; nearest-deadline sampling keeps far below.
        assert!(sum / 20 < 35, "mean index {}", sum / 20);
    }

    #[test]
    fn lru_keeps_recently_read_keys() {
        let ks = Keyspace::new(1, 2, 11);
        ks.set_evict_config(
            EvictConfig {
                policy: Policy::AllKeysLru,
                samples: 10,
                lfu: LfuParams::default(),
                active: true,
            },
            200,
        );
        fill(&ks, 200, 0, 0);
        // Keys 0..50 are read at t=100s; the others were last touched at t=0.
        for i in 0..50 {
            assert!(get(&ks, format!("key:{i:06}").as_bytes(), 100_000).is_some());
        }
        let ks_ref = &ks;
        for shard in 0..10_000 {
            if ks_ref.db_size(0).0 <= 100 {
                break;
            }
            ks_ref.lock(shard % 2).evict_one(100_000);
        }
        let kept = (0..50)
            .filter(|i| get(&ks, format!("key:{i:06}").as_bytes(), 100_000).is_some())
            .count();
        assert!(kept >= 45, "kept {kept} of 50 hot keys");
    }

    #[test]
    fn a_shard_with_fewer_keys_than_samples_offers_its_best_key_every_time() {
        let ks = Keyspace::new(1, 1, 13);
        ks.set_evict_config(
            EvictConfig {
                policy: Policy::VolatileTtl,
                samples: 5,
                lfu: LfuParams::default(),
                active: true,
            },
            1000,
        );
        for (key, expire) in [(&b"late"[..], 9_000), (b"soon", 1_000), (b"mid", 5_000)] {
            put(&ks, key, b"v", Some(expire), 0);
        }
        put(&ks, b"persistent", b"v", None, 0);
        let mut g = ks.lock(0);
        for _ in 0..50 {
            let c = g.best_candidate(0).unwrap();
            assert_eq!(c.sampled, 3, "each volatile key looked at once");
            assert_eq!(c.score, u64::MAX - 1_000, "the nearest deadline");
        }
        assert_eq!(g.evict_one(0).unwrap().key, b"soon");
    }

    #[test]
    fn tinylfu_counts_reads_and_misses_but_not_writes() {
        let ks = Keyspace::new(1, 1, 13);
        ks.set_evict_config(
            EvictConfig {
                policy: Policy::AllKeysTinyLfu,
                samples: 5,
                lfu: LfuParams::default(),
                active: true,
            },
            1000,
        );
        let freq = |key: &[u8]| {
            let g = ks.lock(0);
            g.sketch.as_ref().unwrap().estimate(g.hash(key))
        };
        assert!(get(&ks, b"k", 0).is_none());
        assert_eq!(freq(b"k"), 1, "a miss counts");
        put(&ks, b"k", b"v", None, 0);
        put(&ks, b"k", b"w", None, 0);
        assert_eq!(freq(b"k"), 1, "writes do not");
        assert!(get(&ks, b"k", 0).is_some());
        assert_eq!(freq(b"k"), 2, "a hit counts");
    }

    #[test]
    fn tinylfu_keeps_frequently_missed_keys_over_one_hit_wonders() {
        let ks = Keyspace::new(1, 1, 13);
        ks.set_evict_config(
            EvictConfig {
                policy: Policy::AllKeysTinyLfu,
                samples: 5,
                lfu: LfuParams::default(),
                active: true,
            },
            1000,
        );
        // "hot" keys are looked up (and missed) many times before they are written.
        for round in 0..5 {
            for i in 0..50 {
                let _ = round;
                assert!(get(&ks, format!("hot{i}").as_bytes(), 0).is_none());
            }
        }
        for i in 0..50 {
            put(&ks, format!("hot{i}").as_bytes(), b"v", None, 0);
        }
        for i in 0..150 {
            put(&ks, format!("cold{i}").as_bytes(), b"v", None, 0);
        }
        let mut g = ks.lock(0);
        for _ in 0..100 {
            g.evict_one(0).unwrap();
        }
        drop(g);
        let hot = (0..50)
            .filter(|i| {
                ks.lock(0)
                    .peek(
                        0,
                        key_slot(format!("hot{i}").as_bytes()),
                        format!("hot{i}").as_bytes(),
                        0,
                    )
                    .is_some()
            })
            .count();
        assert!(hot >= 45, "kept {hot} of 50 frequently requested keys");
    }

    #[test]
    fn take_and_swap_db_keep_accounting() {
        let ks = ks();
        fill(&ks, 100, 3, 0);
        for mut s in ks.lock_all() {
            s.swap_db(0, 1);
            s.check_invariants();
        }
        assert_eq!(ks.db_size(1).0, 100);
        for mut s in ks.lock_all() {
            s.take_db(1);
            s.check_invariants();
        }
        assert_eq!(ks.mem_bytes(), 0);
    }

    fn lru(samples: usize) -> EvictConfig {
        EvictConfig {
            policy: Policy::AllKeysLru,
            samples,
            lfu: LfuParams::default(),
            active: true,
        }
    }

    fn present(ks: &Keyspace, range: std::ops::Range<usize>, now: u64) -> usize {
        range
            .filter(|i| get(ks, format!("key:{i:06}").as_bytes(), now).is_some())
            .count()
    }

    #[test]
    fn the_pool_skips_pooled_keys_read_since_they_were_sampled() {
        let ks = Keyspace::new(1, 16, 5);
        ks.set_evict_config(lru(5), 2000);
        fill(&ks, 2000, 0, 0);
        // Ten evictions at t=100s fill the pool with keys of both halves, all idle for 100s.
        for i in 0..10 {
            assert!(matches!(
                ks.evict_sampled(100_000, i),
                crate::pool::Eviction::Evicted(..)
            ));
        }
        assert!(ks.evict_pool(0).lock().len() > 5);
        // At t=200s the first half is read; the second half stays idle.
        let hot = present(&ks, 0..1000, 200_000);
        for i in 0..500 {
            assert!(matches!(
                ks.evict_sampled(200_000, 10 + i),
                crate::pool::Eviction::Evicted(..)
            ));
        }
        assert_eq!(
            present(&ks, 0..1000, 200_000),
            hot,
            "no key read since it was pooled is evicted while idle keys remain"
        );
        for i in 0..16 {
            ks.lock(i).check_invariants();
        }
    }

    #[test]
    fn the_pool_evicts_idle_keys_before_recently_read_ones_across_shards() {
        let ks = Keyspace::new(1, 16, 9);
        ks.set_evict_config(lru(5), 4000);
        fill(&ks, 4000, 0, 0);
        for i in 0..400 {
            assert!(get(&ks, format!("key:{i:06}").as_bytes(), 100_000).is_some());
        }
        let mut cursor = 0;
        while ks.db_size(0).0 > 1000 {
            assert!(matches!(
                ks.evict_sampled(100_000, cursor),
                crate::pool::Eviction::Evicted(..)
            ));
            cursor += 1;
        }
        let kept = present(&ks, 0..400, 100_000);
        assert!(kept >= 396, "kept {kept} of 400 recently read keys");
        for i in 0..16 {
            ks.lock(i).check_invariants();
        }
    }

    #[test]
    fn a_batch_pass_evicts_its_victims_idle_first_and_stops_when_told() {
        let ks = Keyspace::new(1, 16, 11);
        ks.set_evict_config(lru(5), 4000);
        fill(&ks, 4000, 0, 0);
        for i in 0..400 {
            assert!(get(&ks, format!("key:{i:06}").as_bytes(), 100_000).is_some());
        }
        // Three victims per pass, each told to the caller, all keys idle since t=0.
        let mut told = 0;
        let mut cursor = 0;
        while ks.db_size(0).0 > 1000 {
            let before = ks.db_size(0).0;
            let mut pass = 0;
            let outcome = ks.evict_batch(100_000, cursor, 0, 3, |_, e| {
                assert!(e.freed_bytes > 0);
                pass += 1;
                true
            });
            assert!(matches!(outcome, crate::pool::Eviction::Evicted(..)));
            assert_eq!(before - ks.db_size(0).0, pass, "every victim told");
            assert!((1..=3).contains(&pass), "{pass} victims in one pass");
            told += pass;
            cursor += 1;
        }
        assert_eq!(told, 4000 - ks.db_size(0).0);
        let kept = present(&ks, 0..400, 100_000);
        assert!(kept >= 396, "kept {kept} of 400 recently read keys");
        // Told to stop after the first victim: one key goes.
        let before = ks.db_size(0).0;
        ks.evict_batch(100_000, cursor, 0, 3, |_, _| false);
        assert_eq!(ks.db_size(0).0, before - 1);
        for i in 0..16 {
            ks.lock(i).check_invariants();
        }
    }

    #[test]
    fn nothing_to_evict_is_said_once_every_shard_was_sampled() {
        let ks = Keyspace::new(1, 16, 3);
        ks.set_evict_config(lru(5), 100);
        assert_eq!(ks.evict_sampled(0, 0), crate::pool::Eviction::Nothing);
        ks.set_evict_config(
            EvictConfig {
                policy: Policy::VolatileLru,
                ..lru(5)
            },
            100,
        );
        fill(&ks, 100, 0, 0);
        assert_eq!(ks.evict_sampled(0, 7), crate::pool::Eviction::Nothing);
        // One key with a TTL, in whichever shard: found and evicted.
        put(&ks, b"ttl", b"v", Some(1_000_000), 0);
        assert!(matches!(
            ks.evict_sampled(0, 7),
            crate::pool::Eviction::Evicted(_, ref e) if e.key == b"ttl"
        ));
        assert_eq!(ks.db_size(0), (100, 0));
    }

    #[test]
    fn churn_leaves_no_empty_tables_behind() {
        let ks = Keyspace::new(1, 4, 2);
        fill(&ks, 20_000, 0, 0);
        let full: usize = (0..4).map(|i| ks.lock(i).mem_bytes()).sum();
        for i in 0..20_000 {
            let key = format!("key:{i:06}");
            let slot = key_slot(key.as_bytes());
            if i % 50 != 0 {
                ks.lock(ks.shard_of(slot)).remove(0, slot, key.as_bytes());
            }
        }
        for i in 0..4 {
            let g = ks.lock(i);
            g.check_invariants();
            let d = g.dbs[0].as_ref().unwrap();
            for t in d.slots.iter() {
                assert!(
                    t.capacity() == 0 || !t.is_empty(),
                    "an empty table keeps no buckets"
                );
                assert!(
                    t.capacity() < TABLE_SHRINK_CAPACITY_MIN || t.len() * 4 > t.capacity(),
                    "a table shrinks once a quarter full: {} of {}",
                    t.len(),
                    t.capacity()
                );
            }
        }
        assert!(full > 0);
    }
}
