//! shoal's command layer: the command table, admission checks and one module per command family.
//! No I/O: [`execute`] takes a parsed request and a session, runs it against the keyspace, and
//! appends the reply to an output buffer. The server crate owns sockets and calls this.
//!
//! The request path here: look the name up (case-insensitive) → subcommand → arity → auth →
//! memory (evict, or `-OOM`) → pub/sub context → MULTI (queue instead of running) → handler, holding
//! the exec gate shared → wake-ups of blocked clients → counters and slow log. A command may also end
//! by asking to block ([`Outcome::Block`]); the connection loop then waits and runs it again.

pub mod acl;
pub mod active;
pub mod aof;
pub mod args;
pub mod bitmaps;
pub mod blocking;
pub mod bloom;
pub mod cache_lease;
pub mod client_eviction;
pub mod cluster;
pub mod cmdstats;
pub mod coll;
pub mod config;
pub mod connection;
pub mod effects;
pub mod error;
pub mod geo;
pub mod glob;
pub mod hashes;
pub mod hyperloglog;
pub mod keys;
pub mod keyspec;
pub mod lists;
pub mod lolwut;
pub mod longdouble;
pub mod maxlag;
pub mod migration;
pub mod monitor;
pub mod multi;
pub mod notify;
pub mod protected;
pub mod pubsub;
pub mod repair;
pub mod replication;
pub mod scripting;
pub mod server;
pub mod sets;
pub mod sort;
pub mod state;
pub mod streams;
pub mod strings;
pub mod table;
pub mod tier;
pub mod tracking;
pub mod versions;
pub mod zsets;

use std::sync::atomic::Ordering::Relaxed;

use shoal_keyspace::{Shard, key_slot, pool::Eviction};
use shoal_resp::ReplyWriter;

pub use args::{Args, OwnedArgs};
pub use error::ReplyError;
/// Replication state and codecs (the sans-IO `shoal-replication` crate), under the name commands use.
pub use shoal_replication as repl;
pub use state::{Action, Client, ClientHandle, Hooks, Persistence, ServerState};
pub use table::{Spec, flag};

/// A command's result: `Ok` after it wrote its reply, or the error to reply (e.g.
/// [`args::ERR_SYNTAX`]). Errors are values for the client; the connection goes on.
pub type CmdResult = Result<(), ReplyError>;

/// A command implementation.
pub type Handler = fn(&mut Ctx<'_>, &Args<'_>) -> CmdResult;

/// The families whose tables make up the command table.
pub static FAMILIES: &[&[table::Spec]] = &[
    connection::COMMANDS,
    cluster::COMMANDS,
    strings::COMMANDS,
    bitmaps::COMMANDS,
    hyperloglog::COMMANDS,
    bloom::COMMANDS,
    keys::COMMANDS,
    sort::COMMANDS,
    server::COMMANDS,
    protected::COMMANDS,
    lolwut::COMMANDS,
    versions::COMMANDS,
    cache_lease::COMMANDS,
    hashes::COMMANDS,
    lists::COMMANDS,
    sets::COMMANDS,
    zsets::COMMANDS,
    geo::COMMANDS,
    streams::COMMANDS,
    multi::COMMANDS,
    pubsub::COMMANDS,
    blocking::COMMANDS,
    replication::COMMANDS,
    aof::COMMANDS,
    scripting::COMMANDS,
    acl::COMMANDS,
    active::COMMANDS,
    repair::COMMANDS,
];

/// What a command runs with.
pub struct Ctx<'a> {
    pub srv: &'a ServerState,
    pub client: &'a mut Client,
    pub out: ReplyWriter<'a>,
    pub now_ms: u64,
    version: Option<u64>,
    /// The shared hold on the exec gate while the handler runs (`None` inside EXEC, which holds
    /// the gate exclusively); EXEC releases it before taking the gate alone.
    gate: Option<multi::GateShared<'a>>,
    mode: RunMode,
    /// Running as part of EXEC: blocking commands do not block.
    in_exec: bool,
    /// Set by a blocking command that found nothing and may wait.
    block: Option<Box<blocking::BlockRequest>>,
    /// Set by EXEC when a slot it would write to is paused (it ran nothing; see
    /// [`Outcome::Paused`]).
    paused: bool,
    /// [`Ctx::shard`] may keep the shard locked for the connection's next command (see
    /// `may_keep_shard`).
    sticky: bool,
    /// The handler's error was already counted in the error stats (a script failing with the
    /// error of one of its commands): it still counts as a failed call.
    pub(crate) error_counted: bool,
}

/// What the connection loop does after a request.
#[derive(Debug)]
pub enum Outcome {
    /// The reply is in the output buffer.
    Done,
    /// A blocking command found nothing: no reply was written. The connection registers the
    /// client as waiting on the keys and runs the same request again ([`RunMode::Retry`]) when
    /// one is written, or with [`RunMode::Timeout`] at the deadline.
    Block(Box<blocking::BlockRequest>),
    /// A request for a slot whose move is flipping ownership (cluster mode): nothing ran and no
    /// reply was written. The connection waits while the slot is paused (at most
    /// `migration::PAUSE_WAIT_MAX_MS`) and runs the same request again, which is then served
    /// here or redirected.
    Paused,
    /// Values the request needs are on the disk tier: nothing ran and no reply was written. The
    /// connection loads them off-lock, puts them back, and runs the same request again (see
    /// `tier.rs`; at most `tier::FETCH_ROUNDS_MAX` rounds).
    Fetch(Box<tier::FetchRequest>),
    /// Another thread holds the exec gate for a batch of scripts, and the client waits for it
    /// as a task (`Client::gate_wait_as_task`): nothing ran and no reply was written. The
    /// connection waits for the batch to end (`ExecGate::batch_ended`) and runs the same request
    /// again.
    GateWait,
    /// The request's one key is on a shard another worker claims (`shoal_keyspace::claim`:
    /// both fought over its lock), and the client waits as a task: nothing ran and no reply was
    /// written. The connection waits for the claimer to wake it (the task then runs on the
    /// claimer's thread) or for the claim to end, once, and runs the same request again
    /// (`Client::claim_waited`).
    ShardWait(usize),
}

