//! Hash-field expiry over the wire (HEXPIRE HPEXPIRE HEXPIREAT HPEXPIREAT HTTL HPTTL HEXPIRETIME
//! HPEXPIRETIME HPERSIST) against a real shoal process: replies, lazy and active expiry,
//! replication to a replica, and a snapshot restart.
//!
//! These commands are Redis 7.4's; the redis-server installed here is 7.0 and has none of them, so
//! there is no golden corpus. The expected replies and error strings were taken from Redis 7.4's
//! documentation (redis.io command pages) and its `t_hash.c` / `hash-field-expire.tcl`: per field
//! -2 no such field, 0 condition not met, 1 set, 2 deleted (time not in the future); HTTL -2/-1/ttl;
//! HPERSIST -2/-1/1. One deliberate difference: Redis 7.4's HLEN and HRANDFIELD may count fields
//! that have expired but were not deleted yet; shoal deletes them on every hash command first.

mod common;

use common::*;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
}

fn ints(c: &mut redis::Connection, args: &[&str]) -> Vec<i64> {
    q(c, args)
}

#[test]
fn replies_follow_redis_7_4() {
    let s = Shoal::start(&[]);
    let mut c = s.client();
    let _: i64 = q(&mut c, &["HSET", "h", "a", "1", "b", "2", "c", "3"]);
    assert_eq!(
        ints(&mut c, &["HEXPIRE", "h", "100", "FIELDS", "2", "a", "nope"]),
        [1, -2]
    );
    assert_eq!(
        ints(&mut c, &["HTTL", "h", "FIELDS", "3", "a", "b", "nope"]),
        [100, -1, -2]
    );
    let pttl = ints(&mut c, &["HPTTL", "h", "FIELDS", "1", "a"])[0];
    assert!((99_000..=100_000).contains(&pttl), "{pttl}");
    let at = ints(&mut c, &["HPEXPIRETIME", "h", "FIELDS", "1", "a"])[0] as u64;
    assert!(at.abs_diff(now_ms() + 100_000) < 5_000, "{at}");
    let secs = ints(&mut c, &["HEXPIRETIME", "h", "FIELDS", "1", "a"])[0] as u64;
    assert_eq!(secs, at.div_ceil(1000));
    // Conditions.
    assert_eq!(
        ints(
            &mut c,
            &["HEXPIRE", "h", "50", "NX", "FIELDS", "2", "a", "b"]
        ),
        [0, 1]
    );
    assert_eq!(
        ints(
            &mut c,
            &["HEXPIRE", "h", "10", "GT", "FIELDS", "2", "a", "c"]
        ),
        [0, 0]
    );
    assert_eq!(
        ints(
            &mut c,
            &["HEXPIRE", "h", "10", "LT", "FIELDS", "2", "a", "c"]
        ),
        [1, 1]
    );
    assert_eq!(
        ints(&mut c, &["HPERSIST", "h", "FIELDS", "3", "c", "c", "nope"]),
        [1, -1, -2]
    );
    // HSET clears a field's TTL, HINCRBY keeps it.
    let _: i64 = q(&mut c, &["HSET", "h", "b", "9"]);
    let _: i64 = q(&mut c, &["HINCRBY", "h", "a", "1"]);
    assert_eq!(
        ints(&mut c, &["HTTL", "h", "FIELDS", "2", "a", "b"]),
        [10, -1]
    );
    let enc: String = q(&mut c, &["OBJECT", "ENCODING", "h"]);
    assert_eq!(enc, "listpackex");
    // A time in the past deletes the field; the last field takes the key.
    assert_eq!(
        ints(&mut c, &["HEXPIREAT", "h", "1", "FIELDS", "2", "a", "b"]),
        [2, 2]
    );
    assert_eq!(
        ints(&mut c, &["HPEXPIRE", "h", "0", "FIELDS", "1", "c"]),
        [2]
    );
    assert_eq!(q::<i64>(&mut c, &["EXISTS", "h"]), 0);
    assert_eq!(
        ints(&mut c, &["HEXPIRE", "h", "10", "FIELDS", "1", "a"]),
        [-2]
    );
    // Errors, byte for byte.
    let mut raw = s.raw();
    raw.call(&["SET", "str", "x"]);
    raw.call(&["HSET", "h2", "a", "1"]);
    for (cmd, want) in [
        (
            &["HEXPIRE", "str", "10", "FIELDS", "1", "a"][..],
            "-WRONGTYPE Operation against a key holding the wrong kind of value\r\n",
        ),
        (
            &["HEXPIRE", "h2", "-1", "FIELDS", "1", "a"],
            "-ERR invalid expire time, must be >= 0\r\n",
        ),
        (
            &["HEXPIRE", "h2", "70368744177", "FIELDS", "1", "a"],
            "-ERR invalid expire time in 'hexpire' command\r\n",
        ),
        (
            &["HEXPIRE", "h2", "10", "FIELDS", "0", "a"],
            "-ERR Parameter `numFields` should be greater than 0\r\n",
        ),
        (
            &["HEXPIRE", "h2", "10", "FIELDS", "2", "a"],
            "-ERR The `numfields` parameter must match the number of arguments\r\n",
        ),
        (
            &["HEXPIRE", "h2", "10", "XX", "2", "a"],
            "-ERR Mandatory argument FIELDS is missing or not at the right position\r\n",
        ),
        (
            &["HTTL", "h2", "FIELDS", "0", "a"],
            "-ERR Number of fields must be a positive integer\r\n",
        ),
        (
            &["HPERSIST", "h2", "FIELDS", "1"],
            "-ERR wrong number of arguments for 'hpersist' command\r\n",
        ),
    ] {
        assert_eq!(raw.call(cmd), want, "{cmd:?}");
    }
    // Key specs and flags as Redis 7.4's command table.
    for cmd in ["HEXPIRE", "HPEXPIRE", "HEXPIREAT", "HPEXPIREAT"] {
        assert_eq!(
            raw.call(&["COMMAND", "GETKEYS", cmd, "h", "1", "FIELDS", "1", "a"]),
            "*1\r\n$1\r\nh\r\n"
        );
    }
    for cmd in ["HTTL", "HPTTL", "HEXPIRETIME", "HPEXPIRETIME", "HPERSIST"] {
        assert_eq!(
            raw.call(&["COMMAND", "GETKEYS", cmd, "h", "FIELDS", "1", "a"]),
            "*1\r\n$1\r\nh\r\n"
        );
    }
    let info = raw.call(&["COMMAND", "INFO", "hpersist"]);
    assert!(
        info.contains("$8\r\nhpersist\r\n:-5\r\n*2\r\n+write\r\n+fast\r\n"),
        "{info:?}"
    );
    let info = raw.call(&["COMMAND", "INFO", "hexpire"]);
    assert!(info.starts_with("*1\r\n*10\r\n$7\r\nhexpire\r\n:-6\r\n*3\r\n+write\r\n+denyoom\r\n+fast\r\n:1\r\n:1\r\n:1\r\n"), "{info:?}");
    assert!(info.contains("+RW\r\n+update"), "{info:?}");
    let info = raw.call(&["COMMAND", "INFO", "httl"]);
    assert!(info.contains("+readonly\r\n+fast"), "{info:?}");
    assert!(info.contains("+RO\r\n+access"), "{info:?}");
}

