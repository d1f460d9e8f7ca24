//! The append-only effect log's formats, sans I/O: the log file (a header, then framed records of
//! the replication stream's bytes) and the manifest that names the files of the log (Redis 7's
//! multi-part AOF: one base snapshot, then incremental logs in order).
//!
//! ```text
//! log file   header   "SHOALAOF" u16 format-version (LE), 40 bytes replication id (ASCII),
//!                     u64 stream offset of the first record's first byte, u64 CRC-64 of the above
//!            record   u32 length of kind+payload (LE), u64 CRC-64 of length+kind+payload,
//!                     u8 kind (1: stream bytes, 2: clean close), payload
//! ```
//! The payload of a stream record is a piece of this node's replication stream (effects in the
//! codec of `stream`), as the node's backlog held it; a record may end inside a frame, so the
//! payloads are read back as one byte stream. A close record is written by a clean shutdown
//! after the last stream record: a log that ends with one holds every byte of the stream this
//! node produced under its replication id, so a restart may keep that id (its replicas continue).
//!
//! Reading ([`scan`]) stops at the first record that is torn (shorter than its length), fails its
//! checksum, or has an unknown kind: everything before it is good, everything from it on is cut
//! (a crash mid-append leaves exactly such a tail). It never panics and never returns a record
//! whose checksum did not match.
//!
//! The manifest is Redis 7's text format with a version line, one file per line:
//! ```text
//! # shoal aof manifest 1
//! file appendonly.aof.3.base.shoal seq 3 type b
//! file appendonly.aof.3.incr.aof seq 3 type i
//! file appendonly.aof.4.incr.aof seq 4 type i
//! ```

use shoal_keyspace::codec::crc64_update;

pub const MAGIC: &[u8; 8] = b"SHOALAOF";
pub const FORMAT_VERSION: u16 = 1;
/// Bytes of a log file's header.
pub const HEADER_BYTES: usize = 8 + 2 + 40 + 8 + 8;
/// Bytes of a record's frame before its kind byte (length, checksum).
pub const RECORD_FRAME_BYTES: usize = 4 + 8;
/// A record longer than this is garbage (a writer never makes one: it cuts the stream into
/// pieces of at most this much).
pub const RECORD_BYTES_MAX: usize = 64 * 1024 * 1024;

const KIND_STREAM: u8 = 1;
const KIND_CLOSE: u8 = 2;

/// The header of a log file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Header {
    /// The replication history the stream belongs to.
    pub replid: String,
    /// Stream offset of the first byte of the first record.
    pub start_offset: u64,
}

/// Encodes a log file's header.
pub fn encode_header(h: &Header) -> Vec<u8> {
    let mut out = Vec::with_capacity(HEADER_BYTES);
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&FORMAT_VERSION.to_le_bytes());
    let mut id = [b'0'; 40];
    for (d, s) in id.iter_mut().zip(h.replid.bytes()) {
        *d = s;
    }
    out.extend_from_slice(&id);
    out.extend_from_slice(&h.start_offset.to_le_bytes());
    let crc = crc64_update(0, &out);
    out.extend_from_slice(&crc.to_le_bytes());
    out
}

/// Why a log file's header could not be read (the whole file is unusable then).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HeaderError {
    Short,
    BadMagic,
    UnsupportedVersion(u16),
    Checksum,
}

impl std::fmt::Display for HeaderError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            HeaderError::Short => f.write_str("shorter than a log header"),
            HeaderError::BadMagic => f.write_str("not a shoal append-only log"),
            HeaderError::UnsupportedVersion(v) => write!(f, "unsupported log format version {v}"),
            HeaderError::Checksum => f.write_str("log header checksum mismatch"),
        }
    }
}

/// Reads a log file's header.
pub fn decode_header(bytes: &[u8]) -> Result<Header, HeaderError> {
    if bytes.len() < HEADER_BYTES {
        return Err(HeaderError::Short);
    }
    if &bytes[..8] != MAGIC {
        return Err(HeaderError::BadMagic);
    }
    let version = u16::from_le_bytes([bytes[8], bytes[9]]);
    if version != FORMAT_VERSION {
        return Err(HeaderError::UnsupportedVersion(version));
    }
    let body = HEADER_BYTES - 8;
    let crc = u64::from_le_bytes(bytes[body..HEADER_BYTES].try_into().expect("8 bytes"));
    if crc != crc64_update(0, &bytes[..body]) {
        return Err(HeaderError::Checksum);
    }
    let replid = String::from_utf8_lossy(&bytes[10..50]).into_owned();
    let start_offset = u64::from_le_bytes(bytes[50..58].try_into().expect("8 bytes"));
    Ok(Header {
        replid,
        start_offset,
    })
}

