//! Bloom filter commands with RedisBloom 2.6's syntax, replies and error texts: BF.RESERVE,
//! BF.ADD, BF.MADD, BF.INSERT, BF.EXISTS, BF.MEXISTS, BF.INFO, BF.CARD, BF.DEBUG, BF.SCANDUMP and
//! BF.LOADCHUNK. The filter itself is `shoal_keyspace::types::bloom` (sizes, hashing, dump
//! layout); this module parses arguments as RedisBloom does (including its quirks: BF.INSERT reads
//! options by their first letters, BF.RESERVE finds NONSCALING and EXPANSION anywhere, BF.EXISTS on
//! a key of another type answers 0) and answers in RESP2 or RESP3 as it does.
//!
//! Memory: a filter's bits are bounded by `bf-max-bytes`. A BF.RESERVE or an auto-created filter
//! over it is refused (`ERR could not create filter`), and an add that would need a new
//! sub-filter past it fails for that item (`ERR problem inserting into filter`), as RedisBloom
//! answers when its allocation fails.
//!
//! Effects: a new filter (RESERVE, an add that creates it, LOADCHUNK's header, a chunk) is sent
//! whole; an add to an existing filter sends the item's hash pair (see `types/bloom.rs`).
//! RedisBloom raises no keyspace events, and neither does this; a write command still
//! invalidates client-side caches of its key (`notify::TRACKING_ONLY`), as Redis signals every
//! key a module opened for writing.

use shoal_keyspace::types::bloom::{Bloom, BloomError, HashPair};
use shoal_keyspace::{Kind, Object, ValueRef};

use crate::args::parse_i64;
use crate::coll::object_mut;
use crate::hashes::object_entry;
use crate::notify;
use crate::table::{Group, KeySpec, Spec, flag::*, key::*};
use crate::{Args, CmdResult, Ctx, ReplyError};

const BF: Group = Group::Bloom;

/// RedisBloom's defaults for filters BF.ADD and BF.INSERT create.
pub const DEFAULT_ERROR_RATE: f64 = 0.01;
pub const DEFAULT_CAPACITY: u64 = 100;
pub const DEFAULT_EXPANSION: u32 = 2;

