//! Hot shards gathered on one worker thread: a shard two workers fight over is *claimed* by one of
//! them, the other's requests for it move to the claimer instead of waiting for the lock, and a
//! worker that runs out of work sleeps while the claim lasts instead of taking the claimer's tasks.
//!
//! One key written by every connection (`LPUSH mylist`, `ZADD board`, `HINCRBY stats`) is one
//! shard lock that both workers take for every command: each hand-over a cache-line transfer, and
//! on a machine with no more cores than busy threads, a spin, a `sched_yield` or a futex sleep while
//! the holder is off its core. One worker alone serves such a load faster than two (redis-benchmark
//! at pipeline 16 on one key, `--threads 1` against 2: LPUSH ×1.3, ZADD ×1.5), as a single-threaded
//! server does. A claim makes the workers behave as one while one shard dominates the load:
//!
//! - A runtime worker (see [`set_thread`]) that finds one shard's lock taken by another thread
//!   [`CLAIM_AFTER_CONTENDED`] times in a row (`Claims::contended`, from
//!   [`crate::Keyspace::lock_sticky`]) claims the shard, if it holds no claim and nobody claims
//!   the shard. Random keys meeting now and then on a shard claim nothing. Only the commands
//!   that may keep their shard (sorted sets, geo, HyperLogLogs: long work under the lock) claim; for short
//!   ones (LPUSH, HSET) two workers contending serve more than one doing all the parsing and
//!   replying (LPUSH at pipeline 16 ×0.89 when it claimed).
//! - A request for a single key on a shard claimed by another, running thread is not run: the
//!   request path answers it with an outcome saying so, and the connection task waits for the
//!   claimer ([`Claims::released`]), which wakes it *from its own thread* at the end of each of
//!   its connection batches ([`batch_end`]). The runtime queues a task woken from a worker on that
//!   worker, so the connection moves to the claimer and runs there, where the claim is its own.
//!   A request waits at most once (the connection bounds the wait), then runs wherever it is.
//! - A worker that runs out of tasks while another claims a shard sleeps in the runtime's park
//!   hook ([`Claims::idle_while_claimed`]) rather than parking: the runtime does not count it as
//!   idle, so it does not wake it to take the claimer's tasks, and it does not poll the I/O
//!   driver, so the connections' readiness wakes them on the claimer. (The runtime queues a task
//!   that the I/O driver wakes on whichever worker polls it: a second worker parked in the driver
//!   scatters the connections at every pause of the load, each to move back one by one.) It leaves
//!   the hook when the claim ends, when the claimer makes no progress for [`IDLE_STALL_POLLS`]
//!   polls of 1 ms (a long command: the other connections must not all wait for it), or once the
//!   claimer has been parked for [`IDLE_PARKED_POLLS`] polls (an idle node sleeps). Tasks queued
//!   on the claimer before its long command still wait for it (the runtime offered them to no
//!   idle worker): as on a single-threaded server, for that command's length at most; the
//!   connections that become ready meanwhile run on the worker that woke.
//! - A claim lasts while the shard stays most of its claimer's work: after every
//!   [`CLAIM_WINDOW_LOCKS`] shard locks the claimer takes, the claim ends unless at least
//!   [`CLAIM_SHARE_MIN_PCT`] percent of them were of the claimed shard. It lasts across the
//!   claimer's parks (while parked, its claim is not looked at by requests,
//!   [`Claims::claimed_elsewhere`]).
//!
//! Claims only steer where requests run; every command still takes the shard's lock, so a claim
//! can never make a command see a shard another thread is using. Invariant (asserted): a thread
//! holds at most one claim, and only the claimer ends it.

use std::cell::Cell;
use std::sync::atomic::Ordering::{Relaxed, SeqCst};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::task::{Context, Poll, Waker};

use parking_lot::Mutex;

/// A thread claims a shard whose lock it found taken this many times in a row (no other shard's
/// lock found taken in between).
pub const CLAIM_AFTER_CONTENDED: u32 = 8;

/// Shard locks of the claimer between two looks at whether its claim still dominates its work.
pub const CLAIM_WINDOW_LOCKS: u32 = 1024;

