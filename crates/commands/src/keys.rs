//! Keyspace commands (generic group): DEL, UNLINK, EXISTS, TYPE, TOUCH, the EXPIRE and TTL families,
//! PERSIST, RENAME/RENAMENX, COPY, MOVE, SWAPDB, KEYS, SCAN, RANDOMKEY, OBJECT, DUMP and RESTORE.
//!
//! Also home to the DUMP payload format ([`dump_value`], [`restore_value`]), which the replication
//! snapshot will reuse. Glob matching lives in `glob.rs`; background freeing is the node's `LazyFree`.
//!
//! SCAN's cursor is the next slot to visit. Keys live in per-slot tables, so a call that visits whole
//! slots in ascending order returns every key that exists for the whole scan exactly once, with no
//! reverse-binary cursor arithmetic and no dependence on table resizes (which Redis's cursor needs to
//! survive rehashing).

use crate::err;
use crate::error::ReplyError;
use std::sync::atomic::Ordering::Relaxed;

use shoal_keyspace::codec::{self, crc64};
use shoal_keyspace::evict::{self, LfuParams};
use shoal_keyspace::{
    EncodingLimits, Entry, EntryMut, Object, Payload, Policy, Rng, SLOTS, Shard, ValueRef,
};

use crate::args::{ERR_DB_INDEX, ERR_NO_SUCH_KEY, ERR_NOT_INTEGER, ERR_SYNTAX, parse_i64};
use crate::glob::glob_match;
use crate::notify;
use crate::table::{FindKeys, Group, KeySpec, Spec, flag::*, key::*};
use crate::{Args, CmdResult, Ctx};

const GENERIC: Group = Group::Generic;

pub static COMMANDS: &[Spec] = &[
    Spec {
        name: "copy",
        arity: -3,
        flags: WRITE | DENYOOM,
        keys: &[KeySpec::at(1, RO | ACCESS), KeySpec::at(2, OW | UPDATE)],
        group: GENERIC,
        since: "6.2.0",
        summary: "Copies the value of a key to a new key.",
        handler: Some(copy),
        ..Spec::DEFAULT
    },
    Spec {
        name: "del",
        arity: -2,
        flags: WRITE,
        keys: &[KeySpec::at(1, RM | DELETE).find(FindKeys::Range {
            last_key: -1,
            step: 1,
            limit: 0,
        })],
        group: GENERIC,
        since: "1.0.0",
        summary: "Deletes one or more keys.",
        tips: &["request_policy:multi_shard", "response_policy:agg_sum"],
        handler: Some(del),
        ..Spec::DEFAULT
    },
    Spec {
        name: "migrate",
        arity: -6,
        flags: WRITE | MOVABLEKEYS | EMPTY_KEY_NONE,
        keys: &[
            KeySpec::at(3, RW | ACCESS | DELETE),
            KeySpec::after("KEYS", -2, RW | ACCESS | DELETE | INCOMPLETE).find(FindKeys::Range {
                last_key: -1,
                step: 1,
                limit: 0,
            }),
        ],
        group: GENERIC,
        since: "2.6.0",
        summary: "Atomically transfers a key from one Redis instance to another.",
        tips: &["nondeterministic_output"],
        handler: Some(migrate),
        type_categories: Some(&["@keyspace", "@dangerous"]),
        ..Spec::DEFAULT
    },
    Spec {
        name: "dump",
        arity: 2,
        flags: READONLY,
        keys: &[KeySpec::at(1, RO | ACCESS)],
        group: GENERIC,
        since: "2.6.0",
        summary: "Returns a serialized representation of the value stored at a key.",
        tips: &["nondeterministic_output"],
        handler: Some(dump),
        ..Spec::DEFAULT
    },
    Spec {
        name: "exists",
        arity: -2,
        flags: READONLY | FAST,
        keys: &[KeySpec::at(1, RO).find(FindKeys::Range {
            last_key: -1,
            step: 1,
            limit: 0,
        })],
        group: GENERIC,
        since: "1.0.0",
        summary: "Determines whether one or more keys exist.",
        tips: &["request_policy:multi_shard", "response_policy:agg_sum"],
        handler: Some(exists),
        ..Spec::DEFAULT
    },
    Spec {
        name: "expire",
        arity: -3,
        flags: WRITE | FAST,
        keys: &[KeySpec::at(1, RW | UPDATE)],
        group: GENERIC,
        since: "1.0.0",
        summary: "Sets the expiration time of a key in seconds.",
        handler: Some(expire),
        ..Spec::DEFAULT
    },
    Spec {
        name: "expireat",
        arity: -3,
        flags: WRITE | FAST,
        keys: &[KeySpec::at(1, RW | UPDATE)],
        group: GENERIC,
        since: "1.2.0",
        summary: "Sets the expiration time of a key to a Unix timestamp.",
        handler: Some(expireat),
        ..Spec::DEFAULT
    },
    Spec {
        name: "expiretime",
        arity: 2,
        flags: READONLY | FAST,
        keys: &[KeySpec::at(1, RO | ACCESS)],
        group: GENERIC,
        since: "7.0.0",
        summary: "Returns the expiration time of a key as a Unix timestamp.",
        handler: Some(expiretime),
        ..Spec::DEFAULT
    },
    Spec {
        name: "keys",
        arity: 2,
        flags: READONLY,
        group: GENERIC,
        since: "1.0.0",
        summary: "Returns all key names that match a pattern.",
        tips: &["request_policy:all_shards", "nondeterministic_output_order"],
        handler: Some(keys),
        type_categories: Some(&["@keyspace", "@dangerous"]),
        ..Spec::DEFAULT
    },
    Spec {
        name: "move",
        arity: 3,
        flags: WRITE | FAST,
        keys: &[KeySpec::at(1, RW | ACCESS | UPDATE)],
        group: GENERIC,
        since: "1.0.0",
        summary: "Moves a key to another database.",
        handler: Some(move_key),
        ..Spec::DEFAULT
    },
    Spec {
        name: "object",
        arity: -2,
        flags: 0,
        group: GENERIC,
        since: "2.2.3",
        summary: "A container for object introspection commands.",
        subcommands: OBJECT,
        type_categories: Some(&[]),
        ..Spec::DEFAULT
    },
    Spec {
        name: "persist",
        arity: 2,
        flags: WRITE | FAST,
        keys: &[KeySpec::at(1, RW | UPDATE)],
        group: GENERIC,
        since: "2.2.0",
        summary: "Removes the expiration time of a key.",
        handler: Some(persist),
        ..Spec::DEFAULT
    },
    Spec {
        name: "pexpire",
        arity: -3,
        flags: WRITE | FAST,
        keys: &[KeySpec::at(1, RW | UPDATE)],
        group: GENERIC,
        since: "2.6.0",
        summary: "Sets the expiration time of a key in milliseconds.",
        handler: Some(pexpire),
        ..Spec::DEFAULT
    },
    Spec {
        name: "pexpireat",
        arity: -3,
        flags: WRITE | FAST,
        keys: &[KeySpec::at(1, RW | UPDATE)],
        group: GENERIC,
        since: "2.6.0",
        summary: "Sets the expiration time of a key to a Unix milliseconds timestamp.",
        handler: Some(pexpireat),
        ..Spec::DEFAULT
    },
    Spec {
        name: "pexpiretime",
        arity: 2,
        flags: READONLY | FAST,
        keys: &[KeySpec::at(1, RO | ACCESS)],
        group: GENERIC,
        since: "7.0.0",
        summary: "Returns the expiration time of a key as a Unix milliseconds timestamp.",
        handler: Some(pexpiretime),
        ..Spec::DEFAULT
    },
    Spec {
        name: "pttl",
        arity: 2,
        flags: READONLY | FAST,
        keys: &[KeySpec::at(1, RO | ACCESS)],
        group: GENERIC,
        since: "2.6.0",
        summary: "Returns the expiration time in milliseconds of a key.",
        tips: &["nondeterministic_output"],
        handler: Some(pttl),
        ..Spec::DEFAULT
    },
    Spec {
        name: "randomkey",
        arity: 1,
        flags: READONLY,
        group: GENERIC,
        since: "1.0.0",
        summary: "Returns a random key name from the database.",
        tips: &["request_policy:all_shards", "nondeterministic_output"],
        handler: Some(randomkey),
        ..Spec::DEFAULT
    },
    Spec {
        name: "rename",
        arity: 3,
        flags: WRITE,
        keys: &[
            KeySpec::at(1, RW | ACCESS | DELETE),
            KeySpec::at(2, OW | UPDATE),
        ],
        group: GENERIC,
        since: "1.0.0",
        summary: "Renames a key and overwrites the destination.",
        handler: Some(rename),
        ..Spec::DEFAULT
    },
    Spec {
        name: "renamenx",
        arity: 3,
        flags: WRITE | FAST,
        keys: &[
            KeySpec::at(1, RW | ACCESS | DELETE),
            KeySpec::at(2, OW | INSERT),
        ],
        group: GENERIC,
        since: "1.0.0",
        summary: "Renames a key only when the target key name doesn't exist.",
        handler: Some(renamenx),
        ..Spec::DEFAULT
    },
    Spec {
        name: "restore",
        arity: -4,
        flags: WRITE | DENYOOM,
        keys: &[KeySpec::at(1, OW | UPDATE)],
        group: GENERIC,
        since: "2.6.0",
        summary: "Creates a key from the serialized representation of a value.",
        handler: Some(restore),
        type_categories: Some(&["@keyspace", "@dangerous"]),
        ..Spec::DEFAULT
    },
    Spec {
        name: "restore-asking",
        arity: -4,
        flags: WRITE | DENYOOM | ASKING,
        keys: &[KeySpec::at(1, OW | UPDATE)],
        group: GENERIC,
        since: "3.0.0",
        summary: "An internal command for migrating keys in a cluster.",
        handler: Some(restore),
        type_categories: Some(&["@keyspace", "@dangerous"]),
        ..Spec::DEFAULT
    },
    Spec {
        name: "scan",
        arity: -2,
        flags: READONLY,
        group: GENERIC,
        since: "2.8.0",
        summary: "Iterates over the key names in the database.",
        tips: &["nondeterministic_output", "request_policy:special"],
        handler: Some(scan),
        ..Spec::DEFAULT
    },
    Spec {
        name: "swapdb",
        arity: 3,
        flags: WRITE | FAST,
        group: GENERIC,
        since: "4.0.0",
        summary: "Swaps two Redis databases.",
        handler: Some(swapdb),
        type_categories: Some(&["@keyspace", "@dangerous"]),
        ..Spec::DEFAULT
    },
    Spec {
        name: "touch",
        arity: -2,
        flags: READONLY | FAST,
        keys: &[KeySpec::at(1, RO).find(FindKeys::Range {
            last_key: -1,
            step: 1,
            limit: 0,
        })],
        group: GENERIC,
        since: "3.2.1",
        summary: "Returns the number of existing keys out of those specified after updating the time they were last accessed.",
        tips: &["request_policy:multi_shard", "response_policy:agg_sum"],
        handler: Some(touch),
        ..Spec::DEFAULT
    },
    Spec {
        name: "ttl",
        arity: 2,
        flags: READONLY | FAST,
        keys: &[KeySpec::at(1, RO | ACCESS)],
        group: GENERIC,
        since: "1.0.0",
        summary: "Returns the expiration time in seconds of a key.",
        tips: &["nondeterministic_output"],
        handler: Some(ttl),
        ..Spec::DEFAULT
    },
    Spec {
        name: "type",
        arity: 2,
        flags: READONLY | FAST,
        keys: &[KeySpec::at(1, RO)],
        group: GENERIC,
        since: "1.0.0",
        summary: "Determines the type of value stored at a key.",
        handler: Some(type_of),
        ..Spec::DEFAULT
    },
    Spec {
        name: "unlink",
        arity: -2,
        flags: WRITE | FAST,
        keys: &[KeySpec::at(1, RM | DELETE).find(FindKeys::Range {
            last_key: -1,
            step: 1,
            limit: 0,
        })],
        group: GENERIC,
        since: "4.0.0",
        summary: "Asynchronously deletes one or more keys.",
        tips: &["request_policy:multi_shard", "response_policy:agg_sum"],
        handler: Some(unlink),
        ..Spec::DEFAULT
    },
];

