//! Cache-aside hit-ratio run: GET a Zipf-chosen key; on a miss, SET it (as an application filling
//! its cache from the database would). Misses are counted only after a warm-up, so the result is the
//! steady-state miss ratio of the server's eviction policy under its `maxmemory`.
//!
//! Each connection pipelines a batch of GETs, then the SETs for that batch's misses. All connections
//! finish warm-up before any starts measuring (a barrier), so the measured phase sees a warm cache.

use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::Barrier;

use crate::client::{Conn, Outcome};
use crate::workload::{Mix, connection_seed, key_name, value_for};

#[derive(Clone, Debug)]
pub struct Config {
    pub addr: String,
    pub keys: u64,
    pub skew: f64,
    pub warmup: u64,
    pub requests: u64,
    pub connections: usize,
    pub pipeline: usize,
    pub seed: u64,
    pub io_timeout: Duration,
    /// Hard bound on the whole run; a run cut short reports `complete: false`.
    pub max_duration: Duration,
    /// TLS (`--tls`), or plain TCP.
    pub tls: Option<crate::tls::Tls>,
}

#[derive(Default, Debug)]
pub struct Totals {
    pub requests: u64,
    pub misses: u64,
    pub errors: u64,
    pub first_error: Option<String>,
    pub measure_secs: f64,
    pub complete: bool,
}

#[derive(Default)]
struct ConnTotals {
    requests: u64,
    misses: u64,
    errors: u64,
    first_error: Option<String>,
    complete: bool,
}

pub async fn run(cfg: Config) -> std::io::Result<Totals> {
    assert!(cfg.connections >= 1 && cfg.pipeline >= 1);
    let deadline = Instant::now() + cfg.max_duration;
    let barrier = Arc::new(Barrier::new(cfg.connections + 1));
    // Connect first, so a dead server is an error for the whole run rather than per task.
    let mut conns = Vec::with_capacity(cfg.connections);
    for _ in 0..cfg.connections {
        conns.push(Conn::connect_with(&cfg.addr, cfg.io_timeout, cfg.tls.as_ref()).await?);
    }
    let mut tasks = Vec::with_capacity(cfg.connections);
    for (index, conn) in conns.into_iter().enumerate() {
        let share = |total: u64| {
            total / cfg.connections as u64
                + u64::from((index as u64) < total % cfg.connections as u64)
        };
        let (warmup, requests) = (share(cfg.warmup), share(cfg.requests));
        let cfg = cfg.clone();
        let barrier = Arc::clone(&barrier);
        tasks.push(tokio::spawn(async move {
            connection(conn, &cfg, index, warmup, requests, &barrier, deadline).await
        }));
    }
    // The main task takes part in the barrier only to time the measured phase.
    let measure_start = wait_at(&barrier, deadline).await.then(Instant::now);
    let mut totals = Totals {
        complete: measure_start.is_some(),
        ..Totals::default()
    };
    for task in tasks {
        let t = task.await.map_err(std::io::Error::other)?;
        totals.requests += t.requests;
        totals.misses += t.misses;
        totals.errors += t.errors;
        totals.complete &= t.complete;
        if totals.first_error.is_none() {
            totals.first_error = t.first_error;
        }
    }
    totals.measure_secs = measure_start.map_or(0.0, |start| start.elapsed().as_secs_f64());
    Ok(totals)
}

/// Waits at the barrier until the run's deadline; false if the deadline came first.
async fn wait_at(barrier: &Barrier, deadline: Instant) -> bool {
    let left = deadline.saturating_duration_since(Instant::now());
    tokio::time::timeout(left, barrier.wait()).await.is_ok()
}

async fn connection(
    mut conn: Conn,
    cfg: &Config,
    index: usize,
    warmup: u64,
    requests: u64,
    barrier: &Barrier,
    deadline: Instant,
) -> ConnTotals {
    let mut mix = Mix::new(cfg.keys, cfg.skew, 1.0, connection_seed(cfg.seed, index));
    let mut t = ConnTotals::default();
    let warm = phase(&mut conn, cfg, &mut mix, warmup, deadline, &mut t).await;
    // Warm-up requests and misses are not part of the result; its errors are. Every connection
    // reaches the barrier, even a failed one, so the others are not held until the deadline.
    t.requests = 0;
    t.misses = 0;
    if !wait_at(barrier, deadline).await || !warm {
        return t;
    }
    t.complete = phase(&mut conn, cfg, &mut mix, requests, deadline, &mut t).await;
    t
}

/// Runs `count` cache-aside requests; false if the connection failed or the deadline passed.
async fn phase(
    conn: &mut Conn,
    cfg: &Config,
    mix: &mut Mix,
    count: u64,
    deadline: Instant,
    t: &mut ConnTotals,
) -> bool {
    let mut key = Vec::with_capacity(32);
    let mut batch = Vec::with_capacity(cfg.pipeline);
    let mut missed = Vec::with_capacity(cfg.pipeline);
    let mut done = 0;
    while done < count {
        if Instant::now() >= deadline {
            return false;
        }
        batch.clear();
        missed.clear();
        let size = (count - done).min(cfg.pipeline as u64);
        for _ in 0..size {
            let id = mix.key();
            key_name(id, &mut key);
            conn.queue(&[b"GET", &key]);
            batch.push(id);
        }
        if let Err(e) = send_and_read(conn, &batch, |i, outcome| match outcome {
            Outcome::Nil => missed.push(batch[i]),
            Outcome::Value => {}
            Outcome::Error(e) => note_error(t, e),
        })
        .await
        {
            note_error(t, e.to_string());
            return false;
        }
        for &id in &missed {
            key_name(id, &mut key);
            conn.queue(&[b"SET", &key, &value_for(id)]);
        }
        if let Err(e) = send_and_read(conn, &missed, |_, outcome| {
            if let Outcome::Error(e) = outcome {
                note_error(t, e);
            }
        })
        .await
        {
            note_error(t, e.to_string());
            return false;
        }
        t.requests += size;
        t.misses += missed.len() as u64;
        done += size;
    }
    true
}

async fn send_and_read(
    conn: &mut Conn,
    ids: &[u64],
    mut each: impl FnMut(usize, Outcome),
) -> std::io::Result<()> {
    conn.flush().await?;
    for i in 0..ids.len() {
        each(i, conn.reply().await?);
    }
    Ok(())
}

fn note_error(t: &mut ConnTotals, message: String) {
    t.errors += 1;
    t.first_error.get_or_insert(message);
}
