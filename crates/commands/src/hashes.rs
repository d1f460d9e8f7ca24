//! Hash commands: HSET, HGET, ... HRANDFIELD, HSCAN. Also the SCAN-cursor parsing and the per-command
//! random source that the set family shares.
//!
//! Every write stamps the key with the command's version (taken under the shard lock) when it
//! changes something, and a hash left empty is deleted, as Redis never keeps an empty hash.

use crate::err;
use crate::error::ReplyError;
use std::sync::atomic::Ordering::Relaxed;

use shoal_keyspace::delta::Ops;
use shoal_keyspace::types::hash::Hash;
use shoal_keyspace::{EncodingLimits, Entry, EntryMut, Kind, Object, Payload, Rng, ValueRef};
use shoal_resp::ReplyWriter;

use crate::args::{ERR_NOT_INTEGER, ERR_OVERFLOW, ERR_SYNTAX, parse_scan_cursor};
use crate::coll::object_mut;
use crate::glob::glob_match;
use crate::longdouble::LongDouble;
use crate::notify;
use crate::strings::{add_float, parse_long_double};
use crate::table::{Group, KeySpec, Spec, flag::*, key::*};
use crate::{Args, CmdResult, Ctx};

const HASH: Group = Group::Hash;

pub static COMMANDS: &[Spec] = &[
    Spec {
        name: "hdel",
        arity: -3,
        flags: WRITE | FAST,
        keys: &[KeySpec::at(1, RW | DELETE)],
        group: HASH,
        since: "2.0.0",
        summary: "Delete one or more hash fields",
        handler: Some(hdel),
        ..Spec::DEFAULT
    },
    Spec {
        name: "hexists",
        arity: 3,
        flags: READONLY | FAST,
        keys: &[KeySpec::at(1, RO)],
        group: HASH,
        since: "2.0.0",
        summary: "Determine if a hash field exists",
        handler: Some(hexists),
        ..Spec::DEFAULT
    },
    Spec {
        name: "hexpire",
        arity: -6,
        flags: WRITE | DENYOOM | FAST,
        keys: &[KeySpec::at(1, RW | UPDATE)],
        group: HASH,
        since: "7.4.0",
        summary: "Set expiry for hash field using relative time to expire (seconds)",
        complexity: "O(N) where N is the number of specified fields",
        handler: Some(hexpire),
        ..Spec::DEFAULT
    },
    Spec {
        name: "hexpireat",
        arity: -6,
        flags: WRITE | DENYOOM | FAST,
        keys: &[KeySpec::at(1, RW | UPDATE)],
        group: HASH,
        since: "7.4.0",
        summary: "Set expiry for hash field using an absolute Unix timestamp (seconds)",
        complexity: "O(N) where N is the number of specified fields",
        handler: Some(hexpireat),
        ..Spec::DEFAULT
    },
    Spec {
        name: "hexpiretime",
        arity: -5,
        flags: READONLY | FAST,
        keys: &[KeySpec::at(1, RO | ACCESS)],
        group: HASH,
        since: "7.4.0",
        summary: "Returns the expiration time of a hash field as a Unix timestamp, in seconds.",
        complexity: "O(N) where N is the number of specified fields",
        handler: Some(hexpiretime),
        ..Spec::DEFAULT
    },
    Spec {
        name: "hget",
        arity: 3,
        flags: READONLY | FAST,
        keys: &[KeySpec::at(1, RO | ACCESS)],
        group: HASH,
        since: "2.0.0",
        summary: "Get the value of a hash field",
        handler: Some(hget),
        ..Spec::DEFAULT
    },
    Spec {
        name: "hgetall",
        arity: 2,
        flags: READONLY,
        keys: &[KeySpec::at(1, RO | ACCESS)],
        group: HASH,
        since: "2.0.0",
        summary: "Get all the fields and values in a hash",
        tips: &["nondeterministic_output_order"],
        handler: Some(hgetall),
        ..Spec::DEFAULT
    },
    Spec {
        name: "hincrby",
        arity: 4,
        flags: WRITE | DENYOOM | FAST,
        keys: &[KeySpec::at(1, RW | ACCESS | UPDATE)],
        group: HASH,
        since: "2.0.0",
        summary: "Increment the integer value of a hash field by the given number",
        handler: Some(hincrby),
        ..Spec::DEFAULT
    },
    Spec {
        name: "hincrbyfloat",
        arity: 4,
        flags: WRITE | DENYOOM | FAST,
        keys: &[KeySpec::at(1, RW | ACCESS | UPDATE)],
        group: HASH,
        since: "2.6.0",
        summary: "Increment the float value of a hash field by the given amount",
        handler: Some(hincrbyfloat),
        ..Spec::DEFAULT
    },
    Spec {
        name: "hkeys",
        arity: 2,
        flags: READONLY,
        keys: &[KeySpec::at(1, RO | ACCESS)],
        group: HASH,
        since: "2.0.0",
        summary: "Get all the fields in a hash",
        tips: &["nondeterministic_output_order"],
        handler: Some(hkeys),
        ..Spec::DEFAULT
    },
    Spec {
        name: "hlen",
        arity: 2,
        flags: READONLY | FAST,
        keys: &[KeySpec::at(1, RO)],
        group: HASH,
        since: "2.0.0",
        summary: "Get the number of fields in a hash",
        handler: Some(hlen),
        ..Spec::DEFAULT
    },
    Spec {
        name: "hmget",
        arity: -3,
        flags: READONLY | FAST,
        keys: &[KeySpec::at(1, RO | ACCESS)],
        group: HASH,
        since: "2.0.0",
        summary: "Get the values of all the given hash fields",
        handler: Some(hmget),
        ..Spec::DEFAULT
    },
    Spec {
        name: "hmset",
        arity: -4,
        flags: WRITE | DENYOOM | FAST,
        keys: &[KeySpec::at(1, RW | UPDATE)],
        group: HASH,
        since: "2.0.0",
        summary: "Set multiple hash fields to multiple values",
        handler: Some(hmset),
        ..Spec::DEFAULT
    },
    Spec {
        name: "hpersist",
        arity: -5,
        flags: WRITE | FAST,
        keys: &[KeySpec::at(1, RW | UPDATE)],
        group: HASH,
        since: "7.4.0",
        summary: "Removes the expiration time for each specified field",
        complexity: "O(N) where N is the number of specified fields",
        handler: Some(hpersist),
        ..Spec::DEFAULT
    },
    Spec {
        name: "hpexpire",
        arity: -6,
        flags: WRITE | DENYOOM | FAST,
        keys: &[KeySpec::at(1, RW | UPDATE)],
        group: HASH,
        since: "7.4.0",
        summary: "Set expiry for hash field using relative time to expire (milliseconds)",
        complexity: "O(N) where N is the number of specified fields",
        handler: Some(hpexpire),
        ..Spec::DEFAULT
    },
    Spec {
        name: "hpexpireat",
        arity: -6,
        flags: WRITE | DENYOOM | FAST,
        keys: &[KeySpec::at(1, RW | UPDATE)],
        group: HASH,
        since: "7.4.0",
        summary: "Set expiry for hash field using an absolute Unix timestamp (milliseconds)",
        complexity: "O(N) where N is the number of specified fields",
        handler: Some(hpexpireat),
        ..Spec::DEFAULT
    },
    Spec {
        name: "hpexpiretime",
        arity: -5,
        flags: READONLY | FAST,
        keys: &[KeySpec::at(1, RO | ACCESS)],
        group: HASH,
        since: "7.4.0",
        summary: "Returns the expiration time of a hash field as a Unix timestamp, in msec.",
        complexity: "O(N) where N is the number of specified fields",
        handler: Some(hpexpiretime),
        ..Spec::DEFAULT
    },
    Spec {
        name: "hpttl",
        arity: -5,
        flags: READONLY | FAST,
        keys: &[KeySpec::at(1, RO | ACCESS)],
        group: HASH,
        since: "7.4.0",
        summary: "Returns the TTL in milliseconds of a hash field.",
        complexity: "O(N) where N is the number of specified fields",
        handler: Some(hpttl),
        ..Spec::DEFAULT
    },
    Spec {
        name: "hrandfield",
        arity: -2,
        flags: READONLY,
        keys: &[KeySpec::at(1, RO | ACCESS)],
        group: HASH,
        since: "6.2.0",
        summary: "Get one or multiple random fields from a hash",
        tips: &["nondeterministic_output"],
        handler: Some(hrandfield),
        ..Spec::DEFAULT
    },
    Spec {
        name: "hscan",
        arity: -3,
        flags: READONLY,
        keys: &[KeySpec::at(1, RO | ACCESS)],
        group: HASH,
        since: "2.8.0",
        summary: "Incrementally iterate hash fields and associated values",
        tips: &["nondeterministic_output"],
        handler: Some(hscan),
        ..Spec::DEFAULT
    },
    Spec {
        name: "hset",
        arity: -4,
        flags: WRITE | DENYOOM | FAST,
        keys: &[KeySpec::at(1, RW | UPDATE)],
        group: HASH,
        since: "2.0.0",
        summary: "Set the string value of a hash field",
        handler: Some(hset),
        ..Spec::DEFAULT
    },
    Spec {
        name: "hsetnx",
        arity: 4,
        flags: WRITE | DENYOOM | FAST,
        keys: &[KeySpec::at(1, RW | INSERT)],
        group: HASH,
        since: "2.0.0",
        summary: "Set the value of a hash field, only if the field does not exist",
        handler: Some(hsetnx),
        ..Spec::DEFAULT
    },
    Spec {
        name: "hstrlen",
        arity: 3,
        flags: READONLY | FAST,
        keys: &[KeySpec::at(1, RO)],
        group: HASH,
        since: "3.2.0",
        summary: "Get the length of the value of a hash field",
        handler: Some(hstrlen),
        ..Spec::DEFAULT
    },
    Spec {
        name: "httl",
        arity: -5,
        flags: READONLY | FAST,
        keys: &[KeySpec::at(1, RO | ACCESS)],
        group: HASH,
        since: "7.4.0",
        summary: "Returns the TTL in seconds of a hash field.",
        complexity: "O(N) where N is the number of specified fields",
        handler: Some(httl),
        ..Spec::DEFAULT
    },
    Spec {
        name: "hvals",
        arity: 2,
        flags: READONLY,
        keys: &[KeySpec::at(1, RO | ACCESS)],
        group: HASH,
        since: "2.0.0",
        summary: "Get all the values in a hash",
        tips: &["nondeterministic_output_order"],
        handler: Some(hvals),
        ..Spec::DEFAULT
    },
];