/// How a request runs: normally, or again for a client blocked on keys.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RunMode {
    Normal,
    /// Woken up: a key it waits for was written. It may block again (keeping its place).
    Retry,
    /// Run again right after the client registered as waiting: a write between the command's
    /// look and the registration signalled no one. It may block again, as a retry; what it
    /// serves is decided as on the first run (no write is known to have come).
    Recheck,
    /// The deadline passed: reply as if nothing came (a blocking command may not block).
    Timeout,
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

    /// Whether a blocking command that found nothing may wait (not inside EXEC, not timed out).
    pub fn may_block(&self) -> bool {
        !self.in_exec && self.mode != RunMode::Timeout
    }

    /// Whether this run is a blocked client's last run at its deadline.
    pub fn is_timeout(&self) -> bool {
        self.mode == RunMode::Timeout
    }

    /// Whether this run is a blocked client's: a retry after a wake-up, or the look right
    /// after it registered.
    pub fn is_retry(&self) -> bool {
        matches!(self.mode, RunMode::Retry | RunMode::Recheck)
    }

    /// Whether this run follows a write to a key the client waits for (Redis serves a blocked
    /// client when a key it waits for is signalled ready).
    pub fn woken_by_write(&self) -> bool {
        self.mode == RunMode::Retry
    }

    /// Asks to wait until one of `keys` (of the current database) is written, or `deadline_ms`
    /// (absolute wall-clock ms; `None` waits forever) passes. The handler writes no reply then.
    pub fn block_on(&mut self, keys: Vec<Vec<u8>>, deadline_ms: Option<u64>) {
        debug_assert!(self.may_block());
        self.block = Some(Box::new(blocking::BlockRequest {
            keys,
            db: self.client.db,
            deadline_ms,
            rewritten: None,
        }));
    }

    /// Locks the shard holding `key`; returns it with the key's slot. Lookups through it follow
    /// the client's CLIENT NO-TOUCH mode.
    pub fn shard(&self, key: &[u8]) -> (shoal_keyspace::ShardGuard<'a>, u16) {
        let slot = key_slot(key);
        let index = self.srv.ks.shard_of(slot);
        let mut g = if self.sticky {
            self.srv.ks.lock_sticky(index)
        } else {
            self.srv.ks.lock(index)
        };
        if self.client.handle.no_touch.load(Relaxed) {
            g.set_no_touch(true);
        }
        (g, slot)
    }

    pub fn db(&self) -> usize {
        self.client.db
    }

    /// Locks the shards of several keys at once, in shard order, so multi-key commands (MSET,
    /// RENAME, ...) are atomic with respect to other clients.
    pub fn lock_keys<'k>(&self, keys: impl Iterator<Item = &'k [u8]>) -> Locked<'a> {
        // Each key's lines start loading now, so the lookups after the locks overlap their cache
        // misses instead of waiting for each in turn (see `shoal_keyspace::prefetch`).
        let db = self.client.db;
        let slots: Vec<u16> = keys
            .map(|k| {
                let slot = key_slot(k);
                self.srv.ks.prefetch_in(db, slot, k);
                slot
            })
            .collect();
        let mut guards = self.srv.ks.lock_slots(&slots);
        if self.client.handle.no_touch.load(Relaxed) {
            for (_, g) in &mut guards {
                g.set_no_touch(true);
            }
        }
        Locked {
            guards,
            srv: self.srv,
        }
    }
}

