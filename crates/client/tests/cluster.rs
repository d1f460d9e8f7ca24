//! ClusterClient against a real local shoal cluster of three primaries (made with
//! `shoal cluster create`): keys of every part of the slot space are routed to their owners, a
//! node's own client sees `MOVED` as a typed redirect, and after a reshard (`shoal cluster
//! reshard`) the client follows the moved slots without surfacing an error; a primary killed
//! (SIGKILL) under load from 8 tasks is followed to its heir with no error surfaced and no
//! acknowledged write (`sync` strategy) lost. Near caches over the cluster hear invalidations
//! from every node, and drop what a broken tracking link or a moved slot held.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use shoal_client::{Cache, CacheOptions, ClusterClient, Config, Error, NearCache, key_slot};

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

/// A free data port whose bus port (+10000) is free too, below the ephemeral range, so a node
/// can be restarted on it as itself.
fn free_port_pair() -> u16 {
    static NEXT_TRY: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let free = |p: u16| std::net::TcpListener::bind(("127.0.0.1", p)).is_ok();
    for _ in 0..500 {
        let attempt = NEXT_TRY.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let p = 12000 + ((std::process::id() * 7919 + attempt * 104_729) % 10000) as u16;
        if free(p) && free(p + 10000) {
            return p;
        }
    }
    panic!("no free port pair");
}

/// A cluster node on a fixed port and directory (so it comes back as itself), under the `sync`
/// write strategy: a write is acknowledged once a replica has it, and waits up to 20 s for one.
fn sync_node(dir: &std::path::Path, port: u16) -> Node {
    let d = dir.join(format!("node-{port}"));
    std::fs::create_dir_all(&d).unwrap();
    let mut child = Command::new(shoal_bin())
        .args(["serve", "--bind", "127.0.0.1", "--loglevel", "warning"])
        .args(["--port", &port.to_string(), "--cluster-enabled", "yes"])
        .args(["--write-strategy", "sync", "--ack-timeout-ms", "20000"])
        .args(["--dir", d.to_str().unwrap()])
        .current_dir(&d)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn shoal");
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    Node { child, port }
}

async fn cluster_info(c: &ClusterClient, addr: &str, field: &str) -> String {
    let Ok(r) = c.node(addr).cmd(&[b"CLUSTER", b"INFO"]).await else {
        return String::new();
    };
    let text = String::from_utf8_lossy(r.as_bytes().unwrap_or_default()).to_string();
    text.lines()
        .find_map(|l| l.strip_prefix(&format!("{field}:")))
        .unwrap_or_default()
        .trim()
        .to_string()
}

