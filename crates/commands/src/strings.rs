//! String and counter commands: GET, SET and its variants, MGET/MSET, APPEND, ranges, counters, LCS.

use crate::err;
use crate::error::ReplyError;
use shoal_keyspace::{Entry, Shard};

use crate::args::{ERR_NOT_FLOAT, ERR_NOT_INTEGER, ERR_OVERFLOW, ERR_SYNTAX};
use crate::longdouble::{LongDouble, Parsed};
use crate::notify;
use crate::table::{FindKeys, Group, KeySpec, Spec, flag::*, key::*};
use crate::{Args, CmdResult, Ctx};

const STR: Group = Group::String;

pub static COMMANDS: &[Spec] = &[
    Spec {
        name: "append",
        arity: 3,
        flags: WRITE | DENYOOM | FAST,
        keys: &[KeySpec::at(1, RW | INSERT)],
        group: STR,
        since: "2.0.0",
        summary: "Appends a string to the value of a key. Creates the key if it doesn't exist.",
        handler: Some(append),
        ..Spec::DEFAULT
    },
    Spec {
        name: "decr",
        arity: 2,
        flags: WRITE | DENYOOM | FAST,
        keys: &[KeySpec::at(1, RW | ACCESS | UPDATE)],
        group: STR,
        since: "1.0.0",
        summary: "Decrements the integer value of a key by one.",
        handler: Some(decr),
        ..Spec::DEFAULT
    },
    Spec {
        name: "decrby",
        arity: 3,
        flags: WRITE | DENYOOM | FAST,
        keys: &[KeySpec::at(1, RW | ACCESS | UPDATE)],
        group: STR,
        since: "1.0.0",
        summary: "Decrements a number from the integer value of a key.",
        handler: Some(decrby),
        ..Spec::DEFAULT
    },
    Spec {
        name: "get",
        arity: 2,
        flags: READONLY | FAST,
        keys: &[KeySpec::at(1, RO | ACCESS)],
        group: STR,
        since: "1.0.0",
        summary: "Returns the string value of a key.",
        handler: Some(get),
        ..Spec::DEFAULT
    },
    Spec {
        name: "getdel",
        arity: 2,
        flags: WRITE | FAST,
        keys: &[KeySpec::at(1, RW | ACCESS | DELETE)],
        group: STR,
        since: "6.2.0",
        summary: "Returns the string value of a key after deleting the key.",
        handler: Some(getdel),
        ..Spec::DEFAULT
    },
    Spec {
        name: "getex",
        arity: -2,
        flags: WRITE | FAST,
        keys: &[
            KeySpec::at(1, RW | ACCESS | UPDATE).notes("RW and UPDATE because it changes the TTL")
        ],
        group: STR,
        since: "6.2.0",
        summary: "Returns the string value of a key after setting its expiration time.",
        handler: Some(getex),
        ..Spec::DEFAULT
    },
    Spec {
        name: "getrange",
        arity: 4,
        flags: READONLY,
        keys: &[KeySpec::at(1, RO | ACCESS)],
        group: STR,
        since: "2.4.0",
        summary: "Returns a substring of the string stored at a key.",
        handler: Some(getrange),
        ..Spec::DEFAULT
    },
    Spec {
        name: "substr",
        arity: 4,
        flags: READONLY,
        keys: &[KeySpec::at(1, RO | ACCESS)],
        group: STR,
        since: "1.0.0",
        summary: "Returns a substring from a string value (deprecated: GETRANGE).",
        handler: Some(getrange),
        ..Spec::DEFAULT
    },
    Spec {
        name: "getset",
        arity: 3,
        flags: WRITE | DENYOOM | FAST,
        keys: &[KeySpec::at(1, RW | ACCESS | UPDATE)],
        group: STR,
        since: "1.0.0",
        summary: "Returns the previous string value of a key after setting it to a new value.",
        handler: Some(getset),
        ..Spec::DEFAULT
    },
    Spec {
        name: "incr",
        arity: 2,
        flags: WRITE | DENYOOM | FAST,
        keys: &[KeySpec::at(1, RW | ACCESS | UPDATE)],
        group: STR,
        since: "1.0.0",
        summary: "Increments the integer value of a key by one.",
        handler: Some(incr),
        ..Spec::DEFAULT
    },
    Spec {
        name: "incrby",
        arity: 3,
        flags: WRITE | DENYOOM | FAST,
        keys: &[KeySpec::at(1, RW | ACCESS | UPDATE)],
        group: STR,
        since: "1.0.0",
        summary: "Increments the integer value of a key by a number.",
        handler: Some(incrby),
        ..Spec::DEFAULT
    },
    Spec {
        name: "incrbyfloat",
        arity: 3,
        flags: WRITE | DENYOOM | FAST,
        keys: &[KeySpec::at(1, RW | ACCESS | UPDATE)],
        group: STR,
        since: "2.6.0",
        summary: "Increment the floating point value of a key by a number.",
        handler: Some(incrbyfloat),
        ..Spec::DEFAULT
    },
    Spec {
        name: "lcs",
        arity: -3,
        flags: READONLY,
        keys: &[KeySpec::at(1, RO | ACCESS).find(FindKeys::Range {
            last_key: 1,
            step: 1,
            limit: 0,
        })],
        group: STR,
        since: "7.0.0",
        summary: "Finds the longest common substring.",
        handler: Some(lcs),
        ..Spec::DEFAULT
    },
    Spec {
        name: "mget",
        arity: -2,
        flags: READONLY | FAST,
        keys: &[KeySpec::at(1, RO | ACCESS).find(FindKeys::Range {
            last_key: -1,
            step: 1,
            limit: 0,
        })],
        group: STR,
        since: "1.0.0",
        summary: "Atomically returns the string values of one or more keys.",
        tips: &["request_policy:multi_shard"],
        handler: Some(mget),
        ..Spec::DEFAULT
    },
    Spec {
        name: "mset",
        arity: -3,
        flags: WRITE | DENYOOM,
        keys: &[KeySpec::at(1, OW | UPDATE).find(FindKeys::Range {
            last_key: -1,
            step: 2,
            limit: 0,
        })],
        group: STR,
        since: "1.0.1",
        summary: "Atomically creates or modifies the string values of one or more keys.",
        tips: &[
            "request_policy:multi_shard",
            "response_policy:all_succeeded",
        ],
        handler: Some(mset),
        ..Spec::DEFAULT
    },
    Spec {
        name: "msetnx",
        arity: -3,
        flags: WRITE | DENYOOM,
        keys: &[KeySpec::at(1, OW | INSERT).find(FindKeys::Range {
            last_key: -1,
            step: 2,
            limit: 0,
        })],
        group: STR,
        since: "1.0.1",
        summary: "Atomically modifies the string values of one or more keys only when all keys don't exist.",
        tips: &["request_policy:multi_shard", "response_policy:agg_min"],
        handler: Some(msetnx),
        ..Spec::DEFAULT
    },
    Spec {
        name: "psetex",
        arity: 4,
        flags: WRITE | DENYOOM,
        keys: &[KeySpec::at(1, OW | UPDATE)],
        group: STR,
        since: "2.6.0",
        summary: "Sets both string value and expiration time in milliseconds of a key.",
        handler: Some(psetex),
        ..Spec::DEFAULT
    },
    Spec {
        name: "set",
        arity: -3,
        flags: WRITE | DENYOOM,
        keys: &[KeySpec::at(1, RW | ACCESS | UPDATE | VARIABLE_FLAGS)
            .notes("RW and ACCESS due to the optional `GET` argument")],
        group: STR,
        since: "1.0.0",
        summary: "Sets the string value of a key, ignoring its type.",
        key_flags: Some(set_key_flags),
        handler: Some(set),
        ..Spec::DEFAULT
    },
    Spec {
        name: "setex",
        arity: 4,
        flags: WRITE | DENYOOM,
        keys: &[KeySpec::at(1, OW | UPDATE)],
        group: STR,
        since: "2.0.0",
        summary: "Sets the string value and expiration time of a key.",
        handler: Some(setex),
        ..Spec::DEFAULT
    },
    Spec {
        name: "setnx",
        arity: 3,
        flags: WRITE | DENYOOM | FAST,
        keys: &[KeySpec::at(1, OW | INSERT)],
        group: STR,
        since: "1.0.0",
        summary: "Set the string value of a key only when the key doesn't exist.",
        handler: Some(setnx),
        ..Spec::DEFAULT
    },
    Spec {
        name: "setrange",
        arity: 4,
        flags: WRITE | DENYOOM,
        keys: &[KeySpec::at(1, RW | UPDATE)],
        group: STR,
        since: "2.2.0",
        summary: "Overwrites a part of a string value with another by an offset.",
        handler: Some(setrange),
        ..Spec::DEFAULT
    },
    Spec {
        name: "strlen",
        arity: 2,
        flags: READONLY | FAST,
        keys: &[KeySpec::at(1, RO)],
        group: STR,
        since: "2.2.0",
        summary: "Returns the length of a string value.",
        handler: Some(strlen),
        ..Spec::DEFAULT
    },
];