/// Shards locked together for a multi-key command.
pub struct Locked<'a> {
    guards: Vec<(usize, shoal_keyspace::ShardGuard<'a>)>,
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

/// Formats the unknown-command error exactly as Redis 7 does: the name cut at 128 bytes, then
/// quoted arguments while the list is under 128 bytes (each cut to what is left), the client's
/// bytes as they came.
fn unknown_command(args: &Args<'_>) -> ReplyError {
    let name = args.get(0);
    let mut msg = b"unknown command '".to_vec();
    msg.extend_from_slice(&name[..name.len().min(128)]);
    msg.extend_from_slice(b"', with args beginning with: ");
    let mut rest: Vec<u8> = Vec::new();
    for a in args.tail(1).iter() {
        if rest.len() >= 128 {
            break;
        }
        let room = 128 - rest.len();
        rest.push(b'\'');
        rest.extend_from_slice(&a[..a.len().min(room)]);
        rest.extend_from_slice(b"' ");
    }
    msg.extend_from_slice(&rest);
    ReplyError::ErrBytes(msg.into())
}

/// Over `maxmemory`, a command that needs no memory still evicts first, as Redis evicts before
/// every command (a read, too, brings the node back under its limit); it runs either way. Not on
/// a replica (its primary's deletions arrive instead) nor during CLIENT PAUSE, as in Redis; nor
/// with the disk tier on, where values move to disk at the pace writes ask for (a burst of moves
/// finds the tier busy and drops keys instead, see [`ensure_memory`]).
fn evict_before_command(srv: &ServerState, now_ms: u64) {
    let max = srv.maxmemory() as usize;
    if max == 0
        || srv
            .used_memory()
            .saturating_sub(srv.mem_not_counted_for_evict.load(Relaxed))
            <= max
        || srv.repl.is_replica()
        || srv.ks.tiered()
        || srv.client_pause.active(now_ms).is_some()
    {
        return;
    }
    ensure_memory(srv, now_ms);
}

/// Evicts until used memory is under `maxmemory`. Returns false when it cannot (nothing evictable),
/// which makes `DENYOOM` commands fail with `-OOM`.
pub fn ensure_memory(srv: &ServerState, now_ms: u64) -> bool {
    let max = srv.maxmemory() as usize;
    let mut not_counted = srv.mem_not_counted_for_evict.load(Relaxed);
    let used = |not_counted: usize| srv.used_memory().saturating_sub(not_counted);
    if max == 0 || used(not_counted) <= max {
        return true;
    }
    // Values on their way to the disk tier are in memory until written, which is what evicting
    // them asked for: counting them would evict (and at last drop) more keys meanwhile.
    // One atomic load, not the store's mutex (shared by every worker), when the tier was never on.
    let tiered = srv.ks.tiered().then(|| srv.ks.cold_store()).flatten();
    if let Some(store) = &tiered {
        not_counted += store.info().pending_bytes as usize;
    }
    let used = || used(not_counted);
    // Eviction locks other shards and the eviction pool: not while keeping one from the last
    // command (see `shoal_keyspace::sticky`).
    shoal_keyspace::sticky::release();
    // Over the limit: evict a little more than the limit asks for (down to `EVICT_AHEAD_BYTES`
    // under it, a few keys), so that one pass's sampling and locks serve several victims and the
    // next few writes find room without evicting. Each pass samples the shards after the node's
    // cursor into the keyspace's eviction pool and evicts the pool's best (see
    // `shoal_keyspace::pool`).
    // With the disk tier on, victims' values move to the disk at the pace it writes them
    // (`tiered_pending_bytes`): no eviction ahead there, a burst of moves would find the tier
    // busy and drop keys instead.
    let batch = if tiered.is_some() { 1 } else { EVICT_BATCH };
    let mut evicted = 0;
    while evicted < EVICTIONS_PER_COMMAND_MAX {
        // Read again each pass: a limit raised or lifted meanwhile (CONFIG SET, while the cron
        // evicts in the background) stops the evicting at once.
        let max = srv.maxmemory() as usize;
        if max == 0 || used() <= max {
            return true;
        }
        let floor = match tiered {
            Some(_) => max,
            None => max.saturating_sub(EVICT_AHEAD_BYTES.min(max / EVICT_AHEAD_FRACTION_MAX)),
        };
        let start = srv.evict_cursor.fetch_add(1, Relaxed);
        let mut pass = 0;
        let pool = srv.gate.thread_slot();
        let outcome = srv.ks.evict_batch(now_ms, start, pool, batch, |_, _| {
            pass += 1;
            used() > floor
        });
        evicted += pass.max(1);
        // Raced: the candidates went meanwhile; the next round samples again.
        if outcome == Eviction::Nothing {
            // Nothing evictable anywhere (empty, or no volatile keys under a volatile policy).
            return false;
        }
    }
    // Budget spent: let the command run (Redis does the same when eviction is slow), the next
    // write continues evicting.
    true
}

/// Redis's `checkGoodReplicasStatus`: true unless this node is a primary with
/// `min-replicas-to-write` and `min-replicas-max-lag` set and fewer good replicas than the first.
pub fn good_replicas_ok(srv: &ServerState, now_ms: u64) -> bool {
    let need = srv.hot.min_replicas_to_write.load(Relaxed);
    let lag = srv.hot.min_replicas_max_lag_s.load(Relaxed);
    need == 0
        || lag == 0
        || srv.repl.is_replica()
        || srv.repl.good_replicas(now_ms, lag) as u64 >= need
}

/// Evictions one command may perform before it runs.
pub const EVICTIONS_PER_COMMAND_MAX: usize = 1024;
/// Victims one eviction pass evicts at most, once over `maxmemory` (see [`ensure_memory`]).
pub const EVICT_BATCH: usize = 3;
/// How far under `maxmemory` an eviction pass may go: a few small keys' worth.
pub const EVICT_AHEAD_BYTES: usize = 1024;
/// ... and at most this fraction of `maxmemory` (a tiny limit is not undercut by much).
pub const EVICT_AHEAD_FRACTION_MAX: usize = 1024;

/// Runs one request and appends its reply to `out`. `now_ms` is the wall clock in ms.
pub fn execute(
    srv: &ServerState,
    client: &mut Client,
    args: &Args<'_>,
    out: &mut Vec<u8>,
    now_ms: u64,
) -> Outcome {
    execute_as(srv, client, args, out, now_ms, RunMode::Normal)
}

/// [`execute`] for a blocked client's request run again (see [`RunMode`]).
pub fn execute_as(
    srv: &ServerState,
    client: &mut Client,
    args: &Args<'_>,
    out: &mut Vec<u8>,
    now_ms: u64,
    mode: RunMode,
) -> Outcome {
    let base = table::lookup(args.get(0));
    execute_looked_up(srv, client, args, base, out, now_ms, mode)
}

/// [`execute_as`] for a request whose name the caller looked up already (`base`: what
/// `table::lookup(args.get(0))` returned), so the request path looks it up once.
pub fn execute_looked_up(
    srv: &ServerState,
    client: &mut Client,
    args: &Args<'_>,
    base: Option<&'static Spec>,
    out: &mut Vec<u8>,
    now_ms: u64,
    mode: RunMode,
) -> Outcome {
    debug_assert!(
        base.map(std::ptr::from_ref) == table::lookup(args.get(0)).map(std::ptr::from_ref),
        "the request's name was looked up"
    );
    // A shard kept locked since this thread's last command serves this one only if it is this
    // command's (the next of a pipeline on one key); otherwise it is given up before anything
    // here waits.
    let sticky = may_keep_shard(srv, base, args, mode);
    // A pipeline's data commands leave their effects queued for one append at the end of the
    // batch (`effects::flush_deferred`); anything else appends them first, as it may read the
    // stream's offset or the client's.
    let defer = client.repl.defer_effects
        && client.repl.deferred < effects::DEFERRED_COMMANDS_MAX
        && base.is_some_and(effects::deferrable);
    if !defer {
        effects::flush_deferred(srv, client, now_ms);
    }
    if shoal_keyspace::sticky::holding() && !(sticky && srv.ks.holds_sticky(key_slot(args.get(1))))
    {
        shoal_keyspace::sticky::release();
    }
    // While a script runs, a request waits for it below `busy-reply-threshold` (asleep on the
    // gate the script holds, below), and past it is refused `-BUSY` or runs without the gate
    // (`ALLOW_BUSY`), as in Redis.
    let past_threshold = || srv.scripts.busy.past_threshold(srv);
    if past_threshold() {
        // A script about to take the gate waits for every thread's hold: this thread's sticky
        // one is given up here, or the script would wait for it while this request is refused.
        srv.gate.release_thread();
        match scripting::busy_admission(srv, args) {
            scripting::BusyAdmission::Proceed => {}
            scripting::BusyAdmission::Wait => return Outcome::Paused,
            scripting::BusyAdmission::Refuse(spec, e) => {
                reject(srv, client, Rejection::new(spec, e), out);
                return Outcome::Done;
            }
            scripting::BusyAdmission::Ungated => {
                let asking = std::mem::take(&mut client.cluster.asking);
                match admit(srv, client, args, base, now_ms, asking) {
                    Ok(spec) => {
                        run_command(srv, client, spec, args, out, now_ms, mode, None);
                    }
                    Err(r) => reject(srv, client, r, out),
                }
                return Outcome::Done;
            }
        }
    }
    // Another thread's batch of scripts holds the gate: a connection waits for it as a task,
    // so this thread serves its other connections or parks (see `ExecGate`).
    if client.gate_wait_as_task && mode == RunMode::Normal && srv.gate.batch_held_elsewhere() {
        return Outcome::GateWait;
    }
    // A hot shard another worker claims: the connection moves there rather than fight for the
    // lock (once per request; see `shoal_keyspace::claim`).
    if srv.ks.claims().any()
        && client.gate_wait_as_task
        && mode == RunMode::Normal
        && !std::mem::take(&mut client.claim_waited)
        && !client.tx.in_multi()
        && one_key_at_1(base, args)
    {
        let shard = srv.ks.shard_of(key_slot(args.get(1)));
        if srv.ks.claims().claimed_elsewhere(shard) {
            return Outcome::ShardWait(shard);
        }
    }
    // Held for the whole request (admission may evict), so nothing of it runs during an EXEC.
    // A script holds the gate for as long as it runs (a batch of them, until its connection's
    // batch ends): the request's thread sleeps on the gate meanwhile, as Redis serves nothing
    // during a script, unless the script passes `busy-reply-threshold`; then the request waits
    // as a paused one (retried by the connection loop, which then refuses it `-BUSY`) and its
    // thread serves its other connections.
    let Some(gate) = srv.gate.shared_unless(past_threshold) else {
        return Outcome::Paused;
    };
    // `ASKING` holds for the one command after it.
    let asking = std::mem::take(&mut client.cluster.asking);
    let spec = match admit(srv, client, args, base, now_ms, asking) {
        Ok(spec) => spec,
        Err(r) if r.paused => {
            client.cluster.asking = asking;
            return Outcome::Paused;
        }
        Err(r) => {
            reject(srv, client, r, out);
            return Outcome::Done;
        }
    };
    // Keys evicted to admit it: their events, and their invalidations (to this client too), go
    // out before its reply, as Redis evicts before it runs a command.
    if srv.maxmemory() != 0 {
        notify::publish_pending(srv, now_ms);
        if client.handle.mailbox.has_pending() {
            client.handle.mailbox.drain_into(out, MAILBOX_DRAIN_BYTES);
        }
    }
    if client.tx.in_multi() && !spec.has(flag::TX_CONTROL) {
        multi::queue(srv, client, spec, args, out);
        return Outcome::Done;
    }
    if let Some(fetch) = tier::cold_keys(srv, client, spec, args) {
        client.cluster.asking = asking;
        return Outcome::Fetch(Box::new(fetch));
    }
    // A deferred command of one key may append its write's effect at once, under its shard's
    // lock, when nothing of that shard waits in its queue (`shoal_keyspace::write_log`): its
    // end is drained with the queues at the end of the batch.
    let direct =
        (defer && one_key_at_1(Some(spec), args)).then(shoal_keyspace::write_log::direct_scope);
    let outcome = run_command(srv, client, spec, args, out, now_ms, mode, Some(gate));
    drop(direct);
    // What this command wrote (and any key it expired or evicted) goes to the replication stream
    // before the reply is sent, so WAIT and the sync strategy can wait for its offset. For EXEC,
    // that is everything its commands wrote, as one batch.
    if defer {
        client.repl.deferred += 1;
    } else if let Some(offset) = effects::emit_logged(srv, now_ms) {
        client.repl.last_write_offset = offset;
    }
    notify::publish_pending_from(srv, now_ms, Some(client.handle.id));
    outcome
}

/// Whether a request may lock its key's shard so that the thread keeps it for the next commands
/// of the connection's pipeline (`shoal_keyspace::sticky`): a command of a [`SHARD_KEEPING`]
/// group with one key, at argument 1, run normally by a runtime worker (its holds end before it
/// waits or goes idle), on a node whose requests take no lock that is held by others while they
/// lock shards (cluster routing and slot moves, the disk tier's store). Everything else a kept
/// shard may meet gives it up first (the exec gate, the configuration's lock, eviction, a lock of
/// another shard).
fn may_keep_shard(
    srv: &ServerState,
    base: Option<&'static Spec>,
    args: &Args<'_>,
    mode: RunMode,
) -> bool {
    base.is_some_and(|spec| SHARD_KEEPING.contains(&spec.group))
        && one_key_at_1(base, args)
        && mode == RunMode::Normal
        && srv.cluster.is_none()
        && !srv.ks.tiered()
        && multi::ExecGate::sticky_thread()
}

/// Whether the request names one key, at argument 1 (`GET k`, `LPUSH k v`, `ZADD k s m`).
#[inline]
fn one_key_at_1(base: Option<&'static Spec>, args: &Args<'_>) -> bool {
    use keyspec::{BeginSearch, FindKeys, KeySpec};
    base.is_some_and(|spec| {
        matches!(
            spec.keys,
            [KeySpec {
                begin_search: BeginSearch::Index(1),
                find_keys: FindKeys::Range { last_key: 0, .. },
                ..
            }]
        ) && spec.subcommands.is_empty()
            && spec.key_finder.is_none()
    }) && args.len() >= 2
}

/// The command groups whose commands keep their shard locked for the next command of a
/// pipeline on it (see `may_keep_shard`). A sorted set's write walks a skip list: O(log N) cache
/// misses under the lock, long against a hand-over of the lock between workers, so a pipeline
/// of them on one hot key runs faster without hand-overs (`bench/ab`, ZADD P16 on one key, two
/// workers: ×1.29). A command whose work under the lock is short (HSET, SADD, LPUSH: a hash
/// probe or a list's head) lost more to the serialised parse and reply work of the pipeline than
/// it saved (×0.78–0.89 with every group keeping), so those unlock after each command. A
/// HyperLogLog's PFADD hashes each element and updates a register of a 12 KB dense value: one
/// counter that every client feeds (PFADD P16 on one key, two workers, 4 interleaved runs each:
/// 0.90–1.10M → 1.17–1.30M req/s, 0.81–1.01 → 0.71–0.82 µs of server CPU per request).
pub const SHARD_KEEPING: &[table::Group] = &[
    table::Group::SortedSet,
    table::Group::Geo,
    table::Group::HyperLogLog,
];

/// Whether a request counts as a write for CLIENT PAUSE WRITE: by its flags; EXEC when a queued
/// command does; a script command by its script's declared flags (see
/// [`scripting::pause_counts_as_write`]).
pub fn pause_counts_as_write(
    srv: &ServerState,
    client: &Client,
    spec: Option<&'static Spec>,
    args: &Args<'_>,
) -> bool {
    match spec {
        // Refused anyway (unknown, wrong arity): answered at once, as Redis checks these first.
        None => false,
        Some(s) if !s.arity_ok(args.len()) => false,
        Some(s) if s.has(flag::TX_EXEC) => client.tx.queued_may_replicate(),
        Some(s) => scripting::pause_counts_as_write(srv, s, args),
    }
}

/// Pub/sub bytes moved from a client's mailbox into its output at once before a reply (the rest
/// follows between commands).
const MAILBOX_DRAIN_BYTES: usize = 64 * 1024;

/// Why a request was refused before running.
struct Rejection {
    spec: Option<&'static Spec>,
    error: ReplyError,
    /// Not refused: a request for a paused slot, to run again once the pause ends.
    paused: bool,
}

impl Rejection {
    fn new(spec: Option<&'static Spec>, error: ReplyError) -> Self {
        Rejection {
            spec,
            error,
            paused: false,
        }
    }
}

/// Admission: name, subcommand, arity, auth, read-only replica, memory, pub/sub context, MULTI
/// restrictions, in Redis's order. Reads flags only: what runs at once inside MULTI or while
/// subscribed is a flag in the table (`TX_CONTROL`, `SUBSCRIBED_OK`, ...), never a name.
fn admit(
    srv: &ServerState,
    client: &mut Client,
    args: &Args<'_>,
    base: Option<&'static Spec>,
    now_ms: u64,
    asking: bool,
) -> Result<&'static Spec, Rejection> {
    let Some(mut spec) = base else {
        return Err(Rejection::new(None, unknown_command(args)));
    };
    // A container with a handler of its own (COMMAND) runs it when called bare.
    if !spec.subcommands.is_empty() && (args.len() >= 2 || spec.handler.is_none()) {
        if args.len() < 2 {
            return Err(Rejection::new(
                Some(spec),
                err!("wrong number of arguments for '{}' command", spec.name),
            ));
        }
        match spec.find_sub(args.get(1)) {
            Some(sub) => spec = sub,
            None => {
                // No command to count it against (Redis counts it nowhere either); EXEC has no
                // subcommands, so `reject` needs no spec here.
                return Err(Rejection::new(
                    None,
                    err!(
                        "unknown subcommand '{}'. Try {} HELP.",
                        String::from_utf8_lossy(args.get(1))
                            .chars()
                            .take(128)
                            .collect::<String>(),
                        spec.name.to_ascii_uppercase()
                    ),
                ));
            }
        }
    }
    // The spec's address identifies it (subcommands too) at the cost of one store.
    client
        .handle
        .last_cmd
        .store(spec as *const Spec as usize, Relaxed);
    if !spec.arity_ok(args.len()) {
        return Err(Rejection::new(
            Some(spec),
            err!("wrong number of arguments for '{}' command", spec.name),
        ));
    }
    if !client.authenticated && !spec.has(flag::NO_AUTH) && srv.hot.requirepass_set.load(Relaxed) {
        return Err(Rejection::new(Some(spec), ReplyError::NoAuth));
    }
    if let Err(d) = acl::check_client(srv, client, spec, args) {
        let e = acl::denied(srv, client, spec, args, d, client.tx.in_multi(), now_ms);
        return Err(Rejection::new(Some(spec), e));
    }
    // Cluster mode: a request whose keys are not served here is redirected, before any other
    // check (a write to a replica gets MOVED to the primary, not READONLY).
    if let Some(cl) = &srv.cluster {
        let routed = cluster::route_request(srv, cl, client, spec, args, asking, now_ms)
            .map_err(|e| Rejection::new(Some(spec), e))?;
        if routed == cluster::Routed::Paused {
            return Err(Rejection {
                paused: true,
                ..Rejection::new(Some(spec), ReplyError::TryAgain)
            });
        }
    }
    if spec.has(flag::WRITE) && srv.repl.is_replica() && srv.hot.replica_read_only.load(Relaxed) {
        return Err(Rejection::new(Some(spec), ReplyError::ReadOnly));
    }
    // `min-replicas-to-write`: a primary without enough good replicas refuses writes (EXEC too
    // when it would run one).
    if (spec.has(flag::WRITE) || (spec.has(flag::TX_EXEC) && client.tx.queued_write()))
        && !good_replicas_ok(srv, now_ms)
    {
        return Err(Rejection::new(Some(spec), ReplyError::NoReplicas));
    }
    // `READONLY MAXLAG ms`: reads only while this replica is at most that far behind.
    if let Some(max) = client.cluster.maxlag_ms
        && spec.has(flag::READONLY)
    {
        maxlag::check(srv, max, now_ms).map_err(|e| Rejection::new(Some(spec), e))?;
    }
    // Inside MULTI every queued command counts as one that needs memory (the queue grows), and
    // EXEC does when it would run one.
    let needs_memory = spec.has(flag::DENYOOM)
        || (client.tx.in_multi() && !spec.has(flag::TX_OOM_EXEMPT))
        || (spec.has(flag::TX_EXEC) && client.tx.queued_denyoom());
    if needs_memory {
        if !ensure_memory(srv, now_ms) {
            return Err(Rejection::new(Some(spec), ReplyError::Oom));
        }
    } else {
        evict_before_command(srv, now_ms);
    }
    if client.proto == shoal_resp::Protocol::Resp2
        && client.subs.count() > 0
        && !spec.has(flag::SUBSCRIBED_OK)
    {
        return Err(Rejection::new(
            Some(spec),
            err!(
                "Can't execute '{}': only (P|S)SUBSCRIBE / (P|S)UNSUBSCRIBE / PING / QUIT / RESET are allowed in this context",
                spec.name
            ),
        ));
    }
    // A monitor is a replica of sorts to Redis: it may not touch keys.
    if client.monitor && spec.has(flag::WRITE | flag::READONLY) {
        return Err(Rejection::new(
            Some(spec),
            ReplyError::err_static("Replica can't interact with the keyspace"),
        ));
    }
    if client.tx.in_multi() && spec.has(flag::NO_MULTI) {
        return Err(Rejection::new(
            Some(spec),
            ReplyError::err_static("Command not allowed inside a transaction"),
        ));
    }
    if spec.handler.is_none() {
        return Err(Rejection::new(
            Some(spec),
            ReplyError::err_static("command has no handler"),
        ));
    }
    Ok(spec)
}