pub static COMMANDS: &[Spec] = &[
    Spec {
        name: "bf.add",
        arity: 3,
        flags: WRITE | DENYOOM,
        keys: &[KeySpec::at(1, RW | INSERT)],
        group: BF,
        since: "1.0.0",
        summary: "Adds an item to a Bloom Filter",
        complexity: "O(k), where k is the number of hash functions used by the last sub-filter",
        handler: Some(bf_add),
        ..Spec::DEFAULT
    },
    Spec {
        name: "bf.card",
        arity: 2,
        flags: READONLY | FAST,
        keys: &[KeySpec::at(1, RO)],
        group: BF,
        since: "2.4.4",
        summary: "Returns the cardinality of a Bloom filter",
        complexity: "O(1)",
        handler: Some(bf_card),
        ..Spec::DEFAULT
    },
    Spec {
        name: "bf.debug",
        arity: 2,
        flags: READONLY | FAST,
        keys: &[KeySpec::at(1, RO)],
        group: BF,
        since: "1.0.0",
        summary: "Returns the size and parameters of each sub-filter of a Bloom filter",
        complexity: "O(n), where n is the number of sub-filters",
        handler: Some(bf_debug),
        ..Spec::DEFAULT
    },
    Spec {
        name: "bf.exists",
        arity: 3,
        flags: READONLY | FAST,
        keys: &[KeySpec::at(1, RO | ACCESS)],
        group: BF,
        since: "1.0.0",
        summary: "Checks whether an item exists in a Bloom Filter",
        complexity: "O(k), where k is the number of hash functions used by the last sub-filter",
        handler: Some(bf_exists),
        ..Spec::DEFAULT
    },
    Spec {
        name: "bf.info",
        arity: -2,
        flags: READONLY | FAST,
        keys: &[KeySpec::at(1, RO)],
        group: BF,
        since: "1.0.0",
        summary: "Returns information about a Bloom Filter",
        complexity: "O(1)",
        handler: Some(bf_info),
        ..Spec::DEFAULT
    },
    Spec {
        name: "bf.insert",
        arity: -4,
        flags: WRITE | DENYOOM,
        keys: &[KeySpec::at(1, RW | INSERT)],
        group: BF,
        since: "1.0.0",
        summary: "Adds one or more items to a Bloom Filter. A filter will be created if it does not exist",
        complexity: "O(k * n), where k is the number of hash functions and n is the number of items",
        handler: Some(bf_insert),
        ..Spec::DEFAULT
    },
    Spec {
        name: "bf.loadchunk",
        arity: 4,
        flags: WRITE | DENYOOM,
        keys: &[KeySpec::at(1, RW | UPDATE)],
        group: BF,
        since: "1.0.0",
        summary: "Restores a filter previously saved using SCANDUMP",
        complexity: "O(n), where n is the capacity",
        handler: Some(bf_loadchunk),
        ..Spec::DEFAULT
    },
    Spec {
        name: "bf.madd",
        arity: -3,
        flags: WRITE | DENYOOM,
        keys: &[KeySpec::at(1, RW | INSERT)],
        group: BF,
        since: "1.0.0",
        summary: "Adds one or more items to a Bloom Filter. A filter will be created if it does not exist",
        complexity: "O(k * n), where k is the number of hash functions and n is the number of items",
        handler: Some(bf_madd),
        ..Spec::DEFAULT
    },
    Spec {
        name: "bf.mexists",
        arity: -3,
        flags: READONLY | FAST,
        keys: &[KeySpec::at(1, RO | ACCESS)],
        group: BF,
        since: "1.0.0",
        summary: "Checks whether one or more items exist in a Bloom Filter",
        complexity: "O(k * n), where k is the number of hash functions and n is the number of items",
        handler: Some(bf_mexists),
        ..Spec::DEFAULT
    },
    Spec {
        name: "bf.reserve",
        arity: -4,
        flags: WRITE | DENYOOM,
        keys: &[KeySpec::at(1, RW | INSERT)],
        group: BF,
        since: "1.0.0",
        summary: "Creates a new Bloom Filter",
        complexity: "O(1)",
        handler: Some(bf_reserve),
        ..Spec::DEFAULT
    },
    Spec {
        name: "bf.scandump",
        arity: 3,
        flags: READONLY,
        keys: &[KeySpec::at(1, RO | ACCESS)],
        group: BF,
        since: "1.0.0",
        summary: "Begins an incremental save of the bloom filter",
        complexity: "O(n), where n is the capacity",
        handler: Some(bf_scandump),
        ..Spec::DEFAULT
    },
];

const ERR_NOT_FOUND: ReplyError = ReplyError::err_static("not found");
const ERR_ITEM_EXISTS: ReplyError = ReplyError::err_static("item exists");
const ERR_CANNOT_CREATE: ReplyError = ReplyError::err_static("could not create filter");
/// RedisBloom sends some errors without an `ERR` code; their first word counts as the code.
const fn bare(code: &'static str, msg: &'static str) -> ReplyError {
    ReplyError::Other {
        code,
        msg: std::borrow::Cow::Borrowed(msg),
    }
}

fn wrong_arity(args: &Args<'_>) -> ReplyError {
    ReplyError::err(format!(
        "wrong number of arguments for '{}' command",
        String::from_utf8_lossy(args.get(0)).to_ascii_lowercase()
    ))
}

/// The filter size limit (`bf-max-bytes`).
fn max_bytes(ctx: &Ctx<'_>) -> u64 {
    ctx.srv.config().bf_max_bytes
}

/// How an add ended, for one item.
#[derive(Clone, Copy)]
enum Added {
    Yes,
    No,
    /// A non-scaling filter is full: RedisBloom stops at this item.
    Full,
    /// A new sub-filter would pass the size limit.
    Failed,
}

/// Options of a filter an add may create.
struct Create {
    capacity: u64,
    error: f64,
    expansion: u32,
    scaling: bool,
}

const DEFAULT_CREATE: Create = Create {
    capacity: DEFAULT_CAPACITY,
    error: DEFAULT_ERROR_RATE,
    expansion: DEFAULT_EXPANSION,
    scaling: true,
};

