//! List: a quicklist, as Redis keeps every list. `OBJECT ENCODING` says `quicklist` whatever the size,
//! because that is what redis-server 7.0 reports (7.2 added a `listpack` name for small lists).
//!
//! Layout: nodes, each one packed byte buffer of entries, bounded by `list-max-listpack-size`
//! (negative: 4..64 KB per node; positive: entries per node, and at most 8 KB). An entry is
//! `varint(n) | n bytes | backward-varint(n)`, so a node can be walked from either end, like
//! Redis's listpack with its back-lengths; a 5-byte element costs 7 bytes.
//!
//! A list of one node (most cached lists) is just that node, inline: `List` is 32 bytes, the size
//! of the other collection types, so it does not widen `Object` for every key. Beyond one node the
//! nodes move to a boxed deque with a running element count and byte total.
//!
//! Why this shape: memory per element is the packed bytes plus a share of one 32-byte node header
//! per few hundred elements; pushes and pops at either end touch one node (a memmove of at most one
//! node's bytes, as in Redis); an index costs a walk over node headers plus a walk inside one node,
//! from whichever end is nearer.
//!
//! Accounting: every mutation goes through [`List::edit`], [`List::insert_node`] or
//! [`List::remove_node`], which keep the deque's element count and the running sum of buffer
//! capacities, so `len` and `mem_bytes` are O(1). Buffers grow by a quarter at a time (not
//! doubling), so capacity stays close to what is used, and shrink when more than half is unused.
//!
//! Invariants (checked by `check` in tests): the deque holds at least two nodes, none empty; its
//! `len` is the sum of node counts and `buf_bytes` the sum of buffer capacities; each buffer
//! parses into exactly `count` entries.

use std::collections::VecDeque;
use std::ops::Range;

use super::EncodingLimits;
use crate::codec::{get_bytes, get_varint, put_bytes, put_varint};

/// Bytes a node may hold when the fill is an entry count (Redis's `SIZE_SAFETY_LIMIT`).
const NODE_SAFETY_BYTES: usize = 8192;
/// Node byte limits for fills -1..-5 (Redis's `optimization_level`).
const NODE_BYTES_BY_CLASS: [usize; 5] = [4096, 8192, 16384, 32768, 65536];
/// Buffers below this capacity are never shrunk: the saving would not pay for the realloc.
const SHRINK_MIN_BYTES: usize = 64;

/// One node: a packed buffer of `count` entries.
#[derive(Default)]
struct Node {
    buf: Vec<u8>,
    count: u32,
    /// The list's fill, kept here (in what would be padding) only by the inline node of a
    /// one-node list; nodes in the deque leave it 0.
    fill: i16,
}

impl Node {
    /// The entry starting at byte `pos`: its data range and the position after it.
    fn entry_at(&self, pos: usize) -> (Range<usize>, usize) {
        let (n, vl) = read_varint(&self.buf, pos);
        let data = pos + vl..pos + vl + n;
        let next = data.end + vl;
        (data, next)
    }

    /// The entry ending at byte `end`: its data range and its start position.
    fn entry_before(&self, end: usize) -> (Range<usize>, usize) {
        let (n, vl) = read_backlen(&self.buf, end);
        let data = end - vl - n..end - vl;
        let start = data.start - vl;
        (data, start)
    }

    /// Byte offset of entry `k` (`k == count` gives the end), walking from the nearer end.
    fn offset_of(&self, k: usize) -> usize {
        let count = self.count as usize;
        debug_assert!(k <= count);
        if k <= count / 2 {
            let mut pos = 0;
            for _ in 0..k {
                pos = self.entry_at(pos).1;
            }
            pos
        } else {
            let mut end = self.buf.len();
            for _ in k..count {
                end = self.entry_before(end).1;
            }
            end
        }
    }

    fn single(v: &[u8]) -> Node {
        let mut buf = vec![0; entry_size(v.len())];
        write_entry(&mut buf, v);
        Node {
            buf,
            count: 1,
            fill: 0,
        }
    }
}

/// Two or more nodes, none empty, with running totals.
struct Quick {
    nodes: VecDeque<Node>,
    /// Sum of the nodes' counts.
    len: usize,
    /// Sum of the nodes' buffer capacities.
    buf_bytes: usize,
    fill: i16,
}

enum Repr {
    /// One node, inline (empty only while the list is).
    One(Node),
    Quick(Box<Quick>),
}

/// A list value.
pub struct List {
    repr: Repr,
}

impl Default for List {
    fn default() -> Self {
        List::new(&EncodingLimits::default())
    }
}

impl Clone for List {
    fn clone(&self) -> Self {
        // Cloned buffers have capacity == length, so totals are recounted, not copied.
        let mut l = List::with_fill(self.fill());
        for i in 0..self.nodes_len() {
            let n = self.node(i);
            if n.count > 0 {
                let at = if l.is_empty() { 0 } else { l.nodes_len() };
                l.insert_node(
                    at,
                    Node {
                        buf: n.buf.clone(),
                        count: n.count,
                        fill: 0,
                    },
                );
            }
        }
        l
    }
}

impl PartialEq for List {
    /// Equal elements in the same order (node boundaries do not matter).
    fn eq(&self, other: &Self) -> bool {
        self.len() == other.len() && self.iter().eq(other.iter())
    }
}

