//! Cluster mode on the wire: a node started with `cluster-enabled yes`, talked to by redis-rs
//! (plain and cluster clients) and `redis-cli -c`. Replies and errors are compared byte for byte
//! with what redis-server 7.0.15 answers in the same situation (recorded by hand from a
//! `redis-server --cluster-enabled yes`; the node ids and addresses differ by nature).
//!
//! One node owns all slots here; redirects between nodes (`-MOVED`, `-ASK`) are decided by
//! `shoal_cluster::route`, whose unit tests cover them.

mod common;

use std::process::Command;
use std::time::{Duration, Instant};

use common::{Shoal, q};

/// Tests that run several nodes take turns: on two cores, four clusters forming at once would
/// test the machine's patience, not shoal.
static MANY_NODES: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn many_nodes() -> std::sync::MutexGuard<'static, ()> {
    MANY_NODES.lock().unwrap_or_else(|p| p.into_inner())
}

fn cluster_node() -> Shoal {
    Shoal::start(&["--cluster-enabled", "yes"])
}

/// A node that owns every slot.
fn owning_all() -> Shoal {
    let s = cluster_node();
    assert_eq!(
        s.raw().call(&["CLUSTER", "ADDSLOTSRANGE", "0", "16383"]),
        "+OK\r\n"
    );
    s
}

#[test]
fn a_fresh_node_serves_no_slot_until_slots_are_assigned() {
    let s = cluster_node();
    let mut r = s.raw();
    assert_eq!(
        r.call(&["GET", "foo"]),
        "-CLUSTERDOWN Hash slot not served\r\n"
    );
    let info = r.call(&["CLUSTER", "INFO"]);
    for line in [
        "cluster_state:fail\r\n",
        "cluster_slots_assigned:0\r\n",
        "cluster_known_nodes:1\r\n",
    ] {
        assert!(info.contains(line), "{line:?} in {info:?}");
    }
    let me = r.call(&["CLUSTER", "MYID"]);
    let id = me.lines().nth(1).unwrap().to_string();
    assert_eq!(id.len(), 40);
    // A node on a port the system picked gets a picked bus port too (else data port + 10000).
    let nodes = r.call(&["CLUSTER", "NODES"]);
    let line = nodes.lines().nth(1).unwrap_or_default().to_string();
    let (head, tail) = line.split_once('@').unwrap_or_else(|| panic!("{nodes:?}"));
    assert_eq!(head, format!("{id} 127.0.0.1:{}", s.port));
    let (bus, rest) = tail.split_once(' ').unwrap();
    assert!(bus.parse::<u16>().is_ok_and(|p| p > 0), "{nodes:?}");
    assert_eq!(rest, "myself,master - 0 0 0 connected");
    assert_eq!(r.call(&["CLUSTER", "SLOTS"]), "*0\r\n");
    assert_eq!(r.call(&["ADDSLOTS"]).split(' ').next(), Some("-ERR"));
    assert_eq!(
        r.call(&["CLUSTER", "ADDSLOTSRANGE", "0", "16383"]),
        "+OK\r\n"
    );
    assert!(
        r.call(&["CLUSTER", "INFO"])
            .contains("cluster_state:ok\r\n")
    );
    assert_eq!(r.call(&["SET", "foo", "bar"]), "+OK\r\n");
    assert_eq!(r.call(&["GET", "foo"]), "$3\r\nbar\r\n");
    assert_eq!(
        r.call(&["CLUSTER", "SLOTS"]),
        format!(
            "*1\r\n*3\r\n:0\r\n:16383\r\n*4\r\n$9\r\n127.0.0.1\r\n:{}\r\n$40\r\n{id}\r\n*0\r\n",
            s.port
        )
    );
}

#[test]
fn cluster_errors_match_redis() {
    let s = owning_all();
    let mut r = s.raw();
    let cases: &[(&[&str], &str)] = &[
        (&["CLUSTER", "KEYSLOT", "foo"], ":12182\r\n"),
        (&["CLUSTER", "KEYSLOT", "123456789"], ":12739\r\n"),
        (&["CLUSTER", "KEYSLOT", "foo{}{bar}"], ":8363\r\n"),
        (&["CLUSTER", "KEYSLOT", "{user1000}.following"], ":3443\r\n"),
        (&["CLUSTER", "KEYSLOT", "{user1000}.followers"], ":3443\r\n"),
        (
            &["CLUSTER", "ADDSLOTS", "5"],
            "-ERR Slot 5 is already busy\r\n",
        ),
        (
            &["CLUSTER", "ADDSLOTS", "16384"],
            "-ERR Invalid or out of range slot\r\n",
        ),
        (
            &["CLUSTER", "ADDSLOTS", "x"],
            "-ERR Invalid or out of range slot\r\n",
        ),
        (
            &["CLUSTER", "ADDSLOTS"],
            "-ERR wrong number of arguments for 'cluster|addslots' command\r\n",
        ),
        (
            &["CLUSTER", "ADDSLOTSRANGE", "1"],
            "-ERR wrong number of arguments for 'cluster|addslotsrange' command\r\n",
        ),
        (
            &["CLUSTER", "DELSLOTSRANGE", "10", "5"],
            "-ERR start slot number 10 is greater than end slot number 5\r\n",
        ),
        (
            &["CLUSTER", "COUNTKEYSINSLOT", "16384"],
            "-ERR Invalid slot\r\n",
        ),
        (
            &["CLUSTER", "COUNTKEYSINSLOT", "-1"],
            "-ERR Invalid slot\r\n",
        ),
        (
            &["CLUSTER", "COUNTKEYSINSLOT", "x"],
            "-ERR value is not an integer or out of range\r\n",
        ),
        (
            &["CLUSTER", "GETKEYSINSLOT", "1", "-1"],
            "-ERR Invalid slot or number of keys\r\n",
        ),
        (
            &["CLUSTER", "GETKEYSINSLOT", "16384", "1"],
            "-ERR Invalid slot or number of keys\r\n",
        ),
        (&["CLUSTER", "REPLICAS", "x"], "-ERR Unknown node x\r\n"),
        (
            &["CLUSTER", "COUNT-FAILURE-REPORTS", "x"],
            "-ERR Unknown node x\r\n",
        ),
        (&["CLUSTER", "LINKS"], "*0\r\n"),
        (&["CLUSTER", "RESET", "FOO"], "-ERR syntax error\r\n"),
        (
            &["CLUSTER", "FOO"],
            "-ERR unknown subcommand 'FOO'. Try CLUSTER HELP.\r\n",
        ),
        (
            &["CLUSTER"],
            "-ERR wrong number of arguments for 'cluster' command\r\n",
        ),
        (
            &["SELECT", "1"],
            "-ERR SELECT is not allowed in cluster mode\r\n",
        ),
        (&["SELECT", "0"], "+OK\r\n"),
        (
            &["SWAPDB", "0", "1"],
            "-ERR SWAPDB is not allowed in cluster mode\r\n",
        ),
        (
            &["MOVE", "k", "1"],
            "-ERR MOVE is not allowed in cluster mode\r\n",
        ),
        (
            &["COPY", "{a}x", "{a}y", "DB", "1"],
            "-ERR Copying to another database is not allowed in cluster mode\r\n",
        ),
        (
            &["MGET", "a", "b"],
            "-CROSSSLOT Keys in request don't hash to the same slot\r\n",
        ),
        (&["MGET", "{a}1", "{a}2"], "*2\r\n$-1\r\n$-1\r\n"),
        (&["ASKING"], "+OK\r\n"),
        (&["READONLY"], "+OK\r\n"),
        (&["READWRITE"], "+OK\r\n"),
    ];
    for (args, want) in cases {
        assert_eq!(&r.call(args), want, "{args:?}");
    }
    // Keys in a slot, counted and listed from the slot's own table.
    for i in 0..20 {
        assert_eq!(r.call(&["SET", &format!("{{tag}}:{i}"), "v"]), "+OK\r\n");
    }
    let slot = r.call(&["CLUSTER", "KEYSLOT", "{tag}"]);
    let slot = slot.trim_start_matches(':').trim_end();
    assert_eq!(r.call(&["CLUSTER", "COUNTKEYSINSLOT", slot]), ":20\r\n");
    assert!(
        r.call(&["CLUSTER", "GETKEYSINSLOT", slot, "5"])
            .starts_with("*5\r\n")
    );
    assert_eq!(
        r.call(&["CLUSTER", "RESET"]),
        "-ERR CLUSTER RESET can't be called with master nodes containing keys\r\n"
    );
    // Slots given back: the keys' slot is not served any more.
    assert_eq!(r.call(&["CLUSTER", "DELSLOTS", slot]), "+OK\r\n");
    assert_eq!(
        r.call(&["CLUSTER", "DELSLOTS", slot]),
        format!("-ERR Slot {slot} is already unassigned\r\n")
    );
    assert_eq!(
        r.call(&["GET", "{tag}:1"]),
        "-CLUSTERDOWN Hash slot not served\r\n"
    );
    assert_eq!(
        r.call(&["GET", "other"]),
        "-CLUSTERDOWN The cluster is down\r\n"
    );
}

#[test]
fn a_transaction_across_slots_is_refused_and_discarded() {
    let s = owning_all();
    let mut r = s.raw();
    assert_eq!(r.call(&["MULTI"]), "+OK\r\n");
    assert_eq!(r.call(&["SET", "{a}1", "x"]), "+QUEUED\r\n");
    assert_eq!(r.call(&["SET", "{b}1", "y"]), "+QUEUED\r\n");
    assert_eq!(
        r.call(&["EXEC"]),
        "-CROSSSLOT Keys in request don't hash to the same slot\r\n"
    );
    assert_eq!(r.call(&["EXEC"]), "-ERR EXEC without MULTI\r\n");
    assert_eq!(r.call(&["GET", "{a}1"]), "$-1\r\n", "nothing ran");
    // One slot: it runs.
    assert_eq!(r.call(&["MULTI"]), "+OK\r\n");
    assert_eq!(r.call(&["SET", "{a}1", "x"]), "+QUEUED\r\n");
    assert_eq!(r.call(&["INCR", "{a}2"]), "+QUEUED\r\n");
    assert_eq!(r.call(&["EXEC"]), "*2\r\n+OK\r\n:1\r\n");
}

