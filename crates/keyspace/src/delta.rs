//! Element-level effects of a write: what one command changed inside a value (members and fields
//! added or removed, scores set, list ends pushed and popped, bytes appended, the expiry set), for
//! the replication stream. Sending these instead of the whole value keeps a small write to a large
//! collection small on the stream.
//!
//! A write command notes its changes in an [`Ops`] as it makes them; when its `EntryMut` is
//! dropped, the shard queues a [`Pending::Delta`] carrying the key's version before (`base`) and
//! after (`new`) the write. Writes that note nothing (RENAME, a STORE, a key created or deleted)
//! queue a [`Pending::Key`] instead: its state is read back when the queue is drained. A whole
//! string stored by SET and its family queues a [`Pending::Put`], its effect encoded as it is
//! written (`Shard::insert_encoded`).
//! Each shard drains its queue in order under its lock (see `write_log`), so per key the stream
//! holds the writes in the order they happened, which a delta needs: a replica applies one only to
//! the exact version it was made from ([`apply`]).
//!
//! Every op is deterministic given the value it applies to (positions are resolved, random choices
//! made, scores computed on the primary), so applying the same ops to the same value gives the same
//! value everywhere.
//!
//! Encoding, one op after another: a tag byte, then its fields: byte strings as a little-endian
//! u32 length and the bytes, numbers as 8 little-endian bytes.

use crate::entry::{Entry, Object};
use crate::types::EncodingLimits;
use crate::types::bloom::HashPair;
use crate::types::stream::{ConsumerGroup, StreamId, Trim};

const SADD: u8 = 1;
const SREM: u8 = 2;
const HSET: u8 = 3;
const HDEL: u8 = 4;
const ZADD: u8 = 5;
const ZREM: u8 = 6;
const LPUSH: u8 = 7;
const RPUSH: u8 = 8;
const LPOP: u8 = 9;
const RPOP: u8 = 10;
const LSET: u8 = 11;
const LINSERT: u8 = 12;
const LREM: u8 = 13;
const LTRIM: u8 = 14;
const APPEND: u8 = 15;
const SETRANGE: u8 = 16;
const EXPIRE: u8 = 17;
const XADD: u8 = 18;
const XTRIM: u8 = 19;
const XDEL: u8 = 20;
const XSETID: u8 = 21;
const XGROUP_PUT: u8 = 22;
const XGROUP_DESTROY: u8 = 23;
const XCONSUMER: u8 = 24;
const XDELCONSUMER: u8 = 25;
const XASSIGN: u8 = 26;
const XACK: u8 = 27;
const HFEXPIRE: u8 = 28;
const HFPERSIST: u8 = 29;
const BFADD: u8 = 30;

/// The bytes a [`PendingKey`] holds in place (a longer key is boxed).
pub const PENDING_KEY_INLINE_BYTES: usize = 38;

/// A queued key's name: held in place when short (most keys), so queueing a write for the
/// stream allocates nothing (a box per logged write was an allocation and a free on every SET).
#[derive(Clone, PartialEq, Eq)]
pub enum PendingKey {
    Inline {
        len: u8,
        bytes: [u8; PENDING_KEY_INLINE_BYTES],
    },
    Boxed(Box<[u8]>),
}

impl From<&[u8]> for PendingKey {
    fn from(k: &[u8]) -> Self {
        if k.len() <= PENDING_KEY_INLINE_BYTES {
            let mut bytes = [0u8; PENDING_KEY_INLINE_BYTES];
            bytes[..k.len()].copy_from_slice(k);
            PendingKey::Inline {
                len: k.len() as u8,
                bytes,
            }
        } else {
            PendingKey::Boxed(k.into())
        }
    }
}

impl std::ops::Deref for PendingKey {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        match self {
            PendingKey::Inline { len, bytes } => &bytes[..*len as usize],
            PendingKey::Boxed(b) => b,
        }
    }
}

impl std::fmt::Debug for PendingKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:?}", String::from_utf8_lossy(self))
    }
}

