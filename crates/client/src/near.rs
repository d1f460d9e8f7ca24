//! The near cache: values read through it are kept in this process and answered without a round
//! trip until the server says they changed. Coherence comes from server-assisted client-side
//! caching (`CLIENT TRACKING`, RESP2 redirect mode, as Redis 6+): one connection subscribes to
//! `__redis__:invalidate`, every pooled connection turns tracking on with `REDIRECT` to it, and
//! each invalidation (a key, or nil for a flush) drops the local copy.
//!
//! **No stale read after an invalidation is delivered.** A read that misses locally registers the
//! key as *pending* before asking the server; an invalidation of the key (or a flush) cancels the
//! pending read, whose reply is then returned but not kept. So a reply that raced with a change
//! is never stored after the change's invalidation was handled. If the invalidation connection
//! drops, the near cache empties and is bypassed (every read goes to the server) until it is back.
//!
//! Bounded: at most `capacity` keys; a full cache drops an arbitrary tenth of its keys.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::SeqCst};
use std::sync::{Arc, Mutex};

use shoal_resp::{Reply, ReplyLimits, encode_request, parse_reply};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::error::{Error, Result};
use crate::pool::{Client, Config};

#[derive(Default)]
struct Local {
    values: HashMap<Vec<u8>, Vec<u8>>,
    /// Reads in flight: key → the ticket of the read that may store it.
    pending: HashMap<Vec<u8>, u64>,
}

struct Shared {
    local: Mutex<Local>,
    capacity: usize,
    healthy: AtomicBool,
    tickets: AtomicU64,
    /// Invalidation messages handled (for tests and metrics).
    invalidations: AtomicU64,
}

impl Shared {
    fn invalidate(&self, keys: Option<Vec<Vec<u8>>>) {
        let mut l = self.local.lock().unwrap_or_else(|e| e.into_inner());
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
}

/// A [`Client`] with a near cache for GET. Cheap to clone.
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
    client: Client,
    shared: Arc<Shared>,
    listener: Arc<tokio::task::AbortHandle>,
}

impl Drop for NearCache {
    fn drop(&mut self) {
        if Arc::strong_count(&self.listener) == 1 {
            self.listener.abort();
        }
    }
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
    /// Opens the invalidation connection, then a pool whose connections track their reads
    /// with `REDIRECT` to it. `capacity`: keys kept at most.
    pub async fn connect(mut cfg: Config, capacity: usize) -> Result<NearCache> {
        let mut s = tokio::time::timeout(cfg.connect_timeout, TcpStream::connect(&cfg.addr))
            .await
            .map_err(|_| Error::Timeout)?
            .map_err(|e| Error::Connection(e.to_string()))?;
        let mut buf = Vec::new();
        let id = request(&mut s, &mut buf, &[b"CLIENT", b"ID"])
            .await?
            .as_int()
            .ok_or_else(|| Error::UnexpectedReply("CLIENT ID".into()))?;
        request(&mut s, &mut buf, &[b"SUBSCRIBE", b"__redis__:invalidate"]).await?;
        let shared = Arc::new(Shared {
            local: Mutex::new(Local::default()),
            capacity: capacity.max(1),
            healthy: AtomicBool::new(true),
            tickets: AtomicU64::new(0),
            invalidations: AtomicU64::new(0),
        });
        let listener = tokio::spawn(listen(s, buf, shared.clone())).abort_handle();
        let id = id.to_string();
        cfg.on_connect.push(
            [
                &b"CLIENT"[..],
                b"TRACKING",
                b"on",
                b"REDIRECT",
                id.as_bytes(),
            ]
            .iter()
            .map(|a| a.to_vec())
            .collect(),
        );
        Ok(NearCache {
            client: Client::new(cfg),
            shared,
            listener: Arc::new(listener),
        })
    }

    pub fn client(&self) -> &Client {
        &self.client
    }

    /// Invalidation messages handled so far.
    pub fn invalidations(&self) -> u64 {
        self.shared.invalidations.load(SeqCst)
    }

    /// GET through the near cache.
    pub async fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>> {
        let sh = &self.shared;
        if !sh.healthy.load(SeqCst) {
            return self.client.get(key).await;
        }
        let ticket = sh.tickets.fetch_add(1, SeqCst);
        {
            let mut l = sh.local.lock().unwrap_or_else(|e| e.into_inner());
            if let Some(v) = l.values.get(key) {
                return Ok(Some(v.clone()));
            }
            l.pending.insert(key.to_vec(), ticket);
        }
        let r = self.client.get(key).await;
        let mut l = sh.local.lock().unwrap_or_else(|e| e.into_inner());
        let still_ours = l.pending.get(key) == Some(&ticket);
        if still_ours {
            l.pending.remove(key);
        }
        // Absent keys are not kept: the server tracks only keys it read.
        if let Ok(Some(v)) = &r
            && still_ours
            && sh.healthy.load(SeqCst)
        {
            if l.values.len() >= sh.capacity {
                let drop_n = (sh.capacity / 10).max(1);
                let victims: Vec<Vec<u8>> = l.values.keys().take(drop_n).cloned().collect();
                for k in victims {
                    l.values.remove(&k);
                }
            }
            l.values.insert(key.to_vec(), v.clone());
        }
        r
    }
}

/// Reads invalidation messages until the connection ends; then empties and disables the cache.
async fn listen(mut s: TcpStream, mut buf: Vec<u8>, shared: Arc<Shared>) {
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
    shared.healthy.store(false, SeqCst);
    shared.invalidate(None);
}
