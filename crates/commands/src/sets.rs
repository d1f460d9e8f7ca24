//! Set commands: SADD, SREM, ... the set algebra (SINTER, SUNION, SDIFF and their STORE forms,
//! SINTERCARD), SMOVE, SPOP, SRANDMEMBER, SSCAN.
//!
//! Multi-key commands lock all their keys at once (`Ctx::lock_keys`), so they are atomic. The
//! algebra reads each source set in turn under those locks: the members of the first (smallest,
//! for an intersection) are copied out, then filtered against the others one by one. A STORE
//! replaces the destination whatever its type (dropping its TTL, as Redis does) and deletes it when
//! the result is empty. Every write stamps the command's version on the keys it changed.

use crate::error::ReplyError;
use shoal_keyspace::delta::Ops;
use shoal_keyspace::types::set::{Member, Set};
use shoal_keyspace::{EncodingLimits, Kind, Object, Shard, ValueRef};
use shoal_resp::ReplyWriter;

use crate::args::{ERR_SYNTAX, parse_i64, parse_scan_cursor};
use crate::coll::object_mut;
use crate::hashes::{
    RANDOM_REPLY_MAX, command_rng, object_entry, parse_random_count, parse_scan_opts,
    random_count_error,
};
use crate::notify;
use crate::table::{FindKeys, Group, KeySpec, Spec, flag::*, key::*};
use crate::{Args, CmdResult, Ctx, Locked};

const SET: Group = Group::Set;

pub static COMMANDS: &[Spec] = &[
    Spec {
        name: "sadd",
        arity: -3,
        flags: WRITE | DENYOOM | FAST,
        keys: &[KeySpec::at(1, RW | INSERT)],
        group: SET,
        since: "1.0.0",
        summary: "Add one or more members to a set",
        handler: Some(sadd),
        ..Spec::DEFAULT
    },
    Spec {
        name: "scard",
        arity: 2,
        flags: READONLY | FAST,
        keys: &[KeySpec::at(1, RO)],
        group: SET,
        since: "1.0.0",
        summary: "Get the number of members in a set",
        handler: Some(scard),
        ..Spec::DEFAULT
    },
    Spec {
        name: "sdiff",
        arity: -2,
        flags: READONLY,
        keys: &[KeySpec::at(1, RO | ACCESS).find(FindKeys::Range {
            last_key: -1,
            step: 1,
            limit: 0,
        })],
        group: SET,
        since: "1.0.0",
        summary: "Subtract multiple sets",
        tips: &["nondeterministic_output_order"],
        handler: Some(sdiff),
        ..Spec::DEFAULT
    },
    Spec {
        name: "sdiffstore",
        arity: -3,
        flags: WRITE | DENYOOM,
        keys: &[
            KeySpec::at(1, OW | UPDATE),
            KeySpec::at(2, RO | ACCESS).find(FindKeys::Range {
                last_key: -1,
                step: 1,
                limit: 0,
            }),
        ],
        group: SET,
        since: "1.0.0",
        summary: "Subtract multiple sets and store the resulting set in a key",
        handler: Some(sdiffstore),
        ..Spec::DEFAULT
    },
    Spec {
        name: "sinter",
        arity: -2,
        flags: READONLY,
        keys: &[KeySpec::at(1, RO | ACCESS).find(FindKeys::Range {
            last_key: -1,
            step: 1,
            limit: 0,
        })],
        group: SET,
        since: "1.0.0",
        summary: "Intersect multiple sets",
        tips: &["nondeterministic_output_order"],
        handler: Some(sinter),
        ..Spec::DEFAULT
    },
    // numkeys comes first: the legacy key triple cannot describe it (Redis reports 0 0 0 and
    // movablekeys); the handler finds the keys itself.
    Spec {
        name: "sintercard",
        arity: -3,
        flags: READONLY | MOVABLEKEYS,
        keys: &[KeySpec::at(1, RO | ACCESS).find(FindKeys::Keynum {
            keynum_idx: 0,
            first_key: 1,
            step: 1,
        })],
        group: SET,
        since: "7.0.0",
        summary: "Intersect multiple sets and return the cardinality of the result",
        handler: Some(sintercard),
        ..Spec::DEFAULT
    },
    Spec {
        name: "sinterstore",
        arity: -3,
        flags: WRITE | DENYOOM,
        keys: &[
            KeySpec::at(1, RW | UPDATE),
            KeySpec::at(2, RO | ACCESS).find(FindKeys::Range {
                last_key: -1,
                step: 1,
                limit: 0,
            }),
        ],
        group: SET,
        since: "1.0.0",
        summary: "Intersect multiple sets and store the resulting set in a key",
        handler: Some(sinterstore),
        ..Spec::DEFAULT
    },
    Spec {
        name: "sismember",
        arity: 3,
        flags: READONLY | FAST,
        keys: &[KeySpec::at(1, RO)],
        group: SET,
        since: "1.0.0",
        summary: "Determine if a given value is a member of a set",
        handler: Some(sismember),
        ..Spec::DEFAULT
    },
    Spec {
        name: "smembers",
        arity: 2,
        flags: READONLY,
        keys: &[KeySpec::at(1, RO | ACCESS)],
        group: SET,
        since: "1.0.0",
        summary: "Get all the members in a set",
        tips: &["nondeterministic_output_order"],
        handler: Some(smembers),
        ..Spec::DEFAULT
    },
    Spec {
        name: "smismember",
        arity: -3,
        flags: READONLY | FAST,
        keys: &[KeySpec::at(1, RO | ACCESS)],
        group: SET,
        since: "6.2.0",
        summary: "Returns the membership associated with the given elements for a set",
        handler: Some(smismember),
        ..Spec::DEFAULT
    },
    Spec {
        name: "smove",
        arity: 4,
        flags: WRITE | FAST,
        keys: &[
            KeySpec::at(1, RW | ACCESS | DELETE),
            KeySpec::at(2, RW | INSERT),
        ],
        group: SET,
        since: "1.0.0",
        summary: "Move a member from one set to another",
        handler: Some(smove),
        ..Spec::DEFAULT
    },
    Spec {
        name: "spop",
        arity: -2,
        flags: WRITE | FAST,
        keys: &[KeySpec::at(1, RW | ACCESS | DELETE)],
        group: SET,
        since: "1.0.0",
        summary: "Remove and return one or multiple random members from a set",
        tips: &["nondeterministic_output"],
        handler: Some(spop),
        ..Spec::DEFAULT
    },
    Spec {
        name: "srandmember",
        arity: -2,
        flags: READONLY,
        keys: &[KeySpec::at(1, RO | ACCESS)],
        group: SET,
        since: "1.0.0",
        summary: "Get one or multiple random members from a set",
        tips: &["nondeterministic_output"],
        handler: Some(srandmember),
        ..Spec::DEFAULT
    },
    Spec {
        name: "srem",
        arity: -3,
        flags: WRITE | FAST,
        keys: &[KeySpec::at(1, RW | DELETE)],
        group: SET,
        since: "1.0.0",
        summary: "Remove one or more members from a set",
        handler: Some(srem),
        ..Spec::DEFAULT
    },
    Spec {
        name: "sscan",
        arity: -3,
        flags: READONLY,
        keys: &[KeySpec::at(1, RO | ACCESS)],
        group: SET,
        since: "2.8.0",
        summary: "Incrementally iterate Set elements",
        tips: &["nondeterministic_output"],
        handler: Some(sscan),
        ..Spec::DEFAULT
    },
    Spec {
        name: "sunion",
        arity: -2,
        flags: READONLY,
        keys: &[KeySpec::at(1, RO | ACCESS).find(FindKeys::Range {
            last_key: -1,
            step: 1,
            limit: 0,
        })],
        group: SET,
        since: "1.0.0",
        summary: "Add multiple sets",
        tips: &["nondeterministic_output_order"],
        handler: Some(sunion),
        ..Spec::DEFAULT
    },
    Spec {
        name: "sunionstore",
        arity: -3,
        flags: WRITE | DENYOOM,
        keys: &[
            KeySpec::at(1, OW | UPDATE),
            KeySpec::at(2, RO | ACCESS).find(FindKeys::Range {
                last_key: -1,
                step: 1,
                limit: 0,
            }),
        ],
        group: SET,
        since: "1.0.0",
        summary: "Add multiple sets and store the resulting set in a key",
        handler: Some(sunionstore),
        ..Spec::DEFAULT
    },
];

