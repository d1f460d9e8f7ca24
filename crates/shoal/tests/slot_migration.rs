//! Atomic slot migration on the wire (`CLUSTER MIGRATESLOTS`): slots move between the primaries
//! of a cluster formed by `shoal cluster create` while clients keep writing single keys, multi-key
//! commands on hash tags and transactions; they see redirects only, no acknowledged write is lost,
//! and the slot digests of source and target are compared at the flip
//! (`cluster-migration-verify yes`). A source invalidates what tracking clients read of the
//! slots it gave away.

mod common;

use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::time::{Duration, Instant};

use common::{Shoal, q, wait_until};

/// Tests that run several nodes take turns (two cores).
static MANY_NODES: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn many_nodes() -> std::sync::MutexGuard<'static, ()> {
    MANY_NODES.lock().unwrap_or_else(|p| p.into_inner())
}

/// Longest a load thread runs, whatever happens.
const LOAD_MAX: Duration = Duration::from_secs(60);

fn node() -> Shoal {
    Shoal::start(&[
        "--cluster-enabled",
        "yes",
        "--cluster-migration-verify",
        "yes",
    ])
}

fn create(nodes: &[Shoal]) {
    let out = Command::new(env!("CARGO_BIN_EXE_shoal"))
        .args(["cluster", "create", "--replicas", "0"])
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

fn id(n: &Shoal) -> String {
    q(&mut n.client(), &["CLUSTER", "MYID"])
}

/// The jobs `CLUSTER GETSLOTMIGRATIONS` lists, as field maps.
fn jobs(n: &Shoal) -> Vec<std::collections::HashMap<String, String>> {
    let v: Vec<Vec<String>> = q(&mut n.client(), &["CLUSTER", "GETSLOTMIGRATIONS"]);
    v.into_iter()
        .map(|kv| kv.chunks(2).map(|p| (p[0].clone(), p[1].clone())).collect())
        .collect()
}

fn wait_job_done(n: &Shoal, slots: &str) -> std::collections::HashMap<String, String> {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Some(j) = jobs(n).into_iter().find(|j| j["slot_ranges"] == slots)
            && j["state"] != "running"
            && j["state"] != "pausing"
        {
            return j;
        }
        assert!(
            Instant::now() < deadline,
            "the migration of {slots} did not end"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// What a load thread did: acknowledged writes it can check later, and every error it saw.
#[derive(Default)]
struct Load {
    /// INCRs acknowledged per counter key.
    counters: Vec<(String, u64)>,
    /// MSETs of two keys on one hash tag: the last value acknowledged per pair.
    pairs: Vec<(String, String, u64)>,
    /// Transactions (MULTI INCR a INCR b EXEC) acknowledged per pair.
    txs: Vec<(String, String, u64)>,
    errors: Vec<String>,
    redirects: u64,
}

/// Single-key INCRs and two-key MSETs through redis-rs's cluster client, which follows
/// redirects itself; any error it returns is counted.
fn run_cluster_load(url: String, t: usize, stop: Arc<AtomicBool>) -> Load {
    let client = common::cluster_client(vec![url]).expect("cluster client");
    let mut c = client.get_connection().expect("cluster connection");
    let mut load = Load {
        counters: (0..64).map(|k| (format!("ctr:{t}:{k}"), 0)).collect(),
        pairs: (0..32)
            .map(|k| (format!("{{p{t}:{k}}}.a"), format!("{{p{t}:{k}}}.b"), 0))
            .collect(),
        ..Load::default()
    };
    let started = Instant::now();
    let mut i = 0u64;
    while !stop.load(Relaxed) && started.elapsed() < LOAD_MAX {
        i += 1;
        let k = (i as usize) % load.counters.len();
        match redis::cmd("INCR")
            .arg(&load.counters[k].0)
            .query::<u64>(&mut c)
        {
            Ok(_) => load.counters[k].1 += 1,
            Err(e) => load.errors.push(format!("INCR: {e}")),
        }
        let p = (i as usize) % load.pairs.len();
        let (a, b) = (load.pairs[p].0.clone(), load.pairs[p].1.clone());
        match redis::cmd("MSET")
            .arg(&a)
            .arg(i)
            .arg(&b)
            .arg(i)
            .query::<()>(&mut c)
        {
            Ok(()) => load.pairs[p].2 = i,
            Err(e) => load.errors.push(format!("MSET: {e}")),
        }
    }
    load
}

/// Transactions on a plain connection, redirected by hand as a cluster client does: a `-MOVED`
/// at any step means the transaction did not run; it is sent again to the node named.
fn run_tx_load(first: String, t: usize, stop: Arc<AtomicBool>) -> Load {
    let mut load = Load {
        txs: (0..16)
            .map(|k| (format!("{{t{t}:{k}}}.x"), format!("{{t{t}:{k}}}.y"), 0))
            .collect(),
        ..Load::default()
    };
    let connect = |addr: &str| {
        redis::Client::open(format!("redis://{addr}/"))
            .and_then(|c| c.get_connection())
            .expect("connect")
    };
    let mut owners: std::collections::HashMap<usize, String> = Default::default();
    let started = Instant::now();
    let mut i = 0usize;
    while !stop.load(Relaxed) && started.elapsed() < LOAD_MAX {
        i += 1;
        let k = i % load.txs.len();
        let (x, y) = (load.txs[k].0.clone(), load.txs[k].1.clone());
        let mut tries = 0;
        loop {
            tries += 1;
            if tries > 10 {
                load.errors
                    .push("a transaction was redirected 10 times".into());
                break;
            }
            let addr = owners.get(&k).cloned().unwrap_or_else(|| first.clone());
            let mut c = connect(&addr);
            match tx_once(&mut c, &x, &y) {
                Ok((a, b)) => {
                    if a != b {
                        load.errors.push(format!("transaction saw {a} and {b}"));
                    }
                    load.txs[k].2 += 1;
                    break;
                }
                Err(e) if e.kind() == redis::ErrorKind::Server(redis::ServerErrorKind::Moved) => {
                    load.redirects += 1;
                    let to = e.redirect_node().map(|(a, _)| a.to_string());
                    match to {
                        Some(a) => {
                            owners.insert(k, a);
                        }
                        None => {
                            load.errors.push(format!("MOVED without an address: {e}"));
                            break;
                        }
                    }
                }
                Err(e) => {
                    load.errors.push(format!("transaction: {e}"));
                    break;
                }
            }
        }
    }
    load
}

/// `MULTI`, `INCR x`, `INCR y`, `EXEC`, one reply at a time: a redirect while queueing (or of
/// `EXEC` itself) comes back as that redirect, and nothing ran.
fn tx_once(c: &mut redis::Connection, x: &str, y: &str) -> redis::RedisResult<(u64, u64)> {
    redis::cmd("MULTI").query::<()>(c)?;
    for k in [x, y] {
        if let Err(e) = redis::cmd("INCR").arg(k).query::<String>(c) {
            let _ = redis::cmd("DISCARD").query::<()>(c);
            return Err(e);
        }
    }
    redis::cmd("EXEC").query(c)
}

#[test]
fn slots_move_atomically_under_load_with_no_error_and_no_lost_write() {
    const KEYS: usize = 8000;
    let _turn = many_nodes();
    let nodes: Vec<Shoal> = (0..3).map(|_| node()).collect();
    create(&nodes);
    let client = common::cluster_client(vec![nodes[0].url()]).unwrap();
    let mut c = client.get_connection().unwrap();
    for i in 0..KEYS {
        let _: () = redis::cmd("SET")
            .arg(format!("key:{i}"))
            .arg(i)
            .query(&mut c)
            .unwrap();
    }
    let (source, target) = (&nodes[0], &nodes[1]);
    let source_keys_before: u64 = q(&mut source.client(), &["DBSIZE"]);
    let stop = Arc::new(AtomicBool::new(false));
    let mut loads = Vec::new();
    for t in 0..3 {
        let (url, stop) = (nodes[t % 3].url(), stop.clone());
        loads.push(std::thread::spawn(move || run_cluster_load(url, t, stop)));
    }
    for t in 0..2 {
        let (addr, stop) = (nodes[0].addr(), stop.clone());
        loads.push(std::thread::spawn(move || run_tx_load(addr, t, stop)));
    }
    std::thread::sleep(Duration::from_millis(300));
    // Most of the source's slots, in two ranges, to the target.
    let target_id = id(target);
    let r: String = q(
        &mut source.client(),
        &[
            "CLUSTER",
            "MIGRATESLOTS",
            "SLOTSRANGE",
            "0",
            "2999",
            "4000",
            "4999",
            "NODE",
            &target_id,
        ],
    );
    assert_eq!(r, "OK");
    let job = wait_job_done(source, "0-2999 4000-4999");
    // Part of them moves on at once to the third node, still under load.
    let third_id = id(&nodes[2]);
    let r: String = q(
        &mut target.client(),
        &[
            "CLUSTER",
            "MIGRATESLOTS",
            "SLOTSRANGE",
            "0",
            "999",
            "NODE",
            &third_id,
        ],
    );
    assert_eq!(r, "OK");
    let second = wait_job_done(target, "0-999");
    assert_eq!(second["state"], "success", "{second:?}");
    std::thread::sleep(Duration::from_millis(300));
    stop.store(true, Relaxed);
    let loads: Vec<Load> = loads.into_iter().map(|h| h.join().unwrap()).collect();
    assert_eq!(job["state"], "success", "{job:?}");
    assert_eq!(job["operation"], "EXPORT");
    assert_eq!(job["target_node"], target_id);
    let sent: u64 = job["keys_sent"].parse().unwrap();
    let total: u64 = job["keys_total"].parse().unwrap();
    assert!(total > 0 && sent >= total, "{job:?}");
    let pause_us: u64 = job["pause_us"].parse().unwrap();
    assert!(pause_us > 0, "{job:?}");
    // The target lists the same job as an import that succeeded.
    let imported = jobs(target)
        .into_iter()
        .find(|j| j["name"] == job["name"])
        .expect("the import on the target");
    assert_eq!(imported["operation"], "IMPORT");
    assert_eq!(imported["state"], "success");

    // Clients saw redirects only.
    let errors: Vec<&String> = loads.iter().flat_map(|l| &l.errors).collect();
    assert!(errors.is_empty(), "errors seen by clients: {errors:?}");
    let txs: u64 = loads.iter().flat_map(|l| &l.txs).map(|t| t.2).sum();
    assert!(txs > 0, "no transaction ran");

    // Every acknowledged write is there, wherever its slot is now.
    let mut c = client.get_connection().unwrap();
    for l in &loads {
        for (k, n) in &l.counters {
            let v: Option<u64> = redis::cmd("GET").arg(k).query(&mut c).unwrap();
            assert_eq!(v.unwrap_or(0), *n, "{k}");
        }
        for (a, b, v) in l.pairs.iter().filter(|p| p.2 > 0) {
            let (va, vb): (u64, u64) = redis::cmd("MGET").arg(a).arg(b).query(&mut c).unwrap();
            assert_eq!((va, vb), (*v, *v), "{a} {b}");
        }
        for (x, y, n) in l.txs.iter().filter(|t| t.2 > 0) {
            let (vx, vy): (u64, u64) = redis::cmd("MGET").arg(x).arg(y).query(&mut c).unwrap();
            assert_eq!((vx, vy), (*n, *n), "{x} {y}");
        }
    }
    for i in (0..KEYS).step_by(7) {
        let v: usize = redis::cmd("GET")
            .arg(format!("key:{i}"))
            .query(&mut c)
            .unwrap();
        assert_eq!(v, i);
    }

    // Every node names the new owners; the nodes the slots left kept nothing of them.
    let owns = |n: &Shoal, first: u16, last: u16, port: u16| {
        let slots: Vec<(u16, u16, Vec<redis::Value>)> = q(&mut n.client(), &["CLUSTER", "SLOTS"]);
        slots.iter().any(|(a, b, owner)| {
            *a <= first
                && *b >= last
                && matches!(&owner[1], redis::Value::Int(p) if *p as u16 == port)
        })
    };
    for n in &nodes {
        wait_until("every node applied the moves", || {
            owns(n, 0, 999, nodes[2].port)
                && owns(n, 1000, 2999, target.port)
                && owns(n, 4000, 4999, target.port)
                && owns(n, 3000, 3999, source.port)
        });
    }
    // (The job reports success at the flip; the keys left behind go right after.)
    for slot in ["0", "1500", "2999", "4000", "4999"] {
        wait_until("the source dropped the moved slots' keys", || {
            q::<u64>(&mut source.client(), &["CLUSTER", "COUNTKEYSINSLOT", slot]) == 0
        });
    }
    for slot in ["0", "500", "999"] {
        wait_until("the first target dropped the slots it passed on", || {
            q::<u64>(&mut target.client(), &["CLUSTER", "COUNTKEYSINSLOT", slot]) == 0
        });
    }
    wait_until("the source holds only the slots it kept", || {
        q::<u64>(&mut source.client(), &["DBSIZE"]) < source_keys_before / 2
    });
    // A slot the source kept is still served there.
    let kept = (0..KEYS)
        .find(|i| {
            let slot: u16 = q(
                &mut source.client(),
                &["CLUSTER", "KEYSLOT", &format!("key:{i}")],
            );
            (3000..4000).contains(&slot)
        })
        .expect("a key in a slot the source kept");
    let v: usize = q(&mut source.client(), &["GET", &format!("key:{kept}")]);
    assert_eq!(v, kept);
    println!(
        "moved {total} keys ({sent} sent), writes paused {pause_us} us, {txs} transactions, {} redirects",
        loads.iter().map(|l| l.redirects).sum::<u64>()
    );
    let check = Command::new("redis-cli")
        .args(["--cluster", "check", &nodes[2].addr()])
        .output()
        .expect("redis-cli");
    let t = String::from_utf8_lossy(&check.stdout);
    assert!(check.status.success(), "{t}");
    assert!(t.contains("[OK] All 16384 slots covered."), "{t}");
}

#[test]
fn migrateslots_refuses_what_it_cannot_do() {
    let _turn = many_nodes();
    let nodes: Vec<Shoal> = (0..3).map(|_| node()).collect();
    create(&nodes);
    let (a, b) = (id(&nodes[0]), id(&nodes[1]));
    let mut r = nodes[0].raw();
    assert_eq!(
        r.call(&["CLUSTER", "MIGRATESLOTS", "SLOTSRANGE", "0", "10", "NODE"]),
        "-ERR wrong number of arguments for 'cluster|migrateslots' command\r\n"
    );
    assert_eq!(
        r.call(&["CLUSTER", "MIGRATESLOTS", "SLOTSRANGE", "0", "10", "TO", &b]),
        "-ERR syntax error\r\n"
    );
    assert_eq!(
        r.call(&[
            "CLUSTER",
            "MIGRATESLOTS",
            "SLOTSRANGE",
            "10",
            "0",
            "NODE",
            &b
        ]),
        "-ERR start slot number 10 is greater than end slot number 0\r\n"
    );
    assert_eq!(
        r.call(&[
            "CLUSTER",
            "MIGRATESLOTS",
            "SLOTSRANGE",
            "0",
            "16384",
            "NODE",
            &b
        ]),
        "-ERR Invalid or out of range slot\r\n"
    );
    assert_eq!(
        r.call(&[
            "CLUSTER",
            "MIGRATESLOTS",
            "SLOTSRANGE",
            "0",
            "10",
            "NODE",
            &a
        ]),
        "-ERR Can't migrate slots to myself\r\n"
    );
    let unknown = "0".repeat(40);
    assert_eq!(
        r.call(&[
            "CLUSTER",
            "MIGRATESLOTS",
            "SLOTSRANGE",
            "0",
            "10",
            "NODE",
            &unknown
        ]),
        format!("-ERR Unknown node {unknown}\r\n")
    );
    // Slots of another node.
    assert_eq!(
        r.call(&[
            "CLUSTER",
            "MIGRATESLOTS",
            "SLOTSRANGE",
            "16000",
            "16001",
            "NODE",
            &b
        ]),
        "-ERR I'm not the owner of hash slot 16000\r\n"
    );
    // The target's half is refused to a connection that did not begin an import.
    assert_eq!(
        nodes[1]
            .raw()
            .call(&["CLUSTER", "SYNCSLOTS", "LOAD", "garbage"]),
        "-ERR No slot import on this connection\r\n"
    );
    let mut t = nodes[1].raw();
    assert_eq!(
        t.call(&["CLUSTER", "SYNCSLOTS", "BEGIN", "x", &a, "0", "10"]),
        "+OK\r\n"
    );
    assert_eq!(
        t.call(&["CLUSTER", "SYNCSLOTS", "LOAD", "garbage"]),
        "-ERR corrupt snapshot: record tag\r\n"
    );
    // A key of a slot outside the import.
    assert_eq!(
        t.call(&["CLUSTER", "SYNCSLOTS", "DEL", "foo"]),
        "-ERR Key slot 12182 is not part of this import\r\n"
    );
    // A move the configuration refuses (the source's epoch is not 999) leaves things as they
    // were.
    assert_eq!(
        t.call(&["CLUSTER", "SYNCSLOTS", "FINISH", "999"]),
        format!("-ERR The config epoch of {a} changed since the move began\r\n")
    );
    assert_eq!(
        nodes[2].raw().call(&["CLUSTER", "COUNTKEYSINSLOT", "0"]),
        ":0\r\n"
    );
    let owner: Vec<(u16, u16, Vec<redis::Value>)> =
        q(&mut nodes[2].client(), &["CLUSTER", "SLOTS"]);
    assert!(
        owner.iter().any(|(s, _, o)| *s == 0
            && matches!(&o[1], redis::Value::Int(p) if *p as u16 == nodes[0].port))
    );
}

/// Writes `n` keys whose slots are in `slots` to `node` (their owner), pipelined; returns them.
fn fill_slots(node: &Shoal, slots: std::ops::Range<u16>, n: usize) -> Vec<String> {
    let keys: Vec<String> = (0..)
        .map(|i| format!("m:{i}"))
        .filter(|k| slots.contains(&shoal_keyspace::key_slot(k.as_bytes())))
        .take(n)
        .collect();
    let mut c = node.client();
    for chunk in keys.chunks(1000) {
        let mut p = redis::pipe();
        for k in chunk {
            p.set(k, k).ignore();
        }
        let () = p.query(&mut c).unwrap();
    }
    keys
}

#[test]
fn a_move_to_a_target_that_stops_answering_fails_and_the_source_keeps_serving() {
    let _turn = many_nodes();
    // A target silent for 5 × cluster-node-timeout counts as failed.
    let nodes: Vec<Shoal> = (0..3)
        .map(|_| Shoal::start(&["--cluster-enabled", "yes", "--cluster-node-timeout", "200"]))
        .collect();
    create(&nodes);
    let (source, target) = (&nodes[0], &nodes[1]);
    let keys = fill_slots(source, 0..1000, 2000);
    let target_id = id(target);
    target.signal("-STOP");
    let r: String = q(
        &mut source.client(),
        &[
            "CLUSTER",
            "MIGRATESLOTS",
            "SLOTSRANGE",
            "0",
            "999",
            "NODE",
            &target_id,
        ],
    );
    assert_eq!(r, "OK");
    let job = wait_job_done(source, "0-999");
    target.signal("-CONT");
    assert_eq!(job["state"], "failed", "{job:?}");
    assert!(job["message"].contains("connection failed"), "{job:?}");
    // The source still owns its slots, serves reads and takes writes.
    let mut c = source.client();
    for k in keys.iter().step_by(50) {
        let v: String = q(&mut c, &["GET", k]);
        assert_eq!(&v, k);
    }
    let _: () = q(&mut c, &["SET", &keys[0], "after"]);
    let slots: Vec<(u16, u16, Vec<redis::Value>)> = q(&mut target.client(), &["CLUSTER", "SLOTS"]);
    assert!(slots.iter().any(|(a, b, o)| *a == 0
        && *b >= 999
        && matches!(&o[1], redis::Value::Int(p) if *p as u16 == source.port)));
    // The target, running again, ended its half and holds nothing of the slots.
    wait_until("the target ended its import", || {
        jobs(target)
            .iter()
            .all(|j| j["state"] != "running" && j["state"] != "pausing")
    });
    let held: u64 = q(&mut target.client(), &["DBSIZE"]);
    assert_eq!(held, 0);
    // The same move succeeds now: once the configuration group has a leader again (the stopped
    // node may have led it), which can take an election; a move refused meanwhile is retried, as
    // an operator would.
    let mut outcome = None;
    for attempt in 0..20 {
        let started = common::try_q::<String>(
            &mut source.client(),
            &[
                "CLUSTER",
                "MIGRATESLOTS",
                "SLOTSRANGE",
                "0",
                "999",
                "NODE",
                &id(target),
            ],
        );
        if started.is_ok() {
            let deadline = Instant::now() + Duration::from_secs(60);
            let job = loop {
                let all = jobs(source);
                let mine: Vec<_> = all.iter().filter(|j| j["slot_ranges"] == "0-999").collect();
                let last = mine
                    .iter()
                    .max_by_key(|j| j["create_time"].parse::<u64>().unwrap_or(0))
                    .map(|j| (*j).clone());
                if mine.len() >= attempt + 2
                    && let Some(j) =
                        last.filter(|j| j["state"] != "running" && j["state"] != "pausing")
                {
                    break j;
                }
                assert!(Instant::now() < deadline, "the second move did not end");
                std::thread::sleep(Duration::from_millis(20));
            };
            if job["state"] == "success" {
                outcome = Some(job);
                break;
            }
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    let job = outcome.unwrap_or_else(|| panic!("the move never succeeded: {:?}", jobs(source)));
    assert_eq!(job["keys_sent"], keys.len().to_string(), "{job:?}");
    let held: u64 = q(&mut target.client(), &["DBSIZE"]);
    assert_eq!(held, keys.len() as u64);
    // The source's job ends when the new owner is committed; the target learns it from the
    // configuration group a moment later.
    let mut c = target.client();
    wait_until("the target serves the moved slots", || {
        common::try_q::<String>(&mut c, &["GET", &keys[0]]).is_ok_and(|v| v == "after")
    });
}

#[test]
fn a_move_whose_source_dies_leaves_one_owner_and_no_stray_keys() {
    const KEYS: usize = 30_000;
    let _turn = many_nodes();
    let nodes: Vec<Shoal> = (0..3).map(|_| node()).collect();
    create(&nodes);
    let (source, target) = (&nodes[0], &nodes[1]);
    let keys = fill_slots(source, 0..1000, KEYS);
    let r: String = q(
        &mut source.client(),
        &[
            "CLUSTER",
            "MIGRATESLOTS",
            "SLOTSRANGE",
            "0",
            "999",
            "NODE",
            &id(target),
        ],
    );
    assert_eq!(r, "OK");
    // Killed once the target's half has begun (killed sooner, the target may never hear of the
    // move, and there would be no import to end): with 30,000 keys to send, mostly mid-transfer.
    wait_until("the target started its import", || !jobs(target).is_empty());
    source.signal("-KILL");
    // The target's half ends (its connection closed, or the move committed).
    wait_until("the target ended its import", || {
        let js = jobs(target);
        !js.is_empty()
            && js
                .iter()
                .all(|j| j["state"] != "running" && j["state"] != "pausing")
    });
    let imported = jobs(target).remove(0);
    let slots: Vec<(u16, u16, Vec<redis::Value>)> = q(&mut target.client(), &["CLUSTER", "SLOTS"]);
    let owner_port = slots
        .iter()
        .find(|(a, b, _)| *a == 0 && *b >= 999)
        .and_then(|(_, _, o)| match &o[1] {
            redis::Value::Int(p) => Some(*p as u16),
            _ => None,
        })
        .expect("slots 0-999 have one owner");
    let held: u64 = q(&mut target.client(), &["DBSIZE"]);
    if owner_port == target.port {
        // The move committed before the source died: every key came along.
        assert_eq!(imported["state"], "success");
        assert_eq!(held, KEYS as u64);
        let v: String = q(&mut target.client(), &["GET", &keys[KEYS - 1]]);
        assert_eq!(v, keys[KEYS - 1]);
    } else {
        // It did not: the slots are still the (dead) source's and the target kept nothing.
        assert_eq!(owner_port, source.port);
        assert_eq!(imported["state"], "failed", "{imported:?}");
        // The import is marked failed first, then what it received is deleted slot by slot.
        let mut c = target.client();
        wait_until("the failed import's keys are deleted", || {
            common::try_q::<u64>(&mut c, &["DBSIZE"]) == Ok(0)
        });
    }
    println!(
        "source killed during its move: import {}",
        imported["state"]
    );
}

#[test]
fn a_source_invalidates_what_tracking_clients_read_of_the_slots_it_gave_away() {
    let _turn = many_nodes();
    let nodes: Vec<Shoal> = (0..3).map(|_| node()).collect();
    create(&nodes);
    let (source, target) = (&nodes[0], &nodes[1]);
    let moving = fill_slots(source, 0..100, 1).remove(0);
    let staying = fill_slots(source, 200..300, 1).remove(0);
    let mut r = source.raw();
    assert!(r.call(&["HELLO", "3"]).starts_with('%'));
    assert_eq!(r.call(&["CLIENT", "TRACKING", "on"]), "+OK\r\n");
    let bulk = |k: &str| format!("${}\r\n{k}\r\n", k.len());
    assert_eq!(r.call(&["GET", &moving]), bulk(&moving));
    assert_eq!(r.call(&["GET", &staying]), bulk(&staying));
    let target_id = id(target);
    let started: String = q(
        &mut source.client(),
        &[
            "CLUSTER",
            "MIGRATESLOTS",
            "SLOTSRANGE",
            "0",
            "99",
            "NODE",
            &target_id,
        ],
    );
    assert_eq!(started, "OK");
    assert_eq!(wait_job_done(source, "0-99")["state"], "success");
    // The moved key's invalidation, and nothing for the key that stayed.
    assert_eq!(
        String::from_utf8_lossy(&r.reply()),
        format!(">2\r\n$10\r\ninvalidate\r\n*1\r\n{}", bulk(&moving))
    );
    assert_eq!(r.call(&["PING"]), "+PONG\r\n");
}