/// SET's key flags for one request, as Redis's `setGetKeys` gives them: with GET it reads the old
/// value (RW, access), without it only overwrites (OW).
fn set_key_flags(args: &Args<'_>) -> u32 {
    if args.iter().skip(3).any(|a| a.eq_ignore_ascii_case(b"get")) {
        RW | ACCESS | UPDATE
    } else {
        OW | UPDATE
    }
}

/// Expiry options shared by SET, GETEX and shoal's versioned writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExpireOpt {
    /// No option given: the write clears any TTL.
    None,
    /// Absolute deadline in ms.
    At(u64),
    KeepTtl,
    Persist,
}

/// Converts EX/PX/EXAT/PXAT `value` to an absolute deadline, with Redis's checks and errors.
pub fn parse_expire(
    ctx: &Ctx<'_>,
    unit: &[u8],
    value: &[u8],
    cmd_name: &str,
) -> Result<u64, ReplyError> {
    let n = crate::args::parse_i64(value).ok_or(ERR_NOT_INTEGER)?;
    let invalid = || err!("invalid expire time in '{cmd_name}' command");
    if n <= 0 {
        return Err(invalid());
    }
    let seconds = unit.eq_ignore_ascii_case(b"EX") || unit.eq_ignore_ascii_case(b"EXAT");
    let ms = if seconds {
        n.checked_mul(1000).ok_or_else(invalid)?
    } else {
        n
    };
    let relative = unit.eq_ignore_ascii_case(b"EX") || unit.eq_ignore_ascii_case(b"PX");
    let at = if relative {
        jitter_ttl_ms(ctx, ms)
            .checked_add(ctx.now_ms as i64)
            .ok_or_else(invalid)?
    } else {
        ms
    };
    Ok(at as u64)
}