// ---------------------------------------------------------------------------------------------
// Shared with the set family.

/// Elements a random-pick reply with repetition (negative count) may hold. Redis has no bound and
/// builds the whole reply in memory (`HRANDFIELD h -9223372036854775807` exhausts it); we refuse
/// counts whose reply alone could take gigabytes.
pub const RANDOM_REPLY_MAX: i64 = 1 << 24;

/// The error for a negative count beyond [`RANDOM_REPLY_MAX`], worded as Redis's range errors.
pub(crate) fn random_count_error() -> ReplyError {
    err!(
        "value is out of range, value must between -{RANDOM_REPLY_MAX} and {}",
        i64::MAX
    )
}

/// A count argument as Redis's `getRangeLongFromObjectOrReply(-LONG_MAX, LONG_MAX)` reads it.
pub(crate) fn parse_random_count(arg: &[u8]) -> Result<i64, ReplyError> {
    let n = crate::args::parse_i64(arg).ok_or(ERR_NOT_INTEGER)?;
    if n == i64::MIN {
        return Err(err!(
            "value is out of range, value must between {} and {}",
            -i64::MAX,
            i64::MAX
        ));
    }
    Ok(n)
}

/// A random source for one command's picks (HRANDFIELD, SPOP, SRANDMEMBER). Seeded from inputs
/// and a draw counter, never from the OS or the clock, so a simulation replays.
pub(crate) fn command_rng(ctx: &Ctx<'_>) -> Rng {
    Rng::new(
        ctx.now_ms
            ^ ctx.client.id().rotate_left(32)
            ^ ctx
                .srv
                .draws
                .fetch_add(1, Relaxed)
                .wrapping_mul(0x9E37_79B9_7F4A_7C15),
    )
}

/// COUNT and MATCH of a collection SCAN.
pub(crate) struct ScanOpts<'a> {
    pub count: usize,
    /// `None` matches everything.
    pub pattern: Option<&'a [u8]>,
}

impl ScanOpts<'_> {
    pub fn matches(&self, s: &[u8]) -> bool {
        self.pattern.is_none_or(|p| glob_match(p, s, false))
    }
}

/// Parses `[MATCH pattern] [COUNT count]` from argument `from` on, with Redis's errors.
pub(crate) fn parse_scan_opts<'a>(
    args: &Args<'a>,
    from: usize,
) -> Result<ScanOpts<'a>, ReplyError> {
    let mut opts = ScanOpts {
        count: 10,
        pattern: None,
    };
    let mut i = from;
    while i < args.len() {
        let has_value = i + 1 < args.len();
        if args.is(i, "COUNT") && has_value {
            let n = args.i64(i + 1)?;
            if n < 1 {
                return Err(ERR_SYNTAX);
            }
            opts.count = usize::try_from(n).unwrap_or(usize::MAX);
        } else if args.is(i, "MATCH") && has_value {
            let p = args.get(i + 1);
            opts.pattern = (p != b"*").then_some(p);
        } else {
            return Err(ERR_SYNTAX);
        }
        i += 2;
    }
    Ok(opts)
}

/// A new entry holding a collection, with no TTL.
pub(crate) fn object_entry(key: &[u8], obj: Object, version: u64) -> Entry {
    Entry::new(key, Payload::Object(Box::new(obj)), None, None, version, 0)
}

// ---------------------------------------------------------------------------------------------
// Access to the hash of a key.

/// What lazy field expiry did to a hash at lookup (see [`expire_due_fields`]).
enum Due {
    /// No field was due (or the key is not a hash).
    Nothing,
    /// The primary deleted this many due fields (the hash may now be empty).
    Deleted(usize),
    /// A replica's view of the hash without its due fields (its primary's HDELs are on their
    /// way; a replica never deletes on its own, as with keys). `None`: no field left.
    View(Option<Hash>),
}

/// Lazy field expiry, as Redis 7.4 deletes an expired field when a command touches it: every
/// hash command sees the hash without its expired fields. On a primary (`primary`: the shard
/// expires on access) the due fields are deleted, replicating as HDELs under the command's
/// version; on a replica the command reads a copy without them. Costs a hash without field TTLs
/// one branch.
fn expire_due_fields(e: &mut EntryMut<'_>, primary: bool, ctx: &mut Ctx<'_>) -> Due {
    let now = ctx.now_ms;
    let ValueRef::Obj(Object::Hash(h)) = e.value() else {
        return Due::Nothing;
    };
    if !h.has_due_fields(now) {
        return Due::Nothing;
    }
    if !primary {
        let mut view = h.clone();
        view.remove_due_fields(now, usize::MAX, |_| {});
        return Due::View((!view.is_empty()).then_some(view));
    }
    Due::Deleted(e.expire_fields(now, usize::MAX, || ctx.version()))
}

