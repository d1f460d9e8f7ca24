//! The client-overhead figure: GET and SET requests per second through shoal-client and through
//! redis-rs (its multiplexed async connection) against the same server, at the same concurrency
//! and pipelining: one connection each (`pool_size` 1), 1 task (latency bound) and TASKS tasks
//! sharing the connection, each request one command (P1) or a pipeline of 16 (P16). ROUNDS
//! interleaved rounds (shoal-client first in odd rounds, redis-rs first in even ones); per cell
//! the median req/s of each side, the median of the per-round ratios, and each side's CPU time
//! per request (this process's user + system time over the run: steadier than req/s on a
//! loaded machine). Run by `bench/client-overhead`.
//!
//! `overhead ADDR [REQUESTS_PER_RUN] [TASKS] [ROUNDS]`; with `OVERHEAD_PROFILE=shoal|redis` only
//! that side's GET at TASKS tasks × P1 runs (to profile it).

use std::time::{Duration, Instant};

use shoal_client::{Client, Config};

const VALUE: &[u8] = b"0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";
/// Keys per task (the working set stays small: the figure is about the client, not the server).
const KEYS_PER_TASK: usize = 100;

#[derive(Clone, Copy)]
struct Case {
    set: bool,
    tasks: usize,
    pipeline: usize,
    requests: usize,
}

/// Keys of task `t`, made once so that neither side pays for formatting in the loop.
fn keys(t: usize) -> Vec<Vec<u8>> {
    (0..KEYS_PER_TASK)
        .map(|i| format!("oh:{t}:{i}").into_bytes())
        .collect()
}

async fn run_shoal(c: &Client, case: Case) -> f64 {
    let started = Instant::now();
    let per_task = case.requests / case.tasks / case.pipeline;
    let hs: Vec<_> = (0..case.tasks)
        .map(|t| {
            let c = c.clone();
            tokio::spawn(async move {
                let keys = keys(t);
                for i in 0..per_task {
                    if case.pipeline == 1 {
                        let k = &keys[i % KEYS_PER_TASK];
                        if case.set {
                            c.set(k, VALUE).await.unwrap();
                        } else {
                            c.get(k).await.unwrap();
                        }
                    } else {
                        let cmds: Vec<[&[u8]; 3]> = (0..case.pipeline)
                            .map(|j| {
                                let k = keys[(i + j) % KEYS_PER_TASK].as_slice();
                                if case.set {
                                    [b"SET", k, VALUE]
                                } else {
                                    [b"GET", k, b""]
                                }
                            })
                            .collect();
                        let args: Vec<&[&[u8]]> = cmds
                            .iter()
                            .map(|c| if case.set { &c[..] } else { &c[..2] })
                            .collect();
                        let r = c.pipeline_args(&args).await.unwrap();
                        assert_eq!(r.len(), case.pipeline);
                    }
                }
            })
        })
        .collect();
    for h in hs {
        h.await.unwrap();
    }
    (per_task * case.tasks * case.pipeline) as f64 / started.elapsed().as_secs_f64()
}

async fn run_redis(c: &redis::aio::MultiplexedConnection, case: Case) -> f64 {
    let started = Instant::now();
    let per_task = case.requests / case.tasks / case.pipeline;
    let hs: Vec<_> = (0..case.tasks)
        .map(|t| {
            let mut c = c.clone();
            tokio::spawn(async move {
                let keys = keys(t);
                for i in 0..per_task {
                    if case.pipeline == 1 {
                        let k = &keys[i % KEYS_PER_TASK];
                        if case.set {
                            let _: () = redis::cmd("SET")
                                .arg(k)
                                .arg(VALUE)
                                .query_async(&mut c)
                                .await
                                .unwrap();
                        } else {
                            let _: Option<Vec<u8>> =
                                redis::cmd("GET").arg(k).query_async(&mut c).await.unwrap();
                        }
                    } else {
                        let mut p = redis::pipe();
                        for j in 0..case.pipeline {
                            let k = &keys[(i + j) % KEYS_PER_TASK];
                            if case.set {
                                p.cmd("SET").arg(k).arg(VALUE);
                            } else {
                                p.cmd("GET").arg(k);
                            }
                        }
                        let r: Vec<redis::Value> = p.query_async(&mut c).await.unwrap();
                        assert_eq!(r.len(), case.pipeline);
                    }
                }
            })
        })
        .collect();
    for h in hs {
        h.await.unwrap();
    }
    (per_task * case.tasks * case.pipeline) as f64 / started.elapsed().as_secs_f64()
}

