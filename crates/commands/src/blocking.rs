//! Blocking commands — BLPOP, BRPOP, BLMOVE, BRPOPLPUSH, BLMPOP, BZPOPMIN, BZPOPMAX, BZMPOP — and
//! the registry of clients waiting on keys.
//!
//! **How a client blocks.** A blocking command first does its non-blocking work (the pop/move
//! helpers of `lists` and `zsets`). If every key is empty it writes no reply and asks to wait
//! ([`Ctx::block_on`]); `execute` returns `Outcome::Block` and the connection loop registers the
//! client on those keys ([`Blocking::register`]), runs the request once more (a write may have
//! landed between the look and the registration), then waits for a wake-up, its deadline, a kill or
//! the socket closing. On a wake-up it runs the same request again (`RunMode::Retry`, from an owned
//! copy of the arguments): served, it replies and leaves; still nothing, it keeps waiting *in its
//! place*. At the deadline it runs once more with `RunMode::Timeout`, where the command replies as
//! if nothing came (the null reply), exactly as it does inside MULTI, where it never blocks.
//!
//! **Wake-ups.** After any `WRITE` command, if anyone waits at all (one relaxed load otherwise),
//! the first waiter of each key the command names is signalled, in every database (a MOVE or COPY
//! to another database creates the key there; a spurious wake-up costs one retry). Write commands
//! without key positions (FLUSHALL, SWAPDB, the `*MPOP` family) signal the first waiter of every key.
//! Waiters of a key are served in the order they blocked: only the head is signalled, and when a
//! waiter leaves after being served (or with a wake-up it did not use) the next head is signalled,
//! so a push of several elements reaches several clients. Inside EXEC the same happens per command;
//! the woken clients run once EXEC has released the exec gate, so they see the whole transaction.
//!
//! **Retries and types.** On a retry a key of another type is treated as empty (Redis serves a
//! blocked client only from keys of the type it waits for), so a key turned into a string does not
//! end the wait with an error.

use crate::error::ReplyError;
use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering::AcqRel, Ordering::Relaxed};
use std::sync::{Arc, Mutex};

use shoal_keyspace::Kind;
use shoal_resp::ReplyWriter;

use crate::args::parse_f64;
use crate::lists::{self, End, PopReply};
use crate::state::{ClientHandle, ServerState};
use crate::table::{FindKeys, Group, KeySpec, Spec, flag::*, key, key::*};
use crate::zsets;
use crate::{Args, CmdResult, Ctx, Locked};

pub static COMMANDS: &[Spec] = &[
    Spec {
        name: "blmove",
        arity: 6,
        flags: WRITE | DENYOOM | NOSCRIPT | BLOCKING,
        keys: &[
            KeySpec::at(1, RW | ACCESS | DELETE),
            KeySpec::at(2, RW | INSERT),
        ],
        group: Group::List,
        since: "6.2.0",
        summary: "Pops an element from a list, pushes it to another list and returns it. Blocks until an element is available otherwise. Deletes the list if the last element was moved.",
        handler: Some(blmove),
        ..Spec::DEFAULT
    },
    Spec {
        name: "blmpop",
        arity: -5,
        flags: WRITE | BLOCKING | MOVABLEKEYS,
        keys: &[KeySpec::at(2, RW | ACCESS | DELETE).find(FindKeys::Keynum {
            keynum_idx: 0,
            first_key: 1,
            step: 1,
        })],
        group: Group::List,
        since: "7.0.0",
        summary: "Pops the first element from one of multiple lists. Blocks until an element is available otherwise. Deletes the list if the last element was popped.",
        handler: Some(blmpop),
        ..Spec::DEFAULT
    },
    Spec {
        name: "blpop",
        arity: -3,
        flags: WRITE | NOSCRIPT | BLOCKING,
        keys: &[KeySpec::at(1, RW | ACCESS | DELETE).find(FindKeys::Range {
            last_key: -2,
            step: 1,
            limit: 0,
        })],
        group: Group::List,
        since: "2.0.0",
        summary: "Removes and returns the first element in a list. Blocks until an element is available otherwise. Deletes the list if the last element was popped.",
        handler: Some(blpop),
        ..Spec::DEFAULT
    },
    Spec {
        name: "brpop",
        arity: -3,
        flags: WRITE | NOSCRIPT | BLOCKING,
        keys: &[KeySpec::at(1, RW | ACCESS | DELETE).find(FindKeys::Range {
            last_key: -2,
            step: 1,
            limit: 0,
        })],
        group: Group::List,
        since: "2.0.0",
        summary: "Removes and returns the last element in a list. Blocks until an element is available otherwise. Deletes the list if the last element was popped.",
        handler: Some(brpop),
        ..Spec::DEFAULT
    },
    Spec {
        name: "brpoplpush",
        arity: 4,
        flags: WRITE | DENYOOM | NOSCRIPT | BLOCKING,
        keys: &[
            KeySpec::at(1, RW | ACCESS | DELETE),
            KeySpec::at(2, RW | INSERT),
        ],
        group: Group::List,
        since: "2.2.0",
        summary: "Pops an element from a list, pushes it to another list and returns it. Block until an element is available otherwise. Deletes the list if the last element was popped.",
        handler: Some(brpoplpush),
        ..Spec::DEFAULT
    },
    Spec {
        name: "bzmpop",
        arity: -5,
        flags: WRITE | BLOCKING | MOVABLEKEYS,
        keys: &[KeySpec::at(2, RW | ACCESS | DELETE).find(FindKeys::Keynum {
            keynum_idx: 0,
            first_key: 1,
            step: 1,
        })],
        group: Group::SortedSet,
        since: "7.0.0",
        summary: "Removes and returns a member by score from one or more sorted sets. Blocks until a member is available otherwise. Deletes the sorted set if the last element was popped.",
        handler: Some(bzmpop),
        ..Spec::DEFAULT
    },
    Spec {
        name: "bzpopmax",
        arity: -3,
        flags: WRITE | NOSCRIPT | BLOCKING | FAST,
        keys: &[KeySpec::at(1, RW | ACCESS | DELETE).find(FindKeys::Range {
            last_key: -2,
            step: 1,
            limit: 0,
        })],
        group: Group::SortedSet,
        since: "5.0.0",
        summary: "Removes and returns the member with the highest score from one or more sorted sets. Blocks until a member available otherwise.  Deletes the sorted set if the last element was popped.",
        handler: Some(bzpopmax),
        ..Spec::DEFAULT
    },
    Spec {
        name: "bzpopmin",
        arity: -3,
        flags: WRITE | NOSCRIPT | BLOCKING | FAST,
        keys: &[KeySpec::at(1, RW | ACCESS | DELETE).find(FindKeys::Range {
            last_key: -2,
            step: 1,
            limit: 0,
        })],
        group: Group::SortedSet,
        since: "5.0.0",
        summary: "Removes and returns the member with the lowest score from one or more sorted sets. Blocks until a member is available otherwise. Deletes the sorted set if the last element was popped.",
        handler: Some(bzpopmin),
        ..Spec::DEFAULT
    },
];

