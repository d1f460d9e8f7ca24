//! The backlog: a bounded ring of the most recent replication stream bytes, addressed by offset.
//! A replica that reconnects continues from here when its offset is still held; a primary's links
//! read what they send from here (so a replica behind costs no copy of its own), and a replica
//! keeps one at its primary's offsets so that, promoted, it can serve its former siblings.
//!
//! The bytes live in fixed-size chunks ([`CHUNK_BYTES`]): an append copies into the last chunk
//! and takes a new one only when it is full, and the oldest chunk, once every byte of it is past
//! the capacity, is kept as the next new one. So the backlog never moves what it holds (a ring
//! that doubles would copy all of it, into freshly faulted pages, at every doubling), and once
//! full it allocates nothing: a busy stream (the append-only log reads every write from here)
//! costs one copy in and one copy out per byte.

use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};

/// Default `repl-backlog-size`: a replica away for 5 s under 50,000 writes/s of small values
/// (about 120 bytes of stream each) resumes without a full copy.
pub const BACKLOG_BYTES_DEFAULT: usize = 64 * 1024 * 1024;

/// Bytes past its capacity the backlog keeps for a reader that pinned its position (the
/// append-only log's writer, which must see every byte: one that fell out would have to compact
/// the whole log). Past this the pin gives way and the reader falls behind.
pub const PINNED_EXTRA_BYTES_MAX: usize = 64 * 1024 * 1024;

/// What a lean backlog keeps (see [`Backlog::set_lean`]): Redis's default `repl-backlog-size`.
pub const LEAN_BYTES: usize = 1024 * 1024;

/// Bytes of one chunk of the backlog's storage (the backlog holds at most its capacity plus one
/// chunk of memory, and one spare).
pub const CHUNK_BYTES: usize = 64 * 1024;

#[derive(Debug)]
pub struct Backlog {
    /// The storage: the stream bytes held start at `chunks[0][head]` and run for `len` bytes.
    chunks: VecDeque<Box<[u8]>>,
    head: usize,
    len: usize,
    capacity: usize,
    /// Replication offset of the first byte held.
    start_offset: u64,
    /// A chunk the front gave up, for the back's next one.
    spare: Option<Box<[u8]>>,
    /// Bytes from this offset on are kept past the capacity (up to
    /// [`PINNED_EXTRA_BYTES_MAX`] more) until the reader that pinned them moves on.
    pinned: Option<u64>,
    /// Keep at most [`LEAN_BYTES`] (past a pin) whatever the capacity: no replica reads here.
    lean: bool,
    /// The address the next appended byte goes to (0 when unknown), published after every
    /// append for writers to prefetch ([`Backlog::tail_hint`]). Only a hint: nothing reads
    /// through it.
    tail: Arc<AtomicUsize>,
}

impl Backlog {
    pub fn new(capacity: usize, end_offset: u64) -> Self {
        Backlog {
            chunks: VecDeque::new(),
            head: 0,
            len: 0,
            capacity: capacity.max(1),
            start_offset: end_offset,
            spare: None,
            pinned: None,
            lean: false,
            tail: Arc::default(),
        }
    }

    /// Where the next appended byte goes, kept up to date by every append: a hint for a writer
    /// about to append to prefetch (`shoal_keyspace::write_log::EffectSink::prefetch_tail`).
    pub fn tail_hint(&self) -> Arc<AtomicUsize> {
        self.tail.clone()
    }

    /// Publishes the next byte's address (see [`Backlog::tail_hint`]).
    fn publish_tail(&self) {
        let tail = self.head + self.len;
        let (idx, at) = (tail / CHUNK_BYTES, tail % CHUNK_BYTES);
        let addr = match self.chunks.get(idx).or(self.spare.as_ref()) {
            Some(c) => c.as_ptr() as usize + at,
            None => 0,
        };
        self.tail.store(addr, Relaxed);
    }

    /// A lean backlog keeps at most [`LEAN_BYTES`] (and what a pin holds) whatever its capacity:
    /// for a node whose only reader is its append-only log's writer, which pins what it has not
    /// read. Redis keeps no backlog at all until a replica attaches; a lean one costs a fresh node
    /// with `appendonly yes` one megabyte instead of faulting in `repl-backlog-size` (64 MB) page
    /// by page under its first writes. Turned off (for good) when a replica may read.
    pub fn set_lean(&mut self, lean: bool) {
        self.lean = lean;
        self.drop_front(self.excess(0));
    }

    pub fn is_lean(&self) -> bool {
        self.lean
    }

