//! shoal's versioned commands over the wire (see `crates/commands/src/versions.rs`): GETVER,
//! SETIFVER (compare-and-set), DELIFVER and SETIFNEWER. A key's version only grows, whatever
//! command writes it (SET, INCR, APPEND, EXPIRE, ...); reads leave it alone; compare-and-set lets
//! exactly one of several racing writers win; SETIFNEWER never lets an older external version
//! replace a newer one, even under concurrent fillers.

mod common;

use std::collections::BTreeSet;

use common::{Rng, Shoal, q, try_q};
use redis::Value;

/// The version of `key` (GETVER), or None if it does not exist.
fn version(c: &mut redis::Connection, key: &str) -> Option<u64> {
    let v: Option<(Vec<u8>, u64)> = q(c, &["GETVER", key]);
    v.map(|(_, ver)| ver)
}

/// `[value, version]` of `key`.
fn getver(c: &mut redis::Connection, key: &str) -> Option<(String, u64)> {
    q(c, &["GETVER", key])
}

#[test]
fn getver_returns_value_and_version_or_nil() {
    let s = Shoal::start(&[]);
    let mut c = s.client();
    assert_eq!(getver(&mut c, "nope"), None);
    let _: () = q(&mut c, &["SET", "k", "hello"]);
    let (value, ver) = getver(&mut c, "k").unwrap();
    assert_eq!(value, "hello");
    assert!(ver > 0);
    let mut r = s.raw();
    assert_eq!(r.call(&["GETVER", "nope"]), "*-1\r\n");
    assert_eq!(
        r.call(&["GETVER", "k"]),
        format!("*2\r\n$5\r\nhello\r\n:{ver}\r\n")
    );
    assert_eq!(
        r.call(&["GETVER"]),
        "-ERR wrong number of arguments for 'getver' command\r\n"
    );
    assert!(r.call(&["HELLO", "3"]).starts_with('%'));
    assert_eq!(r.call(&["GETVER", "nope"]), "_\r\n");
}

#[test]
fn every_write_raises_the_version_and_reads_do_not() {
    let s = Shoal::start(&[]);
    let mut c = s.client();
    let _: () = q(&mut c, &["SET", "k", "10"]);
    let mut last = version(&mut c, "k").unwrap();
    let writes: &[&[&str]] = &[
        &["SET", "k", "11"],
        &["INCR", "k"],
        &["INCRBY", "k", "5"],
        &["DECR", "k"],
        &["INCRBYFLOAT", "k", "0.5"],
        &["APPEND", "k", "0"],
        &["SETRANGE", "k", "0", "9"],
        &["EXPIRE", "k", "1000"],
        &["PEXPIRE", "k", "2000000"],
        &["GETEX", "k", "EX", "500"],
        &["PERSIST", "k"],
        &["SET", "k", "x", "KEEPTTL"],
        &["GETSET", "k", "y"],
        &["SET", "k", "z", "XX", "GET"],
        &["MSET", "k", "m", "other", "o"],
        &["SETIFNEWER", "k", "1", "ext"],
    ];
    for w in writes {
        let _: Value = q(&mut c, w);
        let now = version(&mut c, "k").unwrap();
        assert!(
            now > last,
            "{w:?} did not raise the version: {last} -> {now}"
        );
        last = now;
        // Reads leave it alone.
        let _: Value = q(&mut c, &["GET", "k"]);
        let _: Value = q(&mut c, &["TTL", "k"]);
        let _: Value = q(&mut c, &["EXISTS", "k"]);
        let _: Value = q(&mut c, &["STRLEN", "k"]);
        let _: Value = q(&mut c, &["GETEX", "k"]);
        assert_eq!(
            version(&mut c, "k").unwrap(),
            last,
            "a read after {w:?} changed it"
        );
    }
    // Writes that change nothing keep the version: SET NX on an existing key, PERSIST without TTL.
    let _: Value = q(&mut c, &["SET", "k", "nx", "NX"]);
    let _: Value = q(&mut c, &["PERSIST", "k"]);
    assert_eq!(version(&mut c, "k").unwrap(), last);
}

#[test]
fn a_deleted_and_recreated_key_gets_a_higher_version() {
    let s = Shoal::start(&[]);
    let mut c = s.client();
    let _: () = q(&mut c, &["SET", "k", "v"]);
    let before = version(&mut c, "k").unwrap();
    let _: i64 = q(&mut c, &["DEL", "k"]);
    assert_eq!(version(&mut c, "k"), None);
    let _: () = q(&mut c, &["SET", "k", "v"]);
    assert!(version(&mut c, "k").unwrap() > before);
    // RENAME and COPY write the destination with a new version.
    let _: () = q(&mut c, &["RENAME", "k", "r"]);
    let renamed = version(&mut c, "r").unwrap();
    assert!(renamed > before);
    let _: i64 = q(&mut c, &["COPY", "r", "cp"]);
    assert!(version(&mut c, "cp").unwrap() > renamed);
}

