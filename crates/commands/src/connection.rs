//! Connection commands: PING, ECHO, HELLO, AUTH, SELECT, QUIT, RESET and the CLIENT family.

use crate::err;
use crate::error::ReplyError;
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;

use shoal_resp::Protocol;

use crate::args::{ERR_DB_INDEX, ERR_NOT_INTEGER, ERR_SYNTAX};
use crate::state::{ClientHandle, ReplyMode};
use crate::table::{Group, Spec, flag::*};
use crate::{Args, CmdResult, Ctx};

/// The Redis version whose behaviour shoal matches (reported as `redis_version`).
pub const REDIS_VERSION: &str = "7.0.15";

const CONN: Group = Group::Connection;

pub static COMMANDS: &[Spec] = &[
    Spec {
        name: "auth",
        arity: -2,
        flags: NOSCRIPT | LOADING | STALE | FAST | NO_AUTH | ALLOW_BUSY,
        group: CONN,
        since: "1.0.0",
        summary: "Authenticates the connection.",
        handler: Some(auth),
        ..Spec::DEFAULT
    },
    Spec {
        name: "client",
        arity: -2,
        flags: 0,
        group: CONN,
        since: "2.4.0",
        summary: "A container for client connection commands.",
        subcommands: CLIENT,
        type_categories: Some(&[]),
        ..Spec::DEFAULT
    },
    Spec {
        name: "echo",
        arity: 2,
        flags: LOADING | STALE | FAST,
        group: CONN,
        since: "1.0.0",
        summary: "Returns the given string.",
        handler: Some(echo),
        ..Spec::DEFAULT
    },
    Spec {
        name: "hello",
        arity: -1,
        flags: NOSCRIPT | LOADING | STALE | FAST | NO_AUTH | ALLOW_BUSY,
        group: CONN,
        since: "6.0.0",
        summary: "Handshakes with the server.",
        handler: Some(hello),
        ..Spec::DEFAULT
    },
    Spec {
        name: "ping",
        arity: -1,
        flags: FAST | SUBSCRIBED_OK,
        group: CONN,
        since: "1.0.0",
        summary: "Returns the server's liveliness response.",
        tips: &["request_policy:all_shards", "response_policy:all_succeeded"],
        handler: Some(ping),
        ..Spec::DEFAULT
    },
    Spec {
        name: "quit",
        arity: -1,
        flags: NOSCRIPT
            | LOADING
            | STALE
            | FAST
            | NO_AUTH
            | ALLOW_BUSY
            | TX_CONTROL
            | TX_OOM_EXEMPT
            | SUBSCRIBED_OK,
        group: CONN,
        since: "1.0.0",
        summary: "Closes the connection.",
        handler: Some(quit),
        ..Spec::DEFAULT
    },
    Spec {
        name: "reset",
        arity: 1,
        flags: NOSCRIPT
            | LOADING
            | STALE
            | FAST
            | NO_AUTH
            | ALLOW_BUSY
            | TX_CONTROL
            | TX_OOM_EXEMPT
            | SUBSCRIBED_OK,
        group: CONN,
        since: "6.2.0",
        summary: "Resets the connection.",
        handler: Some(reset),
        ..Spec::DEFAULT
    },
    Spec {
        name: "select",
        arity: 2,
        flags: LOADING | STALE | FAST,
        group: CONN,
        since: "1.0.0",
        summary: "Changes the selected database.",
        handler: Some(select),
        ..Spec::DEFAULT
    },
];

