//! Sorted set: members (binary-safe, unique) ordered by score, then by member bytes.
//!
//! Two encodings, with Redis's names and thresholds (`zset-max-listpack-entries`,
//! `zset-max-listpack-value`); a set converts from the first to the second when a threshold is
//! crossed and never back (as Redis), except that `decode` picks the encoding its size allows.
//!
//! - `listpack`: one byte buffer holding a `u32` count, then the entries in order. An entry is
//!   `varint(member_len << 1 | is_float)`, the score (a zigzag varint when it is an integer of at
//!   most 53 bits, else the 8 bytes of the `f64`; -0 becomes 0, as in Redis's listpack), then the
//!   member. Every operation scans: it is only used up to ~128 short entries, where a scan costs
//!   less than any pointer structure, and a set costs about 2 bytes per entry besides its members.
//! - `skiplist`: Redis's indexable skip list (every link carries its span, the number of positions
//!   it skips), so rank, rank ranges and score or lex ranges cost O(log n + m). The nodes are
//!   records back to back in one byte slab (layout at `Slab`), named by their `u32` offset, the
//!   header first: a record holds the node's score, back link, every forward link with its span,
//!   and its member, so a descent pays one cache miss per node visited (as Redis's does), links
//!   are 4 bytes, nodes cost no allocation of their own, and there is no unsafe code. A hash
//!   index maps a member to its node (`HashTable<u32>`: the member bytes are stored once, in the
//!   node).
//!
//! Why an append-only slab with holes instead of a free list: ZSCAN's cursor is a node's sequence
//! number, and sequence numbers only grow along the slab (holes are squeezed out in order when
//! they outnumber or outweigh live nodes), so a scan returns every member present for its whole
//! duration even when the set shrinks between calls. A score update relinks the same record, so
//! it keeps its place.

use std::hash::BuildHasher;
use std::ops::Range;

use hashbrown::HashTable;

use super::EncodingLimits;
use crate::codec::{get_bytes, get_varint, put_bytes, put_varint};
use crate::evict::Rng;

/// A sorted set. `mem_bytes` is a running figure: O(1) whatever the size.
#[derive(Clone)]
pub struct ZSet {
    repr: Repr,
}

#[derive(Clone)]
enum Repr {
    Listpack(Vec<u8>),
    Skiplist(Box<SkipList>),
}

impl Default for ZSet {
    fn default() -> Self {
        ZSet {
            repr: Repr::Listpack(Vec::new()),
        }
    }
}

impl std::fmt::Debug for ZSet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut l = f.debug_list();
        for (m, s) in self.iter() {
            l.entry(&(String::from_utf8_lossy(m), s));
        }
        l.finish()
    }
}

impl PartialEq for ZSet {
    /// Same members with the same scores, whatever the encodings.
    fn eq(&self, other: &Self) -> bool {
        self.len() == other.len() && self.iter().eq(other.iter())
    }
}

/// A score interval, as `ZRANGEBYSCORE` takes it (`(` makes a bound exclusive).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ScoreRange {
    pub min: f64,
    pub min_exclusive: bool,
    pub max: f64,
    pub max_exclusive: bool,
}

impl ScoreRange {
    /// The ranks (ascending) of the members whose score is in the range.
    pub fn ranks(&self, z: &ZSet) -> Range<usize> {
        let lo = z.count_while(|s, _| {
            if self.min_exclusive {
                s <= self.min
            } else {
                s < self.min
            }
        });
        let hi = z.count_while(|s, _| {
            if self.max_exclusive {
                s < self.max
            } else {
                s <= self.max
            }
        });
        lo..hi.max(lo)
    }
}

/// One end of a lex range: `-`, `+`, `[member` or `(member`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LexBound {
    /// `-`: below every member.
    Min,
    /// `+`: above every member.
    Max,
    Inclusive(Vec<u8>),
    Exclusive(Vec<u8>),
}

/// A member interval, as `ZRANGEBYLEX` takes it. Meaningful when all scores are equal (Redis says
/// the same); otherwise the answer is some well-defined but arbitrary slice.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LexRange {
    pub min: LexBound,
    pub max: LexBound,
}

impl LexRange {
    /// Whether `m` sorts below the range's start.
    pub fn below_min(&self, m: &[u8]) -> bool {
        match &self.min {
            LexBound::Min => false,
            LexBound::Max => true,
            LexBound::Inclusive(v) => m < v.as_slice(),
            LexBound::Exclusive(v) => m <= v.as_slice(),
        }
    }

    /// Whether `m` sorts at or below the range's end.
    pub fn within_max(&self, m: &[u8]) -> bool {
        match &self.max {
            LexBound::Min => false,
            LexBound::Max => true,
            LexBound::Inclusive(v) => m <= v.as_slice(),
            LexBound::Exclusive(v) => m < v.as_slice(),
        }
    }

    /// The ranks (ascending) of the members in the range.
    pub fn ranks(&self, z: &ZSet) -> Range<usize> {
        let lo = z.count_while(|_, m| self.below_min(m));
        let hi = z.count_while(|_, m| self.within_max(m));
        lo..hi.max(lo)
    }
}

/// `(score, member)` order: score first, then member bytes.
fn less(s1: f64, m1: &[u8], s2: f64, m2: &[u8]) -> bool {
    s1 < s2 || (s1 == s2 && m1 < m2)
}

impl ZSet {
    pub fn new(_limits: &EncodingLimits) -> Self {
        ZSet::default()
    }

    pub fn len(&self) -> usize {
        match &self.repr {
            Repr::Listpack(b) => lp_count(b),
            Repr::Skiplist(s) => s.len as usize,
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Heap bytes held (running total, O(1)): allocation sizes, not the inline struct.
    pub fn mem_bytes(&self) -> usize {
        match &self.repr {
            Repr::Listpack(b) => b.capacity(),
            Repr::Skiplist(s) => std::mem::size_of::<SkipList>() + s.heap_bytes(),
        }
    }

    /// `OBJECT ENCODING` name.
    pub fn encoding(&self) -> &'static str {
        match &self.repr {
            Repr::Listpack(_) => "listpack",
            Repr::Skiplist(_) => "skiplist",
        }
    }

    /// Appends the value's serialized form: `varint(count)`, then per member in order
    /// `varint(len) member f64_le(score)`.
    pub fn encode(&self, out: &mut Vec<u8>) {
        put_varint(out, self.len() as u64);
        for (m, s) in self.iter() {
            put_bytes(out, m);
            out.extend_from_slice(&s.to_le_bytes());
        }
    }

    /// Parses a serialized form; `None` if malformed (truncated, trailing bytes, NaN score,
    /// duplicate member, or empty: Redis never keeps an empty sorted set).
    pub fn decode(b: &[u8], limits: &EncodingLimits) -> Option<Self> {
        let (count, mut rest) = get_varint(b)?;
        // Each member costs at least 9 bytes: a bound before trusting `count`.
        if count == 0 || count > (rest.len() / 9) as u64 {
            return None;
        }
        let mut z = ZSet::new(limits);
        for _ in 0..count {
            let (m, r) = get_bytes(rest)?;
            let (s, r) = r.split_first_chunk::<8>()?;
            let score = f64::from_le_bytes(*s);
            if score.is_nan() || z.insert(m, score, limits).is_some() {
                return None;
            }
            rest = r;
        }
        rest.is_empty().then_some(z)
    }

    /// The score of `member`.
    pub fn score(&self, member: &[u8]) -> Option<f64> {
        match &self.repr {
            Repr::Listpack(b) => lp_find(b, member).map(|e| e.score),
            Repr::Skiplist(s) => s.find(member).map(|x| s.slab.score(x)),
        }
    }

    /// Sets `member`'s score, adding it if absent; returns the previous score. A score equal to
    /// the current one (`==`, so `-0` and `0` are equal) changes nothing. Converts to `skiplist`
    /// when the new member would cross a listpack threshold. `score` must not be NaN.
    pub fn insert(&mut self, member: &[u8], score: f64, limits: &EncodingLimits) -> Option<f64> {
        self.upsert(member, limits, |_| Some(score))
    }

    /// Looks `member` up once and, when `decide(current score)` returns a new score, sets it
    /// (adding the member if absent, as [`ZSet::insert`] does); returns the current score. Saves
    /// ZADD's flag logic a second lookup. The new score must not be NaN.
    pub fn upsert(
        &mut self,
        member: &[u8],
        limits: &EncodingLimits,
        decide: impl FnOnce(Option<f64>) -> Option<f64>,
    ) -> Option<f64> {
        let not_nan = |s: f64| {
            assert!(!s.is_nan(), "NaN score");
            s
        };
        if let Repr::Listpack(b) = &mut self.repr {
            if let Some(e) = lp_find(b, member) {
                let (old, at) = (e.score, e.start..e.end);
                if let Some(score) = decide(Some(old)).map(not_nan)
                    && old != score
                {
                    lp_delete(b, at, 1);
                    lp_insert(b, member, score);
                }
                return Some(old);
            }
            let score = not_nan(decide(None)?);
            if lp_count(b) < limits.zset_max_listpack_entries
                && member.len() <= limits.zset_max_listpack_value
            {
                lp_insert(b, member, score);
            } else {
                self.convert_to_skiplist();
                let Repr::Skiplist(s) = &mut self.repr else {
                    unreachable!("converted above")
                };
                s.insert(member, score);
            }
            return None;
        }
        let Repr::Skiplist(s) = &mut self.repr else {
            unreachable!("listpack handled above")
        };
        match s.find(member) {
            Some(x) => {
                let old = s.slab.score(x);
                if let Some(score) = decide(Some(old)).map(not_nan)
                    && old != score
                {
                    s.update_score(x, score);
                }
                Some(old)
            }
            None => {
                s.insert(member, not_nan(decide(None)?));
                None
            }
        }
    }

    /// Removes `member`; returns its score.
    pub fn remove(&mut self, member: &[u8]) -> Option<f64> {
        match &mut self.repr {
            Repr::Listpack(b) => {
                let e = lp_find(b, member)?;
                let (old, at) = (e.score, e.start..e.end);
                lp_delete(b, at, 1);
                Some(old)
            }
            Repr::Skiplist(s) => {
                let x = s.find(member)?;
                let score = s.slab.score(x);
                let path = s.path_to(x);
                s.unlink(x, &path.update);
                s.free(x);
                s.maybe_compact();
                Some(score)
            }
        }
    }

    /// The ascending rank (0-based) of `member`, with its score.
    pub fn rank(&self, member: &[u8]) -> Option<(usize, f64)> {
        match &self.repr {
            Repr::Listpack(b) => LpIter::new(b)
                .enumerate()
                .find(|(_, e)| e.member == member)
                .map(|(r, e)| (r, e.score)),
            Repr::Skiplist(s) => {
                let x = s.find(member)?;
                let (score, m) = (s.slab.score(x), s.slab.member(x));
                Some((s.count_while(|s2, m2| less(s2, m2, score, m)), score))
            }
        }
    }

    /// The member at ascending rank `rank`, with its score.
    pub fn at_rank(&self, rank: usize) -> Option<(&[u8], f64)> {
        self.iter_from(rank, false).next()
    }

    /// Members in ascending order.
    pub fn iter(&self) -> Iter<'_> {
        self.iter_from(0, false)
    }

