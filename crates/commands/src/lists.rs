//! List commands: LPUSH/RPUSH(X), LPOP/RPOP, LLEN, LRANGE, LINDEX, LSET, LINSERT, LREM, LTRIM,
//! LPOS, LMOVE, RPOPLPUSH, LMPOP. Replies, errors and the order in which they are checked follow
//! redis-server 7.0 (`t_list.c`), including which arguments are parsed before the key is looked up.
//!
//! The blocking variants (BLPOP, BRPOP, BLMOVE, BRPOPLPUSH, BLMPOP) live with the blocking
//! machinery; they reuse the non-blocking work here through [`pop_first_nonempty`] and
//! [`lmove_locked`], which run under locks the caller holds and write no reply of their own
//! beyond what they are asked to.
//!
//! Every write stamps the key with the command's version; a list that becomes empty is deleted.
//! Commands that add elements to a list (the pushes, LINSERT, LMOVE/RPOPLPUSH's destination) are
//! the ones that can serve a blocked client.

use crate::err;
use crate::error::ReplyError;
use shoal_keyspace::{EncodingLimits, Entry, Object, Payload, Shard, ValueRef, types::list::List};
use shoal_resp::ReplyWriter;

use crate::args::{ERR_NO_SUCH_KEY, ERR_SYNTAX, parse_i64};
use crate::notify;
use crate::table::{FindKeys, Group, KeySpec, Spec, flag::*, key::*};
use crate::{Args, CmdResult, Ctx, Locked};

const LIST: Group = Group::List;

pub static COMMANDS: &[Spec] = &[
    Spec {
        name: "lindex",
        arity: 3,
        flags: READONLY,
        keys: &[KeySpec::at(1, RO | ACCESS)],
        group: LIST,
        since: "1.0.0",
        summary: "Returns an element from a list by its index.",
        handler: Some(lindex),
        ..Spec::DEFAULT
    },
    Spec {
        name: "linsert",
        arity: 5,
        flags: WRITE | DENYOOM,
        keys: &[KeySpec::at(1, RW | INSERT)],
        group: LIST,
        since: "2.2.0",
        summary: "Inserts an element before or after another element in a list.",
        handler: Some(linsert),
        ..Spec::DEFAULT
    },
    Spec {
        name: "llen",
        arity: 2,
        flags: READONLY | FAST,
        keys: &[KeySpec::at(1, RO)],
        group: LIST,
        since: "1.0.0",
        summary: "Returns the length of a list.",
        handler: Some(llen),
        ..Spec::DEFAULT
    },
    Spec {
        name: "lmove",
        arity: 5,
        flags: WRITE | DENYOOM,
        keys: &[
            KeySpec::at(1, RW | ACCESS | DELETE),
            KeySpec::at(2, RW | INSERT),
        ],
        group: LIST,
        since: "6.2.0",
        summary: "Returns an element after popping it from one list and pushing it to another. Deletes the list if the last element was moved.",
        handler: Some(lmove),
        ..Spec::DEFAULT
    },
    // Keys follow `numkeys`, so the legacy triple is empty, as Redis reports it.
    Spec {
        name: "lmpop",
        arity: -4,
        flags: WRITE | MOVABLEKEYS,
        keys: &[KeySpec::at(1, RW | ACCESS | DELETE).find(FindKeys::Keynum {
            keynum_idx: 0,
            first_key: 1,
            step: 1,
        })],
        group: LIST,
        since: "7.0.0",
        summary: "Returns multiple elements from a list after removing them. Deletes the list if the last element was popped.",
        handler: Some(lmpop),
        ..Spec::DEFAULT
    },
    Spec {
        name: "lpop",
        arity: -2,
        flags: WRITE | FAST,
        keys: &[KeySpec::at(1, RW | ACCESS | DELETE)],
        group: LIST,
        since: "1.0.0",
        summary: "Returns the first elements in a list after removing it. Deletes the list if the last element was popped.",
        handler: Some(lpop),
        ..Spec::DEFAULT
    },
    Spec {
        name: "lpos",
        arity: -3,
        flags: READONLY,
        keys: &[KeySpec::at(1, RO | ACCESS)],
        group: LIST,
        since: "6.0.6",
        summary: "Returns the index of matching elements in a list.",
        handler: Some(lpos),
        ..Spec::DEFAULT
    },
    Spec {
        name: "lpush",
        arity: -3,
        flags: WRITE | DENYOOM | FAST,
        keys: &[KeySpec::at(1, RW | INSERT)],
        group: LIST,
        since: "1.0.0",
        summary: "Prepends one or more elements to a list. Creates the key if it doesn't exist.",
        handler: Some(lpush),
        ..Spec::DEFAULT
    },
    Spec {
        name: "lpushx",
        arity: -3,
        flags: WRITE | DENYOOM | FAST,
        keys: &[KeySpec::at(1, RW | INSERT)],
        group: LIST,
        since: "2.2.0",
        summary: "Prepends one or more elements to a list only when the list exists.",
        handler: Some(lpushx),
        ..Spec::DEFAULT
    },
    Spec {
        name: "lrange",
        arity: 4,
        flags: READONLY,
        keys: &[KeySpec::at(1, RO | ACCESS)],
        group: LIST,
        since: "1.0.0",
        summary: "Returns a range of elements from a list.",
        handler: Some(lrange),
        ..Spec::DEFAULT
    },
    Spec {
        name: "lrem",
        arity: 4,
        flags: WRITE,
        keys: &[KeySpec::at(1, RW | DELETE)],
        group: LIST,
        since: "1.0.0",
        summary: "Removes elements from a list. Deletes the list if the last element was removed.",
        handler: Some(lrem),
        ..Spec::DEFAULT
    },
    Spec {
        name: "lset",
        arity: 4,
        flags: WRITE | DENYOOM,
        keys: &[KeySpec::at(1, RW | UPDATE)],
        group: LIST,
        since: "1.0.0",
        summary: "Sets the value of an element in a list by its index.",
        handler: Some(lset),
        ..Spec::DEFAULT
    },
    Spec {
        name: "ltrim",
        arity: 4,
        flags: WRITE,
        keys: &[KeySpec::at(1, RW | DELETE)],
        group: LIST,
        since: "1.0.0",
        summary: "Removes elements from both ends a list. Deletes the list if all elements were trimmed.",
        handler: Some(ltrim),
        ..Spec::DEFAULT
    },
    Spec {
        name: "rpop",
        arity: -2,
        flags: WRITE | FAST,
        keys: &[KeySpec::at(1, RW | ACCESS | DELETE)],
        group: LIST,
        since: "1.0.0",
        summary: "Returns and removes the last elements of a list. Deletes the list if the last element was popped.",
        handler: Some(rpop),
        ..Spec::DEFAULT
    },
    Spec {
        name: "rpoplpush",
        arity: 3,
        flags: WRITE | DENYOOM,
        keys: &[
            KeySpec::at(1, RW | ACCESS | DELETE),
            KeySpec::at(2, RW | INSERT),
        ],
        group: LIST,
        since: "1.2.0",
        summary: "Returns the last element of a list after removing and pushing it to another list. Deletes the list if the last element was popped.",
        handler: Some(rpoplpush),
        ..Spec::DEFAULT
    },
    Spec {
        name: "rpush",
        arity: -3,
        flags: WRITE | DENYOOM | FAST,
        keys: &[KeySpec::at(1, RW | INSERT)],
        group: LIST,
        since: "1.0.0",
        summary: "Appends one or more elements to a list. Creates the key if it doesn't exist.",
        handler: Some(rpush),
        ..Spec::DEFAULT
    },
    Spec {
        name: "rpushx",
        arity: -3,
        flags: WRITE | DENYOOM | FAST,
        keys: &[KeySpec::at(1, RW | INSERT)],
        group: LIST,
        since: "2.2.0",
        summary: "Appends an element to a list only when the list exists.",
        handler: Some(rpushx),
        ..Spec::DEFAULT
    },
];