/// The share of the claimer's shard locks (in percent, over [`CLAIM_WINDOW_LOCKS`]) that must be
/// of the claimed shard for the claim to last: below it, the load is not one hot shard, and all
/// workers serve it again.
pub const CLAIM_SHARE_MIN_PCT: u32 = 75;

/// An idle worker sleeping while another claims a shard leaves the sleep after this many 1 ms
/// polls in which the running claimer finished no connection batch.
pub const IDLE_STALL_POLLS: u32 = 10;

/// An idle worker sleeping while another claims a shard leaves the sleep after this many 1 ms
/// polls in which every claimer was parked.
pub const IDLE_PARKED_POLLS: u32 = 100;

/// Tasks waiting for claims at once, at most; a request finding the list full runs where it is.
pub const CLAIM_WAITERS_MAX: usize = 4096;

/// The bit of [`Slot::owner`] that says the claimer is parked (tokens are addresses of a byte
/// aligned to 2).
const PARKED: usize = 1;

#[repr(align(64))]
struct Slot {
    /// The claiming thread's token (0: unclaimed), with [`PARKED`] while the claimer is parked.
    /// Written by the claimer only (and claimed from 0), read by all.
    owner: AtomicUsize,
}

/// The claims of one keyspace: one slot per shard, and the tasks waiting for claimers.
pub struct Claims {
    slots: Box<[Slot]>,
    waiters: Mutex<Vec<(usize, Waker)>>,
    /// `waiters.len()`, read without the lock on every batch end.
    waiting: AtomicUsize,
    /// Claims held now, read by every request: on a line of its own.
    held: Slot,
    /// Claims held now by threads that are not parked.
    running: AtomicUsize,
    /// Connection batches the claimers have finished (an idle worker's sign that they progress).
    progress: AtomicUsize,
    /// Idle workers sleeping while another one claims a shard ([`Claims::idle_while_claimed`]).
    idle: std::sync::Mutex<()>,
    idle_cv: std::sync::Condvar,
    idle_sleepers: AtomicUsize,
    /// Claims taken since start, and requests that moved to a claimer (INFO `stats`).
    taken: AtomicU64,
    moved: AtomicU64,
}

#[derive(Clone, Copy)]
struct Held {
    /// The keyspace's claims this thread holds one of.
    claims: *const Claims,
    shard: usize,
    /// Shard locks this thread took since the last look at the claim's share, and how many of
    /// them were of the claimed shard.
    locks: u32,
    hits: u32,
}

thread_local! {
    /// This thread may claim (a runtime worker).
    static ENABLED: Cell<bool> = const { Cell::new(false) };
    /// The shard (with its keyspace) whose lock this thread last found taken, and how many
    /// times in a row.
    static CONTENDED: Cell<((usize, usize), u32)> = const { Cell::new(((0, 0), 0)) };
    /// The claim this thread holds.
    static HELD: Cell<Option<Held>> = const { Cell::new(None) };
    /// Unique per live thread: this cell's address (even).
    static TOKEN: u16 = const { 0 };
}

fn last_of(claims: &Claims, shard: usize) -> (usize, usize) {
    (claims as *const Claims as usize, shard)
}

fn token() -> usize {
    TOKEN.with(|t| std::ptr::from_ref(t) as usize)
}

/// Lets the calling thread claim shards: a runtime worker, whose connection tasks can move.
pub fn set_thread(on: bool) {
    ENABLED.set(on);
}

impl Claims {
    pub(crate) fn new(shards: usize) -> Self {
        let slot = || Slot {
            owner: AtomicUsize::new(0),
        };
        Claims {
            slots: (0..shards).map(|_| slot()).collect(),
            waiters: Mutex::new(Vec::new()),
            waiting: AtomicUsize::new(0),
            held: slot(),
            running: AtomicUsize::new(0),
            progress: AtomicUsize::new(0),
            idle: std::sync::Mutex::new(()),
            idle_cv: std::sync::Condvar::new(),
            idle_sleepers: AtomicUsize::new(0),
            taken: AtomicU64::new(0),
            moved: AtomicU64::new(0),
        }
    }

