//! Wire-level tests of the sorted set commands against the real binary: typed results through
//! redis-rs, exact reply bytes (RESP2 and RESP3 shapes, errors) through the raw client, a
//! 100,000-member sorted set queried in the middle, WRONGTYPE, DUMP/RESTORE and OBJECT ENCODING.
//! Expected bytes were taken from redis-server 7.0.15 (7.2 for `ZRANK ... WITHSCORE`).

mod common;

use common::{Raw, Shoal, encode};

const WRONGTYPE: &str = "-WRONGTYPE Operation against a key holding the wrong kind of value\r\n";

fn query<T: redis::FromRedisValue>(c: &mut redis::Connection, args: &[&str]) -> T {
    let mut cmd = redis::cmd(args[0]);
    for a in &args[1..] {
        cmd.arg(*a);
    }
    cmd.query(c)
        .unwrap_or_else(|e| panic!("{args:?} failed: {e}"))
}

fn bulk(s: &str) -> String {
    format!("${}\r\n{s}\r\n", s.len())
}

/// A RESP2 array of bulk strings.
fn arr(items: &[&str]) -> String {
    let mut o = format!("*{}\r\n", items.len());
    for i in items {
        o.push_str(&bulk(i));
    }
    o
}

/// The payload of a bulk reply.
fn bulk_payload(reply: &[u8]) -> &[u8] {
    assert!(reply.starts_with(b"$"), "not a bulk reply: {reply:?}");
    let start = reply.iter().position(|&b| b == b'\n').expect("bulk header") + 1;
    &reply[start..reply.len() - 2]
}

/// Member `i` of the large set: zero-padded, so member order is numeric order.
fn member(i: usize) -> String {
    format!("member:{i:06}")
}

/// The score of member `i` of the large set.
fn score(i: usize) -> String {
    (i / 2).to_string()
}

/// ZADDs members `0..n` (score `i / 2`, so pairs share a score and member order breaks the tie)
/// in commands of `batch` members, `window` commands per pipelined write.
fn add_numbered(raw: &mut Raw, key: &str, n: usize, batch: usize, window: usize) {
    let mut next = 0;
    while next < n {
        let mut bytes = Vec::new();
        let mut sent = 0;
        while sent < window && next < n {
            let upto = (next + batch).min(n);
            let pairs: Vec<(String, String)> =
                (next..upto).map(|i| (score(i), member(i))).collect();
            let mut args: Vec<&[u8]> = vec![b"ZADD", key.as_bytes()];
            for (s, m) in &pairs {
                args.push(s.as_bytes());
                args.push(m.as_bytes());
            }
            bytes.extend(encode(&args));
            next = upto;
            sent += 1;
        }
        raw.send(&bytes);
        for _ in 0..sent {
            let r = raw.reply_str_lossy();
            assert!(r.starts_with(':'), "ZADD failed: {r:?}");
        }
    }
}

trait ReplyStr {
    fn reply_str_lossy(&mut self) -> String;
}

impl ReplyStr for Raw {
    fn reply_str_lossy(&mut self) -> String {
        String::from_utf8_lossy(&self.reply()).into_owned()
    }
}

