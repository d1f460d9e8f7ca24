//! `shoal-client`: an async (tokio) client for shoal that also works against redis-server with
//! the shoal-only features off. The RESP codec is shoal-resp's (request encoder, bounded reply
//! parser); redis-rs is not used.
//!
//! - [`Client`]: a pool of connections to one server, pipelining ([`Client::pipeline`],
//!   [`Client::pipeline_args`]: one write per batch; concurrent callers' batches share writes),
//!   a timeout on every connect and request, reconnection with exponential backoff and jitter,
//!   typed errors ([`Error`]: reply, redirect, timeout, connection, protocol) and metrics hooks
//!   ([`Metrics`]).
//! - [`Cache`]: cache-aside [`Cache::get_or_load`] with one load per key per process, one per
//!   key across processes through shoal's leases (`GETLEASE`/`SETLEASE`), stale-while-revalidate
//!   ([`Cache::get_or_load_marked`] says when a value is served stale), negative caching, an
//!   optional Bloom filter guard and TTL jitter.
//! - [`ClusterClient`]: routing by slot over a map read from `CLUSTER SHARDS`, following
//!   `MOVED` (and refreshing the map) and `ASK`; transient failures (a failover: connection
//!   loss, `CLUSTERDOWN`, `TRYAGAIN`) retried with backoff within [`Config::retry_budget`];
//!   reads from replicas on request ([`ClusterClient::cmd_replica`]) and as a fallback when a
//!   primary is unavailable ([`ClusterClient::cmd_read`]).
//! - [`NearCache`]: GETs kept in process, coherent through `CLIENT TRACKING` invalidations, over
//!   one server or a cluster ([`NearCache::cluster`]: one tracking link per node).
//! - A circuit breaker per node ([`Config::breaker_failures`]): failures in a row fail requests at
//!   once ([`Error::CircuitOpen`]) for a cooldown; `get_or_load` then goes to the loader, a
//!   bounded number at a time ([`CacheOptions::fallback_loads_max`]).
//!
//! [`Cache::new_cluster`] runs `get_or_load` over a cluster. Not here yet: a circuit breaker over
//! a whole cluster (each node's pool has its own), key finding in `ClusterClient` (the caller
//! names the routing key), RESP3 on the client's own connections (push frames and attributes
//! would need the multiplexer to tell them from replies).

mod cache;
mod cluster;
mod conn;
mod error;
mod metrics;
mod near;
mod pool;

pub use cache::{Cache, CacheOptions, Lookup, NEGATIVE_MARKER};
pub use cluster::{ClusterClient, REDIRECTS_MAX, RETRIES_MAX, SLOTS, key_slot};
pub use error::{Error, Result};
pub use metrics::{CacheEvent, Metrics, NoMetrics};
pub use near::{LINK_RETRY_DELAY, MAP_CHECK_INTERVAL, NearCache};
pub use pool::{Client, Config, cmd};
pub use shoal_resp::Reply;
