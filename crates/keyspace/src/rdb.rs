//! Redis's RDB value encoding, read: the body of a DUMP payload written by redis-server (RDB
//! versions up to [`RDB_VERSION_MAX`], Redis 7.4's), built into shoal's types. RESTORE takes
//! these (and MIGRATE from a redis-server, `redis-cli --cluster import`), so data moves from Redis
//! into shoal without a client rewriting every key. shoal's own payloads use their own format
//! (`codec.rs`, a version far above any RDB one).
//!
//! ```text
//!   type: u8     0 string; 1 list, 2 set, 3 zset (scores as text), 4 hash, 5 zset (binary
//!                scores): counted sequences of RDB strings; 10 list, 12 zset, 13 hash as a
//!                ziplist; 11 set as an intset; 14 list as a quicklist of ziplists; 16 hash,
//!                17 zset, 20 set as a listpack; 18 list as a quicklist of listpacks (or plain
//!                nodes); 15, 19, 21 a stream (nodes: a 16-byte master ID and a listpack of
//!                entries as deltas from it; then the length, last ID, and from 19 the first
//!                ID, largest deleted ID and entries added; then the consumer groups with their
//!                pending entries and consumers, from 21 with each consumer's active time)
//!   length       the top two bits of the first byte: 00 6 bits, 01 14 bits, 0x80 + u32 BE,
//!                0x81 + u64 BE; 11 a special string encoding: 0 int8, 1 int16, 2 int32
//!                (little-endian), 3 LZF (compressed length, length, bytes)
//! ```
//!
//! Module values and Redis 7.4's hashes with field expiry are not read: RESTORE answers `Bad data
//! format` for them. Every read is bounded by the payload (lengths are checked before
//! anything is allocated from them), and a malformed body gives `None`, never a panic.

use crate::entry::Object;
use crate::types::stream::{ConsumerGroup, PendingEntry, Stream, StreamId};
use crate::types::{EncodingLimits, hash::Hash, list::List, set::Set, zset::ZSet};

/// The newest RDB version read (Redis 7.4 writes 12; Redis 7.0 writes 10).
pub const RDB_VERSION_MAX: u16 = 12;

/// A value read from an RDB body: a string, or a collection.
pub enum Value {
    Str(Vec<u8>),
    Obj(Object),
}

