//! Wire-level tests of the list commands against the real binary: typed results through redis-rs,
//! exact reply bytes (errors, RESP2 and RESP3 null shapes) through the raw client, a 100,000-element
//! list, DUMP/RESTORE, OBJECT ENCODING and MEMORY USAGE. Expected bytes were taken from
//! redis-server 7.0.15.

mod common;

use common::{Raw, Shoal};

const WRONGTYPE: &str = "-WRONGTYPE Operation against a key holding the wrong kind of value\r\n";

fn query<T: redis::FromRedisValue>(c: &mut redis::Connection, args: &[&str]) -> T {
    let mut cmd = redis::cmd(args[0]);
    for a in &args[1..] {
        cmd.arg(*a);
    }
    cmd.query(c)
        .unwrap_or_else(|e| panic!("{args:?} failed: {e}"))
}

/// RPUSHes `n` elements `element:<i>` in batches of at most `batch` per command.
fn push_numbered(raw: &mut Raw, key: &str, n: usize, batch: usize) {
    let mut i = 0;
    while i < n {
        let upto = (i + batch).min(n);
        let elems: Vec<String> = (i..upto).map(|j| format!("element:{j}")).collect();
        let mut args: Vec<&[u8]> = vec![b"RPUSH", key.as_bytes()];
        args.extend(elems.iter().map(|e| e.as_bytes()));
        raw.cmd(&args);
        assert_eq!(
            String::from_utf8_lossy(&raw.reply()),
            format!(":{upto}\r\n")
        );
        i = upto;
    }
}

/// Parses an integer reply (`:n\r\n`).
fn int_reply(reply: &str) -> i64 {
    reply
        .strip_prefix(':')
        .and_then(|r| r.strip_suffix("\r\n"))
        .and_then(|r| r.parse().ok())
        .unwrap_or_else(|| panic!("not an integer reply: {reply:?}"))
}

/// The payload of a bulk reply (`$<len>\r\n<payload>\r\n`).
fn bulk_payload(reply: &[u8]) -> &[u8] {
    assert!(reply.starts_with(b"$"), "not a bulk reply: {reply:?}");
    let start = reply.iter().position(|&b| b == b'\n').expect("bulk header") + 1;
    &reply[start..reply.len() - 2]
}

#[test]
fn every_command_through_redis_rs() {
    let s = Shoal::start(&[]);
    let mut c = s.client();
    assert_eq!(query::<i64>(&mut c, &["RPUSH", "l", "b", "c"]), 2);
    assert_eq!(query::<i64>(&mut c, &["LPUSH", "l", "a"]), 3);
    assert_eq!(query::<i64>(&mut c, &["RPUSHX", "l", "d"]), 4);
    assert_eq!(query::<i64>(&mut c, &["LPUSHX", "l", "_"]), 5);
    assert_eq!(query::<i64>(&mut c, &["LPUSHX", "missing", "x"]), 0);
    assert_eq!(query::<i64>(&mut c, &["LLEN", "l"]), 5);
    assert_eq!(
        query::<Vec<String>>(&mut c, &["LRANGE", "l", "0", "-1"]),
        ["_", "a", "b", "c", "d"]
    );
    assert_eq!(query::<String>(&mut c, &["LPOP", "l"]), "_");
    assert_eq!(query::<String>(&mut c, &["LINDEX", "l", "-1"]), "d");
    assert_eq!(query::<Option<String>>(&mut c, &["LINDEX", "l", "9"]), None);
    assert_eq!(query::<String>(&mut c, &["LSET", "l", "1", "B"]), "OK");
    assert_eq!(
        query::<i64>(&mut c, &["LINSERT", "l", "AFTER", "B", "b2"]),
        5
    );
    assert_eq!(
        query::<i64>(&mut c, &["LINSERT", "l", "BEFORE", "zz", "x"]),
        -1
    );
    assert_eq!(query::<i64>(&mut c, &["LPOS", "l", "c"]), 3);
    assert_eq!(
        query::<Vec<i64>>(&mut c, &["LPOS", "l", "b2", "COUNT", "0"]),
        [2]
    );
    assert_eq!(query::<i64>(&mut c, &["RPUSH", "l", "a", "a"]), 7);
    assert_eq!(query::<i64>(&mut c, &["LREM", "l", "-2", "a"]), 2);
    assert_eq!(
        query::<Vec<String>>(&mut c, &["LRANGE", "l", "0", "-1"]),
        ["a", "B", "b2", "c", "d"]
    );
    assert_eq!(query::<String>(&mut c, &["LTRIM", "l", "1", "-1"]), "OK");
    assert_eq!(
        query::<Vec<String>>(&mut c, &["RPOP", "l", "2"]),
        ["d", "c"]
    );
    assert_eq!(
        query::<String>(&mut c, &["LMOVE", "l", "m", "LEFT", "RIGHT"]),
        "B"
    );
    assert_eq!(query::<String>(&mut c, &["RPOPLPUSH", "l", "m"]), "b2");
    assert_eq!(
        query::<i64>(&mut c, &["EXISTS", "l"]),
        0,
        "emptied list deleted"
    );
    assert_eq!(
        query::<Vec<String>>(&mut c, &["LRANGE", "m", "0", "-1"]),
        ["b2", "B"]
    );
    let (key, elems): (String, Vec<String>) =
        query(&mut c, &["LMPOP", "2", "l", "m", "RIGHT", "COUNT", "5"]);
    assert_eq!(key, "m");
    assert_eq!(elems, ["B", "b2"]);
    assert_eq!(
        query::<Option<(String, Vec<String>)>>(&mut c, &["LMPOP", "1", "m", "LEFT"]),
        None
    );
    assert_eq!(query::<String>(&mut c, &["TYPE", "m"]), "none");
}

