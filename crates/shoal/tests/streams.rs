//! Streams over the wire: XREAD and XREADGROUP blocking (woken by XADD, `$`, several streams,
//! timeouts, the key or group deleted while waiting), a consumer-group story with its
//! time-dependent fields checked by range, a stream with groups reaching a replica intact, and a
//! stream surviving a snapshot and restart.
//!
//! Every wait is bounded (`wait_until`), every process is stopped when its handle drops.

mod common;

use std::time::{Duration, Instant};

use common::{Raw, Shoal, caught_up, follow, info_u64, q, scratch_dir, wait_until};
use redis::Value;

fn blocked_clients(c: &mut redis::Connection) -> u64 {
    info_u64(c, "clients", "blocked_clients")
}

/// Sends a blocking command and waits until the server counts `n` blocked clients.
fn block(raw: &mut Raw, args: &[&str], c: &mut redis::Connection, n: u64) {
    let a: Vec<&[u8]> = args.iter().map(|s| s.as_bytes()).collect();
    raw.cmd(&a);
    wait_until(&format!("{n} blocked clients"), || blocked_clients(c) == n);
}

fn reply(raw: &mut Raw) -> String {
    String::from_utf8(raw.reply()).unwrap()
}

/// `*1 [key, [[id, [f, v]]]]` as RESP2 bytes.
fn one_entry(key: &str, id: &str, f: &str, v: &str) -> String {
    format!(
        "*1\r\n*2\r\n${}\r\n{key}\r\n*1\r\n*2\r\n${}\r\n{id}\r\n*2\r\n${}\r\n{f}\r\n${}\r\n{v}\r\n",
        key.len(),
        id.len(),
        f.len(),
        v.len()
    )
}

#[test]
fn xread_dollar_blocks_until_an_xadd_and_sees_only_the_new_entry() {
    let s = Shoal::start(&[]);
    let mut c = s.client();
    let _: String = q(&mut c, &["XADD", "s", "1-1", "old", "x"]);
    let mut w = s.raw();
    block(
        &mut w,
        &["XREAD", "BLOCK", "0", "STREAMS", "s", "$"],
        &mut c,
        1,
    );
    // A write to another key does not serve it; the XADD does, with only the new entry.
    let _: String = q(&mut c, &["XADD", "other", "1-1", "a", "b"]);
    let _: String = q(&mut c, &["XADD", "s", "2-1", "new", "y"]);
    assert_eq!(reply(&mut w), one_entry("s", "2-1", "new", "y"));
    assert_eq!(blocked_clients(&mut c), 0);

    // On a key that does not exist yet, `$` is 0-0: the first XADD creates and serves.
    block(
        &mut w,
        &["XREAD", "BLOCK", "0", "STREAMS", "fresh", "$"],
        &mut c,
        1,
    );
    let _: String = q(&mut c, &["XADD", "fresh", "5-5", "k", "v"]);
    assert_eq!(reply(&mut w), one_entry("fresh", "5-5", "k", "v"));
}

#[test]
fn xread_on_several_streams_is_served_by_the_one_written() {
    let s = Shoal::start(&[]);
    let mut c = s.client();
    let _: String = q(&mut c, &["XADD", "a", "1-1", "f", "v"]);
    let _: String = q(&mut c, &["XADD", "b", "1-1", "f", "v"]);
    let mut w = s.raw();
    block(
        &mut w,
        &[
            "XREAD", "COUNT", "5", "BLOCK", "0", "STREAMS", "a", "b", "$", "1-1",
        ],
        &mut c,
        1,
    );
    let _: String = q(&mut c, &["XADD", "b", "2-0", "g", "w"]);
    assert_eq!(reply(&mut w), one_entry("b", "2-0", "g", "w"));
}

