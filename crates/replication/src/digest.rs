//! Slot digests for verification (`SLOTDIGEST`, `shoal verify`, the simulator's convergence check):
//! an order-independent combination (wrapping sum) of a CRC-64 per live key over its key, type,
//! value, version and expiry. Collections are hashed element by element and the elements combined
//! the same order-independent way (lists, which are ordered, in order), so two nodes holding the
//! same members stored in another internal order (after an SREM, a rehash, a different encoding)
//! give the same digest.

use shoal_keyspace::codec::{self, crc64};
use shoal_keyspace::types::set::Member;
use shoal_keyspace::{Entry, Keyspace, Object, ValueRef};

/// A canonical digest of one value: equal for equal contents whatever the internal order.
pub fn value_digest(v: ValueRef<'_>) -> u64 {
    let mut buf = Vec::new();
    let elem = |tag: u8, parts: &[&[u8]], buf: &mut Vec<u8>| -> u64 {
        buf.clear();
        buf.push(tag);
        for p in parts {
            codec::put_bytes(buf, p);
        }
        crc64(buf) | 1
    };
    match v {
        // Digests walk the keyspace under its locks: `slot_digest` reads cold values first.
        ValueRef::Cold(h) => unreachable!("digest of cold value {h:?} without loading it"),
        ValueRef::Str(s) => elem(0, &[s], &mut buf),
        ValueRef::Obj(Object::RawString(s)) => elem(0, &[s.as_slice()], &mut buf),
        ValueRef::Obj(Object::List(l)) => {
            // Ordered: one CRC over the elements in order.
            buf.clear();
            buf.push(1);
            for e in l.iter() {
                codec::put_bytes(&mut buf, e);
            }
            crc64(&buf) | 1
        }
        ValueRef::Obj(Object::Set(s)) => {
            let mut sum = 2u64;
            let mut num = String::new();
            for m in s.iter() {
                let bytes: &[u8] = match m {
                    Member::Int(i) => {
                        num.clear();
                        num.push_str(&i.to_string());
                        num.as_bytes()
                    }
                    Member::Bytes(b) => b,
                };
                sum = sum.wrapping_add(elem(2, &[bytes], &mut buf));
            }
            sum
        }
        ValueRef::Obj(Object::ZSet(z)) => {
            let mut sum = 3u64;
            for (m, score) in z.iter() {
                sum = sum.wrapping_add(elem(3, &[m, &score.to_bits().to_le_bytes()], &mut buf));
            }
            sum
        }
        ValueRef::Obj(Object::Stream(s)) => {
            // Order matters in a stream: one running CRC over the whole encoding.
            let mut body = Vec::new();
            s.encode(&mut body);
            15u64.wrapping_add(crc64(&body))
        }
        ValueRef::Obj(Object::Bloom(b)) => {
            // The whole filter (its bits and counters) in one CRC.
            let mut body = Vec::new();
            b.encode(&mut body);
            7u64.wrapping_add(crc64(&body))
        }
        ValueRef::Obj(Object::Hash(h)) => {
            let mut sum = 4u64;
            for (f, v) in h.iter() {
                sum = sum.wrapping_add(elem(4, &[f, v], &mut buf));
            }
            // Field deadlines (HEXPIRE) count too; a hash without any digests as before.
            for (f, at) in h.field_ttls() {
                sum = sum.wrapping_add(elem(5, &[f, &at.to_le_bytes()], &mut buf));
            }
            sum
        }
    }
}

/// The digest of one key whose value is in memory.
pub fn entry_digest(e: &Entry) -> u64 {
    entry_digest_with(e, value_digest(e.value()))
}

/// The digest of one key, reading a value on the disk tier from it (a value the tier lost
/// digests as an empty string: the key is about to go).
pub fn entry_digest_in(ks: &Keyspace, e: &Entry) -> u64 {
    let Some(h) = e.cold() else {
        return entry_digest(e);
    };
    let limits = shoal_keyspace::EncodingLimits::default();
    let vd = match ks
        .load_cold_blocking(h)
        .as_deref()
        .and_then(|b| codec::decode_value(b, &limits).map(|p| (b, p)))
    {
        Some((_, shoal_keyspace::Payload::Inline(s))) => value_digest(ValueRef::Str(s)),
        Some((_, shoal_keyspace::Payload::Object(o))) => value_digest(ValueRef::Obj(&o)),
        _ => value_digest(ValueRef::Str(b"")),
    };
    entry_digest_with(e, vd)
}

fn entry_digest_with(e: &Entry, value_digest: u64) -> u64 {
    let mut buf = Vec::with_capacity(e.key().len() + 32);
    codec::put_bytes(&mut buf, e.key());
    buf.extend_from_slice(&value_digest.to_le_bytes());
    buf.extend_from_slice(&e.version().to_le_bytes());
    buf.extend_from_slice(&e.expire_ms().unwrap_or(0).to_le_bytes());
    crc64(&buf) | 1
}

/// Digest of one slot of a database. Equal on two nodes exactly when they hold the same keys with
/// the same values, versions and deadlines (barring collisions).
pub fn slot_digest(ks: &Keyspace, db: usize, slot: u16, now_ms: u64) -> u64 {
    let shard = ks.lock(ks.shard_of(slot));
    let mut sum = 0u64;
    shard.for_each_in_slot(db, slot, now_ms, |e| {
        sum = sum.wrapping_add(entry_digest_in(ks, e));
    });
    sum
}

#[cfg(test)]
mod tests {
    use super::*;
    use shoal_keyspace::types::set::Set;
    use shoal_keyspace::{EncodingLimits, Payload};

    #[test]
    fn equal_sets_in_another_order_have_equal_digests() {
        let limits = EncodingLimits::default();
        let mut a = Set::default();
        let mut b = Set::default();
        for i in 0..200u32 {
            a.insert(format!("m{i}").as_bytes(), &limits);
        }
        for i in (0..210u32).rev() {
            b.insert(format!("m{i}").as_bytes(), &limits);
        }
        for i in 200..210u32 {
            b.remove(format!("m{i}").as_bytes());
        }
        let (oa, ob) = (Object::Set(a), Object::Set(b));
        let mut ea = Vec::new();
        let mut eb = Vec::new();
        codec::encode_value(ValueRef::Obj(&oa), &mut ea);
        codec::encode_value(ValueRef::Obj(&ob), &mut eb);
        assert_eq!(
            value_digest(ValueRef::Obj(&oa)),
            value_digest(ValueRef::Obj(&ob))
        );
        // A different member changes it.
        let Object::Set(mut c) = ob else {
            unreachable!()
        };
        c.insert(b"other", &limits);
        assert_ne!(
            value_digest(ValueRef::Obj(&oa)),
            value_digest(ValueRef::Obj(&Object::Set(c)))
        );
        let _ = Payload::Inline(b"");
    }

    #[test]
    fn an_intset_and_a_hashtable_with_the_same_members_agree() {
        let small = EncodingLimits::default();
        let tiny = EncodingLimits {
            set_max_intset_entries: 0,
            ..EncodingLimits::default()
        };
        let mut a = Set::default();
        let mut b = Set::default();
        for i in 0..5i64 {
            a.insert(i.to_string().as_bytes(), &small);
            b.insert(i.to_string().as_bytes(), &tiny);
        }
        assert_eq!(
            value_digest(ValueRef::Obj(&Object::Set(a))),
            value_digest(ValueRef::Obj(&Object::Set(b)))
        );
    }
}
