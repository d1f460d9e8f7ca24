//! The cluster tools: `shoal cluster check` and `shoal cluster info` (what a cluster looks like
//! from every node, read from `CLUSTER NODES` and `DBSIZE` as `redis-cli --cluster check|info`
//! reads them; `check` fails when nodes disagree about who owns which slot, when a slot has no
//! owner, when a slot is moving, or when a node cannot be reached), `shoal cluster create`
//! (fresh nodes formed into a cluster with `CLUSTER MEET`, `ADDSLOTSRANGE` and `REPLICATE`),
//! `add-node`, `del-node` and `failover` (`CLUSTER FAILOVER` sent to a replica, then a bounded
//! wait until the configuration shows it as primary). The tools tell what they do through a
//! [`Report`]; the binary's shows progress on a terminal.

use std::collections::BTreeMap;
use std::time::Duration;

use crate::tool_client::{Client, Reply};

/// How long one node may take to answer.
pub const NODE_TIMEOUT: Duration = Duration::from_secs(5);
/// How long a node may take to answer a command that changes the cluster configuration (it
/// replies once the change is committed by the configuration group).
pub const CHANGE_TIMEOUT: Duration = Duration::from_secs(30);
/// Nodes a check visits at most (a cluster larger than this is reported as such).
pub const NODES_MAX: usize = 1000;
const SLOTS: usize = shoal_keyspace::SLOTS;

/// How a tool tells what it does: `say` is a line of its report; a step that takes a while shows
/// its progress between `begin` and `end` (the binary draws a bar or a spinner on a terminal and
/// writes plain lines to a log). Any `FnMut(&str)` is a report that shows no progress.
pub trait Report {
    fn say(&mut self, line: &str);
    /// A long step begins: `total` units to do (a bar), or `None` (a spinner).
    fn begin(&mut self, _what: &str, _total: Option<u64>) {}
    /// Progress of the current step: `done` units, and what is happening now.
    fn progress(&mut self, _done: u64, _detail: &str) {}
    /// The current step ended, as `outcome` says.
    fn end(&mut self, _outcome: &str) {}
}

impl<F: FnMut(&str)> Report for F {
    fn say(&mut self, line: &str) {
        self(line)
    }
}

/// One line of `CLUSTER NODES`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeLine {
    pub id: String,
    /// `ip:port`.
    pub addr: String,
    pub myself: bool,
    pub primary: bool,
    /// The primary's id, for a replica.
    pub replica_of: Option<String>,
    /// Owned slots as inclusive ranges.
    pub slots: Vec<(u16, u16)>,
    /// Slots shown moving (`[slot->-id]` or `[slot-<-id]`).
    pub moving: Vec<u16>,
}

/// Parses `CLUSTER NODES` text; an error names the first line that is not one.
pub fn parse_nodes(text: &str) -> Result<Vec<NodeLine>, String> {
    let mut out = Vec::new();
    for line in text.lines().filter(|l| !l.trim().is_empty()) {
        let f: Vec<&str> = line.split(' ').collect();
        if f.len() < 8 {
            return Err(format!("not a CLUSTER NODES line: {line:?}"));
        }
        let addr = f[1].split('@').next().unwrap_or("").to_string();
        let flags: Vec<&str> = f[2].split(',').collect();
        let mut slots = Vec::new();
        let mut moving = Vec::new();
        for s in &f[8..] {
            if let Some(inner) = s.strip_prefix('[') {
                let slot = inner
                    .split(['-', '>', '<'])
                    .next()
                    .and_then(|n| n.parse().ok())
                    .ok_or_else(|| format!("bad moving slot {s:?}"))?;
                moving.push(slot);
                continue;
            }
            let (a, b) = s.split_once('-').unwrap_or((s, s));
            let (a, b): (u16, u16) = match (a.parse(), b.parse()) {
                (Ok(a), Ok(b)) if a <= b && (b as usize) < SLOTS => (a, b),
                _ => return Err(format!("bad slot range {s:?}")),
            };
            slots.push((a, b));
        }
        out.push(NodeLine {
            id: f[0].to_string(),
            addr,
            myself: flags.contains(&"myself"),
            primary: flags.contains(&"master"),
            replica_of: (f[3] != "-").then(|| f[3].to_string()),
            slots,
            moving,
        });
    }
    Ok(out)
}