#[test]
fn xread_times_out_with_a_null_array_and_waits_through_a_deletion() {
    let s = Shoal::start(&[]);
    let mut c = s.client();
    let mut w = s.raw();
    let t0 = Instant::now();
    assert_eq!(
        w.call(&["XREAD", "BLOCK", "300", "STREAMS", "none", "$"]),
        "*-1\r\n"
    );
    let elapsed = t0.elapsed();
    assert!(elapsed >= Duration::from_millis(300), "{elapsed:?}");
    assert!(elapsed < Duration::from_millis(3_000), "{elapsed:?}");
    assert_eq!(w.call(&["HELLO", "3"]).as_bytes()[0], b'%');
    assert_eq!(
        w.call(&["XREAD", "BLOCK", "50", "STREAMS", "none", "0"]),
        "_\r\n"
    );
    assert_eq!(w.call(&["HELLO", "2"]).as_bytes()[0], b'*');

    // Deleting the key (or turning it into a string) does not end an XREAD: it times out.
    let _: String = q(&mut c, &["XADD", "d", "1-1", "f", "v"]);
    let t0 = Instant::now();
    block(
        &mut w,
        &["XREAD", "BLOCK", "500", "STREAMS", "d", "$"],
        &mut c,
        1,
    );
    let _: i64 = q(&mut c, &["DEL", "d"]);
    let _: () = q(&mut c, &["SET", "d", "string"]);
    assert_eq!(reply(&mut w), "*-1\r\n");
    assert!(t0.elapsed() >= Duration::from_millis(500));
    // Inside MULTI it never blocks.
    assert_eq!(w.call(&["MULTI"]), "+OK\r\n");
    assert_eq!(
        w.call(&["XREAD", "BLOCK", "0", "STREAMS", "nothing", "$"]),
        "+QUEUED\r\n"
    );
    assert_eq!(w.call(&["EXEC"]), "*1\r\n*-1\r\n");
}

/// A stream whose last ID is past the one asked for, but whose entries after it were deleted,
/// has nothing to give: XREAD and XREADGROUP block and time out with a null array (Redis
/// 7.0's fix of issue #5299), rather than answering an empty list for the stream.
#[test]
fn a_blocked_read_of_a_stream_whose_new_entries_were_deleted_times_out_empty() {
    let s = Shoal::start(&[]);
    let mut c = s.client();
    let mut w = s.raw();
    let _: String = q(&mut c, &["XADD", "s1", "666", "f", "v"]);
    let _: String = q(&mut c, &["XADD", "s1", "667", "f2", "v2"]);
    let _: i64 = q(&mut c, &["XDEL", "s1", "667"]);
    for _ in 0..3 {
        let t0 = Instant::now();
        assert_eq!(
            w.call(&["XREAD", "BLOCK", "30", "STREAMS", "s1", "666"]),
            "*-1\r\n"
        );
        assert!(t0.elapsed() >= Duration::from_millis(30));
    }
    let _: () = q(&mut c, &["XGROUP", "CREATE", "g", "grp", "$", "MKSTREAM"]);
    let _: String = q(&mut c, &["XADD", "g", "666", "f", "v"]);
    let read_new = [
        "XREADGROUP",
        "GROUP",
        "grp",
        "alice",
        "BLOCK",
        "30",
        "STREAMS",
        "g",
        ">",
    ];
    let got = w.call(&read_new);
    assert!(got.contains("666-0"), "{got:?}");
    let _: String = q(&mut c, &["XADD", "g", "667", "f2", "v2"]);
    let _: i64 = q(&mut c, &["XDEL", "g", "667"]);
    for _ in 0..3 {
        assert_eq!(w.call(&read_new), "*-1\r\n");
    }
    // A new entry still serves a blocked reader.
    block(
        &mut w,
        &["XREAD", "BLOCK", "0", "STREAMS", "s1", "666"],
        &mut c,
        1,
    );
    let _: String = q(&mut c, &["XADD", "s1", "668", "k", "v"]);
    assert_eq!(reply(&mut w), one_entry("s1", "668-0", "k", "v"));
}

