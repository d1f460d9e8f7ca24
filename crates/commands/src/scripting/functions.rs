//! Functions (Redis 7.0 `functions.c`, `function_lua.c`): FUNCTION LOAD | LIST | DELETE | FLUSH
//! | DUMP | RESTORE | STATS | KILL | HELP, FCALL and FCALL_RO.
//!
//! Libraries (`#!lua name=<lib>` then code calling `redis.register_function`) load into a VM of
//! their own, separate from EVAL's: while the code runs, its globals are only a `redis` table
//! with `register_function` and the logging API (Redis swaps the globals the same way); the
//! registered callbacks then run with the scripts' globals, `callback(keys, args)`.
//!
//! **DUMP payload.** Redis's own format, so a dump from redis-server restores here and the
//! other way: per library the RDB function opcode (`0xF5`) and the library code as an RDB
//! string (written uncompressed; LZF-compressed strings from Redis are read), then the RDB
//! version (10, two bytes little-endian) and the CRC-64 of everything before (eight bytes
//! little-endian), as DUMP payloads end.
//!
//! **Replication.** After every change (LOAD, DELETE, FLUSH, RESTORE) the primary appends its
//! whole library set to the replication stream as one `SHOALFUNCTIONS <DUMP payload>` frame,
//! and again when a replica starts a full copy (the stream, not the snapshot, carries them to a
//! replica); a replica replaces its libraries with each such frame ([`ServerState`]'s
//! `FunctionsSink`). Libraries are few and small, so sending them whole keeps the replica's set
//! exactly the primary's.
//!
//! **Persistence.** Snapshot files carry the library set as an aux record named `functions`
//! (the DUMP payload, [`snapshot_payload`]); loading one replaces the libraries as a replica's
//! frame does.

use std::collections::BTreeMap;
use std::sync::atomic::Ordering::Relaxed;

use mlua::{Function, Lua, MultiValue, Value};

use super::engine::{self, Engine, ScriptFlags};
use crate::state::ServerState;
use crate::{Args, CmdResult, Ctx, ReplyError};

/// The RDB opcode of a function library in a DUMP payload.
const RDB_OPCODE_FUNCTION2: u8 = 245;
/// The RDB version Redis 7.0 writes (and the newest this reads).
const RDB_VERSION: u16 = 10;
/// The chunk name of library code (error positions read `user_function:<line>`).
const FUNCTION_SOURCE: &str = "@user_function";
/// Bytes of library code the node may hold; a load past it is refused.
pub const LIBRARIES_BYTES_MAX: usize = 64 << 20;

/// A registered function.
pub struct FunctionDef {
    pub callback: Function,
    pub flags: ScriptFlags,
    pub description: Option<String>,
}

/// A loaded library.
pub struct Library {
    pub code: Vec<u8>,
    pub functions: BTreeMap<String, FunctionDef>,
}

/// The functions VM and its libraries.
#[derive(Default)]
pub struct Functions {
    vm: Option<Engine>,
    pub libraries: BTreeMap<String, Library>,
}

impl Functions {
    /// The VM, created on first use.
    pub fn engine(&mut self, srv: &ServerState) -> Result<&Engine, ReplyError> {
        if self.vm.is_none() {
            let e = Engine::new(
                srv.scripts.watch(srv.clock.mono_ms),
                engine::KILLED_FUNCTION,
                srv.scripts.rand.clone(),
            )
            .and_then(|e| e.install_load_api().map(|()| e))
            .map_err(|e| crate::err!("Failed to start the Lua engine: {e}"))?;
            self.vm = Some(e);
        }
        Ok(self.vm.as_ref().expect("created above"))
    }

    /// The library holding function `name`, and the function.
    /// The function named `name`, in any case (function names are case-insensitive, as
    /// Redis's): the exact name first, then any spelling.
    pub fn find(&self, name: &str) -> Option<(&str, &FunctionDef)> {
        self.libraries
            .iter()
            .find_map(|(l, lib)| lib.functions.get(name).map(|f| (l.as_str(), f)))
            .or_else(|| {
                self.libraries.iter().find_map(|(l, lib)| {
                    lib.functions
                        .iter()
                        .find(|(n, _)| n.eq_ignore_ascii_case(name))
                        .map(|(_, f)| (l.as_str(), f))
                })
            })
    }

