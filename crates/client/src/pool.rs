//! The connection pool: a fixed number of multiplexed connections to one server (`conn.rs`),
//! taken in turn, each reconnected on demand with exponential backoff and jitter after a failure,
//! every connect and every request bounded by a timeout.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};
use std::time::{Duration, Instant};

use shoal_resp::Reply;
use tokio::sync::Mutex;

use crate::conn::{Conn, SendError};
use crate::error::{Error, Result};
use crate::metrics::{Metrics, NoMetrics};

/// How a [`Client`] connects and how long it waits.
#[derive(Debug, Clone)]
pub struct Config {
    /// `host:port` of the server.
    pub addr: String,
    /// Connections kept open (at least 1); requests take them in turn, many in flight on each.
    pub pool_size: usize,
    pub connect_timeout: Duration,
    /// From sending a batch to its last reply.
    pub request_timeout: Duration,
    /// First delay before reconnecting after a failed connect; doubled per failure in a row.
    pub backoff_base: Duration,
    /// Longest delay between reconnection attempts.
    pub backoff_max: Duration,
    /// Send a batch again, once, on a new connection when a pooled connection turned out to be
    /// closed (a server restart) before the batch left. [`ClusterClient`](crate::ClusterClient)
    /// also resends a request whose connection failed after it was sent (it may have been
    /// applied): off when a write must never risk being applied twice.
    pub retry_on_reconnect: bool,
    /// Commands sent on every new connection before any request (e.g. `AUTH`, `SELECT`,
    /// `CLIENT TRACKING on REDIRECT id`); an error reply to one fails the connect.
    pub on_connect: Vec<Vec<Vec<u8>>>,
    /// Connection-level failures in a row that open the circuit breaker (0: no breaker).
    pub breaker_failures: u32,
    /// How long an open breaker fails requests at once before letting them try again.
    pub breaker_cooldown: Duration,
    /// [`ClusterClient`](crate::ClusterClient): how long one request keeps being retried (with
    /// backoff, the slot map read again between tries) while it fails for a passing reason — a
    /// lost connection, a timeout, an open breaker, `-CLUSTERDOWN`, `-TRYAGAIN`, `-LOADING`, a
    /// slot without an owner — as during a failover. Past it the last error is returned.
    pub retry_budget: Duration,
}

impl Config {
    /// Defaults for `addr`: 2 connections, 1 s connect and request timeouts, backoff 10 ms to 1 s,
    /// a cluster request retried for up to 5 s.
    pub fn new(addr: impl Into<String>) -> Config {
        Config {
            addr: addr.into(),
            pool_size: 2,
            connect_timeout: Duration::from_secs(1),
            request_timeout: Duration::from_secs(1),
            backoff_base: Duration::from_millis(10),
            backoff_max: Duration::from_secs(1),
            retry_on_reconnect: true,
            on_connect: Vec::new(),
            breaker_failures: 5,
            breaker_cooldown: Duration::from_secs(1),
            retry_budget: Duration::from_secs(5),
        }
    }
}

/// One pooled connection and its reconnection state.
struct Slot {
    conn: Option<Conn>,
    /// Failed connects in a row.
    failures: u32,
    /// No connect before this (backoff).
    retry_at: Option<Instant>,
    rng: u64,
}

/// The circuit breaker of one node: opened by `breaker_failures` connection-level failures in a
/// row, it fails requests at once (no connect, no timeout to wait out) for `breaker_cooldown`;
/// then requests go through again, and one more failure opens it again at once.
struct Breaker {
    failures: std::sync::atomic::AtomicU32,
    /// Microseconds since `epoch` until which it is open.
    open_until_us: std::sync::atomic::AtomicU64,
    epoch: Instant,
}

impl Breaker {
    fn now_us(&self) -> u64 {
        self.epoch.elapsed().as_micros() as u64
    }

    fn is_open(&self) -> bool {
        self.now_us() < self.open_until_us.load(Relaxed)
    }

