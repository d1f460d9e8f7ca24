//! Merge rules of active-active groups (DESIGN.md §4): the per-key state every member of a group
//! keeps beside its keyspace, and the one function that merges two of them. Pure: no clock, no
//! I/O; times and versions are arguments.
//!
//! The state is a *delta-state CRDT*: a member's write produces a small [`KeyState`] (the effect)
//! that it merges into its own state and streams to its peers, which merge it into theirs.
//! [`KeyState::merge`] is a join (commutative, associative, idempotent), so members that received
//! the same effects, in any order and any number of times, hold equal states and show equal values
//! ([`KeyState::view`]). Every decision is by [`Stamp`]: the key's HLC version, then the node id.
//!
//! The rules:
//! - **Resets.** A whole-value write (SET, a list or stream write, a STORE, RESTORE, RENAME's
//!   destination) or a deletion is a *reset* of the key, last writer wins by stamp. It carries its
//!   TTL. Everything else (elements, counter contributions) is made *on top of* the reset its
//!   member had seen (its epoch) and counts only while that reset is the key's newest; a newer reset
//!   drops it. So a deletion is never undone by a write made before the deleting member's delete
//!   reached it (no resurrection), and a SET resets a counter: increments made on top of an older
//!   reset are dropped with it (observed-reset rule).
//! - **Counters** (INCR, INCRBY, DECR, DECRBY, INCRBYFLOAT): a PN-counter per member: each member's
//!   cumulative positive and negative sums, integer and float, merged by maximum; the value is the
//!   reset's value (0 if absent) plus every member's sum, so no increment is lost.
//! - **Sets, hashes, sorted sets**: per member / field, last writer wins by stamp (an SREM, HDEL or
//!   ZREM leaves an element tombstone with its stamp). A sorted set member's score is the newest
//!   write's (ZINCRBY writes the score it computed). HINCRBY/HINCRBYFLOAT add per-field counter
//!   contributions on top of the field's last HSET (or absence), as string counters do.
//! - **TTL**: a register of its own, last writer wins by stamp (so the later version's deadline);
//!   every reset writes it. An expired key is reset by whoever writes it next, at the stamp
//!   `(deadline, node 0)`, the same on every member.
//! - **Version** shown by the key: the greatest stamp merged into its state.
//!
//! - **FLUSHDB/FLUSHALL**: a reset to absent of every key of the database(s) at the flush's
//!   stamp, streamed as one effect. Members keep the newest flush per database as a floor instead
//!   of a tombstone per key: a key whose state holds nothing newer is gone, and an effect made
//!   before the flush that arrives later is cut by it (merging the floor's reset is the same
//!   join). Writes made after the flush survive it. **SWAPDB** is refused on a member: states
//!   are merged per database and key, and a swap would exchange whole databases on one member.
//!
//! Tombstones (a reset to absent, element tombstones) stay in the state until the caller knows
//! every member has them; [`KeyState::is_tombstone`] tells a collector which states are only that.
//!
//! A state that is only a reset with its TTL ([`Compact`]) needs no storage of its own: a member
//! keeps it as the key's entry (value, version, TTL, and the writer's node number).

use std::collections::BTreeMap;

/// An effect's version: HLC first, node id to break ties.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Stamp {
    pub hlc: u64,
    pub node: u64,
}

impl Stamp {
    pub const ZERO: Stamp = Stamp { hlc: 0, node: 0 };

    pub fn new(hlc: u64, node: u64) -> Self {
        Stamp { hlc, node }
    }
}

/// What a counter contribution counts on top of: the key's reset, and for a hash field the field's
/// last write (`Stamp::ZERO` for a string counter).
pub type Epoch = (Stamp, Stamp);

/// A node id as a number for stamps: the first 16 hex digits of the 40-hex-digit id.
pub fn node_number(node_id: &str) -> u64 {
    let head = &node_id[..node_id.len().min(16)];
    u64::from_str_radix(head, 16).unwrap_or_else(|_| {
        // Not hex (tests name nodes freely): a stable FNV-1a hash instead.
        head.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
            (h ^ b as u64).wrapping_mul(0x0100_0000_01b3)
        })
    })
}

