//! HyperLogLog: PFADD, PFCOUNT, PFMERGE, PFDEBUG and PFSELFTEST on string values in Redis 7.0's
//! own format (`hyperloglog.c`), so a value moves between shoal and redis-server unchanged (GET/SET,
//! DUMP/RESTORE, replication). The value is a 16-byte header ("HYLL", the encoding, three unused
//! bytes, the cached cardinality little-endian with its top bit meaning "stale") followed by the
//! registers: 16384 six-bit registers packed little-endian (dense, 12304 bytes in all) or runs of
//! ZERO / XZERO / VAL opcodes (sparse, what a new HLL starts as; it turns dense when a register
//! passes 32 or the value would grow past `hll-sparse-max-bytes`). The estimate is Otmar Ertl's
//! improved estimator that Redis 7 uses, with its rounding, so counts match redis-server's.
//!
//! Writes change the value in place and hand the stream only the bytes they changed (SETRANGE
//! effects): a PFADD on a dense HLL costs a few bytes on the wire. A sparse value that shrinks
//! (adjacent runs merged) or a conversion to dense is sent whole. PFCOUNT of one key stores the
//! estimate in the header, as Redis does, and streams those 8 bytes; on a replica it does not
//! store it, so a replica's bytes stay its primary's.

use crate::keyspec::{FindKeys, key::*};
use crate::notify;
use crate::table::{Group, KeySpec, Spec, flag::*};
use crate::{Args, CmdResult, Ctx, ReplyError};
use std::borrow::Cow;

const HLL: Group = Group::HyperLogLog;

pub static COMMANDS: &[Spec] = &[
    Spec {
        name: "pfadd",
        arity: -2,
        flags: WRITE | DENYOOM | FAST,
        keys: &[KeySpec::at(1, RW | INSERT)],
        group: HLL,
        since: "2.8.9",
        summary: "Adds the specified elements to the specified HyperLogLog.",
        complexity: "O(1) to add every element.",
        handler: Some(pfadd),
        ..Spec::DEFAULT
    },
    Spec {
        name: "pfcount",
        arity: -2,
        flags: READONLY | MAY_REPLICATE,
        keys: &[KeySpec::at(1, RW | ACCESS)
            .find(FindKeys::Range {
                last_key: -1,
                step: 1,
                limit: 0,
            })
            .notes(
                "RW because it may change the internal representation of the key, and propagate to replicas",
            )],
        group: HLL,
        since: "2.8.9",
        summary: "Return the approximated cardinality of the set(s) observed by the HyperLogLog at key(s).",
        complexity: "O(1) with a very small average constant time when called with a single key. O(N) with N being the number of keys, and much bigger constant times, when called with multiple keys.",
        handler: Some(pfcount),
        ..Spec::DEFAULT
    },
    Spec {
        name: "pfdebug",
        arity: 3,
        flags: WRITE | DENYOOM | ADMIN,
        keys: &[KeySpec::at(2, RW | ACCESS)],
        group: HLL,
        since: "2.8.9",
        summary: "Internal commands for debugging HyperLogLog values",
        complexity: "N/A",
        handler: Some(pfdebug),
        ..Spec::DEFAULT
    },
    Spec {
        name: "pfmerge",
        arity: -2,
        flags: WRITE | DENYOOM,
        keys: &[
            KeySpec::at(1, RW | ACCESS | INSERT),
            KeySpec::at(2, RO | ACCESS).find(FindKeys::Range {
                last_key: -1,
                step: 1,
                limit: 0,
            }),
        ],
        group: HLL,
        since: "2.8.9",
        summary: "Merge N different HyperLogLogs into a single one.",
        complexity: "O(N) to merge N HyperLogLogs, but with high constant times.",
        handler: Some(pfmerge),
        ..Spec::DEFAULT
    },
    Spec {
        name: "pfselftest",
        arity: 1,
        flags: ADMIN,
        group: HLL,
        since: "2.8.9",
        summary: "An internal command for testing HyperLogLog values",
        complexity: "N/A",
        handler: Some(pfselftest),
        ..Spec::DEFAULT
    },
];

// ---- the format ----

/// Header bytes: magic, encoding, 3 unused, 8 of cached cardinality.
pub const HDR: usize = 16;
/// Bits of the hash that pick the register.
const P: u32 = 14;
/// Bits left for the run of zeros.
const Q: u32 = 64 - P;
pub const REGISTERS: usize = 1 << P;
const REGISTER_MAX: u8 = 63;
/// A dense value's exact length.
pub const DENSE_SIZE: usize = HDR + (REGISTERS * 6).div_ceil(8);
const DENSE: u8 = 0;
const SPARSE: u8 = 1;
const SPARSE_VAL_MAX_VALUE: u8 = 32;
const SPARSE_VAL_MAX_LEN: usize = 4;
const SPARSE_ZERO_MAX_LEN: usize = 64;
const SPARSE_XZERO_MAX_LEN: usize = 16384;
/// The byte holding the cached cardinality's top bit (set: the cache is stale).
const CARD_TOP: usize = 15;

const ERR_INVALID: ReplyError = ReplyError::Other {
    code: "INVALIDOBJ",
    msg: Cow::Borrowed("Corrupted HLL object detected"),
};
const ERR_NOT_HLL: ReplyError = ReplyError::Other {
    code: "WRONGTYPE",
    msg: Cow::Borrowed("Key is not a valid HyperLogLog string value."),
};

