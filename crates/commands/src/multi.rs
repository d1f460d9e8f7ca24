//! Transactions: MULTI, EXEC, DISCARD, WATCH, UNWATCH; and the exec gate that makes EXEC atomic.
//!
//! **Queueing.** After MULTI, every admitted command except EXEC, DISCARD, MULTI, WATCH, QUIT and
//! RESET (which run at once, as in Redis) is queued with an owned copy of its arguments and answered
//! `+QUEUED`. A command refused before it could be queued (unknown, wrong arity, `NO_MULTI`, OOM, ...)
//! dooms the transaction: EXEC then replies `-EXECABORT`. Errors a command meets while running inside
//! EXEC are just its reply in the EXEC array; the other commands still run.
//!
//! **Atomicity: the exec gate.** Every command runs holding the gate *shared*; EXEC takes it
//! *exclusively*, so no other client's command runs between (or during) the commands of a
//! transaction. EXEC's commands lock shards exactly as they would outside, so commands that lock
//! the whole keyspace (FLUSHALL, KEYS, SWAPDB, INFO, ...) work unchanged inside EXEC, which a
//! design where EXEC pre-locks every shard and lends the guards out would deadlock on. The shared
//! side is a flag per thread (on its own cache line), so commands on different threads never write
//! the same line: a command pays one uncontended atomic exchange and a plain store.
//! (Background threads — the active-expiry cron, replication apply — do not take the gate; EXEC's
//! commands all see the same `now_ms`, so lazy expiry is consistent within a transaction.)
//!
//! **WATCH.** Each watched key records, under its shard lock, its version if it is live and the
//! shard's touch counter for it (`shoal_keyspace::shard::watch`). EXEC, holding the gate
//! exclusively, aborts (null reply) if a key live at WATCH is gone or has another version (written,
//! deleted, flushed, expired), or if a key's touch counter moved (created, even if deleted again;
//! moved by SWAPDB). Deleting a key that was already absent (FLUSHALL of an absent key, an entry
//! that had already expired being removed) changes nothing, as in Redis 7.0.

use crate::error::ReplyError;
use std::cell::{Cell, RefCell};
use std::marker::PhantomData;
use std::sync::atomic::Ordering::{AcqRel, Acquire, Relaxed, Release, SeqCst};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize};
use std::sync::{Arc, Condvar, Mutex, PoisonError};
use std::task::{Context, Poll, Waker};

use crate::args::OwnedArgs;

/// Tries of the exec gate's writer lock before sleeping on it (half spins, half yields), while
/// the hold is a short one (one script, one EXEC: microseconds, where a sleep costs a wake-up of
/// several microseconds per hand-over). A waiter that finds the holder running a batch of
/// scripts (`WriterLock::long_hold`) sleeps at once: the batch lasts up to
/// [`BATCH_HOLD_RUNS_MAX`] commands, and on a small machine a spinning or yielding waiter takes
/// the core from the load's own client or from the holder (10% fewer EVALSHA at pipeline 16).
const WRITER_SPINS_MAX: u32 = 256;
/// How often a waiter asleep on the writer lock looks whether it should give up (a script
/// past `busy-reply-threshold`); a release wakes it at once.
const WRITER_GIVE_UP_POLL: std::time::Duration = std::time::Duration::from_millis(1);
use crate::state::{Client, ServerState};
use crate::table::{FindKeys, Group, KeySpec, Spec, flag::*, key::*};
use crate::{Args, CmdResult, Ctx};

const TX: Group = Group::Transactions;

pub static COMMANDS: &[Spec] = &[
    Spec {
        name: "discard",
        arity: 1,
        flags: NOSCRIPT | LOADING | STALE | FAST | ALLOW_BUSY | TX_CONTROL | TX_OOM_EXEMPT,
        group: TX,
        since: "2.0.0",
        summary: "Discards a transaction.",
        handler: Some(discard_cmd),
        ..Spec::DEFAULT
    },
    Spec {
        name: "exec",
        arity: 1,
        flags: NOSCRIPT | LOADING | STALE | TX_CONTROL | TX_OOM_EXEMPT | TX_EXEC | SKIP_SLOWLOG,
        group: TX,
        since: "1.2.0",
        summary: "Executes all commands in a transaction.",
        handler: Some(exec),
        ..Spec::DEFAULT
    },
    Spec {
        name: "multi",
        arity: 1,
        flags: NOSCRIPT | LOADING | STALE | FAST | ALLOW_BUSY | TX_CONTROL,
        group: TX,
        since: "1.2.0",
        summary: "Starts a transaction.",
        handler: Some(multi),
        ..Spec::DEFAULT
    },
    Spec {
        name: "unwatch",
        arity: 1,
        flags: NOSCRIPT | LOADING | STALE | FAST | ALLOW_BUSY,
        group: TX,
        since: "2.2.0",
        summary: "Forgets about watched keys of a transaction.",
        handler: Some(unwatch),
        ..Spec::DEFAULT
    },
    Spec {
        name: "watch",
        arity: -2,
        flags: NOSCRIPT | LOADING | STALE | FAST | ALLOW_BUSY | TX_CONTROL,
        keys: &[KeySpec::at(1, RO).find(FindKeys::Range {
            last_key: -1,
            step: 1,
            limit: 0,
        })],
        group: TX,
        since: "2.2.0",
        summary: "Monitors changes to keys to determine the execution of a transaction.",
        handler: Some(watch),
        ..Spec::DEFAULT
    },
];

/// Bytes of queued arguments after which each further queued command re-checks the
/// `client-query-buffer-limit` bound (the queue is bounded by that limit).
const QUEUE_CHECK_BYTES: usize = 1 << 20;

// ---- the exec gate ----

/// Reader slots a gate hands to threads, one per thread (worker threads are few and fixed).
pub(crate) const GATE_SLOTS: usize = 64;

/// One thread's "may be running a command" flag, on its own cache line.
#[derive(Debug, Default)]
#[repr(align(128))]
struct Slot {
    inside: AtomicBool,
    /// Owned by a live thread.
    claimed: AtomicBool,
}

