//! The client-overhead figure: GET and SET requests per second through shoal-client and through
//! redis-rs (its multiplexed async connection) against the same server, with one task (latency
//! bound) and with TASKS concurrent tasks.
//!
//! `overhead ADDR [REQUESTS_PER_RUN] [TASKS]`

use std::time::{Duration, Instant};

use shoal_client::{Client, Config};

async fn run_shoal(c: &Client, tasks: usize, n: usize, set: bool) -> f64 {
    let started = Instant::now();
    let hs: Vec<_> = (0..tasks)
        .map(|t| {
            let c = c.clone();
            tokio::spawn(async move {
                for i in 0..n / tasks {
                    let k = format!("oh:{t}:{}", i % 100);
                    if set {
                        c.set(k.as_bytes(), b"0123456789abcdef").await.unwrap();
                    } else {
                        c.get(k.as_bytes()).await.unwrap();
                    }
                }
            })
        })
        .collect();
    for h in hs {
        h.await.unwrap();
    }
    n as f64 / started.elapsed().as_secs_f64()
}

async fn run_redis(
    c: &redis::aio::MultiplexedConnection,
    tasks: usize,
    n: usize,
    set: bool,
) -> f64 {
    let started = Instant::now();
    let hs: Vec<_> = (0..tasks)
        .map(|t| {
            let mut c = c.clone();
            tokio::spawn(async move {
                for i in 0..n / tasks {
                    let k = format!("oh:{t}:{}", i % 100);
                    if set {
                        let _: () = redis::cmd("SET")
                            .arg(&k)
                            .arg("0123456789abcdef")
                            .query_async(&mut c)
                            .await
                            .unwrap();
                    } else {
                        let _: Option<Vec<u8>> =
                            redis::cmd("GET").arg(&k).query_async(&mut c).await.unwrap();
                    }
                }
            })
        })
        .collect();
    for h in hs {
        h.await.unwrap();
    }
    n as f64 / started.elapsed().as_secs_f64()
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let a: Vec<String> = std::env::args().collect();
    let addr = a[1].clone();
    let n: usize = a.get(2).map_or(50_000, |s| s.parse().unwrap());
    let tasks: usize = a.get(3).map_or(50, |s| s.parse().unwrap());
    let mut cfg = Config::new(addr.clone());
    cfg.request_timeout = Duration::from_secs(10);
    let ours = Client::new(cfg);
    let theirs = redis::Client::open(format!("redis://{addr}/"))
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap();
    for t in [1, tasks] {
        for set in [true, false] {
            let name = if set { "SET" } else { "GET" };
            // Interleaved rounds; the median of each side.
            let (mut o, mut r) = (Vec::new(), Vec::new());
            for _ in 0..3 {
                o.push(run_shoal(&ours, t, n / if t == 1 { 5 } else { 1 }, set).await);
                r.push(run_redis(&theirs, t, n / if t == 1 { 5 } else { 1 }, set).await);
            }
            o.sort_by(f64::total_cmp);
            r.sort_by(f64::total_cmp);
            println!(
                "{name} {t:>3} task(s): shoal-client {:>8.0} req/s, redis-rs {:>8.0} req/s, ratio {:.2}",
                o[1],
                r[1],
                o[1] / r[1]
            );
        }
    }
}