/// Runs `f` on the hash at `key` (`None` if absent) for a read command: counts a hit or a miss and
/// records the access. WRONGTYPE for another type. Expired fields are not seen.
fn read_hash<R>(
    ctx: &mut Ctx<'_>,
    key: &[u8],
    f: impl FnOnce(Option<&Hash>, &mut ReplyWriter<'_>) -> R,
) -> Result<R, ReplyError> {
    let (db, now) = (ctx.db(), ctx.now_ms);
    let (mut shard, slot) = ctx.shard(key);
    let primary = shard.expire_on_access;
    let mut e = shard.lookup_read(db, slot, key, now);
    let due = match e.as_mut() {
        Some(e) => expire_due_fields(e, primary, ctx),
        None => Due::Nothing,
    };
    let h = match (&due, e.as_deref().map(|e| e.value())) {
        (Due::View(view), _) => view.as_ref(),
        (_, None) => None,
        (_, Some(ValueRef::Obj(Object::Hash(h)))) => Some(h).filter(|h| !h.is_empty()),
        (_, Some(_)) => return Err(ReplyError::WrongType),
    };
    let r = f(h, &mut ctx.out);
    if let Due::Deleted(n) = due {
        let emptied = h.is_none();
        drop(e);
        shard.stats.expired_fields += n as u64;
        shard.note(notify::HASH, "hexpired", db, key);
        if emptied {
            shard.remove(db, slot, key);
            shard.note(notify::GENERIC, "del", db, key);
        }
    }
    Ok(r)
}

/// Runs `f` on the hash at `key` for a write command. An absent key gets a new empty hash when
/// `create` is set (kept only if `f` leaves it non-empty), otherwise `f` is not called and the
/// result is `None`. `f` returns its result and whether it changed the hash; a change stamps the
/// command's version and raises `event`, and a hash left empty is deleted (raising `del`).
fn write_hash<R>(
    ctx: &mut Ctx<'_>,
    key: &[u8],
    create: bool,
    event: &'static str,
    f: impl FnOnce(&mut Hash, &mut Ops, &EncodingLimits) -> Result<(R, bool), ReplyError>,
) -> Result<Option<R>, ReplyError> {
    write_hash_with(ctx, key, create, || event, None, f)
}

/// [`write_hash`] of an increment of `field` by `by` (HINCRBY, HINCRBYFLOAT): noted as such for
/// active-active merging, under the same lock as the write.
fn write_hash_counting<R>(
    ctx: &mut Ctx<'_>,
    key: &[u8],
    event: &'static str,
    count: (&[u8], shoal_keyspace::merge::By),
    f: impl FnOnce(&mut Hash, &mut Ops, &EncodingLimits) -> Result<(R, bool), ReplyError>,
) -> Result<Option<R>, ReplyError> {
    write_hash_with(ctx, key, true, || event, Some(count), f)
}

/// [`write_hash`] whose event depends on what `f` did (HEXPIRE raises `hdel` when it deleted).
/// Fields found expired on the way are deleted first, raising `hexpired` (Redis 7.4).
fn write_hash_with<R>(
    ctx: &mut Ctx<'_>,
    key: &[u8],
    create: bool,
    event: impl Fn() -> &'static str,
    count: Option<(&[u8], shoal_keyspace::merge::By)>,
    f: impl FnOnce(&mut Hash, &mut Ops, &EncodingLimits) -> Result<(R, bool), ReplyError>,
) -> Result<Option<R>, ReplyError> {
    let (db, now) = (ctx.db(), ctx.now_ms);
    let limits = ctx.srv.encoding_limits();
    let (mut shard, slot) = ctx.shard(key);
    let primary = shard.expire_on_access;
    let mut expired = 0;
    let mut emptied = false;
    let existing = match shard.lookup(db, slot, key, now, true) {
        Some(mut e) => {
            object_mut(&mut e, Kind::Hash)?;
            if let Due::Deleted(n) = expire_due_fields(&mut e, primary, ctx) {
                expired = n;
                if e.object_mut().is_some_and(|o| o.is_empty()) {
                    // Every field had expired: the key goes, and the write finds none.
                    emptied = true;
                }
            }
            if emptied {
                Err(f)
            } else {
                Ok(write_existing(ctx, &mut e, f, &limits)?)
            }
        }
        None => Err(f),
    };
    shard.stats.expired_fields += expired as u64;
    if expired > 0 {
        shard.note(notify::HASH, "hexpired", db, key);
    }
    if emptied {
        shard.remove(db, slot, key);
        shard.note(notify::GENERIC, "del", db, key);
    }
    match existing {
        Ok((out, empty)) => {
            if let Ok((_, true)) = &out {
                shard.note(notify::HASH, event(), db, key);
                if let Some((field, by)) = count {
                    shard.note_count(db, key, Some(field), by);
                }
            }
            if empty {
                shard.remove(db, slot, key);
                shard.note(notify::GENERIC, "del", db, key);
            }
            out.map(|(r, _)| Some(r))
        }
        Err(f) => finish_absent(ctx, shard, slot, key, create, event, count, f, &limits),
    }
}

/// Runs a write on an existing hash; returns its outcome and whether the hash is left empty.
#[allow(clippy::type_complexity)]
fn write_existing<R>(
    ctx: &mut Ctx<'_>,
    e: &mut EntryMut<'_>,
    f: impl FnOnce(&mut Hash, &mut Ops, &EncodingLimits) -> Result<(R, bool), ReplyError>,
    limits: &EncodingLimits,
) -> Result<(Result<(R, bool), ReplyError>, bool), ReplyError> {
    let mut ops = e.ops();
    let Object::Hash(h) = object_mut(e, Kind::Hash)? else {
        unreachable!("object_mut checked the kind")
    };
    // Errors leave the hash as it was, but for the expired fields just deleted.
    let out = f(h, &mut ops, limits);
    let empty = h.is_empty();
    if let Ok((_, true)) = &out {
        e.note(ops);
        // Taken under the lock: later writes to a key get larger versions.
        e.set_version(ctx.version());
    }
    Ok((out, empty))
}

/// The write of [`write_hash_with`] to an absent key: `f` builds a new hash if `create`.
#[allow(clippy::too_many_arguments)]
fn finish_absent<R>(
    ctx: &mut Ctx<'_>,
    mut shard: shoal_keyspace::ShardGuard<'_>,
    slot: u16,
    key: &[u8],
    create: bool,
    event: impl Fn() -> &'static str,
    count: Option<(&[u8], shoal_keyspace::merge::By)>,
    f: impl FnOnce(&mut Hash, &mut Ops, &EncodingLimits) -> Result<(R, bool), ReplyError>,
    limits: &EncodingLimits,
) -> Result<Option<R>, ReplyError> {
    if !create {
        return Ok(None);
    }
    // A new key is sent whole: no ops to note.
    let mut h = Hash::new(limits);
    let (r, _) = f(&mut h, &mut Ops::new(false), limits)?;
    if !h.is_empty() {
        let (db, now) = (ctx.db(), ctx.now_ms);
        let version = ctx.version();
        shard.insert(db, slot, object_entry(key, Object::Hash(h), version), now);
        shard.note(notify::HASH, event(), db, key);
        if let Some((field, by)) = count {
            shard.note_count(db, key, Some(field), by);
        }
    }
    Ok(Some(r))
}

// ---------------------------------------------------------------------------------------------
// Handlers.

fn set_pairs(ctx: &mut Ctx<'_>, args: &Args<'_>, name: &str) -> Result<i64, ReplyError> {
    if !args.len().is_multiple_of(2) {
        return Err(err!("wrong number of arguments for '{name}' command"));
    }
    let added = write_hash(ctx, args.get(1), true, "hset", |h, ops, limits| {
        let mut added = 0;
        for i in (2..args.len()).step_by(2) {
            added += h.insert(args.get(i), args.get(i + 1), limits) as i64;
            ops.hset(args.get(i), args.get(i + 1));
        }
        Ok((added, true))
    })?;
    Ok(added.unwrap_or(0))
}

fn hset(ctx: &mut Ctx<'_>, args: &Args<'_>) -> CmdResult {
    let added = set_pairs(ctx, args, "hset")?;
    ctx.out.int(added);
    Ok(())
}

fn hmset(ctx: &mut Ctx<'_>, args: &Args<'_>) -> CmdResult {
    set_pairs(ctx, args, "hmset")?;
    ctx.out.ok();
    Ok(())
}

fn hsetnx(ctx: &mut Ctx<'_>, args: &Args<'_>) -> CmdResult {
    let set = write_hash(ctx, args.get(1), true, "hset", |h, ops, limits| {
        if h.contains(args.get(2)) {
            return Ok((false, false));
        }
        h.insert(args.get(2), args.get(3), limits);
        ops.hset(args.get(2), args.get(3));
        Ok((true, true))
    })?;
    ctx.out.int(set.unwrap_or(false) as i64);
    Ok(())
}

fn hget(ctx: &mut Ctx<'_>, args: &Args<'_>) -> CmdResult {
    read_hash(ctx, args.get(1), |h, out| {
        match h.and_then(|h| h.get(args.get(2))) {
            Some(v) => out.bulk(v),
            None => out.null(),
        }
    })
}

fn hmget(ctx: &mut Ctx<'_>, args: &Args<'_>) -> CmdResult {
    read_hash(ctx, args.get(1), |h, out| {
        out.array(args.len() - 2);
        for f in args.tail(2).iter() {
            match h.and_then(|h| h.get(f)) {
                Some(v) => out.bulk(v),
                None => out.null(),
            }
        }
    })
}

fn hgetall(ctx: &mut Ctx<'_>, args: &Args<'_>) -> CmdResult {
    read_hash(ctx, args.get(1), |h, out| {
        let Some(h) = h else {
            out.map(0);
            return;
        };
        out.map(h.len());
        for (f, v) in h.iter() {
            out.bulk(f);
            out.bulk(v);
        }
    })
}

fn hkeys(ctx: &mut Ctx<'_>, args: &Args<'_>) -> CmdResult {
    read_hash(ctx, args.get(1), |h, out| {
        out.array(h.map_or(0, Hash::len));
        for (f, _) in h.into_iter().flat_map(Hash::iter) {
            out.bulk(f);
        }
    })
}

fn hvals(ctx: &mut Ctx<'_>, args: &Args<'_>) -> CmdResult {
    read_hash(ctx, args.get(1), |h, out| {
        out.array(h.map_or(0, Hash::len));
        for (_, v) in h.into_iter().flat_map(Hash::iter) {
            out.bulk(v);
        }
    })
}

fn hdel(ctx: &mut Ctx<'_>, args: &Args<'_>) -> CmdResult {
    let deleted = write_hash(ctx, args.get(1), false, "hdel", |h, ops, _| {
        let mut n = 0;
        for f in args.tail(2).iter() {
            if h.remove(f) {
                ops.hdel(f);
                n += 1;
            }
            if h.is_empty() {
                break;
            }
        }
        Ok((n, n > 0))
    })?;
    ctx.out.int(deleted.unwrap_or(0));
    Ok(())
}

fn hexists(ctx: &mut Ctx<'_>, args: &Args<'_>) -> CmdResult {
    read_hash(ctx, args.get(1), |h, out| {
        out.int(h.is_some_and(|h| h.contains(args.get(2))) as i64)
    })
}

fn hlen(ctx: &mut Ctx<'_>, args: &Args<'_>) -> CmdResult {
    read_hash(ctx, args.get(1), |h, out| {
        out.int(h.map_or(0, Hash::len) as i64)
    })
}

fn hstrlen(ctx: &mut Ctx<'_>, args: &Args<'_>) -> CmdResult {
    read_hash(ctx, args.get(1), |h, out| {
        out.int(h.and_then(|h| h.get(args.get(2))).map_or(0, <[u8]>::len) as i64)
    })
}

/// Sets a field keeping its TTL, as HINCRBY and HINCRBYFLOAT do in Redis 7.4 (HSET clears it).
fn set_keeping_ttl(
    h: &mut Hash,
    ops: &mut Ops,
    field: &[u8],
    value: &[u8],
    limits: &EncodingLimits,
) {
    let ttl = h.field_expire_at(field);
    h.insert(field, value, limits);
    ops.hset(field, value);
    if let Some(at) = ttl {
        h.set_field_expire(field, at);
        ops.hfield_expire(field, at);
    }
}

fn hincrby(ctx: &mut Ctx<'_>, args: &Args<'_>) -> CmdResult {
    let by = args.i64(3)?;
    let field = args.get(2);
    let count = (field, shoal_keyspace::merge::By::Int(by));
    let new = write_hash_counting(ctx, args.get(1), "hincrby", count, |h, ops, limits| {
        let cur = match h.get(field) {
            Some(v) => shoal_keyspace::parse_canonical_i64(v)
                .ok_or_else(|| ReplyError::err_static("hash value is not an integer"))?,
            None => 0,
        };
        let new = cur.checked_add(by).ok_or(ERR_OVERFLOW)?;
        let mut tmp = [0u8; 20];
        let text = shoal_resp::fmt_i64(new, &mut tmp);
        set_keeping_ttl(h, ops, field, text, limits);
        Ok((new, true))
    })?;
    ctx.out.int(new.expect("created"));
    Ok(())
}

fn hincrbyfloat(ctx: &mut Ctx<'_>, args: &Args<'_>) -> CmdResult {
    // Redis's order: the increment (finite), the key's type, the field's value.
    let by = parse_long_double(args.get(3))
        .ok_or(crate::args::ERR_NOT_FLOAT)?
        .ok_or_else(|| ReplyError::err_static("value is NaN or Infinity"))?;
    let field = args.get(2);
    let by_f64 = std::str::from_utf8(args.get(3))
        .ok()
        .and_then(|t| t.trim().parse::<f64>().ok())
        .unwrap_or(0.0);
    let count = (field, shoal_keyspace::merge::By::Float(by_f64));
    let new = write_hash_counting(ctx, args.get(1), "hincrbyfloat", count, |h, ops, limits| {
        let cur = match h.get(field) {
            Some(v) => parse_long_double(v)
                .ok_or_else(|| ReplyError::err_static("hash value is not a float"))?,
            None => Some(LongDouble::ZERO),
        };
        let s = cur
            .and_then(|cur| add_float(cur, by))
            .ok_or_else(|| ReplyError::err_static("increment would produce NaN or Infinity"))?;
        set_keeping_ttl(h, ops, field, s.as_bytes(), limits);
        Ok((s, true))
    })?;
    ctx.out.bulk(new.expect("created").as_bytes());
    Ok(())
}

fn hrandfield(ctx: &mut Ctx<'_>, args: &Args<'_>) -> CmdResult {
    let mut rng = command_rng(ctx);
    if args.len() == 2 {
        return read_hash(ctx, args.get(1), |h, out| {
            match h.and_then(|h| h.random_entry(&mut rng)) {
                Some((f, _)) => out.bulk(f),
                None => out.null(),
            }
        });
    }
    // Checks in Redis's order: the count, the syntax, the WITHVALUES range, then the key.
    let count = parse_random_count(args.get(2))?;
    if args.len() > 4 || (args.len() == 4 && !args.is(3, "WITHVALUES")) {
        return Err(ERR_SYNTAX);
    }
    let with_values = args.len() == 4;
    if with_values && !(-(i64::MAX / 2)..=i64::MAX / 2).contains(&count) {
        return Err(ReplyError::err_static("value is out of range"));
    }
    if count < -RANDOM_REPLY_MAX {
        return Err(random_count_error());
    }
    read_hash(ctx, args.get(1), |h, out| {
        let Some(h) = h.filter(|_| count != 0) else {
            out.array(0);
            return;
        };
        // RESP3 pairs are two-element arrays; RESP2 flattens them.
        let pairs_header = |out: &mut ReplyWriter<'_>, n: usize| {
            out.array(if with_values && !out.is_resp3() {
                2 * n
            } else {
                n
            });
        };
        let pair = |out: &mut ReplyWriter<'_>, f: &[u8], v: &[u8]| {
            if with_values && out.is_resp3() {
                out.array(2);
            }
            out.bulk(f);
            if with_values {
                out.bulk(v);
            }
        };
        if count < 0 {
            let n = count.unsigned_abs() as usize;
            let sampler = h.sampler();
            pairs_header(out, n);
            for _ in 0..n {
                let (f, v) = sampler.pick(&mut rng);
                pair(out, f, v);
            }
        } else {
            let picks = h.random_distinct(count as usize, &mut rng);
            pairs_header(out, picks.len());
            for (f, v) in picks {
                pair(out, f, v);
            }
        }
    })
}