    /// Members from ascending rank `rank` on: towards higher ranks, or towards lower ranks when
    /// `rev` (so `iter_from(len - 1, true)` walks the whole set backwards). O(log n) to start in
    /// a skiplist, then O(1) per member.
    pub fn iter_from(&self, rank: usize, rev: bool) -> Iter<'_> {
        let inner = if rank >= self.len() {
            IterInner::Done
        } else {
            match &self.repr {
                Repr::Listpack(b) if !rev => {
                    let mut it = LpIter::new(b);
                    for _ in 0..rank {
                        it.next();
                    }
                    IterInner::Lp(it)
                }
                Repr::Listpack(b) => {
                    IterInner::LpRev(b, LpIter::new(b).take(rank + 1).map(|e| e.start).collect())
                }
                Repr::Skiplist(s) => IterInner::Sl {
                    sl: s,
                    x: s.at_rank(rank),
                    rev,
                },
            }
        };
        Iter { inner }
    }

    /// How many members, from the lowest, satisfy `below(score, member)`. `below` must hold for
    /// a prefix of the order (e.g. "score < 5"); then this is the rank where the prefix ends, found
    /// in O(log n) in a skiplist.
    pub fn count_while(&self, below: impl Fn(f64, &[u8]) -> bool) -> usize {
        match &self.repr {
            Repr::Listpack(b) => LpIter::new(b)
                .take_while(|e| below(e.score, e.member))
                .count(),
            Repr::Skiplist(s) => s.count_while(below),
        }
    }

    /// Removes the members at ascending ranks `ranks` (clamped to the set), calling `f` on each
    /// in ascending order before it goes; returns how many were removed. O(log n + m).
    pub fn remove_range(&mut self, ranks: Range<usize>, mut f: impl FnMut(&[u8], f64)) -> usize {
        let len = self.len();
        let (lo, hi) = (ranks.start.min(len), ranks.end.min(len));
        if lo >= hi {
            return 0;
        }
        match &mut self.repr {
            Repr::Listpack(b) => {
                let mut start = 0;
                let mut end = 0;
                for (r, e) in LpIter::new(b).enumerate().take(hi) {
                    if r == lo {
                        start = e.start;
                    }
                    if r >= lo {
                        f(e.member, e.score);
                        end = e.end;
                    }
                }
                lp_delete(b, start..end, hi - lo);
            }
            Repr::Skiplist(s) => {
                s.remove_range(lo, hi, &mut f);
                s.maybe_compact();
            }
        }
        hi - lo
    }

    /// Removes up to `count` members from the low end (or the high end when `max`), returned in
    /// the order they were popped (ZPOPMIN/ZPOPMAX order).
    pub fn pop(&mut self, max: bool, count: usize) -> Vec<(Vec<u8>, f64)> {
        let len = self.len();
        let n = count.min(len);
        let ranks = if max { len - n..len } else { 0..n };
        let mut out = Vec::with_capacity(n);
        self.remove_range(ranks, |m, s| out.push((m.to_vec(), s)));
        if max {
            out.reverse();
        }
        out
    }

    /// ZRANDMEMBER's picks. `unique`: `count` distinct members in random order (all of them,
    /// highest first as Redis lists them, when `count >= len`); otherwise `count` independent
    /// picks (repeats possible).
    pub fn random(&self, rng: &mut Rng, count: usize, unique: bool) -> Vec<(&[u8], f64)> {
        let len = self.len();
        if len == 0 || count == 0 {
            return Vec::new();
        }
        if unique && count >= len {
            return self.iter_from(len - 1, true).collect();
        }
        // A listpack is small: decode it once instead of scanning per pick.
        let all: Vec<(&[u8], f64)> = match &self.repr {
            Repr::Listpack(_) => self.iter().collect(),
            Repr::Skiplist(_) => Vec::new(),
        };
        let pick = |r: usize| -> (&[u8], f64) {
            if all.is_empty() {
                self.at_rank(r).expect("rank below len")
            } else {
                all[r]
            }
        };
        if !unique {
            return (0..count).map(|_| pick(rng.below(len))).collect();
        }
        if count * 3 > len {
            // Close to the whole set: a partial Fisher-Yates shuffle of all ranks.
            let mut ranks: Vec<usize> = (0..len).collect();
            for i in 0..count {
                let j = i + rng.below(len - i);
                ranks.swap(i, j);
            }
            return ranks[..count].iter().map(|&r| pick(r)).collect();
        }
        // Far fewer than the set: draw until `count` distinct ranks (expected < 1.5 draws each).
        let mut seen = std::collections::HashSet::with_capacity(count);
        let mut out = Vec::with_capacity(count);
        while out.len() < count {
            let r = rng.below(len);
            if seen.insert(r) {
                out.push(pick(r));
            }
        }
        out
    }

    /// One ZSCAN step: calls `f` on up to about `count` members from `cursor` on and returns the
    /// next cursor (0 when done). A listpack is returned whole in one step, as Redis does. In a
    /// skiplist the cursor is a node sequence number, so every member present for the whole scan
    /// is returned at least once (see the module comment).
    pub fn scan(&self, cursor: u64, count: usize, mut f: impl FnMut(&[u8], f64)) -> u64 {
        match &self.repr {
            Repr::Listpack(b) => {
                for e in LpIter::new(b) {
                    f(e.member, e.score);
                }
                0
            }
            Repr::Skiplist(s) => s.scan(cursor, count, &mut f),
        }
    }

    /// Checks the structure against itself (ordering, spans, index, byte count); panics on a
    /// violation. For tests.
    pub fn check_invariants(&self) {
        match &self.repr {
            Repr::Listpack(b) => {
                let v: Vec<_> = LpIter::new(b).collect();
                assert_eq!(v.len(), lp_count(b));
                for w in v.windows(2) {
                    assert!(less(w[0].score, w[0].member, w[1].score, w[1].member));
                }
                if let Some(last) = v.last() {
                    assert_eq!(last.end, b.len());
                }
            }
            Repr::Skiplist(s) => s.check(),
        }
    }

    fn convert_to_skiplist(&mut self) {
        let Repr::Listpack(b) = &self.repr else {
            return;
        };
        // The listpack's size bounds its members' bytes.
        let mut s = SkipList::new(lp_count(b) + 1, b.len());
        for e in LpIter::new(b) {
            s.insert(e.member, e.score);
        }
        self.repr = Repr::Skiplist(Box::new(s));
    }
}

/// Members with their scores, in the direction asked of [`ZSet::iter_from`].
pub struct Iter<'a> {
    inner: IterInner<'a>,
}