    /// Whether any thread claims a shard now (one load of a line that is only read while no
    /// claim comes or goes): requests look no further when none does.
    #[inline]
    pub fn any(&self) -> bool {
        self.held.owner.load(Relaxed) != 0
    }

    /// Whether another thread, not parked, claims `shard` (one load).
    #[inline]
    pub fn claimed_elsewhere(&self, shard: usize) -> bool {
        let owner = self.slots[shard].owner.load(Relaxed);
        owner != 0 && owner & PARKED == 0 && owner != token()
    }

    /// Claims taken since start, and requests that moved to a claimer's thread.
    pub fn counts(&self) -> (u64, u64) {
        (self.taken.load(Relaxed), self.moved.load(Relaxed))
    }

    /// Notes a shard lock taken by this thread, for its claim's share.
    #[inline]
    pub(crate) fn used(&self, shard: usize) {
        if let Some(mut h) = HELD.get()
            && std::ptr::eq(h.claims, self)
        {
            h.locks += 1;
            h.hits += u32::from(h.shard == shard);
            HELD.set(Some(h));
        }
    }

    /// This thread found `shard`'s lock taken: it claims the shard if it may (a runtime worker
    /// with no claim, and nobody claims the shard) and the shard is hot: its lock was the last
    /// [`CLAIM_AFTER_CONTENDED`] this thread found taken.
    pub(crate) fn contended(&self, shard: usize) {
        if !ENABLED.get() || HELD.get().is_some() {
            return;
        }
        let (last, times) = CONTENDED.get();
        let times = if last == last_of(self, shard) {
            times + 1
        } else {
            1
        };
        CONTENDED.set((last_of(self, shard), times));
        if times < CLAIM_AFTER_CONTENDED {
            return;
        }
        CONTENDED.set(((0, 0), 0));
        if self.slots[shard]
            .owner
            .compare_exchange(0, token(), SeqCst, Relaxed)
            .is_ok()
        {
            self.running.fetch_add(1, SeqCst);
            self.held.owner.fetch_add(1, SeqCst);
            self.taken.fetch_add(1, Relaxed);
            HELD.set(Some(Held {
                claims: self,
                shard,
                locks: 0,
                hits: 0,
            }));
        }
    }

    /// A future ready once `shard` is no longer claimed by another running thread, or once the
    /// claimer wakes it (from its thread: the task then runs there); ready at once when
    /// [`CLAIM_WAITERS_MAX`] tasks wait already (the request then runs where it is).
    pub fn released(&self, shard: usize) -> Released<'_> {
        Released {
            claims: self,
            shard,
            listed: false,
        }
    }

    /// Wakes the tasks waiting for `shard`.
    fn wake(&self, shard: usize) {
        if self.waiting.load(SeqCst) == 0 {
            return;
        }
        let mut woken = Vec::new();
        {
            let mut w = self.waiters.lock();
            w.retain(|(s, waker)| {
                if *s == shard {
                    woken.push(waker.clone());
                    false
                } else {
                    true
                }
            });
            self.waiting.store(w.len(), SeqCst);
        }
        self.moved.fetch_add(woken.len() as u64, Relaxed);
        for w in woken {
            w.wake();
        }
    }

    fn end(&self, h: Held) {
        let was = self.slots[h.shard].owner.swap(0, SeqCst);
        assert_eq!(was & !PARKED, token(), "only the claimer ends a claim");
        HELD.set(None);
        self.held.owner.fetch_sub(1, SeqCst);
        if was & PARKED == 0 {
            self.running.fetch_sub(1, SeqCst);
        }
        self.notify_idle();
        self.wake(h.shard);
    }

    fn notify_idle(&self) {
        if self.idle_sleepers.load(SeqCst) > 0 {
            let _g = self
                .idle
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            self.idle_cv.notify_all();
        }
    }

    /// Called by a worker going idle: while another worker claims a shard, the thread sleeps
    /// here instead of parking (see the module's header for why, and for when it leaves). Bounded
    /// by counts of 1 ms polls, not a clock (this crate reads none).
    pub fn idle_while_claimed(&self) {
        if self.held.owner.load(SeqCst) == 0 || holding() {
            return;
        }
        let mut g = self
            .idle
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        // Counted before looking (both SeqCst; the end lowers `held` before it looks at the
        // sleepers): either this sees the claim end, or the end wakes it.
        self.idle_sleepers.fetch_add(1, SeqCst);
        let mut seen = self.progress.load(SeqCst);
        let (mut still, mut parked) = (0, 0);
        while self.held.owner.load(SeqCst) != 0 {
            g = self
                .idle_cv
                .wait_timeout(g, std::time::Duration::from_millis(1))
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .0;
            if self.running.load(SeqCst) == 0 {
                still = 0;
                parked += 1;
                if parked >= IDLE_PARKED_POLLS {
                    break;
                }
                continue;
            }
            parked = 0;
            let now = self.progress.load(SeqCst);
            if now != seen {
                (seen, still) = (now, 0);
                continue;
            }
            still += 1;
            if still >= IDLE_STALL_POLLS {
                break;
            }
        }
        self.idle_sleepers.fetch_sub(1, SeqCst);
    }
}