impl std::fmt::Debug for List {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("List")
            .field("len", &self.len())
            .field("nodes", &self.nodes_len())
            .field("mem_bytes", &self.mem_bytes())
            .finish()
    }
}

impl List {
    pub fn new(limits: &EncodingLimits) -> Self {
        // Redis clamps the fill to -5..=32768; a node also stops at 8 KB, so no node can reach
        // i16::MAX entries of two bytes or more and the narrower clamp changes nothing.
        List::with_fill(limits.list_max_listpack_size.clamp(-5, i16::MAX as i64) as i16)
    }

    fn with_fill(fill: i16) -> Self {
        List {
            repr: Repr::One(Node {
                fill,
                ..Node::default()
            }),
        }
    }

    pub fn len(&self) -> usize {
        match &self.repr {
            Repr::One(n) => n.count as usize,
            Repr::Quick(q) => q.len,
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Heap bytes held (O(1)): node buffers, and the deque with its box when there is one. The
    /// `List` itself lives inside its `Object`, which `Object::mem_bytes` already counts.
    pub fn mem_bytes(&self) -> usize {
        match &self.repr {
            Repr::One(n) => n.buf.capacity(),
            Repr::Quick(q) => {
                std::mem::size_of::<Quick>()
                    + q.buf_bytes
                    + q.nodes.capacity() * std::mem::size_of::<Node>()
            }
        }
    }

    /// `OBJECT ENCODING` name: redis-server 7.0 reports `quicklist` for every list.
    pub fn encoding(&self) -> &'static str {
        "quicklist"
    }

    /// Appends the value's serialized form: `varint(len)`, then each element as
    /// `varint(n) bytes`, head to tail.
    pub fn encode(&self, out: &mut Vec<u8>) {
        out.reserve(10 + self.mem_bytes().min(1 << 20));
        put_varint(out, self.len() as u64);
        for v in self.iter() {
            put_bytes(out, v);
        }
    }

    /// Parses a serialized form; `None` if malformed (truncated, trailing bytes, or empty: Redis
    /// never stores an empty list).
    pub fn decode(b: &[u8], limits: &EncodingLimits) -> Option<Self> {
        let (n, mut rest) = get_varint(b)?;
        // Every element takes at least one byte, so a count beyond the input is garbage; checking
        // first keeps a hostile count from driving a long loop.
        if n == 0 || n > rest.len() as u64 {
            return None;
        }
        let mut l = List::new(limits);
        for _ in 0..n {
            let (v, r) = get_bytes(rest)?;
            l.push_back(v);
            rest = r;
        }
        rest.is_empty().then_some(l)
    }

    // ---- nodes and their accounting ----

    fn fill(&self) -> i16 {
        match &self.repr {
            Repr::One(n) => n.fill,
            Repr::Quick(q) => q.fill,
        }
    }

    /// Nodes holding the elements (Redis's quicklist length).
    pub fn nodes_len(&self) -> usize {
        match &self.repr {
            Repr::One(_) => 1,
            Repr::Quick(q) => q.nodes.len(),
        }
    }

    fn node(&self, i: usize) -> &Node {
        match &self.repr {
            Repr::One(n) => {
                debug_assert_eq!(i, 0);
                n
            }
            Repr::Quick(q) => &q.nodes[i],
        }
    }

    /// Runs `f` on node `i` (with the node byte budget), keeping the count and byte totals.
    fn edit<R>(&mut self, i: usize, f: impl FnOnce(&mut Node, usize) -> R) -> R {
        let limit = self.node_bytes_max();
        match &mut self.repr {
            Repr::One(n) => f(n, limit),
            Repr::Quick(q) => {
                let n = &mut q.nodes[i];
                let (count, cap) = (n.count as usize, n.buf.capacity());
                let r = f(n, limit);
                q.len = q.len - count + n.count as usize;
                q.buf_bytes = q.buf_bytes - cap + n.buf.capacity();
                r
            }
        }
    }

    /// Inserts a non-empty node at `i` (an empty inline node is replaced).
    fn insert_node(&mut self, i: usize, mut node: Node) {
        debug_assert!(node.count > 0);
        match &mut self.repr {
            Repr::One(n) if n.count == 0 => {
                node.fill = n.fill;
                *n = node;
            }
            Repr::One(n) => {
                let fill = n.fill;
                let mut old = std::mem::take(n);
                old.fill = 0;
                let mut q = Box::new(Quick {
                    nodes: VecDeque::with_capacity(4),
                    len: old.count as usize + node.count as usize,
                    buf_bytes: old.buf.capacity() + node.buf.capacity(),
                    fill,
                });
                q.nodes.push_back(old);
                q.nodes.insert(i, node);
                self.repr = Repr::Quick(q);
            }
            Repr::Quick(q) => {
                node.fill = 0;
                q.len += node.count as usize;
                q.buf_bytes += node.buf.capacity();
                q.nodes.insert(i, node);
            }
        }
    }

    fn remove_node(&mut self, i: usize) -> Node {
        match &mut self.repr {
            Repr::One(n) => {
                let fill = n.fill;
                std::mem::replace(
                    n,
                    Node {
                        fill,
                        ..Node::default()
                    },
                )
            }
            Repr::Quick(q) => {
                let n = q.nodes.remove(i).expect("node index in range");
                q.len -= n.count as usize;
                q.buf_bytes -= n.buf.capacity();
                if q.nodes.len() == 1 {
                    let mut last = q.nodes.pop_front().expect("one node left");
                    last.fill = q.fill;
                    self.repr = Repr::One(last);
                }
                n
            }
        }
    }

    /// The byte budget of one node.
    fn node_bytes_max(&self) -> usize {
        let fill = self.fill();
        if fill < 0 {
            NODE_BYTES_BY_CLASS[(-fill - 1) as usize]
        } else {
            NODE_SAFETY_BYTES
        }
    }

    /// Whether `node` may take `add_count` more entries of `add_bytes` in all. An empty node takes
    /// anything (a single element larger than the budget gets a node of its own).
    fn fits(&self, node: &Node, add_bytes: usize, add_count: usize) -> bool {
        node.count == 0 || self.fits_batch(node, add_bytes, add_count)
    }

    /// Whether `node` with `add_count` more entries of `add_bytes` stays within the budget.
    fn fits_batch(&self, node: &Node, add_bytes: usize, add_count: usize) -> bool {
        let bytes = node.buf.len() + add_bytes;
        let fill = self.fill();
        if fill < 0 {
            bytes <= self.node_bytes_max()
        } else {
            bytes <= NODE_SAFETY_BYTES && node.count as usize + add_count <= fill as usize
        }
    }

    fn oversized(&self, node: &Node) -> bool {
        node.count > 1
            && (node.buf.len() > self.node_bytes_max()
                || (self.fill() >= 0 && node.count as usize > self.fill().max(1) as usize))
    }

    /// Node index and offset inside it of element `i` (`i < len`), walking from the nearer end.
    fn locate(&self, i: usize) -> (usize, usize) {
        let len = self.len();
        debug_assert!(i < len);
        let nodes = self.nodes_len();
        if i < len / 2 {
            let mut rem = i;
            for ni in 0..nodes {
                let c = self.node(ni).count as usize;
                if rem < c {
                    return (ni, rem);
                }
                rem -= c;
            }
        } else {
            let mut rem = len - 1 - i;
            for ni in (0..nodes).rev() {
                let c = self.node(ni).count as usize;
                if rem < c {
                    return (ni, c - 1 - rem);
                }
                rem -= c;
            }
        }
        unreachable!("index {i} below len {len} is in some node")
    }

    // ---- ends ----

    /// Makes room at the head (`front`) or tail for entries of the given element lengths, when
    /// they all fit in that end's node, so a many-element push reallocates once and leaves no
    /// growth slack (a new small list ends up with exactly the bytes it holds).
    pub fn reserve(&mut self, front: bool, lens: impl Iterator<Item = usize>) {
        let (mut bytes, mut count) = (0, 0);
        for n in lens {
            bytes += entry_size(n);
            count += 1;
        }
        let ni = if front { 0 } else { self.nodes_len() - 1 };
        if self.fits_batch(self.node(ni), bytes, count) {
            self.edit(ni, |n, _| n.buf.reserve_exact(bytes));
        }
    }

    pub fn push_back(&mut self, v: &[u8]) {
        let size = entry_size(v.len());
        let last = self.nodes_len() - 1;
        if !self.fits(self.node(last), size, 1) {
            self.insert_node(last + 1, Node::single(v));
        } else {
            self.edit(last, |n, limit| {
                let end = n.buf.len();
                splice_entry(&mut n.buf, end..end, v, limit);
                n.count += 1;
            });
        }
    }

    pub fn push_front(&mut self, v: &[u8]) {
        let size = entry_size(v.len());
        if !self.fits(self.node(0), size, 1) {
            self.insert_node(0, Node::single(v));
        } else {
            self.edit(0, |n, limit| {
                splice_entry(&mut n.buf, 0..0, v, limit);
                n.count += 1;
            });
        }
    }

    pub fn pop_front(&mut self) -> Option<Vec<u8>> {
        let mut out = None;
        self.pop_front_with(1, |v| out = Some(v.to_vec()));
        out
    }

    pub fn pop_back(&mut self) -> Option<Vec<u8>> {
        let mut out = None;
        self.pop_back_with(1, |v| out = Some(v.to_vec()));
        out
    }

    /// Pops up to `n` elements from the head, handing each to `f` (head first) before it is
    /// removed; returns how many were popped. Each node is shifted once, not once per element.
    pub fn pop_front_with(&mut self, n: usize, mut f: impl FnMut(&[u8])) -> usize {
        let mut popped = 0;
        while popped < n && !self.is_empty() {
            let want = n - popped;
            let (took, emptied) = self.edit(0, |node, _| {
                let count = node.count as usize;
                let (mut pos, mut k) = (0, 0);
                while k < want && k < count {
                    let (data, next) = node.entry_at(pos);
                    f(&node.buf[data]);
                    pos = next;
                    k += 1;
                }
                if k < count {
                    node.buf.drain(..pos);
                    node.count -= k as u32;
                    shrink(&mut node.buf);
                }
                (k, k == count)
            });
            if emptied {
                self.remove_node(0);
            }
            popped += took;
        }
        popped
    }

    /// Pops up to `n` elements from the tail, handing each to `f` (tail first); returns how many.
    pub fn pop_back_with(&mut self, n: usize, mut f: impl FnMut(&[u8])) -> usize {
        let mut popped = 0;
        while popped < n && !self.is_empty() {
            let want = n - popped;
            let last = self.nodes_len() - 1;
            let (took, emptied) = self.edit(last, |node, _| {
                let count = node.count as usize;
                let (mut end, mut k) = (node.buf.len(), 0);
                while k < want && k < count {
                    let (data, start) = node.entry_before(end);
                    f(&node.buf[data]);
                    end = start;
                    k += 1;
                }
                if k < count {
                    node.buf.truncate(end);
                    node.count -= k as u32;
                    shrink(&mut node.buf);
                }
                (k, k == count)
            });
            if emptied {
                self.remove_node(last);
            }
            popped += took;
        }
        popped
    }

    /// Removes the first `n` elements (all of them if `n >= len`).
    pub fn drop_front(&mut self, mut n: usize) {
        while n > 0 && !self.is_empty() {
            let c = self.node(0).count as usize;
            if n >= c {
                self.remove_node(0);
                n -= c;
            } else {
                self.edit(0, |node, _| {
                    let off = node.offset_of(n);
                    node.buf.drain(..off);
                    node.count -= n as u32;
                    shrink(&mut node.buf);
                });
                n = 0;
            }
        }
    }

    /// Removes the last `n` elements (all of them if `n >= len`).
    pub fn drop_back(&mut self, mut n: usize) {
        while n > 0 && !self.is_empty() {
            let last = self.nodes_len() - 1;
            let c = self.node(last).count as usize;
            if n >= c {
                self.remove_node(last);
                n -= c;
            } else {
                self.edit(last, |node, _| {
                    let off = node.offset_of(c - n);
                    node.buf.truncate(off);
                    node.count -= n as u32;
                    shrink(&mut node.buf);
                });
                n = 0;
            }
        }
    }

    /// Keeps elements `start..end` (clamped to the list) and drops the rest: LTRIM.
    pub fn retain_range(&mut self, start: usize, end: usize) {
        let len = self.len();
        let end = end.min(len);
        if start >= end {
            self.drop_front(len);
            return;
        }
        self.drop_back(len - end);
        self.drop_front(start);
    }

    // ---- by index ----

    /// Element `i` from the head.
    pub fn get(&self, i: usize) -> Option<&[u8]> {
        if i >= self.len() {
            return None;
        }
        let (ni, off) = self.locate(i);
        let node = self.node(ni);
        let (data, _) = node.entry_at(node.offset_of(off));
        Some(&node.buf[data])
    }

    /// Replaces element `i`; false if out of range.
    pub fn set(&mut self, i: usize, v: &[u8]) -> bool {
        if i >= self.len() {
            return false;
        }
        let (ni, off) = self.locate(i);
        self.edit(ni, |node, limit| {
            let pos = node.offset_of(off);
            let (_, next) = node.entry_at(pos);
            splice_entry(&mut node.buf, pos..next, v, limit);
        });
        if self.oversized(self.node(ni)) {
            let half = self.node(ni).count as usize / 2;
            self.split_node(ni, half);
        }
        true
    }

    /// Inserts `v` so that it becomes element `i` (`i <= len`): LINSERT.
    pub fn insert(&mut self, i: usize, v: &[u8]) {
        debug_assert!(i <= self.len());
        if i == 0 {
            return self.push_front(v);
        }
        if i >= self.len() {
            return self.push_back(v);
        }
        let size = entry_size(v.len());
        let (ni, off) = self.locate(i);
        let append = |node: &mut Node, limit: usize| {
            let end = node.buf.len();
            splice_entry(&mut node.buf, end..end, v, limit);
            node.count += 1;
        };
        if self.fits(self.node(ni), size, 1) {
            self.edit(ni, |node, limit| {
                let pos = node.offset_of(off);
                splice_entry(&mut node.buf, pos..pos, v, limit);
                node.count += 1;
            });
        } else if off == 0 && self.fits(self.node(ni - 1), size, 1) {
            // `off == 0` and `i > 0` mean there is a previous node: append there.
            self.edit(ni - 1, append);
        } else if off == 0 {
            self.insert_node(ni, Node::single(v));
        } else {
            // A full node: split it where the element goes, then put it on whichever side has room.
            self.split_node(ni, off);
            if self.fits(self.node(ni), size, 1) {
                self.edit(ni, append);
            } else if self.fits(self.node(ni + 1), size, 1) {
                self.edit(ni + 1, |node, limit| {
                    splice_entry(&mut node.buf, 0..0, v, limit);
                    node.count += 1;
                });
            } else {
                self.insert_node(ni + 1, Node::single(v));
            }
        }
    }

    /// Moves entries `k..` of node `ni` into a new node after it (`0 < k < count`).
    fn split_node(&mut self, ni: usize, k: usize) {
        let tail = self.edit(ni, |node, _| {
            let off = node.offset_of(k);
            let tail = Node {
                buf: node.buf[off..].to_vec(),
                count: node.count - k as u32,
                fill: 0,
            };
            node.buf.truncate(off);
            node.count = k as u32;
            shrink(&mut node.buf);
            tail
        });
        self.insert_node(ni + 1, tail);
    }

    /// Removes elements equal to `v`: at most `limit` of them (0: all), scanning from the tail if
    /// `from_back`. Returns how many were removed: LREM.
    pub fn remove_matching(&mut self, v: &[u8], limit: usize, from_back: bool) -> usize {
        let nodes = self.nodes_len();
        let mut removed = 0;
        for step in 0..nodes {
            if limit != 0 && removed == limit {
                break;
            }
            let ni = if from_back { nodes - 1 - step } else { step };
            let budget = if limit == 0 {
                usize::MAX
            } else {
                limit - removed
            };
            removed += self.edit(ni, |node, _| remove_in_node(node, v, budget, from_back));
        }
        if removed == 0 {
            return 0;
        }
        // Drop emptied nodes (from the back, so indexes stay valid), then merge neighbours that
        // now fit together, so deletions in the middle do not leave a trail of tiny nodes.
        for ni in (0..self.nodes_len()).rev() {
            if self.node(ni).count == 0 && self.nodes_len() > 1 {
                self.remove_node(ni);
            }
        }
        self.merge_small_nodes();
        removed
    }

    fn merge_small_nodes(&mut self) {
        let mut i = 0;
        while i + 1 < self.nodes_len() {
            let next = self.node(i + 1);
            if self.fits(self.node(i), next.buf.len(), next.count as usize) {
                let next = self.remove_node(i + 1);
                self.edit(i, |node, limit| {
                    reserve(&mut node.buf, next.buf.len(), limit);
                    node.buf.extend_from_slice(&next.buf);
                    node.count += next.count;
                });
            } else {
                i += 1;
            }
        }
    }

    // ---- iteration ----

    /// Elements head to tail.
    pub fn iter(&self) -> Iter<'_> {
        self.iter_from(0)
    }