/// The value is corrupted (sparse runs that do not cover the registers exactly, ...).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Corrupt;

/// MurmurHash2, 64-bit version (MurmurHash64A), as Redis hashes elements: little-endian words.
pub fn murmur64a(data: &[u8], seed: u64) -> u64 {
    const M: u64 = 0xc6a4_a793_5bd1_e995;
    const R: u32 = 47;
    let mut h = seed ^ (data.len() as u64).wrapping_mul(M);
    let (words, tail) = data.as_chunks::<8>();
    for w in words {
        let mut k = u64::from_le_bytes(*w);
        k = k.wrapping_mul(M);
        k ^= k >> R;
        k = k.wrapping_mul(M);
        h ^= k;
        h = h.wrapping_mul(M);
    }
    if !tail.is_empty() {
        for (i, &b) in tail.iter().enumerate() {
            h ^= (b as u64) << (8 * i);
        }
        h = h.wrapping_mul(M);
    }
    h ^= h >> R;
    h = h.wrapping_mul(M);
    h ^= h >> R;
    h
}

/// The register an element falls in and the length of its run of zeros plus one (1..=Q+1).
pub fn pattern(element: &[u8]) -> (usize, u8) {
    let hash = murmur64a(element, 0xadc8_3b19);
    let index = (hash & (REGISTERS as u64 - 1)) as usize;
    let rest = (hash >> P) | (1u64 << Q);
    (index, rest.trailing_zeros() as u8 + 1)
}

/// A new, empty HLL: sparse, one XZERO run over every register, cache valid at 0.
pub fn new_sparse() -> Vec<u8> {
    let mut v = Vec::with_capacity(HDR + 2);
    v.extend_from_slice(b"HYLL");
    v.push(SPARSE);
    v.extend_from_slice(&[0; 11]);
    let mut left = REGISTERS;
    while left > 0 {
        let n = left.min(SPARSE_XZERO_MAX_LEN);
        push_xzero(&mut v, n);
        left -= n;
    }
    v
}

/// Redis's `isHLLObjectOrReply` on a string: magic, known encoding, exact dense length.
pub fn is_hll(s: &[u8]) -> bool {
    s.len() >= HDR
        && &s[..4] == b"HYLL"
        && s[4] <= SPARSE
        && (s[4] != DENSE || s.len() == DENSE_SIZE)
}

fn is_dense(s: &[u8]) -> bool {
    s[4] == DENSE
}

/// The cached cardinality when valid.
fn cached(s: &[u8]) -> Option<u64> {
    (s[CARD_TOP] & 0x80 == 0).then(|| u64::from_le_bytes(s[8..16].try_into().expect("8 bytes")))
}

fn invalidate(s: &mut [u8]) {
    s[CARD_TOP] |= 0x80;
}

// Dense registers: register i is the 6 bits starting at bit 6*i, least significant bits first.

/// Register `i` of the packed registers `r` (the byte past the end reads as 0, as Redis's
/// terminator does).
pub fn dense_get(r: &[u8], i: usize) -> u8 {
    let byte = i * 6 / 8;
    let fb = (i * 6) & 7;
    let b0 = r[byte] as u16;
    let b1 = r.get(byte + 1).copied().unwrap_or(0) as u16;
    (((b0 >> fb) | (b1 << (8 - fb))) & REGISTER_MAX as u16) as u8
}

/// Sets register `i` of `r` to `v` (< 64).
pub fn dense_put(r: &mut [u8], i: usize, v: u8) {
    let byte = i * 6 / 8;
    let fb = (i * 6) & 7;
    let v = v as u16;
    r[byte] = (r[byte] & !((REGISTER_MAX as u16) << fb) as u8) | (v << fb) as u8;
    if let Some(b1) = r.get_mut(byte + 1) {
        let keep = !((REGISTER_MAX as u16) >> (8 - fb)) as u8;
        *b1 = (*b1 & keep) | (v >> (8 - fb)) as u8;
    }
}

// Sparse opcodes: ZERO 00xxxxxx (1..=64 zero registers), XZERO 01xxxxxx yyyyyyyy (1..=16384 zero
// registers), VAL 1vvvvvxx (1..=4 registers of value 1..=32).

fn is_zero_op(b: u8) -> bool {
    b & 0xc0 == 0
}
fn is_xzero_op(b: u8) -> bool {
    b & 0xc0 == 0x40
}
fn is_val_op(b: u8) -> bool {
    b & 0x80 != 0
}
fn zero_len(b: u8) -> usize {
    (b & 0x3f) as usize + 1
}
/// XZERO's run; its second byte past the end reads as 0 (Redis's terminator).
fn xzero_len(s: &[u8], p: usize) -> usize {
    ((((s[p] & 0x3f) as usize) << 8) | s.get(p + 1).copied().unwrap_or(0) as usize) + 1
}
fn val_value(b: u8) -> u8 {
    ((b >> 2) & 0x1f) + 1
}
fn val_len(b: u8) -> usize {
    (b & 3) as usize + 1
}
fn val_op(value: u8, len: usize) -> u8 {
    0x80 | ((value - 1) << 2) | (len - 1) as u8
}
fn push_zero(v: &mut Vec<u8>, len: usize) {
    v.push((len - 1) as u8);
}
fn push_xzero(v: &mut Vec<u8>, len: usize) {
    let l = len - 1;
    v.push((l >> 8) as u8 | 0x40);
    v.push((l & 0xff) as u8);
}
fn push_zeros(v: &mut Vec<u8>, len: usize) {
    if len > SPARSE_ZERO_MAX_LEN {
        push_xzero(v, len);
    } else {
        push_zero(v, len);
    }
}

