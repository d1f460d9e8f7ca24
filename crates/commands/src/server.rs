//! Server commands: INFO, CONFIG, COMMAND, DBSIZE, FLUSHDB/FLUSHALL, TIME, SLOWLOG, LATENCY, MEMORY,
//! SHUTDOWN.

mod latency;

use crate::err;
use crate::error::ReplyError;
use std::fmt::Write as _;
use std::sync::atomic::Ordering::Relaxed;

use crate::args::{ERR_SYNTAX, parse_i64};
use crate::config;
use crate::glob::glob_match;
use crate::keyspec::{self, KeyRefs};
use crate::state::{
    Client, LatencyEvent, SLOWLOG_ARG_BYTES_MAX, SLOWLOG_ARGS_MAX, ServerState, SlowEntry,
};
use crate::table::{self, BeginSearch, FindKeys, Group, KeySpec, Spec, flag, flag::*, key, key::*};
use crate::{Args, CmdResult, Ctx};
use shoal_resp::ReplyWriter;

const SRV: Group = Group::Server;

pub static COMMANDS: &[Spec] = &[
    Spec {
        handler: Some(command_all),
        ..Spec {
            name: "command",
            arity: -1,
            flags: LOADING | STALE,
            group: SRV,
            since: "2.8.13",
            summary: "Returns detailed information about all commands.",
            subcommands: COMMAND,
            tips: &["nondeterministic_output_order"],
            type_categories: Some(&["@connection"]),
            ..Spec::DEFAULT
        }
    },
    Spec {
        name: "config",
        arity: -2,
        flags: 0,
        group: SRV,
        since: "2.0.0",
        summary: "A container for server configuration commands.",
        subcommands: CONFIG,
        ..Spec::DEFAULT
    },
    Spec {
        name: "dbsize",
        arity: 1,
        flags: READONLY | FAST,
        group: SRV,
        since: "1.0.0",
        summary: "Returns the number of keys in the database.",
        tips: &["request_policy:all_shards", "response_policy:agg_sum"],
        handler: Some(dbsize),
        type_categories: Some(&["@keyspace"]),
        ..Spec::DEFAULT
    },
    Spec {
        name: "flushall",
        arity: -1,
        flags: WRITE,
        group: SRV,
        since: "1.0.0",
        summary: "Removes all keys from all databases.",
        tips: &["request_policy:all_shards", "response_policy:all_succeeded"],
        handler: Some(flushall),
        type_categories: Some(&["@keyspace", "@dangerous"]),
        ..Spec::DEFAULT
    },
    Spec {
        name: "flushdb",
        arity: -1,
        flags: WRITE,
        group: SRV,
        since: "1.0.0",
        summary: "Remove all keys from the current database.",
        tips: &["request_policy:all_shards", "response_policy:all_succeeded"],
        handler: Some(flushdb),
        type_categories: Some(&["@keyspace", "@dangerous"]),
        ..Spec::DEFAULT
    },
    Spec {
        name: "info",
        arity: -1,
        flags: LOADING | STALE,
        group: SRV,
        since: "1.0.0",
        summary: "Returns information and statistics about the server.",
        tips: &[
            "nondeterministic_output",
            "request_policy:all_shards",
            "response_policy:special",
        ],
        handler: Some(info),
        type_categories: Some(&["@dangerous"]),
        ..Spec::DEFAULT
    },
    Spec {
        name: "latency",
        arity: -2,
        flags: 0,
        group: SRV,
        since: "2.8.13",
        summary: "A container for latency diagnostics commands.",
        subcommands: LATENCY,
        ..Spec::DEFAULT
    },
    Spec {
        name: "memory",
        arity: -2,
        flags: 0,
        group: SRV,
        since: "4.0.0",
        summary: "A container for memory diagnostics commands.",
        subcommands: MEMORY,
        ..Spec::DEFAULT
    },
    Spec {
        name: "monitor",
        arity: 1,
        flags: ADMIN | NOSCRIPT | LOADING | STALE,
        group: SRV,
        since: "1.0.0",
        summary: "Listens for all requests received by the server in real-time.",
        handler: Some(monitor),
        ..Spec::DEFAULT
    },
    Spec {
        name: "shutdown",
        arity: -1,
        flags: ADMIN | NOSCRIPT | LOADING | STALE | NO_MULTI | ALLOW_BUSY,
        group: SRV,
        since: "1.0.0",
        summary: "Synchronously saves the database(s) to disk and shuts down the Redis server.",
        handler: Some(shutdown),
        ..Spec::DEFAULT
    },
    Spec {
        name: "slowlog",
        arity: -2,
        flags: 0,
        group: SRV,
        since: "2.2.12",
        summary: "A container for slow log commands.",
        subcommands: SLOWLOG,
        ..Spec::DEFAULT
    },
    Spec {
        name: "time",
        arity: 1,
        flags: LOADING | STALE | FAST,
        group: SRV,
        since: "2.6.0",
        summary: "Returns the server time.",
        tips: &["nondeterministic_output"],
        handler: Some(time),
        ..Spec::DEFAULT
    },
];

static COMMAND: &[Spec] = &[
    Spec {
        name: "command|count",
        arity: 2,
        flags: LOADING | STALE,
        group: SRV,
        since: "2.8.13",
        summary: "Returns a count of commands.",
        handler: Some(command_count),
        type_categories: Some(&["@connection"]),
        ..Spec::DEFAULT
    },
    Spec {
        name: "command|docs",
        arity: -2,
        flags: LOADING | STALE,
        group: SRV,
        since: "7.0.0",
        summary: "Returns documentary information about one, multiple or all commands.",
        tips: &["nondeterministic_output_order"],
        handler: Some(command_docs),
        type_categories: Some(&["@connection"]),
        ..Spec::DEFAULT
    },
    Spec {
        name: "command|getkeys",
        arity: -4,
        flags: LOADING | STALE,
        group: SRV,
        since: "2.8.13",
        summary: "Extracts the key names from an arbitrary command.",
        handler: Some(command_getkeys),
        type_categories: Some(&["@connection"]),
        ..Spec::DEFAULT
    },
    Spec {
        name: "command|getkeysandflags",
        arity: -4,
        flags: LOADING | STALE,
        group: SRV,
        since: "7.0.0",
        summary: "Extracts the key names and access flags from an arbitrary command.",
        handler: Some(command_getkeysandflags),
        type_categories: Some(&["@connection"]),
        ..Spec::DEFAULT
    },
    Spec {
        name: "command|help",
        arity: 2,
        flags: LOADING | STALE,
        group: SRV,
        since: "5.0.0",
        summary: "Returns helpful text about the different subcommands.",
        handler: Some(command_help),
        type_categories: Some(&["@connection"]),
        ..Spec::DEFAULT
    },
    Spec {
        name: "command|info",
        arity: -2,
        flags: LOADING | STALE,
        group: SRV,
        since: "2.8.13",
        summary: "Returns information about one, multiple or all commands.",
        tips: &["nondeterministic_output_order"],
        handler: Some(command_info),
        type_categories: Some(&["@connection"]),
        ..Spec::DEFAULT
    },
    Spec {
        name: "command|list",
        arity: -2,
        flags: LOADING | STALE,
        group: SRV,
        since: "7.0.0",
        summary: "Returns a list of command names.",
        tips: &["nondeterministic_output_order"],
        handler: Some(command_list),
        type_categories: Some(&["@connection"]),
        ..Spec::DEFAULT
    },
];

static CONFIG: &[Spec] = &[
    Spec {
        name: "config|get",
        arity: -3,
        flags: ADMIN | NOSCRIPT | LOADING | STALE,
        group: SRV,
        since: "2.0.0",
        summary: "Returns the effective values of configuration parameters.",
        handler: Some(config_get),
        ..Spec::DEFAULT
    },
    Spec {
        name: "config|help",
        arity: 2,
        flags: LOADING | STALE,
        group: SRV,
        since: "5.0.0",
        summary: "Returns helpful text about the different subcommands.",
        handler: Some(config_help),
        ..Spec::DEFAULT
    },
    Spec {
        name: "config|rewrite",
        arity: 2,
        flags: ADMIN | NOSCRIPT | LOADING | STALE,
        group: SRV,
        since: "2.8.0",
        summary: "Persists the effective configuration to file.",
        handler: Some(config_rewrite),
        ..Spec::DEFAULT
    },
    Spec {
        name: "config|resetstat",
        arity: 2,
        flags: ADMIN | NOSCRIPT | LOADING | STALE,
        group: SRV,
        since: "2.0.0",
        summary: "Resets the server's statistics.",
        handler: Some(config_resetstat),
        ..Spec::DEFAULT
    },
    Spec {
        name: "config|set",
        arity: -4,
        flags: ADMIN | NOSCRIPT | LOADING | STALE,
        group: SRV,
        since: "2.0.0",
        summary: "Sets configuration parameters in-flight.",
        tips: &["request_policy:all_nodes", "response_policy:all_succeeded"],
        handler: Some(config_set),
        ..Spec::DEFAULT
    },
];

static SLOWLOG: &[Spec] = &[
    Spec {
        name: "slowlog|get",
        arity: -2,
        flags: ADMIN | LOADING | STALE,
        group: SRV,
        since: "2.2.12",
        summary: "Returns the slow log's entries.",
        tips: &["request_policy:all_nodes", "nondeterministic_output"],
        handler: Some(slowlog_get),
        ..Spec::DEFAULT
    },
    Spec {
        name: "slowlog|help",
        arity: 2,
        flags: LOADING | STALE,
        group: SRV,
        since: "6.2.0",
        summary: "Show helpful text about the different subcommands",
        handler: Some(slowlog_help),
        ..Spec::DEFAULT
    },
    Spec {
        name: "slowlog|len",
        arity: 2,
        flags: ADMIN | LOADING | STALE,
        group: SRV,
        since: "2.2.12",
        summary: "Returns the number of entries in the slow log.",
        tips: &[
            "request_policy:all_nodes",
            "response_policy:agg_sum",
            "nondeterministic_output",
        ],
        handler: Some(slowlog_len),
        ..Spec::DEFAULT
    },
    Spec {
        name: "slowlog|reset",
        arity: 2,
        flags: ADMIN | LOADING | STALE,
        group: SRV,
        since: "2.2.12",
        summary: "Clears all entries from the slow log.",
        tips: &["request_policy:all_nodes", "response_policy:all_succeeded"],
        handler: Some(slowlog_reset),
        ..Spec::DEFAULT
    },
];

