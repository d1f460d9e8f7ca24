//! Cache-fill leases and stale-while-revalidate (DESIGN.md §3, issue 12): shoal's protection of
//! the data source behind the cache against *breakdown* (a hot key misses and every caller loads
//! it at once). Not to be confused with the server's failover write lease (`server::lease`).
//!
//! - `GETLEASE key [PX lease-ms]` → always a three-element array `[status, value, extra]`:
//!   - `hit`   value, nil        — a fresh value;
//!   - `stale` value, token|nil  — past its stale-after deadline: serve it; the first reader also
//!     gets a token (a refresh lease), the others nil;
//!   - `miss`  nil, token        — absent: load it and fill it with `SETLEASE`;
//!   - `wait`  nil, ms           — absent and another caller holds the lease: retry in `ms`;
//!   - `miss`  nil, nil          — absent and the lease table is full (`lease-max-keys`): load it
//!     and write it as you would without leases.
//! - `SETLEASE key token value [EX s|PX ms|EXAT s|PXAT ms] [STALE ms]` → `OK` when the token is
//!   this key's live lease and nothing wrote the key since it was granted, else nil (the value
//!   loaded is then possibly older than what a writer stored or deleted: it is dropped).
//! - `SETSTALE key value EX s|PX ms|EXAT s|PXAT ms STALE ms` → `OK`: a plain write with
//!   stale-while-revalidate.
//!
//! **Fresh, stale, expired.** `STALE ms` keeps a value `ms` longer than its expiry option says,
//! marked stale: `PX 60000 STALE 10000` is fresh for 60 s and served stale for 10 s more, as
//! HTTP's `max-age=60, stale-while-revalidate=10`. The key's TTL (TTL, PTTL, when it goes away) is
//! the later, hard deadline; the stale-after one is kept in the entry (`Entry::stale_ms`), so it
//! replicates in `SHOALPUT`, is saved in snapshots, moves with slot migration and survives a
//! restart like any expiry. Plain GET returns a stale value as any value, so Redis clients keep
//! working; only GETLEASE tells fresh from stale, by its status (`stale`), in RESP3 as in RESP2:
//! the same three-element array, its nulls RESP3's `_` (a map or an attribute on GET would give
//! RESP3 clients a second shape to parse for no more information). A write that replaces the value without STALE
//! (SET, SETLEASE without STALE) ends it; EXPIRE and PERSIST change the hard deadline only.
//!
//! **Why a write between grant and fill drops the fill.** A token is the HLC value taken when it
//! was granted, under the key's shard lock, so every later write of the key carries a larger
//! version: a fill finding the key at a version ≥ its token refuses. Deletes leave no version, so
//! before any write command runs, the leases on the keys it may modify are dropped
//! ([`before_write`], from `run_command`, also for commands inside EXEC and scripts); a write
//! command that names no key (FLUSHALL, FLUSHDB, SWAPDB) drops every lease. A DEL of a key that
//! is absent still drops its lease, which is memcache's rule: the writer updated the database,
//! so a value loaded before that must not be stored. The fill checks and writes under the shard
//! lock, and a writer drops the lease before taking it, so a fill and a delete are ordered.
//!
//! **Leases are node-local, not replicated.** A lease lives at most `lease-ttl-ms` and only
//! coordinates loaders; replicating it would put an effect on the stream for every miss. After a
//! failover the new primary knows no token, so a fill with an old token is refused (never a stale
//! set) and the next GETLEASE grants a new one: at worst one extra load per key in flight. GETLEASE
//! is a write command so that replicas refuse it (`-READONLY`) and cluster clients send it to the
//! primary, where fills go. Writes arriving from a primary's stream or an active-active peer do
//! not drop leases but do move versions, so the version check still refuses those fills, except
//! after a delete of a key that was absent at grant.
//!
//! **Bounds.** At most `lease-max-keys` keys hold a lease; past it, expired leases of the part are
//! swept and, if none were, GETLEASE answers a lease-less miss. A waiter's hint is at most
//! [`WAIT_HINT_MS_MAX`].

