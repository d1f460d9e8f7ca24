//! The nemesis: schedules of faults derived from a seed, and their injection into a running
//! `Cluster`. A schedule is a sequence of non-overlapping events (start, hold, fault), each
//! healed before the next starts. Targets are chosen by role ("the 2nd primary", "a replica")
//! and resolved against the topology when the event starts, since failovers move roles around.
//!
//! A clock jump is the one fault not undone when its event ends: it steps one node's wall clock
//! (libfaketime, `fakeclock.rs`) by 2-30 s either way, and the node stays that far off through
//! later events and restarts until another jump moves it again or the final heal sets every
//! clock back to true time. A clock that is wrong for a while is the case worth testing; its
//! event's hold is only a quiet spell in which nothing else happens. The jump is checked
//! against the node's TIME reply, so a libfaketime that does not take fails the schedule
//! instead of testing nothing.

use std::time::Duration;

use crate::harness::{ADMIN_TIMEOUT, Cluster};
use crate::history::Shard;
use crate::resp::Conn;
use crate::rng::Rng;

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, clap::ValueEnum)]
pub enum FaultKind {
    /// kill -9, restart later (same directory and port).
    Kill,
    /// SIGSTOP for longer than the node timeout, then SIGCONT.
    Pause,
    /// Network partitions: one node from the rest, a primary from its replicas, or a
    /// majority/minority split (needs network namespaces).
    Partition,
    /// Slow links (netem delay/loss where available, else a bandwidth limit).
    Slow,
    /// Clock jumps: one node's wall clock stepped 2-30 s forward or back (libfaketime).
    Clock,
}

impl FaultKind {
    pub fn needs_netns(self) -> bool {
        matches!(self, FaultKind::Partition | FaultKind::Slow)
    }
}

/// A node chosen by role, resolved (modulo the count) when the event starts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Who {
    Primary(u64),
    Replica(u64),
    Any(u64),
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Fault {
    Kill(Who),
    Pause(Who),
    /// One node cut from every other node (clients still reach it).
    Isolate(Who),
    /// The primary of group k (mod groups) cut from its replicas only.
    PrimaryFromReplicas(u64),
    /// A minority (a primary and one other node) cut from the majority.
    Split {
        primary: u64,
        other: u64,
    },
    Slow {
        who: Who,
        delay_ms: u64,
        loss_pct: u64,
    },
    /// One node's wall clock stepped by `step_s` (added to any offset it already has).
    ClockJump {
        who: Who,
        step_s: i64,
    },
}

