//! redis-cli's tools against shoal with known data, their figures checked: `--bigkeys` names the
//! biggest key of each type with its size and sums every type, `--memkeys` agrees with MEMORY
//! USAGE, `--stat` shows the key count, clients and a request count that moves by what was sent,
//! `--latency` and `--latency-history` count the PINGs the server really answered. Every run is
//! bounded: one-shot tools by a deadline, the endless ones killed after a few lines.

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Output, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use common::{Shoal, WAIT_MAX, info_u64, q};

/// Runs a redis-cli that ends by itself, killing it if it outlives the deadline.
fn run_bounded(mut cmd: Command) -> Output {
    let mut child = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("redis-cli (apt-get install redis-tools)");
    let deadline = Instant::now() + 3 * WAIT_MAX;
    loop {
        if child.try_wait().expect("wait").is_some() {
            return child.wait_with_output().expect("output");
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let out = child.wait_with_output().expect("output");
            panic!("redis-cli did not finish: {out:?}");
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// An endless redis-cli mode (line-buffered through `stdbuf`, since its stdout is a pipe): the
/// first `n` lines, then the process is killed.
fn first_lines(port: u16, args: &[&str], n: usize, mut between: impl FnMut()) -> Vec<String> {
    let mut child: Child = Command::new("stdbuf")
        .args(["-oL", "redis-cli", "-p", &port.to_string()])
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("stdbuf and redis-cli");
    let stdout = child.stdout.take().expect("stdout");
    let (tx, rx) = mpsc::channel();
    let reader = std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { return };
            if tx.send(line).is_err() {
                return;
            }
        }
    });
    let deadline = Instant::now() + 3 * WAIT_MAX;
    let mut lines = Vec::new();
    while lines.len() < n {
        let left = deadline.saturating_duration_since(Instant::now());
        match rx.recv_timeout(left.min(Duration::from_millis(50))) {
            Ok(line) => lines.push(line),
            Err(mpsc::RecvTimeoutError::Timeout) if Instant::now() < deadline => between(),
            Err(e) => {
                let _ = child.kill();
                let _ = child.wait();
                panic!("redis-cli {args:?}: {e:?} after {lines:?}");
            }
        }
    }
    let _ = child.kill();
    let _ = child.wait();
    let _ = reader.join();
    lines
}

fn cli(port: u16) -> Command {
    let mut c = Command::new("redis-cli");
    c.args(["-p", &port.to_string()]);
    c
}

/// Known data: strings of 10..=500 bytes, lists, hashes, sets and sorted sets of known sizes.
fn load(c: &mut redis::Connection) {
    for i in 1..=50 {
        let _: () = q(c, &["SET", &format!("s{i}"), &"x".repeat(i * 10)]);
    }
    let _: i64 = q(c, &["RPUSH", "list:big", "a", "b", "c", "d", "e", "f", "g"]);
    let _: i64 = q(c, &["RPUSH", "list:small", "a", "b"]);
    let _: i64 = q(c, &["HSET", "hash:big", "f1", "v", "f2", "v", "f3", "v"]);
    let _: i64 = q(c, &["HSET", "hash:small", "f1", "v"]);
    let _: i64 = q(c, &["SADD", "set:big", "1", "2", "3", "4", "5", "6"]);
    let _: i64 = q(c, &["SADD", "set:small", "1"]);
    let _: i64 = q(
        c,
        &["ZADD", "zset:big", "1", "a", "2", "b", "3", "c", "4", "d"],
    );
    let _: i64 = q(c, &["ZADD", "zset:small", "1", "a"]);
}

/// The `Biggest <type> found '"<key>"' has <n> <unit>` lines of the summary.
fn biggest(text: &str) -> Vec<(String, String, u64)> {
    text.lines()
        .filter_map(|l| l.strip_prefix("Biggest"))
        .filter(|l| l.contains(" found '\""))
        .map(|l| {
            let l = l.trim_start();
            let (ty, rest) = l.split_once(" found '\"").expect("type");
            let (key, rest) = rest.split_once("\"' has ").expect("key");
            let n = rest.split_whitespace().next().expect("size");
            (ty.to_string(), key.to_string(), n.parse().expect("number"))
        })
        .collect()
}

