//! Pipelining and framing over the wire: 1000 commands in one write come back as 1000 replies in
//! order (redis-rs pipeline and raw bytes), inline commands with quoting, a request split byte by
//! byte, large values in both directions, pipelines of large replies, and concurrent clients
//! updating one key without losing writes.

mod common;

use std::io::Write;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use common::{Shoal, q};

#[test]
fn a_thousand_pipelined_commands_reply_in_order_with_redis_rs() {
    let s = Shoal::start(&[]);
    let mut c = s.client();
    let mut p = redis::pipe();
    for i in 0..1000 {
        p.cmd("INCR").arg("counter");
        if i % 10 == 0 {
            p.cmd("SET").arg(format!("k{i}")).arg(i).ignore();
        }
    }
    let replies: Vec<i64> = p.query(&mut c).unwrap();
    assert_eq!(replies, (1..=1000).collect::<Vec<i64>>());
    let mut p = redis::pipe();
    for i in (0..1000).step_by(10) {
        p.cmd("GET").arg(format!("k{i}"));
    }
    let values: Vec<i64> = p.query(&mut c).unwrap();
    assert_eq!(values, (0..1000).step_by(10).collect::<Vec<i64>>());
}

#[test]
fn a_thousand_pipelined_commands_in_one_write_reply_in_order_on_the_wire() {
    let s = Shoal::start(&[]);
    let mut r = s.raw();
    let mut batch = Vec::new();
    for i in 0..500 {
        let (k, v) = (format!("key:{i}"), format!("value:{i}"));
        batch.extend(common::encode(&[b"SET", k.as_bytes(), v.as_bytes()]));
        batch.extend(common::encode(&[b"GET", k.as_bytes()]));
    }
    r.send(&batch);
    for i in 0..500 {
        assert_eq!(r.reply(), b"+OK\r\n", "reply {}", 2 * i);
        let v = format!("value:{i}");
        assert_eq!(
            r.reply_str(),
            format!("${}\r\n{v}\r\n", v.len()),
            "reply {}",
            2 * i + 1
        );
    }
    assert_eq!(r.call(&["DBSIZE"]), ":500\r\n");
}

#[test]
fn errors_inside_a_pipeline_do_not_break_it() {
    let s = Shoal::start(&[]);
    let mut r = s.raw();
    let mut batch = Vec::new();
    batch.extend(common::encode(&[b"SET", b"a", b"1"]));
    batch.extend(common::encode(&[b"NOSUCH"]));
    batch.extend(common::encode(&[b"GET"]));
    batch.extend(common::encode(&[b"INCR", b"a"]));
    batch.extend(b"PING\r\n");
    r.send(&batch);
    assert_eq!(r.reply(), b"+OK\r\n");
    assert_eq!(
        r.reply_str(),
        "-ERR unknown command 'NOSUCH', with args beginning with: \r\n"
    );
    assert_eq!(
        r.reply_str(),
        "-ERR wrong number of arguments for 'get' command\r\n"
    );
    assert_eq!(r.reply(), b":2\r\n");
    assert_eq!(r.reply(), b"+PONG\r\n");
}

#[test]
fn inline_commands_with_quotes_and_escapes() {
    let s = Shoal::start(&[]);
    let mut r = s.raw();
    r.send(b"PING\r\n");
    assert_eq!(r.reply(), b"+PONG\r\n");
    // A bare \n ends an inline command too.
    r.send(b"PING\n");
    assert_eq!(r.reply(), b"+PONG\r\n");
    r.send(b"SET \"a b\" 'c d'\r\nGET \"a b\"\r\n");
    assert_eq!(r.reply(), b"+OK\r\n");
    assert_eq!(r.reply(), b"$3\r\nc d\r\n");
    r.send(b"SET \"x\\x41\\n\" v\r\n");
    assert_eq!(r.reply(), b"+OK\r\n");
    assert_eq!(r.call(&["GET", "xA\n"]), "$1\r\nv\r\n");
    // Extra spaces separate nothing; empty lines are ignored.
    r.send(b"\r\n\r\n   ECHO    spaced   \r\n");
    assert_eq!(r.reply(), b"$6\r\nspaced\r\n");
    // Inline and multibulk mixed in one write.
    let mut mixed = b"INCR n\r\n".to_vec();
    mixed.extend(common::encode(&[b"INCR", b"n"]));
    mixed.extend(b"INCR n\r\n");
    r.send(&mixed);
    assert_eq!(r.reply(), b":1\r\n");
    assert_eq!(r.reply(), b":2\r\n");
    assert_eq!(r.reply(), b":3\r\n");
}