    fn record(&self, cfg: &Config, unavailable: bool) {
        if cfg.breaker_failures == 0 {
            return;
        }
        if !unavailable {
            self.failures.store(0, Relaxed);
            return;
        }
        let n = self.failures.fetch_add(1, Relaxed) + 1;
        if n >= cfg.breaker_failures {
            let until = self.now_us() + cfg.breaker_cooldown.as_micros() as u64;
            self.open_until_us.store(until, Relaxed);
        }
    }
}

struct Inner {
    breaker: Breaker,
    cfg: Config,
    slots: Vec<Mutex<Slot>>,
    /// Each slot's live connection, read without the slot's async lock (which only connecting
    /// takes): the per-request path is one short std lock and a clone.
    live: Vec<std::sync::Mutex<Option<Conn>>>,
    next: AtomicUsize,
    metrics: Arc<dyn Metrics>,
    /// Connections that died so far.
    lost: Arc<std::sync::atomic::AtomicU64>,
}

/// A pooled client of one server. Cheap to clone (shared pool).
///
/// ```no_run
/// # async fn demo() -> shoal_client::Result<()> {
/// use shoal_client::{Client, Config};
/// let client = Client::new(Config::new("127.0.0.1:6379"));
/// client.set(b"greeting", b"hello").await?;
/// assert_eq!(client.get(b"greeting").await?, Some(b"hello".to_vec()));
/// // Pipelining: one write, one round trip.
/// let replies = client
///     .pipeline(&[shoal_client::cmd(&["INCR", "n"]), shoal_client::cmd(&["INCR", "n"])])
///     .await?;
/// assert_eq!(replies.len(), 2);
/// # Ok(())
/// # }
/// ```
#[derive(Clone)]
pub struct Client {
    inner: Arc<Inner>,
}

/// A command as owned arguments, from text (for [`Client::pipeline`]).
pub fn cmd(args: &[&str]) -> Vec<Vec<u8>> {
    args.iter().map(|a| a.as_bytes().to_vec()).collect()
}

pub(crate) fn seed(i: usize) -> u64 {
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64);
    (t ^ (i as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15)) | 1
}

/// xorshift64*: a uniform 64-bit draw.
pub(crate) fn draw_u64(state: &mut u64) -> u64 {
    let mut x = *state;
    x ^= x >> 12;
    x ^= x << 25;
    x ^= x >> 27;
    *state = x;
    x.wrapping_mul(0x2545_F491_4F6C_DD1D)
}

/// A uniform draw in `[0, 1)`.
fn draw(state: &mut u64) -> f64 {
    (draw_u64(state) >> 11) as f64 / (1u64 << 53) as f64
}

/// The delay before the next connect after `failures` in a row: exponential, capped, with "equal
/// jitter" (half fixed, half random) so that clients cut off together do not reconnect together.
pub(crate) fn backoff(cfg: &Config, failures: u32, rng: &mut u64) -> Duration {
    let exp = cfg
        .backoff_base
        .saturating_mul(1u32 << failures.saturating_sub(1).min(20));
    let capped = exp.min(cfg.backoff_max);
    capped / 2 + capped.mul_f64(draw(rng) / 2.0)
}

impl Client {
    pub fn new(cfg: Config) -> Client {
        Client::with_metrics(cfg, Arc::new(NoMetrics))
    }

    /// A client that reports requests and reconnects to `metrics`.
    pub fn with_metrics(cfg: Config, metrics: Arc<dyn Metrics>) -> Client {
        let n = cfg.pool_size.max(1);
        let slots = (0..n)
            .map(|i| {
                Mutex::new(Slot {
                    conn: None,
                    failures: 0,
                    retry_at: None,
                    rng: seed(i),
                })
            })
            .collect();
        Client {
            inner: Arc::new(Inner {
                live: (0..n).map(|_| std::sync::Mutex::new(None)).collect(),
                breaker: Breaker {
                    failures: std::sync::atomic::AtomicU32::new(0),
                    open_until_us: std::sync::atomic::AtomicU64::new(0),
                    epoch: Instant::now(),
                },
                cfg,
                slots,
                next: AtomicUsize::new(0),
                metrics,
                lost: Arc::new(std::sync::atomic::AtomicU64::new(0)),
            }),
        }
    }

    pub fn config(&self) -> &Config {
        &self.inner.cfg
    }

    pub(crate) fn metrics(&self) -> &Arc<dyn Metrics> {
        &self.inner.metrics
    }