#[test]
fn expired_fields_vanish_from_reads_and_active_expiry_deletes_the_rest() {
    let s = Shoal::start(&[]);
    let mut c = s.client();
    // 50 hashes whose fields all expire, 50 that keep one field.
    let first_set = Instant::now();
    for k in 0..100 {
        let key = format!("h{k}");
        let _: i64 = q(&mut c, &["HSET", &key, "a", "1", "b", "2", "keep", "3"]);
        let mut cmd = vec!["HPEXPIRE", &key, "100", "FIELDS"];
        if k < 50 {
            cmd.extend(["3", "a", "b", "keep"]);
        } else {
            cmd.extend(["2", "a", "b"]);
        }
        let _: Vec<i64> = q(&mut c, &cmd);
    }
    let _: i64 = q(&mut c, &["HSET", "lazy", "a", "1", "b", "2"]);
    let _: Vec<i64> = q(&mut c, &["HPEXPIRE", "lazy", "100", "FIELDS", "1", "a"]);
    let deadline = Instant::now() + Duration::from_millis(100);
    // Nothing is gone early (checked only while the earliest deadline is surely ahead: a slow
    // machine may take longer than that to get here).
    let n: i64 = q(&mut c, &["DBSIZE"]);
    if Instant::now() < first_set + Duration::from_millis(100) {
        assert_eq!(n, 101);
    }
    while Instant::now() < deadline + Duration::from_millis(20) {
        std::thread::sleep(Duration::from_millis(5));
    }
    // Every hash command stops seeing the field at its deadline.
    let v: Option<String> = q(&mut c, &["HGET", "lazy", "a"]);
    assert_eq!(v, None);
    assert_eq!(q::<i64>(&mut c, &["HLEN", "lazy"]), 1);
    // Active expiry deletes the rest without any access: 50 keys go, 50 keep one field (DBSIZE
    // and INFO touch no key).
    wait_until("active field expiry", || {
        q::<i64>(&mut c, &["DBSIZE"]) == 51
            && info_u64(&mut c, "stats", "expired_subkeys") == 50 * 3 + 50 * 2 + 1
    });
    for k in [0, 49] {
        assert_eq!(q::<i64>(&mut c, &["EXISTS", &format!("h{k}")]), 0);
    }
    let rest: Vec<String> = q(&mut c, &["HGETALL", "h77"]);
    assert_eq!(rest, ["keep", "3"]);
}