#[test]
fn versions_order_writes_across_keys_and_mset_shares_one() {
    let s = Shoal::start(&[]);
    let mut c = s.client();
    let mut last = 0;
    for i in 0..200 {
        let key = format!("key{i}");
        let _: () = q(&mut c, &["SET", &key, "v"]);
        let v = version(&mut c, &key).unwrap();
        assert!(v > last, "a later write on this node has a higher version");
        last = v;
    }
    let _: () = q(&mut c, &["MSET", "{a}1", "x", "{b}2", "y", "{c}3", "z"]);
    let vs: BTreeSet<u64> = ["{a}1", "{b}2", "{c}3"]
        .iter()
        .map(|k| version(&mut c, k).unwrap())
        .collect();
    assert_eq!(vs.len(), 1, "one MSET, one version: {vs:?}");
    assert!(*vs.first().unwrap() > last);
}

#[test]
fn versions_keep_growing_under_concurrent_writers() {
    let s = Shoal::start(&[]);
    let threads: Vec<_> = (0..4)
        .map(|t| {
            let url = s.url();
            std::thread::spawn(move || {
                let mut c = common::connect(url);
                let mut seen = Vec::new();
                for i in 0..300 {
                    let _: () = q(&mut c, &["SET", "shared", &format!("{t}:{i}")]);
                    seen.push(version(&mut c, "shared").unwrap());
                }
                seen
            })
        })
        .collect();
    for t in threads {
        let seen = t.join().unwrap();
        // Each client's next write comes after its last read, so each read sees a higher
        // version than the one before: a key's version never goes back.
        for w in seen.windows(2) {
            assert!(w[1] > w[0], "version went from {} to {}", w[0], w[1]);
        }
    }
}

#[test]
fn a_watcher_never_sees_a_key_version_go_back_while_many_clients_write() {
    // Versions are taken from the node's clock and writes are applied under the key's shard lock;
    // if the two were not ordered together, two racing writers could apply out of version order
    // and the key's version would step back.
    let s = Shoal::start(&[]);
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let writers: Vec<_> = (0..6)
        .map(|t| {
            let url = s.url();
            std::thread::spawn(move || {
                let mut c = common::connect(url);
                for round in 0..40 {
                    let mut p = redis::pipe();
                    for i in 0..50 {
                        p.cmd("SET")
                            .arg("hot")
                            .arg(format!("{t}:{round}:{i}"))
                            .ignore();
                        p.cmd("INCR").arg(format!("n{t}")).ignore();
                    }
                    p.exec(&mut c).unwrap();
                }
            })
        })
        .collect();
    let watcher = {
        let url = s.url();
        let stop = stop.clone();
        std::thread::spawn(move || {
            let mut c = common::connect(url);
            let mut last = 0u64;
            let mut reads = 0;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) && reads < 200_000 {
                if let Some(v) = version(&mut c, "hot") {
                    assert!(v >= last, "version of 'hot' went back from {last} to {v}");
                    last = v;
                }
                reads += 1;
            }
        })
    };
    for w in writers {
        w.join().unwrap();
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    watcher.join().unwrap();
}

#[test]
fn setifver_is_compare_and_set() {
    let s = Shoal::start(&[]);
    let mut c = s.client();
    // Version 0 means "must not exist".
    let v1: Option<u64> = q(&mut c, &["SETIFVER", "k", "0", "first"]);
    let v1 = v1.expect("created");
    assert_eq!(getver(&mut c, "k"), Some(("first".into(), v1)));
    let again: Option<u64> = q(&mut c, &["SETIFVER", "k", "0", "again"]);
    assert_eq!(again, None);
    let stale: Option<u64> = q(&mut c, &["SETIFVER", "k", &(v1 - 1).to_string(), "stale"]);
    assert_eq!(stale, None);
    let v2: Option<u64> = q(&mut c, &["SETIFVER", "k", &v1.to_string(), "second"]);
    let v2 = v2.expect("matching version wins");
    assert!(v2 > v1);
    assert_eq!(getver(&mut c, "k"), Some(("second".into(), v2)));
    // The old version no longer matches.
    let late: Option<u64> = q(&mut c, &["SETIFVER", "k", &v1.to_string(), "late"]);
    assert_eq!(late, None);
    let v: String = q(&mut c, &["GET", "k"]);
    assert_eq!(v, "second");
    // A missing key matches only 0.
    let missing: Option<u64> = q(&mut c, &["SETIFVER", "nope", &v2.to_string(), "x"]);
    assert_eq!(missing, None);
    let n: i64 = q(&mut c, &["EXISTS", "nope"]);
    assert_eq!(n, 0);
}

