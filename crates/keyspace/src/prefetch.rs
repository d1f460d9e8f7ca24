//! Where each slot's table of database 0 lives, published outside the shard locks, so that a
//! connection can ask the CPU to start loading the lines its *next* pipelined command will read
//! while it runs the current one.
//!
//! A lookup is a chain of dependent cache misses: the shard's mutex, its list of databases, the
//! slot table's header, its control bytes, the bucket, then the entry block (`perf annotate` of
//! `Shard::insert_quiet` under `redis-benchmark -P 16 SET` over a million keys put 8% of its
//! samples on the header, 23% on the control group and 58% on the entry; the function was 23% of
//! the profile). All but the last follow from the key alone once the shard's and the table's
//! allocations are known, so [`Hints::prefetch`] computes them from the hints here and issues
//! prefetches; by the time the command runs (after the current one, about a microsecond later)
//! the lines are in cache: server CPU per request at P16 −10 to −15% for SET and GET
//! (`bench/README.md`). The entry's address is in the bucket, which cannot be read without the
//! lock. (Tried: a second stage one command later that took the shard with `try_lock`, read the
//! bucket and prefetched the entry: GET −2% more, SET nothing; not kept.)
//!
//! Hints are only hints: each is stored when a table gains an allocation (an insert) and may go
//! stale when it is shrunk, freed or swapped. A stale hint costs a useless prefetch and nothing
//! else: a prefetch never faults and never changes what a load sees, and no code reads through a
//! hint. The layout assumption (hashbrown keeps bucket `i` at `ctrl - (i + 1) * size_of::<T>()`
//! and starts probing at `hash & bucket_mask`) affects only whether the prefetched lines are the
//! right ones.

use std::hash::BuildHasher;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering::Relaxed};

use crate::entry::Entry;
use crate::slot::SLOTS;

/// The slot tables of database 0: where their control bytes start and how many buckets they have.
#[derive(Debug)]
pub struct Hints {
    /// Per slot: the address of the table's control bytes (the end of its buckets) in the low
    /// [`ADDRESS_BITS`], the log2 of its bucket count above; 0 if none. One word, so a hint is
    /// one cache miss, not two.
    tables: Box<[AtomicU64]>,
    /// Per shard: the lines a lookup in database 0 reads before the slot table's header (see
    /// [`ShardLines`]), and that header array's address.
    shards: Box<[ShardLines]>,
    /// The keyspace's hasher seed (each shard adds its index, see [`Hints::hasher`]).
    seed: u64,
    shard_mask: usize,
    shift: u32,
}

impl Hints {
    pub(crate) fn new(shards: usize, seed: u64) -> Self {
        Hints {
            tables: (0..SLOTS).map(|_| AtomicU64::new(0)).collect(),
            shards: (0..shards).map(|_| ShardLines::default()).collect(),
            seed,
            shard_mask: shards - 1,
            shift: shards.trailing_zeros(),
        }
    }

    /// The hasher of shard `index`, as the shard builds it.
    pub(crate) fn hasher(seed: u64, index: usize) -> foldhash::fast::FixedState {
        foldhash::fast::FixedState::with_seed(seed.wrapping_add(index as u64))
    }

    /// Notes where `slot`'s table is, from one of its full buckets: `entry` (its address) at bucket `index` of
    /// a table of `buckets` buckets. Called by the shard (under its lock) after an insert.
    #[inline]
    pub(crate) fn note_table(&self, slot: u16, entry: usize, index: usize, buckets: usize) {
        let ctrl = entry + (index + 1) * std::mem::size_of::<Entry>();
        debug_assert!(buckets.is_power_of_two());
        let packed = match u64::try_from(ctrl) {
            Ok(at) if at >> ADDRESS_BITS == 0 => {
                at | u64::from(buckets.trailing_zeros()) << ADDRESS_BITS
            }
            _ => 0,
        };
        let t = &self.tables[slot as usize];
        if t.load(Relaxed) != packed {
            t.store(packed, Relaxed);
        }
    }

    /// Notes where shard `index`'s database 0 is (its `DbShard`) and keeps its slot table
    /// headers.
    #[inline]
    pub(crate) fn note_db(&self, index: usize, db: usize, headers: usize) {
        let l = &self.shards[index];
        if l.headers.load(Relaxed) != headers {
            l.headers.store(headers, Relaxed);
        }
        if l.db.load(Relaxed) != db {
            l.db.store(db, Relaxed);
        }
    }

    /// Notes where shard `index` keeps its list of databases: the field and its buffer.
    pub(crate) fn note_shard(&self, index: usize, field: usize, buffer: usize) {
        self.shards[index].field.store(field, Relaxed);
        self.shards[index].buffer.store(buffer, Relaxed);
    }

    /// Where `key` (in `slot`) lives: its shard's index, its slot's index in that shard and its
    /// hash there.
    #[inline]
    pub(crate) fn locate(&self, slot: u16, key: &[u8]) -> (usize, u16, u32, u64) {
        let index = slot as usize & self.shard_mask;
        let hash = Self::hasher(self.seed, index).hash_one(key);
        (index, slot, u32::from(slot) >> self.shift, hash)
    }