    fn code_bytes(&self) -> usize {
        self.libraries.values().map(|l| l.code.len()).sum()
    }

    fn function_count(&self) -> usize {
        self.libraries.values().map(|l| l.functions.len()).sum()
    }
}

/// Registrations of the library being loaded (the VM's app data while it loads).
#[derive(Default)]
struct Registrations(Vec<(String, FunctionDef)>);

fn valid_name(name: &str) -> bool {
    !name.is_empty() && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
}

const BAD_NAME: &str = "ERR Library names can only contain letters, numbers, or underscores(_) and must be at least one character long";

/// `redis.register_function(name, callback)` or `redis.register_function{function_name=...,
/// callback=..., flags={...}, description=...}`, while a library loads.
pub fn register_function(lua: &Lua, args: MultiValue) -> mlua::Result<()> {
    let raise = |m: &str| engine::raise(lua, m);
    let (name, callback, flags, description) = match (args.len(), args.front()) {
        (1, Some(Value::Table(t))) => {
            let (mut name, mut cb, mut flags, mut desc) = (None, None, None, None);
            for pair in t.pairs::<Value, Value>() {
                let (k, v) = pair?;
                let key = match &k {
                    Value::String(s) => s.to_string_lossy(),
                    _ => {
                        return Err(raise(
                            "ERR named argument key given to redis.register_function is not a string",
                        ));
                    }
                };
                match key.as_str() {
                    "function_name" => match v {
                        Value::String(s) => name = Some(s.to_string_lossy()),
                        _ => {
                            return Err(raise(
                                "ERR function_name argument given to redis.register_function must be a string",
                            ));
                        }
                    },
                    "callback" => match v {
                        Value::Function(f) => cb = Some(f),
                        _ => {
                            return Err(raise(
                                "ERR callback argument given to redis.register_function must be a function",
                            ));
                        }
                    },
                    "flags" => match v {
                        Value::Table(f) => flags = Some(f),
                        _ => {
                            return Err(raise(
                                "ERR flags argument to redis.register_function must be a table representing function flags",
                            ));
                        }
                    },
                    "description" => match v {
                        Value::String(s) => desc = Some(s.to_string_lossy()),
                        _ => {
                            return Err(raise(
                                "ERR description argument given to redis.register_function must be a string",
                            ));
                        }
                    },
                    _ => {
                        return Err(raise(
                            "ERR unknown argument given to redis.register_function",
                        ));
                    }
                }
            }
            let Some(name) = name else {
                return Err(raise(
                    "ERR redis.register_function must get a function name argument",
                ));
            };
            let Some(cb) = cb else {
                return Err(raise(
                    "ERR redis.register_function must get a callback argument",
                ));
            };
            (name, cb, flags, desc)
        }
        (1, _) => {
            return Err(raise(
                "ERR calling redis.register_function with a single argument is only applicable to Lua table (representing named arguments).",
            ));
        }
        (2, _) => {
            let Value::Function(cb) = &args[1] else {
                return Err(raise(
                    "ERR second argument to redis.register_function must be a function",
                ));
            };
            let name = match &args[0] {
                Value::String(s) => s.to_string_lossy(),
                _ => {
                    return Err(raise(
                        "ERR first argument to redis.register_function must be a string",
                    ));
                }
            };
            (name, cb.clone(), None, None)
        }
        _ => {
            return Err(raise(
                "ERR wrong number of arguments to redis.register_function",
            ));
        }
    };
    let mut f = ScriptFlags::default();
    if let Some(t) = flags {
        for v in t.sequence_values::<Value>() {
            match v? {
                Value::String(s) if f.set(&s.as_bytes()) => {}
                _ => return Err(raise("ERR unknown flag given")),
            }
        }
    }
    if !valid_name(&name) {
        return Err(raise(BAD_NAME));
    }
    let Some(mut regs) = lua.app_data_mut::<Registrations>() else {
        return Err(raise(
            "ERR redis.register_function can only be called on FUNCTION LOAD command",
        ));
    };
    // Within one library Redis tells names apart by case (across libraries it does not).
    if regs.0.iter().any(|(n, _)| *n == name) {
        return Err(raise("ERR Function already exists in the library"));
    }
    regs.0.push((
        name,
        FunctionDef {
            callback,
            flags: f,
            description,
        },
    ));
    Ok(())
}