#[test]
fn field_ttls_and_field_expiry_replicate_and_a_replica_only_hides_expired_fields() {
    let p = Shoal::start(&[]);
    let r = Shoal::start(&[]);
    let mut pc = p.client();
    let mut rc = r.client();
    // Written before the replica connects: travels in the full sync's snapshot.
    let _: i64 = q(&mut pc, &["HSET", "pre", "a", "1", "b", "2"]);
    let _: Vec<i64> = q(&mut pc, &["HEXPIRE", "pre", "1000", "FIELDS", "1", "a"]);
    follow(&r, &p);
    caught_up(&r, &p);
    assert_eq!(
        ints(&mut rc, &["HPEXPIRETIME", "pre", "FIELDS", "2", "a", "b"]),
        ints(&mut pc, &["HPEXPIRETIME", "pre", "FIELDS", "2", "a", "b"])
    );
    let _: i64 = q(&mut pc, &["HSET", "h", "a", "1", "b", "2", "c", "3"]);
    let _: Vec<i64> = q(&mut pc, &["HEXPIRE", "h", "1000", "FIELDS", "2", "a", "b"]);
    let _: Vec<i64> = q(&mut pc, &["HPERSIST", "h", "FIELDS", "1", "b"]);
    let _: i64 = q(&mut pc, &["HINCRBY", "h", "a", "5"]);
    caught_up(&r, &p);
    let at_p = ints(
        &mut pc,
        &["HPEXPIRETIME", "h", "FIELDS", "3", "a", "b", "c"],
    );
    let at_r = ints(
        &mut rc,
        &["HPEXPIRETIME", "h", "FIELDS", "3", "a", "b", "c"],
    );
    assert_eq!(at_p, at_r);
    assert_eq!(at_r[1..], [-1, -1]);
    let v: String = q(&mut rc, &["HGET", "h", "a"]);
    assert_eq!(v, "6");
    // A field expiring on the primary: the primary's deletion reaches the replica. Pause the
    // primary's writes first (which stops its active expiry), so the replica is seen hiding the
    // field on its own without deleting it.
    let _: Vec<i64> = q(&mut pc, &["HPEXPIRE", "h", "200", "FIELDS", "1", "c"]);
    caught_up(&r, &p);
    let _: () = q(&mut pc, &["CLIENT", "PAUSE", "2000", "WRITE"]);
    let until = Instant::now() + Duration::from_millis(250);
    while Instant::now() < until {
        std::thread::sleep(Duration::from_millis(10));
    }
    let v: Option<String> = q(&mut rc, &["HGET", "h", "c"]);
    assert_eq!(v, None, "the replica hides an expired field");
    assert_eq!(ints(&mut rc, &["HTTL", "h", "FIELDS", "1", "c"]), [-2]);
    assert_eq!(q::<i64>(&mut rc, &["HLEN", "h"]), 2);
    assert_eq!(
        info_u64(&mut rc, "stats", "expired_subkeys"),
        0,
        "but deletes nothing"
    );
    let _: () = q(&mut pc, &["CLIENT", "UNPAUSE"]);
    wait_until("primary expires the field", || {
        info_u64(&mut pc, "stats", "expired_subkeys") == 1
    });
    caught_up(&r, &p);
    // Now gone on the replica too.
    let all: Vec<String> = q(&mut rc, &["HGETALL", "h"]);
    assert_eq!(all.len(), 4);
    // The whole hash expiring field by field deletes the key on the replica.
    let _: Vec<i64> = q(&mut pc, &["HPEXPIRE", "h", "50", "FIELDS", "2", "a", "b"]);
    wait_until("replica loses the key", || {
        q::<i64>(&mut rc, &["EXISTS", "h"]) == 0
    });
}

