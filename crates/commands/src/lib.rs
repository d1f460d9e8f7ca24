//! shoal's command layer: the command table, admission checks and one module per command family.
//! No I/O: [`execute`] takes a parsed request and a session, runs it against the keyspace, and
//! appends the reply to an output buffer. The server crate owns sockets and calls this.
//!
//! The request path here: look the name up (case-insensitive) → subcommand → arity → auth →
//! memory (evict, or `-OOM`) → handler → counters and slow log.

pub mod args;
pub mod coll;
pub mod config;
pub mod connection;
pub mod glob;
pub mod hashes;
pub mod keys;
pub mod lazyfree;
pub mod lists;
pub mod multi;
pub mod pubsub;
pub mod repl;
pub mod replication;
pub mod server;
pub mod sets;
pub mod state;
pub mod strings;
pub mod table;
pub mod versions;
pub mod zsets;

use std::sync::MutexGuard;
use std::sync::atomic::Ordering::Relaxed;
use std::time::Instant;

use shoal_keyspace::{Shard, key_slot};
use shoal_resp::ReplyWriter;

pub use args::{Args, OwnedArgs};
pub use state::{Client, ClientHandle, Hooks, ServerState};
pub use table::{Spec, flag};

/// A command's result: `Ok` after it wrote its reply, or the error line to send (e.g.
/// `ERR syntax error`). Errors are values for the client; the connection goes on.
pub type CmdResult = Result<(), String>;

/// A command implementation.
pub type Handler = fn(&mut Ctx<'_>, &Args<'_>) -> CmdResult;

/// The families whose tables make up the command table.
pub static FAMILIES: &[&[table::Spec]] = &[
    connection::COMMANDS,
    strings::COMMANDS,
    keys::COMMANDS,
    server::COMMANDS,
    versions::COMMANDS,
    hashes::COMMANDS,
    lists::COMMANDS,
    sets::COMMANDS,
    zsets::COMMANDS,
    multi::COMMANDS,
    pubsub::COMMANDS,
    replication::COMMANDS,
];

/// What a command runs with.
pub struct Ctx<'a> {
    pub srv: &'a ServerState,
    pub client: &'a mut Client,
    pub out: ReplyWriter<'a>,
    pub now_ms: u64,
    version: Option<u64>,
}

impl<'a> Ctx<'a> {
    /// The version of this command's writes: one HLC value per command, so every key an MSET
    /// writes carries the same version.
    pub fn version(&mut self) -> u64 {
        if let Some(v) = self.version {
            return v;
        }
        let v = self.srv.ks.hlc.next(self.now_ms);
        self.version = Some(v);
        v
    }

    /// Locks the shard holding `key`; returns it with the key's slot.
    pub fn shard(&self, key: &[u8]) -> (MutexGuard<'a, Shard>, u16) {
        let slot = key_slot(key);
        (self.srv.ks.lock(self.srv.ks.shard_of(slot)), slot)
    }

    pub fn db(&self) -> usize {
        self.client.db
    }

    /// Locks the shards of several keys at once, in shard order, so multi-key commands (MSET,
    /// RENAME, ...) are atomic with respect to other clients.
    pub fn lock_keys<'k>(&self, keys: impl Iterator<Item = &'k [u8]>) -> Locked<'a> {
        let slots: Vec<u16> = keys.map(key_slot).collect();
        Locked {
            guards: self.srv.ks.lock_slots(&slots),
            srv: self.srv,
        }
    }
}

/// Shards locked together for a multi-key command.
pub struct Locked<'a> {
    guards: Vec<(usize, MutexGuard<'a, Shard>)>,
    srv: &'a ServerState,
}

impl Locked<'_> {
    /// The locked shard holding `key`, and the key's slot. The key must be one of those locked.
    pub fn shard(&mut self, key: &[u8]) -> (&mut Shard, u16) {
        let slot = key_slot(key);
        let idx = self.srv.ks.shard_of(slot);
        let g = self
            .guards
            .iter_mut()
            .find(|(i, _)| *i == idx)
            .expect("key's shard was locked");
        (&mut g.1, slot)
    }
}

