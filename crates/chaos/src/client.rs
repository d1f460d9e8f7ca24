//! A routed, blocking cluster client for the workload and the final reads: a slot map from
//! `CLUSTER SLOTS`, one connection per node, `-MOVED` (update the map, refresh it) and `-ASK`
//! (`ASKING` then the command), back-off on `-CLUSTERDOWN`/`-TRYAGAIN`. Every request loop is
//! bounded by attempts and by a deadline. It retries only where the request certainly did not
//! run (a redirect, a refusal, a failed connect): a request whose reply was lost is handed back
//! as `Unknown`, since running it again could apply it twice.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use crate::resp::{Conn, IoError, Reply};
use crate::rng::Rng;
use crate::slots::{SLOTS, key_slot};

/// Attempts per request (redirects and back-offs included).
pub const ATTEMPTS_MAX: usize = 8;
/// Pause before retrying after a refusal (`CLUSTERDOWN`, `TRYAGAIN`, no connection).
pub const BACKOFF: Duration = Duration::from_millis(100);

/// Errors after which the command certainly did not run on the node that sent them.
pub fn refused(err: &str) -> bool {
    const CODES: [&str; 8] = [
        "MOVED",
        "ASK",
        "CLUSTERDOWN",
        "TRYAGAIN",
        "LOADING",
        "READONLY",
        "MASTERDOWN",
        "NOREPLICAS",
    ];
    let code = err.split(' ').next().unwrap_or("");
    CODES.contains(&code)
}

/// How a routed request ended.
#[derive(Debug)]
pub enum Routed {
    /// A reply (possibly an error reply the caller classifies), and the node that sent it.
    Reply { reply: Reply, node: String },
    /// Sent to `node` but no reply came: it may or may not have run.
    Unknown { node: String, why: String },
    /// Never ran anywhere: every attempt was refused or could not connect.
    Refused { why: String },
}

pub struct ClusterClient {
    seeds: Vec<String>,
    slots: Vec<Option<String>>,
    conns: HashMap<String, Conn>,
    pub timeout: Duration,
    /// Bound on one request including its retries.
    pub deadline: Duration,
    rng: Rng,
    map_stale: bool,
}

impl ClusterClient {
    pub fn new(seeds: Vec<String>, timeout: Duration, rng: Rng) -> ClusterClient {
        assert!(!seeds.is_empty());
        ClusterClient {
            seeds,
            slots: vec![None; SLOTS],
            conns: HashMap::new(),
            timeout,
            deadline: timeout * 3,
            rng,
            map_stale: true,
        }
    }

    fn conn(&mut self, addr: &str) -> Result<&mut Conn, IoError> {
        if !self.conns.contains_key(addr) {
            let c = Conn::connect(addr, self.timeout)?;
            self.conns.insert(addr.to_string(), c);
        }
        Ok(self.conns.get_mut(addr).expect("inserted above"))
    }

    /// Sends to one node, no routing; drops the connection after a transport error.
    pub fn on_node<S: AsRef<[u8]>>(&mut self, addr: &str, args: &[S]) -> Result<Reply, IoError> {
        let r = self.conn(addr)?.cmd(args);
        if r.is_err() {
            self.conns.remove(addr);
        }
        r
    }

    /// Reloads the slot map from a node chosen at random (each client may see a different
    /// node's view, which is how a client comes to talk to a stale primary). Bounded: one try
    /// per seed.
    pub fn refresh(&mut self) -> bool {
        let start = self.rng.below(self.seeds.len() as u64) as usize;
        for i in 0..self.seeds.len() {
            let addr = self.seeds[(start + i) % self.seeds.len()].clone();
            let Ok(reply) = self.on_node(&addr, &["CLUSTER", "SLOTS"]) else {
                continue;
            };
            if let Some(map) = parse_slots(&reply)
                && !map.is_empty()
            {
                for (lo, hi, primary) in map {
                    for s in lo..=hi {
                        self.slots[s as usize] = Some(primary.clone());
                    }
                }
                self.map_stale = false;
                return true;
            }
        }
        false
    }

