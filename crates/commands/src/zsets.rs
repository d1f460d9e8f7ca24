//! Sorted set commands: ZADD ... ZSCAN, with Redis 7.0's replies and errors (and 7.2's
//! `ZRANK ... WITHSCORE`). The data structure is `shoal_keyspace::types::zset`; this module
//! parses, locks, runs and replies.
//!
//! The blocking pops (BZPOPMIN, BZPOPMAX, BZMPOP) live with the blocking machinery; they reuse
//! [`zpop_locked`], [`parse_mpop`], [`reply_pop_flat`] and [`reply_mpop`] from here, so the
//! blocking and non-blocking forms pop and reply alike.

use crate::err;
use crate::error::ReplyError;
use std::ops::Range;
use std::sync::atomic::Ordering::Relaxed;

use shoal_keyspace::types::set::Set;
use shoal_keyspace::types::zset::{LexBound, LexRange, ScoreRange, ZSet};
use shoal_keyspace::{EncodingLimits, Entry, Object, Payload, Rng, Shard, ValueRef};
use shoal_resp::{ReplyWriter, fmt_double};

use crate::args::{ERR_NOT_FLOAT, ERR_SYNTAX};
use crate::glob::glob_match;
use crate::notify;
use crate::table::{FindKeys, Group, KeySpec, Spec, flag::*, key::*};
use crate::{Args, CmdResult, Ctx};

const Z: Group = Group::SortedSet;

pub static COMMANDS: &[Spec] = &[
    Spec {
        name: "zadd",
        arity: -4,
        flags: WRITE | DENYOOM | FAST,
        keys: &[KeySpec::at(1, RW | UPDATE)],
        group: Z,
        since: "1.2.0",
        summary: "Add one or more members to a sorted set, or update its score if it already exists",
        handler: Some(zadd),
        ..Spec::DEFAULT
    },
    Spec {
        name: "zcard",
        arity: 2,
        flags: READONLY | FAST,
        keys: &[KeySpec::at(1, RO)],
        group: Z,
        since: "1.2.0",
        summary: "Get the number of members in a sorted set",
        handler: Some(zcard),
        ..Spec::DEFAULT
    },
    Spec {
        name: "zcount",
        arity: 4,
        flags: READONLY | FAST,
        keys: &[KeySpec::at(1, RO | ACCESS)],
        group: Z,
        since: "2.0.0",
        summary: "Count the members in a sorted set with scores within the given values",
        handler: Some(zcount),
        ..Spec::DEFAULT
    },
    Spec {
        name: "zdiff",
        arity: -3,
        flags: READONLY | MOVABLEKEYS,
        keys: &[KeySpec::at(1, RO | ACCESS).find(FindKeys::Keynum {
            keynum_idx: 0,
            first_key: 1,
            step: 1,
        })],
        group: Z,
        since: "6.2.0",
        summary: "Subtract multiple sorted sets",
        handler: Some(zdiff),
        ..Spec::DEFAULT
    },
    Spec {
        name: "zdiffstore",
        arity: -4,
        flags: WRITE | DENYOOM | MOVABLEKEYS,
        keys: &[
            KeySpec::at(1, OW | UPDATE),
            KeySpec::at(2, RO | ACCESS).find(FindKeys::Keynum {
                keynum_idx: 0,
                first_key: 1,
                step: 1,
            }),
        ],
        group: Z,
        since: "6.2.0",
        summary: "Subtract multiple sorted sets and store the resulting sorted set in a new key",
        handler: Some(zdiffstore),
        ..Spec::DEFAULT
    },
    Spec {
        name: "zincrby",
        arity: 4,
        flags: WRITE | DENYOOM | FAST,
        keys: &[KeySpec::at(1, RW | ACCESS | UPDATE)],
        group: Z,
        since: "1.2.0",
        summary: "Increment the score of a member in a sorted set",
        handler: Some(zincrby),
        ..Spec::DEFAULT
    },
    Spec {
        name: "zinter",
        arity: -3,
        flags: READONLY | MOVABLEKEYS,
        keys: &[KeySpec::at(1, RO | ACCESS).find(FindKeys::Keynum {
            keynum_idx: 0,
            first_key: 1,
            step: 1,
        })],
        group: Z,
        since: "6.2.0",
        summary: "Intersect multiple sorted sets",
        handler: Some(zinter),
        ..Spec::DEFAULT
    },
    Spec {
        name: "zintercard",
        arity: -3,
        flags: READONLY | MOVABLEKEYS,
        keys: &[KeySpec::at(1, RO | ACCESS).find(FindKeys::Keynum {
            keynum_idx: 0,
            first_key: 1,
            step: 1,
        })],
        group: Z,
        since: "7.0.0",
        summary: "Intersect multiple sorted sets and return the cardinality of the result",
        handler: Some(zintercard),
        ..Spec::DEFAULT
    },
    Spec {
        name: "zinterstore",
        arity: -4,
        flags: WRITE | DENYOOM | MOVABLEKEYS,
        keys: &[
            KeySpec::at(1, OW | UPDATE),
            KeySpec::at(2, RO | ACCESS).find(FindKeys::Keynum {
                keynum_idx: 0,
                first_key: 1,
                step: 1,
            }),
        ],
        group: Z,
        since: "2.0.0",
        summary: "Intersect multiple sorted sets and store the resulting sorted set in a new key",
        handler: Some(zinterstore),
        ..Spec::DEFAULT
    },
    Spec {
        name: "zlexcount",
        arity: 4,
        flags: READONLY | FAST,
        keys: &[KeySpec::at(1, RO | ACCESS)],
        group: Z,
        since: "2.8.9",
        summary: "Count the number of members in a sorted set between a given lexicographical range",
        handler: Some(zlexcount),
        ..Spec::DEFAULT
    },
    Spec {
        name: "zmpop",
        arity: -4,
        flags: WRITE | MOVABLEKEYS,
        keys: &[KeySpec::at(1, RW | ACCESS | DELETE).find(FindKeys::Keynum {
            keynum_idx: 0,
            first_key: 1,
            step: 1,
        })],
        group: Z,
        since: "7.0.0",
        summary: "Remove and return members with scores in a sorted set",
        handler: Some(zmpop),
        ..Spec::DEFAULT
    },
    Spec {
        name: "zmscore",
        arity: -3,
        flags: READONLY | FAST,
        keys: &[KeySpec::at(1, RO | ACCESS)],
        group: Z,
        since: "6.2.0",
        summary: "Get the score associated with the given members in a sorted set",
        handler: Some(zmscore),
        ..Spec::DEFAULT
    },
    Spec {
        name: "zpopmax",
        arity: -2,
        flags: WRITE | FAST,
        keys: &[KeySpec::at(1, RW | ACCESS | DELETE)],
        group: Z,
        since: "5.0.0",
        summary: "Remove and return members with the highest scores in a sorted set",
        handler: Some(zpopmax),
        ..Spec::DEFAULT
    },
    Spec {
        name: "zpopmin",
        arity: -2,
        flags: WRITE | FAST,
        keys: &[KeySpec::at(1, RW | ACCESS | DELETE)],
        group: Z,
        since: "5.0.0",
        summary: "Remove and return members with the lowest scores in a sorted set",
        handler: Some(zpopmin),
        ..Spec::DEFAULT
    },
    Spec {
        name: "zrandmember",
        arity: -2,
        flags: READONLY,
        keys: &[KeySpec::at(1, RO | ACCESS)],
        group: Z,
        since: "6.2.0",
        summary: "Get one or multiple random elements from a sorted set",
        tips: &["nondeterministic_output"],
        handler: Some(zrandmember),
        ..Spec::DEFAULT
    },
    Spec {
        name: "zrange",
        arity: -4,
        flags: READONLY,
        keys: &[KeySpec::at(1, RO | ACCESS)],
        group: Z,
        since: "1.2.0",
        summary: "Return a range of members in a sorted set",
        handler: Some(zrange),
        ..Spec::DEFAULT
    },
    Spec {
        name: "zrangebylex",
        arity: -4,
        flags: READONLY,
        keys: &[KeySpec::at(1, RO | ACCESS)],
        group: Z,
        since: "2.8.9",
        summary: "Return a range of members in a sorted set, by lexicographical range",
        handler: Some(zrangebylex),
        ..Spec::DEFAULT
    },
    Spec {
        name: "zrangebyscore",
        arity: -4,
        flags: READONLY,
        keys: &[KeySpec::at(1, RO | ACCESS)],
        group: Z,
        since: "1.0.5",
        summary: "Return a range of members in a sorted set, by score",
        handler: Some(zrangebyscore),
        ..Spec::DEFAULT
    },
    Spec {
        name: "zrangestore",
        arity: -5,
        flags: WRITE | DENYOOM,
        keys: &[KeySpec::at(1, OW | UPDATE), KeySpec::at(2, RO | ACCESS)],
        group: Z,
        since: "6.2.0",
        summary: "Store a range of members from sorted set into another key",
        handler: Some(zrangestore),
        ..Spec::DEFAULT
    },
    // Arity -3, not 7.0's 3: Redis 7.2's optional WITHSCORE.
    Spec {
        name: "zrank",
        arity: -3,
        flags: READONLY | FAST,
        keys: &[KeySpec::at(1, RO | ACCESS)],
        group: Z,
        since: "2.0.0",
        summary: "Determine the index of a member in a sorted set",
        handler: Some(zrank),
        ..Spec::DEFAULT
    },
    Spec {
        name: "zrem",
        arity: -3,
        flags: WRITE | FAST,
        keys: &[KeySpec::at(1, RW | DELETE)],
        group: Z,
        since: "1.2.0",
        summary: "Remove one or more members from a sorted set",
        handler: Some(zrem),
        ..Spec::DEFAULT
    },
    Spec {
        name: "zremrangebylex",
        arity: 4,
        flags: WRITE,
        keys: &[KeySpec::at(1, RW | DELETE)],
        group: Z,
        since: "2.8.9",
        summary: "Remove all members in a sorted set between the given lexicographical range",
        handler: Some(zremrangebylex),
        ..Spec::DEFAULT
    },
    Spec {
        name: "zremrangebyrank",
        arity: 4,
        flags: WRITE,
        keys: &[KeySpec::at(1, RW | DELETE)],
        group: Z,
        since: "2.0.0",
        summary: "Remove all members in a sorted set within the given indexes",
        handler: Some(zremrangebyrank),
        ..Spec::DEFAULT
    },
    Spec {
        name: "zremrangebyscore",
        arity: 4,
        flags: WRITE,
        keys: &[KeySpec::at(1, RW | DELETE)],
        group: Z,
        since: "1.2.0",
        summary: "Remove all members in a sorted set within the given scores",
        handler: Some(zremrangebyscore),
        ..Spec::DEFAULT
    },
    Spec {
        name: "zrevrange",
        arity: -4,
        flags: READONLY,
        keys: &[KeySpec::at(1, RO | ACCESS)],
        group: Z,
        since: "1.2.0",
        summary: "Return a range of members in a sorted set, by index, with scores ordered from high to low",
        handler: Some(zrevrange),
        ..Spec::DEFAULT
    },
    Spec {
        name: "zrevrangebylex",
        arity: -4,
        flags: READONLY,
        keys: &[KeySpec::at(1, RO | ACCESS)],
        group: Z,
        since: "2.8.9",
        summary: "Return a range of members in a sorted set, by lexicographical range, ordered from higher to lower strings.",
        handler: Some(zrevrangebylex),
        ..Spec::DEFAULT
    },
    Spec {
        name: "zrevrangebyscore",
        arity: -4,
        flags: READONLY,
        keys: &[KeySpec::at(1, RO | ACCESS)],
        group: Z,
        since: "2.2.0",
        summary: "Return a range of members in a sorted set, by score, with scores ordered from high to low",
        handler: Some(zrevrangebyscore),
        ..Spec::DEFAULT
    },
    Spec {
        name: "zrevrank",
        arity: -3,
        flags: READONLY | FAST,
        keys: &[KeySpec::at(1, RO | ACCESS)],
        group: Z,
        since: "2.0.0",
        summary: "Determine the index of a member in a sorted set, with scores ordered from high to low",
        handler: Some(zrevrank),
        ..Spec::DEFAULT
    },
    Spec {
        name: "zscan",
        arity: -3,
        flags: READONLY,
        keys: &[KeySpec::at(1, RO | ACCESS)],
        group: Z,
        since: "2.8.0",
        summary: "Incrementally iterate sorted sets elements and associated scores",
        tips: &["nondeterministic_output"],
        handler: Some(zscan),
        ..Spec::DEFAULT
    },
    Spec {
        name: "zscore",
        arity: 3,
        flags: READONLY | FAST,
        keys: &[KeySpec::at(1, RO | ACCESS)],
        group: Z,
        since: "1.2.0",
        summary: "Get the score associated with the given member in a sorted set",
        handler: Some(zscore),
        ..Spec::DEFAULT
    },
    Spec {
        name: "zunion",
        arity: -3,
        flags: READONLY | MOVABLEKEYS,
        keys: &[KeySpec::at(1, RO | ACCESS).find(FindKeys::Keynum {
            keynum_idx: 0,
            first_key: 1,
            step: 1,
        })],
        group: Z,
        since: "6.2.0",
        summary: "Add multiple sorted sets",
        handler: Some(zunion),
        ..Spec::DEFAULT
    },
    Spec {
        name: "zunionstore",
        arity: -4,
        flags: WRITE | DENYOOM | MOVABLEKEYS,
        keys: &[
            KeySpec::at(1, OW | UPDATE),
            KeySpec::at(2, RO | ACCESS).find(FindKeys::Keynum {
                keynum_idx: 0,
                first_key: 1,
                step: 1,
            }),
        ],
        group: Z,
        since: "2.0.0",
        summary: "Add multiple sorted sets and store the resulting sorted set in a new key",
        handler: Some(zunionstore),
        ..Spec::DEFAULT
    },
];

