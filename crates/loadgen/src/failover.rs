//! `failover`, for `bench/failover`: closed-loop writers on one slot of a cluster while the slot's
//! primary is killed, recording when writes stop and start being accepted, and which acknowledged
//! writes survive the failover.
//!
//! Every client writes keys of one slot (`{TAG}:fo:CLIENT:SEQ`, TAG a hash tag found for the
//! slot), one request in flight, each key once, with a value naming the run, the client and the
//! sequence number, so a key read back can be checked. A write is *acknowledged* when `SET`
//! replies `+OK` (and, with `--wait-replicas N`, the `WAIT N T` sent right behind it replies at
//! least N). A write that is not acknowledged is retried, same key and value, after
//! `--retry-ms`; a client only moves on to its next key once the current one is acknowledged.
//!
//! Routing is what cluster clients do: `-MOVED` updates the slot's owner and retries at once; a
//! broken connection, a refused connect or any other error reply forgets the owner and, after
//! `--retry-ms`, asks the next known node in turn (which answers `-MOVED` to whoever owns the
//! slot in its view). So once the cluster has promoted a replica, a client reaches it within one
//! retry of any node learning about it.
//!
//! Times are CLOCK_MONOTONIC nanoseconds, the clock Python's `time.monotonic_ns()` reads: the
//! harness takes the kill's timestamp just before it sends SIGKILL and subtracts it from
//! `first_new_ok_ns`, the first acknowledgement from a node other than the slot's owner at the
//! start. The phase file (`stop`) ends the writes; with `--verify`, every acknowledged key is
//! then read back from the slot's owner (the map read again from the seeds) and the missing or
//! different ones are counted: acknowledged writes the failover lost.

use std::collections::BTreeMap;
use std::io;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::client::Conn;
use crate::cluster::{Router, SLOTS, crc16};
use crate::resp::{self, Reply};

/// `-MOVED` replies followed in a row before a client backs off for `retry`.
const REDIRECTS_MAX: usize = 5;
/// Integers tried as the slot's hash tag (the slowest slot needs about 110,000).
const TAG_CANDIDATES_MAX: u32 = 10_000_000;
/// How often the phase file is read.
const PHASE_POLL: Duration = Duration::from_millis(5);
/// After `stop`, how long clients may take to finish their request before they are abandoned
/// (a `WAIT N 0` on a primary without replicas never returns).
const STOP_GRACE: Duration = Duration::from_secs(2);
/// GETs in flight while verifying.
const VERIFY_PIPELINE: usize = 512;
/// Attempts at each verification batch (a `-MOVED` or broken connection re-reads the map).
const VERIFY_ATTEMPTS: usize = 5;
/// The whole read-back, however many keys.
const VERIFY_TIME_MAX: Duration = Duration::from_secs(120);
/// Missing keys named in the report.
const MISSING_SHOWN: usize = 5;
pub const VALUE_LEN: usize = 64;

#[derive(Clone)]
pub struct Config {
    pub seeds: Vec<String>,
    pub slot: u16,
    pub clients: usize,
    /// `WAIT replicas timeout_ms` after every SET, and the least reply that acknowledges.
    pub wait: Option<(u32, u64)>,
    pub retry: Duration,
    pub duration: Duration,
    pub phase_file: Option<PathBuf>,
    pub io_timeout: Duration,
    pub verify: bool,
    /// Written into every value, so a key from another run cannot pass the check.
    pub run_id: u64,
}

/// What one client saw; each client locks only its own, so the lock is never contended.
#[derive(Default)]
struct Tally {
    /// Sequence numbers of its acknowledged writes.
    acked: Vec<u64>,
    /// Acknowledgements by node address.
    acks_by_node: BTreeMap<String, u64>,
    /// The first acknowledgement from a node other than the initial owner: time, node.
    first_new: Option<(u64, String)>,
    last_old_ns: Option<u64>,
    first_error_ns: Option<u64>,
    /// The last error before the first acknowledgement from a new node.
    last_error_before_new_ns: Option<u64>,
    errors: BTreeMap<String, u64>,
    attempts: u64,
}

pub struct Verify {
    pub read_from: String,
    pub checked: u64,
    pub missing: u64,
    pub wrong: u64,
    pub missing_keys: Vec<String>,
}

