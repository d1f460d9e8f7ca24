//! The append-only effect log and warm restarts, at the wire with real processes: kill -9 under
//! `appendfsync always` keeps every acknowledged write, `everysec` keeps every write older than
//! about a second, a torn or bit-flipped tail is cut (and logged) and the node starts with the
//! good prefix, BGREWRITEAOF and the auto rules bound the log under a churn of overwrites, a
//! corrupt snapshot or manifest stops the start with a message, replicas and primaries restart
//! into partial resyncs, and keys that expired before a restart stay gone.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use common::{Shoal, info_u64, q, scratch_dir, wait_until};

/// A data directory that outlives the servers started on it, removed at the end.
struct Dir(PathBuf);

impl Dir {
    fn new(tag: &str) -> Dir {
        Dir(scratch_dir(tag))
    }
    fn s(&self) -> &str {
        self.0.to_str().unwrap()
    }
    fn aof(&self) -> PathBuf {
        self.0.join("appendonlydir")
    }
    fn log(&self) -> String {
        std::fs::read_to_string(self.0.join("shoal.log")).unwrap_or_default()
    }
}

impl Drop for Dir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A server with the log on in `dir`, logging to `dir`/shoal.log.
fn start(dir: &Dir, fsync: &str, extra: &[&str]) -> Shoal {
    let log = dir.0.join("shoal.log");
    // `--set` must come before the `--NAME VALUE` pairs.
    let mut args = extra.to_vec();
    args.extend_from_slice(&[
        "--dir",
        dir.s(),
        "--appendonly",
        "yes",
        "--appendfsync",
        fsync,
        "--logfile",
        log.to_str().unwrap(),
    ]);
    Shoal::start(&args)
}

fn kill9(s: &mut Shoal) {
    s.signal("-9");
    wait_until("killed", || !s.is_running());
}

/// The last incremental log named by the manifest.
fn last_incr(dir: &Dir) -> PathBuf {
    let m = std::fs::read_to_string(dir.aof().join("appendonly.aof.manifest")).unwrap();
    let name = m
        .lines()
        .rfind(|l| l.ends_with("type i"))
        .and_then(|l| l.split(' ').nth(1))
        .expect("an incremental log")
        .to_string();
    dir.aof().join(name)
}

