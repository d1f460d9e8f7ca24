//! Reply errors as values: [`ReplyError`] is what a command sends back when it fails (`-ERR ...`,
//! `-WRONGTYPE ...`, `-MOVED ...`); the connection goes on. The variant says who must act and how
//! (a client follows `MOVED`/`ASK`, retries `TRYAGAIN`, fixes its request on `ERR`), so the
//! connection, the stats and a client tell them apart without parsing text. Each variant encodes
//! to the exact line Redis 7.0 sends. [`ErrorStats`] counts replies by kind for `INFO errorstats`.
//!
//! Protocol errors (the stream cannot be resynchronised: close the connection) and fatal errors
//! (stop the node) are not reply errors and are typed elsewhere.

use std::borrow::Cow;
use std::fmt;
use std::sync::OnceLock;
use std::sync::atomic::AtomicU64;
use std::sync::atomic::Ordering::Relaxed;

use shoal_resp::ReplyWriter;

/// An error reply. `Display` gives the error line without the leading `-` and the CRLF.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReplyError {
    /// `ERR <msg>`: the request is wrong (syntax, range, state); the client fixes it. The text
    /// after `ERR `; constants borrow, so they cost nothing to return.
    Err(Cow<'static, str>),
    /// `ERR <bytes>`: an `ERR` error quoting a client's bytes as they came (the unknown-command
    /// error: Redis passes non-UTF-8 bytes through; only CR and LF become spaces).
    ErrBytes(Box<[u8]>),
    /// `WRONGTYPE`: the key holds another type.
    WrongType,
    /// `NOAUTH Authentication required.`: AUTH first.
    NoAuth,
    /// `NOAUTH` for HELLO without credentials on a server that requires them.
    NoAuthHello,
    /// `WRONGPASS`: AUTH (or HELLO AUTH) with a wrong password.
    WrongPass,
    /// `NOPERM <msg>`: the ACL user may not run this (the text after `NOPERM `).
    NoPerm(Cow<'static, str>),
    /// `READONLY`: a write sent to a read-only replica; send it to the primary.
    ReadOnly,
    /// `OOM`: a write refused because memory is over `maxmemory` and nothing could be evicted.
    Oom,
    /// `EXECABORT`: EXEC discarded the transaction; `None` because a queued command was refused
    /// earlier, `Some(why)` because EXEC itself was refused.
    ExecAbort(Option<Box<ReplyError>>),
    /// `MOVED <slot> <host:port>`: the slot lives on another node from now on.
    Moved { slot: u16, addr: String },
    /// `ASK <slot> <host:port>`: ask that node this once (the slot is migrating).
    Ask { slot: u16, addr: String },
    /// `TRYAGAIN`: a multi-key request during a slot migration; retry later.
    TryAgain,
    /// `CROSSSLOT`: the request's keys are in different slots.
    CrossSlot,
    /// `CLUSTERDOWN ...`: the cluster cannot serve this now.
    ClusterDown(ClusterDownReason),
    /// `BUSY`: the server is busy running a script.
    Busy,
    /// `NOSCRIPT`: EVALSHA of an unknown script.
    NoScript,
    /// `LOADING`: the dataset is still being loaded.
    Loading,
    /// `MASTERDOWN`: a replica with a broken link and `replica-serve-stale-data no`.
    MasterDown,
    /// `NOREPLICAS`: fewer good replicas than `min-replicas-to-write`.
    NoReplicas,
    /// `BUSYKEY`: RESTORE (or similar) without REPLACE onto an existing key.
    BusyKey,
    /// `NOPROTO`: HELLO with a protocol version we do not speak.
    NoProto,
    /// shoal's `NOTDURABLE`: under the `sync` write strategy, the write is applied on the primary
    /// but only `have` of `need` replicas acknowledged it within `timeout_ms` (or, for a read in
    /// cluster mode, what it read was not acknowledged: a failover could take it back).
    NotDurable {
        have: usize,
        need: usize,
        timeout_ms: u64,
        /// A read under `sync` in cluster mode: the value it read is not acknowledged yet.
        read: bool,
    },
    /// A whole error line a script chose (`MY code`, a command's error with the script's
    /// position); counted in `INFO errorstats` under its first word, as Redis does
    /// ([`script_code`]).
    Script(String),
    /// Any other code, for the rare error kinds without a variant of their own.
    Other {
        code: &'static str,
        msg: Cow<'static, str>,
    },
}

/// Why the cluster refuses a command (`CLUSTERDOWN ...`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClusterDownReason {
    /// `The cluster is down`.
    Down,
    /// `The cluster is down and only accepts read commands`.
    ReadsOnly,
    /// `Hash slot not served`.
    SlotNotServed,
}

