//! Hostile and malformed input over the wire. A protocol error gets Redis's exact `-ERR Protocol
//! error: ...` line and closes that one connection while other clients keep being served; command
//! errors (unknown command, wrong arity) are replies and the connection goes on; the per-client
//! limits (proto-max-bulk-len, client-query-buffer-limit, client-output-buffer-limit, maxclients)
//! disconnect or refuse only the offender; and seeded random bytes never take the server down.

mod common;

use std::io::{Read, Write};
use std::time::{Duration, Instant};

use common::{Raw, Rng, Shoal, info_u64, wait_until};

/// Sends `bytes` on a fresh connection and checks the exact error line, then that the server
/// closed the connection, and that another client is still served.
fn assert_protocol_error(s: &Shoal, bystander: &mut Raw, bytes: &[u8], want: &str) {
    let mut r = s.raw();
    r.send(bytes);
    assert_eq!(
        r.reply_str(),
        want,
        "reply to {:?}",
        String::from_utf8_lossy(bytes)
    );
    assert!(
        r.closed(),
        "connection not closed after {:?}",
        String::from_utf8_lossy(bytes)
    );
    assert_eq!(bystander.call(&["PING"]), "+PONG\r\n");
}

#[test]
fn malformed_resp_gets_a_protocol_error_and_only_that_connection_closes() {
    let s = Shoal::start(&[]);
    let mut bystander = s.raw();
    let cases: &[(&[u8], &str)] = &[
        (
            b"*1\r\n+x\r\n",
            "-ERR Protocol error: expected '$', got '+'\r\n",
        ),
        (
            b"*2\r\n$3\r\nGET\r\n:1\r\n",
            "-ERR Protocol error: expected '$', got ':'\r\n",
        ),
        (
            b"*abc\r\n",
            "-ERR Protocol error: invalid multibulk length\r\n",
        ),
        (
            b"*2000000000000\r\n",
            "-ERR Protocol error: invalid multibulk length\r\n",
        ),
        (
            b"*1\r\n$abc\r\n",
            "-ERR Protocol error: invalid bulk length\r\n",
        ),
        (
            b"*1\r\n$-5\r\n",
            "-ERR Protocol error: invalid bulk length\r\n",
        ),
        (
            b"*1\r\n$2000000000000\r\n",
            "-ERR Protocol error: invalid bulk length\r\n",
        ),
        (
            b"SET \"a b\r\n",
            "-ERR Protocol error: unbalanced quotes in request\r\n",
        ),
        (
            b"SET 'a\r\n",
            "-ERR Protocol error: unbalanced quotes in request\r\n",
        ),
    ];
    for (bytes, want) in cases {
        assert_protocol_error(&s, &mut bystander, bytes, want);
    }
    // Commands before the bad frame in the same write still run and answer first.
    let mut r = s.raw();
    let mut batch = common::encode(&[b"SET", b"before", b"1"]);
    batch.extend(b"*1\r\n+x\r\n");
    batch.extend(common::encode(&[b"SET", b"after", b"1"]));
    r.send(&batch);
    assert_eq!(r.reply(), b"+OK\r\n");
    assert_eq!(
        r.reply_str(),
        "-ERR Protocol error: expected '$', got '+'\r\n"
    );
    assert!(r.closed());
    assert_eq!(bystander.call(&["EXISTS", "before", "after"]), ":1\r\n");
}

#[test]
fn null_and_empty_multibulks_are_skipped() {
    let s = Shoal::start(&[]);
    let mut r = s.raw();
    r.send(b"*-1\r\n*0\r\nPING\r\n");
    assert_eq!(r.reply(), b"+PONG\r\n");
}

#[test]
fn unknown_commands_and_wrong_arity_are_replies_not_disconnects() {
    let s = Shoal::start(&[]);
    let mut r = s.raw();
    assert_eq!(
        r.call(&["foo", "a", "b"]),
        "-ERR unknown command 'foo', with args beginning with: 'a' 'b' \r\n"
    );
    assert_eq!(
        r.call(&["GET"]),
        "-ERR wrong number of arguments for 'get' command\r\n"
    );
    assert_eq!(
        r.call(&["CONFIG", "GET"]),
        "-ERR wrong number of arguments for 'config|get' command\r\n"
    );
    // Long names and arguments are cut to 128 characters in the message.
    let long = "z".repeat(300);
    let reply = r.call(&[&long, &long]);
    assert_eq!(
        reply,
        format!(
            "-ERR unknown command '{}', with args beginning with: '{}' \r\n",
            "z".repeat(128),
            "z".repeat(128)
        )
    );
    // Inline unknown commands too.
    r.send(b"foo a b\r\n");
    assert_eq!(
        r.reply_str(),
        "-ERR unknown command 'foo', with args beginning with: 'a' 'b' \r\n"
    );
    assert_eq!(r.call(&["PING"]), "+PONG\r\n");
    let mut c = s.client();
    assert!(info_u64(&mut c, "stats", "total_error_replies") >= 5);
}