/// A reader-writer gate tuned for readers: commands hold it shared, EXEC exclusively.
///
/// Each thread owns a slot, so entering is one atomic exchange on a line no other thread writes
/// and leaving a plain store: commands on different threads never bounce a cache line. EXEC raises
/// `exclusive`, then waits until no slot is inside. Threads beyond [`GATE_SLOTS`] share a counter
/// (correct, just slower).
///
/// **Sticky threads.** A runtime worker (see [`ExecGate::set_sticky_thread`]) does not leave
/// after each command: it stays inside, and each later command only checks `exclusive` (a plain
/// load). It leaves when it finds `exclusive` raised (at its next command), when it parks (the
/// runtime's park hook calls [`ExecGate::release_thread`]) and before its own EXEC. So a busy
/// worker pays almost nothing per command, and an EXEC waits at most until every other worker
/// starts its next command or goes idle — never for a task's `.await`, since the hold belongs to
/// the thread, not to the task.
///
/// **Batch holds.** Scripts run alone too, and a pipeline of them would hand the gate from worker
/// to worker once per script. A script takes it with [`ExecGate::exclusive_batched`] instead: the
/// hold then belongs to the thread until the thread parks, a connection loop ends it before
/// something that waits ([`ExecGate::end_batch`]), or [`BATCH_HOLD_RUNS_MAX`] commands (scripts
/// or not) ran under it and another thread waits; so the scripts of the thread's pipelines (across its connections) share one
/// hand-over. A thread waiting for the gate sleeps after a few spins: a hand-over every 64
/// scripts costs one wake-up, where spinning or yielding would take the core from the holder.
///
/// **Waiting as a task.** A connection's request that finds another thread's batch hold does
/// not put its thread to sleep: it waits as a task ([`ExecGate::batch_held_elsewhere`],
/// [`ExecGate::batch_ended`]; `Outcome::GateWait`), so its thread parks or serves what it can.
/// The holder wakes such tasks when one of its connections ends a batch
/// ([`ExecGate::wake_tasks_here`]): from inside a task, the runtime queues them on the
/// holder's own thread, which runs them under its hold. A script load so collapses onto one
/// worker, as a script runs alone anyway, instead of handing the gate and the Lua VM's memory
/// between threads each time the holder runs out of ready connections.
#[derive(Debug)]
pub struct ExecGate {
    /// Distinguishes gates in the threads' slot caches (tests run many servers per process).
    id: u64,
    slots: Arc<[Slot]>,
    overflow: AtomicUsize,
    /// An EXEC wants or holds the gate.
    exclusive: AtomicBool,
    /// Held by the EXEC (or script batch) in progress; commands that find `exclusive` set wait
    /// for its release.
    writer: WriterLock,
    /// A batch hold is in place and has run more than one script (`BATCH` of the holding
    /// thread says whose): requests of other threads wait for it as tasks.
    batched: AtomicBool,
    /// Tasks waiting for the batch hold to end (one entry per waiting request: see
    /// [`GateWaitRegistration`]) and the generation of the list (one more each time it is
    /// woken and emptied); and how many there are.
    task_waiters: Mutex<(Vec<Waker>, u64)>,
    task_waiter_count: AtomicUsize,
}

impl Default for ExecGate {
    fn default() -> Self {
        static NEXT_ID: AtomicU64 = AtomicU64::new(1);
        ExecGate {
            id: NEXT_ID.fetch_add(1, Relaxed),
            slots: (0..GATE_SLOTS).map(|_| Slot::default()).collect(),
            overflow: AtomicUsize::new(0),
            exclusive: AtomicBool::new(false),
            writer: WriterLock::default(),
            batched: AtomicBool::new(false),
            task_waiters: Mutex::new((Vec::new(), 0)),
            task_waiter_count: AtomicUsize::new(0),
        }
    }
}

/// The longest a worker going idle sleeps while another thread's batch of scripts lasts
/// ([`ExecGate::idle_while_batch_elsewhere`]); it then parks as usual.
pub const IDLE_WHILE_BATCH_MAX: std::time::Duration = std::time::Duration::from_millis(50);

/// Commands (scripts or not) one batch hold runs before it lets a waiting thread have the gate.
pub const BATCH_HOLD_RUNS_MAX: u32 = 1024;

/// The gate's writer lock: a flag taken by compare-and-swap, so that a hold can outlive a scope
/// (a batch hold belongs to a thread, not to a guard). Holders keep it for microseconds, so a
/// waiter spins and yields a little before it sleeps on the condition variable: a sleep costs a
/// wake-up of several microseconds for each hand-over.
#[derive(Debug, Default)]
struct WriterLock {
    held: AtomicBool,
    /// Threads waiting for it (spinning or asleep): a batch hold gives way to them.
    waiting: AtomicUsize,
    /// Threads asleep on `cv` (the releaser wakes them only if there are any).
    sleepers: AtomicUsize,
    /// The holder runs a batch of scripts (its hold will last): waiters sleep without spinning.
    long_hold: AtomicBool,
    m: Mutex<()>,
    cv: Condvar,
}

impl WriterLock {
    fn try_take(&self) -> bool {
        self.held
            .compare_exchange(false, true, SeqCst, Relaxed)
            .is_ok()
    }

    /// Waits until `done()` (tried after each change): spins briefly, then sleeps until a
    /// release, looking at `give_up()` every [`WRITER_GIVE_UP_POLL`] while asleep. Returns
    /// `done()`'s success, false when it gave up.
    fn wait_until(&self, mut done: impl FnMut() -> bool, give_up: impl Fn() -> bool) -> bool {
        if done() {
            return true;
        }
        // The holder may need the shard this thread kept from its last command.
        shoal_keyspace::sticky::release();
        self.waiting.fetch_add(1, SeqCst);
        for spins in 0..WRITER_SPINS_MAX {
            if !self.held.load(Relaxed) && done() {
                self.waiting.fetch_sub(1, SeqCst);
                return true;
            }
            if self.long_hold.load(Relaxed) {
                break;
            }
            if spins < WRITER_SPINS_MAX / 2 {
                std::hint::spin_loop();
            } else {
                std::thread::yield_now();
            }
        }
        let mut g = self.m.lock().unwrap_or_else(PoisonError::into_inner);
        // Counted before looking (both SeqCst): either `done()` sees the release, or the
        // releaser sees a sleeper and wakes it (after it waits: the releaser takes `m`).
        self.sleepers.fetch_add(1, SeqCst);
        let got = loop {
            if done() {
                break true;
            }
            if give_up() {
                break false;
            }
            g = self
                .cv
                .wait_timeout(g, WRITER_GIVE_UP_POLL)
                .unwrap_or_else(PoisonError::into_inner)
                .0;
        };
        self.sleepers.fetch_sub(1, SeqCst);
        self.waiting.fetch_sub(1, SeqCst);
        got
    }