/// The value a reset left.
#[derive(Clone, Debug, PartialEq)]
pub enum Base {
    /// Deleted (or never written): elements and counters start from nothing.
    Absent,
    /// A string (a counter's starting value when it parses as a number).
    Str(Vec<u8>),
    /// An empty set, hash or sorted set: its elements are written on top at the reset's stamp.
    Typed(Kind),
    /// Any other whole value (list, stream, hash with field TTLs), in the keyspace codec.
    Blob(Vec<u8>),
}

/// The collection kinds merged per element.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Kind {
    Set,
    Hash,
    ZSet,
}

/// One member's cumulative increments in one epoch; each sum only grows, so a merge takes maxima.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Count {
    pub epoch: Epoch,
    pub pos: i64,
    pub neg: i64,
    pub fpos: f64,
    pub fneg: f64,
    /// The newest increment's stamp.
    pub last: Stamp,
}

impl Count {
    fn new(epoch: Epoch) -> Self {
        Count {
            epoch,
            pos: 0,
            neg: 0,
            fpos: 0.0,
            fneg: 0.0,
            last: Stamp::ZERO,
        }
    }

    fn join(&mut self, o: &Count) {
        if o.epoch > self.epoch {
            *self = *o;
        } else if o.epoch == self.epoch {
            self.pos = self.pos.max(o.pos);
            self.neg = self.neg.max(o.neg);
            self.fpos = self.fpos.max(o.fpos);
            self.fneg = self.fneg.max(o.fneg);
            self.last = self.last.max(o.last);
        }
    }

    fn is_float(&self) -> bool {
        self.fpos != 0.0 || self.fneg != 0.0
    }
}

/// Counter contributions by member number: a few members at most, so a vector sorted by member
/// (a map's node would cost about a kilobyte per counter key).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Counts(Vec<(u64, Count)>);

impl Counts {
    pub fn new() -> Self {
        Counts(Vec::new())
    }

    pub fn get(&self, node: &u64) -> Option<&Count> {
        self.0
            .binary_search_by_key(node, |(n, _)| *n)
            .ok()
            .map(|i| &self.0[i].1)
    }

    /// Sets member `node`'s contribution.
    pub fn insert(&mut self, node: u64, c: Count) {
        match self.0.binary_search_by_key(&node, |(n, _)| *n) {
            Ok(i) => self.0[i].1 = c,
            Err(i) => self.0.insert(i, (node, c)),
        }
    }

    /// Joins `c` into member `node`'s contribution.
    pub fn join_in(&mut self, node: u64, c: &Count) {
        match self.0.binary_search_by_key(&node, |(n, _)| *n) {
            Ok(i) => self.0[i].1.join(c),
            Err(i) => self.0.insert(i, (node, *c)),
        }
    }

    pub fn retain(&mut self, mut f: impl FnMut(&u64, &mut Count) -> bool) {
        self.0.retain_mut(|(n, c)| f(n, c));
    }

    pub fn values(&self) -> impl Iterator<Item = &Count> {
        self.0.iter().map(|(_, c)| c)
    }

