//! Automatic failover and fencing over the wire: real `shoal` processes on loopback forming a
//! cluster of three primaries with a replica each, under the `sync` strategy. A primary killed
//! with SIGKILL is replaced by its in-sync replica without losing an acknowledged write, and
//! comes back as a replica; a primary cut off from the configuration group stops serving before
//! anyone could replace it; a primary paused past the node timeout is replaced, and refuses the
//! writes it finds when it resumes.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::Command;
use std::time::{Duration, Instant};

use common::{Shoal, wait_until};

/// Tests with six nodes take turns (two cores).
static MANY_NODES: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn many_nodes() -> std::sync::MutexGuard<'static, ()> {
    MANY_NODES.lock().unwrap_or_else(|p| p.into_inner())
}

/// A scratch directory removed at the end (nodes restarted on it keep their identity).
struct Dir(std::path::PathBuf);

impl Drop for Dir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A free data port whose bus port (+10000) is free too, both below the system's ephemeral
/// range (32768 and up), where no connection's local port or picked port can take them.
fn free_port() -> u16 {
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

/// A cluster node on a fixed port and directory, so it can be restarted as itself, with the
/// `sync` strategy unless `extra` says otherwise.
fn node(dir: &Dir, port: u16, extra: &[&str]) -> Shoal {
    let d = dir.0.join(format!("node-{port}"));
    std::fs::create_dir_all(&d).unwrap();
    let mut args = vec![
        "--set".to_string(),
        format!("port={port}"),
        "--cluster-enabled".into(),
        "yes".into(),
        "--write-strategy".into(),
        "sync".into(),
        "--dir".into(),
        d.to_str().unwrap().into(),
    ];
    args.extend(extra.iter().map(|s| s.to_string()));
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    Shoal::start(&args)
}

/// Three primaries, each with one replica (nodes 3, 4, 5 replicate 0, 1, 2 in some order).
fn six(dir: &Dir, extra: &[&str]) -> (Vec<u16>, Vec<Shoal>) {
    let ports: Vec<u16> = (0..6).map(|_| free_port()).collect();
    let nodes: Vec<Shoal> = ports.iter().map(|&p| node(dir, p, extra)).collect();
    let out = Command::new(env!("CARGO_BIN_EXE_shoal"))
        .args(["cluster", "create", "--replicas", "1"])
        .args(nodes.iter().map(|n| n.addr()))
        .output()
        .expect("shoal cluster create");
    assert!(
        out.status.success(),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (ports, nodes)
}

fn cluster_info(n: &Shoal, field: &str) -> String {
    let text = n.raw().call(&["CLUSTER", "INFO"]);
    common::info_value(&text, field).unwrap_or_default()
}

fn node_id(n: &Shoal) -> String {
    let r = n.raw().call(&["CLUSTER", "MYID"]);
    r.lines().nth(1).unwrap_or_default().to_string()
}

/// The replica of `primary` among `nodes`, by index.
fn replica_of(nodes: &[Shoal], primary: &str) -> usize {
    let view = nodes[0].raw().call(&["CLUSTER", "NODES"]);
    let id = view
        .lines()
        .find(|l| l.split(' ').nth(3) == Some(primary))
        .and_then(|l| l.split(' ').next())
        .expect("the primary has a replica")
        .to_string();
    nodes.iter().position(|n| node_id(n) == id).unwrap()
}

/// Whether `view` (CLUSTER NODES) shows `id` as a primary.
fn is_primary(view: &str, id: &str) -> bool {
    view.lines()
        .find(|l| l.starts_with(id))
        .is_some_and(|l| l.split(' ').nth(2).is_some_and(|f| f.contains("master")))
}

/// A key of a slot `owner` (a node's id) serves, with a hash tag so every `{tag}:i` shares it.
fn tag_owned_by(n: &Shoal, owner: &str) -> String {
    for i in 0..10_000 {
        let tag = format!("t{i}");
        let slot = n.raw().call(&["CLUSTER", "KEYSLOT", &tag]);
        let slot: u16 = slot.trim_start_matches(':').trim().parse().unwrap();
        let view = n.raw().call(&["CLUSTER", "SHARDS"]);
        let _ = view;
        let nodes = n.raw().call(&["CLUSTER", "NODES"]);
        let line = nodes.lines().find(|l| l.starts_with(owner)).unwrap();
        let owns = line.split(' ').skip(8).any(|r| match r.split_once('-') {
            Some((a, b)) => {
                (a.parse().unwrap_or(u16::MAX)..=b.parse().unwrap_or(0)).contains(&slot)
            }
            None => r.parse::<u16>().ok() == Some(slot),
        });
        if owns {
            return tag;
        }
    }
    panic!(
        "no tag for {owner}:\n{}",
        n.raw().call(&["CLUSTER", "NODES"])
    );
}

/// One RESP exchange with a deadline; `None` when the node does not answer.
fn exchange(addr: &str, args: &[&str], timeout: Duration) -> Option<String> {
    let sock: std::net::SocketAddr = addr.parse().ok()?;
    let mut s = TcpStream::connect_timeout(&sock, timeout).ok()?;
    s.set_read_timeout(Some(timeout)).ok()?;
    s.set_write_timeout(Some(timeout)).ok()?;
    let a: Vec<&[u8]> = args.iter().map(|x| x.as_bytes()).collect();
    s.write_all(&common::encode(&a)).ok()?;
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        if let Some(n) = common::reply_len(&buf) {
            return Some(String::from_utf8_lossy(&buf[..n]).into_owned());
        }
        let n = s.read(&mut chunk).ok()?;
        if n == 0 {
            return None;
        }
        buf.extend_from_slice(&chunk[..n]);
    }
}

/// Writes acknowledged so far, each with the time it was acknowledged.
type Acked = std::sync::Arc<std::sync::Mutex<Vec<(usize, Instant)>>>;

/// Writes `{tag}:i` = i to whichever node serves the slot (following `-MOVED`, trying every
/// node when one does not answer or refuses) until `stop`; bounded in count and time. Each
/// acknowledged write goes to `acked`.
fn writer(
    addrs: Vec<String>,
    tag: String,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    acked: Acked,
) -> std::thread::JoinHandle<()> {
    std::thread::spawn(move || {
        const WRITES_MAX: usize = 100_000;
        let deadline = Instant::now() + Duration::from_secs(60);
        let mut at = addrs[0].clone();
        let mut next = 0;
        let mut i = 0;
        while !stop.load(std::sync::atomic::Ordering::Relaxed)
            && i < WRITES_MAX
            && Instant::now() < deadline
        {
            let key = format!("{{{tag}}}:{i}");
            match exchange(
                &at,
                &["SET", &key, &i.to_string()],
                Duration::from_millis(500),
            ) {
                Some(r) if r == "+OK\r\n" => acked.lock().unwrap().push((i, Instant::now())),
                Some(r) if r.starts_with("-MOVED") => {
                    at = r.split(' ').nth(2).unwrap_or_default().trim().to_string();
                }
                _ => {
                    // Down, fenced, or not durable: try another node shortly.
                    next = (next + 1) % addrs.len();
                    at = addrs[next].clone();
                    std::thread::sleep(Duration::from_millis(5));
                }
            }
            i += 1;
        }
    })
}

#[test]
fn a_killed_primary_is_replaced_by_its_in_sync_replica_without_losing_an_acknowledged_write() {
    let _turn = many_nodes();
    let dir = Dir(common::scratch_dir("failover-kill"));
    let (ports, mut nodes) = six(&dir, &[]);
    let victim = 0;
    let victim_id = node_id(&nodes[victim]);
    let heir = replica_of(&nodes, &victim_id);
    let heir_id = node_id(&nodes[heir]);
    wait_until("the replica joins the in-sync set", || {
        cluster_info(&nodes[victim], "shoal_in_sync") == heir_id
    });
    assert_eq!(cluster_info(&nodes[victim], "shoal_lease_state"), "held");
    assert_eq!(cluster_info(&nodes[heir], "shoal_lease_state"), "none");
    let tag = tag_owned_by(&nodes[0], &victim_id);
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let addrs: Vec<String> = nodes.iter().map(|n| n.addr()).collect();
    let acked: Acked = Default::default();
    let w = writer(addrs, tag.clone(), stop.clone(), acked.clone());
    let acked_so_far = || acked.lock().unwrap().clone();
    wait_until("writes are acknowledged", || acked_so_far().len() > 20);
    nodes[victim].signal("-KILL");
    let killed = Instant::now();
    wait_until("the replica is promoted", || {
        is_primary(&nodes[heir].raw().call(&["CLUSTER", "NODES"]), &heir_id)
    });
    let promoted = killed.elapsed();
    assert!(
        promoted < Duration::from_secs(5),
        "the promotion took {promoted:?}"
    );
    wait_until("the heir holds a lease", || {
        cluster_info(&nodes[heir], "shoal_lease_state") == "held"
    });
    assert!(
        cluster_info(&nodes[heir], "shoal_failovers")
            .parse::<u64>()
            .unwrap()
            >= 1
    );
    // Every write acknowledged so far is on the new primary. It has no replica left, so under
    // `sync` with min-replicas-ack 1 it acknowledges no write until one joins, nor confirms a
    // read: a `sync` read is refused as not durable, an `async` one sees the data.
    let before = acked_so_far();
    let mut heir_conn = nodes[heir].raw();
    let (i0, _) = before[0];
    assert!(
        heir_conn
            .call(&["GET", &format!("{{{tag}}}:{i0}")])
            .starts_with("-NOTDURABLE the value read is not confirmed"),
    );
    assert_eq!(heir_conn.call(&["DURABILITY", "async"]), "+OK\r\n");
    let check = |conn: &mut common::Raw, acked: &[(usize, Instant)]| {
        for (i, _) in acked {
            let key = format!("{{{tag}}}:{i}");
            let v = conn.call(&["GET", &key]);
            assert_eq!(v, format!("${}\r\n{i}\r\n", i.to_string().len()), "{key}");
        }
    };
    check(&mut heir_conn, &before);
    // The old primary comes back as a replica of its heir, catches up and joins its in-sync
    // set: writes are acknowledged again.
    let back = node(&dir, ports[victim], &[]);
    wait_until("the old primary rejoins as a replica", || {
        let r = back.raw().call(&["ROLE"]);
        r.contains("slave") && r.contains(&nodes[heir].port.to_string())
    });
    wait_until("the old primary joins its heir's in-sync set", || {
        cluster_info(&nodes[heir], "shoal_in_sync") == victim_id
    });
    let rejoined = Instant::now();
    wait_until("writes are acknowledged again", || {
        acked_so_far().last().is_some_and(|(_, t)| *t > rejoined)
    });
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    w.join().unwrap();
    let acked = acked_so_far();
    check(&mut heir_conn, &acked);
    let (i, _) = acked.last().unwrap();
    let key = format!("{{{tag}}}:{i}");
    let mut b = back.raw();
    assert_eq!(b.call(&["READONLY"]), "+OK\r\n");
    wait_until("the rejoined replica has the last write", || {
        b.call(&["GET", &key]) == format!("${}\r\n{i}\r\n", i.to_string().len())
    });
    nodes[victim] = back;
}

#[test]
fn a_primary_cut_off_from_the_configuration_group_stops_serving_before_anyone_replaces_it() {
    let _turn = many_nodes();
    let dir = Dir(common::scratch_dir("failover-cut"));
    let (_ports, nodes) = six(&dir, &[]);
    // The voters are the three first nodes met (the primaries): stopping two of them leaves the
    // third without a quorum, so without a lease, and no leader can promote anyone either.
    let lone = 2;
    let id = node_id(&nodes[lone]);
    let tag = tag_owned_by(&nodes[lone], &id);
    let key = format!("{{{tag}}}:x");
    assert_eq!(
        nodes[lone].raw().call(&["SET", &key, "1"]).as_str(),
        "+OK\r\n"
    );
    nodes[0].signal("-STOP");
    nodes[1].signal("-STOP");
    let stopped = Instant::now();
    let mut c = nodes[lone].raw();
    let mut last_ok = stopped;
    let refused = loop {
        let r = c.call(&["SET", &key, "2"]);
        if r == "+OK\r\n" {
            last_ok = Instant::now();
        } else {
            break r;
        }
        assert!(stopped.elapsed() < Duration::from_secs(5), "still serving");
        std::thread::sleep(Duration::from_millis(2));
    };
    assert_eq!(refused, "-CLUSTERDOWN The cluster is down\r\n");
    // Its lease lasts 400 ms from the last beat the leader answered (node timeout 1000 ms).
    assert!(
        last_ok.duration_since(stopped) < Duration::from_millis(600),
        "served {:?} after losing the quorum",
        last_ok.duration_since(stopped)
    );
    // Reads too (sync strategy), and the cluster state says so.
    assert_eq!(
        c.call(&["GET", &key]),
        "-CLUSTERDOWN The cluster is down\r\n"
    );
    assert_eq!(cluster_info(&nodes[lone], "cluster_state"), "fail");
    assert_eq!(cluster_info(&nodes[lone], "shoal_lease_state"), "lapsed");
    // The quorum comes back: so does its lease.
    nodes[0].signal("-CONT");
    nodes[1].signal("-CONT");
    wait_until("the lease is back", || {
        c.call(&["SET", &key, "3"]) == "+OK\r\n"
    });
    assert_eq!(cluster_info(&nodes[lone], "cluster_state"), "ok");
}

#[test]
fn a_paused_primary_is_replaced_and_refuses_the_writes_it_finds_when_it_resumes() {
    let _turn = many_nodes();
    let dir = Dir(common::scratch_dir("failover-pause"));
    // Under `async`, so the heir takes writes without a replica of its own.
    let (_ports, nodes) = six(&dir, &["--write-strategy", "async"]);
    let victim = 1;
    let victim_id = node_id(&nodes[victim]);
    let heir = replica_of(&nodes, &victim_id);
    let heir_id = node_id(&nodes[heir]);
    wait_until("the replica joins the in-sync set", || {
        cluster_info(&nodes[victim], "shoal_in_sync") == heir_id
    });
    let tag = tag_owned_by(&nodes[0], &victim_id);
    let key = format!("{{{tag}}}:k");
    let mut c = nodes[victim].raw();
    assert_eq!(c.call(&["SET", &key, "before"]), "+OK\r\n");
    let mut r = nodes[heir].raw();
    assert_eq!(r.call(&["READONLY"]), "+OK\r\n");
    wait_until("the replica has the write", || {
        r.call(&["GET", &key]) == "$6\r\nbefore\r\n"
    });
    let partial_before = info_u64(&nodes[heir], "stats", "sync_partial_ok");
    let full_before = info_u64(&nodes[heir], "stats", "sync_full");
    nodes[victim].signal("-STOP");
    wait_until("the primary is stopped", || nodes[victim].is_stopped());
    // A write that waits in the paused node's socket.
    c.cmd(&[b"SET", key.as_bytes(), b"stale"]);
    wait_until("the replica is promoted", || {
        is_primary(&nodes[heir].raw().call(&["CLUSTER", "NODES"]), &heir_id)
    });
    let mut h = nodes[heir].raw();
    wait_until("the heir serves writes", || {
        h.call(&["SET", &key, "after"]) == "+OK\r\n"
    });
    nodes[victim].signal("-CONT");
    // Its lease lapsed while it was stopped: the write it finds is refused, or redirected if it
    // already applied the configuration that made it a replica.
    let r = c.reply_str();
    assert!(
        r == "-CLUSTERDOWN The cluster is down\r\n" || r.starts_with("-MOVED"),
        "the resumed old primary answered {r:?}"
    );
    assert_eq!(h.call(&["GET", &key]), "$5\r\nafter\r\n");
    wait_until("the old primary follows its heir", || {
        nodes[victim].raw().call(&["ROLE"]).contains("slave")
    });
    // Its history is a prefix of its heir's: it continues by partial resynchronisation.
    wait_until("the old primary resumes by partial resync", || {
        info_u64(&nodes[heir], "stats", "sync_partial_ok") > partial_before
    });
    assert_eq!(info_u64(&nodes[heir], "stats", "sync_full"), full_before);
}

fn info_u64(n: &Shoal, section: &str, field: &str) -> u64 {
    let text = n.raw().call(&["INFO", section]);
    common::info_value(&text, field)
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}
