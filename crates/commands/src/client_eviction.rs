//! Client eviction (`maxmemory-clients`, Redis 7.0): a bound on the memory all clients take
//! together, enforced by disconnecting the largest.
//!
//! A client's memory is what CLIENT LIST shows as `tot-mem` (`connection::client_mem`): query
//! and output buffers, arguments held, a queued transaction, its bookkeeping. Clients and
//! subscribers count; replicas attached here and the link to this node's primary do not, as in
//! Redis. A client with CLIENT NO-EVICT counts but is never evicted.
//!
//! Accounting is by deltas: a connection calls [`account`] after its buffers changed (after a
//! read, at the end of a batch; a publisher for a subscriber whose messages pile up), which
//! moves the difference from the client's last figure into the running total. Only while a limit
//! is set: with `maxmemory-clients 0` nothing is counted and the request path pays one atomic
//! load. When the total reaches the limit, [`evict`] takes every client's figure afresh (the
//! total is then exact again), and disconnects clients from the largest down until the total is
//! under the limit, as Redis's buckets do (largest first, only until below). The cron calls
//! [`evict`] too, which bounds any drift of the running total to one tick, and `CONFIG SET` of the
//! limit (or of `maxmemory`, for a percentage) evicts at once.
//!
//! Invariant: a client's share of the total is its handle's `accounted_mem`; the share is moved
//! only by a swap on that field, so a client leaves the total exactly once (evicted, or closed:
//! [`forget`]).

use std::sync::atomic::Ordering::Relaxed;
use std::sync::atomic::{AtomicBool, AtomicU64};

use crate::config::LogLevel;
use crate::state::{ClientHandle, ServerState, kind};

/// The running total of the counted clients' memory, and the evictor's turn.
#[derive(Debug, Default)]
pub struct ClientEviction {
    total: AtomicU64,
    /// One eviction pass at a time; another thread finding it taken skips its own (the pass
    /// under way brings the total under the limit).
    pass: std::sync::Mutex<()>,
    /// Clients disconnected by eviction (INFO `evicted_clients`).
    pub evicted: AtomicU64,
    /// The last pass ended over the limit with nothing left to evict (clients with NO-EVICT
    /// hold it): connections stop starting passes, the cron goes on trying once a tick, and the
    /// warning is logged once.
    stuck: AtomicBool,
}

impl ClientEviction {
    /// The counted clients' memory as last accounted.
    pub fn total(&self) -> u64 {
        self.total.load(Relaxed)
    }
}

/// Whether `h` counts toward the limit: clients and subscribers, not replication links.
fn counted(h: &ClientHandle) -> bool {
    h.kind.load(Relaxed) == kind::NORMAL
}

/// Brings `h`'s share of the total up to date and evicts if the total reached the limit.
/// Returns whether `h` itself is to close (evicted now or before).
#[inline]
pub fn account(srv: &ServerState, h: &ClientHandle) -> bool {
    let limit = srv.hot.clients_limit_bytes.load(Relaxed);
    if limit == 0 {
        return false;
    }
    account_slow(srv, h, limit)
}

#[cold]
fn account_slow(srv: &ServerState, h: &ClientHandle, limit: u64) -> bool {
    if h.killed.load(Relaxed) || !counted(h) {
        return h.killed.load(Relaxed);
    }
    let mem = crate::connection::client_mem(h, 0).total as u64;
    let before = h.accounted_mem.swap(mem, Relaxed);
    let ce = &srv.client_eviction;
    let total = if mem >= before {
        ce.total.fetch_add(mem - before, Relaxed) + (mem - before)
    } else {
        ce.total
            .fetch_sub(before - mem, Relaxed)
            .saturating_sub(before - mem)
    };
    if total >= limit && !ce.stuck.load(Relaxed) {
        evict(srv);
    }
    h.killed.load(Relaxed)
}

/// Takes a closing client's share out of the total.
pub fn forget(srv: &ServerState, h: &ClientHandle) {
    let share = h.accounted_mem.swap(0, Relaxed);
    if share != 0 {
        let _ = srv
            .client_eviction
            .total
            .fetch_update(Relaxed, Relaxed, |t| Some(t.saturating_sub(share)));
    }
}

/// Recounts every client's memory and, while the total is at or over the limit, disconnects the
/// largest evictable client. Cheap when no limit is set; skipped when another pass is under way.
/// Returns how many were evicted.
pub fn evict(srv: &ServerState) -> usize {
    if srv.hot.clients_limit_bytes.load(Relaxed) == 0 {
        return 0;
    }
    let Ok(pass) = srv.client_eviction.pass.try_lock() else {
        return 0;
    };
    pass_locked(srv, pass)
}

/// [`evict`] after any pass under way, with the limit in force now: `CONFIG SET` of a lower
/// limit answers once the clients over it are gone.
pub fn evict_now(srv: &ServerState) -> usize {
    let pass = srv
        .client_eviction
        .pass
        .lock()
        .unwrap_or_else(|p| p.into_inner());
    pass_locked(srv, pass)
}

fn pass_locked(srv: &ServerState, _pass: std::sync::MutexGuard<'_, ()>) -> usize {
    let ce = &srv.client_eviction;
    // Read under the pass: a pass that read an older limit is over.
    let limit = srv.hot.clients_limit_bytes.load(Relaxed);
    if limit == 0 {
        ce.stuck.store(false, Relaxed);
        return 0;
    }
    let handles = srv.client_handles();
    let mut total = 0u64;
    let mut candidates = Vec::new();
    for h in handles {
        if !counted(&h) || h.killed.load(Relaxed) {
            // Not (or no longer: a connection that became a replica's link) in the total.
            h.accounted_mem.store(0, Relaxed);
            continue;
        }
        let mem = crate::connection::client_mem(&h, 0).total as u64;
        h.accounted_mem.store(mem, Relaxed);
        total += mem;
        if !h.no_evict.load(Relaxed) {
            candidates.push((mem, h));
        }
    }
    ce.total.store(total, Relaxed);
    if total < limit {
        ce.stuck.store(false, Relaxed);
        return 0;
    }
    // Largest first; among equals, the newest (the client that just grew, most likely).
    candidates.sort_unstable_by(|a, b| b.0.cmp(&a.0).then(b.1.id.cmp(&a.1.id)));
    let mut evicted = 0;
    let now_ms = (srv.clock.unix_us)() / 1000;
    for (mem, h) in candidates {
        if total < limit {
            break;
        }
        let line = crate::connection::client_line(&h, now_ms, 0);
        (srv.hooks.log)(LogLevel::Notice, &format!("Evicting client: {line}"));
        h.kill();
        // Gone from CLIENT LIST and INFO at once, as Redis frees an evicted client before it
        // goes on (its connection task ends a moment later); its share leaves the total.
        srv.unregister_client(h.id);
        total = total.saturating_sub(mem);
        ce.evicted.fetch_add(1, Relaxed);
        evicted += 1;
    }
    let stuck = total >= limit;
    if stuck && !ce.stuck.swap(true, Relaxed) {
        (srv.hooks.log)(
            LogLevel::Warning,
            "Over client maxmemory after evicting all evictable clients",
        );
    }
    if !stuck {
        ce.stuck.store(false, Relaxed);
    }
    evicted
}