/// Formats the unknown-command error exactly as Redis 7 does.
fn unknown_command(args: &Args<'_>) -> String {
    let name = String::from_utf8_lossy(args.get(0));
    let name: String = name.chars().take(128).collect();
    let mut rest = String::new();
    for a in args.tail(1).iter() {
        if rest.len() >= 128 {
            break;
        }
        let s = String::from_utf8_lossy(a);
        let room = 128 - rest.len();
        rest.push('\'');
        rest.extend(s.chars().take(room));
        rest.push_str("' ");
    }
    format!("ERR unknown command '{name}', with args beginning with: {rest}")
}

/// Evicts until used memory is under `maxmemory`. Returns false when it cannot (nothing evictable),
/// which makes `DENYOOM` commands fail with `-OOM`.
pub fn ensure_memory(srv: &ServerState, now_ms: u64) -> bool {
    let max = srv.maxmemory() as usize;
    if max == 0 || srv.used_memory() <= max {
        return true;
    }
    let shards = srv.ks.shard_count();
    // Start at a rotating shard so eviction pressure spreads over all of them.
    static NEXT: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let mut idle_rounds = 0;
    for _ in 0..EVICTIONS_PER_COMMAND_MAX {
        if srv.used_memory() <= max {
            return true;
        }
        let i = NEXT.fetch_add(1, Relaxed) % shards;
        let evicted = srv.ks.lock(i).evict_one(now_ms);
        if evicted.is_some() {
            idle_rounds = 0;
        } else {
            idle_rounds += 1;
            if idle_rounds >= shards {
                return false;
            }
        }
    }
    // Budget spent: let the command run (Redis does the same when eviction is slow), the next
    // write continues evicting.
    true
}

/// Evictions one command may perform before it runs.
pub const EVICTIONS_PER_COMMAND_MAX: usize = 1024;

