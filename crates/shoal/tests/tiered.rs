//! The disk tier (`tiered-storage yes`) with real processes: a data set five times `maxmemory`
//! written and read back whole (values, versions, deadlines); writes, deletes and expirations of
//! keys whose values are on disk; metadata reads that do not touch the disk; a replica fully
//! synchronised from a primary whose data is mostly on disk; SAVE and restart with cold keys.
//!
//! `maxmemory` is small (4 MB) and values large (4 KB), so each test runs in seconds. Every
//! wait is bounded (`wait_until`).

mod common;

use common::*;

/// `maxmemory` of the tiered nodes.
const MAXMEMORY: &str = "4mb";
const MAXMEMORY_BYTES: usize = 4 << 20;
/// Bytes of each string value.
const VALUE_BYTES: usize = 4096;

fn tiered(extra: &[&str]) -> Shoal {
    let mut args = vec![
        "--maxmemory",
        MAXMEMORY,
        "--maxmemory-policy",
        "allkeys-lru",
        "--tiered-storage",
        "yes",
        "--tiered-storage-max-bytes",
        "256mb",
    ];
    args.extend_from_slice(extra);
    Shoal::start(&args)
}

fn key(i: usize) -> String {
    format!("key:{i:06}")
}

/// A value that names its key and differs from every other key's.
fn value(i: usize, round: u32) -> String {
    let unit = format!("{i:06}-{round}-");
    unit.repeat(VALUE_BYTES / unit.len() + 1)[..VALUE_BYTES].to_string()
}

/// What a key should hold.
#[derive(Debug, Clone, PartialEq)]
struct Expect {
    value: String,
    version: i64,
    /// PEXPIRETIME (-1: none).
    expire_at_ms: i64,
}

/// Writes `n` string keys (every third with a TTL of an hour) and returns what each holds.
fn fill(c: &mut redis::Connection, n: usize) -> Vec<Expect> {
    let mut out = Vec::with_capacity(n);
    for chunk in (0..n).collect::<Vec<_>>().chunks(100) {
        let mut p = redis::pipe();
        for &i in chunk {
            if i % 3 == 0 {
                p.cmd("SET")
                    .arg(key(i))
                    .arg(value(i, 0))
                    .arg("PX")
                    .arg(3_600_000);
            } else {
                p.cmd("SET").arg(key(i)).arg(value(i, 0));
            }
            // Read back at once, while the value is still in memory.
            p.cmd("GETVER").arg(key(i));
            p.cmd("PEXPIRETIME").arg(key(i));
        }
        let replies: Vec<redis::Value> = p.query(c).expect("fill pipeline");
        for (j, &i) in chunk.iter().enumerate() {
            let (v, version): (String, i64) =
                redis::from_redis_value(replies[j * 3 + 1].clone()).expect("getver");
            let at: i64 = redis::from_redis_value(replies[j * 3 + 2].clone()).expect("pexpiretime");
            assert_eq!(v, value(i, 0));
            out.push(Expect {
                value: v,
                version,
                expire_at_ms: at,
            });
        }
    }
    out
}

/// Reads every key back (in a shuffled order) and compares value, version and deadline.
fn check_all(c: &mut redis::Connection, want: &[Expect]) {
    let mut order: Vec<usize> = (0..want.len()).collect();
    let mut rng = Rng::new(7);
    for i in (1..order.len()).rev() {
        order.swap(i, rng.below(i as u64 + 1) as usize);
    }
    for chunk in order.chunks(100) {
        let mut p = redis::pipe();
        for &i in chunk {
            p.cmd("GETVER").arg(key(i));
            p.cmd("PEXPIRETIME").arg(key(i));
        }
        let replies: Vec<redis::Value> = p.query(c).expect("check pipeline");
        for (j, &i) in chunk.iter().enumerate() {
            let got: Option<(String, i64)> =
                redis::from_redis_value(replies[j * 2].clone()).expect("getver");
            let Some((v, version)) = got else {
                let tiered: String = q(c, &["INFO", "tiered"]);
                let evicted = info_u64(c, "stats", "evicted_keys");
                panic!("{} is missing; evicted_keys {evicted}; {tiered}", key(i));
            };
            let at: i64 = redis::from_redis_value(replies[j * 2 + 1].clone()).expect("pexpiretime");
            let e = &want[i];
            assert!(v == e.value, "{} holds another value", key(i));
            assert_eq!(version, e.version, "{} version", key(i));
            assert_eq!(at, e.expire_at_ms, "{} deadline", key(i));
        }
    }
}

