//! A small blocking RESP2 client: one TCP connection, one request at a time, a deadline on
//! connect, read and write. It is all the suite needs and keeps the history honest: a request
//! that times out after being sent is reported as such (its outcome unknown), never retried
//! here. Routing (MOVED/ASK, slot map) lives in `client.rs`.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream, ToSocketAddrs};
use std::time::Duration;

/// Longest bulk string or array we accept from a server (bounds memory on a corrupt reply).
const BULK_BYTES_MAX: i64 = 64 << 20;
const ARRAY_LEN_MAX: i64 = 1 << 20;
/// Nesting depth of arrays we accept (CLUSTER SLOTS/SHARDS nest 3-4 deep).
const DEPTH_MAX: usize = 8;

/// A reply as the server sent it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Reply {
    Simple(String),
    Error(String),
    Int(i64),
    Bulk(Option<Vec<u8>>),
    Array(Option<Vec<Reply>>),
}

impl Reply {
    pub fn as_int(&self) -> Option<i64> {
        match self {
            Reply::Int(i) => Some(*i),
            _ => None,
        }
    }

    /// The text of a simple string or a bulk string.
    pub fn as_text(&self) -> Option<String> {
        match self {
            Reply::Simple(s) => Some(s.clone()),
            Reply::Bulk(Some(b)) => Some(String::from_utf8_lossy(b).into_owned()),
            _ => None,
        }
    }

    pub fn as_array(&self) -> Option<&[Reply]> {
        match self {
            Reply::Array(Some(v)) => Some(v),
            _ => None,
        }
    }

    pub fn error(&self) -> Option<&str> {
        match self {
            Reply::Error(e) => Some(e),
            _ => None,
        }
    }
}

/// Why a request has no reply. `Connect` means nothing was sent (the request certainly did not
/// run); the others may come after the server got it (its outcome is unknown).
#[derive(Debug)]
pub enum IoError {
    Connect(String),
    Io(String),
    Protocol(String),
}

impl IoError {
    pub fn request_not_sent(&self) -> bool {
        matches!(self, IoError::Connect(_))
    }
}

impl std::fmt::Display for IoError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            IoError::Connect(e) => write!(f, "connect: {e}"),
            IoError::Io(e) => write!(f, "io: {e}"),
            IoError::Protocol(e) => write!(f, "protocol: {e}"),
        }
    }
}

pub struct Conn {
    pub addr: String,
    reader: BufReader<TcpStream>,
}

impl Conn {
    pub fn connect(addr: &str, timeout: Duration) -> Result<Conn, IoError> {
        let sa: SocketAddr = addr
            .to_socket_addrs()
            .map_err(|e| IoError::Connect(format!("{addr}: {e}")))?
            .next()
            .ok_or_else(|| IoError::Connect(format!("{addr}: no address")))?;
        let s = TcpStream::connect_timeout(&sa, timeout)
            .map_err(|e| IoError::Connect(format!("{addr}: {e}")))?;
        s.set_read_timeout(Some(timeout))
            .and_then(|_| s.set_write_timeout(Some(timeout)))
            .and_then(|_| s.set_nodelay(true))
            .map_err(|e| IoError::Connect(format!("{addr}: {e}")))?;
        Ok(Conn {
            addr: addr.to_string(),
            reader: BufReader::new(s),
        })
    }

    /// Sends one command and reads its reply. After an error the connection must be dropped
    /// (the stream may be mid-reply).
    pub fn cmd<S: AsRef<[u8]>>(&mut self, args: &[S]) -> Result<Reply, IoError> {
        let mut buf = Vec::with_capacity(64);
        buf.extend_from_slice(format!("*{}\r\n", args.len()).as_bytes());
        for a in args {
            let a = a.as_ref();
            buf.extend_from_slice(format!("${}\r\n", a.len()).as_bytes());
            buf.extend_from_slice(a);
            buf.extend_from_slice(b"\r\n");
        }
        self.reader
            .get_mut()
            .write_all(&buf)
            .map_err(|e| IoError::Io(format!("{}: write: {e}", self.addr)))?;
        read_reply(&mut self.reader, 0).map_err(|e| match e {
            IoError::Io(m) => IoError::Io(format!("{}: {m}", self.addr)),
            other => other,
        })
    }
}