// ---------------------------------------------------------------------------------------------
// Access to the set of a key.

/// The set of a live entry, or WRONGTYPE; `None` for an absent key.
fn set_of(v: Option<ValueRef<'_>>) -> Result<Option<&Set>, ReplyError> {
    match v {
        None => Ok(None),
        Some(ValueRef::Obj(Object::Set(s))) => Ok(Some(s)),
        Some(_) => Err(ReplyError::WrongType),
    }
}

/// Runs `f` on the set at `key` (`None` if absent) for a read command: counts a hit or a miss and
/// records the access. WRONGTYPE for another type.
fn read_set<R>(
    ctx: &mut Ctx<'_>,
    key: &[u8],
    f: impl FnOnce(Option<&Set>, &mut ReplyWriter<'_>) -> R,
) -> Result<R, ReplyError> {
    let (db, now) = (ctx.db(), ctx.now_ms);
    let (mut shard, slot) = ctx.shard(key);
    let e = shard.lookup_read(db, slot, key, now);
    let s = set_of(e.as_deref().map(|e| e.value()))?;
    Ok(f(s, &mut ctx.out))
}

/// Runs `f` on the set at `key` for a write command; see `hashes::write_hash`, which this mirrors.
/// A change raises `event` (and `del` if it emptied the set).
fn write_set<R>(
    ctx: &mut Ctx<'_>,
    key: &[u8],
    create: bool,
    event: &'static str,
    f: impl FnOnce(&mut Set, &mut Ops, &EncodingLimits) -> Result<(R, bool), ReplyError>,
) -> Result<Option<R>, ReplyError> {
    let (db, now) = (ctx.db(), ctx.now_ms);
    let limits = ctx.srv.encoding_limits();
    let (mut shard, slot) = ctx.shard(key);
    let existing = match shard.lookup(db, slot, key, now, true) {
        Some(mut e) => {
            let mut ops = e.ops();
            let Object::Set(s) = object_mut(&mut e, Kind::Set)? else {
                unreachable!("object_mut checked the kind")
            };
            let (r, changed) = f(s, &mut ops, &limits)?;
            let empty = s.is_empty();
            e.note(ops);
            if changed {
                // Taken under the lock: later writes to a key get larger versions.
                e.set_version(ctx.version());
            }
            Ok((r, changed, empty))
        }
        None => Err(f),
    };
    match existing {
        Ok((r, changed, empty)) => {
            if changed {
                shard.note(notify::SET, event, db, key);
            }
            if empty {
                shard.remove(db, slot, key);
                shard.note(notify::GENERIC, "del", db, key);
            }
            Ok(Some(r))
        }
        Err(f) if create => {
            // A new key is sent whole: no ops to note.
            let mut s = Set::new(&limits);
            let (r, _) = f(&mut s, &mut Ops::new(false), &limits)?;
            if !s.is_empty() {
                let version = ctx.version();
                shard.insert(db, slot, object_entry(key, Object::Set(s), version), now);
                shard.note(notify::SET, event, db, key);
            }
            Ok(Some(r))
        }
        Err(_) => Ok(None),
    }
}

fn reply_members<'m>(out: &mut ReplyWriter<'_>, n: usize, ms: impl Iterator<Item = Member<'m>>) {
    out.set(n);
    for m in ms {
        m.with_bytes(|b| out.bulk(b));
    }
}

