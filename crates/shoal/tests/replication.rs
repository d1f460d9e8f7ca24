//! Replication scenarios with real processes on loopback (DESIGN.md §4): replicas following a
//! primary under load, kill -9 and partial resync, backlog overflow, full copies under concurrent
//! writes, the sync strategy surviving the loss of the primary, the async loss window, FAILOVER under
//! load, `shoal verify` finding and repairing a divergence, and bad replication input.
//!
//! Every wait is bounded (`wait_until`), every process is stopped when its handle drops.

mod common;

use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::time::{Duration, Instant};

use common::{Shoal, caught_up, follow, info_value as field, q, wait_until};

fn info(c: &mut redis::Connection, section: &str) -> String {
    q(c, &["INFO", section])
}

fn num(c: &mut redis::Connection, section: &str, name: &str) -> u64 {
    common::info_u64(c, section, name)
}

fn digests(s: &Shoal) -> Vec<String> {
    let mut c = s.client();
    q(&mut c, &["SLOTDIGEST", "0", "16383"])
}

fn verify(primary: &Shoal, repair: bool) -> (i32, String) {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_shoal"));
    cmd.args(["verify", "--quiet", &primary.addr()]);
    if repair {
        cmd.arg("--repair");
    }
    let out = cmd.output().expect("run shoal verify");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
    )
}

fn kill9(s: &mut Shoal) {
    s.signal("-KILL");
    wait_until("process gone after kill -9", || !s.is_running());
}

/// A directory for a node's snapshot that outlives the node's process (for restarts).
struct Dir(std::path::PathBuf);

impl Dir {
    fn new(tag: &str) -> Dir {
        let d = std::env::temp_dir().join(format!(
            "shoal-repl-{tag}-{}-{}",
            std::process::id(),
            Instant::now().elapsed().as_nanos()
        ));
        std::fs::create_dir_all(&d).unwrap();
        Dir(d)
    }
    fn arg(&self) -> String {
        format!("dir={}", self.0.display())
    }
}

impl Drop for Dir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

#[test]
fn two_replicas_follow_a_primary_under_write_load_and_hold_equal_data() {
    let p = Shoal::start(&[]);
    let r1 = Shoal::start(&[]);
    let r2 = Shoal::start(&[]);
    let mut c = p.client();
    for i in 0..300 {
        let _: () = q(&mut c, &["SET", &format!("pre:{i}"), &format!("v{i}")]);
    }
    follow(&r1, &p);
    follow(&r2, &p);
    // Writes of every shape while the replicas stream: overwrite, counters, TTLs, deletes.
    let mut pipe = redis::pipe();
    for i in 0..2000 {
        match i % 5 {
            0 => pipe.cmd("SET").arg(format!("k:{i}")).arg(i).ignore(),
            1 => pipe.cmd("INCRBY").arg("counter").arg(i).ignore(),
            2 => pipe
                .cmd("SET")
                .arg(format!("t:{i}"))
                .arg("x")
                .arg("EX")
                .arg(1000)
                .ignore(),
            3 => pipe.cmd("DEL").arg(format!("k:{}", i - 3)).ignore(),
            _ => pipe.cmd("APPEND").arg("log").arg("x").ignore(),
        };
    }
    let _: () = pipe.query(&mut c).unwrap();
    caught_up(&r1, &p);
    caught_up(&r2, &p);
    let d = digests(&p);
    assert_eq!(d, digests(&r1), "replica 1 differs");
    assert_eq!(d, digests(&r2), "replica 2 differs");
    let mut rc = r1.client();
    let ttl: i64 = q(&mut rc, &["TTL", "t:2"]);
    assert!(
        ttl > 990 && ttl <= 1000,
        "absolute expiry replicated, ttl {ttl}"
    );
    let err = redis::cmd("SET")
        .arg("x")
        .arg("y")
        .query::<()>(&mut rc)
        .unwrap_err();
    assert!(
        err.to_string().to_lowercase().contains("read only"),
        "{err}"
    );
    assert_eq!(verify(&p, false).0, 0);
    let role: Vec<redis::Value> = q(&mut c, &["ROLE"]);
    assert_eq!(role[0], redis::Value::BulkString(b"master".to_vec()));
}

