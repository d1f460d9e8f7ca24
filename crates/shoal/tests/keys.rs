//! The keys family over the wire, per Redis 7 semantics: DEL UNLINK EXISTS TYPE TOUCH, the EXPIRE
//! and TTL families and PERSIST, RENAME RENAMENX COPY MOVE SWAPDB, KEYS patterns, SCAN full
//! iteration, RANDOMKEY, OBJECT, DUMP/RESTORE; expiry observed without sleeping for seconds (short
//! PX deadlines polled with a bound), active expiry of keys nobody reads, and the `expired_keys`
//! counter. Expected replies were checked against redis-server 7.0.15.

mod common;

use std::collections::BTreeSet;

use common::{Shoal, info_u64, q, wait_until};
use redis::Value;

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
}

fn sorted(mut v: Vec<String>) -> Vec<String> {
    v.sort();
    v
}

#[test]
fn del_unlink_and_exists_count_keys() {
    let s = Shoal::start(&[]);
    let mut c = s.client();
    let _: () = q(&mut c, &["MSET", "a", "1", "b", "2", "c", "3", "d", "4"]);
    let n: i64 = q(&mut c, &["EXISTS", "a", "a", "nope", "b"]);
    assert_eq!(n, 3, "EXISTS counts repeated keys each time");
    let n: i64 = q(&mut c, &["DEL", "a", "nope", "a"]);
    assert_eq!(n, 1, "DEL counts a key once");
    let n: i64 = q(&mut c, &["UNLINK", "b", "c"]);
    assert_eq!(n, 2);
    let n: i64 = q(&mut c, &["EXISTS", "a", "b", "c", "d"]);
    assert_eq!(n, 1);
    let n: i64 = q(&mut c, &["DBSIZE"]);
    assert_eq!(n, 1);
    // UNLINK of a large value (freed in the background) still removes it at once.
    let big = "x".repeat(512 * 1024);
    let _: () = redis::cmd("SET")
        .arg("big")
        .arg(&big)
        .query(&mut c)
        .unwrap();
    let n: i64 = q(&mut c, &["UNLINK", "big"]);
    assert_eq!(n, 1);
    let v: Option<String> = q(&mut c, &["GET", "big"]);
    assert_eq!(v, None);
}

#[test]
fn type_and_touch() {
    let s = Shoal::start(&[]);
    let mut r = s.raw();
    assert_eq!(r.call(&["SET", "k", "v"]), "+OK\r\n");
    assert_eq!(r.call(&["TYPE", "k"]), "+string\r\n");
    assert_eq!(r.call(&["TYPE", "nope"]), "+none\r\n");
    assert_eq!(r.call(&["TOUCH", "k", "nope", "k"]), ":2\r\n");
    assert_eq!(
        r.call(&["TOUCH"]),
        "-ERR wrong number of arguments for 'touch' command\r\n"
    );
}

#[test]
fn expire_sets_ttl_and_options_follow_redis_7() {
    let s = Shoal::start(&[]);
    let mut r = s.raw();
    assert_eq!(r.call(&["SET", "k", "v"]), "+OK\r\n");
    assert_eq!(r.call(&["EXPIRE", "nope", "10"]), ":0\r\n");
    assert_eq!(r.call(&["EXPIRE", "k", "100"]), ":1\r\n");
    assert_eq!(r.call(&["TTL", "k"]), ":100\r\n");
    assert_eq!(r.call(&["EXPIRE", "k", "50", "NX"]), ":0\r\n");
    assert_eq!(r.call(&["EXPIRE", "k", "50", "XX"]), ":1\r\n");
    assert_eq!(r.call(&["TTL", "k"]), ":50\r\n");
    assert_eq!(r.call(&["EXPIRE", "k", "200", "GT"]), ":1\r\n");
    assert_eq!(r.call(&["EXPIRE", "k", "10", "GT"]), ":0\r\n");
    assert_eq!(r.call(&["EXPIRE", "k", "300", "LT"]), ":0\r\n");
    assert_eq!(r.call(&["EXPIRE", "k", "10", "LT"]), ":1\r\n");
    assert_eq!(r.call(&["TTL", "k"]), ":10\r\n");
    assert_eq!(r.call(&["PERSIST", "k"]), ":1\r\n");
    assert_eq!(r.call(&["PERSIST", "k"]), ":0\r\n");
    assert_eq!(r.call(&["TTL", "k"]), ":-1\r\n");
    // No TTL counts as infinite: GT never applies, LT always does.
    assert_eq!(r.call(&["EXPIRE", "k", "10", "GT"]), ":0\r\n");
    assert_eq!(r.call(&["EXPIRE", "k", "10", "XX"]), ":0\r\n");
    assert_eq!(r.call(&["EXPIRE", "k", "100", "LT"]), ":1\r\n");
    let errors: &[(&[&str], &str)] = &[
        (
            &["EXPIRE", "k", "10", "NX", "XX"],
            "-ERR NX and XX, GT or LT options at the same time are not compatible\r\n",
        ),
        (
            &["EXPIRE", "k", "10", "GT", "LT"],
            "-ERR GT and LT options at the same time are not compatible\r\n",
        ),
        (
            &["EXPIRE", "k", "10", "BOGUS"],
            "-ERR Unsupported option BOGUS\r\n",
        ),
        (
            &["EXPIRE", "k", "x"],
            "-ERR value is not an integer or out of range\r\n",
        ),
        (
            &["EXPIRE", "k", "9223372036854775807"],
            "-ERR invalid expire time in 'expire' command\r\n",
        ),
        (
            &["PEXPIRE", "k", "9223372036854775807"],
            "-ERR invalid expire time in 'pexpire' command\r\n",
        ),
    ];
    for (args, want) in errors {
        assert_eq!(r.call(args), *want, "{args:?}");
    }
    // A deadline in the past deletes the key.
    assert_eq!(r.call(&["EXPIRE", "k", "-1"]), ":1\r\n");
    assert_eq!(r.call(&["EXISTS", "k"]), ":0\r\n");
}