// ---------------------------------------------------------------------------------------------
// Single-key handlers.

fn sadd(ctx: &mut Ctx<'_>, args: &Args<'_>) -> CmdResult {
    let added = write_set(ctx, args.get(1), true, "sadd", |s, ops, limits| {
        let mut n = 0;
        for m in args.tail(2).iter() {
            if s.insert(m, limits) {
                ops.sadd(m);
                n += 1;
            }
        }
        Ok((n, n > 0))
    })?;
    ctx.out.int(added.unwrap_or(0));
    Ok(())
}

fn srem(ctx: &mut Ctx<'_>, args: &Args<'_>) -> CmdResult {
    let removed = write_set(ctx, args.get(1), false, "srem", |s, ops, _| {
        let mut n = 0;
        for m in args.tail(2).iter() {
            if s.remove(m) {
                ops.srem(m);
                n += 1;
            }
            if s.is_empty() {
                break;
            }
        }
        Ok((n, n > 0))
    })?;
    ctx.out.int(removed.unwrap_or(0));
    Ok(())
}

fn smembers(ctx: &mut Ctx<'_>, args: &Args<'_>) -> CmdResult {
    read_set(ctx, args.get(1), |s, out| match s {
        Some(s) => reply_members(out, s.len(), s.iter()),
        None => out.set(0),
    })
}

fn sismember(ctx: &mut Ctx<'_>, args: &Args<'_>) -> CmdResult {
    read_set(ctx, args.get(1), |s, out| {
        out.int(s.is_some_and(|s| s.contains(args.get(2))) as i64)
    })
}

fn smismember(ctx: &mut Ctx<'_>, args: &Args<'_>) -> CmdResult {
    read_set(ctx, args.get(1), |s, out| {
        out.array(args.len() - 2);
        for m in args.tail(2).iter() {
            out.int(s.is_some_and(|s| s.contains(m)) as i64);
        }
    })
}

fn scard(ctx: &mut Ctx<'_>, args: &Args<'_>) -> CmdResult {
    read_set(ctx, args.get(1), |s, out| {
        out.int(s.map_or(0, Set::len) as i64)
    })
}

fn spop(ctx: &mut Ctx<'_>, args: &Args<'_>) -> CmdResult {
    let mut rng = command_rng(ctx);
    if args.len() > 3 {
        return Err(ERR_SYNTAX);
    }
    if args.len() == 2 {
        let popped = write_set(ctx, args.get(1), false, "spop", |s, ops, _| {
            let m = s.pop_random(&mut rng);
            if let Some(m) = &m {
                ops.srem(m);
            }
            let changed = m.is_some();
            Ok((m, changed))
        })?;
        match popped.flatten() {
            Some(m) => ctx.out.bulk(&m),
            None => ctx.out.null(),
        }
        return Ok(());
    }
    let count = parse_i64(args.get(2))
        .filter(|n| *n >= 0)
        .ok_or(ReplyError::err_static(
            "value is out of range, must be positive",
        ))? as usize;
    let popped = write_set(ctx, args.get(1), false, "spop", |s, ops, limits| {
        if count >= s.len() {
            // Everything: hand the members over and leave an empty set (the key is deleted).
            let all: Vec<Vec<u8>> = s.iter().map(Member::to_vec).collect();
            *s = Set::new(limits);
            return Ok((all, true));
        }
        let mut out = Vec::with_capacity(count);
        for _ in 0..count {
            out.extend(s.pop_random(&mut rng));
        }
        for m in &out {
            ops.srem(m);
        }
        let changed = !out.is_empty();
        Ok((out, changed))
    })?
    .unwrap_or_default();
    ctx.out.set(popped.len());
    for m in &popped {
        ctx.out.bulk(m);
    }
    Ok(())
}

fn srandmember(ctx: &mut Ctx<'_>, args: &Args<'_>) -> CmdResult {
    let mut rng = command_rng(ctx);
    if args.len() > 3 {
        return Err(ERR_SYNTAX);
    }
    if args.len() == 2 {
        return read_set(ctx, args.get(1), |s, out| {
            match s.and_then(|s| s.random_member(&mut rng)) {
                Some(m) => m.with_bytes(|b| out.bulk(b)),
                None => out.null(),
            }
        });
    }
    let count = parse_random_count(args.get(2))?;
    if count < -RANDOM_REPLY_MAX {
        return Err(random_count_error());
    }
    read_set(ctx, args.get(1), |s, out| {
        let Some(s) = s.filter(|_| count != 0) else {
            out.array(0);
            return;
        };
        if count < 0 {
            let n = count.unsigned_abs() as usize;
            out.array(n);
            for _ in 0..n {
                let m = s.random_member(&mut rng).expect("non-empty set");
                m.with_bytes(|b| out.bulk(b));
            }
        } else if count as usize >= s.len() {
            // The whole set, in its own order, as Redis replies (sorted for an intset).
            out.array(s.len());
            for m in s.iter() {
                m.with_bytes(|b| out.bulk(b));
            }
        } else {
            let picks = s.random_distinct(count as usize, &mut rng);
            out.array(picks.len());
            for m in picks {
                m.with_bytes(|b| out.bulk(b));
            }
        }
    })
}