    /// Elements from index `i` to the tail.
    pub fn iter_from(&self, i: usize) -> Iter<'_> {
        if i >= self.len() {
            return Iter {
                list: self,
                node: 0,
                pos: 0,
                left: 0,
            };
        }
        let (ni, off) = self.locate(i);
        Iter {
            list: self,
            node: ni,
            pos: self.node(ni).offset_of(off),
            left: self.len() - i,
        }
    }

    /// Elements tail to head.
    pub fn iter_rev(&self) -> RevIter<'_> {
        self.iter_rev_from(self.len().wrapping_sub(1))
    }

    /// Elements from index `i` back to the head (`i` first).
    pub fn iter_rev_from(&self, i: usize) -> RevIter<'_> {
        if i >= self.len() {
            return RevIter {
                list: self,
                node: 0,
                end: 0,
                left: 0,
            };
        }
        let (ni, off) = self.locate(i);
        RevIter {
            list: self,
            node: ni,
            end: self.node(ni).offset_of(off + 1),
            left: i + 1,
        }
    }

    /// Checks the invariants listed in the module header (tests and debugging).
    #[cfg(test)]
    fn check(&self) {
        let parse = |n: &Node| {
            let mut pos = 0;
            for _ in 0..n.count {
                pos = n.entry_at(pos).1;
            }
            assert_eq!(pos, n.buf.len(), "node parses into `count` entries");
        };
        match &self.repr {
            Repr::One(n) => parse(n),
            Repr::Quick(q) => {
                assert!(q.nodes.len() >= 2);
                let mut total = 0;
                let mut caps = 0;
                for n in &q.nodes {
                    assert!(n.count > 0, "empty node in the deque");
                    parse(n);
                    total += n.count as usize;
                    caps += n.buf.capacity();
                }
                assert_eq!(total, q.len);
                assert_eq!(caps, q.buf_bytes);
            }
        }
    }
}