fn keys_on_disk(c: &mut redis::Connection) -> u64 {
    info_u64(c, "tiered", "tiered_keys_on_disk")
}

#[test]
fn a_data_set_five_times_maxmemory_is_read_back_whole() {
    let s = tiered(&[]);
    let mut c = s.client();
    let n = 5 * MAXMEMORY_BYTES / VALUE_BYTES;
    let want = fill(&mut c, n);
    // Most of it is on disk, nothing was evicted.
    let cold = keys_on_disk(&mut c);
    assert!(cold as usize > n / 2, "only {cold} of {n} keys on disk");
    assert_eq!(info_u64(&mut c, "stats", "evicted_keys"), 0);
    assert_eq!(q::<usize>(&mut c, &["DBSIZE"]), n);
    // Collections go there too: a hash and a list written now push older values out.
    let fields: Vec<(String, String)> = (0..50)
        .map(|f| (format!("f{f}"), format!("{f}-").repeat(40)))
        .collect();
    let mut hset = redis::cmd("HSET");
    hset.arg("hash");
    for (f, v) in &fields {
        hset.arg(f).arg(v);
    }
    let _: () = hset.query(&mut c).unwrap();
    let list: Vec<String> = (0..50).map(|i| format!("{i}-").repeat(40)).collect();
    let _: () = redis::cmd("RPUSH")
        .arg("list")
        .arg(&list)
        .query(&mut c)
        .unwrap();
    check_all(&mut c, &want);
    let all: std::collections::HashMap<String, String> =
        redis::cmd("HGETALL").arg("hash").query(&mut c).unwrap();
    assert_eq!(all.len(), 50);
    for (f, v) in &fields {
        assert_eq!(all.get(f), Some(v));
    }
    let got: Vec<String> = q(&mut c, &["LRANGE", "list", "0", "-1"]);
    assert_eq!(got, list);
    // Reads loaded values back, and the node stayed under its limit as it did.
    assert!(info_u64(&mut c, "tiered", "tiered_promotions") > 0);
    assert_eq!(info_u64(&mut c, "tiered", "tiered_read_misses"), 0);
    assert_eq!(info_u64(&mut c, "stats", "evicted_keys"), 0);
    let used = info_u64(&mut c, "memory", "used_memory");
    let not_counted = info_u64(&mut c, "memory", "mem_not_counted_for_evict");
    assert!(
        used - not_counted <= MAXMEMORY_BYTES as u64 + 2 * VALUE_BYTES as u64 * 100,
        "used {used} (not counted {not_counted})"
    );
}

/// A tiered node whose disk tier is `tier` (e.g. "16mb").
fn tiered_small(tier: &str) -> Shoal {
    tiered_sized(MAXMEMORY, tier)
}

/// A tiered node with this `maxmemory` and disk tier.
fn tiered_sized(maxmemory: &str, tier: &str) -> Shoal {
    Shoal::start(&[
        "--maxmemory",
        maxmemory,
        "--maxmemory-policy",
        "allkeys-lru",
        "--tiered-storage",
        "yes",
        "--tiered-storage-max-bytes",
        tier,
    ])
}

/// Disk footprint of one test value: foyer writes whole 4 KB pages, and a 4 KB value with its
/// headers takes two.
const VALUE_DISK_BYTES: usize = 8192;

