//! Stream: entries keyed by 128-bit IDs (`ms-seq`), in packed nodes, plus consumer groups.
//!
//! Like Redis's radix tree of listpacks, entries live in nodes of up to `stream-node-max-entries`
//! entries (or `stream-node-max-bytes`, measured as Redis's listpack would be, so nodes split where
//! Redis's do and `XINFO STREAM`'s `radix-tree-keys` agrees). A node is keyed by its master ID (the
//! first ID ever added to it) and holds one buffer: the master's field names, then each entry as a
//! flags byte, its ID as deltas from the master, and its fields and values — only the values when
//! its field names are the master's (the common case: every XADD of one application sends the same
//! fields). A deleted entry is cut out of its buffer (nodes are small), where Redis leaves a
//! tombstone; the node remembers how many it lost so that it fills up as Redis's does.
//!
//! Consumer groups are plain ordered maps: group name → group, pending entries (PEL) by ID, and
//! consumers by name, each with the IDs it owns. Names order the maps as the rax orders them in
//! Redis (byte-wise), so XINFO lists them in Redis's order.

use std::collections::{BTreeMap, BTreeSet};

use super::EncodingLimits;
use crate::codec::{get_bytes, get_varint, put_bytes, put_varint};

/// A stream entry ID.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct StreamId {
    pub ms: u64,
    pub seq: u64,
}

impl StreamId {
    pub const MIN: StreamId = StreamId { ms: 0, seq: 0 };
    pub const MAX: StreamId = StreamId {
        ms: u64::MAX,
        seq: u64::MAX,
    };

    pub const fn new(ms: u64, seq: u64) -> Self {
        StreamId { ms, seq }
    }

    /// The next ID, `None` after the largest.
    pub fn next(self) -> Option<StreamId> {
        if self.seq == u64::MAX {
            if self.ms == u64::MAX {
                None
            } else {
                Some(StreamId::new(self.ms + 1, 0))
            }
        } else {
            Some(StreamId::new(self.ms, self.seq + 1))
        }
    }

    /// The previous ID, `None` before the smallest.
    pub fn prev(self) -> Option<StreamId> {
        if self.seq == 0 {
            if self.ms == 0 {
                None
            } else {
                Some(StreamId::new(self.ms - 1, u64::MAX))
            }
        } else {
            Some(StreamId::new(self.ms, self.seq - 1))
        }
    }

    pub fn is_zero(self) -> bool {
        self == StreamId::MIN
    }

    /// The 16 big-endian bytes Redis keys its radix tree with.
    pub fn to_be_bytes(self) -> [u8; 16] {
        let mut b = [0u8; 16];
        b[..8].copy_from_slice(&self.ms.to_be_bytes());
        b[8..].copy_from_slice(&self.seq.to_be_bytes());
        b
    }
}

impl std::fmt::Display for StreamId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}-{}", self.ms, self.seq)
    }
}

/// Entry flag: the entry's field names are the node master's (only values are stored).
const SAME_FIELDS: u8 = 1;

/// Estimated bookkeeping per node beyond its buffer (map slot, node struct), for `mem_bytes`.
const NODE_OVERHEAD_BYTES: usize = 96;
/// Bookkeeping per pending entry (its slots in the group's and the consumer's maps, the struct
/// and its consumer name) and per consumer, for `mem_bytes`.
const PENDING_OVERHEAD_BYTES: usize = 96;
const CONSUMER_OVERHEAD_BYTES: usize = 96;
const GROUP_OVERHEAD_BYTES: usize = 128;

/// A packed run of entries.
#[derive(Clone, Debug, PartialEq)]
struct Node {
    /// Master field names (`varint n`, then n × bytes), then the entries.
    buf: Vec<u8>,
    /// Where the entries start in `buf`.
    entries_at: u32,
    live: u32,
    /// Entries deleted from this node (they count towards its fullness, as Redis's tombstones).
    deleted: u32,
    /// Size Redis's listpack for this node would have (decides when the node is full).
    lp_bytes: u32,
    /// The last ID ever added (deleted or not).
    last: StreamId,
    /// Whether `last` is still there (not deleted).
    last_live: bool,
}

/// One entry as read from a node: its ID and its fields.
#[derive(Clone, Copy, Debug)]
pub struct EntryRef<'a> {
    pub id: StreamId,
    master: &'a [u8],
    body: &'a [u8],
    n: usize,
    same: bool,
}

impl<'a> EntryRef<'a> {
    /// Number of field-value pairs.
    pub fn len(&self) -> usize {
        self.n
    }

    pub fn is_empty(&self) -> bool {
        self.n == 0
    }

    /// The field-value pairs in the order they were added.
    pub fn fields(&self) -> Fields<'a> {
        Fields {
            master: self.master,
            body: self.body,
            left: self.n,
            same: self.same,
        }
    }
}

/// Iterator over an entry's field-value pairs.
pub struct Fields<'a> {
    master: &'a [u8],
    body: &'a [u8],
    left: usize,
    same: bool,
}

