//! Repair of active-active groups and bounded replica reads over the wire (issue 13): two real
//! members made to diverge without their streams, then background anti-entropy (equal digests
//! within a deadline, counters moved) and read repair (a read on either side brings the stale
//! one up to date); and a replica whose primary is stopped refusing `READONLY MAXLAG` reads once
//! it is too far behind while answering plain ones.
//!
//! How the divergence is made: a third node, an active member on its own (its only peer does
//! not exist), writes keys; their merge states (`ACTIVESTATE`) are merged into one member with
//! `ACTIVEMERGE`, which a member never streams on (as a peer's effects are not), so the other
//! member never hears of them: exactly what a lost stream would leave behind.

mod common;

use std::time::{Duration, Instant};

use common::{Shoal, q, try_q};

/// How long repair may take once enabled.
const REPAIR_MAX: Duration = Duration::from_secs(20);

fn digests(s: &Shoal) -> Vec<String> {
    let mut c = s.client();
    q(&mut c, &["SLOTDIGEST", "0", "16383"])
}

/// Two members joined to each other, with `extra` settings, links up.
fn pair(extra: &[&str]) -> Vec<Shoal> {
    let mut args = Vec::new();
    for e in extra {
        args.push("--set");
        args.push(e);
    }
    let members = vec![Shoal::start(&args), Shoal::start(&args)];
    for (i, m) in members.iter().enumerate() {
        let mut c = m.client();
        let _: () = q(
            &mut c,
            &["CONFIG", "SET", "active-peers", &members[1 - i].addr()],
        );
    }
    let deadline = Instant::now() + REPAIR_MAX;
    for m in &members {
        let mut c = m.client();
        loop {
            let text: String = q(&mut c, &["INFO", "active"]);
            if text.lines().any(|l| l.contains("state=connected")) {
                break;
            }
            assert!(Instant::now() < deadline, "peer links did not come up");
            std::thread::sleep(Duration::from_millis(20));
        }
    }
    members
}

/// A member of a group of its own (its peer does not exist): its writes reach nobody.
fn outsider() -> Shoal {
    Shoal::start(&["--set", "active-peers=127.0.0.1:1"])
}

/// The merge state of `key` on `from`, merged into `into` without any stream.
fn smuggle(from: &Shoal, into: &Shoal, key: &str) {
    let mut c = from.client();
    let states: Vec<redis::Value> = q(&mut c, &["ACTIVESTATE", "0", key]);
    let redis::Value::BulkString(state) = &states[0] else {
        panic!("no merge state of {key}: {states:?}");
    };
    let mut c = into.client();
    let changed: i64 = redis::cmd("ACTIVEMERGE")
        .arg("0")
        .arg(key)
        .arg(state.as_slice())
        .query(&mut c)
        .expect("ACTIVEMERGE");
    assert_eq!(changed, 1, "{key} was new to the member");
}

