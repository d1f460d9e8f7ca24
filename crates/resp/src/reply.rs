//! Replies as a client reads them: the one reply parser behind every internal link (a replica's
//! handshake with its primary, the failover coordinator, `shoal verify`) and the simulator. Pure:
//! [`parse_reply`] looks at a buffer and returns a whole reply with its length, or `None` when more
//! bytes are needed (normal, not an error). Lengths are checked against [`ReplyLimits`] before
//! anything is allocated, and nesting is bounded, so a hostile peer cannot make it allocate or
//! recurse without bound. RESP2 types, plus RESP3's null, boolean, double and map read loosely.

/// Bounds on what a reply may claim.
#[derive(Debug, Clone, Copy)]
pub struct ReplyLimits {
    pub bulk_bytes_max: usize,
    pub array_items_max: usize,
    pub depth_max: usize,
    pub line_bytes_max: usize,
}

impl Default for ReplyLimits {
    fn default() -> Self {
        ReplyLimits {
            bulk_bytes_max: 512 * 1024 * 1024,
            array_items_max: 64 * 1024 * 1024,
            depth_max: 32,
            line_bytes_max: 64 * 1024,
        }
    }
}

/// One reply.
#[derive(Debug, Clone, PartialEq)]
pub enum Reply {
    Status(String),
    Error(String),
    Int(i64),
    Bulk(Option<Vec<u8>>),
    Array(Option<Vec<Reply>>),
}

impl Reply {
    /// A bulk's bytes, or a status line's text.
    pub fn as_bytes(&self) -> Option<&[u8]> {
        match self {
            Reply::Bulk(Some(b)) => Some(b),
            Reply::Status(s) => Some(s.as_bytes()),
            _ => None,
        }
    }

    /// An integer, or a bulk holding one.
    pub fn as_int(&self) -> Option<i64> {
        match self {
            Reply::Int(i) => Some(*i),
            Reply::Bulk(Some(b)) => std::str::from_utf8(b).ok()?.parse().ok(),
            _ => None,
        }
    }

    pub fn into_array(self) -> Option<Vec<Reply>> {
        match self {
            Reply::Array(Some(v)) => Some(v),
            _ => None,
        }
    }

    pub fn is_ok(&self) -> bool {
        matches!(self, Reply::Status(s) if s == "OK")
    }
}

/// A reply that cannot be parsed: the stream cannot be resynchronised.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReplyError(pub String);

/// Parses one reply at the start of `buf`: `Ok(Some((reply, bytes used)))`, `Ok(None)` when the
/// reply is not complete yet.
pub fn parse_reply(buf: &[u8], limits: &ReplyLimits) -> Result<Option<(Reply, usize)>, ReplyError> {
    parse_at(buf, 0, limits, 0)
}

/// The first line at `at` (without CRLF) and the offset after it.
fn line<'a>(
    buf: &'a [u8],
    at: usize,
    limits: &ReplyLimits,
) -> Result<Option<(&'a [u8], usize)>, ReplyError> {
    let rest = &buf[at.min(buf.len())..];
    match rest.iter().position(|&b| b == b'\n') {
        Some(i) if i > 0 && rest[i - 1] == b'\r' => Ok(Some((&rest[..i - 1], at + i + 1))),
        Some(_) => Err(ReplyError("line not ended by CRLF".into())),
        None if rest.len() > limits.line_bytes_max => Err(ReplyError("reply line too long".into())),
        None => Ok(None),
    }
}

fn number(b: &[u8]) -> Result<i64, ReplyError> {
    std::str::from_utf8(b)
        .ok()
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| ReplyError("bad number in reply".into()))
}

