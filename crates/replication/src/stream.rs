//! The one codec of the replication stream, both directions: effects as the primary encodes them,
//! as a replica decodes and applies them, and the replica's acknowledgements.
//!
//! The stream carries *effects*, not commands. Each shard queues its writes in order
//! (`shoal_keyspace::delta::Pending`) and the queue is appended under the shard lock, so per key
//! the stream is in write order. A write that noted its element-level changes is sent as a delta
//! (`SHOALDELTA`: the ops, the version they were made from and the version they lead to); any other
//! write is read back and sent as the key's state (`SHOALPUT`: value, absolute expiry, version) or
//! its deletion (`SHOALDEL`); FLUSHDB/FLUSHALL send `SHOALFLUSH`, SWAPDB `SHOALSWAPDB`.
//!
//! A replica applies puts and deletes by version (a put at or after the key's version, a delete
//! newer than it), so an effect it already has (from a snapshot taken while the stream ran) is
//! harmless; a delta applies only to its base version, is skipped when the key is already at its
//! end version, and anything else is a broken stream (the replica resynchronises). Relative TTLs,
//! random choices, evictions and expiry reach replicas as the concrete outcome they had on the
//! primary. Frames are RESP multibulks, so the request decoder splits them.

use std::collections::HashSet;

use shoal_keyspace::delta::Pending;
use shoal_keyspace::{EncodingLimits, Entry, Hlc, Keyspace, Payload, Shard, codec, key_slot};

/// Effect names. They are not commands: a client sending them gets `unknown command`.
pub const PUT: &[u8] = b"SHOALPUT";
pub const DEL: &[u8] = b"SHOALDEL";
pub const DELTA: &[u8] = b"SHOALDELTA";
pub const FLUSH: &[u8] = b"SHOALFLUSH";
pub const SWAPDB: &[u8] = b"SHOALSWAPDB";
pub const PING: &[u8] = b"PING";
pub const FUNCTIONS: &[u8] = b"SHOALFUNCTIONS";

/// One decoded effect; byte fields borrow the frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Effect<'a> {
    /// The full state of a key; `value` is the keyspace value codec.
    Put {
        db: usize,
        key: &'a [u8],
        version: u64,
        expire_ms: Option<u64>,
        ext_version: Option<u64>,
        /// The stale-while-revalidate deadline, sent (as an eighth field) only when set.
        stale_ms: Option<u64>,
        value: &'a [u8],
    },
    /// Element-level changes (`shoal_keyspace::delta`) made to the key at version `base`,
    /// leaving it at version `new`.
    Delta {
        db: usize,
        key: &'a [u8],
        base: u64,
        new: u64,
        ops: &'a [u8],
    },
    /// Delete if older than `version`.
    Del {
        db: usize,
        key: &'a [u8],
        version: u64,
    },
    /// Delete every key of one database (or all) older than `version`.
    Flush {
        db: Option<usize>,
        version: u64,
    },
    SwapDb {
        a: usize,
        b: usize,
    },
    /// Keep-alive, so a replica can tell a quiet primary from a dead link.
    Ping,
    /// The primary's whole set of function libraries (a FUNCTION DUMP payload) after a change,
    /// and at the start of a full copy: the replica replaces its libraries with it. Not a
    /// keyspace effect: [`apply`] leaves it to the caller (`replica_link::FunctionsSink`).
    Functions {
        payload: &'a [u8],
    },
}

/// A stream that cannot be applied: the link is dropped and the replica resynchronises.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StreamError(pub String);

impl std::fmt::Display for StreamError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// A bulk string's header, `$n\r\n`. Most lengths in an effect (a key's, a number's, a small
/// value's) are below 100: those are one copy of at most five bytes, with no call.
#[inline(always)]
fn bulk_header(out: &mut Vec<u8>, n: usize) {
    if n < 10 {
        out.extend_from_slice(&[b'$', b'0' + n as u8, b'\r', b'\n']);
    } else if n < 100 {
        out.extend_from_slice(&[
            b'$',
            b'0' + (n / 10) as u8,
            b'0' + (n % 10) as u8,
            b'\r',
            b'\n',
        ]);
    } else {
        out.push(b'$');
        shoal_resp::push_u64(out, n as u64);
        out.extend_from_slice(b"\r\n");
    }
}