/// A change queued by a shard for the replication stream, drained in order under the shard lock.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Pending {
    /// Send the key's state as it is when the queue is drained (its value, or its deletion).
    Key { db: usize, key: PendingKey },
    /// Send the key's state as the write left it, encoded by the write itself (a string stored
    /// whole: SET and its family, see [`crate::Shard::insert_encoded`]): bytes `at..at + len` of
    /// the shard's effect buffer ([`crate::Shard::effect_bytes`]). Left out when the same queue
    /// also reads the key back (the read-back holds this write and any after it).
    Put {
        db: usize,
        key: PendingKey,
        at: usize,
        len: usize,
    },
    /// Send `ops`, made to the key at version `base`, which left it at version `new`.
    Delta {
        db: usize,
        key: Box<[u8]>,
        base: u64,
        new: u64,
        ops: Box<[u8]>,
    },
    /// The write was an increment (INCR family, or HINCRBY family on `field`): active-active
    /// groups merge it as a counter contribution. Queued beside the key's own change; the
    /// primary–replica stream skips it.
    Count {
        db: usize,
        key: Box<[u8]>,
        field: Option<Box<[u8]>>,
        by: crate::merge::By,
    },
}

impl Pending {
    pub fn db_key(&self) -> (usize, &[u8]) {
        match self {
            Pending::Key { db, key } | Pending::Put { db, key, .. } => (*db, key),
            Pending::Delta { db, key, .. } | Pending::Count { db, key, .. } => (*db, key),
        }
    }
}

/// The element-level changes one write makes to one value, noted as it makes them. Noting is a
/// no-op when the shard does not record writes.
#[derive(Debug, Default)]
pub struct Ops {
    buf: Vec<u8>,
    on: bool,
    /// The expiry was set (it may then change without forcing a whole-value effect).
    sets_expire: bool,
}

impl Ops {
    pub fn new(on: bool) -> Self {
        Ops {
            buf: Vec::new(),
            on,
            sets_expire: false,
        }
    }

    /// Whether the ops noted only set the expiry (EXPIRE, PERSIST, GETEX): the value is as it was.
    pub fn only_expiry(&self) -> bool {
        // Each EXPIRE op is its tag and one number.
        !self.buf.is_empty()
            && self.buf.len().is_multiple_of(9)
            && self.buf.chunks(9).all(|op| op[0] == EXPIRE)
    }

    /// Whether noting does anything (the shard records writes).
    pub fn is_on(&self) -> bool {
        self.on
    }

    pub fn is_empty(&self) -> bool {
        self.buf.is_empty()
    }

    pub fn len(&self) -> usize {
        self.buf.len()
    }

    /// Appends `other`'s ops after these.
    pub(crate) fn extend(&mut self, other: Ops) {
        self.buf.extend_from_slice(&other.buf);
        self.sets_expire |= other.sets_expire;
    }

    pub(crate) fn sets_expire(&self) -> bool {
        self.sets_expire
    }

    pub(crate) fn into_bytes(self) -> Box<[u8]> {
        self.buf.into_boxed_slice()
    }

    fn bytes(&mut self, b: &[u8]) {
        self.buf.extend_from_slice(&(b.len() as u32).to_le_bytes());
        self.buf.extend_from_slice(b);
    }

    fn num(&mut self, v: u64) {
        self.buf.extend_from_slice(&v.to_le_bytes());
    }

    fn op1(&mut self, tag: u8, a: &[u8]) {
        if self.on {
            self.buf.push(tag);
            self.bytes(a);
        }
    }

