//! Just enough RESP2 for a load generator: encode commands, parse replies.
//!
//! Sans-IO on purpose: the same parser serves the tokio client (hit ratio, max rate) and the
//! OS-thread open-loop client, and can be tested on byte strings. It is deliberately not the
//! server's `shoal-resp` crate: a benchmark client that shares the server's decoder would share its
//! bugs. RESP3 types are not handled because the load generator never sends `HELLO 3`.

/// One reply, borrowing its bytes from the read buffer (no allocation on the hot path except arrays).
#[derive(Debug, PartialEq, Eq)]
pub enum Reply<'a> {
    Simple(&'a [u8]),
    Error(&'a [u8]),
    Integer(i64),
    /// `None` is the RESP2 null bulk string (`$-1`), i.e. a cache miss for GET.
    Bulk(Option<&'a [u8]>),
    Array(Option<Vec<Reply<'a>>>),
}

#[derive(Debug, PartialEq, Eq)]
pub enum ParseError {
    UnknownType(u8),
    BadNumber,
    MissingCrlf,
    TooLarge,
    TooDeep,
}

impl std::fmt::Display for ParseError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ParseError::UnknownType(b) => write!(f, "unknown RESP type byte 0x{b:02x}"),
            ParseError::BadNumber => f.write_str("malformed length or integer"),
            ParseError::MissingCrlf => f.write_str("bulk string not followed by CRLF"),
            ParseError::TooLarge => f.write_str("reply exceeds the client's size limits"),
            ParseError::TooDeep => f.write_str("arrays nested too deeply"),
        }
    }
}

/// Limits keep a misbehaving server from making the client buffer without end.
const MAX_LINE: usize = 64 * 1024;
const MAX_BULK: i64 = 512 * 1024 * 1024;
const MAX_ARRAY: i64 = 1024 * 1024;
const MAX_DEPTH: usize = 8;

/// Parses one reply from the front of `buf`. `Ok(None)` means the reply is not complete yet, which
/// is normal with partial reads; the caller reads more and tries again from the same position.
pub fn parse_reply(buf: &[u8]) -> Result<Option<(Reply<'_>, usize)>, ParseError> {
    parse_at(buf, 0, 0)
}

fn parse_at(
    buf: &[u8],
    pos: usize,
    depth: usize,
) -> Result<Option<(Reply<'_>, usize)>, ParseError> {
    if depth > MAX_DEPTH {
        return Err(ParseError::TooDeep);
    }
    if pos >= buf.len() {
        return Ok(None);
    }
    let Some((line, after)) = line_at(buf, pos + 1)? else {
        return Ok(None);
    };
    match buf[pos] {
        b'+' => Ok(Some((Reply::Simple(line), after))),
        b'-' => Ok(Some((Reply::Error(line), after))),
        b':' => Ok(Some((Reply::Integer(number(line)?), after))),
        b'$' => {
            let len = number(line)?;
            if len == -1 {
                return Ok(Some((Reply::Bulk(None), after)));
            }
            if !(0..=MAX_BULK).contains(&len) {
                return Err(ParseError::TooLarge);
            }
            let end = after + len as usize;
            if buf.len() < end + 2 {
                return Ok(None);
            }
            if &buf[end..end + 2] != b"\r\n" {
                return Err(ParseError::MissingCrlf);
            }
            Ok(Some((Reply::Bulk(Some(&buf[after..end])), end + 2)))
        }
        b'*' => {
            let count = number(line)?;
            if count == -1 {
                return Ok(Some((Reply::Array(None), after)));
            }
            if !(0..=MAX_ARRAY).contains(&count) {
                return Err(ParseError::TooLarge);
            }
            // Capacity is capped so a bogus count cannot reserve memory before elements arrive.
            let mut items = Vec::with_capacity((count as usize).min(64));
            let mut next = after;
            for _ in 0..count {
                let Some((item, end)) = parse_at(buf, next, depth + 1)? else {
                    return Ok(None);
                };
                items.push(item);
                next = end;
            }
            Ok(Some((Reply::Array(Some(items)), next)))
        }
        other => Err(ParseError::UnknownType(other)),
    }
}

/// The bytes from `start` up to the next CRLF, and the position after it.
fn line_at(buf: &[u8], start: usize) -> Result<Option<(&[u8], usize)>, ParseError> {
    if start > buf.len() {
        return Ok(None);
    }
    let rest = &buf[start..];
    match rest.windows(2).position(|w| w == b"\r\n") {
        Some(i) if i > MAX_LINE => Err(ParseError::TooLarge),
        Some(i) => Ok(Some((&rest[..i], start + i + 2))),
        None if rest.len() > MAX_LINE => Err(ParseError::TooLarge),
        None => Ok(None),
    }
}