#[test]
fn setifver_expiry_options() {
    let s = Shoal::start(&[]);
    let mut c = s.client();
    let v: u64 = q(&mut c, &["SETIFVER", "k", "0", "a", "EX", "100"]);
    let ttl: i64 = q(&mut c, &["TTL", "k"]);
    assert!((99..=100).contains(&ttl), "{ttl}");
    let v: u64 = q(&mut c, &["SETIFVER", "k", &v.to_string(), "b", "KEEPTTL"]);
    let ttl: i64 = q(&mut c, &["TTL", "k"]);
    assert!((99..=100).contains(&ttl), "KEEPTTL keeps it: {ttl}");
    let v: u64 = q(&mut c, &["SETIFVER", "k", &v.to_string(), "c"]);
    let ttl: i64 = q(&mut c, &["TTL", "k"]);
    assert_eq!(ttl, -1, "no option clears the TTL, like SET");
    let _: u64 = q(
        &mut c,
        &["SETIFVER", "k", &v.to_string(), "d", "PX", "100000"],
    );
    let pttl: i64 = q(&mut c, &["PTTL", "k"]);
    assert!(pttl > 99_000, "{pttl}");
    let mut r = s.raw();
    assert_eq!(
        r.call(&["SETIFVER", "k", "-1", "x"]),
        "-ERR version must be a non-negative integer\r\n"
    );
    assert_eq!(
        r.call(&["SETIFVER", "k", "abc", "x"]),
        "-ERR version must be a non-negative integer\r\n"
    );
    assert_eq!(
        r.call(&["SETIFVER", "k", "1", "x", "BOGUS"]),
        "-ERR syntax error\r\n"
    );
    assert_eq!(
        r.call(&["SETIFVER", "k", "1", "x", "EX", "0"]),
        "-ERR invalid expire time in 'setifver' command\r\n"
    );
    assert_eq!(
        r.call(&["SETIFVER", "k", "1"]),
        "-ERR wrong number of arguments for 'setifver' command\r\n"
    );
}

#[test]
fn two_clients_racing_on_one_version_exactly_one_wins() {
    let s = Shoal::start(&[]);
    let mut a = s.client();
    let mut b = s.client();
    let _: () = q(&mut a, &["SET", "k", "start"]);
    for round in 0..50 {
        let va = version(&mut a, "k").unwrap();
        let vb = version(&mut b, "k").unwrap();
        assert_eq!(va, vb);
        let ra: Option<u64> = q(
            &mut a,
            &["SETIFVER", "k", &va.to_string(), &format!("a{round}")],
        );
        let rb: Option<u64> = q(
            &mut b,
            &["SETIFVER", "k", &vb.to_string(), &format!("b{round}")],
        );
        assert!(
            ra.is_some(),
            "the first writer with the current version wins"
        );
        assert_eq!(
            rb, None,
            "the second, with the same now-stale version, loses"
        );
        let v: String = q(&mut b, &["GET", "k"]);
        assert_eq!(v, format!("a{round}"));
    }
}

#[test]
fn concurrent_compare_and_set_increments_lose_nothing() {
    // Four clients each add 1 to a counter 100 times using GETVER + SETIFVER with retries. If
    // compare-and-set ever let two writers win with the same version, increments would be lost.
    let s = Shoal::start(&[]);
    let mut c = s.client();
    let _: () = q(&mut c, &["SET", "counter", "0"]);
    let threads: Vec<_> = (0..4)
        .map(|_| {
            let url = s.url();
            std::thread::spawn(move || {
                let mut c = common::connect(url);
                let mut won = Vec::new();
                let mut attempts = 0;
                while won.len() < 100 {
                    attempts += 1;
                    assert!(attempts < 100_000, "too many CAS retries");
                    let (value, ver): (i64, u64) = q(&mut c, &["GETVER", "counter"]);
                    let next = (value + 1).to_string();
                    let r: Option<u64> =
                        q(&mut c, &["SETIFVER", "counter", &ver.to_string(), &next]);
                    if let Some(new_version) = r {
                        won.push((ver, new_version));
                    }
                }
                won
            })
        })
        .collect();
    let mut replaced = BTreeSet::new();
    for t in threads {
        for (old, new) in t.join().unwrap() {
            assert!(new > old);
            assert!(
                replaced.insert(old),
                "two writers both replaced version {old}"
            );
        }
    }
    let n: i64 = q(&mut c, &["GET", "counter"]);
    assert_eq!(n, 400);
}

