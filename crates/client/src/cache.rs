//! Cache-aside on top of [`Client`]: [`Cache::get_or_load`] protects the data source behind the
//! cache from the three ways a cache fails it.
//!
//! - **Breakdown** (a hot key misses and every caller loads it): in this process, callers of one
//!   key share one load (the first runs the loader, the others await its result); across
//!   processes, shoal's leases (`GETLEASE`/`SETLEASE`) let one caller load while the others wait
//!   for its fill, and a value written with a stale period is served stale while one caller
//!   refreshes it in the background.
//! - **Penetration** (lookups of keys that exist nowhere): a "not found" is cached for its own TTL
//!   (a reserved marker value), and an optional Bloom filter (`BF.EXISTS`) answers "absent"
//!   without a load.
//! - **Avalanche** (keys written together expire together): TTLs get a random share added.
//!
//! With [`CacheOptions::leases`] off and no Bloom key, only `GET`/`SET PX` are used, so it works
//! against redis-server too.

use std::collections::HashMap;
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use shoal_resp::Reply;
use tokio::sync::OnceCell;

use crate::cluster::ClusterClient;
use crate::error::{Error, Result};
use crate::metrics::{CacheEvent, Metrics, NoMetrics};
use crate::pool::Client;

/// Where a cache's requests go.
#[derive(Clone)]
enum Backend {
    Single(Client),
    Cluster(ClusterClient),
}

impl Backend {
    /// `args` on the node of `route`'s slot (any node of a single server).
    async fn cmd(&self, route: &[u8], args: &[&[u8]]) -> Result<Reply> {
        match self {
            Backend::Single(c) => c.cmd(args).await,
            Backend::Cluster(c) => c.cmd(route, args).await,
        }
    }

    async fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>> {
        match self {
            Backend::Single(c) => c.get(key).await,
            Backend::Cluster(c) => c.get(key).await,
        }
    }

    async fn set_px(&self, key: &[u8], value: &[u8], ttl: Duration) -> Result<()> {
        let ms = (ttl.as_millis() as u64).max(1).to_string();
        crate::pool::expect_ok(
            self.cmd(key, &[b"SET", key, value, b"PX", ms.as_bytes()])
                .await?,
        )
    }
}

/// The value stored for a cached "not found". A real value equal to it would read as absent.
pub const NEGATIVE_MARKER: &[u8] = b"\x00shoal:absent\x00";

/// How [`Cache::get_or_load`] protects the source.
#[derive(Debug, Clone)]
pub struct CacheOptions {
    /// Use shoal's cache-fill leases (off for redis-server).
    pub leases: bool,
    /// With leases: keep a value this long past its TTL, served stale while one caller refreshes
    /// it (`STALE`); zero for none.
    pub stale: Duration,
    /// Cache "not found" for this long; `None`: do not.
    pub negative_ttl: Option<Duration>,
    /// Percent of a TTL added at random (0..=this), so keys written together expire apart.
    pub ttl_jitter_percent: u32,
    /// A Bloom filter key holding every key that exists (`BF.ADD` by the application): keys it
    /// does not hold are answered "absent" without a load. Needs a server with Bloom filters.
    pub bloom_key: Option<Vec<u8>>,
    /// Longest a caller waits for another process's fill before loading itself.
    pub lease_wait_max: Duration,
    /// Loads at once (per `Cache`) while the server is unavailable (down, or its circuit breaker
    /// open): callers beyond wait, so an outage does not turn into a flood on the source.
    pub fallback_loads_max: usize,
}

impl Default for CacheOptions {
    fn default() -> Self {
        CacheOptions {
            leases: true,
            stale: Duration::ZERO,
            negative_ttl: Some(Duration::from_secs(30)),
            ttl_jitter_percent: 10,
            bloom_key: None,
            lease_wait_max: Duration::from_secs(2),
            fallback_loads_max: 16,
        }
    }
}

type Flight = Arc<OnceCell<Result<Lookup>>>;

/// What [`Cache::get_or_load_marked`] found: the value, and whether it is served stale.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lookup {
    /// The value; `None`: the key exists nowhere.
    pub value: Option<Vec<u8>>,
    /// Past its TTL, within its stale period ([`CacheOptions::stale`]): served while one
    /// caller refreshes it. The server marks it in `GETLEASE`'s reply (status `stale`, in RESP2
    /// and RESP3 alike); a plain `GET` does not tell.
    pub stale: bool,
}

impl Lookup {
    fn fresh(value: Option<Vec<u8>>) -> Lookup {
        Lookup {
            value,
            stale: false,
        }
    }
}