/// The codes of the variants that have one, indexed by [`ReplyError::known_index`]: the counters
/// of [`ErrorStats`] are a fixed array in this order.
const KNOWN_KINDS: [&str; 21] = [
    "ERR",
    "WRONGTYPE",
    "NOAUTH",
    "WRONGPASS",
    "NOPERM",
    "READONLY",
    "OOM",
    "EXECABORT",
    "MOVED",
    "ASK",
    "TRYAGAIN",
    "CROSSSLOT",
    "CLUSTERDOWN",
    "BUSY",
    "NOSCRIPT",
    "LOADING",
    "MASTERDOWN",
    "NOREPLICAS",
    "BUSYKEY",
    "NOPROTO",
    "NOTDURABLE",
];

impl ReplyError {
    /// A cluster-mode redirect or refusal (`MOVED`, `ASK`, `TRYAGAIN`, `CROSSSLOT`,
    /// `CLUSTERDOWN`): the client is to retry elsewhere or later, not to give up.
    pub fn is_cluster_redirect(&self) -> bool {
        matches!(
            self,
            ReplyError::Moved { .. }
                | ReplyError::Ask { .. }
                | ReplyError::TryAgain
                | ReplyError::CrossSlot
                | ReplyError::ClusterDown(_)
        )
    }

    /// A free-form `ERR` error (the text after `ERR `).
    pub fn err(msg: impl Into<Cow<'static, str>>) -> Self {
        ReplyError::Err(msg.into())
    }

    /// [`ReplyError::err`] for constants.
    pub const fn err_static(msg: &'static str) -> Self {
        ReplyError::Err(Cow::Borrowed(msg))
    }

    /// The error code: the first word of the line (`ERR`, `WRONGTYPE`, `MOVED`, ...), which is
    /// what `INFO errorstats` counts by.
    pub fn kind(&self) -> &'static str {
        match self.known_index() {
            Some(i) => KNOWN_KINDS[i],
            None => match self {
                ReplyError::Other { code, .. } => code,
                _ => unreachable!("every variant but Other has a known index"),
            },
        }
    }

    /// The index of this error's code in [`KNOWN_KINDS`]; `None` for [`ReplyError::Other`].
    fn known_index(&self) -> Option<usize> {
        use ReplyError::*;
        Some(match self {
            Err(_) | ErrBytes(_) | Script(_) => 0,
            WrongType => 1,
            NoAuth | NoAuthHello => 2,
            WrongPass => 3,
            NoPerm(_) => 4,
            ReadOnly => 5,
            Oom => 6,
            ExecAbort(_) => 7,
            Moved { .. } => 8,
            Ask { .. } => 9,
            TryAgain => 10,
            CrossSlot => 11,
            ClusterDown(_) => 12,
            Busy => 13,
            NoScript => 14,
            Loading => 15,
            MasterDown => 16,
            NoReplicas => 17,
            BusyKey => 18,
            NoProto => 19,
            NotDurable { .. } => 20,
            Other { .. } => return None,
        })
    }

    /// Appends the reply (`-<line>\r\n`). CR and LF in free-form text become spaces, as Redis
    /// does, so a message quoting a client's argument cannot break the stream.
    pub fn write_to(&self, w: &mut ReplyWriter<'_>) {
        use fmt::Write as _;
        w.buf.push(b'-');
        if let ReplyError::ErrBytes(msg) = self {
            w.buf.extend_from_slice(b"ERR ");
            w.buf.extend(
                msg.iter()
                    .map(|&b| if b == b'\r' || b == b'\n' { b' ' } else { b }),
            );
        } else {
            let _ = write!(SafeLine(w.buf), "{self}");
        }
        w.buf.extend_from_slice(b"\r\n");
    }
}