static CLIENT: &[Spec] = &[
    Spec {
        name: "client|caching",
        arity: 3,
        flags: NOSCRIPT | LOADING | STALE,
        group: CONN,
        since: "6.0.0",
        summary: "Instructs the server whether to track the keys in the next request.",
        handler: Some(crate::tracking::client_caching),
        ..Spec::DEFAULT
    },
    Spec {
        name: "client|getredir",
        arity: 2,
        flags: NOSCRIPT | LOADING | STALE,
        group: CONN,
        since: "6.0.0",
        summary: "Returns the client ID to which the connection's tracking notifications are redirected.",
        handler: Some(crate::tracking::client_getredir),
        ..Spec::DEFAULT
    },
    Spec {
        name: "client|tracking",
        arity: -3,
        flags: NOSCRIPT | LOADING | STALE,
        group: CONN,
        since: "6.0.0",
        summary: "Controls server-assisted client-side caching for the connection.",
        handler: Some(crate::tracking::client_tracking),
        ..Spec::DEFAULT
    },
    Spec {
        name: "client|trackinginfo",
        arity: 2,
        flags: NOSCRIPT | LOADING | STALE,
        group: CONN,
        since: "6.2.0",
        summary: "Returns information about server-assisted client-side caching for the connection.",
        handler: Some(crate::tracking::client_trackinginfo),
        ..Spec::DEFAULT
    },
    Spec {
        name: "client|getname",
        arity: 2,
        flags: NOSCRIPT | LOADING | STALE,
        group: CONN,
        since: "2.6.9",
        summary: "Returns the name of the connection.",
        handler: Some(client_getname),
        ..Spec::DEFAULT
    },
    Spec {
        name: "client|help",
        arity: 2,
        flags: LOADING | STALE,
        group: CONN,
        since: "5.0.0",
        summary: "Returns helpful text about the different subcommands.",
        handler: Some(client_help),
        ..Spec::DEFAULT
    },
    Spec {
        name: "client|id",
        arity: 2,
        flags: NOSCRIPT | LOADING | STALE,
        group: CONN,
        since: "5.0.0",
        summary: "Returns the unique client ID of the connection.",
        handler: Some(client_id),
        ..Spec::DEFAULT
    },
    Spec {
        name: "client|info",
        arity: 2,
        flags: NOSCRIPT | LOADING | STALE,
        group: CONN,
        since: "6.2.0",
        summary: "Returns information about the connection.",
        tips: &["nondeterministic_output"],
        handler: Some(client_info),
        ..Spec::DEFAULT
    },
    Spec {
        name: "client|kill",
        arity: -3,
        flags: ADMIN | NOSCRIPT | LOADING | STALE,
        group: CONN,
        since: "2.4.0",
        summary: "Terminates open connections.",
        handler: Some(client_kill),
        ..Spec::DEFAULT
    },
    Spec {
        name: "client|list",
        arity: -2,
        flags: ADMIN | NOSCRIPT | LOADING | STALE,
        group: CONN,
        since: "2.4.0",
        summary: "Lists open connections.",
        tips: &["nondeterministic_output"],
        handler: Some(client_list),
        ..Spec::DEFAULT
    },
    Spec {
        name: "client|no-evict",
        arity: 3,
        flags: ADMIN | NOSCRIPT | LOADING | STALE,
        group: CONN,
        since: "7.0.0",
        summary: "Sets the client eviction mode of the connection.",
        handler: Some(client_no_evict),
        ..Spec::DEFAULT
    },
    Spec {
        name: "client|no-touch",
        arity: 3,
        flags: NOSCRIPT | LOADING | STALE,
        group: CONN,
        since: "7.2.0",
        summary: "Controls whether commands sent by the client affect the LRU/LFU of accessed keys.",
        complexity: "O(1)",
        handler: Some(client_no_touch),
        ..Spec::DEFAULT
    },
    Spec {
        name: "client|reply",
        arity: 3,
        flags: NOSCRIPT | LOADING | STALE,
        group: CONN,
        since: "3.2.0",
        summary: "Instructs the server whether to reply to commands.",
        handler: Some(client_reply),
        ..Spec::DEFAULT
    },
    Spec {
        name: "client|pause",
        arity: -3,
        flags: ADMIN | NOSCRIPT | LOADING | STALE,
        group: CONN,
        since: "3.0.0",
        summary: "Suspends commands processing.",
        handler: Some(client_pause),
        ..Spec::DEFAULT
    },
    Spec {
        name: "client|unpause",
        arity: 2,
        flags: ADMIN | NOSCRIPT | LOADING | STALE,
        group: CONN,
        since: "6.2.0",
        summary: "Resumes processing commands from paused clients.",
        handler: Some(client_unpause),
        ..Spec::DEFAULT
    },
    Spec {
        name: "client|unblock",
        arity: -3,
        flags: ADMIN | NOSCRIPT | LOADING | STALE,
        group: CONN,
        since: "5.0.0",
        summary: "Unblocks a client blocked by a blocking command from a different connection.",
        handler: Some(client_unblock),
        ..Spec::DEFAULT
    },
    Spec {
        name: "client|setinfo",
        arity: 4,
        flags: NOSCRIPT | LOADING | STALE,
        group: CONN,
        since: "7.2.0",
        summary: "Sets information specific to the client or connection.",
        handler: Some(client_setinfo),
        ..Spec::DEFAULT
    },
    Spec {
        name: "client|setname",
        arity: 3,
        flags: NOSCRIPT | LOADING | STALE,
        group: CONN,
        since: "2.6.9",
        summary: "Sets the connection name.",
        handler: Some(client_setname),
        ..Spec::DEFAULT
    },
];

