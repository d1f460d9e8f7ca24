//! Set. Compact: `intset` (sorted integers, packed at 2, 4 or 8 bytes each like Redis's). Large:
//! `hashtable` (the ordered table of `hash.rs`, one allocation per member).
//!
//! As in Redis 7.0 (which has no listpack sets), a set is an intset while every member is a
//! canonical integer (`string2ll`: no leading zeros, no '+', no "-0") and it holds at most
//! `set-max-intset-entries` members; it converts to a hashtable, never back, otherwise.

use super::EncodingLimits;
use super::hash::{Table, WholeKey, partial_shuffle, shrink_if_slack};
use crate::codec::{get_bytes, get_varint, put_bytes, put_varint};
use crate::entry::parse_canonical_i64;
use crate::evict::Rng;

const TAG_INTS: u8 = 0;
const TAG_MEMBERS: u8 = 1;

/// A set value.
#[derive(Clone)]
pub struct Set {
    repr: Repr,
}

#[derive(Clone)]
enum Repr {
    Ints(IntSet),
    Table(Box<Table<WholeKey>>),
}

/// A member as stored: an intset holds numbers, a hashtable bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Member<'a> {
    Int(i64),
    Bytes(&'a [u8]),
}

impl Member<'_> {
    /// Runs `f` on the member's bytes (an integer is formatted on the stack).
    pub fn with_bytes<R>(self, f: impl FnOnce(&[u8]) -> R) -> R {
        match self {
            Member::Int(v) => {
                let mut tmp = [0u8; 20];
                f(fmt_i64(v, &mut tmp))
            }
            Member::Bytes(b) => f(b),
        }
    }

    pub fn to_vec(self) -> Vec<u8> {
        self.with_bytes(|b| b.to_vec())
    }
}

