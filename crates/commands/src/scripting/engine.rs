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

use std::borrow::Cow;
use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::ffi::{CStr, c_char, c_int, c_void};
use std::sync::atomic::Ordering::Relaxed;
use std::sync::atomic::{AtomicBool, AtomicU8, AtomicU32, AtomicU64};
use std::sync::{Arc, OnceLock};

use mlua::chunk::ChunkMode;
use mlua::ffi;
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
    opts: Arc<RunOpts>,
    /// `redis.call`'s buffers, kept between runs.
    scratch: RefCell<Scratch>,
    /// Runs since the last garbage-collection step ([`GC_CYCLE_PERIOD`]).
    runs_since_gc: std::cell::Cell<u32>,
}

/// Every this many runs, the VM's collector takes a step of this many kilobytes, as Redis's
/// (`LUA_GC_CYCLE_PERIOD`): a busy VM's garbage does not pile up to twice its live size.
pub const GC_CYCLE_PERIOD: u32 = 50;

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
        let opts = Arc::new(RunOpts::new());
        g.raw_set("redis", redis_lib(&lua, &opts)?)?;
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
        internal.raw_set("error_value", lua.create_function(error_value)?)?;
        internal.raw_set("KILLED", killed_msg)?;
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
            opts,
            scratch: RefCell::default(),
            runs_since_gc: std::cell::Cell::new(0),
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

    /// Runs `f` (protected, through the error handler), letting it call commands through
    /// `run`; a script gets its KEYS and ARGV globals from `inputs`. On success its return
    /// value is written as the reply (in the protocol the script chose with `redis.setresp`);
    /// `Err` is its error table.
    pub fn run(
        &self,
        run: &RefCell<RunCtx<'_, '_>>,
        f: &Function,
        inputs: Inputs<'_>,
    ) -> mlua::Result<Result<(), Failure>> {
        self.opts.start();
        let returned_error = Cell::new(false);
        let site = CallSite {
            run,
            opts: &self.opts,
            scratch: &self.scratch,
        };
        let ptr = &site as *const CallSite<'_, '_, '_> as *mut c_void;
        let ctx = run.as_ptr();
        let opts = &*self.opts;
        // SAFETY: the closure uses the C API on the stack `exec_raw` gives it (xpcall, f, the
        // handler, the hidden globals), in protected mode, with only borrowed values alive. The
        // registry points at `site` only while it lives: cleared by the closure, and again
        // below should the protected call fail. The reply is written through `ctx` once the
        // script has returned, when nothing else borrows the run's context.
        let r = unsafe {
            self.lua.exec_raw::<(bool, Value)>(
                (&self.xpcall, f, &self.handler, &self.globals),
                |l| {
                    ffi::lua_checkstack(l, 8);
                    ffi::lua_pushlightuserdata(l, ptr);
                    ffi::lua_setfield(l, ffi::LUA_REGISTRYINDEX, CALL_KEY.as_ptr());
                    if let Inputs::Globals { keys, argv } = inputs {
                        set_array(l, 4, c"KEYS", keys);
                        set_array(l, 4, c"ARGV", argv);
                    }
                    ffi::lua_settop(l, 3);
                    ffi::lua_call(l, 2, 2);
                    ffi::lua_pushnil(l);
                    ffi::lua_setfield(l, ffi::LUA_REGISTRYINDEX, CALL_KEY.as_ptr());
                    if ffi::lua_toboolean(l, -2) != 0 {
                        let top = ffi::lua_gettop(l);
                        // A returned error table is the run's failure, replied (and counted)
                        // by the caller; anything else is the reply.
                        if is_error_table(l, top) {
                            returned_error.set(true);
                        } else {
                            let w = &mut (*ctx).ctx.out;
                            write_reply(l, top, w, opts.resp.load(Relaxed), 0);
                            ffi::lua_pop(l, 1);
                            ffi::lua_pushnil(l);
                        }
                    }
                },
            )
        };
        if r.is_err() {
            let _ = self.lua.unset_named_registry_value("shoal_call");
        }
        self.opts.end();
        let runs = self.runs_since_gc.get() + 1;
        if runs >= GC_CYCLE_PERIOD {
            self.runs_since_gc.set(0);
            // SAFETY: one collector step on the VM's own state; nothing is pushed.
            let _ = unsafe {
                self.lua.exec_raw::<()>((), |l| {
                    ffi::lua_gc(l, ffi::LUA_GCSTEP, GC_CYCLE_PERIOD as c_int);
                })
            };
        } else {
            self.runs_since_gc.set(runs);
        }
        let (ok, value) = r?;
        let returned = returned_error.get();
        Ok(if ok && !returned {
            Ok(())
        } else {
            Err(Failure { value, returned })
        })
    }

    /// The protocol the running (or last) script chose (`redis.setresp`).
    pub fn resp(&self) -> u8 {
        self.opts.resp.load(Relaxed)
    }
}

