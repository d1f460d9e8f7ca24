//! CLIENT LIST / CLIENT INFO with real values (the socket's fd, query and output buffers, argument
//! and MULTI memory, flags, last command) in redis-server 7.0's field order, and MEMORY STATS,
//! DOCTOR, HELP, MALLOC-STATS and PURGE compared with redis-server 7.0.

mod common;

use std::collections::HashMap;

use common::reference::Redis;
use common::{Raw, Shoal, info_u64, q, wait_until};

/// `CLIENT LIST` line → (field names in order, values by name).
fn fields(line: &str) -> (Vec<String>, HashMap<String, String>) {
    let mut names = Vec::new();
    let mut values = HashMap::new();
    for kv in line.trim().split(' ') {
        let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
        names.push(k.to_string());
        values.insert(k.to_string(), v.to_string());
    }
    (names, values)
}

/// The CLIENT LIST line of the client with this id.
fn line_of(c: &mut redis::Connection, id: i64) -> HashMap<String, String> {
    let list: String = q(c, &["CLIENT", "LIST"]);
    let line = list
        .lines()
        .find(|l| l.starts_with(&format!("id={id} ")))
        .unwrap_or_else(|| panic!("no client {id} in {list}"));
    fields(line).1
}

fn num(m: &HashMap<String, String>, k: &str) -> i64 {
    m.get(k)
        .unwrap_or_else(|| panic!("no {k}"))
        .parse()
        .unwrap_or_else(|_| panic!("{k} is not a number"))
}

#[test]
fn client_list_has_redis_fields_in_redis_order() {
    let redis = Redis::start();
    let shoal = Shoal::start(&[]);
    let theirs: String = q(&mut redis.client(), &["CLIENT", "INFO"]);
    let ours: String = q(&mut shoal.client(), &["CLIENT", "INFO"]);
    let (their_names, their_values) = fields(&theirs);
    let (our_names, our_values) = fields(&ours);
    // Redis 7.2's lib-name and lib-ver follow (CLIENT SETINFO exists here).
    assert_eq!(our_names[..their_names.len()], their_names[..]);
    assert_eq!(our_names[their_names.len()..], ["lib-name", "lib-ver"]);
    // The listing command's own figures are Redis's: its query buffer and argument bytes.
    for k in [
        "qbuf",
        "argv-mem",
        "multi-mem",
        "obl",
        "oll",
        "omem",
        "cmd",
        "flags",
        "events",
    ] {
        assert_eq!(our_values[k], their_values[k], "{k}");
    }
}

/// The inode of the server's end of a TCP connection from `client_port` to `server_port`, from
/// /proc/net/tcp.
fn server_socket_inode(server_port: u16, client_port: u16) -> Option<String> {
    let text = std::fs::read_to_string("/proc/net/tcp").ok()?;
    text.lines().skip(1).find_map(|l| {
        let w: Vec<&str> = l.split_whitespace().collect();
        let port = |a: &str| u16::from_str_radix(a.rsplit(':').next()?, 16).ok();
        (port(w[1])? == server_port && port(w[2])? == client_port).then(|| w[9].to_string())
    })
}

#[test]
fn client_list_fd_is_the_servers_socket() {
    let s = Shoal::start(&[]);
    let mut c = s.client();
    let pid = info_u64(&mut c, "server", "process_id");
    let mut other = Raw::connect_ready(&s.addr());
    let other_port = other.stream.local_addr().unwrap().port();
    let id: i64 = {
        let r = other.call(&["CLIENT", "ID"]);
        r.trim_start_matches(':').trim().parse().unwrap()
    };
    let fd = num(&line_of(&mut c, id), "fd");
    assert!(fd > 2, "{fd}");
    let inode = server_socket_inode(s.port, other_port).expect("the connection in /proc/net/tcp");
    let target = std::fs::read_link(format!("/proc/{pid}/fd/{fd}")).expect("the fd exists");
    assert_eq!(target.to_string_lossy(), format!("socket:[{inode}]"));
}

