//! Set commands over the wire: SADD SREM SMEMBERS SISMEMBER SMISMEMBER SCARD SPOP SRANDMEMBER SMOVE
//! SINTER SINTERCARD SINTERSTORE SUNION SUNIONSTORE SDIFF SDIFFSTORE SSCAN with redis-rs, and on
//! raw connections the exact bytes of errors and of RESP3 set replies; the intset → hashtable
//! conversion (OBJECT ENCODING), WRONGTYPE, DUMP/RESTORE in both encodings, MEMORY USAGE, and
//! SSCAN's guarantee while the set changes. Expected replies were checked against redis-server
//! 7.0.15.

mod common;

use std::collections::HashSet;

use common::{Shoal, q, try_q};

const WRONGTYPE: &str = "-WRONGTYPE Operation against a key holding the wrong kind of value\r\n";

fn encoding(c: &mut redis::Connection, key: &str) -> String {
    q(c, &["OBJECT", "ENCODING", key])
}

fn members(c: &mut redis::Connection, key: &str) -> HashSet<String> {
    q(c, &["SMEMBERS", key])
}

fn set_of(items: &[&str]) -> HashSet<String> {
    items.iter().map(|s| s.to_string()).collect()
}

#[test]
fn set_commands_add_remove_and_test_membership() {
    let s = Shoal::start(&[]);
    let mut c = s.client();
    assert_eq!(q::<i64>(&mut c, &["SADD", "s", "a", "b", "b", "1"]), 3);
    assert_eq!(q::<i64>(&mut c, &["SADD", "s", "a", "c"]), 1);
    assert_eq!(q::<i64>(&mut c, &["SCARD", "s"]), 4);
    assert_eq!(members(&mut c, "s"), set_of(&["a", "b", "c", "1"]));
    assert_eq!(q::<i64>(&mut c, &["SISMEMBER", "s", "a"]), 1);
    assert_eq!(q::<i64>(&mut c, &["SISMEMBER", "s", "zz"]), 0);
    assert_eq!(
        q::<Vec<i64>>(&mut c, &["SMISMEMBER", "s", "a", "zz", "1"]),
        [1, 0, 1]
    );
    assert_eq!(
        q::<Vec<i64>>(&mut c, &["SMISMEMBER", "nokey", "a", "b"]),
        [0, 0]
    );
    assert_eq!(q::<i64>(&mut c, &["SREM", "s", "a", "zz", "a"]), 1);
    assert_eq!(q::<i64>(&mut c, &["SREM", "s", "b", "c", "1"]), 3);
    assert_eq!(
        q::<i64>(&mut c, &["EXISTS", "s"]),
        0,
        "an emptied set is deleted"
    );
    assert_eq!(q::<i64>(&mut c, &["SCARD", "s"]), 0);
    assert!(members(&mut c, "s").is_empty());
    assert_eq!(q::<i64>(&mut c, &["SREM", "s", "a"]), 0);
    // Binary members.
    let m: Vec<u8> = vec![0, 255, b'\r', b'\n'];
    let n: i64 = redis::cmd("SADD")
        .arg("bin")
        .arg(&m)
        .arg(b"")
        .query(&mut c)
        .unwrap();
    assert_eq!(n, 2);
    let yes: i64 = redis::cmd("SISMEMBER")
        .arg("bin")
        .arg(&m)
        .query(&mut c)
        .unwrap();
    assert_eq!(yes, 1);
    let all: HashSet<Vec<u8>> = redis::cmd("SMEMBERS").arg("bin").query(&mut c).unwrap();
    assert_eq!(all, [m, Vec::new()].into_iter().collect());
}