#[test]
fn expireat_pexpireat_and_expiretime() {
    let s = Shoal::start(&[]);
    let mut c = s.client();
    let _: () = q(&mut c, &["SET", "k", "v"]);
    let t: i64 = q(&mut c, &["EXPIRETIME", "k"]);
    assert_eq!(t, -1);
    let t: i64 = q(&mut c, &["EXPIRETIME", "nope"]);
    assert_eq!(t, -2);
    let at_s = now_ms() / 1000 + 1000;
    let n: i64 = q(&mut c, &["EXPIREAT", "k", &at_s.to_string()]);
    assert_eq!(n, 1);
    let t: i64 = q(&mut c, &["EXPIRETIME", "k"]);
    assert_eq!(t as u64, at_s);
    let t: i64 = q(&mut c, &["PEXPIRETIME", "k"]);
    assert_eq!(t as u64, at_s * 1000);
    let at_ms = now_ms() + 777_777;
    let n: i64 = q(&mut c, &["PEXPIREAT", "k", &at_ms.to_string()]);
    assert_eq!(n, 1);
    let t: i64 = q(&mut c, &["PEXPIRETIME", "k"]);
    assert_eq!(t as u64, at_ms);
    let pttl: i64 = q(&mut c, &["PTTL", "k"]);
    assert!(pttl > 770_000 && pttl <= 777_777, "{pttl}");
    let n: i64 = q(&mut c, &["PEXPIREAT", "k", "1"]);
    assert_eq!(n, 1);
    let n: i64 = q(&mut c, &["EXISTS", "k"]);
    assert_eq!(n, 0);
}

#[test]
fn ttl_and_pttl_report_missing_and_persistent_keys() {
    let s = Shoal::start(&[]);
    let mut c = s.client();
    let t: i64 = q(&mut c, &["TTL", "nope"]);
    assert_eq!(t, -2);
    let t: i64 = q(&mut c, &["PTTL", "nope"]);
    assert_eq!(t, -2);
    let _: () = q(&mut c, &["SET", "k", "v"]);
    let t: i64 = q(&mut c, &["TTL", "k"]);
    assert_eq!(t, -1);
    let t: i64 = q(&mut c, &["PTTL", "k"]);
    assert_eq!(t, -1);
    let n: i64 = q(&mut c, &["PEXPIRE", "k", "100000"]);
    assert_eq!(n, 1);
    let t: i64 = q(&mut c, &["PTTL", "k"]);
    assert!(t > 99_000 && t <= 100_000, "{t}");
    let t: i64 = q(&mut c, &["TTL", "k"]);
    assert!(t == 99 || t == 100, "{t}");
}

#[test]
fn a_key_with_a_short_ttl_disappears() {
    let s = Shoal::start(&[]);
    let mut c = s.client();
    let _: () = q(&mut c, &["SET", "k", "v", "PX", "50"]);
    let _: () = q(&mut c, &["SET", "keep", "v"]);
    wait_until("k to expire", || q::<i64>(&mut c, &["EXISTS", "k"]) == 0);
    let t: i64 = q(&mut c, &["TTL", "k"]);
    assert_eq!(t, -2);
    let n: i64 = q(&mut c, &["EXISTS", "keep"]);
    assert_eq!(n, 1);
    // PEXPIRE on an existing key behaves the same.
    let n: i64 = q(&mut c, &["PEXPIRE", "keep", "30"]);
    assert_eq!(n, 1);
    wait_until("keep to expire", || {
        q::<Option<String>>(&mut c, &["GET", "keep"]).is_none()
    });
}

#[test]
fn active_expiry_removes_keys_nobody_reads() {
    let s = Shoal::start(&[]);
    let mut c = s.client();
    let mut p = redis::pipe();
    for i in 0..2000 {
        p.cmd("SET")
            .arg(format!("vol:{i}"))
            .arg("v")
            .arg("PX")
            .arg(20)
            .ignore();
    }
    p.cmd("SET").arg("stays").arg("v").ignore();
    p.exec(&mut c).unwrap();
    // Only DBSIZE and INFO from now on: neither touches the keys, so only the background sweep can
    // remove them.
    wait_until("background sweep to remove 2000 expired keys", || {
        q::<i64>(&mut c, &["DBSIZE"]) == 1
    });
    assert_eq!(info_u64(&mut c, "stats", "expired_keys"), 2000);
    let v: String = q(&mut c, &["GET", "stays"]);
    assert_eq!(v, "v");
}

#[test]
fn expired_keys_counter_counts_lazy_expiry_too() {
    let s = Shoal::start(&[]);
    let mut c = s.client();
    assert_eq!(info_u64(&mut c, "stats", "expired_keys"), 0);
    for i in 0..5 {
        let _: () = q(&mut c, &["SET", &format!("k{i}"), "v", "PX", "30"]);
    }
    wait_until("five keys expired", || {
        (0..5).all(|i| q::<Option<String>>(&mut c, &["GET", &format!("k{i}")]).is_none())
    });
    assert_eq!(info_u64(&mut c, "stats", "expired_keys"), 5);
    // DEL of a live key and overwrites are not expiry.
    let _: () = q(&mut c, &["SET", "x", "v", "EX", "100"]);
    let _: () = q(&mut c, &["SET", "x", "w"]);
    let _: i64 = q(&mut c, &["DEL", "x"]);
    assert_eq!(info_u64(&mut c, "stats", "expired_keys"), 5);
}

