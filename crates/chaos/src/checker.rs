//! The checker: reads a recorded history and the final state and says what was lost.
//! - lost writes: acknowledged unique SETs and SADDs missing (or different) at the end;
//! - lost increments: a counter's final value against its acknowledged INCRs (INCRs of
//!   unknown outcome widen the allowed range; a value above it is reported as phantom);
//! - two-primary windows: per replica group, a write acknowledged by node X strictly between two
//!   writes acknowledged by node Y that are less than a node timeout apart (Y was accepting
//!   before and after, too soon for two failovers, so both took writes at once);
//! - linearizability of each register (sync mode), with `linear.rs`.
//!
//! Pure: no I/O, no clock; everything it judges is in its arguments, so its unit tests feed it
//! hand-written histories.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use crate::history::{FinalState, Kind, Op, Outcome, Shard};
use crate::linear::{self, RegOp, TimedOp, Verdict};
use crate::slots::key_slot;

/// Search budget per register key (steps of the Wing–Gong search).
pub const LINEAR_STEPS_MAX: u64 = 2_000_000;

#[derive(Clone, Debug, Default)]
pub struct Report {
    /// Writes (every kind) whose reply said they happened.
    pub acked_writes: usize,
    /// Writes whose outcome is unknown.
    pub unknown_writes: usize,
    /// Acknowledged unique SETs and SADDs absent at the end, with their keys.
    pub lost_writes: Vec<String>,
    /// Acknowledged INCRs not reflected in the final counters (sum over keys).
    pub lost_increments: i64,
    /// Increments in the final counters that no INCR can explain.
    pub phantom_increments: i64,
    pub two_primary: Vec<TwoPrimary>,
    /// Per register key; empty when not checked (async mode).
    pub linearizability: BTreeMap<String, Verdict>,
    pub unreadable: Vec<String>,
}

/// Node `x` acknowledged a write for the group while `y` was acknowledging writes before and
/// after it: `[from_us, to_us]` is the window (y's earlier completion, y's later invocation).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TwoPrimary {
    pub group: usize,
    pub x: String,
    pub y: String,
    pub from_us: u64,
    pub to_us: u64,
}

impl Report {
    /// `Some(true)` if every register checked is linearizable, `Some(false)` if any is not,
    /// `None` if none was checked or a search ran out of budget (and none failed).
    pub fn linearizable(&self) -> Option<bool> {
        if self
            .linearizability
            .values()
            .any(|v| matches!(v, Verdict::NotLinearizable { .. }))
        {
            return Some(false);
        }
        if self.linearizability.is_empty()
            || self
                .linearizability
                .values()
                .any(|v| matches!(v, Verdict::Undetermined { .. }))
        {
            return None;
        }
        Some(true)
    }

    /// The `sync` contract: nothing acknowledged is lost, no two primaries, linearizable
    /// registers, and everything could be read back.
    pub fn sync_ok(&self) -> bool {
        self.lost_writes.is_empty()
            && self.lost_increments == 0
            && self.phantom_increments == 0
            && self.two_primary.is_empty()
            && self.linearizable() != Some(false)
            && self.unreadable.is_empty()
    }

    /// The `async` contract: losses are measured, not failed; two primaries still fail.
    pub fn async_ok(&self) -> bool {
        self.two_primary.is_empty() && self.unreadable.is_empty()
    }

    pub fn lost_total(&self) -> usize {
        self.lost_writes.len() + self.lost_increments.max(0) as usize
    }
}

/// Checks `ops` (the clients' history, final reads excluded) against `fin`.
/// `window_us`: the two-primary window bound (the node timeout). `check_linear`: run the
/// register search (sync mode).
pub fn check(
    ops: &[Op],
    fin: &FinalState,
    shards: &[Shard],
    window_us: u64,
    check_linear: bool,
) -> Report {
    let mut rep = Report {
        unreadable: fin.unreadable.clone(),
        ..Report::default()
    };
    for op in ops.iter().filter(|o| o.kind.is_write()) {
        match op.outcome {
            Outcome::Ok => rep.acked_writes += 1,
            Outcome::Unknown => rep.unknown_writes += 1,
            Outcome::Fail => {}
        }
    }
    lost_writes(ops, fin, &mut rep);
    counters(ops, fin, &mut rep);
    rep.two_primary = two_primaries(ops, shards, window_us);
    if check_linear {
        registers(ops, fin, &mut rep);
    }
    rep
}