/// A cursor over an RDB body.
pub struct Reader<'a> {
    b: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    pub fn new(b: &'a [u8]) -> Self {
        Reader { b, pos: 0 }
    }

    /// Whether every byte was read.
    pub fn at_end(&self) -> bool {
        self.pos == self.b.len()
    }

    pub fn byte(&mut self) -> Option<u8> {
        let v = *self.b.get(self.pos)?;
        self.pos += 1;
        Some(v)
    }

    pub fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        let s = self.b.get(self.pos..self.pos.checked_add(n)?)?;
        self.pos += n;
        Some(s)
    }

    /// An RDB length: `(value, is_special_encoding)`.
    pub fn len_or_special(&mut self) -> Option<(u64, bool)> {
        let first = self.byte()?;
        Some(match first >> 6 {
            0 => ((first & 0x3f) as u64, false),
            1 => ((((first & 0x3f) as u64) << 8) | self.byte()? as u64, false),
            2 => match first {
                0x80 => (
                    u32::from_be_bytes(self.take(4)?.try_into().ok()?) as u64,
                    false,
                ),
                0x81 => (u64::from_be_bytes(self.take(8)?.try_into().ok()?), false),
                _ => return None,
            },
            _ => ((first & 0x3f) as u64, true),
        })
    }

    /// A plain length (not a special encoding).
    pub fn length(&mut self) -> Option<u64> {
        match self.len_or_special()? {
            (n, false) => Some(n),
            (_, true) => None,
        }
    }

    /// A count of items that each take at least `min_bytes`: bounded by what is left, so a lying
    /// count allocates nothing.
    fn count(&mut self, min_bytes: usize) -> Option<usize> {
        let n = self.length()?;
        let left = (self.b.len() - self.pos) as u64;
        (n <= left / min_bytes as u64).then_some(n as usize)
    }

    /// An RDB string: plain, an integer (as its decimal text), or LZF-compressed.
    pub fn string(&mut self) -> Option<Vec<u8>> {
        let (n, special) = self.len_or_special()?;
        if !special {
            return Some(self.take(usize::try_from(n).ok()?)?.to_vec());
        }
        let int = |b: &[u8]| -> i64 {
            match b.len() {
                1 => b[0] as i8 as i64,
                2 => i16::from_le_bytes([b[0], b[1]]) as i64,
                _ => i32::from_le_bytes([b[0], b[1], b[2], b[3]]) as i64,
            }
        };
        match n {
            0 => Some(int(self.take(1)?).to_string().into_bytes()),
            1 => Some(int(self.take(2)?).to_string().into_bytes()),
            2 => Some(int(self.take(4)?).to_string().into_bytes()),
            3 => {
                let clen = usize::try_from(self.length()?).ok()?;
                let len = usize::try_from(self.length()?).ok()?;
                let c = self.take(clen)?;
                // LZF expands at most 264-fold: a claimed size past that is a lie.
                if len > c.len().saturating_mul(264) {
                    return None;
                }
                lzf_decompress(c, len)
            }
            _ => None,
        }
    }

    /// A score written as text (type 3): a length byte (253 NaN, 254 +inf, 255 -inf) and ASCII.
    fn text_double(&mut self) -> Option<f64> {
        match self.byte()? {
            253 => None,
            254 => Some(f64::INFINITY),
            255 => Some(f64::NEG_INFINITY),
            n => std::str::from_utf8(self.take(n as usize)?)
                .ok()?
                .parse()
                .ok(),
        }
    }

    fn binary_double(&mut self) -> Option<f64> {
        Some(f64::from_le_bytes(self.take(8)?.try_into().ok()?))
    }
}

/// LZF decompression (the format of Redis's compressed RDB strings) into exactly `out_len` bytes.
pub fn lzf_decompress(input: &[u8], out_len: usize) -> Option<Vec<u8>> {
    let mut out: Vec<u8> = Vec::with_capacity(out_len);
    let mut ip = 0;
    while ip < input.len() {
        let ctrl = input[ip] as usize;
        ip += 1;
        if ctrl < 32 {
            let run = ctrl + 1;
            out.extend_from_slice(input.get(ip..ip + run)?);
            ip += run;
        } else {
            let mut len = ctrl >> 5;
            if len == 7 {
                len += *input.get(ip)? as usize;
                ip += 1;
            }
            let back = ((ctrl & 0x1f) << 8) + *input.get(ip)? as usize + 1;
            ip += 1;
            let start = out.len().checked_sub(back)?;
            for k in 0..len + 2 {
                let c = out[start + k];
                out.push(c);
            }
        }
        if out.len() > out_len {
            return None;
        }
    }
    (out.len() == out_len).then_some(out)
}

/// Appends an RDB length.
pub fn put_len(out: &mut Vec<u8>, n: usize) {
    if n < 1 << 6 {
        out.push(n as u8);
    } else if n < 1 << 14 {
        out.push(0x40 | (n >> 8) as u8);
        out.push(n as u8);
    } else if n <= u32::MAX as usize {
        out.push(0x80);
        out.extend_from_slice(&(n as u32).to_be_bytes());
    } else {
        out.push(0x81);
        out.extend_from_slice(&(n as u64).to_be_bytes());
    }
}

