//! The harness: a real cluster of `shoal serve` (or `redis-server`) processes, each in its own
//! temporary directory, on free ports (loopback) or in its own network namespace (`net.rs`),
//! formed with `shoal cluster create` (or `redis-cli --cluster create`). It can kill -9 and
//! restart a node (same directory, address and port), pause and resume it (SIGSTOP/SIGCONT),
//! read the topology and wait until the cluster is whole again. With `faketime` set, every node
//! runs under libfaketime (`fakeclock.rs`) and `set_clock` steps one node's wall clock.
//! Dropping the `Cluster` kills every process and removes every directory and namespace, pass
//! or fail (Drop runs on panic; children also get `PR_SET_PDEATHSIG`, so a killed suite does
//! not leave servers behind).

use std::fs::{File, OpenOptions};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::client::parse_slots;
use crate::fakeclock;
use crate::history::Shard;
use crate::net::{self, Net};
use crate::resp::{Conn, Reply};
use crate::slots::SLOTS;

/// How long a started node has to answer PING.
pub const START_TIMEOUT: Duration = Duration::from_secs(15);
/// How long forming the cluster may take.
pub const FORM_TIMEOUT: Duration = Duration::from_secs(90);
/// Request timeout of the harness's own admin connections.
pub const ADMIN_TIMEOUT: Duration = Duration::from_millis(1000);
/// The data port of every node when each has its own namespace (and so its own address).
pub const NETNS_PORT: u16 = 7000;

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum, serde::Serialize)]
pub enum Target {
    Shoal,
    Redis,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum, serde::Serialize)]
pub enum Strategy {
    Sync,
    Async,
}

impl std::fmt::Display for Target {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Target::Shoal => "shoal",
            Target::Redis => "redis",
        })
    }
}

impl std::fmt::Display for Strategy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Strategy::Sync => "sync",
            Strategy::Async => "async",
        })
    }
}

#[derive(Clone, Debug)]
pub struct ClusterOptions {
    pub target: Target,
    pub strategy: Strategy,
    pub primaries: usize,
    pub replicas: usize,
    pub node_timeout_ms: u64,
    pub ack_timeout_ms: u64,
    pub shoal_bin: PathBuf,
    pub redis_server: String,
    pub redis_cli: String,
    /// Run every node in its own network namespace (needed for partitions and slow links).
    pub netns: bool,
    /// Worker threads per shoal node (the suite runs six nodes on small machines).
    pub threads: u32,
    /// Keep the nodes' directories (logs, data) after the run, for a post-mortem.
    pub keep_dirs: bool,
    /// The libfaketime to start every node under, so clock jumps can step one node's wall
    /// clock; `None` (no `clock` fault asked for) starts nodes on the true clock.
    pub faketime: Option<PathBuf>,
}

struct Node {
    ip: String,
    port: u16,
    dir: PathBuf,
    ns: Option<String>,
    child: Option<Child>,
    paused: bool,
    /// libfaketime's timestamp file for this node (used only with `faketime`), and the offset
    /// it holds.
    clock_file: PathBuf,
    clock_offset_s: i64,
}

pub struct Cluster {
    pub opts: ClusterOptions,
    nodes: Vec<Node>,
    root: PathBuf,
    /// Dropped after the nodes are killed (Drop below), so no process outlives its namespace.
    pub net: Option<Net>,
}

/// The shoal binary next to the running executable (`target/<profile>/shoal`; test binaries
/// live one level deeper, in `deps/`).
pub fn default_shoal_bin() -> PathBuf {
    let exe = std::env::current_exe().unwrap_or_default();
    let mut dir = exe.parent().map(Path::to_path_buf).unwrap_or_default();
    if dir.ends_with("deps") {
        dir.pop();
    }
    dir.join("shoal")
}