#[test]
fn typed_commands_through_redis_rs() {
    let s = Shoal::start(&[]);
    let mut c = s.client();
    assert_eq!(
        query::<i64>(&mut c, &["ZADD", "z", "1", "a", "2", "b", "3", "c"]),
        3
    );
    assert_eq!(
        query::<i64>(&mut c, &["ZADD", "z", "CH", "GT", "5", "a", "0", "b"]),
        1
    );
    assert_eq!(query::<f64>(&mut c, &["ZINCRBY", "z", "0.5", "c"]), 3.5);
    assert_eq!(
        query::<Option<f64>>(&mut c, &["ZSCORE", "z", "a"]),
        Some(5.0)
    );
    assert_eq!(query::<Option<f64>>(&mut c, &["ZSCORE", "z", "x"]), None);
    assert_eq!(
        query::<Vec<(String, f64)>>(&mut c, &["ZRANGE", "z", "0", "-1", "WITHSCORES"]),
        [("b".into(), 2.0), ("c".into(), 3.5), ("a".into(), 5.0)]
    );
    assert_eq!(query::<Option<i64>>(&mut c, &["ZRANK", "z", "a"]), Some(2));
    assert_eq!(
        query::<Option<i64>>(&mut c, &["ZREVRANK", "z", "a"]),
        Some(0)
    );
    assert_eq!(query::<i64>(&mut c, &["ZCOUNT", "z", "(2", "+inf"]), 2);
    assert_eq!(
        query::<Vec<String>>(&mut c, &["ZRANGE", "z", "+inf", "(2", "BYSCORE", "REV"]),
        ["a", "c"]
    );
    assert_eq!(
        query::<Vec<Option<f64>>>(&mut c, &["ZMSCORE", "z", "b", "nope"]),
        [Some(2.0), None]
    );
    assert_eq!(
        query::<i64>(&mut c, &["ZADD", "y", "10", "c", "20", "d"]),
        2
    );
    assert_eq!(
        query::<i64>(
            &mut c,
            &["ZUNIONSTORE", "u", "2", "z", "y", "WEIGHTS", "1", "2"]
        ),
        4
    );
    assert_eq!(
        query::<Vec<(String, f64)>>(&mut c, &["ZRANGE", "u", "0", "-1", "WITHSCORES"]),
        [
            ("b".into(), 2.0),
            ("a".into(), 5.0),
            ("c".into(), 23.5),
            ("d".into(), 40.0)
        ]
    );
    assert_eq!(
        query::<Vec<String>>(&mut c, &["ZINTER", "2", "z", "y"]),
        ["c"]
    );
    assert_eq!(
        query::<Vec<String>>(&mut c, &["ZDIFF", "2", "z", "y"]),
        ["b", "a"]
    );
    assert_eq!(query::<i64>(&mut c, &["ZINTERCARD", "2", "u", "z"]), 3);
    assert_eq!(
        query::<(String, f64)>(&mut c, &["ZPOPMIN", "u"]),
        ("b".into(), 2.0)
    );
    assert_eq!(
        query::<Vec<String>>(&mut c, &["ZPOPMAX", "u", "2"]),
        ["d", "40", "c", "23.5"]
    );
    assert_eq!(query::<i64>(&mut c, &["ZREM", "u", "a", "nope"]), 1);
    assert_eq!(
        query::<i64>(&mut c, &["EXISTS", "u"]),
        0,
        "emptied key is deleted"
    );
    assert_eq!(query::<i64>(&mut c, &["ZCARD", "z"]), 3);
    assert_eq!(
        query::<i64>(&mut c, &["ZREMRANGEBYSCORE", "z", "-inf", "(3"]),
        1
    );
    assert_eq!(query::<i64>(&mut c, &["ZREMRANGEBYRANK", "z", "0", "0"]), 1);
    assert_eq!(
        query::<i64>(&mut c, &["ZADD", "l", "0", "p", "0", "q", "0", "r"]),
        3
    );
    assert_eq!(query::<i64>(&mut c, &["ZLEXCOUNT", "l", "(p", "+"]), 2);
    assert_eq!(
        query::<Vec<String>>(&mut c, &["ZRANGEBYLEX", "l", "[q", "+"]),
        ["q", "r"]
    );
    assert_eq!(query::<i64>(&mut c, &["ZREMRANGEBYLEX", "l", "-", "[q"]), 2);
    assert_eq!(
        query::<i64>(&mut c, &["ZRANGESTORE", "dst", "z", "0", "-1"]),
        1
    );
    let (cursor, items): (String, Vec<String>) = query(&mut c, &["ZSCAN", "z", "0"]);
    assert_eq!(
        (cursor.as_str(), items),
        ("0", vec!["a".into(), "5".into()])
    );
    assert_eq!(
        query::<Option<String>>(&mut c, &["ZRANDMEMBER", "z"]),
        Some("a".into())
    );
}