fn dir_bytes(p: &Path) -> (u64, usize) {
    let mut total = 0;
    let mut n = 0;
    for e in std::fs::read_dir(p).unwrap().flatten() {
        total += e.metadata().map_or(0, |m| m.len());
        n += 1;
    }
    (total, n)
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// One write of every kind to slot `i`, and the check that it is there.
fn write_all_types(c: &mut redis::Connection, i: u64) -> redis::RedisResult<()> {
    let n = i.to_string();
    redis::pipe()
        .atomic()
        .cmd("SET")
        .arg(format!("s:{i}"))
        .arg(&n)
        .ignore()
        .cmd("RPUSH")
        .arg("list")
        .arg(&n)
        .ignore()
        .cmd("HSET")
        .arg("hash")
        .arg(format!("f{i}"))
        .arg(&n)
        .ignore()
        .cmd("SADD")
        .arg("set")
        .arg(&n)
        .ignore()
        .cmd("ZADD")
        .arg("zset")
        .arg(i)
        .arg(format!("m{i}"))
        .ignore()
        .cmd("XADD")
        .arg("stream")
        .arg(format!("{}-1", i + 1))
        .arg("n")
        .arg(&n)
        .ignore()
        .cmd("INCR")
        .arg("counter")
        .ignore()
        .query(c)
}

/// Every write up to `acked` (exclusive) is there; the counter is at least `acked`.
fn check_all_types(c: &mut redis::Connection, acked: u64) {
    let list: Vec<u64> = q(c, &["LRANGE", "list", "0", "-1"]);
    for i in 0..acked {
        let s: Option<String> = q(c, &["GET", &format!("s:{i}")]);
        assert_eq!(s.as_deref(), Some(i.to_string().as_str()), "s:{i}");
        assert_eq!(list.get(i as usize), Some(&i), "list[{i}]");
        let h: Option<String> = q(c, &["HGET", "hash", &format!("f{i}")]);
        assert_eq!(h, Some(i.to_string()), "hash f{i}");
        let m: bool = q(c, &["SISMEMBER", "set", &i.to_string()]);
        assert!(m, "set {i}");
        let z: Option<f64> = q(c, &["ZSCORE", "zset", &format!("m{i}")]);
        assert_eq!(z, Some(i as f64), "zset m{i}");
    }
    let xlen: u64 = q(c, &["XLEN", "stream"]);
    assert!(xlen >= acked, "stream has {xlen} of {acked}");
    let counter: Option<u64> = q(c, &["GET", "counter"]);
    assert!(
        counter.unwrap_or(0) >= acked,
        "counter {counter:?} < {acked}"
    );
}

#[test]
fn kill9_under_always_keeps_every_acknowledged_write_of_every_type() {
    let dir = Dir::new("aof-always");
    let mut s = start(&dir, "always", &[]);
    // A writer acknowledges writes while the server is killed under it.
    let url = s.url();
    let acked = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
    let writer = {
        let acked = acked.clone();
        std::thread::spawn(move || {
            let mut c = common::connect(url);
            for i in 0..5_000u64 {
                if write_all_types(&mut c, i).is_err() {
                    return;
                }
                acked.store(i + 1, std::sync::atomic::Ordering::SeqCst);
            }
        })
    };
    wait_until("some writes acknowledged", || {
        acked.load(std::sync::atomic::Ordering::SeqCst) >= 300
    });
    kill9(&mut s);
    let done = acked.load(std::sync::atomic::Ordering::SeqCst);
    writer.join().unwrap();
    assert!(done < 5_000, "the kill came during the writes");
    let s = start(&dir, "always", &[]);
    let mut c = s.client();
    check_all_types(&mut c, done);
    // The log is usable again: a write after the restart survives another kill.
    let _: () = q(&mut c, &["SET", "after", "restart"]);
    let mut s = s;
    kill9(&mut s);
    let s = start(&dir, "always", &[]);
    let mut c = s.client();
    let v: Option<String> = q(&mut c, &["GET", "after"]);
    assert_eq!(v.as_deref(), Some("restart"));
    check_all_types(&mut c, done);
}

#[test]
fn kill9_under_everysec_loses_at_most_about_a_second() {
    let dir = Dir::new("aof-everysec");
    let mut s = start(&dir, "everysec", &[]);
    let mut c = s.client();
    // Writes for about 2.5 s, each with the time it was acknowledged.
    let t0 = Instant::now();
    let mut acks: Vec<(u64, Duration)> = Vec::new();
    let mut i = 0u64;
    while t0.elapsed() < Duration::from_millis(2500) && i < 200_000 {
        let _: () = q(&mut c, &["SET", &format!("k:{i}"), "v"]);
        acks.push((i, t0.elapsed()));
        i += 1;
    }
    let killed_at = t0.elapsed();
    kill9(&mut s);
    let s = start(&dir, "everysec", &[]);
    let mut c = s.client();
    // What is provable: a write acknowledged over a second (plus slack for the fsync itself)
    // before the kill was fsynced. (kill -9 keeps the page cache, so in fact nothing is lost.)
    let mut lost_recent = 0;
    for (i, at) in &acks {
        let there: bool = q(&mut c, &["EXISTS", &format!("k:{i}")]);
        if killed_at.saturating_sub(*at) > Duration::from_millis(1500) {
            assert!(
                there,
                "k:{i}, acknowledged {at:?} before a kill at {killed_at:?}"
            );
        } else if !there {
            lost_recent += 1;
        }
    }
    eprintln!(
        "everysec: {} writes, {lost_recent} of the last 1.5 s missing after kill -9",
        acks.len()
    );
}

/// Writes k0..k(n-1) one by one (each acknowledged after its fsync), then kills the server.
fn write_then_kill(dir: &Dir, n: u64) {
    let mut s = start(dir, "always", &[]);
    let mut c = s.client();
    for i in 0..n {
        let _: () = q(&mut c, &["SET", &format!("k{i}"), &"x".repeat(100)]);
    }
    kill9(&mut s);
}

/// The keys present are exactly k0..k(m-1) for some m (a prefix, no holes); returns m.
fn prefix_present(c: &mut redis::Connection, n: u64) -> u64 {
    let mut m = 0;
    while m < n && q::<bool>(c, &["EXISTS", &format!("k{m}")]) {
        m += 1;
    }
    for i in m..n {
        assert!(
            !q::<bool>(c, &["EXISTS", &format!("k{i}")]),
            "k{i} is there after a hole at k{m}"
        );
    }
    m
}

#[test]
fn a_truncated_tail_is_cut_at_the_last_good_record_and_logged() {
    let dir = Dir::new("aof-torn");
    write_then_kill(&dir, 100);
    let incr = last_incr(&dir);
    let len = std::fs::metadata(&incr).unwrap().len();
    let f = std::fs::OpenOptions::new().write(true).open(&incr).unwrap();
    f.set_len(len - 7).unwrap();
    drop(f);
    let s = start(&dir, "always", &[]);
    let mut c = s.client();
    let m = prefix_present(&mut c, 100);
    assert!((90..100).contains(&m), "{m} keys survived the cut");
    let log = dir.log();
    let line = log
        .lines()
        .find(|l| l.contains("cut at the last good record"))
        .unwrap_or_else(|| panic!("no WARN about the cut in:\n{log}"));
    assert!(line.contains("WARN"), "{line}");
    assert!(
        line.contains(incr.file_name().unwrap().to_str().unwrap()),
        "{line}"
    );
    assert!(line.contains("bytes_cut="), "{line}");
    assert!(line.contains("offset="), "{line}");
    let cut: u64 = info_u64(&mut c, "persistence", "aof_enabled");
    assert_eq!(cut, 1);
    // The node goes on writing to a new log, and the cut file loads without a cut next time.
    let _: () = q(&mut c, &["SET", "later", "1"]);
    drop(c);
    drop(s);
    let s = start(&dir, "always", &[]);
    let mut c = s.client();
    assert_eq!(prefix_present(&mut c, 100), m);
    assert!(q::<bool>(&mut c, &["EXISTS", "later"]));
}

#[test]
fn a_bit_flipped_tail_is_cut_and_never_yields_a_wrong_value() {
    let dir = Dir::new("aof-flip");
    write_then_kill(&dir, 100);
    let incr = last_incr(&dir);
    let mut bytes = std::fs::read(&incr).unwrap();
    // Inside the last record (the last write's value).
    let at = bytes.len() - 20;
    bytes[at] ^= 0x04;
    std::fs::write(&incr, &bytes).unwrap();
    let s = start(&dir, "always", &[]);
    let mut c = s.client();
    let m = prefix_present(&mut c, 100);
    assert!((90..100).contains(&m), "{m} keys survived the cut");
    for i in 0..m {
        let v: String = q(&mut c, &["GET", &format!("k{i}")]);
        assert_eq!(v, "x".repeat(100), "k{i}");
    }
    assert!(
        dir.log().contains("record checksum mismatch"),
        "{}",
        dir.log()
    );
}

#[test]
fn bgrewriteaof_and_the_auto_rule_bound_the_log_under_churn_and_the_data_survives() {
    let dir = Dir::new("aof-rewrite");
    let mut s = start(&dir, "everysec", &["--auto-aof-rewrite-percentage", "0"]);
    let mut c = s.client();
    let churn = |c: &mut redis::Connection, rounds: u64, tag: &str| {
        for r in 0..rounds {
            let mut p = redis::pipe();
            for k in 0..20 {
                p.cmd("SET")
                    .arg(format!("key:{k}"))
                    .arg(format!("{tag}-{r}-{}", "v".repeat(200)))
                    .ignore();
            }
            let _: () = p.query(c).unwrap();
        }
    };
    churn(&mut c, 300, "a");
    let before = info_u64(&mut c, "persistence", "aof_current_size");
    assert!(before > 1_000_000, "6000 overwrites of 200 bytes: {before}");
    let r: String = q(&mut c, &["BGREWRITEAOF"]);
    assert_eq!(r, "Background append only file rewriting started");
    wait_until("rewrite done", || {
        info_u64(&mut c, "persistence", "aof_rewrites") == 1
            && info_u64(&mut c, "persistence", "aof_rewrite_in_progress") == 0
    });
    let after = info_u64(&mut c, "persistence", "aof_current_size");
    assert!(after < 20_000, "20 keys left: {after} bytes");
    let (on_disk, files) = dir_bytes(&dir.aof());
    assert!(
        on_disk < 20_000 && files == 3,
        "{on_disk} bytes in {files} files"
    );
    // The automatic rule: compact whenever the log doubled past 100 kB.
    let _: () = q(
        &mut c,
        &["CONFIG", "SET", "auto-aof-rewrite-min-size", "100kb"],
    );
    let _: () = q(
        &mut c,
        &["CONFIG", "SET", "auto-aof-rewrite-percentage", "100"],
    );
    // Three times: churn until the log passed the rule's threshold, then the cron compacts it.
    let mut biggest = 0;
    let mut round = 0;
    for cycle in 1..=3u64 {
        wait_until("the log compacted by the rule", || {
            if info_u64(&mut c, "persistence", "aof_rewrites") > cycle {
                return true;
            }
            churn(&mut c, 5, &format!("b{round}"));
            round += 1;
            biggest = biggest.max(dir_bytes(&dir.aof()).0);
            false
        });
    }
    let last = format!("b{}-4-", round - 1);
    // Each compaction starts when the log is past 100 kB and double its size after the last
    // one; it may pass that by what is written while the compaction runs.
    assert!(biggest < 1_000_000, "the folder reached {biggest} bytes");
    let final_value: String = q(&mut c, &["GET", "key:7"]);
    assert!(final_value.starts_with(&last), "{final_value}");
    // Under `everysec` the writer takes the stream every few milliseconds: WAITAOF says when
    // this connection's writes are on disk, so the kill below cannot land before that.
    let acked: Vec<u64> = q(&mut c, &["WAITAOF", "1", "0", "10000"]);
    assert_eq!(acked, vec![1, 0], "the local log fsynced the writes");
    kill9(&mut s);
    let s = start(&dir, "everysec", &[]);
    let mut c = s.client();
    for k in 0..20 {
        let v: String = q(&mut c, &["GET", &format!("key:{k}")]);
        assert!(v.starts_with(&last), "key:{k} = {}", &v[..10]);
    }
    let (_, files) = dir_bytes(&dir.aof());
    assert!(files <= 4, "{files} files after a restart");
}

#[test]
fn a_compaction_under_a_steady_write_load_succeeds_and_the_data_survives() {
    // While the log's writer is the backlog's only reader the backlog keeps about 1 MB; a
    // compaction during which more than that is written must still succeed (the writer starts a
    // new log file where the snapshot starts, as Redis 7 does), not fail and start over.
    const PRELOAD: u64 = 200_000;
    const LEAN_BYTES: u64 = 1024 * 1024;
    let dir = Dir::new("aof-rewrite-load");
    let mut s = start(&dir, "everysec", &["--auto-aof-rewrite-percentage", "0"]);
    let mut c = s.client();
    let value = "v".repeat(100);
    for chunk in 0..PRELOAD / 1000 {
        let mut p = redis::pipe();
        for i in chunk * 1000..(chunk + 1) * 1000 {
            p.cmd("SET").arg(format!("pre:{i}")).arg(&value).ignore();
        }
        let _: () = p.query(&mut c).unwrap();
    }
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let writer = {
        let (addr, stop) = (s.addr(), stop.clone());
        std::thread::spawn(move || {
            let mut r = common::Raw::connect(&addr);
            let value = vec![b'w'; 200];
            let mut n = 0u64;
            // Bounded: at most 20,000 batches, whatever the flag says.
            for _ in 0..20_000 {
                if stop.load(std::sync::atomic::Ordering::Relaxed) {
                    break;
                }
                let mut batch = Vec::new();
                for i in n..n + 100 {
                    let k = format!("load:{i}");
                    batch.extend(common::encode(&[b"SET", k.as_bytes(), &value]));
                }
                r.send(&batch);
                for _ in 0..100 {
                    assert_eq!(r.reply(), b"+OK\r\n");
                }
                n += 100;
            }
            // Every acknowledged write is on disk before the kill below.
            assert_eq!(
                r.call(&["WAITAOF", "1", "0", "10000"]),
                "*2\r\n:1\r\n:0\r\n"
            );
            n
        })
    };
    wait_until("the load runs", || {
        let n: u64 = q(&mut c, &["EXISTS", "load:1000"]);
        n == 1
    });
    // Compact until one compaction saw more than the lean backlog written while it ran (each
    // must succeed); at most five.
    let mut busiest = 0;
    for done in 1..=5u64 {
        let before = info_u64(&mut c, "replication", "master_repl_offset");
        let r: String = q(&mut c, &["BGREWRITEAOF"]);
        assert_eq!(r, "Background append only file rewriting started");
        wait_until("the compaction ends", || {
            info_u64(&mut c, "persistence", "aof_rewrite_in_progress") == 0
        });
        let during = info_u64(&mut c, "replication", "master_repl_offset") - before;
        assert_eq!(
            info_u64(&mut c, "persistence", "aof_rewrites"),
            done,
            "compaction {done} failed with {during} bytes written meanwhile: {}",
            dir.log()
        );
        assert_eq!(
            info_u64(&mut c, "persistence", "aof_rewrites_consecutive_failures"),
            0
        );
        busiest = busiest.max(during);
        if busiest > LEAN_BYTES {
            break;
        }
    }
    assert!(
        busiest > LEAN_BYTES,
        "no compaction ran under enough writes: {busiest} bytes"
    );
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let loaded = writer.join().expect("the writer failed");
    kill9(&mut s);
    let s = start(&dir, "everysec", &[]);
    let mut c = s.client();
    let keys: u64 = q(&mut c, &["DBSIZE"]);
    assert_eq!(keys, PRELOAD + loaded);
    let last: String = q(&mut c, &["GET", &format!("load:{}", loaded - 1)]);
    assert_eq!(last.len(), 200);
}

/// Runs `shoal serve` expecting it to refuse to start; returns its stderr.
fn refused_start(args: &[&str]) -> String {
    let mut child = Command::new(env!("CARGO_BIN_EXE_shoal"))
        .arg("serve")
        .args(["--port", "0", "--loglevel", "warning"])
        .args(args)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + common::WAIT_MAX;
    let status = loop {
        if let Some(st) = child.try_wait().unwrap() {
            break st;
        }
        assert!(Instant::now() < deadline, "shoal did not stop");
        std::thread::sleep(Duration::from_millis(10));
    };
    let mut err = String::new();
    std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut err).unwrap();
    assert!(
        !status.success(),
        "a damaged start must exit non-zero: {err}"
    );
    assert_eq!(status.code(), Some(1), "{err}");
    err
}