#[test]
fn errors_and_null_shapes_in_resp2_and_resp3() {
    let s = Shoal::start(&[]);
    let mut r = s.raw();
    let cases: &[(&[&str], &str)] = &[
        (&["LPOP", "nokey"], "$-1\r\n"),
        (&["LPOP", "nokey", "2"], "*-1\r\n"),
        (&["RPOP", "nokey", "0"], "*-1\r\n"),
        (
            &["LPOP", "nokey", "-1"],
            "-ERR value is out of range, must be positive\r\n",
        ),
        (&["LINDEX", "nokey", "0"], "$-1\r\n"),
        (&["LMOVE", "nokey", "d", "LEFT", "LEFT"], "$-1\r\n"),
        (&["RPOPLPUSH", "nokey", "d"], "$-1\r\n"),
        (&["LPOS", "nokey", "a"], "$-1\r\n"),
        (&["LPOS", "nokey", "a", "COUNT", "1"], "*0\r\n"),
        (&["LMPOP", "1", "nokey", "LEFT"], "*-1\r\n"),
        (&["LRANGE", "nokey", "0", "-1"], "*0\r\n"),
        (&["RPUSH", "l", "a", "b", "c"], ":3\r\n"),
        (&["LPOP", "l", "0"], "*0\r\n"),
        (&["LPOP", "l", "1"], "*1\r\n$1\r\na\r\n"),
        (&["LSET", "nokey", "0", "v"], "-ERR no such key\r\n"),
        (&["LSET", "l", "5", "v"], "-ERR index out of range\r\n"),
        (
            &["LINSERT", "l", "MIDDLE", "b", "x"],
            "-ERR syntax error\r\n",
        ),
        (&["LINSERT", "nokey", "BEFORE", "b", "x"], ":0\r\n"),
        (&["LINSERT", "l", "BEFORE", "zz", "x"], ":-1\r\n"),
        (
            &["LPOS", "l", "b", "RANK", "0"],
            "-ERR RANK can't be zero: use 1 to start from the first match, 2 from the second ... or use negative to start from the end of the list\r\n",
        ),
        (
            &["LPOS", "l", "b", "COUNT", "-1"],
            "-ERR COUNT can't be negative\r\n",
        ),
        (
            &["LPOS", "l", "b", "MAXLEN", "-1"],
            "-ERR MAXLEN can't be negative\r\n",
        ),
        (&["LPOS", "l", "b", "BOGUS", "1"], "-ERR syntax error\r\n"),
        (
            &["LMPOP", "0", "l", "LEFT"],
            "-ERR numkeys should be greater than 0\r\n",
        ),
        (
            &["LMPOP", "1", "l", "LEFT", "COUNT", "0"],
            "-ERR count should be greater than 0\r\n",
        ),
        (&["LMPOP", "3", "l", "LEFT"], "-ERR syntax error\r\n"),
        (&["LMOVE", "l", "d", "UP", "LEFT"], "-ERR syntax error\r\n"),
        (
            &["LRANGE", "l", "x", "1"],
            "-ERR value is not an integer or out of range\r\n",
        ),
        (
            &["LPUSH", "l"],
            "-ERR wrong number of arguments for 'lpush' command\r\n",
        ),
        (
            &["RPOP", "l", "1", "2"],
            "-ERR wrong number of arguments for 'rpop' command\r\n",
        ),
        (
            &["LMPOP", "1", "l"],
            "-ERR wrong number of arguments for 'lmpop' command\r\n",
        ),
        (&["LRANGE", "l", "0", "-1"], "*2\r\n$1\r\nb\r\n$1\r\nc\r\n"),
    ];
    for (cmd, want) in cases {
        assert_eq!(r.call(cmd), *want, "{cmd:?}");
    }
    // RESP3: every null, whether Redis 7.0 sends `$-1` or `*-1` in RESP2, is `_`.
    assert!(r.call(&["HELLO", "3"]).starts_with("%7\r\n"));
    let resp3: &[(&[&str], &str)] = &[
        (&["LPOP", "nokey"], "_\r\n"),
        (&["LPOP", "nokey", "2"], "_\r\n"),
        (&["RPOP", "nokey", "0"], "_\r\n"),
        (&["LINDEX", "nokey", "0"], "_\r\n"),
        (&["LINDEX", "l", "7"], "_\r\n"),
        (&["LMOVE", "nokey", "d", "LEFT", "LEFT"], "_\r\n"),
        (&["RPOPLPUSH", "nokey", "d"], "_\r\n"),
        (&["LPOS", "nokey", "a"], "_\r\n"),
        (&["LPOS", "l", "zz"], "_\r\n"),
        (&["LPOS", "l", "zz", "COUNT", "0"], "*0\r\n"),
        (&["LMPOP", "1", "nokey", "LEFT"], "_\r\n"),
        (
            &["LMPOP", "1", "l", "LEFT"],
            "*2\r\n$1\r\nl\r\n*1\r\n$1\r\nb\r\n",
        ),
        (&["RPOP", "l", "3"], "*1\r\n$1\r\nc\r\n"),
        (&["LPOP", "l", "1"], "_\r\n"),
    ];
    for (cmd, want) in resp3 {
        assert_eq!(r.call(cmd), *want, "RESP3 {cmd:?}");
    }
}