    pub fn sadd(&mut self, member: &[u8]) {
        self.op1(SADD, member);
    }
    pub fn srem(&mut self, member: &[u8]) {
        self.op1(SREM, member);
    }
    pub fn hset(&mut self, field: &[u8], value: &[u8]) {
        if self.on {
            self.buf.push(HSET);
            self.bytes(field);
            self.bytes(value);
        }
    }
    pub fn hdel(&mut self, field: &[u8]) {
        self.op1(HDEL, field);
    }
    /// The hash field's deadline is now `at_ms` (absolute unix ms).
    pub fn hfield_expire(&mut self, field: &[u8], at_ms: u64) {
        if self.on {
            self.buf.push(HFEXPIRE);
            self.bytes(field);
            self.num(at_ms);
        }
    }
    /// The hash field has no deadline any more.
    pub fn hfield_persist(&mut self, field: &[u8]) {
        self.op1(HFPERSIST, field);
    }
    /// The member's score is now `score` (added or updated).
    pub fn zadd(&mut self, score: f64, member: &[u8]) {
        if self.on {
            self.buf.push(ZADD);
            self.num(score.to_bits());
            self.bytes(member);
        }
    }
    pub fn zrem(&mut self, member: &[u8]) {
        self.op1(ZREM, member);
    }
    /// Pushed at the head (`left`) or the tail.
    pub fn push(&mut self, left: bool, value: &[u8]) {
        self.op1(if left { LPUSH } else { RPUSH }, value);
    }
    /// `n` elements popped from the head (`left`) or the tail.
    pub fn pop(&mut self, left: bool, n: usize) {
        if self.on && n > 0 {
            self.buf.push(if left { LPOP } else { RPOP });
            self.num(n as u64);
        }
    }
    /// The element at `index` (from the head) was replaced.
    pub fn lset(&mut self, index: usize, value: &[u8]) {
        if self.on {
            self.buf.push(LSET);
            self.num(index as u64);
            self.bytes(value);
        }
    }
    /// `value` was inserted so that it now sits at `index`.
    pub fn linsert(&mut self, index: usize, value: &[u8]) {
        if self.on {
            self.buf.push(LINSERT);
            self.num(index as u64);
            self.bytes(value);
        }
    }
    /// Up to `limit` elements equal to `value` were removed, scanning from the tail if `from_back`
    /// (`limit` 0: all).
    pub fn lrem(&mut self, value: &[u8], limit: usize, from_back: bool) {
        if self.on {
            self.buf.push(LREM);
            self.num(limit as u64);
            self.buf.push(from_back as u8);
            self.bytes(value);
        }
    }
    /// Only the elements `start..end` were kept.
    pub fn ltrim(&mut self, start: usize, end: usize) {
        if self.on {
            self.buf.push(LTRIM);
            self.num(start as u64);
            self.num(end as u64);
        }
    }
    pub fn append(&mut self, bytes: &[u8]) {
        self.op1(APPEND, bytes);
    }
    /// `bytes` were written at `offset` (the string zero-padded up to it).
    pub fn setrange(&mut self, offset: usize, bytes: &[u8]) {
        if self.on {
            self.buf.push(SETRANGE);
            self.num(offset as u64);
            self.bytes(bytes);
        }
    }
    fn id(&mut self, id: StreamId) {
        self.num(id.ms);
        self.num(id.seq);
    }
    /// Stream entry `id` appended with these fields.
    pub fn xadd(&mut self, id: StreamId, fields: &[(&[u8], &[u8])]) {
        if self.on {
            self.buf.push(XADD);
            self.id(id);
            self.num(fields.len() as u64);
            for (f, v) in fields {
                self.bytes(f);
                self.bytes(v);
            }
        }
    }
    /// The stream was trimmed to start at `first` (`None`: trimmed empty).
    pub fn xtrim(&mut self, first: Option<StreamId>) {
        if self.on {
            self.buf.push(XTRIM);
            self.buf.push(first.is_some() as u8);
            self.id(first.unwrap_or(StreamId::MIN));
        }
    }
    /// Stream entry `id` deleted (XDEL).
    pub fn xdel(&mut self, id: StreamId) {
        if self.on {
            self.buf.push(XDEL);
            self.id(id);
        }
    }
    /// The stream's counters are now these (XSETID).
    pub fn xsetid(&mut self, last: StreamId, entries_added: u64, max_deleted: StreamId) {
        if self.on {
            self.buf.push(XSETID);
            self.id(last);
            self.num(entries_added);
            self.id(max_deleted);
        }
    }
    /// Group `name` exists with these counters (created if new).
    pub fn xgroup_put(&mut self, name: &[u8], last: StreamId, entries_read: i64) {
        if self.on {
            self.buf.push(XGROUP_PUT);
            self.bytes(name);
            self.id(last);
            self.num(entries_read as u64);
        }
    }
    pub fn xgroup_destroy(&mut self, name: &[u8]) {
        self.op1(XGROUP_DESTROY, name);
    }
    /// Consumer `consumer` of group `group` exists, last seen at `seen_ms`.
    pub fn xconsumer(&mut self, group: &[u8], consumer: &[u8], seen_ms: u64) {
        if self.on {
            self.buf.push(XCONSUMER);
            self.bytes(group);
            self.bytes(consumer);
            self.num(seen_ms);
        }
    }
    pub fn xdelconsumer(&mut self, group: &[u8], consumer: &[u8]) {
        if self.on {
            self.buf.push(XDELCONSUMER);
            self.bytes(group);
            self.bytes(consumer);
        }
    }
    /// Pending entry `id` of `group` is now `consumer`'s, delivered at `delivery_ms`, `count` times.
    pub fn xassign(
        &mut self,
        group: &[u8],
        id: StreamId,
        consumer: &[u8],
        delivery_ms: u64,
        count: u64,
    ) {
        if self.on {
            self.buf.push(XASSIGN);
            self.bytes(group);
            self.id(id);
            self.bytes(consumer);
            self.num(delivery_ms);
            self.num(count);
        }
    }
    /// Pending entry `id` of `group` acknowledged (or dropped).
    pub fn xack(&mut self, group: &[u8], id: StreamId) {
        if self.on {
            self.buf.push(XACK);
            self.bytes(group);
            self.id(id);
        }
    }
    /// The item with this hash pair was added to the Bloom filter (see `types/bloom.rs` for why
    /// the hash pair is the effect).
    pub fn bf_add(&mut self, h: HashPair) {
        if self.on {
            self.buf.push(BFADD);
            self.num(h.a);
            self.num(h.b);
        }
    }
    /// The key's absolute expiry is now `at_ms` (`None`: it persists).
    pub fn expire(&mut self, at_ms: Option<u64>) {
        if self.on {
            self.buf.push(EXPIRE);
            self.num(at_ms.map_or(u64::MAX, |t| t));
            self.sets_expire = true;
        }
    }
}