const ERR_RANGE_FLOAT: ReplyError = ReplyError::err_static("min or max is not a float");
const ERR_RANGE_LEX: ReplyError = ReplyError::err_static("min or max not valid string range item");
const ERR_NAN: ReplyError = ReplyError::err_static("resulting score is not a number (NaN)");
const ERR_POSITIVE: ReplyError = ReplyError::err_static("value is out of range, must be positive");

/// Most picks one ZRANDMEMBER may return. Redis streams any count to the socket; a reply here is
/// built in memory first, so a count like -10^12 is refused instead of exhausting it.
pub const RANDMEMBER_COUNT_MAX: u64 = 1 << 24;

// ---------------------------------------------------------------------------------------------
// Shared helpers.

/// The sorted set held by an entry, or WRONGTYPE.
fn zset_of(e: &Entry) -> Result<&ZSet, ReplyError> {
    match e.value() {
        ValueRef::Obj(Object::ZSet(z)) => Ok(z),
        _ => Err(ReplyError::WrongType),
    }
}

fn zset_mut(e: &mut Entry) -> Result<&mut ZSet, ReplyError> {
    match e.object_mut() {
        Some(Object::ZSet(z)) => Ok(z),
        _ => Err(ReplyError::WrongType),
    }
}

fn new_entry(key: &[u8], z: ZSet, version: u64) -> Entry {
    Entry::new(
        key,
        Payload::Object(Box::new(Object::ZSet(z))),
        None,
        None,
        version,
        0,
    )
}

/// Stores `z` at `key` (replacing any value and its TTL, as Redis's `setKey`), or deletes `key`
/// when `z` is empty. Returns the stored cardinality.
/// Stores `z` at `key`, replacing what it held, raising `event`; an empty `z` deletes the key
/// instead (raising `del` if there was one). Returns the size stored.
#[allow(clippy::too_many_arguments)]
fn store_zset(
    shard: &mut Shard,
    db: usize,
    slot: u16,
    key: &[u8],
    z: ZSet,
    version: u64,
    now: u64,
    event: &'static str,
) -> usize {
    let n = z.len();
    if n == 0 {
        if shard.remove(db, slot, key).is_some() {
            shard.note(notify::GENERIC, "del", db, key);
        }
    } else {
        shard.insert(db, slot, new_entry(key, z, version), now);
        shard.note(notify::ZSET, event, db, key);
    }
    n
}

fn is_space(b: u8) -> bool {
    matches!(b, b' ' | b'\t' | b'\n' | b'\x0b' | b'\x0c' | b'\r')
}

/// C's `strtod` over a whole argument, as Redis calls it: `Some((value, out_of_range))` when the
/// number spans the string after optional leading whitespace. The empty string is 0 (strtod
/// converts nothing and stops at the terminator, which Redis's end check accepts). Decimal and
/// hexadecimal forms, `inf`/`infinity`; NaN is refused (every caller refuses it).
fn strtod(s: &[u8]) -> Option<(f64, bool)> {
    if s.is_empty() {
        return Some((0.0, false));
    }
    let start = s.iter().position(|&b| !is_space(b))?;
    let t = &s[start..];
    let (neg, body) = match t[0] {
        b'-' => (true, &t[1..]),
        b'+' => (false, &t[1..]),
        _ => (false, t),
    };
    let sign = if neg { -1.0 } else { 1.0 };
    if body.eq_ignore_ascii_case(b"inf") || body.eq_ignore_ascii_case(b"infinity") {
        return Some((sign * f64::INFINITY, false));
    }
    if body.len() > 2 && body[0] == b'0' && (body[1] | 0x20) == b'x' {
        return hex_float(&body[2..]).map(|(v, r)| (sign * v, r));
    }
    // Decimal: digits [. digits] [e [sign] digits], at least one mantissa digit.
    let mut i = 0;
    let mut digits = 0;
    let mut nonzero = false;
    while i < body.len() && body[i].is_ascii_digit() {
        nonzero |= body[i] != b'0';
        i += 1;
        digits += 1;
    }
    if i < body.len() && body[i] == b'.' {
        i += 1;
        while i < body.len() && body[i].is_ascii_digit() {
            nonzero |= body[i] != b'0';
            i += 1;
            digits += 1;
        }
    }
    if digits == 0 {
        return None;
    }
    if i < body.len() && (body[i] | 0x20) == b'e' {
        let mut j = i + 1;
        if j < body.len() && (body[j] == b'+' || body[j] == b'-') {
            j += 1;
        }
        let exp_start = j;
        while j < body.len() && body[j].is_ascii_digit() {
            j += 1;
        }
        if j == exp_start {
            return None;
        }
        i = j;
    }
    if i != body.len() {
        return None;
    }
    let v: f64 = std::str::from_utf8(body).ok()?.parse().ok()?;
    let out_of_range = v.is_infinite() || (v == 0.0 && nonzero);
    Some((sign * v, out_of_range))
}

/// The part of a hex float after `0x`: hex digits [. hex digits] [p [sign] decimal digits].
fn hex_float(b: &[u8]) -> Option<(f64, bool)> {
    let mut mant: u64 = 0;
    let mut exp: i64 = 0;
    let mut digits = 0;
    let mut nonzero = false;
    let mut i = 0;
    let mut seen_point = false;
    while i < b.len() {
        let c = b[i];
        if c == b'.' && !seen_point {
            seen_point = true;
            i += 1;
            continue;
        }
        let Some(d) = (c as char).to_digit(16) else {
            break;
        };
        nonzero |= d != 0;
        digits += 1;
        if mant >> 60 == 0 {
            mant = mant * 16 + d as u64;
            if seen_point {
                exp -= 4;
            }
        } else if !seen_point {
            exp += 4;
        }
        i += 1;
    }
    if digits == 0 {
        return None;
    }
    if i < b.len() && (b[i] | 0x20) == b'p' {
        let mut j = i + 1;
        let neg = j < b.len() && b[j] == b'-';
        if j < b.len() && (b[j] == b'+' || b[j] == b'-') {
            j += 1;
        }
        let start = j;
        let mut e: i64 = 0;
        while j < b.len() && b[j].is_ascii_digit() {
            e = (e * 10 + (b[j] - b'0') as i64).min(100_000);
            j += 1;
        }
        if j == start {
            return None;
        }
        exp += if neg { -e } else { e };
        i = j;
    }
    if i != b.len() {
        return None;
    }
    let v = mant as f64 * 2f64.powi(exp.clamp(-20_000, 20_000) as i32);
    Some((v, v.is_infinite() || (v == 0.0 && nonzero)))
}

/// A score or weight argument, as Redis's `string2d` takes it: no leading space, no NaN, no
/// overflow to infinity or underflow to zero (`inf` itself is fine).
pub fn parse_score(s: &[u8]) -> Option<f64> {
    if s.is_empty() || is_space(s[0]) {
        return None;
    }
    let (v, out_of_range) = strtod(s)?;
    if v.is_nan() || (out_of_range && (v.is_infinite() || v == 0.0)) {
        return None;
    }
    Some(v)
}

/// `min` and `max` of ZRANGEBYSCORE and friends (`(` for exclusive), as Redis's `zslParseRange`.
pub fn parse_score_range(min: &[u8], max: &[u8]) -> Result<ScoreRange, ReplyError> {
    let bound = |a: &[u8]| -> Option<(f64, bool)> {
        let (ex, num) = match a.first() {
            Some(b'(') => (true, &a[1..]),
            _ => (false, a),
        };
        let (v, _) = strtod(num)?;
        (!v.is_nan()).then_some((v, ex))
    };
    let (min, min_exclusive) = bound(min).ok_or(ERR_RANGE_FLOAT)?;
    let (max, max_exclusive) = bound(max).ok_or(ERR_RANGE_FLOAT)?;
    Ok(ScoreRange {
        min,
        min_exclusive,
        max,
        max_exclusive,
    })
}

/// `min` and `max` of ZRANGEBYLEX and friends: `-`, `+`, `[member`, `(member`.
pub fn parse_lex_range(min: &[u8], max: &[u8]) -> Result<LexRange, ReplyError> {
    let bound = |a: &[u8]| -> Option<LexBound> {
        match a.first()? {
            b'+' if a.len() == 1 => Some(LexBound::Max),
            b'-' if a.len() == 1 => Some(LexBound::Min),
            b'(' => Some(LexBound::Exclusive(a[1..].to_vec())),
            b'[' => Some(LexBound::Inclusive(a[1..].to_vec())),
            _ => None,
        }
    };
    Ok(LexRange {
        min: bound(min).ok_or(ERR_RANGE_LEX)?,
        max: bound(max).ok_or(ERR_RANGE_LEX)?,
    })
}

/// Redis's index sanitising for ZRANGE/ZREMRANGEBYRANK: negative counts from the end; the
/// (possibly empty) ascending rank range.
fn rank_range(start: i64, end: i64, len: usize) -> Range<usize> {
    let len = len as i64;
    let mut start = if start < 0 { start + len } else { start };
    let mut end = if end < 0 { end + len } else { end };
    if start < 0 {
        start = 0;
    }
    if start > end || start >= len {
        return 0..0;
    }
    if end >= len {
        end = len - 1;
    }
    start as usize..end as usize + 1
}

/// Writes members (and scores) as ZRANGE does: a flat array in RESP2; with scores in RESP3, an
/// array of `[member, score]` pairs (not a map: order matters).
fn reply_members<'a>(
    out: &mut ReplyWriter<'_>,
    n: usize,
    items: impl Iterator<Item = (&'a [u8], f64)>,
    withscores: bool,
) {
    let pairs = withscores && out.is_resp3();
    out.array(if withscores && !pairs { 2 * n } else { n });
    for (m, s) in items.take(n) {
        if pairs {
            out.array(2);
        }
        out.bulk(m);
        if withscores {
            out.double(s);
        }
    }
}

// ---------------------------------------------------------------------------------------------
// ZADD, ZINCRBY, ZREM.

/// ZADD's options (GEOADD passes NX, XX and CH).
#[derive(Default, Clone, Copy)]
pub(crate) struct AddFlags {
    pub nx: bool,
    pub xx: bool,
    pub gt: bool,
    pub lt: bool,
    pub ch: bool,
    pub incr: bool,
}

fn zadd(ctx: &mut Ctx<'_>, args: &Args<'_>) -> CmdResult {
    zadd_generic(ctx, args, false)
}

fn zincrby(ctx: &mut Ctx<'_>, args: &Args<'_>) -> CmdResult {
    zadd_generic(ctx, args, true)
}

/// What ZADD did to the elements it was given.
#[derive(Default)]
struct AddOutcome {
    added: usize,
    updated: usize,
    processed: usize,
    /// The last processed element's score (the INCR reply).
    score: f64,
    nan: bool,
}

/// Redis's `zsetAdd` over every pair, stopping at a NaN result.
fn apply_adds(
    z: &mut ZSet,
    pairs: &[(f64, &[u8])],
    f: AddFlags,
    limits: &EncodingLimits,
) -> AddOutcome {
    let mut o = AddOutcome::default();
    for &(score, m) in pairs {
        // One member lookup whatever the flags decide.
        z.upsert(m, limits, |cur| {
            let Some(cur) = cur else {
                if f.xx {
                    return None;
                }
                o.added += 1;
                o.processed += 1;
                o.score = score;
                return Some(score);
            };
            if f.nx {
                return None;
            }
            let new = if f.incr { score + cur } else { score };
            if new.is_nan() {
                o.nan = true;
                return None;
            }
            if (f.lt && new >= cur) || (f.gt && new <= cur) {
                return None;
            }
            o.processed += 1;
            o.score = new;
            if new == cur {
                return None;
            }
            o.updated += 1;
            Some(new)
        });
        if o.nan {
            return o;
        }
    }
    o
}