fn sscan(ctx: &mut Ctx<'_>, args: &Args<'_>) -> CmdResult {
    // Redis parses the cursor first, then looks the key up, then reads the options.
    let cursor = parse_scan_cursor(args.get(2))?;
    let (db, now) = (ctx.db(), ctx.now_ms);
    let (mut shard, slot) = ctx.shard(args.get(1));
    let e = shard.lookup_read(db, slot, args.get(1), now);
    let Some(s) = set_of(e.as_deref().map(|e| e.value()))? else {
        ctx.out.array(2);
        ctx.out.bulk(b"0");
        ctx.out.array(0);
        return Ok(());
    };
    let opts = parse_scan_opts(args, 3)?;
    let mut found: Vec<Member<'_>> = Vec::new();
    let next = s.scan(cursor, opts.count, |m| {
        if m.with_bytes(|b| opts.matches(b)) {
            found.push(m);
        }
    });
    let out = &mut ctx.out;
    out.array(2);
    out.bulk(next.to_string().as_bytes());
    out.array(found.len());
    for m in found {
        m.with_bytes(|b| out.bulk(b));
    }
    Ok(())
}

fn smove(ctx: &mut Ctx<'_>, args: &Args<'_>) -> CmdResult {
    let (src, dst, member) = (args.get(1), args.get(2), args.get(3));
    let (db, now) = (ctx.db(), ctx.now_ms);
    let limits = ctx.srv.encoding_limits();
    let mut locked = ctx.lock_keys([src, dst].into_iter());
    // Checks in Redis's order: an absent source replies 0 before any type check.
    let (shard, slot) = locked.shard(src);
    let Some(src_kind) = shard.lookup(db, slot, src, now, true).map(|e| e.kind()) else {
        ctx.out.int(0);
        return Ok(());
    };
    let (shard, slot) = locked.shard(dst);
    let dst_kind = shard.lookup(db, slot, dst, now, true).map(|e| e.kind());
    if src_kind != Kind::Set || dst_kind.is_some_and(|k| k != Kind::Set) {
        return Err(ReplyError::WrongType);
    }
    if src == dst {
        let (shard, slot) = locked.shard(src);
        let s = peek_set(shard, db, slot, src, now).expect("checked above");
        ctx.out.int(s.contains(member) as i64);
        return Ok(());
    }
    // Taken under the locks: later writes to these keys get larger versions.
    let version = ctx.version();
    let (shard, slot) = locked.shard(src);
    let removed = {
        let mut e = shard
            .lookup(db, slot, src, now, false)
            .expect("checked above");
        let mut ops = e.ops();
        let Object::Set(s) = object_mut(&mut e, Kind::Set)? else {
            unreachable!("object_mut checked the kind")
        };
        let removed = s.remove(member);
        let empty = s.is_empty();
        if removed {
            ops.srem(member);
            e.note(ops);
            e.set_version(version);
        }
        drop(e);
        if removed {
            shard.note(notify::SET, "srem", db, src);
        }
        if empty {
            shard.remove(db, slot, src);
            shard.note(notify::GENERIC, "del", db, src);
        }
        removed
    };
    if !removed {
        ctx.out.int(0);
        return Ok(());
    }
    let (shard, slot) = locked.shard(dst);
    if dst_kind.is_some() {
        let mut e = shard
            .lookup(db, slot, dst, now, false)
            .expect("checked above");
        let mut ops = e.ops();
        let Object::Set(s) = object_mut(&mut e, Kind::Set)? else {
            unreachable!("object_mut checked the kind")
        };
        // A member already there leaves the destination as it was (its version too, so a
        // WATCH of it holds), as Redis touches the destination only when it adds.
        let added = s.insert(member, &limits);
        if added {
            ops.sadd(member);
            e.note(ops);
            e.set_version(version);
        }
        drop(e);
        if added {
            shard.note(notify::SET, "sadd", db, dst);
        }
    } else {
        let mut s = Set::new(&limits);
        s.insert(member, &limits);
        shard.insert(db, slot, object_entry(dst, Object::Set(s), version), now);
        shard.note(notify::SET, "sadd", db, dst);
    }
    ctx.out.int(1);
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Set algebra.

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Op {
    Inter,
    Union,
    Diff,
}

/// A member copied out of a set (an intset's stay numbers: no formatting, fast lookups).
enum Owned {
    Int(i64),
    Bytes(Vec<u8>),
}

impl Owned {
    fn of(m: Member<'_>) -> Owned {
        match m {
            Member::Int(v) => Owned::Int(v),
            Member::Bytes(b) => Owned::Bytes(b.to_vec()),
        }
    }

    fn member(&self) -> Member<'_> {
        match self {
            Owned::Int(v) => Member::Int(*v),
            Owned::Bytes(b) => Member::Bytes(b),
        }
    }
}

/// The result of the algebra: filtered members (intersection, difference) or a built set (union).
enum Outcome {
    Members(Vec<Owned>),
    Built(Set),
}

impl Outcome {
    fn len(&self) -> usize {
        match self {
            Outcome::Members(v) => v.len(),
            Outcome::Built(s) => s.len(),
        }
    }

    fn reply(&self, out: &mut ReplyWriter<'_>) {
        match self {
            Outcome::Members(v) => reply_members(out, v.len(), v.iter().map(Owned::member)),
            Outcome::Built(s) => reply_members(out, s.len(), s.iter()),
        }
    }

    /// The result as a set value, with the encoding Redis would give it (built from empty).
    fn into_set(self, limits: &EncodingLimits) -> Set {
        match self {
            Outcome::Built(s) => s,
            Outcome::Members(v) => {
                let mut s = Set::new(limits);
                for m in &v {
                    s.insert_member(m.member(), limits);
                }
                s
            }
        }
    }
}

/// A live set, without touching it (the lookups of [`compute`]'s first pass already did).
fn peek_set<'s>(shard: &'s Shard, db: usize, slot: u16, key: &[u8], now: u64) -> Option<&'s Set> {
    match shard.peek(db, slot, key, now)?.value() {
        ValueRef::Obj(Object::Set(s)) => Some(s),
        _ => None,
    }
}