#[test]
fn a_corrupt_snapshot_stops_the_start_with_a_message() {
    let dir = Dir::new("snap-corrupt");
    {
        let s = Shoal::start(&["--dir", dir.s()]);
        let mut c = s.client();
        for i in 0..100 {
            let _: () = q(&mut c, &["SET", &format!("k{i}"), "v"]);
        }
        let _: () = q(&mut c, &["SAVE"]);
    }
    let path = dir.0.join("dump.shoal");
    let mut bytes = std::fs::read(&path).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0x20;
    std::fs::write(&path, &bytes).unwrap();
    let err = refused_start(&["--dir", dir.s()]);
    assert!(err.contains(path.to_str().unwrap()), "{err}");
    assert!(err.contains("checksum") || err.contains("corrupt"), "{err}");
    assert!(err.contains("To start anyway, move the file away"), "{err}");
    // Moved away, the node starts (empty).
    std::fs::rename(&path, dir.0.join("dump.shoal.bad")).unwrap();
    let s = Shoal::start(&["--dir", dir.s()]);
    let n: u64 = q(&mut s.client(), &["DBSIZE"]);
    assert_eq!(n, 0);
}

#[test]
fn an_unreadable_manifest_or_base_stops_the_start_with_a_message() {
    let dir = Dir::new("aof-manifest");
    {
        let s = start(&dir, "always", &[]);
        let _: () = q(&mut s.client(), &["SET", "k", "v"]);
    }
    let manifest = dir.aof().join("appendonly.aof.manifest");
    let good = std::fs::read(&manifest).unwrap();
    std::fs::write(&manifest, b"file nonsense\n").unwrap();
    let err = refused_start(&["--dir", dir.s(), "--appendonly", "yes"]);
    assert!(err.contains("appendonly.aof.manifest"), "{err}");
    assert!(err.contains("unreadable"), "{err}");
    assert!(err.contains("--appendonly no"), "{err}");
    std::fs::write(&manifest, &good).unwrap();
    // A damaged base (not a tail: never cut silently).
    let base = std::fs::read_dir(dir.aof())
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .find(|p| p.to_str().unwrap().ends_with(".base.shoal"))
        .unwrap();
    let mut b = std::fs::read(&base).unwrap();
    let n = b.len();
    b[n - 3] ^= 1;
    std::fs::write(&base, &b).unwrap();
    let err = refused_start(&["--dir", dir.s(), "--appendonly", "yes"]);
    assert!(
        err.contains(base.file_name().unwrap().to_str().unwrap()),
        "{err}"
    );
    assert!(err.contains("damaged"), "{err}");
}