/// A cache-aside front over a [`Client`]. Cheap to clone (shared state).
///
/// ```no_run
/// # async fn demo() -> shoal_client::Result<()> {
/// use std::time::Duration;
/// use shoal_client::{Cache, CacheOptions, Client, Config};
/// let cache = Cache::new(Client::new(Config::new("127.0.0.1:6379")), CacheOptions::default());
/// let user = cache
///     .get_or_load(b"user:42", Duration::from_secs(60), || async {
///         // Read the row from the database; `None` when it does not exist.
///         Ok::<_, std::io::Error>(Some(b"{\"name\":\"Ada\"}".to_vec()))
///     })
///     .await?;
/// assert!(user.is_some());
/// # Ok(())
/// # }
/// ```
#[derive(Clone)]
pub struct Cache {
    backend: Backend,
    metrics: Arc<dyn Metrics>,
    opts: Arc<CacheOptions>,
    flights: Arc<Mutex<HashMap<Vec<u8>, Flight>>>,
    rng: Arc<Mutex<u64>>,
    fallback_slots: Arc<tokio::sync::Semaphore>,
}

/// GETLEASE's answer.
enum LeaseReply {
    Hit(Vec<u8>),
    Stale(Vec<u8>, Option<i64>),
    Miss(Option<i64>),
    Wait(u64),
}

fn parse_lease(r: Reply) -> Result<LeaseReply> {
    let bad = |r: &dyn std::fmt::Debug| Error::UnexpectedReply(format!("GETLEASE: {r:?}"));
    let Some(mut parts) = r.clone().into_array() else {
        return Err(bad(&r));
    };
    if parts.len() != 3 {
        return Err(bad(&r));
    }
    let extra = parts.pop().and_then(|x| x.as_int());
    let value = match parts.pop() {
        Some(Reply::Bulk(v)) => v,
        _ => return Err(bad(&r)),
    };
    let status = match parts.pop() {
        Some(Reply::Status(s)) => s,
        _ => return Err(bad(&r)),
    };
    Ok(match (status.as_str(), value) {
        ("hit", Some(v)) => LeaseReply::Hit(v),
        ("stale", Some(v)) => LeaseReply::Stale(v, extra),
        ("miss", None) => LeaseReply::Miss(extra),
        ("wait", None) => LeaseReply::Wait(extra.unwrap_or(1).max(1) as u64),
        _ => return Err(bad(&r)),
    })
}

impl Cache {
    pub fn new(client: Client, opts: CacheOptions) -> Cache {
        let metrics = client.metrics().clone();
        Cache::with_backend(Backend::Single(client), metrics, opts)
    }

    /// A cache over a whole cluster: each key's requests go to its slot's node (leases are
    /// granted by the key's primary). A node that is down is retried within
    /// [`Config::retry_budget`](crate::Config::retry_budget) (a failover usually ends in it)
    /// before the call falls back to the loader.
    pub fn new_cluster(cluster: ClusterClient, opts: CacheOptions) -> Cache {
        Cache::with_backend(Backend::Cluster(cluster), Arc::new(NoMetrics), opts)
    }

    fn with_backend(backend: Backend, metrics: Arc<dyn Metrics>, opts: CacheOptions) -> Cache {
        Cache {
            backend,
            metrics,
            fallback_slots: Arc::new(tokio::sync::Semaphore::new(opts.fallback_loads_max.max(1))),
            opts: Arc::new(opts),
            flights: Arc::new(Mutex::new(HashMap::new())),
            rng: Arc::new(Mutex::new(
                std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map_or(1, |d| d.as_nanos() as u64)
                    | 1,
            )),
        }
    }

    /// The client of a single-server cache (`None` over a cluster).
    pub fn client(&self) -> Option<&Client> {
        match &self.backend {
            Backend::Single(c) => Some(c),
            Backend::Cluster(_) => None,
        }
    }

    /// `ttl` plus up to `ttl_jitter_percent` of it, in ms (at least 1).
    fn jittered_ms(&self, ttl: Duration) -> u64 {
        let ms = (ttl.as_millis() as u64).max(1);
        let pct = self.opts.ttl_jitter_percent as u64;
        if pct == 0 {
            return ms;
        }
        let mut s = self.rng.lock().unwrap_or_else(|e| e.into_inner());
        let r = crate::pool::draw_u64(&mut s);
        ms + r % (ms * pct / 100 + 1)
    }