#[test]
fn replica_killed_with_kill9_and_restarted_resumes_with_a_partial_resync() {
    let p = Shoal::start(&[]);
    let dir = Dir::new("restart");
    let mut r = Shoal::start(&["--set", &dir.arg(), "--set", "save=1 1"]);
    follow(&r, &p);
    let mut c = p.client();
    for i in 0..500 {
        let _: () = q(&mut c, &["SET", &format!("a:{i}"), "v"]);
    }
    caught_up(&r, &p);
    // Wait for the replica's periodic snapshot to cover those writes.
    let mut rc = r.client();
    let saved_at: u64 = q(&mut rc, &["LASTSAVE"]);
    wait_until("replica snapshot saved", || {
        q::<u64>(&mut rc, &["LASTSAVE"]) > saved_at && dir.0.join("dump.shoal").exists()
    });
    kill9(&mut r);
    for i in 0..200 {
        let _: () = q(&mut c, &["SET", &format!("b:{i}"), "w"]);
    }
    let full_before = num(&mut c, "stats", "sync_full");
    let partial_before = num(&mut c, "stats", "sync_partial_ok");
    let r = Shoal::start(&[
        "--set",
        &dir.arg(),
        "--set",
        &format!("replicaof=127.0.0.1 {}", p.port),
    ]);
    let mut rc = r.client();
    wait_until("restarted replica link up", || {
        field(&info(&mut rc, "replication"), "master_link_status").as_deref() == Some("up")
    });
    caught_up(&r, &p);
    assert_eq!(
        num(&mut c, "stats", "sync_full"),
        full_before,
        "no full copy"
    );
    assert_eq!(num(&mut c, "stats", "sync_partial_ok"), partial_before + 1);
    assert_eq!(digests(&p), digests(&r));
}

#[test]
fn backlog_overflow_while_a_replica_is_away_forces_a_full_copy() {
    let p = Shoal::start(&["--set", "repl-backlog-size=16kb"]);
    let dir = Dir::new("overflow");
    let mut r = Shoal::start(&["--set", &dir.arg(), "--set", "save=1 1"]);
    follow(&r, &p);
    let mut c = p.client();
    let _: () = q(&mut c, &["SET", "seed", "1"]);
    caught_up(&r, &p);
    let mut rc = r.client();
    let saved_at: u64 = q(&mut rc, &["LASTSAVE"]);
    wait_until("replica snapshot saved", || {
        q::<u64>(&mut rc, &["LASTSAVE"]) > saved_at
    });
    kill9(&mut r);
    // Far more than the backlog holds.
    let big = "x".repeat(1000);
    for i in 0..100 {
        let _: () = q(&mut c, &["SET", &format!("big:{i}"), &big]);
    }
    let full_before = num(&mut c, "stats", "sync_full");
    let r = Shoal::start(&[
        "--set",
        &dir.arg(),
        "--set",
        &format!("replicaof=127.0.0.1 {}", p.port),
    ]);
    caught_up(&r, &p);
    assert_eq!(num(&mut c, "stats", "sync_full"), full_before + 1);
    assert!(num(&mut c, "stats", "sync_partial_err") >= 1);
    assert_eq!(digests(&p), digests(&r));
}

