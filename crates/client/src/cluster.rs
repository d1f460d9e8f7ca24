//! Cluster routing: a slot map read from `CLUSTER SHARDS` (each slot's primary), one pooled
//! [`Client`] per node, requests sent to the node of their key's slot. `-MOVED` updates the slot's
//! entry, refreshes the whole map and retries there; `-ASK` retries once on the named node after
//! `ASKING`; a transient failure (a lost connection, `-CLUSTERDOWN`, `-TRYAGAIN`: a failover under
//! way) is retried with backoff within [`Config::retry_budget`], the map read again between
//! tries (one read at a time, shared by the callers that failed together). Redirects followed per
//! request are bounded ([`REDIRECTS_MAX`]); past that the last redirect is returned as
//! [`Error::Redirect`].

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use shoal_resp::Reply;

use crate::error::{Error, Result};
use crate::pool::{Client, Config};

/// The hash slots of a Redis cluster.
pub const SLOTS: usize = 16384;
/// Redirects (MOVED, ASK) followed in a row for one request before giving up.
pub const REDIRECTS_MAX: usize = 5;
/// Tries after transient failures for one request, whatever its retry budget.
pub const RETRIES_MAX: u32 = 100;
/// Longest pause between two tries of a request: short, so that a failover (a second or two) is
/// followed promptly.
const RETRY_DELAY_MAX: Duration = Duration::from_millis(200);

/// Longest wait for one node's `CLUSTER SHARDS` while reading the map (whatever the request
/// timeout): callers that need the map wait for one read at a time, so a hung node must not
/// hold them long.
const MAP_READ_TIMEOUT: Duration = Duration::from_secs(1);

/// The pause before try `n + 1` of a request: the pool's backoff, capped at [`RETRY_DELAY_MAX`].
fn retry_delay(cfg: &Config, n: u32) -> Duration {
    let mut rng = crate::pool::seed(n as usize);
    crate::pool::backoff(cfg, n, &mut rng).min(RETRY_DELAY_MAX)
}

/// CRC16-XMODEM, the checksum Redis Cluster hashes keys with.
fn crc16(data: &[u8]) -> u16 {
    let mut crc: u16 = 0;
    for &b in data {
        crc ^= (b as u16) << 8;
        for _ in 0..8 {
            crc = if crc & 0x8000 != 0 {
                (crc << 1) ^ 0x1021
            } else {
                crc << 1
            };
        }
    }
    crc
}

/// The slot of a key, honouring a non-empty `{hash tag}` as Redis does.
pub fn key_slot(key: &[u8]) -> u16 {
    let tagged = key.iter().position(|&b| b == b'{').and_then(|open| {
        let rest = &key[open + 1..];
        rest.iter()
            .position(|&b| b == b'}')
            .filter(|&close| close > 0)
            .map(|close| &rest[..close])
    });
    crc16(tagged.unwrap_or(key)) % SLOTS as u16
}

/// The replicas of one shard.
type Replicas = Arc<[Arc<str>]>;

struct Inner {
    base: Config,
    seeds: Vec<String>,
    /// Each slot's primary, as `host:port`.
    slots: RwLock<Vec<Option<Arc<str>>>>,
    /// Each slot's online replicas.
    replicas: RwLock<Vec<Option<Replicas>>>,
    nodes: Mutex<HashMap<String, Client>>,
    /// Pools to replicas: their connections send `READONLY` first.
    replica_nodes: Mutex<HashMap<String, Client>>,
    /// Round robin over a shard's replicas.
    next_replica: std::sync::atomic::AtomicUsize,
    /// Map reads finished; one at a time (`refreshing`).
    refreshes: AtomicU64,
    refreshing: tokio::sync::Mutex<()>,
}

/// A client of a whole cluster. Cheap to clone.
///
/// ```no_run
/// # async fn demo() -> shoal_client::Result<()> {
/// use shoal_client::{ClusterClient, Config};
/// let c = ClusterClient::connect(&["127.0.0.1:7000"], Config::new("")).await?;
/// c.cmd(b"user:1", &[b"SET", b"user:1", b"Ada"]).await?;
/// # Ok(())
/// # }
/// ```
#[derive(Clone)]
pub struct ClusterClient {
    inner: Arc<Inner>,
}