#[test]
fn intersection_union_and_difference() {
    let s = Shoal::start(&[]);
    let mut c = s.client();
    let _: i64 = q(&mut c, &["SADD", "a", "1", "2", "3", "x"]);
    let _: i64 = q(&mut c, &["SADD", "b", "2", "3", "4"]);
    let _: i64 = q(&mut c, &["SADD", "c", "3", "4", "5", "x"]);
    assert_eq!(
        q::<HashSet<String>>(&mut c, &["SINTER", "a", "b", "c"]),
        set_of(&["3"])
    );
    assert_eq!(
        q::<HashSet<String>>(&mut c, &["SINTER", "a", "c"]),
        set_of(&["3", "x"])
    );
    assert!(q::<HashSet<String>>(&mut c, &["SINTER", "a", "nokey"]).is_empty());
    assert_eq!(
        q::<HashSet<String>>(&mut c, &["SUNION", "a", "b", "nokey"]),
        set_of(&["1", "2", "3", "4", "x"])
    );
    assert_eq!(
        q::<HashSet<String>>(&mut c, &["SDIFF", "a", "b", "nokey"]),
        set_of(&["1", "x"])
    );
    assert_eq!(
        q::<HashSet<String>>(&mut c, &["SDIFF", "a", "b", "c"]),
        set_of(&["1"])
    );
    assert!(q::<HashSet<String>>(&mut c, &["SDIFF", "nokey", "a"]).is_empty());
    assert_eq!(q::<i64>(&mut c, &["SINTERCARD", "2", "a", "c"]), 2);
    assert_eq!(
        q::<i64>(&mut c, &["SINTERCARD", "2", "a", "c", "LIMIT", "1"]),
        1
    );
    assert_eq!(
        q::<i64>(&mut c, &["SINTERCARD", "2", "a", "c", "LIMIT", "0"]),
        2
    );
    assert_eq!(q::<i64>(&mut c, &["SINTERCARD", "2", "a", "nokey"]), 0);
}

#[test]
fn store_variants_overwrite_the_destination_or_delete_it() {
    let s = Shoal::start(&[]);
    let mut c = s.client();
    let _: i64 = q(&mut c, &["SADD", "a", "1", "2", "3"]);
    let _: i64 = q(&mut c, &["SADD", "b", "2", "3", "4", "y"]);
    // Whatever the destination held, with its TTL, is replaced.
    let _: () = q(&mut c, &["SET", "d", "string", "EX", "100"]);
    assert_eq!(q::<i64>(&mut c, &["SINTERSTORE", "d", "a", "b"]), 2);
    assert_eq!(q::<i64>(&mut c, &["TTL", "d"]), -1);
    assert_eq!(members(&mut c, "d"), set_of(&["2", "3"]));
    assert_eq!(encoding(&mut c, "d"), "intset");
    assert_eq!(q::<i64>(&mut c, &["SUNIONSTORE", "d", "a", "b"]), 5);
    assert_eq!(members(&mut c, "d"), set_of(&["1", "2", "3", "4", "y"]));
    assert_eq!(encoding(&mut c, "d"), "hashtable");
    assert_eq!(q::<i64>(&mut c, &["SDIFFSTORE", "d", "b", "a"]), 2);
    assert_eq!(members(&mut c, "d"), set_of(&["4", "y"]));
    // An empty result deletes the destination.
    assert_eq!(q::<i64>(&mut c, &["SINTERSTORE", "d", "a", "nokey"]), 0);
    assert_eq!(q::<i64>(&mut c, &["EXISTS", "d"]), 0);
    let _: i64 = q(&mut c, &["SADD", "d", "z"]);
    assert_eq!(q::<i64>(&mut c, &["SDIFFSTORE", "d", "a", "a"]), 0);
    assert_eq!(q::<i64>(&mut c, &["EXISTS", "d"]), 0);
    // A source can be the destination.
    assert_eq!(q::<i64>(&mut c, &["SUNIONSTORE", "a", "a", "b"]), 5);
    assert_eq!(members(&mut c, "a"), set_of(&["1", "2", "3", "4", "y"]));
}

