//! The Lua 5.1 VM behind EVAL and FCALL (`mlua`, vendored Lua 5.1): its sandbox
//! (`sandbox.lua`), the `redis` library, and the conversions between RESP and Lua values that
//! Redis 7.0 defines (`script_lua.c`): integers, bulk strings, nil as `false`, status and error
//! tables, RESP3 maps, sets, doubles, big numbers, verbatim strings, nulls and booleans.
//!
//! A script calls commands through `redis.call` / `redis.pcall`, which run them through the
//! command table like EXEC's queued commands ([`crate::run_in_exec`]): the script already holds
//! the exec gate alone. The calling client's state is what the commands see (its database, with
//! the reply protocol the script chose with `redis.setresp`); SELECT inside a script lasts for
//! the script only.

use std::cell::RefCell;
use std::collections::HashMap;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64};
use std::sync::{Arc, OnceLock};

use mlua::chunk::ChunkMode;
use mlua::{Function, HookTriggers, Lua, LuaOptions, MultiValue, StdLib, Table, Value, VmState};
use shoal_resp::{Protocol, ReplyWriter};

use crate::args::OwnedArgs;
use crate::table::{self, Spec, flag};
use crate::{Ctx, ReplyError};

use super::libs;

/// The chunk name of shoal's own Lua code: error positions skip its frames.
const INTERNAL_SOURCE: &str = "=shoal";
/// The chunk name of scripts (error positions read `user_script:<line>`).
pub const USER_SOURCE: &str = "@user_script";
/// The kill check runs every this many VM instructions (as Redis's count hook).
const HOOK_INSTRUCTIONS: u32 = 100_000;
/// A script running this long asks the node to move the runtime's duties off its thread
/// ([`Watch::offload`]), so the connections that must be answered `-BUSY` meanwhile are served.
pub const OFFLOAD_AFTER_MS: u64 = 2;
/// Times a running script asks for that (each ask may not take: see the server's hook).
pub const OFFLOAD_ATTEMPTS_MAX: u32 = 3;
/// The message a killed script fails with (its `err` field).
pub const KILLED: &str = "ERR Script killed by user with SCRIPT KILL...";
/// The message of a library load that ran past [`LOAD_TIMEOUT_MS`].
pub const LOAD_TIMEOUT: &str = "FUNCTION LOAD timeout";
/// How long a library's code may run while it loads (Redis's limit).
pub const LOAD_TIMEOUT_MS: u64 = 500;
/// The message a killed function fails with (Redis 7.0 names SCRIPT KILL there too).
pub const KILLED_FUNCTION: &str = KILLED;
/// Nesting of a script's reply beyond which Redis gives up ("reached lua stack limit").
const REPLY_DEPTH_MAX: usize = 1000;
/// Stack levels the error handler looks through for the script's own position.
const ERROR_LEVELS_MAX: usize = 64;
/// `redis.REDIS_VERSION_NUM` of 7.0.15.
const VERSION_NUM: i64 = 0x07_00_0f;

/// Script flags (the `#!lua flags=...` shebang, or a function's `flags`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ScriptFlags {
    pub no_writes: bool,
    pub allow_oom: bool,
    pub allow_stale: bool,
    pub no_cluster: bool,
    pub allow_cross_slot: bool,
    /// A script without a shebang (EVAL's compatibility mode): may write, checks memory per
    /// write.
    pub legacy: bool,
}

impl ScriptFlags {
    /// Parses one flag name; `false` when unknown.
    pub fn set(&mut self, name: &[u8]) -> bool {
        match name {
            b"no-writes" => self.no_writes = true,
            b"allow-oom" => self.allow_oom = true,
            b"allow-stale" => self.allow_stale = true,
            b"no-cluster" => self.no_cluster = true,
            b"allow-cross-slot-keys" => self.allow_cross_slot = true,
            _ => return false,
        }
        true
    }

    /// The names of the set flags, in Redis's order.
    pub fn names(&self) -> Vec<&'static str> {
        let mut v = Vec::new();
        if self.no_writes {
            v.push("no-writes");
        }
        if self.allow_oom {
            v.push("allow-oom");
        }
        if self.allow_stale {
            v.push("allow-stale");
        }
        if self.no_cluster {
            v.push("no-cluster");
        }
        if self.allow_cross_slot {
            v.push("allow-cross-slot-keys");
        }
        v
    }
}

/// One VM with its sandbox.
pub struct Engine {
    pub lua: Lua,
    /// The hidden globals table (KEYS and ARGV are set here).
    globals: Table,
    /// shoal's internal table (the sandbox's helpers: `set_load_api`, `bind`).
    internal: Table,
    /// Monotonic ms after which the running library load fails (0: none).
    load_deadline_ms: Arc<AtomicU64>,
    xpcall: Function,
    handler: Function,
}

/// The PRNG behind `math.random` (Redis's `redisLrand48`: the 48-bit `lrand48` generator, whose
/// sequence goes on across scripts and SCRIPT FLUSH: one per node).
#[derive(Debug)]
pub struct Rand48 {
    x: u64,
}

impl Default for Rand48 {
    fn default() -> Self {
        Rand48 {
            x: 0x1234_ABCD_330E,
        }
    }
}

impl Rand48 {
    pub fn seed(&mut self, seed: i32) {
        self.x = ((seed as u32 as u64) << 16) | 0x330E;
    }

    pub fn draw(&mut self) -> i32 {
        self.x = (self.x.wrapping_mul(0x5_DEEC_E66D).wrapping_add(0xB)) & ((1 << 48) - 1);
        (self.x >> 17) as i32
    }
}