#[test]
fn a_small_tier_that_holds_the_live_data_loses_no_key_through_reclaims() {
    // 32 MB of tier: values may fill 75% of it (24 MB, 3072 values); 4500 keys of which about
    // 1600 are on disk (13 MB: a 4 KB value takes 5 KB of memory, the allocator's size class),
    // then every key read five times over in shuffled
    // order: each read puts a value back in memory and pushes another out, so foyer reclaims
    // its blocks over and over while the live values still fit. (Before values went to foyer in
    // bounded batches and the fill was capped, foyer's reclaim lost 60-90 keys of such a test
    // with 4 MB of memory and 8 MB of tier, in one run of two.)
    const TIER_BYTES: usize = 32 << 20;
    let s = tiered_sized("16mb", "32mb");
    let mut c = s.client();
    let n = 4500;
    let want = fill(&mut c, n);
    let cold = keys_on_disk(&mut c) as usize;
    assert!(cold > n / 6, "only {cold} of {n} keys on disk");
    assert!(
        cold * VALUE_DISK_BYTES <= TIER_BYTES * 3 / 4,
        "{cold} keys on disk do not fit"
    );
    for _ in 0..5 {
        check_all(&mut c, &want);
    }
    // Values went out and came back: what was written takes several times the tier's size.
    let writes = info_u64(&mut c, "tiered", "tiered_writes") as usize;
    assert!(
        writes * VALUE_DISK_BYTES > 2 * TIER_BYTES,
        "only {writes} values written to the tier"
    );
    assert_eq!(info_u64(&mut c, "tiered", "tiered_read_misses"), 0);
    assert_eq!(info_u64(&mut c, "tiered", "tiered_dropped_full"), 0);
    assert_eq!(info_u64(&mut c, "stats", "evicted_keys"), 0);
    assert_eq!(q::<usize>(&mut c, &["DBSIZE"]), n);
}

#[test]
fn a_tier_too_small_for_the_data_drops_victims_and_counts_them() {
    // 4 MB of tier holds at most 3 MB of values (384 of these): writing 2000 keys (about 1100
    // beyond memory) must evict, and say so; no key is lost silently (every key present holds
    // its value, and the keys missing are exactly those counted as evicted).
    let s = tiered_small("4mb");
    let mut c = s.client();
    let n = 2000;
    let mut want = Vec::new();
    for chunk in (0..n).collect::<Vec<_>>().chunks(100) {
        let mut p = redis::pipe();
        for &i in chunk {
            p.cmd("SET").arg(key(i)).arg(value(i, 0)).ignore();
        }
        let _: () = p.query(&mut c).expect("fill pipeline");
        want.extend(chunk.iter().map(|&i| value(i, 0)));
    }
    let dropped = info_u64(&mut c, "tiered", "tiered_dropped_full");
    let evicted = info_u64(&mut c, "stats", "evicted_keys");
    assert!(dropped > 0, "the tier never said it was full");
    assert!(evicted >= dropped, "evicted {evicted} < dropped {dropped}");
    let on_disk = info_u64(&mut c, "tiered", "tiered_bytes_on_disk");
    assert!(on_disk <= 3 << 20, "{on_disk} bytes on a 4 MB tier");
    assert_eq!(q::<u64>(&mut c, &["DBSIZE"]), n as u64 - evicted);
    // Reading a cold key back pushes another out, and the tier being full, that one is evicted:
    // a key is missing only if it was evicted before it was read.
    let mut missing = 0;
    for (i, v) in want.iter().enumerate() {
        match q::<Option<String>>(&mut c, &["GET", &key(i)]) {
            Some(got) => assert!(&got == v, "{} holds another value", key(i)),
            None => missing += 1,
        }
    }
    let evicted = info_u64(&mut c, "stats", "evicted_keys");
    assert!(
        missing <= evicted,
        "{missing} keys missing, {evicted} evicted"
    );
    assert_eq!(info_u64(&mut c, "tiered", "tiered_read_misses"), 0);
    // FLUSHALL gives the room back: the tier, full before, takes values again.
    let _: () = q(&mut c, &["FLUSHALL"]);
    assert_eq!(info_u64(&mut c, "tiered", "tiered_bytes_on_disk"), 0);
    assert_eq!(keys_on_disk(&mut c), 0);
    for i in 0..650 {
        let _: () = q(&mut c, &["SET", &key(i), &value(i, 1)]);
    }
    let cold = keys_on_disk(&mut c);
    assert!(cold > 0, "no value went to the tier after FLUSHALL");
    assert!(info_u64(&mut c, "tiered", "tiered_bytes_on_disk") <= 3 << 20);
}