fn free_port_pair() -> Result<u16, String> {
    for _ in 0..100 {
        let l = std::net::TcpListener::bind("127.0.0.1:0").map_err(|e| e.to_string())?;
        let p = l.local_addr().map_err(|e| e.to_string())?.port();
        if p < 55000 && std::net::TcpListener::bind(("127.0.0.1", p + 10000)).is_ok() {
            return Ok(p);
        }
    }
    Err("no free port pair (port, port+10000) found in 100 tries".into())
}

/// Runs a command to completion within `timeout`, its output going to `log`.
fn run_bounded(mut cmd: Command, log: &Path, timeout: Duration) -> Result<(), String> {
    let out = File::create(log).map_err(|e| format!("{}: {e}", log.display()))?;
    let err = out.try_clone().map_err(|e| e.to_string())?;
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(out)
        .stderr(err)
        .spawn()
        .map_err(|e| format!("{cmd:?}: {e}"))?;
    let deadline = Instant::now() + timeout;
    loop {
        match child.try_wait().map_err(|e| e.to_string())? {
            Some(status) if status.success() => return Ok(()),
            Some(status) => {
                return Err(format!("{cmd:?} failed ({status}): {}", tail(log, 1500)));
            }
            None if Instant::now() > deadline => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(format!("{cmd:?} took longer than {timeout:?}"));
            }
            None => std::thread::sleep(Duration::from_millis(50)),
        }
    }
}

/// The last `n` bytes of a log file, for error messages.
pub fn tail(path: &Path, n: usize) -> String {
    let s = std::fs::read(path).unwrap_or_default();
    String::from_utf8_lossy(&s[s.len().saturating_sub(n)..]).into_owned()
}

/// One line of CLUSTER NODES.
#[derive(Clone, Debug)]
pub struct NodeView {
    pub id: String,
    pub addr: String,
    pub primary: bool,
    pub primary_id: Option<String>,
    pub failed: bool,
    pub slots: Vec<(u16, u16)>,
}

pub fn parse_nodes(text: &str) -> Vec<NodeView> {
    let mut out = Vec::new();
    for line in text.lines() {
        let f: Vec<&str> = line.split_whitespace().collect();
        if f.len() < 8 {
            continue;
        }
        let addr = f[1].split(['@', ',']).next().unwrap_or("").to_string();
        let flags: Vec<&str> = f[2].split(',').collect();
        let mut slots = Vec::new();
        for s in &f[8..] {
            if s.starts_with('[') {
                continue; // a slot being imported or migrated
            }
            let (lo, hi) = s.split_once('-').unwrap_or((s, s));
            if let (Ok(lo), Ok(hi)) = (lo.parse(), hi.parse()) {
                slots.push((lo, hi));
            }
        }
        out.push(NodeView {
            id: f[0].to_string(),
            addr,
            primary: flags.contains(&"master"),
            primary_id: (f[3] != "-").then(|| f[3].to_string()),
            failed: flags.iter().any(|x| *x == "fail" || *x == "fail?"),
            slots,
        });
    }
    out
}

/// Replica groups (with slots) from a CLUSTER NODES view.
pub fn shards_of(view: &[NodeView]) -> Vec<Shard> {
    let mut shards: Vec<Shard> = view
        .iter()
        .filter(|n| n.primary && !n.slots.is_empty())
        .map(|p| Shard {
            ranges: p.slots.clone(),
            primary: p.addr.clone(),
            replicas: view
                .iter()
                .filter(|r| r.primary_id.as_deref() == Some(&p.id))
                .map(|r| r.addr.clone())
                .collect(),
        })
        .collect();
    shards.sort_by_key(|s| s.ranges.first().copied());
    shards
}

