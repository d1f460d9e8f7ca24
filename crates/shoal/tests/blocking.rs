//! Blocking commands over the wire: clients served in the order they blocked, timeouts, wake-ups
//! by a transaction and by any key of a multi-key wait, BLMOVE, BZPOPMIN, and the server cleaning
//! up after a blocked client that disconnects or is killed.

mod common;

use std::time::{Duration, Instant};

use common::{Raw, Shoal, info_u64, q, wait_until};

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

#[test]
fn waiters_are_served_in_the_order_they_blocked() {
    let s = Shoal::start(&[]);
    let mut c = s.client();
    let mut waiters: Vec<Raw> = (0..3).map(|_| s.raw()).collect();
    for (i, w) in waiters.iter_mut().enumerate() {
        block(w, &["BLPOP", "queue", "0"], &mut c, i as u64 + 1);
    }
    for (i, w) in waiters.iter_mut().enumerate() {
        let item = format!("item{i}");
        let n: i64 = q(&mut c, &["LPUSH", "queue", &item]);
        assert_eq!(n, 1);
        assert_eq!(
            reply(w),
            format!("*2\r\n$5\r\nqueue\r\n$5\r\n{item}\r\n"),
            "waiter {i}"
        );
    }
    assert_eq!(blocked_clients(&mut c), 0);
    // One push of several elements serves several waiters, still in order.
    for (i, w) in waiters.iter_mut().enumerate() {
        block(w, &["BRPOP", "queue", "0"], &mut c, i as u64 + 1);
    }
    let n: i64 = q(&mut c, &["LPUSH", "queue", "a", "b", "c"]);
    assert_eq!(n, 3);
    for (w, item) in waiters.iter_mut().zip(["a", "b", "c"]) {
        assert_eq!(reply(w), format!("*2\r\n$5\r\nqueue\r\n$1\r\n{item}\r\n"));
    }
    let len: i64 = q(&mut c, &["LLEN", "queue"]);
    assert_eq!(len, 0);
}

#[test]
fn a_timeout_replies_null_after_the_timeout() {
    let s = Shoal::start(&[]);
    let mut w = s.raw();
    let t0 = Instant::now();
    assert_eq!(w.call(&["BLPOP", "nothing", "0.5"]), "*-1\r\n");
    let elapsed = t0.elapsed();
    assert!(elapsed >= Duration::from_millis(500), "{elapsed:?}");
    assert!(elapsed < Duration::from_millis(2_500), "{elapsed:?}");
    // Redis 7.0 answers a BLMOVE timeout with a null array (a null bulk only inside MULTI).
    assert_eq!(
        w.call(&["BLMOVE", "nothing", "dst", "LEFT", "RIGHT", "0.05"]),
        "*-1\r\n"
    );
    assert_eq!(w.call(&["HELLO", "3"]).as_bytes()[0], b'%');
    assert_eq!(w.call(&["BZPOPMIN", "nothing", "0.05"]), "_\r\n");
    assert_eq!(
        w.call(&["BLPOP", "k", "-1"]),
        "-ERR timeout is negative\r\n"
    );
    assert_eq!(
        w.call(&["BLPOP", "k", "soon"]),
        "-ERR timeout is not a float or out of range\r\n"
    );
    let mut c = s.client();
    assert_eq!(blocked_clients(&mut c), 0);
}

#[test]
fn a_transaction_wakes_a_waiter_once_it_is_done() {
    let s = Shoal::start(&[]);
    let mut c = s.client();
    let mut w = s.raw();
    block(&mut w, &["BLPOP", "jobs", "0"], &mut c, 1);
    let mut t = s.raw();
    t.call(&["MULTI"]);
    t.call(&["RPUSH", "jobs", "first", "second"]);
    t.call(&["RPUSH", "jobs", "third"]);
    assert_eq!(t.call(&["EXEC"]), "*2\r\n:2\r\n:3\r\n");
    assert_eq!(reply(&mut w), "*2\r\n$4\r\njobs\r\n$5\r\nfirst\r\n");
    let rest: Vec<String> = q(&mut c, &["LRANGE", "jobs", "0", "-1"]);
    assert_eq!(rest, ["second", "third"]);
    // Inside MULTI a blocking command does not block.
    t.call(&["MULTI"]);
    t.call(&["BLPOP", "empty", "0"]);
    assert_eq!(t.call(&["EXEC"]), "*1\r\n*-1\r\n");
}