/// Forward iterator over a list's elements.
pub struct Iter<'a> {
    list: &'a List,
    node: usize,
    pos: usize,
    left: usize,
}

impl<'a> Iterator for Iter<'a> {
    type Item = &'a [u8];

    fn next(&mut self) -> Option<&'a [u8]> {
        if self.left == 0 {
            return None;
        }
        let mut n = self.list.node(self.node);
        if self.pos >= n.buf.len() {
            self.node += 1;
            self.pos = 0;
            n = self.list.node(self.node);
        }
        let (data, next) = n.entry_at(self.pos);
        self.pos = next;
        self.left -= 1;
        Some(&n.buf[data])
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        (self.left, Some(self.left))
    }
}

impl ExactSizeIterator for Iter<'_> {}

/// Backward iterator over a list's elements.
pub struct RevIter<'a> {
    list: &'a List,
    node: usize,
    end: usize,
    left: usize,
}

impl<'a> Iterator for RevIter<'a> {
    type Item = &'a [u8];

    fn next(&mut self) -> Option<&'a [u8]> {
        if self.left == 0 {
            return None;
        }
        let mut n = self.list.node(self.node);
        if self.end == 0 {
            self.node -= 1;
            n = self.list.node(self.node);
            self.end = n.buf.len();
        }
        let (data, start) = n.entry_before(self.end);
        self.end = start;
        self.left -= 1;
        Some(&n.buf[data])
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        (self.left, Some(self.left))
    }
}