#[test]
fn spop_and_srandmember_pick_random_members() {
    let s = Shoal::start(&[]);
    let mut c = s.client();
    for i in 0..30 {
        let _: i64 = q(&mut c, &["SADD", "s", &format!("m{i}")]);
    }
    for count in [1, 5, 10, 29, 30, 100] {
        let picks: Vec<String> = q(&mut c, &["SRANDMEMBER", "s", &count.to_string()]);
        let distinct: HashSet<&String> = picks.iter().collect();
        assert_eq!(picks.len(), count.min(30));
        assert_eq!(distinct.len(), picks.len(), "count {count}");
    }
    let repeats: Vec<String> = q(&mut c, &["SRANDMEMBER", "s", "-2000"]);
    assert_eq!(repeats.len(), 2000);
    assert_eq!(
        repeats.iter().collect::<HashSet<_>>().len(),
        30,
        "2000 picks cover all 30 (a miss has odds of 1e-28)"
    );
    assert!(q::<Vec<String>>(&mut c, &["SRANDMEMBER", "s", "0"]).is_empty());
    assert_eq!(
        q::<i64>(&mut c, &["SCARD", "s"]),
        30,
        "SRANDMEMBER does not remove"
    );

    let one: String = q(&mut c, &["SPOP", "s"]);
    assert_eq!(q::<i64>(&mut c, &["SISMEMBER", "s", &one]), 0);
    let popped: Vec<String> = q(&mut c, &["SPOP", "s", "10"]);
    assert_eq!(popped.iter().collect::<HashSet<_>>().len(), 10);
    assert_eq!(q::<i64>(&mut c, &["SCARD", "s"]), 19);
    for m in &popped {
        assert_eq!(q::<i64>(&mut c, &["SISMEMBER", "s", m]), 0);
    }
    assert!(q::<Vec<String>>(&mut c, &["SPOP", "s", "0"]).is_empty());
    let rest: Vec<String> = q(&mut c, &["SPOP", "s", "100"]);
    assert_eq!(rest.len(), 19);
    assert_eq!(
        q::<i64>(&mut c, &["EXISTS", "s"]),
        0,
        "popping everything deletes the key"
    );
    assert_eq!(q::<Option<String>>(&mut c, &["SPOP", "s"]), None);
    assert_eq!(q::<Option<String>>(&mut c, &["SRANDMEMBER", "s"]), None);
    assert!(q::<Vec<String>>(&mut c, &["SPOP", "s", "3"]).is_empty());

    // Intsets too.
    let _: i64 = q(&mut c, &["SADD", "i", "1", "2", "3"]);
    let all: HashSet<String> = q(&mut c, &["SPOP", "i", "3"]);
    assert_eq!(all, set_of(&["1", "2", "3"]));
}

#[test]
fn smove_moves_one_member() {
    let s = Shoal::start(&[]);
    let mut c = s.client();
    let _: i64 = q(&mut c, &["SADD", "src", "a", "b"]);
    assert_eq!(q::<i64>(&mut c, &["SMOVE", "src", "dst", "a"]), 1);
    assert_eq!(members(&mut c, "src"), set_of(&["b"]));
    assert_eq!(members(&mut c, "dst"), set_of(&["a"]));
    assert_eq!(q::<i64>(&mut c, &["SMOVE", "src", "dst", "zz"]), 0);
    assert_eq!(q::<i64>(&mut c, &["SMOVE", "src", "src", "b"]), 1);
    assert_eq!(q::<i64>(&mut c, &["SMOVE", "src", "src", "zz"]), 0);
    assert_eq!(q::<i64>(&mut c, &["SMOVE", "src", "dst", "b"]), 1);
    assert_eq!(
        q::<i64>(&mut c, &["EXISTS", "src"]),
        0,
        "an emptied source is deleted"
    );
    assert_eq!(members(&mut c, "dst"), set_of(&["a", "b"]));
    assert_eq!(q::<i64>(&mut c, &["SMOVE", "nokey", "dst", "a"]), 0);
}