/// The elements of a ziplist (Redis ≤ 6.2's compact encoding), integers as decimal text.
fn ziplist(b: &[u8]) -> Option<Vec<Vec<u8>>> {
    if b.len() < 11 || u32::from_le_bytes(b[0..4].try_into().ok()?) as usize != b.len() {
        return None;
    }
    let count = u16::from_le_bytes([b[8], b[9]]);
    let mut r = Reader { b, pos: 10 };
    let mut out = Vec::new();
    loop {
        // The previous entry's length: one byte, or 0xFE and four.
        match r.byte()? {
            0xFF => break,
            0xFE => {
                r.take(4)?;
            }
            _ => {}
        }
        let enc = r.byte()?;
        let elem = match enc >> 6 {
            0 => r.take((enc & 0x3f) as usize)?.to_vec(),
            1 => {
                let n = (((enc & 0x3f) as usize) << 8) | r.byte()? as usize;
                r.take(n)?.to_vec()
            }
            2 => {
                let n = u32::from_be_bytes(r.take(4)?.try_into().ok()?) as usize;
                r.take(n)?.to_vec()
            }
            _ => {
                let v: i64 = match enc {
                    0xC0 => i16::from_le_bytes(r.take(2)?.try_into().ok()?) as i64,
                    0xD0 => i32::from_le_bytes(r.take(4)?.try_into().ok()?) as i64,
                    0xE0 => i64::from_le_bytes(r.take(8)?.try_into().ok()?),
                    0xF0 => {
                        let t = r.take(3)?;
                        (i32::from_le_bytes([0, t[0], t[1], t[2]]) >> 8) as i64
                    }
                    0xFE => r.byte()? as i8 as i64,
                    0xF1..=0xFD => (enc & 0x0f) as i64 - 1,
                    _ => return None,
                };
                v.to_string().into_bytes()
            }
        };
        out.push(elem);
    }
    (r.at_end() && (count == u16::MAX || out.len() == count as usize)).then_some(out)
}

/// The elements of a listpack (Redis 7's compact encoding), integers as decimal text.
fn listpack(b: &[u8]) -> Option<Vec<Vec<u8>>> {
    if b.len() < 7 || u32::from_le_bytes(b[0..4].try_into().ok()?) as usize != b.len() {
        return None;
    }
    let count = u16::from_le_bytes([b[4], b[5]]);
    let mut r = Reader { b, pos: 6 };
    let mut out = Vec::new();
    loop {
        let start = r.pos;
        let enc = r.byte()?;
        if enc == 0xFF {
            break;
        }
        let int = |v: i64| v.to_string().into_bytes();
        let elem = if enc & 0x80 == 0 {
            int((enc & 0x7f) as i64)
        } else if enc & 0xC0 == 0x80 {
            r.take((enc & 0x3f) as usize)?.to_vec()
        } else if enc & 0xE0 == 0xC0 {
            let v = (((enc & 0x1f) as i64) << 8) | r.byte()? as i64;
            int(if v >= 1 << 12 { v - (1 << 13) } else { v })
        } else if enc & 0xF0 == 0xE0 {
            let n = (((enc & 0x0f) as usize) << 8) | r.byte()? as usize;
            r.take(n)?.to_vec()
        } else {
            match enc {
                0xF0 => {
                    let n = u32::from_le_bytes(r.take(4)?.try_into().ok()?) as usize;
                    r.take(n)?.to_vec()
                }
                0xF1 => int(i16::from_le_bytes(r.take(2)?.try_into().ok()?) as i64),
                0xF2 => {
                    let t = r.take(3)?;
                    int((i32::from_le_bytes([0, t[0], t[1], t[2]]) >> 8) as i64)
                }
                0xF3 => int(i32::from_le_bytes(r.take(4)?.try_into().ok()?) as i64),
                0xF4 => int(i64::from_le_bytes(r.take(8)?.try_into().ok()?)),
                _ => return None,
            }
        };
        // The entry's length again, backwards, in 1 to 5 bytes.
        let l = r.pos - start;
        let back = match l {
            0..128 => 1,
            128..16384 => 2,
            16384..2_097_152 => 3,
            2_097_152..268_435_456 => 4,
            _ => 5,
        };
        r.take(back)?;
        out.push(elem);
    }
    (r.at_end() && (count == u16::MAX || out.len() == count as usize)).then_some(out)
}

