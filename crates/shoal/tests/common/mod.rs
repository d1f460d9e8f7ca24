//! Test harness: starts the real `shoal` binary on a free port, in a temporary directory, and stops
//! it when the handle drops (pass or fail). Also a minimal raw-RESP client for byte-exact checks.

#![allow(dead_code)]

pub mod reference;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Upper bound for any single wait in tests.
pub const WAIT_MAX: Duration = Duration::from_secs(10);

/// A running shoal server.
pub struct Shoal {
    child: Option<Child>,
    pub port: u16,
    pub dir: PathBuf,
}

/// The longest a test client waits for one reply (far beyond any test's blocking command).
pub const CLIENT_IO_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(90);

/// A redis-rs cluster client whose connections and requests are bounded in time
/// ([`CLIENT_IO_TIMEOUT`]).
#[allow(dead_code)]
pub fn cluster_client(
    nodes: Vec<impl redis::IntoConnectionInfo>,
) -> redis::RedisResult<redis::cluster::ClusterClient> {
    redis::cluster::ClusterClient::builder(nodes)
        .connection_timeout(CLIENT_IO_TIMEOUT)
        .response_timeout(CLIENT_IO_TIMEOUT)
        .build()
}

/// A synchronous redis-rs connection to `url` whose every request is bounded in time
/// ([`CLIENT_IO_TIMEOUT`]), as [`Shoal::client`] gives.
#[allow(dead_code)]
pub fn connect(url: impl redis::IntoConnectionInfo) -> redis::Connection {
    let c = redis::Client::open(url)
        .expect("client")
        .get_connection()
        .expect("connect");
    c.set_read_timeout(Some(CLIENT_IO_TIMEOUT))
        .expect("read timeout");
    c.set_write_timeout(Some(CLIENT_IO_TIMEOUT))
        .expect("write timeout");
    c
}

impl Shoal {
    /// Starts shoal with extra `serve` arguments (e.g. `["--maxmemory", "2mb"]`).
    pub fn start(extra: &[&str]) -> Shoal {
        Shoal::launch(Command::new(env!("CARGO_BIN_EXE_shoal")), extra)
    }