pub(crate) fn text(r: Reply) -> Result<String, String> {
    match r {
        Reply::Bulk(Some(b)) => Ok(String::from_utf8_lossy(&b).into_owned()),
        Reply::Status(s) => Ok(s),
        Reply::Error(e) => Err(e),
        other => Err(format!("unexpected reply {other:?}")),
    }
}

pub(crate) fn nodes_of(addr: &str, password: Option<&str>) -> Result<Vec<NodeLine>, String> {
    let mut c = connect(addr, password)?;
    let t = text(
        c.cmd(&["CLUSTER", "NODES"])
            .map_err(|e| format!("{addr}: {e}"))?,
    )
    .map_err(|e| format!("{addr}: {e}"))?;
    parse_nodes(&t).map_err(|e| format!("{addr}: {e}"))
}

pub(crate) fn connect(addr: &str, password: Option<&str>) -> Result<Client, String> {
    connect_for(addr, password, NODE_TIMEOUT)
}

pub(crate) fn connect_for(
    addr: &str,
    password: Option<&str>,
    timeout: Duration,
) -> Result<Client, String> {
    let mut c = Client::connect(addr, timeout).map_err(|e| format!("{addr}: {e}"))?;
    if let Some(p) = password
        && let Reply::Error(e) = c.cmd(&["AUTH", p]).map_err(|e| format!("{addr}: {e}"))?
    {
        return Err(format!("{addr}: {e}"));
    }
    Ok(c)
}

/// The slot owners a node's view gives, as an array of owner ids.
fn owners(view: &[NodeLine]) -> Vec<Option<&str>> {
    let mut o = vec![None; SLOTS];
    for n in view {
        for &(a, b) in &n.slots {
            for s in a..=b {
                o[s as usize] = Some(n.id.as_str());
            }
        }
    }
    o
}

/// What `check` found.
#[derive(Debug, Default)]
pub struct CheckReport {
    pub lines: Vec<String>,
    pub problems: usize,
}

impl CheckReport {
    fn ok(&mut self, s: String) {
        self.lines.push(format!("[OK] {s}"));
    }
    fn err(&mut self, s: String) {
        self.lines.push(format!("[ERR] {s}"));
        self.problems += 1;
    }
}

/// Checks the cluster `addr` belongs to, from every node's own view.
pub fn check(addr: &str, password: Option<&str>) -> Result<CheckReport, String> {
    let first = nodes_of(addr, password)?;
    if first.len() > NODES_MAX {
        return Err(format!("more than {NODES_MAX} nodes"));
    }
    let mut r = CheckReport::default();
    let reference = owners(&first);
    for n in &first {
        let role = if n.primary { "M" } else { "S" };
        let slots: usize = n.slots.iter().map(|&(a, b)| (b - a) as usize + 1).sum();
        r.lines.push(format!(
            "{role}: {} {}\n   slots: {} ({slots} slots){}",
            n.id,
            n.addr,
            n.slots
                .iter()
                .map(|&(a, b)| if a == b {
                    a.to_string()
                } else {
                    format!("{a}-{b}")
                })
                .collect::<Vec<_>>()
                .join(","),
            n.replica_of
                .as_ref()
                .map(|p| format!("\n   replicates {p}"))
                .unwrap_or_default()
        ));
    }
    let mut agree = true;
    for n in &first {
        match nodes_of(&n.addr, password) {
            Ok(view) => {
                if owners(&view) != reference {
                    agree = false;
                    r.err(format!("{} ({}) sees another slot map", n.addr, n.id));
                }
                for m in view.iter().filter(|m| m.myself && !m.moving.is_empty()) {
                    r.err(format!(
                        "{} has slots moving: {:?}",
                        m.addr,
                        &m.moving[..m.moving.len().min(16)]
                    ));
                }
            }
            Err(e) => {
                agree = false;
                r.err(format!("cannot read {}: {e}", n.addr));
            }
        }
    }
    if agree {
        r.ok("All nodes agree about slots configuration.".into());
    }
    let covered = reference.iter().filter(|o| o.is_some()).count();
    if covered == SLOTS {
        r.ok(format!("All {SLOTS} slots covered."));
    } else {
        r.err(format!(
            "Not all {SLOTS} slots are covered by nodes ({covered} are)."
        ));
    }
    Ok(r)
}