/// The size of one clock jump, in seconds, either way: beyond the node timeout and the ack
/// timeout (so wall-clock deadlines misfire), within what a misconfigured NTP step does.
pub const CLOCK_STEP_S: (u64, u64) = (2, 30);

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Event {
    pub start_ms: u64,
    pub hold_ms: u64,
    pub fault: Fault,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Schedule {
    pub seed: u64,
    pub duration_ms: u64,
    pub events: Vec<Event>,
}

/// Derives a schedule from `seed`: events one after another, each held long enough to matter
/// (kills and pauses mostly beyond the node timeout, so a failover is due), with quiet gaps
/// between them, all within `duration_ms`.
pub fn generate(
    seed: u64,
    duration_ms: u64,
    node_timeout_ms: u64,
    kinds: &[FaultKind],
) -> Schedule {
    let mut rng = Rng::new(seed);
    let mut events = Vec::new();
    let mut t = rng.range(300, 800);
    while !kinds.is_empty() && t + node_timeout_ms < duration_ms {
        let kind = *rng.pick(kinds);
        let target = |rng: &mut Rng| {
            let k = rng.below(1 << 16);
            // Primaries are the interesting targets: most faults hit one.
            if rng.chance(70) {
                Who::Primary(k)
            } else if rng.chance(50) {
                Who::Replica(k)
            } else {
                Who::Any(k)
            }
        };
        let (fault, hold_ms) = match kind {
            FaultKind::Kill => (
                Fault::Kill(target(&mut rng)),
                rng.range(node_timeout_ms / 2, node_timeout_ms * 3),
            ),
            FaultKind::Pause => (
                Fault::Pause(target(&mut rng)),
                rng.range(node_timeout_ms * 3 / 2, node_timeout_ms * 3),
            ),
            FaultKind::Partition => {
                let hold = rng.range(node_timeout_ms * 3 / 2, node_timeout_ms * 4);
                let f = match rng.below(3) {
                    0 => Fault::Isolate(target(&mut rng)),
                    1 => Fault::PrimaryFromReplicas(rng.below(1 << 16)),
                    _ => Fault::Split {
                        primary: rng.below(1 << 16),
                        other: rng.below(1 << 16),
                    },
                };
                (f, hold)
            }
            FaultKind::Slow => (
                Fault::Slow {
                    who: target(&mut rng),
                    delay_ms: rng.range(20, 200),
                    loss_pct: rng.range(0, 10),
                },
                rng.range(node_timeout_ms, node_timeout_ms * 3),
            ),
            FaultKind::Clock => {
                let who = target(&mut rng);
                let size = rng.range(CLOCK_STEP_S.0, CLOCK_STEP_S.1) as i64;
                let step_s = if rng.chance(50) { size } else { -size };
                (
                    Fault::ClockJump { who, step_s },
                    rng.range(node_timeout_ms / 2, node_timeout_ms * 2),
                )
            }
        };
        let hold_ms = hold_ms.min(duration_ms.saturating_sub(t + 200)).max(100);
        events.push(Event {
            start_ms: t,
            hold_ms,
            fault,
        });
        t += hold_ms + rng.range(500, 1500);
    }
    Schedule {
        seed,
        duration_ms,
        events,
    }
}

/// What to undo when an event ends.
#[derive(Debug)]
pub enum Active {
    Killed(usize),
    Paused(usize),
    Network,
    /// A clock jump: nothing to undo until the final heal; the offset, for the log.
    Clock {
        node: usize,
        offset_s: i64,
    },
    Nothing,
}

/// Resolves a role to a node index against the current groups.
pub fn resolve(c: &Cluster, shards: &[Shard], who: Who) -> usize {
    let idx = |a: &String| c.index_of(a);
    let primaries: Vec<usize> = shards.iter().filter_map(|s| idx(&s.primary)).collect();
    let replicas: Vec<usize> = shards
        .iter()
        .flat_map(|s| s.replicas.iter().filter_map(idx))
        .collect();
    let pick = |v: &[usize], k: u64| v.get(k as usize % v.len().max(1)).copied();
    match who {
        Who::Primary(k) => pick(&primaries, k),
        Who::Replica(k) => pick(&replicas, k),
        Who::Any(k) => Some(k as usize % c.len()),
    }
    .unwrap_or(0)
}

/// A fault in force: what to undo, a line for the log, and the node it took away from the
/// others (for a manual failover when that node is a primary).
#[derive(Debug)]
pub struct Started {
    pub active: Active,
    pub line: String,
    pub hit: Option<usize>,
}

/// Starts a fault.
pub fn start(c: &mut Cluster, shards: &[Shard], fault: &Fault) -> Result<Started, String> {
    let name = |c: &Cluster, i: usize| format!("n{i}({})", c.addr(i));
    let started = |active, line, hit| Started { active, line, hit };
    match fault {
        Fault::Kill(who) => {
            let i = resolve(c, shards, *who);
            c.kill(i);
            Ok(started(
                Active::Killed(i),
                format!("kill -9 {}", name(c, i)),
                Some(i),
            ))
        }
        Fault::Pause(who) => {
            let i = resolve(c, shards, *who);
            c.pause(i);
            Ok(started(
                Active::Paused(i),
                format!("pause {}", name(c, i)),
                Some(i),
            ))
        }
        Fault::Isolate(who) => {
            let i = resolve(c, shards, *who);
            let rest: Vec<usize> = (0..c.len()).filter(|&j| j != i).collect();
            net(c)?.partition(&[i], &rest)?;
            Ok(started(
                Active::Network,
                format!("isolate {}", name(c, i)),
                Some(i),
            ))
        }
        Fault::PrimaryFromReplicas(k) => {
            let s = &shards[*k as usize % shards.len().max(1)];
            let p = c.index_of(&s.primary).unwrap_or(0);
            let reps: Vec<usize> = s.replicas.iter().filter_map(|r| c.index_of(r)).collect();
            net(c)?.partition(&[p], &reps)?;
            let line = format!("cut primary {} from its replicas {reps:?}", name(c, p));
            Ok(started(Active::Network, line, Some(p)))
        }
        Fault::Split { primary, other } => {
            let p = resolve(c, shards, Who::Primary(*primary));
            let others: Vec<usize> = (0..c.len()).filter(|&j| j != p).collect();
            let o = others[*other as usize % others.len()];
            let majority: Vec<usize> = (0..c.len()).filter(|&j| j != p && j != o).collect();
            net(c)?.partition(&[p, o], &majority)?;
            let line = format!("split minority [n{p}, n{o}] from majority {majority:?}");
            Ok(started(Active::Network, line, Some(p)))
        }
        Fault::Slow {
            who,
            delay_ms,
            loss_pct,
        } => {
            let i = resolve(c, shards, *who);
            let how = net(c)?.slow(i, *delay_ms, *loss_pct)?;
            let line = format!("slow links of {}: {how}", name(c, i));
            Ok(started(Active::Network, line, None))
        }
        Fault::ClockJump { who, step_s } => {
            let i = resolve(c, shards, *who);
            let offset_s = c.clock_offset_s(i) + step_s;
            c.set_clock(i, offset_s)?;
            let seen = check_clock(c, i, offset_s)?;
            let line = format!(
                "clock of {} jumps {step_s:+} s to {offset_s:+} s ({seen})",
                name(c, i)
            );
            let active = Active::Clock { node: i, offset_s };
            Ok(started(active, line, None))
        }
    }
}

/// How far a node's TIME may be from the offset it was given: the measurement is off by half
/// a round trip, and a debug build on two busy cores answers within a few hundred ms.
const CLOCK_TOLERANCE_MS: i64 = 500;
/// Attempts at reading the node's TIME after a jump.
const CLOCK_CHECK_ATTEMPTS: usize = 3;

/// Asks node `i` for its TIME after a jump. A reply far from `offset_s` means libfaketime does
/// not hold the node's clock (an error: the schedule would test nothing); a node that does not
/// answer is only noted, as the clients will notice that too.
fn check_clock(c: &Cluster, i: usize, offset_s: i64) -> Result<String, String> {
    let mut last = String::new();
    for _ in 0..CLOCK_CHECK_ATTEMPTS {
        match c.measure_clock_ms(i) {
            Ok(ms) if (ms - offset_s * 1000).abs() <= CLOCK_TOLERANCE_MS => {
                return Ok(format!("TIME says {:+.1} s", ms as f64 / 1000.0));
            }
            Ok(ms) => {
                return Err(format!(
                    "n{i}'s clock was set {offset_s:+} s off but its TIME is {:+.3} s off: \
                     libfaketime does not hold its clock",
                    ms as f64 / 1000.0
                ));
            }
            Err(e) => last = e,
        }
    }
    Ok(format!("TIME unanswered: {last}"))
}

fn net(c: &mut Cluster) -> Result<&mut crate::net::Net, String> {
    c.net.as_mut().ok_or_else(|| {
        crate::net::unavailable().unwrap_or_else(|| {
            "partitions need the nodes in network namespaces (run without --no-netns)".into()
        })
    })
}

/// Ends a fault.
pub fn stop(c: &mut Cluster, active: Active) -> Result<String, String> {
    match active {
        Active::Killed(i) => c.restart(i).map(|_| format!("restart n{i}")),
        Active::Paused(i) => {
            c.resume(i);
            Ok(format!("resume n{i}"))
        }
        Active::Network => net(c)?.heal().map(|_| "heal network".to_string()),
        Active::Clock { node, offset_s } => Ok(format!(
            "n{node}'s clock stays {offset_s:+} s off (true again at the heal)"
        )),
        Active::Nothing => Ok(String::new()),
    }
}

/// `CLUSTER FAILOVER FORCE` sent to a running replica of the group whose primary is `p`: the
/// manual stand-in for automatic failover, to check the suite's plumbing.
pub fn force_failover(c: &Cluster, shards: &[Shard], p: usize) -> String {
    let paddr = c.addr(p);
    let Some(s) = shards.iter().find(|s| s.primary == paddr) else {
        return format!("n{p} is no primary: no failover");
    };
    for r in &s.replicas {
        let Some(i) = c.index_of(r) else { continue };
        if !c.is_running(i) {
            continue;
        }
        let timeout = ADMIN_TIMEOUT * 10;
        let res =
            Conn::connect(r, timeout).and_then(|mut k| k.cmd(&["CLUSTER", "FAILOVER", "FORCE"]));
        return format!("CLUSTER FAILOVER FORCE on n{i}: {res:?}");
    }
    "no running replica to fail over to".into()
}

/// How long to wait before a manual failover: the node timeout, as automatic failover would.
pub fn failover_delay(node_timeout_ms: u64) -> Duration {
    Duration::from_millis(node_timeout_ms)
}

#[cfg(test)]
mod tests {
    use super::*;

    const ALL: [FaultKind; 3] = [FaultKind::Kill, FaultKind::Pause, FaultKind::Partition];
    const WITH_CLOCK: [FaultKind; 4] = [
        FaultKind::Kill,
        FaultKind::Pause,
        FaultKind::Partition,
        FaultKind::Clock,
    ];

    #[test]
    fn a_seed_gives_the_same_schedule() {
        assert_eq!(
            generate(42, 8000, 1000, &ALL),
            generate(42, 8000, 1000, &ALL)
        );
        assert_ne!(
            generate(42, 8000, 1000, &ALL),
            generate(43, 8000, 1000, &ALL)
        );
    }

    #[test]
    fn events_fit_the_run_and_do_not_overlap() {
        for seed in 0..200 {
            let kinds: &[FaultKind] = if seed % 2 == 0 { &ALL } else { &WITH_CLOCK };
            let s = generate(seed, 6000, 1000, kinds);
            assert!(!s.events.is_empty(), "seed {seed}: no event");
            let mut end = 0;
            for e in &s.events {
                assert!(e.start_ms >= end, "seed {seed}: events overlap");
                end = e.start_ms + e.hold_ms;
                assert!(end <= s.duration_ms, "seed {seed}: event past the end");
                if matches!(e.fault, Fault::Pause(_)) {
                    assert!(e.hold_ms > 1000 || end + 200 >= s.duration_ms);
                }
            }
        }
    }

    #[test]
    fn schedules_mix_the_requested_kinds() {
        let mut seen = [false; 3];
        for seed in 0..50 {
            for e in generate(seed, 6000, 1000, &ALL).events {
                let k = match e.fault {
                    Fault::Kill(_) => 0,
                    Fault::Pause(_) => 1,
                    _ => 2,
                };
                seen[k] = true;
            }
        }
        assert_eq!(seen, [true; 3]);
        let kills = generate(5, 6000, 1000, &[FaultKind::Kill]);
        assert!(
            kills
                .events
                .iter()
                .all(|e| matches!(e.fault, Fault::Kill(_)))
        );
    }

    fn jumps(s: &Schedule) -> Vec<i64> {
        s.events
            .iter()
            .filter_map(|e| match e.fault {
                Fault::ClockJump { step_s, .. } => Some(step_s),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn the_clock_fault_alone_gives_only_clock_jumps_of_two_to_thirty_seconds_either_way() {
        let (mut forward, mut back) = (false, false);
        for seed in 0..100 {
            let s = generate(seed, 6000, 1000, &[FaultKind::Clock]);
            assert!(!s.events.is_empty(), "seed {seed}: no event");
            assert_eq!(jumps(&s).len(), s.events.len(), "seed {seed}: {s:?}");
            for step in jumps(&s) {
                assert!((2..=30).contains(&step.abs()), "seed {seed}: step {step}");
                forward |= step > 0;
                back |= step < 0;
            }
        }
        assert!(forward && back, "jumps go both ways");
    }

    #[test]
    fn a_seed_replays_the_same_clock_jumps_among_other_faults() {
        for seed in 0..20 {
            assert_eq!(
                generate(seed, 4000, 1000, &WITH_CLOCK),
                generate(seed, 4000, 1000, &WITH_CLOCK)
            );
        }
        let mixed: Vec<Schedule> = (1..=10)
            .map(|s| generate(s, 4000, 1000, &WITH_CLOCK))
            .collect();
        assert!(
            mixed.iter().any(|s| !jumps(s).is_empty()),
            "ten CI-sized schedules with the clock fault hold no clock jump"
        );
        assert!(
            mixed
                .iter()
                .flat_map(|s| &s.events)
                .any(|e| !matches!(e.fault, Fault::ClockJump { .. })),
            "the other kinds still come up"
        );
    }

    #[test]
    fn schedules_without_the_clock_fault_hold_no_clock_jump() {
        for seed in 0..100 {
            let s = generate(seed, 6000, 1000, &[FaultKind::Kill, FaultKind::Partition]);
            assert!(jumps(&s).is_empty(), "seed {seed}");
        }
    }
}