/// Polls `f` every 20 ms until it holds; panics after `secs`.
async fn until<F: std::future::Future<Output = bool>>(
    what: &str,
    secs: u64,
    mut f: impl FnMut() -> F,
) {
    let deadline = Instant::now() + Duration::from_secs(secs);
    while !f().await {
        assert!(Instant::now() < deadline, "timed out waiting until {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_primary_killed_under_load_is_followed_to_its_heir_without_an_error_or_a_lost_write() {
    let _turn = TURN.lock().await;
    let dir = std::env::temp_dir().join(format!(
        "shoal-client-failover-{}-{}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos()
    ));
    let ports: Vec<u16> = (0..6).map(|_| free_port_pair()).collect();
    let mut nodes: Vec<Node> = ports.iter().map(|&p| sync_node(&dir, p)).collect();
    let addrs: Vec<String> = ports.iter().map(|p| format!("127.0.0.1:{p}")).collect();
    let mut args = vec!["create".to_string(), "--replicas".into(), "1".into()];
    args.extend(addrs.iter().cloned());
    tool(&args);
    let mut cfg = Config::new("");
    // A write waits for its replica (up to the server's 20 s ack timeout).
    cfg.request_timeout = Duration::from_secs(25);
    cfg.retry_budget = Duration::from_secs(20);
    let c = ClusterClient::connect(&[&addrs[0]], cfg).await.unwrap();
    let primaries: std::collections::BTreeSet<String> =
        (0..16384u16).filter_map(|s| c.owner(s)).collect();
    assert_eq!(primaries.len(), 3, "{primaries:?}");
    for p in &primaries {
        until("every primary has an in-sync replica", 20, || async {
            !cluster_info(&c, p, "shoal_in_sync").await.is_empty()
        })
        .await;
    }
    let victim_slot = key_slot(b"fo:0:0");
    let victim = c.owner(victim_slot).unwrap();
    let heir = c.replicas(victim_slot)[0].clone();
    let victim_i = addrs.iter().position(|a| *a == victim).unwrap();

    // Tasks write fresh keys over every slot and read each back, until told to stop.
    const TASKS: usize = 8;
    const WRITES_MAX: usize = 100_000;
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let acked = std::sync::Arc::new(std::sync::Mutex::new(
        Vec::<(String, String, Instant)>::new(),
    ));
    let errors = std::sync::Arc::new(std::sync::Mutex::new(Vec::<String>::new()));
    let deadline = Instant::now() + Duration::from_secs(45);
    let mut tasks = Vec::new();
    for t in 0..TASKS {
        let (c, stop, acked, errors) = (c.clone(), stop.clone(), acked.clone(), errors.clone());
        tasks.push(tokio::spawn(async move {
            for i in 0..WRITES_MAX {
                if stop.load(std::sync::atomic::Ordering::Relaxed) || Instant::now() > deadline {
                    break;
                }
                let (k, v) = (format!("fo:{t}:{i}"), format!("v{i}"));
                match c.set(k.as_bytes(), v.as_bytes()).await {
                    Ok(()) => acked
                        .lock()
                        .unwrap()
                        .push((k.clone(), v.clone(), Instant::now())),
                    Err(e) => errors.lock().unwrap().push(format!("SET {k}: {e}")),
                }
                match c.get(k.as_bytes()).await {
                    Ok(Some(got)) if got == v.as_bytes() => {}
                    r => errors.lock().unwrap().push(format!("GET {k}: {r:?}")),
                }
            }
        }));
    }
    // The victim's slots: its own before the failover, its heir's after.
    let on_group = |s: u16| {
        let o = c.owner(s);
        o.as_deref() == Some(heir.as_str()) || o.as_deref() == Some(victim.as_str())
    };
    let on_victim = |acked: &[(String, String, Instant)], after: Instant| {
        acked
            .iter()
            .filter(|(k, _, t)| *t > after && on_group(key_slot(k.as_bytes())))
            .count()
    };
    let start = Instant::now() - Duration::from_secs(1);
    until(
        "writes are acknowledged on the victim's slots",
        20,
        || async { on_victim(&acked.lock().unwrap(), start) > 100 },
    )
    .await;
    // kill -9 the primary.
    let _ = nodes[victim_i].child.kill();
    let _ = nodes[victim_i].child.wait();
    let killed = Instant::now();
    until(
        "the client routes the victim's slots to its heir",
        20,
        || async { c.owner(victim_slot).as_deref() == Some(heir.as_str()) },
    )
    .await;
    let followed = killed.elapsed();
    // The old primary comes back (as a replica of its heir): the heir acknowledges writes again.
    nodes[victim_i] = sync_node(&dir, ports[victim_i]);
    until(
        "the old primary rejoins as the heir's in-sync replica",
        30,
        || async { !cluster_info(&c, &heir, "shoal_in_sync").await.is_empty() },
    )
    .await;
    let rejoined = Instant::now();
    until("writes to the heir are acknowledged", 20, || async {
        on_victim(&acked.lock().unwrap(), rejoined) > 100
    })
    .await;
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    for t in tasks {
        t.await.unwrap();
    }
    let errors = errors.lock().unwrap().clone();
    assert!(
        errors.is_empty(),
        "{} errors surfaced: {:?}",
        errors.len(),
        &errors[..errors.len().min(10)]
    );
    // Every acknowledged write survived the failover.
    let acked = acked.lock().unwrap().clone();
    let mut lost = Vec::new();
    for (k, v, _) in &acked {
        if c.get(k.as_bytes()).await.unwrap() != Some(v.clone().into_bytes()) {
            lost.push(k.clone());
        }
    }
    assert!(
        lost.is_empty(),
        "{} of {} acknowledged writes lost: {:?}",
        lost.len(),
        acked.len(),
        &lost[..lost.len().min(10)]
    );
    assert_eq!(c.owner(victim_slot).as_deref(), Some(heir.as_str()));
    eprintln!(
        "failover followed in {followed:?}; {} writes acknowledged, none lost, no error surfaced",
        acked.len()
    );
    drop(nodes);
    let _ = std::fs::remove_dir_all(&dir);
}

/// Sum of GET calls over the nodes.
async fn get_calls_all(c: &ClusterClient, addrs: &[String]) -> u64 {
    let mut n = 0;
    for a in addrs {
        n += get_calls(&c.node(a)).await;
    }
    n
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn near_caches_over_a_cluster_hear_every_node_and_drop_what_a_broken_link_read() {
    let _turn = TURN.lock().await;
    let nodes: Vec<Node> = (20..23).map(node).collect();
    let addrs: Vec<String> = nodes
        .iter()
        .map(|n| format!("127.0.0.1:{}", n.port))
        .collect();
    let mut args = vec!["create".to_string()];
    args.extend(addrs.iter().cloned());
    tool(&args);
    let writer = ClusterClient::connect(&[&addrs[0]], Config::new(""))
        .await
        .unwrap();
    let a = NearCache::cluster(writer.clone(), 1000);
    let b = NearCache::cluster(
        ClusterClient::connect(&[&addrs[1]], Config::new(""))
            .await
            .unwrap(),
        1000,
    );
    let keys: Vec<String> = (0..30).map(|i| format!("near:{i}")).collect();
    let owner = |k: &str| writer.owner(key_slot(k.as_bytes())).unwrap();
    let owners: std::collections::BTreeSet<String> = keys.iter().map(|k| owner(k)).collect();
    assert_eq!(owners.len(), 3, "the keys live on every node");
    let set_all = |ks: Vec<String>, v: &'static str| {
        let w = writer.clone();
        async move {
            for k in ks {
                w.set(k.as_bytes(), v.as_bytes()).await.unwrap();
            }
        }
    };
    set_all(keys.clone(), "v1").await;
    for k in &keys {
        assert_eq!(a.get(k.as_bytes()).await.unwrap(), Some(b"v1".to_vec()));
        assert_eq!(b.get(k.as_bytes()).await.unwrap(), Some(b"v1".to_vec()));
    }
    // Served in process: no node counts a GET.
    let before = get_calls_all(&writer, &addrs).await;
    for _ in 0..3 {
        for k in &keys {
            assert_eq!(b.get(k.as_bytes()).await.unwrap(), Some(b"v1".to_vec()));
        }
    }
    assert_eq!(get_calls_all(&writer, &addrs).await, before);

    // A write through another client reaches both near caches from every node; once a key's
    // new value is seen, the old one never comes back.
    set_all(keys.clone(), "v2").await;
    let mut seen = std::collections::HashSet::new();
    let deadline = Instant::now() + Duration::from_secs(10);
    while seen.len() < 2 * keys.len() {
        assert!(
            Instant::now() < deadline,
            "invalidations missing: {} seen",
            seen.len()
        );
        for (who, near) in [("a", &a), ("b", &b)] {
            for k in &keys {
                let v = near.get(k.as_bytes()).await.unwrap().unwrap();
                if v == b"v2" {
                    seen.insert((who, k.clone()));
                } else {
                    assert!(!seen.contains(&(who, k.clone())), "{who} read {k} stale");
                }
            }
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }

    // A write through a near cache is read back by it at once, and reaches the other.
    for k in &keys {
        a.set(k.as_bytes(), b"w").await.unwrap();
        assert_eq!(
            a.get(k.as_bytes()).await.unwrap(),
            Some(b"w".to_vec()),
            "{k}"
        );
    }
    // A delete through b: b reads the key absent at once, a once its invalidation arrives.
    assert!(b.del(keys[0].as_bytes()).await.unwrap());
    assert_eq!(b.get(keys[0].as_bytes()).await.unwrap(), None);
    until("a hears of the delete", 10, || async {
        a.get(keys[0].as_bytes()).await.unwrap().is_none()
    })
    .await;
    until("b hears of a's writes", 10, || async {
        let mut all = true;
        for k in &keys[1..] {
            all &= b.get(k.as_bytes()).await.unwrap() == Some(b"w".to_vec());
        }
        all
    })
    .await;
    set_all(keys.clone(), "v2").await;
    until("both hear of v2 again", 10, || async {
        let mut all = true;
        for k in &keys {
            all &= a.get(k.as_bytes()).await.unwrap() == Some(b"v2".to_vec());
            all &= b.get(k.as_bytes()).await.unwrap() == Some(b"v2".to_vec());
        }
        all
    })
    .await;

    // The server closes b's invalidation connection to one node: the entries b read there are
    // dropped, a write no one tells b about is not missed, and a new link takes over.
    let victim = owner(&keys[0]);
    let on_victim: Vec<String> = keys
        .iter()
        .filter(|k| owner(k) == victim)
        .cloned()
        .collect();
    let id = b.redirect_id(&victim).unwrap().to_string();
    let losses = b.link_losses();
    let killed = writer
        .node(&victim)
        .cmd(&[b"CLIENT", b"KILL", b"ID", id.as_bytes()])
        .await
        .unwrap();
    assert_eq!(killed.as_int(), Some(1));
    until("b notices its invalidation link is gone", 10, || async {
        b.link_losses() > losses
    })
    .await;
    set_all(on_victim.clone(), "v3").await;
    for k in &on_victim {
        assert_eq!(
            b.get(k.as_bytes()).await.unwrap(),
            Some(b"v3".to_vec()),
            "{k}"
        );
    }
    assert_ne!(
        b.redirect_id(&victim).unwrap().to_string(),
        id,
        "a new link"
    );
    set_all(on_victim.clone(), "v4").await;
    until("the new link carries invalidations", 10, || async {
        let mut all = true;
        for k in &on_victim {
            all &= b.get(k.as_bytes()).await.unwrap() == Some(b"v4".to_vec());
        }
        all
    })
    .await;

    // The server closes b's tracking connections to another node (their table of reads goes
    // with them, so no invalidation would come): what b read there is read again.
    let other = owners.iter().find(|o| **o != victim).unwrap().clone();
    let on_other: Vec<String> = keys.iter().filter(|k| owner(k) == other).cloned().collect();
    for k in &on_other {
        assert_eq!(b.get(k.as_bytes()).await.unwrap(), Some(b"v2".to_vec()));
    }
    let redir = format!("redir={}", b.redirect_id(&other).unwrap());
    let list = writer
        .node(&other)
        .cmd(&[b"CLIENT", b"LIST"])
        .await
        .unwrap();
    let list = String::from_utf8_lossy(list.as_bytes().unwrap()).to_string();
    let tracking: Vec<String> = list
        .lines()
        .filter(|l| l.split(' ').any(|f| f == redir))
        .filter_map(|l| l.strip_prefix("id=")?.split(' ').next().map(str::to_string))
        .collect();
    assert!(!tracking.is_empty(), "b's tracking connections: {list}");
    let lost = b.connections_lost();
    for id in &tracking {
        writer
            .node(&other)
            .cmd(&[b"CLIENT", b"KILL", b"ID", id.as_bytes()])
            .await
            .unwrap();
    }
    until(
        "b notices its tracking connections are gone",
        10,
        || async { b.connections_lost() >= lost + tracking.len() as u64 },
    )
    .await;
    set_all(on_other.clone(), "v3").await;
    for k in &on_other {
        assert_eq!(
            b.get(k.as_bytes()).await.unwrap(),
            Some(b"v3".to_vec()),
            "{k}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_near_cache_over_a_cluster_drops_what_it_read_of_slots_that_moved() {
    let _turn = TURN.lock().await;
    let nodes: Vec<Node> = (30..33).map(node).collect();
    let addrs: Vec<String> = nodes
        .iter()
        .map(|n| format!("127.0.0.1:{}", n.port))
        .collect();
    let mut args = vec!["create".to_string()];
    args.extend(addrs.iter().cloned());
    tool(&args);
    let writer = ClusterClient::connect(&[&addrs[0]], Config::new(""))
        .await
        .unwrap();
    let b = NearCache::cluster(
        ClusterClient::connect(&[&addrs[1]], Config::new(""))
            .await
            .unwrap(),
        10_000,
    );
    let keys: Vec<String> = (0..300).map(|i| format!("moving:{i}")).collect();
    for k in &keys {
        writer.set(k.as_bytes(), b"v1").await.unwrap();
        assert_eq!(b.get(k.as_bytes()).await.unwrap(), Some(b"v1".to_vec()));
    }
    let before: Vec<String> = keys
        .iter()
        .map(|k| writer.owner(key_slot(k.as_bytes())).unwrap())
        .collect();
    let seen = b.invalidations();
    // Move 2000 slots to the first node (b's map is not told).
    let out = Command::new("redis-cli")
        .args(["-p", &nodes[0].port.to_string(), "CLUSTER", "MYID"])
        .output()
        .unwrap();
    let to = String::from_utf8_lossy(&out.stdout).trim().to_string();
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
    writer.refresh().await.unwrap();
    let moved: Vec<String> = keys
        .iter()
        .zip(&before)
        .filter(|(k, o)| writer.owner(key_slot(k.as_bytes())).as_ref() != Some(*o))
        .map(|(k, _)| k.clone())
        .collect();
    assert!(!moved.is_empty(), "some of the keys moved");
    // The nodes that gave the slots away invalidated what b read of them.
    until("b hears of every moved key", 10, || async {
        b.invalidations() >= seen + moved.len() as u64
    })
    .await;
    for k in &keys {
        writer.set(k.as_bytes(), b"v2").await.unwrap();
    }
    // A moved key's new value is read at once (from its new owner); the others once their
    // invalidation arrives.
    for k in &moved {
        assert_eq!(
            b.get(k.as_bytes()).await.unwrap(),
            Some(b"v2".to_vec()),
            "{k}"
        );
    }
    until("b reads every new value", 10, || async {
        let mut all = true;
        for k in &keys {
            all &= b.get(k.as_bytes()).await.unwrap() == Some(b"v2".to_vec());
        }
        all
    })
    .await;
    for k in &moved {
        writer.set(k.as_bytes(), b"v3").await.unwrap();
    }
    until(
        "the new owners invalidate what b read there",
        10,
        || async {
            let mut all = true;
            for k in &moved {
                all &= b.get(k.as_bytes()).await.unwrap() == Some(b"v3".to_vec());
            }
            all
        },
    )
    .await;
}
