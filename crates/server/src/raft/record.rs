//! The on-disk framing shared by the Raft log, its metadata and its snapshots: a record is a
//! little-endian `u32` payload length, a `u64` CRC-64 of the payload (`shoal_keyspace::codec`'s)
//! and the payload. A record cut short by a crash, or whose CRC does not match, reads as
//! [`Read::Torn`], never as data. Files that are replaced whole (metadata, snapshots, a compacted
//! log) are written to a temporary name, fsynced, renamed over the old one and the directory
//! fsynced ([`replace_file`]), so a crash leaves the old file or the new one, never a mix.

use std::fs::File;
use std::io::{self, Write};
use std::path::Path;

use shoal_keyspace::codec::crc64;

/// Bytes before a record's payload: length (4) and CRC-64 (8).
pub const HEADER_BYTES: usize = 12;

/// What [`read`] found at the start of a buffer.
#[derive(Debug, PartialEq, Eq)]
pub enum Read<'a> {
    /// A whole record: its payload and the bytes it took.
    Record(&'a [u8], usize),
    /// Nothing: the buffer is empty.
    End,
    /// A record cut short, longer than allowed, or whose CRC does not match: the file ends here.
    Torn(&'static str),
}

/// Appends one record holding `payload` to `out`.
pub fn encode(out: &mut Vec<u8>, payload: &[u8]) {
    let len = u32::try_from(payload.len()).expect("record payloads are bounded far below 4 GiB");
    out.extend_from_slice(&len.to_le_bytes());
    out.extend_from_slice(&crc64(payload).to_le_bytes());
    out.extend_from_slice(payload);
}

/// Reads the record at the start of `buf`, refusing payloads over `payload_bytes_max`.
pub fn read(buf: &[u8], payload_bytes_max: usize) -> Read<'_> {
    if buf.is_empty() {
        return Read::End;
    }
    if buf.len() < HEADER_BYTES {
        return Read::Torn("record header cut short");
    }
    let len = u32::from_le_bytes(buf[..4].try_into().expect("4 bytes")) as usize;
    let crc = u64::from_le_bytes(buf[4..12].try_into().expect("8 bytes"));
    if len > payload_bytes_max {
        return Read::Torn("record longer than allowed");
    }
    let Some(payload) = buf.get(HEADER_BYTES..HEADER_BYTES + len) else {
        return Read::Torn("record payload cut short");
    };
    if crc64(payload) != crc {
        return Read::Torn("record CRC mismatch");
    }
    Read::Record(payload, HEADER_BYTES + len)
}

/// Replaces `dir/name` with `bytes` atomically and durably: temporary file, fsync, rename, fsync
/// of the directory (without the last step a crash could forget the rename).
pub fn replace_file(dir: &Path, name: &str, bytes: &[u8]) -> io::Result<()> {
    let tmp = dir.join(format!("{name}.tmp"));
    {
        let mut f = File::create(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
    }
    std::fs::rename(&tmp, dir.join(name))?;
    sync_dir(dir)
}

/// Fsyncs a directory, so that files created, renamed or removed in it stay so after a crash.
pub fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

/// Reads a file holding exactly one record (metadata, identity): `Ok(None)` when the file does not
/// exist. Such files are replaced whole, so a torn one is corruption and an error, not a tail to
/// cut.
pub fn read_single(path: &Path, payload_bytes_max: usize) -> io::Result<Option<Vec<u8>>> {
    let bytes = match std::fs::read(path) {
        Ok(b) => b,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e),
    };
    match read(&bytes, payload_bytes_max) {
        Read::Record(p, n) if n == bytes.len() => Ok(Some(p.to_vec())),
        Read::Record(..) => Err(corrupt(path, "bytes after the record")),
        Read::End => Err(corrupt(path, "empty file")),
        Read::Torn(why) => Err(corrupt(path, why)),
    }
}

/// An error for a file that is not what was written.
pub fn corrupt(path: &Path, why: &str) -> io::Error {
    io::Error::new(
        io::ErrorKind::InvalidData,
        format!("{}: {why}", path.display()),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_read_back_and_damaged_ones_read_as_torn() {
        let mut buf = Vec::new();
        encode(&mut buf, b"hello");
        encode(&mut buf, b"");
        let Read::Record(p, n) = read(&buf, 100) else {
            panic!("first record")
        };
        assert_eq!((p, n), (&b"hello"[..], HEADER_BYTES + 5));
        assert_eq!(read(&buf[n..], 100), Read::Record(b"", HEADER_BYTES));
        assert_eq!(read(&buf[n + HEADER_BYTES..], 100), Read::End);
        // Every cut inside the first record is torn, never a shorter record.
        for cut in 1..n {
            assert!(
                matches!(read(&buf[..cut], 100), Read::Torn(_)),
                "cut at {cut}"
            );
        }
        assert!(matches!(read(&buf, 4), Read::Torn(_)), "over the bound");
        let mut flipped = buf.clone();
        flipped[HEADER_BYTES + 1] ^= 1;
        assert_eq!(read(&flipped, 100), Read::Torn("record CRC mismatch"));
    }
}
