//! Pub/sub over the wire: RESP2 subscribers (array messages, restricted command set) and RESP3
//! subscribers (push frames between ordinary replies), patterns, the PUBSUB introspection commands,
//! and a slow subscriber cut off by its output buffer limit while the server keeps serving others.

mod common;

use common::{Shoal, info_u64, q, wait_until};

/// Waits until `channel` has `n` subscribers (subscriptions are registered by the subscriber's
/// connection task; another client sees them once its SUBSCRIBE ran).
fn wait_numsub(c: &mut redis::Connection, channel: &str, n: i64) {
    wait_until(&format!("{n} subscribers of {channel}"), || {
        let v: (String, i64) = q(c, &["PUBSUB", "NUMSUB", channel]);
        v.1 == n
    });
}

#[test]
fn resp2_subscribers_get_messages_and_pattern_messages() {
    let s = Shoal::start(&[]);
    let (mut sub, mut publisher) = (s.raw(), s.client());
    assert_eq!(
        sub.call(&["SUBSCRIBE", "news", "weather"]),
        "*3\r\n$9\r\nsubscribe\r\n$4\r\nnews\r\n:1\r\n"
    );
    assert_eq!(
        String::from_utf8(sub.reply()).unwrap(),
        "*3\r\n$9\r\nsubscribe\r\n$7\r\nweather\r\n:2\r\n"
    );
    assert_eq!(
        sub.call(&["PSUBSCRIBE", "n*"]),
        "*3\r\n$10\r\npsubscribe\r\n$2\r\nn*\r\n:3\r\n"
    );
    let receivers: i64 = q(&mut publisher, &["PUBLISH", "news", "hello"]);
    assert_eq!(receivers, 2, "the channel and the pattern subscription");
    assert_eq!(
        String::from_utf8(sub.reply()).unwrap(),
        "*3\r\n$7\r\nmessage\r\n$4\r\nnews\r\n$5\r\nhello\r\n"
    );
    assert_eq!(
        String::from_utf8(sub.reply()).unwrap(),
        "*4\r\n$8\r\npmessage\r\n$2\r\nn*\r\n$4\r\nnews\r\n$5\r\nhello\r\n"
    );
    let receivers: i64 = q(&mut publisher, &["PUBLISH", "nobody", "x"]);
    assert_eq!(receivers, 1, "pattern only");
    assert!(String::from_utf8(sub.reply()).unwrap().contains("nobody"));
    let receivers: i64 = q(&mut publisher, &["PUBLISH", "other", "x"]);
    assert_eq!(receivers, 0);

    // Subscribed RESP2: only the pub/sub commands, PING (as an array), QUIT and RESET.
    assert_eq!(sub.call(&["PING"]), "*2\r\n$4\r\npong\r\n$0\r\n\r\n");
    assert_eq!(
        sub.call(&["GET", "k"]),
        "-ERR Can't execute 'get': only (P|S)SUBSCRIBE / (P|S)UNSUBSCRIBE / PING / QUIT / RESET are allowed in this context\r\n"
    );
    assert_eq!(
        sub.call(&["PUNSUBSCRIBE", "n*"]),
        "*3\r\n$12\r\npunsubscribe\r\n$2\r\nn*\r\n:2\r\n"
    );
    // One reply per channel (in no particular order), the count going down to 0.
    sub.cmd(&[b"UNSUBSCRIBE"]);
    let first = String::from_utf8(sub.reply()).unwrap();
    let second = String::from_utf8(sub.reply()).unwrap();
    let (gone_first, gone_second) = if first.contains("news") {
        ("news", "weather")
    } else {
        ("weather", "news")
    };
    let reply = |name: &str, left: usize| {
        format!(
            "*3\r\n$11\r\nunsubscribe\r\n${}\r\n{name}\r\n:{left}\r\n",
            name.len()
        )
    };
    assert_eq!(first, reply(gone_first, 1));
    assert_eq!(second, reply(gone_second, 0));
    assert_eq!(sub.call(&["GET", "k"]), "$-1\r\n", "out of subscribed mode");
}