static LATENCY: &[Spec] = &[
    Spec {
        name: "latency|doctor",
        arity: 2,
        flags: ADMIN | NOSCRIPT | LOADING | STALE,
        group: SRV,
        since: "2.8.13",
        summary: "Return a human readable latency analysis report.",
        tips: &[
            "nondeterministic_output",
            "request_policy:all_nodes",
            "response_policy:special",
        ],
        handler: Some(latency_doctor),
        ..Spec::DEFAULT
    },
    Spec {
        name: "latency|graph",
        arity: 3,
        flags: ADMIN | NOSCRIPT | LOADING | STALE,
        group: SRV,
        since: "2.8.13",
        summary: "Return a latency graph for the event.",
        tips: &[
            "nondeterministic_output",
            "request_policy:all_nodes",
            "response_policy:special",
        ],
        handler: Some(latency_graph),
        ..Spec::DEFAULT
    },
    Spec {
        name: "latency|help",
        arity: 2,
        flags: LOADING | STALE,
        group: SRV,
        since: "2.8.13",
        summary: "Returns helpful text about the different subcommands.",
        handler: Some(latency_help),
        ..Spec::DEFAULT
    },
    Spec {
        name: "latency|histogram",
        arity: -2,
        flags: ADMIN | NOSCRIPT | LOADING | STALE,
        group: SRV,
        since: "7.0.0",
        summary: "Returns the cumulative distribution of latencies of a subset or all commands.",
        tips: &[
            "nondeterministic_output",
            "request_policy:all_nodes",
            "response_policy:special",
        ],
        handler: Some(latency_histogram),
        ..Spec::DEFAULT
    },
    Spec {
        name: "latency|history",
        arity: 3,
        flags: ADMIN | NOSCRIPT | LOADING | STALE,
        group: SRV,
        since: "2.8.13",
        summary: "Returns timestamp-latency samples for an event.",
        tips: &[
            "nondeterministic_output",
            "request_policy:all_nodes",
            "response_policy:special",
        ],
        handler: Some(latency_history),
        ..Spec::DEFAULT
    },
    Spec {
        name: "latency|latest",
        arity: 2,
        flags: ADMIN | NOSCRIPT | LOADING | STALE,
        group: SRV,
        since: "2.8.13",
        summary: "Returns the latest latency samples for all events.",
        tips: &[
            "nondeterministic_output",
            "request_policy:all_nodes",
            "response_policy:special",
        ],
        handler: Some(latency_latest),
        ..Spec::DEFAULT
    },
    Spec {
        name: "latency|reset",
        arity: -2,
        flags: ADMIN | NOSCRIPT | LOADING | STALE,
        group: SRV,
        since: "2.8.13",
        summary: "Resets the latency data for one or more events.",
        tips: &["request_policy:all_nodes", "response_policy:all_succeeded"],
        handler: Some(latency_reset),
        ..Spec::DEFAULT
    },
];

static MEMORY: &[Spec] = &[
    Spec {
        name: "memory|doctor",
        arity: 2,
        flags: 0,
        group: SRV,
        since: "4.0.0",
        summary: "Outputs a memory problems report.",
        tips: &[
            "nondeterministic_output",
            "request_policy:all_shards",
            "response_policy:special",
        ],
        handler: Some(memory_doctor),
        ..Spec::DEFAULT
    },
    Spec {
        name: "memory|help",
        arity: 2,
        flags: LOADING | STALE,
        group: SRV,
        since: "4.0.0",
        summary: "Returns helpful text about the different subcommands.",
        handler: Some(memory_help),
        ..Spec::DEFAULT
    },
    Spec {
        name: "memory|malloc-stats",
        arity: 2,
        flags: 0,
        group: SRV,
        since: "4.0.0",
        summary: "Returns the allocator statistics.",
        tips: &[
            "nondeterministic_output",
            "request_policy:all_shards",
            "response_policy:special",
        ],
        handler: Some(memory_malloc_stats),
        ..Spec::DEFAULT
    },
    Spec {
        name: "memory|purge",
        arity: 2,
        flags: 0,
        group: SRV,
        since: "4.0.0",
        summary: "Asks the allocator to release memory.",
        tips: &["request_policy:all_shards", "response_policy:all_succeeded"],
        handler: Some(memory_purge),
        ..Spec::DEFAULT
    },
    Spec {
        name: "memory|stats",
        arity: 2,
        flags: 0,
        group: SRV,
        since: "4.0.0",
        summary: "Returns details about memory usage.",
        tips: &[
            "nondeterministic_output",
            "request_policy:all_shards",
            "response_policy:special",
        ],
        handler: Some(memory_stats),
        ..Spec::DEFAULT
    },
    Spec {
        name: "memory|usage",
        arity: -3,
        flags: READONLY,
        keys: &[KeySpec::at(2, RO)],
        group: SRV,
        since: "4.0.0",
        summary: "Estimates the memory usage of a key.",
        handler: Some(memory_usage),
        ..Spec::DEFAULT
    },
];

fn help(ctx: &mut Ctx<'_>, lines: &[&str]) -> CmdResult {
    ctx.out.array(lines.len());
    for l in lines {
        ctx.out.simple(l);
    }
    Ok(())
}

// ---- COMMAND ----

fn write_command_info(ctx: &mut Ctx<'_>, s: &Spec) {
    let o = &mut ctx.out;
    o.array(10);
    o.bulk(s.name.as_bytes());
    o.int(s.arity as i64);
    write_flag_set(o, s.flags, flag::NAMES);
    let (first, last, step) = s.legacy_range();
    o.int(first as i64);
    o.int(last as i64);
    o.int(step as i64);
    let cats = s.acl_categories();
    o.set(cats.len());
    for c in cats {
        o.simple(c);
    }
    o.set(s.tips.len());
    for t in s.tips {
        o.bulk(t.as_bytes());
    }
    write_key_specs(o, s.keys);
    // Redis replies "no subcommands" as an empty set, subcommands as an array (RESP3 tells).
    if s.subcommands.is_empty() {
        o.set(0);
    } else {
        o.array(s.subcommands.len());
    }
    for sub in s.subcommands {
        write_command_info(ctx, sub);
    }
}

/// A set of flag names, as Redis replies them (status strings, in the table's order).
fn write_flag_set(o: &mut ReplyWriter<'_>, flags: u32, names: &[(u32, &str)]) {
    let n = names.iter().filter(|(f, _)| flags & f != 0).count();
    o.set(n);
    for (_, name) in names.iter().filter(|(f, _)| flags & f != 0) {
        o.simple(name);
    }
}

/// The key-specs section of COMMAND INFO, shaped as Redis 7.0's `addReplyCommandKeySpecs`.
fn write_key_specs(o: &mut ReplyWriter<'_>, specs: &[KeySpec]) {
    o.set(specs.len());
    for ks in specs {
        o.map(3 + !ks.notes.is_empty() as usize);
        if !ks.notes.is_empty() {
            o.bulk(b"notes");
            o.bulk(ks.notes.as_bytes());
        }
        o.bulk(b"flags");
        write_flag_set(o, ks.flags, key::NAMES);
        o.bulk(b"begin_search");
        o.map(2);
        o.bulk(b"type");
        match ks.begin_search {
            BeginSearch::Index(i) => {
                o.bulk(b"index");
                o.bulk(b"spec");
                o.map(1);
                o.bulk(b"index");
                o.int(i as i64);
            }
            BeginSearch::Keyword {
                keyword,
                start_from,
            } => {
                o.bulk(b"keyword");
                o.bulk(b"spec");
                o.map(2);
                o.bulk(b"keyword");
                o.bulk(keyword.as_bytes());
                o.bulk(b"startfrom");
                o.int(start_from as i64);
            }
            BeginSearch::Unknown => {
                o.bulk(b"unknown");
                o.bulk(b"spec");
                o.map(0);
            }
        }
        o.bulk(b"find_keys");
        o.map(2);
        o.bulk(b"type");
        match ks.find_keys {
            FindKeys::Range {
                last_key,
                step,
                limit,
            } => {
                o.bulk(b"range");
                o.bulk(b"spec");
                o.map(3);
                o.bulk(b"lastkey");
                o.int(last_key as i64);
                o.bulk(b"keystep");
                o.int(step as i64);
                o.bulk(b"limit");
                o.int(limit as i64);
            }
            FindKeys::Keynum {
                keynum_idx,
                first_key,
                step,
            } => {
                o.bulk(b"keynum");
                o.bulk(b"spec");
                o.map(3);
                o.bulk(b"keynumidx");
                o.int(keynum_idx as i64);
                o.bulk(b"firstkey");
                o.int(first_key as i64);
                o.bulk(b"keystep");
                o.int(step as i64);
            }
            FindKeys::Unknown => {
                o.bulk(b"unknown");
                o.bulk(b"spec");
                o.map(0);
            }
        }
    }
}

fn command_all(ctx: &mut Ctx<'_>, _args: &Args<'_>) -> CmdResult {
    command_default(ctx)
}

fn command_default(ctx: &mut Ctx<'_>) -> CmdResult {
    let all = table::all();
    ctx.out.array(all.len());
    for s in all {
        write_command_info(ctx, s);
    }
    Ok(())
}

/// `COMMAND` with no subcommand is the full listing; the container dispatch needs a subcommand, so
/// the table routes bare `COMMAND` here through `command|info` with no names.
fn command_info(ctx: &mut Ctx<'_>, args: &Args<'_>) -> CmdResult {
    if args.len() == 2 {
        return command_default(ctx);
    }
    ctx.out.array(args.len() - 2);
    for name in args.tail(2).iter() {
        match lookup_full(name) {
            Some(s) => write_command_info(ctx, s),
            None => ctx.out.null(),
        }
    }
    Ok(())
}

/// Looks up `name` or `parent|sub`.
fn lookup_full(name: &[u8]) -> Option<&'static Spec> {
    let mut parts = name.splitn(2, |&b| b == b'|');
    let parent = table::lookup(parts.next()?)?;
    match parts.next() {
        Some(sub) => parent.find_sub(sub),
        None => Some(parent),
    }
}

fn command_count(ctx: &mut Ctx<'_>, _args: &Args<'_>) -> CmdResult {
    ctx.out.int(table::all().len() as i64);
    Ok(())
}

fn write_docs(ctx: &mut Ctx<'_>, s: &Spec) {
    let o = &mut ctx.out;
    let subs = !s.subcommands.is_empty();
    o.map(3 + subs as usize);
    o.bulk(b"summary");
    o.bulk(s.summary.as_bytes());
    o.bulk(b"since");
    o.bulk(s.since.as_bytes());
    o.bulk(b"group");
    o.bulk(s.group.name().as_bytes());
    if subs {
        o.bulk(b"subcommands");
        o.map(s.subcommands.len());
        for sub in s.subcommands {
            ctx.out.bulk(sub.name.as_bytes());
            write_docs(ctx, sub);
        }
    }
}

fn command_docs(ctx: &mut Ctx<'_>, args: &Args<'_>) -> CmdResult {
    let specs: Vec<&'static Spec> = if args.len() == 2 {
        table::all().to_vec()
    } else {
        args.tail(2).iter().filter_map(lookup_full).collect()
    };
    ctx.out.map(specs.len());
    for s in specs {
        ctx.out.bulk(s.name.as_bytes());
        write_docs(ctx, s);
    }
    Ok(())
}

/// The spec and keys of a full request, as `COMMAND GETKEYS` checks them (Redis's
/// `getKeysSubcommandImpl`): the command (or subcommand) exists, takes keys, has a valid arity,
/// and the request fits its key specs.
pub fn keys_of(args: &Args<'_>) -> Result<(&'static Spec, KeyRefs), ReplyError> {
    const INVALID_COMMAND: ReplyError = ReplyError::err_static("Invalid command specified");
    let Some(mut spec) = table::lookup(args.get(0)) else {
        return Err(INVALID_COMMAND);
    };
    if !spec.subcommands.is_empty() && args.len() >= 2 {
        spec = spec.find_sub(args.get(1)).ok_or(INVALID_COMMAND)?;
    }
    if !keyspec::has_keys(spec) {
        return Err(ReplyError::err_static("The command has no key arguments"));
    }
    if !spec.arity_ok(args.len()) {
        return Err(ReplyError::err_static(
            "Invalid number of arguments specified for command",
        ));
    }
    match keyspec::keys(spec, args) {
        Ok(keys) if !keys.is_empty() => Ok((spec, keys)),
        // Scripts may name no key: an empty list, as Redis answers (its key finder for them
        // finds none in a request it would refuse, too).
        _ if spec.has(flag::NO_MANDATORY_KEYS) => Ok((spec, KeyRefs::default())),
        _ => Err(ReplyError::err_static(
            "Invalid arguments specified for command",
        )),
    }
}

fn command_getkeys(ctx: &mut Ctx<'_>, args: &Args<'_>) -> CmdResult {
    let req = args.tail(2);
    let (_, keys) = keys_of(&req)?;
    ctx.out.array(keys.len());
    for k in &keys {
        ctx.out.bulk(req.get(k.pos));
    }
    Ok(())
}