    /// Asks the CPU to load what a lookup of `key` in database `db` will read first: the shard's
    /// lock word (`lock`), its list of databases, database 0's part of it, the slot table's
    /// header, the control group and bucket where its probe starts. Only a hint, for database 0.
    #[inline]
    pub(crate) fn prefetch(&self, lock: impl Fn(usize) -> usize, db: usize, slot: u16, key: &[u8]) {
        if db != 0 {
            return;
        }
        let (index, slot, local, hash) = self.locate(slot, key);
        fetch(lock(index));
        let l = &self.shards[index];
        fetch(l.field.load(Relaxed));
        fetch(l.buffer.load(Relaxed));
        fetch(l.db.load(Relaxed));
        let headers = l.headers.load(Relaxed);
        if headers != 0 {
            fetch(headers + local as usize * std::mem::size_of::<hashbrown::HashTable<Entry>>());
        }
        let (ctrl, mask) = unpack(self.tables[slot as usize].load(Relaxed));
        if ctrl == 0 {
            return;
        }
        let pos = hash as usize & mask;
        fetch(ctrl + pos);
        // The probe's group covers buckets `pos..pos + GROUP`: its first and last lines.
        fetch(ctrl - (pos + 1) * std::mem::size_of::<Entry>());
        fetch(ctrl - (pos + GROUP) * std::mem::size_of::<Entry>());
    }
}

/// Addresses of one shard's lines that a lookup reads on its way to a slot table, 0 while unknown.
#[derive(Debug, Default)]
#[repr(align(64))]
struct ShardLines {
    /// The shard's `dbs` field (the vector's pointer), a line of its own past the lock word.
    field: AtomicUsize,
    /// `dbs`' buffer (database 0's box pointer).
    buffer: AtomicUsize,
    /// Database 0's `DbShard` (its slot tables' pointer).
    db: AtomicUsize,
    /// Database 0's first slot table header.
    headers: AtomicUsize,
}

/// Control bytes hashbrown reads at once (one SSE2 group).
const GROUP: usize = 16;

/// Bits of a table hint that hold the address (user space on x86-64 and AArch64 is below 2^48).
const ADDRESS_BITS: u32 = 56;

/// A table hint's control-byte address and bucket mask.
#[inline(always)]
fn unpack(hint: u64) -> (usize, usize) {
    let ctrl = (hint & ((1 << ADDRESS_BITS) - 1)) as usize;
    let mask = (1usize << (hint >> ADDRESS_BITS)) - 1;
    (ctrl, mask)
}

/// A prefetch of the line holding `addr`: a hint that reads nothing and cannot fault, whatever
/// `addr` is.
#[inline(always)]
pub(crate) fn fetch(addr: usize) {
    #[cfg(target_arch = "x86_64")]
    // SAFETY: `_mm_prefetch` dereferences nothing; an invalid address is ignored by the CPU.
    unsafe {
        use std::arch::x86_64::{_MM_HINT_T0, _mm_prefetch};
        _mm_prefetch::<_MM_HINT_T0>(addr as *const i8);
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = addr;
}

/// A prefetch for writing of the line holding `addr` (`prefetchw`: the line arrives owned, so the
/// store that follows does not wait for it); a hint, as [`fetch`].
#[inline(always)]
pub fn fetch_for_write(addr: usize) {
    #[cfg(target_arch = "x86_64")]
    // SAFETY: as `fetch`: nothing is dereferenced; an invalid address is ignored by the CPU.
    unsafe {
        use std::arch::x86_64::{_MM_HINT_ET0, _mm_prefetch};
        _mm_prefetch::<_MM_HINT_ET0>(addr as *const i8);
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = addr;
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Keyspace;
    use crate::slot::key_slot;

    /// The hint of a table points where hashbrown keeps its buckets: the bucket a key's probe
    /// starts at, or one of the group's next, holds the key's entry.
    #[test]
    fn a_hint_locates_the_bucket_a_lookup_starts_at() {
        let ks = Keyspace::new(1, 4, 7);
        let now = 1;
        for i in 0..2_000u32 {
            let key = format!("key:{i}");
            let slot = key_slot(key.as_bytes());
            let mut s = ks.lock(ks.shard_of(slot));
            s.insert(
                0,
                slot,
                Entry::new_string(key.as_bytes(), b"v", None, 1),
                now,
            );
        }
        let hints = ks.hints();
        let mut near = 0;
        for i in 0..2_000u32 {
            let key = format!("key:{i}");
            let slot = key_slot(key.as_bytes()) as usize;
            let (index, _, _, hash) = hints.locate(slot as u16, key.as_bytes());
            let (ctrl, mask) = unpack(hints.tables[slot].load(Relaxed));
            assert_ne!(ctrl, 0, "every table with keys has a hint");
            assert_ne!(
                hints.shards[index].db.load(Relaxed),
                0,
                "database 0 is known"
            );
            let start = hash as usize & mask;
            let s = ks.lock(index);
            let found = s
                .entry_address(0, slot as u16, key.as_bytes())
                .expect("present");
            let bucket = (ctrl - found) / std::mem::size_of::<Entry>() - 1;
            drop(s);
            assert!(bucket <= mask, "the entry lies in the hinted table");
            if (bucket.wrapping_sub(start) & mask) < 16 {
                near += 1;
            }
        }
        assert!(
            near > 1_900,
            "most entries sit in their probe's first group: {near}"
        );
    }
}
