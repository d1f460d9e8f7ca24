//! NearCache against a real shoal: repeated reads are answered in process (the server's GET count
//! does not move), a write by another client is seen once its invalidation arrives (and never
//! an older value after that), FLUSHALL empties the near cache.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use shoal_client::{Client, Config, NearCache};

struct Server(Child, u16);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn shoal() -> Server {
    let exe = std::env::current_exe().unwrap();
    let bin = exe.parent().and_then(|d| d.parent()).unwrap().join("shoal");
    assert!(bin.exists(), "run `cargo build -p shoal` first");
    let dir = std::env::temp_dir().join(format!("shoal-client-near-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let mut child = Command::new(bin)
        .args([
            "serve",
            "--port",
            "0",
            "--bind",
            "127.0.0.1",
            "--loglevel",
            "warning",
        ])
        .current_dir(&dir)
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let port = line.trim().rsplit(':').next().unwrap().parse().unwrap();
    Server(child, port)
}

async fn get_calls(c: &Client) -> u64 {
    let info = c.cmd(&[b"INFO", b"commandstats"]).await.unwrap();
    let text = String::from_utf8_lossy(info.as_bytes().unwrap()).to_string();
    text.lines()
        .find_map(|l| l.strip_prefix("cmdstat_get:calls="))
        .and_then(|r| r.split(',').next())
        .map_or(0, |n| n.parse().unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reads_are_local_until_the_server_invalidates_them() {
    let s = shoal();
    let addr = format!("127.0.0.1:{}", s.1);
    let plain = Client::new(Config::new(addr.clone()));
    let near = NearCache::connect(Config::new(addr), 1000).await.unwrap();
    plain.set(b"k", b"v1").await.unwrap();
    assert_eq!(near.get(b"k").await.unwrap(), Some(b"v1".to_vec()));
    let before = get_calls(&plain).await;
    for _ in 0..100 {
        assert_eq!(near.get(b"k").await.unwrap(), Some(b"v1".to_vec()));
    }
    assert_eq!(get_calls(&plain).await, before, "served in process");
    // Another client writes: once the invalidation is handled, the new value, never the old.
    plain.set(b"k", b"v2").await.unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while near.invalidations() == 0 {
        assert!(Instant::now() < deadline, "no invalidation arrived");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    for _ in 0..10 {
        assert_eq!(near.get(b"k").await.unwrap(), Some(b"v2".to_vec()));
    }
    // FLUSHALL: a null invalidation empties the near cache.
    let seen = near.invalidations();
    plain.cmd(&[b"FLUSHALL"]).await.unwrap();
    while near.invalidations() == seen {
        assert!(Instant::now() < deadline, "no flush invalidation arrived");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert_eq!(near.get(b"k").await.unwrap(), None);
}