#[test]
fn client_list_shows_buffers_memory_flags_and_last_command() {
    let s = Shoal::start(&[]);
    let mut c = s.client();
    let id_of = |r: &mut Raw| -> i64 {
        let reply = r.call(&["CLIENT", "ID"]);
        reply.trim_start_matches(':').trim().parse().unwrap()
    };
    // A request half sent: its bytes sit in the query buffer.
    let mut half = Raw::connect_ready(&s.addr());
    let half_id = id_of(&mut half);
    let partial = b"*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$100\r\nabcdef";
    half.send(partial);
    wait_until("the partial request is buffered", || {
        num(&line_of(&mut c, half_id), "qbuf") == partial.len() as i64
    });
    let h = line_of(&mut c, half_id);
    assert_eq!(num(&h, "qbuf") + num(&h, "qbuf-free"), num(&h, "rbs"));
    assert!(num(&h, "rbp") >= partial.len() as i64);
    assert!(num(&h, "tot-mem") > num(&h, "rbs"));
    assert_eq!(h["cmd"], "client|id");
    // MULTI: queued commands and their memory.
    let mut tx = Raw::connect_ready(&s.addr());
    let tx_id = id_of(&mut tx);
    tx.call(&["SELECT", "2"]);
    tx.call(&["MULTI"]);
    tx.call(&["SET", "key", &"v".repeat(1000)]);
    let t = line_of(&mut c, tx_id);
    assert_eq!(t["flags"], "x");
    assert_eq!(t["multi"], "1");
    assert_eq!(t["db"], "2");
    assert!(num(&t, "multi-mem") >= 1006, "{t:?}");
    assert_eq!(t["cmd"], "set");
    // Blocked: flag b, and the blocked command's arguments are held.
    let mut blocked = Raw::connect_ready(&s.addr());
    let blocked_id = id_of(&mut blocked);
    blocked.cmd(&[b"BLPOP", b"nothing", b"0"]);
    wait_until("the client blocks", || {
        line_of(&mut c, blocked_id)["flags"] == "b"
    });
    let b = line_of(&mut c, blocked_id);
    assert_eq!(num(&b, "argv-mem"), 5 + 7 + 1);
    assert_eq!(b["cmd"], "blpop");
    // A subscriber that does not read: messages pile up in its output.
    let mut sub = Raw::connect_ready(&s.addr());
    let sub_id = id_of(&mut sub);
    sub.call(&["SUBSCRIBE", "ch"]);
    let message = "m".repeat(64 * 1024);
    let mut sent = 0;
    while num(&line_of(&mut c, sub_id), "oll") == 0 {
        assert!(sent < 20 << 20, "messages never queued");
        for _ in 0..16 {
            let _: i64 = q(&mut c, &["PUBLISH", "ch", &message]);
            sent += message.len();
        }
    }
    let p = line_of(&mut c, sub_id);
    assert_eq!(p["flags"], "P");
    assert_eq!(p["sub"], "1");
    assert!(
        num(&p, "omem") >= num(&p, "oll") * message.len() as i64,
        "{p:?}"
    );
    assert!(num(&p, "tot-mem") > num(&p, "omem"));
    // INFO clients and memory count those buffers.
    assert!(
        info_u64(&mut c, "clients", "client_recent_max_output_buffer") >= num(&p, "omem") as u64
    );
    assert!(info_u64(&mut c, "memory", "mem_clients_normal") >= num(&p, "tot-mem") as u64);
    assert_eq!(info_u64(&mut c, "clients", "blocked_clients"), 1);
    assert_eq!(info_u64(&mut c, "clients", "clients_in_timeout_table"), 0);
    let mut timed = Raw::connect_ready(&s.addr());
    timed.cmd(&[b"BLPOP", b"nothing", b"100"]);
    wait_until("a second client blocks", || {
        info_u64(&mut c, "clients", "blocked_clients") == 2
    });
    assert_eq!(info_u64(&mut c, "clients", "clients_in_timeout_table"), 1);
    // RESP3 shows as resp=3.
    let mut r3 = Raw::connect_ready(&s.addr());
    let r3_id = id_of(&mut r3);
    r3.call(&["HELLO", "3"]);
    assert_eq!(line_of(&mut c, r3_id)["resp"], "3");
}