#[inline]
fn bulk(out: &mut Vec<u8>, b: &[u8]) {
    bulk_header(out, b.len());
    out.extend_from_slice(b);
    out.extend_from_slice(b"\r\n");
}

/// A number as a bulk string, its digits written in place.
#[inline]
fn bulk_u64(out: &mut Vec<u8>, v: u64) {
    if v < 10 {
        out.extend_from_slice(&[b'$', b'1', b'\r', b'\n', b'0' + v as u8, b'\r', b'\n']);
        return;
    }
    bulk_header(out, shoal_resp::decimal_len(v));
    shoal_resp::push_u64(out, v);
    out.extend_from_slice(b"\r\n");
}

/// A bulk string of what `fill` appends to `out`, written in place: the bytes go in first and the
/// `$len` header is then made room for in front of them (a move of the bytes, no allocation).
fn bulk_with(out: &mut Vec<u8>, fill: impl FnOnce(&mut Vec<u8>)) {
    let start = out.len();
    fill(out);
    let n = out.len() - start;
    let mut tmp = [0u8; 20];
    let digits = shoal_resp::fmt_u64(n as u64, &mut tmp);
    let head = 1 + digits.len() + 2;
    out.resize(out.len() + head, 0);
    out.copy_within(start..start + n, start + head);
    out[start] = b'$';
    out[start + 1..start + 1 + digits.len()].copy_from_slice(digits);
    out[start + head - 2..start + head].copy_from_slice(b"\r\n");
    out.extend_from_slice(b"\r\n");
}

#[inline]
fn bulk_opt(out: &mut Vec<u8>, v: Option<u64>) {
    match v {
        Some(v) => bulk_u64(out, v),
        None => out.extend_from_slice(b"$2\r\n-1\r\n"),
    }
}

/// `SHOALPUT db key version expire_ms|-1 ext_version|-1 value [stale_ms]` — the full state of a
/// key. The stale-while-revalidate deadline comes last and only when the key has one, so a stream
/// without any reads the same as before it existed.
pub fn encode_put(out: &mut Vec<u8>, db: usize, e: &Entry) {
    let stale = e.stale_ms();
    let value = e.value();
    let string_len = codec::encoded_len_of_string(value);
    // Room for the whole effect at once (a string's length is known; a collection's encoding
    // grows the buffer as it goes): the appends below then never reallocate midway. The
    // frame's own bytes: the array header, `SHOALPUT`'s bulk, and up to five numbers of at most
    // 20 digits as bulks, each with its `$len` and two line ends.
    const FRAME: usize = 4 + 14 + 5 * (1 + 2 + 2 + 20 + 2);
    out.reserve(FRAME + e.key().len() + 8 + string_len.map_or(0, |n| n + 24));
    // The array header and the effect's name in one constant copy.
    out.extend_from_slice(if stale.is_some() {
        b"*8\r\n$8\r\nSHOALPUT\r\n"
    } else {
        b"*7\r\n$8\r\nSHOALPUT\r\n"
    });
    bulk_u64(out, db as u64);
    bulk(out, e.key());
    bulk_u64(out, e.version());
    bulk_opt(out, e.expire_ms());
    bulk_opt(out, e.ext_version());
    match string_len {
        // A string's encoding has a known length: the bulk's header goes first, with no move.
        Some(n) => {
            bulk_header(out, n);
            codec::encode_value(value, out);
            out.extend_from_slice(b"\r\n");
        }
        None => bulk_with(out, |out| codec::encode_value(value, out)),
    }
    if let Some(t) = stale {
        bulk_u64(out, t);
    }
}

/// `SHOALDEL db key version`.
pub fn encode_del(out: &mut Vec<u8>, db: usize, key: &[u8], version: u64) {
    out.extend_from_slice(b"*4\r\n");
    bulk(out, DEL);
    bulk_u64(out, db as u64);
    bulk(out, key);
    bulk_u64(out, version);
}

/// `SHOALDELTA db key base new ops`.
pub fn encode_delta(out: &mut Vec<u8>, db: usize, key: &[u8], base: u64, new: u64, ops: &[u8]) {
    out.extend_from_slice(b"*6\r\n");
    bulk(out, DELTA);
    bulk_u64(out, db as u64);
    bulk(out, key);
    bulk_u64(out, base);
    bulk_u64(out, new);
    bulk(out, ops);
}

