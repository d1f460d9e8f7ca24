//! `ttl-jitter-percent` against expiry avalanches: off (the default), TTLs are exact as in Redis;
//! on, keys written together with one relative TTL get deadlines spread over that share of it, so
//! they do not all expire (and reach the data source) in the same second. Absolute deadlines are
//! never moved, and replicas hold the primary's (jittered) deadlines.

mod common;

use common::{Shoal, caught_up, follow, q};

const KEYS: usize = 2000;

/// Deadlines (PEXPIRETIME) of `keys`.
fn deadlines(c: &mut redis::Connection, keys: &[String]) -> Vec<i64> {
    let mut p = redis::pipe();
    for k in keys {
        p.cmd("PEXPIRETIME").arg(k);
    }
    p.query(c).unwrap()
}

/// The most deadlines falling in one second.
fn peak_per_second(d: &[i64]) -> usize {
    let mut buckets = std::collections::HashMap::new();
    for t in d {
        *buckets.entry(t / 1000).or_insert(0usize) += 1;
    }
    buckets.into_values().max().unwrap_or(0)
}

#[test]
fn jitter_spreads_relative_ttls_and_replicas_keep_the_deadlines() {
    let p = Shoal::start(&[]);
    let r = Shoal::start(&[]);
    follow(&r, &p);
    let mut c = p.client();
    let keys: Vec<String> = (0..KEYS).map(|i| format!("k{i}")).collect();
    // Off: every SET EX 100 of one instant gets (nearly) the same deadline.
    let mut pipe = redis::pipe();
    for k in &keys {
        pipe.cmd("SET").arg(k).arg("v").arg("EX").arg(100).ignore();
    }
    let _: () = pipe.query(&mut c).unwrap();
    let exact = deadlines(&mut c, &keys);
    let spread = exact.iter().max().unwrap() - exact.iter().min().unwrap();
    assert!(
        spread < 2000,
        "without jitter the deadlines are within the write time: {spread}"
    );
    // On: 10% of 100 s spreads them over about 10 s.
    let _: () = q(&mut c, &["CONFIG", "SET", "ttl-jitter-percent", "10"]);
    let now_ms: i64 = {
        let t: Vec<i64> = q(&mut c, &["TIME"]);
        t[0] * 1000 + t[1] / 1000
    };
    let mut pipe = redis::pipe();
    for (i, k) in keys.iter().enumerate() {
        // SET EX, SETEX, PSETEX, GETEX and EXPIRE all take relative TTLs.
        match i % 4 {
            0 => pipe.cmd("SET").arg(k).arg("v").arg("EX").arg(100).ignore(),
            1 => pipe.cmd("SETEX").arg(k).arg(100).arg("v").ignore(),
            2 => pipe.cmd("PSETEX").arg(k).arg(100_000).arg("v").ignore(),
            _ => pipe.cmd("EXPIRE").arg(k).arg(100).ignore(),
        };
    }
    let _: () = pipe.query(&mut c).unwrap();
    let jittered = deadlines(&mut c, &keys);
    for &d in &jittered {
        let ttl = d - now_ms;
        assert!(
            (99_000..=112_000).contains(&ttl),
            "a TTL of 100 s became {ttl} ms"
        );
    }
    let (peak_off, peak_on) = (peak_per_second(&exact), peak_per_second(&jittered));
    eprintln!(
        "{KEYS} keys, TTL 100 s: at most {peak_off} deadlines in one second without jitter, {peak_on} with 10%"
    );
    assert!(
        peak_on * 5 <= peak_off,
        "peak deadlines per second: {peak_off} without jitter, {peak_on} with 10%"
    );
    // Absolute deadlines are the caller's.
    let at = now_ms + 200_000;
    let _: () = q(&mut c, &["SET", "abs", "v", "PXAT", &at.to_string()]);
    let got: i64 = q(&mut c, &["PEXPIRETIME", "abs"]);
    assert_eq!(got, at);
    // The replica holds the same deadlines.
    caught_up(&r, &p);
    let mut rc = r.client();
    assert_eq!(deadlines(&mut rc, &keys), jittered);
}