/// The end of one of this thread's connection batches: the tasks waiting for its claim are
/// woken here (so the runtime queues them on this thread), and the claim ends when the shard was
/// less than [`CLAIM_SHARE_MIN_PCT`] percent of the thread's last [`CLAIM_WINDOW_LOCKS`] shard
/// locks. Call from a task.
#[inline]
pub fn batch_end() {
    let Some(h) = HELD.get() else {
        return;
    };
    // SAFETY: a claim is held only while its keyspace lives: a keyspace outlives the runtime
    // whose workers claim in it (the server's state is dropped after its runtime).
    let claims = unsafe { &*h.claims };
    claims.progress.fetch_add(1, Relaxed);
    if h.locks >= CLAIM_WINDOW_LOCKS {
        if u64::from(h.hits) * 100 < u64::from(h.locks) * u64::from(CLAIM_SHARE_MIN_PCT) {
            claims.end(h);
            return;
        }
        HELD.set(Some(Held {
            locks: 0,
            hits: 0,
            ..h
        }));
    }
    claims.wake(h.shard);
}

/// A worker going idle: its claim stays (its connections' next requests come back to it), but
/// while it is parked requests elsewhere do not wait for it ([`Claims::claimed_elsewhere`])
/// until [`unpark_thread`]. Nothing is woken here: a task woken from the park hook would wait
/// in the runtime's shared queue while this thread sleeps.
pub fn park_thread() {
    if let Some(h) = HELD.get() {
        // SAFETY: as in `batch_end`.
        let claims = unsafe { &*h.claims };
        let was = claims.slots[h.shard].owner.swap(token() | PARKED, SeqCst);
        assert_eq!(was, token(), "a claim parks once, by its claimer");
        claims.running.fetch_sub(1, SeqCst);
    }
}

/// The worker runs again: its claim, if it has one, counts again.
pub fn unpark_thread() {
    if let Some(h) = HELD.get() {
        // SAFETY: as in `batch_end`.
        let claims = unsafe { &*h.claims };
        let was = claims.slots[h.shard].owner.swap(token(), SeqCst);
        assert_eq!(
            was,
            token() | PARKED,
            "a claim unparks once, by its claimer"
        );
        claims.running.fetch_add(1, SeqCst);
    }
}

/// Ends this thread's claim, if any (a thread leaving the runtime for a long script).
pub fn release_thread() {
    if let Some(h) = HELD.get() {
        // SAFETY: as in `batch_end`.
        unsafe { &*h.claims }.end(h);
    }
}

/// Whether this thread holds a claim.
pub fn holding() -> bool {
    HELD.get().is_some()
}
/// See [`Claims::released`].
pub struct Released<'a> {
    claims: &'a Claims,
    shard: usize,
    listed: bool,
}

