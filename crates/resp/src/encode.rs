//! Reply encoder: writes RESP2 or RESP3 straight into a connection's output buffer.
//!
//! Commands write replies through [`ReplyWriter`] instead of building reply trees, so a pipelined batch
//! of GETs costs one buffer append per reply. The writer knows the connection's protocol version and
//! chooses the RESP2 spelling of RESP3-only types (maps become flat arrays, doubles become bulk strings,
//! nulls become `$-1` or `*-1`), the same way Redis does.

/// Protocol version negotiated with `HELLO`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum Protocol {
    #[default]
    Resp2,
    Resp3,
}

/// Writes replies into a byte buffer.
pub struct ReplyWriter<'a> {
    pub buf: &'a mut Vec<u8>,
    pub proto: Protocol,
}

/// The decimal digits of 0..=99, two per number: a number is formatted two digits per division
/// (a 19-digit version or offset in 10 steps instead of 19).
const DIGIT_PAIRS: &[u8; 200] = b"\
0001020304050607080910111213141516171819\
2021222324252627282930313233343536373839\
4041424344454647484950515253545556575859\
6061626364656667686970717273747576777879\
8081828384858687888990919293949596979899";

/// Writes `n`'s digits at the end of `tmp[..end]`, returning where they start.
#[inline]
fn digits_before(mut n: u64, tmp: &mut [u8; 20], mut end: usize) -> usize {
    while n >= 100 {
        let pair = (n % 100) as usize * 2;
        n /= 100;
        end -= 2;
        tmp[end..end + 2].copy_from_slice(&DIGIT_PAIRS[pair..pair + 2]);
    }
    if n >= 10 {
        let pair = n as usize * 2;
        end -= 2;
        tmp[end..end + 2].copy_from_slice(&DIGIT_PAIRS[pair..pair + 2]);
    } else {
        end -= 1;
        tmp[end] = b'0' + n as u8;
    }
    end
}

/// Appends `n`'s decimal digits to `out`, written straight into its spare room (no staging
/// buffer and no copy call: the encoders of the replication stream and the log call this a few
/// times per effect, and a `memcpy` call per number was a visible share of a logged SET).
#[inline]
pub fn push_u64(out: &mut Vec<u8>, mut n: u64) {
    let len = decimal_len(n);
    out.reserve(len);
    let spare = &mut out.spare_capacity_mut()[..len];
    let mut end = len;
    // Eight digits at a time past one 64-bit division, in 32-bit arithmetic whose four pairs do
    // not wait on each other: a version (19 digits) was a chain of nine 64-bit divisions.
    while n >= 100_000_000 {
        let group = (n % 100_000_000) as u32;
        n /= 100_000_000;
        end -= 8;
        let (hi, lo) = (group / 10_000, group % 10_000);
        for (i, pair) in [hi / 100, hi % 100, lo / 100, lo % 100]
            .into_iter()
            .enumerate()
        {
            let pair = pair as usize * 2;
            spare[end + 2 * i].write(DIGIT_PAIRS[pair]);
            spare[end + 2 * i + 1].write(DIGIT_PAIRS[pair + 1]);
        }
    }
    let mut n = n as u32;
    while n >= 100 {
        let pair = (n % 100) as usize * 2;
        n /= 100;
        end -= 2;
        spare[end].write(DIGIT_PAIRS[pair]);
        spare[end + 1].write(DIGIT_PAIRS[pair + 1]);
    }
    if n >= 10 {
        let pair = n as usize * 2;
        spare[0].write(DIGIT_PAIRS[pair]);
        spare[1].write(DIGIT_PAIRS[pair + 1]);
    } else {
        spare[0].write(b'0' + n as u8);
    }
    let at = out.len();
    // SAFETY: the loops above wrote every one of the `len` bytes past `at` (the digits fill
    // `spare[..len]` from its end to index 0, as `decimal_len` counted them), and `reserve`
    // made room for them.
    unsafe { out.set_len(at + len) };
}

/// How many decimal digits `n` has (1 for 0).
#[inline]
pub fn decimal_len(n: u64) -> usize {
    n.checked_ilog10().map_or(1, |l| l as usize + 1)
}

/// Formats an i64 into `tmp`, returning the used tail. No allocation.
pub fn fmt_i64(v: i64, tmp: &mut [u8; 20]) -> &[u8] {
    // 19 digits at most, and the sign.
    let mut i = digits_before(v.unsigned_abs(), tmp, tmp.len());
    if v < 0 {
        i -= 1;
        tmp[i] = b'-';
    }
    &tmp[i..]
}

/// Formats a u64 (RESP lengths, versions) into `tmp`.
pub fn fmt_u64(n: u64, tmp: &mut [u8; 20]) -> &[u8] {
    let i = digits_before(n, tmp, tmp.len());
    &tmp[i..]
}