#[test]
fn a_bulk_over_proto_max_bulk_len_is_a_protocol_error() {
    // 1mb is the smallest limit Redis (and shoal) accept.
    let s = Shoal::start(&["--set", "proto-max-bulk-len=1mb"]);
    let mut bystander = s.raw();
    // At the limit: fine.
    let ok = "v".repeat(1 << 20);
    assert_eq!(bystander.call(&["SET", "k", &ok]), "+OK\r\n");
    assert_protocol_error(
        &s,
        &mut bystander,
        b"*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$1048577\r\n",
        "-ERR Protocol error: invalid bulk length\r\n",
    );
    assert_eq!(
        bystander.call(&["STRLEN", "k"]),
        ":1048576\r\n",
        "the refused request did not run"
    );
}

#[test]
fn a_client_over_the_query_buffer_limit_is_disconnected() {
    let s = Shoal::start(&["--set", "client-query-buffer-limit=1mb"]);
    let mut bystander = s.raw();
    let mut r = s.raw();
    r.stream
        .set_write_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    // A 3 MB bulk announced, 2 MB of it sent, never completed.
    let _ = r.try_send(b"*3\r\n$3\r\nSET\r\n$3\r\nbig\r\n$3000000\r\n");
    let chunk = vec![b'q'; 64 * 1024];
    for _ in 0..32 {
        if r.try_send(&chunk).is_err() {
            break; // The server hung up while we were still sending: that is the point.
        }
    }
    assert!(r.closed(), "the server closes the connection");
    let mut c = s.client();
    wait_until(
        "client_query_buffer_limit_disconnections to count it",
        || info_u64(&mut c, "stats", "client_query_buffer_limit_disconnections") >= 1,
    );
    assert_eq!(bystander.call(&["PING"]), "+PONG\r\n");
    assert_eq!(bystander.call(&["EXISTS", "big"]), ":0\r\n");
}

#[test]
fn a_client_that_never_reads_is_disconnected_at_the_output_buffer_limit() {
    let s = Shoal::start(&["--set", "client-output-buffer-limit=normal 1mb 512kb 1"]);
    let mut c = s.client();
    let value = vec![b'o'; 300 * 1024];
    let _: () = redis::cmd("SET")
        .arg("big")
        .arg(&value)
        .query(&mut c)
        .unwrap();
    // A connection that asks for 300 KB replies and never reads them.
    let sock = std::net::TcpStream::connect(s.addr()).unwrap();
    sock.set_write_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    let mut sock = sock;
    let get = common::encode(&[b"GET", b"big"]);
    let started = Instant::now();
    for _ in 0..200 {
        if sock.write_all(&get).is_err() || started.elapsed() > Duration::from_secs(5) {
            break;
        }
    }
    wait_until("client_output_buffer_limit_disconnections >= 1", || {
        info_u64(&mut c, "stats", "client_output_buffer_limit_disconnections") >= 1
    });
    wait_until("connected_clients back to 1", || {
        info_u64(&mut c, "clients", "connected_clients") == 1
    });
    // Others keep being served, including with the same large value.
    let back: Vec<u8> = common::q(&mut c, &["GET", "big"]);
    assert_eq!(back.len(), value.len());
    drop(sock);
}

#[test]
fn maxclients_refuses_the_extra_connection_with_an_error() {
    let s = Shoal::start(&["--maxclients", "2"]);
    let mut a = Raw::connect_ready(&s.addr());
    let mut b = Raw::connect_ready(&s.addr());
    let mut third = s.raw();
    let mut buf = Vec::new();
    let _ = third.stream.read_to_end(&mut buf);
    assert_eq!(
        String::from_utf8_lossy(&buf),
        "-ERR max number of clients reached\r\n",
        "the refused client reads the error, then EOF"
    );
    assert_eq!(a.call(&["PING"]), "+PONG\r\n");
    assert_eq!(b.call(&["PING"]), "+PONG\r\n");
    assert_eq!(
        common::info_value(&b.call(&["INFO", "stats"]), "rejected_connections").as_deref(),
        Some("1")
    );
    // A slot frees up when a client leaves.
    drop(a);
    wait_until("a new client to be accepted", || {
        let mut r = s.raw();
        r.cmd(&[b"PING"]);
        r.try_reply().as_deref() == Some(b"+PONG\r\n")
    });
}

