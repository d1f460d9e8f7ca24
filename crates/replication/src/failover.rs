//! Coordinated failover's decisions (`FAILOVER [TO host port] [TIMEOUT ms] [FORCE]`, as in Redis
//! 6.2), sans I/O: pause writes, choose the target replica, wait until it acknowledged everything
//! written before the pause, then say "promote it". The I/O layer sends the target `REPLICAOF NO
//! ONE` and makes this node follow it. Nothing acknowledged is lost: writes are paused while the
//! replica catches up, and the old primary resumes from the new one by partial resync (the promoted
//! node keeps the old replication id as its second id).

use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;

use crate::state::{FailoverRequest, ReplState, ReplicaInfo};

/// Time to catch up when FAILOVER has no TIMEOUT.
pub const CATCH_UP_DEFAULT_MS: u64 = 10_000;
/// The write pause outlasts the catch-up window by this much, so the hand-over itself is covered.
pub const PAUSE_EXTRA_MS: u64 = 5_000;

/// A failover under way.
#[derive(Debug)]
pub struct Plan {
    target: Arc<ReplicaInfo>,
    deadline_ms: u64,
    force: bool,
}

/// What to do next.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    /// Not caught up yet: poll again shortly.
    Wait,
    /// Send the target `REPLICAOF NO ONE`, then follow it.
    Promote { host: String, port: u16 },
    /// Give up (the reason is logged); call [`finish`].
    Abort(String),
}

fn set_state(repl: &ReplState, s: &'static str) {
    *repl.failover.state.lock().expect("failover lock") = s;
}

/// Pauses writes and chooses the target. `Err` says why it cannot start (then call [`finish`]).
pub fn begin(repl: &ReplState, req: &FailoverRequest, now_ms: u64) -> Result<Plan, String> {
    let timeout_ms = if req.timeout_ms == 0 {
        CATCH_UP_DEFAULT_MS
    } else {
        req.timeout_ms
    };
    let deadline_ms = now_ms + timeout_ms;
    repl.failover
        .writes_paused_until_ms
        .store(deadline_ms + PAUSE_EXTRA_MS, Relaxed);
    let replicas = repl.replicas();
    let target = match &req.to {
        Some((host, port)) => replicas.into_iter().find(|r| {
            r.listening_port.load(Relaxed) == *port as u64 && (r.ip == *host || host == "localhost")
        }),
        None => replicas
            .into_iter()
            .max_by_key(|r| r.ack_offset.load(Relaxed)),
    };
    let target = target.ok_or_else(|| "aborted: target replica not found".to_string())?;
    Ok(Plan {
        target,
        deadline_ms,
        force: req.force,
    })
}

impl Plan {
    pub fn poll(&self, repl: &ReplState, now_ms: u64) -> Step {
        if repl.failover.abort.load(Relaxed) {
            return Step::Abort("aborted by FAILOVER ABORT".into());
        }
        let end = repl.offset();
        let caught_up = self.target.ack_offset.load(Relaxed) >= end;
        if !caught_up && now_ms < self.deadline_ms {
            return Step::Wait;
        }
        if !caught_up && !self.force {
            return Step::Abort("aborted: replica did not catch up before the timeout".into());
        }
        set_state(repl, "failover-in-progress");
        Step::Promote {
            host: self.target.ip.clone(),
            port: self.target.listening_port.load(Relaxed) as u16,
        }
    }
}

/// Ends a failover (done or aborted): writes resume.
pub fn finish(repl: &ReplState) {
    repl.end_failover();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn waits_for_the_target_then_promotes_it_or_aborts_at_the_deadline() {
        let repl = ReplState::new("a".repeat(40));
        repl.append(b"0123456789");
        let r = Arc::new(ReplicaInfo {
            id: 1,
            ip: "127.0.0.1".into(),
            listening_port: 7000.into(),
            ack_offset: 4.into(),
            last_ack_ms: 0.into(),
            sent_offset: 10.into(),
            holds_acked: true.into(),
            fack_offset: 0.into(),
        });
        repl.attach(r.clone());
        let req = FailoverRequest {
            to: None,
            timeout_ms: 100,
            force: false,
        };
        assert!(repl.begin_failover());
        assert!(!repl.begin_failover(), "one failover at a time");
        let plan = begin(&repl, &req, 1_000).unwrap();
        assert!(repl.failover.writes_paused_until_ms.load(Relaxed) > 1_100);
        assert_eq!(plan.poll(&repl, 1_050), Step::Wait);
        assert!(matches!(plan.poll(&repl, 1_100), Step::Abort(_)));
        repl.record_ack(&r, 10, 1_060);
        assert_eq!(
            plan.poll(&repl, 1_070),
            Step::Promote {
                host: "127.0.0.1".into(),
                port: 7000
            }
        );
        finish(&repl);
        assert_eq!(repl.failover.writes_paused_until_ms.load(Relaxed), 0);
        assert!(!repl.failing_over());
        let missing = FailoverRequest {
            to: Some(("127.0.0.1".into(), 1)),
            ..req
        };
        assert!(begin(&repl, &missing, 0).is_err());
    }
}