/// What a VM's instruction hook watches while a script runs: a kill request, and how long the
/// script has run (to ask for its thread to be taken off the runtime once it runs long).
#[derive(Clone)]
pub struct Watch {
    /// SCRIPT KILL / FUNCTION KILL asked the script to stop.
    pub kill: Arc<AtomicBool>,
    /// Monotonic ms the running script started; 0 when none runs.
    pub since_ms: Arc<AtomicU64>,
    /// Offload asks made for the running script (reset when one starts).
    pub offloads: Arc<AtomicU32>,
    /// Set by the server: moves the runtime's duties off the calling thread (a no-op where
    /// there is no runtime, as in unit tests).
    pub offload: Arc<OnceLock<fn()>>,
    pub mono_ms: fn() -> u64,
}

impl Watch {
    /// Called by the hook: asks for the offload once the script has run [`OFFLOAD_AFTER_MS`].
    fn long_running_check(&self) {
        let since = self.since_ms.load(Relaxed);
        if since == 0
            || self.offloads.load(Relaxed) >= OFFLOAD_ATTEMPTS_MAX
            || (self.mono_ms)().saturating_sub(since) < OFFLOAD_AFTER_MS
        {
            return;
        }
        if let Some(offload) = self.offload.get() {
            self.offloads.fetch_add(1, Relaxed);
            offload();
        }
    }
}

impl Engine {
    /// A new VM: libraries, sandbox, the hook reading `watch`.
    pub fn new(
        watch: Watch,
        killed_msg: &'static str,
        rand: Arc<std::sync::Mutex<Rand48>>,
    ) -> mlua::Result<Engine> {
        let kill = watch.kill.clone();
        let mono_ms = watch.mono_ms;
        let lua = Lua::new_with(
            StdLib::TABLE | StdLib::STRING | StdLib::MATH,
            LuaOptions::default(),
        )?;
        let g = lua.globals();
        g.raw_set("redis", redis_lib(&lua)?)?;
        g.raw_set("bit", libs::bit::open(&lua)?)?;
        g.raw_set("struct", libs::structlib::open(&lua)?)?;
        g.raw_set("cjson", libs::cjson::open(&lua)?)?;
        g.raw_set("cmsgpack", libs::cmsgpack::open(&lua)?)?;
        let math: Table = g.raw_get("math")?;
        let r = rand.clone();
        math.raw_set(
            "random",
            lua.create_function(move |_, args: MultiValue| {
                let v = r.lock().unwrap_or_else(|e| e.into_inner()).draw();
                let x = (v % i32::MAX) as f64 / i32::MAX as f64;
                let int = |i: usize| -> mlua::Result<i64> {
                    match args.get(i) {
                        Some(Value::Integer(n)) => Ok(*n as i32 as i64),
                        Some(Value::Number(n)) => Ok(*n as i32 as i64),
                        Some(Value::String(s)) => s
                            .to_str()
                            .ok()
                            .and_then(|s| s.trim().parse::<f64>().ok())
                            .map(|n| n as i32 as i64)
                            .ok_or_else(|| bad_arg(i + 1, "random", "number expected")),
                        _ => Err(bad_arg(i + 1, "random", "number expected")),
                    }
                };
                match args.len() {
                    0 => Ok(Value::Number(x)),
                    1 => {
                        let u = int(0)?;
                        if u < 1 {
                            return Err(bad_arg(1, "random", "interval is empty"));
                        }
                        Ok(Value::Number((x * u as f64).floor() + 1.0))
                    }
                    2 => {
                        let (l, u) = (int(0)?, int(1)?);
                        if l > u {
                            return Err(bad_arg(2, "random", "interval is empty"));
                        }
                        Ok(Value::Number((x * (u - l + 1) as f64).floor() + l as f64))
                    }
                    _ => Err(mlua::Error::runtime("wrong number of arguments")),
                }
            })?,
        )?;
        let r = rand;
        math.raw_set(
            "randomseed",
            lua.create_function(move |_, seed: f64| {
                r.lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .seed(seed as i32);
                Ok(())
            })?,
        )?;
        let internal = lua.create_table()?;
        let globals: Table = lua
            .load(include_str!("sandbox.lua"))
            .set_name(INTERNAL_SOURCE)
            .set_mode(ChunkMode::Text)
            .call(internal.clone())?;
        let xpcall: Function = internal.raw_get("xpcall")?;
        let handler = lua.create_function(error_handler)?;
        let load_deadline_ms = Arc::new(AtomicU64::new(0));
        let deadline = load_deadline_ms.clone();
        lua.set_hook(
            HookTriggers::new().every_nth_instruction(HOOK_INSTRUCTIONS),
            move |_, _| {
                if kill.load(Relaxed) {
                    return Err(mlua::Error::runtime(killed_msg));
                }
                watch.long_running_check();
                let d = deadline.load(Relaxed);
                if d != 0 && mono_ms() > d {
                    return Err(mlua::Error::runtime(LOAD_TIMEOUT));
                }
                Ok(VmState::Continue)
            },
        )?;
        Ok(Engine {
            lua,
            globals,
            internal,
            load_deadline_ms,
            xpcall,
            handler,
        })
    }

    /// Compiles a script body (named `@user_script`). The error is Lua's message.
    pub fn compile(&self, body: &[u8], name: &str) -> Result<Function, String> {
        self.lua
            .load(body)
            .set_name(name)
            .set_mode(ChunkMode::Text)
            .into_function()
            .map_err(|e| match e {
                mlua::Error::SyntaxError { message, .. } => message,
                other => other.to_string(),
            })
    }