/// Computes `op` over the sets at `keys` (all locked). Every key is looked up first (deleting
/// expired ones, counting hits and misses) and a key of another type fails the whole command,
/// even after an absent one, as in Redis. Absent keys are empty sets.
fn compute(
    ctx: &Ctx<'_>,
    locked: &mut Locked<'_>,
    op: Op,
    keys: &[&[u8]],
    for_write: bool,
) -> Result<Outcome, ReplyError> {
    let (db, now) = (ctx.db(), ctx.now_ms);
    let limits = ctx.srv.encoding_limits();
    let mut sizes = Vec::with_capacity(keys.len());
    for key in keys {
        let (shard, slot) = locked.shard(key);
        let e = if for_write {
            shard.lookup(db, slot, key, now, true)
        } else {
            shard.lookup_read(db, slot, key, now)
        };
        let size = set_of(e.as_deref().map(|e| e.value()))?.map(Set::len);
        drop(e);
        if size.is_none() && for_write {
            // The STORE forms read their inputs as reads too (Redis's `lookupKeyRead`).
            shard.note(notify::KEY_MISS, "keymiss", db, key);
        }
        sizes.push(size);
    }
    let members_of = |locked: &mut Locked<'_>, key: &[u8]| -> Vec<Owned> {
        let (shard, slot) = locked.shard(key);
        peek_set(shard, db, slot, key, now)
            .map_or_else(Vec::new, |s| s.iter().map(Owned::of).collect())
    };
    match op {
        Op::Inter => {
            if sizes.iter().any(Option::is_none) {
                return Ok(Outcome::Members(Vec::new()));
            }
            // Smallest first: it bounds the candidates, and each later filter shrinks them.
            let mut order: Vec<usize> = (0..keys.len()).collect();
            order.sort_by_key(|&i| sizes[i]);
            let mut cands = members_of(locked, keys[order[0]]);
            for &i in &order[1..] {
                if cands.is_empty() {
                    break;
                }
                let (shard, slot) = locked.shard(keys[i]);
                let s = peek_set(shard, db, slot, keys[i], now).expect("checked above");
                cands.retain(|c| s.contains_member(c.member()));
            }
            Ok(Outcome::Members(cands))
        }
        Op::Diff => {
            let mut cands = members_of(locked, keys[0]);
            for key in &keys[1..] {
                if cands.is_empty() {
                    break;
                }
                let (shard, slot) = locked.shard(key);
                if let Some(s) = peek_set(shard, db, slot, key, now) {
                    cands.retain(|c| !s.contains_member(c.member()));
                }
            }
            Ok(Outcome::Members(cands))
        }
        Op::Union => {
            let mut acc = Set::new(&limits);
            for key in keys {
                let (shard, slot) = locked.shard(key);
                if let Some(s) = peek_set(shard, db, slot, key, now) {
                    for m in s.iter() {
                        acc.insert_member(m, &limits);
                    }
                }
            }
            Ok(Outcome::Built(acc))
        }
    }
}

fn algebra_reply(ctx: &mut Ctx<'_>, args: &Args<'_>, op: Op) -> CmdResult {
    let keys: Vec<&[u8]> = args.tail(1).iter().collect();
    let mut locked = ctx.lock_keys(keys.iter().copied());
    let outcome = compute(ctx, &mut locked, op, &keys, false)?;
    outcome.reply(&mut ctx.out);
    Ok(())
}

fn algebra_store(ctx: &mut Ctx<'_>, args: &Args<'_>, op: Op) -> CmdResult {
    let dst = args.get(1);
    let keys: Vec<&[u8]> = args.tail(2).iter().collect();
    let (db, now) = (ctx.db(), ctx.now_ms);
    let limits = ctx.srv.encoding_limits();
    let mut locked = ctx.lock_keys(std::iter::once(dst).chain(keys.iter().copied()));
    let outcome = compute(ctx, &mut locked, op, &keys, true)?;
    let n = outcome.len();
    let (shard, slot) = locked.shard(dst);
    if n == 0 {
        if shard.remove(db, slot, dst).is_some() {
            shard.note(notify::GENERIC, "del", db, dst);
        }
    } else {
        // Taken under the locks: later writes to the key get larger versions.
        let version = ctx.version();
        let set = outcome.into_set(&limits);
        shard.insert(db, slot, object_entry(dst, Object::Set(set), version), now);
        let event = match op {
            Op::Inter => "sinterstore",
            Op::Union => "sunionstore",
            Op::Diff => "sdiffstore",
        };
        shard.note(notify::SET, event, db, dst);
    }
    ctx.out.int(n as i64);
    Ok(())
}

fn sinter(ctx: &mut Ctx<'_>, args: &Args<'_>) -> CmdResult {
    algebra_reply(ctx, args, Op::Inter)
}

fn sunion(ctx: &mut Ctx<'_>, args: &Args<'_>) -> CmdResult {
    algebra_reply(ctx, args, Op::Union)
}

fn sdiff(ctx: &mut Ctx<'_>, args: &Args<'_>) -> CmdResult {
    algebra_reply(ctx, args, Op::Diff)
}

fn sinterstore(ctx: &mut Ctx<'_>, args: &Args<'_>) -> CmdResult {
    algebra_store(ctx, args, Op::Inter)
}

fn sunionstore(ctx: &mut Ctx<'_>, args: &Args<'_>) -> CmdResult {
    algebra_store(ctx, args, Op::Union)
}

fn sdiffstore(ctx: &mut Ctx<'_>, args: &Args<'_>) -> CmdResult {
    algebra_store(ctx, args, Op::Diff)
}