const ERR_POSITIVE: ReplyError = ReplyError::err_static("value is out of range, must be positive");
const ERR_INDEX: ReplyError = ReplyError::err_static("index out of range");
const ERR_NUMKEYS: ReplyError = ReplyError::err_static("numkeys should be greater than 0");
const ERR_COUNT_ZERO: ReplyError = ReplyError::err_static("count should be greater than 0");
const ERR_RANK_ZERO: ReplyError = ReplyError::err_static(
    "RANK can't be zero: use 1 to start from the first match, 2 from the second ... or use negative to start from the end of the list",
);
const ERR_COUNT_NEGATIVE: ReplyError = ReplyError::err_static("COUNT can't be negative");
const ERR_MAXLEN_NEGATIVE: ReplyError = ReplyError::err_static("MAXLEN can't be negative");

// ---- shared helpers (also for the blocking commands) ----

/// An end of a list: `LEFT` is the head, `RIGHT` the tail.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum End {
    Left,
    Right,
}

impl End {
    /// Parses `LEFT` / `RIGHT` (any case); `None` means Redis's `-ERR syntax error`.
    pub fn parse(arg: &[u8]) -> Option<End> {
        if arg.eq_ignore_ascii_case(b"left") {
            Some(End::Left)
        } else if arg.eq_ignore_ascii_case(b"right") {
            Some(End::Right)
        } else {
            None
        }
    }
}

/// The list an entry holds, or Redis's WRONGTYPE error.
fn list_mut(e: &mut Entry) -> Result<&mut List, ReplyError> {
    match e.object_mut() {
        Some(Object::List(l)) => Ok(l),
        _ => Err(ReplyError::WrongType),
    }
}

fn list_ref(e: &Entry) -> Result<&List, ReplyError> {
    match e.value() {
        ValueRef::Obj(Object::List(l)) => Ok(l),
        _ => Err(ReplyError::WrongType),
    }
}

fn push(l: &mut List, end: End, v: &[u8]) {
    match end {
        End::Left => l.push_front(v),
        End::Right => l.push_back(v),
    }
}

/// Pops up to `n` elements from `end`, handing each to `f` in pop order.
fn pop_with(l: &mut List, end: End, n: usize, f: impl FnMut(&[u8])) -> usize {
    match end {
        End::Left => l.pop_front_with(n, f),
        End::Right => l.pop_back_with(n, f),
    }
}

/// Stores a new list under `key` (which must be absent or replaceable).
fn insert_list(
    shard: &mut Shard,
    db: usize,
    slot: u16,
    key: &[u8],
    l: List,
    version: u64,
    now_ms: u64,
) {
    debug_assert!(!l.is_empty(), "Redis never stores an empty list");
    let e = Entry::new(
        key,
        Payload::Object(Box::new(Object::List(l))),
        None,
        None,
        version,
        0,
    );
    shard.insert(db, slot, e, now_ms);
}

/// Pushes `values` (all of them, in order) onto the list at `key`, creating it unless
/// `only_existing`. Returns the new length, or `None` when the key is absent and `only_existing`.
#[allow(clippy::too_many_arguments)]
fn push_values(
    shard: &mut Shard,
    db: usize,
    slot: u16,
    key: &[u8],
    values: Args<'_>,
    end: End,
    only_existing: bool,
    limits: &EncodingLimits,
    version: u64,
    now_ms: u64,
) -> Result<Option<usize>, ReplyError> {
    let fill = |l: &mut List| {
        // One allocation for the batch when it fits the end node.
        l.reserve(end == End::Left, values.iter().map(|v| v.len()));
        for v in values.iter() {
            push(l, end, v);
        }
        l.len()
    };
    let pushed = match shard.lookup(db, slot, key, now_ms, true) {
        Some(mut e) => {
            let len = fill(list_mut(&mut e)?);
            let mut ops = e.ops();
            for v in values.iter() {
                ops.push(end == End::Left, v);
            }
            e.note(ops);
            e.set_version(version);
            Some(len)
        }
        None => None,
    };
    if let Some(len) = pushed {
        shard.note(notify::LIST, push_event(end), db, key);
        return Ok(Some(len));
    }
    if only_existing {
        return Ok(None);
    }
    let mut l = List::new(limits);
    let len = fill(&mut l);
    insert_list(shard, db, slot, key, l, version, now_ms);
    shard.note(notify::LIST, push_event(end), db, key);
    Ok(Some(len))
}

/// The event of a push at `end`.
fn push_event(end: End) -> &'static str {
    match end {
        End::Left => "lpush",
        End::Right => "rpush",
    }
}

/// The event of a pop from `end`.
fn pop_event(end: End) -> &'static str {
    match end {
        End::Left => "lpop",
        End::Right => "rpop",
    }
}

/// Notes a pop from the list at `key`, and its deletion if the pop emptied it (Redis's
/// `listElementsRemoved`).
fn note_popped(shard: &Shard, db: usize, key: &[u8], end: End, emptied: bool) {
    shard.note(notify::LIST, pop_event(end), db, key);
    if emptied {
        shard.note(notify::GENERIC, "del", db, key);
    }
}

/// Which reply [`pop_first_nonempty`] writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PopReply {
    /// `[key, element]`: BLPOP / BRPOP (one element is popped whatever `count` says).
    KeyElement,
    /// `[key, [element, ...]]`: LMPOP / BLMPOP.
    KeyElements,
}

