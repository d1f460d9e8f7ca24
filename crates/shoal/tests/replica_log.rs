//! The primary's log names a replica by its address and listening port, as Redis does
//! (`Replica 127.0.0.1:6380 asks for synchronization`), so two replicas on one host can be told
//! apart.

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::Instant;

use common::{Shoal, WAIT_MAX, q, scratch_dir};

#[test]
fn the_primary_logs_the_replica_address_with_its_port() {
    let dir = scratch_dir("replica-log");
    let mut primary = Command::new(env!("CARGO_BIN_EXE_shoal"))
        .args([
            "serve",
            "--port",
            "0",
            "--bind",
            "127.0.0.1",
            "--loglevel",
            "notice",
        ])
        .current_dir(&dir)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn shoal");
    let mut first = String::new();
    BufReader::new(primary.stdout.take().expect("stdout"))
        .read_line(&mut first)
        .expect("listening line");
    let port: u16 = first
        .trim()
        .rsplit(':')
        .next()
        .and_then(|p| p.parse().ok())
        .expect("port on the first line");
    let (tx, rx) = mpsc::channel();
    let stderr = primary.stderr.take().expect("stderr");
    let reader = std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines() {
            let Ok(line) = line else { return };
            if tx.send(line).is_err() {
                return;
            }
        }
    });
    let replica = Shoal::start(&[]);
    let mut r = replica.client();
    let _: () = q(&mut r, &["REPLICAOF", "127.0.0.1", &port.to_string()]);
    let wanted = format!(
        "Replica 127.0.0.1:{} asks for synchronization",
        replica.port
    );
    let deadline = Instant::now() + WAIT_MAX;
    let mut seen = Vec::new();
    let found = loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match rx.recv_timeout(left) {
            Ok(line) if line.contains(&wanted) => break true,
            Ok(line) => seen.push(line),
            Err(_) => break false,
        }
    };
    let _ = primary.kill();
    let _ = primary.wait();
    drop(rx);
    let _ = reader.join();
    let _ = std::fs::remove_dir_all(&dir);
    assert!(found, "no {wanted:?} in the primary's log: {seen:?}");
}