#[test]
fn a_replica_restarted_from_its_log_resumes_with_a_partial_resync() {
    let p = Shoal::start(&[]);
    let dir = Dir::new("aof-replica");
    let replicaof = format!("127.0.0.1 {}", p.port);
    let r = start(&dir, "everysec", &["--replicaof", &replicaof]);
    let mut pc = p.client();
    let mut rc = r.client();
    common::wait_link_up(&mut rc);
    for i in 0..300 {
        let _: () = q(&mut pc, &["SET", &format!("a:{i}"), "v"]);
    }
    common::caught_up(&r, &p);
    // A clean stop, writes meanwhile, and a restart from the log.
    let _ = common::try_q::<()>(&mut rc, &["SHUTDOWN"]);
    let mut r = r;
    assert!(r.wait_exit(), "a clean stop");
    drop(r);
    for i in 0..200 {
        let _: () = q(&mut pc, &["SADD", "s", &i.to_string()]);
    }
    let full_before = info_u64(&mut pc, "stats", "sync_full");
    let partial_before = info_u64(&mut pc, "stats", "sync_partial_ok");
    let r = start(&dir, "everysec", &["--replicaof", &replicaof]);
    let mut rc = r.client();
    common::wait_link_up(&mut rc);
    common::caught_up(&r, &p);
    assert_eq!(
        info_u64(&mut pc, "stats", "sync_full"),
        full_before,
        "no full copy"
    );
    assert_eq!(
        info_u64(&mut pc, "stats", "sync_partial_ok"),
        partial_before + 1
    );
    assert_eq!(q::<u64>(&mut rc, &["DBSIZE"]), 301);
    assert_eq!(q::<u64>(&mut rc, &["SCARD", "s"]), 200);
}

