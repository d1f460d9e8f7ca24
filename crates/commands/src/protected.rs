//! The protected commands, DEBUG and MODULE, as Redis 7.0 guards them: `enable-debug-command` and
//! `enable-module-command` (`no` by default, `yes`, or `local` for loopback clients) decide whether
//! they run, with Redis's refusal text otherwise. MODULE LIST is always allowed and lists nothing
//! (shoal loads no modules); an allowed MODULE LOAD fails as a load of a missing library fails in
//! Redis. DEBUG has the subset clients' test suites use: HELP, SLEEP (the whole server waits, as in
//! Redis), OBJECT and SET-ACTIVE-EXPIRE; any other subcommand is unknown.

use std::sync::atomic::Ordering::Relaxed;

use crate::config::Protected;
use crate::table::{Group, Spec, flag::*};
use crate::{Args, CmdResult, Ctx, ReplyError};

/// The longest `DEBUG SLEEP` honoured, in seconds (a mistyped value cannot stop a node for days).
pub const DEBUG_SLEEP_MAX_S: f64 = 3600.0;

pub static COMMANDS: &[Spec] = &[
    Spec {
        name: "debug",
        arity: -2,
        flags: ADMIN | NOSCRIPT | LOADING | STALE,
        group: Group::Server,
        since: "1.0.0",
        summary: "A container for debugging commands.",
        handler: Some(debug),
        ..Spec::DEFAULT
    },
    Spec {
        name: "module",
        arity: -2,
        flags: 0,
        group: Group::Server,
        since: "4.0.0",
        summary: "A container for module commands.",
        subcommands: MODULE_SUBS,
        ..Spec::DEFAULT
    },
];

static MODULE_SUBS: &[Spec] = &[
    Spec {
        name: "module|help",
        arity: 2,
        flags: LOADING | STALE,
        group: Group::Server,
        since: "5.0.0",
        summary: "Returns helpful text about the different subcommands.",
        handler: Some(module_help),
        ..Spec::DEFAULT
    },
    Spec {
        name: "module|list",
        arity: 2,
        flags: ADMIN | NOSCRIPT,
        group: Group::Server,
        since: "4.0.0",
        summary: "Returns all loaded modules (shoal loads none).",
        tips: &["nondeterministic_output_order"],
        handler: Some(module_list),
        ..Spec::DEFAULT
    },
    Spec {
        name: "module|load",
        arity: -3,
        flags: ADMIN | NOSCRIPT | NO_ASYNC_LOADING,
        group: Group::Server,
        since: "4.0.0",
        summary: "Loads a module (shoal cannot load modules).",
        handler: Some(module_load),
        ..Spec::DEFAULT
    },
    Spec {
        name: "module|loadex",
        arity: -3,
        flags: ADMIN | NOSCRIPT | NO_ASYNC_LOADING,
        group: Group::Server,
        since: "7.0.0",
        summary: "Loads a module using extended parameters (shoal cannot load modules).",
        handler: Some(module_load),
        ..Spec::DEFAULT
    },
    Spec {
        name: "module|unload",
        arity: 3,
        flags: ADMIN | NOSCRIPT | NO_ASYNC_LOADING,
        group: Group::Server,
        since: "4.0.0",
        summary: "Unloads a module.",
        handler: Some(module_unload),
        ..Spec::DEFAULT
    },
];

/// Redis's refusal when a protected command is not enabled for this client.
fn refused(what: &str, option: &str) -> ReplyError {
    ReplyError::err(format!(
        "{what} command not allowed. If the {option} option is set to \"local\", you can run it from a local connection, otherwise you need to set this option in the configuration file, and then restart the server."
    ))
}

fn allowed(ctx: &Ctx<'_>, setting: Protected) -> bool {
    setting.allows(&ctx.client.handle.addr)
}

fn module_help(ctx: &mut Ctx<'_>, _args: &Args<'_>) -> CmdResult {
    let lines = [
        "MODULE <subcommand> [<arg> [value] [opt] ...]. Subcommands are:",
        "LIST",
        "    Return a list of loaded modules.",
        "LOAD <path> [<arg> ...]",
        "    Load a module library from <path>, passing to it any optional arguments.",
        "LOADEX <path> [[CONFIG NAME VALUE] [CONFIG NAME VALUE]] [ARGS ...]",
        "    Load a module library from <path>, while passing it module configurations and optional arguments.",
        "UNLOAD <name>",
        "    Unload a module.",
        "HELP",
        "    Prints this help.",
    ];
    ctx.out.array(lines.len());
    for l in lines {
        ctx.out.simple(l);
    }
    Ok(())
}

fn module_list(ctx: &mut Ctx<'_>, _args: &Args<'_>) -> CmdResult {
    ctx.out.array(0);
    Ok(())
}