/// Encodes a shard's queued changes (`Shard::take_pending`), oldest first, reading back the keys
/// to send whole. Call under the shard's lock and append the bytes before releasing it.
///
/// A key read back is sent as it is now, which already holds every later change queued for it, so
/// a key queued for read-back anywhere in `items` is sent once and its deltas are left out.
/// Deletions take their version from `hlc` here, under the lock: a later write of the key (which
/// needs the lock) gets a newer one.
pub fn encode_pending(out: &mut Vec<u8>, shard: &Shard, items: &[Pending], hlc: &Hlc, now_ms: u64) {
    let read_back = |out: &mut Vec<u8>, db: usize, key: &[u8]| {
        let slot = key_slot(key);
        match shard.peek_any(db, slot, key) {
            Some(e) => encode_put(out, db, e),
            None => encode_del(out, db, key, hlc.next(now_ms)),
        }
    };
    // One change (the usual case): nothing to leave out, no sets to build.
    let (whole, mut sent) = if items.len() > 1 {
        let whole: HashSet<(usize, &[u8])> = items
            .iter()
            .filter(|p| matches!(p, Pending::Key { .. }))
            .map(|p| p.db_key())
            .collect();
        let sent = HashSet::with_capacity(whole.len());
        (whole, sent)
    } else {
        (HashSet::new(), HashSet::new())
    };
    for p in items {
        match p {
            Pending::Key { db, key } => {
                if items.len() == 1 || sent.insert((*db, &key[..])) {
                    read_back(out, *db, key);
                }
            }
            Pending::Put { db, key, at, len } => {
                if !whole.contains(&(*db, &key[..])) {
                    out.extend_from_slice(shard.effect_bytes(*at, *len));
                }
            }
            // Left out if the key is read back (before or after this point: the read-back holds
            // this change either way).
            Pending::Delta {
                db,
                key,
                base,
                new,
                ops,
            } => {
                if !whole.contains(&(*db, &key[..])) {
                    encode_delta(out, *db, key, *base, *new, ops);
                }
            }
            // Only active-active groups use increments as such.
            Pending::Count { .. } => {}
        }
    }
}

/// Where a shard's queue is only writes encoded as they were made ([`Pending::Put`]): their
/// stream bytes are then the run `start..end` of the shard's effect buffer, in order, and
/// [`encode_pending`] would copy exactly that run. `None` for an empty queue or any other item
/// (a read-back, a delta) — those go through [`encode_pending`].
pub fn encoded_run(items: &[Pending]) -> Option<(usize, usize)> {
    let mut run: Option<(usize, usize)> = None;
    for p in items {
        let Pending::Put { at, len, .. } = p else {
            return None;
        };
        run = match run {
            None => Some((*at, at + len)),
            // The buffer only grows while the queue fills: each put follows the one before.
            Some((start, end)) if *at == end => Some((start, at + len)),
            Some(_) => return None,
        };
    }
    run
}

/// `SHOALFLUSH db|-1 version`.
pub fn encode_flush(out: &mut Vec<u8>, db: Option<usize>, version: u64) {
    out.extend_from_slice(b"*3\r\n");
    bulk(out, FLUSH);
    bulk_opt(out, db.map(|d| d as u64));
    bulk_u64(out, version);
}

/// `SHOALSWAPDB a b`.
pub fn encode_swapdb(out: &mut Vec<u8>, a: usize, b: usize) {
    out.extend_from_slice(b"*3\r\n");
    bulk(out, SWAPDB);
    bulk_u64(out, a as u64);
    bulk_u64(out, b as u64);
}

/// `SHOALFUNCTIONS payload`.
pub fn encode_functions(out: &mut Vec<u8>, payload: &[u8]) {
    out.extend_from_slice(b"*2\r\n");
    bulk(out, FUNCTIONS);
    bulk(out, payload);
}

pub fn encode_ping(out: &mut Vec<u8>) {
    out.extend_from_slice(b"*1\r\n$4\r\nPING\r\n");
}

/// `REPLCONF ACK offset`, sent by a replica.
pub fn encode_ack(out: &mut Vec<u8>, offset: u64) {
    let mut tmp = [0u8; 20];
    let off = shoal_resp::fmt_u64(offset, &mut tmp);
    shoal_resp::encode_request(out, &[b"REPLCONF", b"ACK", off]);
}

