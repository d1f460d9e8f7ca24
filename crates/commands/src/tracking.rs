//! Server-assisted client-side caching, as Redis 6+ (`tracking.c`): CLIENT TRACKING, CLIENT
//! CACHING, CLIENT GETREDIR, CLIENT TRACKINGINFO, and the invalidation messages.
//!
//! **Default mode.** After a read-only command, a tracking client's keys go into the tracking
//! table (key → client ids; keys only, databases are not told apart, as in Redis). When a key is
//! modified, each client that read it gets one invalidation (`>2 invalidate [key]` in RESP3; with
//! REDIRECT to a RESP2 connection in Pub/Sub mode, a `message` on `__redis__:invalidate`) and the
//! key leaves the table: a client hears about a key once per read. OPTIN/OPTOUT with CLIENT
//! CACHING choose which reads count; NOLOOP skips the client's own writes.
//!
//! **BCAST mode.** A client names prefixes (none: every key); a modified key matching a prefix is
//! sent to all its clients, without any table of reads. Redis gathers a whole event loop's keys
//! per prefix and sends one message per prefix before it sleeps; here the keys a client's
//! commands modified are gathered until the end of its connection's batch (a pipeline, a
//! transaction, a script: one message per prefix, as Redis sends), and the keys expiry or
//! eviction modified are sent at once. The cron sends whatever is left (commands run outside a
//! connection's batch) within a period.
//!
//! **Where modifications come from.** The keyspace notification path (`notify.rs`): while a
//! client tracks, the keyspace notes every event class (not only those `notify-keyspace-events`
//! publishes), and `notify::publish_pending` hands each noted key here after the command, the
//! active-expire pass or the eviction that raised it. So expiry and eviction invalidate too.
//! FLUSHALL and FLUSHDB send a null invalidation to every tracking client and empty the table.
//!
//! **Delivery** goes through the receiver's pub/sub mailbox (bounded by the `pubsub` class of
//! `client-output-buffer-limit`), written out by its connection between commands. A message for
//! the writer itself is so sent after its reply, as Redis 7.0 does.
//!
//! **Bounds.** `tracking-table-max-keys` (default 1,000,000; 0: none): past it, tracked keys are
//! invalidated (and forgotten) until the table is back under it, as Redis does.
//! [`PREFIXES_PER_CLIENT_MAX`] prefixes per BCAST client.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering::Relaxed};

use shoal_resp::{Protocol, ReplyWriter};

use crate::state::{ClientHandle, ServerState};
use crate::table::{Spec, flag::*};
use crate::{Args, CmdResult, Ctx, ReplyError};

/// Prefixes one BCAST client may register (Redis has no limit; each costs a table entry).
pub const PREFIXES_PER_CLIENT_MAX: usize = 1024;
/// Keys invalidated at most per command to bring the table back under its limit (Redis spends
/// 100 × the number of times in a row it found the table over).
const EVICT_EFFORT_MAX: usize = 1000;
const CHANNEL: &[u8] = b"__redis__:invalidate";

/// `ClientHandle::tracking_flags` bits (CLIENT LIST flags `t`, `R`, `B`).
pub const LIST_ON: u8 = 1;
pub const LIST_BROKEN_REDIR: u8 = 2;
pub const LIST_BCAST: u8 = 4;

/// Mirrors a client's tracking state into its handle for CLIENT LIST.
fn mirror(srv: &ServerState, id: u64, s: Option<&ClientState>) {
    let Some(h) = handle(srv, id) else {
        return;
    };
    match s {
        None => {
            h.tracking_flags.store(0, Relaxed);
            h.tracking_redirect.store(-1, Relaxed);
            h.tracking_prefixes.store(0, Relaxed);
        }
        Some(s) => {
            let f = LIST_ON
                | if s.broken_redir { LIST_BROKEN_REDIR } else { 0 }
                | if s.bcast { LIST_BCAST } else { 0 };
            h.tracking_flags.store(f, Relaxed);
            h.tracking_redirect.store(s.redirect as i64, Relaxed);
            h.tracking_prefixes.store(s.prefixes.len(), Relaxed);
        }
    }
}

/// One client's tracking mode.
#[derive(Debug, Clone, Default)]
struct ClientState {
    /// Client id the messages go to (0: this client).
    redirect: u64,
    bcast: bool,
    optin: bool,
    optout: bool,
    noloop: bool,
    /// CLIENT CACHING was given for the next command.
    caching: bool,
    /// The redirect client was gone when a message was due (flag `R`).
    broken_redir: bool,
    prefixes: BTreeSet<Box<[u8]>>,
}