#[test]
fn blocked_xreadgroup_is_served_once_and_errors_when_its_key_or_group_goes() {
    let s = Shoal::start(&[]);
    let mut c = s.client();
    let _: () = q(&mut c, &["XGROUP", "CREATE", "jobs", "g", "$", "MKSTREAM"]);
    let mut w1 = s.raw();
    let mut w2 = s.raw();
    block(
        &mut w1,
        &[
            "XREADGROUP",
            "GROUP",
            "g",
            "alice",
            "BLOCK",
            "0",
            "STREAMS",
            "jobs",
            ">",
        ],
        &mut c,
        1,
    );
    block(
        &mut w2,
        &[
            "XREADGROUP",
            "GROUP",
            "g",
            "bob",
            "BLOCK",
            "0",
            "STREAMS",
            "jobs",
            ">",
        ],
        &mut c,
        2,
    );
    // One entry: the first waiter gets it, the second keeps waiting for the next one.
    let _: String = q(&mut c, &["XADD", "jobs", "1-1", "job", "one"]);
    assert_eq!(reply(&mut w1), one_entry("jobs", "1-1", "job", "one"));
    wait_until("one still blocked", || blocked_clients(&mut c) == 1);
    let _: String = q(&mut c, &["XADD", "jobs", "2-1", "job", "two"]);
    assert_eq!(reply(&mut w2), one_entry("jobs", "2-1", "job", "two"));
    let pending: Vec<Value> = q(&mut c, &["XPENDING", "jobs", "g"]);
    assert_eq!(pending[0], Value::Int(2));

    // The group destroyed while waiting: NOGROUP.
    block(
        &mut w1,
        &[
            "XREADGROUP",
            "GROUP",
            "g",
            "alice",
            "BLOCK",
            "0",
            "STREAMS",
            "jobs",
            ">",
        ],
        &mut c,
        1,
    );
    let _: i64 = q(&mut c, &["XGROUP", "DESTROY", "jobs", "g"]);
    assert_eq!(
        reply(&mut w1),
        "-NOGROUP the consumer group this client was blocked on no longer exists\r\n"
    );
    // The key deleted while waiting: UNBLOCKED.
    let _: () = q(&mut c, &["XGROUP", "CREATE", "jobs", "g", "$"]);
    block(
        &mut w1,
        &[
            "XREADGROUP",
            "GROUP",
            "g",
            "alice",
            "BLOCK",
            "0",
            "STREAMS",
            "jobs",
            ">",
        ],
        &mut c,
        1,
    );
    let _: i64 = q(&mut c, &["DEL", "jobs"]);
    assert_eq!(
        reply(&mut w1),
        "-UNBLOCKED the stream key no longer exists\r\n"
    );
    assert_eq!(blocked_clients(&mut c), 0);
    // A timeout replies the null array.
    let _: () = q(&mut c, &["XGROUP", "CREATE", "jobs", "g", "$", "MKSTREAM"]);
    assert_eq!(
        w1.call(&[
            "XREADGROUP",
            "GROUP",
            "g",
            "a",
            "BLOCK",
            "100",
            "STREAMS",
            "jobs",
            ">"
        ]),
        "*-1\r\n"
    );
}

