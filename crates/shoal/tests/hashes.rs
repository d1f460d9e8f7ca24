//! Hash commands over the wire: HSET HSETNX HGET HMGET HMSET HGETALL HDEL HEXISTS HLEN HSTRLEN
//! HKEYS HVALS HINCRBY HINCRBYFLOAT HRANDFIELD HSCAN with redis-rs, and on raw connections the
//! exact bytes of errors and of RESP3 replies; the listpack → hashtable conversion (OBJECT
//! ENCODING), WRONGTYPE, DUMP/RESTORE in both encodings, MEMORY USAGE, and HSCAN's guarantee while
//! the hash changes. Expected replies were checked against redis-server 7.0.15.

mod common;

use std::collections::{HashMap, HashSet};

use common::{Shoal, q, try_q};

const WRONGTYPE: &str = "-WRONGTYPE Operation against a key holding the wrong kind of value\r\n";

fn encoding(c: &mut redis::Connection, key: &str) -> String {
    q(c, &["OBJECT", "ENCODING", key])
}

#[test]
fn hash_commands_store_read_and_delete_fields() {
    let s = Shoal::start(&[]);
    let mut c = s.client();
    let added: i64 = q(&mut c, &["HSET", "h", "a", "1", "b", "2"]);
    assert_eq!(added, 2);
    let added: i64 = q(&mut c, &["HSET", "h", "a", "10", "c", "3"]);
    assert_eq!(added, 1, "updating a field does not count");
    let v: Option<String> = q(&mut c, &["HGET", "h", "a"]);
    assert_eq!(v.as_deref(), Some("10"));
    let v: Option<String> = q(&mut c, &["HGET", "h", "nope"]);
    assert_eq!(v, None);
    let vs: Vec<Option<String>> = q(&mut c, &["HMGET", "h", "a", "nope", "c"]);
    assert_eq!(vs, vec![Some("10".into()), None, Some("3".into())]);
    let all: HashMap<String, String> = q(&mut c, &["HGETALL", "h"]);
    let want: HashMap<String, String> = [("a", "10"), ("b", "2"), ("c", "3")]
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .into();
    assert_eq!(all, want);
    let mut keys: Vec<String> = q(&mut c, &["HKEYS", "h"]);
    keys.sort();
    assert_eq!(keys, ["a", "b", "c"]);
    let mut vals: Vec<String> = q(&mut c, &["HVALS", "h"]);
    vals.sort();
    assert_eq!(vals, ["10", "2", "3"]);
    assert_eq!(q::<i64>(&mut c, &["HLEN", "h"]), 3);
    assert_eq!(q::<i64>(&mut c, &["HSTRLEN", "h", "a"]), 2);
    assert_eq!(q::<i64>(&mut c, &["HSTRLEN", "h", "nope"]), 0);
    assert_eq!(q::<i64>(&mut c, &["HEXISTS", "h", "b"]), 1);
    assert_eq!(q::<i64>(&mut c, &["HEXISTS", "h", "nope"]), 0);
    assert_eq!(q::<i64>(&mut c, &["HSETNX", "h", "b", "x"]), 0);
    assert_eq!(q::<i64>(&mut c, &["HSETNX", "h", "d", "4"]), 1);
    let _: () = q(&mut c, &["HMSET", "h", "e", "5", "f", "6"]);
    assert_eq!(q::<i64>(&mut c, &["HLEN", "h"]), 6);
    assert_eq!(q::<i64>(&mut c, &["HDEL", "h", "a", "nope", "a", "b"]), 2);
    assert_eq!(q::<i64>(&mut c, &["HDEL", "h", "c", "d", "e", "f"]), 4);
    assert_eq!(
        q::<i64>(&mut c, &["EXISTS", "h"]),
        0,
        "an emptied hash is deleted"
    );
    // Missing keys read as empty.
    assert_eq!(q::<i64>(&mut c, &["HLEN", "h"]), 0);
    let all: HashMap<String, String> = q(&mut c, &["HGETALL", "h"]);
    assert!(all.is_empty());
    assert_eq!(q::<i64>(&mut c, &["HDEL", "h", "a"]), 0);
}

