//! Keyspace notifications against the reference: the same commands run on a redis-server 7.0 and
//! on shoal, each with a subscriber on `__key*__:*`, and the events (channel and message, in order)
//! must be the same. Each script runs twice: with `KEA` (every command class) and with `KEnm`
//! (new keys and key misses only). Also: the parameter's text as Redis shows it, expiry by the
//! cron, eviction, and MULTI/EXEC.

mod common;

use common::reference::Redis;
use common::{Raw, Shoal, wait_until};

/// Every family's writes, deletions of emptied keys, and the `del`/`expire` variants.
const SCRIPTS: &[(&str, &[&str])] = &[
    (
        "strings",
        &[
            "SET s v",
            "SET s v2 EX 100",
            "SET s v3 KEEPTTL",
            "SET s v4 NX",
            "SET s2 v XX",
            "SET s v5 XX GET",
            "SETNX s x",
            "SETNX s3 x",
            "SETEX s4 100 v",
            "PSETEX s5 100000 v",
            "GETSET s6 v",
            "GETDEL s6",
            "GETDEL s6",
            "GETEX s4 PERSIST",
            "GETEX s4 PERSIST",
            "GETEX s4 EX 50",
            "GETEX s4 PXAT 1",
            "GETEX nokey EX 5",
            "MSET m1 a m2 b m1 c",
            "MSETNX m1 a m3 b",
            "MSETNX m4 a m5 b",
            "APPEND s7 abc",
            "APPEND s7 def",
            "SETRANGE s8 3 xy",
            "SETRANGE s8 0 \"\"",
            "SETRANGE s9 0 \"\"",
            "INCR n",
            "DECR n",
            "INCRBY n 5",
            "DECRBY n 2",
            "INCRBYFLOAT f 1.5",
            "GET nokey",
            "GET s",
            "MGET s nokey m1",
            "STRLEN nokey",
            "GETRANGE nokey 0 1",
            "SET s 1",
            "INCR s",
        ],
    ),
    (
        "generic",
        &[
            "SET a 1",
            "SET b 2",
            "SET c 3",
            "DEL a nokey b",
            "UNLINK c nokey",
            "SET a 1",
            "EXPIRE a 100",
            "PEXPIRE a 100000",
            "EXPIREAT a 99999999999",
            "PEXPIREAT a 99999999999999",
            "EXPIRE a 100 NX",
            "EXPIRE a 200 GT",
            "PERSIST a",
            "PERSIST a",
            "EXPIRE nokey 10",
            "EXPIRE a 0",
            "SET a 1",
            "PEXPIREAT a 1",
            "SET a 1",
            "SET b 2",
            "RENAME a a2",
            "RENAME a2 b",
            "RENAMENX b b",
            "SET c 3",
            "RENAMENX b c",
            "RENAMENX b d",
            "RENAME d d",
            "MOVE d 1",
            "SET e 5",
            "COPY e e2",
            "COPY e e3 DB 2",
            "COPY e e2",
            "COPY e e2 REPLACE",
            "TOUCH e nokey",
            "EXISTS e nokey",
            "TYPE nokey",
            "TTL nokey",
            "OBJECT ENCODING nokey",
            "DUMP nokey",
            "SET r 1",
            "SELECT 1",
            "SET d9 1",
            "DEL d9",
            "SELECT 0",
            "SWAPDB 0 1",
            "FLUSHDB",
            "FLUSHALL",
        ],
    ),
    (
        "lists",
        &[
            "LPUSH l a b c",
            "RPUSH l d",
            "LPUSHX l e",
            "RPUSHX l f",
            "LPUSHX nol e",
            "LINSERT l BEFORE a x",
            "LINSERT l BEFORE zz x",
            "LSET l 0 y",
            "LPOP l",
            "RPOP l 2",
            "LREM l 0 zz",
            "LREM l 0 x",
            "LTRIM l 0 10",
            "LRANGE l 0 -1",
            "LTRIM l 5 10",
            "RPUSH l a b c",
            "LMOVE l l2 LEFT RIGHT",
            "RPOPLPUSH l l2",
            "LMOVE l l2 RIGHT LEFT",
            "LMOVE l l2 RIGHT LEFT",
            "LMPOP 2 nol l2 LEFT COUNT 2",
            "LMPOP 1 l2 RIGHT COUNT 5",
            "RPUSH l a",
            "BLPOP l 0.01",
            "RPUSH l a b",
            "BRPOP l 0.01",
            "BLMOVE l l3 LEFT LEFT 0.01",
            "BLMPOP 0.01 1 l3 LEFT",
            "LPOP nol",
            "LLEN nol",
            "LINDEX nol 0",
            "LPOS nol a",
        ],
    ),
    (
        "sets",
        &[
            "SADD s a b c",
            "SADD s a",
            "SREM s zz",
            "SREM s a",
            "SMOVE s s2 b",
            "SMOVE s s2 zz",
            "SMOVE s s2 c",
            "SADD s a b c d e",
            "SPOP s",
            "SPOP s 2",
            "SPOP s 10",
            "SPOP nos",
            "SADD a 1 2 3",
            "SADD b 2 3 4",
            "SINTERSTORE d a b",
            "SUNIONSTORE d a b",
            "SDIFFSTORE d a b",
            "SINTERSTORE d a nos",
            "SINTERSTORE d a nos",
            "SDIFFSTORE e nos",
            "SREM a 1 2 3",
            "SISMEMBER nos a",
            "SMEMBERS nos",
            "SCARD nos",
            "SRANDMEMBER nos",
            "SINTER nos b",
            "SINTERCARD 2 b nos",
        ],
    ),
    (
        "hashes",
        &[
            "HSET h a 1 b 2",
            "HSET h a 1",
            "HMSET h c 3",
            "HSETNX h a 9",
            "HSETNX h z 9",
            "HINCRBY h n 5",
            "HINCRBYFLOAT h f 1.5",
            "HDEL h zz",
            "HDEL h a b",
            "HDEL h c n f z",
            "HGET noh a",
            "HGETALL noh",
            "HLEN noh",
            "HEXISTS noh a",
            "HMGET noh a",
        ],
    ),
    (
        "zsets",
        &[
            "ZADD z 1 a 2 b 3 c",
            "ZADD z 1 a",
            "ZADD z NX 5 a",
            "ZADD z XX CH 5 a",
            "ZADD z INCR 1 a",
            "ZINCRBY z 2 b",
            "ZREM z zz",
            "ZREM z a",
            "ZADD z 1 a 4 d 5 e",
            "ZREMRANGEBYRANK z 0 0",
            "ZREMRANGEBYSCORE z 100 200",
            "ZREMRANGEBYSCORE z 4 4",
            "ZREMRANGEBYLEX z - (b",
            "ZPOPMIN z",
            "ZPOPMAX z 5",
            "ZPOPMIN noz",
            "ZADD a 1 x 2 y",
            "ZADD b 2 y 3 w",
            "ZUNIONSTORE d 2 a b",
            "ZINTERSTORE d 2 a b",
            "ZDIFFSTORE d 2 a b",
            "ZINTERSTORE d 2 a noz",
            "ZINTERSTORE d 2 a noz",
            "ZRANGESTORE r a 0 -1",
            "ZRANGESTORE r a 5 6",
            "ZMPOP 1 a MIN COUNT 5",
            "ZADD a 1 x",
            "BZPOPMIN a 0.01",
            "ZADD a 1 x 2 y",
            "BZPOPMAX a 0.01",
            "BZMPOP 0.01 1 a MIN",
            "ZSCORE noz a",
            "ZRANGE noz 0 -1",
            "ZCARD noz",
        ],
    ),
    (
        "sort geo hll bitmaps",
        &[
            "RPUSH l 3 1 2",
            "SORT l STORE d",
            "SORT nol STORE d",
            "SORT nol STORE d",
            "GEOADD g 13.361389 38.115556 Palermo 15.087269 37.502669 Catania",
            "GEOADD g 13.361389 38.115556 Palermo",
            "GEOSEARCHSTORE d2 g FROMLONLAT 15 37 BYRADIUS 200 km ASC",
            "GEOSEARCHSTORE d2 g FROMLONLAT 0 0 BYRADIUS 1 km ASC",
            "GEORADIUS g 15 37 200 km STORE d3",
            "GEOPOS nog a",
            "PFADD p a b",
            "PFADD p a",
            "PFADD p2",
            "PFMERGE p3 p p2",
            "PFCOUNT p nop",
            "SETBIT b 7 1",
            "SETBIT b 7 1",
            "BITFIELD bf SET u8 0 255 GET u8 0",
            "BITFIELD bf GET u8 0",
            "BITOP AND b2 b bf",
            "BITOP AND b2 nob",
            "BITCOUNT nob",
            "GETBIT nob 1",
        ],
    ),
    (
        "restore",
        &[
            "SET k v",
            "__dump k",
            "RESTORE k2 0 $DUMP",
            "RESTORE k2 0 $DUMP",
            "RESTORE k2 0 $DUMP REPLACE",
            "RESTORE k3 1 $DUMP ABSTTL",
            "RESTORE k2 1 $DUMP ABSTTL REPLACE",
            "RESTORE k4 0 $DUMP",
        ],
    ),
    (
        "lazy expiry",
        &[
            "SET x v PX 20",
            "__sleep 80",
            "GET x",
            "SET y v PX 20",
            "__sleep 80",
            "EXISTS y",
            "SET z v PX 20",
            "__sleep 80",
            "SET z w",
        ],
    ),
    (
        "multi",
        &["MULTI", "SET a 1", "LPUSH l x", "DEL a", "INCR n", "EXEC"],
    ),
];

