//! Client eviction over real connections: `maxmemory-clients` (bytes, or a percentage of
//! `maxmemory`) disconnects the largest clients once all clients together reach it, as Redis 7.0
//! does (its `unit/client-eviction` scenarios): a large request or unfinished argument, a large
//! transaction, a subscriber whose messages pile up; CLIENT NO-EVICT exempts a client; lowering
//! the limit evicts at once and only until the total is under it; INFO counts `evicted_clients`.
//! `CONFIG SET` parsing is compared with redis-server's in the golden corpus (`config.cmds`).

mod common;

use std::collections::HashMap;

use common::{Raw, Shoal, info_u64, q, wait_until};

/// Each CLIENT LIST line's fields, by client name.
fn clients(c: &mut redis::Connection) -> HashMap<String, HashMap<String, String>> {
    let text: String = q(c, &["CLIENT", "LIST"]);
    text.lines()
        .map(|l| {
            let fields: HashMap<String, String> = l
                .split(' ')
                .filter_map(|kv| kv.split_once('='))
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect();
            (fields["name"].clone(), fields)
        })
        .collect()
}

fn exists(c: &mut redis::Connection, name: &str) -> bool {
    clients(c).contains_key(name)
}

fn field(c: &mut redis::Connection, name: &str, f: &str) -> u64 {
    clients(c)[name][f].parse().unwrap()
}

/// A connection named `name`.
fn named(s: &Shoal, name: &str) -> Raw {
    let mut r = Raw::connect_ready(&s.addr());
    assert_eq!(r.call(&["CLIENT", "SETNAME", name]), "+OK\r\n");
    r
}

/// A one-argument request whose argument is `len` bytes of `v`; without its last [`TAIL`]
/// bytes (`v\r\n`), a request still being received.
fn big_request(len: usize) -> Vec<u8> {
    let mut b = format!("*1\r\n${len}\r\n").into_bytes();
    b.resize(b.len() + len, b'v');
    b.extend_from_slice(b"\r\n");
    b
}

const TAIL: usize = 3;

const LIMIT: u64 = 3_000_000;

fn config_set(c: &mut redis::Connection, name: &str, value: &str) {
    let _: () = q(c, &["CONFIG", "SET", name, value]);
}

/// The control connection is exempt, so eviction never takes the test's own eyes.
fn control(s: &Shoal) -> redis::Connection {
    let mut c = s.client();
    let _: () = q(&mut c, &["CLIENT", "SETNAME", "control"]);
    let _: () = q(&mut c, &["CLIENT", "NO-EVICT", "on"]);
    c
}

#[test]
fn a_large_request_or_argument_past_the_limit_evicts_its_client() {
    let s = Shoal::start(&["--maxmemory-clients", &LIMIT.to_string()]);
    let mut c = control(&s);
    // Under the limit: served.
    let mut a = named(&s, "argv");
    let value = "v".repeat(1_000_000);
    assert_eq!(a.call(&["MSET", "k", "v", "k2", &value]), "+OK\r\n");
    assert_eq!(a.call(&["GET", "k"]), "$1\r\nv\r\n");
    assert!(exists(&mut c, "argv"));
    // One request past it: the client is cut off, nothing else is.
    let value = "v".repeat(LIMIT as usize);
    let _ = a.try_send(&common::encode(&[
        b"MSET",
        b"k",
        b"v",
        b"k2",
        value.as_bytes(),
    ]));
    wait_until("the client with the large request is evicted", || {
        !exists(&mut c, "argv")
    });
    assert!(a.closed());
    // An argument never finished: its buffered bytes alone.
    let mut b = named(&s, "qbuf");
    let mut req = big_request(LIMIT as usize);
    req.truncate(req.len() - 10);
    let _ = b.try_send(&req);
    wait_until("the client with the unfinished argument is evicted", || {
        !exists(&mut c, "qbuf")
    });
    assert!(b.closed());
    assert_eq!(info_u64(&mut c, "stats", "evicted_clients"), 2);
    // The key written before the eviction is there; the one refused never was.
    let v: String = q(&mut c, &["GET", "k2"]);
    assert_eq!(v.len(), 1_000_000);
    let _: () = q(&mut c, &["CONFIG", "RESETSTAT"]);
    assert_eq!(info_u64(&mut c, "stats", "evicted_clients"), 0);
}