#[test]
fn fields_and_values_are_binary_safe() {
    let s = Shoal::start(&[]);
    let mut c = s.client();
    let field: Vec<u8> = vec![0, 1, 2, b'\r', b'\n', 255];
    let value: Vec<u8> = (0..=255u8).collect();
    let n: i64 = redis::cmd("HSET")
        .arg("bin")
        .arg(&field)
        .arg(&value)
        .arg(b"")
        .arg(b"")
        .query(&mut c)
        .unwrap();
    assert_eq!(n, 2);
    let back: Vec<u8> = redis::cmd("HGET")
        .arg("bin")
        .arg(&field)
        .query(&mut c)
        .unwrap();
    assert_eq!(back, value);
    let empty: Option<Vec<u8>> = redis::cmd("HGET")
        .arg("bin")
        .arg(b"")
        .query(&mut c)
        .unwrap();
    assert_eq!(empty, Some(Vec::new()), "an empty value is a value");
    assert_eq!(encoding(&mut c, "bin"), "hashtable", "a 256-byte value");
}

#[test]
fn counters_increment_and_report_redis_errors() {
    let s = Shoal::start(&[]);
    let mut c = s.client();
    assert_eq!(q::<i64>(&mut c, &["HINCRBY", "h", "n", "5"]), 5);
    assert_eq!(q::<i64>(&mut c, &["HINCRBY", "h", "n", "-7"]), -2);
    assert_eq!(
        q::<String>(&mut c, &["HINCRBYFLOAT", "h", "f", "10.5"]),
        "10.5"
    );
    assert_eq!(
        q::<String>(&mut c, &["HINCRBYFLOAT", "h", "f", "0.1"]),
        "10.6"
    );
    assert_eq!(
        q::<String>(&mut c, &["HINCRBYFLOAT", "h", "n", "2.0e3"]),
        "1998"
    );
    let _: () = q(
        &mut c,
        &[
            "HSET",
            "h",
            "s",
            "abc",
            "max",
            "9223372036854775807",
            "big",
            "1e4932",
        ],
    );
    let mut r = s.raw();
    for (cmd, want) in [
        (
            &["HINCRBY", "h", "s", "1"][..],
            "-ERR hash value is not an integer\r\n",
        ),
        (
            &["HINCRBY", "h", "f", "1"],
            "-ERR hash value is not an integer\r\n",
        ),
        (
            &["HINCRBY", "h", "n", "x"],
            "-ERR value is not an integer or out of range\r\n",
        ),
        (
            &["HINCRBY", "h", "max", "1"],
            "-ERR increment or decrement would overflow\r\n",
        ),
        (
            &["HINCRBYFLOAT", "h", "s", "1"],
            "-ERR hash value is not a float\r\n",
        ),
        (
            &["HINCRBYFLOAT", "h", "f", "x"],
            "-ERR value is not a valid float\r\n",
        ),
        (
            &["HINCRBYFLOAT", "h", "f", "inf"],
            "-ERR value is NaN or Infinity\r\n",
        ),
        (
            &["HINCRBYFLOAT", "h", "big", "1e4932"],
            "-ERR increment would produce NaN or Infinity\r\n",
        ),
    ] {
        assert_eq!(r.call(cmd), want, "{cmd:?}");
    }
    // The failed increments changed nothing.
    assert_eq!(q::<String>(&mut c, &["HGET", "h", "big"]), "1e4932");
}

#[test]
fn argument_errors_are_byte_exact() {
    let s = Shoal::start(&[]);
    let mut r = s.raw();
    r.call(&["HSET", "h", "a", "1", "b", "2", "c", "3"]);
    for (cmd, want) in [
        (
            &["HSET", "h", "a"][..],
            "-ERR wrong number of arguments for 'hset' command\r\n",
        ),
        (
            &["HSET", "h", "a", "1", "b"],
            "-ERR wrong number of arguments for 'hset' command\r\n",
        ),
        (
            &["HMSET", "h", "a", "1", "b"],
            "-ERR wrong number of arguments for 'hmset' command\r\n",
        ),
        (
            &["HGET", "h"],
            "-ERR wrong number of arguments for 'hget' command\r\n",
        ),
        (
            &["HRANDFIELD", "h", "x"],
            "-ERR value is not an integer or out of range\r\n",
        ),
        (
            &["HRANDFIELD", "h", "-9223372036854775808"],
            "-ERR value is out of range, value must between -9223372036854775807 and 9223372036854775807\r\n",
        ),
        (
            &["HRANDFIELD", "h", "1", "WITHVALUE"],
            "-ERR syntax error\r\n",
        ),
        (
            &["HRANDFIELD", "h", "1", "WITHVALUES", "x"],
            "-ERR syntax error\r\n",
        ),
        (
            &["HRANDFIELD", "h", "-4611686018427387904", "WITHVALUES"],
            "-ERR value is out of range\r\n",
        ),
        (&["HSCAN", "h", "x"], "-ERR invalid cursor\r\n"),
        (&["HSCAN", "h", "0", "COUNT", "0"], "-ERR syntax error\r\n"),
        (
            &["HSCAN", "h", "0", "COUNT", "x"],
            "-ERR value is not an integer or out of range\r\n",
        ),
        (&["HSCAN", "h", "0", "MATCH"], "-ERR syntax error\r\n"),
        (
            &["HSCAN", "h", "0", "TYPE", "hash"],
            "-ERR syntax error\r\n",
        ),
        // A missing key answers before its options are read, as in Redis.
        (
            &["HSCAN", "nokey", "0", "COUNT", "0"],
            "*2\r\n$1\r\n0\r\n*0\r\n",
        ),
        (&["HRANDFIELD", "nokey", "-5"], "*0\r\n"),
        (&["HRANDFIELD", "nokey"], "$-1\r\n"),
    ] {
        assert_eq!(r.call(cmd), want, "{cmd:?}");
    }
}

