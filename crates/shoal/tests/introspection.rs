//! CLIENT LIST / CLIENT INFO with real values (the socket's fd, query and output buffers, argument
//! and MULTI memory, flags, last command) in redis-server 7.0's field order, and MEMORY STATS,
//! DOCTOR, HELP, MALLOC-STATS and PURGE, and LATENCY DOCTOR, GRAPH and HELP, compared with
//! redis-server 7.0.

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

// ---- LATENCY DOCTOR and GRAPH ----

const LATENCY_OFF: &str = "I'm sorry, Dave, I can't do that. Latency monitoring is disabled in this Redis instance. You may use \"CONFIG SET latency-monitor-threshold <milliseconds>.\" in order to enable it. If we weren't in a deep space mission I'd suggest to take a look at https://redis.io/topics/latency-monitor.\n";
const NO_SPIKE: &str = "Dave, no latency spike was observed during the lifetime of this Redis instance, not in the slightest bit. I honestly think you ought to sit down calmly, take a stress pill, and think things over.\n";
/// What a `command` spike makes the doctor advise with the slow log at its default and a
/// threshold above it.
const COMMAND_ADVICE: &str = "\nI have a few advices for you:\n\n- Check your Slow Log to understand what are the commands you are running which are too slow to execute. Please check https://redis.io/commands/slowlog for more information.\n- Deleting, expiring or evicting (because of maxmemory policy) large objects is a blocking operation. If you have very large objects that are often deleted, expired, or evicted, try to fragment those objects into multiple smaller objects.\n";
const THP_ADVICE: &str = "- I detected a non zero amount of anonymous huge pages used by your process. This creates very serious latency events in different conditions, especially when Redis is persisting on disk. To disable THP support use the command 'echo never > /sys/kernel/mm/transparent_hugepage/enabled', make sure to also add it into /etc/rc.local so that the command will be executed again after a reboot. Note that even if you have already disabled THP, you still need to restart the Redis process to get rid of the huge pages already created.\n";

/// Whether the process has memory in transparent huge pages, which the doctor advises against
/// (redis-server turns them off for itself; shoal runs with whatever the machine gives).
fn has_huge_pages(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/smaps_rollup"))
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.strip_prefix("AnonHugePages:"))
        .any(|v| v.trim().trim_end_matches("kB").trim() != "0")
}

/// The server's clock, in whole seconds.
fn server_now_s(c: &mut redis::Connection) -> i64 {
    let (s, _us): (i64, i64) = q(c, &["TIME"]);
    s
}

/// Two `command` spikes in two different seconds, DEBUG SLEEPs of a quarter then half a
/// second; their (second, ms) as LATENCY HISTORY gives them.
fn two_spikes(c: &mut redis::Connection) -> Vec<(i64, i64)> {
    let _: () = q(c, &["DEBUG", "SLEEP", "0.25"]);
    let first: Vec<(i64, i64)> = q(c, &["LATENCY", "HISTORY", "command"]);
    assert_eq!(first.len(), 1, "{first:?}");
    // The monitor keeps one sample a second: the next spike must fall in a later one.
    wait_until("the server's clock passes the first spike's second", || {
        server_now_s(c) > first[0].0
    });
    let _: () = q(c, &["DEBUG", "SLEEP", "0.5"]);
    let h: Vec<(i64, i64)> = q(c, &["LATENCY", "HISTORY", "command"]);
    assert!(
        h.len() == 2 && h[0] == first[0] && h[1].0 > h[0].0 && h[1].1 >= 500 && h[1].1 > h[0].1,
        "{h:?}"
    );
    h
}

/// What Redis's LATENCY GRAPH draws for the two spikes at `now`: the low one on the bottom
/// row, the high one filling the four rows, each one's age written downwards under it.
fn expected_graph(h: &[(i64, i64)], now: i64) -> String {
    let (low, high) = (h[0].1, h[1].1);
    let ages: Vec<String> = h.iter().map(|(t, _)| format!("{}s", now - t)).collect();
    let mut g = format!(
        "command - high {high} ms, low {low} ms (all time high {high} ms)\n{}\n #\n |\n |\n_|\n  \n",
        "-".repeat(80)
    );
    for k in 0..ages.iter().map(String::len).max().unwrap_or(0) {
        for a in &ages {
            g.push(a.as_bytes().get(k).map_or(' ', |&b| b as char));
        }
        g.push('\n');
    }
    g
}

/// Redis's report on the two spikes at `now`: integer mean and mean deviation, the seconds
/// since the oldest (at least 1) per spike.
fn expected_doctor(h: &[(i64, i64)], now: i64, huge_pages: bool) -> String {
    let (a, b) = (h[0].1, h[1].1);
    let avg = (a + b) / 2;
    let mad = ((avg - a).abs() + (b - avg).abs()) / 2;
    let period = (now - h[0].0).max(1) as f64 / 2.0;
    format!(
        "Dave, I have observed latency spikes in this Redis instance. You don't mind talking about it, do you Dave?\n\n\
         1. command: 2 latency spikes (average {avg}ms, mean deviation {mad}ms, period {period:.2} sec). Worst all time event {b}ms.\n\
         {COMMAND_ADVICE}{}",
        if huge_pages { THP_ADVICE } else { "" }
    )
}