#[test]
fn full_copy_under_concurrent_writes_ends_with_equal_digests() {
    let p = Shoal::start(&[]);
    let r = Shoal::start(&[]);
    let mut c = p.client();
    for chunk in 0..20 {
        let mut pipe = redis::pipe();
        for i in 0..1000 {
            pipe.cmd("SET")
                .arg(format!("key:{}", chunk * 1000 + i))
                .arg("0123456789012345678901234567890123456789")
                .ignore();
        }
        let _: () = pipe.query(&mut c).unwrap();
    }
    let stop = Arc::new(AtomicBool::new(false));
    let writes = Arc::new(AtomicU64::new(0));
    let writer = {
        let (stop, writes, url) = (stop.clone(), writes.clone(), p.url());
        std::thread::spawn(move || {
            let mut c = common::connect(url);
            let mut i = 0u64;
            while !stop.load(Relaxed) && i < 200_000 {
                let k = format!("key:{}", (i * 7919) % 25_000);
                let _: () = redis::cmd(if i.is_multiple_of(4) { "DEL" } else { "INCR" })
                    .arg(&k)
                    .query(&mut c)
                    .or_else(|e| {
                        if e.to_string().contains("not an integer") {
                            Ok(())
                        } else {
                            Err(e)
                        }
                    })
                    .unwrap();
                i += 1;
                writes.store(i, Relaxed);
            }
        })
    };
    wait_until("writer started", || writes.load(Relaxed) > 100);
    follow(&r, &p);
    let at_link = writes.load(Relaxed);
    wait_until("writes continued after the copy", || {
        writes.load(Relaxed) > at_link + 2000
    });
    stop.store(true, Relaxed);
    writer.join().unwrap();
    caught_up(&r, &p);
    assert_eq!(digests(&p), digests(&r));
}

#[test]
fn sync_strategy_acknowledged_writes_survive_kill9_of_the_primary() {
    let mut p = Shoal::start(&[
        "--set",
        "write-strategy=sync",
        "--set",
        "min-replicas-ack=1",
        "--set",
        "ack-timeout-ms=5000",
    ]);
    let r = Shoal::start(&[]);
    follow(&r, &p);
    let mut c = p.client();
    let mut acked = Vec::new();
    for i in 0..500 {
        let key = format!("acked:{i}");
        let reply: redis::RedisResult<()> = redis::cmd("SET").arg(&key).arg(i).query(&mut c);
        if reply.is_ok() {
            acked.push(key);
        }
    }
    assert_eq!(acked.len(), 500, "every write acknowledged by the replica");
    kill9(&mut p);
    let mut rc = r.client();
    let _: () = q(&mut rc, &["REPLICAOF", "NO", "ONE"]);
    for key in &acked {
        let v: Option<String> = q(&mut rc, &["GET", key]);
        assert!(v.is_some(), "acknowledged write {key} lost after failover");
    }
}

#[test]
fn sync_strategy_reports_writes_not_confirmed_in_time() {
    let p = Shoal::start(&[
        "--set",
        "write-strategy=sync",
        "--set",
        "ack-timeout-ms=100",
    ]);
    let mut c = p.client();
    // No replica at all: the write is applied but cannot be confirmed.
    let err = redis::cmd("SET")
        .arg("k")
        .arg("v")
        .query::<()>(&mut c)
        .unwrap_err();
    assert!(err.to_string().contains("NOTDURABLE"), "{err}");
    let v: String = q(&mut c, &["GET", "k"]);
    assert_eq!(v, "v", "the write stays applied on the primary");
    let _: () = q(&mut c, &["DURABILITY", "async"]);
    let _: () = q(&mut c, &["SET", "k2", "v"]);
}

#[test]
fn async_strategy_loss_window_is_measured_when_the_primary_dies() {
    let mut p = Shoal::start(&[]);
    let r = Shoal::start(&[]);
    follow(&r, &p);
    let acked = Arc::new(AtomicU64::new(0));
    let writer = {
        let (acked, url) = (acked.clone(), p.url());
        std::thread::spawn(move || {
            let mut c = common::connect(url);
            for i in 0..1_000_000u64 {
                let ok: redis::RedisResult<()> =
                    redis::cmd("SET").arg(format!("w:{i}")).arg(i).query(&mut c);
                if ok.is_err() {
                    return;
                }
                acked.store(i + 1, Relaxed);
            }
        })
    };
    wait_until("some writes acknowledged", || acked.load(Relaxed) > 2000);
    kill9(&mut p);
    writer.join().unwrap();
    let total = acked.load(Relaxed);
    let mut rc = r.client();
    let _: () = q(&mut rc, &["REPLICAOF", "NO", "ONE"]);
    let present: u64 = q(&mut rc, &["DBSIZE"]);
    // One writer, one stream: the replica holds a prefix of the writes.
    assert!(present <= total + 1);
    if present > 0 {
        let last: Option<String> = q(&mut rc, &["GET", &format!("w:{}", present - 1)]);
        assert!(last.is_some(), "replica holds a prefix of the stream");
    }
    println!(
        "async loss window: {} of {} acknowledged writes missing on the replica after kill -9 of the primary",
        total.saturating_sub(present),
        total
    );
}