fn ping(ctx: &mut Ctx<'_>, args: &Args<'_>) -> CmdResult {
    // A subscribed RESP2 client gets its pong as a message-shaped array, as in Redis.
    if ctx.client.proto == Protocol::Resp2 && ctx.client.subs.count() > 0 && args.len() <= 2 {
        ctx.out.array(2);
        ctx.out.bulk(b"pong");
        ctx.out
            .bulk(if args.len() == 2 { args.get(1) } else { b"" });
        return Ok(());
    }
    match args.len() {
        1 => ctx.out.simple("PONG"),
        2 => ctx.out.bulk(args.get(1)),
        _ => {
            return Err(ReplyError::err_static(
                "wrong number of arguments for 'ping' command",
            ));
        }
    }
    Ok(())
}

fn echo(ctx: &mut Ctx<'_>, args: &Args<'_>) -> CmdResult {
    ctx.out.bulk(args.get(1));
    Ok(())
}

/// Authenticates the client as `user` if `pass` opens it; a failure is logged (reason `auth`).
fn login(ctx: &mut Ctx<'_>, user: &[u8], pass: &[u8]) -> CmdResult {
    match ctx.srv.acl.authenticate(user, pass) {
        Some(u) => {
            *ctx.client.handle.user.lock().expect("user lock") = u.get().name.clone();
            ctx.client.user = Some(u);
            ctx.client.authenticated = true;
            Ok(())
        }
        None => {
            crate::acl::log_denial(
                ctx.srv,
                ctx.client,
                "auth",
                b"auth".to_vec(),
                user.to_vec(),
                ctx.client.tx.in_multi(),
                ctx.now_ms,
            );
            Err(ReplyError::WrongPass)
        }
    }
}

fn auth(ctx: &mut Ctx<'_>, args: &Args<'_>) -> CmdResult {
    let (user, pass) = match args.len() {
        2 => {
            // Redis's test: the default user has `nopass` (whether or not it is on).
            if ctx.srv.acl.default.get().nopass() {
                return Err(ReplyError::err_static(
                    "AUTH <password> called without any password configured for the default user. Are you sure your configuration is correct?",
                ));
            }
            (&b"default"[..], args.get(1))
        }
        3 => (args.get(1), args.get(2)),
        _ => return Err(ERR_SYNTAX),
    };
    login(ctx, user, pass)?;
    ctx.out.ok();
    Ok(())
}

fn hello(ctx: &mut Ctx<'_>, args: &Args<'_>) -> CmdResult {
    let mut proto = ctx.client.proto;
    let mut i = 1;
    if args.len() >= 2 {
        let v = args.i64(1).map_err(|_| {
            ReplyError::err_static("Protocol version is not an integer or out of range")
        })?;
        proto = match v {
            2 => Protocol::Resp2,
            3 => Protocol::Resp3,
            _ => return Err(ReplyError::NoProto),
        };
        i = 2;
    }
    let mut setname = None;
    while i < args.len() {
        let more = args.len() - i - 1;
        if args.is(i, "AUTH") && more >= 2 {
            login(ctx, args.get(i + 1), args.get(i + 2))?;
            i += 3;
        } else if args.is(i, "SETNAME") && more >= 1 {
            validate_name(args.get(i + 1))?;
            setname = Some(args.get(i + 1));
            i += 2;
        } else {
            return Err(err!("Syntax error in HELLO option '{}'", args.str_lossy(i)));
        }
    }
    if !ctx.client.authenticated && ctx.srv.hot.requirepass_set.load(Relaxed) {
        return Err(ReplyError::NoAuthHello);
    }
    if let Some(n) = setname {
        *ctx.client.handle.name.lock().expect("name lock") = n.to_vec();
    }
    ctx.client.proto = proto;
    ctx.client
        .handle
        .resp
        .store(if proto == Protocol::Resp3 { 3 } else { 2 }, Relaxed);
    ctx.out.proto = proto;
    let o = &mut ctx.out;
    o.map(7);
    o.bulk(b"server");
    o.bulk(b"redis");
    o.bulk(b"version");
    o.bulk(REDIS_VERSION.as_bytes());
    o.bulk(b"proto");
    o.int(if proto == Protocol::Resp3 { 3 } else { 2 });
    o.bulk(b"id");
    o.int(ctx.client.id() as i64);
    // As INFO's `redis_mode` and `role`.
    o.bulk(b"mode");
    o.bulk(if ctx.srv.cluster.is_some() {
        b"cluster".as_slice()
    } else {
        b"standalone"
    });
    o.bulk(b"role");
    o.bulk(if ctx.srv.repl.is_replica() {
        b"replica".as_slice()
    } else {
        b"master"
    });
    o.bulk(b"modules");
    o.array(0);
    Ok(())
}