pub struct Report {
    pub initial_owner: String,
    pub attempts: u64,
    pub acked: u64,
    pub acks_by_node: BTreeMap<String, u64>,
    pub first_new_ok_ns: Option<u64>,
    pub first_new_node: Option<String>,
    pub last_old_ok_ns: Option<u64>,
    pub first_error_ns: Option<u64>,
    pub last_error_before_new_ns: Option<u64>,
    /// Per client, the first acknowledgement from a new node (ns), for the spread between them.
    pub client_first_new_ns: Vec<u64>,
    pub errors: BTreeMap<String, u64>,
    /// Clients abandoned in a request after `stop` (their request's outcome is unknown).
    pub abandoned: u64,
    pub stopped: bool,
    pub secs: f64,
    /// The read-back, or why it could not be done.
    pub verify: Option<Result<Verify, String>>,
}

/// CLOCK_MONOTONIC in nanoseconds: the clock the harness's `time.monotonic_ns()` reads, so
/// times taken in the two processes can be subtracted.
pub fn mono_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid, writable timespec; CLOCK_MONOTONIC always exists on Linux.
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    assert_eq!(rc, 0, "clock_gettime(CLOCK_MONOTONIC) cannot fail");
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

/// The smallest integer whose decimal text hashes to `slot`.
pub fn slot_tag(slot: u16) -> Result<String, String> {
    if usize::from(slot) >= SLOTS {
        return Err(format!("slot {slot} is not within 0-16383"));
    }
    (0..TAG_CANDIDATES_MAX)
        .map(|j| j.to_string())
        .find(|t| crc16(t.as_bytes()) % SLOTS as u16 == slot)
        .ok_or_else(|| format!("no hash tag found for slot {slot}"))
}

fn key(tag: &str, client: usize, seq: u64) -> Vec<u8> {
    format!("{{{tag}}}:fo:{client}:{seq}").into_bytes()
}

fn value(run_id: u64, client: usize, seq: u64) -> Vec<u8> {
    let mut v = format!("{run_id}:{client}:{seq}:").into_bytes();
    v.resize(VALUE_LEN.max(v.len()), b'.');
    v
}

struct Shared {
    stop: AtomicBool,
    tallies: Vec<Mutex<Tally>>,
}

fn lock(m: &Mutex<Tally>) -> std::sync::MutexGuard<'_, Tally> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

pub async fn run(cfg: Config) -> io::Result<Report> {
    assert!(cfg.clients >= 1);
    let tag = Arc::new(slot_tag(cfg.slot).map_err(io::Error::other)?);
    let router = Router::read(&cfg.seeds, cfg.io_timeout).await?;
    let owner = router
        .owner(cfg.slot)
        .ok_or_else(|| io::Error::other(format!("slot {} has no owner", cfg.slot)))?;
    let initial_owner = router.nodes()[owner].clone();
    let start = Instant::now();
    let deadline = start + cfg.duration;
    let shared = Arc::new(Shared {
        stop: AtomicBool::new(false),
        tallies: (0..cfg.clients).map(|_| Mutex::default()).collect(),
    });
    let watcher = tokio::spawn(watch_phase(
        shared.clone(),
        cfg.phase_file.clone(),
        deadline,
    ));
    let mut tasks = Vec::with_capacity(cfg.clients);
    for index in 0..cfg.clients {
        let mut client = Client {
            nodes: router.nodes().to_vec(),
            conns: router.nodes().iter().map(|_| None).collect(),
            owner: Some(owner),
            initial: owner,
            next_other: index,
        };
        let (cfg, shared, tag) = (cfg.clone(), shared.clone(), tag.clone());
        tasks.push(tokio::spawn(async move {
            client
                .write_loop(&cfg, &shared, index, &tag, deadline)
                .await;
        }));
    }
    // Clients end on `stop` or at the deadline; one stuck in a request past the grace period is
    // abandoned (its tally so far is kept).
    let _ = watcher.await;
    shared.stop.store(true, Relaxed);
    let grace_end = tokio::time::Instant::now() + STOP_GRACE;
    let mut abandoned = 0;
    for mut t in tasks {
        if tokio::time::timeout_at(grace_end, &mut t).await.is_err() {
            t.abort();
            abandoned += 1;
        }
    }
    let stopped = Instant::now() < deadline;
    let secs = start.elapsed().as_secs_f64();

    let mut report = Report {
        initial_owner,
        attempts: 0,
        acked: 0,
        acks_by_node: BTreeMap::new(),
        first_new_ok_ns: None,
        first_new_node: None,
        last_old_ok_ns: None,
        first_error_ns: None,
        last_error_before_new_ns: None,
        client_first_new_ns: Vec::new(),
        errors: BTreeMap::new(),
        abandoned,
        stopped,
        secs,
        verify: None,
    };
    for t in &shared.tallies {
        let t = lock(t);
        report.attempts += t.attempts;
        report.acked += t.acked.len() as u64;
        for (node, n) in &t.acks_by_node {
            *report.acks_by_node.entry(node.clone()).or_default() += n;
        }
        for (kind, n) in &t.errors {
            *report.errors.entry(kind.clone()).or_default() += n;
        }
        if let Some((ns, node)) = &t.first_new {
            report.client_first_new_ns.push(*ns);
            if report.first_new_ok_ns.is_none_or(|f| *ns < f) {
                report.first_new_ok_ns = Some(*ns);
                report.first_new_node = Some(node.clone());
            }
        }
        report.last_old_ok_ns = report.last_old_ok_ns.max(t.last_old_ns);
        report.last_error_before_new_ns = report
            .last_error_before_new_ns
            .max(t.last_error_before_new_ns);
        report.first_error_ns = match (report.first_error_ns, t.first_error_ns) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
    }
    report.client_first_new_ns.sort_unstable();
    if cfg.verify {
        report.verify = Some(verify(&cfg, &tag, &shared).await.map_err(|e| e.to_string()));
    }
    Ok(report)
}