    pub fn iter(&self) -> impl Iterator<Item = (&u64, &Count)> {
        self.0.iter().map(|(n, c)| (n, c))
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl<'a> IntoIterator for &'a Counts {
    type Item = (&'a u64, &'a Count);
    type IntoIter = std::iter::Map<
        std::slice::Iter<'a, (u64, Count)>,
        fn(&'a (u64, Count)) -> (&'a u64, &'a Count),
    >;
    fn into_iter(self) -> Self::IntoIter {
        self.0.iter().map(|(n, c)| (n, c))
    }
}

/// An increment.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum By {
    Int(i64),
    Float(f64),
}

// Increments are never NaN (INCRBYFLOAT refuses them), so equality is an equivalence.
impl Eq for By {}

/// An element's value.
#[derive(Clone, Debug, PartialEq)]
pub enum ElemVal {
    /// Removed (SREM, HDEL, ZREM): a tombstone with its stamp.
    Gone,
    Member,
    Field(Vec<u8>),
    /// A score's bits (`f64::to_bits`), never NaN.
    Score(u64),
}

impl ElemVal {
    fn kind(&self) -> Option<Kind> {
        match self {
            ElemVal::Gone => None,
            ElemVal::Member => Some(Kind::Set),
            ElemVal::Field(_) => Some(Kind::Hash),
            ElemVal::Score(_) => Some(Kind::ZSet),
        }
    }
}

/// A set member, hash field or sorted-set member.
#[derive(Clone, Debug, PartialEq)]
pub struct Elem {
    /// The key's reset this element was written on top of.
    pub epoch: Stamp,
    /// The element's last write.
    pub stamp: Stamp,
    pub val: ElemVal,
    /// Hash-field counter contributions (HINCRBY), per member.
    pub counts: Counts,
}

impl Elem {
    /// The element's kind while it shows a value (a field with counter contributions is a hash
    /// field even when never HSET).
    fn kind(&self) -> Option<Kind> {
        let floor = (self.epoch, self.stamp);
        match self.val.kind() {
            None if self.counts.values().any(|c| c.epoch == floor) => Some(Kind::Hash),
            k => k,
        }
    }

    fn last_count(&self) -> Stamp {
        self.counts
            .values()
            .map(|c| c.last)
            .max()
            .unwrap_or_default()
    }
}

/// The time-to-live register.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Ttl {
    pub stamp: Stamp,
    /// Absolute unix ms; `None`: persistent.
    pub at: Option<u64>,
}

/// A key's merge state, or an effect (a state holding only what one write changed).
#[derive(Clone, Debug, PartialEq)]
pub struct KeyState {
    pub reset: Stamp,
    pub base: Base,
    pub ttl: Ttl,
    /// String counter contributions, per member.
    pub counts: Counts,
    pub elems: BTreeMap<Vec<u8>, Elem>,
    /// The greatest stamp ever merged: the key's version.
    pub top: Stamp,
}

impl Default for KeyState {
    fn default() -> Self {
        KeyState::new()
    }
}

/// A state that is only a reset of a value, with the TTL written with it: no counter
/// contributions, no elements, no tombstone, nothing newer merged. The common case (SET and
/// friends) keeps no separate state: the value lives in the keyspace entry, the stamp is the
/// entry's version and writer (`Entry::merge_node`), the deadline is the entry's.
/// [`KeyState::compact`] and [`Compact::expand`] go between the two forms; nothing in between
/// is lost (`merge/tests.rs` checks it).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Compact {
    pub stamp: Stamp,
    pub ttl_at: Option<u64>,
}

impl Compact {
    /// The full state, given the value the entry holds (`Base::Str` or `Base::Blob`).
    pub fn expand(self, base: Base) -> KeyState {
        KeyState::reset_effect(self.stamp, base, self.ttl_at)
    }
}

/// A stand-in for the value of a compact state the caller could not read (the entry was
/// written over or deleted): shows as a value no write leaves (an empty blob), so whatever the
/// key holds now differs from it. Only for states that are about to be reset.
pub fn unknown_base() -> Base {
    Base::Blob(Vec::new())
}

/// What a state shows: the value a member's keyspace holds for the key.
#[derive(Clone, Debug, PartialEq)]
pub enum View {
    Absent,
    Str(Vec<u8>),
    Blob(Vec<u8>),
    Set(Vec<Vec<u8>>),
    Hash(Vec<(Vec<u8>, Vec<u8>)>),
    ZSet(Vec<(Vec<u8>, f64)>),
}

impl KeyState {
    /// Nothing known: never written.
    pub fn new() -> Self {
        KeyState {
            reset: Stamp::ZERO,
            base: Base::Absent,
            ttl: Ttl::default(),
            counts: Counts::new(),
            elems: BTreeMap::new(),
            top: Stamp::ZERO,
        }
    }

    /// Merges `o` into this state (the join).
    pub fn merge(&mut self, o: &KeyState) {
        self.top = self.top.max(o.top);
        if o.reset > self.reset {
            self.reset = o.reset;
            self.base = o.base.clone();
        }
        if o.ttl.stamp > self.ttl.stamp {
            self.ttl = o.ttl;
        }
        for (n, c) in &o.counts {
            self.counts.join_in(*n, c);
        }
        for (k, e) in &o.elems {
            match self.elems.get_mut(k) {
                None => {
                    self.elems.insert(k.clone(), e.clone());
                }
                Some(m) => {
                    if (e.epoch, e.stamp) > (m.epoch, m.stamp) {
                        m.epoch = e.epoch;
                        m.stamp = e.stamp;
                        m.val = e.val.clone();
                    }
                    for (n, c) in &e.counts {
                        m.counts.join_in(*n, c);
                    }
                }
            }
        }
        self.collect();
    }