/// `REPLCONF ACK offset FACK fsynced`, sent by a replica whose append-only log holds `fsynced`
/// on disk (Redis 7.2).
pub fn encode_ack_fack(out: &mut Vec<u8>, offset: u64, fsynced: u64) {
    let mut tmp = [0u8; 20];
    let off = shoal_resp::fmt_u64(offset, &mut tmp).to_vec();
    let f = shoal_resp::fmt_u64(fsynced, &mut tmp);
    shoal_resp::encode_request(out, &[b"REPLCONF", b"ACK", &off, b"FACK", f]);
}

/// The `FACK` offset of a `REPLCONF ACK offset FACK fsynced` frame.
pub fn parse_fack(args: &[&[u8]]) -> Option<u64> {
    if parse_ack(args).is_some() && args.len() >= 5 && args[3].eq_ignore_ascii_case(b"FACK") {
        std::str::from_utf8(args[4]).ok()?.parse().ok()
    } else {
        None
    }
}

/// The offset of a `REPLCONF ACK offset` frame; `None` for any other frame.
pub fn parse_ack(args: &[&[u8]]) -> Option<u64> {
    if args.len() >= 3
        && args[0].eq_ignore_ascii_case(b"REPLCONF")
        && args[1].eq_ignore_ascii_case(b"ACK")
    {
        std::str::from_utf8(args[2]).ok()?.parse().ok()
    } else {
        None
    }
}

fn parse_u64(b: &[u8]) -> Result<u64, StreamError> {
    std::str::from_utf8(b)
        .ok()
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| StreamError("bad number in the replication stream".into()))
}

fn parse_opt(b: &[u8]) -> Result<Option<u64>, StreamError> {
    if b == b"-1" {
        Ok(None)
    } else {
        parse_u64(b).map(Some)
    }
}

/// Decodes one frame. `databases` bounds the database numbers.
pub fn decode<'a>(args: &[&'a [u8]], databases: usize) -> Result<Effect<'a>, StreamError> {
    let db_of = |b: &[u8]| -> Result<usize, StreamError> {
        let d = parse_u64(b)?;
        if d < databases as u64 {
            Ok(d as usize)
        } else {
            Err(StreamError("database out of range in the stream".into()))
        }
    };
    let Some(name) = args.first() else {
        return Err(StreamError("empty frame in the replication stream".into()));
    };
    if name.eq_ignore_ascii_case(PUT) && (args.len() == 7 || args.len() == 8) {
        Ok(Effect::Put {
            db: db_of(args[1])?,
            key: args[2],
            version: parse_u64(args[3])?,
            expire_ms: parse_opt(args[4])?,
            ext_version: parse_opt(args[5])?,
            stale_ms: match args.get(7) {
                Some(a) => Some(parse_u64(a)?),
                None => None,
            },
            value: args[6],
        })
    } else if name.eq_ignore_ascii_case(DELTA) && args.len() == 6 {
        Ok(Effect::Delta {
            db: db_of(args[1])?,
            key: args[2],
            base: parse_u64(args[3])?,
            new: parse_u64(args[4])?,
            ops: args[5],
        })
    } else if name.eq_ignore_ascii_case(DEL) && args.len() == 4 {
        Ok(Effect::Del {
            db: db_of(args[1])?,
            key: args[2],
            version: parse_u64(args[3])?,
        })
    } else if name.eq_ignore_ascii_case(FLUSH) && args.len() == 3 {
        let db = match parse_opt(args[1])? {
            Some(d) => Some(db_of(d.to_string().as_bytes())?),
            None => None,
        };
        Ok(Effect::Flush {
            db,
            version: parse_u64(args[2])?,
        })
    } else if name.eq_ignore_ascii_case(SWAPDB) && args.len() == 3 {
        Ok(Effect::SwapDb {
            a: db_of(args[1])?,
            b: db_of(args[2])?,
        })
    } else if name.eq_ignore_ascii_case(PING) {
        Ok(Effect::Ping)
    } else if name.eq_ignore_ascii_case(FUNCTIONS) && args.len() == 2 {
        Ok(Effect::Functions { payload: args[1] })
    } else {
        Err(StreamError(format!(
            "unknown effect '{}' in the replication stream",
            String::from_utf8_lossy(&name[..name.len().min(64)])
        )))
    }
}