    fn take(&self) {
        self.wait_until(|| self.try_take(), || false);
    }

    /// Waits until the lock is free, without taking it, or until `give_up()` (false then).
    fn wait_free_unless(&self, give_up: impl Fn() -> bool) -> bool {
        self.wait_until(|| !self.held.load(SeqCst), give_up)
    }

    fn release(&self) {
        debug_assert!(self.held.load(Relaxed), "writer lock released while free");
        self.long_hold.store(false, Relaxed);
        self.held.store(false, SeqCst);
        if self.sleepers.load(SeqCst) > 0 {
            drop(self.m.lock().unwrap_or_else(PoisonError::into_inner));
            self.cv.notify_all();
        }
    }
}

/// Slot index meaning "no slot of its own: use the shared counter".
pub(crate) const OVERFLOW: usize = usize::MAX;

/// A thread's claim on a slot of a gate, released when the thread exits.
struct Claim {
    gate: u64,
    slots: Arc<[Slot]>,
    index: usize,
}

impl Drop for Claim {
    fn drop(&mut self) {
        if let Some(s) = self.slots.get(self.index) {
            s.inside.store(false, SeqCst);
            s.claimed.store(false, Release);
        }
    }
}

thread_local! {
    /// The last gate this thread used and its slot there: the per-command lookup.
    static LAST: Cell<(u64, usize)> = const { Cell::new((0, OVERFLOW)) };
    /// Every claim of this thread (normally one).
    static CLAIMS: RefCell<Vec<Claim>> = const { RefCell::new(Vec::new()) };
    /// This thread keeps its hold between commands (a runtime worker).
    static STICKY: Cell<bool> = const { Cell::new(false) };
    /// The gate this thread holds alone for a batch (0: none), and the scripts run under it.
    static BATCH: Cell<(u64, u32)> = const { Cell::new((0, 0)) };
}

/// A command's shared hold on the gate. Not `Send`: it is never held across an `.await`.
#[derive(Debug)]
pub struct GateShared<'a> {
    gate: &'a ExecGate,
    slot: usize,
    /// Leave on drop (not for a sticky thread, which stays inside).
    leave: bool,
    _not_send: PhantomData<*const ()>,
}

impl Drop for GateShared<'_> {
    fn drop(&mut self) {
        if self.leave {
            self.gate.leave(self.slot);
        }
    }
}

/// EXEC's exclusive hold on the gate. Not `Send`: a batch hold belongs to its thread.
#[derive(Debug)]
pub struct GateExclusive<'a> {
    gate: &'a ExecGate,
    /// Release on drop (not when the thread's batch hold carries on).
    release: bool,
    _not_send: PhantomData<*const ()>,
}

impl Drop for GateExclusive<'_> {
    fn drop(&mut self) {
        if self.release {
            self.gate.release_exclusive();
        }
    }
}

impl ExecGate {
    /// Makes the calling thread keep its hold between commands (see the type's comment). Only
    /// for threads whose idle moments call [`ExecGate::release_thread`].
    pub fn set_sticky_thread(on: bool) {
        STICKY.set(on);
    }

    /// Whether the calling thread keeps its hold between commands (a runtime worker).
    pub fn sticky_thread() -> bool {
        STICKY.get()
    }

    /// This thread's slot in this gate, claiming one on first use ([`OVERFLOW`] when every slot
    /// is taken). A slot belongs to one live thread at a time, so per-thread counters can use it
    /// (`cmdstats`).
    pub fn thread_slot(&self) -> usize {
        let (gate, index) = LAST.get();
        if gate == self.id {
            return index;
        }
        let index = CLAIMS.with(|c| {
            let mut claims = c.borrow_mut();
            if let Some(cl) = claims.iter().find(|cl| cl.gate == self.id) {
                return cl.index;
            }
            let index = self
                .slots
                .iter()
                .position(|s| {
                    s.claimed
                        .compare_exchange(false, true, AcqRel, Relaxed)
                        .is_ok()
                })
                .unwrap_or(OVERFLOW);
            claims.push(Claim {
                gate: self.id,
                slots: self.slots.clone(),
                index,
            });
            index
        });
        LAST.set((self.id, index));
        index
    }

    fn enter(&self, slot: usize) {
        match slot {
            OVERFLOW => {
                self.overflow.fetch_add(1, SeqCst);
            }
            i => {
                self.slots[i].inside.swap(true, SeqCst);
            }
        }
    }

    fn leave(&self, slot: usize) {
        // Release: what the command did happens-before an EXEC that sees the slot empty.
        match slot {
            OVERFLOW => {
                self.overflow.fetch_sub(1, Release);
            }
            i => self.slots[i].inside.store(false, Release),
        }
    }

    /// Whether the calling thread holds this gate alone for a batch.
    fn batch_held(&self) -> bool {
        BATCH.get().0 == self.id
    }

