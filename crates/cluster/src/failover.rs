//! A replica's manual failover (`CLUSTER FAILOVER [FORCE|TAKEOVER]`), sans I/O: when to ask the
//! primary to hold its writes and report its stream's end, when the replica has caught up, and
//! when to propose its promotion (`Change::Promote`) to the configuration group. The server
//! carries the steps out (`ClusterNode::manual_failover`); time and offsets are inputs.
//!
//! Coordinated (no option): the primary holds writes (clients wait, they get no error) and reports
//! the end of its stream; the replica waits until it applied that much, then asks again, and
//! proposes its promotion only once a report finds it caught up at the moment of the report. The
//! second report closes a race: a write that passed the primary's pause check just before the
//! pause began may reach the stream just after the first report read its end. Every report
//! renews the pause, so the primary still holds writes while the promotion commits; once it sees
//! the new configuration it serves as a replica and redirects the writes it held.
//!
//! `FORCE` does not talk to the primary (it may be down): the promotion is proposed at once.
//! `TAKEOVER` is the same in shoal: Redis's takeover skips the election among primaries, and here
//! there is none to skip, since the configuration group (Raft) orders every change anyway.

/// How long a coordinated failover waits for the replica to catch up (Redis's
/// `CLUSTER_MF_TIMEOUT`). Past it the failover is given up and the primary resumes writes.
pub const MANUAL_FAILOVER_TIMEOUT_MS: u64 = 5_000;
/// How long a primary holds writes for each report it is asked for (Redis pauses its clients for
/// twice the failover timeout, `CLUSTER_MF_PAUSE_MULT`): long enough to cover the promotion's
/// commit after the last report.
pub const MANUAL_FAILOVER_PAUSE_MS: u64 = 2 * MANUAL_FAILOVER_TIMEOUT_MS;
/// How long the promotion may take to commit. Shorter than the pause, so a primary that was held
/// still holds its writes when the promotion commits.
pub const MANUAL_FAILOVER_PROPOSE_TIMEOUT_MS: u64 = MANUAL_FAILOVER_TIMEOUT_MS;

/// A manual failover under way on a replica.
#[derive(Debug, Clone)]
pub struct ManualFailover {
    force: bool,
    deadline_ms: u64,
    /// The primary's stream end in its last report.
    reported: Option<u64>,
    /// Reports received.
    reports: u32,
    /// A report after the first found this replica caught up: nothing written before the pause
    /// is missing here.
    ready: bool,
}

/// What to do next.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    /// Ask the primary to hold writes for [`MANUAL_FAILOVER_PAUSE_MS`] and report its stream's
    /// end; give the answer to [`ManualFailover::on_report`].
    AskPrimary,
    /// The stream is still arriving: poll again shortly.
    Wait,
    /// Propose `Change::Promote` of this replica.
    Promote,
    /// Give up, for this reason (the primary, if it was held, resumes).
    Abort(String),
}

impl ManualFailover {
    /// A failover starting at `now_ms`; `force` (FORCE or TAKEOVER) skips the primary.
    pub fn new(force: bool, now_ms: u64) -> ManualFailover {
        ManualFailover {
            force,
            deadline_ms: now_ms + MANUAL_FAILOVER_TIMEOUT_MS,
            reported: None,
            reports: 0,
            ready: false,
        }
    }

    /// The next step, given the offset this replica applied from its primary's stream.
    pub fn poll(&self, applied: u64, now_ms: u64) -> Step {
        if self.force || self.ready {
            return Step::Promote;
        }
        if now_ms >= self.deadline_ms {
            return Step::Abort(format!(
                "the replica did not catch up with its primary within {MANUAL_FAILOVER_TIMEOUT_MS} ms"
            ));
        }
        match self.reported {
            None => Step::AskPrimary,
            // Caught up with the last report: ask again, to confirm nothing more came.
            Some(end) if applied >= end => Step::AskPrimary,
            Some(_) => Step::Wait,
        }
    }

    /// The primary reported the end of its stream (`primary_end`); `applied` is this replica's
    /// offset read after the report arrived.
    pub fn on_report(&mut self, primary_end: u64, applied: u64) {
        self.reports += 1;
        self.reported = Some(primary_end);
        if self.reports >= 2 && applied >= primary_end {
            self.ready = true;
        }
    }

    /// Whether the primary was asked to hold writes (so an abort must let it resume).
    pub fn primary_held(&self) -> bool {
        self.reports > 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn coordinated_waits_for_the_stream_then_confirms_before_promoting() {
        let mut mf = ManualFailover::new(false, 1_000);
        assert_eq!(mf.poll(0, 1_000), Step::AskPrimary);
        assert!(!mf.primary_held());
        // The primary holds writes at offset 500; the replica applied 400 when the report came.
        mf.on_report(500, 400);
        assert!(mf.primary_held());
        assert_eq!(mf.poll(450, 1_010), Step::Wait);
        // Caught up: one more report before promoting.
        assert_eq!(mf.poll(500, 1_020), Step::AskPrimary);
        // A write that was under way when the pause began reached the stream: wait for it.
        mf.on_report(530, 500);
        assert_eq!(mf.poll(500, 1_030), Step::Wait);
        assert_eq!(mf.poll(530, 1_040), Step::AskPrimary);
        mf.on_report(530, 530);
        assert_eq!(mf.poll(530, 1_050), Step::Promote);
    }

    #[test]
    fn one_report_is_never_enough_even_when_caught_up() {
        let mut mf = ManualFailover::new(false, 0);
        mf.on_report(100, 100);
        assert_eq!(mf.poll(100, 1), Step::AskPrimary);
        mf.on_report(100, 100);
        assert_eq!(mf.poll(100, 2), Step::Promote);
    }

    #[test]
    fn a_replica_that_does_not_catch_up_in_time_gives_up() {
        let mut mf = ManualFailover::new(false, 1_000);
        mf.on_report(500, 0);
        assert_eq!(
            mf.poll(499, 1_000 + MANUAL_FAILOVER_TIMEOUT_MS - 1),
            Step::Wait
        );
        assert!(matches!(
            mf.poll(499, 1_000 + MANUAL_FAILOVER_TIMEOUT_MS),
            Step::Abort(_)
        ));
        const { assert!(MANUAL_FAILOVER_PROPOSE_TIMEOUT_MS < MANUAL_FAILOVER_PAUSE_MS) };
    }

    #[test]
    fn force_promotes_without_the_primary() {
        let mf = ManualFailover::new(true, 0);
        assert_eq!(mf.poll(0, 0), Step::Promote);
        assert_eq!(mf.poll(0, u64::MAX), Step::Promote);
        assert!(!mf.primary_held());
    }
}