/// Writes text into a reply buffer with CR and LF replaced by spaces.
struct SafeLine<'b>(&'b mut Vec<u8>);

impl fmt::Write for SafeLine<'_> {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        self.0.extend(
            s.bytes()
                .map(|b| if b == b'\r' || b == b'\n' { b' ' } else { b }),
        );
        Ok(())
    }
}

impl fmt::Display for ReplyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        use ReplyError::*;
        match self {
            Err(msg) => write!(f, "ERR {msg}"),
            ErrBytes(msg) => write!(f, "ERR {}", String::from_utf8_lossy(msg)),
            WrongType => f.write_str("WRONGTYPE Operation against a key holding the wrong kind of value"),
            NoAuth => f.write_str("NOAUTH Authentication required."),
            NoAuthHello => f.write_str(
                "NOAUTH HELLO must be called with the client already authenticated, otherwise the HELLO AUTH <user> <pass> option can be used to authenticate the client and select the RESP protocol version at the same time",
            ),
            WrongPass => f.write_str("WRONGPASS invalid username-password pair or user is disabled."),
            NoPerm(msg) => write!(f, "NOPERM {msg}"),
            ReadOnly => f.write_str("READONLY You can't write against a read only replica."),
            Oom => f.write_str("OOM command not allowed when used memory > 'maxmemory'."),
            ExecAbort(None) => f.write_str("EXECABORT Transaction discarded because of previous errors."),
            // Redis quotes the refusal without its `ERR ` but keeps any other code.
            ExecAbort(Some(why)) => match why.as_ref() {
                Err(msg) => write!(f, "EXECABORT Transaction discarded because of: {msg}"),
                other => write!(f, "EXECABORT Transaction discarded because of: {other}"),
            },
            Moved { slot, addr } => write!(f, "MOVED {slot} {addr}"),
            Ask { slot, addr } => write!(f, "ASK {slot} {addr}"),
            TryAgain => f.write_str("TRYAGAIN Multiple keys request during rehashing of slot"),
            CrossSlot => f.write_str("CROSSSLOT Keys in request don't hash to the same slot"),
            ClusterDown(why) => f.write_str(match why {
                ClusterDownReason::Down => "CLUSTERDOWN The cluster is down",
                ClusterDownReason::ReadsOnly => {
                    "CLUSTERDOWN The cluster is down and only accepts read commands"
                }
                ClusterDownReason::SlotNotServed => "CLUSTERDOWN Hash slot not served",
            }),
            Busy => f.write_str(
                "BUSY Redis is busy running a script. You can only call SCRIPT KILL or SHUTDOWN NOSAVE.",
            ),
            NoScript => f.write_str("NOSCRIPT No matching script. Please use EVAL."),
            Loading => f.write_str("LOADING Redis is loading the dataset in memory"),
            MasterDown => f.write_str(
                "MASTERDOWN Link with MASTER is down and replica-serve-stale-data is set to 'no'.",
            ),
            NoReplicas => f.write_str("NOREPLICAS Not enough good replicas to write."),
            BusyKey => f.write_str("BUSYKEY Target key name already exists."),
            NoProto => f.write_str("NOPROTO unsupported protocol version"),
            NotDurable {
                have,
                need,
                timeout_ms,
                read: false,
            } => write!(
                f,
                "NOTDURABLE write applied on the primary but acknowledged by {have} of {need} required replicas within {timeout_ms} ms"
            ),
            NotDurable {
                have,
                need,
                timeout_ms,
                read: true,
            } => write!(
                f,
                "NOTDURABLE the value read is not confirmed: acknowledged by {have} of {need} required replicas within {timeout_ms} ms"
            ),
            Other { code, msg } => write!(f, "{code} {msg}"),
            Script(line) => f.write_str(line),
        }
    }
}

impl std::error::Error for ReplyError {}