#[test]
fn any_key_of_a_multi_key_wait_wakes_it() {
    let s = Shoal::start(&[]);
    let mut c = s.client();
    let mut w = s.raw();
    block(&mut w, &["BLPOP", "k1", "k2", "k3", "0"], &mut c, 1);
    // Writes to other keys, or of another type, do not end the wait.
    let _: () = q(&mut c, &["SET", "unrelated", "x"]);
    let _: () = q(&mut c, &["SET", "k1", "a string"]);
    let _: i64 = q(&mut c, &["RPUSH", "k2", "v"]);
    assert_eq!(reply(&mut w), "*2\r\n$2\r\nk2\r\n$1\r\nv\r\n");
    assert_eq!(blocked_clients(&mut c), 0);
    // The pipeline behind a blocked command waits for it, then runs.
    let mut p = common::encode(&[b"BLPOP", b"k3", b"0"]);
    p.extend(common::encode(&[b"PING"]));
    w.send(&p);
    wait_until("blocked", || blocked_clients(&mut c) == 1);
    let _: i64 = q(&mut c, &["RPUSH", "k3", "x"]);
    assert_eq!(reply(&mut w), "*2\r\n$2\r\nk3\r\n$1\r\nx\r\n");
    assert_eq!(reply(&mut w), "+PONG\r\n");
}

#[test]
fn blmove_and_bzpopmin_wait_for_their_source() {
    let s = Shoal::start(&[]);
    let mut c = s.client();
    let mut w = s.raw();
    block(
        &mut w,
        &["BLMOVE", "src", "dst", "LEFT", "RIGHT", "0"],
        &mut c,
        1,
    );
    let _: i64 = q(&mut c, &["RPUSH", "src", "v1", "v2"]);
    assert_eq!(reply(&mut w), "$2\r\nv1\r\n");
    let dst: Vec<String> = q(&mut c, &["LRANGE", "dst", "0", "-1"]);
    assert_eq!(dst, ["v1"]);
    let src: Vec<String> = q(&mut c, &["LRANGE", "src", "0", "-1"]);
    assert_eq!(src, ["v2"]);

    // A client waiting on the destination of a BLMOVE is woken by the move.
    let mut w2 = s.raw();
    block(&mut w2, &["BLPOP", "dst2", "0"], &mut c, 1);
    block(&mut w, &["BRPOPLPUSH", "src2", "dst2", "0"], &mut c, 2);
    let _: i64 = q(&mut c, &["RPUSH", "src2", "hop"]);
    assert_eq!(reply(&mut w), "$3\r\nhop\r\n");
    assert_eq!(reply(&mut w2), "*2\r\n$4\r\ndst2\r\n$3\r\nhop\r\n");

    block(&mut w, &["BZPOPMIN", "z", "0"], &mut c, 1);
    let _: i64 = q(&mut c, &["ZADD", "z", "2", "b", "1.5", "a"]);
    assert_eq!(reply(&mut w), "*3\r\n$1\r\nz\r\n$1\r\na\r\n$3\r\n1.5\r\n");
}

#[test]
fn a_blocked_client_that_leaves_is_forgotten() {
    let s = Shoal::start(&[]);
    let mut c = s.client();
    let mut w = s.raw();
    block(&mut w, &["BLPOP", "q", "0"], &mut c, 1);
    drop(w);
    wait_until("the disconnected client is no longer blocked", || {
        blocked_clients(&mut c) == 0
    });
    let _: i64 = q(&mut c, &["RPUSH", "q", "kept"]);
    let len: i64 = q(&mut c, &["LLEN", "q"]);
    assert_eq!(len, 1, "nobody took the element");

    // CLIENT KILL of a blocked client.
    let mut w = s.raw();
    let id = w.call(&["CLIENT", "ID"]);
    let id = id.trim_start_matches(':').trim();
    block(&mut w, &["BLPOP", "other", "0"], &mut c, 1);
    let list: String = q(&mut c, &["CLIENT", "LIST"]);
    assert!(
        list.lines()
            .any(|l| l.starts_with(&format!("id={id} ")) && l.contains("flags=b")),
        "{list}"
    );
    let killed: i64 = q(&mut c, &["CLIENT", "KILL", "ID", id]);
    assert_eq!(killed, 1);
    assert!(w.closed());
    wait_until("the killed client is no longer blocked", || {
        blocked_clients(&mut c) == 0
    });
}