/// The members of an intset, as decimal text.
fn intset(b: &[u8]) -> Option<Vec<Vec<u8>>> {
    let mut r = Reader::new(b);
    let width = u32::from_le_bytes(r.take(4)?.try_into().ok()?) as usize;
    let n = u32::from_le_bytes(r.take(4)?.try_into().ok()?) as usize;
    if !matches!(width, 2 | 4 | 8) || b.len() != 8 + n.checked_mul(width)? {
        return None;
    }
    let mut out = Vec::with_capacity(n);
    for _ in 0..n {
        let c = r.take(width)?;
        let v = match width {
            2 => i16::from_le_bytes(c.try_into().ok()?) as i64,
            4 => i32::from_le_bytes(c.try_into().ok()?) as i64,
            _ => i64::from_le_bytes(c.try_into().ok()?),
        };
        out.push(v.to_string().into_bytes());
    }
    Some(out)
}

fn list_of(elems: impl IntoIterator<Item = Vec<u8>>, limits: &EncodingLimits) -> Option<Object> {
    let mut l = List::new(limits);
    for e in elems {
        l.push_back(&e);
    }
    (!l.is_empty()).then_some(Object::List(l))
}

/// A set; a member given twice is a malformed payload, as Redis finds it.
fn set_of(members: impl IntoIterator<Item = Vec<u8>>, limits: &EncodingLimits) -> Option<Object> {
    let mut s = Set::new(limits);
    for m in members {
        if !s.insert(&m, limits) {
            return None;
        }
    }
    (!s.is_empty()).then_some(Object::Set(s))
}

fn hash_of(
    pairs: impl IntoIterator<Item = (Vec<u8>, Vec<u8>)>,
    limits: &EncodingLimits,
) -> Option<Object> {
    let mut h = Hash::new(limits);
    for (f, v) in pairs {
        if !h.insert(&f, &v, limits) {
            return None;
        }
    }
    (!h.is_empty()).then_some(Object::Hash(h))
}

fn zset_of(
    pairs: impl IntoIterator<Item = (Vec<u8>, f64)>,
    limits: &EncodingLimits,
) -> Option<Object> {
    let mut z = ZSet::new(limits);
    for (m, s) in pairs {
        if s.is_nan() || z.insert(&m, s, limits).is_some() {
            return None;
        }
    }
    (!z.is_empty()).then_some(Object::ZSet(z))
}

/// Pairs of a flat list (field, value, field, value ...); `None` for an odd count.
fn pairs(flat: Vec<Vec<u8>>) -> Option<Vec<(Vec<u8>, Vec<u8>)>> {
    if !flat.len().is_multiple_of(2) {
        return None;
    }
    let mut it = flat.into_iter();
    let mut out = Vec::new();
    while let (Some(a), Some(b)) = (it.next(), it.next()) {
        out.push((a, b));
    }
    Some(out)
}

fn scored(flat: Vec<Vec<u8>>) -> Option<Vec<(Vec<u8>, f64)>> {
    pairs(flat)?
        .into_iter()
        .map(|(m, s)| Some((m, std::str::from_utf8(&s).ok()?.parse::<f64>().ok()?)))
        .collect()
}

/// A stream ID as RDB writes it in a node key or a pending entry: 16 bytes, big-endian.
fn raw_id(b: &[u8]) -> Option<StreamId> {
    if b.len() != 16 {
        return None;
    }
    Some(StreamId::new(
        u64::from_be_bytes(b[..8].try_into().ok()?),
        u64::from_be_bytes(b[8..].try_into().ok()?),
    ))
}

/// A stream ID as two RDB lengths.
fn len_id(r: &mut Reader<'_>) -> Option<StreamId> {
    Some(StreamId::new(r.length()?, r.length()?))
}

/// Milliseconds as Redis writes them (`rdbSaveMillisecondTime`: 8 bytes, little-endian).
fn ms_time(r: &mut Reader<'_>) -> Option<u64> {
    Some(i64::from_le_bytes(r.take(8)?.try_into().ok()?).max(0) as u64)
}

fn int_of(b: &[u8]) -> Option<i64> {
    std::str::from_utf8(b).ok()?.parse().ok()
}

