//! The value codec: a type byte and a body per type, used by DUMP/RESTORE (with a version and a
//! CRC-64 footer added by the caller) and by snapshots. Collection types encode their own bodies
//! (`types/*.rs`) with the varint helpers here.
//!
//! ```text
//!   type: u8            0 string, 1 list, 2 set, 3 zset, 4 hash, 15 stream (Redis's RDB type
//!                       numbers), 24 hash with field TTLs (Redis 7.4's number for it), 7 Bloom
//!                       filter (Redis's number for a module value; the body is shoal's own)
//!   body                string: varint length + bytes; collections: see their `encode`;
//!                       a hash with field TTLs: the hash body, then `Hash::encode_field_ttls`
//! ```

use crate::entry::{Object, Payload, ValueRef};
use crate::types::{
    EncodingLimits, bloom::Bloom, hash::Hash, list::List, set::Set, stream::Stream, zset::ZSet,
};

pub const TYPE_STRING: u8 = 0;
pub const TYPE_LIST: u8 = 1;
pub const TYPE_SET: u8 = 2;
pub const TYPE_ZSET: u8 = 3;
pub const TYPE_HASH: u8 = 4;
/// Redis's `RDB_TYPE_STREAM_LISTPACKS` (the body is shoal's own, see `types/stream.rs`).
pub const TYPE_STREAM: u8 = 15;
pub const TYPE_HASH_TTL: u8 = 24;
/// Redis's `RDB_TYPE_MODULE_2` (the body is `Bloom::encode`'s).
pub const TYPE_BLOOM: u8 = 7;

/// Appends the encoded value (type byte and body). A cold value (on the disk tier) is already
/// encoded there: callers load it first (`tier.rs`); passing one is a bug.
pub fn encode_value(v: ValueRef<'_>, out: &mut Vec<u8>) {
    match v {
        ValueRef::Cold(h) => unreachable!("cold value {h:?} encoded without loading it"),
        ValueRef::Str(_) | ValueRef::Obj(Object::RawString(_)) => {
            let s: &[u8] = match v {
                ValueRef::Str(s) => s,
                ValueRef::Obj(Object::RawString(s)) => s,
                _ => unreachable!("matched above"),
            };
            out.reserve(1 + 10 + s.len());
            out.push(TYPE_STRING);
            put_varint(out, s.len() as u64);
            out.extend_from_slice(s);
        }
        ValueRef::Obj(Object::List(l)) => {
            out.push(TYPE_LIST);
            l.encode(out);
        }
        ValueRef::Obj(Object::Set(s)) => {
            out.push(TYPE_SET);
            s.encode(out);
        }
        ValueRef::Obj(Object::ZSet(z)) => {
            out.push(TYPE_ZSET);
            z.encode(out);
        }
        ValueRef::Obj(Object::Hash(h)) if h.field_ttl_count() > 0 => {
            out.push(TYPE_HASH_TTL);
            let mut pairs = Vec::new();
            h.encode(&mut pairs);
            put_bytes(out, &pairs);
            h.encode_field_ttls(out);
        }
        ValueRef::Obj(Object::Hash(h)) => {
            out.push(TYPE_HASH);
            h.encode(out);
        }
        ValueRef::Obj(Object::Stream(s)) => {
            out.push(TYPE_STREAM);
            s.encode(out);
        }
        ValueRef::Obj(Object::Bloom(b)) => {
            out.push(TYPE_BLOOM);
            b.encode(out);
        }
    }
}

/// Decodes a value written by [`encode_value`]; `None` if malformed.
pub fn decode_value<'a>(b: &'a [u8], limits: &EncodingLimits) -> Option<Payload<'a>> {
    let (&ty, rest) = b.split_first()?;
    Some(match ty {
        TYPE_STRING => {
            let (len, value) = get_varint(rest)?;
            if value.len() as u64 != len {
                return None;
            }
            Payload::Inline(value)
        }
        TYPE_LIST => Payload::Object(Box::new(Object::List(List::decode(rest, limits)?))),
        TYPE_SET => Payload::Object(Box::new(Object::Set(Set::decode(rest, limits)?))),
        TYPE_ZSET => Payload::Object(Box::new(Object::ZSet(ZSet::decode(rest, limits)?))),
        TYPE_HASH => Payload::Object(Box::new(Object::Hash(Hash::decode(rest, limits)?))),
        TYPE_STREAM => Payload::Object(Box::new(Object::Stream(Box::new(Stream::decode(
            rest, limits,
        )?)))),
        TYPE_BLOOM => Payload::Object(Box::new(Object::Bloom(Box::new(Bloom::decode(rest)?)))),
        TYPE_HASH_TTL => {
            let (pairs, ttls) = get_bytes(rest)?;
            let mut h = Hash::decode(pairs, limits)?;
            if !h.decode_field_ttls(ttls)?.is_empty() {
                return None;
            }
            Payload::Object(Box::new(Object::Hash(h)))
        }
        _ => return None,
    })
}

