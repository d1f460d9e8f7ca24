//! MONITOR over the wire: what a monitor sees of other clients' commands (Redis 7.0's line format
//! and quoting, passwords redacted, admin commands hidden, MULTI/EXEC in execution order, the db
//! after SELECT), what a monitor itself may send (PING yes, keys no, RESET and QUIT), and a monitor
//! that stops reading cut off by `client-output-buffer-limit` like any slow client. The expected
//! lines were read from redis-server 7.0.15 running the same commands.

mod common;

use std::time::Instant;

use common::{Raw, Shoal, WAIT_MAX, info_u64, q, wait_until};

/// A monitor line without its timestamp: `(db, client port, arguments as shown)`.
fn parse_line(line: &str) -> (u32, u16, String) {
    let rest = line.strip_prefix('+').expect("a status line");
    let (stamp, rest) = rest.split_once(' ').expect("timestamp");
    let (secs, micros) = stamp.split_once('.').expect("seconds.micros");
    assert!(secs.parse::<u64>().is_ok() && micros.len() == 6, "{stamp}");
    let rest = rest.strip_prefix('[').expect("[db addr]");
    let (who, args) = rest.split_once("] ").expect("]");
    let (db, addr) = who.split_once(' ').expect("db addr");
    let port = addr.rsplit_once(':').expect("ip:port").1;
    (
        db.parse().expect("db"),
        port.parse().expect("port"),
        args.to_string(),
    )
}

/// Reads `n` monitor lines (each a `+...\r\n` status reply), bounded by the reply timeout.
fn read_lines(m: &mut Raw, n: usize) -> Vec<String> {
    (0..n)
        .map(|_| {
            let r = String::from_utf8_lossy(&m.reply()).into_owned();
            r.trim_end_matches("\r\n").to_string()
        })
        .collect()
}

fn start_monitor(s: &Shoal) -> Raw {
    let mut m = Raw::connect_ready(&s.addr());
    assert_eq!(m.call(&["MONITOR"]), "+OK\r\n");
    m
}