    /// Connects `slot` if it has no connection, honouring its backoff.
    async fn ensure(&self, slot: &mut Slot) -> Result<()> {
        if slot.conn.is_some() {
            return Ok(());
        }
        let cfg = &self.inner.cfg;
        if let Some(at) = slot.retry_at {
            let now = Instant::now();
            if at > now {
                // Waiting out the backoff counts against this request's time.
                if at - now > cfg.request_timeout {
                    return Err(Error::Connection(format!(
                        "{}: reconnecting after {} failures",
                        cfg.addr, slot.failures
                    )));
                }
                tokio::time::sleep_until(at.into()).await;
            }
        }
        let setup = async {
            let c = Conn::connect(&cfg.addr, self.inner.lost.clone()).await?;
            for r in c.pipeline(&cfg.on_connect).await? {
                if let Reply::Error(t) = r {
                    c.kill();
                    return Err(Error::from_reply(t));
                }
            }
            Ok(c)
        };
        let r = match tokio::time::timeout(cfg.connect_timeout, setup).await {
            Ok(r) => r,
            Err(_) => Err(Error::Timeout),
        };
        self.inner.metrics.reconnect(&cfg.addr, r.is_ok());
        match r {
            Ok(c) => {
                slot.conn = Some(c);
                slot.failures = 0;
                slot.retry_at = None;
                Ok(())
            }
            Err(e) => {
                slot.failures = slot.failures.saturating_add(1);
                let delay = backoff(cfg, slot.failures, &mut slot.rng);
                slot.retry_at = Some(Instant::now() + delay);
                Err(e)
            }
        }
    }

    /// Sends the commands in one write and returns their replies in order; error replies are
    /// [`Reply::Error`] values, not errors. Batches of concurrent callers share connections and
    /// go out together. Fails as a whole on a timeout (the connection is then closed, failing the
    /// other batches in flight on it: its replies can no longer be trusted to come) or a lost
    /// connection.
    pub async fn pipeline(&self, cmds: &[Vec<Vec<u8>>]) -> Result<Vec<Reply>> {
        self.send(crate::conn::encode(cmds), cmds.len()).await
    }

    /// [`Client::pipeline`] of borrowed arguments (no owned copy of them is made).
    ///
    /// ```no_run
    /// # async fn demo(client: shoal_client::Client) -> shoal_client::Result<()> {
    /// let replies = client
    ///     .pipeline_args(&[&[b"SET", b"k", b"v"], &[b"GET", b"k"]])
    ///     .await?;
    /// assert_eq!(replies[1].as_bytes(), Some(&b"v"[..]));
    /// # Ok(())
    /// # }
    /// ```
    pub async fn pipeline_args(&self, cmds: &[&[&[u8]]]) -> Result<Vec<Reply>> {
        let mut bytes = Vec::new();
        for c in cmds {
            shoal_resp::encode_request(&mut bytes, c);
        }
        self.send(bytes, cmds.len()).await
    }

    /// [`Client::pipeline`] of `n` commands already encoded in `bytes`.
    async fn send(&self, bytes: Vec<u8>, n: usize) -> Result<Vec<Reply>> {
        if self.inner.breaker.is_open() {
            return Err(Error::CircuitOpen);
        }
        let started = Instant::now();
        let i = self.inner.next.fetch_add(1, Relaxed) % self.inner.slots.len();
        let mut bytes = Some(bytes);
        let mut attempts = 0;
        let r = loop {
            attempts += 1;
            let live = self.inner.live[i]
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .clone()
                .filter(|c| !c.is_dead());
            let conn = match live {
                Some(c) => c,
                None => {
                    let mut slot = self.inner.slots[i].lock().await;
                    if slot.conn.as_ref().is_some_and(Conn::is_dead) {
                        slot.conn = None;
                    }
                    if let Err(e) = self.ensure(&mut slot).await {
                        break Err(e);
                    }
                    let c = slot.conn.clone().expect("connected");
                    *self.inner.live[i].lock().unwrap_or_else(|e| e.into_inner()) = Some(c.clone());
                    c
                }
            };
            let out = bytes.take().expect("the batch is here until sent");
            let sent = conn.send(out, n);
            let r = match tokio::time::timeout(self.inner.cfg.request_timeout, sent).await {
                Ok(r) => r,
                Err(_) => Err(SendError::Failed(Error::Timeout)),
            };
            match r {
                Ok(replies) => break Ok(replies),
                // The pooled connection was found closed (a server restart) before the batch
                // left: it goes, once, on a new connection.
                Err(SendError::NotSent(b))
                    if attempts == 1 && self.inner.cfg.retry_on_reconnect =>
                {
                    conn.kill();
                    bytes = Some(b);
                }
                Err(SendError::NotSent(_)) => {
                    conn.kill();
                    break Err(Error::Connection("connection closed".into()));
                }
                Err(SendError::Failed(e)) => {
                    conn.kill();
                    break Err(e);
                }
            }
        };
        self.inner.breaker.record(
            &self.inner.cfg,
            r.as_ref().is_err_and(Error::is_connection_level),
        );
        self.inner.metrics.request(n, started.elapsed(), r.is_ok());
        r
    }

