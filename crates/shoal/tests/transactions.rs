//! Transactions over the wire: MULTI/EXEC replies and errors byte for byte (as redis-server 7.0.15
//! sends them), WATCH against another client, expiry and FLUSHALL, and EXEC's atomicity seen by a
//! concurrent reader.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use common::{Shoal, q, wait_until};

#[test]
fn multi_exec_queues_and_replies_in_one_array() {
    let s = Shoal::start(&[]);
    let mut c = s.raw();
    assert_eq!(c.call(&["MULTI"]), "+OK\r\n");
    assert_eq!(c.call(&["SET", "a", "1"]), "+QUEUED\r\n");
    assert_eq!(c.call(&["INCR", "a"]), "+QUEUED\r\n");
    assert_eq!(c.call(&["GET", "a"]), "+QUEUED\r\n");
    assert_eq!(c.call(&["EXEC"]), "*3\r\n+OK\r\n:2\r\n$1\r\n2\r\n");
    assert_eq!(c.call(&["MULTI"]), "+OK\r\n");
    assert_eq!(c.call(&["MULTI"]), "-ERR MULTI calls can not be nested\r\n");
    assert_eq!(c.call(&["DISCARD"]), "+OK\r\n");
    assert_eq!(c.call(&["EXEC"]), "-ERR EXEC without MULTI\r\n");
    assert_eq!(c.call(&["DISCARD"]), "-ERR DISCARD without MULTI\r\n");
    // RESP3: the same array, a null array is `_`.
    assert_eq!(c.call(&["HELLO", "3"]).as_bytes()[0], b'%');
    assert_eq!(c.call(&["MULTI"]), "+OK\r\n");
    assert_eq!(c.call(&["GET", "a"]), "+QUEUED\r\n");
    assert_eq!(c.call(&["EXEC"]), "*1\r\n$1\r\n2\r\n");
}

#[test]
fn errors_before_exec_abort_it_and_runtime_errors_do_not() {
    let s = Shoal::start(&[]);
    let mut c = s.raw();
    c.call(&["MULTI"]);
    assert_eq!(c.call(&["SET", "k", "v"]), "+QUEUED\r\n");
    assert_eq!(
        c.call(&["NOSUCHCMD", "x"]),
        "-ERR unknown command 'NOSUCHCMD', with args beginning with: 'x' \r\n"
    );
    assert_eq!(
        c.call(&["GET"]),
        "-ERR wrong number of arguments for 'get' command\r\n"
    );
    assert_eq!(
        c.call(&["EXEC"]),
        "-EXECABORT Transaction discarded because of previous errors.\r\n"
    );
    assert_eq!(c.call(&["GET", "k"]), "$-1\r\n", "nothing of it ran");

    c.call(&["MULTI"]);
    assert_eq!(
        c.call(&["SHUTDOWN"]),
        "-ERR Command not allowed inside a transaction\r\n"
    );
    assert_eq!(
        c.call(&["EXEC"]),
        "-EXECABORT Transaction discarded because of previous errors.\r\n"
    );

    c.call(&["MULTI"]);
    assert_eq!(
        c.call(&["WATCH", "k"]),
        "-ERR WATCH inside MULTI is not allowed\r\n"
    );
    c.call(&["SET", "s", "text"]);
    c.call(&["INCR", "s"]);
    c.call(&["LPUSH", "s", "x"]);
    c.call(&["SET", "after", "1"]);
    assert_eq!(
        c.call(&["EXEC"]),
        "*4\r\n+OK\r\n-ERR value is not an integer or out of range\r\n-WRONGTYPE Operation against a key holding the wrong kind of value\r\n+OK\r\n"
    );
    assert_eq!(c.call(&["GET", "after"]), "$1\r\n1\r\n");

    c.call(&["MULTI"]);
    assert_eq!(
        c.call(&["EXEC", "extra"]),
        "-EXECABORT Transaction discarded because of: wrong number of arguments for 'exec' command\r\n"
    );
    assert_eq!(c.call(&["EXEC"]), "-ERR EXEC without MULTI\r\n");
}