    /// Runs `shoal serve` through `program` (the binary itself, or a wrapper that execs it) in a
    /// fresh temporary directory, and reads the bound port from its first line.
    fn launch(mut program: Command, extra: &[&str]) -> Shoal {
        let dir = std::env::temp_dir().join(format!(
            "shoal-test-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let mut child = program
            .arg("serve")
            .args([
                "--port",
                "0",
                "--bind",
                "127.0.0.1",
                "--loglevel",
                "warning",
            ])
            .args(extra)
            .current_dir(&dir)
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawn shoal");
        let stdout = child.stdout.take().expect("stdout");
        let mut line = String::new();
        BufReader::new(stdout)
            .read_line(&mut line)
            .expect("read listening line");
        let port: u16 = line
            .trim()
            .rsplit(':')
            .next()
            .and_then(|p| p.parse().ok())
            .unwrap_or_else(|| panic!("unexpected first line from shoal: {line:?}"));
        Shoal {
            child: Some(child),
            port,
            dir,
        }
    }

    pub fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/", self.port)
    }

    /// A synchronous redis-rs connection. Every request is bounded in time
    /// ([`CLIENT_IO_TIMEOUT`]): a server that stops answering fails the test instead of hanging it.
    pub fn client(&self) -> redis::Connection {
        connect(self.url())
    }

    /// A raw RESP connection.
    pub fn raw(&self) -> Raw {
        Raw::connect(&self.addr())
    }

    /// Whether the process is still running.
    pub fn is_running(&mut self) -> bool {
        matches!(self.child.as_mut().map(|c| c.try_wait()), Some(Ok(None)))
    }

    /// Waits (bounded) for the process to exit; returns its exit status success.
    pub fn wait_exit(&mut self) -> bool {
        let deadline = Instant::now() + WAIT_MAX;
        while Instant::now() < deadline {
            if let Some(Ok(Some(status))) = self.child.as_mut().map(|c| c.try_wait()) {
                return status.success();
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        panic!("shoal did not exit within {WAIT_MAX:?}");
    }

    /// Whether the process is stopped (SIGSTOP took effect on every thread).
    pub fn is_stopped(&self) -> bool {
        let Some(c) = &self.child else {
            return false;
        };
        let task = format!("/proc/{}/task", c.id());
        let Ok(threads) = std::fs::read_dir(&task) else {
            return false;
        };
        threads.flatten().all(|t| {
            std::fs::read_to_string(t.path().join("stat"))
                .ok()
                .and_then(|st| {
                    st.rsplit_once(')')
                        .map(|(_, rest)| rest.trim_start().starts_with('T'))
                })
                .unwrap_or(false)
        })
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.as_ref().map_or(0, |c| c.id())
    }

    /// Sends a signal to the process. `-STOP` returns once every thread is stopped: kill(2)
    /// returns before that, and on a loaded machine the process's other threads may go on
    /// serving (and a replica acknowledging) until the thread picked for the signal runs.
    pub fn signal(&self, sig: &str) {
        if let Some(c) = &self.child {
            let _ = Command::new("kill")
                .args([sig, &c.id().to_string()])
                .status();
        }
        if sig == "-STOP" && self.child.is_some() {
            wait_until("the process stopped (SIGSTOP on every thread)", || {
                self.is_stopped()
            });
        }
    }
}

static NEXT: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

impl Drop for Shoal {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A raw TCP client that sends bytes and reads whole RESP replies.
pub struct Raw {
    pub stream: TcpStream,
    buf: Vec<u8>,
}

impl Raw {
    pub fn connect(addr: &str) -> Raw {
        let stream = TcpStream::connect(addr).expect("connect");
        stream.set_read_timeout(Some(WAIT_MAX)).unwrap();
        Raw {
            stream,
            buf: Vec::new(),
        }
    }

    pub fn send(&mut self, bytes: &[u8]) {
        self.stream.write_all(bytes).expect("write");
    }

    /// Encodes a command as a RESP multibulk and sends it.
    pub fn cmd(&mut self, args: &[&[u8]]) {
        self.send(&encode(args));
    }

    /// Reads one complete reply and returns its exact bytes.
    pub fn reply(&mut self) -> Vec<u8> {
        loop {
            if let Some(n) = reply_len(&self.buf) {
                return self.buf.drain(..n).collect();
            }
            let mut chunk = [0u8; 65536];
            let n = self.stream.read(&mut chunk).expect("read reply");
            assert!(
                n > 0,
                "connection closed while waiting for a reply; got so far: {:?}",
                String::from_utf8_lossy(&self.buf)
            );
            self.buf.extend_from_slice(&chunk[..n]);
        }
    }

    /// Sends a command and returns its reply as a (lossy) string.
    pub fn call(&mut self, args: &[&str]) -> String {
        let a: Vec<&[u8]> = args.iter().map(|s| s.as_bytes()).collect();
        self.cmd(&a);
        String::from_utf8_lossy(&self.reply()).into_owned()
    }

    /// True if the server closed the connection (reads EOF within the wait bound).
    pub fn closed(&mut self) -> bool {
        let mut chunk = [0u8; 4096];
        loop {
            match self.stream.read(&mut chunk) {
                Ok(0) => return true,
                Ok(n) => self.buf.extend_from_slice(&chunk[..n]),
                Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => return true,
                Err(_) => return false,
            }
        }
    }
}

pub fn encode(args: &[&[u8]]) -> Vec<u8> {
    let mut v = format!("*{}\r\n", args.len()).into_bytes();
    for a in args {
        v.extend_from_slice(format!("${}\r\n", a.len()).as_bytes());
        v.extend_from_slice(a);
        v.extend_from_slice(b"\r\n");
    }
    v
}

/// Length of the first complete RESP2/RESP3 reply in `b`, if complete.
pub fn reply_len(b: &[u8]) -> Option<usize> {
    let line_end = |from: usize| -> Option<usize> {
        b.get(from..)?
            .windows(2)
            .position(|w| w == b"\r\n")
            .map(|p| from + p)
    };
    let first = *b.first()?;
    let e = line_end(1)?;
    let num = || std::str::from_utf8(&b[1..e]).ok()?.parse::<i64>().ok();
    match first {
        b'+' | b'-' | b':' | b'_' | b',' | b'#' | b'(' => Some(e + 2),
        b'$' | b'=' | b'!' => {
            let n = num()?;
            if n < 0 {
                return Some(e + 2);
            }
            let end = e + 2 + n as usize + 2;
            (b.len() >= end).then_some(end)
        }
        b'*' | b'~' | b'>' | b'%' | b'|' => {
            let n = num()?;
            if n < 0 {
                return Some(e + 2);
            }
            let items = if first == b'%' || first == b'|' {
                2 * n
            } else {
                n
            };
            let mut pos = e + 2;
            for _ in 0..items {
                pos += reply_len(&b[pos..])?;
            }
            Some(pos)
        }
        _ => Some(e + 2),
    }
}

/// Polls `f` until it returns true, at most `WAIT_MAX`; panics with `what` otherwise.
pub fn wait_until(what: &str, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + WAIT_MAX;
    while Instant::now() < deadline {
        if f() {
            return;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    panic!("timed out waiting for: {what}");
}

// ---- Helpers added for the wire-level suites (connection, strings, keys, server, pipeline,
// bad_input, eviction, versions). ----

/// Runs a command through redis-rs and returns its typed reply; panics naming the command if the
/// server answered with an error.
pub fn q<T: redis::FromRedisValue>(c: &mut redis::Connection, args: &[&str]) -> T {
    try_q(c, args).unwrap_or_else(|e| panic!("{args:?} failed: {e}"))
}

/// Runs a command through redis-rs and returns the reply or the error.
pub fn try_q<T: redis::FromRedisValue>(
    c: &mut redis::Connection,
    args: &[&str],
) -> redis::RedisResult<T> {
    let mut cmd = redis::cmd(args[0]);
    for a in &args[1..] {
        cmd.arg(*a);
    }
    cmd.query(c)
}

/// One `field:value` line of `INFO <section>`, if present.
pub fn info_field(c: &mut redis::Connection, section: &str, field: &str) -> Option<String> {
    let text: String = q(c, &["INFO", section]);
    info_value(&text, field)
}

/// The value of `field` in an INFO text.
pub fn info_value(text: &str, field: &str) -> Option<String> {
    text.lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
        .map(|v| v.trim().to_string())
}

/// A numeric INFO field; panics if it is missing or not a number.
pub fn info_u64(c: &mut redis::Connection, section: &str, field: &str) -> u64 {
    let v = info_field(c, section, field)
        .unwrap_or_else(|| panic!("INFO {section} has no field {field}"));
    v.parse()
        .unwrap_or_else(|_| panic!("INFO field {field} is not a number: {v:?}"))
}

// ---- replication helpers (replication, replication_defects) ----

/// `REPLICAOF` `primary` on `replica`, then waits until the link is up.
pub fn follow(replica: &Shoal, primary: &Shoal) {
    let mut c = replica.client();
    let _: () = q(
        &mut c,
        &["REPLICAOF", "127.0.0.1", &primary.port.to_string()],
    );
    wait_link_up(&mut c);
}

/// Waits until the replica behind `c` reports its link to the primary up.
pub fn wait_link_up(c: &mut redis::Connection) {
    wait_until("replica link up", || {
        info_field(c, "replication", "master_link_status").as_deref() == Some("up")
    });
}

/// Waits until `replica` applied everything `primary` had streamed when this was called.
pub fn caught_up(replica: &Shoal, primary: &Shoal) {
    let mut p = primary.client();
    let mut r = replica.client();
    let target = info_u64(&mut p, "replication", "master_repl_offset");
    wait_until("replica caught up", || {
        info_u64(&mut r, "replication", "slave_repl_offset") >= target
    });
}

/// A fresh directory for files a test writes before starting a server (e.g. a config file).
pub fn scratch_dir(tag: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!(
        "shoal-scratch-{tag}-{}-{}",
        std::process::id(),
        NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
    ));
    std::fs::create_dir_all(&dir).expect("scratch dir");
    dir
}

/// A small deterministic PRNG (xorshift64*), so bounded randomized tests replay from their seed.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed.max(1))
    }

    pub fn next_u64(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// A number in `0..n` (n > 0).
    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n
    }
}

impl Shoal {
    /// Like [`Shoal::start`], but the process runs under an address-space limit (`ulimit -v`), so
    /// a server bug that allocates without bound makes it fail fast instead of exhausting the
    /// test machine's memory. For tests that feed hostile input.
    pub fn start_capped(extra: &[&str], cap_bytes: u64) -> Shoal {
        let mut sh = Command::new("sh");
        sh.arg("-c")
            .arg("ulimit -v \"$0\" && exec \"$@\"")
            .arg((cap_bytes / 1024).to_string())
            .arg(env!("CARGO_BIN_EXE_shoal"));
        Shoal::launch(sh, extra)
    }
}

impl Raw {
    /// Connects and checks the server answers (so the server has registered this client before
    /// the caller goes on; used where connection counts matter).
    pub fn connect_ready(addr: &str) -> Raw {
        let mut r = Raw::connect(addr);
        assert_eq!(r.call(&["PING"]), "+PONG\r\n");
        r
    }

    /// Sends bytes, returning the I/O error instead of panicking (for peers the server may drop).
    pub fn try_send(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        self.stream.write_all(bytes)
    }

    /// Reads one reply, or `None` if the connection closed (or failed) first.
    pub fn try_reply(&mut self) -> Option<Vec<u8>> {
        loop {
            if let Some(n) = reply_len(&self.buf) {
                return Some(self.buf.drain(..n).collect());
            }
            let mut chunk = [0u8; 65536];
            match self.stream.read(&mut chunk) {
                Ok(0) | Err(_) => return None,
                Ok(n) => self.buf.extend_from_slice(&chunk[..n]),
            }
        }
    }

    /// Reads one reply as a (lossy) string.
    pub fn reply_str(&mut self) -> String {
        String::from_utf8_lossy(&self.reply()).into_owned()
    }
}