#[test]
fn rename_moves_value_and_ttl() {
    let s = Shoal::start(&[]);
    let mut r = s.raw();
    assert_eq!(r.call(&["SET", "src", "v", "EX", "100"]), "+OK\r\n");
    assert_eq!(r.call(&["SET", "dst", "old"]), "+OK\r\n");
    assert_eq!(r.call(&["RENAME", "src", "dst"]), "+OK\r\n");
    assert_eq!(r.call(&["GET", "dst"]), "$1\r\nv\r\n");
    assert_eq!(r.call(&["EXISTS", "src"]), ":0\r\n");
    assert_eq!(r.call(&["TTL", "dst"]), ":100\r\n");
    assert_eq!(r.call(&["RENAME", "nope", "x"]), "-ERR no such key\r\n");
    assert_eq!(r.call(&["RENAME", "dst", "dst"]), "+OK\r\n");
    assert_eq!(r.call(&["GET", "dst"]), "$1\r\nv\r\n");
    // RENAMENX refuses an existing destination.
    assert_eq!(r.call(&["SET", "other", "w"]), "+OK\r\n");
    assert_eq!(r.call(&["RENAMENX", "dst", "other"]), ":0\r\n");
    assert_eq!(r.call(&["RENAMENX", "dst", "dst"]), ":0\r\n");
    assert_eq!(r.call(&["RENAMENX", "dst", "fresh"]), ":1\r\n");
    assert_eq!(r.call(&["GET", "fresh"]), "$1\r\nv\r\n");
    assert_eq!(r.call(&["GET", "other"]), "$1\r\nw\r\n");
    assert_eq!(r.call(&["RENAMENX", "nope", "x"]), "-ERR no such key\r\n");
}

#[test]
fn rename_of_a_large_value_keeps_it_intact() {
    let s = Shoal::start(&[]);
    let mut c = s.client();
    let big: Vec<u8> = (0..300_000u32).map(|i| (i % 251) as u8).collect();
    let _: () = redis::cmd("SET").arg("a").arg(&big).query(&mut c).unwrap();
    let _: () = q(&mut c, &["RENAME", "a", "b"]);
    let back: Vec<u8> = q(&mut c, &["GET", "b"]);
    assert_eq!(back, big);
}

#[test]
fn copy_within_and_across_databases() {
    let s = Shoal::start(&[]);
    let mut r = s.raw();
    assert_eq!(r.call(&["SET", "src", "v", "EX", "100"]), "+OK\r\n");
    assert_eq!(r.call(&["COPY", "src", "dst"]), ":1\r\n");
    assert_eq!(r.call(&["GET", "dst"]), "$1\r\nv\r\n");
    assert_eq!(r.call(&["TTL", "dst"]), ":100\r\n", "COPY keeps the TTL");
    assert_eq!(r.call(&["SET", "src", "v2"]), "+OK\r\n");
    assert_eq!(r.call(&["COPY", "src", "dst"]), ":0\r\n");
    assert_eq!(r.call(&["GET", "dst"]), "$1\r\nv\r\n");
    assert_eq!(r.call(&["COPY", "src", "dst", "REPLACE"]), ":1\r\n");
    assert_eq!(r.call(&["GET", "dst"]), "$2\r\nv2\r\n");
    assert_eq!(r.call(&["COPY", "nope", "x"]), ":0\r\n");
    assert_eq!(
        r.call(&["COPY", "src", "src"]),
        "-ERR source and destination objects are the same\r\n"
    );
    assert_eq!(r.call(&["COPY", "src", "src", "DB", "2"]), ":1\r\n");
    assert_eq!(
        r.call(&["COPY", "src", "x", "DB", "99"]),
        "-ERR DB index is out of range\r\n"
    );
    assert_eq!(
        r.call(&["COPY", "src", "x", "BOGUS"]),
        "-ERR syntax error\r\n"
    );
    assert_eq!(r.call(&["SELECT", "2"]), "+OK\r\n");
    assert_eq!(r.call(&["GET", "src"]), "$2\r\nv2\r\n");
    // Copies are independent: changing one leaves the other.
    assert_eq!(r.call(&["APPEND", "src", "!"]), ":3\r\n");
    assert_eq!(r.call(&["SELECT", "0"]), "+OK\r\n");
    assert_eq!(r.call(&["GET", "src"]), "$2\r\nv2\r\n");
}

#[test]
fn move_between_databases() {
    let s = Shoal::start(&[]);
    let mut r = s.raw();
    assert_eq!(r.call(&["SET", "k", "v"]), "+OK\r\n");
    assert_eq!(r.call(&["MOVE", "k", "1"]), ":1\r\n");
    assert_eq!(r.call(&["EXISTS", "k"]), ":0\r\n");
    assert_eq!(r.call(&["MOVE", "k", "1"]), ":0\r\n");
    assert_eq!(r.call(&["SET", "k", "again"]), "+OK\r\n");
    assert_eq!(r.call(&["MOVE", "k", "1"]), ":0\r\n", "destination exists");
    assert_eq!(r.call(&["GET", "k"]), "$5\r\nagain\r\n");
    assert_eq!(
        r.call(&["MOVE", "k", "0"]),
        "-ERR source and destination objects are the same\r\n"
    );
    assert_eq!(
        r.call(&["MOVE", "k", "99"]),
        "-ERR DB index is out of range\r\n"
    );
    assert_eq!(
        r.call(&["MOVE", "k", "x"]),
        "-ERR value is not an integer or out of range\r\n"
    );
    assert_eq!(r.call(&["SELECT", "1"]), "+OK\r\n");
    assert_eq!(r.call(&["GET", "k"]), "$1\r\nv\r\n");
}