// ---- the request and the registry ----

/// What a blocked command waits for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BlockRequest {
    pub keys: Vec<Vec<u8>>,
    pub db: usize,
    /// Absolute wall-clock deadline in ms; `None` waits forever.
    pub deadline_ms: Option<u64>,
    /// The request to run on wake-ups instead of the one sent, when it must remember what it
    /// saw (XREAD's `$` replaced by the ID it stood for).
    pub rewritten: Option<crate::args::OwnedArgs>,
}

/// Clients waiting on keys: per key, per database, a FIFO of waiters.
#[derive(Debug, Default)]
pub struct Blocking {
    queues: Mutex<HashMap<Vec<u8>, Vec<KeyQueue>>>,
    /// (key, waiter) registrations; 0 means writers skip the registry entirely.
    entries: AtomicUsize,
    /// Blocked clients (`blocked_clients`), and those of them with a timeout
    /// (`clients_in_timeout_table`).
    clients: AtomicUsize,
    timed: AtomicUsize,
}

#[derive(Debug)]
struct KeyQueue {
    db: usize,
    waiters: VecDeque<Arc<Waiter>>,
}

/// One blocked client.
#[derive(Debug)]
struct Waiter {
    handle: Arc<ClientHandle>,
    /// Woken up and not yet retried.
    signaled: AtomicBool,
    /// Its command completed (served or errored): the next waiter gets a chance.
    served: AtomicBool,
}

impl Waiter {
    fn signal(&self) {
        self.signaled.store(true, Relaxed);
        self.handle.wake();
    }
}

impl Blocking {
    /// Whether any client waits (checked after every write; a relaxed load).
    pub fn has_waiters(&self) -> bool {
        self.entries.load(Relaxed) > 0
    }

    pub fn blocked_clients(&self) -> usize {
        self.clients.load(Relaxed)
    }

    pub fn blocked_with_timeout(&self) -> usize {
        self.timed.load(Relaxed)
    }