#[derive(Debug, Default)]
struct Prefix {
    clients: BTreeSet<u64>,
    /// Keys modified since the last broadcast, with the client that last modified each (0: none).
    keys: BTreeMap<Box<[u8]>, u64>,
}

#[derive(Debug, Default)]
struct Table {
    keys: HashMap<Box<[u8]>, BTreeSet<u64>>,
    /// Client ids across all keys.
    items: u64,
    prefixes: BTreeMap<Box<[u8]>, Prefix>,
    clients: HashMap<u64, ClientState>,
}

/// The server's tracking state.
#[derive(Debug, Default)]
pub struct Tracking {
    table: Mutex<Table>,
    /// Clients with tracking on: nothing is done (and nothing locked) while 0.
    clients_on: AtomicUsize,
    /// Keys gathered for BCAST prefixes wait for [`flush_broadcasts`].
    bcast_pending: AtomicBool,
}

/// The keys part of a message, encoded (an array of keys, or the flush's null).
enum Payload<'a> {
    Proto(&'a [u8]),
}

/// A message due to a tracking client, sent once the table lock is released.
struct Due {
    client: u64,
    state: ClientState,
    /// The keys array (encoded), or `None` for the flush's null.
    keys: Option<Vec<u8>>,
}

impl Tracking {
    pub fn active(&self) -> bool {
        self.clients_on.load(Relaxed) > 0
    }

    /// `tracking_clients`, `tracking_total_keys`, `tracking_total_items`,
    /// `tracking_total_prefixes` for INFO.
    pub fn counts(&self) -> (usize, usize, u64, usize) {
        let t = self.table.lock().expect("tracking lock");
        (t.clients.len(), t.keys.len(), t.items, t.prefixes.len())
    }

    /// Turns tracking off for a client (CLIENT TRACKING off, RESET, a closed connection).
    pub fn disable(&self, srv: &ServerState, id: u64) {
        if !self.active() {
            return;
        }
        let mut t = self.table.lock().expect("tracking lock");
        let Some(s) = t.clients.remove(&id) else {
            return;
        };
        for p in &s.prefixes {
            if let Some(pref) = t.prefixes.get_mut(p) {
                pref.clients.remove(&id);
                if pref.clients.is_empty() {
                    t.prefixes.remove(p);
                }
            }
        }
        drop(t);
        mirror(srv, id, None);
        if self.clients_on.fetch_sub(1, Relaxed) == 1 {
            srv.apply_notify_mask();
        }
    }
}

/// The notification classes the keyspace must note: the configured ones, and every class while
/// a client tracks (so every modification reaches [`invalidate_events`]).
pub fn effective_notify_mask(srv: &ServerState, configured: u32) -> u32 {
    if srv.tracking.active() {
        configured | notify_all_for_tracking()
    } else {
        configured
    }
}

/// Every class of modification, plus `K` so the keyspace takes the mask as one that publishes.
fn notify_all_for_tracking() -> u32 {
    use shoal_keyspace::notify::*;
    ALL | KEYSPACE | crate::notify::TRACKING_ONLY
}

// ---------------------------------------------------------------------------------------------
// Messages.

fn null_for(proto: u8) -> &'static [u8] {
    if proto >= 3 { b"_\r\n" } else { b"$-1\r\n" }
}

fn handle(srv: &ServerState, id: u64) -> Option<Arc<ClientHandle>> {
    srv.clients.lock().expect("clients lock").get(&id).cloned()
}

/// Sends one message to tracking client `id` (or where it redirects), as Redis's
/// `sendTrackingMessage`. Returns true if the redirect target was found missing.
fn send(srv: &ServerState, id: u64, s: &ClientState, keys: Payload<'_>, now_ms: u64) -> bool {
    let Some(me) = handle(srv, id) else {
        return false;
    };
    let my_proto = me.resp.load(Relaxed);
    let mut broken = false;
    let target = if s.redirect != 0 {
        match handle(srv, s.redirect) {
            Some(t) => t,
            None => {
                broken = true;
                if my_proto >= 3 {
                    let mut v = Vec::new();
                    let mut w = ReplyWriter::new(&mut v, Protocol::Resp3);
                    w.push(2);
                    w.bulk(b"tracking-redir-broken");
                    w.int(s.redirect as i64);
                    deliver(srv, &me, v, now_ms);
                }
                return broken;
            }
        }
    } else {
        me.clone()
    };
    let target_proto = target.resp.load(Relaxed);
    let mut v = Vec::new();
    if target_proto >= 3 {
        let mut w = ReplyWriter::new(&mut v, Protocol::Resp3);
        w.push(2);
        w.bulk(b"invalidate");
    } else if s.redirect != 0
        && target.subs.load(Relaxed) + target.psubs.load(Relaxed) + target.ssubs.load(Relaxed) > 0
    {
        let mut w = ReplyWriter::new(&mut v, Protocol::Resp2);
        w.array(3);
        w.bulk(b"message");
        w.bulk(CHANNEL);
    } else {
        // RESP2 without a redirect to a subscriber: nothing can carry the message.
        return broken;
    }
    let Payload::Proto(p) = keys;
    v.extend_from_slice(p);
    deliver(srv, &target, v, now_ms);
    broken
}

