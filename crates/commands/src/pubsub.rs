//! Pub/sub: SUBSCRIBE, UNSUBSCRIBE, PSUBSCRIBE, PUNSUBSCRIBE, PUBLISH, the sharded SSUBSCRIBE,
//! SUNSUBSCRIBE, SPUBLISH, and PUBSUB CHANNELS | NUMSUB | NUMPAT | SHARDCHANNELS | SHARDNUMSUB |
//! HELP.
//!
//! **Sharded channels** (Redis 7.0) are a namespace of their own: an SPUBLISH reaches only
//! SSUBSCRIBE subscribers of that channel (never patterns), and the count in SSUBSCRIBE and
//! SUNSUBSCRIBE replies is the client's shard channels only. The channel is the commands' key
//! (a `not_key` key spec), so in cluster mode a request is routed to the owner of the channel's
//! slot (`MOVED`) and several channels must share a slot (`CROSSSLOT`), as in Redis.
//!
//! **Delivery.** PUBLISH runs on the publisher's connection, not the subscriber's: it encodes the
//! message once per protocol (an array in RESP2, a push frame in RESP3), and appends a shared copy
//! to each subscriber's [`Mailbox`], then wakes that subscriber's connection task, which writes the
//! mailbox out (between commands, and whenever it is woken while idle or blocked). A message for the
//! publisher itself (a RESP3 client subscribed to the channel it publishes on) goes straight into its
//! own reply stream, before the PUBLISH reply, as in Redis.
//!
//! **Slow subscribers.** A mailbox is bounded by `client-output-buffer-limit` class `pubsub`,
//! counting the queued messages plus the bytes the connection is writing right now: past the hard
//! limit, or past the soft limit for longer than its seconds, the subscriber is disconnected (its
//! queue dropped, `client_output_buffer_limit_disconnections` counted). The publisher never waits
//! for a subscriber, and memory never grows without bound.
//!
//! **Subscribed mode.** A RESP2 client with subscriptions may only run (P|S)SUBSCRIBE,
//! (P|S)UNSUBSCRIBE, PING, QUIT and RESET (checked in `crate::admit`); a RESP3 client may run
//! anything, its messages arriving as push frames between replies.

use crate::err;
use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex, RwLock};

use shoal_resp::{Protocol, ReplyWriter};

use crate::config::OutputLimit;
use crate::glob::glob_match;
use crate::state::{Client, ClientHandle, ServerState};
use crate::table::{FindKeys, Group, KeySpec, Spec, flag::*, key::*};
use crate::{Args, CmdResult, Ctx, ReplyError};

const PS: Group = Group::PubSub;