#[test]
fn failover_under_load_loses_no_acknowledged_write() {
    let p = Shoal::start(&[]);
    let r = Shoal::start(&[]);
    follow(&r, &p);
    let stop = Arc::new(AtomicBool::new(false));
    let acked = Arc::new(AtomicU64::new(0));
    let ports = [p.port, r.port];
    let writer = {
        let (stop, acked) = (stop.clone(), acked.clone());
        std::thread::spawn(move || {
            let conn = |port: u16| common::connect(format!("redis://127.0.0.1:{port}/"));
            let mut current = 0;
            let mut c = conn(ports[current]);
            let deadline = Instant::now() + Duration::from_secs(20);
            while !stop.load(Relaxed) && Instant::now() < deadline {
                match redis::cmd("INCR").arg("counter").query::<i64>(&mut c) {
                    Ok(_) => {
                        acked.fetch_add(1, Relaxed);
                    }
                    Err(e) if e.to_string().to_lowercase().contains("read only") => {
                        current = 1 - current;
                        c = conn(ports[current]);
                    }
                    Err(e) => panic!("unexpected error during failover: {e}"),
                }
            }
        })
    };
    wait_until("load running", || acked.load(Relaxed) > 500);
    let mut pc = p.client();
    let _: () = q(&mut pc, &["FAILOVER"]);
    let mut rc = r.client();
    wait_until("replica promoted", || {
        field(&info(&mut rc, "replication"), "role").as_deref() == Some("master")
    });
    wait_until("old primary follows the new one", || {
        field(&info(&mut pc, "replication"), "master_link_status").as_deref() == Some("up")
    });
    let at_switch = acked.load(Relaxed);
    wait_until("writes continue on the new primary", || {
        acked.load(Relaxed) > at_switch + 200
    });
    stop.store(true, Relaxed);
    writer.join().unwrap();
    let value: u64 = q(&mut rc, &["GET", "counter"]);
    assert_eq!(
        value,
        acked.load(Relaxed),
        "every acknowledged INCR is on the new primary"
    );
    caught_up(&p, &r);
    assert_eq!(digests(&p), digests(&r));
}

#[test]
fn verify_finds_a_divergence_injected_on_a_replica_and_repair_removes_it() {
    let p = Shoal::start(&[]);
    let r = Shoal::start(&[]);
    let mut c = p.client();
    for i in 0..1000 {
        let _: () = q(&mut c, &["SET", &format!("k{i}"), &format!("v{i}")]);
    }
    follow(&r, &p);
    caught_up(&r, &p);
    assert_eq!(verify(&p, false).0, 0);
    let mut rc = r.client();
    let _: () = q(&mut rc, &["CONFIG", "SET", "replica-read-only", "no"]);
    let _: () = q(&mut rc, &["SET", "k5", "diverged"]);
    let _: () = q(&mut rc, &["DEL", "k6"]);
    let _: () = q(&mut rc, &["SET", "extra", "1"]);
    let (code, out) = verify(&p, false);
    assert_eq!(code, 1, "{out}");
    for k in ["\"k5\"", "\"k6\"", "\"extra\""] {
        assert!(out.contains(k), "verify output misses {k}: {out}");
    }
    let (code, out) = verify(&p, true);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("3 repaired"), "{out}");
    assert_eq!(verify(&p, false).0, 0);
    let v: String = q(&mut rc, &["GET", "k5"]);
    assert_eq!(v, "v5");
    let e: i64 = q(&mut rc, &["EXISTS", "extra"]);
    assert_eq!(e, 0);
}