fn deliver(srv: &ServerState, to: &Arc<ClientHandle>, msg: Vec<u8>, now_ms: u64) {
    let msg: Arc<[u8]> = msg.into();
    to.mailbox
        .deliver_within(&msg, to, srv, now_ms, srv.pubsub.limits());
}

/// Sends what is due and records broken redirects.
fn send_all(srv: &ServerState, due: Vec<Due>, now_ms: u64) {
    let mut broken = Vec::new();
    for d in due {
        let null;
        let payload = match &d.keys {
            Some(p) => Payload::Proto(p),
            None => {
                let proto = handle(srv, d.client).map_or(2, |h| h.resp.load(Relaxed));
                null = null_for(proto);
                Payload::Proto(null)
            }
        };
        if send(srv, d.client, &d.state, payload, now_ms) {
            broken.push(d.client);
        }
    }
    if !broken.is_empty() {
        let mut t = srv.tracking.table.lock().expect("tracking lock");
        for id in broken {
            if let Some(s) = t.clients.get_mut(&id) {
                s.broken_redir = true;
                mirror(srv, id, Some(s));
            }
        }
    }
}

fn keys_array(keys: &[&[u8]]) -> Vec<u8> {
    let mut v = Vec::new();
    let mut w = ReplyWriter::new(&mut v, Protocol::Resp2);
    w.array(keys.len());
    for k in keys {
        w.bulk(k);
    }
    v
}

// ---------------------------------------------------------------------------------------------
// Invalidation.

/// Removes `key` from the table and notes a message for each client that read it (Redis's
/// `trackingInvalidateKey` without the broadcast part).
fn invalidate_in_table(t: &mut Table, key: &[u8], writer: Option<u64>, due: &mut Vec<Due>) {
    let Some(ids) = t.keys.remove(key) else {
        return;
    };
    t.items -= ids.len() as u64;
    for id in ids {
        let Some(s) = t.clients.get(&id) else {
            continue;
        };
        if s.bcast || (s.noloop && writer == Some(id)) {
            continue;
        }
        due.push(Due {
            client: id,
            state: s.clone(),
            keys: Some(keys_array(&[key])),
        });
    }
}

/// Invalidates the keys of the events one command (or expiry pass) raised; `writer` is the
/// client that ran it.
pub fn invalidate_events(
    srv: &ServerState,
    events: &[shoal_keyspace::notify::Event],
    writer: Option<u64>,
    now_ms: u64,
) {
    if !srv.tracking.active() {
        return;
    }
    let mut due = Vec::new();
    let mut gathered = false;
    {
        let mut t = srv.tracking.table.lock().expect("tracking lock");
        for e in events {
            if e.class == shoal_keyspace::notify::KEY_MISS {
                continue;
            }
            if e.class == shoal_keyspace::notify::TRACKING
                && e.event == shoal_keyspace::notify::TRACKING_FLUSH
            {
                flush_due(&mut t, &mut due);
                continue;
            }
            let key: &[u8] = &e.key;
            if !t.prefixes.is_empty() {
                for (p, pref) in t.prefixes.iter_mut() {
                    if key.starts_with(p) {
                        pref.keys.insert(key.into(), writer.unwrap_or(0));
                        gathered = true;
                    }
                }
            }
            invalidate_in_table(&mut t, key, writer, &mut due);
        }
        // A client's commands: their keys wait for the end of its batch.
        if writer.is_none() {
            broadcast(&mut t, &mut due);
        } else if gathered {
            srv.tracking.bcast_pending.store(true, Relaxed);
        }
    }
    send_all(srv, due, now_ms);
}