/// Adds `items` to the filter at `key`, creating it with `create` if absent (and `Some`). The
/// results per item, stopping after a `Full`.
fn add_items(
    ctx: &mut Ctx<'_>,
    key: &[u8],
    items: &Args<'_>,
    create: Option<&Create>,
) -> Result<Vec<Added>, ReplyError> {
    let (db, now, limit) = (ctx.db(), ctx.now_ms, max_bytes(ctx));
    let mut results = Vec::with_capacity(items.len());
    let add =
        |b: &mut Bloom, mut note: Option<&mut shoal_keyspace::delta::Ops>, out: &mut Vec<Added>| {
            for item in items.iter() {
                let h = HashPair::of(item);
                let r = match b.add_hash(h, limit) {
                    Ok(true) => {
                        if let Some(ops) = note.as_deref_mut() {
                            ops.bf_add(h);
                        }
                        Added::Yes
                    }
                    Ok(false) => Added::No,
                    Err(BloomError::Full) => Added::Full,
                    Err(_) => Added::Failed,
                };
                out.push(r);
                if matches!(r, Added::Full) {
                    break;
                }
            }
        };
    let (mut shard, slot) = ctx.shard(key);
    // RedisBloom opens the key for writing, and Redis signals it modified on close, whatever the
    // command then did: client-side caches of it are invalidated.
    notify::event(ctx.srv, notify::TRACKING_ONLY, "bf", db, key);
    if let Some(mut e) = shard.lookup(db, slot, key, now, true) {
        let mut ops = e.ops();
        let Object::Bloom(b) = object_mut(&mut e, Kind::Bloom)? else {
            unreachable!("object_mut checked the kind")
        };
        add(b, Some(&mut ops), &mut results);
        e.note(ops);
        if results.iter().any(|r| matches!(r, Added::Yes)) {
            e.set_version(ctx.version());
        }
        return Ok(results);
    }
    let Some(c) = create else {
        return Err(ERR_NOT_FOUND);
    };
    let mut b = Bloom::new(c.capacity, c.error, c.expansion, c.scaling, limit)
        .map_err(|_| ERR_CANNOT_CREATE)?;
    add(&mut b, None, &mut results);
    let version = ctx.version();
    shard.insert(
        db,
        slot,
        object_entry(key, Object::Bloom(Box::new(b)), version),
        now,
    );
    Ok(results)
}

fn reply_added(ctx: &mut Ctx<'_>, r: Added) {
    match r {
        Added::Yes => ctx.out.boolean(true),
        Added::No => ctx.out.boolean(false),
        Added::Full => ctx.out.error("ERR non scaling filter is full"),
        Added::Failed => ctx.out.error("ERR problem inserting into filter"),
    }
}

fn reply_added_all(ctx: &mut Ctx<'_>, results: &[Added]) {
    ctx.out.array(results.len());
    for &r in results {
        reply_added(ctx, r);
    }
}

fn bf_add(ctx: &mut Ctx<'_>, args: &Args<'_>) -> CmdResult {
    let results = add_items(ctx, args.get(1), &args.tail(2), Some(&DEFAULT_CREATE))?;
    match results.first() {
        Some(Added::Full) => Err(ReplyError::err_static("non scaling filter is full")),
        Some(Added::Failed) => Err(ReplyError::err_static("problem inserting into filter")),
        Some(&r) => {
            reply_added(ctx, r);
            Ok(())
        }
        None => unreachable!("arity 3: one item"),
    }
}

fn bf_madd(ctx: &mut Ctx<'_>, args: &Args<'_>) -> CmdResult {
    let results = add_items(ctx, args.get(1), &args.tail(2), Some(&DEFAULT_CREATE))?;
    reply_added_all(ctx, &results);
    Ok(())
}

/// Index of the first argument equal to `word` (RedisBloom's `RMUtil_ArgIndex`).
fn arg_index(args: &Args<'_>, word: &str) -> Option<usize> {
    (0..args.len()).find(|&i| args.is(i, word))
}

fn parse_double(b: &[u8]) -> Option<f64> {
    crate::args::parse_f64(b)
}