/// How a run failed: the error it raised (an error table from the error handler, or any value
/// for a failure of shoal's own Lua), or the error table it returned.
#[derive(Debug)]
pub struct Failure {
    pub value: Value,
    pub returned: bool,
}

/// Whether the value at `idx` is an error table (`{err = <string>}`).
///
/// # Safety
/// `l` is a live Lua state, `idx` an absolute index.
unsafe fn is_error_table(l: *mut ffi::lua_State, idx: c_int) -> bool {
    // SAFETY: a raw read of one field, popped again.
    unsafe {
        if ffi::lua_type(l, idx) != ffi::LUA_TTABLE || ffi::lua_checkstack(l, 2) == 0 {
            return false;
        }
        let found = field(l, idx, c"err") == ffi::LUA_TSTRING;
        ffi::lua_pop(l, 1);
        found
    }
}

/// What a run gives its target.
#[derive(Clone, Copy)]
pub enum Inputs<'i> {
    /// A script's KEYS and ARGV globals.
    Globals {
        keys: &'i [&'i [u8]],
        argv: &'i [&'i [u8]],
    },
    /// Nothing: a function already bound to its arguments ([`Engine::bind`]).
    Bound,
}

/// Sets `table[name]` (raw) to a new array of `items`.
///
/// # Safety
/// `l` is a live Lua state in protected mode, `table` a valid absolute index of a table.
unsafe fn set_array(l: *mut ffi::lua_State, table: c_int, name: &CStr, items: &[&[u8]]) {
    // SAFETY: plain pushes on a live state with room (checked by the caller).
    unsafe {
        ffi::lua_pushstring_(l, name.as_ptr());
        ffi::lua_createtable(l, items.len().min(c_int::MAX as usize) as c_int, 0);
        for (i, a) in items.iter().enumerate() {
            push_bytes(l, a);
            ffi::lua_rawseti_(l, -2, (i + 1).min(c_int::MAX as usize) as c_int);
        }
        ffi::lua_rawset(l, table);
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

/// What a script's `pcall` or `xpcall` hands over for an error raised in a Rust function: its
/// message (or the error table `redis.call` parked), as Redis's C functions raise them. Other
/// error values are left as they are.
fn error_value(lua: &Lua, err: Value) -> mlua::Result<Value> {
    let Value::Error(e) = err else {
        return Ok(err);
    };
    let text = error_text(&e);
    if let Some(t) = RaisedTable::take(lua, &text) {
        return Ok(Value::Table(t));
    }
    Ok(Value::String(lua.create_string(caught_text(&e, text))?))
}

/// A library error's text as `luaL_error` words it where it was raised: prefixed with the
/// position of the Lua code that called the function; called by a C function (`pcall` itself),
/// no position, and `luaL_argerror` cannot name the function (`'?'`). The caller is the second
/// frame of the traceback mlua recorded.
fn caught_text(e: &mlua::Error, text: String) -> String {
    let mlua::Error::CallbackError { traceback, .. } = e else {
        return text;
    };
    let Some(caller) = traceback
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && *l != "stack traceback:")
        .nth(1)
    else {
        return text;
    };
    if caller.starts_with("[C]") {
        if let Some(rest) = text.strip_prefix("bad argument #")
            && let Some((n, tail)) = rest.split_once(" to '")
            && let Some((_, why)) = tail.split_once("' ")
        {
            return format!("bad argument #{n} to '?' {why}");
        }
        return text;
    }
    match caller.split_once(": in ") {
        Some((pos, _)) => format!("{pos}: {text}"),
        None => text,
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

/// What a script changes about how its commands run (`redis.setresp`, `redis.set_repl`), and
/// whether one runs. Shared by the VM's functions and [`Engine::run`]; reset when a script starts.
#[derive(Debug)]
pub struct RunOpts {
    resp: AtomicU8,
    /// `REPL_*` flags: without `REPL_REPLICA` (2) the commands' effects are not replicated.
    repl: AtomicU8,
    running: AtomicBool,
}

impl RunOpts {
    fn new() -> RunOpts {
        RunOpts {
            resp: AtomicU8::new(2),
            repl: AtomicU8::new(3),
            running: AtomicBool::new(false),
        }
    }

    fn start(&self) {
        self.resp.store(2, Relaxed);
        self.repl.store(3, Relaxed);
        self.running.store(true, Relaxed);
    }

    fn end(&self) {
        self.running.store(false, Relaxed);
    }
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

/// Why a script's command did not run: its error line (Redis's error table's `err`), and whether
/// it was counted as a rejected call (Redis's `scriptCall` refusals are: in `INFO errorstats`,
/// `total_error_replies` and the command's `rejected_calls`; the argument checks before it are
/// not).
struct Refused {
    line: Cow<'static, str>,
    counted: bool,
}

/// `redis.call` / `redis.pcall`, the Rust half: checks the command in `a` as Redis checks a
/// script's command (`scriptCall`) and runs it, its reply going to `out`.
fn prepare_call(
    rc: &mut RunCtx<'_, '_>,
    opts: &RunOpts,
    a: &crate::Args<'_>,
    out: &mut Vec<u8>,
) -> Result<(), Refused> {
    if a.is_empty() {
        return Err(Refused {
            line: "ERR Please specify at least one argument for this redis lib call".into(),
            counted: false,
        });
    }
    let spec = lookup(a);
    let srv = rc.ctx.srv;
    check_call(rc, spec, a).map_err(|line| {
        srv.stats.total_error_replies.fetch_add(1, Relaxed);
        srv.stats
            .errors
            .record_code(crate::error::script_code(&line));
        if let Some(spec) = spec {
            srv.cmdstats.reject(srv.gate.thread_slot(), spec);
        }
        Refused {
            line,
            counted: true,
        }
    })?;
    let spec = spec.expect("check_call refuses an unknown command");
    run_checked(rc, opts, spec, a, out);
    Ok(())
}

/// Redis's `scriptCall` checks of a script's command; `Err` is the error line.
fn check_call(
    rc: &mut RunCtx<'_, '_>,
    spec: Option<&'static Spec>,
    a: &crate::Args<'_>,
) -> Result<(), Cow<'static, str>> {
    let Some(spec) = spec else {
        return Err("ERR Unknown Redis command called from script".into());
    };
    if !spec.arity_ok(a.len()) {
        return Err("ERR Wrong number of args calling Redis command from script".into());
    }
    if spec.has(flag::NOSCRIPT) {
        return Err("ERR This Redis command is not allowed from script".into());
    }
    let srv = rc.ctx.srv;
    // The script's commands run as its caller's user.
    if let Err(d) = crate::acl::check_client(srv, rc.ctx.client, spec, a) {
        let now = rc.ctx.now_ms;
        return Err(crate::acl::denied_in_script(srv, rc.ctx.client, spec, a, d, now).into());
    }
    // A read-only script may not run a command that may replicate either (PUBLISH, ...), as in
    // Redis: so CLIENT PAUSE WRITE can let read-only scripts run.
    if spec.has(flag::WRITE | flag::MAY_REPLICATE) && (rc.read_only_call || rc.flags.no_writes) {
        return Err("ERR Write commands are not allowed from read-only scripts.".into());
    }
    if spec.has(flag::WRITE) {
        if srv.repl.is_replica() && srv.hot.replica_read_only.load(Relaxed) {
            return Err(ReplyError::ReadOnly.to_string().into());
        }
        // Once the script wrote, it is not failed on the replicas' state (as Redis).
        if !rc.wrote && !crate::good_replicas_ok(srv, rc.ctx.now_ms) {
            return Err(ReplyError::NoReplicas.to_string().into());
        }
    }
    if !rc.flags.allow_oom && !rc.wrote && rc.oom_at_start && spec.has(flag::DENYOOM) {
        return Err(ReplyError::Oom.to_string().into());
    }
    if let Some(e) = super::cluster_check(rc, spec, a) {
        return Err(e.into());
    }
    if crate::tier::script_needs_fetch(srv, rc.db, spec, a) {
        return Err(crate::tier::SCRIPT_COLD_ERROR.into());
    }
    if spec.has(flag::WRITE) {
        rc.wrote = true;
        rc.wrote_flag.store(true, Relaxed);
    }
    Ok(())
}

/// Runs a script's command that [`check_call`] admitted, as the script's client: its database,
/// the script's protocol.
fn run_checked(
    rc: &mut RunCtx<'_, '_>,
    opts: &RunOpts,
    spec: &'static Spec,
    a: &crate::Args<'_>,
    out: &mut Vec<u8>,
) {
    let srv = rc.ctx.srv;
    // Effects of commands the script asked not to replicate are dropped: what earlier commands
    // queued goes out first.
    let unreplicated = opts.repl.load(Relaxed) & 2 == 0 && spec.has(flag::WRITE);
    if unreplicated {
        crate::effects::emit_logged(srv, rc.ctx.now_ms);
    }
    // Run it as the script's client: its database, the script's protocol.
    let client = &mut *rc.ctx.client;
    let (saved_db, saved_proto) = (client.db, client.proto);
    client.db = rc.db;
    client.proto = if opts.resp.load(Relaxed) == 3 {
        Protocol::Resp3
    } else {
        Protocol::Resp2
    };
    out.clear();
    client.in_script_call = true;
    crate::run_in_exec(srv, client, spec, a, out, rc.ctx.now_ms);
    client.in_script_call = false;
    if unreplicated {
        crate::effects::discard_logged(srv);
    }
    rc.db = client.db;
    client.db = saved_db;
    client.proto = saved_proto;
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

/// Writes the value at `idx` (a script's return value) as Redis's `luaReplyToRedisReply` does.
/// `resp` is the script's protocol (booleans depend on it).
///
/// # Safety
/// `l` is a live Lua state in protected mode, `idx` an absolute index. Only the reply buffer
/// (not owned by these frames) changes while Lua calls run.
unsafe fn write_reply(
    l: *mut ffi::lua_State,
    idx: c_int,
    w: &mut ReplyWriter<'_>,
    resp: u8,
    depth: usize,
) {
    if depth > REPLY_DEPTH_MAX {
        w.error("ERR reached lua stack limit");
        return;
    }
    // SAFETY: reads of the value at a valid index; strings are not converted.
    unsafe {
        match ffi::lua_type(l, idx) {
            ffi::LUA_TSTRING => w.bulk(str_at(l, idx)),
            ffi::LUA_TBOOLEAN => {
                let b = ffi::lua_toboolean(l, idx) != 0;
                match (resp, b) {
                    (2, true) => w.int(1),
                    (2, false) => w.null(),
                    _ => w.boolean(b),
                }
            }
            ffi::LUA_TNUMBER => w.int(ffi::lua_tonumber(l, idx) as i64),
            ffi::LUA_TTABLE => write_table(l, idx, w, resp, depth),
            _ => w.null(),
        }
    }
}

/// The bytes of the string at `idx`.
///
/// # Safety
/// The value at `idx` is a string; the slice lives while it stays on the stack.
unsafe fn str_at<'s>(l: *mut ffi::lua_State, idx: c_int) -> &'s [u8] {
    let mut len = 0;
    // SAFETY: a string value: no conversion, Lua keeps the bytes.
    unsafe {
        let p = ffi::lua_tolstring(l, idx, &mut len);
        std::slice::from_raw_parts(p as *const u8, len)
    }
}

/// Pushes `t[name]` (raw) and returns its type.
///
/// # Safety
/// `l` is live, in protected mode, with room for one value; `t` an absolute index of a table.
unsafe fn field(l: *mut ffi::lua_State, t: c_int, name: &CStr) -> c_int {
    // SAFETY: see above.
    unsafe {
        ffi::lua_pushstring_(l, name.as_ptr());
        ffi::lua_rawget_(l, t);
        ffi::lua_type(l, -1)
    }
}

/// Writes `b` with CR and LF turned into spaces (status and error lines).
fn one_line(w: &mut ReplyWriter<'_>, b: &[u8]) {
    w.buf.extend(
        b.iter()
            .map(|&c| if c == b'\r' || c == b'\n' { b' ' } else { c }),
    );
}

/// Counts the pairs of the table at `t`.
///
/// # Safety
/// As [`field`].
unsafe fn pair_count(l: *mut ffi::lua_State, t: c_int) -> usize {
    let mut n = 0;
    // SAFETY: `lua_next` over a table, keys left unconverted.
    unsafe {
        ffi::lua_pushnil(l);
        while ffi::lua_next(l, t) != 0 {
            n += 1;
            ffi::lua_pop(l, 1);
        }
    }
    n
}

/// [`write_reply`] for a table: Redis's error, status, double, big number, map, set and
/// verbatim tables, else the array part up to its first nil.
///
/// # Safety
/// As [`write_reply`].
unsafe fn write_table(
    l: *mut ffi::lua_State,
    t: c_int,
    w: &mut ReplyWriter<'_>,
    resp: u8,
    depth: usize,
) {
    // SAFETY: the stack is grown first; every push is popped before returning.
    unsafe {
        if ffi::lua_checkstack(l, 6) == 0 {
            w.error("ERR reached lua stack limit");
            return;
        }
        if field(l, t, c"err") == ffi::LUA_TSTRING {
            w.buf.push(b'-');
            one_line(w, str_at(l, -1));
            w.buf.extend_from_slice(b"\r\n");
            ffi::lua_pop(l, 1);
            return;
        }
        ffi::lua_pop(l, 1);
        if field(l, t, c"ok") == ffi::LUA_TSTRING {
            w.buf.push(b'+');
            one_line(w, str_at(l, -1));
            w.buf.extend_from_slice(b"\r\n");
            ffi::lua_pop(l, 1);
            return;
        }
        ffi::lua_pop(l, 1);
        if field(l, t, c"double") == ffi::LUA_TNUMBER {
            w.double(ffi::lua_tonumber(l, -1));
            ffi::lua_pop(l, 1);
            return;
        }
        ffi::lua_pop(l, 1);
        if field(l, t, c"big_number") == ffi::LUA_TSTRING {
            let b = str_at(l, -1);
            if w.is_resp3() {
                w.buf.push(b'(');
                one_line(w, b);
                w.buf.extend_from_slice(b"\r\n");
            } else {
                let one: Vec<u8> = b
                    .iter()
                    .map(|&c| if c == b'\r' || c == b'\n' { b' ' } else { c })
                    .collect();
                w.bulk(&one);
            }
            ffi::lua_pop(l, 1);
            return;
        }
        ffi::lua_pop(l, 1);
        for (name, is_map) in [(c"map", true), (c"set", false)] {
            if field(l, t, name) == ffi::LUA_TTABLE {
                let m = ffi::lua_gettop(l);
                let n = pair_count(l, m);
                if is_map {
                    w.map(n);
                } else {
                    w.set(n);
                }
                ffi::lua_pushnil(l);
                while ffi::lua_next(l, m) != 0 {
                    let top = ffi::lua_gettop(l);
                    write_reply(l, top - 1, w, resp, depth + 1);
                    if is_map {
                        write_reply(l, top, w, resp, depth + 1);
                    }
                    ffi::lua_pop(l, 1);
                }
                ffi::lua_pop(l, 1);
                return;
            }
            ffi::lua_pop(l, 1);
        }
        if field(l, t, c"verbatim_string") == ffi::LUA_TTABLE {
            let vs = ffi::lua_gettop(l);
            if field(l, vs, c"format") == ffi::LUA_TSTRING
                && field(l, vs, c"string") == ffi::LUA_TSTRING
            {
                let (fmt, s) = (str_at(l, -2), str_at(l, -1));
                if w.is_resp3() && fmt.len() == 3 {
                    let mut tmp = [0u8; 20];
                    w.buf.push(b'=');
                    w.buf
                        .extend_from_slice(shoal_resp::fmt_i64(s.len() as i64 + 4, &mut tmp));
                    w.buf.extend_from_slice(b"\r\n");
                    w.buf.extend_from_slice(fmt);
                    w.buf.push(b':');
                    w.buf.extend_from_slice(s);
                    w.buf.extend_from_slice(b"\r\n");
                } else {
                    w.bulk(s);
                }
                ffi::lua_settop(l, vs - 1);
                return;
            }
            ffi::lua_settop(l, vs - 1);
        } else {
            ffi::lua_pop(l, 1);
        }
        let mut n = 0;
        while {
            ffi::lua_rawgeti_(l, t, (n + 1).min(c_int::MAX as usize) as c_int);
            let more = ffi::lua_type(l, -1) != ffi::LUA_TNIL;
            ffi::lua_pop(l, 1);
            more
        } {
            n += 1;
        }
        w.array(n);
        for i in 1..=n {
            ffi::lua_rawgeti_(l, t, i.min(c_int::MAX as usize) as c_int);
            write_reply(l, ffi::lua_gettop(l), w, resp, depth + 1);
            ffi::lua_pop(l, 1);
        }
    }
}

/// The registry key of the running script's [`CallSite`] (a light userdata; nil between runs).
const CALL_KEY: &CStr = c"shoal_call";

/// What `redis.call` reaches while a script runs: the run's context and buffers reused by every
/// call of the run. [`Engine::run`] keeps it on its stack and points the registry at it.
struct CallSite<'r, 'c, 'a> {
    run: &'r RefCell<RunCtx<'c, 'a>>,
    opts: &'r RunOpts,
    scratch: &'r RefCell<Scratch>,
}

#[derive(Default)]
struct Scratch {
    args: OwnedArgs,
    /// The command's reply (RESP, as a client would get it).
    out: Vec<u8>,
    /// The error line of a call refused before it ran.
    err: String,
    /// That refusal was counted in the error stats (see [`Refused`]).
    err_counted: bool,
}

/// `redis.call`, a C function (not a Lua wrapper) so that `return redis.call(...)` is not a Lua
/// tail call that would lose the script's position for the error, and so that it can raise the
/// error table itself, as Redis does.
unsafe extern "C-unwind" fn redis_call(l: *mut ffi::lua_State) -> c_int {
    // SAFETY: called by Lua with a live state; `command_call` leaves one value on the stack.
    unsafe {
        if command_call(l) {
            ffi::lua_error(l);
        }
    }
    1
}

/// `redis.pcall`: as `redis.call`, but a failed command's error table is returned.
unsafe extern "C-unwind" fn redis_pcall(l: *mut ffi::lua_State) -> c_int {
    // SAFETY: called by Lua with a live state.
    unsafe { command_call(l) };
    1
}

/// Runs the command the call's arguments name and pushes its reply converted as Redis converts
/// a command's reply for a script (RESP2 or RESP3), or an error table; `true` for an error
/// table. The Lua values are made with the C API directly: this is every script's hot path.
///
/// # Safety
/// `l` is a live Lua state inside a C function call. The Lua calls that can raise (allocation
/// failures only) run when no Rust value with a destructor is alive in this frame or below.
unsafe fn command_call(l: *mut ffi::lua_State) -> bool {
    // SAFETY: see above; the registry's pointer is live for the whole run (`Engine::run`).
    unsafe {
        ffi::lua_getfield(l, ffi::LUA_REGISTRYINDEX, CALL_KEY.as_ptr());
        let site = ffi::lua_touserdata(l, -1) as *const CallSite<'_, '_, '_>;
        ffi::lua_pop(l, 1);
        if site.is_null() {
            push_error_table(
                l,
                b"ERR redis.call is only available while a script runs",
                false,
                false,
            );
            return true;
        }
        let site = &*site;
        let failed = run_call(l, site);
        let counted = site.scratch.borrow().err_counted;
        // The arguments are no longer needed (the reply is in the scratch buffer): the reply
        // gets the whole stack, as a call with thousands of arguments leaves no room above them.
        ffi::lua_settop(l, 0);
        // The bytes stay put until the next call: nothing below runs a command.
        let (ptr, len) = {
            let sc = site.scratch.borrow();
            let b = if failed {
                sc.err.as_bytes()
            } else {
                &sc.out[..]
            };
            (b.as_ptr(), b.len())
        };
        let bytes = std::slice::from_raw_parts(ptr, len);
        if failed {
            push_error_table(l, bytes, false, counted);
            return true;
        }
        let mut pos = 0;
        match push_reply(l, bytes, &mut pos, 0) {
            Pushed::Value => false,
            // The command counted its error when it replied.
            Pushed::Error(start, end) => {
                push_error_table(l, &bytes[start..end], false, true);
                true
            }
        }
    }
}

/// Reads the call's arguments and runs it (no Lua call that can raise happens here). `true`
/// when the call was refused (the line is in the scratch's `err`).
///
/// # Safety
/// `l` is a live Lua state inside a C function call.
unsafe fn run_call(l: *mut ffi::lua_State, site: &CallSite<'_, '_, '_>) -> bool {
    let mut sc = site.scratch.borrow_mut();
    let sc = &mut *sc;
    sc.args.clear();
    // SAFETY: reading the caller's own arguments; strings are not converted.
    let n = unsafe { ffi::lua_gettop(l) };
    for i in 1..=n {
        // SAFETY: `i` is a valid index of the caller's stack.
        match unsafe { ffi::lua_type(l, i) } {
            ffi::LUA_TSTRING => {
                let mut len = 0;
                // SAFETY: a string value: Lua returns its bytes without converting.
                let p = unsafe { ffi::lua_tolstring(l, i, &mut len) };
                // SAFETY: Lua's string stays alive on the stack during the call.
                sc.args
                    .push(unsafe { std::slice::from_raw_parts(p as *const u8, len) });
            }
            ffi::LUA_TNUMBER => {
                // SAFETY: a number value.
                let v = unsafe { ffi::lua_tonumber(l, i) };
                sc.args.push(number_arg(v).as_bytes());
            }
            _ => {
                sc.err.clear();
                sc.err
                    .push_str("ERR Lua redis lib command arguments must be strings or integers");
                sc.err_counted = false;
                return true;
            }
        }
    }
    let mut rc = site.run.borrow_mut();
    match prepare_call(&mut rc, site.opts, &sc.args.args(), &mut sc.out) {
        Ok(()) => false,
        Err(r) => {
            sc.err.clear();
            sc.err.push_str(&r.line);
            sc.err_counted = r.counted;
            true
        }
    }
}

/// Pushes Redis's error table for an error line, normalised as [`error_line`] does; `dashed`
/// when the line still has its `-` (an error inside an array). `counted`: the error was already
/// counted in the error stats (a command's error reply, a refused call), so the table carries
/// Redis's `ignore_error_stats_update` and the script's reply does not count it again.
///
/// # Safety
/// `l` is a live Lua state with room for three values.
unsafe fn push_error_table(l: *mut ffi::lua_State, line: &[u8], dashed: bool, counted: bool) {
    let line = trim_crlf_end(line);
    // SAFETY: plain pushes on a live state.
    unsafe {
        ffi::lua_createtable(l, 0, 1);
        let rest = if dashed {
            Some(line)
        } else {
            line.strip_prefix(b"-")
        };
        match rest {
            None => push_bytes(l, line),
            Some(rest) => match rest.iter().position(|&c| c == b' ') {
                Some(sp) => {
                    let (code, mut msg) = (&rest[..sp], &rest[sp + 1..]);
                    while let [b'\r' | b'\n', tail @ ..] = msg {
                        msg = tail;
                    }
                    push_bytes(l, code);
                    push_bytes(l, b" ");
                    push_bytes(l, trim_crlf_end(msg));
                    ffi::lua_concat(l, 3);
                }
                None => {
                    push_bytes(l, b"ERR ");
                    push_bytes(l, rest);
                    ffi::lua_concat(l, 2);
                }
            },
        }
        ffi::lua_setfield(l, -2, c"err".as_ptr());
        if counted {
            ffi::lua_pushboolean(l, 1);
            ffi::lua_setfield(l, -2, IGNORE_STATS_FIELD.as_ptr());
        }
    }
}

/// The error table field saying its error was counted already (Redis's name for it).
pub const IGNORE_STATS_FIELD: &CStr = c"ignore_error_stats_update";

fn trim_crlf_end(mut b: &[u8]) -> &[u8] {
    while let [rest @ .., b'\r' | b'\n'] = b {
        b = rest;
    }
    b
}

/// Pushes a Lua string.
///
/// # Safety
/// `l` is a live Lua state with room for one value.
unsafe fn push_bytes(l: *mut ffi::lua_State, b: &[u8]) {
    // SAFETY: Lua copies the bytes.
    unsafe { ffi::lua_pushlstring_(l, b.as_ptr() as *const c_char, b.len()) }
}

/// What [`push_reply`] left on the stack.
enum Pushed {
    Value,
    /// A top-level error reply: nothing was pushed; its line (without `-`) is at these offsets.
    Error(usize, usize),
}

/// The offsets of the line at `pos` (up to CRLF), moving `pos` past it.
fn line_at(buf: &[u8], pos: &mut usize) -> (usize, usize) {
    let start = (*pos).min(buf.len());
    let end = buf[start..]
        .windows(2)
        .position(|w| w == b"\r\n")
        .map_or(buf.len(), |i| start + i);
    *pos = (end + 2).min(buf.len());
    (start, end)
}

fn num(b: &[u8]) -> i64 {
    std::str::from_utf8(b)
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0)
}

/// Pushes one RESP reply (shoal's own output) at `pos` as a Lua value, as Redis converts a
/// command's reply for a script: integers as numbers, nil as `false`, status and error
/// replies as `{ok=...}` / `{err=...}` tables, RESP3 maps, sets, doubles, big numbers and
/// verbatim strings as Redis's tables.
///
/// # Safety
/// `l` is a live Lua state inside a C function call; only `Copy` values live in these frames.
unsafe fn push_reply(l: *mut ffi::lua_State, buf: &[u8], pos: &mut usize, depth: usize) -> Pushed {
    // SAFETY: plain C API pushes; the stack is grown before each level.
    unsafe {
        // Past the depth bound a nested reply becomes `false` (each level holds a few stack
        // slots: the bound keeps them well under Lua's C stack limit, so the check below
        // always grows the stack and the push has its slot).
        if depth > REPLY_DEPTH_MAX || ffi::lua_checkstack(l, 4) == 0 || *pos >= buf.len() {
            ffi::lua_pushboolean(l, 0);
            return Pushed::Value;
        }
        let kind = buf[*pos];
        *pos += 1;
        let (ls, le) = line_at(buf, pos);
        let line = &buf[ls..le];
        // `{name = <value on top>}`
        let single = |name: &CStr| {
            ffi::lua_createtable(l, 0, 1);
            ffi::lua_insert(l, -2);
            ffi::lua_setfield(l, -2, name.as_ptr());
        };
        match kind {
            b'+' => {
                push_bytes(l, line);
                single(c"ok");
            }
            b'-' => {
                if depth == 0 {
                    return Pushed::Error(ls, le);
                }
                // An error inside an array (EXEC-like replies): an error table.
                push_error_table(l, line, true, true);
            }
            b':' => ffi::lua_pushnumber(l, num(line) as f64),
            b'$' | b'=' => {
                let n = num(line);
                if n < 0 {
                    ffi::lua_pushboolean(l, 0);
                    return Pushed::Value;
                }
                let start = (*pos).min(buf.len());
                let end = (start + n as usize).min(buf.len());
                let data = &buf[start..end];
                *pos = (end + 2).min(buf.len());
                if kind == b'=' {
                    let (fmt, s) = (&data[..3.min(data.len())], &data[4.min(data.len())..]);
                    ffi::lua_createtable(l, 0, 2);
                    push_bytes(l, fmt);
                    ffi::lua_setfield(l, -2, c"format".as_ptr());
                    push_bytes(l, s);
                    ffi::lua_setfield(l, -2, c"string".as_ptr());
                    single(c"verbatim_string");
                } else {
                    push_bytes(l, data);
                }
            }
            b'_' => ffi::lua_pushnil(l),
            b'#' => ffi::lua_pushboolean(l, (line == b"t") as c_int),
            b',' => {
                let d = match line {
                    b"inf" => f64::INFINITY,
                    b"-inf" => f64::NEG_INFINITY,
                    b"nan" => f64::NAN,
                    s => std::str::from_utf8(s)
                        .ok()
                        .and_then(|s| s.parse().ok())
                        .unwrap_or(0.0),
                };
                ffi::lua_pushnumber(l, d);
                single(c"double");
            }
            b'(' => {
                push_bytes(l, line);
                single(c"big_number");
            }
            b'*' | b'~' | b'>' => {
                let n = num(line);
                if n < 0 {
                    ffi::lua_pushboolean(l, 0);
                    return Pushed::Value;
                }
                let set = kind == b'~';
                let (narr, nrec) = if set { (0, n) } else { (n, 0) };
                ffi::lua_createtable(
                    l,
                    narr.min(c_int::MAX as i64) as c_int,
                    nrec.min(c_int::MAX as i64) as c_int,
                );
                for i in 0..n {
                    push_reply(l, buf, pos, depth + 1);
                    if set {
                        if ffi::lua_isnil(l, -1) != 0 {
                            ffi::lua_pop(l, 1);
                        } else {
                            ffi::lua_pushboolean(l, 1);
                            ffi::lua_rawset(l, -3);
                        }
                    } else {
                        ffi::lua_rawseti_(l, -2, (i + 1).min(c_int::MAX as i64) as c_int);
                    }
                }
                if set {
                    single(c"set");
                }
            }
            b'%' | b'|' => {
                let n = num(line).max(0);
                ffi::lua_createtable(l, 0, n.min(c_int::MAX as i64) as c_int);
                for _ in 0..n {
                    push_reply(l, buf, pos, depth + 1);
                    push_reply(l, buf, pos, depth + 1);
                    if ffi::lua_isnil(l, -2) != 0 {
                        ffi::lua_pop(l, 2);
                    } else {
                        ffi::lua_rawset(l, -3);
                    }
                }
                if kind == b'|' {
                    // An attribute comes before the reply it describes; Redis ignores it.
                    ffi::lua_pop(l, 1);
                    return push_reply(l, buf, pos, depth);
                }
                single(c"map");
            }
            _ => ffi::lua_pushboolean(l, 0),
        }
        Pushed::Value
    }
}

/// The `redis` table.
fn redis_lib(lua: &Lua, opts: &Arc<RunOpts>) -> mlua::Result<Table> {
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
    let (o, o2) = (opts.clone(), opts.clone());
    r.raw_set(
        "setresp",
        lua.create_function(move |lua, args: MultiValue| {
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
            o.resp.store(v as u8, Relaxed);
            Ok(())
        })?,
    )?;
    r.raw_set(
        "set_repl",
        lua.create_function(move |lua, args: MultiValue| {
            if !o2.running.load(Relaxed) {
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
            o2.repl.store(v as u8, Relaxed);
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
            let args = owned.args();
            let Some(spec) = lookup(&args) else {
                return Err(raise(
                    lua,
                    "ERR Invalid command passed to redis.acl_check_cmd()",
                ));
            };
            let site = match lua.named_registry_value::<Value>("shoal_call") {
                Ok(Value::LightUserData(p)) if !p.0.is_null() => p.0 as *const CallSite<'_, '_, '_>,
                _ => {
                    return Err(raise(
                        lua,
                        "ERR redis.acl_check_cmd can only be called inside a script invocation",
                    ));
                }
            };
            // SAFETY: the registry points at the running script's call site, which lives on
            // `Engine::run`'s stack for the whole run (this function is only called from it).
            let site = unsafe { &*site };
            let mut rc = site.run.borrow_mut();
            let srv = rc.ctx.srv;
            // Whether the caller's user may run it, with these arguments (nothing is logged).
            Ok(crate::acl::check_client(srv, rc.ctx.client, spec, &args).is_ok())
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