/// Why a delta could not be applied: the stream is broken and the replica must resynchronise.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DeltaError {
    /// The key is absent (`None`), or at a version other than the delta's base and older than its
    /// end.
    Diverged(Option<u64>),
    /// The ops do not fit the value (another type, an index out of range) or are malformed.
    Malformed(&'static str),
}

impl std::fmt::Display for DeltaError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            DeltaError::Diverged(None) => {
                f.write_str("a delta for a key the replica does not hold")
            }
            DeltaError::Diverged(Some(v)) => {
                write!(f, "a delta does not follow the key's version {v}")
            }
            DeltaError::Malformed(what) => write!(f, "malformed delta: {what}"),
        }
    }
}

struct Reader<'a> {
    b: &'a [u8],
}

impl<'a> Reader<'a> {
    fn u8(&mut self) -> Result<u8, DeltaError> {
        let (&x, rest) = self
            .b
            .split_first()
            .ok_or(DeltaError::Malformed("truncated"))?;
        self.b = rest;
        Ok(x)
    }
    fn num(&mut self) -> Result<u64, DeltaError> {
        if self.b.len() < 8 {
            return Err(DeltaError::Malformed("truncated"));
        }
        let (n, rest) = self.b.split_at(8);
        self.b = rest;
        Ok(u64::from_le_bytes(n.try_into().expect("8 bytes")))
    }
    fn id(&mut self) -> Result<StreamId, DeltaError> {
        Ok(StreamId::new(self.num()?, self.num()?))
    }
    fn usize(&mut self) -> Result<usize, DeltaError> {
        usize::try_from(self.num()?).map_err(|_| DeltaError::Malformed("number out of range"))
    }
    fn bytes(&mut self) -> Result<&'a [u8], DeltaError> {
        if self.b.len() < 4 {
            return Err(DeltaError::Malformed("truncated"));
        }
        let (n, rest) = self.b.split_at(4);
        let n = u32::from_le_bytes(n.try_into().expect("4 bytes")) as usize;
        if rest.len() < n {
            return Err(DeltaError::Malformed("truncated"));
        }
        let (v, rest) = rest.split_at(n);
        self.b = rest;
        Ok(v)
    }
}