    /// The bytes kept when no pin holds more: the capacity, or [`LEAN_BYTES`] when lean.
    fn kept(&self) -> usize {
        if self.lean {
            self.capacity.min(LEAN_BYTES)
        } else {
            self.capacity
        }
    }

    /// Keeps the bytes from `offset` on past the capacity (see [`PINNED_EXTRA_BYTES_MAX`]) until
    /// the next call; `None` lets the capacity alone decide again. The append-only log's writer
    /// pins where it reads, so a burst of writes faster than it never pushes its bytes out.
    pub fn pin(&mut self, offset: Option<u64>) {
        self.pinned = offset;
        self.drop_front(self.excess(0));
    }

    /// How many of the oldest bytes must go before `incoming` more are appended: what passes the
    /// capacity, less what the pin keeps, and at least what passes the pin's own limit.
    fn excess(&self, incoming: usize) -> usize {
        let total = self.len + incoming;
        let over = total.saturating_sub(self.kept());
        let Some(pin) = self.pinned else {
            return over.min(self.len);
        };
        // A pin before the first byte held is stale (the reader already lost its place).
        let free = if pin >= self.start_offset {
            ((pin - self.start_offset) as usize).min(self.len)
        } else {
            self.len
        };
        let hard = total.saturating_sub(self.capacity.saturating_add(PINNED_EXTRA_BYTES_MAX));
        over.min(free).max(hard).min(self.len)
    }

    /// Offset just past the last byte (Redis's `master_repl_offset`).
    pub fn end_offset(&self) -> u64 {
        self.start_offset + self.len as u64
    }