impl std::future::Future for Released<'_> {
    type Output = ();

    fn poll(mut self: std::pin::Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let c = self.claims;
        if !c.claimed_elsewhere(self.shard) {
            return Poll::Ready(());
        }
        if self.listed {
            // Woken (the entry is gone) or polled again before: ready once woken, which is
            // what moves the task; a spurious poll looks at the list.
            let still_listed = c
                .waiters
                .lock()
                .iter()
                .any(|(s, w)| *s == self.shard && w.will_wake(cx.waker()));
            return if still_listed {
                Poll::Pending
            } else {
                Poll::Ready(())
            };
        }
        let mut w = c.waiters.lock();
        if w.len() >= CLAIM_WAITERS_MAX {
            return Poll::Ready(());
        }
        // Looked at again under the list's lock: the claim's end takes the lock after clearing
        // the owner, so either this sees it ended or the end finds the entry.
        if !c.claimed_elsewhere(self.shard) {
            return Poll::Ready(());
        }
        w.push((self.shard, cx.waker().clone()));
        c.waiting.store(w.len(), Ordering::SeqCst);
        drop(w);
        self.listed = true;
        Poll::Pending
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::sync::atomic::AtomicBool;
    use std::task::Wake;

    struct Flag(AtomicBool);
    impl Wake for Flag {
        fn wake(self: Arc<Self>) {
            self.0.store(true, SeqCst);
        }
    }

    fn poll(f: &mut Released<'_>, flag: &Arc<Flag>) -> Poll<()> {
        let waker = Waker::from(flag.clone());
        let mut cx = Context::from_waker(&waker);
        std::pin::Pin::new(f).poll(&mut cx)
    }

    #[test]
    fn a_contended_shard_is_claimed_once_and_ends_with_an_unused_batch() {
        let claims = Claims::new(4);
        // Not a runtime worker: no claim.
        claims.contended(1);
        assert!(!holding());
        set_thread(true);
        for _ in 0..CLAIM_AFTER_CONTENDED - 1 {
            claims.contended(1);
        }
        assert!(!holding(), "not yet hot");
        claims.contended(3);
        claims.contended(1);
        assert!(
            !holding(),
            "another shard in between starts the count again"
        );
        for _ in 0..CLAIM_AFTER_CONTENDED - 1 {
            claims.contended(1);
        }
        assert!(holding());
        // One claim per thread.
        claims.contended(2);
        assert_eq!(claims.slots[2].owner.load(SeqCst), 0);
        assert!(!claims.claimed_elsewhere(1), "its own claim");
        std::thread::scope(|s| {
            s.spawn(|| {
                assert!(claims.claimed_elsewhere(1));
                set_thread(true);
                for _ in 0..CLAIM_AFTER_CONTENDED {
                    claims.contended(1);
                }
                assert!(!holding(), "claimed by the other thread already");
            });
        });
        // A window of locks mostly on the claimed shard keeps it; the share is looked at only
        // once a window is full.
        assert_eq!(claims.counts().0, 1);
        for _ in 0..CLAIM_WINDOW_LOCKS - 1 {
            claims.used(2);
        }
        batch_end();
        assert!(holding(), "a window not yet full is not looked at");
        claims.used(1);
        batch_end();
        assert!(!holding(), "one lock in 1,024 on the claimed shard ends it");
        assert_eq!(claims.slots[1].owner.load(SeqCst), 0);
        assert_eq!(claims.held.owner.load(SeqCst), 0);
        assert_eq!(claims.running.load(SeqCst), 0);
        for _ in 0..CLAIM_AFTER_CONTENDED {
            claims.contended(3);
        }
        assert!(holding());
        let share = CLAIM_WINDOW_LOCKS * CLAIM_SHARE_MIN_PCT / 100;
        for i in 0..CLAIM_WINDOW_LOCKS {
            claims.used(if i < share { 3 } else { 0 });
        }
        batch_end();
        assert!(holding(), "{CLAIM_SHARE_MIN_PCT}% of the window keeps it");
        for i in 0..CLAIM_WINDOW_LOCKS {
            claims.used(if i < share - 1 { 3 } else { 0 });
        }
        batch_end();
        assert!(!holding(), "less than {CLAIM_SHARE_MIN_PCT}% ends it");
        set_thread(false);
    }

    /// A claimer thread in `s`: claims `shard`, then runs each step sent to it ("batch": a batch
    /// that used the shard; "park"; "unpark"; anything else ends the claim) and acknowledges it.
    fn claimer<'scope>(
        s: &'scope std::thread::Scope<'scope, '_>,
        claims: &'scope Claims,
        shard: usize,
    ) -> (
        std::sync::mpsc::Sender<&'static str>,
        std::sync::mpsc::Receiver<()>,
    ) {
        let (to_claimer, claimer_rx) = std::sync::mpsc::channel::<&'static str>();
        let (done_tx, done) = std::sync::mpsc::channel::<()>();
        s.spawn(move || {
            set_thread(true);
            for _ in 0..CLAIM_AFTER_CONTENDED {
                claims.contended(shard);
            }
            done_tx.send(()).unwrap();
            for step in claimer_rx {
                match step {
                    "batch" => {
                        claims.used(shard);
                        batch_end();
                    }
                    "park" => park_thread(),
                    "unpark" => unpark_thread(),
                    _ => release_thread(),
                }
                done_tx.send(()).unwrap();
            }
        });
        done.recv().unwrap();
        (to_claimer, done)
    }

    #[test]
    fn an_idle_worker_sleeps_until_the_claim_ends_stalls_or_stays_parked() {
        let claims = Claims::new(2);
        let idle_returns = |claims: &Claims| {
            std::thread::scope(|s| {
                let (tx, rx) = std::sync::mpsc::channel();
                s.spawn(move || {
                    claims.idle_while_claimed();
                    tx.send(()).unwrap();
                });
                rx.recv_timeout(std::time::Duration::from_secs(10)).is_ok()
            })
        };
        // No claim: returns at once.
        assert!(idle_returns(&claims));
        std::thread::scope(|s| {
            let c = &claims;
            let (to_claimer, done) = claimer(s, c, 1);
            assert!(claims.claimed_elsewhere(1));
            // A running claimer that finishes no batch: the sleep ends after the stall polls.
            assert!(idle_returns(&claims));
            to_claimer.send("park").unwrap();
            done.recv().unwrap();
            assert!(
                !claims.claimed_elsewhere(1),
                "a parked claimer's shard runs anywhere"
            );
            assert_eq!(claims.running.load(SeqCst), 0);
            // A parked claimer: the sleep ends after the parked polls.
            assert!(idle_returns(&claims));
            to_claimer.send("unpark").unwrap();
            done.recv().unwrap();
            assert!(claims.claimed_elsewhere(1));
            assert_eq!(claims.running.load(SeqCst), 1);
            // The end wakes a sleeper at once.
            std::thread::scope(|s2| {
                let (tx, rx) = std::sync::mpsc::channel();
                s2.spawn(move || {
                    c.idle_while_claimed();
                    tx.send(()).unwrap();
                });
                to_claimer.send("release").unwrap();
                done.recv().unwrap();
                assert!(rx.recv_timeout(std::time::Duration::from_secs(10)).is_ok());
            });
            assert!(!claims.any());
            assert_eq!(claims.running.load(SeqCst), 0);
        });
    }

    #[test]
    fn a_waiting_task_is_woken_by_the_claimers_batch_end_and_by_its_end() {
        let claims = Claims::new(2);
        let flag = Arc::new(Flag(AtomicBool::new(false)));
        std::thread::scope(|s| {
            let (to_claimer, done) = claimer(s, &claims, 0);
            let mut wait = claims.released(0);
            assert!(poll(&mut wait, &flag).is_pending());
            assert_eq!(claims.waiting.load(SeqCst), 1);
            assert!(poll(&mut wait, &flag).is_pending(), "listed once");
            assert_eq!(claims.waiting.load(SeqCst), 1);
            to_claimer.send("batch").unwrap();
            done.recv().unwrap();
            assert!(flag.0.swap(false, SeqCst), "woken at the batch end");
            assert!(poll(&mut wait, &flag).is_ready(), "ready once woken");
            // A second wait, ended by the claim's end.
            let mut again = claims.released(0);
            assert!(poll(&mut again, &flag).is_pending());
            to_claimer.send("release").unwrap();
            done.recv().unwrap();
            assert!(flag.0.load(SeqCst));
            assert!(poll(&mut again, &flag).is_ready());
            assert_eq!(claims.waiting.load(SeqCst), 0);
        });
    }
}