    /// Sets the KEYS and ARGV globals.
    pub fn set_keys_argv(&self, keys: &[&[u8]], argv: &[&[u8]]) -> mlua::Result<()> {
        let array = |items: &[&[u8]]| -> mlua::Result<Table> {
            let t = self.lua.create_table_with_capacity(items.len(), 0)?;
            for (i, a) in items.iter().enumerate() {
                t.raw_set(i + 1, self.lua.create_string(a)?)?;
            }
            Ok(t)
        };
        self.globals.raw_set("KEYS", array(keys)?)?;
        self.globals.raw_set("ARGV", array(argv)?)?;
        Ok(())
    }

    pub fn globals(&self) -> &Table {
        &self.globals
    }

    /// Makes this VM a functions VM: `redis.register_function` and the logging API are what a
    /// library's code sees while it loads.
    pub fn install_load_api(&self) -> mlua::Result<()> {
        let redis: Table = self.globals.raw_get("redis")?;
        let real: Table = match redis.metatable() {
            Some(m) => m.raw_get("__index")?,
            None => redis,
        };
        let r = self.lua.create_table()?;
        for k in [
            "log",
            "LOG_DEBUG",
            "LOG_VERBOSE",
            "LOG_NOTICE",
            "LOG_WARNING",
            "REDIS_VERSION",
            "REDIS_VERSION_NUM",
            "setresp",
        ] {
            r.raw_set(k, real.raw_get::<Value>(k)?)?;
        }
        r.raw_set(
            "register_function",
            self.lua
                .create_function(super::functions::register_function)?,
        )?;
        self.internal
            .get::<Function>("install_load_api")?
            .call::<()>(r)
    }

    /// Runs a library's code with the load-time globals, within [`LOAD_TIMEOUT_MS`] from
    /// `now_mono_ms`. `Err` is the error table's message.
    pub fn run_load(&self, f: &Function, now_mono_ms: u64) -> Result<(), String> {
        let set: Function = self
            .internal
            .get("set_load_api")
            .map_err(|e| e.to_string())?;
        let _ = set.call::<()>(true);
        self.load_deadline_ms
            .store(now_mono_ms + LOAD_TIMEOUT_MS, Relaxed);
        let r = self
            .xpcall
            .call::<MultiValue>((f.clone(), self.handler.clone()));
        self.load_deadline_ms.store(0, Relaxed);
        let _ = set.call::<()>(false);
        let mut r = r.map_err(|e| error_text(&e))?.into_iter();
        if matches!(r.next(), Some(Value::Boolean(true))) {
            return Ok(());
        }
        Err(match r.next() {
            Some(Value::Table(t)) => t
                .raw_get::<String>("err")
                .unwrap_or_else(|_| "ERR execution failure".into()),
            _ => "ERR execution failure".into(),
        })
    }

    /// `f(keys, args)` as a function of no arguments (what xpcall runs).
    pub fn bind(&self, f: &Function, keys: &[&[u8]], args: &[&[u8]]) -> mlua::Result<Function> {
        let array = |items: &[&[u8]]| -> mlua::Result<Table> {
            let t = self.lua.create_table_with_capacity(items.len(), 0)?;
            for (i, a) in items.iter().enumerate() {
                t.raw_set(i + 1, self.lua.create_string(a)?)?;
            }
            Ok(t)
        };
        self.internal
            .get::<Function>("bind")?
            .call((f.clone(), array(keys)?, array(args)?))
    }

    /// Runs `f` with `args` (protected, through the error handler), letting it call commands
    /// through `run`. `Ok(value)` or `Err(error table)`.
    pub fn run(
        &self,
        run: &RefCell<RunCtx<'_, '_>>,
        f: &Function,
        args: MultiValue,
        resp: impl Fn(&Engine) -> u8,
    ) -> mlua::Result<(Result<Value, Value>, u8)> {
        self.lua.set_app_data(RunOpts { resp: 2, repl: 3 });
        let r = self.lua.scope(|scope| {
            let raw = scope.create_function(|lua, args: MultiValue| {
                let mut rc = run.borrow_mut();
                match call_command(lua, &mut rc, args)? {
                    Ok(v) => Ok((true, v)),
                    Err(t) => Ok((false, Value::Table(t))),
                }
            })?;
            self.lua.set_named_registry_value(CALL_KEY, raw)?;
            let target = f.clone();
            let _ = args;
            let mut r = self
                .xpcall
                .call::<MultiValue>((target, self.handler.clone()))?
                .into_iter();
            self.lua.unset_named_registry_value(CALL_KEY)?;
            let ok = matches!(r.next(), Some(Value::Boolean(true)));
            let v = r.next().unwrap_or(Value::Nil);
            Ok((if ok { Ok(v) } else { Err(v) }, resp(self)))
        });
        self.lua.remove_app_data::<RunOpts>();
        r
    }

    /// The protocol the running script chose (`redis.setresp`).
    pub fn resp(&self) -> u8 {
        self.lua.app_data_ref::<RunOpts>().map_or(2, |o| o.resp)
    }
}

fn bad_arg(n: usize, fname: &str, msg: &str) -> mlua::Error {
    mlua::Error::runtime(format!("bad argument #{n} to '{fname}' ({msg})"))
}

