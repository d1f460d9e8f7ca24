//! shoal's versioned commands (DESIGN.md §2, §3). Every key carries a version: a 64-bit hybrid
//! logical clock value assigned by the node that wrote it, which only grows. These commands expose it
//! to clients, with reply shapes any Redis client can read (arrays, integers, nil):
//!
//! - `GETVER key` → `[value, version]`, or nil if the key does not exist.
//! - `SETIFVER key version value [EX s|PX ms|EXAT s|PXAT ms|KEEPTTL]` → compare-and-set: writes only
//!   if the key's current version equals `version` (`0` means "the key must not exist"). Replies the
//!   new version, or nil when the version did not match.
//! - `DELIFVER key version` → deletes only if the version matches: `1` deleted, `0` not.
//! - `SETIFNEWER key external-version value [EX ...]` → for caches filled from a database: writes only
//!   if `external-version` is greater than the external version stored with the key (a key without
//!   one accepts any). Replies `1` when written, `0` when the stored one is newer or equal, so a slow
//!   filler can never put an older row over a newer one.

use crate::error::ReplyError;
use shoal_keyspace::Entry;

use crate::args::ERR_SYNTAX;
use crate::strings::{ExpireOpt, parse_expire};
use crate::table::{Group, KeySpec, Spec, flag::*, key::*};
use crate::{Args, CmdResult, Ctx};

const SH: Group = Group::Shoal;

pub static COMMANDS: &[Spec] = &[
    Spec {
        name: "delifver",
        arity: 3,
        flags: WRITE | FAST,
        keys: &[KeySpec::at(1, RW | DELETE)],
        group: SH,
        since: "0.1.0",
        summary: "Deletes a key only if its version equals the given one.",
        handler: Some(delifver),
        ..Spec::DEFAULT
    },
    Spec {
        name: "getver",
        arity: 2,
        flags: READONLY | FAST,
        keys: &[KeySpec::at(1, RO | ACCESS)],
        group: SH,
        since: "0.1.0",
        summary: "Returns a string value together with its version.",
        handler: Some(getver),
        ..Spec::DEFAULT
    },
    Spec {
        name: "setifnewer",
        arity: -4,
        flags: WRITE | DENYOOM,
        keys: &[KeySpec::at(1, RW | UPDATE)],
        group: SH,
        since: "0.1.0",
        summary: "Sets a string only if the caller's external version is newer than the stored one.",
        handler: Some(setifnewer),
        ..Spec::DEFAULT
    },
    Spec {
        name: "setifver",
        arity: -4,
        flags: WRITE | DENYOOM,
        keys: &[KeySpec::at(1, RW | UPDATE)],
        group: SH,
        since: "0.1.0",
        summary: "Sets a string only if the key's version equals the given one (compare-and-set).",
        handler: Some(setifver),
        ..Spec::DEFAULT
    },
];

/// Parses a version argument: a non-negative integer.
fn parse_version(args: &Args<'_>, i: usize) -> Result<u64, ReplyError> {
    match args.i64(i) {
        Ok(v) if v >= 0 => Ok(v as u64),
        _ => Err(ReplyError::err_static(
            "version must be a non-negative integer",
        )),
    }
}

/// Expiry options after the value (`EX|PX|EXAT|PXAT n`, `KEEPTTL`).
fn parse_expire_opts(
    ctx: &Ctx<'_>,
    args: &Args<'_>,
    from: usize,
    name: &str,
) -> Result<ExpireOpt, ReplyError> {
    let mut opt = ExpireOpt::None;
    let mut i = from;
    while i < args.len() {
        let a = args.get(i);
        let timed = [&b"EX"[..], b"PX", b"EXAT", b"PXAT"]
            .iter()
            .any(|w| a.eq_ignore_ascii_case(w));
        if timed && opt == ExpireOpt::None && i + 1 < args.len() {
            opt = ExpireOpt::At(parse_expire(ctx, a, args.get(i + 1), name)?);
            i += 2;
        } else if a.eq_ignore_ascii_case(b"KEEPTTL") && opt == ExpireOpt::None {
            opt = ExpireOpt::KeepTtl;
            i += 1;
        } else {
            return Err(ERR_SYNTAX);
        }
    }
    Ok(opt)
}

fn getver(ctx: &mut Ctx<'_>, args: &Args<'_>) -> CmdResult {
    let (mut shard, slot) = ctx.shard(args.get(1));
    match shard.lookup_read(ctx.client.db, slot, args.get(1), ctx.now_ms) {
        Some(e) => {
            let v = e.string().ok_or(ReplyError::WrongType)?;
            ctx.out.array(2);
            ctx.out.bulk(v);
            ctx.out.int(e.version() as i64);
        }
        None => ctx.out.null_array(),
    }
    Ok(())
}