fn number(line: &[u8]) -> Result<i64, ParseError> {
    std::str::from_utf8(line)
        .ok()
        .and_then(|s| s.parse().ok())
        .ok_or(ParseError::BadNumber)
}

/// Appends a command as a RESP array of bulk strings, the form every server accepts.
pub fn encode_command(out: &mut Vec<u8>, args: &[&[u8]]) {
    out.push(b'*');
    push_decimal(out, args.len());
    out.extend_from_slice(b"\r\n");
    for arg in args {
        out.push(b'$');
        push_decimal(out, arg.len());
        out.extend_from_slice(b"\r\n");
        out.extend_from_slice(arg);
        out.extend_from_slice(b"\r\n");
    }
}

fn push_decimal(out: &mut Vec<u8>, n: usize) {
    out.extend_from_slice(n.to_string().as_bytes());
}

#[cfg(test)]
mod tests {
    use super::*;

    fn whole(input: &[u8]) -> Reply<'_> {
        let (reply, used) = parse_reply(input).unwrap().expect("complete reply");
        assert_eq!(used, input.len(), "consumed exactly one reply");
        reply
    }

    #[test]
    fn parses_each_resp2_type() {
        assert_eq!(whole(b"+OK\r\n"), Reply::Simple(b"OK"));
        assert_eq!(
            whole(b"-ERR unknown command\r\n"),
            Reply::Error(b"ERR unknown command")
        );
        assert_eq!(whole(b":-42\r\n"), Reply::Integer(-42));
        assert_eq!(whole(b"$5\r\nhello\r\n"), Reply::Bulk(Some(b"hello")));
        assert_eq!(whole(b"$0\r\n\r\n"), Reply::Bulk(Some(b"")));
        assert_eq!(whole(b"$-1\r\n"), Reply::Bulk(None));
        assert_eq!(whole(b"*-1\r\n"), Reply::Array(None));
        assert_eq!(
            whole(b"*3\r\n:1\r\n$2\r\nab\r\n*1\r\n+x\r\n"),
            Reply::Array(Some(vec![
                Reply::Integer(1),
                Reply::Bulk(Some(b"ab")),
                Reply::Array(Some(vec![Reply::Simple(b"x")])),
            ]))
        );
    }

    #[test]
    fn bulk_payload_may_contain_crlf() {
        assert_eq!(whole(b"$4\r\na\r\nb\r\n"), Reply::Bulk(Some(b"a\r\nb")));
    }

    #[test]
    fn every_truncation_asks_for_more_instead_of_failing() {
        let full = b"*2\r\n$5\r\nhello\r\n:7\r\n";
        for cut in 0..full.len() {
            assert_eq!(parse_reply(&full[..cut]), Ok(None), "prefix of {cut} bytes");
        }
    }

    #[test]
    fn pipelined_replies_are_consumed_one_at_a_time() {
        let buf = b"+OK\r\n$-1\r\n$3\r\nabc\r\n";
        let mut pos = 0;
        let mut got = Vec::new();
        while let Some((reply, used)) = parse_reply(&buf[pos..]).unwrap() {
            got.push(format!("{reply:?}"));
            pos += used;
        }
        assert_eq!(pos, buf.len());
        assert_eq!(got.len(), 3);
    }

    #[test]
    fn malformed_input_is_an_error_not_a_panic() {
        assert_eq!(
            parse_reply(b"!oops\r\n"),
            Err(ParseError::UnknownType(b'!'))
        );
        assert_eq!(parse_reply(b"$abc\r\n"), Err(ParseError::BadNumber));
        assert_eq!(parse_reply(b"$3\r\nabcXY"), Err(ParseError::MissingCrlf));
        assert_eq!(parse_reply(b"$-2\r\n"), Err(ParseError::TooLarge));
        assert_eq!(parse_reply(b"*99999999999\r\n"), Err(ParseError::TooLarge));
        let deep = "*1\r\n".repeat(MAX_DEPTH + 2);
        assert_eq!(parse_reply(deep.as_bytes()), Err(ParseError::TooDeep));
        let long_line = vec![b'+'; MAX_LINE + 10];
        assert_eq!(parse_reply(&long_line), Err(ParseError::TooLarge));
    }

    #[test]
    fn encodes_commands_as_bulk_arrays() {
        let mut out = Vec::new();
        encode_command(&mut out, &[b"SET", b"k", b""]);
        assert_eq!(out, b"*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$0\r\n\r\n");
    }
}
