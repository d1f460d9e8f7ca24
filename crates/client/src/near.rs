//! The near cache: values read through it are kept in this process and answered without a round
//! trip until the server says they changed. Coherence comes from server-assisted client-side
//! caching (`CLIENT TRACKING`, RESP2 redirect mode, as Redis 6+), one *link* per node: an
//! invalidation connection subscribed to `__redis__:invalidate`, and a pool whose connections
//! turn tracking on with `REDIRECT` to it. Each invalidation (a key, or nil for a flush) drops the
//! local copy. Over a cluster ([`NearCache::cluster`]) each primary gets its own link, opened on
//! first use, and every entry remembers the link it was read through.
//!
//! **No stale read after an invalidation is delivered.** A read that misses locally registers the
//! key as *pending* before asking the server; an invalidation of the key (or a flush) cancels the
//! pending read, whose reply is then returned but not kept. So a reply that raced with a change
//! is never stored after the change's invalidation was handled.
//!
//! **A broken link leaves nothing behind.** The server keeps the table of a connection's reads
//! only while that connection lives, and sends their invalidations only while the redirect
//! target lives. So when a link's invalidation connection ends, or any of its pool's connections
//! dies (closed by the server, `CLIENT KILL`, a timeout), every entry read through that link is
//! dropped and reads in flight on it are not kept; a dead link is replaced by a new one on next
//! use. An entry is also answered only while its key's slot is still served by the node it was
//! read from (the client's slot map, read again at least every [`MAP_CHECK_INTERVAL`] while
//! reads come): after a failover or a slot move, it is read again from the new owner. A node
//! that gives slots away also invalidates what was read of them there (shoal; Redis's MIGRATE
//! does so by deleting). What remains is the time the client takes to notice (a socket's end
//! is read by another task, a map is read every second): a write made in that time may not be
//! seen by a read made in it.
//!
//! **Own writes.** [`NearCache::set`] and [`NearCache::del`] drop the local copy once the write
//! is acknowledged, so this process reads its own writes at once (other processes, once the
//! server's invalidation reaches them).
//!
//! Bounded: at most `capacity` keys; a full cache drops an arbitrary tenth of its keys. Link
//! set-ups are one at a time and, after a failed one, not tried again for [`LINK_RETRY_DELAY`].

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::SeqCst};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use shoal_resp::{Reply, ReplyLimits, encode_request, parse_reply};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::task::AbortHandle;

use crate::cluster::{ClusterClient, REDIRECTS_MAX, key_slot};
use crate::error::{Error, Result};
use crate::pool::{Client, Config};

/// After a link to a node failed to open, reads of its keys bypass the near cache for this long
/// before another try.
pub const LINK_RETRY_DELAY: Duration = Duration::from_millis(100);
/// Over a cluster, the slot map is read again in the background at most this often while reads
/// come: a read answered in process never meets a `MOVED`, so this is how entries of a slot
/// whose owner changed without telling (a primary cut off, still up) stop being answered.
pub const MAP_CHECK_INTERVAL: Duration = Duration::from_secs(1);

struct Entry {
    value: Vec<u8>,
    /// The link it was read through.
    link: u64,
}

#[derive(Default)]
struct Local {
    values: HashMap<Vec<u8>, Entry>,
    /// Reads in flight: key → the ticket of the read that may store it.
    pending: HashMap<Vec<u8>, u64>,
}

struct Shared {
    local: Mutex<Local>,
    capacity: usize,
    tickets: AtomicU64,
    /// Invalidation messages handled (for tests and metrics).
    invalidations: AtomicU64,
    /// Times a link broke and its entries were dropped.
    losses: AtomicU64,
}

impl Shared {
    fn lock(&self) -> std::sync::MutexGuard<'_, Local> {
        self.local.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn invalidate(&self, keys: Option<Vec<Vec<u8>>>) {
        let mut l = self.lock();
        match keys {
            Some(keys) => {
                for k in keys {
                    l.values.remove(&k);
                    l.pending.remove(&k);
                }
            }
            None => {
                l.values.clear();
                l.pending.clear();
            }
        }
        self.invalidations.fetch_add(1, SeqCst);
    }