/// The non-blocking half of LMPOP, BLPOP, BRPOP and BLMPOP: pops up to `count` elements (at least
/// one) from `end` of the first key in `keys` holding a list, writes the reply in `shape` to `out`
/// and returns `Ok(true)`. Missing keys are skipped; `Ok(false)` (nothing written) means every key
/// is missing, which is when a blocking command blocks and LMPOP replies a null array. A key of
/// another type met before a list is `Err(WRONGTYPE)` (nothing written), as in Redis.
///
/// The caller holds the shards of all `keys` (`ctx.lock_keys`) and takes `version` after locking
/// (`ctx.version()`). The popped key gets `version`, or is deleted if it became empty.
#[allow(clippy::too_many_arguments)]
pub fn pop_first_nonempty(
    locked: &mut Locked<'_>,
    db: usize,
    now_ms: u64,
    version: u64,
    keys: &[&[u8]],
    end: End,
    count: usize,
    shape: PopReply,
    out: &mut ReplyWriter<'_>,
) -> Result<bool, ReplyError> {
    for &key in keys {
        let (shard, slot) = locked.shard(key);
        let emptied = {
            let Some(mut e) = shard.lookup(db, slot, key, now_ms, true) else {
                continue;
            };
            let l = list_mut(&mut e)?;
            out.array(2);
            out.bulk(key);
            let n = match shape {
                PopReply::KeyElement => 1,
                PopReply::KeyElements => {
                    let n = count.max(1).min(l.len());
                    out.array(n);
                    n
                }
            };
            let popped = pop_with(l, end, n, |v| out.bulk(v));
            let emptied = l.is_empty();
            let mut ops = e.ops();
            ops.pop(end == End::Left, popped);
            e.note(ops);
            e.set_version(version);
            emptied
        };
        if emptied {
            shard.remove(db, slot, key);
        }
        note_popped(shard, db, key, end, emptied);
        return Ok(true);
    }
    Ok(false)
}

/// The non-blocking half of LMOVE, RPOPLPUSH, BLMOVE and BRPOPLPUSH: pops an element from `from`
/// of `src` and pushes it on `to` of `dst` (creating `dst`), returning it; `Ok(None)` if `src` is
/// missing (a blocking caller blocks, LMOVE replies null). `Err(WRONGTYPE)` if `src` is not a
/// list, or `src` exists and `dst` is not a list; nothing changes then. Writes no reply.
///
/// The caller holds the shards of `src` and `dst` (`ctx.lock_keys`) and takes `version` after
/// locking. `src == dst` rotates the list (it is never deleted on the way).
#[allow(clippy::too_many_arguments)]
pub fn lmove_locked(
    locked: &mut Locked<'_>,
    db: usize,
    now_ms: u64,
    version: u64,
    limits: &EncodingLimits,
    src: &[u8],
    dst: &[u8],
    from: End,
    to: End,
) -> Result<Option<Vec<u8>>, ReplyError> {
    {
        let (shard, slot) = locked.shard(src);
        let Some(e) = shard.lookup(db, slot, src, now_ms, true) else {
            return Ok(None);
        };
        list_ref(&e)?;
    }
    if src == dst {
        let (shard, slot) = locked.shard(src);
        let mut e = shard
            .lookup(db, slot, src, now_ms, true)
            .expect("looked up under the same lock");
        let l = list_mut(&mut e)?;
        let v = match from {
            End::Left => l.pop_front(),
            End::Right => l.pop_back(),
        }
        .expect("stored lists are never empty");
        push(l, to, &v);
        let mut ops = e.ops();
        ops.pop(from == End::Left, 1);
        ops.push(to == End::Left, &v);
        e.note(ops);
        e.set_version(version);
        drop(e);
        shard.note(notify::LIST, push_event(to), db, dst);
        shard.note(notify::LIST, pop_event(from), db, src);
        return Ok(Some(v));
    }
    {
        let (shard, slot) = locked.shard(dst);
        if let Some(e) = shard.peek(db, slot, dst, now_ms) {
            list_ref(e)?;
        }
    }
    let (v, emptied) = {
        let (shard, slot) = locked.shard(src);
        let mut e = shard
            .lookup(db, slot, src, now_ms, true)
            .expect("looked up under the same lock");
        let l = list_mut(&mut e)?;
        let v = match from {
            End::Left => l.pop_front(),
            End::Right => l.pop_back(),
        }
        .expect("stored lists are never empty");
        let emptied = l.is_empty();
        let mut ops = e.ops();
        ops.pop(from == End::Left, 1);
        e.note(ops);
        e.set_version(version);
        (v, emptied)
    };
    {
        let (shard, slot) = locked.shard(dst);
        let one = 0..v.len();
        push_values(
            shard,
            db,
            slot,
            dst,
            Args::new(&v, std::slice::from_ref(&one)),
            to,
            false,
            limits,
            version,
            now_ms,
        )?;
    }
    let (shard, slot) = locked.shard(src);
    if emptied {
        shard.remove(db, slot, src);
    }
    note_popped(shard, db, src, from, emptied);
    Ok(Some(v))
}

/// Resolves a possibly negative index against `len`; `None` if outside the list.
fn resolve_index(index: i64, len: usize) -> Option<usize> {
    let len = len as i64;
    let i = if index < 0 { len + index } else { index };
    (0..len).contains(&i).then_some(i as usize)
}

/// Redis's start/stop normalisation for LRANGE and LTRIM: the half-open range kept, or `None`
/// when it is empty.
fn resolve_range(start: i64, stop: i64, len: usize) -> Option<(usize, usize)> {
    let len = len as i64;
    let mut start = if start < 0 {
        len.saturating_add(start)
    } else {
        start
    };
    let mut stop = if stop < 0 {
        len.saturating_add(stop)
    } else {
        stop
    };
    if start < 0 {
        start = 0;
    }
    if start > stop || start >= len {
        return None;
    }
    if stop >= len {
        stop = len - 1;
    }
    Some((start as usize, stop as usize + 1))
}

// ---- pushes ----

fn push_generic(ctx: &mut Ctx<'_>, args: &Args<'_>, end: End, only_existing: bool) -> CmdResult {
    let key = args.get(1);
    let (db, now) = (ctx.client.db, ctx.now_ms);
    let limits = ctx.srv.encoding_limits();
    let (mut shard, slot) = ctx.shard(key);
    // Taken under the lock: later writes to a key get larger versions.
    let version = ctx.version();
    let len = push_values(
        &mut shard,
        db,
        slot,
        key,
        args.tail(2),
        end,
        only_existing,
        &limits,
        version,
        now,
    )?;
    drop(shard);
    ctx.out.int(len.unwrap_or(0) as i64);
    Ok(())
}

fn lpush(ctx: &mut Ctx<'_>, args: &Args<'_>) -> CmdResult {
    push_generic(ctx, args, End::Left, false)
}

fn rpush(ctx: &mut Ctx<'_>, args: &Args<'_>) -> CmdResult {
    push_generic(ctx, args, End::Right, false)
}

fn lpushx(ctx: &mut Ctx<'_>, args: &Args<'_>) -> CmdResult {
    push_generic(ctx, args, End::Left, true)
}

fn rpushx(ctx: &mut Ctx<'_>, args: &Args<'_>) -> CmdResult {
    push_generic(ctx, args, End::Right, true)
}

// ---- pops ----

