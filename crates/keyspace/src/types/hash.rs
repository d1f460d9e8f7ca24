//! Hash: field → value. Compact: `listpack` (every pair in one buffer, linear search). Large:
//! `hashtable` (an open-addressing table ordered by hash, see [`Table`]).
//!
//! Like Redis, a hash starts as a listpack and converts to a hashtable, never back, once it holds
//! more than `hash-max-listpack-entries` pairs or a field or value longer than
//! `hash-max-listpack-value` bytes. The listpack is the memory win: a hash of ten small fields is one
//! allocation of about `20 × (1 + len)` bytes.
//!
//! [`Table`] lives here and is shared with `set.rs`: both need a table whose SCAN cursor survives
//! resizes, and whose items are single allocations.

use std::hash::BuildHasher;
use std::marker::PhantomData;

use foldhash::fast::RandomState;

use super::EncodingLimits;
use crate::codec::{get_bytes, get_varint, put_bytes, put_varint};
use crate::evict::Rng;

/// A listpack never grows past this, whatever the thresholds say (Redis's `lpSafeToAdd`, 1 GB).
pub const LISTPACK_BYTES_MAX: usize = 1 << 30;

/// A hash value.
#[derive(Clone)]
pub struct Hash {
    repr: Repr,
}

#[derive(Clone)]
enum Repr {
    /// No field has ever had a TTL.
    Plain(Pairs),
    /// A hash that has had a field TTL (HEXPIRE and friends): its pairs and the deadlines of its
    /// fields. Boxed and separate so that hashes without field TTLs pay nothing, not even a word:
    /// `Hash` stays 24 bytes. Like Redis's `listpackex`, a hash never goes back once it has been
    /// given a field TTL.
    Ex(Box<Ex>),
}

/// A hash's pairs.
#[derive(Clone)]
enum Pairs {
    /// Pairs, each `varint field_len, field, varint value_len, value`, in insertion order. No
    /// count is kept: HLEN walks the buffer (a listpack is small by definition), and leaving it
    /// out keeps `Hash` at 24 bytes, which is what sizes every key's `Object`.
    Pack(Vec<u8>),
    /// Items are `varint field_len, field, value` (the value's length is what remains).
    Table(Box<Table<FieldKey>>),
}

/// The parts of a hash with field TTLs.
#[derive(Clone)]
struct Ex {
    base: Pairs,
    ttl: FieldTtls,
}

/// Field deadlines kept in a sorted vector up to this many; beyond, in a map and a tree.
const TTL_SMALL_MAX: usize = 64;
/// Estimated heap bytes of one field deadline in the large form, beyond the field's bytes (a
/// table slot and a tree slot).
const TTL_LARGE_ENTRY_BYTES: usize = 64;
const TTL_SMALL_ENTRY_BYTES: usize = std::mem::size_of::<(u64, Box<[u8]>)>();

/// Field → deadline (absolute unix ms), ordered by deadline so the due fields are found without
/// a walk.
#[derive(Clone, Default)]
struct FieldTtls {
    store: TtlStore,
    /// Heap bytes of the field copies (running total; the small form adds its vector).
    bytes: usize,
    /// The deadline for which the shard's field-expiry index holds an item for this hash (see
    /// `Shard::expire_fields_cycle`); `None` when it holds none.
    indexed_at: Option<u64>,
}

#[derive(Clone)]
enum TtlStore {
    /// (deadline, field) sorted: one allocation plus the fields, about 24 + 8..16 bytes a field
    /// (Redis's listpackex spends a few bytes); found by a linear scan, as in a listpack.
    Small(Vec<(u64, Box<[u8]>)>),
    /// Past `TTL_SMALL_MAX`: O(1) lookup by field and O(log n) by deadline.
    Large {
        by_field: hashbrown::HashMap<Box<[u8]>, u64, foldhash::fast::FixedState>,
        by_time: std::collections::BTreeSet<(u64, Box<[u8]>)>,
    },
}

impl Default for TtlStore {
    fn default() -> Self {
        TtlStore::Small(Vec::new())
    }
}

impl FieldTtls {
    fn field_bytes(&self, field: &[u8]) -> usize {
        match self.store {
            TtlStore::Small(_) => alloc_bytes(field.len()),
            TtlStore::Large { .. } => 2 * field.len() + TTL_LARGE_ENTRY_BYTES,
        }
    }

    fn len(&self) -> usize {
        match &self.store {
            TtlStore::Small(v) => v.len(),
            TtlStore::Large { by_field, .. } => by_field.len(),
        }
    }

    fn get(&self, field: &[u8]) -> Option<u64> {
        match &self.store {
            TtlStore::Small(v) => v.iter().find(|(_, f)| &f[..] == field).map(|(at, _)| *at),
            TtlStore::Large { by_field, .. } => by_field.get(field).copied(),
        }
    }

    fn set(&mut self, field: &[u8], at_ms: u64) {
        if self.remove(field).is_none()
            && matches!(&self.store, TtlStore::Small(v) if v.len() >= TTL_SMALL_MAX)
        {
            self.grow();
        }
        self.bytes += self.field_bytes(field);
        match &mut self.store {
            TtlStore::Small(v) => {
                let item = (at_ms, Box::<[u8]>::from(field));
                let pos = v.partition_point(|x| *x < item);
                // Tight, as a listpack is: at most TTL_SMALL_MAX entries to move.
                v.reserve_exact(1);
                v.insert(pos, item);
            }
            TtlStore::Large { by_field, by_time } => {
                by_field.insert(field.into(), at_ms);
                by_time.insert((at_ms, field.into()));
            }
        }
    }

    fn remove(&mut self, field: &[u8]) -> Option<u64> {
        let at = match &mut self.store {
            TtlStore::Small(v) => {
                let pos = v.iter().position(|(_, f)| &f[..] == field)?;
                let at = v.remove(pos).0;
                if v.capacity() > 2 * v.len() + 4 || v.is_empty() {
                    v.shrink_to_fit();
                }
                at
            }
            TtlStore::Large { by_field, by_time } => {
                let at = by_field.remove(field)?;
                by_time.remove(&(at, Box::from(field)));
                at
            }
        };
        self.bytes -= self.field_bytes(field);
        Some(at)
    }

    /// The small form outgrew itself: move to the map and the tree, for good.
    fn grow(&mut self) {
        let TtlStore::Small(v) = std::mem::take(&mut self.store) else {
            return;
        };
        self.store = TtlStore::Large {
            by_field: v.iter().map(|(at, f)| (f.clone(), *at)).collect(),
            by_time: v.iter().cloned().collect(),
        };
        self.bytes = v.iter().map(|(_, f)| self.field_bytes(f)).sum();
    }

    /// The earliest (deadline, field).
    fn first(&self) -> Option<(u64, &[u8])> {
        match &self.store {
            TtlStore::Small(v) => v.first(),
            TtlStore::Large { by_time, .. } => by_time.first(),
        }
        .map(|(at, f)| (*at, &f[..]))
    }

    /// Every (deadline, field), earliest first.
    fn iter(&self) -> impl Iterator<Item = (u64, &[u8])> {
        let (small, large) = match &self.store {
            TtlStore::Small(v) => (Some(v.iter()), None),
            TtlStore::Large { by_time, .. } => (None, Some(by_time.iter())),
        };
        small
            .into_iter()
            .flatten()
            .chain(large.into_iter().flatten())
            .map(|(at, f)| (*at, &f[..]))
    }

    fn min(&self) -> Option<u64> {
        self.first().map(|(at, _)| at)
    }