    /// Queues a client on the keys of `req`, behind those already waiting. The registration
    /// lasts as long as the returned guard.
    pub fn register(&self, handle: Arc<ClientHandle>, req: &BlockRequest) -> Blocked<'_> {
        let mut keys = req.keys.clone();
        keys.sort_unstable();
        keys.dedup();
        let waiter = Arc::new(Waiter {
            handle: handle.clone(),
            signaled: AtomicBool::new(false),
            served: AtomicBool::new(false),
        });
        {
            let mut q = self.queues.lock().expect("blocking lock");
            for k in &keys {
                let per_db = q.entry(k.clone()).or_default();
                match per_db.iter_mut().find(|kq| kq.db == req.db) {
                    Some(kq) => kq.waiters.push_back(waiter.clone()),
                    None => per_db.push(KeyQueue {
                        db: req.db,
                        waiters: VecDeque::from([waiter.clone()]),
                    }),
                }
            }
            self.entries.fetch_add(keys.len(), Relaxed);
        }
        self.clients.fetch_add(1, Relaxed);
        let timed = req.deadline_ms.is_some();
        if timed {
            self.timed.fetch_add(1, Relaxed);
        }
        handle.blocked.store(true, Relaxed);
        Blocked {
            reg: self,
            waiter,
            keys,
            db: req.db,
            timed,
        }
    }

    /// Signals the first waiter of each of `keys`, in every database.
    pub fn signal_keys<'k>(&self, keys: impl Iterator<Item = &'k [u8]>) {
        let q = self.queues.lock().expect("blocking lock");
        for k in keys {
            if let Some(per_db) = q.get(k) {
                for kq in per_db {
                    if let Some(w) = kq.waiters.front() {
                        w.signal();
                    }
                }
            }
        }
    }

    /// Signals the first waiter of every key.
    pub fn signal_all(&self) {
        let q = self.queues.lock().expect("blocking lock");
        for kq in q.values().flatten() {
            if let Some(w) = kq.waiters.front() {
                w.signal();
            }
        }
    }
}

/// A client's registration; dropping it (served, timed out, disconnected, killed) removes it.
#[derive(Debug)]
pub struct Blocked<'a> {
    reg: &'a Blocking,
    waiter: Arc<Waiter>,
    keys: Vec<Vec<u8>>,
    db: usize,
    timed: bool,
}

impl Blocked<'_> {
    /// Consumes a pending wake-up.
    pub fn take_signal(&self) -> bool {
        self.waiter.signaled.swap(false, AcqRel)
    }

    /// The command completed: on leaving, the next waiter of each key gets a look at what is left.
    pub fn served(&self) {
        self.waiter.served.store(true, Relaxed);
    }
}

impl Drop for Blocked<'_> {
    fn drop(&mut self) {
        let pass_on = self.waiter.served.load(Relaxed) || self.waiter.signaled.load(Relaxed);
        let mut q = self.reg.queues.lock().expect("blocking lock");
        for k in &self.keys {
            let Some(per_db) = q.get_mut(k) else {
                debug_assert!(false, "registered key has no queue");
                continue;
            };
            if let Some(i) = per_db.iter().position(|kq| kq.db == self.db) {
                let kq = &mut per_db[i];
                if let Some(pos) = kq.waiters.iter().position(|w| Arc::ptr_eq(w, &self.waiter)) {
                    kq.waiters.remove(pos);
                    if let Some(next) = kq.waiters.front().filter(|_| pos == 0 && pass_on) {
                        next.signal();
                    }
                }
                if kq.waiters.is_empty() {
                    per_db.swap_remove(i);
                }
            }
            if per_db.is_empty() {
                q.remove(k);
            }
        }
        drop(q);
        self.reg.entries.fetch_sub(self.keys.len(), Relaxed);
        self.reg.clients.fetch_sub(1, Relaxed);
        if self.timed {
            self.reg.timed.fetch_sub(1, Relaxed);
        }
        self.waiter.handle.blocked.store(false, Relaxed);
    }
}

/// After a write command: wake the first waiter of each key it may have written (its key specs
/// say which: not the read-only sources of ZUNIONSTORE, say), or of every key when its specs
/// cannot tell (no keys found, or keys a spec may miss).
pub(crate) fn signal_written(srv: &ServerState, spec: &Spec, args: &Args<'_>) {
    let keys = match crate::keyspec::keys(spec, args) {
        Ok(k) if !k.is_empty() && k.iter().all(|k| k.flags & key::INCOMPLETE == 0) => k,
        _ => return srv.blocking.signal_all(),
    };
    // A key the command only reads cannot have become ready; flags 0 (Redis's fallback parser
    // gives none) may be anything, so it counts as written.
    let written = keys.iter().filter(|k| k.flags & key::RO == 0);
    srv.blocking.signal_keys(written.map(|k| args.get(k.pos)));
}

// ---- timeouts ----

const ERR_TIMEOUT_FLOAT: ReplyError =
    ReplyError::err_static("timeout is not a float or out of range");
const ERR_TIMEOUT_NEGATIVE: ReplyError = ReplyError::err_static("timeout is negative");
const ERR_TIMEOUT_RANGE: ReplyError = ReplyError::err_static("timeout is out of range");