/// SMOVE of a member the destination already holds removes it from the source and leaves the
/// destination untouched, as Redis: a WATCH of the destination holds (its EXEC runs), one of
/// the source does not.
#[test]
fn smove_of_a_member_already_there_does_not_touch_the_destination() {
    let s = Shoal::start(&[]);
    let mut c = s.client();
    let mut other = s.client();
    let mut watcher = s.raw();
    for watched in ["dst", "src"] {
        let _: i64 = q(&mut c, &["DEL", "src", "dst"]);
        let _: i64 = q(&mut c, &["SADD", "src", "a", "b"]);
        let _: i64 = q(&mut c, &["SADD", "dst", "a"]);
        assert_eq!(watcher.call(&["WATCH", watched]), "+OK\r\n");
        assert_eq!(watcher.call(&["MULTI"]), "+OK\r\n");
        assert_eq!(watcher.call(&["SADD", "dst", "c"]), "+QUEUED\r\n");
        assert_eq!(q::<i64>(&mut other, &["SMOVE", "src", "dst", "a"]), 1);
        let exec = watcher.call(&["EXEC"]);
        if watched == "dst" {
            assert_eq!(exec, "*1\r\n:1\r\n", "the destination did not change");
            assert_eq!(members(&mut c, "dst"), set_of(&["a", "c"]));
        } else {
            assert_eq!(exec, "*-1\r\n", "the source changed");
            assert_eq!(members(&mut c, "dst"), set_of(&["a"]));
        }
        assert_eq!(members(&mut c, "src"), set_of(&["b"]));
    }
}

#[test]
fn errors_are_byte_exact() {
    let s = Shoal::start(&[]);
    let mut r = s.raw();
    r.call(&["SADD", "s", "1", "2", "3"]);
    for (cmd, want) in [
        (
            &["SADD", "s"][..],
            "-ERR wrong number of arguments for 'sadd' command\r\n",
        ),
        (
            &["SPOP", "s", "-1"],
            "-ERR value is out of range, must be positive\r\n",
        ),
        (
            &["SPOP", "s", "x"],
            "-ERR value is out of range, must be positive\r\n",
        ),
        (&["SPOP", "s", "1", "2"], "-ERR syntax error\r\n"),
        (
            &["SRANDMEMBER", "s", "x"],
            "-ERR value is not an integer or out of range\r\n",
        ),
        (&["SRANDMEMBER", "s", "1", "2"], "-ERR syntax error\r\n"),
        (
            &["SRANDMEMBER", "s", "-9223372036854775808"],
            "-ERR value is out of range, value must between -9223372036854775807 and 9223372036854775807\r\n",
        ),
        (
            &["SINTERCARD", "0", "s"],
            "-ERR numkeys should be greater than 0\r\n",
        ),
        (
            &["SINTERCARD", "x", "s"],
            "-ERR numkeys should be greater than 0\r\n",
        ),
        (
            &["SINTERCARD", "3", "s"],
            "-ERR Number of keys can't be greater than number of args\r\n",
        ),
        (
            &["SINTERCARD", "1", "s", "LIMIT", "-1"],
            "-ERR LIMIT can't be negative\r\n",
        ),
        (&["SINTERCARD", "1", "s", "LIMIT"], "-ERR syntax error\r\n"),
        (
            &["SINTERCARD", "1", "s", "FOO", "1"],
            "-ERR syntax error\r\n",
        ),
        (&["SSCAN", "s", "x"], "-ERR invalid cursor\r\n"),
        (&["SSCAN", "s", "0", "COUNT", "0"], "-ERR syntax error\r\n"),
        (&["SSCAN", "s", "0", "TYPE", "set"], "-ERR syntax error\r\n"),
        (&["SPOP", "nokey", "2"], "*0\r\n"),
        (&["SPOP", "nokey"], "$-1\r\n"),
        (&["SRANDMEMBER", "nokey", "-2"], "*0\r\n"),
    ] {
        assert_eq!(r.call(cmd), want, "{cmd:?}");
    }
}