fn sintercard(ctx: &mut Ctx<'_>, args: &Args<'_>) -> CmdResult {
    let numkeys = parse_i64(args.get(1))
        .filter(|n| *n > 0)
        .ok_or(ReplyError::err_static("numkeys should be greater than 0"))?;
    if numkeys as u64 > (args.len() - 2) as u64 {
        return Err(ReplyError::err_static(
            "Number of keys can't be greater than number of args",
        ));
    }
    let numkeys = numkeys as usize;
    let mut limit = 0usize;
    let mut i = 2 + numkeys;
    while i < args.len() {
        if args.is(i, "LIMIT") && i + 1 < args.len() {
            limit = parse_i64(args.get(i + 1))
                .filter(|n| *n >= 0)
                .ok_or(ReplyError::err_static("LIMIT can't be negative"))?
                as usize;
            i += 2;
        } else {
            return Err(ERR_SYNTAX);
        }
    }
    let keys: Vec<&[u8]> = args.tail(2).iter().take(numkeys).collect();
    let mut locked = ctx.lock_keys(keys.iter().copied());
    let n = compute(ctx, &mut locked, Op::Inter, &keys, false)?.len();
    ctx.out.int(if limit > 0 { n.min(limit) } else { n } as i64);
    Ok(())
}

#[cfg(test)]
mod tests {
    use crate::hashes::tests::Bench;
    use crate::tests::run;

    const WRONGTYPE: &str =
        "-WRONGTYPE Operation against a key holding the wrong kind of value\r\n";

    /// Members of a RESP2 array reply, sorted.
    fn members(reply: &str) -> Vec<String> {
        let mut v: Vec<String> = reply
            .split("\r\n")
            .skip(1)
            .collect::<Vec<_>>()
            .chunks(2)
            .filter(|c| c.len() == 2)
            .map(|c| c[1].to_string())
            .collect();
        v.sort();
        v
    }

    #[test]
    fn add_remove_and_membership() {
        let r = run(&[
            &["SADD", "s", "1", "2", "2", "a"],
            &["SADD", "s", "a"],
            &["SCARD", "s"],
            &["SISMEMBER", "s", "a"],
            &["SISMEMBER", "s", "zz"],
            &["SMISMEMBER", "s", "1", "zz", "2"],
            &["SMISMEMBER", "nokey", "a", "b"],
            &["SMEMBERS", "s"],
            &["SREM", "s", "1", "zz", "1"],
            &["SREM", "s", "2", "a"],
            &["EXISTS", "s"],
            &["SMEMBERS", "nokey"],
            &["SCARD", "nokey"],
            &["SREM", "nokey", "a"],
        ]);
        assert_eq!(r[0], ":3\r\n");
        assert_eq!(r[1], ":0\r\n");
        assert_eq!(r[2], ":3\r\n");
        assert_eq!((r[3].as_str(), r[4].as_str()), (":1\r\n", ":0\r\n"));
        assert_eq!(r[5], "*3\r\n:1\r\n:0\r\n:1\r\n");
        assert_eq!(r[6], "*2\r\n:0\r\n:0\r\n");
        assert_eq!(members(&r[7]), ["1", "2", "a"]);
        assert_eq!(r[8], ":1\r\n");
        assert_eq!(r[9], ":2\r\n");
        assert_eq!(r[10], ":0\r\n", "an emptied set is deleted");
        assert_eq!(r[11], "*0\r\n");
        assert_eq!(r[12], ":0\r\n");
        assert_eq!(r[13], ":0\r\n");
    }

    #[test]
    fn intsets_are_sorted_and_convert() {
        let mut b = Bench::new();
        b.run(&["SADD", "i", "3", "-1", "100000", "2"]);
        assert_eq!(b.run(&["OBJECT", "ENCODING", "i"]), "$6\r\nintset\r\n");
        assert_eq!(
            b.run(&["SMEMBERS", "i"]),
            "*4\r\n$2\r\n-1\r\n$1\r\n2\r\n$1\r\n3\r\n$6\r\n100000\r\n"
        );
        b.run(&["SADD", "i", "07"]);
        assert_eq!(b.run(&["OBJECT", "ENCODING", "i"]), "$9\r\nhashtable\r\n");
        b.run(&["CONFIG", "SET", "set-max-intset-entries", "2"]);
        b.run(&["SADD", "j", "1", "2"]);
        assert_eq!(b.run(&["OBJECT", "ENCODING", "j"]), "$6\r\nintset\r\n");
        b.run(&["SADD", "j", "3"]);
        assert_eq!(b.run(&["OBJECT", "ENCODING", "j"]), "$9\r\nhashtable\r\n");
        b.check_invariants();
    }

    #[test]
    fn spop_and_srandmember() {
        let r = run(&[
            &["SADD", "s", "a", "b", "c"],
            &["SPOP", "s", "-1"],
            &["SPOP", "s", "x"],
            &["SPOP", "s", "1", "2"],
            &["SPOP", "s", "0"],
            &["SPOP", "nokey"],
            &["SPOP", "nokey", "2"],
            &["SRANDMEMBER", "s", "x"],
            &["SRANDMEMBER", "s", "1", "2"],
            &["SRANDMEMBER", "s", "-9223372036854775808"],
            &["SRANDMEMBER", "s", "-9223372036854775807"],
            &["SRANDMEMBER", "nokey"],
            &["SRANDMEMBER", "nokey", "-2"],
            &["SRANDMEMBER", "s", "0"],
            &["SRANDMEMBER", "s", "-5"],
            &["SRANDMEMBER", "s", "5"],
            &["SRANDMEMBER", "s", "2"],
            &["SPOP", "s", "2"],
            &["SPOP", "s", "5"],
            &["EXISTS", "s"],
        ]);
        assert_eq!(r[1], "-ERR value is out of range, must be positive\r\n");
        assert_eq!(r[2], "-ERR value is out of range, must be positive\r\n");
        assert_eq!(r[3], "-ERR syntax error\r\n");
        assert_eq!(r[4], "*0\r\n");
        assert_eq!(r[5], "$-1\r\n");
        assert_eq!(r[6], "*0\r\n");
        assert_eq!(r[7], "-ERR value is not an integer or out of range\r\n");
        assert_eq!(r[8], "-ERR syntax error\r\n");
        assert_eq!(
            r[9],
            "-ERR value is out of range, value must between -9223372036854775807 and 9223372036854775807\r\n"
        );
        assert!(r[10].starts_with("-ERR value is out of range"), "{}", r[10]);
        assert_eq!(r[11], "$-1\r\n");
        assert_eq!(r[12], "*0\r\n");
        assert_eq!(r[13], "*0\r\n");
        assert!(r[14].starts_with("*5\r\n"));
        assert_eq!(members(&r[15]), ["a", "b", "c"]);
        let two = members(&r[16]);
        assert_eq!(two.len(), 2);
        assert_ne!(two[0], two[1]);
        let popped = members(&r[17]);
        assert_eq!(popped.len(), 2);
        assert_eq!(members(&r[18]).len(), 1);
        assert_eq!(r[19], ":0\r\n");
    }