    fn mem_bytes(&self) -> usize {
        let vec = match &self.store {
            TtlStore::Small(v) => v.capacity() * TTL_SMALL_ENTRY_BYTES,
            TtlStore::Large { .. } => 0,
        };
        std::mem::size_of::<Ex>() + vec + self.bytes
    }

    /// `mem_bytes` from scratch.
    fn recount_mem_bytes(&self) -> usize {
        let vec = match &self.store {
            TtlStore::Small(v) => v.capacity() * TTL_SMALL_ENTRY_BYTES,
            TtlStore::Large { .. } => 0,
        };
        std::mem::size_of::<Ex>()
            + vec
            + self.iter().map(|(_, f)| self.field_bytes(f)).sum::<usize>()
    }

    /// Panics if the forms disagree or are out of order (tests).
    fn check_invariants(&self) {
        let all: Vec<(u64, &[u8])> = self.iter().collect();
        assert!(
            all.windows(2).all(|w| w[0] < w[1]),
            "field deadlines out of order"
        );
        if let TtlStore::Large { by_field, by_time } = &self.store {
            assert_eq!(
                by_field.len(),
                by_time.len(),
                "field deadline indexes disagree"
            );
            for (at, f) in by_time {
                assert_eq!(by_field.get(f), Some(at), "field deadline indexes disagree");
            }
        }
    }
}

impl Default for Hash {
    fn default() -> Self {
        Hash {
            repr: Repr::Plain(Pairs::Pack(Vec::new())),
        }
    }
}

impl std::fmt::Debug for Hash {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Hash")
            .field("encoding", &self.encoding())
            .field("len", &self.len())
            .finish()
    }
}

/// Equal when they hold the same pairs and field deadlines, whatever their encodings.
impl PartialEq for Hash {
    fn eq(&self, other: &Self) -> bool {
        self.len() == other.len()
            && self.iter().all(|(f, v)| other.get(f) == Some(v))
            && self.field_ttl_count() == other.field_ttl_count()
            && self
                .field_ttls()
                .all(|(f, at)| other.field_expire_at(f) == Some(at))
    }
}

impl Hash {
    /// The pairs' representation (`Pack` or `Table`).
    fn base(&self) -> &Pairs {
        match &self.repr {
            Repr::Plain(p) => p,
            Repr::Ex(x) => &x.base,
        }
    }

    fn base_mut(&mut self) -> &mut Pairs {
        match &mut self.repr {
            Repr::Plain(p) => p,
            Repr::Ex(x) => &mut x.base,
        }
    }

    fn ttl(&self) -> Option<&FieldTtls> {
        match &self.repr {
            Repr::Ex(x) => Some(&x.ttl),
            _ => None,
        }
    }

    fn ttl_mut(&mut self) -> Option<&mut FieldTtls> {
        match &mut self.repr {
            Repr::Ex(x) => Some(&mut x.ttl),
            _ => None,
        }
    }

    /// The deadline (absolute unix ms) of `field`, if it has one.
    pub fn field_expire_at(&self, field: &[u8]) -> Option<u64> {
        self.ttl()?.get(field)
    }

    /// Gives an existing `field` a deadline (absolute unix ms); returns false if there is no such
    /// field. The first one makes this a hash with field TTLs for good (`listpackex`).
    pub fn set_field_expire(&mut self, field: &[u8], at_ms: u64) -> bool {
        if !self.contains(field) {
            return false;
        }
        if let Repr::Plain(p) = &mut self.repr {
            let base = std::mem::replace(p, Pairs::Pack(Vec::new()));
            self.repr = Repr::Ex(Box::new(Ex {
                base,
                ttl: FieldTtls::default(),
            }));
        }
        self.ttl_mut().expect("made Ex above").set(field, at_ms);
        true
    }

    /// Removes `field`'s deadline; returns whether it had one.
    pub fn persist_field(&mut self, field: &[u8]) -> bool {
        self.ttl_mut().is_some_and(|t| t.remove(field).is_some())
    }

    /// Fields that have a deadline.
    pub fn field_ttl_count(&self) -> usize {
        self.ttl().map_or(0, FieldTtls::len)
    }

    /// Every (field, deadline), earliest first.
    pub fn field_ttls(&self) -> impl Iterator<Item = (&[u8], u64)> {
        self.ttl()
            .into_iter()
            .flat_map(|t| t.iter().map(|(at, f)| (f, at)))
    }

    /// The earliest field deadline.
    pub fn min_field_expire(&self) -> Option<u64> {
        self.ttl()?.min()
    }

    /// Whether some field's deadline is at or before `now_ms` (it has expired: a field expires
    /// when its deadline is reached, as a key does).
    pub fn has_due_fields(&self, now_ms: u64) -> bool {
        self.min_field_expire().is_some_and(|at| at <= now_ms)
    }

    /// Deletes up to `max` expired fields (deadline at or before `now_ms`), earliest first,
    /// calling `f` on each; returns how many.
    pub fn remove_due_fields(
        &mut self,
        now_ms: u64,
        max: usize,
        mut f: impl FnMut(&[u8]),
    ) -> usize {
        let mut n = 0;
        while n < max {
            let Some(t) = self.ttl_mut() else { break };
            let field: Box<[u8]> = match t.first() {
                Some((at, field)) if at <= now_ms => field.into(),
                _ => break,
            };
            let removed = self.remove(&field);
            debug_assert!(removed, "a field with a deadline exists");
            f(&field);
            n += 1;
        }
        n
    }

    /// The deadline the shard's field-expiry index holds an item for.
    pub(crate) fn indexed_at(&self) -> Option<u64> {
        self.ttl()?.indexed_at
    }

    pub(crate) fn set_indexed_at(&mut self, at_ms: Option<u64>) {
        if let Some(t) = self.ttl_mut() {
            t.indexed_at = at_ms;
        }
    }

    pub fn new(_limits: &EncodingLimits) -> Self {
        Hash::default()
    }

    pub fn len(&self) -> usize {
        match self.base() {
            Pairs::Pack(buf) => PackIter { buf, pos: 0 }.count(),
            Pairs::Table(t) => t.len(),
        }
    }

    pub fn is_empty(&self) -> bool {
        match self.base() {
            Pairs::Pack(buf) => buf.is_empty(),
            Pairs::Table(t) => t.is_empty(),
        }
    }

    /// Heap bytes held (running total, O(1)).
    pub fn mem_bytes(&self) -> usize {
        let ttl = self.ttl().map_or(0, FieldTtls::mem_bytes);
        ttl + match self.base() {
            Pairs::Pack(buf) => buf.capacity(),
            Pairs::Table(t) => t.mem_bytes(),
        }
    }