/// MEMORY STATS keys (a RESP2 flat array of name, value), nested maps as their own key lists.
fn stats_keys(c: &mut redis::Connection) -> Vec<String> {
    let v: redis::Value = q(c, &["MEMORY", "STATS"]);
    let redis::Value::Array(items) = v else {
        panic!("an array")
    };
    let mut keys = Vec::new();
    for pair in items.chunks(2) {
        let redis::Value::BulkString(k) = &pair[0] else {
            panic!("a key")
        };
        keys.push(String::from_utf8_lossy(k).into_owned());
        if let redis::Value::Array(inner) = &pair[1] {
            for kv in inner.chunks(2) {
                if let redis::Value::BulkString(k) = &kv[0] {
                    keys.push(format!("  {}", String::from_utf8_lossy(k)));
                }
            }
        }
    }
    keys
}

#[test]
fn memory_stats_doctor_and_help_as_redis() {
    let redis = Redis::start();
    let shoal = Shoal::start(&[]);
    let (mut rc, mut sc) = (redis.client(), shoal.client());
    for c in [&mut rc, &mut sc] {
        let _: () = q(c, &["SET", "k", "v"]);
    }
    assert_eq!(stats_keys(&mut sc), stats_keys(&mut rc));
    // Values: the same figures as INFO memory.
    let v: Vec<redis::Value> = q(&mut sc, &["MEMORY", "STATS"]);
    let get = |name: &str| -> i64 {
        let i = v
            .iter()
            .position(|x| matches!(x, redis::Value::BulkString(b) if b == name.as_bytes()))
            .unwrap_or_else(|| panic!("no {name}"));
        match &v[i + 1] {
            redis::Value::Int(n) => *n,
            other => panic!("{name}: {other:?}"),
        }
    };
    assert_eq!(get("keys.count"), 1);
    assert!(get("peak.allocated") >= get("total.allocated"));
    assert!(get("startup.allocated") > 0);
    assert!(get("clients.normal") > 0);
    assert_eq!(
        get("dataset.bytes") as u64,
        info_u64(&mut sc, "memory", "used_memory_dataset")
    );
    // A small instance: the same doctor's words.
    let theirs: String = q(&mut rc, &["MEMORY", "DOCTOR"]);
    let ours: String = q(&mut sc, &["MEMORY", "DOCTOR"]);
    assert_eq!(ours, theirs);
    let theirs: Vec<String> = q(&mut rc, &["MEMORY", "HELP"]);
    let ours: Vec<String> = q(&mut sc, &["MEMORY", "HELP"]);
    assert_eq!(ours, theirs);
    let stats: String = q(&mut sc, &["MEMORY", "MALLOC-STATS"]);
    assert!(stats.contains("committed"), "{stats}");
    let ok: String = q(&mut sc, &["MEMORY", "PURGE"]);
    assert_eq!(ok, "OK");
    for args in [&["MEMORY", "STATS", "x"][..], &["MEMORY", "DOCTOR", "x"]] {
        let mut r = shoal.raw();
        let mut rr = Raw::connect(&format!("127.0.0.1:{}", redis.port));
        assert_eq!(r.call(args), rr.call(args));
    }
}

#[test]
fn memory_doctor_finds_no_issue_in_a_healthy_instance() {
    let s = Shoal::start(&[]);
    let mut c = s.client();
    // Enough data to be judged (over 5 MB) and to outweigh the process's own resident pages
    // (code, stacks: about 35 MB for a debug build, which 96 MB of values left at a ratio of
    // 1.41), no peak above it.
    let value = "v".repeat(1 << 20);
    for i in 0..160 {
        let _: () = q(&mut c, &["SET", &format!("k{i}"), &value]);
    }
    let memory: String = q(&mut c, &["INFO", "memory"]);
    assert!(
        common::info_value(&memory, "mem_fragmentation_ratio")
            .and_then(|r| r.parse::<f64>().ok())
            .is_some_and(|r| r < 1.4),
        "{memory}"
    );
    let text: String = q(&mut c, &["MEMORY", "DOCTOR"]);
    assert_eq!(
        text,
        "Hi Sam, I can't find any memory issue in your instance. I can only account for what occurs on this base.\n"
    );
    // Freed memory leaves a peak far above what is used: the doctor says so.
    let _: () = q(&mut c, &["FLUSHALL"]);
    let _: () = q(&mut c, &["SET", "big", &"v".repeat(6 << 20)]);
    let text: String = q(&mut c, &["MEMORY", "DOCTOR"]);
    assert!(
        text.starts_with("Sam, I detected a few issues in this Redis instance memory implants:"),
        "{text}"
    );
    assert!(text.contains(" * Peak memory:"), "{text}");
}