fn encode_record(out: &mut Vec<u8>, kind: u8, payload: &[u8]) {
    assert!(payload.len() < RECORD_BYTES_MAX, "a record fits its limit");
    let len = (payload.len() + 1) as u32;
    let len_bytes = len.to_le_bytes();
    let mut crc = crc64_update(0, &len_bytes);
    crc = crc64_update(crc, &[kind]);
    crc = crc64_update(crc, payload);
    out.reserve(RECORD_FRAME_BYTES + 1 + payload.len());
    out.extend_from_slice(&len_bytes);
    out.extend_from_slice(&crc.to_le_bytes());
    out.push(kind);
    out.extend_from_slice(payload);
}

/// Appends a record holding a piece of the stream.
pub fn encode_stream(out: &mut Vec<u8>, payload: &[u8]) {
    encode_record(out, KIND_STREAM, payload);
}

/// Starts a stream record whose payload the caller appends to `out` in place (the log's writer
/// reads the backlog straight into its record buffer): room for the frame now, filled by
/// [`seal_stream`] once the payload is there. Returns where the record starts.
pub fn begin_stream(out: &mut Vec<u8>) -> usize {
    let at = out.len();
    out.extend_from_slice(&[0u8; RECORD_FRAME_BYTES + 1]);
    at
}

/// Finishes the record [`begin_stream`] started at `at`: everything after its frame is the
/// payload. The bytes are those [`encode_stream`] writes for the same payload.
pub fn seal_stream(out: &mut [u8], at: usize) {
    let body = at + RECORD_FRAME_BYTES;
    let payload = out.len() - body - 1;
    assert!(payload < RECORD_BYTES_MAX, "a record fits its limit");
    let len_bytes = ((payload + 1) as u32).to_le_bytes();
    out[body] = KIND_STREAM;
    let mut crc = crc64_update(0, &len_bytes);
    crc = crc64_update(crc, &out[body..]);
    out[at..at + 4].copy_from_slice(&len_bytes);
    out[at + 4..body].copy_from_slice(&crc.to_le_bytes());
}

/// Appends the record a clean shutdown ends the log with.
pub fn encode_close(out: &mut Vec<u8>) {
    encode_record(out, KIND_CLOSE, &[]);
}

/// One good record, borrowing the bytes scanned.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Record<'a> {
    Stream(&'a [u8]),
    Close,
}

/// Why a scan stopped before the end of the bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Cut {
    /// The last record is shorter than its frame or its length says (a crash mid-append).
    Torn,
    /// A record's checksum does not match its bytes.
    Checksum,
    /// A record's length is 0 or over [`RECORD_BYTES_MAX`], or its kind is unknown.
    Garbage,
}

impl std::fmt::Display for Cut {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Cut::Torn => "torn record",
            Cut::Checksum => "record checksum mismatch",
            Cut::Garbage => "malformed record",
        })
    }
}

/// What [`scan`] found in the records after a header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Scanned<'a> {
    pub records: Vec<Record<'a>>,
    /// Bytes of `bytes` that are good records (where a writer continues, or the file is cut).
    pub good_len: usize,
    /// Why the rest (`bytes[good_len..]`) was not read, if there is a rest.
    pub cut: Option<Cut>,
}

/// Reads the records of a log file's body (the bytes after its header), stopping at the first bad
/// one. Never panics.
pub fn scan(bytes: &[u8]) -> Scanned<'_> {
    let mut records = Vec::new();
    let mut pos = 0;
    let cut = loop {
        let rest = &bytes[pos..];
        if rest.is_empty() {
            break None;
        }
        if rest.len() < RECORD_FRAME_BYTES + 1 {
            break Some(Cut::Torn);
        }
        let len = u32::from_le_bytes(rest[..4].try_into().expect("4 bytes")) as usize;
        if len == 0 || len > RECORD_BYTES_MAX {
            break Some(Cut::Garbage);
        }
        if rest.len() < RECORD_FRAME_BYTES + len {
            break Some(Cut::Torn);
        }
        let crc = u64::from_le_bytes(rest[4..12].try_into().expect("8 bytes"));
        let body = &rest[RECORD_FRAME_BYTES..RECORD_FRAME_BYTES + len];
        if crc != crc64_update(crc64_update(0, &rest[..4]), body) {
            break Some(Cut::Checksum);
        }
        let record = match body[0] {
            KIND_STREAM => Record::Stream(&body[1..]),
            KIND_CLOSE if len == 1 => Record::Close,
            _ => break Some(Cut::Garbage),
        };
        records.push(record);
        pos += RECORD_FRAME_BYTES + len;
    };
    Scanned {
        records,
        good_len: pos,
        cut,
    }
}

// ---- the manifest ----