/// A waiter on a key that appears by being moved into place (RENAME, COPY, RESTORE, LMOVE, or a
/// transaction that builds it) is served from the key as it then stands, elements in Redis's
/// order for the side it pops from; and a timeout of a millisecond ends in about that.
#[test]
fn a_key_moved_into_place_serves_its_waiter_in_order() {
    let s = Shoal::start(&[]);
    let mut c = s.client();
    let mut w = s.raw();
    let dump: Vec<u8> = {
        let _: i64 = q(&mut c, &["RPUSH", "tmp", "a", "b", "c"]);
        let v: Vec<u8> = redis::cmd("DUMP").arg("tmp").query(&mut c).unwrap();
        let _: i64 = q(&mut c, &["DEL", "tmp"]);
        v
    };
    for (side, want) in [("LEFT", ["a", "b"]), ("RIGHT", ["c", "b"])] {
        for how in ["RENAME", "COPY", "RESTORE", "MULTI"] {
            let _: i64 = q(&mut c, &["DEL", "src", "dst"]);
            block(
                &mut w,
                &["BLMPOP", "0", "1", "dst", side, "COUNT", "2"],
                &mut c,
                1,
            );
            match how {
                "RENAME" | "COPY" => {
                    let _: i64 = q(&mut c, &["RPUSH", "src", "a", "b", "c"]);
                    let _: redis::Value = q(&mut c, &[how, "src", "dst"]);
                }
                "RESTORE" => {
                    let _: () = redis::cmd("RESTORE")
                        .arg("dst")
                        .arg(0)
                        .arg(&dump)
                        .query(&mut c)
                        .unwrap();
                }
                _ => {
                    let mut p = redis::pipe();
                    p.atomic()
                        .cmd("RPUSH")
                        .arg("dst")
                        .arg("a")
                        .cmd("RPUSH")
                        .arg("dst")
                        .arg("b")
                        .arg("c");
                    let _: redis::Value = p.query(&mut c).unwrap();
                }
            }
            assert_eq!(
                reply(&mut w),
                format!(
                    "*2\r\n$3\r\ndst\r\n*2\r\n$1\r\n{}\r\n$1\r\n{}\r\n",
                    want[0], want[1]
                ),
                "{how} {side}"
            );
        }
    }
    // LMOVE moves one element: the waiter gets it.
    let _: i64 = q(&mut c, &["DEL", "src", "dst"]);
    block(
        &mut w,
        &["BLMPOP", "0", "1", "dst", "LEFT", "COUNT", "3"],
        &mut c,
        1,
    );
    let _: i64 = q(&mut c, &["RPUSH", "src", "x", "y"]);
    let _: String = q(&mut c, &["LMOVE", "src", "dst", "LEFT", "RIGHT"]);
    assert_eq!(reply(&mut w), "*2\r\n$3\r\ndst\r\n*1\r\n$1\r\nx\r\n");
    for cmd in [
        &["BLPOP", "nothing", "0.001"][..],
        &["BLMPOP", "0.001", "1", "nothing", "LEFT"][..],
    ] {
        let t0 = Instant::now();
        assert_eq!(w.call(cmd), "*-1\r\n");
        let elapsed = t0.elapsed();
        assert!(
            elapsed < Duration::from_millis(500),
            "{cmd:?} took {elapsed:?}"
        );
    }
}