fn command_getkeysandflags(ctx: &mut Ctx<'_>, args: &Args<'_>) -> CmdResult {
    let req = args.tail(2);
    let (_, keys) = keys_of(&req)?;
    ctx.out.array(keys.len());
    for k in &keys {
        ctx.out.array(2);
        ctx.out.bulk(req.get(k.pos));
        write_flag_set(&mut ctx.out, k.flags, key::NAMES);
    }
    Ok(())
}

fn command_list(ctx: &mut Ctx<'_>, args: &Args<'_>) -> CmdResult {
    let mut filter: Option<(String, Vec<u8>)> = None;
    if args.len() == 5 && args.is(2, "FILTERBY") {
        filter = Some((args.str_lossy(3).to_ascii_lowercase(), args.get(4).to_vec()));
    } else if args.len() != 2 {
        return Err(ERR_SYNTAX);
    }
    let mut names = Vec::new();
    for s in table::all() {
        let mut all_names = vec![s.name];
        all_names.extend(s.subcommands.iter().map(|x| x.name));
        for name in all_names {
            let keep = match &filter {
                None => true,
                Some((kind, v)) => match kind.as_str() {
                    "pattern" => glob_match(v, name.as_bytes(), true),
                    "aclcat" => {
                        let cat = format!("@{}", String::from_utf8_lossy(v).to_ascii_lowercase());
                        lookup_full(name.as_bytes())
                            .is_some_and(|sp| sp.acl_categories().contains(&cat.as_str()))
                    }
                    "module" => false,
                    _ => return Err(ERR_SYNTAX),
                },
            };
            if keep {
                names.push(name);
            }
        }
    }
    ctx.out.array(names.len());
    for n in names {
        ctx.out.bulk(n.as_bytes());
    }
    Ok(())
}

fn command_help(ctx: &mut Ctx<'_>, _args: &Args<'_>) -> CmdResult {
    help(
        ctx,
        &[
            "COMMAND <subcommand> [<arg> [value] [opt] ...]. Subcommands are:",
            "(no subcommand)",
            "    Return details about all commands.",
            "COUNT",
            "    Return the total number of commands in this server.",
            "LIST",
            "    Return a list of all commands in this server.",
            "INFO [<command-name> ...]",
            "    Return details about multiple commands.",
            "DOCS [<command-name> ...]",
            "    Return documentation details about multiple commands.",
            "GETKEYS <full-command>",
            "    Return the keys from a full command.",
            "GETKEYSANDFLAGS <full-command>",
            "    Return the keys and the access flags from a full command.",
            "HELP",
            "    Prints this help.",
        ],
    )
}

// ---- CONFIG ----

fn config_get(ctx: &mut Ctx<'_>, args: &Args<'_>) -> CmdResult {
    let cfg = ctx.srv.config();
    let mut found: Vec<(String, String)> = Vec::new();
    for pat in args.tail(2).iter() {
        // An exact name (no glob characters) is echoed as the client typed it, as Redis does.
        if !pat.iter().any(|b| matches!(b, b'*' | b'?' | b'[')) {
            let name = String::from_utf8_lossy(pat).into_owned();
            if let Some(p) = config::find(&name)
                && !found.iter().any(|(n, _)| n.eq_ignore_ascii_case(&name))
            {
                found.push((name, (p.get)(&cfg)));
            }
            continue;
        }
        for p in config::PARAMS {
            let names = std::iter::once(p.name).chain(p.alias);
            for name in names {
                if glob_match(pat, name.as_bytes(), true) && !found.iter().any(|(n, _)| n == name) {
                    found.push((name.to_string(), (p.get)(&cfg)));
                }
            }
        }
    }
    ctx.out.map(found.len());
    for (n, val) in found {
        ctx.out.bulk(n.as_bytes());
        ctx.out.bulk(val.as_bytes());
    }
    Ok(())
}