/// Reads the phase file until it says `stop` or the deadline passes.
async fn watch_phase(shared: Arc<Shared>, file: Option<PathBuf>, deadline: Instant) {
    while Instant::now() < deadline {
        let said = file
            .as_ref()
            .and_then(|f| std::fs::read_to_string(f).ok())
            .unwrap_or_default();
        if said.trim() == "stop" {
            break;
        }
        tokio::time::sleep(PHASE_POLL).await;
    }
    shared.stop.store(true, Relaxed);
}

/// A write's outcome as the client acts on it.
enum Outcome {
    Acked,
    Moved(String),
    /// An error reply (its first word), or a WAIT that counted too few replicas (`WAITSHORT`).
    Refused(String),
}

struct Client {
    nodes: Vec<String>,
    conns: Vec<Option<Conn>>,
    owner: Option<usize>,
    initial: usize,
    /// Where the round of "ask the next node" stands; clients start at different nodes.
    next_other: usize,
}

impl Client {
    fn node(&mut self, addr: &str) -> usize {
        if let Some(i) = self.nodes.iter().position(|n| n == addr) {
            return i;
        }
        self.nodes.push(addr.to_string());
        self.conns.push(None);
        self.nodes.len() - 1
    }

    /// Each key once, in order; a key is retried until it is acknowledged, `stop`, or the
    /// deadline. Every attempt is bounded by the I/O timeout, every back-off by `retry`.
    async fn write_loop(
        &mut self,
        cfg: &Config,
        shared: &Shared,
        index: usize,
        tag: &str,
        deadline: Instant,
    ) {
        let tally = &shared.tallies[index];
        let mut cmd = Vec::with_capacity(256);
        let mut seq = 0u64;
        let mut redirects = 0usize;
        let mut failed_node: Option<usize> = None;
        let wait_args = cfg
            .wait
            .map(|(n, t)| (n.to_string().into_bytes(), t.to_string().into_bytes()));
        cmd.clear();
        let encode = |cmd: &mut Vec<u8>, seq: u64| {
            cmd.clear();
            resp::encode_command(
                cmd,
                &[
                    b"SET",
                    &key(tag, index, seq),
                    &value(cfg.run_id, index, seq),
                ],
            );
            if let Some((n, t)) = &wait_args {
                resp::encode_command(cmd, &[b"WAIT", n, t]);
            }
        };
        encode(&mut cmd, seq);
        while !shared.stop.load(Relaxed) && Instant::now() < deadline {
            let node = match self.owner {
                Some(n) => n,
                None => self.other_node(failed_node),
            };
            let outcome = self.call(node, &cmd, cfg.wait.map(|w| w.0)).await;
            let now = mono_ns();
            let back_off = match outcome {
                Ok(Outcome::Acked) => {
                    let mut t = lock(tally);
                    t.attempts += 1;
                    t.acked.push(seq);
                    *t.acks_by_node.entry(self.nodes[node].clone()).or_default() += 1;
                    if node == self.initial {
                        t.last_old_ns = Some(now);
                    } else if t.first_new.is_none() {
                        t.first_new = Some((now, self.nodes[node].clone()));
                    }
                    drop(t);
                    self.owner = Some(node);
                    (redirects, failed_node) = (0, None);
                    seq += 1;
                    encode(&mut cmd, seq);
                    false
                }
                Ok(Outcome::Moved(addr)) => {
                    let mut t = lock(tally);
                    t.attempts += 1;
                    *t.errors.entry("MOVED".into()).or_default() += 1;
                    drop(t);
                    self.owner = Some(self.node(&addr));
                    redirects += 1;
                    redirects > REDIRECTS_MAX
                }
                Ok(Outcome::Refused(kind)) => {
                    self.error(tally, &kind, now);
                    self.owner = None;
                    failed_node = Some(node);
                    true
                }
                Err(_) => {
                    self.error(tally, "IO", now);
                    self.conns[node] = None;
                    self.owner = None;
                    failed_node = Some(node);
                    true
                }
            };
            if back_off {
                redirects = 0;
                tokio::time::sleep(cfg.retry).await;
            }
        }
    }

