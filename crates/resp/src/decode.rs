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
    /// Largest multibulk argument count accepted (Redis: `INT_MAX`).
    pub multibulk_args_max: usize,
    /// Longest inline request or count line before a newline must appear (Redis: 64 KB).
    pub inline_bytes_max: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            bulk_bytes_max: 512 * 1024 * 1024,
            multibulk_args_max: i32::MAX as usize,
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

/// Most arguments a request may announce before its client authenticated (Redis: 10).
pub const UNAUTHENTICATED_ARGS_MAX: i64 = 10;
/// Longest argument a request may announce before its client authenticated (Redis: 16 KB).
pub const UNAUTHENTICATED_BULK_BYTES_MAX: i64 = 16384;

/// Decoder of client requests. One per connection.
#[derive(Debug, Default)]
pub struct RequestDecoder {
    limits: Limits,
    state: State,
    scratch: Vec<u8>,
    /// The client has not authenticated yet (a password is required): counts and lengths are
    /// held to [`UNAUTHENTICATED_ARGS_MAX`] and [`UNAUTHENTICATED_BULK_BYTES_MAX`], so a stranger
    /// cannot make the server hold memory.
    unauthenticated: bool,
}

/// A multibulk count or bulk length line: the index of its `\r`, whose next byte must be there
/// too (Redis's `processMultibulkBuffer` takes the byte after `\r` as the `\n`, whatever it is).
/// `None` when the line is not complete yet.
fn find_cr(buf: &[u8], from: usize) -> Option<usize> {
    let hay = buf.get(from..)?;
    let cr = from + hay.iter().position(|&b| b == b'\r')?;
    (cr + 1 < buf.len()).then_some(cr)
}

/// Length of an unterminated count line from `start`, not counting a `\r` that ends the buffer
/// (its `\n` is still to come), so the limit does not depend on where a read ended.
fn line_len_so_far(buf: &[u8], start: usize) -> usize {
    let end = if buf.last() == Some(&b'\r') {
        buf.len() - 1
    } else {
        buf.len()
    };
    end.saturating_sub(start)
}