/// Splits a script line into arguments: words, or double-quoted strings with `\xHH`, `\n`, `\"`.
fn args(line: &str) -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    let b = line.as_bytes();
    let mut i = 0;
    while i < b.len() {
        if b[i] == b' ' {
            i += 1;
            continue;
        }
        let mut arg = Vec::new();
        if b[i] == b'"' {
            i += 1;
            while b[i] != b'"' {
                if b[i] == b'\\' {
                    i += 1;
                    match b[i] {
                        b'x' => {
                            let hex = std::str::from_utf8(&b[i + 1..i + 3]).unwrap();
                            arg.push(u8::from_str_radix(hex, 16).unwrap());
                            i += 2;
                        }
                        b'n' => arg.push(b'\n'),
                        c => arg.push(c),
                    }
                } else {
                    arg.push(b[i]);
                }
                i += 1;
            }
            i += 1;
        } else {
            while i < b.len() && b[i] != b' ' {
                arg.push(b[i]);
                i += 1;
            }
        }
        out.push(arg);
    }
    out
}

/// Parses the pushes a subscriber received: (channel, message) of each `pmessage`.
fn events(sub: &mut Raw) -> Vec<(String, String)> {
    let mut got = Vec::new();
    // Bounded: a script raises far fewer events than this.
    for _ in 0..10_000 {
        let reply = String::from_utf8_lossy(&sub.reply()).into_owned();
        let parts: Vec<&str> = reply.split("\r\n").collect();
        // *4 $8 pmessage $n pattern $n channel $n message
        assert_eq!(parts[0], "*4", "{reply:?}");
        let (channel, message) = (parts[6].to_string(), parts[8].to_string());
        if channel == "end" {
            return got;
        }
        got.push((channel, message));
    }
    panic!("no end marker");
}