#[test]
fn exact_replies_in_resp2_and_resp3() {
    let s = Shoal::start(&[]);
    let mut r = s.raw();
    assert_eq!(r.call(&["ZADD", "z", "1", "a", "0.1", "b"]), ":2\r\n");
    let resp2 = [
        (
            vec!["ZRANGE", "z", "0", "-1", "WITHSCORES"],
            arr(&["b", "0.10000000000000001", "a", "1"]),
        ),
        (vec!["ZSCORE", "z", "a"], bulk("1")),
        (vec!["ZSCORE", "z", "nope"], "$-1\r\n".into()),
        (
            vec!["ZMSCORE", "z", "a", "nope"],
            "*2\r\n$1\r\n1\r\n$-1\r\n".into(),
        ),
        (vec!["ZRANK", "z", "nope"], "$-1\r\n".into()),
        (
            vec!["ZRANK", "z", "a", "WITHSCORE"],
            "*2\r\n:1\r\n$1\r\n1\r\n".into(),
        ),
        (vec!["ZRANK", "z", "nope", "WITHSCORE"], "*-1\r\n".into()),
        (vec!["ZPOPMIN", "nokey"], "*0\r\n".into()),
        (vec!["ZMPOP", "1", "nokey", "MIN"], "*-1\r\n".into()),
        (vec!["ZRANDMEMBER", "nokey"], "$-1\r\n".into()),
        (vec!["ZRANDMEMBER", "nokey", "1"], "*0\r\n".into()),
        (vec!["ZRANGE", "nokey", "0", "-1"], "*0\r\n".into()),
        (
            vec!["ZSCAN", "nokey", "0"],
            "*2\r\n$1\r\n0\r\n*0\r\n".into(),
        ),
        (vec!["ZINCRBY", "z", "1", "b"], bulk("1.1000000000000001")),
        (
            vec!["ZADD", "z", "INCR", "XX", "1", "nope"],
            "$-1\r\n".into(),
        ),
    ];
    for (cmd, want) in &resp2 {
        assert_eq!(&r.call(cmd), want, "RESP2 {cmd:?}");
    }
    assert!(r.call(&["HELLO", "3"]).starts_with('%'));
    let resp3 = [
        (
            vec!["ZRANGE", "z", "0", "-1", "WITHSCORES"],
            "*2\r\n*2\r\n$1\r\na\r\n,1\r\n*2\r\n$1\r\nb\r\n,1.1000000000000001\r\n",
        ),
        (vec!["ZSCORE", "z", "a"], ",1\r\n"),
        (vec!["ZSCORE", "z", "nope"], "_\r\n"),
        (vec!["ZMSCORE", "z", "a", "nope"], "*2\r\n,1\r\n_\r\n"),
        (vec!["ZRANK", "z", "a", "WITHSCORE"], "*2\r\n:0\r\n,1\r\n"),
        (vec!["ZRANK", "z", "nope", "WITHSCORE"], "_\r\n"),
        (vec!["ZMPOP", "1", "nokey", "MIN"], "_\r\n"),
        (vec!["ZRANDMEMBER", "nokey"], "_\r\n"),
        (vec!["ZINCRBY", "z", "1", "a"], ",2\r\n"),
        (
            vec!["ZUNION", "1", "z", "WITHSCORES"],
            "*2\r\n*2\r\n$1\r\nb\r\n,1.1000000000000001\r\n*2\r\n$1\r\na\r\n,2\r\n",
        ),
        (vec!["ZPOPMAX", "z"], "*2\r\n$1\r\na\r\n,2\r\n"),
        (
            vec!["ZPOPMAX", "z", "5"],
            "*1\r\n*2\r\n$1\r\nb\r\n,1.1000000000000001\r\n",
        ),
    ];
    for (cmd, want) in &resp3 {
        assert_eq!(&r.call(cmd), want, "RESP3 {cmd:?}");
    }
    assert_eq!(r.call(&["ZADD", "one", "inf", "m"]), ":1\r\n");
    assert_eq!(
        r.call(&["ZRANDMEMBER", "one", "-2", "WITHSCORES"]),
        "*2\r\n*2\r\n$1\r\nm\r\n,inf\r\n*2\r\n$1\r\nm\r\n,inf\r\n"
    );
    assert_eq!(
        r.call(&["ZMPOP", "2", "nokey", "one", "MAX", "COUNT", "3"]),
        "*2\r\n$3\r\none\r\n*1\r\n*2\r\n$1\r\nm\r\n,inf\r\n"
    );
}