/// One opcode of a sparse value: its length in bytes, registers covered, and value (0 for runs
/// of zeros).
fn sparse_op(s: &[u8], p: usize) -> (usize, usize, u8) {
    let b = s[p];
    if is_zero_op(b) {
        (1, zero_len(b), 0)
    } else if is_xzero_op(b) {
        (2, xzero_len(s, p), 0)
    } else {
        (1, val_len(b), val_value(b))
    }
}

/// Visits the runs of a sparse value's registers, `f(first, len, value)`. Fails unless the runs
/// cover exactly the 16384 registers; a run past the last register stops the walk (Redis 7.0.15
/// as Debian ships it, with the fix for CVE-2025-32023, checks every kind of run).
fn sparse_runs(s: &[u8], mut f: impl FnMut(usize, usize, u8)) -> Result<(), Corrupt> {
    let mut idx = 0usize;
    let mut p = HDR;
    while p < s.len() {
        let (oplen, len, value) = sparse_op(s, p);
        if idx + len > REGISTERS {
            return Err(Corrupt);
        }
        if value != 0 {
            f(idx, len, value);
        }
        idx += len;
        p += oplen;
    }
    if idx == REGISTERS {
        Ok(())
    } else {
        Err(Corrupt)
    }
}

/// The dense form of a sparse value: same header (cached cardinality included), encoding dense.
pub fn sparse_to_dense(s: &[u8]) -> Result<Vec<u8>, Corrupt> {
    let mut d = vec![0u8; DENSE_SIZE];
    d[..HDR].copy_from_slice(&s[..HDR]);
    d[4] = DENSE;
    let regs = &mut d[HDR..];
    sparse_runs(s, |first, len, value| {
        for i in first..first + len {
            dense_put(regs, i, value);
        }
    })?;
    Ok(d)
}

/// Raises every register of `max` to the HLL's (Redis's `hllMerge`).
pub fn merge_into(max: &mut [u8; REGISTERS], s: &[u8]) -> Result<(), Corrupt> {
    if is_dense(s) {
        let r = &s[HDR..];
        for (i, m) in max.iter_mut().enumerate() {
            *m = (*m).max(dense_get(r, i));
        }
        Ok(())
    } else {
        sparse_runs(s, |first, len, value| {
            for m in &mut max[first..first + len] {
                *m = (*m).max(value);
            }
        })
    }
}

/// Every register of a valid HLL.
pub fn registers(s: &[u8]) -> Result<Vec<u8>, Corrupt> {
    let mut max = Box::new([0u8; REGISTERS]);
    merge_into(&mut max, s)?;
    Ok(max.to_vec())
}

/// The bytes of a write, for the stream: ranges of the value that changed, or `whole` when the
/// value changed shape (it shrank, or became dense) and is sent whole.
#[derive(Debug, Default)]
pub struct Changes {
    ranges: Vec<(usize, usize)>,
    whole: bool,
    /// Nobody reads the ranges (the shard does not record writes): only `any` is kept.
    unrecorded: bool,
    /// Something was written.
    pub any: bool,
}

impl Changes {
    /// Changes that keep their ranges only when `recorded` (the stream wants them).
    pub fn new(recorded: bool) -> Changes {
        Changes {
            unrecorded: !recorded,
            ..Changes::default()
        }
    }

    fn range(&mut self, lo: usize, hi: usize) {
        self.any = true;
        if !self.whole && !self.unrecorded {
            self.ranges.push((lo, hi));
        }
    }
    fn whole(&mut self) {
        self.any = true;
        self.whole = true;
        self.ranges.clear();
    }
    /// The changed ranges, sorted and merged where they touch; `None` when the value goes whole.
    fn merged(&self, len: usize) -> Option<Vec<(usize, usize)>> {
        if self.whole {
            return None;
        }
        let mut ranges = self.ranges.clone();
        ranges.sort_unstable();
        let mut out: Vec<(usize, usize)> = Vec::with_capacity(ranges.len());
        for (lo, hi) in ranges {
            let hi = hi.min(len);
            match out.last_mut() {
                Some((_, b)) if lo <= *b => *b = (*b).max(hi),
                _ => out.push((lo, hi)),
            }
        }
        Some(out)
    }

    /// Notes the changes on `ops` as setranges of `s`; nothing when the value goes whole.
    fn note(self, ops: &mut shoal_keyspace::delta::Ops, s: &[u8]) {
        if !ops.is_on() {
            return;
        }
        for (lo, hi) in self.merged(s.len()).unwrap_or_default() {
            ops.setrange(lo, &s[lo..hi]);
        }
    }
}