impl<'a> Iterator for Fields<'a> {
    type Item = (&'a [u8], &'a [u8]);
    fn next(&mut self) -> Option<Self::Item> {
        if self.left == 0 {
            return None;
        }
        self.left -= 1;
        let f = if self.same {
            let (f, rest) = get_bytes(self.master).expect("node buffer");
            self.master = rest;
            f
        } else {
            let (f, rest) = get_bytes(self.body).expect("node buffer");
            self.body = rest;
            f
        };
        let (v, rest) = get_bytes(self.body).expect("node buffer");
        self.body = rest;
        Some((f, v))
    }
    fn size_hint(&self) -> (usize, Option<usize>) {
        (self.left, Some(self.left))
    }
}

impl ExactSizeIterator for Fields<'_> {}

fn zigzag(v: i64) -> u64 {
    ((v << 1) ^ (v >> 63)) as u64
}

fn unzigzag(v: u64) -> i64 {
    ((v >> 1) as i64) ^ -((v & 1) as i64)
}

/// Bytes of an integer element in a listpack (encoding and back-length).
fn lp_int_bytes(v: i64) -> usize {
    let enc = if (0..=127).contains(&v) {
        1
    } else if (-4096..=4095).contains(&v) {
        2
    } else if i16::try_from(v).is_ok() {
        3
    } else if (-(1 << 23)..(1 << 23)).contains(&v) {
        4
    } else if i32::try_from(v).is_ok() {
        5
    } else {
        9
    };
    enc + 1
}

/// Bytes of a string element in a listpack (integers-as-strings are stored as integers).
fn lp_str_bytes(s: &[u8]) -> usize {
    if s.len() <= 20
        && let Some(v) = crate::entry::parse_canonical_i64(s)
    {
        return lp_int_bytes(v);
    }
    let enc = match s.len() {
        0..64 => 1 + s.len(),
        64..4096 => 2 + s.len(),
        _ => 5 + s.len(),
    };
    enc + match enc {
        0..128 => 1,
        128..16384 => 2,
        16384..2097152 => 3,
        2097152..268435456 => 4,
        _ => 5,
    }
}

impl Node {
    fn new(first: StreamId, fields: &[(&[u8], &[u8])]) -> Node {
        let mut buf = Vec::new();
        put_varint(&mut buf, fields.len() as u64);
        for (f, _) in fields {
            put_bytes(&mut buf, f);
        }
        // Listpack header and end, master count, deleted, num-fields, the fields, terminator.
        let lp = 7
            + 2
            + 2
            + lp_int_bytes(fields.len() as i64)
            + fields.iter().map(|(f, _)| lp_str_bytes(f)).sum::<usize>()
            + 2;
        Node {
            entries_at: buf.len() as u32,
            buf,
            live: 0,
            deleted: 0,
            lp_bytes: lp as u32,
            last: first,
            last_live: false,
        }
    }

    fn master_fields(&self) -> (usize, &[u8]) {
        let (n, rest) = get_varint(&self.buf[..self.entries_at as usize]).expect("node buffer");
        (n as usize, rest)
    }

    fn append(&mut self, master_id: StreamId, id: StreamId, fields: &[(&[u8], &[u8])]) {
        let (mn, mut master) = self.master_fields();
        let same = mn == fields.len()
            && fields.iter().all(|(f, _)| {
                let (m, rest) = get_bytes(master).expect("node buffer");
                master = rest;
                m == *f
            });
        let ms_delta = id.ms - master_id.ms;
        let seq_delta = id.seq.wrapping_sub(master_id.seq) as i64;
        let mut lp =
            lp_int_bytes(same as i64 * 2) + lp_int_bytes(ms_delta as i64) + lp_int_bytes(seq_delta);
        let payload: usize = fields
            .iter()
            .map(|(f, v)| v.len() + 2 + if same { 0 } else { f.len() + 2 })
            .sum();
        let need = 21 + payload;
        if self.buf.capacity() - self.buf.len() < need {
            // Grow by a quarter: nodes are many and small, doubling would waste a third.
            let want = (self.buf.len() + need).max(self.buf.len() + self.buf.len() / 4);
            self.buf.reserve_exact(want - self.buf.len());
        }
        self.buf.push(if same { SAME_FIELDS } else { 0 });
        put_varint(&mut self.buf, ms_delta);
        put_varint(&mut self.buf, zigzag(seq_delta));
        if same {
            for (_, v) in fields {
                put_bytes(&mut self.buf, v);
                lp += lp_str_bytes(v);
            }
            lp += lp_int_bytes(fields.len() as i64);
        } else {
            put_varint(&mut self.buf, fields.len() as u64);
            lp += lp_int_bytes(fields.len() as i64);
            for (f, v) in fields {
                put_bytes(&mut self.buf, f);
                put_bytes(&mut self.buf, v);
                lp += lp_str_bytes(f) + lp_str_bytes(v);
            }
            lp += lp_int_bytes(fields.len() as i64 * 2 + 1);
        }
        self.lp_bytes = self.lp_bytes.saturating_add(lp as u32);
        self.live += 1;
        self.last = id;
        self.last_live = true;
    }