/// Parses a timeout in seconds as Redis 7.0 does (`getTimeoutFromObjectOrReply`): a long double,
/// times 1000, rounded up to whole ms, converted to a C `long long` — where a value out of range
/// (infinity, 1e400) becomes the most negative one, hence "timeout is negative". 0 (or anything
/// that rounds to 0 ms) waits forever. Returns the absolute deadline in ms.
pub fn parse_timeout(arg: &[u8], now_ms: u64) -> Result<Option<u64>, ReplyError> {
    let secs = parse_f64(arg)
        .filter(|_| in_long_double_range(arg))
        .or_else(|| parse_hex_float(arg))
        .ok_or(ERR_TIMEOUT_FLOAT)?;
    // A positive value too small for f64 (1e-400) is still above 0 as a long double: 1 ms.
    let secs = if secs == 0.0 && !arg.starts_with(b"-") && nonzero_mantissa(arg) {
        f64::MIN_POSITIVE
    } else {
        secs
    };
    let ms = (secs * 1000.0).ceil();
    // i64::MAX as f64 is 2^63, the first value out of range.
    if !(ms >= i64::MIN as f64 && ms < i64::MAX as f64) {
        return Err(ERR_TIMEOUT_NEGATIVE);
    }
    let ms = ms as i64;
    if ms < 0 {
        return Err(ERR_TIMEOUT_NEGATIVE);
    }
    if ms == 0 {
        return Ok(None);
    }
    let now = now_ms.min(i64::MAX as u64) as i64;
    if ms > i64::MAX - now {
        return Err(ERR_TIMEOUT_RANGE);
    }
    Ok(Some((now + ms) as u64))
}

/// Whether a decimal number is within x87 long double range (what `strtold` accepts without
/// ERANGE): magnitude below ~1.2e4932, and zero or above ~3.6e-4951. `f64` saturates earlier, and
/// the outcome then differs (`1e5000` is "not a float" for Redis, infinity for us).
fn in_long_double_range(arg: &[u8]) -> bool {
    let s = arg
        .strip_prefix(b"-")
        .or(arg.strip_prefix(b"+"))
        .unwrap_or(arg);
    let (mantissa, exp) = match s.iter().position(|&c| c == b'e' || c == b'E') {
        Some(i) => (&s[..i], std::str::from_utf8(&s[i + 1..]).ok()),
        None => (s, None),
    };
    if !mantissa.iter().all(|c| c.is_ascii_digit() || *c == b'.') {
        return true; // inf, infinity
    }
    let exp: i64 = match exp {
        Some(e) => match e.parse() {
            Ok(v) => v,
            // An exponent too long for i64 is out of any range (unless the mantissa is zero).
            Err(_) => {
                return mantissa.iter().all(|c| *c == b'0' || *c == b'.');
            }
        },
        None => 0,
    };
    let point = mantissa
        .iter()
        .position(|&c| c == b'.')
        .unwrap_or(mantissa.len());
    let Some(first) = mantissa
        .iter()
        .position(|&c| c.is_ascii_digit() && c != b'0')
    else {
        return true; // zero
    };
    // Decimal exponent of the leading digit.
    let lead = if first < point {
        (point - first - 1) as i64
    } else {
        -((first - point) as i64)
    };
    let e = lead.saturating_add(exp);
    (-4951..=4931).contains(&e)
}

/// Whether the digits before any exponent include a non-zero one.
fn nonzero_mantissa(arg: &[u8]) -> bool {
    let hex = arg.windows(2).any(|w| w.eq_ignore_ascii_case(b"0x"));
    arg.iter()
        .skip_while(|c| !c.is_ascii_digit())
        .skip(if hex { 2 } else { 0 })
        .take_while(|&&c| {
            if hex {
                c != b'p' && c != b'P'
            } else {
                c != b'e' && c != b'E'
            }
        })
        .any(|&c| c.is_ascii_hexdigit() && c != b'0')
}

/// `strtold`'s hexadecimal form: `[+-]0x<hex>[.<hex>][p[+-]<dec>]`.
pub(crate) fn parse_hex_float(arg: &[u8]) -> Option<f64> {
    let (neg, s) = match arg.first()? {
        b'-' => (true, &arg[1..]),
        b'+' => (false, &arg[1..]),
        _ => (false, arg),
    };
    let s = s.strip_prefix(b"0x").or_else(|| s.strip_prefix(b"0X"))?;
    let (mantissa, exp) = match s.iter().position(|&c| c == b'p' || c == b'P') {
        Some(i) => (
            &s[..i],
            std::str::from_utf8(&s[i + 1..]).ok()?.parse::<i32>().ok()?,
        ),
        None => (s, 0),
    };
    let mut v = 0f64;
    let mut scale = 0i32;
    let mut seen_point = false;
    let mut digits = 0;
    for &c in mantissa {
        if c == b'.' && !seen_point {
            seen_point = true;
            continue;
        }
        let d = (c as char).to_digit(16)?;
        v = v * 16.0 + d as f64;
        digits += 1;
        if seen_point {
            scale -= 4;
        }
    }
    if digits == 0 {
        return None;
    }
    let v = v * 2f64.powi(exp.saturating_add(scale));
    Some(if neg { -v } else { v })
}

// ---- commands ----