/// The listeners' part of `CONFIG SET`: `port` and `tls-port` that changed.
fn relisten(
    srv: &ServerState,
    prev: &config::Config,
    next: &config::Config,
    seen: &[&'static str],
) -> Result<(), ReplyError> {
    let fail = |name: &str, why: &str| {
        err!("CONFIG SET failed (possibly related to argument '{name}') - {why}")
    };
    if seen.contains(&"tls-port") && next.tls_port != prev.tls_port {
        // A first TLS port loads the certificates first.
        if prev.tls_port == 0 && next.tls_port != 0 {
            (srv.hooks.apply_tls)(next).map_err(|_| {
                fail(
                    "tls-port",
                    "Unable to update TLS configuration. Check server logs.",
                )
            })?;
        }
        (srv.hooks.listen)("tls-port", next.tls_port)
            .map_err(|_| fail("tls-port", "Unable to listen on this port"))?;
    }
    // Against the port bound (a node started on port 0 listens on a picked one).
    if seen.contains(&"port") && next.port != srv.tcp_port.load(Relaxed) {
        let bound = (srv.hooks.listen)("port", next.port)
            .map_err(|_| fail("port", "Unable to listen on this port"))?;
        srv.tcp_port.store(bound, Relaxed);
    }
    Ok(())
}

fn config_set(ctx: &mut Ctx<'_>, args: &Args<'_>) -> CmdResult {
    if !args.len().is_multiple_of(2) {
        return Err(err!(
            "Unknown option or number of arguments for CONFIG SET - '{}'",
            args.str_lossy(args.len() - 1)
        ));
    }
    // Every value is checked against a copy before any takes effect: CONFIG SET of several
    // parameters is all or nothing.
    let enable_protected = ctx.srv.config().enable_protected_configs;
    let addr = ctx.client.handle.addr.clone();
    let appendonly = ctx.srv.config().appendonly;
    let prev = ctx.srv.config();
    ctx.srv.update_config(|next| {
        let mut seen: Vec<&'static str> = Vec::new();
        for i in (2..args.len()).step_by(2) {
            let name = args.str_lossy(i);
            let Some(p) = config::find(&name) else {
                return Err(err!(
                    "Unknown option or number of arguments for CONFIG SET - '{name}'"
                ));
            };
            let fail = |why: &str| {
                err!("CONFIG SET failed (possibly related to argument '{name}') - {why}")
            };
            if seen.contains(&p.name) {
                return Err(fail("duplicate parameter"));
            }
            seen.push(p.name);
            if !p.mutable {
                // The value in force may be set again (nothing changes), for the parameters
                // Redis does not refuse: see `config::SAME_VALUE_SETTABLE`.
                let value = args.str_lossy(i + 1);
                let mut scratch = (*prev).clone();
                let same = config::SAME_VALUE_SETTABLE.contains(&p.name)
                    && (p.set)(&mut scratch, p.kind, &value).is_ok()
                    && (p.get)(&scratch) == (p.get)(&prev);
                if !same {
                    return Err(fail("can't set immutable config"));
                }
                continue;
            }
            if p.protected && !enable_protected.allows(&addr) {
                return Err(fail("can't set protected config"));
            }
            (p.set)(next, p.kind, &args.str_lossy(i + 1)).map_err(|e| fail(&e))?;
        }
        // New certificates are loaded (and checked) before the new values take effect, as
        // Redis's `applyTlsCfg`: files that do not load leave the old ones in place.
        if let Some(name) = seen.iter().find(|n| config::TLS_RELOADED.contains(n)) {
            (ctx.srv.hooks.apply_tls)(next).map_err(|_| {
                err!(
                    "CONFIG SET failed (possibly related to argument '{name}') - Unable to \
                     update TLS configuration. Check server logs."
                )
            })?;
        }
        // New ports last, once every other value checked (Redis's `updatePort`/`updateTLSPort`):
        // the new listener opens and the old one closes; a port that cannot be bound changes
        // nothing.
        relisten(ctx.srv, &prev, next, &seen)
    })?;
    let now = ctx.srv.config().appendonly;
    if now != appendonly {
        ctx.client.repl.action = Some(crate::state::Action::SetAppendonly(now));
    }
    ctx.out.ok();
    Ok(())
}

/// Writes the configuration into the TOML file the server was started with, through the owner's
/// hook (the server keeps the user's comments and layout, see `shoal_server::config_file`).
fn config_rewrite(ctx: &mut Ctx<'_>, _args: &Args<'_>) -> CmdResult {
    let path = ctx.srv.config_file.clone();
    if path.is_empty() {
        return Err(ReplyError::err_static(
            "The server is running without a config file",
        ));
    }
    let cfg = ctx.srv.config();
    (ctx.srv.hooks.rewrite_config)(&path, &cfg).map_err(|e| err!("Rewriting config file: {e}"))?;
    ctx.out.ok();
    Ok(())
}

fn config_resetstat(ctx: &mut Ctx<'_>, _args: &Args<'_>) -> CmdResult {
    let s = &ctx.srv.stats;
    for c in [
        &s.total_connections_received,
        &s.rejected_connections,
        &s.total_net_repl_input_bytes,
        &s.total_net_repl_output_bytes,
        &s.expired_time_cap_reached_count,
        &s.expire_cycle_cpu_ms,
        &s.reply_buffer_shrinks,
        &s.reply_buffer_expands,
        &s.client_output_limit_disconnections,
        &s.client_query_limit_disconnections,
        &s.total_error_replies,
        &s.oom_rejections,
        &ctx.srv.client_eviction.evicted,
    ] {
        c.store(0, Relaxed);
    }
    for c in [
        &s.total_commands_processed,
        &s.total_net_input_bytes,
        &s.total_reads_processed,
        &s.total_net_output_bytes,
        &s.total_writes_processed,
    ] {
        c.reset();
    }
    s.errors.reset();
    ctx.srv.lazyfree.reset_stats();
    ctx.srv.ks.reset_stats();
    ctx.srv.cmdstats.reset();
    ctx.out.ok();
    Ok(())
}

fn config_help(ctx: &mut Ctx<'_>, _args: &Args<'_>) -> CmdResult {
    help(
        ctx,
        &[
            "CONFIG <subcommand> [<arg> [value] [opt] ...]. Subcommands are:",
            "GET <pattern>",
            "    Return parameters matching the glob-like <pattern> and their values.",
            "SET <directive> <value>",
            "    Set the configuration <directive> to <value>.",
            "RESETSTAT",
            "    Reset statistics reported by the INFO command.",
            "REWRITE",
            "    Rewrite the configuration file.",
            "HELP",
            "    Prints this help.",
        ],
    )
}

// ---- keyspace-wide ----

fn dbsize(ctx: &mut Ctx<'_>, _args: &Args<'_>) -> CmdResult {
    let (keys, _) = ctx.srv.ks.db_size(ctx.client.db);
    ctx.out.int(keys as i64);
    Ok(())
}

/// Parses the optional ASYNC|SYNC argument of FLUSHDB/FLUSHALL.
fn flush_async(args: &Args<'_>) -> Result<bool, ReplyError> {
    match args.len() {
        1 => Ok(false),
        2 if args.is(1, "ASYNC") => Ok(true),
        2 if args.is(1, "SYNC") => Ok(false),
        _ => Err(ERR_SYNTAX),
    }
}

/// Empties one database (or all; large ones are freed off the request path when `lazy`) and sends
/// the flush to replicas. The effect is appended while
/// every shard is still locked, and its version taken then, so a write that follows the flush on
/// any shard carries a newer version and survives it on replicas too.
pub fn flush(srv: &ServerState, db: Option<usize>, lazy: bool, now_ms: u64) -> Option<u64> {
    let mut taken = Vec::new();
    let mut shards = srv.ks.lock_all();
    let version = srv.ks.hlc.next(now_ms);
    // Active-active: a reset to absent of every key at the flush's stamp (see `active.rs`).
    let active = srv.active.is_on();
    let at = shoal_keyspace::merge::Stamp::new(version, srv.active.node());
    let offset = crate::effects::emit_all_locked(
        srv,
        &mut shards,
        now_ms,
        |shards| {
            for shard in shards.iter_mut() {
                for d in 0..srv.ks.databases() {
                    if db.is_none_or(|x| x == d)
                        && let Some(part) = shard.take_db(d)
                    {
                        taken.push(part);
                    }
                }
            }
            if active {
                crate::active::flushed_locally(srv, db, at);
            }
        },
        |out| {
            if active {
                crate::active::encode_flush(out, db, at)
            } else {
                shoal_replication::stream::encode_flush(out, db, version)
            }
        },
    );
    drop(shards);
    if lazy {
        srv.lazyfree.drop_in_background(Box::new(taken));
    }
    offset
}

fn flushdb(ctx: &mut Ctx<'_>, args: &Args<'_>) -> CmdResult {
    let lazy = flush_async(args)?;
    if let Some(offset) = flush(ctx.srv, Some(ctx.client.db), lazy, ctx.now_ms) {
        ctx.client.repl.last_write_offset = offset;
    }
    crate::tracking::on_flush(ctx.srv, ctx.now_ms);
    ctx.out.ok();
    Ok(())
}

fn flushall(ctx: &mut Ctx<'_>, args: &Args<'_>) -> CmdResult {
    let lazy = flush_async(args)?;
    if let Some(offset) = flush(ctx.srv, None, lazy, ctx.now_ms) {
        ctx.client.repl.last_write_offset = offset;
    }
    crate::tracking::on_flush(ctx.srv, ctx.now_ms);
    ctx.out.ok();
    Ok(())
}

fn time(ctx: &mut Ctx<'_>, _args: &Args<'_>) -> CmdResult {
    let us = (ctx.srv.clock.unix_us)();
    ctx.out.array(2);
    ctx.out.bulk((us / 1_000_000).to_string().as_bytes());
    ctx.out.bulk((us % 1_000_000).to_string().as_bytes());
    Ok(())
}

fn shutdown(ctx: &mut Ctx<'_>, args: &Args<'_>) -> CmdResult {
    for a in args.tail(1).iter() {
        let ok = [&b"NOSAVE"[..], b"SAVE", b"NOW", b"FORCE"]
            .iter()
            .any(|w| a.eq_ignore_ascii_case(w));
        if a.eq_ignore_ascii_case(b"ABORT") {
            return Err(ReplyError::err_static("No shutdown in progress."));
        }
        if !ok {
            return Err(ERR_SYNTAX);
        }
    }
    // SAVE / NOSAVE override the `save` rules; the server writes the snapshot before it exits.
    let save = if args
        .tail(1)
        .iter()
        .any(|a| a.eq_ignore_ascii_case(b"NOSAVE"))
    {
        2
    } else if args.tail(1).iter().any(|a| a.eq_ignore_ascii_case(b"SAVE")) {
        1
    } else {
        0
    };
    ctx.srv.persist.shutdown_save.store(save, Relaxed);
    // No reply: like Redis, the connection closes as the server exits.
    ctx.srv.shutting_down.store(true, Relaxed);
    ctx.client.repl.action = Some(crate::state::Action::Shutdown);
    ctx.client.close_after_reply = true;
    Ok(())
}

// ---- SLOWLOG and LATENCY ----

/// Records a command that ran for `us` microseconds in the slow log and latency monitor.
pub fn record_slow(
    srv: &ServerState,
    c: &Client,
    spec: &Spec,
    args: &Args<'_>,
    us: u64,
    now_ms: u64,
) {
    // Redis files its fast commands apart, so a spike there points at the machine, not at
    // a command's work (LATENCY DOCTOR's advice differs).
    let event = if spec.has(flag::FAST) {
        "fast-command"
    } else {
        "command"
    };
    // Stamped when the command ended, as Redis stamps a sample when it records it.
    srv.latency_sample(event, us / 1000, (now_ms + us / 1000) / 1000);
    if !srv.hot.slowlog_enabled.load(Relaxed)
        || us < srv.hot.slowlog_slower_than_us.load(Relaxed)
        || spec.has(flag::NO_SLOWLOG | flag::SKIP_SLOWLOG)
    {
        return;
    }
    let max_len = srv.config().slowlog_max_len as usize;
    let mut kept: Vec<Vec<u8>> = Vec::new();
    let argc = args.len();
    for (i, a) in args.iter().enumerate() {
        if i == SLOWLOG_ARGS_MAX - 1 && argc > SLOWLOG_ARGS_MAX {
            kept.push(format!("... ({} more arguments)", argc - i).into_bytes());
            break;
        }
        if a.len() > SLOWLOG_ARG_BYTES_MAX {
            let mut v = a[..SLOWLOG_ARG_BYTES_MAX].to_vec();
            v.extend_from_slice(
                format!("... ({} more bytes)", a.len() - SLOWLOG_ARG_BYTES_MAX).as_bytes(),
            );
            kept.push(v);
        } else {
            kept.push(a.to_vec());
        }
    }
    let mut log = srv.slowlog.lock().expect("slowlog lock");
    let id = log.next_id;
    log.next_id += 1;
    log.entries.push_front(SlowEntry {
        id,
        unix_s: now_ms / 1000,
        duration_us: us,
        args: kept,
        addr: c.handle.addr.clone(),
        name: c.handle.name.lock().expect("name lock").clone(),
    });
    log.entries.truncate(max_len);
}

fn slowlog_get(ctx: &mut Ctx<'_>, args: &Args<'_>) -> CmdResult {
    let count = if args.len() == 3 {
        let n = parse_i64(args.get(2))
            .filter(|&n| n >= -1)
            .ok_or_else(|| ReplyError::err_static("count should be greater than or equal to -1"))?;
        if n == -1 { usize::MAX } else { n as usize }
    } else if args.len() == 2 {
        10
    } else {
        return Err(ReplyError::err_static(
            "wrong number of arguments for 'slowlog|get' command",
        ));
    };
    let entries: Vec<SlowEntry> = ctx
        .srv
        .slowlog
        .lock()
        .expect("slowlog lock")
        .entries
        .iter()
        .take(count)
        .cloned()
        .collect();
    let o = &mut ctx.out;
    o.array(entries.len());
    for e in entries {
        o.array(6);
        o.int(e.id as i64);
        o.int(e.unix_s as i64);
        o.int(e.duration_us as i64);
        o.array(e.args.len());
        for a in &e.args {
            o.bulk(a);
        }
        o.bulk(e.addr.as_bytes());
        o.bulk(&e.name);
    }
    Ok(())
}

fn slowlog_len(ctx: &mut Ctx<'_>, _args: &Args<'_>) -> CmdResult {
    let n = ctx.srv.slowlog.lock().expect("slowlog lock").entries.len();
    ctx.out.int(n as i64);
    Ok(())
}

fn slowlog_reset(ctx: &mut Ctx<'_>, _args: &Args<'_>) -> CmdResult {
    ctx.srv
        .slowlog
        .lock()
        .expect("slowlog lock")
        .entries
        .clear();
    ctx.out.ok();
    Ok(())
}

fn slowlog_help(ctx: &mut Ctx<'_>, _args: &Args<'_>) -> CmdResult {
    help(
        ctx,
        &[
            "SLOWLOG <subcommand> [<arg> [value] [opt] ...]. Subcommands are:",
            "GET [<count>]",
            "    Return top <count> entries from the slowlog (default: 10, -1 mean all).",
            "    Entries are made of:",
            "    id, timestamp, time in microseconds, arguments array, client IP and port,",
            "    client name",
            "LEN",
            "    Return the length of the slowlog.",
            "RESET",
            "    Reset the slowlog.",
            "HELP",
            "    Prints this help.",
        ],
    )
}

fn latency_latest(ctx: &mut Ctx<'_>, _args: &Args<'_>) -> CmdResult {
    let events: Vec<_> = ctx
        .srv
        .latency
        .lock()
        .expect("latency lock")
        .iter()
        .map(|(k, v)| (*k, v.clone()))
        .collect();
    ctx.out.array(events.len());
    for (name, e) in events {
        let last = e.latest();
        ctx.out.array(4);
        ctx.out.bulk(name.as_bytes());
        ctx.out.int(last.unix_s as i64);
        ctx.out.int(last.ms as i64);
        ctx.out.int(e.max_ms as i64);
    }
    Ok(())
}

/// The monitor's copy of one event (named exactly, as Redis looks it up), taken so no lock is
/// held while a reply is built.
fn latency_event(srv: &ServerState, name: &[u8]) -> Option<(&'static str, LatencyEvent)> {
    let l = srv.latency.lock().expect("latency lock");
    l.iter()
        .find(|(k, _)| k.as_bytes() == name)
        .map(|(k, e)| (*k, e.clone()))
}

/// `LATENCY HISTORY <event>`: every sample the monitor keeps for the event, oldest first.
fn latency_history(ctx: &mut Ctx<'_>, args: &Args<'_>) -> CmdResult {
    let samples = latency_event(ctx.srv, args.get(2))
        .map(|(_, e)| e.samples)
        .unwrap_or_default();
    ctx.out.array(samples.len());
    for s in samples {
        ctx.out.array(2);
        ctx.out.int(s.unix_s as i64);
        ctx.out.int(s.ms as i64);
    }
    Ok(())
}

/// `LATENCY GRAPH <event>`: the event's samples as Redis's ASCII sparkline.
fn latency_graph(ctx: &mut Ctx<'_>, args: &Args<'_>) -> CmdResult {
    let Some((name, e)) = latency_event(ctx.srv, args.get(2)) else {
        let mut msg = b"No samples available for event '".to_vec();
        msg.extend_from_slice(args.get(2));
        msg.push(b'\'');
        return Err(ReplyError::ErrBytes(msg.into()));
    };
    let text = latency::graph(name, &e, ctx.now_ms / 1000);
    ctx.out.verbatim(text.as_bytes());
    Ok(())
}

/// `LATENCY DOCTOR`: Redis's report on the events the monitor holds and what may help.
fn latency_doctor(ctx: &mut Ctx<'_>, _args: &Args<'_>) -> CmdResult {
    let srv = ctx.srv;
    let cfg = srv.config();
    let settings = latency::DoctorSettings {
        threshold_ms: srv.hot.latency_threshold_ms.load(Relaxed),
        slowlog_slower_than_us: cfg.slowlog_log_slower_than,
        hz: cfg.hz,
        fsync_always: cfg.appendfsync == config::AppendFsync::Always,
    };
    let events = srv.latency.lock().expect("latency lock").clone();
    let text = latency::doctor(
        &events,
        ctx.now_ms / 1000,
        &settings,
        srv.hooks.anon_huge_pages_bytes,
    );
    ctx.out.verbatim(text.as_bytes());
    Ok(())
}

/// `LATENCY RESET [event ...]`: forgets the named events (any case, as Redis compares them), or
/// all; replies how many were forgotten.
fn latency_reset(ctx: &mut Ctx<'_>, args: &Args<'_>) -> CmdResult {
    let mut l = ctx.srv.latency.lock().expect("latency lock");
    let n = if args.len() == 2 {
        let n = l.len();
        l.clear();
        n
    } else {
        let names = args.tail(2);
        let before = l.len();
        l.retain(|k, _| !names.iter().any(|n| n.eq_ignore_ascii_case(k.as_bytes())));
        before - l.len()
    };
    drop(l);
    ctx.out.int(n as i64);
    Ok(())
}

/// `LATENCY HISTOGRAM [command ...]`: per command, its calls and the cumulative counts of calls
/// under each power of two of microseconds (see `cmdstats`). Unknown names are left out, a
/// container's name stands for its subcommands, as in Redis.
fn latency_histogram(ctx: &mut Ctx<'_>, args: &Args<'_>) -> CmdResult {
    let mut totals = ctx.srv.cmdstats.totals();
    totals.retain(|c| c.hist_count() > 0);
    if args.len() > 2 {
        let wanted: Vec<&'static Spec> = args
            .tail(2)
            .iter()
            .filter_map(|a| lookup_full(a))
            .flat_map(|s| {
                if s.subcommands.is_empty() {
                    std::slice::from_ref(s).iter()
                } else {
                    s.subcommands.iter()
                }
            })
            .collect();
        totals.retain(|c| wanted.iter().any(|w| std::ptr::eq(*w, c.spec)));
    }
    let o = &mut ctx.out;
    o.map(totals.len());
    for c in &totals {
        o.bulk(c.name().as_bytes());
        o.map(2);
        o.bulk(b"calls");
        o.int(c.hist_count() as i64);
        o.bulk(b"histogram_usec");
        let pairs = crate::cmdstats::histogram_usec(c);
        o.map(pairs.len());
        for (us, n) in pairs {
            o.int(us as i64);
            o.int(n as i64);
        }
    }
    Ok(())
}

fn latency_help(ctx: &mut Ctx<'_>, _args: &Args<'_>) -> CmdResult {
    help(
        ctx,
        &[
            "LATENCY <subcommand> [<arg> [value] [opt] ...]. Subcommands are:",
            "DOCTOR",
            "    Return a human readable latency analysis report.",
            "GRAPH <event>",
            "    Return an ASCII latency graph for the <event> class.",
            "HISTORY <event>",
            "    Return time-latency samples for the <event> class.",
            "LATEST",
            "    Return the latest latency samples for all events.",
            "RESET [<event> ...]",
            "    Reset latency data of one or more <event> classes.",
            "    (default: reset all data for all event classes)",
            "HISTOGRAM [COMMAND ...]",
            "    Return a cumulative distribution of latencies in the format of a histogram for the specified command names.",
            "    If no commands are specified then all histograms are replied.",
            "HELP",
            "    Prints this help.",
        ],
    )
}

// ---- MEMORY ----

fn memory_usage(ctx: &mut Ctx<'_>, args: &Args<'_>) -> CmdResult {
    if args.len() != 3 && !(args.len() == 5 && args.is(3, "SAMPLES")) {
        return Err(ERR_SYNTAX);
    }
    if args.len() == 5 {
        args.i64(4)?;
    }
    let (shard, slot) = ctx.shard(args.get(2));
    let n = shard
        .peek(ctx.client.db, slot, args.get(2), ctx.now_ms)
        .map(|e| e.mem_bytes());
    drop(shard);
    match n {
        Some(n) => ctx.out.int(n as i64),
        None => ctx.out.null(),
    }
    Ok(())
}

/// MEMORY STATS: Redis 7.0's keys in its order.
fn memory_stats(ctx: &mut Ctx<'_>, _args: &Args<'_>) -> CmdResult {
    let srv = ctx.srv;
    let proc_info = (srv.hooks.process_info)();
    let m = MemoryFigures::read(srv, &proc_info);
    let dbs: Vec<(usize, usize, usize)> = (0..srv.ks.databases())
        .filter_map(|db| {
            let (keys, expires) = srv.ks.db_size(db);
            (keys > 0).then_some((db, keys, expires))
        })
        .collect();
    let active = m.allocator_active();
    let resident = m.allocator_resident();
    let ptr = std::mem::size_of::<usize>();
    let w = &mut ctx.out;
    w.map(27 + dbs.len());
    let int = |w: &mut ReplyWriter<'_>, k: &str, v: u64| {
        w.bulk(k.as_bytes());
        w.int(v as i64);
    };
    int(w, "peak.allocated", m.peak);
    int(w, "total.allocated", m.used);
    int(w, "startup.allocated", m.startup);
    int(w, "replication.backlog", m.backlog);
    int(w, "clients.slaves", m.clients_replicas);
    int(w, "clients.normal", m.clients_normal);
    int(w, "cluster.links", 0);
    int(w, "aof.buffer", 0);
    int(w, "lua.caches", 0);
    int(w, "functions.caches", 0);
    for &(db, keys, expires) in &dbs {
        // The key table holds one pointer per key; keys with a deadline also sit in the expiry
        // heap (deadline, hash, slot).
        w.bulk(format!("db.{db}").as_bytes());
        w.map(3);
        int(w, "overhead.hashtable.main", (keys * ptr) as u64);
        int(w, "overhead.hashtable.expires", (expires * 24) as u64);
        int(w, "overhead.hashtable.slot-to-keys", 0);
    }
    int(w, "overhead.total", m.overhead());
    let keys: u64 = dbs.iter().map(|&(_, k, _)| k as u64).sum();
    int(w, "keys.count", keys);
    let net = m.used.saturating_sub(m.startup);
    int(w, "keys.bytes-per-key", net.checked_div(keys).unwrap_or(0));
    int(w, "dataset.bytes", m.dataset);
    let dbl = |w: &mut ReplyWriter<'_>, k: &str, v: f64| {
        w.bulk(k.as_bytes());
        w.double(v);
    };
    dbl(w, "dataset.percentage", m.dataset_perc());
    dbl(w, "peak.percentage", m.peak_perc());
    int(w, "allocator.allocated", m.used);
    int(w, "allocator.active", active);
    int(w, "allocator.resident", resident);
    dbl(w, "allocator-fragmentation.ratio", ratio(active, m.used));
    int(
        w,
        "allocator-fragmentation.bytes",
        active.saturating_sub(m.used),
    );
    dbl(w, "allocator-rss.ratio", ratio(resident, active));
    int(w, "allocator-rss.bytes", resident.saturating_sub(active));
    dbl(w, "rss-overhead.ratio", ratio(m.rss, resident));
    int(w, "rss-overhead.bytes", m.rss.saturating_sub(resident));
    dbl(w, "fragmentation", ratio(m.rss, m.used));
    int(w, "fragmentation.bytes", m.rss.saturating_sub(m.used));
    Ok(())
}