/// Runs one request and appends its reply to `out`. `now_ms` is the wall clock in ms.
pub fn execute(
    srv: &ServerState,
    client: &mut Client,
    args: &Args<'_>,
    out: &mut Vec<u8>,
    now_ms: u64,
) {
    let reply_start = out.len();
    let mut w = ReplyWriter::new(out, client.proto);
    let Some(mut spec) = table::lookup(args.get(0)) else {
        srv.stats.total_error_replies.fetch_add(1, Relaxed);
        w.error(&unknown_command(args));
        return;
    };
    // A container with a handler of its own (COMMAND) runs it when called bare.
    if !spec.subcommands.is_empty() && (args.len() >= 2 || spec.handler.is_none()) {
        if args.len() < 2 {
            srv.stats.total_error_replies.fetch_add(1, Relaxed);
            w.error(&format!(
                "ERR wrong number of arguments for '{}' command",
                spec.name
            ));
            return;
        }
        match spec.find_sub(args.get(1)) {
            Some(sub) => spec = sub,
            None => {
                srv.stats.total_error_replies.fetch_add(1, Relaxed);
                w.error(&format!(
                    "ERR unknown subcommand '{}'. Try {} HELP.",
                    String::from_utf8_lossy(args.get(1))
                        .chars()
                        .take(128)
                        .collect::<String>(),
                    spec.name.to_ascii_uppercase()
                ));
                return;
            }
        }
    }
    client.handle.last_cmd.store(table::index_of(spec), Relaxed);
    if !spec.arity_ok(args.len()) {
        srv.stats.total_error_replies.fetch_add(1, Relaxed);
        w.error(&format!(
            "ERR wrong number of arguments for '{}' command",
            spec.name
        ));
        return;
    }
    if !client.authenticated && !spec.has(flag::NO_AUTH) && srv.hot.requirepass_set.load(Relaxed) {
        srv.stats.total_error_replies.fetch_add(1, Relaxed);
        w.error("NOAUTH Authentication required.");
        return;
    }
    if spec.has(flag::WRITE)
        && srv.repl.is_replica()
        && !client.repl.is_primary_link
        && srv.values().get("replica-read-only") == "yes"
    {
        srv.stats.total_error_replies.fetch_add(1, Relaxed);
        w.error("READONLY You can't write against a read only replica.");
        return;
    }
    if spec.has(flag::DENYOOM) && !ensure_memory(srv, now_ms) {
        srv.stats.oom_rejections.fetch_add(1, Relaxed);
        srv.stats.total_error_replies.fetch_add(1, Relaxed);
        w.error("OOM command not allowed when used memory > 'maxmemory'.");
        return;
    }
    let Some(handler) = spec.handler else {
        w.error("ERR command has no handler");
        return;
    };
    let timed =
        srv.hot.slowlog_enabled.load(Relaxed) || srv.hot.latency_threshold_ms.load(Relaxed) > 0;
    let started = timed.then(Instant::now);
    let mut ctx = Ctx {
        srv,
        client,
        out: w,
        now_ms,
        version: None,
    };
    if let Err(e) = handler(&mut ctx, args) {
        srv.stats.total_error_replies.fetch_add(1, Relaxed);
        // A handler that failed after writing part of a reply must not leave it half-written.
        ctx.out.buf.truncate(reply_start);
        ctx.out.error(&e);
    }
    // What this command wrote (and any key it expired or evicted) goes to the replication stream
    // before the reply is sent, so WAIT and the sync strategy can wait for its offset.
    if let Some(offset) = repl::emit_logged(srv) {
        ctx.client.repl.last_write_offset = offset;
    }
    srv.stats.total_commands_processed.fetch_add(1, Relaxed);
    if let Some(t0) = started {
        let us = t0.elapsed().as_micros() as u64;
        server::record_slow(srv, ctx.client, spec, args, us, now_ms);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    /// Runs commands against a fresh state and returns the raw replies.
    pub(crate) fn run(cmds: &[&[&str]]) -> Vec<String> {
        let srv = ServerState::new(config::Values::default(), 1_000_000, 7, Hooks::default());
        let h = Arc::new(ClientHandle::new(
            1,
            "127.0.0.1:1".into(),
            "127.0.0.1:2".into(),
            0,
        ));
        let mut c = Client::new(h, true);
        cmds.iter()
            .map(|cmd| {
                let o = OwnedArgs::new(cmd.iter());
                let mut out = Vec::new();
                execute(&srv, &mut c, &o.args(), &mut out, 1_000_000);
                String::from_utf8_lossy(&out).into_owned()
            })
            .collect()
    }

    #[test]
    fn unknown_and_arity_errors_match_redis() {
        let r = run(&[
            &["foo", "a", "b"],
            &["get"],
            &["client"],
            &["client", "nope"],
        ]);
        assert_eq!(
            r[0],
            "-ERR unknown command 'foo', with args beginning with: 'a' 'b' \r\n"
        );
        assert_eq!(r[1], "-ERR wrong number of arguments for 'get' command\r\n");
        assert_eq!(
            r[2],
            "-ERR wrong number of arguments for 'client' command\r\n"
        );
        assert_eq!(r[3], "-ERR unknown subcommand 'nope'. Try CLIENT HELP.\r\n");
    }

    #[test]
    fn table_is_consistent() {
        let all = table::all();
        for w in all.windows(2) {
            assert_ne!(w[0].name, w[1].name, "duplicate command");
        }
        for s in all {
            assert_eq!(s.name, s.name.to_ascii_lowercase());
            assert!(s.arity != 0, "{}", s.name);
            assert!(
                s.has(flag::WRITE) == false || s.has(flag::READONLY) == false,
                "{}",
                s.name
            );
            for sub in s.subcommands {
                assert!(
                    sub.name.starts_with(&format!("{}|", s.name)),
                    "{}",
                    sub.name
                );
            }
        }
    }
}