/// XREAD/XREADGROUP found nothing: wait on `keys` (running `rewritten` on wake-ups, if given)
/// when allowed, else reply the null array.
pub(crate) fn nothing_yet_stream(
    ctx: &mut Ctx<'_>,
    keys: Vec<Vec<u8>>,
    deadline_ms: Option<u64>,
    rewritten: Option<crate::args::OwnedArgs>,
) {
    if ctx.may_block() {
        ctx.block_on(keys, deadline_ms);
        if let Some(b) = ctx.block.as_mut() {
            b.rewritten = rewritten;
        }
    } else {
        ctx.out.null_array();
    }
}

/// Replies "nothing came" with `null`, or asks to block on `keys` when allowed.
fn nothing_yet(
    ctx: &mut Ctx<'_>,
    keys: impl Iterator<Item = Vec<u8>>,
    deadline_ms: Option<u64>,
    null: fn(&mut ReplyWriter<'_>),
) {
    if ctx.may_block() {
        ctx.block_on(keys.collect(), deadline_ms);
    } else {
        null(&mut ctx.out);
    }
}

fn null_array(w: &mut ReplyWriter<'_>) {
    w.null_array();
}

fn null_bulk(w: &mut ReplyWriter<'_>) {
    w.null();
}

/// BLMOVE/BRPOPLPUSH reply a null bulk inside MULTI but a null array when the timeout expires,
/// as Redis 7.0 does.
fn bmove_null(ctx: &Ctx<'_>) -> fn(&mut ReplyWriter<'_>) {
    if ctx.in_exec { null_bulk } else { null_array }
}

/// On a retry, the keys that are not of `kind` are skipped (they are not what the client waits
/// for); on the first run they are kept, so the command fails with WRONGTYPE as in Redis.
fn candidates<'k>(
    ctx: &Ctx<'_>,
    locked: &mut Locked<'_>,
    keys: &[&'k [u8]],
    kind: Kind,
) -> Vec<&'k [u8]> {
    if !ctx.is_retry() {
        return keys.to_vec();
    }
    let (db, now) = (ctx.db(), ctx.now_ms);
    keys.iter()
        .copied()
        .filter(|k| {
            let (shard, slot) = locked.shard(k);
            shard
                .peek(db, slot, k, now)
                .is_none_or(|e| e.kind() == kind)
        })
        .collect()
}

/// BLPOP/BRPOP/BLMPOP: pop from the first non-empty list, or wait.
fn list_pop(
    ctx: &mut Ctx<'_>,
    keys: &[&[u8]],
    end: End,
    count: usize,
    shape: PopReply,
    deadline_ms: Option<u64>,
) -> CmdResult {
    let (db, now) = (ctx.db(), ctx.now_ms);
    let mut locked = ctx.lock_keys(keys.iter().copied());
    let version = ctx.version();
    let keys_now = candidates(ctx, &mut locked, keys, Kind::List);
    let found = lists::pop_first_nonempty(
        &mut locked,
        db,
        now,
        version,
        &keys_now,
        end,
        count,
        shape,
        &mut ctx.out,
    )?;
    drop(locked);
    if !found {
        nothing_yet(
            ctx,
            keys.iter().map(|k| k.to_vec()),
            deadline_ms,
            null_array,
        );
    }
    Ok(())
}

fn bpop(ctx: &mut Ctx<'_>, args: &Args<'_>, end: End) -> CmdResult {
    let deadline = parse_timeout(args.get(args.len() - 1), ctx.now_ms)?;
    let keys: Vec<&[u8]> = (1..args.len() - 1).map(|i| args.get(i)).collect();
    list_pop(ctx, &keys, end, 1, PopReply::KeyElement, deadline)
}

fn blpop(ctx: &mut Ctx<'_>, args: &Args<'_>) -> CmdResult {
    bpop(ctx, args, End::Left)
}

fn brpop(ctx: &mut Ctx<'_>, args: &Args<'_>) -> CmdResult {
    bpop(ctx, args, End::Right)
}

fn blmpop(ctx: &mut Ctx<'_>, args: &Args<'_>) -> CmdResult {
    let (keys, end, count) = lists::parse_mpop(args, 2)?;
    let deadline = parse_timeout(args.get(1), ctx.now_ms)?;
    list_pop(ctx, &keys, end, count, PopReply::KeyElements, deadline)
}

/// BLMOVE/BRPOPLPUSH: move from `src` to `dst`, or wait for `src`.
fn bmove(
    ctx: &mut Ctx<'_>,
    src: &[u8],
    dst: &[u8],
    from: End,
    to: End,
    deadline_ms: Option<u64>,
) -> CmdResult {
    let (db, now) = (ctx.db(), ctx.now_ms);
    let limits = ctx.srv.encoding_limits();
    let mut locked = ctx.lock_keys([src, dst].into_iter());
    let version = ctx.version();
    if candidates(ctx, &mut locked, &[src], Kind::List).is_empty() {
        drop(locked);
        nothing_yet(
            ctx,
            std::iter::once(src.to_vec()),
            deadline_ms,
            bmove_null(ctx),
        );
        return Ok(());
    }
    let moved = lists::lmove_locked(&mut locked, db, now, version, &limits, src, dst, from, to)?;
    drop(locked);
    match moved {
        Some(v) => ctx.out.bulk(&v),
        None => {
            let null = bmove_null(ctx);
            nothing_yet(ctx, std::iter::once(src.to_vec()), deadline_ms, null)
        }
    }
    Ok(())
}