enum IterInner<'a> {
    Done,
    Lp(LpIter<'a>),
    /// Entry offsets still to yield, last first.
    LpRev(&'a [u8], Vec<usize>),
    Sl {
        sl: &'a SkipList,
        x: u32,
        rev: bool,
    },
}

impl<'a> Iterator for Iter<'a> {
    type Item = (&'a [u8], f64);

    fn next(&mut self) -> Option<Self::Item> {
        match &mut self.inner {
            IterInner::Done => None,
            IterInner::Lp(it) => it.next().map(|e| (e.member, e.score)),
            IterInner::LpRev(b, starts) => {
                let start = starts.pop()?;
                let e = lp_read(b, start);
                Some((e.member, e.score))
            }
            IterInner::Sl { sl, x, rev } => {
                if *x == NIL {
                    return None;
                }
                let sl: &'a SkipList = sl;
                let (sl, y) = (&sl.slab, *x);
                *x = if *rev { sl.back(y) } else { sl.next(y) };
                Some((sl.member(y), sl.score(y)))
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// listpack: [count: u32 le] then entries [varint(len << 1 | float)] [score] [member].

const LP_HEADER: usize = 4;
/// Integers up to 2^53 are exact in an f64 and are stored as zigzag varints.
const LP_INT_MAX: f64 = 9_007_199_254_740_992.0;

struct LpEntry<'a> {
    start: usize,
    end: usize,
    member: &'a [u8],
    score: f64,
}

fn lp_count(b: &[u8]) -> usize {
    match b.first_chunk::<LP_HEADER>() {
        Some(c) => u32::from_le_bytes(*c) as usize,
        None => 0,
    }
}

fn lp_set_count(b: &mut Vec<u8>, n: usize) {
    if b.len() < LP_HEADER {
        b.resize(LP_HEADER, 0);
    }
    b[..LP_HEADER].copy_from_slice(&(n as u32).to_le_bytes());
}

/// Reads a varint the listpack itself wrote (well formed by construction).
fn read_varint(b: &[u8], pos: &mut usize) -> u64 {
    let mut v = 0u64;
    let mut shift = 0;
    loop {
        let byte = b[*pos];
        *pos += 1;
        v |= ((byte & 0x7f) as u64) << shift;
        if byte & 0x80 == 0 {
            return v;
        }
        shift += 7;
    }
}

fn lp_read(b: &[u8], start: usize) -> LpEntry<'_> {
    let mut pos = start;
    let header = read_varint(b, &mut pos);
    let score = if header & 1 == 1 {
        let bytes: [u8; 8] = b[pos..pos + 8].try_into().expect("8 bytes");
        pos += 8;
        f64::from_bits(u64::from_le_bytes(bytes))
    } else {
        let z = read_varint(b, &mut pos);
        ((z >> 1) as i64 ^ -((z & 1) as i64)) as f64
    };
    let len = (header >> 1) as usize;
    LpEntry {
        start,
        end: pos + len,
        member: &b[pos..pos + len],
        score,
    }
}

fn lp_encode(out: &mut Vec<u8>, member: &[u8], score: f64) {
    // -0 is stored as 0: Redis's listpack loses the sign the same way (ZSCORE says 0).
    if score.fract() == 0.0 && score.abs() <= LP_INT_MAX {
        put_varint(out, (member.len() as u64) << 1);
        let i = score as i64;
        put_varint(out, ((i << 1) ^ (i >> 63)) as u64);
    } else {
        put_varint(out, ((member.len() as u64) << 1) | 1);
        out.extend_from_slice(&score.to_bits().to_le_bytes());
    }
    out.extend_from_slice(member);
}

struct LpIter<'a> {
    b: &'a [u8],
    pos: usize,
}

impl<'a> LpIter<'a> {
    fn new(b: &'a [u8]) -> Self {
        LpIter { b, pos: LP_HEADER }
    }
}

impl<'a> Iterator for LpIter<'a> {
    type Item = LpEntry<'a>;

    fn next(&mut self) -> Option<LpEntry<'a>> {
        if self.pos >= self.b.len() {
            return None;
        }
        let e = lp_read(self.b, self.pos);
        self.pos = e.end;
        Some(e)
    }
}

/// The entry of `member`, found by a scan.
fn lp_find<'a>(b: &'a [u8], member: &[u8]) -> Option<LpEntry<'a>> {
    LpIter::new(b).find(|e| e.member == member)
}

fn lp_insert(b: &mut Vec<u8>, member: &[u8], score: f64) {
    let mut entry = Vec::with_capacity(10 + member.len());
    lp_encode(&mut entry, member, score);
    let at = LpIter::new(b)
        .find(|e| less(score, member, e.score, e.member))
        .map_or(b.len().max(LP_HEADER), |e| e.start);
    let n = lp_count(b);
    // Exact growth: a listpack is sized to its content, as Redis's is.
    b.reserve_exact(entry.len() + if b.is_empty() { LP_HEADER } else { 0 });
    lp_set_count(b, n + 1);
    b.splice(at..at, entry);
}

fn lp_delete(b: &mut Vec<u8>, bytes: Range<usize>, entries: usize) {
    let n = lp_count(b);
    b.drain(bytes);
    if n == entries {
        *b = Vec::new();
        return;
    }
    lp_set_count(b, n - entries);
    if b.capacity() > b.len() + b.len() / 4 + 16 {
        b.shrink_to_fit();
    }
}

// ---------------------------------------------------------------------------------------------
// skiplist

const MAX_LEVEL: usize = 32;
/// No node. Node names are slab offsets in 8-byte units, so a slab holds up to 32 GiB.
const NIL: u32 = u32::MAX;
/// The header node: the first record of the slab, never removed.
const HEAD: u32 = 0;
/// Compact the slab when holes are at least this many and outnumber or outweigh live nodes.
const HOLES_MIN_TO_COMPACT: usize = 64;
/// One ZSCAN mark (sequence number, node) per this many records: a scan step starts by walking
/// at most this many records from a mark.
const MARK_EVERY: usize = 32;

/// Every node of a skiplist, as records back to back in one byte vector. A node is named by its
/// offset in 8-byte units (a `u32`); everything a descent reads of a node is in its record, so a
/// visited node costs one cache miss (Redis's costs the same: its level array is inline).
///
/// ```text
///  0       8      12     16     20     24  25                              25+8(L-1)
///  +-------+------+------+------+------+---+------------------------+--------+---------+
///  | score | next | back | seq  | len  | L | fwd span | … (L-1 links) | member | padding |
///  | f64   | u32  | u32  | u32  | u32  |u8 | u32 u32  |               | len B  | to 8 B  |
///  +-------+------+------+------+------+---+------------------------+--------+---------+
/// ```
///
/// `next` is the level-0 forward link (its span is implicitly 1); the upper links, levels
/// 1..L, each carry a span. `back` is the previous node (`NIL` for the first). `seq` is the
/// ZSCAN position, which only grows along the slab. The member is read only on a score tie, so
/// a long one costs a descent nothing. A removed node stays as a hole (bit `HOLE` of `L` set)
/// until compaction squeezes the holes out. Values are native-endian, read through
/// bounds-checked slices: no unsafe code, no per-node allocation.
#[derive(Clone, Default)]
struct Slab(Vec<u8>);

impl Slab {
    const NEXT: usize = 8;
    const BACK: usize = 12;
    const SEQ: usize = 16;
    const LEN: usize = 20;
    const LEVELS: usize = 24;
    /// The level-1 link; the member follows the last link.
    const UP: usize = 25;
    const HOLE: u8 = 0x80;

    fn member_at(levels: usize) -> usize {
        Self::UP + 8 * (levels - 1)
    }

    /// Bytes of the record of a node with `levels` levels and a member of `len` bytes.
    fn record_bytes(levels: usize, len: usize) -> usize {
        (Self::member_at(levels) + len).next_multiple_of(8)
    }

    /// Offset of the forward link of level `lvl` in a record.
    fn fwd_at(lvl: usize) -> usize {
        if lvl == 0 {
            Self::NEXT
        } else {
            Self::UP + 8 * (lvl - 1)
        }
    }

    /// The first node past the last record.
    fn end(&self) -> u32 {
        (self.0.len() / 8) as u32
    }

    /// Appends a node, links unset; returns it.
    fn push(&mut self, levels: usize, score: f64, member: &[u8], seq: u32) -> u32 {
        debug_assert!((1..=MAX_LEVEL).contains(&levels));
        let len = u32::try_from(member.len()).expect("member under 4 GiB");
        let bytes = Self::record_bytes(levels, member.len());
        assert!(
            (self.0.len() + bytes) / 8 < NIL as usize,
            "skiplist slab full"
        );
        if self.0.capacity() - self.0.len() < bytes {
            // 1.5× growth: the slab's spare room is memory every large set pays for.
            self.0.reserve_exact(bytes.max(self.0.len() / 2));
        }
        let x = self.end();
        let at = self.0.len();
        self.0.resize(at + bytes, 0);
        self.set_score(x, score);
        self.set_u32(x, Self::SEQ, seq);
        self.set_u32(x, Self::LEN, len);
        self.0[at + Self::LEVELS] = levels as u8;
        let m = at + Self::member_at(levels);
        self.0[m..m + member.len()].copy_from_slice(member);
        x
    }