    /// Offset of the first byte still held.
    pub fn start_offset(&self) -> u64 {
        self.start_offset
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    pub fn capacity(&self) -> usize {
        self.capacity
    }

    pub fn set_capacity(&mut self, capacity: usize) {
        self.capacity = capacity.max(1);
        self.drop_front(self.excess(0));
        // A smaller backlog gives its memory back.
        self.spare = None;
        self.chunks.shrink_to_fit();
    }

    /// Forgets the `n` oldest bytes held; whole chunks freed go to `spare` (one kept).
    fn drop_front(&mut self, n: usize) {
        debug_assert!(n <= self.len);
        self.head += n;
        self.len -= n;
        self.start_offset += n as u64;
        while self.head >= CHUNK_BYTES || (self.len == 0 && !self.chunks.is_empty()) {
            let Some(c) = self.chunks.pop_front() else {
                break;
            };
            self.head = self.head.saturating_sub(CHUNK_BYTES);
            self.spare.get_or_insert(c);
        }
        if self.chunks.is_empty() {
            self.head = 0;
        }
    }

    pub fn append(&mut self, bytes: &[u8]) {
        let end_before = self.end_offset();
        // Only the last `capacity` bytes of this append can stay.
        let keep = bytes.len().min(self.capacity);
        let skipped = bytes.len() - keep;
        if skipped > 0 {
            self.drop_front(self.len);
            self.start_offset += skipped as u64;
        }
        let bytes = &bytes[skipped..];
        self.drop_front(self.excess(bytes.len()));
        let mut rest = bytes;
        while !rest.is_empty() {
            let tail = self.head + self.len;
            let (idx, at) = (tail / CHUNK_BYTES, tail % CHUNK_BYTES);
            if idx == self.chunks.len() {
                let c = self
                    .spare
                    .take()
                    .unwrap_or_else(|| vec![0u8; CHUNK_BYTES].into_boxed_slice());
                self.chunks.push_back(c);
            }
            let n = rest.len().min(CHUNK_BYTES - at);
            self.chunks[idx][at..at + n].copy_from_slice(&rest[..n]);
            self.len += n;
            rest = &rest[n..];
        }
        assert!(
            self.len <= self.capacity + PINNED_EXTRA_BYTES_MAX,
            "backlog over capacity"
        );
        assert_eq!(
            self.end_offset(),
            end_before + (skipped + bytes.len()) as u64,
            "the stream's end moves forward by what was appended"
        );
        self.publish_tail();
    }

    /// Whether a replica at `offset` can continue from here.
    pub fn holds(&self, offset: u64) -> bool {
        offset >= self.start_offset && offset <= self.end_offset()
    }

    /// Up to `max` bytes starting at `offset`; `None` if the offset is no longer (or not yet) held.
    pub fn read(&self, offset: u64, max: usize) -> Option<Vec<u8>> {
        let mut out = Vec::new();
        self.read_append(offset, max, &mut out).then_some(out)
    }

    /// As [`Backlog::read`], appended to `out` (its allocation reused); false, with `out` as it
    /// was, if the offset is no longer (or not yet) held.
    pub fn read_append(&self, offset: u64, max: usize, out: &mut Vec<u8>) -> bool {
        if !self.holds(offset) {
            return false;
        }
        let from = (offset - self.start_offset) as usize;
        let to = from.saturating_add(max).min(self.len);
        out.reserve(to - from);
        let mut pos = self.head + from;
        let end = self.head + to;
        while pos < end {
            let (idx, at) = (pos / CHUNK_BYTES, pos % CHUNK_BYTES);
            let n = (end - pos).min(CHUNK_BYTES - at);
            out.extend_from_slice(&self.chunks[idx][at..at + n]);
            pos += n;
        }
        true
    }

    /// Drops everything and restarts at `offset` (a new replication history).
    pub fn reset(&mut self, offset: u64) {
        self.drop_front(self.len);
        self.start_offset = offset;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn backlog_keeps_the_last_capacity_bytes_by_offset() {
        let mut b = Backlog::new(10, 100);
        b.append(b"0123456789abc");
        assert_eq!(b.start_offset(), 103);
        assert_eq!(b.end_offset(), 113);
        assert!(!b.holds(102));
        assert_eq!(b.read(110, 100).unwrap(), b"abc");
        assert_eq!(b.read(113, 5).unwrap(), b"");
        assert!(b.read(114, 1).is_none());
        b.set_capacity(2);
        assert_eq!(b.read(111, 9).unwrap(), b"bc");
    }

    #[test]
    fn the_tail_hint_is_where_the_next_byte_goes() {
        let mut b = Backlog::new(4 * CHUNK_BYTES, 0);
        let hint = b.tail_hint();
        assert_eq!(hint.load(Relaxed), 0, "nothing allocated yet");
        b.append(&[1; 100]);
        assert_eq!(hint.load(Relaxed), b.chunks[0].as_ptr() as usize + 100);
        // Across a chunk's end: in the next chunk.
        b.append(&vec![2; CHUNK_BYTES]);
        assert_eq!(hint.load(Relaxed), b.chunks[1].as_ptr() as usize + 100);
        // A chunk filled exactly: the next one is not there yet (the hint names no chunk, or the
        // spare one the next append takes).
        b.append(&vec![3; CHUNK_BYTES - 100]);
        assert_eq!(b.chunks.len(), 2);
        assert_eq!(hint.load(Relaxed), 0);
    }

    #[test]
    fn a_full_backlog_reuses_its_chunks() {
        let mut b = Backlog::new(4 * CHUNK_BYTES, 0);
        let piece = vec![7u8; 1000];
        for _ in 0..(20 * CHUNK_BYTES / piece.len()) {
            b.append(&piece);
            assert!(b.chunks.len() <= 5, "at most capacity plus one chunk");
        }
        assert_eq!(b.len(), 4 * CHUNK_BYTES);
        assert_eq!(b.end_offset(), (20 * CHUNK_BYTES / 1000 * 1000) as u64);
    }

    #[test]
    fn a_pin_keeps_its_bytes_past_the_capacity_up_to_its_limit() {
        let mut b = Backlog::new(1000, 0);
        b.pin(Some(0));
        let piece = vec![1u8; 1000];
        let mut appended = 0;
        while appended + piece.len() <= 1000 + PINNED_EXTRA_BYTES_MAX {
            b.append(&piece);
            appended += piece.len();
            assert_eq!(b.start_offset(), 0, "everything from the pin is kept");
        }
        b.append(&piece);
        assert!(b.start_offset() > 0, "past its limit the pin gives way");
        assert!(b.len() <= 1000 + PINNED_EXTRA_BYTES_MAX);
        // The reader moves on: the capacity decides again.
        b.pin(Some(b.end_offset()));
        assert_eq!(b.len(), 1000);
        b.pin(None);
        b.append(&piece);
        assert_eq!(b.len(), 1000);
    }

    #[test]
    fn a_lean_backlog_keeps_one_megabyte_and_what_its_pin_holds() {
        let mut b = Backlog::new(64 * LEAN_BYTES, 0);
        b.set_lean(true);
        b.pin(Some(0));
        let piece = vec![3u8; 1000];
        for _ in 0..(3 * LEAN_BYTES / piece.len()) {
            b.append(&piece);
        }
        assert_eq!(b.start_offset(), 0, "the pinned reader's bytes stay");
        // The reader caught up: only the lean size stays, in the chunks it needs.
        b.pin(Some(b.end_offset()));
        assert_eq!(b.len(), LEAN_BYTES);
        for _ in 0..(10 * LEAN_BYTES / piece.len()) {
            b.append(&piece);
            b.pin(Some(b.end_offset()));
            assert!(b.len() <= LEAN_BYTES);
            assert!(b.chunks.len() <= LEAN_BYTES / CHUNK_BYTES + 1);
        }
        // A replica may read now: the capacity decides again, from what is held.
        b.set_lean(false);
        b.pin(None);
        for _ in 0..(3 * LEAN_BYTES / piece.len()) {
            b.append(&piece);
        }
        assert!(b.len() > 3 * LEAN_BYTES, "held {}", b.len());
    }

    #[derive(Debug, Clone)]
    enum Op {
        Append(Vec<u8>),
        Read(u64, usize),
        SetCapacity(usize),
        Reset(u64),
        Pin(Option<u64>),
    }

    fn op(chunk: usize) -> impl Strategy<Value = Op> {
        prop_oneof![
            6 => (0..3 * chunk, any::<u8>())
                .prop_map(|(n, b)| Op::Append((0..n).map(|i| b.wrapping_add(i as u8)).collect())),
            3 => (0u64..8 * chunk as u64, 0..3 * chunk).prop_map(|(o, m)| Op::Read(o, m)),
            1 => (1..6 * chunk).prop_map(Op::SetCapacity),
            1 => (0u64..1_000_000).prop_map(Op::Reset),
            2 => proptest::option::of(0u64..8 * chunk as u64).prop_map(Op::Pin),
        ]
    }

    proptest! {
        /// Against a model: every byte appended since the last reset (`history`, from offset
        /// `base`), of which the backlog holds the last `len`: what the capacity keeps, or more
        /// to keep everything from a pin at or after its first byte held.
        #[test]
        fn backlog_matches_a_simple_model(
            capacity in 1..6 * CHUNK_BYTES,
            ops in proptest::collection::vec(op(CHUNK_BYTES), 1..40),
        ) {
            let mut b = Backlog::new(capacity, 5);
            let (mut history, mut base, mut cap) = (Vec::<u8>::new(), 5u64, capacity);
            let (mut len, mut pin) = (0usize, None::<u64>);
            for o in ops {
                let start = base + (history.len() - len) as u64;
                // The bytes from the pin to the end, if the pin binds (at or after the start).
                let pinned = |pin: Option<u64>, end: u64| match pin {
                    Some(p) if p >= start => end.saturating_sub(p) as usize,
                    _ => 0,
                };
                match o {
                    Op::Append(bytes) => {
                        b.append(&bytes);
                        history.extend_from_slice(&bytes);
                        let end = base + history.len() as u64;
                        len = if bytes.len() > cap {
                            cap
                        } else {
                            let total = len + bytes.len();
                            total.min(cap).max(pinned(pin, end).min(total))
                        };
                    }
                    Op::Read(rel, max) => {
                        let offset = start.saturating_sub(CHUNK_BYTES as u64) + rel;
                        let end = base + history.len() as u64;
                        let want = (offset >= start && offset <= end).then(|| {
                            let from = (offset - base) as usize;
                            history[from..(from + max).min(history.len())].to_vec()
                        });
                        prop_assert_eq!(b.read(offset, max), want);
                    }
                    Op::SetCapacity(c) => {
                        b.set_capacity(c);
                        cap = c;
                        let end = base + history.len() as u64;
                        len = len.min(cap).max(pinned(pin, end).min(len));
                    }
                    Op::Reset(o) => {
                        b.reset(o);
                        history.clear();
                        base = o;
                        len = 0;
                    }
                    Op::Pin(p) => {
                        b.pin(p);
                        pin = p;
                        let end = base + history.len() as u64;
                        len = len.min(cap).max(pinned(pin, end).min(len));
                    }
                }
                let end = base + history.len() as u64;
                prop_assert_eq!(b.end_offset(), end);
                prop_assert_eq!(b.len(), len);
                prop_assert_eq!(b.start_offset(), end - len as u64);
                prop_assert!(b.len() <= cap + PINNED_EXTRA_BYTES_MAX);
                let held = &history[history.len() - len..];
                prop_assert_eq!(b.read(end - len as u64, usize::MAX), Some(held.to_vec()));
                prop_assert!(b.chunks.len() <= b.len().div_ceil(CHUNK_BYTES) + 1);
            }
        }
    }
}