pub static COMMANDS: &[Spec] = &[
    Spec {
        name: "psubscribe",
        arity: -2,
        flags: PUBSUB
            | NOSCRIPT
            | LOADING
            | STALE
            | SUBSCRIBED_OK
            | PUSH_REPLIES
            | CHANNELS_ALL
            | CHANNEL_PATTERNS,
        group: PS,
        since: "2.0.0",
        summary: "Listens for messages published to channels that match one or more patterns.",
        handler: Some(psubscribe),
        ..Spec::DEFAULT
    },
    Spec {
        name: "publish",
        arity: 3,
        flags: PUBSUB | LOADING | STALE | FAST | MAY_REPLICATE | CHANNELS_FIRST,
        group: PS,
        since: "2.0.0",
        summary: "Posts a message to a channel.",
        handler: Some(publish),
        ..Spec::DEFAULT
    },
    Spec {
        name: "pubsub",
        arity: -2,
        flags: 0,
        group: PS,
        since: "2.8.0",
        summary: "A container for Pub/Sub commands.",
        subcommands: PUBSUB_SUBS,
        ..Spec::DEFAULT
    },
    Spec {
        name: "punsubscribe",
        arity: -1,
        flags: PUBSUB | NOSCRIPT | LOADING | STALE | SUBSCRIBED_OK | PUSH_REPLIES,
        group: PS,
        since: "2.0.0",
        summary: "Stops listening to messages published to channels that match one or more patterns.",
        handler: Some(punsubscribe),
        ..Spec::DEFAULT
    },
    Spec {
        name: "subscribe",
        arity: -2,
        flags: PUBSUB | NOSCRIPT | LOADING | STALE | SUBSCRIBED_OK | PUSH_REPLIES | CHANNELS_ALL,
        group: PS,
        since: "2.0.0",
        summary: "Listens for messages published to channels.",
        handler: Some(subscribe),
        ..Spec::DEFAULT
    },
    Spec {
        name: "unsubscribe",
        arity: -1,
        flags: PUBSUB | NOSCRIPT | LOADING | STALE | SUBSCRIBED_OK | PUSH_REPLIES,
        group: PS,
        since: "2.0.0",
        summary: "Stops listening to messages posted to channels.",
        handler: Some(unsubscribe),
        ..Spec::DEFAULT
    },
    Spec {
        name: "spublish",
        arity: 3,
        flags: PUBSUB | LOADING | STALE | FAST | MAY_REPLICATE | CHANNELS_FIRST,
        keys: &[KeySpec::at(1, NOT_KEY)],
        group: PS,
        since: "7.0.0",
        summary: "Post a message to a shard channel",
        handler: Some(spublish),
        ..Spec::DEFAULT
    },
    Spec {
        name: "ssubscribe",
        arity: -2,
        flags: PUBSUB | NOSCRIPT | LOADING | STALE | SUBSCRIBED_OK | PUSH_REPLIES | CHANNELS_ALL,
        keys: &[KeySpec {
            find_keys: FindKeys::Range {
                last_key: -1,
                step: 1,
                limit: 0,
            },
            ..KeySpec::at(1, NOT_KEY)
        }],
        group: PS,
        since: "7.0.0",
        summary: "Listens for messages published to the given shard channels.",
        handler: Some(ssubscribe),
        ..Spec::DEFAULT
    },
    Spec {
        name: "sunsubscribe",
        arity: -1,
        flags: PUBSUB | NOSCRIPT | LOADING | STALE | SUBSCRIBED_OK | PUSH_REPLIES,
        keys: &[KeySpec {
            find_keys: FindKeys::Range {
                last_key: -1,
                step: 1,
                limit: 0,
            },
            ..KeySpec::at(1, NOT_KEY)
        }],
        group: PS,
        since: "7.0.0",
        summary: "Stops listening to messages posted to shard channels.",
        handler: Some(sunsubscribe),
        ..Spec::DEFAULT
    },
];

static PUBSUB_SUBS: &[Spec] = &[
    Spec {
        name: "pubsub|channels",
        arity: -2,
        flags: PUBSUB | LOADING | STALE,
        group: PS,
        since: "2.8.0",
        summary: "Returns the active channels.",
        handler: Some(pubsub_channels),
        ..Spec::DEFAULT
    },
    Spec {
        name: "pubsub|help",
        arity: 2,
        flags: LOADING | STALE,
        group: PS,
        since: "6.2.0",
        summary: "Returns helpful text about the different subcommands.",
        handler: Some(pubsub_help),
        ..Spec::DEFAULT
    },
    Spec {
        name: "pubsub|numpat",
        arity: 2,
        flags: PUBSUB | LOADING | STALE,
        group: PS,
        since: "2.8.0",
        summary: "Returns a count of unique pattern subscriptions.",
        handler: Some(pubsub_numpat),
        ..Spec::DEFAULT
    },
    Spec {
        name: "pubsub|numsub",
        arity: -2,
        flags: PUBSUB | LOADING | STALE,
        group: PS,
        since: "2.8.0",
        summary: "Returns a count of subscribers to channels.",
        handler: Some(pubsub_numsub),
        ..Spec::DEFAULT
    },
    Spec {
        name: "pubsub|shardchannels",
        arity: -2,
        flags: PUBSUB | LOADING | STALE,
        group: PS,
        since: "7.0.0",
        summary: "Returns the active shard channels.",
        handler: Some(pubsub_channels),
        ..Spec::DEFAULT
    },
    Spec {
        name: "pubsub|shardnumsub",
        arity: -2,
        flags: PUBSUB | LOADING | STALE,
        group: PS,
        since: "7.0.0",
        summary: "Returns the count of subscribers of shard channels.",
        handler: Some(pubsub_numsub),
        ..Spec::DEFAULT
    },
];

// ---- mailboxes ----

/// Messages for one subscriber, waiting for its connection task.
#[derive(Debug, Default)]
pub struct Mailbox {
    inner: Mutex<MailboxInner>,
    /// Messages are waiting: checked before each command without taking the lock.
    pending: AtomicBool,
}

#[derive(Debug, Default)]
struct MailboxInner {
    items: VecDeque<Arc<[u8]>>,
    bytes: usize,
    /// When the soft limit was first exceeded (and not gone back under since).
    soft_since_ms: Option<u64>,
    /// Cut off for exceeding the limits: the connection is closing, further messages are dropped.
    closed: bool,
}