/// A relative TTL of `ttl_ms` grown by a random 0..=`ttl-jitter-percent`% of itself (the
/// deadline, not the jitter, is what replicates: replicas get the same one). Absolute deadlines
/// (EXAT, PXAT, EXPIREAT) are the caller's choice and are never moved.
pub fn jitter_ttl_ms(ctx: &Ctx<'_>, ttl_ms: i64) -> i64 {
    let pct = ctx
        .srv
        .hot
        .ttl_jitter_percent
        .load(std::sync::atomic::Ordering::Relaxed);
    if pct == 0 || ttl_ms <= 0 {
        return ttl_ms;
    }
    let span = (ttl_ms as u128 * pct as u128 / 100) as u64;
    if span == 0 {
        return ttl_ms;
    }
    let extra = crate::hashes::command_rng(ctx).next_u64() % (span + 1);
    ttl_ms.saturating_add(extra as i64)
}

/// Counts a read made by a write command in `keyspace_hits`/`keyspace_misses`, as Redis does.
/// Counts a read's hit or miss, raising `keymiss` on a miss (Redis's `lookupKeyRead`).
fn count_read(shard: &mut shoal_keyspace::Shard, hit: bool, db: usize, key: &[u8]) {
    if hit {
        shard.stats.keyspace_hits += 1;
    } else {
        shard.stats.keyspace_misses += 1;
        shard.note(notify::KEY_MISS, "keymiss", db, key);
    }
}

fn key_slot_of(key: &[u8]) -> u16 {
    shoal_keyspace::key_slot(key)
}

/// The string value of a live key, or WRONGTYPE for another type.
fn string_of(e: &Entry) -> Result<&[u8], ReplyError> {
    e.string().ok_or(ReplyError::WrongType)
}

/// Stores a string under `key`, replacing whatever was there. The TTL becomes `expire`
/// (KeepTtl keeps the old live one).
#[allow(clippy::too_many_arguments)] // the locked shard's coordinates, spelled out for its callers
pub fn store_string(
    shard: &mut Shard,
    db: usize,
    slot: u16,
    key: &[u8],
    value: &[u8],
    expire: ExpireOpt,
    version: u64,
    now_ms: u64,
) {
    let expire_ms = match expire {
        ExpireOpt::At(t) => Some(t),
        ExpireOpt::KeepTtl => shard
            .peek(db, slot, key, now_ms)
            .and_then(|e| e.expire_ms()),
        ExpireOpt::None | ExpireOpt::Persist => None,
    };
    let w = shoal_keyspace::StringWrite {
        key,
        value,
        expire_ms,
        version,
    };
    shard.insert_string(db, slot, w, now_ms, crate::repl::stream::encode_put);
}

fn get(ctx: &mut Ctx<'_>, args: &Args<'_>) -> CmdResult {
    let (mut shard, slot) = ctx.shard(args.get(1));
    match shard.lookup_read(ctx.client.db, slot, args.get(1), ctx.now_ms) {
        Some(e) => ctx.out.bulk(string_of(&e)?),
        None => ctx.out.null(),
    }
    Ok(())
}

fn set(ctx: &mut Ctx<'_>, args: &Args<'_>) -> CmdResult {
    let mut nx = false;
    let mut xx = false;
    let mut want_get = false;
    let mut expire = ExpireOpt::None;
    let mut i = 3;
    while i < args.len() {
        let a = args.get(i);
        let has_next = i + 1 < args.len();
        if a.eq_ignore_ascii_case(b"NX") && !xx {
            nx = true;
        } else if a.eq_ignore_ascii_case(b"XX") && !nx {
            xx = true;
        } else if a.eq_ignore_ascii_case(b"GET") {
            want_get = true;
        } else if a.eq_ignore_ascii_case(b"KEEPTTL") && expire == ExpireOpt::None {
            expire = ExpireOpt::KeepTtl;
        } else if (a.eq_ignore_ascii_case(b"EX")
            || a.eq_ignore_ascii_case(b"PX")
            || a.eq_ignore_ascii_case(b"EXAT")
            || a.eq_ignore_ascii_case(b"PXAT"))
            && expire == ExpireOpt::None
            && has_next
        {
            expire = ExpireOpt::At(parse_expire(ctx, a, args.get(i + 1), "set")?);
            i += 1;
        } else {
            return Err(ERR_SYNTAX);
        }
        i += 1;
    }
    let key = args.get(1);
    let db = ctx.client.db;
    let now = ctx.now_ms;
    let (mut shard, slot) = ctx.shard(key);
    // Taken under the lock: later writes to a key get larger versions.
    let version = ctx.version();
    if want_get {
        let hit = shard.contains(db, slot, key, now);
        count_read(&mut shard, hit, db, key);
    }
    // Plain SET (no NX/XX/GET) needs nothing from the old value: skip the lookup.
    let conditional = nx || xx || want_get;
    let existing = if conditional {
        shard.peek(db, slot, key, now)
    } else {
        None
    };
    let old_value = match (want_get, existing) {
        (true, Some(e)) => Some(string_of(e)?.to_vec()),
        _ => None,
    };
    let exists = existing.is_some();
    if (nx && exists) || (xx && !exists) {
        if want_get {
            match old_value {
                Some(v) => ctx.out.bulk(&v),
                None => ctx.out.null(),
            }
        } else {
            ctx.out.null();
        }
        return Ok(());
    }
    store_string(&mut shard, db, slot, key, args.get(2), expire, version, now);
    drop(shard);
    ctx.notify(notify::STRING, "set", key);
    if matches!(expire, ExpireOpt::At(_)) {
        ctx.notify(notify::GENERIC, "expire", key);
    }
    if want_get {
        match old_value {
            Some(v) => ctx.out.bulk(&v),
            None => ctx.out.null(),
        }
    } else {
        ctx.out.ok();
    }
    Ok(())
}

