//! The snapshot format: every key of every database with its value, expiry and versions. One format
//! serves `SAVE`/`BGSAVE`, loading at start-up, and the full synchronisation of a replica.
//!
//! ```text
//! header   "SHOALSNP" u16 format-version (LE), 40 bytes replication id (ASCII hex; zeros if none),
//!          u64 replication offset the data is at least as new as
//! record   0x01 varint db, bytes key, u64 version, u8 flags (1 expire, 2 ext version, 4 stale),
//!          [u64 expire_ms] [u64 ext_version] [u64 stale_ms], bytes value (the keyspace value
//!          codec); `stale_ms` is the stale-while-revalidate deadline (older readers never see
//!          flag 4, so their files still load)
//! aux      0x02 bytes name, bytes value: node state that is not a key (format 3), e.g.
//!          `functions` (the function libraries, as a FUNCTION DUMP payload)
//! end      0xFF, u64 replication offset when the last shard was read (format 2)
//! footer   u64 CRC-64 of every byte before it (LE)
//! ```
//! `bytes` is a varint length then the bytes; integers are little-endian. Format 1 (no end offset)
//! still loads, with the end offset taken equal to the header's.
//!
//! Writing takes one shard lock at a time, so clients wait at most for one shard's serialisation;
//! the snapshot is therefore not a single point in time. That is fine for replication: the stream
//! offset is taken before the first shard is read, and every write after it reaches the replica
//! through the stream, applied by version (see `stream`). Between the two offsets the stream
//! *overlaps* the snapshot: a key may already be newer in the snapshot than the effects there,
//! even deleted, so a delta for a key the replica does not hold is skipped in that stretch (and is
//! a broken stream after it). For `SAVE` it means each key is saved as of some moment during the
//! save.
//!
//! Loading is incremental ([`Loader::feed`]): bytes can arrive in any chunking, and memory held is
//! one record at most beyond what was fed.

use shoal_keyspace::codec::{self, crc64_update, get_bytes, get_varint, put_bytes, put_varint};
use shoal_keyspace::{EncodingLimits, Entry, Keyspace, key_slot};

pub const MAGIC: &[u8; 8] = b"SHOALSNP";
pub const FORMAT_VERSION: u16 = 3;
/// The first format, without the end offset.
const FORMAT_VERSION_1: u16 = 1;
/// The format before aux records.
const FORMAT_VERSION_2: u16 = 2;
const HEADER_BYTES: usize = 10 + 40 + 8;
const TAG_RECORD: u8 = 0x01;
const TAG_AUX: u8 = 0x02;
/// Aux records a snapshot may hold; more is a corrupt file.
pub const AUX_RECORDS_MAX: usize = 64;
const TAG_END: u8 = 0xFF;
const F_EXPIRE: u8 = 1;
const F_EXTVER: u8 = 2;
const F_STALE: u8 = 4;

/// Streams a snapshot out in chunks, one shard at a time.
pub struct Writer {
    crc: u64,
    pub bytes_written: u64,
    pub keys_written: u64,
    /// One record's encoded value, reused (see `encode_record_with`).
    scratch: Vec<u8>,
}

impl Default for Writer {
    fn default() -> Self {
        Writer::new()
    }
}

impl Writer {
    pub fn new() -> Self {
        Writer {
            crc: 0,
            bytes_written: 0,
            keys_written: 0,
            scratch: Vec::new(),
        }
    }

    fn account(&mut self, chunk: &[u8]) {
        self.crc = crc64_update(self.crc, chunk);
        self.bytes_written += chunk.len() as u64;
    }

    /// The header; `replid`/`offset` say which replication history the data belongs to (a
    /// restarted replica continues from there).
    pub fn header(&mut self, replid: &str, offset: u64) -> Vec<u8> {
        let mut out = Vec::with_capacity(HEADER_BYTES);
        out.extend_from_slice(MAGIC);
        out.extend_from_slice(&FORMAT_VERSION.to_le_bytes());
        let mut id = [b'0'; 40];
        for (d, s) in id.iter_mut().zip(replid.bytes()) {
            *d = s;
        }
        out.extend_from_slice(&id);
        out.extend_from_slice(&offset.to_le_bytes());
        self.account(&out);
        out
    }