fn bf_reserve(ctx: &mut Ctx<'_>, args: &Args<'_>) -> CmdResult {
    if args.len() > 7 {
        return Err(wrong_arity(args));
    }
    let error = parse_double(args.get(2)).ok_or(ReplyError::err_static("bad error rate"))?;
    if !(error > 0.0 && error < 1.0) {
        return Err(ReplyError::err_static("(0 < error rate range < 1) "));
    }
    let capacity = parse_i64(args.get(3)).ok_or(ReplyError::err_static("bad capacity"))?;
    if capacity <= 0 {
        return Err(ReplyError::err_static("(capacity should be larger than 0)"));
    }
    let scaling = arg_index(args, "NONSCALING").is_none();
    let mut expansion = DEFAULT_EXPANSION;
    if let Some(i) = arg_index(args, "EXPANSION") {
        if i + 1 == args.len() {
            return Err(ReplyError::err_static("no expansion"));
        }
        if !scaling {
            return Err(bare("Nonscaling", "filters cannot expand"));
        }
        let e = parse_i64(args.get(i + 1)).ok_or(ReplyError::err_static("bad expansion"))?;
        if e < 1 {
            return Err(ReplyError::err_static(
                "expansion should be greater or equal to 1",
            ));
        }
        expansion = u32::try_from(e).map_err(|_| ReplyError::err_static("bad expansion"))?;
    }
    let (db, now, limit) = (ctx.db(), ctx.now_ms, max_bytes(ctx));
    let key = args.get(1);
    let (mut shard, slot) = ctx.shard(key);
    // RedisBloom opens the key for writing, and Redis signals it modified on close, whatever the
    // command then did: client-side caches of it are invalidated.
    notify::event(ctx.srv, notify::TRACKING_ONLY, "bf", db, key);
    if let Some(e) = shard.lookup(db, slot, key, now, true) {
        return Err(if e.kind() == Kind::Bloom {
            ERR_ITEM_EXISTS
        } else {
            ReplyError::WrongType
        });
    }
    let b = Bloom::new(capacity as u64, error, expansion, scaling, limit)
        .map_err(|_| ERR_CANNOT_CREATE)?;
    let version = ctx.version();
    shard.insert(
        db,
        slot,
        object_entry(key, Object::Bloom(Box::new(b)), version),
        now,
    );
    ctx.out.ok();
    Ok(())
}

fn bf_insert(ctx: &mut Ctx<'_>, args: &Args<'_>) -> CmdResult {
    let mut c = Create { ..DEFAULT_CREATE };
    let mut expansion: i64 = DEFAULT_EXPANSION as i64;
    let mut capacity: i64 = DEFAULT_CAPACITY as i64;
    let mut autocreate = true;
    let mut items_at = None;
    let mut pos = 2;
    // Options are told apart by their first letters, as RedisBloom does.
    while pos < args.len() && items_at.is_none() {
        let a = args.get(pos);
        let lower = |i: usize| a.get(i).map(u8::to_ascii_lowercase).unwrap_or(0);
        match lower(0) {
            b'i' => {
                pos += 1;
                items_at = Some(pos);
            }
            b'e' => {
                pos += 1;
                if pos == args.len() {
                    return Err(wrong_arity(args));
                }
                if lower(1) == b'r' {
                    c.error = parse_double(args.get(pos)).ok_or(bare("Bad", "error rate"))?;
                } else {
                    expansion = parse_i64(args.get(pos)).ok_or(bare("Bad", "expansion"))?;
                }
                pos += 1;
            }
            b'c' => {
                pos += 1;
                if pos == args.len() {
                    return Err(wrong_arity(args));
                }
                capacity = parse_i64(args.get(pos)).ok_or(bare("Bad", "capacity"))?;
                pos += 1;
            }
            b'n' => {
                if lower(2) == b'c' {
                    autocreate = false;
                } else {
                    c.scaling = false;
                }
                pos += 1;
            }
            _ => return Err(bare("Unknown", "argument received")),
        }
    }
    let Some(items_at) = items_at.filter(|&i| i < args.len()) else {
        return Err(wrong_arity(args));
    };
    if !(c.error > 0.0 && c.error < 1.0) || capacity < 1 || expansion < 1 {
        return Err(bare("Bad", "argument received"));
    }
    c.capacity = capacity as u64;
    c.expansion = u32::try_from(expansion).map_err(|_| bare("Bad", "argument received"))?;
    let results = add_items(
        ctx,
        args.get(1),
        &args.tail(items_at),
        autocreate.then_some(&c),
    )?;
    reply_added_all(ctx, &results);
    Ok(())
}