fn setnx(ctx: &mut Ctx<'_>, args: &Args<'_>) -> CmdResult {
    let (db, now) = (ctx.client.db, ctx.now_ms);
    let (mut shard, slot) = ctx.shard(args.get(1));
    // Taken under the lock: later writes to a key get larger versions.
    let version = ctx.version();
    if shard.contains(db, slot, args.get(1), now) {
        ctx.out.int(0);
    } else {
        store_string(
            &mut shard,
            db,
            slot,
            args.get(1),
            args.get(2),
            ExpireOpt::None,
            version,
            now,
        );
        drop(shard);
        ctx.notify(notify::STRING, "set", args.get(1));
        ctx.out.int(1);
    }
    Ok(())
}

fn setex_common(ctx: &mut Ctx<'_>, args: &Args<'_>, unit: &[u8], name: &str) -> CmdResult {
    let at = parse_expire(ctx, unit, args.get(2), name)?;
    let (db, now) = (ctx.client.db, ctx.now_ms);
    let (mut shard, slot) = ctx.shard(args.get(1));
    // Taken under the lock: later writes to a key get larger versions.
    let version = ctx.version();
    store_string(
        &mut shard,
        db,
        slot,
        args.get(1),
        args.get(3),
        ExpireOpt::At(at),
        version,
        now,
    );
    drop(shard);
    ctx.notify(notify::STRING, "set", args.get(1));
    ctx.notify(notify::GENERIC, "expire", args.get(1));
    ctx.out.ok();
    Ok(())
}

fn setex(ctx: &mut Ctx<'_>, args: &Args<'_>) -> CmdResult {
    setex_common(ctx, args, b"EX", "setex")
}

fn psetex(ctx: &mut Ctx<'_>, args: &Args<'_>) -> CmdResult {
    setex_common(ctx, args, b"PX", "psetex")
}

fn getset(ctx: &mut Ctx<'_>, args: &Args<'_>) -> CmdResult {
    let (db, now) = (ctx.client.db, ctx.now_ms);
    let (mut shard, slot) = ctx.shard(args.get(1));
    // Taken under the lock: later writes to a key get larger versions.
    let version = ctx.version();
    let old = match shard.peek(db, slot, args.get(1), now) {
        Some(e) => Some(string_of(e)?.to_vec()),
        None => None,
    };
    count_read(&mut shard, old.is_some(), db, args.get(1));
    store_string(
        &mut shard,
        db,
        slot,
        args.get(1),
        args.get(2),
        ExpireOpt::None,
        version,
        now,
    );
    drop(shard);
    ctx.notify(notify::STRING, "set", args.get(1));
    match old {
        Some(v) => ctx.out.bulk(&v),
        None => ctx.out.null(),
    }
    Ok(())
}

fn getdel(ctx: &mut Ctx<'_>, args: &Args<'_>) -> CmdResult {
    let (db, now) = (ctx.client.db, ctx.now_ms);
    let (mut shard, slot) = ctx.shard(args.get(1));
    let Some(e) = shard.lookup_read(db, slot, args.get(1), now) else {
        ctx.out.null();
        return Ok(());
    };
    let v = string_of(&e)?.to_vec();
    drop(e);
    shard.remove(db, slot, args.get(1));
    drop(shard);
    ctx.notify(notify::GENERIC, "del", args.get(1));
    ctx.out.bulk(&v);
    Ok(())
}

