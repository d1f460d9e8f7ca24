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
use shoal_keyspace::{EncodingLimits, Entry, Kind, Object, Payload, Rng, ValueRef};
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

/// Runs `f` on the hash at `key` (`None` if absent) for a read command: counts a hit or a miss and
/// records the access. WRONGTYPE for another type.
fn read_hash<R>(
    ctx: &mut Ctx<'_>,
    key: &[u8],
    f: impl FnOnce(Option<&Hash>, &mut ReplyWriter<'_>) -> R,
) -> Result<R, ReplyError> {
    let (db, now) = (ctx.db(), ctx.now_ms);
    let (mut shard, slot) = ctx.shard(key);
    let e = shard.lookup_read(db, slot, key, now);
    let h = match e.as_deref().map(|e| e.value()) {
        None => None,
        Some(ValueRef::Obj(Object::Hash(h))) => Some(h),
        Some(_) => return Err(ReplyError::WrongType),
    };
    Ok(f(h, &mut ctx.out))
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
    let (db, now) = (ctx.db(), ctx.now_ms);
    let limits = ctx.srv.encoding_limits();
    let (mut shard, slot) = ctx.shard(key);
    let existing = match shard.lookup(db, slot, key, now, true) {
        Some(mut e) => {
            let mut ops = e.ops();
            let Object::Hash(h) = object_mut(&mut e, Kind::Hash)? else {
                unreachable!("object_mut checked the kind")
            };
            let (r, changed) = f(h, &mut ops, &limits)?;
            let empty = h.is_empty();
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
                shard.note(notify::HASH, event, db, key);
            }
            if empty {
                shard.remove(db, slot, key);
                shard.note(notify::GENERIC, "del", db, key);
            }
            Ok(Some(r))
        }
        Err(f) if create => {
            // A new key is sent whole: no ops to note.
            let mut h = Hash::new(&limits);
            let (r, _) = f(&mut h, &mut Ops::new(false), &limits)?;
            if !h.is_empty() {
                let version = ctx.version();
                shard.insert(db, slot, object_entry(key, Object::Hash(h), version), now);
                shard.note(notify::HASH, event, db, key);
            }
            Ok(Some(r))
        }
        Err(_) => Ok(None),
    }
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

fn hincrby(ctx: &mut Ctx<'_>, args: &Args<'_>) -> CmdResult {
    let by = args.i64(3)?;
    let field = args.get(2);
    let new = write_hash(ctx, args.get(1), true, "hincrby", |h, ops, limits| {
        let cur = match h.get(field) {
            Some(v) => shoal_keyspace::parse_canonical_i64(v)
                .ok_or_else(|| ReplyError::err_static("hash value is not an integer"))?,
            None => 0,
        };
        let new = cur.checked_add(by).ok_or(ERR_OVERFLOW)?;
        let mut tmp = [0u8; 20];
        let text = shoal_resp::fmt_i64(new, &mut tmp);
        h.insert(field, text, limits);
        ops.hset(field, text);
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
    let new = write_hash(ctx, args.get(1), true, "hincrbyfloat", |h, ops, limits| {
        let cur = match h.get(field) {
            Some(v) => parse_long_double(v)
                .ok_or_else(|| ReplyError::err_static("hash value is not a float"))?,
            None => Some(LongDouble::ZERO),
        };
        let s = cur
            .and_then(|cur| add_float(cur, by))
            .ok_or_else(|| ReplyError::err_static("increment would produce NaN or Infinity"))?;
        h.insert(field, s.as_bytes(), limits);
        ops.hset(field, s.as_bytes());
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
    let (db, now) = (ctx.db(), ctx.now_ms);
    let (mut shard, slot) = ctx.shard(args.get(1));
    let e = shard.lookup_read(db, slot, args.get(1), now);
    let h = match e.as_deref().map(|e| e.value()) {
        None => {
            ctx.out.array(2);
            ctx.out.bulk(b"0");
            ctx.out.array(0);
            return Ok(());
        }
        Some(ValueRef::Obj(Object::Hash(h))) => h,
        Some(_) => return Err(ReplyError::WrongType),
    };
    let opts = parse_scan_opts(args, 3)?;
    let mut found: Vec<(&[u8], &[u8])> = Vec::new();
    let next = h.scan(cursor, opts.count, |f, v| {
        if opts.matches(f) {
            found.push((f, v));
        }
    });
    let out = &mut ctx.out;
    out.array(2);
    out.bulk(next.to_string().as_bytes());
    out.array(2 * found.len());
    for (f, v) in found {
        out.bulk(f);
        out.bulk(v);
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
}