#[test]
fn resp3_subscribers_get_push_frames_between_replies() {
    let s = Shoal::start(&[]);
    let (mut sub, mut publisher) = (s.raw(), s.client());
    assert_eq!(sub.call(&["HELLO", "3"]).as_bytes()[0], b'%');
    assert_eq!(
        sub.call(&["SUBSCRIBE", "ch"]),
        ">3\r\n$9\r\nsubscribe\r\n$2\r\nch\r\n:1\r\n"
    );
    assert_eq!(
        sub.call(&["SET", "k", "v"]),
        "+OK\r\n",
        "any command is allowed"
    );
    assert_eq!(sub.call(&["PING"]), "+PONG\r\n");
    let n: i64 = q(&mut publisher, &["PUBLISH", "ch", "m1"]);
    assert_eq!(n, 1);
    assert_eq!(
        String::from_utf8(sub.reply()).unwrap(),
        ">3\r\n$7\r\nmessage\r\n$2\r\nch\r\n$2\r\nm1\r\n"
    );
    // A message published before a command comes before that command's reply.
    let n: i64 = q(&mut publisher, &["PUBLISH", "ch", "m2"]);
    assert_eq!(n, 1);
    sub.cmd(&[b"GET", b"k"]);
    assert_eq!(
        String::from_utf8(sub.reply()).unwrap(),
        ">3\r\n$7\r\nmessage\r\n$2\r\nch\r\n$2\r\nm2\r\n"
    );
    assert_eq!(String::from_utf8(sub.reply()).unwrap(), "$1\r\nv\r\n");
    // Publishing to itself: the push frame, then the reply.
    assert_eq!(
        sub.call(&["PUBLISH", "ch", "me"]),
        ">3\r\n$7\r\nmessage\r\n$2\r\nch\r\n$2\r\nme\r\n"
    );
    assert_eq!(String::from_utf8(sub.reply()).unwrap(), ":1\r\n");
    assert_eq!(
        sub.call(&["UNSUBSCRIBE"]),
        ">3\r\n$11\r\nunsubscribe\r\n$2\r\nch\r\n:0\r\n"
    );
    assert_eq!(
        sub.call(&["UNSUBSCRIBE"]),
        ">3\r\n$11\r\nunsubscribe\r\n_\r\n:0\r\n"
    );
}

#[test]
fn pubsub_introspection_and_cleanup_on_disconnect() {
    let s = Shoal::start(&[]);
    let mut c = s.client();
    let mut a = s.raw();
    let mut b = s.raw();
    a.call(&["SUBSCRIBE", "x"]);
    a.cmd(&[b"PSUBSCRIBE", b"p*", b"q*"]);
    a.reply();
    a.reply();
    b.cmd(&[b"SUBSCRIBE", b"x", b"y"]);
    b.reply();
    b.reply();
    b.call(&["PSUBSCRIBE", "p*"]);
    wait_numsub(&mut c, "y", 1);
    let numsub: Vec<redis::Value> = q(&mut c, &["PUBSUB", "NUMSUB", "x", "y", "z"]);
    assert_eq!(
        numsub,
        vec![
            redis::Value::BulkString(b"x".to_vec()),
            redis::Value::Int(2),
            redis::Value::BulkString(b"y".to_vec()),
            redis::Value::Int(1),
            redis::Value::BulkString(b"z".to_vec()),
            redis::Value::Int(0),
        ]
    );
    let numpat: i64 = q(&mut c, &["PUBSUB", "NUMPAT"]);
    assert_eq!(numpat, 2, "distinct patterns");
    let mut channels: Vec<String> = q(&mut c, &["PUBSUB", "CHANNELS"]);
    channels.sort();
    assert_eq!(channels, ["x", "y"]);
    let channels: Vec<String> = q(&mut c, &["PUBSUB", "CHANNELS", "y*"]);
    assert_eq!(channels, ["y"]);
    assert_eq!(info_u64(&mut c, "stats", "pubsub_channels"), 2);
    assert_eq!(info_u64(&mut c, "stats", "pubsub_patterns"), 2);
    let list: String = q(&mut c, &["CLIENT", "LIST"]);
    assert!(
        list.lines()
            .any(|l| l.contains("flags=P") && l.contains("sub=2 psub=1")),
        "{list}"
    );
    drop(b);
    wait_numsub(&mut c, "y", 0);
    drop(a);
    wait_until("every subscription released", || {
        info_u64(&mut c, "stats", "pubsub_channels") == 0
            && info_u64(&mut c, "stats", "pubsub_patterns") == 0
    });
    let n: i64 = q(&mut c, &["PUBLISH", "x", "gone"]);
    assert_eq!(n, 0);
}