    fn error(&self, tally: &Mutex<Tally>, kind: &str, now: u64) {
        let mut t = lock(tally);
        t.attempts += 1;
        *t.errors.entry(kind.to_string()).or_default() += 1;
        t.first_error_ns.get_or_insert(now);
        if t.first_new.is_none() {
            t.last_error_before_new_ns = Some(now);
        }
    }

    /// The next node in turn, skipping the one that just failed (unless it is the only one).
    fn other_node(&mut self, failed: Option<usize>) -> usize {
        for _ in 0..self.nodes.len() {
            self.next_other = (self.next_other + 1) % self.nodes.len();
            if Some(self.next_other) != failed {
                return self.next_other;
            }
        }
        self.next_other
    }

    async fn call(&mut self, node: usize, cmd: &[u8], wait: Option<u32>) -> io::Result<Outcome> {
        if self.conns[node].is_none() {
            // The I/O timeout bounds the connect too; a dead local node refuses at once.
            self.conns[node] = Some(Conn::connect(&self.nodes[node], IO_CONNECT_TIMEOUT).await?);
        }
        let conn = self.conns[node].as_mut().expect("connected above");
        conn.write_buf().extend_from_slice(cmd);
        conn.flush().await?;
        let set = conn.reply_with(classify).await?;
        let waited = match wait {
            Some(_) => Some(conn.reply_with(integer_or_error).await?),
            None => None,
        };
        Ok(match (set, waited, wait) {
            (Outcome::Acked, Some(Ok(n)), Some(need)) if n >= i64::from(need) => Outcome::Acked,
            (Outcome::Acked, Some(Ok(_)), _) => Outcome::Refused("WAITSHORT".into()),
            (Outcome::Acked, Some(Err(kind)), _) => Outcome::Refused(format!("WAIT-{kind}")),
            (set, _, _) => set,
        })
    }
}

/// Connects are local: a refused one fails at once, a slow one means something is wrong.
const IO_CONNECT_TIMEOUT: Duration = Duration::from_secs(1);

fn classify(reply: &Reply<'_>) -> Outcome {
    match reply {
        Reply::Simple(b"OK") => Outcome::Acked,
        Reply::Error(m) => {
            let text = String::from_utf8_lossy(m);
            let mut words = text.split_ascii_whitespace();
            let kind = words.next().unwrap_or("ERR").to_string();
            match (kind.as_str(), words.nth(1)) {
                ("MOVED", Some(addr)) => Outcome::Moved(addr.to_string()),
                _ => Outcome::Refused(kind),
            }
        }
        _ => Outcome::Refused("UNEXPECTED".into()),
    }
}

fn integer_or_error(reply: &Reply<'_>) -> Result<i64, String> {
    match reply {
        Reply::Integer(n) => Ok(*n),
        Reply::Error(m) => Err(String::from_utf8_lossy(m)
            .split_ascii_whitespace()
            .next()
            .unwrap_or("ERR")
            .to_string()),
        _ => Err("UNEXPECTED".into()),
    }
}