fn hscan(ctx: &mut Ctx<'_>, args: &Args<'_>) -> CmdResult {
    // Redis parses the cursor first, then looks the key up, then reads the options.
    let cursor = parse_scan_cursor(args.get(2))?;
    read_hash(ctx, args.get(1), |h, out| {
        let Some(h) = h else {
            out.array(2);
            out.bulk(b"0");
            out.array(0);
            return Ok(());
        };
        let opts = parse_scan_opts(args, 3)?;
        let mut found: Vec<(&[u8], &[u8])> = Vec::new();
        let next = h.scan(cursor, opts.count, |f, v| {
            if opts.matches(f) {
                found.push((f, v));
            }
        });
        out.array(2);
        out.bulk(next.to_string().as_bytes());
        out.array(2 * found.len());
        for (f, v) in found {
            out.bulk(f);
            out.bulk(v);
        }
        Ok(())
    })?
}

// ---------------------------------------------------------------------------------------------
// Field expiry (Redis 7.4): HEXPIRE HPEXPIRE HEXPIREAT HPEXPIREAT, HTTL HPTTL HEXPIRETIME
// HPEXPIRETIME, HPERSIST.

/// Largest field deadline accepted (Redis 7.4's `HFE_MAX_ABS_TIME_MSEC`, 2^46 - 1 ms, year 4199).
pub const FIELD_EXPIRE_MAX_MS: i64 = 0x0000_FFFF_FFFF_FFFF_i64 >> 2;

/// Per-field replies of the field-expiry commands (Redis 7.4).
const NO_FIELD: i64 = -2;
const NO_TTL: i64 = -1;
const CONDITION_NOT_MET: i64 = 0;
const SET: i64 = 1;
const DELETED: i64 = 2;

/// HEXPIRE's NX | XX | GT | LT.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Cond {
    Always,
    Nx,
    Xx,
    Gt,
    Lt,
}

/// Reads `FIELDS numfields field ...` at `at` (the position of `FIELDS`); returns the fields.
fn parse_fields<'a>(
    args: &'a Args<'_>,
    at: usize,
    count_error: &'static str,
) -> Result<Vec<&'a [u8]>, ReplyError> {
    if !args.is(at, "FIELDS") {
        return Err(ReplyError::err_static(
            "Mandatory argument FIELDS is missing or not at the right position",
        ));
    }
    let n = crate::args::parse_i64(args.get(at + 1))
        .filter(|&n| n >= 1)
        .ok_or_else(|| ReplyError::err_static(count_error))?;
    if n as u64 != (args.len() - at - 2) as u64 {
        return Err(ReplyError::err_static(
            "The `numfields` parameter must match the number of arguments",
        ));
    }
    Ok((at + 2..args.len()).map(|i| args.get(i)).collect())
}

/// HEXPIRE and friends: `relative` adds the time to now, `seconds` scales it.
fn hexpire_generic(ctx: &mut Ctx<'_>, args: &Args<'_>, relative: bool, seconds: bool) -> CmdResult {
    let now = ctx.now_ms;
    let name = String::from_utf8_lossy(args.get(0)).to_ascii_lowercase();
    // Redis checks the key's type first, then the arguments in order.
    let parsed = (|| {
        let mut t = args.i64(2)?;
        if t < 0 {
            return Err(ReplyError::err_static("invalid expire time, must be >= 0"));
        }
        let bad_time = || err!("invalid expire time in '{name}' command");
        if seconds {
            if t > FIELD_EXPIRE_MAX_MS / 1000 {
                return Err(bad_time());
            }
            t *= 1000;
        }
        let base = if relative { now as i64 } else { 0 };
        if t > FIELD_EXPIRE_MAX_MS - base {
            return Err(bad_time());
        }
        let at = (t + base) as u64;
        let a3 = args.get(3);
        let cond = if a3.eq_ignore_ascii_case(b"NX") {
            Cond::Nx
        } else if a3.eq_ignore_ascii_case(b"XX") {
            Cond::Xx
        } else if a3.eq_ignore_ascii_case(b"GT") {
            Cond::Gt
        } else if a3.eq_ignore_ascii_case(b"LT") {
            Cond::Lt
        } else {
            Cond::Always
        };
        let fields_at = if cond == Cond::Always { 3 } else { 4 };
        let fields = parse_fields(
            args,
            fields_at,
            "Parameter `numFields` should be greater than 0",
        )?;
        Ok((at, cond, fields))
    })();
    let mut parse_err = None;
    // Redis 7.4 raises `hdel` when a field was deleted (a time in the past), else `hexpire`.
    let deleted_any = std::cell::Cell::new(false);
    let event = || if deleted_any.get() { "hdel" } else { "hexpire" };
    let replies = write_hash_with(ctx, args.get(1), false, event, None, |h, ops, _| {
        let (at, cond, fields) = match &parsed {
            Ok(p) => p,
            Err(e) => {
                parse_err = Some(e.clone());
                return Ok((Vec::new(), false));
            }
        };
        let mut replies = Vec::with_capacity(fields.len());
        let mut changed = false;
        for &f in fields {
            if !h.contains(f) {
                replies.push(NO_FIELD);
                continue;
            }
            let ok = match (h.field_expire_at(f), cond) {
                (_, Cond::Always) => true,
                (None, Cond::Nx | Cond::Lt) => true,
                (None, Cond::Xx | Cond::Gt) => false,
                (Some(_), Cond::Nx) => false,
                (Some(_), Cond::Xx) => true,
                (Some(prev), Cond::Gt) => *at > prev,
                (Some(prev), Cond::Lt) => *at < prev,
            };
            if !ok {
                replies.push(CONDITION_NOT_MET);
                continue;
            }
            changed = true;
            if *at <= now {
                // A time already past deletes the field (Redis propagates an HDEL).
                h.remove(f);
                ops.hdel(f);
                deleted_any.set(true);
                replies.push(DELETED);
            } else {
                h.set_field_expire(f, *at);
                ops.hfield_expire(f, *at);
                replies.push(SET);
            }
        }
        Ok((replies, changed))
    })?;
    if let Some(e) = parse_err {
        return Err(e);
    }
    let replies = match replies {
        Some(r) => r,
        None => {
            let (_, _, fields) = parsed?;
            vec![NO_FIELD; fields.len()]
        }
    };
    ctx.out.array(replies.len());
    for r in replies {
        ctx.out.int(r);
    }
    Ok(())
}

fn hexpire(ctx: &mut Ctx<'_>, args: &Args<'_>) -> CmdResult {
    hexpire_generic(ctx, args, true, true)
}

fn hpexpire(ctx: &mut Ctx<'_>, args: &Args<'_>) -> CmdResult {
    hexpire_generic(ctx, args, true, false)
}

fn hexpireat(ctx: &mut Ctx<'_>, args: &Args<'_>) -> CmdResult {
    hexpire_generic(ctx, args, false, true)
}

fn hpexpireat(ctx: &mut Ctx<'_>, args: &Args<'_>) -> CmdResult {
    hexpire_generic(ctx, args, false, false)
}

/// HTTL and friends: the time left (`relative`) or the deadline, in seconds (rounded up, as
/// Redis) or ms; -1 for a field without TTL, -2 for no such field.
fn httl_generic(ctx: &mut Ctx<'_>, args: &Args<'_>, relative: bool, seconds: bool) -> CmdResult {
    let now = ctx.now_ms;
    let base = if relative { now } else { 0 };
    read_hash(ctx, args.get(1), |h, out| {
        let fields = parse_fields(args, 2, "Number of fields must be a positive integer")?;
        out.array(fields.len());
        for f in fields {
            let r = match h {
                Some(h) if h.contains(f) => match h.field_expire_at(f) {
                    None => NO_TTL,
                    Some(at) if seconds => ((at + 999 - base) / 1000) as i64,
                    Some(at) => (at - base) as i64,
                },
                _ => NO_FIELD,
            };
            out.int(r);
        }
        Ok(())
    })?
}

fn httl(ctx: &mut Ctx<'_>, args: &Args<'_>) -> CmdResult {
    httl_generic(ctx, args, true, true)
}

fn hpttl(ctx: &mut Ctx<'_>, args: &Args<'_>) -> CmdResult {
    httl_generic(ctx, args, true, false)
}

fn hexpiretime(ctx: &mut Ctx<'_>, args: &Args<'_>) -> CmdResult {
    httl_generic(ctx, args, false, true)
}

fn hpexpiretime(ctx: &mut Ctx<'_>, args: &Args<'_>) -> CmdResult {
    httl_generic(ctx, args, false, false)
}