impl Mailbox {
    pub fn has_pending(&self) -> bool {
        self.pending.load(Relaxed)
    }

    /// Bytes queued.
    pub fn bytes(&self) -> usize {
        self.inner.lock().expect("mailbox lock").bytes
    }

    /// (messages, bytes) queued.
    pub fn queued(&self) -> (usize, usize) {
        let m = self.inner.lock().expect("mailbox lock");
        (m.items.len(), m.bytes)
    }

    /// Moves queued messages to `out`, stopping once about `max_bytes` were moved. Returns whether
    /// messages remain.
    pub fn drain_into(&self, out: &mut Vec<u8>, max_bytes: usize) -> bool {
        let mut m = self.inner.lock().expect("mailbox lock");
        let mut moved = 0;
        while moved < max_bytes {
            let Some(msg) = m.items.pop_front() else {
                break;
            };
            out.extend_from_slice(&msg);
            moved += msg.len();
            m.bytes -= msg.len();
        }
        let more = !m.items.is_empty();
        if !more {
            m.soft_since_ms = None;
            self.pending.store(false, Relaxed);
        }
        more
    }

    /// Queues a message, or cuts the subscriber off if that takes it over its limits.
    fn deliver(&self, msg: &Arc<[u8]>, to: &ClientHandle, srv: &ServerState, now_ms: u64) {
        self.deliver_within(msg, to, srv, now_ms, srv.pubsub.limits());
    }

    /// Queues a message, or cuts the receiver off if that takes it over `limits` (a class of
    /// `client-output-buffer-limit`).
    pub(crate) fn deliver_within(
        &self,
        msg: &Arc<[u8]>,
        to: &ClientHandle,
        srv: &ServerState,
        now_ms: u64,
        limits: OutputLimit,
    ) {
        let mut m = self.inner.lock().expect("mailbox lock");
        if m.closed {
            return;
        }
        m.items.push_back(msg.clone());
        m.bytes += msg.len();
        let held = (m.bytes + to.output_buf_bytes.load(Relaxed)) as u64;
        let over_hard = limits.hard_bytes > 0 && held > limits.hard_bytes;
        let mut over_soft = false;
        if limits.soft_bytes > 0 && held > limits.soft_bytes {
            let since = *m.soft_since_ms.get_or_insert(now_ms);
            over_soft = now_ms.saturating_sub(since) > limits.soft_seconds * 1000;
        } else {
            m.soft_since_ms = None;
        }
        if over_hard || over_soft {
            m.closed = true;
            m.items.clear();
            m.bytes = 0;
            drop(m);
            srv.stats
                .client_output_limit_disconnections
                .fetch_add(1, Relaxed);
            to.kill();
            return;
        }
        drop(m);
        self.pending.store(true, Relaxed);
        // A subscriber whose messages pile up grows: `maxmemory-clients` counts them.
        crate::client_eviction::account(srv, to);
        to.wake();
    }
}

// ---- the registry ----

/// Every subscription of the server.
#[derive(Debug, Default)]
pub struct PubSub {
    reg: RwLock<Registry>,
    hard_bytes: AtomicU64,
    soft_bytes: AtomicU64,
    soft_seconds: AtomicU64,
}

#[derive(Debug, Default)]
struct Registry {
    channels: HashMap<Vec<u8>, Vec<Arc<ClientHandle>>>,
    patterns: HashMap<Vec<u8>, Vec<Arc<ClientHandle>>>,
    shard_channels: HashMap<Vec<u8>, Vec<Arc<ClientHandle>>>,
}

/// The three kinds of subscription.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Channel,
    Pattern,
    Shard,
}

impl Kind {
    /// The reply words of (un)subscribing.
    fn words(self) -> (&'static [u8], &'static [u8]) {
        match self {
            Kind::Channel => (b"subscribe", b"unsubscribe"),
            Kind::Pattern => (b"psubscribe", b"punsubscribe"),
            Kind::Shard => (b"ssubscribe", b"sunsubscribe"),
        }
    }
}

impl Registry {
    fn map(&mut self, kind: Kind) -> &mut HashMap<Vec<u8>, Vec<Arc<ClientHandle>>> {
        match kind {
            Kind::Channel => &mut self.channels,
            Kind::Pattern => &mut self.patterns,
            Kind::Shard => &mut self.shard_channels,
        }
    }
}