impl Cluster {
    /// Starts the processes and forms the cluster; on error everything started is removed.
    pub fn start(opts: ClusterOptions) -> Result<Cluster, String> {
        let n = opts.primaries * (opts.replicas + 1);
        if opts.target == Target::Shoal && !opts.shoal_bin.exists() {
            return Err(format!(
                "no shoal binary at {} (build it: cargo build -p shoal, or pass --shoal-bin)",
                opts.shoal_bin.display()
            ));
        }
        let root = std::env::temp_dir().join(format!(
            "shoal-chaos-{}-{}",
            std::process::id(),
            now_nanos()
        ));
        std::fs::create_dir_all(&root).map_err(|e| format!("{}: {e}", root.display()))?;
        if opts.faketime.is_some() {
            fakeclock::remove_stale_shm();
        }
        let mut c = Cluster {
            opts: opts.clone(),
            nodes: Vec::new(),
            root,
            net: None,
        };
        if opts.netns {
            c.net = Some(Net::create(n)?);
        }
        for i in 0..n {
            let (ip, port, ns) = match &c.net {
                Some(net) => (net::node_ip(i), NETNS_PORT, Some(net.ns(i))),
                None => ("127.0.0.1".to_string(), free_port_pair()?, None),
            };
            let dir = c.root.join(format!("node{i}"));
            std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
            let clock_file = c.root.join(format!("node{i}.faketime"));
            if opts.faketime.is_some() {
                fakeclock::write_offset(&clock_file, 0)?;
            }
            c.nodes.push(Node {
                ip,
                port,
                dir,
                ns,
                child: None,
                paused: false,
                clock_file,
                clock_offset_s: 0,
            });
        }
        for i in 0..n {
            c.spawn(i)?;
        }
        for i in 0..n {
            c.wait_ready(i)?;
        }
        c.form()?;
        c.wait_healthy(FORM_TIMEOUT)?;
        Ok(c)
    }

    pub fn len(&self) -> usize {
        self.nodes.len()
    }

    pub fn is_empty(&self) -> bool {
        self.nodes.is_empty()
    }

    pub fn addr(&self, i: usize) -> String {
        format!("{}:{}", self.nodes[i].ip, self.nodes[i].port)
    }

    pub fn addrs(&self) -> Vec<String> {
        (0..self.len()).map(|i| self.addr(i)).collect()
    }

    pub fn index_of(&self, addr: &str) -> Option<usize> {
        (0..self.len()).find(|&i| self.addr(i) == addr)
    }

    pub fn is_running(&self, i: usize) -> bool {
        self.nodes[i].child.is_some() && !self.nodes[i].paused
    }

    pub fn log_path(&self, i: usize) -> PathBuf {
        self.nodes[i].dir.join("server.log")
    }