/// The `<n> <type>s with <total> <unit>` lines of the summary, by type.
fn totals(text: &str) -> Vec<(String, u64, u64)> {
    text.lines()
        .filter(|l| l.contains(" with ") && l.contains("% of keys"))
        .map(|l| {
            let w: Vec<&str> = l.split_whitespace().collect();
            (
                w[1].trim_end_matches('s').to_string(),
                w[0].parse().expect("count"),
                w[3].parse().expect("total"),
            )
        })
        .collect()
}

#[test]
fn bigkeys_names_the_biggest_key_of_each_type_with_its_size() {
    let s = Shoal::start(&[]);
    let mut c = s.client();
    load(&mut c);
    let out = run_bounded({
        let mut cmd = cli(s.port);
        cmd.arg("--bigkeys");
        cmd
    });
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}");
    assert!(text.contains("Sampled 58 keys in the keyspace!"), "{text}");
    let mut b = biggest(&text);
    b.sort();
    assert_eq!(
        b,
        vec![
            ("hash".into(), "hash:big".into(), 3),
            ("list".into(), "list:big".into(), 7),
            ("set".into(), "set:big".into(), 6),
            ("string".into(), "s50".into(), 500),
            ("zset".into(), "zset:big".into(), 4),
        ]
    );
    let mut t = totals(&text);
    t.sort();
    let string_bytes: u64 = (1..=50).map(|i| i * 10).sum();
    assert_eq!(
        t,
        vec![
            ("hash".into(), 2, 4),
            ("list".into(), 2, 9),
            ("set".into(), 2, 7),
            ("stream".into(), 0, 0),
            ("string".into(), 50, string_bytes),
            ("zset".into(), 2, 5),
        ]
    );
}

#[test]
fn memkeys_agrees_with_memory_usage() {
    let s = Shoal::start(&[]);
    let mut c = s.client();
    load(&mut c);
    let out = run_bounded({
        let mut cmd = cli(s.port);
        cmd.arg("--memkeys");
        cmd
    });
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}");
    // What MEMORY USAGE says of every key, by type.
    let keys: Vec<String> = q(&mut c, &["KEYS", "*"]);
    let mut by_type: std::collections::BTreeMap<String, Vec<(u64, String)>> = Default::default();
    for k in &keys {
        let ty: String = q(&mut c, &["TYPE", k]);
        let n: u64 = q(&mut c, &["MEMORY", "USAGE", k, "SAMPLES", "0"]);
        by_type.entry(ty).or_default().push((n, k.clone()));
    }
    let mut b = biggest(&text);
    b.sort();
    let expected: Vec<(String, String, u64)> = by_type
        .iter()
        .map(|(ty, v)| {
            let (n, k) = v.iter().max().expect("a key");
            (ty.clone(), k.clone(), *n)
        })
        .collect();
    assert_eq!(b, expected);
    for (ty, count, total) in totals(&text) {
        let v = by_type.get(&ty).cloned().unwrap_or_default();
        assert_eq!(count, v.len() as u64, "{ty}");
        assert_eq!(total, v.iter().map(|(n, _)| n).sum::<u64>(), "{ty}");
    }
    // A string's usage grows with its value.
    let small: u64 = q(&mut c, &["MEMORY", "USAGE", "s1"]);
    let large: u64 = q(&mut c, &["MEMORY", "USAGE", "s50"]);
    assert!(large >= small + 490, "{small} {large}");
}