    /// Drops what can never count again: contributions and elements made on top of an older reset,
    /// field contributions made on top of an older write of their field. (Keeping them would not
    /// change the view; dropping them keeps states of members that saw the same effects equal.)
    fn collect(&mut self) {
        let reset = self.reset;
        self.counts.retain(|_, c| c.epoch >= (reset, Stamp::ZERO));
        self.elems.retain(|_, e| e.epoch >= reset);
        for e in self.elems.values_mut() {
            let floor = (e.epoch, e.stamp);
            e.counts.retain(|_, c| c.epoch >= floor);
        }
    }

    /// The compact form of this state, if it is only a reset of a string or whole value with
    /// its TTL (see [`Compact`]).
    pub fn compact(&self) -> Option<Compact> {
        let plain = matches!(self.base, Base::Str(_) | Base::Blob(_))
            && self.counts.is_empty()
            && self.elems.is_empty()
            && self.ttl.stamp == self.reset
            && self.top == self.reset;
        plain.then_some(Compact {
            stamp: self.reset,
            ttl_at: self.ttl.at,
        })
    }

    /// Whether this state shows nothing and holds only tombstones (a reset to absent, removed
    /// elements): what a collector may drop once every member has it.
    pub fn is_tombstone(&self) -> bool {
        self.view() == View::Absent
    }

    /// Number of tombstones held: a deletion, plus removed elements.
    pub fn tombstones(&self) -> usize {
        let dead_key = (self.reset != Stamp::ZERO && self.is_tombstone()) as usize;
        dead_key
            + self
                .elems
                .values()
                .filter(|e| e.val == ElemVal::Gone && e.counts.is_empty())
                .count()
    }

    // ---- Effects of local writes. Each returns the effect; the caller merges it here and
    // streams it. `at` is the write's stamp, greater than everything this state holds.

    /// A whole-value write or deletion (`Base::Absent`), with the key's TTL after it.
    pub fn reset_effect(at: Stamp, base: Base, ttl_at: Option<u64>) -> KeyState {
        KeyState {
            reset: at,
            base,
            ttl: Ttl {
                stamp: at,
                at: ttl_at,
            },
            top: at,
            ..KeyState::new()
        }
    }

    /// The key's deadline changed (EXPIRE, PERSIST, ...).
    pub fn ttl_effect(at: Stamp, ttl_at: Option<u64>) -> KeyState {
        KeyState {
            ttl: Ttl {
                stamp: at,
                at: ttl_at,
            },
            top: at,
            ..KeyState::new()
        }
    }

    /// An element written or removed on top of this state's reset.
    pub fn elem_effect(&self, at: Stamp, member: &[u8], val: ElemVal) -> KeyState {
        let mut e = KeyState {
            top: at,
            ..KeyState::new()
        };
        e.elems.insert(
            member.to_vec(),
            Elem {
                epoch: self.reset,
                stamp: at,
                val,
                counts: Counts::new(),
            },
        );
        e
    }

    /// Member `node` adds `by` to the string counter.
    pub fn incr_effect(&self, at: Stamp, node: u64, by: By) -> KeyState {
        let epoch = (self.reset, Stamp::ZERO);
        let mut c = match self.counts.get(&node) {
            Some(c) if c.epoch == epoch => *c,
            _ => Count::new(epoch),
        };
        add(&mut c, by, at);
        let mut e = KeyState {
            top: at,
            ..KeyState::new()
        };
        e.counts.insert(node, c);
        e
    }

    /// Member `node` adds `by` to hash field `field`.
    pub fn field_incr_effect(&self, at: Stamp, node: u64, field: &[u8], by: By) -> KeyState {
        let (fe, fs, val) = match self.elems.get(field) {
            Some(el) if el.epoch == self.reset => (el.epoch, el.stamp, el.val.clone()),
            _ => (self.reset, Stamp::ZERO, ElemVal::Gone),
        };
        let epoch = (fe, fs);
        let mut c = match self.elems.get(field).and_then(|el| el.counts.get(&node)) {
            Some(c) if c.epoch == epoch => *c,
            _ => Count::new(epoch),
        };
        add(&mut c, by, at);
        let mut counts = Counts::new();
        counts.insert(node, c);
        let mut e = KeyState {
            top: at,
            ..KeyState::new()
        };
        e.elems.insert(
            field.to_vec(),
            Elem {
                epoch: fe,
                stamp: fs,
                val,
                counts,
            },
        );
        e
    }