#[test]
fn wrongtype_against_a_string_key() {
    let s = Shoal::start(&[]);
    let mut r = s.raw();
    r.call(&["SET", "str", "v"]);
    for cmd in [
        &["HSET", "str", "a", "1"][..],
        &["HSETNX", "str", "a", "1"],
        &["HMSET", "str", "a", "1"],
        &["HGET", "str", "a"],
        &["HMGET", "str", "a"],
        &["HGETALL", "str"],
        &["HDEL", "str", "a"],
        &["HEXISTS", "str", "a"],
        &["HLEN", "str"],
        &["HSTRLEN", "str", "a"],
        &["HKEYS", "str"],
        &["HVALS", "str"],
        &["HINCRBY", "str", "a", "1"],
        &["HINCRBYFLOAT", "str", "a", "1"],
        &["HRANDFIELD", "str"],
        &["HRANDFIELD", "str", "2"],
        &["HSCAN", "str", "0"],
    ] {
        assert_eq!(r.call(cmd), WRONGTYPE, "{cmd:?}");
    }
    assert_eq!(
        r.call(&["GET", "str"]),
        "$1\r\nv\r\n",
        "the string is untouched"
    );
}

#[test]
fn resp3_replies_are_maps_and_pairs() {
    let s = Shoal::start(&[]);
    let mut r = s.raw();
    assert!(r.call(&["HELLO", "3"]).starts_with('%'));
    r.call(&["HSET", "h", "a", "1"]);
    assert_eq!(r.call(&["HGETALL", "h"]), "%1\r\n$1\r\na\r\n$1\r\n1\r\n");
    assert_eq!(r.call(&["HGETALL", "nokey"]), "%0\r\n");
    assert_eq!(r.call(&["HMGET", "h", "a", "zz"]), "*2\r\n$1\r\n1\r\n_\r\n");
    assert_eq!(r.call(&["HGET", "h", "zz"]), "_\r\n");
    assert_eq!(
        r.call(&["HRANDFIELD", "h", "5", "WITHVALUES"]),
        "*1\r\n*2\r\n$1\r\na\r\n$1\r\n1\r\n"
    );
    assert_eq!(
        r.call(&["HRANDFIELD", "h", "-2", "WITHVALUES"]),
        "*2\r\n*2\r\n$1\r\na\r\n$1\r\n1\r\n*2\r\n$1\r\na\r\n$1\r\n1\r\n"
    );
    assert_eq!(
        r.call(&["HRANDFIELD", "h", "-2"]),
        "*2\r\n$1\r\na\r\n$1\r\na\r\n"
    );
    assert_eq!(r.call(&["HRANDFIELD", "nokey"]), "_\r\n");
    assert_eq!(
        r.call(&["HSCAN", "h", "0"]),
        "*2\r\n$1\r\n0\r\n*2\r\n$1\r\na\r\n$1\r\n1\r\n"
    );
    // RESP2 flattens the pairs.
    let mut r2 = s.raw();
    assert_eq!(
        r2.call(&["HRANDFIELD", "h", "1", "WITHVALUES"]),
        "*2\r\n$1\r\na\r\n$1\r\n1\r\n"
    );
    assert_eq!(r2.call(&["HGETALL", "h"]), "*2\r\n$1\r\na\r\n$1\r\n1\r\n");
}