    fn spawn(&mut self, i: usize) -> Result<(), String> {
        let o = &self.opts;
        let node = &self.nodes[i];
        let (port, dir) = (
            node.port.to_string(),
            node.dir.to_string_lossy().into_owned(),
        );
        let timeout = o.node_timeout_ms.to_string();
        let mut args: Vec<String> = Vec::new();
        let bin = match o.target {
            Target::Shoal => {
                args.extend(["serve", "--port", &port, "--bind", &node.ip].map(String::from));
                // Nodes on their own addresses, with no password: as for redis-server below.
                args.extend(["--protected-mode", "no"].map(String::from));
                args.extend(["--dir", &dir, "--cluster-enabled", "yes"].map(String::from));
                args.extend(["--cluster-node-timeout", &timeout].map(String::from));
                args.extend(["--loglevel", "warning", "--threads"].map(String::from));
                args.push(o.threads.to_string());
                args.extend(["--write-strategy".into(), o.strategy.to_string()]);
                if o.strategy == Strategy::Sync {
                    args.extend(["--min-replicas-ack".into(), "1".into()]);
                    args.extend(["--ack-timeout-ms".into(), o.ack_timeout_ms.to_string()]);
                }
                o.shoal_bin.to_string_lossy().into_owned()
            }
            Target::Redis => {
                args.extend(["--port", &port, "--bind", &node.ip].map(String::from));
                args.extend(["--protected-mode", "no", "--dir", &dir].map(String::from));
                args.extend(["--cluster-enabled", "yes"].map(String::from));
                args.extend(["--cluster-config-file", "nodes.conf"].map(String::from));
                args.extend(["--cluster-node-timeout", &timeout].map(String::from));
                args.extend(["--save", "", "--appendonly", "no"].map(String::from));
                args.extend(["--loglevel", "warning"].map(String::from));
                o.redis_server.clone()
            }
        };
        // `env` sets libfaketime's variables for the node alone (not for `ip`); `ip netns
        // exec` and `env` both exec, so the child's pid is the node's (SIGSTOP, shm cleanup).
        let mut prefix: Vec<String> = Vec::new();
        if let Some(ns) = &node.ns {
            prefix.extend(["ip", "netns", "exec", ns].map(String::from));
        }
        if let Some(lib) = &o.faketime {
            prefix.push("env".into());
            let vars = fakeclock::env(lib, &node.clock_file);
            prefix.extend(vars.into_iter().map(|(k, v)| format!("{k}={v}")));
        }
        let mut cmd = match prefix.split_first() {
            Some((prog, rest)) => {
                let mut c = Command::new(prog);
                c.args(rest).arg(&bin);
                c
            }
            None => Command::new(&bin),
        };
        cmd.args(&args);
        let log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.log_path(i))
            .map_err(|e| e.to_string())?;
        let log2 = log.try_clone().map_err(|e| e.to_string())?;
        cmd.stdin(Stdio::null()).stdout(log).stderr(log2);
        // SAFETY: prctl is async-signal-safe; the closure allocates nothing.
        unsafe {
            cmd.pre_exec(|| {
                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL as libc::c_ulong);
                Ok(())
            });
        }
        let child = cmd.spawn().map_err(|e| format!("starting {bin}: {e}"))?;
        self.nodes[i].child = Some(child);
        self.nodes[i].paused = false;
        Ok(())
    }

    fn wait_ready(&mut self, i: usize) -> Result<(), String> {
        let deadline = Instant::now() + START_TIMEOUT;
        let addr = self.addr(i);
        loop {
            if let Ok(mut c) = Conn::connect(&addr, ADMIN_TIMEOUT)
                && matches!(c.cmd(&["PING"]), Ok(Reply::Simple(_)))
            {
                return Ok(());
            }
            if let Some(child) = self.nodes[i].child.as_mut()
                && let Ok(Some(status)) = child.try_wait()
            {
                self.nodes[i].child = None;
                return Err(format!(
                    "node {i} ({addr}) exited ({status}): {}",
                    tail(&self.log_path(i), 1500)
                ));
            }
            if Instant::now() > deadline {
                return Err(format!(
                    "node {i} ({addr}) did not answer PING in {START_TIMEOUT:?}"
                ));
            }
            std::thread::sleep(Duration::from_millis(30));
        }
    }

    fn form(&self) -> Result<(), String> {
        let addrs = self.addrs();
        let replicas = self.opts.replicas.to_string();
        let mut cmd = match self.opts.target {
            Target::Shoal => {
                let mut c = Command::new(&self.opts.shoal_bin);
                c.args(["cluster", "create"]).args(&addrs);
                c.args(["--replicas", &replicas]);
                c
            }
            Target::Redis => {
                let mut c = Command::new(&self.opts.redis_cli);
                c.args(["--cluster", "create"]).args(&addrs);
                c.args(["--cluster-replicas", &replicas, "--cluster-yes"]);
                c
            }
        };
        cmd.env_remove("REDISCLI_AUTH");
        run_bounded(cmd, &self.root.join("create.log"), FORM_TIMEOUT)
    }

    /// kill -9; the node stays down until `restart`.
    pub fn kill(&mut self, i: usize) {
        if let Some(mut child) = self.nodes[i].child.take() {
            let _ = child.kill();
            let _ = child.wait();
            if self.opts.faketime.is_some() {
                fakeclock::remove_shm(child.id());
            }
        }
        self.nodes[i].paused = false;
    }

    /// Node `i`'s wall-clock offset from true time, in seconds (0 without `faketime`).
    pub fn clock_offset_s(&self, i: usize) -> i64 {
        self.nodes[i].clock_offset_s
    }

    /// Steps node `i`'s wall clock to `offset_s` seconds from true time, at once; it keeps the
    /// offset across restarts (it is the machine's clock that is off, not the process's).
    pub fn set_clock(&mut self, i: usize, offset_s: i64) -> Result<(), String> {
        if self.opts.faketime.is_none() {
            return Err("clock jumps need the nodes started under libfaketime".into());
        }
        fakeclock::write_offset(&self.nodes[i].clock_file, offset_s)?;
        self.nodes[i].clock_offset_s = offset_s;
        Ok(())
    }

    /// Node `i`'s wall clock minus ours, in ms, from its TIME reply (taken against the middle
    /// of the round trip, so off by at most half of it).
    pub fn measure_clock_ms(&self, i: usize) -> Result<i64, String> {
        let mut c = Conn::connect(&self.addr(i), ADMIN_TIMEOUT).map_err(|e| e.to_string())?;
        let before = now_nanos();
        let r = c.cmd(&["TIME"]).map_err(|e| e.to_string())?;
        let after = now_nanos();
        let parts: Vec<i64> = r
            .as_array()
            .unwrap_or_default()
            .iter()
            .filter_map(|p| p.as_text()?.parse().ok())
            .collect();
        let [s, us] = parts[..] else {
            return Err(format!("TIME replied {r:?}"));
        };
        let ours_us = ((before + after) / 2 / 1000) as i64;
        Ok((s * 1_000_000 + us - ours_us) / 1000)
    }

    /// Starts a killed node again, same directory, address and port.
    pub fn restart(&mut self, i: usize) -> Result<(), String> {
        if self.nodes[i].child.is_some() {
            return Ok(());
        }
        self.spawn(i)?;
        self.wait_ready(i)
    }

    fn signal(&self, i: usize, sig: i32) {
        if let Some(child) = &self.nodes[i].child {
            // SAFETY: a signal to our own child, which we have not reaped.
            unsafe {
                libc::kill(child.id() as i32, sig);
            }
        }
    }

    pub fn pause(&mut self, i: usize) {
        if self.nodes[i].child.is_some() {
            self.signal(i, libc::SIGSTOP);
            self.nodes[i].paused = true;
        }
    }

    pub fn resume(&mut self, i: usize) {
        if self.nodes[i].paused {
            self.signal(i, libc::SIGCONT);
            self.nodes[i].paused = false;
        }
    }

    /// Resumes paused nodes, restarts killed ones, heals the network and sets every clock
    /// back to true time (one more step, for the nodes that were off).
    pub fn heal_all(&mut self) -> Result<(), String> {
        for i in 0..self.len() {
            self.resume(i);
            if self.nodes[i].clock_offset_s != 0 {
                self.set_clock(i, 0)?;
            }
        }
        if let Some(net) = self.net.as_mut() {
            net.heal()?;
        }
        for i in 0..self.len() {
            self.restart(i)?;
        }
        Ok(())
    }

    /// A running node's CLUSTER NODES view, asking `i` first, then the others.
    pub fn view(&self, prefer: usize) -> Option<Vec<NodeView>> {
        let n = self.len();
        for k in 0..n {
            let i = (prefer + k) % n;
            if !self.is_running(i) {
                continue;
            }
            let Ok(mut c) = Conn::connect(&self.addr(i), ADMIN_TIMEOUT) else {
                continue;
            };
            if let Ok(r) = c.cmd(&["CLUSTER", "NODES"])
                && let Some(t) = r.as_text()
            {
                return Some(parse_nodes(&t));
            }
        }
        None
    }

    /// Waits until every node runs, answers, and every node's CLUSTER SLOTS covers all slots
    /// with the same primaries, each of them running.
    pub fn wait_healthy(&self, timeout: Duration) -> Result<(), String> {
        let deadline = Instant::now() + timeout;
        let mut why = String::new();
        while Instant::now() < deadline {
            match self.healthy() {
                Ok(()) => return Ok(()),
                Err(e) => why = e,
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        Err(format!("cluster not healthy after {timeout:?}: {why}"))
    }

    fn healthy(&self) -> Result<(), String> {
        let mut first: Option<Vec<(u16, u16, String)>> = None;
        for i in 0..self.len() {
            if !self.is_running(i) {
                return Err(format!("node {i} is down"));
            }
            let addr = self.addr(i);
            let mut c = Conn::connect(&addr, ADMIN_TIMEOUT).map_err(|e| e.to_string())?;
            if self.opts.target == Target::Redis {
                let info = c
                    .cmd(&["CLUSTER", "INFO"])
                    .map_err(|e| e.to_string())?
                    .as_text()
                    .unwrap_or_default();
                if !info.contains("cluster_state:ok") {
                    return Err(format!("{addr}: cluster_state not ok"));
                }
            }
            // A replica that has not finished its first copy cannot take over (redis refuses
            // to, shoal must not), so a cluster is whole only once every link is up.
            let repl = c
                .cmd(&["INFO", "replication"])
                .map_err(|e| e.to_string())?
                .as_text()
                .unwrap_or_default();
            if repl.contains("role:slave") && !repl.contains("master_link_status:up") {
                return Err(format!("{addr}: replica link not up"));
            }
            let r = c.cmd(&["CLUSTER", "SLOTS"]).map_err(|e| e.to_string())?;
            let mut map = parse_slots(&r).ok_or_else(|| format!("{addr}: bad CLUSTER SLOTS"))?;
            map.sort();
            let covered: usize = map.iter().map(|(lo, hi, _)| (hi - lo) as usize + 1).sum();
            if covered != SLOTS {
                return Err(format!("{addr} sees {covered} slots served"));
            }
            for (_, _, p) in &map {
                match self.index_of(p) {
                    Some(j) if self.is_running(j) => {}
                    _ => return Err(format!("{addr} names {p} a primary, which is not running")),
                }
            }
            match &first {
                None => first = Some(map),
                Some(f) if *f != map => return Err(format!("{addr} disagrees on the slot map")),
                Some(_) => {}
            }
        }
        Ok(())
    }

    /// The current replica groups, from a running node's view.
    pub fn shards(&self) -> Option<Vec<Shard>> {
        self.view(0).map(|v| shards_of(&v))
    }
}

fn now_nanos() -> u128 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0)
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for i in 0..self.nodes.len() {
            self.resume(i);
            self.kill(i);
        }
        self.net = None;
        if self.opts.keep_dirs {
            eprintln!("kept the nodes' directories in {}", self.root.display());
        } else {
            let _ = std::fs::remove_dir_all(&self.root);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cluster_nodes_lines_are_parsed() {
        let text = "\
a1 10.0.0.1:7000@17000 myself,master - 0 0 1 connected 0-5460 7000 [5461->-b2]
b2 10.0.0.2:7000@17000,host master,fail - 0 0 2 connected 5461-10922
c3 10.0.0.3:7000@17000 slave a1 0 0 1 connected
";
        let v = parse_nodes(text);
        assert_eq!(v.len(), 3);
        assert_eq!(v[0].slots, vec![(0, 5460), (7000, 7000)]);
        assert!(v[1].failed && v[1].primary);
        assert_eq!(v[2].primary_id.as_deref(), Some("a1"));
        let shards = shards_of(&v);
        assert_eq!(shards.len(), 2);
        assert_eq!(shards[0].replicas, vec!["10.0.0.3:7000".to_string()]);
    }
}