    #[test]
    fn resp3_shapes() {
        let r = run(&[
            &["HELLO", "3"],
            &["SADD", "s", "a"],
            &["SMEMBERS", "s"],
            &["SPOP", "nokey", "1"],
            &["SRANDMEMBER", "s", "1"],
            &["SINTER", "s", "s"],
            &["SPOP", "s", "1"],
            &["SPOP", "s"],
        ]);
        assert_eq!(r[2], "~1\r\n$1\r\na\r\n");
        assert_eq!(r[3], "~0\r\n");
        assert_eq!(r[4], "*1\r\n$1\r\na\r\n");
        assert_eq!(r[5], "~1\r\n$1\r\na\r\n");
        assert_eq!(r[6], "~1\r\n$1\r\na\r\n");
        assert_eq!(r[7], "_\r\n");
    }

    #[test]
    fn algebra_and_stores() {
        let mut b = Bench::new();
        b.run(&["SADD", "a", "1", "2", "3", "x"]);
        b.run(&["SADD", "b", "2", "3", "4"]);
        b.run(&["SADD", "c", "3", "4", "5"]);
        b.run(&["SET", "str", "v"]);
        assert_eq!(members(&b.run(&["SINTER", "a", "b", "c"])), ["3"]);
        assert_eq!(
            members(&b.run(&["SINTER", "a", "nokey"])),
            Vec::<String>::new()
        );
        assert_eq!(
            members(&b.run(&["SUNION", "a", "b", "nokey"])),
            ["1", "2", "3", "4", "x"]
        );
        assert_eq!(members(&b.run(&["SDIFF", "a", "b", "nokey"])), ["1", "x"]);
        assert_eq!(members(&b.run(&["SDIFF", "a", "a"])), Vec::<String>::new());
        assert_eq!(b.run(&["SDIFF", "nokey", "a"]), "*0\r\n");
        for cmd in [
            &["SINTER", "nokey", "str"][..],
            &["SINTER", "str", "nokey"],
            &["SUNION", "a", "str"],
            &["SDIFF", "nokey", "str"],
            &["SDIFF", "str", "a"],
            &["SINTERSTORE", "d", "nokey", "str"],
            &["SINTERCARD", "2", "nokey", "str"],
        ] {
            assert_eq!(b.run(cmd), WRONGTYPE, "{cmd:?}");
        }
        // STORE: overwrites whatever the destination holds (TTL included), intset when it can.
        b.run(&["SET", "d", "x", "EX", "100"]);
        assert_eq!(b.run(&["SINTERSTORE", "d", "a", "b"]), ":2\r\n");
        assert_eq!(b.run(&["TTL", "d"]), ":-1\r\n");
        assert_eq!(b.run(&["OBJECT", "ENCODING", "d"]), "$6\r\nintset\r\n");
        assert_eq!(members(&b.run(&["SMEMBERS", "d"])), ["2", "3"]);
        assert_eq!(b.run(&["SUNIONSTORE", "d", "a", "c"]), ":6\r\n");
        assert_eq!(b.run(&["OBJECT", "ENCODING", "d"]), "$9\r\nhashtable\r\n");
        assert_eq!(b.run(&["SDIFFSTORE", "d", "a", "b"]), ":2\r\n");
        assert_eq!(members(&b.run(&["SMEMBERS", "d"])), ["1", "x"]);
        assert_eq!(b.run(&["SDIFFSTORE", "d", "b", "b"]), ":0\r\n");
        assert_eq!(
            b.run(&["EXISTS", "d"]),
            ":0\r\n",
            "an empty result deletes the destination"
        );
        assert_eq!(b.run(&["SINTERSTORE", "str", "a"]), ":4\r\n");
        assert_eq!(b.run(&["TYPE", "str"]), "+set\r\n");
        // A source may be the destination.
        assert_eq!(b.run(&["SUNIONSTORE", "a", "a", "c"]), ":6\r\n");
        b.check_invariants();
    }

    #[test]
    fn sintercard_arguments_and_limit() {
        let r = run(&[
            &["SADD", "a", "1", "2", "3"],
            &["SADD", "b", "1", "2", "3", "4"],
            &["SINTERCARD", "2", "a", "b"],
            &["SINTERCARD", "2", "a", "b", "LIMIT", "2"],
            &["SINTERCARD", "2", "a", "b", "LIMIT", "0"],
            &["SINTERCARD", "0", "a"],
            &["SINTERCARD", "x", "a"],
            &["SINTERCARD", "-1", "a"],
            &["SINTERCARD", "3", "a", "b"],
            &["SINTERCARD", "1", "a", "LIMIT", "-1"],
            &["SINTERCARD", "1", "a", "LIMIT", "x"],
            &["SINTERCARD", "1", "a", "LIMIT"],
            &["SINTERCARD", "1", "a", "FOO", "1"],
            &["SINTERCARD", "2", "a", "nokey"],
        ]);
        assert_eq!(r[2], ":3\r\n");
        assert_eq!(r[3], ":2\r\n");
        assert_eq!(r[4], ":3\r\n");
        for reply in &r[5..8] {
            assert_eq!(reply, "-ERR numkeys should be greater than 0\r\n");
        }
        assert_eq!(
            r[8],
            "-ERR Number of keys can't be greater than number of args\r\n"
        );
        assert_eq!(r[9], "-ERR LIMIT can't be negative\r\n");
        assert_eq!(r[10], "-ERR LIMIT can't be negative\r\n");
        assert_eq!(r[11], "-ERR syntax error\r\n");
        assert_eq!(r[12], "-ERR syntax error\r\n");
        assert_eq!(r[13], ":0\r\n");
    }

