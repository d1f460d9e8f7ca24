//! MONITOR: every command any client runs, as one line each, to the clients in monitor mode.
//!
//! A command is fed after it ran (so `SELECT 3` shows db 3, and EXEC follows the commands it
//! ran), unless it is an admin command (CONFIG, CLIENT LIST, DEBUG...), was refused before
//! running, or was only queued in MULTI: what Redis 7.0 shows. Passwords are redacted as Redis
//! redacts them (AUTH, HELLO ... AUTH, MIGRATE ... AUTH/AUTH2). The line is formatted once and
//! queued in each monitor's mailbox, the same bounded queue pub/sub uses, so a monitor that reads
//! too slowly is disconnected like a slow subscriber and never makes the server hold unbounded
//! output: the limits are `client-output-buffer-limit`'s `normal` class (Redis treats a monitor
//! as a normal client), or, when that class sets no limit (its default), the `pubsub` class.
//!
//! With nobody monitoring, the request path pays one relaxed atomic load ([`Monitors::active`]).

use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};
use std::sync::{Arc, Mutex};

use crate::args::Args;
use crate::state::{Client, ClientHandle, ServerState};
use crate::table::{Spec, flag};

/// The clients in monitor mode.
#[derive(Debug, Default)]
pub struct Monitors {
    count: AtomicUsize,
    list: Mutex<Vec<Arc<ClientHandle>>>,
}

impl Monitors {
    /// Whether anyone monitors (checked after every command).
    pub fn active(&self) -> bool {
        self.count.load(Relaxed) > 0
    }

    /// Adds a monitor; `false` if it already was one.
    pub fn add(&self, h: &Arc<ClientHandle>) -> bool {
        let mut l = self.list.lock().expect("monitors lock");
        if l.iter().any(|m| m.id == h.id) {
            return false;
        }
        l.push(h.clone());
        self.count.store(l.len(), Relaxed);
        h.monitor.store(true, Relaxed);
        true
    }

    /// Removes a monitor (RESET, a closing connection).
    pub fn remove(&self, h: &ClientHandle) {
        let mut l = self.list.lock().expect("monitors lock");
        l.retain(|m| m.id != h.id);
        self.count.store(l.len(), Relaxed);
        h.monitor.store(false, Relaxed);
    }

    fn snapshot(&self) -> Vec<Arc<ClientHandle>> {
        self.list.lock().expect("monitors lock").clone()
    }
}

/// Appends `b` quoted as Redis's `sdscatrepr` does: `"..."` with `\\`, `\"`, `\n`, `\r`, `\t`,
/// `\a`, `\b` escaped and other bytes outside printable ASCII as `\xhh`.
pub fn quote_into(out: &mut Vec<u8>, b: &[u8]) {
    out.push(b'"');
    for &c in b {
        match c {
            b'\\' => out.extend_from_slice(b"\\\\"),
            b'"' => out.extend_from_slice(b"\\\""),
            b'\n' => out.extend_from_slice(b"\\n"),
            b'\r' => out.extend_from_slice(b"\\r"),
            b'\t' => out.extend_from_slice(b"\\t"),
            7 => out.extend_from_slice(b"\\a"),
            8 => out.extend_from_slice(b"\\b"),
            0x20..=0x7e => out.push(c),
            _ => {
                const HEX: &[u8; 16] = b"0123456789abcdef";
                out.extend_from_slice(&[
                    b'\\',
                    b'x',
                    HEX[(c >> 4) as usize],
                    HEX[(c & 15) as usize],
                ]);
            }
        }
    }
    out.push(b'"');
}

/// Whether Redis redacts argument `i` of this command in what it shows: passwords (AUTH's
/// arguments, HELLO's `AUTH user pass`, MIGRATE's `AUTH pass` and `AUTH2 user pass`'s pass).
/// Redis decides this in each command's own code; here it is one table of the three.
fn redacted(top: &Spec, args: &Args<'_>, i: usize) -> bool {
    match top.name {
        "auth" => i >= 1,
        "hello" => i >= 3 && (args.is(i - 1, "AUTH") || args.is(i - 2, "AUTH")),
        "migrate" => i >= 6 && (args.is(i - 1, "AUTH") || args.is(i - 2, "AUTH2")),
        _ => false,
    }
}

