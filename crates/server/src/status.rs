//! The status page's data: `/api/cluster`, a JSON view of the whole cluster (or, standalone, of
//! this node and its replicas) that the page (`status/index.html`) polls about once a second.
//!
//! The shape comes from this node's cluster configuration (nodes, roles, slot owners, moving
//! slots, the configuration group's Raft term and leader); the numbers (memory, ops/s,
//! replication offsets and lag, keys) from asking every node `INFO` over its data port, in
//! parallel, each with a short timeout ([`PEER_TIMEOUT`]): a node that does not answer in time
//! is shown as unreachable, never waited for. This node answers from its own state without a
//! socket. A view is kept for [`VIEW_TTL`], so many open pages cost one round of questions.
//!
//! The slot map goes out as runs `[first, last, node index]` (a few per node, not 16384
//! entries), plus the moving slots `[slot, owner index, target index]`.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::Ordering::Relaxed;
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use shoal_commands::ServerState;
use shoal_keyspace::SLOTS;

use crate::tool_client::{Client, Reply};

/// How long a peer has to connect and answer `INFO`.
pub const PEER_TIMEOUT: Duration = Duration::from_millis(300);
/// How long a built view is served again before peers are asked anew.
pub const VIEW_TTL: Duration = Duration::from_millis(500);
/// Peers asked at once (each question holds a thread for at most [`PEER_TIMEOUT`] twice).
pub const PEERS_IN_FLIGHT_MAX: usize = 16;

/// The INFO sections a node is asked for.
const SECTIONS: &[&str] = &["server", "memory", "stats", "replication", "keyspace"];

/// The last view built, shared by the HTTP connections.
#[derive(Debug, Default)]
pub struct ViewCache {
    last: Mutex<Option<(Instant, Arc<String>)>>,
}

impl ViewCache {
    /// The view, built now or at most [`VIEW_TTL`] ago. Blocking (asks peers): run it off the
    /// runtime's workers.
    pub fn get(&self, srv: &ServerState) -> Arc<String> {
        let mut last = self.last.lock().expect("view cache lock");
        if let Some((at, v)) = &*last
            && at.elapsed() < VIEW_TTL
        {
            return v.clone();
        }
        let v = Arc::new(build(srv).to_string());
        *last = Some((Instant::now(), v.clone()));
        v
    }
}

/// One node's INFO fields, or why it could not be read.
type Fields = Result<HashMap<String, String>, String>;

/// Parses INFO text into its `field:value` lines.
fn parse_info(text: &str) -> HashMap<String, String> {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.to_string(), v.trim_end().to_string()))
        .collect()
}

/// Asks the node at `addr` for its INFO.
fn ask(addr: &str, password: &str, tls: bool) -> Fields {
    let mut c = Client::connect_with(addr, PEER_TIMEOUT, tls).map_err(|e| e.to_string())?;
    if !password.is_empty()
        && let Reply::Error(e) = c.cmd(&["AUTH", password]).map_err(|e| e.to_string())?
    {
        return Err(e);
    }
    let mut args = vec!["INFO"];
    args.extend(SECTIONS);
    match c.cmd(&args).map_err(|e| e.to_string())? {
        Reply::Bulk(Some(b)) => Ok(parse_info(&String::from_utf8_lossy(&b))),
        Reply::Error(e) => Err(e),
        other => Err(format!("INFO answered {other:?}")),
    }
}

/// This node's own INFO, without a socket.
fn own(srv: &ServerState) -> Fields {
    let sections: Vec<String> = SECTIONS.iter().map(|s| s.to_string()).collect();
    let now_ms = crate::now_ms();
    Ok(parse_info(&shoal_commands::server::info_text(
        srv, &sections, now_ms,
    )))
}

/// Asks every address (`None`: this node) in parallel, at most [`PEERS_IN_FLIGHT_MAX`] at once.
fn ask_all(srv: &ServerState, addrs: &[Option<String>]) -> Vec<Fields> {
    let password = srv.config().requirepass.clone();
    // Under `tls-cluster` the peers' addresses are their TLS ports, and so are replicas'
    // under `tls-replication`.
    let tls = if srv.cluster.is_some() {
        crate::tls::cluster_links(&srv.config())
    } else {
        srv.config().tls_replication
    };
    let mut out = Vec::with_capacity(addrs.len());
    for chunk in addrs.chunks(PEERS_IN_FLIGHT_MAX) {
        std::thread::scope(|s| {
            let handles: Vec<_> = chunk
                .iter()
                .map(|a| {
                    let password = &password;
                    s.spawn(move || match a {
                        None => own(srv),
                        Some(addr) => ask(addr, password, tls),
                    })
                })
                .collect();
            for h in handles {
                out.push(h.join().unwrap_or_else(|_| Err("panicked".into())));
            }
        });
    }
    out
}