const WRONG_TYPE: DeltaError = DeltaError::Malformed("op does not fit the value's type");
const OUT_OF_RANGE: DeltaError = DeltaError::Malformed("list position out of range");
const NO_GROUP: DeltaError = DeltaError::Malformed("no such consumer group");

/// Applies `ops` to an entry, in order. The caller checked the entry's version and sets the new one.
/// On error the entry may be partly changed; the replica resynchronises from scratch anyway.
pub fn apply(e: &mut Entry, ops: &[u8], limits: &EncodingLimits) -> Result<(), DeltaError> {
    let mut r = Reader { b: ops };
    while !r.b.is_empty() {
        let tag = r.u8()?;
        match tag {
            EXPIRE => {
                let t = r.num()?;
                e.set_expire_ms((t != u64::MAX).then_some(t));
            }
            APPEND | SETRANGE => {
                let offset = if tag == SETRANGE { r.usize()? } else { 0 };
                let bytes = r.bytes()?;
                let s = e.make_raw_string().ok_or(WRONG_TYPE)?;
                if tag == APPEND {
                    s.extend_from_slice(bytes);
                } else {
                    let end = offset
                        .checked_add(bytes.len())
                        .ok_or(DeltaError::Malformed("offset out of range"))?;
                    if s.len() < end {
                        s.resize(end, 0);
                    }
                    s[offset..end].copy_from_slice(bytes);
                }
            }
            _ => apply_to_object(e.object_mut().ok_or(WRONG_TYPE)?, tag, &mut r, limits)?,
        }
    }
    Ok(())
}