/// A stream (RDB types 15, 19 and 21): its nodes' live entries appended in order, its counters,
/// its groups with their pending entries and consumers. Entries Redis kept as deleted in a node
/// are left out (shoal cuts them from its nodes).
fn stream(r: &mut Reader<'_>, ty: u8, limits: &EncodingLimits) -> Option<Stream> {
    let mut s = Stream::new();
    let nodes = r.count(2)?;
    let mut live = 0u64;
    for _ in 0..nodes {
        let master = raw_id(&r.string()?)?;
        let lp = listpack(&r.string()?)?;
        // The master entry: count, deleted, the master fields, a 0 terminator.
        let nf = usize::try_from(int_of(lp.get(2)?)?).ok()?;
        let fields = lp.get(3..3 + nf)?;
        if int_of(lp.get(3 + nf)?)? != 0 {
            return None;
        }
        let mut pos = 4 + nf;
        while pos < lp.len() {
            let flags = int_of(lp.get(pos)?)?;
            // Deltas from the master ID, added as Redis adds them (unsigned, wrapping: an entry of
            // a later millisecond with a lower sequence has a negative sequence delta).
            let ms = master.ms.wrapping_add(int_of(lp.get(pos + 1)?)? as u64);
            let seq = master.seq.wrapping_add(int_of(lp.get(pos + 2)?)? as u64);
            let id = StreamId::new(ms, seq);
            let pairs: Vec<(&[u8], &[u8])> = if flags & 2 != 0 {
                let values = lp.get(pos + 3..pos + 3 + nf)?;
                pos += 3 + nf;
                fields
                    .iter()
                    .zip(values)
                    .map(|(f, v)| (&f[..], &v[..]))
                    .collect()
            } else {
                let n = usize::try_from(int_of(lp.get(pos + 3)?)?).ok()?;
                let flat = lp.get(pos + 4..pos + 4 + n.checked_mul(2)?)?;
                pos += 4 + 2 * n;
                flat.chunks(2).map(|c| (&c[0][..], &c[1][..])).collect()
            };
            // The entry's element count (for walking backwards).
            lp.get(pos)?;
            pos += 1;
            if flags & 1 == 0 {
                if live > 0 && id <= s.last_id {
                    return None;
                }
                s.append(id, &pairs, limits);
                live += 1;
            }
        }
    }
    if r.length()? != live {
        return None;
    }
    let last_id = len_id(r)?;
    if live > 0 && last_id < s.last_id {
        return None;
    }
    s.last_id = last_id;
    if ty >= 19 {
        s.first_id = len_id(r)?;
        s.max_deleted_id = len_id(r)?;
        s.entries_added = r.length()?;
    } else {
        s.entries_added = live;
    }
    let groups = r.count(3)?;
    for _ in 0..groups {
        let name = r.string()?;
        let last = len_id(r)?;
        // Before 19 the count was not kept: estimated, as Redis does on loading.
        let entries_read = if ty >= 19 {
            r.length()? as i64
        } else {
            s.estimate_distance(last)
        };
        let mut g = ConsumerGroup::new(last, entries_read);
        for _ in 0..r.count(17)? {
            let id = raw_id(r.take(16)?)?;
            let delivery_ms = ms_time(r)?;
            let delivery_count = r.length()?;
            let e = PendingEntry {
                consumer: Box::default(),
                delivery_ms,
                delivery_count,
            };
            if g.pel.insert(id, e).is_some() {
                return None;
            }
        }
        for _ in 0..r.count(10)? {
            let cname = r.string()?;
            let seen_ms = ms_time(r)?;
            if ty >= 21 {
                ms_time(r)?;
            }
            let (c, created) = g.consumer_mut(&cname, seen_ms);
            if !created {
                return None;
            }
            c.seen_ms = seen_ms;
            let mut owned = Vec::new();
            for _ in 0..r.count(16)? {
                owned.push(raw_id(r.take(16)?)?);
            }
            for id in owned {
                let p = g.pel.get_mut(&id)?;
                if !p.consumer.is_empty() {
                    return None;
                }
                p.consumer = cname.clone().into_boxed_slice();
                g.consumers.get_mut(&cname[..])?.pel.insert(id);
            }
        }
        // Every pending entry belongs to a consumer, as Redis requires.
        if g.pel.values().any(|p| p.consumer.is_empty()) {
            return None;
        }
        if s.groups.insert(name.into_boxed_slice(), g).is_some() {
            return None;
        }
    }
    Some(s)
}