fn select(ctx: &mut Ctx<'_>, args: &Args<'_>) -> CmdResult {
    let db = args.i64(1).map_err(|_| ERR_NOT_INTEGER)?;
    if ctx.srv.cluster.is_some() && db != 0 {
        return Err(ReplyError::err_static(
            "SELECT is not allowed in cluster mode",
        ));
    }
    if db < 0 || db as usize >= ctx.srv.ks.databases() {
        return Err(ERR_DB_INDEX);
    }
    ctx.client.select(db as usize);
    ctx.out.ok();
    Ok(())
}

fn quit(ctx: &mut Ctx<'_>, _args: &Args<'_>) -> CmdResult {
    ctx.client.close_after_reply = true;
    ctx.out.ok();
    Ok(())
}

fn reset(ctx: &mut Ctx<'_>, _args: &Args<'_>) -> CmdResult {
    crate::multi::discard(ctx.srv, ctx.client);
    ctx.srv.tracking.disable(ctx.srv, ctx.client.handle.id);
    crate::pubsub::unsubscribe_all(ctx.srv, ctx.client);
    if ctx.client.monitor {
        ctx.client.monitor = false;
        ctx.srv.monitors.remove(&ctx.client.handle);
    }
    ctx.client.select(0);
    ctx.client.cluster.maxlag_ms = None;
    ctx.client.proto = Protocol::Resp2;
    ctx.out.proto = Protocol::Resp2;
    ctx.client.handle.resp.store(2, Relaxed);
    ctx.client.reply_mode = ReplyMode::On;
    ctx.client.handle.no_evict.store(false, Relaxed);
    ctx.client.handle.no_touch.store(false, Relaxed);
    ctx.client.handle.name.lock().expect("name lock").clear();
    ctx.client.authenticated = !ctx.srv.hot.requirepass_set.load(Relaxed);
    ctx.client.user = None;
    *ctx.client.handle.user.lock().expect("user lock") = "default".into();
    ctx.out.simple("RESET");
    Ok(())
}

fn validate_name(name: &[u8]) -> CmdResult {
    if name.iter().any(|&b| !(b'!'..=b'~').contains(&b)) {
        return Err(ReplyError::err_static(
            "Client names cannot contain spaces, newlines or special characters.",
        ));
    }
    Ok(())
}

fn client_id(ctx: &mut Ctx<'_>, _args: &Args<'_>) -> CmdResult {
    ctx.out.int(ctx.client.id() as i64);
    Ok(())
}

fn client_setname(ctx: &mut Ctx<'_>, args: &Args<'_>) -> CmdResult {
    let name = args.get(2);
    validate_name(name)?;
    *ctx.client.handle.name.lock().expect("name lock") = name.to_vec();
    ctx.out.ok();
    Ok(())
}

fn client_getname(ctx: &mut Ctx<'_>, _args: &Args<'_>) -> CmdResult {
    let name = ctx.client.handle.name.lock().expect("name lock").clone();
    if name.is_empty() {
        ctx.out.null();
    } else {
        ctx.out.bulk(&name);
    }
    Ok(())
}

fn client_setinfo(ctx: &mut Ctx<'_>, args: &Args<'_>) -> CmdResult {
    let value = args.get(3);
    if value.iter().any(|&b| !(b'!'..=b'~').contains(&b)) {
        return Err(err!(
            "{} cannot contain spaces, newlines or special characters.",
            args.str_lossy(2)
        ));
    }
    let slot = if args.is(2, "LIB-NAME") {
        &ctx.client.handle.lib_name
    } else if args.is(2, "LIB-VER") {
        &ctx.client.handle.lib_ver
    } else {
        return Err(err!("Unrecognized option '{}'", args.str_lossy(2)));
    };
    *slot.lock().expect("lib lock") = value.to_vec();
    ctx.out.ok();
    Ok(())
}

fn client_reply(ctx: &mut Ctx<'_>, args: &Args<'_>) -> CmdResult {
    if args.is(2, "ON") {
        ctx.client.reply_mode = ReplyMode::On;
        ctx.out.ok();
    } else if args.is(2, "OFF") {
        ctx.client.reply_mode = ReplyMode::Off;
    } else if args.is(2, "SKIP") {
        ctx.client.reply_mode = ReplyMode::Skip;
    } else {
        return Err(ERR_SYNTAX);
    }
    Ok(())
}

fn client_no_evict(ctx: &mut Ctx<'_>, args: &Args<'_>) -> CmdResult {
    let on = if args.is(2, "ON") {
        true
    } else if args.is(2, "OFF") {
        false
    } else {
        return Err(ERR_SYNTAX);
    };
    ctx.client.handle.no_evict.store(on, Relaxed);
    ctx.out.ok();
    Ok(())
}