#[test]
fn a_request_split_byte_by_byte_is_reassembled() {
    let s = Shoal::start(&[]);
    let mut r = s.raw();
    r.stream.set_nodelay(true).unwrap();
    let req = common::encode(&[b"SET", b"split", b"hello world"]);
    for b in &req {
        r.send(std::slice::from_ref(b));
        r.stream.flush().unwrap();
    }
    assert_eq!(r.reply(), b"+OK\r\n");
    // Inline, byte by byte, then two requests whose boundary falls mid-write.
    for b in b"GET split\r\n" {
        r.send(std::slice::from_ref(b));
    }
    assert_eq!(r.reply(), b"$11\r\nhello world\r\n");
    let mut two = common::encode(&[b"ECHO", b"one"]);
    two.extend(common::encode(&[b"ECHO", b"two"]));
    let (a, b) = two.split_at(two.len() / 2 + 3);
    r.send(a);
    r.send(b);
    assert_eq!(r.reply(), b"$3\r\none\r\n");
    assert_eq!(r.reply(), b"$3\r\ntwo\r\n");
}

#[test]
fn a_one_megabyte_value_round_trips() {
    let s = Shoal::start(&[]);
    let mut c = s.client();
    let value: Vec<u8> = (0..1024 * 1024u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 24) as u8)
        .collect();
    let _: () = redis::cmd("SET")
        .arg("big")
        .arg(&value)
        .query(&mut c)
        .unwrap();
    let back: Vec<u8> = q(&mut c, &["GET", "big"]);
    assert_eq!(back.len(), value.len());
    assert!(back == value, "1 MB value differs after the round trip");
    let n: i64 = q(&mut c, &["STRLEN", "big"]);
    assert_eq!(n, 1024 * 1024);
    // The same on the raw wire, written in uneven chunks.
    let mut r = s.raw();
    let req = common::encode(&[b"SET", b"big2", &value]);
    for chunk in req.chunks(77_777) {
        r.send(chunk);
    }
    assert_eq!(r.reply(), b"+OK\r\n");
    r.cmd(&[b"GET", b"big2"]);
    let reply = r.reply();
    let header = b"$1048576\r\n";
    assert_eq!(&reply[..header.len()], header);
    assert!(reply[header.len()..reply.len() - 2] == value[..]);
}

#[test]
fn pipelined_large_replies_arrive_complete_and_in_order() {
    let s = Shoal::start(&[]);
    let mut c = s.client();
    let mut p = redis::pipe();
    for i in 0..20u8 {
        p.cmd("SET")
            .arg(format!("v{i}"))
            .arg(vec![i; 200_000])
            .ignore();
    }
    p.exec(&mut c).unwrap();
    let mut p = redis::pipe();
    for round in 0..5 {
        for i in 0..20u8 {
            p.cmd("GET").arg(format!("v{}", (i + round) % 20));
        }
    }
    let values: Vec<Vec<u8>> = p.query(&mut c).unwrap();
    assert_eq!(values.len(), 100);
    for (n, v) in values.iter().enumerate() {
        let want = ((n % 20) as u8 + (n / 20) as u8) % 20;
        assert_eq!(v.len(), 200_000, "reply {n}");
        assert!(
            v.iter().all(|&b| b == want),
            "reply {n} has the wrong value"
        );
    }
}