    /// Drops every entry read through link `id`: its invalidations can no longer be relied on.
    fn forget_link(&self, id: u64) {
        self.lock().values.retain(|_, e| e.link != id);
        self.losses.fetch_add(1, SeqCst);
    }
}

/// One node's tracking link.
struct Link {
    id: u64,
    /// The invalidation connection's `CLIENT ID` on the node.
    redirect: i64,
    /// Connections track their reads with `REDIRECT` to the invalidation connection.
    client: Client,
    /// The invalidation connection is up.
    alive: Arc<AtomicBool>,
    /// `client.connections_lost()` when this link's entries were last dropped.
    lost_seen: AtomicU64,
    listener: AbortHandle,
}

impl Drop for Link {
    fn drop(&mut self) {
        self.listener.abort();
    }
}

impl Link {
    /// Opens the invalidation connection to `cfg.addr`, then a pool tracking with `REDIRECT` to
    /// it.
    async fn open(mut cfg: Config, id: u64, shared: Arc<Shared>) -> Result<Link> {
        let setup = async {
            let mut s = TcpStream::connect(&cfg.addr)
                .await
                .map_err(|e| Error::Connection(format!("{}: {e}", cfg.addr)))?;
            let _ = s.set_nodelay(true);
            let mut buf = Vec::new();
            for c in &cfg.on_connect {
                let args: Vec<&[u8]> = c.iter().map(Vec::as_slice).collect();
                if let Reply::Error(t) = request(&mut s, &mut buf, &args).await? {
                    return Err(Error::from_reply(t));
                }
            }
            let redirect = request(&mut s, &mut buf, &[b"CLIENT", b"ID"])
                .await?
                .as_int()
                .ok_or_else(|| Error::UnexpectedReply("CLIENT ID".into()))?;
            request(&mut s, &mut buf, &[b"SUBSCRIBE", b"__redis__:invalidate"]).await?;
            Ok((s, buf, redirect))
        };
        let (s, buf, redirect) = tokio::time::timeout(cfg.connect_timeout, setup)
            .await
            .map_err(|_| Error::Timeout)??;
        let alive = Arc::new(AtomicBool::new(true));
        let listener = tokio::spawn(listen(s, buf, shared, id, alive.clone())).abort_handle();
        let r = redirect.to_string();
        cfg.on_connect.push(
            [
                &b"CLIENT"[..],
                b"TRACKING",
                b"on",
                b"REDIRECT",
                r.as_bytes(),
            ]
            .iter()
            .map(|a| a.to_vec())
            .collect(),
        );
        Ok(Link {
            id,
            redirect,
            client: Client::new(cfg),
            alive,
            lost_seen: AtomicU64::new(0),
            listener,
        })
    }
}

/// Where reads go.
enum Source {
    /// One server: its settings, and a plain pool for reads that bypass the near cache.
    Single {
        cfg: Config,
        plain: Client,
    },
    Cluster(ClusterClient),
}

/// GETs kept in process, coherent through `CLIENT TRACKING`; over one server or a cluster.
/// Cheap to clone.
///
/// ```no_run
/// # async fn demo() -> shoal_client::Result<()> {
/// use shoal_client::{Config, NearCache};
/// let near = NearCache::connect(Config::new("127.0.0.1:6379"), 10_000).await?;
/// let v = near.get(b"config:flags").await?; // from the server, then kept
/// let again = near.get(b"config:flags").await?; // from this process
/// assert_eq!(v, again);
/// # Ok(())
/// # }
/// ```
#[derive(Clone)]
pub struct NearCache {
    source: Arc<Source>,
    shared: Arc<Shared>,
    /// Each node's current link, by address.
    links: Arc<Mutex<HashMap<Arc<str>, Arc<Link>>>>,
    /// Nodes whose link failed to open, until when they are not tried again.
    failed: Arc<Mutex<HashMap<Arc<str>, Instant>>>,
    /// One link set-up at a time.
    opening: Arc<tokio::sync::Mutex<()>>,
    next_link: Arc<AtomicU64>,
    /// When the cluster's map was last read again, in ms since `epoch`.
    map_checked_ms: Arc<AtomicU64>,
    epoch: Instant,
}

