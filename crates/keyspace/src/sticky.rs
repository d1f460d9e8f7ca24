//! The shard lock a worker thread keeps between the commands of one connection's pipeline.
//!
//! A pipeline of writes to one hot key (`LPUSH mylist`, `ZADD board` ×16) locked and unlocked the
//! key's shard once per command, and with two workers serving such pipelines the lock went back
//! and forth between them for every command: each hand-over a cache-line transfer, and on a
//! machine with fewer cores than busy threads a spin, a `sched_yield` or a futex sleep while the
//! holder was off its core. A command allowed to (see `shoal_commands`' request path: a runtime
//! worker, a command with one key at argument 1) locks its shard with
//! [`crate::Keyspace::lock_sticky`]: the lock then stays held by the thread after the command's
//! guard drops, and the next command of the pipeline on the same shard finds it held and takes
//! no lock at all. The other worker's commands on that shard wait for the pipeline (or for
//! [`STICKY_RUNS_MAX`] of its commands), once.
//!
//! The hold belongs to the thread, never to a task or a guard, and it is given up:
//! - by [`release`], which the request path calls before a command that may not keep it,
//!   before anything that waits (every `.await` of the connection loop, the exec gate, eviction,
//!   the configuration's lock) and at the end of each batch, so no hold outlives a connection's
//!   synchronous run of commands;
//! - by [`crate::Keyspace::lock`] of any other shard (while no guard borrows the hold): locks
//!   taken in shard order stay in shard order, and a thread never waits for a shard while it
//!   keeps another one it is not using;
//! - after [`STICKY_RUNS_MAX`] commands, fairly (a waiting thread gets the lock first).
//!
//! While a guard is lent out of the hold (a command is using the shard), the hold cannot be
//! released: the guard's drop gives it back. A lock of the held shard by the same thread lends it
//! again instead of deadlocking on itself, as it would be free for this thread anyway.
//!
//! Invariant (asserted): at most one hold per thread; a lent hold is returned by the guard that
//! borrowed it, never released under it.

use std::cell::Cell;

use parking_lot::Mutex;

use crate::shard::Shard;

/// Commands one hold serves before it is handed to a waiting thread (fair unlock) and taken
/// again: bounds how long another worker waits for a shard behind a long pipeline.
pub const STICKY_RUNS_MAX: u32 = 64;

#[derive(Clone, Copy)]
struct Held {
    /// The held shard's mutex: locked by this thread, its guard forgotten.
    mutex: *const Mutex<Shard>,
    /// Commands that used the hold since it was taken.
    runs: u32,
    /// A guard borrows it now.
    lent: bool,
}

thread_local! {
    static HELD: Cell<Option<Held>> = const { Cell::new(None) };
}

fn held() -> Option<Held> {
    HELD.with(Cell::get)
}

fn set(h: Option<Held>) {
    HELD.with(|c| c.set(h));
}

/// Whether this thread keeps a shard locked between commands.
#[inline]
pub fn holding() -> bool {
    held().is_some()
}

/// Gives up this thread's hold, if it has one that no guard borrows. Cheap when there is none;
/// safe to call anywhere outside a command's use of the shard.
#[inline]
pub fn release() {
    if let Some(h) = held()
        && !h.lent
    {
        set(None);
        // SAFETY: this thread locked the mutex and forgot the guard (`hold`); nothing borrows it
        // (`lent` is false), and the record is gone, so it is unlocked exactly once.
        unsafe { (*h.mutex).force_unlock() };
    }
}

/// Whether this thread holds `mutex` (lent or not).
pub(crate) fn holds(mutex: &Mutex<Shard>) -> bool {
    held().is_some_and(|h| std::ptr::eq(h.mutex, mutex))
}

/// For a lock of `mutex` by this thread: lends the hold if it is `mutex` (`true`); otherwise gives
/// up a hold of another shard that no guard borrows, or leaves a lent one alone (the caller uses
/// that shard's guard, as it would without holds), and the caller locks `mutex` itself (`false`).
pub(crate) fn lend_or_release(mutex: &Mutex<Shard>) -> bool {
    let Some(h) = held() else {
        return false;
    };
    if std::ptr::eq(h.mutex, mutex) {
        assert!(!h.lent, "a thread locked the shard it is using");
        set(Some(Held { lent: true, ..h }));
        return true;
    }
    if !h.lent {
        release();
    }
    false
}

/// For a sticky lock of `mutex` by this thread: counts one more run of the hold and lends it, if
/// this thread holds `mutex` and the hold has runs left (`true`). Past [`STICKY_RUNS_MAX`] the
/// hold is handed to a waiting thread first (`false`: lock it again).
pub(crate) fn lend_counted(mutex: &Mutex<Shard>) -> bool {
    let Some(h) = held() else {
        return false;
    };
    if !std::ptr::eq(h.mutex, mutex) || h.lent {
        return false;
    }
    if h.runs >= STICKY_RUNS_MAX {
        set(None);
        // SAFETY: as in `release`; a waiter, if any, is handed the lock.
        unsafe { (*h.mutex).force_unlock_fair() };
        return false;
    }
    set(Some(Held {
        runs: h.runs + 1,
        lent: true,
        ..h
    }));
    true
}