fn blmove(ctx: &mut Ctx<'_>, args: &Args<'_>) -> CmdResult {
    let from = End::parse(args.get(3)).ok_or(crate::args::ERR_SYNTAX)?;
    let to = End::parse(args.get(4)).ok_or(crate::args::ERR_SYNTAX)?;
    let deadline = parse_timeout(args.get(5), ctx.now_ms)?;
    bmove(ctx, args.get(1), args.get(2), from, to, deadline)
}

fn brpoplpush(ctx: &mut Ctx<'_>, args: &Args<'_>) -> CmdResult {
    let deadline = parse_timeout(args.get(3), ctx.now_ms)?;
    bmove(
        ctx,
        args.get(1),
        args.get(2),
        End::Right,
        End::Left,
        deadline,
    )
}

/// BZPOPMIN/BZPOPMAX/BZMPOP: pop from the first non-empty sorted set, or wait.
#[allow(clippy::too_many_arguments)]
fn zset_pop(
    ctx: &mut Ctx<'_>,
    keys: &[&[u8]],
    max: bool,
    count: usize,
    nested: bool,
    deadline_ms: Option<u64>,
) -> CmdResult {
    let (db, now) = (ctx.db(), ctx.now_ms);
    let mut locked = ctx.lock_keys(keys.iter().copied());
    let version = ctx.version();
    let keys_now = candidates(ctx, &mut locked, keys, Kind::ZSet);
    for key in keys_now {
        let (shard, slot) = locked.shard(key);
        if let Some(items) = zsets::zpop_locked(shard, db, slot, key, max, count, version, now)? {
            drop(locked);
            if nested {
                zsets::reply_mpop(&mut ctx.out, key, &items);
            } else {
                zsets::reply_pop_flat(&mut ctx.out, Some(key), &items);
            }
            return Ok(());
        }
    }
    drop(locked);
    nothing_yet(
        ctx,
        keys.iter().map(|k| k.to_vec()),
        deadline_ms,
        null_array,
    );
    Ok(())
}

fn bzpop(ctx: &mut Ctx<'_>, args: &Args<'_>, max: bool) -> CmdResult {
    let deadline = parse_timeout(args.get(args.len() - 1), ctx.now_ms)?;
    let keys: Vec<&[u8]> = (1..args.len() - 1).map(|i| args.get(i)).collect();
    zset_pop(ctx, &keys, max, 1, false, deadline)
}

fn bzpopmin(ctx: &mut Ctx<'_>, args: &Args<'_>) -> CmdResult {
    bzpop(ctx, args, false)
}

fn bzpopmax(ctx: &mut Ctx<'_>, args: &Args<'_>) -> CmdResult {
    bzpop(ctx, args, true)
}