#[test]
fn wrongtype_against_a_string_key() {
    let s = Shoal::start(&[]);
    let mut r = s.raw();
    r.call(&["SET", "str", "v"]);
    r.call(&["SADD", "s", "a"]);
    for cmd in [
        &["SADD", "str", "a"][..],
        &["SREM", "str", "a"],
        &["SMEMBERS", "str"],
        &["SISMEMBER", "str", "a"],
        &["SMISMEMBER", "str", "a"],
        &["SCARD", "str"],
        &["SPOP", "str"],
        &["SPOP", "str", "2"],
        &["SRANDMEMBER", "str"],
        &["SRANDMEMBER", "str", "2"],
        &["SSCAN", "str", "0"],
        &["SMOVE", "str", "s", "a"],
        &["SMOVE", "s", "str", "a"],
        // Even after an absent key, as in Redis.
        &["SINTER", "nokey", "str"],
        &["SUNION", "s", "str"],
        &["SDIFF", "nokey", "str"],
        &["SINTERCARD", "2", "nokey", "str"],
        &["SINTERSTORE", "d", "s", "str"],
        &["SUNIONSTORE", "d", "s", "str"],
        &["SDIFFSTORE", "d", "s", "str"],
    ] {
        assert_eq!(r.call(cmd), WRONGTYPE, "{cmd:?}");
    }
    assert_eq!(
        r.call(&["SMOVE", "nokey", "str", "a"]),
        ":0\r\n",
        "absent source first"
    );
    assert_eq!(r.call(&["GET", "str"]), "$1\r\nv\r\n");
    assert_eq!(
        r.call(&["SMEMBERS", "s"]),
        "*1\r\n$1\r\na\r\n",
        "SMOVE left the source alone"
    );
}

#[test]
fn resp3_replies_are_sets() {
    let s = Shoal::start(&[]);
    let mut r = s.raw();
    r.call(&["HELLO", "3"]);
    r.call(&["SADD", "s", "a"]);
    r.call(&["SADD", "t", "a"]);
    for (cmd, want) in [
        (&["SMEMBERS", "s"][..], "~1\r\n$1\r\na\r\n"),
        (&["SMEMBERS", "nokey"], "~0\r\n"),
        (&["SINTER", "s", "t"], "~1\r\n$1\r\na\r\n"),
        (&["SUNION", "s", "t"], "~1\r\n$1\r\na\r\n"),
        (&["SDIFF", "s", "t"], "~0\r\n"),
        (&["SRANDMEMBER", "s", "2"], "*1\r\n$1\r\na\r\n"),
        (&["SRANDMEMBER", "s", "-2"], "*2\r\n$1\r\na\r\n$1\r\na\r\n"),
        (&["SMISMEMBER", "s", "a", "b"], "*2\r\n:1\r\n:0\r\n"),
        (&["SPOP", "nokey", "1"], "~0\r\n"),
        (&["SPOP", "nokey"], "_\r\n"),
        (&["SSCAN", "s", "0"], "*2\r\n$1\r\n0\r\n*1\r\n$1\r\na\r\n"),
        (&["SPOP", "s", "1"], "~1\r\n$1\r\na\r\n"),
    ] {
        assert_eq!(r.call(cmd), want, "{cmd:?}");
    }
}

#[test]
fn intset_converts_to_hashtable_on_strings_and_size() {
    let s = Shoal::start(&[]);
    let mut c = s.client();
    let _: i64 = q(
        &mut c,
        &["SADD", "i", "3", "-1", "70000", "9223372036854775807"],
    );
    assert_eq!(encoding(&mut c, "i"), "intset");
    // Intsets list members in ascending order.
    let sorted: Vec<String> = q(&mut c, &["SMEMBERS", "i"]);
    assert_eq!(sorted, ["-1", "3", "70000", "9223372036854775807"]);
    for not_canonical in ["07", "+7", "-0", " 7", "a"] {
        let _: i64 = q(&mut c, &["SADD", "j", "1", not_canonical]);
        assert_eq!(encoding(&mut c, "j"), "hashtable", "{not_canonical:?}");
        let _: i64 = q(&mut c, &["DEL", "j"]);
    }
    let limit: Vec<String> = q(&mut c, &["CONFIG", "GET", "set-max-intset-entries"]);
    assert_eq!(limit, ["set-max-intset-entries", "512"]);
    let _: () = q(&mut c, &["CONFIG", "SET", "set-max-intset-entries", "4"]);
    let _: i64 = q(&mut c, &["SADD", "k", "1", "2", "3", "4"]);
    assert_eq!(encoding(&mut c, "k"), "intset");
    let _: i64 = q(&mut c, &["SADD", "k", "5"]);
    assert_eq!(encoding(&mut c, "k"), "hashtable");
    let _: i64 = q(&mut c, &["SREM", "k", "5", "4", "3"]);
    assert_eq!(encoding(&mut c, "k"), "hashtable", "never back");
    assert_eq!(members(&mut c, "k"), set_of(&["1", "2"]));
}