#[test]
fn hrandfield_picks_distinct_fields_or_repeats_for_negative_counts() {
    let s = Shoal::start(&[]);
    let mut c = s.client();
    for i in 0..20 {
        let _: i64 = q(&mut c, &["HSET", "h", &format!("f{i}"), &format!("v{i}")]);
    }
    let one: String = q(&mut c, &["HRANDFIELD", "h"]);
    assert!(one.starts_with('f'));
    for count in [1, 5, 7, 19, 20, 50] {
        let picks: Vec<String> = q(&mut c, &["HRANDFIELD", "h", &count.to_string()]);
        let distinct: HashSet<&String> = picks.iter().collect();
        assert_eq!(picks.len(), count.min(20), "count {count}");
        assert_eq!(distinct.len(), picks.len(), "count {count}: {picks:?}");
    }
    let repeats: Vec<String> = q(&mut c, &["HRANDFIELD", "h", "-100"]);
    assert_eq!(repeats.len(), 100);
    let distinct: HashSet<&String> = repeats.iter().collect();
    assert!(distinct.len() < 100, "100 picks among 20 fields repeat");
    let pairs: Vec<String> = q(&mut c, &["HRANDFIELD", "h", "3", "WITHVALUES"]);
    assert_eq!(pairs.len(), 6);
    for p in pairs.chunks(2) {
        assert_eq!(
            p[1],
            p[0].replace('f', "v"),
            "values belong to their fields"
        );
    }
    let none: Vec<String> = q(&mut c, &["HRANDFIELD", "h", "0"]);
    assert!(none.is_empty());
    // Over many draws every field shows up: the picks are not stuck on a few.
    let mut seen = HashSet::new();
    for _ in 0..20 {
        let picks: Vec<String> = q(&mut c, &["HRANDFIELD", "h", "-20"]);
        seen.extend(picks);
    }
    assert_eq!(seen.len(), 20);
}

#[test]
fn listpack_converts_to_hashtable_on_long_values_and_many_entries() {
    let s = Shoal::start(&[]);
    let mut c = s.client();
    let _: i64 = q(&mut c, &["HSET", "v", "f", &"x".repeat(64)]);
    assert_eq!(encoding(&mut c, "v"), "listpack", "64 bytes still fit");
    let _: i64 = q(&mut c, &["HSET", "v", "g", &"x".repeat(65)]);
    assert_eq!(encoding(&mut c, "v"), "hashtable");
    let _: i64 = q(&mut c, &["HSET", "k", &"k".repeat(65), "1"]);
    assert_eq!(encoding(&mut c, "k"), "hashtable", "a long field too");

    let limit: Vec<String> = q(&mut c, &["CONFIG", "GET", "hash-max-listpack-entries"]);
    let limit: usize = limit[1].parse().unwrap();
    for i in 0..limit {
        let _: i64 = q(&mut c, &["HSET", "n", &format!("f{i}"), "v"]);
    }
    assert_eq!(
        encoding(&mut c, "n"),
        "listpack",
        "{limit} entries still fit"
    );
    let _: i64 = q(&mut c, &["HSET", "n", "one-more", "v"]);
    assert_eq!(encoding(&mut c, "n"), "hashtable");
    // Never back, even after shrinking below the thresholds.
    for i in 0..limit {
        let _: i64 = q(&mut c, &["HDEL", "n", &format!("f{i}")]);
    }
    assert_eq!(q::<i64>(&mut c, &["HLEN", "n"]), 1);
    assert_eq!(encoding(&mut c, "n"), "hashtable");

    let _: () = q(&mut c, &["CONFIG", "SET", "hash-max-listpack-entries", "2"]);
    let _: i64 = q(&mut c, &["HSET", "small", "a", "1", "b", "2"]);
    assert_eq!(encoding(&mut c, "small"), "listpack");
    let _: i64 = q(&mut c, &["HSET", "small", "c", "3"]);
    assert_eq!(encoding(&mut c, "small"), "hashtable");
    let all: HashMap<String, String> = q(&mut c, &["HGETALL", "small"]);
    assert_eq!(all.len(), 3);
}

#[test]
fn dump_and_restore_round_trip_both_encodings() {
    let s = Shoal::start(&[]);
    let mut c = s.client();
    let _: i64 = q(&mut c, &["HSET", "small", "a", "1", "b", "2"]);
    for i in 0..600 {
        let _: i64 = q(
            &mut c,
            &["HSET", "big", &format!("field:{i}"), &format!("{i}")],
        );
    }
    for (key, enc) in [("small", "listpack"), ("big", "hashtable")] {
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
        let a: HashMap<String, String> = q(&mut c, &["HGETALL", key]);
        let b: HashMap<String, String> = q(&mut c, &["HGETALL", &copy]);
        assert_eq!(a, b);
        // A damaged payload is refused.
        let mut bad = payload.clone();
        bad[2] ^= 0xff;
        let e = redis::cmd("RESTORE")
            .arg("bad")
            .arg(0)
            .arg(&bad)
            .query::<()>(&mut c)
            .unwrap_err();
        assert!(
            e.to_string()
                .contains("payload version or checksum are wrong"),
            "{e}"
        );
    }
}