/// Appends a LEB128 varint.
/// The length of [`encode_value`]'s bytes for a string value (`None` for anything else): its
/// type byte, its length as a varint, its bytes.
pub fn encoded_len_of_string(v: ValueRef<'_>) -> Option<usize> {
    let s: &[u8] = match v {
        ValueRef::Str(s) => s,
        ValueRef::Obj(Object::RawString(s)) => s,
        _ => return None,
    };
    let varint = (64 - (s.len() as u64 | 1).leading_zeros()).div_ceil(7) as usize;
    Some(1 + varint + s.len())
}

pub fn put_varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

/// Reads a LEB128 u64; returns it and the bytes after it; `None` if truncated or longer than ten bytes.
pub fn get_varint(b: &[u8]) -> Option<(u64, &[u8])> {
    let mut v = 0u64;
    for (i, &byte) in b.iter().enumerate().take(10) {
        let bits = (byte & 0x7f) as u64;
        if i == 9 && bits > 1 {
            return None;
        }
        v |= bits << (7 * i);
        if byte & 0x80 == 0 {
            return Some((v, &b[i + 1..]));
        }
    }
    None
}

/// CRC-64/Jones, reflected, init 0 (Redis's `crc64`): check value of "123456789" is
/// 0xe9c6d914c4b8d9ca.
pub fn crc64(data: &[u8]) -> u64 {
    crc64_update(0, data)
}

/// CRC-64/Jones tables for slicing by 8: `CRC64_TABLES[0]` is the byte-at-a-time table, and
/// `CRC64_TABLES[k][i]` advances `CRC64_TABLES[k - 1][i]` by one more zero byte.
const CRC64_TABLES: [[u64; 256]; 8] = {
    const POLY_REFLECTED: u64 = 0x95AC_9329_AC4B_C9B5;
    let mut t = [[0u64; 256]; 8];
    let mut i = 0;
    while i < 256 {
        let mut c = i as u64;
        let mut k = 0;
        while k < 8 {
            c = if c & 1 == 1 {
                (c >> 1) ^ POLY_REFLECTED
            } else {
                c >> 1
            };
            k += 1;
        }
        t[0][i] = c;
        i += 1;
    }
    let mut k = 1;
    while k < 8 {
        let mut i = 0;
        while i < 256 {
            let prev = t[k - 1][i];
            t[k][i] = (prev >> 8) ^ t[0][(prev & 0xff) as usize];
            i += 1;
        }
        k += 1;
    }
    t
};

/// Below this many bytes [`crc64_update`] uses the tables (the vector code's set-up costs more).
const CRC64_VECTOR_MIN_BYTES: usize = 16;

/// Continues a CRC-64 over more bytes (streamed snapshots, the append-only log's records, DUMP
/// payloads): crc-fast's carry-less multiplication (PCLMULQDQ, about 60 GB/s here against 1.8
/// for the tables; the append-only log's writer spent 5% of a busy node's CPU in the tables),
/// the tables for a few bytes. Equal to [`crc64_bytewise`].
pub fn crc64_update(crc: u64, data: &[u8]) -> u64 {
    if data.len() < CRC64_VECTOR_MIN_BYTES {
        return crc64_tables(crc, data);
    }
    let mut d = crc_fast::Digest::new_with_init_state(crc_fast::CrcAlgorithm::Crc64Redis, crc);
    d.update(data);
    d.finalize()
}