#[test]
fn errors_match_redis() {
    let s = Shoal::start(&[]);
    let mut r = s.raw();
    r.call(&["ZADD", "z", "1", "a"]);
    let cases: &[(&[&str], &str)] = &[
        (
            &["ZADD", "z", "NX", "XX", "1", "a"],
            "-ERR XX and NX options at the same time are not compatible\r\n",
        ),
        (
            &["ZADD", "z", "GT", "LT", "1", "a"],
            "-ERR GT, LT, and/or NX options at the same time are not compatible\r\n",
        ),
        (
            &["ZADD", "z", "INCR", "1", "a", "2", "b"],
            "-ERR INCR option supports a single increment-element pair\r\n",
        ),
        (&["ZADD", "z", "1", "a", "2"], "-ERR syntax error\r\n"),
        (
            &["ZADD", "z", "abc", "a"],
            "-ERR value is not a valid float\r\n",
        ),
        (
            &["ZADD", "z"],
            "-ERR wrong number of arguments for 'zadd' command\r\n",
        ),
        (
            &["ZCOUNT", "z", "x", "1"],
            "-ERR min or max is not a float\r\n",
        ),
        (
            &["ZLEXCOUNT", "z", "a", "+"],
            "-ERR min or max not valid string range item\r\n",
        ),
        (
            &["ZRANGE", "z", "0", "1", "LIMIT", "0", "1"],
            "-ERR syntax error, LIMIT is only supported in combination with either BYSCORE or BYLEX\r\n",
        ),
        (
            &["ZRANGE", "z", "-", "+", "BYLEX", "WITHSCORES"],
            "-ERR syntax error, WITHSCORES not supported in combination with BYLEX\r\n",
        ),
        (
            &["ZRANGE", "z", "0", "1", "REV", "REV"],
            "-ERR syntax error\r\n",
        ),
        (
            &["ZPOPMIN", "z", "-1"],
            "-ERR value is out of range, must be positive\r\n",
        ),
        (
            &["ZMPOP", "0", "z", "MIN"],
            "-ERR numkeys should be greater than 0\r\n",
        ),
        (
            &["ZMPOP", "1", "z", "MIN", "COUNT", "0"],
            "-ERR count should be greater than 0\r\n",
        ),
        (
            &["ZUNION", "0", "z"],
            "-ERR at least 1 input key is needed for 'zunion' command\r\n",
        ),
        (
            &["ZUNION", "1", "z", "WEIGHTS", "x"],
            "-ERR weight value is not a float\r\n",
        ),
        (
            &["ZINTERCARD", "1", "z", "LIMIT", "-1"],
            "-ERR LIMIT can't be negative\r\n",
        ),
        (&["ZSCAN", "z", "x"], "-ERR invalid cursor\r\n"),
        (
            &["ZRANDMEMBER", "z", "1", "WITHSCORES", "x"],
            "-ERR syntax error\r\n",
        ),
        (
            &["ZRANK", "z", "a", "WITHSCORE", "x"],
            "-ERR wrong number of arguments for 'zrank' command\r\n",
        ),
    ];
    for (cmd, want) in cases {
        assert_eq!(r.call(cmd), *want, "{cmd:?}");
    }
    // NaN from INCR leaves the score as it was.
    assert_eq!(r.call(&["ZADD", "n", "inf", "m"]), ":1\r\n");
    assert_eq!(
        r.call(&["ZINCRBY", "n", "-inf", "m"]),
        "-ERR resulting score is not a number (NaN)\r\n"
    );
    assert_eq!(r.call(&["ZSCORE", "n", "m"]), bulk("inf"));
}

