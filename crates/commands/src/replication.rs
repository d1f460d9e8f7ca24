//! Replication and verification commands: REPLICAOF/SLAVEOF, ROLE, REPLCONF, PSYNC/SYNC, WAIT,
//! FAILOVER, SAVE/BGSAVE/LASTSAVE, and shoal's own DURABILITY (per-connection write strategy),
//! SLOTDIGEST, SLOTKEYS, REPAIRPUT and REPAIRDEL (used by `shoal verify`).
//!
//! Commands here only change state and record requests; the network work (links, snapshots, the
//! waiting of WAIT and of the `sync` strategy) is done by the server and `shoal-replication`, which
//! read `Client::repl` after each batch.

use crate::err;
use crate::error::ReplyError;
use std::sync::atomic::Ordering::Relaxed;

use shoal_keyspace::key_slot;

use crate::args::{ERR_NOT_INTEGER, ERR_SYNTAX};
use crate::repl::{Role, Strategy};
use crate::state::Action;
use crate::table::{Group, KeySpec, Spec, flag::*, key::*};
use crate::{Args, CmdResult, Ctx};

const SRV: Group = Group::Server;
const SH: Group = Group::Shoal;

pub static COMMANDS: &[Spec] = &[
    Spec {
        name: "durability",
        arity: -1,
        flags: FAST | NO_AUTH_NONE,
        group: SH,
        since: "0.1.0",
        summary: "Sets this connection's write strategy: async, sync or the server default.",
        handler: Some(durability),
        ..Spec::DEFAULT
    },
    Spec {
        name: "failover",
        arity: -1,
        flags: ADMIN | NOSCRIPT | STALE,
        group: SRV,
        since: "6.2.0",
        summary: "Starts a coordinated failover from a primary to one of its replicas.",
        handler: Some(failover),
        ..Spec::DEFAULT
    },
    Spec {
        name: "lastsave",
        arity: 1,
        flags: LOADING | STALE | FAST,
        group: SRV,
        since: "1.0.0",
        summary: "Returns the Unix timestamp of the last successful save to disk.",
        tips: &["nondeterministic_output"],
        handler: Some(lastsave),
        type_categories: Some(&["@admin", "@dangerous"]),
        ..Spec::DEFAULT
    },
    Spec {
        name: "psync",
        arity: -3,
        flags: ADMIN | NOSCRIPT | NO_ASYNC_LOADING | NO_MULTI,
        group: SRV,
        since: "2.8.0",
        summary: "An internal command used in replication.",
        handler: Some(psync),
        ..Spec::DEFAULT
    },
    Spec {
        name: "repairdel",
        arity: 2,
        flags: ADMIN | STALE,
        keys: &[KeySpec::at(1, RM | DELETE)],
        group: SH,
        since: "0.1.0",
        summary: "Deletes a key whatever its version (verify --repair; allowed on replicas).",
        handler: Some(repairdel),
        ..Spec::DEFAULT
    },
    Spec {
        name: "repairput",
        arity: 5,
        flags: ADMIN | STALE,
        keys: &[KeySpec::at(1, OW | UPDATE)],
        group: SH,
        since: "0.1.0",
        summary: "Stores a key with a given version, expiry and DUMP payload (verify --repair; allowed on replicas).",
        handler: Some(repairput),
        ..Spec::DEFAULT
    },
    Spec {
        name: "replconf",
        arity: -1,
        flags: ADMIN | NOSCRIPT | LOADING | STALE | ALLOW_BUSY,
        group: SRV,
        since: "3.0.0",
        summary: "An internal command for configuring the replication stream.",
        handler: Some(replconf),
        ..Spec::DEFAULT
    },
    Spec {
        name: "replicaof",
        arity: 3,
        flags: ADMIN | NOSCRIPT | STALE | NO_ASYNC_LOADING,
        group: SRV,
        since: "5.0.0",
        summary: "Configures a server as replica of another, or promotes it to a master.",
        handler: Some(replicaof),
        ..Spec::DEFAULT
    },
    Spec {
        name: "role",
        arity: 1,
        flags: NOSCRIPT | LOADING | STALE | FAST,
        group: SRV,
        since: "2.8.12",
        summary: "Returns the replication role.",
        handler: Some(role),
        type_categories: Some(&["@admin", "@dangerous"]),
        ..Spec::DEFAULT
    },
    Spec {
        name: "save",
        arity: 1,
        flags: ADMIN | NOSCRIPT | NO_ASYNC_LOADING | NO_MULTI,
        group: SRV,
        since: "1.0.0",
        summary: "Synchronously saves the database(s) to disk.",
        handler: Some(save),
        ..Spec::DEFAULT
    },
    Spec {
        name: "bgsave",
        arity: -1,
        flags: ADMIN | NOSCRIPT | NO_ASYNC_LOADING,
        group: SRV,
        since: "1.0.0",
        summary: "Asynchronously saves the database(s) to disk.",
        handler: Some(bgsave),
        ..Spec::DEFAULT
    },
    Spec {
        name: "slaveof",
        arity: 3,
        flags: ADMIN | NOSCRIPT | STALE | NO_ASYNC_LOADING,
        group: SRV,
        since: "1.0.0",
        summary: "Sets a Redis server as a replica of another, or promotes it to being a master.",
        handler: Some(replicaof),
        ..Spec::DEFAULT
    },
    Spec {
        name: "slotdigest",
        arity: -2,
        flags: READONLY | ADMIN | STALE,
        group: SH,
        since: "0.1.0",
        summary: "Order-independent digests of slots (key, value, type, version, expiry).",
        handler: Some(slotdigest),
        ..Spec::DEFAULT
    },
    Spec {
        name: "slotkeys",
        arity: -2,
        flags: READONLY | ADMIN | STALE,
        group: SH,
        since: "0.1.0",
        summary: "Lists a slot's keys with their versions.",
        handler: Some(slotkeys),
        ..Spec::DEFAULT
    },
    Spec {
        name: "sync",
        arity: 1,
        flags: ADMIN | NOSCRIPT | NO_ASYNC_LOADING | NO_MULTI,
        group: SRV,
        since: "1.0.0",
        summary: "An internal command used in replication.",
        handler: Some(sync),
        ..Spec::DEFAULT
    },
    Spec {
        name: "wait",
        arity: 3,
        flags: NOSCRIPT,
        group: Group::Generic,
        since: "3.0.0",
        summary: "Blocks until the asynchronous replication of all preceding write commands sent by the connection is completed.",
        tips: &["request_policy:all_shards", "response_policy:agg_min"],
        handler: Some(wait),
        type_categories: Some(&["@connection"]),
        ..Spec::DEFAULT
    },
];