fn read_line(r: &mut impl BufRead) -> Result<String, IoError> {
    let mut line = Vec::new();
    // A line longer than this is no header we know: stop reading rather than buffer forever.
    let n = r
        .take(BULK_BYTES_MAX as u64)
        .read_until(b'\n', &mut line)
        .map_err(|e| IoError::Io(format!("read: {e}")))?;
    if n == 0 {
        return Err(IoError::Io("connection closed".into()));
    }
    if !line.ends_with(b"\r\n") {
        return Err(IoError::Protocol("line without CRLF".into()));
    }
    line.truncate(line.len() - 2);
    String::from_utf8(line).map_err(|_| IoError::Protocol("non-UTF-8 header".into()))
}

fn parse_len(s: &str, max: i64) -> Result<i64, IoError> {
    let n: i64 = s
        .parse()
        .map_err(|_| IoError::Protocol(format!("bad length {s:?}")))?;
    if n < -1 || n > max {
        return Err(IoError::Protocol(format!("length {n} out of bounds")));
    }
    Ok(n)
}

pub fn read_reply(r: &mut impl BufRead, depth: usize) -> Result<Reply, IoError> {
    if depth > DEPTH_MAX {
        return Err(IoError::Protocol("reply nested too deep".into()));
    }
    let line = read_line(r)?;
    let (kind, rest) = line.split_at(line.len().min(1));
    match kind {
        "+" => Ok(Reply::Simple(rest.to_string())),
        "-" => Ok(Reply::Error(rest.to_string())),
        ":" => rest
            .parse()
            .map(Reply::Int)
            .map_err(|_| IoError::Protocol(format!("bad integer {rest:?}"))),
        "$" => {
            let n = parse_len(rest, BULK_BYTES_MAX)?;
            if n < 0 {
                return Ok(Reply::Bulk(None));
            }
            let mut b = vec![0u8; n as usize + 2];
            r.read_exact(&mut b)
                .map_err(|e| IoError::Io(format!("read: {e}")))?;
            b.truncate(n as usize);
            Ok(Reply::Bulk(Some(b)))
        }
        "*" => {
            let n = parse_len(rest, ARRAY_LEN_MAX)?;
            if n < 0 {
                return Ok(Reply::Array(None));
            }
            let mut v = Vec::with_capacity(n.min(1024) as usize);
            for _ in 0..n {
                v.push(read_reply(r, depth + 1)?);
            }
            Ok(Reply::Array(Some(v)))
        }
        _ => Err(IoError::Protocol(format!("unknown reply type {line:?}"))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(s: &str) -> Result<Reply, IoError> {
        read_reply(&mut std::io::Cursor::new(s.as_bytes().to_vec()), 0)
    }

    #[test]
    fn parses_every_resp2_type() {
        assert_eq!(parse("+OK\r\n").unwrap(), Reply::Simple("OK".into()));
        assert_eq!(parse("-ERR x\r\n").unwrap(), Reply::Error("ERR x".into()));
        assert_eq!(parse(":-3\r\n").unwrap(), Reply::Int(-3));
        assert_eq!(parse("$-1\r\n").unwrap(), Reply::Bulk(None));
        assert_eq!(
            parse("*2\r\n$1\r\na\r\n:1\r\n").unwrap(),
            Reply::Array(Some(vec![Reply::Bulk(Some(b"a".to_vec())), Reply::Int(1)]))
        );
    }

    #[test]
    fn rejects_bad_input_without_panicking() {
        assert!(parse("?x\r\n").is_err());
        assert!(parse("$99999999999\r\n").is_err());
        assert!(parse("*1\r\n").is_err());
        assert!(parse("+OK").is_err());
        let deep = "*1\r\n".repeat(20) + ":1\r\n";
        assert!(parse(&deep).is_err());
    }
}