static OBJECT: &[Spec] = &[
    Spec {
        name: "object|encoding",
        arity: 3,
        flags: READONLY,
        keys: &[KeySpec::at(2, RO)],
        group: GENERIC,
        since: "2.2.3",
        summary: "Returns the internal encoding of a Redis object.",
        tips: &["nondeterministic_output"],
        handler: Some(object_encoding),
        ..Spec::DEFAULT
    },
    Spec {
        name: "object|freq",
        arity: 3,
        flags: READONLY,
        keys: &[KeySpec::at(2, RO)],
        group: GENERIC,
        since: "4.0.0",
        summary: "Returns the logarithmic access frequency counter of a Redis object.",
        tips: &["nondeterministic_output"],
        handler: Some(object_freq),
        ..Spec::DEFAULT
    },
    Spec {
        name: "object|help",
        arity: 2,
        flags: LOADING | STALE,
        group: GENERIC,
        since: "6.2.0",
        summary: "Returns helpful text about the different subcommands.",
        handler: Some(object_help),
        ..Spec::DEFAULT
    },
    Spec {
        name: "object|idletime",
        arity: 3,
        flags: READONLY,
        keys: &[KeySpec::at(2, RO)],
        group: GENERIC,
        since: "2.2.3",
        summary: "Returns the time since the last access to a Redis object.",
        tips: &["nondeterministic_output"],
        handler: Some(object_idletime),
        ..Spec::DEFAULT
    },
    Spec {
        name: "object|refcount",
        arity: 3,
        flags: READONLY,
        keys: &[KeySpec::at(2, RO)],
        group: GENERIC,
        since: "2.2.3",
        summary: "Returns the reference count of a value of a key.",
        tips: &["nondeterministic_output"],
        handler: Some(object_refcount),
        ..Spec::DEFAULT
    },
];

const ERR_SAME_OBJECT: ReplyError =
    ReplyError::err_static("source and destination objects are the same");

// ---------------------------------------------------------------------------------------------
// Lookups shared by the handlers.

/// Looks a key up for a command that only inspects it (EXISTS, TYPE, TTL, OBJECT; Redis's
/// `LOOKUP_NOTOUCH`): counts a keyspace hit or miss and deletes the key if it expired, but records
/// no access for eviction, so inspecting a key does not change which key gets evicted. A miss
/// raises `keymiss` unless `quiet` (OBJECT: Redis's `LOOKUP_NONOTIFY`).
fn lookup_inspect<'s>(
    shard: &'s mut Shard,
    db: usize,
    slot: u16,
    key: &[u8],
    now_ms: u64,
    quiet: bool,
) -> Option<EntryMut<'s>> {
    if shard.contains(db, slot, key, now_ms) {
        shard.stats.keyspace_hits += 1;
    } else {
        shard.stats.keyspace_misses += 1;
        // An expired key is deleted (raising `expired`) before the miss is raised.
        drop(shard.lookup(db, slot, key, now_ms, false));
        if !quiet {
            shard.note(notify::KEY_MISS, "keymiss", db, key);
        }
        return None;
    }
    shard.lookup(db, slot, key, now_ms, false)
}

/// Raises `new` for a key written over a live one: Redis deletes the old key and adds the new one
/// (RENAME, COPY REPLACE, RESTORE REPLACE), where shoal replaces it in place (`Shard::insert`
/// raised `new` itself when there was no live key).
fn note_new_if_replaced(shard: &Shard, db: usize, key: &[u8], replaced: &Option<Entry>, now: u64) {
    if replaced.as_ref().is_some_and(|o| !o.is_expired(now)) {
        shard.note(notify::NEW, "new", db, key);
    }
}

/// Whether a live key exists, as a write command sees it: an expired key is deleted first and no
/// hit or miss is counted (Redis's `lookupKeyWrite`).
fn exists_for_write(shard: &mut Shard, db: usize, slot: u16, key: &[u8], now_ms: u64) -> bool {
    shard.lookup(db, slot, key, now_ms, false).is_some()
}

/// Gives a just-inserted key a chosen access field. `Shard::insert` resets it when eviction is
/// active; RENAME and MOVE keep the value's history, RESTORE applies IDLETIME/FREQ.
fn set_access(shard: &mut Shard, db: usize, slot: u16, key: &[u8], now_ms: u64, access: u32) {
    if let Some(mut e) = shard.lookup(db, slot, key, now_ms, false) {
        e.set_access(access);
    }
}

/// Parses an integer argument as Redis's `getIntFromObjectOrReply` (a C `int`). With `msg`, both
/// failures reply `ERR <msg>`.
fn parse_int32(arg: &[u8], msg: Option<&'static str>) -> Result<i64, ReplyError> {
    let err = |default: ReplyError| msg.map_or(default, ReplyError::err_static);
    let v = parse_i64(arg).ok_or_else(|| err(ERR_NOT_INTEGER))?;
    if v < i32::MIN as i64 || v > i32::MAX as i64 {
        return Err(err(ReplyError::err_static(
            "value is out of range, must be between -2147483648 and 2147483647",
        )));
    }
    Ok(v)
}

/// A database index argument, checked against the configured number of databases.
fn parse_db(ctx: &Ctx<'_>, arg: &[u8], msg: Option<&'static str>) -> Result<usize, ReplyError> {
    let db = parse_int32(arg, msg)?;
    if db < 0 || db as usize >= ctx.srv.ks.databases() {
        return Err(ERR_DB_INDEX);
    }
    Ok(db as usize)
}

/// The payload of an entry, copied (COPY).
fn payload_copy(e: &Entry) -> Payload<'_> {
    match e.value() {
        ValueRef::Str(s) => Payload::Inline(s),
        ValueRef::Obj(o) => Payload::Object(Box::new(o.clone())),
        // COPY reads its source: the request fetched it first (`tier.rs`).
        ValueRef::Cold(h) => unreachable!("COPY of cold value {h:?}"),
    }
}

/// The entry of `old` under another key name (RENAME). An out-of-block value is moved, not copied,
/// so renaming a large value costs no more than renaming a small one.
fn rekey(mut old: Entry, key: &[u8], version: u64) -> Entry {
    let (expire_ms, ext, access) = (old.expire_ms(), old.ext_version(), old.access());
    let stale = old.stale_ms();
    if let Some(obj) = old.object_mut() {
        let obj = std::mem::replace(obj, Object::RawString(Vec::new()));
        return Entry::with_stale(
            key,
            Payload::Object(Box::new(obj)),
            expire_ms,
            ext,
            stale,
            version,
            access,
        );
    }
    Entry::with_stale(
        key,
        payload_copy(&old),
        expire_ms,
        ext,
        stale,
        version,
        access,
    )
}

// ---------------------------------------------------------------------------------------------
// DEL, UNLINK, EXISTS, TOUCH, TYPE.

/// Values larger than this are freed off the request path by UNLINK: freeing a string costs in
/// proportion to its bytes (Redis counts a string as one allocation and frees it inline).
pub const LAZYFREE_BYTES_MIN: usize = 64 * 1024;
/// Values costing more than this to free ([`Entry::free_effort`]) are freed off the request path
/// by UNLINK, as Redis does (`LAZYFREE_THRESHOLD`).
pub const LAZYFREE_EFFORT_MIN: usize = 64;

fn delete_keys(ctx: &mut Ctx<'_>, args: &Args<'_>, lazy: bool) -> CmdResult {
    let keys = args.tail(1);
    let (db, now) = (ctx.db(), ctx.now_ms);
    let mut locked = ctx.lock_keys(keys.iter());
    let mut deleted = 0;
    let mut large = Vec::new();
    for key in keys.iter() {
        let (shard, slot) = locked.shard(key);
        if !exists_for_write(shard, db, slot, key, now) {
            continue;
        }
        let entry = shard
            .remove(db, slot, key)
            .expect("a key found under the shard lock is still there");
        shard.note(notify::GENERIC, "del", db, key);
        deleted += 1;
        if lazy
            && (entry.mem_bytes() > LAZYFREE_BYTES_MIN || entry.free_effort() > LAZYFREE_EFFORT_MIN)
        {
            large.push(entry);
        }
    }
    drop(locked);
    // One by one: each counts in `lazyfreed_objects`, as in Redis.
    for entry in large {
        ctx.srv.lazyfree.drop_in_background(Box::new(entry));
    }
    ctx.out.int(deleted);
    Ok(())
}

fn del(ctx: &mut Ctx<'_>, args: &Args<'_>) -> CmdResult {
    delete_keys(ctx, args, false)
}

fn unlink(ctx: &mut Ctx<'_>, args: &Args<'_>) -> CmdResult {
    delete_keys(ctx, args, true)
}

fn exists(ctx: &mut Ctx<'_>, args: &Args<'_>) -> CmdResult {
    let keys = args.tail(1);
    let (db, now) = (ctx.db(), ctx.now_ms);
    let mut locked = ctx.lock_keys(keys.iter());
    let n = keys
        .iter()
        .filter(|key| {
            let (shard, slot) = locked.shard(key);
            lookup_inspect(shard, db, slot, key, now, false).is_some()
        })
        .count();
    drop(locked);
    ctx.out.int(n as i64);
    Ok(())
}

fn touch(ctx: &mut Ctx<'_>, args: &Args<'_>) -> CmdResult {
    let keys = args.tail(1);
    let (db, now) = (ctx.db(), ctx.now_ms);
    let mut locked = ctx.lock_keys(keys.iter());
    let n = keys
        .iter()
        .filter(|key| {
            let (shard, slot) = locked.shard(key);
            // TOUCH touches even in CLIENT NO-TOUCH mode (Redis 7.2).
            shard.set_no_touch(false);
            shard.lookup_read(db, slot, key, now).is_some()
        })
        .count();
    drop(locked);
    ctx.out.int(n as i64);
    Ok(())
}