/// Sends the keys gathered for BCAST prefixes since the last broadcast: at the end of each
/// connection's batch of commands, and from the cron.
pub fn flush_broadcasts(srv: &ServerState, now_ms: u64) {
    if !srv.tracking.bcast_pending.load(Relaxed) || !srv.tracking.active() {
        return;
    }
    let mut due = Vec::new();
    {
        let mut t = srv.tracking.table.lock().expect("tracking lock");
        srv.tracking.bcast_pending.store(false, Relaxed);
        broadcast(&mut t, &mut due);
    }
    send_all(srv, due, now_ms);
}

/// Sends each prefix's gathered keys to its clients (Redis's
/// `trackingBroadcastInvalidationMessages`), leaving out a NOLOOP client's own writes.
fn broadcast(t: &mut Table, due: &mut Vec<Due>) {
    let Table {
        prefixes, clients, ..
    } = t;
    for pref in prefixes.values_mut() {
        if pref.keys.is_empty() {
            continue;
        }
        let keys = std::mem::take(&mut pref.keys);
        let all: Vec<&[u8]> = keys.keys().map(|k| &k[..]).collect();
        let common = keys_array(&all);
        for &id in &pref.clients {
            let Some(s) = clients.get(&id) else {
                continue;
            };
            let msg = if s.noloop {
                let mine: Vec<&[u8]> = keys
                    .iter()
                    .filter(|(_, w)| **w != id)
                    .map(|(k, _)| &k[..])
                    .collect();
                if mine.is_empty() {
                    continue;
                }
                keys_array(&mine)
            } else {
                common.clone()
            };
            due.push(Due {
                client: id,
                state: s.clone(),
                keys: Some(msg),
            });
        }
    }
}

/// Slots this node gave away (a slot move settled): every tracked key in them is invalidated,
/// as Redis's MIGRATE does by deleting the keys it moves. The new owner knows nothing of who read
/// them, and this node drops its copies slowly and without telling, so a client-side cache
/// would otherwise keep the old value of a key now written elsewhere. (BCAST clients are not
/// told: they track prefixes, not reads.)
pub fn invalidate_slots(srv: &ServerState, moved: impl Fn(u16) -> bool, now_ms: u64) {
    if !srv.tracking.active() {
        return;
    }
    let mut due = Vec::new();
    {
        let mut t = srv.tracking.table.lock().expect("tracking lock");
        let keys: Vec<Box<[u8]>> = t
            .keys
            .keys()
            .filter(|k| moved(shoal_keyspace::slot::key_slot(k)))
            .cloned()
            .collect();
        for k in keys {
            invalidate_in_table(&mut t, &k, None, &mut due);
        }
    }
    send_all(srv, due, now_ms);
}

/// FLUSHALL / FLUSHDB: every tracking client gets a null invalidation; the table is emptied, even
/// when no client tracks any more (keys of clients that turned tracking off stay in the table
/// until then, as in Redis).
pub fn on_flush(srv: &ServerState, now_ms: u64) {
    let mut due = Vec::new();
    flush_due(
        &mut srv.tracking.table.lock().expect("tracking lock"),
        &mut due,
    );
    send_all(srv, due, now_ms);
}

/// Empties the table and notes a null invalidation for every tracking client, by id.
fn flush_due(t: &mut Table, due: &mut Vec<Due>) {
    t.keys.clear();
    t.items = 0;
    let mut ids: Vec<(&u64, &ClientState)> = t.clients.iter().collect();
    ids.sort_by_key(|(id, _)| **id);
    due.extend(ids.into_iter().map(|(&client, s)| Due {
        client,
        state: s.clone(),
        keys: None,
    }));
}