/// Formats a double the way Redis 7.0 replies with it (`%.17g`, with `inf`/`-inf`/`nan`).
pub fn fmt_double(v: f64) -> String {
    if v.is_infinite() {
        return if v > 0.0 { "inf".into() } else { "-inf".into() };
    }
    if v.is_nan() {
        return "nan".into();
    }
    format_g17(v)
}

/// C's `%.17g`.
fn format_g17(v: f64) -> String {
    if v == 0.0 {
        return if v.is_sign_negative() {
            "-0".into()
        } else {
            "0".into()
        };
    }
    let exp = v.abs().log10().floor() as i32;
    // %g uses scientific notation when exp < -4 or exp >= precision.
    let s = format!("{:.16e}", v);
    let (mant, e) = s.split_once('e').unwrap_or((&s, "0"));
    let e: i32 = e.parse().unwrap_or(exp);
    if !(-4..17).contains(&e) {
        let mant = trim_zeros(mant);
        let sign = if e < 0 { '-' } else { '+' };
        format!("{mant}e{sign}{:02}", e.abs())
    } else {
        let decimals = (16 - e).max(0) as usize;
        trim_zeros(&format!("{:.*}", decimals, v)).to_string()
    }
}

fn trim_zeros(s: &str) -> &str {
    if s.contains('.') {
        s.trim_end_matches('0').trim_end_matches('.')
    } else {
        s
    }
}

impl<'a> ReplyWriter<'a> {
    pub fn new(buf: &'a mut Vec<u8>, proto: Protocol) -> Self {
        ReplyWriter { buf, proto }
    }

    pub fn is_resp3(&self) -> bool {
        self.proto == Protocol::Resp3
    }

    fn prefixed_len(&mut self, prefix: u8, n: i64) {
        let mut tmp = [0u8; 20];
        self.buf.push(prefix);
        self.buf.extend_from_slice(fmt_i64(n, &mut tmp));
        self.buf.extend_from_slice(b"\r\n");
    }

    /// `+OK`-style status line. `s` must not contain CR or LF.
    pub fn simple(&mut self, s: &str) {
        self.buf.push(b'+');
        self.buf.extend_from_slice(s.as_bytes());
        self.buf.extend_from_slice(b"\r\n");
    }

    pub fn ok(&mut self) {
        self.buf.extend_from_slice(b"+OK\r\n");
    }

    /// `-ERR ...` line: `s` is the whole body including the code, e.g. `ERR syntax error`.
    /// Newlines in the text would break the stream, so they become spaces (as Redis does).
    pub fn error(&mut self, s: &str) {
        self.buf.push(b'-');
        for &b in s.as_bytes() {
            self.buf
                .push(if b == b'\r' || b == b'\n' { b' ' } else { b });
        }
        self.buf.extend_from_slice(b"\r\n");
    }

    pub fn int(&mut self, v: i64) {
        self.prefixed_len(b':', v);
    }

    pub fn bulk(&mut self, b: &[u8]) {
        self.prefixed_len(b'$', b.len() as i64);
        self.buf.extend_from_slice(b);
        self.buf.extend_from_slice(b"\r\n");
    }

    pub fn bulk_i64(&mut self, v: i64) {
        let mut tmp = [0u8; 20];
        let s = fmt_i64(v, &mut tmp);
        let len = s.len();
        self.prefixed_len(b'$', len as i64);
        self.buf.extend_from_slice(fmt_i64(v, &mut tmp));
        self.buf.extend_from_slice(b"\r\n");
    }

    /// Verbatim string (RESP3 `=`, bulk in RESP2), used by INFO / CLIENT LIST / CLIENT INFO.
    pub fn verbatim(&mut self, b: &[u8]) {
        if self.is_resp3() {
            self.prefixed_len(b'=', b.len() as i64 + 4);
            self.buf.extend_from_slice(b"txt:");
            self.buf.extend_from_slice(b);
            self.buf.extend_from_slice(b"\r\n");
        } else {
            self.bulk(b);
        }
    }

    /// The null of a missing string: `$-1` (RESP2) or `_` (RESP3).
    pub fn null(&mut self) {
        if self.is_resp3() {
            self.buf.extend_from_slice(b"_\r\n");
        } else {
            self.buf.extend_from_slice(b"$-1\r\n");
        }
    }

    /// The null of a missing array: `*-1` (RESP2) or `_` (RESP3).
    pub fn null_array(&mut self) {
        if self.is_resp3() {
            self.buf.extend_from_slice(b"_\r\n");
        } else {
            self.buf.extend_from_slice(b"*-1\r\n");
        }
    }

    pub fn array(&mut self, n: usize) {
        self.prefixed_len(b'*', n as i64);
    }

    /// A map of `n` pairs: `%n` in RESP3, a flat array of 2n in RESP2.
    pub fn map(&mut self, n: usize) {
        if self.is_resp3() {
            self.prefixed_len(b'%', n as i64);
        } else {
            self.prefixed_len(b'*', 2 * n as i64);
        }
    }