    /// Every entry with its byte range in `buf`, in ID order.
    fn entries(&self, master_id: StreamId) -> NodeIter<'_> {
        let (mn, master) = self.master_fields();
        NodeIter {
            buf: &self.buf,
            pos: self.entries_at as usize,
            master_id,
            master,
            mn,
        }
    }
}

struct NodeIter<'a> {
    buf: &'a [u8],
    pos: usize,
    master_id: StreamId,
    master: &'a [u8],
    mn: usize,
}

impl<'a> Iterator for NodeIter<'a> {
    /// The entry and its byte range in the node's buffer.
    type Item = (EntryRef<'a>, std::ops::Range<usize>);
    fn next(&mut self) -> Option<Self::Item> {
        if self.pos >= self.buf.len() {
            return None;
        }
        let start = self.pos;
        let flags = self.buf[start];
        let (ms_delta, rest) = get_varint(&self.buf[start + 1..]).expect("node buffer");
        let (seq_delta, mut rest) = get_varint(rest).expect("node buffer");
        let id = StreamId::new(
            self.master_id.ms + ms_delta,
            self.master_id.seq.wrapping_add(unzigzag(seq_delta) as u64),
        );
        let same = flags & SAME_FIELDS != 0;
        let n = if same {
            self.mn
        } else {
            let (n, r) = get_varint(rest).expect("node buffer");
            rest = r;
            n as usize
        };
        let body = rest;
        let mut skip = rest;
        for _ in 0..if same { n } else { 2 * n } {
            skip = get_bytes(skip).expect("node buffer").1;
        }
        let end = self.buf.len() - skip.len();
        let body = &body[..body.len() - skip.len()];
        self.pos = end;
        Some((
            EntryRef {
                id,
                master: self.master,
                body,
                n,
                same,
            },
            start..end,
        ))
    }
}

/// A pending entry of a consumer group: delivered, not yet acknowledged.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PendingEntry {
    pub consumer: Box<[u8]>,
    /// Unix ms of the last delivery.
    pub delivery_ms: u64,
    pub delivery_count: u64,
}

/// A consumer of a group.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct Consumer {
    /// Unix ms it was last seen (read, claimed, created).
    pub seen_ms: u64,
    /// The IDs it owns in the group's PEL.
    pub pel: BTreeSet<StreamId>,
}

/// `entries-read` when unknown (Redis's `SCG_INVALID_ENTRIES_READ`).
pub const ENTRIES_READ_INVALID: i64 = -1;

/// A consumer group.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct ConsumerGroup {
    pub last_id: StreamId,
    /// Entries the group has read (logically), or [`ENTRIES_READ_INVALID`].
    pub entries_read: i64,
    pub pel: BTreeMap<StreamId, PendingEntry>,
    pub consumers: BTreeMap<Box<[u8]>, Consumer>,
}

impl ConsumerGroup {
    pub fn new(last_id: StreamId, entries_read: i64) -> Self {
        ConsumerGroup {
            last_id,
            entries_read,
            ..Default::default()
        }
    }

    /// Estimated from the counts (O(1), called on every write): a pending entry sits in the
    /// group's PEL and in one consumer's.
    fn mem_bytes(&self, name_len: usize) -> usize {
        GROUP_OVERHEAD_BYTES
            + name_len
            + self.pel.len() * PENDING_OVERHEAD_BYTES
            + self.consumers.len() * CONSUMER_OVERHEAD_BYTES
    }

    /// Gets or creates `name`; true if created.
    pub fn consumer_mut(&mut self, name: &[u8], now_ms: u64) -> (&mut Consumer, bool) {
        let created = !self.consumers.contains_key(name);
        let c = self
            .consumers
            .entry(name.into())
            .or_insert_with(|| Consumer {
                seen_ms: now_ms,
                pel: BTreeSet::new(),
            });
        (c, created)
    }

    /// Gives pending `id` to `consumer` (creating the PEL entry if missing).
    pub fn assign(&mut self, id: StreamId, consumer: &[u8], delivery_ms: u64, count: u64) {
        if let Some(old) = self.pel.get(&id)
            && let Some(c) = self.consumers.get_mut(&old.consumer)
        {
            c.pel.remove(&id);
        }
        self.pel.insert(
            id,
            PendingEntry {
                consumer: consumer.into(),
                delivery_ms,
                delivery_count: count,
            },
        );
        if let Some(c) = self.consumers.get_mut(consumer) {
            c.pel.insert(id);
        }
    }

    /// Acknowledges `id`: true if it was pending.
    pub fn ack(&mut self, id: StreamId) -> bool {
        let Some(p) = self.pel.remove(&id) else {
            return false;
        };
        if let Some(c) = self.consumers.get_mut(&p.consumer) {
            c.pel.remove(&id);
        }
        true
    }

    /// Deletes a consumer and its pending entries; returns how many it had, `None` if absent.
    pub fn delete_consumer(&mut self, name: &[u8]) -> Option<usize> {
        let c = self.consumers.remove(name)?;
        for id in &c.pel {
            self.pel.remove(id);
        }
        Some(c.pel.len())
    }
}