    /// `OBJECT ENCODING` name (Redis 7.4's `listpackex` for a listpack with field TTLs).
    pub fn encoding(&self) -> &'static str {
        match (self.base(), self.ttl().is_some()) {
            (Pairs::Pack(_), false) => "listpack",
            (Pairs::Pack(_), true) => "listpackex",
            _ => "hashtable",
        }
    }

    pub fn get(&self, field: &[u8]) -> Option<&[u8]> {
        match self.base() {
            Pairs::Pack(buf) => pack_find(buf, field).ok().map(|p| &buf[p.value.clone()]),
            Pairs::Table(t) => t.get(field).map(|item| split_item(item).1),
        }
    }

    pub fn contains(&self, field: &[u8]) -> bool {
        self.get(field).is_some()
    }

    /// Sets `field` to `value`; returns true if the field is new. Converts to a hashtable when the
    /// pair or the count exceeds `limits`.
    /// Setting a field clears its deadline, as HSET does in Redis 7.4 (HINCRBY puts it back).
    pub fn insert(&mut self, field: &[u8], value: &[u8], limits: &EncodingLimits) -> bool {
        if let Some(t) = self.ttl_mut() {
            t.remove(field);
        }
        if let Pairs::Pack(buf) = self.base_mut() {
            let too_long = field.len() > limits.hash_max_listpack_value
                || value.len() > limits.hash_max_listpack_value
                || buf.len() + field.len() + value.len() + 20 > LISTPACK_BYTES_MAX;
            if !too_long {
                let count = match pack_find(buf, field) {
                    Ok(p) => {
                        pack_replace_value(buf, p.value_len_at..p.value.end, value);
                        return false;
                    }
                    Err(count) => count,
                };
                buf.reserve_exact(
                    varint_len(field.len()) + field.len() + varint_len(value.len()) + value.len(),
                );
                put_bytes(buf, field);
                put_bytes(buf, value);
                if count + 1 > limits.hash_max_listpack_entries {
                    self.convert();
                }
                return true;
            }
            self.convert();
        }
        let Pairs::Table(t) = self.base_mut() else {
            unreachable!("converted above")
        };
        match t.find(field) {
            Ok(pos) => {
                // A value of the same length (a counter, a refreshed field) is written over the
                // old one in its item: no allocation, no free.
                let value_at = varint_len(field.len()) + field.len();
                let item = t.item_bytes_mut(pos);
                if item.len() - value_at == value.len() {
                    item[value_at..].copy_from_slice(value);
                } else {
                    t.replace_at(pos, make_item(field, value));
                }
                false
            }
            Err(_) => {
                t.insert_new(make_item(field, value));
                true
            }
        }
    }

    /// Removes `field` (and its deadline); returns true if it was there.
    pub fn remove(&mut self, field: &[u8]) -> bool {
        if let Some(t) = self.ttl_mut() {
            t.remove(field);
        }
        match self.base_mut() {
            Pairs::Pack(buf) => {
                let Ok(p) = pack_find(buf, field) else {
                    return false;
                };
                buf.drain(p.start..p.value.end);
                shrink_if_slack(buf);
                true
            }
            Pairs::Table(t) => match t.find(field) {
                Ok(pos) => {
                    t.remove_at(pos);
                    true
                }
                Err(_) => false,
            },
        }
    }

    /// Every pair: insertion order for a listpack, hash order for a hashtable.
    pub fn iter(&self) -> Iter<'_> {
        match self.base() {
            Pairs::Pack(buf) => Iter::Pack(PackIter { buf, pos: 0 }),
            Pairs::Table(t) => Iter::Table(t.slots.iter()),
        }
    }

    /// One uniformly random pair.
    pub fn random_entry(&self, rng: &mut Rng) -> Option<(&[u8], &[u8])> {
        if self.is_empty() {
            return None;
        }
        match self.base() {
            Pairs::Pack(_) => {
                let all: Vec<_> = self.iter().collect();
                Some(all[rng.below(all.len())])
            }
            Pairs::Table(t) => Some(split_item(t.item(t.random_pos(rng)))),
        }
    }

    /// A picker of uniformly random pairs, for many picks with repetition (HRANDFIELD with a
    /// negative count): a listpack is indexed once instead of walked per pick.
    pub fn sampler(&self) -> Sampler<'_> {
        match self.base() {
            Pairs::Pack(_) => Sampler::All(self.iter().collect()),
            Pairs::Table(t) => Sampler::Table(t),
        }
    }

    /// `count` distinct random pairs, in no particular order; every pair if `count >= len`.
    pub fn random_distinct(&self, count: usize, rng: &mut Rng) -> Vec<(&[u8], &[u8])> {
        match self.base() {
            Pairs::Table(t) if count.saturating_mul(3) <= t.len() => t
                .random_distinct_positions(count, rng)
                .into_iter()
                .map(|p| split_item(t.item(p)))
                .collect(),
            _ => {
                let mut all: Vec<_> = self.iter().collect();
                partial_shuffle(&mut all, count, rng);
                all
            }
        }
    }

    /// HSCAN: calls `f` on about `count` pairs from `cursor` on and returns the next cursor (0 when
    /// done). A listpack is returned whole with cursor 0, as Redis does. For a hashtable, see
    /// [`Table::scan`]: a pair present for the whole scan is returned at least once.
    pub fn scan<'a>(
        &'a self,
        cursor: u64,
        count: usize,
        mut f: impl FnMut(&'a [u8], &'a [u8]),
    ) -> u64 {
        match self.base() {
            Pairs::Pack(_) => {
                for (k, v) in self.iter() {
                    f(k, v);
                }
                0
            }
            Pairs::Table(t) => t.scan(cursor, count, |item| {
                let (k, v) = split_item(item);
                f(k, v)
            }),
        }
    }

    /// Appends the value's serialized form: `varint count`, then `count` × (field, value) as
    /// length-prefixed bytes.
    pub fn encode(&self, out: &mut Vec<u8>) {
        put_varint(out, self.len() as u64);
        for (f, v) in self.iter() {
            put_bytes(out, f);
            put_bytes(out, v);
        }
    }

    /// Parses a serialized form; `None` if malformed (truncated, trailing bytes, empty, or a field
    /// given twice). The encoding follows `limits`, as when Redis loads a hash.
    pub fn decode(b: &[u8], limits: &EncodingLimits) -> Option<Self> {
        let (count, mut rest) = get_varint(b)?;
        // Each pair takes at least two bytes: bounds the work before anything is allocated.
        if count == 0 || count > (rest.len() / 2) as u64 {
            return None;
        }
        let mut h = Hash::new(limits);
        for _ in 0..count {
            let (f, r) = get_bytes(rest)?;
            let (v, r) = get_bytes(r)?;
            rest = r;
            if !h.insert(f, v, limits) {
                return None;
            }
        }
        rest.is_empty().then_some(h)
    }

    /// Appends the field deadlines: `varint count`, then `count` × (field, varint deadline ms).
    /// Written after [`Hash::encode`] for a hash with field TTLs (see `codec.rs`).
    pub fn encode_field_ttls(&self, out: &mut Vec<u8>) {
        put_varint(out, self.field_ttl_count() as u64);
        for (f, at) in self.field_ttls() {
            put_bytes(out, f);
            put_varint(out, at);
        }
    }

    /// Parses what [`Hash::encode_field_ttls`] wrote, giving those fields their deadlines;
    /// returns the rest, or `None` if malformed (a field absent from the hash, or given twice).
    pub fn decode_field_ttls<'b>(&mut self, b: &'b [u8]) -> Option<&'b [u8]> {
        let (count, mut rest) = get_varint(b)?;
        if count > (rest.len() / 2) as u64 {
            return None;
        }
        for _ in 0..count {
            let (f, r) = get_bytes(rest)?;
            let (at, r) = get_varint(r)?;
            rest = r;
            if self.field_expire_at(f).is_some() || !self.set_field_expire(f, at) {
                return None;
            }
        }
        Some(rest)
    }

    /// `mem_bytes` recomputed from scratch (tests compare it with the running total).
    pub fn recount_mem_bytes(&self) -> usize {
        let ttl = self.ttl().map_or(0, FieldTtls::recount_mem_bytes);
        ttl + match self.base() {
            Pairs::Pack(buf) => buf.capacity(),
            Pairs::Table(t) => t.recount_mem_bytes(),
        }
    }

    /// Panics if an internal invariant is broken (tests).
    pub fn check_invariants(&self) {
        match self.base() {
            Pairs::Pack(buf) => {
                let mut pos = 0;
                while pos < buf.len() {
                    let (_, after_f) = read_bytes(buf, pos);
                    pos = read_bytes(buf, after_f).1;
                }
                assert_eq!(pos, buf.len(), "listpack ends inside an entry");
            }
            Pairs::Table(t) => t.check_invariants(),
        }
        if let Some(t) = self.ttl() {
            t.check_invariants();
            for (_, f) in t.iter() {
                assert!(self.contains(f), "a deadline for a missing field");
            }
        }
        assert_eq!(self.mem_bytes(), self.recount_mem_bytes());
    }

    fn convert(&mut self) {
        let Pairs::Pack(buf) = self.base() else {
            return;
        };
        let mut t = Table::with_capacity(self.len() + 1);
        for (f, v) in (PackIter { buf, pos: 0 }) {
            t.insert_new(make_item(f, v));
        }
        *self.base_mut() = Pairs::Table(Box::new(t));
    }
}