    /// The cached value of `key`, or the loader's (stored for `ttl`). `Ok(None)`: the key exists
    /// nowhere (the loader said so now or earlier, within `negative_ttl`, or the Bloom filter
    /// does not hold it). Callers of one key in this process share one load. A stale value is
    /// returned as any value; [`Cache::get_or_load_marked`] tells.
    pub async fn get_or_load<F, Fut, E>(
        &self,
        key: &[u8],
        ttl: Duration,
        loader: F,
    ) -> Result<Option<Vec<u8>>>
    where
        F: FnOnce() -> Fut + Send + 'static,
        Fut: Future<Output = std::result::Result<Option<Vec<u8>>, E>> + Send + 'static,
        E: std::fmt::Display,
    {
        Ok(self.get_or_load_marked(key, ttl, loader).await?.value)
    }

    /// [`Cache::get_or_load`], saying whether the value is served stale (with
    /// [`CacheOptions::stale`] and leases: past its TTL, while one caller refreshes it).
    ///
    /// ```no_run
    /// # async fn demo() -> shoal_client::Result<()> {
    /// use std::time::Duration;
    /// use shoal_client::{Cache, CacheOptions, Client, Config};
    /// let opts = CacheOptions { stale: Duration::from_secs(10), ..CacheOptions::default() };
    /// let cache = Cache::new(Client::new(Config::new("127.0.0.1:6379")), opts);
    /// let found = cache
    ///     .get_or_load_marked(b"price:7", Duration::from_secs(60), || async {
    ///         Ok::<_, std::io::Error>(Some(b"9.99".to_vec()))
    ///     })
    ///     .await?;
    /// if found.stale {
    ///     // Up to 10 s old past its TTL; a refresh is under way.
    /// }
    /// # Ok(())
    /// # }
    /// ```
    pub async fn get_or_load_marked<F, Fut, E>(
        &self,
        key: &[u8],
        ttl: Duration,
        loader: F,
    ) -> Result<Lookup>
    where
        F: FnOnce() -> Fut + Send + 'static,
        Fut: Future<Output = std::result::Result<Option<Vec<u8>>, E>> + Send + 'static,
        E: std::fmt::Display,
    {
        let (flight, leader) = {
            let mut map = self.flights.lock().unwrap_or_else(|e| e.into_inner());
            match map.get(key) {
                Some(f) => (f.clone(), false),
                None => {
                    let f: Flight = Arc::new(OnceCell::new());
                    map.insert(key.to_vec(), f.clone());
                    (f, true)
                }
            }
        };
        // The leader forgets the flight when done (or cancelled), so later calls read the cache
        // again; callers that joined meanwhile share its result.
        let _forget = leader.then(|| Forget {
            flights: &self.flights,
            key,
        });
        if !leader {
            self.metrics.cache(CacheEvent::Coalesced);
        }
        // A follower whose leader was cancelled runs its own loader (OnceCell's rule).
        flight
            .get_or_init(|| self.fetch(key.to_vec(), ttl, loader))
            .await
            .clone()
    }

    /// One caller's way to the value: Bloom guard, then the cache (with or without leases), then
    /// the loader.
    async fn fetch<F, Fut, E>(&self, key: Vec<u8>, ttl: Duration, loader: F) -> Result<Lookup>
    where
        F: FnOnce() -> Fut + Send + 'static,
        Fut: Future<Output = std::result::Result<Option<Vec<u8>>, E>> + Send + 'static,
        E: std::fmt::Display,
    {
        let m = self.metrics.clone();
        // The node is down (or its breaker open): go to the loader, a bounded number at a time.
        macro_rules! or_fallback {
            ($e:expr) => {
                match $e {
                    Err(e) if e.is_unavailable() => {
                        return self.fallback(loader).await.map(Lookup::fresh);
                    }
                    r => r?,
                }
            };
        }
        if let Some(bloom) = &self.opts.bloom_key {
            let r = or_fallback!(self.backend.cmd(bloom, &[b"BF.EXISTS", bloom, &key]).await);
            if r.as_int() == Some(0) {
                m.cache(CacheEvent::BloomReject);
                return Ok(Lookup::fresh(None));
            }
        }
        if !self.opts.leases {
            if let Some(v) = or_fallback!(self.backend.get(&key).await) {
                return Ok(Lookup::fresh(self.decode_hit(v)));
            }
            let v = self.load(loader).await?;
            stored(self.store_plain(&key, ttl, v.as_deref()).await)?;
            return Ok(Lookup::fresh(v));
        }
        let deadline = Instant::now() + self.opts.lease_wait_max;
        loop {
            let r = parse_lease(or_fallback!(
                self.backend.cmd(&key, &[b"GETLEASE", &key]).await
            ))?;
            match r {
                LeaseReply::Hit(v) => return Ok(Lookup::fresh(self.decode_hit(v))),
                LeaseReply::Stale(v, token) => {
                    m.cache(CacheEvent::Stale);
                    if let Some(token) = token {
                        // Refresh in the background; this caller is served the stale value.
                        let this = self.clone();
                        tokio::spawn(async move {
                            if let Ok(fresh) = this.load(loader).await {
                                let _ = this.fill(&key, token, ttl, fresh.as_deref()).await;
                            }
                        });
                    }
                    return Ok(Lookup {
                        value: decode(v),
                        stale: true,
                    });
                }
                LeaseReply::Miss(Some(token)) => {
                    let v = self.load(loader).await?;
                    stored(self.fill(&key, token, ttl, v.as_deref()).await)?;
                    return Ok(Lookup::fresh(v));
                }
                LeaseReply::Miss(None) => {
                    // The server's lease table is full: plain cache-aside.
                    let v = self.load(loader).await?;
                    stored(self.store_plain(&key, ttl, v.as_deref()).await)?;
                    return Ok(Lookup::fresh(v));
                }
                LeaseReply::Wait(ms) => {
                    m.cache(CacheEvent::LeaseWait);
                    let now = Instant::now();
                    if now >= deadline {
                        // The holder is slow or gone: load without storing over its lease.
                        return self.load(loader).await.map(Lookup::fresh);
                    }
                    let d = Duration::from_millis(ms).min(deadline - now);
                    tokio::time::sleep(d).await;
                }
            }
        }
    }