    fn u32_at(&self, x: u32, field: usize) -> u32 {
        let o = x as usize * 8 + field;
        u32::from_ne_bytes(self.0[o..o + 4].try_into().expect("4 bytes"))
    }

    fn set_u32(&mut self, x: u32, field: usize, v: u32) {
        let o = x as usize * 8 + field;
        self.0[o..o + 4].copy_from_slice(&v.to_ne_bytes());
    }

    fn score(&self, x: u32) -> f64 {
        let o = x as usize * 8;
        f64::from_ne_bytes(self.0[o..o + 8].try_into().expect("8 bytes"))
    }

    fn set_score(&mut self, x: u32, score: f64) {
        let o = x as usize * 8;
        self.0[o..o + 8].copy_from_slice(&score.to_ne_bytes());
    }

    fn next(&self, x: u32) -> u32 {
        self.u32_at(x, Self::NEXT)
    }

    fn set_next(&mut self, x: u32, to: u32) {
        self.set_u32(x, Self::NEXT, to);
    }

    fn back(&self, x: u32) -> u32 {
        self.u32_at(x, Self::BACK)
    }

    fn set_back(&mut self, x: u32, to: u32) {
        self.set_u32(x, Self::BACK, to);
    }

    fn seq(&self, x: u32) -> u32 {
        self.u32_at(x, Self::SEQ)
    }

    fn set_seq(&mut self, x: u32, seq: u32) {
        self.set_u32(x, Self::SEQ, seq);
    }

    /// The byte holding the level count and the hole bit.
    fn levels_byte(&self, x: u32) -> u8 {
        self.0[x as usize * 8 + Self::LEVELS]
    }

    fn levels(&self, x: u32) -> usize {
        (self.levels_byte(x) & !Self::HOLE) as usize
    }

    fn is_hole(&self, x: u32) -> bool {
        self.levels_byte(x) & Self::HOLE != 0
    }

    fn make_hole(&mut self, x: u32) {
        self.0[x as usize * 8 + Self::LEVELS] |= Self::HOLE;
    }

    fn member(&self, x: u32) -> &[u8] {
        let o = x as usize * 8 + Self::member_at(self.levels(x));
        &self.0[o..o + self.u32_at(x, Self::LEN) as usize]
    }

    /// Bytes of `x`'s record (a hole's included).
    fn bytes(&self, x: u32) -> usize {
        Self::record_bytes(self.levels(x), self.u32_at(x, Self::LEN) as usize)
    }

    /// The record after `x`'s in the slab (holes included).
    fn following(&self, x: u32) -> u32 {
        x + (self.bytes(x) / 8) as u32
    }

    /// Forward link of level `lvl` (0 included).
    fn fwd(&self, x: u32, lvl: usize) -> u32 {
        self.u32_at(x, Self::fwd_at(lvl))
    }

    /// Positions the link of level `lvl` skips; spans of links to NIL count the nodes after.
    fn span(&self, x: u32, lvl: usize) -> u32 {
        if lvl == 0 {
            (self.next(x) != NIL) as u32
        } else {
            self.u32_at(x, Self::fwd_at(lvl) + 4)
        }
    }

    /// Link of level `lvl >= 1`: forward node and span.
    fn up(&self, x: u32, lvl: usize) -> (u32, u32) {
        debug_assert!(lvl >= 1);
        (self.fwd(x, lvl), self.span(x, lvl))
    }

    fn set_up(&mut self, x: u32, lvl: usize, fwd: u32, span: u32) {
        debug_assert!(lvl >= 1);
        self.set_u32(x, Self::fwd_at(lvl), fwd);
        self.set_u32(x, Self::fwd_at(lvl) + 4, span);
    }

    /// Whether node `y` sorts before `(score, member)`; reads `y`'s member only on a score tie.
    fn before_key(&self, y: u32, score: f64, member: &[u8]) -> bool {
        let s = self.score(y);
        s < score || (s == score && self.member(y) < member)
    }

    /// Whether `(score, member)` sorts before node `y`; reads `y`'s member only on a score tie.
    fn key_before(&self, score: f64, member: &[u8], y: u32) -> bool {
        let s = self.score(y);
        score < s || (score == s && member < self.member(y))
    }
}

/// The last node before a key on each level in use, with its rank (the header's is 0): where a
/// descent stops, and what linking or unlinking there needs.
struct Path {
    update: [u32; MAX_LEVEL],
    rank: [u32; MAX_LEVEL],
}

#[derive(Clone)]
struct SkipList {
    slab: Slab,
    /// Every `MARK_EVERY`-th record after the header: (seq, node), in slab order.
    marks: Vec<(u32, u32)>,
    /// Records after the header, holes included (to place the marks).
    records: usize,
    /// member → node; hashed through the node's member bytes.
    index: HashTable<u32>,
    hasher: foldhash::fast::RandomState,
    tail: u32,
    len: u32,
    /// Levels in use (at least 1).
    level: usize,
    holes: usize,
    hole_bytes: usize,
    next_seq: u32,
    rng: u64,
}

impl SkipList {
    /// An empty list with room for `members` members of about `member_bytes` bytes in all.
    fn new(members: usize, member_bytes: usize) -> Self {
        let head_bytes = Slab::record_bytes(MAX_LEVEL, 0);
        let mut slab = Slab(Vec::with_capacity(
            head_bytes + Slab::record_bytes(1, 0) * members + member_bytes,
        ));
        let head = slab.push(MAX_LEVEL, 0.0, &[], 0);
        slab.set_next(head, NIL);
        slab.set_back(head, NIL);
        for lvl in 1..MAX_LEVEL {
            slab.set_up(head, lvl, NIL, 0);
        }
        SkipList {
            slab,
            marks: Vec::new(),
            records: 0,
            index: HashTable::with_capacity(members),
            hasher: foldhash::fast::RandomState::default(),
            tail: NIL,
            len: 0,
            level: 1,
            holes: 0,
            hole_bytes: 0,
            next_seq: 1,
            rng: 0x2545_f491_4f6c_dd1d,
        }
    }

    fn heap_bytes(&self) -> usize {
        self.slab.0.capacity()
            + self.marks.capacity() * std::mem::size_of::<(u32, u32)>()
            + self.index.allocation_size()
    }

    fn hash(&self, member: &[u8]) -> u64 {
        self.hasher.hash_one(member)
    }

    fn find(&self, member: &[u8]) -> Option<u32> {
        let slab = &self.slab;
        self.index
            .find(self.hash(member), |&x| slab.member(x) == member)
            .copied()
    }

    /// Redis's random level: each extra level with probability 1/4.
    fn random_level(&mut self) -> usize {
        // xorshift64*
        self.rng ^= self.rng >> 12;
        self.rng ^= self.rng << 25;
        self.rng ^= self.rng >> 27;
        let mut bits = self.rng.wrapping_mul(0x2545_f491_4f6c_dd1d);
        let mut lvl = 1;
        while lvl < MAX_LEVEL && bits & 3 == 0 {
            lvl += 1;
            bits >>= 2;
        }
        lvl
    }

    /// Adds a member known to be absent.
    fn insert(&mut self, member: &[u8], score: f64) {
        if self.next_seq == u32::MAX {
            self.compact(true);
        }
        let lvl = self.random_level();
        let x = self.slab.push(lvl, score, member, self.next_seq);
        self.next_seq += 1;
        if self.records.is_multiple_of(MARK_EVERY) {
            self.marks.push((self.slab.seq(x), x));
        }
        self.records += 1;
        let path = self.descend(score, member);
        self.link(x, path);
        let h = self.hash(member);
        let (slab, hasher) = (&self.slab, &self.hasher);
        self.index
            .insert_unique(h, x, |&y| hasher.hash_one(slab.member(y)));
    }

    /// One descent towards `(score, member)`.
    fn descend(&self, score: f64, member: &[u8]) -> Path {
        let sl = &self.slab;
        let mut path = Path {
            update: [HEAD; MAX_LEVEL],
            rank: [0; MAX_LEVEL],
        };
        let (mut cur, mut r) = (HEAD, 0);
        for i in (0..self.level).rev() {
            loop {
                let f = sl.fwd(cur, i);
                if f == NIL || !sl.before_key(f, score, member) {
                    break;
                }
                r += sl.span(cur, i);
                cur = f;
            }
            path.update[i] = cur;
            path.rank[i] = r;
        }
        path
    }