/// What a sparse register update did.
enum SparseSet {
    Unchanged,
    /// Written in place; the bytes from this offset on may have changed.
    Updated(usize),
    /// The register needs the dense encoding.
    Promote,
}

/// Raises register `index` of a sparse value to `count`, splitting and merging runs exactly as
/// Redis's `hllSparseSet` does, so the bytes come out the same.
fn sparse_set(
    s: &mut Vec<u8>,
    index: usize,
    count: u8,
    max_bytes: u64,
) -> Result<SparseSet, Corrupt> {
    if count > SPARSE_VAL_MAX_VALUE {
        return Ok(SparseSet::Promote);
    }
    // Find the opcode covering the register.
    let end = s.len();
    let (mut p, mut first, mut span, mut oplen) = (HDR, 0usize, 0usize, 1usize);
    let mut prev: Option<usize> = None;
    while p < end {
        let (len, covered, _) = sparse_op(s, p);
        span = covered;
        oplen = len;
        if index < first + span {
            break;
        }
        prev = Some(p);
        p += oplen;
        first += span;
    }
    if span == 0 || p >= end {
        return Err(Corrupt);
    }
    let b = s[p];
    let from = prev.unwrap_or(p);
    let updated_in_place = if is_val_op(b) {
        if val_value(b) >= count {
            return Ok(SparseSet::Unchanged);
        }
        span == 1
    } else {
        is_zero_op(b) && span == 1
    };
    if updated_in_place {
        s[p] = val_op(count, 1);
    } else {
        // Split the run: [before] VAL(count,1) [after].
        let last = first + span - 1;
        let mut seq: Vec<u8> = Vec::with_capacity(5);
        if is_val_op(b) {
            let cur = val_value(b);
            if index != first {
                seq.push(val_op(cur, index - first));
            }
            seq.push(val_op(count, 1));
            if index != last {
                seq.push(val_op(cur, last - index));
            }
        } else {
            if index != first {
                push_zeros(&mut seq, index - first);
            }
            seq.push(val_op(count, 1));
            if index != last {
                push_zeros(&mut seq, last - index);
            }
        }
        let delta = seq.len() as isize - oplen as isize;
        if delta > 0 && (end as u64).saturating_add(delta as u64) > max_bytes {
            return Ok(SparseSet::Promote);
        }
        let next = p + oplen;
        if next < end {
            s.splice(p..next, seq);
        } else {
            // The last opcode (maybe cut short in a corrupted value): the length moves by
            // `delta`, as Redis's does.
            s.truncate(p);
            s.extend_from_slice(&seq);
            s.truncate((end as isize + delta) as usize);
        }
    }
    // Merge adjacent VAL runs of the same value, scanning up to 5 opcodes from the previous one.
    let mut q = from;
    let mut scan = 5;
    while q < s.len() && scan > 0 {
        scan -= 1;
        let b = s[q];
        if is_xzero_op(b) {
            q += 2;
            continue;
        } else if is_zero_op(b) {
            q += 1;
            continue;
        }
        if q + 1 < s.len() && is_val_op(s[q + 1]) {
            let (v1, v2) = (val_value(b), val_value(s[q + 1]));
            let len = val_len(b) + val_len(s[q + 1]);
            if v1 == v2 && len <= SPARSE_VAL_MAX_LEN {
                s[q + 1] = val_op(v1, len);
                s.remove(q);
                continue;
            }
        }
        q += 1;
    }
    invalidate(s);
    Ok(SparseSet::Updated(from))
}

/// Raises register `index` of an HLL value to `count` (Redis's `hllSparseSet`/`hllDenseSet`,
/// promoting a sparse value when needed). Returns whether it changed.
pub fn set_register(
    s: &mut Vec<u8>,
    index: usize,
    count: u8,
    max_bytes: u64,
    changes: &mut Changes,
) -> Result<bool, Corrupt> {
    if !is_dense(s) {
        let before = s.len();
        match sparse_set(s, index, count, max_bytes)? {
            SparseSet::Unchanged => return Ok(false),
            SparseSet::Updated(from) => {
                if s.len() < before {
                    changes.whole();
                } else {
                    changes.range(CARD_TOP, CARD_TOP + 1);
                    changes.range(from, s.len());
                }
                return Ok(true);
            }
            SparseSet::Promote => {
                *s = sparse_to_dense(s)?;
                changes.whole();
            }
        }
    }
    let r = &mut s[HDR..];
    if dense_get(r, index) >= count {
        return Ok(false);
    }
    dense_put(r, index, count);
    let byte = HDR + index * 6 / 8;
    changes.range(byte, byte + 2);
    Ok(true)
}

/// Adds an element; whether a register changed.
pub fn add(
    s: &mut Vec<u8>,
    element: &[u8],
    max_bytes: u64,
    changes: &mut Changes,
) -> Result<bool, Corrupt> {
    let (index, count) = pattern(element);
    set_register(s, index, count, max_bytes, changes)
}

// ---- the estimate ----

/// Ertl's sigma.
fn sigma(mut x: f64) -> f64 {
    if x == 1.0 {
        return f64::INFINITY;
    }
    let mut y = 1.0;
    let mut z = x;
    loop {
        x *= x;
        let before = z;
        z += x * y;
        y += y;
        if z == before {
            return z;
        }
    }
}

