//! Metrics hooks: a [`Metrics`] implementation given to the client hears about every request,
//! reconnect and cache decision; the default ([`NoMetrics`]) ignores them. The client keeps no
//! counters of its own, so an application forwards these to whatever it exports.

use std::time::Duration;

/// What `get_or_load` decided for one call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CacheEvent {
    /// A fresh value from the server.
    Hit,
    /// A stale value served while one caller refreshes it.
    Stale,
    /// A cached "not found".
    NegativeHit,
    /// The Bloom filter said the key exists nowhere: no load.
    BloomReject,
    /// This call ran the loader.
    Load,
    /// Another caller in this process was loading the key: this one waited for its result.
    Coalesced,
    /// Another process held the key's lease: this call waited for its fill.
    LeaseWait,
    /// The server was unavailable: this call went to the loader (bounded) and stored nothing.
    Fallback,
}

/// Receives the client's events. Every method has an empty default.
pub trait Metrics: Send + Sync {
    /// A batch of `commands` finished (`ok`: replies came back) after `elapsed`.
    fn request(&self, _commands: usize, _elapsed: Duration, _ok: bool) {}
    /// A connect to `addr` was attempted.
    fn reconnect(&self, _addr: &str, _ok: bool) {}
    /// A `get_or_load` decision.
    fn cache(&self, _event: CacheEvent) {}
}

/// Ignores every event.
pub struct NoMetrics;

impl Metrics for NoMetrics {}