/// A message encoded per protocol, on first need.
struct Encoded<'m> {
    parts: [&'m [u8]; 4],
    len: usize,
    frames: [Option<Arc<[u8]>>; 2],
}

impl<'m> Encoded<'m> {
    fn new(parts: [&'m [u8]; 4], len: usize) -> Self {
        Encoded {
            parts,
            len,
            frames: [None, None],
        }
    }

    fn write(&self, w: &mut ReplyWriter<'_>) {
        w.push(self.len);
        for p in &self.parts[..self.len] {
            w.bulk(p);
        }
    }

    fn frame(&mut self, resp3: bool) -> Arc<[u8]> {
        let parts = self.parts;
        let len = self.len;
        self.frames[resp3 as usize]
            .get_or_insert_with(|| {
                let mut v = Vec::new();
                let proto = if resp3 {
                    Protocol::Resp3
                } else {
                    Protocol::Resp2
                };
                Encoded {
                    parts,
                    len,
                    frames: [None, None],
                }
                .write(&mut ReplyWriter::new(&mut v, proto));
                v.into()
            })
            .clone()
    }
}

impl PubSub {
    pub fn set_limits(&self, l: OutputLimit) {
        self.hard_bytes.store(l.hard_bytes, Relaxed);
        self.soft_bytes.store(l.soft_bytes, Relaxed);
        self.soft_seconds.store(l.soft_seconds, Relaxed);
    }

    pub(crate) fn limits(&self) -> OutputLimit {
        OutputLimit {
            hard_bytes: self.hard_bytes.load(Relaxed),
            soft_bytes: self.soft_bytes.load(Relaxed),
            soft_seconds: self.soft_seconds.load(Relaxed),
        }
    }

    /// Channels with at least one subscriber (`pubsub_channels`).
    pub fn channels(&self) -> usize {
        self.reg.read().expect("pubsub lock").channels.len()
    }

    /// Distinct patterns subscribed to (`pubsub_patterns`, PUBSUB NUMPAT).
    pub fn patterns(&self) -> usize {
        self.reg.read().expect("pubsub lock").patterns.len()
    }

    fn add(&self, kind: Kind, name: &[u8], who: &Arc<ClientHandle>) {
        let mut reg = self.reg.write().expect("pubsub lock");
        reg.map(kind)
            .entry(name.to_vec())
            .or_default()
            .push(who.clone());
    }

    fn remove(&self, kind: Kind, name: &[u8], id: u64) {
        let mut reg = self.reg.write().expect("pubsub lock");
        let map = reg.map(kind);
        if let Some(v) = map.get_mut(name) {
            v.retain(|h| h.id != id);
            if v.is_empty() {
                map.remove(name);
            }
        }
    }

    /// Delivers a message to the channel's subscribers and to the matching patterns' subscribers;
    /// returns how many received it. `me` is the publisher, who gets its own copy in `out`.
    fn publish(
        &self,
        srv: &ServerState,
        me: u64,
        mut out: Option<&mut ReplyWriter<'_>>,
        channel: &[u8],
        message: &[u8],
        now_ms: u64,
    ) -> usize {
        let reg = self.reg.read().expect("pubsub lock");
        let mut receivers = 0;
        let mut send = |enc: &mut Encoded<'_>, to: &Arc<ClientHandle>| {
            receivers += 1;
            if let Some(out) = out.as_deref_mut().filter(|_| to.id == me) {
                enc.write(out);
            } else {
                let frame = enc.frame(to.resp.load(Relaxed) == 3);
                to.mailbox.deliver(&frame, to, srv, now_ms);
            }
        };
        if let Some(subs) = reg.channels.get(channel) {
            let mut enc = Encoded::new([b"message", channel, message, b""], 3);
            for to in subs {
                send(&mut enc, to);
            }
        }
        for (pattern, subs) in &reg.patterns {
            if glob_match(pattern, channel, false) {
                let mut enc = Encoded::new([b"pmessage", pattern, channel, message], 4);
                for to in subs {
                    send(&mut enc, to);
                }
            }
        }
        receivers
    }

    /// Delivers a message to a shard channel's subscribers (patterns never match shard
    /// channels); returns how many received it.
    fn publish_shard(
        &self,
        srv: &ServerState,
        me: u64,
        out: &mut ReplyWriter<'_>,
        channel: &[u8],
        message: &[u8],
        now_ms: u64,
    ) -> usize {
        let reg = self.reg.read().expect("pubsub lock");
        let Some(subs) = reg.shard_channels.get(channel) else {
            return 0;
        };
        let mut enc = Encoded::new([b"smessage", channel, message, b""], 3);
        for to in subs {
            if to.id == me {
                enc.write(out);
            } else {
                let frame = enc.frame(to.resp.load(Relaxed) == 3);
                to.mailbox.deliver(&frame, to, srv, now_ms);
            }
        }
        subs.len()
    }
}

