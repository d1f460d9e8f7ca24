//! Replication (DESIGN.md §4), sans I/O: replication ids and offsets, the backlog, the one codec of
//! the effect stream, PSYNC decisions, acknowledgement tracking and the role machine
//! ([`state::ReplState`]), both sides of a link as state machines that take bytes in and give bytes
//! out ([`primary_link`], [`replica_link`]), FAILOVER's decisions ([`failover`]), the snapshot format
//! and slot digests. No tokio, no sockets, no clock: the server crate drives these over TCP, and the
//! simulator (`shoal-sim`) drives the very same code over a simulated network.

pub mod aof;
pub mod backlog;
pub mod digest;
pub mod failover;
pub mod primary_link;
pub mod replica_link;
pub mod snapshot;
pub mod state;
pub mod stream;

pub use backlog::{BACKLOG_BYTES_DEFAULT, Backlog};
pub use state::{
    FailoverRequest, FailoverState, HistoryRead, Ids, LinkState, ReplState, ReplicaInfo, Role,
    Settle, Strategy, settle,
};

/// Interval of the stream's keep-alive PING while replicas are attached.
pub const PING_INTERVAL_MS: u64 = 1_000;