/// MEMORY DOCTOR: Redis's report, from the same figures as MEMORY STATS.
fn memory_doctor(ctx: &mut Ctx<'_>, _args: &Args<'_>) -> CmdResult {
    let srv = ctx.srv;
    let proc_info = (srv.hooks.process_info)();
    let m = MemoryFigures::read(srv, &proc_info);
    let text = doctor_report(&m, srv.connected_clients() as u64);
    ctx.out.verbatim(text.as_bytes());
    Ok(())
}

/// Redis 7.0's `getMemoryDoctorReport`: too little memory to judge, no issue, or the issues.
fn doctor_report(m: &MemoryFigures, clients: u64) -> String {
    const MB: u64 = 1024 * 1024;
    if m.used < 5 * MB {
        return "Hi Sam, this instance is empty or is using very little memory, my issues detector can't be used in these conditions. Please, leave for your mission on Earth and fill it with some data. The new Sam and I will be back to our programming as soon as I finished rebooting.\n".into();
    }
    let big_peak = m.peak as f64 / m.used as f64 > 1.5;
    let frag = ratio(m.rss, m.used);
    let high_frag = frag > 1.4 && m.rss.saturating_sub(m.used) > 10 * MB;
    let normal_avg = m.clients_normal.checked_div(clients).unwrap_or(0);
    let big_clients = normal_avg > 200 * 1024;
    if !(big_peak || high_frag || big_clients) {
        return "Hi Sam, I can't find any memory issue in your instance. I can only account for what occurs on this base.\n".into();
    }
    let mut s =
        String::from("Sam, I detected a few issues in this Redis instance memory implants:\n\n");
    if big_peak {
        s.push_str(" * Peak memory: In the past this instance used more than 150% the memory that is currently using. The allocator is normally not able to release memory after a peak, so you can expect to see a big fragmentation ratio, however this is actually harmless and is only due to the memory peak, and if the Redis instance Resident Set Size (RSS) is currently bigger than expected, the memory will be used as soon as you fill the Redis instance with more data. If the memory peak was only occasional and you want to try to reclaim memory, please try the MEMORY PURGE command, otherwise the only other option is to shutdown and restart the instance.\n\n");
    }
    if high_frag {
        let _ = write!(
            s,
            " * High total RSS: This instance has a memory fragmentation and RSS overhead greater than 1.4 (this means that the Resident Set Size of the Redis process is much larger than the sum of the logical allocations Redis performed). This problem is usually due either to a large peak memory (check if there is a peak memory entry above in the report) or may result from a workload that causes the allocator to fragment memory a lot. If the problem is a large peak memory, then there is no issue. Otherwise, make sure you are using the Jemalloc allocator and not the default libc malloc. Note: The currently used allocator is \"{}\".\n\n",
            m.allocator.name
        );
    }
    if big_clients {
        s.push_str(" * Big client buffers: The clients output buffers are in general too big, over 200K per client on average. This may result from different causes, like Pub/Sub clients subscribed to channels bot not receiving data fast enough, so that data piles on the Redis instance output buffer, or clients sending commands with large replies or very large sequences of commands in the same pipeline. Please use the CLIENT LIST command in order to investigate the issue if it causes problems in your instance, or to understand better why certain clients are using a big amount of memory.\n\n");
    }
    s.push_str("I'm here to keep you safe, Sam. I want to help you.\n");
    s
}

fn memory_malloc_stats(ctx: &mut Ctx<'_>, _args: &Args<'_>) -> CmdResult {
    let text = (ctx.srv.hooks.allocator_stats_text)();
    let text = if text.is_empty() {
        "Stats not supported for the current allocator".to_string()
    } else {
        text
    };
    ctx.out.verbatim(text.as_bytes());
    Ok(())
}

fn memory_purge(ctx: &mut Ctx<'_>, _args: &Args<'_>) -> CmdResult {
    (ctx.srv.hooks.allocator_purge)();
    ctx.out.ok();
    Ok(())
}

// ---- MONITOR ----

/// MONITOR: `+OK`, then every command run (see `crate::monitor`). A replica link, or a client
/// already monitoring, gets no reply, as in Redis.
fn monitor(ctx: &mut Ctx<'_>, _args: &Args<'_>) -> CmdResult {
    if ctx.client.monitor || ctx.client.handle.kind.load(Relaxed) != crate::state::kind::NORMAL {
        return Ok(());
    }
    ctx.client.monitor = true;
    ctx.srv.monitors.add(&ctx.client.handle);
    ctx.out.ok();
    Ok(())
}

fn memory_help(ctx: &mut Ctx<'_>, _args: &Args<'_>) -> CmdResult {
    help(
        ctx,
        &[
            "MEMORY <subcommand> [<arg> [value] [opt] ...]. Subcommands are:",
            "DOCTOR",
            "    Return memory problems reports.",
            "MALLOC-STATS",
            "    Return internal statistics report from the memory allocator.",
            "PURGE",
            "    Attempt to purge dirty pages for reclamation by the allocator.",
            "STATS",
            "    Return information about the memory usage of the server.",
            "USAGE <key> [SAMPLES <count>]",
            "    Return memory in bytes used by <key> and its value. Nested values are",
            "    sampled up to <count> times (default: 5, 0 means sample all).",
            "HELP",
            "    Prints this help.",
        ],
    )
}

// ---- INFO ----

/// Process figures the server measures (RSS, CPU); filled through a hook.
#[derive(Debug, Default, Clone, Copy)]
pub struct ProcessInfo {
    pub rss_bytes: u64,
    pub cpu_user_s: f64,
    pub cpu_sys_s: f64,
    /// CPU time of the process's main thread (the one that started the server).
    pub cpu_main_user_s: f64,
    pub cpu_main_sys_s: f64,
    pub pid: u32,
    pub total_system_memory_bytes: u64,
}