/// Ertl's tau.
fn tau(mut x: f64) -> f64 {
    if x == 0.0 || x == 1.0 {
        return 0.0;
    }
    let mut y = 1.0;
    let mut z = 1.0 - x;
    loop {
        x = x.sqrt();
        let before = z;
        y *= 0.5;
        let d = 1.0 - x;
        z -= d * d * y;
        if z == before {
            return z / 3.0;
        }
    }
}

/// The estimate from a histogram of register values (Redis's `hllCount` after the histogram).
fn estimate(histo: &[u32; 64]) -> u64 {
    let m = REGISTERS as f64;
    let q = Q as usize;
    let mut z = m * tau((m - histo[q + 1] as f64) / m);
    for j in (1..=q).rev() {
        z += histo[j] as f64;
        z *= 0.5;
    }
    z += m * sigma(histo[0] as f64 / m);
    // 0.5/ln(2)
    const ALPHA_INF: f64 = 0.721_347_520_444_481_7;
    (ALPHA_INF * m * m / z).round() as u64
}

/// The estimated cardinality of an HLL value (a sparse one that does not cover the registers
/// exactly is corrupt, as Redis's `hllCount` says).
pub fn count(s: &[u8]) -> Result<u64, Corrupt> {
    let mut histo = [0u32; 64];
    if is_dense(s) {
        let r = &s[HDR..];
        for i in 0..REGISTERS {
            histo[dense_get(r, i) as usize] += 1;
        }
    } else {
        sparse_runs(s, |_, len, value| histo[value as usize] += len as u32)?;
        histo[0] = REGISTERS as u32 - histo[1..].iter().sum::<u32>();
    }
    Ok(estimate(&histo))
}

/// The estimate of plain registers (one byte each).
pub fn count_registers(r: &[u8]) -> u64 {
    let mut histo = [0u32; 64];
    for &v in r {
        histo[(v & 63) as usize] += 1;
    }
    estimate(&histo)
}

// ---- commands ----

fn max_bytes(ctx: &Ctx<'_>) -> u64 {
    ctx.srv
        .hot
        .hll_sparse_max_bytes
        .load(std::sync::atomic::Ordering::Relaxed)
}

/// Stores a new HLL as a `raw` string object (as Redis's are), ready to be changed in place.
fn store_raw(
    shard: &mut shoal_keyspace::Shard,
    db: usize,
    slot: u16,
    key: &[u8],
    value: Vec<u8>,
    version: u64,
    now_ms: u64,
) {
    use shoal_keyspace::{Entry, Object, Payload};
    let payload = Payload::Object(Box::new(Object::RawString(value)));
    shard.insert(
        db,
        slot,
        Entry::new(key, payload, None, None, version, 0),
        now_ms,
    );
}

/// The HLL in an entry, or the error Redis gives for it.
fn hll_of<'v>(e: &'v shoal_keyspace::EntryMut<'_>) -> Result<&'v [u8], ReplyError> {
    let s = e.string().ok_or(ReplyError::WrongType)?;
    if is_hll(s) { Ok(s) } else { Err(ERR_NOT_HLL) }
}

fn pfadd(ctx: &mut Ctx<'_>, args: &Args<'_>) -> CmdResult {
    let key = args.get(1);
    let elements = args.tail(2);
    let max = max_bytes(ctx);
    let (db, now) = (ctx.client.db, ctx.now_ms);
    let (mut shard, slot) = ctx.shard(key);
    // Taken under the lock: later writes to a key get larger versions.
    let version = ctx.version();
    let mut failed = false;
    let found = match shard.lookup(db, slot, key, now, true) {
        Some(mut e) => {
            hll_of(&e)?;
            let mut ops = e.ops();
            let mut changes = Changes::new(ops.is_on());
            let s = e.make_raw_string().ok_or(ReplyError::WrongType)?;
            let mut updated = false;
            for el in elements.iter() {
                match add(s, el, max, &mut changes) {
                    Ok(u) => updated |= u,
                    Err(Corrupt) => {
                        failed = true;
                        break;
                    }
                }
            }
            if updated {
                invalidate(s);
                changes.range(CARD_TOP, CARD_TOP + 1);
            }
            if changes.any {
                changes.note(&mut ops, s);
                e.note(ops);
                e.set_version(version);
            }
            Some(updated)
        }
        None => None,
    };
    let updated = match found {
        Some(u) => u,
        None => {
            let mut s = new_sparse();
            let mut fresh = Changes::new(false);
            for el in elements.iter() {
                // A new value is valid: adding to it cannot fail.
                let _ = add(&mut s, el, max, &mut fresh);
            }
            // Creating counts as an update: the cache is marked stale, as Redis does.
            invalidate(&mut s);
            store_raw(&mut shard, db, slot, key, s, version, now);
            true
        }
    };
    drop(shard);
    if failed {
        return Err(ERR_INVALID);
    }
    if updated {
        ctx.notify(notify::STRING, "pfadd", key);
    }
    ctx.out.int(updated as i64);
    Ok(())
}

