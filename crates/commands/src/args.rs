//! Command arguments and the typed parsing every command shares, with Redis's exact error strings.

use crate::error::ReplyError;
use std::ops::Range;

/// The arguments of one request: `args.get(0)` is the command name. Borrowed from the connection's
/// read buffer (no copy per argument).
#[derive(Clone, Copy)]
pub struct Args<'a> {
    src: &'a [u8],
    ranges: &'a [Range<usize>],
}

/// Owned arguments, for requests that outlive the read buffer (queued MULTI commands, tests).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct OwnedArgs {
    bytes: Vec<u8>,
    ranges: Vec<Range<usize>>,
}

impl OwnedArgs {
    pub fn new<I, T>(items: I) -> Self
    where
        I: IntoIterator<Item = T>,
        T: AsRef<[u8]>,
    {
        let mut o = OwnedArgs::default();
        for it in items {
            let start = o.bytes.len();
            o.bytes.extend_from_slice(it.as_ref());
            o.ranges.push(start..o.bytes.len());
        }
        o
    }

    /// Empties it, keeping its buffers.
    pub fn clear(&mut self) {
        self.bytes.clear();
        self.ranges.clear();
    }

    /// Appends one argument.
    pub fn push(&mut self, arg: &[u8]) {
        let start = self.bytes.len();
        self.bytes.extend_from_slice(arg);
        self.ranges.push(start..self.bytes.len());
    }

    pub fn from_args(a: &Args<'_>) -> Self {
        OwnedArgs::new(a.iter())
    }

    pub fn args(&self) -> Args<'_> {
        Args::new(&self.bytes, &self.ranges)
    }
}

impl<'a> Args<'a> {
    pub fn new(src: &'a [u8], ranges: &'a [Range<usize>]) -> Self {
        Args { src, ranges }
    }

    pub fn len(&self) -> usize {
        self.ranges.len()
    }

    pub fn is_empty(&self) -> bool {
        self.ranges.is_empty()
    }

    /// Argument `i`. Callers index only below `len()`, which arity checks guarantee.
    pub fn get(&self, i: usize) -> &'a [u8] {
        &self.src[self.ranges[i].clone()]
    }

    pub fn iter(&self) -> impl Iterator<Item = &'a [u8]> + '_ {
        self.ranges.iter().map(|r| &self.src[r.clone()])
    }

    /// Arguments from `i` on.
    pub fn tail(&self, i: usize) -> Args<'a> {
        Args {
            src: self.src,
            ranges: &self.ranges[i.min(self.ranges.len())..],
        }
    }

    /// Total bytes of all arguments (for stats and limits).
    pub fn bytes(&self) -> usize {
        self.ranges.iter().map(|r| r.len()).sum()
    }

    pub fn i64(&self, i: usize) -> Result<i64, ReplyError> {
        parse_i64(self.get(i)).ok_or(ERR_NOT_INTEGER)
    }

    pub fn f64(&self, i: usize) -> Result<f64, ReplyError> {
        parse_f64(self.get(i)).ok_or(ERR_NOT_FLOAT)
    }

    /// Case-insensitive comparison of argument `i` with an ASCII keyword.
    pub fn is(&self, i: usize, word: &str) -> bool {
        self.get(i).eq_ignore_ascii_case(word.as_bytes())
    }

    /// Argument `i` as lowercase UTF-8 (for option names in error messages).
    pub fn str_lossy(&self, i: usize) -> String {
        String::from_utf8_lossy(self.get(i)).into_owned()
    }
}

pub const ERR_NOT_INTEGER: ReplyError =
    ReplyError::err_static("value is not an integer or out of range");
pub const ERR_NOT_FLOAT: ReplyError = ReplyError::err_static("value is not a valid float");
pub const ERR_SYNTAX: ReplyError = ReplyError::err_static("syntax error");
pub const ERR_NO_SUCH_KEY: ReplyError = ReplyError::err_static("no such key");
pub const ERR_OVERFLOW: ReplyError =
    ReplyError::err_static("increment or decrement would overflow");
pub const ERR_DB_INDEX: ReplyError = ReplyError::err_static("DB index is out of range");

/// Integer as Redis's `string2ll` accepts it.
pub fn parse_i64(s: &[u8]) -> Option<i64> {
    shoal_keyspace::parse_canonical_i64(s)
}

/// Float as Redis's `string2ld`/`strtod` accepts it: no spaces, no NaN; `inf`, `-inf` allowed.
pub fn parse_f64(s: &[u8]) -> Option<f64> {
    if s.is_empty() || s.len() > 5000 {
        return None;
    }
    if s[0].is_ascii_whitespace() || s[s.len() - 1].is_ascii_whitespace() {
        return None;
    }
    let t = std::str::from_utf8(s).ok()?;
    let lower = t.to_ascii_lowercase();
    let v = match lower.as_str() {
        "inf" | "+inf" | "infinity" | "+infinity" => f64::INFINITY,
        "-inf" | "-infinity" => f64::NEG_INFINITY,
        _ => {
            if lower.contains("nan") || lower.contains("inf") {
                return None;
            }
            // Rust's parser accepts "1e5", ".5", "5."; it rejects hex floats and "0x" forms, which
            // Redis's strtold would take; rare enough to leave.
            t.parse::<f64>().ok()?
        }
    };
    if v.is_nan() { None } else { Some(v) }
}

/// A SCAN/HSCAN/SSCAN/ZSCAN cursor, parsed as Redis's `strtoul` does (a negative number wraps
/// around).
pub fn parse_scan_cursor(arg: &[u8]) -> Result<u64, ReplyError> {
    let invalid = || ReplyError::err_static("invalid cursor");
    let (negative, digits) = match arg.first() {
        Some(b'-') => (true, &arg[1..]),
        Some(b'+') => (false, &arg[1..]),
        _ => (false, arg),
    };
    if digits.is_empty() || !digits.iter().all(u8::is_ascii_digit) {
        return Err(invalid());
    }
    let v: u64 = std::str::from_utf8(digits)
        .map_err(|_| invalid())?
        .parse()
        .map_err(|_| invalid())?;
    Ok(if negative { v.wrapping_neg() } else { v })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn floats_like_redis() {
        assert_eq!(parse_f64(b"1.5"), Some(1.5));
        assert_eq!(parse_f64(b"-inf"), Some(f64::NEG_INFINITY));
        assert_eq!(parse_f64(b" 1"), None);
        assert_eq!(parse_f64(b"nan"), None);
        assert_eq!(parse_f64(b""), None);
        assert_eq!(parse_f64(b"1e3"), Some(1000.0));
    }

    #[test]
    fn owned_args_round_trip() {
        let o = OwnedArgs::new(["SET", "k", "v"]);
        let a = o.args();
        assert_eq!(a.len(), 3);
        assert!(a.is(0, "set"));
        assert_eq!(a.tail(1).get(0), b"k");
    }
}
