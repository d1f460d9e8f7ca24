//! String commands over the wire with redis-rs: SET and every option (EX PX EXAT PXAT NX XX KEEPTTL
//! GET), SETNX SETEX PSETEX GETSET GETDEL GETEX MGET MSET MSETNX APPEND STRLEN GETRANGE SETRANGE
//! INCR DECR INCRBY DECRBY INCRBYFLOAT LCS; and, on a raw connection, the exact error lines for bad
//! arguments. Expected replies were checked against redis-server 7.0.15.

mod common;

use common::{Shoal, q, try_q, wait_until};
use redis::Value;

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
}

#[test]
fn set_and_get_round_trip_binary_values() {
    let s = Shoal::start(&[]);
    let mut c = s.client();
    let value: Vec<u8> = (0..=255u8).collect();
    let ok: Value = redis::cmd("SET")
        .arg(b"bin\x00key")
        .arg(&value)
        .query(&mut c)
        .unwrap();
    assert_eq!(ok, Value::Okay);
    let back: Vec<u8> = redis::cmd("GET").arg(b"bin\x00key").query(&mut c).unwrap();
    assert_eq!(back, value);
    let missing: Option<String> = q(&mut c, &["GET", "nope"]);
    assert_eq!(missing, None);
    // An empty value is a value, not a missing key.
    let _: () = q(&mut c, &["SET", "empty", ""]);
    let e: Option<String> = q(&mut c, &["GET", "empty"]);
    assert_eq!(e.as_deref(), Some(""));
}

#[test]
fn set_with_ex_and_px_sets_a_ttl_and_plain_set_clears_it() {
    let s = Shoal::start(&[]);
    let mut c = s.client();
    let _: () = q(&mut c, &["SET", "k", "v", "EX", "100"]);
    let ttl: i64 = q(&mut c, &["TTL", "k"]);
    assert!((99..=100).contains(&ttl), "{ttl}");
    let _: () = q(&mut c, &["SET", "k", "v", "PX", "100000"]);
    let pttl: i64 = q(&mut c, &["PTTL", "k"]);
    assert!((99_000..=100_000).contains(&pttl), "{pttl}");
    let _: () = q(&mut c, &["SET", "k", "v2"]);
    let ttl: i64 = q(&mut c, &["TTL", "k"]);
    assert_eq!(ttl, -1, "SET without options clears the TTL");
}

#[test]
fn set_with_exat_and_pxat_uses_absolute_deadlines() {
    let s = Shoal::start(&[]);
    let mut c = s.client();
    let at_s = now_ms() / 1000 + 500;
    let _: () = q(&mut c, &["SET", "k", "v", "EXAT", &at_s.to_string()]);
    let t: i64 = q(&mut c, &["EXPIRETIME", "k"]);
    assert_eq!(t as u64, at_s);
    let at_ms = now_ms() + 300_000;
    let _: () = q(&mut c, &["SET", "k", "v", "PXAT", &at_ms.to_string()]);
    let t: i64 = q(&mut c, &["PEXPIRETIME", "k"]);
    assert_eq!(t as u64, at_ms);
    // A deadline in the past: the key is written already expired.
    let _: () = q(&mut c, &["SET", "gone", "v", "PXAT", "1"]);
    let n: i64 = q(&mut c, &["EXISTS", "gone"]);
    assert_eq!(n, 0);
}

#[test]
fn set_px_expires_the_key() {
    let s = Shoal::start(&[]);
    let mut c = s.client();
    let _: () = q(&mut c, &["SET", "short", "v", "PX", "50"]);
    wait_until("short-lived key to expire", || {
        q::<Option<String>>(&mut c, &["GET", "short"]).is_none()
    });
}