fn num(f: &HashMap<String, String>, k: &str) -> Value {
    f.get(k)
        .and_then(|v| v.parse::<f64>().ok())
        .map_or(Value::Null, |v| json!(v))
}

/// `slaveN:ip=..,port=..,state=..,offset=..,lag=..` lines of a primary's INFO.
fn replica_lines(f: &HashMap<String, String>) -> Vec<(String, u64, u64)> {
    let mut out = Vec::new();
    for i in 0.. {
        let Some(line) = f.get(&format!("slave{i}")) else {
            break;
        };
        let kv: HashMap<&str, &str> = line.split(',').filter_map(|p| p.split_once('=')).collect();
        let addr = format!(
            "{}:{}",
            kv.get("ip").unwrap_or(&"?"),
            kv.get("port").unwrap_or(&"0")
        );
        let offset = kv.get("offset").and_then(|v| v.parse().ok()).unwrap_or(0);
        let lag_s = kv.get("lag").and_then(|v| v.parse().ok()).unwrap_or(0);
        out.push((addr, offset, lag_s));
    }
    out
}

/// One node's entry of the view.
fn node_entry(
    id: &str,
    addr: &str,
    role: &str,
    replica_of: Option<&str>,
    fields: &Fields,
    me: bool,
) -> Value {
    let mut v = json!({
        "id": id,
        "addr": addr,
        "role": role,
        "replica_of": replica_of,
        "self": me,
    });
    match fields {
        Ok(f) => {
            let keys: u64 = f
                .iter()
                .filter(|(k, _)| k.starts_with("db"))
                .filter_map(|(_, v)| {
                    v.strip_prefix("keys=")?
                        .split(',')
                        .next()?
                        .parse::<u64>()
                        .ok()
                })
                .sum();
            let offset = if role == "primary" {
                num(f, "master_repl_offset")
            } else {
                num(f, "slave_repl_offset")
            };
            v["reachable"] = json!(true);
            v["used_memory"] = num(f, "used_memory");
            v["rss"] = num(f, "used_memory_rss");
            v["maxmemory"] = num(f, "maxmemory");
            v["ops_per_sec"] = num(f, "instantaneous_ops_per_sec");
            v["uptime_s"] = num(f, "uptime_in_seconds");
            v["keys"] = json!(keys);
            v["offset"] = offset;
            v["link"] = json!(f.get("master_link_status"));
            v["reported_role"] = json!(match f.get("role").map(String::as_str) {
                Some("master") => "primary",
                Some("slave") => "replica",
                _ => "unknown",
            });
        }
        Err(e) => {
            v["reachable"] = json!(false);
            v["error"] = json!(e);
        }
    }
    v
}

/// Replication lag per replica, from each primary's own view of its replicas (acknowledged
/// offset and seconds since the last acknowledgement, as INFO gives them). `fields[i]` is what
/// `nodes[i]` answered (fewer fields than nodes: only the first nodes are asked about).
fn lag_entries(nodes: &[Value], fields: &[Fields]) -> Vec<Value> {
    let mut out = Vec::new();
    for (n, f) in nodes.iter().zip(fields) {
        let Ok(f) = f else {
            continue;
        };
        let Some(end) = f
            .get("master_repl_offset")
            .and_then(|v| v.parse::<u64>().ok())
        else {
            continue;
        };
        for (addr, acked, lag_s) in replica_lines(f) {
            let replica_id = nodes
                .iter()
                .find(|m| m["addr"] == json!(addr))
                .map(|m| m["id"].clone())
                .unwrap_or(Value::Null);
            out.push(json!({
                "primary": n["id"],
                "primary_addr": n["addr"],
                "replica": replica_id,
                "replica_addr": addr,
                "acked_offset": acked,
                "lag_bytes": end.saturating_sub(acked),
                "lag_s": lag_s,
            }));
        }
    }
    out
}

/// The whole view (see the file's header).
pub fn build(srv: &ServerState) -> Value {
    match &srv.cluster {
        Some(cl) => cluster_view(srv, cl),
        None => standalone_view(srv),
    }
}

