//! Reference comparison with a real `redis-server`, byte for byte (STYLE habit 11).
//!
//! `tests/golden/<family>.cmds` holds command sequences, one per line, in redis-cli-like syntax:
//! whitespace-separated arguments, "double quotes" with escapes (`\n \r \t \b \a \\ \" \xHH`),
//! 'single quotes' (escape `\'`), `#` comment lines. A line starting with `!ignore ` is sent but its
//! reply is not compared (replies that differ run to run, such as HELLO's `id`).
//! `tests/golden/<family>.resp` holds the reply bytes redis-server gave, one line per command:
//! the command line as written, a tab, then the reply escaped like a Rust byte string (no quotes).
//!
//! Two modes, one test:
//! - `SHOAL_GOLDEN_RECORD=<host:port>`: run every corpus file against that server and rewrite the
//!   `.resp` files (`scripts/record-golden.sh` starts a throwaway redis-server and does this);
//! - otherwise: start shoal, run the same files and compare each reply with the recording, listing
//!   every mismatch before failing.
//!
//! CI needs no redis-server: the recordings are checked in. Each file runs on a fresh connection
//! to one server and must start with `FLUSHALL` and undo any config it changes.

mod common;

use std::collections::HashSet;
use std::fmt::Write as _;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};

use common::{Shoal, WAIT_MAX, encode, reply_len};

const RECORD_ENV: &str = "SHOAL_GOLDEN_RECORD";
const IGNORE_MARK: &str = "!ignore ";
/// A reply larger than this is a bug in the corpus or the server, not something to buffer.
const REPLY_BYTES_MAX: usize = 16 * 1024 * 1024;

fn golden_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/golden")
}

/// One command of a corpus file.
#[derive(Debug)]
struct Command {
    /// 1-based line number in the `.cmds` file.
    line_no: usize,
    /// The line as written (trimmed); also stored in the `.resp` file to detect stale recordings.
    text: String,
    args: Vec<Vec<u8>>,
    /// False for `!ignore` lines.
    compare: bool,
}

fn parse_corpus(text: &str) -> Result<Vec<Command>, String> {
    let mut out = Vec::new();
    for (i, raw) in text.lines().enumerate() {
        let line = raw.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let (compare, body) = match line.strip_prefix(IGNORE_MARK) {
            Some(rest) => (false, rest),
            None => (true, line),
        };
        let args = split_line(body).map_err(|e| format!("line {}: {e}", i + 1))?;
        if args.is_empty() {
            return Err(format!("line {}: no arguments", i + 1));
        }
        out.push(Command {
            line_no: i + 1,
            text: line.to_string(),
            args,
            compare,
        });
    }
    Ok(out)
}

fn hex_digit(c: u8) -> Option<u8> {
    (c as char).to_digit(16).map(|d| d as u8)
}

/// Splits a corpus line into arguments, like redis-cli (`sdssplitargs`). Written here rather than
/// borrowed from shoal-resp so the oracle's input does not depend on the code under test.
fn split_line(line: &str) -> Result<Vec<Vec<u8>>, String> {
    let b = line.as_bytes();
    let mut args = Vec::new();
    let mut i = 0;
    loop {
        while i < b.len() && b[i].is_ascii_whitespace() {
            i += 1;
        }
        if i == b.len() {
            return Ok(args);
        }
        let mut arg = Vec::new();
        match b[i] {
            b'"' => {
                i += 1;
                loop {
                    match b.get(i) {
                        None => return Err("unbalanced double quote".into()),
                        Some(b'"') => break,
                        Some(b'\\') => {
                            let esc = *b.get(i + 1).ok_or("dangling backslash")?;
                            if esc == b'x' {
                                let h = b.get(i + 2).copied().and_then(hex_digit);
                                let l = b.get(i + 3).copied().and_then(hex_digit);
                                let (Some(h), Some(l)) = (h, l) else {
                                    return Err("bad \\x escape".into());
                                };
                                arg.push(h * 16 + l);
                                i += 4;
                                continue;
                            }
                            arg.push(match esc {
                                b'n' => b'\n',
                                b'r' => b'\r',
                                b't' => b'\t',
                                b'b' => 8,
                                b'a' => 7,
                                other => other,
                            });
                            i += 2;
                        }
                        Some(&c) => {
                            arg.push(c);
                            i += 1;
                        }
                    }
                }
                i += 1;
            }
            b'\'' => {
                i += 1;
                loop {
                    match b.get(i) {
                        None => return Err("unbalanced single quote".into()),
                        Some(b'\\') if b.get(i + 1) == Some(&b'\'') => {
                            arg.push(b'\'');
                            i += 2;
                        }
                        Some(b'\'') => break,
                        Some(&c) => {
                            arg.push(c);
                            i += 1;
                        }
                    }
                }
                i += 1;
            }
            _ => {
                while i < b.len() && !b[i].is_ascii_whitespace() {
                    arg.push(b[i]);
                    i += 1;
                }
            }
        }
        if i < b.len() && !b[i].is_ascii_whitespace() {
            return Err("closing quote must be followed by a space".into());
        }
        args.push(arg);
    }
}