use std::collections::HashMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering::Relaxed};

use shoal_keyspace::{Entry, Payload};

use crate::args::ERR_SYNTAX;
use crate::err;
use crate::error::ReplyError;
use crate::strings::parse_expire;
use crate::table::{Group, KeySpec, Spec, flag::*, key::*};
use crate::{Args, CmdResult, Ctx};

/// Most milliseconds a waiter is told to wait before asking again: a loader usually takes tens of
/// milliseconds, far less than a lease lives, so hinting the lease's remaining life would make
/// waiters sleep through the fill.
pub const WAIT_HINT_MS_MAX: u64 = 20;
/// Parts of the lease table, each under its own lock (by slot), so callers of unrelated keys do
/// not meet on one lock.
const PARTS: usize = 64;

const SH: Group = Group::Shoal;

pub static COMMANDS: &[Spec] = &[
    Spec {
        name: "getlease",
        arity: -2,
        flags: WRITE | FAST | LEASE_AWARE,
        // RW: it changes the key's lease state (a write command names what it writes).
        keys: &[KeySpec::at(1, RW | ACCESS)],
        group: SH,
        since: "0.1.0",
        complexity: "O(1)",
        summary: "Returns a string value, or a lease token to the one caller that should load it (stale-while-revalidate, cache-fill leases).",
        handler: Some(getlease),
        ..Spec::DEFAULT
    },
    Spec {
        name: "setlease",
        arity: -4,
        flags: WRITE | DENYOOM | LEASE_AWARE,
        keys: &[KeySpec::at(1, OW | UPDATE)],
        group: SH,
        since: "0.1.0",
        complexity: "O(1)",
        summary: "Fills a key with the token GETLEASE granted, only if nothing wrote the key since.",
        handler: Some(setlease),
        ..Spec::DEFAULT
    },
    Spec {
        name: "setstale",
        arity: -7,
        flags: WRITE | DENYOOM,
        keys: &[KeySpec::at(1, OW | UPDATE)],
        group: SH,
        since: "0.1.0",
        complexity: "O(1)",
        summary: "Sets a string with an expiry and a stale-while-revalidate period after it.",
        handler: Some(setstale),
        ..Spec::DEFAULT
    },
];

/// One granted lease.
#[derive(Debug, Clone, Copy)]
struct Lease {
    db: usize,
    token: u64,
    expires_ms: u64,
}

/// One part of the lease table: key → its leases, one per database (almost always one).
type Part = Mutex<HashMap<Vec<u8>, Vec<Lease>>>;

/// The node's lease table (see the module header).
#[derive(Debug)]
pub struct Leases {
    parts: Box<[Part]>,
    /// Leases held, expired ones not yet swept included; zero lets writes skip the table.
    count: AtomicUsize,
    /// Figures for INFO: granted, filled, refused fills, dropped by writes.
    pub granted: AtomicU64,
    pub filled: AtomicU64,
    pub refused: AtomicU64,
    pub dropped: AtomicU64,
}

impl Default for Leases {
    fn default() -> Self {
        Leases {
            parts: (0..PARTS).map(|_| Mutex::new(HashMap::new())).collect(),
            count: AtomicUsize::new(0),
            granted: AtomicU64::new(0),
            filled: AtomicU64::new(0),
            refused: AtomicU64::new(0),
            dropped: AtomicU64::new(0),
        }
    }
}

/// What GETLEASE's ask for a lease came to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Grant {
    Granted(u64),
    /// Another caller holds it for this many more ms.
    Held(u64),
    /// The table is at `lease-max-keys`.
    Full,
}

impl Leases {
    fn part(&self, key: &[u8]) -> &Part {
        &self.parts[shoal_keyspace::key_slot(key) as usize % PARTS]
    }