/// CPU time this process has used (user + system), from `/proc/self/stat` (Linux; in clock
/// ticks of 10 ms, so a run should last a second or so to be read to a few percent).
fn cpu_seconds() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    // Fields after the command name (which may hold spaces) start at state, field 3.
    let rest = stat.rsplit(')').next().unwrap_or("");
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| f.get(i).and_then(|x| x.parse::<f64>().ok()).unwrap_or(0.0);
    (ticks(11) + ticks(12)) / 100.0
}

/// A run's req/s and the client's CPU µs per request.
async fn measured(run: impl std::future::Future<Output = f64>, requests: usize) -> (f64, f64) {
    let cpu = cpu_seconds();
    let rate = run.await;
    (rate, (cpu_seconds() - cpu) * 1e6 / requests as f64)
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let a: Vec<String> = std::env::args().collect();
    let addr = a
        .get(1)
        .expect("overhead ADDR [REQUESTS] [TASKS] [ROUNDS]")
        .clone();
    let n: usize = a.get(2).map_or(200_000, |s| s.parse().unwrap());
    let tasks: usize = a.get(3).map_or(50, |s| s.parse().unwrap());
    let rounds: usize = a.get(4).map_or(3, |s| s.parse().unwrap());
    let mut cfg = Config::new(addr.clone());
    cfg.pool_size = 1;
    cfg.request_timeout = Duration::from_secs(10);
    let ours = Client::new(cfg);
    let theirs = redis::Client::open(format!("redis://{addr}/"))
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap();
    // `OVERHEAD_PROFILE=shoal|redis`: only that side's GET at TASKS × P1, for a profiler.
    if let Ok(side) = std::env::var("OVERHEAD_PROFILE") {
        let case = Case {
            set: false,
            tasks,
            pipeline: 1,
            requests: n,
        };
        let rate = if side == "shoal" {
            run_shoal(&ours, case).await
        } else {
            run_redis(&theirs, case).await
        };
        println!("{side}: GET {tasks} tasks P1: {rate:.0} req/s");
        return;
    }
    // Warm both up (connections, keys present for GET).
    for set in [true, false] {
        let warm = Case {
            set,
            tasks,
            pipeline: 1,
            requests: tasks * KEYS_PER_TASK,
        };
        run_shoal(&ours, warm).await;
        run_redis(&theirs, warm).await;
    }
    println!(
        "| request | tasks | pipeline | shoal-client req/s (runs) | redis-rs req/s (runs) | ratio (median of per-round ratios) | client CPU µs per request, shoal-client / redis-rs (medians) |"
    );
    println!("|---|---|---|---|---|---|---|");
    for (t, p) in [(1, 1), (tasks, 1), (tasks, 16)] {
        for set in [false, true] {
            // A run with one task and no pipeline is latency bound: fewer requests.
            let requests = if t == 1 && p == 1 { n / 5 } else { n };
            let case = Case {
                set,
                tasks: t,
                pipeline: p,
                requests,
            };
            let (mut o, mut r, mut ratios) = (Vec::new(), Vec::new(), Vec::new());
            let (mut oc, mut rc) = (Vec::new(), Vec::new());
            for round in 0..rounds {
                let ((x, xc), (y, yc)) = if round % 2 == 0 {
                    let x = measured(run_shoal(&ours, case), requests).await;
                    (x, measured(run_redis(&theirs, case), requests).await)
                } else {
                    let y = measured(run_redis(&theirs, case), requests).await;
                    (measured(run_shoal(&ours, case), requests).await, y)
                };
                o.push(x);
                r.push(y);
                oc.push(xc);
                rc.push(yc);
                ratios.push(x / y);
            }
            let runs = |v: &[f64]| {
                v.iter()
                    .map(|x| format!("{x:.0}"))
                    .collect::<Vec<_>>()
                    .join(", ")
            };
            println!(
                "| {} | {t} | {p} | {:.0} ({}) | {:.0} ({}) | {:.2} | {:.2} / {:.2} |",
                if set { "SET" } else { "GET" },
                median(o.clone()),
                runs(&o),
                median(r.clone()),
                runs(&r),
                median(ratios),
                median(oc),
                median(rc),
            );
        }
    }
}