    /// The reset an expired key gets from whoever writes it next: the same stamp on every member.
    pub fn expiry_effect(deadline_hlc: u64) -> KeyState {
        KeyState::reset_effect(Stamp::new(deadline_hlc, 0), Base::Absent, None)
    }

    // ---- What the state shows.

    /// The key's deadline, if it has one and a value.
    pub fn deadline(&self) -> Option<u64> {
        self.ttl.at
    }

    /// The value members show for this key.
    pub fn view(&self) -> View {
        let live_counts: Vec<&Count> = self
            .counts
            .values()
            .filter(|c| c.epoch == (self.reset, Stamp::ZERO))
            .collect();
        match &self.base {
            Base::Str(s) => {
                if live_counts.is_empty() {
                    View::Str(s.clone())
                } else {
                    View::Str(counter_text(Some(s), live_counts.into_iter()))
                }
            }
            Base::Blob(b) => View::Blob(b.clone()),
            Base::Typed(k) => self.collection(*k),
            Base::Absent => {
                // The kind of the newest live write on top of the deletion.
                let newest_elem = self
                    .live_elems()
                    .filter_map(|(_, e)| e.kind().map(|k| (e.stamp.max(e.last_count()), k)))
                    .max();
                let newest_count = live_counts.iter().map(|c| c.last).max();
                match (newest_elem, newest_count) {
                    (None, None) => View::Absent,
                    (Some((s, k)), c) if c.is_none_or(|c| s > c) => self.collection(k),
                    _ => View::Str(counter_text(None, live_counts.into_iter())),
                }
            }
        }
    }

    fn live_elems(&self) -> impl Iterator<Item = (&Vec<u8>, &Elem)> {
        let reset = self.reset;
        self.elems.iter().filter(move |(_, e)| e.epoch == reset)
    }

    fn collection(&self, k: Kind) -> View {
        let mut set = Vec::new();
        let mut hash = Vec::new();
        let mut zset = Vec::new();
        for (m, e) in self.live_elems() {
            let floor = (e.epoch, e.stamp);
            let counts: Vec<&Count> = e.counts.values().filter(|c| c.epoch == floor).collect();
            match (&e.val, k) {
                (ElemVal::Member, Kind::Set) => set.push(m.clone()),
                (ElemVal::Score(bits), Kind::ZSet) => zset.push((m.clone(), f64::from_bits(*bits))),
                (ElemVal::Field(v), Kind::Hash) if counts.is_empty() => {
                    hash.push((m.clone(), v.clone()))
                }
                (ElemVal::Field(v), Kind::Hash) => {
                    hash.push((m.clone(), counter_text(Some(v), counts.into_iter())))
                }
                (ElemVal::Gone, Kind::Hash) if !counts.is_empty() => {
                    hash.push((m.clone(), counter_text(None, counts.into_iter())))
                }
                _ => {}
            }
        }
        match k {
            Kind::Set if !set.is_empty() => View::Set(set),
            Kind::Hash if !hash.is_empty() => View::Hash(hash),
            Kind::ZSet if !zset.is_empty() => View::ZSet(zset),
            _ => View::Absent,
        }
    }

    /// Bytes of merge metadata this state holds beyond the value itself (an estimate for INFO).
    pub fn overhead_bytes(&self) -> usize {
        let base = std::mem::size_of::<KeyState>();
        base + self.counts.len() * (8 + std::mem::size_of::<Count>())
            + self
                .elems
                .values()
                .map(|e| std::mem::size_of::<Elem>() + e.counts.len() * 48)
                .sum::<usize>()
    }
}

fn add(c: &mut Count, by: By, at: Stamp) {
    match by {
        By::Int(n) if n >= 0 => c.pos = c.pos.wrapping_add(n),
        By::Int(n) => c.neg = c.neg.wrapping_add(n.unsigned_abs() as i64),
        By::Float(f) if f >= 0.0 => c.fpos += f,
        By::Float(f) => c.fneg -= f,
    }
    c.last = c.last.max(at);
}