    /// Two descents at once, towards `a` and towards `b`: their cache misses overlap, so this
    /// costs little more than one.
    fn descend_two(&self, a: (f64, &[u8]), b: (f64, &[u8])) -> (Path, Path) {
        let sl = &self.slab;
        let mut pa = Path {
            update: [HEAD; MAX_LEVEL],
            rank: [0; MAX_LEVEL],
        };
        let mut pb = Path {
            update: [HEAD; MAX_LEVEL],
            rank: [0; MAX_LEVEL],
        };
        let (mut ca, mut ra, mut cb, mut rb) = (HEAD, 0, HEAD, 0);
        for i in (0..self.level).rev() {
            loop {
                let (fa, fb) = (sl.fwd(ca, i), sl.fwd(cb, i));
                let go_a = fa != NIL && sl.before_key(fa, a.0, a.1);
                let go_b = fb != NIL && sl.before_key(fb, b.0, b.1);
                if go_a {
                    ra += sl.span(ca, i);
                    ca = fa;
                }
                if go_b {
                    rb += sl.span(cb, i);
                    cb = fb;
                }
                if !go_a && !go_b {
                    break;
                }
            }
            (pa.update[i], pa.rank[i]) = (ca, ra);
            (pb.update[i], pb.rank[i]) = (cb, rb);
        }
        (pa, pb)
    }

    /// Links node `x` (score, member and level count set; links unset) after `path`, the
    /// descent towards its key.
    fn link(&mut self, x: u32, path: Path) {
        let Path {
            mut update,
            mut rank,
        } = path;
        let sl = &mut self.slab;
        let lvl = sl.levels(x);
        if lvl > self.level {
            for i in self.level..lvl {
                rank[i] = 0;
                update[i] = HEAD;
                sl.set_up(HEAD, i, NIL, self.len);
            }
            self.level = lvl;
        }
        let after = sl.next(update[0]);
        sl.set_next(x, after);
        sl.set_next(update[0], x);
        for i in 1..lvl {
            let (f, s) = sl.up(update[i], i);
            sl.set_up(x, i, f, s - (rank[0] - rank[i]));
            sl.set_up(update[i], i, x, rank[0] - rank[i] + 1);
        }
        for (i, &u) in update.iter().enumerate().take(self.level).skip(lvl) {
            let (f, s) = sl.up(u, i);
            sl.set_up(u, i, f, s + 1);
        }
        sl.set_back(x, if update[0] == HEAD { NIL } else { update[0] });
        if after != NIL {
            sl.set_back(after, x);
        } else {
            self.tail = x;
        }
        self.len += 1;
    }

    /// The descent towards linked node `x`'s own key: the path to unlink it.
    fn path_to(&self, x: u32) -> Path {
        let path = self.descend(self.slab.score(x), self.slab.member(x));
        debug_assert_eq!(self.slab.next(path.update[0]), x);
        path
    }

    /// Unlinks `x` (whose predecessors are `update`); its record stays.
    fn unlink(&mut self, x: u32, update: &[u32; MAX_LEVEL]) {
        let sl = &mut self.slab;
        let (next, back) = (sl.next(x), sl.back(x));
        sl.set_next(update[0], next);
        for (i, &u) in update.iter().enumerate().take(self.level).skip(1) {
            let (f, s) = sl.up(u, i);
            if f == x {
                let (xf, xs) = sl.up(x, i);
                sl.set_up(u, i, xf, s + xs - 1);
            } else {
                sl.set_up(u, i, f, s - 1);
            }
        }
        if next != NIL {
            sl.set_back(next, back);
        } else {
            self.tail = back;
        }
        while self.level > 1 && sl.fwd(HEAD, self.level - 1) == NIL {
            self.level -= 1;
        }
        self.len -= 1;
    }

    /// Turns unlinked node `x` into a hole and drops it from the index.
    fn free(&mut self, x: u32) {
        let h = self.hash(self.slab.member(x));
        if let Ok(e) = self.index.find_entry(h, |&y| y == x) {
            e.remove();
        }
        self.slab.make_hole(x);
        self.holes += 1;
        self.hole_bytes += self.slab.bytes(x);
    }

    /// Gives linked node `x` a new score, relinking it when its place changes. The record stays
    /// where it is (no allocation, same ZSCAN position).
    fn update_score(&mut self, x: u32, score: f64) {
        let sl = &self.slab;
        let (back, next, old, member) = (sl.back(x), sl.next(x), sl.score(x), sl.member(x));
        let after_back = back == NIL || sl.before_key(back, score, member);
        let before_next = next == NIL || sl.key_before(score, member, next);
        if after_back && before_next {
            // Same place: Redis's fast path.
            self.slab.set_score(x, score);
            return;
        }
        // Both descents at once, on the list that still holds `x`; then the path to the new
        // place is corrected for `x`'s removal: a predecessor that was `x` becomes `x`'s own
        // predecessor, and ranks past `x` move down by one.
        let (from, mut to) = self.descend_two((old, member), (score, member));
        let x_rank = from.rank[0] + 1;
        for i in 0..self.level {
            if to.update[i] == x {
                to.update[i] = from.update[i];
                to.rank[i] = from.rank[i];
            } else if to.rank[i] > x_rank {
                to.rank[i] -= 1;
            }
        }
        self.unlink(x, &from.update);
        self.slab.set_score(x, score);
        self.link(x, to);
    }

    fn count_while(&self, below: impl Fn(f64, &[u8]) -> bool) -> usize {
        let sl = &self.slab;
        let mut cur = HEAD;
        let mut rank = 0usize;
        for i in (0..self.level).rev() {
            loop {
                let f = sl.fwd(cur, i);
                if f == NIL || !below(sl.score(f), sl.member(f)) {
                    break;
                }
                rank += sl.span(cur, i) as usize;
                cur = f;
            }
        }
        rank
    }

    /// The node at ascending rank `rank` (0-based), or NIL.
    fn at_rank(&self, rank: usize) -> u32 {
        if rank >= self.len as usize {
            return NIL;
        }
        if rank + 1 == self.len as usize {
            return self.tail;
        }
        let sl = &self.slab;
        let target = rank + 1;
        let mut cur = HEAD;
        let mut traversed = 0usize;
        for i in (0..self.level).rev() {
            loop {
                let (f, s) = (sl.fwd(cur, i), sl.span(cur, i) as usize);
                if f != NIL && traversed + s <= target {
                    traversed += s;
                    cur = f;
                } else {
                    break;
                }
            }
            if traversed == target {
                return cur;
            }
        }
        NIL
    }

    /// Removes ascending ranks `lo..hi` (within the set), calling `f` on each first.
    fn remove_range(&mut self, lo: usize, hi: usize, f: &mut dyn FnMut(&[u8], f64)) {
        let mut update = [HEAD; MAX_LEVEL];
        let mut cur = HEAD;
        let mut traversed = 0usize;
        for i in (0..self.level).rev() {
            loop {
                let (nx, s) = (self.slab.fwd(cur, i), self.slab.span(cur, i) as usize);
                if nx != NIL && traversed + s <= lo {
                    traversed += s;
                    cur = nx;
                } else {
                    break;
                }
            }
            update[i] = cur;
        }
        let mut x = self.slab.next(cur);
        let mut rank = lo;
        while x != NIL && rank < hi {
            let next = self.slab.next(x);
            f(self.slab.member(x), self.slab.score(x));
            self.unlink(x, &update);
            self.free(x);
            rank += 1;
            x = next;
        }
    }

    fn scan(&self, cursor: u64, count: usize, f: &mut dyn FnMut(&[u8], f64)) -> u64 {
        let sl = &self.slab;
        let end = sl.end();
        let m = self
            .marks
            .partition_point(|&(seq, _)| (seq as u64) < cursor);
        let mut x = match m.checked_sub(1) {
            Some(m) => self.marks[m].1,
            None => sl.following(HEAD),
        };
        // At most `MARK_EVERY` records to the cursor's.
        while x < end && (sl.seq(x) as u64) < cursor {
            x = sl.following(x);
        }
        let mut found = 0;
        // Holes are at most about as many as live nodes, so 10 × count visits rarely run out.
        let mut visits = count.saturating_mul(10).max(1);
        while x < end && found < count && visits > 0 {
            if !sl.is_hole(x) {
                f(sl.member(x), sl.score(x));
                found += 1;
            }
            visits -= 1;
            x = sl.following(x);
        }
        if x < end { sl.seq(x) as u64 } else { 0 }
    }

    fn maybe_compact(&mut self) {
        let live_bytes = self.slab.0.len() - self.hole_bytes;
        if self.holes >= HOLES_MIN_TO_COMPACT
            && (self.holes > self.len as usize || self.hole_bytes > live_bytes)
        {
            self.compact(false);
        }
        let len = self.len as usize;
        if self.index.capacity() > 4 * len + 16 {
            let (slab, hasher) = (&self.slab, &self.hasher);
            self.index
                .shrink_to_fit(|&x| hasher.hash_one(slab.member(x)));
        }
    }