fn module_load(ctx: &mut Ctx<'_>, _args: &Args<'_>) -> CmdResult {
    if !allowed(ctx, ctx.srv.config().enable_module_command) {
        return Err(refused("MODULE", "enable-module-command"));
    }
    // No library can be loaded into shoal: the reply of a load that failed.
    Err(ReplyError::err_static(
        "Error loading the extension. Please check the server logs.",
    ))
}

fn module_unload(ctx: &mut Ctx<'_>, _args: &Args<'_>) -> CmdResult {
    if !allowed(ctx, ctx.srv.config().enable_module_command) {
        return Err(refused("MODULE", "enable-module-command"));
    }
    Err(ReplyError::err_static(
        "Error unloading module: no such module with that name",
    ))
}

fn debug(ctx: &mut Ctx<'_>, args: &Args<'_>) -> CmdResult {
    if !allowed(ctx, ctx.srv.config().enable_debug_command) {
        return Err(refused("DEBUG", "enable-debug-command"));
    }
    let sub = args.get(1);
    if sub.eq_ignore_ascii_case(b"help") {
        let lines = [
            "DEBUG <subcommand> [<arg> [value] [opt] ...]. Subcommands are:",
            "OBJECT <key>",
            "    Show low level info about the `key` and associated value.",
            "SET-ACTIVE-EXPIRE <0|1>",
            "    Setting it to 0 disables expiring keys in the background when they are not",
            "    accessed (otherwise the Redis behavior). Setting it to 1 reenables back the",
            "    default.",
            "SLEEP <seconds>",
            "    Stop the server for <seconds>. Decimals allowed.",
            "HELP",
            "    Prints this help.",
        ];
        ctx.out.array(lines.len());
        for l in lines {
            ctx.out.simple(l);
        }
        return Ok(());
    }
    if sub.eq_ignore_ascii_case(b"sleep") && args.len() == 3 {
        // Redis reads the seconds with strtod and no check: anything else is 0.
        let secs = std::str::from_utf8(args.get(2))
            .ok()
            .and_then(|s| s.trim_start().parse::<f64>().ok())
            .filter(|s| s.is_finite() && *s > 0.0)
            .unwrap_or(0.0)
            .min(DEBUG_SLEEP_MAX_S);
        if secs > 0.0 {
            // The whole server waits, as Redis's single thread does: hold the exec gate alone.
            let _alone = if ctx.gate.is_some() {
                ctx.gate = None;
                Some(ctx.srv.gate.exclusive())
            } else {
                None
            };
            (ctx.srv.hooks.sleep)(std::time::Duration::from_secs_f64(secs));
        }
        ctx.out.ok();
        return Ok(());
    }
    if sub.eq_ignore_ascii_case(b"set-active-expire") && args.len() == 3 {
        let on = crate::args::parse_i64(args.get(2)).ok_or(crate::args::ERR_NOT_INTEGER)?;
        ctx.srv.hot.active_expire_off.store(on == 0, Relaxed);
        ctx.out.ok();
        return Ok(());
    }
    if sub.eq_ignore_ascii_case(b"object") && args.len() == 3 {
        let key = args.get(2);
        let (db, now) = (ctx.db(), ctx.now_ms);
        let (mut shard, slot) = ctx.shard(key);
        let line = shard.lookup(db, slot, key, now, false).map(|e| {
            let idle = shoal_keyspace::evict::lru_idle_s(e.access(), now);
            let lru = shoal_keyspace::evict::lru_clock(now).wrapping_sub(idle as u32) & 0xff_ffff;
            format!(
                "Value at:{:p} refcount:1 encoding:{} serializedlength:{} lru:{lru} lru_seconds_idle:{idle}",
                &*e as *const shoal_keyspace::Entry,
                e.encoding(),
                crate::keys::dump_value(&e).len(),
            )
        });
        drop(shard);
        return match line {
            Some(l) => {
                ctx.out.simple(&l);
                Ok(())
            }
            None => Err(ReplyError::err_static("no such key")),
        };
    }
    Err(ReplyError::err(format!(
        "unknown subcommand or wrong number of arguments for '{}'. Try DEBUG HELP.",
        args.str_lossy(1)
    )))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn local_means_loopback_peers() {
        assert!(Protected::Local.allows("127.0.0.1:5000"));
        assert!(Protected::Local.allows("[::1]:5000"));
        assert!(!Protected::Local.allows("10.0.0.1:5000"));
        // Redis's `islocalClient`: the loopback address itself, not all of 127.0.0.0/8.
        assert!(!Protected::Local.allows("127.0.0.2:5000"));
        assert!(Protected::Yes.allows("10.0.0.1:5000"));
        assert!(!Protected::No.allows("127.0.0.1:5000"));
    }
}