fn bzmpop(ctx: &mut Ctx<'_>, args: &Args<'_>) -> CmdResult {
    let p = zsets::parse_mpop(args, 2)?;
    let deadline = parse_timeout(args.get(1), ctx.now_ms)?;
    let keys: Vec<&[u8]> = p.keys.clone().map(|i| args.get(i)).collect();
    zset_pop(ctx, &keys, p.max, p.count, true, deadline)
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::state::Client;
    use crate::{Hooks, Outcome, OwnedArgs, RunMode, config};

    const NOW: u64 = 1_000_000;

    fn server() -> ServerState {
        ServerState::new(config::Config::default(), NOW, 7, Hooks::default())
    }

    fn client(id: u64) -> Client {
        Client::new(
            Arc::new(ClientHandle::new(id, "a".into(), "b".into(), 0)),
            true,
        )
    }

    fn run_as(srv: &ServerState, c: &mut Client, cmd: &[&str], mode: RunMode) -> (String, Outcome) {
        let o = OwnedArgs::new(cmd.iter());
        let mut out = Vec::new();
        let outcome = crate::execute_as(srv, c, &o.args(), &mut out, NOW, mode);
        (String::from_utf8(out).unwrap(), outcome)
    }

    fn run(srv: &ServerState, c: &mut Client, cmd: &[&str]) -> String {
        run_as(srv, c, cmd, RunMode::Normal).0
    }

    #[test]
    fn timeouts_parse_like_redis_7_0() {
        assert_eq!(parse_timeout(b"0", NOW), Ok(None));
        assert_eq!(parse_timeout(b"0.5", NOW), Ok(Some(NOW + 500)));
        assert_eq!(
            parse_timeout(b"0.0001", NOW),
            Ok(Some(NOW + 1)),
            "rounds up"
        );
        assert_eq!(parse_timeout(b"-0.0001", NOW), Ok(None), "rounds up to 0");
        assert_eq!(parse_timeout(b"1e-400", NOW), Ok(Some(NOW + 1)));
        assert_eq!(parse_timeout(b"0x10", NOW), Ok(Some(NOW + 16_000)));
        assert_eq!(parse_timeout(b"0x1p-20", NOW), Ok(Some(NOW + 1)));
        let neg = Err(ERR_TIMEOUT_NEGATIVE);
        let float = Err(ERR_TIMEOUT_FLOAT);
        assert_eq!(parse_timeout(b"-1", NOW), neg);
        assert_eq!(parse_timeout(b"inf", NOW), neg);
        assert_eq!(parse_timeout(b"1e400", NOW), neg);
        assert_eq!(parse_timeout(b"1e16", NOW), neg);
        assert_eq!(parse_timeout(b"x", NOW), float);
        assert_eq!(parse_timeout(b"nan", NOW), float);
        assert_eq!(parse_timeout(b" 1", NOW), float);
        assert_eq!(parse_timeout(b"1e5000", NOW), float);
        assert_eq!(parse_timeout(b"1e-5000", NOW), float);
        assert!(parse_timeout(b"9e15", NOW).unwrap().is_some());
        assert_eq!(
            parse_timeout(b"1000000", i64::MAX as u64 - 10),
            Err(ERR_TIMEOUT_RANGE)
        );
    }

    #[test]
    fn data_present_is_served_at_once_with_redis_shapes() {
        let srv = server();
        let mut c = client(1);
        run(&srv, &mut c, &["RPUSH", "l", "a", "b", "c"]);
        assert_eq!(
            run(&srv, &mut c, &["BLPOP", "nol", "l", "0"]),
            "*2\r\n$1\r\nl\r\n$1\r\na\r\n"
        );
        assert_eq!(
            run(&srv, &mut c, &["BRPOP", "l", "0"]),
            "*2\r\n$1\r\nl\r\n$1\r\nc\r\n"
        );
        assert_eq!(
            run(&srv, &mut c, &["BRPOPLPUSH", "l", "m", "0"]),
            "$1\r\nb\r\n"
        );
        assert_eq!(
            run(&srv, &mut c, &["BLMOVE", "m", "m2", "LEFT", "RIGHT", "0"]),
            "$1\r\nb\r\n"
        );
        run(&srv, &mut c, &["RPUSH", "l", "a", "b", "c"]);
        assert_eq!(
            run(
                &srv,
                &mut c,
                &["BLMPOP", "0", "2", "x", "l", "RIGHT", "COUNT", "2"]
            ),
            "*2\r\n$1\r\nl\r\n*2\r\n$1\r\nc\r\n$1\r\nb\r\n"
        );
        assert_eq!(
            run(&srv, &mut c, &["BLMPOP", "x", "a", "l", "LEFT"]),
            "-ERR numkeys should be greater than 0\r\n"
        );
        assert_eq!(
            run(&srv, &mut c, &["BLMPOP", "x", "1", "l", "LEFT"]),
            "-ERR timeout is not a float or out of range\r\n"
        );
        assert_eq!(
            run(&srv, &mut c, &["BLMOVE", "l", "m", "UP", "LEFT", "x"]),
            "-ERR syntax error\r\n"
        );
        run(&srv, &mut c, &["SET", "s", "v"]);
        assert_eq!(
            run(&srv, &mut c, &["BLPOP", "s", "0"]),
            "-WRONGTYPE Operation against a key holding the wrong kind of value\r\n"
        );
    }

    #[test]
    fn sorted_set_pops_reply_like_redis_in_both_protocols() {
        let srv = server();
        let mut c = client(1);
        run(&srv, &mut c, &["ZADD", "z", "1.5", "a", "2", "b", "3", "c"]);
        assert_eq!(
            run(&srv, &mut c, &["BZPOPMIN", "z", "0"]),
            "*3\r\n$1\r\nz\r\n$1\r\na\r\n$3\r\n1.5\r\n"
        );
        assert_eq!(
            run(
                &srv,
                &mut c,
                &["BZMPOP", "0", "1", "z", "MAX", "COUNT", "5"]
            ),
            "*2\r\n$1\r\nz\r\n*2\r\n*2\r\n$1\r\nc\r\n$1\r\n3\r\n*2\r\n$1\r\nb\r\n$1\r\n2\r\n"
        );
        run(&srv, &mut c, &["HELLO", "3"]);
        run(&srv, &mut c, &["ZADD", "z", "1", "a"]);
        assert_eq!(
            run(&srv, &mut c, &["BZPOPMAX", "z", "0"]),
            "*3\r\n$1\r\nz\r\n$1\r\na\r\n,1\r\n"
        );
        assert_eq!(
            run(
                &srv,
                &mut c,
                &["BZMPOP", "0", "1", "x", "MIN", "COUNT", "-1"]
            ),
            "-ERR count should be greater than 0\r\n"
        );
    }

    #[test]
    fn nothing_there_asks_to_block_and_replies_null_when_it_may_not() {
        let srv = server();
        let mut c = client(1);
        let (reply, outcome) = run_as(
            &srv,
            &mut c,
            &["BLPOP", "a", "b", "a", "1.5"],
            RunMode::Normal,
        );
        assert_eq!(reply, "", "no reply while blocked");
        let Outcome::Block(req) = outcome else {
            panic!("expected to block")
        };
        assert_eq!(req.keys, vec![b"a".to_vec(), b"b".to_vec(), b"a".to_vec()]);
        assert_eq!(req.deadline_ms, Some(NOW + 1500));
        let (reply, outcome) = run_as(&srv, &mut c, &["BLPOP", "a", "1"], RunMode::Timeout);
        assert_eq!(reply, "*-1\r\n");
        assert!(matches!(outcome, Outcome::Done));
        let (reply, _) = run_as(
            &srv,
            &mut c,
            &["BLMOVE", "a", "b", "LEFT", "LEFT", "1"],
            RunMode::Timeout,
        );
        // A timed-out BLMOVE replies a null array (a null bulk only inside MULTI), as Redis 7.0.
        assert_eq!(reply, "*-1\r\n");
        // Inside MULTI they never block.
        run(&srv, &mut c, &["MULTI"]);
        for cmd in [
            &["BLPOP", "l", "0"][..],
            &["BLMOVE", "l", "m", "LEFT", "RIGHT", "0"],
            &["BLMPOP", "0", "1", "l", "LEFT"],
            &["BZPOPMIN", "z", "0"],
        ] {
            run(&srv, &mut c, cmd);
        }
        assert_eq!(
            run(&srv, &mut c, &["EXEC"]),
            "*4\r\n*-1\r\n$-1\r\n*-1\r\n*-1\r\n"
        );
        // A retry skips a key that became another type instead of failing.
        run(&srv, &mut c, &["SET", "s", "v"]);
        let (reply, outcome) = run_as(&srv, &mut c, &["BLPOP", "s", "0"], RunMode::Retry);
        assert_eq!(reply, "");
        assert!(matches!(outcome, Outcome::Block(_)));
    }

    #[test]
    fn waiters_are_signalled_in_order_and_pass_wake_ups_on() {
        let srv = server();
        let (a, b, c) = (client(1), client(2), client(3));
        let req = |keys: &[&str]| BlockRequest {
            keys: keys.iter().map(|k| k.as_bytes().to_vec()).collect(),
            db: 0,
            deadline_ms: None,
            rewritten: None,
        };
        let ga = srv.blocking.register(a.handle.clone(), &req(&["k", "k2"]));
        let gb = srv.blocking.register(b.handle.clone(), &req(&["k"]));
        let gc = srv.blocking.register(c.handle.clone(), &req(&["k"]));
        assert_eq!(srv.blocking.blocked_clients(), 3);
        assert!(srv.blocking.has_waiters());
        assert!(b.handle.blocked.load(Relaxed));
        srv.blocking.signal_keys([&b"k"[..]].into_iter());
        assert!(ga.take_signal());
        assert!(!gb.take_signal() && !gc.take_signal(), "only the head");
        assert!(!ga.take_signal(), "consumed");
        // A served, leaving: B is next.
        ga.served();
        drop(ga);
        assert!(gb.take_signal());
        assert!(!gc.take_signal());
        // B times out without a pending wake-up: C is not woken for nothing.
        drop(gb);
        assert!(!gc.take_signal());
        // A write without keys wakes every head.
        let mut writer = client(9);
        run(&srv, &mut writer, &["FLUSHALL"]);
        assert!(gc.take_signal());
        drop(gc);
        assert_eq!(srv.blocking.blocked_clients(), 0);
        assert!(!srv.blocking.has_waiters());
        assert!(srv.blocking.queues.lock().unwrap().is_empty());
    }

    #[test]
    fn a_write_signals_the_keys_it_names_in_any_database() {
        let srv = server();
        let waiter = client(1);
        let mut writer = client(2);
        let g = srv.blocking.register(
            waiter.handle.clone(),
            &BlockRequest {
                keys: vec![b"k".to_vec()],
                db: 3,
                deadline_ms: None,
                rewritten: None,
            },
        );
        run(&srv, &mut writer, &["GET", "k"]);
        assert!(!g.take_signal(), "reads do not signal");
        run(&srv, &mut writer, &["LPUSH", "other", "x"]);
        assert!(!g.take_signal());
        run(&srv, &mut writer, &["LPUSH", "k", "x"]);
        assert!(
            g.take_signal(),
            "db 0 write of the key wakes the db 3 waiter (MOVE may follow)"
        );
        run(&srv, &mut writer, &["MULTI"]);
        run(&srv, &mut writer, &["RPUSH", "k", "y"]);
        assert!(!g.take_signal(), "queued, not run");
        run(&srv, &mut writer, &["EXEC"]);
        assert!(g.take_signal());
    }
}