fn pop_generic(ctx: &mut Ctx<'_>, args: &Args<'_>, end: End) -> CmdResult {
    if args.len() > 3 {
        return Err(err!(
            "wrong number of arguments for '{}' command",
            if end == End::Left { "lpop" } else { "rpop" }
        ));
    }
    // The count is parsed before the key is looked up (a bad count wins over WRONGTYPE).
    let count = if args.len() == 3 {
        match parse_i64(args.get(2)) {
            Some(c) if c >= 0 => Some(c as usize),
            _ => return Err(ERR_POSITIVE),
        }
    } else {
        None
    };
    let key = args.get(1);
    let (db, now) = (ctx.client.db, ctx.now_ms);
    let (mut shard, slot) = ctx.shard(key);
    let version = ctx.version();
    let emptied = {
        let Some(mut e) = shard.lookup(db, slot, key, now, true) else {
            drop(shard);
            // LPOP key count on a missing key is a null array, LPOP key a null bulk.
            match count {
                Some(_) => ctx.out.null_array(),
                None => ctx.out.null(),
            }
            return Ok(());
        };
        let l = list_mut(&mut e)?;
        let out = &mut ctx.out;
        let popped = match count {
            // An existing list and COUNT 0: an empty array, nothing popped, nothing written.
            Some(0) => {
                out.array(0);
                return Ok(());
            }
            Some(c) => {
                out.array(c.min(l.len()));
                pop_with(l, end, c, |v| out.bulk(v))
            }
            None => pop_with(l, end, 1, |v| out.bulk(v)),
        };
        let emptied = l.is_empty();
        let mut ops = e.ops();
        ops.pop(end == End::Left, popped);
        e.note(ops);
        e.set_version(version);
        emptied
    };
    if emptied {
        shard.remove(db, slot, key);
    }
    note_popped(&shard, db, key, end, emptied);
    Ok(())
}

fn lpop(ctx: &mut Ctx<'_>, args: &Args<'_>) -> CmdResult {
    pop_generic(ctx, args, End::Left)
}

fn rpop(ctx: &mut Ctx<'_>, args: &Args<'_>) -> CmdResult {
    pop_generic(ctx, args, End::Right)
}

fn lmpop(ctx: &mut Ctx<'_>, args: &Args<'_>) -> CmdResult {
    let (keys, end, count) = parse_mpop(args, 1)?;
    let (db, now) = (ctx.client.db, ctx.now_ms);
    let mut locked = ctx.lock_keys(keys.iter().copied());
    let version = ctx.version();
    let found = pop_first_nonempty(
        &mut locked,
        db,
        now,
        version,
        &keys,
        end,
        count,
        PopReply::KeyElements,
        &mut ctx.out,
    )?;
    drop(locked);
    if !found {
        ctx.out.null_array();
    }
    Ok(())
}

/// Parses `numkeys key [key ...] LEFT|RIGHT [COUNT count]` starting at `numkeys_at`, as LMPOP and
/// BLMPOP (with its timeout before `numkeys`) take it: the keys, the end, and the count (1 if
/// not given). Errors are Redis's, in its order.
pub fn parse_mpop<'a>(
    args: &Args<'a>,
    numkeys_at: usize,
) -> Result<(Vec<&'a [u8]>, End, usize), ReplyError> {
    let numkeys = match parse_i64(args.get(numkeys_at)) {
        Some(n) if n > 0 => n as usize,
        _ => return Err(ERR_NUMKEYS),
    };
    let where_at = numkeys_at
        .checked_add(numkeys)
        .and_then(|i| i.checked_add(1))
        .filter(|&i| i < args.len())
        .ok_or(ERR_SYNTAX)?;
    let end = End::parse(args.get(where_at)).ok_or(ERR_SYNTAX)?;
    let mut count = None;
    let mut j = where_at + 1;
    while j < args.len() {
        if count.is_none() && args.is(j, "COUNT") && j + 1 < args.len() {
            count = match parse_i64(args.get(j + 1)) {
                Some(c) if c > 0 => Some(c as usize),
                _ => return Err(ERR_COUNT_ZERO),
            };
            j += 2;
        } else {
            return Err(ERR_SYNTAX);
        }
    }
    let keys = (numkeys_at + 1..where_at).map(|i| args.get(i)).collect();
    Ok((keys, end, count.unwrap_or(1)))
}

// ---- moves ----

fn lmove_generic(ctx: &mut Ctx<'_>, src: &[u8], dst: &[u8], from: End, to: End) -> CmdResult {
    let (db, now) = (ctx.client.db, ctx.now_ms);
    let limits = ctx.srv.encoding_limits();
    let mut locked = ctx.lock_keys([src, dst].into_iter());
    let version = ctx.version();
    let moved = lmove_locked(&mut locked, db, now, version, &limits, src, dst, from, to)?;
    drop(locked);
    match moved {
        Some(v) => ctx.out.bulk(&v),
        None => ctx.out.null(),
    }
    Ok(())
}

fn lmove(ctx: &mut Ctx<'_>, args: &Args<'_>) -> CmdResult {
    let from = End::parse(args.get(3)).ok_or(ERR_SYNTAX)?;
    let to = End::parse(args.get(4)).ok_or(ERR_SYNTAX)?;
    lmove_generic(ctx, args.get(1), args.get(2), from, to)
}

fn rpoplpush(ctx: &mut Ctx<'_>, args: &Args<'_>) -> CmdResult {
    lmove_generic(ctx, args.get(1), args.get(2), End::Right, End::Left)
}

// ---- reads ----

fn llen(ctx: &mut Ctx<'_>, args: &Args<'_>) -> CmdResult {
    let (db, now) = (ctx.client.db, ctx.now_ms);
    let (mut shard, slot) = ctx.shard(args.get(1));
    let len = match shard.lookup_read(db, slot, args.get(1), now) {
        Some(e) => list_ref(&e)?.len(),
        None => 0,
    };
    drop(shard);
    ctx.out.int(len as i64);
    Ok(())
}

fn lrange(ctx: &mut Ctx<'_>, args: &Args<'_>) -> CmdResult {
    let start = args.i64(2)?;
    let stop = args.i64(3)?;
    let (db, now) = (ctx.client.db, ctx.now_ms);
    let (mut shard, slot) = ctx.shard(args.get(1));
    let Some(e) = shard.lookup_read(db, slot, args.get(1), now) else {
        drop(shard);
        ctx.out.array(0);
        return Ok(());
    };
    let l = list_ref(&e)?;
    match resolve_range(start, stop, l.len()) {
        None => ctx.out.array(0),
        Some((from, to)) => {
            ctx.out.array(to - from);
            for v in l.iter_from(from).take(to - from) {
                ctx.out.bulk(v);
            }
        }
    }
    Ok(())
}