#[test]
fn set_nx_and_xx_write_only_on_absence_or_presence() {
    let s = Shoal::start(&[]);
    let mut c = s.client();
    let r: Value = q(&mut c, &["SET", "k", "first", "XX"]);
    assert_eq!(r, Value::Nil, "XX on a missing key does nothing");
    let r: Value = q(&mut c, &["SET", "k", "first", "NX"]);
    assert_eq!(r, Value::Okay);
    let r: Value = q(&mut c, &["SET", "k", "second", "NX"]);
    assert_eq!(r, Value::Nil);
    let r: Value = q(&mut c, &["SET", "k", "third", "XX"]);
    assert_eq!(r, Value::Okay);
    let v: String = q(&mut c, &["GET", "k"]);
    assert_eq!(v, "third");
}

#[test]
fn set_keepttl_keeps_the_deadline() {
    let s = Shoal::start(&[]);
    let mut c = s.client();
    let _: () = q(&mut c, &["SET", "k", "v", "PX", "500000"]);
    let before: i64 = q(&mut c, &["PEXPIRETIME", "k"]);
    let _: () = q(&mut c, &["SET", "k", "w", "KEEPTTL"]);
    let after: i64 = q(&mut c, &["PEXPIRETIME", "k"]);
    assert_eq!(before, after);
    let v: String = q(&mut c, &["GET", "k"]);
    assert_eq!(v, "w");
}

#[test]
fn set_get_returns_the_old_value() {
    let s = Shoal::start(&[]);
    let mut c = s.client();
    let old: Option<String> = q(&mut c, &["SET", "k", "a", "GET"]);
    assert_eq!(old, None);
    let old: Option<String> = q(&mut c, &["SET", "k", "b", "GET"]);
    assert_eq!(old.as_deref(), Some("a"));
    // With NX on an existing key: nothing written, old value returned.
    let old: Option<String> = q(&mut c, &["SET", "k", "c", "NX", "GET"]);
    assert_eq!(old.as_deref(), Some("b"));
    let v: String = q(&mut c, &["GET", "k"]);
    assert_eq!(v, "b");
    // With XX on a missing key: nothing written, nil.
    let old: Option<String> = q(&mut c, &["SET", "m", "c", "XX", "GET"]);
    assert_eq!(old, None);
    let n: i64 = q(&mut c, &["EXISTS", "m"]);
    assert_eq!(n, 0);
}

#[test]
fn set_option_errors_are_exact() {
    let s = Shoal::start(&[]);
    let mut r = s.raw();
    let cases: &[(&[&str], &str)] = &[
        (
            &["SET", "k"],
            "-ERR wrong number of arguments for 'set' command\r\n",
        ),
        (&["SET", "k", "v", "NX", "XX"], "-ERR syntax error\r\n"),
        (&["SET", "k", "v", "BOGUS"], "-ERR syntax error\r\n"),
        (&["SET", "k", "v", "EX"], "-ERR syntax error\r\n"),
        (
            &["SET", "k", "v", "EX", "10", "PX", "5"],
            "-ERR syntax error\r\n",
        ),
        (
            &["SET", "k", "v", "KEEPTTL", "EX", "5"],
            "-ERR syntax error\r\n",
        ),
        (
            &["SET", "k", "v", "EX", "0"],
            "-ERR invalid expire time in 'set' command\r\n",
        ),
        (
            &["SET", "k", "v", "PX", "-1"],
            "-ERR invalid expire time in 'set' command\r\n",
        ),
        (
            &["SET", "k", "v", "EX", "99999999999999999"],
            "-ERR invalid expire time in 'set' command\r\n",
        ),
        (
            &["SET", "k", "v", "EX", "ten"],
            "-ERR value is not an integer or out of range\r\n",
        ),
    ];
    for (args, want) in cases {
        assert_eq!(r.call(args), *want, "{args:?}");
    }
    // None of the failed SETs wrote anything.
    assert_eq!(r.call(&["EXISTS", "k"]), ":0\r\n");
}