impl ClusterClient {
    /// Reads the slot map from the first seed that answers. `base` gives every node's pool its
    /// settings (its `addr` is ignored).
    pub async fn connect(seeds: &[&str], base: Config) -> Result<ClusterClient> {
        let c = ClusterClient {
            inner: Arc::new(Inner {
                base,
                seeds: seeds.iter().map(|s| s.to_string()).collect(),
                slots: RwLock::new(vec![None; SLOTS]),
                replicas: RwLock::new(vec![None; SLOTS]),
                nodes: Mutex::new(HashMap::new()),
                replica_nodes: Mutex::new(HashMap::new()),
                next_replica: std::sync::atomic::AtomicUsize::new(0),
                refreshes: AtomicU64::new(0),
                refreshing: tokio::sync::Mutex::new(()),
            }),
        };
        c.refresh().await?;
        Ok(c)
    }

    /// The settings every node's pool is made with.
    pub fn config(&self) -> &Config {
        &self.inner.base
    }

    /// The pooled client of one node.
    pub fn node(&self, addr: &str) -> Client {
        let mut nodes = self.inner.nodes.lock().unwrap_or_else(|e| e.into_inner());
        nodes
            .entry(addr.to_string())
            .or_insert_with(|| {
                let mut cfg = self.inner.base.clone();
                cfg.addr = addr.to_string();
                Client::new(cfg)
            })
            .clone()
    }

    /// The pooled client of a replica: its connections send `READONLY` first.
    fn replica_node(&self, addr: &str) -> Client {
        let mut nodes = self
            .inner
            .replica_nodes
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        nodes
            .entry(addr.to_string())
            .or_insert_with(|| {
                let mut cfg = self.inner.base.clone();
                cfg.addr = addr.to_string();
                cfg.on_connect.push(vec![b"READONLY".to_vec()]);
                Client::new(cfg)
            })
            .clone()
    }

    /// The online replicas of `slot`'s shard, per the current map.
    pub fn replicas(&self, slot: u16) -> Vec<String> {
        let r = self
            .inner
            .replicas
            .read()
            .unwrap_or_else(|e| e.into_inner());
        r[slot as usize]
            .as_deref()
            .map_or_else(Vec::new, |v| v.iter().map(|a| a.to_string()).collect())
    }

    /// A read-only command on one of the replicas of `key`'s shard (in turn); on the primary
    /// when the shard has none or the replica is unavailable. Replicas may lag their primary.
    pub async fn cmd_replica(&self, key: &[u8], args: &[&[u8]]) -> Result<Reply> {
        let replicas = self.replicas(key_slot(key));
        if !replicas.is_empty() {
            let i = self
                .inner
                .next_replica
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            match self
                .replica_node(&replicas[i % replicas.len()])
                .cmd(args)
                .await
            {
                Err(e) if e.is_unavailable() => {}
                // A replica that no longer serves the slot redirects: the primary path follows.
                Err(Error::Redirect { .. }) => {}
                r => return r,
            }
        }
        self.cmd(key, args).await
    }

    /// A read-only command on `key`'s primary, or, when the primary is unavailable (down, its
    /// breaker open), on one of its replicas: reads go on during a failover, possibly stale.
    /// When no replica answers either, the primary path is retried as [`ClusterClient::cmd`]
    /// does.
    pub async fn cmd_read(&self, key: &[u8], args: &[&[u8]]) -> Result<Reply> {
        match self.route(key, args, Duration::ZERO).await {
            Err(e) if e.is_unavailable() => {
                for addr in self.replicas(key_slot(key)) {
                    match self.replica_node(&addr).cmd(args).await {
                        Err(e) if e.is_unavailable() => continue,
                        r => return r,
                    }
                }
                self.cmd(key, args).await
            }
            r => r,
        }
    }

    /// The primary serving `slot`, per the current map.
    pub fn owner(&self, slot: u16) -> Option<String> {
        let slots = self.inner.slots.read().unwrap_or_else(|e| e.into_inner());
        slots[slot as usize].as_deref().map(str::to_string)
    }

    /// Reads the slot map again (`CLUSTER SHARDS`) from a known node or a seed.
    pub async fn refresh(&self) -> Result<()> {
        let seen = self.refreshes();
        self.refresh_after(seen).await
    }

    /// Map reads finished so far (successful or not).
    fn refreshes(&self) -> u64 {
        self.inner.refreshes.load(Relaxed)
    }