fn cluster_view(srv: &ServerState, cl: &shoal_commands::cluster::ClusterState) -> Value {
    let cfg = cl.config();
    let me = cl.me();
    let nodes = cfg.nodes();
    let addrs: Vec<Option<String>> = nodes
        .iter()
        .map(|n| (n.id != me).then(|| n.addr()))
        .collect();
    let fields = ask_all(srv, &addrs);
    let mut entries: Vec<Value> = Vec::new();
    for (n, f) in nodes.iter().zip(&fields) {
        let role = if n.is_primary() { "primary" } else { "replica" };
        let mut e = node_entry(
            &n.id,
            &n.addr(),
            role,
            n.replica_of.as_deref(),
            f,
            n.id == me,
        );
        let ranges: Vec<[u16; 2]> = cfg
            .ranges_of(&n.id)
            .iter()
            .map(|r| [r.start, r.end])
            .collect();
        e["slots"] = json!(ranges.iter().map(|r| (r[1] - r[0]) as u64 + 1).sum::<u64>());
        e["ranges"] = json!(ranges);
        e["in_sync"] = json!(cfg.in_sync(&n.id));
        entries.push(e);
    }
    // The slot map as runs of one owner.
    let index = |id: &str| nodes.iter().position(|n| n.id == id);
    let mut runs: Vec<[i64; 3]> = Vec::new();
    let mut moving: Vec<[i64; 3]> = Vec::new();
    for slot in 0..SLOTS as u16 {
        let owner = cfg
            .owner(slot)
            .and_then(|n| index(&n.id))
            .map_or(-1, |i| i as i64);
        match runs.last_mut() {
            Some(r) if r[2] == owner && r[1] + 1 == slot as i64 => r[1] = slot as i64,
            _ => runs.push([slot as i64, slot as i64, owner]),
        }
        if let Some(t) = cfg.migrating_to(slot).and_then(|t| index(&t.id)) {
            moving.push([slot as i64, owner, t as i64]);
        }
    }
    let g = cl.group.lock().expect("group info lock").clone();
    let leader_id = g.leader.and_then(|l| {
        nodes
            .iter()
            .find(|n| crate::cluster_node::raft_id_of(&n.id) == l)
            .map(|n| n.id.clone())
    });
    let mono = (srv.clock.mono_ms)();
    let ok = cfg.slots_assigned() == SLOTS && cl.lease.valid(mono);
    json!({
        "mode": "cluster",
        "self": me,
        "generated_unix_ms": crate::now_ms(),
        "cluster": {
            "state": if ok { "ok" } else { "fail" },
            "epoch": cfg.epoch(),
            "slots_assigned": cfg.slots_assigned(),
            "failovers": cfg.failovers(),
            "raft": {
                "state": g.state,
                "term": g.term,
                "leader": g.leader,
                "leader_node": leader_id,
                "commit_index": g.commit_index,
                "voters": g.voters,
                "learners": g.learners,
            },
        },
        "replication": lag_entries(&entries, &fields),
        "nodes": entries,
        "slots": { "runs": runs, "migrating": moving },
    })
}

fn standalone_view(srv: &ServerState) -> Value {
    let own_fields = own(srv);
    let replicas = own_fields.as_ref().map(replica_lines).unwrap_or_default();
    let mut addrs: Vec<Option<String>> = vec![None];
    addrs.extend(replicas.iter().map(|(a, _, _)| Some(a.clone())));
    let fields = ask_all(srv, &addrs);
    let bind = srv.config().bind.clone();
    let host = bind.split_whitespace().next().unwrap_or("127.0.0.1");
    let me = format!("{host}:{}", srv.tcp_port.load(Relaxed));
    let role = if srv.repl.is_replica() {
        "replica"
    } else {
        "primary"
    };
    let mut entries = vec![node_entry(&srv.node_id, &me, role, None, &fields[0], true)];
    for ((addr, _, _), f) in replicas.iter().zip(&fields[1..]) {
        let id = f
            .as_ref()
            .ok()
            .and_then(|f| f.get("shoal_node_id").cloned())
            .unwrap_or_else(|| addr.clone());
        entries.push(node_entry(
            &id,
            addr,
            "replica",
            Some(&srv.node_id),
            f,
            false,
        ));
    }
    json!({
        "mode": "standalone",
        "self": srv.node_id,
        "generated_unix_ms": crate::now_ms(),
        "cluster": Value::Null,
        "replication": lag_entries(&entries, &fields[..1]),
        "nodes": entries,
        "slots": Value::Null,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn info_lines_and_replica_lines_parse() {
        let f = parse_info(
            "# Replication\r\nrole:master\r\nslave0:ip=127.0.0.1,port=7001,state=online,offset=90,lag=1\r\nmaster_repl_offset:100\r\n",
        );
        assert_eq!(f["role"], "master");
        assert_eq!(replica_lines(&f), vec![("127.0.0.1:7001".into(), 90, 1)]);
        let nodes = vec![
            json!({"id": "p", "addr": "127.0.0.1:7000"}),
            json!({"id": "r", "addr": "127.0.0.1:7001"}),
        ];
        let lag = lag_entries(&nodes, &[Ok(f)]);
        assert_eq!(lag.len(), 1);
        assert_eq!(lag[0]["lag_bytes"], json!(10));
        assert_eq!(lag[0]["replica"], json!("r"));
    }
}
