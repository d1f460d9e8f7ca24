//! Closed-loop maximum rate: every connection keeps `pipeline` requests in flight and sends the next
//! batch as soon as the previous one is answered, for a fixed time. The open-loop run takes its
//! target rates as fractions of this number, so it is measured with the same request mix, the same
//! connection count and the same client, on the same machine.

use std::time::{Duration, Instant};

use crate::client::{Conn, Outcome};
use crate::workload::{Mix, connection_seed, encode_op};

#[derive(Clone, Debug)]
pub struct Config {
    pub addr: String,
    pub keys: u64,
    pub skew: f64,
    pub get_ratio: f64,
    pub connections: usize,
    pub pipeline: usize,
    pub seed: u64,
    /// Requests completed before this much time has passed are not counted (connection start-up,
    /// CPU frequency ramp).
    pub warmup: Duration,
    pub duration: Duration,
    pub io_timeout: Duration,
    /// TLS (`--tls`), or plain TCP.
    pub tls: Option<crate::tls::Tls>,
}

#[derive(Default, Debug)]
pub struct Totals {
    /// Requests completed in the measured window.
    pub requests: u64,
    /// Every request completed, warm-up included: what the server's CPU time was spent on.
    pub all_requests: u64,
    pub errors: u64,
    pub first_error: Option<String>,
    pub secs: f64,
}

pub async fn run(cfg: Config) -> std::io::Result<Totals> {
    assert!(cfg.connections >= 1 && cfg.pipeline >= 1);
    let mut conns = Vec::with_capacity(cfg.connections);
    for _ in 0..cfg.connections {
        conns.push(Conn::connect_with(&cfg.addr, cfg.io_timeout, cfg.tls.as_ref()).await?);
    }
    let start = Instant::now();
    let (measure_from, end) = (start + cfg.warmup, start + cfg.warmup + cfg.duration);
    let mut tasks = Vec::with_capacity(cfg.connections);
    for (index, mut conn) in conns.into_iter().enumerate() {
        let cfg = cfg.clone();
        tasks.push(tokio::spawn(async move {
            let mut mix = Mix::new(
                cfg.keys,
                cfg.skew,
                cfg.get_ratio,
                connection_seed(cfg.seed, index),
            );
            let mut t = Totals::default();
            let mut key = Vec::with_capacity(32);
            // Bounded by time: each iteration is one batch, and the loop ends at `end` (or on the
            // first I/O error, which the per-operation timeout guarantees to come).
            while Instant::now() < end {
                for _ in 0..cfg.pipeline {
                    encode_op(mix.op(), &mut key, conn.write_buf());
                }
                let batch = async {
                    conn.flush().await?;
                    let mut errors = Vec::new();
                    for _ in 0..cfg.pipeline {
                        if let Outcome::Error(e) = conn.reply().await? {
                            errors.push(e);
                        }
                    }
                    std::io::Result::Ok(errors)
                };
                let errors = batch.await?;
                t.all_requests += cfg.pipeline as u64;
                if Instant::now() >= measure_from {
                    t.requests += cfg.pipeline as u64;
                    t.errors += errors.len() as u64;
                    if t.first_error.is_none() {
                        t.first_error = errors.into_iter().next();
                    }
                }
            }
            std::io::Result::Ok(t)
        }));
    }
    let mut totals = Totals::default();
    for task in tasks {
        let t = task.await.map_err(std::io::Error::other)??;
        totals.requests += t.requests;
        totals.all_requests += t.all_requests;
        totals.errors += t.errors;
        if totals.first_error.is_none() {
            totals.first_error = t.first_error;
        }
    }
    // Counted batches are those finished after `measure_from`, the last one possibly after `end`.
    totals.secs = measure_from.elapsed().as_secs_f64();
    Ok(totals)
}