    /// Leases held (expired ones not yet swept included).
    pub fn len(&self) -> usize {
        self.count.load(Relaxed)
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Grants `token` on `key` unless a live lease is held; `max`: `lease-max-keys`.
    fn grant(
        &self,
        db: usize,
        key: &[u8],
        token: u64,
        now_ms: u64,
        ttl_ms: u64,
        max: usize,
    ) -> Grant {
        let mut part = self.part(key).lock().unwrap_or_else(|e| e.into_inner());
        if let Some(ls) = part.get_mut(key)
            && let Some(l) = ls.iter_mut().find(|l| l.db == db)
        {
            if l.expires_ms > now_ms {
                return Grant::Held(l.expires_ms - now_ms);
            }
            // An expired lease is taken over: its holder's fill will be refused.
            *l = Lease {
                db,
                token,
                expires_ms: now_ms.saturating_add(ttl_ms),
            };
            self.granted.fetch_add(1, Relaxed);
            return Grant::Granted(token);
        }
        if self.count.load(Relaxed) >= max {
            let before = part.values().map(Vec::len).sum::<usize>();
            part.retain(|_, ls| {
                ls.retain(|l| l.expires_ms > now_ms);
                !ls.is_empty()
            });
            let after = part.values().map(Vec::len).sum::<usize>();
            self.count.fetch_sub(before - after, Relaxed);
            if before == after {
                return Grant::Full;
            }
        }
        part.entry(key.to_vec()).or_default().push(Lease {
            db,
            token,
            expires_ms: now_ms.saturating_add(ttl_ms),
        });
        self.count.fetch_add(1, Relaxed);
        self.granted.fetch_add(1, Relaxed);
        Grant::Granted(token)
    }

    /// Takes the lease if `token` is `key`'s live lease; whether it was.
    fn take(&self, db: usize, key: &[u8], token: u64, now_ms: u64) -> bool {
        let mut part = self.part(key).lock().unwrap_or_else(|e| e.into_inner());
        let Some(ls) = part.get_mut(key) else {
            return false;
        };
        let Some(i) = ls
            .iter()
            .position(|l| l.db == db && l.token == token && l.expires_ms > now_ms)
        else {
            return false;
        };
        ls.swap_remove(i);
        if ls.is_empty() {
            part.remove(key);
        }
        self.count.fetch_sub(1, Relaxed);
        true
    }

    /// Drops every lease on `key`, in every database (a write may name another one: MOVE, COPY
    /// DB; dropping one too many costs a load, never a stale value).
    pub fn drop_key(&self, key: &[u8]) {
        let mut part = self.part(key).lock().unwrap_or_else(|e| e.into_inner());
        if let Some(ls) = part.remove(key) {
            self.count.fetch_sub(ls.len(), Relaxed);
            self.dropped.fetch_add(ls.len() as u64, Relaxed);
        }
    }

    /// Drops every lease (FLUSHALL, FLUSHDB, SWAPDB).
    pub fn clear(&self) {
        for p in self.parts.iter() {
            let mut part = p.lock().unwrap_or_else(|e| e.into_inner());
            let n = part.values().map(Vec::len).sum::<usize>();
            part.clear();
            self.count.fetch_sub(n, Relaxed);
            self.dropped.fetch_add(n as u64, Relaxed);
        }
    }
}

/// Before a write command runs: drops the leases on the keys it may modify (all of them when it
/// names none). One load of a counter when no lease is held.
pub fn before_write(srv: &crate::ServerState, spec: &'static Spec, args: &Args<'_>) {
    if srv.leases.is_empty() || !spec.has(WRITE) || spec.has(LEASE_AWARE) {
        return;
    }
    if spec.keys.is_empty() && spec.key_finder.is_none() {
        srv.leases.clear();
        return;
    }
    let Ok(keys) = crate::keyspec::keys(spec, args) else {
        return;
    };
    for k in keys.iter() {
        if k.flags & (RW | OW | RM) != 0 {
            srv.leases.drop_key(args.get(k.pos));
        }
    }
}

fn lease_ttl_arg(args: &Args<'_>, default_ms: u64) -> Result<u64, ReplyError> {
    match args.len() {
        2 => Ok(default_ms),
        4 if args.get(2).eq_ignore_ascii_case(b"PX") => match args.i64(3) {
            Ok(n) if n > 0 => Ok(n as u64),
            _ => Err(ReplyError::err_static(
                "invalid lease time in 'getlease' command",
            )),
        },
        _ => Err(ERR_SYNTAX),
    }
}

fn getlease(ctx: &mut Ctx<'_>, args: &Args<'_>) -> CmdResult {
    let (ttl_default, max) = {
        let c = ctx.srv.config();
        (c.lease_ttl_ms, c.lease_max_keys as usize)
    };
    let ttl_ms = lease_ttl_arg(args, ttl_default)?;
    let (db, now) = (ctx.client.db, ctx.now_ms);
    let key = args.get(1);
    let (mut shard, slot) = ctx.shard(key);
    let found = match shard.lookup_read(db, slot, key, now) {
        Some(e) => {
            let v = e.string().ok_or(ReplyError::WrongType)?;
            Some((v.to_vec(), e.is_stale(now)))
        }
        None => None,
    };
    if let Some((v, false)) = found {
        drop(shard);
        ctx.out.array(3);
        ctx.out.simple("hit");
        ctx.out.bulk(&v);
        ctx.out.null();
        return Ok(());
    }
    // Granted under the shard lock, with a token every later write of the key exceeds.
    let token = ctx.version();
    let grant = ctx.srv.leases.grant(db, key, token, now, ttl_ms, max);
    drop(shard);
    ctx.out.array(3);
    match (found, grant) {
        (Some((v, _)), g) => {
            ctx.out.simple("stale");
            ctx.out.bulk(&v);
            match g {
                Grant::Granted(t) => ctx.out.int(t as i64),
                _ => ctx.out.null(),
            }
        }
        (None, Grant::Granted(t)) => {
            ctx.out.simple("miss");
            ctx.out.null();
            ctx.out.int(t as i64);
        }
        (None, Grant::Held(ms)) => {
            ctx.out.simple("wait");
            ctx.out.null();
            ctx.out.int(ms.clamp(1, WAIT_HINT_MS_MAX) as i64);
        }
        (None, Grant::Full) => {
            ctx.out.simple("miss");
            ctx.out.null();
            ctx.out.null();
        }
    }
    Ok(())
}

/// The deadlines of a write: (hard expiry, stale-after), from the options after the value.
fn parse_deadlines(
    ctx: &Ctx<'_>,
    args: &Args<'_>,
    from: usize,
    name: &str,
) -> Result<(Option<u64>, Option<u64>), ReplyError> {
    let (mut expire, mut stale) = (None, None);
    let mut i = from;
    while i < args.len() {
        let a = args.get(i);
        let timed = [&b"EX"[..], b"PX", b"EXAT", b"PXAT"]
            .iter()
            .any(|w| a.eq_ignore_ascii_case(w));
        if timed && expire.is_none() && i + 1 < args.len() {
            expire = Some(parse_expire(ctx, a, args.get(i + 1), name)?);
        } else if a.eq_ignore_ascii_case(b"STALE") && stale.is_none() && i + 1 < args.len() {
            match args.i64(i + 1) {
                Ok(n) if n >= 0 => stale = Some(n as u64),
                _ => return Err(err!("invalid stale time in '{name}' command")),
            }
        } else {
            return Err(ERR_SYNTAX);
        }
        i += 2;
    }
    match (expire, stale) {
        (None, Some(_)) => Err(err!(
            "STALE needs an expiry (EX, PX, EXAT or PXAT) in '{name}' command"
        )),
        (Some(fresh_until), Some(window)) => {
            let hard = fresh_until
                .checked_add(window)
                .ok_or_else(|| err!("invalid stale time in '{name}' command"))?;
            Ok((Some(hard), Some(fresh_until)))
        }
        (e, None) => Ok((e, None)),
    }
}

fn setlease(ctx: &mut Ctx<'_>, args: &Args<'_>) -> CmdResult {
    let token = match args.i64(2) {
        Ok(t) if t > 0 => t as u64,
        _ => return Err(ReplyError::err_static("invalid lease token")),
    };
    let (expire, stale) = parse_deadlines(ctx, args, 4, "setlease")?;
    let (db, now) = (ctx.client.db, ctx.now_ms);
    let key = args.get(1);
    let (mut shard, slot) = ctx.shard(key);
    let version = ctx.version();
    // Checked and written under the shard lock: a writer drops the lease before it takes it.
    let written_since = shard
        .peek(db, slot, key, now)
        .is_some_and(|e| e.version() >= token);
    let accepted = !written_since && ctx.srv.leases.take(db, key, token, now);
    if accepted {
        let entry = Entry::with_stale(
            key,
            Payload::Inline(args.get(3)),
            expire,
            None,
            stale,
            version,
            0,
        );
        shard.insert(db, slot, entry, now);
    }
    drop(shard);
    if accepted {
        ctx.srv.leases.filled.fetch_add(1, Relaxed);
        ctx.out.ok();
    } else {
        if written_since {
            // The lease is spent either way: its value would be older than the write.
            ctx.srv.leases.take(db, key, token, now);
        }
        ctx.srv.leases.refused.fetch_add(1, Relaxed);
        ctx.out.null();
    }
    Ok(())
}

fn setstale(ctx: &mut Ctx<'_>, args: &Args<'_>) -> CmdResult {
    let (expire, stale) = parse_deadlines(ctx, args, 3, "setstale")?;
    if stale.is_none() {
        return Err(err!(
            "STALE is required in 'setstale' command (use SET for a value without it)"
        ));
    }
    let (db, now) = (ctx.client.db, ctx.now_ms);
    let key = args.get(1);
    let (mut shard, slot) = ctx.shard(key);
    let version = ctx.version();
    let entry = Entry::with_stale(
        key,
        Payload::Inline(args.get(2)),
        expire,
        None,
        stale,
        version,
        0,
    );
    shard.insert(db, slot, entry, now);
    drop(shard);
    ctx.out.ok();
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tests::run;

    #[test]
    fn one_lease_per_key_until_it_expires() {
        let l = Leases::default();
        assert_eq!(l.grant(0, b"k", 10, 1000, 500, 10), Grant::Granted(10));
        assert_eq!(l.grant(0, b"k", 11, 1100, 500, 10), Grant::Held(400));
        assert_eq!(l.grant(1, b"k", 12, 1100, 500, 10), Grant::Granted(12));
        assert_eq!(l.grant(0, b"k", 13, 1500, 500, 10), Grant::Granted(13));
        assert!(!l.take(0, b"k", 10, 1600), "a taken-over lease is dead");
        assert!(l.take(0, b"k", 13, 1600));
        assert!(!l.take(0, b"k", 13, 1600), "a token fills once");
        assert_eq!(l.len(), 1);
        l.drop_key(b"k");
        assert!(l.is_empty());
    }

    #[derive(Debug, Clone)]
    enum Op {
        Grant { key: u8, db: u8 },
        Take { key: u8, db: u8, back: u8 },
        Drop { key: u8 },
        Tick { ms: u8 },
    }

    fn op() -> impl proptest::strategy::Strategy<Value = Op> {
        use proptest::prelude::*;
        prop_oneof![
            (0..4u8, 0..2u8).prop_map(|(key, db)| Op::Grant { key, db }),
            (0..4u8, 0..2u8, 0..4u8).prop_map(|(key, db, back)| Op::Take { key, db, back }),
            (0..4u8).prop_map(|key| Op::Drop { key }),
            (0..60u8).prop_map(|ms| Op::Tick { ms }),
        ]
    }

    proptest::proptest! {
        /// The table against a model: a map (key, db) → (token, expiry), tokens from a counter.
        #[test]
        fn the_table_behaves_as_a_map_of_live_leases(ops in proptest::collection::vec(op(), 1..200)) {
            const TTL: u64 = 50;
            let l = Leases::default();
            let mut model: HashMap<(u8, u8), (u64, u64)> = HashMap::new();
            let (mut now, mut next) = (1000u64, 1u64);
            let mut tokens = Vec::new();
            for o in ops {
                match o {
                    Op::Grant { key, db } => {
                        let got = l.grant(db as usize, &[key], next, now, TTL, usize::MAX);
                        let want = match model.get(&(key, db)) {
                            Some(&(_, exp)) if exp > now => Grant::Held(exp - now),
                            _ => {
                                model.insert((key, db), (next, now + TTL));
                                Grant::Granted(next)
                            }
                        };
                        proptest::prop_assert_eq!(got, want);
                        tokens.push(next);
                        next += 1;
                    }
                    Op::Take { key, db, back } => {
                        let token = tokens.iter().rev().nth(back as usize).copied().unwrap_or(0);
                        let want = matches!(model.get(&(key, db)), Some(&(t, exp)) if t == token && exp > now);
                        if want {
                            model.remove(&(key, db));
                        }
                        proptest::prop_assert_eq!(l.take(db as usize, &[key], token, now), want);
                    }
                    Op::Drop { key } => {
                        l.drop_key(&[key]);
                        model.retain(|(k, _), _| *k != key);
                    }
                    Op::Tick { ms } => now += ms as u64,
                }
                proptest::prop_assert_eq!(l.len(), model.len());
            }
        }
    }

    #[test]
    fn a_full_table_sweeps_expired_leases_then_refuses() {
        let l = Leases::default();
        // Keys of one part, so the sweep finds the expired one.
        let keys: Vec<Vec<u8>> = (0..10_000u32)
            .map(|i| format!("k{i}").into_bytes())
            .filter(|k| (shoal_keyspace::key_slot(k) as usize).is_multiple_of(PARTS))
            .take(3)
            .collect();
        assert_eq!(l.grant(0, &keys[0], 1, 0, 10, 2), Grant::Granted(1));
        assert_eq!(l.grant(0, &keys[1], 2, 0, 100, 2), Grant::Granted(2));
        assert_eq!(l.grant(0, &keys[2], 3, 5, 100, 2), Grant::Full);
        assert_eq!(l.grant(0, &keys[2], 4, 50, 100, 2), Grant::Granted(4));
        assert_eq!(l.len(), 2);
    }

    #[test]
    fn miss_then_wait_and_argument_errors() {
        let r = run(&[&["GETLEASE", "k"], &["GETLEASE", "k"]]);
        assert!(r[0].starts_with("*3\r\n+miss\r\n$-1\r\n:"), "{}", r[0]);
        assert_eq!(r[1], "*3\r\n+wait\r\n$-1\r\n:20\r\n");
        let r = run(&[
            &["GETLEASE", "k"],
            &["SETLEASE", "k", "12345", "v"],
            &["SETLEASE", "k", "0", "v"],
            &["SETLEASE", "k", "1", "v", "STALE", "5"],
            &["GETLEASE", "k", "PX", "0"],
            &["GETLEASE", "k", "EX", "1"],
        ]);
        assert_eq!(r[1], "$-1\r\n");
        assert_eq!(r[2], "-ERR invalid lease token\r\n");
        assert_eq!(
            r[3],
            "-ERR STALE needs an expiry (EX, PX, EXAT or PXAT) in 'setlease' command\r\n"
        );
        assert_eq!(r[4], "-ERR invalid lease time in 'getlease' command\r\n");
        assert_eq!(r[5], "-ERR syntax error\r\n");
    }
}