/// No flag beyond FAST: DURABILITY needs authentication like any data command.
const NO_AUTH_NONE: u32 = 0;

fn replicaof(ctx: &mut Ctx<'_>, args: &Args<'_>) -> CmdResult {
    let repl = &ctx.srv.repl;
    if args.is(1, "NO") && args.is(2, "ONE") {
        promote(ctx.srv);
        ctx.out.ok();
        return Ok(());
    }
    let host = args.str_lossy(1);
    let port = match args.i64(2) {
        Ok(p) if (0..=65535).contains(&p) => p as u16,
        _ => return Err(ReplyError::err_static("Invalid master port")),
    };
    if ctx.srv.active.is_on() {
        // A member's stream carries merge effects a replica cannot apply, and a member made a
        // replica would drop its own writes: leave the group first.
        return Err(ReplyError::err_static(
            "REPLICAOF not allowed on an active-active member (clear active-peers first)",
        ));
    }
    let target = Role::Replica {
        host: host.clone(),
        port,
    };
    if repl.role() == target {
        ctx.out.simple("OK Already connected to specified master");
        return Ok(());
    }
    let epoch = repl.become_replica(&ctx.srv.ks, host.clone(), port);
    ctx.client.repl.action = Some(Action::StartLink { host, port, epoch });
    ctx.out.ok();
    Ok(())
}

/// Promotes this replica (REPLICAOF NO ONE): a new replication id, the old one kept as
/// `replid2` so siblings that followed the same primary continue without a full copy.
pub fn promote(srv: &crate::ServerState) -> bool {
    let offset = srv.repl.replica_offset();
    let new_id = crate::state::random_hex40(offset ^ srv.ks.hlc.last() ^ 0x9e37);
    srv.repl.promote(&srv.ks, new_id)
}