fn setifver(ctx: &mut Ctx<'_>, args: &Args<'_>) -> CmdResult {
    let expected = parse_version(args, 2)?;
    let expire = parse_expire_opts(ctx, args, 4, "setifver")?;
    let (db, now) = (ctx.client.db, ctx.now_ms);
    let key = args.get(1);
    let (mut shard, slot) = ctx.shard(key);
    // Taken under the lock: later writes to a key get larger versions.
    let version = ctx.version();
    let current = shard
        .peek(db, slot, key, now)
        .map(|e| (e.version(), e.expire_ms(), e.ext_version()));
    let matches = match current {
        None => expected == 0,
        Some((v, _, _)) => v == expected,
    };
    if !matches {
        drop(shard);
        ctx.out.null();
        return Ok(());
    }
    let expire_ms = match expire {
        ExpireOpt::At(t) => Some(t),
        ExpireOpt::KeepTtl => current.and_then(|c| c.1),
        _ => None,
    };
    let ext = current.and_then(|c| c.2);
    let entry = Entry::new(
        key,
        shoal_keyspace::Payload::Inline(args.get(3)),
        expire_ms,
        ext,
        version,
        0,
    );
    shard.insert(db, slot, entry, now);
    drop(shard);
    ctx.out.int(version as i64);
    Ok(())
}

fn delifver(ctx: &mut Ctx<'_>, args: &Args<'_>) -> CmdResult {
    let expected = parse_version(args, 2)?;
    let (db, now) = (ctx.client.db, ctx.now_ms);
    let key = args.get(1);
    let (mut shard, slot) = ctx.shard(key);
    let matches = shard
        .peek(db, slot, key, now)
        .is_some_and(|e| e.version() == expected);
    if matches {
        shard.remove(db, slot, key);
    }
    drop(shard);
    ctx.out.int(matches as i64);
    Ok(())
}

fn setifnewer(ctx: &mut Ctx<'_>, args: &Args<'_>) -> CmdResult {
    let ext = parse_version(args, 2)?;
    let expire = parse_expire_opts(ctx, args, 4, "setifnewer")?;
    let (db, now) = (ctx.client.db, ctx.now_ms);
    let key = args.get(1);
    let (mut shard, slot) = ctx.shard(key);
    // Taken under the lock: later writes to a key get larger versions.
    let version = ctx.version();
    let current = shard
        .peek(db, slot, key, now)
        .map(|e| (e.ext_version(), e.expire_ms()));
    if let Some((Some(stored), _)) = current
        && stored >= ext
    {
        drop(shard);
        ctx.out.int(0);
        return Ok(());
    }
    let expire_ms = match expire {
        ExpireOpt::At(t) => Some(t),
        ExpireOpt::KeepTtl => current.and_then(|c| c.1),
        _ => None,
    };
    let entry = Entry::new(
        key,
        shoal_keyspace::Payload::Inline(args.get(3)),
        expire_ms,
        Some(ext),
        version,
        0,
    );
    shard.insert(db, slot, entry, now);
    drop(shard);
    ctx.out.int(1);
    Ok(())
}

#[cfg(test)]
mod tests {
    use crate::tests::run;

    fn version_of(reply: &str) -> String {
        // "*2\r\n$1\r\nv\r\n:<version>\r\n"
        reply.rsplit(':').next().unwrap().trim_end().to_string()
    }

    #[test]
    fn compare_and_set() {
        let r = run(&[
            &["SETIFVER", "k", "0", "a"],
            &["SETIFVER", "k", "0", "b"],
            &["GETVER", "k"],
            &["GETVER", "missing"],
        ]);
        assert!(r[0].starts_with(':'));
        assert_eq!(r[1], "$-1\r\n");
        let v = version_of(&r[2]);
        assert_eq!(format!(":{v}\r\n"), r[0]);
        let r2 = run(&[
            &["SET", "k", "x"],
            &["SETIFVER", "k", "1", "y"],
            &["DELIFVER", "k", "1"],
            &["SETIFVER", "k", "-1", "y"],
        ]);
        assert_eq!(r2[1], "$-1\r\n");
        assert_eq!(r2[2], ":0\r\n");
        assert_eq!(r2[3], "-ERR version must be a non-negative integer\r\n");
        assert_eq!(r[3], "*-1\r\n");
    }

    #[test]
    fn set_if_newer_never_goes_back() {
        let r = run(&[
            &["SETIFNEWER", "row", "5", "v5"],
            &["SETIFNEWER", "row", "4", "v4"],
            &["SETIFNEWER", "row", "5", "v5b"],
            &["GET", "row"],
            &["SETIFNEWER", "row", "6", "v6", "PX", "100000"],
            &["GET", "row"],
            &["SETIFNEWER", "row", "7", "v7", "BOGUS"],
        ]);
        assert_eq!(&r[..4], &[":1\r\n", ":0\r\n", ":0\r\n", "$2\r\nv5\r\n"]);
        assert_eq!(r[4], ":1\r\n");
        assert_eq!(r[5], "$2\r\nv6\r\n");
        assert_eq!(r[6], "-ERR syntax error\r\n");
    }
}