/// The message of an error value as Lua's `tostring` shows it (mlua's wrapped errors unwrapped).
pub fn error_text(e: &mlua::Error) -> String {
    match e {
        mlua::Error::RuntimeError(m) => m.clone(),
        mlua::Error::CallbackError { cause, .. } => error_text(cause),
        mlua::Error::SyntaxError { message, .. } => message.clone(),
        mlua::Error::MemoryError(m) => m.clone(),
        other => other.to_string(),
    }
}

/// The handler every script runs under: turns any error into Redis's error table
/// `{err=..., source=..., line=...}`, the position being the script's (not a C function's nor
/// shoal's own Lua).
fn error_handler(lua: &Lua, err: Value) -> mlua::Result<Table> {
    let t = match err {
        Value::Table(t) => t,
        other => {
            let msg = match &other {
                Value::Error(e) => {
                    let text = error_text(e);
                    if let Some(t) = RaisedTable::take(lua, &text) {
                        return with_position(lua, t);
                    }
                    // The kill error carries its own code.
                    if text == KILLED {
                        let t = lua.create_table()?;
                        t.raw_set("err", text)?;
                        return with_position(lua, t);
                    }
                    // A Rust function's error reads as `luaL_error`'s: with the caller's
                    // position.
                    match user_position(lua) {
                        Some((src, line)) => format!("ERR {src}:{line}: {text}"),
                        None => format!("ERR {text}"),
                    }
                }
                Value::String(s) => format!("ERR {}", s.to_string_lossy()),
                Value::Integer(i) => format!("ERR {i}"),
                Value::Number(n) => format!("ERR {}", lua_number_text(*n)),
                Value::Nil => "ERR nil".into(),
                Value::Boolean(b) => format!("ERR {b}"),
                _ => "ERR (error object is not a string)".into(),
            };
            let t = lua.create_table()?;
            t.raw_set("err", msg)?;
            t
        }
    };
    with_position(lua, t)
}

/// The first frame of the script's own code: its short source name and line.
fn user_position(lua: &Lua) -> Option<(String, usize)> {
    for level in 1..ERROR_LEVELS_MAX {
        let found = lua.inspect_stack(level, |d| {
            let s = d.source();
            let source = s.source.as_deref().unwrap_or("").to_string();
            if s.what == "C" || s.what == "tail" || source == INTERNAL_SOURCE {
                None
            } else {
                let short = s.short_src.as_deref().unwrap_or("").to_string();
                Some((short, d.current_line().unwrap_or(0)))
            }
        })?;
        if found.is_some() {
            return found;
        }
    }
    None
}

/// Adds the script's position (`source`, `line`) to an error table.
fn with_position(lua: &Lua, t: Table) -> mlua::Result<Table> {
    for level in 1..ERROR_LEVELS_MAX {
        let Some(found) = lua.inspect_stack(level, |d| {
            let s = d.source();
            let source = s.source.as_deref().unwrap_or("").to_string();
            if s.what == "C" || s.what == "tail" || source == INTERNAL_SOURCE {
                None
            } else {
                Some((source, d.current_line()))
            }
        }) else {
            break;
        };
        if let Some((source, line)) = found {
            t.raw_set("source", source)?;
            if let Some(line) = line {
                t.raw_set("line", line as i64)?;
            }
            break;
        }
    }
    Ok(t)
}

/// A Lua number as `tostring` shows it (`%.14g`).
pub fn lua_number_text(n: f64) -> String {
    libs::fmt_g(n, 14)
}

/// What a script changes about how its commands run (`redis.setresp`, `redis.set_repl`); in the
/// VM's app data while a script runs.
#[derive(Debug, Clone, Copy)]
pub struct RunOpts {
    pub resp: u8,
    /// `REPL_*` flags: without `REPL_REPLICA` (2) the commands' effects are not replicated.
    pub repl: u8,
}

/// What a running script's commands run with.
pub struct RunCtx<'c, 'a> {
    pub ctx: &'c mut Ctx<'a>,
    pub flags: ScriptFlags,
    /// EVAL_RO / FCALL_RO.
    pub read_only_call: bool,
    /// Memory was over `maxmemory` when the script started (writes refused until the first).
    pub oom_at_start: bool,
    /// The script has written (it can no longer be killed).
    pub wrote: bool,
    /// The database the script's commands use (SELECT inside a script changes only this).
    pub db: usize,
    /// The keys the script declared (cluster checks).
    pub declared_slot: Option<u16>,
    /// Set while the script is alive (the busy marker's "has written").
    pub wrote_flag: &'c AtomicBool,
}