impl ExactSizeIterator for RevIter<'_> {}

// ---- entry format ----

fn varint_len(mut n: usize) -> usize {
    let mut l = 1;
    while n >= 0x80 {
        n >>= 7;
        l += 1;
    }
    l
}

fn entry_size(n: usize) -> usize {
    2 * varint_len(n) + n
}

/// Reads the LEB128 length at `pos` of a buffer we wrote: (value, bytes used).
fn read_varint(buf: &[u8], pos: usize) -> (usize, usize) {
    let (mut v, mut i) = (0usize, 0);
    loop {
        let b = buf[pos + i];
        v |= ((b & 0x7f) as usize) << (7 * i);
        i += 1;
        if b & 0x80 == 0 {
            return (v, i);
        }
    }
}

/// Reads the back-length ending at `end`: the LEB128 bytes stored in reverse, so the byte just
/// before `end` holds the lowest seven bits. Returns (value, bytes used).
fn read_backlen(buf: &[u8], end: usize) -> (usize, usize) {
    let (mut v, mut i) = (0usize, 0);
    loop {
        let b = buf[end - 1 - i];
        v |= ((b & 0x7f) as usize) << (7 * i);
        i += 1;
        if b & 0x80 == 0 {
            return (v, i);
        }
    }
}

/// Writes one entry into `dst`, which is exactly `entry_size(v.len())` long.
fn write_entry(dst: &mut [u8], v: &[u8]) {
    let vl = varint_len(v.len());
    debug_assert_eq!(dst.len(), 2 * vl + v.len());
    let mut n = v.len();
    for i in 0..vl {
        let more = if i + 1 < vl { 0x80 } else { 0 };
        let b = (n & 0x7f) as u8 | more;
        dst[i] = b;
        // The back-length holds the same bytes in reverse order.
        dst[dst.len() - 1 - i] = b;
        n >>= 7;
    }
    dst[vl..vl + v.len()].copy_from_slice(v);
}