fn hpersist(ctx: &mut Ctx<'_>, args: &Args<'_>) -> CmdResult {
    let parsed = parse_fields(args, 2, "Number of fields must be a positive integer");
    let mut parse_err = None;
    let replies = write_hash(ctx, args.get(1), false, "hpersist", |h, ops, _| {
        let fields = match &parsed {
            Ok(f) => f,
            Err(e) => {
                parse_err = Some(e.clone());
                return Ok((Vec::new(), false));
            }
        };
        let mut changed = false;
        let replies: Vec<i64> = fields
            .iter()
            .map(|&f| {
                if !h.contains(f) {
                    NO_FIELD
                } else if h.persist_field(f) {
                    ops.hfield_persist(f);
                    changed = true;
                    SET
                } else {
                    NO_TTL
                }
            })
            .collect();
        Ok((replies, changed))
    })?;
    if let Some(e) = parse_err {
        return Err(e);
    }
    let replies = match replies {
        Some(r) => r,
        None => vec![NO_FIELD; parsed?.len()],
    };
    ctx.out.array(replies.len());
    for r in replies {
        ctx.out.int(r);
    }
    Ok(())
}

#[cfg(test)]
pub(crate) mod tests {
    use std::sync::Arc;

    use shoal_keyspace::key_slot;

    use crate::tests::run;
    use crate::{Client, ClientHandle, Hooks, OwnedArgs, ServerState, config, execute};

    pub(crate) const NOW_MS: u64 = 1_000_000;

    /// A server and a client whose entries the test can inspect.
    pub(crate) struct Bench {
        pub srv: ServerState,
        pub client: Client,
    }

    impl Bench {
        pub fn new() -> Self {
            let srv = ServerState::new(config::Config::default(), NOW_MS, 7, Hooks::default());
            let h = Arc::new(ClientHandle::new(
                1,
                "127.0.0.1:1".into(),
                "127.0.0.1:2".into(),
                0,
            ));
            Bench {
                srv,
                client: Client::new(h, true),
            }
        }

        pub fn run(&mut self, cmd: &[&str]) -> String {
            let o = OwnedArgs::new(cmd.iter());
            let mut out = Vec::new();
            execute(&self.srv, &mut self.client, &o.args(), &mut out, NOW_MS);
            String::from_utf8_lossy(&out).into_owned()
        }

        /// The key's version, or None if absent.
        pub fn version(&self, key: &str) -> Option<u64> {
            let slot = key_slot(key.as_bytes());
            let shard = self.srv.ks.lock(self.srv.ks.shard_of(slot));
            shard
                .peek(0, slot, key.as_bytes(), NOW_MS)
                .map(|e| e.version())
        }

        /// Runs a write and checks the key's version grew (or stayed, if `changes` is false).
        pub fn write(&mut self, key: &str, cmd: &[&str], changes: bool) -> String {
            let before = self.version(key);
            let r = self.run(cmd);
            let after = self.version(key);
            if changes {
                assert!(
                    after > before,
                    "{cmd:?} did not advance {key}'s version: {r}"
                );
            } else {
                assert_eq!(after, before, "{cmd:?} changed {key}'s version: {r}");
            }
            r
        }

        pub fn check_invariants(&self) {
            for i in 0..self.srv.ks.shard_count() {
                self.srv.ks.lock(i).check_invariants();
            }
        }
    }

    fn resp3(cmds: &[&[&str]]) -> Vec<String> {
        let mut all: Vec<&[&str]> = vec![&["HELLO", "3"]];
        all.extend_from_slice(cmds);
        run(&all).split_off(1)
    }

    #[test]
    fn set_get_and_delete() {
        let r = run(&[
            &["HSET", "h", "a", "1", "b", "2"],
            &["HSET", "h", "a", "3", "c", "4"],
            &["HGET", "h", "a"],
            &["HGET", "h", "zz"],
            &["HGET", "nokey", "a"],
            &["HMGET", "h", "a", "zz", "c"],
            &["HLEN", "h"],
            &["HEXISTS", "h", "b"],
            &["HEXISTS", "h", "zz"],
            &["HSTRLEN", "h", "a"],
            &["HSTRLEN", "h", "zz"],
            &["HKEYS", "h"],
            &["HVALS", "h"],
            &["HGETALL", "h"],
            &["HDEL", "h", "a", "zz", "a"],
            &["HDEL", "h", "b", "c"],
            &["EXISTS", "h"],
            &["HDEL", "h", "b"],
            &["HMSET", "h", "x", "1"],
            &["HSETNX", "h", "x", "2"],
            &["HSETNX", "h", "y", "2"],
            &["HGETALL", "h"],
            &["HGETALL", "nokey"],
            &["HKEYS", "nokey"],
        ]);
        assert_eq!(r[0], ":2\r\n");
        assert_eq!(r[1], ":1\r\n");
        assert_eq!(r[2], "$1\r\n3\r\n");
        assert_eq!(r[3], "$-1\r\n");
        assert_eq!(r[4], "$-1\r\n");
        assert_eq!(r[5], "*3\r\n$1\r\n3\r\n$-1\r\n$1\r\n4\r\n");
        assert_eq!(r[6], ":3\r\n");
        assert_eq!((r[7].as_str(), r[8].as_str()), (":1\r\n", ":0\r\n"));
        assert_eq!((r[9].as_str(), r[10].as_str()), (":1\r\n", ":0\r\n"));
        assert_eq!(r[11], "*3\r\n$1\r\na\r\n$1\r\nb\r\n$1\r\nc\r\n");
        assert_eq!(r[12], "*3\r\n$1\r\n3\r\n$1\r\n2\r\n$1\r\n4\r\n");
        assert_eq!(
            r[13],
            "*6\r\n$1\r\na\r\n$1\r\n3\r\n$1\r\nb\r\n$1\r\n2\r\n$1\r\nc\r\n$1\r\n4\r\n"
        );
        assert_eq!(r[14], ":1\r\n");
        assert_eq!(r[15], ":2\r\n");
        assert_eq!(r[16], ":0\r\n", "an emptied hash is deleted");
        assert_eq!(r[17], ":0\r\n");
        assert_eq!(r[18], "+OK\r\n");
        assert_eq!((r[19].as_str(), r[20].as_str()), (":0\r\n", ":1\r\n"));
        assert_eq!(r[21], "*4\r\n$1\r\nx\r\n$1\r\n1\r\n$1\r\ny\r\n$1\r\n2\r\n");
        assert_eq!(r[22], "*0\r\n");
        assert_eq!(r[23], "*0\r\n");
    }

    #[test]
    fn arity_and_wrongtype_errors() {
        let r = run(&[
            &["HSET", "h", "a"],
            &["HSET", "h", "a", "1", "b"],
            &["HMSET", "h", "a", "1", "b"],
            &["SET", "s", "v"],
            &["HSET", "s", "a", "1"],
            &["HGET", "s", "a"],
            &["HGETALL", "s"],
            &["HDEL", "s", "a"],
            &["HINCRBY", "s", "a", "1"],
            &["HSCAN", "s", "0"],
            &["HRANDFIELD", "s"],
            &["HLEN", "s"],
        ]);
        assert_eq!(
            r[0],
            "-ERR wrong number of arguments for 'hset' command\r\n"
        );
        assert_eq!(
            r[1],
            "-ERR wrong number of arguments for 'hset' command\r\n"
        );
        assert_eq!(
            r[2],
            "-ERR wrong number of arguments for 'hmset' command\r\n"
        );
        for reply in &r[4..] {
            assert_eq!(
                reply,
                "-WRONGTYPE Operation against a key holding the wrong kind of value\r\n"
            );
        }
    }

    #[test]
    fn counters_like_redis() {
        let r = run(&[
            &[
                "HSET",
                "h",
                "i",
                "9223372036854775806",
                "s",
                "x",
                "f",
                "1.5",
                "z",
                "07",
            ],
            &["HINCRBY", "h", "i", "1"],
            &["HINCRBY", "h", "i", "1"],
            &["HINCRBY", "h", "s", "1"],
            &["HINCRBY", "h", "z", "1"],
            &["HINCRBY", "h", "n", "x"],
            &["HINCRBY", "h", "n", "-5"],
            &["HINCRBYFLOAT", "h", "f", "0.1"],
            &["HINCRBYFLOAT", "h", "s", "1"],
            &["HINCRBYFLOAT", "h", "f", "x"],
            &["HINCRBYFLOAT", "h", "f", "inf"],
            &["HSET", "h", "big", "1e4932"],
            &["HINCRBYFLOAT", "h", "big", "1e4932"],
            &["HINCRBYFLOAT", "h", "m", "3.0e3"],
            &["HINCRBYFLOAT", "h", "n", "1.5"],
            &["HINCRBYFLOAT", "new", "f", "2"],
            &["HGET", "h", "i"],
        ]);
        assert_eq!(r[1], ":9223372036854775807\r\n");
        assert_eq!(r[2], "-ERR increment or decrement would overflow\r\n");
        assert_eq!(r[3], "-ERR hash value is not an integer\r\n");
        assert_eq!(r[4], "-ERR hash value is not an integer\r\n");
        assert_eq!(r[5], "-ERR value is not an integer or out of range\r\n");
        assert_eq!(r[6], ":-5\r\n");
        assert_eq!(r[7], "$3\r\n1.6\r\n");
        assert_eq!(r[8], "-ERR hash value is not a float\r\n");
        assert_eq!(r[9], "-ERR value is not a valid float\r\n");
        assert_eq!(r[10], "-ERR value is NaN or Infinity\r\n");
        assert_eq!(r[12], "-ERR increment would produce NaN or Infinity\r\n");
        assert_eq!(r[13], "$4\r\n3000\r\n");
        assert_eq!(r[14], "$4\r\n-3.5\r\n");
        assert_eq!(r[15], "$1\r\n2\r\n");
        assert_eq!(r[16], "$19\r\n9223372036854775807\r\n");
    }

