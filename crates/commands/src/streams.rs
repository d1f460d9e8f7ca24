//! Stream commands: XADD, XRANGE, XREVRANGE, XLEN, XDEL, XTRIM, XREAD, XREADGROUP, XGROUP, XACK,
//! XPENDING, XCLAIM, XAUTOCLAIM, XINFO, XSETID — Redis 7.0's `t_stream.c`, replies and errors
//! byte for byte. The value lives in `shoal_keyspace::types::stream`.
//!
//! **Blocking.** XREAD and XREADGROUP with BLOCK wait through the shared machinery of
//! `blocking.rs`: nothing to serve, they ask to wait on their keys; any write naming a key (XADD,
//! DEL, XGROUP DESTROY, ...) wakes them and they run again. A retry serves as Redis serves a
//! blocked client (`serveClientsBlockedOnStreamKey`): only the first stream that has something
//! newer, COUNT defaulting to 1000; XREADGROUP errors out when its key or group is gone. XREAD's
//! `$` stands for the last ID *when the command arrived*, so the request waits with `$` replaced
//! by that ID (`Ctx::block_on_rewritten`).
//!
//! **Replication.** Every change to an existing stream is noted as an element-level op
//! (`shoal_keyspace::delta`: the entry added with its concrete ID, where a trim left the start,
//! an entry deleted, the counters, a group's counters, a consumer seen, a pending entry assigned
//! or acknowledged), so a replica replays exactly the primary's changes, in place of Redis's
//! XADD-with-ID / XCLAIM / XGROUP SETID rewrites. A stream created by the command goes whole. A
//! change not noted would make the replica diverge: each mutation below notes its op next to it.
//!
//! An empty stream is kept (Redis never deletes one for being empty), unlike the other types.

use crate::error::ReplyError;

use shoal_keyspace::delta::Ops;
use shoal_keyspace::types::stream::{
    ConsumerGroup, ENTRIES_READ_INVALID, EntryRef, Stream, StreamId, Trim,
};
use shoal_keyspace::{Kind, Object, ValueRef};
use shoal_resp::ReplyWriter;

use crate::args::{ERR_NO_SUCH_KEY, ERR_NOT_INTEGER, ERR_SYNTAX, OwnedArgs, parse_i64};
use crate::blocking::nothing_yet_stream;
use crate::coll::object_mut;
use crate::hashes::object_entry;
use crate::notify::STREAM as NOTIFY_STREAM;
use crate::table::{BeginSearch, FindKeys, Group, KeySpec, Spec, flag::*, key::*};
use crate::{Args, CmdResult, Ctx, err};

const STREAM: Group = Group::Stream;

const fn key1(flags: u32) -> KeySpec {
    KeySpec::at(1, flags)
}

pub static COMMANDS: &[Spec] = &[
    Spec {
        name: "xack",
        arity: -4,
        flags: WRITE | FAST,
        keys: &[key1(RW | UPDATE)],
        group: STREAM,
        since: "5.0.0",
        summary: "Marks a pending message as correctly processed, effectively removing it from the pending entries list of the consumer group. Return value of the command is the number of messages successfully acknowledged, that is, the IDs we were actually able to resolve in the PEL.",
        handler: Some(xack),
        ..Spec::DEFAULT
    },
    Spec {
        name: "xadd",
        arity: -5,
        flags: WRITE | DENYOOM | FAST,
        keys: &[key1(RW | UPDATE)
            .notes("UPDATE instead of INSERT because of the optional trimming feature")],
        group: STREAM,
        since: "5.0.0",
        summary: "Appends a new entry to a stream",
        tips: &["nondeterministic_output"],
        handler: Some(xadd),
        ..Spec::DEFAULT
    },
    Spec {
        name: "xautoclaim",
        arity: -6,
        flags: WRITE | FAST,
        keys: &[key1(RW | DELETE)],
        group: STREAM,
        since: "6.2.0",
        summary: "Changes (or acquires) ownership of messages in a consumer group, as if the messages were delivered to the specified consumer.",
        tips: &["nondeterministic_output"],
        handler: Some(xautoclaim),
        ..Spec::DEFAULT
    },
    Spec {
        name: "xclaim",
        arity: -6,
        flags: WRITE | FAST,
        keys: &[key1(RW | UPDATE)],
        group: STREAM,
        since: "5.0.0",
        summary: "Changes (or acquires) ownership of a message in a consumer group, as if the message was delivered to the specified consumer.",
        tips: &["nondeterministic_output"],
        handler: Some(xclaim),
        ..Spec::DEFAULT
    },
    Spec {
        name: "xdel",
        arity: -3,
        flags: WRITE | FAST,
        keys: &[key1(RW | DELETE)],
        group: STREAM,
        since: "5.0.0",
        summary: "Removes the specified entries from the stream. Returns the number of items actually deleted, that may be different from the number of IDs passed in case certain IDs do not exist.",
        handler: Some(xdel),
        ..Spec::DEFAULT
    },
    Spec {
        name: "xgroup",
        arity: -2,
        flags: 0,
        group: STREAM,
        since: "5.0.0",
        summary: "A container for consumer groups commands",
        subcommands: XGROUP,
        ..Spec::DEFAULT
    },
    Spec {
        name: "xinfo",
        arity: -2,
        flags: 0,
        group: STREAM,
        since: "5.0.0",
        summary: "A container for stream introspection commands",
        subcommands: XINFO,
        ..Spec::DEFAULT
    },
    Spec {
        name: "xlen",
        arity: 2,
        flags: READONLY | FAST,
        keys: &[key1(RO)],
        group: STREAM,
        since: "5.0.0",
        summary: "Return the number of entries in a stream",
        handler: Some(xlen),
        ..Spec::DEFAULT
    },
    Spec {
        name: "xpending",
        arity: -3,
        flags: READONLY,
        keys: &[key1(RO | ACCESS)],
        group: STREAM,
        since: "5.0.0",
        summary: "Return information and entries from a stream consumer group pending entries list, that are messages fetched but never acknowledged.",
        tips: &["nondeterministic_output"],
        handler: Some(xpending),
        ..Spec::DEFAULT
    },
    Spec {
        name: "xrange",
        arity: -4,
        flags: READONLY,
        keys: &[key1(RO | ACCESS)],
        group: STREAM,
        since: "5.0.0",
        summary: "Return a range of elements in a stream, with IDs matching the specified IDs interval",
        handler: Some(xrange),
        ..Spec::DEFAULT
    },
    Spec {
        name: "xread",
        arity: -4,
        flags: READONLY | BLOCKING | MOVABLEKEYS,
        keys: &[KeySpec {
            flags: RO | ACCESS,
            begin_search: BeginSearch::Keyword {
                keyword: "STREAMS",
                start_from: 1,
            },
            find_keys: FindKeys::Range {
                last_key: -1,
                step: 1,
                limit: 2,
            },
            notes: "",
        }],
        group: STREAM,
        since: "5.0.0",
        summary: "Return never seen elements in multiple streams, with IDs greater than the ones reported by the caller for each stream. Can block.",
        handler: Some(xread),
        ..Spec::DEFAULT
    },
    Spec {
        name: "xreadgroup",
        arity: -7,
        flags: WRITE | BLOCKING | MOVABLEKEYS,
        keys: &[KeySpec {
            flags: RO | ACCESS,
            begin_search: BeginSearch::Keyword {
                keyword: "STREAMS",
                start_from: 4,
            },
            find_keys: FindKeys::Range {
                last_key: -1,
                step: 1,
                limit: 2,
            },
            notes: "",
        }],
        group: STREAM,
        since: "5.0.0",
        summary: "Return new entries from a stream using a consumer group, or access the history of the pending entries for a given consumer. Can block.",
        handler: Some(xreadgroup),
        ..Spec::DEFAULT
    },
    Spec {
        name: "xrevrange",
        arity: -4,
        flags: READONLY,
        keys: &[key1(RO | ACCESS)],
        group: STREAM,
        since: "5.0.0",
        summary: "Return a range of elements in a stream, with IDs matching the specified IDs interval, in reverse order (from greater to smaller IDs) compared to XRANGE",
        handler: Some(xrevrange),
        ..Spec::DEFAULT
    },
    Spec {
        name: "xsetid",
        arity: -3,
        flags: WRITE | DENYOOM | FAST,
        keys: &[key1(RW | UPDATE)],
        group: STREAM,
        since: "5.0.0",
        summary: "An internal command for replicating stream values",
        handler: Some(xsetid),
        ..Spec::DEFAULT
    },
    Spec {
        name: "xtrim",
        arity: -4,
        flags: WRITE,
        keys: &[key1(RW | DELETE)],
        group: STREAM,
        since: "5.0.0",
        summary: "Trims the stream to (approximately if '~' is passed) a certain size",
        tips: &["nondeterministic_output"],
        handler: Some(xtrim),
        ..Spec::DEFAULT
    },
];

