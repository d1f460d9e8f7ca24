//! Cache-fill leases and stale-while-revalidate over the wire (`crates/commands/src/cache_lease.rs`):
//! one caller of a missing key gets the token, the others are told to wait; only the token's fill
//! is stored, and only if nothing wrote or deleted the key since it was granted; an expired lease
//! is taken over; a value written with STALE is served stale after its expiry option, with a
//! refresh lease for the first reader (marked `stale` in GETLEASE's reply in RESP3 too, plain
//! GET staying plain), and that deadline replicates, survives a failover and a restart.

mod common;

use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

use common::{Shoal, caught_up, follow, q, scratch_dir, try_q, wait_until};

/// GETLEASE's `[status, value, token|wait-ms]`.
type Lease = (String, Option<String>, Option<i64>);

fn getlease(c: &mut redis::Connection, key: &str) -> Lease {
    q(c, &["GETLEASE", key])
}

fn setlease(c: &mut redis::Connection, key: &str, token: i64, value: &str, opts: &[&str]) -> bool {
    let t = token.to_string();
    let mut args = vec!["SETLEASE", key, &t, value];
    args.extend_from_slice(opts);
    let r: Option<String> = q(c, &args);
    r.is_some()
}

/// GETLEASE until the reply's status is `status` (bounded by `wait_until`'s deadline).
fn getlease_until(c: &mut redis::Connection, key: &str, status: &str) -> Lease {
    let mut last = None;
    wait_until(&format!("GETLEASE {key} answers {status}"), || {
        let r = getlease(c, key);
        let done = r.0 == status;
        last = Some(r);
        done
    });
    last.unwrap()
}

#[test]
fn a_miss_grants_one_token_the_others_wait_and_the_fill_is_then_a_hit() {
    let s = Shoal::start(&[]);
    let mut a = s.client();
    let mut b = s.client();
    let (status, value, token) = getlease(&mut a, "k");
    assert_eq!((status.as_str(), value), ("miss", None));
    let token = token.expect("the first caller gets a token");
    let (status, value, wait) = getlease(&mut b, "k");
    assert_eq!((status.as_str(), value), ("wait", None));
    assert!((1..=20).contains(&wait.unwrap()), "{wait:?}");
    // A wrong token fills nothing; the right one fills once.
    assert!(!setlease(&mut b, "k", token + 1, "bad", &[]));
    assert!(setlease(&mut a, "k", token, "v", &["PX", "100000"]));
    assert!(!setlease(&mut a, "k", token, "again", &[]));
    assert_eq!(
        getlease(&mut b, "k"),
        ("hit".into(), Some("v".into()), None)
    );
    let v: String = q(&mut b, &["GET", "k"]);
    assert_eq!(v, "v");
    let ttl: i64 = q(&mut b, &["PTTL", "k"]);
    assert!(ttl > 90_000, "{ttl}");
    // INFO stats counts them.
    let info: String = q(&mut a, &["INFO", "stats"]);
    for line in [
        "shoal_leases_held:0",
        "shoal_lease_grants:1",
        "shoal_lease_fills:1",
        "shoal_lease_refused_fills:2",
    ] {
        assert!(info.contains(line), "{line} in {info}");
    }
    // Raw shapes, as a client library parses them.
    let mut r = s.raw();
    assert_eq!(
        r.call(&["GETLEASE", "k"]),
        "*3\r\n+hit\r\n$1\r\nv\r\n$-1\r\n"
    );
    let _: () = q(&mut a, &["SET", "str", "x"]);
    let _: () = q(&mut a, &["LPUSH", "list", "x"]);
    assert_eq!(
        r.call(&["GETLEASE", "list"]),
        "-WRONGTYPE Operation against a key holding the wrong kind of value\r\n"
    );
    assert_eq!(
        r.call(&["GETLEASE"]),
        "-ERR wrong number of arguments for 'getlease' command\r\n"
    );
}