#[test]
fn swapdb_swaps_contents_for_every_connection() {
    let s = Shoal::start(&[]);
    let mut a = s.raw();
    let mut b = s.raw();
    assert_eq!(a.call(&["SET", "in0", "x"]), "+OK\r\n");
    assert_eq!(b.call(&["SELECT", "1"]), "+OK\r\n");
    assert_eq!(b.call(&["SET", "in1", "y"]), "+OK\r\n");
    assert_eq!(a.call(&["SWAPDB", "0", "1"]), "+OK\r\n");
    // Connections stay on their db numbers and see the swapped contents.
    assert_eq!(a.call(&["GET", "in1"]), "$1\r\ny\r\n");
    assert_eq!(a.call(&["GET", "in0"]), "$-1\r\n");
    assert_eq!(b.call(&["GET", "in0"]), "$1\r\nx\r\n");
    assert_eq!(
        a.call(&["SWAPDB", "0", "99"]),
        "-ERR DB index is out of range\r\n"
    );
    assert_eq!(
        a.call(&["SWAPDB", "x", "1"]),
        "-ERR invalid first DB index\r\n"
    );
    assert_eq!(
        a.call(&["SWAPDB", "0", "x"]),
        "-ERR invalid second DB index\r\n"
    );
}

#[test]
fn keys_matches_glob_patterns() {
    let s = Shoal::start(&[]);
    let mut c = s.client();
    let _: () = q(
        &mut c,
        &[
            "MSET", "hello", "1", "hallo", "2", "hxllo", "3", "hllo", "4", "heeeello", "5",
            "h[x]llo", "6", "world", "7",
        ],
    );
    let cases: &[(&str, &[&str])] = &[
        ("h?llo", &["hallo", "hello", "hxllo"]),
        (
            "h*llo",
            &["h[x]llo", "hallo", "heeeello", "hello", "hllo", "hxllo"],
        ),
        ("h[ae]llo", &["hallo", "hello"]),
        ("h[^e]llo", &["hallo", "hxllo"]),
        ("h[a-b]llo", &["hallo"]),
        ("h\\[x\\]llo", &["h[x]llo"]),
        ("w*", &["world"]),
        ("nothing*", &[]),
    ];
    for (pattern, want) in cases {
        let got: Vec<String> = q(&mut c, &["KEYS", pattern]);
        assert_eq!(sorted(got), *want, "KEYS {pattern}");
    }
    let all: Vec<String> = q(&mut c, &["KEYS", "*"]);
    assert_eq!(all.len(), 7);
}

#[test]
fn keys_skips_expired_keys() {
    let s = Shoal::start(&[]);
    let mut c = s.client();
    let _: () = q(&mut c, &["SET", "live", "v"]);
    let _: () = q(&mut c, &["SET", "dying", "v", "PX", "20"]);
    wait_until("dying to be gone from KEYS", || {
        q::<Vec<String>>(&mut c, &["KEYS", "*"]) == vec!["live".to_string()]
    });
}

/// Iterates SCAN to the end (bounded) and returns every key seen and the number of calls.
fn scan_all(c: &mut redis::Connection, extra: &[&str]) -> (Vec<String>, usize) {
    let mut cursor = "0".to_string();
    let mut seen = Vec::new();
    for calls in 1..=100_000 {
        let mut args = vec!["SCAN", cursor.as_str()];
        args.extend_from_slice(extra);
        let (next, keys): (String, Vec<String>) = q(c, &args);
        seen.extend(keys);
        if next == "0" {
            return (seen, calls);
        }
        cursor = next;
    }
    panic!("SCAN did not finish within 100000 calls");
}

#[test]
fn scan_full_iteration_returns_every_key() {
    let s = Shoal::start(&[]);
    let mut c = s.client();
    let mut p = redis::pipe();
    for i in 0..3000 {
        p.cmd("SET").arg(format!("key:{i}")).arg(i).ignore();
    }
    p.exec(&mut c).unwrap();
    let (seen, calls) = scan_all(&mut c, &["COUNT", "100"]);
    let unique: BTreeSet<&String> = seen.iter().collect();
    assert_eq!(unique.len(), 3000, "every key is returned");
    for i in 0..3000 {
        assert!(unique.contains(&format!("key:{i}")), "missing key:{i}");
    }
    assert!(calls > 1, "COUNT 100 over 3000 keys takes several calls");
    // MATCH filters; TYPE filters.
    let (seen, _) = scan_all(&mut c, &["MATCH", "key:1??", "COUNT", "500"]);
    let unique: BTreeSet<String> = seen.into_iter().collect();
    let want: BTreeSet<String> = (100..200).map(|i| format!("key:{i}")).collect();
    assert_eq!(unique, want);
    let (seen, _) = scan_all(&mut c, &["TYPE", "string", "COUNT", "1000"]);
    assert_eq!(seen.iter().collect::<BTreeSet<_>>().len(), 3000);
    let (seen, _) = scan_all(&mut c, &["TYPE", "hash", "COUNT", "1000"]);
    assert!(seen.is_empty());
}