    #[test]
    fn resp3_shapes() {
        let r = resp3(&[
            &["HSET", "h", "a", "1"],
            &["HGETALL", "h"],
            &["HGETALL", "nokey"],
            &["HRANDFIELD", "h", "1", "WITHVALUES"],
            &["HRANDFIELD", "h", "-2", "WITHVALUES"],
            &["HRANDFIELD", "h", "-2"],
            &["HRANDFIELD", "nokey"],
            &["HRANDFIELD", "nokey", "2"],
            &["HMGET", "h", "zz"],
            &["HSCAN", "h", "0"],
        ]);
        assert_eq!(r[1], "%1\r\n$1\r\na\r\n$1\r\n1\r\n");
        assert_eq!(r[2], "%0\r\n");
        assert_eq!(r[3], "*1\r\n*2\r\n$1\r\na\r\n$1\r\n1\r\n");
        assert_eq!(
            r[4],
            "*2\r\n*2\r\n$1\r\na\r\n$1\r\n1\r\n*2\r\n$1\r\na\r\n$1\r\n1\r\n"
        );
        assert_eq!(r[5], "*2\r\n$1\r\na\r\n$1\r\na\r\n");
        assert_eq!(r[6], "_\r\n");
        assert_eq!(r[7], "*0\r\n");
        assert_eq!(r[8], "*1\r\n_\r\n");
        assert_eq!(r[9], "*2\r\n$1\r\n0\r\n*2\r\n$1\r\na\r\n$1\r\n1\r\n");
    }

    #[test]
    fn hrandfield_counts_and_errors() {
        let r = run(&[
            &["HSET", "h", "a", "1", "b", "2", "c", "3"],
            &["HRANDFIELD", "h", "5"],
            &["HRANDFIELD", "h", "0"],
            &["HRANDFIELD", "h", "-4"],
            &["HRANDFIELD", "h", "-2", "WITHVALUES"],
            &["HRANDFIELD", "h", "2", "WITHVALUES"],
            &["HRANDFIELD", "h", "x"],
            &["HRANDFIELD", "h", "-9223372036854775808"],
            &["HRANDFIELD", "h", "1", "WITHVALUE"],
            &["HRANDFIELD", "h", "1", "WITHVALUES", "x"],
            &["HRANDFIELD", "h", "-4611686018427387904", "WITHVALUES"],
            &["HRANDFIELD", "h", "-9223372036854775807"],
            &["HRANDFIELD", "nokey", "-3"],
            &["HRANDFIELD", "h"],
        ]);
        assert!(r[1].starts_with("*3\r\n"), "{}", r[1]);
        for f in ["$1\r\na\r\n", "$1\r\nb\r\n", "$1\r\nc\r\n"] {
            assert!(r[1].contains(f));
        }
        assert_eq!(r[2], "*0\r\n");
        assert!(r[3].starts_with("*4\r\n"));
        assert!(r[4].starts_with("*4\r\n"), "RESP2 flattens pairs: {}", r[4]);
        assert!(r[5].starts_with("*4\r\n"));
        assert_eq!(r[6], "-ERR value is not an integer or out of range\r\n");
        assert_eq!(
            r[7],
            "-ERR value is out of range, value must between -9223372036854775807 and 9223372036854775807\r\n"
        );
        assert_eq!(r[8], "-ERR syntax error\r\n");
        assert_eq!(r[9], "-ERR syntax error\r\n");
        assert_eq!(r[10], "-ERR value is out of range\r\n");
        assert_eq!(
            r[11],
            "-ERR value is out of range, value must between -16777216 and 9223372036854775807\r\n"
        );
        assert_eq!(r[12], "*0\r\n");
        assert!(["$1\r\na\r\n", "$1\r\nb\r\n", "$1\r\nc\r\n"].contains(&r[13].as_str()));
        // Distinct picks are distinct.
        let r = run(&[
            &["HSET", "h", "a", "1", "b", "2", "c", "3", "d", "4"],
            &["HRANDFIELD", "h", "3"],
        ]);
        let fields: std::collections::HashSet<&str> = r[1]
            .split("\r\n")
            .skip(2)
            .step_by(2)
            .filter(|s| !s.is_empty())
            .collect();
        assert_eq!(fields.len(), 3, "{}", r[1]);
    }

    #[test]
    fn hscan_listpack_whole_and_hashtable_by_cursor() {
        let mut b = Bench::new();
        b.run(&["HSET", "small", "a", "1", "b", "2", "xa", "3"]);
        assert_eq!(
            b.run(&["HSCAN", "small", "77", "MATCH", "*a", "COUNT", "1"]),
            "*2\r\n$1\r\n0\r\n*4\r\n$1\r\na\r\n$1\r\n1\r\n$2\r\nxa\r\n$1\r\n3\r\n"
        );
        assert_eq!(b.run(&["HSCAN", "small", "x"]), "-ERR invalid cursor\r\n");
        assert_eq!(
            b.run(&["HSCAN", "small", "0", "COUNT", "0"]),
            "-ERR syntax error\r\n"
        );
        assert_eq!(
            b.run(&["HSCAN", "small", "0", "COUNT", "x"]),
            "-ERR value is not an integer or out of range\r\n"
        );
        assert_eq!(
            b.run(&["HSCAN", "small", "0", "MATCH"]),
            "-ERR syntax error\r\n"
        );
        assert_eq!(
            b.run(&["HSCAN", "nokey", "0", "COUNT", "0"]),
            "*2\r\n$1\r\n0\r\n*0\r\n"
        );
        assert_eq!(b.run(&["HSCAN", "nokey", "x"]), "-ERR invalid cursor\r\n");
        for i in 0..600 {
            b.run(&["HSET", "big", &format!("f{i}"), "v"]);
        }
        assert_eq!(b.run(&["OBJECT", "ENCODING", "big"]), "$9\r\nhashtable\r\n");
        let mut seen = std::collections::HashSet::new();
        let mut cursor = "0".to_string();
        for round in 0.. {
            assert!(round < 600, "scan does not finish");
            let r = b.run(&["HSCAN", "big", &cursor, "COUNT", "20"]);
            let lines: Vec<&str> = r.split("\r\n").collect();
            cursor = lines[2].to_string();
            let items: Vec<&str> = lines[4..].iter().copied().skip(1).step_by(2).collect();
            for pair in items.chunks(2) {
                if pair.len() == 2 && !pair[0].is_empty() {
                    seen.insert(pair[0].to_string());
                }
            }
            if cursor == "0" {
                break;
            }
        }
        assert_eq!(seen.len(), 600);
    }

    #[test]
    fn encodings_convert_on_entries_and_value_length() {
        let mut b = Bench::new();
        b.run(&["CONFIG", "SET", "hash-max-listpack-entries", "2"]);
        b.run(&["HSET", "h", "a", "1", "b", "2"]);
        assert_eq!(b.run(&["OBJECT", "ENCODING", "h"]), "$8\r\nlistpack\r\n");
        b.run(&["HSET", "h", "c", "3"]);
        assert_eq!(b.run(&["OBJECT", "ENCODING", "h"]), "$9\r\nhashtable\r\n");
        b.run(&["CONFIG", "SET", "hash-max-listpack-entries", "128"]);
        b.run(&["HSET", "v", "a", &"x".repeat(64)]);
        assert_eq!(b.run(&["OBJECT", "ENCODING", "v"]), "$8\r\nlistpack\r\n");
        b.run(&["HSETNX", "v", "a", &"x".repeat(65)]);
        assert_eq!(
            b.run(&["OBJECT", "ENCODING", "v"]),
            "$8\r\nlistpack\r\n",
            "HSETNX did not set"
        );
        b.run(&["HSET", "v", "b", &"x".repeat(65)]);
        assert_eq!(b.run(&["OBJECT", "ENCODING", "v"]), "$9\r\nhashtable\r\n");
        b.run(&["HINCRBY", "w", &"f".repeat(65), "1"]);
        assert_eq!(b.run(&["OBJECT", "ENCODING", "w"]), "$9\r\nhashtable\r\n");
        b.check_invariants();
    }

    #[test]
    fn every_write_advances_the_version_and_noops_do_not() {
        let mut b = Bench::new();
        b.write("h", &["HSET", "h", "a", "1"], true);
        b.write("h", &["HSET", "h", "a", "1"], true);
        b.write("h", &["HMSET", "h", "b", "2"], true);
        b.write("h", &["HSETNX", "h", "a", "9"], false);
        b.write("h", &["HSETNX", "h", "c", "9"], true);
        b.write("h", &["HINCRBY", "h", "n", "1"], true);
        b.write("h", &["HINCRBYFLOAT", "h", "n", "1.5"], true);
        b.write("h", &["HINCRBY", "h", "a", "x"], false);
        b.write("h", &["HINCRBY", "h", "b", "9223372036854775805"], true);
        b.write("h", &["HINCRBY", "h", "b", "1"], false);
        b.write("h", &["HDEL", "h", "zz"], false);
        b.write("h", &["HDEL", "h", "a"], true);
        b.write("h", &["HGET", "h", "b"], false);
        b.write("h", &["HGETALL", "h"], false);
        b.write("h2", &["HINCRBYFLOAT", "h2", "f", "1"], true);
        b.write("h3", &["HSETNX", "h3", "f", "1"], true);
        b.write("h3", &["HSETNX", "h3", "f", "1"], false);
        assert_eq!(b.run(&["HDEL", "h3", "f"]), ":1\r\n");
        assert_eq!(b.version("h3"), None);
        b.check_invariants();
    }

    #[test]
    fn dump_restore_round_trips_both_encodings() {
        let mut b = Bench::new();
        b.run(&["HSET", "small", "a", "1", "b", "2"]);
        b.run(&["HSET", "big", "a", &"x".repeat(100), "b", "2"]);
        for key in ["small", "big"] {
            let slot = key_slot(key.as_bytes());
            let payload = {
                let shard = b.srv.ks.lock(b.srv.ks.shard_of(slot));
                crate::keys::dump_value(shard.peek(0, slot, key.as_bytes(), NOW_MS).unwrap())
            };
            let limits = b.srv.encoding_limits();
            let e = crate::keys::restore_value(&payload, b"copy", None, 1, &limits).unwrap();
            let orig = b.run(&["OBJECT", "ENCODING", key]);
            assert_eq!(
                format!("${}\r\n{}\r\n", e.encoding().len(), e.encoding()),
                orig
            );
            let shard = b.srv.ks.lock(b.srv.ks.shard_of(slot));
            let o = shard.peek(0, slot, key.as_bytes(), NOW_MS).unwrap();
            assert!(
                matches!((o.value(), e.value()), (shoal_keyspace::ValueRef::Obj(a), shoal_keyspace::ValueRef::Obj(c)) if a == c)
            );
        }
    }