/// Iterator over a hash's pairs.
pub enum Iter<'a> {
    Pack(PackIter<'a>),
    Table(std::slice::Iter<'a, Option<Box<[u8]>>>),
}

impl<'a> Iterator for Iter<'a> {
    type Item = (&'a [u8], &'a [u8]);

    fn next(&mut self) -> Option<Self::Item> {
        match self {
            Iter::Pack(p) => p.next(),
            Iter::Table(it) => it.find_map(|s| s.as_deref()).map(split_item),
        }
    }
}

/// Random picks with repetition; see [`Hash::sampler`].
pub enum Sampler<'a> {
    All(Vec<(&'a [u8], &'a [u8])>),
    Table(&'a Table<FieldKey>),
}

impl<'a> Sampler<'a> {
    /// A uniformly random pair; the hash must not be empty.
    pub fn pick(&self, rng: &mut Rng) -> (&'a [u8], &'a [u8]) {
        match self {
            Sampler::All(v) => v[rng.below(v.len())],
            Sampler::Table(t) => split_item(t.item(t.random_pos(rng))),
        }
    }
}

/// Walks a listpack buffer.
pub struct PackIter<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Iterator for PackIter<'a> {
    type Item = (&'a [u8], &'a [u8]);

    fn next(&mut self) -> Option<Self::Item> {
        if self.pos >= self.buf.len() {
            return None;
        }
        let (f, after_f) = read_bytes(self.buf, self.pos);
        let (v, after_v) = read_bytes(self.buf, after_f);
        self.pos = after_v;
        Some((f, v))
    }
}

/// Where a pair sits in a listpack.
struct PackPos {
    start: usize,
    value_len_at: usize,
    value: std::ops::Range<usize>,
}

/// Where `field` is, or how many pairs the listpack holds (the walk counts them on the way).
fn pack_find(buf: &[u8], field: &[u8]) -> Result<PackPos, usize> {
    let mut pos = 0;
    let mut count = 0;
    while pos < buf.len() {
        let (f, after_f) = read_bytes(buf, pos);
        let (vlen, n) = read_len(buf, after_f);
        let value = after_f + n..after_f + n + vlen;
        if f == field {
            return Ok(PackPos {
                start: pos,
                value_len_at: after_f,
                value,
            });
        }
        pos = value.end;
        count += 1;
    }
    Err(count)
}

/// Replaces the length-prefixed value at `span` with `value`, keeping the buffer's capacity tight.
fn pack_replace_value(buf: &mut Vec<u8>, span: std::ops::Range<usize>, value: &[u8]) {
    let (cur_len, n) = read_len(buf, span.start);
    debug_assert_eq!(span.len(), n + cur_len);
    if cur_len == value.len() {
        buf[span.start + n..span.end].copy_from_slice(value);
        return;
    }
    let mut enc = Vec::with_capacity(10 + value.len());
    put_bytes(&mut enc, value);
    if enc.len() > span.len() {
        buf.reserve_exact(enc.len() - span.len());
    }
    buf.splice(span, enc);
    shrink_if_slack(buf);
}

/// Gives back memory once a quarter of a listpack's buffer is unused (Redis reallocs on every
/// delete; this keeps the same tightness with fewer reallocations).
pub(crate) fn shrink_if_slack(buf: &mut Vec<u8>) {
    if buf.capacity() - buf.len() > buf.len() / 4 + 8 {
        buf.shrink_to_fit();
    }
}

/// Fisher–Yates over the first `count` places: afterwards `v[..count]` is a uniform random sample,
/// and `v` is truncated to it.
pub(crate) fn partial_shuffle<T>(v: &mut Vec<T>, count: usize, rng: &mut Rng) {
    let count = count.min(v.len());
    for i in 0..count {
        let j = i + rng.below(v.len() - i);
        v.swap(i, j);
    }
    v.truncate(count);
}

pub(crate) fn varint_len(mut v: usize) -> usize {
    let mut n = 1;
    while v >= 0x80 {
        v >>= 7;
        n += 1;
    }
    n
}

/// Reads a varint this module wrote at `pos`; returns it and its size. Buffers are internal, so a
/// malformed one is a bug.
fn read_len(buf: &[u8], pos: usize) -> (usize, usize) {
    match buf.get(pos) {
        Some(&b) if b < 0x80 => (b as usize, 1),
        _ => {
            let rest = &buf[pos..];
            let (v, after) = get_varint(rest).expect("internal varint");
            (v as usize, rest.len() - after.len())
        }
    }
}

fn read_bytes(buf: &[u8], pos: usize) -> (&[u8], usize) {
    let (len, n) = read_len(buf, pos);
    let start = pos + n;
    (&buf[start..start + len], start + len)
}

/// A hashtable item: `varint field_len, field, value`.
fn make_item(field: &[u8], value: &[u8]) -> Box<[u8]> {
    let mut v = Vec::with_capacity(varint_len(field.len()) + field.len() + value.len());
    put_bytes(&mut v, field);
    v.extend_from_slice(value);
    v.into_boxed_slice()
}

fn split_item(item: &[u8]) -> (&[u8], &[u8]) {
    let (f, end) = read_bytes(item, 0);
    (f, &item[end..])
}

// ---------------------------------------------------------------------------------------------
// The ordered table.

/// How a table finds the key inside one of its items.
pub trait ItemKey {
    fn key(item: &[u8]) -> &[u8];
}

/// Hash items: the key is the length-prefixed field at the front.
#[derive(Clone, Debug)]
pub struct FieldKey;

impl ItemKey for FieldKey {
    fn key(item: &[u8]) -> &[u8] {
        split_item(item).0
    }
}

/// Set items: the item is the key.
#[derive(Clone, Debug)]
pub struct WholeKey;

impl ItemKey for WholeKey {
    fn key(item: &[u8]) -> &[u8] {
        item
    }
}

/// Smallest table: 4 home slots.
const TABLE_BITS_MIN: u32 = 2;
/// Random slot probes before picking by rank (the load stays above 1/10, so 64 probes miss with
/// probability below 0.9^64 ≈ 0.1%).
const RANDOM_PROBES: usize = 64;