/// The time fields of a consumer-group story, which the golden corpus cannot pin: idle times
/// grow from zero, delivery counts go up on redelivery, XCLAIM and XAUTOCLAIM respect min-idle.
#[test]
fn a_consumer_group_story_with_idle_times_and_claims() {
    let s = Shoal::start(&[]);
    let mut c = s.client();
    for i in 1..=3 {
        let _: String = q(
            &mut c,
            &["XADD", "orders", &format!("{i}-0"), "n", &i.to_string()],
        );
    }
    let _: () = q(&mut c, &["XGROUP", "CREATE", "orders", "workers", "0"]);
    let got: Value = q(
        &mut c,
        &[
            "XREADGROUP",
            "GROUP",
            "workers",
            "w1",
            "COUNT",
            "2",
            "STREAMS",
            "orders",
            ">",
        ],
    );
    assert!(matches!(got, Value::Array(ref a) if a.len() == 1));
    let t0 = Instant::now();
    std::thread::sleep(Duration::from_millis(120));
    // Extended XPENDING: idle at least what passed, at most what passed since the read.
    let rows: Vec<(String, String, i64, i64)> =
        q(&mut c, &["XPENDING", "orders", "workers", "-", "+", "10"]);
    assert_eq!(rows.len(), 2);
    let bound = t0.elapsed().as_millis() as i64 + 50;
    for (i, (id, consumer, idle, count)) in rows.iter().enumerate() {
        assert_eq!(id, &format!("{}-0", i + 1));
        assert_eq!(consumer, "w1");
        assert!((100..=bound).contains(idle), "idle {idle}");
        assert_eq!(*count, 1);
    }
    let few: Vec<Value> = q(
        &mut c,
        &[
            "XPENDING", "orders", "workers", "IDLE", "100000", "-", "+", "10",
        ],
    );
    assert!(few.is_empty());
    // XCLAIM with a min-idle above the idle time claims nothing; below it, it claims.
    let none: Vec<Value> = q(
        &mut c,
        &["XCLAIM", "orders", "workers", "w2", "100000", "1-0"],
    );
    assert!(none.is_empty());
    let ids: Vec<String> = q(
        &mut c,
        &["XCLAIM", "orders", "workers", "w2", "50", "1-0", "JUSTID"],
    );
    assert_eq!(ids, ["1-0"]);
    // History: w1 still owns 2-0; reading it again counts a second delivery.
    let _: Value = q(
        &mut c,
        &[
            "XREADGROUP",
            "GROUP",
            "workers",
            "w1",
            "STREAMS",
            "orders",
            "0",
        ],
    );
    let rows: Vec<(String, String, i64, i64)> =
        q(&mut c, &["XPENDING", "orders", "workers", "-", "+", "10"]);
    assert_eq!(rows[0].1, "w2");
    assert_eq!(rows[0].3, 1, "JUSTID does not count a delivery");
    assert_eq!(rows[1].1, "w1");
    assert_eq!(rows[1].3, 2);
    assert!(rows[1].2 < 100, "redelivery resets idle: {}", rows[1].2);
    // XAUTOCLAIM moves what is idle long enough, and reports a deleted entry.
    std::thread::sleep(Duration::from_millis(60));
    let _: i64 = q(&mut c, &["XDEL", "orders", "1-0"]);
    let r: (String, Vec<String>, Vec<String>) = q(
        &mut c,
        &["XAUTOCLAIM", "orders", "workers", "w3", "50", "0", "JUSTID"],
    );
    assert_eq!(r, ("0-0".into(), vec!["2-0".into()], vec!["1-0".into()]));
    // XINFO CONSUMERS: idle fields are small and the PEL counts add up.
    let consumers: Vec<Value> = q(&mut c, &["XINFO", "CONSUMERS", "orders", "workers"]);
    assert_eq!(consumers.len(), 3);
    let info: Vec<Value> = q(&mut c, &["XINFO", "GROUPS", "orders"]);
    assert_eq!(info.len(), 1);
    let _: i64 = q(&mut c, &["XACK", "orders", "workers", "2-0"]);
    let summary: Vec<Value> = q(&mut c, &["XPENDING", "orders", "workers"]);
    assert_eq!(summary[0], Value::Int(0));
    // OBJECT ENCODING, TYPE and MEMORY USAGE see a stream.
    let ty: String = q(&mut c, &["TYPE", "orders"]);
    assert_eq!(ty, "stream");
    let enc: String = q(&mut c, &["OBJECT", "ENCODING", "orders"]);
    assert_eq!(enc, "stream");
    let mem: i64 = q(&mut c, &["MEMORY", "USAGE", "orders"]);
    assert!(mem > 0);
}

/// The state a stream shows, for comparing two nodes: entries, counters, groups and PELs (the
/// full XINFO, whose times are absolute and so equal on a faithful copy).
fn stream_state(c: &mut redis::Connection, key: &str) -> Value {
    q(c, &["XINFO", "STREAM", key, "FULL", "COUNT", "0"])
}