// ---- per-client state ----

/// A client's subscriptions.
#[derive(Debug, Default)]
pub struct ClientSubs {
    channels: Names,
    patterns: Names,
    shard_channels: Names,
}

/// A set of channel or pattern names that remembers the order they were subscribed in: an
/// UNSUBSCRIBE or PUNSUBSCRIBE without arguments answers in that order, as Redis 7.0's list of
/// patterns does (its channels are a dict, in no order a client may rely on).
#[derive(Debug, Default)]
struct Names {
    next: u64,
    map: HashMap<Vec<u8>, u64>,
}

impl Names {
    fn insert(&mut self, name: &[u8]) -> bool {
        if self.map.contains_key(name) {
            return false;
        }
        self.map.insert(name.to_vec(), self.next);
        self.next += 1;
        true
    }

    fn remove(&mut self, name: &[u8]) -> bool {
        self.map.remove(name).is_some()
    }

    fn len(&self) -> usize {
        self.map.len()
    }

    /// Every name, oldest subscription first.
    fn ordered(&self) -> Vec<Vec<u8>> {
        let mut v: Vec<(&Vec<u8>, u64)> = self.map.iter().map(|(k, &n)| (k, n)).collect();
        v.sort_unstable_by_key(|&(_, n)| n);
        v.into_iter().map(|(k, _)| k.clone()).collect()
    }

    fn drain(&mut self) -> Vec<Vec<u8>> {
        let v = self.ordered();
        self.map.clear();
        v
    }
}

impl ClientSubs {
    /// Every subscription, sharded ones included: while there is one, a RESP2 client is in
    /// subscribed mode (Redis's `CLIENT_PUBSUB`).
    pub fn count(&self) -> usize {
        self.channels.len() + self.patterns.len() + self.shard_channels.len()
    }

    /// The count in a reply of (un)subscribing `kind`: channels and patterns together, or the
    /// shard channels alone.
    fn count_of(&self, kind: Kind) -> usize {
        match kind {
            Kind::Channel | Kind::Pattern => self.channels.len() + self.patterns.len(),
            Kind::Shard => self.shard_channels.len(),
        }
    }

    fn set(&mut self, kind: Kind) -> &mut Names {
        match kind {
            Kind::Channel => &mut self.channels,
            Kind::Pattern => &mut self.patterns,
            Kind::Shard => &mut self.shard_channels,
        }
    }
}

fn publish_counts(client: &Client) {
    let h = &client.handle;
    h.subs.store(client.subs.channels.len(), Relaxed);
    h.psubs.store(client.subs.patterns.len(), Relaxed);
    h.ssubs.store(client.subs.shard_channels.len(), Relaxed);
}

/// Drops every subscription, without replies (RESET, a closing connection).
pub fn unsubscribe_all(srv: &ServerState, client: &mut Client) {
    let id = client.id();
    for kind in [Kind::Channel, Kind::Pattern, Kind::Shard] {
        for name in client.subs.set(kind).drain() {
            srv.pubsub.remove(kind, &name, id);
        }
    }
    publish_counts(client);
}

// ---- commands ----

fn subscribe_generic(ctx: &mut Ctx<'_>, args: &Args<'_>, kind: Kind) -> CmdResult {
    let (word, _) = kind.words();
    for name in args.tail(1).iter() {
        if ctx.client.subs.set(kind).insert(name) {
            ctx.srv.pubsub.add(kind, name, &ctx.client.handle);
        }
        ctx.out.push(3);
        ctx.out.bulk(word);
        ctx.out.bulk(name);
        ctx.out.int(ctx.client.subs.count_of(kind) as i64);
    }
    publish_counts(ctx.client);
    Ok(())
}