/// Replies a rejection. Inside MULTI it also dooms the transaction (EXEC will reply
/// `-EXECABORT`); a rejected EXEC itself discards the transaction and says why, as Redis does.
fn reject(srv: &ServerState, client: &mut Client, r: Rejection, out: &mut Vec<u8>) {
    if r.error == ReplyError::Oom {
        srv.stats.oom_rejections.fetch_add(1, Relaxed);
    }
    if let Some(spec) = r.spec {
        srv.cmdstats.reject(srv.gate.thread_slot(), spec);
    }
    let error = if r.spec.is_some_and(|s| s.has(flag::TX_EXEC)) {
        multi::discard(srv, client);
        // A cluster redirect of EXEC is sent as it is, so the client follows it (Redis does).
        if r.error.is_cluster_redirect() {
            r.error
        } else {
            ReplyError::ExecAbort(Some(Box::new(r.error)))
        }
    } else {
        client.tx.fail();
        r.error
    };
    srv.stats.error_reply(&error);
    error.write_to(&mut ReplyWriter::new(out, client.proto));
}

/// Runs an admitted command: the handler (holding the exec gate shared, or inside EXEC, which
/// holds it alone: `gate` is `None`), then wake-ups for clients blocked on the keys it wrote,
/// counters and the slow log.
#[allow(clippy::too_many_arguments)]
fn run_command<'a>(
    srv: &'a ServerState,
    client: &mut Client,
    spec: &'static Spec,
    args: &Args<'_>,
    out: &mut Vec<u8>,
    now_ms: u64,
    mode: RunMode,
    gate: Option<multi::GateShared<'a>>,
) -> Outcome {
    let in_exec = gate.is_none();
    // Inside EXEC (or a script) commands lock plainly: the gate's holder runs them all.
    let sticky = !in_exec && may_keep_shard(srv, Some(spec), args, mode);
    let Some(handler) = spec.handler else {
        let e = ReplyError::err_static("command has no handler");
        srv.stats.error_reply(&e);
        e.write_to(&mut ReplyWriter::new(out, client.proto));
        return Outcome::Done;
    };
    let reply_start = out.len();
    // Every command is timed (`INFO commandstats`; the clock is a few nanoseconds).
    let started = (srv.clock.stamp)();
    let mut failed = false;
    let proto = client.proto;
    let mut ctx = Ctx {
        srv,
        client,
        out: ReplyWriter::new(out, proto),
        now_ms,
        version: None,
        gate,
        mode,
        in_exec,
        block: None,
        paused: false,
        sticky,
        error_counted: false,
    };
    cache_lease::before_write(srv, spec, args);
    // A script is shown before the commands it runs, as Redis feeds EVAL and FCALL first.
    if spec.has(flag::SKIP_MONITOR) && srv.monitors.active() && mode == RunMode::Normal {
        monitor::feed(srv, ctx.client, spec, args);
    }
    if let Err(e) = handler(&mut ctx, args) {
        failed = true;
        if !ctx.error_counted {
            srv.stats.error_reply(&e);
        }
        // A handler that failed after writing part of a reply must not leave it half-written.
        ctx.out.buf.truncate(reply_start);
        e.write_to(&mut ctx.out);
        ctx.block = None;
    }
    drop(ctx.gate.take());
    if ctx.paused {
        return Outcome::Paused;
    }
    // Before any blocked client is woken: its events follow this command's.
    notify::publish_pending_from(srv, now_ms, Some(ctx.client.handle.id));
    let block = ctx.block.take();
    let client = ctx.client;
    tracking::after_command(srv, client, spec, args, now_ms);
    repair::after_read(srv, client.db, spec, args);
    // A blocked command is shown once, when it is first run (a script, before it runs: below).
    if srv.monitors.active() && mode == RunMode::Normal && !spec.has(flag::SKIP_MONITOR) {
        monitor::feed(srv, client, spec, args);
    }
    if spec.has(flag::WRITE) && block.is_none() {
        if srv.blocking.has_waiters() {
            blocking::signal_written(srv, spec, args);
        }
        if !failed {
            srv.persist.changes.add(srv.gate.thread_slot(), 1);
        }
    }
    // A blocked command counts once, when it is first run.
    if mode == RunMode::Normal {
        srv.stats
            .total_commands_processed
            .add(srv.gate.thread_slot(), 1);
    }
    let us = (srv.clock.elapsed_us)(started);
    // A command that blocks counts once, when it replies (as Redis counts it).
    if block.is_none() {
        srv.cmdstats
            .record(srv.gate.thread_slot(), spec, cmdstats::Call { us, failed });
    }
    if srv.hot.slowlog_enabled.load(Relaxed) || srv.hot.latency_threshold_ms.load(Relaxed) > 0 {
        server::record_slow(srv, client, spec, args, us, now_ms);
    }
    match block {
        Some(b) => Outcome::Block(b),
        None => Outcome::Done,
    }
}