#[test]
fn a_delete_between_lease_and_fill_refuses_the_fill() {
    let s = Shoal::start(&[]);
    let mut c = s.client();
    // The key is absent at grant and the DEL finds nothing to delete: the fill is still refused
    // (the writer changed the source after the loader may have read it).
    let token = getlease(&mut c, "absent").2.unwrap();
    let n: i64 = q(&mut c, &["DEL", "absent"]);
    assert_eq!(n, 0);
    assert!(!setlease(&mut c, "absent", token, "old", &[]));
    let v: Option<String> = q(&mut c, &["GET", "absent"]);
    assert_eq!(v, None, "no stale set after a delete");
    // The lease is gone with it: the next caller gets a new token.
    let (status, _, next) = getlease(&mut c, "absent");
    assert_eq!(status, "miss");
    assert!(next.unwrap() > token);
    // Inside MULTI and from a script too.
    let token = getlease(&mut c, "m").2.unwrap_or_else(|| {
        let t = getlease(&mut c, "m");
        panic!("{t:?}")
    });
    let _: () = q(&mut c, &["MULTI"]);
    let _: String = q(&mut c, &["DEL", "m"]);
    let _: Vec<i64> = q(&mut c, &["EXEC"]);
    assert!(!setlease(&mut c, "m", token, "old", &[]));
    let token = getlease(&mut c, "lua").2.unwrap();
    let _: i64 = q(
        &mut c,
        &["EVAL", "return redis.call('DEL', KEYS[1])", "1", "lua"],
    );
    assert!(!setlease(&mut c, "lua", token, "old", &[]));
}

#[test]
fn a_write_between_lease_and_fill_wins_over_the_fill() {
    let s = Shoal::start(&[]);
    let mut c = s.client();
    let token = getlease(&mut c, "k").2.unwrap();
    let _: () = q(&mut c, &["SET", "k", "new"]);
    assert!(!setlease(&mut c, "k", token, "old", &[]));
    let v: String = q(&mut c, &["GET", "k"]);
    assert_eq!(v, "new");
    // A refresh lease of a stale value, overtaken by a write.
    let _: () = q(
        &mut c,
        &["SETSTALE", "s", "v1", "PX", "1", "STALE", "100000"],
    );
    let (status, value, token) = getlease_until(&mut c, "s", "stale");
    assert_eq!(value.as_deref(), Some("v1"));
    let token = token.expect("the first stale read gets the refresh lease");
    let _: i64 = q(&mut c, &["APPEND", "s", "+"]);
    assert!(!setlease(&mut c, "s", token, "v2", &[]));
    let v: String = q(&mut c, &["GET", "s"]);
    assert_eq!((status.as_str(), v.as_str()), ("stale", "v1+"));
    // FLUSHALL drops every lease.
    let token = getlease(&mut c, "f").2.unwrap();
    let _: () = q(&mut c, &["FLUSHALL"]);
    assert!(!setlease(&mut c, "f", token, "old", &[]));
}

#[test]
fn an_expired_lease_is_taken_over_and_its_holder_cannot_fill() {
    let s = Shoal::start(&["--lease-ttl-ms", "100"]);
    let mut a = s.client();
    let mut b = s.client();
    let old = getlease(&mut a, "k").2.unwrap();
    assert_eq!(getlease(&mut b, "k").0, "wait");
    // After lease-ttl-ms the next caller gets a new token.
    let (_, _, new) = getlease_until(&mut b, "k", "miss");
    let new = new.unwrap();
    assert!(new > old);
    assert!(!setlease(&mut a, "k", old, "slow", &[]));
    assert!(setlease(&mut b, "k", new, "fresh", &[]));
    let v: String = q(&mut a, &["GET", "k"]);
    assert_eq!(v, "fresh");
    // PX sets one lease's life.
    assert_eq!(getlease(&mut a, "p").0, "miss");
    let r: Lease = q(&mut a, &["GETLEASE", "p", "PX", "60000"]);
    assert_eq!(r.0, "wait");
    let r: Lease = q(&mut a, &["GETLEASE", "q", "PX", "60000"]);
    assert_eq!(r.0, "miss");
    getlease_until(&mut a, "p", "miss");
    assert_eq!(getlease(&mut a, "q").0, "wait", "q's lease lives 60 s");
}