fn unsubscribe_generic(ctx: &mut Ctx<'_>, args: &Args<'_>, kind: Kind) -> CmdResult {
    let (_, word) = kind.words();
    let names: Vec<Vec<u8>> = if args.len() > 1 {
        args.tail(1).iter().map(<[u8]>::to_vec).collect()
    } else {
        ctx.client.subs.set(kind).ordered()
    };
    let id = ctx.client.id();
    for name in &names {
        if ctx.client.subs.set(kind).remove(name) {
            ctx.srv.pubsub.remove(kind, name, id);
        }
        ctx.out.push(3);
        ctx.out.bulk(word);
        ctx.out.bulk(name);
        ctx.out.int(ctx.client.subs.count_of(kind) as i64);
    }
    if names.is_empty() {
        ctx.out.push(3);
        ctx.out.bulk(word);
        ctx.out.null();
        ctx.out.int(ctx.client.subs.count_of(kind) as i64);
    }
    publish_counts(ctx.client);
    Ok(())
}

fn subscribe(ctx: &mut Ctx<'_>, args: &Args<'_>) -> CmdResult {
    subscribe_generic(ctx, args, Kind::Channel)
}

fn psubscribe(ctx: &mut Ctx<'_>, args: &Args<'_>) -> CmdResult {
    subscribe_generic(ctx, args, Kind::Pattern)
}

fn ssubscribe(ctx: &mut Ctx<'_>, args: &Args<'_>) -> CmdResult {
    // Inside MULTI (Redis's "deny blocking" clients) a shard subscription is refused, where a
    // plain one is allowed.
    if ctx.in_exec {
        return Err(ReplyError::err_static(
            "SSUBSCRIBE isn't allowed for a DENY BLOCKING client",
        ));
    }
    subscribe_generic(ctx, args, Kind::Shard)
}

fn sunsubscribe(ctx: &mut Ctx<'_>, args: &Args<'_>) -> CmdResult {
    unsubscribe_generic(ctx, args, Kind::Shard)
}

fn unsubscribe(ctx: &mut Ctx<'_>, args: &Args<'_>) -> CmdResult {
    unsubscribe_generic(ctx, args, Kind::Channel)
}

fn punsubscribe(ctx: &mut Ctx<'_>, args: &Args<'_>) -> CmdResult {
    unsubscribe_generic(ctx, args, Kind::Pattern)
}

/// SPUBLISH: to the shard channel's subscribers on this node only (a shard's replicas do not
/// receive it, see README "Differences from Redis").
fn spublish(ctx: &mut Ctx<'_>, args: &Args<'_>) -> CmdResult {
    let me = ctx.client.id();
    let n = ctx.srv.pubsub.publish_shard(
        ctx.srv,
        me,
        &mut ctx.out,
        args.get(1),
        args.get(2),
        ctx.now_ms,
    );
    ctx.out.int(n as i64);
    Ok(())
}

fn publish(ctx: &mut Ctx<'_>, args: &Args<'_>) -> CmdResult {
    let me = ctx.client.id();
    let n = ctx.srv.pubsub.publish(
        ctx.srv,
        me,
        Some(&mut ctx.out),
        args.get(1),
        args.get(2),
        ctx.now_ms,
    );
    ctx.out.int(n as i64);
    Ok(())
}

/// Publishes a message from the server itself (keyspace notifications): every receiver, the
/// client whose command raised it included, gets it through its mailbox, after that command's
/// reply.
pub(crate) fn publish_server(srv: &ServerState, channel: &[u8], message: &[u8], now_ms: u64) {
    srv.pubsub.publish(srv, 0, None, channel, message, now_ms);
}

/// PUBSUB CHANNELS [pattern] and SHARDCHANNELS [pattern].
fn pubsub_channels(ctx: &mut Ctx<'_>, args: &Args<'_>) -> CmdResult {
    if args.len() > 3 {
        return Err(err!(
            "unknown subcommand or wrong number of arguments for '{}'. Try PUBSUB HELP.",
            args.str_lossy(1)
        ));
    }
    let names: Vec<Vec<u8>> = {
        let pattern = (args.len() == 3).then(|| args.get(2));
        let reg = ctx.srv.pubsub.reg.read().expect("pubsub lock");
        let map = if args.is(1, "SHARDCHANNELS") {
            &reg.shard_channels
        } else {
            &reg.channels
        };
        map.keys()
            .filter(|c| pattern.is_none_or(|p| glob_match(p, c, false)))
            .cloned()
            .collect()
    };
    ctx.out.array(names.len());
    for n in &names {
        ctx.out.bulk(n);
    }
    Ok(())
}