/// What the allocator reports about itself; filled through a hook (zeros when unknown).
#[derive(Debug, Default, Clone)]
pub struct AllocatorInfo {
    /// `mem_allocator` (`mimalloc-2.1.7`).
    pub name: String,
    /// Memory the allocator committed from the OS: its pages, used or free. mimalloc keeps one
    /// figure for this, so it is both Redis's `allocator_active` and `allocator_resident`.
    pub committed_bytes: u64,
}

/// Redis's `bytesToHuman`: B, K, M, G, T, P with two decimals.
fn human_bytes(n: u64) -> String {
    let d = n as f64;
    const K: f64 = 1024.0;
    if d < K {
        format!("{n}B")
    } else if d < K * K {
        format!("{:.2}K", d / K)
    } else if d < K * K * K {
        format!("{:.2}M", d / (K * K))
    } else if d < K * K * K * K {
        format!("{:.2}G", d / (K * K * K))
    } else if d < K * K * K * K * K {
        format!("{:.2}T", d / (K * K * K * K))
    } else {
        format!("{:.2}P", d / (K * K * K * K * K))
    }
}

/// `a / b`, or 0 when `b` is 0 (a figure the allocator does not give).
fn ratio(a: u64, b: u64) -> f64 {
    if b == 0 { 0.0 } else { a as f64 / b as f64 }
}

/// Redis 7.0's INFO sections in order, and whether each is in the default set. `all` is every
/// section but those modules add (none here); `everything` is every section.
pub const INFO_SECTIONS: &[(&str, bool)] = &[
    ("server", true),
    ("clients", true),
    ("memory", true),
    ("persistence", true),
    ("stats", true),
    ("replication", true),
    ("cpu", true),
    ("modules", true),
    ("commandstats", false),
    ("errorstats", true),
    ("latencystats", false),
    ("cluster", true),
    ("keyspace", true),
];

/// shoal's own sections, shown only when named (`INFO all`/`everything` stay Redis's).
pub const SHOAL_INFO_SECTIONS: &[&str] = &["active", "tiered"];

/// Which sections `INFO args...` asks for (lowercase names): none means `default`; several may be
/// named at once; unknown names select nothing.
fn info_wanted(sections: &[String]) -> Vec<&'static str> {
    let default = sections.is_empty() || sections.iter().any(|s| s == "default");
    let all = sections.iter().any(|s| s == "all" || s == "everything");
    INFO_SECTIONS
        .iter()
        .filter(|(name, in_default)| {
            all || (default && *in_default) || sections.iter().any(|s| s == name)
        })
        .map(|(name, _)| *name)
        .chain(
            SHOAL_INFO_SECTIONS
                .iter()
                .copied()
                .filter(|name| sections.iter().any(|s| s == name)),
        )
        .collect()
}

/// Memory figures shared by `INFO memory`, `MEMORY STATS` and `MEMORY DOCTOR`; read from
/// counters and the client registry, never from the keyspace's entries.
#[derive(Debug, Default)]
struct MemoryFigures {
    used: u64,
    peak: u64,
    startup: u64,
    dataset: u64,
    rss: u64,
    allocator: AllocatorInfo,
    backlog: u64,
    clients_replicas: u64,
    clients_normal: u64,
}

impl MemoryFigures {
    fn read(srv: &ServerState, proc_info: &ProcessInfo) -> MemoryFigures {
        let used = srv.used_memory() as u64;
        let (mut clients_replicas, mut clients_normal) = (0, 0);
        for h in srv.clients.lock().expect("clients lock").values() {
            let m = crate::connection::client_mem(h, 0).total as u64;
            if h.kind.load(Relaxed) == crate::state::kind::REPLICA {
                clients_replicas += m;
            } else {
                clients_normal += m;
            }
        }
        MemoryFigures {
            used,
            peak: srv.stats.observe_used_memory(used),
            startup: srv.stats.used_memory_startup.load(Relaxed),
            dataset: srv.ks.mem_bytes() as u64,
            rss: proc_info.rss_bytes,
            allocator: (srv.hooks.allocator_info)(),
            backlog: srv.repl.backlog_info().2 as u64,
            clients_replicas,
            clients_normal,
        }
    }

    fn overhead(&self) -> u64 {
        self.used.saturating_sub(self.dataset)
    }

    /// Share of the memory used since start-up that is data, in percent.
    fn dataset_perc(&self) -> f64 {
        100.0 * ratio(self.dataset, self.used.saturating_sub(self.startup))
    }

    fn peak_perc(&self) -> f64 {
        100.0 * ratio(self.used, self.peak)
    }

    fn allocator_active(&self) -> u64 {
        self.allocator.committed_bytes
    }

    fn allocator_resident(&self) -> u64 {
        self.allocator.committed_bytes
    }
}

/// The `# Replication` section, with Redis's fields and shoal's own (write strategy, acks).
fn replication_info(srv: &ServerState, now_ms: u64) -> String {
    use crate::repl::{LinkState, Role};
    let repl = &srv.repl;
    let ids = repl.ids();
    let (backlog_size, first, histlen, end) = repl.backlog_info();
    let role = repl.role();
    let replicas = repl.replicas();
    let mut t = String::from("# Replication\r\n");
    let write_replicas = |t: &mut String| {
        let _ = write!(t, "connected_slaves:{}\r\n", replicas.len());
        let (need, max_lag) = (
            srv.hot.min_replicas_to_write.load(Relaxed),
            srv.hot.min_replicas_max_lag_s.load(Relaxed),
        );
        if need > 0 && max_lag > 0 {
            let good = srv.repl.good_replicas(now_ms, max_lag);
            let _ = write!(t, "min_slaves_good_slaves:{good}\r\n");
        }
        for (i, r) in replicas.iter().enumerate() {
            let ack = r.ack_offset.load(Relaxed);
            let lag = now_ms.saturating_sub(r.last_ack_ms.load(Relaxed)) / 1000;
            let _ = write!(
                t,
                "slave{i}:ip={},port={},state=online,offset={ack},lag={lag}\r\n",
                r.ip,
                r.listening_port.load(Relaxed)
            );
        }
    };
    match &role {
        Role::Primary => {
            t.push_str("role:master\r\n");
            write_replicas(&mut t);
        }
        Role::Replica { host, port } => {
            let link = repl.link_state();
            let io = now_ms.saturating_sub(repl.link_last_io_ms.load(Relaxed)) / 1000;
            let _ = write!(
                t,
                "role:slave\r\nmaster_host:{host}\r\nmaster_port:{port}\r\nmaster_link_status:{}\r\nmaster_last_io_seconds_ago:{}\r\nmaster_sync_in_progress:{}\r\nslave_read_repl_offset:{o}\r\nslave_repl_offset:{o}\r\n{down}slave_priority:100\r\nslave_read_only:{}\r\nreplica_announced:1\r\n",
                if link == LinkState::Connected {
                    "up"
                } else {
                    "down"
                },
                if link == LinkState::Connected {
                    io as i64
                } else {
                    -1
                },
                (link == LinkState::Syncing) as u8,
                srv.hot.replica_read_only.load(Relaxed) as u8,
                o = repl.replica_offset(),
                // Redis adds how long the link has been down (here: since its last I/O).
                down = if link == LinkState::Connected {
                    String::new()
                } else {
                    let last = repl.link_last_io_ms.load(Relaxed);
                    let since = if last == 0 { -1 } else { io as i64 };
                    format!("master_link_down_since_seconds:{since}\r\n")
                },
            );
            // shoal: how far behind its primary, as `READONLY MAXLAG` counts it (-1: unknown).
            let lag = crate::maxlag::replica_lag_ms(srv, now_ms);
            let _ = write!(
                t,
                "shoal_replica_lag_ms:{}\r\n",
                lag.map_or(-1, |l| l as i64)
            );
            // A replica's own replicas (chained replication).
            write_replicas(&mut t);
        }
    }
    let offset = if matches!(role, Role::Primary) {
        end
    } else {
        repl.replica_offset()
    };
    let strategy = if repl.strategy_sync() {
        "sync"
    } else {
        "async"
    };
    let _ = write!(
        t,
        "master_failover_state:{}\r\nmaster_replid:{}\r\nmaster_replid2:{}\r\nmaster_repl_offset:{offset}\r\nsecond_repl_offset:{}\r\nrepl_backlog_active:{}\r\nrepl_backlog_size:{backlog_size}\r\nrepl_backlog_first_byte_offset:{first}\r\nrepl_backlog_histlen:{histlen}\r\nshoal_node_id:{}\r\nshoal_write_strategy:{strategy}\r\nshoal_min_replicas_ack:{}\r\nshoal_ack_timeout_ms:{}\r\nshoal_replicas_acked_offset:{}\r\nshoal_link_failures:{}\r\nshoal_empty_copies_refused:{}\r\nshoal_stream_breaks:{}\r\n\r\n",
        repl.failover.state.lock().expect("failover lock"),
        ids.replid,
        ids.replid2,
        ids.second_offset,
        repl.active() as u8,
        srv.node_id,
        repl.settings.min_replicas_ack.load(Relaxed),
        repl.settings.ack_timeout_ms.load(Relaxed),
        replicas
            .iter()
            .map(|r| r.ack_offset.load(Relaxed))
            .min()
            .unwrap_or(0),
        repl.counters.link_failures.load(Relaxed),
        repl.counters.empty_copies_refused.load(Relaxed),
        repl.counters.stream_breaks.load(Relaxed),
    );
    t
}

/// Lines of one INFO section: `name:value\r\n`.
struct Section<'t>(&'t mut String);

impl Section<'_> {
    fn f(&mut self, name: &str, value: impl std::fmt::Display) -> &mut Self {
        let _ = write!(self.0, "{name}:{value}\r\n");
        self
    }
}

/// The text of `INFO` for the given sections (lowercase): Redis 7.0's sections and fields in its
/// order, then shoal's own (`shoal_*`). Figures shoal does not have (scripts, AOF, forks,
/// defragmentation, tracking) show Redis's value for a server that does not use them.
pub fn info_text(srv: &ServerState, sections: &[String], now_ms: u64) -> String {
    let wanted = info_wanted(sections);
    let proc_info = (srv.hooks.process_info)();
    let cfg = srv.config();
    let mut t = String::new();
    for name in wanted {
        match name {
            "server" => server_section(srv, &cfg, &proc_info, now_ms, &mut t),
            "clients" => clients_section(srv, &cfg, &mut t),
            "memory" => memory_section(srv, &cfg, &proc_info, &mut t),
            "persistence" => persistence_section(srv, now_ms, &mut t),
            "stats" => stats_section(srv, &mut t),
            "replication" => t.push_str(&replication_info(srv, now_ms)),
            "cpu" => {
                t.push_str("# CPU\r\n");
                Section(&mut t)
                    .f("used_cpu_sys", format_args!("{:.6}", proc_info.cpu_sys_s))
                    .f("used_cpu_user", format_args!("{:.6}", proc_info.cpu_user_s))
                    .f("used_cpu_sys_children", "0.000000")
                    .f("used_cpu_user_children", "0.000000")
                    .f(
                        "used_cpu_sys_main_thread",
                        format_args!("{:.6}", proc_info.cpu_main_sys_s),
                    )
                    .f(
                        "used_cpu_user_main_thread",
                        format_args!("{:.6}", proc_info.cpu_main_user_s),
                    );
            }
            // No modules: the section is there, empty, as in Redis without modules.
            "modules" => t.push_str("# Modules\r\n"),
            "commandstats" => crate::cmdstats::info_commandstats(&srv.cmdstats, &mut t),
            "latencystats" => {
                let p = &cfg.latency_tracking_info_percentiles.0;
                crate::cmdstats::info_latencystats(&srv.cmdstats, p, &mut t);
            }
            "errorstats" => srv.stats.errors.info_section(&mut t),
            "cluster" => cluster_section(srv, &mut t),
            "active" => crate::active::info_section(srv, now_ms, &mut t),
            "tiered" => crate::tier::info_section(srv, &mut t),
            "keyspace" => {
                t.push_str("# Keyspace\r\n");
                for db in 0..srv.ks.databases() {
                    let (keys, expires) = srv.ks.db_size(db);
                    if keys > 0 {
                        let avg_ttl = srv.ks.db_avg_ttl_ms(db, now_ms);
                        let _ = write!(
                            t,
                            "db{db}:keys={keys},expires={expires},avg_ttl={avg_ttl}\r\n"
                        );
                    }
                }
            }
            _ => continue,
        }
        if !t.ends_with("\r\n\r\n") {
            t.push_str("\r\n");
        }
    }
    // Redis ends the text without the last blank line.
    while t.ends_with("\r\n\r\n") {
        t.truncate(t.len() - 2);
    }
    t
}