/// Reads back every acknowledged key from the slot's owner, as the map says now.
async fn verify(cfg: &Config, tag: &str, shared: &Shared) -> io::Result<Verify> {
    let mut keys: Vec<(usize, u64)> = Vec::new();
    for (client, t) in shared.tallies.iter().enumerate() {
        keys.extend(lock(t).acked.iter().map(|&seq| (client, seq)));
    }
    let deadline = Instant::now() + VERIFY_TIME_MAX;
    let mut owner = read_owner(cfg).await?;
    let mut conn = Conn::connect(&owner, cfg.io_timeout).await?;
    let mut out = Verify {
        read_from: owner.clone(),
        checked: 0,
        missing: 0,
        wrong: 0,
        missing_keys: Vec::new(),
    };
    for batch in keys.chunks(VERIFY_PIPELINE) {
        let mut attempt = 0;
        let replies = loop {
            if Instant::now() >= deadline {
                return Err(io::Error::other("verify: time limit reached"));
            }
            attempt += 1;
            match get_batch(&mut conn, tag, batch).await {
                Ok(Ok(r)) => break r,
                Ok(Err(moved)) if attempt < VERIFY_ATTEMPTS => {
                    owner = moved;
                }
                Err(_) if attempt < VERIFY_ATTEMPTS => {
                    tokio::time::sleep(cfg.retry).await;
                    owner = read_owner(cfg).await?;
                }
                Ok(Err(moved)) => {
                    return Err(io::Error::other(format!("verify: still MOVED to {moved}")));
                }
                Err(e) => return Err(e),
            }
            conn = Conn::connect(&owner, cfg.io_timeout).await?;
            out.read_from = owner.clone();
        };
        for (&(client, seq), got) in batch.iter().zip(replies) {
            out.checked += 1;
            match got {
                None => {
                    out.missing += 1;
                    if out.missing_keys.len() < MISSING_SHOWN {
                        out.missing_keys
                            .push(String::from_utf8_lossy(&key(tag, client, seq)).into_owned());
                    }
                }
                Some(v) if v != value(cfg.run_id, client, seq) => out.wrong += 1,
                Some(_) => {}
            }
        }
    }
    Ok(out)
}

async fn read_owner(cfg: &Config) -> io::Result<String> {
    let router = Router::read(&cfg.seeds, cfg.io_timeout).await?;
    router
        .owner(cfg.slot)
        .map(|n| router.nodes()[n].clone())
        .ok_or_else(|| io::Error::other(format!("verify: slot {} has no owner", cfg.slot)))
}

/// GETs of a batch: each value (or `None` if absent), or the node a `-MOVED` points to.
async fn get_batch(
    conn: &mut Conn,
    tag: &str,
    batch: &[(usize, u64)],
) -> io::Result<Result<Vec<Option<Vec<u8>>>, String>> {
    for &(client, seq) in batch {
        conn.queue(&[b"GET", &key(tag, client, seq)]);
    }
    conn.flush().await?;
    let mut values = Vec::with_capacity(batch.len());
    let mut moved = None;
    for _ in batch {
        let got = conn
            .reply_with(|r| match r {
                Reply::Bulk(v) => Ok(v.map(<[u8]>::to_vec)),
                Reply::Error(m) => Err(String::from_utf8_lossy(m).into_owned()),
                other => Err(format!("unexpected reply {other:?}")),
            })
            .await?;
        match got {
            Ok(v) => values.push(v),
            Err(e) => {
                let mut words = e.split_ascii_whitespace();
                match (words.next(), words.nth(1)) {
                    (Some("MOVED"), Some(addr)) => moved = Some(addr.to_string()),
                    _ => return Err(io::Error::other(format!("verify: GET replied {e}"))),
                }
            }
        }
    }
    Ok(match moved {
        Some(addr) => Err(addr),
        None => Ok(values),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_of_a_run_share_the_slot() {
        for slot in [0u16, 1, 5460, 16383] {
            let tag = slot_tag(slot).unwrap();
            assert_eq!(crc16(tag.as_bytes()) % SLOTS as u16, slot);
            let k = key(&tag, 7, 42);
            assert!(k.starts_with(format!("{{{tag}}}:").as_bytes()));
        }
        assert!(slot_tag(16384).is_err());
    }

    #[test]
    fn values_name_their_write_and_are_64_bytes() {
        let v = value(3, 7, 42);
        assert_eq!(v.len(), VALUE_LEN);
        assert!(v.starts_with(b"3:7:42:"));
        assert_ne!(v, value(3, 7, 43));
        assert_ne!(v, value(4, 7, 42));
    }

    #[test]
    fn replies_are_classified() {
        assert!(matches!(classify(&Reply::Simple(b"OK")), Outcome::Acked));
        assert!(matches!(
            classify(&Reply::Error(b"MOVED 12 127.0.0.1:7001")),
            Outcome::Moved(a) if a == "127.0.0.1:7001"
        ));
        assert!(matches!(
            classify(&Reply::Error(b"CLUSTERDOWN The cluster is down")),
            Outcome::Refused(k) if k == "CLUSTERDOWN"
        ));
        assert!(matches!(classify(&Reply::Integer(1)), Outcome::Refused(_)));
        assert_eq!(integer_or_error(&Reply::Integer(2)), Ok(2));
    }

    #[test]
    fn the_monotonic_clock_moves_forward() {
        let a = mono_ns();
        let b = mono_ns();
        assert!(b >= a && a > 0);
    }
}
