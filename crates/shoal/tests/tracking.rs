//! Client-side caching (CLIENT TRACKING) compared with a live redis-server 7.0: the same scenario
//! runs against both, each with its own connections, and the exact bytes every connection
//! receives (replies and invalidation pushes, in order) must be the same. Client ids differ
//! between the servers, so they are replaced by `ID` before comparing; where Redis picks keys at
//! random (the table limit), the keys are replaced by `KEY`.
//!
//! Every read waits for one whole frame (bounded by the connection's read timeout); "nothing
//! arrived" is checked by a PING whose PONG must be the next frame.

mod common;

use common::Raw;
use common::reference::Redis;
use common::{Shoal, wait_until};

/// A transcript of what the scenario's connections received, normalised.
struct Run {
    addr: String,
    log: Vec<String>,
    ids: Vec<String>,
}

impl Run {
    fn new(addr: String) -> Run {
        Run {
            addr,
            log: Vec::new(),
            ids: Vec::new(),
        }
    }

    fn connect(&mut self, resp3: bool) -> Raw {
        let mut c = Raw::connect(&self.addr);
        let id = c.call(&["CLIENT", "ID"]);
        self.ids.push(id.trim_start_matches(':').trim().to_string());
        if resp3 {
            // HELLO's reply names the server and version: not compared.
            c.call(&["HELLO", "3"]);
        }
        c
    }

    fn norm(&self, s: String) -> String {
        let mut s = s;
        for id in &self.ids {
            s = s
                .replace(&format!(":{id}\r\n"), ":ID\r\n")
                .replace(&format!("redir={id}"), "redir=ID");
        }
        s
    }

    /// Sends a command and logs its reply (with client ids normalised where replies hold them).
    fn call(&mut self, c: &mut Raw, args: &[&str]) {
        let r = c.call(args);
        let with_id = args.len() == 2
            && args[0] == "CLIENT"
            && (args[1] == "GETREDIR" || args[1] == "TRACKINGINFO");
        let r = if with_id { self.norm(r) } else { r };
        let shown: Vec<&str> = args
            .iter()
            .enumerate()
            .map(|(i, a)| {
                if i > 0 && args[i - 1] == "REDIRECT" {
                    "ID"
                } else {
                    a
                }
            })
            .collect();
        self.log.push(format!("{shown:?} -> {r}"));
    }

    /// Logs the next frame on `c` (a push, or a message).
    fn next(&mut self, c: &mut Raw, what: &str) {
        let r = String::from_utf8_lossy(&c.reply()).into_owned();
        self.log.push(format!("{what}: {r}"));
    }

    fn note(&mut self, s: String) {
        self.log.push(s);
    }
}

fn info_fields(c: &mut Raw) -> String {
    let info = c.call(&["INFO"]);
    let mut out: Vec<String> = info
        .split("\r\n")
        .filter(|l| l.starts_with("tracking_"))
        .map(str::to_string)
        .collect();
    out.sort();
    out.join(" ")
}

fn client_flags(c: &mut Raw) -> String {
    let line = c.call(&["CLIENT", "INFO"]);
    line.split(' ')
        .filter(|f| f.starts_with("flags=") || f.starts_with("redir="))
        .collect::<Vec<_>>()
        .join(" ")
}