    /// Holds the gate shared: waits while an EXEC runs. One hold per thread at a time.
    pub fn shared(&self) -> GateShared<'_> {
        self.shared_unless(|| false)
            .expect("waits for the gate when `unless` never holds")
    }

    /// [`ExecGate::shared`], but gives up (`None`) instead of waiting on for the gate when it
    /// is held exclusively and `unless()` says so (looked at before the wait and every
    /// [`WRITER_GIVE_UP_POLL`] during it): a script past `busy-reply-threshold` must not keep a
    /// worker thread whose other connections are to be answered `-BUSY`.
    pub fn shared_unless(&self, unless: impl Fn() -> bool) -> Option<GateShared<'_>> {
        let slot = self.thread_slot();
        let sticky = STICKY.get() && slot != OVERFLOW;
        let held = |leave| GateShared {
            gate: self,
            slot,
            leave,
            _not_send: PhantomData,
        };
        if self.batch_held() {
            let (gate, runs) = BATCH.get();
            if runs < BATCH_HOLD_RUNS_MAX || self.writer.waiting.load(SeqCst) == 0 {
                // Alone already: nothing else runs until the batch ends. Every command counts
                // towards the batch's turn, so a thread busy with other commands does not keep
                // the gate from a waiting one for as long as it is busy.
                BATCH.set((gate, runs.saturating_add(1)));
                return Some(held(false));
            }
            self.end_batch();
        }
        if sticky && self.slots[slot].inside.load(Relaxed) {
            // Still inside since an earlier command: only look (an EXEC that raised the flag
            // after this load sees the slot inside and waits for the next look).
            if !self.exclusive.load(SeqCst) {
                return Some(held(false));
            }
            self.leave(slot);
            if unless() || !self.writer.wait_free_unless(&unless) {
                return None;
            }
        }
        loop {
            // Announce, then look (both SeqCst): either this command sees `exclusive`, or the
            // EXEC that raises it sees this thread inside and waits for it.
            self.enter(slot);
            if !self.exclusive.load(SeqCst) {
                return Some(held(!sticky));
            }
            self.leave(slot);
            if unless() || !self.writer.wait_free_unless(&unless) {
                return None;
            }
        }
    }

    /// Leaves the gate if the calling thread is inside between commands (a sticky thread going
    /// idle), and ends its batch hold. Cheap; safe to call at any time outside a command.
    pub fn release_thread(&self) {
        // A shard kept between commands is kept only inside the gate.
        shoal_keyspace::sticky::release();
        self.end_batch();
        let (gate, index) = LAST.get();
        if gate == self.id && index != OVERFLOW && self.slots[index].inside.load(Relaxed) {
            self.leave(index);
        }
    }

    /// Ends the calling thread's batch hold, if it has one: the connection loop calls it at the
    /// end of each batch and before anything that waits. Cheap when there is none.
    pub fn end_batch(&self) {
        if self.batch_held() {
            BATCH.set((0, 0));
            self.batched.store(false, SeqCst);
            self.release_exclusive();
            self.wake_tasks();
        }
    }

    /// Whether another thread holds the gate for a batch of scripts: a connection's request
    /// then waits as a task ([`ExecGate::batch_ended`]) instead of asleep on the gate. One
    /// load (a line written only when a batch starts or ends).
    #[inline]
    pub fn batch_held_elsewhere(&self) -> bool {
        self.batched.load(Acquire) && !self.batch_held()
    }

    /// Ready once no batch hold is in place (looked at again after registering, so a release
    /// in between is not missed). Wakes on the release, or earlier from
    /// [`ExecGate::wake_tasks_here`]. A request keeps one `registration` across its waits, so
    /// it is listed once however often it looks.
    pub fn batch_ended<'a>(&'a self, registration: &'a mut GateWaitRegistration) -> BatchEnded<'a> {
        BatchEnded {
            gate: self,
            registration,
        }
    }

    /// Called by a worker going idle: while another thread's batch of scripts lasts (at most
    /// [`IDLE_WHILE_BATCH_MAX`], or until `give_up()`), the thread sleeps here instead of
    /// parking. The runtime does not count it as parked, so the holder's thread, queueing
    /// tasks, does not wake it to take them (they would only wait for the holder again): the
    /// load stays on the holder's thread, which runs it under its hold.
    pub fn idle_while_batch_elsewhere(&self, give_up: impl Fn() -> bool) {
        if !self.batch_held_elsewhere() {
            return;
        }
        // Bounded by a count of polls, not a clock (this crate reads none): a wake-up before a
        // poll's end only shortens the sleep.
        let polls = IDLE_WHILE_BATCH_MAX.as_micros() / WRITER_GIVE_UP_POLL.as_micros();
        let w = &self.writer;
        let mut g = w.m.lock().unwrap_or_else(PoisonError::into_inner);
        // Counted before looking (both SeqCst; the release clears `batched` before it looks
        // at the sleepers): either this sees the batch end, or the release wakes it.
        w.sleepers.fetch_add(1, SeqCst);
        for _ in 0..polls {
            if !self.batched.load(SeqCst) || give_up() {
                break;
            }
            g =
                w.cv.wait_timeout(g, WRITER_GIVE_UP_POLL)
                    .unwrap_or_else(PoisonError::into_inner)
                    .0;
        }
        w.sleepers.fetch_sub(1, SeqCst);
    }

    /// Wakes the tasks waiting for the batch hold, if this thread holds it: called from a
    /// task, the runtime queues them on this thread, and they run under the hold.
    pub fn wake_tasks_here(&self) {
        if self.batch_held() {
            self.wake_tasks();
        }
    }

    fn wake_tasks(&self) {
        if self.task_waiter_count.load(SeqCst) == 0 {
            return;
        }
        let wakers = {
            let mut w = self
                .task_waiters
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            self.task_waiter_count.store(0, SeqCst);
            w.1 += 1;
            std::mem::take(&mut w.0)
        };
        for w in wakers {
            w.wake();
        }
    }

    fn release_exclusive(&self) {
        // Cleared before the writer lock is released, so commands waiting on that lock find the
        // gate open when they wake.
        self.exclusive.store(false, SeqCst);
        self.writer.release();
    }

    /// Holds the gate alone: waits for the commands running now to finish. The caller must not
    /// hold it shared (a sticky hold of its own thread is released here). Within the calling
    /// thread's batch hold it is held already.
    pub fn exclusive(&self) -> GateExclusive<'_> {
        if self.batch_held() {
            return GateExclusive {
                gate: self,
                release: false,
                _not_send: PhantomData,
            };
        }
        self.take_exclusive();
        GateExclusive {
            gate: self,
            release: true,
            _not_send: PhantomData,
        }
    }

    /// [`ExecGate::exclusive`] for a script: the hold lasts until the thread's batch ends
    /// ([`ExecGate::end_batch`]), so the next script of the batch finds it held. After
    /// [`BATCH_HOLD_RUNS_MAX`] commands under it, a thread waiting for the gate gets it first.
    pub fn exclusive_batched(&self) -> GateExclusive<'_> {
        let (gate, runs) = BATCH.get();
        if gate == self.id {
            if runs < BATCH_HOLD_RUNS_MAX || self.writer.waiting.load(Relaxed) == 0 {
                BATCH.set((gate, runs.saturating_add(1)));
                if !self.writer.long_hold.load(Relaxed) {
                    self.writer.long_hold.store(true, Relaxed);
                    // From its second script on, the batch will last: requests of other
                    // threads wait for it as tasks (one script alone is over sooner than a
                    // task's wait and wake-up).
                    self.batched.store(true, SeqCst);
                }
                return GateExclusive {
                    gate: self,
                    release: false,
                    _not_send: PhantomData,
                };
            }
            self.end_batch();
            // Let a waiter have it: wait (briefly) until one took it, then queue behind it.
            for _ in 0..WRITER_SPINS_MAX {
                if self.writer.held.load(Relaxed) || self.writer.waiting.load(Relaxed) == 0 {
                    break;
                }
                std::thread::yield_now();
            }
        } else if gate != 0 {
            // This thread holds another server's gate (tests run several per process): an
            // ordinary hold, so that one is not lost track of.
            return self.exclusive();
        }
        self.take_exclusive();
        BATCH.set((self.id, 1));
        GateExclusive {
            gate: self,
            release: false,
            _not_send: PhantomData,
        }
    }

    fn take_exclusive(&self) {
        self.release_thread();
        self.writer.take();
        self.exclusive.store(true, SeqCst);
        let busy = |spins: &mut u32| {
            *spins += 1;
            if *spins < 64 {
                std::hint::spin_loop();
            } else {
                std::thread::yield_now();
            }
        };
        // Commands hold the gate for microseconds and never wait on anything EXEC holds; a
        // sticky worker leaves at its next command or when it parks.
        for s in self.slots.iter() {
            let mut spins = 0;
            while s.inside.load(SeqCst) {
                busy(&mut spins);
            }
        }
        let mut spins = 0;
        while self.overflow.load(SeqCst) != 0 {
            busy(&mut spins);
        }
    }
}