    /// Squeezes the holes out of the slab, keeping record order (and so ZSCAN order). With
    /// `renumber`, sequence numbers restart from 1 (only when they ran out: a scan running
    /// across that moment may miss members). O(slab bytes), no allocation besides the marks.
    fn compact(&mut self, renumber: bool) {
        let sl = &mut self.slab;
        let end = sl.end();
        // 1. Each live record's new place, parked in its `back` link (rebuilt in step 4).
        let (mut x, mut w) = (HEAD, HEAD);
        while x < end {
            let next = sl.following(x);
            if !sl.is_hole(x) {
                sl.set_back(x, w);
                w += next - x;
            }
            x = next;
        }
        // 2. Forward links, the index and the tail to the new places.
        let moved = |sl: &Slab, y: u32| if y == NIL { NIL } else { sl.back(y) };
        x = HEAD;
        while x < end {
            let next = sl.following(x);
            if !sl.is_hole(x) {
                sl.set_next(x, moved(sl, sl.next(x)));
                for lvl in 1..sl.levels(x) {
                    let (f, s) = sl.up(x, lvl);
                    sl.set_up(x, lvl, moved(sl, f), s);
                }
            }
            x = next;
        }
        for y in self.index.iter_mut() {
            *y = moved(sl, *y);
        }
        self.tail = moved(sl, self.tail);
        // 3. Slide the live records down, in order.
        x = HEAD;
        while x < end {
            let next = sl.following(x);
            if !sl.is_hole(x) {
                let to = sl.back(x) as usize * 8;
                sl.0.copy_within(x as usize * 8..next as usize * 8, to);
            }
            x = next;
        }
        sl.0.truncate(w as usize * 8);
        sl.0.shrink_to(sl.0.len() + sl.0.len() / 2);
        // 4. Back links along level 0; marks (and sequence numbers) along the slab.
        let mut prev = NIL;
        x = sl.next(HEAD);
        while x != NIL {
            sl.set_back(x, prev);
            prev = x;
            x = sl.next(x);
        }
        sl.set_back(HEAD, NIL);
        self.marks.clear();
        self.records = 0;
        x = sl.following(HEAD);
        while x < w {
            if renumber {
                sl.set_seq(x, self.records as u32 + 1);
            }
            if self.records.is_multiple_of(MARK_EVERY) {
                self.marks.push((sl.seq(x), x));
            }
            self.records += 1;
            x = sl.following(x);
        }
        self.marks.shrink_to_fit();
        if renumber {
            self.next_seq = self.records as u32 + 1;
        }
        self.holes = 0;
        self.hole_bytes = 0;
    }