    /// Runs a keyed command on the slot's owner, following redirects.
    pub fn request<S: AsRef<[u8]>>(&mut self, key: &[u8], args: &[S]) -> Routed {
        let slot = key_slot(key) as usize;
        let started = Instant::now();
        let mut asking: Option<String> = None;
        let mut last = String::from("no attempt");
        for _ in 0..ATTEMPTS_MAX {
            if started.elapsed() > self.deadline {
                break;
            }
            if self.map_stale {
                self.refresh();
            }
            let addr = match (&asking, &self.slots[slot]) {
                (Some(a), _) => a.clone(),
                (None, Some(a)) => a.clone(),
                (None, None) => self.rng.pick(&self.seeds).clone(),
            };
            if asking.is_some() {
                match self.on_node(&addr, &["ASKING"]) {
                    Ok(Reply::Simple(_)) => {}
                    Ok(other) => {
                        last = format!("{addr}: ASKING: {other:?}");
                        asking = None;
                        continue;
                    }
                    Err(e) => {
                        // ASKING never changes data: a lost reply to it is safe to retry.
                        last = e.to_string();
                        asking = None;
                        self.map_stale = true;
                        std::thread::sleep(BACKOFF);
                        continue;
                    }
                }
            }
            let was_asking = asking.take().is_some();
            match self.on_node(&addr, args) {
                Err(e) if e.request_not_sent() => {
                    last = e.to_string();
                    self.map_stale = true;
                    std::thread::sleep(BACKOFF);
                }
                Err(e) => {
                    return Routed::Unknown {
                        node: addr,
                        why: e.to_string(),
                    };
                }
                Ok(Reply::Error(e)) if refused(&e) => {
                    last = format!("{addr}: {e}");
                    let mut words = e.split(' ');
                    match (words.next(), words.nth(1)) {
                        (Some("MOVED"), Some(to)) => {
                            self.slots[slot] = Some(to.to_string());
                            // One MOVED usually means a failover: the rest of the map moved too.
                            self.map_stale = true;
                        }
                        (Some("ASK"), Some(to)) if !was_asking => asking = Some(to.to_string()),
                        _ => {
                            self.map_stale = true;
                            std::thread::sleep(BACKOFF);
                        }
                    }
                }
                Ok(reply) => return Routed::Reply { reply, node: addr },
            }
        }
        Routed::Refused { why: last }
    }
}

/// `CLUSTER SLOTS` → (first slot, last slot, primary "ip:port").
pub fn parse_slots(reply: &Reply) -> Option<Vec<(u16, u16, String)>> {
    let mut out = Vec::new();
    for range in reply.as_array()? {
        let r = range.as_array()?;
        let lo = r.first()?.as_int()?;
        let hi = r.get(1)?.as_int()?;
        let primary = r.get(2)?.as_array()?;
        let ip = primary.first()?.as_text()?;
        let port = primary.get(1)?.as_int()?;
        if !(0..SLOTS as i64).contains(&lo) || !(lo..SLOTS as i64).contains(&hi) {
            return None;
        }
        out.push((lo as u16, hi as u16, format!("{ip}:{port}")));
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refusals_are_told_from_other_errors() {
        assert!(refused("MOVED 3999 10.0.0.1:7000"));
        assert!(refused("CLUSTERDOWN The cluster is down"));
        assert!(refused(
            "TRYAGAIN Multiple keys request during rehashing of slot"
        ));
        assert!(!refused("ERR write not acknowledged by replicas"));
        assert!(!refused("ERR"));
    }

    #[test]
    fn slots_reply_is_parsed() {
        let node = |ip: &str, port| {
            Reply::Array(Some(vec![
                Reply::Bulk(Some(ip.as_bytes().to_vec())),
                Reply::Int(port),
                Reply::Bulk(Some(b"id".to_vec())),
            ]))
        };
        let r = Reply::Array(Some(vec![Reply::Array(Some(vec![
            Reply::Int(0),
            Reply::Int(5460),
            node("10.0.0.1", 7000),
            node("10.0.0.4", 7000),
        ]))]));
        assert_eq!(
            parse_slots(&r).unwrap(),
            vec![(0, 5460, "10.0.0.1:7000".to_string())]
        );
        assert!(parse_slots(&Reply::Int(1)).is_none());
    }
}