async fn request(s: &mut TcpStream, buf: &mut Vec<u8>, args: &[&[u8]]) -> Result<Reply> {
    let mut out = Vec::new();
    encode_request(&mut out, args);
    s.write_all(&out)
        .await
        .map_err(|e| Error::Connection(e.to_string()))?;
    next_reply(s, buf).await
}

async fn next_reply(s: &mut TcpStream, buf: &mut Vec<u8>) -> Result<Reply> {
    let limits = ReplyLimits::default();
    loop {
        match parse_reply(buf, &limits) {
            Ok(Some((r, used))) => {
                buf.drain(..used);
                return Ok(r);
            }
            Ok(None) => {}
            Err(e) => return Err(Error::Protocol(e.0)),
        }
        let mut chunk = [0u8; 16 * 1024];
        let n = s
            .read(&mut chunk)
            .await
            .map_err(|e| Error::Connection(e.to_string()))?;
        if n == 0 {
            return Err(Error::Connection("closed by the server".into()));
        }
        buf.extend_from_slice(&chunk[..n]);
    }
}

impl NearCache {
    fn with_source(source: Source, capacity: usize) -> NearCache {
        NearCache {
            source: Arc::new(source),
            shared: Arc::new(Shared {
                local: Mutex::new(Local::default()),
                capacity: capacity.max(1),
                tickets: AtomicU64::new(0),
                invalidations: AtomicU64::new(0),
                losses: AtomicU64::new(0),
            }),
            links: Arc::new(Mutex::new(HashMap::new())),
            failed: Arc::new(Mutex::new(HashMap::new())),
            opening: Arc::new(tokio::sync::Mutex::new(())),
            next_link: Arc::new(AtomicU64::new(1)),
            map_checked_ms: Arc::new(AtomicU64::new(0)),
            epoch: Instant::now(),
        }
    }

    /// A near cache over one server: opens its link at once (an error if the server does not
    /// answer). `capacity`: keys kept at most.
    pub async fn connect(cfg: Config, capacity: usize) -> Result<NearCache> {
        let plain = Client::new(cfg.clone());
        let addr = cfg.addr.clone();
        let near = NearCache::with_source(Source::Single { cfg, plain }, capacity);
        near.link(&addr).await?;
        Ok(near)
    }

    /// A near cache over a cluster: each key is read from its slot's primary through that
    /// node's link (opened on first use, with the cluster client's settings).
    ///
    /// ```no_run
    /// # async fn demo() -> shoal_client::Result<()> {
    /// use shoal_client::{ClusterClient, Config, NearCache};
    /// let cluster = ClusterClient::connect(&["127.0.0.1:7000"], Config::new("")).await?;
    /// let near = NearCache::cluster(cluster, 10_000);
    /// let flags = near.get(b"config:flags").await?;
    /// # Ok(())
    /// # }
    /// ```
    pub fn cluster(cluster: ClusterClient, capacity: usize) -> NearCache {
        NearCache::with_source(Source::Cluster(cluster), capacity)
    }

    /// The plain pool of a single-server near cache (`None` over a cluster): its reads and
    /// writes do not go through the near cache.
    pub fn client(&self) -> Option<&Client> {
        match &*self.source {
            Source::Single { plain, .. } => Some(plain),
            Source::Cluster(_) => None,
        }
    }

    /// Invalidation messages handled so far.
    pub fn invalidations(&self) -> u64 {
        self.shared.invalidations.load(SeqCst)
    }

    /// Times a link broke (its invalidation connection ended or one of its connections died)
    /// and the entries read through it were dropped.
    pub fn link_losses(&self) -> u64 {
        self.shared.losses.load(SeqCst)
    }

    /// Connections of the current links that died so far (closed by the server, timed out):
    /// the entries read through such a link are dropped at its next use.
    pub fn connections_lost(&self) -> u64 {
        let links = self.links.lock().unwrap_or_else(|e| e.into_inner());
        links.values().map(|l| l.client.connections_lost()).sum()
    }