/// More ways a list arrives whole under a waiter's key (MOVE from another database, SORT ...
/// STORE, SWAPDB): served in order from either side, as redis-server 7.0 serves them (compared by
/// hand: `BLMPOP 5 1 dst LEFT|RIGHT COUNT 3` against `a b c d` gives `a b c` / `d c b`).
#[test]
fn a_list_moved_in_by_move_sort_store_or_swapdb_serves_its_waiter_in_order() {
    let s = Shoal::start(&[]);
    let mut c = s.client();
    let mut w = s.raw();
    for (side, want) in [("LEFT", "a b c"), ("RIGHT", "d c b")] {
        for how in ["MOVE", "SORT", "SWAPDB"] {
            let _: () = q(&mut c, &["FLUSHALL"]);
            block(
                &mut w,
                &["BLMPOP", "0", "1", "dst", side, "COUNT", "3"],
                &mut c,
                1,
            );
            match how {
                "MOVE" | "SWAPDB" => {
                    let _: () = q(&mut c, &["SELECT", "1"]);
                    let _: i64 = q(&mut c, &["RPUSH", "dst", "a", "b", "c", "d"]);
                    if how == "MOVE" {
                        let _: i64 = q(&mut c, &["MOVE", "dst", "0"]);
                    } else {
                        let _: () = q(&mut c, &["SWAPDB", "0", "1"]);
                    }
                    let _: () = q(&mut c, &["SELECT", "0"]);
                }
                _ => {
                    let _: i64 = q(&mut c, &["RPUSH", "src", "c", "a", "d", "b"]);
                    let _: i64 = q(&mut c, &["SORT", "src", "ALPHA", "STORE", "dst"]);
                }
            }
            let got = reply(&mut w);
            let elems: Vec<&str> = got
                .split("\r\n")
                .skip(5)
                .step_by(2)
                .filter(|e| !e.is_empty())
                .collect();
            assert_eq!(elems.join(" "), want, "{how} {side}: {got:?}");
        }
    }
}

/// `CLIENT UNBLOCK` ends another client's wait as a timeout (the null reply) or with
/// `-UNBLOCKED`, answers 1 only for a client that was blocked, and refuses bad arguments as
/// Redis 7.0 does.
#[test]
fn client_unblock_ends_a_wait_as_a_timeout_or_an_error() {
    let s = Shoal::start(&[]);
    let mut c = s.client();
    let mut w = s.raw();
    let id: i64 = {
        let mut r = w.call(&["CLIENT", "ID"]);
        r.retain(|ch| ch.is_ascii_digit());
        r.parse().unwrap()
    };
    let id_text = id.to_string();
    block(&mut w, &["BLPOP", "nothing", "0"], &mut c, 1);
    let n: i64 = q(&mut c, &["CLIENT", "UNBLOCK", &id_text, "ERROR"]);
    assert_eq!(n, 1);
    assert_eq!(
        reply(&mut w),
        "-UNBLOCKED client unblocked via CLIENT UNBLOCK\r\n"
    );
    block(&mut w, &["BLMPOP", "0", "1", "nothing", "LEFT"], &mut c, 1);
    let n: i64 = q(&mut c, &["CLIENT", "UNBLOCK", &id_text]);
    assert_eq!(n, 1);
    assert_eq!(reply(&mut w), "*-1\r\n");
    assert_eq!(blocked_clients(&mut c), 0);
    let n: i64 = q(&mut c, &["CLIENT", "UNBLOCK", &id_text, "TIMEOUT"]);
    assert_eq!(n, 0, "not blocked any more");
    // The connection still works.
    assert_eq!(w.call(&["PING"]), "+PONG\r\n");
    let mut raw = s.raw();
    assert_eq!(
        raw.call(&["CLIENT", "UNBLOCK", "x"]),
        "-ERR value is not an integer or out of range\r\n"
    );
    assert_eq!(
        raw.call(&["CLIENT", "UNBLOCK", "1", "maybe"]),
        "-ERR CLIENT UNBLOCK reason should be TIMEOUT or ERROR\r\n"
    );
    assert_eq!(
        raw.call(&["CLIENT", "UNBLOCK", "1", "timeout", "extra"]),
        "-ERR unknown subcommand or wrong number of arguments for 'UNBLOCK'. Try CLIENT HELP.\r\n"
    );
    assert_eq!(raw.call(&["CLIENT", "UNBLOCK", "999999"]), ":0\r\n");
}