#[test]
fn writes_deletes_and_expirations_of_cold_keys() {
    let s = tiered(&[]);
    let mut c = s.client();
    let n = 3 * MAXMEMORY_BYTES / VALUE_BYTES;
    // 100 keys that expire soon, written first (so they go to disk first).
    for i in 0..100 {
        let _: () = redis::cmd("SET")
            .arg(format!("short:{i}"))
            .arg(value(i, 1))
            .arg("PX")
            .arg(1500)
            .query(&mut c)
            .unwrap();
    }
    let _ = fill(&mut c, n);
    assert!(keys_on_disk(&mut c) as usize > n / 2);
    // Metadata reads of a cold key do not read the disk.
    // The first keys written are the least recently used: on disk by now.
    let first_cold = 0;
    let reads = info_u64(&mut c, "tiered", "tiered_reads");
    assert_eq!(q::<String>(&mut c, &["TYPE", &key(first_cold)]), "string");
    assert_eq!(q::<i64>(&mut c, &["EXISTS", &key(first_cold)]), 1);
    assert_eq!(q::<i64>(&mut c, &["TTL", &key(first_cold + 1)]), -1);
    assert_eq!(
        q::<String>(&mut c, &["OBJECT", "ENCODING", &key(first_cold)]),
        "raw"
    );
    assert_eq!(info_u64(&mut c, "tiered", "tiered_reads"), reads);
    // APPEND to a cold string loads it first. Which of the early keys are on disk depends on
    // the eviction samples and on when the tier's writer ran, so the first one (of a bounded
    // range not used below) whose APPEND read the disk is the one checked.
    let cold_append = (200..400).find(|&i| {
        let reads = info_u64(&mut c, "tiered", "tiered_reads");
        let _: i64 = q(&mut c, &["APPEND", &key(i), "tail"]);
        let got: String = q(&mut c, &["GET", &key(i)]);
        assert_eq!(got, format!("{}tail", value(i, 0)));
        info_u64(&mut c, "tiered", "tiered_reads") > reads
    });
    assert!(
        cold_append.is_some(),
        "no APPEND in keys 200..400 read a cold value"
    );
    // SET over a cold key needs no read; DEL and UNLINK drop the handle.
    let reads = info_u64(&mut c, "tiered", "tiered_reads");
    let _: () = q(&mut c, &["SET", &key(102), "new"]);
    assert_eq!(info_u64(&mut c, "tiered", "tiered_reads"), reads);
    assert_eq!(q::<String>(&mut c, &["GET", &key(102)]), "new");
    let before = keys_on_disk(&mut c);
    assert_eq!(q::<i64>(&mut c, &["DEL", &key(103), &key(104)]), 2);
    assert_eq!(q::<i64>(&mut c, &["UNLINK", &key(105)]), 1);
    assert!(keys_on_disk(&mut c) < before);
    assert_eq!(info_u64(&mut c, "tiered", "tiered_reads"), reads);
    for k in [103, 104, 105] {
        assert_eq!(q::<Option<String>>(&mut c, &["GET", &key(k)]), None);
    }
    // EXPIRE on a cold key, then the deadline passes: it goes like any key.
    let _: i64 = q(&mut c, &["PEXPIRE", &key(106), "1"]);
    wait_until("key 106 expired", || {
        q::<i64>(&mut c, &["EXISTS", &key(106)]) == 0
    });
    // The short-lived keys expire on disk (active expiry finds them without reading them).
    wait_until("short-lived cold keys expired", || {
        q::<usize>(&mut c, &["DBSIZE"]) == n - 4
    });
    for i in 0..100 {
        assert_eq!(
            q::<Option<String>>(&mut c, &["GET", &format!("short:{i}")]),
            None
        );
    }
    assert_eq!(info_u64(&mut c, "stats", "evicted_keys"), 0);
    assert!(info_u64(&mut c, "stats", "expired_keys") >= 101);
    // A transaction over cold keys fetches them all first.
    let (a, b): (String, String) = redis::pipe()
        .atomic()
        .cmd("GET")
        .arg(key(110))
        .cmd("GET")
        .arg(key(111))
        .query(&mut c)
        .unwrap();
    assert_eq!((a, b), (value(110, 0), value(111, 0)));
}

#[test]
fn a_replica_fully_synchronised_from_a_primary_mostly_on_disk() {
    let p = tiered(&[]);
    let mut c = p.client();
    let n = 5 * MAXMEMORY_BYTES / VALUE_BYTES;
    let want = fill(&mut c, n);
    assert!(keys_on_disk(&mut c) as usize > n / 2);
    let r = Shoal::start(&[]);
    follow(&r, &p);
    caught_up(&r, &p);
    let digests = |s: &Shoal| -> Vec<String> { q(&mut s.client(), &["SLOTDIGEST", "0", "16383"]) };
    assert_eq!(digests(&r), digests(&p));
    let mut rc = r.client();
    assert_eq!(q::<usize>(&mut rc, &["DBSIZE"]), n);
    check_all(&mut rc, &want);
    // `shoal verify` agrees.
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_shoal"))
        .args(["verify", "--quiet", &p.addr()])
        .output()
        .expect("run shoal verify");
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
}