    /// Reads the map again unless a read finished after `seen` was taken: callers that failed
    /// together (a node died under many tasks) share one read instead of each sending one.
    async fn refresh_after(&self, seen: u64) -> Result<()> {
        let _one = self.inner.refreshing.lock().await;
        if self.refreshes() != seen {
            return Ok(());
        }
        let r = self.read_map().await;
        self.inner.refreshes.fetch_add(1, Relaxed);
        r
    }

    async fn read_map(&self) -> Result<()> {
        let mut candidates: Vec<String> = {
            let slots = self.inner.slots.read().unwrap_or_else(|e| e.into_inner());
            let mut v: Vec<String> = slots.iter().flatten().map(|a| a.to_string()).collect();
            v.sort();
            v.dedup();
            v
        };
        candidates.extend(self.inner.seeds.iter().cloned());
        let mut last = Error::Connection("no seed".into());
        for addr in candidates {
            let asked = self.node(&addr);
            let asked = asked.cmd(&[b"CLUSTER", b"SHARDS"]);
            let answer = tokio::time::timeout(MAP_READ_TIMEOUT, asked)
                .await
                .unwrap_or(Err(Error::Timeout));
            match answer {
                Ok(r) => match parse_shards(r) {
                    Ok((map, replicas)) => {
                        *self.inner.slots.write().unwrap_or_else(|e| e.into_inner()) = map;
                        *self
                            .inner
                            .replicas
                            .write()
                            .unwrap_or_else(|e| e.into_inner()) = replicas;
                        return Ok(());
                    }
                    Err(e) => last = e,
                },
                Err(e) => last = e,
            }
        }
        Err(last)
    }

    /// Runs `args` on the node serving `key`'s slot. Follows `MOVED` (updating the map) and
    /// `ASK`, at most [`REDIRECTS_MAX`] in a row. A transient failure ([`Error::is_transient`]:
    /// the node died, the cluster is between primaries) is retried with backoff, the map read
    /// again before each try, until [`Config::retry_budget`] is spent or [`RETRIES_MAX`] tries
    /// were made; so a failover costs callers latency, not errors. A request whose connection
    /// failed may have been applied: with [`Config::retry_on_reconnect`] off, such a failure is
    /// returned instead of retried.
    pub async fn cmd(&self, key: &[u8], args: &[&[u8]]) -> Result<Reply> {
        self.route(key, args, self.inner.base.retry_budget).await
    }

    /// [`ClusterClient::cmd`] with a retry budget of its own (zero: one try, redirects aside).
    async fn route(&self, key: &[u8], args: &[&[u8]], budget: Duration) -> Result<Reply> {
        let slot = key_slot(key);
        let cfg = &self.inner.base;
        let started = Instant::now();
        let (mut redirects, mut retries) = (0, 0u32);
        let mut ask: Option<String> = None;
        loop {
            let seen = self.refreshes();
            let r = match (ask.take(), self.owner(slot)) {
                (Some(addr), _) => {
                    let node = self.node(&addr);
                    match node.pipeline_args(&[&[b"ASKING"], args]).await {
                        Ok(mut rs) => match rs.pop() {
                            Some(Reply::Error(t)) => Err(Error::from_reply(t)),
                            Some(r) => Ok(r),
                            None => Err(Error::Protocol("no reply".into())),
                        },
                        Err(e) => Err(e),
                    }
                }
                (None, Some(addr)) => self.node(&addr).cmd(args).await,
                (None, None) => Err(Error::Reply(format!(
                    "CLUSTERDOWN no node serves slot {slot} in the client's map"
                ))),
            };
            let e = match r {
                Err(e @ Error::Redirect { .. }) => e,
                Err(e) if e.is_transient() => e,
                other => return other,
            };
            if let Error::Redirect {
                ask: is_ask,
                slot: s,
                addr,
            } = &e
            {
                redirects += 1;
                if redirects > REDIRECTS_MAX {
                    return Err(e);
                }
                if *is_ask {
                    ask = Some(addr.clone());
                } else {
                    {
                        let mut slots = self.inner.slots.write().unwrap_or_else(|e| e.into_inner());
                        slots[*s as usize] = Some(Arc::from(addr.as_str()));
                    }
                    // The rest of the map probably moved too (a reshard, a failover).
                    let _ = self.refresh_after(seen).await;
                    // The map read may be older than the redirect: the redirect wins.
                    let mut slots = self.inner.slots.write().unwrap_or_else(|e| e.into_inner());
                    slots[*s as usize] = Some(Arc::from(addr.as_str()));
                }
                continue;
            }
            if e.is_connection_level() && !cfg.retry_on_reconnect {
                return Err(e);
            }
            retries += 1;
            let delay = retry_delay(cfg, retries);
            if retries > RETRIES_MAX || started.elapsed() + delay > budget {
                return Err(e);
            }
            tokio::time::sleep(delay).await;
            // The node may be gone (a failover): ask the others who serves the slot.
            let _ = self.refresh_after(seen).await;
            redirects = 0;
        }
    }