/// A waiting request's place in the gate's list of waiting tasks: the list's generation when
/// it was put there (`None`: not listed).
#[derive(Debug, Default)]
pub struct GateWaitRegistration(Option<u64>);

/// The future of [`ExecGate::batch_ended`].
#[derive(Debug)]
pub struct BatchEnded<'a> {
    gate: &'a ExecGate,
    registration: &'a mut GateWaitRegistration,
}

impl std::future::Future for BatchEnded<'_> {
    type Output = ();

    fn poll(mut self: std::pin::Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let gate = self.gate;
        // Woken onto the holder's thread, it runs under the hold.
        if !gate.batched.load(SeqCst) || gate.batch_held() {
            return Poll::Ready(());
        }
        let mut w = gate
            .task_waiters
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if self.registration.0 == Some(w.1) {
            // Still listed (the list was not woken since): the release will wake it.
            return Poll::Pending;
        }
        // Counted before looking (both SeqCst, as the release clears `batched` before it reads
        // the count): either this sees the release, or the release sees this waiter.
        gate.task_waiter_count.fetch_add(1, SeqCst);
        if !gate.batched.load(SeqCst) {
            gate.task_waiter_count.fetch_sub(1, SeqCst);
            return Poll::Ready(());
        }
        w.0.push(cx.waker().clone());
        self.registration.0 = Some(w.1);
        Poll::Pending
    }
}

// ---- per-client state ----

/// A client's transaction state.
#[derive(Debug, Default)]
pub struct ClientTx {
    /// `Some` between MULTI and EXEC/DISCARD.
    queued: Option<Queued>,
    watched: Vec<Watched>,
}

impl ClientTx {
    /// The commands queued since MULTI (empty outside MULTI), in order.
    pub fn queued_commands(&self) -> impl Iterator<Item = (&'static Spec, Args<'_>)> {
        self.queued
            .iter()
            .flat_map(|q| q.cmds.iter().map(|(s, a)| (*s, a.args())))
    }
}

#[derive(Debug, Default)]
struct Queued {
    cmds: Vec<(&'static Spec, OwnedArgs)>,
    /// A command was refused while queueing: EXEC aborts.
    failed: bool,
    /// A queued command needs memory (EXEC is refused with -OOM when there is none).
    denyoom: bool,
    /// A queued command writes (EXEC is refused with -NOREPLICAS without enough good replicas).
    write: bool,
    /// A queued command writes or may replicate (EXEC waits out a CLIENT PAUSE WRITE).
    may_replicate: bool,
    bytes: usize,
}

/// A WATCHed key and what it was at WATCH time.
#[derive(Debug)]
struct Watched {
    db: usize,
    key: Vec<u8>,
    /// Version of the live entry, `None` if the key was absent (or already expired).
    version: Option<u64>,
    /// The shard's touch counter for the key.
    touches: u64,
}

impl ClientTx {
    pub fn in_multi(&self) -> bool {
        self.queued.is_some()
    }

    /// Dooms the transaction (a command was refused while queueing); no-op outside MULTI.
    pub fn fail(&mut self) {
        if let Some(q) = &mut self.queued {
            q.failed = true;
        }
    }

    pub fn queued_denyoom(&self) -> bool {
        self.queued.as_ref().is_some_and(|q| q.denyoom)
    }

    pub fn queued_write(&self) -> bool {
        self.queued.as_ref().is_some_and(|q| q.write)
    }

    pub fn queued_may_replicate(&self) -> bool {
        self.queued.as_ref().is_some_and(|q| q.may_replicate)
    }