/// A counter's text: the starting value (absent: 0) plus every contribution, in member order (so
/// every member computes the same float sum). Integers while everything is an integer.
fn counter_text<'a>(start: Option<&[u8]>, counts: impl Iterator<Item = &'a Count>) -> Vec<u8> {
    let counts: Vec<&Count> = counts.collect();
    let start_text = start.and_then(|s| std::str::from_utf8(s).ok());
    let start_int = match start_text {
        None => Some(0i128),
        Some(t) => t.parse::<i64>().ok().map(i128::from),
    };
    if let Some(mut sum) = start_int
        && counts.iter().all(|c| !c.is_float())
    {
        for c in &counts {
            sum += c.pos as i128 - c.neg as i128;
        }
        return sum.to_string().into_bytes();
    }
    let mut sum = start_text
        .and_then(|t| t.parse::<f64>().ok())
        .unwrap_or(0.0);
    for c in &counts {
        sum += (c.pos as f64 - c.neg as f64) + (c.fpos - c.fneg);
    }
    float_text(sum).into_bytes()
}

/// A float as INCRBYFLOAT shows it: no exponent, no trailing zeros, integral values bare.
pub fn float_text(v: f64) -> String {
    if v.is_finite() && v == v.trunc() && v.abs() < 1e17 {
        return format!("{}", v as i64);
    }
    let s = format!("{v}");
    if s.contains('e') {
        format!("{v:.17}")
            .trim_end_matches('0')
            .trim_end_matches('.')
            .to_string()
    } else {
        s
    }
}

/// A local write's effect: what changed between what the state shows (`state`) and what the
/// member's keyspace holds after the write (`now`, with deadline `ttl_at`), made at stamp `at` by
/// member `node`. `counts` are the increments the write noted (`None` field: the string itself).
/// `now_ms` tells an expired state from a live one: the write after an expiry first resets the key
/// at the deadline's stamp. `None`: nothing changed.
pub fn local_effect(
    state: &KeyState,
    now: &View,
    ttl_at: Option<u64>,
    at: Stamp,
    node: u64,
    counts: &[(Option<&[u8]>, By)],
    now_ms: u64,
) -> Option<KeyState> {
    let mut work = state.clone();
    let mut eff = KeyState::new();
    let push = |work: &mut KeyState, eff: &mut KeyState, e: KeyState| {
        work.merge(&e);
        eff.merge(&e);
    };
    let expired = state.ttl.at.is_some_and(|d| d <= now_ms) && state.view() != View::Absent;
    if expired {
        let d = state.ttl.at.unwrap_or_default();
        push(
            &mut work,
            &mut eff,
            KeyState::expiry_effect(crate::hlc::version_from_parts(d, 0)),
        );
    }
    let old = work.view();
    let str_counts: Vec<By> = counts
        .iter()
        .filter(|(f, _)| f.is_none())
        .map(|(_, b)| *b)
        .collect();
    let mut reset = false;
    match (&old, now) {
        (View::Absent, View::Absent) => {}
        (_, View::Absent) => {
            push(
                &mut work,
                &mut eff,
                KeyState::reset_effect(at, Base::Absent, None),
            );
            reset = true;
        }
        (View::Absent | View::Str(_), View::Str(_)) if !str_counts.is_empty() => {
            for by in str_counts {
                let e = work.incr_effect(at, node, by);
                push(&mut work, &mut eff, e);
            }
        }
        (View::Str(a), View::Str(b)) if a == b => {}
        (_, View::Str(b)) => {
            push(
                &mut work,
                &mut eff,
                KeyState::reset_effect(at, Base::Str(b.clone()), ttl_at),
            );
            reset = true;
        }
        (View::Blob(a), View::Blob(b)) if a == b => {}
        (_, View::Blob(b)) => {
            push(
                &mut work,
                &mut eff,
                KeyState::reset_effect(at, Base::Blob(b.clone()), ttl_at),
            );
            reset = true;
        }
        (_, _) => {
            let kind = now.kind().expect("a collection");
            // A collection created where nothing was is written element by element on top of
            // the key's last reset, so two members creating it at once both keep their elements;
            // one replacing a value of another kind resets the key.
            if old != View::Absent && old.kind() != Some(kind) {
                push(
                    &mut work,
                    &mut eff,
                    KeyState::reset_effect(at, Base::Typed(kind), ttl_at),
                );
                reset = true;
            }
            let before = work.view().elements();
            let after = now.elements();
            let noted: BTreeMap<&[u8], Vec<By>> =
                counts.iter().fold(BTreeMap::new(), |mut m, (f, b)| {
                    if let Some(f) = f {
                        m.entry(*f).or_insert_with(Vec::new).push(*b);
                    }
                    m
                });
            for (m, v) in &after {
                if let Some(bys) = noted.get(m.as_slice())
                    && kind == Kind::Hash
                {
                    for by in bys {
                        let e = work.field_incr_effect(at, node, m, *by);
                        push(&mut work, &mut eff, e);
                    }
                    continue;
                }
                if before.get(m) != Some(v) {
                    let e = work.elem_effect(at, m, v.clone());
                    push(&mut work, &mut eff, e);
                }
            }
            for m in before.keys() {
                if !after.contains_key(m) {
                    let e = work.elem_effect(at, m, ElemVal::Gone);
                    push(&mut work, &mut eff, e);
                }
            }
        }
    }
    if !reset && *now != View::Absent && work.ttl.at != ttl_at {
        push(&mut work, &mut eff, KeyState::ttl_effect(at, ttl_at));
    }
    (eff != KeyState::new()).then_some(eff)
}

