//! The append-only effect log as the command layer sees it: BGREWRITEAOF, the figures INFO
//! `persistence` shows, and the offsets the log has written and fsynced, which a write under
//! `appendfsync always` waits for before its reply leaves. The log itself (files, the writer
//! thread, compaction, loading) is the server crate's `aof.rs`; its format is
//! `shoal_replication::aof`.

use std::sync::Mutex;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64};
use std::task::Waker;

use crate::error::ReplyError;
use crate::state::Action;
use crate::table::{Group, Spec, flag::*};
use crate::{Args, CmdResult, Ctx};

pub static COMMANDS: &[Spec] = &[
    Spec {
        name: "bgrewriteaof",
        arity: 1,
        flags: ADMIN | NOSCRIPT | NO_ASYNC_LOADING,
        group: Group::Server,
        since: "1.0.0",
        summary: "Asynchronously rewrites the append-only file to disk.",
        handler: Some(bgrewriteaof),
        ..Spec::DEFAULT
    },
    Spec {
        name: "waitaof",
        arity: 4,
        flags: NOSCRIPT,
        group: Group::Generic,
        since: "7.2.0",
        summary: "Blocks until all of the preceding write commands sent by the connection are written to the append-only file of the master and/or replicas.",
        tips: &["request_policy:all_shards", "response_policy:agg_min"],
        handler: Some(waitaof),
        type_categories: Some(&["@connection"]),
        ..Spec::DEFAULT
    },
];

/// Writers waiting for the log to be fsynced past their offset, at most this many at once (one
/// per connection waiting: `maxclients` bounds it first).
pub const FSYNC_WAITERS_MAX: usize = 100_000;

/// What the log's writer and its compaction publish, and the writers waiting on it.
#[derive(Debug)]
pub struct AofShared {
    /// `appendonly yes` and the writer runs.
    pub enabled: AtomicBool,
    pub rewriting: AtomicBool,
    /// A rewrite asked for while one ran: it starts when that one ends.
    pub rewrite_scheduled: AtomicBool,
    pub rewrites: AtomicU64,
    pub rewrite_failures_consecutive: AtomicU64,
    pub last_rewrite_failed: AtomicBool,
    /// Seconds the last rewrite took (-1: none yet).
    pub last_rewrite_time_s: AtomicI64,
    /// When the running rewrite started (ms since the epoch).
    pub rewrite_started_ms: AtomicU64,
    /// The last write or fsync of the log failed (cleared by the next that succeeds).
    pub last_write_failed: AtomicBool,
    /// Bytes of the log's files (base and incremental), and of its base.
    pub current_size: AtomicU64,
    pub base_size: AtomicU64,
    /// `aof_current_size` right after the last rewrite or load (the auto-rewrite rule's base).
    pub size_after_rewrite: AtomicU64,
    /// Stream offsets written to the log, and fsynced.
    pub written_offset: AtomicU64,
    pub fsynced_offset: AtomicU64,
    /// Times `everysec` found the previous fsync of the second still running.
    pub delayed_fsync: AtomicU64,
    /// Bytes cut from torn or damaged tails when the log was loaded at start.
    pub loaded_cut_bytes: AtomicU64,
    waiters: Mutex<Vec<(u64, Waker)>>,
    writer: Mutex<Option<Waker>>,
}

impl Default for AofShared {
    fn default() -> Self {
        AofShared {
            enabled: AtomicBool::new(false),
            rewriting: AtomicBool::new(false),
            rewrite_scheduled: AtomicBool::new(false),
            rewrites: AtomicU64::new(0),
            rewrite_failures_consecutive: AtomicU64::new(0),
            last_rewrite_failed: AtomicBool::new(false),
            last_rewrite_time_s: AtomicI64::new(-1),
            rewrite_started_ms: AtomicU64::new(0),
            last_write_failed: AtomicBool::new(false),
            current_size: AtomicU64::new(0),
            base_size: AtomicU64::new(0),
            size_after_rewrite: AtomicU64::new(0),
            written_offset: AtomicU64::new(0),
            fsynced_offset: AtomicU64::new(0),
            delayed_fsync: AtomicU64::new(0),
            loaded_cut_bytes: AtomicU64::new(0),
            waiters: Mutex::default(),
            writer: Mutex::default(),
        }
    }
}