#[test]
fn setnx_setex_psetex() {
    let s = Shoal::start(&[]);
    let mut c = s.client();
    let n: i64 = q(&mut c, &["SETNX", "k", "a"]);
    assert_eq!(n, 1);
    let n: i64 = q(&mut c, &["SETNX", "k", "b"]);
    assert_eq!(n, 0);
    let v: String = q(&mut c, &["GET", "k"]);
    assert_eq!(v, "a");
    let _: () = q(&mut c, &["SETEX", "e", "100", "v"]);
    let ttl: i64 = q(&mut c, &["TTL", "e"]);
    assert!((99..=100).contains(&ttl), "{ttl}");
    let _: () = q(&mut c, &["PSETEX", "p", "100000", "v"]);
    let pttl: i64 = q(&mut c, &["PTTL", "p"]);
    assert!((99_000..=100_000).contains(&pttl), "{pttl}");
    let mut r = s.raw();
    assert_eq!(
        r.call(&["SETEX", "e", "0", "v"]),
        "-ERR invalid expire time in 'setex' command\r\n"
    );
    assert_eq!(
        r.call(&["PSETEX", "e", "-5", "v"]),
        "-ERR invalid expire time in 'psetex' command\r\n"
    );
    assert_eq!(
        r.call(&["SETEX", "e", "x", "v"]),
        "-ERR value is not an integer or out of range\r\n"
    );
    assert_eq!(
        r.call(&["SETNX", "k"]),
        "-ERR wrong number of arguments for 'setnx' command\r\n"
    );
}

#[test]
fn getset_returns_old_value_and_clears_ttl() {
    let s = Shoal::start(&[]);
    let mut c = s.client();
    let old: Option<String> = q(&mut c, &["GETSET", "k", "one"]);
    assert_eq!(old, None);
    let _: () = q(&mut c, &["EXPIRE", "k", "100"]);
    let old: Option<String> = q(&mut c, &["GETSET", "k", "two"]);
    assert_eq!(old.as_deref(), Some("one"));
    let ttl: i64 = q(&mut c, &["TTL", "k"]);
    assert_eq!(ttl, -1);
    let v: String = q(&mut c, &["GET", "k"]);
    assert_eq!(v, "two");
}

#[test]
fn getdel_returns_and_removes() {
    let s = Shoal::start(&[]);
    let mut c = s.client();
    let _: () = q(&mut c, &["SET", "k", "v"]);
    let v: Option<String> = q(&mut c, &["GETDEL", "k"]);
    assert_eq!(v.as_deref(), Some("v"));
    let v: Option<String> = q(&mut c, &["GETDEL", "k"]);
    assert_eq!(v, None);
    let n: i64 = q(&mut c, &["EXISTS", "k"]);
    assert_eq!(n, 0);
}

#[test]
fn getex_sets_or_removes_the_ttl() {
    let s = Shoal::start(&[]);
    let mut c = s.client();
    let _: () = q(&mut c, &["SET", "k", "v"]);
    let v: String = q(&mut c, &["GETEX", "k"]);
    assert_eq!(v, "v");
    let ttl: i64 = q(&mut c, &["TTL", "k"]);
    assert_eq!(ttl, -1, "GETEX without options leaves the TTL alone");
    let v: String = q(&mut c, &["GETEX", "k", "EX", "100"]);
    assert_eq!(v, "v");
    let ttl: i64 = q(&mut c, &["TTL", "k"]);
    assert!((99..=100).contains(&ttl), "{ttl}");
    let _: String = q(&mut c, &["GETEX", "k", "PX", "200000"]);
    let pttl: i64 = q(&mut c, &["PTTL", "k"]);
    assert!((199_000..=200_000).contains(&pttl), "{pttl}");
    let at = now_ms() / 1000 + 1000;
    let _: String = q(&mut c, &["GETEX", "k", "EXAT", &at.to_string()]);
    let t: i64 = q(&mut c, &["EXPIRETIME", "k"]);
    assert_eq!(t as u64, at);
    let _: String = q(&mut c, &["GETEX", "k", "PERSIST"]);
    let ttl: i64 = q(&mut c, &["TTL", "k"]);
    assert_eq!(ttl, -1);
    // PXAT in the past deletes the key after returning it.
    let v: String = q(&mut c, &["GETEX", "k", "PXAT", "1"]);
    assert_eq!(v, "v");
    let n: i64 = q(&mut c, &["EXISTS", "k"]);
    assert_eq!(n, 0);
    let v: Option<String> = q(&mut c, &["GETEX", "nope", "EX", "5"]);
    assert_eq!(v, None);
    let mut r = s.raw();
    assert_eq!(r.call(&["SET", "k", "v"]), "+OK\r\n");
    assert_eq!(
        r.call(&["GETEX", "k", "EX", "100", "PX", "3"]),
        "-ERR syntax error\r\n"
    );
    assert_eq!(r.call(&["GETEX", "k", "BOGUS"]), "-ERR syntax error\r\n");
    assert_eq!(
        r.call(&["GETEX", "k", "EX", "0"]),
        "-ERR invalid expire time in 'getex' command\r\n"
    );
}