#[test]
fn a_primary_restarted_from_its_log_keeps_its_id_and_its_replicas_resync_partially() {
    let dir = Dir::new("aof-primary");
    let port = free_port();
    let port_arg = format!("port={port}");
    let p = start(&dir, "everysec", &["--set", &port_arg]);
    let r = Shoal::start(&[]);
    common::follow(&r, &p);
    let mut pc = p.client();
    for i in 0..300 {
        let _: () = q(&mut pc, &["HSET", "h", &format!("f{i}"), "v"]);
    }
    common::caught_up(&r, &p);
    let replid: String = common::info_field(&mut pc, "replication", "master_replid").unwrap();
    let offset = info_u64(&mut pc, "replication", "master_repl_offset");
    let _ = common::try_q::<()>(&mut pc, &["SHUTDOWN"]);
    let mut p = p;
    assert!(p.wait_exit(), "a clean stop");
    drop(p);
    let p = start(&dir, "everysec", &["--set", &port_arg]);
    let mut pc = p.client();
    assert_eq!(
        common::info_field(&mut pc, "replication", "master_replid").unwrap(),
        replid
    );
    assert_eq!(
        info_u64(&mut pc, "replication", "master_repl_offset"),
        offset
    );
    let mut rc = r.client();
    wait_until("the replica reattached", || {
        info_u64(&mut pc, "replication", "connected_slaves") == 1
            && common::info_field(&mut rc, "replication", "master_link_status").as_deref()
                == Some("up")
    });
    assert_eq!(info_u64(&mut pc, "stats", "sync_full"), 0, "no full copy");
    assert_eq!(info_u64(&mut pc, "stats", "sync_partial_ok"), 1);
    let _: () = q(&mut pc, &["HSET", "h", "after", "restart"]);
    common::caught_up(&r, &p);
    assert_eq!(q::<u64>(&mut rc, &["HLEN", "h"]), 301);
}