fn role(ctx: &mut Ctx<'_>, _args: &Args<'_>) -> CmdResult {
    let repl = &ctx.srv.repl;
    let o = &mut ctx.out;
    match repl.role() {
        Role::Primary => {
            let replicas = repl.replicas();
            o.array(3);
            o.bulk(b"master");
            o.int(repl.offset() as i64);
            o.array(replicas.len());
            for r in replicas {
                o.array(3);
                o.bulk(r.ip.as_bytes());
                o.bulk(r.listening_port.load(Relaxed).to_string().as_bytes());
                o.bulk(r.ack_offset.load(Relaxed).to_string().as_bytes());
            }
        }
        Role::Replica { host, port } => {
            o.array(5);
            o.bulk(b"slave");
            o.bulk(host.as_bytes());
            o.int(port as i64);
            o.bulk(repl.link_state().name().as_bytes());
            o.int(repl.replica_offset() as i64);
        }
    }
    Ok(())
}

fn replconf(ctx: &mut Ctx<'_>, args: &Args<'_>) -> CmdResult {
    if args.len().is_multiple_of(2) {
        return Err(ERR_SYNTAX);
    }
    let mut i = 1;
    while i < args.len() {
        let known = [
            "listening-port",
            "ip-address",
            "capa",
            "ack",
            "getack",
            "rdb-only",
        ]
        .iter()
        .any(|w| args.is(i, w));
        if !known {
            return Err(err!("Unrecognized REPLCONF option: {}", args.str_lossy(i)));
        }
        if args.is(i, "listening-port") {
            let port = args.i64(i + 1)?;
            ctx.client.repl.listening_port = u16::try_from(port).ok();
        }
        i += 2;
    }
    ctx.out.ok();
    Ok(())
}

/// A cluster node that holds nothing it can vouch for (it restarted empty and has held no lease
/// nor finished a sync since) feeds no replica: see `LeaseState::vouches`.
pub const ERR_CANNOT_VOUCH: &str =
    "this node restarted without its data and holds no lease yet; retry later";

fn psync(ctx: &mut Ctx<'_>, args: &Args<'_>) -> CmdResult {
    let offset = args.i64(2).map_err(|_| ERR_NOT_INTEGER)?;
    if ctx
        .srv
        .cluster
        .as_ref()
        .is_some_and(|cl| !cl.lease.vouches.load(std::sync::atomic::Ordering::Relaxed))
    {
        return Err(ReplyError::Other {
            code: "NOTREADY",
            msg: std::borrow::Cow::Borrowed(ERR_CANNOT_VOUCH),
        });
    }
    ctx.client.repl.handoff = Some((args.str_lossy(1), offset));
    Ok(())
}

fn sync(ctx: &mut Ctx<'_>, _args: &Args<'_>) -> CmdResult {
    ctx.client.repl.handoff = Some(("?".into(), -1));
    Ok(())
}

fn wait(ctx: &mut Ctx<'_>, args: &Args<'_>) -> CmdResult {
    let n = args.i64(1)?;
    let timeout = args.i64(2)?;
    if timeout < 0 {
        return Err(ReplyError::err_static("timeout is negative"));
    }
    if ctx.srv.repl.is_replica() {
        return Err(ReplyError::err_static(
            "WAIT cannot be used with replica instances. Please also note that since Redis 4.0 if a replica is configured to be writable (which is not the default) writes to replicas are just local and are not propagated.",
        ));
    }
    let offset = ctx.client.repl.last_write_offset;
    let have = ctx.srv.repl.acked(offset);
    if n <= 0 || have >= n as usize {
        ctx.out.int(have as i64);
        return Ok(());
    }
    // On the node's monotonic clock: a step of the wall clock neither cuts nor stretches it.
    let deadline = if timeout == 0 {
        0
    } else {
        // One millisecond more: the clock counts whole milliseconds, so "now" may be most of
        // one old, and the wait must never end before the whole timeout has passed.
        (ctx.srv.clock.mono_ms)() + timeout as u64 + 1
    };
    ctx.client.repl.wait = Some((offset, n as usize, deadline));
    Ok(())
}