/// Formats an i64 in decimal into `tmp`.
fn fmt_i64(v: i64, tmp: &mut [u8; 20]) -> &[u8] {
    let mut n = v.unsigned_abs();
    let mut i = tmp.len();
    loop {
        i -= 1;
        tmp[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    if v < 0 {
        i -= 1;
        tmp[i] = b'-';
    }
    &tmp[i..]
}

impl Default for Set {
    fn default() -> Self {
        Set {
            repr: Repr::Ints(IntSet::default()),
        }
    }
}

impl std::fmt::Debug for Set {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Set")
            .field("encoding", &self.encoding())
            .field("len", &self.len())
            .finish()
    }
}

/// Equal when they hold the same members, whatever their encodings.
impl PartialEq for Set {
    fn eq(&self, other: &Self) -> bool {
        self.len() == other.len() && self.iter().all(|m| other.contains_member(m))
    }
}

impl Set {
    /// An empty set; it starts as an intset, as Redis's `SINTERSTORE`/`SUNIONSTORE` results do.
    pub fn new(_limits: &EncodingLimits) -> Self {
        Set::default()
    }

    pub fn len(&self) -> usize {
        match &self.repr {
            Repr::Ints(s) => s.len(),
            Repr::Table(t) => t.len(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Heap bytes held (running total, O(1)).
    pub fn mem_bytes(&self) -> usize {
        match &self.repr {
            Repr::Ints(s) => s.data.capacity(),
            Repr::Table(t) => t.mem_bytes(),
        }
    }

    /// `OBJECT ENCODING` name.
    pub fn encoding(&self) -> &'static str {
        match &self.repr {
            Repr::Ints(_) => "intset",
            Repr::Table(_) => "hashtable",
        }
    }

    pub fn contains(&self, member: &[u8]) -> bool {
        match &self.repr {
            Repr::Ints(s) => parse_canonical_i64(member).is_some_and(|v| s.search(v).is_ok()),
            Repr::Table(t) => t.find(member).is_ok(),
        }
    }

    /// Membership of a member taken from another set (no formatting when both are intsets).
    pub fn contains_member(&self, m: Member<'_>) -> bool {
        match (&self.repr, m) {
            (Repr::Ints(s), Member::Int(v)) => s.search(v).is_ok(),
            _ => m.with_bytes(|b| self.contains(b)),
        }
    }

    /// Adds `member`; returns true if it is new. Converts to a hashtable for a non-integer member
    /// or when the count exceeds `set-max-intset-entries`.
    pub fn insert(&mut self, member: &[u8], limits: &EncodingLimits) -> bool {
        if let Repr::Ints(s) = &mut self.repr {
            if let Some(v) = parse_canonical_i64(member) {
                if !s.insert(v) {
                    return false;
                }
                if s.len() > limits.set_max_intset_entries {
                    self.convert(0);
                }
                return true;
            }
            self.convert(1);
        }
        let Repr::Table(t) = &mut self.repr else {
            unreachable!("converted above")
        };
        if t.find(member).is_ok() {
            return false;
        }
        t.insert_new(member.into());
        true
    }

    /// Adds a member taken from another set.
    pub fn insert_member(&mut self, m: Member<'_>, limits: &EncodingLimits) -> bool {
        m.with_bytes(|b| self.insert(b, limits))
    }

    /// Removes `member`; returns true if it was there.
    pub fn remove(&mut self, member: &[u8]) -> bool {
        match &mut self.repr {
            Repr::Ints(s) => parse_canonical_i64(member).is_some_and(|v| s.remove(v)),
            Repr::Table(t) => t.remove(member).is_some(),
        }
    }

    /// Every member: ascending for an intset, hash order for a hashtable.
    pub fn iter(&self) -> Iter<'_> {
        match &self.repr {
            Repr::Ints(s) => Iter::Ints(s, 0),
            Repr::Table(t) => Iter::Table(Box::new(t.iter())),
        }
    }

    /// One uniformly random member.
    pub fn random_member(&self, rng: &mut Rng) -> Option<Member<'_>> {
        if self.is_empty() {
            return None;
        }
        Some(match &self.repr {
            Repr::Ints(s) => Member::Int(s.get(rng.below(s.len()))),
            Repr::Table(t) => Member::Bytes(t.item(t.random_pos(rng))),
        })
    }

    /// Removes and returns one uniformly random member.
    pub fn pop_random(&mut self, rng: &mut Rng) -> Option<Vec<u8>> {
        if self.is_empty() {
            return None;
        }
        match &mut self.repr {
            Repr::Ints(s) => {
                let i = rng.below(s.len());
                let v = s.get(i);
                s.remove_at(i);
                Some(Member::Int(v).to_vec())
            }
            Repr::Table(t) => {
                let p = t.random_pos(rng);
                Some(t.remove_at(p).into_vec())
            }
        }
    }

    /// `count` distinct random members, in no particular order; every member if `count >= len`.
    pub fn random_distinct(&self, count: usize, rng: &mut Rng) -> Vec<Member<'_>> {
        match &self.repr {
            Repr::Table(t) if count.saturating_mul(3) <= t.len() => t
                .random_distinct_positions(count, rng)
                .into_iter()
                .map(|p| Member::Bytes(t.item(p)))
                .collect(),
            _ => {
                let mut all: Vec<_> = self.iter().collect();
                partial_shuffle(&mut all, count, rng);
                all
            }
        }
    }

    /// SSCAN: calls `f` on about `count` members from `cursor` on and returns the next cursor (0
    /// when done). An intset is returned whole with cursor 0, as Redis does; a hashtable scan
    /// returns every member present for the whole scan (see `Table::scan`).
    pub fn scan<'a>(&'a self, cursor: u64, count: usize, mut f: impl FnMut(Member<'a>)) -> u64 {
        match &self.repr {
            Repr::Ints(_) => {
                self.iter().for_each(f);
                0
            }
            Repr::Table(t) => t.scan(cursor, count, |m| f(Member::Bytes(m))),
        }
    }

    /// Appends the value's serialized form: a tag, `varint count`, then for an intset the members
    /// ascending as zigzag varints, otherwise the members as length-prefixed bytes.
    pub fn encode(&self, out: &mut Vec<u8>) {
        match &self.repr {
            Repr::Ints(s) => {
                out.push(TAG_INTS);
                put_varint(out, s.len() as u64);
                for i in 0..s.len() {
                    let v = s.get(i);
                    put_varint(out, ((v << 1) ^ (v >> 63)) as u64);
                }
            }
            Repr::Table(t) => {
                out.push(TAG_MEMBERS);
                put_varint(out, t.len() as u64);
                for m in t.iter() {
                    put_bytes(out, m);
                }
            }
        }
    }

    /// Parses a serialized form; `None` if malformed (truncated, trailing bytes, empty, or a
    /// member given twice). The encoding follows `limits`, as when Redis loads a set.
    pub fn decode(b: &[u8], limits: &EncodingLimits) -> Option<Self> {
        let (&tag, rest) = b.split_first()?;
        let (count, mut rest) = get_varint(rest)?;
        // Each member takes at least one byte: bounds the work before anything is allocated.
        if count == 0 || count > rest.len() as u64 {
            return None;
        }
        let mut s = Set::new(limits);
        match tag {
            TAG_INTS => {
                let mut prev: Option<i64> = None;
                for _ in 0..count {
                    let (z, r) = get_varint(rest)?;
                    rest = r;
                    let v = ((z >> 1) as i64) ^ -((z & 1) as i64);
                    if prev.is_some_and(|p| p >= v) {
                        return None;
                    }
                    prev = Some(v);
                    let mut tmp = [0u8; 20];
                    s.insert(fmt_i64(v, &mut tmp), limits);
                }
            }
            TAG_MEMBERS => {
                for _ in 0..count {
                    let (m, r) = get_bytes(rest)?;
                    rest = r;
                    if !s.insert(m, limits) {
                        return None;
                    }
                }
            }
            _ => return None,
        }
        rest.is_empty().then_some(s)
    }

    /// `mem_bytes` recomputed from scratch (tests compare it with the running total).
    pub fn recount_mem_bytes(&self) -> usize {
        match &self.repr {
            Repr::Ints(s) => s.data.capacity(),
            Repr::Table(t) => t.recount_mem_bytes(),
        }
    }

    /// Panics if an internal invariant is broken (tests).
    pub fn check_invariants(&self) {
        match &self.repr {
            Repr::Ints(s) => {
                if !s.data.is_empty() {
                    assert!(matches!(s.width(), 2 | 4 | 8));
                    assert_eq!((s.data.len() - 1) % s.width() as usize, 0);
                    assert!(s.len() > 0, "an empty intset is an empty buffer");
                }
                for i in 1..s.len() {
                    assert!(s.get(i - 1) < s.get(i), "intset not strictly ascending");
                }
            }
            Repr::Table(t) => t.check_invariants(),
        }
        assert_eq!(self.mem_bytes(), self.recount_mem_bytes());
    }

    /// Moves the members to a hashtable sized for `extra` more.
    fn convert(&mut self, extra: usize) {
        let Repr::Ints(s) = &self.repr else {
            return;
        };
        let mut t = Table::with_capacity(s.len() + extra);
        for i in 0..s.len() {
            t.insert_new(Member::Int(s.get(i)).to_vec().into_boxed_slice());
        }
        self.repr = Repr::Table(Box::new(t));
    }
}