/// A stream value.
#[derive(Clone, Debug, Default)]
pub struct Stream {
    nodes: BTreeMap<StreamId, Node>,
    len: u64,
    pub last_id: StreamId,
    /// The first live entry's ID, as Redis records it (0-0 when empty).
    pub first_id: StreamId,
    pub max_deleted_id: StreamId,
    pub entries_added: u64,
    pub groups: BTreeMap<Box<[u8]>, ConsumerGroup>,
    /// Heap bytes of the nodes (running total).
    node_bytes: usize,
}

/// Equal when they hold the same entries in the same nodes, counters and groups (buffer capacity
/// aside).
impl PartialEq for Stream {
    fn eq(&self, o: &Self) -> bool {
        self.nodes == o.nodes
            && self.len == o.len
            && self.last_id == o.last_id
            && self.first_id == o.first_id
            && self.max_deleted_id == o.max_deleted_id
            && self.entries_added == o.entries_added
            && self.groups == o.groups
    }
}

/// How XTRIM / XADD trim a stream.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Trim {
    MaxLen(u64),
    MinId(StreamId),
}

impl Stream {
    pub fn new() -> Self {
        Stream::default()
    }

    pub fn len(&self) -> usize {
        self.len as usize
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Nodes holding entries (`radix-tree-keys`).
    pub fn node_count(&self) -> usize {
        self.nodes.len()
    }

    /// Nodes Redis's radix tree would have for these node keys (`radix-tree-nodes`): the tree
    /// of the 16-byte big-endian master IDs, with single-child chains compressed into one node.
    pub fn rax_node_count(&self) -> usize {
        let keys: Vec<[u8; 16]> = self.nodes.keys().map(|k| k.to_be_bytes()).collect();
        fn count(keys: &[[u8; 16]], depth: usize) -> usize {
            if keys.is_empty() || depth == 16 {
                return 1;
            }
            // Follow the common prefix (a compressed node), then branch.
            let mut d = depth;
            let (first, last) = (&keys[0], &keys[keys.len() - 1]);
            while d < 16 && first[d] == last[d] {
                d += 1;
            }
            if d > depth {
                // A compressed node at `depth`, its child at `d`.
                return 1 + count(keys, d);
            }
            // A branching node: one child per distinct byte at `depth`.
            let mut n = 1;
            let mut i = 0;
            while i < keys.len() {
                let b = keys[i][depth];
                let j = i + keys[i..].partition_point(|k| k[depth] == b);
                n += count(&keys[i..j], depth + 1);
                i = j;
            }
            n
        }
        count(&keys, 0)
    }

    /// How many entries were added up to `id` (a group's `entries-read` for a last-delivered ID
    /// of `id`), or [`ENTRIES_READ_INVALID`] when it cannot be told: Redis's
    /// `streamEstimateDistanceFromFirstEverEntry`.
    pub fn estimate_distance(&self, id: StreamId) -> i64 {
        if self.entries_added == 0 {
            return 0;
        }
        if self.is_empty() && id <= self.last_id {
            return self.entries_added as i64;
        }
        if id == self.last_id {
            return self.entries_added as i64;
        }
        if id > self.last_id {
            return ENTRIES_READ_INVALID;
        }
        if self.max_deleted_id.is_zero() || self.max_deleted_id < self.first_id {
            if id < self.first_id {
                return (self.entries_added - self.len) as i64;
            } else if id == self.first_id {
                return (self.entries_added - self.len + 1) as i64;
            }
        }
        ENTRIES_READ_INVALID
    }

    pub fn mem_bytes(&self) -> usize {
        std::mem::size_of::<Stream>()
            + self.node_bytes
            + self
                .groups
                .iter()
                .map(|(k, g)| g.mem_bytes(k.len()))
                .sum::<usize>()
    }

    pub fn encoding(&self) -> &'static str {
        "stream"
    }

    fn node_mem(n: &Node) -> usize {
        n.buf.capacity() + NODE_OVERHEAD_BYTES
    }

    /// Appends an entry; `id` must be above `last_id` (the caller checks).
    pub fn append(&mut self, id: StreamId, fields: &[(&[u8], &[u8])], limits: &EncodingLimits) {
        debug_assert!(id > self.last_id || (self.last_id.is_zero() && self.entries_added == 0));
        let max_bytes = match limits.stream_node_max_bytes {
            0 => u32::MAX as usize,
            b => b.min(u32::MAX as usize),
        };
        let total: usize = fields.iter().map(|(f, v)| f.len() + v.len()).sum();
        let tail = self.nodes.last_entry().filter(|n| {
            // IDs are stored as deltas from the master: never below it.
            *n.key() <= id && {
                let n = n.get();
                n.lp_bytes as usize + total < max_bytes
                    && (limits.stream_node_max_entries == 0
                        || ((n.live + n.deleted) as usize) < limits.stream_node_max_entries)
            }
        });
        match tail {
            Some(mut e) => {
                let master = *e.key();
                let n = e.get_mut();
                self.node_bytes -= Self::node_mem(n);
                n.append(master, id, fields);
                self.node_bytes += Self::node_mem(n);
            }
            None => {
                // The previous tail is full for good: give back its slack.
                if let Some(mut e) = self.nodes.last_entry() {
                    let n = e.get_mut();
                    self.node_bytes -= Self::node_mem(n);
                    n.buf.shrink_to_fit();
                    self.node_bytes += Self::node_mem(n);
                }
                let mut n = Node::new(id, fields);
                n.append(id, id, fields);
                self.node_bytes += Self::node_mem(&n);
                self.nodes.insert(id, n);
            }
        }
        if self.len == 0 {
            self.first_id = id;
        }
        self.len += 1;
        self.entries_added += 1;
        self.last_id = id;
    }