/// Escapes bytes like a Rust byte-string literal body: `\r \n \t \0 \\`, `\xHH` for anything else
/// outside printable ASCII. Never produces a raw tab, so a `.resp` line splits at its last tab.
fn escape(bytes: &[u8]) -> String {
    let mut s = String::with_capacity(bytes.len() + 8);
    for &c in bytes {
        match c {
            b'\r' => s.push_str("\\r"),
            b'\n' => s.push_str("\\n"),
            b'\t' => s.push_str("\\t"),
            b'\0' => s.push_str("\\0"),
            b'\\' => s.push_str("\\\\"),
            0x20..=0x7e => s.push(c as char),
            _ => {
                let _ = write!(s, "\\x{c:02x}");
            }
        }
    }
    s
}

fn unescape(s: &str) -> Result<Vec<u8>, String> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] != b'\\' {
            out.push(b[i]);
            i += 1;
            continue;
        }
        match b.get(i + 1) {
            Some(b'r') => out.push(b'\r'),
            Some(b'n') => out.push(b'\n'),
            Some(b't') => out.push(b'\t'),
            Some(b'0') => out.push(0),
            Some(b'\\') => out.push(b'\\'),
            Some(b'x') => {
                let h = b.get(i + 2).copied().and_then(hex_digit);
                let l = b.get(i + 3).copied().and_then(hex_digit);
                let (Some(h), Some(l)) = (h, l) else {
                    return Err(format!("bad \\x escape at byte {i}"));
                };
                out.push(h * 16 + l);
                i += 4;
                continue;
            }
            _ => return Err(format!("bad escape at byte {i}")),
        }
        i += 2;
    }
    Ok(out)
}

/// A connection that sends one command and reads exactly one complete RESP2/RESP3 reply; I/O
/// failures are values so a broken server becomes a reported mismatch, not a panic mid-listing.
struct Conn {
    stream: TcpStream,
    buf: Vec<u8>,
}

impl Conn {
    fn connect(addr: &str) -> Result<Conn, String> {
        let stream = TcpStream::connect(addr).map_err(|e| format!("connect {addr}: {e}"))?;
        stream
            .set_read_timeout(Some(WAIT_MAX))
            .map_err(|e| e.to_string())?;
        Ok(Conn {
            stream,
            buf: Vec::new(),
        })
    }

    fn request(&mut self, args: &[Vec<u8>]) -> Result<Vec<u8>, String> {
        let refs: Vec<&[u8]> = args.iter().map(|a| a.as_slice()).collect();
        self.stream
            .write_all(&encode(&refs))
            .map_err(|e| format!("write: {e}"))?;
        loop {
            if let Some(n) = reply_len(&self.buf) {
                return Ok(self.buf.drain(..n).collect());
            }
            if self.buf.len() > REPLY_BYTES_MAX {
                return Err(format!("reply exceeds {REPLY_BYTES_MAX} bytes"));
            }
            let mut chunk = [0u8; 65536];
            match self.stream.read(&mut chunk) {
                Ok(0) => {
                    return Err(format!(
                        "connection closed; partial reply: {}",
                        escape(&self.buf)
                    ));
                }
                Ok(n) => self.buf.extend_from_slice(&chunk[..n]),
                Err(e) => {
                    return Err(format!(
                        "read within {WAIT_MAX:?} failed ({e}); partial reply: {}",
                        escape(&self.buf)
                    ));
                }
            }
        }
    }
}

/// The corpus files, sorted by name so runs are reproducible.
fn corpus_files() -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(golden_dir())
        .expect("read tests/golden")
        .map(|e| e.expect("dir entry").path())
        .filter(|p| p.extension().is_some_and(|x| x == "cmds"))
        .collect();
    files.sort();
    assert!(!files.is_empty(), "no .cmds files in tests/golden");
    files
}

