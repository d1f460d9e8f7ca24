//! Background cron on its own OS thread: the active expire cycle, the peak of used memory, the
//! once-a-second samples (ops/sec, network KiB/s), and the log lines of role, fencing and eviction
//! changes (`events`).
//!
//! Active expiry runs `hz` times a second. Each pass visits every shard, deleting at most
//! `EXPIRE_KEYS_PER_LOCK` due keys per lock hold (so a client waits at most a few microseconds for a
//! shard), and repeats while keys remain due, within `EXPIRE_CYCLE_BUDGET_PERCENT` of the period.
//! When the budget ran out with keys still due, the next cycle starts at once instead of after a full
//! period, so a write-heavy load with short TTLs cannot leave expired keys piling up. Hash fields
//! with a TTL (HEXPIRE) expire in the same cycle, at most `EXPIRE_FIELDS_PER_LOCK` per lock hold;
//! each hash that loses fields gets a new version and its deletions replicate as HDELs.
//!
//! Eviction in the background: a node over `maxmemory` (lowered by CONFIG SET, or grown by
//! reads' buffers) evicts down to it each cycle, within `EVICT_CYCLE_BUDGET_PERCENT` of the
//! period, without waiting for a write to do it, as Redis's eviction timer does. Not on a
//! replica (its primary's deletions decide), nor during CLIENT PAUSE, nor with the disk tier on
//! (victims move to the disk at the pace it writes them, which writes set; a burst from here
//! would find the tier busy and drop them).

use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use shoal_commands::ServerState;
use tokio::sync::watch;

use crate::now_ms;

/// Due keys deleted per shard lock hold.
pub const EXPIRE_KEYS_PER_LOCK: usize = 64;
/// Due hash fields deleted per shard lock hold.
pub const EXPIRE_FIELDS_PER_LOCK: usize = 64;
/// Share of each cron period the expire cycle may use.
pub const EXPIRE_CYCLE_BUDGET_PERCENT: u64 = 25;

/// Share of each cron period background eviction may use.
pub const EVICT_CYCLE_BUDGET_PERCENT: u64 = 25;

/// Rounds of eviction (each up to `EVICTIONS_PER_COMMAND_MAX` keys) one cycle runs at most.
pub const EVICT_ROUNDS_PER_CYCLE_MAX: usize = 64;

/// Evicts until used memory is back under `maxmemory`, nothing is left to evict (or the policy
/// evicts nothing), or `budget` is spent.
fn evict_cycle(srv: &ServerState, budget: Duration) {
    let t0 = Instant::now();
    for _ in 0..EVICT_ROUNDS_PER_CYCLE_MAX {
        let before = srv.used_memory();
        if !shoal_commands::ensure_memory(srv, now_ms()) {
            return;
        }
        // Under the limit (nothing was evicted), or out of time.
        if srv.used_memory() >= before || t0.elapsed() >= budget {
            return;
        }
    }
}

/// Runs one active expire cycle within `budget`. Returns (keys deleted, keys still due).
pub fn expire_cycle(srv: &ServerState, budget: Duration) -> (usize, bool) {
    let started = Instant::now();
    let mut deleted = 0;
    loop {
        let mut more = false;
        for i in 0..srv.ks.shard_count() {
            let (n, m) = srv
                .ks
                .lock(i)
                .expire_cycle(now_ms(), EXPIRE_KEYS_PER_LOCK, |_, _| {});
            deleted += n;
            more |= m;
            let now = now_ms();
            let (_, m) = srv.ks.lock(i).expire_fields_cycle(
                now,
                EXPIRE_FIELDS_PER_LOCK,
                || srv.ks.hlc.next(now),
                |_, _| {},
            );
            more |= m;
        }
        if !more {
            return (deleted, false);
        }
        if started.elapsed() >= budget {
            return (deleted, true);
        }
    }
}

/// Network byte counters in the order of `Stats::instantaneous_kbps_x100`.
fn net_bytes(srv: &ServerState) -> [u64; 4] {
    let s = &srv.stats;
    [
        s.total_net_input_bytes.load(),
        s.total_net_output_bytes.load(),
        s.total_net_repl_input_bytes.load(Relaxed),
        s.total_net_repl_output_bytes.load(Relaxed),
    ]
}