#[test]
fn wrongtype_for_every_command() {
    let s = Shoal::start(&[]);
    let mut r = s.raw();
    assert_eq!(r.call(&["SET", "s", "v"]), "+OK\r\n");
    assert_eq!(r.call(&["RPUSH", "l", "x"]), ":1\r\n");
    let cmds: &[&[&str]] = &[
        &["LPUSH", "s", "a"],
        &["RPUSH", "s", "a"],
        &["LPUSHX", "s", "a"],
        &["RPUSHX", "s", "a"],
        &["LPOP", "s"],
        &["RPOP", "s", "2"],
        &["LLEN", "s"],
        &["LRANGE", "s", "0", "-1"],
        &["LINDEX", "s", "0"],
        &["LSET", "s", "0", "a"],
        &["LINSERT", "s", "BEFORE", "a", "b"],
        &["LREM", "s", "0", "a"],
        &["LTRIM", "s", "0", "1"],
        &["LPOS", "s", "a"],
        &["LMOVE", "s", "l", "LEFT", "LEFT"],
        &["LMOVE", "l", "s", "LEFT", "LEFT"],
        &["RPOPLPUSH", "s", "l"],
        &["RPOPLPUSH", "l", "s"],
        &["LMPOP", "2", "nokey", "s", "LEFT"],
    ];
    for cmd in cmds {
        assert_eq!(r.call(cmd), WRONGTYPE, "{cmd:?}");
    }
    // Nothing moved on the failed LMOVE/RPOPLPUSH, and the string is untouched.
    assert_eq!(r.call(&["LRANGE", "l", "0", "-1"]), "*1\r\n$1\r\nx\r\n");
    assert_eq!(r.call(&["GET", "s"]), "$1\r\nv\r\n");
    // A list met before the wrong-typed key is popped: LMPOP stops at the first list.
    assert_eq!(
        r.call(&["LMPOP", "2", "l", "s", "LEFT"]),
        "*2\r\n$1\r\nl\r\n*1\r\n$1\r\nx\r\n"
    );
    assert_eq!(r.call(&["TYPE", "l"]), "+none\r\n");
    // And a list is the wrong kind for string commands.
    assert_eq!(r.call(&["RPUSH", "l", "x"]), ":1\r\n");
    assert_eq!(r.call(&["GET", "l"]), WRONGTYPE);
    assert_eq!(r.call(&["TYPE", "l"]), "+list\r\n");
}