#[test]
fn a_percentage_of_maxmemory_is_the_limit() {
    let s = Shoal::start(&[]);
    let mut c = control(&s);
    let maxmemory: u64 = 6 * 1024 * 1024;
    config_set(&mut c, "maxmemory", &maxmemory.to_string());
    config_set(&mut c, "maxmemory-clients", "7%");
    let got: Vec<String> = q(&mut c, &["CONFIG", "GET", "maxmemory-clients"]);
    assert_eq!(got[1], "7%");
    let limit = maxmemory * 7 / 100;
    // Half the limit buffered: kept, and shown.
    let mut half = named(&s, "half");
    let n = (limit / 2) as usize;
    let mut req = big_request(n);
    req.truncate(req.len() - TAIL);
    half.send(&req);
    wait_until("the half request is buffered", || {
        field(&mut c, "half", "qbuf") as usize == req.len()
    });
    let tot = field(&mut c, "half", "tot-mem");
    assert!(tot >= n as u64 && tot < limit, "{tot}");
    drop(half);
    wait_until("the half client is gone", || !exists(&mut c, "half"));
    // The whole limit: evicted.
    let mut full = named(&s, "full");
    let _ = full.try_send(&big_request(limit as usize));
    wait_until("the client is evicted", || !exists(&mut c, "full"));
    // Without maxmemory a percentage is no limit.
    config_set(&mut c, "maxmemory", "0");
    let mut kept = named(&s, "kept");
    let mut req = big_request(limit as usize * 2);
    req.truncate(req.len() - TAIL);
    kept.send(&req);
    wait_until("the request is buffered", || {
        field(&mut c, "kept", "qbuf") as usize == req.len()
    });
    assert_eq!(info_u64(&mut c, "stats", "evicted_clients"), 1);
}

#[test]
fn a_transaction_queued_past_the_limit_evicts_its_client() {
    let s = Shoal::start(&["--maxmemory-clients", &LIMIT.to_string()]);
    let mut c = control(&s);
    let mut t = named(&s, "multi");
    let quarter = "v".repeat(LIMIT as usize / 4);
    assert_eq!(t.call(&["MULTI"]), "+OK\r\n");
    for _ in 0..2 {
        assert_eq!(t.call(&["SET", "k", &quarter]), "+QUEUED\r\n");
    }
    assert_eq!(t.call(&["EXEC"]), "*2\r\n+OK\r\n+OK\r\n");
    assert_eq!(t.call(&["MULTI"]), "+OK\r\n");
    let mut evicted = false;
    for _ in 0..5 {
        if t.try_send(&common::encode(&[b"SET", b"k", quarter.as_bytes()]))
            .is_err()
            || t.try_reply().is_none()
        {
            evicted = true;
            break;
        }
    }
    assert!(
        evicted,
        "five quarters of the limit queued and still connected"
    );
    wait_until("the client is gone", || !exists(&mut c, "multi"));
    assert_eq!(info_u64(&mut c, "stats", "evicted_clients"), 1);
}

#[test]
fn no_evict_exempts_a_client_and_the_others_go_instead() {
    let s = Shoal::start(&["--maxmemory-clients", &LIMIT.to_string()]);
    let mut c = control(&s);
    let mut small = named(&s, "small");
    assert_eq!(small.call(&["PING"]), "+PONG\r\n");
    let mut big = named(&s, "big");
    assert_eq!(big.call(&["CLIENT", "NO-EVICT", "on"]), "+OK\r\n");
    let mut req = big_request(LIMIT as usize + 1);
    req.truncate(req.len() - TAIL);
    big.send(&req);
    wait_until("the exempt client holds its request", || {
        exists(&mut c, "big") && field(&mut c, "big", "qbuf") as usize == req.len()
    });
    assert!(field(&mut c, "big", "tot-mem") > LIMIT);
    // Over the limit with an exempt client: every evictable client goes, as Redis does.
    wait_until("the evictable client is evicted", || {
        !exists(&mut c, "small")
    });
    assert!(exists(&mut c, "big"));
    assert!(exists(&mut c, "control"));
    // Finishing the request runs it (a command named by its megabyte of `v`s).
    big.send(b"v\r\n");
    assert!(big.reply().starts_with(b"-ERR unknown command 'vvv"));
    assert_eq!(info_u64(&mut c, "stats", "evicted_clients"), 1);
}

#[test]
fn lowering_the_limit_evicts_the_largest_clients_until_under_it() {
    let s = Shoal::start(&[]);
    let mut c = control(&s);
    let limit: u64 = 4 * 1024 * 1024;
    config_set(&mut c, "maxmemory-clients", &limit.to_string());
    // Ten clients of rising size, together about 1 MB under the limit.
    let mut conns = Vec::new();
    let base = (limit - 1024 * 1024) as usize / 10;
    for j in 0..10 {
        let mut r = named(&s, &format!("client{j}"));
        let mut req = big_request(base * (j + 5) / 10);
        req.truncate(req.len() - TAIL);
        r.send(&req);
        let want = req.len();
        wait_until("the request is buffered", || {
            field(&mut c, &format!("client{j}"), "qbuf") as usize == want
        });
        conns.push(r);
    }
    let before = clients(&mut c);
    assert_eq!(
        before.keys().filter(|n| n.starts_with("client")).count(),
        10
    );
    config_set(&mut c, "maxmemory-clients", &(limit / 2).to_string());
    // Evicted before CONFIG SET answered: the largest (by what each held), and only as many
    // as needed.
    let after = clients(&mut c);
    let mem = |name: &String| before[name]["tot-mem"].parse::<u64>().unwrap();
    let (left, gone): (Vec<String>, Vec<String>) = (0..10)
        .map(|j| format!("client{j}"))
        .partition(|n| after.contains_key(n));
    assert!(!left.is_empty() && !gone.is_empty(), "{left:?}");
    let largest_left = left.iter().map(mem).max().unwrap();
    let smallest_gone = gone.iter().map(mem).min().unwrap();
    assert!(
        smallest_gone >= largest_left,
        "evicted {gone:?} kept {left:?}: {before:?}"
    );
    let total: u64 = after
        .values()
        .map(|f| f["tot-mem"].parse::<u64>().unwrap())
        .sum();
    assert!(total < limit / 2, "{total}: {after:?}");
    // The smallest evicted one would not have fitted back.
    assert!(
        total + smallest_gone >= limit / 2,
        "{total} + {smallest_gone}"
    );
    assert_eq!(
        info_u64(&mut c, "stats", "evicted_clients"),
        (10 - left.len()) as u64
    );
}