fn lost_writes(ops: &[Op], fin: &FinalState, rep: &mut Report) {
    let members: HashMap<&str, BTreeSet<&str>> = fin
        .sets
        .iter()
        .map(|(k, v)| (k.as_str(), v.iter().map(String::as_str).collect()))
        .collect();
    for op in ops.iter().filter(|o| o.outcome == Outcome::Ok) {
        let value = op.value.as_deref();
        let lost = match op.kind {
            Kind::Unique => match fin.uniques.get(&op.key) {
                Some(found) => found.as_deref() != value,
                None => false, // not read back: counted as unreadable
            },
            Kind::Sadd => match members.get(op.key.as_str()) {
                Some(m) => !value.is_some_and(|v| m.contains(v)),
                None => false,
            },
            _ => false,
        };
        if lost {
            rep.lost_writes
                .push(format!("{} {}", op.key, value.unwrap_or("")));
        }
    }
}

fn counters(ops: &[Op], fin: &FinalState, rep: &mut Report) {
    for (key, found) in &fin.counters {
        let incrs = ops.iter().filter(|o| o.kind == Kind::Incr && &o.key == key);
        let (mut acked, mut unknown) = (0i64, 0i64);
        for o in incrs {
            match o.outcome {
                Outcome::Ok => acked += 1,
                Outcome::Unknown => unknown += 1,
                Outcome::Fail => {}
            }
        }
        let value = found.unwrap_or(0);
        rep.lost_increments += (acked - value).max(0);
        rep.phantom_increments += (value - acked - unknown).max(0);
    }
}

/// See the module header. Writes are grouped by the replica group that owned their slot when
/// the run started (slots do not move during a run).
pub fn two_primaries(ops: &[Op], shards: &[Shard], window_us: u64) -> Vec<TwoPrimary> {
    let mut found = Vec::new();
    for (g, shard) in shards.iter().enumerate() {
        // node -> (completions sorted, invocations sorted) of its acknowledged writes here.
        let mut by_node: BTreeMap<&str, Vec<&Op>> = BTreeMap::new();
        for op in ops.iter().filter(|o| {
            o.kind.is_write() && o.outcome == Outcome::Ok && shard.holds(key_slot(o.key.as_bytes()))
        }) {
            if let Some(n) = &op.node {
                by_node.entry(n.as_str()).or_default().push(op);
            }
        }
        let index: Vec<(&str, Vec<u64>, Vec<u64>)> = by_node
            .iter()
            .map(|(n, v)| {
                let mut comps: Vec<u64> = v.iter().map(|o| o.complete_us).collect();
                let mut invs: Vec<u64> = v.iter().map(|o| o.invoke_us).collect();
                comps.sort_unstable();
                invs.sort_unstable();
                (*n, comps, invs)
            })
            .collect();
        let mut seen: BTreeSet<(String, String, u64)> = BTreeSet::new();
        for (x, xs) in &by_node {
            for op in xs {
                for (y, comps, invs) in &index {
                    if y == x {
                        continue;
                    }
                    // y's latest completion before op's invocation ...
                    let i = comps.partition_point(|&c| c < op.invoke_us);
                    let Some(&before) = i.checked_sub(1).map(|i| &comps[i]) else {
                        continue;
                    };
                    // ... and y's earliest invocation after op's completion.
                    let j = invs.partition_point(|&t| t <= op.complete_us);
                    let Some(&after) = invs.get(j) else {
                        continue;
                    };
                    if after - before <= window_us
                        && seen.insert((x.to_string(), y.to_string(), before))
                    {
                        found.push(TwoPrimary {
                            group: g,
                            x: x.to_string(),
                            y: y.to_string(),
                            from_us: before,
                            to_us: after,
                        });
                    }
                }
            }
        }
    }
    found
}