#[test]
fn bad_replication_input_gets_a_full_copy_or_an_error_never_corrupts_the_primary() {
    let p = Shoal::start(&["--requirepass", "pw"]);
    let mut raw = p.raw();
    raw.call(&["AUTH", "pw"]);
    // Unknown replication id and an offset outside the backlog: a full copy.
    raw.cmd(&[
        b"PSYNC",
        b"0123456789012345678901234567890123456789",
        b"999999",
    ]);
    let mut line = Vec::new();
    wait_until("FULLRESYNC line", || {
        let mut b = [0u8; 1];
        use std::io::Read;
        while !line.ends_with(b"\r\n") {
            if raw.stream.read(&mut b).unwrap_or(0) == 0 {
                return false;
            }
            line.push(b[0]);
        }
        true
    });
    assert!(
        String::from_utf8_lossy(&line).starts_with("+FULLRESYNC "),
        "{line:?}"
    );
    // Garbage instead of acknowledgements: the link is dropped, the primary keeps serving.
    use std::io::Write;
    raw.stream.write_all(b"*1\r\n+garbage\r\n").unwrap();
    let mut other = p.raw();
    assert_eq!(other.call(&["AUTH", "pw"]), "+OK\r\n");
    assert_eq!(other.call(&["PING"]), "+PONG\r\n");
    assert_eq!(other.call(&["SET", "k", "v"]), "+OK\r\n");
    // A replica with the wrong password never links and never touches the primary's data.
    let r = Shoal::start(&["--set", "masterauth=wrong"]);
    let mut rc = r.client();
    let _: () = q(&mut rc, &["REPLICAOF", "127.0.0.1", &p.port.to_string()]);
    wait_until("a failed link attempt", || {
        num(&mut rc, "replication", "shoal_link_failures") >= 1
    });
    assert_eq!(
        field(&info(&mut rc, "replication"), "master_link_status").as_deref(),
        Some("down")
    );
    assert_eq!(other.call(&["GET", "k"]), "$1\r\nv\r\n");
}

#[test]
fn a_primary_restarted_empty_does_not_wipe_its_replica() {
    let mut p = Shoal::start(&[]);
    let port = p.port;
    let r = Shoal::start(&[]);
    let mut c = p.client();
    for i in 0..100 {
        let _: () = q(&mut c, &["SET", &format!("k{i}"), "v"]);
    }
    follow(&r, &p);
    caught_up(&r, &p);
    kill9(&mut p);
    // Same port, no data.
    let _p2 = Shoal::start(&["--set", &format!("port={port}")]);
    let mut rc = r.client();
    // The replica reconnects, is offered a full copy of nothing, and refuses it.
    wait_until("empty full copy refused", || {
        num(&mut rc, "replication", "shoal_empty_copies_refused") >= 1
    });
    let keys: u64 = q(&mut rc, &["DBSIZE"]);
    assert_eq!(keys, 100, "replica data kept");
    assert_eq!(
        field(&info(&mut rc, "replication"), "master_link_status").as_deref(),
        Some("down")
    );
}