/// Calls `cmd` and checks its text against `expected(now)` for the server's second before or
/// after the call (the clock may tick in between).
fn text_at_now(
    c: &mut redis::Connection,
    cmd: &[&str],
    expected: impl Fn(i64) -> String,
) -> String {
    let before = server_now_s(c);
    let text: String = q(c, cmd);
    let after = server_now_s(c);
    assert!(
        text == expected(before) || text == expected(after),
        "{cmd:?} gave:\n{text}\nexpected:\n{}",
        expected(before)
    );
    text
}

/// Digits to 0: two servers' reports of the same events, timed differently, then read alike.
fn shape(text: &str) -> String {
    text.chars()
        .map(|ch| if ch.is_ascii_digit() { '0' } else { ch })
        .collect()
}

/// LATENCY DOCTOR and GRAPH as redis-server 7.0 gives them: the doctor's words with the monitor
/// off, on without spikes, and after two spikes (their statistics and advice), the graph of
/// those spikes, the errors, and HELP.
#[test]
fn latency_doctor_and_graph_as_redis() {
    let redis = Redis::start_with(&["--enable-debug-command", "yes"]);
    let shoal = Shoal::start(&["--enable-debug-command", "yes"]);
    let (mut rc, mut sc) = (redis.client(), shoal.client());
    let thp = || has_huge_pages(shoal.pid());
    let no_spike = |huge_pages: bool| {
        if huge_pages {
            format!("\nI have a few advices for you:\n\n{THP_ADVICE}")
        } else {
            NO_SPIKE.to_string()
        }
    };

    // Off (the default) and nothing recorded: the monitor is disabled.
    for c in [&mut rc, &mut sc] {
        let text: String = q(c, &["LATENCY", "DOCTOR"]);
        assert_eq!(text, LATENCY_OFF);
    }
    let theirs: Vec<String> = q(&mut rc, &["LATENCY", "HELP"]);
    let ours: Vec<String> = q(&mut sc, &["LATENCY", "HELP"]);
    assert_eq!(ours, theirs);
    assert_eq!(
        ours[1..5],
        [
            "DOCTOR",
            "    Return a human readable latency analysis report.",
            "GRAPH <event>",
            "    Return an ASCII latency graph for the <event> class."
        ]
    );
    let (mut r, mut rr) = (
        shoal.raw(),
        Raw::connect(&format!("127.0.0.1:{}", redis.port)),
    );
    assert_eq!(
        r.call(&["LATENCY", "GRAPH", "command"]),
        "-ERR No samples available for event 'command'\r\n"
    );
    for args in [
        &["LATENCY", "GRAPH", "command"][..],
        &["LATENCY", "GRAPH"],
        &["LATENCY", "GRAPH", "command", "extra"],
        &["LATENCY", "DOCTOR", "extra"],
    ] {
        assert_eq!(r.call(args), rr.call(args), "{args:?}");
    }

    // On, nothing recorded yet.
    for c in [&mut rc, &mut sc] {
        let _: () = q(c, &["CONFIG", "SET", "latency-monitor-threshold", "200"]);
    }
    let theirs: String = q(&mut rc, &["LATENCY", "DOCTOR"]);
    assert_eq!(theirs, NO_SPIKE);
    let ours: String = q(&mut sc, &["LATENCY", "DOCTOR"]);
    assert_eq!(ours, no_spike(thp()));

    // Two spikes: each server's report and graph from its own samples, and the same shape.
    let theirs_h = two_spikes(&mut rc);
    let ours_h = two_spikes(&mut sc);
    let huge_pages = thp();
    let theirs_doctor = text_at_now(&mut rc, &["LATENCY", "DOCTOR"], |now| {
        expected_doctor(&theirs_h, now, false)
    });
    let ours_doctor = text_at_now(&mut sc, &["LATENCY", "DOCTOR"], |now| {
        expected_doctor(&ours_h, now, huge_pages)
    });
    assert_eq!(
        shape(&ours_doctor.replace(THP_ADVICE, "")),
        shape(&theirs_doctor)
    );
    let theirs_graph = text_at_now(&mut rc, &["LATENCY", "GRAPH", "command"], |now| {
        expected_graph(&theirs_h, now)
    });
    let ours_graph = text_at_now(&mut sc, &["LATENCY", "GRAPH", "command"], |now| {
        expected_graph(&ours_h, now)
    });
    assert_eq!(shape(&ours_graph), shape(&theirs_graph));
    // LATEST: the last spike and the worst; RESET names events in any case.
    let latest: Vec<(String, i64, i64, i64)> = q(&mut sc, &["LATENCY", "LATEST"]);
    assert_eq!(
        latest,
        [("command".to_string(), ours_h[1].0, ours_h[1].1, ours_h[1].1)]
    );
    for c in [&mut rc, &mut sc] {
        let n: i64 = q(c, &["LATENCY", "RESET", "COMMAND"]);
        assert_eq!(n, 1);
    }
    assert_eq!(
        r.call(&["LATENCY", "GRAPH", "command"]),
        rr.call(&["LATENCY", "GRAPH", "command"])
    );
    let ours: String = q(&mut sc, &["LATENCY", "DOCTOR"]);
    assert_eq!(ours, no_spike(thp()));
}