#[test]
fn field_ttls_survive_a_snapshot_restart_copy_and_rename() {
    let dir = scratch_dir("hfe");
    let set_dir = format!("dir={}", dir.display());
    {
        let s = Shoal::start(&["--set", &set_dir]);
        let mut c = s.client();
        let _: i64 = q(&mut c, &["HSET", "h", "a", "1", "b", "2"]);
        let _: Vec<i64> = q(&mut c, &["HEXPIRE", "h", "1000", "FIELDS", "1", "a"]);
        let _: i64 = q(&mut c, &["COPY", "h", "copy"]);
        let _: () = q(&mut c, &["RENAME", "h", "renamed"]);
        let dump: Vec<u8> = q(&mut c, &["DUMP", "renamed"]);
        let _: () = redis::cmd("RESTORE")
            .arg("restored")
            .arg(0)
            .arg(dump)
            .query(&mut c)
            .unwrap();
        let _: () = q(&mut c, &["SAVE"]);
    }
    let s = Shoal::start(&["--set", &set_dir]);
    let mut c = s.client();
    for k in ["copy", "renamed", "restored"] {
        let t = ints(&mut c, &["HTTL", k, "FIELDS", "2", "a", "b"]);
        assert!((990..=1000).contains(&t[0]) && t[1] == -1, "{k}: {t:?}");
        let enc: String = q(&mut c, &["OBJECT", "ENCODING", k]);
        assert_eq!(enc, "listpackex", "{k}");
    }
    let _ = std::fs::remove_dir_all(&dir);
}

