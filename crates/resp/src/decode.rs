//! Incremental request decoder: RESP multibulk (`*2\r\n$3\r\nGET\r\n$1\r\nk\r\n`) and inline commands
//! (`GET k\r\n`, as telnet and `redis-cli` in some modes send them).
//!
//! The decoder never copies multibulk arguments: it records their byte ranges in the caller's buffer. It
//! keeps its progress between calls, so a 500 MB bulk string or a 1,000,000-argument MSET arriving in
//! thousands of reads is parsed once, not once per read. "Need more bytes" is a normal answer
//! ([`Decoded::Incomplete`]), not an error. Errors are protocol errors: the connection cannot be
//! resynchronised and must be closed after the error is sent, as Redis does.
//!
//! Invariant: the decoder never reads past `buf.len()` and never panics, whatever the input.

use std::ops::Range;

/// Limits the decoder enforces; the server fills them from config.
#[derive(Clone, Copy, Debug)]
pub struct Limits {
    /// Largest bulk string accepted (`proto-max-bulk-len`, Redis default 512 MB).
    pub bulk_bytes_max: usize,
    /// Largest multibulk argument count accepted (Redis: 1024*1024*1024).
    pub multibulk_args_max: usize,
    /// Longest inline request or count line before a newline must appear (Redis: 64 KB).
    pub inline_bytes_max: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            bulk_bytes_max: 512 * 1024 * 1024,
            multibulk_args_max: 1024 * 1024 * 1024,
            inline_bytes_max: 64 * 1024,
        }
    }
}

/// A protocol error; the text is what Redis sends after `-ERR Protocol error: `.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProtocolError(pub String);

impl ProtocolError {
    fn new(s: &str) -> Self {
        ProtocolError(s.to_string())
    }
    /// The full error line body, e.g. `ERR Protocol error: invalid bulk length`.
    pub fn message(&self) -> String {
        format!("ERR Protocol error: {}", self.0)
    }
}

/// Outcome of one decode step.
#[derive(Debug, PartialEq, Eq)]
pub enum Decoded {
    /// A whole request ends at byte `end` of the buffer; its arguments are in the ranges vector.
    /// `inline` says the ranges index the decoder's scratch buffer ([`RequestDecoder::inline_bytes`])
    /// instead of the caller's buffer (inline arguments can carry escapes, so they are rewritten).
    Frame { end: usize, inline: bool },
    /// An empty line or `*0`/`*-1`: nothing to run; skip to `end`.
    Empty { end: usize },
    /// More bytes are needed. The decoder keeps its progress.
    Incomplete,
}

#[derive(Debug, Default)]
enum State {
    #[default]
    Start,
    /// Inside a multibulk: `remaining` arguments still to read, next byte to look at is `pos`.
    Multibulk { remaining: usize, pos: usize },
    /// Inside a bulk of `len` bytes whose data starts at `data`.
    Bulk {
        remaining: usize,
        data: usize,
        len: usize,
    },
}

/// Decoder of client requests. One per connection.
#[derive(Debug, Default)]
pub struct RequestDecoder {
    limits: Limits,
    state: State,
    scratch: Vec<u8>,
}

/// Finds `\r\n` (or a bare `\n` for inline) starting at `from`; returns the index of `\r` / `\n`.
fn find_crlf(buf: &[u8], from: usize) -> Option<usize> {
    let hay = buf.get(from..)?;
    let i = hay.iter().position(|&b| b == b'\n')?;
    let nl = from + i;
    if nl > from && buf[nl - 1] == b'\r' {
        Some(nl - 1)
    } else {
        Some(nl)
    }
}

/// Length of an unterminated line from `start`, not counting a trailing '\r'.
fn line_len_so_far(buf: &[u8], start: usize) -> usize {
    let end = if buf.last() == Some(&b'\r') {
        buf.len() - 1
    } else {
        buf.len()
    };
    end.saturating_sub(start)
}

/// Parses a decimal count as Redis's `string2ll` would for protocol lengths: optional '-', digits only.
fn parse_len(s: &[u8]) -> Option<i64> {
    let (neg, digits) = match s.first() {
        Some(b'-') => (true, &s[1..]),
        _ => (false, s),
    };
    if digits.is_empty() || digits.len() > 18 {
        return None;
    }
    let mut v: i64 = 0;
    for &b in digits {
        if !b.is_ascii_digit() {
            return None;
        }
        v = v * 10 + (b - b'0') as i64;
    }
    Some(if neg { -v } else { v })
}