#[test]
fn delifver_deletes_only_the_expected_version() {
    let s = Shoal::start(&[]);
    let mut c = s.client();
    let _: () = q(&mut c, &["SET", "k", "v1"]);
    let v1 = version(&mut c, "k").unwrap();
    let _: () = q(&mut c, &["SET", "k", "v2"]);
    let n: i64 = q(&mut c, &["DELIFVER", "k", &v1.to_string()]);
    assert_eq!(n, 0, "stale version");
    let v: String = q(&mut c, &["GET", "k"]);
    assert_eq!(v, "v2");
    let v2 = version(&mut c, "k").unwrap();
    let n: i64 = q(&mut c, &["DELIFVER", "k", &v2.to_string()]);
    assert_eq!(n, 1);
    let n: i64 = q(&mut c, &["EXISTS", "k"]);
    assert_eq!(n, 0);
    let n: i64 = q(&mut c, &["DELIFVER", "k", &v2.to_string()]);
    assert_eq!(n, 0, "already gone");
    let n: i64 = q(&mut c, &["DELIFVER", "k", "0"]);
    assert_eq!(n, 0, "0 does not match a missing key for delete");
    let e = try_q::<i64>(&mut c, &["DELIFVER", "k", "-3"]).unwrap_err();
    assert_eq!(e.detail(), Some("version must be a non-negative integer"));
}

#[test]
fn setifnewer_never_goes_back() {
    let s = Shoal::start(&[]);
    let mut c = s.client();
    let cases: &[(&str, &str, i64, &str)] = &[
        ("5", "v5", 1, "v5"),
        ("4", "v4", 0, "v5"),
        ("5", "v5b", 0, "v5"),
        ("6", "v6", 1, "v6"),
        ("1", "v1", 0, "v6"),
        ("100", "v100", 1, "v100"),
    ];
    for (ext, value, want, stored) in cases {
        let r: i64 = q(&mut c, &["SETIFNEWER", "row", ext, value]);
        assert_eq!(r, *want, "SETIFNEWER row {ext} {value}");
        let v: String = q(&mut c, &["GET", "row"]);
        assert_eq!(v, *stored);
    }
    // With a TTL.
    let r: i64 = q(&mut c, &["SETIFNEWER", "row", "101", "v101", "EX", "100"]);
    assert_eq!(r, 1);
    let ttl: i64 = q(&mut c, &["TTL", "row"]);
    assert!((99..=100).contains(&ttl));
    let r: i64 = q(&mut c, &["SETIFNEWER", "row", "102", "v102", "KEEPTTL"]);
    assert_eq!(r, 1);
    let ttl: i64 = q(&mut c, &["TTL", "row"]);
    assert!((99..=100).contains(&ttl));
    // A write without an external version (plain SET) leaves none: the next filler wins.
    let _: () = q(&mut c, &["SET", "row", "manual"]);
    let r: i64 = q(&mut c, &["SETIFNEWER", "row", "1", "refilled"]);
    assert_eq!(r, 1);
    let mut raw = s.raw();
    // Versioned reads are for strings.
    assert_eq!(raw.call(&["RPUSH", "list", "a"]), ":1\r\n");
    assert_eq!(
        raw.call(&["GETVER", "list"]),
        "-WRONGTYPE Operation against a key holding the wrong kind of value\r\n"
    );
    assert_eq!(
        raw.call(&["SETIFNEWER", "row", "x", "v"]),
        "-ERR version must be a non-negative integer\r\n"
    );
    assert_eq!(
        raw.call(&["SETIFNEWER", "row", "9", "v", "BOGUS"]),
        "-ERR syntax error\r\n"
    );
    assert_eq!(raw.call(&["GET", "row"]), "$8\r\nrefilled\r\n");
}

#[test]
fn setifnewer_under_concurrent_fillers_ends_at_the_newest_row() {
    // Four fillers write shuffled external versions 1..=400 of one row; whatever the
    // interleaving, the stored value ends as version 400's, and no reader ever sees it go back.
    let s = Shoal::start(&[]);
    let mut all: Vec<u64> = (1..=400).collect();
    let mut rng = Rng::new(42);
    for i in (1..all.len()).rev() {
        let j = rng.below(i as u64 + 1) as usize;
        all.swap(i, j);
    }
    let threads: Vec<_> = all
        .chunks(100)
        .map(|chunk| {
            let chunk = chunk.to_vec();
            let url = s.url();
            std::thread::spawn(move || {
                let mut c = common::connect(url);
                let mut last_seen = 0u64;
                for ext in chunk {
                    let _: i64 = q(
                        &mut c,
                        &["SETIFNEWER", "row", &ext.to_string(), &format!("row@{ext}")],
                    );
                    let v: String = q(&mut c, &["GET", "row"]);
                    let seen: u64 = v.strip_prefix("row@").unwrap().parse().unwrap();
                    assert!(seen >= last_seen, "went back from {last_seen} to {seen}");
                    assert!(
                        seen >= ext,
                        "stored {seen} is older than just-offered {ext}"
                    );
                    last_seen = seen;
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    let mut c = s.client();
    let v: String = q(&mut c, &["GET", "row"]);
    assert_eq!(v, "row@400");
}
