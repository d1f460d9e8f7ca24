//! Test harness: starts the real `shoal` binary on a free port, in a temporary directory, and stops
//! it when the handle drops (pass or fail). Also a minimal raw-RESP client for byte-exact checks.

#![allow(dead_code)]

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

impl Shoal {
    /// Starts shoal with extra `serve` arguments (e.g. `["--maxmemory", "2mb"]`).
    pub fn start(extra: &[&str]) -> Shoal {
        let dir = std::env::temp_dir().join(format!(
            "shoal-test-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let mut child = Command::new(env!("CARGO_BIN_EXE_shoal"))
            .arg("serve")
            .args(["--port", "0", "--bind", "127.0.0.1", "--loglevel", "warning"])
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

    /// A synchronous redis-rs connection.
    pub fn client(&self) -> redis::Connection {
        redis::Client::open(self.url())
            .expect("client")
            .get_connection()
            .expect("connect")
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

    /// Sends a signal to the process.
    pub fn signal(&self, sig: &str) {
        if let Some(c) = &self.child {
            let _ = Command::new("kill").args([sig, &c.id().to_string()]).status();
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
            assert!(n > 0, "connection closed while waiting for a reply; got so far: {:?}", String::from_utf8_lossy(&self.buf));
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
            let items = if first == b'%' || first == b'|' { 2 * n } else { n };
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