fn zadd_generic(ctx: &mut Ctx<'_>, args: &Args<'_>, zincrby: bool) -> CmdResult {
    let key = args.get(1);
    let mut f = AddFlags {
        incr: zincrby,
        ..AddFlags::default()
    };
    let mut i = 2;
    while !zincrby && i < args.len() {
        let a = args.get(i);
        if a.eq_ignore_ascii_case(b"nx") {
            f.nx = true;
        } else if a.eq_ignore_ascii_case(b"xx") {
            f.xx = true;
        } else if a.eq_ignore_ascii_case(b"ch") {
            f.ch = true;
        } else if a.eq_ignore_ascii_case(b"incr") {
            f.incr = true;
        } else if a.eq_ignore_ascii_case(b"gt") {
            f.gt = true;
        } else if a.eq_ignore_ascii_case(b"lt") {
            f.lt = true;
        } else {
            break;
        }
        i += 1;
    }
    let elements = args.len() - i;
    if elements == 0 || !elements.is_multiple_of(2) {
        return Err(ERR_SYNTAX);
    }
    if f.nx && f.xx {
        return Err(ReplyError::err_static(
            "XX and NX options at the same time are not compatible",
        ));
    }
    if (f.nx && (f.gt || f.lt)) || (f.gt && f.lt) {
        return Err(ReplyError::err_static(
            "GT, LT, and/or NX options at the same time are not compatible",
        ));
    }
    if f.incr && elements > 2 {
        return Err(ReplyError::err_static(
            "INCR option supports a single increment-element pair",
        ));
    }
    // Every score parses before anything changes: the command runs whole or not at all.
    let pairs = (i..args.len())
        .step_by(2)
        .map(|j| {
            Ok((
                parse_score(args.get(j)).ok_or(ERR_NOT_FLOAT)?,
                args.get(j + 1),
            ))
        })
        .collect::<Result<Vec<(f64, &[u8])>, ReplyError>>()?;
    zadd_pairs(ctx, key, &pairs, f)
}

/// ZADD's work once the arguments are parsed (also GEOADD's, as Redis's GEOADD calls ZADD): adds
/// or updates `pairs` at `key`, notes each member's resulting score for replication, and replies.
pub(crate) fn zadd_pairs(
    ctx: &mut Ctx<'_>,
    key: &[u8],
    pairs: &[(f64, &[u8])],
    f: AddFlags,
) -> CmdResult {
    let limits = ctx.srv.encoding_limits();
    let (db, now) = (ctx.db(), ctx.now_ms);
    let (mut shard, slot) = ctx.shard(key);
    let version = ctx.version();
    let event = if f.incr { "zincr" } else { "zadd" };
    let existing = match shard.lookup(db, slot, key, now, true) {
        Some(mut e) => {
            let mut ops = e.ops();
            let z = zset_mut(&mut e)?;
            let o = apply_adds(z, pairs, f, &limits);
            if o.added + o.updated > 0 {
                // Each member's resulting score (NX/XX/GT/LT/INCR decided here, not on replicas).
                if ops.is_on() {
                    for (_, m) in pairs {
                        if let Some(score) = z.score(m) {
                            ops.zadd(score, m);
                        }
                    }
                }
                e.note(ops);
                e.set_version(version);
            }
            Some(o)
        }
        None => None,
    };
    let o = match existing {
        Some(o) => {
            if o.added + o.updated > 0 {
                shard.note(notify::ZSET, event, db, key);
            }
            o
        }
        None if f.xx => AddOutcome::default(),
        None => {
            let mut z = ZSet::new(&limits);
            let o = apply_adds(&mut z, pairs, f, &limits);
            store_zset(&mut shard, db, slot, key, z, version, now, event);
            o
        }
    };
    drop(shard);
    if o.nan {
        return Err(ERR_NAN);
    }
    if f.incr {
        if o.processed > 0 {
            ctx.out.double(o.score);
        } else {
            ctx.out.null();
        }
    } else {
        let n = if f.ch { o.added + o.updated } else { o.added };
        ctx.out.int(n as i64);
    }
    Ok(())
}

