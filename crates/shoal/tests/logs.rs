//! The server's log over real processes: `--logfile` and `--log-format json` write one JSON object
//! per line carrying the node id, with the start, role change and full resync events (and their
//! progress lines); the text format carries the node id too; a log file moved away (rotation) is
//! created again by the next line.

mod common;

use common::{Shoal, follow, info_field, q, scratch_dir, wait_until};
use serde_json::Value;

/// Every complete line of the log file, parsed (a line that is not JSON fails the test; the
/// last one may still be being written while the file is read, and waits for its newline).
fn json_lines(path: &std::path::Path) -> Vec<Value> {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    text.split_inclusive('\n')
        .filter_map(|l| l.strip_suffix('\n'))
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l:?}")))
        .collect()
}

fn with_message<'a>(lines: &'a [Value], message: &str) -> Option<&'a Value> {
    lines.iter().find(|l| l["message"] == message)
}

#[test]
fn json_log_lines_carry_the_node_id_and_the_start_and_sync_events() {
    let dir = scratch_dir("logs");
    let (plog, rlog) = (dir.join("primary.log"), dir.join("replica.log"));
    let start = |log: &std::path::Path| {
        Shoal::start(&[
            "--set",
            "loglevel=notice",
            "--logfile",
            log.to_str().unwrap(),
            "--log-format",
            "json",
        ])
    };
    let p = start(&plog);
    let r = start(&rlog);
    let mut c = p.client();
    let mut pipe = redis::pipe();
    for i in 0..5000 {
        pipe.set(format!("k{i}"), i).ignore();
    }
    let _: () = pipe.query(&mut c).unwrap();
    follow(&r, &p);
    wait_until("the replica logged the end of its full resync", || {
        with_message(&json_lines(&rlog), "full resync from the primary: done").is_some()
    });
    wait_until("the replica logged its role change", || {
        with_message(&json_lines(&rlog), "role change").is_some()
    });
    wait_until("the primary logged the end of the copy it sent", || {
        with_message(&json_lines(&plog), "full resync to a replica: done").is_some()
    });

    for (s, log) in [(&p, &plog), (&r, &rlog)] {
        let id = info_field(&mut s.client(), "server", "run_id").unwrap();
        let lines = json_lines(log);
        assert!(!lines.is_empty());
        for l in &lines {
            assert_eq!(l["node_id"], id.as_str(), "{l}");
            assert!(
                l["timestamp"].as_str().is_some_and(|t| t.ends_with('Z')),
                "{l}"
            );
            assert!(l["level"].is_string() && l["message"].is_string(), "{l}");
        }
        let started = with_message(&lines, "ready to accept connections").expect("a start line");
        let f = &started["fields"];
        assert_eq!(f["mode"], "standalone");
        assert_eq!(f["addr"], format!("127.0.0.1:{}", s.port).as_str());
        assert_eq!(f["version"], env!("CARGO_PKG_VERSION"));
    }
    let rl = json_lines(&rlog);
    let role = &with_message(&rl, "role change").unwrap()["fields"];
    assert_eq!(role["from"], "primary");
    assert_eq!(
        role["to"],
        format!("replica of 127.0.0.1:{}", p.port).as_str()
    );
    let begun = &with_message(&rl, "full resync from the primary: started").unwrap()["fields"];
    assert_eq!(begun["total"], 5000);
    let done = &with_message(&rl, "full resync from the primary: done").unwrap()["fields"];
    assert_eq!(done["keys"], 5000);
    assert!(done["bytes"].as_u64().unwrap() > 5000 * 4, "{done}");
    let pl = json_lines(&plog);
    let sent = &with_message(&pl, "full resync to a replica: done").unwrap()["fields"];
    assert_eq!(sent["keys"], 5000);

    // Log rotation: the file is moved away; the next line makes a new one.
    let rotated = dir.join("replica.log.1");
    std::fs::rename(&rlog, &rotated).unwrap();
    let _: () = q(&mut r.client(), &["REPLICAOF", "NO", "ONE"]);
    wait_until("a new log file with the role change back", || {
        json_lines(&rlog)
            .iter()
            .any(|l| l["message"] == "role change" && l["fields"]["to"] == "primary")
    });
    drop((p, r));
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn text_log_lines_carry_the_node_id() {
    let dir = scratch_dir("logs-text");
    let log = dir.join("shoal.log");
    let s = Shoal::start(&[
        "--set",
        "loglevel=notice",
        "--logfile",
        log.to_str().unwrap(),
    ]);
    let id = info_field(&mut s.client(), "server", "run_id").unwrap();
    wait_until("the start line", || {
        std::fs::read_to_string(&log).is_ok_and(|t| t.contains("ready to accept connections"))
    });
    let text = std::fs::read_to_string(&log).unwrap();
    for line in text.lines() {
        assert!(line.contains(&format!(" node={id} ")), "{line}");
    }
    // CONFIG SET loglevel takes effect while the server runs, as in Redis.
    let mut c = s.client();
    let _: () = q(&mut c, &["CONFIG", "SET", "loglevel", "warning"]);
    wait_until("the warning level applies", || {
        let _: () = q(&mut c, &["SAVE"]);
        let before = std::fs::read_to_string(&log).unwrap();
        let _: () = q(&mut c, &["SAVE"]);
        std::fs::read_to_string(&log).unwrap() == before
    });
    let quiet = std::fs::read_to_string(&log).unwrap();
    let _: () = q(&mut c, &["CONFIG", "SET", "loglevel", "notice"]);
    wait_until("the notice level applies again", || {
        let _: () = q(&mut c, &["SAVE"]);
        std::fs::read_to_string(&log).unwrap()[quiet.len()..].contains("DB saved on disk")
    });
    drop(s);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_log_file_that_cannot_be_created_stops_the_start() {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_shoal"))
        .args([
            "serve",
            "--port",
            "0",
            "--logfile",
            "/nonexistent-dir/shoal.log",
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("Can't open the log file /nonexistent-dir/shoal.log"),
        "{err}"
    );
}

/// The first word of `CLUSTER MYID`.
fn my_id(s: &Shoal) -> String {
    let id: String = q(&mut s.client(), &["CLUSTER", "MYID"]);
    id
}

#[test]
fn cluster_nodes_log_the_epoch_and_the_tools_show_their_progress() {
    let dir = scratch_dir("logs-cluster");
    let logs: Vec<std::path::PathBuf> = (0..3).map(|i| dir.join(format!("n{i}.log"))).collect();
    let nodes: Vec<Shoal> = logs
        .iter()
        .map(|log| {
            Shoal::start(&[
                "--set",
                "loglevel=notice",
                "--cluster-enabled",
                "yes",
                "--logfile",
                log.to_str().unwrap(),
                "--log-format",
                "json",
            ])
        })
        .collect();
    let tool = |args: &[&str]| {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_shoal"))
            .arg("cluster")
            .args(args)
            .stdin(std::process::Stdio::null())
            .output()
            .unwrap();
        let (o, e) = (
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        );
        assert!(out.status.success(), "{o}{e}");
        e
    };
    let addrs: Vec<String> = nodes.iter().map(Shoal::addr).collect();
    let mut args = vec!["create"];
    args.extend(addrs.iter().map(String::as_str));
    let err = tool(&args);
    // Not a terminal: the step's start, its progress with counts, and its end with the time.
    assert!(
        err.contains(">>> Waiting for every node to agree ..."),
        "{err}"
    );
    assert!(
        err.lines()
            .any(|l| l.starts_with(">>> Waiting for every node to agree: ")
                && l.contains("s, ")
                && l.ends_with("/s)")),
        "{err}"
    );

    // Keys on the first node's slots, then 500 of them moved to the second.
    let client = common::cluster_client(vec![nodes[0].url()]).unwrap();
    let mut c = client.get_connection().unwrap();
    for i in 0..3000 {
        let _: () = redis::cmd("SET")
            .arg(format!("k{i}"))
            .arg(i)
            .query(&mut c)
            .unwrap();
    }
    let (from, to) = (my_id(&nodes[0]), my_id(&nodes[1]));
    let err = tool(&[
        "reshard", &addrs[0], "--from", &from, "--to", &to, "--slots", "500", "--yes",
    ]);
    assert!(
        err.lines().any(
            |l| l.starts_with(">>> Moving 500 slots in 1 job(s): 500 slots moved (")
                && l.ends_with("/s)")
        ),
        "{err}"
    );
    wait_until("the source logged the end of the move", || {
        json_lines(&logs[0])
            .iter()
            .any(|l| l["message"] == "slot migration done: slots moved")
    });

    for (n, log) in nodes.iter().zip(&logs) {
        let id = my_id(n);
        let lines = json_lines(log);
        for l in &lines {
            assert_eq!(l["node_id"], id.as_str(), "{l}");
        }
        // Once the node installed a configuration, its lines carry the cluster's epoch.
        let epochs: Vec<u64> = lines.iter().filter_map(|l| l["epoch"].as_u64()).collect();
        assert!(!epochs.is_empty(), "{lines:#?}");
        assert!(epochs.windows(2).all(|w| w[0] <= w[1]), "{epochs:?}");
        let started = with_message(&lines, "ready to accept connections").unwrap();
        assert_eq!(started["fields"]["mode"], "cluster");
    }
    let l0 = json_lines(&logs[0]);
    let moved = with_message(&l0, "slot migration started").expect("a start line");
    assert_eq!(moved["fields"]["slots"], "0-499");
    // Forming the cluster fenced nobody: a primary waiting for its first lease is not news.
    assert!(!l0.iter().any(|l| {
        l["message"]
            .as_str()
            .is_some_and(|m| m.starts_with("fenced"))
    }));

    // Cut off from the configuration group (the other two stopped), the first node's lease
    // lapses: fenced; they come back: unfenced.
    let starts_with = |log: &std::path::Path, prefix: &str| {
        json_lines(log)
            .iter()
            .any(|l| l["message"].as_str().is_some_and(|m| m.starts_with(prefix)))
    };
    nodes[1].signal("-STOP");
    nodes[2].signal("-STOP");
    wait_until("the cut-off primary logs its fencing", || {
        starts_with(&logs[0], "fenced:")
    });
    nodes[1].signal("-CONT");
    nodes[2].signal("-CONT");
    wait_until("and its lease coming back", || {
        starts_with(&logs[0], "unfenced:")
    });
    drop(nodes);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn eviction_pressure_is_logged_with_the_count() {
    let dir = scratch_dir("logs-evict");
    let log = dir.join("shoal.log");
    let s = Shoal::start(&[
        "--set",
        "loglevel=notice",
        "--maxmemory",
        "4mb",
        "--logfile",
        log.to_str().unwrap(),
        "--log-format",
        "json",
    ]);
    let mut c = s.client();
    let value = "v".repeat(1000);
    for batch in 0..12 {
        let mut pipe = redis::pipe();
        for i in 0..1000 {
            pipe.set(format!("k{batch}:{i}"), &value).ignore();
        }
        let _: () = pipe.query(&mut c).unwrap();
    }
    let evicted = common::info_u64(&mut c, "stats", "evicted_keys");
    assert!(evicted > 0);
    wait_until("an eviction line", || {
        json_lines(&log)
            .iter()
            .any(|l| l["message"] == "evicting keys to stay under maxmemory")
    });
    let lines = json_lines(&log);
    let f = &with_message(&lines, "evicting keys to stay under maxmemory").unwrap()["fields"];
    assert!(f["evicted"].as_u64().unwrap() > 0, "{f}");
    assert_eq!(f["maxmemory"], 4 << 20);
    assert_eq!(f["policy"], "allkeys-tinylfu");
    // One line per burst, not one per key.
    let n = lines
        .iter()
        .filter(|l| l["message"] == "evicting keys to stay under maxmemory")
        .count();
    assert!(n <= 2, "{n} eviction lines");
    drop(s);
    let _ = std::fs::remove_dir_all(&dir);
}
