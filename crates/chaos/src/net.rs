//! The suite's own network: Linux network namespaces it creates and removes, so partitions
//! never touch the host's network.
//!
//! Shape: a hub namespace `chaos<pid>-<serial>-h` holds a bridge `br0` (10.77.0.254/24, where the
//! clients live); node `i` runs in `chaos<pid>-<serial>-n<i>` behind a veth pair (`c<pid>h<i>` on the
//! bridge, `eth0` inside) with address 10.77.0.<i+1>/24. The thread that creates `Net` moves
//! itself into the hub (`setns` is per thread), so every thread and process it starts later is
//! there too; dropping `Net` moves it back and deletes every namespace (which removes the veths).
//!
//! Partitions cut node pairs with blackhole routes (`ip route add blackhole 10.77.0.j/32` in
//! node i's namespace, and the reverse): this kernel has no `sch_prio`, `sch_netem` or
//! `act_gact` (so no `tc ... action drop`) and no iptables is installed, and a route is the
//! least machinery that drops one pair's packets both ways. Clients keep reaching every node,
//! so an isolated primary is still asked for writes (it must refuse them).
//!
//! Slow links use `tc qdisc ... netem delay/loss` when the kernel has it, else a `tbf` rate
//! limit (the link is slow by bandwidth, not by added delay), and say which.

use std::collections::BTreeSet;
use std::fs::File;
use std::os::fd::AsRawFd;
use std::process::Command;

pub const SUBNET: &str = "10.77.0";
pub const CLIENT_IP: &str = "10.77.0.254";

pub fn node_ip(i: usize) -> String {
    assert!(i < 250, "at most 250 nodes in one /24");
    format!("{SUBNET}.{}", i + 1)
}

/// Runs `ip`/`tc` and returns its stdout, or an error with its stderr.
pub fn sh(prog: &str, args: &[&str]) -> Result<String, String> {
    let out = Command::new(prog)
        .args(args)
        .output()
        .map_err(|e| format!("{prog}: {e}"))?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(format!(
            "{prog} {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

/// Why namespaces cannot be used here, if they cannot.
pub fn unavailable() -> Option<String> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        return Some(
            "network partitions need root (network namespaces, veth pairs); run as root, or \
             leave `partition` and `slow` out of --faults (kill and pause work on loopback)"
                .into(),
        );
    }
    if let Err(e) = sh("ip", &["netns", "list"]) {
        return Some(format!(
            "network partitions need iproute2's `ip netns`: {e}"
        ));
    }
    None
}

/// Removes namespaces (and kills the processes in them) left by suite runs whose process is
/// gone. Namespaces of live runs (another engineer's, or a parallel test) are left alone.
pub fn remove_stale() -> usize {
    let Ok(list) = sh("ip", &["netns", "list"]) else {
        return 0;
    };
    let mut removed = 0;
    for line in list.lines() {
        let name = line.split_whitespace().next().unwrap_or("");
        let Some(pid) = name
            .strip_prefix("chaos")
            .and_then(|r| r.split('-').next())
            .and_then(|p| p.parse::<u32>().ok())
        else {
            continue;
        };
        if std::path::Path::new(&format!("/proc/{pid}")).exists() {
            continue;
        }
        kill_all_in(name);
        if sh("ip", &["netns", "del", name]).is_ok() {
            removed += 1;
        }
    }
    removed
}

fn kill_all_in(ns: &str) {
    if let Ok(pids) = sh("ip", &["netns", "pids", ns]) {
        for pid in pids
            .split_whitespace()
            .filter_map(|p| p.parse::<i32>().ok())
        {
            // SAFETY: plain syscalls on pids the kernel listed in our namespace.
            unsafe {
                libc::kill(pid, libc::SIGCONT);
                libc::kill(pid, libc::SIGKILL);
            }
        }
    }
}

/// Makes the names of two `Net`s of one process (parallel tests) differ.
static NEXT_NET: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);

pub struct Net {
    pid: u32,
    serial: u32,
    nodes: usize,
    /// The namespace this thread was in before it entered the hub.
    home: Option<File>,
    blocked: BTreeSet<(usize, usize)>,
    slowed: BTreeSet<usize>,
}

impl Net {
    pub fn hub(&self) -> String {
        format!("chaos{}-{}-h", self.pid, self.serial)
    }

    pub fn ns(&self, i: usize) -> String {
        format!("chaos{}-{}-n{i}", self.pid, self.serial)
    }

    fn hub_veth(&self, i: usize) -> String {
        format!("c{}h{i}", self.pid)
    }