#[test]
fn replication_links_are_listed_as_clients_and_client_kill_type_drops_them() {
    let primary = Shoal::start(&[]);
    let replica = Shoal::start(&[]);
    follow(&replica, &primary);
    let mut p = primary.client();
    let mut r = replica.client();
    let _: () = q(&mut p, &["SET", "k", "1"]);
    caught_up(&replica, &primary);
    // The primary lists its replica with flag S, the replica its primary with flag M.
    let listed: String = q(&mut p, &["CLIENT", "LIST", "TYPE", "replica"]);
    assert_eq!(listed.lines().count(), 1, "{listed}");
    assert!(listed.contains(" flags=S "), "{listed}");
    let listed: String = q(&mut p, &["CLIENT", "LIST", "TYPE", "slave"]);
    assert_eq!(listed.lines().count(), 1, "{listed}");
    let normal: String = q(&mut p, &["CLIENT", "LIST", "TYPE", "normal"]);
    assert!(!normal.contains("flags=S"), "{normal}");
    let master: String = q(&mut r, &["CLIENT", "LIST", "TYPE", "master"]);
    assert_eq!(master.lines().count(), 1, "{master}");
    assert!(master.contains(" flags=M "), "{master}");
    assert!(
        master.contains(&format!("addr=127.0.0.1:{}", primary.port)),
        "{master}"
    );
    // Killing the link from either side drops it; the replica reconnects and continues.
    let partial_before = num(&mut p, "stats", "sync_partial_ok");
    let killed: i64 = q(&mut p, &["CLIENT", "KILL", "TYPE", "replica"]);
    assert_eq!(killed, 1);
    wait_until("replica resumed after CLIENT KILL TYPE replica", || {
        num(&mut p, "stats", "sync_partial_ok") > partial_before
    });
    let killed: i64 = q(&mut r, &["CLIENT", "KILL", "TYPE", "master"]);
    assert_eq!(killed, 1);
    wait_until("replica resumed after CLIENT KILL TYPE master", || {
        num(&mut p, "stats", "sync_partial_ok") > partial_before + 1
    });
    let _: () = q(&mut p, &["SET", "k", "2"]);
    caught_up(&replica, &primary);
    assert_eq!(q::<String>(&mut r, &["GET", "k"]), "2");
    assert_eq!(
        num(&mut p, "stats", "sync_full"),
        1,
        "no full copy was needed"
    );
    // Unknown types are refused as Redis does.
    let err = redis::cmd("CLIENT")
        .arg("KILL")
        .arg("TYPE")
        .arg("nope")
        .query::<i64>(&mut p)
        .unwrap_err();
    assert!(
        err.to_string().contains("Unknown client type 'nope'"),
        "{err}"
    );
}

/// A pipeline's effects reach the stream together at the end of its batch, and a SET's effect is
/// encoded when it is written: per key the replica must still see every write in order, whatever
/// mix of whole values (SET), read-backs (APPEND, SETRANGE) and deltas (INCRBY, RPUSH) one batch
/// queues for it, and a WAIT inside the pipeline must cover the writes before it.
#[test]
fn a_pipelines_mixed_writes_reach_the_replica_in_order_and_wait_covers_them() {
    let p = Shoal::start(&[]);
    let r = Shoal::start(&[]);
    follow(&r, &p);
    let mut c = p.client();
    let mut rc = r.client();
    for round in 0..20 {
        let mut pipe = redis::pipe();
        for i in 0..40 {
            let k = format!("s:{}", i % 4);
            let n = format!("n:{}", i % 3);
            let l = format!("l:{}", i % 2);
            match (i + round) % 8 {
                0 => pipe
                    .cmd("SET")
                    .arg(&k)
                    .arg(format!("v{round}-{i}"))
                    .ignore(),
                1 => pipe.cmd("APPEND").arg(&k).arg("+").ignore(),
                2 => pipe.cmd("SETRANGE").arg(&k).arg(1).arg("Z").ignore(),
                3 => pipe.cmd("SET").arg(&n).arg(i).ignore(),
                4 => pipe.cmd("INCRBY").arg(&n).arg(7).ignore(),
                5 => pipe.cmd("RPUSH").arg(&l).arg(i).ignore(),
                6 => pipe.cmd("DEL").arg(&l).ignore(),
                _ => pipe.cmd("MSET").arg(&k).arg("m").arg(&n).arg(3).ignore(),
            };
        }
        pipe.cmd("WAIT").arg(1).arg(10_000);
        let (acked,): (i64,) = pipe.query(&mut c).unwrap();
        assert_eq!(acked, 1, "round {round}: WAIT counts the replica");
        // WAIT returned: the replica holds every write of the pipeline, no further waiting.
        for i in 0..4 {
            let k = format!("s:{i}");
            let want: Option<String> = q(&mut c, &["GET", &k]);
            let got: Option<String> = q(&mut rc, &["GET", &k]);
            assert_eq!(got, want, "round {round}: {k} on the replica");
        }
        for i in 0..3 {
            let n = format!("n:{i}");
            let want: Option<String> = q(&mut c, &["GET", &n]);
            let got: Option<String> = q(&mut rc, &["GET", &n]);
            assert_eq!(got, want, "round {round}: {n} on the replica");
        }
        for i in 0..2 {
            let l = format!("l:{i}");
            let want: Vec<String> = q(&mut c, &["LRANGE", &l, "0", "-1"]);
            let got: Vec<String> = q(&mut rc, &["LRANGE", &l, "0", "-1"]);
            assert_eq!(got, want, "round {round}: {l} on the replica");
        }
    }
    assert_eq!(digests(&p), digests(&r));
    // With the replica stopped, a WAIT after a pipeline's writes cannot be satisfied by an
    // acknowledgement of an earlier offset: it times out with 0.
    r.signal("-STOP");
    let mut pipe = redis::pipe();
    pipe.cmd("SET").arg("after-stop").arg("1").ignore();
    pipe.cmd("INCRBY").arg("n:0").arg(1).ignore();
    pipe.cmd("WAIT").arg(1).arg(300);
    let (acked,): (i64,) = pipe.query(&mut c).unwrap();
    r.signal("-CONT");
    assert_eq!(acked, 0, "WAIT covers the pipeline's writes before it");
    let acked: i64 = q(&mut c, &["WAIT", "1", "10000"]);
    assert_eq!(acked, 1, "the resumed replica acknowledges them");
}