fn type_of(ctx: &mut Ctx<'_>, args: &Args<'_>) -> CmdResult {
    let (db, now) = (ctx.db(), ctx.now_ms);
    let (mut shard, slot) = ctx.shard(args.get(1));
    let name = lookup_inspect(&mut shard, db, slot, args.get(1), now, false)
        .map_or("none", |e| e.kind().name());
    drop(shard);
    ctx.out.simple(name);
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// EXPIRE family, TTL family, PERSIST.

/// EXPIRE, PEXPIRE, EXPIREAT, PEXPIREAT: `unit_ms` is 1000 for seconds; `relative` adds now.
fn expire_generic(
    ctx: &mut Ctx<'_>,
    args: &Args<'_>,
    unit_ms: i64,
    relative: bool,
    name: &str,
) -> CmdResult {
    let (mut nx, mut xx, mut gt, mut lt) = (false, false, false, false);
    for i in 3..args.len() {
        if args.is(i, "NX") {
            nx = true;
        } else if args.is(i, "XX") {
            xx = true;
        } else if args.is(i, "GT") {
            gt = true;
        } else if args.is(i, "LT") {
            lt = true;
        } else {
            return Err(err!("Unsupported option {}", args.str_lossy(i)));
        }
    }
    if nx && (xx || gt || lt) {
        return Err(ReplyError::err_static(
            "NX and XX, GT or LT options at the same time are not compatible",
        ));
    }
    if gt && lt {
        return Err(ReplyError::err_static(
            "GT and LT options at the same time are not compatible",
        ));
    }
    // Negative times are allowed (they delete the key); only overflow is an error.
    let invalid = || err!("invalid expire time in '{name}' command");
    let mut when = args.i64(2)?.checked_mul(unit_ms).ok_or_else(invalid)?;
    if relative {
        when = crate::strings::jitter_ttl_ms(ctx, when)
            .checked_add(ctx.now_ms as i64)
            .ok_or_else(invalid)?;
    }
    let key = args.get(1);
    let (db, now) = (ctx.db(), ctx.now_ms);
    let (mut shard, slot) = ctx.shard(key);
    // Taken under the lock: later writes to a key get larger versions.
    let version = ctx.version();
    let Some(mut e) = shard.lookup(db, slot, key, now, true) else {
        drop(shard);
        ctx.out.int(0);
        return Ok(());
    };
    let current = e.expire_ms().map(|t| i64::try_from(t).unwrap_or(i64::MAX));
    // A key without TTL counts as an infinite TTL for GT and LT.
    let refused = (nx && current.is_some())
        || (xx && current.is_none())
        || (gt && current.is_none_or(|c| when <= c))
        || (lt && current.is_some_and(|c| when >= c));
    if refused {
        drop(e);
        drop(shard);
        ctx.out.int(0);
        return Ok(());
    }
    if when <= now as i64 {
        // A deadline in the past deletes the key now, as Redis does (and replicates a DEL).
        drop(e);
        shard.remove(db, slot, key);
        shard.note(notify::GENERIC, "del", db, key);
    } else {
        let mut ops = e.ops();
        ops.expire(Some(when as u64));
        e.note(ops);
        e.set_expire_ms(Some(when as u64));
        e.set_version(version);
        drop(e);
        shard.note(notify::GENERIC, "expire", db, key);
    }
    drop(shard);
    ctx.out.int(1);
    Ok(())
}

fn expire(ctx: &mut Ctx<'_>, args: &Args<'_>) -> CmdResult {
    expire_generic(ctx, args, 1000, true, "expire")
}

fn pexpire(ctx: &mut Ctx<'_>, args: &Args<'_>) -> CmdResult {
    expire_generic(ctx, args, 1, true, "pexpire")
}

fn expireat(ctx: &mut Ctx<'_>, args: &Args<'_>) -> CmdResult {
    expire_generic(ctx, args, 1000, false, "expireat")
}

fn pexpireat(ctx: &mut Ctx<'_>, args: &Args<'_>) -> CmdResult {
    expire_generic(ctx, args, 1, false, "pexpireat")
}

/// TTL, PTTL, EXPIRETIME, PEXPIRETIME: -2 for a missing key, -1 without TTL.
fn ttl_generic(ctx: &mut Ctx<'_>, args: &Args<'_>, in_ms: bool, absolute: bool) -> CmdResult {
    let (db, now) = (ctx.db(), ctx.now_ms);
    let (mut shard, slot) = ctx.shard(args.get(1));
    let reply = match lookup_inspect(&mut shard, db, slot, args.get(1), now, false) {
        None => -2,
        Some(e) => match e.expire_ms() {
            None => -1,
            Some(at_ms) => {
                let at_ms = i64::try_from(at_ms).unwrap_or(i64::MAX);
                let t = if absolute { at_ms } else { at_ms - now as i64 }.max(0);
                // Seconds are rounded to nearest, as Redis does.
                if in_ms {
                    t
                } else {
                    // Redis rounds in unsigned arithmetic, which does not overflow at i64::MAX.
                    ((t as i128 + 500) / 1000) as i64
                }
            }
        },
    };
    drop(shard);
    ctx.out.int(reply);
    Ok(())
}

fn ttl(ctx: &mut Ctx<'_>, args: &Args<'_>) -> CmdResult {
    ttl_generic(ctx, args, false, false)
}

fn pttl(ctx: &mut Ctx<'_>, args: &Args<'_>) -> CmdResult {
    ttl_generic(ctx, args, true, false)
}

fn expiretime(ctx: &mut Ctx<'_>, args: &Args<'_>) -> CmdResult {
    ttl_generic(ctx, args, false, true)
}

fn pexpiretime(ctx: &mut Ctx<'_>, args: &Args<'_>) -> CmdResult {
    ttl_generic(ctx, args, true, true)
}

fn persist(ctx: &mut Ctx<'_>, args: &Args<'_>) -> CmdResult {
    let (db, now) = (ctx.db(), ctx.now_ms);
    let (mut shard, slot) = ctx.shard(args.get(1));
    // Taken under the lock: later writes to a key get larger versions.
    let version = ctx.version();
    let removed = match shard.lookup(db, slot, args.get(1), now, true) {
        Some(mut e) if e.expire_ms().is_some() => {
            let mut ops = e.ops();
            ops.expire(None);
            e.note(ops);
            e.set_expire_ms(None);
            e.set_version(version);
            true
        }
        _ => false,
    };
    if removed {
        shard.note(notify::GENERIC, "persist", db, args.get(1));
    }
    drop(shard);
    ctx.out.int(removed as i64);
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// RENAME, RENAMENX, COPY, MOVE, SWAPDB.

fn rename_generic(ctx: &mut Ctx<'_>, args: &Args<'_>, nx: bool) -> CmdResult {
    let (src, dst) = (args.get(1), args.get(2));
    let (db, now) = (ctx.db(), ctx.now_ms);
    let mut locked = ctx.lock_keys([src, dst].into_iter());
    // Taken under the lock: later writes to a key get larger versions.
    let version = ctx.version();
    let (shard, src_slot) = locked.shard(src);
    if shard.lookup(db, src_slot, src, now, true).is_none() {
        return Err(ERR_NO_SUCH_KEY);
    }
    if src == dst {
        drop(locked);
        if nx {
            ctx.out.int(0);
        } else {
            ctx.out.ok();
        }
        return Ok(());
    }
    let (shard, dst_slot) = locked.shard(dst);
    if nx && exists_for_write(shard, db, dst_slot, dst, now) {
        drop(locked);
        ctx.out.int(0);
        return Ok(());
    }
    let (shard, _) = locked.shard(src);
    let old = shard
        .remove(db, src_slot, src)
        .expect("a key found under the shard lock is still there");
    let access = old.access();
    let renamed = rekey(old, dst, version);
    let (shard, _) = locked.shard(dst);
    let replaced = shard.insert(db, dst_slot, renamed, now);
    note_new_if_replaced(shard, db, dst, &replaced, now);
    set_access(shard, db, dst_slot, dst, now, access);
    let (shard, _) = locked.shard(src);
    shard.note(notify::GENERIC, "rename_from", db, src);
    shard.note(notify::GENERIC, "rename_to", db, dst);
    drop(locked);
    drop(replaced);
    if nx {
        ctx.out.int(1);
    } else {
        ctx.out.ok();
    }
    Ok(())
}

fn rename(ctx: &mut Ctx<'_>, args: &Args<'_>) -> CmdResult {
    rename_generic(ctx, args, false)
}

fn renamenx(ctx: &mut Ctx<'_>, args: &Args<'_>) -> CmdResult {
    rename_generic(ctx, args, true)
}

fn copy(ctx: &mut Ctx<'_>, args: &Args<'_>) -> CmdResult {
    let (src, dst) = (args.get(1), args.get(2));
    let (src_db, now) = (ctx.db(), ctx.now_ms);
    let mut replace = false;
    let mut dst_db = src_db as i64;
    let mut i = 3;
    while i < args.len() {
        if args.is(i, "REPLACE") {
            replace = true;
        } else if args.is(i, "DB") && i + 1 < args.len() {
            dst_db = parse_int32(args.get(i + 1), None)?;
            i += 1;
        } else {
            return Err(ERR_SYNTAX);
        }
        i += 1;
    }
    if dst_db < 0 || dst_db as usize >= ctx.srv.ks.databases() {
        return Err(ERR_DB_INDEX);
    }
    if ctx.srv.cluster.is_some() && (src_db != 0 || dst_db != 0) {
        return Err(ReplyError::err_static(
            "Copying to another database is not allowed in cluster mode",
        ));
    }
    let dst_db = dst_db as usize;
    if src_db == dst_db && src == dst {
        return Err(ERR_SAME_OBJECT);
    }
    let mut locked = ctx.lock_keys([src, dst].into_iter());
    // Taken under the lock: later writes to a key get larger versions.
    let version = ctx.version();
    let (shard, slot) = locked.shard(src);
    let Some(copied) = shard.lookup_read(src_db, slot, src, now).map(|e| {
        Entry::with_stale(
            dst,
            payload_copy(&e),
            e.expire_ms(),
            e.ext_version(),
            e.stale_ms(),
            version,
            0,
        )
    }) else {
        drop(locked);
        ctx.out.int(0);
        return Ok(());
    };
    let (shard, slot) = locked.shard(dst);
    if !replace && exists_for_write(shard, dst_db, slot, dst, now) {
        drop(locked);
        ctx.out.int(0);
        return Ok(());
    }
    let replaced = shard.insert(dst_db, slot, copied, now);
    note_new_if_replaced(shard, dst_db, dst, &replaced, now);
    shard.note(notify::GENERIC, "copy_to", dst_db, dst);
    drop(locked);
    drop(replaced);
    ctx.out.int(1);
    Ok(())
}

fn move_key(ctx: &mut Ctx<'_>, args: &Args<'_>) -> CmdResult {
    if ctx.srv.cluster.is_some() {
        return Err(ReplyError::err_static(
            "MOVE is not allowed in cluster mode",
        ));
    }
    let key = args.get(1);
    let dst_db = parse_db(ctx, args.get(2), None)?;
    let (src_db, now) = (ctx.db(), ctx.now_ms);
    if src_db == dst_db {
        return Err(ERR_SAME_OBJECT);
    }
    // Both databases keep the key in the same slot, hence the same shard.
    let (mut shard, slot) = ctx.shard(key);
    // Taken under the lock: later writes to a key get larger versions.
    let version = ctx.version();
    let moved = exists_for_write(&mut shard, src_db, slot, key, now)
        && !exists_for_write(&mut shard, dst_db, slot, key, now);
    if moved {
        let mut e = shard
            .remove(src_db, slot, key)
            .expect("a key found under the shard lock is still there");
        let access = e.access();
        e.set_version(version);
        // The target held no live key, but may hold an expired one not yet deleted.
        let stale = shard.insert(dst_db, slot, e, now);
        set_access(&mut shard, dst_db, slot, key, now, access);
        shard.note(notify::GENERIC, "move_from", src_db, key);
        shard.note(notify::GENERIC, "move_to", dst_db, key);
        drop(shard);
        drop(stale);
    } else {
        drop(shard);
    }
    ctx.out.int(moved as i64);
    Ok(())
}

fn swapdb(ctx: &mut Ctx<'_>, args: &Args<'_>) -> CmdResult {
    if ctx.srv.cluster.is_some() {
        return Err(ReplyError::err_static(
            "SWAPDB is not allowed in cluster mode",
        ));
    }
    if ctx.srv.active.is_on() {
        // Members merge per key and database; a swap would exchange whole databases on one
        // member only (see `active.rs`).
        return Err(ReplyError::err_static(
            "SWAPDB is not allowed in an active-active group",
        ));
    }
    let a = parse_db(ctx, args.get(1), Some("invalid first DB index"))?;
    let b = parse_db(ctx, args.get(2), Some("invalid second DB index"))?;
    if a != b {
        // Every shard is locked before any is changed: no client sees half-swapped databases.
        let mut shards = ctx.srv.ks.lock_all();
        // Appended under the locks after every queued write, so it sits in the stream between
        // the writes before and after.
        let ks = &ctx.srv.ks;
        if let Some(offset) = crate::effects::emit_all_locked(
            ctx.srv,
            &mut shards,
            ctx.now_ms,
            |shards| {
                ks.note_swap();
                for s in shards.iter_mut() {
                    s.swap_db(a, b);
                }
            },
            |out| shoal_replication::stream::encode_swapdb(out, a, b),
        ) {
            ctx.client.repl.last_write_offset = offset;
        }
    }
    ctx.out.ok();
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// KEYS, SCAN, RANDOMKEY.

fn keys(ctx: &mut Ctx<'_>, args: &Args<'_>) -> CmdResult {
    let pattern = args.get(1);
    let all = pattern == b"*";
    let (db, now) = (ctx.db(), ctx.now_ms);
    let ks = &ctx.srv.ks;
    let mut found: Vec<Vec<u8>> = Vec::new();
    // One shard at a time, not all at once: KEYS must not stall every connection for a full walk.
    // A key that exists for the whole call stays in its slot, so it is still listed exactly once.
    for i in 0..ks.shard_count() {
        let shard = ks.lock(i);
        if shard.db_len(db) == 0 {
            continue;
        }
        for slot in shard.owned_slots(i) {
            shard.for_each_in_slot(db, slot, now, |e| {
                if all || glob_match(pattern, e.key(), false) {
                    found.push(e.key().to_vec());
                }
            });
        }
    }
    ctx.out.array(found.len());
    for k in &found {
        ctx.out.bulk(k);
    }
    Ok(())
}

/// Default keys examined per SCAN call (Redis's default COUNT).
pub const SCAN_COUNT_DEFAULT: usize = 10;

/// Slots one SCAN call visits at most, so a sparse keyspace cannot make one call walk all 16384
/// (an empty slot costs one shard lock). An empty database is done in four calls.
pub const SCAN_SLOTS_PER_CALL_MAX: usize = 4096;

/// A SCAN cursor as Redis's `strtoul` accepts it. Values past the last slot mean "done".
fn parse_cursor(arg: &[u8]) -> Result<usize, ReplyError> {
    crate::args::parse_scan_cursor(arg).map(|v| usize::try_from(v).unwrap_or(usize::MAX))
}

fn scan(ctx: &mut Ctx<'_>, args: &Args<'_>) -> CmdResult {
    let cursor = parse_cursor(args.get(1))?;
    let mut count = SCAN_COUNT_DEFAULT;
    let mut pattern: Option<&[u8]> = None;
    let mut type_name: Option<&[u8]> = None;
    let mut i = 2;
    while i < args.len() {
        let has_value = i + 1 < args.len();
        if args.is(i, "COUNT") && has_value {
            let n = args.i64(i + 1)?;
            if n < 1 {
                return Err(ERR_SYNTAX);
            }
            count = usize::try_from(n).unwrap_or(usize::MAX);
        } else if args.is(i, "MATCH") && has_value {
            let p = args.get(i + 1);
            pattern = (p != b"*").then_some(p);
        } else if args.is(i, "TYPE") && has_value {
            type_name = Some(args.get(i + 1));
        } else {
            return Err(ERR_SYNTAX);
        }
        i += 2;
    }
    let (db, now) = (ctx.db(), ctx.now_ms);
    let ks = &ctx.srv.ks;
    let mut found: Vec<Vec<u8>> = Vec::new();
    let mut examined = 0;
    let mut slot = cursor.min(SLOTS);
    let mut visited = 0;
    // COUNT counts keys examined, before MATCH and TYPE filter them, as in Redis. Empty slots cost
    // only a length check and do not count against the per-call bound, so a small database is
    // scanned in one call, as Redis does.
    while slot < SLOTS && examined < count && visited < SCAN_SLOTS_PER_CALL_MAX {
        let slot16 = slot as u16;
        let shard = ks.lock(ks.shard_of(slot16));
        slot += 1;
        if shard.slot_len(db, slot16) == 0 {
            continue;
        }
        visited += 1;
        shard.for_each_in_slot(db, slot16, now, |e| {
            examined += 1;
            let type_ok =
                type_name.is_none_or(|t| t.eq_ignore_ascii_case(e.kind().name().as_bytes()));
            if type_ok && pattern.is_none_or(|p| glob_match(p, e.key(), false)) {
                found.push(e.key().to_vec());
            }
        });
    }
    let next = if slot >= SLOTS { 0 } else { slot };
    ctx.out.array(2);
    ctx.out.bulk(next.to_string().as_bytes());
    ctx.out.array(found.len());
    for k in &found {
        ctx.out.bulk(k);
    }
    Ok(())
}

fn randomkey(ctx: &mut Ctx<'_>, _args: &Args<'_>) -> CmdResult {
    // No clock read and no OS randomness: the start shard derives from inputs and a draw counter,
    // so simulations replay. Shards hold similar numbers of keys (slots are hashed), so starting
    // at a random shard is close to picking a random key.
    let seed = ctx.now_ms
        ^ ctx.client.id().rotate_left(32)
        ^ ctx
            .srv
            .draws
            .fetch_add(1, Relaxed)
            .wrapping_mul(0x9E37_79B9_7F4A_7C15);
    let (db, now) = (ctx.db(), ctx.now_ms);
    let ks = &ctx.srv.ks;
    let n = ks.shard_count();
    let start = Rng::new(seed).below(n);
    let key = (0..n).find_map(|k| ks.lock((start + k) % n).random_key(db, now));
    match key {
        Some(k) => ctx.out.bulk(&k),
        None => ctx.out.null(),
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// OBJECT.

fn lfu_params(ctx: &Ctx<'_>) -> LfuParams {
    let cfg = ctx.srv.config();
    LfuParams {
        log_factor: cfg.lfu_log_factor,
        decay_minutes: cfg.lfu_decay_time,
    }
}

/// Runs `f` on the key of an OBJECT subcommand without touching it; a missing key replies nil.
fn object_lookup(
    ctx: &mut Ctx<'_>,
    args: &Args<'_>,
    f: impl FnOnce(&Entry, u64) -> Result<i64, ReplyError>,
) -> CmdResult {
    let (db, now) = (ctx.db(), ctx.now_ms);
    let (mut shard, slot) = ctx.shard(args.get(2));
    let reply = lookup_inspect(&mut shard, db, slot, args.get(2), now, true).map(|e| f(&e, now));
    drop(shard);
    match reply {
        Some(v) => ctx.out.int(v?),
        None => ctx.out.null(),
    }
    Ok(())
}

fn object_encoding(ctx: &mut Ctx<'_>, args: &Args<'_>) -> CmdResult {
    let (db, now) = (ctx.db(), ctx.now_ms);
    let (mut shard, slot) = ctx.shard(args.get(2));
    let enc = lookup_inspect(&mut shard, db, slot, args.get(2), now, true).map(|e| e.encoding());
    drop(shard);
    match enc {
        Some(enc) => ctx.out.bulk(enc.as_bytes()),
        None => ctx.out.null(),
    }
    Ok(())
}

fn object_freq(ctx: &mut Ctx<'_>, args: &Args<'_>) -> CmdResult {
    let policy = ctx.srv.policy();
    let params = lfu_params(ctx);
    object_lookup(ctx, args, |e, now| {
        if !policy.uses_lfu() {
            return Err(ReplyError::err_static(
                "An LFU maxmemory policy is not selected, access frequency not tracked. Please note that when switching between policies at runtime LRU and LFU data will take some time to adjust.",
            ));
        }
        Ok(evict::lfu_counter(e.access(), now, params) as i64)
    })
}

fn object_idletime(ctx: &mut Ctx<'_>, args: &Args<'_>) -> CmdResult {
    let policy = ctx.srv.policy();
    object_lookup(ctx, args, |e, now| {
        if policy.uses_lfu() {
            return Err(ReplyError::err_static(
                "An LFU maxmemory policy is selected, idle time not tracked. Please note that when switching between policies at runtime LRU and LFU data will take some time to adjust.",
            ));
        }
        Ok(evict::lru_idle_s(e.access(), now) as i64)
    })
}

fn object_refcount(ctx: &mut Ctx<'_>, args: &Args<'_>) -> CmdResult {
    // shoal never shares values between keys (Redis shares small integers and reports INT_MAX).
    object_lookup(ctx, args, |_, _| Ok(1))
}

fn object_help(ctx: &mut Ctx<'_>, _args: &Args<'_>) -> CmdResult {
    let lines = [
        "OBJECT <subcommand> [<arg> [value] [opt] ...]. Subcommands are:",
        "ENCODING <key>",
        "    Return the kind of internal representation used in order to store the value",
        "    associated with a <key>.",
        "FREQ <key>",
        "    Return the access frequency index of the <key>. The returned integer is",
        "    proportional to the logarithm of the recent access frequency of the key.",
        "IDLETIME <key>",
        "    Return the idle time of the <key>, that is the approximated number of",
        "    seconds elapsed since the last access to the key.",
        "REFCOUNT <key>",
        "    Return the number of references of the value associated with the specified",
        "    <key>.",
        "HELP",
        "    Prints this help.",
    ];
    ctx.out.array(lines.len());
    for l in lines {
        ctx.out.simple(l);
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// DUMP and RESTORE, and the payload format they share with the replication snapshot.
//
// Payload layout (little-endian):
//   type: u8            value type; RDB's numbers where RDB has one (string = 0, set = 2,
//                       zset = 5, hash = 4 when they arrive)
//   body                per type; string: LEB128 length, then the bytes
//   version: u16        DUMP_VERSION
//   crc: u64            CRC-64/Jones (Redis's crc64) of everything before it
// Like Redis's, the payload holds the value only: RESTORE's arguments give the key and TTL.

/// Version of shoal's payload format. Deliberately far above any Redis RDB version (Redis 7.0 writes
/// 10), so each server rejects the other's payload cleanly ("payload version or checksum are
/// wrong") instead of misreading it.
pub const DUMP_VERSION: u16 = 0x5301;

const FOOTER_BYTES: usize = 2 + 8;

/// Why a payload was refused; [`PayloadError::reply`] is the reply Redis sends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PayloadError {
    /// Unknown version, bad checksum or too short: corrupted or from another server.
    VersionOrChecksum,
    /// Checksum fine but the body does not decode: a bug in the writer.
    BadFormat,
}

impl PayloadError {
    pub fn reply(self) -> ReplyError {
        match self {
            PayloadError::VersionOrChecksum => {
                ReplyError::err_static("DUMP payload version or checksum are wrong")
            }
            PayloadError::BadFormat => ReplyError::err_static("Bad data format"),
        }
    }
}

/// Serializes an entry's value (not its key, TTL or version).
pub fn dump_value(e: &Entry) -> Vec<u8> {
    let mut out = Vec::new();
    codec::encode_value(e.value(), &mut out);
    out.extend_from_slice(&DUMP_VERSION.to_le_bytes());
    let crc = crc64(&out);
    out.extend_from_slice(&crc.to_le_bytes());
    out
}

/// Checks a payload's version and checksum; returns its body (type byte and value).
pub fn verify_payload(payload: &[u8]) -> Result<&[u8], PayloadError> {
    if payload.len() < 1 + FOOTER_BYTES {
        return Err(PayloadError::VersionOrChecksum);
    }
    let (checked, crc) = payload.split_at(payload.len() - 8);
    let (body, version) = checked.split_at(checked.len() - 2);
    let version = u16::from_le_bytes([version[0], version[1]]);
    let crc = u64::from_le_bytes(crc.try_into().expect("8 bytes"));
    if version != DUMP_VERSION || crc64(checked) != crc {
        return Err(PayloadError::VersionOrChecksum);
    }
    Ok(body)
}

/// Builds the entry for `key` from a payload written by [`dump_value`], or by redis-server's DUMP
/// (its RDB encoding, `shoal_keyspace::rdb`: what MIGRATE from a redis-server and `redis-cli
/// --cluster import` send).
pub fn restore_value(
    payload: &[u8],
    key: &[u8],
    expire_ms: Option<u64>,
    version: u64,
    limits: &EncodingLimits,
) -> Result<Entry, PayloadError> {
    if let Some(body) = redis_payload(payload) {
        let value = shoal_keyspace::rdb::read_value(body, limits).ok_or(PayloadError::BadFormat)?;
        return Ok(match value {
            shoal_keyspace::rdb::Value::Str(s) => {
                Entry::new(key, Payload::Inline(&s), expire_ms, None, version, 0)
            }
            shoal_keyspace::rdb::Value::Obj(o) => Entry::new(
                key,
                Payload::Object(Box::new(o)),
                expire_ms,
                None,
                version,
                0,
            ),
        });
    }
    let body = verify_payload(payload)?;
    let value = codec::decode_value(body, limits).ok_or(PayloadError::BadFormat)?;
    Ok(Entry::new(key, value, expire_ms, None, version, 0))
}

/// The body of a payload redis-server wrote (an RDB version it writes and a matching CRC-64).
fn redis_payload(payload: &[u8]) -> Option<&[u8]> {
    if payload.len() < 1 + FOOTER_BYTES {
        return None;
    }
    let (checked, crc) = payload.split_at(payload.len() - 8);
    let (body, version) = checked.split_at(checked.len() - 2);
    let version = u16::from_le_bytes([version[0], version[1]]);
    let crc = u64::from_le_bytes(crc.try_into().ok()?);
    (version <= shoal_keyspace::rdb::RDB_VERSION_MAX && crc64(checked) == crc).then_some(body)
}

/// A key MIGRATE sends: its name, its version when read (it is deleted here only if it still has
/// it), its remaining TTL in ms (0: none) and its DUMP payload.
#[derive(Debug, Clone)]
pub struct MigrateItem {
    pub key: Vec<u8>,
    pub version: u64,
    pub ttl_ms: u64,
    pub payload: Vec<u8>,
}

/// What MIGRATE asks the I/O layer to do.
#[derive(Debug, Clone)]
pub struct MigrateRequest {
    pub host: String,
    pub port: u16,
    pub source_db: usize,
    pub dest_db: i64,
    pub timeout_ms: u64,
    pub copy: bool,
    pub replace: bool,
    /// AUTH password, or AUTH2 username and password.
    pub auth: Option<(Option<String>, String)>,
    pub items: Vec<MigrateItem>,
}

/// Reads a key for MIGRATE: `None` if absent (or expired).
pub fn migrate_item(shard: &mut Shard, db: usize, key: &[u8], now_ms: u64) -> Option<MigrateItem> {
    let slot = shoal_keyspace::key_slot(key);
    let e = shard.lookup(db, slot, key, now_ms, false)?;
    Some(MigrateItem {
        key: key.to_vec(),
        version: e.version(),
        ttl_ms: e
            .expire_ms()
            .map_or(0, |at| at.saturating_sub(now_ms).max(1)),
        payload: dump_value(&e),
    })
}

/// `MIGRATE host port key|"" destination-db timeout [COPY] [REPLACE] [AUTH password]
/// [AUTH2 username password] [KEYS key ...]`: reads the keys here; the I/O layer sends them with
/// RESTORE-ASKING and deletes each here only if it did not change meanwhile.
fn migrate(ctx: &mut Ctx<'_>, args: &Args<'_>) -> CmdResult {
    let (mut copy, mut replace) = (false, false);
    let mut auth = None;
    let mut first_key = 0;
    let mut i = 6;
    while i < args.len() {
        let more = args.len() - i - 1;
        if args.is(i, "COPY") {
            copy = true;
        } else if args.is(i, "REPLACE") {
            replace = true;
        } else if args.is(i, "AUTH") && more >= 1 {
            auth = Some((None, args.str_lossy(i + 1)));
            i += 1;
        } else if args.is(i, "AUTH2") && more >= 2 {
            auth = Some((Some(args.str_lossy(i + 1)), args.str_lossy(i + 2)));
            i += 2;
        } else if args.is(i, "KEYS") {
            if !args.get(3).is_empty() {
                return Err(ReplyError::err_static(
                    "When using MIGRATE KEYS option, the key argument must be set to the empty string",
                ));
            }
            first_key = i + 1;
            break;
        } else {
            return Err(ERR_SYNTAX);
        }
        i += 1;
    }
    let port = args.i64(2)?;
    let dest_db = args.i64(4)?;
    let timeout_ms = args.i64(5)?.max(1) as u64;
    let port = u16::try_from(port).map_err(|_| ERR_SYNTAX)?;
    let keys: Vec<&[u8]> = if first_key > 0 {
        (first_key..args.len()).map(|k| args.get(k)).collect()
    } else {
        vec![args.get(3)]
    };
    let (db, now) = (ctx.db(), ctx.now_ms);
    let mut items = Vec::new();
    for key in keys {
        let (mut shard, _) = ctx.shard(key);
        if let Some(item) = migrate_item(&mut shard, db, key, now) {
            items.push(item);
        }
    }
    if items.is_empty() {
        ctx.out.simple("NOKEY");
        return Ok(());
    }
    ctx.client.repl.action = Some(crate::state::Action::Migrate(Box::new(MigrateRequest {
        host: args.str_lossy(1),
        port,
        source_db: db,
        dest_db,
        timeout_ms,
        copy,
        replace,
        auth,
        items,
    })));
    Ok(())
}

fn dump(ctx: &mut Ctx<'_>, args: &Args<'_>) -> CmdResult {
    let (db, now) = (ctx.db(), ctx.now_ms);
    let (mut shard, slot) = ctx.shard(args.get(1));
    let payload = shard
        .lookup_read(db, slot, args.get(1), now)
        .map(|e| dump_value(&e));
    drop(shard);
    match payload {
        Some(p) => ctx.out.bulk(&p),
        None => ctx.out.null(),
    }
    Ok(())
}

/// RESTORE's IDLETIME/FREQ as an access field under `policy` (Redis's `objectSetLRUOrLFU`): FREQ
/// applies only under an LFU policy, IDLETIME only under the others.
fn hinted_access(
    policy: Policy,
    idle_s: Option<i64>,
    freq: Option<i64>,
    now_ms: u64,
) -> Option<u32> {
    const LRU_CLOCK_SPAN: i64 = 1 << 24;
    if policy.uses_lfu() {
        freq.map(|f| (evict::lfu_initial(now_ms) & !0xFF) | f as u32)
    } else {
        idle_s.map(|idle| {
            let mut at = evict::lru_clock(now_ms) as i64 - idle.min(LRU_CLOCK_SPAN - 1);
            if at < 0 {
                at += LRU_CLOCK_SPAN;
            }
            at as u32
        })
    }
}

fn restore(ctx: &mut Ctx<'_>, args: &Args<'_>) -> CmdResult {
    let key = args.get(1);
    let (mut replace, mut absttl) = (false, false);
    let mut idle_s: Option<i64> = None;
    let mut freq: Option<i64> = None;
    let mut i = 4;
    while i < args.len() {
        let has_value = i + 1 < args.len();
        if args.is(i, "REPLACE") {
            replace = true;
        } else if args.is(i, "ABSTTL") {
            absttl = true;
        } else if args.is(i, "IDLETIME") && has_value && freq.is_none() {
            let v = args.i64(i + 1)?;
            if v < 0 {
                return Err(ReplyError::err_static(
                    "Invalid IDLETIME value, must be >= 0",
                ));
            }
            idle_s = Some(v);
            i += 1;
        } else if args.is(i, "FREQ") && has_value && idle_s.is_none() {
            let v = args.i64(i + 1)?;
            if !(0..=255).contains(&v) {
                return Err(ReplyError::err_static(
                    "Invalid FREQ value, must be >= 0 and <= 255",
                ));
            }
            freq = Some(v);
            i += 1;
        } else {
            return Err(ERR_SYNTAX);
        }
        i += 1;
    }
    let (db, now) = (ctx.db(), ctx.now_ms);
    let policy = ctx.srv.policy();
    let limits = ctx.srv.encoding_limits();
    let (mut shard, slot) = ctx.shard(key);
    // Taken under the lock: later writes to a key get larger versions.
    let version = ctx.version();
    // Checks in Redis's order: existing key, TTL, payload.
    if !replace && exists_for_write(&mut shard, db, slot, key, now) {
        return Err(ReplyError::BusyKey);
    }
    let ttl = args.i64(2)?;
    if ttl < 0 {
        return Err(ReplyError::err_static("Invalid TTL value, must be >= 0"));
    }
    let expire_ms = match ttl as u64 {
        0 => None,
        t if absttl => Some(t),
        t => Some(now.saturating_add(t)),
    };
    let entry = restore_value(args.get(3), key, expire_ms, version, &limits)
        .map_err(PayloadError::reply)?;
    let replaced = if expire_ms.is_some_and(|at| at <= now) {
        // Already expired: the key ends up absent, whatever was there before.
        drop(entry);
        let old = shard.remove(db, slot, key);
        if old.is_some() {
            shard.note(notify::GENERIC, "del", db, key);
        }
        old
    } else {
        let old = shard.insert(db, slot, entry, now);
        note_new_if_replaced(&shard, db, key, &old, now);
        if let Some(access) = hinted_access(policy, idle_s, freq, now) {
            set_access(&mut shard, db, slot, key, now, access);
        }
        shard.note(notify::GENERIC, "restore", db, key);
        old
    };
    drop(shard);
    drop(replaced);
    ctx.out.ok();
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;
    use std::sync::Arc;

    use shoal_keyspace::key_slot;

    use super::*;
    use crate::config::Config;
    use crate::tests::run;
    use crate::{Client, ClientHandle, Hooks, OwnedArgs, ServerState, execute};

    /// A server with one client and a clock the test moves.
    struct Node {
        srv: ServerState,
        client: Client,
        now_ms: u64,
    }

    impl Node {
        fn new(config: &[(&str, &str)]) -> Node {
            let mut values = Config::default();
            for (k, v) in config {
                values.set_initial(k, v).unwrap();
            }
            let now_ms = 1_000_000;
            let srv = ServerState::new(values, now_ms, 7, Hooks::default());
            let h = Arc::new(ClientHandle::new(
                1,
                "127.0.0.1:1".into(),
                "127.0.0.1:2".into(),
                0,
            ));
            Node {
                srv,
                client: Client::new(h, true),
                now_ms,
            }
        }

        fn call(&mut self, args: &[&[u8]]) -> Vec<u8> {
            let o = OwnedArgs::new(args.iter());
            let mut out = Vec::new();
            execute(
                &self.srv,
                &mut self.client,
                &o.args(),
                &mut out,
                self.now_ms,
            );
            out
        }

        fn run(&mut self, args: &[&str]) -> String {
            let args: Vec<&[u8]> = args.iter().map(|a| a.as_bytes()).collect();
            String::from_utf8(self.call(&args)).unwrap()
        }

        fn check_invariants(&self) {
            for s in self.srv.ks.lock_all() {
                s.check_invariants();
            }
        }
    }

    /// Parses `*2 $cursor *n $key...` (SCAN) or `*n $key...` (KEYS) into bulk strings; a nested
    /// array's items follow its parent's.
    fn bulks(reply: &str) -> Vec<String> {
        let mut out = Vec::new();
        let mut lines = reply.split("\r\n");
        while let Some(l) = lines.next() {
            if l.starts_with('$') && l != "$-1" {
                out.push(lines.next().unwrap().to_string());
            }
        }
        out
    }

    fn sorted(reply: &str) -> Vec<String> {
        let mut v = bulks(reply);
        v.sort();
        v
    }

    #[test]
    fn del_unlink_exists_touch_and_type() {
        let big = "x".repeat(100_000);
        let (lazyfree, worker) = shoal_keyspace::LazyFree::with_worker();
        let freer = std::thread::spawn(move || worker.run());
        let mut srv = ServerState::new(
            crate::config::Config::default(),
            1_000_000,
            7,
            crate::Hooks::default(),
        );
        srv.lazyfree = lazyfree;
        let freed = || srv.lazyfree.freed();
        let freed_before = freed();
        let r = crate::tests::run_on(
            &srv,
            &[
                &["MSET", "a", "1", "b", "2", "c", "3"],
                &["EXISTS", "a", "b", "nope", "a"],
                &["DEL", "a", "nope", "a"],
                &["UNLINK", "b", "nope"],
                &["TOUCH", "a", "b", "c"],
                &["TYPE", "c"],
                &["TYPE", "a"],
                &["SET", "big", &big],
                &["UNLINK", "big", "c"],
                &["EXISTS", "big", "c"],
                &["DEL"],
            ],
        );
        // The large value went to this node's background thread.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while freed() == freed_before {
            assert!(
                std::time::Instant::now() < deadline,
                "UNLINK freed nothing in the background"
            );
            std::thread::sleep(std::time::Duration::from_millis(1));
        }
        drop(srv);
        freer.join().unwrap();
        assert_eq!(r[1], ":3\r\n", "a repeated key counts each time");
        assert_eq!(r[2], ":1\r\n");
        assert_eq!(r[3], ":1\r\n");
        assert_eq!(r[4], ":1\r\n");
        assert_eq!(r[5], "+string\r\n");
        assert_eq!(r[6], "+none\r\n");
        assert_eq!(r[8], ":2\r\n");
        assert_eq!(r[9], ":0\r\n");
        assert_eq!(
            r[10],
            "-ERR wrong number of arguments for 'del' command\r\n"
        );
    }

    #[test]
    fn expired_keys_are_absent_to_every_command() {
        let mut n = Node::new(&[]);
        n.run(&["SET", "k", "v", "PX", "100"]);
        n.now_ms += 100;
        assert_eq!(n.run(&["EXISTS", "k"]), ":0\r\n");
        n.run(&["SET", "k", "v", "PX", "100"]);
        n.now_ms += 100;
        assert_eq!(n.run(&["TTL", "k"]), ":-2\r\n");
        assert_eq!(n.run(&["DEL", "k"]), ":0\r\n");
        assert_eq!(n.run(&["RENAME", "k", "j"]), "-ERR no such key\r\n");
        n.check_invariants();
    }

    #[test]
    fn expire_options_truth_table() {
        // (options, current TTL in s or none, new TTL in s, expected reply)
        let cases: &[(&[&str], Option<u64>, u64, &str)] = &[
            (&[], None, 100, ":1"),
            (&[], Some(50), 100, ":1"),
            (&["NX"], None, 100, ":1"),
            (&["NX"], Some(50), 100, ":0"),
            (&["XX"], None, 100, ":0"),
            (&["XX"], Some(50), 100, ":1"),
            (&["GT"], None, 100, ":0"),
            (&["GT"], Some(50), 100, ":1"),
            (&["GT"], Some(100), 100, ":0"),
            (&["GT"], Some(150), 100, ":0"),
            (&["LT"], None, 100, ":1"),
            (&["LT"], Some(50), 100, ":0"),
            (&["LT"], Some(100), 100, ":0"),
            (&["LT"], Some(150), 100, ":1"),
            (&["XX", "GT"], Some(50), 100, ":1"),
            (&["XX", "LT"], None, 100, ":0"),
            (&["gt", "xx"], Some(150), 100, ":0"),
        ];
        for (opts, current, new, want) in cases {
            let mut n = Node::new(&[]);
            match current {
                Some(s) => n.run(&["SET", "k", "v", "EX", &s.to_string()]),
                None => n.run(&["SET", "k", "v"]),
            };
            let new = new.to_string();
            let mut cmd = vec!["EXPIRE", "k", new.as_str()];
            cmd.extend_from_slice(opts);
            assert_eq!(n.run(&cmd), format!("{want}\r\n"), "{opts:?} {current:?}");
            let ttl = if *want == ":1" {
                Some(100)
            } else {
                current.map(|c| c as i64)
            };
            assert_eq!(
                n.run(&["TTL", "k"]),
                format!(":{}\r\n", ttl.unwrap_or(-1)),
                "{opts:?} {current:?}"
            );
            n.check_invariants();
        }
    }

    #[test]
    fn expire_errors_and_past_deadlines() {
        let r = run(&[
            &["SET", "k", "v"],
            &["EXPIRE", "k", "10", "NX", "XX"],
            &["EXPIRE", "k", "10", "NX", "GT"],
            &["EXPIRE", "k", "10", "GT", "LT"],
            &["EXPIRE", "k", "10", "SOON"],
            &["EXPIRE", "k", "ten"],
            &["EXPIRE", "k", "9223372036854775807"],
            &["PEXPIRE", "k", "9223372036854775807"],
            &["EXPIREAT", "k", "-9223372036854776"],
            &["EXPIRE", "missing", "10"],
            &["PEXPIREAT", "k", "9223372036854775807"],
            &["PEXPIRETIME", "k"],
            &["EXPIRE", "k", "-1"],
            &["EXISTS", "k"],
            &["SET", "k", "v"],
            &["EXPIREAT", "k", "1000"],
            &["EXISTS", "k"],
            &["SET", "k", "v"],
            &["PEXPIREAT", "k", "1000000"],
            &["EXISTS", "k"],
            &["EXPIRE"],
        ]);
        assert_eq!(
            r[1],
            "-ERR NX and XX, GT or LT options at the same time are not compatible\r\n"
        );
        assert_eq!(r[2], r[1]);
        assert_eq!(
            r[3],
            "-ERR GT and LT options at the same time are not compatible\r\n"
        );
        assert_eq!(r[4], "-ERR Unsupported option SOON\r\n");
        assert_eq!(r[5], "-ERR value is not an integer or out of range\r\n");
        assert_eq!(r[6], "-ERR invalid expire time in 'expire' command\r\n");
        assert_eq!(r[7], "-ERR invalid expire time in 'pexpire' command\r\n");
        assert_eq!(r[8], "-ERR invalid expire time in 'expireat' command\r\n");
        assert_eq!(r[9], ":0\r\n");
        assert_eq!(r[10], ":1\r\n");
        assert_eq!(r[11], ":9223372036854775807\r\n");
        assert_eq!(r[12], ":1\r\n", "a past deadline deletes and counts");
        assert_eq!(r[13], ":0\r\n");
        assert_eq!(r[15], ":1\r\n");
        assert_eq!(r[16], ":0\r\n");
        assert_eq!(r[18], ":1\r\n", "a deadline equal to now is already past");
        assert_eq!(r[19], ":0\r\n");
        assert_eq!(
            r[20],
            "-ERR wrong number of arguments for 'expire' command\r\n"
        );
    }

    #[test]
    fn ttl_family_and_persist() {
        let r = run(&[
            &["SET", "k", "v", "PX", "1499"],
            &["TTL", "k"],
            &["PTTL", "k"],
            &["EXPIRETIME", "k"],
            &["PEXPIRETIME", "k"],
            &["TTL", "missing"],
            &["PEXPIRETIME", "missing"],
            &["PERSIST", "k"],
            &["PERSIST", "k"],
            &["TTL", "k"],
            &["EXPIRETIME", "k"],
            &["PERSIST", "missing"],
            &["PEXPIRE", "k", "2500"],
            &["TTL", "k"],
        ]);
        assert_eq!(r[1], ":1\r\n", "1.499 s rounds to 1");
        assert_eq!(r[2], ":1499\r\n");
        assert_eq!(r[3], ":1001\r\n", "1001.499 s rounds to 1001");
        assert_eq!(r[4], ":1001499\r\n");
        assert_eq!(r[5], ":-2\r\n");
        assert_eq!(r[6], ":-2\r\n");
        assert_eq!(r[7], ":1\r\n");
        assert_eq!(r[8], ":0\r\n");
        assert_eq!(r[9], ":-1\r\n");
        assert_eq!(r[10], ":-1\r\n");
        assert_eq!(r[11], ":0\r\n");
        assert_eq!(r[13], ":3\r\n", "2.5 s rounds up");
    }

    #[test]
    fn expire_and_persist_bump_the_version() {
        let mut n = Node::new(&[]);
        n.run(&["SET", "k", "v"]);
        let slot = key_slot(b"k");
        let version = |n: &Node| {
            n.srv
                .ks
                .lock(n.srv.ks.shard_of(slot))
                .peek(0, slot, b"k", n.now_ms)
                .unwrap()
                .version()
        };
        let v0 = version(&n);
        n.run(&["EXPIRE", "k", "100"]);
        let v1 = version(&n);
        n.run(&["PERSIST", "k"]);
        let v2 = version(&n);
        assert!(v0 < v1 && v1 < v2, "{v0} {v1} {v2}");
        n.check_invariants();
    }

    /// Two keys whose slots live on different shards.
    fn keys_on_two_shards() -> (&'static str, &'static str) {
        let shards = crate::ServerState::new(Config::default(), 0, 1, Hooks::default())
            .ks
            .shard_count();
        let (a, b) = ("a", "b");
        assert_ne!(
            key_slot(a.as_bytes()) as usize % shards,
            key_slot(b.as_bytes()) as usize % shards
        );
        (a, b)
    }

    #[test]
    fn rename_across_shards_keeps_value_and_ttl() {
        let (a, b) = keys_on_two_shards();
        let mut n = Node::new(&[]);
        let r: Vec<String> = [
            &["SET", a, "1", "EX", "100"][..],
            &["RENAME", a, b],
            &["GET", b],
            &["TTL", b],
            &["EXISTS", a],
            &["RENAME", a, "x"],
            &["RENAMENX", a, "x"],
            &["RENAME", b, b],
            &["RENAMENX", b, b],
            &["SET", "c", "3"],
            &["RENAMENX", b, "c"],
            &["RENAMENX", b, a],
            &["GET", a],
            &["APPEND", a, "23"],
            &["RENAME", a, b],
            &["GET", b],
            &["OBJECT", "ENCODING", b],
            &["SET", "c", "old", "EX", "5"],
            &["RENAME", b, "c"],
            &["TTL", "c"],
        ]
        .iter()
        .map(|c| n.run(c))
        .collect();
        assert_eq!(r[1], "+OK\r\n");
        assert_eq!(r[2], "$1\r\n1\r\n");
        assert_eq!(r[3], ":100\r\n");
        assert_eq!(r[4], ":0\r\n");
        assert_eq!(r[5], "-ERR no such key\r\n");
        assert_eq!(r[6], "-ERR no such key\r\n");
        assert_eq!(r[7], "+OK\r\n");
        assert_eq!(r[8], ":0\r\n");
        assert_eq!(r[10], ":0\r\n");
        assert_eq!(r[11], ":1\r\n");
        assert_eq!(r[12], "$1\r\n1\r\n");
        assert_eq!(r[15], "$3\r\n123\r\n", "a raw string moves with its key");
        assert_eq!(r[16], "$3\r\nraw\r\n");
        assert_eq!(r[19], ":100\r\n", "the destination takes the source's TTL");
        n.check_invariants();
    }

    #[test]
    fn copy_within_and_across_databases() {
        let mut n = Node::new(&[]);
        let r: Vec<String> = [
            &["SET", "s", "v", "EX", "100"][..],
            &["COPY", "s", "d"],
            &["COPY", "s", "d"],
            &["SET", "s", "w"],
            &["COPY", "s", "d", "REPLACE"],
            &["GET", "d"],
            &["COPY", "s", "s"],
            &["COPY", "s", "s", "DB", "1"],
            &["COPY", "s", "d", "DB", "16"],
            &["COPY", "s", "d", "DB", "-1"],
            &["COPY", "s", "d", "DB", "x"],
            &["COPY", "s", "d", "DB", "4294967296"],
            &["COPY", "s", "d", "FOO"],
            &["COPY", "s", "d", "DB"],
            &["COPY", "missing", "d", "REPLACE"],
            &["SET", "t", "v", "EX", "100"],
            &["COPY", "t", "t2"],
            &["TTL", "t2"],
            &["SELECT", "1"],
            &["GET", "s"],
            &["COPY", "s", "s", "DB", "0"],
            &["COPY", "s", "s", "DB", "0", "REPLACE"],
        ]
        .iter()
        .map(|c| n.run(c))
        .collect();
        assert_eq!(r[1], ":1\r\n");
        assert_eq!(r[2], ":0\r\n");
        assert_eq!(r[4], ":1\r\n");
        assert_eq!(r[5], "$1\r\nw\r\n");
        assert_eq!(r[6], "-ERR source and destination objects are the same\r\n");
        assert_eq!(r[7], ":1\r\n");
        assert_eq!(r[8], "-ERR DB index is out of range\r\n");
        assert_eq!(r[9], "-ERR DB index is out of range\r\n");
        assert_eq!(r[10], "-ERR value is not an integer or out of range\r\n");
        assert_eq!(
            r[11],
            "-ERR value is out of range, must be between -2147483648 and 2147483647\r\n"
        );
        assert_eq!(r[12], "-ERR syntax error\r\n");
        assert_eq!(r[13], "-ERR syntax error\r\n");
        assert_eq!(r[14], ":0\r\n");
        assert_eq!(r[16], ":1\r\n");
        assert_eq!(r[17], ":100\r\n");
        assert_eq!(r[19], "$1\r\nw\r\n");
        assert_eq!(r[20], ":0\r\n");
        assert_eq!(r[21], ":1\r\n");
        n.check_invariants();
    }

    #[test]
    fn move_between_databases() {
        let r = run(&[
            &["SET", "k", "v", "EX", "100"],
            &["MOVE", "k", "0"],
            &["MOVE", "k", "16"],
            &["MOVE", "k", "x"],
            &["MOVE", "k", "1"],
            &["EXISTS", "k"],
            &["MOVE", "k", "1"],
            &["SET", "k", "v0"],
            &["SELECT", "1"],
            &["GET", "k"],
            &["TTL", "k"],
            &["MOVE", "k", "0"],
            &["GET", "k"],
        ]);
        assert_eq!(r[1], "-ERR source and destination objects are the same\r\n");
        assert_eq!(r[2], "-ERR DB index is out of range\r\n");
        assert_eq!(r[3], "-ERR value is not an integer or out of range\r\n");
        assert_eq!(r[4], ":1\r\n");
        assert_eq!(r[5], ":0\r\n");
        assert_eq!(r[6], ":0\r\n", "missing source");
        assert_eq!(r[9], "$1\r\nv\r\n");
        assert_eq!(r[10], ":100\r\n");
        assert_eq!(r[11], ":0\r\n", "target exists");
        assert_eq!(r[12], "$1\r\nv\r\n");
    }

    #[test]
    fn swapdb_swaps_for_every_client() {
        let mut n = Node::new(&[]);
        let r: Vec<String> = [
            &["MSET", "a", "0", "b", "0"][..],
            &["SELECT", "1"],
            &["SET", "a", "1"],
            &["SWAPDB", "0", "1"],
            &["MGET", "a", "b"],
            &["SELECT", "0"],
            &["MGET", "a", "b"],
            &["SWAPDB", "0", "0"],
            &["SWAPDB", "x", "1"],
            &["SWAPDB", "0", "x"],
            &["SWAPDB", "0", "16"],
            &["SWAPDB", "-1", "0"],
            &["SWAPDB", "0", "99999999999"],
        ]
        .iter()
        .map(|c| n.run(c))
        .collect();
        assert_eq!(r[3], "+OK\r\n");
        assert_eq!(r[4], "*2\r\n$1\r\n0\r\n$1\r\n0\r\n");
        assert_eq!(r[6], "*2\r\n$1\r\n1\r\n$-1\r\n");
        assert_eq!(r[7], "+OK\r\n");
        assert_eq!(r[8], "-ERR invalid first DB index\r\n");
        assert_eq!(r[9], "-ERR invalid second DB index\r\n");
        assert_eq!(r[10], "-ERR DB index is out of range\r\n");
        assert_eq!(r[11], "-ERR DB index is out of range\r\n");
        assert_eq!(r[12], "-ERR invalid second DB index\r\n");
        n.check_invariants();
    }

    #[test]
    fn keys_lists_matching_live_keys() {
        let mut n = Node::new(&[]);
        n.run(&[
            "MSET", "user:1", "a", "user:2", "b", "user:10", "c", "other", "d",
        ]);
        n.run(&["SET", "user:3", "x", "PX", "10"]);
        n.now_ms += 10;
        assert_eq!(
            sorted(&n.run(&["KEYS", "*"])),
            ["other", "user:1", "user:10", "user:2"]
        );
        assert_eq!(sorted(&n.run(&["KEYS", "user:?"])), ["user:1", "user:2"]);
        assert_eq!(sorted(&n.run(&["KEYS", "user:[^1]*"])), ["user:2"]);
        assert_eq!(n.run(&["KEYS", "USER*"]), "*0\r\n");
        n.run(&["SELECT", "3"]);
        assert_eq!(n.run(&["KEYS", "*"]), "*0\r\n");
    }

    #[test]
    fn scan_returns_every_key_exactly_once() {
        let mut n = Node::new(&[]);
        let all: BTreeSet<String> = (0..2000).map(|i| format!("key:{i}")).collect();
        for k in &all {
            n.run(&["SET", k, "v"]);
        }
        let mut seen = Vec::new();
        let mut cursor = "0".to_string();
        let mut calls = 0;
        loop {
            calls += 1;
            assert!(calls <= SLOTS, "SCAN did not finish");
            let reply = bulks(&n.run(&["SCAN", &cursor, "COUNT", "7"]));
            cursor = reply[0].clone();
            seen.extend(reply[1..].iter().cloned());
            if cursor == "0" {
                break;
            }
        }
        assert_eq!(seen.len(), all.len(), "no duplicates");
        assert_eq!(seen.into_iter().collect::<BTreeSet<_>>(), all);
        assert!(calls < 2000 / 7 + 10, "{calls} calls");
    }

    #[test]
    fn scan_options_and_errors() {
        let mut n = Node::new(&[]);
        n.run(&["MSET", "a1", "x", "a2", "x", "b1", "x"]);
        let full = |n: &mut Node, extra: &[&str]| {
            let mut keys = Vec::new();
            let mut cursor = "0".to_string();
            for _ in 0..SLOTS {
                let mut cmd = vec!["SCAN", cursor.as_str()];
                cmd.extend_from_slice(extra);
                let reply = bulks(&n.run(&cmd));
                keys.extend(reply[1..].iter().cloned());
                cursor = reply[0].clone();
                if cursor == "0" {
                    break;
                }
            }
            keys.sort();
            keys
        };
        assert_eq!(full(&mut n, &["MATCH", "a*"]), ["a1", "a2"]);
        assert_eq!(
            full(&mut n, &["TYPE", "STRING", "COUNT", "1000"]),
            ["a1", "a2", "b1"]
        );
        assert!(full(&mut n, &["TYPE", "hash"]).is_empty());
        // An empty database finishes in one call, as in Redis.
        n.run(&["SELECT", "2"]);
        let mut cursor = "0".to_string();
        let mut calls = 0;
        loop {
            calls += 1;
            let reply = n.run(&["SCAN", &cursor]);
            cursor = bulks(&reply)[0].clone();
            if cursor == "0" {
                assert!(reply.ends_with("*0\r\n"));
                break;
            }
        }
        assert_eq!(calls, 1);
        let r: Vec<String> = [
            &["SCAN", "x"][..],
            &["SCAN", "-"],
            &["SCAN", "99999999999999999999999"],
            &["SCAN", "0", "COUNT", "0"],
            &["SCAN", "0", "COUNT", "x"],
            &["SCAN", "0", "MATCH"],
            &["SCAN", "0", "FOO", "bar"],
            &["SCAN", "16384"],
            &["SCAN", "-1"],
        ]
        .iter()
        .map(|c| n.run(c))
        .collect();
        assert_eq!(r[0], "-ERR invalid cursor\r\n");
        assert_eq!(r[1], "-ERR invalid cursor\r\n");
        assert_eq!(r[2], "-ERR invalid cursor\r\n");
        assert_eq!(r[3], "-ERR syntax error\r\n");
        assert_eq!(r[4], "-ERR value is not an integer or out of range\r\n");
        assert_eq!(r[5], "-ERR syntax error\r\n");
        assert_eq!(r[6], "-ERR syntax error\r\n");
        assert_eq!(r[7], "*2\r\n$1\r\n0\r\n*0\r\n");
        assert_eq!(r[8], "*2\r\n$1\r\n0\r\n*0\r\n");
    }

    #[test]
    fn randomkey_returns_a_live_key_or_nil() {
        let mut n = Node::new(&[]);
        assert_eq!(n.run(&["RANDOMKEY"]), "$-1\r\n");
        n.run(&["MSET", "a", "1", "b", "2", "c", "3"]);
        n.run(&["SET", "gone", "x", "PX", "1"]);
        n.now_ms += 1;
        let mut seen = BTreeSet::new();
        for _ in 0..200 {
            seen.insert(bulks(&n.run(&["RANDOMKEY"]))[0].clone());
        }
        assert_eq!(seen, ["a", "b", "c"].map(String::from).into());
    }

    #[test]
    fn object_subcommands() {
        let long = "x".repeat(45);
        let r = run(&[
            &["MSET", "i", "12345", "e", "hello", "r", &long],
            &["OBJECT", "ENCODING", "i"],
            &["OBJECT", "ENCODING", "e"],
            &["OBJECT", "ENCODING", "r"],
            &["OBJECT", "ENCODING", "missing"],
            &["OBJECT", "REFCOUNT", "e"],
            &["OBJECT", "REFCOUNT", "missing"],
            &["OBJECT", "FREQ", "e"],
            &["OBJECT", "FREQ", "missing"],
            &["OBJECT", "IDLETIME", "missing"],
            &["OBJECT", "ENCODING"],
            &["OBJECT", "NOPE", "e"],
            &["OBJECT", "HELP"],
            &["OBJECT"],
        ]);
        assert_eq!(r[1], "$3\r\nint\r\n");
        assert_eq!(r[2], "$6\r\nembstr\r\n");
        assert_eq!(r[3], "$3\r\nraw\r\n");
        assert_eq!(r[4], "$-1\r\n");
        assert_eq!(r[5], ":1\r\n");
        assert_eq!(r[6], "$-1\r\n");
        assert_eq!(
            r[7],
            "-ERR An LFU maxmemory policy is not selected, access frequency not tracked. Please note that when switching between policies at runtime LRU and LFU data will take some time to adjust.\r\n"
        );
        assert_eq!(
            r[8], "$-1\r\n",
            "a missing key replies nil before the policy check"
        );
        assert_eq!(r[9], "$-1\r\n");
        assert_eq!(
            r[10],
            "-ERR wrong number of arguments for 'object|encoding' command\r\n"
        );
        assert_eq!(
            r[11],
            "-ERR unknown subcommand 'NOPE'. Try OBJECT HELP.\r\n"
        );
        assert!(r[12].starts_with(
            "*15\r\n+OBJECT <subcommand> [<arg> [value] [opt] ...]. Subcommands are:\r\n"
        ));
        assert!(r[12].ends_with("+HELP\r\n+    Prints this help.\r\n"));
        assert_eq!(
            r[13],
            "-ERR wrong number of arguments for 'object' command\r\n"
        );
    }

    #[test]
    fn object_idletime_does_not_touch_the_key() {
        let mut n = Node::new(&[("maxmemory", "1gb"), ("maxmemory-policy", "allkeys-lru")]);
        n.run(&["SET", "k", "v"]);
        n.now_ms += 10_000;
        assert_eq!(n.run(&["OBJECT", "IDLETIME", "k"]), ":10\r\n");
        assert_eq!(n.run(&["TTL", "k"]), ":-1\r\n");
        assert_eq!(n.run(&["TYPE", "k"]), "+string\r\n");
        assert_eq!(n.run(&["OBJECT", "IDLETIME", "k"]), ":10\r\n");
        n.run(&["GET", "k"]);
        assert_eq!(n.run(&["OBJECT", "IDLETIME", "k"]), ":0\r\n");
    }

    #[test]
    fn object_freq_under_lfu() {
        let mut n = Node::new(&[("maxmemory", "1gb"), ("maxmemory-policy", "allkeys-lfu")]);
        n.run(&["SET", "k", "v"]);
        assert_eq!(n.run(&["OBJECT", "FREQ", "k"]), ":5\r\n");
        assert_eq!(
            n.run(&["OBJECT", "IDLETIME", "k"]),
            "-ERR An LFU maxmemory policy is selected, idle time not tracked. Please note that when switching between policies at runtime LRU and LFU data will take some time to adjust.\r\n"
        );
        let payload = n.call(&[b"DUMP", b"k"]);
        let payload =
            &payload[payload.iter().position(|&b| b == b'\n').unwrap() + 1..payload.len() - 2];
        assert_eq!(
            n.call(&[b"RESTORE", b"j", b"0", payload, b"FREQ", b"100"]),
            b"+OK\r\n"
        );
        assert_eq!(n.run(&["OBJECT", "FREQ", "j"]), ":100\r\n");
        // RENAME and MOVE keep the value's access history (one touch may add 1).
        n.run(&["RENAME", "j", "m"]);
        n.run(&["MOVE", "m", "1"]);
        n.run(&["SELECT", "1"]);
        let freq = n.run(&["OBJECT", "FREQ", "m"]);
        assert!(
            freq == ":100\r\n" || freq == ":101\r\n" || freq == ":102\r\n",
            "{freq}"
        );
    }

    /// The payload of a `$n\r\n...\r\n` reply.
    fn bulk_bytes(reply: &[u8]) -> Vec<u8> {
        let start = reply.iter().position(|&b| b == b'\n').unwrap() + 1;
        reply[start..reply.len() - 2].to_vec()
    }

    #[test]
    fn dump_restore_round_trip_and_errors() {
        let mut n = Node::new(&[]);
        let value: &[u8] = b"hel\x00lo\xff\r\n";
        n.call(&[b"SET", b"k", value]);
        let payload = bulk_bytes(&n.call(&[b"DUMP", b"k"]));
        let p = payload.as_slice();
        assert_eq!(
            n.call(&[b"RESTORE", b"k", b"0", p]),
            b"-BUSYKEY Target key name already exists.\r\n"
        );
        assert_eq!(n.call(&[b"RESTORE", b"k2", b"0", p]), b"+OK\r\n");
        assert_eq!(bulk_bytes(&n.call(&[b"GET", b"k2"])), value);
        assert_eq!(n.run(&["TTL", "k2"]), ":-1\r\n");
        assert_eq!(
            n.call(&[b"RESTORE", b"k2", b"5000", p, b"REPLACE"]),
            b"+OK\r\n"
        );
        assert_eq!(n.run(&["PTTL", "k2"]), ":5000\r\n");
        assert_eq!(
            n.call(&[
                b"RESTORE",
                b"k3",
                b"2000000",
                p,
                b"ABSTTL",
                b"IDLETIME",
                b"7"
            ]),
            b"+OK\r\n"
        );
        assert_eq!(n.run(&["PEXPIRETIME", "k3"]), ":2000000\r\n");
        // An absolute deadline in the past: OK, and the key is absent (replaced or not).
        assert_eq!(
            n.call(&[b"RESTORE", b"k3", b"1", p, b"ABSTTL", b"REPLACE"]),
            b"+OK\r\n"
        );
        assert_eq!(n.run(&["EXISTS", "k3"]), ":0\r\n");
        assert_eq!(n.run(&["DUMP", "missing"]), "$-1\r\n");

        let mut corrupt = payload.clone();
        corrupt[2] ^= 1;
        let mut other_version = payload.clone();
        let at = other_version.len() - 10;
        other_version[at] = 10;
        let r: Vec<Vec<u8>> = [
            &[&b"RESTORE"[..], b"x", b"0", &corrupt][..],
            &[b"RESTORE", b"x", b"0", &other_version],
            &[b"RESTORE", b"x", b"0", b"short"],
            &[b"RESTORE", b"x", b"-1", p],
            &[b"RESTORE", b"x", b"ttl", p],
            &[b"RESTORE", b"x", b"0", p, b"IDLETIME", b"-1"],
            &[b"RESTORE", b"x", b"0", p, b"FREQ", b"256"],
            &[b"RESTORE", b"x", b"0", p, b"IDLETIME", b"1", b"FREQ", b"1"],
            &[b"RESTORE", b"x", b"0", p, b"IDLETIME"],
            &[b"RESTORE", b"x", b"0", p, b"NOPE"],
            &[b"RESTORE", b"k", b"-1", p],
        ]
        .iter()
        .map(|c| n.call(c))
        .collect();
        let bad = b"-ERR DUMP payload version or checksum are wrong\r\n".to_vec();
        assert_eq!(r[0], bad);
        assert_eq!(r[1], bad);
        assert_eq!(r[2], bad);
        assert_eq!(r[3], b"-ERR Invalid TTL value, must be >= 0\r\n");
        assert_eq!(r[4], b"-ERR value is not an integer or out of range\r\n");
        assert_eq!(r[5], b"-ERR Invalid IDLETIME value, must be >= 0\r\n");
        assert_eq!(
            r[6],
            b"-ERR Invalid FREQ value, must be >= 0 and <= 255\r\n"
        );
        assert_eq!(r[7], b"-ERR syntax error\r\n");
        assert_eq!(r[8], b"-ERR syntax error\r\n");
        assert_eq!(r[9], b"-ERR syntax error\r\n");
        assert_eq!(
            r[10], b"-BUSYKEY Target key name already exists.\r\n",
            "busy key is checked before the TTL"
        );
        assert_eq!(n.run(&["EXISTS", "x"]), ":0\r\n");
        n.check_invariants();
    }

    #[test]
    fn restore_idletime_sets_the_lru_clock() {
        let mut n = Node::new(&[("maxmemory", "1gb"), ("maxmemory-policy", "allkeys-lru")]);
        n.run(&["SET", "k", "v"]);
        let p = bulk_bytes(&n.call(&[b"DUMP", b"k"]));
        assert_eq!(
            n.call(&[b"RESTORE", b"j", b"0", &p, b"IDLETIME", b"1000"]),
            b"+OK\r\n"
        );
        assert_eq!(n.run(&["OBJECT", "IDLETIME", "j"]), ":1000\r\n");
    }

    #[test]
    fn payload_format() {
        assert_eq!(crc64(b"123456789"), 0xe9c6_d914_c4b8_d9ca);
        for value in [&b""[..], b"1", &[7u8; 300], &vec![b'z'; 70_000]] {
            let mut e = Entry::new_string(b"k", value, Some(5), 3);
            let p = dump_value(&e);
            let back = restore_value(&p, b"other", None, 9, &EncodingLimits::default()).unwrap();
            assert_eq!(back.string(), Some(value));
            assert_eq!(
                (back.key(), back.expire_ms(), back.version()),
                (&b"other"[..], None, 9)
            );
            e.make_raw_string().unwrap();
            assert_eq!(
                dump_value(&e),
                p,
                "the encoding does not change the payload"
            );
        }
        // A well-formed footer around a body that does not decode.
        let mut p = vec![99u8, 0];
        p.extend_from_slice(&DUMP_VERSION.to_le_bytes());
        let crc = crc64(&p);
        p.extend_from_slice(&crc.to_le_bytes());
        assert_eq!(
            restore_value(&p, b"k", None, 1, &EncodingLimits::default()).unwrap_err(),
            PayloadError::BadFormat
        );
        let mut p = vec![codec::TYPE_STRING, 5, b'a'];
        p.extend_from_slice(&DUMP_VERSION.to_le_bytes());
        let crc = crc64(&p);
        p.extend_from_slice(&crc.to_le_bytes());
        assert_eq!(
            restore_value(&p, b"k", None, 1, &EncodingLimits::default()).unwrap_err(),
            PayloadError::BadFormat
        );
    }

    #[test]
    fn table_flags_and_key_positions() {
        let spec = |name: &str| crate::table::lookup(name.as_bytes()).unwrap();
        let positions = |s: &crate::Spec, req: &[&str]| {
            let o = crate::OwnedArgs::new(req.iter());
            crate::keyspec::keys(s, &o.args()).map(|k| k.positions().collect::<Vec<_>>())
        };
        assert_eq!(
            positions(spec("del"), &["del", "a", "b", "c"]),
            Ok(vec![1, 2, 3])
        );
        assert_eq!(
            positions(spec("rename"), &["rename", "a", "b"]),
            Ok(vec![1, 2])
        );
        let copy = ["copy", "a", "b", "db", "1", "replace"];
        assert_eq!(positions(spec("copy"), &copy), Ok(vec![1, 2]));
        assert_eq!(
            positions(spec("scan"), &["scan", "0", "count", "1"]),
            Ok(vec![])
        );
        assert!(spec("exists").has(READONLY) && spec("exists").has(FAST));
        assert!(spec("restore").has(DENYOOM));
        let object = spec("object");
        let enc = object.find_sub(b"encoding").unwrap();
        assert_eq!(enc.name, "object|encoding");
        assert_eq!(positions(enc, &["object", "encoding", "k"]), Ok(vec![2]));
    }
}