fn registers(ops: &[Op], fin: &FinalState, rep: &mut Report) {
    let mut per_key: BTreeMap<&str, Vec<TimedOp>> = BTreeMap::new();
    let mut last_us = 0;
    for op in ops {
        last_us = last_us.max(op.complete_us);
        let timed = match (op.kind, op.outcome) {
            (Kind::Write, Outcome::Ok | Outcome::Unknown) => TimedOp {
                op: RegOp::Write(op.value.clone().unwrap_or_default()),
                invoke_us: op.invoke_us,
                complete_us: (op.outcome == Outcome::Ok).then_some(op.complete_us),
            },
            (Kind::Read, Outcome::Ok) => TimedOp {
                op: RegOp::Read(op.value.clone()),
                invoke_us: op.invoke_us,
                complete_us: Some(op.complete_us),
            },
            _ => continue,
        };
        per_key.entry(op.key.as_str()).or_default().push(timed);
    }
    for key in fin.registers.keys() {
        per_key.entry(key.as_str()).or_default();
    }
    for (key, mut h) in per_key {
        // The final read happens after everything: it is where a lost write shows.
        if let Some(v) = fin.registers.get(key) {
            h.push(TimedOp {
                op: RegOp::Read(v.clone()),
                invoke_us: last_us + 1,
                complete_us: Some(last_us + 2),
            });
        }
        rep.linearizability.insert(
            key.to_string(),
            linear::check_register(&h, LINEAR_STEPS_MAX),
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn op(kind: Kind, key: &str, value: Option<&str>, t: (u64, u64), outcome: Outcome) -> Op {
        Op {
            client: 0,
            kind,
            key: key.into(),
            value: value.map(String::from),
            invoke_us: t.0,
            complete_us: t.1,
            outcome,
            node: Some("n1".into()),
            error: None,
        }
    }
    fn at(mut o: Op, node: &str) -> Op {
        o.node = Some(node.into());
        o
    }
    fn all_slots() -> Vec<Shard> {
        vec![Shard {
            ranges: vec![(0, 16383)],
            primary: "n1".into(),
            replicas: vec!["n2".into()],
        }]
    }

    #[test]
    fn a_lost_acknowledged_write_fails_the_run() {
        let ops = vec![
            op(Kind::Unique, "u:1", Some("v1"), (0, 1), Outcome::Ok),
            op(Kind::Unique, "u:2", Some("v2"), (2, 3), Outcome::Ok),
            // Unknown and failed writes may be missing.
            op(Kind::Unique, "u:3", Some("v3"), (4, 5), Outcome::Unknown),
            op(Kind::Unique, "u:4", Some("v4"), (6, 7), Outcome::Fail),
        ];
        let mut fin = FinalState::default();
        fin.uniques.insert("u:1".into(), Some("v1".into()));
        fin.uniques.insert("u:2".into(), None);
        fin.uniques.insert("u:3".into(), None);
        fin.uniques.insert("u:4".into(), None);
        let rep = check(&ops, &fin, &all_slots(), 1000, true);
        assert_eq!(rep.lost_writes, vec!["u:2 v2".to_string()]);
        assert_eq!((rep.acked_writes, rep.unknown_writes), (2, 1));
        assert!(!rep.sync_ok());
        assert!(
            rep.async_ok(),
            "async measures losses, it does not fail on them"
        );
    }

    #[test]
    fn a_lost_set_member_is_reported() {
        let ops = vec![
            op(Kind::Sadd, "s", Some("a"), (0, 1), Outcome::Ok),
            op(Kind::Sadd, "s", Some("b"), (2, 3), Outcome::Ok),
        ];
        let mut fin = FinalState::default();
        fin.sets.insert("s".into(), vec!["a".into()]);
        let rep = check(&ops, &fin, &all_slots(), 1000, true);
        assert_eq!(rep.lost_writes, vec!["s b".to_string()]);
    }

    #[test]
    fn increments_are_bounded_by_acknowledged_and_unknown() {
        let incr = |o| op(Kind::Incr, "c", None, (0, 1), o);
        let ops = vec![
            incr(Outcome::Ok),
            incr(Outcome::Ok),
            incr(Outcome::Ok),
            incr(Outcome::Unknown),
            incr(Outcome::Fail),
        ];
        let with_final = |v: i64| {
            let mut fin = FinalState::default();
            fin.counters.insert("c".into(), Some(v));
            check(&ops, &fin, &all_slots(), 1000, true)
        };
        let (lost, ok3, ok4, phantom) =
            (with_final(2), with_final(3), with_final(4), with_final(5));
        assert_eq!((lost.lost_increments, lost.sync_ok()), (1, false));
        assert!(ok3.sync_ok() && ok4.sync_ok());
        assert_eq!((phantom.phantom_increments, phantom.sync_ok()), (1, false));
    }

    #[test]
    fn a_stale_register_read_is_not_linearizable() {
        let ops = vec![
            op(Kind::Write, "r", Some("a"), (0, 10), Outcome::Ok),
            op(Kind::Write, "r", Some("b"), (20, 30), Outcome::Ok),
            op(Kind::Read, "r", Some("a"), (40, 50), Outcome::Ok),
        ];
        let mut fin = FinalState::default();
        fin.registers.insert("r".into(), Some("b".into()));
        let rep = check(&ops, &fin, &all_slots(), 1000, true);
        assert_eq!(rep.linearizable(), Some(false));
        assert!(!rep.sync_ok());
    }

    #[test]
    fn a_lost_register_write_shows_in_the_final_read() {
        let ops = vec![op(Kind::Write, "r", Some("a"), (0, 10), Outcome::Ok)];
        let mut fin = FinalState::default();
        fin.registers.insert("r".into(), None);
        let rep = check(&ops, &fin, &all_slots(), 1000, true);
        assert_eq!(rep.linearizable(), Some(false));
    }

    #[test]
    fn concurrent_register_ops_with_a_valid_order_pass() {
        let ops = vec![
            op(Kind::Write, "r", Some("a"), (0, 100), Outcome::Ok),
            op(Kind::Write, "r", Some("b"), (50, 150), Outcome::Ok),
            op(Kind::Read, "r", Some("a"), (120, 200), Outcome::Ok),
            op(Kind::Read, "r", Some("b"), (210, 250), Outcome::Ok),
            // Unknown outcome, never seen: may not have happened.
            op(Kind::Write, "r", Some("c"), (260, 270), Outcome::Unknown),
            op(Kind::Read, "r", Some("b"), (280, 290), Outcome::Ok),
            // A failed read says nothing.
            op(Kind::Read, "r", Some("zz"), (300, 310), Outcome::Fail),
        ];
        let mut fin = FinalState::default();
        fin.registers.insert("r".into(), Some("b".into()));
        let rep = check(&ops, &fin, &all_slots(), 1000, true);
        assert_eq!(rep.linearizable(), Some(true));
        assert!(rep.sync_ok());
    }

    #[test]
    fn two_nodes_taking_writes_at_once_are_caught() {
        let w = |t, node| at(op(Kind::Unique, "k", Some("v"), t, Outcome::Ok), node);
        // n1 acks at 0-10 and 40-50; n2 acks 20-30 in between: both primaries within 1 ms.
        let split = vec![w((0, 10), "n1"), w((20, 30), "n2"), w((40, 50), "n1")];
        let found = two_primaries(&split, &all_slots(), 1000);
        assert_eq!(found.len(), 1);
        assert_eq!((found[0].x.as_str(), found[0].y.as_str()), ("n2", "n1"));
        // A failover (n1 then n2, never back) is no overlap.
        let failover = vec![w((0, 10), "n1"), w((20, 30), "n2"), w((40, 50), "n2")];
        assert!(two_primaries(&failover, &all_slots(), 1000).is_empty());
        // Back to n1 after more than a node timeout: two failovers, not two primaries.
        let back = vec![w((0, 10), "n1"), w((20, 30), "n2"), w((5000, 5010), "n1")];
        assert!(two_primaries(&back, &all_slots(), 1000).is_empty());
        // Overlapping requests prove nothing about who accepted first.
        let overlap = vec![w((0, 100), "n1"), w((20, 30), "n2"), w((50, 150), "n1")];
        assert!(two_primaries(&overlap, &all_slots(), 1000).is_empty());
    }

    #[test]
    fn writes_of_different_groups_never_conflict() {
        let shards = vec![
            Shard {
                ranges: vec![(0, 8191)],
                primary: "n1".into(),
                replicas: vec![],
            },
            Shard {
                ranges: vec![(8192, 16383)],
                primary: "n2".into(),
                replicas: vec![],
            },
        ];
        // "foo" is slot 12182 (group 1), "bar" is slot 5061 (group 0).
        let ops = vec![
            at(
                op(Kind::Unique, "bar", Some("1"), (0, 10), Outcome::Ok),
                "n1",
            ),
            at(
                op(Kind::Unique, "foo", Some("2"), (20, 30), Outcome::Ok),
                "n2",
            ),
            at(
                op(Kind::Unique, "bar", Some("3"), (40, 50), Outcome::Ok),
                "n1",
            ),
        ];
        assert!(two_primaries(&ops, &shards, 1000).is_empty());
    }
}