#[test]
fn scan_keeps_returning_keys_that_stay_while_others_change() {
    // SCAN's guarantee: a key present for the whole iteration is returned at least once.
    let s = Shoal::start(&[]);
    let mut c = s.client();
    let mut w = s.client();
    let mut p = redis::pipe();
    for i in 0..1000 {
        p.cmd("SET").arg(format!("stable:{i}")).arg(i).ignore();
    }
    p.exec(&mut c).unwrap();
    let mut cursor = "0".to_string();
    let mut seen = BTreeSet::new();
    for churn in 0..100_000 {
        let (next, keys): (String, Vec<String>) = q(&mut c, &["SCAN", &cursor, "COUNT", "50"]);
        seen.extend(keys);
        // Other keys come and go between calls.
        let _: () = q(&mut w, &["SET", &format!("churn:{churn}"), "x"]);
        let _: i64 = q(&mut w, &["DEL", &format!("churn:{}", churn / 2)]);
        if next == "0" {
            break;
        }
        cursor = next;
    }
    for i in 0..1000 {
        assert!(seen.contains(&format!("stable:{i}")), "missing stable:{i}");
    }
}

#[test]
fn scan_argument_errors() {
    let s = Shoal::start(&[]);
    let mut r = s.raw();
    assert_eq!(r.call(&["SCAN", "x"]), "-ERR invalid cursor\r\n");
    assert_eq!(
        r.call(&["SCAN", "18446744073709551616"]),
        "-ERR invalid cursor\r\n"
    );
    assert_eq!(
        r.call(&["SCAN", "0", "COUNT", "0"]),
        "-ERR syntax error\r\n"
    );
    assert_eq!(
        r.call(&["SCAN", "0", "BOGUS", "1"]),
        "-ERR syntax error\r\n"
    );
    assert_eq!(r.call(&["SCAN", "0", "COUNT"]), "-ERR syntax error\r\n");
}

#[test]
fn scan_of_an_empty_database_terminates() {
    let s = Shoal::start(&[]);
    let mut c = s.client();
    let (seen, _) = scan_all(&mut c, &[]);
    assert!(seen.is_empty());
}

#[test]
fn randomkey_returns_existing_keys_or_nil() {
    let s = Shoal::start(&[]);
    let mut c = s.client();
    let k: Option<String> = q(&mut c, &["RANDOMKEY"]);
    assert_eq!(k, None);
    let _: () = q(&mut c, &["MSET", "a", "1", "b", "2", "c", "3"]);
    let mut drawn = BTreeSet::new();
    for _ in 0..300 {
        let k: String = q(&mut c, &["RANDOMKEY"]);
        assert!(["a", "b", "c"].contains(&k.as_str()), "{k}");
        drawn.insert(k);
    }
    assert!(
        drawn.len() >= 2,
        "300 draws over 3 keys return more than one key: {drawn:?}"
    );
    // Expired keys are not returned.
    let _: () = q(&mut c, &["FLUSHALL"]);
    let _: () = q(&mut c, &["SET", "gone", "v", "PX", "10"]);
    wait_until("RANDOMKEY to stop returning an expired key", || {
        q::<Option<String>>(&mut c, &["RANDOMKEY"]).is_none()
    });
}

#[test]
fn object_encoding_refcount_and_help() {
    let s = Shoal::start(&[]);
    let mut r = s.raw();
    assert_eq!(r.call(&["SET", "int", "12345"]), "+OK\r\n");
    assert_eq!(r.call(&["SET", "short", "hello"]), "+OK\r\n");
    assert_eq!(r.call(&["SET", "long", &"a".repeat(45)]), "+OK\r\n");
    assert_eq!(r.call(&["OBJECT", "ENCODING", "int"]), "$3\r\nint\r\n");
    assert_eq!(r.call(&["OBJECT", "ENCODING", "short"]), "$6\r\nembstr\r\n");
    assert_eq!(r.call(&["OBJECT", "ENCODING", "long"]), "$3\r\nraw\r\n");
    assert_eq!(r.call(&["OBJECT", "ENCODING", "nope"]), "$-1\r\n");
    assert_eq!(r.call(&["OBJECT", "REFCOUNT", "short"]), ":1\r\n");
    assert_eq!(
        r.call(&["OBJECT", "BOGUS", "x"]),
        "-ERR unknown subcommand 'BOGUS'. Try OBJECT HELP.\r\n"
    );
    assert!(r.call(&["OBJECT", "HELP"]).starts_with("*"));
}

#[test]
fn object_idletime_of_a_fresh_key_is_near_zero_under_lru() {
    let s = Shoal::start(&["--maxmemory-policy", "allkeys-lru"]);
    let mut r = s.raw();
    assert_eq!(r.call(&["SET", "k", "v"]), "+OK\r\n");
    let idle = r.call(&["OBJECT", "IDLETIME", "k"]);
    assert!(idle == ":0\r\n" || idle == ":1\r\n", "{idle:?}");
    assert_eq!(
        r.call(&["OBJECT", "FREQ", "k"]),
        "-ERR An LFU maxmemory policy is not selected, access frequency not tracked. Please note that when switching between policies at runtime LRU and LFU data will take some time to adjust.\r\n"
    );
}

#[test]
fn object_idletime_under_the_default_policy_is_not_made_up() {
    // Under the default policy (allkeys-tinylfu) shoal may either track idle time or refuse like
    // Redis does under LFU; it must not report a fresh key as idle for days.
    let s = Shoal::start(&[]);
    let mut r = s.raw();
    assert_eq!(r.call(&["SET", "k", "v"]), "+OK\r\n");
    let idle = r.call(&["OBJECT", "IDLETIME", "k"]);
    assert!(
        idle == ":0\r\n" || idle == ":1\r\n" || idle.starts_with("-ERR"),
        "fresh key reported idle: {idle:?}"
    );
}