/// `redis.call` / `redis.pcall`: checks the command as Redis checks a script's command
/// (`scriptCall`), runs it, converts the reply. `Err(table)` is the error table.
fn call_command(
    lua: &Lua,
    rc: &mut RunCtx<'_, '_>,
    args: MultiValue,
) -> mlua::Result<Result<Value, Table>> {
    // The first argument is the raise flag the wrapper passes.
    if args.len() <= 1 {
        return Ok(Err(error_table(
            lua,
            "ERR Please specify at least one argument for this redis lib call",
        )?));
    }
    let mut argv: Vec<Vec<u8>> = Vec::with_capacity(args.len() - 1);
    for a in args.iter().skip(1) {
        match a {
            Value::String(s) => argv.push(s.as_bytes().to_vec()),
            Value::Integer(i) => argv.push(i.to_string().into_bytes()),
            Value::Number(n) => argv.push(number_arg(*n).into_bytes()),
            _ => {
                return Ok(Err(error_table(
                    lua,
                    "ERR Lua redis lib command arguments must be strings or integers",
                )?));
            }
        }
    }
    let owned = OwnedArgs::new(argv.iter());
    let a = owned.args();
    let spec = match lookup(&a) {
        Some(s) => s,
        None => {
            return Ok(Err(error_table(
                lua,
                "ERR Unknown Redis command called from script",
            )?));
        }
    };
    if !spec.arity_ok(a.len()) {
        return Ok(Err(error_table(
            lua,
            "ERR Wrong number of args calling Redis command from script",
        )?));
    }
    if spec.has(flag::NOSCRIPT) {
        return Ok(Err(error_table(
            lua,
            "ERR This Redis command is not allowed from script",
        )?));
    }
    let srv = rc.ctx.srv;
    if spec.has(flag::WRITE) {
        if rc.read_only_call || rc.flags.no_writes {
            return Ok(Err(error_table(
                lua,
                "ERR Write commands are not allowed from read-only scripts.",
            )?));
        }
        if srv.repl.is_replica() && srv.hot.replica_read_only.load(Relaxed) {
            return Ok(Err(error_table(lua, &ReplyError::ReadOnly.to_string())?));
        }
    }
    if !rc.flags.allow_oom && !rc.wrote && rc.oom_at_start && spec.has(flag::DENYOOM) {
        return Ok(Err(error_table(lua, &ReplyError::Oom.to_string())?));
    }
    if let Some(e) = super::cluster_check(rc, spec, &a) {
        return Ok(Err(error_table(lua, &e)?));
    }
    if crate::tier::script_needs_fetch(srv, rc.db, spec, &a) {
        return Ok(Err(error_table(lua, crate::tier::SCRIPT_COLD_ERROR)?));
    }
    if spec.has(flag::WRITE) {
        rc.wrote = true;
        rc.wrote_flag.store(true, Relaxed);
    }
    let opts = lua
        .app_data_ref::<RunOpts>()
        .map_or(RunOpts { resp: 2, repl: 3 }, |o| *o);
    // Effects of commands the script asked not to replicate are dropped: what earlier commands
    // queued goes out first.
    let unreplicated = opts.repl & 2 == 0 && spec.has(flag::WRITE);
    if unreplicated {
        crate::effects::emit_logged(srv, rc.ctx.now_ms);
    }
    // Run it as the script's client: its database, the script's protocol.
    let client = &mut *rc.ctx.client;
    let (saved_db, saved_proto) = (client.db, client.proto);
    client.db = rc.db;
    client.proto = if opts.resp == 3 {
        Protocol::Resp3
    } else {
        Protocol::Resp2
    };
    let mut out = Vec::new();
    crate::run_in_exec(srv, client, spec, &a, &mut out, rc.ctx.now_ms);
    if unreplicated {
        crate::effects::discard_logged(srv);
    }
    rc.db = client.db;
    client.db = saved_db;
    client.proto = saved_proto;
    let mut pos = 0;
    let v = resp_to_lua(lua, &out, &mut pos, 0)?;
    match v {
        Converted::Error(line) => Ok(Err(error_table(lua, &line)?)),
        Converted::Value(v) => Ok(Ok(v)),
    }
}

/// The command a script names (subcommands included), as Redis's `lookupCommand`.
fn lookup(a: &crate::Args<'_>) -> Option<&'static Spec> {
    let spec = table::lookup(a.get(0))?;
    if !spec.subcommands.is_empty() && (a.len() >= 2 || spec.handler.is_none()) {
        if a.len() < 2 {
            return Some(spec);
        }
        return spec.find_sub(a.get(1));
    }
    Some(spec)
}

/// A number passed to a command: an integer if it is one, else `%.17g`.
fn number_arg(n: f64) -> String {
    if n.fract() == 0.0 && n.abs() < 9.2e18 {
        (n as i64).to_string()
    } else {
        libs::fmt_g(n, 17)
    }
}

/// Redis's error table for an error line (`CODE msg`, or a message that gets `ERR`).
pub fn error_table(lua: &Lua, line: &str) -> mlua::Result<Table> {
    let t = lua.create_table()?;
    t.raw_set("err", error_line(line))?;
    Ok(t)
}

/// Normalises an error the way Redis's `luaPushErrorBuff` does: a leading `-` is dropped (its
/// first word is the code), a message without one gets `ERR`; trailing CR/LF are trimmed.
pub fn error_line(line: &str) -> String {
    let line = line.trim_end_matches(['\r', '\n']);
    match line.strip_prefix('-') {
        Some(rest) => match rest.split_once(' ') {
            Some((code, msg)) => format!("{code} {}", msg.trim_matches(['\r', '\n'])),
            None => format!("ERR {rest}"),
        },
        None => line.to_string(),
    }
}

enum Converted {
    Value(Value),
    /// An error reply (its line without `-`).
    Error(String),
}

fn line_at(buf: &[u8], pos: &mut usize) -> Vec<u8> {
    let start = *pos;
    let end = buf[start..]
        .windows(2)
        .position(|w| w == b"\r\n")
        .map_or(buf.len(), |i| start + i);
    *pos = (end + 2).min(buf.len());
    buf[start..end].to_vec()
}

fn num(b: &[u8]) -> i64 {
    std::str::from_utf8(b)
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0)
}