    /// The `CLIENT ID`, on node `addr`, of this near cache's invalidation connection there.
    pub fn redirect_id(&self, addr: &str) -> Option<i64> {
        let links = self.links.lock().unwrap_or_else(|e| e.into_inner());
        links.get(addr).map(|l| l.redirect)
    }

    /// Over a cluster: reads the map again in the background if the last read is older than
    /// [`MAP_CHECK_INTERVAL`].
    fn check_map(&self) {
        let Source::Cluster(c) = &*self.source else {
            return;
        };
        let now = self.epoch.elapsed().as_millis() as u64;
        let last = self.map_checked_ms.load(SeqCst);
        if now.saturating_sub(last) >= MAP_CHECK_INTERVAL.as_millis() as u64
            && self
                .map_checked_ms
                .compare_exchange(last, now, SeqCst, SeqCst)
                .is_ok()
        {
            let c = c.clone();
            tokio::spawn(async move {
                let _ = c.refresh().await;
            });
        }
    }

    /// Where `key` is read from now.
    fn addr_of(&self, key: &[u8]) -> Option<String> {
        match &*self.source {
            Source::Single { cfg, .. } => Some(cfg.addr.clone()),
            Source::Cluster(c) => c.owner(key_slot(key)),
        }
    }

    /// A read that bypasses the near cache.
    async fn bypass(&self, key: &[u8]) -> Result<Option<Vec<u8>>> {
        match &*self.source {
            Source::Single { plain, .. } => plain.get(key).await,
            Source::Cluster(c) => c.get(key).await,
        }
    }

    /// The intact link to `addr`, opened (or replaced) if needed. A link one of whose
    /// connections died since the last look has its entries dropped first.
    async fn link(&self, addr: &str) -> Result<Arc<Link>> {
        let current = || {
            let links = self.links.lock().unwrap_or_else(|e| e.into_inner());
            links.get(addr).filter(|l| l.alive.load(SeqCst)).cloned()
        };
        if let Some(l) = current() {
            let lost = l.client.connections_lost();
            if lost != l.lost_seen.load(SeqCst) {
                self.shared.forget_link(l.id);
                l.lost_seen.store(lost, SeqCst);
            }
            return Ok(l);
        }
        let _one = self.opening.lock().await;
        if let Some(l) = current() {
            return Ok(l);
        }
        let addr: Arc<str> = Arc::from(addr);
        {
            let failed = self.failed.lock().unwrap_or_else(|e| e.into_inner());
            if failed.get(&addr).is_some_and(|t| Instant::now() < *t) {
                return Err(Error::Connection(format!("{addr}: near cache link down")));
            }
        }
        let mut cfg = match &*self.source {
            Source::Single { cfg, .. } => cfg.clone(),
            Source::Cluster(c) => c.config().clone(),
        };
        cfg.addr = addr.to_string();
        let id = self.next_link.fetch_add(1, SeqCst);
        match Link::open(cfg, id, self.shared.clone()).await {
            Ok(link) => {
                let link = Arc::new(link);
                self.failed
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .remove(&addr);
                // A link replaced here is dead: its listener dropped its entries.
                self.links
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .insert(addr, link.clone());
                Ok(link)
            }
            Err(e) => {
                self.failed
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .insert(addr, Instant::now() + LINK_RETRY_DELAY);
                Err(e)
            }
        }
    }

    /// Drops `key`'s local copy and cancels reads of it in flight.
    fn forget(&self, key: &[u8]) {
        let mut l = self.shared.lock();
        l.values.remove(key);
        l.pending.remove(key);
    }

    /// SET through the near cache's server or cluster; this process's next read of `key` sees
    /// the write (its local copy is dropped once the write is acknowledged, without waiting for
    /// the server's invalidation). Other processes' near caches hear of it from the server.
    pub async fn set(&self, key: &[u8], value: &[u8]) -> Result<()> {
        let r = match &*self.source {
            Source::Single { plain, .. } => plain.set(key, value).await,
            Source::Cluster(c) => c.set(key, value).await,
        };
        // Whatever the outcome (a failed write may still have been applied).
        self.forget(key);
        r
    }