#[test]
fn mget_mset_and_msetnx() {
    let s = Shoal::start(&[]);
    let mut c = s.client();
    let _: () = q(&mut c, &["MSET", "a", "1", "b", "2", "c", "3"]);
    let v: Vec<Option<String>> = q(&mut c, &["MGET", "a", "nope", "c", "b"]);
    assert_eq!(
        v,
        vec![Some("1".into()), None, Some("3".into()), Some("2".into())]
    );
    // MSETNX is all or nothing.
    let n: i64 = q(&mut c, &["MSETNX", "x", "1", "a", "changed"]);
    assert_eq!(n, 0);
    let v: Vec<Option<String>> = q(&mut c, &["MGET", "x", "a"]);
    assert_eq!(v, vec![None, Some("1".into())]);
    let n: i64 = q(&mut c, &["MSETNX", "x", "1", "y", "2"]);
    assert_eq!(n, 1);
    let v: Vec<String> = q(&mut c, &["MGET", "x", "y"]);
    assert_eq!(v, vec!["1", "2"]);
    // The last of duplicate keys wins.
    let _: () = q(&mut c, &["MSET", "d", "first", "d", "last"]);
    let v: String = q(&mut c, &["GET", "d"]);
    assert_eq!(v, "last");
    let mut r = s.raw();
    assert_eq!(
        r.call(&["MSET", "a"]),
        "-ERR wrong number of arguments for 'mset' command\r\n"
    );
    assert_eq!(
        r.call(&["MSET", "a", "1", "b"]),
        "-ERR wrong number of arguments for 'mset' command\r\n"
    );
    assert_eq!(
        r.call(&["MSETNX", "a", "1", "b"]),
        "-ERR wrong number of arguments for 'msetnx' command\r\n"
    );
    assert_eq!(
        r.call(&["MGET"]),
        "-ERR wrong number of arguments for 'mget' command\r\n"
    );
}

#[test]
fn append_and_strlen() {
    let s = Shoal::start(&[]);
    let mut c = s.client();
    let n: i64 = q(&mut c, &["APPEND", "k", "hello"]);
    assert_eq!(n, 5);
    let n: i64 = q(&mut c, &["APPEND", "k", " world"]);
    assert_eq!(n, 11);
    let v: String = q(&mut c, &["GET", "k"]);
    assert_eq!(v, "hello world");
    let n: i64 = q(&mut c, &["STRLEN", "k"]);
    assert_eq!(n, 11);
    let n: i64 = q(&mut c, &["STRLEN", "nope"]);
    assert_eq!(n, 0);
    // APPEND keeps the TTL; appending to a number makes a longer string.
    let _: () = q(&mut c, &["SET", "n", "12", "EX", "100"]);
    let n: i64 = q(&mut c, &["APPEND", "n", "34"]);
    assert_eq!(n, 4);
    let ttl: i64 = q(&mut c, &["TTL", "n"]);
    assert!(ttl > 0);
    let v: i64 = q(&mut c, &["INCR", "n"]);
    assert_eq!(v, 1235);
}