    pub async fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>> {
        match self.cmd(key, &[b"GET", key]).await? {
            Reply::Bulk(b) => Ok(b),
            other => Err(Error::UnexpectedReply(format!("GET: {other:?}"))),
        }
    }

    pub async fn set(&self, key: &[u8], value: &[u8]) -> Result<()> {
        crate::pool::expect_ok(self.cmd(key, &[b"SET", key, value]).await?)
    }
}

/// Each slot's primary and replicas.
type SlotMap = (Vec<Option<Arc<str>>>, Vec<Option<Replicas>>);

/// Reads `CLUSTER SHARDS` (RESP2: flat name/value arrays) into each slot's primary and its
/// healthy replicas.
fn parse_shards(r: Reply) -> Result<SlotMap> {
    let bad = |what: &str| Error::UnexpectedReply(format!("CLUSTER SHARDS: {what}"));
    let mut map = vec![None; SLOTS];
    let mut replica_map = vec![None; SLOTS];
    for shard in r.into_array().ok_or_else(|| bad("not an array"))? {
        let fields = shard.into_array().ok_or_else(|| bad("shard"))?;
        let (mut ranges, mut primary) = (Vec::new(), None);
        let mut replicas: Vec<Arc<str>> = Vec::new();
        for pair in fields.chunks(2) {
            let [name, value] = pair else {
                return Err(bad("odd shard fields"));
            };
            match name.as_bytes() {
                Some(b"slots") => {
                    let Reply::Array(Some(v)) = value else {
                        return Err(bad("slots"));
                    };
                    ranges = v.iter().filter_map(Reply::as_int).collect();
                }
                Some(b"nodes") => {
                    let Reply::Array(Some(nodes)) = value else {
                        return Err(bad("nodes"));
                    };
                    for n in nodes {
                        let Reply::Array(Some(kv)) = n else {
                            return Err(bad("node"));
                        };
                        let get = |k: &[u8]| {
                            kv.chunks(2)
                                .find(|p| p[0].as_bytes() == Some(k))
                                .and_then(|p| p.get(1))
                        };
                        let role = get(b"role").and_then(Reply::as_bytes);
                        let health = get(b"health").and_then(Reply::as_bytes);
                        let host = get(b"endpoint")
                            .or_else(|| get(b"ip"))
                            .and_then(Reply::as_bytes)
                            .map(|h| String::from_utf8_lossy(h).into_owned());
                        let port = get(b"port").and_then(Reply::as_int);
                        let (Some(h), Some(p)) = (host, port) else {
                            continue;
                        };
                        let addr = Arc::<str>::from(format!("{h}:{p}"));
                        if role == Some(b"master") && health != Some(b"fail") {
                            primary = Some(addr);
                        } else if role != Some(b"master") && health == Some(b"online") {
                            replicas.push(addr);
                        }
                    }
                }
                _ => {}
            }
        }
        let replicas: Option<Replicas> = (!replicas.is_empty()).then(|| replicas.into());
        for r in ranges.chunks(2) {
            if let [lo, hi] = *r
                && 0 <= lo
                && lo <= hi
                && (hi as usize) < SLOTS
            {
                for s in lo..=hi {
                    map[s as usize] = primary.clone();
                    replica_map[s as usize] = replicas.clone();
                }
            }
        }
    }
    Ok((map, replica_map))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_follow_redis() {
        assert_eq!(crc16(b"123456789"), 0x31C3);
        assert_eq!(key_slot(b"foo"), 12182);
        assert_eq!(key_slot(b"{user1000}.following"), key_slot(b"user1000"));
        assert_eq!(key_slot(b"foo{}{bar}"), key_slot(b"foo{}{bar}"));
        assert_ne!(key_slot(b"foo{}{bar}"), key_slot(b"bar"));
        assert_eq!(key_slot(b"foo{{bar}}zap"), key_slot(b"{bar"));
    }
}
