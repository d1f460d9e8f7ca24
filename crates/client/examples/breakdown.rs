//! One process of the breakdown figure (bench/client_figures.py runs four at once): CALLERS tasks
//! ask for one hot, missing key at START_UNIX_MS; the loader takes 50 ms. Prints the loader calls
//! and every caller's latency in microseconds.
//!
//! `breakdown ADDR plain|local|leases CALLERS START_UNIX_MS`
//! - `plain`: cache-aside without protection (GET; on a miss load and SET);
//! - `local`: `get_or_load` without leases (one load per key per process);
//! - `leases`: `get_or_load` with shoal's leases (one load per key across processes).

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering::SeqCst};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use shoal_client::{Cache, CacheOptions, Client, Config};

const LOADER_MS: u64 = 50;
const TTL: Duration = Duration::from_secs(60);

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let a: Vec<String> = std::env::args().collect();
    let (addr, mode, callers, start_ms) = (
        a[1].clone(),
        a[2].clone(),
        a[3].parse::<usize>().unwrap(),
        a[4].parse::<u64>().unwrap(),
    );
    let mut cfg = Config::new(addr);
    cfg.request_timeout = Duration::from_secs(10);
    let client = Client::new(cfg);
    let cache = Cache::new(
        client.clone(),
        CacheOptions {
            leases: mode == "leases",
            ..CacheOptions::default()
        },
    );
    client.cmd(&[b"PING"]).await.unwrap();
    let now_ms = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64;
    tokio::time::sleep(Duration::from_millis(start_ms.saturating_sub(now_ms))).await;
    let loads = Arc::new(AtomicUsize::new(0));
    let tasks: Vec<_> = (0..callers)
        .map(|_| {
            let (client, cache, loads, mode) =
                (client.clone(), cache.clone(), loads.clone(), mode.clone());
            tokio::spawn(async move {
                let started = Instant::now();
                let loader = {
                    let loads = loads.clone();
                    move || async move {
                        loads.fetch_add(1, SeqCst);
                        tokio::time::sleep(Duration::from_millis(LOADER_MS)).await;
                        Ok::<_, String>(Some(b"row".to_vec()))
                    }
                };
                let v = if mode == "plain" {
                    match client.get(b"hot").await.unwrap() {
                        Some(v) => Some(v),
                        None => {
                            let v = loader().await.unwrap();
                            client
                                .set_px(b"hot", v.as_deref().unwrap(), TTL)
                                .await
                                .unwrap();
                            v
                        }
                    }
                } else {
                    cache.get_or_load(b"hot", TTL, loader).await.unwrap()
                };
                assert_eq!(v.as_deref(), Some(&b"row"[..]));
                started.elapsed().as_micros() as u64
            })
        })
        .collect();
    let mut lat = Vec::with_capacity(callers);
    for t in tasks {
        lat.push(t.await.unwrap());
    }
    let lat: Vec<String> = lat.iter().map(u64::to_string).collect();
    println!(
        "loads {} latencies_us {}",
        loads.load(SeqCst),
        lat.join(",")
    );
}