#[test]
fn a_monitor_sees_every_client_command_as_redis_shows_it() {
    let s = Shoal::start(&[]);
    let mut m = start_monitor(&s);
    let mut c = Raw::connect(&s.addr());
    let port = c.stream.local_addr().unwrap().port();
    c.cmd(&[b"set", b"k", b"a b\"c\n\x01\xc3\xa9\\"]);
    assert_eq!(c.reply(), b"+OK\r\n");
    assert!(
        c.call(&["AUTH", "someone", "secret"])
            .starts_with("-WRONGPASS")
    );
    // The default user has no password: any password is accepted, and still redacted.
    assert!(
        c.call(&["HELLO", "2", "AUTH", "default", "pw"])
            .starts_with('*')
    );
    // Admin commands are not shown; neither is a command refused before running.
    assert!(c.call(&["CONFIG", "GET", "maxmemory"]).starts_with('*'));
    assert!(c.call(&["CLIENT", "LIST"]).starts_with('$'));
    assert!(c.call(&["NOSUCH"]).starts_with("-ERR unknown command"));
    assert!(c.call(&["GET"]).starts_with("-ERR wrong number"));
    // A transaction shows when it runs: MULTI, its commands, then EXEC.
    assert_eq!(c.call(&["MULTI"]), "+OK\r\n");
    assert_eq!(c.call(&["SET", "a", "1"]), "+QUEUED\r\n");
    assert_eq!(c.call(&["GET", "a"]), "+QUEUED\r\n");
    assert!(c.call(&["EXEC"]).starts_with("*2"));
    // A command that fails while running is shown.
    assert!(c.call(&["LPUSH", "k", "x"]).starts_with("-WRONGTYPE"));
    // SELECT shows the database it selected.
    assert_eq!(c.call(&["SELECT", "3"]), "+OK\r\n");
    assert_eq!(c.call(&["GET", "zz"]), "$-1\r\n");
    let lines = read_lines(&mut m, 10);
    let seen: Vec<(u32, String)> = lines
        .iter()
        .map(|l| {
            let (db, p, args) = parse_line(l);
            assert_eq!(p, port, "the client's address: {l}");
            (db, args)
        })
        .collect();
    let expected: Vec<(u32, &str)> = vec![
        (0, r#""set" "k" "a b\"c\n\x01\xc3\xa9\\""#),
        (0, r#""AUTH" "(redacted)" "(redacted)""#),
        (0, r#""HELLO" "2" "AUTH" "(redacted)" "(redacted)""#),
        (0, r#""MULTI""#),
        (0, r#""SET" "a" "1""#),
        (0, r#""GET" "a""#),
        (0, r#""EXEC""#),
        (0, r#""LPUSH" "k" "x""#),
        (3, r#""SELECT" "3""#),
        (3, r#""GET" "zz""#),
    ];
    let expected: Vec<(u32, String)> = expected
        .into_iter()
        .map(|(d, a)| (d, a.to_string()))
        .collect();
    assert_eq!(seen, expected);
}

#[test]
fn migrate_passwords_are_redacted() {
    let s = Shoal::start(&[]);
    let mut m = start_monitor(&s);
    let mut c = Raw::connect(&s.addr());
    // Port 1: nothing listens; MIGRATE fails after running, so it is shown.
    c.call(&["SET", "k", "v"]);
    let r = c.call(&[
        "MIGRATE",
        "127.0.0.1",
        "1",
        "k",
        "0",
        "100",
        "AUTH2",
        "user",
        "pw",
    ]);
    assert!(r.starts_with('-'), "{r}");
    let lines = read_lines(&mut m, 2);
    assert_eq!(
        parse_line(&lines[1]).2,
        r#""MIGRATE" "127.0.0.1" "1" "k" "0" "100" "AUTH2" "user" "(redacted)""#
    );
}

#[test]
fn a_monitor_may_ping_not_touch_keys_and_leaves_with_reset_or_quit() {
    let s = Shoal::start(&[]);
    let mut c = s.client();
    let mut m = start_monitor(&s);
    // MONITOR again: no reply at all (Redis ignores it); the PING after it answers first.
    m.cmd(&[b"MONITOR"]);
    m.cmd(&[b"PING"]);
    assert_eq!(m.reply(), b"+PONG\r\n");
    let own = String::from_utf8_lossy(&m.reply()).into_owned();
    assert_eq!(parse_line(own.trim_end()).2, r#""PING""#);
    assert_eq!(
        m.call(&["GET", "x"]),
        "-ERR Replica can't interact with the keyspace\r\n"
    );
    let info = m.call(&["CLIENT", "INFO"]);
    assert!(info.contains(" flags=O "), "{info}");
    let _ = m.reply(); // its own CLIENT INFO line
    let monitors: String = q(&mut c, &["CLIENT", "LIST"]);
    assert!(monitors.contains("flags=O"));
    // RESET ends monitor mode: other clients' commands no longer arrive.
    assert_eq!(m.call(&["RESET"]), "+RESET\r\n");
    let _: () = q(&mut c, &["SET", "after", "reset"]);
    assert_eq!(m.call(&["GET", "after"]), "$5\r\nreset\r\n");
    // QUIT from a monitor closes it with +OK.
    assert_eq!(m.call(&["MONITOR"]), "+OK\r\n");
    assert_eq!(m.call(&["QUIT"]), "+OK\r\n");
    assert!(m.closed());
    wait_until("the monitor is gone", || {
        let list: String = q(&mut c, &["CLIENT", "LIST"]);
        !list.contains("flags=O")
    });
}

/// Runs writes of `value_bytes` through another client until the server counts one output-limit
/// disconnection (bounded by bytes and time). Returns the bytes sent.
fn flood_until_cut_off(s: &Shoal, value_bytes: usize, max_bytes: usize) -> usize {
    let mut c = s.client();
    let value = "m".repeat(value_bytes);
    let deadline = Instant::now() + 3 * WAIT_MAX;
    let mut sent = 0;
    while sent < max_bytes && Instant::now() < deadline {
        for _ in 0..16 {
            let _: () = q(&mut c, &["SET", "k", &value]);
            sent += value_bytes;
        }
        if info_u64(&mut c, "stats", "client_output_buffer_limit_disconnections") > 0 {
            return sent;
        }
    }
    panic!("the monitor that does not read was never cut off ({sent} bytes sent)");
}

#[test]
fn a_monitor_that_does_not_read_is_cut_off_by_the_normal_class_limit() {
    let s = Shoal::start(&[]);
    let mut c = s.client();
    let _: () = q(
        &mut c,
        &[
            "CONFIG",
            "SET",
            "client-output-buffer-limit",
            "normal 1mb 0 0",
        ],
    );
    let mut m = start_monitor(&s);
    // The monitor never reads: the kernel's buffers fill, then its mailbox, then the limit.
    let sent = flood_until_cut_off(&s, 64 * 1024, 256 << 20);
    assert!(sent >= 1 << 20);
    assert!(m.closed(), "the monitor's connection is closed");
    // The client sees the close before the server's task has unregistered it.
    wait_until("the monitor is no longer listed", || {
        info_u64(&mut c, "clients", "connected_clients") == 1
    });
}

#[test]
fn without_a_normal_class_limit_a_monitor_is_bounded_by_the_pubsub_class() {
    let s = Shoal::start(&[]);
    let mut c = s.client();
    let _: () = q(
        &mut c,
        &[
            "CONFIG",
            "SET",
            "client-output-buffer-limit",
            "normal 0 0 0 pubsub 2mb 0 0",
        ],
    );
    let mut m = start_monitor(&s);
    flood_until_cut_off(&s, 64 * 1024, 256 << 20);
    assert!(m.closed());
    // The server goes on serving everyone else.
    let pong: String = q(&mut c, &["PING"]);
    assert_eq!(pong, "PONG");
}

/// A script is shown before the commands it runs, and those as the script client's (`[0 lua]`),
/// as redis-server 7.0.15 shows EVAL and FCALL (Redis's introspection unit checks both).
#[test]
fn a_monitor_sees_a_script_before_its_commands() {
    let s = Shoal::start(&[]);
    let mut m = start_monitor(&s);
    let mut c = Raw::connect(&s.addr());
    let port = c.stream.local_addr().unwrap().port();
    assert_eq!(
        c.call(&[
            "EVAL",
            "redis.call('set',KEYS[1],ARGV[1])",
            "1",
            "foo",
            "bar"
        ]),
        "$-1\r\n"
    );
    let lib = "#!lua name=mlib\nredis.register_function('mfn', function() return redis.call('get', 'foo') end)";
    assert_eq!(c.call(&["FUNCTION", "LOAD", lib]), "$4\r\nmlib\r\n");
    assert_eq!(c.call(&["FCALL", "mfn", "0"]), "$3\r\nbar\r\n");
    let lines = read_lines(&mut m, 5);
    let (db, p, args) = parse_line(&lines[0]);
    assert_eq!(
        (db, p, args.as_str()),
        (
            0,
            port,
            r#""EVAL" "redis.call('set',KEYS[1],ARGV[1])" "1" "foo" "bar""#
        )
    );
    assert!(
        lines[1].ends_with(r#" [0 lua] "set" "foo" "bar""#),
        "{}",
        lines[1]
    );
    assert!(lines[2].contains(r#""FUNCTION" "LOAD""#), "{}", lines[2]);
    assert!(lines[3].ends_with(r#""FCALL" "mfn" "0""#), "{}", lines[3]);
    assert!(
        lines[4].ends_with(r#" [0 lua] "get" "foo""#),
        "{}",
        lines[4]
    );
}