static XGROUP: &[Spec] = &[
    Spec {
        name: "xgroup|create",
        arity: -5,
        flags: WRITE | DENYOOM,
        keys: &[KeySpec::at(2, RW | INSERT)],
        group: STREAM,
        since: "5.0.0",
        summary: "Create a consumer group.",
        handler: Some(xgroup),
        ..Spec::DEFAULT
    },
    Spec {
        name: "xgroup|createconsumer",
        arity: 5,
        flags: WRITE | DENYOOM,
        keys: &[KeySpec::at(2, RW | INSERT)],
        group: STREAM,
        since: "6.2.0",
        summary: "Create a consumer in a consumer group.",
        handler: Some(xgroup),
        ..Spec::DEFAULT
    },
    Spec {
        name: "xgroup|delconsumer",
        arity: 5,
        flags: WRITE,
        keys: &[KeySpec::at(2, RW | DELETE)],
        group: STREAM,
        since: "5.0.0",
        summary: "Delete a consumer from a consumer group.",
        handler: Some(xgroup),
        ..Spec::DEFAULT
    },
    Spec {
        name: "xgroup|destroy",
        arity: 4,
        flags: WRITE,
        keys: &[KeySpec::at(2, RW | DELETE)],
        group: STREAM,
        since: "5.0.0",
        summary: "Destroy a consumer group.",
        handler: Some(xgroup),
        ..Spec::DEFAULT
    },
    Spec {
        name: "xgroup|help",
        arity: 2,
        flags: LOADING | STALE,
        group: STREAM,
        since: "5.0.0",
        summary: "Show helpful text about the different subcommands",
        handler: Some(xgroup_help),
        ..Spec::DEFAULT
    },
    Spec {
        name: "xgroup|setid",
        arity: -5,
        flags: WRITE,
        keys: &[KeySpec::at(2, RW | UPDATE)],
        group: STREAM,
        since: "5.0.0",
        summary: "Set a consumer group to an arbitrary last delivered ID value.",
        handler: Some(xgroup),
        ..Spec::DEFAULT
    },
];

static XINFO: &[Spec] = &[
    Spec {
        name: "xinfo|consumers",
        arity: 4,
        flags: READONLY,
        keys: &[KeySpec::at(2, RO | ACCESS)],
        group: STREAM,
        since: "5.0.0",
        summary: "List the consumers in a consumer group",
        tips: &["nondeterministic_output"],
        handler: Some(xinfo),
        ..Spec::DEFAULT
    },
    Spec {
        name: "xinfo|groups",
        arity: 3,
        flags: READONLY,
        keys: &[KeySpec::at(2, RO | ACCESS)],
        group: STREAM,
        since: "5.0.0",
        summary: "List the consumer groups of a stream",
        handler: Some(xinfo),
        ..Spec::DEFAULT
    },
    Spec {
        name: "xinfo|help",
        arity: 2,
        flags: LOADING | STALE,
        group: STREAM,
        since: "5.0.0",
        summary: "Show helpful text about the different subcommands",
        handler: Some(xinfo_help),
        ..Spec::DEFAULT
    },
    Spec {
        name: "xinfo|stream",
        arity: -3,
        flags: READONLY,
        keys: &[KeySpec::at(2, RO | ACCESS)],
        group: STREAM,
        since: "5.0.0",
        summary: "Get information about a stream",
        handler: Some(xinfo),
        ..Spec::DEFAULT
    },
];

// ---------------------------------------------------------------------------------------------
// Errors and parsing.

const ERR_INVALID_ID: ReplyError =
    ReplyError::err_static("Invalid stream ID specified as stream command argument");
const ERR_ID_TOO_SMALL: ReplyError = ReplyError::err_static(
    "The ID specified in XADD is equal or smaller than the target stream top item",
);
const ERR_ID_ZERO: ReplyError =
    ReplyError::err_static("The ID specified in XADD must be greater than 0-0");
const ERR_EXHAUSTED: ReplyError = ReplyError::err_static(
    "The stream has exhausted the last possible ID, unable to add more items",
);
const ERR_TOO_LARGE: ReplyError = ReplyError::err_static("Elements are too large to be stored");
const ERR_START_ID: ReplyError = ReplyError::err_static("invalid start ID for the interval");
const ERR_END_ID: ReplyError = ReplyError::err_static("invalid end ID for the interval");
const ERR_ENTRIES_READ: ReplyError =
    ReplyError::err_static("value for ENTRIESREAD must be positive or -1");

/// Bytes of fields and values one entry may have (Redis's `STREAM_LISTPACK_MAX_SIZE`).
const ENTRY_BYTES_MAX: usize = 1 << 30;
/// Entries a blocked XREAD/XREADGROUP without COUNT gets when served (`XREAD_BLOCKED_DEFAULT_COUNT`).
const BLOCKED_COUNT_DEFAULT: usize = 1000;
/// XAUTOCLAIM looks at up to COUNT × this many PEL entries per call.
const AUTOCLAIM_ATTEMPTS_FACTOR: i64 = 10;

fn other(code: &'static str, msg: String) -> ReplyError {
    ReplyError::Other {
        code,
        msg: msg.into(),
    }
}