    /// An aux record: node state that is not a key, kept by name (see the module header).
    pub fn aux(&mut self, name: &[u8], value: &[u8]) -> Vec<u8> {
        let mut out = Vec::with_capacity(value.len() + name.len() + 12);
        out.push(TAG_AUX);
        put_bytes(&mut out, name);
        put_bytes(&mut out, value);
        self.account(&out);
        out
    }

    /// The records of one shard (all databases), read under that shard's lock only, a piece at a
    /// time ([`SNAPSHOT_ENTRIES_PER_HOLD`] keys); `None` if a
    /// SWAPDB ran since `swaps` was read ([`Keyspace::swaps`]): shards already written are from
    /// before it, this one from after, and the snapshot must start again.
    pub fn shard(&mut self, ks: &Keyspace, index: usize, swaps: u64) -> Option<Vec<u8>> {
        let mut out = Vec::new();
        for db in 0..ks.databases() {
            let mut from = 0;
            loop {
                // The lock is taken for about [`SNAPSHOT_ENTRIES_PER_HOLD`] keys at a time: a
                // write to this shard (a worker's, stalled with its whole connection batch)
                // waits for a piece, not for the shard (a logged SET load lost 5% of its time
                // blocked on the compaction's holds of whole shards). Each key is still read
                // whole; what is written between pieces is in the stream after the start.
                let shard = ks.lock(index);
                if ks.swaps() != swaps {
                    return None;
                }
                from = shard.for_each_entry_from(
                    index,
                    db,
                    from,
                    SNAPSHOT_ENTRIES_PER_HOLD,
                    |_, e| {
                        // A value the disk tier lost is left out, as if evicted.
                        if encode_record_with(&mut out, &mut self.scratch, db, e, ks) {
                            self.keys_written += 1;
                        }
                    },
                );
                if from >= shard.local_slot_count() {
                    break;
                }
                // A writer waiting for this shard gets it before the next piece.
                shard.unlock_fair();
            }
        }
        self.account(&out);
        Some(out)
    }

    /// End marker, with the replication offset once every shard was read, and checksum.
    pub fn finish(&mut self, end_offset: u64) -> Vec<u8> {
        let mut out = vec![TAG_END];
        out.extend_from_slice(&end_offset.to_le_bytes());
        self.account(&out);
        out.extend_from_slice(&self.crc.to_le_bytes());
        self.bytes_written += 8;
        out
    }
}

/// Appends one record (its tag included): the unit of a snapshot, and of the batches an atomic
/// slot migration sends ([`for_each_record`] reads them back). A value on the disk tier is read
/// from it; `false` (nothing written) if the tier lost it.
pub fn encode_record(out: &mut Vec<u8>, db: usize, e: &Entry, ks: &Keyspace) -> bool {
    encode_record_with(out, &mut Vec::new(), db, e, ks)
}

/// [`encode_record`] with the value encoded in `value`, a buffer reused across records (a walk
/// of a million keys allocated and freed one per key).
fn encode_record_with(
    out: &mut Vec<u8>,
    value: &mut Vec<u8>,
    db: usize,
    e: &Entry,
    ks: &Keyspace,
) -> bool {
    value.clear();
    if !ks.encode_entry_value(e, value) {
        return false;
    }
    out.push(TAG_RECORD);
    put_varint(out, db as u64);
    put_bytes(out, e.key());
    out.extend_from_slice(&e.version().to_le_bytes());
    let (exp, ext, stale) = (e.expire_ms(), e.ext_version(), e.stale_ms());
    out.push(
        if exp.is_some() { F_EXPIRE } else { 0 }
            | if ext.is_some() { F_EXTVER } else { 0 }
            | if stale.is_some() { F_STALE } else { 0 },
    );
    for t in [exp, ext, stale].into_iter().flatten() {
        out.extend_from_slice(&t.to_le_bytes());
    }
    put_bytes(out, value);
    true
}