fn getex(ctx: &mut Ctx<'_>, args: &Args<'_>) -> CmdResult {
    let mut opt = ExpireOpt::None;
    // Redis checks the syntax first, then the key, and only then the expire value.
    let mut timed: Option<(&[u8], &[u8])> = None;
    let mut i = 2;
    while i < args.len() {
        let a = args.get(i);
        let has_next = i + 1 < args.len();
        if (a.eq_ignore_ascii_case(b"EX")
            || a.eq_ignore_ascii_case(b"PX")
            || a.eq_ignore_ascii_case(b"EXAT")
            || a.eq_ignore_ascii_case(b"PXAT"))
            && opt == ExpireOpt::None
            && has_next
        {
            timed = Some((a, args.get(i + 1)));
            opt = ExpireOpt::At(0);
            i += 2;
        } else if a.eq_ignore_ascii_case(b"PERSIST") && opt == ExpireOpt::None {
            opt = ExpireOpt::Persist;
            i += 1;
        } else {
            return Err(ERR_SYNTAX);
        }
    }
    let (db, now) = (ctx.client.db, ctx.now_ms);
    if !ctx
        .shard(args.get(1))
        .0
        .contains(db, key_slot_of(args.get(1)), args.get(1), now)
    {
        ctx.notify(notify::KEY_MISS, "keymiss", args.get(1));
        ctx.out.null();
        return Ok(());
    }
    if let Some((unit, value)) = timed {
        opt = ExpireOpt::At(parse_expire(ctx, unit, value, "getex")?);
    }
    let (mut shard, slot) = ctx.shard(args.get(1));
    // Taken under the lock: later writes to a key get larger versions.
    let version = if opt == ExpireOpt::None {
        0
    } else {
        ctx.version()
    };
    let Some(mut e) = shard.lookup_read(db, slot, args.get(1), now) else {
        ctx.out.null();
        return Ok(());
    };
    let v = string_of(&e)?.to_vec();
    let event = match opt {
        ExpireOpt::At(t) if t <= now => {
            // A deadline in the past deletes the key, as Redis does.
            drop(e);
            shard.remove(db, slot, args.get(1));
            Some("del")
        }
        ExpireOpt::At(t) => {
            let mut ops = e.ops();
            ops.expire(Some(t));
            e.note(ops);
            e.set_expire_ms(Some(t));
            e.set_version(version);
            Some("expire")
        }
        ExpireOpt::Persist if e.expire_ms().is_some() => {
            let mut ops = e.ops();
            ops.expire(None);
            e.note(ops);
            e.set_expire_ms(None);
            e.set_version(version);
            Some("persist")
        }
        _ => None,
    };
    if let Some(event) = event {
        ctx.notify(notify::GENERIC, event, args.get(1));
    }
    ctx.out.bulk(&v);
    Ok(())
}

fn mget(ctx: &mut Ctx<'_>, args: &Args<'_>) -> CmdResult {
    let keys = args.tail(1);
    let mut locked = ctx.lock_keys(keys.iter());
    let (db, now) = (ctx.client.db, ctx.now_ms);
    ctx.out.array(keys.len());
    for key in keys.iter() {
        let (shard, slot) = locked.shard(key);
        match shard.lookup_read(db, slot, key, now) {
            Some(e) => match e.string() {
                Some(v) => ctx.out.bulk(v),
                None => ctx.out.null(),
            },
            None => ctx.out.null(),
        }
    }
    Ok(())
}

fn mset_common(ctx: &mut Ctx<'_>, args: &Args<'_>, nx: bool) -> CmdResult {
    if args.len().is_multiple_of(2) {
        let name = if nx { "msetnx" } else { "mset" };
        return Err(err!("wrong number of arguments for '{name}' command"));
    }
    let (db, now) = (ctx.client.db, ctx.now_ms);
    let tail = args.tail(1);
    let keys = || tail.iter().step_by(2);
    // The entries are built (allocated and filled) before the shards are locked and the replaced
    // ones freed after: the locks cover only the table updates, which matters when several
    // workers run multi-key writes over overlapping shards.
    let entries: Vec<Entry> = (0..(args.len() - 1) / 2)
        .map(|pair| Entry::new_string(args.get(1 + 2 * pair), args.get(2 + 2 * pair), None, 0))
        .collect();
    let mut locked = ctx.lock_keys(keys());
    // Taken under the lock: later writes to a key get larger versions.
    let version = ctx.version();
    if nx {
        for key in keys() {
            let (shard, slot) = locked.shard(key);
            if shard.contains(db, slot, key, now) {
                drop(locked);
                ctx.out.int(0);
                return Ok(());
            }
        }
    }
    let mut replaced = Vec::with_capacity(entries.len());
    for mut e in entries {
        e.set_version(version);
        let (shard, slot) = locked.shard(e.key());
        replaced.push(shard.insert(db, slot, e, now));
    }
    drop(locked);
    drop(replaced);
    for key in keys() {
        ctx.notify(notify::STRING, "set", key);
    }
    if nx {
        ctx.out.int(1);
    } else {
        ctx.out.ok();
    }
    Ok(())
}

fn mset(ctx: &mut Ctx<'_>, args: &Args<'_>) -> CmdResult {
    mset_common(ctx, args, false)
}

fn msetnx(ctx: &mut Ctx<'_>, args: &Args<'_>) -> CmdResult {
    mset_common(ctx, args, true)
}

fn max_string_bytes(ctx: &Ctx<'_>) -> usize {
    ctx.srv
        .hot
        .proto_max_bulk_bytes
        .load(std::sync::atomic::Ordering::Relaxed) as usize
}

const ERR_TOO_BIG: ReplyError =
    ReplyError::err_static("string exceeds maximum allowed size (proto-max-bulk-len)");

fn append(ctx: &mut Ctx<'_>, args: &Args<'_>) -> CmdResult {
    let max = max_string_bytes(ctx);
    let (db, now) = (ctx.client.db, ctx.now_ms);
    let (mut shard, slot) = ctx.shard(args.get(1));
    // Taken under the lock: later writes to a key get larger versions.
    let version = ctx.version();
    let add = args.get(2);
    let appended = match shard.lookup(db, slot, args.get(1), now, true) {
        Some(mut e) => {
            let cur = string_of(&e)?.len();
            if cur + add.len() > max {
                return Err(ERR_TOO_BIG);
            }
            let mut ops = e.ops();
            let v = e.make_raw_string().ok_or(ReplyError::WrongType)?;
            v.extend_from_slice(add);
            let len = v.len();
            ops.append(add);
            e.note(ops);
            e.set_version(version);
            Some(len)
        }
        None => None,
    };
    let len = match appended {
        Some(len) => len,
        None => {
            store_string(
                &mut shard,
                db,
                slot,
                args.get(1),
                add,
                ExpireOpt::None,
                version,
                now,
            );
            add.len()
        }
    };
    drop(shard);
    ctx.notify(notify::STRING, "append", args.get(1));
    ctx.out.int(len as i64);
    Ok(())
}