/// The first line of a manifest this version writes and reads.
pub const MANIFEST_VERSION_LINE: &str = "# shoal aof manifest 1";
/// A manifest longer than this is not one.
pub const MANIFEST_BYTES_MAX: usize = 64 * 1024;

/// The files of the log, in replay order: the base snapshot, then the incremental logs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Manifest {
    /// (file name, sequence number) of the base snapshot.
    pub base: (String, u64),
    /// (file name, sequence number) of each incremental log, oldest first.
    pub incrs: Vec<(String, u64)>,
}

impl Manifest {
    /// The manifest's text.
    pub fn encode(&self) -> String {
        let mut s = String::new();
        s.push_str(MANIFEST_VERSION_LINE);
        s.push('\n');
        s.push_str(&format!(
            "file {} seq {} type b\n",
            self.base.0, self.base.1
        ));
        for (name, seq) in &self.incrs {
            s.push_str(&format!("file {name} seq {seq} type i\n"));
        }
        s
    }

    /// Reads a manifest; the error says what is wrong with it.
    pub fn parse(bytes: &[u8]) -> Result<Manifest, String> {
        if bytes.len() > MANIFEST_BYTES_MAX {
            return Err(format!("longer than {MANIFEST_BYTES_MAX} bytes"));
        }
        let text = std::str::from_utf8(bytes).map_err(|_| "not UTF-8 text".to_string())?;
        let mut lines = text.lines();
        if lines.next() != Some(MANIFEST_VERSION_LINE) {
            return Err(format!("the first line is not '{MANIFEST_VERSION_LINE}'"));
        }
        if !text.ends_with('\n') {
            return Err("the last line is incomplete".into());
        }
        let mut base = None;
        let mut incrs: Vec<(String, u64)> = Vec::new();
        for (i, line) in lines.enumerate() {
            let n = i + 2;
            let w: Vec<&str> = line.split(' ').collect();
            let [file_kw, name, seq_kw, seq, type_kw, kind] = w[..] else {
                return Err(format!("line {n} is not 'file NAME seq N type b|i'"));
            };
            if file_kw != "file" || seq_kw != "seq" || type_kw != "type" {
                return Err(format!("line {n} is not 'file NAME seq N type b|i'"));
            }
            if name.is_empty() || name.contains('/') || name.starts_with('.') {
                return Err(format!("line {n} names a file outside the log's folder"));
            }
            let seq: u64 = seq
                .parse()
                .map_err(|_| format!("line {n}: the sequence number is not a number"))?;
            match kind {
                "b" if base.is_none() && incrs.is_empty() => base = Some((name.to_string(), seq)),
                "b" => return Err(format!("line {n}: a second base, or a base after a log")),
                "i" => {
                    if incrs.last().is_some_and(|(_, s)| *s >= seq) {
                        return Err(format!("line {n}: sequence numbers do not grow"));
                    }
                    incrs.push((name.to_string(), seq));
                }
                _ => return Err(format!("line {n}: unknown file type '{kind}'")),
            }
        }
        let base = base.ok_or_else(|| "no base file".to_string())?;
        Ok(Manifest { base, incrs })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn log(payloads: &[Vec<u8>], close: bool) -> Vec<u8> {
        let mut out = Vec::new();
        for p in payloads {
            encode_stream(&mut out, p);
        }
        if close {
            encode_close(&mut out);
        }
        out
    }

    #[test]
    fn header_round_trips_and_refuses_damage() {
        let h = Header {
            replid: "a".repeat(40),
            start_offset: 12345,
        };
        let b = encode_header(&h);
        assert_eq!(b.len(), HEADER_BYTES);
        assert_eq!(decode_header(&b), Ok(h));
        let mut bad = b.clone();
        bad[20] ^= 1;
        assert_eq!(decode_header(&bad), Err(HeaderError::Checksum));
        assert_eq!(decode_header(&b[..10]), Err(HeaderError::Short));
        assert_eq!(
            decode_header(&[b'x'; HEADER_BYTES]),
            Err(HeaderError::BadMagic)
        );
    }

    #[test]
    fn a_record_sealed_in_place_is_the_record_encoded_from_its_payload() {
        for payload in [vec![], b"*1\r\n$4\r\nPING\r\n".to_vec(), vec![9u8; 70_000]] {
            let mut whole = b"before".to_vec();
            encode_stream(&mut whole, &payload);
            let mut in_place = b"before".to_vec();
            let at = begin_stream(&mut in_place);
            in_place.extend_from_slice(&payload);
            seal_stream(&mut in_place, at);
            assert_eq!(in_place, whole, "{} bytes", payload.len());
            assert_eq!(scan(&in_place[6..]).records, vec![Record::Stream(&payload)]);
        }
    }

    #[test]
    fn records_round_trip_and_a_torn_tail_is_cut_at_the_last_good_record() {
        let payloads = vec![b"*1\r\n$4\r\nPING\r\n".to_vec(), vec![7u8; 300], vec![]];
        let b = log(&payloads, true);
        let s = scan(&b);
        assert_eq!(s.good_len, b.len());
        assert_eq!(s.cut, None);
        assert_eq!(s.records.len(), 4);
        assert_eq!(s.records[3], Record::Close);
        // Cut in the middle of the second record: only the first survives.
        let first = RECORD_FRAME_BYTES + 1 + payloads[0].len();
        let s = scan(&b[..first + 10]);
        assert_eq!(
            (s.records.len(), s.good_len, s.cut),
            (1, first, Some(Cut::Torn))
        );
        // A flipped bit in the second record's payload.
        let mut flipped = b.clone();
        flipped[first + RECORD_FRAME_BYTES + 50] ^= 0x10;
        let s = scan(&flipped);
        assert_eq!(
            (s.records.len(), s.good_len, s.cut),
            (1, first, Some(Cut::Checksum))
        );
    }

    #[test]
    fn manifest_round_trips_and_refuses_nonsense() {
        let m = Manifest {
            base: ("appendonly.aof.3.base.shoal".into(), 3),
            incrs: vec![
                ("appendonly.aof.3.incr.aof".into(), 3),
                ("appendonly.aof.4.incr.aof".into(), 4),
            ],
        };
        assert_eq!(Manifest::parse(m.encode().as_bytes()), Ok(m.clone()));
        for bad in [
            "",
            "file a seq 1 type b\n",
            "# shoal aof manifest 1\n",
            "# shoal aof manifest 1\nfile a seq 1 type b",
            "# shoal aof manifest 1\nfile ../a seq 1 type b\n",
            "# shoal aof manifest 1\nfile a seq x type b\n",
            "# shoal aof manifest 1\nfile a seq 1 type i\n",
            "# shoal aof manifest 1\nfile a seq 1 type b\nfile b seq 2 type i\nfile c seq 2 type i\n",
            "# shoal aof manifest 1\nfile a seq 1 type b\nfile b seq 2 type q\n",
        ] {
            assert!(Manifest::parse(bad.as_bytes()).is_err(), "{bad:?}");
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 300, ..ProptestConfig::default() })]