#[test]
fn object_freq_counts_accesses_under_lfu() {
    let s = Shoal::start(&["--maxmemory-policy", "allkeys-lfu"]);
    let mut c = s.client();
    let _: () = q(&mut c, &["SET", "hot", "v"]);
    let _: () = q(&mut c, &["SET", "cold", "v"]);
    let initial: i64 = q(&mut c, &["OBJECT", "FREQ", "cold"]);
    assert_eq!(initial, 5, "LFU_INIT_VAL");
    for _ in 0..200 {
        let _: String = q(&mut c, &["GET", "hot"]);
    }
    let hot: i64 = q(&mut c, &["OBJECT", "FREQ", "hot"]);
    let cold: i64 = q(&mut c, &["OBJECT", "FREQ", "cold"]);
    assert!(hot > cold, "hot={hot} cold={cold}");
    let mut r = s.raw();
    assert!(
        r.call(&["OBJECT", "IDLETIME", "hot"])
            .starts_with("-ERR An LFU maxmemory policy is selected, idle time not tracked.")
    );
}

#[test]
fn dump_and_restore_round_trip() {
    let s = Shoal::start(&[]);
    let mut c = s.client();
    let value: Vec<u8> = (0..=255u8).cycle().take(10_000).collect();
    let _: () = redis::cmd("SET")
        .arg("src")
        .arg(&value)
        .query(&mut c)
        .unwrap();
    let payload: Vec<u8> = q(&mut c, &["DUMP", "src"]);
    let nil: Value = q(&mut c, &["DUMP", "nope"]);
    assert_eq!(nil, Value::Nil);
    let _: () = redis::cmd("RESTORE")
        .arg("copy")
        .arg(0)
        .arg(&payload)
        .query(&mut c)
        .unwrap();
    let back: Vec<u8> = q(&mut c, &["GET", "copy"]);
    assert_eq!(back, value);
    let ttl: i64 = q(&mut c, &["TTL", "copy"]);
    assert_eq!(ttl, -1);
    // A TTL in ms, relative or ABSTTL.
    let _: () = redis::cmd("RESTORE")
        .arg("timed")
        .arg(100_000)
        .arg(&payload)
        .query(&mut c)
        .unwrap();
    let pttl: i64 = q(&mut c, &["PTTL", "timed"]);
    assert!(pttl > 99_000 && pttl <= 100_000, "{pttl}");
    let at = now_ms() + 500_000;
    let _: () = redis::cmd("RESTORE")
        .arg("abs")
        .arg(at)
        .arg(&payload)
        .arg("ABSTTL")
        .query(&mut c)
        .unwrap();
    let t: i64 = q(&mut c, &["PEXPIRETIME", "abs"]);
    assert_eq!(t as u64, at);
    // BUSYKEY without REPLACE; REPLACE overwrites.
    let e = redis::cmd("RESTORE")
        .arg("copy")
        .arg(0)
        .arg(&payload)
        .query::<()>(&mut c)
        .unwrap_err();
    assert_eq!(e.code(), Some("BUSYKEY"));
    let _: () = q(&mut c, &["SET", "copy", "other"]);
    let _: () = redis::cmd("RESTORE")
        .arg("copy")
        .arg(0)
        .arg(&payload)
        .arg("REPLACE")
        .query(&mut c)
        .unwrap();
    let back: Vec<u8> = q(&mut c, &["GET", "copy"]);
    assert_eq!(back, value);
}

#[test]
fn restore_rejects_bad_payloads_and_arguments() {
    let s = Shoal::start(&[]);
    let mut r = s.raw();
    assert_eq!(r.call(&["SET", "exists", "v"]), "+OK\r\n");
    let cases: &[(&[&str], &str)] = &[
        (
            &["RESTORE", "r", "0", "garbage"],
            "-ERR DUMP payload version or checksum are wrong\r\n",
        ),
        (
            &["RESTORE", "exists", "0", "garbage"],
            "-BUSYKEY Target key name already exists.\r\n",
        ),
        (
            &["RESTORE", "r", "-1", "garbage"],
            "-ERR Invalid TTL value, must be >= 0\r\n",
        ),
        (
            &["RESTORE", "r", "0", "garbage", "BOGUS"],
            "-ERR syntax error\r\n",
        ),
        (
            &["RESTORE", "r", "0", "garbage", "IDLETIME", "-1"],
            "-ERR Invalid IDLETIME value, must be >= 0\r\n",
        ),
        (
            &["RESTORE", "r", "0", "garbage", "FREQ", "300"],
            "-ERR Invalid FREQ value, must be >= 0 and <= 255\r\n",
        ),
    ];
    for (args, want) in cases {
        assert_eq!(r.call(args), *want, "{args:?}");
    }
    // A payload with one flipped byte fails its checksum.
    let dump = {
        r.cmd(&[b"DUMP", b"exists"]);
        r.reply()
    };
    let body_start = dump.iter().position(|&b| b == b'\n').unwrap() + 1;
    let mut payload = dump[body_start..dump.len() - 2].to_vec();
    payload[0] ^= 0x40;
    r.cmd(&[b"RESTORE", b"r", b"0", &payload]);
    assert_eq!(
        r.reply(),
        b"-ERR DUMP payload version or checksum are wrong\r\n"
    );
    assert_eq!(r.call(&["EXISTS", "r"]), ":0\r\n");
}