impl View {
    /// The collection kind, for sets, hashes and sorted sets.
    pub fn kind(&self) -> Option<Kind> {
        match self {
            View::Set(_) => Some(Kind::Set),
            View::Hash(_) => Some(Kind::Hash),
            View::ZSet(_) => Some(Kind::ZSet),
            _ => None,
        }
    }

    /// A collection's elements as element values (empty for anything else).
    fn elements(&self) -> BTreeMap<Vec<u8>, ElemVal> {
        match self {
            View::Set(ms) => ms.iter().map(|m| (m.clone(), ElemVal::Member)).collect(),
            View::Hash(fs) => fs
                .iter()
                .map(|(f, v)| (f.clone(), ElemVal::Field(v.clone())))
                .collect(),
            View::ZSet(ms) => ms
                .iter()
                .map(|(m, s)| (m.clone(), ElemVal::Score(s.to_bits())))
                .collect(),
            _ => BTreeMap::new(),
        }
    }
}

// ---- Wire form of a state (an effect on the stream, or a whole state in a full resync).
// Fields in order; numbers little-endian u64, byte strings a u32 length and the bytes.

struct W<'a>(&'a mut Vec<u8>);

impl W<'_> {
    fn n(&mut self, v: u64) {
        self.0.extend_from_slice(&v.to_le_bytes());
    }
    fn b(&mut self, v: &[u8]) {
        self.0.extend_from_slice(&(v.len() as u32).to_le_bytes());
        self.0.extend_from_slice(v);
    }
    fn s(&mut self, s: Stamp) {
        self.n(s.hlc);
        self.n(s.node);
    }
    fn count(&mut self, node: u64, c: &Count) {
        self.n(node);
        self.s(c.epoch.0);
        self.s(c.epoch.1);
        self.n(c.pos as u64);
        self.n(c.neg as u64);
        self.n(c.fpos.to_bits());
        self.n(c.fneg.to_bits());
        self.s(c.last);
    }
}

struct R<'a>(&'a [u8]);

impl<'a> R<'a> {
    fn n(&mut self) -> Option<u64> {
        let (h, t) = self.0.split_at_checked(8)?;
        self.0 = t;
        Some(u64::from_le_bytes(h.try_into().ok()?))
    }
    fn b(&mut self) -> Option<&'a [u8]> {
        let (h, t) = self.0.split_at_checked(4)?;
        let len = u32::from_le_bytes(h.try_into().ok()?) as usize;
        let (v, t) = t.split_at_checked(len)?;
        self.0 = t;
        Some(v)
    }
    fn s(&mut self) -> Option<Stamp> {
        Some(Stamp::new(self.n()?, self.n()?))
    }
    fn count(&mut self) -> Option<(u64, Count)> {
        let node = self.n()?;
        Some((
            node,
            Count {
                epoch: (self.s()?, self.s()?),
                pos: self.n()? as i64,
                neg: self.n()? as i64,
                fpos: f64::from_bits(self.n()?),
                fneg: f64::from_bits(self.n()?),
                last: self.s()?,
            },
        ))
    }
    /// A count of items, bounded by the bytes left (each item takes at least 8).
    fn len(&mut self) -> Option<usize> {
        let n = self.n()? as usize;
        (n <= self.0.len() / 8 + 1).then_some(n)
    }
}

