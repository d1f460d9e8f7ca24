//! Two shoal nodes in one process, one a replica of the other: proves no state is process-wide
//! (keyspace recording, the write log, the lazy-free thread, the clock, replication state). Each
//! node is a `Server` bound on port 0 and run on its own thread; both are stopped with
//! `SHUTDOWN NOSAVE` and their threads joined within a bound, pass or fail.

use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use shoal_commands::config::Config;
use shoal_server::Server;
use shoal_server::tool_client::{Client, Reply};

/// Upper bound for any single wait.
const WAIT_MAX: Duration = Duration::from_secs(10);

fn no_memory() -> usize {
    0
}

/// A node running on its own thread; shut down (and joined, bounded) when dropped.
struct Node {
    addr: String,
    dir: std::path::PathBuf,
    thread: Option<JoinHandle<Result<(), String>>>,
}

impl Node {
    fn start(tag: &str) -> Node {
        let dir = std::env::temp_dir().join(format!(
            "shoal-two-nodes-{tag}-{}-{}",
            std::process::id(),
            Instant::now().elapsed().as_nanos()
        ));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let mut config = Config::default();
        for (name, value) in [
            ("port", "0"),
            ("bind", "127.0.0.1"),
            ("threads", "2"),
            ("dir", dir.to_str().expect("utf-8 temp dir")),
        ] {
            config.set_initial(name, value).expect("config");
        }
        let server =
            Server::bind(config, shoal_server::Allocator::counting(no_memory)).expect("bind");
        let addr = server.addr.to_string();
        let thread = std::thread::Builder::new()
            .name(format!("node-{tag}"))
            .spawn(move || server.run())
            .expect("spawn node thread");
        Node {
            addr,
            dir,
            thread: Some(thread),
        }
    }

    fn client(&self) -> Client {
        Client::connect(&self.addr, WAIT_MAX).expect("connect")
    }

    /// Sends `SHUTDOWN NOSAVE` and waits (bounded) for the node's thread to end.
    fn stop(&mut self) -> Result<(), String> {
        let Some(thread) = self.thread.take() else {
            return Ok(());
        };
        if let Ok(mut c) = Client::connect(&self.addr, WAIT_MAX) {
            // No reply: the connection closes as the node stops.
            let _ = c.cmd(&["SHUTDOWN", "NOSAVE"]);
        }
        let deadline = Instant::now() + WAIT_MAX;
        while !thread.is_finished() {
            if Instant::now() > deadline {
                return Err(format!(
                    "node {} did not stop within {WAIT_MAX:?}",
                    self.addr
                ));
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        thread
            .join()
            .map_err(|_| format!("node {} panicked", self.addr))?
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        // On a failed test, still stop the node; a node that will not stop leaves its thread
        // behind and the test process ends anyway.
        let _ = self.stop();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn call(c: &mut Client, args: &[&str]) -> Reply {
    let r = c
        .cmd(args)
        .unwrap_or_else(|e| panic!("{args:?} on {}: {e}", c.addr));
    if let Reply::Error(e) = &r {
        panic!("{args:?} on {}: -{e}", c.addr);
    }
    r
}

fn info_field(c: &mut Client, section: &str, name: &str) -> String {
    let r = call(c, &["INFO", section]);
    let text = String::from_utf8_lossy(r.as_bytes().expect("INFO text")).into_owned();
    text.lines()
        .find_map(|l| l.strip_prefix(&format!("{name}:")))
        .map(|v| v.trim().to_string())
        .unwrap_or_else(|| panic!("INFO {section} has no {name}: {text}"))
}

fn wait_until(what: &str, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + WAIT_MAX;
    while Instant::now() < deadline {
        if f() {
            return;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    panic!("timed out waiting for: {what}");
}

fn digests(c: &mut Client) -> Reply {
    call(c, &["SLOTDIGEST", "0", "16383"])
}

#[test]
fn two_nodes_in_one_process_replicate_without_sharing_state() {
    let mut primary = Node::start("primary");
    let mut replica = Node::start("replica");
    assert_ne!(primary.addr, replica.addr);
    let mut p = primary.client();
    let mut r = replica.client();
    // Written before the replica attaches (full copy) and after (stream).
    for i in 0..200 {
        call(&mut p, &["SET", &format!("before:{i}"), &format!("v{i}")]);
    }
    let port = primary.addr.rsplit(':').next().unwrap().to_string();
    assert!(call(&mut r, &["REPLICAOF", "127.0.0.1", &port]).is_ok());
    wait_until("replica link up", || {
        info_field(&mut r, "replication", "master_link_status") == "up"
    });
    for i in 0..300 {
        call(&mut p, &["SET", &format!("after:{i}"), &format!("w{i}")]);
    }
    call(&mut p, &["HSET", "h", "a", "1", "b", "2"]);
    call(&mut p, &["EXPIRE", "after:0", "100000"]);
    call(&mut p, &["DEL", "before:0"]);
    let target: u64 = info_field(&mut p, "replication", "master_repl_offset")
        .parse()
        .unwrap();
    wait_until("replica caught up", || {
        info_field(&mut r, "replication", "slave_repl_offset")
            .parse::<u64>()
            .unwrap()
            >= target
    });
    assert_eq!(call(&mut r, &["DBSIZE"]).as_int(), Some(500));
    assert_eq!(
        call(&mut r, &["GET", "after:299"]).as_bytes(),
        Some(&b"w299"[..])
    );
    assert_eq!(digests(&mut p), digests(&mut r), "slot digests differ");
    // The nodes are separate: the primary is not a replica, and the replica refuses writes.
    assert_eq!(info_field(&mut p, "replication", "role"), "master");
    assert_eq!(info_field(&mut p, "replication", "connected_slaves"), "1");
    assert_eq!(info_field(&mut r, "replication", "role"), "slave");
    assert!(matches!(r.cmd(&["SET", "x", "y"]), Ok(Reply::Error(e)) if e.starts_with("READONLY")));
    drop((p, r));
    replica.stop().expect("replica stops");
    primary.stop().expect("primary stops");
}