fn lossy(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// `string2ull`: a canonical integer (not negative), or what C's `strtoull` takes whole (leading
/// spaces, a sign — a minus wraps around — and digits, without overflow).
fn parse_ull(s: &[u8]) -> Option<u64> {
    if let Some(v) = parse_i64(s) {
        return u64::try_from(v).ok();
    }
    let mut i = 0;
    while i < s.len() && matches!(s[i], b' ' | b'\t' | b'\n' | b'\x0b' | b'\x0c' | b'\r') {
        i += 1;
    }
    let neg = match s.get(i) {
        Some(b'-') => {
            i += 1;
            true
        }
        Some(b'+') => {
            i += 1;
            false
        }
        _ => false,
    };
    if i >= s.len() {
        return None;
    }
    let mut v: u64 = 0;
    for &c in &s[i..] {
        if !c.is_ascii_digit() {
            return None;
        }
        v = v.checked_mul(10)?.checked_add((c - b'0') as u64)?;
    }
    Some(if neg { v.wrapping_neg() } else { v })
}

/// `streamGenericParseIDOrReply`: `-`, `+`, `ms`, `ms-seq`, and (for XADD, `seq_star`) `ms-*`.
/// Returns the ID and whether the sequence was given.
fn parse_id_generic(
    arg: &[u8],
    missing_seq: u64,
    strict: bool,
    seq_star: bool,
) -> Result<(StreamId, bool), ReplyError> {
    // Redis copies the argument into a 128-byte buffer and stops at a NUL.
    if arg.len() > 127 {
        return Err(ERR_INVALID_ID);
    }
    let arg = arg.split(|&b| b == 0).next().unwrap_or(&[]);
    if strict && (arg == b"-" || arg == b"+") {
        return Err(ERR_INVALID_ID);
    }
    if arg == b"-" {
        return Ok((StreamId::MIN, true));
    }
    if arg == b"+" {
        return Ok((StreamId::MAX, true));
    }
    let (ms_part, seq_part) = match arg.iter().position(|&b| b == b'-') {
        Some(p) => (&arg[..p], Some(&arg[p + 1..])),
        None => (arg, None),
    };
    let ms = parse_ull(ms_part).ok_or(ERR_INVALID_ID)?;
    match seq_part {
        Some(b"*") if seq_star => Ok((StreamId::new(ms, 0), false)),
        Some(s) => Ok((StreamId::new(ms, parse_ull(s).ok_or(ERR_INVALID_ID)?), true)),
        None => Ok((StreamId::new(ms, missing_seq), true)),
    }
}

fn parse_id(arg: &[u8], missing_seq: u64) -> Result<StreamId, ReplyError> {
    parse_id_generic(arg, missing_seq, false, false).map(|(id, _)| id)
}

fn parse_strict_id(arg: &[u8]) -> Result<StreamId, ReplyError> {
    parse_id_generic(arg, 0, true, false).map(|(id, _)| id)
}

/// `streamParseIntervalIDOrReply`: an ID, or `(ID` for an exclusive bound (strict then).
fn parse_interval_id(arg: &[u8], missing_seq: u64) -> Result<(StreamId, bool), ReplyError> {
    if arg.len() > 1 && arg[0] == b'(' {
        Ok((
            parse_id_generic(&arg[1..], missing_seq, true, false)?.0,
            true,
        ))
    } else {
        Ok((parse_id(arg, missing_seq)?, false))
    }
}

fn parse_ll(arg: &[u8]) -> Result<i64, ReplyError> {
    parse_i64(arg).ok_or(ERR_NOT_INTEGER)
}

fn parse_ll_msg(arg: &[u8], msg: &'static str) -> Result<i64, ReplyError> {
    parse_i64(arg).ok_or(ReplyError::err_static(msg))
}

// ---------------------------------------------------------------------------------------------
// Replies.

fn write_id(out: &mut ReplyWriter<'_>, id: StreamId) {
    let mut buf = [0u8; 41];
    let mut t = [0u8; 20];
    let ms = shoal_resp::fmt_u64(id.ms, &mut t);
    let n = ms.len();
    buf[..n].copy_from_slice(ms);
    buf[n] = b'-';
    let seq = shoal_resp::fmt_u64(id.seq, &mut t);
    buf[n + 1..n + 1 + seq.len()].copy_from_slice(seq);
    out.bulk(&buf[..n + 1 + seq.len()]);
}

/// `[id, [field, value, ...]]`.
fn write_entry(out: &mut ReplyWriter<'_>, e: &EntryRef<'_>) {
    out.array(2);
    write_id(out, e.id);
    out.array(e.len() * 2);
    for (f, v) in e.fields() {
        out.bulk(f);
        out.bulk(v);
    }
}

/// Entries `start..=end` (count 0: all), as an array.
fn write_range(
    out: &mut ReplyWriter<'_>,
    s: &Stream,
    start: StreamId,
    end: StreamId,
    rev: bool,
    count: usize,
) -> usize {
    let mut entries = Vec::new();
    s.range(start, end, rev, |e| {
        entries.push(e);
        count == 0 || entries.len() < count
    });
    out.array(entries.len());
    for e in &entries {
        write_entry(out, e);
    }
    entries.len()
}

/// Writes one entry `id` as `[id, fields]`, or a null when it is gone; true if present.
fn write_one(out: &mut ReplyWriter<'_>, s: &Stream, id: StreamId) -> bool {
    match s.get(id) {
        Some(e) => {
            write_entry(out, &e);
            true
        }
        None => {
            out.null();
            false
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Access to the stream at a key.

/// Runs `f` on the stream at `key` (`None` if absent) for a read command. WRONGTYPE otherwise.
fn read_stream<R>(
    ctx: &mut Ctx<'_>,
    key: &[u8],
    f: impl FnOnce(Option<&Stream>, &mut ReplyWriter<'_>, u64) -> Result<R, ReplyError>,
) -> Result<R, ReplyError> {
    let (db, now) = (ctx.db(), ctx.now_ms);
    let (mut shard, slot) = ctx.shard(key);
    let e = shard.lookup_read(db, slot, key, now);
    let s = match e.as_deref().map(|e| e.value()) {
        None => None,
        Some(ValueRef::Obj(Object::Stream(s))) => Some(&**s),
        Some(_) => return Err(ReplyError::WrongType),
    };
    f(s, &mut ctx.out, now)
}

/// Runs `f` on the stream at `key` for a write command; `None` (f not called) if absent. `f`
/// returns its result and whether it changed the stream (which stamps the command's version,
/// and so sends the value to replicas). `read`: looked up as Redis's `lookupKeyRead` (XACK,
/// XCLAIM, XAUTOCLAIM), counting a hit or a miss.
fn write_stream<R>(
    ctx: &mut Ctx<'_>,
    key: &[u8],
    read: bool,
    f: impl FnOnce(&mut Stream, &mut Ops, &mut ReplyWriter<'_>, u64) -> Result<(R, bool), ReplyError>,
) -> Result<Option<R>, ReplyError> {
    let (db, now) = (ctx.db(), ctx.now_ms);
    let (mut shard, slot) = ctx.shard(key);
    // Taken under the lock: later writes to a key get larger versions.
    let version = ctx.version();
    let found = if read {
        shard.lookup_read(db, slot, key, now)
    } else {
        shard.lookup(db, slot, key, now, true)
    };
    let Some(mut e) = found else {
        return Ok(None);
    };
    let mut ops = e.ops();
    let Object::Stream(s) = object_mut(&mut e, Kind::Stream)? else {
        unreachable!("object_mut checked the kind")
    };
    let (r, changed) = f(s, &mut ops, &mut ctx.out, now)?;
    e.note(ops);
    if changed {
        e.set_version(version);
    }
    Ok(Some(r))
}

// ---------------------------------------------------------------------------------------------
// XADD, XTRIM.

/// Trimming options shared by XADD and XTRIM.
struct TrimArgs {
    how: Option<Trim>,
    approx: bool,
    limit: u64,
    nomkstream: bool,
    /// XADD: the ID given (`None` for `*`) and whether its sequence was given.
    id: Option<(StreamId, bool)>,
}

/// `streamParseAddOrTrimArgsOrReply`; returns the options and the position after them (XADD's
/// ID position).
fn parse_add_or_trim(
    args: &Args<'_>,
    xadd: bool,
    node_max_entries: usize,
) -> Result<(TrimArgs, usize), ReplyError> {
    let mut t = TrimArgs {
        how: None,
        approx: false,
        limit: 0,
        nomkstream: false,
        id: None,
    };
    let mut limit: Option<i64> = None;
    let mut i = 2;
    let argc = args.len();
    while i < argc {
        let more = argc - 1 - i;
        let opt = args.get(i);
        if xadd && opt == b"*" {
            break;
        } else if (opt.eq_ignore_ascii_case(b"maxlen") || opt.eq_ignore_ascii_case(b"minid"))
            && more > 0
        {
            if t.how.is_some() {
                return Err(ReplyError::err_static(
                    "syntax error, MAXLEN and MINID options at the same time are not compatible",
                ));
            }
            t.approx = false;
            let next = args.get(i + 1);
            if more >= 2 && next == b"~" {
                t.approx = true;
                i += 1;
            } else if more >= 2 && next == b"=" {
                i += 1;
            }
            if opt.eq_ignore_ascii_case(b"maxlen") {
                let max = parse_ll(args.get(i + 1))?;
                if max < 0 {
                    return Err(ReplyError::err_static("The MAXLEN argument must be >= 0."));
                }
                t.how = Some(Trim::MaxLen(max as u64));
            } else {
                t.how = Some(Trim::MinId(parse_strict_id(args.get(i + 1))?));
            }
            i += 1;
        } else if opt.eq_ignore_ascii_case(b"limit") && more > 0 {
            let l = parse_ll(args.get(i + 1))?;
            if l < 0 {
                return Err(ReplyError::err_static("The LIMIT argument must be >= 0."));
            }
            limit = Some(l);
            i += 1;
        } else if xadd && opt.eq_ignore_ascii_case(b"nomkstream") {
            t.nomkstream = true;
        } else if xadd {
            t.id = Some(parse_id_generic(opt, 0, true, true)?);
            break;
        } else {
            return Err(ERR_SYNTAX);
        }
        i += 1;
    }
    if limit.is_some_and(|l| l != 0) && t.how.is_none() {
        return Err(ReplyError::err_static(
            "syntax error, LIMIT cannot be used without specifying a trimming strategy",
        ));
    }
    if !xadd && t.how.is_none() {
        return Err(ReplyError::err_static(
            "syntax error, XTRIM must be called with a trimming strategy",
        ));
    }
    match limit {
        Some(_) if !t.approx => {
            return Err(ReplyError::err_static(
                "syntax error, LIMIT cannot be used without the special ~ option",
            ));
        }
        Some(l) => t.limit = l as u64,
        None if t.approx => {
            t.limit = 100u64.saturating_mul(node_max_entries as u64);
            if t.limit == 0 || t.limit > ENTRY_BYTES_MAX as u64 {
                t.limit = 10_000;
            }
        }
        None => t.limit = 0,
    }
    Ok((t, i))
}

fn xadd(ctx: &mut Ctx<'_>, args: &Args<'_>) -> CmdResult {
    let limits = ctx.srv.encoding_limits();
    let (t, idpos) = parse_add_or_trim(args, true, limits.stream_node_max_entries)?;
    let field_pos = idpos + 1;
    if field_pos > args.len()
        || args.len() - field_pos < 2
        || !(args.len() - field_pos).is_multiple_of(2)
    {
        return Err(err!("wrong number of arguments for 'xadd' command"));
    }
    if let Some((id, true)) = t.id
        && id.is_zero()
    {
        return Err(ERR_ID_ZERO);
    }
    let fields: Vec<(&[u8], &[u8])> = (field_pos..args.len())
        .step_by(2)
        .map(|i| (args.get(i), args.get(i + 1)))
        .collect();
    let key = args.get(1);
    let (db, now) = (ctx.db(), ctx.now_ms);
    let (mut shard, slot) = ctx.shard(key);
    // Taken under the lock: later writes to a key get larger versions.
    let version = ctx.version();
    let add = |s: &mut Stream| -> Result<(StreamId, u64), ReplyError> {
        if s.last_id == StreamId::MAX {
            return Err(ERR_EXHAUSTED);
        }
        let id = match t.id {
            Some((id, true)) => id,
            Some((given, false)) => {
                if s.last_id.ms == given.ms {
                    if s.last_id.seq == u64::MAX {
                        return Err(ERR_ID_TOO_SMALL);
                    }
                    StreamId::new(given.ms, s.last_id.seq + 1)
                } else {
                    given
                }
            }
            None => {
                if now > s.last_id.ms {
                    StreamId::new(now, 0)
                } else {
                    s.last_id.next().ok_or(ERR_EXHAUSTED)?
                }
            }
        };
        if id <= s.last_id {
            return Err(ERR_ID_TOO_SMALL);
        }
        let total: usize = fields.iter().map(|(f, v)| f.len() + v.len()).sum();
        if total > ENTRY_BYTES_MAX {
            return Err(ERR_TOO_LARGE);
        }
        s.append(id, &fields, &limits);
        let trimmed = t.how.map_or(0, |how| s.trim(how, t.approx, t.limit));
        Ok((id, trimmed))
    };
    let found = match shard.lookup(db, slot, key, now, true) {
        Some(mut e) => {
            let mut ops = e.ops();
            let Object::Stream(s) = object_mut(&mut e, Kind::Stream)? else {
                unreachable!("object_mut checked the kind")
            };
            let (id, trimmed) = add(s)?;
            // Replicas get the entry with its concrete ID, and where the trim left the start.
            ops.xadd(id, &fields);
            if trimmed > 0 {
                ops.xtrim((!s.is_empty()).then_some(s.first_id));
            }
            e.note(ops);
            e.set_version(version);
            Some((id, trimmed))
        }
        None => None,
    };
    let (id, trimmed) = match found {
        Some(r) => r,
        None if t.nomkstream => {
            drop(shard);
            ctx.out.null();
            return Ok(());
        }
        None => {
            let mut s = Box::new(Stream::new());
            let r = add(&mut s)?;
            shard.insert(db, slot, object_entry(key, Object::Stream(s), version), now);
            r
        }
    };
    drop(shard);
    write_id(&mut ctx.out, id);
    ctx.notify(NOTIFY_STREAM, "xadd", key);
    if trimmed > 0 {
        ctx.notify(NOTIFY_STREAM, "xtrim", key);
    }
    Ok(())
}

fn xtrim(ctx: &mut Ctx<'_>, args: &Args<'_>) -> CmdResult {
    let limits = ctx.srv.encoding_limits();
    let (t, _) = parse_add_or_trim(args, false, limits.stream_node_max_entries)?;
    let how = t.how.expect("XTRIM has a strategy");
    let n = write_stream(ctx, args.get(1), false, |s, ops, _, _| {
        let n = s.trim(how, t.approx, t.limit);
        if n > 0 {
            ops.xtrim((!s.is_empty()).then_some(s.first_id));
        }
        Ok((n, n > 0))
    })?;
    let n = n.unwrap_or(0);
    if n > 0 {
        ctx.notify(NOTIFY_STREAM, "xtrim", args.get(1));
    }
    ctx.out.int(n as i64);
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// XRANGE, XREVRANGE, XLEN, XDEL.

fn range_generic(ctx: &mut Ctx<'_>, args: &Args<'_>, rev: bool) -> CmdResult {
    let (start_arg, end_arg) = if rev {
        (args.get(3), args.get(2))
    } else {
        (args.get(2), args.get(3))
    };
    let (mut start, start_ex) = parse_interval_id(start_arg, 0)?;
    if start_ex {
        start = start.next().ok_or(ERR_START_ID)?;
    }
    let (mut end, end_ex) = parse_interval_id(end_arg, u64::MAX)?;
    if end_ex {
        end = end.prev().ok_or(ERR_END_ID)?;
    }
    let mut count: i64 = -1;
    let mut j = 4;
    while j < args.len() {
        if args.is(j, "count") && j + 1 < args.len() {
            count = parse_ll(args.get(j + 1))?.max(0);
            j += 2;
        } else {
            return Err(ERR_SYNTAX);
        }
    }
    read_stream(ctx, args.get(1), |s, out, _| {
        let Some(s) = s else {
            out.array(0);
            return Ok(());
        };
        if count == 0 {
            out.null_array();
        } else {
            write_range(out, s, start, end, rev, count.max(0) as usize);
        }
        Ok(())
    })
}

fn xrange(ctx: &mut Ctx<'_>, args: &Args<'_>) -> CmdResult {
    range_generic(ctx, args, false)
}

fn xrevrange(ctx: &mut Ctx<'_>, args: &Args<'_>) -> CmdResult {
    range_generic(ctx, args, true)
}

fn xlen(ctx: &mut Ctx<'_>, args: &Args<'_>) -> CmdResult {
    read_stream(ctx, args.get(1), |s, out, _| {
        out.int(s.map_or(0, |s| s.len()) as i64);
        Ok(())
    })
}

fn xdel(ctx: &mut Ctx<'_>, args: &Args<'_>) -> CmdResult {
    let n = write_stream(ctx, args.get(1), false, |s, ops, _, _| {
        let ids = (2..args.len())
            .map(|i| parse_strict_id(args.get(i)))
            .collect::<Result<Vec<_>, _>>()?;
        let mut n = 0;
        for id in ids {
            if s.delete(&[id]) == 1 {
                ops.xdel(id);
                n += 1;
            }
        }
        Ok((n, n > 0))
    })?;
    let n = n.unwrap_or(0);
    if n > 0 {
        ctx.notify(NOTIFY_STREAM, "xdel", args.get(1));
    }
    ctx.out.int(n as i64);
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Consumer-group counters (lag, entries-read), as Redis 7.0 computes them.

/// `streamRangeHasTombstones` from `start` to the end.
fn has_tombstones_from(s: &Stream, start: StreamId) -> bool {
    if s.is_empty() || s.max_deleted_id.is_zero() {
        return false;
    }
    if s.first_id > s.max_deleted_id {
        return false;
    }
    start <= s.max_deleted_id
}

/// `streamReplyWithCGLag`: the group's lag, or `None` (null) when unknown.
fn group_lag(s: &Stream, g: &ConsumerGroup) -> Option<i64> {
    if s.entries_added == 0 {
        return Some(0);
    }
    if g.entries_read != ENTRIES_READ_INVALID && !has_tombstones_from(s, g.last_id) {
        return Some(s.entries_added as i64 - g.entries_read);
    }
    let read = s.estimate_distance(g.last_id);
    (read != ENTRIES_READ_INVALID).then(|| s.entries_added as i64 - read)
}

/// Delivers new entries after `start` (inclusive) to `consumer` of `group` (XREADGROUP `>`):
/// advances the group, adds PEL entries unless `noack`. Writes the entries array.
#[allow(clippy::too_many_arguments)]
fn deliver_new(
    out: &mut ReplyWriter<'_>,
    s: &mut Stream,
    group: &[u8],
    consumer: &[u8],
    start: StreamId,
    count: usize,
    noack: bool,
    now: u64,
    ops: &mut Ops,
) {
    let mut ids = Vec::new();
    let mut body = Vec::new();
    {
        let mut w = ReplyWriter::new(&mut body, out_proto(out));
        s.range(start, StreamId::MAX, false, |e| {
            write_entry(&mut w, &e);
            ids.push(e.id);
            count == 0 || ids.len() < count
        });
    }
    out.array(ids.len());
    out.raw(&body);
    let (entries_added, tomb): (u64, Vec<bool>) = (
        s.entries_added,
        ids.iter().map(|&id| has_tombstones_from(s, id)).collect(),
    );
    let estimates: Vec<i64> = ids.iter().map(|&id| s.estimate_distance(id)).collect();
    let g = s.groups.get_mut(group).expect("group checked");
    for (i, &id) in ids.iter().enumerate() {
        if id > g.last_id {
            if g.entries_read != ENTRIES_READ_INVALID && !tomb[i] {
                g.entries_read += 1;
            } else if entries_added != 0 {
                g.entries_read = estimates[i];
            }
            g.last_id = id;
        }
        if !noack {
            g.assign(id, consumer, now, 1);
            ops.xassign(group, id, consumer, now, 1);
        }
    }
    if !ids.is_empty() {
        ops.xgroup_put(group, g.last_id, g.entries_read);
    }
}

/// Serves a consumer's own history (XREADGROUP with an ID): its PEL from `start`, each entry
/// (or a null for an entry deleted since) counting one more delivery.
#[allow(clippy::too_many_arguments)]
fn deliver_history(
    out: &mut ReplyWriter<'_>,
    s: &mut Stream,
    group: &[u8],
    consumer: &[u8],
    start: StreamId,
    count: usize,
    now: u64,
    ops: &mut Ops,
) {
    let g = s.groups.get(group).expect("group checked");
    let ids: Vec<StreamId> = g
        .consumers
        .get(consumer)
        .map(|c| {
            c.pel
                .range(start..)
                .take(if count == 0 { usize::MAX } else { count })
                .copied()
                .collect()
        })
        .unwrap_or_default();
    out.array(ids.len());
    let mut present = Vec::with_capacity(ids.len());
    for &id in &ids {
        match s.get(id) {
            Some(e) => {
                write_entry(out, &e);
                present.push(id);
            }
            None => {
                out.array(2);
                write_id(out, id);
                out.null_array();
            }
        }
    }
    let g = s.groups.get_mut(group).expect("group checked");
    for id in present {
        if let Some(p) = g.pel.get_mut(&id) {
            p.delivery_ms = now;
            p.delivery_count += 1;
            ops.xassign(group, id, &p.consumer, now, p.delivery_count);
        }
    }
}

// ---------------------------------------------------------------------------------------------
// XREAD, XREADGROUP.

/// The parsed request of XREAD / XREADGROUP.
struct ReadArgs<'a> {
    deadline_ms: Option<Option<u64>>,
    count: usize,
    streams_at: usize,
    n: usize,
    group: Option<(&'a [u8], &'a [u8])>,
    noack: bool,
}

fn parse_read<'a>(
    ctx: &Ctx<'_>,
    args: &Args<'a>,
    group_cmd: bool,
) -> Result<ReadArgs<'a>, ReplyError> {
    let mut r = ReadArgs {
        deadline_ms: None,
        count: 0,
        streams_at: 0,
        n: 0,
        group: None,
        noack: false,
    };
    let argc = args.len();
    let mut i = 1;
    while i < argc {
        let more = argc - i - 1;
        let o = args.get(i);
        if o.eq_ignore_ascii_case(b"BLOCK") && more > 0 {
            if ctx.client.in_script_call {
                // Redis keeps this older refusal for scripts rather than not blocking.
                return Err(err!(
                    "{} command is not allowed with BLOCK option from scripts",
                    lossy(args.get(0))
                ));
            }
            i += 1;
            let ms = parse_ll_msg(args.get(i), "timeout is not an integer or out of range")?;
            if ms < 0 {
                return Err(ReplyError::err_static("timeout is negative"));
            }
            r.deadline_ms = Some(if ms == 0 {
                None
            } else {
                let now = ctx.now_ms.min(i64::MAX as u64) as i64;
                if ms > i64::MAX - now {
                    return Err(ReplyError::err_static("timeout is out of range"));
                }
                Some((now + ms) as u64)
            });
        } else if o.eq_ignore_ascii_case(b"COUNT") && more > 0 {
            i += 1;
            r.count = parse_ll(args.get(i))?.max(0) as usize;
        } else if o.eq_ignore_ascii_case(b"STREAMS") && more > 0 {
            r.streams_at = i + 1;
            let n = argc - r.streams_at;
            if !n.is_multiple_of(2) {
                let name = lossy(args.get(0));
                let sym = if group_cmd { '>' } else { '$' };
                return Err(err!(
                    "Unbalanced {name} list of streams: for each stream key an ID or '{sym}' must be specified."
                ));
            }
            r.n = n / 2;
            break;
        } else if o.eq_ignore_ascii_case(b"GROUP") && more >= 2 {
            if !group_cmd {
                return Err(ReplyError::err_static(
                    "The GROUP option is only supported by XREADGROUP. You called XREAD instead.",
                ));
            }
            r.group = Some((args.get(i + 1), args.get(i + 2)));
            i += 2;
        } else if o.eq_ignore_ascii_case(b"NOACK") {
            if !group_cmd {
                return Err(ReplyError::err_static(
                    "The NOACK option is only supported by XREADGROUP. You called XREAD instead.",
                ));
            }
            r.noack = true;
        } else {
            return Err(ERR_SYNTAX);
        }
        i += 1;
    }
    if r.streams_at == 0 {
        return Err(ERR_SYNTAX);
    }
    if group_cmd && r.group.is_none() {
        return Err(ReplyError::err_static(
            "Missing GROUP option for XREADGROUP",
        ));
    }
    Ok(r)
}

/// What to read from one stream.
#[derive(Clone, Copy, PartialEq, Eq)]
enum From {
    /// Entries above this ID.
    After(StreamId),
    /// XREADGROUP `>`.
    New,
}

fn xread(ctx: &mut Ctx<'_>, args: &Args<'_>) -> CmdResult {
    read_generic(ctx, args, false)
}

fn xreadgroup(ctx: &mut Ctx<'_>, args: &Args<'_>) -> CmdResult {
    read_generic(ctx, args, true)
}

fn read_generic(ctx: &mut Ctx<'_>, args: &Args<'_>, group_cmd: bool) -> CmdResult {
    let r = parse_read(ctx, args, group_cmd)?;
    if ctx.is_timeout() {
        // The deadline passed: Redis replies "nothing came" whatever the keys hold now.
        ctx.out.null_array();
        return Ok(());
    }
    let keys: Vec<&[u8]> = (0..r.n).map(|i| args.get(r.streams_at + i)).collect();
    let (db, now) = (ctx.db(), ctx.now_ms);
    let retry = ctx.is_retry();
    // Woken by a write, a blocked read is served as Redis serves it then: from the stream's
    // last ID (even if the entries after it are deleted again), one stream per wake-up.
    let woken = ctx.woken_by_write();
    let mut locked = ctx.lock_keys(keys.iter().copied());
    // Resolve the IDs (and check types and groups) in argument order, as Redis does.
    let mut from = Vec::with_capacity(r.n);
    let mut dollar = false;
    for (i, key) in keys.iter().enumerate() {
        let arg = args.get(r.streams_at + r.n + i);
        let (shard, slot) = locked.shard(key);
        let s = match shard
            .lookup_read(db, slot, key, now)
            .as_deref()
            .map(|e| e.value())
        {
            None => None,
            Some(ValueRef::Obj(Object::Stream(s))) => Some((
                s.last_id,
                s.groups.contains_key(r.group.map_or(&b""[..], |g| g.0)),
            )),
            Some(_) if retry => {
                if r.group.is_some() {
                    return Err(other("UNBLOCKED", "the stream key no longer exists".into()));
                }
                // A key turned into another type is not what XREAD waits for.
                None
            }
            Some(_) => return Err(ReplyError::WrongType),
        };
        if let Some((gname, _)) = r.group {
            match s {
                Some((_, true)) => {}
                None if retry => {
                    return Err(other("UNBLOCKED", "the stream key no longer exists".into()));
                }
                Some((_, false)) if retry => {
                    return Err(other(
                        "NOGROUP",
                        "the consumer group this client was blocked on no longer exists".into(),
                    ));
                }
                _ => {
                    return Err(other(
                        "NOGROUP",
                        format!(
                            "No such key '{}' or consumer group '{}' in XREADGROUP with GROUP option",
                            lossy(key),
                            lossy(gname)
                        ),
                    ));
                }
            }
        }
        if arg == b"$" {
            if group_cmd {
                return Err(ReplyError::err_static(
                    "The $ ID is meaningless in the context of XREADGROUP: you want to read the history of this consumer by specifying a proper ID, or use the > ID to get new messages. The $ ID would just return an empty result set.",
                ));
            }
            dollar = true;
            from.push(From::After(s.map_or(StreamId::MIN, |s| s.0)));
        } else if arg == b">" {
            if !group_cmd {
                return Err(ReplyError::err_static(
                    "The > ID can be specified only when calling XREADGROUP using the GROUP <group> <consumer> option.",
                ));
            }
            from.push(From::New);
        } else {
            from.push(From::After(parse_strict_id(arg)?));
        }
    }

    // Serve what can be served now.
    let version = ctx.version();
    let out = &mut ctx.out;
    let mut served = 0usize;
    let mut body = Vec::new();
    let mut created = Vec::new();
    {
        let mut w = ReplyWriter::new(&mut body, out_proto(out));
        for (i, key) in keys.iter().enumerate() {
            if woken && served > 0 {
                break;
            }
            let (shard, slot) = locked.shard(key);
            // Looked up as a read again, as Redis does (hits and misses count twice).
            let Some(mut e) = shard.lookup_read(db, slot, key, now) else {
                continue;
            };
            let Some(Object::Stream(s)) = e.object_mut() else {
                continue;
            };
            let group = r.group.map(|g| (g.0, g.1));
            let count = if retry && r.count == 0 {
                BLOCKED_COUNT_DEFAULT
            } else {
                r.count
            };
            let (serve, history, start) = match (group, from[i]) {
                (Some(_), From::After(id)) => (true, true, id.next()),
                (Some((g, _)), From::New) => {
                    let last = s.groups[g].last_id;
                    let top = if woken {
                        Some(s.last_id)
                    } else {
                        s.edge_id(true)
                    };
                    (top.is_some_and(|t| t > last), false, last.next())
                }
                (None, From::After(id)) => {
                    let top = if woken {
                        Some(s.last_id)
                    } else {
                        s.edge_id(true)
                    };
                    (
                        top.is_some_and(|t| t > id) && !s.is_empty(),
                        false,
                        id.next(),
                    )
                }
                (None, From::New) => unreachable!("> only with a group"),
            };
            if !serve {
                continue;
            }
            served += 1;
            if !w.is_resp3() {
                w.array(2);
            }
            w.bulk(key);
            let start = start.unwrap_or(StreamId::MAX);
            match group {
                Some((g, c)) => {
                    let mut ops = e.ops();
                    let Some(Object::Stream(s)) = e.object_mut() else {
                        unreachable!("a stream above")
                    };
                    let grp = s.groups.get_mut(g).expect("checked");
                    let (consumer, new) = grp.consumer_mut(c, now);
                    consumer.seen_ms = now;
                    ops.xconsumer(g, c, now);
                    if new {
                        created.push(*key);
                    }
                    if history {
                        deliver_history(&mut w, s, g, c, start, count, now, &mut ops);
                    } else {
                        deliver_new(&mut w, s, g, c, start, count, r.noack, now, &mut ops);
                    }
                    e.note(ops);
                    e.set_version(version);
                }
                None => {
                    write_range(&mut w, s, start, StreamId::MAX, false, count);
                }
            }
        }
    }
    drop(locked);
    for key in created {
        ctx.notify(NOTIFY_STREAM, "xgroup-createconsumer", key);
    }
    let out = &mut ctx.out;
    if served > 0 {
        if out.is_resp3() {
            out.map(served);
        } else {
            out.array(served);
        }
        out.raw(&body);
        return Ok(());
    }
    match r.deadline_ms {
        Some(deadline) if ctx.may_block() => {
            let keys = keys.iter().map(|k| k.to_vec()).collect();
            if dollar {
                // Wait for entries after the IDs `$` stood for now.
                let mut owned: Vec<Vec<u8>> = args.iter().map(<[u8]>::to_vec).collect();
                for (i, f) in from.iter().enumerate() {
                    if let From::After(id) = f {
                        owned[r.streams_at + r.n + i] = id.to_string().into_bytes();
                    }
                }
                nothing_yet_stream(ctx, keys, deadline, Some(OwnedArgs::new(owned)));
            } else {
                nothing_yet_stream(ctx, keys, deadline, None);
            }
        }
        _ => ctx.out.null_array(),
    }
    Ok(())
}

fn out_proto(out: &ReplyWriter<'_>) -> shoal_resp::Protocol {
    if out.is_resp3() {
        shoal_resp::Protocol::Resp3
    } else {
        shoal_resp::Protocol::Resp2
    }
}

// ---------------------------------------------------------------------------------------------
// XGROUP.

fn xgroup_help(ctx: &mut Ctx<'_>, _args: &Args<'_>) -> CmdResult {
    let lines = [
        "XGROUP <subcommand> [<arg> [value] [opt] ...]. Subcommands are:",
        "CREATE <key> <groupname> <id|$> [option]",
        "    Create a new consumer group. Options are:",
        "    * MKSTREAM",
        "      Create the empty stream if it does not exist.",
        "    * ENTRIESREAD entries_read",
        "      Set the group's entries_read counter (internal use).",
        "CREATECONSUMER <key> <groupname> <consumer>",
        "    Create a new consumer in the specified group.",
        "DELCONSUMER <key> <groupname> <consumer>",
        "    Remove the specified consumer.",
        "DESTROY <key> <groupname>",
        "    Remove the specified group.",
        "SETID <key> <groupname> <id|$> [ENTRIESREAD entries_read]",
        "    Set the current group ID and entries_read counter.",
        "HELP",
        "    Prints this help.",
    ];
    ctx.out.array(lines.len());
    for l in lines {
        ctx.out.simple(l);
    }
    Ok(())
}

fn xinfo_help(ctx: &mut Ctx<'_>, _args: &Args<'_>) -> CmdResult {
    let lines = [
        "XINFO <subcommand> [<arg> [value] [opt] ...]. Subcommands are:",
        "CONSUMERS <key> <groupname>",
        "    Show consumers of <groupname>.",
        "GROUPS <key>",
        "    Show the stream consumer groups.",
        "STREAM <key> [FULL [COUNT <count>]",
        "    Show information about the stream.",
        "HELP",
        "    Prints this help.",
    ];
    ctx.out.array(lines.len());
    for l in lines {
        ctx.out.simple(l);
    }
    Ok(())
}

fn subcommand_syntax(args: &Args<'_>) -> ReplyError {
    err!(
        "unknown subcommand or wrong number of arguments for '{}'. Try {} HELP.",
        lossy(args.get(1)).chars().take(128).collect::<String>(),
        lossy(args.get(0)).to_uppercase()
    )
}

fn parse_entries_read(arg: &[u8]) -> Result<i64, ReplyError> {
    let v = parse_ll(arg)?;
    if v < 0 && v != ENTRIES_READ_INVALID {
        return Err(ERR_ENTRIES_READ);
    }
    Ok(v)
}

fn xgroup(ctx: &mut Ctx<'_>, args: &Args<'_>) -> CmdResult {
    let argc = args.len();
    let sub = args.get(1).to_ascii_lowercase();
    let mut mkstream = false;
    let mut entries_read = ENTRIES_READ_INVALID;
    match sub.as_slice() {
        b"create" => {
            let mut i = 5;
            while i < argc {
                if args.is(i, "MKSTREAM") {
                    mkstream = true;
                    i += 1;
                } else if args.is(i, "ENTRIESREAD") && i + 1 < argc {
                    entries_read = parse_entries_read(args.get(i + 1))?;
                    i += 2;
                } else {
                    return Err(subcommand_syntax(args));
                }
            }
        }
        b"setid" => {
            if argc == 7 {
                if args.is(5, "ENTRIESREAD") {
                    entries_read = parse_entries_read(args.get(6))?;
                } else {
                    return Err(subcommand_syntax(args));
                }
            } else if argc != 5 {
                return Err(subcommand_syntax(args));
            }
        }
        _ => {}
    }
    let key = args.get(2);
    let gname = args.get(3);
    let (db, now) = (ctx.db(), ctx.now_ms);
    let (mut shard, slot) = ctx.shard(key);
    // Taken under the lock: later writes to a key get larger versions.
    let version = ctx.version();
    let exists = match shard.lookup(db, slot, key, now, true) {
        None => false,
        Some(e) if e.kind() == Kind::Stream => true,
        Some(_) => return Err(ReplyError::WrongType),
    };
    if !exists && !mkstream {
        return Err(ReplyError::err_static(
            "The XGROUP subcommand requires the key to exist. Note that for CREATE you may want to use the MKSTREAM option to create an empty stream automatically.",
        ));
    }
    if !exists {
        // Only CREATE ... MKSTREAM gets here; check its ID before creating anything.
        let arg = args.get(4);
        let id = if arg == b"$" {
            StreamId::MIN
        } else {
            parse_strict_id(arg)?
        };
        let mut s = Box::new(Stream::new());
        s.groups
            .insert(gname.into(), ConsumerGroup::new(id, entries_read));
        shard.insert(db, slot, object_entry(key, Object::Stream(s), version), now);
        drop(shard);
        ctx.out.ok();
        ctx.notify(NOTIFY_STREAM, "xgroup-create", key);
        return Ok(());
    }
    let mut e = shard.lookup(db, slot, key, now, true).expect("exists");
    let mut ops = e.ops();
    let Object::Stream(s) = object_mut(&mut e, Kind::Stream)? else {
        unreachable!("kind checked")
    };
    let has_group = s.groups.contains_key(gname);
    if !has_group
        && matches!(
            sub.as_slice(),
            b"setid" | b"createconsumer" | b"delconsumer"
        )
    {
        return Err(other(
            "NOGROUP",
            format!(
                "No such consumer group '{}' for key name '{}'",
                lossy(gname),
                lossy(key)
            ),
        ));
    }
    let out = &mut ctx.out;
    let event = match sub.as_slice() {
        b"create" => {
            let arg = args.get(4);
            let id = if arg == b"$" {
                s.last_id
            } else {
                parse_strict_id(arg)?
            };
            if has_group {
                return Err(other(
                    "BUSYGROUP",
                    "Consumer Group name already exists".into(),
                ));
            }
            s.groups
                .insert(gname.into(), ConsumerGroup::new(id, entries_read));
            ops.xgroup_put(gname, id, entries_read);
            e.set_version(version);
            out.ok();
            Some("xgroup-create")
        }
        b"setid" => {
            let arg = args.get(4);
            let id = if arg == b"$" {
                s.last_id
            } else {
                parse_id(arg, 0)?
            };
            let g = s.groups.get_mut(gname).expect("checked");
            g.last_id = id;
            g.entries_read = entries_read;
            ops.xgroup_put(gname, id, entries_read);
            e.set_version(version);
            out.ok();
            Some("xgroup-setid")
        }
        b"destroy" => {
            if s.groups.remove(gname).is_some() {
                ops.xgroup_destroy(gname);
                e.set_version(version);
                out.int(1);
                Some("xgroup-destroy")
            } else {
                out.int(0);
                None
            }
        }
        b"createconsumer" => {
            let g = s.groups.get_mut(gname).expect("checked");
            let (c, created) = g.consumer_mut(args.get(4), now);
            if created {
                ops.xconsumer(gname, args.get(4), c.seen_ms);
            }
            out.int(created as i64);
            created.then(|| {
                e.set_version(version);
                "xgroup-createconsumer"
            })
        }
        b"delconsumer" => {
            let g = s.groups.get_mut(gname).expect("checked");
            let pending = g.delete_consumer(args.get(4));
            if pending.is_some() {
                ops.xdelconsumer(gname, args.get(4));
            }
            out.int(pending.unwrap_or(0) as i64);
            pending.map(|_| {
                e.set_version(version);
                "xgroup-delconsumer"
            })
        }
        _ => return Err(subcommand_syntax(args)),
    };
    e.note(ops);
    drop(e);
    drop(shard);
    if let Some(event) = event {
        ctx.notify(NOTIFY_STREAM, event, key);
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// XACK, XPENDING, XCLAIM, XAUTOCLAIM.

fn xack(ctx: &mut Ctx<'_>, args: &Args<'_>) -> CmdResult {
    let gname = args.get(2);
    let n = write_stream(ctx, args.get(1), true, |s, ops, _, _| {
        let Some(g) = s.groups.get_mut(gname) else {
            return Ok((0, false));
        };
        let ids = (3..args.len())
            .map(|i| parse_strict_id(args.get(i)))
            .collect::<Result<Vec<_>, _>>()?;
        let mut n = 0;
        for id in ids {
            if g.ack(id) {
                ops.xack(gname, id);
                n += 1;
            }
        }
        Ok((n, n > 0))
    })?;
    ctx.out.int(n.unwrap_or(0) as i64);
    Ok(())
}

fn no_group_err(key: &[u8], group: &[u8]) -> ReplyError {
    other(
        "NOGROUP",
        format!(
            "No such key '{}' or consumer group '{}'",
            lossy(key),
            lossy(group)
        ),
    )
}

fn xpending(ctx: &mut Ctx<'_>, args: &Args<'_>) -> CmdResult {
    let argc = args.len();
    let summary = argc == 3;
    if argc != 3 && !(6..=9).contains(&argc) {
        return Err(ERR_SYNTAX);
    }
    let mut start = StreamId::MIN;
    let mut end = StreamId::MAX;
    let mut count: i64 = 0;
    let mut min_idle: i64 = 0;
    let mut consumer: Option<&[u8]> = None;
    if argc >= 6 {
        let mut at = 3;
        if args.is(3, "IDLE") {
            min_idle = parse_ll(args.get(4))?;
            if argc < 8 {
                return Err(ERR_SYNTAX);
            }
            at += 2;
        }
        count = parse_ll(args.get(at + 2))?.max(0);
        let (s, ex) = parse_interval_id(args.get(at), 0)?;
        start = if ex { s.next().ok_or(ERR_START_ID)? } else { s };
        let (e, ex) = parse_interval_id(args.get(at + 1), u64::MAX)?;
        end = if ex { e.prev().ok_or(ERR_END_ID)? } else { e };
        if at + 3 < argc {
            consumer = Some(args.get(at + 3));
        }
    }
    let (key, gname) = (args.get(1), args.get(2));
    read_stream(ctx, key, |s, out, now| {
        let g = s
            .and_then(|s| s.groups.get(gname))
            .ok_or_else(|| no_group_err(key, gname))?;
        if summary {
            out.array(4);
            out.int(g.pel.len() as i64);
            match (g.pel.keys().next(), g.pel.keys().next_back()) {
                (Some(&first), Some(&last)) => {
                    write_id(out, first);
                    write_id(out, last);
                    let with: Vec<_> = g
                        .consumers
                        .iter()
                        .filter(|(_, c)| !c.pel.is_empty())
                        .collect();
                    out.array(with.len());
                    for (name, c) in with {
                        out.array(2);
                        out.bulk(name);
                        out.bulk_i64(c.pel.len() as i64);
                    }
                }
                _ => {
                    out.null();
                    out.null();
                    out.null_array();
                }
            }
            return Ok(());
        }
        let ids: Vec<StreamId> = match consumer {
            Some(c) => match g.consumers.get(c) {
                Some(c) => c.pel.range(start..=end.max(start)).copied().collect(),
                None => {
                    out.array(0);
                    return Ok(());
                }
            },
            None => g
                .pel
                .range(start..=end.max(start))
                .map(|(k, _)| *k)
                .collect(),
        };
        let mut rows = Vec::new();
        let mut left = count;
        for id in ids {
            if left == 0 || id > end {
                break;
            }
            let p = &g.pel[&id];
            let idle = now as i64 - p.delivery_ms as i64;
            if min_idle != 0 && idle < min_idle {
                continue;
            }
            left -= 1;
            rows.push((id, p, idle.max(0)));
        }
        out.array(rows.len());
        for (id, p, idle) in rows {
            out.array(4);
            write_id(out, id);
            out.bulk(&p.consumer);
            out.int(idle);
            out.int(p.delivery_count as i64);
        }
        Ok(())
    })
}

fn xclaim(ctx: &mut Ctx<'_>, args: &Args<'_>) -> CmdResult {
    let (key, gname, cname) = (args.get(1), args.get(2), args.get(3));
    let argc = args.len();
    let created = write_stream(ctx, key, true, |s, ops, out, now| {
        if !s.groups.contains_key(gname) {
            return Err(no_group_err(key, gname));
        }
        let min_idle =
            parse_ll_msg(args.get(4), "Invalid min-idle-time argument for XCLAIM")?.max(0);
        let mut ids = Vec::new();
        let mut j = 5;
        while j < argc {
            match parse_strict_id(args.get(j)) {
                Ok(id) => ids.push(id),
                Err(_) => break,
            }
            j += 1;
        }
        let now_i = now as i64;
        let (mut force, mut justid) = (false, false);
        let mut retry_count: i64 = -1;
        let mut delivery: i64 = -1;
        let mut last_id = StreamId::MIN;
        while j < argc {
            let more = argc - 1 - j;
            let opt = args.get(j);
            if opt.eq_ignore_ascii_case(b"FORCE") {
                force = true;
            } else if opt.eq_ignore_ascii_case(b"JUSTID") {
                justid = true;
            } else if opt.eq_ignore_ascii_case(b"IDLE") && more > 0 {
                j += 1;
                delivery = now_i.wrapping_sub(parse_ll_msg(
                    args.get(j),
                    "Invalid IDLE option argument for XCLAIM",
                )?);
            } else if opt.eq_ignore_ascii_case(b"TIME") && more > 0 {
                j += 1;
                delivery = parse_ll_msg(args.get(j), "Invalid TIME option argument for XCLAIM")?;
            } else if opt.eq_ignore_ascii_case(b"RETRYCOUNT") && more > 0 {
                j += 1;
                retry_count =
                    parse_ll_msg(args.get(j), "Invalid RETRYCOUNT option argument for XCLAIM")?;
            } else if opt.eq_ignore_ascii_case(b"LASTID") && more > 0 {
                j += 1;
                last_id = parse_strict_id(args.get(j))?;
            } else {
                return Err(err!("Unrecognized XCLAIM option '{}'", lossy(opt)));
            }
            j += 1;
        }
        let mut changed = false;
        let g = s.groups.get_mut(gname).expect("checked");
        if last_id > g.last_id {
            g.last_id = last_id;
            ops.xgroup_put(gname, g.last_id, g.entries_read);
            changed = true;
        }
        let delivery = if delivery == -1 || delivery < 0 || delivery > now_i {
            now
        } else {
            delivery as u64
        };
        let mut claimed = Vec::new();
        let mut created = false;
        for id in ids {
            let exists = s.get(id).is_some();
            let g = s.groups.get_mut(gname).expect("checked");
            if !exists {
                if g.ack(id) {
                    ops.xack(gname, id);
                    changed = true;
                }
                continue;
            }
            let (prev_owner, prev_count, prev_time) = match g.pel.get(&id) {
                Some(p) => (Some(p.consumer.clone()), p.delivery_count, p.delivery_ms),
                // A NACK made by FORCE starts at one delivery.
                None if force => (None, 1, 0),
                None => continue,
            };
            if prev_owner.is_some() && min_idle != 0 && now_i - (prev_time as i64) < min_idle {
                continue;
            }
            let (c, new) = g.consumer_mut(cname, now);
            c.seen_ms = now;
            ops.xconsumer(gname, cname, now);
            created |= new;
            let count = if retry_count >= 0 {
                retry_count as u64
            } else if !justid {
                prev_count + 1
            } else {
                prev_count
            };
            g.assign(id, cname, delivery, count);
            ops.xassign(gname, id, cname, delivery, count);
            changed = true;
            claimed.push(id);
        }
        out.array(claimed.len());
        for id in claimed {
            if justid {
                write_id(out, id);
            } else {
                write_one(out, s, id);
            }
        }
        Ok((created, changed))
    })?
    .ok_or_else(|| no_group_err(key, gname))?;
    if created {
        ctx.notify(NOTIFY_STREAM, "xgroup-createconsumer", key);
    }
    Ok(())
}

fn xautoclaim(ctx: &mut Ctx<'_>, args: &Args<'_>) -> CmdResult {
    let (key, gname, cname) = (args.get(1), args.get(2), args.get(3));
    let min_idle =
        parse_ll_msg(args.get(4), "Invalid min-idle-time argument for XAUTOCLAIM")?.max(0);
    let (start, ex) = parse_interval_id(args.get(5), 0)?;
    let start = if ex {
        start.next().ok_or(ERR_START_ID)?
    } else {
        start
    };
    let mut count: i64 = 100;
    let mut justid = false;
    let mut j = 6;
    while j < args.len() {
        let more = args.len() - 1 - j;
        if args.is(j, "COUNT") && more > 0 {
            let max = i64::MAX / 16;
            count = parse_i64(args.get(j + 1))
                .filter(|c| (1..=max).contains(c))
                .ok_or(ReplyError::err_static("COUNT must be > 0"))?;
            j += 1;
        } else if args.is(j, "JUSTID") {
            justid = true;
        } else {
            return Err(ERR_SYNTAX);
        }
        j += 1;
    }
    let created = write_stream(ctx, key, true, |s, ops, out, now| {
        let Some(g) = s.groups.get(gname) else {
            return Err(no_group_err(key, gname));
        };
        let mut attempts = count * AUTOCLAIM_ATTEMPTS_FACTOR;
        // The PEL from `start`, enough of it for every attempt and the cursor after them.
        let walk: Vec<StreamId> = g
            .pel
            .range(start..)
            .take(attempts as usize + 1)
            .map(|(k, _)| *k)
            .collect();
        let now_i = now as i64;
        let mut pos = 0;
        let mut left = count;
        let mut claimed = Vec::new();
        let mut deleted = Vec::new();
        let mut changed = false;
        let mut created = false;
        loop {
            let go = attempts != 0;
            attempts -= 1;
            if !go || left == 0 || pos >= walk.len() {
                break;
            }
            let id = walk[pos];
            pos += 1;
            let exists = s.get(id).is_some();
            let g = s.groups.get_mut(gname).expect("checked");
            if !exists {
                g.ack(id);
                ops.xack(gname, id);
                deleted.push(id);
                left -= 1;
                changed = true;
                continue;
            }
            let p = &g.pel[&id];
            if min_idle != 0 && now_i - (p.delivery_ms as i64) < min_idle {
                continue;
            }
            let count = p.delivery_count + if justid { 0 } else { 1 };
            let (c, new) = g.consumer_mut(cname, now);
            c.seen_ms = now;
            ops.xconsumer(gname, cname, now);
            created |= new;
            g.assign(id, cname, now, count);
            ops.xassign(gname, id, cname, now, count);
            claimed.push(id);
            left -= 1;
            changed = true;
        }
        let cursor = walk.get(pos).copied().unwrap_or(StreamId::MIN);
        out.array(3);
        write_id(out, cursor);
        out.array(claimed.len());
        for id in claimed {
            if justid {
                write_id(out, id);
            } else {
                write_one(out, s, id);
            }
        }
        out.array(deleted.len());
        for id in deleted {
            write_id(out, id);
        }
        Ok((created, changed))
    })?
    .ok_or_else(|| no_group_err(key, gname))?;
    if created {
        ctx.notify(NOTIFY_STREAM, "xgroup-createconsumer", key);
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// XINFO, XSETID.

fn xinfo(ctx: &mut Ctx<'_>, args: &Args<'_>) -> CmdResult {
    let sub = args.get(1).to_ascii_lowercase();
    let key = args.get(2);
    read_stream(ctx, key, |s, out, now| {
        let s = s.ok_or(ERR_NO_SUCH_KEY)?;
        match sub.as_slice() {
            b"consumers" if args.len() == 4 => {
                let gname = args.get(3);
                let g = s.groups.get(gname).ok_or_else(|| {
                    other(
                        "NOGROUP",
                        format!(
                            "No such consumer group '{}' for key name '{}'",
                            lossy(gname),
                            lossy(key)
                        ),
                    )
                })?;
                out.array(g.consumers.len());
                for (name, c) in &g.consumers {
                    out.map(3);
                    out.bulk(b"name");
                    out.bulk(name);
                    out.bulk(b"pending");
                    out.int(c.pel.len() as i64);
                    out.bulk(b"idle");
                    out.int((now as i64 - c.seen_ms as i64).max(0));
                }
                Ok(())
            }
            b"groups" if args.len() == 3 => {
                out.array(s.groups.len());
                for (name, g) in &s.groups {
                    out.map(6);
                    out.bulk(b"name");
                    out.bulk(name);
                    out.bulk(b"consumers");
                    out.int(g.consumers.len() as i64);
                    out.bulk(b"pending");
                    out.int(g.pel.len() as i64);
                    out.bulk(b"last-delivered-id");
                    write_id(out, g.last_id);
                    write_group_counters(out, s, g);
                }
                Ok(())
            }
            b"stream" => info_stream(out, s, args),
            _ => Err(subcommand_syntax(args)),
        }
    })
}

fn write_group_counters(out: &mut ReplyWriter<'_>, s: &Stream, g: &ConsumerGroup) {
    out.bulk(b"entries-read");
    if g.entries_read != ENTRIES_READ_INVALID {
        out.int(g.entries_read);
    } else {
        out.null();
    }
    out.bulk(b"lag");
    match group_lag(s, g) {
        Some(l) => out.int(l),
        None => out.null(),
    }
}

fn info_stream(out: &mut ReplyWriter<'_>, s: &Stream, args: &Args<'_>) -> Result<(), ReplyError> {
    let rest = args.len() - 3;
    let mut count: i64 = 10;
    let full = rest > 0;
    if full {
        if !args.is(3, "full") {
            return Err(subcommand_syntax(args));
        }
        if rest > 1 {
            if rest != 3 || !args.is(4, "count") {
                return Err(subcommand_syntax(args));
            }
            count = parse_ll(args.get(5))?;
            if count < 0 {
                count = 10;
            }
        }
    }
    out.map(if full { 9 } else { 10 });
    out.bulk(b"length");
    out.int(s.len() as i64);
    out.bulk(b"radix-tree-keys");
    out.int(s.node_count() as i64);
    out.bulk(b"radix-tree-nodes");
    out.int(s.rax_node_count() as i64);
    out.bulk(b"last-generated-id");
    write_id(out, s.last_id);
    out.bulk(b"max-deleted-entry-id");
    write_id(out, s.max_deleted_id);
    out.bulk(b"entries-added");
    out.int(s.entries_added as i64);
    out.bulk(b"recorded-first-entry-id");
    write_id(out, s.first_id);
    let count = count as usize;
    if !full {
        out.bulk(b"groups");
        out.int(s.groups.len() as i64);
        for (name, rev) in [(&b"first-entry"[..], false), (b"last-entry", true)] {
            out.bulk(name);
            let mut found = None;
            s.range(StreamId::MIN, StreamId::MAX, rev, |e| {
                found = Some(e);
                false
            });
            match found {
                Some(e) => write_entry(out, &e),
                None => out.null(),
            }
        }
        return Ok(());
    }
    out.bulk(b"entries");
    write_range(out, s, StreamId::MIN, StreamId::MAX, false, count);
    out.bulk(b"groups");
    out.array(s.groups.len());
    let limit = if count == 0 { usize::MAX } else { count };
    for (name, g) in &s.groups {
        out.map(7);
        out.bulk(b"name");
        out.bulk(name);
        out.bulk(b"last-delivered-id");
        write_id(out, g.last_id);
        write_group_counters(out, s, g);
        out.bulk(b"pel-count");
        out.int(g.pel.len() as i64);
        out.bulk(b"pending");
        let n = g.pel.len().min(limit);
        out.array(n);
        for (id, p) in g.pel.iter().take(n) {
            out.array(4);
            write_id(out, *id);
            out.bulk(&p.consumer);
            out.int(p.delivery_ms as i64);
            out.int(p.delivery_count as i64);
        }
        out.bulk(b"consumers");
        out.array(g.consumers.len());
        for (cname, c) in &g.consumers {
            out.map(4);
            out.bulk(b"name");
            out.bulk(cname);
            out.bulk(b"seen-time");
            out.int(c.seen_ms as i64);
            out.bulk(b"pel-count");
            out.int(c.pel.len() as i64);
            out.bulk(b"pending");
            let n = c.pel.len().min(limit);
            out.array(n);
            for id in c.pel.iter().take(n) {
                let p = &g.pel[id];
                out.array(3);
                write_id(out, *id);
                out.int(p.delivery_ms as i64);
                out.int(p.delivery_count as i64);
            }
        }
    }
    Ok(())
}

fn xsetid(ctx: &mut Ctx<'_>, args: &Args<'_>) -> CmdResult {
    let id = parse_strict_id(args.get(2))?;
    let mut entries_added: i64 = -1;
    let mut max_deleted = StreamId::MIN;
    let mut i = 3;
    while i < args.len() {
        let more = args.len() - 1 - i;
        if args.is(i, "ENTRIESADDED") && more > 0 {
            entries_added = parse_ll(args.get(i + 1))?;
            if entries_added < 0 {
                return Err(ReplyError::err_static("entries_added must be positive"));
            }
            i += 2;
        } else if args.is(i, "MAXDELETEDID") && more > 0 {
            max_deleted = parse_strict_id(args.get(i + 1))?;
            if id < max_deleted {
                return Err(ReplyError::err_static(
                    "The ID specified in XSETID is smaller than the provided max_deleted_entry_id",
                ));
            }
            i += 2;
        } else {
            return Err(ERR_SYNTAX);
        }
    }
    let done = write_stream(ctx, args.get(1), false, |s, ops, _, _| {
        if id < s.max_deleted_id {
            return Err(ReplyError::err_static(
                "The ID specified in XSETID is smaller than current max_deleted_entry_id",
            ));
        }
        if !s.is_empty() {
            let top = s.edge_id(true).unwrap_or(StreamId::MIN);
            if id < top {
                return Err(ReplyError::err_static(
                    "The ID specified in XSETID is smaller than the target stream top item",
                ));
            }
            if entries_added != -1 && s.len() as i64 > entries_added {
                return Err(ReplyError::err_static(
                    "The entries_added specified in XSETID is smaller than the target stream length",
                ));
            }
        }
        s.last_id = id;
        if entries_added != -1 {
            s.entries_added = entries_added as u64;
        }
        if !max_deleted.is_zero() {
            s.max_deleted_id = max_deleted;
        }
        ops.xsetid(s.last_id, s.entries_added, s.max_deleted_id);
        Ok(((), true))
    })?;
    match done {
        Some(()) => ctx.out.ok(),
        None => return Err(ERR_NO_SUCH_KEY),
    }
    ctx.notify(NOTIFY_STREAM, "xsetid", args.get(1));
    Ok(())
}