/// Replaces the bytes in `range` of `buf` with one entry holding `v` (an empty range inserts).
fn splice_entry(buf: &mut Vec<u8>, range: Range<usize>, v: &[u8], limit: usize) {
    let size = entry_size(v.len());
    let old_len = buf.len();
    let removed = range.end - range.start;
    if size > removed {
        reserve(buf, size - removed, limit);
        buf.resize(old_len + size - removed, 0);
        buf.copy_within(range.end..old_len, range.start + size);
    } else if size < removed {
        buf.copy_within(range.end..old_len, range.start + size);
        buf.truncate(old_len - (removed - size));
        shrink(buf);
    }
    write_entry(&mut buf[range.start..range.start + size], v);
}

/// Makes room for `additional` bytes, growing by a quarter (capped at the node budget) rather than
/// doubling, so a node's capacity stays within ~25% of its length.
fn reserve(buf: &mut Vec<u8>, additional: usize, limit: usize) {
    let need = buf.len() + additional;
    if need > buf.capacity() {
        let grown = (buf.capacity() + buf.capacity() / 4).min(limit);
        buf.reserve_exact(need.max(grown) - buf.len());
    }
}

/// Gives memory back when more than half the buffer is unused.
fn shrink(buf: &mut Vec<u8>) {
    if buf.capacity() > SHRINK_MIN_BYTES && buf.len() < buf.capacity() / 2 {
        buf.shrink_to(buf.len() + buf.len() / 8);
    }
}