/// CLIENT NO-TOUCH ON|OFF (Redis 7.2): the client's reads stop updating keys' LRU/LFU info
/// (TOUCH still touches). Carried to the keyspace by each lock the command takes (`Ctx::shard`).
fn client_no_touch(ctx: &mut Ctx<'_>, args: &Args<'_>) -> CmdResult {
    let on = if args.is(2, "ON") {
        true
    } else if args.is(2, "OFF") {
        false
    } else {
        return Err(ERR_SYNTAX);
    };
    ctx.client.handle.no_touch.store(on, Relaxed);
    ctx.out.ok();
    Ok(())
}

/// The client types of `CLIENT LIST TYPE` and `CLIENT KILL TYPE`; `None` for an unknown name.
fn parse_type(t: &[u8]) -> Option<&'static str> {
    let t = String::from_utf8_lossy(t).to_ascii_lowercase();
    match t.as_str() {
        "normal" => Some("normal"),
        "master" => Some("master"),
        "replica" | "slave" => Some("replica"),
        "pubsub" => Some("pubsub"),
        _ => None,
    }
}

/// Redis's client type of a connection.
fn type_of(h: &ClientHandle) -> &'static str {
    match h.kind.load(Relaxed) {
        crate::state::kind::REPLICA => "replica",
        crate::state::kind::PRIMARY => "master",
        _ if h.subs.load(Relaxed) + h.psubs.load(Relaxed) + h.ssubs.load(Relaxed) > 0 => "pubsub",
        _ => "normal",
    }
}

/// A client's buffers and the memory they hold, as CLIENT LIST and INFO show them.
#[derive(Debug, Default, Clone, Copy)]
pub struct ClientMem {
    /// Query buffer: bytes read and not yet run, free room, capacity (`rbs`), most held (`rbp`).
    pub qbuf: usize,
    pub qbuf_free: usize,
    pub rbs: usize,
    pub rbp: usize,
    /// Arguments held by a command in progress (a blocked one), and by commands queued in MULTI.
    pub argv: usize,
    pub multi: usize,
    /// Reply bytes being written now (`obl`), messages queued behind them (`oll`: pub/sub,
    /// monitor), and the memory of both (`omem`).
    pub obl: usize,
    pub oll: usize,
    pub omem: usize,
    /// Everything the connection holds: buffers, queues and its own structures.
    pub total: usize,
}

/// What a client's subscription, watched key and BCAST prefix cost besides its name (the
/// registry's entry and the client's own set entry), as `tot-mem` counts them; Redis counts
/// the same bookkeeping by number too.
pub const SUBSCRIPTION_BYTES: usize = 64;
pub const WATCHED_KEY_BYTES: usize = 64;
pub const TRACKING_PREFIX_BYTES: usize = 64;

/// Reads what the connection task published (once per batch) about its buffers.
pub fn client_mem(h: &ClientHandle, own_argv: usize) -> ClientMem {
    let qbuf = h.query_buf_bytes.load(Relaxed);
    let rbs = h.query_buf_capacity.load(Relaxed).max(qbuf);
    let obl = h.output_buf_bytes.load(Relaxed);
    let (oll, queued) = h.mailbox.queued();
    let argv = own_argv.max(h.argv_bytes.load(Relaxed));
    let multi = h.multi_bytes.load(Relaxed);
    let omem = obl + queued;
    let bookkeeping = (h.subs.load(Relaxed) + h.psubs.load(Relaxed) + h.ssubs.load(Relaxed))
        * SUBSCRIPTION_BYTES
        + h.watched_keys.load(Relaxed) * WATCHED_KEY_BYTES
        + h.tracking_prefixes.load(Relaxed) * TRACKING_PREFIX_BYTES;
    let total = bookkeeping
        + rbs
        + h.output_buf_capacity.load(Relaxed).max(obl)
        + queued
        + argv
        + multi
        + std::mem::size_of::<ClientHandle>()
        + std::mem::size_of::<crate::state::Client>();
    ClientMem {
        qbuf,
        qbuf_free: rbs - qbuf,
        rbs,
        rbp: h.query_buf_peak.load(Relaxed).max(qbuf),
        argv,
        multi,
        obl,
        oll,
        omem,
        total,
    }
}