#[test]
fn a_slow_subscriber_is_cut_off_and_others_are_still_served() {
    const MESSAGE_BYTES: usize = 64 * 1024;
    // 64 MB at most: far past what socket buffers absorb plus the 256 kB hard limit.
    const PUBLISHES_MAX: usize = 1024;
    let s = Shoal::start(&["--set", "client-output-buffer-limit=pubsub 256kb 128kb 1"]);
    let mut slow = s.raw();
    slow.call(&["SUBSCRIBE", "firehose"]);
    let mut publisher = s.client();
    let mut other = s.client();
    let _: () = q(&mut other, &["SET", "k", "v"]);
    let message = "m".repeat(MESSAGE_BYTES);
    let mut cut_off_after = None;
    for i in 0..PUBLISHES_MAX {
        let n: i64 = q(&mut publisher, &["PUBLISH", "firehose", &message]);
        if n == 0 {
            cut_off_after = Some(i);
            break;
        }
        if i % 16 == 0 {
            // The server keeps answering everyone else.
            let v: String = q(&mut other, &["GET", "k"]);
            assert_eq!(v, "v");
        }
    }
    let cut_off_after = cut_off_after.expect("the subscriber was never cut off");
    assert!(
        info_u64(
            &mut other,
            "stats",
            "client_output_buffer_limit_disconnections"
        ) >= 1
    );
    eprintln!("cut off after {cut_off_after} messages of {MESSAGE_BYTES} bytes");
    // Its connection is closed: reading drains what was in flight, then EOF.
    assert!(slow.closed(), "the slow subscriber's connection stays open");
    let v: String = q(&mut other, &["GET", "k"]);
    assert_eq!(v, "v");
}

/// `CLIENT REPLY OFF` drops replies but not pushes: Redis still writes a subscriber its
/// (p)subscribe confirmations and every message (an application that turned replies off to fire
/// writes and then subscribed kept receiving nothing). Replies to other commands stay dropped.
#[test]
fn a_subscriber_with_replies_off_still_gets_confirmations_and_messages() {
    let s = Shoal::start(&[]);
    let (mut sub, mut publisher) = (s.raw(), s.client());
    sub.cmd(&[b"CLIENT", b"REPLY", b"OFF"]);
    sub.cmd(&[b"SET", b"k", b"v"]);
    assert_eq!(
        sub.call(&["SUBSCRIBE", "news"]),
        "*3\r\n$9\r\nsubscribe\r\n$4\r\nnews\r\n:1\r\n",
        "the +OK of CLIENT REPLY OFF and SET's reply are dropped, the confirmation is not"
    );
    assert_eq!(
        sub.call(&["PSUBSCRIBE", "n*"]),
        "*3\r\n$10\r\npsubscribe\r\n$2\r\nn*\r\n:2\r\n"
    );
    let receivers: i64 = q(&mut publisher, &["PUBLISH", "news", "hello"]);
    assert_eq!(receivers, 2);
    assert_eq!(
        String::from_utf8(sub.reply()).unwrap(),
        "*3\r\n$7\r\nmessage\r\n$4\r\nnews\r\n$5\r\nhello\r\n"
    );
    assert_eq!(
        String::from_utf8(sub.reply()).unwrap(),
        "*4\r\n$8\r\npmessage\r\n$2\r\nn*\r\n$4\r\nnews\r\n$5\r\nhello\r\n"
    );
    // Refused in subscribed mode, and the error is dropped: the next thing read is the
    // PUNSUBSCRIBE confirmation.
    sub.cmd(&[b"CLIENT", b"REPLY", b"ON"]);
    assert_eq!(
        sub.call(&["PUNSUBSCRIBE"]),
        "*3\r\n$12\r\npunsubscribe\r\n$2\r\nn*\r\n:1\r\n"
    );
    let receivers: i64 = q(&mut publisher, &["PUBLISH", "nobody", "x"]);
    assert_eq!(receivers, 0, "the pattern is gone");
}

/// PUNSUBSCRIBE without arguments drops every pattern, answering in the order they were
/// subscribed (Redis keeps a client's patterns in a list), in RESP2 and RESP3; PUBLISH then
/// counts the client no more.
#[test]
fn punsubscribe_without_arguments_drops_every_pattern_in_subscription_order() {
    let s = Shoal::start(&[]);
    let mut publisher = s.client();
    let patterns: Vec<String> = (0..20).map(|i| format!("p{i:02}*")).collect();
    for resp3 in [false, true] {
        let mut sub = s.raw();
        let push = if resp3 { ">" } else { "*" };
        if resp3 {
            assert!(sub.call(&["HELLO", "3"]).starts_with('%'));
        }
        let mut args = vec!["PSUBSCRIBE"];
        args.extend(patterns.iter().map(String::as_str));
        sub.cmd(&args.iter().map(|a| a.as_bytes()).collect::<Vec<_>>());
        for (i, p) in patterns.iter().enumerate() {
            let want = format!(
                "{push}3\r\n$10\r\npsubscribe\r\n${}\r\n{p}\r\n:{}\r\n",
                p.len(),
                i + 1
            );
            assert_eq!(String::from_utf8(sub.reply()).unwrap(), want);
        }
        assert_eq!(q::<i64>(&mut publisher, &["PUBLISH", "p07x", "m"]), 1);
        assert!(String::from_utf8(sub.reply()).unwrap().contains("pmessage"));
        sub.cmd(&[b"PUNSUBSCRIBE"]);
        for (i, p) in patterns.iter().enumerate() {
            let want = format!(
                "{push}3\r\n$12\r\npunsubscribe\r\n${}\r\n{p}\r\n:{}\r\n",
                p.len(),
                patterns.len() - i - 1
            );
            assert_eq!(
                String::from_utf8(sub.reply()).unwrap(),
                want,
                "resp3={resp3}"
            );
        }
        assert_eq!(q::<i64>(&mut publisher, &["PUBLISH", "p07x", "m"]), 0);
        assert_eq!(q::<i64>(&mut publisher, &["PUBSUB", "NUMPAT"]), 0);
    }
}