/// Removes entries equal to `v` from one node, at most `budget`, choosing from the back if
/// `from_back`; compacts the buffer in one pass. Returns how many were removed.
fn remove_in_node(node: &mut Node, v: &[u8], budget: usize, from_back: bool) -> usize {
    // Byte ranges of the entries to delete, in ascending order.
    let mut hits: Vec<Range<usize>> = Vec::new();
    if from_back {
        let mut end = node.buf.len();
        while end > 0 && hits.len() < budget {
            let (data, start) = node.entry_before(end);
            if &node.buf[data] == v {
                hits.push(start..end);
            }
            end = start;
        }
        hits.reverse();
    } else {
        let mut pos = 0;
        while pos < node.buf.len() && hits.len() < budget {
            let (data, next) = node.entry_at(pos);
            if &node.buf[data] == v {
                hits.push(pos..next);
            }
            pos = next;
        }
    }
    if hits.is_empty() {
        return 0;
    }
    let mut write = hits[0].start;
    for (k, h) in hits.iter().enumerate() {
        let keep_end = hits.get(k + 1).map_or(node.buf.len(), |n| n.start);
        node.buf.copy_within(h.end..keep_end, write);
        write += keep_end - h.end;
    }
    node.buf.truncate(write);
    node.count -= hits.len() as u32;
    shrink(&mut node.buf);
    hits.len()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn limits(fill: i64) -> EncodingLimits {
        EncodingLimits {
            list_max_listpack_size: fill,
            ..EncodingLimits::default()
        }
    }

    fn contents(l: &List) -> Vec<Vec<u8>> {
        l.iter().map(|v| v.to_vec()).collect()
    }

    /// Heap bytes counted from scratch, to compare with the running total.
    fn recount_mem(l: &List) -> usize {
        match &l.repr {
            Repr::One(n) => n.buf.capacity(),
            Repr::Quick(q) => {
                std::mem::size_of::<Quick>()
                    + q.nodes.iter().map(|n| n.buf.capacity()).sum::<usize>()
                    + q.nodes.capacity() * std::mem::size_of::<Node>()
            }
        }
    }

    #[test]
    fn as_small_as_the_other_collections() {
        // Object is as wide as its widest variant: a list must not widen every key's Object.
        assert_eq!(std::mem::size_of::<List>(), 32);
        let mut l = List::default();
        l.reserve(false, [1usize, 1, 5].into_iter());
        for v in [&b"a"[..], b"b", b"hello"] {
            l.push_back(v);
        }
        assert_eq!(
            l.mem_bytes(),
            3 + 3 + 7,
            "a reserved small list holds exactly its bytes"
        );
    }

    #[test]
    fn ends_index_and_encoding() {
        let mut l = List::default();
        assert_eq!(l.encoding(), "quicklist");
        assert_eq!(l.mem_bytes(), 0);
        l.push_back(b"b");
        l.push_front(b"a");
        l.push_back(b"c");
        assert_eq!(contents(&l), [b"a", b"b", b"c"]);
        assert_eq!(l.get(1), Some(&b"b"[..]));
        assert_eq!(l.get(3), None);
        assert!(l.set(1, b"BB"));
        assert!(!l.set(3, b"x"));
        assert_eq!(l.pop_back().as_deref(), Some(&b"c"[..]));
        assert_eq!(l.pop_front().as_deref(), Some(&b"a"[..]));
        assert_eq!(l.pop_front().as_deref(), Some(&b"BB"[..]));
        assert_eq!(l.pop_front(), None);
        assert!(l.is_empty());
        l.check();
    }

    #[test]
    fn big_list_spans_nodes_and_stays_compact() {
        let mut l = List::default();
        for i in 0..100_000u32 {
            l.push_back(format!("element:{i}").as_bytes());
        }
        l.check();
        assert!(l.nodes_len() > 100, "8 KB nodes: {}", l.nodes_len());
        assert_eq!(l.get(50_000), Some(&b"element:50000"[..]));
        assert_eq!(
            l.iter_from(99_998).collect::<Vec<_>>(),
            [&b"element:99998"[..], b"element:99999"]
        );
        // ~15 bytes per element packed; capacity slack and node headers stay under 30% on top.
        let packed: usize = 100_000 * 15;
        assert!(l.mem_bytes() < packed * 13 / 10, "{}", l.mem_bytes());
        l.retain_range(10, 20);
        assert_eq!(l.len(), 10);
        assert_eq!(l.get(0), Some(&b"element:10"[..]));
        l.check();
    }

    #[test]
    fn large_elements_get_nodes_of_their_own() {
        let mut l = List::new(&limits(-1));
        let big = vec![7u8; 10_000];
        l.push_back(b"a");
        l.push_back(&big);
        l.push_back(b"b");
        l.insert(1, &big);
        l.set(0, &big);
        l.check();
        assert_eq!(l.len(), 4);
        assert_eq!(l.get(1), Some(&big[..]));
        assert_eq!(l.get(3), Some(&b"b"[..]));
    }

    #[test]
    fn lrem_from_both_ends() {
        let mut l = List::new(&limits(2));
        for v in ["a", "b", "a", "c", "a", "a"] {
            l.push_back(v.as_bytes());
        }
        assert_eq!(l.remove_matching(b"a", 2, false), 2);
        assert_eq!(contents(&l), [&b"b"[..], b"c", b"a", b"a"]);
        assert_eq!(l.remove_matching(b"a", 1, true), 1);
        assert_eq!(contents(&l), [&b"b"[..], b"c", b"a"]);
        assert_eq!(l.remove_matching(b"zz", 0, false), 0);
        l.check();
    }

    #[test]
    fn codec_round_trip() {
        let mut l = List::new(&limits(3));
        for i in 0..1000u32 {
            l.push_back(&vec![b'x'; (i % 300) as usize]);
        }
        let mut out = Vec::new();
        l.encode(&mut out);
        let back = List::decode(&out, &limits(-2)).expect("decodes");
        assert_eq!(back, l);
        back.check();
        assert!(List::decode(&out[..out.len() - 1], &limits(-2)).is_none());
        let mut extra = out.clone();
        extra.push(0);
        assert!(List::decode(&extra, &limits(-2)).is_none());
        assert!(List::decode(&[0], &limits(-2)).is_none(), "empty list");
        assert!(List::decode(&[], &limits(-2)).is_none());
        // A count far beyond the input is refused before any work.
        let mut huge = Vec::new();
        put_varint(&mut huge, u64::MAX);
        assert!(List::decode(&huge, &limits(-2)).is_none());
    }

    #[test]
    fn clone_recounts_memory() {
        let mut l = List::default();
        for i in 0..5000u32 {
            l.push_back(&i.to_le_bytes());
        }
        for _ in 0..3000 {
            l.pop_front();
        }
        let c = l.clone();
        c.check();
        assert_eq!(c, l);
        assert!(c.mem_bytes() <= l.mem_bytes());
    }

    #[derive(Debug, Clone)]
    enum Op {
        PushFront(Vec<u8>),
        PushBack(Vec<u8>),
        PopFront(usize),
        PopBack(usize),
        Set(usize, Vec<u8>),
        Insert(usize, Vec<u8>),
        Remove(Vec<u8>, usize, bool),
        Trim(usize, usize),
    }

    fn value() -> impl Strategy<Value = Vec<u8>> {
        prop_oneof![
            8 => prop::sample::select(vec![&b"a"[..], b"b", b"", b"hello"]).prop_map(|s| s.to_vec()),
            2 => prop::collection::vec(any::<u8>(), 0..300),
            1 => (0usize..6000).prop_map(|n| vec![b'z'; n]),
        ]
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            4 => value().prop_map(Op::PushFront),
            4 => value().prop_map(Op::PushBack),
            2 => (0usize..5).prop_map(Op::PopFront),
            2 => (0usize..5).prop_map(Op::PopBack),
            2 => (0usize..64, value()).prop_map(|(i, v)| Op::Set(i, v)),
            2 => (0usize..64, value()).prop_map(|(i, v)| Op::Insert(i, v)),
            1 => (value(), 0usize..3, any::<bool>()).prop_map(|(v, n, b)| Op::Remove(v, n, b)),
            1 => (0usize..64, 0usize..64).prop_map(|(a, b)| Op::Trim(a, b)),
        ]
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]

        #[test]
        fn behaves_like_a_deque(
            fill in prop::sample::select(vec![-5i64, -2, -1, 0, 1, 2, 3, 7]),
            ops in prop::collection::vec(op(), 1..120),
        ) {
            let mut l = List::new(&limits(fill));
            let mut m: VecDeque<Vec<u8>> = VecDeque::new();
            for op in ops {
                match op {
                    Op::PushFront(v) => { l.push_front(&v); m.push_front(v); }
                    Op::PushBack(v) => { l.push_back(&v); m.push_back(v); }
                    Op::PopFront(n) => {
                        let mut got = Vec::new();
                        let k = l.pop_front_with(n, |v| got.push(v.to_vec()));
                        let want: Vec<Vec<u8>> = (0..n).map_while(|_| m.pop_front()).collect();
                        prop_assert_eq!(k, want.len());
                        prop_assert_eq!(got, want);
                    }
                    Op::PopBack(n) => {
                        let mut got = Vec::new();
                        let k = l.pop_back_with(n, |v| got.push(v.to_vec()));
                        let want: Vec<Vec<u8>> = (0..n).map_while(|_| m.pop_back()).collect();
                        prop_assert_eq!(k, want.len());
                        prop_assert_eq!(got, want);
                    }
                    Op::Set(i, v) => {
                        let ok = l.set(i, &v);
                        prop_assert_eq!(ok, i < m.len());
                        if ok { m[i] = v; }
                    }
                    Op::Insert(i, v) => {
                        let i = i.min(m.len());
                        l.insert(i, &v);
                        m.insert(i, v);
                    }
                    Op::Remove(v, n, from_back) => {
                        // Remove the model's copy of an existing element now and then.
                        let v = if !m.is_empty() && v.len() % 2 == 0 { m[v.len() % m.len()].clone() } else { v };
                        let got = l.remove_matching(&v, n, from_back);
                        let mut removed = 0;
                        let idx: Vec<usize> = if from_back { (0..m.len()).rev().collect() } else { (0..m.len()).collect() };
                        let mut drop = vec![false; m.len()];
                        for i in idx {
                            if (n == 0 || removed < n) && m[i] == v { drop[i] = true; removed += 1; }
                        }
                        let mut k = 0;
                        m.retain(|_| { k += 1; !drop[k - 1] });
                        prop_assert_eq!(got, removed);
                    }
                    Op::Trim(a, b) => {
                        l.retain_range(a, b);
                        let end = b.min(m.len());
                        if a >= end { m.clear(); } else { m.truncate(end); m.drain(..a); }
                    }
                }
                l.check();
                prop_assert_eq!(l.len(), m.len());
                prop_assert!(l.iter().eq(m.iter().map(|v| &v[..])));
                prop_assert!(l.iter_rev().eq(m.iter().rev().map(|v| &v[..])));
                if !m.is_empty() {
                    let mid = m.len() / 2;
                    prop_assert_eq!(l.get(mid), Some(&m[mid][..]));
                    prop_assert!(l.iter_from(mid).eq(m.iter().skip(mid).map(|v| &v[..])));
                    prop_assert!(l.iter_rev_from(mid).eq(m.iter().take(mid + 1).rev().map(|v| &v[..])));
                }
                // mem_bytes is a running total: it must equal a recount from scratch.
                prop_assert_eq!(l.mem_bytes(), recount_mem(&l));
            }
            let mut out = Vec::new();
            l.encode(&mut out);
            match List::decode(&out, &limits(fill)) {
                Some(back) => prop_assert_eq!(back, l),
                None => prop_assert!(m.is_empty()),
            }
        }

        #[test]
        fn garbage_never_panics(b in prop::collection::vec(any::<u8>(), 0..512)) {
            if let Some(l) = List::decode(&b, &limits(-2)) {
                l.check();
                let mut out = Vec::new();
                l.encode(&mut out);
                prop_assert_eq!(List::decode(&out, &limits(-2)), Some(l));
            }
        }

        #[test]
        fn mutated_encodings_never_panic(
            n in 1usize..50,
            flips in prop::collection::vec((any::<usize>(), any::<u8>()), 1..8),
        ) {
            let mut l = List::default();
            for i in 0..n { l.push_back(&vec![b'q'; i * 7]); }
            let mut out = Vec::new();
            l.encode(&mut out);
            for (at, byte) in flips {
                let i = at % out.len();
                out[i] = byte;
            }
            if let Some(back) = List::decode(&out, &limits(-2)) { back.check(); }
        }
    }
}