#[test]
fn save_and_restart_with_cold_keys() {
    let dir = scratch_dir("tiered-restart");
    let d = dir.to_str().unwrap();
    let want = {
        let s = tiered(&["--dir", d]);
        let mut c = s.client();
        let want = fill(&mut c, 3 * MAXMEMORY_BYTES / VALUE_BYTES);
        assert!(keys_on_disk(&mut c) > 0);
        let _: () = q(&mut c, &["SAVE"]);
        want
    };
    let s = tiered(&["--dir", d]);
    let mut c = s.client();
    assert_eq!(q::<usize>(&mut c, &["DBSIZE"]), want.len());
    check_all(&mut c, &want);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn config_set_appendonly_starts_and_stops_the_log_at_run_time() {
    let dir = scratch_dir("appendonly-runtime");
    let d = dir.to_str().unwrap();
    {
        let s = Shoal::start(&["--dir", d, "--appendfsync", "always"]);
        let mut c = s.client();
        for i in 0..50 {
            let _: () = q(&mut c, &["SET", &format!("before:{i}"), &i.to_string()]);
        }
        assert_eq!(info_u64(&mut c, "persistence", "aof_enabled"), 0);
        let _: () = q(&mut c, &["CONFIG", "SET", "appendonly", "yes"]);
        wait_until("the log is on", || {
            info_u64(&mut c, "persistence", "aof_enabled") == 1
                && info_u64(&mut c, "persistence", "aof_rewrite_in_progress") == 0
        });
        assert_eq!(
            q::<Vec<String>>(&mut c, &["CONFIG", "GET", "appendonly"]),
            ["appendonly", "yes"]
        );
        // A connection made now waits for the log's fsync (`appendfsync always`) before each
        // reply: a kill -9 after the replies loses nothing.
        let mut c2 = s.client();
        for i in 0..50 {
            let _: () = q(&mut c2, &["SET", &format!("after:{i}"), &i.to_string()]);
        }
        s.signal("-KILL");
    }
    let s = Shoal::start(&["--dir", d, "--appendonly", "yes"]);
    let mut c = s.client();
    assert_eq!(q::<usize>(&mut c, &["DBSIZE"]), 100);
    assert_eq!(q::<String>(&mut c, &["GET", "before:7"]), "7");
    assert_eq!(q::<String>(&mut c, &["GET", "after:49"]), "49");
    // And off again: the writer stops.
    let _: () = q(&mut c, &["CONFIG", "SET", "appendonly", "no"]);
    wait_until("the log is off", || {
        info_u64(&mut c, "persistence", "aof_enabled") == 0
    });
    let _: () = q(&mut c, &["SET", "still", "works"]);
    assert_eq!(q::<String>(&mut c, &["GET", "still"]), "works");
    drop(s);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn sort_by_and_get_patterns_read_keys_whose_values_are_on_disk() {
    let s = tiered(&[]);
    let mut c = s.client();
    // 50 hashes (a weight and 4 KB of padding) and 50 strings SORT reads by pattern, and a
    // list of 100-byte elements sorted itself; then enough keys to push them all to disk.
    let pad = "p".repeat(VALUE_BYTES);
    for i in 0..50 {
        let weight = (50 - i).to_string();
        let _: () = q(
            &mut c,
            &["HSET", &format!("obj:{i}"), "w", &weight, "pad", &pad],
        );
        let _: () = q(&mut c, &["SET", &format!("data:{i}"), &value(i, 9)]);
        let _: () = q(&mut c, &["RPUSH", "ids", &i.to_string()]);
    }
    let elements: Vec<String> = (0..100).map(|i| format!("{i:03}-").repeat(25)).collect();
    let _: () = redis::cmd("RPUSH")
        .arg("big")
        .arg(&elements)
        .query(&mut c)
        .unwrap();
    let _ = fill(&mut c, 3 * MAXMEMORY_BYTES / VALUE_BYTES);
    let reads = info_u64(&mut c, "tiered", "tiered_reads");
    // Ascending weight is descending i; GET # and GET data:* for each.
    let got: Vec<String> = q(
        &mut c,
        &["SORT", "ids", "BY", "obj:*->w", "GET", "#", "GET", "data:*"],
    );
    let want: Vec<String> = (0..50)
        .rev()
        .flat_map(|i| [i.to_string(), value(i, 9)])
        .collect();
    assert_eq!(got, want);
    // Most of the 100 pattern keys were on disk (eviction samples: a few may not be).
    assert!(
        info_u64(&mut c, "tiered", "tiered_reads") >= reads + 50,
        "the pattern keys were not on disk"
    );
    // In a transaction too, after the values went back to disk.
    let _ = fill(&mut c, 3 * MAXMEMORY_BYTES / VALUE_BYTES);
    let (got,): (Vec<String>,) = redis::pipe()
        .atomic()
        .cmd("SORT")
        .arg(&["ids", "BY", "obj:*->w", "GET", "#", "GET", "data:*"])
        .query(&mut c)
        .unwrap();
    assert_eq!(got, want);
    // SORT_RO reads hash fields by GET too.
    let got: Vec<Option<String>> = q(
        &mut c,
        &["SORT_RO", "ids", "LIMIT", "0", "3", "GET", "obj:*->w"],
    );
    assert_eq!(
        got,
        [Some("50".into()), Some("49".into()), Some("48".into())]
    );
    // A cold list sorted itself, stored elsewhere.
    let _ = fill(&mut c, 3 * MAXMEMORY_BYTES / VALUE_BYTES);
    let reads = info_u64(&mut c, "tiered", "tiered_reads");
    let n: i64 = q(&mut c, &["SORT", "big", "ALPHA", "DESC", "STORE", "sorted"]);
    assert_eq!(n, 100);
    assert!(info_u64(&mut c, "tiered", "tiered_reads") > reads);
    let mut desc = elements.clone();
    desc.reverse();
    assert_eq!(
        q::<Vec<String>>(&mut c, &["LRANGE", "sorted", "0", "-1"]),
        desc
    );
}

#[test]
fn a_replica_resumes_by_partial_resync_while_its_primary_writes_cold_keys() {
    let p = tiered(&[]);
    let mut pc = p.client();
    let n = 4 * MAXMEMORY_BYTES / VALUE_BYTES;
    let want = fill(&mut pc, n);
    assert!(keys_on_disk(&mut pc) as usize > n / 2);
    // Full sync from a primary mostly on disk.
    let r = Shoal::start(&[]);
    follow(&r, &p);
    caught_up(&r, &p);
    let mut rc = r.client();
    // Under load the primary may evict some keys while it sends the copy (its output to the
    // replica counts against `maxmemory`); the replica has what the primary has.
    wait_until("the replica has what the primary has", || {
        q::<usize>(&mut rc, &["DBSIZE"]) == q::<usize>(&mut pc, &["DBSIZE"])
    });
    // The keys written first (on disk), of those the primary still has.
    let k: Vec<usize> = (0..n)
        .filter(|&i| q::<i64>(&mut pc, &["EXISTS", &key(i)]) == 1)
        .take(7)
        .collect();
    let full = info_u64(&mut pc, "stats", "sync_full");
    let partial = info_u64(&mut pc, "stats", "sync_partial_ok");
    // The link drops; meanwhile the primary writes keys whose values are on disk (the first
    // written); the replica comes back with a partial resync.
    let _: i64 = q(&mut rc, &["CLIENT", "KILL", "TYPE", "master"]);
    let reads = info_u64(&mut pc, "tiered", "tiered_reads");
    let _: i64 = q(&mut pc, &["APPEND", &key(k[0]), "tail"]);
    let _: () = q(&mut pc, &["RENAME", &key(k[1]), "moved"]);
    let _: i64 = q(&mut pc, &["COPY", &key(k[2]), "copy"]);
    let _: i64 = q(&mut pc, &["DEL", &key(k[3])]);
    let _: i64 = q(&mut pc, &["SETRANGE", &key(k[4]), "0", "XY"]);
    let _: Option<String> = q(&mut pc, &["GETDEL", &key(k[5])]);
    let _: i64 = q(&mut pc, &["PEXPIRE", &key(k[6]), "3600000"]);
    assert!(info_u64(&mut pc, "tiered", "tiered_reads") > reads);
    wait_link_up(&mut rc);
    caught_up(&r, &p);
    wait_until("the partial resync counted", || {
        info_u64(&mut pc, "stats", "sync_partial_ok") > partial
    });
    assert_eq!(
        info_u64(&mut pc, "stats", "sync_full"),
        full,
        "no full copy"
    );
    let digests = |s: &Shoal| -> Vec<String> { q(&mut s.client(), &["SLOTDIGEST", "0", "16383"]) };
    assert_eq!(digests(&r), digests(&p));
    let get = |c: &mut redis::Connection, k: &str| q::<Option<String>>(c, &["GET", k]);
    assert_eq!(
        get(&mut rc, &key(k[0])),
        Some(format!("{}tail", value(k[0], 0)))
    );
    assert_eq!(get(&mut rc, "moved"), Some(value(k[1], 0)));
    assert_eq!(get(&mut rc, &key(k[1])), None);
    assert_eq!(get(&mut rc, "copy"), Some(value(k[2], 0)));
    assert_eq!(get(&mut rc, &key(k[3])), None);
    assert_eq!(
        get(&mut rc, &key(k[4])),
        Some(format!("XY{}", &value(k[4], 0)[2..]))
    );
    assert_eq!(get(&mut rc, &key(k[5])), None);
    assert!(q::<i64>(&mut rc, &["PTTL", &key(k[6])]) > 3_000_000);
    for (i, e) in want.iter().enumerate().filter(|(i, _)| !k.contains(i)) {
        // A key the replica lacks was evicted on the primary.
        match get(&mut rc, &key(i)) {
            Some(v) => assert!(v == e.value, "{} on the replica", key(i)),
            None => assert_eq!(get(&mut pc, &key(i)), None, "{} on the replica", key(i)),
        }
    }
}

#[test]
fn appendfsync_always_set_at_run_time_holds_replies_of_connections_opened_before() {
    let dir = scratch_dir("fsync-always-runtime");
    let d = dir.to_str().unwrap();
    let s = Shoal::start(&[
        "--dir",
        d,
        "--appendonly",
        "yes",
        "--appendfsync",
        "everysec",
    ]);
    // A connection that ran a request before the change.
    let mut old = s.client();
    let _: () = q(&mut old, &["SET", "warm", "up"]);
    let mut admin = s.client();
    wait_until("the log is on", || {
        info_u64(&mut admin, "persistence", "aof_enabled") == 1
            && info_u64(&mut admin, "persistence", "aof_rewrite_in_progress") == 0
    });
    let _: () = q(&mut admin, &["CONFIG", "SET", "appendfsync", "always"]);
    // Each write's reply waits for the fsync: right after it, nothing is written and not
    // fsynced (under `everysec` the fsync comes up to a second later).
    for i in 0..20 {
        let _: () = q(&mut old, &["SET", &format!("k{i}"), "v"]);
        assert_eq!(
            info_u64(&mut old, "persistence", "aof_pending_bio_fsync"),
            0,
            "write {i} was answered before its fsync"
        );
    }
    drop(s);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn an_active_active_member_with_values_on_disk_seeds_its_peer_with_the_values() {
    let a = tiered(&[]);
    let mut ac = a.client();
    let n = 3 * MAXMEMORY_BYTES / VALUE_BYTES;
    let want = fill(&mut ac, n);
    assert!(keys_on_disk(&mut ac) as usize > n / 2);
    let b = Shoal::start(&[]);
    let _: () = q(&mut ac, &["CONFIG", "SET", "active-peers", &b.addr()]);
    let mut bc = b.client();
    let _: () = q(&mut bc, &["CONFIG", "SET", "active-peers", &a.addr()]);
    let digests = |s: &Shoal| -> Vec<String> { q(&mut s.client(), &["SLOTDIGEST", "0", "16383"]) };
    wait_until("the members converged", || {
        q::<usize>(&mut bc, &["DBSIZE"]) == n && digests(&a) == digests(&b)
    });
    for (i, e) in want.iter().enumerate() {
        let v = q::<Option<String>>(&mut bc, &["GET", &key(i)]);
        assert!(
            v.as_deref() == Some(e.value.as_str()),
            "{} on the peer",
            key(i)
        );
    }
}