/// The `hashtable` encoding: linear probing, every item a single allocation, **ordered by hash**.
///
/// An item's home slot is the top `bits` bits of its key's hash; items sit at or after their home,
/// with no empty slot in between, and the whole slot array is sorted by hash (insertion shifts the
/// rest of a run right, deletion shifts it back left). Items that run past the last home slot
/// spill into a tail that grows on demand, so order never wraps around.
///
/// Why ordered: the SCAN cursor is a hash value, not a slot index. A call returns the items whose
/// hash lies in `[cursor, next)`, and since the order is a property of the items, not of the table
/// size, growing or shrinking between calls cannot hide an item: every item present for the whole
/// scan is returned, as Redis's reverse-binary cursor guarantees. Ordering also makes a failed
/// lookup stop at the first larger hash.
///
/// Memory: one 16-byte slot per item at a load between 0.4 and 0.8 (grows at 0.8, shrinks below
/// 0.1), plus the item itself; hashbrown's `HashMap<Box<[u8]>, Box<[u8]>>` would spend 33 bytes
/// per slot and two allocations per pair.
#[derive(Clone)]
pub struct Table<K> {
    slots: Vec<Option<Box<[u8]>>>,
    len: usize,
    bits: u32,
    /// Bytes of all items, as the allocator rounds them (running total).
    items_bytes: usize,
    hasher: RandomState,
    _key: PhantomData<fn() -> K>,
}

const SLOT_BYTES: usize = std::mem::size_of::<Option<Box<[u8]>>>();

/// Heap bytes of an allocation of `n` bytes: allocators hand out whole words.
pub(crate) fn alloc_bytes(n: usize) -> usize {
    (n + 7) & !7
}

impl<K: ItemKey> Table<K> {
    /// An empty table sized for `n` items without growing.
    pub fn with_capacity(n: usize) -> Self {
        let mut bits = TABLE_BITS_MIN;
        while n > Self::grow_at(1 << bits) {
            bits += 1;
        }
        Table {
            slots: Self::empty_slots(bits),
            len: 0,
            bits,
            items_bytes: 0,
            hasher: RandomState::default(),
            _key: PhantomData,
        }
    }

    fn grow_at(cap: usize) -> usize {
        cap - cap / 5
    }

