//! shoal-client against real servers: a shoal process (the workspace's binary, built by
//! `cargo build -p shoal`) and, with the shoal-only features off, redis-server. Pool and
//! pipelining, typed errors, request timeouts, reconnection after a restart, and get_or_load's
//! protections under many concurrent tasks with a counting loader.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering::SeqCst};
use std::time::{Duration, Instant};

use shoal_client::{Cache, CacheOptions, Client, Config, Error, Lookup, Reply, cmd};

/// The shoal binary next to this test's directory (`target/debug/shoal`).
fn shoal_bin() -> std::path::PathBuf {
    let exe = std::env::current_exe().expect("test path");
    let bin = exe
        .parent()
        .and_then(|d| d.parent())
        .expect("target dir")
        .join("shoal");
    assert!(
        bin.exists(),
        "{} is missing: run `cargo build -p shoal` first",
        bin.display()
    );
    bin
}

/// A server process, killed on drop.
struct Server {
    child: Child,
    port: u16,
    _dir: Option<std::path::PathBuf>,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Server {
    fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }
}

/// Starts shoal on `port` (0: any) and reads the bound port from its first line.
fn shoal(port: u16) -> Server {
    let dir = std::env::temp_dir().join(format!(
        "shoal-client-test-{}-{port}-{}",
        std::process::id(),
        Instant::now().elapsed().as_nanos()
    ));
    std::fs::create_dir_all(&dir).unwrap();
    let mut child = Command::new(shoal_bin())
        .args(["serve", "--bind", "127.0.0.1", "--loglevel", "warning"])
        .args(["--port", &port.to_string()])
        .current_dir(&dir)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("spawn shoal");
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let port = line.trim().rsplit(':').next().unwrap().parse().unwrap();
    Server {
        child,
        port,
        _dir: Some(dir),
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Polls `f` every 20 ms for at most 10 s.
async fn eventually(what: &str, mut f: impl AsyncFnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline {
        if f().await {
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("timed out waiting for: {what}");
}

fn client(s: &Server) -> Client {
    Client::new(Config::new(s.addr()))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pipelines_typed_errors_and_a_timeout_that_drops_only_its_connection() {
    let s = shoal(0);
    let c = client(&s);
    c.set(b"k", b"v").await.unwrap();
    assert_eq!(c.get(b"k").await.unwrap(), Some(b"v".to_vec()));
    assert_eq!(c.get(b"missing").await.unwrap(), None);
    let cmds: Vec<Vec<Vec<u8>>> = (0..100).map(|_| cmd(&["INCR", "n"])).collect();
    let r = c.pipeline(&cmds).await.unwrap();
    assert_eq!(r.len(), 100);
    assert_eq!(r[99], Reply::Int(100));
    // Error replies are values in a pipeline, typed errors from cmd().
    let r = c
        .pipeline(&[cmd(&["LPUSH", "k", "x"]), cmd(&["GET", "k"])])
        .await
        .unwrap();
    assert!(matches!(&r[0], Reply::Error(e) if e.starts_with("WRONGTYPE")));
    match c.cmd(&[b"LPUSH", b"k", b"x"]).await {
        Err(Error::Reply(e)) => assert!(e.starts_with("WRONGTYPE"), "{e}"),
        other => panic!("{other:?}"),
    }
    // A request slower than the timeout fails with Timeout; the pool goes on.
    let mut cfg = Config::new(s.addr());
    cfg.request_timeout = Duration::from_millis(200);
    cfg.pool_size = 1;
    let slow = Client::new(cfg);
    let started = Instant::now();
    assert_eq!(
        slow.cmd(&[b"BLPOP", b"empty", b"5"]).await.unwrap_err(),
        Error::Timeout
    );
    assert!(started.elapsed() < Duration::from_secs(2));
    assert_eq!(slow.get(b"n").await.unwrap(), Some(b"100".to_vec()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_server_is_reconnected_to_with_backoff() {
    let port = free_port();
    let s = shoal(port);
    let mut cfg = Config::new(s.addr());
    cfg.pool_size = 2;
    cfg.backoff_base = Duration::from_millis(20);
    cfg.backoff_max = Duration::from_millis(200);
    let c = Client::new(cfg);
    c.set(b"k", b"v").await.unwrap();
    drop(s);
    // While it is down, requests fail fast with typed connection errors.
    for _ in 0..5 {
        let e = c.get(b"k").await.unwrap_err();
        assert!(e.is_connection_level(), "{e:?}");
    }
    let _s = shoal(port);
    eventually("the client reconnects", async || {
        c.set(b"k", b"again").await.is_ok()
    })
    .await;
    // Every pooled connection works again.
    for _ in 0..4 {
        assert_eq!(c.get(b"k").await.unwrap(), Some(b"again".to_vec()));
    }
}

/// A loader's future, boxed so helpers can name it.
type LoadFuture = std::pin::Pin<Box<dyn Future<Output = Result<Option<Vec<u8>>, String>> + Send>>;

/// A loader that counts its calls and takes `ms`.
fn counting(
    calls: &Arc<AtomicUsize>,
    ms: u64,
    value: Option<&'static str>,
) -> impl FnOnce() -> LoadFuture + Send + 'static {
    let calls = calls.clone();
    move || {
        Box::pin(async move {
            calls.fetch_add(1, SeqCst);
            tokio::time::sleep(Duration::from_millis(ms)).await;
            Ok(value.map(|v| v.as_bytes().to_vec()))
        })
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_tasks_in_one_process_share_one_load() {
    let s = shoal(0);
    let cache = Cache::new(client(&s), CacheOptions::default());
    let calls = Arc::new(AtomicUsize::new(0));
    let tasks: Vec<_> = (0..200)
        .map(|_| {
            let cache = cache.clone();
            let loader = counting(&calls, 50, Some("row"));
            tokio::spawn(async move {
                cache
                    .get_or_load(b"hot", Duration::from_secs(60), loader)
                    .await
            })
        })
        .collect();
    for t in tasks {
        assert_eq!(t.await.unwrap().unwrap(), Some(b"row".to_vec()));
    }
    assert_eq!(calls.load(SeqCst), 1);
    let pttl = cache
        .client()
        .unwrap()
        .cmd(&[b"PTTL", b"hot"])
        .await
        .unwrap();
    let pttl = pttl.as_int().unwrap();
    assert!(
        (59_000..=66_000).contains(&pttl),
        "TTL 60 s + up to 10%: {pttl}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn callers_in_separate_processes_share_one_load_through_leases() {
    let s = shoal(0);
    // Separate caches with separate pools stand for separate processes: only the server's
    // leases coordinate them.
    let caches: Vec<Cache> = (0..4)
        .map(|_| Cache::new(client(&s), CacheOptions::default()))
        .collect();
    let calls = Arc::new(AtomicUsize::new(0));
    let mut tasks = Vec::new();
    for cache in &caches {
        for _ in 0..25 {
            let cache = cache.clone();
            let loader = counting(&calls, 50, Some("row"));
            tasks.push(tokio::spawn(async move {
                cache
                    .get_or_load(b"hot", Duration::from_secs(60), loader)
                    .await
            }));
        }
    }
    for t in tasks {
        assert_eq!(t.await.unwrap().unwrap(), Some(b"row".to_vec()));
    }
    assert_eq!(calls.load(SeqCst), 1, "one load across four processes");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn not_found_is_cached_and_the_bloom_filter_stops_lookups_of_unknown_keys() {
    let s = shoal(0);
    let c = client(&s);
    let cache = Cache::new(c.clone(), CacheOptions::default());
    let calls = Arc::new(AtomicUsize::new(0));
    for _ in 0..3 {
        let r = cache
            .get_or_load(b"ghost", Duration::from_secs(60), counting(&calls, 0, None))
            .await
            .unwrap();
        assert_eq!(r, None);
    }
    assert_eq!(calls.load(SeqCst), 1, "one load, then the negative entry");
    // Without negative caching every lookup loads.
    let plain = Cache::new(
        c.clone(),
        CacheOptions {
            negative_ttl: None,
            ..CacheOptions::default()
        },
    );
    let calls = Arc::new(AtomicUsize::new(0));
    for _ in 0..3 {
        let loader = counting(&calls, 0, None);
        plain
            .get_or_load(b"ghost2", Duration::from_secs(60), loader)
            .await
            .unwrap();
    }
    assert_eq!(calls.load(SeqCst), 3);
    // Bloom guard: only keys in the filter reach the loader.
    c.cmd(&[b"BF.ADD", b"known", b"user:1"]).await.unwrap();
    let guarded = Cache::new(
        c.clone(),
        CacheOptions {
            bloom_key: Some(b"known".to_vec()),
            ..CacheOptions::default()
        },
    );
    let calls = Arc::new(AtomicUsize::new(0));
    for i in 0..100 {
        let key = format!("user:{i}");
        let loader = counting(&calls, 0, Some("row"));
        let r = guarded
            .get_or_load(key.as_bytes(), Duration::from_secs(60), loader)
            .await
            .unwrap();
        assert_eq!(r.is_some(), i == 1);
    }
    assert_eq!(calls.load(SeqCst), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stale_value_is_served_while_one_caller_refreshes_it() {
    let s = shoal(0);
    let cache = Cache::new(
        client(&s),
        CacheOptions {
            stale: Duration::from_secs(60),
            ttl_jitter_percent: 0,
            ..CacheOptions::default()
        },
    );
    let calls = Arc::new(AtomicUsize::new(0));
    let v = cache
        .get_or_load(
            b"k",
            Duration::from_millis(100),
            counting(&calls, 0, Some("v1")),
        )
        .await
        .unwrap();
    assert_eq!(v, Some(b"v1".to_vec()));
    tokio::time::sleep(Duration::from_millis(150)).await;
    // Past its TTL the value is stale: served at once, refreshed in the background.
    let v = cache
        .get_or_load(
            b"k",
            Duration::from_secs(60),
            counting(&calls, 100, Some("v2")),
        )
        .await
        .unwrap();
    assert_eq!(v, Some(b"v1".to_vec()));
    eventually("the refresh lands", async || {
        cache.client().unwrap().get(b"k").await.unwrap() == Some(b"v2".to_vec())
    })
    .await;
    assert_eq!(calls.load(SeqCst), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_value_served_stale_is_marked_so_and_its_refresh_is_fresh() {
    let s = shoal(0);
    let cache = Cache::new(
        client(&s),
        CacheOptions {
            stale: Duration::from_secs(60),
            ttl_jitter_percent: 0,
            ..CacheOptions::default()
        },
    );
    let calls = Arc::new(AtomicUsize::new(0));
    let loaded = cache
        .get_or_load_marked(
            b"m",
            Duration::from_millis(50),
            counting(&calls, 0, Some("v1")),
        )
        .await
        .unwrap();
    assert_eq!(
        loaded,
        Lookup {
            value: Some(b"v1".to_vec()),
            stale: false
        }
    );
    // Fresh until its TTL; then served marked stale while one refresh (v2) runs.
    let mut stale = None;
    eventually("the value is served stale", async || {
        let r = cache
            .get_or_load_marked(
                b"m",
                Duration::from_secs(60),
                counting(&calls, 0, Some("v2")),
            )
            .await
            .unwrap();
        assert_eq!(r.value, Some(b"v1".to_vec()), "v1 until a refresh: {r:?}");
        if r.stale {
            stale = Some(r);
        }
        stale.is_some()
    })
    .await;
    eventually("the refreshed value is served fresh", async || {
        let r = cache
            .get_or_load_marked(
                b"m",
                Duration::from_secs(60),
                counting(&calls, 0, Some("v3")),
            )
            .await
            .unwrap();
        r == Lookup {
            value: Some(b"v2".to_vec()),
            stale: false,
        }
    })
    .await;
    assert_eq!(calls.load(SeqCst), 2, "one load, one refresh");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn against_redis_server_with_shoal_features_off() {
    let port = free_port();
    let dir = std::env::temp_dir().join(format!("shoal-client-redis-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let child = Command::new("redis-server")
        .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
        .args(["--save", "", "--appendonly", "no"])
        .current_dir(&dir)
        .stdout(Stdio::null())
        .spawn()
        .expect("redis-server");
    let s = Server {
        child,
        port,
        _dir: Some(dir),
    };
    let c = client(&s);
    eventually("redis-server is up", async || {
        c.cmd(&[b"PING"]).await.is_ok()
    })
    .await;
    let cache = Cache::new(
        c.clone(),
        CacheOptions {
            leases: false,
            ..CacheOptions::default()
        },
    );
    let calls = Arc::new(AtomicUsize::new(0));
    let tasks: Vec<_> = (0..50)
        .map(|_| {
            let cache = cache.clone();
            let loader = counting(&calls, 30, Some("row"));
            tokio::spawn(async move {
                cache
                    .get_or_load(b"hot", Duration::from_secs(60), loader)
                    .await
            })
        })
        .collect();
    for t in tasks {
        assert_eq!(t.await.unwrap().unwrap(), Some(b"row".to_vec()));
    }
    assert_eq!(calls.load(SeqCst), 1);
    for _ in 0..2 {
        let loader = counting(&calls, 0, None);
        let r = cache
            .get_or_load(b"ghost", Duration::from_secs(60), loader)
            .await
            .unwrap();
        assert_eq!(r, None);
    }
    assert_eq!(calls.load(SeqCst), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_down_node_opens_the_breaker_and_get_or_load_falls_back_to_a_bounded_loader() {
    let port = free_port();
    let s = shoal(port);
    let mut cfg = Config::new(s.addr());
    cfg.breaker_failures = 3;
    cfg.breaker_cooldown = Duration::from_millis(300);
    cfg.backoff_base = Duration::from_millis(5);
    cfg.backoff_max = Duration::from_millis(20);
    let c = Client::new(cfg);
    c.set(b"k", b"v").await.unwrap();
    drop(s);
    let mut errors = Vec::new();
    for _ in 0..6 {
        errors.push(c.get(b"k").await.unwrap_err());
    }
    assert!(
        errors[..3].iter().all(Error::is_connection_level),
        "{errors:?}"
    );
    assert_eq!(errors[5], Error::CircuitOpen, "{errors:?}");
    assert!(c.breaker_open());
    // The cache goes to the loader, at most fallback_loads_max at once.
    let cache = Cache::new(
        c.clone(),
        CacheOptions {
            fallback_loads_max: 2,
            ..CacheOptions::default()
        },
    );
    let (calls, running, peak) = (
        Arc::new(AtomicUsize::new(0)),
        Arc::new(AtomicUsize::new(0)),
        Arc::new(AtomicUsize::new(0)),
    );
    let tasks: Vec<_> = (0..10)
        .map(|i| {
            let cache = cache.clone();
            let (calls, running, peak) = (calls.clone(), running.clone(), peak.clone());
            tokio::spawn(async move {
                let key = format!("k{i}");
                cache
                    .get_or_load(
                        key.as_bytes(),
                        Duration::from_secs(60),
                        move || async move {
                            calls.fetch_add(1, SeqCst);
                            let now = running.fetch_add(1, SeqCst) + 1;
                            peak.fetch_max(now, SeqCst);
                            tokio::time::sleep(Duration::from_millis(20)).await;
                            running.fetch_sub(1, SeqCst);
                            Ok::<_, String>(Some(b"from source".to_vec()))
                        },
                    )
                    .await
            })
        })
        .collect();
    for t in tasks {
        assert_eq!(t.await.unwrap().unwrap(), Some(b"from source".to_vec()));
    }
    assert_eq!(calls.load(SeqCst), 10);
    assert!(peak.load(SeqCst) <= 2, "peak {}", peak.load(SeqCst));
    // Back up: after the cooldown requests go through again.
    let _s = shoal(port);
    eventually("the breaker closes", async || {
        c.set(b"k", b"w").await.is_ok()
    })
    .await;
    assert!(!c.breaker_open());
}