/// Applies one effect to a replica's keyspace, by version. `overlap`: the effect lies in the
/// stretch of the stream that overlaps the snapshot the data came from (see `snapshot`), where a
/// key the replica does not hold may have been deleted after the effect was made.
pub fn apply(
    ks: &Keyspace,
    effect: &Effect<'_>,
    limits: &EncodingLimits,
    now_ms: u64,
    overlap: bool,
) -> Result<(), StreamError> {
    match *effect {
        Effect::Put {
            db,
            key,
            version,
            expire_ms,
            ext_version,
            stale_ms,
            value,
        } => {
            let payload = codec::decode_value(value, limits)
                .ok_or_else(|| StreamError("bad value in the replication stream".into()))?;
            ks.hlc.observe(version);
            let slot = key_slot(key);
            let mut shard = ks.lock(ks.shard_of(slot));
            match payload {
                // A plain string (a SET's): written over the old one in place where it fits.
                Payload::Inline(value) if ext_version.is_none() && stale_ms.is_none() => {
                    let w = shoal_keyspace::StringWrite {
                        key,
                        value,
                        expire_ms,
                        version,
                    };
                    shard.apply_string_in_order(db, slot, w, now_ms);
                }
                payload => {
                    let entry = Entry::with_stale(
                        key,
                        payload,
                        expire_ms,
                        ext_version,
                        stale_ms,
                        version,
                        0,
                    );
                    shard.apply_put_in_order(db, slot, entry, now_ms);
                }
            }
        }
        Effect::Delta {
            db,
            key,
            base,
            new,
            ops,
        } => {
            ks.hlc.observe(new);
            let slot = key_slot(key);
            let mut shard = ks.lock(ks.shard_of(slot));
            if overlap && shard.peek_any(db, slot, key).is_none() {
                return Ok(());
            }
            shard
                .apply_delta(db, slot, key, base, new, ops, limits)
                .map_err(|e| {
                    StreamError(format!(
                        "{e} (key '{}', {base} -> {new})",
                        String::from_utf8_lossy(&key[..key.len().min(64)])
                    ))
                })?;
        }
        Effect::Del { db, key, version } => {
            ks.hlc.observe(version);
            let slot = key_slot(key);
            ks.lock(ks.shard_of(slot)).apply_del(db, slot, key, version);
        }
        Effect::Flush { db, version } => {
            ks.hlc.observe(version);
            for mut shard in ks.lock_all() {
                for d in 0..ks.databases() {
                    if db.is_none_or(|x| x == d) {
                        shard.apply_flush(d, version);
                    }
                }
            }
            // Client-side caches on this replica are flushed too, as Redis's replica does.
            ks.lock(0).note(
                shoal_keyspace::notify::TRACKING,
                shoal_keyspace::notify::TRACKING_FLUSH,
                db.unwrap_or(0),
                b"",
            );
        }
        Effect::SwapDb { a, b } => {
            let mut shards = ks.lock_all();
            ks.note_swap();
            for shard in shards.iter_mut() {
                shard.swap_db(a, b);
            }
        }
        Effect::Ping | Effect::Functions { .. } => {}
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use shoal_resp::{Decoded, RequestDecoder};

    fn frames(bytes: &[u8]) -> Vec<Vec<Vec<u8>>> {
        let mut d = RequestDecoder::default();
        let mut args = Vec::new();
        let mut pos = 0;
        let mut out = Vec::new();
        while let Ok(Decoded::Frame { end, .. }) = d.decode(bytes, pos, &mut args) {
            out.push(args.iter().map(|r| bytes[r.clone()].to_vec()).collect());
            pos = end;
        }
        assert_eq!(pos, bytes.len(), "every byte is a whole frame");
        out
    }

    proptest::proptest! {
        #[test]
        fn bulk_headers_and_numbers_are_what_resp_spells(
            n in 0usize..1_000_000,
            short in 0usize..200,
            v: u64,
            small in 0u64..1000,
        ) {
            let mut out = Vec::new();
            for n in [n, short] {
                out.clear();
                bulk_header(&mut out, n);
                let want = format!("${n}\r\n");
                proptest::prop_assert_eq!(&out, want.as_bytes());
            }
            for v in [v, small] {
                out.clear();
                bulk_u64(&mut out, v);
                let digits = v.to_string();
                let want = format!("${}\r\n{digits}\r\n", digits.len());
                proptest::prop_assert_eq!(&out, want.as_bytes());
            }
        }
    }

    #[test]
    fn every_effect_round_trips_through_the_codec() {
        let mut e = Entry::new_string(b"k", b"v", Some(5), 9);
        let mut out = Vec::new();
        encode_put(&mut out, 0, &e);
        e.set_stale_ms(Some(4));
        let mut stale = Vec::new();
        encode_put(&mut stale, 0, &e);
        let f = frames(&stale);
        let a: Vec<&[u8]> = f[0].iter().map(|x| x.as_slice()).collect();
        assert!(matches!(
            decode(&a, 16).unwrap(),
            Effect::Put {
                stale_ms: Some(4),
                expire_ms: Some(5),
                ..
            }
        ));
        encode_del(&mut out, 1, b"k", 10);
        encode_flush(&mut out, Some(2), 11);
        encode_flush(&mut out, None, 12);
        encode_swapdb(&mut out, 0, 3);
        encode_ping(&mut out);
        encode_ack(&mut out, 77);
        encode_ack_fack(&mut out, 80, 78);
        let fs = frames(&out);
        assert_eq!(fs.len(), 8);
        let a: Vec<&[u8]> = fs[7].iter().map(|x| x.as_slice()).collect();
        assert_eq!((parse_ack(&a), parse_fack(&a)), (Some(80), Some(78)));
        for f in &fs[..6] {
            let a: Vec<&[u8]> = f.iter().map(|x| x.as_slice()).collect();
            assert!(decode(&a, 16).is_ok(), "{a:?}");
        }
        let a: Vec<&[u8]> = fs[0].iter().map(|x| x.as_slice()).collect();
        let Effect::Put {
            db,
            key,
            version,
            expire_ms,
            ext_version,
            ..
        } = decode(&a, 16).unwrap()
        else {
            panic!("a put")
        };
        assert_eq!(
            (db, key, version, expire_ms, ext_version),
            (0, &b"k"[..], 9, Some(5), None)
        );
        let a: Vec<&[u8]> = fs[2].iter().map(|x| x.as_slice()).collect();
        assert_eq!(
            decode(&a, 16).unwrap(),
            Effect::Flush {
                db: Some(2),
                version: 11
            }
        );
        let a: Vec<&[u8]> = fs[4].iter().map(|x| x.as_slice()).collect();
        assert_eq!(decode(&a, 16).unwrap(), Effect::SwapDb { a: 0, b: 3 });
        let a: Vec<&[u8]> = fs[6].iter().map(|x| x.as_slice()).collect();
        assert_eq!(parse_ack(&a), Some(77));
    }

    #[test]
    fn a_queue_sends_a_key_once_when_it_is_also_read_back() {
        let ks = Keyspace::new(2, 4, 1);
        ks.set_recording(true);
        let slot = key_slot(b"k");
        let mut g = ks.lock(ks.shard_of(slot));
        let put_of = |value: &[u8]| {
            let e = Entry::new_string(b"k", value, None, 1);
            let mut out = Vec::new();
            encode_put(&mut out, 0, &e);
            out
        };
        // A write encoded as it is made, alone in the queue: its bytes are the effect.
        g.insert_encoded(
            0,
            slot,
            Entry::new_string(b"k", b"a", None, 1),
            0,
            encode_put,
        );
        let items = g.take_pending();
        let mut out = Vec::new();
        encode_pending(&mut out, &g, &items, &ks.hlc, 0);
        g.recycle_pending(items);
        assert_eq!(out, put_of(b"a"));
        // A read-back queued before an encoded write of the same key: one PUT, of the value as
        // it is now (the encoded write would send an older state after it).
        g.insert(0, slot, Entry::new_string(b"k", b"b", None, 2), 0);
        g.insert_encoded(
            0,
            slot,
            Entry::new_string(b"k", b"c", None, 3),
            0,
            encode_put,
        );
        let items = g.take_pending();
        assert!(matches!(items[1], Pending::Put { .. }), "{items:?}");
        let mut out = Vec::new();
        encode_pending(&mut out, &g, &items, &ks.hlc, 0);
        g.recycle_pending(items);
        let f = frames(&out);
        assert_eq!(f.len(), 1, "one effect for the key");
        let a: Vec<&[u8]> = f[0].iter().map(|x| x.as_slice()).collect();
        let Effect::Put { version, .. } = decode(&a, 16).unwrap() else {
            panic!("a put");
        };
        assert_eq!(version, 3);
    }

    #[test]
    fn a_queue_of_encoded_writes_is_one_run_of_the_effect_buffer_and_anything_else_is_not() {
        let ks = Keyspace::new(2, 4, 1);
        ks.set_recording(true);
        let slot = key_slot(b"k");
        let mut g = ks.lock(ks.shard_of(slot));
        for (i, v) in [b"a", b"b", b"c"].into_iter().enumerate() {
            let e = Entry::new_string(b"k", v, Some(1_000 + i as u64), i as u64 + 1);
            g.insert_encoded(0, slot, e, 0, encode_put);
        }
        let items = g.take_pending();
        let (start, end) = encoded_run(&items).expect("three encoded writes");
        let mut out = Vec::new();
        encode_pending(&mut out, &g, &items, &ks.hlc, 0);
        assert_eq!(g.effect_bytes(start, end - start), &out[..]);
        assert_eq!(frames(&out).len(), 3);
        g.recycle_pending(items);
        assert_eq!(encoded_run(&[]), None);
        // A read-back in the queue: not a run.
        g.insert_encoded(
            0,
            slot,
            Entry::new_string(b"k", b"d", None, 9),
            0,
            encode_put,
        );
        g.insert(0, slot, Entry::new_string(b"k", b"e", None, 10), 0);
        let items = g.take_pending();
        assert_eq!(encoded_run(&items), None);
        g.recycle_pending(items);
    }

    #[test]
    fn a_bulk_written_in_place_is_the_same_bulk() {
        for n in [0usize, 1, 9, 10, 11, 99, 100, 101, 999, 1000, 70_000] {
            let bytes: Vec<u8> = (0..n).map(|i| (i * 7) as u8).collect();
            let (mut a, mut b) = (b"*2\r\n".to_vec(), b"*2\r\n".to_vec());
            bulk(&mut a, &bytes);
            bulk_with(&mut b, |out| out.extend_from_slice(&bytes));
            assert_eq!(a, b, "{n} bytes");
        }
    }

    #[test]
    fn bad_frames_are_errors_not_panics() {
        assert!(decode(&[b"SHOALPUT", b"0"], 16).is_err());
        assert!(decode(&[b"SHOALDEL", b"99", b"k", b"1"], 16).is_err());
        assert!(decode(&[b"SHOALFLUSH", b"x", b"1"], 16).is_err());
        assert!(decode(&[b"SET", b"k", b"v"], 16).is_err());
        assert!(decode(&[], 16).is_err());
    }

    #[test]
    fn applying_is_by_version_and_idempotent() {
        let ks = Keyspace::new(2, 4, 1);
        let limits = EncodingLimits::default();
        let mut v = Vec::new();
        codec::encode_value(shoal_keyspace::ValueRef::Str(b"new"), &mut v);
        let put = |version| Effect::Put {
            db: 0,
            key: b"k",
            version,
            expire_ms: None,
            ext_version: None,
            stale_ms: None,
            value: &v,
        };
        apply(&ks, &put(10), &limits, 0, false).unwrap();
        apply(&ks, &put(10), &limits, 0, false).unwrap();
        apply(
            &ks,
            &Effect::Del {
                db: 0,
                key: b"k",
                version: 5,
            },
            &limits,
            0,
            false,
        )
        .unwrap();
        let slot = key_slot(b"k");
        assert_eq!(
            ks.lock(ks.shard_of(slot))
                .peek_any(0, slot, b"k")
                .map(|e| e.version()),
            Some(10)
        );
        apply(
            &ks,
            &Effect::Flush {
                db: None,
                version: 11,
            },
            &limits,
            0,
            false,
        )
        .unwrap();
        assert!(ks.lock(ks.shard_of(slot)).peek_any(0, slot, b"k").is_none());
    }
}