/// A connection cut in the middle of a pipeline (here at the output buffer limit, with writes
/// run before the cut whose effects the batch was still holding) leaves nothing behind: the
/// replica gets those writes with no further command sent to the primary (a later command on the
/// same worker would drain what the cut left).
#[test]
fn writes_of_a_pipeline_cut_at_the_output_limit_still_reach_the_replica() {
    use std::io::{Read, Write};
    let p = Shoal::start(&["--set", "client-output-buffer-limit=normal 1mb 512kb 1"]);
    let r = Shoal::start(&[]);
    follow(&r, &p);
    let mut c = p.client();
    let big = vec![b'o'; 1024 * 1024];
    let _: () = redis::cmd("SET")
        .arg("big")
        .arg(&big)
        .query(&mut c)
        .unwrap();
    drop(c);
    // One write, read as one batch: ten SETs, then 50 MB of replies not read while they run.
    let mut req = Vec::new();
    for i in 0..10 {
        let k = format!("cut:{i}");
        req.extend(common::encode(&[b"SET", k.as_bytes(), b"v"]));
    }
    req.extend(common::encode(&[b"GET", b"big"]).repeat(50));
    let mut sock = std::net::TcpStream::connect(p.addr()).unwrap();
    sock.set_write_timeout(Some(Duration::from_millis(500)))
        .unwrap();
    let _ = sock.write_all(&req);
    // The server closes the connection when its output passes the limit: its side of the
    // socket (the one whose remote port is ours) then leaves ESTABLISHED (state 01 in
    // /proc/net/tcp; ours stays there until the queued replies are read). Looked at there
    // rather than with INFO, which would run a command on the primary. Then what it sent is
    // read: the replies it wrote before the cut, far fewer than 50.
    let ours = format!(":{:04X}", sock.local_addr().unwrap().port());
    wait_until("the server to close the reader-less connection", || {
        !std::fs::read_to_string("/proc/net/tcp")
            .unwrap_or_default()
            .lines()
            .any(|l| {
                let f: Vec<&str> = l.split_whitespace().collect();
                f.len() > 3 && f[2].ends_with(&ours) && f[3] == "01"
            })
    });
    sock.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let mut got = 0usize;
    let mut buf = vec![0u8; 1 << 20];
    for _ in 0..10_000 {
        match sock.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => got += n,
        }
    }
    assert!(
        got < 40 * big.len(),
        "the connection was cut before its replies ({got} bytes read)"
    );
    let mut rc = r.client();
    wait_until("the writes before the cut on the replica", || {
        (0..10).all(|i| {
            let v: Option<String> = q(&mut rc, &["GET", &format!("cut:{i}")]);
            v.as_deref() == Some("v")
        })
    });
}