/// Runs a script on a server and returns the events its subscriber received.
fn run(addr: &str, classes: &str, script: &[&str]) -> Vec<(String, String)> {
    let mut c = Raw::connect(addr);
    c.call(&["FLUSHALL"]);
    c.call(&["CONFIG", "SET", "notify-keyspace-events", classes]);
    let mut sub = Raw::connect(addr);
    sub.call(&["PSUBSCRIBE", "__key*__:*"]);
    sub.call(&["PSUBSCRIBE", "end"]);
    // `__dump KEY` keeps the key's DUMP payload (each server has its own format) for `$DUMP`.
    let mut dumped = Vec::new();
    for line in script {
        if let Some(ms) = line.strip_prefix("__sleep ") {
            std::thread::sleep(std::time::Duration::from_millis(ms.parse().unwrap()));
            continue;
        }
        if let Some(key) = line.strip_prefix("__dump ") {
            c.cmd(&[b"DUMP", key.as_bytes()]);
            let reply = c.reply();
            // $<len>\r\n<payload>\r\n
            let start = reply.iter().position(|&b| b == b'\n').unwrap() + 1;
            dumped = reply[start..reply.len() - 2].to_vec();
            continue;
        }
        let a: Vec<Vec<u8>> = args(line)
            .into_iter()
            .map(|a| if a == b"$DUMP" { dumped.clone() } else { a })
            .collect();
        let a: Vec<&[u8]> = a.iter().map(|v| v.as_slice()).collect();
        c.cmd(&a);
        c.reply();
    }
    c.call(&["PUBLISH", "end", "."]);
    let got = events(&mut sub);
    c.call(&["CONFIG", "SET", "notify-keyspace-events", ""]);
    got
}