fn load(path: &Path) -> Vec<Command> {
    let text = std::fs::read_to_string(path).expect("read corpus");
    let cmds = parse_corpus(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let first = cmds.first().map(|c| c.text.as_str());
    assert_eq!(
        first,
        Some("FLUSHALL"),
        "{}: must start with FLUSHALL",
        path.display()
    );
    cmds
}

fn file_name(path: &Path) -> String {
    path.file_name().unwrap().to_string_lossy().into_owned()
}

/// The reference server's version, for the header of the recordings.
fn server_version(conn: &mut Conn) -> String {
    let info = conn
        .request(&[b"INFO".to_vec(), b"server".to_vec()])
        .unwrap_or_else(|e| panic!("INFO: {e}"));
    String::from_utf8_lossy(&info)
        .lines()
        .find_map(|l| l.strip_prefix("redis_version:"))
        .unwrap_or("unknown")
        .to_string()
}

/// Runs every corpus file against `addr` and rewrites the `.resp` files.
fn record(addr: &str) {
    let version = server_version(&mut Conn::connect(addr).unwrap_or_else(|e| panic!("{e}")));
    for path in corpus_files() {
        let cmds = load(&path);
        let mut conn = Conn::connect(addr).unwrap_or_else(|e| panic!("{e}"));
        let mut out = format!(
            "# Replies of redis-server {version} to {}, recorded by scripts/record-golden.sh.\n\
             # Do not edit: re-record. Format: command line, tab, reply bytes escaped.\n",
            file_name(&path)
        );
        for c in &cmds {
            let reply = conn
                .request(&c.args)
                .unwrap_or_else(|e| panic!("{}:{}: {}: {e}", file_name(&path), c.line_no, c.text));
            let shown = if c.compare {
                escape(&reply)
            } else {
                String::new()
            };
            let _ = writeln!(out, "{}\t{shown}", c.text);
        }
        std::fs::write(path.with_extension("resp"), out).expect("write .resp");
        eprintln!("recorded {} ({} commands)", file_name(&path), cmds.len());
    }
}

/// Reads a `.resp` file: (command text, expected reply) per command.
fn load_recording(path: &Path) -> Result<Vec<(String, Vec<u8>)>, String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .enumerate()
        .map(|(i, l)| {
            let (cmd, reply) = l
                .rsplit_once('\t')
                .ok_or_else(|| format!("{}: entry {}: no tab", path.display(), i + 1))?;
            Ok((cmd.to_string(), unescape(reply)?))
        })
        .collect()
}

/// Runs every corpus file against `addr` and returns one message per mismatch.
fn compare(addr: &str) -> (usize, Vec<String>) {
    let mut compared = 0;
    let mut problems = Vec::new();
    for path in corpus_files() {
        let name = file_name(&path);
        let cmds = load(&path);
        let recorded = match load_recording(&path.with_extension("resp")) {
            Ok(r) => r,
            Err(e) => {
                problems.push(format!(
                    "{name}: no usable recording ({e}); run scripts/record-golden.sh"
                ));
                continue;
            }
        };
        let stale = recorded.len() != cmds.len()
            || cmds.iter().zip(&recorded).any(|(c, (t, _))| c.text != *t);
        if stale {
            problems.push(format!(
                "{name}: recording does not match the corpus; run scripts/record-golden.sh"
            ));
            continue;
        }
        let mut conn = match Conn::connect(addr) {
            Ok(c) => c,
            Err(e) => {
                problems.push(format!("{name}: {e}"));
                continue;
            }
        };
        for (i, (c, (_, expected))) in cmds.iter().zip(&recorded).enumerate() {
            let actual = conn.request(&c.args);
            let ok = match &actual {
                Ok(a) => !c.compare || a == expected,
                Err(_) => false,
            };
            compared += usize::from(c.compare);
            if ok {
                continue;
            }
            let shown = match &actual {
                Ok(a) => escape(a),
                Err(e) => format!("<{e}>"),
            };
            problems.push(format!(
                "{name}:{}: {}\n    redis: {}\n    shoal: {shown}",
                c.line_no,
                c.text,
                escape(expected)
            ));
            if actual.is_err() {
                // Without a reply the stream cannot be resynchronised; skip the rest of the file.
                problems.push(format!(
                    "{name}: {} later commands not run",
                    cmds.len() - i - 1
                ));
                break;
            }
        }
    }
    (compared, problems)
}

