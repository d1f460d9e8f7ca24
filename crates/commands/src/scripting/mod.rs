//! Scripting: EVAL, EVALSHA, EVAL_RO, EVALSHA_RO and SCRIPT (LOAD, EXISTS, FLUSH, KILL, DEBUG,
//! HELP), as Redis 7.0 (`eval.c`, `script.c`, `script_lua.c`), on a Lua 5.1 VM ([`engine`]).
//! There is no Lua debugger: SCRIPT DEBUG accepts only NO.
//!
//! **Atomicity.** A script runs alone: it takes the exec gate exclusively, as EXEC does (inside
//! EXEC it already runs alone), and its commands run through the command table as EXEC's queued
//! commands do. Their writes are logged by the shards like any command's, so a script replicates
//! as the effects it had (Redis 7's only mode), never as the script: a script that reads TIME or
//! picks a random key writes the same data on every replica.
//!
//! **Busy scripts.** A script marks the node busy ([`Busy`]) for as long as it runs, with the
//! monotonic time it started. A request arriving meanwhile waits for it (as Redis serves
//! nothing during a script): its thread asleep on the exec gate the script holds, or, on a
//! connection while another thread's batch of scripts holds the gate, its task
//! (`Outcome::GateWait`, see `ExecGate`), until the script's batch lets go of the gate or
//! `busy-reply-threshold` passes; after that the request path asks
//! [`busy_admission`] and the request is answered `-BUSY`, except commands flagged `ALLOW_BUSY`
//! (SCRIPT KILL, FUNCTION KILL, ...), which run without the gate. SCRIPT KILL raises a flag that the VM's instruction-count hook
//! reads; a script that has written cannot be killed (`-UNKILLABLE`). A script that has run
//! [`engine::OFFLOAD_AFTER_MS`] asks, from that hook, for the runtime's duties to leave its
//! thread (the server's `offload_long_script`), so the other connections are answered (`-BUSY`
//! or their results) even with one worker thread; a short script runs in place like any
//! command.
//!
//! **The script cache** holds every script EVAL or SCRIPT LOAD compiled, until SCRIPT FLUSH
//! (which also starts a new VM); its size is bounded by [`SCRIPT_CACHE_BYTES_MAX`] (past it,
//! scripts are refused rather than cached without bound).

pub mod engine;
pub mod functions;
pub mod libs;
pub mod sha1;

use std::borrow::Cow;
use std::cell::RefCell;
use std::sync::atomic::Ordering::{Relaxed, SeqCst};
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicUsize};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock, PoisonError};

use mlua::{Table, Value};

use crate::args::{ERR_NOT_INTEGER, parse_i64};
use crate::state::ServerState;
use crate::table::{FindKeys, Group, KeySpec, Spec, flag::*, key::*};
use crate::{Args, CmdResult, Ctx, ReplyError};
use engine::{Engine, RunCtx, ScriptFlags};

const SC: Group = Group::Scripting;

/// Bytes of script source the cache may hold; a script that would pass it is refused.
pub const SCRIPT_CACHE_BYTES_MAX: usize = 64 << 20;
/// Declared keys of a script whose lookups are started before it runs (a cache hint each).
pub const SCRIPT_PREFETCH_KEYS_MAX: usize = 4;

const EVAL_KEYS: &[KeySpec] = &[KeySpec::at(2, RW | ACCESS | UPDATE)
    .find(FindKeys::Keynum {
        keynum_idx: 0,
        first_key: 1,
        step: 1,
    })
    .notes("We cannot tell how the keys will be used so we assume the worst, RW and UPDATE")];
const EVALSHA_KEYS: &[KeySpec] = &[KeySpec::at(2, RW | ACCESS | UPDATE).find(FindKeys::Keynum {
    keynum_idx: 0,
    first_key: 1,
    step: 1,
})];
const FCALL_KEYS: &[KeySpec] = EVAL_KEYS;
const EVAL_RO_KEYS: &[KeySpec] = &[KeySpec::at(2, RO | ACCESS)
    .find(FindKeys::Keynum {
        keynum_idx: 0,
        first_key: 1,
        step: 1,
    })
    .notes("We cannot tell how the keys will be used so we assume the worst, RO and ACCESS")];
const EVALSHA_RO_KEYS: &[KeySpec] = &[KeySpec::at(2, RO | ACCESS).find(FindKeys::Keynum {
    keynum_idx: 0,
    first_key: 1,
    step: 1,
})];