fn apply_to_object(
    obj: &mut Object,
    tag: u8,
    r: &mut Reader<'_>,
    limits: &EncodingLimits,
) -> Result<(), DeltaError> {
    match (tag, obj) {
        (SADD, Object::Set(s)) => {
            s.insert(r.bytes()?, limits);
        }
        (SREM, Object::Set(s)) => {
            s.remove(r.bytes()?);
        }
        (HSET, Object::Hash(h)) => {
            let f = r.bytes()?;
            h.insert(f, r.bytes()?, limits);
        }
        (HDEL, Object::Hash(h)) => {
            h.remove(r.bytes()?);
        }
        (HFEXPIRE, Object::Hash(h)) => {
            let f = r.bytes()?;
            if !h.set_field_expire(f, r.num()?) {
                return Err(DeltaError::Malformed("deadline for a missing hash field"));
            }
        }
        (HFPERSIST, Object::Hash(h)) => {
            h.persist_field(r.bytes()?);
        }
        (ZADD, Object::ZSet(z)) => {
            let score = f64::from_bits(r.num()?);
            if score.is_nan() {
                return Err(DeltaError::Malformed("NaN score"));
            }
            z.insert(r.bytes()?, score, limits);
        }
        (ZREM, Object::ZSet(z)) => {
            z.remove(r.bytes()?);
        }
        (LPUSH, Object::List(l)) => l.push_front(r.bytes()?),
        (RPUSH, Object::List(l)) => l.push_back(r.bytes()?),
        (LPOP | RPOP, Object::List(l)) => {
            let n = r.usize()?;
            if n > l.len() {
                return Err(OUT_OF_RANGE);
            }
            if tag == LPOP {
                l.drop_front(n);
            } else {
                l.drop_back(n);
            }
        }
        (LSET, Object::List(l)) => {
            let i = r.usize()?;
            if !l.set(i, r.bytes()?) {
                return Err(OUT_OF_RANGE);
            }
        }
        (LINSERT, Object::List(l)) => {
            let i = r.usize()?;
            if i > l.len() {
                return Err(OUT_OF_RANGE);
            }
            l.insert(i, r.bytes()?);
        }
        (LREM, Object::List(l)) => {
            let limit = r.usize()?;
            let from_back = r.u8()? != 0;
            l.remove_matching(r.bytes()?, limit, from_back);
        }
        (LTRIM, Object::List(l)) => {
            // Clamped by the list as on the primary: the same range of the same list.
            let (start, end) = (r.usize()?, r.usize()?);
            l.retain_range(start, end);
        }
        (BFADD, Object::Bloom(b)) => {
            let h = HashPair {
                a: r.num()?,
                b: r.num()?,
            };
            // No size limit here: the primary already decided the add fits, and a replica must
            // end with the same filter whatever its own configuration.
            match b.add_hash(h, u64::MAX) {
                Ok(true) => {}
                _ => return Err(DeltaError::Malformed("Bloom add that changes nothing")),
            }
        }
        (XADD, Object::Stream(s)) => {
            let id = r.id()?;
            let n = r.usize()?;
            let mut fields = Vec::with_capacity(n.min(1024));
            for _ in 0..n {
                fields.push((r.bytes()?, r.bytes()?));
            }
            if id <= s.last_id {
                return Err(DeltaError::Malformed("stream ID not above the last"));
            }
            s.append(id, &fields, limits);
        }
        (XTRIM, Object::Stream(s)) => {
            let some = r.u8()? != 0;
            let first = r.id()?;
            s.trim(
                if some {
                    Trim::MinId(first)
                } else {
                    Trim::MaxLen(0)
                },
                false,
                0,
            );
        }
        (XDEL, Object::Stream(s)) => {
            s.delete(&[r.id()?]);
        }
        (XSETID, Object::Stream(s)) => {
            s.last_id = r.id()?;
            s.entries_added = r.num()?;
            s.max_deleted_id = r.id()?;
        }
        (XGROUP_PUT, Object::Stream(s)) => {
            let name = r.bytes()?;
            let (last, read) = (r.id()?, r.num()? as i64);
            let g = s
                .groups
                .entry(name.into())
                .or_insert_with(|| ConsumerGroup::new(last, read));
            g.last_id = last;
            g.entries_read = read;
        }
        (XGROUP_DESTROY, Object::Stream(s)) => {
            s.groups.remove(r.bytes()?);
        }
        (XCONSUMER, Object::Stream(s)) => {
            let g = s.groups.get_mut(r.bytes()?).ok_or(NO_GROUP)?;
            let (c, seen) = (r.bytes()?, r.num()?);
            g.consumer_mut(c, seen).0.seen_ms = seen;
        }
        (XDELCONSUMER, Object::Stream(s)) => {
            let g = s.groups.get_mut(r.bytes()?).ok_or(NO_GROUP)?;
            g.delete_consumer(r.bytes()?);
        }
        (XASSIGN, Object::Stream(s)) => {
            let g = s.groups.get_mut(r.bytes()?).ok_or(NO_GROUP)?;
            let (id, c, at, count) = (r.id()?, r.bytes()?, r.num()?, r.num()?);
            if !g.consumers.contains_key(c) {
                return Err(DeltaError::Malformed("no such consumer"));
            }
            g.assign(id, c, at, count);
        }
        (XACK, Object::Stream(s)) => {
            let g = s.groups.get_mut(r.bytes()?).ok_or(NO_GROUP)?;
            g.ack(r.id()?);
        }
        (
            XADD | XTRIM | XDEL | XSETID | XGROUP_PUT | XGROUP_DESTROY | XCONSUMER | XDELCONSUMER
            | XASSIGN | XACK,
            _,
        ) => return Err(WRONG_TYPE),
        (SADD | SREM | HSET | HDEL | HFEXPIRE | HFPERSIST | ZADD | ZREM, _)
        | (LPUSH | RPUSH | LPOP | RPOP | LSET | LINSERT | LREM | LTRIM, _) => {
            return Err(WRONG_TYPE);
        }
        _ => return Err(DeltaError::Malformed("unknown op")),
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_pending_key_holds_short_keys_in_place_and_any_key_whole() {
        for n in [
            0usize,
            1,
            PENDING_KEY_INLINE_BYTES,
            PENDING_KEY_INLINE_BYTES + 1,
            1000,
        ] {
            let k: Vec<u8> = (0..n).map(|i| i as u8).collect();
            let p = PendingKey::from(&k[..]);
            assert_eq!(&p[..], &k[..], "{n}");
            assert_eq!(
                matches!(p, PendingKey::Inline { .. }),
                n <= PENDING_KEY_INLINE_BYTES,
                "{n}"
            );
        }
        // A queued change is no bigger for it than with a boxed key and its delta.
        assert!(std::mem::size_of::<Pending>() <= 64);
    }
    use crate::entry::Payload;
    use crate::types::{hash::Hash, list::List, set::Set, zset::ZSet};

    fn entry(obj: Object) -> Entry {
        Entry::new(b"k", Payload::Object(Box::new(obj)), None, None, 1, 0)
    }

    #[test]
    fn stream_ops_replay_entries_trims_and_groups() {
        use crate::types::stream::Stream;
        let limits = EncodingLimits {
            stream_node_max_entries: 3,
            ..EncodingLimits::default()
        };
        let id = |ms| StreamId::new(ms, 0);
        // The primary's stream, changed as commands would, noting each change.
        let mut p = Stream::new();
        p.append(id(1), &[(b"f", b"v")], &limits);
        let mut e = entry(Object::Stream(Box::new(p.clone())));
        let mut ops = Ops::new(true);
        for ms in 2..9 {
            p.append(id(ms), &[(b"f", b"v"), (b"g", b"w")], &limits);
            ops.xadd(id(ms), &[(b"f", b"v"), (b"g", b"w")]);
        }
        p.trim(Trim::MaxLen(5), true, 0);
        ops.xtrim(Some(p.first_id));
        p.delete(&[id(7)]);
        ops.xdel(id(7));
        p.groups
            .insert(b"g".as_slice().into(), ConsumerGroup::new(id(4), 2));
        ops.xgroup_put(b"g", id(4), 2);
        let g = p.groups.get_mut(b"g".as_slice()).unwrap();
        g.consumer_mut(b"c", 10);
        ops.xconsumer(b"g", b"c", 10);
        g.assign(id(5), b"c", 11, 1);
        ops.xassign(b"g", id(5), b"c", 11, 1);
        g.assign(id(6), b"c", 12, 3);
        ops.xassign(b"g", id(6), b"c", 12, 3);
        g.ack(id(5));
        ops.xack(b"g", id(5));
        p.last_id = id(20);
        ops.xsetid(id(20), p.entries_added, p.max_deleted_id);
        apply(&mut e, &ops.into_bytes(), &limits).unwrap();
        let Some(Object::Stream(r)) = e.object_mut() else {
            panic!("a stream")
        };
        assert_eq!(**r, p);
        // An entry at or below the last ID is refused, never appended out of order.
        let mut ops = Ops::new(true);
        ops.xadd(id(3), &[(b"f", b"v")]);
        assert!(apply(&mut e, &ops.into_bytes(), &limits).is_err());
    }

    #[test]
    fn ops_replay_what_the_primary_did() {
        let limits = EncodingLimits::default();
        let mut s = Set::new(&limits);
        s.insert(b"a", &limits);
        let mut e = entry(Object::Set(s));
        let mut ops = Ops::new(true);
        ops.sadd(b"b");
        ops.srem(b"a");
        ops.expire(Some(99));
        apply(&mut e, &ops.into_bytes(), &limits).unwrap();
        let Some(Object::Set(s)) = e.object_mut() else {
            panic!("a set")
        };
        assert!(s.contains(b"b") && !s.contains(b"a") && s.len() == 1);
        assert_eq!(e.expire_ms(), Some(99));

        let mut l = List::new(&limits);
        for v in [&b"x"[..], b"y", b"z", b"y"] {
            l.push_back(v);
        }
        let mut e = entry(Object::List(l));
        let mut ops = Ops::new(true);
        ops.push(true, b"h");
        ops.pop(false, 1);
        ops.lset(1, b"X");
        ops.linsert(2, b"i");
        ops.lrem(b"y", 0, false);
        ops.ltrim(0, 3);
        apply(&mut e, &ops.into_bytes(), &limits).unwrap();
        let Some(Object::List(l)) = e.object_mut() else {
            panic!("a list")
        };
        let got: Vec<Vec<u8>> = l.iter().map(|v| v.to_vec()).collect();
        assert_eq!(got, vec![b"h".to_vec(), b"X".to_vec(), b"i".to_vec()]);

        let mut e = entry(Object::Hash(Hash::new(&limits)));
        let mut ops = Ops::new(true);
        ops.hset(b"f", b"1");
        ops.hset(b"g", b"2");
        ops.hdel(b"f");
        ops.hset(b"h", b"3");
        ops.hfield_expire(b"g", 500);
        ops.hfield_expire(b"h", 600);
        ops.hfield_persist(b"h");
        apply(&mut e, &ops.into_bytes(), &limits).unwrap();
        let Some(Object::Hash(h)) = e.object_mut() else {
            panic!("a hash")
        };
        assert_eq!((h.get(b"g"), h.len()), (Some(&b"2"[..]), 2));
        assert_eq!(h.field_expire_at(b"g"), Some(500));
        assert_eq!(h.field_expire_at(b"h"), None);
        // A deadline for a field the hash lacks: the stream is broken.
        let mut ops = Ops::new(true);
        ops.hfield_expire(b"nope", 1);
        assert!(apply(&mut e, &ops.into_bytes(), &limits).is_err());

        let mut e = entry(Object::ZSet(ZSet::new(&limits)));
        let mut ops = Ops::new(true);
        ops.zadd(1.5, b"m");
        ops.zadd(-2.0, b"n");
        ops.zrem(b"m");
        apply(&mut e, &ops.into_bytes(), &limits).unwrap();
        let Some(Object::ZSet(z)) = e.object_mut() else {
            panic!("a zset")
        };
        assert_eq!((z.score(b"n"), z.len()), (Some(-2.0), 1));

        let mut e = Entry::new_string(b"k", b"ab", None, 1);
        let mut ops = Ops::new(true);
        ops.append(b"cd");
        ops.setrange(6, b"z");
        apply(&mut e, &ops.into_bytes(), &limits).unwrap();
        assert_eq!(e.string(), Some(&b"abcd\0\0z"[..]));
    }

    #[test]
    fn ops_that_do_not_fit_are_errors_not_panics() {
        let limits = EncodingLimits::default();
        let mut e = Entry::new_string(b"k", b"v", None, 1);
        let mut ops = Ops::new(true);
        ops.sadd(b"m");
        assert_eq!(apply(&mut e, &ops.into_bytes(), &limits), Err(WRONG_TYPE));
        let mut e = entry(Object::List(List::new(&limits)));
        let mut ops = Ops::new(true);
        ops.pop(true, 3);
        assert_eq!(apply(&mut e, &ops.into_bytes(), &limits), Err(OUT_OF_RANGE));
        for bad in [&[LSET][..], &[SADD, 9, 0, 0, 0, 1], &[200], &[ZADD, 0]] {
            assert!(apply(&mut e, bad, &limits).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn noting_is_free_when_not_recording() {
        let mut ops = Ops::new(false);
        ops.sadd(b"m");
        ops.expire(None);
        assert!(ops.is_empty());
    }
}