/// [`crc64_update`] by tables: eight bytes per step (slicing by 8), the tail byte by byte.
pub fn crc64_tables(crc: u64, data: &[u8]) -> u64 {
    let t = &CRC64_TABLES;
    let mut crc = crc;
    let mut chunks = data.chunks_exact(8);
    for c in &mut chunks {
        let x = crc ^ u64::from_le_bytes([c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7]]);
        crc = t[7][(x & 0xff) as usize]
            ^ t[6][((x >> 8) & 0xff) as usize]
            ^ t[5][((x >> 16) & 0xff) as usize]
            ^ t[4][((x >> 24) & 0xff) as usize]
            ^ t[3][((x >> 32) & 0xff) as usize]
            ^ t[2][((x >> 40) & 0xff) as usize]
            ^ t[1][((x >> 48) & 0xff) as usize]
            ^ t[0][(x >> 56) as usize];
    }
    crc64_bytewise(crc, chunks.remainder())
}

/// The byte-at-a-time CRC-64 (the definition [`crc64_update`] is checked against).
pub fn crc64_bytewise(crc: u64, data: &[u8]) -> u64 {
    data.iter().fold(crc, |crc, &b| {
        CRC64_TABLES[0][((crc ^ b as u64) & 0xff) as usize] ^ (crc >> 8)
    })
}

/// Appends a length-prefixed byte string.
pub fn put_bytes(out: &mut Vec<u8>, b: &[u8]) {
    put_varint(out, b.len() as u64);
    out.extend_from_slice(b);
}

/// Reads a length-prefixed byte string; returns it and the rest.
pub fn get_bytes(b: &[u8]) -> Option<(&[u8], &[u8])> {
    let (len, rest) = get_varint(b)?;
    let len = usize::try_from(len).ok()?;
    (rest.len() >= len).then(|| rest.split_at(len))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_strings_encoded_length_is_known_before_encoding_it() {
        for n in [0usize, 1, 127, 128, 16_383, 16_384, 2_097_152, 3_000_000] {
            let s = vec![b'x'; n];
            let mut out = Vec::new();
            encode_value(ValueRef::Str(&s), &mut out);
            assert_eq!(
                encoded_len_of_string(ValueRef::Str(&s)),
                Some(out.len()),
                "{n}"
            );
        }
    }

    #[test]
    fn varints_and_crc() {
        assert_eq!(crc64(b"123456789"), 0xe9c6_d914_c4b8_d9ca);
        // The vector code and the tables equal the byte-at-a-time definition at every length
        // and split (and from a running CRC, over lengths where the vector code folds).
        let data: Vec<u8> = (0..300u32)
            .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
            .collect();
        for len in 0..data.len() {
            for split in [0, len / 3, len] {
                let whole = crc64_bytewise(0, &data[..len]);
                let parts = crc64_update(crc64_update(0, &data[..split]), &data[split..len]);
                assert_eq!(crc64_tables(0, &data[..len]), whole);
                assert_eq!(parts, whole, "len {len} split {split}");
            }
        }
        assert_eq!(crc64_update(crc64(b"1234"), b"56789"), crc64(b"123456789"));
        let big: Vec<u8> = (0..100_003u32)
            .map(|i| (i.wrapping_mul(40_503) >> 7) as u8)
            .collect();
        for len in [255, 256, 257, 4096, 10_001, 100_003] {
            let start = crc64(b"running");
            assert_eq!(
                crc64_update(start, &big[..len]),
                crc64_bytewise(start, &big[..len])
            );
        }
        assert_eq!(get_varint(&[0xff; 11]), None);
        let mut v = Vec::new();
        put_varint(&mut v, u64::MAX);
        assert_eq!(get_varint(&v), Some((u64::MAX, &[][..])));
        let mut b = Vec::new();
        put_bytes(&mut b, b"abc");
        assert_eq!(get_bytes(&b), Some((&b"abc"[..], &[][..])));
        assert_eq!(get_bytes(&b[..2]), None);
    }

    #[test]
    fn strings_round_trip() {
        let mut out = Vec::new();
        encode_value(ValueRef::Str(b"hello"), &mut out);
        match decode_value(&out, &EncodingLimits::default()) {
            Some(Payload::Inline(s)) => assert_eq!(s, b"hello"),
            _ => panic!("decode"),
        }
        assert!(decode_value(&out[..3], &EncodingLimits::default()).is_none());
    }
}