#[test]
fn hundred_thousand_elements() {
    let s = Shoal::start(&[]);
    let mut r = s.raw();
    push_numbered(&mut r, "big", 100_000, 1000);
    assert_eq!(r.call(&["LLEN", "big"]), ":100000\r\n");
    assert_eq!(
        r.call(&["LINDEX", "big", "50000"]),
        "$13\r\nelement:50000\r\n"
    );
    assert_eq!(r.call(&["LINDEX", "big", "-1"]), "$13\r\nelement:99999\r\n");
    assert_eq!(
        r.call(&["LRANGE", "big", "49999", "50001"]),
        "*3\r\n$13\r\nelement:49999\r\n$13\r\nelement:50000\r\n$13\r\nelement:50001\r\n"
    );
    assert_eq!(r.call(&["LPOS", "big", "element:77777"]), ":77777\r\n");
    assert_eq!(
        r.call(&["LPOS", "big", "element:77777", "RANK", "-1"]),
        ":77777\r\n"
    );
    // Changes in the middle keep neighbours and order intact.
    assert_eq!(r.call(&["LSET", "big", "60000", "changed"]), "+OK\r\n");
    assert_eq!(
        r.call(&["LINSERT", "big", "BEFORE", "changed", "inserted"]),
        ":100001\r\n"
    );
    assert_eq!(
        r.call(&["LRANGE", "big", "59999", "60002"]),
        "*4\r\n$13\r\nelement:59999\r\n$8\r\ninserted\r\n$7\r\nchanged\r\n$13\r\nelement:60001\r\n"
    );
    assert_eq!(r.call(&["LREM", "big", "0", "inserted"]), ":1\r\n");
    assert_eq!(
        r.call(&["LSET", "big", "60000", "element:60000"]),
        "+OK\r\n"
    );
    // Whole-range read: the elements come back in order.
    r.cmd(&[b"LRANGE", b"big", b"0", b"-1"]);
    let all = r.reply();
    let mut expect = b"*100000\r\n".to_vec();
    for i in 0..100_000 {
        let e = format!("element:{i}");
        expect.extend_from_slice(format!("${}\r\n{e}\r\n", e.len()).as_bytes());
    }
    assert!(all == expect, "LRANGE 0 -1 of 100,000 elements");
    // Trim to the middle thousand.
    assert_eq!(r.call(&["LTRIM", "big", "50000", "50999"]), "+OK\r\n");
    assert_eq!(r.call(&["LLEN", "big"]), ":1000\r\n");
    assert_eq!(r.call(&["LINDEX", "big", "0"]), "$13\r\nelement:50000\r\n");
    assert_eq!(r.call(&["RPOP", "big"]), "$13\r\nelement:50999\r\n");
    assert_eq!(
        r.call(&["OBJECT", "ENCODING", "big"]),
        "$9\r\nquicklist\r\n"
    );
}

#[test]
fn dump_restore_round_trip() {
    let s = Shoal::start(&[]);
    let mut r = s.raw();
    push_numbered(&mut r, "big", 20_000, 1000);
    let bin = b"\x00\xff\r\n binary";
    r.cmd(&[b"RPUSH", b"small", b"a", b"", bin]);
    assert_eq!(r.reply(), b":3\r\n");
    for key in ["small", "big"] {
        r.cmd(&[b"DUMP", key.as_bytes()]);
        let reply = r.reply();
        let copy = format!("{key}-copy");
        r.cmd(&[b"RESTORE", copy.as_bytes(), b"0", bulk_payload(&reply)]);
        assert_eq!(r.reply(), b"+OK\r\n");
        r.cmd(&[b"LRANGE", key.as_bytes(), b"0", b"-1"]);
        let original = r.reply();
        r.cmd(&[b"LRANGE", copy.as_bytes(), b"0", b"-1"]);
        assert_eq!(r.reply(), original, "{key} survives DUMP/RESTORE");
        assert_eq!(
            r.call(&["OBJECT", "ENCODING", &copy]),
            "$9\r\nquicklist\r\n"
        );
        // The restored list is a live list: it takes pushes and pops.
        assert!(r.call(&["RPUSH", &copy, "tail"]).starts_with(':'));
        assert_eq!(r.call(&["RPOP", &copy]), "$4\r\ntail\r\n");
    }
    r.cmd(&[b"LINDEX", b"small-copy", b"2"]);
    let want = [format!("${}\r\n", bin.len()).as_bytes(), bin, b"\r\n"].concat();
    assert_eq!(r.reply(), want);
    // A corrupted payload is refused, not half-restored.
    r.cmd(&[b"DUMP", b"small"]);
    let reply = r.reply();
    let mut bad = bulk_payload(&reply).to_vec();
    bad[3] ^= 0x55;
    r.cmd(&[b"RESTORE", b"bad", b"0", &bad]);
    assert_eq!(
        r.reply(),
        b"-ERR DUMP payload version or checksum are wrong\r\n"
    );
    assert_eq!(r.call(&["EXISTS", "bad"]), ":0\r\n");
}