/// Parses a decimal count as Redis's `string2ll` does for protocol lengths: an optional '-', then
/// digits without a leading zero ("0" alone is fine; "05", "-0", "+5" and "" are not).
fn parse_len(s: &[u8]) -> Option<i64> {
    let (neg, digits) = match s.first() {
        Some(b'-') => (true, &s[1..]),
        _ => (false, s),
    };
    if digits.is_empty() || digits.len() > 18 {
        return None;
    }
    if digits[0] == b'0' && (digits.len() > 1 || neg) {
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
            unauthenticated: false,
        }
    }

    pub fn set_limits(&mut self, limits: Limits) {
        self.limits = limits;
    }

    /// Whether the client has authenticated (or needs not): until it has, a request may announce
    /// only a few short arguments (see [`UNAUTHENTICATED_ARGS_MAX`]). Set before each decode.
    pub fn set_authenticated(&mut self, authenticated: bool) {
        self.unauthenticated = !authenticated;
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
                    let Some(cr) = find_cr(buf, start + 1) else {
                        if line_len_so_far(buf, start) > self.limits.inline_bytes_max {
                            return Err(ProtocolError::new("too big mbulk count string"));
                        }
                        return Ok(Decoded::Incomplete);
                    };
                    // Also when the line is complete, so the outcome does not depend on where a
                    // read ended.
                    if cr - start > self.limits.inline_bytes_max {
                        return Err(ProtocolError::new("too big mbulk count string"));
                    }
                    let next = cr + 2;
                    let count = match parse_len(&buf[start + 1..cr]) {
                        Some(n) if n <= self.limits.multibulk_args_max as i64 => n,
                        _ => return Err(ProtocolError::new("invalid multibulk length")),
                    };
                    if count > UNAUTHENTICATED_ARGS_MAX && self.unauthenticated {
                        return Err(ProtocolError::new("unauthenticated multibulk length"));
                    }
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
                    // Redis's order: the whole length line first, then its '$'.
                    let Some(cr) = find_cr(buf, pos) else {
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
                    let b = buf[pos];
                    if b != b'$' {
                        self.state = State::Start;
                        let got = (b as char).to_string();
                        return Err(ProtocolError(format!("expected '$', got '{got}'")));
                    }
                    let len = match parse_len(&buf[pos + 1..cr]) {
                        Some(n) if n >= 0 && n as usize <= self.limits.bulk_bytes_max => n as usize,
                        _ => {
                            self.state = State::Start;
                            return Err(ProtocolError::new("invalid bulk length"));
                        }
                    };
                    if len as i64 > UNAUTHENTICATED_BULK_BYTES_MAX && self.unauthenticated {
                        self.state = State::Start;
                        return Err(ProtocolError::new("unauthenticated bulk length"));
                    }
                    let data = cr + 2;
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
                    // The two bytes after the data are skipped whatever they are, as Redis does.
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

/// The second argument (a command's usual key) of the RESP array request at the start of `buf`,
/// if its first two arguments are there in full; `None` for anything else (an inline request, a
/// short or malformed one). Validates nothing beyond what it reads: the answer is only a hint (to
/// prefetch a pipeline's next key before its request is decoded for real).
pub fn peek_key(buf: &[u8]) -> Option<&[u8]> {
    /// Reads `<prefix><digits>\r\n` at `at`: the number and where the line ends.
    fn header(buf: &[u8], at: usize, prefix: u8) -> Option<(usize, usize)> {
        if *buf.get(at)? != prefix {
            return None;
        }
        let mut n = 0usize;
        let mut i = at + 1;
        // Up to 9 digits: longer arguments are not worth a hint.
        while i < at + 11 {
            match *buf.get(i)? {
                d @ b'0'..=b'9' => n = n * 10 + usize::from(d - b'0'),
                b'\r' => return (i > at + 1).then_some((n, i + 2)),
                _ => return None,
            }
            i += 1;
        }
        None
    }
    let (count, at) = header(buf, 0, b'*')?;
    if count < 2 {
        return None;
    }
    let (name_len, at) = header(buf, at, b'$')?;
    let (key_len, at) = header(buf, at + name_len + 2, b'$')?;
    buf.get(at..at + key_len)
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

    #[test]
    fn peek_key_finds_the_second_argument_or_nothing() {
        let set = b"*3\r\n$3\r\nSET\r\n$5\r\nkey:1\r\n$1\r\nv\r\n*2\r\n";
        assert_eq!(peek_key(set), Some(&b"key:1"[..]));
        // The key in full is enough; the rest of the request may not have arrived.
        assert_eq!(
            peek_key(b"*3\r\n$3\r\nSET\r\n$2\r\nab\r\n$9\r\nv"),
            Some(&b"ab"[..])
        );
        assert_eq!(peek_key(b"*2\r\n$3\r\nGET\r\n$2\r\nab"), Some(&b"ab"[..]));
        assert_eq!(peek_key(b"*2\r\n$3\r\nGET\r\n$2\r\na"), None);
        assert_eq!(peek_key(b"*1\r\n$4\r\nPING\r\n"), None);
        assert_eq!(peek_key(b"GET k\r\n"), None);
        assert_eq!(peek_key(b"*2\r\n$x\r\n"), None);
        assert_eq!(peek_key(b"*2\r\n$\r\n"), None);
        assert_eq!(peek_key(b"*2\r\n$99999999999\r\n"), None);
        assert_eq!(peek_key(b""), None);
        // Whatever the bytes, it never panics.
        for n in 0..64u8 {
            let junk: Vec<u8> = (0..n)
                .map(|i| b"*$\r\n0123456789"[(i as usize * 7) % 14])
                .collect();
            let _ = peek_key(&junk);
        }
    }

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
    fn lengths_and_terminators_as_redis_reads_them() {
        // Leading zeros and "-0" are not numbers to `string2ll`.
        assert_eq!(
            decode_all(b"*1\r\n$05\r\nhello\r\n").unwrap_err().0,
            "invalid bulk length"
        );
        assert_eq!(
            decode_all(b"*01\r\n$4\r\nPING\r\n").unwrap_err().0,
            "invalid multibulk length"
        );
        assert_eq!(
            decode_all(b"*1\r\n$-0\r\n").unwrap_err().0,
            "invalid bulk length"
        );
        // A line ends at '\r': a bare '\n' leaves the number unparsable once a '\r' comes.
        assert_eq!(
            decode_all(b"*1\r\n$4\nPING\r\n").unwrap_err().0,
            "invalid bulk length"
        );
        // The two bytes after a bulk are skipped, whatever they are.
        assert_eq!(
            decode_all(b"*1\r\n$4\r\nPINGxx*1\r\n$4\r\nPING\r\n").unwrap(),
            vec![vec![b"PING".to_vec()], vec![b"PING".to_vec()]]
        );
        // INT_MAX arguments may be announced (the server then waits for them).
        assert_eq!(
            decode_all(b"*2147483647\r\n").unwrap(),
            Vec::<Vec<Vec<u8>>>::new()
        );
        assert_eq!(
            decode_all(b"*2147483648\r\n").unwrap_err().0,
            "invalid multibulk length"
        );
    }

    #[test]
    fn an_unauthenticated_client_may_announce_only_small_requests() {
        let mut d = RequestDecoder::new(Limits::default());
        d.set_authenticated(false);
        let mut args = Vec::new();
        assert_eq!(
            d.decode(b"*11\r\n", 0, &mut args).unwrap_err().0,
            "unauthenticated multibulk length"
        );
        let mut d = RequestDecoder::new(Limits::default());
        d.set_authenticated(false);
        assert_eq!(
            d.decode(b"*2\r\n$4\r\nAUTH\r\n$16385\r\n", 0, &mut args)
                .unwrap_err()
                .0,
            "unauthenticated bulk length"
        );
        let mut d = RequestDecoder::new(Limits::default());
        d.set_authenticated(false);
        let ok = b"*10\r\n$16384\r\n";
        assert_eq!(d.decode(ok, 0, &mut args).unwrap(), Decoded::Incomplete);
        d.set_authenticated(true);
        let mut d = RequestDecoder::new(Limits::default());
        assert_eq!(
            d.decode(b"*11\r\n$16385\r\n", 0, &mut args).unwrap(),
            Decoded::Incomplete
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