/// Converts one RESP reply (shoal's own output) at `pos` into a Lua value, as Redis converts a
/// command's reply for a script (RESP2 or RESP3).
fn resp_to_lua(lua: &Lua, buf: &[u8], pos: &mut usize, depth: usize) -> mlua::Result<Converted> {
    if *pos >= buf.len() {
        return Ok(Converted::Value(Value::Boolean(false)));
    }
    let kind = buf[*pos];
    *pos += 1;
    let l = line_at(buf, pos);
    let single = |t: &str, v: Value| -> mlua::Result<Converted> {
        let tb = lua.create_table()?;
        tb.raw_set(t, v)?;
        Ok(Converted::Value(Value::Table(tb)))
    };
    Ok(match kind {
        b'+' => return single("ok", Value::String(lua.create_string(&l)?)),
        b'-' => {
            if depth == 0 {
                Converted::Error(String::from_utf8_lossy(&l).into_owned())
            } else {
                // An error inside an array (EXEC-like replies): an error table.
                let tb = error_table(lua, &format!("-{}", String::from_utf8_lossy(&l)))?;
                Converted::Value(Value::Table(tb))
            }
        }
        b':' => Converted::Value(Value::Number(num(&l) as f64)),
        b'$' | b'=' => {
            let n = num(&l);
            if n < 0 {
                return Ok(Converted::Value(Value::Boolean(false)));
            }
            let n = n as usize;
            let data = &buf[*pos..*pos + n];
            *pos += n + 2;
            if kind == b'=' {
                let (fmt, s) = (&data[..3.min(data.len())], &data[4.min(data.len())..]);
                let inner = lua.create_table()?;
                inner.raw_set("format", lua.create_string(fmt)?)?;
                inner.raw_set("string", lua.create_string(s)?)?;
                return single("verbatim_string", Value::Table(inner));
            }
            Converted::Value(Value::String(lua.create_string(data)?))
        }
        b'_' => Converted::Value(Value::Nil),
        b'#' => Converted::Value(Value::Boolean(l == b"t")),
        b',' => {
            let s = String::from_utf8_lossy(&l);
            let d = match s.as_ref() {
                "inf" => f64::INFINITY,
                "-inf" => f64::NEG_INFINITY,
                "nan" => f64::NAN,
                s => s.parse().unwrap_or(0.0),
            };
            return single("double", Value::Number(d));
        }
        b'(' => return single("big_number", Value::String(lua.create_string(&l)?)),
        b'*' | b'~' | b'>' => {
            let n = num(&l);
            if n < 0 {
                return Ok(Converted::Value(Value::Boolean(false)));
            }
            let t = lua.create_table()?;
            for i in 0..n as usize {
                match resp_to_lua(lua, buf, pos, depth + 1)? {
                    Converted::Value(v) => {
                        if kind == b'~' {
                            t.raw_set(v, true)?;
                        } else {
                            t.raw_set(i + 1, v)?;
                        }
                    }
                    Converted::Error(_) => {}
                }
            }
            if kind == b'~' {
                return single("set", Value::Table(t));
            }
            Converted::Value(Value::Table(t))
        }
        b'%' | b'|' => {
            let n = num(&l);
            let t = lua.create_table()?;
            for _ in 0..n.max(0) {
                let k = match resp_to_lua(lua, buf, pos, depth + 1)? {
                    Converted::Value(v) => v,
                    Converted::Error(_) => Value::Nil,
                };
                let v = match resp_to_lua(lua, buf, pos, depth + 1)? {
                    Converted::Value(v) => v,
                    Converted::Error(_) => Value::Nil,
                };
                if !k.is_nil() {
                    t.raw_set(k, v)?;
                }
            }
            if kind == b'|' {
                // An attribute comes before the reply it describes; Redis ignores it.
                return resp_to_lua(lua, buf, pos, depth);
            }
            return single("map", Value::Table(t));
        }
        _ => Converted::Value(Value::Boolean(false)),
    })
}

/// Writes a script's return value as Redis's `luaReplyToRedisReply` does. `resp` is the
/// script's protocol (booleans depend on it).
pub fn lua_to_reply(w: &mut ReplyWriter<'_>, v: &Value, resp: u8, depth: usize) {
    if depth > REPLY_DEPTH_MAX {
        w.error("ERR reached lua stack limit");
        return;
    }
    match v {
        Value::String(s) => w.bulk(&s.as_bytes()),
        Value::Boolean(b) => {
            if resp == 2 {
                if *b {
                    w.int(1);
                } else {
                    w.null();
                }
            } else {
                w.boolean(*b);
            }
        }
        Value::Integer(i) => w.int(*i),
        Value::Number(n) => w.int(*n as i64),
        Value::Table(t) => table_to_reply(w, t, resp, depth),
        _ => w.null(),
    }
}