    fn decode_hit(&self, v: Vec<u8>) -> Option<Vec<u8>> {
        let m = &self.metrics;
        if v == NEGATIVE_MARKER {
            m.cache(CacheEvent::NegativeHit);
            None
        } else {
            m.cache(CacheEvent::Hit);
            Some(v)
        }
    }

    /// The loader while the cache is unavailable, at most `fallback_loads_max` at once.
    async fn fallback<F, Fut, E>(&self, loader: F) -> Result<Option<Vec<u8>>>
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = std::result::Result<Option<Vec<u8>>, E>>,
        E: std::fmt::Display,
    {
        self.metrics.cache(CacheEvent::Fallback);
        let _permit = self
            .fallback_slots
            .acquire()
            .await
            .map_err(|_| Error::CircuitOpen)?;
        self.load(loader).await
    }

    async fn load<F, Fut, E>(&self, loader: F) -> Result<Option<Vec<u8>>>
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = std::result::Result<Option<Vec<u8>>, E>>,
        E: std::fmt::Display,
    {
        self.metrics.cache(CacheEvent::Load);
        loader().await.map_err(|e| Error::Loader(e.to_string()))
    }

    /// What to store for a loaded value (`None`: the negative marker, if negative caching is on)
    /// and for how long (ms).
    fn to_store<'a>(&self, ttl: Duration, v: Option<&'a [u8]>) -> Option<(&'a [u8], u64)> {
        match v {
            Some(v) => Some((v, self.jittered_ms(ttl))),
            None => self
                .opts
                .negative_ttl
                .map(|n| (NEGATIVE_MARKER, self.jittered_ms(n))),
        }
    }

    async fn store_plain(&self, key: &[u8], ttl: Duration, v: Option<&[u8]>) -> Result<()> {
        if let Some((v, ms)) = self.to_store(ttl, v) {
            self.backend
                .set_px(key, v, Duration::from_millis(ms))
                .await?;
        }
        Ok(())
    }

    /// SETLEASE; a refused fill (a writer got there first) is not an error.
    async fn fill(&self, key: &[u8], token: i64, ttl: Duration, v: Option<&[u8]>) -> Result<()> {
        let Some((v, ms)) = self.to_store(ttl, v) else {
            return Ok(());
        };
        let (t, ms) = (token.to_string(), ms.to_string());
        let stale = (self.opts.stale.as_millis() as u64).to_string();
        let mut args: Vec<&[u8]> = vec![b"SETLEASE", key, t.as_bytes(), v, b"PX", ms.as_bytes()];
        if !self.opts.stale.is_zero() && v != NEGATIVE_MARKER {
            args.extend_from_slice(&[b"STALE", stale.as_bytes()]);
        }
        self.backend.cmd(key, &args).await?;
        Ok(())
    }
}

/// A store after a load: a node that went away meanwhile does not fail the caller, who has the
/// value.
fn stored(r: Result<()>) -> Result<()> {
    match r {
        Err(e) if e.is_unavailable() => Ok(()),
        r => r,
    }
}

fn decode(v: Vec<u8>) -> Option<Vec<u8>> {
    (v != NEGATIVE_MARKER).then_some(v)
}

/// Removes a finished (or cancelled) flight from the map.
struct Forget<'a> {
    flights: &'a Mutex<HashMap<Vec<u8>, Flight>>,
    key: &'a [u8],
}

impl Drop for Forget<'_> {
    fn drop(&mut self) {
        self.flights
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(self.key);
    }
}