    /// Full structural check (O(n log n)).
    fn check(&self) {
        let sl = &self.slab;
        let end = sl.end();
        // The slab: records back to back, ascending sequence numbers, marks where they belong.
        let (mut x, mut k) = (sl.following(HEAD), 0);
        let (mut holes, mut hole_bytes, mut seq) = (0, 0, sl.seq(HEAD));
        let mut live = std::collections::HashSet::new();
        while x < end {
            assert!(sl.seq(x) > seq, "seq order");
            seq = sl.seq(x);
            assert!(seq < self.next_seq, "seq issued");
            if k % MARK_EVERY == 0 {
                assert_eq!(self.marks.get(k / MARK_EVERY), Some(&(seq, x)), "mark");
            }
            if sl.is_hole(x) {
                holes += 1;
                hole_bytes += sl.bytes(x);
            } else {
                live.insert(x);
            }
            k += 1;
            x = sl.following(x);
        }
        assert_eq!(x, end, "records fill the slab");
        assert_eq!(k, self.records);
        assert_eq!(self.marks.len(), k.div_ceil(MARK_EVERY));
        assert_eq!((holes, hole_bytes), (self.holes, self.hole_bytes));
        // The list: every live record once, in order, with back links, ranks and the index.
        let mut ranks = std::collections::HashMap::from([(HEAD, 0usize)]);
        let (mut x, mut prev, mut r) = (sl.next(HEAD), NIL, 0);
        while x != NIL {
            assert!(live.remove(&x), "linked node is a live record, once");
            assert!(sl.levels(x) >= 1 && sl.levels(x) <= self.level);
            assert_eq!(sl.back(x), prev, "backward link");
            if prev != NIL {
                assert!(sl.before_key(prev, sl.score(x), sl.member(x)), "order");
            }
            assert_eq!(self.find(sl.member(x)), Some(x), "index");
            r += 1;
            ranks.insert(x, r);
            prev = x;
            x = sl.next(x);
        }
        assert!(live.is_empty(), "every live record is linked");
        assert_eq!(r, self.len as usize);
        assert_eq!(self.tail, prev);
        assert_eq!(self.index.len(), r);
        // Every upper link skips exactly the ranks between its ends; links to NIL span the rest.
        for (&x, &rx) in &ranks {
            for lvl in 1..sl.levels(x).min(self.level) {
                let (f, s) = sl.up(x, lvl);
                let to = if f == NIL {
                    self.len as usize + 1
                } else {
                    ranks[&f]
                };
                assert_eq!(s as usize, to - rx - (f == NIL) as usize, "span");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::BTreeMap;

    fn limits(entries: usize) -> EncodingLimits {
        EncodingLimits {
            zset_max_listpack_entries: entries,
            ..EncodingLimits::default()
        }
    }

    /// Total-order key for the model: (score, member); scores are never NaN.
    #[derive(Debug, Clone, Copy, PartialEq, PartialOrd)]
    struct S(f64);
    impl Eq for S {}
    #[allow(clippy::derive_ord_xor_partial_ord)]
    impl Ord for S {
        fn cmp(&self, o: &Self) -> std::cmp::Ordering {
            self.0.partial_cmp(&o.0).expect("no NaN")
        }
    }

    /// The model: member → score, and the ordered view derived from it.
    #[derive(Default)]
    struct Model(BTreeMap<Vec<u8>, f64>);
    impl Model {
        fn sorted(&self) -> Vec<(Vec<u8>, f64)> {
            let mut v: Vec<_> = self.0.iter().map(|(m, s)| (m.clone(), *s)).collect();
            v.sort_by(|a, b| (S(a.1), &a.0).cmp(&(S(b.1), &b.0)));
            v
        }
    }

    #[derive(Debug, Clone)]
    enum Op {
        Add(u8, f64),
        Incr(u8, f64),
        Rem(u8),
        RemRank(usize, usize),
        RemScore(f64, bool, f64, bool),
        RemLex(u8, bool, u8, bool),
        Pop(bool, usize),
    }

    fn member(i: u8) -> Vec<u8> {
        // Varied lengths, some sharing prefixes, so lex order is exercised.
        let mut m = format!("m{}", i % 50).into_bytes();
        if i.is_multiple_of(7) {
            m.extend_from_slice(b"-longer-member");
        }
        m
    }

    fn score() -> impl Strategy<Value = f64> {
        prop_oneof![
            (-5i32..5).prop_map(|v| v as f64),
            (-5i32..5).prop_map(|v| v as f64 / 4.0),
            Just(f64::INFINITY),
            Just(f64::NEG_INFINITY),
            Just(-0.0),
            any::<f64>().prop_filter("not NaN", |v| !v.is_nan()),
        ]
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            6 => (any::<u8>(), score()).prop_map(|(m, s)| Op::Add(m, s)),
            2 => (any::<u8>(), score()).prop_map(|(m, s)| Op::Incr(m, s)),
            3 => any::<u8>().prop_map(Op::Rem),
            1 => (0usize..40, 0usize..40).prop_map(|(a, b)| Op::RemRank(a, b)),
            1 => (score(), any::<bool>(), score(), any::<bool>())
                .prop_map(|(a, ax, b, bx)| Op::RemScore(a, ax, b, bx)),
            1 => (any::<u8>(), any::<bool>(), any::<u8>(), any::<bool>())
                .prop_map(|(a, ax, b, bx)| Op::RemLex(a, ax, b, bx)),
            1 => (any::<bool>(), 0usize..5).prop_map(|(max, n)| Op::Pop(max, n)),
        ]
    }

    /// Operations on a set whose scores are all equal, where lex ranges are meaningful.
    fn lex_op() -> impl Strategy<Value = Op> {
        prop_oneof![
            4 => any::<u8>().prop_map(|m| Op::Add(m, 0.0)),
            1 => any::<u8>().prop_map(Op::Rem),
            2 => (any::<u8>(), any::<bool>(), any::<u8>(), any::<bool>())
                .prop_map(|(a, ax, b, bx)| Op::RemLex(a, ax, b, bx)),
            1 => (0usize..40, 0usize..40).prop_map(|(a, b)| Op::RemRank(a, b)),
        ]
    }

    fn lex(m: u8, excl: bool) -> LexBound {
        match m {
            0 => LexBound::Min,
            255 => LexBound::Max,
            _ if excl => LexBound::Exclusive(member(m)),
            _ => LexBound::Inclusive(member(m)),
        }
    }

    fn in_score(r: &ScoreRange, s: f64) -> bool {
        (if r.min_exclusive {
            s > r.min
        } else {
            s >= r.min
        }) && (if r.max_exclusive {
            s < r.max
        } else {
            s <= r.max
        })
    }

    fn in_lex(r: &LexRange, m: &[u8]) -> bool {
        !r.below_min(m) && r.within_max(m)
    }

    fn apply(z: &mut ZSet, model: &mut Model, op: &Op, lim: &EncodingLimits) {
        match op {
            Op::Add(m, s) => {
                let m = member(*m);
                assert_eq!(z.insert(&m, *s, lim), model.0.get(&m).copied());
                let e = model.0.entry(m).or_insert(*s);
                if *e != *s {
                    *e = *s;
                }
            }
            Op::Incr(m, by) => {
                let m = member(*m);
                let new = model.0.get(&m).copied().unwrap_or(0.0) + by;
                if !new.is_nan() {
                    z.insert(&m, new, lim);
                    let e = model.0.entry(m).or_insert(new);
                    if *e != new {
                        *e = new;
                    }
                }
            }
            Op::Rem(m) => {
                let m = member(*m);
                assert_eq!(z.remove(&m), model.0.remove(&m));
            }
            Op::RemRank(a, b) => {
                let sorted = model.sorted();
                let hi = (*b).min(sorted.len());
                let mut seen = Vec::new();
                let n = z.remove_range(*a..*b, |m, s| seen.push((m.to_vec(), s)));
                let expect: Vec<_> = sorted.get(*a..hi).map(|v| v.to_vec()).unwrap_or_default();
                assert_eq!(n, expect.len());
                assert_eq!(seen, expect);
                for (m, _) in expect {
                    model.0.remove(&m);
                }
            }
            Op::RemScore(a, ax, b, bx) => {
                let r = ScoreRange {
                    min: *a,
                    min_exclusive: *ax,
                    max: *b,
                    max_exclusive: *bx,
                };
                let ranks = r.ranks(z);
                let expect: Vec<_> = model
                    .sorted()
                    .into_iter()
                    .filter(|(_, s)| in_score(&r, *s))
                    .collect();
                let mut seen = Vec::new();
                z.remove_range(ranks, |m, s| seen.push((m.to_vec(), s)));
                assert_eq!(seen, expect);
                for (m, _) in expect {
                    model.0.remove(&m);
                }
            }
            Op::RemLex(a, ax, b, bx) => {
                let r = LexRange {
                    min: lex(*a, *ax),
                    max: lex(*b, *bx),
                };
                let expect: Vec<Vec<u8>> =
                    model.0.keys().filter(|m| in_lex(&r, m)).cloned().collect();
                let mut seen = Vec::new();
                let first = model.0.values().next().copied();
                if model.0.values().all(|&s| Some(s) == first) {
                    let ranks = r.ranks(z);
                    z.remove_range(ranks, |m, _| seen.push(m.to_vec()));
                    for m in &expect {
                        model.0.remove(m);
                    }
                } else {
                    // Lex ranges are defined when all scores are equal: check a same-score copy.
                    let mut same = ZSet::new(lim);
                    for (m, _) in model.0.iter() {
                        same.insert(m, 1.0, lim);
                    }
                    let ranks = r.ranks(&same);
                    same.remove_range(ranks, |m, _| seen.push(m.to_vec()));
                    same.check_invariants();
                }
                assert_eq!(seen, expect);
            }
            Op::Pop(max, n) => {
                let sorted = model.sorted();
                let k = (*n).min(sorted.len());
                let mut expect: Vec<_> = if *max {
                    sorted[sorted.len() - k..].to_vec()
                } else {
                    sorted[..k].to_vec()
                };
                if *max {
                    expect.reverse();
                }
                assert_eq!(z.pop(*max, *n), expect);
                for (m, _) in expect {
                    model.0.remove(&m);
                }
            }
        }
    }

    fn recount(z: &ZSet) -> usize {
        match &z.repr {
            Repr::Listpack(b) => b.capacity(),
            Repr::Skiplist(s) => {
                std::mem::size_of::<SkipList>()
                    + s.slab.0.capacity()
                    + s.marks.capacity() * std::mem::size_of::<(u32, u32)>()
                    + s.index.allocation_size()
            }
        }
    }

    fn check_against(z: &ZSet, model: &Model, probes: &[(f64, bool, f64, bool)]) {
        z.check_invariants();
        assert_eq!(z.mem_bytes(), recount(z));
        let sorted = model.sorted();
        assert_eq!(z.len(), sorted.len());
        let got: Vec<(Vec<u8>, f64)> = z.iter().map(|(m, s)| (m.to_vec(), s)).collect();
        assert_eq!(got, sorted);
        for (r, (m, s)) in sorted.iter().enumerate() {
            assert_eq!(z.rank(m), Some((r, *s)));
            assert_eq!(z.score(m), Some(*s));
            assert_eq!(
                z.at_rank(r).map(|(m, s)| (m.to_vec(), s)),
                Some((m.clone(), *s))
            );
        }
        assert_eq!(z.rank(b"absent"), None);
        assert_eq!(z.at_rank(sorted.len()), None);
        // Index ranges both ways, from every start.
        for start in 0..sorted.len() {
            let fwd: Vec<_> = z.iter_from(start, false).map(|(m, _)| m.to_vec()).collect();
            let exp: Vec<_> = sorted[start..].iter().map(|(m, _)| m.clone()).collect();
            assert_eq!(fwd, exp);
            let rev: Vec<_> = z.iter_from(start, true).map(|(m, _)| m.to_vec()).collect();
            let exp: Vec<_> = sorted[..=start]
                .iter()
                .rev()
                .map(|(m, _)| m.clone())
                .collect();
            assert_eq!(rev, exp);
        }
        for &(a, ax, b, bx) in probes {
            let r = ScoreRange {
                min: a,
                min_exclusive: ax,
                max: b,
                max_exclusive: bx,
            };
            let ranks = r.ranks(z);
            let exp: Vec<usize> = (0..sorted.len())
                .filter(|&i| in_score(&r, sorted[i].1))
                .collect();
            assert_eq!(ranks.clone().collect::<Vec<_>>(), exp, "{r:?}");
        }
    }

    fn run_ops(ops: &[Op], probes: &[(f64, bool, f64, bool)], lim: &EncodingLimits) {
        let mut z = ZSet::new(lim);
        let mut model = Model::default();
        for op in ops {
            apply(&mut z, &mut model, op, lim);
            z.check_invariants();
        }
        check_against(&z, &model, probes);
        // The codec round trip keeps content and chooses the encoding by size.
        let mut buf = Vec::new();
        z.encode(&mut buf);
        if z.is_empty() {
            assert!(ZSet::decode(&buf, lim).is_none());
        } else {
            let back = ZSet::decode(&buf, lim).expect("decode");
            assert_eq!(back, z);
            back.check_invariants();
            let small = back.len() <= lim.zset_max_listpack_entries
                && back
                    .iter()
                    .all(|(m, _)| m.len() <= lim.zset_max_listpack_value);
            assert_eq!(back.encoding(), if small { "listpack" } else { "skiplist" });
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(200))]

        #[test]
        fn listpack_agrees_with_model(
            ops in proptest::collection::vec(op(), 0..120),
            probes in proptest::collection::vec((score(), any::<bool>(), score(), any::<bool>()), 8),
        ) {
            run_ops(&ops, &probes, &limits(1_000));
        }

        #[test]
        fn skiplist_agrees_with_model(
            ops in proptest::collection::vec(op(), 0..300),
            probes in proptest::collection::vec((score(), any::<bool>(), score(), any::<bool>()), 8),
        ) {
            // Converts on the first insert.
            run_ops(&ops, &probes, &limits(0));
        }

        #[test]
        fn converting_midway_agrees_with_model(
            ops in proptest::collection::vec(op(), 0..200),
        ) {
            run_ops(&ops, &[], &limits(8));
        }

        #[test]
        fn lex_ranges_agree_with_model(
            ops in proptest::collection::vec(lex_op(), 0..200),
            entries in prop_oneof![Just(0usize), Just(16), Just(1_000)],
        ) {
            run_ops(&ops, &[], &limits(entries));
        }

        #[test]
        fn corrupted_encodings_never_panic(
            n in 1usize..40,
            flips in proptest::collection::vec((any::<usize>(), any::<u8>()), 1..4),
            cut in any::<usize>(),
        ) {
            let lim = limits(8);
            let mut z = ZSet::new(&lim);
            for i in 0..n {
                z.insert(member(i as u8).as_slice(), i as f64 / 3.0, &lim);
            }
            let mut buf = Vec::new();
            z.encode(&mut buf);
            for (at, byte) in flips {
                let i = at % buf.len();
                buf[i] ^= byte;
            }
            buf.truncate(buf.len() - cut % 3);
            if let Some(z) = ZSet::decode(&buf, &lim) {
                z.check_invariants();
            }
        }

        #[test]
        fn garbage_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
            if let Some(z) = ZSet::decode(&bytes, &limits(4)) {
                z.check_invariants();
            }
        }
    }