/// A free-form `ERR` error from a format string: `err!("unknown option '{name}'")`.
#[macro_export]
macro_rules! err {
    ($($fmt:tt)*) => {
        $crate::error::ReplyError::Err(::std::borrow::Cow::Owned(format!($($fmt)*)))
    };
}

/// Distinct codes beyond the known kinds (an [`ReplyError::Other`] code, a script's own code)
/// counted one by one; further codes count only in `total_error_replies`.
pub const OTHER_KINDS_MAX: usize = 32;

/// The code Redis counts an error line under (the line without its `-`): the first word if a
/// space comes within the first 31 bytes (Redis looks for it in the first 32 of `-line`), else
/// `ERR`.
pub fn script_code(line: &str) -> &str {
    let head = &line.as_bytes()[..line.len().min(31)];
    match head.iter().position(|&b| b == b' ') {
        Some(sp) => &line[..sp],
        None => "ERR",
    }
}

/// Error replies by kind, for `INFO errorstats`. Counting is one relaxed atomic add, with no lock:
/// a fixed array for the known kinds, and for other codes a fixed set of slots each claimed once
/// (a claimed slot keeps its code for the node's life).
pub struct ErrorStats {
    known: [AtomicU64; KNOWN_KINDS.len()],
    other: [(OnceLock<Box<str>>, AtomicU64); OTHER_KINDS_MAX],
}

impl Default for ErrorStats {
    fn default() -> Self {
        ErrorStats {
            known: std::array::from_fn(|_| AtomicU64::new(0)),
            other: std::array::from_fn(|_| (OnceLock::new(), AtomicU64::new(0))),
        }
    }
}

impl fmt::Debug for ErrorStats {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_map().entries(self.counts()).finish()
    }
}

impl ErrorStats {
    /// Counts one error reply of `e`'s kind.
    pub fn record(&self, e: &ReplyError) {
        if let ReplyError::Script(line) = e {
            return self.record_code(script_code(line));
        }
        match (e.known_index(), e) {
            (Some(i), _) => {
                self.known[i].fetch_add(1, Relaxed);
            }
            (None, ReplyError::Other { code, .. }) => self.record_other(code),
            (None, _) => unreachable!("every variant but Other has a known index"),
        }
    }

    /// Counts one `ERR` reply that is not a [`ReplyError`] (the protocol error line sent before
    /// closing a connection, which Redis counts as `ERR` too).
    pub fn record_err(&self) {
        self.known[0].fetch_add(1, Relaxed);
    }

    /// Counts one error reply under `code` (the first word of its line).
    pub fn record_code(&self, code: &str) {
        match KNOWN_KINDS.iter().position(|k| *k == code) {
            Some(i) => {
                self.known[i].fetch_add(1, Relaxed);
            }
            None => self.record_other(code),
        }
    }

    fn record_other(&self, code: &str) {
        for (slot, count) in &self.other {
            // The first record of a code claims a free slot; a racing claim by another code
            // makes this one look further.
            if &**slot.get_or_init(|| code.into()) == code {
                count.fetch_add(1, Relaxed);
                return;
            }
        }
    }

    /// Zeroes the counts (`CONFIG RESETSTAT`). Claimed `Other` slots keep their code; a code
    /// with a zero count is not listed.
    pub fn reset(&self) {
        for c in &self.known {
            c.store(0, Relaxed);
        }
        for (_, c) in &self.other {
            c.store(0, Relaxed);
        }
    }

    /// Non-zero counts by code, sorted by code as Redis lists them.
    pub fn counts(&self) -> Vec<(&str, u64)> {
        let mut v: Vec<(&str, u64)> = KNOWN_KINDS
            .iter()
            .zip(&self.known)
            .map(|(k, c)| (*k, c.load(Relaxed)))
            .collect();
        for (slot, c) in &self.other {
            let Some(code) = slot.get() else { break };
            match v.iter_mut().find(|(k, _)| *k == &**code) {
                Some((_, n)) => *n += c.load(Relaxed),
                None => v.push((code, c.load(Relaxed))),
            }
        }
        v.retain(|(_, n)| *n > 0);
        v.sort_unstable_by_key(|(k, _)| *k);
        v
    }