fn strlen(ctx: &mut Ctx<'_>, args: &Args<'_>) -> CmdResult {
    let (mut shard, slot) = ctx.shard(args.get(1));
    let n = match shard.lookup_read(ctx.client.db, slot, args.get(1), ctx.now_ms) {
        Some(e) => string_of(&e)?.len(),
        None => 0,
    };
    drop(shard);
    ctx.out.int(n as i64);
    Ok(())
}

fn getrange(ctx: &mut Ctx<'_>, args: &Args<'_>) -> CmdResult {
    let start = args.i64(2)?;
    let end = args.i64(3)?;
    let (mut shard, slot) = ctx.shard(args.get(1));
    let Some(e) = shard.lookup_read(ctx.client.db, slot, args.get(1), ctx.now_ms) else {
        ctx.out.bulk(b"");
        return Ok(());
    };
    let s = string_of(&e)?;
    let len = s.len() as i64;
    if start < 0 && end < 0 && start > end {
        ctx.out.bulk(b"");
        return Ok(());
    }
    let mut start = if start < 0 { len + start } else { start };
    let mut end = if end < 0 { len + end } else { end };
    start = start.max(0);
    end = end.max(0);
    if end >= len {
        end = len - 1;
    }
    if start > end || len == 0 {
        ctx.out.bulk(b"");
    } else {
        ctx.out.bulk(&s[start as usize..=end as usize]);
    }
    Ok(())
}

fn setrange(ctx: &mut Ctx<'_>, args: &Args<'_>) -> CmdResult {
    let offset = args.i64(2)?;
    if offset < 0 {
        return Err(ReplyError::err_static("offset is out of range"));
    }
    let offset = offset as usize;
    let value = args.get(3);
    let max = max_string_bytes(ctx);
    let (db, now) = (ctx.client.db, ctx.now_ms);
    let (mut shard, slot) = ctx.shard(args.get(1));
    // Taken under the lock: later writes to a key get larger versions.
    let version = ctx.version();
    let updated = match shard.lookup(db, slot, args.get(1), now, true) {
        Some(mut e) => Some({
            let cur = string_of(&e)?.len();
            if value.is_empty() {
                cur
            } else {
                if offset + value.len() > max {
                    return Err(ERR_TOO_BIG);
                }
                let mut ops = e.ops();
                let v = e.make_raw_string().ok_or(ReplyError::WrongType)?;
                if v.len() < offset + value.len() {
                    v.resize(offset + value.len(), 0);
                }
                v[offset..offset + value.len()].copy_from_slice(value);
                let len = v.len();
                ops.setrange(offset, value);
                e.note(ops);
                e.set_version(version);
                len
            }
        }),
        None => None,
    };
    let len = match updated {
        Some(len) => len,
        None => {
            if value.is_empty() {
                0
            } else {
                if offset + value.len() > max {
                    return Err(ERR_TOO_BIG);
                }
                let mut v = vec![0u8; offset + value.len()];
                v[offset..].copy_from_slice(value);
                store_string(
                    &mut shard,
                    db,
                    slot,
                    args.get(1),
                    &v,
                    ExpireOpt::None,
                    version,
                    now,
                );
                v.len()
            }
        }
    };
    drop(shard);
    if !value.is_empty() {
        ctx.notify(notify::STRING, "setrange", args.get(1));
    }
    ctx.out.int(len as i64);
    Ok(())
}

/// Adds `by` to the integer at `key` (created as 0), keeping its TTL. Returns the new value.
fn incr_by(ctx: &mut Ctx<'_>, key: &[u8], by: i64) -> Result<i64, ReplyError> {
    let (db, now) = (ctx.client.db, ctx.now_ms);
    let (mut shard, slot) = ctx.shard(key);
    // Taken under the lock: later writes to a key get larger versions.
    let version = ctx.version();
    let mut tmp = [0u8; 20];
    // Active-active: the merge state needs the value this increment is made to.
    shard.keep_prior(db, slot, key);
    let updated = match shard.lookup(db, slot, key, now, true) {
        Some(mut e) => {
            let cur = crate::args::parse_i64(string_of(&e)?).ok_or(ERR_NOT_INTEGER)?;
            let new = cur.checked_add(by).ok_or(ERR_OVERFLOW)?;
            let s = shoal_resp::fmt_i64(new, &mut tmp);
            e.set_payload(shoal_keyspace::Payload::Inline(s));
            e.set_version(version);
            Some(new)
        }
        None => None,
    };
    let new = match updated {
        Some(new) => new,
        None => {
            let s = shoal_resp::fmt_i64(by, &mut tmp);
            store_string(&mut shard, db, slot, key, s, ExpireOpt::None, version, now);
            by
        }
    };
    // Active-active members merge increments as counters.
    shard.note_count(db, key, None, shoal_keyspace::merge::By::Int(by));
    drop(shard);
    ctx.notify(notify::STRING, "incrby", key);
    Ok(new)
}