/// `min-replicas-to-write` with a real replica: writes go while it acknowledges, INFO counts it
/// good; paused past `min-replicas-max-lag`, the primary refuses writes with `-NOREPLICAS` and
/// still serves reads; resumed, writes go again.
#[test]
fn min_replicas_to_write_refuses_writes_while_the_replica_is_silent() {
    let p = Shoal::start(&[
        "--min-replicas-to-write",
        "1",
        "--min-replicas-max-lag",
        "1",
    ]);
    let r = Shoal::start(&[]);
    let mut c = p.client();
    let refused = |c: &mut redis::Connection| {
        common::try_q::<String>(c, &["SET", "k", "v"])
            .err()
            .map(|e| e.to_string())
    };
    // No replica yet: refused.
    let e = refused(&mut c).expect("refused without a replica");
    assert!(
        e.contains("NOREPLICAS") && e.contains("Not enough good replicas to write."),
        "{e}"
    );
    follow(&r, &p);
    wait_until("the replica counts as good", || {
        common::info_field(&mut c, "replication", "min_slaves_good_slaves").as_deref() == Some("1")
    });
    wait_until("writes go with a good replica", || {
        refused(&mut c).is_none()
    });
    r.signal("-STOP");
    // Its acknowledgements stop: past the lag (whole seconds, so within about three), refused.
    let deadline = Instant::now() + Duration::from_secs(10);
    let e = loop {
        if let Some(e) = refused(&mut c) {
            break e;
        }
        assert!(
            Instant::now() < deadline,
            "writes still go to a silent replica"
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(e.contains("NOREPLICAS"), "{e}");
    assert_eq!(
        common::info_field(&mut c, "replication", "min_slaves_good_slaves").as_deref(),
        Some("0")
    );
    let v: String = q(&mut c, &["GET", "k"]);
    assert_eq!(v, "v");
    r.signal("-CONT");
    wait_until("writes go again once it acknowledges", || {
        refused(&mut c).is_none()
    });
}

/// Overwrites that keep a key's block size (the same value length, a TTL replaced by another)
/// are rewritten in place on the primary and applied in place on the replica: both end with the
/// last value, deadline and version of every key, and equal digests.
#[test]
fn same_size_overwrites_reach_a_replica_with_their_values_ttls_and_versions() {
    let p = Shoal::start(&[]);
    let r = Shoal::start(&[]);
    let mut c = p.client();
    for i in 0..200 {
        let _: () = q(
            &mut c,
            &["SET", &format!("k:{i}"), "aaaa", "PXAT", "4000000000000"],
        );
    }
    follow(&r, &p);
    for round in 0..3u64 {
        let mut pipe = redis::pipe();
        for i in 0..200 {
            let value = format!("{round}{:03}", i % 1000);
            pipe.cmd("SET")
                .arg(format!("k:{i}"))
                .arg(value)
                .arg("PXAT")
                .arg(4_000_000_000_000u64 + round * 1000 + i)
                .ignore();
        }
        let _: () = pipe.query(&mut c).unwrap();
    }
    caught_up(&r, &p);
    let mut rc = r.client();
    for i in [0u64, 7, 199] {
        let key = format!("k:{i}");
        // GETVER answers the value and its version.
        let on_primary: (String, i64, (String, i64)) = (
            q(&mut c, &["GET", &key]),
            q(&mut c, &["PEXPIRETIME", &key]),
            q(&mut c, &["GETVER", &key]),
        );
        let on_replica: (String, i64, (String, i64)) = (
            q(&mut rc, &["GET", &key]),
            q(&mut rc, &["PEXPIRETIME", &key]),
            q(&mut rc, &["GETVER", &key]),
        );
        assert_eq!(on_primary.0, format!("2{:03}", i));
        assert_eq!(on_primary.1, 4_000_000_002_000 + i as i64);
        assert_eq!(on_replica, on_primary, "{key}");
    }
    assert_eq!(digests(&r), digests(&p));
}