/// After every command a client ran: remember the keys a tracking client read, forget CLIENT
/// CACHING's one-command choice, and keep the table under `tracking-table-max-keys`.
pub fn after_command(
    srv: &ServerState,
    client: &mut crate::state::Client,
    spec: &Spec,
    args: &Args<'_>,
    now_ms: u64,
) {
    if !srv.tracking.active() {
        return;
    }
    // A script's own commands are not remembered: a read among them makes the script's declared
    // keys remembered once it ends, as Redis 7.0 does (its CACHING choice lasts until then).
    if client.in_script_call {
        client.script_read |= spec.has(READONLY) && !spec.has(PUBSUB);
        return;
    }
    let script = spec.group == crate::table::Group::Scripting;
    let script_read = std::mem::take(&mut client.script_read);
    let id = client.handle.id;
    let mut due = Vec::new();
    {
        let mut t = srv.tracking.table.lock().expect("tracking lock");
        let Some(s) = t.clients.get_mut(&id) else {
            return;
        };
        // OPTIN: only after CACHING yes; OPTOUT: except after CACHING no.
        let wanted = if s.optin {
            s.caching
        } else {
            !(s.optout && s.caching)
        };
        let read = if script {
            script_read
        } else {
            spec.has(READONLY) && !spec.has(PUBSUB)
        };
        let remember = read && !s.bcast && wanted;
        if !spec.name.starts_with("client|") && !client.tx.in_multi() {
            s.caching = false;
        }
        if remember && let Ok(keys) = crate::keyspec::keys(spec, args) {
            for k in keys.as_slice() {
                let ids = t.keys.entry(args.get(k.pos).into()).or_default();
                if ids.insert(id) {
                    t.items += 1;
                }
            }
        }
        let max = srv.config().tracking_table_max_keys as usize;
        if max > 0 && t.keys.len() > max {
            let over = (t.keys.len() - max).min(EVICT_EFFORT_MAX);
            let victims: Vec<Box<[u8]>> = t.keys.keys().take(over).cloned().collect();
            for k in victims {
                invalidate_in_table(&mut t, &k, None, &mut due);
            }
        }
    }
    send_all(srv, due, now_ms);
}

// ---------------------------------------------------------------------------------------------
// Commands.

pub(crate) fn client_tracking(ctx: &mut Ctx<'_>, args: &Args<'_>) -> CmdResult {
    let mut redirect: i64 = 0;
    let (mut bcast, mut optin, mut optout, mut noloop) = (false, false, false, false);
    let mut prefixes: Vec<&[u8]> = Vec::new();
    let mut j = 3;
    while j < args.len() {
        let more = j + 1 < args.len();
        if args.is(j, "redirect") && more {
            j += 1;
            if redirect != 0 {
                return Err(ReplyError::err_static(
                    "A client can only redirect to a single other client",
                ));
            }
            redirect = args.i64(j)?;
            if handle(ctx.srv, redirect as u64).is_none() || redirect <= 0 {
                return Err(ReplyError::err_static(
                    "The client ID you want redirect to does not exist",
                ));
            }
        } else if args.is(j, "bcast") {
            bcast = true;
        } else if args.is(j, "optin") {
            optin = true;
        } else if args.is(j, "optout") {
            optout = true;
        } else if args.is(j, "noloop") {
            noloop = true;
        } else if args.is(j, "prefix") && more {
            j += 1;
            prefixes.push(args.get(j));
        } else {
            return Err(crate::args::ERR_SYNTAX);
        }
        j += 1;
    }
    let srv = ctx.srv;
    let id = ctx.client.handle.id;
    if args.is(2, "off") {
        srv.tracking.disable(srv, id);
        ctx.out.ok();
        return Ok(());
    }
    if !args.is(2, "on") {
        return Err(crate::args::ERR_SYNTAX);
    }
    if !bcast && !prefixes.is_empty() {
        return Err(ReplyError::err_static(
            "PREFIX option requires BCAST mode to be enabled",
        ));
    }
    let mut t = srv.tracking.table.lock().expect("tracking lock");
    let current = t.clients.get(&id).cloned();
    if let Some(c) = &current
        && c.bcast != bcast
    {
        return Err(ReplyError::err_static(
            "You can't switch BCAST mode on/off before disabling tracking for this client, and then re-enabling it with a different mode.",
        ));
    }
    if bcast && (optin || optout) {
        return Err(ReplyError::err_static(
            "OPTIN and OPTOUT are not compatible with BCAST",
        ));
    }
    if optin && optout {
        return Err(ReplyError::err_static(
            "You can't specify both OPTIN mode and OPTOUT mode",
        ));
    }
    if let Some(c) = &current
        && ((optin && c.optout) || (optout && c.optin))
    {
        return Err(ReplyError::err_static(
            "You can't switch OPTIN/OPTOUT mode before disabling tracking for this client, and then re-enabling it with a different mode.",
        ));
    }
    if bcast {
        let overlaps = |a: &[u8], b: &[u8]| {
            let n = a.len().min(b.len());
            a[..n] == b[..n]
        };
        for (i, p) in prefixes.iter().enumerate() {
            if let Some(old) = current
                .as_ref()
                .and_then(|c| c.prefixes.iter().find(|o| overlaps(o, p)))
            {
                return Err(ReplyError::err(format!(
                    "Prefix '{}' overlaps with an existing prefix '{}'. Prefixes for a single client must not overlap.",
                    String::from_utf8_lossy(p),
                    String::from_utf8_lossy(old)
                )));
            }
            if let Some(q) = prefixes[i + 1..].iter().find(|q| overlaps(p, q)) {
                return Err(ReplyError::err(format!(
                    "Prefix '{}' overlaps with another provided prefix '{}'. Prefixes for a single client must not overlap.",
                    String::from_utf8_lossy(p),
                    String::from_utf8_lossy(q)
                )));
            }
        }
        let had = current.as_ref().map_or(0, |c| c.prefixes.len());
        if had + prefixes.len().max(1) > PREFIXES_PER_CLIENT_MAX {
            return Err(ReplyError::err(format!(
                "a client may track at most {PREFIXES_PER_CLIENT_MAX} prefixes"
            )));
        }
    }
    let newly_on = current.is_none();
    let mut s = current.unwrap_or_default();
    s.redirect = redirect as u64;
    s.broken_redir = false;
    s.bcast = bcast;
    s.optin = optin;
    s.optout = optout;
    s.noloop = noloop;
    if bcast {
        let add: Vec<&[u8]> = if prefixes.is_empty() {
            vec![b""]
        } else {
            prefixes
        };
        for p in add {
            if s.prefixes.insert(p.into()) {
                t.prefixes.entry(p.into()).or_default().clients.insert(id);
            }
        }
    }
    mirror(srv, id, Some(&s));
    t.clients.insert(id, s);
    drop(t);
    if newly_on && srv.tracking.clients_on.fetch_add(1, Relaxed) == 0 {
        srv.apply_notify_mask();
    }
    ctx.out.ok();
    Ok(())
}