/// Iterator over a set's members.
pub enum Iter<'a> {
    Ints(&'a IntSet, usize),
    Table(Box<dyn Iterator<Item = &'a [u8]> + 'a>),
}

impl<'a> Iterator for Iter<'a> {
    type Item = Member<'a>;

    fn next(&mut self) -> Option<Member<'a>> {
        match self {
            Iter::Ints(s, i) => {
                if *i >= s.len() {
                    return None;
                }
                *i += 1;
                Some(Member::Int(s.get(*i - 1)))
            }
            Iter::Table(it) => it.next().map(Member::Bytes),
        }
    }
}

/// Sorted distinct integers in one buffer: byte 0 is the width (2, 4 or 8: the smallest that holds
/// every member; widening rewrites them all, as Redis's intset upgrade does), then each member
/// little-endian in that many bytes. An empty intset is an empty buffer. Keeping the width in the
/// buffer keeps `Set` at 24 bytes, which is what sizes every key's `Object`.
#[derive(Clone, Debug, Default)]
pub struct IntSet {
    data: Vec<u8>,
}

fn width_of(v: i64) -> u8 {
    if i16::try_from(v).is_ok() {
        2
    } else if i32::try_from(v).is_ok() {
        4
    } else {
        8
    }
}

impl IntSet {
    fn width(&self) -> u8 {
        self.data.first().copied().unwrap_or(2)
    }