fn server_section(
    srv: &ServerState,
    cfg: &config::Config,
    proc_info: &ProcessInfo,
    now_ms: u64,
    t: &mut String,
) {
    let uptime_s = now_ms.saturating_sub(srv.started_ms) / 1000;
    t.push_str("# Server\r\n");
    Section(t)
        .f("redis_version", crate::connection::REDIS_VERSION)
        .f("shoal_version", env!("CARGO_PKG_VERSION"))
        .f("redis_git_sha1", "00000000")
        .f("redis_git_dirty", 0)
        .f("redis_build_id", 0)
        .f(
            "redis_mode",
            if srv.cluster.is_some() {
                "cluster"
            } else {
                "standalone"
            },
        )
        .f("os", &srv.os)
        .f("arch_bits", usize::BITS)
        .f("monotonic_clock", "POSIX clock_gettime")
        .f("multiplexing_api", "epoll")
        .f("atomicvar_api", "c11-builtin")
        .f("gcc_version", "0.0.0")
        .f("process_id", proc_info.pid)
        .f("process_supervised", "no")
        .f("run_id", &srv.run_id)
        .f("tcp_port", srv.tcp_port.load(Relaxed))
        .f("server_time_usec", (srv.clock.unix_us)())
        .f("uptime_in_seconds", uptime_s)
        .f("uptime_in_days", uptime_s / 86400)
        .f("hz", cfg.hz)
        .f("configured_hz", cfg.hz)
        .f("lru_clock", shoal_keyspace::evict::lru_clock(now_ms))
        .f("executable", &srv.executable)
        .f("config_file", &srv.config_file)
        .f("io_threads_active", 0);
}

fn clients_section(srv: &ServerState, cfg: &config::Config, t: &mut String) {
    let (mut connected, mut max_in, mut max_out) = (0, 0, 0);
    for h in srv.clients.lock().expect("clients lock").values() {
        // Redis counts its replicas apart (`connected_slaves`).
        if h.kind.load(Relaxed) != crate::state::kind::REPLICA {
            connected += 1;
        }
        let m = crate::connection::client_mem(h, 0);
        max_in = max_in.max(m.rbp);
        max_out = max_out.max(m.omem);
    }
    t.push_str("# Clients\r\n");
    Section(t)
        .f("connected_clients", connected)
        .f("cluster_connections", 0)
        .f("maxclients", cfg.maxclients)
        .f("client_recent_max_input_buffer", max_in)
        .f("client_recent_max_output_buffer", max_out)
        .f(
            "blocked_clients",
            srv.blocking.blocked_clients() + srv.client_pause.waiting(),
        )
        .f("tracking_clients", srv.tracking.counts().0)
        .f(
            "clients_in_timeout_table",
            srv.blocking.blocked_with_timeout(),
        );
}

fn memory_section(
    srv: &ServerState,
    cfg: &config::Config,
    proc_info: &ProcessInfo,
    t: &mut String,
) {
    let m = MemoryFigures::read(srv, proc_info);
    let active = m.allocator_active();
    let resident = m.allocator_resident();
    let max = cfg.maxmemory;
    let vm_eval = srv
        .scripts
        .vm_bytes
        .load(std::sync::atomic::Ordering::Relaxed) as u64;
    let scripts_eval = srv
        .scripts
        .cached_bytes
        .load(std::sync::atomic::Ordering::Relaxed) as u64;
    let cached_scripts = srv
        .scripts
        .cached_scripts
        .load(std::sync::atomic::Ordering::Relaxed) as u64;
    let functions = srv.scripts.function_count.load(Relaxed) as u64;
    let libraries = srv.scripts.library_count.load(Relaxed) as u64;
    let functions_bytes = srv.scripts.functions_bytes.load(Relaxed) as u64;
    t.push_str("# Memory\r\n");
    Section(t)
        .f("used_memory", m.used)
        .f("used_memory_human", human_bytes(m.used))
        .f("used_memory_rss", m.rss)
        .f("used_memory_rss_human", human_bytes(m.rss))
        .f("used_memory_peak", m.peak)
        .f("used_memory_peak_human", human_bytes(m.peak))
        .f(
            "used_memory_peak_perc",
            format_args!("{:.2}%", m.peak_perc()),
        )
        .f("used_memory_overhead", m.overhead())
        .f("used_memory_startup", m.startup)
        .f("used_memory_dataset", m.dataset)
        .f("shoal_keyspace_bytes", m.dataset)
        .f(
            "used_memory_dataset_perc",
            format_args!("{:.2}%", m.dataset_perc()),
        )
        .f("allocator_allocated", m.used)
        .f("allocator_active", active)
        .f("allocator_resident", resident)
        .f("total_system_memory", proc_info.total_system_memory_bytes)
        .f(
            "total_system_memory_human",
            human_bytes(proc_info.total_system_memory_bytes),
        )
        // The EVAL VM's heap and the cached scripts' source; the libraries' code.
        .f("used_memory_lua", vm_eval)
        .f("used_memory_vm_eval", vm_eval)
        .f("used_memory_lua_human", human_bytes(vm_eval))
        .f("used_memory_scripts_eval", scripts_eval)
        .f("number_of_cached_scripts", cached_scripts)
        .f("number_of_functions", functions)
        .f("number_of_libraries", libraries)
        .f("used_memory_vm_functions", 0)
        .f("used_memory_vm_total", vm_eval)
        .f("used_memory_vm_total_human", human_bytes(vm_eval))
        .f("used_memory_functions", functions_bytes)
        .f("used_memory_scripts", scripts_eval + functions_bytes)
        .f(
            "used_memory_scripts_human",
            human_bytes(scripts_eval + functions_bytes),
        )
        .f("maxmemory", max)
        .f("maxmemory_human", human_bytes(max))
        .f("maxmemory_policy", cfg.maxmemory_policy.name())
        .f(
            "allocator_frag_ratio",
            format_args!("{:.2}", ratio(active, m.used)),
        )
        .f("allocator_frag_bytes", active as i64 - m.used as i64)
        .f(
            "allocator_rss_ratio",
            format_args!("{:.2}", ratio(resident, active)),
        )
        .f("allocator_rss_bytes", resident as i64 - active as i64)
        .f(
            "rss_overhead_ratio",
            format_args!("{:.2}", ratio(m.rss, resident)),
        )
        .f("rss_overhead_bytes", m.rss as i64 - resident as i64)
        .f(
            "mem_fragmentation_ratio",
            format_args!("{:.2}", ratio(m.rss, m.used)),
        )
        .f("mem_fragmentation_bytes", m.rss as i64 - m.used as i64)
        // Everything counts against maxmemory, replica buffers included.
        .f(
            "mem_not_counted_for_evict",
            srv.mem_not_counted_for_evict.load(Relaxed),
        )
        .f("mem_replication_backlog", m.backlog)
        .f(
            "mem_total_replication_buffers",
            m.backlog + m.clients_replicas,
        )
        .f("mem_clients_slaves", m.clients_replicas)
        .f("mem_clients_normal", m.clients_normal)
        .f("mem_cluster_links", 0)
        .f("mem_aof_buffer", 0)
        .f(
            "mem_allocator",
            if m.allocator.name.is_empty() {
                "libc"
            } else {
                &m.allocator.name
            },
        )
        .f("active_defrag_running", 0)
        .f("lazyfree_pending_objects", srv.lazyfree.pending())
        .f("lazyfreed_objects", srv.lazyfree.freed());
}

fn persistence_section(srv: &ServerState, now_ms: u64, t: &mut String) {
    let p = &srv.persist;
    let a = &p.aof;
    let rewriting = a.rewriting.load(Relaxed);
    let saving = p.saving.load(Relaxed);
    t.push_str("# Persistence\r\n");
    Section(t)
        .f("loading", 0)
        .f("async_loading", 0)
        // Snapshots are written by a thread, not a forked child: no copy-on-write.
        .f("current_cow_peak", 0)
        .f("current_cow_size", 0)
        .f("current_cow_size_age", 0)
        .f("current_fork_perc", "0.00")
        .f("current_save_keys_processed", 0)
        .f("current_save_keys_total", 0)
        .f("rdb_changes_since_last_save", p.dirty())
        .f("rdb_bgsave_in_progress", saving as u8)
        .f(
            "rdb_last_save_time",
            match p.last_save_unix_s.load(Relaxed) {
                0 => srv.started_ms / 1000,
                t => t,
            },
        )
        .f(
            "rdb_last_bgsave_status",
            if p.last_save_failed.load(Relaxed) {
                "err"
            } else {
                "ok"
            },
        )
        .f(
            "rdb_last_bgsave_time_sec",
            match p.saves.load(Relaxed) {
                0 => -1,
                _ => p.last_save_duration_s.load(Relaxed),
            },
        )
        .f(
            "rdb_current_bgsave_time_sec",
            if saving {
                (now_ms.saturating_sub(p.save_started_ms.load(Relaxed)) / 1000) as i64
            } else {
                -1
            },
        )
        .f("rdb_saves", p.saves.load(Relaxed))
        .f("rdb_last_cow_size", 0)
        .f(
            "rdb_last_load_keys_expired",
            p.loaded_keys_expired.load(Relaxed),
        )
        .f("rdb_last_load_keys_loaded", p.loaded_keys.load(Relaxed))
        .f("aof_enabled", a.enabled.load(Relaxed) as u8)
        .f("aof_rewrite_in_progress", rewriting as u8)
        .f(
            "aof_rewrite_scheduled",
            a.rewrite_scheduled.load(Relaxed) as u8,
        )
        .f(
            "aof_last_rewrite_time_sec",
            a.last_rewrite_time_s.load(Relaxed),
        )
        .f(
            "aof_current_rewrite_time_sec",
            if rewriting {
                (now_ms.saturating_sub(a.rewrite_started_ms.load(Relaxed)) / 1000) as i64
            } else {
                -1
            },
        )
        .f(
            "aof_last_bgrewrite_status",
            if a.last_rewrite_failed.load(Relaxed) {
                "err"
            } else {
                "ok"
            },
        )
        .f("aof_rewrites", a.rewrites.load(Relaxed))
        .f(
            "aof_rewrites_consecutive_failures",
            a.rewrite_failures_consecutive.load(Relaxed),
        )
        .f(
            "aof_last_write_status",
            if a.last_write_failed.load(Relaxed) {
                "err"
            } else {
                "ok"
            },
        )
        // Rewrites run on a thread, not a forked child: no copy-on-write.
        .f("aof_last_cow_size", 0)
        .f("module_fork_in_progress", 0)
        .f("module_fork_last_cow_size", 0);
    if a.enabled.load(Relaxed) {
        let written = a.written_offset.load(Relaxed);
        let fsynced = a.fsynced_offset.load(Relaxed);
        Section(t)
            .f("aof_current_size", a.current_size.load(Relaxed))
            .f("aof_base_size", a.base_size.load(Relaxed))
            .f(
                "aof_pending_rewrite",
                a.rewrite_scheduled.load(Relaxed) as u8,
            )
            // The stream not yet written to the log waits in the backlog, not in a buffer.
            .f("aof_buffer_length", 0)
            .f("aof_pending_bio_fsync", (written > fsynced) as u8)
            .f("aof_delayed_fsync", a.delayed_fsync.load(Relaxed));
    }
}