    /// Calls `f` on each entry with `start <= id <= end`, ascending (or descending when `rev`),
    /// until it returns false.
    pub fn range<'s>(
        &'s self,
        start: StreamId,
        end: StreamId,
        rev: bool,
        mut f: impl FnMut(EntryRef<'s>) -> bool,
    ) {
        if start > end {
            return;
        }
        // The node that may hold `start` is the last one keyed at or below it.
        let from = self
            .nodes
            .range(..=start)
            .next_back()
            .map_or(start, |(k, _)| *k);
        if !rev {
            for (master, node) in self.nodes.range(from..=end) {
                for (e, _) in node.entries(*master) {
                    if e.id < start {
                        continue;
                    }
                    if e.id > end || !f(e) {
                        return;
                    }
                }
            }
        } else {
            let mut buf = Vec::new();
            for (master, node) in self.nodes.range(from..=end).rev() {
                buf.clear();
                buf.extend(node.entries(*master).map(|(e, _)| e));
                for e in buf.iter().rev() {
                    if e.id > end {
                        continue;
                    }
                    if e.id < start || !f(*e) {
                        return;
                    }
                }
            }
        }
    }

    /// The entry `id`, if present.
    pub fn get(&self, id: StreamId) -> Option<EntryRef<'_>> {
        let (master, node) = self.nodes.range(..=id).next_back()?;
        node.entries(*master).map(|(e, _)| e).find(|e| e.id == id)
    }

    /// The first or last live entry's ID.
    pub fn edge_id(&self, last: bool) -> Option<StreamId> {
        // The last node's last entry is live unless an XDEL reached it (trims cut from the
        // front and never leave a node's last entry alone behind): no walk then.
        if last
            && let Some((_, n)) = self.nodes.last_key_value()
            && n.live > 0
            && n.last_live
        {
            return Some(n.last);
        }
        let mut found = None;
        self.range(StreamId::MIN, StreamId::MAX, last, |e| {
            found = Some(e.id);
            false
        });
        found
    }

    fn refresh_first_id(&mut self) {
        self.first_id = if self.len == 0 {
            StreamId::MIN
        } else {
            self.edge_id(false).unwrap_or(StreamId::MIN)
        };
    }

    /// Deletes entry `id` (XDEL); true if it was there. Does not touch `max_deleted_id`.
    fn delete_one(&mut self, id: StreamId) -> bool {
        let Some((&master, _)) = self.nodes.range(..=id).next_back() else {
            return false;
        };
        let node = self.nodes.get_mut(&master).expect("found above");
        let Some(range) = node
            .entries(master)
            .find(|(e, _)| e.id == id)
            .map(|(_, r)| r)
        else {
            return false;
        };
        self.node_bytes -= Self::node_mem(node);
        node.buf.drain(range);
        if id == node.last {
            node.last_live = false;
        }
        node.live -= 1;
        node.deleted += 1;
        self.len -= 1;
        if node.live == 0 {
            self.nodes.remove(&master);
        } else {
            if node.buf.capacity() > 2 * node.buf.len() + 64 {
                node.buf.shrink_to_fit();
            }
            self.node_bytes += Self::node_mem(node);
        }
        true
    }

    /// XDEL: deletes the given IDs; returns how many were there.
    pub fn delete(&mut self, ids: &[StreamId]) -> usize {
        let mut n = 0;
        let mut first_gone = false;
        for &id in ids {
            if self.delete_one(id) {
                n += 1;
                if id > self.max_deleted_id {
                    self.max_deleted_id = id;
                }
                first_gone |= id == self.first_id;
            }
        }
        if first_gone || self.len == 0 {
            self.refresh_first_id();
        }
        n
    }

    /// Trims as Redis's `streamTrim`: whole nodes first; with `approx` only whole nodes;
    /// `limit` (0: none) caps the entries removed. Returns the number removed.
    pub fn trim(&mut self, how: Trim, approx: bool, limit: u64) -> u64 {
        let mut removed = 0u64;
        loop {
            if let Trim::MaxLen(max) = how
                && self.len <= max
            {
                break;
            }
            let Some((&master, node)) = self.nodes.first_key_value() else {
                break;
            };
            let entries = node.live as u64;
            if limit != 0 && removed + entries > limit {
                break;
            }
            let whole = match how {
                Trim::MaxLen(max) => self.len - entries >= max,
                Trim::MinId(min) => node.last < min,
            };
            if whole {
                let node = self.nodes.remove(&master).expect("first node");
                self.node_bytes -= Self::node_mem(&node);
                self.len -= entries;
                removed += entries;
                continue;
            }
            if approx {
                break;
            }
            // Remove entries from within this node, then stop.
            let mut cut = Vec::new();
            let mut len = self.len;
            for (e, r) in node.entries(master) {
                let stop = match how {
                    Trim::MaxLen(max) => len <= max,
                    Trim::MinId(min) => e.id >= min,
                };
                if stop {
                    break;
                }
                cut.push(r);
                len -= 1;
            }
            if let Some(last) = cut.last() {
                let node = self.nodes.get_mut(&master).expect("first node");
                self.node_bytes -= Self::node_mem(node);
                let end = last.end;
                let start = cut[0].start;
                node.buf.drain(start..end);
                let n = cut.len() as u32;
                node.live -= n;
                node.deleted += n;
                self.node_bytes += Self::node_mem(node);
                self.len -= n as u64;
                removed += n as u64;
            }
            break;
        }
        self.refresh_first_id();
        removed
    }

    // ---- codec ----

    /// Appends the value's body: the counters, the entries, then the groups.
    pub fn encode(&self, out: &mut Vec<u8>) {
        for v in [
            self.last_id.ms,
            self.last_id.seq,
            self.max_deleted_id.ms,
            self.max_deleted_id.seq,
            self.entries_added,
            self.nodes.len() as u64,
        ] {
            put_varint(out, v);
        }
        // Nodes as they are, so a restored stream splits (and reports) as the original.
        for (master, n) in &self.nodes {
            put_varint(out, master.ms);
            put_varint(out, master.seq);
            put_varint(out, n.live as u64);
            put_varint(out, n.deleted as u64);
            put_varint(out, n.lp_bytes as u64);
            put_varint(out, n.last.ms);
            put_varint(out, n.last.seq);
            put_varint(out, n.entries_at as u64);
            put_bytes(out, &n.buf);
        }
        put_varint(out, self.groups.len() as u64);
        for (name, g) in &self.groups {
            put_bytes(out, name);
            put_varint(out, g.last_id.ms);
            put_varint(out, g.last_id.seq);
            put_varint(out, zigzag(g.entries_read));
            put_varint(out, g.consumers.len() as u64);
            for (cname, c) in &g.consumers {
                put_bytes(out, cname);
                put_varint(out, c.seen_ms);
            }
            put_varint(out, g.pel.len() as u64);
            for (id, p) in &g.pel {
                put_varint(out, id.ms);
                put_varint(out, id.seq);
                put_bytes(out, &p.consumer);
                put_varint(out, p.delivery_ms);
                put_varint(out, p.delivery_count);
            }
        }
    }

    /// Decodes a body written by [`Stream::encode`]; `None` if malformed.
    pub fn decode(b: &[u8], _limits: &EncodingLimits) -> Option<Self> {
        let mut r = Reader(b);
        let mut s = Stream {
            last_id: StreamId::new(r.u64()?, r.u64()?),
            max_deleted_id: StreamId::new(r.u64()?, r.u64()?),
            entries_added: r.u64()?,
            ..Default::default()
        };
        let nodes = r.u64()?;
        for _ in 0..nodes {
            let master = StreamId::new(r.u64()?, r.u64()?);
            let live = u32::try_from(r.u64()?).ok()?;
            let deleted = u32::try_from(r.u64()?).ok()?;
            let lp_bytes = u32::try_from(r.u64()?).ok()?;
            let last = StreamId::new(r.u64()?, r.u64()?);
            let entries_at = u32::try_from(r.u64()?).ok()?;
            let buf = r.bytes()?.to_vec();
            if entries_at as usize > buf.len() {
                return None;
            }
            let mut node = Node {
                buf,
                entries_at,
                live,
                deleted,
                lp_bytes,
                last,
                last_live: false,
            };
            if !valid_node(&node, master)
                || s.nodes.last_key_value().is_some_and(|(k, _)| *k >= master)
            {
                return None;
            }
            // Checked above, so walking the node is safe.
            node.last_live = node
                .entries(master)
                .last()
                .is_some_and(|(e, _)| e.id == last);
            s.len += live as u64;
            s.node_bytes += Self::node_mem(&node);
            s.nodes.insert(master, node);
        }
        let groups = r.u64()?;
        for _ in 0..groups {
            let name: Box<[u8]> = r.bytes()?.into();
            let mut g = ConsumerGroup::new(StreamId::new(r.u64()?, r.u64()?), unzigzag(r.u64()?));
            let consumers = r.u64()?;
            for _ in 0..consumers {
                let cname: Box<[u8]> = r.bytes()?.into();
                let seen_ms = r.u64()?;
                g.consumers.insert(
                    cname,
                    Consumer {
                        seen_ms,
                        pel: BTreeSet::new(),
                    },
                );
            }
            let pel = r.u64()?;
            for _ in 0..pel {
                let id = StreamId::new(r.u64()?, r.u64()?);
                let consumer: Box<[u8]> = r.bytes()?.into();
                let delivery_ms = r.u64()?;
                let delivery_count = r.u64()?;
                g.consumers.get_mut(&consumer)?.pel.insert(id);
                g.pel.insert(
                    id,
                    PendingEntry {
                        consumer,
                        delivery_ms,
                        delivery_count,
                    },
                );
            }
            s.groups.insert(name, g);
        }
        if !r.0.is_empty() {
            return None;
        }
        s.refresh_first_id();
        Some(s)
    }
}