    /// The `# Errorstats` section of INFO, as Redis 7.0 prints it.
    pub fn info_section(&self, out: &mut String) {
        use fmt::Write as _;
        out.push_str("# Errorstats\r\n");
        for (code, n) in self.counts() {
            let _ = write!(out, "errorstat_{code}:count={n}\r\n");
        }
        out.push_str("\r\n");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use shoal_resp::Protocol;

    fn wire(e: &ReplyError) -> String {
        let mut buf = Vec::new();
        e.write_to(&mut ReplyWriter::new(&mut buf, Protocol::Resp2));
        String::from_utf8(buf).unwrap()
    }

    /// Every variant, its code and its exact bytes on the wire (Redis 7.0's text where Redis
    /// has the error).
    fn cases() -> Vec<(ReplyError, &'static str, &'static str)> {
        use ReplyError::*;
        vec![
            (
                ReplyError::err_static("syntax error"),
                "ERR",
                "-ERR syntax error\r\n",
            ),
            (
                ReplyError::err(format!("unknown option '{}'", "x")),
                "ERR",
                "-ERR unknown option 'x'\r\n",
            ),
            (
                WrongType,
                "WRONGTYPE",
                "-WRONGTYPE Operation against a key holding the wrong kind of value\r\n",
            ),
            (NoAuth, "NOAUTH", "-NOAUTH Authentication required.\r\n"),
            (
                NoAuthHello,
                "NOAUTH",
                "-NOAUTH HELLO must be called with the client already authenticated, otherwise the HELLO AUTH <user> <pass> option can be used to authenticate the client and select the RESP protocol version at the same time\r\n",
            ),
            (
                WrongPass,
                "WRONGPASS",
                "-WRONGPASS invalid username-password pair or user is disabled.\r\n",
            ),
            (
                NoPerm("this user has no permissions to run the 'get' command".into()),
                "NOPERM",
                "-NOPERM this user has no permissions to run the 'get' command\r\n",
            ),
            (
                ReadOnly,
                "READONLY",
                "-READONLY You can't write against a read only replica.\r\n",
            ),
            (
                Oom,
                "OOM",
                "-OOM command not allowed when used memory > 'maxmemory'.\r\n",
            ),
            (
                ExecAbort(None),
                "EXECABORT",
                "-EXECABORT Transaction discarded because of previous errors.\r\n",
            ),
            (
                ExecAbort(Some(Box::new(ReplyError::err_static(
                    "wrong number of arguments for 'exec' command",
                )))),
                "EXECABORT",
                "-EXECABORT Transaction discarded because of: wrong number of arguments for 'exec' command\r\n",
            ),
            (
                ExecAbort(Some(Box::new(Oom))),
                "EXECABORT",
                "-EXECABORT Transaction discarded because of: OOM command not allowed when used memory > 'maxmemory'.\r\n",
            ),
            (
                Moved {
                    slot: 3999,
                    addr: "127.0.0.1:6381".into(),
                },
                "MOVED",
                "-MOVED 3999 127.0.0.1:6381\r\n",
            ),
            (
                Ask {
                    slot: 3999,
                    addr: "127.0.0.1:6381".into(),
                },
                "ASK",
                "-ASK 3999 127.0.0.1:6381\r\n",
            ),
            (
                TryAgain,
                "TRYAGAIN",
                "-TRYAGAIN Multiple keys request during rehashing of slot\r\n",
            ),
            (
                CrossSlot,
                "CROSSSLOT",
                "-CROSSSLOT Keys in request don't hash to the same slot\r\n",
            ),
            (
                ClusterDown(ClusterDownReason::Down),
                "CLUSTERDOWN",
                "-CLUSTERDOWN The cluster is down\r\n",
            ),
            (
                ClusterDown(ClusterDownReason::ReadsOnly),
                "CLUSTERDOWN",
                "-CLUSTERDOWN The cluster is down and only accepts read commands\r\n",
            ),
            (
                ClusterDown(ClusterDownReason::SlotNotServed),
                "CLUSTERDOWN",
                "-CLUSTERDOWN Hash slot not served\r\n",
            ),
            (
                Busy,
                "BUSY",
                "-BUSY Redis is busy running a script. You can only call SCRIPT KILL or SHUTDOWN NOSAVE.\r\n",
            ),
            (
                NoScript,
                "NOSCRIPT",
                "-NOSCRIPT No matching script. Please use EVAL.\r\n",
            ),
            (
                Loading,
                "LOADING",
                "-LOADING Redis is loading the dataset in memory\r\n",
            ),
            (
                MasterDown,
                "MASTERDOWN",
                "-MASTERDOWN Link with MASTER is down and replica-serve-stale-data is set to 'no'.\r\n",
            ),
            (
                NoReplicas,
                "NOREPLICAS",
                "-NOREPLICAS Not enough good replicas to write.\r\n",
            ),
            (
                BusyKey,
                "BUSYKEY",
                "-BUSYKEY Target key name already exists.\r\n",
            ),
            (
                NoProto,
                "NOPROTO",
                "-NOPROTO unsupported protocol version\r\n",
            ),
            (
                NotDurable {
                    have: 1,
                    need: 2,
                    timeout_ms: 500,
                    read: false,
                },
                "NOTDURABLE",
                "-NOTDURABLE write applied on the primary but acknowledged by 1 of 2 required replicas within 500 ms\r\n",
            ),
            (
                Other {
                    code: "BUSYGROUP",
                    msg: "Consumer Group name already exists".into(),
                },
                "BUSYGROUP",
                "-BUSYGROUP Consumer Group name already exists\r\n",
            ),
        ]
    }

    #[test]
    fn each_variant_encodes_byte_exact() {
        for (e, kind, bytes) in cases() {
            assert_eq!(wire(&e), bytes, "{e:?}");
            assert_eq!(e.kind(), kind, "{e:?}");
            // The code is the line's first word, which is what Redis's errorstats count by.
            assert_eq!(bytes[1..].split(' ').next(), Some(kind));
            assert_eq!(format!("-{e}\r\n"), bytes);
        }
    }

    #[test]
    fn newlines_in_free_text_become_spaces() {
        assert_eq!(wire(&ReplyError::err("a\r\nb")), "-ERR a  b\r\n");
    }

    #[test]
    fn stats_count_by_kind_sorted_by_code_and_reset() {
        let s = ErrorStats::default();
        for e in [
            ReplyError::WrongType,
            ReplyError::err_static("x"),
            ReplyError::err_static("y"),
            ReplyError::NoAuthHello,
            ReplyError::NoAuth,
            ReplyError::Other {
                code: "BUSYGROUP",
                msg: "m".into(),
            },
            ReplyError::Other {
                code: "BUSYGROUP",
                msg: "n".into(),
            },
            ReplyError::Other {
                code: "ERR",
                msg: "z".into(),
            },
        ] {
            s.record(&e);
        }
        s.record_err();
        let mut text = String::new();
        s.info_section(&mut text);
        assert_eq!(
            text,
            "# Errorstats\r\nerrorstat_BUSYGROUP:count=2\r\nerrorstat_ERR:count=4\r\nerrorstat_NOAUTH:count=2\r\nerrorstat_WRONGTYPE:count=1\r\n\r\n"
        );
        s.reset();
        assert!(s.counts().is_empty());
        s.record(&ReplyError::Other {
            code: "BUSYGROUP",
            msg: "m".into(),
        });
        assert_eq!(s.counts(), vec![("BUSYGROUP", 1)]);
    }

    #[test]
    fn other_codes_are_bounded() {
        let s = ErrorStats::default();
        let codes: Vec<&'static str> = (0..OTHER_KINDS_MAX + 5)
            .map(|i| &*Box::leak(format!("CODE{i:03}").into_boxed_str()))
            .collect();
        for code in &codes {
            s.record(&ReplyError::Other {
                code,
                msg: "m".into(),
            });
        }
        let counts = s.counts();
        assert_eq!(counts.len(), OTHER_KINDS_MAX);
        assert_eq!(counts.last(), Some(&(codes[OTHER_KINDS_MAX - 1], 1)));
    }
}