fn lindex(ctx: &mut Ctx<'_>, args: &Args<'_>) -> CmdResult {
    let (db, now) = (ctx.client.db, ctx.now_ms);
    let (mut shard, slot) = ctx.shard(args.get(1));
    // Looked up before the index is parsed: a missing key is a null whatever the index says.
    let Some(e) = shard.lookup_read(db, slot, args.get(1), now) else {
        drop(shard);
        ctx.out.null();
        return Ok(());
    };
    let l = list_ref(&e)?;
    let index = args.i64(2)?;
    match resolve_index(index, l.len()).and_then(|i| l.get(i)) {
        Some(v) => ctx.out.bulk(v),
        None => ctx.out.null(),
    }
    Ok(())
}

fn lpos(ctx: &mut Ctx<'_>, args: &Args<'_>) -> CmdResult {
    let mut rank: i64 = 1;
    let mut count: Option<i64> = None;
    let mut maxlen: i64 = 0;
    let mut j = 3;
    while j < args.len() {
        let more = j + 1 < args.len();
        if args.is(j, "RANK") && more {
            rank = args.i64(j + 1)?;
            if rank == 0 {
                return Err(ERR_RANK_ZERO);
            }
        } else if args.is(j, "COUNT") && more {
            count = Some(non_negative(args.get(j + 1), ERR_COUNT_NEGATIVE)?);
        } else if args.is(j, "MAXLEN") && more {
            maxlen = non_negative(args.get(j + 1), ERR_MAXLEN_NEGATIVE)?;
        } else {
            return Err(ERR_SYNTAX);
        }
        j += 2;
    }
    // A negative rank searches from the tail. Redis negates with C's wrapping, so RANK
    // -9223372036854775808 stays negative: every match then counts as ranked, and with COUNT
    // the stop test overflows and never fires. The wrapping arithmetic below keeps that.
    let from_tail = rank < 0;
    if from_tail {
        rank = rank.wrapping_neg();
    }
    let (db, now) = (ctx.client.db, ctx.now_ms);
    let (mut shard, slot) = ctx.shard(args.get(1));
    let Some(e) = shard.lookup_read(db, slot, args.get(1), now) else {
        drop(shard);
        match count {
            Some(_) => ctx.out.array(0),
            None => ctx.out.null(),
        }
        return Ok(());
    };
    let l = list_ref(&e)?;
    let element = args.get(2);
    let len = l.len() as i64;
    let mut found: Vec<i64> = Vec::new();
    let mut matches: i64 = 0;
    let elements: &mut dyn Iterator<Item = &[u8]> = if from_tail {
        &mut l.iter_rev()
    } else {
        &mut l.iter()
    };
    for (index, v) in elements.enumerate() {
        let index = index as i64;
        if maxlen != 0 && index >= maxlen {
            break;
        }
        if v != element {
            continue;
        }
        matches += 1;
        if matches < rank {
            continue;
        }
        found.push(if from_tail { len - index - 1 } else { index });
        match count {
            None => break,
            Some(c) if c != 0 && matches.wrapping_sub(rank).wrapping_add(1) >= c => break,
            Some(_) => {}
        }
    }
    match count {
        Some(_) => {
            ctx.out.array(found.len());
            for i in found {
                ctx.out.int(i);
            }
        }
        None => match found.first() {
            Some(&i) => ctx.out.int(i),
            None => ctx.out.null(),
        },
    }
    Ok(())
}

/// A non-negative integer option; Redis gives the option's own error for a bad integer too.
fn non_negative(arg: &[u8], err: ReplyError) -> Result<i64, ReplyError> {
    match parse_i64(arg) {
        Some(v) if v >= 0 => Ok(v),
        _ => Err(err),
    }
}

// ---- in-place writes ----

fn lset(ctx: &mut Ctx<'_>, args: &Args<'_>) -> CmdResult {
    let key = args.get(1);
    let (db, now) = (ctx.client.db, ctx.now_ms);
    let (mut shard, slot) = ctx.shard(key);
    let version = ctx.version();
    let Some(mut e) = shard.lookup(db, slot, key, now, true) else {
        return Err(ERR_NO_SUCH_KEY);
    };
    let l = list_mut(&mut e)?;
    let index = args.i64(2)?;
    let i = resolve_index(index, l.len()).ok_or(ERR_INDEX)?;
    l.set(i, args.get(3));
    let mut ops = e.ops();
    ops.lset(i, args.get(3));
    e.note(ops);
    e.set_version(version);
    drop(e);
    shard.note(notify::LIST, "lset", db, key);
    drop(shard);
    ctx.out.ok();
    Ok(())
}

fn linsert(ctx: &mut Ctx<'_>, args: &Args<'_>) -> CmdResult {
    let after = if args.is(2, "AFTER") {
        true
    } else if args.is(2, "BEFORE") {
        false
    } else {
        return Err(ERR_SYNTAX);
    };
    let (key, pivot, value) = (args.get(1), args.get(3), args.get(4));
    let (db, now) = (ctx.client.db, ctx.now_ms);
    let (mut shard, slot) = ctx.shard(key);
    let version = ctx.version();
    let reply = match shard.lookup(db, slot, key, now, true) {
        None => 0,
        Some(mut e) => {
            let l = list_mut(&mut e)?;
            match l.iter().position(|v| v == pivot) {
                None => -1,
                Some(i) => {
                    let at = if after { i + 1 } else { i };
                    l.insert(at, value);
                    let len = l.len();
                    let mut ops = e.ops();
                    ops.linsert(at, value);
                    e.note(ops);
                    e.set_version(version);
                    len as i64
                }
            }
        }
    };
    if reply > 0 {
        shard.note(notify::LIST, "linsert", db, key);
    }
    drop(shard);
    ctx.out.int(reply);
    Ok(())
}

fn lrem(ctx: &mut Ctx<'_>, args: &Args<'_>) -> CmdResult {
    let count = args.i64(2)?;
    let key = args.get(1);
    let (db, now) = (ctx.client.db, ctx.now_ms);
    let (mut shard, slot) = ctx.shard(key);
    let version = ctx.version();
    let (removed, emptied) = match shard.lookup(db, slot, key, now, true) {
        None => (0, false),
        Some(mut e) => {
            let l = list_mut(&mut e)?;
            let limit = usize::try_from(count.unsigned_abs()).unwrap_or(usize::MAX);
            let removed = l.remove_matching(args.get(3), limit, count < 0);
            let emptied = l.is_empty();
            if removed > 0 {
                let mut ops = e.ops();
                ops.lrem(args.get(3), limit, count < 0);
                e.note(ops);
                e.set_version(version);
            }
            (removed, emptied)
        }
    };
    if removed > 0 {
        shard.note(notify::LIST, "lrem", db, key);
    }
    if emptied {
        shard.remove(db, slot, key);
        shard.note(notify::GENERIC, "del", db, key);
    }
    drop(shard);
    ctx.out.int(removed as i64);
    Ok(())
}