/// Parses `#!<engine> name=<lib>` as Redis does (the first line split as `sdssplitargs` splits,
/// so a quoted name is unquoted; options in any case) and returns the library name and the code
/// to compile (the first line blanked, so line numbers hold).
fn library_metadata(code: &[u8]) -> Result<(String, Vec<u8>), ReplyError> {
    if !code.starts_with(b"#!") {
        return Err(ReplyError::err_static("Missing library metadata"));
    }
    let invalid = || ReplyError::err_static("Invalid library metadata");
    // Redis reads the code as a C string: the first line ends at a newline before any NUL.
    let end = match code.iter().position(|&b| b == b'\n' || b == 0) {
        Some(i) if code[i] == b'\n' => i,
        _ => return Err(invalid()),
    };
    let (mut buf, mut parts) = (Vec::new(), Vec::new());
    shoal_resp::split_args(&code[..end], &mut buf, &mut parts).map_err(|_| invalid())?;
    let Some(first) = parts.first() else {
        return Err(invalid());
    };
    let text = |r: &std::ops::Range<usize>| String::from_utf8_lossy(&buf[r.clone()]).into_owned();
    let engine = text(first).get(2..).unwrap_or("").to_string();
    let mut name = None;
    for p in &parts[1..] {
        let p = text(p);
        match p.get(..5) {
            Some(k) if k.eq_ignore_ascii_case("name=") => {
                if name.is_some() {
                    return Err(ReplyError::err_static(
                        "Invalid metadata value, name argument was given multiple times",
                    ));
                }
                name = Some(p[5..].to_string());
            }
            _ => return Err(crate::err!("Invalid metadata value given: {p}")),
        }
    }
    let Some(name) = name else {
        return Err(ReplyError::err_static("Library name was not given"));
    };
    if !engine.eq_ignore_ascii_case("lua") {
        return Err(crate::err!("Engine '{engine}' not found"));
    }
    if !valid_name(&name) {
        return Err(ReplyError::err_static(&BAD_NAME[4..]));
    }
    Ok((name, code[end..].to_vec()))
}

/// Compiles and runs a library's code; returns its name and the library (not yet installed).
fn load_library(
    fs: &mut Functions,
    srv: &ServerState,
    code: &[u8],
) -> Result<(String, Library), ReplyError> {
    let (name, body) = library_metadata(code)?;
    let engine = fs.engine(srv)?;
    let f = engine
        .compile(&body, FUNCTION_SOURCE)
        .map_err(|m| crate::err!("Error compiling function: {m}"))?;
    engine.lua.set_app_data(Registrations::default());
    let r = engine.run_load(&f, (srv.clock.mono_ms)());
    let regs = engine
        .lua
        .remove_app_data::<Registrations>()
        .unwrap_or_default();
    if let Err(e) = r {
        return Err(crate::err!("Error registering functions: {e}"));
    }
    if regs.0.is_empty() {
        return Err(ReplyError::err_static("No functions registered"));
    }
    Ok((
        name,
        Library {
            code: code.to_vec(),
            functions: regs.0.into_iter().collect(),
        },
    ))
}

/// Installs `libs` into `fs` (replacing libraries of the same name when `replace`), refusing
/// name clashes as Redis does; all or nothing.
fn install(
    fs: &mut Functions,
    libs: Vec<(String, Library)>,
    replace: bool,
    restore: bool,
) -> Result<(), ReplyError> {
    for (name, lib) in &libs {
        if !replace && fs.libraries.contains_key(name) {
            // Redis quotes the name on LOAD, not on RESTORE.
            return Err(if restore {
                crate::err!("Library {name} already exists")
            } else {
                crate::err!("Library '{name}' already exists")
            });
        }
        for f in lib.functions.keys() {
            let named = |other: &Library| other.functions.keys().any(|k| k.eq_ignore_ascii_case(f));
            let clash = fs
                .libraries
                .iter()
                .any(|(l, other)| l != name && named(other))
                || libs.iter().any(|(l, other)| l != name && named(other));
            if clash {
                return Err(crate::err!("Function {f} already exists"));
            }
        }
    }
    let bytes: usize = fs.code_bytes() + libs.iter().map(|(_, l)| l.code.len()).sum::<usize>();
    if bytes > LIBRARIES_BYTES_MAX {
        return Err(ReplyError::err_static(
            "Libraries would pass the functions memory limit",
        ));
    }
    for (name, lib) in libs {
        fs.libraries.insert(name, lib);
    }
    Ok(())
}