/// Token soup: RESP-ish fragments that reach deeper into the decoder than uniform bytes do.
const TOKENS: &[&[u8]] = &[
    b"*",
    b"$",
    b"\r\n",
    b"\n",
    b"\r",
    b"-1",
    b"0",
    b"1",
    b"2",
    b"3",
    b"17",
    b"99999999",
    b"-99",
    b"PING",
    b"GET",
    b"SET",
    b"k",
    b"INCR",
    b"ECHO",
    b"\"",
    b"'",
    b"\\x4",
    b" ",
    b"+",
    b":",
    b"\x00",
    b"\xff",
    b"MGET",
    b"HELLO",
    b"3",
];

/// Address-space cap for servers fed hostile input: far above what they need (a few hundred MB of
/// mostly reserved address space), far below what a runaway allocation would take from the machine.
const HOSTILE_CAP_BYTES: u64 = 2 << 30;

/// Sends `bytes`, half-closes, and requires the server to close the connection (after answering,
/// erring or waiting for more) once it sees the end of input. Panics with the bytes otherwise.
fn send_and_expect_close(s: &mut Shoal, bytes: &[u8], what: &str) {
    let mut r = s.raw();
    let _ = r.try_send(bytes);
    let _ = r.stream.shutdown(std::net::Shutdown::Write);
    let mut sink = Vec::new();
    let closed = match r.stream.read_to_end(&mut sink) {
        Ok(_) => true,
        Err(e) => e.kind() == std::io::ErrorKind::ConnectionReset,
    };
    assert!(
        s.is_running(),
        "{what}: the server process died after {:?}",
        String::from_utf8_lossy(bytes)
    );
    assert!(
        closed,
        "{what}: connection not closed after EOF; sent {:?}",
        String::from_utf8_lossy(bytes)
    );
}

#[test]
fn an_inline_request_with_a_nul_byte_does_not_take_the_server_down() {
    // Redis's inline parser works on C strings; a NUL must neither loop nor allocate without bound.
    let mut s = Shoal::start_capped(&[], HOSTILE_CAP_BYTES);
    let mut c = s.client();
    for bytes in [
        &b"ECHO a\x00b\r\n"[..],
        b"\x00\r\n",
        b"SET k v\x00 junk\r\n",
    ] {
        send_and_expect_close(&mut s, bytes, "NUL inline");
        let pong = common::try_q::<String>(&mut c, &["PING"]);
        assert!(
            pong.as_deref() == Ok("PONG"),
            "server stopped answering after {:?}: {pong:?}",
            String::from_utf8_lossy(bytes)
        );
    }
    assert!(
        info_u64(&mut c, "memory", "used_memory") < 64 * 1024 * 1024,
        "memory stays small"
    );
}

#[test]
fn random_garbage_never_takes_the_server_down() {
    let mut s = Shoal::start_capped(&[], HOSTILE_CAP_BYTES);
    let mut rng = Rng::new(0x5eed_f5a0);
    let mut watcher = s.raw();
    for round in 0..300 {
        let mut bytes = Vec::new();
        let len = 1 + rng.below(400) as usize;
        if round % 2 == 0 {
            bytes.extend((0..len).map(|_| rng.next_u64() as u8));
        } else {
            while bytes.len() < len {
                bytes.extend_from_slice(TOKENS[rng.below(TOKENS.len() as u64) as usize]);
            }
        }
        send_and_expect_close(&mut s, &bytes, &format!("round {round}"));
        if round % 25 == 0 {
            assert_eq!(watcher.call(&["PING"]), "+PONG\r\n", "after round {round}");
        }
    }
    assert_eq!(watcher.call(&["PING"]), "+PONG\r\n");
    let mut fresh = s.raw();
    assert_eq!(fresh.call(&["SET", "still", "here"]), "+OK\r\n");
    assert_eq!(fresh.call(&["GET", "still"]), "$4\r\nhere\r\n");
}