        /// Any prefix of a log reads back as a prefix of its records, never another record.
        #[test]
        fn any_prefix_yields_a_prefix_of_the_records(
            payloads in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..64), 0..8),
            close in any::<bool>(),
            cut_at in any::<prop::sample::Index>(),
        ) {
            let b = log(&payloads, close);
            let n = cut_at.index(b.len() + 1);
            let s = scan(&b[..n]);
            let want: Vec<Record<'_>> = payloads
                .iter()
                .map(|p| Record::Stream(p))
                .chain(close.then_some(Record::Close))
                .collect();
            prop_assert!(s.records.len() <= want.len());
            prop_assert_eq!(&s.records[..], &want[..s.records.len()]);
            prop_assert!(s.good_len <= n);
            prop_assert_eq!(s.cut.is_none(), s.good_len == n);
        }

        /// Corrupting any bytes never yields a record that was not written: what is read is
        /// the records before the damage.
        #[test]
        fn corruption_never_yields_a_wrong_record(
            payloads in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..64), 1..8),
            flips in proptest::collection::vec((any::<prop::sample::Index>(), 1u8..=255), 1..4),
        ) {
            let mut b = log(&payloads, false);
            let mut first_damaged = b.len();
            for (at, mask) in &flips {
                let i = at.index(b.len());
                b[i] ^= mask;
                first_damaged = first_damaged.min(i);
            }
            let s = scan(&b);
            // Records wholly before the first damaged byte are all read back.
            let mut intact = 0;
            let mut end = 0;
            for p in &payloads {
                let next = end + RECORD_FRAME_BYTES + 1 + p.len();
                if next > first_damaged {
                    break;
                }
                intact += 1;
                end = next;
            }
            prop_assert!(s.records.len() >= intact);
            prop_assert!(s.records.len() <= payloads.len());
            // The damaged record (a CRC-64 collision aside, which these sizes never hit) is
            // refused, and what came back is exactly what was written.
            prop_assert_eq!(s.records.len(), intact);
            for (r, p) in s.records.iter().zip(&payloads) {
                prop_assert_eq!(r, &Record::Stream(p));
            }
        }

        /// Arbitrary bytes never panic the reader.
        #[test]
        fn garbage_never_panics(b in proptest::collection::vec(any::<u8>(), 0..256)) {
            let s = scan(&b);
            prop_assert!(s.good_len <= b.len());
            let _ = decode_header(&b);
            let _ = Manifest::parse(&b);
        }
    }
}