#[test]
fn cluster_commands_need_cluster_mode() {
    let s = Shoal::start(&[]);
    let mut r = s.raw();
    for args in [
        &["CLUSTER", "INFO"][..],
        &["CLUSTER", "BUMPEPOCH"],
        &["READONLY"],
        &["ASKING"],
    ] {
        assert_eq!(
            r.call(args),
            "-ERR This instance has cluster support disabled\r\n",
            "{args:?}"
        );
    }
    let info = r.call(&["INFO", "cluster"]);
    assert!(info.contains("cluster_enabled:0\r\n"), "{info:?}");
    assert!(!info.contains("shoal_raft"), "{info:?}");
    assert_eq!(r.call(&["SELECT", "1"]), "+OK\r\n");
}

#[test]
fn cluster_clients_write_and_read_keys_of_every_slot() {
    const KEYS: usize = 2000;
    let s = owning_all();
    let mut c = fill(&s, KEYS);
    read_back(&mut c, KEYS, 7);
    let tagged: Vec<Option<String>> = redis::cmd("MGET")
        .arg("{user1000}.following")
        .arg("{user1000}.followers")
        .query(&mut c)
        .unwrap();
    assert_eq!(tagged, vec![None, None]);
    let mut plain = s.client();
    let n: usize = q(&mut plain, &["DBSIZE"]);
    assert_eq!(n, KEYS);
    let info: String = q(&mut plain, &["INFO", "cluster"]);
    assert!(info.contains("cluster_enabled:1"));
}

#[test]
fn redis_cli_in_cluster_mode_reads_and_writes() {
    let s = owning_all();
    let port = s.port.to_string();
    let cli = |args: &[&str]| -> String {
        let out = Command::new("redis-cli")
            .args(["-h", "127.0.0.1", "-p", &port, "-c"])
            .args(args)
            .output()
            .expect("redis-cli (apt-get install redis-tools)");
        assert!(out.status.success(), "redis-cli {args:?}: {out:?}");
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    };
    for i in 0..20 {
        assert_eq!(cli(&["SET", &format!("k{i}"), &format!("v{i}")]), "OK");
    }
    for i in 0..20 {
        assert_eq!(cli(&["GET", &format!("k{i}")]), format!("v{i}"));
    }
    let check = Command::new("redis-cli")
        .args(["--cluster", "check", &format!("127.0.0.1:{port}")])
        .output()
        .expect("redis-cli");
    let text = String::from_utf8_lossy(&check.stdout);
    assert!(check.status.success(), "redis-cli --cluster check: {text}");
    assert!(text.contains("[OK] All 16384 slots covered."), "{text}");
}

#[test]
fn shoal_cluster_check_and_info_read_every_node() {
    let s = cluster_node();
    let tool = |args: &[&str]| {
        Command::new(env!("CARGO_BIN_EXE_shoal"))
            .arg("cluster")
            .args(args)
            .arg(s.addr())
            .output()
            .expect("shoal cluster")
    };
    // No slot assigned: the check fails and says why.
    let out = tool(&["check"]);
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    assert_eq!(out.status.code(), Some(1), "{text}");
    assert!(
        text.contains("[ERR] Not all 16384 slots are covered by nodes (0 are)."),
        "{text}"
    );
    assert_eq!(
        s.raw().call(&["CLUSTER", "ADDSLOTSRANGE", "0", "16383"]),
        "+OK\r\n"
    );
    for i in 0..10 {
        assert_eq!(s.raw().call(&["SET", &format!("k{i}"), "v"]), "+OK\r\n");
    }
    let out = tool(&["check"]);
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(out.status.success(), "{text}");
    assert!(text.contains("[OK] All nodes agree about slots configuration."));
    assert!(text.contains("[OK] All 16384 slots covered."));
    let out = tool(&["info"]);
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(out.status.success(), "{text}");
    assert!(
        text.contains(&format!("{} (", s.addr()))
            && text.contains("-> 10 keys | 16384 slots | 0 slaves."),
        "{text}"
    );
    // A node that does not answer is an error, not a pass.
    let gone = Command::new(env!("CARGO_BIN_EXE_shoal"))
        .args(["cluster", "check", "127.0.0.1:1"])
        .output()
        .expect("shoal cluster");
    assert_eq!(gone.status.code(), Some(2));
}

/// A directory that outlives one server process and is removed when the test ends.
struct Dir(std::path::PathBuf);