pub(crate) fn client_caching(ctx: &mut Ctx<'_>, args: &Args<'_>) -> CmdResult {
    let id = ctx.client.handle.id;
    let mut t = ctx.srv.tracking.table.lock().expect("tracking lock");
    let Some(s) = t.clients.get_mut(&id) else {
        return Err(ReplyError::err_static(
            "CLIENT CACHING can be called only when the client is in tracking mode with OPTIN or OPTOUT mode enabled",
        ));
    };
    if args.is(2, "yes") {
        if !s.optin {
            return Err(ReplyError::err_static(
                "CLIENT CACHING YES is only valid when tracking is enabled in OPTIN mode.",
            ));
        }
    } else if args.is(2, "no") {
        if !s.optout {
            return Err(ReplyError::err_static(
                "CLIENT CACHING NO is only valid when tracking is enabled in OPTOUT mode.",
            ));
        }
    } else {
        return Err(crate::args::ERR_SYNTAX);
    }
    s.caching = true;
    drop(t);
    ctx.out.ok();
    Ok(())
}

pub(crate) fn client_getredir(ctx: &mut Ctx<'_>, _args: &Args<'_>) -> CmdResult {
    let id = ctx.client.handle.id;
    let redir = {
        let t = ctx.srv.tracking.table.lock().expect("tracking lock");
        t.clients.get(&id).map_or(-1, |s| s.redirect as i64)
    };
    ctx.out.int(redir);
    Ok(())
}

pub(crate) fn client_trackinginfo(ctx: &mut Ctx<'_>, _args: &Args<'_>) -> CmdResult {
    let id = ctx.client.handle.id;
    let s = {
        let t = ctx.srv.tracking.table.lock().expect("tracking lock");
        t.clients.get(&id).cloned()
    };
    let mut flags: Vec<&str> = Vec::new();
    flags.push(if s.is_some() { "on" } else { "off" });
    if let Some(s) = &s {
        if s.bcast {
            flags.push("bcast");
        }
        if s.optin {
            flags.push("optin");
            if s.caching {
                flags.push("caching-yes");
            }
        }
        if s.optout {
            flags.push("optout");
            if s.caching {
                flags.push("caching-no");
            }
        }
        if s.noloop {
            flags.push("noloop");
        }
        if s.broken_redir {
            flags.push("broken_redirect");
        }
    }
    let out = &mut ctx.out;
    out.map(3);
    out.bulk(b"flags");
    out.set(flags.len());
    for f in flags {
        out.bulk(f.as_bytes());
    }
    out.bulk(b"redirect");
    out.int(s.as_ref().map_or(-1, |s| s.redirect as i64));
    out.bulk(b"prefixes");
    match &s {
        Some(s) => {
            out.array(s.prefixes.len());
            for p in &s.prefixes {
                out.bulk(p);
            }
        }
        None => out.array(0),
    }
    Ok(())
}