#[test]
fn wrong_type_everywhere() {
    let s = Shoal::start(&[]);
    let mut r = s.raw();
    assert_eq!(r.call(&["SET", "s", "v"]), "+OK\r\n");
    assert_eq!(r.call(&["ZADD", "z", "1", "a"]), ":1\r\n");
    let cmds: &[&[&str]] = &[
        &["ZADD", "s", "1", "a"],
        &["ZINCRBY", "s", "1", "a"],
        &["ZREM", "s", "a"],
        &["ZCARD", "s"],
        &["ZSCORE", "s", "a"],
        &["ZMSCORE", "s", "a"],
        &["ZRANK", "s", "a"],
        &["ZREVRANK", "s", "a"],
        &["ZCOUNT", "s", "0", "1"],
        &["ZLEXCOUNT", "s", "-", "+"],
        &["ZRANGE", "s", "0", "-1"],
        &["ZREVRANGE", "s", "0", "-1"],
        &["ZRANGEBYSCORE", "s", "0", "1"],
        &["ZREVRANGEBYSCORE", "s", "1", "0"],
        &["ZRANGEBYLEX", "s", "-", "+"],
        &["ZREVRANGEBYLEX", "s", "+", "-"],
        &["ZRANGESTORE", "d", "s", "0", "-1"],
        &["ZREMRANGEBYRANK", "s", "0", "1"],
        &["ZREMRANGEBYSCORE", "s", "0", "1"],
        &["ZREMRANGEBYLEX", "s", "-", "+"],
        &["ZPOPMIN", "s"],
        &["ZPOPMAX", "s", "2"],
        &["ZMPOP", "1", "s", "MIN"],
        &["ZRANDMEMBER", "s"],
        &["ZRANDMEMBER", "s", "2"],
        &["ZSCAN", "s", "0"],
        &["ZUNION", "2", "z", "s"],
        &["ZINTER", "2", "s", "z"],
        &["ZDIFF", "2", "z", "s"],
        &["ZINTERCARD", "2", "z", "s"],
        &["ZUNIONSTORE", "d", "2", "z", "s"],
        &["ZINTERSTORE", "d", "2", "z", "s"],
        &["ZDIFFSTORE", "d", "2", "z", "s"],
    ];
    for cmd in cmds {
        assert_eq!(r.call(cmd), WRONGTYPE, "{cmd:?}");
    }
    assert_eq!(r.call(&["GET", "s"]), bulk("v"), "the string is untouched");
    assert_eq!(r.call(&["EXISTS", "d"]), ":0\r\n");
    // The other way round: string commands on a sorted set.
    assert_eq!(r.call(&["GET", "z"]), WRONGTYPE);
    // A STORE overwrites whatever the destination held.
    assert_eq!(r.call(&["ZUNIONSTORE", "s", "1", "z"]), ":1\r\n");
    assert_eq!(r.call(&["TYPE", "s"]), "+zset\r\n");
}

