//! ClusterClient against a real local shoal cluster of three primaries (made with
//! `shoal cluster create`): keys of every part of the slot space are routed to their owners, a
//! node's own client sees `MOVED` as a typed redirect, and after a reshard (`shoal cluster
//! reshard`) the client follows the moved slots without surfacing an error.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use shoal_client::{Cache, CacheOptions, ClusterClient, Config, Error, key_slot};

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

struct Node {
    child: Child,
    port: u16,
}

impl Drop for Node {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn node(i: usize) -> Node {
    let dir = std::env::temp_dir().join(format!(
        "shoal-client-cluster-{}-{i}-{}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos()
    ));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let mut child = Command::new(shoal_bin())
        .args([
            "serve",
            "--port",
            "0",
            "--bind",
            "127.0.0.1",
            "--loglevel",
            "warning",
        ])
        .args(["--cluster-enabled", "yes"])
        .current_dir(&dir)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn shoal");
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let port = line.trim().rsplit(':').next().unwrap().parse().unwrap();
    Node { child, port }
}

fn tool(args: &[String]) -> String {
    let out = Command::new(shoal_bin())
        .arg("cluster")
        .args(args)
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "shoal cluster {args:?}: {text}");
    text
}

/// Cluster tests take turns: two clusters forming at once on two cores test the machine.
static TURN: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keys_of_every_slot_range_are_routed_and_a_reshard_is_followed() {
    let _turn = TURN.lock().await;
    let nodes: Vec<Node> = (0..3).map(node).collect();
    let addrs: Vec<String> = nodes
        .iter()
        .map(|n| format!("127.0.0.1:{}", n.port))
        .collect();
    let mut args = vec!["create".to_string()];
    args.extend(addrs.iter().cloned());
    tool(&args);
    let c = ClusterClient::connect(&[&addrs[0]], Config::new(""))
        .await
        .unwrap();
    let owners: std::collections::BTreeSet<String> = (0..16384u16)
        .step_by(97)
        .filter_map(|s| c.owner(s))
        .collect();
    assert_eq!(owners.len(), 3, "{owners:?}");
    const KEYS: usize = 2000;
    for i in 0..KEYS {
        let k = format!("key:{i}");
        c.set(k.as_bytes(), i.to_string().as_bytes()).await.unwrap();
    }
    for i in (0..KEYS).step_by(7) {
        let k = format!("key:{i}");
        assert_eq!(
            c.get(k.as_bytes()).await.unwrap(),
            Some(i.to_string().into_bytes())
        );
    }
    // A node asked for a key it does not own answers MOVED, typed.
    let slot = key_slot(b"key:0");
    let owner = c.owner(slot).unwrap();
    let other = addrs.iter().find(|a| **a != owner).unwrap();
    match c.node(other).get(b"key:0").await {
        Err(Error::Redirect {
            ask: false,
            slot: s,
            addr,
        }) => {
            assert_eq!((s, addr.as_str()), (slot, owner.as_str()))
        }
        r => panic!("{r:?}"),
    }
    // Move 2000 slots to the first node; the client (its map now stale) follows.
    let id = |addr: &str| -> String {
        let out = Command::new("redis-cli")
            .args(["-p", addr.rsplit(':').next().unwrap(), "CLUSTER", "MYID"])
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    };
    let to = id(&addrs[0]);
    tool(&[
        "reshard".into(),
        "--from".into(),
        "all".into(),
        "--to".into(),
        to,
        "--slots".into(),
        "2000".into(),
        "--yes".into(),
        addrs[0].clone(),
    ]);
    let started = Instant::now();
    for i in 0..KEYS {
        let k = format!("key:{i}");
        assert_eq!(
            c.get(k.as_bytes()).await.unwrap(),
            Some(i.to_string().into_bytes()),
            "key {i}"
        );
    }
    assert!(started.elapsed() < Duration::from_secs(60));
    // get_or_load over the cluster: keys of every primary, many tasks each, one load per key.
    let cache = Cache::new_cluster(c.clone(), CacheOptions::default());
    let loads = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let mut tasks = Vec::new();
    for k in 0..30 {
        for _ in 0..10 {
            let (cache, loads) = (cache.clone(), loads.clone());
            tasks.push(tokio::spawn(async move {
                let key = format!("cached:{k}");
                cache
                    .get_or_load(
                        key.as_bytes(),
                        Duration::from_secs(60),
                        move || async move {
                            loads.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                            tokio::time::sleep(Duration::from_millis(20)).await;
                            Ok::<_, String>(Some(format!("row {k}").into_bytes()))
                        },
                    )
                    .await
                    .map(|v| (k, v))
            }));
        }
    }
    for t in tasks {
        let (k, v) = t.await.unwrap().unwrap();
        assert_eq!(v, Some(format!("row {k}").into_bytes()));
    }
    assert_eq!(loads.load(std::sync::atomic::Ordering::SeqCst), 30);
    let owners: std::collections::BTreeSet<String> = (0..30)
        .filter_map(|k| c.owner(key_slot(format!("cached:{k}").as_bytes())))
        .collect();
    assert_eq!(owners.len(), 3, "the keys live on every primary");
    let first = (0..16384u16)
        .filter(|&s| c.owner(s).as_deref() == Some(&addrs[0]))
        .count();
    assert!(
        first > 5461 + 1900,
        "the map was refreshed: node 0 owns {first} slots"
    );
}

async fn get_calls(c: &shoal_client::Client) -> u64 {
    let info = c.cmd(&[b"INFO", b"commandstats"]).await.unwrap();
    let text = String::from_utf8_lossy(info.as_bytes().unwrap()).to_string();
    text.lines()
        .find_map(|l| l.strip_prefix("cmdstat_get:calls="))
        .and_then(|r| r.split(',').next())
        .map_or(0, |n| n.parse().unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reads_go_to_replicas_on_request_and_to_them_when_a_primary_is_down() {
    let _turn = TURN.lock().await;
    let mut nodes: Vec<Node> = (10..16).map(node).collect();
    let addrs: Vec<String> = nodes
        .iter()
        .map(|n| format!("127.0.0.1:{}", n.port))
        .collect();
    let mut args = vec!["create".to_string(), "--replicas".into(), "1".into()];
    args.extend(addrs.iter().cloned());
    tool(&args);
    let mut cfg = Config::new("");
    cfg.breaker_failures = 2;
    let c = ClusterClient::connect(&[&addrs[0]], cfg).await.unwrap();
    let slot = key_slot(b"r:1");
    let replicas = c.replicas(slot);
    assert_eq!(replicas.len(), 1, "one replica per primary");
    c.set(b"r:1", b"v").await.unwrap();
    // Replicas may lag: poll until the replica has it.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let r = c.cmd_replica(b"r:1", &[b"GET", b"r:1"]).await.unwrap();
        if r.as_bytes() == Some(b"v") {
            break;
        }
        assert!(Instant::now() < deadline, "the replica never got r:1");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(
        get_calls(&c.node(&replicas[0])).await > 0,
        "served by the replica"
    );
    // The primary dies: reads go on from its replica.
    let primary = c.owner(slot).unwrap();
    let i = addrs.iter().position(|a| *a == primary).unwrap();
    drop(nodes.remove(i));
    let r = c.cmd_read(b"r:1", &[b"GET", b"r:1"]).await.unwrap();
    assert_eq!(r.as_bytes(), Some(&b"v"[..]));
}