/// Appends the library set to the replication stream (after a change), if this node records.
fn emit(srv: &ServerState, fs: &Functions) {
    if !srv.ks.recording() {
        return;
    }
    let mut out = Vec::new();
    shoal_replication::stream::encode_functions(&mut out, &dump_payload(fs));
    srv.repl.append(&out);
}

/// The aux record name of the library set in a snapshot file.
pub const SNAPSHOT_AUX: &[u8] = b"functions";

/// The library set as a DUMP payload for a snapshot file; `None` when there are no libraries.
pub fn snapshot_payload(srv: &ServerState) -> Option<Vec<u8>> {
    let fs = srv.scripts.functions();
    (!fs.libraries.is_empty()).then(|| dump_payload(&fs))
}

/// Called when a replica starts a full copy: the libraries follow the snapshot in the stream.
pub fn announce(srv: &ServerState) {
    let fs = srv.scripts.functions();
    if !fs.libraries.is_empty() {
        emit(srv, &fs);
    }
}

impl shoal_replication::replica_link::FunctionsSink for ServerState {
    fn replace_functions(&self, payload: &[u8]) -> Result<(), String> {
        let codes = parse_payload(payload).map_err(|e| e.to_string())?;
        let mut fs = self.scripts.functions();
        let mut loaded = Vec::with_capacity(codes.len());
        for code in &codes {
            loaded.push(load_library(&mut fs, self, code).map_err(|e| e.to_string())?);
        }
        fs.libraries.clear();
        install(&mut fs, loaded, true, true).map_err(|e| e.to_string())?;
        publish_counts(self, &fs);
        // A replica's own replicas get the frame as it passes through its stream.
        Ok(())
    }
}

fn publish_counts(srv: &ServerState, fs: &Functions) {
    srv.scripts
        .function_count
        .store(fs.function_count(), Relaxed);
    srv.scripts.library_count.store(fs.libraries.len(), Relaxed);
    srv.scripts.functions_bytes.store(fs.code_bytes(), Relaxed);
}

// ---- DUMP payload ----

/// FUNCTION DUMP's payload for `fs`.
pub fn dump_payload(fs: &Functions) -> Vec<u8> {
    let mut out = Vec::new();
    for lib in fs.libraries.values() {
        out.push(RDB_OPCODE_FUNCTION2);
        shoal_keyspace::rdb::put_len(&mut out, lib.code.len());
        out.extend_from_slice(&lib.code);
    }
    out.extend_from_slice(&RDB_VERSION.to_le_bytes());
    let crc = shoal_keyspace::codec::crc64(&out);
    out.extend_from_slice(&crc.to_le_bytes());
    out
}

/// The libraries' codes in a DUMP payload; `Err` is Redis's message.
fn parse_payload(p: &[u8]) -> Result<Vec<Vec<u8>>, ReplyError> {
    let bad = || ReplyError::err_static("DUMP payload version or checksum are wrong");
    if p.len() < 10 {
        return Err(bad());
    }
    let (body, trailer) = p.split_at(p.len() - 10);
    let version = u16::from_le_bytes([trailer[0], trailer[1]]);
    let crc = u64::from_le_bytes(trailer[2..10].try_into().map_err(|_| bad())?);
    let computed = shoal_keyspace::codec::crc64(&p[..p.len() - 8]);
    if version > RDB_VERSION || (crc != 0 && crc != computed) {
        return Err(bad());
    }
    let mut r = shoal_keyspace::rdb::Reader::new(body);
    let mut codes = Vec::new();
    while let Some(op) = r.byte() {
        if op != RDB_OPCODE_FUNCTION2 {
            return Err(ReplyError::err_static("given type is not a function"));
        }
        let code = r
            .string()
            .ok_or_else(|| ReplyError::err_static("failed loading the given functions payload"))?;
        codes.push(code);
    }
    Ok(codes)
}