/// Reads one value: its RDB type byte, then its body, which must be all of `b`. `None` if the
/// type is not one this reads or the body is malformed.
pub fn read_value(b: &[u8], limits: &EncodingLimits) -> Option<Value> {
    let mut r = Reader::new(b);
    let ty = r.byte()?;
    let v = match ty {
        0 => Value::Str(r.string()?),
        1 => {
            let n = r.count(1)?;
            let elems = (0..n).map(|_| r.string()).collect::<Option<Vec<_>>>()?;
            Value::Obj(list_of(elems, limits)?)
        }
        2 => {
            let n = r.count(1)?;
            let members = (0..n).map(|_| r.string()).collect::<Option<Vec<_>>>()?;
            Value::Obj(set_of(members, limits)?)
        }
        3 | 5 => {
            let n = r.count(2)?;
            let mut out = Vec::with_capacity(n);
            for _ in 0..n {
                let m = r.string()?;
                let s = if ty == 3 {
                    r.text_double()?
                } else {
                    r.binary_double()?
                };
                out.push((m, s));
            }
            Value::Obj(zset_of(out, limits)?)
        }
        4 => {
            let n = r.count(2)?;
            let mut out = Vec::with_capacity(n);
            for _ in 0..n {
                out.push((r.string()?, r.string()?));
            }
            Value::Obj(hash_of(out, limits)?)
        }
        10 => Value::Obj(list_of(ziplist(&r.string()?)?, limits)?),
        11 => Value::Obj(set_of(intset(&r.string()?)?, limits)?),
        12 => Value::Obj(zset_of(scored(ziplist(&r.string()?)?)?, limits)?),
        13 => Value::Obj(hash_of(pairs(ziplist(&r.string()?)?)?, limits)?),
        14 => {
            let n = r.count(1)?;
            let mut elems = Vec::new();
            for _ in 0..n {
                elems.extend(ziplist(&r.string()?)?);
            }
            Value::Obj(list_of(elems, limits)?)
        }
        16 => Value::Obj(hash_of(pairs(listpack(&r.string()?)?)?, limits)?),
        17 => Value::Obj(zset_of(scored(listpack(&r.string()?)?)?, limits)?),
        18 => {
            let n = r.count(2)?;
            let mut elems = Vec::new();
            for _ in 0..n {
                match r.length()? {
                    // A plain node: one large element.
                    1 => elems.push(r.string()?),
                    2 => elems.extend(listpack(&r.string()?)?),
                    _ => return None,
                }
            }
            Value::Obj(list_of(elems, limits)?)
        }
        20 => Value::Obj(set_of(listpack(&r.string()?)?, limits)?),
        15 | 19 | 21 => Value::Obj(Object::Stream(Box::new(stream(&mut r, ty, limits)?))),
        _ => return None,
    };
    r.at_end().then_some(v)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::types::stream::ENTRIES_READ_INVALID;

    fn limits() -> EncodingLimits {
        EncodingLimits::default()
    }

    fn elems(o: &Object) -> Vec<String> {
        let s = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
        match o {
            Object::List(l) => l.iter().map(s).collect(),
            Object::Set(x) => {
                let mut v: Vec<String> = x.iter().map(|m| s(&m.to_vec())).collect();
                v.sort();
                v
            }
            Object::Hash(h) => {
                let mut v: Vec<String> = h
                    .iter()
                    .map(|(f, v)| format!("{}={}", s(f), s(v)))
                    .collect();
                v.sort();
                v
            }
            Object::ZSet(z) => z.iter().map(|(m, sc)| format!("{}={sc}", s(m))).collect(),
            _ => panic!("unexpected type"),
        }
    }

    fn obj(b: &[u8]) -> Object {
        match read_value(b, &limits()) {
            Some(Value::Obj(o)) => o,
            _ => panic!("not read: {b:?}"),
        }
    }

    #[test]
    fn strings_plain_integer_and_compressed() {
        let s = |b: &[u8]| match read_value(b, &limits()) {
            Some(Value::Str(v)) => v,
            _ => panic!("not a string: {b:?}"),
        };
        assert_eq!(s(b"\x00\x03abc"), b"abc");
        assert_eq!(s(b"\x00\xc0\xfe"), b"-2");
        assert_eq!(s(b"\x00\xc1\x39\x30"), b"12345");
        assert_eq!(s(b"\x00\xc2\x87\xd6\x12\x00"), b"1234567");
        // SET big <100 a's>, as redis-server 7.0.15 dumps it (LZF).
        assert_eq!(
            s(b"\x00\xc3\x09\x40\x64\x01\x61\x61\xe0\x57\x00\x01\x61\x61"),
            [b'a'; 100]
        );
        // Trailing bytes, a truncated length, a lying LZF size: refused.
        assert!(read_value(b"\x00\x01ab", &limits()).is_none());
        assert!(read_value(b"\x00\x80\x00", &limits()).is_none());
        assert!(read_value(b"\x00\xc3\x01\xff\x00a", &limits()).is_none());
    }

    /// Collections as Redis 7.0 dumps them (bytes from `DUMP` on redis-server 7.0.15, footer
    /// removed).
    #[test]
    fn listpack_quicklist_intset_and_plain_encodings() {
        // RPUSH l a 1 -5 300
        let l = b"\x12\x01\x02\x12\x12\x00\x00\x00\x04\x00\x81a\x02\x01\x01\xdf\xfb\x02\xc1\x2c\x02\xff";
        assert_eq!(elems(&obj(l)), ["a", "1", "-5", "300"]);
        // SADD s 3 1 2 (an intset of 16-bit members)
        let s = b"\x0b\x0e\x02\x00\x00\x00\x03\x00\x00\x00\x01\x00\x02\x00\x03\x00";
        assert_eq!(elems(&obj(s)), ["1", "2", "3"]);
        // HSET h f v (a listpack)
        let h = b"\x10\x0d\x0d\x00\x00\x00\x02\x00\x81f\x02\x81v\x02\xff";
        assert_eq!(elems(&obj(h)), ["f=v"]);
        // ZADD z 1.5 m (a listpack: member, score as text)
        let z = b"\x11\x0f\x0f\x00\x00\x00\x02\x00\x81m\x02\x831.5\x04\xff";
        assert_eq!(elems(&obj(z)), ["m=1.5"]);
        // Plain encodings: a set and a zset with a binary score.
        assert_eq!(elems(&obj(b"\x02\x02\x01x\x01y")), ["x", "y"]);
        let mut z2 = b"\x05\x01\x01m".to_vec();
        z2.extend_from_slice(&2.25f64.to_le_bytes());
        assert_eq!(elems(&obj(&z2)), ["m=2.25"]);
        // A duplicate set member, an empty set, an unknown type: refused.
        assert!(read_value(b"\x02\x02\x01x\x01x", &limits()).is_none());
        assert!(read_value(b"\x02\x00", &limits()).is_none());
        assert!(read_value(b"\x07\x00", &limits()).is_none());
    }

    /// XADD st 5-1 a 1, 5-2 a 2, 6-0 b 3; XDEL st 5-2; XGROUP CREATE st g 0; XREADGROUP GROUP g
    /// alice COUNT 1: as redis-server 7.0.15 dumps it (type 19).
    #[test]
    fn a_stream_with_a_deleted_entry_and_a_group() {
        let b = b"\x13\x01\x10\x00\x00\x00\x00\x00\x00\x00\x05\x00\x00\x00\x00\x00\x00\x00\x01\x36\x36\x00\x00\x00\x16\x00\x02\x01\x01\x01\x01\x01\x81\x61\x02\x00\x01\x02\x01\x00\x01\x00\x01\x01\x01\x04\x01\x03\x01\x00\x01\x01\x01\x02\x01\x04\x01\x00\x01\x01\x01\xdf\xff\x02\x01\x01\x81\x62\x02\x03\x01\x06\x01\xff\x02\x06\x00\x05\x01\x05\x02\x03\x01\x01\x67\x05\x01\x81\xff\xff\xff\xff\xff\xff\xff\xff\x01\x00\x00\x00\x00\x00\x00\x00\x05\x00\x00\x00\x00\x00\x00\x00\x01\x23\x23\x2f\x4a\xa2\x01\x00\x00\x01\x01\x05\x61\x6c\x69\x63\x65\x23\x23\x2f\x4a\xa2\x01\x00\x00\x01\x00\x00\x00\x00\x00\x00\x00\x05\x00\x00\x00\x00\x00\x00\x00\x01";
        let Object::Stream(s) = obj(b) else {
            panic!("not a stream")
        };
        let id = StreamId::new;
        let fields = |i: StreamId| -> Vec<(Vec<u8>, Vec<u8>)> {
            s.get(i)
                .map(|e| e.fields().map(|(f, v)| (f.to_vec(), v.to_vec())).collect())
                .unwrap_or_default()
        };
        assert_eq!(s.len(), 2);
        assert_eq!(fields(id(5, 1)), [(b"a".to_vec(), b"1".to_vec())]);
        assert!(s.get(id(5, 2)).is_none());
        assert_eq!(fields(id(6, 0)), [(b"b".to_vec(), b"3".to_vec())]);
        assert_eq!(
            (s.last_id, s.first_id, s.max_deleted_id, s.entries_added),
            (id(6, 0), id(5, 1), id(5, 2), 3)
        );
        let g = &s.groups[&b"g"[..]];
        assert_eq!(
            (g.last_id, g.entries_read),
            (id(5, 1), ENTRIES_READ_INVALID)
        );
        assert_eq!(&*g.pel[&id(5, 1)].consumer, b"alice");
        assert_eq!(g.pel[&id(5, 1)].delivery_count, 1);
        assert!(g.consumers[&b"alice"[..]].pel.contains(&id(5, 1)));
        // A pending entry without a consumer is refused, as Redis refuses it.
        let mut cut = b.to_vec();
        let at = cut.len() - 16 - 1;
        cut[at] = 0;
        cut.truncate(at + 1);
        assert!(read_value(&cut, &limits()).is_none());
    }

    #[test]
    fn ziplists_of_older_redis() {
        // A ziplist of "ab", 7 (immediate), -300 (int16): zlbytes, zltail, zllen, entries, end.
        let mut z = Vec::new();
        z.extend_from_slice(&0u32.to_le_bytes());
        z.extend_from_slice(&0u32.to_le_bytes());
        z.extend_from_slice(&3u16.to_le_bytes());
        z.extend_from_slice(b"\x00\x02ab");
        z.extend_from_slice(b"\x04\xf8");
        z.extend_from_slice(b"\x02\xc0");
        z.extend_from_slice(&(-300i16).to_le_bytes());
        z.push(0xff);
        let n = z.len() as u32;
        z[0..4].copy_from_slice(&n.to_le_bytes());
        let mut payload = vec![10u8];
        put_len(&mut payload, z.len());
        payload.extend_from_slice(&z);
        assert_eq!(elems(&obj(&payload)), ["ab", "7", "-300"]);
    }

    #[test]
    fn arbitrary_bytes_never_panic() {
        let mut seed = 0x9e37_79b9_7f4a_7c15u64;
        for len in 0..400 {
            let mut b = Vec::with_capacity(len);
            for _ in 0..len {
                seed ^= seed << 13;
                seed ^= seed >> 7;
                seed ^= seed << 17;
                b.push(seed as u8);
            }
            for ty in [
                0u8, 1, 2, 3, 4, 5, 10, 11, 12, 13, 14, 15, 16, 17, 18, 19, 20, 21,
            ] {
                if let Some(first) = b.first_mut() {
                    *first = ty;
                }
                let _ = read_value(&b, &limits());
            }
        }
    }
}