#[test]
fn of_many_racing_callers_exactly_one_gets_the_token_and_one_fill_lands() {
    const CALLERS: usize = 32;
    let s = Shoal::start(&[]);
    let barrier = Arc::new(Barrier::new(CALLERS));
    let handles: Vec<_> = (0..CALLERS)
        .map(|_| {
            let url = s.url();
            let barrier = barrier.clone();
            std::thread::spawn(move || {
                let mut c = redis::Client::open(url).unwrap().get_connection().unwrap();
                c.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
                barrier.wait();
                let r = getlease(&mut c, "hot");
                // Every caller that got a token tries to fill.
                let filled = match r {
                    (ref st, None, Some(t)) if st == "miss" => setlease(&mut c, "hot", t, "v", &[]),
                    _ => false,
                };
                (r.0, filled)
            })
        })
        .collect();
    let results: Vec<(String, bool)> = handles.into_iter().map(|h| h.join().unwrap()).collect();
    let misses = results.iter().filter(|r| r.0 == "miss").count();
    let waits = results.iter().filter(|r| r.0 == "wait").count();
    let hits = results.iter().filter(|r| r.0 == "hit").count();
    let fills = results.iter().filter(|r| r.1).count();
    assert_eq!((misses, fills), (1, 1), "{results:?}");
    assert_eq!(misses + waits + hits, CALLERS);
    // The racing fills of one token: one lands.
    let mut c = s.client();
    let t = getlease(&mut c, "race").2.unwrap();
    let landed: Vec<bool> = (0..8)
        .map(|i| {
            let url = s.url();
            std::thread::spawn(move || {
                let mut c = redis::Client::open(url).unwrap().get_connection().unwrap();
                setlease(&mut c, "race", t, &format!("v{i}"), &[])
            })
        })
        .collect::<Vec<_>>()
        .into_iter()
        .map(|h| h.join().unwrap())
        .collect();
    assert_eq!(landed.iter().filter(|x| **x).count(), 1, "{landed:?}");
}

#[test]
fn a_stale_value_is_served_with_one_refresh_lease_until_its_hard_expiry() {
    let s = Shoal::start(&[]);
    let mut c = s.client();
    let mut other = s.client();
    let written = Instant::now();
    let _: () = q(
        &mut c,
        &["SETSTALE", "k", "v1", "PX", "300", "STALE", "100000"],
    );
    let pttl: i64 = q(&mut c, &["PTTL", "k"]);
    assert!(
        pttl > 100_000 && pttl <= 100_300,
        "TTL is the hard deadline: {pttl}"
    );
    let r = getlease(&mut c, "k");
    if written.elapsed() < Duration::from_millis(250) {
        assert_eq!(r, ("hit".into(), Some("v1".into()), None));
    }
    let (_, value, token) = getlease_until(&mut c, "k", "stale");
    assert_eq!(value.as_deref(), Some("v1"));
    let token = token.expect("refresh lease");
    assert_eq!(
        getlease(&mut other, "k"),
        ("stale".into(), Some("v1".into()), None),
        "one refresh lease at a time"
    );
    // Plain GET serves a stale value as any value.
    let v: String = q(&mut other, &["GET", "k"]);
    assert_eq!(v, "v1");
    assert!(setlease(
        &mut c,
        "k",
        token,
        "v2",
        &["PX", "100000", "STALE", "5000"]
    ));
    assert_eq!(
        getlease(&mut other, "k"),
        ("hit".into(), Some("v2".into()), None)
    );
    // A plain SET ends stale-while-revalidate.
    let _: () = q(
        &mut c,
        &["SETSTALE", "p", "v", "PX", "1", "STALE", "100000"],
    );
    getlease_until(&mut c, "p", "stale");
    let _: () = q(&mut c, &["SET", "p", "w", "KEEPTTL"]);
    assert_eq!(
        getlease(&mut c, "p"),
        ("hit".into(), Some("w".into()), None)
    );
    // Past the hard deadline the key is gone.
    let _: () = q(&mut c, &["SETSTALE", "h", "v", "PX", "1", "STALE", "50"]);
    wait_until("h expires", || {
        q::<Option<String>>(&mut c, &["GET", "h"]).is_none()
    });
    let (st, _, t) = getlease(&mut c, "h");
    assert_eq!(st, "miss");
    assert!(t.is_some());
    // Errors.
    let e = try_q::<()>(&mut c, &["SETSTALE", "x", "v", "PX", "100"]).unwrap_err();
    assert!(e.to_string().contains("wrong number of arguments"), "{e}");
    let e = try_q::<()>(&mut c, &["SETLEASE", "x", "1", "v", "STALE", "100"]).unwrap_err();
    assert!(e.to_string().contains("needs an expiry"), "{e}");
    let e = try_q::<()>(&mut c, &["SETSTALE", "x", "v", "STALE", "100", "X", "1"]).unwrap_err();
    assert!(e.to_string().contains("syntax error"), "{e}");
    let e = try_q::<()>(&mut c, &["SETSTALE", "x", "v", "PX", "100", "STALE", "-1"]).unwrap_err();
    assert!(e.to_string().contains("invalid stale time"), "{e}");
}