    fn empty_slots(bits: u32) -> Vec<Option<Box<[u8]>>> {
        let cap = 1usize << bits;
        let n = cap + cap / 16 + 2;
        let mut v = Vec::with_capacity(n);
        v.resize_with(n, || None);
        v
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Heap bytes: the boxed table, its slots and its items.
    pub fn mem_bytes(&self) -> usize {
        std::mem::size_of::<Self>() + self.slots.capacity() * SLOT_BYTES + self.items_bytes
    }

    pub fn recount_mem_bytes(&self) -> usize {
        std::mem::size_of::<Self>()
            + self.slots.capacity() * SLOT_BYTES
            + self.iter().map(|i| alloc_bytes(i.len())).sum::<usize>()
    }

    fn hash(&self, key: &[u8]) -> u64 {
        self.hasher.hash_one(key)
    }

    fn home(&self, h: u64) -> usize {
        (h >> (64 - self.bits)) as usize
    }

    /// `Ok(position)` of the item with `key`, or `Err(position)` where it would be inserted.
    pub fn find(&self, key: &[u8]) -> Result<usize, usize> {
        self.find_hashed(key, self.hash(key))
    }

    fn find_hashed(&self, key: &[u8], h: u64) -> Result<usize, usize> {
        let mut i = self.home(h);
        while let Some(Some(item)) = self.slots.get(i) {
            let k = K::key(item);
            if k == key {
                return Ok(i);
            }
            if self.hash(k) > h {
                break;
            }
            i += 1;
        }
        Err(i)
    }

    pub fn get(&self, key: &[u8]) -> Option<&[u8]> {
        self.find(key).ok().map(|p| self.item(p))
    }

    /// The item at an occupied position.
    pub fn item(&self, pos: usize) -> &[u8] {
        self.slots[pos].as_deref().expect("occupied slot")
    }

    /// The bytes of the item at an occupied position, to change in place (not its key: the
    /// table's order and lookups depend on it).
    pub fn item_bytes_mut(&mut self, pos: usize) -> &mut [u8] {
        self.slots[pos].as_deref_mut().expect("occupied slot")
    }

    /// Replaces the item at an occupied position with one of the same key.
    pub fn replace_at(&mut self, pos: usize, item: Box<[u8]>) {
        let old = self.slots[pos].replace(item).expect("occupied slot");
        debug_assert_eq!(K::key(&old), K::key(self.item(pos)));
        self.items_bytes =
            self.items_bytes - alloc_bytes(old.len()) + alloc_bytes(self.item(pos).len());
    }

    /// Inserts an item whose key is not in the table.
    pub fn insert_new(&mut self, item: Box<[u8]>) {
        if self.len + 1 > Self::grow_at(1 << self.bits) {
            self.rebuild(self.bits + 1);
        }
        let h = self.hash(K::key(&item));
        let pos = match self.find_hashed(K::key(&item), h) {
            Ok(_) => panic!("insert_new of a key already present"),
            Err(p) => p,
        };
        // The first free slot from `pos` on; the run [pos, free) moves one place right.
        let free = match self.slots[pos..].iter().position(Option::is_none) {
            Some(d) => pos + d,
            None => {
                let tail = (self.slots.len() >> 4).max(4);
                self.slots.reserve_exact(tail);
                self.slots.resize_with(self.slots.len() + tail, || None);
                self.slots.len() - tail
            }
        };
        self.slots[pos..=free].rotate_right(1);
        self.items_bytes += alloc_bytes(item.len());
        self.slots[pos] = Some(item);
        self.len += 1;
    }

    /// Removes and returns the item at an occupied position.
    pub fn remove_at(&mut self, pos: usize) -> Box<[u8]> {
        let item = self.slots[pos].take().expect("occupied slot");
        // Backward shift: later items of the run move left while that keeps them at or after home.
        let mut j = pos + 1;
        while let Some(Some(next)) = self.slots.get(j) {
            if self.home(self.hash(K::key(next))) >= j {
                break;
            }
            self.slots.swap(j - 1, j);
            j += 1;
        }
        self.len -= 1;
        self.items_bytes -= alloc_bytes(item.len());
        if self.bits > TABLE_BITS_MIN && self.len < (1usize << self.bits) / 10 {
            let mut bits = TABLE_BITS_MIN;
            while self.len * 2 > 1 << bits {
                bits += 1;
            }
            self.rebuild(bits);
        }
        item
    }

    pub fn remove(&mut self, key: &[u8]) -> Option<Box<[u8]>> {
        self.find(key).ok().map(|p| self.remove_at(p))
    }

    /// Moves every item to a table of `1 << bits` home slots. The old slots are already in hash
    /// order, so each item lands at the later of its home and the slot after the previous item.
    fn rebuild(&mut self, bits: u32) {
        let old = std::mem::replace(&mut self.slots, Self::empty_slots(bits));
        self.bits = bits;
        let mut next = 0;
        for item in old.into_iter().flatten() {
            let p = self.home(self.hash(K::key(&item))).max(next);
            if p >= self.slots.len() {
                self.slots.reserve_exact(p + 1 - self.slots.len() + 4);
                self.slots.resize_with(p + 5, || None);
            }
            self.slots[p] = Some(item);
            next = p + 1;
        }
    }

    /// Items in hash order.
    pub fn iter(&self) -> impl Iterator<Item = &[u8]> {
        self.slots.iter().filter_map(|s| s.as_deref())
    }

    /// A uniformly random occupied position; the table must not be empty.
    pub fn random_pos(&self, rng: &mut Rng) -> usize {
        assert!(self.len > 0, "random pick from an empty table");
        for _ in 0..RANDOM_PROBES {
            let i = rng.below(self.slots.len());
            if self.slots[i].is_some() {
                return i;
            }
        }
        let k = rng.below(self.len);
        self.slots
            .iter()
            .enumerate()
            .filter(|(_, s)| s.is_some())
            .nth(k)
            .map(|(i, _)| i)
            .expect("k < len")
    }

    /// `count` distinct random positions (`count` at most a third of `len`, so random picks
    /// rarely repeat; after a bounded number of draws the rest is filled in slot order).
    pub fn random_distinct_positions(&self, count: usize, rng: &mut Rng) -> Vec<usize> {
        let count = count.min(self.len);
        let mut seen: hashbrown::HashSet<usize, foldhash::fast::FixedState> =
            hashbrown::HashSet::with_capacity_and_hasher(count, Default::default());
        let mut out = Vec::with_capacity(count);
        for _ in 0..count.saturating_mul(16).max(64) {
            if out.len() == count {
                return out;
            }
            let p = self.random_pos(rng);
            if seen.insert(p) {
                out.push(p);
            }
        }
        for (p, s) in self.slots.iter().enumerate() {
            if out.len() == count {
                break;
            }
            if s.is_some() && seen.insert(p) {
                out.push(p);
            }
        }
        out
    }

    /// Calls `f` on the items whose hash is at least `cursor`, in hash order, stopping after about
    /// `count` of them; returns the hash of the first item not returned (the next cursor), or 0
    /// when none is left. Items sharing a hash are returned together, so none is skipped.
    pub fn scan<'a>(&'a self, cursor: u64, count: usize, mut f: impl FnMut(&'a [u8])) -> u64 {
        let mut returned = 0usize;
        let mut last: Option<u64> = None;
        for item in self.slots[self.home(cursor)..].iter().flatten() {
            let h = self.hash(K::key(item));
            if h < cursor {
                continue;
            }
            if returned >= count && last != Some(h) {
                // h > last >= 0: a cursor of 0 always means "finished".
                return h;
            }
            f(item);
            returned += 1;
            last = Some(h);
        }
        0
    }

    /// Panics if the table's order, placement or counters are wrong (tests).
    pub fn check_invariants(&self) {
        let cap = 1usize << self.bits;
        assert!(self.slots.len() >= cap);
        let mut prev: Option<u64> = None;
        let mut n = 0;
        for (i, s) in self.slots.iter().enumerate() {
            let Some(item) = s else { continue };
            n += 1;
            let h = self.hash(K::key(item));
            let home = self.home(h);
            assert!(home <= i, "item before its home");
            assert!(
                self.slots[home..i].iter().all(Option::is_some),
                "gap between an item and its home"
            );
            assert!(prev.is_none_or(|p| p <= h), "slots out of hash order");
            prev = Some(h);
        }
        assert_eq!(n, self.len);
        assert_eq!(self.mem_bytes(), self.recount_mem_bytes());
        if self.bits > TABLE_BITS_MIN {
            assert!(self.len >= cap / 10, "table not shrunk");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::evict::Rng;
    use proptest::prelude::*;

    fn limits(entries: usize, value: usize) -> EncodingLimits {
        EncodingLimits {
            hash_max_listpack_entries: entries,
            hash_max_listpack_value: value,
            ..EncodingLimits::default()
        }
    }

    #[test]
    fn listpack_until_entry_count_exceeds_the_limit() {
        let l = limits(3, 64);
        let mut h = Hash::new(&l);
        for i in 0..3 {
            assert!(h.insert(format!("f{i}").as_bytes(), b"v", &l));
        }
        assert_eq!(h.encoding(), "listpack");
        assert!(!h.insert(b"f0", b"w", &l), "update is not new");
        assert_eq!(h.encoding(), "listpack");
        assert!(h.insert(b"f3", b"v", &l));
        assert_eq!(h.encoding(), "hashtable");
        // Never back, even when small again.
        for i in 0..4 {
            assert!(h.remove(format!("f{i}").as_bytes()));
        }
        assert!(h.is_empty());
        assert!(h.insert(b"x", b"y", &l));
        assert_eq!(h.encoding(), "hashtable");
        h.check_invariants();
    }

    #[test]
    fn ten_small_fields_take_one_tight_buffer() {
        // Memory per small hash is compared with Redis's listpack: one varint per length, no
        // per-entry header or back-length, and no spare capacity.
        let l = EncodingLimits::default();
        let mut h = Hash::new(&l);
        let mut payload = 0;
        for i in 0..10 {
            let (f, v) = (format!("field:{i}"), format!("value:{i}"));
            payload += 2 + f.len() + v.len();
            h.insert(f.as_bytes(), v.as_bytes(), &l);
        }
        assert_eq!(h.mem_bytes(), payload);
        assert!(std::mem::size_of::<Hash>() <= 24);
    }

    #[test]
    fn long_field_or_value_converts() {
        let l = limits(128, 4);
        let mut h = Hash::new(&l);
        h.insert(b"abcd", b"1234", &l);
        assert_eq!(h.encoding(), "listpack");
        h.insert(b"a", b"12345", &l);
        assert_eq!(h.encoding(), "hashtable");
        let mut h = Hash::new(&l);
        h.insert(b"abcde", b"1", &l);
        assert_eq!(h.encoding(), "hashtable");
        assert_eq!(h.get(b"abcde"), Some(&b"1"[..]));
        // A zero entry limit: every hash is a hashtable.
        let l0 = limits(0, 64);
        let mut h = Hash::new(&l0);
        h.insert(b"a", b"1", &l0);
        assert_eq!(h.encoding(), "hashtable");
    }

    #[test]
    fn values_replace_in_place_and_grow_and_shrink() {
        let l = limits(128, 1000);
        let mut h = Hash::new(&l);
        h.insert(b"a", b"1", &l);
        h.insert(b"b", b"2", &l);
        h.insert(b"a", &[b'x'; 300], &l);
        assert_eq!(h.get(b"a"), Some(&[b'x'; 300][..]));
        assert_eq!(h.get(b"b"), Some(&b"2"[..]));
        h.insert(b"a", b"", &l);
        assert_eq!(h.get(b"a"), Some(&b""[..]));
        let pairs: Vec<_> = h.iter().collect();
        assert_eq!(pairs, vec![(&b"a"[..], &b""[..]), (&b"b"[..], &b"2"[..])]);
        h.check_invariants();
        assert!(h.mem_bytes() < 64, "buffer shrank: {}", h.mem_bytes());
    }

    #[test]
    fn table_values_of_the_same_length_are_overwritten_and_others_replaced() {
        let l = limits(0, 64);
        let mut h = Hash::new(&l);
        for i in 0..100 {
            h.insert(format!("f{i}").as_bytes(), b"1234", &l);
        }
        let mem = h.mem_bytes();
        assert!(!h.insert(b"f7", b"abcd", &l), "an update is not new");
        assert_eq!((h.get(b"f7"), h.mem_bytes()), (Some(&b"abcd"[..]), mem));
        assert!(!h.insert(b"f8", b"a longer value than before", &l));
        assert_eq!(h.get(b"f8"), Some(&b"a longer value than before"[..]));
        assert!(h.mem_bytes() > mem);
        assert!(!h.insert(b"f8", b"", &l));
        assert_eq!(
            (h.get(b"f8"), h.get(b"f9")),
            (Some(&b""[..]), Some(&b"1234"[..]))
        );
        h.check_invariants();
    }

    #[test]
    fn table_grows_shrinks_and_stays_ordered() {
        let l = limits(0, 64);
        let mut h = Hash::new(&l);
        for i in 0..5000 {
            h.insert(
                format!("field:{i}").as_bytes(),
                format!("{i}").as_bytes(),
                &l,
            );
        }
        h.check_invariants();
        assert_eq!(h.len(), 5000);
        for i in 0..5000 {
            assert_eq!(
                h.get(format!("field:{i}").as_bytes()),
                Some(format!("{i}").as_bytes())
            );
        }
        let big = h.mem_bytes();
        for i in 0..4990 {
            assert!(h.remove(format!("field:{i}").as_bytes()));
        }
        h.check_invariants();
        assert!(h.mem_bytes() < big / 20, "{} vs {}", h.mem_bytes(), big);
        assert_eq!(h.len(), 10);
    }

    #[test]
    fn scan_returns_every_stable_field_across_resizes() {
        let l = limits(0, 64);
        let mut h = Hash::new(&l);
        for i in 0..200 {
            h.insert(format!("stable:{i}").as_bytes(), b"v", &l);
        }
        let mut seen = std::collections::HashSet::new();
        let mut cursor = 0;
        let mut round = 0;
        let mut sizes = std::collections::HashSet::new();
        loop {
            cursor = h.scan(cursor, 10, |f, _| {
                seen.insert(f.to_vec());
            });
            // Churn between calls: add many (the table grows), then remove them (it shrinks).
            for j in 0..3000 {
                if round % 2 == 0 {
                    h.insert(format!("churn:{round}:{j}").as_bytes(), b"x", &l);
                } else {
                    h.remove(format!("churn:{}:{j}", round - 1).as_bytes());
                }
            }
            sizes.insert(h.mem_bytes() / 1024);
            round += 1;
            if cursor == 0 {
                break;
            }
            assert!(round < 10_000, "scan does not finish");
        }
        assert!(sizes.len() >= 2, "the table was resized during the scan");
        for i in 0..200 {
            assert!(
                seen.contains(format!("stable:{i}").as_bytes()),
                "missed stable:{i}"
            );
        }
    }

    #[test]
    fn scan_of_a_listpack_returns_everything_at_once() {
        let l = limits(128, 64);
        let mut h = Hash::new(&l);
        for i in 0..20 {
            h.insert(format!("f{i}").as_bytes(), b"v", &l);
        }
        let mut n = 0;
        assert_eq!(h.scan(12345, 1, |_, _| n += 1), 0);
        assert_eq!(n, 20);
    }

    #[test]
    fn random_picks_cover_all_and_are_distinct() {
        for entries in [0, 128] {
            let l = limits(entries, 64);
            let mut h = Hash::new(&l);
            for i in 0..100 {
                h.insert(format!("f{i}").as_bytes(), b"v", &l);
            }
            let mut rng = Rng::new(1);
            let mut seen = std::collections::HashSet::new();
            for _ in 0..5000 {
                seen.insert(h.random_entry(&mut rng).unwrap().0.to_vec());
            }
            assert_eq!(seen.len(), 100, "{}", h.encoding());
            for count in [1, 10, 33, 34, 60, 100, 200] {
                let picks = h.random_distinct(count, &mut rng);
                let distinct: std::collections::HashSet<_> = picks.iter().map(|p| p.0).collect();
                assert_eq!(picks.len(), count.min(100));
                assert_eq!(distinct.len(), picks.len());
            }
            let s = h.sampler();
            assert!(h.contains(s.pick(&mut rng).0));
        }
    }

    #[test]
    fn codec_round_trips_and_picks_the_encoding_from_limits() {
        let l = limits(4, 64);
        let mut h = Hash::new(&l);
        for i in 0..3 {
            h.insert(format!("f{i}").as_bytes(), format!("v{i}").as_bytes(), &l);
        }
        let mut out = Vec::new();
        h.encode(&mut out);
        let back = Hash::decode(&out, &l).unwrap();
        assert_eq!(back, h);
        assert_eq!(back.encoding(), "listpack");
        assert_eq!(
            Hash::decode(&out, &limits(2, 64)).unwrap().encoding(),
            "hashtable"
        );
        // Truncated, trailing bytes, empty, duplicate field.
        assert!(Hash::decode(&out[..out.len() - 1], &l).is_none());
        let mut longer = out.clone();
        longer.push(0);
        assert!(Hash::decode(&longer, &l).is_none());
        assert!(Hash::decode(&[0], &l).is_none());
        let mut dup = Vec::new();
        put_varint(&mut dup, 2);
        for _ in 0..2 {
            put_bytes(&mut dup, b"f");
            put_bytes(&mut dup, b"v");
        }
        assert!(Hash::decode(&dup, &l).is_none());
    }

    #[derive(Debug, Clone)]
    enum Op {
        Set(u8, usize),
        Del(u8),
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            (any::<u8>(), 0usize..80).prop_map(|(f, n)| Op::Set(f, n)),
            any::<u8>().prop_map(Op::Del),
        ]
    }

    #[test]
    fn field_ttls_cost_nothing_until_used_and_stick_like_listpackex() {
        assert!(std::mem::size_of::<Hash>() <= 24);
        let l = limits(4, 64);
        let mut h = Hash::new(&l);
        h.insert(b"a", b"1", &l);
        h.insert(b"b", b"2", &l);
        let plain = h.mem_bytes();
        assert!(!h.set_field_expire(b"zz", 10), "no such field");
        assert_eq!(h.encoding(), "listpack");
        assert!(h.set_field_expire(b"a", 100));
        assert_eq!(h.encoding(), "listpackex");
        assert!(h.mem_bytes() > plain);
        assert_eq!(h.field_expire_at(b"a"), Some(100));
        // HSET of the field clears its deadline; the encoding stays.
        h.insert(b"a", b"x", &l);
        assert_eq!(h.field_expire_at(b"a"), None);
        assert_eq!(h.encoding(), "listpackex");
        h.set_field_expire(b"a", 100);
        h.set_field_expire(b"b", 50);
        assert_eq!(h.min_field_expire(), Some(50));
        assert!(h.persist_field(b"b"));
        assert!(!h.persist_field(b"b"));
        assert_eq!(h.min_field_expire(), Some(100));
        for i in 0..4 {
            h.insert(format!("c{i}").as_bytes(), b"v", &l);
        }
        assert_eq!(h.encoding(), "hashtable");
        assert_eq!(h.field_expire_at(b"a"), Some(100), "kept across conversion");
        assert!(!h.has_due_fields(99));
        assert!(h.has_due_fields(100));
        let mut gone = Vec::new();
        assert_eq!(h.remove_due_fields(100, 10, |f| gone.push(f.to_vec())), 1);
        assert_eq!(gone, vec![b"a".to_vec()]);
        assert!(!h.contains(b"a"));
        h.check_invariants();
    }

    #[test]
    fn many_field_ttls_move_to_the_large_form_and_stay_exact() {
        let l = limits(0, 64);
        let mut h = Hash::new(&l);
        for i in 0..300u64 {
            h.insert(format!("f{i}").as_bytes(), b"v", &l);
        }
        let small = {
            let mut s = h.clone();
            for i in 0..TTL_SMALL_MAX as u64 {
                s.set_field_expire(format!("f{i}").as_bytes(), 1000 + i);
            }
            s.mem_bytes() - h.mem_bytes()
        };
        // Small form: well under the large form's estimate per deadline.
        assert!(
            small < TTL_SMALL_MAX * (TTL_LARGE_ENTRY_BYTES + 8),
            "{small}"
        );
        // Deadlines in a scrambled order, some set twice.
        for i in 0..300u64 {
            let j = (i * 7919) % 300;
            h.set_field_expire(format!("f{j}").as_bytes(), 10_000 - j);
        }
        for i in (0..300u64).step_by(3) {
            h.set_field_expire(format!("f{i}").as_bytes(), 20_000 + i);
        }
        h.check_invariants();
        assert_eq!(h.field_ttl_count(), 300);
        for i in (0..300u64).step_by(2) {
            h.persist_field(format!("f{i}").as_bytes());
        }
        h.check_invariants();
        assert_eq!(h.field_ttl_count(), 150);
        let mut gone = 0;
        let mut last = 0;
        h.remove_due_fields(10_000, usize::MAX, |f| {
            let at = 10_000
                - std::str::from_utf8(&f[1..])
                    .unwrap()
                    .parse::<u64>()
                    .unwrap();
            assert!(at >= last, "earliest first");
            last = at;
            gone += 1;
        });
        // Odd fields not multiples of 3 (those moved to 20_000+): 100.
        assert_eq!(gone, 100);
        h.check_invariants();
        assert_eq!(h.len(), 200);
        assert_eq!(h.min_field_expire(), Some(20_003));
    }

    #[derive(Debug, Clone)]
    enum TtlOp {
        Set(u8, usize),
        Del(u8),
        Expire(u8, u64),
        Persist(u8),
        Advance(u64),
        Purge(usize),
    }

    fn ttl_op() -> impl Strategy<Value = TtlOp> {
        prop_oneof![
            (any::<u8>(), 0usize..20).prop_map(|(f, n)| TtlOp::Set(f, n)),
            any::<u8>().prop_map(TtlOp::Del),
            (any::<u8>(), 0u64..200).prop_map(|(f, d)| TtlOp::Expire(f, d)),
            any::<u8>().prop_map(TtlOp::Persist),
            (0u64..60).prop_map(TtlOp::Advance),
            (0usize..5).prop_map(TtlOp::Purge),
        ]
    }

    proptest! {
        /// Fields with deadlines, random writes and clock advances, against a map of
        /// field → (value, deadline). Fields due are purged only by `Purge` (bounded, earliest
        /// first); the model checks which remain and the codec keeps the deadlines.
        #[test]
        fn field_ttls_match_a_model(
            ops in proptest::collection::vec(ttl_op(), 1..300),
            entries in 0usize..12,
        ) {
            let l = limits(entries, 64);
            let mut h = Hash::new(&l);
            let mut model: std::collections::BTreeMap<Vec<u8>, (Vec<u8>, Option<u64>)> =
                Default::default();
            let mut now = 1000u64;
            for o in ops {
                match o {
                    TtlOp::Set(f, n) => {
                        let field = format!("f{}", f % 16).into_bytes();
                        let value = vec![b'v'; n];
                        let new = h.insert(&field, &value, &l);
                        prop_assert_eq!(new, model.insert(field, (value, None)).is_none());
                    }
                    TtlOp::Del(f) => {
                        let field = format!("f{}", f % 16).into_bytes();
                        prop_assert_eq!(h.remove(&field), model.remove(&field).is_some());
                    }
                    TtlOp::Expire(f, d) => {
                        let field = format!("f{}", f % 16).into_bytes();
                        let at = now + d;
                        let set = h.set_field_expire(&field, at);
                        match model.get_mut(&field) {
                            Some(m) => { prop_assert!(set); m.1 = Some(at); }
                            None => prop_assert!(!set),
                        }
                    }
                    TtlOp::Persist(f) => {
                        let field = format!("f{}", f % 16).into_bytes();
                        let had = model.get_mut(&field).and_then(|m| m.1.take()).is_some();
                        prop_assert_eq!(h.persist_field(&field), had);
                    }
                    TtlOp::Advance(d) => now += d,
                    TtlOp::Purge(max) => {
                        let mut due: Vec<(u64, Vec<u8>)> = model
                            .iter()
                            .filter_map(|(f, (_, at))| at.filter(|&a| a <= now).map(|a| (a, f.clone())))
                            .collect();
                        due.sort();
                        prop_assert_eq!(h.has_due_fields(now), !due.is_empty());
                        let mut gone = Vec::new();
                        let n = h.remove_due_fields(now, max, |f| gone.push(f.to_vec()));
                        prop_assert_eq!(n, due.len().min(max));
                        for f in &gone {
                            let at = model.remove(f).and_then(|m| m.1);
                            prop_assert!(at.is_some_and(|a| a <= now));
                        }
                        // Earliest first: nothing left due is earlier than what went.
                        let latest_gone = gone.iter().map(|f| due.iter().find(|d| &d.1 == f).unwrap().0).max();
                        if let Some(g) = latest_gone {
                            prop_assert!(model.values().all(|(_, at)| at.is_none_or(|a| a >= g)));
                        }
                    }
                }
                prop_assert_eq!(h.mem_bytes(), h.recount_mem_bytes());
            }
            h.check_invariants();
            prop_assert_eq!(h.len(), model.len());
            prop_assert_eq!(h.field_ttl_count(), model.values().filter(|m| m.1.is_some()).count());
            for (f, (v, at)) in &model {
                prop_assert_eq!(h.get(f), Some(&v[..]));
                prop_assert_eq!(h.field_expire_at(f), *at);
            }
            prop_assert_eq!(h.min_field_expire(), model.values().filter_map(|m| m.1).min());
            if !h.is_empty() {
                let mut out = Vec::new();
                crate::codec::encode_value(crate::ValueRef::Obj(&crate::Object::Hash(h.clone())), &mut out);
                let Some(crate::Payload::Object(o)) = crate::codec::decode_value(&out, &l) else {
                    panic!("decodes");
                };
                prop_assert_eq!(*o, crate::Object::Hash(h));
            }
        }

        #[test]
        fn matches_a_model_and_counts_memory_exactly(
            ops in proptest::collection::vec(op(), 1..400),
            entries in 0usize..40,
        ) {
            let l = limits(entries, 64);
            let mut h = Hash::new(&l);
            let mut model = std::collections::BTreeMap::new();
            for o in ops {
                match o {
                    Op::Set(f, n) => {
                        let field = format!("f{}", f % 64).into_bytes();
                        let value = vec![b'v'; n];
                        let new = h.insert(&field, &value, &l);
                        prop_assert_eq!(new, model.insert(field, value).is_none());
                    }
                    Op::Del(f) => {
                        let field = format!("f{}", f % 64).into_bytes();
                        prop_assert_eq!(h.remove(&field), model.remove(&field).is_some());
                    }
                }
                prop_assert_eq!(h.mem_bytes(), h.recount_mem_bytes());
            }
            h.check_invariants();
            prop_assert_eq!(h.len(), model.len());
            for (f, v) in &model {
                prop_assert_eq!(h.get(f), Some(&v[..]));
            }
            if !h.is_empty() {
                let mut out = Vec::new();
                h.encode(&mut out);
                prop_assert_eq!(Hash::decode(&out, &l), Some(h));
            }
        }

        #[test]
        fn decode_never_panics_on_garbage(b in proptest::collection::vec(any::<u8>(), 0..200)) {
            if let Some(h) = Hash::decode(&b, &EncodingLimits::default()) {
                h.check_invariants();
            }
        }

        #[test]
        fn decode_never_panics_on_damaged_encodings(
            n in 1usize..40,
            flips in proptest::collection::vec((any::<usize>(), any::<u8>()), 1..4),
            cut in any::<usize>(),
        ) {
            let l = limits(8, 64);
            let mut h = Hash::new(&l);
            for i in 0..n {
                h.insert(format!("f{i}").as_bytes(), format!("value{i}").as_bytes(), &l);
            }
            let mut out = Vec::new();
            h.encode(&mut out);
            for (at, b) in flips {
                let i = at % out.len();
                out[i] = b;
            }
            out.truncate(out.len() - cut % 3);
            if let Some(back) = Hash::decode(&out, &l) {
                back.check_invariants();
            }
        }
    }
}