// ---- commands ----

pub(crate) fn function_load(ctx: &mut Ctx<'_>, args: &Args<'_>) -> CmdResult {
    // Every argument before the last is an option (only REPLACE is one); the last is the code.
    let mut replace = false;
    for i in 2..args.len().saturating_sub(1) {
        if !args.get(i).eq_ignore_ascii_case(b"replace") {
            return Err(crate::err!(
                "Unknown option given: {}",
                String::from_utf8_lossy(args.get(i))
            ));
        }
        replace = true;
    }
    if args.len() < 3 {
        return Err(ReplyError::err_static("Function code is missing"));
    }
    let code = args.get(args.len() - 1);
    let srv = ctx.srv;
    let mut fs = srv.scripts.functions();
    let (name, lib) = load_library(&mut fs, srv, code)?;
    install(&mut fs, vec![(name.clone(), lib)], replace, false)?;
    publish_counts(srv, &fs);
    emit(srv, &fs);
    ctx.out.bulk(name.as_bytes());
    Ok(())
}

pub(crate) fn function_delete(ctx: &mut Ctx<'_>, args: &Args<'_>) -> CmdResult {
    let srv = ctx.srv;
    let mut fs = srv.scripts.functions();
    let name = String::from_utf8_lossy(args.get(2)).into_owned();
    if fs.libraries.remove(&name).is_none() {
        return Err(ReplyError::err_static("Library not found"));
    }
    publish_counts(srv, &fs);
    emit(srv, &fs);
    ctx.out.ok();
    Ok(())
}

pub(crate) fn function_flush(ctx: &mut Ctx<'_>, args: &Args<'_>) -> CmdResult {
    if args.len() > 3 {
        return Err(subcommand_syntax(args));
    }
    if args.len() == 3
        && !args.get(2).eq_ignore_ascii_case(b"sync")
        && !args.get(2).eq_ignore_ascii_case(b"async")
    {
        return Err(ReplyError::err_static(
            "FUNCTION FLUSH only supports SYNC|ASYNC option",
        ));
    }
    let srv = ctx.srv;
    let mut fs = srv.scripts.functions();
    // A new VM, as Redis recreates its engine.
    *fs = Functions::default();
    publish_counts(srv, &fs);
    emit(srv, &fs);
    ctx.out.ok();
    Ok(())
}

pub(crate) fn function_dump(ctx: &mut Ctx<'_>, _args: &Args<'_>) -> CmdResult {
    let payload = dump_payload(&ctx.srv.scripts.functions());
    ctx.out.bulk(&payload);
    Ok(())
}

pub(crate) fn function_restore(ctx: &mut Ctx<'_>, args: &Args<'_>) -> CmdResult {
    #[derive(PartialEq)]
    enum Policy {
        Flush,
        Append,
        Replace,
    }
    let policy = match args.len() {
        3 => Policy::Append,
        4 => match args.get(3).to_ascii_lowercase().as_slice() {
            b"flush" => Policy::Flush,
            b"append" => Policy::Append,
            b"replace" => Policy::Replace,
            _ => {
                return Err(ReplyError::err_static(
                    "Wrong restore policy given, value should be either FLUSH, APPEND or REPLACE.",
                ));
            }
        },
        _ => return Err(subcommand_syntax(args)),
    };
    let codes = parse_payload(args.get(2))?;
    let srv = ctx.srv;
    let mut fs = srv.scripts.functions();
    let mut loaded = Vec::with_capacity(codes.len());
    for code in &codes {
        loaded.push(load_library(&mut fs, srv, code)?);
    }
    if policy == Policy::Flush {
        fs.libraries.clear();
    }
    install(&mut fs, loaded, policy != Policy::Append, true)?;
    publish_counts(srv, &fs);
    emit(srv, &fs);
    ctx.out.ok();
    Ok(())
}