#[test]
fn watch_sees_another_clients_write_and_ignores_its_reads() {
    let s = Shoal::start(&[]);
    let (mut a, mut b) = (s.raw(), s.raw());
    a.call(&["SET", "k", "1"]);
    assert_eq!(a.call(&["WATCH", "k"]), "+OK\r\n");
    b.call(&["GET", "k"]);
    a.call(&["MULTI"]);
    a.call(&["INCR", "k"]);
    assert_eq!(a.call(&["EXEC"]), "*1\r\n:2\r\n");

    a.call(&["WATCH", "k"]);
    b.call(&["SET", "k", "10"]);
    a.call(&["MULTI"]);
    a.call(&["INCR", "k"]);
    assert_eq!(a.call(&["EXEC"]), "*-1\r\n");
    assert_eq!(a.call(&["GET", "k"]), "$2\r\n10\r\n");

    // Absent at WATCH, created and deleted again before EXEC: still a change.
    a.call(&["WATCH", "fresh"]);
    b.call(&["SET", "fresh", "x"]);
    b.call(&["DEL", "fresh"]);
    a.call(&["MULTI"]);
    a.call(&["PING"]);
    assert_eq!(a.call(&["EXEC"]), "*-1\r\n");

    // UNWATCH forgets.
    a.call(&["WATCH", "k"]);
    b.call(&["SET", "k", "11"]);
    assert_eq!(a.call(&["UNWATCH"]), "+OK\r\n");
    a.call(&["MULTI"]);
    a.call(&["PING"]);
    assert_eq!(a.call(&["EXEC"]), "*1\r\n+PONG\r\n");
}

#[test]
fn concurrent_optimistic_increments_lose_nothing() {
    const PER_CLIENT: u64 = 200;
    const ATTEMPTS_MAX: u64 = 20_000;
    let s = Shoal::start(&[]);
    let addr = s.addr();
    let workers: Vec<_> = (0..2)
        .map(|_| {
            let addr = addr.clone();
            std::thread::spawn(move || {
                let mut c = common::Raw::connect(&addr);
                let (mut done, mut aborted) = (0, 0);
                for _ in 0..ATTEMPTS_MAX {
                    if done == PER_CLIENT {
                        break;
                    }
                    c.call(&["WATCH", "counter"]);
                    let v = c.call(&["GET", "counter"]);
                    let n: u64 = v.lines().nth(1).map_or(0, |l| l.parse().unwrap());
                    c.call(&["MULTI"]);
                    c.call(&["SET", "counter", &(n + 1).to_string()]);
                    match c.call(&["EXEC"]).as_str() {
                        "*1\r\n+OK\r\n" => done += 1,
                        "*-1\r\n" => aborted += 1,
                        other => panic!("unexpected EXEC reply {other:?}"),
                    }
                }
                assert_eq!(done, PER_CLIENT, "gave up after {ATTEMPTS_MAX} attempts");
                aborted
            })
        })
        .collect();
    let aborted: u64 = workers.into_iter().map(|w| w.join().unwrap()).sum();
    let mut c = s.client();
    let total: u64 = q(&mut c, &["GET", "counter"]);
    assert_eq!(total, 2 * PER_CLIENT, "{aborted} transactions were aborted");
}

#[test]
fn a_watched_key_that_expires_aborts_exec() {
    let s = Shoal::start(&[]);
    let (mut a, mut b) = (s.raw(), s.client());
    a.call(&["SET", "t", "v", "PX", "20"]);
    assert_eq!(a.call(&["WATCH", "t"]), "+OK\r\n");
    wait_until("the key expired", || q::<i64>(&mut b, &["PTTL", "t"]) == -2);
    a.call(&["MULTI"]);
    a.call(&["PING"]);
    assert_eq!(a.call(&["EXEC"]), "*-1\r\n");
}