impl AofShared {
    /// Whether the log holds (fsynced) the stream up to `offset`; if not, `waker` is woken when
    /// it does, or when a write of the log fails. False with no registration when too many wait
    /// (the caller polls again later).
    pub fn poll_fsynced(&self, offset: u64, waker: &Waker) -> bool {
        let mut w = self.waiters.lock().unwrap_or_else(|p| p.into_inner());
        // Checked under the lock: an fsync published before it is seen here, one after it finds
        // this waiter registered.
        if self.fsynced_offset.load(Relaxed) >= offset {
            return true;
        }
        if w.len() < FSYNC_WAITERS_MAX {
            w.push((offset, waker.clone()));
        }
        false
    }

    /// The writer fsynced the log up to `offset`: wakes the writers it satisfies.
    pub fn publish_fsynced(&self, offset: u64) {
        let mut w = self.waiters.lock().unwrap_or_else(|p| p.into_inner());
        self.fsynced_offset.fetch_max(offset, Relaxed);
        w.retain(|(o, waker)| {
            let done = *o <= offset;
            if done {
                waker.wake_by_ref();
            }
            !done
        });
    }

    /// Wakes every waiter (a write failed, or the log stopped): they look again.
    pub fn wake_all_waiters(&self) {
        let taken = std::mem::take(&mut *self.waiters.lock().unwrap_or_else(|p| p.into_inner()));
        for (_, w) in taken {
            w.wake();
        }
    }

    /// The writer registers how to wake it.
    pub fn set_writer(&self, waker: Option<Waker>) {
        *self.writer.lock().unwrap_or_else(|p| p.into_inner()) = waker;
    }

    /// Wakes the writer (a rewrite finished, shutdown, a setting changed).
    pub fn wake_writer(&self) {
        if let Some(w) = self
            .writer
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .as_ref()
        {
            w.wake_by_ref();
        }
    }
}

/// WAITAOF numlocal numreplicas timeout (Redis 7.2): replies `[local, replicas]`, how many of
/// this node's log (0 or 1) and of its replicas' logs hold the connection's last write fsynced,
/// once `numlocal` and `numreplicas` are reached or at the timeout (ms; 0: none).
fn waitaof(ctx: &mut Ctx<'_>, args: &Args<'_>) -> CmdResult {
    let numlocal = args.i64(1)?;
    let numreplicas = args.i64(2)?;
    let timeout = args.i64(3)?;
    if timeout < 0 {
        return Err(ReplyError::err_static("timeout is negative"));
    }
    if ctx.srv.repl.is_replica() {
        return Err(ReplyError::err_static(
            "WAITAOF cannot be used with replica instances. Please also note that writes to replicas are just local and are not propagated.",
        ));
    }
    let a = &ctx.srv.persist.aof;
    if numlocal > 0 && !a.enabled.load(Relaxed) {
        return Err(ReplyError::err_static(
            "WAITAOF cannot be used when numlocal is set but appendonly is disabled.",
        ));
    }
    let offset = ctx.client.repl.last_write_offset;
    let (local, replicas) = aof_acks(ctx.srv, offset);
    if local >= numlocal.max(0) as usize && replicas >= numreplicas.max(0) as usize {
        ctx.out.array(2);
        ctx.out.int(local as i64);
        ctx.out.int(replicas as i64);
        return Ok(());
    }
    let deadline = if timeout == 0 {
        0
    } else {
        // One millisecond more: the clock counts whole milliseconds, so "now" may be most of
        // one old, and the wait must never end before the whole timeout has passed.
        (ctx.srv.clock.mono_ms)() + timeout as u64 + 1
    };
    ctx.client.repl.action = Some(Action::WaitAof {
        offset,
        numlocal: numlocal.max(0) as usize,
        numreplicas: numreplicas.max(0) as usize,
        deadline_ms: deadline,
    });
    Ok(())
}

/// (this node's log holds `offset` fsynced: 0 or 1, replicas whose logs do).
pub fn aof_acks(srv: &crate::ServerState, offset: u64) -> (usize, usize) {
    let a = &srv.persist.aof;
    let local = (a.enabled.load(Relaxed) && a.fsynced_offset.load(Relaxed) >= offset) as usize;
    (local, srv.repl.facked(offset))
}

/// BGREWRITEAOF: the server compacts the log in the background (with `appendonly no`, it writes a
/// base snapshot into the log's folder, as Redis does).
fn bgrewriteaof(ctx: &mut Ctx<'_>, _args: &Args<'_>) -> CmdResult {
    if ctx.srv.persist.aof.rewriting.load(Relaxed) {
        return Err(ReplyError::err_static(
            "Background append only file rewriting already in progress",
        ));
    }
    ctx.client.repl.action = Some(Action::RewriteAof);
    ctx.out
        .simple("Background append only file rewriting started");
    Ok(())
}