    #[test]
    fn smove_like_redis() {
        let mut b = Bench::new();
        b.run(&["SADD", "s", "1", "2"]);
        b.run(&["SET", "str", "v"]);
        assert_eq!(b.run(&["SMOVE", "nokey", "str", "1"]), ":0\r\n");
        assert_eq!(b.run(&["SMOVE", "s", "str", "9"]), WRONGTYPE);
        assert_eq!(b.run(&["SMOVE", "str", "s", "1"]), WRONGTYPE);
        assert_eq!(b.run(&["SMOVE", "s", "s", "9"]), ":0\r\n");
        assert_eq!(b.run(&["SMOVE", "s", "s", "1"]), ":1\r\n");
        assert_eq!(b.run(&["SMOVE", "s", "t", "9"]), ":0\r\n");
        assert_eq!(b.run(&["EXISTS", "t"]), ":0\r\n");
        let v_s = b.version("s");
        assert_eq!(b.write("t", &["SMOVE", "s", "t", "1"], true), ":1\r\n");
        assert!(b.version("s") > v_s);
        assert_eq!(b.run(&["SMOVE", "s", "t", "2"]), ":1\r\n");
        assert_eq!(b.run(&["EXISTS", "s"]), ":0\r\n");
        assert_eq!(members(&b.run(&["SMEMBERS", "t"])), ["1", "2"]);
        b.check_invariants();
    }

    #[test]
    fn sscan_like_redis() {
        let mut b = Bench::new();
        b.run(&["SADD", "i", "1", "2", "10"]);
        assert_eq!(
            b.run(&["SSCAN", "i", "5", "MATCH", "1*", "COUNT", "1"]),
            "*2\r\n$1\r\n0\r\n*2\r\n$1\r\n1\r\n$2\r\n10\r\n"
        );
        assert_eq!(
            b.run(&["SSCAN", "i", "0", "TYPE", "string"]),
            "-ERR syntax error\r\n"
        );
        assert_eq!(b.run(&["SSCAN", "i", "-"]), "-ERR invalid cursor\r\n");
        assert_eq!(b.run(&["SSCAN", "nokey", "0"]), "*2\r\n$1\r\n0\r\n*0\r\n");
        for i in 0..200 {
            b.run(&["SADD", "h", &format!("m{i}")]);
        }
        let mut seen = std::collections::HashSet::new();
        let mut cursor = "0".to_string();
        for round in 0.. {
            assert!(round < 200, "scan does not finish");
            let r = b.run(&["SSCAN", "h", &cursor]);
            let lines: Vec<&str> = r.split("\r\n").collect();
            cursor = lines[2].to_string();
            for m in lines[4..].iter().skip(1).step_by(2) {
                if !m.is_empty() {
                    seen.insert(m.to_string());
                }
            }
            if cursor == "0" {
                break;
            }
        }
        assert_eq!(seen.len(), 200);
    }

    #[test]
    fn every_write_advances_the_version_and_noops_do_not() {
        let mut b = Bench::new();
        b.write("s", &["SADD", "s", "a", "b", "c"], true);
        b.write("s", &["SADD", "s", "a"], false);
        b.write("s", &["SREM", "s", "zz"], false);
        b.write("s", &["SREM", "s", "a"], true);
        b.write("s", &["SPOP", "s"], true);
        b.write("s", &["SPOP", "s", "0"], false);
        b.write("s", &["SRANDMEMBER", "s"], false);
        b.write("s", &["SMEMBERS", "s"], false);
        b.write("s", &["SADD", "s", "x", "y"], true);
        b.write("s", &["SPOP", "s", "1"], true);
        b.write("d", &["SUNIONSTORE", "d", "s"], true);
        b.write("d", &["SINTERSTORE", "d", "s", "d"], true);
        b.write("s", &["SINTERSTORE", "d", "s"], false);
        b.run(&["SPOP", "s", "10"]);
        assert_eq!(b.version("s"), None);
        b.check_invariants();
    }

    #[test]
    fn dump_restore_round_trips_both_encodings() {
        let mut b = Bench::new();
        b.run(&["SADD", "ints", "1", "-5", "70000"]);
        b.run(&["SADD", "strs", "a", "1"]);
        for key in ["ints", "strs"] {
            let dumped = b.run(&["DUMP", key]);
            assert!(dumped.starts_with('$'), "{dumped}");
            let enc = b.run(&["OBJECT", "ENCODING", key]);
            let slot = shoal_keyspace::key_slot(key.as_bytes());
            let payload = {
                let shard = b.srv.ks.lock(b.srv.ks.shard_of(slot));
                crate::keys::dump_value(
                    shard
                        .peek(0, slot, key.as_bytes(), crate::hashes::tests::NOW_MS)
                        .unwrap(),
                )
            };
            let limits = b.srv.encoding_limits();
            let e = crate::keys::restore_value(&payload, b"copy", None, 1, &limits).unwrap();
            assert_eq!(
                format!("${}\r\n{}\r\n", e.encoding().len(), e.encoding()),
                enc
            );
        }
    }
}