#[test]
fn flushall_aborts_a_watch_of_an_existing_key_only() {
    let s = Shoal::start(&[]);
    let (mut a, mut b) = (s.raw(), s.raw());
    a.call(&["SET", "k", "v"]);
    a.call(&["WATCH", "k", "absent"]);
    assert_eq!(b.call(&["FLUSHALL"]), "+OK\r\n");
    a.call(&["MULTI"]);
    a.call(&["PING"]);
    assert_eq!(a.call(&["EXEC"]), "*-1\r\n");
    // Flushing a key that was not there is no change (Redis 7.0).
    a.call(&["WATCH", "absent"]);
    b.call(&["FLUSHALL"]);
    b.call(&["FLUSHDB"]);
    a.call(&["MULTI"]);
    a.call(&["PING"]);
    assert_eq!(a.call(&["EXEC"]), "*1\r\n+PONG\r\n");
    // SWAPDB bringing the key in does change it.
    b.call(&["SELECT", "1"]);
    b.call(&["SET", "absent", "now"]);
    a.call(&["WATCH", "absent"]);
    b.call(&["SWAPDB", "0", "1"]);
    a.call(&["MULTI"]);
    a.call(&["PING"]);
    assert_eq!(a.call(&["EXEC"]), "*-1\r\n");
}

#[test]
fn no_reader_sees_half_a_transaction() {
    const TRANSACTIONS: usize = 1_000;
    const FILLER: usize = 50;
    let s = Shoal::start(&[]);
    let done = Arc::new(AtomicBool::new(false));
    let writer = {
        let (addr, done) = (s.addr(), done.clone());
        std::thread::spawn(move || {
            let mut c = common::Raw::connect(&addr);
            // Pipelined: the whole transaction arrives in one read, as a client library sends it.
            // Filler writes between the two increments widen the window a reader could hit.
            let mut tx = common::encode(&[b"MULTI"]);
            tx.extend(common::encode(&[b"INCR", b"a"]));
            for i in 0..FILLER {
                tx.extend(common::encode(&[
                    b"SET",
                    format!("filler{i}").as_bytes(),
                    b"x",
                ]));
            }
            tx.extend(common::encode(&[b"INCR", b"b"]));
            tx.extend(common::encode(&[b"EXEC"]));
            for _ in 0..TRANSACTIONS {
                c.send(&tx);
                for _ in 0..FILLER + 4 {
                    c.reply();
                }
            }
            done.store(true, Ordering::SeqCst);
        })
    };
    let mut r = s.raw();
    let mut reads = 0u64;
    let mut mid_run = 0u64;
    // Bounded by the writer: it stops after TRANSACTIONS, and each read is bounded by WAIT_MAX.
    while !done.load(Ordering::SeqCst) {
        let reply = r.call(&["MGET", "a", "b"]);
        // Values only: `*2`, `$n` and `$-1` lines dropped. Both absent (before the first
        // transaction) or both present and equal; one without the other is half a transaction.
        let vals: Vec<&str> = reply
            .lines()
            .filter(|l| !l.starts_with(['*', '$']))
            .collect();
        let (a, b) = match vals.as_slice() {
            [] => ("0", "0"),
            [a, b] => (*a, *b),
            _ => panic!("a reader saw half a transaction: {reply:?}"),
        };
        assert_eq!(a, b, "a reader saw half a transaction: {reply:?}");
        reads += 1;
        if a != "0" && a != TRANSACTIONS.to_string() {
            mid_run += 1;
        }
    }
    writer.join().unwrap();
    assert!(reads > 0);
    let mut c = s.client();
    let (a, b): (u64, u64) = (q(&mut c, &["GET", "a"]), q(&mut c, &["GET", "b"]));
    assert_eq!((a, b), (TRANSACTIONS as u64, TRANSACTIONS as u64));
    // Not an assertion on timing, only that the check above was exercised while EXECs ran.
    eprintln!("{reads} reads, {mid_run} while transactions were running");
}