fn wait_equal_digests(members: &[Shoal]) {
    let deadline = Instant::now() + REPAIR_MAX;
    while digests(&members[0]) != digests(&members[1]) {
        assert!(
            Instant::now() < deadline,
            "members did not converge within {REPAIR_MAX:?}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn info(m: &Shoal, field: &str) -> u64 {
    let mut c = m.client();
    common::info_u64(&mut c, "active", field)
}

fn get(m: &Shoal, args: &[&str]) -> Option<String> {
    let mut c = m.client();
    q(&mut c, args)
}

/// Both members hold `d` and `n`; the outsider writes newer versions of `k`, `s`, `n` and deletes
/// `d`, and member 0 alone gets them.
fn diverge(members: &[Shoal]) {
    let mut a = members[0].client();
    let _: () = q(&mut a, &["SET", "d", "old"]);
    let _: i64 = q(&mut a, &["INCRBY", "n", "2"]);
    wait_equal_digests(members);
    std::thread::sleep(Duration::from_millis(5));
    let o = outsider();
    let mut c = o.client();
    let _: () = q(&mut c, &["SET", "k", "newer"]);
    let _: i64 = q(&mut c, &["SADD", "s", "x", "y"]);
    let _: i64 = q(&mut c, &["INCRBY", "n", "5"]);
    let _: () = q(&mut c, &["SET", "d", "1"]);
    let _: i64 = q(&mut c, &["DEL", "d"]);
    for key in ["k", "s", "n", "d"] {
        smuggle(&o, &members[0], key);
    }
    // No reads here: with read repair on, they would start repairing.
    assert_ne!(digests(&members[0]), digests(&members[1]), "diverged");
}

#[test]
fn anti_entropy_repairs_what_the_stream_never_carried() {
    let members = pair(&[
        "active-anti-entropy-interval-ms=0",
        "active-anti-entropy-slots-per-pass=16384",
    ]);
    diverge(&members);
    // Nothing repairs it while anti-entropy is off.
    std::thread::sleep(Duration::from_millis(300));
    assert_ne!(digests(&members[0]), digests(&members[1]));
    for m in &members {
        let mut c = m.client();
        let _: () = q(
            &mut c,
            &["CONFIG", "SET", "active-anti-entropy-interval-ms", "100"],
        );
    }
    wait_equal_digests(&members);
    for m in &members {
        assert_eq!(get(m, &["GET", "k"]), Some("newer".into()));
        assert_eq!(get(m, &["GET", "d"]), None, "the delete reached both");
        // The outsider's 5 was made on top of nothing it had seen; 2 + 5 either way.
        assert_eq!(get(m, &["GET", "n"]), Some("7".into()));
        let mut c = m.client();
        let mut s: Vec<String> = q(&mut c, &["SMEMBERS", "s"]);
        s.sort();
        assert_eq!(s, vec!["x".to_string(), "y".to_string()]);
    }
    let repaired: u64 = members
        .iter()
        .map(|m| {
            info(m, "active_antientropy_keys_repaired") + info(m, "active_antientropy_keys_pushed")
        })
        .sum();
    assert!(repaired >= 4, "every smuggled key was repaired: {repaired}");
    // One member's pass may have repaired both sides before the other's first pass: each runs
    // one within a few intervals.
    common::wait_until("both members ran a pass", || {
        members
            .iter()
            .all(|m| info(m, "active_antientropy_slots_compared") > 0)
    });
    // The member whose pass did the repairs lists them per peer (the other may have found
    // nothing left to do).
    let worker = members
        .iter()
        .find(|m| {
            info(m, "active_antientropy_keys_repaired") + info(m, "active_antientropy_keys_pushed")
                > 0
        })
        .expect("a member repaired");
    let mut c = worker.client();
    let text: String = q(&mut c, &["INFO", "active"]);
    assert!(text.contains("active_peer_repairs0:addr="), "{text}");
}

#[test]
fn read_repair_brings_the_stale_member_up_to_date_on_a_read() {
    let members = pair(&["active-anti-entropy-interval-ms=0", "read-repair=yes"]);
    diverge(&members);
    // A read on the stale member: it finds its peer's newer state and merges it.
    assert_eq!(get(&members[1], &["GET", "k"]), None);
    common::wait_until("read repair on the stale member", || {
        get(&members[1], &["GET", "k"]).as_deref() == Some("newer")
    });
    assert!(info(&members[1], "active_read_repair_repairs") >= 1);
    // A read on the newer member: it pushes its state to the stale one.
    let _: Option<String> = get(&members[0], &["GET", "d"]);
    let _: i64 = {
        let mut c = members[0].client();
        q(&mut c, &["SCARD", "s"])
    };
    common::wait_until("read repair pushes to the stale member", || {
        get(&members[1], &["GET", "d"]).is_none()
            && get(&members[1], &["TYPE", "s"]).as_deref() == Some("set")
    });
    assert!(info(&members[0], "active_read_repair_pushes") >= 2);
    // n was read by nobody: still apart until it is.
    assert_eq!(get(&members[1], &["GET", "n"]), Some("2".into()));
    let _: Option<String> = get(&members[1], &["GET", "n"]);
    common::wait_until("read repair of n", || {
        get(&members[1], &["GET", "n"]).as_deref() == Some("7")
    });
    wait_equal_digests(&members);
    for m in &members {
        assert!(info(m, "active_read_repair_checks") >= 1);
        assert_eq!(info(m, "active_read_repair_dropped"), 0);
    }
}

#[test]
fn a_full_read_repair_queue_drops_and_counts() {
    let members = pair(&[
        "active-anti-entropy-interval-ms=0",
        "read-repair=yes",
        "read-repair-queue-keys-max=2",
        "read-repair-keys-per-second=1",
    ]);
    let mut c = members[0].client();
    let keys: Vec<String> = (0..50).map(|i| format!("key{i}")).collect();
    let mut args = vec!["MGET"];
    args.extend(keys.iter().map(String::as_str));
    let _: Vec<Option<String>> = q(&mut c, &args);
    assert!(info(&members[0], "active_read_repair_dropped") >= 40);
    assert!(info(&members[0], "active_read_repair_queue_len") <= 2);
}

#[test]
fn the_repair_commands_are_internal() {
    let s = Shoal::start(&[]);
    let mut c = s.client();
    // Not a member: refused.
    let r: redis::RedisResult<redis::Value> = try_q(&mut c, &["ACTIVESTATE", "0", "k"]);
    assert!(
        r.unwrap_err()
            .to_string()
            .contains("not an active-active member")
    );
    let _: () = q(
        &mut c,
        &[
            "ACL",
            "SETUSER",
            "app",
            "on",
            ">pw",
            "+@all",
            "-@dangerous",
            "~*",
        ],
    );
    let _: () = q(&mut c, &["AUTH", "app", "pw"]);
    for cmd in [
        &["ACTIVESTATE", "0", "k"][..],
        &["ACTIVESLOT", "0", "1"],
        &["ACTIVEMERGE", "0", "k", "x"],
    ] {
        let e = try_q::<redis::Value>(&mut c, cmd).unwrap_err();
        assert!(e.to_string().contains("no permissions"), "{cmd:?}: {e}");
    }
}

#[test]
fn a_replica_refuses_maxlag_reads_once_too_far_behind_and_answers_plain_ones() {
    let p = Shoal::start(&[]);
    let r = Shoal::start(&[]);
    common::follow(&r, &p);
    let mut pc = p.client();
    let _: () = q(&mut pc, &["SET", "k", "v"]);
    common::caught_up(&r, &p);
    let mut bounded = r.client();
    let mut plain = r.client();
    // The extension's syntax; plain READONLY is still Redis's (cluster mode only).
    assert!(try_q::<()>(&mut bounded, &["READONLY", "MAXLAG", "-1"]).is_err());
    assert!(try_q::<()>(&mut bounded, &["READONLY", "LAG", "5"]).is_err());
    let e = try_q::<()>(&mut bounded, &["READONLY"]).unwrap_err();
    assert!(e.to_string().contains("cluster support disabled"), "{e}");
    let _: () = q(&mut bounded, &["READONLY", "MAXLAG", "2500"]);
    assert_eq!(
        q::<Option<String>>(&mut bounded, &["GET", "k"]),
        Some("v".into())
    );
    assert_eq!(
        common::info_field(&mut plain, "replication", "shoal_replica_lag_ms").as_deref(),
        Some("0")
    );
    // Quiet but connected: the keep-alive PINGs keep it 0 ms behind.
    std::thread::sleep(Duration::from_millis(1800));
    assert_eq!(
        q::<Option<String>>(&mut bounded, &["GET", "k"]),
        Some("v".into())
    );
    // A primary with a bound answers: it is never behind.
    let _: () = q(&mut pc, &["READONLY", "MAXLAG", "0"]);
    assert_eq!(
        q::<Option<String>>(&mut pc, &["GET", "k"]),
        Some("v".into())
    );
    p.signal("-STOP");
    common::wait_until("primary stopped", || p.is_stopped());
    let stopped = Instant::now();
    let deadline = stopped + Duration::from_secs(15);
    let msg = loop {
        match try_q::<Option<String>>(&mut bounded, &["GET", "k"]) {
            Ok(v) => assert_eq!(v, Some("v".into())),
            Err(e) => break e.to_string(),
        }
        assert!(Instant::now() < deadline, "reads were never refused");
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(msg.contains("ms behind its primary (maxlag 2500)"), "{msg}");
    // The exact line on the wire.
    let mut raw = r.raw();
    assert_eq!(raw.call(&["READONLY", "MAXLAG", "2500"]), "+OK\r\n");
    let line = raw.call(&["GET", "k"]);
    assert!(line.starts_with("-TRYAGAIN replica is "), "{line:?}");
    assert!(
        line.ends_with(" ms behind its primary (maxlag 2500)\r\n"),
        "{line:?}"
    );
    let lag: u64 = msg
        .split("replica is ")
        .nth(1)
        .and_then(|t| t.split(' ').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no lag in {msg}"));
    assert!(lag > 2500, "{msg}");
    // Not refused before the bound: at least 2.5 s minus the last ping's age passed.
    assert!(stopped.elapsed() >= Duration::from_millis(500));
    let shown: u64 = common::info_field(&mut plain, "replication", "shoal_replica_lag_ms")
        .and_then(|v| v.parse().ok())
        .expect("shoal_replica_lag_ms");
    assert!(shown > 2500, "INFO shows the lag: {shown}");
    // Without the bound the same replica answers; other reads with it are refused too.
    assert_eq!(
        q::<Option<String>>(&mut plain, &["GET", "k"]),
        Some("v".into())
    );
    assert!(try_q::<i64>(&mut bounded, &["DBSIZE"]).is_err());
    // Non-reads are not bounded.
    let _: String = q(&mut bounded, &["PING"]);
    // READWRITE drops the bound.
    let _: () = q(&mut bounded, &["READWRITE"]);
    assert_eq!(
        q::<Option<String>>(&mut bounded, &["GET", "k"]),
        Some("v".into())
    );
    let _: () = q(&mut bounded, &["READONLY", "MAXLAG", "2500"]);
    assert!(try_q::<Option<String>>(&mut bounded, &["GET", "k"]).is_err());
    p.signal("-CONT");
    common::wait_until("reads with the bound answered again", || {
        try_q::<Option<String>>(&mut bounded, &["GET", "k"]).is_ok()
    });
}

#[test]
fn a_cluster_replica_too_far_behind_redirects_maxlag_reads_to_its_primary() {
    // No failover while the primary is stopped: the node timeout is longer than the test.
    let nodes: Vec<Shoal> = (0..6)
        .map(|_| {
            Shoal::start(&[
                "--cluster-enabled",
                "yes",
                "--cluster-node-timeout",
                "60000",
            ])
        })
        .collect();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_shoal"))
        .args(["cluster", "create", "--replicas", "1"])
        .args(nodes.iter().map(|n| n.addr()))
        .output()
        .expect("shoal cluster create");
    assert!(out.status.success(), "{out:?}");
    // `create` makes the fourth node the replica of the first, which owns slot 0 ("{06S}").
    let (p, r) = (&nodes[0], &nodes[3]);
    common::wait_until("the replica's link is up", || {
        let mut c = r.client();
        common::info_field(&mut c, "replication", "master_link_status").as_deref() == Some("up")
    });
    let mut pc = p.raw();
    assert_eq!(pc.call(&["SET", "{06S}k", "v"]), "+OK\r\n");
    let mut rc = r.raw();
    common::wait_until("the replica has the key", || {
        rc.call(&["READONLY"]) == "+OK\r\n" && rc.call(&["GET", "{06S}k"]) == "$1\r\nv\r\n"
    });
    let mut bounded = r.raw();
    assert_eq!(bounded.call(&["READONLY", "MAXLAG", "2500"]), "+OK\r\n");
    assert_eq!(bounded.call(&["GET", "{06S}k"]), "$1\r\nv\r\n");
    p.signal("-STOP");
    common::wait_until("primary stopped", || p.is_stopped());
    let moved = format!("-MOVED 0 {}\r\n", p.addr());
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let reply = bounded.call(&["GET", "{06S}k"]);
        if reply == moved {
            break;
        }
        assert_eq!(reply, "$1\r\nv\r\n");
        assert!(Instant::now() < deadline, "reads were never redirected");
        std::thread::sleep(Duration::from_millis(50));
    }
    // Keyless reads cannot be redirected: refused. Plain READONLY reads are still served.
    assert!(
        bounded
            .call(&["DBSIZE"])
            .starts_with("-TRYAGAIN replica is ")
    );
    assert_eq!(rc.call(&["GET", "{06S}k"]), "$1\r\nv\r\n");
    p.signal("-CONT");
    common::wait_until("bounded reads served again", || {
        bounded.call(&["GET", "{06S}k"]) == "$1\r\nv\r\n"
    });
}