/// Runs `f` on the filter at `key` for a read; `None` if absent; WRONGTYPE for another type.
fn read_bloom<R>(
    ctx: &mut Ctx<'_>,
    key: &[u8],
    f: impl FnOnce(Option<&Bloom>, &mut Ctx<'_>) -> R,
) -> Result<R, ReplyError> {
    let (db, now) = (ctx.db(), ctx.now_ms);
    let (mut shard, slot) = ctx.shard(key);
    let e = shard.lookup_read(db, slot, key, now);
    let b = match e.as_deref().map(|e| e.value()) {
        None => None,
        Some(ValueRef::Obj(Object::Bloom(b))) => Some(&**b),
        Some(_) => return Err(ReplyError::WrongType),
    };
    Ok(f(b, ctx))
}

fn check(ctx: &mut Ctx<'_>, args: &Args<'_>, multi: bool) -> CmdResult {
    let (db, now) = (ctx.db(), ctx.now_ms);
    let key = args.get(1);
    let (mut shard, slot) = ctx.shard(key);
    let e = shard.lookup_read(db, slot, key, now);
    // A key of another type answers "not there", as RedisBloom does.
    let b = match e.as_deref().map(|e| e.value()) {
        Some(ValueRef::Obj(Object::Bloom(b))) => Some(&**b),
        _ => None,
    };
    if multi {
        ctx.out.array(args.len() - 2);
    }
    for item in args.tail(2).iter() {
        ctx.out.boolean(b.is_some_and(|b| b.contains(item)));
    }
    Ok(())
}

fn bf_exists(ctx: &mut Ctx<'_>, args: &Args<'_>) -> CmdResult {
    check(ctx, args, false)
}

fn bf_mexists(ctx: &mut Ctx<'_>, args: &Args<'_>) -> CmdResult {
    check(ctx, args, true)
}

fn bf_card(ctx: &mut Ctx<'_>, args: &Args<'_>) -> CmdResult {
    let n = read_bloom(ctx, args.get(1), |b, _| b.map_or(0, Bloom::items))?;
    ctx.out.int(n as i64);
    Ok(())
}

fn bf_info(ctx: &mut Ctx<'_>, args: &Args<'_>) -> CmdResult {
    if args.len() > 3 {
        return Err(wrong_arity(args));
    }
    let field = (args.len() == 3).then(|| args.get(2).to_ascii_lowercase());
    read_bloom(ctx, args.get(1), |b, ctx| {
        let b = b.ok_or(ERR_NOT_FOUND)?;
        let fields: [(&str, &str, Option<u64>); 5] = [
            ("capacity", "Capacity", Some(b.capacity())),
            ("size", "Size", Some(b.info_size())),
            ("filters", "Number of filters", Some(b.links().len() as u64)),
            ("items", "Number of items inserted", Some(b.items())),
            ("expansion", "Expansion rate", b.expansion().map(u64::from)),
        ];
        let out = &mut ctx.out;
        let resp3 = out.is_resp3();
        let value = |out: &mut shoal_resp::ReplyWriter<'_>, v: Option<u64>| match v {
            Some(v) => out.int(v as i64),
            None => out.null(),
        };
        match field {
            Some(f) => {
                let Some(&(_, name, v)) = fields.iter().find(|(k, _, _)| k.as_bytes() == f) else {
                    return Err(bare("Invalid", "information value"));
                };
                if resp3 {
                    out.map(1);
                    out.simple(name);
                } else {
                    out.array(1);
                }
                value(out, v);
            }
            None => {
                if resp3 {
                    out.map(5);
                } else {
                    out.array(10);
                }
                for (_, name, v) in fields {
                    out.simple(name);
                    value(out, v);
                }
            }
        }
        Ok(())
    })?
}