impl KeyState {
    /// Appends the wire form.
    pub fn encode(&self, out: &mut Vec<u8>) {
        let mut w = W(out);
        w.s(self.reset);
        match &self.base {
            Base::Absent => w.n(0),
            Base::Str(s) => {
                w.n(1);
                w.b(s);
            }
            Base::Typed(k) => w.n(2 + *k as u64),
            Base::Blob(b) => {
                w.n(5);
                w.b(b);
            }
        }
        w.s(self.ttl.stamp);
        w.n(self.ttl.at.unwrap_or(u64::MAX));
        w.s(self.top);
        w.n(self.counts.len() as u64);
        for (n, c) in &self.counts {
            w.count(*n, c);
        }
        w.n(self.elems.len() as u64);
        for (m, e) in &self.elems {
            w.b(m);
            w.s(e.epoch);
            w.s(e.stamp);
            match &e.val {
                ElemVal::Gone => w.n(0),
                ElemVal::Member => w.n(1),
                ElemVal::Field(v) => {
                    w.n(2);
                    w.b(v);
                }
                ElemVal::Score(bits) => {
                    w.n(3);
                    w.n(*bits);
                }
            }
            w.n(e.counts.len() as u64);
            for (n, c) in &e.counts {
                w.count(*n, c);
            }
        }
    }

    /// Appends the wire form of `reset_effect(at, base, ttl_at)` for a string (`blob` false) or
    /// a whole value in the keyspace codec (`blob`), without building the state: a member's SET
    /// streams its effect straight from the entry.
    pub fn encode_reset(
        out: &mut Vec<u8>,
        at: Stamp,
        value: &[u8],
        blob: bool,
        ttl_at: Option<u64>,
    ) {
        let mut w = W(out);
        w.s(at);
        w.n(if blob { 5 } else { 1 });
        w.b(value);
        w.s(at);
        w.n(ttl_at.unwrap_or(u64::MAX));
        w.s(at);
        w.n(0);
        w.n(0);
    }

    /// Bytes [`KeyState::encode_reset`] appends for a value of `len` bytes.
    pub fn reset_wire_bytes(len: usize) -> usize {
        16 + 8 + 4 + len + 16 + 8 + 16 + 8 + 8
    }

    /// Reads a wire form back (`None`: malformed, never a panic).
    pub fn decode(bytes: &[u8]) -> Option<KeyState> {
        let mut r = R(bytes);
        let reset = r.s()?;
        let base = match r.n()? {
            0 => Base::Absent,
            1 => Base::Str(r.b()?.to_vec()),
            2 => Base::Typed(Kind::Set),
            3 => Base::Typed(Kind::Hash),
            4 => Base::Typed(Kind::ZSet),
            5 => Base::Blob(r.b()?.to_vec()),
            _ => return None,
        };
        let ttl = Ttl {
            stamp: r.s()?,
            at: Some(r.n()?).filter(|&t| t != u64::MAX),
        };
        let top = r.s()?;
        let mut counts = Counts::new();
        for _ in 0..r.len()? {
            let (n, c) = r.count()?;
            counts.insert(n, c);
        }
        let mut elems = BTreeMap::new();
        for _ in 0..r.len()? {
            let m = r.b()?.to_vec();
            let (epoch, stamp) = (r.s()?, r.s()?);
            let val = match r.n()? {
                0 => ElemVal::Gone,
                1 => ElemVal::Member,
                2 => ElemVal::Field(r.b()?.to_vec()),
                3 => {
                    let bits = r.n()?;
                    if f64::from_bits(bits).is_nan() {
                        return None;
                    }
                    ElemVal::Score(bits)
                }
                _ => return None,
            };
            let mut ec = Counts::new();
            for _ in 0..r.len()? {
                let (n, c) = r.count()?;
                ec.insert(n, c);
            }
            elems.insert(
                m,
                Elem {
                    epoch,
                    stamp,
                    val,
                    counts: ec,
                },
            );
        }
        if !r.0.is_empty() {
            return None;
        }
        Some(KeyState {
            reset,
            base,
            ttl,
            counts,
            elems,
            top,
        })
    }
}

#[cfg(test)]
mod tests;
