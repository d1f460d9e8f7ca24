//! The penetration figure: LOOKUPS lookups of keys that exist nowhere, through `get_or_load` with
//! negative caching and a Bloom filter of the keys that do exist; prints the share that reached
//! the loader.
//!
//! `penetration ADDR LOOKUPS DISTINCT_MISSING`

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering::SeqCst};
use std::time::Duration;

use shoal_client::{Cache, CacheOptions, Client, Config};

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let a: Vec<String> = std::env::args().collect();
    let (addr, lookups, distinct) = (
        a[1].clone(),
        a[2].parse::<usize>().unwrap(),
        a[3].parse::<usize>().unwrap(),
    );
    let client = Client::new(Config::new(addr));
    client.cmd(&[b"DEL", b"pen:bloom"]).await.unwrap();
    client
        .cmd(&[b"BF.RESERVE", b"pen:bloom", b"0.001", b"10000"])
        .await
        .unwrap();
    // 10,000 keys exist in the database (and so in the filter, sized for them at 0.1%).
    for lo in (0..10_000).step_by(1000) {
        let mut args: Vec<Vec<u8>> = vec![b"BF.MADD".to_vec(), b"pen:bloom".to_vec()];
        args.extend((lo..lo + 1000).map(|i| format!("row:{i}").into_bytes()));
        client.pipeline(&[args]).await.unwrap();
    }
    for (label, bloom) in [
        ("negative caching only", false),
        ("negative caching + Bloom", true),
    ] {
        let cache = Cache::new(
            client.clone(),
            CacheOptions {
                bloom_key: bloom.then(|| b"pen:bloom".to_vec()),
                negative_ttl: Some(Duration::from_secs(600)),
                ..CacheOptions::default()
            },
        );
        let loads = Arc::new(AtomicUsize::new(0));
        // Names no earlier run used (its negative entries would still be cached).
        let run = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos();
        let prefix = format!("{}{run}", if bloom { "ghostb" } else { "ghost" });
        for i in 0..lookups {
            let key = format!("{prefix}:{distinct}:{}", i % distinct);
            let loads = loads.clone();
            let v = cache
                .get_or_load(
                    key.as_bytes(),
                    Duration::from_secs(600),
                    move || async move {
                        loads.fetch_add(1, SeqCst);
                        Ok::<_, String>(None)
                    },
                )
                .await
                .unwrap();
            assert!(v.is_none());
        }
        let n = loads.load(SeqCst);
        println!(
            "{label}: {lookups} lookups of {distinct} missing keys, {n} reached the loader ({:.3}%)",
            100.0 * n as f64 / lookups as f64
        );
    }
}