/// The whole snapshot in one buffer (tests; SAVE and compaction write it to their file shard by
/// shard instead).
///
/// A SWAPDB during the walk would leave some shards swapped and others not: the walk starts again,
/// at most [`SNAPSHOT_ATTEMPTS_MAX`] times. `replid_offset` gives the history, read after the swap
/// count of each attempt. `aux` records (name, value) follow the header.
pub fn write_all(
    ks: &Keyspace,
    aux: &[(&[u8], &[u8])],
    replid_offset: impl Fn() -> (String, u64),
) -> Result<Vec<u8>, String> {
    'attempt: for _ in 0..SNAPSHOT_ATTEMPTS_MAX {
        let swaps = ks.swaps();
        let (replid, offset) = replid_offset();
        let mut w = Writer::new();
        let mut out = w.header(&replid, offset);
        for (name, value) in aux {
            out.extend_from_slice(&w.aux(name, value));
        }
        for i in 0..ks.shard_count() {
            match w.shard(ks, i, swaps) {
                Some(chunk) => out.extend_from_slice(&chunk),
                None => continue 'attempt,
            }
        }
        let (_, end_offset) = replid_offset();
        out.extend_from_slice(&w.finish(end_offset.max(offset)));
        return Ok(out);
    }
    Err(format!(
        "SWAPDB ran during each of {SNAPSHOT_ATTEMPTS_MAX} attempts to take a snapshot"
    ))
}

/// Walks of the keyspace a snapshot may take before giving up (SWAPDB during each).
pub const SNAPSHOT_ATTEMPTS_MAX: usize = 8;

/// Keys a snapshot reads under one hold of a shard's lock (whole slot tables: a table bigger than
/// this is one hold). About 30 µs of encoding for small strings.
pub const SNAPSHOT_ENTRIES_PER_HOLD: usize = 64;

/// Why a snapshot could not be loaded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SnapshotError {
    BadMagic,
    UnsupportedVersion(u16),
    Corrupt(&'static str),
    Checksum,
    DatabaseOutOfRange(u64),
}

impl std::fmt::Display for SnapshotError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SnapshotError::BadMagic => write!(f, "not a shoal snapshot"),
            SnapshotError::UnsupportedVersion(v) => write!(f, "unsupported snapshot version {v}"),
            SnapshotError::Corrupt(what) => write!(f, "corrupt snapshot: {what}"),
            SnapshotError::Checksum => write!(f, "snapshot checksum mismatch"),
            SnapshotError::DatabaseOutOfRange(d) => write!(f, "snapshot database {d} out of range"),
        }
    }
}

/// One decoded record.
pub struct Record<'a> {
    pub db: usize,
    pub key: &'a [u8],
    pub version: u64,
    pub expire_ms: Option<u64>,
    pub ext_version: Option<u64>,
    /// The stale-while-revalidate deadline.
    pub stale_ms: Option<u64>,
    /// Value codec bytes (type byte and body).
    pub value: &'a [u8],
}

impl Record<'_> {
    pub fn to_entry(&self, limits: &EncodingLimits) -> Option<Entry> {
        let payload = codec::decode_value(self.value, limits)?;
        Some(Entry::with_stale(
            self.key,
            payload,
            self.expire_ms,
            self.ext_version,
            self.stale_ms,
            self.version,
            0,
        ))
    }
}

