//! Progress of long work over real processes: loading a big snapshot at start-up writes progress
//! log lines with the bytes done, the total, the rate and the time left; `shoal verify` (stderr
//! not a terminal) writes plain progress lines with counts, rate and time left. Lines come at
//! each tenth of the work as well as every second, so these bounded runs show them without
//! waiting.

mod common;

use common::{Shoal, caught_up, follow, q, scratch_dir};
use serde_json::Value;

const KEYS: usize = 200_000;

#[test]
fn loading_a_big_snapshot_logs_progress_with_rate_and_time_left() {
    let dir = scratch_dir("progress-load");
    let data = dir.join("data");
    std::fs::create_dir_all(&data).unwrap();
    let data_s = data.to_str().unwrap();
    {
        let s = Shoal::start(&["--dir", data_s]);
        let mut c = s.client();
        for batch in 0..KEYS / 10_000 {
            let mut pipe = redis::pipe();
            for i in batch * 10_000..(batch + 1) * 10_000 {
                pipe.set(format!("key:{i}"), "some value").ignore();
            }
            let _: () = pipe.query(&mut c).unwrap();
        }
        let _: () = q(&mut c, &["SAVE"]);
    }
    let log = dir.join("shoal.log");
    // `--set` first: the redis-style `--NAME VALUE` options take every word after them.
    let s = Shoal::start(&[
        "--set",
        "loglevel=notice",
        "--dir",
        data_s,
        "--logfile",
        log.to_str().unwrap(),
        "--log-format",
        "json",
    ]);
    let n: usize = q(&mut s.client(), &["DBSIZE"]);
    assert_eq!(n, KEYS);
    let lines: Vec<Value> = std::fs::read_to_string(&log)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let progress: Vec<&Value> = lines
        .iter()
        .filter(|l| l["message"] == "loading the snapshot: progress")
        .map(|l| &l["fields"])
        .collect();
    let size = std::fs::metadata(data.join("dump.shoal")).unwrap().len();
    assert!(progress.len() >= 5, "{lines:#?}");
    let mut last = 0;
    for f in &progress {
        assert_eq!(f["total"], size, "{f}");
        assert_eq!(f["unit"], "bytes");
        let done = f["done"].as_u64().unwrap();
        assert!(done > last && done <= size, "{f}");
        last = done;
        assert!(f["rate_per_s"].as_u64().unwrap() > 0, "{f}");
        assert!(f["eta_s"].is_number(), "{f}");
        assert!(f["keys"].as_u64().unwrap() > 0, "{f}");
    }
    let done = lines
        .iter()
        .find(|l| l["message"] == "loading the snapshot: done")
        .expect("a done line");
    assert_eq!(done["fields"]["keys"], KEYS);
    assert!(done["fields"]["keys_per_s"].as_u64().unwrap() > 0);
    drop(s);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn verify_shows_counts_rate_and_time_left() {
    let p = Shoal::start(&[]);
    let r = Shoal::start(&[]);
    let mut c = p.client();
    let mut pipe = redis::pipe();
    for i in 0..2000 {
        pipe.set(format!("k{i}"), i).ignore();
    }
    let _: () = pipe.query(&mut c).unwrap();
    follow(&r, &p);
    caught_up(&r, &p);
    // A few hundred keys diverge on the replica, in as many slots.
    let mut rc = r.client();
    let _: () = q(&mut rc, &["CONFIG", "SET", "replica-read-only", "no"]);
    let mut pipe = redis::pipe();
    for i in 0..300 {
        pipe.set(format!("k{i}"), "diverged").ignore();
    }
    let _: () = pipe.query(&mut rc).unwrap();
    let differing: usize = {
        let digests =
            |s: &Shoal| -> Vec<String> { q(&mut s.client(), &["SLOTDIGEST", "0", "16383"]) };
        let (a, b) = (digests(&p), digests(&r));
        a.iter().zip(&b).filter(|(x, y)| x != y).count()
    };
    assert!(differing >= 250, "{differing}");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_shoal"))
        .args(["verify", &p.addr()])
        .output()
        .unwrap();
    let (stdout, stderr) = (
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
    );
    assert_eq!(out.status.code(), Some(1), "{stdout}{stderr}");
    assert!(stdout.contains("300 differing key(s)"), "{stdout}");
    let what = format!(
        "{}: checking the {differing} of 16384 slots that differ",
        r.addr()
    );
    let lines: Vec<&str> = stderr
        .lines()
        .filter(|l| l.starts_with(&format!("{what}: ")))
        .collect();
    // One line per tenth at least (nine: the end has its own line), each with count, rate, ETA.
    let progress: Vec<&&str> = lines.iter().filter(|l| l.contains("/s, eta ")).collect();
    assert!(progress.len() >= 9, "{stderr}");
    for l in &progress {
        assert!(l.contains(&format!("/{differing} ")), "{l}");
    }
    assert!(
        lines
            .iter()
            .any(|l| l.contains("slot(s) checked, 300 differing key(s)")),
        "{stderr}"
    );
}