fn durability(ctx: &mut Ctx<'_>, args: &Args<'_>) -> CmdResult {
    match args.len() {
        1 => {
            let s = ctx
                .client
                .repl
                .strategy
                .unwrap_or(if ctx.srv.repl.strategy_sync() {
                    Strategy::Sync
                } else {
                    Strategy::Async
                });
            ctx.out.bulk(s.name().as_bytes());
        }
        2 if args.is(1, "DEFAULT") => {
            ctx.client.repl.strategy = None;
            ctx.out.ok();
        }
        2 => {
            let s = Strategy::parse(&args.str_lossy(1)).ok_or(ERR_SYNTAX)?;
            ctx.client.repl.strategy = Some(s);
            ctx.out.ok();
        }
        _ => return Err(ERR_SYNTAX),
    }
    Ok(())
}

fn failover(ctx: &mut Ctx<'_>, args: &Args<'_>) -> CmdResult {
    // In cluster mode the configuration says who is primary: CLUSTER FAILOVER changes it.
    if ctx.srv.cluster.is_some() {
        return Err(ReplyError::err_static(
            "FAILOVER not allowed in cluster mode. Use CLUSTER FAILOVER command instead.",
        ));
    }
    let mut to = None;
    let mut timeout_ms = 0u64;
    let mut force = false;
    let mut abort = false;
    let mut i = 1;
    while i < args.len() {
        if args.is(i, "TO") && i + 2 < args.len() {
            let port = args.i64(i + 2).map_err(|_| ERR_NOT_INTEGER)?;
            to = Some((args.str_lossy(i + 1), port as u16));
            i += 3;
        } else if args.is(i, "TIMEOUT") && i + 1 < args.len() {
            let t = args.i64(i + 1)?;
            if t <= 0 {
                return Err(ReplyError::err_static(
                    "FAILOVER timeout must be greater than 0",
                ));
            }
            timeout_ms = t as u64;
            i += 2;
        } else if args.is(i, "FORCE") {
            force = true;
            i += 1;
        } else if args.is(i, "ABORT") {
            abort = true;
            i += 1;
        } else {
            return Err(ERR_SYNTAX);
        }
    }
    let f = &ctx.srv.repl.failover;
    if abort {
        if args.len() != 2 {
            return Err(ERR_SYNTAX);
        }
        if !ctx.srv.repl.failing_over() {
            return Err(ReplyError::err_static("No failover in progress."));
        }
        f.abort.store(true, Relaxed);
        ctx.out.ok();
        return Ok(());
    }
    if ctx.srv.repl.is_replica() {
        return Err(ReplyError::err_static(
            "FAILOVER is not valid when server is a replica.",
        ));
    }
    if ctx.srv.repl.replica_count() == 0 {
        return Err(ReplyError::err_static(
            "FAILOVER requires connected replicas.",
        ));
    }
    if force && (to.is_none() || timeout_ms == 0) {
        return Err(ReplyError::err_static(
            "FAILOVER with force option requires both a timeout and target HOST and IP.",
        ));
    }
    if !ctx.srv.repl.begin_failover() {
        return Err(ReplyError::err_static("FAILOVER already in progress."));
    }
    ctx.client.repl.action = Some(Action::Failover(crate::repl::FailoverRequest {
        to,
        timeout_ms,
        force,
    }));
    ctx.out.ok();
    Ok(())
}

// ---- snapshots on disk ----

/// The I/O layer writes the snapshot and then the reply (`+OK` or why it failed).
fn save(ctx: &mut Ctx<'_>, _args: &Args<'_>) -> CmdResult {
    if ctx.srv.persist.saving.load(Relaxed) {
        return Err(ReplyError::err_static(
            "Background save already in progress",
        ));
    }
    ctx.client.repl.action = Some(Action::Save { foreground: true });
    Ok(())
}

fn bgsave(ctx: &mut Ctx<'_>, args: &Args<'_>) -> CmdResult {
    if args.len() > 2 || (args.len() == 2 && !args.is(1, "SCHEDULE")) {
        return Err(ERR_SYNTAX);
    }
    if ctx.srv.persist.saving.load(Relaxed) {
        return Err(ReplyError::err_static(
            "Background save already in progress",
        ));
    }
    ctx.client.repl.action = Some(Action::Save { foreground: false });
    ctx.out.simple("Background saving started");
    Ok(())
}