/// Checks a decoded node walks cleanly with IDs ascending and `live` entries.
fn valid_node(n: &Node, master: StreamId) -> bool {
    let head = &n.buf[..n.entries_at as usize];
    let Some((mn, mut rest)) = get_varint(head) else {
        return false;
    };
    for _ in 0..mn {
        match get_bytes(rest) {
            Some((_, r)) => rest = r,
            None => return false,
        }
    }
    if !rest.is_empty() {
        return false;
    }
    // Walk the entries defensively (the iterator itself trusts the buffer).
    let mut pos = n.entries_at as usize;
    let mut count = 0u32;
    let mut prev: Option<StreamId> = None;
    while pos < n.buf.len() {
        let flags = n.buf[pos];
        if flags & !SAME_FIELDS != 0 {
            return false;
        }
        let Some((ms_delta, r)) = get_varint(&n.buf[pos + 1..]) else {
            return false;
        };
        let Some((seq_delta, mut r)) = get_varint(r) else {
            return false;
        };
        let Some(ms) = master.ms.checked_add(ms_delta) else {
            return false;
        };
        let id = StreamId::new(ms, master.seq.wrapping_add(unzigzag(seq_delta) as u64));
        if id < master || prev.is_some_and(|p| p >= id) || id > n.last {
            return false;
        }
        prev = Some(id);
        let items = if flags & SAME_FIELDS != 0 {
            mn as usize
        } else {
            let Some((k, rr)) = get_varint(r) else {
                return false;
            };
            r = rr;
            match usize::try_from(k).ok().and_then(|k| k.checked_mul(2)) {
                Some(k) => k,
                None => return false,
            }
        };
        for _ in 0..items {
            match get_bytes(r) {
                Some((_, rr)) => r = rr,
                None => return false,
            }
        }
        pos = n.buf.len() - r.len();
        count += 1;
    }
    count == n.live
}

struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn u64(&mut self) -> Option<u64> {
        let (v, rest) = get_varint(self.0)?;
        self.0 = rest;
        Some(v)
    }
    fn bytes(&mut self) -> Option<&'a [u8]> {
        let (v, rest) = get_bytes(self.0)?;
        self.0 = rest;
        Some(v)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn limits(entries: usize, bytes: usize) -> EncodingLimits {
        EncodingLimits {
            stream_node_max_entries: entries,
            stream_node_max_bytes: bytes,
            ..EncodingLimits::default()
        }
    }

    type Model = BTreeMap<StreamId, Vec<(Vec<u8>, Vec<u8>)>>;

    fn collect(s: &Stream, start: StreamId, end: StreamId, rev: bool, count: usize) -> Model {
        let mut out = Vec::new();
        s.range(start, end, rev, |e| {
            out.push((
                e.id,
                e.fields().map(|(f, v)| (f.to_vec(), v.to_vec())).collect(),
            ));
            out.len() < count
        });
        let ids: Vec<StreamId> = out.iter().map(|(id, _)| *id).collect();
        let mut sorted = ids.clone();
        if rev {
            sorted.sort_by(|a, b| b.cmp(a));
        } else {
            sorted.sort();
        }
        assert_eq!(ids, sorted, "range order");
        out.into_iter().collect()
    }

    fn model_range(m: &Model, start: StreamId, end: StreamId, rev: bool, count: usize) -> Model {
        if start > end {
            return Model::new();
        }
        let r = m.range(start..=end);
        if rev {
            r.rev().take(count).map(|(k, v)| (*k, v.clone())).collect()
        } else {
            r.take(count).map(|(k, v)| (*k, v.clone())).collect()
        }
    }

    #[derive(Debug, Clone)]
    enum Op {
        Add {
            ms_step: u64,
            seq: u64,
            same: bool,
            nfields: usize,
            val: u8,
        },
        Del(usize),
        TrimLen {
            max: u64,
            approx: bool,
        },
        TrimMin {
            pick: usize,
            approx: bool,
        },
        Range {
            a: usize,
            b: usize,
            rev: bool,
            count: usize,
        },
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            6 => (0u64..3, 0u64..4, any::<bool>(), 0usize..4, any::<u8>()).prop_map(
                |(ms_step, seq, same, nfields, val)| Op::Add { ms_step, seq, same, nfields, val }
            ),
            2 => any::<usize>().prop_map(Op::Del),
            1 => (0u64..40, any::<bool>()).prop_map(|(max, approx)| Op::TrimLen { max, approx }),
            1 => (any::<usize>(), any::<bool>()).prop_map(|(pick, approx)| Op::TrimMin { pick, approx }),
            2 => (any::<usize>(), any::<usize>(), any::<bool>(), 1usize..20)
                .prop_map(|(a, b, rev, count)| Op::Range { a, b, rev, count }),
        ]
    }

    proptest! {
        #[test]
        fn stream_matches_a_btreemap(ops in proptest::collection::vec(op(), 1..200),
                                     per_node in 1usize..8) {
            let l = limits(per_node, 4096);
            let mut s = Stream::new();
            let mut m = Model::new();
            let mut last = StreamId::MIN;
            for op in ops {
                match op {
                    Op::Add { ms_step, seq, same, nfields, val } => {
                        let id = if ms_step == 0 {
                            match last.next() { Some(id) => id, None => continue }
                        } else {
                            StreamId::new(last.ms + ms_step, seq)
                        };
                        let names: Vec<Vec<u8>> = (0..nfields.max(1))
                            .map(|i| if same { format!("f{i}") } else { format!("g{i}{val}") }.into_bytes())
                            .collect();
                        let vals: Vec<Vec<u8>> = (0..names.len())
                            .map(|i| format!("{}", val as usize * 7 + i).into_bytes()).collect();
                        let pairs: Vec<(&[u8], &[u8])> = names.iter().zip(&vals)
                            .map(|(f, v)| (f.as_slice(), v.as_slice())).collect();
                        s.append(id, &pairs, &l);
                        m.insert(id, names.into_iter().zip(vals).collect());
                        last = id;
                    }
                    Op::Del(pick) => {
                        if m.is_empty() { continue; }
                        let id = *m.keys().nth(pick % m.len()).unwrap();
                        prop_assert_eq!(s.delete(&[id, StreamId::new(id.ms, id.seq ^ 1 << 40)]), 1);
                        m.remove(&id);
                    }
                    Op::TrimLen { max, approx } => {
                        let before = m.len();
                        let n = s.trim(Trim::MaxLen(max), approx, 0);
                        let keep = if approx { before - n as usize } else { (max as usize).min(before) };
                        prop_assert!(keep >= (max as usize).min(before));
                        while m.len() > keep { m.pop_first(); }
                    }
                    Op::TrimMin { pick, approx } => {
                        let Some(min) = m.keys().nth(pick % (m.len() + 1)).copied() else {
                            let n = s.trim(Trim::MinId(StreamId::MAX), approx, 0);
                            if !approx { prop_assert_eq!(n as usize, m.len()); m.clear(); }
                            else { for _ in 0..n { m.pop_first(); } }
                            continue;
                        };
                        let n = s.trim(Trim::MinId(min), approx, 0);
                        for _ in 0..n { m.pop_first(); }
                        if !approx { prop_assert!(m.keys().next().is_none_or(|k| *k >= min)); }
                        prop_assert!(m.keys().next().is_none_or(|k| *k >= min.min(*k)));
                    }
                    Op::Range { a, b, rev, count } => {
                        let keys: Vec<StreamId> = m.keys().copied().collect();
                        let pick = |i: usize| if keys.is_empty() { StreamId::new(i as u64 % 5, 0) } else { keys[i % keys.len()] };
                        let (start, end) = (pick(a), pick(b));
                        prop_assert_eq!(collect(&s, start, end, rev, count), model_range(&m, start, end, rev, count));
                    }
                }
                prop_assert_eq!(s.len(), m.len());
                prop_assert_eq!(collect(&s, StreamId::MIN, StreamId::MAX, false, usize::MAX), m.clone());
                prop_assert_eq!(s.first_id, m.keys().next().copied().unwrap_or(StreamId::MIN));
                prop_assert_eq!(s.edge_id(true), m.keys().next_back().copied());
                prop_assert_eq!(s.edge_id(false), m.keys().next().copied());
                prop_assert!(s.nodes.values().all(|n| n.live as usize <= per_node.max(1)));
            }
            let mut buf = Vec::new();
            s.encode(&mut buf);
            let back = Stream::decode(&buf, &l).unwrap();
            prop_assert_eq!(&back, &s);
            prop_assert!(Stream::decode(&buf[..buf.len() - 1], &l).is_none());
        }
    }

    #[test]
    fn rax_node_count_follows_the_tree_shape() {
        let l = limits(1, 4096);
        let mut s = Stream::new();
        assert_eq!(s.rax_node_count(), 1);
        s.append(StreamId::new(1, 0), &[(b"f", b"v")], &l);
        assert_eq!(s.rax_node_count(), 2);
        s.append(StreamId::new(1, 1), &[(b"f", b"v")], &l);
        // Compressed prefix (15 bytes), a branch of two, two leaves.
        assert_eq!(s.rax_node_count(), 4);
    }

    #[test]
    fn nodes_share_field_names_and_split_at_the_limit() {
        let l = limits(100, 4096);
        let mut s = Stream::new();
        for i in 0..250u64 {
            s.append(StreamId::new(1000 + i, 0), &[(b"field", b"v")], &l);
        }
        assert_eq!(s.node_count(), 3);
        // Same fields: per entry a flags byte, two small deltas and the value.
        let bytes: usize = s.nodes.values().map(|n| n.buf.len()).sum();
        assert!(bytes < 250 * 7, "{bytes}");
    }
}