#[test]
fn generic_commands_work_on_lists_too() {
    let s = Shoal::start(&[]);
    let mut c = s.client();
    let _: i64 = q(&mut c, &["RPUSH", "l", "a", "b", "c"]);
    let t: String = q(&mut c, &["TYPE", "l"]);
    assert_eq!(t, "list");
    // COPY makes an independent list.
    let n: i64 = q(&mut c, &["COPY", "l", "l2"]);
    assert_eq!(n, 1);
    let _: i64 = q(&mut c, &["RPUSH", "l2", "d"]);
    let l: Vec<String> = q(&mut c, &["LRANGE", "l", "0", "-1"]);
    assert_eq!(l, vec!["a", "b", "c"]);
    let l2: Vec<String> = q(&mut c, &["LRANGE", "l2", "0", "-1"]);
    assert_eq!(l2, vec!["a", "b", "c", "d"]);
    // RENAME, EXPIRE and DUMP/RESTORE carry the list.
    let _: () = q(&mut c, &["RENAME", "l2", "r"]);
    let n: i64 = q(&mut c, &["EXPIRE", "r", "100"]);
    assert_eq!(n, 1);
    let payload: Vec<u8> = q(&mut c, &["DUMP", "r"]);
    let _: () = redis::cmd("RESTORE")
        .arg("restored")
        .arg(0)
        .arg(&payload)
        .query(&mut c)
        .unwrap();
    let back: Vec<String> = q(&mut c, &["LRANGE", "restored", "0", "-1"]);
    assert_eq!(back, vec!["a", "b", "c", "d"]);
    let t: String = q(&mut c, &["TYPE", "restored"]);
    assert_eq!(t, "list");
    // SCAN TYPE tells them apart.
    let _: () = q(&mut c, &["SET", "s", "v"]);
    let (seen, _) = scan_all(&mut c, &["TYPE", "list"]);
    assert_eq!(sorted(seen), vec!["l", "r", "restored"]);
    let (seen, _) = scan_all(&mut c, &["TYPE", "string"]);
    assert_eq!(seen, vec!["s"]);
}

/// What a client reads of every key, type by type (compared between servers).
fn read_back(c: &mut redis::Connection, key: &str) -> String {
    let t: String = q(c, &["TYPE", key]);
    let v = match t.as_str() {
        "string" => format!("{:?}", q::<Vec<u8>>(c, &["GET", key])),
        "list" => format!("{:?}", q::<Vec<String>>(c, &["LRANGE", key, "0", "-1"])),
        "set" => format!("{:?}", sorted(q::<Vec<String>>(c, &["SMEMBERS", key]))),
        "hash" => {
            let mut v: Vec<(String, String)> = q(c, &["HGETALL", key]);
            v.sort();
            format!("{v:?}")
        }
        "zset" => format!(
            "{:?}",
            q::<Vec<String>>(c, &["ZRANGE", key, "0", "-1", "WITHSCORES"])
        ),
        "stream" => {
            let range: redis::Value = q(c, &["XRANGE", key, "-", "+"]);
            // (Node counts aside: shoal cuts deleted entries out of its nodes.)
            let info: Vec<redis::Value> = q(c, &["XINFO", "STREAM", key]);
            let info: Vec<String> = info
                .chunks(2)
                .filter(|kv| !format!("{:?}", kv[0]).contains("radix-tree"))
                .map(|kv| format!("{kv:?}"))
                .collect();
            let groups: redis::Value = q(c, &["XINFO", "GROUPS", key]);
            let pending: redis::Value = q(c, &["XPENDING", key, "g"]);
            format!("{range:?} {info:?} {groups:?} {pending:?}")
        }
        other => other.to_string(),
    };
    format!("{key} {t} {v}")
}