fn pfcount(ctx: &mut Ctx<'_>, args: &Args<'_>) -> CmdResult {
    let (db, now) = (ctx.client.db, ctx.now_ms);
    if args.len() > 2 {
        let keys = args.tail(1);
        let mut locked = ctx.lock_keys(keys.iter());
        let mut max = Box::new([0u8; REGISTERS]);
        for key in keys.iter() {
            let (shard, slot) = locked.shard(key);
            let Some(e) = shard.lookup_read(db, slot, key, now) else {
                continue;
            };
            merge_into(&mut max, hll_of(&e)?).map_err(|_| ERR_INVALID)?;
        }
        drop(locked);
        ctx.out.int(count_registers(&max[..]) as i64);
        return Ok(());
    }
    let key = args.get(1);
    // A replica does not store the estimate: its bytes stay its primary's.
    let store = !ctx.srv.repl.is_replica();
    let (mut shard, slot) = ctx.shard(key);
    let version = ctx.version();
    let card = match shard.lookup_read(db, slot, key, now) {
        None => 0,
        Some(mut e) => {
            let s = hll_of(&e)?;
            match cached(s) {
                Some(c) => c,
                None => {
                    let c = count(s).map_err(|_| ERR_INVALID)?;
                    if store {
                        let mut ops = e.ops();
                        let s = e.make_raw_string().ok_or(ReplyError::WrongType)?;
                        s[8..16].copy_from_slice(&c.to_le_bytes());
                        ops.setrange(8, &s[8..16]);
                        e.note(ops);
                        e.set_version(version);
                    }
                    c
                }
            }
        }
    };
    drop(shard);
    ctx.out.int(card as i64);
    Ok(())
}

fn pfmerge(ctx: &mut Ctx<'_>, args: &Args<'_>) -> CmdResult {
    let keys = args.tail(1);
    let dest = args.get(1);
    let max_sparse = max_bytes(ctx);
    let (db, now) = (ctx.client.db, ctx.now_ms);
    let mut locked = ctx.lock_keys(keys.iter());
    let version = ctx.version();
    // The registers' maximum over every key, the destination's included.
    let mut max = Box::new([0u8; REGISTERS]);
    let mut use_dense = false;
    for key in keys.iter() {
        let (shard, slot) = locked.shard(key);
        let Some(e) = shard.lookup_read(db, slot, key, now) else {
            continue;
        };
        let s = hll_of(&e)?;
        use_dense |= is_dense(s);
        merge_into(&mut max, s).map_err(|_| ERR_INVALID)?;
    }
    let write = |s: &mut Vec<u8>| -> Result<(), Corrupt> {
        if use_dense && !is_dense(s) {
            *s = sparse_to_dense(s)?;
        }
        let mut changes = Changes::new(false);
        for (i, &m) in max.iter().enumerate() {
            if m != 0 {
                // As Redis: a corrupted destination is not reported here.
                let _ = set_register(s, i, m, max_sparse, &mut changes);
            }
        }
        invalidate(s);
        Ok(())
    };
    let (shard, slot) = locked.shard(dest);
    let existed = match shard.lookup(db, slot, dest, now, true) {
        Some(mut e) => {
            let s = e.make_raw_string().ok_or(ReplyError::WrongType)?;
            write(s).map_err(|_| ERR_INVALID)?;
            // The value goes whole: a merge may rewrite most of it.
            e.set_version(version);
            true
        }
        None => false,
    };
    if !existed {
        let mut s = new_sparse();
        write(&mut s).map_err(|_| ERR_INVALID)?;
        store_raw(shard, db, slot, dest, s, version, now);
    }
    drop(locked);
    ctx.notify(notify::STRING, "pfadd", dest);
    ctx.out.ok();
    Ok(())
}

/// The opcodes of a sparse value as PFDEBUG DECODE shows them.
pub fn decode(s: &[u8]) -> String {
    let mut out = Vec::new();
    let mut p = HDR;
    while p < s.len() {
        let b = s[p];
        let (oplen, len, value) = sparse_op(s, p);
        out.push(if is_zero_op(b) {
            format!("z:{len}")
        } else if is_xzero_op(b) {
            format!("Z:{len}")
        } else {
            format!("v:{value},{len}")
        });
        p += oplen;
    }
    out.join(" ")
}

fn pfdebug(ctx: &mut Ctx<'_>, args: &Args<'_>) -> CmdResult {
    let sub = args.get(1);
    let key = args.get(2);
    let (db, now) = (ctx.client.db, ctx.now_ms);
    let (mut shard, slot) = ctx.shard(key);
    let version = ctx.version();
    let Some(mut e) = shard.lookup(db, slot, key, now, true) else {
        return Err(ReplyError::err_static("The specified key does not exist"));
    };
    let dense = is_dense(hll_of(&e)?);
    let getreg = sub.eq_ignore_ascii_case(b"getreg");
    if getreg || sub.eq_ignore_ascii_case(b"todense") {
        // Both leave the value dense (a write, sent whole).
        if !dense {
            let s = e.make_raw_string().ok_or(ReplyError::WrongType)?;
            *s = sparse_to_dense(s).map_err(|_| ERR_INVALID)?;
            e.set_version(version);
        }
        if getreg {
            let r = registers(hll_of(&e)?).map_err(|_| ERR_INVALID)?;
            drop(e);
            drop(shard);
            ctx.out.array(REGISTERS);
            for v in r {
                ctx.out.int(v as i64);
            }
        } else {
            drop(e);
            drop(shard);
            ctx.out.int(!dense as i64);
        }
    } else if sub.eq_ignore_ascii_case(b"decode") {
        if dense {
            return Err(ReplyError::err_static("HLL encoding is not sparse"));
        }
        let text = decode(hll_of(&e)?);
        drop(e);
        drop(shard);
        ctx.out.bulk(text.as_bytes());
    } else if sub.eq_ignore_ascii_case(b"encoding") {
        drop(e);
        drop(shard);
        ctx.out.simple(if dense { "dense" } else { "sparse" });
    } else {
        return Err(ReplyError::err(format!(
            "Unknown PFDEBUG subcommand '{}'",
            String::from_utf8_lossy(sub)
        )));
    }
    Ok(())
}