#[test]
fn every_family_raises_the_events_redis_raises_in_its_order() {
    let redis = Redis::start();
    let shoal = Shoal::start(&[]);
    let redis_addr = format!("127.0.0.1:{}", redis.port);
    let mut failures = Vec::new();
    for classes in ["KEA", "KEnm"] {
        for (name, script) in SCRIPTS {
            let want = run(&redis_addr, classes, script);
            assert!(
                !want.is_empty(),
                "{name} ({classes}): the reference raised nothing"
            );
            let got = run(&shoal.addr(), classes, script);
            if want != got {
                // Where they part, with a little of what came before.
                let at = want.iter().zip(&got).take_while(|(a, b)| a == b).count();
                // SHOAL_NOTIFY_FULL=1 shows both whole lists.
                let from = if std::env::var_os("SHOAL_NOTIFY_FULL").is_some() {
                    0
                } else {
                    at.saturating_sub(2)
                };
                failures.push(format!(
                    "{name} ({classes}), event {at}:\n  redis: {:?}\n  shoal: {:?}",
                    &want[from..want
                        .len()
                        .min(at + 6)
                        .max(if from == 0 { want.len() } else { 0 })],
                    &got[from..got
                        .len()
                        .min(at + 6)
                        .max(if from == 0 { got.len() } else { 0 })],
                ));
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// A client blocked on a list is served after the push that wakes it: the push's event, then
/// the pop's (and the deletion of the emptied list).
fn blocked_pop_events(addr: &str) -> Vec<(String, String)> {
    let mut c = Raw::connect(addr);
    c.call(&["FLUSHALL"]);
    c.call(&["CONFIG", "SET", "notify-keyspace-events", "Kl$g"]);
    let mut sub = Raw::connect(addr);
    sub.call(&["PSUBSCRIBE", "__keyspace@0__:*"]);
    sub.call(&["PSUBSCRIBE", "end"]);
    let mut blocked = Raw::connect(addr);
    blocked.cmd(&[b"BLPOP", b"l", b"5"]);
    wait_until("the client blocks", || {
        c.call(&["INFO", "clients"]).contains("blocked_clients:1")
    });
    c.call(&["LPUSH", "l", "x"]);
    assert!(String::from_utf8_lossy(&blocked.reply()).contains("x"));
    blocked.cmd(&[b"BLMOVE", b"src", b"dst", b"LEFT", b"RIGHT", b"5"]);
    wait_until("the client blocks again", || {
        c.call(&["INFO", "clients"]).contains("blocked_clients:1")
    });
    c.call(&["RPUSH", "src", "y", "z"]);
    assert!(String::from_utf8_lossy(&blocked.reply()).contains("y"));
    c.call(&["PUBLISH", "end", "."]);
    let got = events(&mut sub);
    c.call(&["CONFIG", "SET", "notify-keyspace-events", ""]);
    got
}

#[test]
fn a_served_blocked_pop_follows_the_push_that_served_it() {
    let redis = Redis::start();
    let shoal = Shoal::start(&[]);
    let want = blocked_pop_events(&format!("127.0.0.1:{}", redis.port));
    assert!(!want.is_empty());
    assert_eq!(blocked_pop_events(&shoal.addr()), want);
}

#[test]
fn the_parameter_reads_back_as_redis_shows_it() {
    let redis = Redis::start();
    let shoal = Shoal::start(&[]);
    let redis_addr = format!("127.0.0.1:{}", redis.port);
    for value in [
        "",
        "KEA",
        "Ex",
        "gK",
        "AKEmn",
        "K$lshzxetdg",
        "xeKE",
        "q",
        "KEA!",
    ] {
        let ask = |addr: &str| {
            let mut c = Raw::connect(addr);
            let set = c.call(&["CONFIG", "SET", "notify-keyspace-events", value]);
            let get = c.call(&["CONFIG", "GET", "notify-keyspace-events"]);
            (set, get)
        };
        assert_eq!(ask(&shoal.addr()), ask(&redis_addr), "{value:?}");
    }
}

#[test]
fn keys_expired_by_the_cron_raise_expired() {
    let shoal = Shoal::start(&["--hz", "100"]);
    let mut c = Raw::connect(&shoal.addr());
    c.call(&["CONFIG", "SET", "notify-keyspace-events", "Ex"]);
    let mut sub = Raw::connect(&shoal.addr());
    sub.call(&["SUBSCRIBE", "__keyevent@0__:expired"]);
    for i in 0..5 {
        c.call(&["SET", &format!("k{i}"), "v", "PX", "20"]);
    }
    // Nobody reads the keys: only the cron can expire them.
    let mut keys = Vec::new();
    for _ in 0..5 {
        let reply = String::from_utf8_lossy(&sub.reply()).into_owned();
        let parts: Vec<&str> = reply.split("\r\n").collect();
        assert_eq!(parts[2], "message", "{reply:?}");
        keys.push(parts[6].to_string());
    }
    keys.sort();
    assert_eq!(keys, ["k0", "k1", "k2", "k3", "k4"]);
    wait_until("the keys are gone", || c.call(&["DBSIZE"]) == ":0\r\n");
}

#[test]
fn evicted_keys_raise_evicted_with_their_names() {
    let shoal = Shoal::start(&[]);
    let mut c = Raw::connect(&shoal.addr());
    c.call(&["CONFIG", "SET", "notify-keyspace-events", "Ee"]);
    c.call(&["CONFIG", "SET", "maxmemory-policy", "allkeys-lru"]);
    let mut sub = Raw::connect(&shoal.addr());
    sub.call(&["SUBSCRIBE", "__keyevent@0__:evicted"]);
    let value = "x".repeat(10_000);
    for i in 0..200 {
        c.call(&["SET", &format!("key:{i}"), &value]);
    }
    let used: u64 = {
        let info = c.call(&["INFO", "memory"]);
        common::info_value(&info, "used_memory")
            .unwrap()
            .parse()
            .unwrap()
    };
    c.call(&["CONFIG", "SET", "maxmemory", &(used - 500_000).to_string()]);
    c.call(&["SET", "one-more", "v"]);
    let reply = String::from_utf8_lossy(&sub.reply()).into_owned();
    let parts: Vec<&str> = reply.split("\r\n").collect();
    assert_eq!(parts[4], "__keyevent@0__:evicted", "{reply:?}");
    let key = parts[6];
    assert!(key.starts_with("key:"), "{reply:?}");
    assert_eq!(c.call(&["EXISTS", key]), ":0\r\n", "{key} was evicted");
}

#[test]
fn nothing_is_published_while_off() {
    let shoal = Shoal::start(&[]);
    let mut c = Raw::connect(&shoal.addr());
    let mut sub = Raw::connect(&shoal.addr());
    sub.call(&["PSUBSCRIBE", "__key*__:*"]);
    sub.call(&["SUBSCRIBE", "end"]);
    c.call(&["SET", "a", "1"]);
    c.call(&["DEL", "a"]);
    c.call(&["CONFIG", "SET", "notify-keyspace-events", "A"]);
    c.call(&["SET", "a", "1"]);
    c.call(&["PUBLISH", "end", "."]);
    let reply = String::from_utf8_lossy(&sub.reply()).into_owned();
    assert!(
        reply.contains("$3\r\nend\r\n"),
        "only the marker: {reply:?}"
    );
}