#[test]
fn dump_and_restore_round_trip_both_encodings() {
    let s = Shoal::start(&[]);
    let mut c = s.client();
    let _: i64 = q(
        &mut c,
        &["SADD", "ints", "5", "-70000", "9223372036854775807"],
    );
    let _: i64 = q(&mut c, &["SADD", "strs", "a", "1", ""]);
    for (key, enc) in [("ints", "intset"), ("strs", "hashtable")] {
        assert_eq!(encoding(&mut c, key), enc);
        let payload: Vec<u8> = redis::cmd("DUMP").arg(key).query(&mut c).unwrap();
        let copy = format!("{key}:copy");
        let _: () = redis::cmd("RESTORE")
            .arg(&copy)
            .arg(0)
            .arg(&payload)
            .query(&mut c)
            .unwrap();
        assert_eq!(encoding(&mut c, &copy), enc);
        assert_eq!(members(&mut c, key), members(&mut c, &copy));
        let e = redis::cmd("RESTORE")
            .arg(&copy)
            .arg(0)
            .arg(&payload)
            .query::<()>(&mut c);
        assert!(e.unwrap_err().to_string().contains("BUSYKEY"));
    }
}

#[test]
fn memory_usage_grows_with_the_set() {
    let s = Shoal::start(&[]);
    let mut c = s.client();
    for (key, member) in [("ints", "{}"), ("strs", "member-{}")] {
        let _: i64 = q(&mut c, &["SADD", key, &member.replace("{}", "0")]);
        let mut last: i64 = q(&mut c, &["MEMORY", "USAGE", key]);
        let mut next = 1;
        for step in [10, 100, 1000] {
            let mut p = redis::pipe();
            for _ in 0..step {
                p.cmd("SADD")
                    .arg(key)
                    .arg(member.replace("{}", &next.to_string()))
                    .ignore();
                next += 1;
            }
            let _: () = p.query(&mut c).unwrap();
            let now: i64 = q(&mut c, &["MEMORY", "USAGE", key]);
            assert!(
                now > last + step,
                "{key}: {step} more members: {last} -> {now}"
            );
            last = now;
        }
    }
}

#[test]
fn sscan_returns_every_member_present_for_the_whole_scan() {
    let s = Shoal::start(&[]);
    let mut c = s.client();
    let mut p = redis::pipe();
    for i in 0..1000 {
        p.cmd("SADD").arg("s").arg(format!("stable:{i}")).ignore();
    }
    let _: () = p.query(&mut c).unwrap();
    let mut seen = HashSet::new();
    let mut cursor = "0".to_string();
    let mut round = 0;
    loop {
        let (next, items): (String, Vec<String>) = q(&mut c, &["SSCAN", "s", &cursor]);
        seen.extend(items);
        // Members come and go between calls: the table grows, then shrinks.
        let mut p = redis::pipe();
        for j in 0..100 {
            if round % 20 < 10 {
                p.cmd("SADD")
                    .arg("s")
                    .arg(format!("churn:{round}:{j}"))
                    .ignore();
            } else {
                p.cmd("SREM")
                    .arg("s")
                    .arg(format!("churn:{}:{j}", round - 10))
                    .ignore();
            }
        }
        let _: () = p.query(&mut c).unwrap();
        round += 1;
        if next == "0" {
            break;
        }
        assert!(round < 100_000, "SSCAN did not finish");
        cursor = next;
    }
    for i in 0..1000 {
        assert!(seen.contains(&format!("stable:{i}")), "missed stable:{i}");
    }
    // An intset comes back whole, with cursor 0, MATCH applied to the numbers.
    let _: i64 = q(&mut c, &["SADD", "i", "1", "2", "10", "11"]);
    let (next, items): (String, Vec<String>) =
        q(&mut c, &["SSCAN", "i", "99", "MATCH", "1*", "COUNT", "1"]);
    assert_eq!(next, "0");
    assert_eq!(items, ["1", "10", "11"]);
    assert!(try_q::<()>(&mut c, &["SSCAN", "i", "nope"]).is_err());
}