fn zrem(ctx: &mut Ctx<'_>, args: &Args<'_>) -> CmdResult {
    let key = args.get(1);
    let (db, now) = (ctx.db(), ctx.now_ms);
    let (mut shard, slot) = ctx.shard(key);
    let version = ctx.version();
    let Some(mut e) = shard.lookup(db, slot, key, now, true) else {
        drop(shard);
        ctx.out.int(0);
        return Ok(());
    };
    let mut ops = e.ops();
    let z = zset_mut(&mut e)?;
    let mut deleted = 0;
    for m in args.tail(2).iter() {
        if z.remove(m).is_some() {
            ops.zrem(m);
            deleted += 1;
        }
        if z.is_empty() {
            break;
        }
    }
    let empty = z.is_empty();
    if deleted > 0 {
        e.note(ops);
        e.set_version(version);
    }
    drop(e);
    if deleted > 0 {
        shard.note(notify::ZSET, "zrem", db, key);
    }
    if empty {
        shard.remove(db, slot, key);
        shard.note(notify::GENERIC, "del", db, key);
    }
    drop(shard);
    ctx.out.int(deleted);
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Point reads: ZCARD, ZSCORE, ZMSCORE, ZRANK, ZREVRANK, ZCOUNT, ZLEXCOUNT.

fn zcard(ctx: &mut Ctx<'_>, args: &Args<'_>) -> CmdResult {
    let (db, now) = (ctx.db(), ctx.now_ms);
    let (mut shard, slot) = ctx.shard(args.get(1));
    let n = match shard.lookup_read(db, slot, args.get(1), now) {
        Some(e) => zset_of(&e)?.len(),
        None => 0,
    };
    drop(shard);
    ctx.out.int(n as i64);
    Ok(())
}

fn zscore(ctx: &mut Ctx<'_>, args: &Args<'_>) -> CmdResult {
    let (db, now) = (ctx.db(), ctx.now_ms);
    let (mut shard, slot) = ctx.shard(args.get(1));
    let score = match shard.lookup_read(db, slot, args.get(1), now) {
        Some(e) => zset_of(&e)?.score(args.get(2)),
        None => None,
    };
    drop(shard);
    match score {
        Some(s) => ctx.out.double(s),
        None => ctx.out.null(),
    }
    Ok(())
}

fn zmscore(ctx: &mut Ctx<'_>, args: &Args<'_>) -> CmdResult {
    let (db, now) = (ctx.db(), ctx.now_ms);
    let (mut shard, slot) = ctx.shard(args.get(1));
    let e = shard.lookup_read(db, slot, args.get(1), now);
    // A missing key answers like an empty set.
    let z = match &e {
        Some(e) => Some(zset_of(e)?),
        None => None,
    };
    ctx.out.array(args.len() - 2);
    for m in args.tail(2).iter() {
        match z.and_then(|z| z.score(m)) {
            Some(s) => ctx.out.double(s),
            None => ctx.out.null(),
        }
    }
    Ok(())
}

fn zrank(ctx: &mut Ctx<'_>, args: &Args<'_>) -> CmdResult {
    zrank_generic(ctx, args, false)
}

fn zrevrank(ctx: &mut Ctx<'_>, args: &Args<'_>) -> CmdResult {
    zrank_generic(ctx, args, true)
}

/// ZRANK/ZREVRANK, with Redis 7.2's WITHSCORE (`[rank, score]`, a null array when absent).
fn zrank_generic(ctx: &mut Ctx<'_>, args: &Args<'_>, rev: bool) -> CmdResult {
    if args.len() > 4 {
        let name = if rev { "zrevrank" } else { "zrank" };
        return Err(err!("wrong number of arguments for '{name}' command"));
    }
    let withscore = args.len() == 4;
    if withscore && !args.is(3, "WITHSCORE") {
        return Err(ERR_SYNTAX);
    }
    let (db, now) = (ctx.db(), ctx.now_ms);
    let (mut shard, slot) = ctx.shard(args.get(1));
    let found = match shard.lookup_read(db, slot, args.get(1), now) {
        Some(e) => {
            let z = zset_of(&e)?;
            z.rank(args.get(2))
                .map(|(r, s)| (if rev { z.len() - 1 - r } else { r }, s))
        }
        None => None,
    };
    drop(shard);
    match found {
        Some((rank, score)) if withscore => {
            ctx.out.array(2);
            ctx.out.int(rank as i64);
            ctx.out.double(score);
        }
        Some((rank, _)) => ctx.out.int(rank as i64),
        None if withscore => ctx.out.null_array(),
        None => ctx.out.null(),
    }
    Ok(())
}

fn zcount(ctx: &mut Ctx<'_>, args: &Args<'_>) -> CmdResult {
    let range = parse_score_range(args.get(2), args.get(3))?;
    count_generic(ctx, args, |z| range.ranks(z).len())
}

fn zlexcount(ctx: &mut Ctx<'_>, args: &Args<'_>) -> CmdResult {
    let range = parse_lex_range(args.get(2), args.get(3))?;
    count_generic(ctx, args, |z| range.ranks(z).len())
}

fn count_generic(ctx: &mut Ctx<'_>, args: &Args<'_>, f: impl Fn(&ZSet) -> usize) -> CmdResult {
    let (db, now) = (ctx.db(), ctx.now_ms);
    let (mut shard, slot) = ctx.shard(args.get(1));
    let n = match shard.lookup_read(db, slot, args.get(1), now) {
        Some(e) => f(zset_of(&e)?),
        None => 0,
    };
    drop(shard);
    ctx.out.int(n as i64);
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// ZRANGE and its older forms, ZRANGESTORE.

#[derive(Debug, Clone, Copy, PartialEq)]
enum By {
    Auto,
    Rank,
    Score,
    Lex,
}

#[derive(Debug, Clone, PartialEq)]
enum Bounds {
    Rank(i64, i64),
    Score(ScoreRange),
    Lex(LexRange),
}

/// A parsed ZRANGE request.
#[derive(Debug, Clone, PartialEq)]
struct RangeQuery {
    bounds: Bounds,
    rev: bool,
    withscores: bool,
    offset: i64,
    /// Negative: no limit.
    limit: i64,
}

/// Redis's `zrangeGenericCommand` argument parsing. `src` is the index of the source key; `by`
/// and `rev` are fixed by the older commands (ZRANGEBYSCORE ...) or left to the options (ZRANGE).
fn parse_range_query(
    args: &Args<'_>,
    src: usize,
    store: bool,
    mut by: By,
    fixed_rev: Option<bool>,
) -> Result<RangeQuery, ReplyError> {
    let mut rev = fixed_rev;
    let mut withscores = false;
    let (mut offset, mut limit) = (0i64, -1i64);
    let mut j = src + 3;
    while j < args.len() {
        let left = args.len() - j - 1;
        if !store && args.is(j, "withscores") {
            withscores = true;
        } else if args.is(j, "limit") && left >= 2 {
            offset = args.i64(j + 1)?;
            limit = args.i64(j + 2)?;
            j += 2;
        } else if rev.is_none() && args.is(j, "rev") {
            rev = Some(true);
        } else if by == By::Auto && args.is(j, "bylex") {
            by = By::Lex;
        } else if by == By::Auto && args.is(j, "byscore") {
            by = By::Score;
        } else {
            return Err(ERR_SYNTAX);
        }
        j += 1;
    }
    let rev = rev.unwrap_or(false);
    if by == By::Auto {
        by = By::Rank;
    }
    // Redis checks the limit's value, so `LIMIT 0 -1` passes with a rank range.
    if limit != -1 && by == By::Rank {
        return Err(ReplyError::err_static(
            "syntax error, LIMIT is only supported in combination with either BYSCORE or BYLEX",
        ));
    }
    if withscores && by == By::Lex {
        return Err(ReplyError::err_static(
            "syntax error, WITHSCORES not supported in combination with BYLEX",
        ));
    }
    let (mut lo, mut hi) = (args.get(src + 1), args.get(src + 2));
    if rev && by != By::Rank {
        // Given as max, min.
        std::mem::swap(&mut lo, &mut hi);
    }
    let bounds = match by {
        By::Score => Bounds::Score(parse_score_range(lo, hi)?),
        By::Lex => Bounds::Lex(parse_lex_range(lo, hi)?),
        _ => Bounds::Rank(args.i64(src + 1)?, args.i64(src + 2)?),
    };
    Ok(RangeQuery {
        bounds,
        rev,
        withscores,
        offset,
        limit,
    })
}

/// Where a range query starts (an ascending rank), which way it walks, and how many it takes.
struct Selection {
    start: usize,
    rev: bool,
    n: usize,
}

impl RangeQuery {
    fn select(&self, z: &ZSet) -> Selection {
        let empty = Selection {
            start: 0,
            rev: false,
            n: 0,
        };
        let ranks = match &self.bounds {
            Bounds::Rank(start, end) => {
                let r = rank_range(*start, *end, z.len());
                if r.is_empty() {
                    return empty;
                }
                return Selection {
                    start: if self.rev {
                        z.len() - 1 - r.start
                    } else {
                        r.start
                    },
                    rev: self.rev,
                    n: r.len(),
                };
            }
            Bounds::Score(s) => s.ranks(z),
            Bounds::Lex(l) => l.ranks(z),
        };
        // A negative offset walks off the end in Redis: nothing.
        if self.offset < 0 || self.offset as u64 >= ranks.len() as u64 {
            return empty;
        }
        let offset = self.offset as usize;
        let mut n = ranks.len() - offset;
        if self.limit >= 0 {
            n = n.min(usize::try_from(self.limit).unwrap_or(usize::MAX));
        }
        Selection {
            start: if self.rev {
                ranks.end - 1 - offset
            } else {
                ranks.start + offset
            },
            rev: self.rev,
            n,
        }
    }
}

fn zrange(ctx: &mut Ctx<'_>, args: &Args<'_>) -> CmdResult {
    let q = parse_range_query(args, 1, false, By::Auto, None)?;
    range_reply(ctx, args.get(1), &q)
}

fn zrevrange(ctx: &mut Ctx<'_>, args: &Args<'_>) -> CmdResult {
    let q = parse_range_query(args, 1, false, By::Rank, Some(true))?;
    range_reply(ctx, args.get(1), &q)
}

fn zrangebyscore(ctx: &mut Ctx<'_>, args: &Args<'_>) -> CmdResult {
    let q = parse_range_query(args, 1, false, By::Score, Some(false))?;
    range_reply(ctx, args.get(1), &q)
}

fn zrevrangebyscore(ctx: &mut Ctx<'_>, args: &Args<'_>) -> CmdResult {
    let q = parse_range_query(args, 1, false, By::Score, Some(true))?;
    range_reply(ctx, args.get(1), &q)
}

fn zrangebylex(ctx: &mut Ctx<'_>, args: &Args<'_>) -> CmdResult {
    let q = parse_range_query(args, 1, false, By::Lex, Some(false))?;
    range_reply(ctx, args.get(1), &q)
}

fn zrevrangebylex(ctx: &mut Ctx<'_>, args: &Args<'_>) -> CmdResult {
    let q = parse_range_query(args, 1, false, By::Lex, Some(true))?;
    range_reply(ctx, args.get(1), &q)
}

fn range_reply(ctx: &mut Ctx<'_>, key: &[u8], q: &RangeQuery) -> CmdResult {
    let (db, now) = (ctx.db(), ctx.now_ms);
    let (mut shard, slot) = ctx.shard(key);
    let Some(e) = shard.lookup_read(db, slot, key, now) else {
        drop(shard);
        ctx.out.array(0);
        return Ok(());
    };
    let z = zset_of(&e)?;
    let sel = q.select(z);
    // Written under the lock, straight from the set: no copy of a large range.
    reply_members(
        &mut ctx.out,
        sel.n,
        z.iter_from(sel.start, sel.rev),
        q.withscores,
    );
    Ok(())
}

/// ZRANGESTORE dst src min max [BYSCORE|BYLEX] [REV] [LIMIT offset count]
fn zrangestore(ctx: &mut Ctx<'_>, args: &Args<'_>) -> CmdResult {
    let q = parse_range_query(args, 2, true, By::Auto, None)?;
    let (dst, src) = (args.get(1), args.get(2));
    let limits = ctx.srv.encoding_limits();
    let (db, now) = (ctx.db(), ctx.now_ms);
    let mut locked = ctx.lock_keys([dst, src].into_iter());
    let version = ctx.version();
    let result = {
        let (shard, slot) = locked.shard(src);
        match shard.lookup_read(db, slot, src, now) {
            Some(e) => {
                let z = zset_of(&e)?;
                let sel = q.select(z);
                let mut out = ZSet::new(&limits);
                for (m, s) in z.iter_from(sel.start, sel.rev).take(sel.n) {
                    out.insert(m, s, &limits);
                }
                out
            }
            None => ZSet::new(&limits),
        }
    };
    let (shard, slot) = locked.shard(dst);
    let n = store_zset(shard, db, slot, dst, result, version, now, "zrangestore");
    drop(locked);
    ctx.out.int(n as i64);
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// ZREMRANGEBYRANK, ZREMRANGEBYSCORE, ZREMRANGEBYLEX.

fn zremrangebyrank(ctx: &mut Ctx<'_>, args: &Args<'_>) -> CmdResult {
    let (start, end) = (args.i64(2)?, args.i64(3)?);
    remrange_generic(ctx, args, "zremrangebyrank", |z| {
        rank_range(start, end, z.len())
    })
}

fn zremrangebyscore(ctx: &mut Ctx<'_>, args: &Args<'_>) -> CmdResult {
    let range = parse_score_range(args.get(2), args.get(3))?;
    remrange_generic(ctx, args, "zremrangebyscore", |z| range.ranks(z))
}

fn zremrangebylex(ctx: &mut Ctx<'_>, args: &Args<'_>) -> CmdResult {
    let range = parse_lex_range(args.get(2), args.get(3))?;
    remrange_generic(ctx, args, "zremrangebylex", |z| range.ranks(z))
}

fn remrange_generic(
    ctx: &mut Ctx<'_>,
    args: &Args<'_>,
    event: &'static str,
    ranks: impl Fn(&ZSet) -> Range<usize>,
) -> CmdResult {
    let key = args.get(1);
    let (db, now) = (ctx.db(), ctx.now_ms);
    let (mut shard, slot) = ctx.shard(key);
    let version = ctx.version();
    let Some(mut e) = shard.lookup(db, slot, key, now, true) else {
        drop(shard);
        ctx.out.int(0);
        return Ok(());
    };
    let mut ops = e.ops();
    let z = zset_mut(&mut e)?;
    let r = ranks(z);
    let deleted = z.remove_range(r, |m, _| ops.zrem(m));
    let empty = z.is_empty();
    if deleted > 0 {
        e.note(ops);
        e.set_version(version);
    }
    drop(e);
    if deleted > 0 {
        shard.note(notify::ZSET, event, db, key);
    }
    if empty {
        shard.remove(db, slot, key);
        shard.note(notify::GENERIC, "del", db, key);
    }
    drop(shard);
    ctx.out.int(deleted as i64);
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Pops: ZPOPMIN, ZPOPMAX, ZMPOP, and the pieces the blocking forms reuse.

/// Popped members with their scores, in pop order.
pub type Popped = Vec<(Vec<u8>, f64)>;

/// Pops up to `count` members from the low end (or the high end when `max`) of the sorted set at
/// `key`, stamping `version`, deleting the key when it empties. The shard must be locked by the
/// caller (which took `version` after locking). `Ok(None)`: no such key. `Err`: WRONGTYPE.
/// Members come in pop order, the order of the reply.
#[allow(clippy::too_many_arguments)] // the locked shard's coordinates, spelled out for callers
pub fn zpop_locked(
    shard: &mut Shard,
    db: usize,
    slot: u16,
    key: &[u8],
    max: bool,
    count: usize,
    version: u64,
    now_ms: u64,
) -> Result<Option<Popped>, ReplyError> {
    let Some(mut e) = shard.lookup(db, slot, key, now_ms, true) else {
        return Ok(None);
    };
    let mut ops = e.ops();
    let z = zset_mut(&mut e)?;
    let popped = z.pop(max, count);
    let empty = z.is_empty();
    if !popped.is_empty() {
        for (m, _) in &popped {
            ops.zrem(m);
        }
        e.note(ops);
        e.set_version(version);
    }
    drop(e);
    if !popped.is_empty() {
        shard.note(
            notify::ZSET,
            if max { "zpopmax" } else { "zpopmin" },
            db,
            key,
        );
    }
    if empty {
        shard.remove(db, slot, key);
        shard.note(notify::GENERIC, "del", db, key);
    }
    Ok(Some(popped))
}

/// ZPOPMIN/ZPOPMAX's flat reply `[member, score, ...]`, preceded by the key when given (the
/// BZPOPMIN/BZPOPMAX shape `[key, member, score]`). Scores are doubles in RESP3.
pub fn reply_pop_flat(out: &mut ReplyWriter<'_>, key: Option<&[u8]>, items: &[(Vec<u8>, f64)]) {
    out.array(2 * items.len() + key.is_some() as usize);
    if let Some(k) = key {
        out.bulk(k);
    }
    for (m, s) in items {
        out.bulk(m);
        out.double(*s);
    }
}

/// ZMPOP/BZMPOP's reply: `[key, [[member, score], ...]]` in both protocols.
pub fn reply_mpop(out: &mut ReplyWriter<'_>, key: &[u8], items: &[(Vec<u8>, f64)]) {
    out.array(2);
    out.bulk(key);
    out.array(items.len());
    for (m, s) in items {
        out.array(2);
        out.bulk(m);
        out.double(*s);
    }
}

/// Parsed `numkeys key [key ...] MIN|MAX [COUNT count]` of ZMPOP/BZMPOP.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MpopArgs {
    /// Argument indices of the keys.
    pub keys: Range<usize>,
    pub max: bool,
    pub count: usize,
}

/// Parses ZMPOP's arguments from `numkeys_idx` (1 for ZMPOP, 2 for BZMPOP) with Redis's errors.
pub fn parse_mpop(args: &Args<'_>, numkeys_idx: usize) -> Result<MpopArgs, ReplyError> {
    let numkeys = args
        .i64(numkeys_idx)
        .ok()
        .filter(|&n| n >= 1)
        .ok_or(ReplyError::err_static("numkeys should be greater than 0"))?;
    let first = numkeys_idx + 1;
    let where_idx = match usize::try_from(numkeys) {
        Ok(n) if n < args.len().saturating_sub(first) => first + n,
        _ => return Err(ERR_SYNTAX),
    };
    let max = if args.is(where_idx, "MIN") {
        false
    } else if args.is(where_idx, "MAX") {
        true
    } else {
        return Err(ERR_SYNTAX);
    };
    let mut count: Option<usize> = None;
    let mut j = where_idx + 1;
    while j < args.len() {
        if count.is_none() && args.is(j, "COUNT") && j + 1 < args.len() {
            let c = args
                .i64(j + 1)
                .ok()
                .filter(|&c| c >= 1)
                .ok_or(ReplyError::err_static("count should be greater than 0"))?;
            count = Some(usize::try_from(c).unwrap_or(usize::MAX));
            j += 2;
        } else {
            return Err(ERR_SYNTAX);
        }
    }
    Ok(MpopArgs {
        keys: first..where_idx,
        max,
        count: count.unwrap_or(1),
    })
}

fn zpopmin(ctx: &mut Ctx<'_>, args: &Args<'_>) -> CmdResult {
    zpop_generic(ctx, args, false)
}

fn zpopmax(ctx: &mut Ctx<'_>, args: &Args<'_>) -> CmdResult {
    zpop_generic(ctx, args, true)
}

fn zpop_generic(ctx: &mut Ctx<'_>, args: &Args<'_>, max: bool) -> CmdResult {
    if args.len() > 3 {
        return Err(ERR_SYNTAX);
    }
    let count = if args.len() == 3 {
        let c = args.i64(2).ok().filter(|&c| c >= 0).ok_or(ERR_POSITIVE)?;
        Some(usize::try_from(c).unwrap_or(usize::MAX))
    } else {
        None
    };
    let key = args.get(1);
    let (db, now) = (ctx.db(), ctx.now_ms);
    let (mut shard, slot) = ctx.shard(key);
    let version = ctx.version();
    let popped = if count == Some(0) {
        // Still WRONGTYPE on another type, but nothing is removed.
        if let Some(e) = shard.lookup(db, slot, key, now, true) {
            zset_of(&e)?;
        }
        Vec::new()
    } else {
        zpop_locked(
            &mut shard,
            db,
            slot,
            key,
            max,
            count.unwrap_or(1),
            version,
            now,
        )?
        .unwrap_or_default()
    };
    drop(shard);
    // RESP3 nests pairs when a count was given; otherwise one flat array.
    if ctx.out.is_resp3() && count.is_some() {
        ctx.out.array(popped.len());
        for (m, s) in &popped {
            ctx.out.array(2);
            ctx.out.bulk(m);
            ctx.out.double(*s);
        }
    } else {
        reply_pop_flat(&mut ctx.out, None, &popped);
    }
    Ok(())
}

fn zmpop(ctx: &mut Ctx<'_>, args: &Args<'_>) -> CmdResult {
    let p = parse_mpop(args, 1)?;
    let (db, now) = (ctx.db(), ctx.now_ms);
    let mut locked = ctx.lock_keys(p.keys.clone().map(|i| args.get(i)));
    let version = ctx.version();
    for i in p.keys.clone() {
        let key = args.get(i);
        let (shard, slot) = locked.shard(key);
        if let Some(items) = zpop_locked(shard, db, slot, key, p.max, p.count, version, now)? {
            drop(locked);
            reply_mpop(&mut ctx.out, key, &items);
            return Ok(());
        }
    }
    drop(locked);
    ctx.out.null_array();
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// ZRANDMEMBER, ZSCAN.

/// A fresh generator per call, derived from inputs and a draw counter (no OS randomness), so a
/// simulation replays.
fn rng_for(ctx: &Ctx<'_>) -> Rng {
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

fn zrandmember(ctx: &mut Ctx<'_>, args: &Args<'_>) -> CmdResult {
    let key = args.get(1);
    let mut rng = rng_for(ctx);
    let (db, now) = (ctx.db(), ctx.now_ms);
    if args.len() == 2 {
        let (mut shard, slot) = ctx.shard(key);
        let Some(e) = shard.lookup_read(db, slot, key, now) else {
            drop(shard);
            ctx.out.null();
            return Ok(());
        };
        let z = zset_of(&e)?;
        match z.random(&mut rng, 1, false).first() {
            Some((m, _)) => ctx.out.bulk(m),
            None => ctx.out.null(),
        }
        return Ok(());
    }
    let l = args.i64(2)?;
    if l == i64::MIN {
        return Err(ReplyError::err_static(
            "value is out of range, value must between -9223372036854775807 and 9223372036854775807",
        ));
    }
    if args.len() > 4 || (args.len() == 4 && !args.is(3, "withscores")) {
        return Err(ERR_SYNTAX);
    }
    let withscores = args.len() == 4;
    if withscores && !(-(i64::MAX / 2)..=i64::MAX / 2).contains(&l) {
        return Err(ReplyError::err_static("value is out of range"));
    }
    let (count, unique) = (l.unsigned_abs(), l >= 0);
    let (mut shard, slot) = ctx.shard(key);
    let Some(e) = shard.lookup_read(db, slot, key, now) else {
        drop(shard);
        ctx.out.array(0);
        return Ok(());
    };
    let z = zset_of(&e)?;
    if !unique && count > RANDMEMBER_COUNT_MAX {
        return Err(ReplyError::err_static("value is out of range"));
    }
    let count = usize::try_from(count).unwrap_or(usize::MAX);
    let picks = z.random(&mut rng, count, unique);
    reply_members(&mut ctx.out, picks.len(), picks.iter().copied(), withscores);
    Ok(())
}

/// A score as ZSCAN prints it: a listpack holds scores as text (integers printed whole up to
/// 2^62), a skiplist prints `%.17g`.
fn scan_score(s: f64, listpack: bool) -> String {
    let whole_max = (i64::MAX / 2) as f64;
    if listpack && s.is_finite() && s.fract() == 0.0 && s.abs() <= whole_max && s != 0.0 {
        return (s as i64).to_string();
    }
    fmt_double(s)
}

fn zscan(ctx: &mut Ctx<'_>, args: &Args<'_>) -> CmdResult {
    let key = args.get(1);
    let cursor = crate::args::parse_scan_cursor(args.get(2))?;
    let mut count = 10usize;
    let mut pattern: Option<&[u8]> = None;
    let mut i = 3;
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
        } else {
            return Err(ERR_SYNTAX);
        }
        i += 2;
    }
    let (db, now) = (ctx.db(), ctx.now_ms);
    let (mut shard, slot) = ctx.shard(key);
    let mut found: Vec<(Vec<u8>, String)> = Vec::new();
    let next = match shard.lookup_read(db, slot, key, now) {
        Some(e) => {
            let z = zset_of(&e)?;
            let listpack = z.encoding() == "listpack";
            z.scan(cursor, count, |m, s| {
                if pattern.is_none_or(|p| glob_match(p, m, false)) {
                    found.push((m.to_vec(), scan_score(s, listpack)));
                }
            })
        }
        None => 0,
    };
    drop(shard);
    ctx.out.array(2);
    ctx.out.bulk(next.to_string().as_bytes());
    ctx.out.array(2 * found.len());
    for (m, s) in &found {
        ctx.out.bulk(m);
        ctx.out.bulk(s.as_bytes());
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// ZUNION, ZINTER, ZDIFF, their STORE forms, ZINTERCARD. Inputs may be sets (score 1).

#[derive(Debug, Clone, Copy, PartialEq)]
enum SetOp {
    Union,
    Inter,
    Diff,
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Aggregate {
    Sum,
    Min,
    Max,
}

/// Redis's `zunionInterAggregate`: a NaN sum (inf + -inf) becomes 0.
fn aggregate(target: &mut f64, v: f64, how: Aggregate) {
    match how {
        Aggregate::Sum => {
            *target += v;
            if target.is_nan() {
                *target = 0.0;
            }
        }
        Aggregate::Min => {
            if v < *target {
                *target = v;
            }
        }
        Aggregate::Max => {
            if v > *target {
                *target = v;
            }
        }
    }
}

/// An input of the set operations, borrowed from its entry.
enum Input<'a> {
    Z(&'a ZSet),
    S(&'a Set),
}

impl Input<'_> {
    fn score(&self, m: &[u8]) -> Option<f64> {
        match self {
            Input::Z(z) => z.score(m),
            Input::S(s) => set_contains(s, m).then_some(1.0),
        }
    }

    fn for_each(&self, mut f: impl FnMut(&[u8], f64)) {
        match self {
            Input::Z(z) => z.iter().for_each(|(m, s)| f(m, s)),
            Input::S(s) => set_for_each(s, |m| f(m, 1.0)),
        }
    }
}

/// Whether a plain set holds `m`.
fn set_contains(s: &Set, m: &[u8]) -> bool {
    s.contains(m)
}

/// Calls `f` on each member of a plain set.
fn set_for_each(s: &Set, mut f: impl FnMut(&[u8])) {
    for m in s.iter() {
        m.with_bytes(&mut f);
    }
}

/// Options after the keys of ZUNION & co.
struct OpOptions {
    weights: Vec<f64>,
    aggregate: Aggregate,
    withscores: bool,
    limit: usize,
}

fn parse_op_options(
    args: &Args<'_>,
    mut j: usize,
    setnum: usize,
    op: SetOp,
    store: bool,
    card_only: bool,
) -> Result<OpOptions, ReplyError> {
    let mut o = OpOptions {
        weights: vec![1.0; setnum],
        aggregate: Aggregate::Sum,
        withscores: false,
        limit: 0,
    };
    while j < args.len() {
        let remaining = args.len() - j;
        if op != SetOp::Diff && !card_only && remaining > setnum && args.is(j, "weights") {
            for (k, w) in o.weights.iter_mut().enumerate() {
                *w = parse_score(args.get(j + 1 + k))
                    .ok_or(ReplyError::err_static("weight value is not a float"))?;
            }
            j += 1 + setnum;
        } else if op != SetOp::Diff && !card_only && remaining >= 2 && args.is(j, "aggregate") {
            o.aggregate = if args.is(j + 1, "sum") {
                Aggregate::Sum
            } else if args.is(j + 1, "min") {
                Aggregate::Min
            } else if args.is(j + 1, "max") {
                Aggregate::Max
            } else {
                return Err(ERR_SYNTAX);
            };
            j += 2;
        } else if !store && !card_only && args.is(j, "withscores") {
            o.withscores = true;
            j += 1;
        } else if card_only && remaining >= 2 && args.is(j, "limit") {
            let l = args
                .i64(j + 1)
                .ok()
                .filter(|&l| l >= 0)
                .ok_or(ReplyError::err_static("LIMIT can't be negative"))?;
            o.limit = usize::try_from(l).unwrap_or(usize::MAX);
            j += 2;
        } else {
            return Err(ERR_SYNTAX);
        }
    }
    Ok(o)
}

fn zunion(ctx: &mut Ctx<'_>, args: &Args<'_>) -> CmdResult {
    zsetop(ctx, args, "zunion", SetOp::Union, false, false)
}

fn zinter(ctx: &mut Ctx<'_>, args: &Args<'_>) -> CmdResult {
    zsetop(ctx, args, "zinter", SetOp::Inter, false, false)
}

fn zdiff(ctx: &mut Ctx<'_>, args: &Args<'_>) -> CmdResult {
    zsetop(ctx, args, "zdiff", SetOp::Diff, false, false)
}

fn zintercard(ctx: &mut Ctx<'_>, args: &Args<'_>) -> CmdResult {
    zsetop(ctx, args, "zintercard", SetOp::Inter, false, true)
}

fn zunionstore(ctx: &mut Ctx<'_>, args: &Args<'_>) -> CmdResult {
    zsetop(ctx, args, "zunionstore", SetOp::Union, true, false)
}

fn zinterstore(ctx: &mut Ctx<'_>, args: &Args<'_>) -> CmdResult {
    zsetop(ctx, args, "zinterstore", SetOp::Inter, true, false)
}

fn zdiffstore(ctx: &mut Ctx<'_>, args: &Args<'_>) -> CmdResult {
    zsetop(ctx, args, "zdiffstore", SetOp::Diff, true, false)
}

/// Redis's `zunionInterDiffGenericCommand`.
fn zsetop(
    ctx: &mut Ctx<'_>,
    args: &Args<'_>,
    name: &str,
    op: SetOp,
    store: bool,
    card_only: bool,
) -> CmdResult {
    let numkeys_idx = if store { 2 } else { 1 };
    let setnum = args.i64(numkeys_idx)?;
    if setnum < 1 {
        return Err(err!("at least 1 input key is needed for '{name}' command"));
    }
    let first = numkeys_idx + 1;
    let setnum = match usize::try_from(setnum) {
        Ok(n) if n <= args.len() - first => n,
        _ => return Err(ERR_SYNTAX),
    };
    let keys: Vec<&[u8]> = (first..first + setnum).map(|i| args.get(i)).collect();
    // Redis checks the inputs' types before it parses the options: keep that error order.
    let opts = parse_op_options(args, first + setnum, setnum, op, store, card_only);
    let dst = store.then(|| args.get(1));
    let limits = ctx.srv.encoding_limits();
    let (db, now) = (ctx.db(), ctx.now_ms);
    let mut locked = ctx.lock_keys(keys.iter().copied().chain(dst));
    // Only the STORE forms write; the others leave the clock alone.
    let version = if store { ctx.version() } else { 0 };
    // Cardinalities (0 for a missing key), checking types.
    let mut lens = Vec::with_capacity(setnum);
    for k in &keys {
        let (shard, slot) = locked.shard(k);
        lens.push(match shard.lookup_read(db, slot, k, now) {
            None => 0,
            Some(e) => match e.value() {
                ValueRef::Obj(Object::ZSet(z)) => z.len(),
                ValueRef::Obj(Object::Set(s)) => s.len(),
                _ => return Err(ReplyError::WrongType),
            },
        });
    }
    let opts = opts?;
    // Runs `f` on input `i`, if present.
    let mut with_input = |i: usize, f: &mut dyn FnMut(Input<'_>)| {
        let (shard, slot) = locked.shard(keys[i]);
        if let Some(e) = shard.peek(db, slot, keys[i], now) {
            match e.value() {
                ValueRef::Obj(Object::ZSet(z)) => f(Input::Z(z)),
                ValueRef::Obj(Object::Set(s)) => f(Input::S(s)),
                _ => {}
            }
        }
    };
    // Smallest inputs first, as Redis orders them (it matters for float sums, and for speed).
    let mut order: Vec<usize> = (0..setnum).collect();
    if op != SetOp::Diff {
        order.sort_by_key(|&i| lens[i]);
    }
    let w = &opts.weights;
    let weighted = |i: usize, s: f64| {
        let v = w[i] * s;
        if v.is_nan() { 0.0 } else { v }
    };
    let mut result: Vec<(Vec<u8>, f64)> = Vec::new();
    match op {
        SetOp::Union => {
            let mut acc: std::collections::HashMap<Vec<u8>, f64> =
                std::collections::HashMap::with_capacity(lens.iter().copied().max().unwrap_or(0));
            for &i in &order {
                if lens[i] == 0 {
                    continue;
                }
                with_input(i, &mut |inp| {
                    inp.for_each(|m, s| {
                        let v = weighted(i, s);
                        match acc.get_mut(m) {
                            Some(t) => aggregate(t, v, opts.aggregate),
                            None => {
                                acc.insert(m.to_vec(), v);
                            }
                        }
                    })
                });
            }
            result.extend(acc);
        }
        SetOp::Inter => {
            if lens[order[0]] > 0 {
                let first = order[0];
                with_input(first, &mut |inp| {
                    inp.for_each(|m, s| result.push((m.to_vec(), weighted(first, s))))
                });
                for &j in &order[1..] {
                    with_input(j, &mut |inp| {
                        result.retain_mut(|(m, acc)| match inp.score(m) {
                            Some(s) => {
                                aggregate(acc, s * w[j], opts.aggregate);
                                true
                            }
                            None => false,
                        })
                    });
                }
            }
        }
        SetOp::Diff => {
            if lens[0] > 0 {
                with_input(0, &mut |inp| {
                    inp.for_each(|m, s| result.push((m.to_vec(), s)))
                });
                for (j, &len) in lens.iter().enumerate().skip(1) {
                    if len > 0 && !result.is_empty() {
                        with_input(j, &mut |inp| result.retain(|(m, _)| inp.score(m).is_none()));
                    }
                }
            }
        }
    }
    if card_only {
        drop(locked);
        let n = if opts.limit > 0 {
            result.len().min(opts.limit)
        } else {
            result.len()
        };
        ctx.out.int(n as i64);
        return Ok(());
    }
    result.sort_by(|a, b| {
        a.1.partial_cmp(&b.1)
            .expect("scores are never NaN")
            .then_with(|| a.0.cmp(&b.0))
    });
    if let Some(dst) = dst {
        let mut z = ZSet::new(&limits);
        for (m, s) in &result {
            z.insert(m, *s, &limits);
        }
        let (shard, slot) = locked.shard(dst);
        let event = match op {
            SetOp::Union => "zunionstore",
            SetOp::Inter => "zinterstore",
            SetOp::Diff => "zdiffstore",
        };
        let n = store_zset(shard, db, slot, dst, z, version, now, event);
        drop(locked);
        ctx.out.int(n as i64);
        return Ok(());
    }
    drop(locked);
    reply_members(
        &mut ctx.out,
        result.len(),
        result.iter().map(|(m, s)| (m.as_slice(), *s)),
        opts.withscores,
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use shoal_keyspace::{EncodingLimits, Entry, Object, Payload, key_slot};

    use super::*;
    use crate::tests::run;
    use crate::{Client, ClientHandle, Hooks, OwnedArgs, ServerState, config, execute};

    /// A server state kept across commands, for tests that also reach into the keyspace.
    struct Node {
        srv: ServerState,
        client: Client,
    }

    impl Node {
        fn new() -> Node {
            let srv = ServerState::new(config::Config::default(), 1_000_000, 7, Hooks::default());
            let h = Arc::new(ClientHandle::new(1, "a:1".into(), "a:2".into(), 0));
            Node {
                srv,
                client: Client::new(h, true),
            }
        }

        fn run(&mut self, cmd: &[&str]) -> String {
            let o = OwnedArgs::new(cmd.iter());
            let mut out = Vec::new();
            execute(&self.srv, &mut self.client, &o.args(), &mut out, 1_000_000);
            String::from_utf8_lossy(&out).into_owned()
        }

        /// Stores a plain set directly (the set commands are another family's).
        fn put_set(&mut self, key: &str, members: &[&str]) {
            let limits = EncodingLimits::default();
            let mut s = Set::new(&limits);
            for m in members {
                s.insert(m.as_bytes(), &limits);
            }
            let slot = key_slot(key.as_bytes());
            let e = Entry::new(
                key.as_bytes(),
                Payload::Object(Box::new(Object::Set(s))),
                None,
                None,
                1,
                0,
            );
            self.srv
                .ks
                .lock(self.srv.ks.shard_of(slot))
                .insert(0, slot, e, 1_000_000);
        }
    }

    fn bulk(s: &str) -> String {
        format!("${}\r\n{s}\r\n", s.len())
    }

    /// RESP2 array of bulks.
    fn arr(items: &[&str]) -> String {
        let mut o = format!("*{}\r\n", items.len());
        for i in items {
            o.push_str(&bulk(i));
        }
        o
    }

    const WRONGTYPE: &str =
        "-WRONGTYPE Operation against a key holding the wrong kind of value\r\n";

    #[test]
    fn zadd_flags_and_replies() {
        let r = run(&[
            &["ZADD", "z", "1", "a", "2", "b", "3", "c"],
            &["ZADD", "z", "NX", "5", "a", "6", "d"],
            &["ZADD", "z", "XX", "7", "a", "8", "e"],
            &["ZADD", "z", "CH", "1", "a", "2", "b", "9", "f"],
            &["ZADD", "z", "GT", "CH", "0", "a", "10", "b"],
            &["ZADD", "z", "LT", "CH", "0", "a", "10", "c"],
            &["ZADD", "z", "INCR", "5", "a"],
            &["ZADD", "z", "INCR", "NX", "5", "a"],
            &["ZADD", "z", "INCR", "XX", "5", "nope"],
            &["ZINCRBY", "z", "2.5", "a"],
            &["ZADD", "xx", "XX", "1", "a"],
            &["EXISTS", "xx"],
            &["ZRANGE", "z", "0", "-1", "WITHSCORES"],
        ]);
        assert_eq!(r[0], ":3\r\n");
        assert_eq!(r[1], ":1\r\n");
        assert_eq!(r[2], ":0\r\n");
        assert_eq!(r[3], ":2\r\n", "a changed, f added");
        assert_eq!(r[4], ":1\r\n", "only b grows");
        assert_eq!(r[5], ":1\r\n", "only a shrinks");
        assert_eq!(r[6], bulk("5"));
        assert_eq!(r[7], "$-1\r\n");
        assert_eq!(r[8], "$-1\r\n");
        assert_eq!(r[9], bulk("7.5"));
        assert_eq!(r[10], ":0\r\n");
        assert_eq!(r[11], ":0\r\n", "XX never creates the key");
        assert_eq!(
            r[12],
            arr(&["c", "3", "d", "6", "a", "7.5", "f", "9", "b", "10"])
        );
    }

    #[test]
    fn zadd_errors_match_redis() {
        let r = run(&[
            &["ZADD", "z", "NX", "XX", "1", "a"],
            &["ZADD", "z", "GT", "LT", "1", "a"],
            &["ZADD", "z", "GT", "NX", "1", "a"],
            &["ZADD", "z", "INCR", "1", "a", "2", "b"],
            &["ZADD", "z", "1", "a", "2"],
            &["ZADD", "z", "x", "a"],
            &["ZADD", "z", "1e400", "a"],
            &["ZADD", "z", " 1", "a"],
            &["ZADD", "z", "nan", "a"],
            &["ZADD", "z", "1", "a", "x", "b"],
            &["EXISTS", "z"],
            &["ZADD", "z", "inf", "a"],
            &["ZINCRBY", "z", "-inf", "a"],
            &["ZSCORE", "z", "a"],
            &["ZINCRBY", "z", "x", "a"],
            &["SET", "s", "v"],
            &["ZADD", "s", "1", "a"],
        ]);
        assert_eq!(
            r[0],
            "-ERR XX and NX options at the same time are not compatible\r\n"
        );
        for i in [1, 2] {
            assert_eq!(
                r[i],
                "-ERR GT, LT, and/or NX options at the same time are not compatible\r\n"
            );
        }
        assert_eq!(
            r[3],
            "-ERR INCR option supports a single increment-element pair\r\n"
        );
        assert_eq!(r[4], "-ERR syntax error\r\n");
        for (i, reply) in r.iter().enumerate().take(10).skip(5) {
            assert_eq!(reply, "-ERR value is not a valid float\r\n", "{i}");
        }
        assert_eq!(r[10], ":0\r\n", "a bad score anywhere changes nothing");
        assert_eq!(r[11], ":1\r\n");
        assert_eq!(r[12], "-ERR resulting score is not a number (NaN)\r\n");
        assert_eq!(r[13], bulk("inf"));
        assert_eq!(r[14], "-ERR value is not a valid float\r\n");
        assert_eq!(r[16], WRONGTYPE);
    }

    #[test]
    fn score_parsing_follows_strtod() {
        assert_eq!(parse_score(b"0x10"), Some(16.0));
        assert_eq!(parse_score(b"0x1p-2"), Some(0.25));
        assert_eq!(parse_score(b"+5"), Some(5.0));
        assert_eq!(parse_score(b"-Infinity"), Some(f64::NEG_INFINITY));
        assert_eq!(parse_score(b"1e-310").map(|v| v > 0.0), Some(true));
        for bad in [
            &b""[..],
            b"1e-400",
            b"1e400",
            b"1 ",
            b"1e",
            b".",
            b"0x",
            b"nan",
        ] {
            assert_eq!(parse_score(bad), None, "{:?}", String::from_utf8_lossy(bad));
        }
        // Ranges take what strtod takes: empty is 0, leading space, overflow to inf.
        let r = parse_score_range(b"", b" 1e400").unwrap();
        assert_eq!((r.min, r.max), (0.0, f64::INFINITY));
        let r = parse_score_range(b"(", b"(0x2").unwrap();
        assert!(r.min_exclusive && r.max_exclusive && r.max == 2.0);
        assert!(parse_score_range(b"1 ", b"2").is_err());
        assert!(parse_score_range(b"nan", b"2").is_err());
        assert!(parse_lex_range(b"--", b"+").is_err());
        assert!(parse_lex_range(b"", b"+").is_err());
        assert!(parse_lex_range(b"a", b"+").is_err());
    }

    #[test]
    fn reads_and_wrongtype() {
        let r = run(&[
            &["ZADD", "z", "1", "a", "2", "b", "0.1", "c"],
            &["ZCARD", "z"],
            &["ZCARD", "nokey"],
            &["ZSCORE", "z", "c"],
            &["ZSCORE", "z", "nope"],
            &["ZMSCORE", "z", "a", "nope", "b"],
            &["ZMSCORE", "nokey", "a"],
            &["ZRANK", "z", "a"],
            &["ZREVRANK", "z", "a"],
            &["ZRANK", "z", "nope"],
            &["ZCOUNT", "z", "(0.1", "2"],
            &["ZCOUNT", "z", "x", "2"],
            &["ZLEXCOUNT", "z", "-", "+"],
            &["ZLEXCOUNT", "z", "a", "+"],
            &["SET", "s", "v"],
            &["ZCARD", "s"],
            &["ZSCORE", "s", "a"],
            &["ZRANGE", "s", "0", "-1"],
            &["ZSCAN", "s", "0"],
            &["ZMSCORE", "s", "a"],
        ]);
        assert_eq!(r[1], ":3\r\n");
        assert_eq!(r[2], ":0\r\n");
        assert_eq!(r[3], bulk("0.10000000000000001"));
        assert_eq!(r[4], "$-1\r\n");
        assert_eq!(r[5], "*3\r\n$1\r\n1\r\n$-1\r\n$1\r\n2\r\n");
        assert_eq!(r[6], "*1\r\n$-1\r\n");
        assert_eq!(r[7], ":1\r\n");
        assert_eq!(r[8], ":1\r\n");
        assert_eq!(r[9], "$-1\r\n");
        assert_eq!(r[10], ":2\r\n");
        assert_eq!(r[11], "-ERR min or max is not a float\r\n");
        assert_eq!(r[12], ":3\r\n");
        assert_eq!(r[13], "-ERR min or max not valid string range item\r\n");
        for (i, reply) in r.iter().enumerate().skip(15) {
            assert_eq!(reply, WRONGTYPE, "{i}");
        }
    }

    #[test]
    fn zrank_withscore_is_redis_7_2() {
        let r = run(&[
            &["HELLO", "3"],
            &["ZADD", "z", "1", "a", "2.5", "b"],
            &["ZRANK", "z", "b", "WITHSCORE"],
            &["ZREVRANK", "z", "b", "withscore"],
            &["ZRANK", "z", "nope", "WITHSCORE"],
            &["ZRANK", "nokey", "a", "WITHSCORE"],
            &["ZRANK", "z", "a", "foo"],
            &["ZRANK", "z", "a", "WITHSCORE", "x"],
            &["ZRANK", "nokey", "a"],
        ]);
        assert_eq!(r[2], "*2\r\n:1\r\n,2.5\r\n");
        assert_eq!(r[3], "*2\r\n:0\r\n,2.5\r\n");
        assert_eq!(r[4], "_\r\n");
        assert_eq!(r[5], "_\r\n");
        assert_eq!(r[6], "-ERR syntax error\r\n");
        assert_eq!(
            r[7],
            "-ERR wrong number of arguments for 'zrank' command\r\n"
        );
        assert_eq!(r[8], "_\r\n");
        let r = run(&[
            &["ZRANK", "nokey", "a", "WITHSCORE"],
            &["ZRANK", "nokey", "a"],
        ]);
        assert_eq!(r, ["*-1\r\n", "$-1\r\n"]);
    }

    #[test]
    fn ranges_by_rank_score_and_lex() {
        let r = run(&[
            &[
                "ZADD", "z", "0", "a", "1", "b", "2", "c", "3", "d", "4", "e",
            ],
            &["ZRANGE", "z", "-2", "-1"],
            &["ZRANGE", "z", "3", "1"],
            &["ZREVRANGE", "z", "0", "1", "WITHSCORES"],
            &["ZRANGE", "z", "(1", "3", "BYSCORE"],
            &["ZRANGE", "z", "3", "(1", "BYSCORE", "REV"],
            &["ZRANGE", "z", "-inf", "+inf", "BYSCORE", "LIMIT", "1", "2"],
            &["ZRANGE", "z", "-inf", "+inf", "BYSCORE", "LIMIT", "-1", "2"],
            &["ZRANGE", "z", "-inf", "+inf", "BYSCORE", "LIMIT", "3", "-1"],
            &["ZREVRANGEBYSCORE", "z", "+inf", "-inf", "LIMIT", "1", "1"],
            &["ZRANGEBYLEX", "z", "[b", "(d"],
            &["ZREVRANGEBYLEX", "z", "+", "[d"],
            &["ZRANGE", "z", "[d", "-", "BYLEX", "REV", "LIMIT", "0", "2"],
            &["ZRANGE", "nokey", "0", "-1"],
        ]);
        assert_eq!(r[1], arr(&["d", "e"]));
        assert_eq!(r[2], "*0\r\n");
        assert_eq!(r[3], arr(&["e", "4", "d", "3"]));
        assert_eq!(r[4], arr(&["c", "d"]));
        assert_eq!(r[5], arr(&["d", "c"]));
        assert_eq!(r[6], arr(&["b", "c"]));
        assert_eq!(
            r[7], "*0\r\n",
            "a negative offset selects nothing, as in Redis"
        );
        assert_eq!(r[8], arr(&["d", "e"]));
        assert_eq!(r[9], arr(&["d"]));
        assert_eq!(r[10], arr(&["b", "c"]));
        assert_eq!(r[11], arr(&["e", "d"]));
        assert_eq!(r[12], arr(&["d", "c"]));
        assert_eq!(r[13], "*0\r\n");
    }

    #[test]
    fn range_option_errors() {
        let r = run(&[
            &["ZADD", "z", "1", "a"],
            &["ZRANGE", "z", "0", "-1", "LIMIT", "0", "1"],
            &["ZRANGE", "z", "0", "-1", "LIMIT", "0", "-1"],
            &["ZRANGE", "z", "-", "+", "BYLEX", "WITHSCORES"],
            &["ZRANGEBYLEX", "z", "-", "+", "WITHSCORES"],
            &["ZRANGE", "z", "0", "-1", "REV", "REV"],
            &["ZRANGE", "z", "0", "-1", "BYSCORE", "BYLEX"],
            &["ZRANGE", "z", "0", "1", "LIMIT", "1"],
            &["ZRANGE", "z", "0", "1", "LIMIT", "x", "1"],
            &["ZRANGE", "z", "a", "b"],
            &["ZRANGE", "z", "a", "b", "BYSCORE"],
            &["ZRANGE", "z", "a", "b", "BYLEX"],
            &["ZRANGEBYSCORE", "z", "1", "3", "REV"],
            &["ZREVRANGE", "z", "0", "1", "LIMIT", "0", "1"],
            &["ZRANGESTORE", "d", "z", "0", "-1", "WITHSCORES"],
        ]);
        let limit_err = "-ERR syntax error, LIMIT is only supported in combination with either BYSCORE or BYLEX\r\n";
        assert_eq!(r[1], limit_err);
        assert_eq!(r[2], arr(&["a"]), "LIMIT x -1 passes Redis's check");
        let lex_err = "-ERR syntax error, WITHSCORES not supported in combination with BYLEX\r\n";
        assert_eq!(r[3], lex_err);
        assert_eq!(r[4], lex_err);
        for i in [5, 6, 7, 12, 14] {
            assert_eq!(r[i], "-ERR syntax error\r\n", "{i}");
        }
        assert_eq!(r[8], "-ERR value is not an integer or out of range\r\n");
        assert_eq!(r[9], "-ERR value is not an integer or out of range\r\n");
        assert_eq!(r[10], "-ERR min or max is not a float\r\n");
        assert_eq!(r[11], "-ERR min or max not valid string range item\r\n");
        assert_eq!(r[13], limit_err);
    }

    #[test]
    fn resp3_shapes() {
        let r = run(&[
            &["HELLO", "3"],
            &["ZADD", "z", "1", "a", "2.5", "b"],
            &["ZRANGE", "z", "0", "-1", "WITHSCORES"],
            &["ZRANGE", "z", "0", "-1"],
            &["ZSCORE", "z", "b"],
            &["ZSCORE", "z", "nope"],
            &["ZMSCORE", "z", "a", "nope"],
            &["ZINCRBY", "z", "1", "a"],
            &["ZUNION", "1", "z", "WITHSCORES"],
            &["ZRANDMEMBER", "z", "5", "WITHSCORES"],
            &["ZPOPMIN", "z"],
            &["ZPOPMAX", "z", "1"],
            &["ZPOPMIN", "z", "1"],
            &["ZADD", "z", "1", "a"],
            &["ZMPOP", "1", "z", "MIN"],
            &["ZMPOP", "1", "z", "MIN"],
        ]);
        assert_eq!(
            r[2],
            "*2\r\n*2\r\n$1\r\na\r\n,1\r\n*2\r\n$1\r\nb\r\n,2.5\r\n"
        );
        assert_eq!(r[3], arr(&["a", "b"]));
        assert_eq!(r[4], ",2.5\r\n");
        assert_eq!(r[5], "_\r\n");
        assert_eq!(r[6], "*2\r\n,1\r\n_\r\n");
        assert_eq!(r[7], ",2\r\n");
        assert_eq!(
            r[8],
            "*2\r\n*2\r\n$1\r\na\r\n,2\r\n*2\r\n$1\r\nb\r\n,2.5\r\n"
        );
        // The whole set, highest first (Redis walks from the tail).
        assert_eq!(
            r[9],
            "*2\r\n*2\r\n$1\r\nb\r\n,2.5\r\n*2\r\n$1\r\na\r\n,2\r\n"
        );
        assert_eq!(r[10], "*2\r\n$1\r\na\r\n,2\r\n", "no count: flat");
        assert_eq!(r[11], "*1\r\n*2\r\n$1\r\nb\r\n,2.5\r\n", "count: nested");
        assert_eq!(r[12], "*0\r\n");
        assert_eq!(r[14], "*2\r\n$1\r\nz\r\n*1\r\n*2\r\n$1\r\na\r\n,1\r\n");
        assert_eq!(r[15], "_\r\n");
    }

    #[test]
    fn pops_and_mpop() {
        let r = run(&[
            &["ZADD", "z", "1", "a", "2", "b", "3", "c", "4", "d"],
            &["ZPOPMIN", "z"],
            &["ZPOPMAX", "z", "2"],
            &["ZPOPMIN", "z", "0"],
            &["ZPOPMIN", "z", "-1"],
            &["ZPOPMIN", "z", "1", "2"],
            &["ZPOPMAX", "z", "10"],
            &["EXISTS", "z"],
            &["ZPOPMIN", "z"],
            &["ZADD", "z2", "1", "x", "2", "y"],
            &["ZMPOP", "2", "nokey", "z2", "MAX", "COUNT", "5"],
            &["EXISTS", "z2"],
            &["ZMPOP", "1", "z2", "MIN"],
            &["ZMPOP", "0", "z2", "MIN"],
            &["ZMPOP", "x", "z2", "MIN"],
            &["ZMPOP", "1", "z2", "foo"],
            &["ZMPOP", "1", "z2", "MIN", "COUNT", "0"],
            &["ZMPOP", "1", "z2", "MIN", "COUNT", "1", "COUNT", "1"],
            &["ZMPOP", "2", "z2", "MIN"],
            &["ZMPOP", "9223372036854775807", "z2", "MIN"],
            &["SET", "s", "v"],
            &["ZADD", "z3", "1", "a"],
            &["ZMPOP", "2", "s", "z3", "MIN"],
            &["ZMPOP", "2", "z3", "s", "MIN"],
            &["ZPOPMIN", "s", "0"],
        ]);
        assert_eq!(r[1], arr(&["a", "1"]));
        assert_eq!(r[2], arr(&["d", "4", "c", "3"]));
        assert_eq!(r[3], "*0\r\n");
        assert_eq!(r[4], "-ERR value is out of range, must be positive\r\n");
        assert_eq!(r[5], "-ERR syntax error\r\n");
        assert_eq!(r[6], arr(&["b", "2"]));
        assert_eq!(r[7], ":0\r\n", "emptied key is deleted");
        assert_eq!(r[8], "*0\r\n");
        assert_eq!(
            r[10],
            "*2\r\n$2\r\nz2\r\n*2\r\n*2\r\n$1\r\ny\r\n$1\r\n2\r\n*2\r\n$1\r\nx\r\n$1\r\n1\r\n"
        );
        assert_eq!(r[11], ":0\r\n");
        assert_eq!(r[12], "*-1\r\n");
        assert_eq!(r[13], "-ERR numkeys should be greater than 0\r\n");
        assert_eq!(r[14], "-ERR numkeys should be greater than 0\r\n");
        assert_eq!(r[15], "-ERR syntax error\r\n");
        assert_eq!(r[16], "-ERR count should be greater than 0\r\n");
        for i in [17, 18, 19] {
            assert_eq!(r[i], "-ERR syntax error\r\n", "{i}");
        }
        assert_eq!(r[22], WRONGTYPE);
        assert_eq!(
            r[23],
            "*2\r\n$2\r\nz3\r\n*1\r\n*2\r\n$1\r\na\r\n$1\r\n1\r\n"
        );
        assert_eq!(r[24], WRONGTYPE);
    }

    #[test]
    fn remrange_deletes_emptied_keys() {
        let r = run(&[
            &[
                "ZADD", "z", "1", "a", "2", "b", "3", "c", "4", "d", "5", "e",
            ],
            &["ZREMRANGEBYRANK", "z", "1", "2"],
            &["ZREMRANGEBYRANK", "z", "5", "10"],
            &["ZREMRANGEBYSCORE", "z", "(1", "4"],
            &["ZRANGE", "z", "0", "-1"],
            &["ZREMRANGEBYLEX", "z", "x", "y"],
            &["ZREMRANGEBYSCORE", "z", "-inf", "+inf"],
            &["EXISTS", "z"],
            &["ZREMRANGEBYRANK", "nokey", "0", "-1"],
            &["ZREMRANGEBYRANK", "nokey", "x", "-1"],
            &["ZADD", "l", "0", "a", "0", "b", "0", "c"],
            &["ZREMRANGEBYLEX", "l", "(a", "+"],
            &["ZRANGE", "l", "0", "-1"],
        ]);
        assert_eq!(r[1], ":2\r\n");
        assert_eq!(r[2], ":0\r\n");
        assert_eq!(r[3], ":1\r\n");
        assert_eq!(r[4], arr(&["a", "e"]));
        assert_eq!(r[5], "-ERR min or max not valid string range item\r\n");
        assert_eq!(r[6], ":2\r\n");
        assert_eq!(r[7], ":0\r\n");
        assert_eq!(r[8], ":0\r\n");
        assert_eq!(r[9], "-ERR value is not an integer or out of range\r\n");
        assert_eq!(r[11], ":2\r\n");
        assert_eq!(r[12], arr(&["a"]));
    }

    #[test]
    fn zrangestore_replaces_or_deletes_destination() {
        let r = run(&[
            &["ZADD", "z", "1", "a", "2", "b", "3", "c"],
            &["SET", "d", "x"],
            &["EXPIRE", "d", "100"],
            &["ZRANGESTORE", "d", "z", "0", "1"],
            &["TYPE", "d"],
            &["TTL", "d"],
            &["ZRANGE", "d", "0", "-1", "WITHSCORES"],
            &[
                "ZRANGESTORE",
                "d",
                "z",
                "+inf",
                "(1",
                "BYSCORE",
                "REV",
                "LIMIT",
                "0",
                "1",
            ],
            &["ZRANGE", "d", "0", "-1"],
            &["ZRANGESTORE", "d", "z", "5", "9"],
            &["EXISTS", "d"],
            &["ZRANGESTORE", "d", "nokey", "0", "-1"],
        ]);
        assert_eq!(r[3], ":2\r\n");
        assert_eq!(r[4], "+zset\r\n");
        assert_eq!(r[5], ":-1\r\n");
        assert_eq!(r[6], arr(&["a", "1", "b", "2"]));
        assert_eq!(r[7], ":1\r\n");
        assert_eq!(r[8], arr(&["c"]));
        assert_eq!(r[9], ":0\r\n");
        assert_eq!(r[10], ":0\r\n");
        assert_eq!(r[11], ":0\r\n");
    }

    #[test]
    fn randmember_counts_and_errors() {
        let r = run(&[
            &["ZADD", "z", "1", "a", "2", "b", "3", "c"],
            &["ZRANDMEMBER", "nokey"],
            &["ZRANDMEMBER", "nokey", "5"],
            &["ZRANDMEMBER", "z", "0"],
            &["ZRANDMEMBER", "z", "-9223372036854775808"],
            &["ZRANDMEMBER", "z", "5", "withscores", "x"],
            &["ZRANDMEMBER", "z", "9223372036854775807", "withscores"],
            &["ZRANDMEMBER", "z", "x"],
            &["ZRANDMEMBER", "z", "1", "foo"],
            &["ZRANDMEMBER", "z", "-6", "WITHSCORES"],
            &["ZRANDMEMBER", "z", "2"],
            &["ZRANDMEMBER", "z"],
            &["ZRANDMEMBER", "z", "-100000000"],
        ]);
        assert_eq!(r[1], "$-1\r\n");
        assert_eq!(r[2], "*0\r\n");
        assert_eq!(r[3], "*0\r\n");
        assert_eq!(
            r[4],
            "-ERR value is out of range, value must between -9223372036854775807 and 9223372036854775807\r\n"
        );
        assert_eq!(r[5], "-ERR syntax error\r\n");
        assert_eq!(r[6], "-ERR value is out of range\r\n");
        assert_eq!(r[7], "-ERR value is not an integer or out of range\r\n");
        assert_eq!(r[8], "-ERR syntax error\r\n");
        assert!(r[9].starts_with("*12\r\n"), "{}", r[9]);
        let two = &r[10];
        assert!(two.starts_with("*2\r\n"));
        let picks: Vec<&str> = two.split("\r\n").skip(2).step_by(2).collect();
        assert_ne!(picks[0], picks[1], "positive count: distinct");
        assert!(["$1\r\na\r\n", "$1\r\nb\r\n", "$1\r\nc\r\n"].contains(&r[11].as_str()));
        assert_eq!(r[12], "-ERR value is out of range\r\n", "bounded reply");
    }

    #[test]
    fn zscan_listpack_formats_and_errors() {
        let r = run(&[
            &[
                "ZADD", "z", "1", "a", "0.1", "c", "-0", "d", "1e17", "e", "-inf", "g",
            ],
            &["ZSCAN", "z", "0"],
            &["ZSCAN", "z", "0", "MATCH", "[ab]", "COUNT", "100"],
            &["ZSCAN", "z", "0", "COUNT", "0"],
            &["ZSCAN", "z", "x"],
            &["ZSCAN", "z", "0", "TYPE", "string"],
            &["ZSCAN", "z", "0", "MATCH"],
            &["ZSCAN", "nokey", "0"],
        ]);
        assert_eq!(
            r[1],
            "*2\r\n$1\r\n0\r\n".to_string()
                + &arr(&[
                    "g",
                    "-inf",
                    "d",
                    "0",
                    "c",
                    "0.10000000000000001",
                    "a",
                    "1",
                    "e",
                    "100000000000000000"
                ])
        );
        assert_eq!(r[2], "*2\r\n$1\r\n0\r\n".to_string() + &arr(&["a", "1"]));
        assert_eq!(r[3], "-ERR syntax error\r\n");
        assert_eq!(r[4], "-ERR invalid cursor\r\n");
        assert_eq!(r[5], "-ERR syntax error\r\n");
        assert_eq!(r[6], "-ERR syntax error\r\n");
        assert_eq!(r[7], "*2\r\n$1\r\n0\r\n*0\r\n");
    }

    #[test]
    fn zscan_skiplist_visits_every_member() {
        let mut n = Node::new();
        n.run(&["CONFIG", "SET", "zset-max-listpack-entries", "0"]);
        let members: Vec<String> = (0..500).map(|i| format!("m{i}")).collect();
        for m in &members {
            n.run(&["ZADD", "z", "1e17", m]);
        }
        assert_eq!(n.run(&["OBJECT", "ENCODING", "z"]), bulk("skiplist"));
        let mut seen = std::collections::BTreeSet::new();
        let mut cursor = "0".to_string();
        for call in 0.. {
            assert!(call < 500, "scan terminates");
            let reply = n.run(&["ZSCAN", "z", &cursor, "COUNT", "20"]);
            let parts: Vec<&str> = reply.split("\r\n").collect();
            cursor = parts[2].to_string();
            let items: Vec<&str> = parts[4..].iter().skip(1).step_by(2).copied().collect();
            for pair in items.chunks(2).filter(|p| p.len() == 2) {
                assert_eq!(pair[1], "1e+17", "skiplist scores print as %.17g");
                seen.insert(pair[0].to_string());
            }
            if cursor == "0" {
                break;
            }
        }
        assert_eq!(seen.len(), 500);
    }

    #[test]
    fn set_operations() {
        let r = run(&[
            &["ZADD", "a", "1", "x", "2", "y", "3", "z"],
            &["ZADD", "b", "10", "y", "20", "z", "30", "w"],
            &["ZUNION", "2", "a", "b", "WITHSCORES"],
            &[
                "ZUNION",
                "2",
                "a",
                "b",
                "WEIGHTS",
                "2",
                "3",
                "AGGREGATE",
                "MAX",
            ],
            &["ZINTER", "2", "a", "b", "AGGREGATE", "MIN", "WITHSCORES"],
            &["ZDIFF", "2", "b", "a", "WITHSCORES"],
            &["ZINTERCARD", "2", "a", "b"],
            &["ZINTERCARD", "2", "a", "b", "LIMIT", "1"],
            &["ZUNIONSTORE", "d", "2", "a", "b"],
            &["ZRANGE", "d", "0", "-1", "WITHSCORES"],
            &["ZINTERSTORE", "d", "2", "a", "nokey"],
            &["EXISTS", "d"],
            &["ZUNIONSTORE", "a", "2", "a", "b", "WEIGHTS", "1", "0"],
            &["ZRANGE", "a", "0", "-1", "WITHSCORES"],
            &["ZADD", "i1", "inf", "x"],
            &["ZADD", "i2", "-inf", "x"],
            &["ZUNION", "2", "i1", "i2", "WITHSCORES"],
            &["ZUNION", "1", "i1", "WEIGHTS", "0", "WITHSCORES"],
        ]);
        assert_eq!(r[2], arr(&["x", "1", "y", "12", "z", "23", "w", "30"]));
        assert_eq!(r[3], arr(&["x", "y", "z", "w"]));
        assert_eq!(r[4], arr(&["y", "2", "z", "3"]));
        assert_eq!(r[5], arr(&["w", "30"]));
        assert_eq!(r[6], ":2\r\n");
        assert_eq!(r[7], ":1\r\n");
        assert_eq!(r[8], ":4\r\n");
        assert_eq!(r[9], arr(&["x", "1", "y", "12", "z", "23", "w", "30"]));
        assert_eq!(r[10], ":0\r\n");
        assert_eq!(r[11], ":0\r\n");
        assert_eq!(r[12], ":4\r\n", "a source may be the destination");
        assert_eq!(r[13], arr(&["w", "0", "x", "1", "y", "2", "z", "3"]));
        assert_eq!(r[16], arr(&["x", "0"]), "inf + -inf sums to 0");
        assert_eq!(r[17], arr(&["x", "0"]), "0 × inf weighs 0");
    }

    #[test]
    fn set_operation_errors() {
        let r = run(&[
            &["ZADD", "a", "1", "x"],
            &["SET", "s", "v"],
            &["ZUNIONSTORE", "d", "0", "a"],
            &["ZINTERCARD", "0", "a"],
            &["ZUNION", "x", "a"],
            &["ZUNION", "3", "a"],
            &["ZUNION", "1", "a", "WEIGHTS", "x"],
            &["ZUNION", "1", "a", "WEIGHTS", "1", "2"],
            &["ZUNION", "1", "a", "AGGREGATE", "foo"],
            &["ZUNIONSTORE", "d", "1", "a", "WITHSCORES"],
            &["ZDIFF", "1", "a", "WEIGHTS", "1"],
            &["ZINTERCARD", "1", "a", "LIMIT", "-1"],
            &["ZINTERCARD", "1", "a", "WITHSCORES"],
            &["ZUNION", "2", "a", "s"],
            &["ZUNION", "2", "s", "a", "WEIGHTS", "x"],
            &[
                "ZUNION",
                "1",
                "a",
                "WEIGHTS",
                "1",
                "WEIGHTS",
                "2",
                "WITHSCORES",
            ],
        ]);
        assert_eq!(
            r[2],
            "-ERR at least 1 input key is needed for 'zunionstore' command\r\n"
        );
        assert_eq!(
            r[3],
            "-ERR at least 1 input key is needed for 'zintercard' command\r\n"
        );
        assert_eq!(r[4], "-ERR value is not an integer or out of range\r\n");
        assert_eq!(r[5], "-ERR syntax error\r\n");
        assert_eq!(r[6], "-ERR weight value is not a float\r\n");
        for i in [7, 8, 9, 10, 12] {
            assert_eq!(r[i], "-ERR syntax error\r\n", "{i}");
        }
        assert_eq!(r[11], "-ERR LIMIT can't be negative\r\n");
        assert_eq!(r[13], WRONGTYPE);
        assert_eq!(r[14], WRONGTYPE, "types are checked before options");
        assert_eq!(r[15], arr(&["x", "2"]));
    }

    #[test]
    fn sets_count_as_members_with_score_one() {
        let mut n = Node::new();
        n.put_set("s", &["x", "y", "q"]);
        n.put_set("nums", &["1", "2"]);
        n.run(&["ZADD", "z", "5", "x", "7", "y", "9", "w"]);
        assert_eq!(
            n.run(&["ZUNION", "2", "z", "s", "WITHSCORES"]),
            arr(&["q", "1", "x", "6", "y", "8", "w", "9"])
        );
        assert_eq!(
            n.run(&["ZINTER", "2", "s", "z", "WEIGHTS", "10", "1", "WITHSCORES"]),
            arr(&["x", "15", "y", "17"])
        );
        assert_eq!(n.run(&["ZDIFF", "2", "s", "z"]), arr(&["q"]));
        assert_eq!(n.run(&["ZINTERCARD", "2", "s", "z"]), ":2\r\n");
        assert_eq!(
            n.run(&["ZUNION", "1", "nums", "WITHSCORES"]),
            arr(&["1", "1", "2", "1"])
        );
        assert_eq!(n.run(&["ZDIFFSTORE", "d", "2", "z", "s"]), ":1\r\n");
        assert_eq!(n.run(&["ZRANGE", "d", "0", "-1"]), arr(&["w"]));
        // A set is not a sorted set elsewhere.
        assert_eq!(n.run(&["ZRANGE", "s", "0", "-1"]), WRONGTYPE);
    }

    #[test]
    fn writes_stamp_versions_and_conversion_follows_config() {
        let mut n = Node::new();
        n.run(&["CONFIG", "SET", "zset-max-listpack-entries", "4"]);
        n.run(&["CONFIG", "SET", "zset-max-listpack-value", "8"]);
        n.run(&["ZADD", "z", "1", "a", "2", "b", "3", "c", "4", "d"]);
        assert_eq!(n.run(&["OBJECT", "ENCODING", "z"]), bulk("listpack"));
        n.run(&["ZADD", "z", "5", "e"]);
        assert_eq!(n.run(&["OBJECT", "ENCODING", "z"]), bulk("skiplist"));
        n.run(&["ZADD", "long", "1", "123456789"]);
        assert_eq!(n.run(&["OBJECT", "ENCODING", "long"]), bulk("skiplist"));
        // STORE results take the encoding their size calls for.
        n.run(&["ZRANGESTORE", "small", "z", "0", "1"]);
        assert_eq!(n.run(&["OBJECT", "ENCODING", "small"]), bulk("listpack"));
        // Each write moves the key's version; a no-op write does not.
        let version = |n: &mut Node| {
            let slot = key_slot(b"z");
            let sh = n.srv.ks.lock(n.srv.ks.shard_of(slot));
            sh.peek(0, slot, b"z", 1_000_000).map(|e| e.version())
        };
        let v1 = version(&mut n);
        n.run(&["ZADD", "z", "NX", "9", "a"]);
        assert_eq!(
            version(&mut n),
            v1,
            "NX on an existing member writes nothing"
        );
        n.run(&["ZINCRBY", "z", "1", "a"]);
        let v2 = version(&mut n);
        assert!(v2 > v1);
        n.run(&["ZREM", "z", "a"]);
        assert!(version(&mut n) > v2);
        let sh = n.srv.ks.lock(n.srv.ks.shard_of(key_slot(b"z")));
        sh.check_invariants();
    }
}