    #[test]
    fn scan_cursor_parsing_like_strtoul() {
        use crate::args::parse_scan_cursor;
        assert_eq!(parse_scan_cursor(b"0"), Ok(0));
        assert_eq!(parse_scan_cursor(b"-1"), Ok(u64::MAX));
        assert_eq!(parse_scan_cursor(b"18446744073709551615"), Ok(u64::MAX));
        assert!(parse_scan_cursor(b"18446744073709551616").is_err());
        assert!(parse_scan_cursor(b"1x").is_err());
        assert!(parse_scan_cursor(b"").is_err());
    }

    // -----------------------------------------------------------------------------------------
    // Field expiry. Replies and errors as Redis 7.4 documents them (and as its t_hash.c answers;
    // redis-server 7.0 has no field expiry to record a golden corpus from).

    /// Runs `cmd` at `now` (ms) on the bench's server.
    fn at(b: &mut Bench, now: u64, cmd: &[&str]) -> String {
        let o = OwnedArgs::new(cmd.iter());
        let mut out = Vec::new();
        execute(&b.srv, &mut b.client, &o.args(), &mut out, now);
        String::from_utf8_lossy(&out).into_owned()
    }

    fn ints(v: &[i64]) -> String {
        let mut s = format!("*{}\r\n", v.len());
        for i in v {
            s.push_str(&format!(":{i}\r\n"));
        }
        s
    }

    #[test]
    fn hexpire_replies_per_field_and_conditions() {
        let mut b = Bench::new();
        let t = NOW_MS;
        at(&mut b, t, &["HSET", "h", "a", "1", "b", "2", "c", "3"]);
        assert_eq!(
            at(
                &mut b,
                t,
                &["HEXPIRE", "h", "100", "FIELDS", "2", "a", "zz"]
            ),
            ints(&[1, -2])
        );
        assert_eq!(
            at(&mut b, t, &["HTTL", "h", "FIELDS", "3", "a", "b", "zz"]),
            ints(&[100, -1, -2])
        );
        assert_eq!(
            at(&mut b, t, &["HPTTL", "h", "FIELDS", "1", "a"]),
            ints(&[100_000])
        );
        assert_eq!(
            at(&mut b, t, &["HPEXPIRETIME", "h", "FIELDS", "1", "a"]),
            ints(&[t as i64 + 100_000])
        );
        assert_eq!(
            at(&mut b, t, &["HEXPIRETIME", "h", "FIELDS", "1", "a"]),
            ints(&[(t as i64 + 100_000 + 999) / 1000])
        );
        // NX: only fields without TTL; XX: only with; GT/LT: a field without TTL counts as
        // infinite (LT sets it, GT does not).
        assert_eq!(
            at(
                &mut b,
                t,
                &["HEXPIRE", "h", "50", "NX", "FIELDS", "2", "a", "b"]
            ),
            ints(&[0, 1])
        );
        assert_eq!(
            at(
                &mut b,
                t,
                &["HEXPIRE", "h", "60", "xx", "FIELDS", "2", "a", "c"]
            ),
            ints(&[1, 0])
        );
        assert_eq!(
            at(
                &mut b,
                t,
                &["HEXPIRE", "h", "30", "GT", "FIELDS", "3", "a", "b", "c"]
            ),
            ints(&[0, 0, 0])
        );
        assert_eq!(
            at(&mut b, t, &["HEXPIRE", "h", "70", "GT", "FIELDS", "1", "a"]),
            ints(&[1])
        );
        assert_eq!(
            at(
                &mut b,
                t,
                &["HEXPIRE", "h", "70", "LT", "FIELDS", "2", "a", "c"]
            ),
            ints(&[0, 1])
        );
        assert_eq!(
            at(&mut b, t, &["HEXPIRE", "h", "20", "LT", "FIELDS", "1", "a"]),
            ints(&[1])
        );
        assert_eq!(
            at(&mut b, t, &["HTTL", "h", "FIELDS", "3", "a", "b", "c"]),
            ints(&[20, 50, 70])
        );
        // A time not in the future deletes the field: 2.
        assert_eq!(
            at(
                &mut b,
                t,
                &["HPEXPIREAT", "h", &t.to_string(), "FIELDS", "1", "b"]
            ),
            ints(&[2])
        );
        assert_eq!(
            at(&mut b, t, &["HEXPIRE", "h", "0", "FIELDS", "1", "c"]),
            ints(&[2])
        );
        assert_eq!(at(&mut b, t, &["HLEN", "h"]), ":1\r\n");
        assert_eq!(
            at(&mut b, t, &["HEXPIREAT", "h", "1", "FIELDS", "1", "a"]),
            ints(&[2])
        );
        assert_eq!(
            at(&mut b, t, &["EXISTS", "h"]),
            ":0\r\n",
            "the last field took the key"
        );
        assert_eq!(
            at(
                &mut b,
                t,
                &["HEXPIRE", "nokey", "10", "FIELDS", "2", "a", "b"]
            ),
            ints(&[-2, -2])
        );
        assert_eq!(
            at(&mut b, t, &["HTTL", "nokey", "FIELDS", "1", "a"]),
            ints(&[-2])
        );
        assert_eq!(
            at(&mut b, t, &["HPERSIST", "nokey", "FIELDS", "1", "a"]),
            ints(&[-2])
        );
        b.check_invariants();
    }

    #[test]
    fn field_expiry_errors_as_redis_7_4() {
        let mut b = Bench::new();
        let t = NOW_MS;
        at(&mut b, t, &["HSET", "h", "a", "1"]);
        at(&mut b, t, &["SET", "s", "x"]);
        let e = |m: &str| format!("-ERR {m}\r\n");
        let cases: &[(&[&str], String)] = &[
            (
                &["HEXPIRE", "s", "x", "FIELDS", "1", "a"],
                "-WRONGTYPE Operation against a key holding the wrong kind of value\r\n".into(),
            ),
            (
                &["HTTL", "s", "x", "FIELDS", "1", "a"],
                "-WRONGTYPE Operation against a key holding the wrong kind of value\r\n".into(),
            ),
            (
                &["HPERSIST", "s", "FIELDS", "1", "a"],
                "-WRONGTYPE Operation against a key holding the wrong kind of value\r\n".into(),
            ),
            (
                &["HEXPIRE", "h", "x", "FIELDS", "1", "a"],
                e("value is not an integer or out of range"),
            ),
            (
                &["HEXPIRE", "h", "-1", "FIELDS", "1", "a"],
                e("invalid expire time, must be >= 0"),
            ),
            (
                &["HEXPIRE", "h", "70368744177", "FIELDS", "1", "a"],
                e("invalid expire time in 'hexpire' command"),
            ),
            (
                &["HPEXPIREAT", "h", "70368744177664", "FIELDS", "1", "a"],
                e("invalid expire time in 'hpexpireat' command"),
            ),
            (
                &["HPEXPIRE", "h", "70368744177663", "FIELDS", "1", "a"],
                e("invalid expire time in 'hpexpire' command"),
            ),
            (
                &["HEXPIRE", "h", "10", "FIELD", "1", "a"],
                e("Mandatory argument FIELDS is missing or not at the right position"),
            ),
            (
                &["HEXPIRE", "h", "10", "NX", "1", "a"],
                e("Mandatory argument FIELDS is missing or not at the right position"),
            ),
            (
                &["HEXPIRE", "h", "10", "FIELDS", "0", "a"],
                e("Parameter `numFields` should be greater than 0"),
            ),
            (
                &["HEXPIRE", "h", "10", "FIELDS", "x", "a"],
                e("Parameter `numFields` should be greater than 0"),
            ),
            (
                &["HEXPIRE", "h", "10", "FIELDS", "2", "a"],
                e("The `numfields` parameter must match the number of arguments"),
            ),
            (
                &["HEXPIRE", "nokey", "10", "FIELDS", "2", "a"],
                e("The `numfields` parameter must match the number of arguments"),
            ),
            (
                &["HTTL", "h", "FIELDS", "0", "a"],
                e("Number of fields must be a positive integer"),
            ),
            (
                &["HTTL", "h", "FIELDS", "1", "a", "b"],
                e("The `numfields` parameter must match the number of arguments"),
            ),
            (
                &["HTTL", "h", "NOPE", "1", "a"],
                e("Mandatory argument FIELDS is missing or not at the right position"),
            ),
            (
                &["HPERSIST", "h", "FIELDS", "-1", "a"],
                e("Number of fields must be a positive integer"),
            ),
            (
                &["HEXPIRE", "h", "10", "FIELDS", "1"],
                e("wrong number of arguments for 'hexpire' command"),
            ),
            (
                &["HTTL", "h", "FIELDS", "1"],
                e("wrong number of arguments for 'httl' command"),
            ),
        ];
        for (cmd, want) in cases {
            assert_eq!(&at(&mut b, t, cmd), want, "{cmd:?}");
        }
        assert_eq!(
            at(&mut b, t, &["HTTL", "h", "FIELDS", "1", "a"]),
            ints(&[-1]),
            "nothing changed"
        );
    }

