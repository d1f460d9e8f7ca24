//! The near-cache figure: GETs of a hot working set (100 keys) per second through NearCache and
//! through the plain client, one task.
//!
//! `near ADDR [GETS]`

use std::time::Instant;

use shoal_client::{Client, Config, NearCache};

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let a: Vec<String> = std::env::args().collect();
    let addr = a[1].clone();
    let n: usize = a.get(2).map_or(100_000, |s| s.parse().unwrap());
    let plain = Client::new(Config::new(addr.clone()));
    let near = NearCache::connect(Config::new(addr), 10_000).await.unwrap();
    for i in 0..100 {
        plain
            .set(format!("hot:{i}").as_bytes(), b"0123456789abcdef")
            .await
            .unwrap();
    }
    let started = Instant::now();
    for i in 0..n {
        plain
            .get(format!("hot:{}", i % 100).as_bytes())
            .await
            .unwrap();
    }
    let off = n as f64 / started.elapsed().as_secs_f64();
    let started = Instant::now();
    for i in 0..n {
        near.get(format!("hot:{}", i % 100).as_bytes())
            .await
            .unwrap();
    }
    let on = n as f64 / started.elapsed().as_secs_f64();
    println!(
        "hot GET, 100 keys, one task: near cache off {off:.0}/s, on {on:.0}/s ({:.1}x)",
        on / off
    );
}