    fn len(&self) -> usize {
        self.data.len().saturating_sub(1) / self.width() as usize
    }

    fn get(&self, i: usize) -> i64 {
        let w = self.width() as usize;
        let b = &self.data[1 + i * w..1 + i * w + w];
        match w {
            2 => i16::from_le_bytes([b[0], b[1]]) as i64,
            4 => i32::from_le_bytes([b[0], b[1], b[2], b[3]]) as i64,
            _ => i64::from_le_bytes(b.try_into().expect("8 bytes")),
        }
    }

    fn search(&self, v: i64) -> Result<usize, usize> {
        if width_of(v) > self.width() {
            // Wider than every member: beyond one end.
            return Err(if v < 0 { 0 } else { self.len() });
        }
        let (mut lo, mut hi) = (0, self.len());
        while lo < hi {
            let mid = (lo + hi) / 2;
            match self.get(mid).cmp(&v) {
                std::cmp::Ordering::Less => lo = mid + 1,
                std::cmp::Ordering::Greater => hi = mid,
                std::cmp::Ordering::Equal => return Ok(mid),
            }
        }
        Err(lo)
    }

    fn insert(&mut self, v: i64) -> bool {
        let w = width_of(v);
        if self.data.is_empty() {
            self.data.reserve_exact(1 + w as usize);
            self.data.push(w);
        } else if w > self.width() {
            let n = self.len();
            let mut data = Vec::with_capacity(1 + (n + 1) * w as usize);
            data.push(w);
            for i in 0..n {
                push_int(&mut data, self.get(i), w);
            }
            self.data = data;
        }
        let Err(pos) = self.search(v) else {
            return false;
        };
        let w = self.width();
        let mut tmp = Vec::with_capacity(w as usize);
        push_int(&mut tmp, v, w);
        let at = 1 + pos * w as usize;
        self.data.reserve_exact(w as usize);
        self.data.splice(at..at, tmp);
        true
    }

    fn remove(&mut self, v: i64) -> bool {
        match self.search(v) {
            Ok(i) => {
                self.remove_at(i);
                true
            }
            Err(_) => false,
        }
    }

    fn remove_at(&mut self, i: usize) {
        let w = self.width() as usize;
        self.data.drain(1 + i * w..1 + i * w + w);
        if self.data.len() == 1 {
            self.data = Vec::new();
        } else {
            shrink_if_slack(&mut self.data);
        }
    }
}