/// One `CLIENT LIST` line (without the trailing newline), Redis 7 field order (and Redis 7.2's
/// `lib-name`/`lib-ver`, since CLIENT SETINFO exists). `own_argv` is the size of the arguments of
/// the command being run when `h` is the caller (the listing command itself, as Redis counts it).
pub fn client_line(h: &ClientHandle, now_ms: u64, own_argv: usize) -> String {
    let name = String::from_utf8_lossy(&h.name.lock().expect("name lock")).into_owned();
    let lib_name = String::from_utf8_lossy(&h.lib_name.lock().expect("lib lock")).into_owned();
    let lib_ver = String::from_utf8_lossy(&h.lib_ver.lock().expect("lib lock")).into_owned();
    let cmd = crate::table::by_address(h.last_cmd.load(Relaxed)).map_or("NULL", |s| s.name);
    let m = client_mem(h, own_argv);
    let age = now_ms.saturating_sub(h.created_ms) / 1000;
    let idle = now_ms.saturating_sub(h.last_interaction_ms.load(Relaxed)) / 1000;
    let (subs, psubs, ssubs) = (
        h.subs.load(Relaxed),
        h.psubs.load(Relaxed),
        h.ssubs.load(Relaxed),
    );
    let multi = h.multi_len.load(Relaxed);
    // Redis's order of flag letters.
    let mut flags = String::new();
    if h.monitor.load(Relaxed) {
        flags.push('O');
    }
    match h.kind.load(Relaxed) {
        crate::state::kind::REPLICA => flags.push('S'),
        crate::state::kind::PRIMARY => flags.push('M'),
        _ => {}
    }
    if subs + psubs > 0 {
        flags.push('P');
    }
    if multi >= 0 {
        flags.push('x');
    }
    if h.blocked.load(Relaxed) {
        flags.push('b');
    }
    let tf = h.tracking_flags.load(Relaxed);
    for (bit, c) in [
        (crate::tracking::LIST_ON, 't'),
        (crate::tracking::LIST_BROKEN_REDIR, 'R'),
        (crate::tracking::LIST_BCAST, 'B'),
    ] {
        if tf & bit != 0 {
            flags.push(c);
        }
    }
    if h.killed.load(Relaxed) {
        flags.push('A');
    }
    if h.readonly.load(Relaxed) {
        flags.push('r');
    }
    if h.no_evict.load(Relaxed) {
        flags.push('e');
    }
    if h.no_touch.load(Relaxed) {
        flags.push('T');
    }
    if flags.is_empty() {
        flags.push('N');
    }
    let events = if m.obl > 0 { "rw" } else { "r" };
    format!(
        "id={} addr={} laddr={} fd={} name={} age={} idle={} flags={} db={} sub={} psub={} ssub={} multi={} qbuf={} qbuf-free={} argv-mem={} multi-mem={} rbs={} rbp={} obl={} oll={} omem={} tot-mem={} events={} cmd={} user={} redir={} resp={} lib-name={} lib-ver={}",
        h.id,
        h.addr,
        h.laddr,
        h.fd.load(Relaxed),
        name,
        age,
        idle,
        flags,
        h.db.load(Relaxed),
        subs,
        psubs,
        ssubs,
        multi,
        m.qbuf,
        m.qbuf_free,
        m.argv,
        m.multi,
        m.rbs,
        m.rbp,
        m.obl,
        m.oll,
        m.omem,
        m.total,
        events,
        cmd,
        h.user.lock().expect("user lock"),
        h.tracking_redirect.load(Relaxed),
        h.resp.load(Relaxed),
        lib_name,
        lib_ver,
    )
}

fn client_info(ctx: &mut Ctx<'_>, args: &Args<'_>) -> CmdResult {
    let line = client_line(&ctx.client.handle, ctx.now_ms, args.bytes()) + "\n";
    ctx.out.verbatim(line.as_bytes());
    Ok(())
}

fn clients_snapshot(ctx: &Ctx<'_>) -> Vec<Arc<ClientHandle>> {
    ctx.srv.client_handles()
}

fn client_list(ctx: &mut Ctx<'_>, args: &Args<'_>) -> CmdResult {
    let mut ids: Option<Vec<u64>> = None;
    let mut of_type: Option<&'static str> = None;
    let mut i = 2;
    while i < args.len() {
        if args.is(i, "TYPE") && i + 1 < args.len() {
            let Some(t) = parse_type(args.get(i + 1)) else {
                return Err(err!("Unknown client type '{}'", args.str_lossy(i + 1)));
            };
            of_type = Some(t);
            i += 2;
        } else if args.is(i, "ID") && i + 1 < args.len() {
            let mut v = Vec::new();
            for j in i + 1..args.len() {
                match args.i64(j) {
                    Ok(id) if id > 0 => v.push(id as u64),
                    _ => return Err(ReplyError::err_static("Invalid client ID")),
                }
            }
            ids = Some(v);
            i = args.len();
        } else {
            return Err(ERR_SYNTAX);
        }
    }
    let mut text = String::new();
    for h in clients_snapshot(ctx) {
        if ids.as_ref().is_some_and(|v| !v.contains(&h.id))
            || of_type.is_some_and(|t| t != type_of(&h))
        {
            continue;
        }
        let own = if h.id == ctx.client.id() {
            args.bytes()
        } else {
            0
        };
        text.push_str(&client_line(&h, ctx.now_ms, own));
        text.push('\n');
    }
    ctx.out.verbatim(text.as_bytes());
    Ok(())
}