/// Feeds a command that ran to every monitor (call only when [`Monitors::active`]).
pub fn feed(srv: &ServerState, client: &Client, spec: &'static Spec, args: &Args<'_>) {
    let top = crate::table::lookup(args.get(0)).unwrap_or(spec);
    if spec.has(flag::ADMIN) || top.has(flag::ADMIN) {
        return;
    }
    let us = (srv.clock.unix_us)();
    let mut line = Vec::with_capacity(64 + args.bytes() + 3 * args.len());
    line.push(b'+');
    line.extend_from_slice(
        format!(
            "{}.{:06} [{} {}]",
            us / 1_000_000,
            us % 1_000_000,
            client.db,
            // A script's commands show as the script client's, as in Redis.
            if client.in_script_call {
                "lua"
            } else {
                &client.handle.addr
            }
        )
        .as_bytes(),
    );
    for i in 0..args.len() {
        line.push(b' ');
        if redacted(top, args, i) {
            quote_into(&mut line, b"(redacted)");
        } else {
            quote_into(&mut line, args.get(i));
        }
    }
    line.extend_from_slice(b"\r\n");
    let line: Arc<[u8]> = line.into();
    let cfg = srv.config();
    let limits = &cfg.client_output_buffer_limit;
    let limit = if limits.normal.hard_bytes > 0 || limits.normal.soft_bytes > 0 {
        limits.normal
    } else {
        limits.pubsub
    };
    let now_ms = us / 1000;
    for m in srv.monitors.snapshot() {
        m.mailbox.deliver_within(&line, &m, srv, now_ms, limit);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Hooks, OwnedArgs, config::Config};

    #[test]
    fn arguments_are_quoted_as_sdscatrepr() {
        let mut out = Vec::new();
        quote_into(&mut out, b"a b\"c\\\n\r\t\x07\x08\x01\xc3\xa9~");
        assert_eq!(out, br#""a b\"c\\\n\r\t\a\b\x01\xc3\xa9~""#.to_vec());
    }

    fn client(id: u64) -> Client {
        let h = Arc::new(ClientHandle::new(
            id,
            format!("127.0.0.1:{id}"),
            "127.0.0.1:6379".into(),
            0,
        ));
        Client::new(h, true)
    }

    fn exec(srv: &ServerState, c: &mut Client, cmd: &[&str]) -> String {
        let o = OwnedArgs::new(cmd.iter());
        let mut out = Vec::new();
        crate::execute(srv, c, &o.args(), &mut out, 1_000_000);
        String::from_utf8_lossy(&out).into_owned()
    }

    #[test]
    fn a_monitor_gets_what_others_run_until_it_leaves() {
        let srv = ServerState::new(Config::default(), 1_000_000, 7, Hooks::default());
        let (mut m, mut c) = (client(1), client(2));
        exec(&srv, &mut c, &["SET", "before", "v"]);
        assert!(!srv.monitors.active());
        assert_eq!(exec(&srv, &mut m, &["MONITOR"]), "+OK\r\n");
        assert!(srv.monitors.active());
        assert_eq!(
            exec(&srv, &mut m, &["MONITOR"]),
            "",
            "no reply the second time"
        );
        exec(&srv, &mut c, &["SET", "k", "v"]);
        exec(&srv, &mut c, &["CONFIG", "GET", "maxmemory"]);
        exec(&srv, &mut c, &["AUTH", "pw"]);
        let mut fed = Vec::new();
        m.handle.mailbox.drain_into(&mut fed, usize::MAX);
        let fed = String::from_utf8(fed).unwrap();
        let lines: Vec<&str> = fed.lines().map(|l| l.split_once(']').unwrap().1).collect();
        assert_eq!(
            lines,
            [r#" "SET" "k" "v""#, r#" "AUTH" "(redacted)""#],
            "{fed}"
        );
        assert!(fed.contains("[0 127.0.0.1:2]"), "{fed}");
        crate::client_closed(&srv, &mut m);
        assert!(!srv.monitors.active());
    }
}