/// One line per primary: address, id, keys, slots and replicas, then the totals.
pub fn info(addr: &str, password: Option<&str>) -> Result<Vec<String>, String> {
    let view = nodes_of(addr, password)?;
    let mut replicas: BTreeMap<&str, usize> = BTreeMap::new();
    for n in &view {
        if let Some(p) = &n.replica_of {
            *replicas.entry(p.as_str()).or_default() += 1;
        }
    }
    let mut out = Vec::new();
    let (mut keys_total, mut primaries) = (0u64, 0usize);
    for n in view.iter().filter(|n| n.primary) {
        let keys = match connect(&n.addr, password)
            .and_then(|mut c| c.cmd(&["DBSIZE"]).map_err(|e| e.to_string()))
        {
            Ok(Reply::Int(k)) => k.max(0) as u64,
            Ok(other) => return Err(format!("{}: DBSIZE answered {other:?}", n.addr)),
            Err(e) => return Err(e),
        };
        let slots: usize = n.slots.iter().map(|&(a, b)| (b - a) as usize + 1).sum();
        let reps = replicas.get(n.id.as_str()).copied().unwrap_or(0);
        out.push(format!(
            "{} ({}...) -> {keys} keys | {slots} slots | {reps} slaves.",
            n.addr,
            &n.id[..8.min(n.id.len())]
        ));
        keys_total += keys;
        primaries += 1;
    }
    out.push(format!(
        "[OK] {keys_total} keys in {primaries} masters.\n{:.2} keys per slot on average.",
        keys_total as f64 / SLOTS as f64
    ));
    Ok(out)
}

/// How long `create` waits for every node to see the finished configuration.
pub const CREATE_SETTLE_TIMEOUT: Duration = Duration::from_secs(30);
/// How long the tools wait for a node to know its configuration group's leader.
pub const LEADER_WAIT: Duration = Duration::from_secs(10);
/// Primaries a cluster needs at least (as `redis-cli --cluster create` requires).
pub const PRIMARIES_MIN: usize = 3;

pub(crate) fn reply_ok(addr: &str, r: std::io::Result<Reply>) -> Result<Reply, String> {
    match r.map_err(|e| format!("{addr}: {e}"))? {
        Reply::Error(e) => Err(format!("{addr}: {e}")),
        other => Ok(other),
    }
}