/// `CLIENT PAUSE timeout [WRITE|ALL]`: clients' commands (all, or writes and commands that may
/// replicate) wait `timeout` ms; the connections hold them (see `ClientPause`).
fn client_pause(ctx: &mut Ctx<'_>, args: &Args<'_>) -> CmdResult {
    let all = match args.len() {
        3 => true,
        4 if args.is(3, "write") => false,
        4 if args.is(3, "all") => true,
        4 => {
            return Err(ReplyError::err_static(
                "CLIENT PAUSE mode must be WRITE or ALL",
            ));
        }
        _ => {
            return Err(ReplyError::err(format!(
                "unknown subcommand or wrong number of arguments for '{}'. Try CLIENT HELP.",
                args.str_lossy(1)
            )));
        }
    };
    // Redis's getTimeoutFromObjectOrReply in milliseconds.
    let ms = crate::args::parse_i64(args.get(2)).ok_or(ReplyError::err_static(
        "timeout is not an integer or out of range",
    ))?;
    if ms < 0 {
        return Err(ReplyError::err_static("timeout is negative"));
    }
    let until = ctx.now_ms.saturating_add(ms as u64);
    ctx.srv.client_pause.pause(until, all, ctx.now_ms);
    ctx.srv.sync_pause_expiry(ctx.now_ms);
    ctx.out.ok();
    Ok(())
}

fn client_unpause(ctx: &mut Ctx<'_>, _args: &Args<'_>) -> CmdResult {
    ctx.srv.client_pause.unpause();
    ctx.srv.sync_pause_expiry(ctx.now_ms);
    ctx.out.ok();
    Ok(())
}

/// `CLIENT UNBLOCK id [TIMEOUT|ERROR]`: ends another client's blocking command, as if it timed
/// out (the default) or with `-UNBLOCKED`; 1 if that client was blocked, else 0.
fn client_unblock(ctx: &mut Ctx<'_>, args: &Args<'_>) -> CmdResult {
    let id = args.i64(2)?;
    let how = if args.len() == 4 {
        if args.is(3, "timeout") {
            crate::state::unblock::TIMEOUT
        } else if args.is(3, "error") {
            crate::state::unblock::ERROR
        } else {
            return Err(ReplyError::err_static(
                "CLIENT UNBLOCK reason should be TIMEOUT or ERROR",
            ));
        }
    } else if args.len() == 3 {
        crate::state::unblock::TIMEOUT
    } else {
        return Err(ReplyError::err(format!(
            "unknown subcommand or wrong number of arguments for '{}'. Try CLIENT HELP.",
            args.str_lossy(1)
        )));
    };
    let target = u64::try_from(id).ok().and_then(|id| {
        ctx.srv
            .clients
            .lock()
            .expect("clients lock")
            .get(&id)
            .cloned()
    });
    let unblocked = match target {
        Some(h) if h.blocked.load(Relaxed) => {
            h.unblock.store(how, Relaxed);
            h.wake();
            true
        }
        _ => false,
    };
    ctx.out.int(unblocked as i64);
    Ok(())
}