pub(crate) fn function_list(ctx: &mut Ctx<'_>, args: &Args<'_>) -> CmdResult {
    let mut with_code = false;
    let mut pattern: Option<&[u8]> = None;
    let mut i = 2;
    while i < args.len() {
        let a = args.get(i);
        // A repeated option is an unknown argument, as in Redis.
        if !with_code && a.eq_ignore_ascii_case(b"withcode") {
            with_code = true;
        } else if pattern.is_none() && a.eq_ignore_ascii_case(b"libraryname") {
            if i + 1 >= args.len() {
                return Err(ReplyError::err_static(
                    "library name argument was not given",
                ));
            }
            i += 1;
            pattern = Some(args.get(i));
        } else {
            return Err(crate::err!(
                "Unknown argument {}",
                String::from_utf8_lossy(a)
            ));
        }
        i += 1;
    }
    let fs = ctx.srv.scripts.functions();
    let libs: Vec<(&String, &Library)> = fs
        .libraries
        .iter()
        .filter(|(n, _)| pattern.is_none_or(|p| crate::glob::glob_match(p, n.as_bytes(), false)))
        .collect();
    let out = &mut ctx.out;
    out.array(libs.len());
    for (name, lib) in libs {
        out.map(if with_code { 4 } else { 3 });
        out.bulk(b"library_name");
        out.bulk(name.as_bytes());
        out.bulk(b"engine");
        out.bulk(b"LUA");
        out.bulk(b"functions");
        out.array(lib.functions.len());
        for (fname, f) in &lib.functions {
            out.map(3);
            out.bulk(b"name");
            out.bulk(fname.as_bytes());
            out.bulk(b"description");
            match &f.description {
                Some(d) => out.bulk(d.as_bytes()),
                None => out.null(),
            }
            out.bulk(b"flags");
            let names = f.flags.names();
            out.set(names.len());
            for n in names {
                out.simple(n);
            }
        }
        if with_code {
            out.bulk(b"library_code");
            out.bulk(&lib.code);
        }
    }
    Ok(())
}

pub(crate) fn function_stats(ctx: &mut Ctx<'_>, _args: &Args<'_>) -> CmdResult {
    let srv = ctx.srv;
    let busy = &srv.scripts.busy;
    let running = busy.running_function();
    let out = &mut ctx.out;
    out.map(2);
    out.bulk(b"running_script");
    match running {
        Some((name, command, since)) => {
            out.map(3);
            out.bulk(b"name");
            out.bulk(name.as_bytes());
            out.bulk(b"command");
            out.array(command.len());
            for a in &command {
                out.bulk(a);
            }
            out.bulk(b"duration_ms");
            out.int((srv.clock.mono_ms)().saturating_sub(since) as i64);
        }
        None => out.null(),
    }
    out.bulk(b"engines");
    out.map(1);
    out.bulk(b"LUA");
    out.map(2);
    out.bulk(b"libraries_count");
    out.int(srv.scripts.library_count.load(Relaxed) as i64);
    out.bulk(b"functions_count");
    out.int(srv.scripts.function_count.load(Relaxed) as i64);
    Ok(())
}

pub(crate) fn function_kill(ctx: &mut Ctx<'_>, _args: &Args<'_>) -> CmdResult {
    super::kill(ctx, true)
}