fn table_to_reply(w: &mut ReplyWriter<'_>, t: &Table, resp: u8, depth: usize) {
    let field = |name: &str| t.raw_get::<Value>(name).unwrap_or(Value::Nil);
    if let Value::String(e) = field("err") {
        let msg = e.to_string_lossy();
        w.error(&msg);
        return;
    }
    if let Value::String(ok) = field("ok") {
        let s: String = ok
            .to_string_lossy()
            .chars()
            .map(|c| if c == '\r' || c == '\n' { ' ' } else { c })
            .collect();
        w.simple(&s);
        return;
    }
    match field("double") {
        Value::Number(d) => return w.double(d),
        Value::Integer(i) => return w.double(i as f64),
        _ => {}
    }
    if let Value::String(b) = field("big_number") {
        let s: Vec<u8> = b
            .as_bytes()
            .iter()
            .map(|&c| if c == b'\r' || c == b'\n' { b' ' } else { c })
            .collect();
        if w.is_resp3() {
            w.raw(b"(");
            w.raw(&s);
            w.raw(b"\r\n");
        } else {
            w.bulk(&s);
        }
        return;
    }
    if let Value::Table(m) = field("map") {
        let pairs: Vec<(Value, Value)> = m.pairs::<Value, Value>().filter_map(|p| p.ok()).collect();
        w.map(pairs.len());
        for (k, v) in &pairs {
            lua_to_reply(w, k, resp, depth + 1);
            lua_to_reply(w, v, resp, depth + 1);
        }
        return;
    }
    if let Value::Table(s) = field("set") {
        let keys: Vec<Value> = s
            .pairs::<Value, Value>()
            .filter_map(|p| p.ok().map(|p| p.0))
            .collect();
        w.set(keys.len());
        for k in &keys {
            lua_to_reply(w, k, resp, depth + 1);
        }
        return;
    }
    if let Value::Table(vs) = field("verbatim_string") {
        let fmt = vs.raw_get::<Value>("format").unwrap_or(Value::Nil);
        let s = vs.raw_get::<Value>("string").unwrap_or(Value::Nil);
        if let (Value::String(fmt), Value::String(s)) = (fmt, s) {
            let fmt = fmt.as_bytes();
            let s = s.as_bytes();
            if w.is_resp3() && fmt.len() == 3 {
                let mut tmp = [0u8; 20];
                let n = shoal_resp::fmt_i64(s.len() as i64 + 4, &mut tmp).to_vec();
                w.raw(b"=");
                w.raw(&n);
                w.raw(b"\r\n");
                w.raw(&fmt);
                w.raw(b":");
                w.raw(&s);
                w.raw(b"\r\n");
            } else {
                w.bulk(&s);
            }
            return;
        }
    }
    let mut items = Vec::new();
    for i in 1.. {
        match t.raw_get::<Value>(i) {
            Ok(Value::Nil) | Err(_) => break,
            Ok(v) => items.push(v),
        }
    }
    w.array(items.len());
    for v in &items {
        lua_to_reply(w, v, resp, depth + 1);
    }
}

/// The registry key of the running script's command caller (a scoped Rust function taking the
/// raise flag and the command, returning `ok, value`).
const CALL_KEY: &str = "shoal_call";

/// Calls the running script's command caller with the raise flag and this call's arguments;
/// leaves `ok, value` on the stack.
///
/// # Safety
/// `l` is a live Lua state inside a C function call.
unsafe fn call_raw(l: *mut mlua::ffi::lua_State, raise: bool) {
    // SAFETY: plain Lua C API use on the caller's stack.
    unsafe {
        let n = mlua::ffi::lua_gettop(l);
        mlua::ffi::lua_pushstring(l, c"shoal_call".as_ptr());
        mlua::ffi::lua_rawget(l, mlua::ffi::LUA_REGISTRYINDEX);
        mlua::ffi::lua_insert(l, 1);
        mlua::ffi::lua_pushboolean(l, raise as i32);
        mlua::ffi::lua_insert(l, 2);
        mlua::ffi::lua_call(l, n + 1, 2);
    }
}

/// `redis.call`, a C function (not a Lua wrapper) so that `return redis.call(...)` is not a Lua
/// tail call that would lose the script's position for the error, and so that it can raise the
/// error table itself, as Redis does.
unsafe extern "C-unwind" fn redis_call(l: *mut mlua::ffi::lua_State) -> std::ffi::c_int {
    // SAFETY: called by Lua with a live state.
    unsafe {
        call_raw(l, true);
        if mlua::ffi::lua_toboolean(l, -2) == 0 {
            mlua::ffi::lua_error(l);
        }
    }
    1
}

/// `redis.pcall`: as `redis.call`, but a failed command's error table is returned.
unsafe extern "C-unwind" fn redis_pcall(l: *mut mlua::ffi::lua_State) -> std::ffi::c_int {
    // SAFETY: called by Lua with a live state.
    unsafe { call_raw(l, false) };
    1
}