impl RequestDecoder {
    pub fn new(limits: Limits) -> Self {
        RequestDecoder {
            limits,
            state: State::Start,
            scratch: Vec::new(),
        }
    }

    pub fn set_limits(&mut self, limits: Limits) {
        self.limits = limits;
    }

    /// Bytes that inline-frame ranges index into.
    pub fn inline_bytes(&self) -> &[u8] {
        &self.scratch
    }

    /// True when a frame has started but is not complete.
    pub fn in_progress(&self) -> bool {
        !matches!(self.state, State::Start)
    }

    /// The caller removed `n` bytes from the front of its buffer (all before the current frame).
    /// Rebases the recorded offsets of a partly decoded frame.
    pub fn shift(&mut self, n: usize, args: &mut [Range<usize>]) {
        match &mut self.state {
            // Between frames the ranges belong to a finished frame; nothing to rebase.
            State::Start => return,
            State::Multibulk { pos, .. } => *pos -= n,
            State::Bulk { data, .. } => *data -= n,
        }
        for r in args.iter_mut() {
            r.start -= n;
            r.end -= n;
        }
    }

    /// Bytes still needed before the current bulk completes, if inside a bulk (a read-size hint).
    pub fn bulk_bytes_pending(&self, buf_len: usize) -> usize {
        match self.state {
            State::Bulk { data, len, .. } => (data + len + 2).saturating_sub(buf_len),
            _ => 0,
        }
    }

    /// Decodes the next request starting at `start`. On `Frame`, `args` holds the argument ranges;
    /// on `Incomplete`, `args` holds the arguments decoded so far and must be passed back unchanged.
    pub fn decode(
        &mut self,
        buf: &[u8],
        start: usize,
        args: &mut Vec<Range<usize>>,
    ) -> Result<Decoded, ProtocolError> {
        loop {
            match self.state {
                State::Start => {
                    args.clear();
                    let Some(&first) = buf.get(start) else {
                        return Ok(Decoded::Incomplete);
                    };
                    if first != b'*' {
                        return self.decode_inline(buf, start, args);
                    }
                    let Some(cr) = find_crlf(buf, start + 1) else {
                        // Measured like a complete line (without a trailing '\r'), so the
                        // outcome does not depend on where a read ended.
                        if line_len_so_far(buf, start) > self.limits.inline_bytes_max {
                            return Err(ProtocolError::new("too big mbulk count string"));
                        }
                        return Ok(Decoded::Incomplete);
                    };
                    if cr - start > self.limits.inline_bytes_max {
                        return Err(ProtocolError::new("too big mbulk count string"));
                    }
                    let next = cr + if buf[cr] == b'\r' { 2 } else { 1 };
                    let count = match parse_len(&buf[start + 1..cr]) {
                        Some(n) if n <= self.limits.multibulk_args_max as i64 => n,
                        _ => return Err(ProtocolError::new("invalid multibulk length")),
                    };
                    if count <= 0 {
                        return Ok(Decoded::Empty { end: next });
                    }
                    // Reserve modestly: a hostile count must not allocate before its bytes arrive.
                    args.reserve((count as usize).min(1024));
                    self.state = State::Multibulk {
                        remaining: count as usize,
                        pos: next,
                    };
                }
                State::Multibulk { remaining, pos } => {
                    if remaining == 0 {
                        self.state = State::Start;
                        return Ok(Decoded::Frame {
                            end: pos,
                            inline: false,
                        });
                    }
                    let Some(&b) = buf.get(pos) else {
                        return Ok(Decoded::Incomplete);
                    };
                    if b != b'$' {
                        self.state = State::Start;
                        let got = (b as char).to_string();
                        return Err(ProtocolError(format!("expected '$', got '{got}'")));
                    }
                    let Some(cr) = find_crlf(buf, pos + 1) else {
                        if line_len_so_far(buf, pos) > self.limits.inline_bytes_max {
                            self.state = State::Start;
                            return Err(ProtocolError::new("too big bulk count string"));
                        }
                        return Ok(Decoded::Incomplete);
                    };
                    if cr - pos > self.limits.inline_bytes_max {
                        self.state = State::Start;
                        return Err(ProtocolError::new("too big bulk count string"));
                    }
                    let len = match parse_len(&buf[pos + 1..cr]) {
                        Some(n) if n >= 0 && n as usize <= self.limits.bulk_bytes_max => n as usize,
                        _ => {
                            self.state = State::Start;
                            return Err(ProtocolError::new("invalid bulk length"));
                        }
                    };
                    let data = cr + if buf[cr] == b'\r' { 2 } else { 1 };
                    self.state = State::Bulk {
                        remaining,
                        data,
                        len,
                    };
                }
                State::Bulk {
                    remaining,
                    data,
                    len,
                } => {
                    let end = data + len;
                    if buf.len() < end + 2 {
                        return Ok(Decoded::Incomplete);
                    }
                    if &buf[end..end + 2] != b"\r\n" {
                        self.state = State::Start;
                        return Err(ProtocolError::new("invalid bulk format"));
                    }
                    args.push(data..end);
                    self.state = State::Multibulk {
                        remaining: remaining - 1,
                        pos: end + 2,
                    };
                }
            }
        }
    }