/// Runs one queued command of a transaction (EXEC holds the exec gate alone).
pub(crate) fn run_in_exec(
    srv: &ServerState,
    client: &mut Client,
    spec: &'static Spec,
    args: &Args<'_>,
    out: &mut Vec<u8>,
    now_ms: u64,
) {
    run_command(srv, client, spec, args, out, now_ms, RunMode::Normal, None);
}

/// Releases what a closing connection holds: its transaction and watched keys, its
/// subscriptions. (A blocked client's wait is released by the connection loop's guard.)
pub fn client_closed(srv: &ServerState, client: &mut Client) {
    if client.cluster.import.is_some() {
        let now_ms = (srv.clock.unix_us)() / 1000;
        migration::connection_closed(srv, client, now_ms);
    }
    multi::discard(srv, client);
    pubsub::unsubscribe_all(srv, client);
    srv.tracking.disable(srv, client.handle.id);
    if client.monitor {
        srv.monitors.remove(&client.handle);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    /// Runs commands against a fresh state and returns the raw replies.
    pub(crate) fn run(cmds: &[&[&str]]) -> Vec<String> {
        let srv = ServerState::new(config::Config::default(), 1_000_000, 7, Hooks::default());
        run_on(&srv, cmds)
    }

    /// Runs commands against `srv` as one client and returns the raw replies.
    pub(crate) fn run_on(srv: &ServerState, cmds: &[&[&str]]) -> Vec<String> {
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
                execute(srv, &mut c, &o.args(), &mut out, 1_000_000);
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
            assert!(!s.has(flag::WRITE) || !s.has(flag::READONLY), "{}", s.name);
            for sub in s.subcommands {
                assert!(
                    sub.name.starts_with(&format!("{}|", s.name)),
                    "{}",
                    sub.name
                );
            }
        }
    }

    /// Every command and subcommand, for checks over the whole table.
    fn every_spec() -> impl Iterator<Item = &'static Spec> {
        table::all()
            .iter()
            .flat_map(|s| std::iter::once(*s).chain(s.subcommands.iter()))
    }

    #[test]
    fn movablekeys_is_what_redis_derives_from_the_key_specs() {
        for s in every_spec() {
            let (_, movable) = keyspec::legacy_range(s.keys);
            assert_eq!(s.has(flag::MOVABLEKEYS), movable, "{}", s.name);
        }
    }

    #[test]
    fn key_specs_are_well_formed() {
        use table::{BeginSearch, FindKeys, key};
        for s in every_spec() {
            for ks in s.keys {
                let usage = ks.flags & (key::RO | key::RW | key::OW | key::RM);
                // A `not_key` spec (a shard channel) names no key, so no use of one.
                let want = if ks.flags & key::NOT_KEY != 0 { 0 } else { 1 };
                assert_eq!(usage.count_ones(), want, "{}: one of RO/RW/OW/RM", s.name);
                if let BeginSearch::Index(i) = ks.begin_search {
                    assert!(i >= 1, "{}", s.name);
                }
                match ks.find_keys {
                    FindKeys::Range { step, .. } | FindKeys::Keynum { step, .. } => {
                        assert!(step >= 1, "{}", s.name)
                    }
                    FindKeys::Unknown => {}
                }
                assert_eq!(
                    ks.flags & key::VARIABLE_FLAGS != 0,
                    s.key_flags.is_some(),
                    "{}: VARIABLE_FLAGS needs key_flags",
                    s.name
                );
            }
            // Wake-ups skip read-only keys, so a write must name what it writes; a read-only
            // command writes nothing, unless its key spec says why (PFCOUNT stores its estimate
            // in the value, and Redis's table marks that key RW with a note).
            // XREADGROUP is the one exception, as in Redis's table: it writes only group state
            // (PEL, last ID), which can serve no waiter, and its keys are marked RO.
            if s.has(flag::WRITE) && !s.keys.is_empty() && s.name != "xreadgroup" {
                assert!(s.keys.iter().any(|k| k.flags & key::RO == 0), "{}", s.name);
            }
            if s.has(flag::READONLY) {
                assert!(
                    s.keys
                        .iter()
                        .all(|k| k.flags & key::RO != 0 || !k.notes.is_empty()),
                    "{}",
                    s.name
                );
            }
        }
    }

    #[test]
    fn shoal_commands_name_their_keys() {
        use table::key::*;
        let keys = |req: &[&str]| {
            let o = OwnedArgs::new(req.iter());
            let spec = table::lookup(req[0].as_bytes()).expect("command");
            keyspec::keys(spec, &o.args()).map(|k| k.iter().map(|k| (k.pos, k.flags)).collect())
        };
        assert_eq!(keys(&["getver", "k"]), Ok(vec![(1, RO | ACCESS)]));
        assert_eq!(
            keys(&["setifver", "k", "7", "v"]),
            Ok(vec![(1, RW | UPDATE)])
        );
        assert_eq!(
            keys(&["setifnewer", "k", "7", "v", "EX", "5"]),
            Ok(vec![(1, RW | UPDATE)])
        );
        assert_eq!(keys(&["delifver", "k", "7"]), Ok(vec![(1, RW | DELETE)]));
        assert_eq!(
            keys(&["getlease", "k", "PX", "5"]),
            Ok(vec![(1, RW | ACCESS)])
        );
        assert_eq!(
            keys(&["setlease", "k", "7", "v", "PX", "5", "STALE", "9"]),
            Ok(vec![(1, OW | UPDATE)])
        );
        assert_eq!(
            keys(&["setstale", "k", "v", "PX", "5", "STALE", "9"]),
            Ok(vec![(1, OW | UPDATE)])
        );
        assert_eq!(
            keys(&["repairput", "k", "7", "-1", "payload"]),
            Ok(vec![(1, OW | UPDATE)])
        );
        assert_eq!(keys(&["repairdel", "k"]), Ok(vec![(1, RM | DELETE)]));
        for no_keys in [
            "slotdigest",
            "slotkeys",
            "durability",
            "activestate",
            "activeslot",
            "activemerge",
        ] {
            assert!(!keyspec::has_keys(
                table::lookup(no_keys.as_bytes()).unwrap()
            ));
        }
    }

    #[test]
    fn set_key_flags_follow_the_get_option() {
        use table::key::*;
        let flags = |req: &[&str]| {
            let o = OwnedArgs::new(req.iter());
            let k = keyspec::keys(table::lookup(b"set").unwrap(), &o.args()).unwrap();
            k.iter().map(|k| k.flags).collect::<Vec<_>>()
        };
        assert_eq!(flags(&["set", "k", "v"]), [OW | UPDATE]);
        assert_eq!(
            flags(&["set", "k", "v", "NX", "get"]),
            [RW | ACCESS | UPDATE]
        );
        // Only from the options on: a value spelled "get" is a value.
        assert_eq!(flags(&["set", "k", "get"]), [OW | UPDATE]);
    }

    /// Admission and dispatch read flags: no rule in these files compares a command's name.
    #[test]
    fn admission_never_matches_command_names() {
        let sources = [
            ("lib.rs", include_str!("lib.rs")),
            ("multi.rs", include_str!("multi.rs")),
            ("pubsub.rs", include_str!("pubsub.rs")),
            ("blocking.rs", include_str!("blocking.rs")),
            ("server.rs", include_str!("server.rs")),
        ];
        // Split so this test's own text does not match.
        let patterns = [
            ["spec.name", " =="].concat(),
            ["matches!(spec", ".name"].concat(),
            ["spec.name", ".starts_with"].concat(),
        ];
        for (file, src) in sources {
            for p in &patterns {
                assert!(!src.contains(p.as_str()), "{file} matches names: {p}");
            }
        }
    }
}