#[test]
fn replies_match_redis_byte_for_byte() {
    if let Ok(addr) = std::env::var(RECORD_ENV) {
        record(&addr);
        return;
    }
    // The corpora expect an empty slow log (nothing they run is slow); on a loaded machine a
    // command may still take more than redis's 10 ms default, so only a 5 s one counts here.
    let shoal = Shoal::start(&["--slowlog-log-slower-than", "5000000"]);
    let (compared, problems) = compare(&shoal.addr());
    assert!(
        problems.is_empty(),
        "{} of {compared} compared replies differ from redis-server:\n\n{}\n",
        problems.len(),
        problems.join("\n\n")
    );
    assert!(compared > 0, "nothing compared");
}

#[test]
fn corpus_lines_split_like_redis_cli() {
    let args = split_line(r#"SET "a b\r\n\x41\"" 'it\'s' plain"#).unwrap();
    assert_eq!(
        args,
        vec![
            b"SET".to_vec(),
            b"a b\r\nA\"".to_vec(),
            b"it's".to_vec(),
            b"plain".to_vec()
        ]
    );
    assert_eq!(split_line(r#""""#).unwrap(), vec![Vec::<u8>::new()]);
    assert!(split_line(r#""open"#).is_err());
    assert!(split_line(r#""a"b"#).is_err());
    let cmds = parse_corpus("# c\n\nFLUSHALL\n!ignore HELLO 3\n").unwrap();
    assert_eq!(cmds.len(), 2);
    assert_eq!((cmds[1].line_no, cmds[1].compare), (4, false));
    assert_eq!(cmds[1].args, vec![b"HELLO".to_vec(), b"3".to_vec()]);
}

#[test]
fn reply_escaping_round_trips_every_byte() {
    let all: Vec<u8> = (0..=255u8).collect();
    let e = escape(&all);
    assert!(!e.contains('\t') && !e.contains('\n'));
    assert_eq!(unescape(&e).unwrap(), all);
    assert_eq!(escape(b"$3\r\na\\b\r\n"), r"$3\r\na\\b\r\n");
}

/// Every command with keys (key specs, or keys only its parser finds) has a `COMMAND GETKEYS`
/// request in `getkeys.cmds` whose recorded reply is a list of keys, so a new command cannot skip
/// the comparison with Redis. shoal's own commands and the Bloom filters' (RedisBloom's `BF.*`,
/// a module redis-server does not have here) are exempt: redis-server does not know them
/// (shoal-commands' unit tests check their keys); so are commands of Redis versions after the
/// reference 7.0 (hash-field expiry, 7.4), whose keys their own wire tests check.
#[test]
fn every_command_with_keys_is_in_the_getkeys_corpus() {
    use shoal_commands::table::{self, Group};
    let path = golden_dir().join("getkeys.cmds");
    let cmds = load(&path);
    let recorded = load_recording(&path.with_extension("resp")).expect("getkeys.resp");
    assert_eq!(
        cmds.len(),
        recorded.len(),
        "getkeys.resp is stale: re-record"
    );
    let mut covered = HashSet::new();
    for (c, (_, reply)) in cmds.iter().zip(&recorded) {
        let a = &c.args;
        if a.len() < 3 || !a[1].eq_ignore_ascii_case(b"GETKEYS") || !reply.starts_with(b"*") {
            continue;
        }
        let name = String::from_utf8_lossy(&a[2]).to_ascii_lowercase();
        if let Some(sub) = a.get(3) {
            covered.insert(format!(
                "{name}|{}",
                String::from_utf8_lossy(sub).to_ascii_lowercase()
            ));
        }
        covered.insert(name);
    }
    let missing: Vec<&str> = table::all()
        .iter()
        .flat_map(|s| std::iter::once(*s).chain(s.subcommands.iter()))
        .filter(|s| !matches!(s.group, Group::Shoal | Group::Bloom))
        .filter(|s| shoal_commands::keyspec::has_keys(s))
        .filter(|s| !after_reference_version(s.since))
        .map(|s| s.name)
        .filter(|name| !covered.contains(*name))
        .collect();
    assert!(
        missing.is_empty(),
        "commands with keys but no successful COMMAND GETKEYS in getkeys.cmds: {missing:?}"
    );
}

/// Whether a command appeared after Redis 7.0, the reference server these corpora come from.
fn after_reference_version(since: &str) -> bool {
    let v: Vec<u32> = since.split('.').filter_map(|p| p.parse().ok()).collect();
    v.as_slice() > [7, 0].as_slice() && !v.starts_with(&[7, 0])
}