#[test]
fn the_stale_deadline_replicates_survives_failover_and_restart() {
    let dir = scratch_dir("swr");
    let dir_s = dir.to_str().unwrap().to_string();
    let p = Shoal::start(&[]);
    let r = Shoal::start(&["--dir", &dir_s]);
    follow(&r, &p);
    let mut pc = p.client();
    let _: () = q(
        &mut pc,
        &["SETSTALE", "k", "v", "PX", "200", "STALE", "600000"],
    );
    let _: () = q(&mut pc, &["SET", "plain", "v", "PX", "600000"]);
    // A replica refuses leases: they are the primary's.
    caught_up(&r, &p);
    let mut rc = r.client();
    let e = try_q::<Lease>(&mut rc, &["GETLEASE", "k"]).unwrap_err();
    assert!(e.to_string().contains("read only replica"), "{e}");
    let pttl: i64 = q(&mut rc, &["PTTL", "k"]);
    assert!(pttl > 500_000, "{pttl}");
    // Promoted, the replica serves the key stale, as its primary would have.
    let _: () = q(&mut rc, &["REPLICAOF", "NO", "ONE"]);
    let (_, value, token) = getlease_until(&mut rc, "k", "stale");
    assert_eq!(value.as_deref(), Some("v"));
    assert!(token.is_some());
    assert_eq!(getlease(&mut rc, "plain").0, "hit");
    // Saved and loaded again.
    let _: () = q(&mut rc, &["SAVE"]);
    drop(rc);
    drop(r);
    let r = Shoal::start(&["--dir", &dir_s]);
    let mut rc = r.client();
    let (status, value, token) = getlease(&mut rc, "k");
    assert_eq!((status.as_str(), value.as_deref()), ("stale", Some("v")));
    assert!(
        token.is_some(),
        "leases are node-local: the restarted node grants anew"
    );
    assert_eq!(getlease(&mut rc, "plain").0, "hit");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn resp3_clients_see_stale_marked_in_getlease_and_a_plain_value_from_get() {
    let s = Shoal::start(&[]);
    let mut r = s.raw();
    assert!(r.call(&["HELLO", "3"]).starts_with('%'));
    let mut other = s.raw();
    assert!(other.call(&["HELLO", "3"]).starts_with('%'));
    assert_eq!(
        r.call(&["SETSTALE", "k", "v1", "PX", "60000", "STALE", "60000"]),
        "+OK\r\n"
    );
    // Fresh: `hit`, the value, a RESP3 null where a token would be.
    assert_eq!(
        r.call(&["GETLEASE", "k"]),
        "*3\r\n+hit\r\n$2\r\nv1\r\n_\r\n"
    );
    assert_eq!(
        r.call(&["SETSTALE", "k", "v1", "PX", "1", "STALE", "60000"]),
        "+OK\r\n"
    );
    // Stale: the status says so; the first reader gets a refresh token, the next a null.
    let mut first = String::new();
    wait_until("GETLEASE k answers stale", || {
        first = r.call(&["GETLEASE", "k"]);
        first.starts_with("*3\r\n+stale\r\n")
    });
    let token = first
        .strip_prefix("*3\r\n+stale\r\n$2\r\nv1\r\n:")
        .and_then(|t| t.strip_suffix("\r\n"))
        .and_then(|t| t.parse::<i64>().ok());
    assert!(token.is_some(), "{first:?}");
    assert_eq!(
        other.call(&["GETLEASE", "k"]),
        "*3\r\n+stale\r\n$2\r\nv1\r\n_\r\n"
    );
    // Plain GET stays plain: the value as any value, in RESP3 as in RESP2.
    assert_eq!(other.call(&["GET", "k"]), "$2\r\nv1\r\n");
}