/// RESP3 default mode, NOLOOP, OPTIN/OPTOUT, errors, TRACKINGINFO, INFO, flush, expiry.
fn resp3_scenario(addr: String) -> Vec<String> {
    let mut r = Run::new(addr);
    let mut c1 = r.connect(true);
    let mut c2 = r.connect(false);
    for args in [
        &["CLIENT", "TRACKING", "on", "PREFIX", "a"][..],
        &["CLIENT", "TRACKING", "on", "BCAST", "OPTIN"],
        &["CLIENT", "TRACKING", "on", "OPTIN", "OPTOUT"],
        &["CLIENT", "TRACKING", "on", "REDIRECT", "999999"],
        &["CLIENT", "TRACKING", "maybe"],
        &["CLIENT", "TRACKING", "on", "FOO"],
        &["CLIENT", "CACHING", "yes"],
        &["CLIENT", "GETREDIR"],
        &["CLIENT", "TRACKINGINFO"],
        &["CLIENT", "TRACKING", "on"],
        &["CLIENT", "TRACKING", "on", "BCAST"],
        &["CLIENT", "CACHING", "yes"],
        &["CLIENT", "GETREDIR"],
        &["CLIENT", "TRACKINGINFO"],
    ] {
        r.call(&mut c1, args);
    }
    let flags = client_flags(&mut c1);
    let flags = r.norm(flags);
    r.note(format!("c1 {flags}"));
    r.call(&mut c2, &["SET", "a", "1"]);
    r.call(&mut c1, &["GET", "a"]);
    r.call(&mut c1, &["MGET", "a", "b"]);
    let info = info_fields(&mut c2);
    r.note(info);
    r.call(&mut c2, &["SET", "a", "2"]);
    r.next(&mut c1, "c1 after SET a");
    // Not read again: no second message.
    r.call(&mut c2, &["SET", "a", "3"]);
    r.call(&mut c1, &["PING"]);
    r.call(&mut c2, &["DEL", "b"]);
    r.call(&mut c2, &["SET", "b", "1"]);
    r.next(&mut c1, "c1 after SET b");
    // Its own write: the reply, then the message.
    r.call(&mut c1, &["GET", "a"]);
    r.call(&mut c1, &["INCR", "a"]);
    r.next(&mut c1, "c1 after its own INCR");
    // NOLOOP: its own writes say nothing; others' still do.
    r.call(&mut c1, &["CLIENT", "TRACKING", "on", "NOLOOP"]);
    r.call(&mut c1, &["GET", "a"]);
    r.call(&mut c1, &["SET", "a", "5"]);
    r.call(&mut c1, &["PING"]);
    r.call(&mut c1, &["GET", "a"]);
    r.call(&mut c2, &["APPEND", "a", "x"]);
    r.next(&mut c1, "c1 after APPEND");
    // A key that expires invalidates too.
    r.call(&mut c2, &["SET", "e", "1"]);
    r.call(&mut c1, &["GET", "e"]);
    r.call(&mut c2, &["PEXPIRE", "e", "30"]);
    r.next(&mut c1, "c1 after PEXPIRE");
    r.call(&mut c1, &["GET", "e"]);
    r.next(&mut c1, "c1 after e expired");
    // FLUSHALL: a null invalidation.
    r.call(&mut c1, &["GET", "a"]);
    r.call(&mut c2, &["FLUSHALL"]);
    r.next(&mut c1, "c1 after FLUSHALL");
    let info = info_fields(&mut c2);
    r.note(info);
    // OPTIN: only reads after CLIENT CACHING yes are tracked.
    r.call(&mut c1, &["CLIENT", "TRACKING", "off"]);
    r.call(&mut c1, &["CLIENT", "TRACKING", "on", "OPTIN"]);
    r.call(&mut c1, &["GET", "x"]);
    r.call(&mut c1, &["CLIENT", "CACHING", "yes"]);
    r.call(&mut c1, &["CLIENT", "TRACKINGINFO"]);
    r.call(&mut c1, &["GET", "y"]);
    r.call(&mut c1, &["CLIENT", "TRACKINGINFO"]);
    r.call(&mut c2, &["MSET", "x", "1", "y", "2"]);
    r.next(&mut c1, "c1 after MSET x y (OPTIN)");
    r.call(&mut c1, &["PING"]);
    r.call(&mut c1, &["CLIENT", "TRACKING", "on", "OPTOUT"]);
    // OPTOUT: every read but those after CLIENT CACHING no.
    r.call(&mut c1, &["CLIENT", "TRACKING", "off"]);
    r.call(&mut c1, &["CLIENT", "TRACKING", "on", "OPTOUT"]);
    r.call(&mut c1, &["CLIENT", "CACHING", "no"]);
    r.call(&mut c1, &["GET", "x"]);
    r.call(&mut c1, &["GET", "y"]);
    r.call(&mut c2, &["MSET", "x", "3", "y", "4"]);
    r.next(&mut c1, "c1 after MSET x y (OPTOUT)");
    r.call(&mut c1, &["PING"]);
    r.call(&mut c1, &["CLIENT", "TRACKING", "off"]);
    let flags = client_flags(&mut c1);
    let flags = r.norm(flags);
    r.note(format!("c1 {flags}"));
    let info = info_fields(&mut c2);
    r.note(info);
    r.log
}