/// Keys of every type and encoding redis-server 7.0 writes (strings as integers, LZF-compressed
/// and plain; listpack and quicklist lists, intset / listpack / hash-table sets, listpack and
/// skip-list sorted sets, listpack and hash-table hashes, a HyperLogLog, a stream with deleted
/// entries, consumer groups and pending entries) dumped by redis-server,
/// restored into shoal: every key reads back the same, with its TTL. Then MIGRATE from the
/// redis-server into shoal moves keys the same way (what `redis-cli --cluster import` uses).
#[test]
fn redis_server_dump_payloads_restore_and_migrate_into_shoal() {
    let redis = common::reference::Redis::start();
    let shoal = Shoal::start(&[]);
    let mut rc = redis.client();
    let mut sc = shoal.client();
    let big: Vec<String> = (0..300)
        .map(|i| format!("member-{i:04}-{}", "x".repeat(i % 40)))
        .collect();
    let mut setup: Vec<Vec<String>> = vec![
        vec!["SET".into(), "s:int".into(), "-123456".into()],
        vec!["SET".into(), "s:small".into(), "hello".into()],
        vec!["SET".into(), "s:lzf".into(), "ab".repeat(500)],
        vec![
            "RPUSH".into(),
            "l:small".into(),
            "a".into(),
            "1".into(),
            "-5".into(),
            "300".into(),
            "70000".into(),
        ],
        vec![
            "SADD".into(),
            "set:ints".into(),
            "3".into(),
            "1".into(),
            "-2".into(),
            "100000".into(),
        ],
        vec!["SADD".into(), "set:small".into(), "x".into(), "y".into()],
        vec![
            "HSET".into(),
            "h:small".into(),
            "f".into(),
            "v".into(),
            "n".into(),
            "12".into(),
        ],
        vec![
            "ZADD".into(),
            "z:small".into(),
            "1.5".into(),
            "m".into(),
            "-3".into(),
            "n".into(),
            "inf".into(),
            "o".into(),
        ],
        vec![
            "PFADD".into(),
            "hll".into(),
            "a".into(),
            "b".into(),
            "c".into(),
        ],
    ];
    let mut l = vec!["RPUSH".to_string(), "l:big".into()];
    l.extend(big.iter().cloned());
    setup.push(l);
    let mut st = vec!["SADD".to_string(), "set:big".into()];
    st.extend(big.iter().cloned());
    setup.push(st);
    let mut h = vec!["HSET".to_string(), "h:big".into()];
    for (i, m) in big.iter().enumerate() {
        h.push(m.clone());
        h.push(i.to_string());
    }
    setup.push(h);
    let mut z = vec!["ZADD".to_string(), "z:big".into()];
    for (i, m) in big.iter().enumerate() {
        z.push(format!("{}.25", i));
        z.push(m.clone());
    }
    setup.push(z);
    for cmd in &setup {
        let args: Vec<&str> = cmd.iter().map(String::as_str).collect();
        let _: redis::Value = q(&mut rc, &args);
    }
    let _: i64 = q(&mut rc, &["PEXPIRE", "s:small", "100000"]);
    // A stream with deleted entries, entries of other fields, a group with pending entries and
    // consumers, and a group with none.
    for i in 1..=12 {
        let id = format!("1-{i}");
        let (f, v) = if i % 4 == 0 {
            ("other", "x")
        } else {
            ("a", "1")
        };
        let _: String = q(&mut rc, &["XADD", "st", &id, f, v, "b", &i.to_string()]);
    }
    let _: i64 = q(&mut rc, &["XDEL", "st", "1-5"]);
    let _: String = q(&mut rc, &["XGROUP", "CREATE", "st", "g", "0"]);
    let _: String = q(&mut rc, &["XGROUP", "CREATE", "st", "idle", "$"]);
    let _: redis::Value = q(
        &mut rc,
        &[
            "XREADGROUP",
            "GROUP",
            "g",
            "alice",
            "COUNT",
            "3",
            "STREAMS",
            "st",
            ">",
        ],
    );
    let _: redis::Value = q(
        &mut rc,
        &[
            "XREADGROUP",
            "GROUP",
            "g",
            "bob",
            "COUNT",
            "2",
            "STREAMS",
            "st",
            ">",
        ],
    );
    let _: i64 = q(&mut rc, &["XACK", "st", "g", "1-2"]);
    setup.push(vec!["XADD".into(), "st".into()]);
    let keys: Vec<String> = setup.iter().map(|c| c[1].clone()).collect();
    for key in &keys {
        let payload: Vec<u8> = redis::cmd("DUMP").arg(key).query(&mut rc).unwrap();
        let ttl: i64 = q(&mut rc, &["PTTL", key]);
        let _: () = redis::cmd("RESTORE")
            .arg(key)
            .arg(ttl.max(0))
            .arg(&payload)
            .query(&mut sc)
            .unwrap_or_else(|e| panic!("RESTORE {key} of redis-server's payload: {e}"));
        assert_eq!(read_back(&mut sc, key), read_back(&mut rc, key));
    }
    let ttl: i64 = q(&mut sc, &["PTTL", "s:small"]);
    assert!((90_000..=100_000).contains(&ttl), "TTL {ttl}");
    // The HyperLogLog is Redis's own representation: PFCOUNT agrees, and PFADD goes on from it.
    assert_eq!(q::<i64>(&mut sc, &["PFCOUNT", "hll"]), 3);
    assert_eq!(q::<i64>(&mut sc, &["PFADD", "hll", "d"]), 1);
    assert_eq!(q::<i64>(&mut sc, &["PFCOUNT", "hll"]), 4);

    // MIGRATE from redis-server to shoal: the keys leave redis and arrive whole.
    let _: () = q(&mut sc, &["FLUSHALL"]);
    let mut migrate = vec![
        "MIGRATE".to_string(),
        "127.0.0.1".into(),
        shoal.port.to_string(),
        "".into(),
        "0".into(),
        "5000".into(),
        "COPY".into(),
        "KEYS".into(),
    ];
    migrate.extend(keys.iter().cloned());
    let args: Vec<&str> = migrate.iter().map(String::as_str).collect();
    let r: String = q(&mut rc, &args);
    assert_eq!(r, "OK");
    for key in &keys {
        assert_eq!(read_back(&mut sc, key), read_back(&mut rc, key));
    }
    // A corrupted body with a valid checksum is refused, not misread.
    let mut bad: Vec<u8> = b"\x02\x02\x01x\x01x".to_vec();
    bad.extend_from_slice(&10u16.to_le_bytes());
    let crc = crc64_jones(&bad);
    bad.extend_from_slice(&crc.to_le_bytes());
    let e = redis::cmd("RESTORE")
        .arg("dup")
        .arg(0)
        .arg(&bad)
        .query::<()>(&mut sc)
        .unwrap_err();
    assert!(e.to_string().contains("Bad data format"), "{e}");
}

/// Redis's CRC-64 (Jones, reflected), bit by bit: test-side, independent of shoal's tables.
fn crc64_jones(data: &[u8]) -> u64 {
    let mut crc = 0u64;
    for &b in data {
        crc ^= b as u64;
        for _ in 0..8 {
            crc = if crc & 1 == 1 {
                (crc >> 1) ^ 0x95ac_9329_ac4b_c9b5
            } else {
                crc >> 1
            };
        }
    }
    crc
}
