//! The server's log over real processes: `--logfile` and `--log-format json` write one JSON object
//! per line carrying the node id, with the start, role change and full resync events (and their
//! progress lines); the text format carries the node id too; a log file moved away (rotation) is
//! created again by the next line.

mod common;

use common::{Shoal, follow, info_field, q, scratch_dir, wait_until};
use serde_json::Value;

/// Every line of the log file, parsed (a line that is not JSON fails the test).
fn json_lines(path: &std::path::Path) -> Vec<Value> {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    text.lines()
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