fn incr(ctx: &mut Ctx<'_>, args: &Args<'_>) -> CmdResult {
    let v = incr_by(ctx, args.get(1), 1)?;
    ctx.out.int(v);
    Ok(())
}

fn decr(ctx: &mut Ctx<'_>, args: &Args<'_>) -> CmdResult {
    let v = incr_by(ctx, args.get(1), -1)?;
    ctx.out.int(v);
    Ok(())
}

fn incrby(ctx: &mut Ctx<'_>, args: &Args<'_>) -> CmdResult {
    let by = args.i64(2)?;
    let v = incr_by(ctx, args.get(1), by)?;
    ctx.out.int(v);
    Ok(())
}

fn decrby(ctx: &mut Ctx<'_>, args: &Args<'_>) -> CmdResult {
    let by = args.i64(2)?;
    if by == i64::MIN {
        return Err(ReplyError::err_static("decrement would overflow"));
    }
    let v = incr_by(ctx, args.get(1), -by)?;
    ctx.out.int(v);
    Ok(())
}

/// Adds an increment to a stored float as Redis does, in x87 long double (see `longdouble.rs`),
/// and returns the text it stores; `None` when the sum is infinite.
pub fn add_float(cur: LongDouble, by: LongDouble) -> Option<String> {
    cur.checked_add(by).map(LongDouble::to_human)
}

/// A finite long double from a stored value or an argument (`string2ld`); infinity counts only
/// where the caller says (an increment of `inf` makes an infinite sum, refused after the sum).
pub fn parse_long_double(text: &[u8]) -> Option<Option<LongDouble>> {
    match LongDouble::parse(text)? {
        Parsed::Finite(v) => Some(Some(v)),
        Parsed::Infinite { .. } => Some(None),
    }
}

fn incrbyfloat(ctx: &mut Ctx<'_>, args: &Args<'_>) -> CmdResult {
    let key = args.get(1);
    let (db, now) = (ctx.client.db, ctx.now_ms);
    let (mut shard, slot) = ctx.shard(key);
    // Taken under the lock: later writes to a key get larger versions.
    let version = ctx.version();
    // Redis's order: the key's type, its value, then the increment.
    let cur = match shard.peek(db, slot, key, now) {
        Some(e) => parse_long_double(string_of(e)?).ok_or(ERR_NOT_FLOAT)?,
        None => Some(LongDouble::ZERO),
    };
    let by = parse_long_double(args.get(2)).ok_or(ERR_NOT_FLOAT)?;
    let Some(s) = cur.zip(by).and_then(|(cur, by)| add_float(cur, by)) else {
        return Err(ReplyError::err_static(
            "increment would produce NaN or Infinity",
        ));
    };
    // Active-active: the merge state needs the value this increment is made to.
    shard.keep_prior(db, slot, key);
    store_string(
        &mut shard,
        db,
        slot,
        key,
        s.as_bytes(),
        ExpireOpt::KeepTtl,
        version,
        now,
    );
    if let Some(by) = std::str::from_utf8(args.get(2))
        .ok()
        .and_then(|t| t.trim().parse::<f64>().ok())
    {
        shard.note_count(db, key, None, shoal_keyspace::merge::By::Float(by));
    }
    drop(shard);
    ctx.notify(notify::STRING, "incrbyfloat", key);
    ctx.out.bulk(s.as_bytes());
    Ok(())
}