fn stats_section(srv: &ServerState, t: &mut String) {
    let s = &srv.stats;
    let ks = srv.ks.stats();
    let kbps = |i: usize| {
        format!(
            "{:.2}",
            s.instantaneous_kbps_x100[i].load(Relaxed) as f64 / 100.0
        )
    };
    let c = &srv.repl.counters;
    t.push_str("# Stats\r\n");
    Section(t)
        .f(
            "total_connections_received",
            s.total_connections_received.load(Relaxed),
        )
        .f(
            "total_commands_processed",
            s.total_commands_processed.load(),
        )
        .f(
            "instantaneous_ops_per_sec",
            s.instantaneous_ops_per_sec.load(Relaxed),
        )
        .f("total_net_input_bytes", s.total_net_input_bytes.load())
        .f("total_net_output_bytes", s.total_net_output_bytes.load())
        .f(
            "total_net_repl_input_bytes",
            s.total_net_repl_input_bytes.load(Relaxed),
        )
        .f(
            "total_net_repl_output_bytes",
            s.total_net_repl_output_bytes.load(Relaxed),
        )
        .f("instantaneous_input_kbps", kbps(0))
        .f("instantaneous_output_kbps", kbps(1))
        .f("instantaneous_input_repl_kbps", kbps(2))
        .f("instantaneous_output_repl_kbps", kbps(3))
        .f("rejected_connections", s.rejected_connections.load(Relaxed))
        .f("sync_full", c.sync_full.load(Relaxed))
        .f("sync_partial_ok", c.sync_partial_ok.load(Relaxed))
        .f("sync_partial_err", c.sync_partial_err.load(Relaxed))
        // Hash fields expired (Redis 7.4's name).
        .f("expired_subkeys", ks.expired_fields)
        .f("expired_keys", ks.expired_keys)
        .f("expired_stale_perc", "0.00")
        .f(
            "expired_time_cap_reached_count",
            s.expired_time_cap_reached_count.load(Relaxed),
        )
        .f(
            "expire_cycle_cpu_milliseconds",
            s.expire_cycle_cpu_ms.load(Relaxed),
        )
        .f("evicted_keys", ks.evicted_keys)
        .f("evicted_clients", srv.client_eviction.evicted.load(Relaxed))
        .f("total_eviction_exceeded_time", 0)
        .f("current_eviction_exceeded_time", 0)
        .f("keyspace_hits", ks.keyspace_hits)
        .f("keyspace_misses", ks.keyspace_misses)
        .f("pubsub_channels", srv.pubsub.channels())
        .f("pubsub_patterns", srv.pubsub.patterns())
        .f("pubsubshard_channels", 0)
        .f("latest_fork_usec", 0)
        .f("total_forks", 0)
        .f("migrate_cached_sockets", 0)
        .f("slave_expires_tracked_keys", 0)
        .f("active_defrag_hits", 0)
        .f("active_defrag_misses", 0)
        .f("active_defrag_key_hits", 0)
        .f("active_defrag_key_misses", 0)
        .f("total_active_defrag_time", 0)
        .f("current_active_defrag_time", 0)
        .f("tracking_total_keys", srv.tracking.counts().1)
        .f("tracking_total_items", srv.tracking.counts().2)
        .f("tracking_total_prefixes", srv.tracking.counts().3)
        .f("unexpected_error_replies", 0)
        .f("total_error_replies", s.total_error_replies.load(Relaxed))
        .f("dump_payload_sanitizations", 0)
        .f("total_reads_processed", s.total_reads_processed.load())
        .f("total_writes_processed", s.total_writes_processed.load())
        .f("io_threaded_reads_processed", 0)
        .f("io_threaded_writes_processed", 0)
        .f("reply_buffer_shrinks", s.reply_buffer_shrinks.load(Relaxed))
        .f("reply_buffer_expands", s.reply_buffer_expands.load(Relaxed))
        .f(
            "client_query_buffer_limit_disconnections",
            s.client_query_limit_disconnections.load(Relaxed),
        )
        .f(
            "client_output_buffer_limit_disconnections",
            s.client_output_limit_disconnections.load(Relaxed),
        )
        .f("shoal_oom_rejections", s.oom_rejections.load(Relaxed))
        .f("shoal_leases_held", srv.leases.len())
        .f("shoal_lease_grants", srv.leases.granted.load(Relaxed))
        .f("shoal_lease_fills", srv.leases.filled.load(Relaxed))
        .f(
            "shoal_lease_refused_fills",
            srv.leases.refused.load(Relaxed),
        )
        .f("shoal_lease_drops", srv.leases.dropped.load(Relaxed))
        .f("shoal_hot_shard_claims", srv.ks.claims().counts().0)
        .f("shoal_hot_shard_moves", srv.ks.claims().counts().1);
}

fn cluster_section(srv: &ServerState, t: &mut String) {
    let _ = write!(
        t,
        "# Cluster\r\ncluster_enabled:{}\r\n",
        srv.cluster.is_some() as u8
    );
    if let Some(cl) = &srv.cluster {
        let g = cl.group.lock().expect("group info lock").clone();
        let opt = |v: Option<u64>| v.map_or_else(|| "-1".to_string(), |v| v.to_string());
        let _ = write!(
            t,
            "shoal_cluster_formed:{}\r\nshoal_raft_state:{}\r\nshoal_raft_term:{}\r\nshoal_raft_leader:{}\r\nshoal_raft_commit_index:{}\r\nshoal_raft_last_applied:{}\r\nshoal_raft_voters:{}\r\nshoal_raft_learners:{}\r\n",
            cl.formed.load(Relaxed) as u8,
            g.state,
            g.term,
            opt(g.leader),
            opt(g.commit_index),
            opt(g.last_applied),
            g.voters,
            g.learners,
        );
        let now = (srv.clock.mono_ms)();
        t.push_str(&crate::cluster::lease_lines(
            cl,
            &cl.config(),
            &cl.me(),
            now,
        ));
    }
}

fn info(ctx: &mut Ctx<'_>, args: &Args<'_>) -> CmdResult {
    let sections: Vec<String> = args
        .tail(1)
        .iter()
        .map(|a| String::from_utf8_lossy(a).to_ascii_lowercase())
        .collect();
    let text = info_text(ctx.srv, &sections, ctx.now_ms);
    ctx.out.verbatim(text.as_bytes());
    Ok(())
}

#[cfg(test)]
mod tests {
    use crate::tests::run;

    /// A fast command's spike is filed under `fast-command`, any other's under `command`, each
    /// stamped with the second the command ended in (as Redis records a sample then).
    #[test]
    fn latency_spikes_are_filed_by_fast_flag_at_the_end_second() {
        use crate::{Client, ClientHandle, Hooks, OwnedArgs, ServerState, config, table};
        use std::sync::atomic::Ordering::Relaxed;
        let srv = ServerState::new(config::Config::default(), 0, 7, Hooks::default());
        srv.hot.latency_threshold_ms.store(100, Relaxed);
        let h = std::sync::Arc::new(ClientHandle::new(1, "a:1".into(), "b:2".into(), 0));
        let c = Client::new(h, true);
        let get = OwnedArgs::new(["GET", "k"].iter());
        let lcs = OwnedArgs::new(["LCS", "a", "b"].iter());
        let spec = |name: &str| table::lookup(name.as_bytes()).expect("in the table");
        // Started at 1999.5 s, ran 0.8 s: ended in second 2000.
        super::record_slow(&srv, &c, spec("get"), &get.args(), 800_000, 1_999_500);
        super::record_slow(&srv, &c, spec("lcs"), &lcs.args(), 300_000, 1_999_500);
        // Under the threshold: not a spike.
        super::record_slow(&srv, &c, spec("lcs"), &lcs.args(), 99_000, 2_100_000);
        let l = srv.latency.lock().expect("latency lock");
        let seen: Vec<(&str, u64, u64)> = l
            .iter()
            .map(|(k, e)| (*k, e.latest().unix_s, e.latest().ms))
            .collect();
        assert_eq!(seen, [("command", 1999, 300), ("fast-command", 2000, 800)]);
    }

    #[test]
    fn config_get_set_round_trip_and_errors() {
        let r = run(&[
            &["CONFIG", "SET", "maxmemory", "10mb"],
            &["CONFIG", "GET", "maxmemory"],
            &["CONFIG", "SET", "maxmemory", "lots"],
            &["CONFIG", "SET", "databases", "4"],
            &["CONFIG", "SET", "nope", "1"],
            &["CONFIG", "GET", "maxmemory-p*"],
        ]);
        assert_eq!(r[0], "+OK\r\n");
        assert_eq!(r[1], "*2\r\n$9\r\nmaxmemory\r\n$8\r\n10485760\r\n");
        assert!(
            r[2].starts_with("-ERR CONFIG SET failed (possibly related to argument 'maxmemory')")
        );
        assert!(r[3].contains("can't set immutable config"));
        assert_eq!(
            r[4],
            "-ERR Unknown option or number of arguments for CONFIG SET - 'nope'\r\n"
        );
        assert_eq!(
            r[5],
            "*2\r\n$16\r\nmaxmemory-policy\r\n$15\r\nallkeys-tinylfu\r\n"
        );
    }

    /// A start-up parameter Redis does not refuse (`bind`, shoal's own) may be set to the value
    /// in force, nothing else; Redis's immutable ones are refused whatever the value.
    #[test]
    fn immutable_parameters_take_only_the_value_in_force() {
        let r = run(&[
            &["CONFIG", "SET", "bind", "127.0.0.1"],
            &["CONFIG", "SET", "bind", "0.0.0.0"],
            &["CONFIG", "SET", "threads", "0"],
            &["CONFIG", "SET", "threads", "3"],
            &["CONFIG", "SET", "databases", "16"],
            &["CONFIG", "SET", "bind", "127.0.0.1", "maxmemory", "1mb"],
            &["CONFIG", "GET", "maxmemory"],
        ]);
        assert_eq!(r[0], "+OK\r\n");
        assert!(
            r[1].contains("'bind') - can't set immutable config"),
            "{}",
            r[1]
        );
        assert_eq!(r[2], "+OK\r\n");
        assert!(
            r[3].contains("'threads') - can't set immutable config"),
            "{}",
            r[3]
        );
        assert!(
            r[4].contains("'databases') - can't set immutable config"),
            "{}",
            r[4]
        );
        assert_eq!(r[5], "+OK\r\n");
        assert_eq!(r[6], "*2\r\n$9\r\nmaxmemory\r\n$7\r\n1048576\r\n");
    }

    #[test]
    fn command_introspection() {
        let r = run(&[
            &["COMMAND", "GETKEYS", "MSET", "a", "1", "b", "2"],
            &["COMMAND", "GETKEYS", "PING"],
            &["COMMAND", "INFO", "get"],
            &["DBSIZE"],
        ]);
        assert_eq!(r[0], "*2\r\n$1\r\na\r\n$1\r\nb\r\n");
        assert_eq!(
            r[1],
            "-ERR wrong number of arguments for 'command|getkeys' command\r\n"
        );
        assert!(
            r[2].starts_with(
                "*1\r\n*10\r\n$3\r\nget\r\n:2\r\n*2\r\n+readonly\r\n+fast\r\n:1\r\n:1\r\n:1\r\n"
            ),
            "{}",
            r[2]
        );
        assert_eq!(r[3], ":0\r\n");
    }
}