#[test]
fn getrange_clamps_like_redis() {
    let s = Shoal::start(&[]);
    let mut c = s.client();
    let _: () = q(&mut c, &["SET", "k", "This is a string"]);
    let cases: &[(&str, &str, &str)] = &[
        ("0", "3", "This"),
        ("-3", "-1", "ing"),
        ("0", "-1", "This is a string"),
        ("10", "100", "string"),
        ("-100", "3", "This"),
        ("5", "1", ""),
        ("-1", "-5", ""),
        ("100", "200", ""),
    ];
    for (start, end, want) in cases {
        let v: String = q(&mut c, &["GETRANGE", "k", start, end]);
        assert_eq!(v, *want, "GETRANGE k {start} {end}");
    }
    let v: String = q(&mut c, &["GETRANGE", "nope", "0", "-1"]);
    assert_eq!(v, "");
    let mut r = s.raw();
    assert_eq!(
        r.call(&["GETRANGE", "k", "x", "1"]),
        "-ERR value is not an integer or out of range\r\n"
    );
}

#[test]
fn setrange_pads_with_zero_bytes() {
    let s = Shoal::start(&[]);
    let mut c = s.client();
    let _: () = q(&mut c, &["SET", "k", "Hello World"]);
    let n: i64 = q(&mut c, &["SETRANGE", "k", "6", "Redis"]);
    assert_eq!(n, 11);
    let v: String = q(&mut c, &["GET", "k"]);
    assert_eq!(v, "Hello Redis");
    let n: i64 = q(&mut c, &["SETRANGE", "pad", "3", "ab"]);
    assert_eq!(n, 5);
    let v: Vec<u8> = q(&mut c, &["GET", "pad"]);
    assert_eq!(v, b"\0\0\0ab");
    // An empty value changes nothing and creates nothing.
    let n: i64 = q(&mut c, &["SETRANGE", "k", "100", ""]);
    assert_eq!(n, 11);
    let n: i64 = q(&mut c, &["SETRANGE", "none", "5", ""]);
    assert_eq!(n, 0);
    let e: i64 = q(&mut c, &["EXISTS", "none"]);
    assert_eq!(e, 0);
    let mut r = s.raw();
    assert_eq!(
        r.call(&["SETRANGE", "k", "-1", "x"]),
        "-ERR offset is out of range\r\n"
    );
    assert_eq!(
        r.call(&["SETRANGE", "k", "536870912", "x"]),
        "-ERR string exceeds maximum allowed size (proto-max-bulk-len)\r\n"
    );
}