fn lcs(ctx: &mut Ctx<'_>, args: &Args<'_>) -> CmdResult {
    let mut get_len = false;
    let mut get_idx = false;
    let mut with_match_len = false;
    let mut min_match_len: i64 = 0;
    let mut i = 3;
    while i < args.len() {
        if args.is(i, "IDX") {
            get_idx = true;
        } else if args.is(i, "LEN") {
            get_len = true;
        } else if args.is(i, "WITHMATCHLEN") {
            with_match_len = true;
        } else if args.is(i, "MINMATCHLEN") && i + 1 < args.len() {
            min_match_len = args.i64(i + 1)?.max(0);
            i += 1;
        } else {
            return Err(ERR_SYNTAX);
        }
        i += 1;
    }
    if get_len && get_idx {
        return Err(ReplyError::err_static(
            "If you want both the length and indexes, please just use IDX.",
        ));
    }
    let (db, now) = (ctx.client.db, ctx.now_ms);
    let mut locked = ctx.lock_keys([args.get(1), args.get(2)].into_iter());
    let mut fetch = |key: &[u8]| -> Result<Vec<u8>, ReplyError> {
        let (shard, slot) = locked.shard(key);
        let hit = shard.contains(db, slot, key, now);
        count_read(shard, hit, db, key);
        match shard.peek(db, slot, key, now) {
            Some(e) => e.string().map(|s| s.to_vec()).ok_or_else(|| {
                ReplyError::err_static("The specified keys must contain string values")
            }),
            None => Ok(Vec::new()),
        }
    };
    let a = fetch(args.get(1))?;
    let b = fetch(args.get(2))?;
    drop(locked);
    let (alen, blen) = (a.len(), b.len());
    let cells = (alen + 1).saturating_mul(blen + 1);
    if cells.saturating_mul(4) > max_string_bytes(ctx) {
        return Err(ReplyError::err_static(
            "Insufficient memory, transient memory for LCS exceeds proto-max-bulk-len",
        ));
    }
    let w = blen + 1;
    let mut t = vec![0u32; cells];
    for i in 1..=alen {
        for j in 1..=blen {
            t[i * w + j] = if a[i - 1] == b[j - 1] {
                t[(i - 1) * w + j - 1] + 1
            } else {
                t[(i - 1) * w + j].max(t[i * w + j - 1])
            };
        }
    }
    let mut idx = t[alen * w + blen] as usize;
    let total = idx;
    let mut result = vec![0u8; idx];
    // Walk back from the end as Redis does, collecting ranges (Redis emits them in this order).
    let mut matches: Vec<[i64; 5]> = Vec::new();
    let (mut arange_start, mut arange_end, mut brange_start, mut brange_end) = (alen, 0, 0, 0);
    let (mut i, mut j) = (alen, blen);
    while i > 0 && j > 0 {
        let mut emit = false;
        if a[i - 1] == b[j - 1] {
            result[idx - 1] = a[i - 1];
            if arange_start == alen {
                arange_start = i - 1;
                arange_end = i - 1;
                brange_start = j - 1;
                brange_end = j - 1;
            } else if arange_start == i && brange_start == j {
                arange_start -= 1;
                brange_start -= 1;
            } else {
                emit = true;
            }
            if arange_start == 0 || brange_start == 0 {
                emit = true;
            }
            idx -= 1;
            i -= 1;
            j -= 1;
        } else {
            if t[(i - 1) * w + j] > t[i * w + j - 1] {
                i -= 1;
            } else {
                j -= 1;
            }
            if arange_start != alen {
                emit = true;
            }
        }
        if emit {
            let match_len = (arange_end - arange_start + 1) as i64;
            if min_match_len == 0 || match_len >= min_match_len {
                matches.push([
                    arange_start as i64,
                    arange_end as i64,
                    brange_start as i64,
                    brange_end as i64,
                    match_len,
                ]);
            }
            arange_start = alen;
        }
    }
    let o = &mut ctx.out;
    if get_idx {
        o.map(2);
        o.bulk(b"matches");
        o.array(matches.len());
        for m in &matches {
            o.array(if with_match_len { 3 } else { 2 });
            o.array(2);
            o.int(m[0]);
            o.int(m[1]);
            o.array(2);
            o.int(m[2]);
            o.int(m[3]);
            if with_match_len {
                o.int(m[4]);
            }
        }
        o.bulk(b"len");
        o.int(total as i64);
    } else if get_len {
        o.int(total as i64);
    } else {
        o.bulk(&result);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use crate::tests::run;

    #[test]
    fn set_options_and_errors() {
        let r = run(&[
            &["SET", "k", "v", "NX"],
            &["SET", "k", "w", "NX"],
            &["SET", "k", "w", "XX", "GET"],
            &["SET", "k", "v", "EX", "0"],
            &["SET", "k", "v", "EX", "x"],
            &["SET", "k", "v", "NX", "XX"],
            &["GET", "k"],
            &["SET", "k", "v", "EX", "10", "PX", "5"],
        ]);
        assert_eq!(r[0], "+OK\r\n");
        assert_eq!(r[1], "$-1\r\n");
        assert_eq!(r[2], "$1\r\nv\r\n");
        assert_eq!(r[3], "-ERR invalid expire time in 'set' command\r\n");
        assert_eq!(r[4], "-ERR value is not an integer or out of range\r\n");
        assert_eq!(r[5], "-ERR syntax error\r\n");
        assert_eq!(r[6], "$1\r\nw\r\n");
        assert_eq!(r[7], "-ERR syntax error\r\n");
    }

    #[test]
    fn counters_ranges_and_lcs() {
        let r = run(&[
            &["INCR", "n"],
            &["INCRBY", "n", "9223372036854775806"],
            &["INCR", "n"],
            &["SET", "s", "hello"],
            &["GETRANGE", "s", "1", "-2"],
            &["SETRANGE", "s", "7", "x"],
            &["GET", "s"],
            &["APPEND", "s", "yz"],
            &["MSET", "a", "ohmytext", "b", "mynewtext"],
            &["LCS", "a", "b"],
            &["LCS", "a", "b", "IDX", "MINMATCHLEN", "4", "WITHMATCHLEN"],
            &["INCRBYFLOAT", "f", "10.5"],
            &["INCR", "s"],
        ]);
        assert_eq!(r[0], ":1\r\n");
        assert_eq!(r[1], ":9223372036854775807\r\n");
        assert_eq!(r[2], "-ERR increment or decrement would overflow\r\n");
        assert_eq!(r[4], "$3\r\nell\r\n");
        assert_eq!(r[5], ":8\r\n");
        assert_eq!(r[6], "$8\r\nhello\0\0x\r\n");
        assert_eq!(r[7], ":10\r\n");
        assert_eq!(r[9], "$6\r\nmytext\r\n");
        assert_eq!(
            r[10],
            "*4\r\n$7\r\nmatches\r\n*1\r\n*3\r\n*2\r\n:4\r\n:7\r\n*2\r\n:5\r\n:8\r\n:4\r\n$3\r\nlen\r\n:6\r\n"
        );
        assert_eq!(r[11], "$4\r\n10.5\r\n");
        assert_eq!(r[12], "-ERR value is not an integer or out of range\r\n");
    }
}