pub static COMMANDS: &[Spec] = &[
    Spec {
        name: "eval",
        arity: -3,
        flags: NOSCRIPT | STALE | SKIP_MONITOR | MAY_REPLICATE | NO_MANDATORY_KEYS | MOVABLEKEYS,
        keys: EVAL_KEYS,
        group: SC,
        since: "2.6.0",
        summary: "Execute a Lua script server side",
        complexity: "Depends on the script that is executed.",
        handler: Some(eval),
        ..Spec::DEFAULT
    },
    Spec {
        name: "eval_ro",
        arity: -3,
        flags: READONLY | NOSCRIPT | STALE | SKIP_MONITOR | NO_MANDATORY_KEYS | MOVABLEKEYS,
        keys: EVAL_RO_KEYS,
        group: SC,
        since: "7.0.0",
        summary: "Execute a read-only Lua script server side",
        complexity: "Depends on the script that is executed.",
        handler: Some(eval_ro),
        ..Spec::DEFAULT
    },
    Spec {
        name: "evalsha",
        arity: -3,
        flags: NOSCRIPT | STALE | SKIP_MONITOR | MAY_REPLICATE | NO_MANDATORY_KEYS | MOVABLEKEYS,
        keys: EVALSHA_KEYS,
        group: SC,
        since: "2.6.0",
        summary: "Execute a Lua script server side",
        complexity: "Depends on the script that is executed.",
        handler: Some(evalsha),
        ..Spec::DEFAULT
    },
    Spec {
        name: "evalsha_ro",
        arity: -3,
        flags: READONLY | NOSCRIPT | STALE | SKIP_MONITOR | NO_MANDATORY_KEYS | MOVABLEKEYS,
        keys: EVALSHA_RO_KEYS,
        group: SC,
        since: "7.0.0",
        summary: "Execute a read-only Lua script server side",
        complexity: "Depends on the script that is executed.",
        handler: Some(evalsha_ro),
        ..Spec::DEFAULT
    },
    Spec {
        name: "fcall",
        arity: -3,
        flags: NOSCRIPT | STALE | SKIP_MONITOR | MAY_REPLICATE | NO_MANDATORY_KEYS | MOVABLEKEYS,
        keys: FCALL_KEYS,
        group: SC,
        since: "7.0.0",
        summary: "Invoke a function",
        complexity: "Depends on the function that is executed.",
        handler: Some(functions::fcall),
        ..Spec::DEFAULT
    },
    Spec {
        name: "fcall_ro",
        arity: -3,
        flags: READONLY | NOSCRIPT | STALE | SKIP_MONITOR | NO_MANDATORY_KEYS | MOVABLEKEYS,
        keys: EVAL_RO_KEYS,
        group: SC,
        since: "7.0.0",
        summary: "Invoke a read-only function",
        complexity: "Depends on the function that is executed.",
        handler: Some(functions::fcall_ro),
        ..Spec::DEFAULT
    },
    Spec {
        name: "function",
        arity: -2,
        group: SC,
        since: "7.0.0",
        summary: "A container for function commands",
        complexity: "Depends on subcommand.",
        subcommands: &[
            Spec {
                name: "function|delete",
                arity: 3,
                flags: WRITE | NOSCRIPT,
                group: SC,
                since: "7.0.0",
                summary: "Delete a function by name",
                complexity: "O(1)",
                tips: &["request_policy:all_shards", "response_policy:all_succeeded"],
                handler: Some(functions::function_delete),
                ..Spec::DEFAULT
            },
            Spec {
                name: "function|dump",
                arity: 2,
                flags: NOSCRIPT,
                group: SC,
                since: "7.0.0",
                summary: "Dump all functions into a serialized binary payload",
                complexity: "O(N) where N is the number of functions",
                handler: Some(functions::function_dump),
                ..Spec::DEFAULT
            },
            Spec {
                name: "function|flush",
                arity: -2,
                flags: WRITE | NOSCRIPT,
                group: SC,
                since: "7.0.0",
                summary: "Deleting all functions",
                complexity: "O(N) where N is the number of functions deleted",
                tips: &["request_policy:all_shards", "response_policy:all_succeeded"],
                handler: Some(functions::function_flush),
                ..Spec::DEFAULT
            },
            Spec {
                name: "function|help",
                arity: 2,
                flags: LOADING | STALE,
                group: SC,
                since: "7.0.0",
                summary: "Show helpful text about the different subcommands",
                complexity: "O(1)",
                handler: Some(functions::function_help),
                ..Spec::DEFAULT
            },
            Spec {
                name: "function|kill",
                arity: 2,
                flags: NOSCRIPT | ALLOW_BUSY,
                group: SC,
                since: "7.0.0",
                summary: "Kill the function currently in execution.",
                complexity: "O(1)",
                tips: &["request_policy:all_shards", "response_policy:one_succeeded"],
                handler: Some(functions::function_kill),
                ..Spec::DEFAULT
            },
            Spec {
                name: "function|list",
                arity: -2,
                flags: NOSCRIPT,
                group: SC,
                since: "7.0.0",
                summary: "List information about all the functions",
                complexity: "O(N) where N is the number of functions",
                tips: &["nondeterministic_output_order"],
                handler: Some(functions::function_list),
                ..Spec::DEFAULT
            },
            Spec {
                name: "function|load",
                arity: -3,
                flags: WRITE | DENYOOM | NOSCRIPT,
                group: SC,
                since: "7.0.0",
                summary: "Create a function with the given arguments (name, code, description)",
                complexity: "O(1) (considering compilation time is redundant)",
                tips: &["request_policy:all_shards", "response_policy:all_succeeded"],
                handler: Some(functions::function_load),
                ..Spec::DEFAULT
            },
            Spec {
                name: "function|restore",
                arity: -3,
                flags: WRITE | DENYOOM | NOSCRIPT,
                group: SC,
                since: "7.0.0",
                summary: "Restore all the functions on the given payload",
                complexity: "O(N) where N is the number of functions on the payload",
                tips: &["request_policy:all_shards", "response_policy:all_succeeded"],
                handler: Some(functions::function_restore),
                ..Spec::DEFAULT
            },
            Spec {
                name: "function|stats",
                arity: 2,
                flags: NOSCRIPT | ALLOW_BUSY,
                group: SC,
                since: "7.0.0",
                summary: "Return information about the function currently running (name, description, duration)",
                complexity: "O(1)",
                tips: &[
                    "nondeterministic_output",
                    "request_policy:all_shards",
                    "response_policy:special",
                ],
                handler: Some(functions::function_stats),
                ..Spec::DEFAULT
            },
        ],
        ..Spec::DEFAULT
    },
    Spec {
        name: "script",
        arity: -2,
        group: SC,
        since: "2.6.0",
        summary: "A container for Lua scripts management commands",
        complexity: "Depends on subcommand.",
        subcommands: &[
            Spec {
                name: "script|debug",
                arity: 3,
                flags: NOSCRIPT,
                group: SC,
                since: "3.2.0",
                summary: "Set the debug mode for executed scripts.",
                complexity: "O(1)",
                handler: Some(script_debug),
                ..Spec::DEFAULT
            },
            Spec {
                name: "script|exists",
                arity: -3,
                flags: NOSCRIPT,
                group: SC,
                since: "2.6.0",
                summary: "Check existence of scripts in the script cache.",
                complexity: "O(N) with N being the number of scripts to check (so checking a single script is an O(1) operation).",
                tips: &[
                    "request_policy:all_shards",
                    "response_policy:agg_logical_and",
                ],
                handler: Some(script_exists),
                ..Spec::DEFAULT
            },
            Spec {
                name: "script|flush",
                arity: -2,
                flags: NOSCRIPT,
                group: SC,
                since: "2.6.0",
                summary: "Remove all the scripts from the script cache.",
                complexity: "O(N) with N being the number of scripts in cache",
                tips: &["request_policy:all_nodes", "response_policy:all_succeeded"],
                handler: Some(script_flush),
                ..Spec::DEFAULT
            },
            Spec {
                name: "script|help",
                arity: 2,
                flags: LOADING | STALE,
                group: SC,
                since: "5.0.0",
                summary: "Show helpful text about the different subcommands",
                complexity: "O(1)",
                handler: Some(script_help),
                ..Spec::DEFAULT
            },
            Spec {
                name: "script|kill",
                arity: 2,
                flags: NOSCRIPT | ALLOW_BUSY,
                group: SC,
                since: "2.6.0",
                summary: "Kill the script currently in execution.",
                complexity: "O(1)",
                tips: &["request_policy:all_shards", "response_policy:one_succeeded"],
                handler: Some(script_kill),
                ..Spec::DEFAULT
            },
            Spec {
                name: "script|load",
                arity: 3,
                flags: NOSCRIPT | STALE,
                group: SC,
                since: "2.6.0",
                summary: "Load a script into the scripts cache, without executing it.",
                complexity: "O(N) with N being the length in bytes of the script body.",
                tips: &["request_policy:all_nodes", "response_policy:all_succeeded"],
                handler: Some(script_load),
                ..Spec::DEFAULT
            },
        ],
        ..Spec::DEFAULT
    },
];