/// RESP2 with REDIRECT to a connection subscribed to `__redis__:invalidate`; a broken redirect.
fn redirect_scenario(addr: String) -> Vec<String> {
    let mut r = Run::new(addr);
    let mut sub = r.connect(false);
    let mut c1 = r.connect(false);
    let mut c2 = r.connect(false);
    let sub_id = r.ids[0].clone();
    r.call(&mut sub, &["SUBSCRIBE", "__redis__:invalidate"]);
    r.call(&mut c1, &["CLIENT", "TRACKING", "on", "REDIRECT", &sub_id]);
    r.call(&mut c1, &["CLIENT", "GETREDIR"]);
    r.call(&mut c1, &["CLIENT", "TRACKINGINFO"]);
    let flags = client_flags(&mut c1);
    let flags = r.norm(flags);
    r.note(format!("c1 {flags}"));
    r.call(&mut c1, &["GET", "k"]);
    r.call(&mut c2, &["SET", "k", "v"]);
    r.next(&mut sub, "sub after SET k");
    r.call(&mut c1, &["GET", "k"]);
    r.call(&mut c2, &["FLUSHDB"]);
    r.next(&mut sub, "sub after FLUSHDB");
    // The redirect target goes away: the next message marks the redirect broken.
    r.call(&mut c1, &["GET", "k"]);
    drop(sub);
    let addr = r.addr.clone();
    let sub_id_c = sub_id.clone();
    wait_until("the subscriber is gone", || {
        !Raw::connect(&addr)
            .call(&["CLIENT", "LIST"])
            .contains(&format!("id={sub_id_c} "))
    });
    r.call(&mut c2, &["SET", "k", "w"]);
    r.call(&mut c1, &["CLIENT", "TRACKINGINFO"]);
    let flags = client_flags(&mut c1);
    let flags = r.norm(flags);
    r.note(format!("c1 {flags}"));
    r.log
}

/// BCAST with prefixes (and NOLOOP), then the table limit.
fn bcast_scenario(addr: String) -> Vec<String> {
    let mut r = Run::new(addr);
    let mut c1 = r.connect(true);
    let mut c2 = r.connect(false);
    r.call(
        &mut c1,
        &[
            "CLIENT", "TRACKING", "on", "BCAST", "PREFIX", "user:", "PREFIX", "us",
        ],
    );
    r.call(
        &mut c1,
        &[
            "CLIENT", "TRACKING", "on", "BCAST", "PREFIX", "user:", "PREFIX", "obj:",
        ],
    );
    r.call(
        &mut c1,
        &["CLIENT", "TRACKING", "on", "BCAST", "PREFIX", "use"],
    );
    r.call(&mut c1, &["CLIENT", "TRACKING", "on"]);
    r.call(&mut c1, &["CLIENT", "TRACKINGINFO"]);
    let flags = client_flags(&mut c1);
    let flags = r.norm(flags);
    r.note(format!("c1 {flags}"));
    r.call(
        &mut c2,
        &["MSET", "user:1", "a", "obj:2", "b", "other", "c"],
    );
    r.next(&mut c1, "c1 after MSET (first prefix)");
    r.next(&mut c1, "c1 after MSET (second prefix)");
    r.call(&mut c2, &["DEL", "other"]);
    r.call(&mut c1, &["PING"]);
    let info = info_fields(&mut c2);
    r.note(info);
    // NOLOOP in BCAST: only others' keys.
    r.call(&mut c1, &["CLIENT", "TRACKING", "off"]);
    r.call(&mut c1, &["CLIENT", "TRACKING", "on", "BCAST", "NOLOOP"]);
    r.call(&mut c1, &["SET", "mine", "1"]);
    r.call(&mut c1, &["PING"]);
    r.call(&mut c2, &["SET", "theirs", "1"]);
    r.next(&mut c1, "c1 after SET theirs");
    r.call(&mut c1, &["CLIENT", "TRACKING", "off"]);
    // The table limit: past it, tracked keys are invalidated until it holds again.
    r.call(&mut c2, &["CONFIG", "SET", "tracking-table-max-keys", "5"]);
    r.call(&mut c1, &["CLIENT", "TRACKING", "on"]);
    let mut pushes = 0;
    for i in 0..10 {
        c1.cmd(&[b"GET", format!("t{i}").as_bytes()]);
        loop {
            let f = c1.reply();
            if f.starts_with(b">") {
                pushes += 1;
            } else {
                break;
            }
        }
    }
    c1.cmd(&[b"PING"]);
    loop {
        let f = c1.reply();
        if f.starts_with(b">") {
            pushes += 1;
        } else {
            assert_eq!(f, b"+PONG\r\n");
            break;
        }
    }
    r.note(format!("keys evicted from the table: {pushes}"));
    let info = info_fields(&mut c2);
    r.note(info);
    r.log
}