pub(crate) fn function_help(ctx: &mut Ctx<'_>, _args: &Args<'_>) -> CmdResult {
    const HELP: &[&str] = &[
        "FUNCTION <subcommand> [<arg> [value] [opt] ...]. Subcommands are:",
        "LOAD [REPLACE] <FUNCTION CODE>",
        "    Create a new library with the given library name and code.",
        "DELETE <LIBRARY NAME>",
        "    Delete the given library.",
        "LIST [LIBRARYNAME PATTERN] [WITHCODE]",
        "    Return general information on all the libraries:",
        "    * Library name",
        "    * The engine used to run the Library",
        "    * Library description",
        "    * Functions list",
        "    * Library code (if WITHCODE is given)",
        "    It also possible to get only function that matches a pattern using LIBRARYNAME argument.",
        "STATS",
        "    Return information about the current function running:",
        "    * Function name",
        "    * Command used to run the function",
        "    * Duration in MS that the function is running",
        "    If no function is running, return nil",
        "    In addition, returns a list of available engines.",
        "KILL",
        "    Kill the current running function.",
        "FLUSH [ASYNC|SYNC]",
        "    Delete all the libraries.",
        "    When called without the optional mode argument, the behavior is determined by the",
        "    lazyfree-lazy-user-flush configuration directive. Valid modes are:",
        "    * ASYNC: Asynchronously flush the libraries.",
        "    * SYNC: Synchronously flush the libraries.",
        "DUMP",
        "    Return a serialized payload representing the current libraries, can be restored using FUNCTION RESTORE command",
        "RESTORE <PAYLOAD> [FLUSH|APPEND|REPLACE]",
        "    Restore the libraries represented by the given payload, it is possible to give a restore policy to",
        "    control how to handle existing libraries (default APPEND):",
        "    * FLUSH: delete all existing libraries.",
        "    * APPEND: appends the restored libraries to the existing libraries. On collision, abort.",
        "    * REPLACE: appends the restored libraries to the existing libraries, On collision, replace the old",
        "      libraries with the new libraries (notice that even on this option there is a chance of failure",
        "      in case of functions name collision with another library).",
        "HELP",
        "    Prints this help.",
    ];
    ctx.out.array(HELP.len());
    for l in HELP {
        ctx.out.simple(l);
    }
    Ok(())
}

pub(crate) fn fcall(ctx: &mut Ctx<'_>, args: &Args<'_>) -> CmdResult {
    fcall_generic(ctx, args, false)
}

pub(crate) fn fcall_ro(ctx: &mut Ctx<'_>, args: &Args<'_>) -> CmdResult {
    fcall_generic(ctx, args, true)
}

fn fcall_generic(ctx: &mut Ctx<'_>, args: &Args<'_>, ro: bool) -> CmdResult {
    let name = String::from_utf8_lossy(args.get(1)).into_owned();
    // Redis looks the function up before it reads the number of keys.
    let nk = match super::numkeys(args) {
        Ok(n) => n,
        Err(e) => {
            lookup(&ctx.srv.scripts.functions(), &name)?;
            return Err(match crate::args::parse_i64(args.get(2)) {
                None => ReplyError::err_static("Bad number of keys provided"),
                Some(_) => e,
            });
        }
    };
    let keys: Vec<&[u8]> = (0..nk).map(|i| args.get(3 + i)).collect();
    let argv: Vec<&[u8]> = (3 + nk..args.len()).map(|i| args.get(i)).collect();
    let command: Vec<Vec<u8>> = args.iter().map(|a| a.to_vec()).collect();
    super::run_function(ctx, &name, command, ro, &keys, &argv)
}

/// Redis's reply to a FUNCTION subcommand with too many arguments.
fn subcommand_syntax(args: &Args<'_>) -> ReplyError {
    crate::err!(
        "unknown subcommand or wrong number of arguments for '{}'. Try FUNCTION HELP.",
        String::from_utf8_lossy(args.get(1))
            .chars()
            .take(128)
            .collect::<String>()
    )
}

/// Finds a function for FCALL: its callback and flags.
pub(crate) fn lookup(fs: &Functions, name: &str) -> Result<(Function, ScriptFlags), ReplyError> {
    match fs.find(name) {
        Some((_, f)) => Ok((f.callback.clone(), f.flags)),
        None => Err(ReplyError::err_static("Function not found")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn payload_round_trip_and_lzf() {
        let mut fs = Functions::default();
        fs.libraries.insert(
            "a".into(),
            Library {
                code: b"#!lua name=a\nx".to_vec(),
                functions: BTreeMap::new(),
            },
        );
        let p = dump_payload(&fs);
        assert_eq!(
            parse_payload(&p).unwrap(),
            vec![b"#!lua name=a\nx".to_vec()]
        );
        let mut bad = p.clone();
        *bad.last_mut().unwrap() ^= 1;
        assert!(parse_payload(&bad).is_err());
        // "aaaaaaaaaa" in LZF: literal 'a', then a back-reference of 9 bytes at distance 1.
        assert_eq!(
            shoal_keyspace::rdb::lzf_decompress(&[0x00, b'a', 0xe0, 0x00, 0x00], 10).unwrap(),
            b"aaaaaaaaaa"
        );
    }
}