/// PUBSUB NUMSUB [channel ...] and SHARDNUMSUB [channel ...].
fn pubsub_numsub(ctx: &mut Ctx<'_>, args: &Args<'_>) -> CmdResult {
    let shard = args.is(1, "SHARDNUMSUB");
    let counts: Vec<usize> = {
        let reg = ctx.srv.pubsub.reg.read().expect("pubsub lock");
        args.tail(2)
            .iter()
            .map(|c| {
                if shard {
                    reg.shard_channels.get(c).map_or(0, Vec::len)
                } else {
                    reg.channels.get(c).map_or(0, Vec::len)
                }
            })
            .collect()
    };
    ctx.out.array(2 * counts.len());
    for (c, n) in args.tail(2).iter().zip(counts) {
        ctx.out.bulk(c);
        ctx.out.int(n as i64);
    }
    Ok(())
}

fn pubsub_numpat(ctx: &mut Ctx<'_>, _args: &Args<'_>) -> CmdResult {
    ctx.out.int(ctx.srv.pubsub.patterns() as i64);
    Ok(())
}

fn pubsub_help(ctx: &mut Ctx<'_>, _args: &Args<'_>) -> CmdResult {
    let lines = [
        "PUBSUB <subcommand> [<arg> [value] [opt] ...]. Subcommands are:",
        "CHANNELS [<pattern>]",
        "    Return the currently active channels matching a <pattern> (default: '*').",
        "NUMPAT",
        "    Return number of subscriptions to patterns.",
        "NUMSUB [<channel> ...]",
        "    Return the number of subscribers for the specified channels, excluding",
        "    pattern subscriptions(default: no channels).",
        "SHARDCHANNELS [<pattern>]",
        "    Return the currently active shard level channels matching a <pattern> (default: '*').",
        "SHARDNUMSUB [<shardchannel> ...]",
        "    Return the number of subscribers for the specified shard level channel(s)",
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
    use std::sync::Arc;

    use super::*;
    use crate::{Hooks, OwnedArgs, config};

    fn server() -> ServerState {
        ServerState::new(config::Config::default(), 1_000_000, 7, Hooks::default())
    }

    fn client(id: u64) -> Client {
        Client::new(
            Arc::new(ClientHandle::new(id, "a".into(), "b".into(), 0)),
            true,
        )
    }

    fn run(srv: &ServerState, c: &mut Client, cmd: &[&str]) -> String {
        let o = OwnedArgs::new(cmd.iter());
        let mut out = Vec::new();
        crate::execute(srv, c, &o.args(), &mut out, 1_000_000);
        String::from_utf8(out).unwrap()
    }

    fn mailbox(c: &Client) -> String {
        let mut out = Vec::new();
        c.handle.mailbox.drain_into(&mut out, usize::MAX);
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn subscribed_resp2_client_is_restricted_and_pings_as_an_array() {
        let srv = server();
        let mut a = client(1);
        assert_eq!(
            run(&srv, &mut a, &["SUBSCRIBE", "a", "b"]),
            "*3\r\n$9\r\nsubscribe\r\n$1\r\na\r\n:1\r\n*3\r\n$9\r\nsubscribe\r\n$1\r\nb\r\n:2\r\n"
        );
        assert_eq!(
            run(&srv, &mut a, &["PING"]),
            "*2\r\n$4\r\npong\r\n$0\r\n\r\n"
        );
        assert_eq!(
            run(&srv, &mut a, &["PING", "hi"]),
            "*2\r\n$4\r\npong\r\n$2\r\nhi\r\n"
        );
        assert_eq!(
            run(&srv, &mut a, &["GET", "x"]),
            "-ERR Can't execute 'get': only (P|S)SUBSCRIBE / (P|S)UNSUBSCRIBE / PING / QUIT / RESET are allowed in this context\r\n"
        );
        assert_eq!(
            run(&srv, &mut a, &["PSUBSCRIBE", "p*"]),
            "*3\r\n$10\r\npsubscribe\r\n$2\r\np*\r\n:3\r\n"
        );
        assert_eq!(a.handle.subs.load(Relaxed), 2);
        assert_eq!(a.handle.psubs.load(Relaxed), 1);
        run(&srv, &mut a, &["UNSUBSCRIBE"]);
        assert_eq!(
            run(&srv, &mut a, &["PUNSUBSCRIBE"]),
            "*3\r\n$12\r\npunsubscribe\r\n$2\r\np*\r\n:0\r\n"
        );
        assert_eq!(
            run(&srv, &mut a, &["UNSUBSCRIBE"]),
            "*3\r\n$11\r\nunsubscribe\r\n$-1\r\n:0\r\n"
        );
        assert_eq!(run(&srv, &mut a, &["GET", "x"]), "$-1\r\n");
        assert_eq!((srv.pubsub.channels(), srv.pubsub.patterns()), (0, 0));
    }

    #[test]
    fn publish_reaches_channels_and_patterns_in_each_protocol() {
        let srv = server();
        let (mut a, mut b, mut p) = (client(1), client(2), client(3));
        run(&srv, &mut a, &["SUBSCRIBE", "news"]);
        run(&srv, &mut b, &["HELLO", "3"]);
        run(&srv, &mut b, &["PSUBSCRIBE", "n*"]);
        assert_eq!(run(&srv, &mut p, &["PUBLISH", "news", "hi"]), ":2\r\n");
        assert_eq!(
            mailbox(&a),
            "*3\r\n$7\r\nmessage\r\n$4\r\nnews\r\n$2\r\nhi\r\n"
        );
        assert_eq!(
            mailbox(&b),
            ">4\r\n$8\r\npmessage\r\n$2\r\nn*\r\n$4\r\nnews\r\n$2\r\nhi\r\n"
        );
        assert!(!a.handle.mailbox.has_pending());
        assert_eq!(run(&srv, &mut p, &["PUBLISH", "other", "x"]), ":0\r\n");
        // A RESP3 subscriber publishing to itself sees the message before the reply.
        assert_eq!(
            run(&srv, &mut b, &["PUBLISH", "nope", "m"]),
            ">4\r\n$8\r\npmessage\r\n$2\r\nn*\r\n$4\r\nnope\r\n$1\r\nm\r\n:1\r\n"
        );
        assert_eq!(
            run(&srv, &mut p, &["PUBSUB", "NUMSUB", "news", "x"]),
            "*4\r\n$4\r\nnews\r\n:1\r\n$1\r\nx\r\n:0\r\n"
        );
        assert_eq!(run(&srv, &mut p, &["PUBSUB", "NUMPAT"]), ":1\r\n");
        assert_eq!(
            run(&srv, &mut p, &["PUBSUB", "CHANNELS", "n*"]),
            "*1\r\n$4\r\nnews\r\n"
        );
        assert_eq!(run(&srv, &mut p, &["PUBSUB", "CHANNELS", "x*"]), "*0\r\n");
        assert_eq!(
            run(&srv, &mut p, &["pubsub", "channels", "a", "b"]),
            "-ERR unknown subcommand or wrong number of arguments for 'channels'. Try PUBSUB HELP.\r\n"
        );
        crate::client_closed(&srv, &mut a);
        crate::client_closed(&srv, &mut b);
        assert_eq!((srv.pubsub.channels(), srv.pubsub.patterns()), (0, 0));
        assert_eq!(run(&srv, &mut p, &["PUBLISH", "news", "hi"]), ":0\r\n");
    }

    #[test]
    fn a_subscriber_over_its_limit_is_cut_off() {
        let srv = server();
        srv.pubsub.set_limits(OutputLimit {
            hard_bytes: 1000,
            soft_bytes: 0,
            soft_seconds: 0,
        });
        let (mut a, mut p) = (client(1), client(2));
        run(&srv, &mut a, &["SUBSCRIBE", "c"]);
        let big = "x".repeat(300);
        for _ in 0..3 {
            run(&srv, &mut p, &["PUBLISH", "c", &big]);
        }
        assert!(!a.handle.killed.load(Relaxed));
        run(&srv, &mut p, &["PUBLISH", "c", &big]);
        assert!(a.handle.killed.load(Relaxed));
        assert_eq!(a.handle.mailbox.bytes(), 0, "its queue is dropped");
        assert_eq!(
            srv.stats.client_output_limit_disconnections.load(Relaxed),
            1
        );
        run(&srv, &mut p, &["PUBLISH", "c", &big]);
        assert_eq!(a.handle.mailbox.bytes(), 0, "nothing queued once cut off");
    }

    #[test]
    fn the_soft_limit_allows_a_burst_for_its_seconds() {
        let srv = server();
        srv.pubsub.set_limits(OutputLimit {
            hard_bytes: 0,
            soft_bytes: 100,
            soft_seconds: 1,
        });
        let a = client(1);
        let msg: Arc<[u8]> = vec![b'x'; 200].into();
        a.handle.mailbox.deliver(&msg, &a.handle, &srv, 10_000);
        a.handle.mailbox.deliver(&msg, &a.handle, &srv, 10_900);
        assert!(!a.handle.killed.load(Relaxed), "within the soft seconds");
        a.handle.mailbox.deliver(&msg, &a.handle, &srv, 11_001);
        assert!(a.handle.killed.load(Relaxed));
    }
}