#[test]
fn concurrent_clients_lose_no_increments() {
    let s = Shoal::start(&[]);
    let threads: Vec<_> = (0..8)
        .map(|_| {
            let url = s.url();
            std::thread::spawn(move || {
                let mut c = common::connect(url);
                for _ in 0..500 {
                    let _: i64 = q(&mut c, &["INCR", "shared"]);
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    let mut c = s.client();
    let n: i64 = q(&mut c, &["GET", "shared"]);
    assert_eq!(n, 4000);
}

#[test]
fn concurrent_pipelines_keep_each_connection_in_order() {
    // Eight clients each pipeline their own sequence; every reply belongs to its sender, in order.
    let s = Shoal::start(&[]);
    let threads: Vec<_> = (0..8)
        .map(|t| {
            let url = s.url();
            std::thread::spawn(move || {
                let mut c = common::connect(url);
                for round in 0..10 {
                    let mut p = redis::pipe();
                    for i in 0..200 {
                        p.cmd("ECHO").arg(format!("{t}:{round}:{i}"));
                    }
                    let got: Vec<String> = p.query(&mut c).unwrap();
                    let want: Vec<String> = (0..200).map(|i| format!("{t}:{round}:{i}")).collect();
                    assert_eq!(got, want);
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
}

#[test]
fn mset_is_atomic_for_concurrent_readers() {
    // A writer flips two keys together with MSET; readers using MGET never see them differ.
    let s = Shoal::start(&[]);
    let mut w = s.client();
    let _: () = q(&mut w, &["MSET", "{x}a", "0", "{y}b", "0"]);
    let stop = Arc::new(AtomicBool::new(false));
    let readers: Vec<_> = (0..3)
        .map(|_| {
            let url = s.url();
            let stop = stop.clone();
            std::thread::spawn(move || {
                let mut c = common::connect(url);
                let mut reads = 0;
                while !stop.load(Ordering::Relaxed) && reads < 20_000 {
                    let (a, b): (i64, i64) = q(&mut c, &["MGET", "{x}a", "{y}b"]);
                    assert_eq!(a, b, "MGET saw a half-applied MSET");
                    reads += 1;
                }
            })
        })
        .collect();
    for i in 1..=2000 {
        let v = i.to_string();
        let _: () = q(&mut w, &["MSET", "{x}a", &v, "{y}b", &v]);
    }
    stop.store(true, Ordering::Relaxed);
    for r in readers {
        r.join().unwrap();
    }
}

#[test]
fn pipelines_on_one_sorted_set_interleave_with_transactions_config_and_eviction() {
    // Pipelined sorted-set writes keep their shard locked between commands (a worker's hold,
    // `shoal_keyspace::sticky`). Meanwhile other clients run transactions on the same key (EXEC
    // takes the exec gate alone), CONFIG SET (which locks every shard under the configuration's
    // lock), INFO and DBSIZE (every shard), and writes that evict (other shards and the eviction
    // pool). Nothing may deadlock (every read is bounded by the client's timeout) and no write
    // may be lost.
    const WRITERS: usize = 3;
    const BATCHES: usize = 150;
    const BATCH: usize = 32;
    const TX: usize = 150;
    let s = Shoal::start(&["--threads", "3", "--maxmemory-policy", "volatile-lru"]);
    let mut admin = s.client();
    let base: u64 = common::info_u64(&mut admin, "memory", "used_memory");
    let cap = (base + 8 * 1024 * 1024).to_string();
    let _: () = q(&mut admin, &["CONFIG", "SET", "maxmemory", &cap]);
    let mut threads = Vec::new();
    for t in 0..WRITERS {
        let addr = s.addr();
        threads.push(std::thread::spawn(move || {
            let mut r = common::Raw::connect(&addr);
            for b in 0..BATCHES {
                let mut batch = Vec::new();
                for i in 0..BATCH {
                    let (score, member) = ((b * BATCH + i).to_string(), format!("w{t}:{b}:{i}"));
                    let cmd = if i % 8 == 7 { &b"GEOADD"[..] } else { b"ZADD" };
                    if cmd == b"GEOADD" {
                        batch.extend(common::encode(&[
                            b"GEOADD",
                            b"board",
                            b"13.36",
                            b"38.11",
                            member.as_bytes(),
                        ]));
                    } else {
                        batch.extend(common::encode(&[
                            b"ZADD",
                            b"board",
                            score.as_bytes(),
                            member.as_bytes(),
                        ]));
                    }
                }
                r.send(&batch);
                for _ in 0..BATCH {
                    assert_eq!(r.reply(), b":1\r\n");
                }
            }
        }));
    }
    {
        let url = s.url();
        threads.push(std::thread::spawn(move || {
            let mut c = common::connect(url);
            for i in 0..TX {
                let m = format!("tx:{i}");
                let (added, score): (i64, f64) = redis::pipe()
                    .atomic()
                    .cmd("ZADD")
                    .arg("board")
                    .arg(1)
                    .arg(&m)
                    .cmd("ZINCRBY")
                    .arg("board")
                    .arg(1)
                    .arg(&m)
                    .query(&mut c)
                    .unwrap();
                assert_eq!((added, score), (1, 2.0));
            }
        }));
    }
    {
        let url = s.url();
        threads.push(std::thread::spawn(move || {
            let mut c = common::connect(url);
            for i in 0..TX {
                let samples = (5 + i % 3).to_string();
                let _: () = q(&mut c, &["CONFIG", "SET", "maxmemory-samples", &samples]);
                let events = if i % 2 == 0 { "" } else { "z" };
                let _: () = q(&mut c, &["CONFIG", "SET", "notify-keyspace-events", events]);
                let _: String = q(&mut c, &["INFO", "keyspace"]);
                let _: i64 = q(&mut c, &["DBSIZE"]);
            }
        }));
    }
    {
        // Keys with a TTL, 2 KB each, well past the limit: writes evict them (only them, under
        // volatile-lru), on every shard.
        let addr = s.addr();
        threads.push(std::thread::spawn(move || {
            let mut r = common::Raw::connect(&addr);
            let value = vec![b'x'; 2048];
            for b in 0..100 {
                let mut batch = Vec::new();
                for i in 0..64 {
                    let k = format!("junk:{b}:{i}");
                    batch.extend(common::encode(&[
                        b"SET",
                        k.as_bytes(),
                        &value,
                        b"EX",
                        b"600",
                    ]));
                }
                r.send(&batch);
                for _ in 0..64 {
                    assert_eq!(r.reply(), b"+OK\r\n");
                }
            }
        }));
    }
    for t in threads {
        t.join().expect("a client failed");
    }
    let card: usize = q(&mut admin, &["ZCARD", "board"]);
    assert_eq!(card, WRITERS * BATCHES * BATCH + TX);
    assert!(
        common::info_u64(&mut admin, "stats", "evicted_keys") > 0,
        "the junk writes evicted"
    );
}

/// Pipelined PFADDs keep their HyperLogLog's shard between commands (and claim it when both
/// workers fight over it, `shoal_keyspace::claim`), while another client merges the counter into
/// a second key and counts both. No element may be lost: the registers of a HyperLogLog do not
/// depend on the order its elements came in, so the shared one ends byte for byte equal to a
/// reference fed the same elements one at a time by one client (after a PFCOUNT of each, which
/// leaves the same cached count in both headers).
#[test]
fn pipelined_pfadds_on_one_hyperloglog_from_two_workers_lose_no_element() {
    const WRITERS: usize = 4;
    const BATCHES: usize = 60;
    const BATCH: usize = 16;
    const READS: usize = 200;
    let s = Shoal::start(&["--threads", "2"]);
    let mut c = s.client();
    let stop = Arc::new(AtomicBool::new(false));
    let writers: Vec<_> = (0..WRITERS)
        .map(|w| {
            let addr = s.addr();
            std::thread::spawn(move || {
                let mut r = common::Raw::connect(&addr);
                for b in 0..BATCHES {
                    let mut batch = Vec::new();
                    for i in 0..BATCH {
                        let e = format!("e:{w}:{b}:{i}");
                        batch.extend(common::encode(&[b"PFADD", b"hll", e.as_bytes()]));
                    }
                    r.send(&batch);
                    for _ in 0..BATCH {
                        let reply = r.reply();
                        assert!(reply == b":1\r\n" || reply == b":0\r\n", "{reply:?}");
                    }
                }
            })
        })
        .collect();
    let reader = {
        let url = s.url();
        let stop = stop.clone();
        std::thread::spawn(move || {
            let mut c = common::connect(url);
            let mut last = 0i64;
            for _ in 0..READS {
                if stop.load(Ordering::Relaxed) {
                    break;
                }
                let _: () = q(&mut c, &["PFMERGE", "merged", "hll"]);
                let merged: i64 = q(&mut c, &["PFCOUNT", "merged"]);
                assert!(
                    merged >= last,
                    "a merge of a growing counter shrank: {last} -> {merged}"
                );
                last = merged;
            }
        })
    };
    for w in writers {
        w.join().expect("a writer failed");
    }
    stop.store(true, Ordering::Relaxed);
    reader.join().expect("the reader failed");
    for w in 0..WRITERS {
        for b in 0..BATCHES {
            let mut p = redis::pipe();
            for i in 0..BATCH {
                p.cmd("PFADD")
                    .arg("ref")
                    .arg(format!("e:{w}:{b}:{i}"))
                    .ignore();
            }
            let _: () = p.query(&mut c).unwrap();
        }
    }
    let (shared, reference): (i64, i64) = (
        q(&mut c, &["PFCOUNT", "hll"]),
        q(&mut c, &["PFCOUNT", "ref"]),
    );
    assert_eq!(shared, reference);
    let total = (WRITERS * BATCHES * BATCH) as f64;
    assert!(
        (shared as f64 - total).abs() < total * 0.05,
        "{shared} elements counted of {total}"
    );
    let (a, b): (Vec<u8>, Vec<u8>) = (q(&mut c, &["GET", "hll"]), q(&mut c, &["GET", "ref"]));
    assert_eq!(
        a, b,
        "the shared HyperLogLog's registers differ from the reference's"
    );
}

/// Pipelines from many connections on one sorted set, over two workers: the workers fight over
/// the key's shard, one claims it and the other's connections move to it
/// (`shoal_keyspace::claim`), which INFO counts. Through the moves every reply is its
/// connection's, once and in order: a connection's own counter reads 1, 2, 3, ...; the shared
/// score only grows as each connection sees it, and ends at the number of increments sent.
/// Rounds repeat (at most `ATTEMPTS`) until a claim and a move have happened.
#[test]
fn pipelines_on_one_sorted_set_from_two_workers_move_to_one_and_lose_nothing() {
    const CONNS: usize = 8;
    const ROUNDS: usize = 150;
    const PIPELINE: usize = 16;
    const ATTEMPTS: usize = 5;
    let s = Shoal::start(&["--threads", "2"]);
    let mut c = s.client();
    let mut sent = 0u64;
    let mut attempts = 0;
    loop {
        attempts += 1;
        let conns: Vec<_> = (0..CONNS)
            .map(|n| {
                let url = s.url();
                std::thread::spawn(move || {
                    let mut c = common::connect(url);
                    let own = format!("own:{n}");
                    let (mut shared, mut own_last, mut last) = (0u64, None::<i64>, 0i64);
                    for round in 0..ROUNDS {
                        let mut p = redis::pipe();
                        let kinds: Vec<bool> =
                            (0..PIPELINE).map(|i| (i + round) % 8 != 0).collect();
                        for &hot in &kinds {
                            if hot {
                                p.cmd("ZINCRBY").arg("hot").arg(1).arg("m");
                            } else {
                                p.cmd("INCR").arg(own.as_str());
                            }
                        }
                        let got: Vec<i64> = p.query(&mut c).expect("pipeline");
                        for (&hot, v) in kinds.iter().zip(got) {
                            if hot {
                                assert!(v > last, "the shared counter went {last} -> {v}");
                                last = v;
                                shared += 1;
                            } else {
                                if let Some(o) = own_last {
                                    assert_eq!(v, o + 1, "{own}: a reply lost, repeated or moved");
                                }
                                own_last = Some(v);
                            }
                        }
                    }
                    shared
                })
            })
            .collect();
        sent += conns
            .into_iter()
            .map(|t| t.join().expect("connection"))
            .sum::<u64>();
        let hot: u64 = q(&mut c, &["ZSCORE", "hot", "m"]);
        assert_eq!(hot, sent, "every increment ran exactly once");
        let claims = common::info_u64(&mut c, "stats", "shoal_hot_shard_claims");
        let moves = common::info_u64(&mut c, "stats", "shoal_hot_shard_moves");
        if claims >= 1 && moves >= 1 {
            break;
        }
        assert!(
            attempts < ATTEMPTS,
            "{attempts} rounds on one key formed no claim with a move (claims {claims}, moves {moves})"
        );
    }
}