/// Whether a hold can be taken now: none is lent (a second shard locked by a command that uses
/// one already is locked plainly).
pub(crate) fn can_hold() -> bool {
    held().is_none_or(|h| !h.lent)
}

/// Records that this thread locked `mutex` and forgot the guard: held, and lent to the guard
/// that is about to use it.
pub(crate) fn hold(mutex: &Mutex<Shard>) {
    debug_assert!(held().is_none(), "one hold per thread");
    set(Some(Held {
        mutex,
        runs: 1,
        lent: true,
    }));
}

/// A lent guard's drop: the hold is this thread's again, still locked.
pub(crate) fn give_back(mutex: &Mutex<Shard>) {
    let h = held().expect("a lent guard's hold is recorded");
    assert!(
        std::ptr::eq(h.mutex, mutex) && h.lent,
        "a lent guard gives back the hold it borrowed"
    );
    set(Some(Held { lent: false, ..h }));
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Keyspace;
    use std::sync::atomic::{AtomicBool, Ordering::SeqCst};
    use std::time::Duration;

    /// Whether another thread can lock shard `i` of `ks` within a short wait.
    fn free_for_others(ks: &Keyspace, i: usize) -> bool {
        let got = AtomicBool::new(false);
        std::thread::scope(|s| {
            s.spawn(|| {
                let deadline = std::time::Instant::now() + Duration::from_millis(200);
                while std::time::Instant::now() < deadline {
                    if ks.shard_mutex(i).try_lock().is_some() {
                        got.store(true, SeqCst);
                        return;
                    }
                    std::thread::sleep(Duration::from_millis(1));
                }
            });
        });
        got.load(SeqCst)
    }

    #[test]
    fn a_sticky_lock_stays_held_after_its_guard_until_released() {
        let ks = Keyspace::new(1, 4, 1);
        drop(ks.lock_sticky(2));
        assert!(holding());
        assert!(!free_for_others(&ks, 2), "held between commands");
        // The next command on the shard borrows the hold: no deadlock on itself.
        ks.lock_sticky(2).stats.keyspace_hits += 1;
        // A plain lock of the held shard by the same thread borrows it too.
        assert_eq!(ks.lock(2).stats.keyspace_hits, 1);
        assert!(holding());
        release();
        assert!(!holding());
        assert!(free_for_others(&ks, 2));
    }

    #[test]
    fn locking_another_shard_gives_up_the_hold_first() {
        let ks = Keyspace::new(1, 4, 1);
        drop(ks.lock_sticky(3));
        let g = ks.lock(1);
        assert!(
            !holding(),
            "a hold is never kept while waiting for another shard"
        );
        assert!(free_for_others(&ks, 3));
        drop(g);
        // The same for a sticky lock of another shard: the hold moves.
        drop(ks.lock_sticky(0));
        drop(ks.lock_sticky(1));
        assert!(free_for_others(&ks, 0));
        assert!(!free_for_others(&ks, 1));
        release();
        assert!(free_for_others(&ks, 1));
    }

    #[test]
    fn a_lent_hold_is_not_released_under_its_guard() {
        let ks = Keyspace::new(1, 4, 1);
        let mut g = ks.lock_sticky(1);
        release();
        assert!(holding(), "the guard still uses the shard");
        // A second shard while the first is in use: locked plainly, in the caller's order.
        let other = ks.lock_sticky(2);
        drop(other);
        assert!(
            free_for_others(&ks, 2),
            "a plain lock is unlocked by its guard"
        );
        g.stats.keyspace_misses += 1;
        drop(g);
        assert!(!free_for_others(&ks, 1));
        release();
        assert!(free_for_others(&ks, 1));
    }

    #[test]
    fn a_hold_is_handed_over_after_its_runs() {
        let ks = Keyspace::new(1, 2, 1);
        for _ in 0..STICKY_RUNS_MAX {
            drop(ks.lock_sticky(0));
        }
        assert_eq!(held().map(|h| h.runs), Some(STICKY_RUNS_MAX));
        // One more: unlocked (fairly) and taken again, counting from one.
        drop(ks.lock_sticky(0));
        assert_eq!(held().map(|h| h.runs), Some(1));
        release();
    }

    #[test]
    fn other_threads_wait_for_the_hold_and_then_get_the_shard() {
        let ks = Keyspace::new(1, 2, 1);
        drop(ks.lock_sticky(0));
        std::thread::scope(|s| {
            let waiter = s.spawn(|| ks.lock(0).stats.expired_keys += 1);
            assert!(!free_for_others(&ks, 0));
            release();
            waiter.join().expect("the waiter got the shard");
        });
        assert_eq!(ks.lock(0).stats.expired_keys, 1);
    }
}