/// The `redis` table.
fn redis_lib(lua: &Lua) -> mlua::Result<Table> {
    let r = lua.create_table()?;
    // SAFETY: the functions follow the Lua C API protocol (see `call_raw`).
    unsafe {
        r.raw_set("call", lua.create_c_function(redis_call)?)?;
        r.raw_set("pcall", lua.create_c_function(redis_pcall)?)?;
    }
    r.raw_set(
        "error_reply",
        lua.create_function(|lua, args: MultiValue| match (args.len(), args.front()) {
            (1, Some(Value::String(s))) => {
                let s = s.to_string_lossy();
                let line = if s.starts_with('-') {
                    s
                } else {
                    format!("-{s}")
                };
                error_table(lua, &line)
            }
            _ => error_table(lua, "ERR wrong number or type of arguments"),
        })?,
    )?;
    r.raw_set(
        "status_reply",
        lua.create_function(|lua, args: MultiValue| match (args.len(), args.front()) {
            (1, Some(Value::String(s))) => {
                let t = lua.create_table()?;
                t.raw_set("ok", s.clone())?;
                Ok(t)
            }
            _ => error_table(lua, "ERR wrong number or type of arguments"),
        })?,
    )?;
    r.raw_set(
        "sha1hex",
        lua.create_function(|lua, args: MultiValue| {
            if args.len() != 1 {
                return Err(raise(lua, "ERR wrong number of arguments"));
            }
            let bytes = match &args[0] {
                Value::String(s) => s.as_bytes().to_vec(),
                Value::Integer(i) => i.to_string().into_bytes(),
                Value::Number(n) => lua_number_text(*n).into_bytes(),
                _ => Vec::new(),
            };
            Ok(super::sha1::sha1_hex(&bytes))
        })?,
    )?;
    r.raw_set(
        "log",
        lua.create_function(|lua, args: MultiValue| {
            if args.len() < 2 {
                return Err(raise(
                    lua,
                    "ERR redis.log() requires two arguments or more.",
                ));
            }
            let level = match &args[0] {
                Value::Integer(i) => *i,
                Value::Number(n) => *n as i64,
                _ => {
                    return Err(raise(
                        lua,
                        "ERR First argument must be a number (log level).",
                    ));
                }
            };
            if !(0..=3).contains(&level) {
                return Err(raise(lua, "ERR Invalid debug level."));
            }
            // shoal's command layer writes no log file: the message is only checked.
            Ok(())
        })?,
    )?;
    r.raw_set(
        "setresp",
        lua.create_function(|lua, args: MultiValue| {
            if args.len() != 1 {
                return Err(raise(lua, "ERR redis.setresp() requires one argument."));
            }
            let v = match &args[0] {
                Value::Integer(i) => *i,
                Value::Number(n) => *n as i64,
                _ => 0,
            };
            if v != 2 && v != 3 {
                return Err(raise(lua, "ERR RESP version must be 2 or 3."));
            }
            if let Some(mut o) = lua.app_data_mut::<RunOpts>() {
                o.resp = v as u8;
            }
            Ok(())
        })?,
    )?;
    r.raw_set(
        "set_repl",
        lua.create_function(|lua, args: MultiValue| {
            if lua.app_data_ref::<RunOpts>().is_none() {
                return Err(raise(
                    lua,
                    "ERR redis.set_repl can only be called inside a script invocation",
                ));
            }
            if args.len() != 1 {
                return Err(raise(lua, "ERR redis.set_repl() requires two arguments."));
            }
            let v = match &args[0] {
                Value::Integer(i) => *i,
                Value::Number(n) => *n as i64,
                _ => 0,
            };
            if v & !3 != 0 {
                return Err(raise(
                    lua,
                    "ERR Invalid replication flags. Use REPL_AOF, REPL_REPLICA, REPL_ALL or REPL_NONE.",
                ));
            }
            if let Some(mut o) = lua.app_data_mut::<RunOpts>() {
                o.repl = v as u8;
            }
            Ok(())
        })?,
    )?;
    r.raw_set("replicate_commands", lua.create_function(|_, ()| Ok(true))?)?;
    r.raw_set("breakpoint", lua.create_function(|_, ()| Ok(false))?)?;
    r.raw_set("debug", lua.create_function(|_, _: MultiValue| Ok(()))?)?;
    r.raw_set(
        "acl_check_cmd",
        lua.create_function(|lua, args: MultiValue| {
            if args.is_empty() {
                return Err(raise(
                    lua,
                    "ERR Please specify at least one argument for this redis lib call",
                ));
            }
            let mut argv = Vec::new();
            for a in args.iter() {
                match a {
                    Value::String(s) => argv.push(s.as_bytes().to_vec()),
                    Value::Integer(i) => argv.push(i.to_string().into_bytes()),
                    Value::Number(n) => argv.push(number_arg(*n).into_bytes()),
                    _ => {
                        return Err(raise(
                            lua,
                            "ERR Lua redis lib command arguments must be strings or integers",
                        ));
                    }
                }
            }
            let owned = OwnedArgs::new(argv.iter());
            match lookup(&owned.args()) {
                // No ACL users: the default user may run every command.
                Some(_) => Ok(true),
                None => Err(raise(
                    lua,
                    "ERR Invalid command passed to redis.acl_check_cmd()",
                )),
            }
        })?,
    )?;
    for (name, v) in [
        ("LOG_DEBUG", 0),
        ("LOG_VERBOSE", 1),
        ("LOG_NOTICE", 2),
        ("LOG_WARNING", 3),
        ("REPL_NONE", 0),
        ("REPL_AOF", 1),
        ("REPL_SLAVE", 2),
        ("REPL_REPLICA", 2),
        ("REPL_ALL", 3),
        ("REDIS_VERSION_NUM", VERSION_NUM),
    ] {
        r.raw_set(name, v)?;
    }
    r.raw_set("REDIS_VERSION", "7.0.15")?;
    Ok(r)
}

/// A Lua error carrying Redis's error table (what `luaError` raises).
pub fn raise(lua: &Lua, line: &str) -> mlua::Error {
    match error_table(lua, line) {
        Ok(t) => mlua::Error::runtime(RaisedTable::stash(lua, t)),
        Err(e) => e,
    }
}

/// Errors raised from Rust callbacks reach Lua as mlua's wrapped errors, not as tables; the
/// table is parked in the registry under a token that the error handler recognises.
pub struct RaisedTable;

/// The prefix of a parked error table's token.
const RAISED_PREFIX: &str = "\u{1}shoal-raised:";

impl RaisedTable {
    fn stash(lua: &Lua, t: Table) -> String {
        let err = t.raw_get::<String>("err").unwrap_or_default();
        let _ = lua.set_named_registry_value("shoal_raised", t);
        format!("{RAISED_PREFIX}{err}")
    }

    /// The parked table, if `text` is a token.
    pub fn take(lua: &Lua, text: &str) -> Option<Table> {
        text.strip_prefix(RAISED_PREFIX)?;
        let t: Table = lua.named_registry_value("shoal_raised").ok()?;
        let _ = lua.unset_named_registry_value("shoal_raised");
        Some(t)
    }
}

/// A map of live scripts by SHA-1, with their source size (for INFO's memory figures).
pub type ScriptMap = HashMap<String, (Function, usize)>;