#[test]
fn integer_counters() {
    let s = Shoal::start(&[]);
    let mut c = s.client();
    let v: i64 = q(&mut c, &["INCR", "n"]);
    assert_eq!(v, 1);
    let v: i64 = q(&mut c, &["INCRBY", "n", "41"]);
    assert_eq!(v, 42);
    let v: i64 = q(&mut c, &["DECR", "n"]);
    assert_eq!(v, 41);
    let v: i64 = q(&mut c, &["DECRBY", "n", "50"]);
    assert_eq!(v, -9);
    let v: i64 = q(&mut c, &["INCRBY", "n", "-1"]);
    assert_eq!(v, -10);
    let v: i64 = q(&mut c, &["DECR", "fresh"]);
    assert_eq!(v, -1);
    // Counters keep the TTL.
    let _: () = q(&mut c, &["SET", "t", "10", "EX", "100"]);
    let v: i64 = q(&mut c, &["INCR", "t"]);
    assert_eq!(v, 11);
    let ttl: i64 = q(&mut c, &["TTL", "t"]);
    assert!(ttl > 0);
    let mut r = s.raw();
    assert_eq!(r.call(&["SET", "max", "9223372036854775807"]), "+OK\r\n");
    assert_eq!(
        r.call(&["INCR", "max"]),
        "-ERR increment or decrement would overflow\r\n"
    );
    assert_eq!(r.call(&["SET", "min", "-9223372036854775808"]), "+OK\r\n");
    assert_eq!(
        r.call(&["DECR", "min"]),
        "-ERR increment or decrement would overflow\r\n"
    );
    assert_eq!(
        r.call(&["DECRBY", "n", "-9223372036854775808"]),
        "-ERR decrement would overflow\r\n"
    );
    for not_int in ["abc", "1.5", " 1", "1e3", ""] {
        assert_eq!(r.call(&["SET", "s", not_int]), "+OK\r\n");
        assert_eq!(
            r.call(&["INCR", "s"]),
            "-ERR value is not an integer or out of range\r\n",
            "{not_int:?}"
        );
    }
    assert_eq!(
        r.call(&["INCRBY", "n", "x"]),
        "-ERR value is not an integer or out of range\r\n"
    );
    assert_eq!(r.call(&["GET", "max"]), "$19\r\n9223372036854775807\r\n");
}

#[test]
fn incrbyfloat_formats_like_redis() {
    let s = Shoal::start(&[]);
    let mut c = s.client();
    let _: () = q(&mut c, &["SET", "f", "10.50"]);
    let cases: &[(&str, &str)] = &[
        ("0.1", "10.6"),
        ("-5", "5.6"),
        ("-5.6", "0"),
        ("3.0e3", "3000"),
        ("0.25", "3000.25"),
    ];
    for (by, want) in cases {
        let v: String = q(&mut c, &["INCRBYFLOAT", "f", by]);
        assert_eq!(v, *want, "INCRBYFLOAT f {by}");
    }
    let v: String = q(&mut c, &["GET", "f"]);
    assert_eq!(v, "3000.25");
    let v: String = q(&mut c, &["INCRBYFLOAT", "new", "1.5"]);
    assert_eq!(v, "1.5");
    // Keeps the TTL.
    let _: () = q(&mut c, &["SET", "t", "1", "EX", "100"]);
    let _: String = q(&mut c, &["INCRBYFLOAT", "t", "1.5"]);
    let ttl: i64 = q(&mut c, &["TTL", "t"]);
    assert!(ttl > 0);
    let mut r = s.raw();
    assert_eq!(
        r.call(&["INCRBYFLOAT", "f", "abc"]),
        "-ERR value is not a valid float\r\n"
    );
    assert_eq!(r.call(&["SET", "s", "abc"]), "+OK\r\n");
    assert_eq!(
        r.call(&["INCRBYFLOAT", "s", "1"]),
        "-ERR value is not a valid float\r\n"
    );
    assert_eq!(
        r.call(&["INCRBYFLOAT", "f", "inf"]),
        "-ERR increment would produce NaN or Infinity\r\n"
    );
    assert_eq!(r.call(&["GET", "f"]), "$7\r\n3000.25\r\n");
}