// ---- node state ----

/// The node's scripting state: the EVAL VM and its script cache, the functions VM and its
/// libraries, and the busy marker.
#[derive(Default)]
pub struct Scripting {
    eval: Mutex<Option<EvalVm>>,
    functions: Mutex<functions::Functions>,
    /// Libraries, functions and library code bytes (INFO and FUNCTION STATS read these).
    pub library_count: AtomicUsize,
    pub function_count: AtomicUsize,
    pub functions_bytes: AtomicUsize,
    pub busy: Busy,
    /// Scripts in the cache and their source bytes (INFO reads these without the VM lock).
    pub cached_scripts: AtomicUsize,
    pub cached_bytes: AtomicUsize,
    /// Bytes the EVAL VM used at the end of the last script (INFO `used_memory_vm_eval`).
    pub vm_bytes: AtomicUsize,
    /// `math.random`'s generator, shared by the node's VMs and kept across SCRIPT FLUSH.
    pub rand: Arc<Mutex<engine::Rand48>>,
    /// Set once by the server: moves the runtime's duties off the thread running a long script
    /// (see [`engine::Watch`]).
    pub offload: Arc<OnceLock<fn()>>,
}

impl std::fmt::Debug for Scripting {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Scripting")
    }
}

pub(crate) struct EvalVm {
    engine: Engine,
    scripts: std::collections::HashMap<String, CachedScript>,
    bytes: usize,
}

struct CachedScript {
    func: mlua::Function,
    flags: ScriptFlags,
}

/// What every request checks first: whether a script is running, since when, and whether it
/// was asked to stop.
#[derive(Debug, Default)]
pub struct Busy {
    /// Monotonic ms at which the running script started; 0 when none runs (the VM's hook reads
    /// it too).
    since_ms: Arc<AtomicU64>,
    /// Offload asks made for the running script ([`engine::Watch`]).
    offloads: Arc<AtomicU32>,
    /// The running script is a function (FCALL): its BUSY and KILL messages differ.
    function: AtomicBool,
    /// SCRIPT KILL / FUNCTION KILL asked the running script to stop (read by the VM's hook).
    pub kill: Arc<AtomicBool>,
    /// The running script has written (it cannot be killed).
    pub wrote: AtomicBool,
    /// The running function's name and command (FUNCTION STATS).
    running: Mutex<Option<(String, Vec<Vec<u8>>)>>,
}