/// When invalidations are sent: BCAST keys of a transaction gathered into one message per prefix;
/// a script's declared keys tracked when it read something; FLUSHALL emptying the table even
/// when no client tracks; a key evicted before a read, its push before that read's reply.
fn batching_scenario(addr: String) -> Vec<String> {
    let mut r = Run::new(addr);
    let mut c1 = r.connect(true);
    let mut c2 = r.connect(false);
    r.call(
        &mut c1,
        &[
            "CLIENT", "TRACKING", "on", "BCAST", "PREFIX", "a:", "PREFIX", "b:",
        ],
    );
    r.call(&mut c2, &["MULTI"]);
    for k in ["a:1", "a:2", "b:1", "b:2", "c:1"] {
        r.call(&mut c2, &["INCR", k]);
    }
    r.call(&mut c2, &["EXEC"]);
    r.next(&mut c1, "c1 after EXEC (first prefix)");
    r.next(&mut c1, "c1 after EXEC (second prefix)");
    r.call(&mut c1, &["PING"]);
    r.call(&mut c1, &["CLIENT", "TRACKING", "off"]);
    // Scripts: a script that reads makes its declared keys tracked; one that only writes not.
    r.call(&mut c1, &["CLIENT", "TRACKING", "on"]);
    r.call(
        &mut c1,
        &["EVAL", "redis.call('set', 'k3', 'bar')", "2", "k1", "k2"],
    );
    r.call(&mut c2, &["MSET", "k1", "1", "k2", "1"]);
    r.call(&mut c1, &["PING"]);
    r.call(
        &mut c1,
        &["EVAL", "redis.call('get', 'k3')", "2", "k1", "k2"],
    );
    r.call(&mut c2, &["MSET", "k2", "2", "k1", "2"]);
    r.next(&mut c1, "c1 after MSET (script read)");
    r.next(&mut c1, "c1 after MSET (script read)");
    r.call(&mut c1, &["PING"]);
    // FLUSHALL empties the table though no client tracks any more.
    r.call(&mut c1, &["GET", "k1"]);
    r.call(&mut c1, &["GET", "k2"]);
    r.call(&mut c1, &["CLIENT", "TRACKING", "off"]);
    let info = info_fields(&mut c2);
    r.note(info);
    r.call(&mut c2, &["FLUSHALL"]);
    let info = info_fields(&mut c2);
    r.note(info);
    // A key evicted before a read: its invalidation comes before the read's reply.
    r.call(&mut c1, &["CLIENT", "TRACKING", "on"]);
    r.call(
        &mut c2,
        &["CONFIG", "SET", "maxmemory-policy", "volatile-random"],
    );
    let mem = c2.call(&["INFO", "memory"]);
    let field = |f: &str| -> u64 {
        mem.split("\r\n")
            .find_map(|l| l.strip_prefix(f)?.strip_prefix(':'))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or_else(|| panic!("INFO memory has no {f}"))
    };
    let limit = field("used_memory") - field("mem_not_counted_for_evict") + 100 * 1024;
    c2.call(&["CONFIG", "SET", "maxmemory", &limit.to_string()]);
    r.call(&mut c2, &["SETEX", "volatile-key", "10000", "x"]);
    r.call(&mut c1, &["GET", "volatile-key"]);
    r.call(&mut c2, &["SETBIT", "big-key", "1600000", "0"]);
    r.call(&mut c1, &["GETBIT", "big-key", "0"]);
    r.next(&mut c1, "c1 after GETBIT");
    r.call(&mut c2, &["CONFIG", "SET", "maxmemory", "0"]);
    r.call(&mut c1, &["PING"]);
    r.log
}