    /// A set of `n` members: `~n` in RESP3, an array in RESP2.
    pub fn set(&mut self, n: usize) {
        if self.is_resp3() {
            self.prefixed_len(b'~', n as i64);
        } else {
            self.prefixed_len(b'*', n as i64);
        }
    }

    /// A push frame (pub/sub, invalidation): `>n` in RESP3, an array in RESP2.
    pub fn push(&mut self, n: usize) {
        if self.is_resp3() {
            self.prefixed_len(b'>', n as i64);
        } else {
            self.prefixed_len(b'*', n as i64);
        }
    }

    pub fn double(&mut self, v: f64) {
        let s = fmt_double(v);
        if self.is_resp3() {
            self.buf.push(b',');
            self.buf.extend_from_slice(s.as_bytes());
            self.buf.extend_from_slice(b"\r\n");
        } else {
            self.bulk(s.as_bytes());
        }
    }

    /// Boolean: `#t`/`#f` in RESP3, `:1`/`:0` in RESP2.
    pub fn boolean(&mut self, v: bool) {
        if self.is_resp3() {
            self.buf
                .extend_from_slice(if v { b"#t\r\n" } else { b"#f\r\n" });
        } else {
            self.int(v as i64);
        }
    }

    /// Bytes already encoded as RESP.
    pub fn raw(&mut self, b: &[u8]) {
        self.buf.extend_from_slice(b);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resp2_and_resp3_spellings() {
        let mut b = Vec::new();
        let mut w = ReplyWriter::new(&mut b, Protocol::Resp2);
        w.map(1);
        w.bulk(b"a");
        w.int(-7);
        w.null();
        w.null_array();
        w.double(1.5);
        assert_eq!(b, b"*2\r\n$1\r\na\r\n:-7\r\n$-1\r\n*-1\r\n$3\r\n1.5\r\n");
        let mut b = Vec::new();
        let mut w = ReplyWriter::new(&mut b, Protocol::Resp3);
        w.map(1);
        w.null();
        w.double(1.5);
        w.boolean(true);
        assert_eq!(b, b"%1\r\n_\r\n,1.5\r\n#t\r\n");
    }

    #[test]
    fn doubles_like_printf_g17() {
        assert_eq!(fmt_double(3.0), "3");
        assert_eq!(fmt_double(10.5), "10.5");
        assert_eq!(fmt_double(0.1), "0.10000000000000001");
        assert_eq!(fmt_double(1e20), "1e+20");
        assert_eq!(fmt_double(-2.5e-7), "-2.4999999999999999e-07");
        assert_eq!(fmt_double(f64::INFINITY), "inf");
        assert_eq!(fmt_i64(i64::MIN, &mut [0; 20]), b"-9223372036854775808");
    }

    #[test]
    fn integers_format_as_rust_prints_them() {
        let edges = [
            0,
            1,
            9,
            10,
            99,
            100,
            101,
            999,
            1000,
            12345,
            u64::MAX / 10,
            u64::MAX,
        ];
        // Powers of two, and of ten (where the digit count and push_u64's groups of eight
        // change), each with its neighbours.
        let powers = (0..64)
            .map(|b| 1u64 << b)
            .chain((0..20).map(|e| 10u64.pow(e)));
        for n in edges.into_iter().chain(powers) {
            for m in [n.wrapping_sub(1), n, n.wrapping_add(1)] {
                assert_eq!(fmt_u64(m, &mut [0; 20]), m.to_string().as_bytes());
                let mut out = Vec::new();
                push_u64(&mut out, m);
                assert_eq!(out, m.to_string().as_bytes());
            }
        }
        for v in [
            i64::MIN,
            i64::MIN + 1,
            -100,
            -99,
            -10,
            -9,
            -1,
            0,
            7,
            42,
            i64::MAX,
        ] {
            assert_eq!(fmt_i64(v, &mut [0; 20]), v.to_string().as_bytes());
        }
    }

    proptest::proptest! {
        #[test]
        fn any_integer_formats_as_rust_prints_it(n: u64, v: i64) {
            let (mut a, mut b) = ([0; 20], [0; 20]);
            let (ns, vs) = (n.to_string(), v.to_string());
            proptest::prop_assert_eq!(fmt_u64(n, &mut a), ns.as_bytes());
            proptest::prop_assert_eq!(fmt_i64(v, &mut b), vs.as_bytes());
            // Appended after what the buffer holds, whatever room it had.
            let mut out = b"x".to_vec();
            out.shrink_to_fit();
            push_u64(&mut out, n);
            proptest::prop_assert_eq!(&out[1..], ns.as_bytes());
            proptest::prop_assert_eq!(out[0], b'x');
            proptest::prop_assert_eq!(decimal_len(n), ns.len());
        }
    }
}