#[test]
fn large_sorted_set_answers_in_the_middle() {
    const N: usize = 100_000;
    let s = Shoal::start(&[]);
    let mut r = s.raw();
    add_numbered(&mut r, "big", N, 1_000, 10);
    assert_eq!(r.call(&["ZCARD", "big"]), format!(":{N}\r\n"));
    assert_eq!(r.call(&["OBJECT", "ENCODING", "big"]), bulk("skiplist"));

    // Many rank lookups in one pipeline, spread over the set.
    let probes: Vec<usize> = (0..2_000).map(|k| (k * 49_999) % N).collect();
    let mut bytes = Vec::new();
    for &i in &probes {
        let m = member(i);
        bytes.extend(encode(&[b"ZRANK", b"big", m.as_bytes()]));
        bytes.extend(encode(&[b"ZREVRANK", b"big", m.as_bytes()]));
    }
    r.send(&bytes);
    for &i in &probes {
        assert_eq!(r.reply_str_lossy(), format!(":{i}\r\n"));
        assert_eq!(r.reply_str_lossy(), format!(":{}\r\n", N - 1 - i));
    }

    let mid = N / 2;
    assert_eq!(
        r.call(&[
            "ZRANGE",
            "big",
            &mid.to_string(),
            &(mid + 2).to_string(),
            "WITHSCORES"
        ]),
        arr(&[
            &member(mid),
            &score(mid),
            &member(mid + 1),
            &score(mid + 1),
            &member(mid + 2),
            &score(mid + 2),
        ])
    );
    assert_eq!(
        r.call(&["ZRANGE", "big", "-2", "-1"]),
        arr(&[&member(N - 2), &member(N - 1)])
    );
    assert_eq!(
        r.call(&["ZREVRANGE", "big", &mid.to_string(), &mid.to_string()]),
        arr(&[&member(N - 1 - mid)])
    );
    // Scores 20000..=29999 are members 40000..=59999; "(20000" drops two of them.
    assert_eq!(r.call(&["ZCOUNT", "big", "20000", "29999"]), ":20000\r\n");
    assert_eq!(r.call(&["ZCOUNT", "big", "(20000", "29999"]), ":19998\r\n");
    assert_eq!(
        r.call(&["ZRANGEBYSCORE", "big", "(20000", "+inf", "LIMIT", "10", "2"]),
        arr(&[&member(40_012), &member(40_013)])
    );
    // Score 30000 is members 60000 and 60001: the highest comes first.
    assert_eq!(
        r.call(&[
            "ZRANGE", "big", "30000", "(20000", "BYSCORE", "REV", "LIMIT", "0", "1"
        ]),
        arr(&[&member(60_001)])
    );
    assert_eq!(
        r.call(&["ZSCORE", "big", &member(77_777)]),
        bulk(&score(77_777))
    );

    // Removing from the middle shifts the ranks after it.
    assert_eq!(
        r.call(&["ZREMRANGEBYRANK", "big", "50000", "50099"]),
        ":100\r\n"
    );
    assert_eq!(r.call(&["ZRANK", "big", &member(50_100)]), ":50000\r\n");
    assert_eq!(r.call(&["ZRANK", "big", &member(50_050)]), "$-1\r\n");
    assert_eq!(
        r.call(&["ZREMRANGEBYSCORE", "big", "(10000", "(10002"]),
        ":2\r\n"
    );
    assert_eq!(r.call(&["ZRANK", "big", &member(20_004)]), ":20002\r\n");
    assert_eq!(
        r.call(&["ZPOPMIN", "big", "2"]),
        arr(&[&member(0), "0", &member(1), "0"])
    );

    // ZSCAN returns every member exactly once.
    let live = N - 100 - 2 - 2;
    let mut seen = std::collections::HashSet::new();
    let mut cursor = "0".to_string();
    for call in 0.. {
        assert!(call <= N / 100, "ZSCAN did not finish");
        r.cmd(&[b"ZSCAN", b"big", cursor.as_bytes(), b"COUNT", b"1000"]);
        let reply = r.reply_str_lossy();
        let parts: Vec<&str> = reply.split("\r\n").collect();
        cursor = parts[2].to_string();
        // parts[3] is the inner array header; then $len, member, $len, score ...
        let items: Vec<&str> = parts[4..].iter().skip(1).step_by(2).copied().collect();
        for pair in items.chunks(2).filter(|p| p.len() == 2) {
            assert!(seen.insert(pair[0].to_string()), "{} twice", pair[0]);
        }
        if cursor == "0" {
            break;
        }
    }
    assert_eq!(seen.len(), live);
    assert_eq!(r.call(&["ZCARD", "big"]), format!(":{live}\r\n"));
}

#[test]
fn dump_restore_round_trip() {
    let s = Shoal::start(&[]);
    let mut r = s.raw();
    assert_eq!(
        r.call(&["ZADD", "small", "1", "a", "-2.5", "b", "inf", "c"]),
        ":3\r\n"
    );
    add_numbered(&mut r, "large", 1_000, 250, 4);
    for (key, encoding) in [("small", "listpack"), ("large", "skiplist")] {
        r.cmd(&[b"DUMP", key.as_bytes()]);
        let dump = r.reply();
        let payload = bulk_payload(&dump).to_vec();
        let copy = format!("{key}-copy");
        r.cmd(&[b"RESTORE", copy.as_bytes(), b"0", &payload]);
        assert_eq!(r.reply_str_lossy(), "+OK\r\n");
        assert_eq!(
            r.call(&["ZRANGE", &copy, "0", "-1", "WITHSCORES"]),
            r.call(&["ZRANGE", key, "0", "-1", "WITHSCORES"])
        );
        assert_eq!(r.call(&["OBJECT", "ENCODING", &copy]), bulk(encoding));
        // A damaged payload is refused, not misread.
        let mut bad = payload.clone();
        let mid = bad.len() / 2;
        bad[mid] ^= 0x55;
        r.cmd(&[b"RESTORE", b"bad", b"0", &bad]);
        assert_eq!(
            r.reply_str_lossy(),
            "-ERR DUMP payload version or checksum are wrong\r\n"
        );
    }
    // A skiplist that shrank comes back compact, as Redis reloads it.
    assert_eq!(
        r.call(&["ZREMRANGEBYRANK", "large", "10", "-1"]),
        ":990\r\n"
    );
    assert_eq!(r.call(&["OBJECT", "ENCODING", "large"]), bulk("skiplist"));
    r.cmd(&[b"DUMP", b"large"]);
    let dump = r.reply();
    let payload = bulk_payload(&dump).to_vec();
    r.cmd(&[b"RESTORE", b"large2", b"0", &payload]);
    assert_eq!(r.reply_str_lossy(), "+OK\r\n");
    assert_eq!(r.call(&["OBJECT", "ENCODING", "large2"]), bulk("listpack"));
    assert_eq!(r.call(&["ZCARD", "large2"]), ":10\r\n");
}