/// A small deterministic generator for the self test (xorshift64*).
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
}

/// Redis's PFSELFTEST: packed registers read back what was written, and sparse and dense HLLs
/// fed the same `up_to` elements agree and stay within 6 standard errors at every power of ten.
pub fn selftest(seed: u64, up_to: u64, max_sparse: u64) -> Result<(), String> {
    let mut rng = Rng(seed | 1);
    let mut packed = vec![0u8; DENSE_SIZE - HDR];
    let mut plain = vec![0u8; REGISTERS];
    for _ in 0..1000 {
        for (i, p) in plain.iter_mut().enumerate() {
            *p = (rng.next() & REGISTER_MAX as u64) as u8;
            dense_put(&mut packed, i, *p);
        }
        for (i, &p) in plain.iter().enumerate() {
            let got = dense_get(&packed, i);
            if got != p {
                return Err(format!(
                    "TESTFAILED Register {i} should be {p} but is {got}"
                ));
            }
        }
    }
    let mut dense = vec![0u8; DENSE_SIZE];
    dense[..4].copy_from_slice(b"HYLL");
    let mut sparse = new_sparse();
    let relerr = 1.04 / (REGISTERS as f64).sqrt();
    let base = rng.next();
    let mut checkpoint = 1u64;
    let mut changes = Changes::default();
    for j in 1..=up_to {
        let el = (j ^ base).to_ne_bytes();
        let _ = add(&mut dense, &el, max_sparse, &mut changes);
        let _ = add(&mut sparse, &el, max_sparse, &mut changes);
        changes = Changes::default();
        if j != checkpoint {
            continue;
        }
        if j < max_sparse / 2 && is_dense(&sparse) {
            return Err("TESTFAILED sparse encoding not used".into());
        }
        let d = count(&dense).map_err(|_| "TESTFAILED dense count".to_string())?;
        if count(&sparse) != Ok(d) {
            return Err("TESTFAILED dense/sparse disagree".into());
        }
        let abserr = (checkpoint as i64 - d as i64).unsigned_abs();
        let maxerr = if j == 10 {
            1
        } else {
            (relerr * 6.0 * checkpoint as f64).ceil() as u64
        };
        if abserr > maxerr {
            return Err(format!(
                "TESTFAILED Too big error. card:{checkpoint} abserr:{abserr}"
            ));
        }
        checkpoint *= 10;
    }
    Ok(())
}