impl Busy {
    /// Whether a script is running (one relaxed load: every request asks).
    #[inline]
    pub fn active(&self) -> bool {
        self.since_ms.load(SeqCst) != 0
    }

    /// A script is running and has run `busy-reply-threshold` or more: requests are refused
    /// (`-BUSY`) or run without the gate. One look at the start time, so a script ending
    /// meanwhile does not make it look past the threshold.
    pub fn past_threshold(&self, srv: &ServerState) -> bool {
        let since = self.since_ms.load(SeqCst);
        since != 0
            && (srv.clock.mono_ms)().saturating_sub(since) >= srv.config().busy_reply_threshold
    }

    /// A script is running and has run less than `busy-reply-threshold`: requests wait.
    pub fn waiting(&self, srv: &ServerState) -> bool {
        let since = self.since_ms.load(Relaxed);
        since != 0
            && (srv.clock.mono_ms)().saturating_sub(since) < srv.config().busy_reply_threshold
    }

    fn start(&self, now_mono_ms: u64, function: bool) {
        self.kill.store(false, Relaxed);
        self.wrote.store(false, Relaxed);
        self.offloads.store(0, Relaxed);
        self.function.store(function, Relaxed);
        // SeqCst, before the script raises the gate's exclusive flag (also SeqCst): a request
        // that finds the gate taken by a script finds it marked busy too, and waits without
        // blocking its thread (`ExecGate::shared_unless`).
        self.since_ms.store(now_mono_ms.max(1), SeqCst);
    }

    fn end(&self) {
        self.since_ms.store(0, Relaxed);
        self.kill.store(false, Relaxed);
        *self.running.lock().unwrap_or_else(PoisonError::into_inner) = None;
    }

    /// The running function: name, command and the monotonic ms it started.
    pub fn running_function(&self) -> Option<(String, Vec<Vec<u8>>, u64)> {
        let since = self.since_ms.load(Relaxed);
        if since == 0 || !self.function.load(Relaxed) {
            return None;
        }
        let g = self.running.lock().unwrap_or_else(PoisonError::into_inner);
        g.as_ref().map(|(n, c)| (n.clone(), c.clone(), since))
    }
}

/// Clears the busy marker however a script ends.
struct BusyGuard<'a>(&'a Busy);

impl Drop for BusyGuard<'_> {
    fn drop(&mut self) {
        self.0.end();
    }
}

/// What the request path does with a request while a script runs.
pub(crate) enum BusyAdmission {
    /// No script runs (any more): the normal path.
    Proceed,
    /// Below the threshold: wait and run it again ([`crate::Outcome::Paused`]).
    Wait,
    /// Past the threshold, an `ALLOW_BUSY` command: run it without the gate.
    Ungated,
    /// Past the threshold: `-BUSY`.
    Refuse(Option<&'static Spec>, ReplyError),
}

/// The `-BUSY` of a running function.
fn busy_function() -> ReplyError {
    ReplyError::Other {
        code: "BUSY",
        msg: Cow::Borrowed(
            "Redis is busy running a script. You can only call FUNCTION KILL or SHUTDOWN NOSAVE.",
        ),
    }
}

/// Redis's `processCommand` rule for a busy script (see the module comment).
pub(crate) fn busy_admission(srv: &ServerState, args: &Args<'_>) -> BusyAdmission {
    let busy = &srv.scripts.busy;
    if !busy.active() {
        return BusyAdmission::Proceed;
    }
    if busy.waiting(srv) {
        return BusyAdmission::Wait;
    }
    let Some(mut spec) = crate::table::lookup(args.get(0)) else {
        // Unknown commands are answered as such (Redis looks the name up first).
        return BusyAdmission::Ungated;
    };
    if !spec.subcommands.is_empty() && args.len() >= 2 {
        match spec.find_sub(args.get(1)) {
            Some(sub) => spec = sub,
            None => return BusyAdmission::Ungated,
        }
    }
    if spec.has(ALLOW_BUSY) {
        return BusyAdmission::Ungated;
    }
    let e = if busy.function.load(Relaxed) {
        busy_function()
    } else {
        ReplyError::Busy
    };
    BusyAdmission::Refuse(Some(spec), e)
}

impl Scripting {
    fn vm(&self) -> MutexGuard<'_, Option<EvalVm>> {
        self.eval.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn functions(&self) -> MutexGuard<'_, functions::Functions> {
        self.functions
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// What a VM's hook watches (see [`engine::Watch`]).
    pub(crate) fn watch(&self, mono_ms: fn() -> u64) -> engine::Watch {
        engine::Watch {
            kill: self.busy.kill.clone(),
            since_ms: self.busy.since_ms.clone(),
            offloads: self.busy.offloads.clone(),
            offload: self.offload.clone(),
            mono_ms,
        }
    }