#[test]
fn after_an_unclean_stop_a_primary_takes_a_new_id_and_continues_the_old_one_up_to_its_log() {
    let dir = Dir::new("aof-unclean");
    let mut p = start(&dir, "always", &[]);
    let mut pc = p.client();
    for i in 0..50 {
        let _: () = q(&mut pc, &["SET", &format!("k{i}"), "v"]);
    }
    let replid: String = common::info_field(&mut pc, "replication", "master_replid").unwrap();
    let offset = info_u64(&mut pc, "replication", "master_repl_offset");
    kill9(&mut p);
    let p = start(&dir, "always", &[]);
    let mut pc = p.client();
    let text: String = q(&mut pc, &["INFO", "replication"]);
    assert_ne!(common::info_value(&text, "master_replid").unwrap(), replid);
    assert_eq!(common::info_value(&text, "master_replid2").unwrap(), replid);
    assert_eq!(
        common::info_value(&text, "second_repl_offset").unwrap(),
        offset.to_string()
    );
    assert_eq!(q::<u64>(&mut pc, &["DBSIZE"]), 50);
}

#[test]
fn keys_expired_before_a_restart_are_not_resurrected() {
    let dir = Dir::new("aof-expiry");
    let mut s = start(&dir, "always", &[]);
    let mut c = s.client();
    for i in 0..20 {
        let _: () = q(&mut c, &["SET", &format!("short:{i}"), "v", "PX", "200"]);
        let _: () = q(&mut c, &["SET", &format!("long:{i}"), "v", "EX", "1000"]);
    }
    // Half the short keys are deleted by a read once due (lazy expiry), half left to the deadline.
    std::thread::sleep(Duration::from_millis(300));
    for i in 0..10 {
        let v: Option<String> = q(&mut c, &["GET", &format!("short:{i}")]);
        assert_eq!(v, None);
    }
    kill9(&mut s);
    let s = start(&dir, "always", &[]);
    let mut c = s.client();
    for i in 0..20 {
        let v: Option<String> = q(&mut c, &["GET", &format!("short:{i}")]);
        assert_eq!(v, None, "short:{i} came back");
        let ttl: i64 = q(&mut c, &["TTL", &format!("long:{i}")]);
        assert!((990..=1000).contains(&ttl), "long:{i} ttl {ttl}");
    }
    wait_until("expired keys gone from the count", || {
        q::<u64>(&mut c, &["DBSIZE"]) == 20
    });
}