    /// Connections of this pool that died so far (closed by either side, timed out, failed).
    /// What a connection set up on the server died with it: a near cache's tracked reads.
    pub fn connections_lost(&self) -> u64 {
        self.inner.lost.load(std::sync::atomic::Ordering::SeqCst)
    }

    /// Whether the circuit breaker is open now (requests fail with [`Error::CircuitOpen`]).
    pub fn breaker_open(&self) -> bool {
        self.inner.breaker.is_open()
    }

    /// One command; an error reply is an [`Error`].
    pub async fn cmd(&self, args: &[&[u8]]) -> Result<Reply> {
        let mut bytes = Vec::new();
        shoal_resp::encode_request(&mut bytes, args);
        let mut r = self.send(bytes, 1).await?;
        match r.pop() {
            Some(Reply::Error(t)) => Err(Error::from_reply(t)),
            Some(r) => Ok(r),
            None => Err(Error::Protocol("no reply".into())),
        }
    }

    pub async fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>> {
        match self.cmd(&[b"GET", key]).await? {
            Reply::Bulk(b) => Ok(b),
            other => Err(Error::UnexpectedReply(format!("GET: {other:?}"))),
        }
    }

    pub async fn set(&self, key: &[u8], value: &[u8]) -> Result<()> {
        expect_ok(self.cmd(&[b"SET", key, value]).await?)
    }

    /// SET with a TTL in milliseconds (at least 1).
    pub async fn set_px(&self, key: &[u8], value: &[u8], ttl: Duration) -> Result<()> {
        let ms = (ttl.as_millis() as u64).max(1).to_string();
        expect_ok(
            self.cmd(&[b"SET", key, value, b"PX", ms.as_bytes()])
                .await?,
        )
    }

    /// Deletes keys; returns how many existed.
    pub async fn del(&self, keys: &[&[u8]]) -> Result<i64> {
        let mut args: Vec<&[u8]> = vec![b"DEL"];
        args.extend_from_slice(keys);
        self.cmd(&args)
            .await?
            .as_int()
            .ok_or_else(|| Error::UnexpectedReply("DEL".into()))
    }
}

pub(crate) fn expect_ok(r: Reply) -> Result<()> {
    if r.is_ok() {
        Ok(())
    } else {
        Err(Error::UnexpectedReply(format!("{r:?}")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_is_capped_and_jittered() {
        let cfg = Config::new("x:1");
        let mut rng = 7;
        let d1 = backoff(&cfg, 1, &mut rng);
        assert!(d1 >= Duration::from_millis(5) && d1 <= Duration::from_millis(10));
        let d5 = backoff(&cfg, 5, &mut rng);
        assert!(d5 >= Duration::from_millis(80) && d5 <= Duration::from_millis(160));
        let draws: Vec<Duration> = (0..50).map(|_| backoff(&cfg, 30, &mut rng)).collect();
        assert!(
            draws
                .iter()
                .all(|d| *d >= cfg.backoff_max / 2 && *d <= cfg.backoff_max)
        );
        assert!(draws.iter().any(|d| *d != draws[0]), "jittered");
    }
}