fn push_int(out: &mut Vec<u8>, v: i64, width: u8) {
    match width {
        2 => out.extend_from_slice(&(v as i16).to_le_bytes()),
        4 => out.extend_from_slice(&(v as i32).to_le_bytes()),
        _ => out.extend_from_slice(&v.to_le_bytes()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::evict::Rng;
    use proptest::prelude::*;

    fn limits(entries: usize) -> EncodingLimits {
        EncodingLimits {
            set_max_intset_entries: entries,
            ..EncodingLimits::default()
        }
    }

    fn members(s: &Set) -> Vec<Vec<u8>> {
        s.iter().map(Member::to_vec).collect()
    }

    #[test]
    fn intset_widens_and_stays_sorted() {
        let l = limits(512);
        let mut s = Set::new(&l);
        for v in [
            "5",
            "-3",
            "70000",
            "-9223372036854775808",
            "9223372036854775807",
            "5",
        ] {
            s.insert(v.as_bytes(), &l);
        }
        assert_eq!(s.encoding(), "intset");
        assert_eq!(
            members(&s),
            [
                "-9223372036854775808",
                "-3",
                "5",
                "70000",
                "9223372036854775807"
            ]
            .map(|m| m.as_bytes().to_vec())
        );
        assert!(s.contains(b"70000"));
        assert!(!s.contains(b"070000"));
        assert!(s.remove(b"-3"));
        assert!(!s.remove(b"-3"));
        assert!(!s.remove(b"abc"));
        s.check_invariants();
        // A member wider than all others is found absent without panicking.
        let mut small = Set::new(&l);
        small.insert(b"1", &l);
        assert!(!small.contains(b"1000000"));
        assert!(!small.contains(b"-1000000"));
    }

    #[test]
    fn small_intsets_are_one_tight_buffer() {
        let l = limits(512);
        let mut s = Set::new(&l);
        for v in 0..10 {
            s.insert(v.to_string().as_bytes(), &l);
        }
        assert_eq!(s.mem_bytes(), 1 + 10 * 2);
        s.insert(b"100000", &l);
        assert_eq!(s.mem_bytes(), 1 + 11 * 4, "widened to 4 bytes");
        assert!(std::mem::size_of::<Set>() <= 24);
    }

    #[test]
    fn non_integers_and_counts_convert_to_a_hashtable() {
        let l = limits(3);
        let mut s = Set::new(&l);
        for v in ["1", "2", "3"] {
            s.insert(v.as_bytes(), &l);
        }
        assert_eq!(s.encoding(), "intset");
        s.insert(b"4", &l);
        assert_eq!(s.encoding(), "hashtable");
        for m in ["1", "2", "3", "4"] {
            assert!(s.contains(m.as_bytes()));
        }
        let mut s = Set::new(&l);
        s.insert(b"1", &l);
        s.insert(b"-0", &l);
        assert_eq!(s.encoding(), "hashtable");
        assert!(s.contains(b"1") && s.contains(b"-0"));
        // Never back: removing the string leaves a hashtable.
        s.remove(b"-0");
        assert_eq!(s.encoding(), "hashtable");
        // A zero limit: even one integer converts (as Redis does).
        let l0 = limits(0);
        let mut s = Set::new(&l0);
        s.insert(b"1", &l0);
        assert_eq!(s.encoding(), "hashtable");
    }

    #[test]
    fn pops_and_random_picks() {
        for l in [limits(512), limits(0)] {
            let mut s = Set::new(&l);
            for i in 0..90 {
                s.insert(i.to_string().as_bytes(), &l);
            }
            let mut rng = Rng::new(3);
            let mut seen = std::collections::HashSet::new();
            for _ in 0..3000 {
                seen.insert(s.random_member(&mut rng).unwrap().to_vec());
            }
            assert_eq!(seen.len(), 90, "{}", s.encoding());
            for count in [1, 29, 31, 90, 500] {
                let picks = s.random_distinct(count, &mut rng);
                let d: std::collections::HashSet<_> = picks.iter().map(|m| m.to_vec()).collect();
                assert_eq!(picks.len(), count.min(90));
                assert_eq!(d.len(), picks.len());
            }
            let mut popped = std::collections::HashSet::new();
            while let Some(m) = s.pop_random(&mut rng) {
                assert!(popped.insert(m));
                s.check_invariants();
            }
            assert_eq!(popped.len(), 90);
        }
    }

    #[test]
    fn codec_round_trips_both_encodings() {
        let l = limits(512);
        let mut ints = Set::new(&l);
        for v in ["-70000", "1", "2", "9223372036854775807"] {
            ints.insert(v.as_bytes(), &l);
        }
        let mut strs = Set::new(&l);
        for v in ["a", "1", ""] {
            strs.insert(v.as_bytes(), &l);
        }
        for s in [&ints, &strs] {
            let mut out = Vec::new();
            s.encode(&mut out);
            let back = Set::decode(&out, &l).unwrap();
            assert_eq!(&back, s);
            assert_eq!(back.encoding(), s.encoding());
            assert!(Set::decode(&out[..out.len() - 1], &l).is_none());
            let mut longer = out.clone();
            longer.push(1);
            assert!(Set::decode(&longer, &l).is_none());
        }
        // Too many for an intset under tighter limits.
        let mut out = Vec::new();
        ints.encode(&mut out);
        assert_eq!(
            Set::decode(&out, &limits(2)).unwrap().encoding(),
            "hashtable"
        );
        // Unsorted or duplicate integers, duplicate members, unknown tag, empty.
        assert!(Set::decode(&[TAG_INTS, 2, 4, 2], &l).is_none());
        assert!(Set::decode(&[TAG_INTS, 2, 2, 2], &l).is_none());
        assert!(Set::decode(&[TAG_MEMBERS, 2, 1, b'a', 1, b'a'], &l).is_none());
        assert!(Set::decode(&[9, 1, 2], &l).is_none());
        assert!(Set::decode(&[TAG_MEMBERS, 0], &l).is_none());
    }

    #[test]
    fn scan_returns_every_member() {
        let l = limits(0);
        let mut s = Set::new(&l);
        for i in 0..500 {
            s.insert(format!("m{i}").as_bytes(), &l);
        }
        let mut seen = std::collections::HashSet::new();
        let mut cursor = 0;
        for _ in 0..1000 {
            cursor = s.scan(cursor, 7, |m| {
                seen.insert(m.to_vec());
            });
            if cursor == 0 {
                break;
            }
        }
        assert_eq!(cursor, 0);
        assert_eq!(seen.len(), 500);
    }

    #[derive(Debug, Clone)]
    enum Op {
        Add(i16, bool),
        Rem(i16, bool),
        Pop(u64),
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            4 => (any::<i16>(), any::<bool>()).prop_map(|(v, s)| Op::Add(v, s)),
            2 => (any::<i16>(), any::<bool>()).prop_map(|(v, s)| Op::Rem(v, s)),
            1 => any::<u64>().prop_map(Op::Pop),
        ]
    }

    fn member(v: i16, string: bool) -> Vec<u8> {
        // Spread over all widths; `string` gives a non-integer member.
        let n = (v as i64) * 100_003_579;
        if string {
            format!("s{}", v % 50)
        } else {
            (n % 3_000_000_000).to_string()
        }
        .into_bytes()
    }

    proptest! {
        #[test]
        fn matches_a_model_and_counts_memory_exactly(
            ops in proptest::collection::vec(op(), 1..400),
            entries in 0usize..64,
        ) {
            let l = limits(entries);
            let mut s = Set::new(&l);
            let mut model = std::collections::BTreeSet::new();
            for o in ops {
                match o {
                    Op::Add(v, st) => {
                        let m = member(v % 60, st);
                        prop_assert_eq!(s.insert(&m, &l), model.insert(m));
                    }
                    Op::Rem(v, st) => {
                        let m = member(v % 60, st);
                        prop_assert_eq!(s.remove(&m), model.remove(&m));
                    }
                    Op::Pop(seed) => {
                        let got = s.pop_random(&mut Rng::new(seed));
                        prop_assert_eq!(got.is_some(), !model.is_empty());
                        if let Some(m) = got {
                            prop_assert!(model.remove(&m));
                        }
                    }
                }
                prop_assert_eq!(s.mem_bytes(), s.recount_mem_bytes());
            }
            s.check_invariants();
            prop_assert_eq!(s.len(), model.len());
            for m in &model {
                prop_assert!(s.contains(m));
            }
            if !s.is_empty() {
                let mut out = Vec::new();
                s.encode(&mut out);
                prop_assert_eq!(Set::decode(&out, &l), Some(s));
            }
        }

        #[test]
        fn decode_never_panics_on_garbage(b in proptest::collection::vec(any::<u8>(), 0..200)) {
            if let Some(s) = Set::decode(&b, &EncodingLimits::default()) {
                s.check_invariants();
            }
        }

        #[test]
        fn decode_never_panics_on_damaged_encodings(
            n in 1i64..40,
            strings in any::<bool>(),
            flips in proptest::collection::vec((any::<usize>(), any::<u8>()), 1..4),
            cut in any::<usize>(),
        ) {
            let l = limits(512);
            let mut s = Set::new(&l);
            for i in 0..n {
                let m = if strings { format!("m{i}") } else { (i * 99_991).to_string() };
                s.insert(m.as_bytes(), &l);
            }
            let mut out = Vec::new();
            s.encode(&mut out);
            for (at, b) in flips {
                let i = at % out.len();
                out[i] = b;
            }
            out.truncate(out.len() - cut % 3);
            if let Some(back) = Set::decode(&out, &l) {
                back.check_invariants();
            }
        }
    }
}