pub fn spawn(srv: Arc<ServerState>, mut shutdown: watch::Receiver<bool>) -> JoinHandle<()> {
    std::thread::Builder::new()
        .name("shoal-cron".into())
        .spawn(move || {
            let mut last_ops = srv.stats.total_commands_processed.load();
            let mut last_net = net_bytes(&srv);
            let mut last_sample = Instant::now();
            let mut watch = crate::events::Watch::new(&srv);
            loop {
                if shutdown.has_changed().unwrap_or(true) && *shutdown.borrow_and_update() {
                    return;
                }
                let hz = u64::from(srv.config().hz);
                let period = Duration::from_millis(1000 / hz);
                let budget = period * EXPIRE_CYCLE_BUDGET_PERCENT as u32 / 100;
                let t0 = Instant::now();
                // A CLIENT PAUSE that ran out releases expiry on access.
                srv.sync_pause_expiry(now_ms());
                // Replicas never expire keys themselves: the primary's deletions arrive instead;
                // and a CLIENT PAUSE freezes the data set, as Redis's pause stops active expiry.
                let (_, more) =
                    if srv.repl.is_replica() || srv.client_pause.active(now_ms()).is_some() {
                        (0, false)
                    } else {
                        expire_cycle(&srv, budget)
                    };
                let expire_took = t0.elapsed();
                let s = &srv.stats;
                s.expire_cycle_cpu_ms
                    .fetch_add(expire_took.as_millis() as u64, Relaxed);
                if more {
                    s.expired_time_cap_reached_count.fetch_add(1, Relaxed);
                }
                if srv.maxmemory() > 0
                    && !srv.repl.is_replica()
                    && !srv.ks.tiered()
                    && srv.client_pause.active(now_ms()).is_none()
                {
                    evict_cycle(&srv, period * EVICT_CYCLE_BUDGET_PERCENT as u32 / 100);
                }
                s.observe_used_memory(srv.used_memory() as u64);
                // `maxmemory-clients`: the clients' total recounted (what connections did not
                // account: a blocked client's arguments, a subscriber's backlog) and enforced.
                shoal_commands::client_eviction::evict(&srv);
                shoal_commands::effects::emit_logged(&srv, now_ms());
                shoal_commands::notify::publish_pending(&srv, now_ms());
                // BCAST keys gathered by commands run outside a connection's batch.
                shoal_commands::tracking::flush_broadcasts(&srv, now_ms());
                let took = t0.elapsed();
                srv.latency_sample("expire-cycle", took.as_millis() as u64, now_ms() / 1000);
                watch.check(&srv);
                crate::log::follow_level(srv.config().loglevel);
                if last_sample.elapsed() >= Duration::from_secs(1) {
                    crate::persist::save_cron(&srv);
                    crate::aof::cron(&srv);
                    watch.check_eviction(&srv);
                    let ops = srv.stats.total_commands_processed.load();
                    let secs = last_sample.elapsed().as_secs_f64();
                    srv.stats.instantaneous_ops_per_sec.store(
                        ((ops.saturating_sub(last_ops)) as f64 / secs) as u64,
                        Relaxed,
                    );
                    last_ops = ops;
                    let net = net_bytes(&srv);
                    for (i, (now, before)) in net.iter().zip(last_net).enumerate() {
                        let kbps = now.saturating_sub(before) as f64 / 1024.0 / secs;
                        srv.stats.instantaneous_kbps_x100[i]
                            .store((kbps * 100.0).round() as u64, Relaxed);
                    }
                    last_net = net;
                    last_sample = Instant::now();
                }
                // Keys still due: go again after a short pause that keeps the duty cycle at budget.
                let pause = if more {
                    took * (100 - EXPIRE_CYCLE_BUDGET_PERCENT as u32)
                        / EXPIRE_CYCLE_BUDGET_PERCENT as u32
                } else {
                    period.saturating_sub(took)
                };
                std::thread::sleep(pause.max(Duration::from_millis(1)));
            }
        })
        .expect("spawn cron thread")
}