#[test]
fn memory_usage_grows_with_the_hash() {
    let s = Shoal::start(&[]);
    let mut c = s.client();
    let _: i64 = q(&mut c, &["HSET", "h", "f0", "v"]);
    let mut last: i64 = q(&mut c, &["MEMORY", "USAGE", "h"]);
    for step in [10, 100, 1000] {
        let mut p = redis::pipe();
        for i in 0..step {
            p.cmd("HSET")
                .arg("h")
                .arg(format!("field-{step}-{i}"))
                .arg("some value")
                .ignore();
        }
        let _: () = p.query(&mut c).unwrap();
        let now: i64 = q(&mut c, &["MEMORY", "USAGE", "h"]);
        assert!(
            now > last + step * 10,
            "{step} more fields grew MEMORY USAGE from {last} to {now} only"
        );
        last = now;
    }
    // Deleting most of it gives memory back.
    for step in [10, 100] {
        for i in 0..step {
            let _: i64 = q(&mut c, &["HDEL", "h", &format!("field-{step}-{i}")]);
        }
    }
    for i in 0..1000 {
        let _: i64 = q(&mut c, &["HDEL", "h", &format!("field-1000-{i}")]);
    }
    let small: i64 = q(&mut c, &["MEMORY", "USAGE", "h"]);
    assert!(small < last / 10, "{small} after deleting, {last} before");
}

/// Runs a whole HSCAN; between calls, `between` may change the hash. Bounded number of calls.
fn hscan_all(
    c: &mut redis::Connection,
    key: &str,
    count: usize,
    mut between: impl FnMut(&mut redis::Connection, usize),
) -> HashMap<String, String> {
    let mut seen = HashMap::new();
    let mut cursor = "0".to_string();
    for round in 0..100_000 {
        let (next, items): (String, Vec<String>) =
            q(c, &["HSCAN", key, &cursor, "COUNT", &count.to_string()]);
        for kv in items.chunks(2) {
            seen.insert(kv[0].clone(), kv[1].clone());
        }
        between(c, round);
        if next == "0" {
            return seen;
        }
        cursor = next;
    }
    panic!("HSCAN did not finish");
}

#[test]
fn hscan_returns_every_field_present_for_the_whole_scan() {
    let s = Shoal::start(&[]);
    let mut c = s.client();
    let mut p = redis::pipe();
    for i in 0..1000 {
        p.cmd("HSET")
            .arg("h")
            .arg(format!("stable:{i}"))
            .arg(i)
            .ignore();
    }
    let _: () = p.query(&mut c).unwrap();
    assert_eq!(encoding(&mut c, "h"), "hashtable");
    // While it runs, thousands of other fields come and go, so the table grows and shrinks.
    let seen = hscan_all(&mut c, "h", 10, |c, round| {
        let mut p = redis::pipe();
        for j in 0..50 {
            if round % 40 < 20 {
                p.cmd("HSET")
                    .arg("h")
                    .arg(format!("churn:{round}:{j}"))
                    .arg(1)
                    .ignore();
            } else {
                p.cmd("HDEL")
                    .arg("h")
                    .arg(format!("churn:{}:{j}", round - 20))
                    .ignore();
            }
        }
        let _: () = p.query(c).unwrap();
    });
    for i in 0..1000 {
        assert_eq!(
            seen.get(&format!("stable:{i}")),
            Some(&i.to_string()),
            "stable:{i}"
        );
    }
    // MATCH filters fields; a listpack comes back whole with cursor 0.
    let matched = hscan_all(&mut c, "h", 100, |_, _| {});
    assert!(matched.len() >= 1000);
    let (next, items): (String, Vec<String>) = q(
        &mut c,
        &["HSCAN", "h", "0", "MATCH", "stable:99*", "COUNT", "100000"],
    );
    assert_eq!(next, "0");
    assert_eq!(items.len(), 2 * 11, "stable:99 and stable:990..999");
    let _: i64 = q(&mut c, &["HSET", "lp", "a", "1", "b", "2"]);
    let (next, items): (String, Vec<String>) = q(&mut c, &["HSCAN", "lp", "12345", "COUNT", "1"]);
    assert_eq!((next.as_str(), items.len()), ("0", 4));
    let e = try_q::<()>(&mut c, &["HSCAN", "lp", "-"]).unwrap_err();
    assert!(e.to_string().contains("invalid cursor"), "{e}");
}
