//! Replica reads with a lag bound (issue 13): `READONLY MAXLAG <ms>` (a shoal extension; plain
//! `READONLY` is Redis's) asks that this connection's reads be answered only while the node is
//! at most `ms` behind its primary; otherwise they get
//! `-TRYAGAIN replica is <lag> ms behind its primary (maxlag <ms>)` and the client retries (later,
//! or on the primary). Works in primary–replica mode and in cluster mode, where it also turns
//! `READONLY` on and a replica too far behind redirects reads of its primary's slots there with
//! `-MOVED` (keyless reads get `-TRYAGAIN`). `READWRITE` and `RESET` drop the bound.
//!
//! "Behind" is what the replica can know without a clock shared with its primary: the primary
//! sends something (a write's effect or a keep-alive PING) at least every
//! [`shoal_replication::PING_INTERVAL_MS`] while the link is up, so while the link is streaming
//! and the last bytes came within that interval plus [`LAG_GRACE_MS`], the replica holds
//! everything the primary had (up to the network's delay) and is 0 ms behind; otherwise it is
//! behind by the time since it last heard from its primary (its data is that old at least).
//! During a full copy, or before the first one, the lag is unknown and reads are refused. A
//! primary is never behind. Times come from the node's clock (`now_ms`).

use std::sync::atomic::Ordering::Relaxed;

use shoal_replication::state::LinkState;

use crate::error::ReplyError;
use crate::state::ServerState;

/// Silence beyond the keep-alive interval still counted as an up-to-date link (scheduling and
/// network jitter).
pub const LAG_GRACE_MS: u64 = 500;

/// How far behind its primary this node is, in ms (`None`: unknown — never synced, or loading
/// a full copy). 0 on a primary.
pub fn replica_lag_ms(srv: &ServerState, now_ms: u64) -> Option<u64> {
    if !srv.repl.is_replica() {
        return Some(0);
    }
    let last = srv.repl.link_last_io_ms.load(Relaxed);
    if last == 0 {
        return None;
    }
    let silence = now_ms.saturating_sub(last);
    match srv.repl.link_state() {
        LinkState::Syncing => None,
        LinkState::Connected if silence <= shoal_replication::PING_INTERVAL_MS + LAG_GRACE_MS => {
            Some(0)
        }
        _ => Some(silence),
    }
}

/// Admission of a read on a connection with a lag bound.
pub fn check(srv: &ServerState, maxlag_ms: u64, now_ms: u64) -> Result<(), ReplyError> {
    match replica_lag_ms(srv, now_ms) {
        Some(lag) if lag <= maxlag_ms => Ok(()),
        Some(lag) => Err(ReplyError::Other {
            code: "TRYAGAIN",
            msg: format!("replica is {lag} ms behind its primary (maxlag {maxlag_ms})").into(),
        }),
        None => Err(ReplyError::Other {
            code: "TRYAGAIN",
            msg: format!("replica has not synchronized with its primary yet (maxlag {maxlag_ms})")
                .into(),
        }),
    }
}

/// The `ms` of `READONLY MAXLAG ms` (`args` after `READONLY`).
pub fn parse(args: &crate::Args<'_>) -> Result<u64, ReplyError> {
    if args.len() != 3 || !args.get(1).eq_ignore_ascii_case(b"maxlag") {
        return Err(crate::args::ERR_SYNTAX);
    }
    match args.i64(2) {
        Ok(ms) if ms >= 0 => Ok(ms as u64),
        _ => Err(ReplyError::err_static(
            "maxlag must be a non-negative number of milliseconds",
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_primary_is_never_behind() {
        let srv = ServerState::new(
            crate::config::Config::default(),
            1_000,
            7,
            crate::Hooks::default(),
        );
        assert_eq!(replica_lag_ms(&srv, 1_000_000), Some(0));
        assert!(check(&srv, 0, 1_000_000).is_ok());
    }

    #[test]
    fn the_refusal_says_how_far_behind() {
        let e = ReplyError::Other {
            code: "TRYAGAIN",
            msg: "replica is 1234 ms behind its primary (maxlag 100)".into(),
        };
        assert_eq!(
            e.to_string(),
            "TRYAGAIN replica is 1234 ms behind its primary (maxlag 100)"
        );
    }
}