fn parse_at(
    buf: &[u8],
    at: usize,
    limits: &ReplyLimits,
    depth: usize,
) -> Result<Option<(Reply, usize)>, ReplyError> {
    if depth > limits.depth_max {
        return Err(ReplyError("reply nested too deeply".into()));
    }
    let Some((l, next)) = line(buf, at, limits)? else {
        return Ok(None);
    };
    let Some((&kind, rest)) = l.split_first() else {
        return Err(ReplyError("empty reply line".into()));
    };
    let text = || String::from_utf8_lossy(rest).into_owned();
    Ok(Some(match kind {
        b'+' => (Reply::Status(text()), next),
        b'-' => (Reply::Error(text()), next),
        b':' => (Reply::Int(number(rest)?), next),
        b'_' => (Reply::Bulk(None), next),
        b'#' => (Reply::Int((rest == b"t") as i64), next),
        b',' => (Reply::Bulk(Some(rest.to_vec())), next),
        b'$' | b'=' | b'!' => {
            let n = number(rest)?;
            if n < 0 {
                return Ok(Some((Reply::Bulk(None), next)));
            }
            let n = n as usize;
            if n > limits.bulk_bytes_max {
                return Err(ReplyError("bulk reply too large".into()));
            }
            if buf.len() < next + n + 2 {
                return Ok(None);
            }
            if &buf[next + n..next + n + 2] != b"\r\n" {
                return Err(ReplyError("bulk reply not ended by CRLF".into()));
            }
            (
                Reply::Bulk(Some(buf[next..next + n].to_vec())),
                next + n + 2,
            )
        }
        b'*' | b'~' | b'>' | b'%' | b'|' => {
            let n = number(rest)?;
            if n < 0 {
                return Ok(Some((Reply::Array(None), next)));
            }
            // A map holds two replies per entry.
            let items = n as usize * if matches!(kind, b'%' | b'|') { 2 } else { 1 };
            if items > limits.array_items_max {
                return Err(ReplyError("array reply too large".into()));
            }
            // Nothing is reserved for elements that have not arrived yet.
            let mut v = Vec::with_capacity(items.min(1024));
            let mut pos = next;
            for _ in 0..items {
                match parse_at(buf, pos, limits, depth + 1)? {
                    Some((r, end)) => {
                        v.push(r);
                        pos = end;
                    }
                    None => return Ok(None),
                }
            }
            (Reply::Array(Some(v)), pos)
        }
        _ => return Err(ReplyError("unknown reply type".into())),
    }))
}

/// Encodes a request as a RESP multibulk (what a client sends).
pub fn encode_request(out: &mut Vec<u8>, args: &[&[u8]]) {
    let mut tmp = [0u8; 20];
    out.push(b'*');
    out.extend_from_slice(crate::fmt_u64(args.len() as u64, &mut tmp));
    out.extend_from_slice(b"\r\n");
    for a in args {
        out.push(b'$');
        out.extend_from_slice(crate::fmt_u64(a.len() as u64, &mut tmp));
        out.extend_from_slice(b"\r\n");
        out.extend_from_slice(a);
        out.extend_from_slice(b"\r\n");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(b: &[u8]) -> Result<Option<(Reply, usize)>, ReplyError> {
        parse_reply(b, &ReplyLimits::default())
    }

    #[test]
    fn whole_replies_parse_and_partial_ones_wait() {
        let full = b"*3\r\n+OK\r\n$3\r\nabc\r\n*2\r\n:5\r\n$-1\r\n";
        let (r, n) = parse(full).unwrap().unwrap();
        assert_eq!(n, full.len());
        assert_eq!(
            r,
            Reply::Array(Some(vec![
                Reply::Status("OK".into()),
                Reply::Bulk(Some(b"abc".to_vec())),
                Reply::Array(Some(vec![Reply::Int(5), Reply::Bulk(None)])),
            ]))
        );
        for cut in 0..full.len() {
            assert_eq!(parse(&full[..cut]).unwrap(), None, "cut at {cut}");
        }
        assert_eq!(
            parse(b"-ERR no\r\n+x").unwrap().unwrap(),
            (Reply::Error("ERR no".into()), 9)
        );
    }

    #[test]
    fn hostile_lengths_are_refused_before_allocating() {
        let limits = ReplyLimits {
            bulk_bytes_max: 10,
            array_items_max: 3,
            depth_max: 2,
            line_bytes_max: 16,
        };
        assert!(parse_reply(b"$11\r\n", &limits).is_err());
        assert!(parse_reply(b"*4\r\n", &limits).is_err());
        assert!(parse_reply(b"*1\r\n*1\r\n*1\r\n*1\r\n", &limits).is_err());
        assert!(parse_reply(b"+aaaaaaaaaaaaaaaaaaaaaaaa", &limits).is_err());
        assert!(parse_reply(b"?x\r\n", &limits).is_err());
        assert!(parse_reply(b"$3\r\nabcXY", &limits).is_err());
    }

    #[test]
    fn requests_encode_as_multibulk() {
        let mut out = Vec::new();
        encode_request(&mut out, &[b"REPLCONF", b"ACK", b"12"]);
        assert_eq!(out, b"*3\r\n$8\r\nREPLCONF\r\n$3\r\nACK\r\n$2\r\n12\r\n");
    }
}