    /// The EVAL VM, created on first use.
    fn with_vm<R>(
        &self,
        mono_ms: fn() -> u64,
        f: impl FnOnce(&mut EvalVm) -> R,
    ) -> Result<R, ReplyError> {
        let mut g = self.vm();
        if g.is_none() {
            let engine = Engine::new(self.watch(mono_ms), engine::KILLED, self.rand.clone())
                .map_err(|e| crate::err!("Failed to start the Lua engine: {e}"))?;
            *g = Some(EvalVm {
                engine,
                scripts: Default::default(),
                bytes: 0,
            });
        }
        Ok(f(g.as_mut().expect("created above")))
    }
}

/// Whether a request counts as a write for CLIENT PAUSE WRITE and for a transaction holding it,
/// as Redis's `getCommandFlags` decides: a script command (EVAL, EVALSHA, FCALL) whose script
/// declared flags writes unless it declared `no-writes`; one without flags, or not found, may
/// replicate, so it counts. Anything else by its flags. The script caches are only tried: while
/// a script holds them, the request counts as a write.
pub fn pause_counts_as_write(srv: &ServerState, spec: &Spec, args: &Args<'_>) -> bool {
    if spec.group != Group::Scripting || !spec.has(MAY_REPLICATE) || args.len() < 2 {
        return spec.has(WRITE | MAY_REPLICATE);
    }
    let flags = match spec.name {
        "eval" => shebang(args.get(1)).ok().map(|(f, _)| f),
        "evalsha" => {
            let sha = String::from_utf8_lossy(args.get(1)).to_ascii_lowercase();
            srv.scripts.eval.try_lock().ok().and_then(|g| {
                g.as_ref()
                    .and_then(|vm| vm.scripts.get(&sha).map(|c| c.flags))
            })
        }
        _ => {
            let name = String::from_utf8_lossy(args.get(1));
            srv.scripts
                .functions
                .try_lock()
                .ok()
                .and_then(|fs| functions::lookup(&fs, &name).ok().map(|(_, f)| f))
        }
    };
    flags.is_none_or(|f| f.legacy || !f.no_writes)
}

// ---- script bodies ----

/// Parses a `#!lua flags=...` first line (EVAL's shebang) into flags; the body keeps its line
/// count (the shebang line is blanked) so error positions stay right.
fn shebang(body: &[u8]) -> Result<(ScriptFlags, Cow<'_, [u8]>), ReplyError> {
    if !body.starts_with(b"#!") {
        return Ok((
            ScriptFlags {
                legacy: true,
                ..ScriptFlags::default()
            },
            Cow::Borrowed(body),
        ));
    }
    let end = body.iter().position(|&b| b == b'\n').unwrap_or(body.len());
    let line = String::from_utf8_lossy(&body[..end]).into_owned();
    let mut parts = line.split(' ').filter(|p| !p.is_empty());
    let engine = parts.next().unwrap_or("");
    if engine != "#!lua" {
        return Err(crate::err!("Unexpected engine in script shebang: {engine}"));
    }
    let mut flags = ScriptFlags::default();
    for part in parts {
        let Some(list) = part.strip_prefix("flags=") else {
            return Err(crate::err!("Unknown lua shebang option: {part}"));
        };
        for f in list.split(',').filter(|f| !f.is_empty()) {
            if !flags.set(f.as_bytes()) {
                return Err(crate::err!("Unexpected flag in script shebang: {f}"));
            }
        }
    }
    let mut v = body[end..].to_vec();
    v.shrink_to_fit();
    Ok((flags, Cow::Owned(v)))
}

/// Compiles `body` into the cache (if not there) and returns its SHA-1.
fn load_script(vm: &mut EvalVm, srv: &ServerState, body: &[u8]) -> Result<String, ReplyError> {
    let sha = sha1::sha1_hex(body);
    if vm.scripts.contains_key(&sha) {
        return Ok(sha);
    }
    let (flags, code) = shebang(body)?;
    if vm.bytes + body.len() > SCRIPT_CACHE_BYTES_MAX {
        return Err(ReplyError::err_static(
            "Script cache is full (SCRIPT FLUSH frees it)",
        ));
    }
    let func = vm
        .engine
        .compile(&code, engine::USER_SOURCE)
        .map_err(|m| crate::err!("Error compiling script (new function): {m}"))?;
    vm.bytes += body.len();
    vm.scripts.insert(sha.clone(), CachedScript { func, flags });
    srv.scripts.cached_scripts.store(vm.scripts.len(), Relaxed);
    srv.scripts.cached_bytes.store(vm.bytes, Relaxed);
    Ok(sha)
}

// ---- commands ----

fn eval(ctx: &mut Ctx<'_>, args: &Args<'_>) -> CmdResult {
    eval_generic(ctx, args, false, false)
}

fn eval_ro(ctx: &mut Ctx<'_>, args: &Args<'_>) -> CmdResult {
    eval_generic(ctx, args, false, true)
}

fn evalsha(ctx: &mut Ctx<'_>, args: &Args<'_>) -> CmdResult {
    eval_generic(ctx, args, true, false)
}

fn evalsha_ro(ctx: &mut Ctx<'_>, args: &Args<'_>) -> CmdResult {
    eval_generic(ctx, args, true, true)
}

/// The keys and arguments after `script numkeys` (Redis's checks, in its order).
pub(crate) fn numkeys(args: &Args<'_>) -> Result<usize, ReplyError> {
    let n = parse_i64(args.get(2)).ok_or(ERR_NOT_INTEGER)?;
    if n > args.len() as i64 - 3 {
        return Err(ReplyError::err_static(
            "Number of keys can't be greater than number of args",
        ));
    }
    if n < 0 {
        return Err(ReplyError::err_static("Number of keys can't be negative"));
    }
    Ok(n as usize)
}

fn eval_generic(ctx: &mut Ctx<'_>, args: &Args<'_>, by_sha: bool, ro: bool) -> CmdResult {
    let nk = numkeys(args)?;
    let keys: Vec<&[u8]> = (0..nk).map(|i| args.get(3 + i)).collect();
    let argv: Vec<&[u8]> = (3 + nk..args.len()).map(|i| args.get(i)).collect();
    let srv = ctx.srv;
    let script = |vm: &mut EvalVm| -> Result<(String, mlua::Function, ScriptFlags), ReplyError> {
        let loaded;
        let mut lower = [0u8; 40];
        let sha: &str = if by_sha {
            // A SHA-1 is 40 hex digits, in either case.
            let given = args.get(1);
            if given.len() != lower.len() {
                return Err(ReplyError::NoScript);
            }
            for (l, g) in lower.iter_mut().zip(given) {
                *l = g.to_ascii_lowercase();
            }
            std::str::from_utf8(&lower).map_err(|_| ReplyError::NoScript)?
        } else {
            loaded = load_script(vm, srv, args.get(1))?;
            &loaded
        };
        let Some(s) = vm.scripts.get(sha) else {
            return Err(ReplyError::NoScript);
        };
        if ro && !s.flags.legacy && !s.flags.no_writes {
            return Err(ReplyError::err_static(
                "Can not execute a script with write flag using *_ro command.",
            ));
        }
        Ok((sha.to_string(), s.func.clone(), s.flags))
    };
    run_script(ctx, script, ro, &keys, &argv)
}

/// The checks Redis makes before running a script with flags (`evalGetCommandFlags` and
/// `scriptPrepareForRun`): a script that may write is refused on a read-only replica and, unless
/// `allow-oom`, when memory is full; a `no-cluster` script in cluster mode.
pub(crate) fn check_script_flags(ctx: &mut Ctx<'_>, flags: ScriptFlags) -> CmdResult {
    if flags.legacy {
        return Ok(());
    }
    let srv = ctx.srv;
    if flags.no_cluster && srv.cluster.is_some() {
        return Err(ReplyError::err_static(
            "Can not run script on cluster, 'no-cluster' flag is set.",
        ));
    }
    if !flags.no_writes {
        if srv.repl.is_replica() && srv.hot.replica_read_only.load(Relaxed) {
            return Err(ReplyError::ReadOnly);
        }
        if !crate::good_replicas_ok(srv, ctx.now_ms) {
            return Err(ReplyError::NoReplicas);
        }
        if !flags.allow_oom && !crate::ensure_memory(srv, ctx.now_ms) {
            return Err(ReplyError::Oom);
        }
    }
    Ok(())
}

/// Runs a script alone (exec gate held exclusively; the script is looked up, or compiled, by
/// `script` once the gate is held, so a concurrent SCRIPT FLUSH cannot pull it away), marks the
/// node busy meanwhile, and writes its reply.
pub(crate) fn run_script(
    ctx: &mut Ctx<'_>,
    script: impl FnOnce(&mut EvalVm) -> Result<(String, mlua::Function, ScriptFlags), ReplyError>,
    ro: bool,
    keys: &[&[u8]],
    argv: &[&[u8]],
) -> CmdResult {
    let srv = ctx.srv;
    // The keys a script declares are what its calls will look up: their lines start loading
    // now and arrive while the gate is taken and the VM set up (a lookup that misses the cache
    // costs a few hundred ns, a good part of a short script's run).
    for key in keys.iter().take(SCRIPT_PREFETCH_KEYS_MAX) {
        srv.ks.prefetch(ctx.client.db, key);
    }
    let busy = &srv.scripts.busy;
    // Marked busy before taking the gate: requests arriving now wait instead of blocking on it.
    busy.start((srv.clock.mono_ms)(), false);
    let _busy = BusyGuard(busy);
    let _alone = if ctx.in_exec {
        None
    } else {
        ctx.gate = None;
        Some(srv.gate.exclusive_batched())
    };
    srv.scripts.with_vm(srv.clock.mono_ms, |_| ())?;
    let mut guard = srv.scripts.vm();
    let vm = guard.as_mut().expect("created above");
    let (name, func, flags) = script(vm)?;
    check_script_flags(ctx, flags)?;
    let engine = &vm.engine;
    let max = srv.maxmemory() as usize;
    let run = RefCell::new(RunCtx {
        oom_at_start: max != 0 && srv.used_memory() > max,
        declared_slot: keys.first().map(|k| shoal_keyspace::key_slot(k)),
        db: ctx.client.db,
        ctx,
        flags,
        read_only_call: ro,
        wrote: false,
        wrote_flag: &busy.wrote,
    });
    let result = engine.run(&run, &func, engine::Inputs::Globals { keys, argv });
    srv.scripts
        .vm_bytes
        .store(engine.lua.used_memory(), Relaxed);
    run_result(run.into_inner().ctx, result, &name)
}

/// The reply of a finished script or function: `Err` for its error (raised or returned). An
/// error a command of the script already counted (its table says so, as Redis's does) is not
/// counted again, but the script's command still counts as failed.
fn run_result(
    ctx: &mut Ctx<'_>,
    result: mlua::Result<Result<(), engine::Failure>>,
    name: &str,
) -> CmdResult {
    match result {
        Ok(Ok(())) => Ok(()),
        Ok(Err(f)) => {
            if let Value::Table(t) = &f.value {
                ctx.error_counted = matches!(
                    t.raw_get::<Value>(engine::IGNORE_STATS_FIELD.to_str().expect("ASCII")),
                    Ok(Value::Boolean(true))
                );
            }
            Err(if f.returned {
                returned_error(&f.value)
            } else {
                script_error(&f.value, name)
            })
        }
        Err(e) => Err(crate::err!(
            "Error running script {name}, {}",
            engine::error_text(&e)
        )),
    }
}

/// The reply for an error table a script returned: its `err` line as it is (Redis writes
/// `-<err>`, without the position a raised error gets).
fn returned_error(e: &Value) -> ReplyError {
    match e {
        Value::Table(t) => match t.raw_get::<Value>("err") {
            Ok(Value::String(s)) => raw_error(s.to_string_lossy()),
            _ => ReplyError::Script(String::new()),
        },
        _ => ReplyError::Script(String::new()),
    }
}

/// Runs a function (FCALL) as [`run_script`] runs a script: alone, marked busy, with
/// `callback(keys, args)`.
pub(crate) fn run_function(
    ctx: &mut Ctx<'_>,
    name: &str,
    command: Vec<Vec<u8>>,
    ro: bool,
    keys: &[&[u8]],
    argv: &[&[u8]],
) -> CmdResult {
    let srv = ctx.srv;
    let busy = &srv.scripts.busy;
    busy.start((srv.clock.mono_ms)(), true);
    *busy.running.lock().unwrap_or_else(PoisonError::into_inner) =
        Some((name.to_string(), command));
    let _busy = BusyGuard(busy);
    let _alone = if ctx.in_exec {
        None
    } else {
        ctx.gate = None;
        Some(srv.gate.exclusive_batched())
    };
    let mut fs = srv.scripts.functions();
    let (callback, flags) = functions::lookup(&fs, name)?;
    if ro && !flags.no_writes {
        return Err(ReplyError::err_static(
            "Can not execute a script with write flag using *_ro command.",
        ));
    }
    check_script_flags(ctx, flags)?;
    let engine = fs.engine(srv)?;
    let target = engine
        .bind(&callback, keys, argv)
        .map_err(|e| crate::err!("{}", engine::error_text(&e)))?;
    let max = srv.maxmemory() as usize;
    let run = RefCell::new(RunCtx {
        oom_at_start: max != 0 && srv.used_memory() > max,
        declared_slot: keys.first().map(|k| shoal_keyspace::key_slot(k)),
        db: ctx.client.db,
        ctx,
        flags,
        read_only_call: ro,
        wrote: false,
        wrote_flag: &busy.wrote,
    });
    let result = engine.run(&run, &target, engine::Inputs::Bound);
    run_result(run.into_inner().ctx, result, name)
}

/// The reply for a script's error table: `<err> script: <name>, on <source>:<line>.`
fn script_error(e: &Value, name: &str) -> ReplyError {
    let Value::Table(t) = e else {
        return crate::err!("Error running script {name}, execution failure");
    };
    let get = |t: &Table, k: &str| t.raw_get::<Value>(k).unwrap_or(Value::Nil);
    let msg = match get(t, "err") {
        Value::String(s) => s.to_string_lossy(),
        _ => "(null)".to_string(),
    };
    let mut line = msg;
    if let (Value::String(src), Some(l)) = (
        get(t, "source"),
        match get(t, "line") {
            Value::Integer(i) => Some(i),
            Value::Number(n) => Some(n as i64),
            _ => None,
        },
    ) {
        line.push_str(&format!(
            " script: {name}, on {}:{l}.",
            src.to_string_lossy()
        ));
    }
    raw_error(line)
}

/// An error line with its own code (`WRONGTYPE ...`, `MY error`), counted under that code when
/// it is one shoal knows.
pub(crate) fn raw_error(line: String) -> ReplyError {
    let line: String = line
        .chars()
        .map(|c| if c == '\r' || c == '\n' { ' ' } else { c })
        .collect();
    if let Some(rest) = line.strip_prefix("ERR ") {
        return ReplyError::Err(Cow::Owned(rest.to_string()));
    }
    match line.as_str() {
        l if l == ReplyError::WrongType.to_string() => ReplyError::WrongType,
        l if l == ReplyError::Oom.to_string() => ReplyError::Oom,
        l if l == ReplyError::ReadOnly.to_string() => ReplyError::ReadOnly,
        _ => ReplyError::Script(line),
    }
}

/// Cluster mode: a script's command may touch only keys this node serves, and (unless the
/// script allows cross-slot keys) only keys of the slot the script declared.
pub(crate) fn cluster_check(
    rc: &mut RunCtx<'_, '_>,
    spec: &'static Spec,
    args: &Args<'_>,
) -> Option<String> {
    let srv = rc.ctx.srv;
    let cl = srv.cluster.as_ref()?;
    if !rc.flags.allow_cross_slot {
        let keys = crate::keyspec::keys(spec, args).ok()?;
        for k in keys.iter() {
            let slot = shoal_keyspace::key_slot(args.get(k.pos));
            match rc.declared_slot {
                Some(d) if d != slot => {
                    return Some(
                        "ERR Script attempted to access keys that do not hash to the same slot"
                            .into(),
                    );
                }
                None => rc.declared_slot = Some(slot),
                _ => {}
            }
        }
    }
    match crate::cluster::route_request(srv, cl, rc.ctx.client, spec, args, false, rc.ctx.now_ms) {
        Ok(_) | Err(ReplyError::CrossSlot) => None,
        Err(_) => Some("ERR Script attempted to access a non local key in a cluster node".into()),
    }
}

fn script_load(ctx: &mut Ctx<'_>, args: &Args<'_>) -> CmdResult {
    let srv = ctx.srv;
    let sha = srv
        .scripts
        .with_vm(srv.clock.mono_ms, |vm| load_script(vm, srv, args.get(2)))??;
    ctx.out.bulk(sha.as_bytes());
    Ok(())
}

fn script_exists(ctx: &mut Ctx<'_>, args: &Args<'_>) -> CmdResult {
    let found: Vec<bool> = {
        let g = ctx.srv.scripts.vm();
        args.tail(2)
            .iter()
            .map(|sha| {
                let sha = String::from_utf8_lossy(sha).to_ascii_lowercase();
                g.as_ref().is_some_and(|vm| vm.scripts.contains_key(&sha))
            })
            .collect()
    };
    ctx.out.array(found.len());
    for f in found {
        ctx.out.int(f as i64);
    }
    Ok(())
}

/// SCRIPT DEBUG YES|SYNC|NO, with Redis 7.0's checks in its order: not after replies still
/// waiting to be sent (a pipeline, or inside EXEC, whose reply has begun), then the mode. shoal
/// has no Lua debugger: NO, which leaves debugging off, is `+OK`; YES and SYNC are refused.
fn script_debug(ctx: &mut Ctx<'_>, args: &Args<'_>) -> CmdResult {
    // The connection's output buffer holds the replies of this batch not sent yet.
    if !ctx.out.buf.is_empty() {
        return Err(ReplyError::err_static(
            "SCRIPT DEBUG must be called outside a pipeline",
        ));
    }
    let mode = args.get(2);
    if mode.eq_ignore_ascii_case(b"no") {
        ctx.out.ok();
        Ok(())
    } else if mode.eq_ignore_ascii_case(b"yes") || mode.eq_ignore_ascii_case(b"sync") {
        Err(ReplyError::err_static(
            "the Lua debugger (SCRIPT DEBUG YES|SYNC) is not supported by shoal",
        ))
    } else {
        Err(ReplyError::err_static("Use SCRIPT DEBUG YES/SYNC/NO"))
    }
}

fn script_flush(ctx: &mut Ctx<'_>, args: &Args<'_>) -> CmdResult {
    if args.len() > 3
        || (args.len() == 3
            && !args.get(2).eq_ignore_ascii_case(b"sync")
            && !args.get(2).eq_ignore_ascii_case(b"async"))
    {
        return Err(ReplyError::err_static(
            "SCRIPT FLUSH only support SYNC|ASYNC option",
        ));
    }
    let srv = ctx.srv;
    // A new VM: nothing a script left behind survives (as Redis recreates its Lua state).
    let old = srv.scripts.vm().take();
    drop(old);
    srv.scripts.cached_scripts.store(0, Relaxed);
    srv.scripts.cached_bytes.store(0, Relaxed);
    srv.scripts.vm_bytes.store(0, Relaxed);
    ctx.out.ok();
    Ok(())
}

/// SCRIPT KILL and FUNCTION KILL (`function`): Redis's `scriptKill`.
pub(crate) fn kill(ctx: &mut Ctx<'_>, function: bool) -> CmdResult {
    let busy = &ctx.srv.scripts.busy;
    if !busy.active() {
        return Err(ReplyError::Other {
            code: "NOTBUSY",
            msg: Cow::Borrowed("No scripts in execution right now."),
        });
    }
    if busy.wrote.load(Relaxed) {
        return Err(ReplyError::Other {
            code: "UNKILLABLE",
            msg: Cow::Borrowed(
                "Sorry the script already executed write commands against the dataset. You can either wait the script termination or kill the server in a hard way using the SHUTDOWN NOSAVE command.",
            ),
        });
    }
    let running_function = busy.function.load(Relaxed);
    if !function && running_function {
        return Err(busy_function());
    }
    if function && !running_function {
        return Err(ReplyError::Busy);
    }
    busy.kill.store(true, Relaxed);
    ctx.out.ok();
    Ok(())
}

fn script_kill(ctx: &mut Ctx<'_>, _args: &Args<'_>) -> CmdResult {
    kill(ctx, false)
}

fn script_help(ctx: &mut Ctx<'_>, _args: &Args<'_>) -> CmdResult {
    const HELP: &[&str] = &[
        "SCRIPT <subcommand> [<arg> [value] [opt] ...]. Subcommands are:",
        "DEBUG (YES|SYNC|NO)",
        "    Set the debug mode for subsequent scripts executed.",
        "EXISTS <sha1> [<sha1> ...]",
        "    Return information about the existence of the scripts in the script cache.",
        "FLUSH [ASYNC|SYNC]",
        "    Flush the Lua scripts cache. Very dangerous on replicas.",
        "    When called without the optional mode argument, the behavior is determined by the",
        "    lazyfree-lazy-user-flush configuration directive. Valid modes are:",
        "    * ASYNC: Asynchronously flush the scripts cache.",
        "    * SYNC: Synchronously flush the scripts cache.",
        "KILL",
        "    Kill the currently executing Lua script.",
        "LOAD <script>",
        "    Load a script into the scripts cache without executing it.",
        "HELP",
        "    Prints this help.",
    ];
    ctx.out.array(HELP.len());
    for l in HELP {
        ctx.out.simple(l);
    }
    Ok(())
}