fn lastsave(ctx: &mut Ctx<'_>, _args: &Args<'_>) -> CmdResult {
    ctx.out
        .int(ctx.srv.persist.last_save_unix_s.load(Relaxed) as i64);
    Ok(())
}

// ---- verification ----

/// Digest of one slot of a database (see `shoal_replication::digest`).
pub fn slot_digest(srv: &crate::ServerState, db: usize, slot: u16, now_ms: u64) -> u64 {
    shoal_replication::digest::slot_digest(&srv.ks, db, slot, now_ms)
}

fn parse_slot(args: &Args<'_>, i: usize) -> Result<u16, ReplyError> {
    match args.i64(i) {
        Ok(s) if (0..shoal_keyspace::SLOTS as i64).contains(&s) => Ok(s as u16),
        _ => Err(ReplyError::err_static("Invalid or out of range slot")),
    }
}

/// `SLOTDIGEST start [end]` → one digest per slot in the range, as decimal strings.
fn slotdigest(ctx: &mut Ctx<'_>, args: &Args<'_>) -> CmdResult {
    let start = parse_slot(args, 1)?;
    let end = if args.len() > 2 {
        parse_slot(args, 2)?
    } else {
        start
    };
    if args.len() > 3 || end < start {
        return Err(ERR_SYNTAX);
    }
    ctx.out.array((end - start) as usize + 1);
    for slot in start..=end {
        let d = slot_digest(ctx.srv, ctx.client.db, slot, ctx.now_ms);
        ctx.out.bulk(d.to_string().as_bytes());
    }
    Ok(())
}

/// `SLOTKEYS slot` → flat array `key, version, key, version, ...`.
fn slotkeys(ctx: &mut Ctx<'_>, args: &Args<'_>) -> CmdResult {
    let slot = parse_slot(args, 1)?;
    if args.len() != 2 {
        return Err(ERR_SYNTAX);
    }
    let mut items = Vec::new();
    {
        let shard = ctx.srv.ks.lock(ctx.srv.ks.shard_of(slot));
        shard.for_each_in_slot(ctx.client.db, slot, ctx.now_ms, |e| {
            items.push((e.key().to_vec(), e.version()));
        });
    }
    ctx.out.array(items.len() * 2);
    for (k, v) in items {
        ctx.out.bulk(&k);
        ctx.out.bulk(v.to_string().as_bytes());
    }
    Ok(())
}

/// `REPAIRPUT key version expire-ms|-1 payload` — force a key's state (primary wins in repair).
fn repairput(ctx: &mut Ctx<'_>, args: &Args<'_>) -> CmdResult {
    let key = args.get(1);
    let version = match args.i64(2) {
        Ok(v) if v >= 0 => v as u64,
        _ => {
            return Err(ReplyError::err_static(
                "version must be a non-negative integer",
            ));
        }
    };
    let expire = match args.i64(3)? {
        -1 => None,
        t if t >= 0 => Some(t as u64),
        _ => return Err(ReplyError::err_static("Invalid TTL value, must be >= 0")),
    };
    let limits = ctx.srv.encoding_limits();
    let entry = crate::keys::restore_value(args.get(4), key, expire, version, &limits)
        .map_err(crate::keys::PayloadError::reply)?;
    ctx.srv.ks.hlc.observe(version);
    let slot = key_slot(key);
    let mut shard = ctx.srv.ks.lock(ctx.srv.ks.shard_of(slot));
    // Forced: the repaired node may hold a newer (diverged) version that must go.
    shard.remove(ctx.client.db, slot, key);
    shard.insert(ctx.client.db, slot, entry, ctx.now_ms);
    drop(shard);
    ctx.out.ok();
    Ok(())
}

fn repairdel(ctx: &mut Ctx<'_>, args: &Args<'_>) -> CmdResult {
    let key = args.get(1);
    let slot = key_slot(key);
    let removed = ctx
        .srv
        .ks
        .lock(ctx.srv.ks.shard_of(slot))
        .remove(ctx.client.db, slot, key)
        .is_some();
    ctx.out.int(removed as i64);
    Ok(())
}