fn ltrim(ctx: &mut Ctx<'_>, args: &Args<'_>) -> CmdResult {
    let start = args.i64(2)?;
    let stop = args.i64(3)?;
    let key = args.get(1);
    let (db, now) = (ctx.client.db, ctx.now_ms);
    let (mut shard, slot) = ctx.shard(key);
    let version = ctx.version();
    let emptied = match shard.lookup(db, slot, key, now, true) {
        None => None,
        Some(mut e) => Some({
            let l = list_mut(&mut e)?;
            let (from, to) = resolve_range(start, stop, l.len()).unwrap_or((0, 0));
            l.retain_range(from, to);
            let emptied = l.is_empty();
            let mut ops = e.ops();
            ops.ltrim(from, to);
            e.note(ops);
            e.set_version(version);
            emptied
        }),
    };
    if let Some(emptied) = emptied {
        shard.note(notify::LIST, "ltrim", db, key);
        if emptied {
            shard.remove(db, slot, key);
            shard.note(notify::GENERIC, "del", db, key);
        }
    }
    drop(shard);
    ctx.out.ok();
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tests::run;

    const WRONGTYPE: &str =
        "-WRONGTYPE Operation against a key holding the wrong kind of value\r\n";

    #[test]
    fn push_pop_and_length() {
        let r = run(&[
            &["RPUSH", "l", "a", "b", "c"],
            &["LPUSH", "l", "z", "y"],
            &["LRANGE", "l", "0", "-1"],
            &["LPUSHX", "nokey", "a"],
            &["RPUSHX", "l", "d"],
            &["LLEN", "l"],
            &["LLEN", "nokey"],
            &["LPOP", "l"],
            &["RPOP", "l"],
            &["LPOP", "l", "2"],
            &["RPOP", "l", "10"],
            &["EXISTS", "l"],
            &["LPOP", "l"],
            &["EXISTS", "nokey"],
        ]);
        assert_eq!(r[0], ":3\r\n");
        assert_eq!(r[1], ":5\r\n");
        assert_eq!(
            r[2],
            "*5\r\n$1\r\ny\r\n$1\r\nz\r\n$1\r\na\r\n$1\r\nb\r\n$1\r\nc\r\n"
        );
        assert_eq!(r[3], ":0\r\n");
        assert_eq!(r[4], ":6\r\n");
        assert_eq!(r[5], ":6\r\n");
        assert_eq!(r[6], ":0\r\n");
        assert_eq!(r[7], "$1\r\ny\r\n");
        assert_eq!(r[8], "$1\r\nd\r\n");
        assert_eq!(r[9], "*2\r\n$1\r\nz\r\n$1\r\na\r\n");
        assert_eq!(r[10], "*2\r\n$1\r\nc\r\n$1\r\nb\r\n");
        assert_eq!(r[11], ":0\r\n", "an emptied list is deleted");
        assert_eq!(r[12], "$-1\r\n");
        assert_eq!(r[13], ":0\r\n", "LPUSHX created nothing");
    }

    #[test]
    fn pop_count_edge_cases_in_both_protocols() {
        let r = run(&[
            &["LPOP", "nokey", "2"],
            &["LPOP", "nokey", "0"],
            &["LPOP", "nokey", "-1"],
            &["LPOP", "nokey", "01"],
            &["RPUSH", "l", "a"],
            &["LPOP", "l", "0"],
            &["LLEN", "l"],
            &["LPOP", "l", "1", "2"],
            &["HELLO", "3"],
            &["LPOP", "nokey"],
            &["LPOP", "nokey", "1"],
            &["LPOP", "l", "0"],
            &["RPOP", "l", "5"],
        ]);
        assert_eq!(r[0], "*-1\r\n");
        assert_eq!(r[1], "*-1\r\n");
        assert_eq!(r[2], "-ERR value is out of range, must be positive\r\n");
        assert_eq!(r[3], "-ERR value is out of range, must be positive\r\n");
        assert_eq!(r[5], "*0\r\n");
        assert_eq!(r[6], ":1\r\n");
        assert_eq!(
            r[7],
            "-ERR wrong number of arguments for 'lpop' command\r\n"
        );
        assert_eq!(r[9], "_\r\n");
        assert_eq!(r[10], "_\r\n");
        assert_eq!(r[11], "*0\r\n");
        assert_eq!(r[12], "*1\r\n$1\r\na\r\n");
    }

    #[test]
    fn wrongtype_everywhere_and_check_order() {
        let r = run(&[
            &["SET", "s", "v"],
            &["LPUSH", "s", "a"],
            &["RPUSHX", "s", "a"],
            &["LPOP", "s"],
            &["LPOP", "s", "-1"],
            &["LLEN", "s"],
            &["LRANGE", "s", "0", "1"],
            &["LRANGE", "s", "x", "1"],
            &["LINDEX", "s", "x"],
            &["LINDEX", "nokey", "x"],
            &["LSET", "s", "x", "v"],
            &["LSET", "nokey", "x", "v"],
            &["LINSERT", "s", "middle", "a", "b"],
            &["LINSERT", "s", "before", "a", "b"],
            &["LREM", "s", "x", "a"],
            &["LREM", "s", "0", "a"],
            &["LTRIM", "s", "0", "1"],
            &["LPOS", "s", "a"],
            &["LPOS", "s", "a", "RANK", "0"],
            &["LMOVE", "s", "d", "LEFT", "LEFT"],
            &["RPUSH", "l", "x"],
            &["LMOVE", "l", "s", "LEFT", "LEFT"],
            &["LMOVE", "nokey", "s", "LEFT", "LEFT"],
            &["LMPOP", "2", "nokey", "s", "LEFT"],
            &["LRANGE", "l", "0", "-1"],
        ]);
        let expect = [
            (1, WRONGTYPE),
            (2, WRONGTYPE),
            (3, WRONGTYPE),
            (4, "-ERR value is out of range, must be positive\r\n"),
            (5, WRONGTYPE),
            (6, WRONGTYPE),
            (7, "-ERR value is not an integer or out of range\r\n"),
            (8, WRONGTYPE),
            (9, "$-1\r\n"),
            (10, WRONGTYPE),
            (11, "-ERR no such key\r\n"),
            (12, "-ERR syntax error\r\n"),
            (13, WRONGTYPE),
            (14, "-ERR value is not an integer or out of range\r\n"),
            (15, WRONGTYPE),
            (16, WRONGTYPE),
            (17, WRONGTYPE),
            (18, &format!("-{ERR_RANK_ZERO}\r\n")),
            (19, WRONGTYPE),
            (21, WRONGTYPE),
            (22, "$-1\r\n"),
            (23, WRONGTYPE),
            (24, "*1\r\n$1\r\nx\r\n"),
        ];
        for (i, want) in expect {
            assert_eq!(r[i], want, "reply {i}");
        }
    }

    #[test]
    fn ranges_index_set() {
        let r = run(&[
            &["RPUSH", "l", "a", "b", "c", "d", "e"],
            &["LRANGE", "l", "1", "-2"],
            &["LRANGE", "l", "-100", "100"],
            &["LRANGE", "l", "3", "1"],
            &["LRANGE", "l", "5", "10"],
            &["LRANGE", "nokey", "0", "-1"],
            &["LINDEX", "l", "-1"],
            &["LINDEX", "l", "5"],
            &["LSET", "l", "-1", "Z"],
            &["LSET", "l", "5", "Z"],
            &["LSET", "l", "-6", "Z"],
            &["LINDEX", "l", "4"],
            &["LRANGE", "l", "-9223372036854775808", "9223372036854775807"],
        ]);
        assert_eq!(r[1], "*3\r\n$1\r\nb\r\n$1\r\nc\r\n$1\r\nd\r\n");
        assert_eq!(r[2].matches("\r\n$1").count(), 5);
        assert_eq!(r[3], "*0\r\n");
        assert_eq!(r[4], "*0\r\n");
        assert_eq!(r[5], "*0\r\n");
        assert_eq!(r[6], "$1\r\ne\r\n");
        assert_eq!(r[7], "$-1\r\n");
        assert_eq!(r[8], "+OK\r\n");
        assert_eq!(r[9], "-ERR index out of range\r\n");
        assert_eq!(r[10], "-ERR index out of range\r\n");
        assert_eq!(r[11], "$1\r\nZ\r\n");
        assert_eq!(r[12], r[2].replace("$1\r\ne", "$1\r\nZ"));
    }

    #[test]
    fn insert_remove_trim() {
        let r = run(&[
            &["LINSERT", "nokey", "BEFORE", "a", "b"],
            &["RPUSH", "l", "a", "b", "a", "c", "a", "a"],
            &["LINSERT", "l", "before", "zz", "x"],
            &["LINSERT", "l", "BEFORE", "a", "X"],
            &["LINSERT", "l", "after", "c", "Y"],
            &["LRANGE", "l", "0", "-1"],
            &["LREM", "l", "2", "a"],
            &["LREM", "l", "-1", "a"],
            &["LRANGE", "l", "0", "-1"],
            &["LREM", "nokey", "0", "a"],
            &["LTRIM", "l", "1", "-2"],
            &["LRANGE", "l", "0", "-1"],
            &["LTRIM", "l", "5", "1"],
            &["EXISTS", "l"],
            &["LTRIM", "nokey", "0", "1"],
        ]);
        assert_eq!(r[0], ":0\r\n");
        assert_eq!(r[2], ":-1\r\n");
        assert_eq!(r[3], ":7\r\n");
        assert_eq!(r[4], ":8\r\n");
        assert_eq!(
            r[5],
            "*8\r\n$1\r\nX\r\n$1\r\na\r\n$1\r\nb\r\n$1\r\na\r\n$1\r\nc\r\n$1\r\nY\r\n$1\r\na\r\n$1\r\na\r\n"
        );
        assert_eq!(r[6], ":2\r\n");
        assert_eq!(r[7], ":1\r\n");
        assert_eq!(
            r[8],
            "*5\r\n$1\r\nX\r\n$1\r\nb\r\n$1\r\nc\r\n$1\r\nY\r\n$1\r\na\r\n"
        );
        assert_eq!(r[9], ":0\r\n");
        assert_eq!(r[10], "+OK\r\n");
        assert_eq!(r[11], "*3\r\n$1\r\nb\r\n$1\r\nc\r\n$1\r\nY\r\n");
        assert_eq!(r[12], "+OK\r\n");
        assert_eq!(r[13], ":0\r\n");
        assert_eq!(r[14], "+OK\r\n");
    }

    #[test]
    fn lpos_options_like_redis() {
        let r = run(&[
            &["RPUSH", "p", "a", "b", "c", "a", "b", "c", "a"],
            &["LPOS", "p", "a"],
            &["LPOS", "p", "a", "RANK", "2"],
            &["LPOS", "p", "a", "RANK", "-2"],
            &["LPOS", "p", "a", "COUNT", "0"],
            &["LPOS", "p", "a", "RANK", "-1", "COUNT", "2", "MAXLEN", "1"],
            &["LPOS", "p", "a", "COUNT", "-1"],
            &["LPOS", "p", "a", "MAXLEN", "x"],
            &["LPOS", "p", "a", "RANK", "x"],
            &["LPOS", "p", "a", "RANK"],
            &["LPOS", "p", "c", "MAXLEN", "2"],
            &["LPOS", "nokey", "a", "COUNT", "2"],
            &[
                "LPOS",
                "p",
                "a",
                "RANK",
                "-9223372036854775808",
                "COUNT",
                "1",
            ],
            &["LPOS", "p", "a", "RANK", "5", "COUNT", "1"],
            &["LPOS", "p", "a", "COUNT", "1", "COUNT", "2"],
            &["HELLO", "3"],
            &["LPOS", "p", "z"],
        ]);
        assert_eq!(r[1], ":0\r\n");
        assert_eq!(r[2], ":3\r\n");
        assert_eq!(r[3], ":3\r\n");
        assert_eq!(r[4], "*3\r\n:0\r\n:3\r\n:6\r\n");
        assert_eq!(r[5], "*1\r\n:6\r\n");
        assert_eq!(r[6], "-ERR COUNT can't be negative\r\n");
        assert_eq!(r[7], "-ERR MAXLEN can't be negative\r\n");
        assert_eq!(r[8], "-ERR value is not an integer or out of range\r\n");
        assert_eq!(r[9], "-ERR syntax error\r\n");
        assert_eq!(r[10], "$-1\r\n");
        assert_eq!(r[11], "*0\r\n");
        assert_eq!(r[12], "*3\r\n:6\r\n:3\r\n:0\r\n");
        assert_eq!(r[13], "*0\r\n");
        assert_eq!(r[14], "*2\r\n:0\r\n:3\r\n");
        assert_eq!(r[16], "_\r\n");
    }

    #[test]
    fn moves_and_rotation() {
        let r = run(&[
            &["RPUSH", "a", "1", "2", "3"],
            &["LMOVE", "a", "b", "LEFT", "RIGHT"],
            &["LMOVE", "a", "b", "up", "RIGHT"],
            &["LMOVE", "a", "a", "left", "right"],
            &["LRANGE", "a", "0", "-1"],
            &["RPOPLPUSH", "a", "b"],
            &["RPOPLPUSH", "nokey", "b"],
            &["LRANGE", "b", "0", "-1"],
            &["RPOPLPUSH", "a", "a"],
            &["LMOVE", "a", "c", "RIGHT", "LEFT"],
            &["EXISTS", "a"],
            &["LRANGE", "c", "0", "-1"],
        ]);
        assert_eq!(r[1], "$1\r\n1\r\n");
        assert_eq!(r[2], "-ERR syntax error\r\n");
        assert_eq!(r[3], "$1\r\n2\r\n");
        assert_eq!(r[4], "*2\r\n$1\r\n3\r\n$1\r\n2\r\n");
        assert_eq!(r[5], "$1\r\n2\r\n");
        assert_eq!(r[6], "$-1\r\n");
        assert_eq!(r[7], "*2\r\n$1\r\n2\r\n$1\r\n1\r\n");
        assert_eq!(
            r[8], "$1\r\n3\r\n",
            "a one-element list rotates onto itself"
        );
        assert_eq!(r[9], "$1\r\n3\r\n");
        assert_eq!(r[10], ":0\r\n");
        assert_eq!(r[11], "*1\r\n$1\r\n3\r\n");
    }

    #[test]
    fn lmpop_parsing_and_replies() {
        let r = run(&[
            &["LMPOP", "0", "a", "LEFT"],
            &["LMPOP", "x", "a", "LEFT"],
            &["LMPOP", "1", "a", "MIDDLE"],
            &["LMPOP", "2", "a", "LEFT"],
            &["LMPOP", "1", "a", "LEFT", "COUNT", "0"],
            &["LMPOP", "1", "a", "LEFT", "COUNT", "x"],
            &["LMPOP", "1", "a", "LEFT", "COUNT", "1", "COUNT", "2"],
            &["LMPOP", "1", "a", "LEFT", "COUNT"],
            &["LMPOP", "9223372036854775807", "a", "LEFT"],
            &["LMPOP", "1", "nokey", "LEFT"],
            &["RPUSH", "b", "1", "2", "3"],
            &["LMPOP", "2", "nokey", "b", "RIGHT", "COUNT", "2"],
            &["LMPOP", "2", "nokey", "b", "left", "count", "10"],
            &["EXISTS", "b"],
            &["HELLO", "3"],
            &["LMPOP", "1", "nokey", "LEFT"],
        ]);
        assert_eq!(r[0], "-ERR numkeys should be greater than 0\r\n");
        assert_eq!(r[1], "-ERR numkeys should be greater than 0\r\n");
        assert_eq!(r[2], "-ERR syntax error\r\n");
        assert_eq!(r[3], "-ERR syntax error\r\n");
        assert_eq!(r[4], "-ERR count should be greater than 0\r\n");
        assert_eq!(r[5], "-ERR count should be greater than 0\r\n");
        assert_eq!(r[6], "-ERR syntax error\r\n");
        assert_eq!(r[7], "-ERR syntax error\r\n");
        assert_eq!(r[8], "-ERR syntax error\r\n");
        assert_eq!(r[9], "*-1\r\n");
        assert_eq!(r[11], "*2\r\n$1\r\nb\r\n*2\r\n$1\r\n3\r\n$1\r\n2\r\n");
        assert_eq!(r[12], "*2\r\n$1\r\nb\r\n*1\r\n$1\r\n1\r\n");
        assert_eq!(r[13], ":0\r\n");
        assert_eq!(r[15], "_\r\n");
    }

    /// Runs `cmds` on one connection; after each, the versions of `keys` (`None`: absent).
    fn versions_after(keys: &[&str], cmds: &[&[&str]]) -> Vec<Vec<Option<u64>>> {
        use crate::{Client, ClientHandle, Hooks, OwnedArgs, ServerState, config, execute};
        let now = 1_000_000;
        let srv = ServerState::new(config::Config::default(), now, 7, Hooks::default());
        let h = std::sync::Arc::new(ClientHandle::new(1, "a:1".into(), "b:2".into(), 0));
        let mut c = Client::new(h, true);
        cmds.iter()
            .map(|cmd| {
                let o = OwnedArgs::new(cmd.iter());
                let mut out = Vec::new();
                execute(&srv, &mut c, &o.args(), &mut out, now);
                assert!(
                    !out.starts_with(b"-"),
                    "{cmd:?}: {:?}",
                    String::from_utf8_lossy(&out)
                );
                keys.iter()
                    .map(|k| {
                        let slot = shoal_keyspace::key_slot(k.as_bytes());
                        let shard = srv.ks.lock(srv.ks.shard_of(slot));
                        shard.peek(0, slot, k.as_bytes(), now).map(|e| e.version())
                    })
                    .collect()
            })
            .collect()
    }

    #[test]
    fn writes_bump_the_version_and_no_ops_do_not() {
        // (command, whether it writes `l`)
        let steps: &[(&[&str], bool)] = &[
            (&["RPUSH", "l", "a", "b", "c"], true),
            (&["LPUSH", "l", "z"], true),
            (&["RPUSHX", "l", "d"], true),
            (&["LLEN", "l"], false),
            (&["LRANGE", "l", "0", "-1"], false),
            (&["LINDEX", "l", "0"], false),
            (&["LPOS", "l", "a"], false),
            (&["LSET", "l", "0", "Z"], true),
            (&["LINSERT", "l", "AFTER", "a", "x"], true),
            (&["LINSERT", "l", "AFTER", "nothere", "x"], false),
            (&["LREM", "l", "0", "x"], true),
            (&["LREM", "l", "0", "nothere"], false),
            (&["LPOP", "l", "0"], false),
            (&["LPOP", "l"], true),
            (&["RPOP", "l", "1"], true),
            (&["LTRIM", "l", "0", "-1"], true),
            (&["LMOVE", "l", "l", "LEFT", "RIGHT"], true),
            (&["LMPOP", "1", "l", "LEFT"], true),
        ];
        let cmds: Vec<&[&str]> = steps.iter().map(|(c, _)| *c).collect();
        let seen = versions_after(&["l"], &cmds);
        for (i, (cmd, writes)) in steps.iter().enumerate().skip(1) {
            let (before, after) = (seen[i - 1][0].unwrap(), seen[i][0].unwrap());
            if *writes {
                assert!(after > before, "{cmd:?} must move the version forward");
            } else {
                assert_eq!(after, before, "{cmd:?} must not write");
            }
        }
        // LMOVE stamps both lists with the command's one version.
        let v = versions_after(
            &["a", "b"],
            &[
                &["RPUSH", "a", "1", "2"],
                &["RPUSH", "b", "x"],
                &["LMOVE", "a", "b", "LEFT", "LEFT"],
            ],
        );
        assert!(v[2][0] > v[1][1] && v[2][0] == v[2][1], "{v:?}");
    }

    #[test]
    fn ranges_resolve_like_redis() {
        assert_eq!(resolve_range(0, -1, 5), Some((0, 5)));
        assert_eq!(resolve_range(-2, -1, 5), Some((3, 5)));
        assert_eq!(resolve_range(-100, 1, 5), Some((0, 2)));
        assert_eq!(resolve_range(3, 1, 5), None);
        assert_eq!(resolve_range(5, 9, 5), None);
        assert_eq!(resolve_range(i64::MIN, i64::MAX, 5), Some((0, 5)));
        assert_eq!(resolve_index(-1, 3), Some(2));
        assert_eq!(resolve_index(-4, 3), None);
        assert_eq!(resolve_index(i64::MIN, 3), None);
        assert_eq!(resolve_index(3, 3), None);
    }
}