    /// Builds the namespaces for `nodes` nodes and moves the calling thread into the hub.
    pub fn create(nodes: usize) -> Result<Net, String> {
        if let Some(why) = unavailable() {
            return Err(why);
        }
        remove_stale();
        let mut net = Net {
            pid: std::process::id(),
            serial: NEXT_NET.fetch_add(1, std::sync::atomic::Ordering::Relaxed),
            nodes: 0,
            home: None,
            blocked: BTreeSet::new(),
            slowed: BTreeSet::new(),
        };
        if sh("ip", &["netns", "list"])?.contains(&net.hub()) {
            return Err(format!(
                "namespace {} exists: one Net per process at a time",
                net.hub()
            ));
        }
        let hub = net.hub();
        sh("ip", &["netns", "add", &hub])?;
        net.nodes = nodes; // from here on, Drop removes what exists
        sh("ip", &["-n", &hub, "link", "set", "lo", "up"])?;
        sh(
            "ip",
            &["-n", &hub, "link", "add", "name", "br0", "type", "bridge"],
        )?;
        sh(
            "ip",
            &[
                "-n",
                &hub,
                "addr",
                "add",
                &format!("{CLIENT_IP}/24"),
                "dev",
                "br0",
            ],
        )?;
        sh("ip", &["-n", &hub, "link", "set", "br0", "up"])?;
        for i in 0..nodes {
            let (ns, veth) = (net.ns(i), net.hub_veth(i));
            sh("ip", &["netns", "add", &ns])?;
            sh(
                "ip",
                &[
                    "-n", &hub, "link", "add", "name", &veth, "type", "veth", "peer", "name",
                    "eth0", "netns", &ns,
                ],
            )?;
            sh(
                "ip",
                &["-n", &hub, "link", "set", &veth, "master", "br0", "up"],
            )?;
            sh("ip", &["-n", &ns, "link", "set", "lo", "up"])?;
            sh(
                "ip",
                &[
                    "-n",
                    &ns,
                    "addr",
                    "add",
                    &format!("{}/24", node_ip(i)),
                    "dev",
                    "eth0",
                ],
            )?;
            sh("ip", &["-n", &ns, "link", "set", "eth0", "up"])?;
        }
        net.enter_hub()?;
        Ok(net)
    }

    fn enter_hub(&mut self) -> Result<(), String> {
        let home = File::open("/proc/thread-self/ns/net").map_err(|e| format!("own netns: {e}"))?;
        let path = format!("/run/netns/{}", self.hub());
        let hub = File::open(&path).map_err(|e| format!("{path}: {e}"))?;
        // SAFETY: setns on a namespace fd we hold open; affects this thread only.
        if unsafe { libc::setns(hub.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
            return Err(format!("setns {path}: {}", std::io::Error::last_os_error()));
        }
        self.home = Some(home);
        Ok(())
    }

    /// Cuts the links between every node of `a` and every node of `b` (both directions).
    pub fn partition(&mut self, a: &[usize], b: &[usize]) -> Result<(), String> {
        for &i in a {
            for &j in b {
                if i == j || self.blocked.contains(&(i.min(j), i.max(j))) {
                    continue;
                }
                for (from, to) in [(i, j), (j, i)] {
                    let dst = format!("{}/32", node_ip(to));
                    sh(
                        "ip",
                        &["-n", &self.ns(from), "route", "replace", "blackhole", &dst],
                    )?;
                }
                self.blocked.insert((i.min(j), i.max(j)));
            }
        }
        Ok(())
    }

    /// Makes the links of node `i` slow: `delay_ms` each way and `loss_pct` loss with netem, or
    /// a 256 kbit/s limit where the kernel has no netem. Returns what it did.
    pub fn slow(&mut self, i: usize, delay_ms: u64, loss_pct: u64) -> Result<String, String> {
        let ends = [
            (self.hub(), self.hub_veth(i)),
            (self.ns(i), "eth0".to_string()),
        ];
        let mut how = String::new();
        for (ns, dev) in &ends {
            let netem = sh(
                "ip",
                &[
                    "netns",
                    "exec",
                    ns,
                    "tc",
                    "qdisc",
                    "replace",
                    "dev",
                    dev,
                    "root",
                    "netem",
                    "delay",
                    &format!("{delay_ms}ms"),
                    "loss",
                    &format!("{loss_pct}%"),
                ],
            );
            how = match netem {
                Ok(_) => format!("netem delay {delay_ms}ms loss {loss_pct}%"),
                Err(_) => {
                    sh(
                        "ip",
                        &[
                            "netns",
                            "exec",
                            ns,
                            "tc",
                            "qdisc",
                            "replace",
                            "dev",
                            dev,
                            "root",
                            "tbf",
                            "rate",
                            "256kbit",
                            "burst",
                            "4kb",
                            "latency",
                            &format!("{}ms", delay_ms.max(50)),
                        ],
                    )?;
                    "tbf rate 256kbit (no netem in this kernel)".to_string()
                }
            };
        }
        self.slowed.insert(i);
        Ok(how)
    }

    /// Restores every link: partitions and slow links.
    pub fn heal(&mut self) -> Result<(), String> {
        let mut first_err = None;
        for (i, j) in std::mem::take(&mut self.blocked) {
            for (from, to) in [(i, j), (j, i)] {
                let dst = format!("{}/32", node_ip(to));
                if let Err(e) = sh(
                    "ip",
                    &["-n", &self.ns(from), "route", "del", "blackhole", &dst],
                ) {
                    first_err.get_or_insert(e);
                }
            }
        }
        for i in std::mem::take(&mut self.slowed) {
            for (ns, dev) in [
                (self.hub(), self.hub_veth(i)),
                (self.ns(i), "eth0".to_string()),
            ] {
                let _ = sh(
                    "ip",
                    &[
                        "netns", "exec", &ns, "tc", "qdisc", "del", "dev", &dev, "root",
                    ],
                );
            }
        }
        first_err.map_or(Ok(()), Err)
    }

    pub fn is_healed(&self) -> bool {
        self.blocked.is_empty() && self.slowed.is_empty()
    }
}

impl Drop for Net {
    fn drop(&mut self) {
        if let Some(home) = self.home.take() {
            // SAFETY: back to the namespace this thread came from, by an fd we hold.
            unsafe {
                libc::setns(home.as_raw_fd(), libc::CLONE_NEWNET);
            }
        }
        for i in 0..self.nodes {
            kill_all_in(&self.ns(i));
            let _ = sh("ip", &["netns", "del", &self.ns(i)]);
        }
        if self.nodes > 0 {
            let _ = sh("ip", &["netns", "del", &self.hub()]);
        }
    }
}