    pub fn watched_keys(&self) -> usize {
        self.watched.len()
    }
}

// ---- rules the request path asks about ----

/// Queues a command inside MULTI and replies `+QUEUED`.
pub(crate) fn queue(
    srv: &ServerState,
    client: &mut Client,
    spec: &'static Spec,
    args: &Args<'_>,
    out: &mut Vec<u8>,
) {
    let q = client.tx.queued.as_mut().expect("queue only inside MULTI");
    let bytes = args.bytes() + args.len() * std::mem::size_of::<std::ops::Range<usize>>();
    if q.bytes + bytes > QUEUE_CHECK_BYTES {
        let max = srv.config().client_query_buffer_limit as usize;
        if q.bytes + bytes > max {
            q.failed = true;
            let e = ReplyError::err_static("MULTI queue exceeds client-query-buffer-limit");
            srv.stats.error_reply(&e);
            e.write_to(&mut shoal_resp::ReplyWriter::new(out, client.proto));
            return;
        }
    }
    q.bytes += bytes;
    q.denyoom |= spec.has(DENYOOM);
    q.write |= spec.has(WRITE);
    q.may_replicate |= crate::scripting::pause_counts_as_write(srv, spec, args);
    q.cmds.push((spec, OwnedArgs::from_args(args)));
    client.handle.multi_len.store(q.cmds.len() as i64, Relaxed);
    client.handle.multi_bytes.store(q.bytes, Relaxed);
    shoal_resp::ReplyWriter::new(out, client.proto).simple("QUEUED");
}

/// Ends a transaction without running it and forgets the watched keys (DISCARD, RESET, a refused
/// EXEC, a closing connection).
pub fn discard(srv: &ServerState, client: &mut Client) {
    client.tx.queued = None;
    client.handle.multi_len.store(-1, Relaxed);
    client.handle.multi_bytes.store(0, Relaxed);
    unwatch_all(srv, client);
}

/// Drops every WATCH of the client.
pub fn unwatch_all(srv: &ServerState, client: &mut Client) {
    for w in client.tx.watched.drain(..) {
        let slot = shoal_keyspace::key_slot(&w.key);
        srv.ks.lock(srv.ks.shard_of(slot)).unwatch_key(w.db, &w.key);
    }
    client.handle.watched_keys.store(0, Relaxed);
}

/// Whether any watched key changed since WATCH (see the module comment).
fn watched_changed(ctx: &Ctx<'_>) -> bool {
    ctx.client.tx.watched.iter().any(|w| {
        let (shard, slot) = ctx.shard(&w.key);
        let live = shard
            .peek(w.db, slot, &w.key, ctx.now_ms)
            .map(|e| e.version());
        live != w.version || shard.watch_touches(w.db, &w.key) != w.touches
    })
}

// ---- commands ----

fn multi(ctx: &mut Ctx<'_>, _args: &Args<'_>) -> CmdResult {
    if ctx.client.tx.in_multi() {
        return Err(ReplyError::err_static("MULTI calls can not be nested"));
    }
    ctx.client.tx.queued = Some(Queued::default());
    ctx.client.handle.multi_len.store(0, Relaxed);
    ctx.out.ok();
    Ok(())
}

fn discard_cmd(ctx: &mut Ctx<'_>, _args: &Args<'_>) -> CmdResult {
    if !ctx.client.tx.in_multi() {
        return Err(ReplyError::err_static("DISCARD without MULTI"));
    }
    discard(ctx.srv, ctx.client);
    ctx.out.ok();
    Ok(())
}

fn exec(ctx: &mut Ctx<'_>, _args: &Args<'_>) -> CmdResult {
    let Some(q) = ctx.client.tx.queued.take() else {
        return Err(ReplyError::err_static("EXEC without MULTI"));
    };
    ctx.client.handle.multi_len.store(-1, Relaxed);
    ctx.client.handle.multi_bytes.store(0, Relaxed);
    if q.failed {
        unwatch_all(ctx.srv, ctx.client);
        return Err(ReplyError::ExecAbort(None));
    }
    // From the WATCH check to the last command, no other client's command runs.
    ctx.gate = None;
    let _alone = ctx.srv.gate.exclusive();
    // A slot move may have paused its slots since this EXEC was admitted: run nothing, and run
    // the whole EXEC again once the pause ends (the transaction stays queued).
    if crate::cluster::queued_keys_paused(ctx.srv, q.cmds.iter().map(|(s, a)| (*s, a.args()))) {
        ctx.client
            .handle
            .multi_len
            .store(q.cmds.len() as i64, Relaxed);
        ctx.client.tx.queued = Some(q);
        ctx.paused = true;
        return Ok(());
    }
    let changed = watched_changed(ctx);
    unwatch_all(ctx.srv, ctx.client);
    if changed {
        ctx.out.null_array();
        return Ok(());
    }
    ctx.out.array(q.cmds.len());
    for (spec, args) in &q.cmds {
        // Permissions may have changed since the command was queued (Redis checks again).
        if let Err(d) = ctx.client.user_ref(ctx.srv).check(spec, &args.args()) {
            let e =
                crate::acl::denied(ctx.srv, ctx.client, spec, &args.args(), d, true, ctx.now_ms);
            ctx.srv.stats.error_reply(&e);
            e.write_to(&mut ctx.out);
            continue;
        }
        crate::run_in_exec(
            ctx.srv,
            ctx.client,
            spec,
            &args.args(),
            ctx.out.buf,
            ctx.now_ms,
        );
    }
    Ok(())
}

fn watch(ctx: &mut Ctx<'_>, args: &Args<'_>) -> CmdResult {
    if ctx.client.tx.in_multi() {
        return Err(ReplyError::err_static("WATCH inside MULTI is not allowed"));
    }
    let db = ctx.db();
    for key in args.tail(1).iter() {
        if ctx
            .client
            .tx
            .watched
            .iter()
            .any(|w| w.db == db && w.key == key)
        {
            continue;
        }
        let (mut shard, slot) = ctx.shard(key);
        let touches = shard.watch_key(db, key);
        let version = shard.peek(db, slot, key, ctx.now_ms).map(|e| e.version());
        drop(shard);
        ctx.client.tx.watched.push(Watched {
            db,
            key: key.to_vec(),
            version,
            touches,
        });
    }
    ctx.client
        .handle
        .watched_keys
        .store(ctx.client.tx.watched.len(), Relaxed);
    ctx.out.ok();
    Ok(())
}

fn unwatch(ctx: &mut Ctx<'_>, _args: &Args<'_>) -> CmdResult {
    unwatch_all(ctx.srv, ctx.client);
    ctx.out.ok();
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::{ClientHandle, Hooks, OwnedArgs, config};

    /// Two clients on one server.
    struct Pair {
        srv: ServerState,
        a: Client,
        b: Client,
        now_ms: u64,
    }

    impl Pair {
        fn new() -> Pair {
            let srv = ServerState::new(config::Config::default(), 1_000_000, 7, Hooks::default());
            let client = |id| {
                let h = Arc::new(ClientHandle::new(id, "a".into(), "b".into(), 0));
                Client::new(h, true)
            };
            Pair {
                srv,
                a: client(1),
                b: client(2),
                now_ms: 1_000_000,
            }
        }

        fn run(&mut self, who: char, cmd: &[&str]) -> String {
            let o = OwnedArgs::new(cmd.iter());
            let mut out = Vec::new();
            let c = if who == 'a' { &mut self.a } else { &mut self.b };
            crate::execute(&self.srv, c, &o.args(), &mut out, self.now_ms);
            String::from_utf8(out).unwrap()
        }

        fn watched_in_keyspace(&self) -> usize {
            self.srv
                .ks
                .lock_all()
                .iter()
                .map(|s| s.watched_keys())
                .sum()
        }
    }

    #[test]
    fn queue_exec_and_errors_match_redis() {
        let r = crate::tests::run(&[
            &["MULTI"],
            &["MULTI"],
            &["SET", "a", "1"],
            &["INCR", "a"],
            &["LPUSH", "a", "x"],
            &["GET", "a"],
            &["EXEC"],
            &["EXEC"],
            &["DISCARD"],
        ]);
        assert_eq!(r[0], "+OK\r\n");
        assert_eq!(r[1], "-ERR MULTI calls can not be nested\r\n");
        assert_eq!(r[2], "+QUEUED\r\n");
        assert_eq!(
            r[6],
            "*4\r\n+OK\r\n:2\r\n-WRONGTYPE Operation against a key holding the wrong kind of value\r\n$1\r\n2\r\n"
        );
        assert_eq!(r[7], "-ERR EXEC without MULTI\r\n");
        assert_eq!(r[8], "-ERR DISCARD without MULTI\r\n");
    }

    #[test]
    fn errors_while_queueing_abort_exec() {
        let r = crate::tests::run(&[
            &["MULTI"],
            &["SET", "a", "1"],
            &["NOPE"],
            &["EXEC"],
            &["GET", "a"],
            &["MULTI"],
            &["GET"],
            &["EXEC"],
            &["MULTI"],
            &["WATCH", "k"],
            &["PING"],
            &["EXEC"],
            &["MULTI"],
            &["EXEC", "x"],
            &["EXEC"],
            &["MULTI"],
            &["SHUTDOWN"],
            &["DISCARD", "x"],
            &["EXEC"],
        ]);
        assert_eq!(
            r[2],
            "-ERR unknown command 'NOPE', with args beginning with: \r\n"
        );
        assert_eq!(
            r[3],
            "-EXECABORT Transaction discarded because of previous errors.\r\n"
        );
        assert_eq!(r[4], "$-1\r\n", "nothing ran");
        assert_eq!(
            r[7],
            "-EXECABORT Transaction discarded because of previous errors.\r\n"
        );
        // WATCH inside MULTI is an error but does not doom the transaction.
        assert_eq!(r[9], "-ERR WATCH inside MULTI is not allowed\r\n");
        assert_eq!(r[11], "*1\r\n+PONG\r\n");
        assert_eq!(
            r[13],
            "-EXECABORT Transaction discarded because of: wrong number of arguments for 'exec' command\r\n"
        );
        assert_eq!(r[14], "-ERR EXEC without MULTI\r\n");
        assert_eq!(r[16], "-ERR Command not allowed inside a transaction\r\n");
        assert_eq!(
            r[17],
            "-ERR wrong number of arguments for 'discard' command\r\n"
        );
        assert_eq!(
            r[18],
            "-EXECABORT Transaction discarded because of previous errors.\r\n"
        );
    }

    #[test]
    fn select_inside_exec_applies_to_later_commands() {
        let r = crate::tests::run(&[
            &["MULTI"],
            &["SELECT", "1"],
            &["SET", "z", "1"],
            &["EXEC"],
            &["GET", "z"],
            &["SELECT", "0"],
            &["GET", "z"],
        ]);
        assert_eq!(r[3], "*2\r\n+OK\r\n+OK\r\n");
        assert_eq!(r[4], "$1\r\n1\r\n");
        assert_eq!(r[6], "$-1\r\n");
    }

    #[test]
    fn watch_aborts_when_another_client_writes() {
        let mut p = Pair::new();
        p.run('a', &["SET", "k", "1"]);
        assert_eq!(p.run('a', &["WATCH", "k", "k", "absent"]), "+OK\r\n");
        assert_eq!(p.watched_in_keyspace(), 2, "duplicates are watched once");
        p.run('b', &["SET", "k", "2"]);
        p.run('a', &["MULTI"]);
        p.run('a', &["SET", "k", "3"]);
        assert_eq!(p.run('a', &["EXEC"]), "*-1\r\n");
        assert_eq!(p.run('a', &["GET", "k"]), "$1\r\n2\r\n");
        assert_eq!(p.watched_in_keyspace(), 0, "EXEC unwatches");
        // Unchanged (a read by the other client is no change): it runs.
        p.run('a', &["WATCH", "k"]);
        p.run('b', &["GET", "k"]);
        p.run('a', &["MULTI"]);
        p.run('a', &["SET", "k", "3"]);
        assert_eq!(p.run('a', &["EXEC"]), "*1\r\n+OK\r\n");
    }

    #[test]
    fn watch_of_an_absent_key_sees_create_then_delete() {
        let mut p = Pair::new();
        p.run('a', &["WATCH", "k"]);
        p.run('b', &["SET", "k", "1"]);
        p.run('b', &["DEL", "k"]);
        p.run('a', &["MULTI"]);
        p.run('a', &["PING"]);
        assert_eq!(p.run('a', &["EXEC"]), "*-1\r\n");
        // Deleting an absent key, or flushing while it is absent, is no change.
        p.run('a', &["WATCH", "k"]);
        p.run('b', &["DEL", "k"]);
        p.run('b', &["FLUSHALL"]);
        p.run('a', &["MULTI"]);
        p.run('a', &["PING"]);
        assert_eq!(p.run('a', &["EXEC"]), "*1\r\n+PONG\r\n");
    }

    #[test]
    fn watch_sees_flush_swapdb_and_expiry() {
        let mut p = Pair::new();
        p.run('a', &["SET", "k", "1"]);
        p.run('a', &["WATCH", "k"]);
        p.run('b', &["FLUSHALL"]);
        p.run('a', &["MULTI"]);
        assert_eq!(p.run('a', &["EXEC"]), "*-1\r\n");

        p.run('b', &["SELECT", "1"]);
        p.run('b', &["SET", "k", "other-db"]);
        p.run('a', &["WATCH", "k"]);
        p.run('b', &["SWAPDB", "0", "1"]);
        p.run('b', &["SWAPDB", "0", "1"]);
        p.run('a', &["MULTI"]);
        assert_eq!(p.run('a', &["EXEC"]), "*-1\r\n", "swapped away and back");

        p.run('a', &["SET", "t", "1", "PX", "20"]);
        p.run('a', &["WATCH", "t"]);
        p.now_ms += 30;
        p.run('a', &["MULTI"]);
        assert_eq!(p.run('a', &["EXEC"]), "*-1\r\n", "expired since WATCH");

        // Already expired at WATCH time: absent, and staying absent is no change.
        p.run('a', &["WATCH", "t"]);
        p.run('a', &["MULTI"]);
        assert_eq!(p.run('a', &["EXEC"]), "*0\r\n");
    }

    #[test]
    fn discard_unwatch_reset_and_close_release_watches() {
        let mut p = Pair::new();
        p.run('a', &["WATCH", "x", "y"]);
        p.run('a', &["MULTI"]);
        assert_eq!(p.run('a', &["DISCARD"]), "+OK\r\n");
        assert_eq!(p.watched_in_keyspace(), 0);
        p.run('a', &["WATCH", "x"]);
        assert_eq!(p.run('a', &["UNWATCH"]), "+OK\r\n");
        assert_eq!(p.watched_in_keyspace(), 0);
        p.run('a', &["WATCH", "x"]);
        p.run('a', &["MULTI"]);
        assert_eq!(p.run('a', &["RESET"]), "+RESET\r\n");
        assert_eq!(p.run('a', &["EXEC"]), "-ERR EXEC without MULTI\r\n");
        assert_eq!(p.watched_in_keyspace(), 0);
        p.run('b', &["WATCH", "x"]);
        p.run('b', &["MULTI"]);
        crate::client_closed(&p.srv, &mut p.b);
        assert_eq!(p.watched_in_keyspace(), 0);
        assert_eq!(p.b.handle.multi_len.load(Relaxed), -1);
    }

    #[test]
    fn gate_excludes_commands_while_exclusive() {
        let gate = Arc::new(ExecGate::default());
        let inside = Arc::new(AtomicUsize::new(0));
        let excl = gate.exclusive();
        let t = {
            let (gate, inside) = (gate.clone(), inside.clone());
            std::thread::spawn(move || {
                let _g = gate.shared();
                inside.store(1, SeqCst);
            })
        };
        std::thread::sleep(std::time::Duration::from_millis(20));
        assert_eq!(inside.load(SeqCst), 0, "a command ran during EXEC");
        drop(excl);
        t.join().unwrap();
        assert_eq!(inside.load(SeqCst), 1);
        // And an exclusive holder waits for shared holders.
        let shared = gate.shared();
        let done = Arc::new(AtomicBool::new(false));
        let t = {
            let (gate, done) = (gate.clone(), done.clone());
            std::thread::spawn(move || {
                let _e = gate.exclusive();
                done.store(true, SeqCst);
            })
        };
        std::thread::sleep(std::time::Duration::from_millis(20));
        assert!(!done.load(SeqCst));
        drop(shared);
        t.join().unwrap();
        assert!(done.load(SeqCst));
    }

    #[test]
    fn a_batch_hold_lasts_until_the_batch_ends_and_gives_way_after_its_limit() {
        let gate = Arc::new(ExecGate::default());
        let inside = Arc::new(AtomicUsize::new(0));
        // Two scripts of one batch: the second finds the gate held, and so does an EXEC inside.
        drop(gate.exclusive_batched());
        drop(gate.exclusive_batched());
        drop(gate.exclusive());
        drop(gate.shared());
        let t = {
            let (gate, inside) = (gate.clone(), inside.clone());
            std::thread::spawn(move || {
                let _g = gate.shared();
                inside.fetch_add(1, SeqCst);
            })
        };
        std::thread::sleep(std::time::Duration::from_millis(20));
        assert_eq!(
            inside.load(SeqCst),
            0,
            "a command ran inside another thread's batch"
        );
        gate.end_batch();
        t.join().unwrap();
        assert_eq!(inside.load(SeqCst), 1);
        // A long batch lets a waiting thread in after `BATCH_HOLD_RUNS_MAX` scripts.
        drop(gate.exclusive_batched());
        let t = {
            let (gate, inside) = (gate.clone(), inside.clone());
            std::thread::spawn(move || {
                let _g = gate.exclusive();
                inside.fetch_add(1, SeqCst);
            })
        };
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while gate.writer.waiting.load(SeqCst) == 0 {
            assert!(
                std::time::Instant::now() < deadline,
                "the other thread never waited"
            );
            std::thread::yield_now();
        }
        for _ in 1..BATCH_HOLD_RUNS_MAX {
            drop(gate.exclusive_batched());
        }
        assert_eq!(
            inside.load(SeqCst),
            1,
            "an EXEC ran inside another thread's batch"
        );
        drop(gate.exclusive_batched());
        t.join().unwrap();
        assert_eq!(inside.load(SeqCst), 2);
        // Parking ends a batch too.
        gate.release_thread();
        drop(gate.exclusive());
    }

    #[test]
    fn a_sticky_thread_stays_inside_until_it_parks_or_sees_an_exec() {
        use std::sync::mpsc::channel;
        let gate = Arc::new(ExecGate::default());
        let (to_worker, worker_rx) = channel::<&str>();
        let (from_worker, rx) = channel::<&str>();
        let worker = {
            let gate = gate.clone();
            std::thread::spawn(move || {
                ExecGate::set_sticky_thread(true);
                drop(gate.shared());
                from_worker.send("ran").unwrap();
                while let Ok(what) = worker_rx.recv() {
                    match what {
                        "park" => gate.release_thread(),
                        "command" => drop(gate.shared()),
                        _ => break,
                    }
                    from_worker.send("done").unwrap();
                }
            })
        };
        assert_eq!(rx.recv().unwrap(), "ran");
        let exec = |gate: &Arc<ExecGate>, done: &Arc<AtomicBool>| {
            let (gate, done) = (gate.clone(), done.clone());
            std::thread::spawn(move || {
                let _e = gate.exclusive();
                done.store(true, SeqCst);
            })
        };
        // Between commands the worker is still inside: an EXEC waits ...
        let done = Arc::new(AtomicBool::new(false));
        let e = exec(&gate, &done);
        std::thread::sleep(std::time::Duration::from_millis(20));
        assert!(
            !done.load(SeqCst),
            "EXEC ran while a sticky worker was inside"
        );
        // ... until it parks.
        to_worker.send("park").unwrap();
        assert_eq!(rx.recv().unwrap(), "done");
        e.join().unwrap();
        assert!(done.load(SeqCst));
        // Its next command enters again; a later EXEC waits for the one after, which leaves.
        to_worker.send("command").unwrap();
        assert_eq!(rx.recv().unwrap(), "done");
        let done = Arc::new(AtomicBool::new(false));
        let e = exec(&gate, &done);
        std::thread::sleep(std::time::Duration::from_millis(20));
        assert!(!done.load(SeqCst));
        to_worker.send("command").unwrap();
        assert_eq!(rx.recv().unwrap(), "done");
        e.join().unwrap();
        assert!(done.load(SeqCst));
        to_worker.send("stop").unwrap();
        worker.join().unwrap();
    }
}