#[test]
fn stat_shows_keys_clients_and_moving_requests() {
    let s = Shoal::start(&[]);
    let mut c = s.client();
    load(&mut c);
    let mut sent = 0u64;
    // Header lines, then one line per 0.1 s; commands are sent between lines.
    let lines = first_lines(s.port, &["--stat", "-i", "0.1"], 8, || {
        for _ in 0..5 {
            let _: String = q(&mut c, &["PING"]);
        }
        sent += 5;
    });
    assert!(lines[0].starts_with("------- data ------"), "{lines:?}");
    assert!(lines[1].starts_with("keys"), "{lines:?}");
    let rows: Vec<Vec<String>> = lines[2..]
        .iter()
        .map(|l| l.split_whitespace().map(String::from).collect())
        .collect();
    let mut last: Option<u64> = None;
    for r in &rows {
        assert_eq!(r[0], "58", "keys: {r:?}");
        assert!(r[1].ends_with('K') || r[1].ends_with('M'), "mem: {r:?}");
        assert_eq!(r[2], "2", "clients: this test's and redis-cli's: {r:?}");
        assert_eq!(r[3], "0", "blocked: {r:?}");
        let requests: u64 = r[4].parse().expect("requests");
        let delta: u64 = r[5]
            .trim_start_matches("(+")
            .trim_end_matches(')')
            .parse()
            .expect("(+delta)");
        if let Some(prev) = last {
            assert_eq!(delta, requests - prev, "{r:?}");
        }
        last = Some(requests);
    }
    // The requests column ends where the server's counter was, give or take the INFO calls.
    let first: u64 = rows[0][4].parse().unwrap();
    let end = last.unwrap();
    assert!(end > first, "requests moved: {rows:?}");
    let processed = info_u64(&mut c, "stats", "total_commands_processed");
    assert!(processed >= end, "{processed} {end}");
}

#[test]
fn latency_counts_the_pings_the_server_answered() {
    let s = Shoal::start(&[]);
    let mut c = s.client();
    let before = info_u64(&mut c, "stats", "total_commands_processed");
    let out = run_bounded({
        let mut cmd = cli(s.port);
        cmd.args(["--latency", "--raw", "-i", "0.5"]);
        cmd
    });
    let text = String::from_utf8_lossy(&out.stdout).trim().to_string();
    let f: Vec<f64> = text
        .split_whitespace()
        .map(|v| v.parse().expect("number"))
        .collect();
    let [min, max, avg, count] = f[..] else {
        panic!("min max avg count: {text}")
    };
    assert!(min <= avg && avg <= max, "{text}");
    assert!(max < 1000.0, "{text}");
    // One PING per 10 ms sample for half a second.
    assert!((20.0..=60.0).contains(&count), "{text}");
    let after = info_u64(&mut c, "stats", "total_commands_processed");
    // The server answered every sample's PING (and the INFO before and redis-cli's handshake).
    assert!(after - before >= count as u64, "{before} {after} {text}");
    assert!(
        after - before <= count as u64 + 3,
        "{before} {after} {text}"
    );
}

#[test]
fn latency_history_starts_a_new_history_every_interval() {
    let s = Shoal::start(&[]);
    // Without a terminal, each sample prints the running `min max avg count` of its interval.
    let lines = first_lines(s.port, &["--latency-history", "-i", "1"], 140, || {});
    let mut counts = Vec::new();
    let mut ranges = 0;
    for l in &lines {
        // The end of an interval: ` -- 1.00 seconds range`.
        if l.contains("seconds range") {
            ranges += 1;
            assert_eq!(
                counts.iter().filter(|&&n| n == 1).count(),
                ranges,
                "{lines:?}"
            );
            continue;
        }
        let f: Vec<f64> = l
            .split_whitespace()
            .map(|v| v.parse().expect("number"))
            .collect();
        let [min, max, avg, count] = f[..] else {
            panic!("min max avg count: {l}")
        };
        assert!(min <= avg && avg <= max && max < 1000.0, "{l}");
        counts.push(count as u64);
    }
    assert_eq!(counts[0], 1);
    let restart = counts
        .iter()
        .skip(1)
        .position(|&n| n == 1)
        .expect("a second interval began")
        + 1;
    // About one sample per 10 ms over the one-second interval, each counted once.
    assert!((50..=110).contains(&counts[restart - 1]), "{counts:?}");
    for (i, w) in counts.windows(2).enumerate() {
        assert!(w[1] == w[0] + 1 || i + 1 == restart, "{counts:?}");
    }
}