fn client_kill(ctx: &mut Ctx<'_>, args: &Args<'_>) -> CmdResult {
    let all = clients_snapshot(ctx);
    if args.len() == 3 {
        // Old form: CLIENT KILL addr:port.
        let addr = args.get(2);
        let Some(h) = all.iter().find(|h| h.addr.as_bytes() == addr) else {
            return Err(ReplyError::err_static("No such client"));
        };
        h.kill();
        ctx.out.ok();
        return Ok(());
    }
    let mut id = None;
    let mut addr = None;
    let mut laddr = None;
    let mut of_type: Option<&'static str> = None;
    let mut max_age_s: Option<u64> = None;
    let mut skipme = true;
    let mut user: Option<&[u8]> = None;
    let mut i = 2;
    while i < args.len() {
        if i + 1 >= args.len() {
            return Err(ERR_SYNTAX);
        }
        let v = args.get(i + 1);
        if args.is(i, "ID") {
            match args.i64(i + 1) {
                Ok(n) if n > 0 => id = Some(n as u64),
                _ => return Err(ReplyError::err_static("client-id should be greater than 0")),
            }
        } else if args.is(i, "ADDR") {
            addr = Some(v);
        } else if args.is(i, "LADDR") {
            laddr = Some(v);
        } else if args.is(i, "SKIPME") {
            skipme = if v.eq_ignore_ascii_case(b"yes") {
                true
            } else if v.eq_ignore_ascii_case(b"no") {
                false
            } else {
                return Err(ERR_SYNTAX);
            };
        } else if args.is(i, "TYPE") {
            match parse_type(v) {
                Some(t) => of_type = Some(t),
                None => return Err(err!("Unknown client type '{}'", args.str_lossy(i + 1))),
            }
        } else if args.is(i, "MAXAGE") {
            match args.i64(i + 1) {
                Ok(n) if n >= 0 => max_age_s = Some(n as u64),
                _ => return Err(ERR_SYNTAX),
            }
        } else if args.is(i, "USER") {
            if ctx.srv.acl.user(v).is_none() {
                return Err(err!("No such user '{}'", args.str_lossy(i + 1)));
            }
            user = Some(v);
        } else {
            return Err(ERR_SYNTAX);
        }
        i += 2;
    }
    let me = ctx.client.id();
    let mut killed = 0;
    for h in all {
        if (skipme && h.id == me)
            || id.is_some_and(|x| x != h.id)
            || addr.is_some_and(|a| a != h.addr.as_bytes())
            || laddr.is_some_and(|a| a != h.laddr.as_bytes())
            || user.is_some_and(|u| u != h.user.lock().expect("user lock").as_bytes())
            || of_type.is_some_and(|t| t != type_of(&h))
            || max_age_s.is_some_and(|m| ctx.now_ms.saturating_sub(h.created_ms) / 1000 < m)
        {
            continue;
        }
        h.kill();
        killed += 1;
    }
    ctx.out.int(killed);
    Ok(())
}

fn client_help(ctx: &mut Ctx<'_>, _args: &Args<'_>) -> CmdResult {
    let lines = [
        "CLIENT <subcommand> [<arg> [value] [opt] ...]. Subcommands are:",
        "GETNAME",
        "    Return the name of the current connection.",
        "ID",
        "    Return the ID of the current connection.",
        "INFO",
        "    Return information about the current client connection.",
        "KILL <ip:port>",
        "    Kill connection made from <ip:port>.",
        "KILL <option> <value> [<option> <value> [...]]",
        "    Kill connections. Options are: ID, ADDR, LADDR, SKIPME (yes|no).",
        "LIST [options ...]",
        "    Return information about client connections. Options: TYPE, ID.",
        "NO-EVICT (ON|OFF)",
        "    Protect current client connection from eviction.",
        "NO-TOUCH (ON|OFF)",
        "    Will not touch LRU/LFU stats when this mode is on.",
        "REPLY (ON|OFF|SKIP)",
        "    Control the replies sent to the current connection.",
        "SETNAME <name>",
        "    Assign the name <name> to the current connection.",
        "SETINFO <LIB-NAME|LIB-VER> <value>",
        "    Set client library name or version.",
        "PAUSE <timeout> [WRITE|ALL]",
        "    Suspend all, or just write, clients for <timeout> milliseconds.",
        "UNPAUSE",
        "    Stop the current client pause, resuming traffic.",
        "UNBLOCK <clientid> [TIMEOUT|ERROR]",
        "    Unblock the specified blocked client.",
        "HELP",
        "    Prints this help.",
    ];
    ctx.out.array(lines.len());
    for l in lines {
        ctx.out.simple(l);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use crate::tests::run;

    #[test]
    fn ping_echo_select_hello() {
        let r = run(&[
            &["PING"],
            &["ping", "hi"],
            &["ECHO", "x"],
            &["SELECT", "15"],
            &["SELECT", "16"],
            &["SELECT", "x"],
            &["HELLO", "4"],
            &["CLIENT", "SETNAME", "a b"],
            &["CLIENT", "SETNAME", "app"],
            &["CLIENT", "GETNAME"],
        ]);
        assert_eq!(r[0], "+PONG\r\n");
        assert_eq!(r[1], "$2\r\nhi\r\n");
        assert_eq!(r[2], "$1\r\nx\r\n");
        assert_eq!(r[3], "+OK\r\n");
        assert_eq!(r[4], "-ERR DB index is out of range\r\n");
        assert_eq!(r[5], "-ERR value is not an integer or out of range\r\n");
        assert_eq!(r[6], "-NOPROTO unsupported protocol version\r\n");
        assert!(r[7].starts_with("-ERR Client names cannot contain spaces"));
        assert_eq!(r[9], "$3\r\napp\r\n");
    }
}