/// Calls `f` with each record of `batch`, a run of whole records as [`encode_record`] writes
/// them (no header, end or checksum: the caller's transport checks its messages). A batch that
/// is cut short or holds anything else is an error; records before the fault were passed on.
pub fn for_each_record(
    mut batch: &[u8],
    mut f: impl FnMut(Record<'_>),
) -> Result<usize, SnapshotError> {
    let mut n = 0;
    while let Some((&tag, rest)) = batch.split_first() {
        if tag != TAG_RECORD {
            return Err(SnapshotError::Corrupt("record tag"));
        }
        match parse_record(rest)? {
            Some((rec, used)) => {
                f(rec);
                n += 1;
                batch = &rest[used..];
            }
            None => return Err(SnapshotError::Corrupt("record cut short")),
        }
    }
    Ok(n)
}

/// Incremental snapshot parser.
pub struct Loader {
    /// From the header, once parsed.
    pub replid: String,
    pub offset: u64,
    /// From the end marker: the offset up to which the stream overlaps the data.
    pub end_offset: u64,
    format: u16,
    buf: Vec<u8>,
    crc: u64,
    header_seen: bool,
    ended: bool,
    pub records: u64,
    /// Aux records met so far (name, value), in file order.
    pub aux: Vec<(Vec<u8>, Vec<u8>)>,
    databases: usize,
}

fn u64_at(b: &[u8]) -> Option<u64> {
    Some(u64::from_le_bytes(b.get(..8)?.try_into().ok()?))
}

/// Parses one record from the front of `b`: `Ok(None)` if incomplete.
fn parse_record(b: &[u8]) -> Result<Option<(Record<'_>, usize)>, SnapshotError> {
    let total = b.len();
    let Some((db, rest)) = get_varint(b) else {
        return Ok(None);
    };
    let Some((key, rest)) = get_bytes(rest) else {
        return Ok(None);
    };
    let Some(version) = u64_at(rest) else {
        return Ok(None);
    };
    let rest = &rest[8..];
    let Some((&flags, mut rest)) = rest.split_first() else {
        return Ok(None);
    };
    if flags & !(F_EXPIRE | F_EXTVER | F_STALE) != 0 {
        return Err(SnapshotError::Corrupt("record flags"));
    }
    let mut expire_ms = None;
    if flags & F_EXPIRE != 0 {
        let Some(t) = u64_at(rest) else {
            return Ok(None);
        };
        expire_ms = Some(t);
        rest = &rest[8..];
    }
    let mut ext_version = None;
    if flags & F_EXTVER != 0 {
        let Some(x) = u64_at(rest) else {
            return Ok(None);
        };
        ext_version = Some(x);
        rest = &rest[8..];
    }
    let mut stale_ms = None;
    if flags & F_STALE != 0 {
        let Some(x) = u64_at(rest) else {
            return Ok(None);
        };
        stale_ms = Some(x);
        rest = &rest[8..];
    }
    let Some((value, rest)) = get_bytes(rest) else {
        return Ok(None);
    };
    let used = total - rest.len();
    Ok(Some((
        Record {
            db: usize::try_from(db).map_err(|_| SnapshotError::DatabaseOutOfRange(db))?,
            key,
            version,
            expire_ms,
            ext_version,
            stale_ms,
            value,
        },
        used,
    )))
}

impl Loader {
    pub fn new(databases: usize) -> Self {
        Loader {
            replid: String::new(),
            offset: 0,
            end_offset: 0,
            format: FORMAT_VERSION,
            buf: Vec::new(),
            crc: 0,
            header_seen: false,
            ended: false,
            records: 0,
            aux: Vec::new(),
            databases,
        }
    }

    /// Feeds bytes; calls `apply` for each complete record. Returns `Ok(Some(n))` once the snapshot
    /// ended and was verified, where `n` bytes of `data` belonged to it (the rest follows it on the
    /// wire, e.g. the replication stream); `Ok(None)` if more bytes are needed.
    pub fn feed(
        &mut self,
        data: &[u8],
        mut apply: impl FnMut(Record<'_>),
    ) -> Result<Option<usize>, SnapshotError> {
        let already = self.buf.len();
        self.buf.extend_from_slice(data);
        let mut pos = 0;
        if !self.header_seen {
            // Reject a wrong magic as soon as its bytes are here, not only once a header's worth is.
            let n = self.buf.len().min(MAGIC.len());
            if self.buf[..n] != MAGIC[..n] {
                return Err(SnapshotError::BadMagic);
            }
            if self.buf.len() < HEADER_BYTES {
                return Ok(None);
            }
            let v = u16::from_le_bytes([self.buf[8], self.buf[9]]);
            if v != FORMAT_VERSION && v != FORMAT_VERSION_2 && v != FORMAT_VERSION_1 {
                return Err(SnapshotError::UnsupportedVersion(v));
            }
            self.format = v;
            self.replid = String::from_utf8_lossy(&self.buf[10..50]).into_owned();
            self.offset = u64_at(&self.buf[50..]).unwrap_or(0);
            self.header_seen = true;
            pos = HEADER_BYTES;
        }
        while let Some(&tag) = self.buf.get(pos) {
            match tag {
                TAG_RECORD => match parse_record(&self.buf[pos + 1..])? {
                    Some((rec, used)) => {
                        if rec.db >= self.databases {
                            return Err(SnapshotError::DatabaseOutOfRange(rec.db as u64));
                        }
                        apply(rec);
                        self.records += 1;
                        pos += 1 + used;
                    }
                    None => break,
                },
                TAG_AUX if self.format >= FORMAT_VERSION => {
                    let body = &self.buf[pos + 1..];
                    let Some((name, rest)) = get_bytes(body) else {
                        break;
                    };
                    let Some((value, rest)) = get_bytes(rest) else {
                        break;
                    };
                    if self.aux.len() == AUX_RECORDS_MAX {
                        return Err(SnapshotError::Corrupt("too many aux records"));
                    }
                    self.aux.push((name.to_vec(), value.to_vec()));
                    pos += 1 + (body.len() - rest.len());
                }
                TAG_END => {
                    let marker = if self.format == FORMAT_VERSION_1 {
                        1
                    } else {
                        9
                    };
                    if self.buf.len() < pos + marker + 8 {
                        break;
                    }
                    self.end_offset = if self.format == FORMAT_VERSION_1 {
                        self.offset
                    } else {
                        u64_at(&self.buf[pos + 1..]).unwrap_or(0)
                    };
                    self.crc = crc64_update(self.crc, &self.buf[..pos + marker]);
                    let stored = u64_at(&self.buf[pos + marker..]).unwrap_or(0);
                    if stored != self.crc {
                        return Err(SnapshotError::Checksum);
                    }
                    if self.end_offset < self.offset {
                        return Err(SnapshotError::Corrupt("end offset before start offset"));
                    }
                    self.ended = true;
                    let snapshot_bytes_in_data = pos + marker + 8 - already;
                    self.buf.clear();
                    return Ok(Some(snapshot_bytes_in_data));
                }
                _ => return Err(SnapshotError::Corrupt("record tag")),
            }
        }
        self.crc = crc64_update(self.crc, &self.buf[..pos]);
        self.buf.drain(..pos);
        Ok(None)
    }

    pub fn ended(&self) -> bool {
        self.ended
    }
}

/// Loads a whole snapshot into a keyspace (start-up, tests), applying records by version. Expired
/// keys are skipped. Returns the number of keys loaded.
pub fn load_all(
    ks: &Keyspace,
    bytes: &[u8],
    limits: &EncodingLimits,
    now_ms: u64,
) -> Result<u64, SnapshotError> {
    load_all_meta(ks, bytes, limits, now_ms, true).map(|m| m.keys)
}

/// What [`load_all_meta`] loaded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Loaded {
    pub keys: u64,
    /// Keys skipped because their deadline had passed.
    pub expired: u64,
    /// The replication history the data belongs to, and the offset it is at least as new as.
    pub replid: String,
    pub offset: u64,
    /// The stream overlaps the data up to here (see the module header).
    pub end_offset: u64,
    /// The aux records (name, value), in file order.
    pub aux: Vec<(Vec<u8>, Vec<u8>)>,
}

/// Like [`load_all`], also returning the replication position. A replica loads keys
/// already past their deadline too (`skip_expired` false), as Redis does: its primary's deletions
/// decide, not its own clock, so a skewed replica clock cannot make it drop a key the primary holds.
pub fn load_all_meta(
    ks: &Keyspace,
    bytes: &[u8],
    limits: &EncodingLimits,
    now_ms: u64,
    skip_expired: bool,
) -> Result<Loaded, SnapshotError> {
    load_all_progress(ks, bytes, limits, now_ms, skip_expired, &mut |_, _| {})
}

/// Bytes [`load_all_progress`] feeds the loader at a time, reporting progress after each piece.
pub const LOAD_PIECE_BYTES: usize = 1 << 20;

/// Like [`load_all_meta`], calling `progress(bytes read, keys loaded)` after every
/// [`LOAD_PIECE_BYTES`] (the caller decides what to show, and when).
pub fn load_all_progress(
    ks: &Keyspace,
    bytes: &[u8],
    limits: &EncodingLimits,
    now_ms: u64,
    skip_expired: bool,
    progress: &mut dyn FnMut(u64, u64),
) -> Result<Loaded, SnapshotError> {
    let mut loader = Loader::new(ks.databases());
    let mut loaded = 0;
    let mut expired = 0;
    let mut bad = false;
    let mut read = 0usize;
    let mut ended = false;
    for piece in bytes.chunks(LOAD_PIECE_BYTES) {
        if ended {
            return Err(SnapshotError::Corrupt("trailing bytes"));
        }
        let done = loader.feed(piece, |rec| {
            if skip_expired && rec.expire_ms.is_some_and(|t| t <= now_ms) {
                expired += 1;
                return;
            }
            match rec.to_entry(limits) {
                Some(entry) => {
                    ks.hlc.observe(rec.version);
                    let slot = key_slot(rec.key);
                    ks.lock(ks.shard_of(slot))
                        .apply_put(rec.db, slot, entry, now_ms);
                    loaded += 1;
                }
                None => bad = true,
            }
        })?;
        if bad {
            return Err(SnapshotError::Corrupt("value"));
        }
        read += piece.len();
        match done {
            Some(n) if n == piece.len() => ended = true,
            Some(_) => return Err(SnapshotError::Corrupt("trailing bytes")),
            None => {}
        }
        progress(read as u64, loaded);
    }
    if !ended {
        return Err(SnapshotError::Corrupt("truncated"));
    }
    Ok(Loaded {
        keys: loaded,
        expired,
        replid: loader.replid.clone(),
        offset: loader.offset,
        end_offset: loader.end_offset,
        aux: std::mem::take(&mut loader.aux),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn filled() -> Keyspace {
        let ks = Keyspace::new(4, 8, 1);
        for i in 0..500u64 {
            let key = format!("key:{i}");
            let slot = key_slot(key.as_bytes());
            let expire = (i % 3 == 0).then_some(10_000_000 + i);
            let mut e =
                Entry::new_string(key.as_bytes(), format!("v{i}").as_bytes(), expire, 1000 + i);
            if i % 7 == 0 {
                e.set_ext_version(Some(i));
            }
            if i % 5 == 0 {
                e.set_stale_ms(Some(9_000_000 + i));
            }
            ks.lock(ks.shard_of(slot))
                .insert((i % 4) as usize, slot, e, 0);
        }
        ks
    }

    /// (db, key, version, expire_ms, (ext_version, stale_ms), value) of one entry.
    type Row = (
        usize,
        Vec<u8>,
        u64,
        Option<u64>,
        (Option<u64>, Option<u64>),
        Vec<u8>,
    );

    fn dump(ks: &Keyspace) -> Vec<Row> {
        let mut v = Vec::new();
        for i in 0..ks.shard_count() {
            let s = ks.lock(i);
            for db in 0..ks.databases() {
                s.for_each_entry(i, db, |_, e| {
                    v.push((
                        db,
                        e.key().to_vec(),
                        e.version(),
                        e.expire_ms(),
                        (e.ext_version(), e.stale_ms()),
                        e.string().unwrap().to_vec(),
                    ))
                });
            }
        }
        v.sort();
        v
    }

    #[test]
    fn aux_records_round_trip_in_any_chunking() {
        let ks = filled();
        let big = vec![7u8; 5000];
        let aux: &[(&[u8], &[u8])] = &[(b"functions", &big), (b"empty", b"")];
        let bytes = write_all(&ks, aux, || ("abc".to_string(), 7)).unwrap();
        for chunk in [1usize, 13, bytes.len()] {
            let mut loader = Loader::new(4);
            let mut records = 0;
            let mut done = None;
            for c in bytes.chunks(chunk) {
                done = loader.feed(c, |_| records += 1).unwrap();
            }
            assert!(done.is_some(), "chunk {chunk}");
            assert_eq!(records, dump(&ks).len(), "chunk {chunk}");
            assert_eq!(
                loader.aux,
                vec![
                    (b"functions".to_vec(), big.clone()),
                    (b"empty".to_vec(), vec![])
                ]
            );
        }
        let target = Keyspace::new(4, 2, 9);
        let loaded = load_all_meta(&target, &bytes, &EncodingLimits::default(), 0, true).unwrap();
        assert_eq!(loaded.aux.len(), 2);
        assert_eq!(dump(&target), dump(&ks));
    }

    #[test]
    fn round_trip_in_any_chunking() {
        let ks = filled();
        let bytes = write_all(&ks, &[], || ("abc".to_string(), 7)).unwrap();
        for chunk in [1usize, 7, 4096, bytes.len()] {
            let target = Keyspace::new(4, 2, 9);
            let mut loader = Loader::new(4);
            let mut done = None;
            let limits = EncodingLimits::default();
            for c in bytes.chunks(chunk) {
                assert!(done.is_none());
                done = loader
                    .feed(c, |rec| {
                        let slot = key_slot(rec.key);
                        let e = rec.to_entry(&limits).unwrap();
                        target
                            .lock(target.shard_of(slot))
                            .apply_put(rec.db, slot, e, 0);
                    })
                    .unwrap();
            }
            assert!(done.is_some(), "chunk {chunk}");
            assert_eq!((loader.offset, &loader.replid[..3]), (7, "abc"));
            assert_eq!(dump(&target), dump(&ks), "chunk {chunk}");
        }
    }

    #[test]
    fn trailing_stream_bytes_are_reported() {
        let ks = filled();
        let mut bytes = write_all(&ks, &[], || ("abc".to_string(), 7)).unwrap();
        let snap_len = bytes.len();
        bytes.extend_from_slice(b"*1\r\n$4\r\nPING\r\n");
        let mut loader = Loader::new(4);
        let n = loader.feed(&bytes, |_| {}).unwrap().unwrap();
        assert_eq!(n, snap_len);
    }

    #[test]
    fn corruption_is_detected_not_loaded_silently() {
        let ks = filled();
        let bytes = write_all(&ks, &[], || ("abc".to_string(), 7)).unwrap();
        let mut flipped = bytes.clone();
        let mid = flipped.len() / 2;
        flipped[mid] ^= 0x40;
        let target = Keyspace::new(4, 2, 9);
        assert!(load_all(&target, &flipped, &EncodingLimits::default(), 0).is_err());
        assert_eq!(
            load_all(
                &target,
                &bytes[..bytes.len() - 3],
                &EncodingLimits::default(),
                0
            ),
            Err(SnapshotError::Corrupt("truncated"))
        );
        assert_eq!(
            load_all(&target, b"NOTASNAPSHOT", &EncodingLimits::default(), 0),
            Err(SnapshotError::BadMagic)
        );
    }

    #[test]
    fn garbage_never_panics() {
        let mut rng = shoal_keyspace::Rng::new(5);
        for _ in 0..2000 {
            let n = rng.below(200);
            let mut b: Vec<u8> = Writer::new().header("x", 1);
            b.extend((0..n).map(|_| rng.next_u64() as u8));
            let target = Keyspace::new(2, 1, 1);
            let _ = load_all(&target, &b, &EncodingLimits::default(), 0);
        }
    }

    #[test]
    fn a_swapdb_during_the_walk_invalidates_the_shard_it_meets() {
        let ks = filled();
        let swaps = ks.swaps();
        let mut w = Writer::new();
        let _ = w.header("abc", 7);
        assert!(w.shard(&ks, 0, swaps).is_some());
        ks.note_swap();
        // Shards already written are from before the swap; the next one would be from after.
        assert!(w.shard(&ks, 1, swaps).is_none());
        // A whole walk started after it is consistent again.
        assert!(write_all(&ks, &[], || ("abc".to_string(), 7)).is_ok());
    }
}