#[test]
fn encoding_and_memory_usage() {
    let s = Shoal::start(&[]);
    let mut r = s.raw();
    assert_eq!(r.call(&["RPUSH", "l", "a", "b", "c"]), ":3\r\n");
    // redis-server 7.0 reports quicklist for every list, small or large.
    assert_eq!(r.call(&["OBJECT", "ENCODING", "l"]), "$9\r\nquicklist\r\n");
    let small = int_reply(&r.call(&["MEMORY", "USAGE", "l"]));
    // Redis 7.0.15 says 144 bytes for this list.
    assert!((40..144).contains(&small), "small list: {small}");
    push_numbered(&mut r, "big", 10_000, 500);
    let ten_k = int_reply(&r.call(&["MEMORY", "USAGE", "big"]));
    push_numbered(&mut r, "big2", 100_000, 1000);
    let hundred_k = int_reply(&r.call(&["MEMORY", "USAGE", "big2"]));
    assert_eq!(
        r.call(&["OBJECT", "ENCODING", "big2"]),
        "$9\r\nquicklist\r\n"
    );
    // ~15 bytes per element once packed (13-byte elements plus two length bytes); Redis 7.0.15
    // reports 1,506,544 bytes for the 100,000-element list.
    assert!(ten_k > 100_000 && ten_k < 200_000, "10k elements: {ten_k}");
    assert!(
        hundred_k > 1_400_000 && hundred_k < 1_506_544,
        "100k elements: {hundred_k}"
    );
    // Memory follows the list down as it shrinks.
    assert_eq!(r.call(&["LTRIM", "big2", "0", "999"]), "+OK\r\n");
    let trimmed = int_reply(&r.call(&["MEMORY", "USAGE", "big2"]));
    assert!(trimmed < 30_000, "after LTRIM to 1000: {trimmed}");
    for _ in 0..10 {
        r.cmd(&[b"LPOP", b"big2", b"100"]);
        assert!(r.reply().starts_with(b"*100\r\n"));
    }
    assert_eq!(r.call(&["EXISTS", "big2"]), ":0\r\n");
    assert_eq!(r.call(&["MEMORY", "USAGE", "big2"]), "$-1\r\n");
}

#[test]
fn list_writes_keep_the_ttl() {
    let s = Shoal::start(&[]);
    let mut r = s.raw();
    assert_eq!(r.call(&["RPUSH", "l", "a", "b"]), ":2\r\n");
    assert_eq!(r.call(&["PEXPIRE", "l", "100000"]), ":1\r\n");
    for cmd in [
        &["RPUSH", "l", "c"][..],
        &["LPOP", "l"],
        &["LSET", "l", "0", "B"],
        &["LINSERT", "l", "AFTER", "B", "y"],
        &["LREM", "l", "1", "y"],
        &["LTRIM", "l", "0", "-1"],
        &["LMOVE", "l", "l", "LEFT", "RIGHT"],
    ] {
        assert!(!r.call(cmd).starts_with('-'), "{cmd:?}");
        let ttl = int_reply(&r.call(&["PTTL", "l"]));
        assert!(ttl > 0 && ttl <= 100_000, "TTL kept across {cmd:?}: {ttl}");
    }
    assert_eq!(
        r.call(&["LRANGE", "l", "0", "-1"]),
        "*2\r\n$1\r\nc\r\n$1\r\nB\r\n"
    );
}