fn pfselftest(ctx: &mut Ctx<'_>, _args: &Args<'_>) -> CmdResult {
    let seed = ctx.version() ^ ctx.now_ms;
    match selftest(seed, 10_000_000, max_bytes(ctx)) {
        Ok(()) => {
            ctx.out.ok();
            Ok(())
        }
        Err(msg) => Err(ReplyError::err(msg)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// Sets registers in a value and in the plain model (one byte per register, raised with max).
    fn apply(s: &mut Vec<u8>, model: &mut [u8], sets: &[(usize, u8)], max_bytes: u64) {
        for &(i, c) in sets {
            let before = s.clone();
            let mut changes = Changes::default();
            let changed = set_register(s, i, c, max_bytes, &mut changes).unwrap();
            assert_eq!(changed, c > model[i]);
            model[i] = model[i].max(c);
            // The ranges noted for the stream rebuild the new value from the old one.
            if let Some(ranges) = changes.merged(s.len()) {
                let mut rebuilt = before;
                for (lo, hi) in ranges {
                    if rebuilt.len() < hi {
                        rebuilt.resize(hi, 0);
                    }
                    rebuilt[lo..hi].copy_from_slice(&s[lo..hi]);
                }
                assert_eq!(&rebuilt, s);
            } else {
                assert!(changes.any);
            }
        }
    }

    fn sets(max_count: u8) -> impl Strategy<Value = Vec<(usize, u8)>> {
        proptest::collection::vec(
            (
                prop_oneof![0usize..REGISTERS, 0usize..40, (REGISTERS - 40)..REGISTERS],
                1..=max_count,
            ),
            0..300,
        )
    }

    fn dense_empty() -> Vec<u8> {
        let mut d = vec![0u8; DENSE_SIZE];
        d[..4].copy_from_slice(b"HYLL");
        d
    }

    proptest! {
        #[test]
        fn sparse_and_dense_hold_the_model(
            sets in sets(63),
            max_bytes in prop_oneof![Just(3000u64), Just(100_000), 20u64..400],
        ) {
            let mut model = vec![0u8; REGISTERS];
            let mut sparse = new_sparse();
            apply(&mut sparse, &mut model, &sets, max_bytes);
            prop_assert!(is_hll(&sparse));
            prop_assert_eq!(registers(&sparse).unwrap(), model.clone());
            let mut model2 = vec![0u8; REGISTERS];
            let mut dense = dense_empty();
            apply(&mut dense, &mut model2, &sets, max_bytes);
            prop_assert_eq!(registers(&dense).unwrap(), model.clone());
            // Same registers, same estimate, whatever the encoding.
            prop_assert_eq!(count(&sparse).unwrap(), count(&dense).unwrap());
            prop_assert_eq!(count(&dense).unwrap(), count_registers(&model));
            if !is_dense(&sparse) {
                prop_assert!(sparse.len() as u64 <= max_bytes.max(HDR as u64 + 2));
            }
        }

        #[test]
        fn sparse_to_dense_keeps_the_registers(sets in sets(32)) {
            let mut model = vec![0u8; REGISTERS];
            let mut sparse = new_sparse();
            apply(&mut sparse, &mut model, &sets, u64::MAX);
            prop_assert!(!is_dense(&sparse));
            let dense = sparse_to_dense(&sparse).unwrap();
            prop_assert!(is_hll(&dense) && is_dense(&dense));
            prop_assert_eq!(&dense[..4], &sparse[..4]);
            prop_assert_eq!(&dense[5..HDR], &sparse[5..HDR]);
            prop_assert_eq!(registers(&dense).unwrap(), model);
        }

        #[test]
        fn merge_is_the_registers_max(a in sets(63), b in sets(63)) {
            let (mut ma, mut mb) = (vec![0u8; REGISTERS], vec![0u8; REGISTERS]);
            let (mut ha, mut hb) = (new_sparse(), dense_empty());
            apply(&mut ha, &mut ma, &a, 3000);
            apply(&mut hb, &mut mb, &b, 3000);
            let mut max = Box::new([0u8; REGISTERS]);
            merge_into(&mut max, &ha).unwrap();
            merge_into(&mut max, &hb).unwrap();
            let want: Vec<u8> = ma.iter().zip(&mb).map(|(x, y)| *x.max(y)).collect();
            prop_assert_eq!(max.to_vec(), want);
        }

        #[test]
        fn registers_pack_and_unpack(values in proptest::collection::vec(0u8..64, REGISTERS)) {
            let mut r = vec![0u8; DENSE_SIZE - HDR];
            for (i, &v) in values.iter().enumerate() {
                dense_put(&mut r, i, v);
            }
            for (i, &v) in values.iter().enumerate() {
                prop_assert_eq!(dense_get(&r, i), v);
            }
        }

        #[test]
        fn corrupted_values_are_refused_not_panicked(
            tail in proptest::collection::vec(any::<u8>(), 0..64),
            index in 0usize..REGISTERS,
            c in 1u8..64,
        ) {
            let mut s = new_sparse();
            s.truncate(HDR);
            s.extend_from_slice(&tail);
            let mut changes = Changes::default();
            let _ = set_register(&mut s, index, c, 3000, &mut changes);
            let _ = count(&s);
            let _ = registers(&s);
            let _ = decode(&s);
        }
    }

    #[test]
    fn a_new_value_is_redis_empty_hll() {
        let s = new_sparse();
        assert_eq!(s, b"HYLL\x01\0\0\0\0\0\0\0\0\0\0\0\x7f\xff");
        assert_eq!(count(&s), Ok(0));
        assert_eq!(decode(&s), "Z:16384");
    }

    #[test]
    fn elements_land_where_redis_puts_them() {
        // redis-server 7.0.15: PFADD k a; PFDEBUG DECODE k -> "Z:12711 v:2,1 Z:3672".
        assert_eq!(pattern(b"a"), (12711, 2));
        let mut s = new_sparse();
        add(&mut s, b"a", 3000, &mut Changes::default()).unwrap();
        assert_eq!(decode(&s), "Z:12711 v:2,1 Z:3672");
        // Longer than a word: "Z:4145 v:2,1 Z:12238".
        assert_eq!(pattern(b"hello world, 8+ bytes"), (4145, 2));
    }

    /// The estimate of N distinct elements is within a few standard errors (1.04/sqrt(16384) =
    /// 0.81%), sparse and dense agreeing.
    #[test]
    fn estimates_are_within_the_standard_error() {
        let relerr = 1.04 / (REGISTERS as f64).sqrt();
        for (n, seed) in [
            (100u64, 1u64),
            (1000, 2),
            (10_000, 3),
            (100_000, 4),
            (300_000, 5),
        ] {
            let mut sparse = new_sparse();
            let mut dense = dense_empty();
            let mut changes = Changes::default();
            for j in 0..n {
                let el = format!("el:{seed}:{j}");
                add(&mut sparse, el.as_bytes(), 3000, &mut changes).unwrap();
                add(&mut dense, el.as_bytes(), 3000, &mut changes).unwrap();
            }
            let est = count(&dense).unwrap();
            assert_eq!(count(&sparse).unwrap(), est);
            let err = (est as f64 - n as f64).abs() / n as f64;
            assert!(err <= 4.0 * relerr, "n={n} estimate={est} error={err}");
        }
    }

    #[test]
    fn selftest_passes() {
        selftest(42, 100_000, 3000).unwrap();
    }
}