    /// DEL of one key, as [`NearCache::set`] for writes: returns whether it existed.
    pub async fn del(&self, key: &[u8]) -> Result<bool> {
        let r = match &*self.source {
            Source::Single { plain, .. } => plain.del(&[key]).await,
            Source::Cluster(c) => c.cmd(key, &[b"DEL", key]).await.and_then(|r| {
                r.as_int()
                    .ok_or_else(|| Error::UnexpectedReply("DEL".into()))
            }),
        };
        self.forget(key);
        r.map(|n| n > 0)
    }

    /// GET through the near cache. Over a cluster, a key whose node moved (`MOVED`) is read
    /// again from its new owner; when a node's link cannot be had, the read goes to the
    /// cluster (with its retries) and is not kept.
    pub async fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>> {
        let sh = &self.shared;
        self.check_map();
        for _ in 0..=REDIRECTS_MAX {
            let Some(addr) = self.addr_of(key) else {
                return self.bypass(key).await;
            };
            let link = match self.link(&addr).await {
                Ok(l) => l,
                Err(e) if e.is_transient() => return self.bypass(key).await,
                Err(e) => return Err(e),
            };
            let lost = link.lost_seen.load(SeqCst);
            let ticket = sh.tickets.fetch_add(1, SeqCst);
            {
                let mut l = sh.lock();
                match l.values.get(key) {
                    Some(e) if e.link == link.id => return Ok(Some(e.value.clone())),
                    // Read through another node's link: the slot moved since.
                    Some(_) => {
                        l.values.remove(key);
                    }
                    None => {}
                }
                l.pending.insert(key.to_vec(), ticket);
            }
            let r = link.client.get(key).await;
            {
                let mut l = sh.lock();
                let still_ours = l.pending.get(key) == Some(&ticket);
                if still_ours {
                    l.pending.remove(key);
                }
                // Absent keys are not kept: the server tracks only keys it read.
                if let Ok(Some(v)) = &r {
                    let intact = link.alive.load(SeqCst) && link.client.connections_lost() == lost;
                    if still_ours && intact {
                        if l.values.len() >= sh.capacity {
                            let drop_n = (sh.capacity / 10).max(1);
                            let victims: Vec<Vec<u8>> =
                                l.values.keys().take(drop_n).cloned().collect();
                            for k in victims {
                                l.values.remove(&k);
                            }
                        }
                        l.values.insert(
                            key.to_vec(),
                            Entry {
                                value: v.clone(),
                                link: link.id,
                            },
                        );
                    }
                }
            }
            let cluster = match &*self.source {
                Source::Cluster(c) => Some(c),
                Source::Single { .. } => None,
            };
            match (r, cluster) {
                (Ok(v), _) => return Ok(v),
                (Err(Error::Redirect { .. }), Some(c)) => {
                    let _ = c.refresh().await;
                }
                (Err(e), Some(_)) if e.is_transient() => return self.bypass(key).await,
                (Err(e), _) => return Err(e),
            }
        }
        self.bypass(key).await
    }
}

/// Reads invalidation messages until the connection ends; then drops the link's entries and
/// marks it dead (the next read replaces it).
async fn listen(
    mut s: TcpStream,
    mut buf: Vec<u8>,
    shared: Arc<Shared>,
    id: u64,
    alive: Arc<AtomicBool>,
) {
    while let Ok(r) = next_reply(&mut s, &mut buf).await {
        let Some(mut parts) = r.into_array() else {
            continue;
        };
        if parts.len() != 3 || parts[0].as_bytes() != Some(b"message") {
            continue;
        }
        match parts.pop() {
            Some(Reply::Array(Some(keys))) => shared.invalidate(Some(
                keys.iter()
                    .filter_map(|k| k.as_bytes().map(<[u8]>::to_vec))
                    .collect(),
            )),
            _ => shared.invalidate(None),
        }
    }
    // Dead before the entries go: a read that checks after this does not store.
    alive.store(false, SeqCst);
    shared.forget_link(id);
}