    #[test]
    fn layout_stays_small() {
        // A ZSet sits inside every `Object`.
        assert_eq!(std::mem::size_of::<ZSet>(), 24);
        // A skiplist node of one level (3 in 4 are) with a 13-byte member ("element:12345"):
        // 40 bytes, no allocation of its own.
        assert_eq!(Slab::record_bytes(1, 13), 40);
        assert_eq!(Slab::record_bytes(2, 13), 48);
    }

    #[test]
    fn conversion_by_entries_and_value_length() {
        let lim = EncodingLimits::default();
        let mut z = ZSet::new(&lim);
        for i in 0..128 {
            z.insert(format!("m{i}").as_bytes(), i as f64, &lim);
        }
        assert_eq!(z.encoding(), "listpack");
        z.insert(b"one-more", 0.5, &lim);
        assert_eq!(z.encoding(), "skiplist");
        // Never back, even when small again.
        z.remove_range(0..120, |_, _| {});
        assert_eq!(z.encoding(), "skiplist");
        z.check_invariants();

        let mut z = ZSet::new(&lim);
        z.insert(&[b'x'; 64], 1.0, &lim);
        assert_eq!(z.encoding(), "listpack");
        z.insert(&[b'y'; 65], 1.0, &lim);
        assert_eq!(z.encoding(), "skiplist");
    }

    #[test]
    fn listpack_is_compact() {
        let lim = EncodingLimits::default();
        let mut z = ZSet::new(&lim);
        for i in 0..10 {
            z.insert(format!("member:{i}").as_bytes(), i as f64, &lim);
        }
        // 4-byte count + 10 × (1 header + 1 score + 8 member bytes).
        assert_eq!(z.mem_bytes(), 4 + 10 * 10);
        // A float score costs its 8 bytes.
        z.insert(b"member:0", 0.5, &lim);
        assert_eq!(z.mem_bytes(), 4 + 10 * 10 + 7);
        assert_eq!(z.score(b"member:0"), Some(0.5));
        // -0 loses its sign in a listpack, as in Redis's; a skiplist keeps it.
        z.insert(b"neg", -0.0, &lim);
        assert!(z.score(b"neg").unwrap().is_sign_positive());
        let mut big = ZSet::new(&limits(0));
        big.insert(b"neg", -0.0, &limits(0));
        assert!(big.score(b"neg").unwrap().is_sign_negative());
    }

    #[test]
    fn large_set_ranks_and_scan() {
        let lim = EncodingLimits::default();
        let mut z = ZSet::new(&lim);
        let n = 20_000;
        for i in 0..n {
            z.insert(format!("m{i:06}").as_bytes(), (i / 3) as f64, &lim);
        }
        z.check_invariants();
        assert_eq!(z.rank(b"m010000"), Some((10_000, 3333.0)));
        assert_eq!(z.at_rank(12_345).unwrap().0, b"m012345");
        let r = ScoreRange {
            min: 100.0,
            min_exclusive: true,
            max: 200.0,
            max_exclusive: false,
        };
        assert_eq!(r.ranks(&z), 303..603);
        z.remove_range(0..n, |_, _| {});
        assert!(z.is_empty());
        z.check_invariants();
        // SCAN while two thirds of the members go (the arena compacts midway): every member
        // present for the whole scan is returned.
        for k in 0..n {
            z.insert(format!("k{k}").as_bytes(), k as f64, &lim);
        }
        let mut doomed: Vec<Vec<u8>> = (0..n)
            .filter(|k| k % 3 != 0)
            .map(|k| format!("k{k}").into_bytes())
            .collect();
        let mut cursor = 0;
        let mut seen = std::collections::HashSet::new();
        for calls in 0.. {
            assert!(calls < 10_000, "scan terminates");
            cursor = z.scan(cursor, 100, |m, _| {
                seen.insert(m.to_vec());
            });
            for _ in 0..200 {
                if let Some(m) = doomed.pop() {
                    assert!(z.remove(&m).is_some());
                }
            }
            if cursor == 0 {
                break;
            }
        }
        z.check_invariants();
        assert_eq!(z.len(), n.div_ceil(3));
        for (m, _) in z.iter() {
            assert!(
                seen.contains(m),
                "survivor {:?} returned",
                String::from_utf8_lossy(m)
            );
        }
    }

    #[test]
    fn upsert_looks_up_once_and_may_decline() {
        let lim = limits(2);
        let mut z = ZSet::new(&lim);
        let mut seen = Vec::new();
        // Declined: nothing added.
        assert_eq!(
            z.upsert(b"a", &lim, |cur| {
                seen.push(cur);
                None
            }),
            None
        );
        assert!(z.is_empty());
        for (m, s) in [(b"a", 1.0), (b"b", 2.0)] {
            assert_eq!(z.upsert(m, &lim, |_| Some(s)), None);
        }
        assert_eq!(z.encoding(), "listpack");
        // The third member converts, from inside `upsert`.
        assert_eq!(
            z.upsert(b"c", &lim, |cur| {
                seen.push(cur);
                Some(0.5)
            }),
            None
        );
        assert_eq!(z.encoding(), "skiplist");
        assert_eq!(
            z.upsert(b"a", &lim, |cur| {
                seen.push(cur);
                Some(cur? + 10.0)
            }),
            Some(1.0)
        );
        assert_eq!(
            z.upsert(b"b", &lim, |cur| {
                seen.push(cur);
                None
            }),
            Some(2.0)
        );
        assert_eq!(seen, [None, None, Some(1.0), Some(2.0)]);
        let all: Vec<_> = z.iter().map(|(m, s)| (m.to_vec(), s)).collect();
        assert_eq!(
            all,
            [
                (b"c".to_vec(), 0.5),
                (b"b".to_vec(), 2.0),
                (b"a".to_vec(), 11.0)
            ]
        );
        z.check_invariants();
    }

    #[test]
    fn score_moves_in_a_large_set_agree_with_model() {
        // ZADD's benchmark shape: random members get random scores, so most updates move the
        // node (both descents at once), some keep it (in place); few distinct scores make ties,
        // ordered by member.
        let lim = limits(0);
        let mut z = ZSet::new(&lim);
        let mut model = Model::default();
        let mut rng = crate::evict::Rng::new(11);
        for step in 0..60_000 {
            let m = format!("element:{}", rng.below(3_000)).into_bytes();
            let s = if step % 3 == 0 {
                rng.below(50) as f64
            } else {
                rng.below(100_000) as f64 / 7.0
            };
            assert_eq!(z.insert(&m, s, &lim), model.0.insert(m, s));
            if step % 10_000 == 0 {
                z.check_invariants();
            }
        }
        check_against(&z, &model, &[]);
    }

    #[test]
    fn sequence_numbers_running_out_renumber_the_slab() {
        let lim = limits(0);
        let mut z = ZSet::new(&lim);
        for i in 0..500 {
            z.insert(format!("m{i}").as_bytes(), (i % 17) as f64, &lim);
        }
        for i in (0..500).step_by(3) {
            z.remove(format!("m{i}").as_bytes());
        }
        let Repr::Skiplist(s) = &mut z.repr else {
            panic!("skiplist")
        };
        assert!(s.holes > 0, "holes left to squeeze out");
        s.next_seq = u32::MAX - 1;
        z.insert(b"last-before", 3.0, &lim);
        z.insert(b"first-after", 3.0, &lim);
        z.check_invariants();
        let Repr::Skiplist(s) = &z.repr else {
            panic!("skiplist")
        };
        assert_eq!((s.holes, s.next_seq as usize), (0, z.len() + 1));
        let mut scanned = 0;
        let mut cursor = 0;
        loop {
            cursor = z.scan(cursor, 10, |_, _| scanned += 1);
            if cursor == 0 {
                break;
            }
        }
        assert_eq!(scanned, z.len());
    }

    #[test]
    fn random_picks() {
        let lim = limits(0);
        let mut z = ZSet::new(&lim);
        for i in 0..100 {
            z.insert(format!("{i}").as_bytes(), i as f64, &lim);
        }
        let mut rng = crate::evict::Rng::new(7);
        for count in [1, 10, 40, 99, 100, 150] {
            let v = z.random(&mut rng, count, true);
            assert_eq!(v.len(), count.min(100));
            let distinct: std::collections::HashSet<_> = v.iter().map(|p| p.0).collect();
            assert_eq!(distinct.len(), v.len());
            for (m, s) in v {
                assert_eq!(z.score(m), Some(s));
            }
        }
        let v = z.random(&mut rng, 1000, false);
        assert_eq!(v.len(), 1000);
        let distinct: std::collections::HashSet<_> = v.iter().map(|p| p.0).collect();
        assert!(distinct.len() > 50, "repeats allowed, yet spread");
    }
}