#[test]
fn streams_with_groups_reach_a_replica_intact() {
    let p = Shoal::start(&[]);
    let r = Shoal::start(&[]);
    // Some state before the replica attaches (full copy), the rest after (the stream of writes).
    let mut c = p.client();
    for i in 1..=50 {
        let _: String = q(
            &mut c,
            &["XADD", "ev", &format!("{i}-1"), "i", &i.to_string()],
        );
    }
    let _: () = q(&mut c, &["XGROUP", "CREATE", "ev", "g", "0"]);
    let _: Value = q(
        &mut c,
        &[
            "XREADGROUP",
            "GROUP",
            "g",
            "a",
            "COUNT",
            "10",
            "STREAMS",
            "ev",
            ">",
        ],
    );
    follow(&r, &p);
    let _: Value = q(
        &mut c,
        &[
            "XREADGROUP",
            "GROUP",
            "g",
            "b",
            "COUNT",
            "5",
            "STREAMS",
            "ev",
            ">",
        ],
    );
    let _: i64 = q(&mut c, &["XACK", "ev", "g", "1-1", "2-1"]);
    let _: Value = q(
        &mut c,
        &["XCLAIM", "ev", "g", "c", "0", "3-1", "TIME", "12345"],
    );
    let _: i64 = q(&mut c, &["XDEL", "ev", "4-1", "40-1"]);
    let _: i64 = q(&mut c, &["XTRIM", "ev", "MAXLEN", "45"]);
    let _: String = q(
        &mut c,
        &["XADD", "ev", "MAXLEN", "~", "10", "*", "late", "1"],
    );
    let _: () = q(
        &mut c,
        &["XGROUP", "CREATE", "ev", "h", "$", "ENTRIESREAD", "7"],
    );
    let _: () = q(
        &mut c,
        &["XSETID", "ev", "99999999999999-0", "ENTRIESADDED", "1000"],
    );
    // An empty stream with a group and a consumer is kept and copied too.
    let _: () = q(&mut c, &["XGROUP", "CREATE", "empty", "g", "$", "MKSTREAM"]);
    let _: i64 = q(&mut c, &["XGROUP", "CREATECONSUMER", "empty", "g", "idle"]);
    caught_up(&r, &p);
    let mut rc = r.client();
    for key in ["ev", "empty"] {
        assert_eq!(stream_state(&mut c, key), stream_state(&mut rc, key));
    }
    let a: Value = q(&mut c, &["XRANGE", "ev", "-", "+"]);
    let b: Value = q(&mut rc, &["XRANGE", "ev", "-", "+"]);
    assert_eq!(a, b);
    let da: Vec<String> = q(&mut c, &["SLOTDIGEST", "0", "16383"]);
    let db: Vec<String> = q(&mut rc, &["SLOTDIGEST", "0", "16383"]);
    assert_eq!(da, db);
}

#[test]
fn a_stream_survives_a_snapshot_and_restart() {
    let dir = scratch_dir("streams-restart");
    let dir_arg = format!("dir={}", dir.display());
    let before;
    let bytes_before;
    {
        let s = Shoal::start(&["--set", &dir_arg]);
        let mut c = s.client();
        let _: () = q(&mut c, &["CONFIG", "SET", "stream-node-max-entries", "7"]);
        for i in 1..=100 {
            let _: String = q(
                &mut c,
                &["XADD", "log", &format!("{i}-0"), "k", &i.to_string()],
            );
        }
        let _: String = q(
            &mut c,
            &["XADD", "log", "200-0", "other", "fields", "x", "y"],
        );
        let _: () = q(&mut c, &["XGROUP", "CREATE", "log", "g", "0"]);
        let _: Value = q(
            &mut c,
            &[
                "XREADGROUP",
                "GROUP",
                "g",
                "a",
                "COUNT",
                "3",
                "STREAMS",
                "log",
                ">",
            ],
        );
        let _: i64 = q(&mut c, &["XDEL", "log", "50-0"]);
        let _: () = q(&mut c, &["XGROUP", "CREATE", "empty", "g", "$", "MKSTREAM"]);
        before = (stream_state(&mut c, "log"), stream_state(&mut c, "empty"));
        bytes_before = q::<i64>(&mut c, &["MEMORY", "USAGE", "log"]);
        let _: () = q(&mut c, &["SAVE"]);
    }
    let s = Shoal::start(&["--set", &dir_arg]);
    let mut c = s.client();
    assert_eq!(
        (stream_state(&mut c, "log"), stream_state(&mut c, "empty")),
        before
    );
    let bytes_after: i64 = q(&mut c, &["MEMORY", "USAGE", "log"]);
    assert!(
        (bytes_after - bytes_before).abs() * 4 < bytes_before,
        "{bytes_before} -> {bytes_after}"
    );
    // It keeps working after the restart: new IDs above the restored last ID.
    let id: String = q(&mut c, &["XADD", "log", "*", "k", "v"]);
    assert!(id.split('-').next().unwrap().parse::<u64>().unwrap() > 200);
    // And DUMP / RESTORE carry it too.
    let payload: Vec<u8> = q(&mut c, &["DUMP", "log"]);
    let mut cmd = redis::cmd("RESTORE");
    cmd.arg("copy").arg(0).arg(payload);
    let _: () = cmd.query(&mut c).unwrap();
    let a: Value = q(&mut c, &["XRANGE", "log", "-", "+"]);
    let b: Value = q(&mut c, &["XRANGE", "copy", "-", "+"]);
    assert_eq!(a, b);
    let _ = std::fs::remove_dir_all(&dir);
}