/// C's `%g`: six significant digits, exponent form below 1e-4 or from 1e6, no trailing zeros.
fn fmt_g(v: f64) -> String {
    if v == 0.0 {
        return "0".into();
    }
    let sci = format!("{v:.5e}");
    let (mantissa, exp) = sci.split_once('e').expect("exponent form");
    let exp: i32 = exp.parse().expect("exponent");
    let trim = |s: String| {
        if s.contains('.') {
            s.trim_end_matches('0').trim_end_matches('.').to_string()
        } else {
            s
        }
    };
    if (-4..6).contains(&exp) {
        let decimals = (5 - exp).max(0) as usize;
        trim(format!("{v:.decimals$}"))
    } else {
        let m = trim(mantissa.to_string());
        format!("{m}e{}{:02}", if exp < 0 { '-' } else { '+' }, exp.abs())
    }
}

fn bf_debug(ctx: &mut Ctx<'_>, args: &Args<'_>) -> CmdResult {
    read_bloom(ctx, args.get(1), |b, ctx| {
        let b = b.ok_or(ERR_NOT_FOUND)?;
        ctx.out.array(1 + b.links().len());
        ctx.out.bulk(format!("size:{}", b.items()).as_bytes());
        for l in b.links() {
            let line = format!(
                "bytes:{} bits:{} hashes:{} hashwidth:64 capacity:{} size:{} ratio:{}",
                l.bytes(),
                l.bit_count(),
                l.hashes(),
                l.capacity(),
                l.items(),
                fmt_g(l.error())
            );
            ctx.out.bulk(line.as_bytes());
        }
        Ok(())
    })?
}

fn bf_scandump(ctx: &mut Ctx<'_>, args: &Args<'_>) -> CmdResult {
    let iter = args.get(2).to_vec();
    read_bloom(ctx, args.get(1), |b, ctx| {
        let b = b.ok_or(ERR_NOT_FOUND)?;
        let iter = parse_i64(&iter).ok_or(bare("Second", "argument must be numeric"))?;
        ctx.out.array(2);
        if iter == 0 {
            ctx.out.int(1);
            ctx.out.bulk(&b.dump_header());
        } else {
            let (next, chunk) = b.dump_chunk(iter);
            ctx.out.int(next);
            ctx.out.bulk(chunk);
        }
        Ok(())
    })?
}

fn bf_loadchunk(ctx: &mut Ctx<'_>, args: &Args<'_>) -> CmdResult {
    let iter =
        parse_i64(args.get(2)).ok_or(ReplyError::err_static("Second argument must be numeric"))?;
    let data = args.get(3);
    let (db, now, limit) = (ctx.db(), ctx.now_ms, max_bytes(ctx));
    let key = args.get(1);
    let (mut shard, slot) = ctx.shard(key);
    // RedisBloom opens the key for writing, and Redis signals it modified on close, whatever the
    // command then did: client-side caches of it are invalidated.
    notify::event(ctx.srv, notify::TRACKING_ONLY, "bf", db, key);
    if let Some(mut e) = shard.lookup(db, slot, key, now, true) {
        let Object::Bloom(b) = object_mut(&mut e, Kind::Bloom)? else {
            unreachable!("object_mut checked the kind")
        };
        b.load_chunk(iter, data)
            .map_err(|m| ReplyError::err_static(m.strip_prefix("ERR ").expect("ERR errors")))?;
        // The chunk changed bits the stream cannot describe: the filter is sent whole.
        e.set_version(ctx.version());
    } else if iter == 1 {
        let b = Bloom::from_dump_header(data, limit)
            .ok_or(ReplyError::err_static("received bad data"))?;
        let version = ctx.version();
        shard.insert(
            db,
            slot,
            object_entry(key, Object::Bloom(Box::new(b)), version),
            now,
        );
    } else {
        return Err(ERR_NOT_FOUND);
    }
    ctx.out.ok();
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fmt_g_is_c_percent_g() {
        for (v, s) in [
            (0.005, "0.005"),
            (0.0025, "0.0025"),
            (0.000625, "0.000625"),
            (6.25e-05, "6.25e-05"),
            (1.5625e-05, "1.5625e-05"),
            (0.0005, "0.0005"),
            (0.5, "0.5"),
            (1234567.0, "1.23457e+06"),
            (123456.0, "123456"),
            (0.1, "0.1"),
        ] {
            assert_eq!(fmt_g(v), s, "{v}");
        }
    }
}