#[test]
fn waitaof_counts_this_node_and_the_replicas_whose_logs_hold_the_write() {
    let dir = Dir::new("aof-waitaof");
    let rdir = Dir::new("aof-waitaof-replica");
    let p = start(&dir, "everysec", &[]);
    let replicaof = format!("127.0.0.1 {}", p.port);
    let r = start(&rdir, "everysec", &["--replicaof", &replicaof]);
    let plain = Shoal::start(&["--replicaof", &replicaof]);
    let mut rc = r.client();
    common::wait_link_up(&mut rc);
    common::wait_link_up(&mut plain.client());
    let mut pc = p.client();
    let _: () = q(&mut pc, &["SET", "k", "v"]);
    // The primary's log and the replica with a log; the replica without one never counts.
    let got: Vec<u64> = q(&mut pc, &["WAITAOF", "1", "1", "5000"]);
    assert_eq!(got, vec![1, 1]);
    let t0 = Instant::now();
    let got: Vec<u64> = q(&mut pc, &["WAITAOF", "1", "2", "300"]);
    assert_eq!(got, vec![1, 1]);
    assert!(
        t0.elapsed() >= Duration::from_millis(300),
        "waited for the timeout"
    );
    // Nothing asked: answered at once.
    let got: Vec<u64> = q(&mut pc, &["WAITAOF", "0", "0", "0"]);
    assert_eq!(got, vec![1, 1]);
    let e = common::try_q::<()>(&mut rc, &["WAITAOF", "0", "0", "0"]).unwrap_err();
    assert!(
        e.to_string()
            .contains("cannot be used with replica instances"),
        "{e}"
    );
    let e = common::try_q::<()>(&mut pc, &["WAITAOF", "0", "0", "-1"]).unwrap_err();
    assert!(e.to_string().contains("timeout is negative"), "{e}");
    // Without a log of its own, a node may still wait for its replicas' logs.
    let q2 = Shoal::start(&[]);
    let mut qc = q2.client();
    let e = common::try_q::<()>(&mut qc, &["WAITAOF", "1", "0", "0"]).unwrap_err();
    assert!(
        e.to_string()
            .contains("numlocal is set but appendonly is disabled"),
        "{e}"
    );
    let got: Vec<u64> = q(&mut qc, &["WAITAOF", "0", "0", "0"]);
    assert_eq!(got, vec![0, 0]);
}

/// Function libraries outlive a compaction: the base snapshot keeps them (an aux record), so a
/// node killed after BGREWRITEAOF still has them when it starts again from its log.
#[test]
fn function_libraries_survive_a_compaction_and_a_kill9() {
    let dir = Dir::new("aof-functions");
    let mut s = start(&dir, "always", &[]);
    let mut c = s.client();
    let lib = "#!lua name=kept\nredis.register_function('kept_f', function(keys) \
               return redis.call('GET', keys[1]) end)";
    let _: String = q(&mut c, &["FUNCTION", "LOAD", lib]);
    let _: String = q(&mut c, &["SET", "k", "v"]);
    let _: String = q(&mut c, &["BGREWRITEAOF"]);
    wait_until("rewrite done", || {
        info_u64(&mut c, "persistence", "aof_rewrites") == 1
            && info_u64(&mut c, "persistence", "aof_rewrite_in_progress") == 0
    });
    kill9(&mut s);
    let s = start(&dir, "always", &[]);
    let mut c = s.client();
    let v: String = q(&mut c, &["FCALL", "kept_f", "1", "k"]);
    assert_eq!(v, "v");
}