impl Dir {
    fn new(tag: &str) -> Dir {
        let d = std::env::temp_dir().join(format!("shoal-cluster-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        Dir(d)
    }
}

impl Drop for Dir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

#[test]
fn a_restarted_node_comes_back_with_its_id_and_slots() {
    let dir = Dir::new("restart");
    let path = dir.0.to_str().unwrap().to_string();
    let args = ["--cluster-enabled", "yes", "--dir", path.as_str()];
    let (id, nodes) = {
        let s = Shoal::start(&args);
        let mut r = s.raw();
        assert_eq!(
            r.call(&["CLUSTER", "ADDSLOTSRANGE", "0", "8000", "9000", "16383"]),
            "+OK\r\n"
        );
        assert_eq!(r.call(&["CLUSTER", "DELSLOTS", "100"]), "+OK\r\n");
        (r.call(&["CLUSTER", "MYID"]), r.call(&["CLUSTER", "SLOTS"]))
    };
    // Killed (the handle drops), then started again on the same directory.
    let s = Shoal::start(&args);
    let mut r = s.raw();
    assert_eq!(r.call(&["CLUSTER", "MYID"]), id, "the same node");
    let again = r.call(&["CLUSTER", "SLOTS"]);
    // Same ranges, and the node's new address (the system picked another port).
    assert!(
        again.contains(&format!(":{}\r\n", s.port)),
        "{again:?} names the new port {}",
        s.port
    );
    let ranges = |t: &str| -> Vec<u16> {
        // The integers of the reply that are slots: range bounds (the ports are not slots).
        t.split("\r\n")
            .filter_map(|l| l.strip_prefix(':')?.parse::<u32>().ok())
            .filter(|&n| n < 16384)
            .map(|n| n as u16)
            .collect()
    };
    assert_eq!(ranges(&again), ranges(&nodes));
    assert!(
        r.call(&["CLUSTER", "INFO"])
            .contains("cluster_slots_assigned:15384\r\n")
    );
}

#[test]
fn config_set_port_moves_the_address_the_cluster_announces() {
    let s = owning_all();
    let mut r = s.raw();
    let new = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    assert_eq!(
        r.call(&["CONFIG", "SET", "port", &new.to_string()]),
        "+OK\r\n"
    );
    let mut moved = common::Raw::connect(&format!("127.0.0.1:{new}"));
    let want = format!(" 127.0.0.1:{new}@");
    let mut nodes = String::new();
    common::wait_until("the configuration shows the new port", || {
        nodes = moved.call(&["CLUSTER", "NODES"]);
        nodes
            .lines()
            .any(|l| l.contains("myself") && l.contains(&want))
    });
    // Clients following the slot map reach it there.
    let slots = moved.call(&["CLUSTER", "SLOTS"]);
    assert!(slots.contains(&format!(":{new}\r\n")), "{slots:?}");
}

/// Asks `INFO`'s `field` of a node.
fn info_field(s: &Shoal, section: &str, field: &str) -> String {
    let info: String = q(&mut s.client(), &["INFO", section]);
    common::info_value(&info, field).unwrap_or_default()
}

#[test]
fn shoal_cluster_create_forms_three_primaries_with_a_replica_each() {
    let _turn = many_nodes();
    const KEYS: usize = 3000;
    let nodes: Vec<Shoal> = (0..6).map(|_| cluster_node()).collect();
    let out = Command::new(env!("CARGO_BIN_EXE_shoal"))
        .args(["cluster", "create", "--replicas", "1"])
        .args(nodes.iter().map(|n| n.addr()))
        .output()
        .expect("shoal cluster create");
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(
        out.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(text.contains("[OK] All 16384 slots covered."), "{text}");
    // A node already in a cluster is not formed again.
    let again = Command::new(env!("CARGO_BIN_EXE_shoal"))
        .args(["cluster", "create"])
        .args(nodes[..3].iter().map(|n| n.addr()))
        .output()
        .expect("shoal cluster create");
    assert_eq!(again.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&again.stderr).contains("already belongs to a cluster"));

    // Every node holds the same configuration: 3 primaries, 3 replicas.
    for n in &nodes {
        let nodes_text = n.raw().call(&["CLUSTER", "NODES"]);
        assert_eq!(nodes_text.matches("master").count(), 3, "{nodes_text}");
        assert_eq!(nodes_text.matches("slave").count(), 3, "{nodes_text}");
    }
    // A cluster client follows MOVED between the primaries.
    let mut c = fill(&nodes[0], KEYS);
    read_back(&mut c, KEYS, 11);
    let _: () = redis::cmd("MSET")
        .arg("{user1000}.following")
        .arg("a")
        .arg("{user1000}.followers")
        .arg("b")
        .query(&mut c)
        .unwrap();
    // The keys are spread over the three primaries, and each replica holds its primary's.
    let primaries: Vec<&Shoal> = nodes[..3].iter().collect();
    let total: u64 = primaries
        .iter()
        .map(|p| q::<u64>(&mut p.client(), &["DBSIZE"]))
        .sum();
    assert_eq!(total, KEYS as u64 + 2);
    for p in &primaries {
        assert!(q::<u64>(&mut p.client(), &["DBSIZE"]) > KEYS as u64 / 6);
    }
    for r in &nodes[3..] {
        let port: u16 = info_field(r, "replication", "master_port").parse().unwrap();
        let p = nodes.iter().find(|n| n.port == port).expect("its primary");
        common::wait_until("a replica holds its primary's keys", || {
            q::<u64>(&mut r.client(), &["DBSIZE"]) == q::<u64>(&mut p.client(), &["DBSIZE"])
        });
    }
    // redis-cli and shoal's own tools agree.
    let check = Command::new("redis-cli")
        .args(["--cluster", "check", &nodes[1].addr()])
        .output()
        .expect("redis-cli");
    let t = String::from_utf8_lossy(&check.stdout);
    assert!(check.status.success(), "{t}");
    assert!(
        t.contains("[OK] All nodes agree about slots configuration."),
        "{t}"
    );
    let info = Command::new(env!("CARGO_BIN_EXE_shoal"))
        .args(["cluster", "info", &nodes[2].addr()])
        .output()
        .expect("shoal cluster info");
    let t = String::from_utf8_lossy(&info.stdout);
    assert!(
        t.contains(&format!("[OK] {} keys in 3 masters.", KEYS + 2)),
        "{t}"
    );
    assert_eq!(t.matches("| 1 slaves.").count(), 3, "{t}");
    // INFO shows the configuration group: one leader among three voters, the rest learners.
    let mut leaders = 0;
    for n in &nodes {
        common::wait_until("INFO shows the group", || {
            info_field(n, "cluster", "shoal_raft_voters") == "3"
                && info_field(n, "cluster", "shoal_raft_learners") == "3"
        });
        leaders += (info_field(n, "cluster", "shoal_raft_state") == "leader") as usize;
        assert_eq!(info_field(n, "cluster", "shoal_cluster_formed"), "1");
    }
    assert_eq!(leaders, 1);
}

/// Six consecutive ports nobody listens on (and their bus ports, 10000 higher).
fn free_port_run(n: u16) -> u16 {
    let free = |p: u16| std::net::TcpListener::bind(("127.0.0.1", p)).is_ok();
    for attempt in 0..200u32 {
        let base = 20000 + ((std::process::id() * 7919 + attempt * 104_729) % 20000) as u16;
        if (0..n).all(|i| free(base + i) && free(base + i + 10000)) {
            return base;
        }
    }
    panic!("no run of {n} free ports");
}

#[test]
fn shoal_cluster_start_local_runs_a_cluster_and_stops_it() {
    let _turn = many_nodes();
    // Six data ports, then six for the nodes' HTTP listeners.
    let base = free_port_run(12);
    let metrics_base = base + 6;
    let dir = Dir::new("local");
    let mut child = Command::new(env!("CARGO_BIN_EXE_shoal"))
        .args([
            "cluster",
            "start-local",
            "--primaries",
            "3",
            "--replicas",
            "1",
        ])
        .args(["--port-base", &base.to_string(), "--dir"])
        .arg(&dir.0)
        .args(["--metrics-port-base", &metrics_base.to_string()])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("shoal cluster start-local");
    // Guard: the launcher is stopped whatever happens below.
    struct Stop(u32);
    impl Drop for Stop {
        fn drop(&mut self) {
            let _ = Command::new("kill").arg(self.0.to_string()).status();
        }
    }
    let _stop = Stop(child.id());
    let mut out = std::io::BufReader::new(child.stdout.take().unwrap());
    let mut seen = String::new();
    loop {
        let mut line = String::new();
        let n = std::io::BufRead::read_line(&mut out, &mut line).unwrap();
        assert!(n > 0, "start-local ended early: {seen}");
        seen.push_str(&line);
        if line.starts_with("try: redis-cli -c -p") {
            break;
        }
    }
    assert!(
        seen.contains(&format!("try: redis-cli -c -p {base}")),
        "{seen}"
    );
    let first = format!("redis://127.0.0.1:{base}/");
    let client = common::cluster_client(vec![first]).unwrap();
    let mut c = client.get_connection().unwrap();
    for i in 0..100 {
        let _: () = redis::cmd("SET").arg(i).arg(i).query(&mut c).unwrap();
    }
    // Every node serves its metrics, and they cover the cluster's slots.
    for i in 0..6 {
        use std::io::{Read, Write};
        let mut s = std::net::TcpStream::connect(("127.0.0.1", metrics_base + i)).unwrap();
        s.set_read_timeout(Some(std::time::Duration::from_secs(10)))
            .unwrap();
        s.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            .unwrap();
        let mut body = String::new();
        s.read_to_string(&mut body).unwrap();
        assert!(body.starts_with("HTTP/1.1 200"), "{body}");
        assert!(body.contains("shoal_cluster_slots"), "node {i}");
    }
    // SIGTERM: every node goes with the launcher.
    let _ = Command::new("kill").arg(child.id().to_string()).status();
    let status = child.wait().unwrap();
    assert!(status.success(), "{status:?}");
    for i in 0..6 {
        common::wait_until("a node of the local cluster stopped", || {
            std::net::TcpStream::connect(("127.0.0.1", base + i)).is_err()
        });
    }
}

/// `n` nodes in cluster mode on consecutive fixed ports (so they can be restarted where they
/// were), each with its own directory under `dir`.
fn fixed_nodes(dir: &Dir, base: u16, n: u16) -> Vec<Shoal> {
    (0..n).map(|i| fixed_node(dir, base + i)).collect()
}

fn fixed_node(dir: &Dir, port: u16) -> Shoal {
    let d = dir.0.join(format!("node-{port}"));
    std::fs::create_dir_all(&d).unwrap();
    Shoal::start(&[
        "--set",
        &format!("port={port}"),
        "--cluster-enabled",
        "yes",
        "--dir",
        d.to_str().unwrap(),
    ])
}

fn create(nodes: &[Shoal], replicas: usize) {
    let out = Command::new(env!("CARGO_BIN_EXE_shoal"))
        .args(["cluster", "create", "--replicas", &replicas.to_string()])
        .args(nodes.iter().map(|n| n.addr()))
        .output()
        .expect("shoal cluster create");
    assert!(
        out.status.success(),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Reads every `step`th key `fill` wrote and checks its value.
fn read_back(c: &mut redis::cluster::ClusterConnection, keys: usize, step: usize) {
    for i in (0..keys).step_by(step) {
        let v: usize = redis::cmd("GET").arg(format!("key:{i}")).query(c).unwrap();
        assert_eq!(v, i);
    }
}

/// Writes `keys` keys through a cluster client; returns the client's connection.
fn fill(first: &Shoal, keys: usize) -> redis::cluster::ClusterConnection {
    let client = common::cluster_client(vec![first.url()]).expect("cluster client");
    let mut c = client.get_connection().expect("cluster connection");
    for i in 0..keys {
        let _: () = redis::cmd("SET")
            .arg(format!("key:{i}"))
            .arg(i)
            .query(&mut c)
            .unwrap();
    }
    c
}

#[test]
fn losing_one_voter_of_three_changes_nothing_for_the_others() {
    let _turn = many_nodes();
    let dir = Dir::new("voter");
    let base = free_port_run(3);
    let mut nodes = fixed_nodes(&dir, base, 3);
    create(&nodes, 0);
    let _ = fill(&nodes[0], 300);
    // The third node (a voter, owner of slots 10922-16383) goes away.
    let gone = nodes.pop().unwrap();
    drop(gone);
    // Keys of the other two are served, and the configuration still changes (two voters of
    // three are a majority).
    let mut r0 = nodes[0].raw();
    let slot0_key = "{06S}"; // slot 0
    assert_eq!(r0.call(&["CLUSTER", "KEYSLOT", slot0_key]), ":0\r\n");
    assert_eq!(r0.call(&["SET", slot0_key, "v"]), "+OK\r\n");
    let mut r1 = nodes[1].raw();
    assert_eq!(r0.call(&["CLUSTER", "DELSLOTS", "1"]), "+OK\r\n");
    common::wait_until("the change reached the other node", || {
        r1.call(&["CLUSTER", "NODES"])
            .contains(" connected 0 2-5460\n")
    });
    assert_eq!(r0.call(&["CLUSTER", "ADDSLOTS", "1"]), "+OK\r\n");
    common::wait_until("the next change reached the other node", || {
        r1.call(&["CLUSTER", "NODES"])
            .contains(" connected 0-5460\n")
    });
    assert!(r1.call(&["GET", slot0_key]).starts_with("-MOVED 0 "));
}

#[test]
fn a_whole_cluster_restarted_from_disk_comes_back_with_its_map_and_keys() {
    let _turn = many_nodes();
    const KEYS: usize = 1000;
    let dir = Dir::new("whole");
    let base = free_port_run(3);
    let nodes = fixed_nodes(&dir, base, 3);
    create(&nodes, 0);
    let _ = fill(&nodes[0], KEYS);
    let map: Vec<String> = nodes
        .iter()
        .map(|n| n.raw().call(&["CLUSTER", "SLOTS"]))
        .collect();
    // Every node saves and stops.
    for mut n in nodes {
        n.raw().cmd(&[b"SHUTDOWN", b"SAVE"]);
        assert!(n.wait_exit(), "a clean exit");
    }
    let nodes = fixed_nodes(&dir, base, 3);
    for (n, before) in nodes.iter().zip(&map) {
        common::wait_until("the node is back in its cluster", || {
            n.raw()
                .call(&["CLUSTER", "INFO"])
                .contains("cluster_state:ok")
        });
        assert_eq!(
            &n.raw().call(&["CLUSTER", "SLOTS"]),
            before,
            "the same slot map"
        );
    }
    let total: u64 = nodes
        .iter()
        .map(|n| q::<u64>(&mut n.client(), &["DBSIZE"]))
        .sum();
    assert_eq!(total, KEYS as u64);
    let client = common::cluster_client(vec![nodes[1].url()]).unwrap();
    read_back(&mut client.get_connection().unwrap(), KEYS, 37);
}

#[test]
fn shoal_cluster_add_node_and_del_node_change_the_members() {
    let _turn = many_nodes();
    let nodes: Vec<Shoal> = (0..3).map(|_| cluster_node()).collect();
    create(&nodes, 0);
    let primary = nodes[1].raw().call(&["CLUSTER", "MYID"]);
    let primary = primary.lines().nth(1).unwrap().to_string();
    let extra = cluster_node();
    let tool = |args: &[&str]| {
        let out = Command::new(env!("CARGO_BIN_EXE_shoal"))
            .arg("cluster")
            .args(args)
            .output()
            .expect("shoal cluster");
        assert!(
            out.status.success(),
            "{args:?}: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    };
    tool(&[
        "add-node",
        &extra.addr(),
        &nodes[2].addr(),
        "--replica-of",
        &primary,
    ]);
    let id = extra.raw().call(&["CLUSTER", "MYID"]);
    let id = id.lines().nth(1).unwrap().to_string();
    for n in &nodes {
        common::wait_until("every node sees the new replica", || {
            n.raw().call(&["CLUSTER", "NODES"]).lines().any(|l| {
                l.starts_with(&format!("{id} {}@", extra.addr()))
                    && l.contains(&format!(" slave {primary} "))
            })
        });
    }
    common::wait_until("the new replica follows its primary", || {
        info_field(&extra, "replication", "master_link_status") == "up"
    });
    // A node that serves slots cannot go; the replica can.
    let out = Command::new(env!("CARGO_BIN_EXE_shoal"))
        .args(["cluster", "del-node", &nodes[0].addr(), &primary])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    tool(&["del-node", &nodes[0].addr(), &id]);
    for n in &nodes {
        common::wait_until("every node forgot the replica", || {
            !n.raw().call(&["CLUSTER", "NODES"]).contains(&id)
        });
        common::wait_until("the group has no learner left", || {
            info_field(n, "cluster", "shoal_raft_learners") == "0"
        });
    }
    // Forgotten already (by the removal); a node never known is unknown.
    let mut r = nodes[0].raw();
    assert_eq!(r.call(&["CLUSTER", "FORGET", &id]), "+OK\r\n");
    let never = "f".repeat(40);
    assert_eq!(
        r.call(&["CLUSTER", "FORGET", &never]),
        format!("-ERR Unknown node {never}\r\n")
    );
    let me = r.call(&["CLUSTER", "MYID"]);
    let me = me.lines().nth(1).unwrap().to_string();
    assert_eq!(
        r.call(&["CLUSTER", "FORGET", &me]),
        "-ERR I tried hard but I can't forget myself...\r\n"
    );
}

#[test]
fn a_slot_moved_with_setslot_redirects_with_ask_then_moved() {
    let _turn = many_nodes();
    let nodes: Vec<Shoal> = (0..3).map(|_| cluster_node()).collect();
    create(&nodes, 0);
    let id = |n: &Shoal| {
        let r = n.raw().call(&["CLUSTER", "MYID"]);
        r.lines().nth(1).unwrap().to_string()
    };
    let (src, dst) = (id(&nodes[0]), id(&nodes[1]));
    let (mut s, mut d) = (nodes[0].raw(), nodes[1].raw());
    // "{06S}" hashes to slot 0, which the first node owns.
    assert_eq!(s.call(&["SET", "{06S}here", "v"]), "+OK\r\n");
    assert_eq!(
        s.call(&["CLUSTER", "SETSLOT", "0", "IMPORTING", &dst]),
        "-ERR I'm already the owner of hash slot 0\r\n"
    );
    assert_eq!(
        d.call(&["CLUSTER", "SETSLOT", "0", "MIGRATING", &src]),
        "-ERR I'm not the owner of hash slot 0\r\n"
    );
    assert_eq!(
        d.call(&["CLUSTER", "SETSLOT", "0", "IMPORTING", "nosuchnode"]),
        "-ERR I don't know about node nosuchnode\r\n"
    );
    assert_eq!(
        d.call(&["CLUSTER", "SETSLOT", "0", "BOGUS"]),
        "-ERR Invalid CLUSTER SETSLOT action or number of arguments. Try CLUSTER HELP\r\n"
    );
    assert_eq!(
        d.call(&["CLUSTER", "SETSLOT", "0", "IMPORTING", &src]),
        "+OK\r\n"
    );
    common::wait_until("the source sees the move", || {
        s.call(&["CLUSTER", "NODES"])
            .contains(&format!("[0->-{dst}]"))
    });
    assert_eq!(
        s.call(&["CLUSTER", "SETSLOT", "0", "MIGRATING", &dst]),
        "+OK\r\n"
    );
    assert!(
        d.call(&["CLUSTER", "NODES"])
            .contains(&format!("[0-<-{src}]"))
    );
    // The source serves keys it holds, sends the others to the target with ASK.
    assert_eq!(s.call(&["GET", "{06S}here"]), "$1\r\nv\r\n");
    let ask = format!("-ASK 0 {}\r\n", nodes[1].addr());
    assert_eq!(s.call(&["GET", "{06S}new"]), ask);
    assert_eq!(
        s.call(&["MGET", "{06S}here", "{06S}new"]),
        "-TRYAGAIN Multiple keys request during rehashing of slot\r\n"
    );
    // The target serves the slot only after ASKING, for one command.
    let moved = format!("-MOVED 0 {}\r\n", nodes[0].addr());
    assert_eq!(d.call(&["GET", "{06S}new"]), moved);
    assert_eq!(d.call(&["ASKING"]), "+OK\r\n");
    assert_eq!(d.call(&["SET", "{06S}new", "w"]), "+OK\r\n");
    assert_eq!(d.call(&["GET", "{06S}new"]), moved);
    // Ownership passes in one change.
    assert_eq!(
        s.call(&["CLUSTER", "SETSLOT", "0", "NODE", &dst]),
        "+OK\r\n"
    );
    common::wait_until("the target owns the slot", || {
        d.call(&["GET", "{06S}new"]) == "$1\r\nw\r\n"
    });
    assert_eq!(
        s.call(&["GET", "{06S}new"]),
        format!("-MOVED 0 {}\r\n", nodes[1].addr())
    );
    assert_eq!(
        d.call(&["CLUSTER", "SETSLOT", "0", "NODE", &dst]),
        "+OK\r\n"
    );
    assert!(!d.call(&["CLUSTER", "NODES"]).contains("[0-"));
}

/// `redis-cli --cluster import` moves a redis-server's keys into a shoal cluster: redis-cli
/// MIGRATEs each key from the redis-server to the shoal node owning its slot, and shoal RESTOREs
/// redis-server's payloads (strings, a list, a set, a sorted set, a hash, a HyperLogLog, a TTL).
#[test]
fn redis_cli_cluster_import_brings_a_redis_servers_keys_in() {
    const KEYS: usize = 150;
    let _turn = many_nodes();
    let nodes: Vec<Shoal> = (0..3).map(|_| cluster_node()).collect();
    create(&nodes, 0);
    let redis = common::reference::Redis::start();
    let mut rc = redis.client();
    for i in 0..KEYS {
        let _: () = q(&mut rc, &["SET", &format!("key:{i}"), &i.to_string()]);
    }
    let members: Vec<String> = (0..200).map(|i| format!("m{i}")).collect();
    let mut sadd = vec!["SADD", "set"];
    sadd.extend(members.iter().map(String::as_str));
    let _: i64 = q(&mut rc, &sadd);
    let _: i64 = q(&mut rc, &["RPUSH", "list", "a", "b", "c"]);
    let _: i64 = q(&mut rc, &["ZADD", "zset", "1", "x", "2.5", "y"]);
    let _: i64 = q(&mut rc, &["HSET", "hash", "f", "v"]);
    let _: i64 = q(&mut rc, &["PFADD", "hll", "a", "b", "c", "d"]);
    let _: i64 = q(&mut rc, &["EXPIRE", "key:1", "1000"]);
    let out = Command::new("redis-cli")
        .args(["--cluster", "import", &nodes[0].addr()])
        .args(["--cluster-from", &format!("127.0.0.1:{}", redis.port)])
        .arg("--cluster-copy")
        .output()
        .expect("redis-cli");
    let t = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && !t.contains("ERR"),
        "{}{}",
        &t[t.len().saturating_sub(3000)..],
        String::from_utf8_lossy(&out.stderr)
    );
    let total: u64 = nodes
        .iter()
        .map(|n| q::<u64>(&mut n.client(), &["DBSIZE"]))
        .sum();
    assert_eq!(total, KEYS as u64 + 5);
    let client = common::cluster_client(vec![nodes[0].url()]).expect("cluster client");
    let mut c = client.get_connection().expect("cluster connection");
    read_back(&mut c, KEYS, 7);
    let ttl: i64 = redis::cmd("TTL").arg("key:1").query(&mut c).unwrap();
    assert!((990..=1000).contains(&ttl), "TTL {ttl}");
    let n: i64 = redis::cmd("SCARD").arg("set").query(&mut c).unwrap();
    assert_eq!(n, 200);
    let l: Vec<String> = redis::cmd("LRANGE")
        .arg(&["list", "0", "-1"])
        .query(&mut c)
        .unwrap();
    assert_eq!(l, ["a", "b", "c"]);
    let z: Vec<String> = redis::cmd("ZRANGE")
        .arg(&["zset", "0", "-1", "WITHSCORES"])
        .query(&mut c)
        .unwrap();
    assert_eq!(z, ["x", "1", "y", "2.5"]);
    let h: String = redis::cmd("HGET")
        .arg(&["hash", "f"])
        .query(&mut c)
        .unwrap();
    assert_eq!(h, "v");
    let n: i64 = redis::cmd("PFCOUNT").arg("hll").query(&mut c).unwrap();
    assert_eq!(n, 4);
}

#[test]
fn redis_cli_reshard_moves_slots_and_keys_between_nodes() {
    const KEYS: usize = 600;
    let _turn = many_nodes();
    let nodes: Vec<Shoal> = (0..3).map(|_| cluster_node()).collect();
    create(&nodes, 0);
    let _ = fill(&nodes[0], KEYS);
    let id = |n: &Shoal| {
        let r = n.raw().call(&["CLUSTER", "MYID"]);
        r.lines().nth(1).unwrap().to_string()
    };
    let before: u64 = q(&mut nodes[1].client(), &["DBSIZE"]);
    let out = Command::new("redis-cli")
        .args(["--cluster", "reshard", &nodes[0].addr()])
        .args([
            "--cluster-from",
            &id(&nodes[0]),
            "--cluster-to",
            &id(&nodes[1]),
        ])
        .args(["--cluster-slots", "700", "--cluster-yes"])
        .output()
        .expect("redis-cli");
    let t = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{t}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(!t.contains("ERR"), "{}", &t[t.len().saturating_sub(3000)..]);
    let check = Command::new("redis-cli")
        .args(["--cluster", "check", &nodes[2].addr()])
        .output()
        .expect("redis-cli");
    let t = String::from_utf8_lossy(&check.stdout);
    assert!(check.status.success(), "{t}");
    assert!(
        t.contains("[OK] All nodes agree about slots configuration."),
        "{t}"
    );
    assert!(!t.contains("slots are open"), "{t}");
    // The keys moved with their slots: none lost, none left behind.
    let after: u64 = q(&mut nodes[1].client(), &["DBSIZE"]);
    assert!(
        after > before,
        "{after} keys on the target, {before} before"
    );
    let total: u64 = nodes
        .iter()
        .map(|n| q::<u64>(&mut n.client(), &["DBSIZE"]))
        .sum();
    assert_eq!(total, KEYS as u64);
    let client = common::cluster_client(vec![nodes[2].url()]).unwrap();
    read_back(&mut client.get_connection().unwrap(), KEYS, 1);
    // MIGRATE to nowhere is an I/O error, as in Redis.
    let mut r = nodes[1].raw();
    let key = "key:1";
    let slot = r.call(&["CLUSTER", "KEYSLOT", key]);
    let owner = nodes
        .iter()
        .find(|n| {
            n.raw().call(&[
                "CLUSTER",
                "COUNTKEYSINSLOT",
                slot.trim_start_matches(':').trim(),
            ]) != ":0\r\n"
        })
        .expect("the key's owner");
    assert_eq!(
        owner
            .raw()
            .call(&["MIGRATE", "127.0.0.1", "1", key, "0", "1000"]),
        "-IOERR error or timeout connecting to the client\r\n"
    );
    assert_eq!(
        owner
            .raw()
            .call(&["MIGRATE", "127.0.0.1", "1", "{key:1}.missing", "0", "1000"]),
        "+NOKEY\r\n"
    );
}

/// A node's id.
fn node_id(n: &Shoal) -> String {
    let r = n.raw().call(&["CLUSTER", "MYID"]);
    r.lines().nth(1).unwrap_or_default().to_string()
}

/// Whether a `CLUSTER NODES` text shows `primary` as a primary and `replica` as its replica.
fn shows_primary_of(view: &str, primary: &str, replica: &str) -> bool {
    let line = |id: &str| -> Vec<String> {
        view.lines()
            .find(|l| l.starts_with(id))
            .map(|l| l.split(' ').map(str::to_string).collect())
            .unwrap_or_default()
    };
    let (p, r) = (line(primary), line(replica));
    p.len() > 3
        && p[2].ends_with("master")
        && r.len() > 3
        && r[2].ends_with("slave")
        && r[3] == primary
}

/// Writes `load:<i>` = i through a cluster client until `stop` (bounded in count and time);
/// returns the writes that were acknowledged and how many were tried.
fn write_until(
    first: String,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    acked: std::sync::Arc<std::sync::atomic::AtomicUsize>,
) -> std::thread::JoinHandle<(Vec<usize>, usize)> {
    std::thread::spawn(move || {
        const WRITES_MAX: usize = 200_000;
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(120);
        let client = common::cluster_client(vec![first]).expect("cluster client");
        let mut c = client.get_connection().expect("cluster connection");
        let mut ok = Vec::new();
        let mut tried = 0;
        while !stop.load(std::sync::atomic::Ordering::Relaxed)
            && tried < WRITES_MAX
            && std::time::Instant::now() < deadline
        {
            let r: redis::RedisResult<()> = redis::cmd("SET")
                .arg(format!("load:{tried}"))
                .arg(tried)
                .query(&mut c);
            if r.is_ok() {
                ok.push(tried);
                acked.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            }
            tried += 1;
        }
        (ok, tried)
    })
}

#[test]
fn cluster_failover_on_a_replica_swaps_roles_without_losing_a_write() {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering::Relaxed};
    let _turn = many_nodes();
    const KEYS: usize = 1000;
    let nodes: Vec<Shoal> = (0..6).map(|_| cluster_node()).collect();
    create(&nodes, 1);
    // `create` makes the fourth node the replica of the first, which owns slots 0-5460.
    let (old, new) = (&nodes[0], &nodes[3]);
    let (old_id, new_id) = (node_id(old), node_id(new));
    assert!(shows_primary_of(
        &new.raw().call(&["CLUSTER", "NODES"]),
        &old_id,
        &new_id
    ));
    let mut c = fill(&nodes[1], KEYS);
    common::wait_until("the replica's link is up", || {
        info_field(new, "replication", "master_link_status") == "up"
    });
    // Redis's errors.
    assert_eq!(
        old.raw().call(&["CLUSTER", "FAILOVER"]),
        "-ERR You should send CLUSTER FAILOVER to a replica\r\n"
    );
    assert_eq!(
        new.raw().call(&["CLUSTER", "FAILOVER", "SOON"]),
        "-ERR syntax error\r\n"
    );
    assert_eq!(
        new.raw().call(&["CLUSTER", "FAILOVER", "FORCE", "NOW"]),
        "-ERR unknown subcommand or wrong number of arguments for 'FAILOVER'. Try CLUSTER HELP.\r\n"
    );
    assert_eq!(
        old.raw().call(&["FAILOVER"]),
        "-ERR FAILOVER not allowed in cluster mode. Use CLUSTER FAILOVER command instead.\r\n"
    );
    // Writes keep coming to every primary while the replica takes over.
    let stop = Arc::new(AtomicBool::new(false));
    let acked = Arc::new(AtomicUsize::new(0));
    let writer = write_until(nodes[2].url(), stop.clone(), acked.clone());
    common::wait_until("the writer is under way", || acked.load(Relaxed) >= 200);
    assert_eq!(new.raw().call(&["CLUSTER", "FAILOVER"]), "+OK\r\n");
    for n in &nodes {
        common::wait_until("every node sees the roles swapped", || {
            shows_primary_of(&n.raw().call(&["CLUSTER", "NODES"]), &new_id, &old_id)
        });
    }
    // The old primary follows the new one, as the configuration says.
    common::wait_until("the old primary replicates the new one", || {
        info_field(old, "replication", "master_port") == new.port.to_string()
            && info_field(old, "replication", "master_link_status") == "up"
    });
    assert_eq!(info_field(new, "replication", "role"), "master");
    // Writes go on through the new primary, then stop.
    let before = acked.load(Relaxed);
    common::wait_until("writes succeed after the failover", || {
        acked.load(Relaxed) >= before + 200
    });
    stop.store(true, Relaxed);
    let (ok, tried) = writer.join().expect("the writer");
    // "{06S}" hashes to slot 0: the old primary redirects, the new one serves.
    assert_eq!(
        old.raw().call(&["SET", "{06S}x", "v"]),
        format!("-MOVED 0 {}\r\n", new.addr())
    );
    assert_eq!(new.raw().call(&["SET", "{06S}x", "v"]), "+OK\r\n");
    assert_eq!(new.raw().call(&["GET", "{06S}x"]), "$1\r\nv\r\n");
    // No acknowledged write lost: every key is read back from its primary.
    read_back(&mut c, KEYS, 1);
    for i in &ok {
        let v: usize = redis::cmd("GET")
            .arg(format!("load:{i}"))
            .query(&mut c)
            .unwrap_or_else(|e| panic!("load:{i}: {e}"));
        assert_eq!(v, *i);
    }
    let primaries = [&nodes[1], &nodes[2], new];
    let total: usize = primaries
        .iter()
        .map(|p| q::<usize>(&mut p.client(), &["DBSIZE"]))
        .sum();
    assert!(
        (KEYS + ok.len() + 1..=KEYS + tried + 1).contains(&total),
        "{total} keys on the primaries: {KEYS} + {} acknowledged (of {tried}) + 1",
        ok.len()
    );
}

#[test]
fn shoal_cluster_failover_coordinated_then_forced_for_a_stopped_primary() {
    let _turn = many_nodes();
    const KEYS: usize = 600;
    let mut nodes: Vec<Shoal> = (0..6).map(|_| cluster_node()).collect();
    create(&nodes, 1);
    let c = fill(&nodes[0], KEYS);
    let tool = |args: &[&str]| {
        Command::new(env!("CARGO_BIN_EXE_shoal"))
            .args(["cluster", "failover"])
            .args(args)
            .output()
            .expect("shoal cluster failover")
    };
    // Coordinated, through the tool: the sixth node takes over from the third.
    common::wait_until("the sixth node's link is up", || {
        info_field(&nodes[5], "replication", "master_link_status") == "up"
    });
    let out = tool(&[&nodes[5].addr()]);
    let (stdout, stderr) = (
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
    );
    assert!(out.status.success(), "{stdout}{stderr}");
    assert!(stdout.contains("[OK] "), "{stdout}");
    // Not a terminal: plain progress lines in the log.
    assert!(
        stderr.contains(&format!(
            ">>> Waiting for {} to become a primary",
            nodes[5].addr()
        )),
        "{stderr}"
    );
    let (p5, p2) = (node_id(&nodes[5]), node_id(&nodes[2]));
    assert!(shows_primary_of(
        &nodes[5].raw().call(&["CLUSTER", "NODES"]),
        &p5,
        &p2
    ));
    // A primary is not failed over.
    let out = tool(&[&nodes[0].addr()]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        String::from_utf8_lossy(&out.stderr)
            .contains("ERR You should send CLUSTER FAILOVER to a replica"),
        "{out:?}"
    );
    // The second primary stops (its replica, the fifth node, has everything it had).
    let (p1, p4) = (node_id(&nodes[1]), node_id(&nodes[4]));
    common::caught_up(&nodes[4], &nodes[1]);
    let replica = nodes.remove(4);
    drop(nodes.remove(1));
    common::wait_until("the replica sees its primary gone", || {
        info_field(&replica, "replication", "master_link_status") == "down"
    });
    assert_eq!(
        replica.raw().call(&["CLUSTER", "FAILOVER"]),
        "-ERR Master is down or failed, please use CLUSTER FAILOVER FORCE\r\n"
    );
    let out = tool(&[&replica.addr(), "--force"]);
    assert!(
        out.status.success(),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    for n in nodes.iter().chain([&replica]) {
        common::wait_until("every node sees the forced failover", || {
            shows_primary_of(&n.raw().call(&["CLUSTER", "NODES"]), &p4, &p1)
        });
    }
    // Every key is served, the stopped primary's from its former replica (a new client: the old
    // one keeps trying its connection to the stopped node).
    drop(c);
    let client = common::cluster_client(vec![nodes[0].url()]).unwrap();
    let mut c = client.get_connection().unwrap();
    read_back(&mut c, KEYS, 1);
    let _: () = redis::cmd("SET").arg("after").arg(1).query(&mut c).unwrap();
}

/// Runs `shoal cluster <args>` with no input; returns (exit code, stdout, stderr).
fn cluster_tool(args: &[&str]) -> (Option<i32>, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_shoal"))
        .arg("cluster")
        .args(args)
        .stdin(std::process::Stdio::null())
        .output()
        .expect("shoal cluster");
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn shoal_cluster_rebalance_plans_by_weight_and_reshard_checks_its_nodes() {
    let _turn = many_nodes();
    let nodes: Vec<Shoal> = (0..3).map(|_| cluster_node()).collect();
    create(&nodes, 0);
    let extra = cluster_node();
    let (code, out, err) = cluster_tool(&["add-node", &extra.addr(), &nodes[0].addr()]);
    assert_eq!(code, Some(0), "{out}{err}");
    let ids: Vec<String> = nodes.iter().map(node_id).collect();
    let extra_id = node_id(&extra);
    let first = nodes[0].addr();
    // Three even primaries and an empty one: balanced unless empty primaries count.
    let (code, out, err) = cluster_tool(&["rebalance", &first]);
    assert_eq!(code, Some(0), "{out}{err}");
    assert!(
        out.contains("*** No rebalancing needed! All nodes are within the 2.00% threshold."),
        "{out}"
    );
    let (code, out, err) =
        cluster_tool(&["rebalance", &first, "--use-empty-masters", "--simulate"]);
    assert_eq!(code, Some(0), "{out}{err}");
    assert!(
        out.contains(">>> Rebalancing across 4 nodes. Total weight = 4.00"),
        "{out}"
    );
    let moving: Vec<&str> = out.lines().filter(|l| l.starts_with("Moving ")).collect();
    assert_eq!(moving.len(), 3, "{out}");
    assert!(
        moving
            .iter()
            .all(|l| l.ends_with(&format!(" to {}", extra.addr()))),
        "{out}"
    );
    let slots: usize = moving
        .iter()
        .map(|l| l.split(' ').nth(1).unwrap().parse::<usize>().unwrap())
        .sum();
    assert_eq!(slots, 4096);
    let view = extra.raw().call(&["CLUSTER", "NODES"]);
    assert!(
        view.lines()
            .any(|l| l.starts_with(&extra_id) && l.ends_with(" connected")),
        "simulated: nothing moved: {view}"
    );
    // Weights: the first primary weighs 2 of 4, and gets slots from the other two.
    let w = format!("{}=2", &ids[0][..8]);
    let (code, out, err) = cluster_tool(&["rebalance", &first, "--weight", &w, "--simulate"]);
    assert_eq!(code, Some(0), "{out}{err}");
    assert!(out.contains("Total weight = 4.00"), "{out}");
    assert!(
        out.lines()
            .filter(|l| l.starts_with("Moving "))
            .all(|l| l.ends_with(&format!(" to {first}"))),
        "{out}"
    );
    for (args, want) in [
        (
            vec!["rebalance", &first, "--weight", "abc=1"],
            "*** No such master node abc".to_string(),
        ),
        (
            vec!["rebalance", &first, "--weight", "abc"],
            "*** invalid input abc".to_string(),
        ),
        (
            vec![
                "reshard", &first, "--from", "all", "--to", "nosuch", "--slots", "10", "--yes",
            ],
            "*** The specified node (nosuch) is not known or not a master, please retry.".into(),
        ),
        (
            vec![
                "reshard", &first, "--from", &extra_id, "--to", &ids[0], "--slots", "10", "--yes",
            ],
            "*** The sources own no slot: nothing to move.".into(),
        ),
        // Not confirmed (no input): the plan is shown, nothing moves.
        (
            vec![
                "reshard", &first, "--from", &ids[1], "--to", &ids[0], "--slots", "10",
            ],
            "aborted: the plan was not confirmed".into(),
        ),
    ] {
        let (code, out, err) = cluster_tool(&args);
        assert_eq!(code, Some(2), "{args:?}: {out}{err}");
        assert!(err.contains(&want), "{args:?}: {out}{err}");
    }
    let (_, out, _) = cluster_tool(&[
        "reshard", &first, "--from", &ids[1], "--to", &ids[0], "--slots", "10",
    ]);
    assert!(
        out.contains(&format!("    Moving 10 slots (5461-5470) from {}", ids[1])),
        "{out}"
    );
    let (code, out, _) = cluster_tool(&["check", &first]);
    assert_eq!(code, Some(0), "{out}");
}

/// Depends on slot migration jobs (`CLUSTER MIGRATESLOTS`, `CLUSTER GETSLOTMIGRATIONS`), being
/// built on main: until they are there, the tool stops at its first request to the source with
/// `-ERR unknown subcommand`.
#[test]
fn reshard_tool_moves_slots_under_load() {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering::Relaxed};
    let _turn = many_nodes();
    const KEYS: usize = 2000;
    let nodes: Vec<Shoal> = (0..6).map(|_| cluster_node()).collect();
    create(&nodes, 1);
    let _ = fill(&nodes[0], KEYS);
    let (src, dst) = (node_id(&nodes[0]), node_id(&nodes[1]));
    let stop = Arc::new(AtomicBool::new(false));
    let acked = Arc::new(AtomicUsize::new(0));
    let writer = write_until(nodes[2].url(), stop.clone(), acked.clone());
    common::wait_until("the writer is under way", || acked.load(Relaxed) >= 200);
    let (code, out, err) = cluster_tool(&[
        "reshard",
        &nodes[2].addr(),
        "--from",
        &src,
        "--to",
        &dst,
        "--slots",
        "1000",
        "--yes",
        "--timeout",
        "120",
    ]);
    let before = acked.load(Relaxed);
    common::wait_until("writes go on after the move", || {
        acked.load(Relaxed) >= before + 200
    });
    stop.store(true, Relaxed);
    let (ok, tried) = writer.join().expect("the writer");
    assert_eq!(code, Some(0), "{out}{err}");
    assert!(out.contains("[OK] 1000 slots moved."), "{out}");
    // The source's lowest 1000 slots moved to the target, as every node sees.
    for n in &nodes {
        common::wait_until("every node sees the new owners", || {
            let v = n.raw().call(&["CLUSTER", "NODES"]);
            v.lines()
                .any(|l| l.starts_with(&dst) && l.ends_with(" 0-999 5461-10922"))
                && v.lines()
                    .any(|l| l.starts_with(&src) && l.ends_with(" 1000-5460"))
        });
    }
    let (code, out, _) = cluster_tool(&["check", &nodes[0].addr()]);
    assert_eq!(code, Some(0), "{out}");
    // Nothing acknowledged was lost, before or during the move.
    let client = common::cluster_client(vec![nodes[2].url()]).unwrap();
    let mut c = client.get_connection().unwrap();
    read_back(&mut c, KEYS, 1);
    for i in &ok {
        let v: usize = redis::cmd("GET")
            .arg(format!("load:{i}"))
            .query(&mut c)
            .unwrap_or_else(|e| panic!("load:{i}: {e}"));
        assert_eq!(v, *i);
    }
    // The source drops the moved keys right after the flip.
    let total = || -> usize {
        nodes[..3]
            .iter()
            .map(|p| q::<usize>(&mut p.client(), &["DBSIZE"]))
            .sum()
    };
    common::wait_until("the source dropped the keys it moved", || {
        total() <= KEYS + tried
    });
    let total = total();
    assert!(
        (KEYS + ok.len()..=KEYS + tried).contains(&total),
        "{total} keys on the primaries: {KEYS} + {} acknowledged (of {tried})",
        ok.len()
    );
    // The target's replica holds what the target holds.
    common::wait_until("the target's replica caught up", || {
        q::<usize>(&mut nodes[4].client(), &["DBSIZE"])
            == q::<usize>(&mut nodes[1].client(), &["DBSIZE"])
    });
}

#[test]
fn shard_channels_are_routed_by_their_slot() {
    let s = cluster_node();
    let mut r = s.raw();
    // Every slot but 12182, where "foo" hashes ({user1000} hashes to 3443).
    assert_eq!(
        r.call(&["CLUSTER", "ADDSLOTSRANGE", "0", "12181"]),
        "+OK\r\n"
    );
    assert_eq!(
        r.call(&["SPUBLISH", "foo", "m"]).split(' ').next(),
        Some("-CLUSTERDOWN")
    );
    assert_eq!(
        r.call(&["CLUSTER", "ADDSLOTSRANGE", "12182", "16383"]),
        "+OK\r\n"
    );
    assert_eq!(
        r.call(&["SSUBSCRIBE", "{user1000}.a", "foo"]),
        "-CROSSSLOT Keys in request don't hash to the same slot\r\n"
    );
    assert_eq!(r.call(&["SPUBLISH", "{user1000}.a", "m"]), ":0\r\n");
    let mut sub = s.raw();
    assert_eq!(
        sub.call(&["SSUBSCRIBE", "{user1000}.a", "{user1000}.b"]),
        "*3\r\n$10\r\nssubscribe\r\n$12\r\n{user1000}.a\r\n:1\r\n"
    );
    sub.reply();
    assert_eq!(r.call(&["SPUBLISH", "{user1000}.b", "m"]), ":1\r\n");
    assert_eq!(
        String::from_utf8(sub.reply()).unwrap(),
        "*3\r\n$8\r\nsmessage\r\n$12\r\n{user1000}.b\r\n$1\r\nm\r\n"
    );
    // Plain pub/sub is not routed: PUBLISH works on any node.
    assert_eq!(r.call(&["PUBLISH", "foo", "m"]), ":0\r\n");
}

/// CLUSTER FLUSHSLOTS gives up every slot the node owns, only while it holds no key (Redis's
/// rule and error), and is `+OK` for a node that owns none.
#[test]
fn flushslots_gives_up_the_nodes_slots_only_when_it_holds_no_key() {
    let s = owning_all();
    let mut r = s.raw();
    assert_eq!(r.call(&["SET", "foo", "bar"]), "+OK\r\n");
    assert_eq!(
        r.call(&["CLUSTER", "FLUSHSLOTS"]),
        "-ERR DB must be empty to perform CLUSTER FLUSHSLOTS.\r\n"
    );
    assert_eq!(
        r.call(&["CLUSTER", "FLUSHSLOTS", "x"]),
        "-ERR wrong number of arguments for 'cluster|flushslots' command\r\n"
    );
    assert!(r.call(&["CLUSTER", "SLOTS"]).starts_with("*1\r\n"));
    assert_eq!(r.call(&["DEL", "foo"]), ":1\r\n");
    assert_eq!(r.call(&["CLUSTER", "FLUSHSLOTS"]), "+OK\r\n");
    assert_eq!(r.call(&["CLUSTER", "SLOTS"]), "*0\r\n");
    assert_eq!(
        r.call(&["GET", "foo"]),
        "-CLUSTERDOWN Hash slot not served\r\n"
    );
    // Nothing left to give up.
    assert_eq!(r.call(&["CLUSTER", "FLUSHSLOTS"]), "+OK\r\n");
    assert_eq!(
        r.call(&["CLUSTER", "ADDSLOTSRANGE", "0", "16383"]),
        "+OK\r\n"
    );
    assert_eq!(r.call(&["SET", "foo", "bar"]), "+OK\r\n");
}

/// The config epoch `CLUSTER NODES` (as `node` sees it) gives the node with id `id`.
fn config_epoch_of(node: &Shoal, id: &str) -> Option<u64> {
    let nodes = node.raw().call(&["CLUSTER", "NODES"]);
    nodes
        .lines()
        .find(|l| l.starts_with(id))
        .and_then(|l| l.split(' ').nth(6))
        .and_then(|e| e.parse().ok())
}

/// CLUSTER BUMPEPOCH gives the node the cluster's newest config epoch through the group
/// (`BUMPED <epoch>`, the epoch every node then shows for it), and leaves a node that has it
/// already alone (`STILL <epoch>`), as Redis answers.
#[test]
fn bumpepoch_gives_the_node_the_newest_config_epoch_once() {
    let _turn = many_nodes();
    let nodes: Vec<Shoal> = (0..3).map(|_| cluster_node()).collect();
    create(&nodes, 0);
    let (a, b) = (node_id(&nodes[0]), node_id(&nodes[1]));
    assert_eq!(
        nodes[0].raw().call(&["CLUSTER", "BUMPEPOCH", "x"]),
        "-ERR wrong number of arguments for 'cluster|bumpepoch' command\r\n"
    );
    // The first node ends with the greatest epoch, bumped or already so.
    let first = nodes[0].raw().call(&["CLUSTER", "BUMPEPOCH"]);
    let epoch_a: u64 = first
        .strip_prefix("+BUMPED ")
        .or_else(|| first.strip_prefix("+STILL "))
        .and_then(|e| e.trim_end().parse().ok())
        .unwrap_or_else(|| panic!("{first:?}"));
    assert!(epoch_a > 0, "{first:?}");
    assert_eq!(
        nodes[0].raw().call(&["CLUSTER", "BUMPEPOCH"]),
        format!("+STILL {epoch_a}\r\n")
    );
    // Once the second node sees that, its own bump goes past it.
    let deadline = Instant::now() + Duration::from_secs(10);
    while config_epoch_of(&nodes[1], &a) != Some(epoch_a) {
        assert!(
            Instant::now() < deadline,
            "the second node never saw epoch {epoch_a}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let second = nodes[1].raw().call(&["CLUSTER", "BUMPEPOCH"]);
    let epoch_b: u64 = second
        .strip_prefix("+BUMPED ")
        .and_then(|e| e.trim_end().parse().ok())
        .unwrap_or_else(|| panic!("{second:?}"));
    assert!(epoch_b > epoch_a, "{second:?} after {epoch_a}");
    assert_eq!(
        nodes[1].raw().call(&["CLUSTER", "BUMPEPOCH"]),
        format!("+STILL {epoch_b}\r\n")
    );
    assert_eq!(config_epoch_of(&nodes[1], &b), Some(epoch_b));
    while config_epoch_of(&nodes[0], &b) != Some(epoch_b) {
        assert!(
            Instant::now() < deadline,
            "the first node never saw epoch {epoch_b}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// CLUSTER SET-CONFIG-EPOCH as Redis answers it: a fresh node alone takes the epoch (it shows
/// it in CLUSTER NODES and INFO), once; bad arguments and a node that knows others get Redis's
/// errors. CLUSTER SAVECONFIG writes the configuration group's snapshot before it answers, on
/// a node alone and on a node of a cluster.
#[test]
fn set_config_epoch_on_a_fresh_node_and_saveconfig_writes_the_snapshot() {
    let _turn = many_nodes();
    let alone = cluster_node();
    let mut c = alone.raw();
    // Nothing formed yet: nothing stored to bring up to date.
    assert_eq!(c.call(&["CLUSTER", "SAVECONFIG"]), "+OK\r\n");
    assert_eq!(
        c.call(&["CLUSTER", "SAVECONFIG", "x"]),
        "-ERR wrong number of arguments for 'cluster|saveconfig' command\r\n"
    );
    assert_eq!(
        c.call(&["CLUSTER", "SET-CONFIG-EPOCH"]),
        "-ERR wrong number of arguments for 'cluster|set-config-epoch' command\r\n"
    );
    assert_eq!(
        c.call(&["CLUSTER", "SET-CONFIG-EPOCH", "-1"]),
        "-ERR Invalid config epoch specified: -1\r\n"
    );
    assert_eq!(
        c.call(&["CLUSTER", "SET-CONFIG-EPOCH", "abc"]),
        "-ERR value is not an integer or out of range\r\n"
    );
    assert_eq!(c.call(&["CLUSTER", "SET-CONFIG-EPOCH", "5"]), "+OK\r\n");
    let me = node_id(&alone);
    assert_eq!(config_epoch_of(&alone, &me), Some(5));
    let info = c.call(&["CLUSTER", "INFO"]);
    assert!(info.contains("cluster_my_epoch:5\r\n"), "{info}");
    assert_eq!(
        c.call(&["CLUSTER", "SET-CONFIG-EPOCH", "6"]),
        "-ERR Node config epoch is already non-zero\r\n"
    );
    // A group of a few entries has no snapshot of its own yet.
    let snapshot = alone.dir.join("raft").join("snapshot");
    assert!(!snapshot.exists(), "a snapshot before SAVECONFIG");
    assert_eq!(c.call(&["CLUSTER", "SAVECONFIG"]), "+OK\r\n");
    let saved = std::fs::read(&snapshot).expect("SAVECONFIG wrote the group's snapshot");
    let text = String::from_utf8_lossy(&saved);
    assert!(text.contains(&me), "the snapshot names the node: {text}");
    assert!(
        text.contains("\"config_epoch\":5"),
        "with its epoch: {text}"
    );

    let nodes: Vec<Shoal> = (0..3).map(|_| cluster_node()).collect();
    create(&nodes, 0);
    assert_eq!(
        nodes[1].raw().call(&["CLUSTER", "SET-CONFIG-EPOCH", "9"]),
        "-ERR The user can assign a config epoch only when the node does not know any other \
         node.\r\n"
    );
    let snapshot = nodes[1].dir.join("raft").join("snapshot");
    assert_eq!(nodes[1].raw().call(&["CLUSTER", "SAVECONFIG"]), "+OK\r\n");
    let saved = std::fs::read(&snapshot).expect("SAVECONFIG wrote the group's snapshot");
    let text = String::from_utf8_lossy(&saved);
    for n in &nodes {
        assert!(text.contains(&node_id(n)), "the snapshot names every node");
    }
}

/// The masters' config epochs in a node's CLUSTER NODES.
fn master_epochs(node: &Shoal) -> Vec<u64> {
    let nodes = node.raw().call(&["CLUSTER", "NODES"]);
    nodes
        .lines()
        .filter(|l| l.contains("master"))
        .filter_map(|l| l.split(' ').nth(6)?.parse().ok())
        .collect()
}

/// `redis-cli --cluster create` as an operator runs it: it assigns each node its slots and its
/// config epoch (which forms a group of one on each shoal node), then has every node meet the
/// first. Each lone node then leaves its group of one for the first node's and takes its slots
/// and an epoch of its own there, so the tool's own check passes, the replicas follow their
/// primaries, and a cluster client writes and reads keys of every slot. `--cluster add-node`
/// (the new node meets the cluster) adds a primary and a replica; `--cluster del-node` (FORGET
/// to every other node, then RESET to the node) removes them, and they are fresh nodes again.
#[test]
fn redis_cli_cluster_create_add_node_and_del_node_on_shoal_nodes() {
    let _turn = many_nodes();
    const KEYS: usize = 1000;
    let all: Vec<Shoal> = (0..8).map(|_| cluster_node()).collect();
    let (nodes, extra) = all.split_at(6);
    let out = Command::new("redis-cli")
        .args(["--cluster", "create"])
        .args(nodes.iter().map(|n| n.addr()))
        .args(["--cluster-replicas", "1", "--cluster-yes"])
        .output()
        .expect("redis-cli (apt-get install redis-tools)");
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(
        out.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(text.contains("[OK] All 16384 slots covered."), "{text}");
    assert!(
        text.contains("[OK] All nodes agree about slots configuration."),
        "{text}"
    );
    for n in nodes {
        let view = n.raw().call(&["CLUSTER", "NODES"]);
        assert_eq!(view.matches("master").count(), 3, "{view}");
        assert_eq!(view.matches("slave").count(), 3, "{view}");
        assert!(
            n.raw()
                .call(&["CLUSTER", "INFO"])
                .contains("cluster_state:ok\r\n")
        );
        let mut epochs = master_epochs(n);
        epochs.sort_unstable();
        epochs.dedup();
        assert_eq!(epochs.len(), 3, "each master its own epoch: {view}");
        assert_eq!(info_field(n, "cluster", "shoal_cluster_formed"), "1");
    }
    let check = Command::new("redis-cli")
        .args(["--cluster", "check", &nodes[4].addr()])
        .output()
        .expect("redis-cli");
    let t = String::from_utf8_lossy(&check.stdout);
    assert!(check.status.success(), "{t}");
    assert!(t.contains("[OK] All 16384 slots covered."), "{t}");
    let mut c = fill(&nodes[2], KEYS);
    read_back(&mut c, KEYS, 7);
    for r in &nodes[3..] {
        let port: u16 = info_field(r, "replication", "master_port").parse().unwrap();
        let p = nodes[..3]
            .iter()
            .find(|n| n.port == port)
            .expect("a primary");
        common::wait_until("a replica holds its primary's keys", || {
            q::<u64>(&mut r.client(), &["DBSIZE"]) == q::<u64>(&mut p.client(), &["DBSIZE"])
        });
    }

    let cli = |args: &[&str]| {
        let out = Command::new("redis-cli")
            .arg("--cluster")
            .args(args)
            .output()
            .expect("redis-cli");
        let text = String::from_utf8_lossy(&out.stdout).to_string();
        assert!(out.status.success(), "redis-cli --cluster {args:?}: {text}");
        text
    };
    let primary = node_id(&nodes[1]);
    let t = cli(&["add-node", &extra[0].addr(), &nodes[0].addr()]);
    assert!(t.contains("[OK] New node added correctly."), "{t}");
    let t = cli(&[
        "add-node",
        &extra[1].addr(),
        &nodes[2].addr(),
        "--cluster-slave",
        "--cluster-master-id",
        &primary,
    ]);
    assert!(t.contains("[OK] New node added correctly."), "{t}");
    let (new_primary, new_replica) = (node_id(&extra[0]), node_id(&extra[1]));
    common::wait_until("every node knows the two new ones", || {
        all.iter().all(|n| {
            let view = n.raw().call(&["CLUSTER", "NODES"]);
            view.matches(" connected").count() == 8
                && shows_primary_of(&view, &primary, &new_replica)
        })
    });
    common::wait_until("the new replica holds its primary's keys", || {
        q::<u64>(&mut extra[1].client(), &["DBSIZE"])
            == q::<u64>(&mut nodes[1].client(), &["DBSIZE"])
    });
    for (gone, id) in [(&extra[1], &new_replica), (&extra[0], &new_primary)] {
        let t = cli(&["del-node", &nodes[0].addr(), id]);
        assert!(t.contains("Sending CLUSTER RESET SOFT"), "{t}");
        for n in nodes {
            common::wait_until("the others forgot the node", || {
                !n.raw().call(&["CLUSTER", "NODES"]).contains(id.as_str())
            });
        }
        let view = gone.raw().call(&["CLUSTER", "NODES"]);
        assert_eq!(view.matches(" connected").count(), 1, "{view}");
        assert!(view.contains("myself,master"), "{view}");
        assert_eq!(info_field(gone, "cluster", "shoal_cluster_formed"), "0");
        assert_eq!(q::<u64>(&mut gone.client(), &["DBSIZE"]), 0);
    }
    // A FORGET of a node the cluster removed is done; of a node never known, an error.
    assert_eq!(
        nodes[3].raw().call(&["CLUSTER", "FORGET", &new_primary]),
        "+OK\r\n"
    );
    assert_eq!(
        nodes[3].raw().call(&["CLUSTER", "FORGET", &"e".repeat(40)]),
        format!("-ERR Unknown node {}\r\n", "e".repeat(40))
    );
    let t = cli(&["check", &nodes[5].addr()]);
    assert!(t.contains("[OK] All 16384 slots covered."), "{t}");
    assert_eq!(t.matches("M: ").count(), 3, "{t}");
    // A removed node can be added again.
    let t = cli(&["add-node", &extra[0].addr(), &nodes[4].addr()]);
    assert!(t.contains("[OK] New node added correctly."), "{t}");
    common::wait_until("the node is back", || {
        nodes[0]
            .raw()
            .call(&["CLUSTER", "NODES"])
            .contains(new_primary.as_str())
    });
}

/// CLUSTER MEET works from either side, as Redis's: a node alone in the group its ADDSLOTS
/// formed meets another such node and joins it with its slots; a node of that cluster meets a
/// lone node with only a config epoch, which joins too; a fresh node meets the cluster and is
/// added. A lone node that holds keys is refused and keeps its slots and keys.
#[test]
fn cluster_meet_joins_lone_and_fresh_nodes_from_either_side() {
    let _turn = many_nodes();
    let [a, b, c, d, e]: [Shoal; 5] = std::array::from_fn(|_| cluster_node());
    let meet = |from: &Shoal, to: &Shoal| {
        from.raw()
            .call(&["CLUSTER", "MEET", "127.0.0.1", &to.port.to_string()])
    };
    for (n, range) in [
        (&a, ["0", "5000"]),
        (&b, ["5001", "16383"]),
        (&d, ["0", "16383"]),
    ] {
        assert_eq!(
            n.raw()
                .call(&["CLUSTER", "ADDSLOTSRANGE", range[0], range[1]]),
            "+OK\r\n"
        );
    }
    assert_eq!(
        c.raw().call(&["CLUSTER", "SET-CONFIG-EPOCH", "5"]),
        "+OK\r\n"
    );
    // d, a cluster of its own, holds a key.
    let key = "kept";
    assert_eq!(d.raw().call(&["SET", key, "kept"]), "+OK\r\n");

    // Two lone nodes: the one asked leaves its group for the other's, with its slots.
    assert_eq!(meet(&a, &b), "+OK\r\n");
    let (ida, idb, idc, idd, ide) = (
        node_id(&a),
        node_id(&b),
        node_id(&c),
        node_id(&d),
        node_id(&e),
    );
    let owns = |view: &str, id: &str, slots: &str| {
        view.lines()
            .any(|l| l.starts_with(id) && l.ends_with(&format!(" {slots}")))
    };
    for n in [&a, &b] {
        common::wait_until("both nodes show both", || {
            let view = n.raw().call(&["CLUSTER", "NODES"]);
            owns(&view, &ida, "0-5000") && owns(&view, &idb, "5001-16383")
        });
    }
    // A node of the cluster meets a lone node: the lone node is asked to join, and does.
    assert_eq!(meet(&b, &c), "+OK\r\n");
    // A fresh node meets the cluster: the cluster adds it.
    assert_eq!(meet(&e, &a), "+OK\r\n");
    for n in [&a, &b, &c, &e] {
        common::wait_until("every member knows every other", || {
            let view = n.raw().call(&["CLUSTER", "NODES"]);
            [&ida, &idb, &idc, &ide]
                .iter()
                .all(|id| view.contains(id.as_str()))
                && owns(&view, &ida, "0-5000")
                && owns(&view, &idb, "5001-16383")
        });
        assert_eq!(info_field(n, "cluster", "shoal_cluster_formed"), "1");
    }
    // The nodes that joined with slots or an epoch took the newest epochs.
    let (ea, eb, ec) = (
        config_epoch_of(&a, &ida).unwrap(),
        config_epoch_of(&a, &idb).unwrap(),
        config_epoch_of(&a, &idc).unwrap(),
    );
    assert!(ea > eb && ec > 5 && ec != ea, "{ea} {eb} {ec}");

    // A lone node holding keys does not join, from either side, and keeps what it had.
    for (from, to) in [(&a, &d), (&d, &a)] {
        let r = meet(from, to);
        assert!(r.starts_with("-ERR ") && r.contains("holds keys"), "{r:?}");
    }
    let view = d.raw().call(&["CLUSTER", "NODES"]);
    assert_eq!(view.matches(" connected").count(), 1, "{view}");
    assert!(owns(&view, &idd, "0-16383"), "{view}");
    assert_eq!(d.raw().call(&["GET", key]), "$4\r\nkept\r\n");
    assert!(!a.raw().call(&["CLUSTER", "NODES"]).contains(&idd));
}

/// FORGET of the same node sent to every node at once (as tools that remove a node may send
/// it): each one is done, whichever committed the removal; none answers `Unknown node`.
#[test]
fn forget_sent_to_every_node_at_once_succeeds_on_each() {
    let _turn = many_nodes();
    let nodes: Vec<Shoal> = (0..3).map(|_| cluster_node()).collect();
    create(&nodes, 0);
    for round in 0..3 {
        let extra = cluster_node();
        assert_eq!(
            extra.raw().call(&[
                "CLUSTER",
                "MEET",
                "127.0.0.1",
                &nodes[round].port.to_string()
            ]),
            "+OK\r\n"
        );
        let id = extra.raw().call(&["CLUSTER", "MYID"]);
        let id = id.lines().nth(1).unwrap().to_string();
        for n in &nodes {
            common::wait_until("every node knows the new one", || {
                n.raw().call(&["CLUSTER", "NODES"]).contains(id.as_str())
            });
        }
        let replies: Vec<String> = std::thread::scope(|s| {
            let calls: Vec<_> = nodes
                .iter()
                .map(|n| {
                    let (mut r, id) = (n.raw(), id.clone());
                    s.spawn(move || r.call(&["CLUSTER", "FORGET", &id]))
                })
                .collect();
            calls.into_iter().map(|c| c.join().unwrap()).collect()
        });
        assert!(
            replies.iter().all(|r| r == "+OK\r\n"),
            "round {round}: {replies:?}"
        );
        for n in &nodes {
            common::wait_until("every node forgot it", || {
                !n.raw().call(&["CLUSTER", "NODES"]).contains(id.as_str())
            });
            common::wait_until("it left the configuration group", || {
                info_field(n, "cluster", "shoal_raft_learners") == "0"
                    && info_field(n, "cluster", "shoal_raft_voters") == "3"
            });
        }
    }
}