    #[test]
    fn fields_expire_lazily_hset_clears_hincrby_keeps_hpersist_removes() {
        let mut b = Bench::new();
        let t = NOW_MS;
        at(
            &mut b,
            t,
            &["HSET", "h", "a", "1", "b", "2", "n", "5", "p", "x"],
        );
        at(
            &mut b,
            t,
            &["HPEXPIRE", "h", "100", "FIELDS", "4", "a", "b", "n", "p"],
        );
        assert_eq!(
            at(&mut b, t, &["OBJECT", "ENCODING", "h"]),
            "$10\r\nlistpackex\r\n"
        );
        // HSET clears the TTL; HINCRBY keeps it; HPERSIST removes it.
        at(&mut b, t, &["HSET", "h", "b", "3"]);
        assert_eq!(at(&mut b, t, &["HINCRBY", "h", "n", "1"]), ":6\r\n");
        assert_eq!(
            at(&mut b, t, &["HPERSIST", "h", "FIELDS", "3", "p", "p", "zz"]),
            ints(&[1, -1, -2])
        );
        assert_eq!(
            at(
                &mut b,
                t,
                &["HPTTL", "h", "FIELDS", "4", "a", "b", "n", "p"]
            ),
            ints(&[100, -1, 100, -1])
        );
        // At the deadline the fields are gone for every read.
        let t2 = t + 100;
        assert_eq!(at(&mut b, t2, &["HGET", "h", "a"]), "$-1\r\n");
        assert_eq!(at(&mut b, t2, &["HLEN", "h"]), ":2\r\n");
        assert_eq!(at(&mut b, t2, &["HEXISTS", "h", "n"]), ":0\r\n");
        assert_eq!(
            at(&mut b, t2, &["HKEYS", "h"]),
            "*2\r\n$1\r\nb\r\n$1\r\np\r\n"
        );
        assert_eq!(
            at(&mut b, t2, &["HSCAN", "h", "0"]),
            "*2\r\n$1\r\n0\r\n*4\r\n$1\r\nb\r\n$1\r\n3\r\n$1\r\np\r\n$1\r\nx\r\n"
        );
        assert_eq!(b.srv.ks.stats().expired_fields, 2);
        // The last field expiring takes the key with it.
        at(
            &mut b,
            t2,
            &["HPEXPIRE", "h", "10", "FIELDS", "2", "b", "p"],
        );
        assert_eq!(at(&mut b, t2 + 10, &["HGETALL", "h"]), "*0\r\n");
        assert_eq!(at(&mut b, t2 + 10, &["EXISTS", "h"]), ":0\r\n");
        // A write to a hash whose fields all expired starts from an empty hash.
        at(&mut b, t2, &["HSET", "g", "a", "1"]);
        at(&mut b, t2, &["HPEXPIRE", "g", "5", "FIELDS", "1", "a"]);
        assert_eq!(at(&mut b, t2 + 5, &["HINCRBY", "g", "a", "2"]), ":2\r\n");
        assert_eq!(
            at(&mut b, t2 + 5, &["HTTL", "g", "FIELDS", "1", "a"]),
            ints(&[-1])
        );
        assert_eq!(
            at(&mut b, t2 + 5, &["OBJECT", "ENCODING", "g"]),
            "$8\r\nlistpack\r\n",
            "a new hash, not the old one's remains"
        );
        b.check_invariants();
    }

    #[test]
    fn field_ttls_survive_copy_rename_dump_restore_and_drive_the_encoding() {
        let mut b = Bench::new();
        let t = NOW_MS;
        at(&mut b, t, &["HSET", "h", "a", "1", "b", "2"]);
        at(&mut b, t, &["HEXPIRE", "h", "100", "FIELDS", "1", "a"]);
        at(&mut b, t, &["COPY", "h", "c"]);
        at(&mut b, t, &["RENAME", "h", "r"]);
        for k in ["c", "r"] {
            assert_eq!(
                at(&mut b, t, &["HTTL", k, "FIELDS", "2", "a", "b"]),
                ints(&[100, -1]),
                "{k}"
            );
        }
        let dump = {
            let slot = key_slot(b"r");
            let shard = b.srv.ks.lock(b.srv.ks.shard_of(slot));
            crate::keys::dump_value(shard.peek(0, slot, b"r", t).unwrap())
        };
        let limits = b.srv.encoding_limits();
        let e = crate::keys::restore_value(&dump, b"restored", None, 1, &limits).unwrap();
        assert_eq!(e.encoding(), "listpackex");
        match e.value() {
            shoal_keyspace::ValueRef::Obj(shoal_keyspace::Object::Hash(h)) => {
                assert_eq!(h.field_expire_at(b"a"), Some(t + 100_000));
                assert_eq!(h.field_expire_at(b"b"), None);
            }
            _ => panic!("a hash"),
        }
        // Active expiry later deletes `a` in every copy.
        let mut versions = 1u64 << 40;
        let (n, more) = b
            .srv
            .ks
            .lock_all()
            .iter_mut()
            .fold((0, false), |(n, m), s| {
                let (k, mm) = s.expire_fields_cycle(
                    t + 100_000,
                    100,
                    || {
                        versions += 1;
                        versions
                    },
                    |_, _| {},
                );
                (n + k, m || mm)
            });
        assert_eq!((n, more), (2, false));
        for k in ["c", "r"] {
            assert_eq!(
                at(&mut b, t + 100_000, &["HGETALL", k]),
                "*2\r\n$1\r\nb\r\n$1\r\n2\r\n",
                "{k}"
            );
        }
        // Large hash: hashtable, as in Redis.
        for i in 0..600 {
            at(&mut b, t, &["HSET", "big", &format!("f{i}"), "x"]);
        }
        at(&mut b, t, &["HEXPIRE", "big", "100", "FIELDS", "1", "f1"]);
        assert_eq!(
            at(&mut b, t, &["OBJECT", "ENCODING", "big"]),
            "$9\r\nhashtable\r\n"
        );
        b.check_invariants();
    }

    #[derive(Debug, Clone)]
    enum WireOp {
        Set(u8),
        Del(u8),
        Expire(u8, u64, u8),
        Persist(u8),
        Incr(u8),
        Advance(u64),
        Read(u8),
    }

    fn wire_op() -> impl proptest::strategy::Strategy<Value = WireOp> {
        use proptest::prelude::*;
        prop_oneof![
            any::<u8>().prop_map(WireOp::Set),
            any::<u8>().prop_map(WireOp::Del),
            (any::<u8>(), 0u64..50, 0u8..5).prop_map(|(f, d, c)| WireOp::Expire(f, d, c)),
            any::<u8>().prop_map(WireOp::Persist),
            any::<u8>().prop_map(WireOp::Incr),
            (0u64..30).prop_map(WireOp::Advance),
            any::<u8>().prop_map(WireOp::Read),
        ]
    }

    proptest::proptest! {
        /// Commands against a model of field → (value, deadline) with a clock that advances:
        /// every reply, HGETALL and the TTLs agree, and the keyspace's accounting holds.
        #[test]
        fn commands_match_a_model_of_fields_with_deadlines(
            ops in proptest::collection::vec(wire_op(), 1..120),
        ) {
            use std::collections::BTreeMap;
            let mut b = Bench::new();
            let mut now = NOW_MS;
            let mut m: BTreeMap<String, (i64, Option<u64>)> = BTreeMap::new();
            let name = |f: u8| format!("f{}", f % 6);
            for op in ops {
                m.retain(|_, (_, at)| at.is_none_or(|a| a > now));
                match op {
                    WireOp::Set(f) => {
                        let r = at(&mut b, now, &["HSET", "h", &name(f), "7"]);
                        let new = m.insert(name(f), (7, None)).is_none();
                        proptest::prop_assert_eq!(r, format!(":{}\r\n", new as i64));
                    }
                    WireOp::Del(f) => {
                        let r = at(&mut b, now, &["HDEL", "h", &name(f)]);
                        let had = m.remove(&name(f)).is_some();
                        proptest::prop_assert_eq!(r, format!(":{}\r\n", had as i64));
                    }
                    WireOp::Expire(f, d, c) => {
                        let when = now + d;
                        let cond = ["", "NX", "XX", "GT", "LT"][c as usize];
                        let mut cmd = vec!["HPEXPIREAT".to_string(), "h".into(), when.to_string()];
                        if !cond.is_empty() {
                            cmd.push(cond.into());
                        }
                        cmd.extend(["FIELDS".into(), "1".into(), name(f)]);
                        let cmd: Vec<&str> = cmd.iter().map(String::as_str).collect();
                        let r = at(&mut b, now, &cmd);
                        let want = match m.get_mut(&name(f)) {
                            None => -2,
                            Some((_, prev)) => {
                                let ok = match (cond, *prev) {
                                    ("", _) | ("NX", None) | ("LT", None) | ("XX", Some(_)) => true,
                                    ("GT", Some(p)) => when > p,
                                    ("LT", Some(p)) => when < p,
                                    _ => false,
                                };
                                if !ok {
                                    0
                                } else if when <= now {
                                    m.remove(&name(f));
                                    2
                                } else {
                                    *prev = Some(when);
                                    1
                                }
                            }
                        };
                        proptest::prop_assert_eq!(r, ints(&[want]));
                    }
                    WireOp::Persist(f) => {
                        let r = at(&mut b, now, &["HPERSIST", "h", "FIELDS", "1", &name(f)]);
                        let want = match m.get_mut(&name(f)) {
                            None => -2,
                            Some((_, None)) => -1,
                            Some((_, at)) => { *at = None; 1 }
                        };
                        proptest::prop_assert_eq!(r, ints(&[want]));
                    }
                    WireOp::Incr(f) => {
                        let r = at(&mut b, now, &["HINCRBY", "h", &name(f), "1"]);
                        let e = m.entry(name(f)).or_insert((0, None));
                        e.0 += 1;
                        proptest::prop_assert_eq!(r, format!(":{}\r\n", e.0));
                    }
                    WireOp::Advance(d) => now += d,
                    WireOp::Read(f) => {
                        let r = at(&mut b, now, &["HPTTL", "h", "FIELDS", "1", &name(f)]);
                        let want = match m.get(&name(f)) {
                            None => -2,
                            Some((_, None)) => -1,
                            Some((_, Some(a))) => (a - now) as i64,
                        };
                        proptest::prop_assert_eq!(r, ints(&[want]));
                    }
                }
                b.check_invariants();
            }
            m.retain(|_, (_, at)| at.is_none_or(|a| a > now));
            let r = at(&mut b, now, &["HLEN", "h"]);
            proptest::prop_assert_eq!(r, format!(":{}\r\n", m.len()));
            let r = at(&mut b, now, &["EXISTS", "h"]);
            // A hash whose fields all expired may linger until touched or actively expired;
            // HLEN above touched it.
            proptest::prop_assert_eq!(r, format!(":{}\r\n", (!m.is_empty()) as i64));
        }
    }
}