#[test]
fn a_subscriber_whose_messages_pile_up_is_evicted() {
    let s = Shoal::start(&["--maxmemory-clients", &LIMIT.to_string()]);
    let mut c = control(&s);
    let mut sub = named(&s, "subscriber");
    sub.cmd(&[b"SUBSCRIBE", b"ch"]);
    assert!(sub.reply().starts_with(b"*3\r\n$9\r\nsubscribe"));
    // The subscriber reads nothing; messages of 100 KB pile up until it is evicted.
    let msg = "m".repeat(100_000);
    let mut published = 0;
    while exists(&mut c, "subscriber") && published < 1000 {
        let _: i64 = q(&mut c, &["PUBLISH", "ch", &msg]);
        published += 1;
    }
    assert!(!exists(&mut c, "subscriber"), "{published} messages");
    assert!(published > 20, "evicted after {published} messages only");
    assert_eq!(info_u64(&mut c, "stats", "evicted_clients"), 1);
}

#[test]
fn replicas_are_not_evicted() {
    let p = Shoal::start(&["--maxmemory-clients", "200000"]);
    let r = Shoal::start(&[]);
    common::follow(&r, &p);
    let mut c = control(&p);
    // Writes whose stream a replica receives: its link holds buffers but is not a client.
    let value = "v".repeat(100_000);
    for i in 0..50 {
        let _: () = q(&mut c, &["SET", &format!("k{i}"), &value]);
    }
    common::caught_up(&r, &p);
    assert_eq!(info_u64(&mut c, "stats", "evicted_clients"), 0);
    assert_eq!(info_u64(&mut c, "replication", "connected_slaves"), 1);
}

/// Watched keys and subscriptions count in a client's memory (as Redis counts them, by number):
/// a client that keeps adding them is evicted at a small limit; BCAST prefixes count too.
#[test]
fn watched_keys_and_subscriptions_count_and_evict() {
    let s = Shoal::start(&["--maxmemory-clients", "200000"]);
    let mut c = control(&s);
    for (n, command) in ["WATCH", "SUBSCRIBE", "PSUBSCRIBE", "SSUBSCRIBE"]
        .into_iter()
        .enumerate()
    {
        let mut r = Raw::connect_ready(&s.addr());
        let mut sent = 0;
        loop {
            assert!(sent < 20_000, "{command}: {sent} sent and still connected");
            let name = format!("{command}-{sent}");
            if r.try_send(&common::encode(&[command.as_bytes(), name.as_bytes()]))
                .is_err()
                || r.try_reply().is_none()
            {
                break;
            }
            sent += 1;
        }
        // About 200,000 bytes of bookkeeping at 64 bytes each, less the connection's buffers.
        assert!(sent > 1000, "{command}: evicted after {sent}");
        assert_eq!(
            info_u64(&mut c, "stats", "evicted_clients"),
            n as u64 + 1,
            "{command}"
        );
    }
    // BCAST prefixes: 64 bytes each in tot-mem.
    let mut t = named(&s, "tracker");
    // Measured idle: a connection gives its query buffer back once it waits for the next request.
    let idle = |c: &mut redis::Connection| {
        wait_until("the tracker is idle", || field(c, "tracker", "rbs") == 0);
        field(c, "tracker", "tot-mem")
    };
    let before = idle(&mut c);
    let prefixes: Vec<String> = (0..100).map(|i| format!("p{i:03}:")).collect();
    let mut args = vec!["CLIENT", "TRACKING", "on", "BCAST"];
    for p in &prefixes {
        args.extend(["PREFIX", p.as_str()]);
    }
    assert_eq!(t.call(&args), "+OK\r\n");
    let after = idle(&mut c);
    assert_eq!(
        after.checked_sub(before),
        Some(100 * 64),
        "{before} -> {after}"
    );
}