#[test]
fn lcs_string_len_and_idx() {
    let s = Shoal::start(&[]);
    let mut c = s.client();
    let _: () = q(&mut c, &["MSET", "a", "ohmytext", "b", "mynewtext"]);
    let v: String = q(&mut c, &["LCS", "a", "b"]);
    assert_eq!(v, "mytext");
    let n: i64 = q(&mut c, &["LCS", "a", "b", "LEN"]);
    assert_eq!(n, 6);
    let v: String = q(&mut c, &["LCS", "a", "nope"]);
    assert_eq!(v, "");
    let mut r = s.raw();
    assert_eq!(
        r.call(&["LCS", "a", "b", "IDX"]),
        "*4\r\n$7\r\nmatches\r\n*2\r\n*2\r\n*2\r\n:4\r\n:7\r\n*2\r\n:5\r\n:8\r\n*2\r\n*2\r\n:2\r\n:3\r\n*2\r\n:0\r\n:1\r\n$3\r\nlen\r\n:6\r\n"
    );
    assert_eq!(
        r.call(&["LCS", "a", "b", "IDX", "MINMATCHLEN", "4", "WITHMATCHLEN"]),
        "*4\r\n$7\r\nmatches\r\n*1\r\n*3\r\n*2\r\n:4\r\n:7\r\n*2\r\n:5\r\n:8\r\n:4\r\n$3\r\nlen\r\n:6\r\n"
    );
    assert_eq!(
        r.call(&["LCS", "a", "b", "LEN", "IDX"]),
        "-ERR If you want both the length and indexes, please just use IDX.\r\n"
    );
    assert_eq!(r.call(&["LCS", "a", "b", "BOGUS"]), "-ERR syntax error\r\n");
    assert_eq!(
        r.call(&["LCS", "a"]),
        "-ERR wrong number of arguments for 'lcs' command\r\n"
    );
    // RESP3: IDX is a map.
    assert!(r.call(&["HELLO", "3"]).starts_with('%'));
    assert!(
        r.call(&["LCS", "a", "b", "IDX"])
            .starts_with("%2\r\n$7\r\nmatches\r\n")
    );
}

#[test]
fn wrong_arity_errors_name_the_command() {
    let s = Shoal::start(&[]);
    let mut r = s.raw();
    for (args, name) in [
        (&["GET"][..], "get"),
        (&["GET", "a", "b"], "get"),
        (&["SETEX", "k", "1"], "setex"),
        (&["GETRANGE", "k", "0"], "getrange"),
        (&["INCR"], "incr"),
        (&["APPEND", "k"], "append"),
        (&["getdel"], "getdel"),
    ] {
        assert_eq!(
            r.call(args),
            format!("-ERR wrong number of arguments for '{name}' command\r\n"),
            "{args:?}"
        );
    }
    // The redis-rs view of the same error.
    let mut c = s.client();
    let e = try_q::<String>(&mut c, &["GET"]).unwrap_err();
    assert_eq!(e.code(), Some("ERR"));
    assert_eq!(
        e.detail(),
        Some("wrong number of arguments for 'get' command")
    );
}

#[test]
fn string_commands_on_a_list_answer_wrongtype() {
    let s = Shoal::start(&[]);
    let mut r = s.raw();
    assert_eq!(r.call(&["RPUSH", "l", "a", "b"]), ":2\r\n");
    let wrongtype = "-WRONGTYPE Operation against a key holding the wrong kind of value\r\n";
    let cases: &[&[&str]] = &[
        &["GET", "l"],
        &["SET", "l", "x", "XX", "GET"],
        &["GETSET", "l", "x"],
        &["GETDEL", "l"],
        &["GETEX", "l"],
        &["APPEND", "l", "x"],
        &["STRLEN", "l"],
        &["GETRANGE", "l", "0", "1"],
        &["SETRANGE", "l", "0", "x"],
        &["INCR", "l"],
        &["DECRBY", "l", "2"],
        &["INCRBYFLOAT", "l", "1"],
    ];
    for args in cases {
        assert_eq!(r.call(args), wrongtype, "{args:?}");
    }
    assert_eq!(
        r.call(&["LCS", "l", "l"]),
        "-ERR The specified keys must contain string values\r\n"
    );
    // MGET answers nil for a non-string; the list is untouched by all of the above.
    assert_eq!(r.call(&["MGET", "l"]), "*1\r\n$-1\r\n");
    assert_eq!(r.call(&["TYPE", "l"]), "+list\r\n");
    // Plain SET replaces a value of any type.
    assert_eq!(r.call(&["SET", "l", "str"]), "+OK\r\n");
    assert_eq!(r.call(&["TYPE", "l"]), "+string\r\n");
    assert_eq!(r.call(&["RPUSH", "l", "a"]), wrongtype);
}