    fn decode_inline(
        &mut self,
        buf: &[u8],
        start: usize,
        args: &mut Vec<Range<usize>>,
    ) -> Result<Decoded, ProtocolError> {
        let Some(nl) = buf[start..].iter().position(|&b| b == b'\n') else {
            if buf.len() - start > self.limits.inline_bytes_max {
                return Err(ProtocolError::new("too big inline request"));
            }
            return Ok(Decoded::Incomplete);
        };
        if nl > self.limits.inline_bytes_max {
            return Err(ProtocolError::new("too big inline request"));
        }
        let end = start + nl + 1;
        let mut line = &buf[start..start + nl];
        if let Some(stripped) = line.strip_suffix(b"\r") {
            line = stripped;
        }
        self.scratch.clear();
        split_args(line, &mut self.scratch, args)?;
        if args.is_empty() {
            return Ok(Decoded::Empty { end });
        }
        Ok(Decoded::Frame { end, inline: true })
    }
}

fn hex_val(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

/// Splits an inline line the way Redis's `sdssplitargs` does: whitespace separated, with "double"
/// quotes (escapes \n \r \t \b \a \\ \" \xHH) and 'single' quotes (escape \').
pub fn split_args(
    line: &[u8],
    out: &mut Vec<u8>,
    args: &mut Vec<Range<usize>>,
) -> Result<(), ProtocolError> {
    let unbalanced = || ProtocolError::new("unbalanced quotes in request");
    let mut i = 0;
    let n = line.len();
    loop {
        while i < n && line[i].is_ascii_whitespace() {
            i += 1;
        }
        // Like sdssplitargs, a NUL ends the line (and must not yield endless empty arguments).
        if i >= n || line[i] == 0 {
            return Ok(());
        }
        let begin = out.len();
        let mut in_dq = false;
        let mut in_sq = false;
        loop {
            if in_dq {
                if i >= n {
                    return Err(unbalanced());
                }
                let c = line[i];
                if c == b'\\'
                    && i + 3 < n
                    && line[i + 1] == b'x'
                    && let (Some(h), Some(l)) = (hex_val(line[i + 2]), hex_val(line[i + 3]))
                {
                    out.push(h * 16 + l);
                    i += 4;
                    continue;
                }
                if c == b'\\' && i + 1 < n {
                    i += 1;
                    out.push(match line[i] {
                        b'n' => b'\n',
                        b'r' => b'\r',
                        b't' => b'\t',
                        b'b' => 8,
                        b'a' => 7,
                        other => other,
                    });
                } else if c == b'"' {
                    // The closing quote must be followed by a space or the end.
                    if i + 1 < n && !line[i + 1].is_ascii_whitespace() {
                        return Err(unbalanced());
                    }
                    i += 1;
                    break;
                } else {
                    out.push(c);
                }
                i += 1;
            } else if in_sq {
                if i >= n {
                    return Err(unbalanced());
                }
                let c = line[i];
                if c == b'\\' && i + 1 < n && line[i + 1] == b'\'' {
                    out.push(b'\'');
                    i += 2;
                    continue;
                } else if c == b'\'' {
                    if i + 1 < n && !line[i + 1].is_ascii_whitespace() {
                        return Err(unbalanced());
                    }
                    i += 1;
                    break;
                } else {
                    out.push(c);
                }
                i += 1;
            } else {
                if i >= n {
                    break;
                }
                match line[i] {
                    b' ' | b'\n' | b'\r' | b'\t' | 0 => break,
                    b'"' => in_dq = true,
                    b'\'' => in_sq = true,
                    c => out.push(c),
                }
                i += 1;
            }
        }
        args.push(begin..out.len());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decode_all(input: &[u8]) -> Result<Vec<Vec<Vec<u8>>>, ProtocolError> {
        let mut d = RequestDecoder::new(Limits::default());
        let mut args = Vec::new();
        let mut out = Vec::new();
        let mut pos = 0;
        loop {
            match d.decode(input, pos, &mut args)? {
                Decoded::Frame { end, inline } => {
                    let src: &[u8] = if inline { d.inline_bytes() } else { input };
                    out.push(args.iter().map(|r| src[r.clone()].to_vec()).collect());
                    pos = end;
                }
                Decoded::Empty { end } => pos = end,
                Decoded::Incomplete => return Ok(out),
            }
        }
    }

    #[test]
    fn multibulk_and_pipelining() {
        let got = decode_all(b"*2\r\n$3\r\nGET\r\n$1\r\nk\r\n*1\r\n$4\r\nPING\r\n").unwrap();
        assert_eq!(
            got,
            vec![vec![b"GET".to_vec(), b"k".to_vec()], vec![b"PING".to_vec()]]
        );
    }

    #[test]
    fn byte_at_a_time_equals_whole() {
        let input = b"*3\r\n$3\r\nSET\r\n$3\r\nkey\r\n$5\r\nva\r\nl\r\nPING\r\n";
        let mut d = RequestDecoder::new(Limits::default());
        let mut args = Vec::new();
        let mut frames: Vec<Vec<Vec<u8>>> = Vec::new();
        let mut pos = 0;
        for n in 1..=input.len() {
            let buf = &input[..n];
            loop {
                match d.decode(buf, pos, &mut args).unwrap() {
                    Decoded::Frame { end, inline } => {
                        let src: &[u8] = if inline { d.inline_bytes() } else { buf };
                        frames.push(args.iter().map(|r| src[r.clone()].to_vec()).collect());
                        pos = end;
                    }
                    Decoded::Empty { end } => pos = end,
                    Decoded::Incomplete => break,
                }
            }
        }
        assert_eq!(frames.len(), 2);
        assert_eq!(frames[0][2], b"va\r\nl");
        assert_eq!(frames[1][0], b"PING");
    }

    #[test]
    fn inline_with_quotes() {
        let got = decode_all(b"SET \"a b\" 'c\\'d' \"\\x41\\n\"\r\n").unwrap();
        assert_eq!(
            got[0],
            vec![
                b"SET".to_vec(),
                b"a b".to_vec(),
                b"c'd".to_vec(),
                b"A\n".to_vec()
            ]
        );
        assert_eq!(
            decode_all(b"SET \"a\r\n").unwrap_err().0,
            "unbalanced quotes in request"
        );
        assert_eq!(
            decode_all(b"\r\n\r\nPING\n").unwrap(),
            vec![vec![b"PING".to_vec()]]
        );
    }

    #[test]
    fn protocol_errors_match_redis() {
        assert_eq!(
            decode_all(b"*1\r\n+x\r\n").unwrap_err().0,
            "expected '$', got '+'"
        );
        assert_eq!(
            decode_all(b"*x\r\n").unwrap_err().0,
            "invalid multibulk length"
        );
        assert_eq!(
            decode_all(b"*1\r\n$-5\r\n").unwrap_err().0,
            "invalid bulk length"
        );
        assert_eq!(
            decode_all(b"*1\r\n$999999999999\r\n").unwrap_err().0,
            "invalid bulk length"
        );
        assert_eq!(
            decode_all(b"*0\r\n*-1\r\n").unwrap(),
            Vec::<Vec<Vec<u8>>>::new()
        );
    }

    #[test]
    fn shift_rebases_partial_frame() {
        let mut d = RequestDecoder::new(Limits::default());
        let mut args = Vec::new();
        let mut buf = b"*1\r\n$4\r\nPING\r\n*2\r\n$3\r\nGET\r\n$1".to_vec();
        let Decoded::Frame { end, .. } = d.decode(&buf, 0, &mut args).unwrap() else {
            panic!()
        };
        assert_eq!(d.decode(&buf, end, &mut args).unwrap(), Decoded::Incomplete);
        buf.drain(..end);
        d.shift(end, &mut args);
        buf.extend_from_slice(b"\r\nk\r\n");
        let Decoded::Frame { .. } = d.decode(&buf, 0, &mut args).unwrap() else {
            panic!()
        };
        let got: Vec<&[u8]> = args.iter().map(|r| &buf[r.clone()]).collect();
        assert_eq!(got, vec![&b"GET"[..], &b"k"[..]]);
    }
}