fn compare(scenario: fn(String) -> Vec<String>) {
    let redis = Redis::start();
    let want = scenario(format!("127.0.0.1:{}", redis.port));
    eprintln!("redis:\n{}", want.join("\n"));
    let shoal = Shoal::start(&[]);
    let got = scenario(shoal.addr());
    for (i, (w, g)) in want.iter().zip(&got).enumerate() {
        assert_eq!(g, w, "step {i} differs (shoal, then redis)");
    }
    assert_eq!(got.len(), want.len());
}

#[test]
fn resp3_tracking_matches_redis() {
    compare(resp3_scenario);
}

#[test]
fn resp2_redirect_matches_redis() {
    compare(redirect_scenario);
}

#[test]
fn bcast_and_the_table_limit_match_redis() {
    compare(bcast_scenario);
}

#[test]
fn invalidation_batching_scripts_flushes_and_eviction_match_redis() {
    compare(batching_scenario);
}

/// A Redis replica invalidates the keys its primary's writes change; so does a shoal replica
/// applying the stream. BF.* writes (module writes in Redis, which signal their key) invalidate too.
#[test]
fn a_replica_invalidates_keys_its_primary_writes_and_bloom_writes_invalidate() {
    let p = Shoal::start(&[]);
    let r = Shoal::start(&[]);
    common::follow(&r, &p);
    let mut pc = p.raw();
    pc.call(&["SET", "k", "1"]);
    common::caught_up(&r, &p);
    let mut rc = r.raw();
    rc.call(&["HELLO", "3"]);
    assert_eq!(rc.call(&["CLIENT", "TRACKING", "on"]), "+OK\r\n");
    assert_eq!(rc.call(&["GET", "k"]), "$1\r\n1\r\n");
    pc.call(&["SET", "k", "2"]);
    let push = String::from_utf8_lossy(&rc.reply()).into_owned();
    assert_eq!(push, ">2\r\n$10\r\ninvalidate\r\n*1\r\n$1\r\nk\r\n");
    assert_eq!(rc.call(&["GET", "k"]), "$1\r\n2\r\n");
    pc.call(&["DEL", "k"]);
    let push = String::from_utf8_lossy(&rc.reply()).into_owned();
    assert_eq!(push, ">2\r\n$10\r\ninvalidate\r\n*1\r\n$1\r\nk\r\n");
    // A replicated FLUSHALL: a null invalidation.
    pc.call(&["FLUSHALL"]);
    let push = String::from_utf8_lossy(&rc.reply()).into_owned();
    assert_eq!(push, ">2\r\n$10\r\ninvalidate\r\n_\r\n");
    // Bloom filters, on the primary itself.
    let mut c1 = p.raw();
    c1.call(&["HELLO", "3"]);
    c1.call(&["CLIENT", "TRACKING", "on"]);
    assert_eq!(c1.call(&["BF.EXISTS", "bf", "x"]), "#f\r\n");
    assert_eq!(pc.call(&["BF.ADD", "bf", "x"]), ":1\r\n");
    let push = String::from_utf8_lossy(&c1.reply()).into_owned();
    assert_eq!(push, ">2\r\n$10\r\ninvalidate\r\n*1\r\n$2\r\nbf\r\n");
    assert_eq!(c1.call(&["BF.EXISTS", "bf", "x"]), "#t\r\n");
    // An add that changes nothing still signals the key (Redis signals every key a module
    // opened for writing).
    assert_eq!(pc.call(&["BF.ADD", "bf", "x"]), ":0\r\n");
    let push = String::from_utf8_lossy(&c1.reply()).into_owned();
    assert_eq!(push, ">2\r\n$10\r\ninvalidate\r\n*1\r\n$2\r\nbf\r\n");
}