/// Runs a conversation on a server: `(connection, command)` pairs, every reply and every message
/// that reaches a subscriber read back, as the exact bytes.
fn converse(addr: &str, steps: &[(usize, &[&str], usize)]) -> Vec<String> {
    let mut conns: Vec<common::Raw> = (0..3).map(|_| common::Raw::connect(addr)).collect();
    let mut seen = Vec::new();
    for (who, cmd, replies) in steps {
        let c = &mut conns[*who];
        let a: Vec<&[u8]> = cmd.iter().map(|s| s.as_bytes()).collect();
        c.cmd(&a);
        for _ in 0..*replies {
            let reply = String::from_utf8_lossy(&c.reply()).into_owned();
            // HELLO's reply holds the connection id, which differs between servers.
            let reply = if cmd[0] == "HELLO" {
                "(hello)".into()
            } else {
                reply
            };
            seen.push(format!("{who} {cmd:?}: {reply}"));
        }
    }
    seen
}

#[test]
fn sharded_pubsub_matches_redis_byte_for_byte() {
    let redis = common::reference::Redis::start();
    let shoal = Shoal::start(&[]);
    // (connection, command, replies to read on that connection)
    let steps: &[(usize, &[&str], usize)] = &[
        (0, &["SSUBSCRIBE", "orders", "users", "orders"], 3),
        (0, &["SUBSCRIBE", "orders"], 1),
        (0, &["PSUBSCRIBE", "o*"], 1),
        (2, &["PUBSUB", "SHARDCHANNELS", "or*"], 1),
        (2, &["PUBSUB", "SHARDCHANNELS", "us*"], 1),
        (2, &["PUBSUB", "SHARDNUMSUB", "orders", "nope"], 1),
        (2, &["PUBSUB", "NUMSUB", "orders"], 1),
        (2, &["SPUBLISH", "orders", "o1"], 1),
        // The shard subscriber gets an smessage only (no pattern match, no plain message).
        (0, &["PING"], 2),
        (2, &["PUBLISH", "orders", "o2"], 1),
        (0, &["PING"], 3),
        (2, &["SPUBLISH", "nobody", "x"], 1),
        (0, &["GET", "k"], 1),
        (0, &["SUNSUBSCRIBE", "users", "never"], 2),
        (0, &["SUNSUBSCRIBE"], 1),
        (0, &["SUNSUBSCRIBE"], 1),
        (0, &["UNSUBSCRIBE"], 1),
        (0, &["PUNSUBSCRIBE"], 1),
        (0, &["GET", "k"], 1),
        (1, &["MULTI"], 1),
        (1, &["SSUBSCRIBE", "x"], 1),
        (1, &["EXEC"], 1),
        (1, &["SPUBLISH"], 1),
        (1, &["SSUBSCRIBE"], 1),
        (1, &["HELLO", "3"], 1),
        (1, &["SSUBSCRIBE", "r3"], 1),
        (2, &["SPUBLISH", "r3", "m"], 1),
        (1, &["PING"], 2),
    ];
    let want = converse(&format!("127.0.0.1:{}", redis.port), steps);
    let got = converse(&shoal.addr(), steps);
    for (w, g) in want.iter().zip(&got) {
        assert_eq!(g, w);
    }
    assert_eq!(got.len(), want.len());
}

#[test]
fn client_list_counts_shard_subscriptions() {
    let s = Shoal::start(&[]);
    let mut sub = s.raw();
    sub.call(&["SSUBSCRIBE", "a", "b"]);
    sub.reply();
    let mut c = s.client();
    wait_until("the subscriptions are registered", || {
        let list: String = q(&mut c, &["CLIENT", "LIST"]);
        list.contains("ssub=2")
    });
    let list: String = q(&mut c, &["CLIENT", "LIST", "TYPE", "pubsub"]);
    assert!(list.contains("sub=0 psub=0 ssub=2"), "{list}");
}