#[test]
fn object_encoding_converts_one_way() {
    let s = Shoal::start(&[]);
    let mut r = s.raw();
    for i in 0..128 {
        r.call(&["ZADD", "z", &i.to_string(), &format!("m{i}")]);
    }
    assert_eq!(r.call(&["OBJECT", "ENCODING", "z"]), bulk("listpack"));
    r.call(&["ZADD", "z", "128", "m128"]);
    assert_eq!(r.call(&["OBJECT", "ENCODING", "z"]), bulk("skiplist"));
    r.call(&["ZREMRANGEBYRANK", "z", "0", "-3"]);
    assert_eq!(r.call(&["ZCARD", "z"]), ":2\r\n");
    assert_eq!(
        r.call(&["OBJECT", "ENCODING", "z"]),
        bulk("skiplist"),
        "never back"
    );

    let long = "x".repeat(65);
    r.call(&["ZADD", "v", "1", &"y".repeat(64)]);
    assert_eq!(r.call(&["OBJECT", "ENCODING", "v"]), bulk("listpack"));
    r.call(&["ZADD", "v", "1", &long]);
    assert_eq!(r.call(&["OBJECT", "ENCODING", "v"]), bulk("skiplist"));

    // The thresholds are live config; store results pick the encoding their size calls for.
    assert_eq!(
        r.call(&["CONFIG", "SET", "zset-max-listpack-entries", "2"]),
        "+OK\r\n"
    );
    r.call(&["ZADD", "w", "1", "a", "2", "b"]);
    assert_eq!(r.call(&["OBJECT", "ENCODING", "w"]), bulk("listpack"));
    r.call(&["ZADD", "w", "3", "c"]);
    assert_eq!(r.call(&["OBJECT", "ENCODING", "w"]), bulk("skiplist"));
    assert_eq!(r.call(&["ZUNIONSTORE", "u", "1", "z"]), ":2\r\n");
    assert_eq!(r.call(&["OBJECT", "ENCODING", "u"]), bulk("listpack"));
    assert_eq!(r.call(&["ZUNIONSTORE", "u", "1", "w"]), ":3\r\n");
    assert_eq!(r.call(&["OBJECT", "ENCODING", "u"]), bulk("skiplist"));
}

#[test]
fn sets_are_inputs_with_score_one() {
    let s = Shoal::start(&[]);
    let mut r = s.raw();
    assert_eq!(r.call(&["SADD", "s", "x", "y", "q"]), ":3\r\n");
    assert_eq!(r.call(&["SADD", "nums", "1", "2"]), ":2\r\n");
    assert_eq!(
        r.call(&["ZADD", "z", "5", "x", "7", "y", "9", "w"]),
        ":3\r\n"
    );
    assert_eq!(
        r.call(&["ZUNION", "2", "z", "s", "WITHSCORES"]),
        arr(&["q", "1", "x", "6", "y", "8", "w", "9"])
    );
    assert_eq!(
        r.call(&["ZINTER", "2", "s", "z", "AGGREGATE", "MAX", "WITHSCORES"]),
        arr(&["x", "5", "y", "7"])
    );
    assert_eq!(r.call(&["ZDIFF", "2", "s", "z"]), arr(&["q"]));
    assert_eq!(r.call(&["ZINTERCARD", "2", "nums", "s"]), ":0\r\n");
    assert_eq!(r.call(&["ZUNIONSTORE", "d", "2", "nums", "s"]), ":5\r\n");
    assert_eq!(
        r.call(&["ZRANGE", "d", "0", "-1"]),
        arr(&["1", "2", "q", "x", "y"])
    );
    assert_eq!(r.call(&["ZRANGE", "s", "0", "-1"]), WRONGTYPE);
}