/// The keyspace events Redis 7.4 raises (class `h`): `hexpire` when deadlines are set, `hdel`
/// (and `del` for the last field) when a time in the past deletes fields, `hpersist`, and
/// `hexpired` (then `del`) when fields expire, lazily or actively.
#[test]
fn field_expiry_raises_redis_7_4_keyspace_events() {
    let s = Shoal::start(&[]);
    let mut c = s.raw();
    c.call(&["CONFIG", "SET", "notify-keyspace-events", "Khg"]);
    let mut sub = s.raw();
    sub.call(&["PSUBSCRIBE", "__keyspace@0__:*"]);
    sub.call(&["PSUBSCRIBE", "end"]);
    c.call(&["HSET", "h", "a", "1", "b", "2", "c", "3"]);
    c.call(&["HEXPIRE", "h", "100", "FIELDS", "1", "a"]);
    c.call(&["HEXPIRE", "h", "100", "NX", "FIELDS", "1", "a"]); // condition not met: no event
    c.call(&["HPERSIST", "h", "FIELDS", "1", "a"]);
    c.call(&["HPERSIST", "h", "FIELDS", "1", "a"]); // no TTL: no event
    c.call(&["HEXPIRE", "h", "0", "FIELDS", "1", "a"]);
    // Lazy: a read after the deadline.
    c.call(&["HPEXPIRE", "h", "20", "FIELDS", "1", "b"]);
    std::thread::sleep(Duration::from_millis(40));
    c.call(&["HGET", "h", "b"]);
    // Active: the last field expires without any access.
    c.call(&["HPEXPIRE", "h", "20", "FIELDS", "1", "c"]);
    wait_until("the hash expires", || c.call(&["DBSIZE"]) == ":0\r\n");
    // The cron publishes its events after its pass: read the expected count (each read is
    // bounded by the connection's timeout), then the end marker must come next.
    let mut next = || {
        let reply = String::from_utf8_lossy(&sub.reply()).into_owned();
        let parts: Vec<String> = reply.split("\r\n").map(str::to_string).collect();
        format!("{} {}", parts[6], parts[8])
    };
    let got: Vec<String> = (0..9).map(|_| next()).collect();
    c.call(&["PUBLISH", "end", "."]);
    assert_eq!(next(), "end .", "no further events");
    let k = "__keyspace@0__:h";
    let want: Vec<String> = [
        "hset", "hexpire", "hpersist", "hdel", "hexpire", "hexpired", "hexpire", "hexpired", "del",
    ]
    .iter()
    .map(|e| format!("{k} {e}"))
    .collect();
    assert_eq!(got, want);
}

/// Random writes with short field TTLs on a primary, fields expiring lazily and actively while the
/// writes go on: once every deadline has passed and the primary has deleted the expired fields,
/// the replica holds exactly what the primary holds (slot digests cover field deadlines).
#[test]
fn random_writes_with_short_field_ttls_leave_a_replica_equal_to_its_primary() {
    let p = Shoal::start(&[]);
    let r = Shoal::start(&[]);
    follow(&r, &p);
    let mut c = p.client();
    let mut rng = Rng::new(0x4fe);
    let started = Instant::now();
    for _ in 0..2_000 {
        let key = format!("h{}", rng.below(20));
        let f = |rng: &mut Rng| format!("f{}", rng.below(8));
        let (a, b) = (f(&mut rng), f(&mut rng));
        let ms = (1 + rng.below(200)).to_string();
        let cmd: Vec<&str> = match rng.below(8) {
            0 | 1 => vec!["HSET", &key, &a, "v", &b, "w"],
            2 => vec!["HDEL", &key, &a],
            3 | 4 => vec!["HPEXPIRE", &key, &ms, "FIELDS", "2", &a, &b],
            5 => vec!["HPERSIST", &key, "FIELDS", "1", &a],
            6 => vec!["HINCRBY", &key, &a, "1"],
            _ => vec!["HGETALL", &key],
        };
        // HINCRBY on a non-integer value is an error; everything else succeeds.
        let _: redis::RedisResult<redis::Value> = try_q(&mut c, &cmd);
    }
    assert!(started.elapsed() < Duration::from_secs(60));
    // Every deadline was at most 200 ms after the last write: wait until no hash holds a field
    // deadline any more (HPEXPIRETIME reads expire lazily too), then compare.
    wait_until("every field deadline passed and expired", || {
        (0..20).all(|k| {
            let key = format!("h{k}");
            let t: Vec<i64> = (0..8)
                .flat_map(|i| {
                    ints(
                        &mut c,
                        &["HPEXPIRETIME", &key, "FIELDS", "1", &format!("f{i}")],
                    )
                })
                .collect();
            t.iter().all(|&x| x < 0)
        })
    });
    caught_up(&r, &p);
    let digests = |s: &Shoal| -> Vec<String> { q(&mut s.client(), &["SLOTDIGEST", "0", "16383"]) };
    assert!(digests(&p) == digests(&r), "the replica differs");
    assert_eq!(
        q::<i64>(&mut p.client(), &["DBSIZE"]),
        q::<i64>(&mut r.client(), &["DBSIZE"])
    );
    assert!(
        info_u64(&mut c, "stats", "expired_subkeys") > 0,
        "fields did expire"
    );
}