/// Forms a cluster of the nodes at `addrs` (each in cluster mode, empty and in no cluster): the
/// first `addrs.len() / (replicas + 1)` are primaries sharing the slots evenly, the others
/// replicas, spread over the primaries in turn. `say` gets a line per step. Returns once every
/// node sees the whole configuration.
pub fn create(
    addrs: &[String],
    replicas: usize,
    password: Option<&str>,
    mut report: impl Report,
) -> Result<(), String> {
    let mut say = |l: &str| report.say(l);
    let primaries = addrs.len() / (replicas + 1);
    if primaries < PRIMARIES_MIN {
        return Err(format!(
            "{} nodes with {replicas} replica(s) each make {primaries} primaries; a cluster needs at \
             least {PRIMARIES_MIN}",
            addrs.len()
        ));
    }
    // Every node: reachable, in cluster mode, in no cluster, empty; its id and IP.
    let mut nodes = Vec::new();
    for addr in addrs {
        let mut c = connect(addr, password)?;
        let info = text(reply_ok(addr, c.cmd(&["INFO", "cluster"]))?)?;
        if !info.contains("cluster_enabled:1") {
            return Err(format!(
                "{addr} is not in cluster mode (cluster-enabled yes)"
            ));
        }
        if !info.contains("shoal_cluster_formed:0") {
            return Err(format!("{addr} already belongs to a cluster"));
        }
        if reply_ok(addr, c.cmd(&["DBSIZE"]))?.as_int() != Some(0) {
            return Err(format!("{addr} holds keys"));
        }
        let id = text(reply_ok(addr, c.cmd(&["CLUSTER", "MYID"]))?)?;
        let ip = std::net::ToSocketAddrs::to_socket_addrs(addr.as_str())
            .ok()
            .and_then(|mut a| a.next())
            .ok_or_else(|| format!("{addr}: no address"))?;
        nodes.push((addr.clone(), id, ip));
    }
    let per = SLOTS as f32 / primaries as f32;
    let first = &nodes[0].0;
    let mut lead = connect_for(first, password, CHANGE_TIMEOUT)?;
    say(&format!(">>> Forming the configuration group on {first}"));
    for (addr, _, ip) in &nodes[1..] {
        say(&format!(">>> Meeting {addr}"));
        reply_ok(
            first,
            lead.cmd(&[
                "CLUSTER",
                "MEET",
                &ip.ip().to_string(),
                &ip.port().to_string(),
            ]),
        )?;
    }
    // Split as redis-cli does (in f32, rounded), so a cluster of three has Redis's familiar
    // 0-5460, 5461-10922, 10923-16383.
    let mut start = 0usize;
    let mut cursor = 0f32;
    for (i, (addr, _, _)) in nodes[..primaries].iter().enumerate() {
        let mut end = (cursor + per - 1.0).round() as usize;
        if end > SLOTS || i + 1 == primaries {
            end = SLOTS - 1;
        }
        end = end.max(start);
        cursor += per;
        let first = start;
        start = end + 1;
        let start = first;
        say(&format!(">>> Slots {start}-{end} to {addr}"));
        let mut c = connect_for(addr, password, CHANGE_TIMEOUT)?;
        reply_ok(
            addr,
            c.cmd(&[
                "CLUSTER",
                "ADDSLOTSRANGE",
                &start.to_string(),
                &end.to_string(),
            ]),
        )?;
    }
    // A primary takes replicas once it serves its slots: a replica attached before its primary's
    // first lease (a loaded machine delays it past ADDSLOTS's bounded wait) makes that lease wait
    // for the lapse of the one the replica held as a primary without slots, up to 40% of the
    // node timeout, and the replica cannot sync meanwhile.
    for (addr, _, _) in &nodes[..primaries] {
        wait_lease(addr, password)?;
    }
    for (j, (addr, _, _)) in nodes[primaries..].iter().enumerate() {
        let (paddr, pid, _) = &nodes[j % primaries];
        say(&format!(">>> {addr} replicates {paddr}"));
        wait_knows(addr, pid, password)?;
        let mut c = connect_for(addr, password, CHANGE_TIMEOUT)?;
        reply_ok(addr, c.cmd(&["CLUSTER", "REPLICATE", pid]))?;
    }
    let started = std::time::Instant::now();
    let deadline = started + CREATE_SETTLE_TIMEOUT;
    report.begin(
        ">>> Waiting for every node to agree",
        Some(nodes.len() as u64),
    );
    // Replicas are dealt round-robin: primary i has one more when i < remainder.
    let want_in_sync = |i: usize| {
        (nodes.len() - primaries) / primaries
            + usize::from(i < (nodes.len() - primaries) % primaries)
    };
    loop {
        let r = check(first, password)?;
        let known = nodes_of(first, password)?.len();
        report.progress(
            known.min(nodes.len()) as u64,
            &format!("{known} node(s) known, {} problem(s) left", r.problems),
        );
        if r.problems == 0
            && known == nodes.len()
            && nodes[..primaries]
                .iter()
                .enumerate()
                .all(|(i, (addr, _, _))| in_sync_count(addr, password) == Some(want_in_sync(i)))
        {
            report.end(&format!(
                "agreed in {:.1}s",
                started.elapsed().as_secs_f64()
            ));
            report.say("[OK] All nodes agree about slots configuration.");
            report.say(&format!("[OK] All {SLOTS} slots covered."));
            if nodes.len() > primaries {
                report.say("[OK] Every replica is in its primary's in-sync set.");
            }
            return Ok(());
        }
        if std::time::Instant::now() >= deadline {
            report.end("gave up");
            // Which primaries' in-sync sets are short, so a stalled replica can be found.
            let in_sync: Vec<String> = nodes[..primaries]
                .iter()
                .enumerate()
                .map(|(i, (addr, _, _))| {
                    let have = in_sync_count(addr, password)
                        .map_or_else(|| "?".to_string(), |n| n.to_string());
                    format!("{addr}: {have} of {} replica(s) in sync", want_in_sync(i))
                })
                .collect();
            return Err(format!(
                "the nodes did not agree within {CREATE_SETTLE_TIMEOUT:?}:\n{}\nin-sync sets: {}",
                r.lines.join("\n"),
                in_sync.join("; ")
            ));
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The size of the in-sync set a primary reports (`shoal_in_sync` in `CLUSTER INFO`).
fn in_sync_count(addr: &str, password: Option<&str>) -> Option<usize> {
    let mut c = connect_for(addr, password, CHANGE_TIMEOUT).ok()?;
    let text = match c.cmd(&["CLUSTER", "INFO"]).ok()? {
        Reply::Bulk(Some(b)) => String::from_utf8_lossy(&b).into_owned(),
        _ => return None,
    };
    let v = text
        .lines()
        .find_map(|l| l.strip_prefix("shoal_in_sync:"))?
        .trim();
    Some(if v.is_empty() {
        0
    } else {
        v.split(',').count()
    })
}

/// Waits until the node at `addr` has installed a configuration that names `id` (a node just
/// met learns the configuration from the group a moment after the leader committed it).
/// Waits until the node at `addr` holds its write lease (CLUSTER INFO `shoal_lease_state:held`).
fn wait_lease(addr: &str, password: Option<&str>) -> Result<(), String> {
    let deadline = std::time::Instant::now() + CREATE_SETTLE_TIMEOUT;
    let mut c = connect_for(addr, password, CHANGE_TIMEOUT)?;
    loop {
        let info = text(reply_ok(addr, c.cmd(&["CLUSTER", "INFO"]))?)?;
        if info.lines().any(|l| l.trim() == "shoal_lease_state:held") {
            return Ok(());
        }
        if std::time::Instant::now() >= deadline {
            let why = info
                .lines()
                .find_map(|l| l.strip_prefix("shoal_lease_last_refusal:"))
                .unwrap_or("")
                .trim()
                .to_string();
            return Err(format!(
                "{addr} holds no lease after {CREATE_SETTLE_TIMEOUT:?} (last refusal: {why})"
            ));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn wait_knows(addr: &str, id: &str, password: Option<&str>) -> Result<(), String> {
    let deadline = std::time::Instant::now() + CREATE_SETTLE_TIMEOUT;
    while !nodes_of(addr, password)?.iter().any(|n| n.id == id) {
        if std::time::Instant::now() >= deadline {
            return Err(format!(
                "{addr} did not learn of {id} within {CREATE_SETTLE_TIMEOUT:?}"
            ));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    Ok(())
}

/// The address of the configuration group's leader, as the node at `addr` knows it.
/// Waits up to [`LEADER_WAIT`] while an election runs or the node's view is being refreshed.
fn leader_of(addr: &str, password: Option<&str>) -> Result<String, String> {
    let mut c = connect(addr, password)?;
    let deadline = std::time::Instant::now() + LEADER_WAIT;
    let leader: u64 = loop {
        let info = text(reply_ok(addr, c.cmd(&["INFO", "cluster"]))?)?;
        if let Some(l) = info
            .lines()
            .find_map(|l| l.strip_prefix("shoal_raft_leader:"))
            .and_then(|v| v.trim().parse().ok())
        {
            break l;
        }
        if std::time::Instant::now() >= deadline {
            return Err(format!("{addr} knows no leader of its configuration group"));
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    nodes_of(addr, password)?
        .into_iter()
        .find(|n| u64::from_str_radix(&n.id[..16.min(n.id.len())], 16).ok() == Some(leader))
        .map(|n| n.addr)
        .ok_or_else(|| format!("{addr}: the leader is not in the configuration"))
}

/// Adds the fresh node at `new` to the cluster `existing` belongs to (through the group's
/// leader), as a replica of `replica_of` if given. Waits until `existing` sees it.
pub fn add_node(
    new: &str,
    existing: &str,
    replica_of: Option<&str>,
    password: Option<&str>,
    mut say: impl FnMut(&str),
) -> Result<(), String> {
    let leader = leader_of(existing, password)?;
    let ip = std::net::ToSocketAddrs::to_socket_addrs(new)
        .ok()
        .and_then(|mut a| a.next())
        .ok_or_else(|| format!("{new}: no address"))?;
    say(&format!(">>> Meeting {new} from {leader}"));
    let mut l = connect_for(&leader, password, CHANGE_TIMEOUT)?;
    reply_ok(
        &leader,
        l.cmd(&[
            "CLUSTER",
            "MEET",
            &ip.ip().to_string(),
            &ip.port().to_string(),
        ]),
    )?;
    if let Some(primary) = replica_of {
        say(&format!(">>> {new} replicates {primary}"));
        wait_knows(new, primary, password)?;
        let mut c = connect_for(new, password, CHANGE_TIMEOUT)?;
        reply_ok(new, c.cmd(&["CLUSTER", "REPLICATE", primary]))?;
    }
    let id = text(reply_ok(
        new,
        connect(new, password)?.cmd(&["CLUSTER", "MYID"]),
    )?)?;
    wait_knows(existing, &id, password)?;
    say("[OK] New node added correctly.");
    Ok(())
}

/// Removes the node `id` (no slots, no replicas) from the cluster `existing` belongs to.
pub fn del_node(
    existing: &str,
    id: &str,
    password: Option<&str>,
    mut say: impl FnMut(&str),
) -> Result<(), String> {
    let leader = leader_of(existing, password)?;
    say(&format!(
        ">>> Removing node {id} from the cluster (through {leader})"
    ));
    let mut l = connect_for(&leader, password, CHANGE_TIMEOUT)?;
    reply_ok(&leader, l.cmd(&["CLUSTER", "FORGET", id]))?;
    say("[OK] Node removed.");
    Ok(())
}

/// How long `shoal cluster failover` waits, by default, for the configuration to show the replica
/// as primary (a coordinated failover gives up within `MANUAL_FAILOVER_TIMEOUT_MS` plus the
/// promotion's commit, so this is ample).
pub const FAILOVER_WAIT: Duration = Duration::from_secs(30);

/// `CLUSTER FAILOVER`'s option.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FailoverMode {
    /// Coordinated with the primary: no acknowledged write is lost.
    Coordinated,
    /// Without the primary (it may be down).
    Force,
    /// As FORCE in shoal (the configuration group orders the change; no election to skip).
    Takeover,
}

/// Sends `CLUSTER FAILOVER` to the replica at `addr` and waits, at most `wait`, until its
/// configuration shows it as a primary.
pub fn failover(
    addr: &str,
    mode: FailoverMode,
    password: Option<&str>,
    wait: Duration,
    mut report: impl Report,
) -> Result<(), String> {
    let mut c = connect(addr, password)?;
    let id = text(reply_ok(addr, c.cmd(&["CLUSTER", "MYID"]))?)?;
    let primary = nodes_of(addr, password)?
        .into_iter()
        .find(|n| n.id == id)
        .and_then(|n| n.replica_of)
        .unwrap_or_else(|| "-".into());
    let mut args = vec!["CLUSTER", "FAILOVER"];
    match mode {
        FailoverMode::Coordinated => {}
        FailoverMode::Force => args.push("FORCE"),
        FailoverMode::Takeover => args.push("TAKEOVER"),
    }
    report.say(&format!(
        ">>> Sending {} to {addr} ({id}), a replica of {primary}",
        args.join(" ")
    ));
    reply_ok(addr, c.cmd(&args))?;
    let started = std::time::Instant::now();
    report.begin(&format!(">>> Waiting for {addr} to become a primary"), None);
    loop {
        let view = nodes_of(addr, password)?;
        let me = view.iter().find(|n| n.id == id);
        if me.is_some_and(|n| n.primary) {
            report.end(&format!(
                "promoted in {:.1}s",
                started.elapsed().as_secs_f64()
            ));
            let slots: usize = me
                .map(|n| n.slots.iter().map(|&(a, b)| (b - a) as usize + 1).sum())
                .unwrap_or(0);
            report.say(&format!(
                "[OK] {addr} ({id}) is a primary serving {slots} slots; {primary} replicates it."
            ));
            return Ok(());
        }
        if started.elapsed() >= wait {
            report.end("gave up");
            return Err(format!(
                "{addr} is still a replica after {wait:?}: the failover did not complete (the \
                 node's log says why)"
            ));
        }
        report.progress(
            started.elapsed().as_millis() as u64,
            &format!("still a replica of {primary}"),
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cluster_nodes_lines_parse_as_redis_writes_them() {
        let t = "07c37dfeb235213a872192d90877d0cd55635b91 127.0.0.1:30004@31004 slave e7d1eecce10fd6bb5eb35b9f99a514335d9ba9ca 0 1426238317239 4 connected\n\
                 e7d1eecce10fd6bb5eb35b9f99a514335d9ba9ca 127.0.0.1:30001@31001 myself,master - 0 0 1 connected 0-5460 5461 [5462->-67ed2db8d677e59ec4a4cefb06858cf2a1a89fa1]\n";
        let n = parse_nodes(t).unwrap();
        assert_eq!(n.len(), 2);
        assert_eq!(
            n[0].replica_of.as_deref(),
            Some("e7d1eecce10fd6bb5eb35b9f99a514335d9ba9ca")
        );
        assert!(!n[0].primary && n[1].primary && n[1].myself);
        assert_eq!(n[1].addr, "127.0.0.1:30001");
        assert_eq!(n[1].slots, vec![(0, 5460), (5461, 5461)]);
        assert_eq!(n[1].moving, vec![5462]);
        assert!(parse_nodes("garbage").is_err());
        assert!(parse_nodes("a b c d e f g h 9-1").is_err());
    }
}
